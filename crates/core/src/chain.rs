//! Chain planning and routing: for one connection, which route (direct, block, a chain) and
//! which proxies of the chain, in which order.
//!
//! Owns: the order of decisions (dnat → allowlist → localnet → rules, first match → default
//! chain; see [`decide`]), the allowlist check both TCP and UDP use ([`allowlist`]), the chain
//! modes (strict, dynamic, random, round_robin) and the proxies' health: "dead until" marks and
//! round-robin counters kept in atomics the caller provides (the launch's shared memory, so
//! every process of a tree agrees; or process memory).
//! Must never: pick a proxy marked dead while a live one is available, let a destination the
//! allowlist does not name out of the machine, block, or do I/O.

use std::sync::atomic::{AtomicU64, Ordering};

use crate::config::{ChainMode, ChainView, Config, RuleAction};
use crate::error::Error;
use crate::rules::Destination;

/// Where one connection goes.
#[derive(Debug, Clone, Copy)]
pub enum Route<'a> {
    /// No proxy (localnet, a `direct` rule, an allowlist entry marked `direct`).
    Direct,
    /// Refused (a `block` rule, or not in the allowlist).
    Block,
    /// Through this chain.
    Chain(ChainView<'a>),
}

impl Decision<'_> {
    /// Whether the destination may be reached (directly or through a chain).
    pub fn route_is_open(&self) -> bool {
        !matches!(self.route, Route::Block)
    }
}

/// A route and what chose it, for logs and reports.
#[derive(Debug, Clone, Copy)]
pub struct Decision<'a> {
    pub route: Route<'a>,
    pub by: By,
}

/// What decided a route: `localnet`, `rule N` (1-based), `default`, `allow N` (an allowlist
/// entry marked direct, 1-based), `allowlist` (refused: no entry matches).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum By {
    Localnet,
    Rule(usize),
    Default,
    Allow(usize),
    Allowlist,
}

impl std::fmt::Display for By {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            By::Localnet => write!(f, "localnet"),
            By::Rule(i) => write!(f, "rule {}", i + 1),
            By::Default => write!(f, "default"),
            By::Allow(i) => write!(f, "allow {}", i + 1),
            By::Allowlist => write!(f, "allowlist"),
        }
    }
}

/// What the allowlist says about a destination.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Allowed {
    /// No allowlist configured: everything may go out.
    NoList,
    /// The first entry that matches (0-based) and whether it is marked `direct`.
    Entry { index: usize, direct: bool },
    /// An allowlist is configured and no entry matches.
    NotListed,
}

/// The allowlist's verdict on `d` (after dnat): a function of the destination alone, so that
/// TCP connects ([`decide`]) and UDP datagrams (`connect::udp`) apply the same list.
pub fn allowlist(cfg: &Config, d: &Destination) -> Allowed {
    let Some(list) = &cfg.allow else {
        return Allowed::NoList;
    };
    list.iter()
        .position(|a| a.dest.matches(d))
        .map_or(Allowed::NotListed, |index| Allowed::Entry {
            index,
            direct: list.get(index).is_some_and(|a| a.direct),
        })
}

/// Whether a destination the allowlist does not name may still go out by `route`: only a
/// direct connection to a loopback address (it never leaves the machine).
pub fn exempt_from_allowlist(route: &Route, d: &Destination) -> bool {
    matches!(route, Route::Direct) && d.ip.is_some_and(is_loopback)
}

/// A loopback address, IPv4-mapped ones included.
pub fn is_loopback(ip: std::net::IpAddr) -> bool {
    match ip {
        std::net::IpAddr::V6(v6) => v6
            .to_ipv4_mapped()
            .map_or(v6.is_loopback(), |v4| v4.is_loopback()),
        v4 => v4.is_loopback(),
    }
}

