//! Starting the program: the shared-state memory file, the environment (LD_PRELOAD,
//! CHAINSOCKS_SHM), fork + exec, and supervision until the program exits.
//!
//! The launcher stays alive as the program's parent because it owns the shared state: a memfd
//! that any process of the tree opens as `/proc/<launcher pid>/fd/<n>` (nothing for the program
//! to close, nothing left behind: the kernel frees it when the launcher exits). It forwards
//! the signals a process sends it (SIGINT, SIGTERM, SIGHUP, SIGQUIT, SIGUSR1, SIGUSR2) to the
//! program — not terminal-generated ones, which the program already received — and exits with
//! the program's status (dying of the same signal if the program was killed).
//!
//! It is a child subreaper (PR_SET_CHILD_SUBREAPER): processes of the tree whose parents exit
//! (`cmd &`, `nohup`, double-forking daemons) become its children, so it stays — with the
//! shared state and the supervisor — until the last process of the tree has exited, then
//! exits with COMMAND's status. An inherited SIGCHLD = SIG_IGN is reset for the launcher (and
//! given back to the program before exec); ECHILD means every child is gone.
//! Must never: run the program without the library when it was asked to, leave the program's
//! signal mask or dispositions changed, or run it without the supervisor when the supervisor
//! was required (`--strict-launch`).

use std::ffi::{CString, OsStr, OsString};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::Path;
use std::process::ExitCode;

use chainsocks_core::config::Config;
use chainsocks_core::shm;

const FORWARDED: [libc::c_int; 6] = [
    libc::SIGINT,
    libc::SIGTERM,
    libc::SIGHUP,
    libc::SIGQUIT,
    libc::SIGUSR1,
    libc::SIGUSR2,
];

/// Creates the launch's shared-state memfd (close-on-exec: only the path reaches children).
///
/// With `file` (its fd and the path children open), the state is that regular file instead:
/// the `--isolate` plan created it (0600, `O_EXCL`) in its private directory and removes it.
/// (A process in a child user namespace, as with `--isolate` unprivileged, may not open another
/// namespace's `/proc/<pid>/fd`.)
fn create_shm(
    cfg: &Config,
    file: Option<(libc::c_int, &Path)>,
) -> Result<(libc::c_int, String), String> {
    let capacity = cfg.fake_ranges().map_err(|e| e.to_string())?.capacity();
    let bytes = shm::build(&cfg.to_toml(), capacity);
    let total = shm::total_size(&bytes).ok_or("bad shared-state layout")?;
    let fd = match file {
        // SAFETY: memfd_create with a static name.
        None => unsafe { libc::memfd_create(c"chainsocks".as_ptr(), libc::MFD_CLOEXEC) },
        // SAFETY: a duplicate of the plan's fd, for us to write through.
        Some((f, _)) => unsafe { libc::fcntl(f, libc::F_DUPFD_CLOEXEC, 3) },
    };
    if fd < 0 {
        return Err(format!(
            "creating the shared state: {}",
            std::io::Error::last_os_error()
        ));
    }
    // If the launcher was started with fd 0-2 closed, never let the state file be one of them
    // (a later message to stderr would land in it).
    let fd = crate::private::above_stdio(fd)?;
    let mut off = 0;
    while off < bytes.len() {
        let chunk = &bytes[off..];
        // SAFETY: writing our own buffer to our memfd.
        let n = unsafe { libc::write(fd, chunk.as_ptr().cast(), chunk.len()) };
        if n <= 0 {
            return Err(format!(
                "writing shared state: {}",
                std::io::Error::last_os_error()
            ));
        }
        off += n as usize;
    }
    // Zero-extend to the full size: the table's pages exist only once written.
    // SAFETY: our memfd.
    if unsafe { libc::ftruncate(fd, total as libc::off_t) } != 0 {
        return Err(format!(
            "sizing shared state: {}",
            std::io::Error::last_os_error()
        ));
    }
    if let Some((_, p)) = file {
        return Ok((fd, p.display().to_string()));
    }
    // SAFETY: getpid cannot fail.
    let pid = unsafe { libc::getpid() };
    Ok((fd, format!("/proc/{pid}/fd/{fd}")))
}

