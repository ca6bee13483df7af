//! The one error type of chainsocks, and the one place that maps it to `errno` / `EAI_*`.
//!
//! Owns: every reason a proxied call can fail, and what the host program sees for it.
//! Must never: be bypassed by an ad-hoc errno elsewhere (hooks call [`Error::errno`]), or
//! mean "fall back to a direct connection" — every variant fails the call closed.

use std::fmt;

use crate::proto::ProtoError;
use crate::proto::socks4::Socks4Code;
use crate::proto::socks5::{Method, ReplyCode};

/// Why a connection through the chain (or a lookup) failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Error {
    /// The kernel said so while talking to a proxy (refused, reset, unreachable...): its errno.
    Os(i32),
    /// A connect timeout or the handshake deadline passed.
    Timeout,
    /// A proxy closed the connection in the middle of the handshake.
    Closed,
    /// A proxy broke the protocol (or a request could not be encoded).
    Protocol(ProtoError),
    /// SOCKS5 method 0xFF: the proxy accepts none of the methods we offered.
    NoAcceptableMethod,
    /// SOCKS5: the proxy chose a method we did not offer or cannot do (e.g. GSSAPI).
    UnexpectedMethod(Method),
    /// RFC 1929: the proxy rejected the user name / password (its status byte).
    AuthRejected(u8),
    /// A SOCKS5 reply other than "succeeded".
    Socks5(ReplyCode),
    /// A SOCKS4 reply other than "granted".
    Socks4(Socks4Code),
    /// An HTTP CONNECT answer other than 2xx.
    Http(u16),
    /// A host name must reach a plain `socks4://` proxy, which cannot carry names (use socks4a).
    Socks4NeedsName,
    /// A connect to an address of the fake-IP range that the table does not hold.
    UnknownFakeIp(std::net::IpAddr),
    /// A rule or policy refused the destination.
    Blocked,
    /// The fake-DNS table is full.
    TableFull,
    /// A host name no resolver would accept (empty, too long, spaces…).
    BadName,
    /// No proxy of the chain is alive (dynamic / random / round-robin chains).
    NoProxyAlive,
    /// The configuration could not be loaded in this process (fail closed).
    Config(String),
    /// A signal the program handles (SIGINT, SIGTERM, SIGHUP, SIGQUIT without SA_RESTART)
    /// arrived while the handshake waited: the connect is abandoned, as the kernel's would be.
    Interrupted,
    /// A bug in chainsocks (a caught panic): fail closed.
    Internal(&'static str),
}

impl Error {
    /// The errno a failed `connect` reports for this error. Documented in the README.
    pub fn errno(&self) -> i32 {
        use libc::*;
        match self {
            Error::Os(e) => *e,
            Error::Timeout => ETIMEDOUT,
            Error::Closed | Error::Protocol(_) | Error::UnexpectedMethod(_) => ECONNREFUSED,
            Error::NoAcceptableMethod | Error::AuthRejected(_) => EACCES,
            Error::Socks5(code) => match code {
                ReplyCode::Succeeded => 0,
                ReplyCode::NotAllowed => EACCES,
                ReplyCode::NetworkUnreachable => ENETUNREACH,
                ReplyCode::HostUnreachable => EHOSTUNREACH,
                ReplyCode::TtlExpired => ETIMEDOUT,
                ReplyCode::GeneralFailure
                | ReplyCode::ConnectionRefused
                | ReplyCode::CommandNotSupported
                | ReplyCode::AddrTypeNotSupported
                | ReplyCode::Unknown(_) => ECONNREFUSED,
            },
            Error::Socks4(code) => match code {
                Socks4Code::NoIdentd | Socks4Code::IdentMismatch => EACCES,
                Socks4Code::Granted | Socks4Code::Rejected | Socks4Code::Unknown(_) => ECONNREFUSED,
            },
            Error::Http(status) => match status {
                401 | 403 | 407 => EACCES,
                504 => ETIMEDOUT,
                _ => ECONNREFUSED,
            },
            Error::Socks4NeedsName => EHOSTUNREACH,
            Error::UnknownFakeIp(_) | Error::NoProxyAlive | Error::Config(_) => ECONNREFUSED,
            Error::Blocked => EACCES,
            Error::TableFull => EAGAIN,
            Error::BadName => EINVAL,
            Error::Interrupted => EINTR,
            Error::Internal(_) => EIO,
        }
    }

