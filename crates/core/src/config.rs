//! The configuration model (TOML), proxy URLs, and where a config file is looked for.
//!
//! Owns: parsing and validating the user's file into [`Config`], with errors that name the file,
//! line and column; the normalized form the launcher hands to every process of the tree.
//! Must never: do network I/O or call a resolver itself (name resolution is injected, so the
//! preloaded library can pass the real libc resolver and never re-enter its own hooks).

use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};

use serde::de::{self, MapAccess, Visitor};

use crate::fakedns::{FakeRanges, Net};
use crate::rules::{Allow, Dnat, Pattern};
use serde::{Deserialize, Deserializer, Serialize};
use std::collections::BTreeMap;

/// Default per-hop connect timeout (ms).
pub const DEFAULT_CONNECT_TIMEOUT_MS: u64 = 10_000;
/// Default deadline for the whole chain handshake (ms).
pub const DEFAULT_HANDSHAKE_TIMEOUT_MS: u64 = 30_000;

/// A whole chainsocks configuration.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Timeout for each TCP connect to a proxy, and for each hop's CONNECT reply (ms).
    #[serde(default = "default_connect_timeout")]
    pub connect_timeout_ms: u64,
    /// One deadline for the whole chain handshake, all hops together (ms).
    #[serde(default = "default_handshake_timeout")]
    pub handshake_timeout_ms: u64,
    /// The handshake deadline for a non-blocking socket (whose connect blocks the calling thread
    /// for the handshake): default `handshake_timeout_ms`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nonblocking_timeout_ms: Option<u64>,
    /// No per-connection log lines (warnings and errors still appear).
    #[serde(default)]
    pub quiet: bool,
    /// Log level: off, error, warn, info, debug. `CHAINSOCKS_LOG` overrides it.
    #[serde(default)]
    pub log: LogLevel,
    /// Append log lines to this file instead of the program's stderr.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub log_file: Option<PathBuf>,
    /// Names are resolved by the last proxy: programs get fake addresses (see fakedns).
    #[serde(default = "yes")]
    pub proxy_dns: bool,
    /// The fake IPv4 range (never multicast).
    #[serde(default = "default_fake_v4")]
    pub fake_ip_range: String,
    /// The fake IPv6 range, for AF_INET6 lookups.
    #[serde(default = "default_fake_v6")]
    pub fake_ip6_range: String,
    /// What a plain socks4:// last hop does with a name: "remote" (fail: use socks4a) or
    /// "local" (resolve it here and send the address).
    #[serde(default)]
    pub socks4_resolve: Socks4Resolve,
    /// How the default chain uses its proxies.
    #[serde(default)]
    pub chain: ChainMode,
    /// How many proxies a random / round_robin chain uses per connection (default 1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub chain_len: Option<usize>,
    /// How long a proxy found dead is skipped by dynamic / random / round_robin chains (ms).
    #[serde(default = "default_dead_retry")]
    pub dead_retry_ms: u64,
    /// What a `block` rule reports: "EACCES" (default) or "ECONNREFUSED".
    #[serde(default)]
    pub block_errno: BlockErrno,
    /// Destinations that always go direct (proxychains' localnet): CIDR or IP, optional :port.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub localnet: Vec<Pattern>,
    /// "open" (default) or "proxy-only": every connection that would go direct, and every UDP
    /// datagram to a non-loopback address, is refused with EACCES.
    #[serde(default)]
    pub policy: Policy,
    /// Append one JSON line per event (connect, lookup, block, udp) to this file. Set by the
    /// launcher's `--report`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub report_file: Option<PathBuf>,
    /// Destinations that stay reachable directly under `proxy-only` (set by `--isolate
    /// --allow-direct`: the in-namespace forwarders).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allowed_direct: Vec<Pattern>,
    /// The egress allowlist (`None`: none). When set, a destination no entry matches is
    /// refused (EACCES), except a direct connection to a loopback address; see
    /// [`crate::chain::decide`] for where it sits among the other decisions.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allow: Option<Vec<Allow>>,
    /// The chain, in order: first entry is the proxy we connect to.
    #[serde(default, rename = "proxy", skip_serializing_if = "Vec::is_empty")]
    pub proxies: Vec<Proxy>,
    /// Destination rewrites applied before anything else.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub dnat: Vec<Dnat>,
    /// Named chains, for rules.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub chains: BTreeMap<String, ChainSpec>,
    /// Ordered rules; the first that matches decides. No match: the default chain.
    #[serde(default, rename = "rule", skip_serializing_if = "Vec::is_empty")]
    pub rules: Vec<Rule>,
    /// Where each proxy is reached when it is the first hop: "IP:PORT" → "IP:PORT". Set by
    /// `--isolate` (the in-namespace listeners that forward to the real proxies).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub via: BTreeMap<String, String>,
    /// The SOCKS5 proxy that carries UDP for chains that cannot (more than one hop, or a last
    /// hop that is not SOCKS5): a UDP association needs a proxy the program reaches with UDP.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub udp_proxy: Option<Proxy>,
    /// Under `--isolate`: the in-namespace UDP forwarder the library sends a proxy's relay
    /// datagrams to (set by the launcher).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub udp_via: Option<String>,
    /// The launcher's UDP hub (set by the launcher): a connected UDP socket is registered
    /// there and connected to it, and the hub frames its plain datagrams — so a program that
    /// connects through libc but sends with raw syscalls (libuv: dig, node) is carried too.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub udp_hub: Option<String>,
    /// Set by the launcher: a program's own DNS (port 53 of these nameservers) goes to the
    /// launch's fake-DNS responder instead.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dns_redirect: Option<DnsRedirect>,
}

/// Where a program's own DNS goes instead of its nameservers: the launch's responder.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DnsRedirect {
    /// The resolv.conf nameservers whose port 53 is redirected.
    pub nameservers: Vec<IpAddr>,
    /// The responder's UDP address on 127.0.0.1, and on ::1 when there is one.
    pub udp4: SocketAddr,
    pub udp6: Option<SocketAddr>,
    /// The responder's TCP address on 127.0.0.1, and on ::1 when there is one.
    pub tcp4: SocketAddr,
    pub tcp6: Option<SocketAddr>,
}