/// Decides the route of a destination (after dnat).
///
/// The order: an allowlist entry marked `direct` sends its destinations direct; localnet
/// sends direct; the first matching rule decides (direct, block, a chain); else the default
/// chain. When an allowlist is configured and no entry matches, the result is refused
/// (`By::Allowlist`) unless it is a `block` already or a direct connection to a loopback
/// address. (The proxy-only policy then refuses direct routes; the caller applies it.)
pub fn decide<'a>(cfg: &'a Config, d: &Destination) -> Decision<'a> {
    let allowed = allowlist(cfg, d);
    if let Allowed::Entry {
        index,
        direct: true,
    } = allowed
    {
        return Decision {
            route: Route::Direct,
            by: By::Allow(index),
        };
    }
    let decision = route(cfg, d);
    if allowed == Allowed::NotListed
        && !matches!(decision.route, Route::Block)
        && !exempt_from_allowlist(&decision.route, d)
    {
        return Decision {
            route: Route::Block,
            by: By::Allowlist,
        };
    }
    decision
}

/// localnet → rules → default chain.
fn route<'a>(cfg: &'a Config, d: &Destination) -> Decision<'a> {
    let chain = |name: &str| cfg.views().find(|v| v.name == name);
    let default = cfg.views().next();
    if cfg.localnet.iter().any(|p| p.matches(d)) {
        return Decision {
            route: Route::Direct,
            by: By::Localnet,
        };
    }
    for (i, r) in cfg.rules.iter().enumerate() {
        if !r.dest.matches(d) {
            continue;
        }
        let route = match (r.action, &r.chain) {
            (Some(RuleAction::Direct), _) => Route::Direct,
            (Some(RuleAction::Block), _) => Route::Block,
            (Some(RuleAction::Proxy), _) | (None, None) => {
                default.map_or(Route::Block, Route::Chain)
            }
            (None, Some(name)) => chain(name.get_ref()).map_or(Route::Block, Route::Chain),
        };
        return Decision {
            route,
            by: By::Rule(i),
        };
    }
    Decision {
        route: default.map_or(Route::Block, Route::Chain),
        by: By::Default,
    }
}

/// Shared proxy health: per proxy (global index) the monotonic time in ms until which it is
/// considered dead (0: alive), and per chain a round-robin counter.
pub struct Health<'a> {
    pub dead_until: &'a [AtomicU64],
    pub rr: &'a [AtomicU64],
}

impl Health<'_> {
    pub fn is_dead(&self, proxy: usize, now_ms: u64) -> bool {
        self.dead_until
            .get(proxy)
            .is_some_and(|t| t.load(Ordering::Relaxed) > now_ms)
    }

    pub fn mark_dead(&self, proxy: usize, until_ms: u64) {
        if let Some(t) = self.dead_until.get(proxy) {
            t.fetch_max(until_ms, Ordering::Relaxed);
        }
    }

    pub fn mark_alive(&self, proxy: usize) {
        if let Some(t) = self.dead_until.get(proxy) {
            t.store(0, Ordering::Relaxed);
        }
    }
}

