//! SOCKS5 on the wire (RFC 1928) with username/password auth (RFC 1929): greeting, method
//! selection, auth, request/reply and the UDP ASSOCIATE datagram header; both sides (the server
//! side is for test fixtures).
//! Must never: do I/O, panic, treat an unknown method/command/reply code as an error (they are
//! values), or use a byte past the end of the current message (tunnel data is not ours).

use super::{Decoded, Dest, ProtoError};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

/// Protocol version byte of SOCKS5 messages.
pub const VERSION: u8 = 5;
/// Version byte of the RFC 1929 username/password sub-negotiation.
pub const USERPASS_VERSION: u8 = 1;
/// Address type: IPv4.
pub const ATYP_IPV4: u8 = 1;
/// Address type: domain name (length-prefixed).
pub const ATYP_DOMAIN: u8 = 3;
/// Address type: IPv6.
pub const ATYP_IPV6: u8 = 4;

/// Bytes of a request, reply or UDP header before DST.ADDR/BND.ADDR, plus ATYP and the first
/// address byte: enough to know the total length for every address type.
const ADDR_PROBE: usize = 2;

/// An authentication method (RFC 1928 section 3).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Method {
    /// 0x00: no authentication required.
    NoAuth,
    /// 0x01: GSSAPI.
    Gssapi,
    /// 0x02: username/password (RFC 1929).
    UserPass,
    /// 0xFF: the server accepts none of the offered methods.
    NoAcceptable,
    /// Any other code (never produced for the four known codes).
    Other(u8),
}

impl Method {
    /// Maps a wire byte to a method; unknown bytes become `Other`.
    pub fn from_u8(b: u8) -> Self {
        match b {
            0x00 => Method::NoAuth,
            0x01 => Method::Gssapi,
            0x02 => Method::UserPass,
            0xFF => Method::NoAcceptable,
            other => Method::Other(other),
        }
    }

    /// The wire byte.
    pub fn to_u8(self) -> u8 {
        match self {
            Method::NoAuth => 0x00,
            Method::Gssapi => 0x01,
            Method::UserPass => 0x02,
            Method::NoAcceptable => 0xFF,
            Method::Other(b) => b,
        }
    }
}

/// The CMD field of a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Command {
    /// 0x01: CONNECT.
    Connect,
    /// 0x02: BIND.
    Bind,
    /// 0x03: UDP ASSOCIATE.
    UdpAssociate,
    /// Any other code (never produced for the three known codes).
    Unknown(u8),
}

impl Command {
    /// Maps a wire byte to a command; unknown bytes become `Unknown`.
    pub fn from_u8(b: u8) -> Self {
        match b {
            1 => Command::Connect,
            2 => Command::Bind,
            3 => Command::UdpAssociate,
            other => Command::Unknown(other),
        }
    }

    /// The wire byte.
    pub fn to_u8(self) -> u8 {
        match self {
            Command::Connect => 1,
            Command::Bind => 2,
            Command::UdpAssociate => 3,
            Command::Unknown(b) => b,
        }
    }
}

/// The REP field of a reply (RFC 1928 section 6).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ReplyCode {
    /// 0x00
    Succeeded,
    /// 0x01
    GeneralFailure,
    /// 0x02
    NotAllowed,
    /// 0x03
    NetworkUnreachable,
    /// 0x04
    HostUnreachable,
    /// 0x05
    ConnectionRefused,
    /// 0x06
    TtlExpired,
    /// 0x07
    CommandNotSupported,
    /// 0x08
    AddrTypeNotSupported,
    /// Any other code (never produced for 0x00..=0x08).
    Unknown(u8),
}

impl ReplyCode {
    /// Maps a wire byte to a reply code; unknown bytes become `Unknown`.
    pub fn from_u8(b: u8) -> Self {
        match b {
            0 => ReplyCode::Succeeded,
            1 => ReplyCode::GeneralFailure,
            2 => ReplyCode::NotAllowed,
            3 => ReplyCode::NetworkUnreachable,
            4 => ReplyCode::HostUnreachable,
            5 => ReplyCode::ConnectionRefused,
            6 => ReplyCode::TtlExpired,
            7 => ReplyCode::CommandNotSupported,
            8 => ReplyCode::AddrTypeNotSupported,
            other => ReplyCode::Unknown(other),
        }
    }

    /// The wire byte.
    pub fn to_u8(self) -> u8 {
        match self {
            ReplyCode::Succeeded => 0,
            ReplyCode::GeneralFailure => 1,
            ReplyCode::NotAllowed => 2,
            ReplyCode::NetworkUnreachable => 3,
            ReplyCode::HostUnreachable => 4,
            ReplyCode::ConnectionRefused => 5,
            ReplyCode::TtlExpired => 6,
            ReplyCode::CommandNotSupported => 7,
            ReplyCode::AddrTypeNotSupported => 8,
            ReplyCode::Unknown(b) => b,
        }
    }

    /// A short human description (RFC 1928 wording).
    pub fn description(self) -> &'static str {
        match self {
            ReplyCode::Succeeded => "succeeded",
            ReplyCode::GeneralFailure => "general SOCKS server failure",
            ReplyCode::NotAllowed => "connection not allowed by ruleset",
            ReplyCode::NetworkUnreachable => "network unreachable",
            ReplyCode::HostUnreachable => "host unreachable",
            ReplyCode::ConnectionRefused => "connection refused",
            ReplyCode::TtlExpired => "TTL expired",
            ReplyCode::CommandNotSupported => "command not supported",
            ReplyCode::AddrTypeNotSupported => "address type not supported",
            ReplyCode::Unknown(_) => "unknown SOCKS5 reply code",
        }
    }
}

/// An address as carried on the wire (ATYP + address + port). A name is the raw bytes received,
/// not necessarily UTF-8.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum WireAddr {
    Ip(SocketAddr),
    Name(Vec<u8>, u16),
}

