//! [`HostileProxy`]: an in-process, scriptable, MISBEHAVING proxy server (SOCKS5, SOCKS4, HTTP
//! CONNECT) for the "hostile and broken proxies" tests.
//!
//! Owns: a listener thread on 127.0.0.1:free port and a thread per connection, each playing the
//! server's [`Behavior`] (one per server, the same for every connection), and a [`Session`]
//! record per connection: every byte received during the handshake, what was decoded from it
//! (methods, credentials, target), how many bytes were sent, and where a tunnel went.
//! Never does: bind a non-loopback address, connect anywhere but a loopback IP address (a
//! tunnel to a name or a non-loopback address echoes in place instead), or outlive its handle:
//! dropping it stops the listener, shuts down every connection (client and upstream) and joins
//! every thread (sleeping behaviors check the stop flag every 20 ms).
//!
//! Facts:
//! - Messages are decoded with chainsocks_core's server-side decoders, which consume exactly one
//!   message: pipelined bytes stay buffered for the next step.
//! - After a failure reply the server keeps the connection open until the client closes it
//!   ("holds"), so the client's error comes from the reply, not from an EOF.
//! - A tunnel ([`Behavior::Working`] etc.) relays to the requested destination when it is a
//!   loopback IP address (the upstream socket's local address is in
//!   [`Session::upstream_local`], so a test can match it with its origin's peer), else echoes.
//! - The threads are spawned by the thread that calls `start`: call [`crate::netns`] first.

use std::collections::HashMap;
use std::io::{ErrorKind, Read, Write};
use std::net::{IpAddr, Ipv4Addr, Shutdown, SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use chainsocks_core::proto::socks4::{self, Socks4Code};
use chainsocks_core::proto::socks5::{self, Method, ReplyCode, WireAddr};
use chainsocks_core::proto::{Decoded, ProtoError, http};

/// What a [`HostileProxy`] does with every connection. SOCKS5 unless the name says HTTP or
/// SOCKS4. "Holds" = keeps the connection open, reading, until the client closes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Behavior {
    /// A well-behaved SOCKS5 proxy (no auth, or user/pass accepting anything), then a tunnel.
    Working,
    /// SOCKS5: closes the connection (FIN) right after reading the greeting.
    CloseAfterGreeting,
    /// SOCKS5: answers the greeting with version 4 (`04 00`), then holds.
    WrongVersion,
    /// SOCKS5: answers the greeting with method 0xFF (no acceptable method), then holds.
    NoAcceptableMethod,
    /// SOCKS5: chooses user/password (0x02), reads the credentials, answers status 1, holds.
    AuthRejected,
    /// SOCKS5: success reply with ATYP 3 and a 255-byte bound name, then a tunnel.
    ReplyAtyp3Name255,
    /// SOCKS5: reply with ATYP 9 (and 6 more bytes), then holds.
    UnknownAtyp,
    /// SOCKS5: sends the first 6 of the 10 bytes of a success reply, then closes (FIN).
    TruncatedReplyThenClose,
    /// SOCKS5: sends a valid method selection and a valid success reply at `bytes_per_sec`
    /// bytes per second (each byte after a pause), then a tunnel.
    Drip { bytes_per_sec: u32 },
    /// SOCKS5: reads the greeting, never answers, holds.
    NeverAnswer,
    /// SOCKS5: answers the greeting (no auth), reads the CONNECT request, never answers, holds.
    NeverAnswerRequest,
    /// SOCKS5: after reading the greeting sets SO_LINGER 0 and closes: the client gets a RST.
    ResetMidHandshake,
    /// A valid SOCKS5 proxy that waits `delay` before each reply, then a tunnel.
    SlowValid { delay: Duration },
    /// SOCKS5: a success reply bound to `bound`, with [`EXTRA_TUNNEL_BYTES`] right after it
    /// in ONE write, then a tunnel. `together`: the method selection goes in that same write
    /// too (the server reads the CONNECT before answering the greeting: for a client that
    /// pipelines; a safe-mode client would wait forever).
    ReplyWithExtra { bound: Bound, together: bool },
    /// HTTP: `HTTP/1.1 200 Connection established\r\n\r\nEXTRA-TUNNEL-BYTES` in ONE write,
    /// then a tunnel.
    HttpOkWithExtra,
    /// HTTP: `HTTP/1.1 200 Connection established` followed by ~100-byte header lines: with
    /// `end_after: Some(n)` the header is ended (empty line) once `n` bytes were sent, then a
    /// tunnel; with `None` header lines flow for as long as the client reads (never ending;
    /// capped at 256 MiB).
    HttpHugeHeader { end_after: Option<usize> },
    /// HTTP: `407 Proxy Authentication Required` (with `Proxy-Authenticate`), then holds.
    Http407,
    /// SOCKS4: reads the request, answers 0x5B (rejected or failed), then holds.
    Socks4Rejected,
}

