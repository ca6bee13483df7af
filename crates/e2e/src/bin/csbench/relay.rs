//! In-process servers of the benchmark: [`DelayRelay`] (a TCP forwarder that holds every chunk
//! `D` ms in each direction: this kernel has no netem), [`BulkSource`] (sends what it is
//! asked for) and [`UdpBenchEcho`] (a UDP echo that only counts senders: the harness's
//! `UdpEcho` looks each sender up in /proc, too slow for a datagram benchmark).
//!
//! Both bind 127.0.0.1 only and run on threads of the benchmark process, which is already in
//! its private network namespace (`e2e::netns()` on the main thread first).
//!
//! The relay model: a chunk read at time t is written on at t + D (reads go on meanwhile, so
//! the link is a delay line, not a serialiser). A user-space forwarder cannot delay a TCP
//! handshake: connecting to a relay completes at loopback speed, and the relay connects to its
//! target when it accepts. What a link costs is therefore the data crossing it, D per
//! crossing; see `b2_limits` in main.rs for what that means for the physical limits.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, Shutdown, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

fn set_int(fd: i32, level: i32, opt: i32, v: i32) {
    // SAFETY: setsockopt with an int value on a descriptor we hold.
    unsafe {
        libc::setsockopt(
            fd,
            level,
            opt,
            (&v as *const i32).cast(),
            std::mem::size_of::<i32>() as libc::socklen_t,
        )
    };
}

/// Counters of a relay (for the report: the real hold time, first-chunk sizes).
#[derive(Default)]
pub struct RelayStats {
    /// Sum of (actual write time − read time) over all chunks, ns; and the chunk count.
    pub held_ns: AtomicU64,
    pub chunks: AtomicU64,
    /// Size of the first chunk each accepted connection sent upstream → downstream.
    pub first_chunks: Mutex<Vec<usize>>,
}

/// A delay line in front of `target`.
pub struct DelayRelay {
    port: u16,
    stop: Arc<AtomicBool>,
    listener: Arc<TcpListener>,
    thread: Option<JoinHandle<()>>,
    pub stats: Arc<RelayStats>,
}

impl DelayRelay {
    pub fn start(target: SocketAddr, delay: Duration) -> Result<DelayRelay, String> {
        let listener =
            TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).map_err(|e| format!("relay: bind: {e}"))?;
        let port = listener
            .local_addr()
            .map_err(|e| format!("relay: {e}"))?
            .port();
        let listener = Arc::new(listener);
        let stop = Arc::new(AtomicBool::new(false));
        let stats = Arc::new(RelayStats::default());
        let (l2, stop2, stats2) = (listener.clone(), stop.clone(), stats.clone());
        let thread = std::thread::Builder::new()
            .name("delay-relay".into())
            .spawn(move || {
                loop {
                    let up = match l2.accept() {
                        Ok((s, _)) => s,
                        Err(_) if stop2.load(Ordering::SeqCst) => break,
                        Err(_) => {
                            std::thread::sleep(Duration::from_millis(5));
                            continue;
                        }
                    };
                    if stop2.load(Ordering::SeqCst) {
                        break;
                    }
                    let stats = stats2.clone();
                    let _ = std::thread::Builder::new()
                        .name("relay-conn".into())
                        .spawn(move || serve(up, target, delay, &stats));
                }
            })
            .map_err(|e| format!("relay: spawn: {e}"))?;
        Ok(DelayRelay {
            port,
            stop,
            listener,
            thread: Some(thread),
            stats,
        })
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// Mean time a chunk was actually held (ms), and how many chunks.
    pub fn mean_hold_ms(&self) -> (f64, u64) {
        let n = self.stats.chunks.load(Ordering::Relaxed);
        let ns = self.stats.held_ns.load(Ordering::Relaxed);
        (
            if n == 0 {
                0.0
            } else {
                ns as f64 / n as f64 / 1e6
            },
            n,
        )
    }

