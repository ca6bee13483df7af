//! What a connect does — one decision, one dialer — for every caller: the preloaded library on
//! the program's own socket, and the launcher's seccomp supervisor on its duplicate of it.
//!
//! Owns: classification (which connects are proxied, from the socket itself), the destination
//! (dnat, then the name behind a fake address), the routing decision (localnet / rules / chain /
//! proxy-only policy), the UDP policy, chain attempts with dead-proxy marks, the handshake on the
//! given fd (the first proxy's addresses tried in turn; flags, SO_RCVLOWAT restored exactly on
//! every path; the program's SO_SNDTIMEO bounds a blocking socket), the per-connection log line
//! and report record. What differs per caller (config and shared state, logging, the report,
//! waiting with the caller's signal rules, getpeername bookkeeping) is the [`Host`].
//! Must never: connect the socket anywhere but the first proxy when a proxied destination fails
//! (no fallback to direct), leave the socket half-connected after a failure, replace the
//! program's socket, or go through a libc symbol the library hooks (I/O is [`crate::sys`]).

use std::fmt::Write as _;
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use libc::c_int;

use crate::Error;
use crate::chain::{self, By, Health, Route as Way};
use crate::config::{
    ChainMode, ChainView, Config, LogLevel, Policy, Proxy, ProxyKind, Socks4Resolve,
};
use crate::dial::{self, DialError, Limits, Phase, Step, Transport};
use crate::error::errno_name;
use crate::proto::Dest;
use crate::report::{Event, Kind};
use crate::rules::Destination;
use crate::sys;

/// Why a call goes to the real function (the kernel) untouched.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Bypass {
    /// Not an AF_INET / AF_INET6 address or socket (unix sockets, AF_UNSPEC disconnect…), or an
    /// address shorter than the kernel accepts.
    NotInet,
    /// The address family does not match the socket's: the kernel's own error (EINVAL,
    /// EAFNOSUPPORT).
    FamilyMismatch,
    /// Not a stream socket (raw…), or a UDP datagram the policy lets through.
    NotStream,
    /// Not a socket at all, or a bad fd: the kernel reports the error.
    NotSocket,
    /// `proxy_dns = false`: the program resolves names itself.
    ProxyDnsOff,
    /// No host name to resolve (NULL node, AI_NUMERICHOST, an address literal).
    Numeric,
    /// A reverse lookup of an address outside the fake ranges.
    NotFake,
    /// localnet or a `direct` rule: the program's own address, unchanged.
    Direct,
}

impl Bypass {
    /// Whether the call concerns an internet destination we decided to let through (the
    /// preload then marks its connect so a supervising filter does not ask again).
    pub fn decided_inet(self) -> bool {
        matches!(self, Bypass::Direct | Bypass::NotStream)
    }
}

/// What a hook's body decided.
#[derive(Debug)]
pub enum Outcome {
    /// Call the real function with the program's arguments.
    Real(Bypass),
    /// Handled: the return value, or the error to report.
    Done(Result<c_int, Error>),
}

/// What the dialer needs from its caller.
pub trait Host {
    /// Undoes what [`Host::begin_dial`] changed when dropped.
    type DialScope;
    /// The configuration, or why there is none (every proxied connect then fails closed).
    fn config(&self) -> Result<&Config, &str>;
    /// The launch's shared proxy health.
    fn health(&self) -> Health<'_>;
    /// The name behind `ip` if it is in a fake range (`None`: not fake, or remote DNS off;
    /// `Some(Err)`: fake but never handed out).
    fn fake_name(&self, ip: IpAddr) -> Option<Result<String, Error>>;
    fn log_enabled(&self, level: LogLevel) -> bool;
    fn log(&self, level: LogLevel, msg: std::fmt::Arguments);
    fn report_enabled(&self) -> bool;
    fn report(&self, e: &Event);
    /// The real resolver (for a name a `direct` rule sends direct).
    fn resolve_real(&self, name: &str, family: c_int) -> Result<IpAddr, String>;
    /// `fd` is now connected to `actual` (a proxy, or a dnat target) on behalf of `asked`:
    /// `getpeername` reports `asked` for as long as the kernel reports `actual`.
    fn set_peer(&self, fd: c_int, asked: SocketAddr, actual: SocketAddr);
    /// Called before the handshake waits (the preload blocks the interrupting signals).
    fn begin_dial(&self) -> Self::DialScope;
    /// Waits until `fd` has one of `events` (or an error/hangup), retrying signals the program
    /// does not mean to interrupt with, until `deadline` (then `Err(Timeout)`);
    /// `Err(Interrupted)` when a signal that must interrupt arrived.
    fn wait(&self, fd: c_int, events: i16, deadline: Instant) -> Result<(), Error>;
    /// A `connect` of the UDP socket `fd` to `dest`; `domain` is its SO_DOMAIN if the caller
    /// read it already. The default applies the UDP route without carrying datagrams: direct
    /// destinations pass, the rest is refused.
    fn udp_connect(&self, fd: c_int, dest: SocketAddr, domain: Option<c_int>) -> Outcome
    where
        Self: Sized,
    {
        let _ = (fd, domain);
        udp(self, dest, "connect")
    }
}

