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

/// Runs a raw socket syscall the way glibc's wrapper does: a pthread cancellation point (the
/// thread's cancel type is asynchronous for the duration of the call, as glibc's
/// `SYSCALL_CANCEL` makes it), so marking a call changes nothing a program can observe.
fn cancellable(call: impl FnOnce() -> libc::c_long) -> libc::c_long {
    unsafe extern "C" {
        // glibc's (not a symbol we export); the libc crate does not declare it.
        fn pthread_setcanceltype(ty: c_int, old: *mut c_int) -> c_int;
    }
    /// glibc's PTHREAD_CANCEL_ASYNCHRONOUS.
    const ASYNCHRONOUS: c_int = 1;
    let mut old: c_int = 0;
    // SAFETY: on the calling thread; with cancellation pending and enabled it acts on it, as
    // entering glibc's wrapper would.
    unsafe { pthread_setcanceltype(ASYNCHRONOUS, &mut old) };
    let r = call();
    let e = errno();
    // SAFETY: as above; restores the program's cancel type.
    unsafe { pthread_setcanceltype(old, &mut old) };
    set_errno(e);
    r
}

/// sendmsg(2) of a message (the program's, or one we built), marked for the supervisor's
/// filter: the library decided about it (or it has no internet name to decide about).
///
/// # Safety
/// `m` is a valid message over readable buffers (or whatever the kernel will reject).
pub unsafe fn sendmsg_marked(fd: c_int, m: *const libc::msghdr, flags: c_int) -> libc::ssize_t {
    cancellable(|| {
        // SAFETY: the caller's message; the 4th argument is ignored by the kernel.
        unsafe {
            libc::syscall(
                libc::SYS_sendmsg,
                fd as libc::c_long,
                m,
                flags as libc::c_long,
                MARKER_ARG,
            )
        }
    }) as libc::ssize_t
}

/// sendmmsg(2) of the program's vector (its first `n` messages), marked likewise.
///
/// # Safety
/// `v` holds `n` valid messages (or whatever the kernel will reject).
pub unsafe fn sendmmsg_marked(
    fd: c_int,
    v: *mut libc::mmsghdr,
    n: libc::c_uint,
    flags: c_int,
) -> c_int {
    cancellable(|| {
        // SAFETY: the caller's vector; the 5th argument is ignored by the kernel.
        unsafe {
            libc::syscall(
                libc::SYS_sendmmsg,
                fd as libc::c_long,
                v,
                n as libc::c_long,
                flags as libc::c_long,
                MARKER_ARG,
            )
        }
    }) as c_int
}
