//! UDP through a SOCKS5 association (RFC 1928 section 7), for every caller: which proxy carries
//! a datagram (the same rules as TCP), the association's setup on its control connection, and
//! the datagram header, built into a stack buffer and parsed without copying.
//!
//! Owns: the UDP route (dnat → fake name → localnet / rules → chain; a chain carries UDP only
//! through a single SOCKS5 hop, else through `udp_proxy`, else the datagram is refused), the
//! association handshake (the chain dial with UDP ASSOCIATE as the last command), the relay
//! address (BND.ADDR 0.0.0.0 / :: means the proxy's own address).
//! Must never: let a datagram for a proxied destination go direct (every failure is an error
//! for the program), or build a header longer than [`MAX_HEADER`].

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use libc::c_int;

use crate::Error;
use crate::chain::{self, Route as Way};
use crate::config::{ChainMode, Config, LogLevel, Policy, Proxy};
use crate::connect::{Host, connect_nb, now_ms, random_below, unmap};
use crate::dial::{self, DialError, Limits, Phase};
use crate::proto::socks5::{self, WireAddr};
use crate::proto::{Decoded, Dest};
use crate::rules::Destination;
use crate::sys;

/// The longest UDP request header: RSV(2) FRAG(1) ATYP(1) LEN(1) name(255) PORT(2).
pub const MAX_HEADER: usize = 262;

/// Where a datagram goes.
#[derive(Debug, Clone)]
pub enum UdpPlan<'a> {
    /// To the kernel untouched: a direct destination the policy allows.
    Direct,
    /// Direct, to another address than the program's: a dnat rewrite, or the real address of a
    /// name a `direct` rule sends direct.
    DirectTo(SocketAddr),
    /// Through `proxy`'s association, to `target` (a name for a fake address).
    Proxy {
        proxy: &'a Proxy,
        target: Dest,
        /// The chain that chose it (for logs and reports).
        chain: &'a str,
    },
}

/// Decides where a datagram to `dest` goes, and what decided (for logs and reports). `Err`
/// refuses it: a `block` rule (`block_errno`), the allowlist or the proxy-only policy (EACCES),
/// a fake address never handed out or a chain that cannot carry UDP and no `udp_proxy`
/// (ENETUNREACH).
pub fn plan<'a, H: Host>(
    h: &H,
    cfg: &'a Config,
    dest: SocketAddr,
) -> (Result<UdpPlan<'a>, Error>, Option<String>) {
    let mut by = None;
    let r = plan_by(h, cfg, dest, &mut by);
    (r, by)
}

