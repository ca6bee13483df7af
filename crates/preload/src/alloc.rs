//! The library's own memory allocator (its `#[global_allocator]`): every Rust allocation of the
//! library comes from here, never from the program's malloc.
//!
//! Why: a hooked function may run inside a signal handler that interrupted the program's own
//! malloc (connect, sendto and sendmsg are async-signal-safe by POSIX); allocating from glibc's
//! heap then corrupts it. This allocator is lock-free and reentrant (a handler that interrupts it
//! and allocates again is fine), takes memory only with raw mmap/munmap syscalls, and is safe
//! across fork at any moment.
//! Owns: power-of-two size classes from 16 bytes to 64 KiB, each a lock-free stack of free
//! blocks (a Treiber stack whose head packs a 16-bit tag against ABA with a 48-bit pointer)
//! and, behind it, the class's current fresh 64 KiB (or larger) mmap chunk, carved one block
//! at a time (a word packing the next block's address with the blocks left): a chunk's pages
//! are touched only as its blocks are handed out, so a process that allocates a few blocks
//! faults in a page or two, not the whole chunk. Bigger requests map and unmap directly.
//! Stacks and fresh chunks are sharded by CPU ([`SHARDS`] sets, each on its own cache lines,
//! picked with `sched_getcpu`): threads on different CPUs never touch the same words, so 64
//! threads resolving at once do not bounce one line between the CPUs (with one set they ran
//! slower together than one thread alone). Any thread may use any shard (the stacks are
//! multi-producer, multi-consumer): a migrated thread is merely slower, and an empty shard
//! takes a free block from another before it carves new memory.
//! Must never: take a lock, call malloc or any libc function that may, or return class memory
//! to the kernel once a block of it was handed out (a stale pointer read by a racing pop must
//! stay readable; a chunk that lost the race to become a class's fresh chunk was never seen by
//! anyone and is unmapped).

use std::alloc::{GlobalAlloc, Layout};
use std::ptr;
use std::sync::atomic::{AtomicU64, Ordering};

const MIN_SHIFT: u32 = 4; // 16 bytes
const MAX_SHIFT: u32 = 16; // 64 KiB
const CLASSES: usize = (MAX_SHIFT - MIN_SHIFT + 1) as usize;
const CHUNK: usize = 64 * 1024;
const PTR_BITS: u32 = 48;
const PTR_MASK: u64 = (1 << PTR_BITS) - 1;

/// Bits of a fresh-chunk word that count the blocks left (a chunk has at most 4096).
const LEFT_BITS: u32 = 16;
const LEFT_MASK: u64 = (1 << LEFT_BITS) - 1;

/// Sets of stacks and fresh chunks (CPU number modulo this).
const SHARDS: usize = 8;

pub struct SignalSafeAlloc {
    shards: [Shard; SHARDS],
}

/// One CPU's stacks and fresh chunks, on cache lines of its own.
#[repr(align(128))]
struct Shard {
    /// Free blocks per class: tag << 48 | address of the first.
    heads: [AtomicU64; CLASSES],
    /// The fresh chunk per class: address of its next unused block << 16 | blocks left.
    /// Addresses only grow within a chunk and a published chunk is never unmapped, so a value
    /// never comes back (no ABA).
    fresh: [AtomicU64; CLASSES],
}

impl Shard {
    const fn new() -> Shard {
        Shard {
            heads: [const { AtomicU64::new(0) }; CLASSES],
            fresh: [const { AtomicU64::new(0) }; CLASSES],
        }
    }
}

impl SignalSafeAlloc {
    pub const fn new() -> SignalSafeAlloc {
        SignalSafeAlloc {
            shards: [const { Shard::new() }; SHARDS],
        }
    }

    /// The shard of the CPU this thread runs on (glibc reads it from the rseq area or the
    /// vDSO: no syscall, no lock, async-signal-safe).
    fn home(&self) -> usize {
        // SAFETY: no arguments; -1 on failure.
        let cpu = unsafe { libc::sched_getcpu() };
        (cpu.max(0) as usize) % SHARDS
    }
}

