//! Sans-io DNS messages for the launch's fake-DNS responder: decode a query, encode its answer.
//!
//! Owns: the wire format of what the responder reads and writes (RFC 1035 header, one
//! question, A/AAAA/PTR answers, the 2-byte length prefix of DNS over TCP) and the reverse
//! names (`in-addr.arpa`, `ip6.arpa`).
//! Must never: panic or loop on any input (compression pointers are followed only backwards,
//! at most [`MAX_JUMPS`] times, and a name is at most 255 bytes), read past the message, or
//! answer a message it could not attribute (no header, a response): those are dropped.
//!
//! Like the decoders in [`crate::proto`], the TCP framing returns [`Decoded::Need`] with the
//! exact number of bytes still missing, and [`Decoded::Done`] with the bytes used.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use crate::proto::Decoded;

/// Query types and classes the responder knows.
pub const TYPE_A: u16 = 1;
pub const TYPE_PTR: u16 = 12;
pub const TYPE_AAAA: u16 = 28;
pub const TYPE_ANY: u16 = 255;
pub const CLASS_IN: u16 = 1;
pub const CLASS_ANY: u16 = 255;

/// Response codes.
pub const NOERROR: u8 = 0;
pub const FORMERR: u8 = 1;
pub const SERVFAIL: u8 = 2;
pub const NXDOMAIN: u8 = 3;
pub const NOTIMP: u8 = 4;
pub const REFUSED: u8 = 5;

/// Most compression pointers followed in one name.
pub const MAX_JUMPS: usize = 32;
/// Longest name on the wire (RFC 1035 2.3.4), length bytes included.
pub const MAX_NAME_WIRE: usize = 255;
/// Largest answer sent over UDP without EDNS.
pub const UDP_LIMIT: usize = 512;

const HEADER: usize = 12;

/// A question the responder can answer (or must refuse with a code, see [`Decoded`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Query {
    pub id: u16,
    /// The query's flags word (opcode, RD… are echoed in the answer).
    pub flags: u16,
    /// The labels of the question name, as sent (case kept, for 0x20 randomization).
    pub labels: Vec<Vec<u8>>,
    pub qtype: u16,
    pub qclass: u16,
}

impl Query {
    pub fn opcode(&self) -> u8 {
        ((self.flags >> 11) & 0xf) as u8
    }

    /// The question name in text form, lowercase, without trailing dot (`None` if a label holds
    /// a dot or a byte outside printable ASCII: no table name looks like that).
    pub fn name(&self) -> Option<String> {
        let mut out = String::new();
        for (i, l) in self.labels.iter().enumerate() {
            if l.iter().any(|&b| b <= b' ' || b >= 0x7f || b == b'.') {
                return None;
            }
            if i > 0 {
                out.push('.');
            }
            out.extend(l.iter().map(|&b| b.to_ascii_lowercase() as char));
        }
        Some(out)
    }
}

/// Why a message cannot be answered normally.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DnsError {
    /// Not even a header, or a response (QR set): drop it, never answer.
    Drop,
    /// A header we can answer, with this code (FORMERR, NOTIMP); `id` and `flags` to echo.
    Reply { id: u16, flags: u16, rcode: u8 },
}

fn be16(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_be_bytes(b.get(at..at + 2)?.try_into().ok()?))
}

/// Reads a (possibly compressed) name starting at `at`: its labels and the offset right after
/// it in the message (after the first pointer, if any).
fn read_name(msg: &[u8], at: usize) -> Option<(Vec<Vec<u8>>, usize)> {
    let mut labels = Vec::new();
    let mut pos = at;
    let mut end = None;
    let mut jumps = 0;
    let mut wire = 0usize;
    // A pointer must go strictly backwards from the label it is in: no loops.
    let mut limit = at;
    loop {
        let len = *msg.get(pos)?;
        match len & 0xc0 {
            0x00 => {
                let len = len as usize;
                wire += 1 + len;
                if wire > MAX_NAME_WIRE {
                    return None;
                }
                if len == 0 {
                    return Some((labels, end.unwrap_or(pos + 1)));
                }
                labels.push(msg.get(pos + 1..pos + 1 + len)?.to_vec());
                pos += 1 + len;
            }
            0xc0 => {
                let target = (be16(msg, pos)? & 0x3fff) as usize;
                if end.is_none() {
                    end = Some(pos + 2);
                }
                jumps += 1;
                if jumps > MAX_JUMPS || target >= limit {
                    return None;
                }
                limit = target;
                pos = target;
            }
            _ => return None, // 0x40 / 0x80: extended label types, obsolete
        }
    }
}