impl DnsRedirect {
    /// The responder address a socket of type `ty` (SOCK_DGRAM / SOCK_STREAM) connects or
    /// sends to instead of `dest`, if `dest` is port 53 of a nameserver. `socket` tells the
    /// socket's domain and whether it is IPV6_V6ONLY; it is asked only for such a `dest` (it
    /// reads the socket: nothing is read for every other destination). An AF_INET6 socket
    /// gets the IPv6 responder when its destination is IPv6 and it is V6ONLY, else the IPv4
    /// one (v4-mapped when the destination is IPv6).
    pub fn target(
        &self,
        dest: SocketAddr,
        ty: i32,
        socket: impl FnOnce() -> (i32, bool),
    ) -> Option<SocketAddr> {
        let ip = match dest.ip() {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(dest.ip(), IpAddr::V4),
            v4 => v4,
        };
        if dest.port() != 53 || !self.nameservers.contains(&ip) {
            return None;
        }
        let (v4, v6) = match ty {
            libc::SOCK_DGRAM => (self.udp4, self.udp6),
            libc::SOCK_STREAM => (self.tcp4, self.tcp6),
            _ => return None,
        };
        let (domain, v6only) = socket();
        if domain == libc::AF_INET {
            return Some(v4);
        }
        match (dest, v6only) {
            (SocketAddr::V6(d), true) if d.ip().to_ipv4_mapped().is_none() => v6.or(Some(v4)),
            (SocketAddr::V4(_), _) => Some(v4),
            _ => {
                let ip = match v4.ip() {
                    IpAddr::V4(a) => a.to_ipv6_mapped(),
                    IpAddr::V6(a) => a,
                };
                Some(SocketAddr::new(IpAddr::V6(ip), v4.port()))
            }
        }
    }
}

/// See [`Config::policy`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Policy {
    #[default]
    Open,
    ProxyOnly,
}

/// How a chain uses its proxies (proxychains' chain types).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ChainMode {
    /// Every proxy, in order; any failure fails the connection.
    #[default]
    Strict,
    /// Every live proxy, in order; dead ones are skipped.
    Dynamic,
    /// `chain_len` live proxies picked at random.
    Random,
    /// `chain_len` live proxies, starting after the last one used.
    RoundRobin,
}

impl ChainMode {
    pub fn name(self) -> &'static str {
        match self {
            ChainMode::Strict => "strict",
            ChainMode::Dynamic => "dynamic",
            ChainMode::Random => "random",
            ChainMode::RoundRobin => "round_robin",
        }
    }

    pub fn parse(s: &str) -> Option<ChainMode> {
        Some(match s.to_ascii_lowercase().replace('-', "_").as_str() {
            "strict" => ChainMode::Strict,
            "dynamic" => ChainMode::Dynamic,
            "random" => ChainMode::Random,
            "round_robin" => ChainMode::RoundRobin,
            _ => return None,
        })
    }
}

/// A named chain.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChainSpec {
    #[serde(default)]
    pub chain: ChainMode,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub chain_len: Option<usize>,
    #[serde(rename = "proxy")]
    pub proxies: Vec<Proxy>,
}

/// One routing rule: `dest` plus either `action` or `chain`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rule {
    pub dest: Pattern,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub action: Option<RuleAction>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub chain: Option<toml::Spanned<String>>,
}

/// What a rule does without naming a chain.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RuleAction {
    /// Connect without any proxy.
    Direct,
    /// Refuse the connection.
    Block,
    /// The default chain.
    Proxy,
}

/// The errno a blocked connection gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub enum BlockErrno {
    #[default]
    #[serde(rename = "EACCES")]
    Eacces,
    #[serde(rename = "ECONNREFUSED")]
    Econnrefused,
}

impl BlockErrno {
    pub fn errno(self) -> i32 {
        match self {
            BlockErrno::Eacces => libc::EACCES,
            BlockErrno::Econnrefused => libc::ECONNREFUSED,
        }
    }
}

/// The name of the top-level chain.
pub const DEFAULT_CHAIN: &str = "default";
/// Limits of the shared health state.
pub const MAX_CHAINS: usize = 32;
pub const MAX_PROXIES: usize = 256;

/// A chain as the router and dialer see it.
#[derive(Debug, Clone, Copy)]
pub struct ChainView<'a> {
    pub name: &'a str,
    pub mode: ChainMode,
    pub len: usize,
    pub proxies: &'a [Proxy],
    /// Index of this chain (0 = default), for shared round-robin counters.
    pub index: usize,
    /// Index of the chain's first proxy among all proxies, for shared dead marks.
    pub first_proxy: usize,
}

fn default_dead_retry() -> u64 {
    DEFAULT_DEAD_RETRY_MS
}
/// Default time a dead proxy is skipped (ms).
pub const DEFAULT_DEAD_RETRY_MS: u64 = 30_000;

/// See [`Config::socks4_resolve`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Socks4Resolve {
    #[default]
    Remote,
    Local,
}

/// Default fake IPv4 range: RFC 2544's benchmarking block (not routed, not multicast).
pub const DEFAULT_FAKE_V4: &str = "198.18.0.0/15";
/// Default fake IPv6 range: a unique local /64.
pub const DEFAULT_FAKE_V6: &str = "fd63:6873:6f63:6b73::/64";

fn yes() -> bool {
    true
}
fn default_fake_v4() -> String {
    DEFAULT_FAKE_V4.into()
}
fn default_fake_v6() -> String {
    DEFAULT_FAKE_V6.into()
}

fn default_connect_timeout() -> u64 {
    DEFAULT_CONNECT_TIMEOUT_MS
}
fn default_handshake_timeout() -> u64 {
    DEFAULT_HANDSHAKE_TIMEOUT_MS
}

impl Default for Config {
    fn default() -> Self {
        Config {
            connect_timeout_ms: DEFAULT_CONNECT_TIMEOUT_MS,
            handshake_timeout_ms: DEFAULT_HANDSHAKE_TIMEOUT_MS,
            nonblocking_timeout_ms: None,
            quiet: false,
            log: LogLevel::default(),
            log_file: None,
            proxy_dns: true,
            fake_ip_range: DEFAULT_FAKE_V4.into(),
            fake_ip6_range: DEFAULT_FAKE_V6.into(),
            socks4_resolve: Socks4Resolve::Remote,
            chain: ChainMode::Strict,
            chain_len: None,
            dead_retry_ms: DEFAULT_DEAD_RETRY_MS,
            block_errno: BlockErrno::Eacces,
            localnet: Vec::new(),
            proxies: Vec::new(),
            dnat: Vec::new(),
            chains: BTreeMap::new(),
            rules: Vec::new(),
            policy: Policy::Open,
            report_file: None,
            allowed_direct: Vec::new(),
            allow: None,
            via: BTreeMap::new(),
            udp_proxy: None,
            udp_via: None,
            udp_hub: None,
            dns_redirect: None,
        }
    }
}

/// How much chainsocks logs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogLevel {
    Off,
    Error,
    Warn,
    #[default]
    Info,
    Debug,
}

impl LogLevel {
    pub fn parse(s: &str) -> Option<LogLevel> {
        Some(match s.trim().to_ascii_lowercase().as_str() {
            "off" | "none" | "0" => LogLevel::Off,
            "error" => LogLevel::Error,
            "warn" | "warning" => LogLevel::Warn,
            "info" | "1" => LogLevel::Info,
            "debug" | "trace" | "2" => LogLevel::Debug,
            _ => return None,
        })
    }
}

/// The protocol a proxy speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ProxyKind {
    /// SOCKS4: IPv4 destinations only.
    Socks4,
    /// SOCKS4a: SOCKS4 plus host names resolved by the proxy.
    Socks4a,
    /// SOCKS5 (RFC 1928); names behind fake IPs are still sent as names.
    Socks5,
    /// SOCKS5 with remote name resolution (curl's convention); same wire protocol as socks5.
    Socks5h,
    /// HTTP CONNECT.
    Http,
    /// No handshake: the proxy is a plain TCP relay to a fixed place (proxychains' `raw`).
    Raw,
}