/// What a caller already read of the socket (`SO_TYPE`, `SO_DOMAIN`): [`connect_known`] reads
/// only what is `None`, so no caller pays a syscall twice on the connect's path.
#[derive(Debug, Clone, Copy, Default)]
pub struct Known {
    pub ty: Option<c_int>,
    pub domain: Option<c_int>,
}

/// The body of a `connect(fd, dest)` on an AF_INET / AF_INET6 address.
pub fn connect<H: Host>(h: &H, fd: c_int, dest: SocketAddr) -> Outcome {
    connect_known(h, fd, dest, Known::default())
}

/// [`connect`], for a caller that has read some of the socket's facts already (the
/// supervisor's triage): those must be this socket's, read from it, never guessed.
pub fn connect_known<H: Host>(h: &H, fd: c_int, dest: SocketAddr, known: Known) -> Outcome {
    let read = |v: Option<c_int>, opt| {
        v.map_or_else(|| sys::getsockopt_int(fd, libc::SOL_SOCKET, opt), Ok)
    };
    match read(known.ty, libc::SO_TYPE) {
        Ok(libc::SOCK_STREAM) => {}
        Ok(libc::SOCK_DGRAM) => return h.udp_connect(fd, dest, known.domain),
        Ok(_) => return Outcome::Real(Bypass::NotStream),
        Err(_) => return Outcome::Real(Bypass::NotSocket),
    }
    let family = match read(known.domain, libc::SO_DOMAIN) {
        Ok(f @ (libc::AF_INET | libc::AF_INET6)) => f,
        _ => return Outcome::Real(Bypass::NotInet),
    };
    if (family == libc::AF_INET) != dest.is_ipv4() {
        // A program bug the kernel answers itself (EINVAL / EAFNOSUPPORT): not ours to "fix".
        return Outcome::Real(Bypass::FamilyMismatch);
    }
    let cfg = match h.config() {
        Ok(c) => c,
        Err(why) => {
            h.log(
                LogLevel::Error,
                format_args!("connect to {dest} refused: {why}"),
            );
            return Outcome::Done(Err(Error::Config(why.to_string())));
        }
    };

    // A program's own DNS over TCP (port 53 of a nameserver): the launch's responder.
    if let Some(to) = cfg.dns_redirect.as_ref().and_then(|r| {
        r.target(dest, libc::SOCK_STREAM, || {
            (family, family == libc::AF_INET6 && sys::v6only(fd))
        })
    }) {
        h.log(
            LogLevel::Debug,
            format_args!("{dest}: DNS over TCP to the launch's responder ({to})"),
        );
        let r = sys::connect(fd, &to, true).map_err(Error::Os);
        if matches!(r, Ok(()) | Err(Error::Os(libc::EINPROGRESS))) {
            h.set_peer(fd, dest, to);
        }
        return Outcome::Done(r.map(|()| 0));
    }

    // The destination: dnat first, then the name behind a fake address.
    let asked = unmap(dest);
    let addr = cfg
        .dnat
        .iter()
        .find_map(|n| n.rewrite(asked))
        .unwrap_or(asked);
    let name = match h.fake_name(addr.ip()) {
        None => None,
        Some(Ok(n)) => Some(n),
        Some(Err(e)) => {
            h.log(
                LogLevel::Info,
                format_args!("connect to {dest} refused: {e}"),
            );
            report(
                h,
                Kind::Block,
                None,
                Some(addr),
                Some(&"fake-ip"),
                None,
                &Err(e.clone()),
                None,
            );
            return Outcome::Done(Err(e));
        }
    };
    let d = Destination {
        ip: if name.is_some() {
            None
        } else {
            Some(addr.ip())
        },
        name: name.as_deref(),
        port: addr.port(),
    };
    let decision = chain::decide(cfg, &d);
    // Formatted only if a log line or a report record is written.
    let shown = Shown {
        name: name.as_deref(),
        addr,
    };
    let by = decision.by;
    match decision.route {
        Way::Block => {
            h.log(LogLevel::Info, format_args!("{shown} blocked ({by})"));
            let e = Error::Os(cfg.block_errno.errno());
            report(
                h,
                Kind::Block,
                name.as_deref(),
                Some(addr),
                Some(&by),
                None,
                &Err(e.clone()),
                None,
            );
            Outcome::Done(Err(e))
        }
        // An allowlist entry marked direct is allowed direct also under proxy-only (as
        // `--allow-direct` is); under `--isolate` the launcher gives it a forwarder.
        Way::Direct
            if cfg.policy == Policy::ProxyOnly
                && !matches!(by, By::Allow(_))
                && !cfg.allowed_direct.iter().any(|p| p.matches(&d)) =>
        {
            h.log(
                LogLevel::Info,
                format_args!("{shown} blocked (policy proxy-only; {by} would go direct)"),
            );
            let e = Error::Os(libc::EACCES);
            report(
                h,
                Kind::Block,
                name.as_deref(),
                Some(addr),
                Some(&"policy"),
                None,
                &Err(e.clone()),
                None,
            );
            Outcome::Done(Err(e))
        }
        Way::Direct => {
            let start = Instant::now();
            let r = direct(h, fd, family, dest, addr, name.as_deref(), by, &shown);
            let outcome = match &r {
                Outcome::Done(Err(e)) => Err(e.clone()),
                _ => Ok(()),
            };
            report(
                h,
                Kind::Connect,
                name.as_deref(),
                Some(addr),
                Some(&by),
                Some("direct"),
                &outcome,
                Some(start),
            );
            r
        }
        Way::Chain(view) => {
            let target = match target_of(h, cfg, view, addr, name.clone()) {
                Ok(t) => t,
                Err(e) => return Outcome::Done(Err(e)),
            };
            let debug = h.log_enabled(LogLevel::Debug);
            let mut steps = Vec::new();
            // Read only by the debug timeline and the report.
            let start = (debug || h.report_enabled()).then(Instant::now);
            let (used, result) = dial_chain(
                h,
                fd,
                family,
                cfg,
                view,
                &target,
                debug.then_some(&mut steps),
            );
            if h.log_enabled(LogLevel::Info) {
                let line = describe(view, decision.by, &used, &target, &result, start, &steps);
                h.log(LogLevel::Info, format_args!("{line}"));
            }
            if let Ok(actual) = result {
                h.set_peer(fd, dest, actual);
            }
            let outcome = result.as_ref().map(|_| ()).map_err(|e| e.error.clone());
            let ip = if name.is_some() { None } else { Some(addr) };
            report(
                h,
                Kind::Connect,
                name.as_deref(),
                ip.or(Some(addr)),
                Some(&by),
                Some(view.name),
                &outcome,
                start,
            );
            Outcome::Done(result.map(|_| 0).map_err(|e| e.error))
        }
    }
}