/// Decodes one whole DNS message (a UDP datagram, or a TCP message without its prefix).
pub fn decode(msg: &[u8]) -> Result<Query, DnsError> {
    let (Some(id), Some(flags)) = (be16(msg, 0), be16(msg, 2)) else {
        return Err(DnsError::Drop);
    };
    if msg.len() < HEADER || flags & 0x8000 != 0 {
        return Err(DnsError::Drop);
    }
    let reply = |rcode| DnsError::Reply { id, flags, rcode };
    if (flags >> 11) & 0xf != 0 {
        return Err(reply(NOTIMP)); // only QUERY
    }
    if be16(msg, 4) != Some(1) {
        return Err(reply(FORMERR)); // exactly one question
    }
    let (labels, at) = read_name(msg, HEADER).ok_or_else(|| reply(FORMERR))?;
    let (Some(qtype), Some(qclass)) = (be16(msg, at), be16(msg, at + 2)) else {
        return Err(reply(FORMERR));
    };
    Ok(Query {
        id,
        flags,
        labels,
        qtype,
        qclass,
    })
}

/// DNS over TCP: one length-prefixed message from the bytes received so far.
pub fn decode_tcp(buf: &[u8]) -> Decoded<Result<Query, DnsError>> {
    let Some(len) = be16(buf, 0) else {
        return Decoded::Need(2 - buf.len().min(1));
    };
    let total = 2 + len as usize;
    match buf.get(2..total) {
        Some(msg) => Decoded::Done(decode(msg), total),
        None => Decoded::Need(total - buf.len()),
    }
}

/// One answer record's data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Rdata {
    Addr(IpAddr),
    /// A name (PTR), in text form.
    Name(String),
}

fn push_name(out: &mut Vec<u8>, labels: &[Vec<u8>]) {
    for l in labels {
        out.push(l.len() as u8);
        out.extend_from_slice(l);
    }
    out.push(0);
}

/// The labels of a text name, if it can be encoded (labels of 1..=63 bytes, 255 in all).
pub fn labels_of(name: &str) -> Option<Vec<Vec<u8>>> {
    let name = name.strip_suffix('.').unwrap_or(name);
    if name.is_empty() {
        return Some(Vec::new());
    }
    let labels: Vec<Vec<u8>> = name.split('.').map(|l| l.as_bytes().to_vec()).collect();
    let wire: usize = labels.iter().map(|l| l.len() + 1).sum::<usize>() + 1;
    (wire <= MAX_NAME_WIRE && labels.iter().all(|l| (1..=63).contains(&l.len()))).then_some(labels)
}

/// Encodes the answer to `q`: `rcode`, and one record per entry of `answers` (owner: the
/// question name, by pointer), with `ttl`. Records that would take a UDP answer past
/// `limit` bytes are left out and TC is set.
pub fn encode_answer(q: &Query, rcode: u8, answers: &[Rdata], ttl: u32, limit: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(128);
    let mut flags = 0x8000 | (q.flags & 0x7900) | 0x0080 | rcode as u16; // QR, opcode+RD, RA
    out.extend_from_slice(&q.id.to_be_bytes());
    out.extend_from_slice(&flags.to_be_bytes());
    out.extend_from_slice(&1u16.to_be_bytes());
    out.extend_from_slice(&[0, 0, 0, 0, 0, 0]); // ancount (below), nscount, arcount
    push_name(&mut out, &q.labels);
    out.extend_from_slice(&q.qtype.to_be_bytes());
    out.extend_from_slice(&q.qclass.to_be_bytes());
    let mut count = 0u16;
    for a in answers {
        let mut rr = vec![0xc0, HEADER as u8];
        let (ty, data) = match a {
            Rdata::Addr(IpAddr::V4(v4)) => (TYPE_A, v4.octets().to_vec()),
            Rdata::Addr(IpAddr::V6(v6)) => (TYPE_AAAA, v6.octets().to_vec()),
            Rdata::Name(n) => {
                let Some(l) = labels_of(n) else { continue };
                let mut d = Vec::new();
                push_name(&mut d, &l);
                (TYPE_PTR, d)
            }
        };
        rr.extend_from_slice(&ty.to_be_bytes());
        rr.extend_from_slice(&CLASS_IN.to_be_bytes());
        rr.extend_from_slice(&ttl.to_be_bytes());
        rr.extend_from_slice(&(data.len() as u16).to_be_bytes());
        rr.extend_from_slice(&data);
        if out.len() + rr.len() > limit {
            flags |= 0x0200; // TC
            break;
        }
        out.extend_from_slice(&rr);
        count += 1;
    }
    if let Some(f) = out.get_mut(2..4) {
        f.copy_from_slice(&flags.to_be_bytes());
    }
    if let Some(c) = out.get_mut(6..8) {
        c.copy_from_slice(&count.to_be_bytes());
    }
    out
}