/// The bound address of [`Behavior::ReplyWithExtra`]'s success reply.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Bound {
    /// 127.0.0.1:4242 (a 10-byte reply).
    Ipv4,
    /// [::1]:4242 (a 22-byte reply).
    Ipv6,
    /// The 1-byte name `n`, port 4242: the shortest valid reply (8 bytes), shorter than an
    /// IPv4 one.
    ShortName,
}

impl Bound {
    fn wire(self) -> WireAddr {
        match self {
            Bound::Ipv4 => WireAddr::Ip(SocketAddr::from((Ipv4Addr::LOCALHOST, 4242))),
            Bound::Ipv6 => WireAddr::Ip(SocketAddr::from((std::net::Ipv6Addr::LOCALHOST, 4242))),
            Bound::ShortName => WireAddr::Name(b"n".to_vec(), 4242),
        }
    }
}

/// The bytes [`Behavior::HttpOkWithExtra`] and [`Behavior::ReplyWithExtra`] send right after
/// their reply.
pub const EXTRA_TUNNEL_BYTES: &[u8] = b"EXTRA-TUNNEL-BYTES";

impl Behavior {
    /// The URL scheme a client must use for this server: `socks5`, `socks4` or `http`.
    pub fn scheme(&self) -> &'static str {
        match self {
            Behavior::HttpOkWithExtra | Behavior::HttpHugeHeader { .. } | Behavior::Http407 => {
                "http"
            }
            Behavior::Socks4Rejected => "socks4",
            _ => "socks5",
        }
    }
}

/// What one connection did, as seen by the server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Session {
    /// The client's address.
    pub peer: SocketAddr,
    /// Every byte read from the client before the tunnel (or the hold) started; at most 64 KiB.
    pub received: Vec<u8>,
    /// The SOCKS5 greeting's methods.
    pub methods: Option<Vec<Method>>,
    /// The RFC 1929 (user, password), as received.
    pub credentials: Option<(Vec<u8>, Vec<u8>)>,
    /// The destination asked for: `host:port` / `ip:port` (SOCKS) or the HTTP request target.
    pub target: Option<String>,
    /// The HTTP `Proxy-Authorization` header, if any.
    pub proxy_authorization: Option<String>,
    /// Bytes the server sent before the tunnel started (replies, headers, drips).
    pub sent: usize,
    /// A send failed (the client had closed or reset the connection).
    pub send_failed: bool,
    /// The local address of the upstream connection of a relaying tunnel.
    pub upstream_local: Option<SocketAddr>,
    /// Whether the tunnel phase was reached.
    pub tunneled: bool,
    /// Whether the connection's thread has finished.
    pub finished: bool,
}

/// Cap on [`Session::received`].
const MAX_RECORD: usize = 64 * 1024;
/// Cap on what [`Behavior::HttpHugeHeader`] sends when it never ends the header.
const HUGE_CAP: usize = 256 << 20;
/// How long a server thread waits on a silent client before giving up.
const IDLE: Duration = Duration::from_secs(30);

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

