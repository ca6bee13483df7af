//! The egress policy workflow around the allowlist (`allow = [...]`, checked in
//! `chainsocks_core::chain`): audit a job with `--report`, turn the report into an allowlist
//! with `chainsocks policy learn`, enforce it with `--allowlist FILE` / `--allow DEST`.
//!
//! Owns: allowlist files (a TOML file whose only key is `allow`, as `policy learn` writes it;
//! each entry's trailing comment kept for `--merge`), adding `--allowlist` / `--allow` /
//! `--allow-direct` entries to the configuration, which direct entries `--isolate` must
//! forward, and `policy learn` itself: one entry per destination seen (the name when the
//! record has one, else the address; the port kept), with its count and who used it as a
//! comment; merged with an existing file; `--collapse N` the only way a name becomes a
//! wildcard (N or more subdomains of one registrable domain, per the Public Suffix List the
//! `psl` crate embeds: no network).
//! Must never: widen a name to a wildcard without `--collapse`, list a destination the audit
//! saw blocked, or print an allowlist it cannot read back.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use chainsocks_core::chain::is_loopback;
use chainsocks_core::config::{Config, ConfigError, line_col};
use chainsocks_core::rules::{Allow, Destination, Pattern};
use serde::Deserialize;

use crate::records::{self, Record};

/// An allowlist file's entries, each with the comment that follows it on its line.
pub struct AllowFile {
    pub entries: Vec<(Allow, Option<String>)>,
}

/// Reads an allowlist file: TOML whose only key is `allow` (errors name file, line, column).
pub fn read_allowlist(path: &Path) -> Result<AllowFile, ConfigError> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| ConfigError::new(format!("cannot read: {e}")).in_file(path))?;
    parse_allowlist(&text).map_err(|e| e.in_file(path))
}

fn parse_allowlist(text: &str) -> Result<AllowFile, ConfigError> {
    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    struct File {
        allow: Vec<toml::Spanned<Allow>>,
    }
    let f: File = toml::from_str(text).map_err(|e| {
        let (line, col) = e.span().map_or((0, 0), |s| line_col(text, s.start));
        ConfigError {
            file: None,
            line,
            col,
            msg: format!(
                "{} (an allowlist file holds `allow = [...]` only, as `chainsocks policy learn` writes it)",
                e.message().trim()
            ),
            offset: None,
        }
    })?;
    let entries = f
        .allow
        .into_iter()
        .map(|s| {
            let comment = text
                .get(s.span().end..)
                .and_then(|rest| rest.split('\n').next())
                .map(|l| l.trim_start().trim_start_matches(',').trim())
                .and_then(|l| l.strip_prefix('#'))
                .map(|c| c.trim().to_string())
                .filter(|c| !c.is_empty());
            (s.into_inner(), comment)
        })
        .collect();
    Ok(AllowFile { entries })
}

/// Adds the entries of `--allowlist FILE`s and `--allow DEST`s to the configuration's
/// allowlist (after the file's own entries). Nothing given: the configuration is unchanged.
pub fn apply(cfg: &mut Config, allow: &[String], files: &[PathBuf]) -> Result<(), ConfigError> {
    if allow.is_empty() && files.is_empty() {
        return Ok(());
    }
    let mut added = Vec::new();
    for f in files {
        added.extend(read_allowlist(f)?.entries.into_iter().map(|(a, _)| a));
    }
    for d in allow {
        let dest = Pattern::parse(d).map_err(|e| ConfigError::new(format!("--allow: {e}")))?;
        added.push(Allow {
            dest,
            direct: false,
        });
    }
    cfg.allow.get_or_insert_with(Vec::new).extend(added);
    Ok(())
}

