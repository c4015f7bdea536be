//! The kernel's socket tables through sock_diag netlink, as `ss` reads them: a dump asks for
//! the states it wants, so listening sockets come from the listening hash alone. The
//! `/proc/net/tcp` text walks every connection's hash bucket instead: about 5 ms a table in a
//! container's network namespace with two sockets in it, and a million lines on a busy host.

use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::os::fd::{AsRawFd, OwnedFd};

use nix::sys::socket::{self, AddressFamily, MsgFlags, SockFlag, SockProtocol, SockType};

use crate::netlink::{NLM_F_DUMP, NLM_F_REQUEST, NLMSG_DONE, NLMSG_ERROR};

/// `SOCK_DIAG_BY_FAMILY` (linux/sock_diag.h).
const SOCK_DIAG_BY_FAMILY: u16 = 20;
/// `struct inet_diag_msg`: up to and including `idiag_inode`.
const MSG: usize = 72;

/// TCP's listening state, as a bit of the request's state mask.
pub const LISTEN: u32 = 1 << 10;
/// Every state.
pub const ANY: u32 = u32::MAX;
pub const TCP: u8 = 6;
pub const UDP: u8 = 17;

/// One socket of a dump.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Socket {
    pub local: SocketAddr,
    pub remote_port: u16,
    pub inode: u64,
}

/// The sockets of `protocol` (`TCP`, `UDP`) and family (`v6`) in `states`, in the calling
/// thread's network namespace.
pub fn dump(v6: bool, protocol: u8, states: u32) -> io::Result<Vec<Socket>> {
    let fd: OwnedFd = socket::socket(
        AddressFamily::Netlink,
        SockType::Datagram,
        SockFlag::SOCK_CLOEXEC,
        SockProtocol::NetlinkSockDiag,
    )?;
    socket::setsockopt(&fd, socket::sockopt::ReceiveTimeout, &nix::sys::time::TimeVal::new(2, 0))?;
    let family = if v6 { nix::libc::AF_INET6 } else { nix::libc::AF_INET } as u8;
    // struct inet_diag_req_v2: family, protocol, ext, pad, states, then a zero socket id.
    let mut body = vec![family, protocol, 0, 0];
    body.extend_from_slice(&states.to_ne_bytes());
    body.extend_from_slice(&[0; 48]);
    let request = crate::netlink::request(SOCK_DIAG_BY_FAMILY, NLM_F_REQUEST | NLM_F_DUMP, &body);
    socket::send(fd.as_raw_fd(), &request, MsgFlags::empty())?;

    let mut found = Vec::new();
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = socket::recv(fd.as_raw_fd(), &mut buf, MsgFlags::empty())?;
        if n == 0 {
            return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "sock_diag ended the dump early"));
        }
        if parse(&buf[..n], &mut found)? {
            return Ok(found);
        }
    }
}

/// Parses one datagram of a dump into `found`; returns whether the dump is complete.
fn parse(data: &[u8], found: &mut Vec<Socket>) -> io::Result<bool> {
    for m in crate::netlink::messages(data, "sock_diag") {
        let m = m?;
        match m.kind {
            NLMSG_DONE => return crate::netlink::done(m.body).map(|()| true),
            NLMSG_ERROR => return Err(crate::netlink::error(m.body)),
            SOCK_DIAG_BY_FAMILY if m.body.len() >= MSG => found.push(socket_of(m.body)),
            SOCK_DIAG_BY_FAMILY => {
                return Err(io::Error::new(io::ErrorKind::InvalidData, "sock_diag: a socket message too short"));
            }
            _ => {}
        }
    }
    Ok(false)
}

/// One `struct inet_diag_msg`: family, state, timer, retrans; the socket id (ports big-endian,
/// addresses in 16 bytes, interface, cookie); expires, queues, uid, inode.
fn socket_of(m: &[u8]) -> Socket {
    let port = |at: usize| u16::from_be_bytes([m[at], m[at + 1]]);
    let local = if m[0] == nix::libc::AF_INET6 as u8 {
        let mut a = [0u8; 16];
        a.copy_from_slice(&m[8..24]);
        IpAddr::V6(Ipv6Addr::from(a))
    } else {
        IpAddr::V4(Ipv4Addr::new(m[8], m[9], m[10], m[11]))
    };
    let inode = u32::from_ne_bytes([m[68], m[69], m[70], m[71]]);
    Socket { local: SocketAddr::new(local, port(4)), remote_port: port(6), inode: inode.into() }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(kind: u16, body: &[u8]) -> Vec<u8> {
        crate::netlink::answer(kind, 0, body)
    }

    #[test]
    fn parses_sockets_then_done_and_refuses_short_or_overlong_messages() {
        let mut body = vec![0u8; MSG];
        body[0] = nix::libc::AF_INET as u8;
        body[4..6].copy_from_slice(&22u16.to_be_bytes());
        body[8..12].copy_from_slice(&[10, 0, 0, 1]);
        body[68..72].copy_from_slice(&4242u32.to_ne_bytes());
        let mut data = message(SOCK_DIAG_BY_FAMILY, &body);
        let mut found = Vec::new();
        assert!(!parse(&data, &mut found).expect("parse"), "no DONE yet");
        assert_eq!(found, [Socket { local: "10.0.0.1:22".parse().expect("addr"), remote_port: 0, inode: 4242 }]);
        data.extend(message(NLMSG_DONE, &[0; 4]));
        assert!(parse(&data, &mut Vec::new()).expect("parse"));
        // An error message carries a negative errno.
        let err = parse(&message(NLMSG_ERROR, &(-13i32).to_ne_bytes()), &mut Vec::new()).expect_err("EACCES");
        assert_eq!(err.raw_os_error(), Some(13));
        assert!(parse(&message(SOCK_DIAG_BY_FAMILY, &body[..40]), &mut Vec::new()).is_err());
        let mut long = message(SOCK_DIAG_BY_FAMILY, &body);
        long[0] = 200;
        assert!(parse(&long, &mut Vec::new()).is_err());
    }

    /// The kernel's own answer: this test's listening socket is in the dump, with its inode.
    #[test]
    fn the_kernel_lists_a_listener_of_ours() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().expect("addr");
        let found = dump(false, TCP, LISTEN).expect("sock_diag");
        let me = found.iter().find(|s| s.local == addr).expect("our listener");
        assert!(me.inode != 0 && me.remote_port == 0, "{me:?}");
    }
}
