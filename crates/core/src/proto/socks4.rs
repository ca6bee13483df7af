//! SOCKS4 and SOCKS4a on the wire: the CONNECT request and the 8-byte reply (client side), plus
//! request decoding and reply encoding for test servers.
//! Must never: do I/O, panic, treat an unknown reply code as an error (it is `Unknown(u8)`), or
//! use a byte past the end of the current message (the tunnel data that follows is not ours).

use super::{Decoded, Dest, ProtoError};
use std::net::{IpAddr, Ipv4Addr};

/// Protocol version byte of a SOCKS4 request.
pub const VERSION: u8 = 4;
/// Version byte of a SOCKS4 reply (the reply carries 0, not 4).
pub const REPLY_VERSION: u8 = 0;
/// Command code of CONNECT.
pub const CMD_CONNECT: u8 = 1;
/// Command code of BIND.
pub const CMD_BIND: u8 = 2;
/// Longest user id or SOCKS4a host name we send or accept (bytes, without the NUL).
pub const MAX_FIELD: usize = 255;

/// Length of a reply on the wire.
const REPLY_LEN: usize = 8;
/// Fixed part of a request (VN, CD, DSTPORT, DSTIP) before the NUL-terminated user id.
const REQUEST_FIXED: usize = 8;
/// The SOCKS4a marker address 0.0.0.1 (any 0.0.0.x with x != 0 means "a name follows").
const SOCKS4A_MARKER: Ipv4Addr = Ipv4Addr::new(0, 0, 0, 1);

/// The CD field of a SOCKS4 reply.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Socks4Code {
    /// 0x5A: request granted.
    Granted,
    /// 0x5B: request rejected or failed.
    Rejected,
    /// 0x5C: rejected because the server cannot reach identd on the client.
    NoIdentd,
    /// 0x5D: rejected because identd reports a different user id.
    IdentMismatch,
    /// Any other code (never produced for the four known codes).
    Unknown(u8),
}

impl Socks4Code {
    /// Maps a wire byte to a code; unknown bytes become `Unknown`.
    pub fn from_u8(b: u8) -> Self {
        match b {
            0x5A => Socks4Code::Granted,
            0x5B => Socks4Code::Rejected,
            0x5C => Socks4Code::NoIdentd,
            0x5D => Socks4Code::IdentMismatch,
            other => Socks4Code::Unknown(other),
        }
    }

    /// The wire byte.
    pub fn to_u8(self) -> u8 {
        match self {
            Socks4Code::Granted => 0x5A,
            Socks4Code::Rejected => 0x5B,
            Socks4Code::NoIdentd => 0x5C,
            Socks4Code::IdentMismatch => 0x5D,
            Socks4Code::Unknown(b) => b,
        }
    }

    /// A short human description.
    pub fn description(self) -> &'static str {
        match self {
            Socks4Code::Granted => "request granted",
            Socks4Code::Rejected => "request rejected or failed",
            Socks4Code::NoIdentd => "rejected: server cannot reach identd on the client",
            Socks4Code::IdentMismatch => "rejected: identd reports a different user id",
            Socks4Code::Unknown(_) => "unknown SOCKS4 reply code",
        }
    }
}

/// A decoded SOCKS4 reply. `port` and `ip` are only meaningful for BIND; servers often send zeros.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Socks4Reply {
    pub code: Socks4Code,
    pub port: u16,
    pub ip: Ipv4Addr,
}

/// A decoded SOCKS4/4a request (server side). `name` is `Some` for SOCKS4a (DSTIP 0.0.0.x,
/// x != 0); it is the raw bytes received, not necessarily UTF-8.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Socks4Request {
    pub command: u8,
    pub port: u16,
    pub ip: Ipv4Addr,
    pub user_id: Vec<u8>,
    pub name: Option<Vec<u8>>,
}

