//! `close`, `close_range`, `closefrom`, `dup2`, `dup3`: when an fd that has a UDP association
//! goes away (closed, or replaced by a dup), its association and control connection go too;
//! when the program closes one of our control fds (closefrom in a daemon), the association is
//! forgotten (the next datagram makes a new one).
//!
//! Hot: a process that never made an association pays one atomic load.
//! Must never: change what the real call does or returns.

use std::sync::atomic::Ordering;

use libc::{c_int, c_uint};

use crate::sock::set_errno;
use crate::{real, udp};

/// The highest fd the association table covers.
const TABLE_FDS: c_uint = 1 << 16;

fn forget_range(first: c_uint, last: c_uint) {
    if !udp::ANY.load(Ordering::Relaxed) {
        return;
    }
    let last = last.min(TABLE_FDS - 1);
    let mut fd = first;
    while fd <= last {
        udp::forget(fd as c_int);
        fd += 1;
    }
}

/// # Safety
/// The close(2) contract.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn close(fd: c_int) -> c_int {
    if udp::ANY.load(Ordering::Relaxed) {
        udp::forget(fd);
    }
    // SAFETY: the program's argument, to the real function.
    real::close().map_or_else(
        || {
            set_errno(libc::ENOSYS);
            -1
        },
        |f| unsafe { f(fd) },
    )
}

/// # Safety
/// The close_range(2) contract.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn close_range(first: c_uint, last: c_uint, flags: c_int) -> c_int {
    if flags & libc::CLOSE_RANGE_CLOEXEC as c_int == 0 {
        forget_range(first, last);
    }
    // SAFETY: the program's arguments, to the real function.
    real::close_range().map_or_else(
        || {
            set_errno(libc::ENOSYS);
            -1
        },
        |f| unsafe { f(first, last, flags) },
    )
}

/// # Safety
/// The closefrom(3) contract.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn closefrom(lowfd: c_int) {
    forget_range(lowfd.max(0) as c_uint, c_uint::MAX);
    if let Some(f) = real::closefrom() {
        // SAFETY: the program's argument, to the real function.
        unsafe { f(lowfd) }
    }
}

/// # Safety
/// The dup2(2) contract.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn dup2(old: c_int, new: c_int) -> c_int {
    if old != new && udp::ANY.load(Ordering::Relaxed) {
        udp::forget(new);
    }
    // SAFETY: the program's arguments, to the real function.
    real::dup2().map_or_else(
        || {
            set_errno(libc::ENOSYS);
            -1
        },
        |f| unsafe { f(old, new) },
    )
}

/// # Safety
/// The dup3(2) contract.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn dup3(old: c_int, new: c_int, flags: c_int) -> c_int {
    if old != new && udp::ANY.load(Ordering::Relaxed) {
        udp::forget(new);
    }
    // SAFETY: the program's arguments, to the real function.
    real::dup3().map_or_else(
        || {
            set_errno(libc::ENOSYS);
            -1
        },
        |f| unsafe { f(old, new, flags) },
    )
}
