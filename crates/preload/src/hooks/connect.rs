//! `connect`: every AF_INET/AF_INET6 stream connect goes through the chain.

use libc::{c_int, sockaddr, socklen_t};

use super::{Route, entry_errno, finish, run};
use crate::guard::Guard;
use crate::sock::{read_sockaddr, set_errno};
use crate::{dialer, real};

/// # Safety
/// The connect(2) contract: `addr` points to `len` readable bytes.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn connect(fd: c_int, addr: *const sockaddr, len: socklen_t) -> c_int {
    let Some(real) = real::connect() else {
        set_errno(libc::ENOSYS);
        return -1;
    };
    let Some(_guard) = Guard::enter() else {
        // SAFETY: the program's own arguments, to the real function.
        return unsafe { real(fd, addr, len) };
    };
    let saved = entry_errno();
    // SAFETY: connect(2) contract.
    let dest = unsafe { read_sockaddr(addr, len) };
    let route: Route = run("connect", || dialer::connect(fd, dest));
    // SAFETY: the program's own arguments, to the real function.
    finish(route, saved, "connect", || unsafe { real(fd, addr, len) })
}
