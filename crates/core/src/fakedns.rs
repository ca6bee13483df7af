//! The fake-DNS table: one name ↔ one id ↔ one fake IPv4 and one fake IPv6 address, shared by
//! every thread and process of a launch through memory they all map.
//!
//! Owns: the lock-free algorithm over a slice of `AtomicU64` words (the caller maps them:
//! MAP_SHARED memory for a launch, anything in tests), and the id ↔ address arithmetic.
//! Must never: block or take a lock (a `fork` at any moment must leave a usable table, and a
//! process killed mid-insert must not wedge the others), reuse an id, or hand one id to two
//! names.
//!
//! Layout in words: `[0]` next free id, `[1]` capacity, `[2]` index length (a power of two),
//! then the index (open addressing, linear probing; an entry is `hash32 << 32 | id + 1`,
//! 0 = empty, entries are never removed), then one slot of [`SLOT_WORDS`] per id: word 0 is
//! the name length, then the name bytes (lowercase, no trailing dot), little-endian packed.
//!
//! The thread that takes the first id of a run of [`PREFAULT_IDS`] asks the kernel to map the
//! next run's slots in (`madvise`, a hint: nothing waits on it but the page faults it saves).
//!
//! Insert: take an id with `fetch_add`, write the name into its slot, then publish it with a
//! compare-exchange of an empty index entry (Release). A thread that loses the race to another
//! inserting the same name uses the winner's id; its own slot stays unpublished forever (a
//! bounded waste: only simultaneous first lookups of one name race). A reverse lookup trusts a
//! slot only after finding the index entry that points to it, so unpublished slots never
//! answer.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::atomic::{AtomicU64, Ordering};

use crate::error::Error;

/// Longest name the table holds (bytes).
pub const MAX_NAME: usize = 255;
/// Words per slot: the length word + 256 bytes of name.
pub const SLOT_WORDS: usize = 1 + 32;
/// The most ids a table has (the default /15 holds 131070 host addresses).
pub const MAX_CAPACITY: u32 = 131_070;
const HEADER_WORDS: usize = 3;

/// Every this many ids, the taker of the run's first id maps the slots of the next run in
/// ahead (about 16 pages, one syscall): threads inserting names at once then find their
/// slots' pages mapped instead of each faulting on the same page and waiting for its lock.
const PREFAULT_IDS: u32 = 256;

/// How many words a table of `capacity` ids needs.
pub fn words_for(capacity: u32) -> usize {
    HEADER_WORDS + index_len(capacity) + capacity as usize * SLOT_WORDS
}

fn index_len(capacity: u32) -> usize {
    (capacity as usize * 2).next_power_of_two().max(16)
}

/// The header words of a new, empty table (the rest of the table is zero).
pub fn header(capacity: u32) -> [u64; HEADER_WORDS] {
    [0, capacity as u64, index_len(capacity) as u64]
}

/// A table over words someone else owns (a shared mapping).
pub struct FakeTable<'a> {
    index: &'a [AtomicU64],
    slots: &'a [AtomicU64],
    next: &'a AtomicU64,
    capacity: u32,
}

/// A name in the table's normal form: ASCII lowercase, without a trailing dot.
/// `None` for names no resolver would accept (empty, too long, empty labels, spaces, controls).
pub fn normalize(name: &str) -> Option<String> {
    let n = name.strip_suffix('.').unwrap_or(name);
    if n.is_empty() || n.len() > 253 || n.starts_with('.') || n.ends_with('.') || n.contains("..") {
        return None;
    }
    if n.split('.').any(|label| label.len() > 63) {
        return None;
    }
    if n.bytes()
        .any(|b| b <= b' ' || b == 0x7f || b == b'/' || b == b'\\')
    {
        return None;
    }
    Some(n.to_ascii_lowercase())
}

/// Up to 8 name bytes packed little-endian, zero-padded.
fn word(chunk: &[u8]) -> u64 {
    let mut b = [0u8; 8];
    if let Some(d) = b.get_mut(..chunk.len()) {
        d.copy_from_slice(chunk);
    }
    u64::from_le_bytes(b)
}

