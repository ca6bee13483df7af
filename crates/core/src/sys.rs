//! Raw socket syscalls for the chain dial, shared by the preloaded library and the launcher's
//! supervisor.
//!
//! Owns: every syscall the dialer makes on a socket (connect, poll, send, recv, socket options,
//! file status flags, close), each made with `libc::syscall(SYS_…)`, and the sockaddr ↔
//! [`SocketAddr`] conversions, including the preload's connect marker (`addrlen == 113`); and
//! the few others the library makes itself (fstat, stat, getpid, uname, mmap) as raw syscalls
//! too: each libc import is a symbol lookup at load in every process the library is preloaded
//! into.
//! Must never: call a libc symbol the preloaded library exports or may export (connect,
//! send*/recv*, read/write, close, getpeername, setsockopt…): that would re-enter our own hooks;
//! allocate; or raise SIGPIPE (every send uses MSG_NOSIGNAL). Every function is
//! async-signal-safe.

use std::mem::{size_of, zeroed};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};

use libc::{c_int, c_long, c_void, sockaddr_in, sockaddr_in6, sockaddr_storage, socklen_t};

/// The `addrlen` the preloaded library gives its own connects to a proxy: the kernel accepts
/// any length from the family's size up to 128 (the buffer is zero-padded), and the launcher's
/// seccomp filter lets exactly this length through without a notification. A signal, not a
/// boundary: any program may use it.
pub const MARKER_ADDRLEN: socklen_t = 113;

/// The value the library puts in an argument register `sendmsg` (the 4th) and `sendmmsg` (the
/// 5th) do not use, for the datagrams it has already routed itself: the kernel ignores it and
/// the supervisor's filter lets exactly these calls through without a notification (its own
/// `sendto`s carry [`MARKER_ADDRLEN`] instead). A signal, not a boundary.
pub const MARKER_ARG: c_long = 0x6373_6b73;

/// Where the kernel sends a datagram given the address of a `sendto` / `sendmsg` on a UDP
/// socket (`udp_sendmsg`, `udpv6_sendmsg`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DgramTo {
    /// No address: the connected peer (or ENOTCONN/EDESTADDRREQ).
    Peer,
    /// This destination.
    To(SocketAddr),
    /// The kernel refuses the address (EINVAL, EAFNOSUPPORT): nothing is sent.
    Refused,
}

/// [`DgramTo`] for `name` (None: no name — a null pointer, or a `sendmsg` name length of 0) on
/// a UDP socket of `domain`, exactly as the kernel reads it, including its compatibility
/// cases: on an AF_INET socket a 16-byte AF_UNSPEC address is sent to like an AF_INET one; on
/// an AF_INET6 socket AF_UNSPEC means no address, and an AF_INET address is sent to over IPv4.
pub fn datagram_to(domain: c_int, name: Option<&[u8]>) -> DgramTo {
    let Some(b) = name else {
        return DgramTo::Peer;
    };
    let family = match b {
        [x, y, ..] => c_int::from(u16::from_ne_bytes([*x, *y])),
        _ => return DgramTo::Refused,
    };
    let v4 = |b: &[u8]| match b {
        [_, _, p0, p1, a, b2, c, d, ..] if b.len() >= size_of::<sockaddr_in>() => {
            DgramTo::To(SocketAddr::V4(SocketAddrV4::new(
                Ipv4Addr::new(*a, *b2, *c, *d),
                u16::from_be_bytes([*p0, *p1]),
            )))
        }
        _ => DgramTo::Refused,
    };
    match (domain, family) {
        (libc::AF_INET, libc::AF_INET | libc::AF_UNSPEC) => v4(b),
        (libc::AF_INET6, libc::AF_INET) => v4(b),
        (libc::AF_INET6, libc::AF_UNSPEC) => DgramTo::Peer,
        (libc::AF_INET6, libc::AF_INET6) => {
            // SAFETY: `b` is readable for its length.
            match unsafe { read_sockaddr(b.as_ptr().cast(), b.len() as socklen_t) } {
                Some(a) => DgramTo::To(a),
                None => DgramTo::Refused,
            }
        }
        _ => DgramTo::Refused,
    }
}

