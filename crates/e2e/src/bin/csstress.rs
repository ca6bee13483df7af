//! csstress: a small, dynamically linked stress client for the resolver hooks. It calls libc's
//! `getaddrinfo` (never Rust's std resolver) from many threads and across `fork`, and prints
//! what it got, so the tests (not this program) decide what is right.
//!
//! Owns: the subcommands below and their line outputs on stdout.
//! Never does: open a socket, or judge the answers beyond counting failures.
//!
//! ```text
//! csstress resolve NAME...
//!     -> "NAME IP" per name (first address, AF_INET), or "NAME gai=EAI_AGAIN (-3)"
//! csstress threads THREADS NAMES
//!     THREADS threads each resolve NAMES names: the even ones `s{i}.test` shared by every
//!     thread, the odd ones `t{thread}-{i}.test` their own. One line per lookup: "NAME IP".
//! csstress fork ROUNDS BG_THREADS
//!     BG_THREADS threads resolve `bg{t}-{i % 100}.test` in a loop (at nice 19, so the children
//!     are not starved) while the main thread forks ROUNDS times; each child resolves
//!     `child{r}.test`, writes "child R IP" and _exits (0 ok, 1 failed). A child still running
//!     after 30 s is killed and counted as hung (a deadlock; the limit only bounds it). Then
//!     the parent resolves every `child{r}.test` itself ("parent R IP") and prints
//!     "forks=R ok=N failed=N hung=N bg_lookups=N bg_errors=N elapsed_ms=N in_fork_ms=N
//!     in_wait_ms=N" (time spent in fork(2), and waiting for the children).
//! ```
//! Exit status: 0 if every lookup (and every child) succeeded, 1 otherwise, 2 on usage errors.

use std::ffi::CString;
use std::process::exit;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

fn usage() -> ! {
    eprintln!(
        "usage: csstress resolve NAME... | threads THREADS NAMES | fork ROUNDS BG_THREADS\n\
         (see the source's header)"
    );
    exit(2)
}

fn gai_name(e: i32) -> &'static str {
    match e {
        libc::EAI_AGAIN => "EAI_AGAIN",
        libc::EAI_FAIL => "EAI_FAIL",
        libc::EAI_NONAME => "EAI_NONAME",
        libc::EAI_SYSTEM => "EAI_SYSTEM",
        libc::EAI_MEMORY => "EAI_MEMORY",
        _ => "EAI_?",
    }
}

/// libc getaddrinfo(name, NULL, {AF_INET, SOCK_STREAM}): the first address as text, or the
/// EAI code. Formats in-process (no inet_ntop / getnameinfo a shim might hook); allocates only
/// through libc (safe in a child forked from a threaded process).
fn lookup(name: &CString) -> Result<[u8; 4], i32> {
    // SAFETY: zeroed hints are valid; `res` is walked read-only and freed once.
    unsafe {
        let mut hints: libc::addrinfo = std::mem::zeroed();
        hints.ai_family = libc::AF_INET;
        hints.ai_socktype = libc::SOCK_STREAM;
        let mut res: *mut libc::addrinfo = std::ptr::null_mut();
        let rc = libc::getaddrinfo(name.as_ptr(), std::ptr::null(), &hints, &mut res);
        if rc != 0 {
            return Err(rc);
        }
        if res.is_null() || (*res).ai_addr.is_null() || (*res).ai_family != libc::AF_INET {
            if !res.is_null() {
                libc::freeaddrinfo(res);
            }
            return Err(libc::EAI_FAIL);
        }
        let sin = &*((*res).ai_addr as *const libc::sockaddr_in);
        let ip = sin.sin_addr.s_addr.to_ne_bytes();
        libc::freeaddrinfo(res);
        Ok(ip)
    }
}

fn ip_text(ip: [u8; 4]) -> String {
    format!("{}.{}.{}.{}", ip[0], ip[1], ip[2], ip[3])
}

fn cname(s: &str) -> CString {
    CString::new(s).unwrap_or_else(|_| usage())
}

fn cmd_resolve(names: &[String]) -> bool {
    let mut ok = true;
    for n in names {
        match lookup(&cname(n)) {
            Ok(ip) => println!("{n} {}", ip_text(ip)),
            Err(rc) => {
                ok = false;
                println!("{n} gai={} ({rc})", gai_name(rc));
            }
        }
    }
    ok
}

fn cmd_threads(threads: usize, names: usize) -> bool {
    let handles: Vec<_> = (0..threads)
        .map(|t| {
            std::thread::spawn(move || {
                let mut out = String::with_capacity(names * 24);
                let mut failed = 0usize;
                for i in 0..names {
                    let name = if i % 2 == 0 {
                        format!("s{i}.test")
                    } else {
                        format!("t{t}-{i}.test")
                    };
                    match lookup(&cname(&name)) {
                        Ok(ip) => out.push_str(&format!("{name} {}\n", ip_text(ip))),
                        Err(rc) => {
                            failed += 1;
                            out.push_str(&format!("{name} gai={} ({rc})\n", gai_name(rc)));
                        }
                    }
                }
                (out, failed)
            })
        })
        .collect();
    let mut ok = true;
    for h in handles {
        match h.join() {
            Ok((out, failed)) => {
                print!("{out}");
                ok &= failed == 0;
            }
            Err(_) => {
                println!("error=thread-panicked");
                ok = false;
            }
        }
    }
    ok
}

/// Writes a whole line to fd 1 with one write(2) (no Rust stdout lock: usable in a child).
fn write_line(s: &str) {
    // SAFETY: a valid buffer of its length.
    unsafe { libc::write(1, s.as_ptr().cast(), s.len()) };
}