/// A UDP `connect` or send with an address, for a caller that does not carry datagrams
/// through an association: the route of [`crate::udp::plan`] decides; a direct destination
/// passes untouched (the kernel), anything else is refused — a destination routed to a chain
/// (ENETUNREACH: never sent direct), a fake address, a `block` rule, the proxy-only policy.
pub fn udp<H: Host>(h: &H, dest: SocketAddr, what: &str) -> Outcome {
    let Ok(cfg) = h.config() else {
        return Outcome::Real(Bypass::NotStream);
    };
    let (plan, by) = crate::udp::plan(h, cfg, dest);
    let e = match plan {
        Ok(crate::udp::UdpPlan::Direct) => {
            if !unmap(dest).ip().is_loopback() {
                report(
                    h,
                    Kind::Udp,
                    None,
                    Some(unmap(dest)),
                    by.as_ref().map(|b| b as &dyn std::fmt::Display),
                    Some("direct"),
                    &Ok(()),
                    None,
                );
            }
            return Outcome::Real(Bypass::NotStream);
        }
        Ok(_) => Error::Os(libc::ENETUNREACH),
        Err(e) => e,
    };
    let d = unmap(dest);
    let name = h.fake_name(d.ip()).and_then(Result::ok);
    h.log(
        LogLevel::Info,
        format_args!(
            "UDP {what} to {} refused ({})",
            Shown {
                name: name.as_deref(),
                addr: d
            },
            errno_name(e.errno())
        ),
    );
    report(
        h,
        Kind::Udp,
        name.as_deref(),
        Some(d),
        by.as_ref().map(|b| b as &dyn std::fmt::Display),
        None,
        &Err(e.clone()),
        None,
    );
    Outcome::Done(Err(e))
}

/// Records an event in the egress report, if there is one.
#[allow(clippy::too_many_arguments)]
fn report<H: Host>(
    h: &H,
    kind: Kind,
    name: Option<&str>,
    addr: Option<SocketAddr>,
    rule: Option<&dyn std::fmt::Display>,
    chain: Option<&str>,
    outcome: &Result<(), Error>,
    start: Option<Instant>,
) {
    if !h.report_enabled() {
        return;
    }
    let rule = rule.map(|r| r.to_string());
    let result = match outcome {
        Ok(()) => "ok",
        Err(e) => errno_name(e.errno()),
    };
    h.report(&Event {
        kind,
        name,
        ip: if name.is_some() {
            None
        } else {
            addr.map(|a| a.ip())
        },
        port: addr.map(|a| a.port()),
        rule: rule.as_deref(),
        chain,
        result,
        ms: start.map(|s| s.elapsed().as_secs_f64() * 1e3),
    });
}

