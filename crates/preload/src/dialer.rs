//! What a hooked connect does: decide the route, then build the chain on the program's socket.
//!
//! Owns: classification (which connects are proxied), the destination (dnat, then the name
//! behind a fake IP), the routing decision (localnet / rules / chain), chain attempts with
//! dead-proxy marking for dynamic / random / round-robin chains, the handshake on the program's
//! own fd whenever its family can reach the first proxy (else on a replacement socket moved
//! over the fd with dup3), the program's file status flags (restored exactly on every path),
//! and the per-connection log line.
//! Must never: connect the program's socket anywhere but the first proxy when a proxied
//! destination fails (no fallback to direct), or leave the socket half-connected after a
//! failure.

use std::fmt::Write as _;
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use chainsocks_core::Error;
use chainsocks_core::chain::{self, By, Health, Route as Way};
use chainsocks_core::config::{
    ChainMode, ChainView, Config, LogLevel, Policy, Proxy, ProxyKind, Socks4Resolve,
};
use chainsocks_core::dial::{self, DialError, Limits, Phase, Step};
use chainsocks_core::error::errno_name;
use chainsocks_core::proto::Dest;
use chainsocks_core::rules::Destination;
use libc::c_int;

use crate::hooks::{Bypass, Route};
use crate::report::{Event, Kind};
use crate::sock::{self, FdTransport, Reach};
use crate::state::{self, State};