struct Shared {
    behavior: Behavior,
    stop: AtomicBool,
    sessions: Mutex<Vec<Session>>,
    /// Every open socket (client and upstream), shut down on drop.
    socks: Mutex<HashMap<u64, TcpStream>>,
    threads: Mutex<Vec<JoinHandle<()>>>,
    next: AtomicU64,
}

impl Shared {
    fn stopped(&self) -> bool {
        self.stop.load(Ordering::SeqCst)
    }

    fn track(&self, s: &TcpStream) -> Option<u64> {
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        let c = s.try_clone().ok()?;
        lock(&self.socks).insert(id, c);
        Some(id)
    }

    fn untrack(&self, id: Option<u64>) {
        if let Some(id) = id {
            lock(&self.socks).remove(&id);
        }
    }

    fn spawn(self: &Arc<Self>, name: &str, f: impl FnOnce() + Send + 'static) {
        if self.stopped() {
            return;
        }
        match std::thread::Builder::new().name(name.into()).spawn(f) {
            Ok(h) => lock(&self.threads).push(h),
            Err(e) => eprintln!("e2e: hostile: spawn: {e}"),
        }
    }

    /// Sleeps `d`, waking early (false) when the server stops.
    fn sleep(&self, d: Duration) -> bool {
        let end = Instant::now() + d;
        loop {
            if self.stopped() {
                return false;
            }
            let left = end.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return true;
            }
            std::thread::sleep(left.min(Duration::from_millis(20)));
        }
    }
}

/// A misbehaving proxy on 127.0.0.1:free port; see [`Behavior`]. Stops on drop.
pub struct HostileProxy {
    addr: SocketAddr,
    shared: Arc<Shared>,
    listener: Arc<TcpListener>,
    accept: Option<JoinHandle<()>>,
}

impl HostileProxy {
    /// Starts a server playing `behavior` for every connection.
    ///
    /// # Panics
    /// If 127.0.0.1 cannot be bound (did you call `netns()`?) or the thread cannot start.
    pub fn start(behavior: Behavior) -> HostileProxy {
        let listener = match TcpListener::bind((Ipv4Addr::LOCALHOST, 0)) {
            Ok(l) => Arc::new(l),
            Err(e) => panic!("e2e: hostile: cannot bind 127.0.0.1:0 (did you call netns()?): {e}"),
        };
        let addr = match listener.local_addr() {
            Ok(a) => a,
            Err(e) => panic!("e2e: hostile: local_addr: {e}"),
        };
        let shared = Arc::new(Shared {
            behavior,
            stop: AtomicBool::new(false),
            sessions: Mutex::default(),
            socks: Mutex::default(),
            threads: Mutex::default(),
            next: AtomicU64::new(0),
        });
        let (l2, sh) = (listener.clone(), shared.clone());
        let accept = std::thread::Builder::new()
            .name("e2e-hostile".into())
            .spawn(move || accept_loop(&l2, &sh));
        let accept = match accept {
            Ok(t) => t,
            Err(e) => panic!("e2e: hostile: spawn: {e}"),
        };
        HostileProxy {
            addr,
            shared,
            listener,
            accept: Some(accept),
        }
    }

    /// The listening port.
    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// `127.0.0.1:port()`.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The behavior it plays.
    pub fn behavior(&self) -> &Behavior {
        &self.shared.behavior
    }

    /// `scheme://127.0.0.1:port` for a chainsocks config ([`Behavior::scheme`]).
    pub fn url(&self) -> String {
        format!("{}://{}", self.shared.behavior.scheme(), self.addr)
    }

    /// `scheme://user:pass@127.0.0.1:port` (user and password must not need escaping).
    pub fn url_with_auth(&self, user: &str, pass: &str) -> String {
        format!(
            "{}://{user}:{pass}@{}",
            self.shared.behavior.scheme(),
            self.addr
        )
    }