/// Appends a CONNECT request for `dest`: SOCKS4 for an IPv4 address (a v4-mapped IPv6 address is
/// sent as its IPv4), SOCKS4a for a name. Errors (leaving `out` untouched) for any other IPv6
/// address, a name that is empty, over 255 bytes or contains NUL, and a user id that contains
/// NUL or is over 255 bytes.
pub fn encode_connect(dest: &Dest, user_id: &[u8], out: &mut Vec<u8>) -> Result<(), ProtoError> {
    if user_id.contains(&0) {
        return Err(ProtoError::Unencodable(
            "SOCKS4 user id contains a NUL byte",
        ));
    }
    if user_id.len() > MAX_FIELD {
        return Err(ProtoError::Unencodable("SOCKS4 user id over 255 bytes"));
    }
    let (ip, name) = match dest {
        Dest::Ip(sa) => match sa.ip() {
            IpAddr::V4(v4) => (v4, None),
            IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
                Some(v4) => (v4, None),
                None => {
                    return Err(ProtoError::Unencodable(
                        "SOCKS4 cannot carry an IPv6 address",
                    ));
                }
            },
        },
        Dest::Name(name, _) => {
            let name = name.as_bytes();
            if name.is_empty() {
                return Err(ProtoError::Unencodable("empty host name"));
            }
            if name.len() > MAX_FIELD {
                return Err(ProtoError::Unencodable("SOCKS4a host name over 255 bytes"));
            }
            if name.contains(&0) {
                return Err(ProtoError::Unencodable(
                    "SOCKS4a host name contains a NUL byte",
                ));
            }
            (SOCKS4A_MARKER, Some(name))
        }
    };
    out.reserve(REQUEST_FIXED + user_id.len() + 1 + name.map_or(0, |n| n.len() + 1));
    out.push(VERSION);
    out.push(CMD_CONNECT);
    out.extend_from_slice(&dest.port().to_be_bytes());
    out.extend_from_slice(&ip.octets());
    out.extend_from_slice(user_id);
    out.push(0);
    if let Some(name) = name {
        out.extend_from_slice(name);
        out.push(0);
    }
    Ok(())
}

/// Decodes the 8-byte reply (VN 0, CD, DSTPORT, DSTIP). Checks VN as soon as it arrives.
pub fn decode_reply(buf: &[u8]) -> Result<Decoded<Socks4Reply>, ProtoError> {
    check_version(buf, REPLY_VERSION)?;
    let Some((&[_, cd, p0, p1, a, b, c, d], _)) = buf.split_first_chunk::<REPLY_LEN>() else {
        return Ok(Decoded::Need(REPLY_LEN.saturating_sub(buf.len()).max(1)));
    };
    let reply = Socks4Reply {
        code: Socks4Code::from_u8(cd),
        port: u16::from_be_bytes([p0, p1]),
        ip: Ipv4Addr::new(a, b, c, d),
    };
    Ok(Decoded::Done(reply, REPLY_LEN))
}

/// Decodes a SOCKS4 or SOCKS4a request (server side). VN must be 4. The user id and the name
/// are bounded at 255 bytes ([`ProtoError::FieldTooLong`]); an empty SOCKS4a name is
/// [`ProtoError::EmptyDomain`]. While a NUL-terminated field is incomplete this asks for one
/// byte at a time, since its length is unknown.
pub fn decode_request(buf: &[u8]) -> Result<Decoded<Socks4Request>, ProtoError> {
    check_version(buf, VERSION)?;
    // The fixed part plus at least the user id's NUL.
    let Some((&[_, cd, p0, p1, a, b, c, d], rest)) = buf.split_first_chunk::<REQUEST_FIXED>()
    else {
        return Ok(Decoded::Need(
            (REQUEST_FIXED + 1).saturating_sub(buf.len()).max(1),
        ));
    };
    let Some((user_id, after_user)) = take_cstr(rest, "SOCKS4 user id")? else {
        return Ok(Decoded::Need(1));
    };
    let mut used = REQUEST_FIXED + user_id.len() + 1;
    let is_4a = a == 0 && b == 0 && c == 0 && d != 0;
    let name = if is_4a {
        let Some((name, _)) = take_cstr(after_user, "SOCKS4a host name")? else {
            return Ok(Decoded::Need(1));
        };
        if name.is_empty() {
            return Err(ProtoError::EmptyDomain);
        }
        used += name.len() + 1;
        Some(name.to_vec())
    } else {
        None
    };
    let req = Socks4Request {
        command: cd,
        port: u16::from_be_bytes([p0, p1]),
        ip: Ipv4Addr::new(a, b, c, d),
        user_id: user_id.to_vec(),
        name,
    };
    Ok(Decoded::Done(req, used))
}

