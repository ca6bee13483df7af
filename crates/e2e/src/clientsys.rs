//! Shared plumbing of the test binaries that call libc directly (`csclient`, `csudp`):
//! errno/getaddrinfo names, the one-line failure outputs, a raw `sockaddr_storage` wrapper,
//! getaddrinfo, an owned fd and `poll` on one fd.
//!
//! Owns: nothing but these helpers; they use libc only (never Rust's std networking, which
//! would hide from an LD_PRELOAD shim what a C program does).
//! Never does: print anything but the documented result lines on stdout (diagnostics go to
//! stderr); the `fail*` functions and [`resolve`] EXIT the process (status 1): they are for
//! the binaries, not for tests.

use std::ffi::{CStr, CString};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::process::exit;

/// This thread's errno.
pub fn errno() -> i32 {
    std::io::Error::last_os_error().raw_os_error().unwrap_or(0)
}

/// The symbolic name of an errno value (`E?` if unknown).
pub fn errno_name(e: i32) -> &'static str {
    match e {
        libc::EPERM => "EPERM",
        libc::ENOENT => "ENOENT",
        libc::EINTR => "EINTR",
        libc::EIO => "EIO",
        libc::EBADF => "EBADF",
        libc::EAGAIN => "EAGAIN",
        libc::ENOMEM => "ENOMEM",
        libc::EACCES => "EACCES",
        libc::EFAULT => "EFAULT",
        libc::EINVAL => "EINVAL",
        libc::ENFILE => "ENFILE",
        libc::EMFILE => "EMFILE",
        libc::EPIPE => "EPIPE",
        libc::ENOSYS => "ENOSYS",
        libc::ENOTSOCK => "ENOTSOCK",
        libc::EDESTADDRREQ => "EDESTADDRREQ",
        libc::EMSGSIZE => "EMSGSIZE",
        libc::EPROTOTYPE => "EPROTOTYPE",
        libc::ENOPROTOOPT => "ENOPROTOOPT",
        libc::EPROTONOSUPPORT => "EPROTONOSUPPORT",
        libc::EOPNOTSUPP => "EOPNOTSUPP",
        libc::EAFNOSUPPORT => "EAFNOSUPPORT",
        libc::EADDRINUSE => "EADDRINUSE",
        libc::EADDRNOTAVAIL => "EADDRNOTAVAIL",
        libc::ENETDOWN => "ENETDOWN",
        libc::ENETUNREACH => "ENETUNREACH",
        libc::ENETRESET => "ENETRESET",
        libc::ECONNABORTED => "ECONNABORTED",
        libc::ECONNRESET => "ECONNRESET",
        libc::ENOBUFS => "ENOBUFS",
        libc::EISCONN => "EISCONN",
        libc::ENOTCONN => "ENOTCONN",
        libc::ESHUTDOWN => "ESHUTDOWN",
        libc::ETIMEDOUT => "ETIMEDOUT",
        libc::ECONNREFUSED => "ECONNREFUSED",
        libc::EHOSTDOWN => "EHOSTDOWN",
        libc::EHOSTUNREACH => "EHOSTUNREACH",
        libc::EALREADY => "EALREADY",
        libc::EINPROGRESS => "EINPROGRESS",
        libc::EPROTO => "EPROTO",
        _ => "E?",
    }
}

/// The symbolic name of a getaddrinfo error (`EAI_?` if unknown).
pub fn gai_name(e: i32) -> &'static str {
    match e {
        libc::EAI_AGAIN => "EAI_AGAIN",
        libc::EAI_BADFLAGS => "EAI_BADFLAGS",
        libc::EAI_FAIL => "EAI_FAIL",
        libc::EAI_FAMILY => "EAI_FAMILY",
        libc::EAI_MEMORY => "EAI_MEMORY",
        libc::EAI_NONAME => "EAI_NONAME",
        libc::EAI_SERVICE => "EAI_SERVICE",
        libc::EAI_SOCKTYPE => "EAI_SOCKTYPE",
        libc::EAI_SYSTEM => "EAI_SYSTEM",
        libc::EAI_OVERFLOW => "EAI_OVERFLOW",
        libc::EAI_NODATA => "EAI_NODATA",
        -9 => "EAI_ADDRFAMILY",
        _ => "EAI_?",
    }
}

