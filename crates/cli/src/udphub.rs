//! The launcher's UDP hub: one UDP socket in the program's network namespace through which
//! datagrams reach SOCKS5 relays the program cannot (or does not know how to) reach itself.
//!
//! Two kinds of senders use it:
//! - **Registered sockets** (the supervisor's connected UDP sockets of programs the library
//!   cannot see): the supervisor made the association and connected the program's socket to
//!   the hub; the hub adds the SOCKS5 header for the socket's destination on the way out and
//!   strips it on the way back, so the program sends and receives plain datagrams.
//! - **Enveloped datagrams** (the library under `--isolate`, whose relay address is outside
//!   the sandbox): `family(1) port(2) address(4|16)` of the relay, then the framed datagram;
//!   the hub sends the framed part to that relay and returns the relay's datagrams unchanged.
//!
//! Each (sender, relay) pair gets its own outer socket in the launcher's namespace, so a
//! relay always sees one source per association.
//! Owns: the hub socket, the outer sockets and their lifetime: an outer socket (and a
//! registration) lives as long as its sender's socket does — after [`IDLE`] without traffic
//! the hub looks whether the sender's port is still bound in the program's network namespace
//! (its `/proc/PID/net/udp{,6}`, opened at start, which pins that namespace) — or until a
//! registered association's control connection closes. A new outer socket would have a new
//! source port, which the relay would not accept for the same association.
//! Must never: send a datagram anywhere but a relay a sender named or registered, or pass
//! a registered socket's datagram on without its header.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chainsocks_core::proto::Dest;
use chainsocks_core::udp::{MAX_HEADER, encode_header, parse_envelope, parse_header};

/// After this long without traffic, an outer socket is closed once its sender's socket is gone.
pub const IDLE: Duration = Duration::from_secs(120);

/// The idle time: [`IDLE`], or `CHAINSOCKS_UDP_IDLE_MS` (for tests).
fn idle() -> Duration {
    std::env::var("CHAINSOCKS_UDP_IDLE_MS")
        .ok()
        .and_then(|v| v.parse().ok())
        .map_or(IDLE, Duration::from_millis)
}

/// The UDP sockets of the program's network namespace, as its /proc/PID/net files list them.
struct NetTables(Vec<std::fs::File>);

impl NetTables {
    /// Opens `dir`/udp and `dir`/udp6 (`dir`: /proc/PID/net of a process in the namespace).
    fn open(dir: &std::path::Path) -> Option<NetTables> {
        let v: Vec<_> = ["udp", "udp6"]
            .iter()
            .filter_map(|f| std::fs::File::open(dir.join(f)).ok())
            .collect();
        (!v.is_empty()).then_some(NetTables(v))
    }

    /// The local ports bound now (re-read from the start of each open file).
    fn ports(&mut self) -> std::collections::HashSet<u16> {
        use std::io::{Read, Seek};
        let mut out = std::collections::HashSet::new();
        for f in &mut self.0 {
            let mut text = String::new();
            if f.rewind().is_err() || f.read_to_string(&mut text).is_err() {
                continue;
            }
            // "  sl  local_address rem_address ..." then "0: 0100007F:1F90 ..."
            for line in text.lines().skip(1) {
                let port = line
                    .split_whitespace()
                    .nth(1)
                    .and_then(|a| a.rsplit(':').next())
                    .and_then(|p| u16::from_str_radix(p, 16).ok());
                out.extend(port);
            }
        }
        out
    }
}

/// A registered (connected-mode) sender.
struct Registered {
    header: Vec<u8>,
    relay: SocketAddr,
    /// The association's control connection, when the launcher holds it (the association
    /// ends with it); a library-registered socket's is the program's (idle expiry then).
    ctl: Option<OwnedFd>,
    last: Instant,
}

struct Outer {
    sock: UdpSocket,
    sender: SocketAddr,
    /// Registered senders get headers stripped; enveloped ones get datagrams as they come.
    strip: bool,
    last: Instant,
}

#[derive(Default)]
struct State {
    registered: HashMap<SocketAddr, Registered>,
    outers: HashMap<(SocketAddr, SocketAddr), Outer>,
}