    /// Every connection so far, in accept order.
    pub fn sessions(&self) -> Vec<Session> {
        lock(&self.shared.sessions).clone()
    }

    /// Polls until at least `n` sessions have finished or `timeout` passes.
    pub fn wait_finished(&self, n: usize, timeout: Duration) -> bool {
        crate::wait_until(timeout, || {
            self.sessions().iter().filter(|s| s.finished).count() >= n
        })
    }
}

impl Drop for HostileProxy {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        // SAFETY: the listener is alive (we hold an Arc); shutdown wakes the blocked accept.
        unsafe { libc::shutdown(self.listener.as_raw_fd(), libc::SHUT_RDWR) };
        if let Some(t) = self.accept.take() {
            let _ = t.join();
        }
        // Connection threads may spawn relay threads: shut down and join until none are left.
        loop {
            for c in lock(&self.shared.socks).values() {
                let _ = c.shutdown(Shutdown::Both);
            }
            let threads: Vec<_> = lock(&self.shared.threads).drain(..).collect();
            if threads.is_empty() {
                break;
            }
            for t in threads {
                let _ = t.join();
            }
        }
    }
}

fn accept_loop(listener: &TcpListener, sh: &Arc<Shared>) {
    loop {
        let (s, peer) = match listener.accept() {
            Ok(x) => x,
            Err(_) if sh.stopped() => break,
            Err(_) => {
                std::thread::sleep(Duration::from_millis(5));
                continue;
            }
        };
        if sh.stopped() {
            break;
        }
        let _ = s.set_nodelay(true);
        let _ = s.set_read_timeout(Some(IDLE));
        let _ = s.set_write_timeout(Some(IDLE));
        let idx = {
            let mut ss = lock(&sh.sessions);
            ss.push(Session {
                peer,
                received: Vec::new(),
                methods: None,
                credentials: None,
                target: None,
                proxy_authorization: None,
                sent: 0,
                send_failed: false,
                upstream_local: None,
                tunneled: false,
                finished: false,
            });
            ss.len() - 1
        };
        let id = sh.track(&s);
        let sh2 = sh.clone();
        sh.spawn("e2e-hostile-conn", move || {
            let mut c = Conn {
                s,
                buf: Vec::new(),
                idx,
                sh: sh2.clone(),
            };
            serve(&mut c);
            c.rec(|r| r.finished = true);
            let Conn { s, .. } = c;
            drop(s);
            sh2.untrack(id);
        });
    }
}

/// One client connection: its stream, bytes received but not yet decoded, its session index.
struct Conn {
    s: TcpStream,
    buf: Vec<u8>,
    idx: usize,
    sh: Arc<Shared>,
}

impl Conn {
    fn rec(&self, f: impl FnOnce(&mut Session)) {
        if let Some(r) = lock(&self.sh.sessions).get_mut(self.idx) {
            f(r);
        }
    }

    /// Reads until `decode` has a complete message; consumes exactly its bytes. `None` on EOF,
    /// error, timeout, stop or a malformed message.
    fn read_msg<T>(
        &mut self,
        decode: impl Fn(&[u8]) -> Result<Decoded<T>, ProtoError>,
    ) -> Option<T> {
        loop {
            match decode(&self.buf) {
                Ok(Decoded::Done(v, used)) => {
                    self.buf.drain(..used.min(self.buf.len()));
                    return Some(v);
                }
                Ok(Decoded::Need(_)) => {}
                Err(e) => {
                    eprintln!("e2e: hostile: malformed message from the client: {e}");
                    return None;
                }
            }
            let mut tmp = [0u8; 4096];
            let n = match self.s.read(&mut tmp) {
                Ok(0) | Err(_) => return None,
                Ok(n) => n,
            };
            let got = tmp.get(..n).unwrap_or_default();
            self.buf.extend_from_slice(got);
            self.rec(|r| {
                let room = MAX_RECORD.saturating_sub(r.received.len());
                r.received
                    .extend_from_slice(got.get(..room.min(got.len())).unwrap_or_default());
            });
        }
    }