/// The proxies (indices into `view.proxies`) one attempt uses, in order.
/// `tried` are proxies that failed earlier in this connect. `rand(n)` returns a value in 0..n.
pub fn plan(
    view: &ChainView,
    health: &Health,
    now_ms: u64,
    tried: &[usize],
    rand: &mut dyn FnMut(usize) -> usize,
) -> Result<Vec<usize>, Error> {
    let n = view.proxies.len();
    if view.mode == ChainMode::Strict {
        return if n == 0 {
            Err(Error::NoProxyAlive)
        } else {
            Ok((0..n).collect())
        };
    }
    let untried: Vec<usize> = (0..n).filter(|i| !tried.contains(i)).collect();
    let alive: Vec<usize> = untried
        .iter()
        .copied()
        .filter(|&i| !health.is_dead(view.first_proxy + i, now_ms))
        .collect();
    // When every proxy is marked dead, the marks are only hints: try them anyway.
    let pool = if alive.is_empty() { untried } else { alive };
    if pool.is_empty() {
        return Err(Error::NoProxyAlive);
    }
    let len = view.len.clamp(1, pool.len());
    Ok(match view.mode {
        ChainMode::Strict | ChainMode::Dynamic => pool,
        ChainMode::Random => {
            let mut pool = pool;
            for k in 0..len {
                let j = k + rand(pool.len() - k);
                pool.swap(k, j);
            }
            pool.truncate(len);
            pool
        }
        ChainMode::RoundRobin => {
            // Rotate over the usable proxies, so a dead one does not double its successor's
            // share; the counter is shared by the whole launch.
            let start = health
                .rr
                .get(view.index)
                .map_or(0, |c| c.fetch_add(len as u64, Ordering::Relaxed) as usize)
                % pool.len();
            let mut ordered: Vec<usize> = pool.iter().skip(start).copied().collect();
            ordered.extend(pool.iter().take(start).copied());
            ordered.truncate(len);
            ordered
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    fn cfg(text: &str) -> Config {
        Config::from_toml(text).unwrap()
    }

    fn words(n: usize) -> Vec<AtomicU64> {
        (0..n).map(|_| AtomicU64::new(0)).collect()
    }

    const FOUR: &str = "proxy = [\"socks5://127.0.0.1:1\", \"socks5://127.0.0.1:2\", \"socks5://127.0.0.1:3\", \"socks5://127.0.0.1:4\"]\n";

    #[test]
    fn strict_uses_all_in_order_even_dead() {
        let c = cfg(FOUR);
        let v = c.chain_views();
        let (dead, rr) = (words(8), words(2));
        let h = Health {
            dead_until: &dead,
            rr: &rr,
        };
        h.mark_dead(1, 1000);
        assert_eq!(
            plan(&v[0], &h, 10, &[], &mut |_| 0).unwrap(),
            vec![0, 1, 2, 3]
        );
    }

    #[test]
    fn dynamic_skips_dead_and_tried() {
        let c = cfg(&format!("chain = \"dynamic\"\n{FOUR}"));
        let v = c.chain_views();
        let (dead, rr) = (words(8), words(2));
        let h = Health {
            dead_until: &dead,
            rr: &rr,
        };
        h.mark_dead(1, 1000);
        assert_eq!(plan(&v[0], &h, 10, &[], &mut |_| 0).unwrap(), vec![0, 2, 3]);
        assert_eq!(plan(&v[0], &h, 10, &[0], &mut |_| 0).unwrap(), vec![2, 3]);
        assert_eq!(
            plan(&v[0], &h, 2000, &[], &mut |_| 0).unwrap(),
            vec![0, 1, 2, 3],
            "mark expired"
        );
        for i in 0..4 {
            h.mark_dead(i, 1000);
        }
        assert_eq!(
            plan(&v[0], &h, 10, &[2], &mut |_| 0).unwrap(),
            vec![0, 1, 3],
            "all dead: try anyway"
        );
        assert_eq!(
            plan(&v[0], &h, 10, &[0, 1, 2, 3], &mut |_| 0),
            Err(Error::NoProxyAlive)
        );
    }

    #[test]
    fn random_picks_chain_len_distinct_live() {
        let c = cfg(&format!("chain = \"random\"\nchain_len = 2\n{FOUR}"));
        let v = c.chain_views();
        let (dead, rr) = (words(8), words(2));
        let h = Health {
            dead_until: &dead,
            rr: &rr,
        };
        h.mark_dead(2, 1000);
        let mut seed = 12345u64;
        let mut rand = |n: usize| {
            seed = seed
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (seed >> 33) as usize % n
        };
        let mut seen = [0; 4];
        for _ in 0..400 {
            let p = plan(&v[0], &h, 10, &[], &mut rand).unwrap();
            assert_eq!(p.len(), 2);
            assert_ne!(p[0], p[1]);
            for i in p {
                seen[i] += 1;
            }
        }
        assert_eq!(seen[2], 0, "never the dead one");
        assert!(seen[0] > 100 && seen[1] > 100 && seen[3] > 100, "{seen:?}");
    }

    #[test]
    fn round_robin_rotates_and_skips_dead() {
        let c = cfg(&format!("chain = \"round_robin\"\n{FOUR}"));
        let v = c.chain_views();
        let (dead, rr) = (words(8), words(2));
        let h = Health {
            dead_until: &dead,
            rr: &rr,
        };
        let firsts: Vec<usize> = (0..8)
            .map(|_| plan(&v[0], &h, 10, &[], &mut |_| 0).unwrap()[0])
            .collect();
        assert_eq!(firsts, vec![0, 1, 2, 3, 0, 1, 2, 3]);
        h.mark_dead(1, 1000);
        let firsts: Vec<usize> = (0..4)
            .map(|_| plan(&v[0], &h, 10, &[], &mut |_| 0).unwrap()[0])
            .collect();
        assert_eq!(firsts, vec![3, 0, 2, 3], "rotates over the three live ones");
    }

    #[test]
    fn routing_order() {
        let c = cfg(r#"
localnet = ["10.0.0.0/8"]
proxy = ["socks5://127.0.0.1:1"]
[chains.tor]
proxy = ["socks5h://127.0.0.1:9050"]
[[rule]]
dest = "*.corp.example"
action = "direct"
[[rule]]
dest = "192.168.0.0/16:443"
action = "block"
[[rule]]
dest = "*.onion"
chain = "tor"
"#);
        let d = |ip: Option<&str>, name: Option<&'static str>, port| Destination {
            ip: ip.map(|s| s.parse().unwrap()),
            name,
            port,
        };
        let r = decide(&c, &d(Some("10.1.1.1"), None, 80));
        assert!(matches!(r.route, Route::Direct) && r.by == By::Localnet);
        let r = decide(&c, &d(None, Some("git.corp.example"), 22));
        assert!(matches!(r.route, Route::Direct) && r.by == By::Rule(0));
        let r = decide(&c, &d(Some("192.168.1.1"), None, 443));
        assert!(matches!(r.route, Route::Block) && r.by == By::Rule(1));
        let r = decide(&c, &d(Some("192.168.1.1"), None, 80));
        assert!(matches!(r.route, Route::Chain(ch) if ch.name == "default") && r.by == By::Default);
        let r = decide(&c, &d(None, Some("abc.onion"), 80));
        assert!(matches!(r.route, Route::Chain(ch) if ch.name == "tor" && ch.first_proxy == 1));
    }

    #[test]
    fn allowlist_order() {
        let c = cfg(r#"
localnet = ["127.0.0.0/8", "10.0.0.0/8"]
proxy = ["socks5://127.0.0.1:1"]
allow = ["pypi.org:443", "*.pythonhosted.org:443", "github.com", "10.0.0.0/8:5432",
         { dest = "db.internal:5432", direct = true }, "blocked.test", "[::1]:9"]
[chains.tor]
proxy = ["socks5h://127.0.0.1:9050"]
[[rule]]
dest = "blocked.test"
action = "block"
[[rule]]
dest = "github.com"
chain = "tor"
"#);
        let d = |ip: Option<&str>, name: Option<&'static str>, port| Destination {
            ip: ip.map(|s| s.parse().unwrap()),
            name,
            port,
        };
        let name = |n: &'static str, port| d(None, Some(n), port);
        let addr = |a: &str, port| d(Some(a), None, port);
        let cases = [
            (name("pypi.org", 443), By::Default, "default"),
            (name("pypi.org", 80), By::Allowlist, "block"),
            (name("files.pythonhosted.org", 443), By::Default, "default"),
            (name("github.com", 22), By::Rule(1), "tor"),
            // Listed, but a block rule still blocks.
            (name("blocked.test", 1), By::Rule(0), "block"),
            // Listed by address, routed by localnet.
            (addr("10.1.2.3", 5432), By::Localnet, "direct"),
            (addr("10.1.2.3", 22), By::Allowlist, "block"),
            // Marked direct: direct whatever the rules say.
            (name("db.internal", 5432), By::Allow(4), "direct"),
            // Unlisted: refused, names and addresses alike …
            (name("evil.test", 443), By::Allowlist, "block"),
            (addr("192.0.2.1", 443), By::Allowlist, "block"),
            // … except direct to loopback (localnet 127.0.0.0/8), which never leaves the
            // machine; loopback through a chain is not exempt.
            (addr("127.0.0.1", 5432), By::Localnet, "direct"),
            (addr("::ffff:127.0.0.9", 80), By::Localnet, "direct"),
            (addr("::1", 80), By::Allowlist, "block"),
            (addr("::1", 9), By::Default, "default"),
        ];
        let route = |r: Decision| match r.route {
            Route::Direct => "direct".to_string(),
            Route::Block => "block".to_string(),
            Route::Chain(ch) => ch.name.to_string(),
        };
        for (dest, by, want) in cases {
            let r = decide(&c, &dest);
            assert_eq!((route(r).as_str(), r.by), (want, by), "{dest:?}");
        }
        // An empty list refuses everything that would leave.
        let c = cfg("proxy = [\"socks5://127.0.0.1:1\"]\nallow = []\n");
        let r = decide(&c, &name("pypi.org", 443));
        assert_eq!((route(r).as_str(), r.by), ("block", By::Allowlist));
        assert_eq!(
            allowlist(&c, &d(Some("10.0.0.1"), None, 1)),
            Allowed::NotListed
        );
        // No list: nothing changes.
        let c = cfg("proxy = [\"socks5://127.0.0.1:1\"]\n");
        assert_eq!(allowlist(&c, &d(None, Some("x.test"), 1)), Allowed::NoList);
    }

    #[test]
    fn allowlist_round_trips_and_errors_are_located() {
        let text = "proxy = [\"socks5://127.0.0.1:1\"]\nallow = [\"a.test:443\", { dest = \"10.0.0.1:5432\", direct = true }]\n";
        let c = cfg(text);
        let list = c.allow.as_ref().unwrap();
        assert_eq!(list.len(), 2);
        assert!(!list[0].direct && list[1].direct);
        assert_eq!(
            Config::from_toml(&c.to_toml()).unwrap(),
            c,
            "{}",
            c.to_toml()
        );
        let only_direct = cfg(
            "proxy = [\"socks5://127.0.0.1:1\"]\nallow = [{ dest = \"10.0.0.1:5432\", direct = true }]\n",
        );
        assert_eq!(
            Config::from_toml(&only_direct.to_toml()).unwrap(),
            only_direct,
            "{}",
            only_direct.to_toml()
        );
        let e = Config::from_toml(
            "proxy = [\"socks5://h:1\"]\nallow = [\"ok.test\",\n  \"10.0.0.0/33\"]\n",
        )
        .unwrap_err();
        assert_eq!(e.line, 3, "{e}");
        assert!(e.msg.contains("10.0.0.0/33"), "{e}");
        let e = Config::from_toml(
            "proxy = [\"socks5://h:1\"]\nallow = [{ dest = \"a.test\", direkt = true }]\n",
        )
        .unwrap_err();
        assert_eq!(e.line, 2, "{e}");
        assert!(e.msg.contains("direkt"), "{e}");
    }

    #[test]
    fn rule_errors_are_located() {
        let e = Config::from_toml(
            "proxy = [\"socks5://h:1\"]\n[[rule]]\ndest = \"*\"\nchain = \"nope\"\n",
        )
        .unwrap_err();
        assert_eq!(e.line, 4, "{e}");
        assert!(
            e.msg.contains("unknown chain `nope` (defined: default)"),
            "{e}"
        );
        let e = Config::from_toml(
            "proxy = [\"socks5://h:1\"]\n[[rule]]\ndest = \"10.0.0.0/33\"\naction = \"block\"\n",
        )
        .unwrap_err();
        assert_eq!(e.line, 3, "{e}");
        let e = Config::from_toml(
            "proxy = [\"socks5://h:1\"]\n[[rule]]\ndest = \"*\"\naction = \"drop\"\n",
        )
        .unwrap_err();
        assert_eq!(e.line, 4, "{e}");
        let e = Config::from_toml("chain = \"zigzag\"\nproxy = [\"socks5://h:1\"]\n").unwrap_err();
        assert_eq!(e.line, 1, "{e}");
    }
}
