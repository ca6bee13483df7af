//! Raw socket operations on the program's fd: address conversion, a connect with a timeout,
//! the [`Transport`] the chain handshake runs over, flag save/restore, socket replacement.
//!
//! Owns: every syscall the dialer makes. Uses poll (never select: fds may be ≥ 1024); retries
//! EINTR until the deadline, so a signal never aborts a handshake.
//! Must never: call a symbol the library exports through `libc::` (use [`crate::real`]), or
//! raise SIGPIPE in the program (every send uses MSG_NOSIGNAL).

use std::mem::{size_of, zeroed};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};
use std::time::Instant;

use chainsocks_core::Error;
use chainsocks_core::dial::Transport;
use libc::{c_int, c_void, sockaddr, sockaddr_in, sockaddr_in6, sockaddr_storage, socklen_t};

use crate::real;

pub fn errno() -> c_int {
    std::io::Error::last_os_error()
        .raw_os_error()
        .unwrap_or(libc::EIO)
}

pub fn set_errno(e: c_int) {
    // SAFETY: __errno_location returns this thread's errno slot.
    unsafe { *libc::__errno_location() = e };
}

/// Reads a `sockaddr` the program passed in; `None` unless it is a complete AF_INET/AF_INET6.
///
/// # Safety
/// `addr` must be null or point to at least `len` readable bytes.
pub unsafe fn read_sockaddr(addr: *const sockaddr, len: socklen_t) -> Option<SocketAddr> {
    if addr.is_null() || (len as usize) < size_of::<libc::sa_family_t>() {
        return None;
    }
    // SAFETY: at least the family field is readable (checked above); unaligned-safe reads.
    let family = unsafe { std::ptr::addr_of!((*addr).sa_family).read_unaligned() };
    match family as c_int {
        libc::AF_INET if len as usize >= size_of::<sockaddr_in>() => {
            // SAFETY: len covers a sockaddr_in.
            let a = unsafe { (addr as *const sockaddr_in).read_unaligned() };
            let ip = Ipv4Addr::from(u32::from_be(a.sin_addr.s_addr));
            Some(SocketAddr::V4(SocketAddrV4::new(
                ip,
                u16::from_be(a.sin_port),
            )))
        }
        libc::AF_INET6 if len as usize >= size_of::<sockaddr_in6>() => {
            // SAFETY: len covers a sockaddr_in6.
            let a = unsafe { (addr as *const sockaddr_in6).read_unaligned() };
            let ip = Ipv6Addr::from(a.sin6_addr.s6_addr);
            Some(SocketAddr::V6(SocketAddrV6::new(
                ip,
                u16::from_be(a.sin6_port),
                u32::from_be(a.sin6_flowinfo),
                a.sin6_scope_id,
            )))
        }
        _ => None,
    }
}

/// A `sockaddr_storage` holding `sa`, and its length.
pub fn to_sockaddr(sa: &SocketAddr) -> (sockaddr_storage, socklen_t) {
    // SAFETY: all-zero is a valid sockaddr_storage.
    let mut st: sockaddr_storage = unsafe { zeroed() };
    let len = match sa {
        SocketAddr::V4(v4) => {
            // SAFETY: sockaddr_storage is large and aligned enough for sockaddr_in.
            let a = unsafe { &mut *(&mut st as *mut sockaddr_storage as *mut sockaddr_in) };
            a.sin_family = libc::AF_INET as libc::sa_family_t;
            a.sin_port = v4.port().to_be();
            a.sin_addr.s_addr = u32::from(*v4.ip()).to_be();
            size_of::<sockaddr_in>()
        }
        SocketAddr::V6(v6) => {
            // SAFETY: sockaddr_storage is large and aligned enough for sockaddr_in6.
            let a = unsafe { &mut *(&mut st as *mut sockaddr_storage as *mut sockaddr_in6) };
            a.sin6_family = libc::AF_INET6 as libc::sa_family_t;
            a.sin6_port = v6.port().to_be();
            a.sin6_flowinfo = v6.flowinfo().to_be();
            a.sin6_addr.s6_addr = v6.ip().octets();
            a.sin6_scope_id = v6.scope_id();
            size_of::<sockaddr_in6>()
        }
    };
    (st, len as socklen_t)
}