impl Default for SignalSafeAlloc {
    fn default() -> Self {
        Self::new()
    }
}

fn map(len: usize) -> *mut u8 {
    // SAFETY: an anonymous private mapping; no fd, no libc wrapper.
    let p = unsafe {
        libc::syscall(
            libc::SYS_mmap,
            ptr::null_mut::<u8>(),
            len,
            (libc::PROT_READ | libc::PROT_WRITE) as libc::c_long,
            (libc::MAP_PRIVATE | libc::MAP_ANONYMOUS) as libc::c_long,
            -1 as libc::c_long,
            0 as libc::c_long,
        )
    };
    if p < 0 || (p as u64).saturating_add(len as u64) > PTR_MASK {
        if p >= 0 {
            unmap(p as *mut u8, len);
        }
        ptr::null_mut()
    } else {
        p as *mut u8
    }
}

fn unmap(p: *mut u8, len: usize) {
    // SAFETY: a mapping made by `map` with this length.
    unsafe { libc::syscall(libc::SYS_munmap, p, len) };
}

/// The size class of a layout: `Some(index)` or `None` for a direct mapping.
fn class(layout: Layout) -> Option<usize> {
    let size = layout.size().max(layout.align()).max(1 << MIN_SHIFT);
    if size > 1 << MAX_SHIFT || layout.align() > 4096 {
        return None;
    }
    let shift = usize::BITS - (size - 1).leading_zeros();
    Some((shift - MIN_SHIFT) as usize)
}

fn page_round(n: usize) -> usize {
    n.next_multiple_of(4096)
}

/// The "next" word stored in a free block.
///
/// # Safety
/// `p` is a block of a class (≥ 16 bytes, 8-aligned, never unmapped).
unsafe fn next_of<'a>(p: u64) -> &'a AtomicU64 {
    // SAFETY: see the function's contract.
    unsafe { &*(p as *const AtomicU64) }
}

impl SignalSafeAlloc {
    /// A block of class `c`: from this CPU's stack, else another shard's, else carved from
    /// this CPU's fresh chunk.
    fn alloc_class(&self, c: usize) -> *mut u8 {
        let home = self.home();
        let Some(shard) = self.shards.get(home) else {
            return ptr::null_mut();
        };
        let p = shard.pop(c);
        if !p.is_null() {
            return p;
        }
        for k in 1..SHARDS {
            if let Some(other) = self.shards.get((home + k) % SHARDS) {
                let p = other.pop(c);
                if !p.is_null() {
                    return p;
                }
            }
        }
        shard.carve(c)
    }
}

impl Shard {
    /// A free block of class `c` from this shard's stack, or null when it is empty.
    fn pop(&self, c: usize) -> *mut u8 {
        let Some(head) = self.heads.get(c) else {
            return ptr::null_mut();
        };
        loop {
            let h = head.load(Ordering::Acquire);
            let p = h & PTR_MASK;
            if p == 0 {
                return ptr::null_mut();
            }
            // SAFETY: class blocks are never unmapped: even if another thread popped `p` in the
            // meantime, the read is of mapped memory (the tag then makes our CAS fail).
            let next = unsafe { next_of(p) }.load(Ordering::Relaxed);
            let tag = (h >> PTR_BITS).wrapping_add(1);
            let new = (tag << PTR_BITS) | (next & PTR_MASK);
            if head
                .compare_exchange_weak(h, new, Ordering::AcqRel, Ordering::Acquire)
                .is_ok()
            {
                return p as *mut u8;
            }
        }
    }

    /// Pushes the chain `first ..= last` (already linked through their next words).
    fn push_chain(&self, c: usize, first: u64, last: u64) {
        let Some(head) = self.heads.get(c) else {
            return;
        };
        loop {
            let h = head.load(Ordering::Acquire);
            // SAFETY: `last` is a block we own until the CAS publishes it.
            unsafe { next_of(last) }.store(h & PTR_MASK, Ordering::Relaxed);
            let tag = (h >> PTR_BITS).wrapping_add(1);
            let new = (tag << PTR_BITS) | first;
            if head
                .compare_exchange_weak(h, new, Ordering::AcqRel, Ordering::Acquire)
                .is_ok()
            {
                return;
            }
        }
    }