/// Appends an 8-byte reply (server side): VN 0, `code`, `port`, `ip`.
pub fn encode_reply(code: Socks4Code, port: u16, ip: Ipv4Addr, out: &mut Vec<u8>) {
    out.push(REPLY_VERSION);
    out.push(code.to_u8());
    out.extend_from_slice(&port.to_be_bytes());
    out.extend_from_slice(&ip.octets());
}

/// Checks the first byte, if it has arrived.
fn check_version(buf: &[u8], expected: u8) -> Result<(), ProtoError> {
    match buf.first() {
        Some(&got) if got != expected => Err(ProtoError::BadVersion { expected, got }),
        _ => Ok(()),
    }
}

/// A field and the bytes after its terminating NUL.
type FieldAndRest<'a> = (&'a [u8], &'a [u8]);

/// Splits a NUL-terminated field (at most [`MAX_FIELD`] bytes) off the front of `bytes`:
/// `Some((field, after_nul))`, or `None` if the NUL has not arrived yet.
fn take_cstr<'a>(
    bytes: &'a [u8],
    field: &'static str,
) -> Result<Option<FieldAndRest<'a>>, ProtoError> {
    let mut parts = bytes.splitn(2, |&b| b == 0);
    let value = parts.next().unwrap_or_default();
    if value.len() > MAX_FIELD {
        return Err(ProtoError::FieldTooLong {
            field,
            max: MAX_FIELD,
        });
    }
    Ok(parts.next().map(|after| (value, after)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::testutil::{Rng, check_monotone, check_prefixes, feed, feed_exact};
    use std::net::{SocketAddr, SocketAddrV6};

    fn ip(s: &str) -> Dest {
        Dest::Ip(s.parse().unwrap())
    }

    fn name(n: &str, port: u16) -> Dest {
        Dest::Name(n.to_string(), port)
    }

    fn enc(dest: &Dest, user: &[u8]) -> Result<Vec<u8>, ProtoError> {
        let mut out = Vec::new();
        encode_connect(dest, user, &mut out).map(|()| out)
    }

    // ---- encode_connect ----

    #[test]
    fn connect_fred_example_from_spec() {
        assert_eq!(
            enc(&ip("66.102.7.99:80"), b"Fred").unwrap(),
            [
                0x04, 0x01, 0x00, 0x50, 0x42, 0x66, 0x07, 0x63, 0x46, 0x72, 0x65, 0x64, 0x00
            ]
        );
    }

    #[test]
    fn connect_empty_user_id() {
        assert_eq!(
            enc(&ip("127.0.0.1:1080"), b"").unwrap(),
            [0x04, 0x01, 0x04, 0x38, 0x7f, 0x00, 0x00, 0x01, 0x00]
        );
    }

    #[test]
    fn connect_socks4a_name() {
        let mut want = vec![0x04, 0x01, 0x01, 0xbb, 0x00, 0x00, 0x00, 0x01];
        want.extend_from_slice(b"bob\0example.com\0");
        assert_eq!(enc(&name("example.com", 443), b"bob").unwrap(), want);
        let mut want = vec![0x04, 0x01, 0x00, 0x50, 0x00, 0x00, 0x00, 0x01, 0x00];
        want.extend_from_slice(b"a\0");
        assert_eq!(enc(&name("a", 80), b"").unwrap(), want);
    }

    #[test]
    fn connect_v4_mapped_ipv6_is_sent_as_ipv4() {
        assert_eq!(
            enc(&ip("[::ffff:10.1.2.3]:8080"), b"").unwrap(),
            [0x04, 0x01, 0x1f, 0x90, 0x0a, 0x01, 0x02, 0x03, 0x00]
        );
        // Scope id and flow info do not matter.
        let sa = SocketAddrV6::new(Ipv4Addr::new(1, 2, 3, 4).to_ipv6_mapped(), 1, 7, 3);
        assert_eq!(
            enc(&Dest::Ip(SocketAddr::V6(sa)), b"").unwrap(),
            [0x04, 0x01, 0x00, 0x01, 1, 2, 3, 4, 0x00]
        );
    }

    #[test]
    fn connect_other_ipv6_is_unencodable() {
        // ::1 is v4-*compatible* (0.0.0.1), not v4-mapped: it must not become 0.0.0.1.
        for a in [
            "[::1]:80",
            "[2001:db8::1]:443",
            "[::]:1",
            "[::0.0.0.1]:80",
            "[64:ff9b::1.2.3.4]:80",
        ] {
            let mut out = vec![0xAA];
            assert!(matches!(
                encode_connect(&ip(a), b"u", &mut out),
                Err(ProtoError::Unencodable(_))
            ));
            assert_eq!(out, [0xAA], "{a}: out untouched on error");
        }
    }

    #[test]
    fn connect_rejects_bad_fields_and_leaves_out_untouched() {
        let long = "a".repeat(256);
        let cases: Vec<(Dest, &[u8])> = vec![
            (name("", 80), b""),
            (name(&long, 80), b""),
            (name("exa\0mple.com", 80), b""),
            (ip("1.2.3.4:80"), b"fr\0ed"),
            (name("example.com", 80), b"\0"),
        ];
        for (dest, user) in cases {
            let mut out = vec![1, 2, 3];
            let r = encode_connect(&dest, user, &mut out);
            assert!(
                matches!(r, Err(ProtoError::Unencodable(_))),
                "{dest:?} {user:?}"
            );
            assert_eq!(out, [1, 2, 3]);
        }
        let mut out = Vec::new();
        assert!(encode_connect(&ip("1.2.3.4:80"), &[b'u'; 256], &mut out).is_err());
        assert!(out.is_empty());
    }

    #[test]
    fn connect_field_limits_inclusive() {
        let n255 = "n".repeat(255);
        let out = enc(&name(&n255, 1), &[b'u'; 255]).unwrap();
        assert_eq!(out.len(), 8 + 255 + 1 + 255 + 1);
        assert_eq!(out[8 + 255], 0);
        assert_eq!(out.last(), Some(&0));
    }

    #[test]
    fn connect_appends() {
        let mut out = vec![0xEE];
        encode_connect(&ip("1.2.3.4:5"), b"", &mut out).unwrap();
        assert_eq!(out, [0xEE, 4, 1, 0, 5, 1, 2, 3, 4, 0]);
    }

    // ---- decode_reply ----

    #[test]
    fn reply_granted_with_arbitrary_tail() {
        let wire = [0x00, 0x5A, 0xDE, 0xAD, 0xBE, 0xEF, 0x01, 0x02];
        let want = Socks4Reply {
            code: Socks4Code::Granted,
            port: 0xDEAD,
            ip: Ipv4Addr::new(0xBE, 0xEF, 1, 2),
        };
        assert_eq!(decode_reply(&wire), Ok(Decoded::Done(want, 8)));
    }

    #[test]
    fn reply_partial_needs_the_rest() {
        let wire = [0x00, 0x5A, 0, 0, 0, 0, 0, 0];
        for len in 0..8 {
            assert_eq!(
                decode_reply(&wire[..len]),
                Ok(Decoded::Need(8 - len)),
                "len {len}"
            );
        }
    }

    #[test]
    fn reply_all_codes() {
        for b in 0..=255u8 {
            let wire = [0x00, b, 0x00, 0x50, 1, 2, 3, 4];
            let Ok(Decoded::Done(r, 8)) = decode_reply(&wire) else {
                panic!("{b}")
            };
            assert_eq!(r.code.to_u8(), b);
            assert_eq!(r.code, Socks4Code::from_u8(b));
            let known = matches!(b, 0x5A..=0x5D);
            assert_eq!(!known, matches!(r.code, Socks4Code::Unknown(_)));
        }
        assert_eq!(Socks4Code::from_u8(0x5A), Socks4Code::Granted);
        assert_eq!(Socks4Code::from_u8(0x5B), Socks4Code::Rejected);
        assert_eq!(Socks4Code::from_u8(0x5C), Socks4Code::NoIdentd);
        assert_eq!(Socks4Code::from_u8(0x5D), Socks4Code::IdentMismatch);
        assert_eq!(Socks4Code::from_u8(0x00), Socks4Code::Unknown(0));
        assert!(!Socks4Code::Unknown(9).description().is_empty());
    }

    #[test]
    fn reply_bad_version_is_detected_on_the_first_byte() {
        for vn in [0x04, 0x05, 0x01, 0xFF] {
            assert_eq!(
                decode_reply(&[vn]),
                Err(ProtoError::BadVersion {
                    expected: 0,
                    got: vn
                })
            );
            assert!(decode_reply(&[vn, 0x5A, 0, 0, 0, 0, 0, 0]).is_err());
        }
    }

    #[test]
    fn reply_followed_by_tunnel_data() {
        let mut wire = vec![0x00, 0x5B, 0, 0, 0, 0, 0, 0];
        wire.extend_from_slice(b"HTTP/1.1 200 OK\r\n");
        let r = check_prefixes(&wire, 8, decode_reply);
        assert_eq!(r.code, Socks4Code::Rejected);
        assert_eq!(feed_exact(&wire, decode_reply).unwrap().1, 8);
    }

    #[test]
    fn reply_roundtrip_via_encode_reply() {
        let mut out = Vec::new();
        encode_reply(
            Socks4Code::IdentMismatch,
            1080,
            Ipv4Addr::new(9, 8, 7, 6),
            &mut out,
        );
        assert_eq!(out, [0x00, 0x5D, 0x04, 0x38, 9, 8, 7, 6]);
        let mut out = Vec::new();
        encode_reply(
            Socks4Code::Unknown(0x42),
            0,
            Ipv4Addr::UNSPECIFIED,
            &mut out,
        );
        assert_eq!(
            decode_reply(&out).unwrap(),
            Decoded::Done(
                Socks4Reply {
                    code: Socks4Code::Unknown(0x42),
                    port: 0,
                    ip: Ipv4Addr::UNSPECIFIED
                },
                8
            )
        );
    }

    // ---- decode_request (server side) ----

    #[test]
    fn request_socks4_roundtrip() {
        let wire = enc(&ip("66.102.7.99:80"), b"Fred").unwrap();
        let want = Socks4Request {
            command: CMD_CONNECT,
            port: 80,
            ip: Ipv4Addr::new(66, 102, 7, 99),
            user_id: b"Fred".to_vec(),
            name: None,
        };
        assert_eq!(decode_request(&wire), Ok(Decoded::Done(want.clone(), 13)));
        let mut with_tail = wire.clone();
        with_tail.extend_from_slice(b"GET / HTTP/1.1\r\n\0\0");
        assert_eq!(check_prefixes(&with_tail, 13, decode_request), want);
    }

    #[test]
    fn request_socks4a_roundtrip() {
        let wire = enc(&name("example.com", 443), b"bob").unwrap();
        let want = Socks4Request {
            command: CMD_CONNECT,
            port: 443,
            ip: SOCKS4A_MARKER,
            user_id: b"bob".to_vec(),
            name: Some(b"example.com".to_vec()),
        };
        let mut with_tail = wire.clone();
        with_tail.extend_from_slice(&[0, 0, 0, 1, 0]);
        assert_eq!(check_prefixes(&with_tail, wire.len(), decode_request), want);
        for chunk in 1..=wire.len() {
            assert_eq!(
                feed(&with_tail, chunk, decode_request).unwrap(),
                (want.clone(), wire.len())
            );
        }
    }

    #[test]
    fn request_socks4a_any_marker_and_bind() {
        // 0.0.0.255 is also a 4a marker; 0.0.0.0 is not (plain SOCKS4 to 0.0.0.0).
        let wire = [4, CMD_BIND, 0, 21, 0, 0, 0, 255, 0, b'h', 0];
        let Ok(Decoded::Done(r, 11)) = decode_request(&wire) else {
            panic!()
        };
        assert_eq!(r.command, CMD_BIND);
        assert_eq!(r.name.as_deref(), Some(&b"h"[..]));
        let wire = [4, 1, 0, 21, 0, 0, 0, 0, 0, b'h', 0];
        let Ok(Decoded::Done(r, 9)) = decode_request(&wire) else {
            panic!()
        };
        assert_eq!(r.name, None);
        // 1.0.0.1 has a non-zero leading octet: not a marker.
        let wire = [4, 1, 0, 21, 1, 0, 0, 1, 0, b'h', 0];
        assert!(matches!(
            decode_request(&wire),
            Ok(Decoded::Done(Socks4Request { name: None, .. }, 9))
        ));
    }

    #[test]
    fn request_need_counts() {
        assert_eq!(decode_request(&[]), Ok(Decoded::Need(9)));
        assert_eq!(decode_request(&[4, 1, 0, 80]), Ok(Decoded::Need(5)));
        assert_eq!(
            decode_request(&[4, 1, 0, 80, 1, 2, 3, 4]),
            Ok(Decoded::Need(1))
        );
        assert_eq!(
            decode_request(&[4, 1, 0, 80, 1, 2, 3, 4, b'x']),
            Ok(Decoded::Need(1))
        );
        // 4a: after the user id's NUL, one byte at a time (an empty name would be 1 byte).
        assert_eq!(
            decode_request(&[4, 1, 0, 80, 0, 0, 0, 1, 0]),
            Ok(Decoded::Need(1))
        );
        assert_eq!(
            decode_request(&[4, 1, 0, 80, 0, 0, 0, 1, 0, b'a']),
            Ok(Decoded::Need(1))
        );
    }

    #[test]
    fn request_errors() {
        assert_eq!(
            decode_request(&[5]),
            Err(ProtoError::BadVersion {
                expected: 4,
                got: 5
            })
        );
        assert_eq!(
            decode_request(&[4, 1, 0, 80, 0, 0, 0, 1, 0, 0]),
            Err(ProtoError::EmptyDomain)
        );
        // User id: 255 bytes without NUL still waits; the 256th non-NUL byte is an error.
        let mut wire = vec![4, 1, 0, 80, 1, 2, 3, 4];
        wire.extend_from_slice(&[b'u'; 255]);
        assert_eq!(decode_request(&wire), Ok(Decoded::Need(1)));
        let mut ok = wire.clone();
        ok.push(0);
        assert!(matches!(decode_request(&ok), Ok(Decoded::Done(_, 264))));
        wire.push(b'u');
        assert_eq!(
            decode_request(&wire),
            Err(ProtoError::FieldTooLong {
                field: "SOCKS4 user id",
                max: 255
            })
        );
        // Name: same bound.
        let mut wire = vec![4, 1, 0, 80, 0, 0, 0, 1, 0];
        wire.extend_from_slice(&[b'n'; 255]);
        assert_eq!(decode_request(&wire), Ok(Decoded::Need(1)));
        let mut ok = wire.clone();
        ok.push(0);
        assert!(matches!(decode_request(&ok), Ok(Decoded::Done(_, 265))));
        wire.push(b'n');
        assert!(matches!(
            decode_request(&wire),
            Err(ProtoError::FieldTooLong { max: 255, .. })
        ));
    }

    #[test]
    fn request_keeps_non_utf8_bytes() {
        let wire = [4, 1, 0, 80, 0, 0, 0, 9, 0xFF, 0xFE, 0, 0xC3, 0x28, 0];
        let Ok(Decoded::Done(r, 14)) = decode_request(&wire) else {
            panic!()
        };
        assert_eq!(r.user_id, [0xFF, 0xFE]);
        assert_eq!(r.name.as_deref(), Some(&[0xC3, 0x28][..]));
        assert_eq!(r.ip, Ipv4Addr::new(0, 0, 0, 9));
    }

    #[test]
    fn fuzz_decoders_are_consistent() {
        let mut rng = Rng::new(0x50C4);
        let seeds: Vec<Vec<u8>> = vec![
            enc(&ip("66.102.7.99:80"), b"Fred").unwrap(),
            enc(&name("example.com", 443), b"bob").unwrap(),
            vec![0, 0x5A, 1, 2, 3, 4, 5, 6, 7],
            vec![4, 1, 0, 80, 0, 0, 0, 1, 0, 0],
        ];
        for i in 0..3000 {
            let buf = if i % 10 == 0 {
                (0..rng.below(24)).map(|_| rng.byte()).collect()
            } else {
                let base = &seeds[rng.below(seeds.len())];
                rng.mutate(base)
            };
            check_monotone(&buf, decode_reply);
            check_monotone(&buf, decode_request);
        }
        // Long fields: the bound makes a 300-byte NUL-free input an error, not a Need.
        let mut long = vec![4, 1, 0, 80, 0, 0, 0, 1];
        long.extend_from_slice(&[b'x'; 300]);
        check_monotone(&long, decode_request);
        assert!(decode_request(&long).is_err());
    }
}
