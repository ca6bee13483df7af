//! Log lines from inside the host program: one `write(2)` per line, to the program's stderr or
//! to a log file opened, written and closed per line.
//!
//! Must never: keep an fd open (programs close all fds and reuse the numbers), write to fd 2 if
//! it was closed when the program started (fd 2 may now be the program's data), print a
//! password, or panic on a failed write.

use std::ffi::CString;
use std::sync::atomic::{AtomicBool, Ordering};

use chainsocks_core::config::LogLevel;

/// Whether fd 2 was open when the library was loaded (set by the constructor).
static STDERR_OK: AtomicBool = AtomicBool::new(true);

/// Called once from the library constructor.
pub fn init() {
    // SAFETY: F_GETFD on fd 2 only queries it.
    let open = unsafe { libc::fcntl(2, libc::F_GETFD) } >= 0;
    STDERR_OK.store(open, Ordering::Relaxed);
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
            Some(path) => {
                // SAFETY: path is NUL-terminated; the fd is closed right after the write.
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
            None if STDERR_OK.load(Ordering::Relaxed) => {
                // SAFETY: writing our own buffer to fd 2.
                unsafe { libc::write(2, line.as_ptr().cast(), line.len()) };
            }
            None => {}
        }
        crate::sock::set_errno(saved);
    }
}