/// Prints `errno=NAME (n)` (and `PROG: WHAT: message` on stderr) and exits 1.
pub fn fail_errno(prog: &str, what: &str, e: i32) -> ! {
    eprintln!("{prog}: {what}: {}", std::io::Error::from_raw_os_error(e));
    println!("errno={} ({e})", errno_name(e));
    exit(1)
}

/// A `--family` value: `4`, `6` or `0` (any) as an address family.
pub fn family_arg(v: &str) -> Option<i32> {
    match v {
        "4" => Some(libc::AF_INET),
        "6" => Some(libc::AF_INET6),
        "0" => Some(libc::AF_UNSPEC),
        _ => None,
    }
}

/// Prints `error=MSG` and exits 1.
pub fn fail(msg: &str) -> ! {
    println!("error={msg}");
    exit(1)
}

/// A resolved socket address.
#[derive(Clone, Copy)]
pub struct Addr {
    pub ss: libc::sockaddr_storage,
    pub len: libc::socklen_t,
}

impl Addr {
    /// Its address family (`AF_INET`, `AF_INET6`, ...).
    pub fn family(&self) -> i32 {
        self.ss.ss_family as i32
    }

    /// Numeric text, formatted in-process (no getnameinfo/inet_ntop call a
    /// shim might hook).
    pub fn text(self) -> String {
        // SAFETY: the storage holds a sockaddr of the family it says.
        unsafe {
            match self.family() {
                libc::AF_INET => {
                    let sin = &*(&self.ss as *const _ as *const libc::sockaddr_in);
                    std::net::Ipv4Addr::from(sin.sin_addr.s_addr.to_ne_bytes()).to_string()
                }
                libc::AF_INET6 => {
                    let sin6 = &*(&self.ss as *const _ as *const libc::sockaddr_in6);
                    std::net::Ipv6Addr::from(sin6.sin6_addr.s6_addr).to_string()
                }
                f => format!("family-{f}"),
            }
        }
    }

    /// As a std address (`None` for other families). Converted in-process, no libc call.
    pub fn to_std(&self) -> Option<SocketAddr> {
        // SAFETY: the storage holds a sockaddr of the family it says.
        unsafe {
            match self.family() {
                libc::AF_INET => {
                    let sin = &*(&self.ss as *const _ as *const libc::sockaddr_in);
                    let ip = Ipv4Addr::from(sin.sin_addr.s_addr.to_ne_bytes());
                    Some(SocketAddr::new(IpAddr::V4(ip), u16::from_be(sin.sin_port)))
                }
                libc::AF_INET6 => {
                    let sin6 = &*(&self.ss as *const _ as *const libc::sockaddr_in6);
                    let ip = Ipv6Addr::from(sin6.sin6_addr.s6_addr);
                    Some(SocketAddr::new(
                        IpAddr::V6(ip),
                        u16::from_be(sin6.sin6_port),
                    ))
                }
                _ => None,
            }
        }
    }

    /// A sockaddr_in / sockaddr_in6 for `a`.
    pub fn from_std(a: SocketAddr) -> Addr {
        // SAFETY: zeroed storage is a valid sockaddr_in/sockaddr_in6 and large enough for both.
        unsafe {
            let mut ss: libc::sockaddr_storage = std::mem::zeroed();
            let len = match a {
                SocketAddr::V4(v4) => {
                    let sin = &mut *(&mut ss as *mut _ as *mut libc::sockaddr_in);
                    sin.sin_family = libc::AF_INET as libc::sa_family_t;
                    sin.sin_port = v4.port().to_be();
                    sin.sin_addr.s_addr = u32::from_ne_bytes(v4.ip().octets());
                    std::mem::size_of::<libc::sockaddr_in>()
                }
                SocketAddr::V6(v6) => {
                    let sin6 = &mut *(&mut ss as *mut _ as *mut libc::sockaddr_in6);
                    sin6.sin6_family = libc::AF_INET6 as libc::sa_family_t;
                    sin6.sin6_port = v6.port().to_be();
                    sin6.sin6_addr.s6_addr = v6.ip().octets();
                    sin6.sin6_scope_id = v6.scope_id();
                    std::mem::size_of::<libc::sockaddr_in6>()
                }
            };
            Addr {
                ss,
                len: len as libc::socklen_t,
            }
        }
    }

