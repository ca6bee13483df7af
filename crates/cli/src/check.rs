//! `chainsocks check --target HOST:PORT`: dials every chain of the configuration to a real
//! destination and reports, hop by hop, the proxy, protocol, auth used, the time each step
//! took, whether the proxy accepts a pipelined handshake, and the exact failure.
//!
//! Runs in the launcher (not preloaded), with std sockets and the same handshake code as the
//! library. Every proxy of a chain is checked in order, whatever the chain's mode.

use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use chainsocks_core::config::{ChainView, Config, Proxy, ProxyKind};
use chainsocks_core::dial::{self, DialError, Limits, Phase, Step};
use chainsocks_core::error::errno_name;
use chainsocks_core::proto::Dest;
use serde::Serialize;

/// How long a pipelining probe may take before we call it "no".
const PROBE_MS: u64 = 2000;

#[derive(Serialize)]
pub struct ChainReport {
    pub chain: String,
    pub mode: &'static str,
    pub ok: bool,
    pub total_ms: f64,
    pub hops: Vec<HopReport>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Whether the chain carries UDP: "yes (…)", "no (…)".
    pub udp: String,
}

#[derive(Serialize)]
pub struct HopReport {
    pub proxy: String,
    pub protocol: &'static str,
    pub auth: String,
    /// Milliseconds from the start of the check until each step of this hop completed.
    pub steps: Vec<(String, f64)>,
    /// "yes", "no (…)" or "n/a"; `None` when the hop was not reached.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pipeline: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// Parses `host:port` into what the last proxy is asked to reach.
pub fn parse_target(s: &str) -> Result<Dest, String> {
    let (host, port) = chainsocks_core::config::split_host_port(s)?;
    let port = port.ok_or_else(|| format!("--target `{s}`: needs a port (HOST:PORT)"))?;
    Ok(match host.parse() {
        Ok(ip) => Dest::Ip(SocketAddr::new(ip, port)),
        Err(_) => Dest::Name(host, port),
    })
}

fn ms(d: Duration) -> f64 {
    (d.as_secs_f64() * 1e5).round() / 100.0
}

/// Connects to the first proxy and runs the handshake of `hops` to `target`.
fn dial(
    cfg: &Config,
    hops: &[&Proxy],
    target: &Dest,
    deadline: Instant,
    steps: &mut Vec<Step>,
) -> Result<TcpStream, DialError> {
    let at_connect = |error| DialError {
        hop: 0,
        phase: Phase::Connect,
        error,
    };
    let first = hops
        .first()
        .ok_or_else(|| at_connect(chainsocks_core::Error::NoProxyAlive))?;
    let addr = first
        .socket_addr()
        .ok_or_else(|| at_connect(chainsocks_core::Error::Config("unresolved proxy".into())))?;
    let hop_timeout = Duration::from_millis(cfg.connect_timeout_ms);
    let ct = first
        .connect_timeout_ms
        .map_or(hop_timeout, Duration::from_millis);
    let ct = ct.min(deadline.saturating_duration_since(Instant::now()));
    let mut s =
        TcpStream::connect_timeout(&addr, ct.max(Duration::from_millis(1))).map_err(|e| {
            at_connect(match e.kind() {
                std::io::ErrorKind::TimedOut => chainsocks_core::Error::Timeout,
                _ => chainsocks_core::Error::Os(e.raw_os_error().unwrap_or(libc::EIO)),
            })
        })?;
    let _ = s.set_nodelay(true);
    dial::handshake(
        &mut s,
        hops,
        target,
        Limits {
            deadline,
            hop_timeout,
        },
        Some(steps),
    )?;
    Ok(s)
}

fn describe_error(e: &DialError, hops: &[&Proxy]) -> String {
    let proxy = hops.get(e.hop).map(|p| p.to_string()).unwrap_or_default();
    format!(
        "hop {} ({proxy}) {}: {} ({})",
        e.hop + 1,
        e.phase.name(),
        e.error,
        errno_name(e.error.errno())
    )
}

/// Checks one chain: every proxy in order to `target`, then a pipelining probe per hop.
pub fn check_chain(cfg: &Config, view: &ChainView, target: &Dest, probe: bool) -> ChainReport {
    let hops: Vec<&Proxy> = view.proxies.iter().collect();
    let start = Instant::now();
    let mut steps = Vec::new();
    let deadline = start + Duration::from_millis(cfg.handshake_timeout_ms);
    let result = dial(cfg, &hops, target, deadline, &mut steps);
    let total = start.elapsed();
    let failed_hop = result.as_ref().err().map(|e| e.hop);
    let reached = |k: usize| failed_hop.is_none_or(|f| k <= f);
    let mut reports: Vec<HopReport> = hops
        .iter()
        .enumerate()
        .map(|(k, p)| {
            let mine: Vec<&Step> = steps.iter().filter(|s| s.hop == k).collect();
            let auth = match p.kind {
                ProxyKind::Socks5 | ProxyKind::Socks5h => mine
                    .iter()
                    .find(|s| s.phase == Phase::Greeting)
                    .map_or("-".to_string(), |s| s.detail.to_string()),
                ProxyKind::Http if p.username.is_some() => "basic".into(),
                ProxyKind::Socks4 | ProxyKind::Socks4a if p.username.is_some() => "user id".into(),
                _ => "none".into(),
            };
            HopReport {
                proxy: p.to_string(),
                protocol: p.kind.scheme(),
                auth,
                steps: mine
                    .iter()
                    .map(|s| (s.phase.name().to_string(), ms(s.at)))
                    .collect(),
                pipeline: None,
                error: match &result {
                    Err(e) if e.hop == k => Some(describe_error(e, &hops)),
                    _ => None,
                },
            }
        })
        .collect();
    if probe {
        for (k, r) in reports.iter_mut().enumerate() {
            if reached(k) && failed_hop != Some(k) {
                r.pipeline = Some(probe_pipeline(cfg, &hops, k, target));
            }
        }
    }
    ChainReport {
        chain: view.name.to_string(),
        mode: view.mode.name(),
        ok: result.is_ok(),
        total_ms: ms(total),
        error: result.as_ref().err().map(|e| describe_error(e, &hops)),
        hops: reports,
        udp: probe_udp(cfg, &hops),
    }
}

/// Whether datagrams of this chain can travel: a single SOCKS5 hop (or else `udp_proxy`)
/// accepting UDP ASSOCIATE, as the library and the supervisor would ask it.
fn probe_udp(cfg: &Config, hops: &[&Proxy]) -> String {
    let (proxy, via) = match (hops, &cfg.udp_proxy) {
        ([single], _) if single.kind.is_socks5() => (*single, "its proxy"),
        (_, Some(u)) => (u, "udp_proxy"),
        _ => {
            return format!(
                "no (a chain of {} hop(s) that is not a single SOCKS5 proxy cannot carry UDP; set udp_proxy)",
                hops.len()
            );
        }
    };
    let Some(addr) = proxy.socket_addr() else {
        return "no (unresolved proxy)".into();
    };
    let deadline = Instant::now() + Duration::from_millis(PROBE_MS.min(cfg.handshake_timeout_ms));
    let mut s = match TcpStream::connect_timeout(&addr, Duration::from_millis(PROBE_MS)) {
        Ok(s) => s,
        Err(e) => return format!("no ({via} {proxy}: {e})"),
    };
    let any = Dest::Ip(SocketAddr::from(([0, 0, 0, 0], 0)));
    let limits = Limits {
        deadline,
        hop_timeout: Duration::from_millis(PROBE_MS),
    };
    match dial::handshake_cmd(
        &mut s,
        &[proxy],
        &any,
        chainsocks_core::proto::socks5::Command::UdpAssociate,
        limits,
        None,
    ) {
        Ok(bound) => {
            let relay = match bound {
                Some(chainsocks_core::proto::socks5::WireAddr::Ip(b))
                    if b.ip().is_unspecified() =>
                {
                    SocketAddr::new(addr.ip(), b.port()).to_string()
                }
                Some(chainsocks_core::proto::socks5::WireAddr::Ip(b)) => b.to_string(),
                _ => "?".into(),
            };
            format!("yes ({via} {proxy} accepts UDP ASSOCIATE, relay {relay})")
        }
        Err(e) => format!("no ({via} {proxy} refuses UDP ASSOCIATE: {})", e.error),
    }
}

/// Whether hop `k` accepts its whole handshake in one write: the chain up to `k` (earlier hops
/// in safe mode), hop `k` pipelined, asked for the next proxy or the target, with a short
/// deadline (microsocks, for one, drops what follows the greeting and never answers).
fn probe_pipeline(cfg: &Config, hops: &[&Proxy], k: usize, target: &Dest) -> String {
    let Some(p) = hops.get(k) else {
        return "n/a".into();
    };
    if !p.kind.is_socks5() {
        return "n/a (one message)".into();
    }
    let mut mine = (*p).clone();
    mine.pipeline = true;
    // Earlier hops in safe mode, so the probe is about this hop alone.
    let safe_prefix: Vec<Proxy> = hops
        .iter()
        .take(k)
        .map(|p| Proxy {
            pipeline: false,
            ..(*p).clone()
        })
        .collect();
    let mut probe_hops: Vec<&Proxy> = safe_prefix.iter().collect();
    probe_hops.push(&mine);
    let probe_target = match hops.get(k + 1).and_then(|n| n.socket_addr()) {
        Some(sa) => Dest::Ip(sa),
        None => target.clone(),
    };
    let deadline = Instant::now() + Duration::from_millis(PROBE_MS.min(cfg.handshake_timeout_ms));
    match dial(cfg, &probe_hops, &probe_target, deadline, &mut Vec::new()) {
        Ok(_) => "yes".into(),
        Err(e) => format!("no ({})", e.error),
    }
}

/// Human output.
pub fn print_human(reports: &[ChainReport], target: &Dest) {
    for r in reports {
        let status = if r.ok { "ok" } else { "FAILED" };
        println!(
            "chain {} ({}) -> {target}: {status} in {:.2} ms",
            r.chain, r.mode, r.total_ms
        );
        for (k, h) in r.hops.iter().enumerate() {
            let steps: Vec<String> = h
                .steps
                .iter()
                .map(|(n, t)| format!("{n} {t:.2} ms"))
                .collect();
            println!(
                "  hop {}: {} [{}, auth: {}] {}",
                k + 1,
                h.proxy,
                h.protocol,
                h.auth,
                if steps.is_empty() {
                    "-".to_string()
                } else {
                    steps.join(", ")
                }
            );
            if let Some(p) = &h.pipeline {
                let hint = match p.as_str() {
                    "yes" => " (you may set pipeline = true)",
                    x if x.starts_with("no") => " (keep pipeline = false)",
                    _ => "",
                };
                println!("         pipelining: {p}{hint}");
            }
            if let Some(e) = &h.error {
                println!("         error: {e}");
            }
        }
        println!("  udp: {}", r.udp);
    }
}