/// `name:port` or `ip:port`, formatted only when a log line or a record needs it.
pub struct Shown<'a> {
    name: Option<&'a str>,
    addr: SocketAddr,
}

impl std::fmt::Display for Shown<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.name {
            Some(n) => write!(f, "{n}:{}", self.addr.port()),
            None => write!(f, "{}", self.addr),
        }
    }
}

/// A direct connection: the program's own address (unchanged: the real connect with its own
/// arguments), a dnat rewrite, or a name resolved for real now.
#[allow(clippy::too_many_arguments)]
fn direct<H: Host>(
    h: &H,
    fd: c_int,
    family: c_int,
    asked: SocketAddr,
    addr: SocketAddr,
    name: Option<&str>,
    by: By,
    shown: &Shown,
) -> Outcome {
    let to = match name {
        None => addr,
        Some(n) => {
            let want = if family == libc::AF_INET {
                libc::AF_INET
            } else {
                libc::AF_UNSPEC
            };
            match h.resolve_real(n, want) {
                Ok(ip) => SocketAddr::new(ip, addr.port()),
                Err(e) => {
                    h.log(
                        LogLevel::Info,
                        format_args!("{shown} direct ({by}): cannot resolve: {e}"),
                    );
                    return Outcome::Done(Err(Error::Os(libc::EHOSTUNREACH)));
                }
            }
        }
    };
    h.log(LogLevel::Info, format_args!("{shown} direct ({by})"));
    if name.is_none() && addr == unmap(asked) {
        // Not rewritten: the program's own arguments, to the real connect (exact semantics).
        return Outcome::Real(Bypass::Direct);
    }
    let to = match (family, to.ip()) {
        (libc::AF_INET6, IpAddr::V4(v4)) => {
            SocketAddr::new(IpAddr::V6(v4.to_ipv6_mapped()), to.port())
        }
        _ => to,
    };
    let r = sys::connect(fd, &to, true).map_err(Error::Os);
    if matches!(r, Ok(()) | Err(Error::Os(libc::EINPROGRESS))) {
        // Connected (or connecting) somewhere else than asked: getpeername shows what was asked.
        h.set_peer(fd, asked, to);
    }
    Outcome::Done(r.map(|()| 0))
}

/// What the chain is asked to reach: the name (from the fake-DNS table) or the address.
fn target_of<H: Host>(
    h: &H,
    cfg: &Config,
    view: ChainView,
    addr: SocketAddr,
    name: Option<String>,
) -> Result<Dest, Error> {
    let Some(name) = name else {
        return Ok(Dest::Ip(addr));
    };
    // A plain SOCKS4 last hop cannot carry a name: resolve it here only if asked to.
    let last_is_socks4 = view
        .proxies
        .last()
        .is_some_and(|p| p.kind == ProxyKind::Socks4);
    if last_is_socks4 && cfg.socks4_resolve == Socks4Resolve::Local {
        let ip = h
            .resolve_real(&name, libc::AF_INET)
            .map_err(|_| Error::Os(libc::EHOSTUNREACH))?;
        return Ok(Dest::Ip(SocketAddr::new(ip, addr.port())));
    }
    Ok(Dest::Name(name, addr.port()))
}

/// An IPv4-mapped IPv6 destination is sent to the proxy as the IPv4 address it stands for.
pub fn unmap(sa: SocketAddr) -> SocketAddr {
    match sa {
        SocketAddr::V6(v6) => match v6.ip().to_ipv4_mapped() {
            Some(v4) => SocketAddr::new(IpAddr::V4(v4), v6.port()),
            None => sa,
        },
        v4 => v4,
    }
}

/// Monotonic milliseconds (the same clock in every process, for shared dead marks).
pub fn now_ms() -> u64 {
    // SAFETY: zeroed timespec, then clock_gettime (vDSO) fills it.
    let mut ts: libc::timespec = unsafe { std::mem::zeroed() };
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1000 + ts.tv_nsec as u64 / 1_000_000
}

/// A uniform random number below `n` (getrandom: fork children do not repeat their parent).
pub(crate) fn random_below(n: usize) -> usize {
    let mut b = [0u8; 8];
    // SAFETY: b is writable for 8 bytes.
    unsafe { libc::syscall(libc::SYS_getrandom, b.as_mut_ptr(), b.len(), 0) };
    (u64::from_ne_bytes(b) % n.max(1) as u64) as usize
}

/// The socket's state the dial changes and restores: file status flags, SO_RCVLOWAT.
struct Saved {
    flags: c_int,
    /// The program's SO_RCVLOWAT when it was not 1 (lowered for the handshake).
    rcvlowat: Option<c_int>,
}

/// A failure before the first proxy was reached.
fn at_connect(error: Error) -> DialError {
    DialError {
        hop: 0,
        phase: Phase::Connect,
        error,
    }
}

