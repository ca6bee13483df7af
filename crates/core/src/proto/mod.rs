//! Sans-io wire protocols: SOCKS4/4a, SOCKS5 (RFC 1928, RFC 1929) and HTTP CONNECT.
//!
//! Owns: the exact bytes on the wire. Encoders append to a `Vec<u8>`; decoders take the bytes
//! received so far and return [`Decoded::Need`] (how many more bytes are needed, at least) or
//! [`Decoded::Done`] with the value and the number of bytes it used.
//! Must never: do I/O, panic on any input (unknown codes are values, e.g. `Unknown(u8)`), or
//! claim a byte that belongs to the next message (a decoder's `used` is exact, and `Need(n)`
//! never asks for a byte past the end of the current message).

pub mod http;
pub mod socks4;
pub mod socks5;

#[cfg(test)]
mod testutil;

use std::fmt;

/// The result of feeding a decoder the bytes received so far.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decoded<T> {
    /// At least this many more bytes are needed; reading exactly this many never over-reads.
    Need(usize),
    /// A complete message and how many bytes of the input it used.
    Done(T, usize),
}

/// A violation of the protocol by the peer, or a request that cannot be encoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProtoError {
    /// The version byte of a reply is not the one the protocol requires.
    BadVersion { expected: u8, got: u8 },
    /// A SOCKS5 reply carries an address type other than 1, 3 or 4.
    UnknownAddrType(u8),
    /// A SOCKS5 message with ATYP 3 and a zero-length name (also an empty SOCKS4a name).
    EmptyDomain,
    /// The HTTP status line is not `HTTP/1.x NNN ...`.
    BadHttpStatusLine,
    /// The HTTP response (or request) header is longer than the limit (no unbounded buffering).
    HttpHeaderTooLarge { limit: usize },
    /// A variable-length field received from the peer is longer than the protocol allows
    /// (e.g. a SOCKS4 user id or SOCKS4a name over 255 bytes).
    FieldTooLong { field: &'static str, max: usize },
    /// The HTTP request line or a request header line is malformed (server side).
    BadHttpRequest,
    /// A value we were asked to encode does not fit the wire format (e.g. a name over 255 bytes,
    /// an empty user name for RFC 1929, a NUL byte in a SOCKS4 user id).
    Unencodable(&'static str),
}

impl fmt::Display for ProtoError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ProtoError::BadVersion { expected, got } => {
                write!(f, "bad version byte {got:#04x} (expected {expected:#04x})")
            }
            ProtoError::UnknownAddrType(t) => write!(f, "unknown address type {t:#04x}"),
            ProtoError::EmptyDomain => write!(f, "empty domain name in reply"),
            ProtoError::BadHttpStatusLine => write!(f, "malformed HTTP status line"),
            ProtoError::HttpHeaderTooLarge { limit } => {
                write!(f, "HTTP response header over {limit} bytes")
            }
            ProtoError::FieldTooLong { field, max } => {
                write!(f, "{field} longer than {max} bytes")
            }
            ProtoError::BadHttpRequest => write!(f, "malformed HTTP request header"),
            ProtoError::Unencodable(what) => write!(f, "cannot encode: {what}"),
        }
    }
}

impl std::error::Error for ProtoError {}

/// Where a proxy is asked to connect: an IP address or a host name (resolved by the proxy).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Dest {
    Ip(std::net::SocketAddr),
    Name(String, u16),
}

impl Dest {
    pub fn port(&self) -> u16 {
        match self {
            Dest::Ip(sa) => sa.port(),
            Dest::Name(_, p) => *p,
        }
    }
}

impl fmt::Display for Dest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Dest::Ip(sa) => write!(f, "{sa}"),
            Dest::Name(n, p) => write!(f, "{n}:{p}"),
        }
    }
}
