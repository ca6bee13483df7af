//! The common machinery behind every server handle, and running commands.
//!
//! Owns: choosing free loopback ports ([`free_port`]), spawning a server as a
//! child process in its own process group (optionally in a private mount
//! namespace whose `/etc/hosts` is a test file), waiting until its TCP port
//! accepts, collecting its log, and stopping it by pid/pgid; plus [`run`] /
//! [`try_run`] for bounded-time client commands (curl, csclient).
//! Never does: signal anything but the process group it created (no
//! pkill/killall, no name matching), or touch the host's `/etc/hosts` (the
//! bind mount lives only in the child's private mount namespace).
//!
//! Facts:
//! - A child is started with `process_group(0)` (pgid = its pid) and
//!   `PR_SET_PDEATHSIG(SIGKILL)`. Linux delivers the death signal when the
//!   THREAD that spawned it exits: a server handle must be created on the thread
//!   that will drop it (normal for a test), never on a short-lived helper thread.
//! - Stop: SIGTERM to the group, wait up to 2 s for the leader (without reaping
//!   it, so its pid/pgid cannot be reused), SIGKILL to the group (stragglers),
//!   then reap. Children that leave the group (sshd's per-connection child calls
//!   setsid) are not reached: they exit when their client connection closes.
//! - The hosts trick: in the child before exec, `unshare(CLONE_NEWNS)`, make `/`
//!   recursively private, bind-mount the temp hosts file over `/etc/hosts`.
//!   The pid stays the server's (no `unshare --fork`). Only that server (and
//!   the processes it forks) resolves the test names; nsswitch here is
//!   `files dns`, so names are found in the file without any DNS traffic.

use crate::TempDir;
use std::collections::HashSet;
use std::ffi::{CString, OsString};
use std::fs::File;
use std::io::Read;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// How long a server gets to accept on its port.
pub const READY_TIMEOUT: Duration = Duration::from_secs(15);

static GIVEN_PORTS: Mutex<Option<HashSet<u16>>> = Mutex::new(None);

/// A free TCP port on 127.0.0.1 (bind port 0, read it, release it). Never
/// returns the same port twice in one process, so two servers started in the
/// same test cannot be handed the same port.
///
/// # Panics
/// If binding fails.
pub fn free_port() -> u16 {
    for _ in 0..1000 {
        let l = match TcpListener::bind((Ipv4Addr::LOCALHOST, 0)) {
            Ok(l) => l,
            Err(e) => panic!("e2e: cannot bind 127.0.0.1:0 (did you call netns()?): {e}"),
        };
        let port = match l.local_addr() {
            Ok(a) => a.port(),
            Err(e) => panic!("e2e: local_addr: {e}"),
        };
        let mut g = GIVEN_PORTS.lock().unwrap_or_else(|e| e.into_inner());
        if g.get_or_insert_with(HashSet::new).insert(port) {
            return port;
        }
    }
    panic!("e2e: no unused free port found")
}

/// The contents of a hosts file with the usual localhost lines plus `hosts`.
pub fn hosts_file_contents(hosts: &[(String, IpAddr)]) -> String {
    let mut s = String::from("127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n");
    for (name, ip) in hosts {
        s.push_str(&format!("{ip}\t{name}\n"));
    }
    s
}

/// What to start: built by each server module.
pub(crate) struct Spec {
    /// Short name used in file names and messages ("danted").
    pub name: &'static str,
    pub program: PathBuf,
    pub args: Vec<OsString>,
    /// Names only this server resolves (private mount namespace); empty = none.
    pub hosts: Vec<(String, IpAddr)>,
    /// Log files the server writes itself (shown before its stderr).
    pub own_logs: Vec<PathBuf>,
    /// The loopback port that accepts once the server is ready.
    pub ready_port: u16,
    /// Config files shown in the panic message if it fails to start.
    pub configs: Vec<PathBuf>,
}

/// A running server process (the shared part of every handle).
pub(crate) struct ServerProc {
    name: &'static str,
    child: Child,
    pid: libc::pid_t,
    stderr_path: PathBuf,
    own_logs: Vec<PathBuf>,
    configs: Vec<PathBuf>,
    stopped: bool,
}

impl ServerProc {
    /// Spawns `spec` with its stdout+stderr in `dir/<name>.stderr` and waits
    /// until `ready_port` accepts.
    ///
    /// # Panics
    /// If it cannot be spawned, exits, or is not ready in [`READY_TIMEOUT`]
    /// (the panic message contains its log).
    pub fn start(dir: &TempDir, spec: Spec) -> ServerProc {
        let p = ServerProc::spawn(dir, &spec);
        p.wait_ready(spec.ready_port);
        p
    }