fn plan_by<'a, H: Host>(
    h: &H,
    cfg: &'a Config,
    dest: SocketAddr,
    by: &mut Option<String>,
) -> Result<UdpPlan<'a>, Error> {
    let asked = unmap(dest);
    let addr = cfg
        .dnat
        .iter()
        .find_map(|n| n.rewrite(asked))
        .unwrap_or(asked);
    let name = match h.fake_name(addr.ip()) {
        None => None,
        Some(Ok(n)) => Some(n),
        Some(Err(_)) => {
            *by = Some("fake-ip".into());
            return Err(Error::Os(libc::ENETUNREACH));
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
    *by = Some(match chain::allowlist(cfg, &d) {
        // Let through by an allowlist entry: that is what a reader wants to see.
        chain::Allowed::Entry { index, .. } if decision.route_is_open() => {
            chain::By::Allow(index).to_string()
        }
        _ => decision.by.to_string(),
    });
    match decision.route {
        Way::Block if decision.by == chain::By::Allowlist => Err(Error::Os(libc::EACCES)),
        Way::Block => Err(Error::Os(cfg.block_errno.errno())),
        Way::Direct => {
            let allowed = cfg.policy != Policy::ProxyOnly
                || addr.ip().is_loopback()
                || matches!(decision.by, chain::By::Allow(_))
                || cfg.allowed_direct.iter().any(|p| p.matches(&d));
            match (allowed, name) {
                (false, _) => {
                    *by = Some("policy".into());
                    Err(Error::Os(libc::EACCES))
                }
                (true, Some(n)) => {
                    let family = if dest.is_ipv4() {
                        libc::AF_INET
                    } else {
                        libc::AF_UNSPEC
                    };
                    let ip = h
                        .resolve_real(&n, family)
                        .map_err(|_| Error::Os(libc::EHOSTUNREACH))?;
                    Ok(UdpPlan::DirectTo(SocketAddr::new(ip, addr.port())))
                }
                (true, None) if addr != asked => Ok(UdpPlan::DirectTo(addr)),
                (true, None) => Ok(UdpPlan::Direct),
            }
        }
        Way::Chain(view) => {
            let target = match name {
                Some(n) => Dest::Name(n, addr.port()),
                None => Dest::Ip(addr),
            };
            let health = h.health();
            let single = match view.mode {
                ChainMode::Strict => (view.proxies.len() == 1).then(|| view.proxies.first()),
                _ => chain::plan(&view, &health, now_ms(), &[], &mut random_below)
                    .ok()
                    .filter(|p| p.len() == 1)
                    .map(|p| p.first().and_then(|&i| view.proxies.get(i))),
            }
            .flatten()
            .filter(|p| p.kind.is_socks5());
            match single.or(cfg.udp_proxy.as_ref()) {
                Some(proxy) => Ok(UdpPlan::Proxy {
                    proxy,
                    target,
                    chain: view.name,
                }),
                None => {
                    h.log(
                        LogLevel::Info,
                        format_args!(
                            "UDP to {target} refused: chain {} cannot carry UDP (only a single \
                             SOCKS5 hop can); set udp_proxy",
                            view.name
                        ),
                    );
                    Err(Error::Os(libc::ENETUNREACH))
                }
            }
        }
    }
}

/// An established association: the control connection (kept open for as long as the
/// association lives) and the relay address datagrams go to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Association {
    pub ctl: c_int,
    pub relay: SocketAddr,
}

/// Opens an association through `proxy` for datagrams that will come from port `client_port`
/// (the UDP socket's port; 0 when unknown), any address of the proxy's family (the request
/// names the unspecified address: the proxy takes the control connection's). The control
/// connection is a new stream socket, close-on-exec, moved to an fd ≥ `min_fd` (so it stays
/// out of the program's low numbers).
pub fn associate<H: Host>(
    h: &H,
    cfg: &Config,
    proxy: &Proxy,
    client_port: u16,
    min_fd: c_int,
    use_via: bool,
) -> Result<Association, DialError> {
    let at_connect = |error| DialError {
        hop: 0,
        phase: Phase::Connect,
        error,
    };
    let hop_timeout = Duration::from_millis(cfg.connect_timeout_ms);
    let deadline = Instant::now() + Duration::from_millis(cfg.handshake_timeout_ms);
    let connect_deadline = deadline.min(
        Instant::now()
            + proxy
                .connect_timeout_ms
                .map_or(hop_timeout, Duration::from_millis),
    );
    let limits = Limits {
        deadline,
        hop_timeout,
    };
    let mut last = at_connect(Error::Config(format!("proxy {proxy} was not resolved")));
    for real in proxy.socket_addrs() {
        // Under --isolate the library reaches the proxy through the launcher's forwarder (the
        // launcher itself, outside the sandbox, does not).
        let addr = if use_via {
            cfg.via
                .get(&real.to_string())
                .and_then(|v| v.parse().ok())
                .unwrap_or(real)
        } else {
            real
        };
        let ctl = match sys::socket(sys::family_of(addr.ip()), libc::SOCK_STREAM, min_fd) {
            Ok(fd) => fd,
            Err(e) => return Err(at_connect(Error::Os(e))),
        };
        let _scope = h.begin_dial();
        let r = connect_nb(h, ctl, &addr, connect_deadline)
            .map_err(at_connect)
            .and_then(|()| {
                let any: IpAddr = match addr {
                    SocketAddr::V4(_) => IpAddr::from([0, 0, 0, 0]),
                    SocketAddr::V6(_) => IpAddr::from([0u16; 8]),
                };
                let target = Dest::Ip(SocketAddr::new(any, client_port));
                dial::handshake_cmd(
                    &mut crate::connect::FdTransport { fd: ctl, host: h },
                    &[proxy],
                    &target,
                    socks5::Command::UdpAssociate,
                    limits,
                    None,
                )
            });
        match r {
            Ok(bound) => {
                let relay = match bound {
                    Some(WireAddr::Ip(b)) if b.ip().is_unspecified() => {
                        SocketAddr::new(real.ip(), b.port())
                    }
                    Some(WireAddr::Ip(b)) => b,
                    // A relay given by name (pproxy does that): the proxy's own address.
                    Some(WireAddr::Name(_, port)) => SocketAddr::new(real.ip(), port),
                    None => {
                        sys::close(ctl);
                        return Err(DialError {
                            hop: 0,
                            phase: Phase::Request,
                            error: Error::Internal("no bound address"),
                        });
                    }
                };
                return Ok(Association { ctl, relay });
            }
            Err(e) => {
                sys::close(ctl);
                let retry = e.phase == Phase::Connect && Instant::now() < connect_deadline;
                last = e;
                if !retry {
                    break;
                }
            }
        }
    }
    Err(last)
}

