//! Load and fork-safety driver for the end-to-end tests (run under chainsocks).
//!
//! csload threads HOST PORT THREADS PER       THREADS × PER connect + 16-byte echo
//! csload forks HOST PORT THREADS ITERATIONS  workers connect+echo and resolve new names while
//!                                            a random worker forks; each child connects and
//!                                            resolves once, then exits; parent waits (timeout)
//! csload rss HOST PORT COUNT                 sequential connections; prints VmRSS (KiB) after
//!                                            1,000 and after COUNT connections
//! Prints `ok …` on success, a reason and exit 1 otherwise.

use std::io::{Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

fn echo_once(host: &str, port: u16) -> Result<(), String> {
    let mut s = TcpStream::connect((host, port)).map_err(|e| format!("connect: {e}"))?;
    s.set_read_timeout(Some(Duration::from_secs(10))).ok();
    let msg = *b"0123456789abcdef";
    s.write_all(&msg).map_err(|e| format!("write: {e}"))?;
    let mut back = [0u8; 16];
    s.read_exact(&mut back).map_err(|e| format!("read: {e}"))?;
    if back != msg {
        return Err("echo mismatch".into());
    }
    Ok(())
}

fn resolve(name: &str) -> Result<(), String> {
    (name, 80)
        .to_socket_addrs()
        .map(|_| ())
        .map_err(|e| format!("resolve {name}: {e}"))
}

fn rss_kib() -> u64 {
    let s = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    s.lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let arg = |i: usize| args.get(i).cloned().unwrap_or_default();
    let num = |i: usize| arg(i).parse::<usize>().unwrap_or(0);
    let (host, port) = (arg(2), arg(3).parse::<u16>().unwrap_or(0));
    let result = match arg(1).as_str() {
        "threads" => threads(&host, port, num(4), num(5)),
        "forks" => forks(&host, port, num(4), num(5)),
        "rss" => rss(&host, port, num(4)),
        _ => Err("usage: csload threads|forks|rss HOST PORT …".into()),
    };
    match result {
        Ok(msg) => println!("ok {msg}"),
        Err(e) => {
            println!("error: {e}");
            std::process::exit(1);
        }
    }
}

fn threads(host: &str, port: u16, n: usize, per: usize) -> Result<String, String> {
    let done = Arc::new(AtomicUsize::new(0));
    let handles: Vec<_> = (0..n)
        .map(|_| {
            let (host, done) = (host.to_string(), Arc::clone(&done));
            std::thread::spawn(move || -> Result<(), String> {
                for _ in 0..per {
                    echo_once(&host, port)?;
                    done.fetch_add(1, Ordering::Relaxed);
                }
                Ok(())
            })
        })
        .collect();
    for h in handles {
        h.join().map_err(|_| "thread panicked".to_string())??;
    }
    Ok(format!("{}", done.load(Ordering::Relaxed)))
}

fn forks(host: &str, port: u16, n: usize, iterations: usize) -> Result<String, String> {
    let stop = Arc::new(AtomicBool::new(false));
    let want_fork = Arc::new(AtomicUsize::new(0));
    let forked = Arc::new(AtomicUsize::new(0));
    let failed = Arc::new(AtomicUsize::new(0));
    let start = Instant::now();
    let handles: Vec<_> = (0..n)
        .map(|t| {
            let host = host.to_string();
            let (stop, want, forked, failed) = (
                Arc::clone(&stop),
                Arc::clone(&want_fork),
                Arc::clone(&forked),
                Arc::clone(&failed),
            );
            std::thread::spawn(move || {
                let mut i = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    // Claim a pending fork request: this (random) worker forks.
                    if want.load(Ordering::Relaxed) > 0 && want.fetch_sub(1, Ordering::AcqRel) > 0 {
                        if fork_and_check(&host, port, t).is_err() {
                            failed.fetch_add(1, Ordering::Relaxed);
                        }
                        forked.fetch_add(1, Ordering::Relaxed);
                        continue;
                    }
                    i += 1;
                    if echo_once(&host, port).is_err()
                        || resolve(&format!("w{t}-{i}.load.test")).is_err()
                    {
                        failed.fetch_add(1, Ordering::Relaxed);
                    }
                }
            })
        })
        .collect();
    for k in 0..iterations {
        want_fork.fetch_add(1, Ordering::AcqRel);
        let t0 = Instant::now();
        while forked.load(Ordering::Relaxed) <= k {
            if t0.elapsed() > Duration::from_secs(20) {
                stop.store(true, Ordering::Relaxed);
                return Err(format!("fork {k} did not complete within 20 s (deadlock?)"));
            }
            std::thread::sleep(Duration::from_millis(1));
        }
    }
    stop.store(true, Ordering::Relaxed);
    for h in handles {
        let _ = h.join();
    }
    match failed.load(Ordering::Relaxed) {
        0 => Ok(format!(
            "{iterations} forks in {:.1} s",
            start.elapsed().as_secs_f64()
        )),
        f => Err(format!("{f} failures")),
    }
}

/// Forks; the child connects through the chain and resolves a new name, then exits. The parent
/// waits up to 10 s for it.
fn fork_and_check(host: &str, port: u16, t: usize) -> Result<(), String> {
    let name = format!("child{t}-{}.load.test", std::process::id());
    // SAFETY: fork; the child only runs this function's code and exits with _exit.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        return Err("fork failed".into());
    }
    if pid == 0 {
        let ok = echo_once(host, port).is_ok() && resolve(&name).is_ok();
        // SAFETY: leaving the child without running the parent's atexit handlers.
        unsafe { libc::_exit(if ok { 0 } else { 1 }) };
    }
    let t0 = Instant::now();
    loop {
        let mut status = 0;
        // SAFETY: reaping our own child.
        let r = unsafe { libc::waitpid(pid, &mut status, libc::WNOHANG) };
        if r == pid {
            return if libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0 {
                Ok(())
            } else {
                Err(format!("child status {status}"))
            };
        }
        if t0.elapsed() > Duration::from_secs(10) {
            // SAFETY: killing our own hung child.
            unsafe { libc::kill(pid, libc::SIGKILL) };
            return Err("child hung".into());
        }
        std::thread::sleep(Duration::from_millis(1));
    }
}

fn rss(host: &str, port: u16, count: usize) -> Result<String, String> {
    let mut at1000 = 0;
    for i in 1..=count {
        echo_once(host, port)?;
        if i == 1000 {
            at1000 = rss_kib();
        }
    }
    Ok(format!("rss1000={at1000} rss{count}={}", rss_kib()))
}
