//! In-process UDP origins: [`UdpSink`] (records every datagram, answers nothing: DNS-leak
//! tests) and [`UdpEcho`] (echoes every datagram back to its sender and records, for each,
//! the process that sent it: pid and `comm`, found at receive time through /proc, see
//! [`crate::procnet`]). The echo is how a test proves a datagram went through the proxy
//! (sender `danted`, `ss-server`) and not direct (sender `python3`, `csudp`).
//!
//! Owns: one UDP socket per handle, bound to a loopback address (free port unless given),
//! with a listener thread, and what it records.
//! Never does: bind a non-loopback address, answer anyone but the sender, or outlive its
//! handle (dropping it stops the thread).
//!
//! Facts:
//! - Start them on the test's thread after [`crate::netns`]: the listener thread inherits
//!   the namespace, and the owner lookup reads that namespace's socket table.
//! - `count()` / `datagrams()` are exact: they first take whatever is still queued (the
//!   thread may take some concurrently; each datagram is handled exactly once either way),
//!   so every datagram whose `sendto` returned before the call is counted (loopback delivery
//!   is synchronous). Datagrams are recorded in the order they were queued: taking one and
//!   handling it happen under one lock, whoever takes it.
//! - The echo looks the owner up BEFORE it answers, so a client that waits for its echoes
//!   is always found; one that sends and exits at once may be gone by then (sender `?`). Owners are cached by socket
//!   inode, so only the first datagram from a socket costs a /proc scan (a few ms).
//! - Both sockets get 4 MiB buffers (SO_RCVBUFFORCE: we are root), so bursts are not dropped
//!   at the origin.

use crate::clientsys::poll_one;
use crate::origin::lock;
use crate::procnet::{Owner, udp_owner};
use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, UdpSocket};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

/// What a listener does with each datagram: (its socket, sender, payload).
type OnDatagram = Arc<dyn Fn(&UdpSocket, SocketAddr, &[u8]) + Send + Sync>;