    /// One write of all of `b`.
    fn send(&mut self, b: &[u8]) -> bool {
        let ok = self.s.write_all(b).is_ok();
        self.rec(|r| {
            if ok {
                r.sent += b.len();
            } else {
                r.send_failed = true;
            }
        });
        ok
    }

    /// Waits `delay` (stop-aware), then sends.
    fn send_after(&mut self, delay: Duration, b: &[u8]) -> bool {
        self.sh.sleep(delay) && self.send(b)
    }

    /// Sends `b` one byte per `interval`, each byte after a pause.
    fn drip(&mut self, interval: Duration, b: &[u8]) -> bool {
        b.iter().all(|&x| self.send_after(interval, &[x]))
    }

    /// Keeps the connection open, reading and discarding, until the client closes it.
    fn hold(&mut self) {
        let mut tmp = [0u8; 4096];
        while !self.sh.stopped() {
            match self.s.read(&mut tmp) {
                Ok(0) => break,
                Ok(_) => {}
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(_) => break,
            }
        }
    }
}

fn wire_text(a: &WireAddr) -> String {
    match a {
        WireAddr::Ip(sa) => sa.to_string(),
        WireAddr::Name(n, p) => format!("{}:{p}", String::from_utf8_lossy(n)),
    }
}

/// A success reply bound to the server's own address.
fn success_reply(c: &Conn) -> Vec<u8> {
    let bound =
        c.s.local_addr()
            .unwrap_or_else(|_| SocketAddr::from((Ipv4Addr::LOCALHOST, 0)));
    let mut out = Vec::new();
    let _ = socks5::encode_reply(ReplyCode::Succeeded, &WireAddr::Ip(bound), &mut out);
    out
}

fn serve(c: &mut Conn) {
    let behavior = c.sh.behavior.clone();
    match behavior {
        Behavior::HttpOkWithExtra | Behavior::HttpHugeHeader { .. } | Behavior::Http407 => {
            serve_http(c, &behavior)
        }
        Behavior::Socks4Rejected => {
            let Some(req) = c.read_msg(socks4::decode_request) else {
                return;
            };
            let target = match &req.name {
                Some(n) => format!("{}:{}", String::from_utf8_lossy(n), req.port),
                None => format!("{}:{}", req.ip, req.port),
            };
            c.rec(|r| r.target = Some(target));
            let mut out = Vec::new();
            socks4::encode_reply(Socks4Code::Rejected, 0, Ipv4Addr::UNSPECIFIED, &mut out);
            if c.send(&out) {
                c.hold();
            }
        }
        _ => serve_socks5(c, &behavior),
    }
}

