//! The egress report from inside a program: records in the format of
//! [`chainsocks_core::report`], appended by every process of the launch to the file the
//! launcher's `--report` names.
//!
//! Owns: this process's identity in a record (pid, parent pid, program, command line), and
//! recording a UDP destination the program sends to once, not once per datagram.
//! The program and its command line are read once per process image (on the first record) and
//! published lock-free: a fork child keeps them (its argv is its parent's), an exec loads the
//! library anew. Pid and parent pid are asked each time (they change with fork and reparenting).
//! Must never: keep an fd open, block on anything but the write, allocate from the program's
//! malloc (everything here comes from the library's own allocator), or change errno.

use std::ffi::CString;
use std::ptr;
use std::sync::atomic::{AtomicPtr, AtomicU64, Ordering};

pub use chainsocks_core::report::{Event, Kind};
use chainsocks_core::report::{Who, append_line, line, read_cmdline};

use crate::state;

/// Whether events are recorded in this process.
pub fn enabled() -> bool {
    matches!(&state::get().cfg, Ok(c) if c.report_file.is_some())
}

/// What a record says about this process image.
struct Ident {
    program: String,
    cmdline: String,
}

static IDENT: AtomicPtr<Ident> = AtomicPtr::new(ptr::null_mut());

/// This process's program and command line, read on first use.
fn ident() -> &'static Ident {
    let p = IDENT.load(Ordering::Acquire);
    if !p.is_null() {
        // SAFETY: once published, an Ident is never freed or mutated.
        return unsafe { &*p };
    }
    let mine = Box::into_raw(Box::new(Ident {
        program: std::fs::read_link("/proc/self/exe")
            .map(|p| p.to_string_lossy().into_owned())
            .unwrap_or_default(),
        cmdline: read_cmdline(c"/proc/self/cmdline"),
    }));
    match IDENT.compare_exchange(ptr::null_mut(), mine, Ordering::AcqRel, Ordering::Acquire) {
        // SAFETY: just published; immortal.
        Ok(_) => unsafe { &*mine },
        Err(theirs) => {
            // SAFETY: `mine` was never published; `theirs` is published and immortal.
            unsafe {
                drop(Box::from_raw(mine));
                &*theirs
            }
        }
    }
}

/// UDP destinations already recorded by this process: a small direct-mapped cache of hashes
/// (lock-free; a collision only means one more record).
static UDP_SEEN: [AtomicU64; 64] = [const { AtomicU64::new(0) }; 64];

/// Whether a datagram to this destination was recorded already by this process (and remember
/// it). The pid is part of the key: a fork child records its own.
fn udp_seen(e: &Event, pid: i32) -> bool {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    (pid, e.name, e.ip, e.port, e.rule).hash(&mut h);
    let key = h.finish() | 1;
    let Some(slot) = UDP_SEEN.get((key % UDP_SEEN.len() as u64) as usize) else {
        return false;
    };
    slot.swap(key, Ordering::Relaxed) == key
}

/// Appends `e` to the report, if one is configured.
pub fn record(e: &Event) {
    let st = state::get();
    let Ok(cfg) = &st.cfg else { return };
    let Some(path) = &cfg.report_file else { return };
    let (pid, ppid) = (
        chainsocks_core::sys::getpid(),
        chainsocks_core::sys::getppid(),
    );
    if e.kind == Kind::Udp && e.result == "ok" && udp_seen(e, pid) {
        return;
    }
    let Ok(path) = CString::new(path.as_os_str().as_encoded_bytes()) else {
        return;
    };
    let id = ident();
    let who = Who {
        pid,
        ppid,
        program: &id.program,
        cmdline: &id.cmdline,
    };
    append_line(&path, line(e, &who).as_bytes());
}