/// LD_PRELOAD with the library first, keeping what was there.
fn preload_value(lib: &Path, old: Option<OsString>) -> OsString {
    let mut v = lib.as_os_str().to_os_string();
    if let Some(old) = old.filter(|o| !o.is_empty()) {
        let keep: Vec<&[u8]> = old
            .as_bytes()
            .split(|&b| b == b':' || b == b' ')
            .filter(|e| !e.is_empty() && *e != lib.as_os_str().as_bytes())
            .collect();
        for e in keep {
            v.push(":");
            v.push(OsStr::from_bytes(e));
        }
    }
    v
}

/// What runs around the program besides the shim.
#[derive(Default)]
pub struct Extras {
    /// `--isolate`: the sandbox plan.
    pub sandbox: Option<crate::isolate::Plan>,
    /// `--summary`: the report file to summarize at exit.
    pub summary: Option<std::path::PathBuf>,
    /// `--summary` without `--report`: the private records file.
    pub temp_report: Option<crate::private::TempReport>,
    /// The seccomp supervisor, when it is wanted and the kernel has it ([`preflight`]).
    pub supervisor: Option<Supervision>,
    /// `--fail-on-block`: the report to look for blocked attempts in at exit.
    pub fail_on_block: Option<std::path::PathBuf>,
}

/// How the supervisor is to run.
pub struct Supervision {
    /// `--strict-launch`: refuse to run the program if the supervisor cannot start.
    pub strict: bool,
    /// Why LD_PRELOAD alone would not cover COMMAND (printed if the supervisor cannot start).
    pub unshimmable: Option<String>,
}

/// Before anything runs: whether LD_PRELOAD applies to COMMAND and whether the supervisor can
/// run here; prints the warning that applies. `Err`: the refusal to print (exit 2).
pub fn preflight(
    program: Option<&OsStr>,
    isolate: bool,
    strict: bool,
    supervisor: bool,
) -> Result<Option<Supervision>, String> {
    let available = if supervisor {
        crate::supervisor::probe()
    } else {
        Err(String::new())
    };
    if let Err(why) = &available
        && supervisor
        && strict
    {
        return Err(format!(
            "refusing to run (--strict-launch): the seccomp supervisor is unavailable: {why}"
        ));
    }
    let why_not = program
        .and_then(crate::elfcheck::find_program)
        .and_then(|path| {
            let why = crate::elfcheck::why_not_shimmable(&path)?;
            Some(format!(
                "{} {}: LD_PRELOAD will not apply: traffic from this program would go direct",
                path.display(),
                why.why()
            ))
        });
    match available {
        // Covered: the supervisor sees every connect, whatever the program is built with.
        Ok(()) => {
            return Ok(Some(Supervision {
                strict,
                unshimmable: why_not,
            }));
        }
        Err(why) => {
            if let Some(msg) = why_not {
                if isolate && !strict {
                    // Contained anyway: nothing but the proxies is reachable in the sandbox.
                } else if strict {
                    return Err(format!("refusing to run (--strict-launch): {msg}"));
                } else if supervisor {
                    eprintln!(
                        "chainsocks: warning: {msg} (the seccomp supervisor is unavailable: {why})"
                    );
                } else {
                    eprintln!("chainsocks: warning: {msg}");
                }
            }
        }
    }
    Ok(None)
}

/// Runs `command` under the shim and returns its exit status as ours. Every private file
/// (`extras`) is removed before the launcher exits or dies of the program's signal.
pub fn run(cfg: &Config, command: &[OsString], extras: Extras) -> ExitCode {
    let result = try_run(cfg, command, &extras).map(|exit| {
        crate::summary::at_exit(
            extras.summary.as_deref(),
            extras.fail_on_block.as_deref(),
            exit,
        )
    });
    drop(extras);
    match result {
        Ok(Exit::Code(c)) => ExitCode::from(c),
        Ok(Exit::Signal(sig)) => die_like(sig),
        Err(e) => {
            eprintln!("chainsocks: {e}");
            ExitCode::from(2)
        }
    }
}

/// How the program ended.
pub enum Exit {
    Code(u8),
    Signal(libc::c_int),
}

fn cstring(s: &OsStr) -> Result<CString, String> {
    CString::new(s.as_bytes()).map_err(|_| format!("NUL byte in {:?}", s))
}

