//! proxychains-ng's `proxychains.conf` format (4.16 / 4.17), read into a [`Config`], so a
//! proxychains user can point chainsocks at the file they already have.
//!
//! Owns: the line format, its mapping onto [`Config`], and the warnings for what chainsocks
//! does differently; the TOML a converted file becomes ([`to_toml`]).
//! Must never: accept silently what it does not understand (proxychains ignores unknown lines;
//! chainsocks rejects them with their line and column), print a password in an error or a
//! warning, or do any I/O.
//!
//! The mapping:
//!
//! | proxychains | chainsocks |
//! |---|---|
//! | `strict_chain`, `dynamic_chain`, `random_chain`, `round_robin_chain` (the last wins) | `chain`; none given: `dynamic`, proxychains' code default (its sample file says `strict_chain`) |
//! | `chain_len = N` (also `chain_len=N`, `chain_len N`) | `chain_len` (proxychains reads 0 as 1; so do we, with a warning) |
//! | `quiet_mode` | `quiet = true` |
//! | `proxy_dns` | `proxy_dns = true`; without it `false`, as in proxychains |
//! | `proxy_dns_old`, `proxy_dns_daemon IP:PORT` | `proxy_dns = true`, with a warning |
//! | `remote_dns_subnet N` | `fake_ip_range = "N.0.0.0/8"`, except 0, 127 and 224–239 (kept at the default, with a warning) |
//! | `tcp_connect_time_out MS` | `connect_timeout_ms` |
//! | `tcp_read_time_out MS` | `handshake_timeout_ms` (proxychains' is per read; ours covers the whole chain) |
//! | `localnet ADDR[:PORT]/MASK` | `localnet` patterns (`10.0.0.0/8`, `10.0.0.0/8:80`, `[::1]/128:22`) |
//! | `dnat SRC DST` | `dnat` entries, those naming a source port first (proxychains tries them first) |
//! | `[ProxyList]` then `TYPE HOST PORT [USER [PASS]]` or `TYPE://[USER:PASS@]HOST:PORT` | `proxy` entries |
//!
//! Proxy types: `socks4` becomes [`ProxyKind::Socks4a`] (proxychains sends a name as SOCKS4a,
//! `0.0.0.1` plus the name, whenever the target is a name), `socks5` becomes
//! [`ProxyKind::Socks5h`] (the proxy resolves names), `http` and `raw` stay. Types are
//! case-insensitive. The URL form also takes chainsocks' own schemes (`socks4a`, `socks5h`,
//! `raw`) and options (`?pipeline=1`). Proxy host names are kept as written: the launcher
//! resolves them once (proxychains allows names only in a few cases).
//!
//! The text: before `[ProxyList]`, `#` starts a comment at the start of a line or of a word
//! (`chain_len = 2 # two`). In the proxy list, as in proxychains-ng, only at the start of a
//! line: the user name and password of `TYPE HOST PORT USER PASS` are the fourth and fifth
//! words whatever they start with (`#secret` is a password), and a `#` word after a proxy's
//! last field begins a comment (proxychains ignores the rest of such a line); URL credentials
//! are taken literally, as proxychains copies them (`50%off` is a password, not an escape).
//! Blank lines and surrounding whitespace are ignored; `[ProxyList]` is case-insensitive;
//! options must come before it.

use std::fmt::Write as _;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use crate::config::{ChainMode, Config, ConfigError, DEFAULT_FAKE_V4, Proxy, ProxyKind};
use crate::fakedns::{Net, normalize};
use crate::rules::{AddrPort, Dnat, Pattern};

/// A parsed proxychains file.
#[derive(Debug, Clone, PartialEq)]
pub struct Parsed {
    pub config: Config,
    /// What chainsocks does differently from proxychains for this file, each starting with
    /// `line N:`, in line order.
    pub warnings: Vec<String>,
}

/// The proxy types of a `TYPE HOST PORT` line.
pub const PROXY_TYPES: &str = "socks4, socks5, http, raw";

/// Directives that stand alone on their line.
const BARE: [&str; 7] = [
    "strict_chain",
    "dynamic_chain",
    "random_chain",
    "round_robin_chain",
    "quiet_mode",
    "proxy_dns",
    "proxy_dns_old",
];

/// Every directive, for the "options go before [ProxyList]" error.
const DIRECTIVES: [&str; 8] = [
    "chain_len",
    "proxy_dns_daemon",
    "remote_dns_subnet",
    "tcp_read_time_out",
    "tcp_connect_time_out",
    "localnet",
    "dnat",
    "[ProxyList]",
];

const HEADER: &str = "[ProxyList]";

/// Whether `text` is a proxychains file rather than chainsocks TOML: it has a `[ProxyList]`
/// line (any case) or a directive that stands alone on its line (`strict_chain`,
/// `dynamic_chain`, `random_chain`, `round_robin_chain`, `quiet_mode`, `proxy_dns`,
/// `proxy_dns_old`), neither of which is valid chainsocks TOML.
pub fn looks_like_proxychains(text: &str) -> bool {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    text.lines()
        .any(|line| match tokens(line, true).as_slice() {
            [only] => only.text.eq_ignore_ascii_case(HEADER) || BARE.contains(&only.text),
            _ => false,
        })
}

/// Parses a proxychains file. Errors carry the 1-based line and the column of the offending
/// word; a file without any proxy gets [`Config::validate`]'s error, without a position.
pub fn parse(text: &str) -> Result<Parsed, ConfigError> {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let mut p = Parser {
        config: Config {
            chain: ChainMode::Dynamic,
            proxy_dns: false,
            ..Config::default()
        },
        warnings: Vec::new(),
        in_list: false,
        chain_len_line: None,
        subnet: None,
    };
    for (i, raw) in text.split('\n').enumerate() {
        let line = raw.strip_suffix('\r').unwrap_or(raw);
        p.line(i + 1, line).map_err(|e| e.redacted(None))?;
    }
    p.finish().map_err(|e| e.redacted(None))
}

/// The chainsocks TOML equivalent of a parsed file (what `chainsocks config convert FILE`
/// prints): a header naming `source_name`, the warnings as comments, then
/// [`Config::to_toml`]. It reads back with [`Config::from_toml`] to `parsed.config`.
pub fn to_toml(parsed: &Parsed, source_name: &str) -> String {
    let name: String = source_name
        .chars()
        .map(|c| if c.is_control() { '?' } else { c })
        .collect();
    let mut out = String::new();
    let _ = writeln!(
        out,
        "# chainsocks configuration converted from the proxychains file {name}"
    );
    let _ = writeln!(out, "# (by `chainsocks config convert`).");
    if !parsed.warnings.is_empty() {
        let _ = writeln!(out, "#");
        let _ = writeln!(out, "# Conversion warnings:");
        for w in &parsed.warnings {
            for (i, l) in w.lines().enumerate() {
                let _ = writeln!(out, "#{}{l}", if i == 0 { " - " } else { "   " });
            }
        }
    }
    out.push('\n');
    out.push_str(&parsed.config.to_toml());
    out
}

/// One word of a line and its 1-based column (in characters).
#[derive(Debug, Clone, Copy)]
struct Tok<'a> {
    text: &'a str,
    col: usize,
}

impl Tok<'_> {
    /// The column just after this word.
    fn end(&self) -> usize {
        self.col + self.text.chars().count()
    }
}