/// `--allow-direct HOST:PORT` without `--isolate`: with an allowlist, an entry marked direct.
pub fn allow_direct(cfg: &mut Config, specs: &[String]) -> Result<(), String> {
    let Some(list) = cfg.allow.as_mut() else {
        return Err(
            "--allow-direct needs --isolate or an allowlist (--allow, --allowlist, allow = [...])"
                .into(),
        );
    };
    for s in specs {
        let dest = Pattern::parse(s).map_err(|e| format!("--allow-direct: {e}"))?;
        if dest.exact_host_port().is_none() {
            return Err(format!("--allow-direct {s}: needs HOST:PORT"));
        }
        list.push(Allow { dest, direct: true });
    }
    Ok(())
}

/// Under `--isolate`: the `HOST:PORT` of every allowlist entry marked direct (each gets a
/// forwarder, as `--allow-direct` does). An entry that is not one destination (a CIDR, a
/// wildcard, no port) cannot be forwarded: an error.
pub fn isolate_direct(cfg: &Config) -> Result<Vec<String>, String> {
    let mut out = Vec::new();
    for a in cfg.allow.iter().flatten().filter(|a| a.direct) {
        match a.dest.exact_host_port() {
            Some((h, p)) if h.contains(':') => out.push(format!("[{h}]:{p}")),
            Some((h, p)) => out.push(format!("{h}:{p}")),
            None => {
                return Err(format!(
                    "allow entry `{}` is marked direct but is not one HOST:PORT: --isolate can only forward exact destinations direct",
                    a.dest
                ));
            }
        }
    }
    Ok(out)
}

/// What the audit saw of one destination.
#[derive(Debug, Default, Clone)]
struct Seen {
    count: usize,
    failed: usize,
    udp: bool,
    who: Vec<String>,
}

impl Seen {
    fn add(&mut self, r: &Record) {
        self.count += 1;
        if !r.ok() {
            self.failed += 1;
        }
        self.udp |= r.kind == "udp";
        let who = r.who();
        if !self.who.contains(&who) {
            self.who.push(who);
        }
    }

    fn merge(&mut self, o: &Seen) {
        self.count += o.count;
        self.failed += o.failed;
        self.udp |= o.udp;
        for w in &o.who {
            if !self.who.contains(w) {
                self.who.push(w.clone());
            }
        }
    }
}

/// One line of the allowlist being written.
#[derive(Debug, Clone)]
struct Item {
    /// The pattern text (`name:port`, `ip:port`, `[v6]:port`, `*.domain:port`, or an entry of
    /// the merged file as written).
    pattern: String,
    direct: bool,
    /// An exact name (what `--collapse` may group) and the port.
    name: Option<String>,
    port: Option<u16>,
    seen: Option<Seen>,
    /// From the merged file: the entry's own comment.
    kept: Option<Option<String>>,
    /// The names `--collapse` replaced with this wildcard, or (for an entry of the merged file)
    /// the destinations it allowed in these reports, with their counts.
    collapsed: Vec<(String, usize)>,
}

/// A destination the audit saw: a record's name or address and port.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct Dest {
    name: Option<String>,
    ip: Option<IpAddr>,
    port: u16,
}

impl Dest {
    fn of(r: &Record) -> Option<Dest> {
        let port = r.port?;
        let ip = r.ip.as_deref().and_then(|s| s.parse::<IpAddr>().ok());
        match (&r.name, ip) {
            (Some(n), _) => Some(Dest {
                name: Some(n.to_ascii_lowercase()),
                ip: None,
                port,
            }),
            (None, Some(ip)) => Some(Dest {
                name: None,
                ip: Some(ip),
                port,
            }),
            (None, None) => None,
        }
    }

    fn pattern(&self) -> String {
        match (&self.name, self.ip) {
            (Some(n), _) => format!("{n}:{}", self.port),
            (None, Some(IpAddr::V6(v6))) => format!("[{v6}]:{}", self.port),
            (None, Some(ip)) => format!("{ip}:{}", self.port),
            (None, None) => String::new(),
        }
    }

    fn as_destination(&self) -> Destination<'_> {
        Destination {
            ip: self.ip,
            name: self.name.as_deref(),
            port: self.port,
        }
    }
}

/// Options of `policy learn`.
pub struct Learn<'a> {
    pub reports: &'a [PathBuf],
    pub merge: Option<&'a Path>,
    pub collapse: Option<usize>,
}