fn try_run(cfg: &Config, command: &[OsString], extras: &Extras) -> Result<Exit, String> {
    // Block the signals we wait for (and forward) first of all: before any thread of ours
    // exists (threads inherit the mask; one with SIGCHLD unblocked would take and drop it) and
    // before forking, so none is lost.
    // SAFETY: plain sigset manipulation on local storage.
    let (waitset, oldmask) = unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGCHLD);
        for s in FORWARDED {
            libc::sigaddset(&mut set, s);
        }
        let mut old: libc::sigset_t = std::mem::zeroed();
        libc::pthread_sigmask(libc::SIG_BLOCK, &set, &mut old);
        (set, old)
    };
    let lib = crate::embedded::library()?;
    // A program's own DNS (to port 53 of a resolv.conf nameserver) goes to the launch's
    // responder: bound now, so its addresses are in the config every process reads (remote DNS
    // only; inside --isolate the nameserver has no route).
    let mut cfg = cfg.clone();
    let responder = if cfg.proxy_dns && extras.sandbox.is_none() {
        let resolv = std::fs::read_to_string("/etc/resolv.conf").unwrap_or_default();
        match crate::supervisor::responder::bind(crate::supervisor::nameservers(&resolv)) {
            Ok(b) => {
                cfg.dns_redirect = Some(b.redirect.clone());
                Some(b)
            }
            Err(e) => {
                eprintln!("chainsocks: warning: no DNS responder: {e}");
                None
            }
        }
    } else {
        None
    };
    // The UDP hub (connected UDP sockets of every program of the launch reach their
    // association's relay through it): bound now, so its address is in the config. Under
    // --isolate the sandbox's own hub is named by the plan.
    let hub_sock = match &extras.sandbox {
        None => {
            let s = std::net::UdpSocket::bind("127.0.0.1:0")
                .map_err(|e| format!("the UDP hub: {e}"))?;
            cfg.udp_hub = s.local_addr().ok().map(|a| a.to_string());
            Some(s)
        }
        Some(_) => None,
    };
    let cfg = &cfg;
    let state_file = extras.sandbox.as_ref().map(|p| p.state_file());
    let (shm_fd, shm_path) = create_shm(cfg, state_file)?;
    let dns = match responder {
        Some(b) => {
            let hosts = std::fs::read_to_string("/etc/hosts").unwrap_or_default();
            match b.serve(cfg, shm_fd, &hosts) {
                Ok(r) => Some(r),
                Err(e) => {
                    eprintln!("chainsocks: warning: no DNS responder: {e}");
                    None
                }
            }
        }
        None => None,
    };
    // An inherited SIGCHLD = SIG_IGN would reap the program behind our back (waitpid would
    // never report it): default for us, the program gets its inherited disposition back.
    // SAFETY: sigaction on our own process, zeroed structs as out-parameters.
    let old_chld = unsafe {
        let mut dfl: libc::sigaction = std::mem::zeroed();
        dfl.sa_sigaction = libc::SIG_DFL;
        let mut old: libc::sigaction = std::mem::zeroed();
        libc::sigaction(libc::SIGCHLD, &dfl, &mut old);
        old
    };
    // Orphans of the tree become our children: we stay (the shared state, the supervisor)
    // while any of them lives, and may take their sockets (ptrace rules want an ancestor).
    // SAFETY: prctl with integer arguments.
    unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) };
    let filter = extras
        .supervisor
        .as_ref()
        .map(|_| crate::supervisor::Program::new());

    // Build argv and envp before fork: the child only calls async-signal-safe functions.
    let argv: Vec<CString> = command
        .iter()
        .map(|a| cstring(a))
        .collect::<Result<_, _>>()?;
    // Not $CHAINSOCKS_PROXY: its passwords reach the program through the shared state only.
    let mut env: Vec<(OsString, OsString)> = std::env::vars_os()
        .filter(|(k, _)| k != "LD_PRELOAD" && k != shm::ENV && k != "CHAINSOCKS_PROXY")
        .collect();
    env.push((
        "LD_PRELOAD".into(),
        preload_value(&lib, std::env::var_os("LD_PRELOAD")),
    ));
    env.push((shm::ENV.into(), shm_path.into()));
    let envp: Vec<CString> = env
        .into_iter()
        .map(|(k, v)| {
            let mut kv = k.into_vec();
            kv.push(b'=');
            kv.extend(v.into_vec());
            CString::new(kv).map_err(|_| "NUL byte in environment".to_string())
        })
        .collect::<Result<_, _>>()?;
    let mut argv_p: Vec<*const libc::c_char> = argv.iter().map(|a| a.as_ptr()).collect();
    argv_p.push(std::ptr::null());
    let mut envp_p: Vec<*const libc::c_char> = envp.iter().map(|a| a.as_ptr()).collect();
    envp_p.push(std::ptr::null());
    let prog = argv.first().ok_or("no command")?;
    let path_var = std::env::var_os("PATH").map(|p| cstring(&p)).transpose()?;

    let chan = if extras.sandbox.is_some() || filter.is_some() {
        Some(std::os::unix::net::UnixStream::pair().map_err(|e| format!("socketpair: {e}"))?)
    } else {
        None
    };
    // SAFETY: fork in a single-threaded launcher; the child only sets up its sandbox (if any),
    // then execs or _exits.
    let child = unsafe { libc::fork() };
    if child < 0 {
        return Err(format!("fork: {}", std::io::Error::last_os_error()));
    }
    if child == 0 {
        if let Some((ours, _)) = &chan {
            // The launcher's end: closed here so that the launcher closing its copy is seen
            // as EOF (never dropped: the child execs or _exits).
            // SAFETY: closing an fd of this child.
            unsafe { libc::close(std::os::fd::AsRawFd::as_raw_fd(ours)) };
        }
        if let (Some(plan), Some((_, theirs))) = (&extras.sandbox, &chan)
            && let Err(why) = crate::isolate::enter(plan, theirs)
        {
            crate::isolate::report_failure(theirs, &why);
            // SAFETY: leaving the child without running the launcher's destructors.
            unsafe { libc::_exit(2) };
        }
        if let (Some(prog), Some((_, theirs))) = (&filter, &chan)
            && crate::supervisor::child_install(prog, theirs).is_err()
        {
            // SAFETY: as above: the launcher refused to run without the supervisor.
            unsafe { libc::_exit(2) };
        }
        // SAFETY: async-signal-safe calls only; pointers built before fork.
        unsafe {
            libc::sigaction(libc::SIGCHLD, &old_chld, std::ptr::null_mut());
            libc::pthread_sigmask(libc::SIG_SETMASK, &oldmask, std::ptr::null_mut());
            exec_child(prog, &argv_p, &envp_p, path_var.as_deref());
        }
    }
    let chan = chan.map(|(ours, _theirs)| ours);
    let mut dns = dns;
    let mut hub = None;
    if let (Some(plan), Some(ours)) = (&extras.sandbox, &chan) {
        let got = crate::isolate::receive(ours, plan.fd_count())
            .and_then(|fds| crate::isolate::sort_received(plan, fds));
        match got {
            Ok(r) => {
                crate::isolate::forward(r.listeners, &plan.forwards);
                let net = std::path::PathBuf::from(format!("/proc/{child}/net"));
                hub = Some(crate::udphub::Hub::start(r.hub, relay_hosts(cfg), &net)?);
                if let (Some((u, t)), Some(redirect)) = (r.responder, &cfg.dns_redirect) {
                    let hosts =
                        std::fs::read_to_string(plan.dir.path().join("hosts")).unwrap_or_default();
                    let bound =
                        crate::supervisor::responder::Bound::from_sockets(u, t, redirect.clone());
                    dns = Some(bound.serve(cfg, shm_fd, &hosts)?);
                }
                use std::io::Write;
                (&*ours)
                    .write_all(b"g")
                    .map_err(|e| format!("starting the sandboxed program: {e}"))?;
            }
            Err(why) => {
                reap(child);
                return Err(format!("--isolate: {why}"));
            }
        }
    } else if let Some(sock) = hub_sock {
        hub = Some(crate::udphub::Hub::start(
            sock,
            relay_hosts(cfg),
            std::path::Path::new("/proc/self/net"),
        )?);
    }
    let running = match (&extras.supervisor, chan) {
        (Some(sup), Some(ours)) => start_supervisor(cfg, shm_fd, dns, hub, sup, child, ours)?,
        _ => None,
    };
    let exit = supervise(child, &waitset, cfg.quiet);
    if let Some(r) = &running {
        r.finish();
    }
    exit
}