/// Writes the request header for `target` into `buf`; its length (`None`: a name longer than
/// 255 bytes, or `buf` too small).
pub fn encode_header(target: &Dest, buf: &mut [u8]) -> Option<usize> {
    let mut w = Writer { buf, at: 0 };
    match target {
        Dest::Ip(SocketAddr::V4(a)) => {
            w.put(&[0, 0, 0, 1])?;
            w.put(&a.ip().octets())?;
        }
        Dest::Ip(SocketAddr::V6(a)) => {
            w.put(&[0, 0, 0, 4])?;
            w.put(&a.ip().octets())?;
        }
        Dest::Name(n, _) => {
            let len = u8::try_from(n.len()).ok().filter(|&l| l > 0)?;
            w.put(&[0, 0, 0, 3, len])?;
            w.put(n.as_bytes())?;
        }
    }
    w.put(&target.port().to_be_bytes())?;
    Some(w.at)
}

/// Appends to a fixed buffer, failing when it is full.
struct Writer<'a> {
    buf: &'a mut [u8],
    at: usize,
}

impl Writer<'_> {
    fn put(&mut self, b: &[u8]) -> Option<()> {
        self.buf
            .get_mut(self.at..self.at + b.len())?
            .copy_from_slice(b);
        self.at += b.len();
        Some(())
    }
}

/// A datagram from the relay: where it comes from (as the proxy says) and where its payload
/// starts. `None` for a fragment (FRAG ≠ 0: not supported, dropped) or a malformed header.
pub fn parse_header(datagram: &[u8]) -> Option<(WireAddr, usize)> {
    match socks5::decode_udp_header(datagram) {
        Ok(Decoded::Done((0, from), used)) => Some((from, used)),
        _ => None,
    }
}

/// The longest envelope: family(1) port(2) IPv6 address(16).
pub const MAX_ENVELOPE: usize = 19;

/// The envelope the library puts before a framed datagram it sends through the launcher's UDP
/// hub (under `--isolate`, where the relay is outside the sandbox): the relay's address.
pub fn envelope(relay: SocketAddr, out: &mut [u8; MAX_ENVELOPE]) -> usize {
    let mut w = Writer { buf: out, at: 0 };
    let _ = match relay {
        SocketAddr::V4(a) => w
            .put(&[4])
            .and_then(|()| w.put(&a.port().to_be_bytes()))
            .and_then(|()| w.put(&a.ip().octets())),
        SocketAddr::V6(a) => w
            .put(&[6])
            .and_then(|()| w.put(&a.port().to_be_bytes()))
            .and_then(|()| w.put(&a.ip().octets())),
    };
    w.at
}