impl ProxyKind {
    pub const SCHEMES: &'static str = "socks4, socks4a, socks5, socks5h, http, raw";

    pub fn from_scheme(s: &str) -> Option<ProxyKind> {
        Some(match s.to_ascii_lowercase().as_str() {
            "socks4" => ProxyKind::Socks4,
            "socks4a" => ProxyKind::Socks4a,
            "socks5" => ProxyKind::Socks5,
            "socks5h" => ProxyKind::Socks5h,
            "http" => ProxyKind::Http,
            "raw" => ProxyKind::Raw,
            _ => return None,
        })
    }

    pub fn scheme(self) -> &'static str {
        match self {
            ProxyKind::Socks4 => "socks4",
            ProxyKind::Socks4a => "socks4a",
            ProxyKind::Socks5 => "socks5",
            ProxyKind::Socks5h => "socks5h",
            ProxyKind::Http => "http",
            ProxyKind::Raw => "raw",
        }
    }

    /// The port used when a URL names none.
    pub fn default_port(self) -> u16 {
        match self {
            ProxyKind::Http => 8080,
            _ => 1080,
        }
    }

    pub fn is_socks5(self) -> bool {
        matches!(self, ProxyKind::Socks5 | ProxyKind::Socks5h)
    }
}

/// One proxy of a chain. In a file: a URL string or a table.
#[derive(Clone, PartialEq, Eq, Serialize)]
pub struct Proxy {
    #[serde(rename = "type")]
    pub kind: ProxyKind,
    pub host: String,
    pub port: u16,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password: Option<String>,
    /// Send every handshake message without waiting for replies (see the README).
    #[serde(default, skip_serializing_if = "is_false")]
    pub pipeline: bool,
    /// Overrides the global connect_timeout_ms for this hop.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connect_timeout_ms: Option<u64>,
    /// Every address of a proxy given by name, in the resolver's order (filled once by
    /// [`Config::resolve_proxies`]); a first hop is tried at each in turn.
    #[serde(default, rename = "addresses", skip_serializing_if = "Vec::is_empty")]
    pub addrs: Vec<IpAddr>,
    /// `host` parsed as an IP address, when it is one: set with `host` by every constructor
    /// ([`literal_host`]), so that a connect never parses it again. `None` with no `addrs`:
    /// parsed when asked.
    #[serde(skip)]
    pub literal: Option<IpAddr>,
}

/// A proxy host as an IP address, when it is a literal (for [`Proxy::literal`]).
pub fn literal_host(host: &str) -> Option<IpAddr> {
    host.parse().ok()
}

fn is_false(b: &bool) -> bool {
    !*b
}

// Never print a password, not even in a Debug dump.
impl fmt::Debug for Proxy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Proxy")
            .field("kind", &self.kind)
            .field("host", &self.host)
            .field("port", &self.port)
            .field("username", &self.username)
            .field("password", &self.password.as_ref().map(|_| "***"))
            .field("pipeline", &self.pipeline)
            .field("connect_timeout_ms", &self.connect_timeout_ms)
            .field("addrs", &self.addrs)
            .finish()
    }
}

/// `type://host:port` without credentials, for logs.
impl fmt::Display for Proxy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}://", self.kind.scheme())?;
        if let Some(u) = &self.username {
            write!(f, "{u}@")?;
        }
        match self.host.parse::<IpAddr>() {
            Ok(IpAddr::V6(v6)) => write!(f, "[{v6}]:{}", self.port),
            _ => write!(f, "{}:{}", self.host, self.port),
        }
    }
}

impl Proxy {
    /// Parses `scheme://[user[:pass]@]host[:port][/][?pipeline=1]`; user and password are
    /// percent-decoded.
    pub fn from_url(url: &str) -> Result<Proxy, String> {
        Proxy::parse_url(url, true)
    }

    /// As [`Proxy::from_url`], with user and password taken exactly as written, the way
    /// proxychains-ng reads the URLs of its proxy list (`50%off` is a password).
    pub fn from_url_literal(url: &str) -> Result<Proxy, String> {
        Proxy::parse_url(url, false)
    }

    fn parse_url(url: &str, decode: bool) -> Result<Proxy, String> {
        let bad = |why: &str| format!("bad proxy URL `{}`: {why}", redact_url(url));
        let (scheme, rest) = url.split_once("://").ok_or_else(|| {
            bad(&format!(
                "expected SCHEME://HOST:PORT (schemes: {})",
                ProxyKind::SCHEMES
            ))
        })?;
        let kind = ProxyKind::from_scheme(scheme).ok_or_else(|| {
            bad(&format!(
                "unknown scheme `{scheme}` (accepted: {})",
                ProxyKind::SCHEMES
            ))
        })?;
        let (rest, query) = match rest.split_once('?') {
            Some((r, q)) => (r, Some(q)),
            None => (rest, None),
        };
        let rest = rest.strip_suffix('/').unwrap_or(rest);
        let (userinfo, hostport) = match rest.rsplit_once('@') {
            Some((u, h)) => (Some(u), h),
            None => (None, rest),
        };
        let (username, password) = match userinfo {
            None => (None, None),
            Some(u) => {
                let (user, pass) = match u.split_once(':') {
                    Some((a, b)) => (a, Some(b)),
                    None => (u, None),
                };
                let text = |s: &str, what: &str| match decode {
                    true => {
                        percent_decode(s).ok_or_else(|| bad(&format!("bad %-escape in {what}")))
                    }
                    false => Ok(s.to_string()),
                };
                let user = text(user, "user name")?;
                let pass = pass.map(|p| text(p, "password")).transpose()?;
                (Some(user), pass)
            }
        };
        let (host, port) = split_host_port(hostport).map_err(|e| bad(&e))?;
        let port = match port {
            Some(p) => p,
            None => kind.default_port(),
        };
        let mut pipeline = false;
        if let Some(q) = query {
            for pair in q.split('&').filter(|p| !p.is_empty()) {
                let (k, v) = pair.split_once('=').unwrap_or((pair, "1"));
                match k {
                    "pipeline" => {
                        pipeline = parse_bool(v)
                            .ok_or_else(|| bad(&format!("pipeline={v}: expected 0/1/true/false")))?
                    }
                    _ => return Err(bad(&format!("unknown option `{k}` (accepted: pipeline)"))),
                }
            }
        }
        let p = Proxy {
            kind,
            literal: literal_host(&host),
            host,
            port,
            username,
            password,
            pipeline,
            connect_timeout_ms: None,
            addrs: Vec::new(),
        };
        p.validate().map_err(|e| bad(&e))?;
        Ok(p)
    }