/// `chainsocks policy learn REPORT… [--merge FILE] [--collapse N]`: prints the allowlist.
pub fn learn(opts: &Learn) -> ExitCode {
    let mut recs = Vec::new();
    for r in opts.reports {
        match std::fs::read_to_string(r) {
            Ok(t) => recs.extend(records::parse(&t)),
            Err(e) => {
                eprintln!("chainsocks: {}: cannot read: {e}", r.display());
                return ExitCode::from(2);
            }
        }
    }
    let merged = match opts.merge.map(read_allowlist).transpose() {
        Ok(m) => m,
        Err(e) => {
            eprintln!("chainsocks: {e}");
            return ExitCode::from(2);
        }
    };
    let sources: Vec<String> = opts
        .reports
        .iter()
        .map(|p| p.display().to_string())
        .collect();
    print!(
        "{}",
        render(
            &recs,
            merged.as_ref(),
            opts.merge,
            opts.collapse,
            &sources.join(", ")
        )
    );
    ExitCode::SUCCESS
}

/// The allowlist text for these records.
fn render(
    recs: &[Record],
    merged: Option<&AllowFile>,
    merge_path: Option<&Path>,
    collapse: Option<usize>,
    sources: &str,
) -> String {
    // What the audit saw, per (destination, direct).
    let mut seen: BTreeMap<(Dest, bool), Seen> = BTreeMap::new();
    let mut blocked: BTreeMap<String, (usize, Vec<String>)> = BTreeMap::new();
    let mut loopback = 0usize;
    for r in recs {
        if r.blocked() {
            let e = blocked.entry(r.dest()).or_default();
            e.0 += 1;
            let why = r.rule.clone().unwrap_or_else(|| r.result.clone());
            if !e.1.contains(&why) {
                e.1.push(why);
            }
            continue;
        }
        let tcp = r.kind == "connect";
        if !(tcp || r.kind == "udp") {
            continue;
        }
        let Some(d) = Dest::of(r) else { continue };
        // Only a TCP connection that went direct makes a direct entry: a datagram is sent
        // direct today whatever the entry says (UDP is not proxied), and a direct entry
        // under --isolate means a TCP forwarder.
        let direct = tcp && r.chain.as_deref() == Some("direct");
        // Exempt from the allowlist anyway: direct to loopback (never leaves the machine).
        if (direct || !tcp) && d.ip.is_some_and(is_loopback) {
            loopback += 1;
            continue;
        }
        seen.entry((d, direct)).or_default().add(r);
    }

    let mut items: Vec<Item> = Vec::new();
    if let Some(m) = merged {
        for (a, comment) in &m.entries {
            let exact = a.dest.exact_host_port();
            items.push(Item {
                pattern: a.dest.to_string(),
                direct: a.direct,
                name: exact
                    .as_ref()
                    .filter(|(h, _)| h.parse::<IpAddr>().is_err())
                    .map(|(h, _)| h.clone()),
                port: exact.map(|(_, p)| p),
                seen: None,
                kept: Some(comment.clone()),
                collapsed: Vec::new(),
            });
        }
    }
    let patterns: Vec<Option<Allow>> = merged
        .map(|m| m.entries.iter().map(|(a, _)| Some(a.clone())).collect())
        .unwrap_or_default();
    for ((d, direct), s) in &seen {
        // Already allowed by an entry of the merged file: counted there.
        if let Some(i) = patterns.iter().position(|a| {
            a.as_ref()
                .is_some_and(|a| a.dest.matches(&d.as_destination()))
        }) && let Some(it) = items.get_mut(i)
        {
            it.seen.get_or_insert_with(Seen::default).merge(s);
            let p = d.pattern();
            if p != it.pattern {
                it.collapsed.push((p, s.count));
            }
            continue;
        }
        items.push(Item {
            pattern: d.pattern(),
            direct: *direct,
            name: d.name.clone(),
            port: Some(d.port),
            seen: Some(s.clone()),
            kept: None,
            collapsed: Vec::new(),
        });
    }
    if let Some(n) = collapse {
        items = collapse_items(items, n);
    }
    items.sort_by_key(sort_key);

    let mut out = String::new();
    let _ = writeln!(
        out,
        "# chainsocks egress allowlist, learned by `chainsocks policy learn` from {} ({} records){}.",
        one_line(sources),
        recs.len(),
        merge_path.map_or(String::new(), |p| format!(
            ", merged with {}",
            one_line(&p.display().to_string())
        ))
    );
    out.push_str(
        "# Each entry lets one destination out, TCP and UDP: \"NAME:PORT\" or \"IP:PORT\" through the\n\
         # chain the rules pick, { dest = \"HOST:PORT\", direct = true } direct. Everything else is\n\
         # refused (EACCES). Enforce it with\n\
         #   chainsocks -f CONFIG --allowlist THIS_FILE --isolate --fail-on-block -- COMMAND\n",
    );
    if loopback > 0 {
        let _ = writeln!(
            out,
            "# Not listed: {loopback} direct connections or datagrams to loopback addresses (loopback is not egress)."
        );
    }
    for (d, (n, why)) in &blocked {
        let _ = writeln!(
            out,
            "# Blocked during the audit, not allowed here: {} ×{n} ({})",
            one_line(d),
            one_line(&why.join(", "))
        );
    }
    let lines: Vec<(String, String)> = items
        .iter()
        .map(|it| (entry_text(it), comment(it, merge_path)))
        .collect();
    let width = lines.iter().map(|(e, _)| e.len()).max().unwrap_or(0);
    out.push_str("allow = [\n");
    for (e, c) in &lines {
        let _ = writeln!(out, "    {e:<width$} # {c}");
    }
    out.push_str("]\n");
    out
}