/// The calling thread's errno.
pub fn errno() -> c_int {
    // SAFETY: __errno_location returns this thread's errno slot.
    unsafe { *libc::__errno_location() }
}

/// Sets the calling thread's errno.
pub fn set_errno(e: c_int) {
    // SAFETY: as above.
    unsafe { *libc::__errno_location() = e };
}

fn check(r: c_long) -> Result<usize, c_int> {
    if r < 0 { Err(errno()) } else { Ok(r as usize) }
}

/// Reads an AF_INET / AF_INET6 socket address of `len` bytes as the kernel would: AF_INET needs
/// 16 bytes; AF_INET6 needs 24 (RFC 2133 size, no scope id) and reads the scope id only when 28
/// are given. `None` for other families and for lengths the kernel rejects (EINVAL).
///
/// # Safety
/// `addr` must be null or point to at least `len` readable bytes.
pub unsafe fn read_sockaddr(addr: *const libc::sockaddr, len: socklen_t) -> Option<SocketAddr> {
    let len = len as usize;
    if addr.is_null() || len < size_of::<libc::sa_family_t>() {
        return None;
    }
    // SAFETY: the family field is readable (checked above); unaligned-safe reads throughout.
    let family = unsafe { std::ptr::addr_of!((*addr).sa_family).read_unaligned() };
    match family as c_int {
        libc::AF_INET if len >= size_of::<sockaddr_in>() => {
            // SAFETY: len covers a sockaddr_in.
            let a = unsafe { (addr as *const sockaddr_in).read_unaligned() };
            let ip = Ipv4Addr::from(u32::from_be(a.sin_addr.s_addr));
            Some(SocketAddr::V4(SocketAddrV4::new(
                ip,
                u16::from_be(a.sin_port),
            )))
        }
        libc::AF_INET6 if len >= SIN6_LEN_RFC2133 => {
            // SAFETY: at least 24 bytes are readable; copy them into a zeroed struct. The kernel
            // reads the scope id only from a complete 28-byte address.
            let mut a: sockaddr_in6 = unsafe { zeroed() };
            let n = if len >= size_of::<sockaddr_in6>() {
                size_of::<sockaddr_in6>()
            } else {
                SIN6_LEN_RFC2133
            };
            unsafe {
                std::ptr::copy_nonoverlapping(
                    addr as *const u8,
                    &mut a as *mut sockaddr_in6 as *mut u8,
                    n,
                )
            };
            let ip = Ipv6Addr::from(a.sin6_addr.s6_addr);
            Some(SocketAddr::V6(SocketAddrV6::new(
                ip,
                u16::from_be(a.sin6_port),
                u32::from_be(a.sin6_flowinfo),
                a.sin6_scope_id,
            )))
        }
        _ => None,
    }
}

/// The smallest AF_INET6 address the kernel accepts (no `sin6_scope_id`).
pub const SIN6_LEN_RFC2133: usize = 24;

/// The family field of a socket address (`None` for a null or too short one).
///
/// # Safety
/// `addr` must be null or point to at least `len` readable bytes.
pub unsafe fn sockaddr_family(addr: *const libc::sockaddr, len: socklen_t) -> Option<c_int> {
    if addr.is_null() || (len as usize) < size_of::<libc::sa_family_t>() {
        return None;
    }
    // SAFETY: the family field is readable.
    Some(unsafe { std::ptr::addr_of!((*addr).sa_family).read_unaligned() } as c_int)
}