    pub fn validate(&self) -> Result<(), String> {
        if self.host.is_empty() {
            return Err("empty host".into());
        }
        let name_ok = self
            .host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.' || b == b'_');
        if !name_ok && self.host.parse::<IpAddr>().is_err() {
            return Err(format!(
                "bad host `{}`: expected an IP address or a host name",
                self.host
            ));
        }
        if self.port == 0 {
            return Err("port 0".into());
        }
        if self.password.is_some() && self.username.is_none() {
            return Err("a password needs a username".into());
        }
        if let Some(u) = &self.username {
            match self.kind {
                ProxyKind::Socks5 | ProxyKind::Socks5h if u.is_empty() || u.len() > 255 => {
                    return Err("SOCKS5 user name must be 1 to 255 bytes".into());
                }
                ProxyKind::Socks5 | ProxyKind::Socks5h
                    if self.password.as_ref().is_some_and(|p| p.len() > 255) =>
                {
                    return Err("SOCKS5 password must be at most 255 bytes".into());
                }
                ProxyKind::Socks4 | ProxyKind::Socks4a if u.contains('\0') => {
                    return Err("SOCKS4 user id cannot contain NUL".into());
                }
                _ => {}
            }
        }
        Ok(())
    }

    /// The proxy's (first) address: its host when that is an IP literal, else the first
    /// address [`Config::resolve_proxies`] found (always `Some` after it).
    pub fn socket_addr(&self) -> Option<SocketAddr> {
        self.literal_ip()
            .or_else(|| self.addrs.first().copied())
            .map(|ip| SocketAddr::new(ip, self.port))
    }

    /// Every address of the proxy, in order: its IP literal, or all the addresses its name
    /// resolved to.
    pub fn socket_addrs(&self) -> impl Iterator<Item = SocketAddr> + '_ {
        let literal = self.literal_ip();
        let list: &[IpAddr] = if literal.is_some() { &[] } else { &self.addrs };
        literal
            .into_iter()
            .chain(list.iter().copied())
            .map(|ip| SocketAddr::new(ip, self.port))
    }

    /// `host` as an IP address, when it is one (a resolved name has `addrs` instead).
    fn literal_ip(&self) -> Option<IpAddr> {
        match self.literal {
            Some(ip) => Some(ip),
            None if self.addrs.is_empty() => literal_host(&self.host),
            None => None,
        }
    }

    /// Username and password, when configured (password defaults to empty).
    pub fn credentials(&self) -> Option<(&str, &str)> {
        self.username
            .as_deref()
            .map(|u| (u, self.password.as_deref().unwrap_or("")))
    }
}

/// A URL with any password replaced by `***`, safe to print.
pub fn redact_url(url: &str) -> String {
    match url_password_span(url.as_bytes()) {
        Some(r) => match (url.get(..r.start), url.get(r.end..)) {
            (Some(a), Some(b)) => format!("{a}***{b}"),
            _ => url.to_string(),
        },
        None => url.to_string(),
    }
}

/// Where the password of the first URL in `text` is, read as [`Proxy::from_url`] reads it:
/// after `://`, up to the first `?`, the user info is what precedes the last `@`, and the
/// password follows its first `:`. A byte range of `text` (never empty).
pub fn url_password_span(text: &[u8]) -> Option<std::ops::Range<usize>> {
    let start = text.windows(3).position(|w| w == b"://")? + 3;
    let rest = text.get(start..)?;
    let auth = rest.get(..rest.iter().position(|&b| b == b'?').unwrap_or(rest.len()))?;
    let at = auth.iter().rposition(|&b| b == b'@')?;
    let colon = auth.get(..at)?.iter().position(|&b| b == b':')?;
    let r = start + colon + 1..start + at;
    (!r.is_empty()).then_some(r)
}

/// `msg` with the password of every URL in it replaced by `***`. A URL runs to the next
/// backtick, single quote, line end, or double quote not escaped by a backslash (messages
/// quote values in those), so a password with spaces is covered too.
pub fn redact_urls(msg: &str) -> String {
    let b = msg.as_bytes();
    let mut out = String::with_capacity(msg.len());
    let mut done = 0;
    let mut from = 0;
    while let Some(found) = b
        .get(from..)
        .and_then(|r| r.windows(3).position(|w| w == b"://"))
    {
        let start = from + found;
        let mut end = start + 3;
        while let Some(&c) = b.get(end) {
            let escaped = end > 0 && b.get(end - 1) == Some(&b'\\');
            if c == b'`' || c == b'\'' || c == b'\n' || (c == b'"' && !escaped) {
                break;
            }
            end += 1;
        }
        if let Some(r) = b.get(start..end).and_then(url_password_span) {
            out.push_str(msg.get(done..start + r.start).unwrap_or(""));
            out.push_str("***");
            done = start + r.end;
        }
        from = end.max(start + 3);
    }
    out.push_str(msg.get(done..).unwrap_or(""));
    out
}

fn parse_bool(v: &str) -> Option<bool> {
    match v.to_ascii_lowercase().as_str() {
        "1" | "true" | "yes" | "on" => Some(true),
        "0" | "false" | "no" | "off" => Some(false),
        _ => None,
    }
}