/// An int socket option, or the errno.
pub fn getsockopt_int(fd: c_int, level: c_int, opt: c_int) -> Result<c_int, c_int> {
    let mut v: c_int = 0;
    let mut len = size_of::<c_int>() as socklen_t;
    // SAFETY: v and len are valid for writing an int option.
    let r = unsafe {
        libc::getsockopt(
            fd,
            level,
            opt,
            &mut v as *mut c_int as *mut c_void,
            &mut len,
        )
    };
    if r == 0 { Ok(v) } else { Err(errno()) }
}

pub fn setsockopt_int(fd: c_int, level: c_int, opt: c_int, v: c_int) -> bool {
    // SAFETY: v is a valid int for the duration of the call.
    unsafe {
        libc::setsockopt(
            fd,
            level,
            opt,
            &v as *const c_int as *const c_void,
            size_of::<c_int>() as socklen_t,
        ) == 0
    }
}

/// Whether the socket already has a peer (a connect on it must give EISCONN).
pub fn is_connected(fd: c_int) -> bool {
    let Some(gp) = real::getpeername() else {
        return false;
    };
    // SAFETY: zeroed storage and its length are valid out-parameters.
    let mut st: sockaddr_storage = unsafe { zeroed() };
    let mut len = size_of::<sockaddr_storage>() as socklen_t;
    // SAFETY: as above; the real getpeername, not our hook.
    unsafe {
        gp(
            fd,
            &mut st as *mut sockaddr_storage as *mut sockaddr,
            &mut len,
        ) == 0
    }
}

pub fn get_fl(fd: c_int) -> Result<c_int, Error> {
    // SAFETY: F_GETFL takes no argument.
    let f = unsafe { libc::fcntl(fd, libc::F_GETFL) };
    if f < 0 {
        Err(Error::Os(errno()))
    } else {
        Ok(f)
    }
}

pub fn set_fl(fd: c_int, flags: c_int) {
    // SAFETY: F_SETFL with an int argument.
    unsafe { libc::fcntl(fd, libc::F_SETFL, flags) };
}

/// Milliseconds left until `deadline` for poll, rounded up; `Err(Timeout)` when none is left.
fn poll_ms(deadline: Instant) -> Result<c_int, Error> {
    let left = deadline.saturating_duration_since(Instant::now());
    if left.is_zero() {
        return Err(Error::Timeout);
    }
    let ms = left.as_micros().div_ceil(1000);
    Ok(ms.min(c_int::MAX as u128) as c_int)
}

/// Waits until `fd` has any of `events` (or an error/hangup), retrying EINTR, until `deadline`.
fn wait(fd: c_int, events: libc::c_short, deadline: Instant) -> Result<(), Error> {
    loop {
        let mut p = libc::pollfd {
            fd,
            events,
            revents: 0,
        };
        // SAFETY: one valid pollfd.
        let r = unsafe { libc::poll(&mut p, 1, poll_ms(deadline)?) };
        match r {
            1.. => return Ok(()),
            0 => {} // loop: poll_ms reports the timeout once the deadline has passed
            _ => {
                let e = errno();
                if e != libc::EINTR && e != libc::EAGAIN {
                    return Err(Error::Os(e));
                }
            }
        }
    }
}

/// The addrlen that marks our own connects for the launcher's seccomp filter, which lets them
/// through without notifying its supervisor (no double proxying, no cost): the kernel accepts
/// any length from the family's size to 128, and the bytes past the address are zero.
const SUPERVISOR_MARKER_LEN: socklen_t = 113;

/// Connects the non-blocking `fd` to `addr` (a proxy, marked for the supervisor), waiting
/// until `deadline`.
pub fn connect_nb(fd: c_int, addr: &SocketAddr, deadline: Instant) -> Result<(), Error> {
    let real_connect = real::connect().ok_or(Error::Os(libc::ENOSYS))?;
    let (st, _) = to_sockaddr(addr); // 128 bytes, zero past the address
    // SAFETY: st is a zero-padded sockaddr_storage of 128 >= SUPERVISOR_MARKER_LEN bytes; the
    // real connect, not our hook.
    let r = unsafe {
        real_connect(
            fd,
            &st as *const sockaddr_storage as *const sockaddr,
            SUPERVISOR_MARKER_LEN,
        )
    };
    if r == 0 {
        return Ok(());
    }
    match errno() {
        libc::EINPROGRESS | libc::EINTR | libc::EALREADY => {}
        e => return Err(Error::Os(e)),
    }
    wait(fd, libc::POLLOUT, deadline)?;
    match getsockopt_int(fd, libc::SOL_SOCKET, libc::SO_ERROR) {
        Ok(0) => Ok(()),
        Ok(e) | Err(e) => Err(Error::Os(e)),
    }
}

