//! Per-connection routing: which destinations go direct (localnet, `direct` rules), which are
//! refused (`block`), which chain carries the rest, and destination rewriting (`dnat`).
//!
//! Owns: destination patterns (`*`, domain globs, IPs and CIDRs with optional ports), their
//! parsing (with errors serde places at the file's line and column) and matching; the egress
//! allowlist's entries ([`Allow`]: a pattern, through the chain or marked `direct`).
//! Must never: match an IP pattern against a destination whose address is unknown (a name
//! behind a fake IP is matched by domain patterns only), or do any I/O.

use std::fmt;
use std::net::{IpAddr, SocketAddr};

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::config::split_host_port;
use crate::fakedns::Net;

/// What a connection is: its address (unknown for a name behind a fake IP), its name (known
/// only when it came from the fake-DNS table), its port.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Destination<'a> {
    pub ip: Option<IpAddr>,
    pub name: Option<&'a str>,
    pub port: u16,
}

/// A destination pattern, as written: `*`, `*.example.com`, `host.example.com:443`,
/// `10.0.0.0/8`, `10.0.0.0/8:443`, `1.2.3.4`, `1.2.3.4:80`, `[fd00::]/8`, `[::1]:22`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pattern {
    text: String,
    kind: Kind,
    port: Option<u16>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Kind {
    Any,
    Net(Net),
    Glob(String),
}

impl Pattern {
    pub fn parse(s: &str) -> Result<Pattern, String> {
        let text = s.trim().to_string();
        let bad = |why: &str| format!("bad destination `{text}`: {why}");
        if text.is_empty() {
            return Err(bad("empty"));
        }
        if text == "*" {
            return Ok(Pattern {
                kind: Kind::Any,
                port: None,
                text,
            });
        }
        // [v6] or [v6]/len, with an optional :port after the bracket part.
        if let Some(rest) = text.strip_prefix('[') {
            let (inner, after) = rest.split_once(']').ok_or_else(|| bad("missing `]`"))?;
            let (prefix, port) = match after.split_once(':') {
                Some((p, port)) => (p, Some(parse_port(port).map_err(|e| bad(&e))?)),
                None => (after, None),
            };
            let net = match prefix {
                "" => Net::parse(&format!("{inner}/128")),
                p => match p.strip_prefix('/') {
                    Some(len) => Net::parse(&format!("{inner}/{len}")),
                    None => return Err(bad("expected `/PREFIX` or `:PORT` after `]`")),
                },
            }
            .map_err(|e| bad(&e))?;
            return Ok(Pattern {
                kind: Kind::Net(net),
                port,
                text,
            });
        }
        if text.parse::<std::net::Ipv6Addr>().is_ok() {
            let net = Net::parse(&format!("{text}/128")).map_err(|e| bad(&e))?;
            return Ok(Pattern {
                kind: Kind::Net(net),
                port: None,
                text,
            });
        }
        let (body, port) = match text.rsplit_once(':') {
            Some((b, p)) => (b, Some(parse_port(p).map_err(|e| bad(&e))?)),
            None => (text.as_str(), None),
        };
        let first = body.split('/').next().unwrap_or(body);
        if first.parse::<IpAddr>().is_ok() {
            let net = if body.contains('/') {
                Net::parse(body)
            } else {
                Net::parse(&format!(
                    "{body}/{}",
                    if first.contains(':') { 128 } else { 32 }
                ))
            }
            .map_err(|e| bad(&e))?;
            return Ok(Pattern {
                kind: Kind::Net(net),
                port,
                text,
            });
        }
        if body.contains('/') {
            return Err(bad("not an address/prefix"));
        }
        let glob = body.trim_end_matches('.').to_ascii_lowercase();
        if glob.is_empty()
            || glob
                .bytes()
                .any(|b| !(b.is_ascii_alphanumeric() || b"-_.*?".contains(&b)))
        {
            return Err(bad(
                "expected `*`, a domain glob (`*.example.com`), an IP or a CIDR, with an optional `:PORT`",
            ));
        }
        Ok(Pattern {
            kind: Kind::Glob(glob),
            port,
            text,
        })
    }

    /// Whether `d` matches. Domain globs match names only; IPs and CIDRs match addresses only.
    pub fn matches(&self, d: &Destination) -> bool {
        if self.port.is_some_and(|p| p != d.port) {
            return false;
        }
        match &self.kind {
            Kind::Any => true,
            Kind::Net(net) => d.ip.is_some_and(|ip| net.contains(unmapped(ip))),
            Kind::Glob(g) => d
                .name
                .is_some_and(|n| glob_match(g.as_bytes(), n.to_ascii_lowercase().as_bytes())),
        }
    }

