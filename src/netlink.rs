//! Netlink's framing, shared by the sock_diag and nf_tables readers: a request's header, and
//! the messages of a datagram the kernel answers with.

use std::io;

pub const NLM_F_REQUEST: u16 = 0x1;
pub const NLM_F_DUMP: u16 = 0x300;
pub const NLMSG_ERROR: u16 = 2;
pub const NLMSG_DONE: u16 = 3;
/// `struct nlmsghdr`.
pub const HEADER: usize = 16;

/// A request of `kind` with `flags`: the header (sequence 1, the kernel's port id), then `body`.
pub fn request(kind: u16, flags: u16, body: &[u8]) -> Vec<u8> {
    let mut request = Vec::with_capacity(HEADER + body.len());
    request.extend_from_slice(&((HEADER + body.len()) as u32).to_ne_bytes());
    request.extend_from_slice(&kind.to_ne_bytes());
    request.extend_from_slice(&flags.to_ne_bytes());
    request.extend_from_slice(&1u32.to_ne_bytes()); // sequence
    request.extend_from_slice(&0u32.to_ne_bytes()); // port id: the kernel's
    request.extend_from_slice(body);
    request
}

/// One message of a datagram.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Message<'a> {
    pub kind: u16,
    pub flags: u16,
    pub body: &'a [u8],
}

/// The messages of one datagram, in order; an error (and the end) for one longer than what is
/// left of it. `what` names the reader in that error.
pub fn messages<'a>(mut data: &'a [u8], what: &'static str) -> impl Iterator<Item = io::Result<Message<'a>>> {
    std::iter::from_fn(move || {
        if data.len() < HEADER {
            return None;
        }
        let len = u32::from_ne_bytes([data[0], data[1], data[2], data[3]]) as usize;
        if len < HEADER || len > data.len() {
            data = &[];
            return Some(Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("{what}: a message longer than its datagram"),
            )));
        }
        let message = Message {
            kind: u16::from_ne_bytes([data[4], data[5]]),
            flags: u16::from_ne_bytes([data[6], data[7]]),
            body: &data[HEADER..len],
        };
        data = &data[len.next_multiple_of(4).min(data.len())..];
        Some(Ok(message))
    })
}

/// The error an `NLMSG_ERROR` message's body carries. vakt asks for no acknowledgement, so
/// an error of 0 (one), or a body too short to hold an errno, is malformed.
pub fn error(body: &[u8]) -> io::Error {
    match body.get(..4).map(|b| i32::from_ne_bytes([b[0], b[1], b[2], b[3]])) {
        Some(errno) if errno < 0 => io::Error::from_raw_os_error(-errno),
        _ => io::Error::new(io::ErrorKind::InvalidData, "netlink: an error message without an error"),
    }
}

/// What the end of a dump (`NLMSG_DONE`) says: how the dump ended, 0 when it succeeded.
pub fn done(body: &[u8]) -> io::Result<()> {
    match body.get(..4).map_or(0, |b| i32::from_ne_bytes([b[0], b[1], b[2], b[3]])) {
        errno if errno < 0 => Err(io::Error::from_raw_os_error(-errno)),
        _ => Ok(()),
    }
}

/// A message as the kernel sends it in a datagram: padded to four bytes (for tests).
#[cfg(test)]
pub fn answer(kind: u16, flags: u16, body: &[u8]) -> Vec<u8> {
    let mut m = request(kind, flags, body);
    m.resize(m.len().next_multiple_of(4), 0);
    m
}
