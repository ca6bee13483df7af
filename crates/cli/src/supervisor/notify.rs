//! The notification loop: receives every `connect` and datagram send the filter reports, takes
//! the program's socket, and answers for the kernel.
//!
//! Owns: SECCOMP_IOCTL_NOTIF_RECV / SEND / ID_VALID, reading the program's sockaddr
//! (`process_vm_readv`), taking its socket (`pidfd_open(tid, PIDFD_THREAD)`, else the thread
//! group id from /proc, then `pidfd_getfd`), the decision internet / not internet from the
//! socket itself (SO_DOMAIN on the duplicate), and the threads that run handshakes.
//! Must never: answer "continue" for a connect of an AF_INET/AF_INET6 socket (a second thread
//! could rewrite the address after our check: the kernel would then connect wherever it
//! points; a datagram send continues only when every name it carries may go direct — the same
//! race exists there, and the README says so), connect an
//! internet socket anywhere itself except the DNS responder or through
//! [`super::proxy_connect`], or let one slow handshake delay another connect (one thread per
//! pending handshake, no fixed cap).
//!
//! Threads (leader/followers): exactly one thread at a time is the receiver (poll + RECV). It
//! answers the quick cases itself (non-internet sockets, bad arguments, datagrams, UDP to the
//! DNS responder) and runs handshakes itself. While the handshake waits for its proxy it
//! watches the listener too: once another connect is pending (or before a wait it cannot watch
//! in: a lookup, a blocking connect) it hands the receiver's role to a waiting follower (or a
//! new thread). So the connect is never handed from thread to thread, a handshake nobody waits
//! behind costs no thread wake-up, and a slow proxy stalls no other connect. A thread that
//! handed the role over waits as a follower after its handshake and ends after [`IDLE`]
//! unneeded.

use std::mem::size_of;
use std::net::SocketAddr;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use chainsocks_core::config::LogLevel;
use libc::{c_int, seccomp_notif, seccomp_notif_resp};

use super::{Ctx, Receiving, Requester};

/// How long an idle follower waits to become the receiver before it ends.
const IDLE: Duration = Duration::from_secs(10);
/// The threads' stack: the handshake code needs little.
const WORKER_STACK: usize = 256 * 1024;

fn errno() -> c_int {
    std::io::Error::last_os_error()
        .raw_os_error()
        .unwrap_or(libc::EIO)
}

/// What the supervisor answers for one notification.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Answer {
    /// Let the kernel run the syscall as the program made it (non-internet sockets only).
    Continue,
    /// The syscall's result: 0 or an errno.
    Done(Result<(), c_int>),
    /// The notification is gone (the thread died or was killed): nothing to answer.
    Gone,
}

/// One received notification: its id and what the filter saw.
#[derive(Clone, Copy)]
pub struct Notif {
    id: u64,
    tid: u32,
    nr: c_int,
    fd: c_int,
    args: [u64; 6],
}

impl Notif {
    /// connect's address and length.
    fn addr_ptr(&self) -> u64 {
        self.args[1]
    }
    fn addr_len(&self) -> u32 {
        self.args[2] as u32
    }
}

/// The listener and the ioctls on it.
pub struct Listener {
    fd: OwnedFd,
    /// `NOTIF_RECV` is called without a `poll` first (see [`Listener::new`]).
    direct: bool,
}

impl Listener {
    /// Takes the listener and asks the kernel to wake us on the CPU of the notifying thread (a
    /// notification round trip: about 5 µs instead of about 20 µs here; harmless when the
    /// kernel lacks it).
    ///
    /// A kernel that has it (6.6+) also ends a blocking `NOTIF_RECV` once no process is left
    /// under the filter (its waiters are woken with the filter's users at zero, and the call
    /// returns ENOENT); older kernels leave such a call asleep. So with it the receiver calls
    /// `NOTIF_RECV` straight away, one syscall per notification instead of `poll` + ioctl.
    pub fn new(fd: OwnedFd) -> Listener {
        const SECCOMP_USER_NOTIF_FD_SYNC_WAKE_UP: u64 = 1;
        // SAFETY: an ioctl on our listener with a u64 by value.
        let direct = unsafe {
            libc::ioctl(
                fd.as_raw_fd(),
                libc::SECCOMP_IOCTL_NOTIF_SET_FLAGS,
                SECCOMP_USER_NOTIF_FD_SYNC_WAKE_UP,
            ) == 0
        };
        Listener { fd, direct }
    }