/// A `sockaddr_storage` holding `sa`, and its length.
pub fn to_sockaddr(sa: &SocketAddr) -> (sockaddr_storage, socklen_t) {
    // SAFETY: all-zero is a valid sockaddr_storage.
    let mut st: sockaddr_storage = unsafe { zeroed() };
    let len = match sa {
        SocketAddr::V4(v4) => {
            // SAFETY: sockaddr_storage is large and aligned enough for sockaddr_in.
            let a = unsafe { &mut *(&mut st as *mut sockaddr_storage as *mut sockaddr_in) };
            a.sin_family = libc::AF_INET as libc::sa_family_t;
            a.sin_port = v4.port().to_be();
            a.sin_addr.s_addr = u32::from(*v4.ip()).to_be();
            size_of::<sockaddr_in>()
        }
        SocketAddr::V6(v6) => {
            // SAFETY: sockaddr_storage is large and aligned enough for sockaddr_in6.
            let a = unsafe { &mut *(&mut st as *mut sockaddr_storage as *mut sockaddr_in6) };
            a.sin6_family = libc::AF_INET6 as libc::sa_family_t;
            a.sin6_port = v6.port().to_be();
            a.sin6_flowinfo = v6.flowinfo().to_be();
            a.sin6_addr.s6_addr = v6.ip().octets();
            a.sin6_scope_id = v6.scope_id();
            size_of::<sockaddr_in6>()
        }
    };
    (st, len as socklen_t)
}

/// connect(2) of `fd` to `addr`. With `marked`, the address is passed with the marker length
/// ([`MARKER_ADDRLEN`]) so a supervising seccomp filter lets it through.
pub fn connect(fd: c_int, addr: &SocketAddr, marked: bool) -> Result<(), c_int> {
    let (st, len) = to_sockaddr(addr);
    let len = if marked { MARKER_ADDRLEN } else { len };
    // SAFETY: st is a zero-padded 128-byte sockaddr_storage, valid for any len ≤ 128.
    check(unsafe {
        libc::syscall(
            libc::SYS_connect,
            fd as c_long,
            &st as *const sockaddr_storage,
            len as c_long,
        )
    })
    .map(|_| ())
}

/// connect(2) with a raw address, exactly as the caller gave it.
///
/// # Safety
/// `addr` points to `len` readable bytes (or is whatever the kernel will reject).
pub unsafe fn connect_raw(fd: c_int, addr: *const libc::sockaddr, len: socklen_t) -> c_int {
    // SAFETY: the caller's contract; the kernel validates the rest.
    unsafe { libc::syscall(libc::SYS_connect, fd as c_long, addr, len as c_long) as c_int }
}

/// Undoes a connection (TCP and UDP support an AF_UNSPEC connect): the socket is back to
/// unconnected, as after a failed kernel connect.
pub fn disconnect(fd: c_int) {
    // SAFETY: zeroed storage with family AF_UNSPEC.
    let mut sa: libc::sockaddr = unsafe { zeroed() };
    sa.sa_family = libc::AF_UNSPEC as libc::sa_family_t;
    // SAFETY: a valid 16-byte sockaddr.
    unsafe {
        libc::syscall(
            libc::SYS_connect,
            fd as c_long,
            &sa as *const libc::sockaddr,
            size_of::<libc::sockaddr>() as c_long,
        )
    };
}

/// send(2) with MSG_NOSIGNAL added.
pub fn send(fd: c_int, buf: &[u8], flags: c_int) -> Result<usize, c_int> {
    // SAFETY: buf is readable for its length; no address.
    check(unsafe {
        libc::syscall(
            libc::SYS_sendto,
            fd as c_long,
            buf.as_ptr() as *const c_void,
            buf.len(),
            (flags | libc::MSG_NOSIGNAL) as c_long,
            std::ptr::null::<libc::sockaddr>(),
            0 as c_long,
        )
    })
}

/// recv(2).
pub fn recv(fd: c_int, buf: &mut [u8], flags: c_int) -> Result<usize, c_int> {
    // SAFETY: buf is writable for its length; no address.
    check(unsafe {
        libc::syscall(
            libc::SYS_recvfrom,
            fd as c_long,
            buf.as_mut_ptr() as *mut c_void,
            buf.len(),
            flags as c_long,
            std::ptr::null_mut::<libc::sockaddr>(),
            std::ptr::null_mut::<socklen_t>(),
        )
    })
}

/// write(2) of the whole buffer at once (one syscall; the count written).
pub fn write(fd: c_int, buf: &[u8]) -> Result<usize, c_int> {
    // SAFETY: buf is readable for its length.
    check(unsafe { libc::syscall(libc::SYS_write, fd as c_long, buf.as_ptr(), buf.len()) })
}

