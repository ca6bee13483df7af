//! What `getpeername` reports for proxied sockets: the destination the program asked for,
//! not the first proxy.
//!
//! Owns: a table indexed by fd whose entries are valid only for the socket inode they name.
//! The program's fd of a proxied socket is found directly; an fd made by `dup`, `dup2`,
//! `dup3`, `fcntl(F_DUPFD*)` finds it by inode (a scan of the used part of the table), and
//! `fork` copies the table; a closed fd whose number is reused by another socket never
//! inherits a stale entry (another socket, another inode) — so no close/dup hook is needed.
//! Memory touched grows with the highest fd used, not with the number of connections.
//! Each slot is a small seqlock: readers never wait; a writer that finds a slot busy skips it
//! (the entry is then simply absent). An entry also records the peer the kernel reports for the
//! socket we connected (the first proxy, or a dnat target): it answers only while the kernel's
//! own getpeername succeeds with that peer, so a socket disconnected (AF_UNSPEC), reconnected
//! elsewhere or whose connect failed gets the kernel's answer, never a stale one.
//! Must never: block, allocate, keep an fd, or answer for a socket it did not proxy. Limit:
//! fds ≥ 65,536 are not tracked (their getpeername shows the first proxy).

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering, fence};

use chainsocks_core::sys::socket_inode as inode;
use libc::c_int;

const SLOTS: usize = 1 << 16;

/// An address in three words: family (4 or 6) << 48 | port << 32 | IPv6 scope id, then the
/// 16 address bytes (IPv4 as v4-mapped).
struct Addr {
    meta: AtomicU64,
    hi: AtomicU64,
    lo: AtomicU64,
}

struct Slot {
    seq: AtomicU64,
    ino: AtomicU64,
    asked: Addr,
    actual: Addr,
}

impl Addr {
    const fn empty() -> Addr {
        Addr {
            meta: AtomicU64::new(0),
            hi: AtomicU64::new(0),
            lo: AtomicU64::new(0),
        }
    }
}

static TABLE: [Slot; SLOTS] = [const {
    Slot {
        seq: AtomicU64::new(0),
        ino: AtomicU64::new(0),
        asked: Addr::empty(),
        actual: Addr::empty(),
    }
}; SLOTS];

fn encode(a: SocketAddr) -> (u64, u64, u64) {
    let (meta, bytes) = match a {
        SocketAddr::V4(a) => (
            (4u64 << 48) | ((a.port() as u64) << 32),
            a.ip().to_ipv6_mapped().octets(),
        ),
        SocketAddr::V6(a) => (
            (6u64 << 48) | ((a.port() as u64) << 32) | a.scope_id() as u64,
            a.ip().octets(),
        ),
    };
    let (hi, lo) = bytes.split_at(8);
    (
        meta,
        u64::from_be_bytes(hi.try_into().unwrap_or_default()),
        u64::from_be_bytes(lo.try_into().unwrap_or_default()),
    )
}

fn decode(meta: u64, hi: u64, lo: u64) -> Option<SocketAddr> {
    let mut bytes = [0u8; 16];
    bytes[..8].copy_from_slice(&hi.to_be_bytes());
    bytes[8..].copy_from_slice(&lo.to_be_bytes());
    let ip6 = std::net::Ipv6Addr::from(bytes);
    let port = (meta >> 32) as u16;
    match meta >> 48 {
        4 => ip6
            .to_ipv4_mapped()
            .map(|v4| SocketAddr::new(v4.into(), port)),
        6 => Some(SocketAddr::V6(std::net::SocketAddrV6::new(
            ip6,
            port,
            0,
            meta as u32,
        ))),
        _ => None,
    }
}

impl Addr {
    fn store(&self, a: SocketAddr) {
        let (m, h, l) = encode(a);
        self.meta.store(m, Ordering::Relaxed);
        self.hi.store(h, Ordering::Relaxed);
        self.lo.store(l, Ordering::Relaxed);
    }

    fn load(&self) -> (u64, u64, u64) {
        (
            self.meta.load(Ordering::Relaxed),
            self.hi.load(Ordering::Relaxed),
            self.lo.load(Ordering::Relaxed),
        )
    }
}

/// Whether any entry was ever written (a process that proxied nothing pays no fstat).
static ANY: AtomicBool = AtomicBool::new(false);
/// One past the highest fd ever recorded: the part of the table a scan reads.
static HIGH: AtomicUsize = AtomicUsize::new(0);

/// Records that the socket behind `fd`, connected to `actual`, is for the program connected to
/// `asked`.
pub fn remember(fd: c_int, asked: SocketAddr, actual: SocketAddr) {
    let Some(ino) = inode(fd) else { return };
    let Some(s) = usize::try_from(fd).ok().and_then(|i| TABLE.get(i)) else {
        return;
    };
    let seq = s.seq.load(Ordering::Relaxed);
    if seq & 1 == 1
        || s.seq
            .compare_exchange(seq, seq + 1, Ordering::Acquire, Ordering::Relaxed)
            .is_err()
    {
        return; // busy: skip rather than wait
    }
    s.ino.store(ino, Ordering::Relaxed);
    s.asked.store(asked);
    s.actual.store(actual);
    s.seq.store(seq + 2, Ordering::Release);
    HIGH.fetch_max(fd as usize + 1, Ordering::Relaxed);
    ANY.store(true, Ordering::Relaxed);
}

/// Whether any socket was ever recorded in this process (nothing to look up otherwise).
pub fn any() -> bool {
    ANY.load(Ordering::Relaxed)
}

/// The destination the program asked for, if `fd`'s socket was proxied and the kernel still
/// reports the peer we connected it to (`real`: the kernel's getpeername answer).
pub fn lookup(fd: c_int, real: SocketAddr) -> Option<SocketAddr> {
    if !any() {
        return None;
    }
    let ino = inode(fd)?;
    let own = usize::try_from(fd).ok().and_then(|i| TABLE.get(i));
    let hit = match own.and_then(|s| read(s, ino)) {
        Some(hit) => Some(hit),
        // Another fd for the same socket (dup): find it by inode.
        None => {
            let high = HIGH.load(Ordering::Relaxed).min(SLOTS);
            TABLE.get(..high)?.iter().find_map(|s| read(s, ino))
        }
    };
    let (asked, actual) = hit?;
    (same_peer(actual, real)).then_some(asked)
}

/// `a` and `b` are the same peer (an IPv4 address and its v4-mapped form are).
fn same_peer(a: SocketAddr, b: SocketAddr) -> bool {
    let norm = |s: SocketAddr| match s {
        SocketAddr::V6(v6) => match v6.ip().to_ipv4_mapped() {
            Some(v4) => (std::net::IpAddr::V4(v4), s.port()),
            None => (s.ip(), s.port()),
        },
        v4 => (v4.ip(), v4.port()),
    };
    norm(a) == norm(b)
}

/// The (asked, actual) addresses in `s` if it is a stable entry for inode `ino`.
fn read(s: &Slot, ino: u64) -> Option<(SocketAddr, SocketAddr)> {
    for _ in 0..4 {
        let before = s.seq.load(Ordering::Acquire);
        if before & 1 == 1 {
            continue;
        }
        let i = s.ino.load(Ordering::Relaxed);
        let (am, ah, al) = s.asked.load();
        let (xm, xh, xl) = s.actual.load();
        fence(Ordering::Acquire);
        if s.seq.load(Ordering::Relaxed) != before {
            continue;
        }
        if i != ino || am == 0 {
            return None;
        }
        return Some((decode(am, ah, al)?, decode(xm, xh, xl)?));
    }
    None
}
