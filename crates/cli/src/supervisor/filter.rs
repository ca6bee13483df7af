//! The seccomp filter every process of a supervised launch runs under, and its installation in
//! the launcher's child (before exec; inherited across fork, vfork, clone and exec).
//!
//! Owns: the BPF program (which syscalls notify the supervisor, which are refused, which pass),
//! the marker the preload's own connects carry ([`MARKER_LEN`]), and the `seccomp(2)` call with
//! NO_NEW_PRIVS when the caller lacks CAP_SYS_ADMIN.
//! Must never: let a connect reach the kernel unseen except one carrying the marker; let a
//! connect through another door (io_uring, the x32 ABI, 32-bit entry points, TCP Fast Open
//! data on `sendto`/`sendmsg`/`sendmmsg`); allocate or print in the forked child (the program
//! is built before fork: [`Program::new`]).
//!
//! The decisions, for x86-64 processes:
//! - `connect` → USER_NOTIF (the supervisor answers), except `addrlen == 113` → allowed.
//! - `io_uring_setup` → ENOSYS (an io_uring CONNECT is never seen by seccomp; programs and
//!   liburing fall back to plain syscalls on ENOSYS).
//! - `sendto`/`sendmmsg` with MSG_FASTOPEN in flags, `sendmsg` likewise → EOPNOTSUPP: a TCP
//!   Fast Open connect would open the connection inside `sendto`. EOPNOTSUPP is what the kernel
//!   itself answers when client fast open is off, and clients (curl, Chromium) then connect
//!   normally, which the supervisor sees.
//! - `sendto` with an address (a datagram on an unconnected socket) → USER_NOTIF, except
//!   `addrlen == 113` (the library's own, already routed) → allowed; without an address →
//!   allowed (a connected socket: its connect was seen).
//! - `sendmsg` and `sendmmsg` → USER_NOTIF (their addresses are in memory a filter cannot
//!   read), except those carrying [`MARKER_ARG`] in an argument register the syscall does not
//!   use (the library's own) → allowed.
//! - every x32 syscall (nr with bit 30) → ENOSYS (an x32 `connect` is a different number).
//! - i386 processes: `connect`, `socketcall` CONNECT / SENDTO / SENDMSG / SENDMMSG,
//!   `io_uring_setup`, `sendmsg`, `sendmmsg`, `sendto` with an address → ENOSYS,
//!   `sendto` with MSG_FASTOPEN → EOPNOTSUPP (a 32-bit program opens no connection and sends
//!   no datagram anywhere under the supervisor).
//! - any other architecture → ENOSYS; everything else → allowed.

use libc::{c_int, c_uint, sock_filter, sock_fprog};

/// The addrlen of the preload's own connects (to its first proxy): any length from the family's
/// size to 128 is accepted by the kernel, so a zero-padded buffer with this length is a normal
/// connect that the filter lets through without a notification. A signal, not a boundary.
pub const MARKER_LEN: u32 = chainsocks_core::sys::MARKER_ADDRLEN;
/// The value in an unused argument register of the library's own `sendmsg` / `sendmmsg`.
pub const MARKER_ARG: u32 = chainsocks_core::sys::MARKER_ARG as u32;

const AUDIT_ARCH_X86_64: u32 = 0xC000_003E;
const AUDIT_ARCH_I386: u32 = 0x4000_0003;
const X32_BIT: u32 = 0x4000_0000;

mod nr64 {
    pub const CONNECT: u32 = 42;
    pub const SENDTO: u32 = 44;
    pub const SENDMSG: u32 = 46;
    pub const SENDMMSG: u32 = 307;
    pub const IO_URING_SETUP: u32 = 425;
}

mod nr32 {
    pub const SOCKETCALL: u32 = 102;
    pub const SENDMMSG: u32 = 345;
    pub const CONNECT: u32 = 362;
    pub const SENDTO: u32 = 369;
    pub const SENDMSG: u32 = 370;
    pub const IO_URING_SETUP: u32 = 425;
    // socketcall(2) call numbers (linux/net.h)
    pub const SYS_CONNECT: u32 = 3;
    pub const SYS_SENDTO: u32 = 11;
    pub const SYS_SENDMSG: u32 = 16;
    pub const SYS_SENDMMSG: u32 = 20;
}