impl WireAddr {
    /// The port.
    pub fn port(&self) -> u16 {
        match self {
            WireAddr::Ip(sa) => sa.port(),
            WireAddr::Name(_, p) => *p,
        }
    }

    /// The wire form of `d` (addresses as given: a v4-mapped IPv6 address stays IPv6).
    pub fn from_dest(d: &Dest) -> WireAddr {
        match d {
            Dest::Ip(sa) => WireAddr::Ip(*sa),
            Dest::Name(n, p) => WireAddr::Name(n.as_bytes().to_vec(), *p),
        }
    }

    /// Back to a [`Dest`]; `None` if the name is not UTF-8.
    pub fn to_dest(&self) -> Option<Dest> {
        match self {
            WireAddr::Ip(sa) => Some(Dest::Ip(*sa)),
            WireAddr::Name(n, p) => String::from_utf8(n.clone()).ok().map(|s| Dest::Name(s, *p)),
        }
    }
}

impl From<&Dest> for WireAddr {
    fn from(d: &Dest) -> Self {
        WireAddr::from_dest(d)
    }
}

/// RFC 1929 credentials as received: (user name, password), raw bytes.
pub type Credentials = (Vec<u8>, Vec<u8>);

/// A decoded reply: the code and BND.ADDR/BND.PORT.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    pub code: ReplyCode,
    pub bound: WireAddr,
}

// ---------------------------------------------------------------------------------------------
// Client side
// ---------------------------------------------------------------------------------------------

/// Appends the greeting: VER 5, NMETHODS, METHODS. 1..=255 methods, else `Unencodable`.
pub fn encode_greeting(methods: &[Method], out: &mut Vec<u8>) -> Result<(), ProtoError> {
    let n = match u8::try_from(methods.len()) {
        Ok(n) if n > 0 => n,
        _ => {
            return Err(ProtoError::Unencodable(
                "SOCKS5 greeting needs 1..=255 methods",
            ));
        }
    };
    out.reserve(2 + methods.len());
    out.push(VERSION);
    out.push(n);
    out.extend(methods.iter().map(|m| m.to_u8()));
    Ok(())
}

/// Decodes the server's method selection (VER 5, METHOD; 2 bytes).
pub fn decode_method_selection(buf: &[u8]) -> Result<Decoded<Method>, ProtoError> {
    check_version(buf, VERSION)?;
    match buf.split_first_chunk::<2>() {
        Some((&[_, m], _)) => Ok(Decoded::Done(Method::from_u8(m), 2)),
        None => Ok(need(2, buf.len())),
    }
}

/// Appends an RFC 1929 username/password request: VER 1, ULEN, UNAME, PLEN, PASSWD. The user
/// name must be 1..=255 bytes; the password 0..=255 bytes (RFC 1929 says 1..=255, but an empty
/// password is accepted for leniency: some setups use one).
pub fn encode_userpass(user: &[u8], pass: &[u8], out: &mut Vec<u8>) -> Result<(), ProtoError> {
    let ulen = match u8::try_from(user.len()) {
        Ok(n) if n > 0 => n,
        _ => {
            return Err(ProtoError::Unencodable(
                "SOCKS5 user name must be 1..=255 bytes",
            ));
        }
    };
    let Ok(plen) = u8::try_from(pass.len()) else {
        return Err(ProtoError::Unencodable("SOCKS5 password over 255 bytes"));
    };
    out.reserve(3 + user.len() + pass.len());
    out.push(USERPASS_VERSION);
    out.push(ulen);
    out.extend_from_slice(user);
    out.push(plen);
    out.extend_from_slice(pass);
    Ok(())
}

/// Decodes the RFC 1929 status reply (VER, STATUS; 2 bytes) and returns STATUS (0 = success).
/// VER 1 is the standard; VER 5 is accepted too because some servers send it.
pub fn decode_auth_reply(buf: &[u8]) -> Result<Decoded<u8>, ProtoError> {
    match buf.first() {
        Some(&got) if got != USERPASS_VERSION && got != VERSION => {
            return Err(ProtoError::BadVersion {
                expected: USERPASS_VERSION,
                got,
            });
        }
        _ => {}
    }
    match buf.split_first_chunk::<2>() {
        Some((&[_, status], _)) => Ok(Decoded::Done(status, 2)),
        None => Ok(need(2, buf.len())),
    }
}

/// Appends a request: VER 5, CMD, RSV 0, ATYP + address + port. IPv4 is ATYP 1 and IPv6 ATYP 4
/// (a v4-mapped IPv6 address is sent as given); a name is ATYP 3 and must be 1..=255 bytes.
pub fn encode_request(cmd: Command, dest: &Dest, out: &mut Vec<u8>) -> Result<(), ProtoError> {
    encode_with_addr(&[VERSION, cmd.to_u8(), 0], &WireAddr::from_dest(dest), out)
}

/// Decodes a reply: VER 5, REP, RSV (ignored), ATYP + BND.ADDR + BND.PORT. Fewer than 5 bytes:
/// `Need(5 - len)`; then `Need(total - len)`. ATYP other than 1/3/4 is `UnknownAddrType`, a
/// zero-length name is `EmptyDomain`. The version and ATYP are checked as soon as they arrive.
pub fn decode_reply(buf: &[u8]) -> Result<Decoded<Reply>, ProtoError> {
    check_version(buf, VERSION)?;
    let code = buf.get(1).map(|&b| ReplyCode::from_u8(b));
    Ok(match decode_addr_after(buf, 3)? {
        Decoded::Done(bound, used) => match code {
            Some(code) => Decoded::Done(Reply { code, bound }, used),
            None => need(used, buf.len()), // unreachable: `used` > 3 bytes were present
        },
        Decoded::Need(n) => Decoded::Need(n),
    })
}