/// Waits for `pid` up to `limit`; `Some(status)` or `None` if it is still running.
fn wait_for(pid: libc::pid_t, limit: Duration) -> Option<i32> {
    let deadline = Instant::now() + limit;
    loop {
        let mut status = 0;
        // SAFETY: our own child.
        let r = unsafe { libc::waitpid(pid, &mut status, libc::WNOHANG) };
        if r == pid {
            return Some(status);
        }
        if r < 0 && std::io::Error::last_os_error().raw_os_error() != Some(libc::EINTR) {
            return Some(-1);
        }
        if Instant::now() >= deadline {
            return None;
        }
        std::thread::sleep(Duration::from_micros(500));
    }
}

fn cmd_fork(rounds: usize, bg: usize) -> bool {
    let stop = Arc::new(AtomicBool::new(false));
    let lookups = Arc::new(AtomicU64::new(0));
    let errors = Arc::new(AtomicU64::new(0));
    let workers: Vec<_> = (0..bg)
        .map(|t| {
            let (stop, lookups, errors) = (stop.clone(), lookups.clone(), errors.clone());
            std::thread::spawn(move || {
                // Nice 19: the forked children (nice 0) run at once instead of queueing
                // behind 63 busy threads; the workers still sit mid-lookup (preempted, holding
                // whatever they hold) whenever the main thread forks.
                // SAFETY: plain syscalls on this thread only.
                unsafe {
                    libc::setpriority(libc::PRIO_PROCESS, libc::gettid() as libc::id_t, 19);
                }
                let names: Vec<CString> = (0..100)
                    .map(|i| cname(&format!("bg{t}-{i}.test")))
                    .collect();
                let mut i = 0usize;
                while !stop.load(Ordering::Relaxed) {
                    if let Some(n) = names.get(i % names.len())
                        && lookup(n).is_err()
                    {
                        errors.fetch_add(1, Ordering::Relaxed);
                    }
                    lookups.fetch_add(1, Ordering::Relaxed);
                    i += 1;
                }
            })
        })
        .collect();
    // Let every worker get going before the first fork.
    while lookups.load(Ordering::Relaxed) < bg as u64 * 10 {
        std::thread::sleep(Duration::from_millis(1));
    }
    let child_names: Vec<CString> = (0..rounds)
        .map(|r| cname(&format!("child{r}.test")))
        .collect();
    let start = Instant::now();
    let (mut ok, mut failed, mut hung) = (0usize, 0usize, 0usize);
    let (mut in_fork, mut in_wait) = (Duration::ZERO, Duration::ZERO);
    for (r, name) in child_names.iter().enumerate() {
        let t0 = Instant::now();
        // SAFETY: the child only calls getaddrinfo (glibc makes malloc and its resolver state
        // fork-safe; the shim's state is lock-free), write(2) and _exit.
        let pid = unsafe { libc::fork() };
        if pid == 0 {
            let code = match lookup(name) {
                Ok(ip) => {
                    write_line(&format!("child {r} {}\n", ip_text(ip)));
                    0
                }
                Err(rc) => {
                    write_line(&format!("child {r} gai={} ({rc})\n", gai_name(rc)));
                    1
                }
            };
            // SAFETY: ends the child without running the parent's atexit handlers.
            unsafe { libc::_exit(code) };
        }
        let t1 = Instant::now();
        in_fork += t1 - t0;
        if pid < 0 {
            println!("error=fork {}", std::io::Error::last_os_error());
            failed += 1;
            continue;
        }
        match wait_for(pid, Duration::from_secs(30)) {
            Some(st) if libc::WIFEXITED(st) && libc::WEXITSTATUS(st) == 0 => ok += 1,
            Some(_) => failed += 1,
            None => {
                hung += 1;
                // SAFETY: our own child, not reaped yet.
                unsafe { libc::kill(pid, libc::SIGKILL) };
                let _ = wait_for(pid, Duration::from_secs(5));
            }
        }
        in_wait += t1.elapsed();
    }
    let elapsed = start.elapsed();
    stop.store(true, Ordering::Relaxed);
    let mut all_ok = ok == rounds;
    for w in workers {
        all_ok &= w.join().is_ok();
    }
    for (r, name) in child_names.iter().enumerate() {
        match lookup(name) {
            Ok(ip) => println!("parent {r} {}", ip_text(ip)),
            Err(rc) => {
                all_ok = false;
                println!("parent {r} gai={} ({rc})", gai_name(rc));
            }
        }
    }
    let bg_errors = errors.load(Ordering::Relaxed);
    println!(
        "forks={rounds} ok={ok} failed={failed} hung={hung} bg_lookups={} bg_errors={bg_errors} \
         elapsed_ms={} in_fork_ms={} in_wait_ms={}",
        lookups.load(Ordering::Relaxed),
        elapsed.as_millis(),
        in_fork.as_millis(),
        in_wait.as_millis()
    );
    all_ok && bg_errors == 0
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let num = |s: &String| s.parse::<usize>().unwrap_or_else(|_| usage());
    let ok = match args.split_first() {
        Some((cmd, names)) if cmd == "resolve" && !names.is_empty() => cmd_resolve(names),
        Some((cmd, [t, n])) if cmd == "threads" => cmd_threads(num(t), num(n)),
        Some((cmd, [r, b])) if cmd == "fork" => cmd_fork(num(r), num(b)),
        _ => usage(),
    };
    exit(if ok { 0 } else { 1 })
}
