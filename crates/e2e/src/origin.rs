//! In-process TCP origin servers: [`HttpOrigin`], [`Echo`], and the data helpers
//! [`random_bytes`] / [`sha256_hex`] (the UDP ones are in `udp.rs`).
//!
//! Owns: listener threads (and a thread per TCP connection) inside the test
//! process, bound to 127.0.0.1 or [::1] on a free port, and what they record
//! (peer addresses, request paths).
//! Never does: bind a non-loopback address, or outlive its handle: dropping it
//! shuts the listener down (`shutdown(2)` on the listening socket wakes the
//! blocked `accept`) and shuts down every connection still open.
//!
//! Facts:
//! - The threads are spawned by the thread that calls `start`, so they live in
//!   that thread's network namespace: call [`crate::netns`] first.
//! - Peers tell proxied from direct connections: 127.0.0.1 = direct (or a proxy
//!   without a source address), 127.0.0.2 = dante, 127.0.0.3 = microsocks,
//!   127.0.0.4 = tinyproxy (their harness defaults); ::1 for IPv6.

use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, Shutdown, SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::Duration;

pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Deterministic pseudo-random bytes (splitmix64), the same for the same
/// `(n, seed)` everywhere.
pub fn random_bytes(n: usize, seed: u64) -> Vec<u8> {
    let mut state = seed;
    let mut out = Vec::with_capacity(n + 8);
    while out.len() < n {
        state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
        out.extend_from_slice(&z.to_le_bytes());
    }
    out.truncate(n);
    out
}

/// Lower-case hex SHA-256 of `data`.
pub fn sha256_hex(data: &[u8]) -> String {
    let d = Sha256::digest(data);
    let mut s = String::with_capacity(64);
    for b in d.iter() {
        s.push_str(&format!("{b:02x}"));
    }
    s
}

/// Shared plumbing: a listener thread plus tracked connections.
struct TcpServer {
    addr: SocketAddr,
    listener_fd: i32,
    stop: Arc<AtomicBool>,
    conns: Arc<Mutex<HashMap<u64, TcpStream>>>,
    peers: Arc<Mutex<Vec<SocketAddr>>>,
    thread: Option<JoinHandle<()>>,
    _listener: Arc<TcpListener>,
}

impl TcpServer {
    fn start<F>(ip: IpAddr, what: &str, handler: F) -> TcpServer
    where
        F: Fn(TcpStream, SocketAddr) + Send + Sync + 'static,
    {
        let listener = match TcpListener::bind((ip, 0)) {
            Ok(l) => Arc::new(l),
            Err(e) => panic!("e2e: {what}: cannot bind {ip}:0 (did you call netns()?): {e}"),
        };
        let addr = match listener.local_addr() {
            Ok(a) => a,
            Err(e) => panic!("e2e: {what}: local_addr: {e}"),
        };
        let stop = Arc::new(AtomicBool::new(false));
        let conns: Arc<Mutex<HashMap<u64, TcpStream>>> = Arc::default();
        let peers: Arc<Mutex<Vec<SocketAddr>>> = Arc::default();
        let handler = Arc::new(handler);
        let (l2, stop2, conns2, peers2) =
            (listener.clone(), stop.clone(), conns.clone(), peers.clone());
        let next = AtomicU64::new(0);
        let thread = std::thread::Builder::new()
            .name(format!("e2e-{what}"))
            .spawn(move || {
                loop {
                    let (s, peer) = match l2.accept() {
                        Ok(x) => x,
                        Err(_) if stop2.load(Ordering::SeqCst) => break,
                        Err(_) => {
                            std::thread::sleep(Duration::from_millis(5));
                            continue;
                        }
                    };
                    if stop2.load(Ordering::SeqCst) {
                        break;
                    }
                    lock(&peers2).push(peer);
                    let _ = s.set_nodelay(true);
                    let id = next.fetch_add(1, Ordering::Relaxed);
                    if let Ok(c) = s.try_clone() {
                        lock(&conns2).insert(id, c);
                    }
                    let (h, conns3) = (handler.clone(), conns2.clone());
                    let spawned =
                        std::thread::Builder::new()
                            .name("e2e-conn".into())
                            .spawn(move || {
                                h(s, peer);
                                lock(&conns3).remove(&id);
                            });
                    if spawned.is_err() {
                        lock(&conns2).remove(&id);
                    }
                }
            });
        let thread = match thread {
            Ok(t) => t,
            Err(e) => panic!("e2e: {what}: spawn: {e}"),
        };
        TcpServer {
            addr,
            listener_fd: listener.as_raw_fd(),
            stop,
            conns,
            peers,
            thread: Some(thread),
            _listener: listener,
        }
    }
}