/// A new non-blocking, close-on-exec socket, moved to the lowest free fd ≥ `min_fd` (when
/// `min_fd` > 0; falls back to where it is if that fails).
pub fn socket(family: c_int, ty: c_int, min_fd: c_int) -> Result<c_int, c_int> {
    // SAFETY: plain socket(2).
    let fd = check(unsafe {
        libc::syscall(
            libc::SYS_socket,
            family as c_long,
            (ty | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC) as c_long,
            0 as c_long,
        )
    })? as c_int;
    if min_fd <= 0 || fd >= min_fd {
        return Ok(fd);
    }
    // SAFETY: duplicating our own fd.
    let high = unsafe {
        libc::syscall(
            libc::SYS_fcntl,
            fd as c_long,
            libc::F_DUPFD_CLOEXEC as c_long,
            min_fd as c_long,
        )
    };
    if high < 0 {
        return Ok(fd);
    }
    close(fd);
    Ok(high as c_int)
}

/// read(2) into `buf`; the count read (0 at the end).
pub fn read(fd: c_int, buf: &mut [u8]) -> Result<usize, c_int> {
    // SAFETY: buf is writable for its length.
    check(unsafe { libc::syscall(libc::SYS_read, fd as c_long, buf.as_mut_ptr(), buf.len()) })
}

/// close(2).
pub fn close(fd: c_int) {
    // SAFETY: closing an fd the caller owns.
    unsafe { libc::syscall(libc::SYS_close, fd as c_long) };
}

/// open(2) of a NUL-terminated path.
pub fn open(path: &std::ffi::CStr, flags: c_int, mode: libc::mode_t) -> Result<c_int, c_int> {
    // SAFETY: a NUL-terminated path.
    check(unsafe {
        libc::syscall(
            libc::SYS_openat,
            libc::AT_FDCWD as c_long,
            path.as_ptr(),
            flags as c_long,
            mode as c_long,
        )
    })
    .map(|fd| fd as c_int)
}

/// fstat(2).
pub fn fstat(fd: c_int) -> Result<libc::stat, c_int> {
    // SAFETY: all-zero bytes are a valid `stat`; the kernel fills it.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: st is writable.
    check(unsafe { libc::syscall(libc::SYS_fstat, fd as c_long, &mut st) })?;
    Ok(st)
}

/// The inode of the socket behind `fd` (what tells a socket from a later one on the same fd
/// number); `None` if `fd` is closed or not a socket.
pub fn socket_inode(fd: c_int) -> Option<u64> {
    let st = fstat(fd).ok()?;
    (st.st_mode & libc::S_IFMT == libc::S_IFSOCK).then_some(st.st_ino)
}

/// fstat(2) made with the `syscall` instruction itself, not libc's `syscall()`: for the
/// library's constructor, which runs in every process it is preloaded into, most of which never
/// call into libc's pages it would touch (a page fault at the first touch). With reading the
/// environment from the constructor's `envp` instead of `getenv`, 2.5-4 µs less per exec of
/// /bin/true on the benchmark VM (8-10 µs with a minimal environment, in which /bin/true itself
/// touches fewer of libc's pages). Elsewhere [`fstat`] does the same.
pub fn fstat_at_load(fd: c_int) -> Result<libc::stat, c_int> {
    #[cfg(all(target_arch = "x86_64", target_os = "linux"))]
    {
        // SAFETY: all-zero bytes are a valid `stat`; the kernel fills it.
        let mut st: libc::stat = unsafe { std::mem::zeroed() };
        let ret: c_long;
        // SAFETY: fstat(fd, &st): the x86-64 syscall convention (number and result in rax,
        // arguments in rdi and rsi; rcx and r11 clobbered); st is writable and, on x86-64,
        // glibc's `struct stat` is the kernel's.
        unsafe {
            std::arch::asm!(
                "syscall",
                inlateout("rax") libc::SYS_fstat => ret,
                in("rdi") fd as c_long,
                in("rsi") &mut st as *mut libc::stat,
                lateout("rcx") _,
                lateout("r11") _,
                options(nostack),
            );
        }
        if ret < 0 { Err(-ret as c_int) } else { Ok(st) }
    }
    #[cfg(not(all(target_arch = "x86_64", target_os = "linux")))]
    {
        fstat(fd)
    }
}