/// The words of `line`, up to a comment. In the options (`options`), a `#` starting any word
/// starts a comment, and `=` also separates words and is a word of its own (`chain_len=2`).
/// In the proxy list, as in proxychains-ng, only a `#` starting the line does: `#` in a user
/// name or password is part of it (the caller decides about words after the fifth).
fn tokens(line: &str, options: bool) -> Vec<Tok<'_>> {
    let split_eq = options;
    let mut out = Vec::new();
    // (byte offset, column) of the word being read.
    let mut start: Option<(usize, usize)> = None;
    for (n, (i, c)) in line.char_indices().enumerate() {
        let col = n + 1;
        if c.is_whitespace() || (split_eq && c == '=') {
            if let Some((b, wcol)) = start.take()
                && let Some(text) = line.get(b..i)
            {
                out.push(Tok { text, col: wcol });
            }
            if c == '=' {
                out.push(Tok { text: "=", col });
            }
        } else if start.is_none() {
            if c == '#' && (options || out.is_empty()) {
                return out;
            }
            start = Some((i, col));
        }
    }
    if let Some((b, col)) = start
        && let Some(text) = line.get(b..)
    {
        out.push(Tok { text, col });
    }
    out
}

fn err(line: usize, col: usize, msg: impl Into<String>) -> ConfigError {
    ConfigError {
        line,
        col,
        ..ConfigError::new(msg)
    }
}

struct Parser {
    config: Config,
    /// (line, message)
    warnings: Vec<(usize, String)>,
    in_list: bool,
    /// Where `chain_len` was last set.
    chain_len_line: Option<usize>,
    /// The last `remote_dns_subnet`: (line, value).
    subnet: Option<(usize, u8)>,
}

impl Parser {
    fn warn(&mut self, line: usize, msg: impl Into<String>) {
        self.warnings.push((line, msg.into()));
    }

    fn line(&mut self, n: usize, line: &str) -> Result<(), ConfigError> {
        let toks = tokens(line, !self.in_list);
        let Some((first, args)) = toks.split_first() else {
            return Ok(());
        };
        if args.is_empty() && first.text.eq_ignore_ascii_case(HEADER) {
            if self.in_list {
                return Err(err(n, first.col, "a second `[ProxyList]` line"));
            }
            self.in_list = true;
            return Ok(());
        }
        if self.in_list {
            let proxy = self.proxy(n, &toks)?;
            self.config.proxies.push(proxy);
            Ok(())
        } else {
            self.directive(n, first, args)
        }
    }

    fn directive(&mut self, n: usize, key: &Tok, args: &[Tok]) -> Result<(), ConfigError> {
        let mode = match key.text {
            "strict_chain" => Some(ChainMode::Strict),
            "dynamic_chain" => Some(ChainMode::Dynamic),
            "random_chain" => Some(ChainMode::Random),
            "round_robin_chain" => Some(ChainMode::RoundRobin),
            _ => None,
        };
        if let Some(mode) = mode {
            no_args(n, key, args)?;
            self.config.chain = mode;
            return Ok(());
        }
        match key.text {
            "quiet_mode" => {
                no_args(n, key, args)?;
                self.config.quiet = true;
            }
            "proxy_dns" => {
                no_args(n, key, args)?;
                self.config.proxy_dns = true;
            }
            "proxy_dns_old" => {
                no_args(n, key, args)?;
                self.config.proxy_dns = true;
                self.warn(n, dns_method_warning("proxy_dns_old"));
            }
            "proxy_dns_daemon" => {
                let v = value(n, key, args, "IP:PORT")?;
                if v.text.parse::<SocketAddr>().is_err() {
                    return Err(err(
                        n,
                        v.col,
                        format!("proxy_dns_daemon: expected IP:PORT, found `{}`", v.text),
                    ));
                }
                self.config.proxy_dns = true;
                self.warn(n, dns_method_warning("proxy_dns_daemon"));
            }
            "chain_len" => {
                let v = value(n, key, args, "a number")?;
                let len: usize = v.text.parse().map_err(|_| {
                    err(
                        n,
                        v.col,
                        format!("chain_len: expected a number, found `{}`", v.text),
                    )
                })?;
                if len == 0 {
                    self.warn(n, "chain_len = 0 means 1 (as in proxychains)");
                }
                self.config.chain_len = Some(len.max(1));
                self.chain_len_line = Some(n);
            }
            "tcp_read_time_out" | "tcp_connect_time_out" => {
                let v = value(n, key, args, "milliseconds")?;
                let ms = v
                    .text
                    .parse::<u64>()
                    .ok()
                    .filter(|&ms| ms > 0)
                    .ok_or_else(|| {
                        err(
                            n,
                            v.col,
                            format!(
                                "{}: expected milliseconds (at least 1), found `{}`",
                                key.text, v.text
                            ),
                        )
                    })?;
                if key.text == "tcp_read_time_out" {
                    self.config.handshake_timeout_ms = ms;
                } else {
                    self.config.connect_timeout_ms = ms;
                }
            }
            "remote_dns_subnet" => {
                let v = value(n, key, args, "a number from 0 to 255")?;
                let net = v.text.parse::<u8>().map_err(|_| {
                    err(
                        n,
                        v.col,
                        format!(
                            "remote_dns_subnet: expected a number from 0 to 255, found `{}`",
                            v.text
                        ),
                    )
                })?;
                self.subnet = Some((n, net));
            }
            "localnet" => {
                let v = value(n, key, args, "ADDRESS[:PORT]/MASK")?;
                let text = localnet(v.text).map_err(|(off, msg)| {
                    err(n, v.col + off, format!("localnet `{}`: {msg}", v.text))
                })?;
                let pat = Pattern::parse(&text).map_err(|e| err(n, v.col, e))?;
                self.config.localnet.push(pat);
            }
            "dnat" => {
                let usage =
                    "dnat: expected `dnat SOURCE DESTINATION`, each an IP with an optional :PORT";
                let [from, to] = args else {
                    return Err(match args.get(2) {
                        Some(extra) => err(
                            n,
                            extra.col,
                            format!("{usage}; unexpected `{}`", extra.text),
                        ),
                        None => err(n, args.last().unwrap_or(key).end(), usage),
                    });
                };
                let addr = |t: &Tok| {
                    AddrPort::parse(t.text).map_err(|e| err(n, t.col, format!("dnat: {e}")))
                };
                let dnat = Dnat {
                    from: addr(from)?,
                    to: addr(to)?,
                };
                self.config.dnat.push(dnat);
            }
            other => {
                let hint = if ProxyKind::from_scheme(other).is_some() || other.contains("://") {
                    " (proxies go after a `[ProxyList]` line)"
                } else {
                    ""
                };
                return Err(err(
                    n,
                    key.col,
                    format!("unknown directive `{other}`{hint}"),
                ));
            }
        }
        Ok(())
    }

