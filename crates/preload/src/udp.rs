//! UDP sockets carried through a SOCKS5 association, inside the program: which of its sockets
//! have one, the association's control connection (held by this process), and the framing of
//! every datagram (header added on the way out, stripped on the way in, the source reported as
//! the destination the program used).
//!
//! Owns: a table indexed by fd of associations (valid only for the socket inode they were made
//! for, checked on every use), each a pool entry read under a generation counter (a seqlock:
//! readers copy it out and retry when it changed; entries are never freed, only reused, so a
//! racing reader always reads mapped memory); the control connections (close-on-exec, at
//! fds ≥ [`CTL_MIN_FD`], closed with the socket); the per-socket send cache and the recent
//! destinations that map a reply's source back to what the program sent to.
//! Must never: send a datagram for a proxied destination anywhere but the association's relay,
//! block (a writer that finds an entry busy gives up: EAGAIN), allocate with the program's
//! malloc, or close an fd it does not own (a control fd is closed only while its inode is ours).

use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering, fence};

use chainsocks_core::Error;
use chainsocks_core::config::LogLevel;
use chainsocks_core::connect::Host;
use chainsocks_core::proto::Dest;
use chainsocks_core::proto::socks5::WireAddr;
use chainsocks_core::report::{Event, Kind};
use chainsocks_core::sys;
use chainsocks_core::sys::socket_inode as inode;
use chainsocks_core::udp::{self, MAX_HEADER, UdpPlan};
use libc::c_int;

use crate::state;

/// Control connections are moved to fds at or above this (away from the program's low fds).
pub const CTL_MIN_FD: c_int = 512;
const SLOTS: usize = 1 << 16;
const PTR_BITS: u32 = 48;
const PTR_MASK: u64 = (1 << PTR_BITS) - 1;
const HDR_WORDS: usize = MAX_HEADER.div_ceil(8) + 1;
const RECENT: usize = 8;
/// The largest UDP payload over IPv4.
pub const MAX_UDP_PAYLOAD: usize = 65_507;

/// Whether this process (or its parent before fork) ever made an association: the hot hooks
/// (read, write, recv, send, close) check this first and cost nothing more otherwise.
pub static ANY: AtomicBool = AtomicBool::new(false);

/// fd → (generation low 16 bits << 48 | entry pointer), 0 = none.
static TABLE: [AtomicU64; SLOTS] = [const { AtomicU64::new(0) }; SLOTS];
/// Free pool entries (a Treiber stack: tag << 48 | pointer).
static POOL: AtomicU64 = AtomicU64::new(0);
/// Control fd → the program's socket fd + 1 (0: not a control fd of ours).
static CTL_OWNER: [AtomicU32; SLOTS] = [const { AtomicU32::new(0) }; SLOTS];

/// A socket address in three words (family 4/6 << 48 | port << 32 | scope, then 16 bytes).
#[derive(Default)]
struct AddrWords([AtomicU64; 3]);

impl AddrWords {
    fn store(&self, a: Option<SocketAddr>) {
        let (m, h, l) = match a {
            None => (0, 0, 0),
            Some(SocketAddr::V4(v4)) => {
                let o = v4.ip().to_ipv6_mapped().octets();
                (
                    (4u64 << 48) | ((v4.port() as u64) << 32),
                    u64::from_be_bytes(o[..8].try_into().unwrap_or_default()),
                    u64::from_be_bytes(o[8..].try_into().unwrap_or_default()),
                )
            }
            Some(SocketAddr::V6(v6)) => {
                let o = v6.ip().octets();
                (
                    (6u64 << 48) | ((v6.port() as u64) << 32) | v6.scope_id() as u64,
                    u64::from_be_bytes(o[..8].try_into().unwrap_or_default()),
                    u64::from_be_bytes(o[8..].try_into().unwrap_or_default()),
                )
            }
        };
        self.0[0].store(m, Ordering::Relaxed);
        self.0[1].store(h, Ordering::Relaxed);
        self.0[2].store(l, Ordering::Relaxed);
    }

    fn load(&self) -> Option<SocketAddr> {
        let m = self.0[0].load(Ordering::Relaxed);
        let mut b = [0u8; 16];
        b[..8].copy_from_slice(&self.0[1].load(Ordering::Relaxed).to_be_bytes());
        b[8..].copy_from_slice(&self.0[2].load(Ordering::Relaxed).to_be_bytes());
        let ip6 = std::net::Ipv6Addr::from(b);
        let port = (m >> 32) as u16;
        match m >> 48 {
            4 => ip6
                .to_ipv4_mapped()
                .map(|v4| SocketAddr::new(v4.into(), port)),
            6 => Some(SocketAddr::V6(std::net::SocketAddrV6::new(
                ip6, port, 0, m as u32,
            ))),
            _ => None,
        }
    }
}

/// Up to MAX_HEADER bytes in words (word 0: the length).
struct HdrWords([AtomicU64; HDR_WORDS]);

impl Default for HdrWords {
    fn default() -> Self {
        HdrWords([const { AtomicU64::new(0) }; HDR_WORDS])
    }
}

impl HdrWords {
    fn store(&self, h: &[u8]) {
        self.0[0].store(h.len() as u64, Ordering::Relaxed);
        for (slot, chunk) in self.0.iter().skip(1).zip(h.chunks(8)) {
            let mut w = [0u8; 8];
            for (d, b) in w.iter_mut().zip(chunk) {
                *d = *b;
            }
            slot.store(u64::from_le_bytes(w), Ordering::Relaxed);
        }
    }

    fn load(&self, out: &mut [u8; MAX_HEADER]) -> usize {
        let n = (self.0[0].load(Ordering::Relaxed) as usize).min(MAX_HEADER);
        for (dst, slot) in out
            .get_mut(..n)
            .unwrap_or(&mut [])
            .chunks_mut(8)
            .zip(self.0.iter().skip(1))
        {
            let w = slot.load(Ordering::Relaxed).to_le_bytes();
            for (d, b) in dst.iter_mut().zip(w) {
                *d = b;
            }
        }
        n
    }
}