    fn raw(&self) -> RawFd {
        self.fd.as_raw_fd()
    }

    /// Whether the listener is finished: POLLHUP without POLLIN (no process left under the
    /// filter, nothing pending). `timeout` in ms as for poll(2); Err(errno) if poll failed.
    fn finished(&self, timeout: c_int) -> Result<bool, c_int> {
        let mut p = libc::pollfd {
            fd: self.raw(),
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one valid pollfd.
        if unsafe { libc::poll(&mut p, 1, timeout) } < 0 {
            return Err(errno());
        }
        Ok(p.revents & libc::POLLIN == 0 && p.revents != 0)
    }

    /// Waits for the next notification. `Ok(None)`: nothing to handle this time (the notifying
    /// thread died first, or a signal); `Err`: the listener is finished (no process left).
    fn recv(&self) -> Result<Option<Notif>, c_int> {
        let direct = self.direct;
        if !direct {
            match self.finished(-1) {
                Err(libc::EINTR) => return Ok(None),
                Err(e) => return Err(e),
                // Every process under the filter is gone.
                Ok(true) => return Err(libc::ENOENT),
                Ok(false) => {}
            }
        }
        // The kernel wants a zeroed buffer; ours is at least as large as its struct (checked
        // in `check_sizes`).
        let mut buf = [0u64; 32];
        // SAFETY: buf is 256 zeroed, aligned bytes, larger than the kernel's seccomp_notif.
        let r =
            unsafe { libc::ioctl(self.raw(), libc::SECCOMP_IOCTL_NOTIF_RECV, buf.as_mut_ptr()) };
        if r < 0 {
            return match errno() {
                // Blocking without a poll first, ENOENT is also how the call ends once no
                // process is left: then the listener hangs up.
                libc::ENOENT if direct && self.finished(0) == Ok(true) => Err(libc::ENOENT),
                // ENOENT: the thread died (or its syscall was interrupted) before we got it.
                libc::ENOENT | libc::EINTR => Ok(None),
                e => Err(e),
            };
        }
        // SAFETY: the kernel filled a seccomp_notif at the start of buf.
        let n: seccomp_notif = unsafe { std::ptr::read(buf.as_ptr().cast()) };
        Ok(Some(Notif {
            id: n.id,
            tid: n.pid,
            nr: n.data.nr,
            fd: n.data.args[0] as c_int,
            args: n.data.args,
        }))
    }

    /// Whether the notification is still waiting for our answer (its thread alive, in the
    /// same syscall): what we read about it before this check was really its.
    fn valid(&self, id: u64) -> bool {
        // SAFETY: an ioctl on our listener with a pointer to a u64.
        unsafe { libc::ioctl(self.raw(), libc::SECCOMP_IOCTL_NOTIF_ID_VALID, &id) == 0 }
    }

    fn send(&self, id: u64, answer: Answer) {
        let mut resp = seccomp_notif_resp {
            id,
            val: 0,
            error: 0,
            flags: 0,
        };
        match answer {
            Answer::Gone => return,
            Answer::Continue => resp.flags = libc::SECCOMP_USER_NOTIF_FLAG_CONTINUE as u32,
            Answer::Done(Ok(())) => {}
            Answer::Done(Err(e)) => resp.error = -e,
        }
        // SAFETY: an ioctl on our listener with a valid response. ENOENT (the thread is gone)
        // needs nothing more.
        unsafe { libc::ioctl(self.raw(), libc::SECCOMP_IOCTL_NOTIF_SEND, &mut resp) };
    }
}

/// Whether the kernel's notification structs fit ours (they only grow with new fields).
pub fn check_sizes() -> Result<(), String> {
    let mut s = libc::seccomp_notif_sizes {
        seccomp_notif: 0,
        seccomp_notif_resp: 0,
        seccomp_data: 0,
    };
    // SAFETY: seccomp(SECCOMP_GET_NOTIF_SIZES, 0, &sizes).
    let r = unsafe { libc::syscall(libc::SYS_seccomp, 3, 0, &mut s) };
    if r != 0 {
        return Err(format!(
            "SECCOMP_GET_NOTIF_SIZES: {}",
            std::io::Error::last_os_error()
        ));
    }
    if s.seccomp_notif as usize > 256
        || (s.seccomp_notif_resp as usize) < size_of::<seccomp_notif_resp>()
        || (s.seccomp_data as usize) < size_of::<libc::seccomp_data>()
    {
        return Err(format!(
            "unexpected seccomp notification sizes {}/{}/{}",
            s.seccomp_notif, s.seccomp_notif_resp, s.seccomp_data
        ));
    }
    Ok(())
}

/// A pidfd for the notifying thread: with PIDFD_THREAD (Linux 6.9) the thread itself, else
/// its thread group (read from /proc; a thread created without CLONE_FILES would then be
/// looked at through its leader's fd table).
fn pidfd_of(tid: u32) -> Result<(OwnedFd, bool), c_int> {
    // SAFETY: pidfd_open(2) with integer arguments.
    let r = unsafe { libc::syscall(libc::SYS_pidfd_open, tid, libc::O_EXCL as libc::c_uint) };
    if r >= 0 {
        // SAFETY: a new fd we own.
        return Ok((unsafe { OwnedFd::from_raw_fd(r as RawFd) }, true));
    }
    let e = errno();
    if e != libc::EINVAL {
        return Err(e);
    }
    let status = std::fs::read_to_string(format!("/proc/{tid}/status")).map_err(|_| libc::ESRCH)?;
    let tgid: u32 = status
        .lines()
        .find_map(|l| l.strip_prefix("Tgid:"))
        .and_then(|v| v.trim().parse().ok())
        .ok_or(libc::ESRCH)?;
    // SAFETY: as above, for the thread group.
    let r = unsafe { libc::syscall(libc::SYS_pidfd_open, tgid, 0) };
    if r < 0 {
        return Err(errno());
    }
    // SAFETY: a new fd we own.
    Ok((unsafe { OwnedFd::from_raw_fd(r as RawFd) }, false))
}

/// Thread pidfds (PIDFD_THREAD only) of threads that connected before, by tid: a thread that
/// connects again costs no `pidfd_open`, `NOTIF_ID_VALID` and `close`. Safe against tid
/// reuse: a pidfd names one task, never a tid; while that task lives no other task has its
/// tid, and once it is gone `pidfd_getfd` on it fails with ESRCH (then the entry goes and the
/// uncached way runs). A thread group's pidfd (the fallback before Linux 6.9) is never cached:
/// another thread of that process could later have the tid.
struct Pidfds {
    slots: Vec<(u32, OwnedFd)>,
    next: usize,
}

impl Pidfds {
    const SLOTS: usize = 32;

