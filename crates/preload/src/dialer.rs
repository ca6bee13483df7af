//! What a hooked connect does: decide the route, then build the chain on the program's socket.
//!
//! Owns: classification (which connects are proxied), the handshake on the program's own fd
//! whenever its family can reach the first proxy (else on a replacement socket moved over the
//! fd with dup3), the program's file status flags (restored exactly on every path), and the
//! per-connection log line.
//! Must never: connect the program's socket anywhere but the first proxy when a proxied
//! destination fails (no fallback), or leave the socket half-connected after a failure.

use std::fmt::Write as _;
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use chainsocks_core::Error;
use chainsocks_core::config::{Config, LogLevel, Proxy, ProxyKind, Socks4Resolve};
use chainsocks_core::dial::{self, DialError, Limits, Phase, Step};
use chainsocks_core::error::errno_name;
use chainsocks_core::proto::Dest;
use libc::c_int;

use crate::hooks::{Bypass, Route};
use crate::sock::{self, FdTransport, Reach};
use crate::state;

/// The body of the `connect` hook.
pub fn connect(fd: c_int, dest: Option<SocketAddr>) -> Route {
    let Some(dest) = dest else {
        return Route::Real(Bypass::NotInet);
    };
    match sock::getsockopt_int(fd, libc::SOL_SOCKET, libc::SO_TYPE) {
        Ok(libc::SOCK_STREAM) => {}
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
    if sock::is_connected(fd) {
        return Route::Done(Err(Error::Os(libc::EISCONN)));
    }
    let target = match target_of(cfg, unmap(dest)) {
        Ok(t) => t,
        Err(e) => {
            st.sink.log(
                LogLevel::Info,
                format_args!("connect to {dest} refused: {e}"),
            );
            return Route::Done(Err(e));
        }
    };
    let family =
        sock::getsockopt_int(fd, libc::SOL_SOCKET, libc::SO_DOMAIN).unwrap_or(libc::AF_INET);
    let debug = st.sink.enabled(LogLevel::Debug);
    let mut steps = Vec::new();
    let start = Instant::now();
    let result = dial_on(
        fd,
        family,
        cfg,
        &cfg.proxies,
        &target,
        debug.then_some(&mut steps),
    );
    if st.sink.enabled(LogLevel::Info) {
        st.sink.log(
            LogLevel::Info,
            format_args!(
                "{}",
                describe(&cfg.proxies, &target, &result, start, &steps)
            ),
        );
    }
    Route::Done(result.map(|()| 0).map_err(|e| e.error))
}

/// What the chain is asked to reach: the name behind a fake address, else the address.
fn target_of(cfg: &Config, dest: SocketAddr) -> Result<Dest, Error> {
    let name = match crate::resolver::reverse(dest.ip()) {
        None => return Ok(Dest::Ip(dest)),
        Some(r) => r?,
    };
    // A plain SOCKS4 last hop cannot carry a name: resolve it here only if asked to.
    let last_is_socks4 = cfg
        .proxies
        .last()
        .is_some_and(|p| p.kind == ProxyKind::Socks4);
    if last_is_socks4 && cfg.socks4_resolve == Socks4Resolve::Local {
        let ip =
            state::resolve_real(&name, libc::AF_INET).map_err(|_| Error::Os(libc::EHOSTUNREACH))?;
        return Ok(Dest::Ip(SocketAddr::new(ip, dest.port())));
    }
    Ok(Dest::Name(name, dest.port()))
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

/// Connects `fd` (of `family`) through `hops` to `target`.
pub fn dial_on(
    fd: c_int,
    family: c_int,
    cfg: &Config,
    hops: &[Proxy],
    target: &Dest,
    steps: Option<&mut Vec<Step>>,
) -> Result<(), DialError> {
    let at_connect = |error| DialError {
        hop: 0,
        phase: Phase::Connect,
        error,
    };
    let first = hops
        .first()
        .ok_or_else(|| at_connect(Error::NoProxyAlive))?;
    let first_addr = first
        .socket_addr()
        .ok_or_else(|| at_connect(Error::Config(format!("proxy {first} was not resolved"))))?;
    let start = Instant::now();
    let deadline = start + Duration::from_millis(cfg.handshake_timeout_ms);
    let hop_timeout = Duration::from_millis(cfg.connect_timeout_ms);
    let connect_deadline = deadline.min(
        start
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
            sock::set_fl(fd, flags | libc::O_NONBLOCK);
            let r = build(fd, addr, steps);
            sock::set_fl(fd, flags);
            if r.is_err() {
                sock::disconnect(fd);
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

/// `127.0.0.1:1080 -> 127.0.0.1:8080 ok`, or the failure with the hop, step and errno.
fn describe(
    hops: &[Proxy],
    target: &Dest,
    result: &Result<(), DialError>,
    start: Instant,
    steps: &[Step],
) -> String {
    let mut s = String::with_capacity(128);
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