    pub fn first_chunks(&self) -> Vec<usize> {
        self.stats
            .first_chunks
            .lock()
            .map(|v| v.clone())
            .unwrap_or_default()
    }

    pub fn clear_first_chunks(&self) {
        if let Ok(mut v) = self.stats.first_chunks.lock() {
            v.clear();
        }
    }
}

impl Drop for DelayRelay {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // SAFETY: the listener is alive; shutdown wakes the blocked accept.
        unsafe { libc::shutdown(self.listener.as_raw_fd(), libc::SHUT_RDWR) };
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn serve(up: TcpStream, target: SocketAddr, delay: Duration, stats: &Arc<RelayStats>) {
    let Ok(down) = TcpStream::connect(target) else {
        return;
    };
    for s in [&up, &down] {
        let _ = s.set_nodelay(true);
    }
    let (Ok(up2), Ok(down2)) = (up.try_clone(), down.try_clone()) else {
        return;
    };
    let s2 = stats.clone();
    let a = std::thread::spawn(move || pump(up, down, delay, &s2, true));
    pump(down2, up2, delay, stats, false);
    let _ = a.join();
}

/// One direction: a reader that stamps chunks and a writer that sends each at stamp + delay.
fn pump(from: TcpStream, to: TcpStream, delay: Duration, stats: &Arc<RelayStats>, upstream: bool) {
    let (tx, rx) = mpsc::channel::<Option<(Instant, Vec<u8>)>>();
    let stats_w = stats.clone();
    let (Ok(from_w), Ok(to_r)) = (from.try_clone(), to.try_clone()) else {
        return;
    };
    let writer = std::thread::spawn(move || {
        // Sleep precisely: no timer slack for this thread.
        // SAFETY: prctl with plain integers.
        unsafe { libc::prctl(libc::PR_SET_TIMERSLACK, 1 as libc::c_ulong, 0, 0, 0) };
        let mut to = to;
        while let Ok(Some((at, data))) = rx.recv() {
            let due = at + delay;
            let now = Instant::now();
            if due > now {
                std::thread::sleep(due - now);
            }
            if to.write_all(&data).is_err() {
                let _ = from_w.shutdown(Shutdown::Both);
                let _ = to.shutdown(Shutdown::Both);
                return;
            }
            stats_w
                .held_ns
                .fetch_add(at.elapsed().as_nanos() as u64, Ordering::Relaxed);
            stats_w.chunks.fetch_add(1, Ordering::Relaxed);
        }
        let _ = to.shutdown(Shutdown::Write);
    });
    let mut from = from;
    let mut buf = vec![0u8; 64 * 1024];
    let mut first = upstream;
    loop {
        match from.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                let at = Instant::now();
                // ACK at once: a proxy's second small write must not wait for a delayed ACK
                // (Nagle) of this hop.
                set_int(from.as_raw_fd(), libc::IPPROTO_TCP, libc::TCP_QUICKACK, 1);
                if first {
                    first = false;
                    if let Ok(mut v) = stats.first_chunks.lock() {
                        v.push(n);
                    }
                }
                if tx
                    .send(Some((at, buf.get(..n).unwrap_or_default().to_vec())))
                    .is_err()
                {
                    break;
                }
            }
        }
    }
    let _ = tx.send(None);
    let _ = writer.join();
    drop(to_r);
}

/// Sends what each connection asks for: per request a little-endian u64 N, answered with N
/// bytes, until the client closes.
pub struct BulkSource {
    port: u16,
    stop: Arc<AtomicBool>,
    listener: Arc<TcpListener>,
    thread: Option<JoinHandle<()>>,
}