fn percent_decode(s: &str) -> Option<String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while let Some(&c) = b.get(i) {
        if c == b'%' {
            let hex = s.get(i + 1..i + 3)?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(c);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// Splits `host:port`, `[v6]:port`, `host`, `[v6]`, or a bare IPv6 literal.
pub fn split_host_port(s: &str) -> Result<(String, Option<u16>), String> {
    let parse_port = |p: &str| -> Result<u16, String> {
        match p.parse::<u16>() {
            Ok(n) if n > 0 => Ok(n),
            _ => Err(format!("bad port `{p}`")),
        }
    };
    if let Some(rest) = s.strip_prefix('[') {
        let (h, after) = rest
            .split_once(']')
            .ok_or("missing `]` after IPv6 address")?;
        h.parse::<std::net::Ipv6Addr>()
            .map_err(|_| format!("bad IPv6 address `{h}`"))?;
        return match after {
            "" => Ok((h.to_string(), None)),
            a => match a.strip_prefix(':') {
                Some(p) => Ok((h.to_string(), Some(parse_port(p)?))),
                None => Err(format!("unexpected `{a}` after `]`")),
            },
        };
    }
    if s.parse::<std::net::Ipv6Addr>().is_ok() {
        return Ok((s.to_string(), None));
    }
    match s.rsplit_once(':') {
        Some((h, p)) => Ok((h.to_string(), Some(parse_port(p)?))),
        None => Ok((s.to_string(), None)),
    }
}

/// The table form of a proxy, as written in a file.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ProxyTable {
    url: Option<String>,
    #[serde(rename = "type")]
    kind: Option<ProxyKind>,
    host: Option<String>,
    port: Option<u16>,
    username: Option<String>,
    password: Option<String>,
    pipeline: Option<bool>,
    connect_timeout_ms: Option<u64>,
    #[serde(default, rename = "addresses")]
    addrs: Vec<IpAddr>,
}

impl TryFrom<ProxyTable> for Proxy {
    type Error = String;
    fn try_from(t: ProxyTable) -> Result<Proxy, String> {
        let mut p = match (t.url, t.kind, t.host) {
            (Some(url), None, None) => Proxy::from_url(&url)?,
            (Some(_), _, _) => return Err("give either `url` or `type` + `host`, not both".into()),
            (None, Some(kind), Some(host)) => {
                let host = match split_host_port(&host) {
                    Ok((h, None)) => h,
                    _ => return Err(format!("bad host `{host}` (put the port in `port`)")),
                };
                Proxy {
                    kind,
                    port: t.port.unwrap_or(kind.default_port()),
                    literal: literal_host(&host),
                    host,
                    username: None,
                    password: None,
                    pipeline: false,
                    connect_timeout_ms: None,
                    addrs: Vec::new(),
                }
            }
            (None, None, _) => return Err("a proxy needs `type` and `host` (or `url`)".into()),
            (None, Some(_), None) => return Err("a proxy needs `host`".into()),
        };
        if t.username.is_some() {
            p.username = t.username;
        }
        if t.password.is_some() {
            p.password = t.password;
        }
        if let Some(pl) = t.pipeline {
            p.pipeline = pl;
        }
        if t.connect_timeout_ms.is_some() {
            p.connect_timeout_ms = t.connect_timeout_ms;
        }
        p.addrs = t.addrs;
        p.validate()?;
        Ok(p)
    }
}

/// A proxy reads from a URL string or a table (custom, so both forms give precise errors).
impl<'de> Deserialize<'de> for Proxy {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Proxy, D::Error> {
        deserialize_proxy(d)
    }
}

fn deserialize_proxy<'de, D: Deserializer<'de>>(d: D) -> Result<Proxy, D::Error> {
    struct V;
    impl<'de> Visitor<'de> for V {
        type Value = Proxy;
        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            write!(
                f,
                "a proxy URL (\"socks5://host:port\") or a table {{ type, host, port, … }}"
            )
        }
        fn visit_str<E: de::Error>(self, s: &str) -> Result<Proxy, E> {
            Proxy::from_url(s).map_err(E::custom)
        }
        fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Proxy, A::Error> {
            let t = ProxyTable::deserialize(de::value::MapAccessDeserializer::new(map))?;
            Proxy::try_from(t).map_err(de::Error::custom)
        }
    }
    d.deserialize_any(V)
}

/// A configuration error, located in its file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub file: Option<PathBuf>,
    /// 1-based; 0 when the error has no position.
    pub line: usize,
    pub col: usize,
    pub msg: String,
    /// Byte offset in the source text, until it is turned into line and column.
    pub offset: Option<usize>,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let file = self.file.as_deref().map(Path::display);
        match (file, self.line) {
            (Some(file), 0) => write!(f, "{file}: {}", self.msg),
            (Some(file), l) => write!(f, "{file}:{l}:{}: {}", self.col, self.msg),
            (None, 0) => write!(f, "{}", self.msg),
            (None, l) => write!(f, "line {l}, column {}: {}", self.col, self.msg),
        }
    }
}

impl std::error::Error for ConfigError {}

impl ConfigError {
    pub fn new(msg: impl Into<String>) -> ConfigError {
        ConfigError {
            file: None,
            line: 0,
            col: 0,
            msg: msg.into(),
            offset: None,
        }
    }

    /// An error at a byte offset of the source (placed by [`ConfigError::locate`]).
    pub fn at(msg: impl Into<String>, offset: usize) -> ConfigError {
        ConfigError {
            offset: Some(offset),
            ..ConfigError::new(msg)
        }
    }

    /// Turns a byte offset into line and column of `text`.
    pub fn locate(mut self, text: &str) -> ConfigError {
        if let Some(off) = self.offset.take() {
            (self.line, self.col) = line_col(text, off);
        }
        self
    }

    pub fn in_file(mut self, file: &Path) -> ConfigError {
        self.file = Some(file.to_path_buf());
        self
    }

    /// The error without secrets in its message: the password of every URL in it is `***`,
    /// and when it points at the value of a `password` key or at a URL with a password in
    /// `source` (the TOML it is about), so is every quoted value in it — serde echoes the value
    /// it rejected, escaped, and a number as parsed (`password = 1e5` gives `100000.0`), so
    /// only the position tells.
    pub fn redacted(mut self, source: Option<&str>) -> ConfigError {
        if let Some(text) = source
            && at_secret_value(text, self.line, self.col)
        {
            self.msg = redact_quoted(&self.msg);
        }
        self.msg = redact_urls(&self.msg);
        self
    }
}

/// Whether 1-based `line`:`col` of a TOML `text` is at a secret: in the value of a key named
/// `password` (`password = …`, `"password" = …`, `proxy.password = …`, inside an inline table
/// too), or before a URL with a password on that line.
fn at_secret_value(text: &str, line: usize, col: usize) -> bool {
    let Some(l) = line.checked_sub(1).and_then(|i| text.split('\n').nth(i)) else {
        return false;
    };
    let split = l
        .char_indices()
        .nth(col.saturating_sub(1))
        .map_or(l.len(), |(i, _)| i);
    let (before, after) = l.split_at(split);
    if url_password_span(after.as_bytes()).is_some() {
        return true;
    }
    let Some((key, _)) = before.rsplit_once('=') else {
        return false;
    };
    let key = key.trim_end();
    ["\"password\"", "'password'", "password"]
        .iter()
        .filter_map(|form| key.strip_suffix(form))
        .any(|k| {
            k.is_empty() || k.ends_with(|c: char| c.is_whitespace() || matches!(c, '{' | ',' | '.'))
        })
}

/// `msg` with the inside of every `…` and "…" replaced by `***`.
fn redact_quoted(msg: &str) -> String {
    let mut out = String::with_capacity(msg.len());
    let mut open: Option<char> = None;
    let mut prev = '\0';
    for c in msg.chars() {
        match open {
            Some(q) if c == q && !(q == '"' && prev == '\\') => {
                out.push_str("***");
                out.push(c);
                open = None;
            }
            Some(_) => {}
            None => {
                out.push(c);
                if c == '`' || c == '"' {
                    open = Some(c);
                }
            }
        }
        prev = c;
    }
    if open.is_some() {
        out.push_str("***");
    }
    out
}

/// 1-based line and column of a byte offset.
pub fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let before = text.get(..offset.min(text.len())).unwrap_or(text);
    let line = before.matches('\n').count() + 1;
    let col = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    (line, col)
}

impl Config {
    /// Parses and validates a TOML document.
    pub fn from_toml(text: &str) -> Result<Config, ConfigError> {
        let cfg: Config = toml::from_str(text).map_err(|e| {
            let (line, col) = e.span().map_or((0, 0), |s| line_col(text, s.start));
            ConfigError {
                file: None,
                line,
                col,
                msg: e.message().trim().to_string(),
                offset: None,
            }
            .redacted(Some(text))
        })?;
        cfg.validate()
            .map_err(|e| e.locate(text).redacted(Some(text)))?;
        Ok(cfg)
    }