    /// IPv4 -> ::ffff:a.b.c.d in a sockaddr_in6 (same port).
    pub fn v4mapped(self) -> Addr {
        if self.family() != libc::AF_INET {
            return self;
        }
        // SAFETY: reinterpreting storage of the stated family; zeroed storage
        // is a valid sockaddr_in6.
        unsafe {
            let sin = &*(&self.ss as *const _ as *const libc::sockaddr_in);
            let mut out: libc::sockaddr_storage = std::mem::zeroed();
            let sin6 = &mut *(&mut out as *mut _ as *mut libc::sockaddr_in6);
            sin6.sin6_family = libc::AF_INET6 as libc::sa_family_t;
            sin6.sin6_port = sin.sin_port;
            let v4 = sin.sin_addr.s_addr.to_ne_bytes();
            let mut a = [0u8; 16];
            a[10] = 0xff;
            a[11] = 0xff;
            a[12..].copy_from_slice(&v4);
            sin6.sin6_addr.s6_addr = a;
            Addr {
                ss: out,
                len: std::mem::size_of::<libc::sockaddr_in6>() as libc::socklen_t,
            }
        }
    }
}

/// getaddrinfo(host, port) with the given family and socket type; every address it returns,
/// in order. On failure prints `gai=EAI_NAME (rc)` (or `errno=...` for `EAI_SYSTEM`) and exits 1.
pub fn resolve(
    prog: &str,
    host: &str,
    port: Option<&str>,
    family: i32,
    socktype: i32,
) -> Vec<Addr> {
    let Ok(chost) = CString::new(host) else {
        fail("nul-in-host")
    };
    let cport = port.map(|p| CString::new(p).unwrap_or_else(|_| fail("nul-in-port")));
    // SAFETY: hints is zeroed plain data; getaddrinfo fills `res`, which we
    // walk read-only and free exactly once with freeaddrinfo.
    unsafe {
        let mut hints: libc::addrinfo = std::mem::zeroed();
        hints.ai_family = family;
        hints.ai_socktype = socktype;
        let mut res: *mut libc::addrinfo = std::ptr::null_mut();
        let rc = libc::getaddrinfo(
            chost.as_ptr(),
            cport.as_ref().map_or(std::ptr::null(), |c| c.as_ptr()),
            &hints,
            &mut res,
        );
        if rc != 0 {
            let e = errno();
            let msg = CStr::from_ptr(libc::gai_strerror(rc)).to_string_lossy();
            eprintln!("{prog}: getaddrinfo({host}): {msg}");
            if rc == libc::EAI_SYSTEM {
                fail_errno(prog, "getaddrinfo", e);
            }
            println!("gai={} ({rc})", gai_name(rc));
            exit(1);
        }
        let mut out = Vec::new();
        let mut p = res;
        while !p.is_null() {
            let ai = &*p;
            if !ai.ai_addr.is_null()
                && (ai.ai_addrlen as usize) <= std::mem::size_of::<libc::sockaddr_storage>()
            {
                let mut ss: libc::sockaddr_storage = std::mem::zeroed();
                std::ptr::copy_nonoverlapping(
                    ai.ai_addr as *const u8,
                    &mut ss as *mut _ as *mut u8,
                    ai.ai_addrlen as usize,
                );
                out.push(Addr {
                    ss,
                    len: ai.ai_addrlen,
                });
            }
            p = ai.ai_next;
        }
        libc::freeaddrinfo(res);
        out
    }
}

/// An owned file descriptor, closed on drop.
pub struct Fd(pub i32);

impl Drop for Fd {
    fn drop(&mut self) {
        // SAFETY: we own the descriptor.
        unsafe { libc::close(self.0) };
    }
}

/// `poll` on one fd until `events` or `timeout_ms` (then `Err(ETIMEDOUT)`); EINTR restarts.
pub fn poll_one(fd: i32, events: i16, timeout_ms: i32) -> Result<(), i32> {
    let mut p = libc::pollfd {
        fd,
        events,
        revents: 0,
    };
    loop {
        // SAFETY: one valid pollfd.
        let r = unsafe { libc::poll(&mut p, 1, timeout_ms) };
        if r > 0 {
            return Ok(());
        }
        if r == 0 {
            return Err(libc::ETIMEDOUT);
        }
        let e = errno();
        if e != libc::EINTR {
            return Err(e);
        }
    }
}