fn serve_socks5(c: &mut Conn, behavior: &Behavior) {
    let Some(methods) = c.read_msg(socks5::decode_greeting) else {
        return;
    };
    c.rec(|r| r.methods = Some(methods.clone()));
    let delay = match behavior {
        Behavior::SlowValid { delay } => *delay,
        _ => Duration::ZERO,
    };
    let drip = match behavior {
        Behavior::Drip { bytes_per_sec } => Some(Duration::from_secs(1) / (*bytes_per_sec).max(1)),
        _ => None,
    };
    let reply = |c: &mut Conn, b: &[u8]| match drip {
        Some(interval) => c.drip(interval, b),
        None => c.send_after(delay, b),
    };
    match behavior {
        Behavior::CloseAfterGreeting => return,
        Behavior::WrongVersion => {
            if c.send(&[4, 0]) {
                c.hold();
            }
            return;
        }
        Behavior::NoAcceptableMethod => {
            if c.send(&[socks5::VERSION, Method::NoAcceptable.to_u8()]) {
                c.hold();
            }
            return;
        }
        Behavior::NeverAnswer => return c.hold(),
        Behavior::ResetMidHandshake => {
            let lg = libc::linger {
                l_onoff: 1,
                l_linger: 0,
            };
            // SAFETY: a valid linger struct for SO_LINGER on our own socket.
            unsafe {
                libc::setsockopt(
                    c.s.as_raw_fd(),
                    libc::SOL_SOCKET,
                    libc::SO_LINGER,
                    &lg as *const libc::linger as *const libc::c_void,
                    std::mem::size_of::<libc::linger>() as libc::socklen_t,
                )
            };
            return; // the stream is closed by the caller: RST
        }
        _ => {}
    }
    // Method selection: user/pass when the behavior insists or the client offers only that.
    let userpass = matches!(behavior, Behavior::AuthRejected) || !methods.contains(&Method::NoAuth);
    let chosen = if userpass {
        Method::UserPass
    } else {
        Method::NoAuth
    };
    let together = matches!(behavior, Behavior::ReplyWithExtra { together: true, .. });
    if !together && !reply(c, &[socks5::VERSION, chosen.to_u8()]) {
        return;
    }
    if userpass {
        let Some(creds) = c.read_msg(socks5::decode_userpass) else {
            return;
        };
        c.rec(|r| r.credentials = Some(creds));
        let mut out = Vec::new();
        let status = u8::from(matches!(behavior, Behavior::AuthRejected));
        socks5::encode_auth_reply(status, &mut out);
        if !reply(c, &out) {
            return;
        }
        if status != 0 {
            return c.hold();
        }
    }
    let Some((_cmd, dest)) = c.read_msg(socks5::decode_request) else {
        return;
    };
    c.rec(|r| r.target = Some(wire_text(&dest)));
    let out = match behavior {
        Behavior::NeverAnswerRequest => return c.hold(),
        Behavior::ReplyAtyp3Name255 => {
            let mut out = Vec::new();
            let name = WireAddr::Name(vec![b'n'; 255], 4242);
            let _ = socks5::encode_reply(ReplyCode::Succeeded, &name, &mut out);
            out
        }
        Behavior::ReplyWithExtra { bound, together } => {
            let mut out = Vec::new();
            if *together {
                out.extend_from_slice(&[socks5::VERSION, chosen.to_u8()]);
            }
            let _ = socks5::encode_reply(ReplyCode::Succeeded, &bound.wire(), &mut out);
            out.extend_from_slice(EXTRA_TUNNEL_BYTES);
            out
        }
        Behavior::UnknownAtyp => vec![socks5::VERSION, 0, 0, 9, 127, 0, 0, 1, 0x10, 0x92],
        Behavior::TruncatedReplyThenClose => {
            let mut out = success_reply(c);
            out.truncate(6);
            c.send(&out);
            return;
        }
        _ => success_reply(c),
    };
    if !reply(c, &out) {
        return;
    }
    if matches!(behavior, Behavior::UnknownAtyp) {
        return c.hold();
    }
    tunnel(c, &dest);
}