impl BulkSource {
    pub fn start() -> Result<BulkSource, String> {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
            .map_err(|e| format!("source: bind: {e}"))?;
        let port = listener
            .local_addr()
            .map_err(|e| format!("source: {e}"))?
            .port();
        let listener = Arc::new(listener);
        let stop = Arc::new(AtomicBool::new(false));
        let (l2, stop2) = (listener.clone(), stop.clone());
        let thread = std::thread::Builder::new()
            .name("bulk-source".into())
            .spawn(move || {
                loop {
                    let s = match l2.accept() {
                        Ok((s, _)) => s,
                        Err(_) if stop2.load(Ordering::SeqCst) => break,
                        Err(_) => {
                            std::thread::sleep(Duration::from_millis(5));
                            continue;
                        }
                    };
                    if stop2.load(Ordering::SeqCst) {
                        break;
                    }
                    let _ = std::thread::Builder::new()
                        .name("bulk-conn".into())
                        .spawn(move || send_bulk(s));
                }
            })
            .map_err(|e| format!("source: spawn: {e}"))?;
        Ok(BulkSource {
            port,
            stop,
            listener,
            thread: Some(thread),
        })
    }

    pub fn port(&self) -> u16 {
        self.port
    }
}

impl Drop for BulkSource {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // SAFETY: the listener is alive; shutdown wakes the blocked accept.
        unsafe { libc::shutdown(self.listener.as_raw_fd(), libc::SHUT_RDWR) };
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn send_bulk(mut s: TcpStream) {
    let block: Vec<u8> = (0..1usize << 20).map(|i| (i * 7 + 3) as u8).collect();
    let mut n = [0u8; 8];
    // Each request: a little-endian u64 count, answered with that many bytes; EOF ends.
    while s.read_exact(&mut n).is_ok() {
        let mut left = u64::from_le_bytes(n);
        while left > 0 {
            let k = left.min(block.len() as u64) as usize;
            if s.write_all(block.get(..k).unwrap_or_default()).is_err() {
                return;
            }
            left -= k as u64;
        }
    }
}

/// A UDP echo on 127.0.0.1: every datagram goes back to its sender at once; the count per
/// sender address is all it records.
pub struct UdpBenchEcho {
    port: u16,
    stop: Arc<AtomicBool>,
    senders: Arc<Mutex<BTreeMap<IpAddr, u64>>>,
    thread: Option<JoinHandle<()>>,
}

impl UdpBenchEcho {
    pub fn start() -> Result<UdpBenchEcho, String> {
        let sock =
            UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).map_err(|e| format!("udp echo: {e}"))?;
        let port = sock
            .local_addr()
            .map_err(|e| format!("udp echo: {e}"))?
            .port();
        // Big buffers (forced: we are root), so a window of datagrams is never dropped here;
        // a short timeout, so the thread sees `stop`.
        for opt in [libc::SO_RCVBUFFORCE, libc::SO_SNDBUFFORCE] {
            set_int(sock.as_raw_fd(), libc::SOL_SOCKET, opt, 4 << 20);
        }
        let _ = sock.set_read_timeout(Some(Duration::from_millis(50)));
        let stop = Arc::new(AtomicBool::new(false));
        let senders: Arc<Mutex<BTreeMap<IpAddr, u64>>> = Arc::default();
        let (stop2, senders2) = (stop.clone(), senders.clone());
        let thread = std::thread::Builder::new()
            .name("udp-echo".into())
            .spawn(move || {
                let mut buf = vec![0u8; 65536];
                while !stop2.load(Ordering::SeqCst) {
                    if let Ok((n, peer)) = sock.recv_from(&mut buf) {
                        let _ = sock.send_to(buf.get(..n).unwrap_or_default(), peer);
                        if let Ok(mut m) = senders2.lock() {
                            *m.entry(peer.ip()).or_insert(0) += 1;
                        }
                    }
                }
            })
            .map_err(|e| format!("udp echo: spawn: {e}"))?;
        Ok(UdpBenchEcho {
            port,
            stop,
            senders,
            thread: Some(thread),
        })
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// Datagrams received so far per sender address.
    pub fn senders(&self) -> BTreeMap<IpAddr, u64> {
        self.senders.lock().map(|m| m.clone()).unwrap_or_default()
    }
}

impl Drop for UdpBenchEcho {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