/// The proxies a dial went through: a strict chain's own list (no copy), or the ones a
/// dynamic / random / round-robin attempt picked.
enum Hops<'a> {
    All(&'a [Proxy]),
    Picked(Vec<&'a Proxy>),
}

impl<'a> Hops<'a> {
    fn get(&self, k: usize) -> Option<&'a Proxy> {
        match self {
            Hops::All(p) => p.get(k),
            Hops::Picked(p) => p.get(k).copied(),
        }
    }

    fn iter(&self) -> impl Iterator<Item = &'a Proxy> + '_ {
        (0..).map_while(|k| self.get(k))
    }
}

/// Connects through `view`, retrying without proxies found dead (except in strict chains, and
/// never when the destination itself failed). Returns the proxies of the last attempt.
fn dial_chain<'a, H: Host>(
    h: &H,
    fd: c_int,
    family: c_int,
    cfg: &Config,
    view: ChainView<'a>,
    target: &Dest,
    steps: Option<&mut Vec<Step>>,
) -> (Hops<'a>, Result<SocketAddr, DialError>) {
    let flags = match sys::get_fl(fd) {
        Ok(f) => f,
        Err(e) => return (Hops::Picked(Vec::new()), Err(at_connect(Error::Os(e)))),
    };
    let blocking = flags & libc::O_NONBLOCK == 0;
    let budget = if blocking {
        cfg.handshake_timeout_ms
    } else {
        cfg.nonblocking_timeout_ms
            .unwrap_or(cfg.handshake_timeout_ms)
    };
    let now = Instant::now();
    let mut deadline = now + Duration::from_millis(budget);
    if blocking && let Some(t) = send_timeout(fd) {
        // The kernel bounds a blocking connect by SO_SNDTIMEO: so does the handshake.
        deadline = deadline.min(now + t);
    }
    let _scope = h.begin_dial();
    let saved = prepare(fd, flags);
    let r = if view.mode == ChainMode::Strict {
        // Every proxy, in order, once: a strict chain is never retried and has no dead marks.
        let r = if view.proxies.is_empty() {
            Err(at_connect(Error::NoProxyAlive))
        } else {
            dial_on(h, fd, family, cfg, view.proxies, target, deadline, steps)
        };
        (Hops::All(view.proxies), r)
    } else {
        dial_picked(h, fd, family, cfg, view, target, deadline, steps)
    };
    restore(fd, &saved);
    r
}

/// The attempts of a dynamic, random or round-robin chain: each picks its proxies
/// ([`chain::plan`]); a proxy found dead is marked and the next attempt goes without it.
#[allow(clippy::too_many_arguments)]
fn dial_picked<'a, H: Host>(
    h: &H,
    fd: c_int,
    family: c_int,
    cfg: &Config,
    view: ChainView<'a>,
    target: &Dest,
    deadline: Instant,
    mut steps: Option<&mut Vec<Step>>,
) -> (Hops<'a>, Result<SocketAddr, DialError>) {
    let health: Health = h.health();
    let mut tried: Vec<usize> = Vec::new();
    loop {
        let plan = match chain::plan(&view, &health, now_ms(), &tried, &mut random_below) {
            Ok(p) => p,
            Err(e) => break (Hops::Picked(Vec::new()), Err(at_connect(e))),
        };
        let hops: Vec<&Proxy> = plan.iter().filter_map(|&i| view.proxies.get(i)).collect();
        if let Some(s) = steps.as_deref_mut() {
            s.clear();
        }
        let r = dial_on(
            h,
            fd,
            family,
            cfg,
            &hops,
            target,
            deadline,
            steps.as_deref_mut(),
        );
        let e = match r {
            Ok(actual) => {
                for &i in &plan {
                    if health.is_dead(view.first_proxy + i, now_ms()) {
                        health.mark_alive(view.first_proxy + i);
                    }
                }
                break (Hops::Picked(hops), Ok(actual));
            }
            Err(e) => e,
        };
        let dead = e.dead_proxy(hops.len()).and_then(|k| plan.get(k).copied());
        match dead {
            Some(i) if Instant::now() < deadline && e.error != Error::Interrupted => {
                health.mark_dead(view.first_proxy + i, now_ms() + cfg.dead_retry_ms);
                if let Some(p) = view.proxies.get(i) {
                    h.log(
                        LogLevel::Info,
                        format_args!(
                            "proxy {p} looks dead ({}), skipping it for {} ms",
                            e.error, cfg.dead_retry_ms
                        ),
                    );
                }
                tried.push(i);
            }
            _ => break (Hops::Picked(hops), Err(e)),
        }
    }
}