fn hash32(name: &[u8]) -> u64 {
    // FNV-1a, 64-bit; the top 32 bits (never 0) tag the index entry.
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in name {
        h ^= b as u64;
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    ((h >> 32) ^ (h & 0xffff_ffff)) | 1
}

impl<'a> FakeTable<'a> {
    /// A view of an initialized table (header written by [`header`], the rest zero).
    pub fn new(words: &'a [AtomicU64]) -> Result<FakeTable<'a>, &'static str> {
        let (hdr, rest) = words
            .split_at_checked(HEADER_WORDS)
            .ok_or("table too small")?;
        let [next, cap, ilen] = hdr else {
            return Err("table too small");
        };
        let capacity = cap.load(Ordering::Relaxed);
        let ilen = ilen.load(Ordering::Relaxed) as usize;
        if capacity == 0 || capacity > MAX_CAPACITY as u64 || ilen != index_len(capacity as u32) {
            return Err("bad table header");
        }
        let (index, slots) = rest.split_at_checked(ilen).ok_or("table too small")?;
        let slots = slots
            .get(..capacity as usize * SLOT_WORDS)
            .ok_or("table too small")?;
        Ok(FakeTable {
            index,
            slots,
            next,
            capacity: capacity as u32,
        })
    }

    pub fn capacity(&self) -> u32 {
        self.capacity
    }

    /// Ids handed out so far (including the rare unpublished ones).
    pub fn used(&self) -> u32 {
        self.next.load(Ordering::Relaxed).min(self.capacity as u64) as u32
    }

    /// The id of a normalized `name`, inserting it if new. `Err(TableFull)` when every id is
    /// taken (never a reuse).
    pub fn id_for(&self, name: &str) -> Result<u32, Error> {
        self.find_or_insert(name.as_bytes(), true)?
            .ok_or(Error::TableFull)
    }

    /// The id of a normalized `name` if it is in the table.
    pub fn find(&self, name: &str) -> Option<u32> {
        self.find_or_insert(name.as_bytes(), false).ok().flatten()
    }

    /// The words of the slots of ids `first..first + count` (cut at the capacity).
    fn slots_of(&self, first: u32, count: u32) -> Option<&'a [AtomicU64]> {
        let end = first.saturating_add(count).min(self.capacity) as usize;
        self.slots
            .get(first as usize * SLOT_WORDS..end * SLOT_WORDS)
            .filter(|s| !s.is_empty())
    }

    /// The name behind `id`, only if it was published.
    pub fn name_of(&self, id: u32) -> Option<String> {
        let name = self.slot_name(id)?;
        (self.find_or_insert(&name, false).ok().flatten() == Some(id))
            .then(|| String::from_utf8(name).ok())
            .flatten()
    }

    fn slot(&self, id: u32) -> Option<&'a [AtomicU64]> {
        let at = id as usize * SLOT_WORDS;
        self.slots.get(at..at + SLOT_WORDS)
    }

    fn slot_name(&self, id: u32) -> Option<Vec<u8>> {
        let slot = self.slot(id)?;
        let (len, words) = slot.split_first()?;
        let len = len.load(Ordering::Acquire) as usize;
        if len == 0 || len > MAX_NAME {
            return None;
        }
        let mut out = Vec::with_capacity(len);
        for w in words {
            out.extend_from_slice(&w.load(Ordering::Relaxed).to_le_bytes());
            if out.len() >= len {
                break;
            }
        }
        out.truncate(len);
        Some(out)
    }

    fn slot_is(&self, id: u32, name: &[u8]) -> bool {
        let Some((len, words)) = self.slot(id).and_then(|s| s.split_first()) else {
            return false;
        };
        if len.load(Ordering::Acquire) as usize != name.len() {
            return false;
        }
        name.chunks(8)
            .zip(words)
            .all(|(chunk, w)| w.load(Ordering::Relaxed) == word(chunk))
    }

    fn write_slot(&self, id: u32, name: &[u8]) -> bool {
        let Some((len, words)) = self.slot(id).and_then(|s| s.split_first()) else {
            return false;
        };
        for (chunk, w) in name.chunks(8).zip(words) {
            w.store(word(chunk), Ordering::Relaxed);
        }
        len.store(name.len() as u64, Ordering::Release);
        true
    }

    fn find_or_insert(&self, name: &[u8], insert: bool) -> Result<Option<u32>, Error> {
        if name.is_empty() || name.len() > MAX_NAME {
            return Ok(None);
        }
        let h = hash32(name);
        let mask = self.index.len() - 1;
        let mut pos = (h as usize) & mask;
        let mut mine: Option<u32> = None; // an id we took and filled, not yet published
        for _ in 0..self.index.len() {
            let Some(cell) = self.index.get(pos) else {
                break;
            };
            let mut e = cell.load(Ordering::Acquire);
            if e == 0 {
                if !insert {
                    return Ok(None);
                }
                let id = match mine {
                    Some(id) => id,
                    None => {
                        let id = self.next.fetch_add(1, Ordering::Relaxed);
                        if id >= self.capacity as u64 {
                            return Err(Error::TableFull);
                        }
                        let id = id as u32;
                        if id.is_multiple_of(PREFAULT_IDS)
                            && let Some(next) = self.slots_of(id + PREFAULT_IDS, PREFAULT_IDS)
                        {
                            crate::sys::populate_write(next);
                        }
                        if !self.write_slot(id, name) {
                            return Err(Error::Internal("fake-DNS slot out of range"));
                        }
                        mine = Some(id);
                        id
                    }
                };
                let entry = (h << 32) | (id as u64 + 1);
                match cell.compare_exchange(0, entry, Ordering::AcqRel, Ordering::Acquire) {
                    Ok(_) => return Ok(Some(id)),
                    Err(now) => e = now,
                }
            }
            let (tag, id1) = (e >> 32, (e & 0xffff_ffff) as u32);
            if tag == h && id1 > 0 && self.slot_is(id1 - 1, name) {
                return Ok(Some(id1 - 1));
            }
            pos = (pos + 1) & mask;
        }
        if insert {
            Err(Error::TableFull)
        } else {
            Ok(None)
        }
    }
}