    fn new() -> Pidfds {
        Pidfds {
            slots: Vec::with_capacity(Self::SLOTS),
            next: 0,
        }
    }

    /// Our duplicate of `fd` through the cached pidfd of `tid`: `None` when there is none or
    /// its task is gone (the entry is dropped).
    fn take(&mut self, tid: u32, fd: c_int) -> Option<Result<OwnedFd, c_int>> {
        let i = self.slots.iter().position(|(t, _)| *t == tid)?;
        match take_fd(&self.slots[i].1, fd) {
            Err(libc::ESRCH) => {
                self.slots.swap_remove(i);
                self.next = self.next.min(self.slots.len());
                None
            }
            r => Some(r),
        }
    }

    fn insert(&mut self, tid: u32, pidfd: OwnedFd) {
        if self.slots.len() < Self::SLOTS {
            self.slots.push((tid, pidfd));
            return;
        }
        let i = self.next % Self::SLOTS;
        self.slots[i] = (tid, pidfd);
        self.next = i + 1;
    }
}

/// Our duplicate of the program's fd `fd` (the same open file description).
fn take_fd(pidfd: &OwnedFd, fd: c_int) -> Result<OwnedFd, c_int> {
    // SAFETY: pidfd_getfd(2) with integer arguments; the result is a new fd (close-on-exec).
    let r = unsafe { libc::syscall(libc::SYS_pidfd_getfd, pidfd.as_raw_fd(), fd, 0) };
    if r < 0 {
        return Err(errno());
    }
    // SAFETY: a new fd we own.
    Ok(unsafe { OwnedFd::from_raw_fd(r as RawFd) })
}

/// Reads `len` bytes at `ptr` in thread `tid`'s memory.
fn read_mem(tid: u32, ptr: u64, buf: &mut [u8]) -> Result<(), c_int> {
    if buf.is_empty() {
        return Ok(());
    }
    let local = libc::iovec {
        iov_base: buf.as_mut_ptr().cast(),
        iov_len: buf.len(),
    };
    let remote = libc::iovec {
        iov_base: ptr as *mut libc::c_void,
        iov_len: buf.len(),
    };
    // SAFETY: local points to our buffer; the remote range is only read by the kernel.
    let n = unsafe { libc::process_vm_readv(tid as libc::pid_t, &local, 1, &remote, 1, 0) };
    match n {
        n if n as usize == buf.len() => Ok(()),
        n if n >= 0 => Err(libc::EFAULT),
        _ => match errno() {
            libc::ESRCH => Err(libc::ESRCH),
            _ => Err(libc::EFAULT),
        },
    }
}

pub fn sockopt(fd: BorrowedFd, level: c_int, opt: c_int) -> Result<c_int, c_int> {
    let mut v: c_int = 0;
    let mut len = size_of::<c_int>() as libc::socklen_t;
    // SAFETY: an int option into valid storage.
    let r = unsafe {
        libc::getsockopt(
            fd.as_raw_fd(),
            level,
            opt,
            (&mut v as *mut c_int).cast(),
            &mut len,
        )
    };
    if r == 0 { Ok(v) } else { Err(errno()) }
}

/// The destination of a sockaddr as the kernel would read it for an internet socket: AF_INET
/// from 16 bytes, AF_INET6 from 24 (the RFC 2133 size, without scope id) — anything else is
/// not a destination (`None`: AF_UNSPEC disconnects, short or foreign addresses fail).
pub fn parse_sockaddr(b: &[u8]) -> Option<SocketAddr> {
    // SAFETY: `b` is readable for its length.
    unsafe { chainsocks_core::sys::read_sockaddr(b.as_ptr().cast(), b.len() as libc::socklen_t) }
}

/// The bytes of a sockaddr for `sa`.
pub fn sockaddr_bytes(sa: &SocketAddr) -> ([u8; 28], usize) {
    let mut b = [0u8; 28];
    match sa {
        SocketAddr::V4(v4) => {
            b[..2].copy_from_slice(&(libc::AF_INET as u16).to_ne_bytes());
            b[2..4].copy_from_slice(&v4.port().to_be_bytes());
            b[4..8].copy_from_slice(&v4.ip().octets());
            (b, 16)
        }
        SocketAddr::V6(v6) => {
            b[..2].copy_from_slice(&(libc::AF_INET6 as u16).to_ne_bytes());
            b[2..4].copy_from_slice(&v6.port().to_be_bytes());
            b[4..8].copy_from_slice(&v6.flowinfo().to_be_bytes());
            b[8..24].copy_from_slice(&v6.ip().octets());
            b[24..28].copy_from_slice(&v6.scope_id().to_ne_bytes());
            (b, 28)
        }
    }
}

/// connect(2) of our duplicate to raw sockaddr bytes, waiting (poll) for a non-blocking
/// socket until `deadline`: 0 or the errno, as the program's own blocking connect would give.
pub fn connect_bytes(fd: BorrowedFd, addr: &[u8], deadline: Instant) -> Result<(), c_int> {
    // SAFETY: addr is a readable buffer of addr.len() bytes.
    let r = unsafe {
        libc::connect(
            fd.as_raw_fd(),
            addr.as_ptr().cast(),
            addr.len() as libc::socklen_t,
        )
    };
    if r == 0 {
        return Ok(());
    }
    match errno() {
        libc::EINPROGRESS | libc::EINTR | libc::EALREADY => {}
        e => return Err(e),
    }
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(libc::ETIMEDOUT);
        }
        let mut p = libc::pollfd {
            fd: fd.as_raw_fd(),
            events: libc::POLLOUT,
            revents: 0,
        };
        // SAFETY: one valid pollfd.
        let r = unsafe { libc::poll(&mut p, 1, left.as_millis().clamp(1, 60_000) as c_int) };
        if r > 0 {
            return match sockopt(fd, libc::SOL_SOCKET, libc::SO_ERROR) {
                Ok(0) => Ok(()),
                Ok(e) | Err(e) => Err(e),
            };
        }
        if r < 0 && errno() != libc::EINTR {
            return Err(errno());
        }
    }
}