/// A running hub.
#[derive(Clone)]
pub struct Hub {
    sock: Arc<UdpSocket>,
    state: Arc<Mutex<State>>,
    /// The only hosts a relay may be on: the configured proxies' addresses (a relay is a
    /// proxy's own socket), so the hub cannot be used to send anywhere else.
    relay_hosts: Arc<Vec<IpAddr>>,
}

impl Hub {
    /// Starts the hub on `sock` (a UDP socket bound in the program's namespace), sending only
    /// to relays on `relay_hosts`; `net` is /proc/PID/net of a process in that namespace.
    pub fn start(
        sock: UdpSocket,
        relay_hosts: Vec<IpAddr>,
        net: &std::path::Path,
    ) -> Result<Hub, String> {
        let tables = NetTables::open(net);
        let hub = Hub {
            sock: Arc::new(sock),
            state: Arc::default(),
            relay_hosts: Arc::new(relay_hosts),
        };
        let h = hub.clone();
        std::thread::Builder::new()
            .name("cs-udp-hub".into())
            .stack_size(256 * 1024)
            .spawn(move || h.run(tables))
            .map_err(|e| format!("starting the UDP hub: {e}"))?;
        Ok(hub)
    }

    /// The hub's address (where registered sockets are connected).
    pub fn addr(&self) -> Option<SocketAddr> {
        self.sock.local_addr().ok()
    }

    /// Registers the program socket at `sender` (connected to the hub) for `target` through
    /// `relay`, on the association held by `ctl`.
    pub fn register(
        &self,
        sender: SocketAddr,
        target: &Dest,
        relay: SocketAddr,
        ctl: OwnedFd,
    ) -> Result<(), String> {
        let mut h = [0u8; MAX_HEADER];
        let n = encode_header(target, &mut h).ok_or("a name longer than 255 bytes")?;
        let mut st = self.state.lock().map_err(|_| "hub poisoned")?;
        st.registered.insert(
            sender,
            Registered {
                header: h.get(..n).unwrap_or(&[]).to_vec(),
                relay,
                ctl: Some(ctl),
                last: Instant::now(),
            },
        );
        // A new association for this sender: its old outer socket (if any) is stale.
        st.outers.retain(|(s, _), _| *s != sender);
        Ok(())
    }

    fn outer(
        st: &mut State,
        sender: SocketAddr,
        relay: SocketAddr,
        strip: bool,
    ) -> Option<&mut Outer> {
        let o = match st.outers.entry((sender, relay)) {
            std::collections::hash_map::Entry::Occupied(e) => e.into_mut(),
            std::collections::hash_map::Entry::Vacant(v) => {
                let any: SocketAddr = match relay.ip() {
                    IpAddr::V4(_) => "0.0.0.0:0".parse().ok()?,
                    IpAddr::V6(_) => "[::]:0".parse().ok()?,
                };
                let sock = UdpSocket::bind(any).ok()?;
                sock.connect(relay).ok()?;
                sock.set_nonblocking(true).ok()?;
                v.insert(Outer {
                    sock,
                    sender,
                    strip,
                    last: Instant::now(),
                })
            }
        };
        o.last = Instant::now();
        Some(o)
    }

    fn relay_allowed(&self, relay: SocketAddr) -> bool {
        let ip = chainsocks_core::connect::unmap(relay).ip();
        self.relay_hosts.contains(&ip)
    }

    /// One datagram from the program side.
    fn inbound(&self, data: &[u8], sender: SocketAddr) {
        let Ok(mut st) = self.state.lock() else {
            return;
        };
        // A library's registration of a connected socket (its association is its own).
        if let Some((relay, header)) = chainsocks_core::udp::parse_hub_registration(data) {
            if self.relay_allowed(relay) {
                st.outers.retain(|(s, _), _| *s != sender);
                st.registered.insert(
                    sender,
                    Registered {
                        header: header.to_vec(),
                        relay,
                        ctl: None,
                        last: Instant::now(),
                    },
                );
            }
            return;
        }
        if let Some(r) = st.registered.get_mut(&sender) {
            r.last = Instant::now();
            let (hdr, relay) = (r.header.clone(), r.relay);
            if let Some(o) = Hub::outer(&mut st, sender, relay, true) {
                let mut out = Vec::with_capacity(hdr.len() + data.len());
                out.extend_from_slice(&hdr);
                out.extend_from_slice(data);
                let _ = o.sock.send(&out);
            }
            return;
        }
        let Some((relay, framed)) = parse_envelope(data) else {
            return; // neither registered nor enveloped: not ours to send anywhere
        };
        if !self.relay_allowed(relay) {
            return;
        }
        if let Some(o) = Hub::outer(&mut st, sender, relay, false) {
            let _ = o.sock.send(framed);
        }
    }

