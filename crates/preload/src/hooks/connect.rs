//! `connect` (and glibc's exported alias `__connect`): every AF_INET/AF_INET6 connect goes
//! through the shared dialer ([`chainsocks_core::connect`]).

use libc::{c_int, sockaddr, socklen_t};

use super::{Route, entry_errno, finish, run, too_deep};
use crate::guard::Guard;
use crate::sock::{connect_marked, read_sockaddr, set_errno};
use crate::{real, state};

/// The hook body shared by `connect` and `__connect`.
///
/// # Safety
/// The connect(2) contract: `addr` points to `len` readable bytes.
unsafe fn hooked_connect(fd: c_int, addr: *const sockaddr, len: socklen_t) -> c_int {
    let Some(real) = real::connect() else {
        set_errno(libc::ENOSYS);
        return -1;
    };
    // SAFETY: connect(2) contract.
    let Some(dest) = (unsafe { read_sockaddr(addr, len) }) else {
        // A UDP socket disconnected (AF_UNSPEC) forgets its connected target.
        // SAFETY: connect(2) contract.
        if crate::udp::ANY.load(std::sync::atomic::Ordering::Relaxed)
            && unsafe { chainsocks_core::sys::sockaddr_family(addr, len) } == Some(libc::AF_UNSPEC)
        {
            crate::udp::disconnected(fd);
        }
        // Not an internet address we can read (unix, AF_UNSPEC, or shorter than the kernel
        // accepts): the kernel's business.
        // SAFETY: the program's own arguments, to the real function.
        return unsafe { real(fd, addr, len) };
    };
    let Some(_guard) = Guard::enter() else {
        return finish(too_deep(), 0, "connect", |_| -1);
    };
    let saved = entry_errno();
    let route: Route = run("connect", || {
        chainsocks_core::connect::connect(state::get(), fd, dest)
    });
    finish(route, saved, "connect", |marked| {
        if marked {
            // SAFETY: a complete address of `len` readable bytes (we parsed it).
            unsafe { connect_marked(fd, addr, len) }
        } else {
            // SAFETY: the program's own arguments, to the real function.
            unsafe { real(fd, addr, len) }
        }
    })
}

/// # Safety
/// The connect(2) contract: `addr` points to `len` readable bytes.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn connect(fd: c_int, addr: *const sockaddr, len: socklen_t) -> c_int {
    // SAFETY: same contract.
    unsafe { hooked_connect(fd, addr, len) }
}

/// glibc exports `connect` also as `__connect`; a program can bind to it directly.
///
/// # Safety
/// The connect(2) contract.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn __connect(fd: c_int, addr: *const sockaddr, len: socklen_t) -> c_int {
    // SAFETY: same contract.
    unsafe { hooked_connect(fd, addr, len) }
}
