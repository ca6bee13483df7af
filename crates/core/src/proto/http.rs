//! HTTP CONNECT on the wire: the request (with optional Basic proxy auth) and the response
//! header up to its empty line, plus request decoding for test servers and a base64 encoder.
//! Must never: do I/O, panic, buffer a header without bound (`limit`), or use a byte after the
//! header's empty line (what follows is tunnel data for the application).

use super::{Decoded, Dest, ProtoError};
use std::net::{Ipv6Addr, SocketAddr};

/// Default bound on a response (or request) header, terminator included.
pub const MAX_HEADER: usize = 16 * 1024;

/// Shortest possible first line: `HTTP/1.1 200` (status) or `A / HTTP/1.1` (request).
const MIN_FIRST_LINE: usize = 12;
/// Longest reason phrase kept in a [`Response`], in bytes.
const MAX_REASON: usize = 200;

/// The status line of a CONNECT response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    /// The 3-digit status code.
    pub status: u16,
    /// The reason phrase: lossy UTF-8, control characters replaced by `?`, trimmed, at most
    /// 200 bytes.
    pub reason: String,
}

impl Response {
    /// Whether the tunnel is established: any 2xx status.
    pub fn is_success(&self) -> bool {
        (200..300).contains(&self.status)
    }
}

/// A decoded request header (server side). Strings are lossy UTF-8; header values are trimmed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnectRequest {
    /// The method token, as sent (`CONNECT` for a well-behaved client).
    pub method: String,
    /// The request target, e.g. `example.com:443`.
    pub target: String,
    /// Header fields in order, names as sent.
    pub headers: Vec<(String, String)>,
}

