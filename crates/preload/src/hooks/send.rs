//! `sendto` / `sendmsg` / `sendmmsg`.
//!
//! - On a UDP socket, with an address: the UDP route of the shared dialer — a datagram for a
//!   proxied destination is framed and sent to the socket's association relay (made on the
//!   first one), a direct one goes untouched (or to its dnat / real address), a refused one
//!   fails (EACCES for block rules and the proxy-only policy, ENETUNREACH where no proxy can
//!   carry it). `sendmmsg` handles every message and stops at the first refused one (the
//!   kernel's partial-count semantics).
//! - On a UDP socket connected through an association, without an address: framed to the
//!   connected destination.
//! - With MSG_FASTOPEN on an unconnected TCP socket (a TCP Fast Open client): the connect is
//!   proxied, then the data is sent on the now-connected socket and the byte count returned as
//!   the kernel would.
//!
//! Everything else — connected TCP sockets, unix, raw — goes to the real function untouched.

use std::net::SocketAddr;

use chainsocks_core::Error;
use chainsocks_core::sys;
use libc::{c_int, c_uint, c_void, iovec, mmsghdr, msghdr, size_t, sockaddr, socklen_t, ssize_t};

use super::{Route, catch, entry_errno, note_bypass};
use crate::guard::Guard;
use crate::sock::{read_sockaddr, sendmmsg_marked, sendmsg_marked, set_errno};
use crate::udp::{self, Send};
use crate::{real, state};

/// What a send does. `None`: not ours (the real function, untouched).
#[allow(clippy::large_enum_variant)] // one per call, on the stack, never stored
enum Plan {
    /// A TCP Fast Open connect was made (or failed): send on the connected socket.
    Tcp(Route),
    /// A UDP datagram.
    Udp(Send),
}

fn decide(hook: &'static str, fd: c_int, flags: c_int, dest: Option<SocketAddr>) -> Option<Plan> {
    let dest = dest?;
    match sys::getsockopt_int(fd, libc::SOL_SOCKET, libc::SO_TYPE) {
        Ok(libc::SOCK_DGRAM) => Some(Plan::Udp(
            catch(hook, || udp::prepare_send(fd, dest, hook))
                .unwrap_or(Send::Fail(Error::Internal("panic"))),
        )),
        Ok(libc::SOCK_STREAM)
            if flags & libc::MSG_FASTOPEN != 0 && sys::peer(fd) == Err(libc::ENOTCONN) =>
        {
            Some(Plan::Tcp(
                catch(hook, || {
                    chainsocks_core::connect::connect(state::get(), fd, dest)
                })
                .unwrap_or(Route::Done(Err(Error::Internal("panic")))),
            ))
        }
        _ => None,
    }
}

/// What a send's name means to the kernel.
enum Name {
    /// No name (null, or a `sendmsg` name length of 0; AF_UNSPEC on an AF_INET6 UDP socket):
    /// the connected peer.
    Peer,
    To(SocketAddr),
    /// Something the kernel refuses or reads without us (unix, a short address): untouched.
    Other,
}

/// The name of a send as the kernel reads it, with its AF_UNSPEC compatibility case on UDP
/// sockets (an AF_INET socket sends to a 16-byte AF_UNSPEC address like to AF_INET).
///
/// # Safety
/// `addr` is null or points to `len` readable bytes.
unsafe fn name_of(fd: c_int, addr: *const sockaddr, len: socklen_t, sendto: bool) -> Name {
    if addr.is_null() || (!sendto && len == 0) {
        return Name::Peer;
    }
    // SAFETY: the contract.
    if let Some(d) = unsafe { read_sockaddr(addr, len) } {
        return Name::To(d);
    }
    // SAFETY: the contract.
    if unsafe { sys::sockaddr_family(addr, len) } != Some(libc::AF_UNSPEC)
        || sys::getsockopt_int(fd, libc::SOL_SOCKET, libc::SO_TYPE) != Ok(libc::SOCK_DGRAM)
    {
        return Name::Other;
    }
    let Ok(domain) = sys::getsockopt_int(fd, libc::SOL_SOCKET, libc::SO_DOMAIN) else {
        return Name::Other;
    };
    // SAFETY: `len` readable bytes (the kernel reads at most 128).
    let b = unsafe { std::slice::from_raw_parts(addr.cast::<u8>(), (len as usize).min(128)) };
    match sys::datagram_to(domain, Some(b)) {
        sys::DgramTo::To(d) => Name::To(d),
        sys::DgramTo::Peer => Name::Peer,
        sys::DgramTo::Refused => Name::Other,
    }
}