/// What one connect needs after the quick checks: a handshake, run by the thread that
/// received it once another thread receives.
struct Job {
    notif: Notif,
    sock: OwnedFd,
    work: Work,
}

enum Work {
    /// The destination, and what triage read of the socket (the dialer reads the rest).
    Proxy(SocketAddr, chainsocks_core::connect::Known),
    Responder(SocketAddr),
}

/// The receiver's role while its thread runs a handshake.
struct Role<'a> {
    sup: &'a Arc<Supervisor>,
    /// None: still held; Some(true): passed on; Some(false): no thread could take it.
    handed: std::cell::Cell<Option<bool>>,
}

impl Receiving for Role<'_> {
    fn hand_over(&self) {
        if self.handed.get().is_none() {
            self.handed.set(Some(self.sup.hand_over()));
        }
    }

    fn watch(&self) -> Option<RawFd> {
        self.handed.get().is_none().then(|| self.sup.listener.raw())
    }
}

/// The listener and its threads.
pub struct Supervisor {
    listener: Listener,
    ctx: Ctx,
    pool: Pool,
    /// Only the receiver uses it (one thread at a time): the lock is never contended.
    pidfds: Mutex<Pidfds>,
}

#[derive(Default)]
struct Pool {
    state: Mutex<PoolState>,
    cv: Condvar,
}

