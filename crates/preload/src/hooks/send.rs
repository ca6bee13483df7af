//! `sendto` / `sendmsg` with MSG_FASTOPEN on an unconnected TCP socket (a TCP Fast Open
//! client): proxy the connect, then send the data on the now-connected socket and return the
//! byte count as the kernel would. Everything else — connected sockets, UDP, unix — goes to
//! the real function untouched.

use libc::{c_int, c_void, msghdr, size_t, sockaddr, socklen_t, ssize_t};

use super::{Route, catch, entry_errno, note_bypass};
use crate::guard::Guard;
use crate::sock::{self, read_sockaddr, set_errno};
use crate::{dialer, real};

/// Connects `fd` through the chain for a Fast Open send to `dest`, or applies the UDP policy
/// to a datagram. `None`: not ours (the real function, untouched).
fn fastopen_connect(
    hook: &'static str,
    fd: c_int,
    flags: c_int,
    dest: Option<std::net::SocketAddr>,
) -> Option<Route> {
    let dest = dest?;
    match sock::getsockopt_int(fd, libc::SOL_SOCKET, libc::SO_TYPE) {
        // A datagram with an address: untouched unless the policy refuses it.
        Ok(libc::SOCK_DGRAM) => {
            return match catch(hook, || dialer::udp(dest, hook)) {
                Some(Route::Real(_)) => None,
                Some(r) => Some(r),
                None => Some(Route::Done(Err(chainsocks_core::Error::Internal("panic")))),
            };
        }
        Ok(libc::SOCK_STREAM) if flags & libc::MSG_FASTOPEN != 0 && !sock::is_connected(fd) => {}
        _ => return None,
    }
    Some(
        catch(hook, || dialer::connect(fd, Some(dest)))
            .unwrap_or(Route::Done(Err(chainsocks_core::Error::Internal("panic")))),
    )
}

/// The result of the send that follows a proxied connect.
fn after_connect(
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
    let Some(_guard) = Guard::enter() else {
        return call_real();
    };
    let saved = entry_errno();
    // SAFETY: addr points to addrlen readable bytes (contract).
    let dest = unsafe { read_sockaddr(addr, addrlen) };
    let Some(route) = fastopen_connect("sendto", fd, flags, dest) else {
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
    after_connect(route, saved, "sendto", send, call_real)
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
    let Some(_guard) = Guard::enter() else {
        return call_real();
    };
    let saved = entry_errno();
    // SAFETY: msg is readable (contract); its name holds namelen bytes.
    let Some(m) = (unsafe { msg.as_ref() }) else {
        return call_real();
    };
    let dest = unsafe { read_sockaddr(m.msg_name as *const sockaddr, m.msg_namelen) };
    let Some(route) = fastopen_connect("sendmsg", fd, flags, dest) else {
        return call_real();
    };
    let mut plain: msghdr = *m;
    plain.msg_name = std::ptr::null_mut();
    plain.msg_namelen = 0;
    // SAFETY: the program's message without its address, on a connected socket.
    let send = || unsafe { real(fd, &plain, flags & !libc::MSG_FASTOPEN) };
    after_connect(route, saved, "sendmsg", send, call_real)
}