/// Every address of every configured proxy (and `udp_proxy`): the hosts a UDP relay may be on.
fn relay_hosts(cfg: &Config) -> Vec<std::net::IpAddr> {
    cfg.proxies
        .iter()
        .chain(cfg.chains.values().flat_map(|c| c.proxies.iter()))
        .chain(cfg.udp_proxy.iter())
        .flat_map(|p| p.socket_addrs())
        .map(|a| a.ip())
        .collect()
}

/// Waits for our child that is exiting on its own (after a failed setup).
fn reap(child: libc::pid_t) {
    let mut status = 0;
    // SAFETY: reaping our own child.
    unsafe { libc::waitpid(child, &mut status, 0) };
}

/// Receives the child's seccomp listener and starts the supervisor (and the DNS responder);
/// or, when the child could not install the filter, decides: run with the preload alone
/// (one line when COMMAND needs the supervisor), or refuse (`--strict-launch`).
fn start_supervisor(
    cfg: &Config,
    shm_fd: libc::c_int,
    dns: Option<crate::supervisor::responder::Redirect>,
    hub: Option<crate::udphub::Hub>,
    sup: &Supervision,
    child: libc::pid_t,
    chan: std::os::unix::net::UnixStream,
) -> Result<Option<crate::supervisor::Running>, String> {
    use crate::supervisor;
    use std::io::Write;
    let listener = match supervisor::receive_listener(&chan) {
        Ok(l) => l,
        Err(why) if sup.strict => {
            drop(chan); // the child exits 2 without running anything
            reap(child);
            return Err(format!(
                "refusing to run (--strict-launch): the seccomp supervisor cannot start: {why}"
            ));
        }
        Err(why) => {
            if let Some(msg) = &sup.unshimmable {
                eprintln!(
                    "chainsocks: warning: {msg} (the seccomp supervisor cannot start: {why})"
                );
            }
            (&chan)
                .write_all(b"g")
                .map_err(|e| format!("starting the program: {e}"))?;
            return Ok(None);
        }
    };
    let shared = match supervisor::shared::Launch::map(cfg, shm_fd) {
        Ok(s) => Some(s),
        Err(e) => {
            eprintln!("chainsocks: warning: the supervisor cannot map the shared state: {e}");
            None
        }
    };
    let ctx = supervisor::Ctx {
        cfg: cfg.clone(),
        log: supervisor::Log::new(cfg),
        dns,
        stats: Default::default(),
        shared,
        hub,
        datagrams: Default::default(),
    };
    match supervisor::start(listener, ctx) {
        Ok(r) => Ok(Some(r)),
        Err(e) => {
            // The child runs under the filter already: without us every connect would fail.
            // SAFETY: killing and reaping our own child.
            unsafe { libc::kill(child, libc::SIGKILL) };
            reap(child);
            Err(e)
        }
    }
}