#[derive(Default)]
struct PoolState {
    /// Threads waiting to become the receiver.
    followers: usize,
    /// Followers asked to become the receiver, not yet awake.
    promoted: usize,
    /// Handshakes in progress, and the most at once.
    busy: usize,
    most: usize,
    /// The listener is finished: followers end.
    done: bool,
}

impl Supervisor {
    pub fn new(listener: Listener, ctx: Ctx) -> Arc<Supervisor> {
        Arc::new(Supervisor {
            listener,
            ctx,
            pool: Pool::default(),
            pidfds: Mutex::new(Pidfds::new()),
        })
    }

    pub fn ctx(&self) -> &Ctx {
        &self.ctx
    }

    /// Most handshakes in progress at once so far.
    pub fn most_at_once(&self) -> usize {
        self.pool.state.lock().map_or(0, |s| s.most)
    }

    /// The receiver's loop, on the thread that holds the role; returns when no process is left
    /// under the filter (or when this thread ended as a follower).
    pub fn run(self: &Arc<Supervisor>) {
        // Woken, this thread runs at once instead of queueing behind other runnable tasks
        // (see slice.rs); said once per launch.
        let slice = super::slice::shorten();
        static SAID: std::sync::Once = std::sync::Once::new();
        SAID.call_once(|| {
            self.ctx.log.line(
                LogLevel::Debug,
                format_args!(
                    "supervisor: threads' scheduling slice: {}",
                    match slice {
                        Ok(0) => "unchanged (a kernel before 6.12, or a real-time or idle policy)".into(),
                        Ok(ns) => format!("{} µs", ns / 1000),
                        Err(e) => format!("unchanged (sched_setattr: errno {e})"),
                    }
                ),
            );
        });
        loop {
            let n = match self.listener.recv() {
                Ok(Some(n)) => n,
                Ok(None) => continue,
                Err(_) => {
                    if let Ok(mut st) = self.pool.state.lock() {
                        st.done = true;
                    }
                    self.pool.cv.notify_all();
                    return;
                }
            };
            self.ctx.stats.notifications.fetch_add(1, Ordering::Relaxed);
            let job = match self.triage(n) {
                Ok(job) => job,
                Err(answer) => {
                    if answer == Answer::Continue {
                        self.ctx.stats.continued.fetch_add(1, Ordering::Relaxed);
                    }
                    self.listener.send(n.id, answer);
                    continue;
                }
            };
            if let Ok(mut st) = self.pool.state.lock() {
                st.busy += 1;
                st.most = st.most.max(st.busy);
            }
            // The receiving passes on only when another connect comes while this handshake
            // waits for its proxy (or before a wait the listener cannot be watched in): a
            // handshake nobody waits behind costs no thread wake-up.
            let role = Role {
                sup: self,
                handed: std::cell::Cell::new(None),
            };
            self.work(job, &role);
            if let Ok(mut st) = self.pool.state.lock() {
                st.busy -= 1;
            }
            // Without another receiver (none handed over, or no thread could be started)
            // this one stays it.
            if role.handed.get() == Some(true) && !self.follow() {
                return;
            }
        }
    }

    /// Gives the receiver's role to a follower, else to a new thread; false when neither is
    /// possible (this thread then stays the receiver after its handshake: later connects wait
    /// for it, none is lost).
    fn hand_over(self: &Arc<Supervisor>) -> bool {
        let Ok(mut st) = self.pool.state.lock() else {
            return false;
        };
        if st.followers > st.promoted {
            st.promoted += 1;
            drop(st);
            self.pool.cv.notify_one();
            return true;
        }
        drop(st);
        let me = Arc::clone(self);
        let spawned = std::thread::Builder::new()
            .name("cs-supervisor".into())
            .stack_size(WORKER_STACK)
            .spawn(move || me.run());
        if let Err(e) = spawned {
            self.ctx.log.line(
                LogLevel::Error,
                format_args!(
                    "supervisor: cannot start a thread: {e} (handshakes run one at a time)"
                ),
            );
            return false;
        }
        true
    }

