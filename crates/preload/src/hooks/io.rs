//! The data calls of UDP sockets that have an association (see [`crate::udp`]): `read`,
//! `write`, `readv`, `writev`, `recv`, `send`, `recvfrom`, `recvmsg`, `recvmmsg` and glibc's fortified
//! `__read_chk`, `__recv_chk`, `__recvfrom_chk`. The header is added and stripped here, and the
//! source a receive reports is the destination the program used, never the relay.
//!
//! Hot: every one of these runs for every call of every program. A process that never made an
//! association pays one atomic load (`udp::ANY`) and goes to the real function.
//! Must never: frame a call on an fd that is not the associated socket (checked by inode), or
//! let a panic cross `extern "C"` (fail closed: EIO).

use libc::{c_int, c_uint, c_void, iovec, mmsghdr, msghdr, size_t, sockaddr, socklen_t, ssize_t};

use super::catch;
use crate::guard::Guard;
use crate::sock::set_errno;
use crate::udp::{self, View};
use crate::{real, sock};
use chainsocks_core::sys;
use std::sync::atomic::Ordering;

/// The association of `fd`, when the call must be framed.
pub(super) fn framed(fd: c_int) -> Option<(View, Guard)> {
    if !udp::ANY.load(Ordering::Relaxed) {
        return None;
    }
    let g = Guard::enter()?;
    let v = catch("udp", || udp::lookup(fd)).flatten()?;
    Some((v, g))
}

/// Writes `a` to a program's (address, length) out-parameters, truncating like the kernel.
///
/// # Safety
/// `addr` is null or writable for `*len` bytes; `len` is null or writable.
pub unsafe fn write_addr(addr: *mut sockaddr, len: *mut socklen_t, a: std::net::SocketAddr) {
    if addr.is_null() || len.is_null() {
        return;
    }
    let (st, full) = sys::to_sockaddr(&a);
    // SAFETY: contract; at most *len bytes are written.
    unsafe {
        let room = (*len as usize).min(full as usize);
        std::ptr::copy_nonoverlapping(
            (&st as *const libc::sockaddr_storage).cast::<u8>(),
            addr.cast::<u8>(),
            room,
        );
        *len = full;
    }
}

fn fail(e: c_int) -> ssize_t {
    set_errno(e);
    -1
}

/// A receive into one buffer on an associated socket.
fn recv_one(
    fd: c_int,
    v: &View,
    buf: *mut c_void,
    len: size_t,
    flags: c_int,
    addr: *mut sockaddr,
    addrlen: *mut socklen_t,
) -> ssize_t {
    let iov = iovec {
        iov_base: buf,
        iov_len: len,
    };
    // SAFETY: one iovec over the program's buffer of `len` bytes (contract of the hooked call).
    unsafe { recv_iov(fd, v, &iov, 1, flags, addr, addrlen) }
}

/// A receive into the program's iovecs on an associated socket; the source goes to `addr`
/// (if not null).
///
/// # Safety
/// `iov` points to `iovlen` valid iovecs over writable buffers; `addr`/`addrlen` are null or
/// the program's out-parameters.
unsafe fn recv_iov(
    fd: c_int,
    v: &View,
    iov: *const iovec,
    iovlen: usize,
    flags: c_int,
    addr: *mut sockaddr,
    addrlen: *mut socklen_t,
) -> ssize_t {
    let saved = sock::errno();
    // SAFETY: the program's buffers (contract).
    match catch("recv", || unsafe {
        udp::recv_framed(fd, v, iov, iovlen, (std::ptr::null_mut(), 0), flags)
    }) {
        Some(Ok(r)) => {
            // SAFETY: the program's out-parameters (contract).
            unsafe { write_addr(addr, addrlen, r.from) };
            set_errno(saved);
            r.len as ssize_t
        }
        Some(Err(e)) => fail(e),
        None => fail(libc::EIO),
    }
}

/// A send of one buffer on an associated, connected socket (no address).
fn send_connected(
    fd: c_int,
    v: &View,
    buf: *const c_void,
    len: size_t,
    flags: c_int,
) -> Option<ssize_t> {
    let iov = iovec {
        iov_base: buf as *mut c_void,
        iov_len: len,
    };
    // SAFETY: one iovec over the program's buffer of `len` bytes.
    unsafe { send_connected_iov(fd, v, &iov, 1, (std::ptr::null_mut(), 0), flags) }
}