/// The real connect of `fd` to `addr`, with the socket's own flags (a direct connection):
/// the kernel's result and errno as they are (EINPROGRESS for a non-blocking socket).
pub fn connect_real(fd: c_int, addr: &SocketAddr) -> Result<(), Error> {
    let real_connect = real::connect().ok_or(Error::Os(libc::ENOSYS))?;
    let (st, len) = to_sockaddr(addr);
    // SAFETY: st holds a valid sockaddr of `len` bytes; the real connect, not our hook.
    let r = unsafe { real_connect(fd, &st as *const sockaddr_storage as *const sockaddr, len) };
    if r == 0 {
        Ok(())
    } else {
        Err(Error::Os(errno()))
    }
}

/// Undoes a connection made on the program's socket after a failed handshake, so the socket is
/// back to unconnected, as after a failed kernel connect (TCP supports AF_UNSPEC disconnect).
pub fn disconnect(fd: c_int) {
    let Some(real_connect) = real::connect() else {
        return;
    };
    // SAFETY: zeroed sockaddr with family AF_UNSPEC.
    let mut sa: sockaddr = unsafe { zeroed() };
    sa.sa_family = libc::AF_UNSPEC as libc::sa_family_t;
    // SAFETY: valid sockaddr; the real connect.
    unsafe { real_connect(fd, &sa, size_of::<sockaddr>() as socklen_t) };
}

/// The handshake transport over a raw, non-blocking socket fd.
pub struct FdTransport(pub c_int);

impl Transport for FdTransport {
    fn send_all(&mut self, mut buf: &[u8], deadline: Instant) -> Result<(), Error> {
        while !buf.is_empty() {
            // SAFETY: buf is valid for reading buf.len() bytes. `send` is not hooked.
            let n = unsafe {
                libc::send(
                    self.0,
                    buf.as_ptr() as *const c_void,
                    buf.len(),
                    libc::MSG_NOSIGNAL,
                )
            };
            if n >= 0 {
                buf = buf.get(n as usize..).unwrap_or(&[]);
                continue;
            }
            match errno() {
                libc::EINTR => {}
                libc::EAGAIN => wait(self.0, libc::POLLOUT, deadline)?,
                e => return Err(Error::Os(e)),
            }
        }
        Ok(())
    }

    fn peek(&mut self, buf: &mut [u8], deadline: Instant) -> Result<usize, Error> {
        // A reply is rarely there yet when we ask: wait first (one poll), then peek, instead
        // of a peek that fails with EAGAIN, a poll and a second peek.
        wait(self.0, libc::POLLIN, deadline)?;
        loop {
            // SAFETY: buf is valid for writing buf.len() bytes.
            let n = unsafe {
                libc::recv(
                    self.0,
                    buf.as_mut_ptr() as *mut c_void,
                    buf.len(),
                    libc::MSG_PEEK,
                )
            };
            if n >= 0 {
                return Ok(n as usize);
            }
            match errno() {
                libc::EINTR => {}
                libc::EAGAIN => wait(self.0, libc::POLLIN, deadline)?,
                e => return Err(Error::Os(e)),
            }
        }
    }

    fn consume(&mut self, mut n: usize) -> Result<(), Error> {
        let mut buf = [0u8; 1024];
        while n > 0 {
            let want = n.min(buf.len());
            // SAFETY: buf is valid for writing `want` bytes.
            let r = unsafe { libc::recv(self.0, buf.as_mut_ptr() as *mut c_void, want, 0) };
            match r {
                0 => return Err(Error::Closed),
                1.. => n -= r as usize,
                _ => match errno() {
                    libc::EINTR | libc::EAGAIN => {}
                    e => return Err(Error::Os(e)),
                },
            }
        }
        Ok(())
    }
}

/// How the program's socket can reach the first proxy.
pub enum Reach {
    /// Connect the program's own fd to this address (maybe a v4-mapped IPv6 address).
    Direct(SocketAddr),
    /// The fd's family cannot reach the proxy: build on a new socket of this family.
    Replace(c_int),
}

