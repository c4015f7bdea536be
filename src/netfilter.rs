//! The kernel's nf_tables ruleset of one address family, read through netlink as the key
//! under which `iptables-save`'s text is kept between runs ([`kept`]). Each `*-save` is a
//! process of 4–5 ms of CPU, and together they were a quarter of a converged audit's CPU;
//! the kernel dumps the same ruleset in a fraction of that.
//!
//! The key is what the kernel dumps of the family's tables, chains and rules, with two things
//! left out: the rules' `counter` values and the chains' counters, which traffic moves and
//! the rules do not (the kept text's policy counters are those of the run that saved it).
//! Everything else stays in, down to each rule's handle: a rule deleted and added again is a
//! new key. The dumps are bracketed by the ruleset's generation, which every committed change
//! moves, so a key is never made of two rulesets. Where the family has sets (iptables-nft
//! makes none; a rule naming one prints what the set holds, which the key would not see) or
//! the dump is larger than [`KEY_LIMIT`], there is no key, and the tool runs every time.

pub mod kept;

use std::io;
use std::os::fd::{AsRawFd, OwnedFd};

use nix::sys::socket::{self, AddressFamily, MsgFlags, SockFlag, SockProtocol, SockType};

use crate::netlink::{NLM_F_DUMP, NLM_F_REQUEST, NLMSG_DONE, NLMSG_ERROR};

/// `NFNL_SUBSYS_NFTABLES`, the message type's high byte.
const NFTABLES: u16 = 10 << 8;
const GET_TABLE: u16 = 1;
const GET_CHAIN: u16 = 4;
const GET_RULE: u16 = 7;
const GET_SET: u16 = 10;
const GET_GEN: u16 = 16;
const NEW_CHAIN: u16 = 3;
const NEW_RULE: u16 = 6;
const NEW_GEN: u16 = 15;

const NLM_F_DUMP_INTR: u16 = 0x10;
/// `struct nfgenmsg`: family, version, and the generation's low 16 bits (left out of keys).
const NFGEN: usize = 4;

/// `NFTA_CHAIN_COUNTERS`.
const CHAIN_COUNTERS: u16 = 8;
/// `NFTA_RULE_EXPRESSIONS`, a list of `NFTA_LIST_ELEM`s, each an expression's
/// `NFTA_EXPR_NAME` and `NFTA_EXPR_DATA`.
const RULE_EXPRESSIONS: u16 = 4;
const EXPR_NAME: u16 = 1;
/// `NFTA_GEN_ID`.
const GEN_ID: u16 = 1;
/// An attribute type's flag bits (`NLA_F_NESTED`, `NLA_F_NET_BYTEORDER`).
const TYPE_MASK: u16 = 0x3fff;

/// The largest key: a ruleset whose dump is larger (tens of thousands of rules) is saved by
/// its tool every run, as it was before keys.
pub const KEY_LIMIT: usize = 8 << 20;

/// One family's ruleset as a key, with the generation it was read at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Key {
    pub generation: u32,
    pub bytes: Vec<u8>,
}

/// The ruleset of IPv6 (`v6`) or IPv4 as a key; `None` where it cannot be one (see the
/// module's text).
pub fn key(v6: bool) -> io::Result<Option<Key>> {
    let family = if v6 { 10 } else { 2 }; // NFPROTO_IPV6, NFPROTO_IPV4
    let link = Netlink::open()?;
    let generation = link.generation()?;
    let mut bytes = Vec::new();
    for kind in [GET_TABLE, GET_CHAIN, GET_RULE] {
        // Past the limit the dump is left unread: the socket is dropped with it.
        let whole = link.dump(kind, family, |kind, body| append(&mut bytes, kind, body) && bytes.len() <= KEY_LIMIT)?;
        if !whole {
            return Ok(None);
        }
    }
    if !link.dump(GET_SET, family, |_, _| false)? || link.generation()? != generation {
        return Ok(None);
    }
    Ok(Some(Key { generation, bytes }))
}

struct Netlink(OwnedFd);