/// execve with a $PATH search (like execvpe, without its allocation); never returns.
///
/// # Safety
/// Called in the forked child only; argv/envp are NULL-terminated arrays of valid strings.
unsafe fn exec_child(
    prog: &CString,
    argv: &[*const libc::c_char],
    envp: &[*const libc::c_char],
    path: Option<&std::ffi::CStr>,
) -> ! {
    let name = prog.as_bytes();
    let mut err = libc::ENOENT;
    if name.contains(&b'/') {
        // SAFETY: valid NULL-terminated arrays.
        unsafe { libc::execve(prog.as_ptr(), argv.as_ptr(), envp.as_ptr()) };
        err = std::io::Error::last_os_error()
            .raw_os_error()
            .unwrap_or(libc::ENOENT);
    } else {
        let path = path
            .map(|p| p.to_bytes())
            .unwrap_or(b"/usr/local/bin:/usr/bin:/bin");
        let mut buf = [0u8; 4096];
        for dir in path.split(|&b| b == b':') {
            let dir = if dir.is_empty() { b".".as_slice() } else { dir };
            let total = dir.len() + 1 + name.len();
            if total + 1 > buf.len() {
                continue;
            }
            buf[..dir.len()].copy_from_slice(dir);
            buf[dir.len()] = b'/';
            buf[dir.len() + 1..total].copy_from_slice(name);
            buf[total] = 0;
            // SAFETY: buf is NUL-terminated.
            unsafe { libc::execve(buf.as_ptr().cast(), argv.as_ptr(), envp.as_ptr()) };
            let e = std::io::Error::last_os_error()
                .raw_os_error()
                .unwrap_or(libc::ENOENT);
            if e != libc::ENOENT && e != libc::ENOTDIR {
                err = e; // e.g. EACCES: remember, keep looking (as execvp does)
            }
        }
    }
    let msg = format!(
        "chainsocks: cannot run {}: {}\n",
        String::from_utf8_lossy(name),
        std::io::Error::from_raw_os_error(err)
    );
    // SAFETY: writing to stderr then exiting the child without running atexit handlers.
    unsafe {
        libc::write(2, msg.as_ptr().cast(), msg.len());
        libc::_exit(if err == libc::ENOENT { 127 } else { 126 });
    }
}