impl ConnectRequest {
    /// The value of the first header named `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// Appends `CONNECT host:port HTTP/1.1`, a `Host` header, an optional
/// `Proxy-Authorization: Basic ...` header and the empty line. IPv6 addresses (and names that
/// are IPv6 literals) are bracketed. Errors (leaving `out` untouched) for a name that is empty
/// or contains a control character, space, DEL, `:` (other than an IPv6 literal), `[` or `]`,
/// and for a user name containing `:` (RFC 7617 cannot carry it).
pub fn encode_connect(
    dest: &Dest,
    auth: Option<(&str, &str)>,
    out: &mut Vec<u8>,
) -> Result<(), ProtoError> {
    let authority = authority(dest)?;
    let credentials = match auth {
        Some((user, _)) if user.contains(':') => {
            return Err(ProtoError::Unencodable("HTTP Basic user name contains ':'"));
        }
        Some((user, pass)) => Some(base64_encode(format!("{user}:{pass}").as_bytes())),
        None => None,
    };
    out.extend_from_slice(b"CONNECT ");
    out.extend_from_slice(authority.as_bytes());
    out.extend_from_slice(b" HTTP/1.1\r\nHost: ");
    out.extend_from_slice(authority.as_bytes());
    out.extend_from_slice(b"\r\n");
    if let Some(c) = credentials {
        out.extend_from_slice(b"Proxy-Authorization: Basic ");
        out.extend_from_slice(c.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"\r\n");
    Ok(())
}

/// Decodes a response header. It ends at the first empty line: `\r\n\r\n`, or the sloppy
/// `\n\n` / `\n\r\n`; `used` is the header length including that terminator, so whatever
/// follows stays with the application. The status line (`HTTP/1.0` or `HTTP/1.1`, space,
/// 3 digits, optional space and reason) is checked byte by byte as it arrives
/// ([`ProtoError::BadHttpStatusLine`]). No terminator within the first `limit` bytes (or none
/// possible any more) is [`ProtoError::HttpHeaderTooLarge`]. `Need(n)` is the fewest bytes that
/// could complete the header, so an exact reader never reads past it; callers that can peek
/// may read more and consume only `used`.
pub fn decode_response(buf: &[u8], limit: usize) -> Result<Decoded<Response>, ProtoError> {
    let window = buf.get(..limit).unwrap_or(buf);
    let status_line = match window.iter().position(|&b| b == b'\n') {
        Some(lf) => Some(parse_status_line(window.get(..lf).unwrap_or_default())?),
        None => {
            check_status_prefix(window)?;
            None
        }
    };
    match (scan_header(window, limit)?, status_line) {
        (Decoded::Need(n), _) => Ok(Decoded::Need(n)),
        (Decoded::Done((), used), Some((status, reason))) => Ok(Decoded::Done(
            Response {
                status,
                reason: clean_reason(reason),
            },
            used,
        )),
        // Unreachable: a complete header contains a line feed.
        (Decoded::Done(..), None) => Err(ProtoError::BadHttpStatusLine),
    }
}

/// Decodes a request header (server side, for test fixtures): request line
/// `METHOD SP target SP HTTP/1.x`, then `Name: value` lines, ending like a response header
/// (same terminators, `used`, `Need` and `limit` rules). The request line is checked as soon as
/// it is complete; malformed lines are [`ProtoError::BadHttpRequest`].
pub fn decode_request(buf: &[u8], limit: usize) -> Result<Decoded<ConnectRequest>, ProtoError> {
    let window = buf.get(..limit).unwrap_or(buf);
    let first = window.split(|&b| b == b'\n').next().unwrap_or_default();
    let complete = window.contains(&b'\n');
    if !complete {
        // Only a CR at the very end can belong to the line terminator.
        if first
            .iter()
            .position(|&b| b == b'\r')
            .is_some_and(|i| i + 1 != first.len())
        {
            return Err(ProtoError::BadHttpRequest);
        }
        return scan_header(window, limit).and_then(|d| match d {
            Decoded::Need(n) => Ok(Decoded::Need(n)),
            Decoded::Done(..) => Err(ProtoError::BadHttpRequest), // unreachable
        });
    }
    let (method, target) = parse_request_line(strip_cr(first))?;
    let used = match scan_header(window, limit)? {
        Decoded::Need(n) => return Ok(Decoded::Need(n)),
        Decoded::Done((), used) => used,
    };
    let block = window.get(..used).unwrap_or_default();
    let mut headers = Vec::new();
    for line in block.split(|&b| b == b'\n').skip(1).map(strip_cr) {
        if line.is_empty() {
            break;
        }
        headers.push(parse_header_line(line)?);
    }
    let req = ConnectRequest {
        method: String::from_utf8_lossy(method).into_owned(),
        target: String::from_utf8_lossy(target).into_owned(),
        headers,
    };
    Ok(Decoded::Done(req, used))
}

/// Standard base64 (RFC 4648 section 4) with `=` padding.
pub fn base64_encode(input: &[u8]) -> String {
    let mut s = String::with_capacity(input.len().div_ceil(3) * 4);
    for chunk in input.chunks(3) {
        let (b0, b1, b2, n) = match *chunk {
            [a] => (a, 0, 0, 1),
            [a, b] => (a, b, 0, 2),
            [a, b, c] => (a, b, c, 3),
            _ => continue, // chunks(3) yields 1..=3 bytes
        };
        let v = (u32::from(b0) << 16) | (u32::from(b1) << 8) | u32::from(b2);
        s.push(base64_symbol(v >> 18));
        s.push(base64_symbol(v >> 12));
        s.push(if n > 1 { base64_symbol(v >> 6) } else { '=' });
        s.push(if n > 2 { base64_symbol(v) } else { '=' });
    }
    s
}

/// The base64 symbol for the low 6 bits of `v`.
fn base64_symbol(v: u32) -> char {
    let v = (v & 0x3F) as u8;
    char::from(match v {
        0..=25 => b'A' + v,
        26..=51 => b'a' + (v - 26),
        52..=61 => b'0' + (v - 52),
        62 => b'+',
        _ => b'/',
    })
}

/// `host:port` for the request line and the `Host` header.
fn authority(dest: &Dest) -> Result<String, ProtoError> {
    match dest {
        Dest::Ip(SocketAddr::V4(sa)) => Ok(format!("{}:{}", sa.ip(), sa.port())),
        // The scope id means nothing to the proxy: brackets around the bare address.
        Dest::Ip(SocketAddr::V6(sa)) => Ok(format!("[{}]:{}", sa.ip(), sa.port())),
        Dest::Name(name, port) => {
            if name.is_empty() {
                return Err(ProtoError::Unencodable("empty host name"));
            }
            if name.bytes().any(|b| b <= b' ' || b == 0x7F) {
                return Err(ProtoError::Unencodable(
                    "HTTP host name contains a space or control character",
                ));
            }
            if name.parse::<Ipv6Addr>().is_ok() {
                return Ok(format!("[{name}]:{port}"));
            }
            let bracketed_v6 = name
                .strip_prefix('[')
                .and_then(|n| n.strip_suffix(']'))
                .is_some_and(|n| n.parse::<Ipv6Addr>().is_ok());
            if bracketed_v6 {
                return Ok(format!("{name}:{port}"));
            }
            if name.contains([':', '[', ']']) {
                return Err(ProtoError::Unencodable(
                    "HTTP host name contains ':', '[' or ']'",
                ));
            }
            Ok(format!("{name}:{port}"))
        }
    }
}

/// Finds the end of the header block (just past its empty line) in `window`, if present.
fn header_end(window: &[u8]) -> Option<usize> {
    let mut from = 0;
    while let Some(i) = window.get(from..)?.iter().position(|&b| b == b'\n') {
        let lf = from + i;
        match window.get(lf + 1..) {
            Some([b'\n', ..]) => return Some(lf + 2),
            Some([b'\r', b'\n', ..]) => return Some(lf + 3),
            _ => from = lf + 1,
        }
    }
    None
}

/// `Done((), end)` if the header block is complete within `window` (the first `limit` bytes),
/// else the fewest bytes that could complete it, or `HttpHeaderTooLarge` if it cannot end
/// within `limit`.
fn scan_header(window: &[u8], limit: usize) -> Result<Decoded<()>, ProtoError> {
    if let Some(end) = header_end(window) {
        return Ok(Decoded::Done((), end));
    }
    // A terminator needs one LF after the end of a line, or LF CR after it; a LF or "LF CR" at
    // the end of the buffer leaves one byte to go.
    let tail = match window {
        [.., b'\n'] | [.., b'\n', b'\r'] => 1,
        _ => 2,
    };
    let need = if window.contains(&b'\n') {
        tail
    } else {
        // The first line is not complete: it needs at least MIN_FIRST_LINE bytes, then "\n\n".
        (MIN_FIRST_LINE + 2).saturating_sub(window.len()).max(tail)
    };
    let room = limit.saturating_sub(window.len());
    if need > room {
        return Err(ProtoError::HttpHeaderTooLarge { limit });
    }
    Ok(Decoded::Need(need))
}

/// Whether the bytes present so far fit `HTTP/1.x DDD` followed by a space or CR.
fn status_prefix_ok(line: &[u8]) -> bool {
    const PREFIX: &[u8] = b"HTTP/1.";
    line.iter().enumerate().take(13).all(|(i, &b)| match i {
        0..=6 => PREFIX.get(i) == Some(&b),
        7 => b == b'0' || b == b'1',
        8 => b == b' ',
        9..=11 => b.is_ascii_digit(),
        _ => b == b' ' || b == b'\r',
    })
}

/// Checks an incomplete status line (no LF yet).
fn check_status_prefix(partial: &[u8]) -> Result<(), ProtoError> {
    // A CR is only allowed as the (possible) start of the line terminator.
    let cr_ok = partial
        .iter()
        .position(|&b| b == b'\r')
        .is_none_or(|i| i + 1 == partial.len());
    if cr_ok && status_prefix_ok(partial) {
        Ok(())
    } else {
        Err(ProtoError::BadHttpStatusLine)
    }
}

/// Parses a complete status line (without its LF): the status and the raw reason phrase.
fn parse_status_line(line: &[u8]) -> Result<(u16, &[u8]), ProtoError> {
    let line = strip_cr(line);
    if line.contains(&b'\r') || !status_prefix_ok(line) {
        return Err(ProtoError::BadHttpStatusLine);
    }
    let Some((&[.., d0, d1, d2], rest)) = line.split_first_chunk::<MIN_FIRST_LINE>() else {
        return Err(ProtoError::BadHttpStatusLine);
    };
    let digit = |d: u8| u16::from(d.wrapping_sub(b'0'));
    let status = digit(d0) * 100 + digit(d1) * 10 + digit(d2);
    match rest {
        [] => Ok((status, rest)),
        [b' ', reason @ ..] => Ok((status, reason)),
        _ => Err(ProtoError::BadHttpStatusLine),
    }
}

/// Lossy UTF-8, control characters replaced, trimmed, at most [`MAX_REASON`] bytes.
fn clean_reason(raw: &[u8]) -> String {
    let s: String = String::from_utf8_lossy(raw)
        .chars()
        .map(|c| if c.is_control() { '?' } else { c })
        .collect();
    let s = s.trim();
    let mut end = s.len().min(MAX_REASON);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s.get(..end).unwrap_or_default().trim_end().to_string()
}

/// `METHOD SP target SP HTTP/1.x` → (method, target).
fn parse_request_line(line: &[u8]) -> Result<(&[u8], &[u8]), ProtoError> {
    let mut parts = line.split(|&b| b == b' ');
    match (parts.next(), parts.next(), parts.next(), parts.next()) {
        (Some(method), Some(target), Some(b"HTTP/1.0" | b"HTTP/1.1"), None)
            if is_token(method)
                && !target.is_empty()
                && target.iter().all(|&b| b > b' ' && b != 0x7F) =>
        {
            Ok((method, target))
        }
        _ => Err(ProtoError::BadHttpRequest),
    }
}

/// `Name: value` → (name, trimmed value). No whitespace before the colon, no obsolete folding.
fn parse_header_line(line: &[u8]) -> Result<(String, String), ProtoError> {
    let mut parts = line.splitn(2, |&b| b == b':');
    match (parts.next(), parts.next()) {
        (Some(name), Some(value))
            if is_token(name) && !value.contains(&b'\r') && !value.contains(&0) =>
        {
            let value = String::from_utf8_lossy(value);
            Ok((
                String::from_utf8_lossy(name).into_owned(),
                value.trim_matches([' ', '\t']).to_string(),
            ))
        }
        _ => Err(ProtoError::BadHttpRequest),
    }
}

/// RFC 9110 token: one or more tchar.
fn is_token(s: &[u8]) -> bool {
    !s.is_empty()
        && s.iter()
            .all(|&b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

/// The line without one trailing CR.
fn strip_cr(line: &[u8]) -> &[u8] {
    line.strip_suffix(b"\r").unwrap_or(line)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::testutil::{Rng, check_monotone, check_prefixes, feed};
    use std::net::SocketAddrV6;

    fn ip(s: &str) -> Dest {
        Dest::Ip(s.parse().unwrap())
    }

    fn name(n: &str, port: u16) -> Dest {
        Dest::Name(n.to_string(), port)
    }

    fn connect(dest: &Dest, auth: Option<(&str, &str)>) -> Result<String, ProtoError> {
        let mut out = Vec::new();
        encode_connect(dest, auth, &mut out)?;
        Ok(String::from_utf8(out).unwrap())
    }

    fn resp(buf: &[u8]) -> Result<Decoded<Response>, ProtoError> {
        decode_response(buf, MAX_HEADER)
    }

    fn req(buf: &[u8]) -> Result<Decoded<ConnectRequest>, ProtoError> {
        decode_request(buf, MAX_HEADER)
    }

    fn done(r: Result<Decoded<Response>, ProtoError>) -> (Response, usize) {
        match r {
            Ok(Decoded::Done(v, u)) => (v, u),
            other => panic!("expected Done, got {other:?}"),
        }
    }

    // ---- base64 ----

    #[test]
    fn base64_rfc4648_vectors() {
        for (input, want) in [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg=="),
            ("fooba", "Zm9vYmE="),
            ("foobar", "Zm9vYmFy"),
        ] {
            assert_eq!(base64_encode(input.as_bytes()), want, "{input:?}");
        }
    }

    #[test]
    fn base64_full_alphabet_and_binary() {
        assert_eq!(
            base64_encode(b"Aladdin:open sesame"),
            "QWxhZGRpbjpvcGVuIHNlc2FtZQ=="
        );
        assert_eq!(base64_encode(&[0xFB, 0xFF]), "+/8=");
        assert_eq!(base64_encode(&[0xFF, 0xFF, 0xFF]), "////");
        assert_eq!(base64_encode(&[0, 0, 0]), "AAAA");
        // Every 6-bit value once: 0,1,...,63 packed into 48 bytes.
        let mut bits = Vec::new();
        for v in 0u32..64 {
            bits.push(v);
        }
        let bytes: Vec<u8> = bits
            .chunks(4)
            .flat_map(|c| {
                let v = (c[0] << 18) | (c[1] << 12) | (c[2] << 6) | c[3];
                [(v >> 16) as u8, (v >> 8) as u8, v as u8]
            })
            .collect();
        assert_eq!(
            base64_encode(&bytes),
            "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
        );
    }

    // ---- encode_connect ----

    #[test]
    fn connect_name() {
        assert_eq!(
            connect(&name("example.com", 443), None).unwrap(),
            "CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n"
        );
    }

    #[test]
    fn connect_ipv6_bracketed() {
        assert_eq!(
            connect(&ip("[::1]:8080"), None).unwrap(),
            "CONNECT [::1]:8080 HTTP/1.1\r\nHost: [::1]:8080\r\n\r\n"
        );
        // The scope id is not sent.
        let sa = SocketAddrV6::new("fe80::1".parse().unwrap(), 80, 0, 2);
        assert_eq!(
            connect(&Dest::Ip(SocketAddr::V6(sa)), None).unwrap(),
            "CONNECT [fe80::1]:80 HTTP/1.1\r\nHost: [fe80::1]:80\r\n\r\n"
        );
        // A name that is an IPv6 literal is bracketed; an already bracketed one is kept.
        assert_eq!(
            connect(&name("2001:db8::1", 443), None).unwrap(),
            "CONNECT [2001:db8::1]:443 HTTP/1.1\r\nHost: [2001:db8::1]:443\r\n\r\n"
        );
        assert_eq!(
            connect(&name("[::1]", 443), None).unwrap(),
            "CONNECT [::1]:443 HTTP/1.1\r\nHost: [::1]:443\r\n\r\n"
        );
    }

    #[test]
    fn connect_ipv4() {
        assert_eq!(
            connect(&ip("10.0.0.1:22"), None).unwrap(),
            "CONNECT 10.0.0.1:22 HTTP/1.1\r\nHost: 10.0.0.1:22\r\n\r\n"
        );
    }

    #[test]
    fn connect_with_basic_auth() {
        assert_eq!(
            connect(&name("example.com", 443), Some(("Aladdin", "open sesame"))).unwrap(),
            "CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\
             Proxy-Authorization: Basic QWxhZGRpbjpvcGVuIHNlc2FtZQ==\r\n\r\n"
        );
        // Colons in the password are fine; an empty password too.
        assert!(
            connect(&name("h", 1), Some(("u", "a:b:c")))
                .unwrap()
                .contains("Basic dTphOmI6Yw==\r\n")
        );
        assert!(
            connect(&name("h", 1), Some(("u", "")))
                .unwrap()
                .contains("Basic dTo=\r\n")
        );
    }

    #[test]
    fn connect_rejects_unsafe_names_and_users() {
        let bad_names = [
            "", " ", "a b", "a\r\nb", "a\nb", "a\rb", "a\0b", "a\tb", "a\x7fb", "a\x1bb", "a:b",
            "host:80", "[host]", "[::1", "::1]", "a]b",
        ];
        for n in bad_names {
            let mut out = b"keep".to_vec();
            assert!(
                matches!(
                    encode_connect(&name(n, 80), None, &mut out),
                    Err(ProtoError::Unencodable(_))
                ),
                "{n:?}"
            );
            assert_eq!(out, b"keep");
        }
        let mut out = Vec::new();
        assert!(encode_connect(&name("h", 1), Some(("us:er", "p")), &mut out).is_err());
        assert!(out.is_empty());
        // Non-ASCII does not break framing: sent as UTF-8.
        assert_eq!(
            connect(&name("bücher.example", 80), None).unwrap(),
            "CONNECT bücher.example:80 HTTP/1.1\r\nHost: bücher.example:80\r\n\r\n"
        );
    }

    #[test]
    fn connect_appends_and_roundtrips_through_server_decode() {
        let mut out = b"prev".to_vec();
        encode_connect(
            &name("example.com", 443),
            Some(("Aladdin", "open sesame")),
            &mut out,
        )
        .unwrap();
        assert!(out.starts_with(b"prevCONNECT "));
        let msg = &out[4..];
        let Ok(Decoded::Done(r, used)) = req(msg) else {
            panic!()
        };
        assert_eq!(used, msg.len());
        assert_eq!(r.method, "CONNECT");
        assert_eq!(r.target, "example.com:443");
        assert_eq!(r.header("host"), Some("example.com:443"));
        assert_eq!(
            r.header("PROXY-AUTHORIZATION"),
            Some("Basic QWxhZGRpbjpvcGVuIHNlc2FtZQ==")
        );
        assert_eq!(r.header("x-missing"), None);
    }

    // ---- decode_response ----

    #[test]
    fn response_statuses() {
        for (line, status, reason, ok) in [
            (
                "HTTP/1.1 200 Connection established",
                200,
                "Connection established",
                true,
            ),
            ("HTTP/1.0 200 OK", 200, "OK", true),
            ("HTTP/1.1 204 No Content", 204, "No Content", true),
            ("HTTP/1.1 299", 299, "", true),
            (
                "HTTP/1.1 407 Proxy Authentication Required",
                407,
                "Proxy Authentication Required",
                false,
            ),
            ("HTTP/1.1 403 Forbidden", 403, "Forbidden", false),
            ("HTTP/1.1 502 Bad Gateway", 502, "Bad Gateway", false),
            ("HTTP/1.1 100 Continue", 100, "Continue", false),
            ("HTTP/1.1 199 x", 199, "x", false),
            (
                "HTTP/1.1 300 Multiple Choices",
                300,
                "Multiple Choices",
                false,
            ),
            ("HTTP/1.1 000", 0, "", false),
            ("HTTP/1.1 999 Weird", 999, "Weird", false),
        ] {
            let wire = format!("{line}\r\n\r\n");
            let (r, used) = done(resp(wire.as_bytes()));
            assert_eq!(
                (r.status, r.reason.as_str(), r.is_success()),
                (status, reason, ok),
                "{line}"
            );
            assert_eq!(used, wire.len());
        }
    }

    #[test]
    fn response_used_excludes_tunnel_data() {
        let wire = b"HTTP/1.1 200 OK\r\n\r\nEXTRA";
        let (r, used) = done(resp(wire));
        assert_eq!(used, 19);
        assert_eq!(&wire[used..], b"EXTRA");
        assert_eq!(r.reason, "OK");
        check_prefixes(wire, 19, resp);
        // Tunnel data that itself looks like a header is not ours either.
        let wire = b"HTTP/1.1 200 OK\r\nVia: 1.1 p\r\n\r\nHTTP/1.1 404 Not Found\r\n\r\n";
        assert_eq!(done(resp(wire)).1, 31);
    }

    #[test]
    fn response_with_headers() {
        let wire = b"HTTP/1.1 407 Proxy Authentication Required\r\n\
                     Proxy-Authenticate: Basic realm=\"proxy\"\r\n\
                     Content-Length: 0\r\n\r\n\x16\x03\x01";
        let used = wire.len() - 3;
        let r = check_prefixes(wire, used, resp);
        assert_eq!(r.status, 407);
        assert!(!r.is_success());
    }

    #[test]
    fn response_sloppy_terminators() {
        for (wire, used) in [
            (&b"HTTP/1.0 200 OK\n\nX"[..], 17),
            (b"HTTP/1.1 200 OK\r\n\nX", 18),
            (b"HTTP/1.1 200 OK\n\r\nX", 18),
            (b"HTTP/1.1 200 OK\r\nA: b\n\nX", 23),
            (b"HTTP/1.1 200 OK\nA: b\r\n\r\nX", 24),
            (b"HTTP/1.1 200\n\n\n\n", 14),
        ] {
            let r = check_prefixes(wire, used, resp);
            assert_eq!(r.status, 200);
            for chunk in 1..=used + 1 {
                assert_eq!(feed(wire, chunk, resp).unwrap().1, used);
            }
        }
        // A bare CR is not a line terminator.
        assert_eq!(resp(b"HTTP/1.1 200 OK\r\nA: b\r\r"), Ok(Decoded::Need(2)));
    }

    #[test]
    fn response_need_counts() {
        assert_eq!(resp(b""), Ok(Decoded::Need(14)));
        assert_eq!(resp(b"HTTP/1.1"), Ok(Decoded::Need(6)));
        assert_eq!(resp(b"HTTP/1.1 200"), Ok(Decoded::Need(2)));
        assert_eq!(resp(b"HTTP/1.1 200 OK"), Ok(Decoded::Need(2)));
        assert_eq!(resp(b"HTTP/1.1 200 OK\r"), Ok(Decoded::Need(2)));
        assert_eq!(resp(b"HTTP/1.1 200 OK\r\n"), Ok(Decoded::Need(1)));
        assert_eq!(resp(b"HTTP/1.1 200 OK\r\n\r"), Ok(Decoded::Need(1)));
        assert_eq!(resp(b"HTTP/1.1 200 OK\r\nVia: x"), Ok(Decoded::Need(2)));
        assert_eq!(resp(b"HTTP/1.1 200 OK\r\nVia: x\r"), Ok(Decoded::Need(2)));
        assert_eq!(resp(b"HTTP/1.1 200 OK\n"), Ok(Decoded::Need(1)));
    }

    #[test]
    fn response_byte_at_a_time_and_chunks() {
        let bodies: [&[u8]; 4] = [
            b"HTTP/1.1 200 Connection established\r\n\r\n",
            b"HTTP/1.0 200 OK\r\nProxy-agent: Apache/2.4\r\n\r\n",
            b"HTTP/1.1 403 Forbidden\r\nContent-Type: text/html\r\nContent-Length: 5\r\n\r\n",
            b"HTTP/1.1 200\n\n",
        ];
        for body in bodies {
            let mut wire = body.to_vec();
            wire.extend_from_slice(b"\r\n\r\nTUNNEL\n\n");
            for chunk in [1, 2, 3, 5, 7, 64, usize::MAX] {
                let (r, used) = feed(&wire, chunk, resp).unwrap();
                assert_eq!(used, body.len(), "chunk {chunk}");
                assert!(r.status == 200 || r.status == 403);
            }
        }
    }

    #[test]
    fn response_bad_status_line_detected_early() {
        for (prefix, at) in [
            (&b"SSH-2.0-OpenSSH"[..], 1),
            (b"\x05\x00", 1),
            (b"HTTP/2 200 OK\r\n\r\n", 6),
            (b"HTTP/1.2 200 OK", 8),
            (b"http/1.1 200 OK", 1),
            (b"HTTP/1.1  200 OK", 10),
            (b"HTTP/1.1 2x0 OK", 11),
            (b"HTTP/1.1 2000 OK", 13),
            (b"HTTP/1.1 200\tOK", 13),
            (b"HTTP/1.1 200 OK\rX", 17),
            (b"HTTP/1.1 20\r\n", 12),
            (b"HTTP/1.1 200OK\r\n", 13),
            (b"HTTP/1.1\r\n", 9),
            (b"\r\n\r\n", 1),
            (b"\n\n", 1),
            (b"HTTP/1.1 abc\r\n\r\n", 10),
        ] {
            for k in 0..at {
                assert!(
                    matches!(resp(&prefix[..k]), Ok(Decoded::Need(_))),
                    "{prefix:?} at {k}"
                );
            }
            assert_eq!(
                resp(&prefix[..at]),
                Err(ProtoError::BadHttpStatusLine),
                "{prefix:?}"
            );
            assert_eq!(
                resp(prefix),
                Err(ProtoError::BadHttpStatusLine),
                "{prefix:?}"
            );
        }
        // A bad first line is reported before the header is complete.
        assert_eq!(
            resp(b"HTTP/1.1 ok\r\nVia: x\r\n"),
            Err(ProtoError::BadHttpStatusLine)
        );
    }

    #[test]
    fn response_reason_cleanup() {
        let (r, _) = done(resp(b"HTTP/1.1 200   spaced out  \r\n\r\n"));
        assert_eq!(r.reason, "spaced out");
        let (r, _) = done(resp(b"HTTP/1.1 200 \xff\xfeok\r\n\r\n"));
        assert_eq!(r.reason, "\u{FFFD}\u{FFFD}ok");
        let (r, _) = done(resp(b"HTTP/1.1 200 a\x1b[31mb\0c\r\n\r\n"));
        assert_eq!(r.reason, "a?[31mb?c");
        let long = format!("HTTP/1.1 502 {}\r\n\r\n", "r".repeat(1000));
        let (r, _) = done(resp(long.as_bytes()));
        assert_eq!(r.reason.len(), 200);
        // Truncation respects UTF-8 boundaries ("é" is 2 bytes: 199 + 2 > 200).
        let long = format!(
            "HTTP/1.1 502 {}é{}\r\n\r\n",
            "r".repeat(199),
            "z".repeat(10)
        );
        let (r, _) = done(resp(long.as_bytes()));
        assert_eq!(r.reason, "r".repeat(199));
        let (r, _) = done(resp(b"HTTP/1.1 200 \r\n\r\n"));
        assert_eq!(r.reason, "");
    }

    #[test]
    fn response_header_limit_exact_and_over() {
        let build = |total: usize| {
            let head = "HTTP/1.1 200 OK\r\nX-Pad: ";
            let pad = total - head.len() - 4;
            let mut v = format!("{head}{}\r\n\r\n", "p".repeat(pad)).into_bytes();
            assert_eq!(v.len(), total);
            v.extend_from_slice(b"tunnel");
            v
        };
        for limit in [64, 100, 1000, MAX_HEADER] {
            let exact = build(limit);
            assert_eq!(
                decode_response(&exact, limit).unwrap(),
                Decoded::Done(
                    Response {
                        status: 200,
                        reason: "OK".into()
                    },
                    limit
                )
            );
            let dec = |b: &[u8]| decode_response(b, limit);
            assert_eq!(feed(&exact, 1, dec).unwrap().1, limit);
            if limit <= 1000 {
                check_prefixes(&exact, limit, dec);
            }
            let over = build(limit + 1);
            assert_eq!(
                decode_response(&over, limit),
                Err(ProtoError::HttpHeaderTooLarge { limit })
            );
            assert_eq!(
                feed(&over, 1, dec),
                Err(ProtoError::HttpHeaderTooLarge { limit })
            );
            assert_eq!(
                feed(&over, 7, dec),
                Err(ProtoError::HttpHeaderTooLarge { limit })
            );
            // Never asks for more than the limit allows.
            let mut k = 0;
            loop {
                match dec(&over[..k]) {
                    Ok(Decoded::Need(n)) => {
                        assert!(k + n <= limit);
                        k += n;
                    }
                    Err(e) => {
                        assert_eq!(e, ProtoError::HttpHeaderTooLarge { limit });
                        break;
                    }
                    Ok(Decoded::Done(..)) => panic!(),
                }
            }
        }
        // An endless header without any terminator stops at the limit.
        let junk = format!("HTTP/1.1 200 OK\r\n{}", "A".repeat(100));
        assert_eq!(
            decode_response(junk.as_bytes(), 50),
            Err(ProtoError::HttpHeaderTooLarge { limit: 50 })
        );
        // A limit below the shortest header is an error straight away.
        assert_eq!(
            decode_response(b"", 13),
            Err(ProtoError::HttpHeaderTooLarge { limit: 13 })
        );
        assert_eq!(
            decode_response(b"HTTP/1.1 200\n\n", 14).unwrap(),
            Decoded::Done(
                Response {
                    status: 200,
                    reason: String::new()
                },
                14
            )
        );
    }

    // ---- decode_request (server side) ----

    #[test]
    fn request_decode() {
        let wire = b"CONNECT [::1]:8080 HTTP/1.1\r\nHost: [::1]:8080\r\nUser-Agent:  curl/8  \r\nX-Empty:\r\n\r\n\x16\x03";
        let used = wire.len() - 2;
        let r = check_prefixes(wire, used, req);
        assert_eq!(r.method, "CONNECT");
        assert_eq!(r.target, "[::1]:8080");
        assert_eq!(
            r.headers,
            vec![
                ("Host".to_string(), "[::1]:8080".to_string()),
                ("User-Agent".to_string(), "curl/8".to_string()),
                ("X-Empty".to_string(), String::new()),
            ]
        );
        for chunk in [1, 2, 5] {
            assert_eq!(feed(wire, chunk, req).unwrap().1, used);
        }
        let Ok(Decoded::Done(r, 16)) = req(b"GET / HTTP/1.0\n\nbody") else {
            panic!()
        };
        assert_eq!(
            (r.method.as_str(), r.target.as_str(), r.headers.len()),
            ("GET", "/", 0)
        );
    }

    #[test]
    fn request_decode_errors() {
        for bad in [
            &b"CONNECT example.com:443\r\n\r\n"[..],
            b"CONNECT  example.com:443 HTTP/1.1\r\n\r\n",
            b"CONNECT example.com:443 HTTP/2\r\n\r\n",
            b"CON NECT a:1 HTTP/1.1\r\n\r\n",
            b"C(NNECT a:1 HTTP/1.1\r\n\r\n",
            b"CONNECT a:1 HTTP/1.1 x\r\n\r\n",
            b"CONNECT a:1 HTTP/1.1\r\nNoColon\r\n\r\n",
            b"CONNECT a:1 HTTP/1.1\r\nBad Name: x\r\n\r\n",
            b"CONNECT a:1 HTTP/1.1\r\nHost : x\r\n\r\n",
            b"CONNECT a:1 HTTP/1.1\r\nHost: x\r\n folded\r\n\r\n",
            b"CONNECT a:1 HTTP/1.1\r\nHost: x\ry\r\n\r\n",
            b"CONNECT a\x01:1 HTTP/1.1\r\n\r\n",
        ] {
            assert_eq!(
                req(bad),
                Err(ProtoError::BadHttpRequest),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
        // The request line is checked as soon as it is complete, and a stray CR even earlier.
        assert_eq!(
            req(b"CONNECT x HTTP/9\r\n"),
            Err(ProtoError::BadHttpRequest)
        );
        assert_eq!(req(b"CONNECT x\rY"), Err(ProtoError::BadHttpRequest));
        assert_eq!(req(b"CONNECT x HTTP/1.1\r"), Ok(Decoded::Need(2)));
        let big = format!("CONNECT a:1 HTTP/1.1\r\nX: {}\r\n\r\n", "v".repeat(200));
        assert_eq!(
            decode_request(big.as_bytes(), 100),
            Err(ProtoError::HttpHeaderTooLarge { limit: 100 })
        );
    }

    // ---- fuzz ----

    #[test]
    fn fuzz_decoders_are_consistent() {
        let mut rng = Rng::new(0x4_77_70);
        let seeds: [&[u8]; 6] = [
            b"HTTP/1.1 200 OK\r\n\r\nX",
            b"HTTP/1.0 407 Auth\r\nA: b\n\r\nX",
            b"HTTP/1.1 200\n\n",
            b"CONNECT a:1 HTTP/1.1\r\nHost: a:1\r\n\r\nZ",
            b"GET / HTTP/1.0\n\n",
            b"\r\n\n\r\r\n\n",
        ];
        for i in 0..3000 {
            let buf: Vec<u8> = if i % 10 == 0 {
                let alphabet = b"HTP/1. 02\r\n:aX";
                (0..rng.below(40))
                    .map(|_| alphabet[rng.below(alphabet.len())])
                    .collect()
            } else {
                let base = seeds[rng.below(seeds.len())];
                rng.mutate(base)
            };
            let limit = [14, 20, 32, MAX_HEADER][rng.below(4)];
            check_monotone(&buf, |b| decode_response(b, limit));
            check_monotone(&buf, |b| decode_request(b, limit));
        }
    }
}