    /// The next unused block of class `c`'s fresh chunk; a new chunk when it is used up (the
    /// caller gets its first block, the rest become the fresh chunk).
    fn carve(&self, c: usize) -> *mut u8 {
        let Some(fresh) = self.fresh.get(c) else {
            return ptr::null_mut();
        };
        let size = 1u64 << (c as u32 + MIN_SHIFT);
        loop {
            let f = fresh.load(Ordering::Acquire);
            let (p, left) = (f >> LEFT_BITS, f & LEFT_MASK);
            if left > 0 {
                let next = ((p + size) << LEFT_BITS) | (left - 1);
                if fresh
                    .compare_exchange_weak(f, next, Ordering::AcqRel, Ordering::Acquire)
                    .is_ok()
                {
                    return p as *mut u8;
                }
                continue;
            }
            let len = CHUNK.max(size as usize * 4);
            let base = map(len);
            if base.is_null() {
                return ptr::null_mut();
            }
            let n = (len as u64 / size).min(LEFT_MASK + 1);
            let next = ((base as u64 + size) << LEFT_BITS) | (n - 1);
            if fresh
                .compare_exchange(f, next, Ordering::AcqRel, Ordering::Acquire)
                .is_ok()
            {
                return base;
            }
            // Another thread (or a signal handler) installed a chunk meanwhile: this one was
            // never seen by anyone.
            unmap(base, len);
        }
    }
}