impl Drop for TcpServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // SAFETY: the listener is alive (we hold an Arc); shutdown wakes accept.
        unsafe { libc::shutdown(self.listener_fd, libc::SHUT_RDWR) };
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        for (_, c) in lock(&self.conns).drain() {
            let _ = c.shutdown(Shutdown::Both);
        }
    }
}

fn url_host(addr: SocketAddr) -> String {
    match addr.ip() {
        IpAddr::V4(ip) => format!("{ip}:{}", addr.port()),
        IpAddr::V6(ip) => format!("[{ip}]:{}", addr.port()),
    }
}

/// A small HTTP/1.1 file server (GET/HEAD, `Content-Length`, `Connection: close`).
pub struct HttpOrigin {
    server: TcpServer,
    requests: Arc<Mutex<Vec<(SocketAddr, String)>>>,
}

impl HttpOrigin {
    /// Serves `files` (path such as `/big`, body) on 127.0.0.1:free port.
    pub fn start(files: Vec<(String, Vec<u8>)>) -> HttpOrigin {
        HttpOrigin::start_on(IpAddr::V4(Ipv4Addr::LOCALHOST), files)
    }

    /// Same on `[::1]`.
    pub fn start_v6(files: Vec<(String, Vec<u8>)>) -> HttpOrigin {
        HttpOrigin::start_on(IpAddr::V6(Ipv6Addr::LOCALHOST), files)
    }

    /// Same on `ip` (must be a loopback address).
    ///
    /// # Panics
    /// If `ip` is not loopback or cannot be bound.
    pub fn start_on(ip: IpAddr, files: Vec<(String, Vec<u8>)>) -> HttpOrigin {
        assert!(
            ip.is_loopback(),
            "e2e: origins bind loopback only, not {ip}"
        );
        let files: Arc<HashMap<String, Vec<u8>>> = Arc::new(files.into_iter().collect());
        let requests: Arc<Mutex<Vec<(SocketAddr, String)>>> = Arc::default();
        let req2 = requests.clone();
        let server = TcpServer::start(ip, "http-origin", move |s, peer| {
            serve_http(s, peer, &files, &req2);
        });
        HttpOrigin { server, requests }
    }

    /// The listening port.
    pub fn port(&self) -> u16 {
        self.server.addr.port()
    }

    /// The listening address.
    pub fn addr(&self) -> SocketAddr {
        self.server.addr
    }

    /// `http://127.0.0.1:PORT{path}` (or `http://[::1]:PORT{path}`).
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", url_host(self.server.addr))
    }

    /// `http://{host}:PORT{path}`, e.g. with a name only a proxy resolves.
    pub fn url_with_host(&self, host: &str, path: &str) -> String {
        format!("http://{host}:{}{path}", self.port())
    }

    /// Every request so far: (peer, path), in arrival order.
    pub fn requests(&self) -> Vec<(SocketAddr, String)> {
        lock(&self.requests).clone()
    }

    /// Peers of every accepted connection (also those that sent no request).
    pub fn peers(&self) -> Vec<SocketAddr> {
        lock(&self.server.peers).clone()
    }
}