    /// One line of the `[ProxyList]` section.
    fn proxy(&mut self, n: usize, toks: &[Tok]) -> Result<Proxy, ConfigError> {
        let usage =
            "a proxy line is `TYPE HOST PORT [USER [PASS]]` or a URL such as `socks5://host:port`";
        let Some(first) = toks.first() else {
            return Err(err(n, 1, usage));
        };
        // After a proxy, proxychains ignores the rest of the line (sscanf reads five words; a
        // URL's port is read with atoi): a comment there is ignored here too, anything else is
        // an error.
        let trailing = |at: usize, what: &str| match toks.get(at) {
            Some(extra) if !extra.text.starts_with('#') => Err(err(n, extra.col, what)),
            _ => Ok(()),
        };
        if first.text.contains("://") {
            trailing(1, &format!("unexpected text after the proxy URL; {usage}"))?;
            // As proxychains-ng: user name and password exactly as written (no %-decoding).
            let mut p = Proxy::from_url_literal(first.text).map_err(|e| err(n, first.col, e))?;
            p.kind = match p.kind {
                ProxyKind::Socks4 => ProxyKind::Socks4a,
                ProxyKind::Socks5 => ProxyKind::Socks5h,
                k => k,
            };
            self.credential_warnings(n, &p);
            return Ok(p);
        }
        let kind = match first.text.to_ascii_lowercase().as_str() {
            "socks4" => ProxyKind::Socks4a,
            "socks5" => ProxyKind::Socks5h,
            "http" => ProxyKind::Http,
            "raw" => ProxyKind::Raw,
            _ if toks.len() == 1
                && (BARE.contains(&first.text) || DIRECTIVES.contains(&first.text)) =>
            {
                return Err(err(
                    n,
                    first.col,
                    format!("`{}` must come before the `[ProxyList]` line", first.text),
                ));
            }
            _ if toks.len() > 1 && DIRECTIVES.contains(&first.text) => {
                return Err(err(
                    n,
                    first.col,
                    format!("`{}` must come before the `[ProxyList]` line", first.text),
                ));
            }
            _ => {
                return Err(err(
                    n,
                    first.col,
                    format!(
                        "unknown proxy type `{}` (accepted: {PROXY_TYPES})",
                        first.text
                    ),
                ));
            }
        };
        let (Some(host), Some(port)) = (toks.get(1), toks.get(2)) else {
            let what = if toks.len() == 1 {
                "HOST and PORT"
            } else {
                "PORT"
            };
            return Err(err(
                n,
                toks.last().unwrap_or(first).end(),
                format!("missing {what}; {usage}"),
            ));
        };
        trailing(5, &format!("too many fields; {usage}"))?;
        let host_name = match host
            .text
            .strip_prefix('[')
            .and_then(|h| h.strip_suffix(']'))
        {
            Some(v6) if v6.parse::<Ipv6Addr>().is_ok() => v6,
            _ => host.text,
        };
        let is_ip = host_name.parse::<IpAddr>().is_ok();
        if !is_ip && (host_name.contains(':') || normalize(host_name).is_none()) {
            return Err(err(
                n,
                host.col,
                format!(
                    "bad proxy host `{}`: expected an IP address or a host name",
                    host.text
                ),
            ));
        }
        let port_n = port
            .text
            .parse::<u16>()
            .ok()
            .filter(|&p| p > 0)
            .ok_or_else(|| {
                err(
                    n,
                    port.col,
                    format!("bad port `{}` (1 to 65535)", port.text),
                )
            })?;
        // Taken as written, `#` included (proxychains-ng reads them with sscanf's %s).
        let user = toks.get(3);
        let pass = toks.get(4);
        if user.is_some_and(|u| u.text.starts_with('#')) {
            self.warn(
                n,
                "the word after the port starts with `#` and is read as the user name (and the \
                 next word as the password), as proxychains-ng reads it: a `#` starts a comment \
                 only at the start of a line",
            );
        }
        for t in [user, pass].into_iter().flatten() {
            if t.text.contains('\0') {
                return Err(err(
                    n,
                    t.col,
                    "a NUL character in the user name or password",
                ));
            }
            if kind == ProxyKind::Socks5h && t.text.len() > 255 {
                return Err(err(
                    n,
                    t.col,
                    "SOCKS5 user names and passwords are at most 255 bytes",
                ));
            }
        }
        let p = Proxy {
            kind,
            literal: crate::config::literal_host(host_name),
            host: host_name.to_string(),
            port: port_n,
            username: user.map(|t| t.text.to_string()),
            password: pass.map(|t| t.text.to_string()),
            pipeline: false,
            connect_timeout_ms: None,
            addrs: Vec::new(),
        };
        // The same rules as every other way of writing a proxy (so a converted file reads back).
        p.validate().map_err(|m| err(n, host.col, m))?;
        self.credential_warnings(n, &p);
        Ok(p)
    }

    fn credential_warnings(&mut self, n: usize, p: &Proxy) {
        match p.kind {
            ProxyKind::Socks4 | ProxyKind::Socks4a if p.password.is_some() => {
                self.warn(
                    n,
                    "a socks4 proxy sends only a user id: its password is not used",
                );
            }
            ProxyKind::Raw if p.username.is_some() => {
                self.warn(
                    n,
                    "a raw proxy does no handshake: its user name and password are not used",
                );
            }
            _ => {}
        }
    }

    fn finish(mut self) -> Result<Parsed, ConfigError> {
        if let Some((n, net)) = self.subnet {
            let why = match net {
                0 => Some("the unspecified (`this network`) range, which programs refuse"),
                127 => Some("the loopback range: programs treat those addresses as local"),
                224..=239 => Some(
                    "a multicast range (proxychains' default is 224): multicast fake IPs break dig, Go, nmap and OpenSSH's CheckHostIP",
                ),
                _ => None,
            };
            match why {
                Some(why) => self.warn(
                    n,
                    format!(
                        "remote_dns_subnet {net}: {net}.0.0.0/8 is {why}; chainsocks keeps its default fake range {DEFAULT_FAKE_V4}"
                    ),
                ),
                None => self.config.fake_ip_range = format!("{net}.0.0.0/8"),
            }
        }
        if let Some(n) = self.chain_len_line
            && matches!(self.config.chain, ChainMode::Strict | ChainMode::Dynamic)
        {
            self.warn(
                n,
                format!(
                    "chain_len has no effect on a {} chain (only random_chain and round_robin_chain use it)",
                    self.config.chain.name()
                ),
            );
        }
        // proxychains tries the entries that name a source port first, then the others; the
        // router takes the first match, so put them first (a stable sort keeps the file order).
        self.config.dnat.sort_by_key(|d| d.from.port.is_none());
        self.config.validate()?;
        self.warnings.sort_by_key(|(n, _)| *n);
        Ok(Parsed {
            config: self.config,
            warnings: self
                .warnings
                .into_iter()
                .map(|(n, w)| format!("line {n}: {w}"))
                .collect(),
        })
    }
}

fn dns_method_warning(name: &str) -> String {
    format!(
        "{name} is accepted and treated as proxy_dns: chainsocks resolves through its own fake-DNS table"
    )
}

/// Checks that a directive stands alone.
fn no_args(n: usize, key: &Tok, args: &[Tok]) -> Result<(), ConfigError> {
    match args.first() {
        Some(t) => Err(err(
            n,
            t.col,
            format!("`{}` takes no value; unexpected `{}`", key.text, t.text),
        )),
        None => Ok(()),
    }
}

/// The one value of a directive: `KEY VALUE` or `KEY = VALUE`.
fn value<'a>(n: usize, key: &Tok, args: &[Tok<'a>], what: &str) -> Result<Tok<'a>, ConfigError> {
    let rest = match args.split_first() {
        Some((eq, rest)) if eq.text == "=" => rest,
        _ => args,
    };
    match rest {
        [v] => Ok(*v),
        [] => Err(err(
            n,
            args.last().unwrap_or(key).end(),
            format!("`{}` needs a value: {what}", key.text),
        )),
        [_, extra, ..] => Err(err(
            n,
            extra.col,
            format!(
                "`{}` takes one value; unexpected `{}`",
                key.text, extra.text
            ),
        )),
    }
}