/// The body of the `connect` hook.
pub fn connect(fd: c_int, dest: Option<SocketAddr>) -> Route {
    let Some(dest) = dest else {
        return Route::Real(Bypass::NotInet);
    };
    match sock::getsockopt_int(fd, libc::SOL_SOCKET, libc::SO_TYPE) {
        Ok(libc::SOCK_STREAM) => {}
        Ok(libc::SOCK_DGRAM) => return udp(dest, "connect"),
        Ok(_) => return Route::Real(Bypass::NotStream),
        Err(_) => return Route::Real(Bypass::NotSocket),
    }
    let st = state::get();
    let cfg = match &st.cfg {
        Ok(c) => c,
        Err(why) => {
            st.sink.log(
                LogLevel::Error,
                format_args!("connect to {dest} refused: {why}"),
            );
            return Route::Done(Err(Error::Config(why.clone())));
        }
    };
    // A connected socket must get EISCONN: the kernel would not say so itself (a connect to
    // the proxy it is already connected to returns 0).
    if sock::is_connected(fd) {
        return Route::Done(Err(Error::Os(libc::EISCONN)));
    }
    let family =
        sock::getsockopt_int(fd, libc::SOL_SOCKET, libc::SO_DOMAIN).unwrap_or(libc::AF_INET);
    if family == libc::AF_INET && dest.is_ipv6() {
        // A program bug the kernel answers itself (EAFNOSUPPORT): not ours to "fix".
        return Route::Real(Bypass::NotInet);
    }

    // The destination: dnat first, then the name behind a fake address.
    let asked = unmap(dest);
    let addr = cfg
        .dnat
        .iter()
        .find_map(|n| n.rewrite(asked))
        .unwrap_or(asked);
    let name = match crate::resolver::reverse(addr.ip()) {
        None => None,
        Some(Ok(n)) => Some(n),
        Some(Err(e)) => {
            st.sink.log(
                LogLevel::Info,
                format_args!("connect to {dest} refused: {e}"),
            );
            report(
                Kind::Block,
                None,
                Some(addr),
                Some(&"fake-ip"),
                None,
                &Err(e.clone()),
                None,
            );
            return Route::Done(Err(e));
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
    let views = cfg.chain_views();
    let decision = chain::decide(cfg, &views, &d);
    // Formatted only if a log line or a report record is written.
    let shown = Shown {
        name: name.as_deref(),
        addr,
    };
    let by = decision.by;
    match decision.route {
        Way::Block => {
            st.sink
                .log(LogLevel::Info, format_args!("{shown} blocked ({by})"));
            let e = Error::Os(cfg.block_errno.errno());
            report(
                Kind::Block,
                name.as_deref(),
                Some(addr),
                Some(&by),
                None,
                &Err(e.clone()),
                None,
            );
            Route::Done(Err(e))
        }
        Way::Direct
            if cfg.policy == Policy::ProxyOnly
                && !cfg.allowed_direct.iter().any(|p| p.matches(&d)) =>
        {
            st.sink.log(
                LogLevel::Info,
                format_args!("{shown} blocked (policy proxy-only; {by} would go direct)"),
            );
            let e = Error::Os(libc::EACCES);
            report(
                Kind::Block,
                name.as_deref(),
                Some(addr),
                Some(&"policy"),
                None,
                &Err(e.clone()),
                None,
            );
            Route::Done(Err(e))
        }
        Way::Direct => {
            let start = Instant::now();
            let r = direct(
                st,
                fd,
                family,
                dest,
                addr,
                name.as_deref(),
                decision.by,
                &shown,
            );
            let outcome = match &r {
                Route::Done(Err(e)) => Err(e.clone()),
                _ => Ok(()),
            };
            report(
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
            let target = match target_of(cfg, view, addr, name.clone()) {
                Ok(t) => t,
                Err(e) => return Route::Done(Err(e)),
            };
            let debug = st.sink.enabled(LogLevel::Debug);
            let mut steps = Vec::new();
            let start = Instant::now();
            let (used, result) = dial_chain(
                st,
                fd,
                family,
                cfg,
                view,
                &target,
                debug.then_some(&mut steps),
            );
            if st.sink.enabled(LogLevel::Info) {
                let line = describe(view, decision.by, &used, &target, &result, start, &steps);
                st.sink.log(LogLevel::Info, format_args!("{line}"));
            }
            if result.is_ok() {
                crate::peers::remember(fd, dest);
            }
            let outcome = result.as_ref().map(|_| ()).map_err(|e| e.error.clone());
            let ip = if name.is_some() { None } else { Some(addr) };
            report(
                Kind::Connect,
                name.as_deref(),
                ip.or(Some(addr)),
                Some(&by),
                Some(view.name),
                &outcome,
                Some(start),
            );
            Route::Done(result.map(|()| 0).map_err(|e| e.error))
        }
    }
}

/// A UDP `connect` or `sendto`/`sendmsg` with an address: untouched, except that
/// `policy = "proxy-only"` refuses every non-loopback destination (EACCES).
pub fn udp(dest: SocketAddr, what: &str) -> Route {
    let st = state::get();
    let Ok(cfg) = &st.cfg else {
        return Route::Real(Bypass::NotStream);
    };
    let loopback = unmap(dest).ip().is_loopback();
    if cfg.policy == Policy::ProxyOnly && !loopback {
        st.sink.log(
            LogLevel::Info,
            format_args!("UDP {what} to {dest} blocked (policy proxy-only)"),
        );
        let e = Error::Os(libc::EACCES);
        report(
            Kind::Udp,
            None,
            Some(unmap(dest)),
            Some(&"policy"),
            None,
            &Err(e.clone()),
            None,
        );
        return Route::Done(Err(e));
    }
    if what == "connect" && !loopback {
        report(
            Kind::Udp,
            None,
            Some(unmap(dest)),
            None,
            None,
            &Ok(()),
            None,
        );
    }
    Route::Real(Bypass::NotStream)
}

/// Records an event in the egress report, if there is one.
fn report(
    kind: Kind,
    name: Option<&str>,
    addr: Option<SocketAddr>,
    rule: Option<&dyn std::fmt::Display>,
    chain: Option<&str>,
    outcome: &Result<(), Error>,
    start: Option<Instant>,
) {
    if !crate::report::enabled() {
        return;
    }
    let rule = rule.map(|r| r.to_string());
    let result = match outcome {
        Ok(()) => "ok",
        Err(e) => errno_name(e.errno()),
    };
    crate::report::record(&Event {
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
fn direct(
    st: &State,
    fd: c_int,
    family: c_int,
    asked: SocketAddr,
    addr: SocketAddr,
    name: Option<&str>,
    by: By,
    shown: &Shown,
) -> Route {
    let to = match name {
        None => addr,
        Some(n) => {
            let want = if family == libc::AF_INET {
                libc::AF_INET
            } else {
                libc::AF_UNSPEC
            };
            match state::resolve_real(n, want) {
                Ok(ip) => SocketAddr::new(ip, addr.port()),
                Err(e) => {
                    st.sink.log(
                        LogLevel::Info,
                        format_args!("{shown} direct ({by}): cannot resolve: {e}"),
                    );
                    return Route::Done(Err(Error::Os(libc::EHOSTUNREACH)));
                }
            }
        }
    };
    st.sink
        .log(LogLevel::Info, format_args!("{shown} direct ({by})"));
    if name.is_none() && addr == unmap(asked) {
        // Not rewritten: the program's own arguments, to the real connect (exact semantics).
        return Route::Real(Bypass::Direct);
    }
    let to = match (family, to.ip()) {
        (libc::AF_INET6, IpAddr::V4(v4)) => {
            SocketAddr::new(IpAddr::V6(v4.to_ipv6_mapped()), to.port())
        }
        _ => to,
    };
    let r = sock::connect_real(fd, &to);
    if matches!(r, Ok(()) | Err(Error::Os(libc::EINPROGRESS))) {
        // Connected (or connecting) somewhere else than asked: getpeername shows what was asked.
        crate::peers::remember(fd, asked);
    }
    Route::Done(r.map(|()| 0))
}

/// What the chain is asked to reach: the name (from the fake-DNS table) or the address.
fn target_of(
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
        let ip =
            state::resolve_real(&name, libc::AF_INET).map_err(|_| Error::Os(libc::EHOSTUNREACH))?;
        return Ok(Dest::Ip(SocketAddr::new(ip, addr.port())));
    }
    Ok(Dest::Name(name, addr.port()))
}

/// An IPv4-mapped IPv6 destination is sent to the proxy as the IPv4 address it stands for.
fn unmap(sa: SocketAddr) -> SocketAddr {
    match sa {
        SocketAddr::V6(v6) => match v6.ip().to_ipv4_mapped() {
            Some(v4) => SocketAddr::new(IpAddr::V4(v4), v6.port()),
            None => sa,
        },
        v4 => v4,
    }
}

/// Monotonic milliseconds (the same clock in every process, for shared dead marks).
fn now_ms() -> u64 {
    // SAFETY: zeroed timespec, then clock_gettime fills it.
    let mut ts: libc::timespec = unsafe { std::mem::zeroed() };
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1000 + ts.tv_nsec as u64 / 1_000_000
}

/// A uniform random number below `n` (getrandom: fork children do not repeat their parent).
fn random_below(n: usize) -> usize {
    let mut b = [0u8; 8];
    // SAFETY: b is writable for 8 bytes.
    unsafe { libc::getrandom(b.as_mut_ptr().cast(), b.len(), 0) };
    (u64::from_ne_bytes(b) % n.max(1) as u64) as usize
}

/// Connects through `view`, retrying without proxies found dead (except in strict chains, and
/// never when the destination itself failed). Returns the proxies of the last attempt.
fn dial_chain<'a>(
    st: &State,
    fd: c_int,
    family: c_int,
    cfg: &Config,
    view: ChainView<'a>,
    target: &Dest,
    mut steps: Option<&mut Vec<Step>>,
) -> (Vec<&'a Proxy>, Result<(), DialError>) {
    let health: Health = st.health();
    let deadline = Instant::now() + Duration::from_millis(cfg.handshake_timeout_ms);
    let mut tried: Vec<usize> = Vec::new();
    loop {
        let plan = match chain::plan(&view, &health, now_ms(), &tried, &mut random_below) {
            Ok(p) => p,
            Err(e) => {
                return (
                    Vec::new(),
                    Err(DialError {
                        hop: 0,
                        phase: Phase::Connect,
                        error: e,
                    }),
                );
            }
        };
        let hops: Vec<&Proxy> = plan.iter().filter_map(|&i| view.proxies.get(i)).collect();
        if let Some(s) = steps.as_deref_mut() {
            s.clear();
        }
        let r = dial_on(
            fd,
            family,
            cfg,
            &hops,
            target,
            deadline,
            steps.as_deref_mut(),
        );
        let e = match r {
            Ok(()) => {
                for &i in &plan {
                    if health.is_dead(view.first_proxy + i, now_ms()) {
                        health.mark_alive(view.first_proxy + i);
                    }
                }
                return (hops, Ok(()));
            }
            Err(e) => e,
        };
        let dead = e.dead_proxy(hops.len()).and_then(|k| plan.get(k).copied());
        match dead {
            Some(i) if view.mode != ChainMode::Strict && Instant::now() < deadline => {
                health.mark_dead(view.first_proxy + i, now_ms() + cfg.dead_retry_ms);
                if let Some(p) = view.proxies.get(i) {
                    st.sink.log(
                        LogLevel::Info,
                        format_args!(
                            "proxy {p} looks dead ({}), skipping it for {} ms",
                            e.error, cfg.dead_retry_ms
                        ),
                    );
                }
                tried.push(i);
            }
            _ => return (hops, Err(e)),
        }
    }
}

/// Connects `fd` (of `family`) through `hops` to `target`, all before `deadline`.
pub fn dial_on(
    fd: c_int,
    family: c_int,
    cfg: &Config,
    hops: &[&Proxy],
    target: &Dest,
    deadline: Instant,
    steps: Option<&mut Vec<Step>>,
) -> Result<(), DialError> {
    let at_connect = |error| DialError {
        hop: 0,
        phase: Phase::Connect,
        error,
    };
    let first = *hops
        .first()
        .ok_or_else(|| at_connect(Error::NoProxyAlive))?;
    let first_addr = first
        .socket_addr()
        .ok_or_else(|| at_connect(Error::Config(format!("proxy {first} was not resolved"))))?;
    // Under --isolate the first hop is reached through the launcher's in-namespace forwarder.
    let first_addr = if cfg.via.is_empty() {
        first_addr
    } else {
        cfg.via
            .get(&first_addr.to_string())
            .and_then(|v| v.parse().ok())
            .unwrap_or(first_addr)
    };
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
    let flags = sock::get_fl(fd).map_err(at_connect)?;
    let build = |s: c_int, addr: SocketAddr, steps: Option<&mut Vec<Step>>| {
        sock::connect_nb(s, &addr, connect_deadline).map_err(at_connect)?;
        dial::handshake(&mut FdTransport(s), hops, target, limits, steps)
    };
    match sock::reach(fd, family, first_addr) {
        Reach::Direct(addr) => {
            // Event loops' sockets are non-blocking already: nothing to switch or restore.
            let switch = flags & libc::O_NONBLOCK == 0;
            if switch {
                sock::set_fl(fd, flags | libc::O_NONBLOCK);
            }
            let r = build(fd, addr, steps);
            if switch {
                sock::set_fl(fd, flags);
            }
            match &r {
                // The program's socket was already connected (or connecting): leave it alone.
                Err(DialError {
                    phase: Phase::Connect,
                    error: Error::Os(libc::EISCONN | libc::EALREADY),
                    ..
                }) => {}
                Err(_) => sock::disconnect(fd),
                Ok(()) => {}
            }
            r
        }
        Reach::Replace(new_family) => {
            let s = sock::replacement(fd, new_family).map_err(at_connect)?;
            match build(s, first_addr, steps) {
                Ok(()) => sock::install(s, fd, flags).map_err(at_connect),
                Err(e) => {
                    sock::close(s);
                    Err(e)
                }
            }
        }
    }
}

/// `127.0.0.1:1080 -> 127.0.0.1:8080 ok`, or the failure with the hop, step and errno; the
/// chain's name and what chose it when that is not simply the default chain.
fn describe(
    view: ChainView,
    by: By,
    hops: &[&Proxy],
    target: &Dest,
    result: &Result<(), DialError>,
    start: Instant,
    steps: &[Step],
) -> String {
    let mut s = String::with_capacity(128);
    if view.index != 0 || by != By::Default {
        let _ = write!(s, "[{} by {by}] ", view.name);
    }
    for p in hops {
        let _ = match p.socket_addr() {
            Some(sa) => write!(s, "{sa} -> "),
            None => write!(s, "{}:{} -> ", p.host, p.port),
        };
    }
    let _ = write!(s, "{target}");
    match result {
        Ok(()) => s.push_str(" ok"),
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
        let _ = write!(s, " [total {:.2} ms;", start.elapsed().as_secs_f64() * 1e3);
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
