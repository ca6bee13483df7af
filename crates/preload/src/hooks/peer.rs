//! `getpeername`: a proxied socket reports the destination the program asked for, as long as
//! the kernel reports it connected to the proxy we connected it to. `getsockname` is not
//! hooked: the local address is real.

use libc::{c_int, sockaddr, socklen_t};

use super::{catch, entry_errno};
use crate::guard::Guard;
use crate::sock::set_errno;
use crate::{peers, real};
use chainsocks_core::sys;

/// # Safety
/// The getpeername(2) contract.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn getpeername(fd: c_int, addr: *mut sockaddr, len: *mut socklen_t) -> c_int {
    let Some(real) = real::getpeername() else {
        set_errno(libc::ENOSYS);
        return -1;
    };
    // SAFETY (both calls): the program's arguments, to the real function.
    let call_real = || unsafe { real(fd, addr, len) };
    if !peers::any() {
        return call_real();
    }
    let Some(_guard) = Guard::enter() else {
        return call_real();
    };
    let saved = entry_errno();
    // The kernel's answer first: no peer (never connected, disconnected, failed) is its error.
    let Ok(kernel) = sys::peer(fd) else {
        return call_real();
    };
    let Some(Some(asked)) = catch("getpeername", || peers::lookup(fd, kernel)) else {
        set_errno(saved);
        return call_real();
    };
    if addr.is_null() || len.is_null() {
        set_errno(libc::EFAULT);
        return -1;
    }
    let (st, full) = sys::to_sockaddr(&asked);
    // SAFETY: len is readable/writable; we copy at most *len bytes into addr (truncating, as
    // the kernel does) and report the full size.
    unsafe {
        let room = (*len as usize).min(full as usize);
        std::ptr::copy_nonoverlapping(
            (&st as *const libc::sockaddr_storage).cast::<u8>(),
            addr.cast::<u8>(),
            room,
        );
        *len = full;
    }
    set_errno(saved);
    0
}