/// Decides how a socket of `family` reaches `proxy`.
pub fn reach(fd: c_int, family: c_int, proxy: SocketAddr) -> Reach {
    match (family, proxy.ip()) {
        (libc::AF_INET, IpAddr::V4(_)) | (libc::AF_INET6, IpAddr::V6(_)) => Reach::Direct(proxy),
        (libc::AF_INET6, IpAddr::V4(v4)) => {
            if getsockopt_int(fd, libc::IPPROTO_IPV6, libc::IPV6_V6ONLY) == Ok(0) {
                Reach::Direct(SocketAddr::new(
                    IpAddr::V6(v4.to_ipv6_mapped()),
                    proxy.port(),
                ))
            } else {
                Reach::Replace(libc::AF_INET)
            }
        }
        _ => Reach::Replace(libc::AF_INET6),
    }
}

/// Socket options carried from the program's socket to a replacement socket.
const CARRIED: &[(c_int, c_int)] = &[
    (libc::SOL_SOCKET, libc::SO_KEEPALIVE),
    (libc::SOL_SOCKET, libc::SO_RCVBUF),
    (libc::SOL_SOCKET, libc::SO_SNDBUF),
    (libc::SOL_SOCKET, libc::SO_OOBINLINE),
    (libc::SOL_SOCKET, libc::SO_PRIORITY),
    (libc::SOL_SOCKET, libc::SO_MARK),
    (libc::SOL_SOCKET, libc::SO_RCVLOWAT),
    (libc::IPPROTO_TCP, libc::TCP_NODELAY),
    (libc::IPPROTO_TCP, libc::TCP_KEEPIDLE),
    (libc::IPPROTO_TCP, libc::TCP_KEEPINTVL),
    (libc::IPPROTO_TCP, libc::TCP_KEEPCNT),
    (libc::IPPROTO_TCP, libc::TCP_USER_TIMEOUT),
    (libc::IPPROTO_TCP, libc::TCP_QUICKACK),
];

/// Copies the options the program set on `from` (those that differ from a fresh socket) to `to`.
fn carry_options(from: c_int, to: c_int) {
    for &(level, opt) in CARRIED {
        if let (Ok(mut want), Ok(have)) = (
            getsockopt_int(from, level, opt),
            getsockopt_int(to, level, opt),
        ) && want != have
        {
            if opt == libc::SO_RCVBUF || opt == libc::SO_SNDBUF {
                want /= 2; // the kernel reports double what was set
            }
            setsockopt_int(to, level, opt, want);
        }
    }
    for opt in [libc::SO_LINGER, libc::SO_RCVTIMEO, libc::SO_SNDTIMEO] {
        let mut buf = [0u8; 32];
        let mut len = buf.len() as socklen_t;
        // SAFETY: buf/len are valid out-parameters for these small structs.
        let ok = unsafe {
            libc::getsockopt(
                from,
                libc::SOL_SOCKET,
                opt,
                buf.as_mut_ptr() as *mut c_void,
                &mut len,
            )
        } == 0;
        if ok && buf.iter().any(|&b| b != 0) {
            // SAFETY: the same bytes the kernel gave us.
            unsafe {
                libc::setsockopt(
                    to,
                    libc::SOL_SOCKET,
                    opt,
                    buf.as_ptr() as *const c_void,
                    len,
                )
            };
        }
    }
}

/// A new non-blocking, close-on-exec TCP socket of `family` carrying `template`'s options.
pub fn replacement(template: c_int, family: c_int) -> Result<c_int, Error> {
    // SAFETY: plain socket(2).
    let s = unsafe {
        libc::socket(
            family,
            libc::SOCK_STREAM | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
            0,
        )
    };
    if s < 0 {
        return Err(Error::Os(errno()));
    }
    carry_options(template, s);
    Ok(s)
}

/// Moves the connected `new` over the program's `fd` (keeping its close-on-exec flag) and
/// restores the program's file status flags.
pub fn install(new: c_int, fd: c_int, status_flags: c_int) -> Result<(), Error> {
    // SAFETY: F_GETFD takes no argument.
    let fd_flags = unsafe { libc::fcntl(fd, libc::F_GETFD) };
    let cloexec = if fd_flags >= 0 && fd_flags & libc::FD_CLOEXEC != 0 {
        libc::O_CLOEXEC
    } else {
        0
    };
    // SAFETY: both fds are open; dup3 atomically replaces fd.
    let r = unsafe { libc::dup3(new, fd, cloexec) };
    let e = errno();
    // SAFETY: `new` is ours.
    unsafe { libc::close(new) };
    if r < 0 {
        return Err(Error::Os(e));
    }
    set_fl(fd, status_flags);
    Ok(())
}

pub fn close(fd: c_int) {
    // SAFETY: closing an fd we own.
    unsafe { libc::close(fd) };
}