/// The registration a program's UDP socket sends the launcher's hub before it connects to it:
/// this magic, the relay's envelope, then the request header of its destination.
pub const HUB_REGISTER: &[u8; 8] = b"CSUDPREG";

/// Builds a hub registration for a socket whose association's relay is `relay` and whose
/// destination's header is `header`.
pub fn hub_registration(relay: SocketAddr, header: &[u8]) -> Vec<u8> {
    let mut env = [0u8; MAX_ENVELOPE];
    let n = envelope(relay, &mut env);
    let mut out = Vec::with_capacity(HUB_REGISTER.len() + n + header.len());
    out.extend_from_slice(HUB_REGISTER);
    out.extend_from_slice(env.get(..n).unwrap_or(&[]));
    out.extend_from_slice(header);
    out
}

/// A hub registration's relay and header.
pub fn parse_hub_registration(d: &[u8]) -> Option<(SocketAddr, &[u8])> {
    let rest = d.strip_prefix(HUB_REGISTER.as_slice())?;
    let (relay, header) = parse_envelope(rest)?;
    parse_header(header).filter(|(_, used)| *used == header.len())?;
    Some((relay, header))
}

/// The relay and the framed datagram of an enveloped datagram.
pub fn parse_envelope(d: &[u8]) -> Option<(SocketAddr, &[u8])> {
    let port = u16::from_be_bytes(d.get(1..3)?.try_into().ok()?);
    match d.first()? {
        4 => {
            let ip: [u8; 4] = d.get(3..7)?.try_into().ok()?;
            Some((SocketAddr::new(IpAddr::from(ip), port), d.get(7..)?))
        }
        6 => {
            let ip: [u8; 16] = d.get(3..19)?.try_into().ok()?;
            Some((SocketAddr::new(IpAddr::from(ip), port), d.get(19..)?))
        }
        _ => None,
    }
}

/// The header length a reply from `from` most likely has (what a receive reserves for it).
pub fn likely_header_len(from: IpAddr) -> usize {
    match from {
        IpAddr::V4(_) => 10,
        IpAddr::V6(_) => 22,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers_round_trip() {
        let mut buf = [0u8; MAX_HEADER];
        for t in [
            Dest::Ip("10.1.2.3:53".parse().unwrap()),
            Dest::Ip("[2001:db8::1]:443".parse().unwrap()),
            Dest::Name("example.test".into(), 123),
            Dest::Name("a".repeat(255), 1),
        ] {
            let n = encode_header(&t, &mut buf).unwrap();
            let mut v = Vec::new();
            socks5::encode_udp_header(0, &t, &mut v).unwrap();
            assert_eq!(&buf[..n], &v[..], "{t}");
            let mut dg = v.clone();
            dg.extend_from_slice(b"payload");
            let (from, used) = parse_header(&dg).unwrap();
            assert_eq!(from, WireAddr::from_dest(&t));
            assert_eq!(&dg[used..], b"payload");
        }
        assert_eq!(
            encode_header(&Dest::Name("a".repeat(256), 1), &mut buf),
            None
        );
        assert_eq!(encode_header(&Dest::Name(String::new(), 1), &mut buf), None);
        let mut frag = vec![0, 0, 1, 1, 10, 0, 0, 1, 0, 53];
        frag.extend_from_slice(b"x");
        assert_eq!(parse_header(&frag), None, "fragments are dropped");
        assert_eq!(parse_header(&[0, 0, 0, 9, 1, 2]), None);
        assert_eq!(likely_header_len("1.2.3.4".parse().unwrap()), 10);
        let mut b = [0u8; MAX_ENVELOPE];
        for a in ["127.0.0.1:9999", "[::1]:53"] {
            let a: SocketAddr = a.parse().unwrap();
            let n = envelope(a, &mut b);
            let mut d = b[..n].to_vec();
            d.extend_from_slice(b"framed");
            assert_eq!(parse_envelope(&d), Some((a, &b"framed"[..])));
        }
        assert_eq!(parse_envelope(&[9, 0, 1]), None);
        assert_eq!(parse_envelope(&[4, 0]), None);
    }
}