fn serve_http(c: &mut Conn, behavior: &Behavior) {
    let Some(req) = c.read_msg(|b| http::decode_request(b, http::MAX_HEADER)) else {
        return;
    };
    c.rec(|r| {
        r.target = Some(req.target.clone());
        r.proxy_authorization = req.header("Proxy-Authorization").map(str::to_owned);
    });
    let dest = target_addr(&req.target);
    match behavior {
        Behavior::HttpOkWithExtra => {
            let mut out = b"HTTP/1.1 200 Connection established\r\n\r\n".to_vec();
            out.extend_from_slice(EXTRA_TUNNEL_BYTES);
            if c.send(&out) {
                tunnel(c, &dest);
            }
        }
        Behavior::Http407 => {
            let out = b"HTTP/1.1 407 Proxy Authentication Required\r\n\
                        Proxy-Authenticate: Basic realm=\"hostile\"\r\n\
                        Content-Length: 0\r\n\r\n";
            if c.send(out) {
                c.hold();
            }
        }
        Behavior::HttpHugeHeader { end_after } => {
            let mut sent = 0usize;
            let status = b"HTTP/1.1 200 Connection established\r\n";
            if !c.send(status) {
                return;
            }
            sent += status.len();
            let mut line_no = 0u64;
            let limit = end_after.unwrap_or(HUGE_CAP);
            while sent < limit && !c.sh.stopped() {
                // A batch of 100-byte header lines (fewer at the end of a bounded header).
                let mut batch = Vec::with_capacity(4096);
                while batch.len() + 100 <= 4096 && sent + batch.len() < limit {
                    let line = format!("X-Pad-{line_no:08}: {}\r\n", "p".repeat(82));
                    batch.extend_from_slice(line.as_bytes());
                    line_no += 1;
                }
                if !c.send(&batch) {
                    return;
                }
                sent += batch.len();
            }
            if end_after.is_some() && c.send(b"\r\n") {
                tunnel(c, &dest);
            }
        }
        _ => {}
    }
}

/// `host:port` / `[v6]:port` of an HTTP request target as a [`WireAddr`].
fn target_addr(t: &str) -> WireAddr {
    if let Ok(sa) = t.parse::<SocketAddr>() {
        return WireAddr::Ip(sa);
    }
    match t.rsplit_once(':') {
        Some((h, p)) => WireAddr::Name(h.as_bytes().to_vec(), p.parse().unwrap_or(0)),
        None => WireAddr::Name(t.as_bytes().to_vec(), 0),
    }
}

/// The tunnel: relays to `dest` if it is a loopback IP address, else echoes in place. Bytes
/// the client pipelined after its request go first.
fn tunnel(c: &mut Conn, dest: &WireAddr) {
    c.rec(|r| r.tunneled = true);
    let pending = std::mem::take(&mut c.buf);
    let up = match dest {
        WireAddr::Ip(sa) if sa.ip().is_loopback() || is_mapped_loopback(sa.ip()) => {
            TcpStream::connect_timeout(sa, Duration::from_secs(5)).ok()
        }
        _ => None,
    };
    let Some(mut up) = up else {
        // Echo.
        if !pending.is_empty() && c.s.write_all(&pending).is_err() {
            return;
        }
        let mut tmp = vec![0u8; 64 * 1024];
        while !c.sh.stopped() {
            match c.s.read(&mut tmp) {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    if c.s.write_all(tmp.get(..n).unwrap_or_default()).is_err() {
                        break;
                    }
                }
            }
        }
        return;
    };
    let _ = up.set_nodelay(true);
    let _ = up.set_read_timeout(Some(IDLE));
    let _ = up.set_write_timeout(Some(IDLE));
    let local = up.local_addr().ok();
    c.rec(|r| r.upstream_local = local);
    let up_id = c.sh.track(&up);
    let clones = (up.try_clone(), c.s.try_clone());
    if (pending.is_empty() || up.write_all(&pending).is_ok())
        && let (Ok(mut up_r), Ok(mut cl_w)) = clones
    {
        // Upstream -> client on another thread (which untracks the upstream socket when
        // done); client -> upstream here.
        let sh = c.sh.clone();
        c.sh.spawn("e2e-hostile-relay", move || {
            let _ = std::io::copy(&mut up_r, &mut cl_w);
            let _ = cl_w.shutdown(Shutdown::Write);
            sh.untrack(up_id);
        });
        let _ = std::io::copy(&mut c.s, &mut up);
        let _ = up.shutdown(Shutdown::Write);
        return;
    }
    c.sh.untrack(up_id);
}

fn is_mapped_loopback(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().is_some_and(|v4| v4.is_loopback()),
        IpAddr::V4(_) => false,
    }
}