/// stat(2) of a NUL-terminated path (symbolic links followed).
pub fn stat(path: &std::ffi::CStr) -> Result<libc::stat, c_int> {
    // SAFETY: all-zero bytes are a valid `stat`; the kernel fills it.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: a NUL-terminated path and a writable stat.
    check(unsafe {
        libc::syscall(
            libc::SYS_newfstatat,
            libc::AT_FDCWD as c_long,
            path.as_ptr(),
            &mut st,
            0 as c_long,
        )
    })?;
    Ok(st)
}

/// getpid(2).
pub fn getpid() -> libc::pid_t {
    // SAFETY: no arguments.
    unsafe { libc::syscall(libc::SYS_getpid) as libc::pid_t }
}

/// getppid(2).
pub fn getppid() -> libc::pid_t {
    // SAFETY: no arguments.
    unsafe { libc::syscall(libc::SYS_getppid) as libc::pid_t }
}

/// The host name, as gethostname(3) reads it (uname(2)'s nodename).
pub fn hostname() -> Option<Vec<u8>> {
    // SAFETY: all-zero bytes are a valid `utsname`; the kernel fills it.
    let mut u: libc::utsname = unsafe { std::mem::zeroed() };
    // SAFETY: u is writable.
    check(unsafe { libc::syscall(libc::SYS_uname, &mut u) }).ok()?;
    let n = u
        .nodename
        .iter()
        .position(|&c| c == 0)
        .unwrap_or(u.nodename.len());
    Some(u.nodename.iter().take(n).map(|&c| c as u8).collect())
}

/// mmap(2) of `len` bytes at an address the kernel chooses.
///
/// # Safety
/// The mmap(2) contract: `fd` and `offset` name what may be mapped with `prot` and `flags`.
pub unsafe fn mmap(
    len: usize,
    prot: c_int,
    flags: c_int,
    fd: c_int,
    offset: libc::off_t,
) -> Result<*mut u8, c_int> {
    // SAFETY: the caller's contract; user-space addresses are never negative as c_long.
    let r = check(unsafe {
        libc::syscall(
            libc::SYS_mmap,
            std::ptr::null_mut::<u8>(),
            len,
            prot as c_long,
            flags as c_long,
            fd as c_long,
            offset,
        )
    })?;
    Ok(r as *mut u8)
}

/// Maps in (and, for shared memory, allocates) the pages of `words` for writing now, as
/// `madvise(MADV_POPULATE_WRITE)` does (Linux 5.14+; a no-op where the kernel lacks it): one
/// syscall instead of a write fault per page, each of which waits for that page's lock while
/// another thread faults it.
pub fn populate_write(words: &[std::sync::atomic::AtomicU64]) {
    const MADV_POPULATE_WRITE: c_long = 23;
    const PAGE: usize = 4096;
    let start = words.as_ptr() as usize;
    let end = start + std::mem::size_of_val(words);
    let first = start & !(PAGE - 1);
    let len = (end - first).div_ceil(PAGE) * PAGE;
    // SAFETY: madvise over pages that hold `words` (mapped, ours); it changes no contents.
    unsafe { libc::syscall(libc::SYS_madvise, first, len, MADV_POPULATE_WRITE) };
}

/// getsockopt(2) into `buf`; the length the kernel reported.
pub fn getsockopt(fd: c_int, level: c_int, opt: c_int, buf: &mut [u8]) -> Result<usize, c_int> {
    let mut len = buf.len() as socklen_t;
    // SAFETY: buf and len are valid out-parameters.
    check(unsafe {
        libc::syscall(
            libc::SYS_getsockopt,
            fd as c_long,
            level as c_long,
            opt as c_long,
            buf.as_mut_ptr(),
            &mut len as *mut socklen_t,
        )
    })?;
    Ok(len as usize)
}

/// Whether an AF_INET6 socket is IPV6_V6ONLY (false when it cannot be read).
pub fn v6only(fd: c_int) -> bool {
    getsockopt_int(fd, libc::IPPROTO_IPV6, libc::IPV6_V6ONLY) == Ok(1)
}