/// `"pattern",` or `{ dest = "pattern", direct = true },`.
fn entry_text(it: &Item) -> String {
    if it.direct {
        format!("{{ dest = {}, direct = true }},", toml_str(&it.pattern))
    } else {
        format!("{},", toml_str(&it.pattern))
    }
}

fn comment(it: &Item, merge_path: Option<&Path>) -> String {
    let mut c = String::new();
    if !it.collapsed.is_empty() {
        let names: Vec<String> = it
            .collapsed
            .iter()
            .map(|(n, k)| format!("{n} ×{k}"))
            .collect();
        let label = match it.kept {
            Some(_) => "seen as",
            None => "collapsed (--collapse)",
        };
        let _ = write!(c, "{label}: {}; ", names.join(", "));
    }
    match (&it.seen, &it.kept) {
        (Some(s), _) => {
            let what = match (s.udp && !it.direct, it.direct, s.count == 1) {
                (true, _, true) => "connection/datagram destination",
                (true, _, false) => "connections/datagram destinations",
                (_, true, true) => "direct connection",
                (_, true, false) => "direct connections",
                (_, _, true) => "connection",
                (_, _, false) => "connections",
            };
            let _ = write!(c, "{} {what}", s.count);
            if s.failed > 0 {
                let _ = write!(c, " ({} failed)", s.failed);
            }
            let who: Vec<String> = s.who.iter().take(3).map(|w| short(w, 60)).collect();
            let _ = write!(c, ": {}", who.join("; "));
            if s.who.len() > 3 {
                let _ = write!(c, "; +{} more", s.who.len() - 3);
            }
        }
        (None, Some(Some(old))) => c.push_str(old),
        (None, _) => {
            let _ = write!(
                c,
                "kept from {} (not seen in these reports)",
                merge_path.map_or("the merged file".into(), |p| p.display().to_string())
            );
        }
    }
    one_line(&c)
}