    fn run(&self, mut tables: Option<NetTables>) {
        let mut buf = vec![0u8; 65_536];
        let idle = idle();
        let mut swept = Instant::now();
        loop {
            // The hub socket and every outer socket, polled together.
            let (mut fds, keys): (Vec<libc::pollfd>, Vec<(SocketAddr, SocketAddr)>) = {
                let Ok(mut st) = self.state.lock() else {
                    return;
                };
                // Associations whose control connection closed end; idle ones end with their
                // sender's socket (without the tables: after the idle time).
                let now = Instant::now();
                st.registered
                    .retain(|_, r| !r.ctl.as_ref().is_some_and(closed));
                if now.duration_since(swept) >= idle / 4 {
                    swept = now;
                    let stale = |last: Instant| now.duration_since(last) >= idle;
                    if st.outers.values().any(|o| stale(o.last))
                        || st.registered.values().any(|r| stale(r.last))
                    {
                        let bound = tables.as_mut().map(NetTables::ports);
                        let alive = |sender: &SocketAddr, last: Instant| {
                            !stale(last)
                                || bound.as_ref().is_some_and(|b| b.contains(&sender.port()))
                        };
                        st.outers.retain(|(s, _), o| alive(s, o.last));
                        st.registered.retain(|s, r| alive(s, r.last));
                    }
                }
                let keys: Vec<_> = st.outers.keys().copied().collect();
                let mut fds = vec![libc::pollfd {
                    fd: self.sock.as_raw_fd(),
                    events: libc::POLLIN,
                    revents: 0,
                }];
                for k in &keys {
                    if let Some(o) = st.outers.get(k) {
                        fds.push(libc::pollfd {
                            fd: o.sock.as_raw_fd(),
                            events: libc::POLLIN,
                            revents: 0,
                        });
                    }
                }
                (fds, keys)
            };
            // SAFETY: a valid pollfd array; a timeout so new outer sockets join the set.
            let n = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, 200) };
            if n <= 0 {
                continue;
            }
            if fds.first().is_some_and(|p| p.revents != 0) {
                while let Ok((k, from)) = self.sock.recv_from(&mut buf) {
                    self.inbound(buf.get(..k).unwrap_or(&[]), from);
                    if !readable(&self.sock) {
                        break;
                    }
                }
            }
            for (p, key) in fds.iter().skip(1).zip(keys) {
                if p.revents == 0 {
                    continue;
                }
                let Ok(st) = self.state.lock() else { return };
                let Some(o) = st.outers.get(&key) else {
                    continue;
                };
                while let Ok(k) = o.sock.recv(&mut buf) {
                    let dg = buf.get(..k).unwrap_or(&[]);
                    let out = if o.strip {
                        match parse_header(dg) {
                            Some((_, used)) => dg.get(used..).unwrap_or(&[]),
                            None => continue,
                        }
                    } else {
                        dg
                    };
                    let _ = self.sock.send_to(out, o.sender);
                }
            }
        }
    }
}

fn readable(s: &UdpSocket) -> bool {
    let mut p = libc::pollfd {
        fd: s.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: one valid pollfd, no wait.
    unsafe { libc::poll(&mut p, 1, 0) == 1 }
}

/// Whether a control connection was closed by its proxy (EOF or error, without consuming).
fn closed(ctl: &OwnedFd) -> bool {
    let mut b = [0u8; 1];
    matches!(
        chainsocks_core::sys::recv(ctl.as_raw_fd(), &mut b, libc::MSG_PEEK | libc::MSG_DONTWAIT),
        Ok(0) | Err(libc::ECONNRESET | libc::EPIPE | libc::ENOTCONN | libc::EBADF)
    )
}