// seccomp_data offsets
const OFF_NR: u32 = 0;
const OFF_ARCH: u32 = 4;
const fn off_arg(i: u32) -> u32 {
    16 + 8 * i // the low 32 bits on little-endian; the kernel reads these args as int
}

const RET_ALLOW: u32 = 0x7fff_0000;
const RET_NOTIFY: u32 = 0x7fc0_0000;
const RET_ERRNO: u32 = 0x0005_0000;

/// A jump target in the program being assembled.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum L {
    Next,
    Allow,
    Notify,
    Enosys,
    Eopnotsupp,
    X64,
    I386,
    Connect64,
    SendTo64,
    SendToAddrHi,
    SendToLen,
    SendMsg64,
    SendMmsg64,
    SendTo32,
    Socketcall,
}

enum Op {
    Ld(u32),
    Jeq(u32, L, L),
    Jge(u32, L, L),
    Jset(u32, L, L),
    Ret(u32),
    Label(L),
}

fn source() -> Vec<Op> {
    use Op::*;
    let fastopen = libc::MSG_FASTOPEN as u32;
    vec![
        Ld(OFF_ARCH),
        Jeq(AUDIT_ARCH_X86_64, L::X64, L::Next),
        Jeq(AUDIT_ARCH_I386, L::I386, L::Enosys),
        Label(L::X64),
        Ld(OFF_NR),
        Jge(X32_BIT, L::Enosys, L::Next),
        Jeq(nr64::CONNECT, L::Connect64, L::Next),
        Jeq(nr64::IO_URING_SETUP, L::Enosys, L::Next),
        Jeq(nr64::SENDTO, L::SendTo64, L::Next),
        Jeq(nr64::SENDMMSG, L::SendMmsg64, L::Next),
        Jeq(nr64::SENDMSG, L::SendMsg64, L::Allow),
        Label(L::Connect64),
        Ld(off_arg(2)),
        Jeq(MARKER_LEN, L::Allow, L::Notify),
        Label(L::SendTo64),
        Ld(off_arg(3)),
        Jset(fastopen, L::Eopnotsupp, L::Next),
        Ld(off_arg(4)),
        Jeq(0, L::SendToAddrHi, L::SendToLen),
        Label(L::SendToAddrHi),
        Ld(off_arg(4) + 4),
        Jeq(0, L::Allow, L::SendToLen),
        Label(L::SendToLen),
        Ld(off_arg(5)),
        Jeq(MARKER_LEN, L::Allow, L::Notify),
        Label(L::SendMsg64),
        Ld(off_arg(2)),
        Jset(fastopen, L::Eopnotsupp, L::Next),
        Ld(off_arg(3)),
        Jeq(MARKER_ARG, L::Allow, L::Notify),
        Label(L::SendMmsg64),
        Ld(off_arg(3)),
        Jset(fastopen, L::Eopnotsupp, L::Next),
        Ld(off_arg(4)),
        Jeq(MARKER_ARG, L::Allow, L::Notify),
        Label(L::I386),
        Ld(OFF_NR),
        Jeq(nr32::CONNECT, L::Enosys, L::Next),
        Jeq(nr32::IO_URING_SETUP, L::Enosys, L::Next),
        Jeq(nr32::SOCKETCALL, L::Socketcall, L::Next),
        Jeq(nr32::SENDMMSG, L::Enosys, L::Next),
        Jeq(nr32::SENDMSG, L::Enosys, L::Next),
        Jeq(nr32::SENDTO, L::SendTo32, L::Allow),
        Label(L::Socketcall),
        Ld(off_arg(0)),
        Jeq(nr32::SYS_CONNECT, L::Enosys, L::Next),
        Jeq(nr32::SYS_SENDTO, L::Enosys, L::Next),
        Jeq(nr32::SYS_SENDMSG, L::Enosys, L::Next),
        Jeq(nr32::SYS_SENDMMSG, L::Enosys, L::Allow),
        Label(L::SendTo32),
        Ld(off_arg(3)),
        Jset(fastopen, L::Eopnotsupp, L::Next),
        Ld(off_arg(4)),
        Jeq(0, L::Allow, L::Enosys),
        Label(L::Allow),
        Ret(RET_ALLOW),
        Label(L::Notify),
        Ret(RET_NOTIFY),
        Label(L::Enosys),
        Ret(RET_ERRNO | libc::ENOSYS as u32),
        Label(L::Eopnotsupp),
        Ret(RET_ERRNO | libc::EOPNOTSUPP as u32),
    ]
}