// SAFETY: blocks are handed out once (lock-free stacks), sized and aligned for the layout
// (power-of-two classes carved at multiples of their size from page-aligned chunks).
unsafe impl GlobalAlloc for SignalSafeAlloc {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        match class(layout) {
            Some(c) => self.alloc_class(c),
            None if layout.align() <= 4096 => map(page_round(layout.size())),
            None => ptr::null_mut(),
        }
    }

    unsafe fn dealloc(&self, p: *mut u8, layout: Layout) {
        match class(layout) {
            Some(c) => {
                if let Some(shard) = self.shards.get(self.home()) {
                    shard.push_chain(c, p as u64, p as u64);
                }
            }
            None => unmap(p, page_round(layout.size())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classes() {
        assert_eq!(class(Layout::from_size_align(1, 1).unwrap()), Some(0));
        assert_eq!(class(Layout::from_size_align(16, 8).unwrap()), Some(0));
        assert_eq!(class(Layout::from_size_align(17, 8).unwrap()), Some(1));
        assert_eq!(class(Layout::from_size_align(8, 64).unwrap()), Some(2));
        assert_eq!(class(Layout::from_size_align(65536, 8).unwrap()), Some(12));
        assert_eq!(class(Layout::from_size_align(65537, 8).unwrap()), None);
    }

    #[test]
    fn blocks_are_distinct_aligned_and_reused() {
        let a = SignalSafeAlloc::new();
        let l = Layout::from_size_align(40, 8).unwrap();
        let mut seen = std::collections::HashSet::new();
        let ps: Vec<*mut u8> = (0..5000).map(|_| unsafe { a.alloc(l) }).collect();
        for &p in &ps {
            assert!(!p.is_null());
            assert_eq!(p as usize % 64, 0);
            assert!(seen.insert(p as usize));
            unsafe { ptr::write_bytes(p, 0xAB, 40) };
        }
        for &p in &ps {
            unsafe { a.dealloc(p, l) };
        }
        let again = unsafe { a.alloc(l) };
        assert!(seen.contains(&(again as usize)), "freed blocks are reused");
        let big = Layout::from_size_align(200_000, 8).unwrap();
        let b = unsafe { a.alloc(big) };
        assert!(!b.is_null());
        unsafe { ptr::write_bytes(b, 1, 200_000) };
        unsafe { a.dealloc(b, big) };
    }

    /// Pins the calling thread to `cpu`; false where that CPU cannot be used.
    fn pin(cpu: usize) -> bool {
        // SAFETY: a zeroed cpu_set_t with one bit set, for this thread.
        unsafe {
            let mut set: libc::cpu_set_t = std::mem::zeroed();
            libc::CPU_SET(cpu, &mut set);
            libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) == 0
                && libc::sched_getcpu() == cpu as i32
        }
    }

    #[test]
    fn shards_follow_the_cpu_and_an_empty_one_takes_another_ones_free_block() {
        static A: SignalSafeAlloc = SignalSafeAlloc::new();
        let l = Layout::from_size_align(4000, 8).unwrap(); // class 4096: unused elsewhere here
        std::thread::spawn(move || {
            if !(pin(0) && pin(1) && pin(0)) {
                eprintln!("fewer than 2 usable CPUs: shard test not run");
                return;
            }
            let a = unsafe { A.alloc(l) };
            let b = unsafe { A.alloc(l) };
            unsafe { A.dealloc(a, l) };
            // The same CPU gets its own freed block back.
            assert_eq!(unsafe { A.alloc(l) }, a);
            unsafe { A.dealloc(a, l) };
            assert!(pin(1));
            // CPU 1's shard is empty: it takes CPU 0's free block rather than carving.
            assert_eq!(unsafe { A.alloc(l) }, a);
            // A block goes to the stack of the CPU that frees it: each CPU gets its own back.
            unsafe { A.dealloc(a, l) };
            assert!(pin(0));
            unsafe { A.dealloc(b, l) };
            assert!(pin(1));
            assert_eq!(
                unsafe { A.alloc(l) },
                a,
                "one stack would give the last freed, b"
            );
            assert!(pin(0));
            assert_eq!(unsafe { A.alloc(l) }, b);
            // Both empty: a new block is carved.
            let c = unsafe { A.alloc(l) };
            assert!(c != a && c != b && !c.is_null());
        })
        .join()
        .unwrap();
    }

    #[test]
    fn concurrent_carving_hands_out_every_block_once() {
        static A: SignalSafeAlloc = SignalSafeAlloc::new();
        // 48-byte requests (class 64): 1024 blocks per chunk, so 8 threads × 5000 blocks race
        // over ~40 chunk refills, with nothing freed (every block comes from carving).
        let l = Layout::from_size_align(48, 8).unwrap();
        let hs: Vec<_> = (0..8)
            .map(|_| {
                std::thread::spawn(move || {
                    (0..5000)
                        .map(|_| {
                            let p = unsafe { A.alloc(l) };
                            assert!(!p.is_null());
                            assert_eq!(p as usize % 64, 0);
                            unsafe { ptr::write_bytes(p, 0xCD, 48) };
                            p as usize
                        })
                        .collect::<Vec<usize>>()
                })
            })
            .collect();
        let mut all = std::collections::HashSet::new();
        for h in hs {
            for p in h.join().unwrap() {
                assert!(all.insert(p), "block {p:#x} handed out twice");
            }
        }
        assert_eq!(all.len(), 40_000);
    }

    #[test]
    fn threads_never_share_a_block() {
        static A: SignalSafeAlloc = SignalSafeAlloc::new();
        let l = Layout::from_size_align(24, 8).unwrap();
        let hs: Vec<_> = (0..8)
            .map(|t| {
                std::thread::spawn(move || {
                    for i in 0..20_000u64 {
                        let p = unsafe { A.alloc(l) } as *mut u64;
                        unsafe { p.write(t * 1_000_000 + i) };
                        std::hint::spin_loop();
                        assert_eq!(unsafe { p.read() }, t * 1_000_000 + i);
                        unsafe { A.dealloc(p as *mut u8, l) };
                    }
                })
            })
            .collect();
        for h in hs {
            h.join().unwrap();
        }
    }
}