    /// Reads, parses and validates a file.
    pub fn from_file(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| ConfigError::new(format!("cannot read: {e}")).in_file(path))?;
        Config::from_toml(&text).map_err(|e| e.in_file(path))
    }

    /// Checks what serde cannot.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let catch_all = self.rules.iter().any(|r| r.dest.as_str() == "*");
        if self.proxies.is_empty() && (self.chains.is_empty() || !catch_all) {
            return Err(ConfigError::new(
                "no proxy configured: add a [[proxy]] table or `proxy = [\"socks5://host:port\"]`",
            ));
        }
        if self.chains.contains_key(DEFAULT_CHAIN) {
            return Err(ConfigError::new(format!(
                "[chains.{DEFAULT_CHAIN}]: `{DEFAULT_CHAIN}` is the top-level chain's name"
            )));
        }
        if self.chains.len() + 1 > MAX_CHAINS {
            return Err(ConfigError::new(format!(
                "at most {} named chains",
                MAX_CHAINS - 1
            )));
        }
        let total: usize =
            self.proxies.len() + self.chains.values().map(|c| c.proxies.len()).sum::<usize>();
        if total > MAX_PROXIES {
            return Err(ConfigError::new(format!(
                "at most {MAX_PROXIES} proxies in all chains"
            )));
        }
        for (name, c) in &self.chains {
            if c.proxies.is_empty() {
                return Err(ConfigError::new(format!("[chains.{name}] has no proxy")));
            }
            if c.chain_len == Some(0) {
                return Err(ConfigError::new(format!(
                    "[chains.{name}]: chain_len must be at least 1"
                )));
            }
        }
        if self.chain_len == Some(0) {
            return Err(ConfigError::new("chain_len must be at least 1"));
        }
        if let Some(u) = &self.udp_proxy
            && !u.kind.is_socks5()
        {
            return Err(ConfigError::new(format!(
                "udp_proxy = {u}: only a SOCKS5 proxy carries UDP (UDP ASSOCIATE)"
            )));
        }
        for r in &self.rules {
            match (&r.action, &r.chain) {
                (Some(_), Some(c)) => {
                    return Err(ConfigError::at(
                        "a rule takes `action` or `chain`, not both",
                        c.span().start,
                    ));
                }
                (None, None) => {
                    return Err(ConfigError::new(format!(
                        "rule for `{}` needs `action = \"direct\"|\"block\"|\"proxy\"` or `chain = \"NAME\"`",
                        r.dest
                    )));
                }
                (None, Some(c)) => {
                    let n = c.get_ref();
                    if n != DEFAULT_CHAIN && !self.chains.contains_key(n) {
                        let known: Vec<&str> = std::iter::once(DEFAULT_CHAIN)
                            .chain(self.chains.keys().map(String::as_str))
                            .collect();
                        return Err(ConfigError::at(
                            format!("unknown chain `{n}` (defined: {})", known.join(", ")),
                            c.span().start,
                        ));
                    }
                }
                (Some(_), None) => {}
            }
        }
        if self.connect_timeout_ms == 0 || self.handshake_timeout_ms == 0 {
            return Err(ConfigError::new("timeouts must be at least 1 ms"));
        }
        self.fake_ranges()?;
        Ok(())
    }

    /// The fake address ranges, validated: IPv4 / IPv6 as named, not multicast, not loopback,
    /// at least 254 addresses.
    pub fn fake_ranges(&self) -> Result<FakeRanges, ConfigError> {
        let check = |key: &str, text: &str, v4: bool| -> Result<Net, ConfigError> {
            let bad = |m: String| ConfigError::new(format!("{key}: {m}"));
            let net = Net::parse(text).map_err(bad)?;
            if net.addr.is_ipv4() != v4 {
                return Err(bad(format!(
                    "`{text}` is not an IPv{} range",
                    if v4 { 4 } else { 6 }
                )));
            }
            if net.addr.is_multicast() || net.addr.is_loopback() || net.addr.is_unspecified() {
                return Err(bad(format!(
                    "`{text}` is a multicast, loopback or unspecified range (breaks dig, Go, ssh…)"
                )));
            }
            if net.hosts() < 254 {
                return Err(bad(format!(
                    "`{text}` is too small (need at least a /24 or /120)"
                )));
            }
            Ok(net)
        };
        Ok(FakeRanges {
            v4: check("fake_ip_range", &self.fake_ip_range, true)?,
            v6: check("fake_ip6_range", &self.fake_ip6_range, false)?,
        })
    }

    /// Every chain: index 0 is the top-level (default) chain, then the named ones by name.
    pub fn chain_views(&self) -> Vec<ChainView<'_>> {
        self.views().collect()
    }

    /// The chains as the router sees them, without allocating: the default chain (index 0),
    /// then the named chains in order.
    pub fn views(&self) -> impl Iterator<Item = ChainView<'_>> + '_ {
        let default = ChainView {
            name: DEFAULT_CHAIN,
            mode: self.chain,
            len: self.chain_len.unwrap_or(1),
            proxies: &self.proxies,
            index: 0,
            first_proxy: 0,
        };
        let mut first = self.proxies.len();
        std::iter::once(default).chain(self.chains.iter().enumerate().map(move |(i, (name, c))| {
            let v = ChainView {
                name,
                mode: c.chain,
                len: c.chain_len.unwrap_or(1),
                proxies: &c.proxies,
                index: i + 1,
                first_proxy: first,
            };
            first += c.proxies.len();
            v
        }))
    }

    /// The normalized TOML that the launcher hands to the processes it starts.
    pub fn to_toml(&self) -> String {
        toml::to_string(self).unwrap_or_default()
    }

    /// Records every address of every proxy host name, as `resolve(host, port)` gives them in
    /// order (once, at load, so no process of the tree ever resolves a proxy name again). The
    /// name stays in `host` (for logs); the addresses go to `addresses`.
    pub fn resolve_proxies(
        &mut self,
        mut resolve: impl FnMut(&str, u16) -> Result<Vec<IpAddr>, String>,
    ) -> Result<(), ConfigError> {
        let named = self.chains.values_mut().flat_map(|c| c.proxies.iter_mut());
        for p in self
            .proxies
            .iter_mut()
            .chain(named)
            .chain(self.udp_proxy.iter_mut())
        {
            if p.host.parse::<IpAddr>().is_err() && p.addrs.is_empty() {
                let mut ips = resolve(&p.host, p.port).map_err(|e| {
                    ConfigError::new(format!("cannot resolve proxy host `{}`: {e}", p.host))
                })?;
                let mut seen = Vec::with_capacity(ips.len());
                ips.retain(|ip| {
                    let new = !seen.contains(ip);
                    seen.push(*ip);
                    new
                });
                if ips.is_empty() {
                    return Err(ConfigError::new(format!(
                        "cannot resolve proxy host `{}`: no address",
                        p.host
                    )));
                }
                p.addrs = ips;
            }
        }
        Ok(())
    }
}