/// Shared plumbing: a bound socket and the thread that feeds `on`.
struct Listener {
    addr: SocketAddr,
    sock: Arc<UdpSocket>,
    on: OnDatagram,
    /// Held from taking a datagram off the socket until it is handled.
    take: Arc<Mutex<()>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Listener {
    fn start(addr: SocketAddr, what: &str, on: OnDatagram) -> Listener {
        assert!(
            addr.ip().is_loopback(),
            "e2e: origins bind loopback only, not {addr}"
        );
        let sock = match UdpSocket::bind(addr) {
            Ok(s) => s,
            Err(e) => panic!("e2e: {what}: cannot bind {addr} (did you call netns()?): {e}"),
        };
        let addr = match sock.local_addr() {
            Ok(a) => a,
            Err(e) => panic!("e2e: {what}: local_addr: {e}"),
        };
        grow_buffers(&sock);
        let sock = Arc::new(sock);
        let stop = Arc::new(AtomicBool::new(false));
        let take: Arc<Mutex<()>> = Arc::default();
        let (sock2, on2, stop2, take2) = (sock.clone(), on.clone(), stop.clone(), take.clone());
        let thread = std::thread::Builder::new()
            .name(format!("e2e-{what}"))
            .spawn(move || {
                let mut buf = vec![0u8; 65536];
                while !stop2.load(Ordering::SeqCst) {
                    if poll_one(sock2.as_raw_fd(), libc::POLLIN, 50).is_err() {
                        continue;
                    }
                    let _taking = lock(&take2);
                    if let Some((n, peer)) = try_recv(&sock2, &mut buf) {
                        on2(&sock2, peer, buf.get(..n).unwrap_or_default());
                    }
                }
            });
        let thread = match thread {
            Ok(t) => t,
            Err(e) => panic!("e2e: {what}: spawn: {e}"),
        };
        Listener {
            addr,
            sock,
            on,
            take,
            stop,
            thread: Some(thread),
        }
    }

    /// Handles the datagrams still queued, without blocking.
    fn drain(&self) {
        let mut buf = vec![0u8; 65536];
        let _taking = lock(&self.take);
        while let Some((n, peer)) = try_recv(&self.sock, &mut buf) {
            (self.on)(&self.sock, peer, buf.get(..n).unwrap_or_default());
        }
    }
}

impl Drop for Listener {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// One queued datagram without blocking (`MSG_DONTWAIT`): its length and sender; `None` when
/// nothing is queued.
fn try_recv(sock: &UdpSocket, buf: &mut [u8]) -> Option<(usize, SocketAddr)> {
    // SAFETY: all-zero sockaddr_storage is valid; recvfrom writes at most `len` bytes into it
    // and at most buf.len() bytes into buf.
    let (n, ss) = unsafe {
        let mut ss: libc::sockaddr_storage = std::mem::zeroed();
        let mut len = std::mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
        let n = libc::recvfrom(
            sock.as_raw_fd(),
            buf.as_mut_ptr().cast(),
            buf.len(),
            libc::MSG_DONTWAIT,
            (&mut ss as *mut libc::sockaddr_storage).cast(),
            &mut len,
        );
        (n, ss)
    };
    let n = usize::try_from(n).ok()?;
    let peer = sockaddr_of(&ss).or_else(|| sock.local_addr().ok())?;
    Some((n.min(buf.len()), peer))
}

/// The address in a `sockaddr_storage` filled by the kernel (IPv4 or IPv6).
fn sockaddr_of(ss: &libc::sockaddr_storage) -> Option<SocketAddr> {
    match ss.ss_family as i32 {
        libc::AF_INET => {
            // SAFETY: the kernel wrote a sockaddr_in (family says so); storage is big enough.
            let sin =
                unsafe { &*(ss as *const libc::sockaddr_storage).cast::<libc::sockaddr_in>() };
            let ip = Ipv4Addr::from(u32::from_be(sin.sin_addr.s_addr));
            Some(SocketAddr::from((ip, u16::from_be(sin.sin_port))))
        }
        libc::AF_INET6 => {
            // SAFETY: as above, a sockaddr_in6.
            let sin6 =
                unsafe { &*(ss as *const libc::sockaddr_storage).cast::<libc::sockaddr_in6>() };
            let ip = Ipv6Addr::from(sin6.sin6_addr.s6_addr);
            Some(SocketAddr::from((ip, u16::from_be(sin6.sin6_port))))
        }
        _ => None,
    }
}

/// 4 MiB of receive and send buffer (forced: we are root).
fn grow_buffers(sock: &UdpSocket) {
    let size: libc::c_int = 4 << 20;
    for opt in [libc::SO_RCVBUFFORCE, libc::SO_SNDBUFFORCE] {
        // SAFETY: setsockopt with a valid int and its size on a socket we own.
        unsafe {
            libc::setsockopt(
                sock.as_raw_fd(),
                libc::SOL_SOCKET,
                opt,
                (&size as *const libc::c_int).cast(),
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            );
        }
    }
}

// ----------------------------------------------------------------------------------- sink

/// Received datagrams: (sender, payload).
type Datagrams = Arc<Mutex<Vec<(SocketAddr, Vec<u8>)>>>;

/// A UDP socket that records every datagram it receives and answers nothing (for DNS-leak
/// tests).
pub struct UdpSink {
    l: Listener,
    got: Datagrams,
}

impl UdpSink {
    /// On 127.0.0.1:free port.
    pub fn start() -> UdpSink {
        UdpSink::start_on(SocketAddr::from((Ipv4Addr::LOCALHOST, 0)))
    }

    /// On a given loopback address/port (e.g. `127.0.0.1:53` inside a netns to
    /// catch resolver traffic).
    ///
    /// # Panics
    /// If `addr` is not loopback or cannot be bound.
    pub fn start_on(addr: SocketAddr) -> UdpSink {
        let got: Datagrams = Arc::default();
        let got2 = got.clone();
        let on: OnDatagram = Arc::new(move |_sock, peer, payload| {
            lock(&got2).push((peer, payload.to_vec()));
        });
        UdpSink {
            l: Listener::start(addr, "udp-sink", on),
            got,
        }
    }

    /// The bound port.
    pub fn port(&self) -> u16 {
        self.l.addr.port()
    }