/// A header-only answer (FORMERR, NOTIMP…) to a message we could not decode further.
pub fn encode_error(id: u16, flags: u16, rcode: u8) -> Vec<u8> {
    let f = 0x8000 | (flags & 0x7900) | 0x0080 | rcode as u16;
    let mut out = Vec::with_capacity(HEADER);
    out.extend_from_slice(&id.to_be_bytes());
    out.extend_from_slice(&f.to_be_bytes());
    out.extend_from_slice(&[0; 8]);
    out
}

/// The address a reverse name stands for: `4.3.2.1.in-addr.arpa` → 1.2.3.4, 32 nibbles of
/// `ip6.arpa` → the IPv6 address. Case-insensitive; `None` for anything partial.
pub fn reverse_addr(name: &str) -> Option<IpAddr> {
    let lower = name.to_ascii_lowercase();
    let lower = lower.strip_suffix('.').unwrap_or(&lower);
    if let Some(rest) = lower.strip_suffix(".in-addr.arpa") {
        let parts: Vec<&str> = rest.split('.').collect();
        if parts.len() != 4 {
            return None;
        }
        let mut o = [0u8; 4];
        for (dst, p) in o.iter_mut().rev().zip(&parts) {
            if p.is_empty() || p.len() > 3 || (p.len() > 1 && p.starts_with('0')) {
                return None;
            }
            *dst = p.parse().ok()?;
        }
        return Some(IpAddr::V4(Ipv4Addr::from(o)));
    }
    let rest = lower.strip_suffix(".ip6.arpa")?;
    let nibbles: Vec<&str> = rest.split('.').collect();
    if nibbles.len() != 32 {
        return None;
    }
    let mut v: u128 = 0;
    for n in nibbles.iter().rev() {
        let [c] = n.as_bytes() else { return None };
        v = (v << 4) | (*c as char).to_digit(16)? as u128;
    }
    Some(IpAddr::V6(Ipv6Addr::from(v)))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A query as dig sends it (with an EDNS OPT record after the question).
    fn query(id: u16, name: &str, qtype: u16) -> Vec<u8> {
        let mut m = Vec::new();
        m.extend_from_slice(&id.to_be_bytes());
        m.extend_from_slice(&[0x01, 0x20, 0, 1, 0, 0, 0, 0, 0, 1]);
        push_name(&mut m, &labels_of(name).unwrap());
        m.extend_from_slice(&qtype.to_be_bytes());
        m.extend_from_slice(&CLASS_IN.to_be_bytes());
        m.extend_from_slice(&[0, 0, 0x29, 0x04, 0xd0, 0, 0, 0, 0, 0, 0]);
        m
    }

    #[test]
    fn decodes_a_query() {
        let m = query(0x1234, "Example.TEST", TYPE_AAAA);
        let q = decode(&m).unwrap();
        assert_eq!(q.id, 0x1234);
        assert_eq!(q.qtype, TYPE_AAAA);
        assert_eq!(q.qclass, CLASS_IN);
        assert_eq!(q.opcode(), 0);
        assert_eq!(q.name().as_deref(), Some("example.test"));
        assert_eq!(q.labels, vec![b"Example".to_vec(), b"TEST".to_vec()]);
        // the root name
        let mut root = m[..12].to_vec();
        root.extend_from_slice(&[0, 0, 1, 0, 1]);
        assert_eq!(decode(&root).unwrap().name().as_deref(), Some(""));
    }

    #[test]
    fn drops_or_refuses_what_it_cannot_answer() {
        assert_eq!(decode(&[]), Err(DnsError::Drop));
        assert_eq!(decode(&[0; 11]), Err(DnsError::Drop));
        let mut m = query(7, "a.test", TYPE_A);
        m[2] |= 0x80; // a response
        assert_eq!(decode(&m), Err(DnsError::Drop));
        let mut m = query(7, "a.test", TYPE_A);
        m[2] = 0x28; // opcode 5 (UPDATE)
        assert!(matches!(
            decode(&m),
            Err(DnsError::Reply {
                rcode: NOTIMP,
                id: 7,
                ..
            })
        ));
        let mut m = query(7, "a.test", TYPE_A);
        m[5] = 2; // two questions
        assert!(matches!(
            decode(&m),
            Err(DnsError::Reply { rcode: FORMERR, .. })
        ));
        let m = query(7, "a.test", TYPE_A);
        assert!(matches!(
            decode(&m[..m.len() - 13]),
            Err(DnsError::Reply { rcode: FORMERR, .. })
        ));
        let mut m = query(7, "a.test", TYPE_A);
        m[12] = 0x41; // extended label type
        assert!(matches!(
            decode(&m),
            Err(DnsError::Reply { rcode: FORMERR, .. })
        ));
    }

    #[test]
    fn compression_pointers_only_go_backwards() {
        // header, then at 12: "a" + pointer to 12 (itself: a loop)
        let mut m = query(1, "x", TYPE_A)[..12].to_vec();
        m.extend_from_slice(&[1, b'a', 0xc0, 12, 0, 1, 0, 1]);
        assert!(matches!(
            decode(&m),
            Err(DnsError::Reply { rcode: FORMERR, .. })
        ));
        // a forward pointer
        let mut m = query(1, "x", TYPE_A)[..12].to_vec();
        m.extend_from_slice(&[0xc0, 20, 0, 1, 0, 1, 0, 0, 1, b'b', 0]);
        assert!(matches!(
            decode(&m),
            Err(DnsError::Reply { rcode: FORMERR, .. })
        ));
        // a legal backward pointer: a name in the header area cannot exist, so build one
        // after a first name: decode the second name directly
        let mut m = vec![0u8; 12];
        m.extend_from_slice(&[4, b't', b'e', b's', b't', 0]); // 12: "test"
        m.extend_from_slice(&[3, b'w', b'w', b'w', 0xc0, 12]); // 18: "www" + ptr
        let (labels, end) = read_name(&m, 18).unwrap();
        assert_eq!(labels, vec![b"www".to_vec(), b"test".to_vec()]);
        assert_eq!(end, m.len());
        // two pointers in a row, each going further back
        m.extend_from_slice(&[0xc0, 18]); // 24 -> 18 -> 12
        let (labels, end) = read_name(&m, 24).unwrap();
        assert_eq!(labels.len(), 2);
        assert_eq!(end, 26);
    }

    #[test]
    fn names_longer_than_255_bytes_are_refused() {
        let mut m = query(1, "x", TYPE_A)[..12].to_vec();
        for _ in 0..5 {
            m.push(63);
            m.extend_from_slice(&[b'a'; 63]);
        }
        m.extend_from_slice(&[0, 0, 1, 0, 1]);
        assert!(matches!(
            decode(&m),
            Err(DnsError::Reply { rcode: FORMERR, .. })
        ));
    }

    #[test]
    fn tcp_framing_needs_exact_bytes() {
        let m = query(9, "a.test", TYPE_A);
        let mut framed = (m.len() as u16).to_be_bytes().to_vec();
        framed.extend_from_slice(&m);
        assert_eq!(decode_tcp(&[]), Decoded::Need(2));
        assert_eq!(decode_tcp(&framed[..1]), Decoded::Need(1));
        assert_eq!(decode_tcp(&framed[..2]), Decoded::Need(m.len()));
        assert_eq!(decode_tcp(&framed[..10]), Decoded::Need(m.len() - 8));
        framed.extend_from_slice(b"next");
        match decode_tcp(&framed) {
            Decoded::Done(Ok(q), used) => {
                assert_eq!(q.id, 9);
                assert_eq!(used, m.len() + 2);
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn encodes_answers_that_decode_back() {
        let q = decode(&query(0xbeef, "Go.Example", TYPE_A)).unwrap();
        let a = encode_answer(
            &q,
            NOERROR,
            &[Rdata::Addr("198.18.0.5".parse().unwrap())],
            60,
            UDP_LIMIT,
        );
        assert_eq!(&a[..2], &[0xbe, 0xef]);
        assert_eq!(a[2] & 0x80, 0x80, "QR");
        assert_eq!(a[2] & 0x01, 0x01, "RD echoed");
        assert_eq!(a[3] & 0x0f, NOERROR);
        assert_eq!(&a[4..12], &[0, 1, 0, 1, 0, 0, 0, 0]);
        // the question is echoed with its case, the answer points at it
        let (labels, at) = read_name(&a, 12).unwrap();
        assert_eq!(labels, q.labels);
        let rr = &a[at + 4..];
        assert_eq!(&rr[..2], &[0xc0, 12]);
        assert_eq!(be16(rr, 2), Some(TYPE_A));
        assert_eq!(&rr[4..10], &[0, 1, 0, 0, 0, 60]);
        assert_eq!(&rr[10..], &[0, 4, 198, 18, 0, 5]);
        let v6 = encode_answer(
            &q,
            NOERROR,
            &[Rdata::Addr("fd63::1".parse().unwrap())],
            60,
            UDP_LIMIT,
        );
        assert_eq!(v6.len(), a.len() + 12);
        let ptr = encode_answer(&q, NOERROR, &[Rdata::Name("go.example".into())], 1, 512);
        assert!(ptr.ends_with(&[
            0, 12, 2, b'g', b'o', 7, b'e', b'x', b'a', b'm', b'p', b'l', b'e', 0
        ]));
        let empty = encode_answer(&q, NXDOMAIN, &[], 60, UDP_LIMIT);
        assert_eq!(empty[3] & 0x0f, NXDOMAIN);
        assert_eq!(&empty[6..8], &[0, 0]);
        let tiny = encode_answer(
            &q,
            NOERROR,
            &[Rdata::Addr("1.2.3.4".parse().unwrap())],
            1,
            30,
        );
        assert_eq!(tiny[2] & 0x02, 0x02, "TC");
        assert_eq!(&tiny[6..8], &[0, 0]);
        let e = encode_error(5, 0x2900, NOTIMP);
        assert_eq!(e, vec![0, 5, 0xa9, 0x84, 0, 0, 0, 0, 0, 0, 0, 0]);
    }

    #[test]
    fn reverse_names() {
        assert_eq!(
            reverse_addr("5.0.18.198.in-addr.arpa"),
            Some("198.18.0.5".parse().unwrap())
        );
        assert_eq!(
            reverse_addr("5.0.18.198.IN-ADDR.ARPA."),
            Some("198.18.0.5".parse().unwrap())
        );
        assert_eq!(reverse_addr("0.18.198.in-addr.arpa"), None);
        assert_eq!(reverse_addr("05.0.18.198.in-addr.arpa"), None);
        assert_eq!(reverse_addr("256.0.18.198.in-addr.arpa"), None);
        let ip: Ipv6Addr = "fd63:6873:6f63:6b73::7".parse().unwrap();
        let name: String = format!("{:032x}", u128::from(ip))
            .chars()
            .rev()
            .map(|c| format!("{c}."))
            .collect::<String>()
            + "ip6.arpa";
        assert_eq!(reverse_addr(&name), Some(IpAddr::V6(ip)));
        assert_eq!(reverse_addr("1.ip6.arpa"), None);
        assert_eq!(labels_of("a..b"), None);
        assert_eq!(labels_of(&"a".repeat(64)), None);
        assert_eq!(labels_of("a.b."), Some(vec![b"a".to_vec(), b"b".to_vec()]));
    }
}