fn fail(e: c_int) -> ssize_t {
    set_errno(e);
    -1
}

/// Sends one message (the program's iovecs and control) as `plan` says.
///
/// # Safety
/// `m` is the program's valid message.
unsafe fn send_planned(
    hook: &str,
    fd: c_int,
    plan: Plan,
    m: &msghdr,
    flags: c_int,
    saved: c_int,
) -> ssize_t {
    let call = |m: &msghdr, flags: c_int| {
        // SAFETY: a message over the program's buffers.
        unsafe { sendmsg_marked(fd, m, flags) }
    };
    match plan {
        Plan::Tcp(Route::Real(why)) => {
            note_bypass(hook, why);
            set_errno(saved);
            call(m, flags)
        }
        Plan::Tcp(Route::Done(Err(e))) | Plan::Udp(Send::Fail(e)) => fail(e.errno()),
        Plan::Tcp(Route::Done(Ok(_))) => {
            let mut plain = *m;
            plain.msg_name = std::ptr::null_mut();
            plain.msg_namelen = 0;
            set_errno(saved);
            call(&plain, flags & !libc::MSG_FASTOPEN)
        }
        Plan::Udp(Send::Real) => {
            set_errno(saved);
            call(m, flags)
        }
        Plan::Udp(Send::RealTo(a)) => {
            let (st, len) = sys::to_sockaddr(&a);
            let mut to = *m;
            to.msg_name = &st as *const libc::sockaddr_storage as *mut c_void;
            to.msg_namelen = len;
            set_errno(saved);
            call(&to, flags)
        }
        Plan::Udp(Send::Framed { view, hdr, len }) => {
            // SAFETY: the program's message buffers.
            let r = catch(hook, || unsafe {
                udp::send_framed(
                    fd,
                    &view,
                    hdr.get(..len).unwrap_or(&[]),
                    m.msg_iov,
                    m.msg_iovlen,
                    (m.msg_control, m.msg_controllen),
                    flags,
                )
            });
            match r {
                Some(Ok(n)) => {
                    set_errno(saved);
                    n as ssize_t
                }
                Some(Err(e)) => fail(e),
                None => fail(libc::EIO),
            }
        }
    }
}

/// A send without an address on a socket connected through an association.
///
/// # Safety
/// `m` is the program's valid message.
unsafe fn send_connected(fd: c_int, m: &msghdr, flags: c_int) -> Option<ssize_t> {
    let (view, _g) = super::io::framed(fd)?;
    let control = (m.msg_control, m.msg_controllen);
    // SAFETY: the program's message (contract).
    unsafe { super::io::send_connected_iov(fd, &view, m.msg_iov, m.msg_iovlen, control, flags) }
}

/// A refusal when this thread is too deep in our hooks and the call has an address.
fn too_deep() -> ssize_t {
    fail(libc::EAGAIN)
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
        return fail(libc::ENOSYS);
    };
    // SAFETY (all uses): the program's arguments, to the real function.
    let call_real = || unsafe { real(fd, buf, len, flags, addr, addrlen) };
    let mut iov = iovec {
        iov_base: buf as *mut c_void,
        iov_len: len,
    };
    // SAFETY: all-zero is a valid msghdr.
    let mut m: msghdr = unsafe { std::mem::zeroed() };
    m.msg_iov = &mut iov;
    m.msg_iovlen = 1;
    // SAFETY: addr points to addrlen readable bytes (contract).
    let dest = match unsafe { name_of(fd, addr, addrlen, true) } {
        Name::To(d) => d,
        Name::Peer => {
            // SAFETY: one program buffer.
            if let Some(r) = unsafe { send_connected(fd, &m, flags) } {
                return r;
            }
            return call_real();
        }
        Name::Other => return call_real(),
    };
    let Some(_guard) = Guard::enter() else {
        return too_deep();
    };
    let saved = entry_errno();
    let Some(plan) = decide("sendto", fd, flags, Some(dest)) else {
        return call_real();
    };
    m.msg_name = addr as *mut c_void;
    m.msg_namelen = addrlen;
    // SAFETY: a message over the program's buffer and address.
    unsafe { send_planned("sendto", fd, plan, &m, flags, saved) }
}

