//! The program's own connect, passed on: to the real function untouched, or — for an internet
//! destination we decided to let through (a direct rule, a UDP datagram the policy allows) —
//! with the program's address copied into a zero-padded buffer of the marker length, so that a
//! supervising seccomp filter (the launcher's) does not ask about it a second time. Likewise a
//! datagram we routed ourselves: `sendmsg` with the marker in a register it does not use.
//!
//! Must never: change what the kernel sees of the address (the copy is byte for byte, the
//! padding zero) or call a symbol the library exports through `libc::`.

use libc::{c_int, sockaddr, sockaddr_storage, socklen_t};

use chainsocks_core::sys::{MARKER_ADDRLEN, MARKER_ARG, connect_raw};
pub use chainsocks_core::sys::{errno, read_sockaddr, set_errno};

/// connect(2) of `fd` to the program's `addr` of `len` bytes, marked.
///
/// # Safety
/// `addr` points to `len` readable bytes (a complete AF_INET/AF_INET6 address we parsed).
pub unsafe fn connect_marked(fd: c_int, addr: *const sockaddr, len: socklen_t) -> c_int {
    // SAFETY: all-zero is a valid sockaddr_storage (128 bytes).
    let mut st: sockaddr_storage = unsafe { std::mem::zeroed() };
    let n = (len as usize).min(size_of::<sockaddr_storage>());
    // SAFETY: `n` readable bytes at addr (contract), 128 writable in st.
    unsafe {
        std::ptr::copy_nonoverlapping(
            addr.cast::<u8>(),
            (&mut st as *mut sockaddr_storage).cast::<u8>(),
            n,
        )
    };
    // SAFETY: st is a complete, zero-padded address buffer of 128 bytes.
    unsafe { connect_raw(fd, (&st as *const sockaddr_storage).cast(), MARKER_ADDRLEN) }
}

/// sendmsg(2) of the program's message (its name, if any, one we decided is sent to as it is),
/// marked for the supervisor's filter.
///
/// # Safety
/// `m` is a valid message over readable buffers.
pub unsafe fn sendmsg_marked(fd: c_int, m: *const libc::msghdr, flags: c_int) -> libc::ssize_t {
    // SAFETY: the caller's message; the 4th argument is ignored by the kernel.
    unsafe {
        libc::syscall(
            libc::SYS_sendmsg,
            fd as libc::c_long,
            m,
            flags as libc::c_long,
            MARKER_ARG,
        ) as libc::ssize_t
    }
}
