//! The seccomp user-notification supervisor: every process of the launch runs under a filter
//! that reports its `connect` calls to the launcher, which performs them itself — so static
//! binaries, Go programs and raw syscalls are proxied like dynamically linked programs — and
//! its datagram sends with an address, which the kernel sends only where the UDP route allows
//! a direct datagram ([`datagram_allowed`]).
//!
//! Owns: the parts in the launcher (feature probe, the child's installation and the listener
//! handed over the launch channel, the notification loop and its threads, the DNS redirect to
//! the launch's responder) and [`proxy_connect`], the ONE place where a supervised internet
//! connect is routed.
//! Must never: answer "continue" for an internet socket, connect one directly, or leave a
//! notified thread waiting forever (every notification is answered, or its thread is gone).
//! Not a security boundary (seccomp_unotify(2) says so): `--isolate` is the leak-proof mode.
//!
//! Layout: [`filter`] (BPF program, installation, probe), [`notify`] (RECV/SEND loop, taking
//! the program's socket, the leader/follower threads), [`responder`] (fake-DNS server for programs that send
//! their own DNS), [`slice`] (the threads' short scheduling slice).

pub mod filter;
mod host;
mod notify;
pub mod responder;
pub mod shared;
mod slice;

use std::net::{IpAddr, SocketAddr};
use std::os::fd::{AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use chainsocks_core::config::{Config, LogLevel};

pub use filter::{Program, probe};

/// Counters, read at exit for the debug summary line (and by the tests through it).
#[derive(Default)]
pub struct Stats {
    pub notifications: AtomicU64,
    pub continued: AtomicU64,
    pub proxied: AtomicU64,
    pub dns: AtomicU64,
}

/// The supervisor's log lines: the same level and file as the library's
/// (`CHAINSOCKS_LOG`, `CHAINSOCKS_LOG_FILE`, else the config), one `write` per line.
pub struct Log {
    level: LogLevel,
    file: Option<PathBuf>,
}

impl Log {
    pub fn new(cfg: &Config) -> Log {
        let env = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
        let mut level = if cfg.quiet {
            cfg.log.min(LogLevel::Warn)
        } else {
            cfg.log
        };
        if let Some(l) = env("CHAINSOCKS_LOG").and_then(|s| LogLevel::parse(&s)) {
            level = l;
        }
        let file = env("CHAINSOCKS_LOG_FILE")
            .map(PathBuf::from)
            .or_else(|| cfg.log_file.clone());
        Log { level, file }
    }

    pub fn enabled(&self, level: LogLevel) -> bool {
        level != LogLevel::Off && level <= self.level
    }

    pub fn line(&self, level: LogLevel, msg: std::fmt::Arguments) {
        if !self.enabled(level) {
            return;
        }
        use std::io::Write;
        let line = match &self.file {
            Some(_) => format!("chainsocks[{}]: {msg}\n", std::process::id()),
            None => format!("chainsocks: {msg}\n"),
        };
        match &self.file {
            Some(p) => {
                if let Ok(mut f) = std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(p)
                {
                    let _ = f.write_all(line.as_bytes());
                }
            }
            None => {
                let _ = std::io::stderr().write_all(line.as_bytes());
            }
        }
    }
}

/// The receiver's role, held by the thread that runs a handshake until the handshake would
/// make another connect wait (leader/followers, notify.rs).
pub trait Receiving {
    /// Passes the role on now (before anything that blocks where the listener cannot be
    /// watched: a lookup, a blocking connect); once only.
    fn hand_over(&self);
    /// The listener while this thread still holds the role: a wait for the proxy watches it
    /// too and hands the role over once a notification is pending, so a handshake that no
    /// other connect comes to meet costs no thread wake-up.
    fn watch(&self) -> Option<std::os::fd::RawFd>;
}

/// No role to pass on (decisions that never wait).
impl Receiving for () {
    fn hand_over(&self) {}
    fn watch(&self) -> Option<std::os::fd::RawFd> {
        None
    }
}

/// Who made a supervised connect.
#[derive(Debug, Clone, Copy)]
pub struct Requester {
    /// The thread id (in the launcher's pid namespace; /proc/<tid> names the program).
    pub tid: u32,
}

impl Requester {
    /// A numeric field of the thread's /proc status.
    fn status(&self, field: &str) -> Option<i32> {
        std::fs::read_to_string(format!("/proc/{}/status", self.tid))
            .ok()?
            .lines()
            .find_map(|l| l.strip_prefix(field))
            .and_then(|v| v.trim().parse().ok())
    }

    /// The process (thread group) id of the thread.
    pub fn pid(&self) -> i32 {
        self.status("Tgid:").unwrap_or(self.tid as i32)
    }

    /// Its parent process.
    pub fn ppid(&self) -> i32 {
        self.status("PPid:").unwrap_or(0)
    }

    /// The program's executable.
    pub fn program(&self) -> String {
        std::fs::read_link(format!("/proc/{}/exe", self.tid))
            .map(|p| p.to_string_lossy().into_owned())
            .unwrap_or_default()
    }
}

/// Everything the supervisor's decisions read.
pub struct Ctx {
    pub cfg: Config,
    pub log: Log,
    /// Where a program's own DNS goes instead (None: remote DNS off, or no responder).
    pub dns: Option<responder::Redirect>,
    pub stats: Stats,
    /// The launch's shared state (fake-DNS table, proxy health), as every process maps it.
    pub shared: Option<shared::Launch>,
    /// Where supervised UDP sockets are connected to reach their association's relay.
    pub hub: Option<crate::udphub::Hub>,
    /// What [`datagram_allowed`] answered, per thread and destination (so a program sending
    /// many datagrams is logged and recorded once, as the library does).
    pub datagrams: std::sync::Mutex<std::collections::HashMap<(u32, SocketAddr), Result<(), i32>>>,
}

/// Routes one supervised AF_INET/AF_INET6 connect: `fd` is our duplicate of the program's
/// socket (same open file description: connecting it connects the program's socket), `dest`
/// the address the program asked for, read once, `known` what triage read of the socket.
/// Returns what the program's connect returns.
/// The decision and the dial are the shared dialer's ([`chainsocks_core::connect`]), the
/// same as the library's; a destination that goes direct is connected here on the duplicate
/// with the kernel's own semantics (EINPROGRESS for a non-blocking socket) — never "continue".
pub fn proxy_connect(
    ctx: &Ctx,
    fd: BorrowedFd,
    dest: SocketAddr,
    known: chainsocks_core::connect::Known,
    who: &Requester,
    role: &dyn Receiving,
) -> Result<(), i32> {
    let host = host::SupHost::new(ctx, who, role);
    match chainsocks_core::connect::connect_known(&host, fd.as_raw_fd(), dest, known) {
        chainsocks_core::connect::Outcome::Done(r) => r.map(|_| ()).map_err(|e| e.errno()),
        chainsocks_core::connect::Outcome::Real(_) => {
            // Direct (a rule, localnet, a UDP destination the policy allows): the kernel's
            // connect, on our duplicate, with the program's flags (a blocking one waits).
            role.hand_over();
            chainsocks_core::sys::connect(fd.as_raw_fd(), &dest, false)
        }
    }
}

/// Whether a supervised program may send a datagram to `dest` from an unconnected UDP socket
/// (`sock`, our duplicate): the library's own real lookups (port 53) and destinations the
/// shared UDP route sends direct, yes; a DNS query to a nameserver (the responder cannot
/// answer it from the nameserver's address), a proxied destination (no framing is possible on
/// a socket the library does not see) and a refused one, no: the errno the program gets,
/// logged and recorded once per thread and destination.
pub fn datagram_allowed(
    ctx: &Ctx,
    tid: u32,
    sock: BorrowedFd,
    domain: libc::c_int,
    dest: SocketAddr,
) -> Result<(), i32> {
    if dest.port() == 53 && ctx.shared.as_ref().is_some_and(|s| s.real_lookup(tid)) {
        return Ok(());
    }
    let key = (tid, dest);
    if let Ok(seen) = ctx.datagrams.lock()
        && let Some(r) = seen.get(&key)
    {
        return *r;
    }
    let who = Requester { tid };
    let host = host::SupHost::new(ctx, &who, &()); // decisions only: nothing waits
    let dns = ctx
        .dns
        .as_ref()
        .and_then(|d| d.redirect(sock, domain, libc::SOCK_DGRAM, dest));
    let r = match dns {
        Some(to) if to != dest => {
            ctx.log.line(
                LogLevel::Info,
                format_args!(
                    "[pid {}] a DNS query to {dest} from an unconnected socket (musl's resolver sends them so) cannot go to the launch's DNS responder: refused (EACCES); connected sockets (glibc, Go) are answered",
                    who.pid()
                ),
            );
            Err(libc::EACCES)
        }
        Some(_) => Ok(()),
        None => {
            match chainsocks_core::connect::udp(&host, dest, "datagram from an unconnected socket")
            {
                chainsocks_core::connect::Outcome::Real(_) => Ok(()),
                chainsocks_core::connect::Outcome::Done(r) => r.map(|_| ()).map_err(|e| e.errno()),
            }
        }
    };
    if let Ok(mut seen) = ctx.datagrams.lock() {
        if seen.len() >= 4096 {
            seen.clear();
        }
        seen.insert(key, r);
    }
    r
}

/// A running supervisor: the receiver thread and its context.
pub struct Running {
    sup: Arc<notify::Supervisor>,
}

impl Running {
    /// One debug line with what the supervisor did (the tests count notifications with it).
    pub fn finish(&self) {
        let ctx = self.sup.ctx();
        let s = &ctx.stats;
        let g = |a: &AtomicU64| a.load(Ordering::Relaxed);
        ctx.log.line(
            LogLevel::Debug,
            format_args!(
                "supervisor: {} notifications ({} continued, {} proxied, {} to the DNS responder; {} handshakes at once at most)",
                g(&s.notifications),
                g(&s.continued),
                g(&s.proxied),
                g(&s.dns),
                self.sup.most_at_once()
            ),
        );
    }
}

/// Starts the receiver on `listener` (the child's filter).
pub fn start(listener: OwnedFd, ctx: Ctx) -> Result<Running, String> {
    notify::check_sizes()?;
    // With the kernel's synchronous wake-up where it has it (see Listener::new).
    let l = notify::Listener::new(listener);
    let sup = notify::Supervisor::new(l, ctx);
    let runner = Arc::clone(&sup);
    std::thread::Builder::new()
        .name("cs-supervisor".into())
        .stack_size(256 * 1024)
        .spawn(move || runner.run())
        .map_err(|e| format!("starting the supervisor: {e}"))?;
    Ok(Running { sup })
}

/// Child side, after fork (and after `--isolate`'s setup): installs the filter and hands the
/// listener to the launcher. On failure it reports why and waits for the launcher's verdict:
/// `Ok(())` to run the program without the supervisor (the preload alone), `Err` to exit.
pub fn child_install(prog: &Program, chan: &UnixStream) -> Result<(), ()> {
    match filter::install(prog) {
        Ok(fd) => {
            let sent = crate::isolate::send_fds(chan, &[fd]);
            // SAFETY: our listener copy; the launcher has its own now. The program must not
            // hold it (it could answer its own notifications).
            unsafe { libc::close(fd) };
            sent.map_err(|_| ())
        }
        Err(e) => {
            crate::isolate::report_failure(chan, &filter::install_error(e));
            let mut verdict = [0u8; 1];
            use std::io::Read;
            match (&*chan).read(&mut verdict) {
                Ok(1) if verdict[0] == b'g' => Ok(()),
                _ => Err(()),
            }
        }
    }
}

/// Launcher side: the child's listener, or why it has none.
pub fn receive_listener(chan: &UnixStream) -> Result<OwnedFd, String> {
    let mut fds = crate::isolate::receive(chan, 1)?;
    fds.pop().ok_or_else(|| "no listener received".into())
}

/// The nameservers of a resolv.conf text (none listed: 127.0.0.1 and ::1, as resolvers do).
pub fn nameservers(resolv_conf: &str) -> Vec<IpAddr> {
    let mut out: Vec<IpAddr> = resolv_conf
        .lines()
        .filter_map(|l| {
            let mut w = l.split_whitespace();
            (w.next() == Some("nameserver"))
                .then(|| w.next())
                .flatten()
                .and_then(|a| a.split('%').next())
                .and_then(|a| a.parse().ok())
        })
        .collect();
    if out.is_empty() {
        out = vec![
            IpAddr::V4(std::net::Ipv4Addr::LOCALHOST),
            IpAddr::V6(std::net::Ipv6Addr::LOCALHOST),
        ];
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolv_conf_nameservers() {
        let t = "# x\nnameserver 10.0.0.1\nnameserver fe80::1%eth0\noptions ndots:2\nnameserver\n";
        assert_eq!(
            nameservers(t),
            vec![
                "10.0.0.1".parse::<IpAddr>().unwrap(),
                "fe80::1".parse().unwrap()
            ]
        );
        assert_eq!(nameservers("search x\n").len(), 2);
    }
}