/// A send of the program's iovecs (and control messages) on an associated, connected socket
/// (no address): `None` when the association has no connected target.
///
/// # Safety
/// `iov` points to `iovlen` valid iovecs over readable buffers; `control` is the program's
/// (or null, 0).
pub(super) unsafe fn send_connected_iov(
    fd: c_int,
    v: &View,
    iov: *const iovec,
    iovlen: usize,
    control: (*mut c_void, usize),
    flags: c_int,
) -> Option<ssize_t> {
    // SAFETY: the contract.
    let total: usize = (0..iovlen).map(|i| unsafe { (*iov.add(i)).iov_len }).sum();
    if !v.hub_fits(total) {
        return Some(fail(libc::EMSGSIZE));
    }
    let mut hdr = [0u8; chainsocks_core::udp::MAX_HEADER];
    let n = v.connected_header(&mut hdr)?;
    let saved = sock::errno();
    // SAFETY: the program's buffers (contract).
    Some(
        match catch("send", || unsafe {
            udp::send_framed(
                fd,
                v,
                hdr.get(..n).unwrap_or(&[]),
                iov,
                iovlen,
                control,
                flags,
            )
        }) {
            Some(Ok(k)) => {
                set_errno(saved);
                k as ssize_t
            }
            Some(Err(e)) => fail(e),
            None => fail(libc::EIO),
        },
    )
}

/// # Safety
/// The readv(2) contract.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn readv(fd: c_int, iov: *const iovec, iovcnt: c_int) -> ssize_t {
    if (1..=1024).contains(&iovcnt)
        && let Some((v, _g)) = framed(fd)
    {
        let none = std::ptr::null_mut();
        // SAFETY: the program's iovecs (contract); no address wanted.
        return unsafe { recv_iov(fd, &v, iov, iovcnt as usize, 0, none, none.cast()) };
    }
    // SAFETY: the program's arguments, to the real function.
    real::readv().map_or_else(|| fail(libc::ENOSYS), |f| unsafe { f(fd, iov, iovcnt) })
}

/// # Safety
/// The writev(2) contract.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn writev(fd: c_int, iov: *const iovec, iovcnt: c_int) -> ssize_t {
    if (1..=1024).contains(&iovcnt)
        && let Some((v, _g)) = framed(fd)
        // SAFETY: the program's iovecs (contract).
        && let Some(r) = unsafe { send_connected_iov(fd, &v, iov, iovcnt as usize, (std::ptr::null_mut(), 0), 0) }
    {
        return r;
    }
    // SAFETY: the program's arguments, to the real function.
    real::writev().map_or_else(|| fail(libc::ENOSYS), |f| unsafe { f(fd, iov, iovcnt) })
}

/// # Safety
/// The read(2) contract.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn read(fd: c_int, buf: *mut c_void, len: size_t) -> ssize_t {
    match framed(fd) {
        Some((v, _g)) => recv_one(
            fd,
            &v,
            buf,
            len,
            0,
            std::ptr::null_mut(),
            std::ptr::null_mut(),
        ),
        // SAFETY: the program's arguments, to the real function.
        None => real::read().map_or_else(|| fail(libc::ENOSYS), |f| unsafe { f(fd, buf, len) }),
    }
}

/// # Safety
/// The fortified read contract.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn __read_chk(
    fd: c_int,
    buf: *mut c_void,
    len: size_t,
    buflen: size_t,
) -> ssize_t {
    match framed(fd) {
        Some((v, _g)) if len <= buflen => recv_one(
            fd,
            &v,
            buf,
            len,
            0,
            std::ptr::null_mut(),
            std::ptr::null_mut(),
        ),
        // SAFETY: the program's arguments, to the real function (which also does the check).
        _ => real::read_chk().map_or_else(
            || fail(libc::ENOSYS),
            |f| unsafe { f(fd, buf, len, buflen) },
        ),
    }
}

/// # Safety
/// The recv(2) contract.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn recv(fd: c_int, buf: *mut c_void, len: size_t, flags: c_int) -> ssize_t {
    match framed(fd) {
        Some((v, _g)) => recv_one(
            fd,
            &v,
            buf,
            len,
            flags,
            std::ptr::null_mut(),
            std::ptr::null_mut(),
        ),
        // SAFETY: the program's arguments, to the real function.
        None => {
            real::recv().map_or_else(|| fail(libc::ENOSYS), |f| unsafe { f(fd, buf, len, flags) })
        }
    }
}

/// # Safety
/// The fortified recv contract.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn __recv_chk(
    fd: c_int,
    buf: *mut c_void,
    len: size_t,
    buflen: size_t,
    flags: c_int,
) -> ssize_t {
    match framed(fd) {
        Some((v, _g)) if len <= buflen => recv_one(
            fd,
            &v,
            buf,
            len,
            flags,
            std::ptr::null_mut(),
            std::ptr::null_mut(),
        ),
        // SAFETY: the program's arguments, to the real function.
        _ => real::recv_chk().map_or_else(
            || fail(libc::ENOSYS),
            |f| unsafe { f(fd, buf, len, buflen, flags) },
        ),
    }
}

/// # Safety
/// The recvfrom(2) contract.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn recvfrom(
    fd: c_int,
    buf: *mut c_void,
    len: size_t,
    flags: c_int,
    addr: *mut sockaddr,
    addrlen: *mut socklen_t,
) -> ssize_t {
    match framed(fd) {
        Some((v, _g)) => recv_one(fd, &v, buf, len, flags, addr, addrlen),
        // SAFETY: the program's arguments, to the real function.
        None => real::recvfrom().map_or_else(
            || fail(libc::ENOSYS),
            |f| unsafe { f(fd, buf, len, flags, addr, addrlen) },
        ),
    }
}