/// The program's SO_SNDTIMEO, if set.
fn send_timeout(fd: c_int) -> Option<Duration> {
    let mut tv = [0u8; size_of::<libc::timeval>()];
    sys::getsockopt(fd, libc::SOL_SOCKET, libc::SO_SNDTIMEO, &mut tv).ok()?;
    // SAFETY: the kernel wrote a timeval.
    let tv: libc::timeval = unsafe { std::ptr::read_unaligned(tv.as_ptr().cast()) };
    let d = Duration::from_secs(tv.tv_sec.max(0) as u64)
        + Duration::from_micros(tv.tv_usec.max(0) as u64);
    (!d.is_zero()).then_some(d)
}

/// Makes the socket ready for the handshake: non-blocking (event loops' sockets are already),
/// SO_RCVLOWAT 1 (a program's larger low-water mark would keep poll from ever seeing a reply).
fn prepare(fd: c_int, flags: c_int) -> Saved {
    if flags & libc::O_NONBLOCK == 0 {
        sys::set_fl(fd, flags | libc::O_NONBLOCK);
    }
    let rcvlowat = match sys::getsockopt_int(fd, libc::SOL_SOCKET, libc::SO_RCVLOWAT) {
        Ok(v) if v > 1 => {
            let _ = sys::setsockopt_int(fd, libc::SOL_SOCKET, libc::SO_RCVLOWAT, 1);
            Some(v)
        }
        _ => None,
    };
    Saved { flags, rcvlowat }
}

fn restore(fd: c_int, s: &Saved) {
    if let Some(v) = s.rcvlowat {
        let _ = sys::setsockopt_int(fd, libc::SOL_SOCKET, libc::SO_RCVLOWAT, v);
    }
    if s.flags & libc::O_NONBLOCK == 0 {
        sys::set_fl(fd, s.flags);
    }
}

/// Where this socket can reach the first proxy at `addr`, if it can: an address of the
/// socket's family as is, an IPv4 one v4-mapped from an IPv6 socket that allows it. An AF_INET6
/// socket with IPV6_V6ONLY set and an IPv4 proxy address: the option is cleared if the socket
/// is not bound yet (it no longer matters once the socket is connected), else that address is
/// unreachable for it. `v6only` keeps the answer for the proxy's other addresses.
fn reachable(
    fd: c_int,
    family: c_int,
    addr: SocketAddr,
    v6only: &mut Option<bool>,
) -> Option<SocketAddr> {
    match (family, addr) {
        (libc::AF_INET, SocketAddr::V4(_)) | (libc::AF_INET6, SocketAddr::V6(_)) => Some(addr),
        (libc::AF_INET6, SocketAddr::V4(v4)) => {
            let only = *v6only.get_or_insert_with(|| {
                sys::getsockopt_int(fd, libc::IPPROTO_IPV6, libc::IPV6_V6ONLY) != Ok(0)
                    && sys::setsockopt_int(fd, libc::IPPROTO_IPV6, libc::IPV6_V6ONLY, 0).is_err()
            });
            (!only).then(|| SocketAddr::new(IpAddr::V6(v4.ip().to_ipv6_mapped()), v4.port()))
        }
        _ => None,
    }
}

/// Connects `fd` (of `family`, already non-blocking) through `hops` to `target`, all before
/// `deadline`; the first proxy's address it connected to. On failure the socket is disconnected
/// again, unless it was already connected or connecting when we were called (then it is left
/// alone: EISCONN / EALREADY).
#[allow(clippy::too_many_arguments)]
pub fn dial_on<H: Host, P: std::borrow::Borrow<Proxy>>(
    h: &H,
    fd: c_int,
    family: c_int,
    cfg: &Config,
    hops: &[P],
    target: &Dest,
    deadline: Instant,
    steps: Option<&mut Vec<Step>>,
) -> Result<SocketAddr, DialError> {
    let first: &Proxy = hops
        .first()
        .ok_or_else(|| at_connect(Error::NoProxyAlive))?
        .borrow();
    // Under --isolate the first hop is reached through the launcher's in-namespace forwarder.
    let addrs = || {
        first.socket_addrs().map(|a| {
            if cfg.via.is_empty() {
                return a;
            }
            cfg.via
                .get(&a.to_string())
                .and_then(|v| v.parse().ok())
                .unwrap_or(a)
        })
    };
    // Which addresses this socket can reach is settled for all of them before the first
    // connect (clearing IPV6_V6ONLY needs a socket not bound yet).
    let mut v6only = None;
    let (mut any, mut reached) = (false, false);
    for a in addrs() {
        any = true;
        reached |= reachable(fd, family, a, &mut v6only).is_some();
    }
    if !any {
        return Err(at_connect(Error::Config(format!(
            "proxy {first} was not resolved"
        ))));
    }
    if !reached {
        h.log(
            LogLevel::Error,
            format_args!(
                "an {} socket cannot reach proxy {first} ({}): connect refused (ENETUNREACH)",
                if family == libc::AF_INET {
                    "AF_INET"
                } else {
                    "AF_INET6 (IPV6_V6ONLY, bound)"
                },
                if family == libc::AF_INET {
                    "IPv6 only"
                } else {
                    "IPv4 only"
                }
            ),
        );
        return Err(at_connect(Error::Os(libc::ENETUNREACH)));
    }
    let hop_timeout = Duration::from_millis(cfg.connect_timeout_ms);
    let connect_deadline = deadline.min(
        Instant::now()
            + first
                .connect_timeout_ms
                .map_or(hop_timeout, Duration::from_millis),
    );
    let limits = Limits {
        deadline,
        hop_timeout,
    };
    let mut result = Err(at_connect(Error::NoProxyAlive));
    let mut actual = None;
    let candidates = addrs().filter_map(|a| reachable(fd, family, a, &mut v6only));
    for (i, addr) in candidates.enumerate() {
        if i > 0 {
            // The previous address failed: back to unconnected before the next one.
            sys::disconnect(fd);
        }
        actual = Some(addr);
        result = connect_nb(h, fd, &addr, connect_deadline).map_err(at_connect);
        match &result {
            Ok(()) => break,
            Err(DialError {
                error: Error::Os(libc::EISCONN | libc::EALREADY) | Error::Interrupted,
                ..
            }) => break,
            Err(_) if Instant::now() >= connect_deadline => break,
            Err(_) => {}
        }
    }
    let r = result.and_then(|()| {
        dial::handshake(
            &mut FdTransport { fd, host: h },
            hops,
            target,
            limits,
            steps,
        )
    });
    match &r {
        // The program's socket was already connected (or connecting): leave it alone.
        Err(DialError {
            phase: Phase::Connect,
            error: Error::Os(libc::EISCONN | libc::EALREADY),
            ..
        }) => {}
        Err(_) => sys::disconnect(fd),
        Ok(()) => {}
    }
    r.and_then(|()| actual.ok_or_else(|| at_connect(Error::Internal("no address"))))
}

