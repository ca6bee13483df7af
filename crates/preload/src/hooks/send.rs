//! `sendto` / `sendmsg` / `sendmmsg` with an address.
//!
//! - On a UDP socket: the datagram policy of the shared dialer (a fake address is refused, and
//!   under `proxy-only` every non-loopback destination); `sendmmsg` checks every message and
//!   sends those before the first refused one (the kernel's own partial-count semantics).
//! - With MSG_FASTOPEN on an unconnected TCP socket (a TCP Fast Open client): the connect is
//!   proxied, then the data is sent on the now-connected socket and the byte count returned as
//!   the kernel would.
//!
//! Everything else — connected sockets, unix, no address — goes to the real function untouched.

use std::net::SocketAddr;

use chainsocks_core::Error;
use chainsocks_core::sys;
use libc::{c_int, c_uint, c_void, mmsghdr, msghdr, size_t, sockaddr, socklen_t, ssize_t};

use super::{Route, catch, entry_errno, note_bypass};
use crate::guard::Guard;
use crate::sock::{read_sockaddr, set_errno};
use crate::{real, state};

/// What a send with this destination does. `None`: not ours (the real function, untouched).
fn decide(hook: &'static str, fd: c_int, flags: c_int, dest: Option<SocketAddr>) -> Option<Route> {
    let dest = dest?;
    let panicked = || Route::Done(Err(Error::Internal("panic")));
    match sys::getsockopt_int(fd, libc::SOL_SOCKET, libc::SO_TYPE) {
        Ok(libc::SOCK_DGRAM) => {
            match catch(hook, || {
                chainsocks_core::connect::udp(state::get(), dest, hook)
            }) {
                Some(Route::Real(_)) => None,
                Some(r) => Some(r),
                None => Some(panicked()),
            }
        }
        Ok(libc::SOCK_STREAM)
            if flags & libc::MSG_FASTOPEN != 0 && sys::peer(fd) == Err(libc::ENOTCONN) =>
        {
            Some(
                catch(hook, || {
                    chainsocks_core::connect::connect(state::get(), fd, dest)
                })
                .unwrap_or_else(panicked),
            )
        }
        _ => None,
    }
}

/// The result of the send that follows a decision.
fn after(
    route: Route,
    saved: c_int,
    hook: &str,
    send: impl FnOnce() -> ssize_t,
    real: impl FnOnce() -> ssize_t,
) -> ssize_t {
    match route {
        Route::Real(why) => {
            note_bypass(hook, why);
            set_errno(saved);
            real()
        }
        Route::Done(Err(e)) => {
            set_errno(e.errno());
            -1
        }
        Route::Done(Ok(_)) => {
            set_errno(saved);
            send()
        }
    }
}

/// A refusal when this thread is too deep in our hooks and the call has an address.
fn too_deep() -> ssize_t {
    set_errno(libc::EAGAIN);
    -1
}

/// # Safety
/// The sendto(2) contract.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn sendto(
    fd: c_int,
    buf: *const c_void,
    len: size_t,
    flags: c_int,
    addr: *const sockaddr,
    addrlen: socklen_t,
) -> ssize_t {
    let Some(real) = real::sendto() else {
        set_errno(libc::ENOSYS);
        return -1;
    };
    // SAFETY (all uses): the program's arguments, to the real function.
    let call_real = || unsafe { real(fd, buf, len, flags, addr, addrlen) };
    // SAFETY: addr points to addrlen readable bytes (contract).
    let Some(dest) = (unsafe { read_sockaddr(addr, addrlen) }) else {
        return call_real();
    };
    let Some(_guard) = Guard::enter() else {
        return too_deep();
    };
    let saved = entry_errno();
    let Some(route) = decide("sendto", fd, flags, Some(dest)) else {
        return call_real();
    };
    // SAFETY: the program's buffer, now on a connected socket (no address).
    let send = || unsafe {
        real(
            fd,
            buf,
            len,
            flags & !libc::MSG_FASTOPEN,
            std::ptr::null(),
            0,
        )
    };
    after(route, saved, "sendto", send, call_real)
}

/// # Safety
/// The sendmsg(2) contract.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn sendmsg(fd: c_int, msg: *const msghdr, flags: c_int) -> ssize_t {
    let Some(real) = real::sendmsg() else {
        set_errno(libc::ENOSYS);
        return -1;
    };
    // SAFETY (all uses): the program's arguments, to the real function.
    let call_real = || unsafe { real(fd, msg, flags) };
    // SAFETY: msg is readable (contract); its name holds namelen bytes.
    let Some(m) = (unsafe { msg.as_ref() }) else {
        return call_real();
    };
    let Some(dest) = (unsafe { read_sockaddr(m.msg_name as *const sockaddr, m.msg_namelen) })
    else {
        return call_real();
    };
    let Some(_guard) = Guard::enter() else {
        return too_deep();
    };
    let saved = entry_errno();
    let Some(route) = decide("sendmsg", fd, flags, Some(dest)) else {
        return call_real();
    };
    let mut plain: msghdr = *m;
    plain.msg_name = std::ptr::null_mut();
    plain.msg_namelen = 0;
    // SAFETY: the program's message without its address, on a connected socket.
    let send = || unsafe { real(fd, &plain, flags & !libc::MSG_FASTOPEN) };
    after(route, saved, "sendmsg", send, call_real)
}

/// # Safety
/// The sendmmsg(2) contract: `msgvec` holds `vlen` readable messages.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn sendmmsg(
    fd: c_int,
    msgvec: *mut mmsghdr,
    vlen: c_uint,
    flags: c_int,
) -> c_int {
    let Some(real) = real::sendmmsg() else {
        set_errno(libc::ENOSYS);
        return -1;
    };
    // SAFETY (all uses): the program's arguments (or a prefix of its vector), to the real one.
    let call_real = |n: c_uint| unsafe { real(fd, msgvec, n, flags) };
    if msgvec.is_null() || vlen == 0 {
        return call_real(vlen);
    }
    let Some(_guard) = Guard::enter() else {
        return too_deep() as c_int;
    };
    let saved = entry_errno();
    // The kernel sends at most UIO_MAXIOV messages per call.
    let n = vlen.min(1024);
    for i in 0..n {
        // SAFETY: msgvec holds vlen messages (contract).
        let m = unsafe { &(*msgvec.add(i as usize)).msg_hdr };
        // SAFETY: each name holds namelen bytes (contract).
        let dest = unsafe { read_sockaddr(m.msg_name as *const sockaddr, m.msg_namelen) };
        let Some(route) = decide("sendmmsg", fd, flags, dest) else {
            continue;
        };
        match route {
            Route::Real(why) => note_bypass("sendmmsg", why),
            // A proxied Fast Open connect (first message): the messages then go on the
            // connected stream (TCP ignores their names without MSG_FASTOPEN).
            Route::Done(Ok(_)) => {
                set_errno(saved);
                // SAFETY: the program's vector.
                return unsafe { real(fd, msgvec, vlen, flags & !libc::MSG_FASTOPEN) };
            }
            Route::Done(Err(e)) => {
                if i == 0 {
                    set_errno(e.errno());
                    return -1;
                }
                // Send what comes before the refused message: the count tells the program.
                set_errno(saved);
                return call_real(i);
            }
        }
    }
    set_errno(saved);
    call_real(vlen)
}
