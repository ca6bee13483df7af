//! Log lines from inside the host program: one `write(2)` per line, to the program's stderr or
//! to a log file opened, written and closed per line.
//!
//! Must never: keep an fd open (programs close all fds and reuse the numbers), write to fd 2 if
//! it was closed when the program started or is no longer the file it was then (fd 2 may now
//! be the program's data), print a password, or panic on a failed write.

use std::ffi::CString;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use chainsocks_core::config::LogLevel;
use chainsocks_core::sys;

/// Whether fd 2 was open when the library was loaded (set by the constructor)…
static STDERR_OK: AtomicBool = AtomicBool::new(true);
/// … and which file it was (device, inode): log lines go to fd 2 only while it still is.
static STDERR_ID: [AtomicU64; 2] = [AtomicU64::new(0), AtomicU64::new(0)];

fn fd2_identity() -> Option<(u64, u64)> {
    chainsocks_core::sys::fstat(2)
        .ok()
        .map(|st| (st.st_dev, st.st_ino))
}

/// Called once from the library constructor (no libc call: see `sys::fstat_at_load`).
pub fn init() {
    match sys::fstat_at_load(2).ok().map(|st| (st.st_dev, st.st_ino)) {
        Some((dev, ino)) => {
            STDERR_ID[0].store(dev, Ordering::Relaxed);
            STDERR_ID[1].store(ino, Ordering::Relaxed);
        }
        None => STDERR_OK.store(false, Ordering::Relaxed),
    }
}

/// Whether fd 2 is still the stderr the program started with.
fn stderr_usable() -> bool {
    STDERR_OK.load(Ordering::Relaxed)
        && fd2_identity()
            == Some((
                STDERR_ID[0].load(Ordering::Relaxed),
                STDERR_ID[1].load(Ordering::Relaxed),
            ))
}

pub use chainsocks_core::report::append_line;

/// Where and how much to log.
pub struct Sink {
    pub level: LogLevel,
    pub file: Option<CString>,
}

impl Sink {
    pub const DEFAULT: Sink = Sink {
        level: LogLevel::Warn,
        file: None,
    };

    pub fn enabled(&self, level: LogLevel) -> bool {
        level != LogLevel::Off && level <= self.level
    }

    pub fn log(&self, level: LogLevel, msg: std::fmt::Arguments) {
        if !self.enabled(level) {
            return;
        }
        let line = match &self.file {
            Some(_) => format!("chainsocks[{}]: {msg}\n", chainsocks_core::sys::getpid()),
            None => format!("chainsocks: {msg}\n"),
        };
        let saved = sys::errno();
        match &self.file {
            Some(path) => append_line(path, line.as_bytes()),
            None if stderr_usable() => {
                let _ = sys::write(2, line.as_bytes());
            }
            None => {}
        }
        sys::set_errno(saved);
    }
}