/// One association (a pool entry, reused, never freed).
#[derive(Default)]
struct Assoc {
    /// Even: stable; odd: being written. Bumped by every change.
    era: AtomicU64,
    /// Held by the one thread changing the entry.
    busy: AtomicBool,
    sock_ino: AtomicU64,
    ctl: AtomicU64,
    ctl_ino: AtomicU64,
    relay: AddrWords,
    /// The destination the socket is connected to (asked), and its header.
    connected: AddrWords,
    connected_hdr: HdrWords,
    /// The last destination sent to on the unconnected socket, and its header (a cache with
    /// its own sequence: odd while written).
    last_seq: AtomicU64,
    last: AddrWords,
    last_hdr: HdrWords,
    /// Recent (asked, fake id + 1 or 0) destinations, to map reply sources back.
    recent_seq: AtomicU64,
    recent: [AddrWords; RECENT],
    recent_id: [AtomicU64; RECENT],
    recent_next: AtomicUsize,
    sent: AtomicU64,
    received: AtomicU64,
    /// The proxy the association goes through (its first address; none for a plain one).
    proxy: AddrWords,
    /// A plain redirect (a program's own DNS to the launch's responder): datagrams go to the
    /// relay as they are, no header; only the source a receive reports is rewritten.
    plain: AtomicBool,
    /// Under --isolate: the proxy's real relay, named in an envelope before every datagram
    /// sent to the launcher's UDP hub (which `relay` is then).
    outer: AddrWords,
    /// Connected through the launcher's hub (which frames): `connected_hdr` only counts.
    hub: AtomicBool,
}

/// A stable copy of an association's fixed part.
#[derive(Debug, Clone, Copy)]
pub struct View {
    pub ctl: c_int,
    pub plain: bool,
    pub hub: bool,
    pub relay: SocketAddr,
    pub outer: Option<SocketAddr>,
    pub connected: Option<SocketAddr>,
    ptr: usize,
    era: u64,
}

fn slot(fd: c_int) -> Option<&'static AtomicU64> {
    usize::try_from(fd).ok().and_then(|i| TABLE.get(i))
}

fn entry(p: usize) -> &'static Assoc {
    // SAFETY: pool entries are leaked boxes, never freed: any pointer taken from the table or
    // the pool stays valid for the rest of the process.
    unsafe { &*(p as *const Assoc) }
}

fn take_from_pool() -> &'static Assoc {
    loop {
        let h = POOL.load(Ordering::Acquire);
        let p = h & PTR_MASK;
        if p == 0 {
            return Box::leak(Box::new(Assoc::default()));
        }
        // Entries are never freed: reading a stale `next` is a read of valid memory; the tag
        // makes our CAS fail then.
        let next = entry(p as usize).ctl_ino.load(Ordering::Relaxed);
        let new = (((h >> PTR_BITS) + 1) << PTR_BITS) | (next & PTR_MASK);
        if POOL
            .compare_exchange_weak(h, new, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
        {
            return entry(p as usize);
        }
    }
}