/// A `localnet` value (`ADDR[:PORT]/MASK`, `[V6]:PORT/PREFIX`, `V6/PREFIX`) as a chainsocks
/// pattern. Errors carry the offset (in characters) of the bad part.
fn localnet(s: &str) -> Result<String, (usize, String)> {
    let (addr_port, mask) = s.split_once('/').ok_or((
        0,
        "expected ADDRESS[:PORT]/MASK (e.g. 10.0.0.0/255.0.0.0, 10.0.0.0/8, [::1]:22/128)"
            .to_string(),
    ))?;
    let mask_off = addr_port.chars().count() + 1;
    let port = |p: &str, off: usize| -> Result<Option<u16>, (usize, String)> {
        match p.parse::<u16>() {
            // proxychains reads port 0 as "any port".
            Ok(0) => Ok(None),
            Ok(p) => Ok(Some(p)),
            Err(_) => Err((off, format!("bad port `{p}`"))),
        }
    };
    let (ip, port) = if let Some(rest) = addr_port.strip_prefix('[') {
        let (inner, after) = rest
            .split_once(']')
            .ok_or((0, "missing `]` after the IPv6 address".to_string()))?;
        let ip = inner
            .parse::<Ipv6Addr>()
            .map_err(|_| (1, format!("bad IPv6 address `{inner}`")))?;
        let after_off = inner.chars().count() + 2;
        let port = match after {
            "" => None,
            a => match a.strip_prefix(':') {
                Some(p) => port(p, after_off + 1)?,
                None => return Err((after_off, "expected `:PORT` or `/` after `]`".to_string())),
            },
        };
        (IpAddr::V6(ip), port)
    } else if addr_port.matches(':').count() >= 2 {
        let ip = addr_port.parse::<Ipv6Addr>().map_err(|_| {
            (
                0,
                format!("bad IPv6 address `{addr_port}` (write [ADDRESS]:PORT to give a port)"),
            )
        })?;
        (IpAddr::V6(ip), None)
    } else {
        let (a, p) = match addr_port.split_once(':') {
            Some((a, p)) => (a, Some(p)),
            None => (addr_port, None),
        };
        let ip = a
            .parse::<Ipv4Addr>()
            .map_err(|_| (0, format!("bad IPv4 address `{a}`")))?;
        let port = match p {
            Some(p) => port(p, a.chars().count() + 1)?,
            None => None,
        };
        (IpAddr::V4(ip), port)
    };
    let bad_mask = |why: &str| (mask_off, format!("bad mask `{mask}`: {why}"));
    let prefix: u32 = match ip {
        IpAddr::V4(_) if mask.contains('.') => {
            let m = u32::from(mask.parse::<Ipv4Addr>().map_err(|_| {
                bad_mask("expected a dotted mask such as 255.255.0.0 or a prefix length")
            })?);
            if m.leading_ones() + m.trailing_zeros() != 32 {
                return Err(bad_mask("its one bits are not contiguous"));
            }
            m.leading_ones()
        }
        IpAddr::V4(_) => mask
            .parse::<u32>()
            .ok()
            .filter(|&p| p <= 32)
            .ok_or_else(|| bad_mask("expected a prefix length from 0 to 32 or a dotted mask"))?,
        IpAddr::V6(_) => mask
            .parse::<u32>()
            .ok()
            .filter(|&p| p <= 128)
            .ok_or_else(|| bad_mask("expected a prefix length from 0 to 128"))?,
    };
    let net = Net::parse(&format!("{ip}/{prefix}")).map_err(|e| (0, e))?;
    let mut text = match net.addr {
        IpAddr::V4(a) => format!("{a}/{prefix}"),
        IpAddr::V6(a) => format!("[{a}]/{prefix}"),
    };
    if let Some(p) = port {
        let _ = write!(text, ":{p}");
    }
    Ok(text)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{DEFAULT_CONNECT_TIMEOUT_MS, DEFAULT_HANDSHAKE_TIMEOUT_MS};

    fn ok(text: &str) -> Parsed {
        parse(text).unwrap_or_else(|e| panic!("{e}\n---\n{text}"))
    }

    /// The error of `text`: (line, col, message).
    fn bad(text: &str) -> (usize, usize, String) {
        match parse(text) {
            Ok(p) => panic!("parsed: {:?}\n---\n{text}", p.config),
            Err(e) => (e.line, e.col, e.msg),
        }
    }

    fn proxy(
        kind: ProxyKind,
        host: &str,
        port: u16,
        user: Option<&str>,
        pass: Option<&str>,
    ) -> Proxy {
        Proxy {
            kind,
            literal: crate::config::literal_host(host),
            host: host.into(),
            port,
            username: user.map(String::from),
            password: pass.map(String::from),
            pipeline: false,
            connect_timeout_ms: None,
            addrs: Vec::new(),
        }
    }

    fn pats(list: &[&str]) -> Vec<Pattern> {
        list.iter().map(|s| Pattern::parse(s).unwrap()).collect()
    }

    fn dnat(from: &str, to: &str) -> Dnat {
        Dnat {
            from: AddrPort::parse(from).unwrap(),
            to: AddrPort::parse(to).unwrap(),
        }
    }

    fn round_trip(p: &Parsed, name: &str) -> String {
        let out = to_toml(p, name);
        let back = Config::from_toml(&out).unwrap_or_else(|e| panic!("{e}\n---\n{out}"));
        assert_eq!(back, p.config, "\n---\n{out}");
        out
    }

    /// The non-comment lines of Debian's /etc/proxychains4.conf (proxychains4 4.16/4.17),
    /// with its `[ProxyList]` line's tab.
    const DEBIAN: &str = "strict_chain\n\
proxy_dns\n\
remote_dns_subnet 224\n\
tcp_read_time_out 15000\n\
tcp_connect_time_out 8000\n\
[ProxyList]\n\
socks4 \t127.0.0.1 9050\n";

    fn debian_expected() -> Config {
        Config {
            chain: ChainMode::Strict,
            proxy_dns: true,
            handshake_timeout_ms: 15000,
            connect_timeout_ms: 8000,
            proxies: vec![proxy(ProxyKind::Socks4a, "127.0.0.1", 9050, None, None)],
            ..Config::default()
        }
    }

    #[test]
    fn debian_sample_embedded() {
        let p = ok(DEBIAN);
        assert_eq!(p.config, debian_expected());
        assert_eq!(p.config.fake_ip_range, DEFAULT_FAKE_V4);
        assert_eq!(p.warnings.len(), 1, "{:?}", p.warnings);
        let w = &p.warnings[0];
        assert!(w.starts_with("line 3: remote_dns_subnet 224: "), "{w}");
        assert!(
            w.contains("multicast") && w.contains(DEFAULT_FAKE_V4),
            "{w}"
        );
        assert!(looks_like_proxychains(DEBIAN));
        round_trip(&p, "proxychains4.conf");
    }

    #[test]
    fn debian_sample_on_disk() {
        let Ok(text) = std::fs::read_to_string("/etc/proxychains4.conf") else {
            return; // not installed here: the embedded copy above still runs
        };
        assert!(looks_like_proxychains(&text));
        let p = ok(&text);
        // A locally edited file may differ; the shipped one maps to exactly this.
        if text.contains("\nstrict_chain\n") && text.contains("\nsocks4 \t127.0.0.1 9050\n") {
            assert_eq!(p.config, debian_expected());
            assert_eq!(p.warnings.len(), 1, "{:?}", p.warnings);
            assert!(
                p.warnings[0].contains("remote_dns_subnet 224"),
                "{:?}",
                p.warnings
            );
        }
        round_trip(&p, "/etc/proxychains4.conf");
    }

    const EVERY: &str = "\
# every option proxychains knows
  random_chain   # indented, with a trailing comment
chain_len = 2
quiet_mode
proxy_dns
remote_dns_subnet 10
tcp_read_time_out 4000
tcp_connect_time_out 2500
localnet 192.168.1.0:80/255.255.255.0
localnet 10.0.0.0/255.0.0.0
localnet 172.16.0.0/12
localnet [::1]:22/128
localnet ::1/128
dnat 1.1.1.1 1.1.1.2:443
dnat 1.1.1.1:1234 1.1.1.2:443
dnat 1.1.1.3:443 1.1.1.4

[ProxyList]   # the chain
socks5 192.168.67.78 1080 lamer secret
http 192.168.89.3 8080 justu hidden
socks4 192.168.1.49 1080
raw 10.1.1.1 9999
socks5 proxy.example 1081
socks5://user:pass@127.0.0.1:1082
";

    #[test]
    fn every_option() {
        let p = ok(EVERY);
        let expected = Config {
            chain: ChainMode::Random,
            chain_len: Some(2),
            quiet: true,
            proxy_dns: true,
            fake_ip_range: "10.0.0.0/8".into(),
            handshake_timeout_ms: 4000,
            connect_timeout_ms: 2500,
            localnet: pats(&[
                "192.168.1.0/24:80",
                "10.0.0.0/8",
                "172.16.0.0/12",
                "[::1]/128:22",
                "[::1]/128",
            ]),
            dnat: vec![
                dnat("1.1.1.1:1234", "1.1.1.2:443"),
                dnat("1.1.1.3:443", "1.1.1.4"),
                dnat("1.1.1.1", "1.1.1.2:443"),
            ],
            proxies: vec![
                proxy(
                    ProxyKind::Socks5h,
                    "192.168.67.78",
                    1080,
                    Some("lamer"),
                    Some("secret"),
                ),
                proxy(
                    ProxyKind::Http,
                    "192.168.89.3",
                    8080,
                    Some("justu"),
                    Some("hidden"),
                ),
                proxy(ProxyKind::Socks4a, "192.168.1.49", 1080, None, None),
                proxy(ProxyKind::Raw, "10.1.1.1", 9999, None, None),
                proxy(ProxyKind::Socks5h, "proxy.example", 1081, None, None),
                proxy(
                    ProxyKind::Socks5h,
                    "127.0.0.1",
                    1082,
                    Some("user"),
                    Some("pass"),
                ),
            ],
            ..Config::default()
        };
        assert_eq!(p.config, expected);
        assert_eq!(p.warnings, Vec::<String>::new());
        let out = round_trip(&p, "every.conf");
        assert!(out.starts_with(
            "# chainsocks configuration converted from the proxychains file every.conf\n"
        ));
    }

    #[test]
    fn defaults_without_options() {
        let p = ok("[ProxyList]\nsocks5 127.0.0.1 1080\n");
        let c = &p.config;
        assert_eq!(c.chain, ChainMode::Dynamic, "proxychains' code default");
        assert!(
            !c.proxy_dns,
            "proxychains resolves locally without proxy_dns"
        );
        assert!(!c.quiet);
        assert_eq!(c.chain_len, None);
        assert_eq!(c.fake_ip_range, DEFAULT_FAKE_V4);
        assert_eq!(c.connect_timeout_ms, DEFAULT_CONNECT_TIMEOUT_MS);
        assert_eq!(c.handshake_timeout_ms, DEFAULT_HANDSHAKE_TIMEOUT_MS);
        assert!(c.localnet.is_empty() && c.dnat.is_empty());
        assert!(p.warnings.is_empty());
    }

    #[test]
    fn chain_modes_and_len() {
        let list = "[ProxyList]\nsocks5 127.0.0.1 1080\nsocks5 127.0.0.1 1081\n";
        let cases: [(&str, ChainMode, Option<usize>); 7] = [
            ("dynamic_chain\n", ChainMode::Dynamic, None),
            ("strict_chain\n", ChainMode::Strict, None),
            ("random_chain\nchain_len = 3\n", ChainMode::Random, Some(3)),
            (
                "round_robin_chain\nchain_len=2\n",
                ChainMode::RoundRobin,
                Some(2),
            ),
            (
                "round_robin_chain\nchain_len 4\n",
                ChainMode::RoundRobin,
                Some(4),
            ),
            (
                "random_chain\nchain_len =5\nchain_len= 6\n",
                ChainMode::Random,
                Some(6),
            ),
            // The last chain type wins, as in proxychains.
            (
                "strict_chain\nrandom_chain\ndynamic_chain\nround_robin_chain\n",
                ChainMode::RoundRobin,
                None,
            ),
        ];
        for (head, mode, len) in cases {
            let p = ok(&format!("{head}{list}"));
            assert_eq!((p.config.chain, p.config.chain_len), (mode, len), "{head}");
            assert!(p.warnings.is_empty(), "{head}: {:?}", p.warnings);
            round_trip(&p, "x");
        }
        let p = ok(&format!("random_chain\nchain_len = 0\n{list}"));
        assert_eq!(p.config.chain_len, Some(1));
        assert_eq!(
            p.warnings,
            ["line 2: chain_len = 0 means 1 (as in proxychains)"]
        );
        let p = ok(&format!("chain_len = 2\nstrict_chain\n{list}"));
        assert_eq!(p.config.chain_len, Some(2));
        assert_eq!(
            p.warnings,
            [
                "line 1: chain_len has no effect on a strict chain (only random_chain and round_robin_chain use it)"
            ]
        );
    }

    #[test]
    fn localnet_forms() {
        let list = "[ProxyList]\nsocks5 127.0.0.1 1080\n";
        let cases = [
            ("192.168.100.0/255.255.255.0", "192.168.100.0/24"),
            ("192.168.1.0:80/255.255.255.0", "192.168.1.0/24:80"),
            ("10.0.0.0/8", "10.0.0.0/8"),
            ("10.0.0.0:443/8", "10.0.0.0/8:443"),
            ("10.1.2.3/255.0.0.0", "10.0.0.0/8"),
            ("127.0.0.0/255.0.0.0", "127.0.0.0/8"),
            ("0.0.0.0:80/0.0.0.0", "0.0.0.0/0:80"),
            ("1.2.3.4/32", "1.2.3.4/32"),
            ("1.2.3.4:0/32", "1.2.3.4/32"),
            ("[::]:80/0", "[::]/0:80"),
            ("[::1]:22/128", "[::1]/128:22"),
            ("[::1]/128", "[::1]/128"),
            ("::1/128", "[::1]/128"),
            ("fd00::/8", "[fd00::]/8"),
            ("[FD00::1]:8080/16", "[fd00::]/16:8080"),
        ];
        for (given, want) in cases {
            let p = ok(&format!("localnet {given}\n{list}"));
            let got: Vec<&str> = p.config.localnet.iter().map(Pattern::as_str).collect();
            assert_eq!(got, [want], "{given}");
            round_trip(&p, "x");
        }
        // They match what proxychains' entries match.
        use crate::rules::Destination;
        let d = |ip: &str, port| Destination {
            ip: Some(ip.parse().unwrap()),
            name: None,
            port,
        };
        let p = ok(&format!(
            "localnet 192.168.1.0:80/255.255.255.0\nlocalnet [::1]:22/128\n{list}"
        ));
        let hit = |ip, port| p.config.localnet.iter().any(|x| x.matches(&d(ip, port)));
        assert!(hit("192.168.1.77", 80));
        assert!(!hit("192.168.1.77", 81));
        assert!(!hit("192.168.2.1", 80));
        assert!(hit("::1", 22));
        assert!(!hit("::1", 23));
    }

    #[test]
    fn localnet_errors() {
        let cases: [(&str, usize, &str); 14] = [
            ("localnet 10.0.0.0/255.0.255.0", 19, "not contiguous"),
            ("localnet 10.0.0.0/0.255.255.255", 19, "not contiguous"),
            ("localnet 10.0.0.0/255.0.0", 19, "dotted mask"),
            ("localnet 10.0.0.0/33", 19, "0 to 32"),
            ("localnet 10.0.0.0:80/x", 22, "bad mask `x`"),
            ("localnet 10.0.0.0", 10, "ADDRESS[:PORT]/MASK"),
            ("localnet 10.0.0/8", 10, "bad IPv4 address `10.0.0`"),
            ("localnet host.example/8", 10, "bad IPv4 address"),
            ("localnet 10.0.0.0:99999/8", 19, "bad port `99999`"),
            ("localnet [::1]:x/128", 16, "bad port `x`"),
            ("localnet [::1]/129", 16, "0 to 128"),
            ("localnet ::1/255.255.255.0", 14, "0 to 128"),
            ("localnet [::1/128", 10, "missing `]`"),
            ("localnet 10.0.0.0/8 extra", 21, "unexpected `extra`"),
        ];
        for (line, col, what) in cases {
            let (l, c, msg) = bad(&format!("{line}\n[ProxyList]\nsocks5 127.0.0.1 1\n"));
            assert_eq!((l, c), (1, col), "{line}: {msg}");
            assert!(msg.contains(what), "{line}: {msg}");
        }
        let (l, c, msg) = bad("localnet\n[ProxyList]\nsocks5 127.0.0.1 1\n");
        assert_eq!((l, c), (1, 9), "{msg}");
        assert!(msg.contains("needs a value"), "{msg}");
    }

    #[test]
    fn dnat_forms() {
        let p = ok("dnat 1.1.1.1 1.1.1.2\n\
dnat 1.1.1.2:443 1.1.1.2\n\
dnat 1.1.1.1 1.1.1.2:443\n\
dnat 1.1.1.1:1234  1.1.1.2:443\n\
dnat [::1]:80 ::2\n\
[ProxyList]\nsocks5 127.0.0.1 1\n");
        // Entries with a source port first, each group in file order (proxychains' order).
        assert_eq!(
            p.config.dnat,
            [
                dnat("1.1.1.2:443", "1.1.1.2"),
                dnat("1.1.1.1:1234", "1.1.1.2:443"),
                dnat("[::1]:80", "::2"),
                dnat("1.1.1.1", "1.1.1.2"),
                dnat("1.1.1.1", "1.1.1.2:443"),
            ]
        );
        let first = |to: &str| {
            let d: SocketAddr = to.parse().unwrap();
            p.config.dnat.iter().find_map(|n| n.rewrite(d))
        };
        assert_eq!(first("1.1.1.1:1234"), Some("1.1.1.2:443".parse().unwrap()));
        assert_eq!(first("1.1.1.1:80"), Some("1.1.1.2:80".parse().unwrap()));
        assert_eq!(first("1.1.1.2:443"), Some("1.1.1.2:443".parse().unwrap()));
        round_trip(&p, "x");

        let cases: [(&str, usize, &str); 6] = [
            ("dnat 1.1.1.1", 13, "expected `dnat SOURCE DESTINATION`"),
            ("dnat", 5, "expected `dnat SOURCE DESTINATION`"),
            ("dnat 1.1.1.1 1.1.1.2 1.1.1.3", 22, "unexpected `1.1.1.3`"),
            ("dnat host.example 1.1.1.2", 6, "expected an IP address"),
            ("dnat 1.1.1.1 1.1.1.2:0", 14, "bad port `0`"),
            ("dnat 1.1.1.1:x 1.1.1.2", 6, "bad port `x`"),
        ];
        for (line, col, what) in cases {
            let (l, c, msg) = bad(&format!("\n{line}\n[ProxyList]\nsocks5 127.0.0.1 1\n"));
            assert_eq!((l, c), (2, col), "{line}: {msg}");
            assert!(msg.contains(what), "{line}: {msg}");
        }
    }

    #[test]
    fn proxy_lines() {
        let p = ok("[ProxyList]\n\
SOCKS5\t192.168.67.78\t1080\tlamer\tsecret\n\
Http 10.0.0.1 3128 justu\n\
socks4 10.0.0.2 1080 userid\n\
socks5 ::1 1080\n\
socks5 [fe80::1] 1081\n\
http proxy.corp.example 8080 u p\n");
        assert_eq!(
            p.config.proxies,
            [
                proxy(
                    ProxyKind::Socks5h,
                    "192.168.67.78",
                    1080,
                    Some("lamer"),
                    Some("secret")
                ),
                proxy(ProxyKind::Http, "10.0.0.1", 3128, Some("justu"), None),
                proxy(ProxyKind::Socks4a, "10.0.0.2", 1080, Some("userid"), None),
                proxy(ProxyKind::Socks5h, "::1", 1080, None, None),
                proxy(ProxyKind::Socks5h, "fe80::1", 1081, None, None),
                proxy(
                    ProxyKind::Http,
                    "proxy.corp.example",
                    8080,
                    Some("u"),
                    Some("p")
                ),
            ]
        );
        assert!(p.warnings.is_empty(), "{:?}", p.warnings);
        round_trip(&p, "x");

        let p = ok("[ProxyList]\nsocks4 10.0.0.2 1080 id pw\nraw 10.0.0.3 1 u\n");
        assert_eq!(
            p.warnings,
            [
                "line 2: a socks4 proxy sends only a user id: its password is not used",
                "line 3: a raw proxy does no handshake: its user name and password are not used",
            ]
        );
        assert_eq!(p.config.proxies[0].password.as_deref(), Some("pw"));
    }

    #[test]
    fn url_proxies() {
        let p = ok("[ProxyList]\n\
socks5://user:pass@127.0.0.1:1080\n\
socks4://10.0.0.1:9050\n\
http://u%40x:p%3Aw@proxy.example:3128\n\
socks5h://[::1]:1081/?pipeline=1\n\
socks4a://id@10.0.0.2:1080\n\
raw://10.0.0.3:22\n\
socks5://127.0.0.1\n");
        let mut piped = proxy(ProxyKind::Socks5h, "::1", 1081, None, None);
        piped.pipeline = true;
        assert_eq!(
            p.config.proxies,
            [
                proxy(
                    ProxyKind::Socks5h,
                    "127.0.0.1",
                    1080,
                    Some("user"),
                    Some("pass")
                ),
                proxy(ProxyKind::Socks4a, "10.0.0.1", 9050, None, None),
                // Literally, as proxychains-ng copies them (no %-decoding).
                proxy(
                    ProxyKind::Http,
                    "proxy.example",
                    3128,
                    Some("u%40x"),
                    Some("p%3Aw")
                ),
                piped,
                proxy(ProxyKind::Socks4a, "10.0.0.2", 1080, Some("id"), None),
                proxy(ProxyKind::Raw, "10.0.0.3", 22, None, None),
                proxy(ProxyKind::Socks5h, "127.0.0.1", 1080, None, None),
            ]
        );
        round_trip(&p, "x");

        let (l, c, msg) = bad("[ProxyList]\nsocks5 127.0.0.1 1\n  sock5://u:hunter2@h:1\n");
        assert_eq!((l, c), (3, 3), "{msg}");
        assert!(msg.contains("unknown scheme `sock5`"), "{msg}");
        assert!(!msg.contains("hunter2"), "{msg}");
        let (l, c, msg) = bad("[ProxyList]\nsocks5://h:1 extra\n");
        assert_eq!((l, c), (2, 14), "{msg}");
        assert!(msg.contains("after the proxy URL"), "{msg}");
        let (l, c, msg) = bad("[ProxyList]\nsocks5://h:0\n");
        assert_eq!((l, c), (2, 1), "{msg}");
        assert!(msg.contains("port"), "{msg}");
    }

    #[test]
    fn credentials_as_proxychains_reads_them() {
        type Creds = Vec<(Option<String>, Option<String>)>;
        let creds = |text: &str| -> (Creds, Vec<String>) {
            let p = ok(text);
            round_trip(&p, "x");
            let c = p
                .config
                .proxies
                .iter()
                .map(|p| (p.username.clone(), p.password.clone()))
                .collect();
            (c, p.warnings)
        };
        let pair = |u: &str, p: Option<&str>| (Some(u.to_string()), p.map(String::from));
        // A password starting with `#` is a password (it was silently dropped).
        let (c, w) = creds(
            "[ProxyList]\n\
socks5 127.0.0.1 1080 user #secret\n\
socks5 127.0.0.1 1081 user #secret # a comment after the fifth word\n\
socks5 127.0.0.1 1082 user ##\n\
  # a comment line in the list\n\
socks5 127.0.0.1 1083 user pa#ss#\n",
        );
        assert_eq!(
            c,
            [
                pair("user", Some("#secret")),
                pair("user", Some("#secret")),
                pair("user", Some("##")),
                pair("user", Some("pa#ss#")),
            ]
        );
        assert!(w.is_empty(), "{w:?}");
        // A `#` right after the port is read as proxychains reads it, with a warning that
        // never shows the password.
        let (c, w) = creds(
            "[ProxyList]\nsocks5 127.0.0.1 1080 #user hunter2\nsocks5 127.0.0.1 1081 # tor\n",
        );
        assert_eq!(c, [pair("#user", Some("hunter2")), pair("#", Some("tor"))]);
        assert_eq!(w.len(), 2, "{w:?}");
        assert!(
            w[0].starts_with("line 2: ") && w[0].contains("read as the user name"),
            "{w:?}"
        );
        assert!(
            w.iter()
                .all(|w| !w.contains("hunter2") && !w.contains("tor")),
            "{w:?}"
        );
        // URL credentials are literal: `%` is just a character.
        let (c, _) = creds(
            "[ProxyList]\n\
socks5://user:50%off@127.0.0.1:1080\n\
socks5://user:#50%off@127.0.0.1:1081 # a comment after the URL\n\
http://u%40x:p%3A@h:3128\n\
socks5://us@er:p@ss:w@127.0.0.1:1082\n",
        );
        assert_eq!(
            c,
            [
                pair("user", Some("50%off")),
                pair("user", Some("#50%off")),
                pair("u%40x", Some("p%3A")),
                // proxychains: the user name up to the first `:`, the password up to the last `@`.
                pair("us@er", Some("p@ss:w")),
            ]
        );
        // Other words after a proxy are still errors, and never echo a password.
        let (l, col, msg) = bad("[ProxyList]\nsocks5 127.0.0.1 1080 user hunter2 extra\n");
        assert_eq!((l, col), (2, 36), "{msg}");
        assert!(
            msg.contains("too many fields") && !msg.contains("hunter2"),
            "{msg}"
        );
        let (l, col, msg) = bad("[ProxyList]\nsocks5://u:hunter2@127.0.0.1:1 extra\n");
        assert_eq!((l, col), (2, 32), "{msg}");
        assert!(!msg.contains("hunter2"), "{msg}");
        let (_, _, msg) = bad("[ProxyList]\nsocks5://u:hunter2@127.0.0.1:0\n");
        assert!(msg.contains("port") && !msg.contains("hunter2"), "{msg}");
        // Before the list, `#` still starts a comment anywhere.
        let p = ok("random_chain\nchain_len = 2 # two\n[ProxyList]\nsocks5 127.0.0.1 1080\n");
        assert_eq!(p.config.chain_len, Some(2));
    }

    #[test]
    fn comments_and_whitespace_everywhere() {
        let text = "\u{feff}# leading comment\r\n\
\r\n\
   # indented comment\r\n\
\tstrict_chain\t# tab then comment\r\n\
proxy_dns#glued to the word: still a directive? no: `#` must start a word\r\n";
        // `proxy_dns#glued` is one word, not `proxy_dns` and a comment.
        let (l, c, msg) = bad(text);
        assert_eq!((l, c), (5, 1), "{msg}");
        assert!(msg.contains("unknown directive `proxy_dns#glued`"), "{msg}");

        let text = "\u{feff}# leading comment\r\n\
\r\n\
   # indented comment\r\n\
\tstrict_chain\t# tab then comment\r\n\
quiet_mode # quiet\r\n\
chain_len = 2 # comment after a value\r\n\
tcp_connect_time_out 100#5\r\n";
        // A `#` inside a word is part of it.
        let (l, c, msg) = bad(text);
        assert_eq!((l, c), (7, 22), "{msg}");
        assert!(msg.contains("found `100#5`"), "{msg}");

        let p = ok("\u{feff}# leading comment\r\n\
\r\n\
   # indented comment\r\n\
\tstrict_chain\t# tab then comment\r\n\
quiet_mode # quiet\r\n\
chain_len = 2 # comment after a value\r\n\
localnet 10.0.0.0/8 # comment after localnet\r\n\
dnat 1.1.1.1 1.1.1.2 # comment after dnat\r\n\
  [proxylist]  # any case, comment after the header\r\n\
# a comment in the list\r\n\
\r\n\
  socks5  127.0.0.1  1080  us#er  pa#ss  # `#` inside a word is kept\r\n\
socks5://u:p@127.0.0.1:1081 # after a URL\r\n\
   # trailing comment\r\n");
        let c = &p.config;
        assert_eq!(c.chain, ChainMode::Strict);
        assert!(c.quiet);
        assert_eq!(c.chain_len, Some(2));
        assert_eq!(c.localnet, pats(&["10.0.0.0/8"]));
        assert_eq!(c.dnat, [dnat("1.1.1.1", "1.1.1.2")]);
        assert_eq!(
            c.proxies,
            [
                proxy(
                    ProxyKind::Socks5h,
                    "127.0.0.1",
                    1080,
                    Some("us#er"),
                    Some("pa#ss")
                ),
                proxy(ProxyKind::Socks5h, "127.0.0.1", 1081, Some("u"), Some("p")),
            ]
        );
        assert_eq!(
            p.warnings,
            [
                "line 6: chain_len has no effect on a strict chain (only random_chain and round_robin_chain use it)"
            ]
        );
        round_trip(&p, "x");
    }

    #[test]
    fn dns_options() {
        let list = "[ProxyList]\nsocks5 127.0.0.1 1\n";
        let p = ok(&format!("proxy_dns_old\n{list}"));
        assert!(p.config.proxy_dns);
        assert_eq!(
            p.warnings,
            [
                "line 1: proxy_dns_old is accepted and treated as proxy_dns: chainsocks resolves through its own fake-DNS table"
            ]
        );
        let p = ok(&format!("\nproxy_dns_daemon 127.0.0.1:1053\n{list}"));
        assert!(p.config.proxy_dns);
        assert_eq!(
            p.warnings,
            [
                "line 2: proxy_dns_daemon is accepted and treated as proxy_dns: chainsocks resolves through its own fake-DNS table"
            ]
        );
        let (l, c, msg) = bad(&format!("proxy_dns_daemon localhost:1053\n{list}"));
        assert_eq!((l, c), (1, 18), "{msg}");
        assert!(msg.contains("expected IP:PORT"), "{msg}");
        let (l, c, msg) = bad(&format!("proxy_dns_daemon\n{list}"));
        assert_eq!((l, c), (1, 17), "{msg}");

        for (n, range) in [
            (10u8, "10.0.0.0/8"),
            (100, "100.0.0.0/8"),
            (198, "198.0.0.0/8"),
        ] {
            let p = ok(&format!("remote_dns_subnet {n}\n{list}"));
            assert_eq!(p.config.fake_ip_range, range);
            assert!(p.warnings.is_empty());
            round_trip(&p, "x");
        }
        for (n, what) in [
            (224u8, "multicast"),
            (239, "multicast"),
            (127, "loopback"),
            (0, "unspecified"),
        ] {
            let p = ok(&format!("proxy_dns\nremote_dns_subnet = {n}\n{list}"));
            assert_eq!(p.config.fake_ip_range, DEFAULT_FAKE_V4, "{n}");
            assert_eq!(p.warnings.len(), 1, "{n}");
            let w = &p.warnings[0];
            assert!(
                w.starts_with(&format!("line 2: remote_dns_subnet {n}: ")),
                "{w}"
            );
            assert!(
                w.contains(what) && w.contains("keeps its default fake range 198.18.0.0/15"),
                "{w}"
            );
            round_trip(&p, "x");
        }
        // The last one wins, and only it is judged.
        let p = ok(&format!(
            "remote_dns_subnet 224\nremote_dns_subnet 10\n{list}"
        ));
        assert_eq!(p.config.fake_ip_range, "10.0.0.0/8");
        assert!(p.warnings.is_empty());
        for v in ["256", "-1", "x", "10.0.0.0"] {
            let (l, c, msg) = bad(&format!("remote_dns_subnet {v}\n{list}"));
            assert_eq!((l, c), (1, 19), "{msg}");
            assert!(msg.contains("from 0 to 255"), "{msg}");
        }
    }

    #[test]
    fn errors_have_line_and_column() {
        let list = "[ProxyList]\nsocks5 127.0.0.1 1\n";
        let cases: [(String, usize, usize, &str); 22] = [
            (
                format!("strict_chain\nbogus_option 1\n{list}"),
                2,
                1,
                "unknown directive `bogus_option`",
            ),
            (
                format!("  Strict_Chain\n{list}"),
                1,
                3,
                "unknown directive `Strict_Chain`",
            ),
            (
                format!("socks5 127.0.0.1 1080\n{list}"),
                1,
                1,
                "proxies go after a `[ProxyList]` line",
            ),
            (
                format!("[Chains]\n{list}"),
                1,
                1,
                "unknown directive `[Chains]`",
            ),
            (
                format!("strict_chain now\n{list}"),
                1,
                14,
                "takes no value; unexpected `now`",
            ),
            (
                format!("quiet_mode = 1\n{list}"),
                1,
                12,
                "takes no value; unexpected `=`",
            ),
            (format!("chain_len\n{list}"), 1, 10, "needs a value"),
            (format!("chain_len =\n{list}"), 1, 12, "needs a value"),
            (
                format!("chain_len = two\n{list}"),
                1,
                13,
                "expected a number, found `two`",
            ),
            (format!("chain_len = 2 3\n{list}"), 1, 15, "unexpected `3`"),
            (format!("tcp_read_time_out 0\n{list}"), 1, 19, "at least 1"),
            (
                format!("tcp_connect_time_out 1.5\n{list}"),
                1,
                22,
                "found `1.5`",
            ),
            (
                format!("{list}strict_chain\n"),
                3,
                1,
                "`strict_chain` must come before the `[ProxyList]` line",
            ),
            (
                format!("{list}localnet 10.0.0.0/8\n"),
                3,
                1,
                "`localnet` must come before",
            ),
            (
                format!("{list}[ProxyList]\n"),
                3,
                1,
                "a second `[ProxyList]` line",
            ),
            (
                format!("{list}  sock5 127.0.0.1 1080\n"),
                3,
                3,
                "unknown proxy type `sock5` (accepted: socks4, socks5, http, raw)",
            ),
            (format!("{list}socks5 127.0.0.1\n"), 3, 17, "missing PORT;"),
            (format!("{list}http\n"), 3, 5, "missing HOST and PORT;"),
            (format!("{list}socks5 127.0.0.1 0\n"), 3, 18, "bad port `0`"),
            (
                format!("{list}socks5 127.0.0.1 65536\n"),
                3,
                18,
                "bad port `65536`",
            ),
            (
                format!("{list}socks5\t127.0.0.1\t1\tu\tp\textra\n"),
                3,
                24,
                "too many fields",
            ),
            (
                format!("{list}socks5 bad/host 1\n"),
                3,
                8,
                "bad proxy host `bad/host`",
            ),
        ];
        for (text, line, col, what) in &cases {
            let (l, c, msg) = bad(text);
            assert_eq!((l, c), (*line, *col), "{text}: {msg}");
            assert!(msg.contains(what), "{text}: {msg}");
        }
        let long = "x".repeat(256);
        let (l, c, msg) = bad(&format!("{list}socks5 h 1 u {long}\n"));
        assert_eq!((l, c), (3, 14), "{msg}");
        assert!(
            msg.contains("at most 255 bytes") && !msg.contains(&long),
            "{msg}"
        );
        // No proxy at all: Config::validate's error, without a position.
        let want = Config::default().validate().unwrap_err();
        for text in [
            "",
            "strict_chain\nproxy_dns\n",
            "strict_chain\n[ProxyList]\n# none yet\n",
        ] {
            let e = parse(text).unwrap_err();
            assert_eq!(e, want, "{text:?}");
            assert_eq!((e.line, e.col), (0, 0));
        }
        // The Display form names line and column.
        let e = parse("bogus\n").unwrap_err();
        assert_eq!(e.to_string(), "line 1, column 1: unknown directive `bogus`");
    }

    #[test]
    fn detection() {
        assert!(looks_like_proxychains(DEBIAN));
        assert!(looks_like_proxychains(EVERY));
        assert!(looks_like_proxychains(
            "  [proxylist]  \nsocks5 127.0.0.1 1\n"
        ));
        assert!(looks_like_proxychains("# x\n\tdynamic_chain # comment\n"));
        assert!(looks_like_proxychains("quiet_mode"));
        assert!(looks_like_proxychains("\u{feff}strict_chain\r\n"));
        assert!(looks_like_proxychains("proxy_dns_old\r\n"));
        assert!(!looks_like_proxychains(""));
        assert!(!looks_like_proxychains(
            "proxy = [\"socks5://127.0.0.1:1080\"]\nproxy_dns = true\n"
        ));
        assert!(!looks_like_proxychains(
            "chain = \"strict\"\n# strict_chain\n[[proxy]]\nurl = \"socks5://h:1\"\n"
        ));
        assert!(!looks_like_proxychains("[ProxyList.x]\nstrict_chain = 1\n"));
        let shipped =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../conf/chainsocks.toml");
        if let Ok(text) = std::fs::read_to_string(shipped) {
            assert!(!looks_like_proxychains(&text));
        }
    }

    #[test]
    fn to_toml_layout() {
        let p = ok(DEBIAN);
        let out = round_trip(&p, "/etc/proxychains4.conf");
        let (head, body) = out.split_once("\n\n").unwrap();
        assert!(head.lines().all(|l| l.starts_with('#')), "{head}");
        assert!(head.contains("/etc/proxychains4.conf"), "{head}");
        assert!(head.contains(&format!("# - {}", p.warnings[0])), "{head}");
        assert_eq!(body, p.config.to_toml());
        // A hostile file name cannot end the comment.
        let out = to_toml(&p, "a\nproxy_dns = true");
        assert!(out.lines().next().unwrap().ends_with("a?proxy_dns = true"));
        assert_eq!(Config::from_toml(&out).unwrap(), p.config);
    }
}