/// An int socket option, or the errno.
pub fn getsockopt_int(fd: c_int, level: c_int, opt: c_int) -> Result<c_int, c_int> {
    let mut b = [0u8; 4];
    getsockopt(fd, level, opt, &mut b)?;
    Ok(c_int::from_ne_bytes(b))
}

/// setsockopt(2) with the bytes given.
pub fn setsockopt(fd: c_int, level: c_int, opt: c_int, val: &[u8]) -> Result<(), c_int> {
    // SAFETY: val is readable for its length.
    check(unsafe {
        libc::syscall(
            libc::SYS_setsockopt,
            fd as c_long,
            level as c_long,
            opt as c_long,
            val.as_ptr(),
            val.len() as c_long,
        )
    })
    .map(|_| ())
}

pub fn setsockopt_int(fd: c_int, level: c_int, opt: c_int, v: c_int) -> Result<(), c_int> {
    setsockopt(fd, level, opt, &v.to_ne_bytes())
}

/// The socket's peer, if it has one (raw getpeername, never a hook).
pub fn peer(fd: c_int) -> Result<SocketAddr, c_int> {
    name_of(libc::SYS_getpeername, fd)
}

/// The socket's local address (raw getsockname).
pub fn local(fd: c_int) -> Result<SocketAddr, c_int> {
    name_of(libc::SYS_getsockname, fd)
}

/// getpeername / getsockname into our own storage.
fn name_of(nr: c_long, fd: c_int) -> Result<SocketAddr, c_int> {
    // SAFETY: zeroed storage and its length are valid out-parameters.
    let mut st: sockaddr_storage = unsafe { zeroed() };
    let mut len = size_of::<sockaddr_storage>() as socklen_t;
    check(unsafe {
        libc::syscall(
            nr,
            fd as c_long,
            &mut st as *mut sockaddr_storage,
            &mut len as *mut socklen_t,
        )
    })?;
    // SAFETY: the kernel wrote `len` bytes of an address into st.
    unsafe { read_sockaddr(&st as *const sockaddr_storage as *const libc::sockaddr, len) }
        .ok_or(libc::EAFNOSUPPORT)
}

/// fcntl(F_GETFL).
pub fn get_fl(fd: c_int) -> Result<c_int, c_int> {
    // SAFETY: F_GETFL takes no argument.
    check(unsafe { libc::syscall(libc::SYS_fcntl, fd as c_long, libc::F_GETFL as c_long) })
        .map(|f| f as c_int)
}

/// fcntl(F_SETFL).
pub fn set_fl(fd: c_int, flags: c_int) {
    // SAFETY: F_SETFL with an int argument.
    unsafe {
        libc::syscall(
            libc::SYS_fcntl,
            fd as c_long,
            libc::F_SETFL as c_long,
            flags as c_long,
        )
    };
}

/// ppoll(2) on `fds` for up to `timeout_ms` (< 0: forever), with `mask` as the signal mask
/// during the wait (`None`: unchanged). The number of ready fds.
pub fn poll(
    fds: &mut [libc::pollfd],
    timeout_ms: c_int,
    mask: Option<&KernelSigset>,
) -> Result<usize, c_int> {
    let ts = libc::timespec {
        tv_sec: (timeout_ms.max(0) / 1000) as libc::time_t,
        tv_nsec: ((timeout_ms.max(0) % 1000) as libc::c_long) * 1_000_000,
    };
    let tsp = if timeout_ms < 0 {
        std::ptr::null()
    } else {
        &ts as *const libc::timespec
    };
    let (mp, msize) = match mask {
        Some(m) => (m as *const KernelSigset, size_of::<KernelSigset>()),
        None => (std::ptr::null(), 0),
    };
    // SAFETY: fds is a valid array; ts and the mask live for the call.
    check(unsafe {
        libc::syscall(
            libc::SYS_ppoll,
            fds.as_mut_ptr(),
            fds.len() as c_long,
            tsp,
            mp,
            msize as c_long,
        )
    })
}

/// The kernel's signal set (64 signals, one bit each: signal n is bit n-1).
pub type KernelSigset = u64;