fn give_to_pool(a: &'static Assoc) {
    let p = a as *const Assoc as u64;
    loop {
        let h = POOL.load(Ordering::Acquire);
        // While pooled, `ctl_ino` links the stack.
        a.ctl_ino.store(h & PTR_MASK, Ordering::Relaxed);
        let new = (((h >> PTR_BITS) + 1) << PTR_BITS) | p;
        if POOL
            .compare_exchange_weak(h, new, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
        {
            return;
        }
    }
}

/// The association of `fd`, if it has one and `fd` is still the socket it was made for.
pub fn lookup(fd: c_int) -> Option<View> {
    if !ANY.load(Ordering::Relaxed) {
        return None;
    }
    let s = slot(fd)?;
    for _ in 0..8 {
        let w = s.load(Ordering::Acquire);
        if w == 0 {
            return None;
        }
        let a = entry((w & PTR_MASK) as usize);
        let g1 = a.era.load(Ordering::Acquire);
        if g1 & 1 == 1 || (g1 & 0xffff) != w >> PTR_BITS {
            continue;
        }
        let v = View {
            ctl: a.ctl.load(Ordering::Relaxed) as c_int,
            plain: a.plain.load(Ordering::Relaxed),
            hub: a.hub.load(Ordering::Relaxed),
            outer: a.outer.load(),
            relay: a.relay.load()?,
            connected: a.connected.load(),
            ptr: (w & PTR_MASK) as usize,
            era: g1,
        };
        let ino = a.sock_ino.load(Ordering::Relaxed);
        fence(Ordering::Acquire);
        if a.era.load(Ordering::Relaxed) != g1 {
            continue;
        }
        // The fd must still be the socket the association was made for (a program may close
        // it by a path we do not see and reuse the number).
        if inode(fd) != Some(ino) {
            retire(fd, w);
            return None;
        }
        return Some(v);
    }
    None
}

impl View {
    fn assoc(&self) -> &'static Assoc {
        entry(self.ptr)
    }

    fn still(&self) -> bool {
        self.assoc().era.load(Ordering::Acquire) == self.era
    }

    /// The header for the connected destination (none when the hub adds it).
    pub fn connected_header(&self, out: &mut [u8; MAX_HEADER]) -> Option<usize> {
        if self.hub {
            return None;
        }
        let n = self.assoc().connected_hdr.load(out);
        (self.still() && n > 0).then_some(n)
    }

    /// Whether a datagram of `len` bytes fits once the hub adds its header (a UDP datagram
    /// carries at most 65,507 bytes over IPv4): EMSGSIZE otherwise, never a truncation.
    pub fn hub_fits(&self, len: usize) -> bool {
        if !self.hub {
            return true;
        }
        let mut h = [0u8; MAX_HEADER];
        len + self.assoc().connected_hdr.load(&mut h) <= MAX_UDP_PAYLOAD
    }

    /// Counts a datagram (for the report at close).
    pub fn count(&self, sent: bool) {
        let a = self.assoc();
        if sent {
            a.sent.fetch_add(1, Ordering::Relaxed);
        } else {
            a.received.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// The cached header for `dest`, if it is the last destination sent to.
    fn cached(&self, dest: SocketAddr, out: &mut [u8; MAX_HEADER]) -> Option<usize> {
        let a = self.assoc();
        let s1 = a.last_seq.load(Ordering::Acquire);
        if s1 & 1 == 1 || a.last.load() != Some(dest) {
            return None;
        }
        let n = a.last_hdr.load(out);
        fence(Ordering::Acquire);
        (a.last_seq.load(Ordering::Relaxed) == s1 && n > 0 && self.still()).then_some(n)
    }

    fn cache(&self, dest: SocketAddr, hdr: &[u8], fake_id: Option<u32>) {
        let a = self.assoc();
        let s = a.last_seq.load(Ordering::Relaxed);
        if s & 1 == 0
            && a.last_seq
                .compare_exchange(s, s + 1, Ordering::Acquire, Ordering::Relaxed)
                .is_ok()
        {
            a.last.store(Some(dest));
            a.last_hdr.store(hdr);
            a.last_seq.store(s + 2, Ordering::Release);
        }
        // Remember it for mapping replies back (unless already there).
        let known = a.recent.iter().any(|r| r.load() == Some(dest));
        if !known {
            let r = a.recent_seq.load(Ordering::Relaxed);
            if r & 1 == 0
                && a.recent_seq
                    .compare_exchange(r, r + 1, Ordering::Acquire, Ordering::Relaxed)
                    .is_ok()
            {
                let i = a.recent_next.fetch_add(1, Ordering::Relaxed) % RECENT;
                if let (Some(r), Some(id)) = (a.recent.get(i), a.recent_id.get(i)) {
                    r.store(Some(dest));
                    id.store(fake_id.map_or(0, |id| id as u64 + 1), Ordering::Relaxed);
                }
                a.recent_seq.store(r + 2, Ordering::Release);
            }
        }
    }

    /// What the program sees as the source of a datagram the relay says came from `from`.
    pub fn source_of(&self, from: &WireAddr, v6_socket: bool) -> SocketAddr {
        if let Some(c) = self.connected {
            return c;
        }
        let a = self.assoc();
        let st = state::get();
        let fake = st.fake.as_ref().and_then(|f| f.as_ref().ok());
        let mut recent = [(None, 0u64); RECENT];
        for _ in 0..4 {
            let s1 = a.recent_seq.load(Ordering::Acquire);
            if s1 & 1 == 1 {
                continue;
            }
            for ((r, addr), id) in recent.iter_mut().zip(&a.recent).zip(&a.recent_id) {
                *r = (addr.load(), id.load(Ordering::Relaxed));
            }
            fence(Ordering::Acquire);
            if a.recent_seq.load(Ordering::Relaxed) == s1 {
                break;
            }
        }
        let port = from.port();
        match from {
            WireAddr::Ip(ip) => {
                let ip = unmap(*ip);
                // A destination the program sent to by address: itself.
                if let Some((Some(d), _)) = recent.iter().find(|(d, _)| d.map(unmap) == Some(ip)) {
                    return *d;
                }
                // The reply to a datagram sent to a name: its fake address, when exactly one
                // name destination has that port.
                let mut named = recent
                    .iter()
                    .filter(|(d, id)| *id != 0 && d.is_some_and(|d| d.port() == port));
                if let (Some((Some(d), _)), None) = (named.next(), named.next()) {
                    return *d;
                }
                present(ip, v6_socket)
            }
            WireAddr::Name(n, _) => {
                let id = fake.and_then(|f| {
                    std::str::from_utf8(n)
                        .ok()
                        .and_then(|s| f.table.find(&s.to_ascii_lowercase()))
                });
                if let Some((Some(d), _)) = recent
                    .iter()
                    .find(|(d, i)| id.is_some_and(|id| *i == id as u64 + 1) && d.is_some())
                {
                    return *d;
                }
                match (id, fake) {
                    (Some(id), Some(f)) => {
                        present(SocketAddr::new(f.ranges.v4_of(id).into(), port), v6_socket)
                    }
                    _ => present(SocketAddr::new(IpAddr::from([0, 0, 0, 0]), port), v6_socket),
                }
            }
        }
    }
}

fn unmap(a: SocketAddr) -> SocketAddr {
    chainsocks_core::connect::unmap(a)
}

/// An address as a socket of this family reports it (IPv4 as v4-mapped on an AF_INET6 socket).
fn present(a: SocketAddr, v6_socket: bool) -> SocketAddr {
    match (a, v6_socket) {
        (SocketAddr::V4(v4), true) => {
            SocketAddr::new(IpAddr::V6(v4.ip().to_ipv6_mapped()), v4.port())
        }
        _ => a,
    }
}

/// Removes `fd`'s association (if the table still holds `w`) and closes its control fd.
fn retire(fd: c_int, w: u64) {
    let Some(s) = slot(fd) else { return };
    if s.compare_exchange(w, 0, Ordering::AcqRel, Ordering::Relaxed)
        .is_err()
    {
        return;
    }
    let a = entry((w & PTR_MASK) as usize);
    let g = a.era.fetch_add(1, Ordering::AcqRel) + 1; // odd: being torn down
    let ctl = a.ctl.load(Ordering::Relaxed) as c_int;
    let ctl_ino = a.ctl_ino.load(Ordering::Relaxed);
    if let Some(o) = usize::try_from(ctl).ok().and_then(|i| CTL_OWNER.get(i)) {
        let _ = o.compare_exchange(fd as u32 + 1, 0, Ordering::AcqRel, Ordering::Relaxed);
    }
    if ctl >= 0 && inode(ctl) == Some(ctl_ino) {
        sys::close(ctl);
    }
    report_close(a);
    a.era.store(g + 1, Ordering::Release);
    give_to_pool(a);
}

/// `close(fd)` (or its replacement by dup2/dup3, or close_range) is about to happen: drop the
/// association of `fd`, and mark as gone any association whose control fd is `fd` (the program
/// closed our fd: the association ended; the next datagram makes a new one).
pub fn forget(fd: c_int) {
    if !ANY.load(Ordering::Relaxed) {
        return;
    }
    if let Some(s) = slot(fd) {
        let w = s.load(Ordering::Acquire);
        if w != 0 {
            retire(fd, w);
        }
    }
    let owner = usize::try_from(fd)
        .ok()
        .and_then(|i| CTL_OWNER.get(i))
        .map_or(0, |o| o.swap(0, Ordering::AcqRel));
    if owner != 0 {
        let sock = (owner - 1) as c_int;
        if let Some(s) = slot(sock) {
            let w = s.load(Ordering::Acquire);
            let a = entry((w & PTR_MASK) as usize);
            if w != 0 && a.ctl.load(Ordering::Relaxed) == fd as u64 {
                // Not ours to close any more (the program is closing it): forget the fd.
                a.ctl.store(u64::MAX, Ordering::Relaxed);
                retire(sock, w);
            }
        }
    }
}

fn report_close(a: &Assoc) {
    let st = state::get();
    if !st.report_enabled() {
        return;
    }
    let _ = a;
}

/// What a send to `dest` on UDP socket `fd` does.
#[allow(clippy::large_enum_variant)] // one per call, on the stack, never stored
pub enum Send {
    /// The kernel, with the program's arguments.
    Real,
    /// The kernel, to this address instead (dnat, a direct name).
    RealTo(SocketAddr),
    /// Framed: this header, to the association's relay.
    Framed {
        view: View,
        hdr: [u8; MAX_HEADER],
        len: usize,
    },
    Fail(Error),
}

/// Decides a datagram to `dest` on `fd`, creating the association if needed.
pub fn prepare_send(fd: c_int, dest: SocketAddr, what: &str) -> Send {
    prepare(fd, dest, what, false)
}

/// [`prepare_send`]; `for_hub`: the socket is about to be connected to the launcher's hub
/// (a new association then names no client port: its datagrams will come from the hub).
fn prepare(fd: c_int, dest: SocketAddr, what: &str, for_hub: bool) -> Send {
    let mut hdr = [0u8; MAX_HEADER];
    if let Some(v) = lookup(fd)
        && let Some(len) = v.cached(dest, &mut hdr)
    {
        return Send::Framed { view: v, hdr, len };
    }
    let st = state::get();
    let cfg = match &st.cfg {
        Ok(c) => c,
        Err(_) => return Send::Real,
    };
    // A program's own DNS (port 53 of a nameserver): to the launch's responder, as it is.
    if let Some(r) = &cfg.dns_redirect {
        let socket = || {
            let domain = sys::getsockopt_int(fd, libc::SOL_SOCKET, libc::SO_DOMAIN).unwrap_or(0);
            (domain, domain == libc::AF_INET6 && sys::v6only(fd))
        };
        if let Some(to) = r.target(dest, libc::SOCK_DGRAM, socket) {
            let view = match lookup(fd) {
                Some(v) if v.plain && v.relay == to => v,
                Some(_) => return Send::Fail(Error::Os(libc::ENETUNREACH)),
                None => match publish(fd, st, None, to, None, true, None) {
                    Ok(v) => v,
                    Err(e) => return Send::Fail(e),
                },
            };
            view.cache(dest, &[], None);
            return Send::Framed { view, hdr, len: 0 };
        }
    }
    let (plan, by) = udp::plan(st, cfg, dest);
    let plan = match plan {
        Ok(p) => p,
        Err(e) => {
            refused(st, what, dest, &e, by.as_deref());
            return Send::Fail(e);
        }
    };
    // The report gets each destination once (the report deduplicates).
    if st.report_enabled() && !unmap(dest).ip().is_loopback() {
        let name = st.fake_name(unmap(dest).ip()).and_then(Result::ok);
        let chain = match &plan {
            UdpPlan::Proxy { chain, .. } => *chain,
            _ => "direct",
        };
        st.report(&Event {
            kind: Kind::Udp,
            name: name.as_deref(),
            ip: if name.is_some() {
                None
            } else {
                Some(unmap(dest).ip())
            },
            port: Some(dest.port()),
            rule: by.as_deref(),
            chain: Some(chain),
            result: "ok",
            ms: None,
        });
    }
    let (proxy, target, chain) = match plan {
        UdpPlan::Direct => return Send::Real,
        UdpPlan::DirectTo(a) => return Send::RealTo(a),
        UdpPlan::Proxy {
            proxy,
            target,
            chain,
        } => (proxy, target, chain),
    };
    let view = match lookup(fd) {
        Some(v) if v.assoc().proxy.load() == proxy.socket_addr() && v.still() => v,
        Some(_) => {
            // One association per socket: a destination routed through another proxy cannot
            // share it (its replies would come from another relay).
            let e = Error::Os(libc::ENETUNREACH);
            st.log(
                LogLevel::Info,
                format_args!(
                    "UDP {what} to {target} refused: the socket's association goes through \
                     another proxy than {proxy} (use one socket per proxy)"
                ),
            );
            return Send::Fail(e);
        }
        None => match create(fd, st, cfg, proxy, &target, chain, for_hub) {
            Ok(v) => v,
            Err(e) => return Send::Fail(e),
        },
    };
    let Some(len) = udp::encode_header(&target, &mut hdr) else {
        return Send::Fail(Error::BadName);
    };
    let fake_id = match &target {
        Dest::Name(..) => st
            .fake
            .as_ref()
            .and_then(|f| f.as_ref().ok())
            .and_then(|f| f.ranges.id_of(unmap(dest).ip())),
        Dest::Ip(_) => None,
    };
    view.cache(dest, hdr.get(..len).unwrap_or(&[]), fake_id);
    Send::Framed { view, hdr, len }
}

/// Logs a refused datagram (at most once a second per process) and records it.
fn refused(st: &state::State, what: &str, dest: SocketAddr, e: &Error, by: Option<&str>) {
    static LAST: AtomicU64 = AtomicU64::new(0);
    let now = chainsocks_core::connect::now_ms();
    let prev = LAST.load(Ordering::Relaxed);
    if now.saturating_sub(prev) >= 1000
        && LAST
            .compare_exchange(prev, now, Ordering::Relaxed, Ordering::Relaxed)
            .is_ok()
    {
        st.log(
            LogLevel::Info,
            format_args!(
                "UDP {what} to {dest} refused: {e} ({})",
                chainsocks_core::error::errno_name(e.errno())
            ),
        );
    }
    if st.report_enabled() {
        let name = st.fake_name(unmap(dest).ip()).and_then(Result::ok);
        st.report(&Event {
            kind: Kind::Udp,
            name: name.as_deref(),
            ip: if name.is_some() {
                None
            } else {
                Some(unmap(dest).ip())
            },
            port: Some(dest.port()),
            rule: by,
            chain: None,
            result: chainsocks_core::error::errno_name(e.errno()),
            ms: None,
        });
    }
}

/// Makes the association of `fd` through `proxy`.
fn create(
    fd: c_int,
    st: &state::State,
    cfg: &chainsocks_core::config::Config,
    proxy: &chainsocks_core::config::Proxy,
    target: &Dest,
    chain: &str,
    for_hub: bool,
) -> Result<View, Error> {
    // Datagrams will come from the socket's own address (bound now if it is not yet, as the
    // kernel would on the first send).
    let local = match sys::local(fd) {
        Ok(a) if a.port() != 0 => a,
        _ => {
            bind_any(fd);
            sys::local(fd).map_err(Error::Os)?
        }
    };
    // Under --isolate the relay is outside the sandbox: the port seen there is another.
    let client_port = if cfg.udp_via.is_some() || for_hub {
        0
    } else {
        local.port()
    };
    let start = std::time::Instant::now();
    let r = udp::associate(st, cfg, proxy, client_port, CTL_MIN_FD, true);
    let assoc = match r {
        Ok(a) => a,
        Err(e) => {
            st.log(
                LogLevel::Info,
                format_args!(
                    "UDP to {target}: no association through {proxy} ({} at {}: {}): datagram \
                     refused ({})",
                    chain,
                    e.phase.name(),
                    e.error,
                    chainsocks_core::error::errno_name(e.error.errno())
                ),
            );
            report_assoc(st, target, proxy, chain, Err(&e.error), start);
            return Err(e.error);
        }
    };
    let v6 = matches!(local, SocketAddr::V6(_));
    // Under --isolate datagrams go to the launcher's in-namespace hub, enveloped.
    let (relay, outer) = match cfg.udp_via.as_ref().and_then(|v| v.parse().ok()) {
        Some(hub) => (present(hub, v6), Some(assoc.relay)),
        None => (present(assoc.relay, v6), None),
    };
    let v = publish(
        fd,
        st,
        Some(assoc.ctl),
        relay,
        proxy.socket_addr(),
        false,
        outer,
    )?;
    if st.sink.enabled(LogLevel::Info) {
        st.log(
            LogLevel::Info,
            format_args!(
                "UDP association through {proxy} (relay {}) for {target}",
                assoc.relay
            ),
        );
    }
    report_assoc(st, target, proxy, chain, Ok(()), start);
    Ok(v)
}

/// Publishes an association of `fd` (through `ctl`, or a plain redirect) in the table.
fn publish(
    fd: c_int,
    st: &state::State,
    ctl: Option<c_int>,
    relay: SocketAddr,
    proxy: Option<SocketAddr>,
    plain: bool,
    outer: Option<SocketAddr>,
) -> Result<View, Error> {
    let _ = st;
    let Some(sock_ino) = inode(fd) else {
        if let Some(c) = ctl {
            sys::close(c);
        }
        return Err(Error::Os(libc::EBADF));
    };
    let a = take_from_pool();
    let g = a.era.load(Ordering::Relaxed) | 1;
    a.era.store(g, Ordering::Release);
    a.sock_ino.store(sock_ino, Ordering::Relaxed);
    a.ctl
        .store(ctl.map_or(u64::MAX, |c| c as u64), Ordering::Relaxed);
    a.ctl_ino
        .store(ctl.and_then(inode).unwrap_or(0), Ordering::Relaxed);
    a.plain.store(plain, Ordering::Relaxed);
    a.hub.store(false, Ordering::Relaxed);
    a.outer.store(outer);
    a.relay.store(Some(relay));
    a.connected.store(None);
    a.connected_hdr.store(&[]);
    a.last.store(None);
    for r in &a.recent {
        r.store(None);
    }
    a.sent.store(0, Ordering::Relaxed);
    a.received.store(0, Ordering::Relaxed);
    a.proxy.store(proxy);
    a.busy.store(false, Ordering::Relaxed);
    let era = g + 1;
    a.era.store(era, Ordering::Release);
    let w = ((era & 0xffff) << PTR_BITS) | (a as *const Assoc as u64);
    let close_ctl = || {
        if let Some(c) = ctl {
            sys::close(c);
        }
    };
    let Some(s) = slot(fd) else {
        close_ctl();
        give_to_pool(a);
        return Err(Error::Os(libc::EMFILE));
    };
    ANY.store(true, Ordering::Release);
    if s.compare_exchange(0, w, Ordering::AcqRel, Ordering::Acquire)
        .is_err()
    {
        // Another thread associated this socket first: use theirs.
        close_ctl();
        give_to_pool(a);
        return lookup(fd).ok_or(Error::Os(libc::EAGAIN));
    }
    if let Some(o) = ctl
        .and_then(|c| usize::try_from(c).ok())
        .and_then(|i| CTL_OWNER.get(i))
    {
        o.store(fd as u32 + 1, Ordering::Release);
    }
    lookup(fd).ok_or(Error::Os(libc::EAGAIN))
}

fn report_assoc(
    st: &state::State,
    target: &Dest,
    proxy: &chainsocks_core::config::Proxy,
    chain: &str,
    r: Result<(), &Error>,
    start: std::time::Instant,
) {
    if !st.report_enabled() {
        return;
    }
    let _ = proxy;
    let (name, ip, port) = match target {
        Dest::Name(n, p) => (Some(n.as_str()), None, *p),
        Dest::Ip(a) => (None, Some(a.ip()), a.port()),
    };
    st.report(&Event {
        kind: Kind::Udp,
        name,
        ip,
        port: Some(port),
        rule: None,
        chain: Some(chain),
        result: match r {
            Ok(()) => "ok",
            Err(e) => chainsocks_core::error::errno_name(e.errno()),
        },
        ms: Some(start.elapsed().as_secs_f64() * 1e3),
    });
}

/// Binds an unbound UDP socket to the wildcard address and an ephemeral port.
fn bind_any(fd: c_int) {
    let v6 = sys::getsockopt_int(fd, libc::SOL_SOCKET, libc::SO_DOMAIN) == Ok(libc::AF_INET6);
    let any: SocketAddr = if v6 {
        SocketAddr::new(IpAddr::from([0u16; 8]), 0)
    } else {
        SocketAddr::new(IpAddr::from([0, 0, 0, 0]), 0)
    };
    let (st, len) = sys::to_sockaddr(&any);
    // SAFETY: a valid address; raw bind.
    unsafe {
        libc::syscall(
            libc::SYS_bind,
            fd as libc::c_long,
            &st as *const libc::sockaddr_storage,
            len as libc::c_long,
        )
    };
}

/// `connect(fd, dest)` on a UDP socket: `None` = not proxied (the caller passes it on);
/// `Some(result)` = done (connected to the relay for a proxied destination).
pub fn connect(fd: c_int, dest: SocketAddr) -> Option<Result<(), Error>> {
    let hub_on = matches!(&state::get().cfg, Ok(c) if c.udp_hub.is_some());
    let (view, hdr, len) = match prepare(fd, dest, "connect", hub_on) {
        s @ (Send::Real | Send::RealTo(_)) => {
            // A socket that had an association now talks direct: the association stays unused;
            // the connected target goes.
            if let Some(v) = lookup(fd) {
                set_connected(fd, &v, None, &[]);
            }
            let Send::RealTo(to) = s else {
                return None;
            };
            let r = sys::connect(fd, &to, true).map_err(Error::Os);
            if r.is_ok() {
                crate::peers::remember(fd, dest, to);
            }
            return Some(r);
        }
        Send::Fail(e) => return Some(Err(e)),
        Send::Framed { view, hdr, len } => (view, hdr, len),
    };
    let hdr = hdr.get(..len).unwrap_or(&[]);
    // With the launcher's hub, a connected socket is registered there and connected to it:
    // the hub frames its datagrams, whatever way the program sends them (raw syscalls too).
    let hub: Option<SocketAddr> = state::get()
        .cfg
        .as_ref()
        .ok()
        .and_then(|c| c.udp_hub.as_ref())
        .and_then(|h| h.parse().ok());
    if let Some(hub) = hub
        && !view.plain
    {
        let v6 = sys::getsockopt_int(fd, libc::SOL_SOCKET, libc::SO_DOMAIN) == Ok(libc::AF_INET6);
        let hub = present(hub, v6);
        let relay = view.outer.unwrap_or(view.relay);
        let reg = udp::hub_registration(unmap(relay), hdr);
        let (to, _) = sys::to_sockaddr(&hub);
        // SAFETY: our registration buffer and a zero-padded address (read the same with the
        // marker length); raw sendto.
        let sent = unsafe {
            libc::syscall(
                libc::SYS_sendto,
                fd as libc::c_long,
                reg.as_ptr(),
                reg.len(),
                libc::MSG_NOSIGNAL as libc::c_long,
                &to as *const libc::sockaddr_storage,
                sys::MARKER_ADDRLEN as libc::c_long,
            )
        };
        if sent < 0 {
            return Some(Err(Error::Os(sys::errno())));
        }
        if let Err(e) = sys::connect(fd, &hub, true) {
            return Some(Err(Error::Os(e)));
        }
        if !set_hubbed(fd, &view, hub, dest, hdr) {
            return Some(Err(Error::Os(libc::EAGAIN)));
        }
        crate::peers::remember(fd, dest, hub);
        return Some(Ok(()));
    }
    if let Err(e) = sys::connect(fd, &view.relay, true) {
        return Some(Err(Error::Os(e)));
    }
    if !set_connected(fd, &view, Some(dest), hdr) {
        return Some(Err(Error::Os(libc::EAGAIN)));
    }
    crate::peers::remember(fd, dest, view.relay);
    Some(Ok(()))
}

/// Turns `fd`'s association into a hub-connected one: datagrams go to the hub as they are
/// (it frames them), and receives only rewrite the source to `dest`.
fn set_hubbed(fd: c_int, v: &View, hub: SocketAddr, dest: SocketAddr, hdr: &[u8]) -> bool {
    rewrite(fd, v, |a| {
        a.plain.store(true, Ordering::Relaxed);
        a.hub.store(true, Ordering::Relaxed);
        a.outer.store(None);
        a.relay.store(Some(hub));
        a.connected.store(Some(dest));
        a.connected_hdr.store(hdr);
    })
}

/// Disconnects (AF_UNSPEC): the association stays, the connected target goes.
pub fn disconnected(fd: c_int) {
    if let Some(v) = lookup(fd) {
        set_connected(fd, &v, None, &[]);
    }
}

fn set_connected(fd: c_int, v: &View, dest: Option<SocketAddr>, hdr: &[u8]) -> bool {
    rewrite(fd, v, |a| {
        a.connected.store(dest);
        a.connected_hdr.store(hdr);
    })
}

/// Changes the association `v` was read from, as a writer of its sequence lock: false when
/// another writer holds it or it changed since `v` (the caller's view is stale). Readers see
/// the old state or the new one, never a mix; the table slot gets the new generation.
fn rewrite(fd: c_int, v: &View, change: impl FnOnce(&Assoc)) -> bool {
    let a = v.assoc();
    if a.busy.swap(true, Ordering::Acquire) {
        return false;
    }
    let g = a.era.load(Ordering::Relaxed);
    if g != v.era {
        a.busy.store(false, Ordering::Release);
        return false;
    }
    a.era.store(g + 1, Ordering::Release);
    change(a);
    a.era.store(g + 2, Ordering::Release);
    // Publish the new generation in the table slot.
    if let Some(s) = slot(fd) {
        let w = s.load(Ordering::Relaxed);
        if w & PTR_MASK == v.ptr as u64 {
            let nw = (((g + 2) & 0xffff) << PTR_BITS) | v.ptr as u64;
            let _ = s.compare_exchange(w, nw, Ordering::AcqRel, Ordering::Relaxed);
        }
    }
    a.busy.store(false, Ordering::Release);
    true
}

// ---- the data path --------------------------------------------------------------------------

/// Sends one datagram: `hdr` then the program's `iov`, to the relay (`to = None` on a socket
/// connected to it). The payload length sent (the kernel's count without our header).
///
/// # Safety
/// `iov` points to `iovlen` valid iovecs; `control` is the program's (or null).
pub unsafe fn send_framed(
    fd: c_int,
    view: &View,
    hdr: &[u8],
    iov: *const libc::iovec,
    iovlen: usize,
    control: (*mut libc::c_void, usize),
    flags: c_int,
) -> Result<usize, c_int> {
    if iovlen >= 1024 {
        return Err(libc::EMSGSIZE);
    }
    let mut env = [0u8; udp::MAX_ENVELOPE];
    let env_len = view.outer.map_or(0, |r| udp::envelope(r, &mut env));
    let mut vec: Vec<libc::iovec> = Vec::with_capacity(iovlen + 2);
    if env_len > 0 {
        vec.push(libc::iovec {
            iov_base: env.as_mut_ptr().cast(),
            iov_len: env_len,
        });
    }
    vec.push(libc::iovec {
        iov_base: hdr.as_ptr() as *mut libc::c_void,
        iov_len: hdr.len(),
    });
    for i in 0..iovlen {
        // SAFETY: iovlen valid iovecs (contract).
        vec.push(unsafe { *iov.add(i) });
    }
    let (name, namelen) = sys::to_sockaddr(&view.relay);
    // SAFETY: all-zero is a valid msghdr.
    let mut m: libc::msghdr = unsafe { std::mem::zeroed() };
    if view.connected.is_none() {
        m.msg_name = &name as *const libc::sockaddr_storage as *mut libc::c_void;
        m.msg_namelen = namelen;
    }
    m.msg_iov = vec.as_mut_ptr();
    m.msg_iovlen = vec.len();
    m.msg_control = control.0;
    m.msg_controllen = control.1;
    // SAFETY: a valid msghdr over our header and the program's buffers.
    let n = unsafe { crate::sock::sendmsg_marked(fd, &m, flags | libc::MSG_NOSIGNAL) };
    if n < 0 {
        return Err(sys::errno());
    }
    view.count(true);
    Ok((n as usize).saturating_sub(hdr.len() + env_len))
}

/// One received datagram, as the program must see it.
pub struct Received {
    /// Payload bytes (with MSG_TRUNC in the flags asked: the whole payload's length).
    pub len: usize,
    pub from: SocketAddr,
    /// The kernel's msg_flags.
    pub flags: c_int,
    pub controllen: usize,
}

/// Receives one datagram from the relay into the program's `iov`, strips the header and tells
/// where the program must think it came from. A datagram from anywhere else (an unconnected
/// socket is reachable by anyone) is passed on unchanged; a malformed or fragmented one from
/// the relay is dropped and the next one read (EAGAIN if none is waiting on a non-blocking
/// call).
///
/// # Safety
/// `iov` points to `iovlen` valid, writable iovecs; `control` is the program's (or null).
pub unsafe fn recv_framed(
    fd: c_int,
    view: &View,
    iov: *const libc::iovec,
    iovlen: usize,
    control: (*mut libc::c_void, usize),
    flags: c_int,
) -> Result<Received, c_int> {
    if iovlen >= 1024 {
        return Err(libc::EMSGSIZE);
    }
    let v6 = matches!(view.relay, SocketAddr::V6(_));
    if view.plain {
        // SAFETY: the program's buffers (contract).
        return unsafe { recv_plain(fd, view, iov, iovlen, control, flags) };
    }
    let guess = match view.connected {
        Some(SocketAddr::V6(a)) if a.ip().to_ipv4_mapped().is_none() => 22,
        _ => 10,
    };
    loop {
        let mut hb = [0u8; MAX_HEADER];
        let mut vec: Vec<libc::iovec> = Vec::with_capacity(iovlen + 1);
        vec.push(libc::iovec {
            iov_base: hb.as_mut_ptr().cast(),
            iov_len: guess,
        });
        let mut cap = 0usize;
        for i in 0..iovlen {
            // SAFETY: iovlen valid iovecs (contract).
            let v = unsafe { *iov.add(i) };
            cap += v.iov_len;
            vec.push(v);
        }
        // SAFETY: zeroed storage for the source address; all-zero msghdr.
        let mut name: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
        let mut m: libc::msghdr = unsafe { std::mem::zeroed() };
        m.msg_name = &mut name as *mut libc::sockaddr_storage as *mut libc::c_void;
        m.msg_namelen = size_of::<libc::sockaddr_storage>() as libc::socklen_t;
        m.msg_iov = vec.as_mut_ptr();
        m.msg_iovlen = vec.len();
        m.msg_control = control.0;
        m.msg_controllen = control.1;
        // SAFETY: a valid msghdr over our buffers and the program's; raw recvmsg.
        let n = unsafe {
            libc::syscall(
                libc::SYS_recvmsg,
                fd as libc::c_long,
                &mut m as *mut libc::msghdr,
                flags as libc::c_long,
            )
        };
        if n < 0 {
            return Err(sys::errno());
        }
        let n = n as usize;
        // SAFETY: the kernel wrote msg_namelen bytes of an address.
        let src = unsafe {
            sys::read_sockaddr(
                (&name as *const libc::sockaddr_storage).cast(),
                m.msg_namelen,
            )
        };
        let whole = if flags & libc::MSG_TRUNC != 0 {
            n
        } else {
            n.min(guess + cap)
        };
        let from_relay = src.map(unmap) == Some(unmap(view.relay));
        // The bytes that arrived, as one sequence: hb[..guess] then the program's buffers.
        let got = n.min(guess + cap);
        // The first `limit` bytes of what arrived, as one sequence: hb[..guess], then the
        // program's buffers.
        let gather = |limit: usize| -> Vec<u8> {
            let want = got.min(limit);
            let mut out = Vec::with_capacity(want);
            out.extend_from_slice(hb.get(..guess.min(want)).unwrap_or(&[]));
            for v in vec.iter().skip(1) {
                let k = (want - out.len()).min(v.iov_len);
                if k == 0 {
                    break;
                }
                // SAFETY: the kernel wrote at least `k` bytes into this program buffer.
                out.extend_from_slice(unsafe {
                    std::slice::from_raw_parts(v.iov_base as *const u8, k)
                });
            }
            out
        };
        if !from_relay {
            // Not from the relay: the datagram as it came.
            let all = gather(usize::MAX);
            // SAFETY: scattering back into the program's buffers (cap bytes).
            let wrote = unsafe { scatter(&all, iov, iovlen) };
            let from = src.unwrap_or_else(|| SocketAddr::new(IpAddr::from([0, 0, 0, 0]), 0));
            let len = if flags & libc::MSG_TRUNC != 0 {
                n
            } else {
                wrote
            };
            let mut f = m.msg_flags;
            if all.len() > cap {
                f |= libc::MSG_TRUNC;
            }
            return Ok(Received {
                len,
                from,
                flags: f,
                controllen: m.msg_controllen,
            });
        }
        // From the relay: the header must be whole in what arrived.
        let Some((wire, used)) = udp::parse_header(&gather(MAX_HEADER)) else {
            // Malformed or fragmented: drop it (consume a peeked one) and read the next.
            if flags & libc::MSG_PEEK != 0 {
                let mut b = [0u8; 1];
                let _ = sys::recv(fd, &mut b, libc::MSG_DONTWAIT);
            }
            if flags & libc::MSG_DONTWAIT != 0
                || sys::get_fl(fd).is_ok_and(|f| f & libc::O_NONBLOCK != 0)
            {
                // Non-blocking: read on only if another datagram is already waiting.
                let mut p = [libc::pollfd {
                    fd,
                    events: libc::POLLIN,
                    revents: 0,
                }];
                if sys::poll(&mut p, 0, None) != Ok(1) {
                    return Err(libc::EAGAIN);
                }
            }
            continue;
        };
        view.count(false);
        let from = view.source_of(&wire, v6);
        let payload_len = whole.saturating_sub(used);
        if used != guess {
            // The payload is not where the program's buffers begin: move it there.
            let all = gather(usize::MAX);
            // SAFETY: scattering into the program's buffers (cap bytes).
            unsafe { scatter(all.get(used..).unwrap_or(&[]), iov, iovlen) };
        }
        let mut f = m.msg_flags;
        if got.saturating_sub(used) > cap {
            f |= libc::MSG_TRUNC;
        }
        let len = if flags & libc::MSG_TRUNC != 0 {
            payload_len
        } else {
            payload_len.min(cap)
        };
        return Ok(Received {
            len,
            from,
            flags: f,
            controllen: m.msg_controllen,
        });
    }
}

/// A receive on a plain redirect: the datagram as it came, its source reported as the
/// destination the program used (its nameserver) when it came from the relay.
///
/// # Safety
/// As [`recv_framed`].
unsafe fn recv_plain(
    fd: c_int,
    view: &View,
    iov: *const libc::iovec,
    iovlen: usize,
    control: (*mut libc::c_void, usize),
    flags: c_int,
) -> Result<Received, c_int> {
    // SAFETY: zeroed storage; all-zero msghdr.
    let mut name: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
    let mut m: libc::msghdr = unsafe { std::mem::zeroed() };
    m.msg_name = &mut name as *mut libc::sockaddr_storage as *mut libc::c_void;
    m.msg_namelen = size_of::<libc::sockaddr_storage>() as libc::socklen_t;
    m.msg_iov = iov as *mut libc::iovec;
    m.msg_iovlen = iovlen;
    m.msg_control = control.0;
    m.msg_controllen = control.1;
    // SAFETY: the program's buffers; raw recvmsg.
    let n = unsafe {
        libc::syscall(
            libc::SYS_recvmsg,
            fd as libc::c_long,
            &mut m as *mut libc::msghdr,
            flags as libc::c_long,
        )
    };
    if n < 0 {
        return Err(sys::errno());
    }
    // SAFETY: the kernel wrote msg_namelen bytes of an address.
    let src = unsafe {
        sys::read_sockaddr(
            (&name as *const libc::sockaddr_storage).cast(),
            m.msg_namelen,
        )
    };
    let from = match src {
        Some(s) if unmap(s) == unmap(view.relay) => view
            .connected
            .or_else(|| view.assoc().last.load())
            .unwrap_or(s),
        Some(s) => s,
        None => SocketAddr::new(IpAddr::from([0, 0, 0, 0]), 0),
    };
    Ok(Received {
        len: n as usize,
        from,
        flags: m.msg_flags,
        controllen: m.msg_controllen,
    })
}

/// Copies `data` into the iovecs (as much as fits); the bytes written.
///
/// # Safety
/// `iov` points to `iovlen` valid, writable iovecs.
unsafe fn scatter(data: &[u8], iov: *const libc::iovec, iovlen: usize) -> usize {
    let mut off = 0;
    for i in 0..iovlen {
        // SAFETY: contract.
        let v = unsafe { *iov.add(i) };
        let k = (data.len() - off).min(v.iov_len);
        // SAFETY: k ≤ the buffer's length; data and the program's buffer may overlap only when
        // the data was gathered from it into our own Vec first (it was).
        unsafe { std::ptr::copy(data.as_ptr().add(off), v.iov_base as *mut u8, k) };
        off += k;
        if off == data.len() {
            break;
        }
    }
    off
}