impl Netlink {
    fn open() -> io::Result<Netlink> {
        let fd = socket::socket(
            AddressFamily::Netlink,
            SockType::Raw,
            SockFlag::SOCK_CLOEXEC,
            SockProtocol::NetlinkNetFilter,
        )?;
        socket::setsockopt(&fd, socket::sockopt::ReceiveTimeout, &nix::sys::time::TimeVal::new(2, 0))?;
        Ok(Netlink(fd))
    }

    fn generation(&self) -> io::Result<u32> {
        let mut found = None;
        self.ask(GET_GEN, 0, NLM_F_REQUEST, |kind, body| {
            if kind == NEW_GEN {
                found = attributes(body)
                    .and_then(|a| a.into_iter().find(|(t, _)| *t == GEN_ID))
                    .and_then(|(_, v)| v.try_into().ok());
            }
            true
        })?;
        let found = found.map(u32::from_be_bytes);
        found.ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "nf_tables answered without a generation"))
    }

    /// Dumps `kind` of `family`, each message's body (past `nfgenmsg`) to `each` while it
    /// returns true; false when it did not, or the kernel marked the dump as cut by a change
    /// (the socket is then left with the rest, not to be asked again).
    fn dump(&self, kind: u16, family: u8, each: impl FnMut(u16, &[u8]) -> bool) -> io::Result<bool> {
        self.ask(kind, family, NLM_F_REQUEST | NLM_F_DUMP, each)
    }

    fn ask(&self, kind: u16, family: u8, flags: u16, mut each: impl FnMut(u16, &[u8]) -> bool) -> io::Result<bool> {
        // nfgenmsg: the family, NFNETLINK_V0, res_id.
        let request = crate::netlink::request(NFTABLES | kind, flags, &[family, 0, 0, 0]);
        socket::send(self.0.as_raw_fd(), &request, MsgFlags::empty())?;
        let dump = flags & NLM_F_DUMP != 0;
        let mut whole = true;
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            let n = socket::recv(self.0.as_raw_fd(), &mut buf, MsgFlags::MSG_TRUNC)?;
            if n == 0 || n > buf.len() {
                return Err(io::Error::new(io::ErrorKind::InvalidData, "nf_tables: a message was cut short"));
            }
            match parse(&buf[..n], &mut |kind, flags, body| {
                whole &= flags & NLM_F_DUMP_INTR == 0 && each(kind, body);
                whole
            })? {
                Some(done) => return Ok(whole && done & NLM_F_DUMP_INTR == 0),
                None if !dump || !whole => return Ok(whole),
                None => {}
            }
        }
    }
}

/// Hands each nf_tables message of one datagram to `each` (its type's low byte, flags, body
/// past `nfgenmsg`) while it returns true; the flags of the end of a dump once the kernel
/// ended it, or an error where it failed.
fn parse(data: &[u8], each: &mut dyn FnMut(u16, u16, &[u8]) -> bool) -> io::Result<Option<u16>> {
    for m in crate::netlink::messages(data, "nf_tables") {
        let m = m?;
        match m.kind {
            NLMSG_DONE => return crate::netlink::done(m.body).map(|()| Some(m.flags)),
            NLMSG_ERROR => return Err(crate::netlink::error(m.body)),
            _ if m.kind & !0xff == NFTABLES && m.body.len() >= NFGEN => {
                if !each(m.kind & 0xff, m.flags, &m.body[NFGEN..]) {
                    return Ok(None);
                }
            }
            _ => return Err(io::Error::new(io::ErrorKind::InvalidData, "nf_tables: a message of another kind")),
        }
    }
    Ok(None)
}

/// The attributes of `data`: type (flags masked off) and value; `None` unless they fill it
/// exactly (a malformed one makes no key rather than a short one).
fn attributes(mut data: &[u8]) -> Option<Vec<(u16, &[u8])>> {
    let mut out = Vec::new();
    while !data.is_empty() {
        let [a, b, c, d, ..] = *data else { return None };
        let (len, kind) = (u16::from_ne_bytes([a, b]) as usize, u16::from_ne_bytes([c, d]) & TYPE_MASK);
        if len < 4 || len > data.len() {
            return None;
        }
        out.push((kind, &data[4..len]));
        data = &data[len.next_multiple_of(4).min(data.len())..];
    }
    Some(out)
}

