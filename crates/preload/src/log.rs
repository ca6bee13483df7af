//! Log lines from inside the host program: one `write(2)` per line, to the program's stderr or
//! to a log file opened, written and closed per line.
//!
//! Must never: keep an fd open (programs close all fds and reuse the numbers), write to fd 2 if
//! it was closed when the program started or is no longer the file it was then (fd 2 may now
//! be the program's data), print a password, or panic on a failed write.

use std::ffi::CString;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use chainsocks_core::config::LogLevel;

/// Whether fd 2 was open when the library was loaded (set by the constructor)…
static STDERR_OK: AtomicBool = AtomicBool::new(true);
/// … and which file it was (device, inode): log lines go to fd 2 only while it still is.
static STDERR_ID: [AtomicU64; 2] = [AtomicU64::new(0), AtomicU64::new(0)];

fn fd2_identity() -> Option<(u64, u64)> {
    // SAFETY: fstat of fd 2 into zeroed storage.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    (unsafe { libc::fstat(2, &mut st) } == 0).then_some((st.st_dev, st.st_ino))
}

/// Called once from the library constructor.
pub fn init() {
    match fd2_identity() {
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

/// Appends `line` to the file at `path` with one `write` (O_APPEND: lines written by
/// concurrent processes never interleave), opening and closing it each time.
pub fn append_line(path: &std::ffi::CStr, line: &[u8]) {
    // SAFETY: a NUL-terminated path; one write of the caller's buffer; the fd is closed at once.
    unsafe {
        let fd = libc::open(
            path.as_ptr(),
            libc::O_WRONLY | libc::O_APPEND | libc::O_CREAT | libc::O_CLOEXEC,
            0o600,
        );
        if fd >= 0 {
            libc::write(fd, line.as_ptr().cast(), line.len());
            libc::close(fd);
        }
    }
}

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
            // SAFETY: getpid cannot fail.
            Some(_) => format!("chainsocks[{}]: {msg}\n", unsafe { libc::getpid() }),
            None => format!("chainsocks: {msg}\n"),
        };
        let saved = crate::sock::errno();
        match &self.file {
            Some(path) => append_line(path, line.as_bytes()),
            None if stderr_usable() => {
                // SAFETY: writing our own buffer to fd 2.
                unsafe { libc::write(2, line.as_ptr().cast(), line.len()) };
            }
            None => {}
        }
        crate::sock::set_errno(saved);
    }
}