/// `--collapse n`: n or more exact subdomains of one registrable domain (same port, same
/// direct mark) become one `*.domain:port` entry.
fn collapse_items(items: Vec<Item>, n: usize) -> Vec<Item> {
    let mut groups: BTreeMap<(String, Option<u16>, bool), Vec<usize>> = BTreeMap::new();
    for (i, it) in items.iter().enumerate() {
        let Some(name) = &it.name else { continue };
        let Some(reg) = registrable(name) else {
            continue;
        };
        if reg != *name {
            groups.entry((reg, it.port, it.direct)).or_default().push(i);
        }
    }
    let mut gone = vec![false; items.len()];
    let mut out = Vec::new();
    for ((reg, port, direct), idx) in groups {
        if idx.len() < n {
            continue;
        }
        let mut seen = Seen::default();
        let mut collapsed = Vec::new();
        for &i in &idx {
            if let (Some(it), Some(g)) = (items.get(i), gone.get_mut(i)) {
                *g = true;
                let count = it.seen.as_ref().map_or(0, |s| s.count);
                if let Some(s) = &it.seen {
                    seen.merge(s);
                }
                collapsed.push((it.name.clone().unwrap_or_default(), count));
            }
        }
        out.push(Item {
            pattern: match port {
                Some(p) => format!("*.{reg}:{p}"),
                None => format!("*.{reg}"),
            },
            direct,
            name: None,
            port,
            seen: (seen.count > 0).then_some(seen),
            kept: None,
            collapsed,
        });
    }
    out.extend(
        items
            .into_iter()
            .zip(gone)
            .filter(|(_, g)| !g)
            .map(|(it, _)| it),
    );
    out
}

/// The registrable domain of a name (the Public Suffix List's "eTLD+1", private suffixes such
/// as github.io included: `a.github.io` and `b.github.io` are different owners); `None` for a
/// name that is a public suffix itself.
pub fn registrable(name: &str) -> Option<String> {
    psl::domain_str(name.trim_end_matches('.')).map(|d| d.to_ascii_lowercase())
}

/// Names first (grouped by domain: labels compared from the right), then addresses; the port
/// last.
fn sort_key(it: &Item) -> (bool, Vec<String>, String) {
    let host = match it.pattern.parse::<IpAddr>() {
        Ok(_) => it.pattern.as_str(),
        Err(_) => it
            .pattern
            .rsplit_once(':')
            .filter(|(_, p)| p.parse::<u16>().is_ok())
            .map_or(it.pattern.as_str(), |(h, _)| h),
    };
    let is_addr = host.starts_with(|c: char| c.is_ascii_digit() || c == '[');
    let labels = if is_addr {
        vec![match host.trim_matches(['[', ']']).parse::<IpAddr>() {
            Ok(IpAddr::V4(v4)) => format!("4{:010}", u32::from(v4)),
            Ok(IpAddr::V6(v6)) => format!("6{:039}", u128::from(v6)),
            Err(_) => host.to_string(),
        }]
    } else {
        host.rsplit('.').map(str::to_string).collect()
    };
    let port = it.port.map_or(String::new(), |p| format!("{p:05}"));
    (is_addr, labels, format!("{port}{}", u8::from(it.direct)))
}