/// Waits for the program and then for every other process of the tree (reparented to us),
/// forwarding signals sent to us; returns how the program ended.
fn supervise(child: libc::pid_t, waitset: &libc::sigset_t, quiet: bool) -> Result<Exit, String> {
    let mut exit: Option<Exit> = None;
    // A termination signal sent to us (kill, a CI timeout) is for the whole tree: once the
    // program has exited, it goes on to what remains (and to orphans adopted later).
    let mut terminating: Option<libc::c_int> = None;
    loop {
        // SAFETY: zeroed siginfo is a valid out-parameter.
        let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
        // SAFETY: waiting for signals that are blocked in this thread.
        let sig = unsafe { libc::sigwaitinfo(waitset, &mut info) };
        if sig < 0 {
            continue; // EINTR
        }
        if sig == libc::SIGCHLD {
            // Signals merge: reap everything that is ready.
            loop {
                let mut status = 0;
                // SAFETY: reaping our children (the program and adopted orphans).
                let r = unsafe { libc::waitpid(-1, &mut status, libc::WNOHANG) };
                if r == child {
                    if libc::WIFEXITED(status) {
                        exit = Some(Exit::Code(libc::WEXITSTATUS(status) as u8));
                    } else if libc::WIFSIGNALED(status) {
                        exit = Some(Exit::Signal(libc::WTERMSIG(status)));
                    }
                    if exit.is_some() && !quiet && unsafe { libc::isatty(2) } == 1 {
                        let n = children().len();
                        if n > 0 {
                            eprintln!(
                                "chainsocks: the program exited; staying until its {n} background process(es) exit (they use the launch's state)"
                            );
                        }
                    }
                } else if r > 0 {
                    continue; // an adopted orphan
                } else if r == 0 {
                    if let (Some(_), Some(sig)) = (&exit, terminating) {
                        for pid in children() {
                            // SAFETY: signalling our own child.
                            unsafe { libc::kill(pid, sig) };
                        }
                    }
                    break; // children remain
                } else {
                    // ECHILD: nobody is left (an error other than EINTR means the same here).
                    let e = std::io::Error::last_os_error();
                    if e.raw_os_error() == Some(libc::EINTR) {
                        continue;
                    }
                    return exit.ok_or_else(|| format!("lost the program's exit status ({e})"));
                }
            }
            continue;
        }
        // Forward only what a process sent (kill/sigqueue); a terminal's ^C already reached
        // the program, which is in our process group. After the program: to what remains.
        if info.si_code == libc::SI_USER
            || info.si_code == libc::SI_QUEUE
            || info.si_code == libc::SI_TKILL
        {
            if matches!(
                sig,
                libc::SIGINT | libc::SIGTERM | libc::SIGHUP | libc::SIGQUIT
            ) {
                terminating = Some(sig);
            }
            let targets = if exit.is_none() {
                vec![child]
            } else {
                children()
            };
            for pid in targets {
                // SAFETY: signalling our own child.
                unsafe { libc::kill(pid, sig) };
            }
        }
    }
}

/// Our children now (every thread's, from /proc).
fn children() -> Vec<libc::pid_t> {
    let mut out = Vec::new();
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
        return out;
    };
    for t in tasks.flatten() {
        if let Ok(text) = std::fs::read_to_string(t.path().join("children")) {
            out.extend(
                text.split_whitespace()
                    .filter_map(|p| p.parse::<libc::pid_t>().ok()),
            );
        }
    }
    out
}

/// Exits the way the program did: killed by `sig` (without a core file), else 128+sig.
fn die_like(sig: libc::c_int) -> ! {
    // SAFETY: resetting our own signal state before re-raising.
    unsafe {
        let lim = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        libc::setrlimit(libc::RLIMIT_CORE, &lim);
        libc::signal(sig, libc::SIG_DFL);
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, sig);
        libc::pthread_sigmask(libc::SIG_UNBLOCK, &set, std::ptr::null_mut());
        libc::raise(sig);
        libc::_exit(128 + sig);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn preload_keeps_existing_entries_once() {
        let lib = Path::new("/x/libchainsocks.so");
        assert_eq!(
            preload_value(lib, None),
            OsString::from("/x/libchainsocks.so")
        );
        assert_eq!(
            preload_value(lib, Some("/a.so /x/libchainsocks.so:/b.so".into())),
            OsString::from("/x/libchainsocks.so:/a.so:/b.so")
        );
    }
}
