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
//! (the entry is then simply absent).
//! Must never: block, allocate, keep an fd, or answer for a socket it did not proxy. Limit:
//! fds ≥ 65,536 are not tracked (their getpeername shows the first proxy).

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering, fence};

use libc::c_int;

const SLOTS: usize = 1 << 16;

struct Slot {
    seq: AtomicU64,
    ino: AtomicU64,
    /// family (4 or 6) << 48 | port << 32 | IPv6 scope id
    meta: AtomicU64,
    hi: AtomicU64,
    lo: AtomicU64,
}

static TABLE: [Slot; SLOTS] = [const {
    Slot {
        seq: AtomicU64::new(0),
        ino: AtomicU64::new(0),
        meta: AtomicU64::new(0),
        hi: AtomicU64::new(0),
        lo: AtomicU64::new(0),
    }
}; SLOTS];

/// Whether any entry was ever written (a process that proxied nothing pays no fstat).
static ANY: AtomicBool = AtomicBool::new(false);
/// One past the highest fd ever recorded: the part of the table a scan reads.
static HIGH: AtomicUsize = AtomicUsize::new(0);

fn inode(fd: c_int) -> Option<u64> {
    // SAFETY: fstat into zeroed storage.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    (unsafe { libc::fstat(fd, &mut st) } == 0 && st.st_mode & libc::S_IFMT == libc::S_IFSOCK)
        .then_some(st.st_ino)
}

/// Records that the socket behind `fd` is, for the program, connected to `asked`.
pub fn remember(fd: c_int, asked: SocketAddr) {
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
    let (meta, bytes) = match asked {
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
    s.ino.store(ino, Ordering::Relaxed);
    s.meta.store(meta, Ordering::Relaxed);
    s.hi.store(
        u64::from_be_bytes(hi.try_into().unwrap_or_default()),
        Ordering::Relaxed,
    );
    s.lo.store(
        u64::from_be_bytes(lo.try_into().unwrap_or_default()),
        Ordering::Relaxed,
    );
    s.seq.store(seq + 2, Ordering::Release);
    HIGH.fetch_max(fd as usize + 1, Ordering::Relaxed);
    ANY.store(true, Ordering::Relaxed);
}

/// The destination the program asked for, if `fd`'s socket was proxied.
pub fn lookup(fd: c_int) -> Option<SocketAddr> {
    if !ANY.load(Ordering::Relaxed) {
        return None;
    }
    let ino = inode(fd)?;
    let own = usize::try_from(fd).ok().and_then(|i| TABLE.get(i));
    if let Some(hit) = own.and_then(|s| read(s, ino)) {
        return Some(hit);
    }
    // Another fd for the same socket (dup): find it by inode.
    let high = HIGH.load(Ordering::Relaxed).min(SLOTS);
    TABLE.get(..high)?.iter().find_map(|s| read(s, ino))
}

/// The address in `s` if it is a stable entry for inode `ino`.
fn read(s: &Slot, ino: u64) -> Option<SocketAddr> {
    for _ in 0..4 {
        let before = s.seq.load(Ordering::Acquire);
        if before & 1 == 1 {
            continue;
        }
        let (i, meta, hi, lo) = (
            s.ino.load(Ordering::Relaxed),
            s.meta.load(Ordering::Relaxed),
            s.hi.load(Ordering::Relaxed),
            s.lo.load(Ordering::Relaxed),
        );
        fence(Ordering::Acquire);
        if s.seq.load(Ordering::Relaxed) != before {
            continue;
        }
        if i != ino || meta == 0 {
            return None;
        }
        let mut bytes = [0u8; 16];
        bytes[..8].copy_from_slice(&hi.to_be_bytes());
        bytes[8..].copy_from_slice(&lo.to_be_bytes());
        let ip6 = std::net::Ipv6Addr::from(bytes);
        let port = (meta >> 32) as u16;
        return match meta >> 48 {
            4 => ip6
                .to_ipv4_mapped()
                .map(|v4| SocketAddr::new(v4.into(), port)),
            _ => Some(SocketAddr::V6(std::net::SocketAddrV6::new(
                ip6,
                port,
                0,
                meta as u32,
            ))),
        };
    }
    None
}
