//! `setsockopt` / `getsockopt` of UDP segmentation offload (`UDP_SEGMENT`, `UDP_GRO`): refused
//! with ENOPROTOOPT on every AF_INET/AF_INET6 UDP socket of a process whose configuration
//! loaded, so QUIC stacks send one datagram per call — a segmented super-datagram cannot carry
//! one SOCKS5 header per segment. Everything else passes untouched.

use libc::{c_int, c_void, socklen_t};

use crate::sock::set_errno;
use crate::{real, state};

const SOL_UDP: c_int = 17;
const UDP_SEGMENT: c_int = 103;
const UDP_GRO: c_int = 104;

fn refused(level: c_int, opt: c_int) -> bool {
    level == SOL_UDP
        && (opt == UDP_SEGMENT || opt == UDP_GRO)
        && super::catch("setsockopt", || state::get().cfg.is_ok()).unwrap_or(true)
}

/// # Safety
/// The setsockopt(2) contract.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn setsockopt(
    fd: c_int,
    level: c_int,
    opt: c_int,
    val: *const c_void,
    len: socklen_t,
) -> c_int {
    if refused(level, opt) {
        set_errno(libc::ENOPROTOOPT);
        return -1;
    }
    // SAFETY: the program's arguments, to the real function.
    real::setsockopt().map_or_else(
        || {
            set_errno(libc::ENOSYS);
            -1
        },
        |f| unsafe { f(fd, level, opt, val, len) },
    )
}

/// # Safety
/// The getsockopt(2) contract.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn getsockopt(
    fd: c_int,
    level: c_int,
    opt: c_int,
    val: *mut c_void,
    len: *mut socklen_t,
) -> c_int {
    if refused(level, opt) {
        set_errno(libc::ENOPROTOOPT);
        return -1;
    }
    // SAFETY: the program's arguments, to the real function.
    real::getsockopt().map_or_else(
        || {
            set_errno(libc::ENOSYS);
            -1
        },
        |f| unsafe { f(fd, level, opt, val, len) },
    )
}