    /// The pattern as written.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// The one destination this pattern names, as `HOST:PORT` parts: an address or a name
    /// without wildcards, with a port (what `--isolate` can forward direct).
    pub fn exact_host_port(&self) -> Option<(String, u16)> {
        let port = self.port?;
        match &self.kind {
            Kind::Net(_) => self.single_ip().map(|(ip, _)| (ip.to_string(), port)),
            Kind::Glob(g) if !g.contains(['*', '?']) => Some((g.clone(), port)),
            _ => None,
        }
    }

    /// For `dnat`: the single address this pattern names (port optional).
    pub fn single_ip(&self) -> Option<(IpAddr, Option<u16>)> {
        match &self.kind {
            Kind::Net(n) if n.prefix == if n.addr.is_ipv4() { 32 } else { 128 } => {
                Some((n.addr, self.port))
            }
            _ => None,
        }
    }
}

fn unmapped(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

fn parse_port(p: &str) -> Result<u16, String> {
    p.parse::<u16>()
        .ok()
        .filter(|&n| n > 0)
        .ok_or_else(|| format!("bad port `{p}`"))
}

/// `*` matches any run of characters (dots included), `?` one character.
fn glob_match(pat: &[u8], s: &[u8]) -> bool {
    let (mut p, mut i) = (0usize, 0usize);
    let mut back: Option<(usize, usize)> = None;
    while i < s.len() {
        match pat.get(p) {
            Some(b'*') => {
                back = Some((p, i));
                p += 1;
            }
            Some(&c) if c == b'?' || Some(&c) == s.get(i) => {
                p += 1;
                i += 1;
            }
            _ => match back {
                Some((bp, bi)) => {
                    p = bp + 1;
                    i = bi + 1;
                    back = Some((bp, bi + 1));
                }
                None => return false,
            },
        }
    }
    pat.get(p..)
        .is_some_and(|rest| rest.iter().all(|&c| c == b'*'))
}

impl fmt::Display for Pattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl Serialize for Pattern {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.text)
    }
}

impl<'de> Deserialize<'de> for Pattern {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Pattern, D::Error> {
        let s = String::deserialize(d)?;
        Pattern::parse(&s).map_err(serde::de::Error::custom)
    }
}

/// One entry of the egress allowlist (`allow = [...]`): destinations matching `dest` may go
/// out — through the chain localnet and the rules pick, or direct when `direct` is set.
/// Written as a pattern string, or `{ dest = "PATTERN", direct = true }`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Allow {
    pub dest: Pattern,
    pub direct: bool,
}

impl Serialize for Allow {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        if !self.direct {
            return self.dest.serialize(s);
        }
        use serde::ser::SerializeStruct;
        let mut t = s.serialize_struct("Allow", 2)?;
        t.serialize_field("dest", &self.dest)?;
        t.serialize_field("direct", &true)?;
        t.end()
    }
}

impl<'de> Deserialize<'de> for Allow {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Allow, D::Error> {
        use serde::de::{self, MapAccess, Visitor};
        #[derive(Deserialize)]
        #[serde(deny_unknown_fields)]
        struct Table {
            dest: Pattern,
            #[serde(default)]
            direct: bool,
        }
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Allow;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                write!(
                    f,
                    "a destination (\"pypi.org:443\", \"*.example.com\", \"10.0.0.0/8:5432\") or a table {{ dest = \"…\", direct = true }}"
                )
            }
            fn visit_str<E: de::Error>(self, s: &str) -> Result<Allow, E> {
                Ok(Allow {
                    dest: Pattern::parse(s).map_err(E::custom)?,
                    direct: false,
                })
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Allow, A::Error> {
                let t = Table::deserialize(de::value::MapAccessDeserializer::new(map))?;
                Ok(Allow {
                    dest: t.dest,
                    direct: t.direct,
                })
            }
        }
        d.deserialize_any(V)
    }
}

/// A destination address with an optional port (`dnat` targets): `1.2.3.4`, `1.2.3.4:443`,
/// `[::1]:22`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AddrPort {
    pub ip: IpAddr,
    pub port: Option<u16>,
}

impl AddrPort {
    pub fn parse(s: &str) -> Result<AddrPort, String> {
        let (h, port) = split_host_port(s.trim())?;
        let ip = h
            .parse::<IpAddr>()
            .map_err(|_| format!("`{s}`: expected an IP address with an optional :PORT"))?;
        Ok(AddrPort { ip, port })
    }

    /// Applies this rewrite to `dest` (the port stays unless this one names one).
    pub fn apply(&self, dest: SocketAddr) -> SocketAddr {
        SocketAddr::new(self.ip, self.port.unwrap_or(dest.port()))
    }
}

impl fmt::Display for AddrPort {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.ip, self.port) {
            (IpAddr::V6(v6), Some(p)) => write!(f, "[{v6}]:{p}"),
            (ip, Some(p)) => write!(f, "{ip}:{p}"),
            (ip, None) => write!(f, "{ip}"),
        }
    }
}