/// Appends a UDP ASSOCIATE datagram header: RSV 0 0, FRAG, ATYP + DST.ADDR + DST.PORT (the
/// payload follows it). Same address rules as [`encode_request`].
pub fn encode_udp_header(frag: u8, dest: &Dest, out: &mut Vec<u8>) -> Result<(), ProtoError> {
    encode_with_addr(&[0, 0, frag], &WireAddr::from_dest(dest), out)
}

/// Decodes a UDP ASSOCIATE datagram header: RSV (2 bytes, ignored), FRAG, ATYP + address +
/// port. Returns FRAG and the address; on a complete datagram `used` is the header length and
/// the payload is `&buf[used..]`. `Need` on a datagram means it is truncated.
pub fn decode_udp_header(buf: &[u8]) -> Result<Decoded<(u8, WireAddr)>, ProtoError> {
    let frag = buf.get(2).copied();
    Ok(match decode_addr_after(buf, 3)? {
        Decoded::Done(addr, used) => match frag {
            Some(frag) => Decoded::Done((frag, addr), used),
            None => need(used, buf.len()), // unreachable: `used` > 3 bytes were present
        },
        Decoded::Need(n) => Decoded::Need(n),
    })
}

// ---------------------------------------------------------------------------------------------
// Server side (test fixtures)
// ---------------------------------------------------------------------------------------------

/// Decodes a greeting (server side): VER 5, NMETHODS, METHODS. NMETHODS 0 is not an error: it
/// yields an empty list (the server then answers `NoAcceptable`).
pub fn decode_greeting(buf: &[u8]) -> Result<Decoded<Vec<Method>>, ProtoError> {
    check_version(buf, VERSION)?;
    let Some((&[_, n], rest)) = buf.split_first_chunk::<2>() else {
        return Ok(need(2, buf.len()));
    };
    let total = 2 + usize::from(n);
    match rest.get(..usize::from(n)) {
        Some(ms) => Ok(Decoded::Done(
            ms.iter().map(|&b| Method::from_u8(b)).collect(),
            total,
        )),
        None => Ok(need(total, buf.len())),
    }
}

/// Appends the method selection (server side): VER 5, METHOD.
pub fn encode_method_selection(m: Method, out: &mut Vec<u8>) {
    out.push(VERSION);
    out.push(m.to_u8());
}

/// Decodes an RFC 1929 username/password request (server side): VER 1, ULEN, UNAME, PLEN,
/// PASSWD. Returns (user, password) as raw bytes; empty values are returned, not rejected.
pub fn decode_userpass(buf: &[u8]) -> Result<Decoded<Credentials>, ProtoError> {
    check_version(buf, USERPASS_VERSION)?;
    // Smallest possible message: VER, ULEN 0, PLEN 0.
    let Some((&[_, ulen], rest)) = buf.split_first_chunk::<2>() else {
        return Ok(need(3, buf.len()));
    };
    let ulen = usize::from(ulen);
    let Some((user, after_user)) = rest.split_at_checked(ulen) else {
        return Ok(need(2 + ulen + 1, buf.len()));
    };
    let Some((&plen, after_plen)) = after_user.split_first() else {
        return Ok(need(2 + ulen + 1, buf.len()));
    };
    let plen = usize::from(plen);
    let total = 2 + ulen + 1 + plen;
    match after_plen.get(..plen) {
        Some(pass) => Ok(Decoded::Done((user.to_vec(), pass.to_vec()), total)),
        None => Ok(need(total, buf.len())),
    }
}

/// Appends the RFC 1929 status reply (server side): VER 1, STATUS (0 = success).
pub fn encode_auth_reply(status: u8, out: &mut Vec<u8>) {
    out.push(USERPASS_VERSION);
    out.push(status);
}

/// Decodes a request (server side): VER 5, CMD, RSV (ignored), ATYP + DST.ADDR + DST.PORT. Same
/// length and address rules as [`decode_reply`].
pub fn decode_request(buf: &[u8]) -> Result<Decoded<(Command, WireAddr)>, ProtoError> {
    check_version(buf, VERSION)?;
    let cmd = buf.get(1).map(|&b| Command::from_u8(b));
    Ok(match decode_addr_after(buf, 3)? {
        Decoded::Done(addr, used) => match cmd {
            Some(cmd) => Decoded::Done((cmd, addr), used),
            None => need(used, buf.len()), // unreachable: `used` > 3 bytes were present
        },
        Decoded::Need(n) => Decoded::Need(n),
    })
}

/// Appends a reply (server side): VER 5, REP, RSV 0, ATYP + BND.ADDR + BND.PORT. A name must be
/// 1..=255 bytes.
pub fn encode_reply(
    code: ReplyCode,
    bound: &WireAddr,
    out: &mut Vec<u8>,
) -> Result<(), ProtoError> {
    encode_with_addr(&[VERSION, code.to_u8(), 0], bound, out)
}

// ---------------------------------------------------------------------------------------------
// Shared pieces
// ---------------------------------------------------------------------------------------------

/// `Need` for a message of `total` bytes of which `have` are present (always at least 1).
fn need<T>(total: usize, have: usize) -> Decoded<T> {
    Decoded::Need(total.saturating_sub(have).max(1))
}

/// Checks the first byte, if it has arrived.
fn check_version(buf: &[u8], expected: u8) -> Result<(), ProtoError> {
    match buf.first() {
        Some(&got) if got != expected => Err(ProtoError::BadVersion { expected, got }),
        _ => Ok(()),
    }
}

/// Appends `prefix` then the address; validates first so that `out` is untouched on error.
fn encode_with_addr(prefix: &[u8], addr: &WireAddr, out: &mut Vec<u8>) -> Result<(), ProtoError> {
    match addr {
        WireAddr::Name(name, _) if name.is_empty() || name.len() > 255 => Err(
            ProtoError::Unencodable("SOCKS5 host name must be 1..=255 bytes"),
        ),
        _ => {
            out.extend_from_slice(prefix);
            encode_addr(addr, out);
            Ok(())
        }
    }
}