/// # Safety
/// The fortified recvfrom contract.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn __recvfrom_chk(
    fd: c_int,
    buf: *mut c_void,
    len: size_t,
    buflen: size_t,
    flags: c_int,
    addr: *mut sockaddr,
    addrlen: *mut socklen_t,
) -> ssize_t {
    match framed(fd) {
        Some((v, _g)) if len <= buflen => recv_one(fd, &v, buf, len, flags, addr, addrlen),
        // SAFETY: the program's arguments, to the real function.
        _ => real::recvfrom_chk().map_or_else(
            || fail(libc::ENOSYS),
            |f| unsafe { f(fd, buf, len, buflen, flags, addr, addrlen) },
        ),
    }
}

/// # Safety
/// The recvmsg(2) contract.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn recvmsg(fd: c_int, msg: *mut msghdr, flags: c_int) -> ssize_t {
    let real_call = || {
        // SAFETY: the program's arguments, to the real function.
        real::recvmsg().map_or_else(|| fail(libc::ENOSYS), |f| unsafe { f(fd, msg, flags) })
    };
    let Some((v, _g)) = framed(fd) else {
        return real_call();
    };
    // SAFETY: msg is a valid msghdr (contract).
    let Some(m) = (unsafe { msg.as_mut() }) else {
        return real_call();
    };
    // SAFETY: one program message.
    unsafe { recv_msg(fd, &v, m, flags) }
}

/// One framed receive into a program's msghdr; fills its name, flags and control length.
///
/// # Safety
/// `m` is a valid, writable program msghdr.
unsafe fn recv_msg(fd: c_int, v: &View, m: &mut msghdr, flags: c_int) -> ssize_t {
    let saved = sock::errno();
    let control = (m.msg_control, m.msg_controllen);
    let (iov, iovlen) = (m.msg_iov as *const iovec, m.msg_iovlen);
    // SAFETY: the message's buffers (contract).
    match catch("recvmsg", || unsafe {
        udp::recv_framed(fd, v, iov, iovlen, control, flags)
    }) {
        Some(Ok(r)) => {
            if !m.msg_name.is_null() {
                let mut len = m.msg_namelen;
                // SAFETY: the message's name buffer of msg_namelen bytes.
                unsafe { write_addr(m.msg_name.cast(), &mut len, r.from) };
                m.msg_namelen = len;
            }
            m.msg_flags = r.flags;
            m.msg_controllen = r.controllen;
            set_errno(saved);
            r.len as ssize_t
        }
        Some(Err(e)) => fail(e),
        None => fail(libc::EIO),
    }
}

/// Received one by one: the first as the program asked, the rest only if already waiting
/// (MSG_WAITFORONE semantics; `timeout` is not used).
///
/// # Safety
/// The recvmmsg(2) contract.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn recvmmsg(
    fd: c_int,
    vec: *mut mmsghdr,
    vlen: c_uint,
    flags: c_int,
    timeout: *mut libc::timespec,
) -> c_int {
    let real_call = || {
        // SAFETY: the program's arguments, to the real function.
        real::recvmmsg().map_or(-1, |f| unsafe { f(fd, vec, vlen, flags, timeout) })
    };
    let Some((v, _g)) = framed(fd) else {
        return real_call();
    };
    if vec.is_null() {
        return real_call();
    }
    let mut done = 0u32;
    for i in 0..vlen.min(1024) {
        let f = if i == 0 {
            flags & !libc::MSG_WAITFORONE
        } else {
            (flags & !libc::MSG_WAITFORONE) | libc::MSG_DONTWAIT
        };
        // SAFETY: vec holds vlen messages (contract).
        let mm = unsafe { &mut *vec.add(i as usize) };
        // SAFETY: one program message.
        let n = unsafe { recv_msg(fd, &v, &mut mm.msg_hdr, f) };
        if n < 0 {
            if done == 0 {
                return -1;
            }
            set_errno(0);
            break;
        }
        mm.msg_len = n as c_uint;
        done += 1;
    }
    done as c_int
}

/// # Safety
/// The write(2) contract.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn write(fd: c_int, buf: *const c_void, len: size_t) -> ssize_t {
    if let Some((v, _g)) = framed(fd)
        && let Some(r) = send_connected(fd, &v, buf, len, 0)
    {
        return r;
    }
    // SAFETY: the program's arguments, to the real function.
    real::write().map_or_else(|| fail(libc::ENOSYS), |f| unsafe { f(fd, buf, len) })
}

/// # Safety
/// The send(2) contract.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn send(fd: c_int, buf: *const c_void, len: size_t, flags: c_int) -> ssize_t {
    if let Some((v, _g)) = framed(fd)
        && let Some(r) = send_connected(fd, &v, buf, len, flags)
    {
        return r;
    }
    // SAFETY: the program's arguments, to the real function.
    real::send().map_or_else(|| fail(libc::ENOSYS), |f| unsafe { f(fd, buf, len, flags) })
}