/// Appends one dumped table, chain or rule to `key`, counters left out: each piece framed by
/// a tag and its length, so that no two rulesets give the same bytes. False where an
/// attribute is malformed.
fn append(key: &mut Vec<u8>, kind: u16, body: &[u8]) -> bool {
    let mut piece = |tag: u8, kind: u16, value: &[u8]| {
        key.push(tag);
        key.extend_from_slice(&kind.to_ne_bytes());
        key.extend_from_slice(&(value.len() as u32).to_ne_bytes());
        key.extend_from_slice(value);
    };
    piece(b'M', kind, &[]);
    let Some(attrs) = attributes(body) else { return false };
    for (attr, value) in attrs {
        match (kind, attr) {
            (NEW_CHAIN, CHAIN_COUNTERS) => {}
            (NEW_RULE, RULE_EXPRESSIONS) => {
                let Some(expressions) = attributes(value) else { return false };
                for (_, expression) in expressions {
                    let Some(parts) = attributes(expression) else { return false };
                    match parts.iter().find(|(t, _)| *t == EXPR_NAME) {
                        Some((_, b"counter\0")) => piece(b'C', 0, &[]),
                        _ => piece(b'E', 0, expression),
                    }
                }
            }
            _ => piece(b'A', attr, value),
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `NFT_MSG_NEWTABLE`: a table of a dump, keyed as it comes.
    const NEW_TABLE: u16 = 0;

    fn attr(kind: u16, value: &[u8]) -> Vec<u8> {
        let mut a = ((4 + value.len()) as u16).to_ne_bytes().to_vec();
        a.extend_from_slice(&kind.to_ne_bytes());
        a.extend_from_slice(value);
        a.resize(a.len().next_multiple_of(4), 0);
        a
    }

    fn nested(kind: u16, parts: &[Vec<u8>]) -> Vec<u8> {
        attr(kind | 0x8000, &parts.concat())
    }

    fn expression(name: &str, data: &[Vec<u8>]) -> Vec<u8> {
        let name = format!("{name}\0");
        nested(1, &[attr(EXPR_NAME, name.as_bytes()), nested(2, data)])
    }

    /// A rule of chain `chain` with handle `handle`: a tcp port match, a counter, a verdict.
    fn rule(chain: &str, handle: u64, port: u16, packets: u64) -> Vec<u8> {
        let expressions = nested(
            RULE_EXPRESSIONS,
            &[
                expression("cmp", &[attr(1, &[1]), attr(3, &port.to_be_bytes())]),
                expression("counter", &[attr(1, &(packets * 60).to_be_bytes()), attr(2, &packets.to_be_bytes())]),
                expression("immediate", &[attr(1, &[0]), attr(2, b"ACCEPT")]),
            ],
        );
        [attr(1, b"filter\0"), attr(2, format!("{chain}\0").as_bytes()), attr(3, &handle.to_be_bytes()), expressions]
            .concat()
    }

    fn key_of(messages: &[(u16, Vec<u8>)]) -> Vec<u8> {
        let mut key = Vec::new();
        for (kind, body) in messages {
            append(&mut key, *kind, body);
        }
        key
    }

    #[test]
    fn counters_are_left_out_and_everything_else_is_kept() {
        let chain = |packets: u64, policy: u8| {
            [
                attr(1, b"filter\0"),
                attr(3, b"INPUT\0"),
                attr(5, &[0, 0, 0, policy]),
                nested(CHAIN_COUNTERS, &[attr(1, &packets.to_be_bytes())]),
            ]
            .concat()
        };
        let ruleset = |packets: u64, policy: u8, port: u16, handle: u64| {
            key_of(&[
                (NEW_TABLE, attr(1, b"filter\0")),
                (NEW_CHAIN, chain(packets, policy)),
                (NEW_RULE, rule("INPUT", handle, port, packets)),
            ])
        };
        let base = ruleset(0, 1, 22, 4);
        assert_eq!(ruleset(9_000, 1, 22, 4), base, "traffic moves counters, not the key");
        assert_ne!(ruleset(0, 0, 22, 4), base, "a chain's policy");
        assert_ne!(ruleset(0, 1, 2222, 4), base, "a rule's port");
        assert_ne!(ruleset(0, 1, 22, 5), base, "a rule deleted and added again");
        // A rule more, or in another chain, or another table's.
        let more = key_of(&[
            (NEW_TABLE, attr(1, b"filter\0")),
            (NEW_CHAIN, chain(0, 1)),
            (NEW_RULE, rule("INPUT", 4, 22, 0)),
            (NEW_RULE, rule("INPUT", 5, 80, 0)),
        ]);
        assert_ne!(more, base);
        assert_ne!(
            key_of(&[
                (NEW_TABLE, attr(1, b"filter\0")),
                (NEW_CHAIN, chain(0, 1)),
                (NEW_RULE, rule("OUTPUT", 4, 22, 0))
            ]),
            base
        );
        // The framing keeps a rule's expressions apart from the next rule's.
        let split = key_of(&[(NEW_RULE, rule("INPUT", 4, 22, 0)), (NEW_RULE, rule("INPUT", 5, 23, 0))]);
        let joined = key_of(&[(NEW_RULE, [rule("INPUT", 4, 22, 0), rule("INPUT", 5, 23, 0)].concat())]);
        assert_ne!(split, joined);
    }

    use crate::netlink::answer as message;

    #[test]
    fn parses_a_dump_and_reports_a_cut_or_an_error() {
        let body = [vec![2, 0, 0, 7], attr(1, b"filter\0")].concat();
        let mut data = message(NFTABLES | NEW_TABLE, 2, &body);
        let mut seen = Vec::new();
        let mut see = |k, f, b: &[u8]| {
            seen.push((k, f, b.to_vec()));
            true
        };
        assert_eq!(parse(&data, &mut see).expect("parse"), None, "no DONE yet");
        assert_eq!(seen, [(NEW_TABLE, 2, attr(1, b"filter\0"))], "nfgenmsg is not part of the body");
        data.extend(message(NLMSG_DONE, 0, &[0; 4]));
        assert_eq!(parse(&data, &mut |_, _, _| true).expect("parse"), Some(0));
        let failed = message(NLMSG_DONE, 0, &(-4i32).to_ne_bytes());
        assert_eq!(
            parse(&failed, &mut |_, _, _| true).expect_err("EINTR").raw_os_error(),
            Some(4),
            "a dump that ended failing"
        );
        let cut = message(NFTABLES | NEW_TABLE, NLM_F_DUMP_INTR, &body);
        let mut flags = 0;
        parse(&cut, &mut |_, f, _| {
            flags |= f;
            true
        })
        .expect("parse");
        assert_ne!(flags & NLM_F_DUMP_INTR, 0);
        let err = parse(&message(NLMSG_ERROR, 0, &(-1i32).to_ne_bytes()), &mut |_, _, _| true).expect_err("EPERM");
        assert_eq!(err.raw_os_error(), Some(1));
        let mut long = message(NFTABLES | NEW_TABLE, 0, &body);
        long[0] = 200;
        assert!(parse(&long, &mut |_, _, _| true).is_err());
        assert!(parse(&message(0x0101, 0, &body), &mut |_, _, _| true).is_err(), "another subsystem's message");
    }

    #[test]
    fn a_malformed_attribute_makes_no_key() {
        let data = [attr(1, b"ab"), vec![2, 0, 5, 0], attr(3, b"cd")].concat();
        assert_eq!(attributes(&data), None, "a length under 4");
        assert_eq!(attributes(&[attr(1, b"ab"), vec![9, 0]].concat()), None, "a piece of a header");
        assert_eq!(attributes(&attr(0x8001, b"x")), Some(vec![(1, &b"x"[..])]), "the nested flag masked off");
        let mut key = Vec::new();
        assert!(!append(&mut key, NEW_RULE, &[attr(1, b"filter\0"), vec![40, 0, 2, 0]].concat()));
        let broken_expression = nested(RULE_EXPRESSIONS, &[nested(1, &[vec![3, 0, 1, 0]])]);
        assert!(!append(&mut key, NEW_RULE, &broken_expression));
        assert!(append(&mut key, NEW_RULE, &rule("INPUT", 4, 22, 0)));
    }
}