/// Connects the non-blocking `fd` to `addr`, waiting until `deadline`. The second connect both
/// reports the result and moves the kernel's socket to "connected", so that a later connect by
/// the program gets the kernel's own EISCONN. It is made once before waiting: to a proxy on
/// this machine the kernel has usually finished the TCP handshake by the time the first
/// connect returns (then no wait at all), and otherwise it answers EALREADY at once.
pub(crate) fn connect_nb<H: Host>(
    h: &H,
    fd: c_int,
    addr: &SocketAddr,
    deadline: Instant,
) -> Result<(), Error> {
    match sys::connect(fd, addr, true) {
        Ok(()) => return Ok(()),
        Err(libc::EINPROGRESS | libc::EINTR) => {}
        Err(e) => return Err(Error::Os(e)),
    }
    match sys::connect(fd, addr, true) {
        Ok(()) | Err(libc::EISCONN) => return Ok(()),
        Err(libc::EALREADY | libc::EINPROGRESS | libc::EINTR) => {}
        Err(e) => return Err(Error::Os(e)),
    }
    h.wait(fd, libc::POLLOUT, deadline)?;
    match sys::connect(fd, addr, true) {
        Ok(()) | Err(libc::EISCONN) => Ok(()),
        Err(libc::EALREADY | libc::EINPROGRESS) => {
            // Woken without a result (a spurious wakeup): SO_ERROR tells.
            match sys::getsockopt_int(fd, libc::SOL_SOCKET, libc::SO_ERROR) {
                Ok(0) => Err(Error::Timeout),
                Ok(e) | Err(e) => Err(Error::Os(e)),
            }
        }
        Err(e) => Err(Error::Os(e)),
    }
}

/// The handshake transport over a raw, non-blocking socket fd, waiting through the [`Host`].
pub struct FdTransport<'h, H: Host> {
    pub fd: c_int,
    pub host: &'h H,
}

impl<H: Host> Transport for FdTransport<'_, H> {
    fn send_all(&mut self, mut buf: &[u8], deadline: Instant) -> Result<(), Error> {
        while !buf.is_empty() {
            match sys::send(self.fd, buf, 0) {
                Ok(n) => buf = buf.get(n..).unwrap_or(&[]),
                Err(libc::EINTR) => {}
                Err(libc::EAGAIN) => self.host.wait(self.fd, libc::POLLOUT, deadline)?,
                Err(e) => return Err(Error::Os(e)),
            }
        }
        Ok(())
    }

    fn recv(&mut self, buf: &mut [u8], deadline: Instant, ready: bool) -> Result<usize, Error> {
        // A reply is rarely there yet when we ask: wait first (one poll), then read, instead
        // of a read that fails with EAGAIN, a poll and a second read. The rest of a message
        // begun usually is: read first, wait only after EAGAIN.
        self.receive(buf, deadline, !ready, libc::MSG_DONTWAIT)
    }

    fn peek(&mut self, buf: &mut [u8], deadline: Instant) -> Result<usize, Error> {
        // As `recv`: wait first, then peek.
        self.receive(buf, deadline, true, libc::MSG_PEEK | libc::MSG_DONTWAIT)
    }

    fn consume(&mut self, mut n: usize) -> Result<(), Error> {
        let mut buf = [0u8; 1024];
        while n > 0 {
            let want = n.min(buf.len());
            match sys::recv(self.fd, buf.get_mut(..want).unwrap_or(&mut []), 0) {
                Ok(0) => return Err(Error::Closed),
                Ok(k) => n -= k.min(n),
                Err(libc::EINTR | libc::EAGAIN) => {}
                Err(e) => return Err(Error::Os(e)),
            }
        }
        Ok(())
    }
}