/// Where a config is looked for when none is given: `$CHAINSOCKS_CONFIG`, `./chainsocks.toml`,
/// `$XDG_CONFIG_HOME/chainsocks/config.toml` (or `~/.config/…`), `/etc/chainsocks.toml`.
/// `env` reads an environment variable; `exists` tells whether a file exists.
pub fn find_config(
    env: impl Fn(&str) -> Option<String>,
    exists: impl Fn(&Path) -> bool,
) -> Option<PathBuf> {
    if let Some(p) = env("CHAINSOCKS_CONFIG").filter(|s| !s.is_empty()) {
        return Some(PathBuf::from(p));
    }
    let mut candidates = vec![PathBuf::from("chainsocks.toml")];
    match env("XDG_CONFIG_HOME").filter(|s| !s.is_empty()) {
        Some(x) => candidates.push(Path::new(&x).join("chainsocks/config.toml")),
        None => {
            if let Some(h) = env("HOME").filter(|s| !s.is_empty()) {
                candidates.push(Path::new(&h).join(".config/chainsocks/config.toml"));
            }
        }
    }
    candidates.push(PathBuf::from("/etc/chainsocks.toml"));
    candidates.into_iter().find(|p| exists(p))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        let p = Proxy::from_url("socks5://127.0.0.1:1080").unwrap();
        assert_eq!(
            (p.kind, p.host.as_str(), p.port),
            (ProxyKind::Socks5, "127.0.0.1", 1080)
        );
        let p = Proxy::from_url("socks5h://us%40er:p%3Ass@proxy.example:9050/?pipeline=1").unwrap();
        assert_eq!(p.kind, ProxyKind::Socks5h);
        assert_eq!(p.username.as_deref(), Some("us@er"));
        assert_eq!(p.password.as_deref(), Some("p:ss"));
        assert_eq!(p.host, "proxy.example");
        assert!(p.pipeline);
        let p = Proxy::from_url("http://[::1]:3128").unwrap();
        assert_eq!((p.host.as_str(), p.port), ("::1", 3128));
        assert_eq!(p.to_string(), "http://[::1]:3128");
        assert_eq!(Proxy::from_url("socks4a://h").unwrap().port, 1080);
        assert_eq!(Proxy::from_url("http://h").unwrap().port, 8080);
        let e = Proxy::from_url("sock5://h:1").unwrap_err();
        assert!(
            e.contains("unknown scheme `sock5`") && e.contains("socks5h"),
            "{e}"
        );
        let e = Proxy::from_url("socks5://u:secret@h:0").unwrap_err();
        assert!(!e.contains("secret"), "{e}");
        assert!(Proxy::from_url("socks5://h:99999").is_err());
        assert!(Proxy::from_url("socks5://h:1?bogus=1").is_err());
        // Found by fuzzing: a host with a colon (or other URL syntax) must not slip through.
        for bad in [
            "socks5://:0:8",
            "socks5://a/b:1",
            "socks5://a[b:1",
            "socks5://a b:1",
        ] {
            assert!(Proxy::from_url(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn file_forms() {
        let c = Config::from_toml(
            r#"
connect_timeout_ms = 500
proxy = ["socks5://127.0.0.1:1080"]
"#,
        )
        .unwrap();
        assert_eq!(c.connect_timeout_ms, 500);
        assert_eq!(c.handshake_timeout_ms, DEFAULT_HANDSHAKE_TIMEOUT_MS);
        let c = Config::from_toml(
            r#"
[[proxy]]
type = "socks5"
host = "127.0.0.1"
port = 1080
username = "u"
password = "p"
pipeline = true

[[proxy]]
url = "http://127.0.0.1:3128"
connect_timeout_ms = 100
"#,
        )
        .unwrap();
        assert_eq!(c.proxies.len(), 2);
        assert_eq!(c.proxies[0].credentials(), Some(("u", "p")));
        assert!(c.proxies[0].pipeline);
        assert_eq!(c.proxies[1].connect_timeout_ms, Some(100));
        // The normalized form reads back to the same config.
        assert_eq!(Config::from_toml(&c.to_toml()).unwrap(), c);
    }

    #[test]
    fn errors_name_line_and_column() {
        let e =
            Config::from_toml("quiet = true\nbogus = 1\nproxy = [\"socks5://h:1\"]\n").unwrap_err();
        assert_eq!((e.line, e.col), (2, 1), "{e}");
        assert!(e.msg.contains("bogus"), "{e}");
        let e = Config::from_toml("proxy = [\n  \"socks9://h:1\",\n]\n").unwrap_err();
        assert_eq!(e.line, 2, "{e}");
        assert!(e.msg.contains("unknown scheme"), "{e}");
        let e = Config::from_toml("[[proxy]]\ntype = \"socks5\"\nhost = \"h\"\nprot = 1\n")
            .unwrap_err();
        assert_eq!(e.line, 4, "{e}");
        let e = Config::from_toml("quiet = true\n").unwrap_err();
        assert!(e.msg.contains("no proxy"), "{e}");
        let e = Config::from_toml("[[proxy]]\ntype = \"socks5\"\nhost = \"h\"\nusername = \"\"\n")
            .unwrap_err();
        assert!(e.msg.contains("1 to 255"), "{e}");
    }

    #[test]
    fn debug_never_shows_the_password() {
        let p = Proxy::from_url("socks5://u:hunter2@h:1").unwrap();
        assert!(!format!("{p:?}").contains("hunter2"));
        assert!(!format!("{p}").contains("hunter2"));
    }

    #[test]
    fn errors_never_show_a_secret() {
        let table = |v: &str| {
            format!(
                "[[proxy]]\ntype = \"socks5\"\nhost = \"h\"\nusername = \"u\"\npassword = {v}\n"
            )
        };
        // (document, what must not appear, where the error is, what the message still says)
        let cases: Vec<(String, &str, (usize, usize), &str)> = vec![
            (table("98765432"), "98765432", (5, 12), "invalid type: integer `***`, expected a string"),
            (table("1e5"), "100000", (5, 12), "floating point `***`"),
            (table("0x1f2e3d"), "2043453", (5, 12), "integer `***`"),
            (table("true"), "true", (5, 12), "boolean `***`"),
            (table("1979-05-27"), "1979", (5, 12), "expected a string"),
            (
                "proxy = [{type=\"socks5\", host=\"h\", username=\"u\", password = 98765432}]".into(),
                "98765432",
                (1, 61),
                "integer `***`",
            ),
            (
                "[[proxy]]\ntype = \"socks5\"\nhost = \"h\"\nusername = \"u\"\n\"password\" = 98765432\n".into(),
                "98765432",
                (5, 14),
                "integer `***`",
            ),
            (
                "[proxy.x]\nproxy.password = 98765432\n".into(),
                "98765432",
                (0, 0),
                "",
            ),
            (
                "proxy = \"socks5://u:abc 123@h:1\"".into(),
                "abc 123",
                (1, 9),
                "invalid type: string \"***\", expected a sequence",
            ),
            (
                "proxy = \"socks5://u:a\\\"b`c@h:1\"".into(),
                "a\\\"b`c",
                (1, 9),
                "expected a sequence",
            ),
            (
                "proxy = [\"socks5://u:hunter2@h:1\"]\nfake_ip_range = \"socks5://u:hunter2@h:1\"".into(),
                "hunter2",
                (0, 0),
                "fake_ip_range: `socks5://u:***@h:1`",
            ),
            (
                "proxy = [\"socks5://u:hunter2@h:1\"]\n[[rule]]\ndest = \"socks5://u:hunter2@h:1\"\naction = \"block\"".into(),
                "hunter2",
                (3, 8),
                "bad destination `***`",
            ),
            (
                "proxy = [\"socks5://u:hunter2@h:1\"]\n[[rule]]\ndest = \"*.x\"\nchain = \"socks5://u:hunter2@h:1\"".into(),
                "hunter2",
                (4, 9),
                "unknown chain `***`",
            ),
            (
                "proxy = [{type = \"socks5\", host = \"socks5://u:hunter2@h:1\"}]".into(),
                "hunter2",
                (1, 10),
                "bad host `***`",
            ),
        ];
        for (doc, secret, (line, col), says) in cases {
            let e = Config::from_toml(&doc).unwrap_err();
            let shown = e.to_string();
            assert!(!shown.contains(secret), "{doc}\n-> {shown}");
            if line > 0 {
                assert_eq!((e.line, e.col), (line, col), "{doc}\n-> {shown}");
            }
            assert!(shown.contains(says), "{doc}\n-> {shown}");
        }
        // Not a password: the value stays in the message.
        let e = Config::from_toml("proxy = [\"socks5://h:1\"]\nlog_file = 98765432").unwrap_err();
        assert!(e.to_string().contains("98765432"), "{e}");
        let e =
            Config::from_toml("[[proxy]]\ntype = \"socks5\"\nhost = \"h\"\nusername = 98765432\n")
                .unwrap_err();
        assert!(e.to_string().contains("98765432"), "{e}");
    }

    #[test]
    fn url_passwords_are_found_as_from_url_reads_them() {
        fn span(u: &str) -> Option<&str> {
            url_password_span(u.as_bytes()).map(|r| &u[r])
        }
        assert_eq!(span("socks5://u:p@h:1"), Some("p"));
        assert_eq!(span("socks5://u:p:q@x@h:1?pipeline=1"), Some("p:q@x"));
        assert_eq!(span("--proxy=http://u:#50%off@h"), Some("#50%off"));
        assert_eq!(span("socks5://u@h:1"), None);
        assert_eq!(span("socks5://u:@h:1"), None);
        assert_eq!(span("socks5://h:1?x=a:b@c"), None);
        assert_eq!(span("no url"), None);
        assert_eq!(
            redact_url("socks5h://u:s3cr3t@h:1/?pipeline=1"),
            "socks5h://u:***@h:1/?pipeline=1"
        );
        assert_eq!(
            redact_urls("a `socks5://u:p1@h:1` b \"http://x:p\\\"2@h\" c 'raw://y:p3@h' d"),
            "a `socks5://u:***@h:1` b \"http://x:***@h\" c 'raw://y:***@h' d"
        );
        assert_eq!(redact_urls("nothing :// here"), "nothing :// here");
        // Every redaction of a from_url-accepted URL hides exactly what from_url reads.
        for u in [
            "socks5://us%40er:p%3Ass@h:1",
            "http://u:a b@c@h:8080/",
            "socks5://u:x?@h:1",
        ] {
            if let Ok(p) = Proxy::from_url(u) {
                let raw = span(u).unwrap();
                assert_eq!(percent_decode(raw).as_deref(), p.password.as_deref(), "{u}");
            }
        }
    }

    #[test]
    fn resolve_keeps_every_address() {
        let mut c =
            Config::from_toml("proxy = [\"socks5://localhost:1\", \"http://10.0.0.1:2\"]").unwrap();
        let mut asked = vec![];
        c.resolve_proxies(|h, _| {
            asked.push(h.to_string());
            Ok(vec![
                "::1".parse().unwrap(),
                "127.0.0.1".parse().unwrap(),
                "::1".parse().unwrap(),
            ])
        })
        .unwrap();
        assert_eq!(asked, ["localhost"]);
        assert_eq!(c.proxies[0].socket_addr(), Some("[::1]:1".parse().unwrap()));
        let all: Vec<SocketAddr> = c.proxies[0].socket_addrs().collect();
        assert_eq!(
            all,
            ["[::1]:1".parse().unwrap(), "127.0.0.1:1".parse().unwrap()]
        );
        assert_eq!(c.proxies[0].to_string(), "socks5://localhost:1");
        let again = Config::from_toml(&c.to_toml()).unwrap();
        assert_eq!(again, c, "the addresses survive the normalized form");
        let lit: Vec<SocketAddr> = c.proxies[1].socket_addrs().collect();
        assert_eq!(lit, ["10.0.0.1:2".parse().unwrap()]);
    }

    #[test]
    fn search_order() {
        let env = |k: &str| match k {
            "HOME" => Some("/home/u".to_string()),
            _ => None,
        };
        let found = find_config(env, |p| {
            p == Path::new("/home/u/.config/chainsocks/config.toml")
        });
        assert_eq!(
            found,
            Some(PathBuf::from("/home/u/.config/chainsocks/config.toml"))
        );
        let found = find_config(
            |k| (k == "CHAINSOCKS_CONFIG").then(|| "/x.toml".into()),
            |_| false,
        );
        assert_eq!(found, Some(PathBuf::from("/x.toml")));
        assert_eq!(find_config(|_| None, |_| false), None);
    }
}

#[cfg(test)]
mod shipped_files {
    use super::*;

    /// The commented example config and every example parse as they ship.
    #[test]
    fn conf_and_examples_parse() {
        let top = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
        let mut files = vec![top.join("conf/chainsocks.toml")];
        for e in std::fs::read_dir(top.join("examples")).unwrap() {
            let p = e.unwrap().path();
            if p.extension().is_some_and(|x| x == "toml") {
                files.push(p);
            }
        }
        assert!(files.len() >= 3);
        for f in files {
            Config::from_file(&f).unwrap_or_else(|e| panic!("{e}"));
        }
    }

    /// The commented `allow` example of the shipped config parses once uncommented.
    #[test]
    fn conf_allow_example_parses() {
        let top = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
        let text = std::fs::read_to_string(top.join("conf/chainsocks.toml")).unwrap();
        let mut lines = text.lines().skip_while(|l| !l.starts_with("# allow = ["));
        let mut block = String::from("proxy = [\"socks5://127.0.0.1:1\"]\n");
        for l in lines.by_ref() {
            block.push_str(l.strip_prefix("# ").unwrap());
            block.push('\n');
            if l == "# ]" {
                break;
            }
        }
        let c = Config::from_toml(&block).unwrap_or_else(|e| panic!("{e}\n{block}"));
        let allow = c.allow.unwrap();
        assert_eq!(allow.len(), 5);
        assert!(allow[4].direct && !allow[0].direct);
    }
}