/// A TOML basic string.
fn toml_str(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if c.is_control() => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// Text safe in a one-line comment (no control characters).
fn one_line(s: &str) -> String {
    s.chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect()
}

fn short(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        return s.to_string();
    }
    let mut t: String = s.chars().take(max).collect();
    t.push('…');
    t
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(kind: &str, name: Option<&str>, ip: Option<&str>, port: u16, chain: &str) -> String {
        let q = |v: Option<&str>| v.map_or("null".to_string(), |s| format!("{s:?}"));
        format!(
            r#"{{"pid":1,"ppid":0,"program":"/usr/bin/curl","cmdline":"curl {}","kind":"{kind}","name":{},"ip":{},"port":{port},"rule":"default","chain":{},"result":"{}"}}"#,
            name.or(ip).unwrap_or(""),
            q(name),
            q(ip),
            if chain.is_empty() {
                "null".into()
            } else {
                format!("{chain:?}")
            },
            if kind == "block" { "EACCES" } else { "ok" }
        )
    }

    fn learn_text(lines: &[String], merged: Option<&str>, collapse: Option<usize>) -> String {
        let recs = records::parse(&lines.join("\n"));
        let m = merged.map(|t| parse_allowlist(t).unwrap());
        render(&recs, m.as_ref(), None, collapse, "r.jsonl")
    }

    fn line_of<'a>(text: &'a str, pattern: &str) -> &'a str {
        let q = format!("\"{pattern}\"");
        text.lines().find(|l| l.contains(&q)).unwrap_or("")
    }

    fn entries(text: &str) -> Vec<(String, bool)> {
        parse_allowlist(text)
            .unwrap_or_else(|e| panic!("{e}\n{text}"))
            .entries
            .into_iter()
            .map(|(a, _)| (a.dest.to_string(), a.direct))
            .collect()
    }

    #[test]
    fn learns_one_entry_per_destination() {
        let lines = [
            rec("connect", Some("pypi.org"), None, 443, "default"),
            rec("connect", Some("pypi.org"), None, 443, "default"),
            rec(
                "connect",
                Some("files.pythonhosted.org"),
                None,
                443,
                "default",
            ),
            rec("connect", None, Some("10.1.2.3"), 5432, "direct"),
            rec("connect", None, Some("127.0.0.1"), 6379, "direct"),
            rec("connect", None, Some("fd00::1"), 80, "default"),
            rec("udp", None, Some("10.9.9.9"), 123, "direct"),
            rec("block", None, Some("10.6.6.6"), 25, ""),
            rec("lookup", Some("never.test"), Some("198.18.0.9"), 0, ""),
        ];
        let t = learn_text(&lines, None, None);
        assert_eq!(
            entries(&t),
            [
                ("pypi.org:443".to_string(), false),
                ("files.pythonhosted.org:443".into(), false),
                ("10.1.2.3:5432".into(), true),
                ("10.9.9.9:123".into(), false),
                ("[fd00::1]:80".into(), false),
            ],
            "{t}"
        );
        assert!(t.contains("\"pypi.org:443\","), "{t}");
        assert!(
            line_of(&t, "pypi.org:443").ends_with("# 2 connections: curl pypi.org"),
            "{t}"
        );
        assert!(
            t.contains("{ dest = \"10.1.2.3:5432\", direct = true },"),
            "{t}"
        );
        assert!(t.contains("Not listed: 1 direct"), "{t}");
        assert!(
            t.contains("Blocked during the audit, not allowed here: 10.6.6.6:25 ×1"),
            "{t}"
        );
        assert!(!t.contains("never.test"), "{t}");
        // Read back, it allows exactly those.
        let cfg = Config {
            allow: Some(
                parse_allowlist(&t)
                    .unwrap()
                    .entries
                    .into_iter()
                    .map(|(a, _)| a)
                    .collect(),
            ),
            ..Config::default()
        };
        let a = |name: Option<&str>, ip: Option<&str>, port| {
            chainsocks_core::chain::allowlist(
                &cfg,
                &Destination {
                    ip: ip.map(|s| s.parse().unwrap()),
                    name,
                    port,
                },
            )
        };
        use chainsocks_core::chain::Allowed;
        assert!(matches!(
            a(Some("pypi.org"), None, 443),
            Allowed::Entry { .. }
        ));
        assert_eq!(a(Some("pypi.org"), None, 80), Allowed::NotListed);
        assert_eq!(a(Some("evil.pypi.org"), None, 443), Allowed::NotListed);
        assert_eq!(a(None, Some("10.6.6.6"), 25), Allowed::NotListed);
    }

    #[test]
    fn collapse_needs_n_subdomains_of_one_registrable_domain() {
        let lines = [
            rec("connect", Some("a.example.test"), None, 443, "default"),
            rec("connect", Some("b.example.test"), None, 443, "default"),
            rec("connect", Some("b.example.test"), None, 443, "default"),
            rec("connect", Some("example.test"), None, 443, "default"),
            rec("connect", Some("c.example.test"), None, 80, "default"),
            rec("connect", Some("a.github.io"), None, 443, "default"),
            rec("connect", Some("b.github.io"), None, 443, "default"),
            rec("connect", Some("x.y.example.co.uk"), None, 443, "default"),
            rec("connect", Some("z.example.co.uk"), None, 443, "default"),
        ];
        let plain = learn_text(&lines, None, None);
        assert!(!plain.contains('*'), "never a wildcard by itself: {plain}");
        let t = learn_text(&lines, None, Some(2));
        assert_eq!(
            entries(&t),
            [
                ("a.github.io:443".to_string(), false),
                ("b.github.io:443".into(), false),
                ("example.test:443".into(), false),
                ("*.example.test:443".into(), false),
                ("c.example.test:80".into(), false),
                ("*.example.co.uk:443".into(), false),
            ],
            "{t}"
        );
        assert!(
            line_of(&t, "*.example.test:443").contains("# collapsed (--collapse): a.example.test ×1, b.example.test ×2; 3 connections: curl a.example.test; curl b.example.test"),
            "{t}"
        );
        let t3 = learn_text(&lines, None, Some(3));
        assert!(!t3.contains('*'), "{t3}");
        assert_eq!(
            registrable("a.b.example.co.uk").as_deref(),
            Some("example.co.uk")
        );
        assert_eq!(registrable("co.uk"), None);
    }

    #[test]
    fn merge_keeps_entries_and_their_comments() {
        let old = "# old header\nallow = [\n  \"*.pythonhosted.org:443\", # wheels\n  \"gone.test:443\",   # hand-written note\n  { dest = \"db:5432\", direct = true },\n]\n";
        let lines = [
            rec(
                "connect",
                Some("files.pythonhosted.org"),
                None,
                443,
                "default",
            ),
            rec("connect", Some("new.test"), None, 443, "default"),
        ];
        let t = learn_text(&lines, Some(old), None);
        assert_eq!(
            entries(&t),
            [
                ("db:5432".to_string(), true),
                ("*.pythonhosted.org:443".into(), false),
                ("gone.test:443".into(), false),
                ("new.test:443".into(), false),
            ],
            "{t}"
        );
        assert!(t.contains("# hand-written note\n"), "{t}");
        assert!(
            line_of(&t, "*.pythonhosted.org:443")
                .ends_with("# seen as: files.pythonhosted.org:443 ×1; 1 connection: curl files.pythonhosted.org"),
            "{t}"
        );
        assert!(t.contains("kept from the merged file (not seen"), "{t}");
        // Merging the output again changes nothing.
        let again = learn_text(&[], Some(&t), None);
        assert_eq!(entries(&again), entries(&t));
    }

    #[test]
    fn allowlist_files_are_strict() {
        let e = parse_allowlist("allow = [\"a.test\"]\nproxy = []\n")
            .err()
            .unwrap();
        assert_eq!(e.line, 2, "{e}");
        let e = parse_allowlist("allow = [\"10.0.0.0/40\"]\n")
            .err()
            .unwrap();
        assert!(e.msg.contains("10.0.0.0/40"), "{e}");
        let mut cfg = Config::default();
        apply(&mut cfg, &[], &[]).unwrap();
        assert_eq!(cfg.allow, None);
        apply(&mut cfg, &["x.test:443".into()], &[]).unwrap();
        assert_eq!(cfg.allow.as_ref().map(Vec::len), Some(1));
        allow_direct(&mut cfg, &["10.0.0.1:5432".into()]).unwrap();
        assert!(allow_direct(&mut cfg, &["10.0.0.0/8:5432".into()]).is_err());
        assert_eq!(isolate_direct(&cfg).unwrap(), ["10.0.0.1:5432"]);
        cfg.allow.as_mut().unwrap().push(Allow {
            dest: Pattern::parse("*.x.test:1").unwrap(),
            direct: true,
        });
        assert!(isolate_direct(&cfg).is_err());
        assert!(allow_direct(&mut Config::default(), &["10.0.0.1:1".into()]).is_err());
    }
}