    fn spawn(dir: &TempDir, spec: &Spec) -> ServerProc {
        let (name, program, hosts) = (spec.name, &spec.program, &spec.hosts);
        let stderr_path = dir.join(&format!("{name}.stderr"));
        let out = match File::create(&stderr_path) {
            Ok(f) => f,
            Err(e) => panic!("e2e: cannot create {}: {e}", stderr_path.display()),
        };
        let err = match out.try_clone() {
            Ok(f) => f,
            Err(e) => panic!("e2e: dup: {e}"),
        };
        let mut cmd = Command::new(program);
        cmd.args(&spec.args)
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .current_dir(dir.path())
            .process_group(0);
        if !hosts.is_empty() {
            let hp = dir.write(&format!("{name}.hosts"), hosts_file_contents(hosts));
            private_files(&mut cmd, &[(hp, "/etc/hosts")]);
        }
        // SAFETY: the closure runs in the forked child before exec and only
        // makes async-signal-safe syscalls.
        unsafe {
            cmd.pre_exec(|| {
                if libc::prctl(
                    libc::PR_SET_PDEATHSIG,
                    libc::SIGKILL as libc::c_ulong,
                    0,
                    0,
                    0,
                ) != 0
                {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let child = match cmd.spawn() {
            Ok(c) => c,
            Err(e) => panic!("e2e: cannot start {name} ({}): {e}", program.display()),
        };
        let pid = child.id() as libc::pid_t;
        ServerProc {
            name,
            child,
            pid,
            stderr_path,
            own_logs: spec.own_logs.clone(),
            configs: spec.configs.clone(),
            stopped: false,
        }
    }

    /// The leader's pid (= its process group id).
    pub fn pid(&self) -> u32 {
        self.pid as u32
    }

    fn exited(&self) -> Option<String> {
        // Peek without reaping (WNOWAIT), so the pid stays ours.
        // SAFETY: siginfo_t is plain data, zeroed; waitid writes into it.
        unsafe {
            let mut info: libc::siginfo_t = std::mem::zeroed();
            let r = libc::waitid(
                libc::P_PID,
                self.pid as libc::id_t,
                &mut info,
                libc::WEXITED | libc::WNOHANG | libc::WNOWAIT,
            );
            if r == 0 && info.si_pid() != 0 {
                Some(if info.si_code == libc::CLD_EXITED {
                    format!("exited with status {}", info.si_status())
                } else {
                    format!("was killed by signal {}", info.si_status())
                })
            } else if r != 0 {
                Some(format!(
                    "waitid failed: {}",
                    std::io::Error::last_os_error()
                ))
            } else {
                None
            }
        }
    }

    fn failure_report(&self) -> String {
        let mut s = String::new();
        for c in &self.configs {
            s.push_str(&format!("----- {} -----\n{}", c.display(), read_lossy(c)));
        }
        s.push_str("----- log -----\n");
        s.push_str(&self.log());
        s
    }

    fn wait_ready(&self, port: u16) {
        // Servers listen on 127.0.0.1, or on [::1] when a test asks for an IPv6 proxy.
        let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
        let addr6 = SocketAddr::from((std::net::Ipv6Addr::LOCALHOST, port));
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            if let Some(how) = self.exited() {
                panic!(
                    "e2e: {} {how} before accepting on {addr}\n{}",
                    self.name,
                    self.failure_report()
                );
            }
            if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok()
                || TcpStream::connect_timeout(&addr6, Duration::from_millis(200)).is_ok()
            {
                return;
            }
            if Instant::now() > deadline {
                panic!(
                    "e2e: {} not accepting on {addr} after {READY_TIMEOUT:?}\n{}",
                    self.name,
                    self.failure_report()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The server's own log files followed by its captured stdout/stderr.
    pub fn log(&self) -> String {
        let mut s = String::new();
        for p in &self.own_logs {
            s.push_str(&read_lossy(p));
        }
        let e = read_lossy(&self.stderr_path);
        if !e.is_empty() {
            s.push_str(&format!("----- {} stdout/stderr -----\n", self.name));
            s.push_str(&e);
        }
        s
    }

    /// Stops the whole process group (see the module docs). Idempotent.
    pub fn stop(&mut self) -> Option<ExitStatus> {
        if self.stopped {
            return None;
        }
        self.stopped = true;
        // SAFETY: signalling our own child's process group.
        unsafe { libc::kill(-self.pid, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(2);
        while self.exited().is_none() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        // The leader is not reaped yet, so the pgid still names our group.
        // SAFETY: as above.
        unsafe { libc::kill(-self.pid, libc::SIGKILL) };
        self.child.wait().ok()
    }
}

impl Drop for ServerProc {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Reads a file as (lossy) UTF-8; empty if missing.
pub fn read_lossy(p: &Path) -> String {
    let mut v = Vec::new();
    if let Ok(mut f) = File::open(p) {
        let _ = f.read_to_end(&mut v);
    }
    String::from_utf8_lossy(&v).into_owned()
}

/// Polls `f` every 20 ms until it returns true or `timeout` passes.
pub fn wait_until(timeout: Duration, mut f: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if f() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Runs `cmd` to completion with stdin null and stdout/stderr captured.
/// `Err(partial output)` if it was killed after `timeout`.
///
/// # Panics
/// If it cannot be spawned.
pub fn try_run(cmd: &mut Command, timeout: Duration) -> Result<Output, Output> {
    // Its own process group, so a timeout kills the whole tree (an orphaned grandchild would
    // otherwise hold the output pipes open and hang the test).
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0);
    let mut child = match cmd.spawn() {
        Ok(c) => c,
        Err(e) => panic!("e2e: cannot run {cmd:?}: {e}"),
    };
    let out_t = child.stdout.take().map(|mut o| {
        std::thread::spawn(move || {
            let mut v = Vec::new();
            let _ = o.read_to_end(&mut v);
            v
        })
    });
    let err_t = child.stderr.take().map(|mut o| {
        std::thread::spawn(move || {
            let mut v = Vec::new();
            let _ = o.read_to_end(&mut v);
            v
        })
    });
    let deadline = Instant::now() + timeout;
    let mut timed_out = false;
    let status = loop {
        match child.try_wait() {
            Ok(Some(s)) => break s,
            Ok(None) if Instant::now() >= deadline => {
                timed_out = true;
                // SAFETY: signalling the process group we created.
                unsafe { libc::kill(-(child.id() as i32), libc::SIGKILL) };
                let _ = child.kill();
                match child.wait() {
                    Ok(s) => break s,
                    Err(e) => panic!("e2e: wait: {e}"),
                }
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(5)),
            Err(e) => panic!("e2e: wait: {e}"),
        }
    };
    let stdout = out_t.and_then(|t| t.join().ok()).unwrap_or_default();
    let stderr = err_t.and_then(|t| t.join().ok()).unwrap_or_default();
    let out = Output {
        status,
        stdout,
        stderr,
    };
    if timed_out { Err(out) } else { Ok(out) }
}

/// [`try_run`] that panics (showing the partial output) on timeout.
///
/// # Panics
/// On timeout or if the command cannot be spawned.
pub fn run(cmd: &mut Command, timeout: Duration) -> Output {
    match try_run(cmd, timeout) {
        Ok(o) => o,
        Err(o) => panic!(
            "e2e: {cmd:?} timed out after {timeout:?}\nstdout: {}\nstderr: {}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        ),
    }
}

/// Runs `cmd` in a private mount namespace where each `(file, target)` pair is bind-mounted
/// over `target` (e.g. a test /etc/hosts or /etc/resolv.conf), so only that process tree sees
/// it. Used to give proxies (not clients) the test names, and clients a resolv.conf that
/// points at a local listener.
///
/// # Panics
/// If a path contains a NUL byte.
pub fn private_files(cmd: &mut Command, binds: &[(PathBuf, &str)]) {
    let pairs: Vec<(CString, CString)> = binds
        .iter()
        .map(|(src, dst)| {
            let src = CString::new(src.as_os_str().as_bytes()).expect("NUL in path");
            let dst = CString::new(dst.as_bytes()).expect("NUL in path");
            (src, dst)
        })
        .collect();
    // SAFETY: the closure runs in the forked child before exec and only makes
    // async-signal-safe syscalls on data prepared before the fork.
    unsafe {
        cmd.pre_exec(move || {
            if libc::unshare(libc::CLONE_NEWNS) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            let root = c"/";
            let flags = libc::MS_REC | libc::MS_PRIVATE;
            if libc::mount(
                std::ptr::null(),
                root.as_ptr(),
                std::ptr::null(),
                flags,
                std::ptr::null(),
            ) != 0
            {
                return Err(std::io::Error::last_os_error());
            }
            for (src, dst) in &pairs {
                let bind = libc::MS_BIND;
                if libc::mount(
                    src.as_ptr(),
                    dst.as_ptr(),
                    std::ptr::null(),
                    bind,
                    std::ptr::null(),
                ) != 0
                {
                    return Err(std::io::Error::last_os_error());
                }
            }
            Ok(())
        });
    }
}

/// A command's stdout, as text.
pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// A command's stderr, as text.
pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Status, stdout and stderr, for assertion messages.
pub fn show(o: &Output) -> String {
    format!(
        "status {:?}\nstdout: {}\nstderr: {}",
        o.status,
        stdout(o),
        stderr(o)
    )
}