    /// The bound address.
    pub fn addr(&self) -> SocketAddr {
        self.l.addr
    }

    /// Number of datagrams received so far (exact, see the module docs).
    pub fn count(&self) -> usize {
        self.l.drain();
        lock(&self.got).len()
    }

    /// Every datagram so far: (sender, payload).
    pub fn datagrams(&self) -> Vec<(SocketAddr, Vec<u8>)> {
        self.l.drain();
        lock(&self.got).clone()
    }
}

// ----------------------------------------------------------------------------------- echo

/// One datagram as the echo saw it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UdpDatagram {
    /// The sender's address.
    pub peer: SocketAddr,
    /// The payload (echoed back unchanged).
    pub payload: Vec<u8>,
    /// `comm` of the process(es) owning the sending socket (`danted`, `ss-server`,
    /// `csudp`, `python3`; several joined by `,`), or `?` if it could not be found.
    pub sender: String,
    /// Their pids (empty if unknown).
    pub pids: Vec<u32>,
}

#[derive(Default)]
struct EchoState {
    got: Vec<UdpDatagram>,
    owners: HashMap<u64, Owner>,
}

/// A UDP echo server on a loopback address that knows which process sent each datagram.
pub struct UdpEcho {
    l: Listener,
    state: Arc<Mutex<EchoState>>,
}

impl UdpEcho {
    /// On 127.0.0.1:free port.
    pub fn start() -> UdpEcho {
        UdpEcho::start_on(IpAddr::V4(Ipv4Addr::LOCALHOST))
    }

    /// On `[::1]`:free port.
    pub fn start_v6() -> UdpEcho {
        UdpEcho::start_on(IpAddr::V6(Ipv6Addr::LOCALHOST))
    }

    /// On `ip` (must be a loopback address), free port.
    ///
    /// # Panics
    /// If `ip` is not loopback or cannot be bound.
    pub fn start_on(ip: IpAddr) -> UdpEcho {
        UdpEcho::start_at(SocketAddr::new(ip, 0))
    }

    /// On a given loopback address and port (port 0: a free one).
    ///
    /// # Panics
    /// If `addr` is not loopback or cannot be bound (did you call `netns()`?).
    pub fn start_at(addr: SocketAddr) -> UdpEcho {
        let state: Arc<Mutex<EchoState>> = Arc::default();
        let state2 = state.clone();
        let on: OnDatagram = Arc::new(move |sock, peer, payload| {
            {
                let mut st = lock(&state2);
                let (sender, pids) = udp_owner(peer, &mut st.owners)
                    .map_or_else(|| ("?".to_string(), Vec::new()), |o| (o.comm, o.pids));
                st.got.push(UdpDatagram {
                    peer,
                    payload: payload.to_vec(),
                    sender,
                    pids,
                });
            }
            let _ = sock.send_to(payload, peer);
        });
        UdpEcho {
            l: Listener::start(addr, "udp-echo", on),
            state,
        }
    }

    /// The bound port.
    pub fn port(&self) -> u16 {
        self.l.addr.port()
    }

    /// The bound address.
    pub fn addr(&self) -> SocketAddr {
        self.l.addr
    }

    /// Number of datagrams received so far (exact, see the module docs).
    pub fn count(&self) -> usize {
        self.l.drain();
        lock(&self.state).got.len()
    }

    /// Every datagram so far, in arrival order.
    pub fn datagrams(&self) -> Vec<UdpDatagram> {
        self.l.drain();
        lock(&self.state).got.clone()
    }

    /// The sender address of every datagram, in arrival order.
    pub fn peers(&self) -> Vec<SocketAddr> {
        self.datagrams().into_iter().map(|d| d.peer).collect()
    }

    /// The sending process's `comm` for every datagram, in arrival order (`?` = unknown).
    pub fn senders(&self) -> Vec<String> {
        self.datagrams().into_iter().map(|d| d.sender).collect()
    }

    /// Polls until at least `n` datagrams arrived or `timeout` passed.
    pub fn wait_count(&self, n: usize, timeout: Duration) -> bool {
        crate::process::wait_until(timeout, || self.count() >= n)
    }
}