/// Resolves labels into classic BPF (forward jumps only, as the kernel requires).
fn assemble(src: &[Op]) -> Result<Vec<sock_filter>, &'static str> {
    let mut at = Vec::new(); // (label, instruction index)
    let mut n = 0usize;
    for op in src {
        match op {
            Op::Label(l) => at.push((*l, n)),
            _ => n += 1,
        }
    }
    let find = |l: L, pc: usize| -> Result<u8, &'static str> {
        let target = match l {
            L::Next => pc + 1,
            _ => at.iter().find(|(x, _)| *x == l).ok_or("missing label")?.1,
        };
        let off = target.checked_sub(pc + 1).ok_or("backward jump")?;
        u8::try_from(off).map_err(|_| "jump too far")
    };
    let mut out = Vec::with_capacity(n);
    for op in src {
        let pc = out.len();
        let ins = |code: u16, jt: u8, jf: u8, k: u32| sock_filter { code, jt, jf, k };
        let i = match *op {
            Op::Label(_) => continue,
            Op::Ld(off) => ins(0x20, 0, 0, off), // BPF_LD | BPF_W | BPF_ABS
            Op::Jeq(k, t, f) => ins(0x15, find(t, pc)?, find(f, pc)?, k),
            Op::Jge(k, t, f) => ins(0x35, find(t, pc)?, find(f, pc)?, k),
            Op::Jset(k, t, f) => ins(0x45, find(t, pc)?, find(f, pc)?, k),
            Op::Ret(k) => ins(0x06, 0, 0, k),
        };
        out.push(i);
    }
    Ok(out)
}

/// The assembled program, built before fork.
pub struct Program(Vec<sock_filter>);

impl Program {
    pub fn new() -> Program {
        // The source is fixed: assembling cannot fail (a unit test proves it).
        Program(assemble(&source()).unwrap_or_default())
    }
}

/// Flags for the one filter with a listener.
fn flags() -> c_uint {
    (libc::SECCOMP_FILTER_FLAG_NEW_LISTENER | libc::SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV)
        as c_uint
}

fn seccomp(op: c_uint, flags: c_uint, arg: *const libc::c_void) -> c_int {
    // SAFETY: seccomp(2) with a pointer that is either null (probe) or a valid sock_fprog.
    unsafe { libc::syscall(libc::SYS_seccomp, op, flags, arg) as c_int }
}

/// The calling thread's errno (0 if none); also used by [`super::slice`].
pub(super) fn errno() -> c_int {
    std::io::Error::last_os_error().raw_os_error().unwrap_or(0)
}

/// Whether this kernel can run the supervisor, without changing anything: a `seccomp` call with
/// our flags and no program fails with EFAULT when the flags are known, EINVAL when they are
/// not (Linux < 5.19 has no WAIT_KILLABLE_RECV), ENOSYS without seccomp.
pub fn probe() -> Result<(), String> {
    let r = seccomp(libc::SECCOMP_SET_MODE_FILTER, flags(), std::ptr::null());
    match (r, errno()) {
        (0.., _) => Ok(()), // cannot happen with a null program
        (_, libc::EFAULT) => Ok(()),
        (_, libc::EINVAL) => Err(
            "this kernel has no seccomp user notification with SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV (Linux >= 5.19 needed)"
                .into(),
        ),
        (_, e) => Err(format!(
            "seccomp is not available: {}",
            std::io::Error::from_raw_os_error(e)
        )),
    }
}

