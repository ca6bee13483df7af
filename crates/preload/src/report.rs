//! The egress report from inside a program: records in the format of
//! [`chainsocks_core::report`], appended by every process of the launch to the file the
//! launcher's `--report` names.
//!
//! Owns: this process's identity in a record (pid, program).
//! Must never: keep an fd open, block on anything but the write, or change errno.

use std::ffi::CString;

pub use chainsocks_core::report::{Event, Kind};
use chainsocks_core::report::{Who, append_line, line};

use crate::state;

/// Whether events are recorded in this process.
pub fn enabled() -> bool {
    matches!(&state::get().cfg, Ok(c) if c.report_file.is_some())
}

fn program() -> String {
    std::fs::read_link("/proc/self/exe")
        .map(|p| p.to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// Appends `e` to the report, if one is configured.
pub fn record(e: &Event) {
    let st = state::get();
    let Ok(cfg) = &st.cfg else { return };
    let Some(path) = &cfg.report_file else { return };
    let Ok(path) = CString::new(path.as_os_str().as_encoded_bytes()) else {
        return;
    };
    let program = program();
    let who = Who {
        // SAFETY: getpid cannot fail.
        pid: unsafe { libc::getpid() },
        program: &program,
    };
    append_line(&path, line(e, &who).as_bytes());
}
