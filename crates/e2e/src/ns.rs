//! Network namespace entry and program discovery.
//!
//! Owns: [`netns`] (moves the calling THREAD into a fresh network namespace
//! with only `lo`, up) and [`require`] (finds a third-party program, or skips /
//! fails the test when it is missing).
//! Never does: touch any interface other than the new namespace's `lo`, create
//! a named (`ip netns add`) namespace that could outlive the process, or let a
//! missing server pass silently under `CI=true`.
//!
//! Facts:
//! - Namespaces are per thread (per task): `unshare(CLONE_NEWNET)` changes only
//!   the calling thread. Threads it spawns afterwards and processes it forks
//!   (`std::process::Command`) inherit the new namespace; the other libtest
//!   threads are not affected. libtest runs every test on its own thread (also
//!   with `--test-threads=1`), nextest runs every test in its own process.
//! - A fresh namespace's `lo` is down; bringing it up gives 127.0.0.1/8 and
//!   ::1/128. Every 127.x.y.z address is local, so servers can bind to
//!   127.0.0.2 etc. as an outgoing source address without any setup.
//! - The namespace disappears when its last thread, process and socket are
//!   gone, so nothing is left behind.
//! - There is no route out of such a namespace: even a resolver query to the
//!   host's non-loopback nameserver fails locally with ENETUNREACH.

use std::cell::Cell;
use std::ffi::OsStr;
use std::path::{Path, PathBuf};

thread_local! {
    static IN_NETNS: Cell<bool> = const { Cell::new(false) };
}

/// Moves the current thread into a fresh network namespace and brings `lo` up.
///
/// Idempotent per thread: a second call on a thread that already entered a
/// namespace through this function is a no-op (so helpers may call it too).
/// Call it first thing in a test, before starting servers or origins.
///
/// # Panics
/// If not root (needs CAP_SYS_ADMIN), if `unshare` fails, or if `lo` cannot
/// be brought up.
pub fn netns() {
    if IN_NETNS.with(|c| c.get()) {
        return;
    }
    // SAFETY: plain syscalls with no pointers.
    let euid = unsafe { libc::geteuid() };
    if euid != 0 {
        panic!(
            "e2e::netns(): must run as root (euid is {euid}): a network namespace needs CAP_SYS_ADMIN"
        );
    }
    // SAFETY: unshare affects only the calling thread's namespaces.
    if unsafe { libc::unshare(libc::CLONE_NEWNET) } != 0 {
        let e = std::io::Error::last_os_error();
        panic!("e2e::netns(): unshare(CLONE_NEWNET) failed: {e}");
    }
    if let Err(e) = lo_up() {
        panic!("e2e::netns(): cannot bring lo up in the new namespace: {e}");
    }
    IN_NETNS.with(|c| c.set(true));
}

/// The inode of the calling thread's network namespace (for tests and
/// diagnostics: two threads share a namespace iff the inodes are equal).
pub fn netns_id() -> u64 {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata("/proc/thread-self/ns/net")
        .map(|m| m.ino())
        .unwrap_or(0)
}

fn lo_up() -> std::io::Result<()> {
    // SAFETY: socket/ioctl/close on a descriptor we own; ifreq is plain data,
    // zero-initialised, the name is NUL terminated.
    unsafe {
        let fd = libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0);
        if fd < 0 {
            return Err(std::io::Error::last_os_error());
        }
        let mut ifr: libc::ifreq = std::mem::zeroed();
        for (dst, src) in ifr.ifr_name.iter_mut().zip(b"lo\0") {
            *dst = *src as libc::c_char;
        }
        let res = (|| {
            if libc::ioctl(fd, libc::SIOCGIFFLAGS, &mut ifr) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            ifr.ifr_ifru.ifru_flags |= libc::IFF_UP as libc::c_short;
            if libc::ioctl(fd, libc::SIOCSIFFLAGS, &ifr) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        })();
        libc::close(fd);
        res
    }
}

/// Whether the environment says this is CI (`CI=true` or `CI=1`).
pub fn is_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v.eq_ignore_ascii_case("true") || v == "1")
}

/// Finds `bin` (a name looked up in `$PATH` plus the sbin directories, or a
/// path). When missing: under `CI=true` panics (a missing server fails the
/// run); otherwise prints `SKIP: <bin> not installed` to stderr and returns
/// `None`, so a test can `let Some(x) = require("x") else { return };`.
pub fn require(bin: &str) -> Option<PathBuf> {
    require_with(bin, is_ci())
}

/// [`require`] with the CI decision made by the caller (testable without
/// touching the process environment).
///
/// # Panics
/// If `bin` is missing and `ci` is true.
pub fn require_with(bin: &str, ci: bool) -> Option<PathBuf> {
    if let Some(p) = find_program(bin) {
        return Some(p);
    }
    if ci {
        panic!(
            "e2e: required program `{bin}` is not installed (CI=true: a missing server fails the run)"
        );
    }
    eprintln!("SKIP: {bin} not installed");
    None
}

/// Looks `bin` up without any skip/panic policy.
pub fn find_program(bin: &str) -> Option<PathBuf> {
    if bin.contains('/') {
        let p = Path::new(bin);
        return is_executable(p).then(|| p.to_path_buf());
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    let extra = OsStr::new("/usr/local/sbin:/usr/sbin:/sbin:/usr/local/bin:/usr/bin:/bin");
    std::env::split_paths(&path)
        .chain(std::env::split_paths(extra))
        .map(|d| d.join(bin))
        .find(|p| is_executable(p))
}

fn is_executable(p: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// Path of the `csclient` test binary.
///
/// Looks at `$CSCLIENT`, then next to the running test executable
/// (`target/<profile>/csclient` when running from `target/<profile>/deps/`).
/// Tests inside this package can use `env!("CARGO_BIN_EXE_csclient")` instead.
/// Other packages' tests must have it built first
/// (`cargo build -p e2e --bin csclient`).
///
/// # Panics
/// If it cannot be found.
pub fn csclient() -> PathBuf {
    test_bin("csclient", "CSCLIENT")
}

/// Path of the `csudp` test binary (`$CSUDP`, else next to the test executable; see
/// [`csclient`]).
///
/// # Panics
/// If it cannot be found.
pub fn csudp() -> PathBuf {
    test_bin("csudp", "CSUDP")
}

fn test_bin(name: &str, env: &str) -> PathBuf {
    if let Some(p) = std::env::var_os(env) {
        return PathBuf::from(p);
    }
    if let Ok(exe) = std::env::current_exe() {
        let mut dir = exe.parent();
        for _ in 0..2 {
            let Some(d) = dir else { break };
            let cand = d.join(name);
            if is_executable(&cand) {
                return cand;
            }
            dir = d.parent();
        }
    }
    panic!("e2e: {name} not found: set {env} or run `cargo build -p e2e --bin {name}` first")
}

/// The value of `KEY=` in a test client's one-line result (`ok answered=5/5 bad=0 ...`),
/// e.g. `result_field(&stdout, "answered") == Some("5/5")`.
pub fn result_field<'a>(line: &'a str, key: &str) -> Option<&'a str> {
    line.split_whitespace()
        .find_map(|w| w.strip_prefix(key)?.strip_prefix('='))
}