/// Installs the filter in the calling (forked, single-threaded) child and returns the
/// listener fd (close-on-exec). Without CAP_SYS_ADMIN in its user namespace the child sets
/// NO_NEW_PRIVS first (the kernel requires one or the other). Errors are errno values: EBUSY
/// means a filter with a listener is already installed (a supervisor cannot nest).
///
/// Async-signal-safe: no allocation.
pub fn install(p: &Program) -> Result<c_int, c_int> {
    let prog = sock_fprog {
        len: p.0.len() as u16,
        filter: p.0.as_ptr() as *mut sock_filter,
    };
    let arg = &prog as *const sock_fprog as *const libc::c_void;
    let mut r = seccomp(libc::SECCOMP_SET_MODE_FILTER, flags(), arg);
    if r < 0 && errno() == libc::EACCES {
        // SAFETY: prctl with integer arguments.
        if unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) } != 0 {
            return Err(errno());
        }
        r = seccomp(libc::SECCOMP_SET_MODE_FILTER, flags(), arg);
    }
    if r < 0 { Err(errno()) } else { Ok(r) }
}

/// Why installing failed, in words.
pub fn install_error(e: c_int) -> String {
    match e {
        libc::EBUSY => "a seccomp filter with a listener is already installed (another supervisor, e.g. chainsocks inside chainsocks or a container runtime): supervisors cannot nest".into(),
        libc::EINVAL => "the kernel refused the filter flags (Linux >= 5.19 needed)".into(),
        e => format!("installing the seccomp filter: {}", std::io::Error::from_raw_os_error(e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A classic-BPF interpreter for the opcodes we use, over a seccomp_data.
    fn run(p: &[sock_filter], arch: u32, nr: u32, args: [u64; 6]) -> u32 {
        let mut data = [0u8; 64];
        data[0..4].copy_from_slice(&nr.to_le_bytes());
        data[4..8].copy_from_slice(&arch.to_le_bytes());
        for (i, a) in args.iter().enumerate() {
            data[16 + 8 * i..24 + 8 * i].copy_from_slice(&a.to_le_bytes());
        }
        let (mut pc, mut acc) = (0usize, 0u32);
        loop {
            let i = &p[pc];
            let jump = |c: bool| pc + 1 + if c { i.jt } else { i.jf } as usize;
            pc = match i.code {
                0x20 => {
                    let o = i.k as usize;
                    acc = u32::from_le_bytes(data[o..o + 4].try_into().unwrap());
                    pc + 1
                }
                0x15 => jump(acc == i.k),
                0x35 => jump(acc >= i.k),
                0x45 => jump(acc & i.k != 0),
                0x06 => return i.k,
                c => panic!("opcode {c:#x}"),
            };
        }
    }

    #[test]
    fn decisions() {
        let p = Program::new().0;
        assert!(!p.is_empty() && p.len() < 64);
        let x = |nr, args| run(&p, AUDIT_ARCH_X86_64, nr, args);
        let i = |nr, args| run(&p, AUDIT_ARCH_I386, nr, args);
        let enosys = RET_ERRNO | libc::ENOSYS as u32;
        let eopnotsupp = RET_ERRNO | libc::EOPNOTSUPP as u32;
        let fo = libc::MSG_FASTOPEN as u64;
        assert_eq!(x(42, [3, 0x1000, 16, 0, 0, 0]), RET_NOTIFY);
        assert_eq!(x(42, [3, 0x1000, 28, 0, 0, 0]), RET_NOTIFY);
        assert_eq!(x(42, [3, 0x1000, 113, 0, 0, 0]), RET_ALLOW);
        // the kernel reads addrlen as an int: high bits do not matter
        assert_eq!(x(42, [3, 0x1000, (7 << 32) | 113, 0, 0, 0]), RET_ALLOW);
        assert_eq!(x(425, [0; 6]), enosys);
        let ns = libc::MSG_NOSIGNAL as u64;
        let mk = MARKER_ARG as u64;
        assert_eq!(x(44, [3, 0, 10, fo, 0x1000, 16]), eopnotsupp);
        assert_eq!(x(44, [3, 0, 10, fo, 0, 0]), eopnotsupp);
        // sendto: with an address → notify (unless marked); without → allowed
        assert_eq!(x(44, [3, 0, 10, ns, 0x1000, 16]), RET_NOTIFY);
        assert_eq!(x(44, [3, 0, 10, ns, 0x7f00_0000_0000, 16]), RET_NOTIFY);
        assert_eq!(x(44, [3, 0, 10, ns, 0x1000, 113]), RET_ALLOW);
        assert_eq!(x(44, [3, 0, 10, ns, 0, 0]), RET_ALLOW);
        assert_eq!(x(44, [3, 0, 10, 0, 0, 16]), RET_ALLOW);
        // sendmsg / sendmmsg: notify unless marked
        assert_eq!(x(46, [3, 0x1000, fo | 0x4000, 0, 0, 0]), eopnotsupp);
        assert_eq!(x(46, [3, 0x1000, fo, mk, 0, 0]), eopnotsupp);
        assert_eq!(x(46, [3, 0x1000, 0, 0, 0, 0]), RET_NOTIFY);
        assert_eq!(x(46, [3, 0x1000, ns, mk, 0, 0]), RET_ALLOW);
        assert_eq!(x(46, [3, 0x1000, ns, mk + 1, 0, 0]), RET_NOTIFY);
        assert_eq!(x(307, [3, 0x1000, 2, fo, 0, 0]), eopnotsupp);
        assert_eq!(x(307, [3, 0x1000, 2, 0, 0, 0]), RET_NOTIFY);
        assert_eq!(x(307, [3, 0x1000, 2, 0, mk, 0]), RET_ALLOW);
        assert_eq!(x(307, [3, 0x1000, 2, 0, 0, mk]), RET_NOTIFY);
        assert_eq!(x(0, [0; 6]), RET_ALLOW); // read
        assert_eq!(x(41, [0; 6]), RET_ALLOW); // socket
        assert_eq!(x(X32_BIT | 42, [3, 0, 113, 0, 0, 0]), enosys);
        assert_eq!(x(X32_BIT, [0; 6]), enosys);
        assert_eq!(i(362, [3, 0x1000, 113, 0, 0, 0]), enosys);
        assert_eq!(i(425, [0; 6]), enosys);
        assert_eq!(i(102, [3, 0x1000, 0, 0, 0, 0]), enosys);
        assert_eq!(i(102, [11, 0x1000, 0, 0, 0, 0]), enosys);
        assert_eq!(i(102, [1, 0x1000, 0, 0, 0, 0]), RET_ALLOW); // SYS_SOCKET
        assert_eq!(i(369, [3, 0, 1, fo, 0, 0]), eopnotsupp);
        assert_eq!(i(369, [3, 0, 1, 0, 0, 0]), RET_ALLOW);
        assert_eq!(i(369, [3, 0, 1, 0, 0x1000, 16]), enosys);
        assert_eq!(i(369, [3, 0, 1, 0, 0x1000, 113]), enosys);
        assert_eq!(i(370, [3, 0, fo, 0, 0, 0]), enosys);
        assert_eq!(i(370, [3, 0, 0, mk, 0, 0]), enosys);
        assert_eq!(i(345, [3, 0, 1, 0, 0, 0]), enosys);
        assert_eq!(i(3, [0; 6]), RET_ALLOW);
        assert_eq!(run(&p, 0xC000_00B7, 203, [0; 6]), enosys); // aarch64: not ours
    }

    #[test]
    fn probe_on_this_kernel() {
        // The build machines run Linux >= 5.19; the probe must not install anything.
        let filters = || {
            std::fs::read_to_string("/proc/self/status")
                .unwrap()
                .lines()
                .find(|l| l.starts_with("Seccomp_filters:"))
                .map(String::from)
        };
        let before = filters();
        assert_eq!(probe(), Ok(()));
        assert_eq!(filters(), before);
    }
}
