//! The launch's shared state as the supervisor sees it: the memfd every process of the tree
//! maps (crates/core/src/shm.rs), mapped once by the launcher — the fake-DNS table and the
//! proxies' health counters, so a supervised connect and a preloaded one agree on names and
//! dead proxies.
//!
//! Must never: write the frozen part (header, config), or unmap (views are 'static).

use std::os::fd::RawFd;
use std::sync::atomic::AtomicU64;

use chainsocks_core::chain::Health;
use chainsocks_core::config::Config;
use chainsocks_core::fakedns::{FakeRanges, FakeTable};
use chainsocks_core::shm;

/// The mapped state.
pub struct Launch {
    pub table: FakeTable<'static>,
    pub ranges: FakeRanges,
    counters: &'static [AtomicU64],
}

impl Launch {
    /// Maps the launch's state file (our own memfd or file).
    pub fn map(cfg: &Config, fd: RawFd) -> Result<Launch, String> {
        let ranges = cfg.fake_ranges().map_err(|e| e.to_string())?;
        // SAFETY: fstat of our own fd into zeroed storage.
        let mut st: libc::stat = unsafe { std::mem::zeroed() };
        if unsafe { libc::fstat(fd, &mut st) } != 0 {
            return Err(format!("fstat: {}", std::io::Error::last_os_error()));
        }
        let len = st.st_size as usize;
        // SAFETY: a shared mapping of our own state file, never unmapped (views are 'static).
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                fd,
                0,
            )
        };
        if p == libc::MAP_FAILED {
            return Err(format!("mmap: {}", std::io::Error::last_os_error()));
        }
        // SAFETY: the header page is mapped and never written after creation.
        let head = unsafe { std::slice::from_raw_parts(p as *const u8, shm::HEADER_SIZE.min(len)) };
        let words = |off: usize, n: usize| -> Result<&'static [AtomicU64], String> {
            if !off.is_multiple_of(8) || off + n * 8 > len {
                return Err("shared state out of bounds".into());
            }
            // SAFETY: in bounds and aligned; shared words are only touched through atomics.
            Ok(unsafe { std::slice::from_raw_parts((p as *const u8).add(off).cast(), n) })
        };
        let (toff, tn) = shm::table_location(head).ok_or("bad shared-state layout")?;
        let table = FakeTable::new(words(toff, tn)?)?;
        let coff = shm::counters_location(head).ok_or("bad shared-state layout")?;
        let counters = words(coff, shm::COUNTER_WORDS)?;
        Ok(Launch {
            table,
            ranges,
            counters,
        })
    }

    /// Whether thread `tid` is doing one of the library's own real lookups (its DNS packets
    /// go to the real nameserver).
    pub fn real_lookup(&self, tid: u32) -> bool {
        let want = tid as u64 + 1;
        self.counters.get(shm::REAL_LOOKUP_WORDS).is_some_and(|w| {
            w.iter()
                .any(|t| t.load(std::sync::atomic::Ordering::Acquire) == want)
        })
    }

    pub fn health(&self) -> Health<'_> {
        Health {
            dead_until: self.counters.get(shm::DEAD_WORDS).unwrap_or(&[]),
            rr: self.counters.get(shm::RR_WORDS).unwrap_or(&[]),
        }
    }
}