/// A CIDR network of fake addresses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Net {
    pub addr: IpAddr,
    pub prefix: u8,
}

impl Net {
    pub fn parse(s: &str) -> Result<Net, String> {
        let (a, p) = s
            .split_once('/')
            .ok_or_else(|| format!("`{s}`: expected ADDRESS/PREFIX"))?;
        let addr: IpAddr = a.parse().map_err(|_| format!("`{s}`: bad address `{a}`"))?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix: u8 = p
            .parse()
            .ok()
            .filter(|&n| n <= max)
            .ok_or_else(|| format!("`{s}`: bad prefix"))?;
        Ok(Net {
            addr: mask(addr, prefix),
            prefix,
        })
    }

    pub fn contains(&self, ip: IpAddr) -> bool {
        ip.is_ipv4() == self.addr.is_ipv4() && mask(ip, self.prefix) == self.addr
    }

    /// Host addresses available (network and last address excluded), capped.
    pub fn hosts(&self) -> u64 {
        let bits = if self.addr.is_ipv4() { 32 } else { 128 } - self.prefix as u32;
        if bits >= 40 {
            u64::MAX
        } else {
            (1u64 << bits).saturating_sub(2)
        }
    }

    /// The address at `offset` from the network address.
    fn at(&self, offset: u64) -> IpAddr {
        match self.addr {
            IpAddr::V4(a) => IpAddr::V4(Ipv4Addr::from(u32::from(a).wrapping_add(offset as u32))),
            IpAddr::V6(a) => IpAddr::V6(Ipv6Addr::from(u128::from(a).wrapping_add(offset as u128))),
        }
    }

    fn offset(&self, ip: IpAddr) -> Option<u64> {
        if !self.contains(ip) {
            return None;
        }
        Some(match (ip, self.addr) {
            (IpAddr::V4(i), IpAddr::V4(n)) => (u32::from(i) - u32::from(n)) as u64,
            (IpAddr::V6(i), IpAddr::V6(n)) => {
                u64::try_from(u128::from(i) - u128::from(n)).unwrap_or(u64::MAX)
            }
            _ => return None,
        })
    }
}