    /// Waits as a follower: true when this thread is to be the receiver again, false when it
    /// ends (idle, or the listener is finished).
    fn follow(&self) -> bool {
        let Ok(mut st) = self.pool.state.lock() else {
            return false;
        };
        st.followers += 1;
        loop {
            if st.promoted > 0 {
                st.promoted -= 1;
                st.followers -= 1;
                return true;
            }
            if st.done {
                st.followers -= 1;
                return false;
            }
            let Ok((g, to)) = self.pool.cv.wait_timeout(st, IDLE) else {
                return false;
            };
            st = g;
            if to.timed_out() && st.promoted == 0 {
                st.followers -= 1;
                return false;
            }
        }
    }

    /// The quick part, in the receiver: everything but a handshake. `Err` is the answer.
    fn triage(&self, n: Notif) -> Result<Job, Answer> {
        let done = |r| Err(Answer::Done(r));
        // A failure while the thread still waits is answered (never left hanging); a thread
        // that is gone needs no answer.
        let fail = |what: &str, e: c_int| {
            if !self.listener.valid(n.id) {
                return Err(Answer::Gone);
            }
            if e == libc::EBADF {
                return done(Err(e)); // the program's own mistake, as the kernel reports it
            }
            self.ctx.log.line(
                LogLevel::Error,
                format_args!(
                    "supervisor: refusing a connect of tid {}: {what}: {} (EACCES)",
                    n.tid,
                    std::io::Error::from_raw_os_error(e)
                ),
            );
            done(Err(libc::EACCES))
        };
        let mut pidfds = self.pidfds.lock().unwrap_or_else(|p| p.into_inner());
        let sock = match pidfds.take(n.tid, n.fd) {
            Some(Ok(s)) => s,
            Some(Err(e)) => return fail("pidfd_getfd", e),
            None => {
                let (pidfd, thread) = match pidfd_of(n.tid) {
                    Ok(p) => p,
                    Err(e) => return fail("pidfd_open", e),
                };
                if !self.listener.valid(n.id) {
                    // The tid may have been reused: pidfd is not our thread.
                    return Err(Answer::Gone);
                }
                let sock = match take_fd(&pidfd, n.fd) {
                    Ok(s) => s,
                    Err(e) => return fail("pidfd_getfd", e),
                };
                if thread {
                    pidfds.insert(n.tid, pidfd);
                }
                sock
            }
        };
        drop(pidfds);
        let domain = match sockopt(sock.as_fd(), libc::SOL_SOCKET, libc::SO_DOMAIN) {
            Ok(d) => d,
            Err(e) => return done(Err(e)), // ENOTSOCK: not a socket, as the kernel says
        };
        if domain != libc::AF_INET && domain != libc::AF_INET6 {
            // unix, netlink, vsock…: the kernel connects them itself, from the program (a
            // unix peer sees the program's credentials and path namespace, not ours).
            return Err(Answer::Continue);
        }
        if n.nr != libc::SYS_connect as c_int {
            return Err(self.datagrams(n, sock.as_fd(), domain));
        }
        // An internet socket: from here on we answer ourselves, whatever the address.
        if n.addr_len() as i32 > 128 || (n.addr_len() as i32) < 0 {
            return done(Err(libc::EINVAL));
        }
        let mut raw = [0u8; 128];
        let raw = &mut raw[..n.addr_len() as usize];
        if let Err(e) = read_mem(n.tid, n.addr_ptr(), raw) {
            return if self.listener.valid(n.id) {
                done(Err(e))
            } else {
                Err(Answer::Gone)
            };
        }
        if !self.listener.valid(n.id) {
            return Err(Answer::Gone); // the bytes we read may not be that thread's any more
        }
        let dest = parse_sockaddr(raw);
        let log = &self.ctx.log;
        // The socket's type is read only where it decides something (every syscall here is
        // on the connect's path): a debug line, an IPv4 address on an IPv6 socket, port 53.
        let ty_read = log.enabled(LogLevel::Debug)
            || dest.is_none_or(|d| d.port() == 53 || (d.is_ipv4() && domain != libc::AF_INET));
        let ty = if ty_read {
            sockopt(sock.as_fd(), libc::SOL_SOCKET, libc::SO_TYPE).unwrap_or(0)
        } else {
            libc::SOCK_STREAM // not read: nothing below depends on it for this address
        };
        if log.enabled(LogLevel::Debug) {
            log.line(
                LogLevel::Debug,
                format_args!(
                    "supervisor: connect from tid {} fd {} ({}) to {}",
                    n.tid,
                    n.fd,
                    kind_name(domain, ty),
                    dest.map_or_else(|| format!("{} address bytes", raw.len()), |d| d.to_string())
                ),
            );
        }
        let Some(dest) = dest else {
            // AF_UNSPEC (disconnect), a short address, another family: the kernel's own
            // answer on our duplicate; none of these can open a connection.
            let r = connect_bytes(sock.as_fd(), raw, Instant::now() + Duration::from_secs(1));
            return done(r);
        };
        let family_ok = match dest {
            SocketAddr::V4(_) => domain == libc::AF_INET || ty == libc::SOCK_DGRAM,
            SocketAddr::V6(_) => domain == libc::AF_INET6,
        };
        if !family_ok {
            // TCP refuses a foreign family (EAFNOSUPPORT/EINVAL): the kernel says which.
            let r = connect_bytes(sock.as_fd(), raw, Instant::now() + Duration::from_secs(1));
            return done(r);
        }
        // The library's own real lookup (a name a `direct` rule sends direct, socks4_resolve =
        // "local"): the user chose to resolve it for real: to the real nameserver.
        if dest.port() == 53
            && self
                .ctx
                .shared
                .as_ref()
                .is_some_and(|s| s.real_lookup(n.tid))
        {
            let r = connect_bytes(sock.as_fd(), raw, Instant::now() + Duration::from_secs(5));
            return done(r);
        }
        if let Some(dns) = &self.ctx.dns
            && let Some(to) = dns.redirect(sock.as_fd(), domain, ty, dest)
        {
            self.ctx.stats.dns.fetch_add(1, Ordering::Relaxed);
            if ty == libc::SOCK_DGRAM {
                let (b, len) = sockaddr_bytes(&to);
                let r = connect_bytes(sock.as_fd(), &b[..len], Instant::now());
                return done(r);
            }
            return Ok(Job {
                notif: n,
                sock,
                work: Work::Responder(to),
            });
        }
        Ok(Job {
            notif: n,
            sock,
            work: Work::Proxy(
                dest,
                chainsocks_core::connect::Known {
                    ty: ty_read.then_some(ty),
                    domain: Some(domain),
                },
            ),
        })
    }