/// Appends ATYP + address + port. A name must already be checked to be 1..=255 bytes.
fn encode_addr(addr: &WireAddr, out: &mut Vec<u8>) {
    match addr {
        WireAddr::Ip(SocketAddr::V4(sa)) => {
            out.push(ATYP_IPV4);
            out.extend_from_slice(&sa.ip().octets());
        }
        WireAddr::Ip(SocketAddr::V6(sa)) => {
            out.push(ATYP_IPV6);
            out.extend_from_slice(&sa.ip().octets());
        }
        WireAddr::Name(name, _) => {
            out.push(ATYP_DOMAIN);
            out.push(u8::try_from(name.len()).unwrap_or(u8::MAX));
            out.extend_from_slice(name);
        }
    }
    out.extend_from_slice(&addr.port().to_be_bytes());
}

/// Decodes ATYP + address + port starting at `buf[prefix..]` (the bytes before it are the
/// caller's). `used` and `Need` are counted over the whole of `buf`.
fn decode_addr_after(buf: &[u8], prefix: usize) -> Result<Decoded<WireAddr>, ProtoError> {
    let rest = buf.get(prefix..).unwrap_or_default();
    // ATYP and the first address byte determine the length.
    let probe = prefix + ADDR_PROBE;
    let Some((&[atyp, first], _)) = rest.split_first_chunk::<ADDR_PROBE>() else {
        return match rest.first() {
            Some(&atyp) if !matches!(atyp, ATYP_IPV4 | ATYP_DOMAIN | ATYP_IPV6) => {
                Err(ProtoError::UnknownAddrType(atyp))
            }
            _ => Ok(need(probe, buf.len())),
        };
    };
    let addr_len = match atyp {
        ATYP_IPV4 => 4,
        ATYP_IPV6 => 16,
        ATYP_DOMAIN if first == 0 => return Err(ProtoError::EmptyDomain),
        ATYP_DOMAIN => 1 + usize::from(first),
        other => return Err(ProtoError::UnknownAddrType(other)),
    };
    let total = prefix + 1 + addr_len + 2;
    let Some(body) = rest.get(1..1 + addr_len + 2) else {
        return Ok(need(total, buf.len()));
    };
    let Some((addr, &port)) = body.split_last_chunk::<2>() else {
        return Ok(need(total, buf.len())); // unreachable: body has addr_len + 2 bytes
    };
    let port = u16::from_be_bytes(port);
    let wire = match (atyp, addr) {
        (ATYP_IPV4, &[a, b, c, d]) => {
            WireAddr::Ip(SocketAddr::new(IpAddr::V4(Ipv4Addr::new(a, b, c, d)), port))
        }
        (ATYP_IPV6, _) => match <[u8; 16]>::try_from(addr) {
            Ok(octets) => WireAddr::Ip(SocketAddr::new(IpAddr::V6(Ipv6Addr::from(octets)), port)),
            Err(_) => return Ok(need(total, buf.len())), // unreachable: 16 bytes
        },
        // ATYP 3: skip the length byte.
        _ => WireAddr::Name(addr.get(1..).unwrap_or_default().to_vec(), port),
    };
    Ok(Decoded::Done(wire, total))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::testutil::{Rng, check_monotone, check_prefixes, feed};

    fn ip(s: &str) -> Dest {
        Dest::Ip(s.parse().unwrap())
    }

    fn name(n: &str, port: u16) -> Dest {
        Dest::Name(n.to_string(), port)
    }

    fn req(dest: &Dest) -> Result<Vec<u8>, ProtoError> {
        let mut out = Vec::new();
        encode_request(Command::Connect, dest, &mut out).map(|()| out)
    }

    fn reply_bytes(code: u8, addr: &[u8]) -> Vec<u8> {
        let mut v = vec![5, code, 0];
        v.extend_from_slice(addr);
        v
    }

    const V4_ADDR: [u8; 7] = [1, 127, 0, 0, 1, 0x1F, 0x90]; // 127.0.0.1:8080

    // ---- codes ----

    #[test]
    fn method_codes() {
        for (b, m) in [
            (0x00, Method::NoAuth),
            (0x01, Method::Gssapi),
            (0x02, Method::UserPass),
            (0xFF, Method::NoAcceptable),
            (0x03, Method::Other(3)),
            (0x80, Method::Other(0x80)),
            (0xFE, Method::Other(0xFE)),
        ] {
            assert_eq!(Method::from_u8(b), m);
            assert_eq!(m.to_u8(), b);
        }
        for b in 0..=255u8 {
            assert_eq!(Method::from_u8(b).to_u8(), b);
        }
    }

    #[test]
    fn command_codes() {
        for (b, c) in [
            (1, Command::Connect),
            (2, Command::Bind),
            (3, Command::UdpAssociate),
            (0, Command::Unknown(0)),
            (4, Command::Unknown(4)),
        ] {
            assert_eq!(Command::from_u8(b), c);
            assert_eq!(c.to_u8(), b);
        }
        for b in 0..=255u8 {
            assert_eq!(Command::from_u8(b).to_u8(), b);
        }
    }

    #[test]
    fn reply_code_table() {
        let all = [
            ReplyCode::Succeeded,
            ReplyCode::GeneralFailure,
            ReplyCode::NotAllowed,
            ReplyCode::NetworkUnreachable,
            ReplyCode::HostUnreachable,
            ReplyCode::ConnectionRefused,
            ReplyCode::TtlExpired,
            ReplyCode::CommandNotSupported,
            ReplyCode::AddrTypeNotSupported,
        ];
        for (i, c) in all.iter().enumerate() {
            assert_eq!(ReplyCode::from_u8(i as u8), *c);
            assert_eq!(c.to_u8(), i as u8);
            assert!(!c.description().is_empty());
        }
        assert_eq!(ReplyCode::Succeeded.description(), "succeeded");
        assert_eq!(
            ReplyCode::ConnectionRefused.description(),
            "connection refused"
        );
        for b in 9..=255u8 {
            assert_eq!(ReplyCode::from_u8(b), ReplyCode::Unknown(b));
            assert_eq!(ReplyCode::Unknown(b).to_u8(), b);
        }
    }

    // ---- greeting / method selection ----

    #[test]
    fn greeting_vectors() {
        let mut out = Vec::new();
        encode_greeting(&[Method::NoAuth], &mut out).unwrap();
        assert_eq!(out, [0x05, 0x01, 0x00]);
        let mut out = Vec::new();
        encode_greeting(&[Method::NoAuth, Method::UserPass], &mut out).unwrap();
        assert_eq!(out, [0x05, 0x02, 0x00, 0x02]);
        let mut out = vec![0xAB];
        encode_greeting(&[Method::Other(0x80), Method::Gssapi], &mut out).unwrap();
        assert_eq!(out, [0xAB, 0x05, 0x02, 0x80, 0x01]);
    }

    #[test]
    fn greeting_method_count_bounds() {
        let mut out = vec![7];
        assert!(matches!(
            encode_greeting(&[], &mut out),
            Err(ProtoError::Unencodable(_))
        ));
        assert!(encode_greeting(&[Method::NoAuth; 256], &mut out).is_err());
        assert_eq!(out, [7]);
        encode_greeting(&[Method::NoAuth; 255], &mut out).unwrap();
        assert_eq!(out.len(), 1 + 2 + 255);
        assert_eq!(out[2], 255);
    }

    #[test]
    fn greeting_server_decode() {
        let wire = [5, 2, 0, 2, 0xEE];
        assert_eq!(
            check_prefixes(&wire, 4, decode_greeting),
            vec![Method::NoAuth, Method::UserPass]
        );
        assert_eq!(decode_greeting(&[5, 0]), Ok(Decoded::Done(vec![], 2)));
        assert_eq!(decode_greeting(&[]), Ok(Decoded::Need(2)));
        assert_eq!(decode_greeting(&[5, 3, 0]), Ok(Decoded::Need(2)));
        assert_eq!(
            decode_greeting(&[4, 1, 0]),
            Err(ProtoError::BadVersion {
                expected: 5,
                got: 4
            })
        );
        let mut big = vec![5, 255];
        big.extend(0..=254u8);
        let Ok(Decoded::Done(ms, 257)) = decode_greeting(&big) else {
            panic!()
        };
        assert_eq!(ms.len(), 255);
        assert_eq!(ms[2], Method::UserPass);
        assert_eq!(ms[3], Method::Other(3));
    }

    #[test]
    fn method_selection_decode() {
        assert_eq!(decode_method_selection(&[]), Ok(Decoded::Need(2)));
        assert_eq!(decode_method_selection(&[5]), Ok(Decoded::Need(1)));
        assert_eq!(
            decode_method_selection(&[5, 0]),
            Ok(Decoded::Done(Method::NoAuth, 2))
        );
        assert_eq!(
            decode_method_selection(&[5, 2, 9, 9]),
            Ok(Decoded::Done(Method::UserPass, 2))
        );
        assert_eq!(
            decode_method_selection(&[5, 0xFF]),
            Ok(Decoded::Done(Method::NoAcceptable, 2))
        );
        assert_eq!(
            decode_method_selection(&[5, 0x42]),
            Ok(Decoded::Done(Method::Other(0x42), 2))
        );
        for v in [0u8, 1, 4, 0x48] {
            assert_eq!(
                decode_method_selection(&[v]),
                Err(ProtoError::BadVersion {
                    expected: 5,
                    got: v
                })
            );
        }
        let mut out = Vec::new();
        encode_method_selection(Method::NoAcceptable, &mut out);
        assert_eq!(out, [5, 0xFF]);
    }

    // ---- RFC 1929 ----

    #[test]
    fn userpass_vector() {
        let mut out = Vec::new();
        encode_userpass(b"user", b"pass", &mut out).unwrap();
        assert_eq!(
            out,
            [
                0x01, 0x04, 0x75, 0x73, 0x65, 0x72, 0x04, 0x70, 0x61, 0x73, 0x73
            ]
        );
        let mut tail = out.clone();
        tail.extend_from_slice(&[5, 1, 0]);
        assert_eq!(
            check_prefixes(&tail, out.len(), decode_userpass),
            (b"user".to_vec(), b"pass".to_vec())
        );
    }

    #[test]
    fn userpass_bounds() {
        let mut out = vec![9];
        assert!(encode_userpass(b"", b"p", &mut out).is_err());
        assert!(encode_userpass(&[b'u'; 256], b"p", &mut out).is_err());
        assert!(encode_userpass(b"u", &[b'p'; 256], &mut out).is_err());
        assert_eq!(out, [9]);
        // Empty password accepted (leniency).
        encode_userpass(b"u", b"", &mut out).unwrap();
        assert_eq!(out, [9, 1, 1, b'u', 0]);
        let mut out = Vec::new();
        encode_userpass(&[b'u'; 255], &[b'p'; 255], &mut out).unwrap();
        assert_eq!(out.len(), 3 + 255 + 255);
        assert_eq!(
            decode_userpass(&out),
            Ok(Decoded::Done((vec![b'u'; 255], vec![b'p'; 255]), 513))
        );
    }

    #[test]
    fn userpass_server_decode_needs() {
        assert_eq!(decode_userpass(&[]), Ok(Decoded::Need(3)));
        assert_eq!(decode_userpass(&[1]), Ok(Decoded::Need(2)));
        assert_eq!(decode_userpass(&[1, 0]), Ok(Decoded::Need(1)));
        assert_eq!(
            decode_userpass(&[1, 0, 0]),
            Ok(Decoded::Done((vec![], vec![]), 3))
        );
        assert_eq!(decode_userpass(&[1, 3, b'a']), Ok(Decoded::Need(3)));
        assert_eq!(decode_userpass(&[1, 1, b'a', 2]), Ok(Decoded::Need(2)));
        assert_eq!(
            decode_userpass(&[5, 1]),
            Err(ProtoError::BadVersion {
                expected: 1,
                got: 5
            })
        );
    }

    #[test]
    fn auth_reply_decode() {
        assert_eq!(decode_auth_reply(&[]), Ok(Decoded::Need(2)));
        assert_eq!(decode_auth_reply(&[1]), Ok(Decoded::Need(1)));
        assert_eq!(decode_auth_reply(&[1, 0]), Ok(Decoded::Done(0, 2)));
        assert_eq!(decode_auth_reply(&[1, 1, 5, 0]), Ok(Decoded::Done(1, 2)));
        assert_eq!(decode_auth_reply(&[5, 0]), Ok(Decoded::Done(0, 2)));
        assert_eq!(decode_auth_reply(&[5, 0xFF]), Ok(Decoded::Done(0xFF, 2)));
        for v in [0u8, 2, 4, 0xFF] {
            assert_eq!(
                decode_auth_reply(&[v, 0]),
                Err(ProtoError::BadVersion {
                    expected: 1,
                    got: v
                })
            );
            assert!(decode_auth_reply(&[v]).is_err());
        }
        let mut out = Vec::new();
        encode_auth_reply(0, &mut out);
        encode_auth_reply(1, &mut out);
        assert_eq!(out, [1, 0, 1, 1]);
    }

    // ---- requests ----

    #[test]
    fn request_ipv4_vector() {
        assert_eq!(
            req(&ip("127.0.0.1:80")).unwrap(),
            [0x05, 0x01, 0x00, 0x01, 0x7f, 0x00, 0x00, 0x01, 0x00, 0x50]
        );
    }

    #[test]
    fn request_ipv6_vector() {
        let mut want = vec![0x05, 0x01, 0x00, 0x04];
        want.extend_from_slice(&[0; 15]);
        want.extend_from_slice(&[0x01, 0x01, 0xbb]);
        assert_eq!(req(&ip("[::1]:443")).unwrap(), want);
    }

    #[test]
    fn request_v4_mapped_stays_ipv6() {
        let mut want = vec![0x05, 0x01, 0x00, 0x04];
        want.extend_from_slice(&[0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 10, 0, 0, 1]);
        want.extend_from_slice(&[0x00, 0x16]);
        assert_eq!(req(&ip("[::ffff:10.0.0.1]:22")).unwrap(), want);
    }

    #[test]
    fn request_name_vector() {
        let mut want = vec![0x05, 0x01, 0x00, 0x03, 0x0b];
        want.extend_from_slice(b"example.com");
        want.extend_from_slice(&[0x00, 0x50]);
        assert_eq!(req(&name("example.com", 80)).unwrap(), want);
    }

    #[test]
    fn request_name_length_bounds() {
        let n255 = "a".repeat(255);
        let out = req(&name(&n255, 1)).unwrap();
        assert_eq!(out.len(), 5 + 255 + 2);
        assert_eq!(out[4], 255);
        for bad in ["".to_string(), "a".repeat(256), "b".repeat(1000)] {
            let mut out = vec![1, 2];
            assert!(matches!(
                encode_request(Command::Connect, &name(&bad, 80), &mut out),
                Err(ProtoError::Unencodable(_))
            ));
            assert_eq!(out, [1, 2], "out untouched on error");
        }
    }

    #[test]
    fn request_other_commands_and_roundtrip() {
        let mut out = Vec::new();
        encode_request(Command::UdpAssociate, &ip("0.0.0.0:0"), &mut out).unwrap();
        assert_eq!(out, [5, 3, 0, 1, 0, 0, 0, 0, 0, 0]);
        let mut out = Vec::new();
        encode_request(Command::Unknown(0x77), &name("h", 9), &mut out).unwrap();
        assert_eq!(out, [5, 0x77, 0, 3, 1, b'h', 0, 9]);
        for (cmd, d) in [
            (Command::Connect, ip("127.0.0.1:80")),
            (Command::Bind, ip("[2001:db8::7]:65535")),
            (Command::Connect, name("example.com", 443)),
            (Command::Unknown(9), name(&"z".repeat(255), 0)),
        ] {
            let mut wire = Vec::new();
            encode_request(cmd, &d, &mut wire).unwrap();
            let len = wire.len();
            wire.extend_from_slice(b"tunnel");
            let (c, a) = check_prefixes(&wire, len, decode_request);
            assert_eq!(c, cmd);
            assert_eq!(a, WireAddr::from_dest(&d));
            assert_eq!(a.to_dest(), Some(d.clone()));
        }
    }

    #[test]
    fn request_server_decode_errors() {
        assert_eq!(
            decode_request(&[4]),
            Err(ProtoError::BadVersion {
                expected: 5,
                got: 4
            })
        );
        assert_eq!(
            decode_request(&[5, 1, 0, 2]),
            Err(ProtoError::UnknownAddrType(2))
        );
        assert_eq!(
            decode_request(&[5, 1, 0, 3, 0, 0, 80]),
            Err(ProtoError::EmptyDomain)
        );
        // RSV is ignored.
        assert!(matches!(
            decode_request(&V4_REQ_RSV),
            Ok(Decoded::Done(_, 10))
        ));
    }

    const V4_REQ_RSV: [u8; 10] = [5, 1, 0xAA, 1, 1, 2, 3, 4, 0, 80];

    // ---- replies ----

    #[test]
    fn reply_all_known_codes_and_unknown() {
        for b in [0u8, 1, 2, 3, 4, 5, 6, 7, 8, 9, 0x7F, 0xFF] {
            let wire = reply_bytes(b, &V4_ADDR);
            let Ok(Decoded::Done(r, 10)) = decode_reply(&wire) else {
                panic!("{b}")
            };
            assert_eq!(r.code, ReplyCode::from_u8(b));
            assert_eq!(r.bound, WireAddr::Ip("127.0.0.1:8080".parse().unwrap()));
            if b >= 9 {
                assert_eq!(r.code, ReplyCode::Unknown(b));
            }
        }
        let codes = [
            ReplyCode::Succeeded,
            ReplyCode::GeneralFailure,
            ReplyCode::NotAllowed,
            ReplyCode::NetworkUnreachable,
            ReplyCode::HostUnreachable,
            ReplyCode::ConnectionRefused,
            ReplyCode::TtlExpired,
            ReplyCode::CommandNotSupported,
            ReplyCode::AddrTypeNotSupported,
        ];
        for (i, code) in codes.into_iter().enumerate() {
            let wire = reply_bytes(i as u8, &V4_ADDR);
            assert_eq!(
                decode_reply(&wire).unwrap(),
                Decoded::Done(
                    Reply {
                        code,
                        bound: WireAddr::Ip("127.0.0.1:8080".parse().unwrap())
                    },
                    10
                )
            );
        }
    }

    #[test]
    fn reply_ipv4_exact() {
        let wire = [0x05, 0x00, 0x00, 0x01, 0x0a, 0x00, 0x00, 0x02, 0x04, 0x38];
        assert_eq!(
            decode_reply(&wire),
            Ok(Decoded::Done(
                Reply {
                    code: ReplyCode::Succeeded,
                    bound: WireAddr::Ip("10.0.0.2:1080".parse().unwrap())
                },
                10
            ))
        );
    }

    #[test]
    fn reply_ipv6_exact() {
        let mut wire = vec![0x05, 0x05, 0x00, 0x04];
        wire.extend_from_slice(&[
            0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x01,
        ]);
        wire.extend_from_slice(&[0x01, 0xbb]);
        let r = check_prefixes(&wire, 22, decode_reply);
        assert_eq!(r.code, ReplyCode::ConnectionRefused);
        assert_eq!(r.bound, WireAddr::Ip("[2001:db8::1]:443".parse().unwrap()));
    }

    #[test]
    fn reply_domain_255_bytes() {
        let mut wire = vec![0x05, 0x00, 0x00, 0x03, 0xFF];
        wire.extend_from_slice(&[b'x'; 255]);
        wire.extend_from_slice(&[0x00, 0x50]);
        assert_eq!(wire.len(), 262);
        let r = check_prefixes(&wire, 262, decode_reply);
        assert_eq!(r.bound, WireAddr::Name(vec![b'x'; 255], 80));
        assert_eq!(r.bound.port(), 80);
    }

    #[test]
    fn reply_domain_non_utf8_kept_raw() {
        let wire = [5, 0, 0, 3, 2, 0xC3, 0x28, 0, 1];
        let Ok(Decoded::Done(r, 9)) = decode_reply(&wire) else {
            panic!()
        };
        assert_eq!(r.bound, WireAddr::Name(vec![0xC3, 0x28], 1));
        assert_eq!(r.bound.to_dest(), None);
    }

    #[test]
    fn reply_errors() {
        assert_eq!(
            decode_reply(&[5, 0, 0, 3, 0, 0, 80]),
            Err(ProtoError::EmptyDomain)
        );
        assert_eq!(decode_reply(&[5, 0, 0, 3, 0]), Err(ProtoError::EmptyDomain));
        for atyp in [0u8, 2, 5, 6, 0xFF] {
            assert_eq!(
                decode_reply(&reply_bytes(0, &[atyp, 1, 2, 3, 4, 5, 6])),
                Err(ProtoError::UnknownAddrType(atyp))
            );
            // Detected as soon as ATYP arrives.
            assert_eq!(
                decode_reply(&[5, 0, 0, atyp]),
                Err(ProtoError::UnknownAddrType(atyp))
            );
        }
        for v in [0u8, 1, 4, 0x48] {
            assert_eq!(
                decode_reply(&[v]),
                Err(ProtoError::BadVersion {
                    expected: 5,
                    got: v
                })
            );
            assert_eq!(
                decode_reply(
                    &reply_bytes(0, &V4_ADDR)
                        .iter()
                        .enumerate()
                        .map(|(i, &b)| if i == 0 { v } else { b })
                        .collect::<Vec<_>>()
                ),
                Err(ProtoError::BadVersion {
                    expected: 5,
                    got: v
                })
            );
        }
    }

    #[test]
    fn reply_rsv_is_ignored() {
        let wire = [5, 0, 0xFF, 1, 1, 2, 3, 4, 0, 80];
        assert!(matches!(decode_reply(&wire), Ok(Decoded::Done(_, 10))));
    }

    #[test]
    fn reply_need_counts_exact() {
        // IPv4: 10 bytes.
        let v4 = reply_bytes(0, &V4_ADDR);
        let want = [5, 4, 3, 2, 1, 5, 4, 3, 2, 1];
        for (k, w) in want.iter().enumerate() {
            assert_eq!(
                decode_reply(&v4[..k]),
                Ok(Decoded::Need(*w)),
                "v4 prefix {k}"
            );
        }
        // IPv6: 22 bytes.
        let mut v6 = vec![5, 0, 0, 4];
        v6.extend_from_slice(&[0; 18]);
        for k in 0..22 {
            let w = if k < 5 { 5 - k } else { 22 - k };
            assert_eq!(
                decode_reply(&v6[..k]),
                Ok(Decoded::Need(w)),
                "v6 prefix {k}"
            );
        }
        // Name of 1 byte: 8 bytes (the shortest possible reply).
        let n1 = [5, 0, 0, 3, 1, b'a', 0, 80];
        for k in 0..8 {
            let w = if k < 5 { 5 - k } else { 8 - k };
            assert_eq!(
                decode_reply(&n1[..k]),
                Ok(Decoded::Need(w)),
                "name prefix {k}"
            );
        }
    }

    #[test]
    fn reply_followed_by_tunnel_bytes() {
        for addr in [
            &V4_ADDR[..],
            &[3, 3, b'a', b'b', b'c', 1, 0],
            &[4, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 22],
        ] {
            let msg = reply_bytes(0, addr);
            let mut wire = msg.clone();
            wire.extend_from_slice(b"SSH-2.0-OpenSSH_9.6\r\n");
            check_prefixes(&wire, msg.len(), decode_reply);
            for chunk in 1..=msg.len() + 1 {
                let (_, used) = feed(&wire, chunk, decode_reply).unwrap();
                assert_eq!(used, msg.len());
            }
        }
    }

    #[test]
    fn reply_encode_roundtrip() {
        for bound in [
            WireAddr::Ip("0.0.0.0:0".parse().unwrap()),
            WireAddr::Ip("[fe80::1]:5353".parse().unwrap()),
            WireAddr::Name(b"proxy.local".to_vec(), 1080),
            WireAddr::Name(vec![0xFF; 255], 65535),
        ] {
            let mut out = Vec::new();
            encode_reply(ReplyCode::HostUnreachable, &bound, &mut out).unwrap();
            assert_eq!(out[..3], [5, 4, 0]);
            assert_eq!(
                decode_reply(&out),
                Ok(Decoded::Done(
                    Reply {
                        code: ReplyCode::HostUnreachable,
                        bound: bound.clone()
                    },
                    out.len()
                ))
            );
        }
        let mut out = vec![3];
        assert!(encode_reply(ReplyCode::Succeeded, &WireAddr::Name(vec![], 1), &mut out).is_err());
        assert!(
            encode_reply(
                ReplyCode::Succeeded,
                &WireAddr::Name(vec![1; 256], 1),
                &mut out
            )
            .is_err()
        );
        assert_eq!(out, [3]);
    }

    // ---- UDP header ----

    #[test]
    fn udp_header_vectors() {
        let mut out = Vec::new();
        encode_udp_header(0, &ip("8.8.8.8:53"), &mut out).unwrap();
        assert_eq!(out, [0, 0, 0, 1, 8, 8, 8, 8, 0, 53]);
        let mut out = Vec::new();
        encode_udp_header(3, &name("dns.google", 853), &mut out).unwrap();
        let mut want = vec![0, 0, 3, 3, 10];
        want.extend_from_slice(b"dns.google");
        want.extend_from_slice(&[0x03, 0x55]);
        assert_eq!(out, want);
        let mut out = vec![9];
        assert!(encode_udp_header(0, &name("", 53), &mut out).is_err());
        assert_eq!(out, [9]);
    }

    #[test]
    fn udp_header_decode_leaves_payload() {
        let mut dgram = Vec::new();
        encode_udp_header(0x81, &ip("[::1]:5353"), &mut dgram).unwrap();
        let header = dgram.len();
        assert_eq!(header, 3 + 1 + 16 + 2);
        dgram.extend_from_slice(b"\x12\x34payload");
        let (frag, addr) = check_prefixes(&dgram, header, decode_udp_header);
        assert_eq!(frag, 0x81);
        assert_eq!(addr, WireAddr::Ip("[::1]:5353".parse().unwrap()));
        assert_eq!(&dgram[header..], b"\x12\x34payload");
        // RSV is ignored; unknown ATYP and empty names are errors.
        assert!(matches!(
            decode_udp_header(&[0xFF, 0xFF, 0, 1, 1, 1, 1, 1, 0, 53]),
            Ok(Decoded::Done((0, _), 10))
        ));
        assert_eq!(
            decode_udp_header(&[0, 0, 0, 9]),
            Err(ProtoError::UnknownAddrType(9))
        );
        assert_eq!(
            decode_udp_header(&[0, 0, 0, 3, 0, 0, 53]),
            Err(ProtoError::EmptyDomain)
        );
        assert_eq!(decode_udp_header(&[]), Ok(Decoded::Need(5)));
        assert_eq!(
            decode_udp_header(&[0, 0, 0, 3, 4, b'a']),
            Ok(Decoded::Need(5))
        );
    }

    // ---- WireAddr ----

    #[test]
    fn wire_addr_conversions() {
        let d = name("example.com", 443);
        let w: WireAddr = (&d).into();
        assert_eq!(w, WireAddr::Name(b"example.com".to_vec(), 443));
        assert_eq!(w.port(), 443);
        let d = ip("[::ffff:1.2.3.4]:9");
        assert_eq!(
            WireAddr::from_dest(&d),
            WireAddr::Ip("[::ffff:1.2.3.4]:9".parse().unwrap())
        );
        assert_eq!(WireAddr::from_dest(&d).port(), 9);
    }

    // ---- fuzz ----

    #[test]
    fn fuzz_decoders_are_consistent() {
        let mut rng = Rng::new(0x5_0C55);
        let mut seeds: Vec<Vec<u8>> = vec![
            reply_bytes(0, &V4_ADDR),
            reply_bytes(1, &[3, 3, b'a', b'b', b'c', 1, 0]),
            req(&ip("[::1]:443")).unwrap(),
            req(&name("example.com", 80)).unwrap(),
            vec![5, 2, 0, 2],
            vec![1, 4, b'u', b's', b'e', b'r', 4, b'p', b'a', b's', b's'],
            vec![0, 0, 0, 1, 8, 8, 8, 8, 0, 53, 1, 2, 3],
        ];
        seeds.push(vec![]);
        for i in 0..4000 {
            let buf: Vec<u8> = if i % 8 == 0 {
                (0..rng.below(30)).map(|_| rng.byte()).collect()
            } else {
                let base = &seeds[rng.below(seeds.len())];
                rng.mutate(base)
            };
            check_monotone(&buf, decode_reply);
            check_monotone(&buf, decode_request);
            check_monotone(&buf, decode_udp_header);
            check_monotone(&buf, decode_greeting);
            check_monotone(&buf, decode_method_selection);
            check_monotone(&buf, decode_userpass);
            check_monotone(&buf, decode_auth_reply);
        }
    }
}