/// The bit of signal `sig` in a [`KernelSigset`].
pub const fn sigbit(sig: c_int) -> KernelSigset {
    1u64 << (sig - 1)
}

/// rt_sigprocmask(how, set) for the calling thread; the previous mask.
pub fn sigprocmask(how: c_int, set: Option<KernelSigset>) -> KernelSigset {
    let mut old: KernelSigset = 0;
    let p = set
        .as_ref()
        .map_or(std::ptr::null(), |s| s as *const KernelSigset);
    // SAFETY: 8-byte kernel sigsets.
    unsafe {
        libc::syscall(
            libc::SYS_rt_sigprocmask,
            how as c_long,
            p,
            &mut old as *mut KernelSigset,
            size_of::<KernelSigset>() as c_long,
        )
    };
    old
}

/// The signals pending for the calling thread or its process.
pub fn sigpending() -> KernelSigset {
    let mut set: KernelSigset = 0;
    // SAFETY: an 8-byte kernel sigset.
    unsafe {
        libc::syscall(
            libc::SYS_rt_sigpending,
            &mut set as *mut KernelSigset,
            size_of::<KernelSigset>() as c_long,
        )
    };
    set
}

/// What the program does with signal `sig`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Disposition {
    Default,
    Ignore,
    /// A handler; `restart`: installed with SA_RESTART.
    Handler {
        restart: bool,
    },
}

/// The current disposition of `sig` (rt_sigaction with no new action).
pub fn disposition(sig: c_int) -> Disposition {
    // The kernel's struct sigaction on Linux: handler, flags, restorer, mask.
    #[repr(C)]
    struct KAction {
        handler: usize,
        flags: libc::c_ulong,
        restorer: usize,
        mask: KernelSigset,
    }
    let mut old = KAction {
        handler: 0,
        flags: 0,
        restorer: 0,
        mask: 0,
    };
    // SAFETY: a query (NULL new action) into our struct of the kernel's layout.
    let r = unsafe {
        libc::syscall(
            libc::SYS_rt_sigaction,
            sig as c_long,
            std::ptr::null::<KAction>(),
            &mut old as *mut KAction,
            size_of::<KernelSigset>() as c_long,
        )
    };
    if r < 0 {
        return Disposition::Default;
    }
    match old.handler {
        h if h == libc::SIG_DFL => Disposition::Default,
        h if h == libc::SIG_IGN => Disposition::Ignore,
        _ => Disposition::Handler {
            restart: old.flags & libc::SA_RESTART as libc::c_ulong != 0,
        },
    }
}