/// # Safety
/// The sendmsg(2) contract.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn sendmsg(fd: c_int, msg: *const msghdr, flags: c_int) -> ssize_t {
    // SAFETY (all uses): the program's arguments, to the kernel as libc's sendmsg would pass
    // them, marked: nothing here is an internet name we would route (the supervisor's filter
    // would otherwise ask about every sendmsg, unix sockets included).
    let call_real = || unsafe { sendmsg_marked(fd, msg, flags) };
    // SAFETY: msg is readable (contract); its name holds namelen bytes.
    let Some(m) = (unsafe { msg.as_ref() }) else {
        return call_real();
    };
    let dest = match unsafe { name_of(fd, m.msg_name as *const sockaddr, m.msg_namelen, false) } {
        Name::To(d) => d,
        Name::Peer => {
            // SAFETY: the program's message.
            if let Some(r) = unsafe { send_connected(fd, m, flags) } {
                return r;
            }
            return call_real();
        }
        Name::Other => return call_real(),
    };
    let Some(_guard) = Guard::enter() else {
        return too_deep();
    };
    let saved = entry_errno();
    let Some(plan) = decide("sendmsg", fd, flags, Some(dest)) else {
        return call_real();
    };
    // SAFETY: the program's message.
    unsafe { send_planned("sendmsg", fd, plan, m, flags, saved) }
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
    // SAFETY (all uses): the program's arguments (or a prefix of its vector), to the kernel,
    // marked as for sendmsg: every name in them was decided on (or is not ours).
    let call_real = |n: c_uint| unsafe { sendmmsg_marked(fd, msgvec, n, flags) };
    if msgvec.is_null() || vlen == 0 {
        return call_real(vlen);
    }
    let Some(_guard) = Guard::enter() else {
        return too_deep() as c_int;
    };
    let saved = entry_errno();
    // The kernel sends at most UIO_MAXIOV messages per call.
    let n = vlen.min(1024);
    // The first message we must handle ourselves; the ones before it go to the kernel at once.
    let mut first = None;
    for i in 0..n {
        // SAFETY: msgvec holds vlen messages (contract).
        let m = unsafe { &(*msgvec.add(i as usize)).msg_hdr };
        // SAFETY: each name holds namelen bytes (contract).
        let name = unsafe { name_of(fd, m.msg_name as *const sockaddr, m.msg_namelen, false) };
        let plan = match name {
            Name::To(d) => decide("sendmmsg", fd, flags, Some(d)),
            // No address on a socket connected through an association: framed.
            Name::Peer if udp::lookup(fd).is_some() => {
                Some(Plan::Udp(Send::Fail(Error::Internal("connected"))))
            }
            Name::Peer | Name::Other => None,
        };
        match plan {
            None | Some(Plan::Udp(Send::Real)) => {}
            Some(Plan::Tcp(Route::Done(Ok(_)))) => {
                // A proxied Fast Open connect (first message): the messages then go on the
                // connected stream (TCP ignores their names without MSG_FASTOPEN).
                set_errno(saved);
                // SAFETY: the program's vector.
                return unsafe { sendmmsg_marked(fd, msgvec, vlen, flags & !libc::MSG_FASTOPEN) };
            }
            Some(p) => {
                first = Some((i, p));
                break;
            }
        }
    }
    let Some((start, mut plan)) = first else {
        set_errno(saved);
        return call_real(vlen);
    };
    if start > 0 {
        let r = call_real(start);
        if r < start as c_int {
            return r;
        }
    }
    let mut done = start;
    for k in start..n {
        // SAFETY: msgvec holds vlen messages (contract).
        let mm = unsafe { &mut *msgvec.add(k as usize) };
        let m = &mm.msg_hdr;
        if k > start {
            // SAFETY: each name holds namelen bytes (contract).
            let name = unsafe { name_of(fd, m.msg_name as *const sockaddr, m.msg_namelen, false) };
            plan = match name {
                Name::To(d) => decide("sendmmsg", fd, flags, Some(d)),
                _ => None,
            }
            .unwrap_or(Plan::Udp(Send::Fail(Error::Internal("connected"))));
        }
        let r = match plan {
            // SAFETY: the program's message, on a socket connected through an association
            // (or a plain one: the kernel).
            Plan::Udp(Send::Fail(Error::Internal("connected"))) => unsafe {
                send_connected(fd, m, flags).unwrap_or_else(|| sendmsg_marked(fd, m, flags))
            },
            // SAFETY: the program's message.
            p => unsafe { send_planned("sendmmsg", fd, p, m, flags, saved) },
        };
        plan = Plan::Udp(Send::Real);
        if r < 0 {
            return if done == 0 { -1 } else { done as c_int };
        }
        mm.msg_len = r as c_uint;
        done += 1;
    }
    set_errno(saved);
    done as c_int
}
