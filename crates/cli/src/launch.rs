//! Starting the program: the shared-state memory file, the environment (LD_PRELOAD,
//! CHAINSOCKS_SHM), fork + exec, and supervision until the program exits.
//!
//! The launcher stays alive as the program's parent because it owns the shared state: a memfd
//! that any process of the tree opens as `/proc/<launcher pid>/fd/<n>` (nothing for the program
//! to close, nothing left behind: the kernel frees it when the launcher exits). It forwards
//! the signals a process sends it (SIGINT, SIGTERM, SIGHUP, SIGQUIT, SIGUSR1, SIGUSR2) to the
//! program — not terminal-generated ones, which the program already received — and exits with
//! the program's status (dying of the same signal if the program was killed).
//! Must never: run the program without the library when it was asked to, or leave the
//! program's signal mask changed.

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
/// With `file`, the state is a regular file at that path instead (for `--isolate` as an
/// unprivileged user: a process in a child user namespace may not open another namespace's
/// `/proc/<pid>/fd`); the caller removes it.
fn create_shm(cfg: &Config, file: Option<&Path>) -> Result<(libc::c_int, String), String> {
    let capacity = cfg.fake_ranges().map_err(|e| e.to_string())?.capacity();
    let bytes = shm::build(&cfg.to_toml(), capacity);
    let total = shm::total_size(&bytes).ok_or("bad shared-state layout")?;
    let fd = match file {
        // SAFETY: memfd_create with a static name.
        None => unsafe { libc::memfd_create(c"chainsocks".as_ptr(), libc::MFD_CLOEXEC) },
        Some(p) => {
            let c = cstring(p.as_os_str())?;
            // SAFETY: open with a valid path; a new file only we can read.
            unsafe {
                libc::open(
                    c.as_ptr(),
                    libc::O_RDWR | libc::O_CREAT | libc::O_EXCL | libc::O_CLOEXEC,
                    0o600,
                )
            }
        }
    };
    if fd < 0 {
        return Err(format!(
            "creating the shared state: {}",
            std::io::Error::last_os_error()
        ));
    }
    // If the launcher was started with fd 0-2 closed, never let the state file be one of them
    // (a later message to stderr would land in it).
    let fd = if fd < 3 {
        // SAFETY: duplicating our own fd above 2, then closing the low one.
        let high = unsafe { libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, 3) };
        unsafe { libc::close(fd) };
        if high < 0 {
            return Err(format!("fcntl: {}", std::io::Error::last_os_error()));
        }
        high
    } else {
        fd
    };
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
    if let Some(p) = file {
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
}

/// Runs `command` under the shim and returns its exit status as ours.
pub fn run(cfg: &Config, command: &[OsString], extras: Extras) -> ExitCode {
    match try_run(cfg, command, &extras) {
        Ok(exit) => {
            if let Some(report) = &extras.summary {
                eprint!("{}", crate::summary::summarize(report));
            }
            match exit {
                Exit::Code(c) => ExitCode::from(c),
                Exit::Signal(sig) => die_like(sig),
            }
        }
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
    let lib = crate::embedded::library()?;
    let state_file = extras.sandbox.as_ref().map(|p| p.state_file.clone());
    let (_shm_fd, shm_path) = create_shm(cfg, state_file.as_deref())?;

    // Build argv and envp before fork: the child only calls async-signal-safe functions.
    let argv: Vec<CString> = command
        .iter()
        .map(|a| cstring(a))
        .collect::<Result<_, _>>()?;
    let mut env: Vec<(OsString, OsString)> = std::env::vars_os()
        .filter(|(k, _)| k != "LD_PRELOAD" && k != shm::ENV)
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

    // Block the signals we wait for (and forward) before forking, so none is lost.
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

    let chan = match &extras.sandbox {
        Some(_) => {
            Some(std::os::unix::net::UnixStream::pair().map_err(|e| format!("socketpair: {e}"))?)
        }
        None => None,
    };
    // SAFETY: fork in a single-threaded launcher; the child only sets up its sandbox (if any),
    // then execs or _exits.
    let child = unsafe { libc::fork() };
    if child < 0 {
        return Err(format!("fork: {}", std::io::Error::last_os_error()));
    }
    if child == 0 {
        if let (Some(plan), Some((_, theirs))) = (&extras.sandbox, &chan)
            && let Err(why) = crate::isolate::enter(plan, theirs)
        {
            crate::isolate::report_failure(theirs, &why);
            // SAFETY: leaving the child without running the launcher's destructors.
            unsafe { libc::_exit(2) };
        }
        // SAFETY: async-signal-safe calls only; pointers built before fork.
        unsafe {
            libc::pthread_sigmask(libc::SIG_SETMASK, &oldmask, std::ptr::null_mut());
            exec_child(prog, &argv_p, &envp_p, path_var.as_deref());
        }
    }
    if let (Some(plan), Some((ours, theirs))) = (&extras.sandbox, chan) {
        drop(theirs);
        match crate::isolate::receive(&ours, plan.forwards.len()) {
            Ok(listeners) => {
                crate::isolate::forward(listeners, &plan.forwards);
                use std::io::Write;
                (&ours)
                    .write_all(b"g")
                    .map_err(|e| format!("starting the sandboxed program: {e}"))?;
            }
            Err(why) => {
                let mut status = 0;
                // SAFETY: reaping our own child, which exits after reporting.
                unsafe { libc::waitpid(child, &mut status, 0) };
                return Err(format!("--isolate: {why}"));
            }
        }
    }
    supervise(child, &waitset)
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

/// Waits for the program, forwarding signals sent to us; returns how it ended.
fn supervise(child: libc::pid_t, waitset: &libc::sigset_t) -> Result<Exit, String> {
    loop {
        // SAFETY: zeroed siginfo is a valid out-parameter.
        let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
        // SAFETY: waiting for signals that are blocked in this thread.
        let sig = unsafe { libc::sigwaitinfo(waitset, &mut info) };
        if sig < 0 {
            continue; // EINTR
        }
        if sig == libc::SIGCHLD {
            let mut status = 0;
            // SAFETY: reaping our own child.
            let r = unsafe { libc::waitpid(child, &mut status, libc::WNOHANG) };
            if r == child {
                if libc::WIFEXITED(status) {
                    return Ok(Exit::Code(libc::WEXITSTATUS(status) as u8));
                }
                if libc::WIFSIGNALED(status) {
                    return Ok(Exit::Signal(libc::WTERMSIG(status)));
                }
            }
            continue;
        }
        // Forward only what a process sent (kill/sigqueue); a terminal's ^C already reached
        // the program, which is in our process group.
        if info.si_code == libc::SI_USER
            || info.si_code == libc::SI_QUEUE
            || info.si_code == libc::SI_TKILL
        {
            // SAFETY: signalling our own child.
            unsafe { libc::kill(child, sig) };
        }
    }
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