/// The family of an IP address as a socket domain.
pub fn family_of(ip: IpAddr) -> c_int {
    match ip {
        IpAddr::V4(_) => libc::AF_INET,
        IpAddr::V6(_) => libc::AF_INET6,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_ipv6_addresses_parse_like_the_kernel() {
        let sa: SocketAddr = "[2001:db8::1]:443".parse().unwrap();
        let (st, len) = to_sockaddr(&sa);
        assert_eq!(len, 28);
        let p = &st as *const sockaddr_storage as *const libc::sockaddr;
        for l in 24..=28 {
            let got = unsafe { read_sockaddr(p, l) }.unwrap();
            assert_eq!(got.ip(), sa.ip(), "len {l}");
            assert_eq!(got.port(), 443);
        }
        assert_eq!(unsafe { read_sockaddr(p, 23) }, None);
        let v4: SocketAddr = "10.1.2.3:80".parse().unwrap();
        let (st, _) = to_sockaddr(&v4);
        let p = &st as *const sockaddr_storage as *const libc::sockaddr;
        assert_eq!(unsafe { read_sockaddr(p, 16) }, Some(v4));
        assert_eq!(unsafe { read_sockaddr(p, 15) }, None);
        assert_eq!(unsafe { read_sockaddr(p, 113) }, Some(v4));
    }

    #[test]
    fn marked_connect_reaches_a_listener() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        // SAFETY: a plain socket for the test.
        let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0) };
        assert!(fd >= 0);
        connect(fd, &addr, true).unwrap();
        assert_eq!(peer(fd).unwrap(), addr);
        disconnect(fd);
        assert_eq!(peer(fd), Err(libc::ENOTCONN));
        close(fd);
    }

    /// The kernel's own reading of datagram addresses, checked on loopback sockets.
    #[test]
    fn datagram_addresses_as_the_kernel_reads_them() {
        let rx = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        rx.set_read_timeout(Some(std::time::Duration::from_secs(2)))
            .unwrap();
        let to = rx.local_addr().unwrap();
        let (st, _) = to_sockaddr(&to);
        // SAFETY: the storage's bytes.
        let v4: [u8; 16] = unsafe { std::ptr::read((&st as *const sockaddr_storage).cast()) };
        let mut unspec = v4;
        unspec[..2].copy_from_slice(&(libc::AF_UNSPEC as u16).to_ne_bytes());
        let send = |domain: c_int, b: &[u8]| -> c_long {
            // SAFETY: a plain socket and a readable address for the test.
            unsafe {
                let fd = libc::socket(domain, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0);
                assert!(fd >= 0);
                let r = libc::sendto(
                    fd,
                    b"x".as_ptr().cast(),
                    1,
                    0,
                    b.as_ptr().cast(),
                    b.len() as socklen_t,
                );
                libc::close(fd);
                r as c_long
            }
        };
        let mut buf = [0u8; 4];
        // AF_UNSPEC on an AF_INET socket: sent like AF_INET.
        assert_eq!(datagram_to(libc::AF_INET, Some(&unspec)), DgramTo::To(to));
        assert_eq!(send(libc::AF_INET, &unspec), 1);
        assert_eq!(rx.recv(&mut buf).unwrap(), 1);
        // AF_INET on an AF_INET6 socket: sent over IPv4.
        assert_eq!(datagram_to(libc::AF_INET6, Some(&v4)), DgramTo::To(to));
        assert_eq!(send(libc::AF_INET6, &v4), 1);
        assert_eq!(rx.recv(&mut buf).unwrap(), 1);
        // AF_UNSPEC on an AF_INET6 socket: no address.
        assert_eq!(datagram_to(libc::AF_INET6, Some(&unspec)), DgramTo::Peer);
        assert_eq!(send(libc::AF_INET6, &unspec), -1);
        assert_eq!(errno(), libc::EDESTADDRREQ);
        // Too short, or a foreign family: refused by the kernel.
        assert_eq!(
            datagram_to(libc::AF_INET, Some(&v4[..15])),
            DgramTo::Refused
        );
        assert_eq!(send(libc::AF_INET, &v4[..15]), -1);
        let mut unix = v4;
        unix[..2].copy_from_slice(&(libc::AF_UNIX as u16).to_ne_bytes());
        assert_eq!(datagram_to(libc::AF_INET, Some(&unix)), DgramTo::Refused);
        assert_eq!(send(libc::AF_INET, &unix), -1);
        assert_eq!(datagram_to(libc::AF_INET, Some(&[])), DgramTo::Refused);
        assert_eq!(datagram_to(libc::AF_INET, None), DgramTo::Peer);
        let v6: SocketAddr = "[::1]:53".parse().unwrap();
        let (st6, l6) = to_sockaddr(&v6);
        // SAFETY: the storage's bytes.
        let b6: [u8; 28] = unsafe { std::ptr::read((&st6 as *const sockaddr_storage).cast()) };
        assert_eq!(l6, 28);
        assert_eq!(
            datagram_to(libc::AF_INET6, Some(&b6[..24])),
            DgramTo::To(v6)
        );
        assert_eq!(
            datagram_to(libc::AF_INET6, Some(&b6[..23])),
            DgramTo::Refused
        );
        assert_eq!(datagram_to(libc::AF_INET, Some(&b6)), DgramTo::Refused);
    }

    #[test]
    fn signal_helpers() {
        assert_eq!(sigbit(libc::SIGINT), 2);
        let old = sigprocmask(libc::SIG_BLOCK, None);
        assert_eq!(sigprocmask(libc::SIG_SETMASK, Some(old)), old);
        assert_eq!(disposition(libc::SIGWINCH), Disposition::Default);
    }
}