    /// A `sendto` with an address, a `sendmsg` or a `sendmmsg` on an internet socket: every
    /// destination its messages name must be one the program may send to directly (then the
    /// kernel sends, "continue"); a datagram for a proxied destination cannot be carried from
    /// an unconnected socket the library does not see (the replies would come from the hub,
    /// not the destination), so the call fails, as a refused one does — never direct.
    fn datagrams(&self, n: Notif, sock: BorrowedFd, domain: c_int) -> Answer {
        let ty = sockopt(sock, libc::SOL_SOCKET, libc::SO_TYPE).unwrap_or(0);
        if ty != libc::SOCK_DGRAM {
            // TCP ignores a name without MSG_FASTOPEN (refused by the filter); raw sockets
            // pass, as in the library.
            return Answer::Continue;
        }
        let gone_or = |e: c_int| {
            if self.listener.valid(n.id) {
                Answer::Done(Err(e))
            } else {
                Answer::Gone
            }
        };
        // (pointer, length) of each message's name.
        let mut names: Vec<(u64, i64)> = Vec::new();
        match n.nr as libc::c_long {
            libc::SYS_sendto => names.push((n.args[4], n.args[5] as i32 as i64)),
            libc::SYS_sendmsg => {
                let mut m = [0u8; size_of::<libc::msghdr>()];
                if let Err(e) = read_mem(n.tid, n.args[1], &mut m) {
                    return gone_or(e);
                }
                // SAFETY: msghdr is plain data; any bytes are a value.
                let m: libc::msghdr = unsafe { std::ptr::read_unaligned(m.as_ptr().cast()) };
                names.push((m.msg_name as u64, m.msg_namelen as i32 as i64));
            }
            libc::SYS_sendmmsg => {
                // The kernel sends at most UIO_MAXIOV messages per call.
                let vlen = (n.args[2] as u32).min(1024) as usize;
                let mut v = vec![0u8; vlen * size_of::<libc::mmsghdr>()];
                if let Err(e) = read_mem(n.tid, n.args[1], &mut v) {
                    return gone_or(e);
                }
                for c in v.chunks_exact(size_of::<libc::mmsghdr>()) {
                    // SAFETY: mmsghdr is plain data; any bytes are a value.
                    let m: libc::mmsghdr = unsafe { std::ptr::read_unaligned(c.as_ptr().cast()) };
                    names.push((
                        m.msg_hdr.msg_name as u64,
                        m.msg_hdr.msg_namelen as i32 as i64,
                    ));
                }
            }
            _ => return Answer::Done(Err(libc::ENOSYS)),
        }
        let sendto = n.nr as libc::c_long == libc::SYS_sendto;
        for (ptr, len) in names {
            // sendmsg: a null name or a length of 0 is no name, a longer one is cut at 128;
            // sendto: any non-null pointer is a name (the kernel refuses lengths over 128).
            if ptr == 0 || (!sendto && len == 0) || len < 0 || (sendto && len > 128) {
                continue;
            }
            let mut raw = [0u8; 128];
            let raw = &mut raw[..len.min(128) as usize];
            if let Err(e) = read_mem(n.tid, ptr, raw) {
                return gone_or(e);
            }
            let chainsocks_core::sys::DgramTo::To(dest) =
                chainsocks_core::sys::datagram_to(domain, Some(raw))
            else {
                continue; // no destination, or one the kernel refuses: nothing can leave
            };
            if let Err(e) = super::datagram_allowed(&self.ctx, n.tid, sock, domain, dest) {
                return gone_or(e);
            }
        }
        if !self.listener.valid(n.id) {
            return Answer::Gone; // what we read may not be that thread's any more
        }
        Answer::Continue
    }

