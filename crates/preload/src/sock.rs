//! The program's own connect, passed on: to the real function untouched, or — for an internet
//! destination we decided to let through (a direct rule, a UDP datagram the policy allows) —
//! with the program's address copied into a zero-padded buffer of the marker length, so that a
//! supervising seccomp filter (the launcher's) does not ask about it a second time.
//!
//! Must never: change what the kernel sees of the address (the copy is byte for byte, the
//! padding zero) or call a symbol the library exports through `libc::`.

use libc::{c_int, sockaddr, sockaddr_storage, socklen_t};

use chainsocks_core::sys::{MARKER_ADDRLEN, connect_raw};
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