impl<H: Host> FdTransport<'_, H> {
    /// recv(2) with `flags`, waiting for data first when `wait_first`, and after EAGAIN.
    fn receive(
        &self,
        buf: &mut [u8],
        deadline: Instant,
        wait_first: bool,
        flags: c_int,
    ) -> Result<usize, Error> {
        if wait_first {
            self.host.wait(self.fd, libc::POLLIN, deadline)?;
        }
        loop {
            match sys::recv(self.fd, buf, flags) {
                Ok(n) => return Ok(n),
                Err(libc::EINTR) => {}
                Err(libc::EAGAIN) => self.host.wait(self.fd, libc::POLLIN, deadline)?,
                Err(e) => return Err(Error::Os(e)),
            }
        }
    }
}

/// A plain poll-based wait (the launcher's): retries EINTR until `deadline`.
pub fn poll_wait(fd: c_int, events: i16, deadline: Instant) -> Result<(), Error> {
    wait_sliced(fd, events, deadline, None, || Ok(()))
}

/// Waits until `fd` has one of `events` (or an error/hangup) or `deadline` passes (then
/// `Err(Timeout)`). A signal handler that runs meanwhile does not end the wait (as a
/// restarted syscall). With `slice_ms`, the wait wakes at least that often to run `between`,
/// whose error ends it.
pub fn wait_sliced(
    fd: c_int,
    events: i16,
    deadline: Instant,
    slice_ms: Option<c_int>,
    between: impl FnMut() -> Result<(), Error>,
) -> Result<(), Error> {
    let mut p = [libc::pollfd {
        fd,
        events,
        revents: 0,
    }];
    poll_until(&mut p, deadline, slice_ms, between)
}

/// [`wait_sliced`] over several fds: returns once any of `fds` has one of its events (their
/// `revents` say which), `Err(Timeout)` at `deadline`.
pub fn poll_until(
    fds: &mut [libc::pollfd],
    deadline: Instant,
    slice_ms: Option<c_int>,
    mut between: impl FnMut() -> Result<(), Error>,
) -> Result<(), Error> {
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(Error::Timeout);
        }
        let mut ms = left.as_micros().div_ceil(1000).min(c_int::MAX as u128) as c_int;
        if let Some(slice) = slice_ms {
            ms = ms.min(slice);
        }
        match sys::poll(fds, ms, None) {
            Ok(1..) => return Ok(()),
            Ok(0) | Err(libc::EINTR | libc::EAGAIN) => {}
            Err(e) => return Err(Error::Os(e)),
        }
        between()?;
    }
}

/// `127.0.0.1:1080 -> 127.0.0.1:8080 ok`, or the failure with the hop, step and errno; the
/// chain's name and what chose it when that is not simply the default chain.
fn describe(
    view: ChainView,
    by: By,
    hops: &Hops,
    target: &Dest,
    result: &Result<SocketAddr, DialError>,
    start: Option<Instant>,
    steps: &[Step],
) -> String {
    let mut s = String::with_capacity(128);
    if view.index != 0 || by != By::Default {
        let _ = write!(s, "[{} by {by}] ", view.name);
    }
    for p in hops.iter() {
        let _ = match p.socket_addr() {
            Some(sa) => write!(s, "{sa} -> "),
            None => write!(s, "{}:{} -> ", p.host, p.port),
        };
    }
    let _ = write!(s, "{target}");
    match result {
        Ok(_) => s.push_str(" ok"),
        Err(e) => {
            let proxy = hops.get(e.hop).map(|p| p.to_string()).unwrap_or_default();
            let _ = write!(
                s,
                " failed at hop {} ({proxy}) {}: {} ({})",
                e.hop + 1,
                e.phase.name(),
                e.error,
                errno_name(e.error.errno())
            );
        }
    }
    if !steps.is_empty() {
        let total = start.map_or(0.0, |t| t.elapsed().as_secs_f64() * 1e3);
        let _ = write!(s, " [total {total:.2} ms;");
        for st in steps {
            let _ = write!(
                s,
                " hop {} {} {:.2} ms",
                st.hop + 1,
                st.phase.name(),
                st.at.as_secs_f64() * 1e3
            );
            if !st.detail.is_empty() {
                let _ = write!(s, " ({})", st.detail);
            }
            s.push(';');
        }
        s.push(']');
    }
    s
}