    /// The `EAI_*` code a failed resolver call reports for this error.
    pub fn eai(&self) -> i32 {
        match self {
            Error::TableFull => libc::EAI_AGAIN,
            Error::Blocked | Error::BadName => libc::EAI_NONAME,
            _ => libc::EAI_FAIL,
        }
    }

    /// Whether this is the proxy's answer about the destination (as opposed to a failure to
    /// reach or talk to the proxy itself). Used to tell "target refused" from "proxy dead".
    pub fn is_reply(&self) -> bool {
        matches!(
            self,
            Error::Socks5(_) | Error::Socks4(_) | Error::Http(_) | Error::Socks4NeedsName
        )
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Os(e) => {
                let text = std::io::Error::from_raw_os_error(*e).to_string();
                let plain = text.split(" (os error").next().unwrap_or(&text);
                write!(f, "{plain}")
            }
            Error::Timeout => write!(f, "timed out"),
            Error::Closed => write!(f, "proxy closed the connection during the handshake"),
            Error::Protocol(p) => write!(f, "protocol error: {p}"),
            Error::NoAcceptableMethod => {
                write!(
                    f,
                    "proxy accepts none of our auth methods (wrong or missing credentials?)"
                )
            }
            Error::UnexpectedMethod(m) => {
                write!(
                    f,
                    "proxy chose an auth method we cannot do ({:#04x})",
                    m.to_u8()
                )
            }
            Error::AuthRejected(s) => write!(f, "user name/password rejected (status {s:#04x})"),
            Error::Socks5(code) => {
                write!(
                    f,
                    "SOCKS5 reply {:#04x}: {}",
                    code.to_u8(),
                    code.description()
                )
            }
            Error::Socks4(code) => write!(f, "SOCKS4 reply {:#04x}", code.to_u8()),
            Error::Http(status) => write!(f, "HTTP proxy answered {status}"),
            Error::Socks4NeedsName => write!(
                f,
                "a host name cannot be sent to a socks4 proxy: use socks4a://, \
                 or socks4_resolve = \"local\""
            ),
            Error::UnknownFakeIp(ip) => {
                write!(f, "{ip} is in the fake-IP range but was never handed out")
            }
            Error::Blocked => write!(f, "blocked by rule"),
            Error::TableFull => write!(f, "fake-DNS table is full"),
            Error::BadName => write!(f, "not a valid host name"),
            Error::NoProxyAlive => write!(f, "no proxy of the chain is alive"),
            Error::Config(m) => write!(f, "configuration: {m}"),
            Error::Interrupted => write!(f, "interrupted by a signal"),
            Error::Internal(m) => write!(f, "internal error: {m}"),
        }
    }
}

impl std::error::Error for Error {}

impl From<ProtoError> for Error {
    fn from(e: ProtoError) -> Self {
        Error::Protocol(e)
    }
}

/// The name of an errno value (`ECONNREFUSED`), for logs and reports.
pub fn errno_name(e: i32) -> &'static str {
    use libc::*;
    match e {
        0 => "OK",
        EPERM => "EPERM",
        ENOENT => "ENOENT",
        EINTR => "EINTR",
        EIO => "EIO",
        EBADF => "EBADF",
        EAGAIN => "EAGAIN",
        ENOMEM => "ENOMEM",
        EACCES => "EACCES",
        EFAULT => "EFAULT",
        EINVAL => "EINVAL",
        EMFILE => "EMFILE",
        EPIPE => "EPIPE",
        ENOTSOCK => "ENOTSOCK",
        EPROTO => "EPROTO",
        EAFNOSUPPORT => "EAFNOSUPPORT",
        EADDRINUSE => "EADDRINUSE",
        EADDRNOTAVAIL => "EADDRNOTAVAIL",
        ENETDOWN => "ENETDOWN",
        ENETUNREACH => "ENETUNREACH",
        ECONNABORTED => "ECONNABORTED",
        ECONNRESET => "ECONNRESET",
        EISCONN => "EISCONN",
        ENOTCONN => "ENOTCONN",
        ETIMEDOUT => "ETIMEDOUT",
        ECONNREFUSED => "ECONNREFUSED",
        EHOSTUNREACH => "EHOSTUNREACH",
        EALREADY => "EALREADY",
        EINPROGRESS => "EINPROGRESS",
        _ => "E?",
    }
}