impl std::fmt::Display for Net {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

fn mask(ip: IpAddr, prefix: u8) -> IpAddr {
    match ip {
        IpAddr::V4(a) => {
            let m = if prefix == 0 {
                0
            } else {
                u32::MAX << (32 - prefix as u32)
            };
            IpAddr::V4(Ipv4Addr::from(u32::from(a) & m))
        }
        IpAddr::V6(a) => {
            let m = if prefix == 0 {
                0
            } else {
                u128::MAX << (128 - prefix as u32)
            };
            IpAddr::V6(Ipv6Addr::from(u128::from(a) & m))
        }
    }
}

/// The two fake ranges; id `n` is address `n + 1` of each.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FakeRanges {
    pub v4: Net,
    pub v6: Net,
}

impl FakeRanges {
    /// How many ids these ranges (and the table) can hold.
    pub fn capacity(&self) -> u32 {
        self.v4
            .hosts()
            .min(self.v6.hosts())
            .min(MAX_CAPACITY as u64) as u32
    }

    pub fn v4_of(&self, id: u32) -> Ipv4Addr {
        match self.v4.at(id as u64 + 1) {
            IpAddr::V4(a) => a,
            IpAddr::V6(_) => Ipv4Addr::UNSPECIFIED,
        }
    }

    pub fn v6_of(&self, id: u32) -> Ipv6Addr {
        match self.v6.at(id as u64 + 1) {
            IpAddr::V6(a) => a,
            IpAddr::V4(_) => Ipv6Addr::UNSPECIFIED,
        }
    }

    /// Whether `ip` is in a fake range (handed out or not).
    pub fn contains(&self, ip: IpAddr) -> bool {
        self.v4.contains(ip) || self.v6.contains(ip)
    }

