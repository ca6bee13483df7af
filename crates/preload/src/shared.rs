//! Memory shared by a launch: the launcher's state file mapped MAP_SHARED, or, for a process
//! preloaded without the launcher, an anonymous MAP_SHARED table (shared with fork children).
//!
//! Owns: mmap / munmap, and the views into the mapping (header + config bytes, which nobody
//! writes after the launcher made the file; the fake-DNS table, only ever touched through
//! atomics).
//! Must never: keep an fd open after mapping (programs close all fds), or hand out a view that
//! outlives the mapping (published mappings live until the process ends).

use std::ffi::CString;
use std::sync::atomic::AtomicU64;

use chainsocks_core::shm;

use chainsocks_core::sys;

pub struct Mapping {
    ptr: *mut u8,
    len: usize,
    /// Bytes at the start that are never written after creation (header + config).
    frozen: usize,
}

// SAFETY: the mapping is plain memory; the mutable part is only accessed through atomics.
unsafe impl Send for Mapping {}
// SAFETY: as above.
unsafe impl Sync for Mapping {}

impl Mapping {
    /// Maps the launcher's shared-state file.
    pub fn open(path: &str) -> Result<Mapping, String> {
        let c = CString::new(path).map_err(|_| "NUL in path".to_string())?;
        // The fd is closed below on every path.
        let fd = sys::open(&c, libc::O_RDWR | libc::O_CLOEXEC, 0).map_err(|e| {
            format!(
                "cannot open {path}: {}",
                std::io::Error::from_raw_os_error(e)
            )
        })?;
        let size = sys::fstat(fd).map_or(0, |st| st.st_size as usize);
        let r = if size < shm::HEADER_SIZE {
            Err(format!("{path}: not a chainsocks state file"))
        } else {
            // SAFETY: mapping `size` bytes of a regular file we opened read-write.
            unsafe {
                sys::mmap(
                    size,
                    libc::PROT_READ | libc::PROT_WRITE,
                    libc::MAP_SHARED,
                    fd,
                    0,
                )
            }
            .map(|ptr| Mapping {
                ptr,
                len: size,
                frozen: 0,
            })
            .map_err(|e| format!("mmap {path}: {}", std::io::Error::from_raw_os_error(e)))
        };
        sys::close(fd);
        let mut m = r?;
        // SAFETY: the first HEADER_SIZE bytes are mapped and never written after creation.
        let head = unsafe { std::slice::from_raw_parts(m.ptr, shm::HEADER_SIZE) };
        // Header and config: everything before the health counters.
        m.frozen = shm::counters_location(head)
            .unwrap_or(shm::HEADER_SIZE)
            .min(m.len);
        Ok(m)
    }

    /// An anonymous shared mapping of `words` zeroed 8-byte words.
    pub fn anonymous(words: usize) -> Result<Mapping, String> {
        let len = words * 8;
        // SAFETY: anonymous mapping, no fd.
        let ptr = unsafe {
            sys::mmap(
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
                -1,
                0,
            )
        }
        .map_err(|e| format!("mmap: {}", std::io::Error::from_raw_os_error(e)))?;
        Ok(Mapping {
            ptr,
            len,
            frozen: 0,
        })
    }

    /// The bytes that never change after creation (header and config of a state file).
    pub fn frozen_bytes(&self) -> &[u8] {
        // SAFETY: within the mapping, and never written by anyone after creation.
        unsafe { std::slice::from_raw_parts(self.ptr, self.frozen) }
    }

    /// `n` words at byte offset `off`, as atomics.
    pub fn words(&self, off: usize, n: usize) -> Option<&[AtomicU64]> {
        if !off.is_multiple_of(8) || off.checked_add(n.checked_mul(8)?)? > self.len {
            return None;
        }
        // SAFETY: in bounds and 8-byte aligned (mmap is page aligned); shared memory is only
        // ever accessed through these atomics.
        Some(unsafe { std::slice::from_raw_parts(self.ptr.add(off) as *const AtomicU64, n) })
    }
}

impl Drop for Mapping {
    fn drop(&mut self) {
        // SAFETY: our own mapping; only dropped when its State lost the publication race.
        unsafe { libc::munmap(self.ptr.cast(), self.len) };
    }
}