fn serve_http(
    mut s: TcpStream,
    peer: SocketAddr,
    files: &HashMap<String, Vec<u8>>,
    requests: &Mutex<Vec<(SocketAddr, String)>>,
) {
    let _ = s.set_read_timeout(Some(Duration::from_secs(10)));
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 4096];
    let head_end = loop {
        if let Some(i) = find(&buf, b"\r\n\r\n") {
            break i;
        }
        if buf.len() > 64 * 1024 {
            return;
        }
        match s.read(&mut chunk) {
            Ok(0) | Err(_) => return,
            Ok(n) => buf.extend_from_slice(chunk.get(..n).unwrap_or_default()),
        }
    };
    let head = String::from_utf8_lossy(buf.get(..head_end).unwrap_or_default()).into_owned();
    let mut parts = head.lines().next().unwrap_or("").split_whitespace();
    let method = parts.next().unwrap_or("").to_string();
    let mut path = parts.next().unwrap_or("").to_string();
    // Absolute-form (a plain HTTP proxy may forward it): keep the path only.
    if let Some(rest) = path.strip_prefix("http://") {
        path = rest
            .find('/')
            .map_or("/".into(), |i| rest.get(i..).unwrap_or("/").to_string());
    }
    lock(requests).push((peer, path.clone()));
    let (status, body): (&str, &[u8]) = match (method.as_str(), files.get(&path)) {
        ("GET" | "HEAD", Some(b)) => ("200 OK", b),
        ("GET" | "HEAD", None) => ("404 Not Found", b"not found\n"),
        _ => ("405 Method Not Allowed", b"method not allowed\n"),
    };
    let hdr = format!(
        "HTTP/1.1 {status}\r\nContent-Length: {}\r\nContent-Type: application/octet-stream\r\nConnection: close\r\n\r\n",
        body.len()
    );
    if s.write_all(hdr.as_bytes()).is_err() {
        return;
    }
    if method != "HEAD" && s.write_all(body).is_err() {
        return;
    }
    // Half-close and drain, so unread input never turns our close into a RST
    // that could destroy the response in flight.
    let _ = s.shutdown(Shutdown::Write);
    let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
    while let Ok(n) = s.read(&mut chunk) {
        if n == 0 {
            break;
        }
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// A TCP echo server (a thread per connection).
pub struct Echo {
    server: TcpServer,
}

impl Echo {
    /// On 127.0.0.1:free port.
    pub fn start() -> Echo {
        Echo::start_on(IpAddr::V4(Ipv4Addr::LOCALHOST))
    }

    /// On `[::1]`:free port.
    pub fn start_v6() -> Echo {
        Echo::start_on(IpAddr::V6(Ipv6Addr::LOCALHOST))
    }

    /// On `ip` (must be a loopback address).
    ///
    /// # Panics
    /// If `ip` is not loopback or cannot be bound.
    pub fn start_on(ip: IpAddr) -> Echo {
        assert!(
            ip.is_loopback(),
            "e2e: origins bind loopback only, not {ip}"
        );
        let server = TcpServer::start(ip, "echo", |mut s, _peer| {
            let mut buf = vec![0u8; 64 * 1024];
            loop {
                match s.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => {
                        if s.write_all(buf.get(..n).unwrap_or_default()).is_err() {
                            break;
                        }
                    }
                }
            }
        });
        Echo { server }
    }

    /// The listening port.
    pub fn port(&self) -> u16 {
        self.server.addr.port()
    }

    /// The listening address.
    pub fn addr(&self) -> SocketAddr {
        self.server.addr
    }

    /// Peers of every accepted connection, in order.
    pub fn peers(&self) -> Vec<SocketAddr> {
        lock(&self.server.peers).clone()
    }

    /// Connections currently open.
    pub fn open_connections(&self) -> usize {
        lock(&self.server.conns).len()
    }
}