/// What a failed getaddrinfo's `EAI_*` code means, for logs (glibc's own wording; the library
/// does not import gai_strerror: one symbol lookup fewer at every load).
pub fn eai_message(rc: i32) -> &'static str {
    use libc::*;
    match rc {
        EAI_NONAME => "Name or service not known",
        EAI_AGAIN => "Temporary failure in name resolution",
        EAI_FAIL => "Non-recoverable failure in name resolution",
        EAI_FAMILY => "ai_family not supported",
        EAI_SOCKTYPE => "ai_socktype not supported",
        EAI_SERVICE => "Servname not supported for ai_socktype",
        EAI_MEMORY => "Memory allocation failure",
        EAI_SYSTEM => "System error",
        EAI_BADFLAGS => "Bad value for ai_flags",
        -5 => "No address associated with hostname", // EAI_NODATA (glibc)
        -9 => "Address family for hostname not supported", // EAI_ADDRFAMILY (glibc)
        _ => "Unknown error",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn eai_messages_are_glibcs() {
        for rc in [-1, -2, -3, -4, -5, -6, -7, -8, -9, -10, -11, -12] {
            // SAFETY: gai_strerror returns a static string.
            let glibc = unsafe { std::ffi::CStr::from_ptr(libc::gai_strerror(rc)) };
            assert_eq!(eai_message(rc), glibc.to_str().unwrap(), "EAI code {rc}");
        }
    }

    #[test]
    fn errno_table_matches_the_docs() {
        use libc::*;
        assert_eq!(Error::Timeout.errno(), ETIMEDOUT);
        assert_eq!(Error::Os(ENETUNREACH).errno(), ENETUNREACH);
        assert_eq!(Error::Socks5(ReplyCode::NotAllowed).errno(), EACCES);
        assert_eq!(
            Error::Socks5(ReplyCode::NetworkUnreachable).errno(),
            ENETUNREACH
        );
        assert_eq!(
            Error::Socks5(ReplyCode::HostUnreachable).errno(),
            EHOSTUNREACH
        );
        assert_eq!(
            Error::Socks5(ReplyCode::ConnectionRefused).errno(),
            ECONNREFUSED
        );
        assert_eq!(Error::Socks5(ReplyCode::TtlExpired).errno(), ETIMEDOUT);
        assert_eq!(
            Error::Socks5(ReplyCode::CommandNotSupported).errno(),
            ECONNREFUSED
        );
        assert_eq!(
            Error::Socks5(ReplyCode::AddrTypeNotSupported).errno(),
            ECONNREFUSED
        );
        assert_eq!(
            Error::Socks5(ReplyCode::Unknown(0x42)).errno(),
            ECONNREFUSED
        );
        assert_eq!(Error::Socks4(Socks4Code::Rejected).errno(), ECONNREFUSED);
        assert_eq!(Error::Socks4(Socks4Code::NoIdentd).errno(), EACCES);
        assert_eq!(Error::Socks4(Socks4Code::IdentMismatch).errno(), EACCES);
        assert_eq!(Error::Http(407).errno(), EACCES);
        assert_eq!(Error::Http(403).errno(), EACCES);
        assert_eq!(Error::Http(502).errno(), ECONNREFUSED);
        assert_eq!(Error::NoAcceptableMethod.errno(), EACCES);
        assert_eq!(Error::AuthRejected(1).errno(), EACCES);
        assert_eq!(Error::Socks4NeedsName.errno(), EHOSTUNREACH);
        assert_eq!(Error::Closed.errno(), ECONNREFUSED);
        assert_eq!(Error::TableFull.eai(), EAI_AGAIN);
        assert_eq!(errno_name(ECONNREFUSED), "ECONNREFUSED");
    }
}