    /// Runs a handshake and answers its notification, passing `role` on where it would
    /// make another connect wait.
    fn work(&self, job: Job, role: &dyn Receiving) {
        let n = job.notif;
        let r = match job.work {
            Work::Responder(to) => {
                role.hand_over();
                let (b, len) = sockaddr_bytes(&to);
                connect_bytes(
                    job.sock.as_fd(),
                    &b[..len],
                    Instant::now() + Duration::from_secs(5),
                )
            }
            Work::Proxy(dest, known) => {
                self.ctx.stats.proxied.fetch_add(1, Ordering::Relaxed);
                let who = Requester { tid: n.tid };
                super::proxy_connect(&self.ctx, job.sock.as_fd(), dest, known, &who, role)
            }
        };
        self.listener.send(n.id, Answer::Done(r));
    }
}

fn kind_name(domain: c_int, ty: c_int) -> &'static str {
    match (domain, ty) {
        (libc::AF_INET, libc::SOCK_STREAM) => "tcp",
        (libc::AF_INET6, libc::SOCK_STREAM) => "tcp6",
        (libc::AF_INET, libc::SOCK_DGRAM) => "udp",
        (libc::AF_INET6, libc::SOCK_DGRAM) => "udp6",
        (libc::AF_INET, _) => "inet",
        _ => "inet6",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sockaddrs_as_the_kernel_reads_them() {
        let v4: SocketAddr = "1.2.3.4:80".parse().unwrap();
        let (b, len) = sockaddr_bytes(&v4);
        assert_eq!(len, 16);
        assert_eq!(parse_sockaddr(&b[..16]), Some(v4));
        assert_eq!(parse_sockaddr(&b[..15]), None);
        let v6: SocketAddr = "[2001:db8::1]:443".parse().unwrap();
        let (b, len) = sockaddr_bytes(&v6);
        assert_eq!(len, 28);
        assert_eq!(parse_sockaddr(&b[..28]), Some(v6));
        // 24..27 bytes: accepted by the kernel without a scope id
        assert_eq!(parse_sockaddr(&b[..24]), Some(v6));
        assert_eq!(parse_sockaddr(&b[..23]), None);
        let mut padded = [0u8; 113];
        padded[..16].copy_from_slice(&sockaddr_bytes(&v4).0[..16]);
        assert_eq!(parse_sockaddr(&padded), Some(v4));
        assert_eq!(parse_sockaddr(&[0, 0]), None); // AF_UNSPEC
        assert_eq!(parse_sockaddr(&[]), None);
        let unix = (libc::AF_UNIX as u16).to_ne_bytes();
        assert_eq!(parse_sockaddr(&[unix[0], unix[1], b'/', b'x']), None);
    }
}