    /// The id an address of a fake range stands for, if it is a valid host address.
    pub fn id_of(&self, ip: IpAddr) -> Option<u32> {
        let off = self.v4.offset(ip).or_else(|| self.v6.offset(ip))?;
        let id = off.checked_sub(1)?;
        (id < self.capacity() as u64).then_some(id as u32)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    fn table(cap: u32) -> Vec<AtomicU64> {
        let words: Vec<AtomicU64> = (0..words_for(cap)).map(|_| AtomicU64::new(0)).collect();
        for (w, v) in words.iter().zip(header(cap)) {
            w.store(v, Ordering::Relaxed);
        }
        words
    }

    #[test]
    fn a_name_takes_an_id_once_and_slots_of_stays_in_the_table() {
        let w = table(10);
        let t = FakeTable::new(&w).unwrap();
        assert_eq!(t.id_for("a.test").unwrap(), 0);
        assert_eq!(t.id_for("b.test").unwrap(), 1);
        assert_eq!(t.id_for("a.test").unwrap(), 0);
        assert_eq!(t.used(), 2);
        assert_eq!(t.slots_of(0, 2).unwrap().len(), 2 * SLOT_WORDS);
        assert_eq!(t.slots_of(8, 5).unwrap().len(), 2 * SLOT_WORDS);
        assert!(t.slots_of(10, 1).is_none());
        assert!(t.slots_of(u32::MAX, u32::MAX).is_none());
        // The slot of id 1 holds b.test's length first.
        let s = t.slots_of(1, 1).unwrap();
        assert_eq!(s[0].load(Ordering::Relaxed), 6);
    }

    #[test]
    fn one_name_one_id() {
        let w = table(100);
        let t = FakeTable::new(&w).unwrap();
        let a = t.id_for("example.test").unwrap();
        let b = t.id_for("other.test").unwrap();
        assert_ne!(a, b);
        assert_eq!(t.id_for("example.test").unwrap(), a);
        assert_eq!(t.find("example.test"), Some(a));
        assert_eq!(t.find("nope.test"), None);
        assert_eq!(t.name_of(a).as_deref(), Some("example.test"));
        assert_eq!(t.name_of(b).as_deref(), Some("other.test"));
        assert_eq!(t.name_of(50), None);
        let long =
            "a".repeat(63) + "." + &"b".repeat(63) + "." + &"c".repeat(63) + "." + &"d".repeat(61);
        assert_eq!(long.len(), 253);
        let id = t.id_for(&long).unwrap();
        assert_eq!(t.name_of(id).as_deref(), Some(long.as_str()));
    }

    #[test]
    fn full_table_never_reuses() {
        let w = table(10);
        let t = FakeTable::new(&w).unwrap();
        let ids: Vec<u32> = (0..10)
            .map(|i| t.id_for(&format!("n{i}.test")).unwrap())
            .collect();
        assert_eq!(ids, (0..10).collect::<Vec<_>>());
        assert_eq!(t.id_for("eleven.test"), Err(Error::TableFull));
        assert_eq!(
            t.id_for("n3.test"),
            Ok(3),
            "known names still resolve when full"
        );
    }

    #[test]
    fn normal_form() {
        assert_eq!(normalize("Example.TEST."), Some("example.test".into()));
        assert_eq!(normalize(""), None);
        assert_eq!(normalize("."), None);
        assert_eq!(normalize("a..b"), None);
        assert_eq!(normalize("a.b.."), None, "an empty last label");
        assert_eq!(normalize("has space.test"), None);
        assert_eq!(normalize(&"x".repeat(64)), None);
        assert!(normalize(&"x".repeat(63)).is_some());
    }

    #[test]
    fn concurrent_inserts_agree() {
        // 16 threads × 2000 names, half of them shared by every thread.
        let w = Arc::new(table(MAX_CAPACITY));
        let threads: Vec<_> = (0..16)
            .map(|t| {
                let w = Arc::clone(&w);
                std::thread::spawn(move || {
                    let table = FakeTable::new(&w).unwrap();
                    (0..2000)
                        .map(|i| {
                            let name = if i % 2 == 0 {
                                format!("shared{i}.test")
                            } else {
                                format!("t{t}-{i}.test")
                            };
                            let id = table.id_for(&name).unwrap();
                            (name, id)
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        let mut by_name = std::collections::HashMap::new();
        let mut by_id = std::collections::HashMap::new();
        for th in threads {
            for (name, id) in th.join().unwrap() {
                assert_eq!(*by_name.entry(name.clone()).or_insert(id), id, "{name}");
                assert_eq!(*by_id.entry(id).or_insert(name.clone()), name, "id {id}");
            }
        }
        assert_eq!(by_name.len(), 1000 + 16 * 1000);
        let t = FakeTable::new(&w).unwrap();
        for (name, id) in &by_name {
            assert_eq!(t.name_of(*id).as_deref(), Some(name.as_str()));
        }
    }

    #[test]
    fn ranges() {
        let r = FakeRanges {
            v4: Net::parse("198.18.0.0/15").unwrap(),
            v6: Net::parse("fd63:6873:6f63:6b73::/64").unwrap(),
        };
        assert_eq!(r.capacity(), MAX_CAPACITY);
        assert_eq!(r.v4_of(0), Ipv4Addr::new(198, 18, 0, 1));
        assert_eq!(r.v4_of(131_069), Ipv4Addr::new(198, 19, 255, 254));
        assert_eq!(
            r.v6_of(0),
            "fd63:6873:6f63:6b73::1".parse::<Ipv6Addr>().unwrap()
        );
        assert_eq!(r.id_of("198.18.1.0".parse().unwrap()), Some(255));
        assert_eq!(
            r.id_of("fd63:6873:6f63:6b73::100".parse().unwrap()),
            Some(255)
        );
        assert_eq!(r.id_of("198.18.0.0".parse().unwrap()), None);
        assert_eq!(r.id_of("10.0.0.1".parse().unwrap()), None);
        assert!(r.contains("198.19.255.255".parse().unwrap()));
        let small = FakeRanges {
            v4: Net::parse("10.9.0.0/24").unwrap(),
            v6: r.v6,
        };
        assert_eq!(small.capacity(), 254);
        assert_eq!(small.id_of("10.9.0.255".parse().unwrap()), None);
        assert!(Net::parse("10.0.0.0").is_err());
        assert!(Net::parse("10.0.0.0/33").is_err());
    }
}