impl Serialize for AddrPort {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_string())
    }
}

impl<'de> Deserialize<'de> for AddrPort {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<AddrPort, D::Error> {
        let s = String::deserialize(d)?;
        AddrPort::parse(&s).map_err(serde::de::Error::custom)
    }
}

/// One `dnat` entry: connections to `from` (IP, optional port) go to `to` instead.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Dnat {
    pub from: AddrPort,
    pub to: AddrPort,
}

impl Dnat {
    /// The rewritten destination, if this entry applies.
    pub fn rewrite(&self, dest: SocketAddr) -> Option<SocketAddr> {
        (unmapped(dest.ip()) == self.from.ip && self.from.port.is_none_or(|p| p == dest.port()))
            .then(|| self.to.apply(dest))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(ip: Option<&str>, name: Option<&'static str>, port: u16) -> Destination<'static> {
        Destination {
            ip: ip.map(|s| s.parse().unwrap()),
            name,
            port,
        }
    }

    #[test]
    fn patterns() {
        let p = |s| Pattern::parse(s).unwrap();
        assert!(p("*").matches(&d(None, Some("a.b"), 1)));
        assert!(p("*").matches(&d(Some("1.2.3.4"), None, 1)));
        let corp = p("*.corp.example");
        assert!(corp.matches(&d(None, Some("git.corp.example"), 443)));
        assert!(corp.matches(&d(None, Some("A.B.Corp.Example"), 443)));
        assert!(!corp.matches(&d(None, Some("corp.example"), 443)));
        assert!(
            !corp.matches(&d(Some("10.0.0.1"), None, 443)),
            "globs never match bare IPs"
        );
        let net = p("10.0.0.0/8:443");
        assert!(net.matches(&d(Some("10.1.2.3"), None, 443)));
        assert!(!net.matches(&d(Some("10.1.2.3"), None, 80)));
        assert!(!net.matches(&d(Some("11.1.2.3"), None, 443)));
        assert!(!net.matches(&d(None, Some("10.1.2.3"), 443)));
        assert!(
            p("10.0.0.0/8").matches(&d(Some("::ffff:10.9.9.9"), None, 1)),
            "v4-mapped"
        );
        assert!(p("[fd00::]/8").matches(&d(Some("fdab::1"), None, 1)));
        assert!(p("[::1]:22").matches(&d(Some("::1"), None, 22)));
        assert!(!p("[::1]:22").matches(&d(Some("::1"), None, 23)));
        assert!(p("::1").matches(&d(Some("::1"), None, 5)));
        assert!(p("1.2.3.4:80").matches(&d(Some("1.2.3.4"), None, 80)));
        assert!(p("host?.test").matches(&d(None, Some("host1.test"), 80)));
        assert!(p("*.test:8080").matches(&d(None, Some("x.test"), 8080)));
        for bad in [
            "",
            "10.0.0.0/33",
            "[::1",
            "1.2.3.4:0",
            "a b",
            "10.0.0.0/8:x",
            "foo/8",
        ] {
            assert!(Pattern::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn exact_host_port() {
        let p = |s| Pattern::parse(s).unwrap().exact_host_port();
        assert_eq!(p("db.internal:5432"), Some(("db.internal".into(), 5432)));
        assert_eq!(p("10.1.2.3:5432"), Some(("10.1.2.3".into(), 5432)));
        assert_eq!(p("[::1]:22"), Some(("::1".into(), 22)));
        for none in [
            "db.internal",
            "*.x.test:443",
            "10.0.0.0/8:5432",
            "*",
            "10.1.2.3",
        ] {
            assert_eq!(p(none), None, "{none}");
        }
    }

    #[test]
    fn globs() {
        assert!(glob_match(b"*", b""));
        assert!(glob_match(b"a*c", b"abbbc"));
        assert!(!glob_match(b"a*c", b"abbbd"));
        assert!(glob_match(b"*.*.x", b"a.b.x"));
        assert!(!glob_match(b"?", b""));
    }

    #[test]
    fn dnat() {
        let n = Dnat {
            from: AddrPort::parse("1.1.1.1:1234").unwrap(),
            to: AddrPort::parse("1.1.1.2:443").unwrap(),
        };
        assert_eq!(
            n.rewrite("1.1.1.1:1234".parse().unwrap()),
            Some("1.1.1.2:443".parse().unwrap())
        );
        assert_eq!(n.rewrite("1.1.1.1:80".parse().unwrap()), None);
        let n = Dnat {
            from: AddrPort::parse("1.1.1.1").unwrap(),
            to: AddrPort::parse("[::1]").unwrap(),
        };
        assert_eq!(
            n.rewrite("1.1.1.1:80".parse().unwrap()),
            Some("[::1]:80".parse().unwrap())
        );
    }
}
