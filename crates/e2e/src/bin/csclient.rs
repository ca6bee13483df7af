//! csclient: a small, dynamically linked test client that calls libc directly
//! (socket, connect, getaddrinfo, read/write, poll, fcntl), so an LD_PRELOAD
//! shim sees exactly these calls.
//!
//! Owns: the subcommands below and their one-line outputs on stdout.
//! Never does: use Rust's std networking (that would hide what an app does),
//! retry silently, or print anything but results on stdout (diagnostics go to
//! stderr).
//!
//! ```text
//! csclient connect HOST PORT [--family 4|6] [--v6sock] [--nonblock] [--timeout-ms N]
//!     -> [connect=immediate|connect=inprogress] [flags=nonblock-kept] ok
//! csclient echo HOST PORT [--count N] [--bytes B] [--time] [socket flags]
//!     -> ok N [median_us=U]
//! csclient http HOST PORT PATH [socket flags]
//!     -> status=200 len=N sha256=HEX
//! csclient resolve NAME [--family 4|6|0]
//!     -> one address per line
//! csclient seq STEP... [--signals restart|norestart] [--signal-ms N] [socket flags]
//!     STEP = HOST,PORT[,read=N][,echo=B]
//!     -> per step: step=I ok ms=M [read=ESCAPED] [echo=ok] [signals=S]
//!                | step=I errno=NAME (n) ms=M [signals=S]
//!        then maxrss_kb=K [signals_total=N]
//! ```
//! `seq` makes one connection per STEP, in order, in the same process, and goes on after a
//! failed step (a failure is reported on its line, never retried): "try A, then B". `ms` is
//! the time the connect call took (non-blocking: until it is writable). After a successful
//! connect, `read=N` reads exactly N bytes first and prints them (escaped), `echo=B` writes B
//! bytes and reads them back. `--signals` installs a SIGALRM handler (with or without
//! SA_RESTART) and an interval timer (every `--signal-ms`, default 10) for the whole run;
//! `signals=S` counts the signals received during that step's connect. Exit status 0 if every
//! step succeeded, else 1. `maxrss_kb` is this process's peak RSS (getrusage).
//! Failure: `errno=ECONNREFUSED (111)` (or `gai=EAI_NONAME (-2)`, or
//! `error=...`) on stdout, exit status 1. Usage errors exit 2.
//! HOST always goes through getaddrinfo (IP literals too), with the family
//! given; every returned address is tried in order. `--v6sock` connects an
//! AF_INET6 socket to an IPv4 destination as ::ffff:a.b.c.d. `--timeout-ms`
//! (default 10000) bounds the non-blocking connect poll and every read/write
//! (SO_RCVTIMEO/SO_SNDTIMEO on blocking sockets, which also bounds connect).

use e2e::clientsys::{self, Addr, Fd, errno, errno_name, fail, poll_one};
use sha2::{Digest, Sha256};
use std::process::exit;
use std::time::Instant;

/// SIGALRMs received (`seq --signals`).
static SIGNALS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

#[derive(Clone, Copy)]
struct Opts {
    family: i32,
    v6sock: bool,
    nonblock: bool,
    timeout_ms: i32,
    count: usize,
    bytes: usize,
    time: bool,
    /// `seq --signals`: Some(true) = SA_RESTART, Some(false) = without.
    signals: Option<bool>,
    signal_ms: i64,
}

fn usage() -> ! {
    eprintln!(
        "usage: csclient connect|echo|http|resolve ... (see the source's header)\n\
         connect HOST PORT [--family 4|6] [--v6sock] [--nonblock] [--timeout-ms N]\n\
         echo HOST PORT [--count N] [--bytes B] [--time] [socket flags]\n\
         http HOST PORT PATH [socket flags]\n\
         resolve NAME [--family 4|6|0]\n\
         seq HOST,PORT[,read=N][,echo=B]... [--signals restart|norestart] [--signal-ms N]"
    );
    exit(2)
}

/// Prints the errno line and exits 1.
fn fail_errno(what: &str, e: i32) -> ! {
    clientsys::fail_errno("csclient", what, e)
}

/// getaddrinfo(host, port) with the given family and SOCK_STREAM.
fn resolve(host: &str, port: Option<&str>, family: i32) -> Vec<Addr> {
    clientsys::resolve("csclient", host, port, family, libc::SOCK_STREAM)
}

/// Connects to one address. `verbose` prints the connect/flags lines.
fn connect_addr(a: Addr, o: &Opts, verbose: bool) -> Result<Fd, i32> {
    let a = if o.v6sock { a.v4mapped() } else { a };
    // SAFETY: socket/fcntl/setsockopt/connect/getsockopt with valid pointers
    // and sizes; the descriptor is owned by `Fd`.
    unsafe {
        let fd = libc::socket(a.family(), libc::SOCK_STREAM, 0);
        if fd < 0 {
            return Err(errno());
        }
        let fd = Fd(fd);
        if o.nonblock {
            let fl = libc::fcntl(fd.0, libc::F_GETFL);
            if fl < 0 || libc::fcntl(fd.0, libc::F_SETFL, fl | libc::O_NONBLOCK) < 0 {
                return Err(errno());
            }
        } else {
            let tv = libc::timeval {
                tv_sec: (o.timeout_ms / 1000) as libc::time_t,
                tv_usec: ((o.timeout_ms % 1000) * 1000) as libc::suseconds_t,
            };
            for opt in [libc::SO_RCVTIMEO, libc::SO_SNDTIMEO] {
                libc::setsockopt(
                    fd.0,
                    libc::SOL_SOCKET,
                    opt,
                    &tv as *const _ as *const libc::c_void,
                    std::mem::size_of::<libc::timeval>() as libc::socklen_t,
                );
            }
        }
        let r = libc::connect(fd.0, &a.ss as *const _ as *const libc::sockaddr, a.len);
        if r == 0 {
            if o.nonblock && verbose {
                println!("connect=immediate");
            }
        } else {
            let e = errno();
            if !(o.nonblock && e == libc::EINPROGRESS) {
                // A blocking connect that hit SO_SNDTIMEO reports EINPROGRESS.
                return Err(if e == libc::EINPROGRESS {
                    libc::ETIMEDOUT
                } else {
                    e
                });
            }
            if verbose {
                println!("connect=inprogress");
            }
            poll_one(fd.0, libc::POLLOUT, o.timeout_ms)?;
            let mut err: libc::c_int = 0;
            let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
            if libc::getsockopt(
                fd.0,
                libc::SOL_SOCKET,
                libc::SO_ERROR,
                &mut err as *mut _ as *mut libc::c_void,
                &mut len,
            ) != 0
            {
                return Err(errno());
            }
            if err != 0 {
                return Err(err);
            }
        }
        if o.nonblock {
            let fl = libc::fcntl(fd.0, libc::F_GETFL);
            if fl >= 0 && fl & libc::O_NONBLOCK != 0 {
                if verbose {
                    println!("flags=nonblock-kept");
                }
            } else {
                println!("flags=nonblock-lost");
                fail("nonblock-lost");
            }
        }
        Ok(fd)
    }
}

/// Resolves and connects, trying every address; exits on failure.
fn connect_host(host: &str, port: &str, o: &Opts, verbose: bool) -> Fd {
    let addrs = resolve(host, Some(port), o.family);
    if addrs.is_empty() {
        fail("no-address");
    }
    let mut last = 0;
    for a in addrs {
        match connect_addr(a, o, verbose) {
            Ok(fd) => return fd,
            Err(e) => {
                eprintln!(
                    "csclient: connect {}: {}",
                    a.text(),
                    std::io::Error::from_raw_os_error(e)
                );
                last = e;
            }
        }
    }
    fail_errno("connect", last)
}

fn write_all(fd: &Fd, mut buf: &[u8], o: &Opts) -> Result<(), i32> {
    while !buf.is_empty() {
        // SAFETY: valid buffer and length.
        let n = unsafe { libc::write(fd.0, buf.as_ptr() as *const libc::c_void, buf.len()) };
        if n < 0 {
            let e = errno();
            if e == libc::EAGAIN && o.nonblock {
                poll_one(fd.0, libc::POLLOUT, o.timeout_ms)?;
                continue;
            }
            if e == libc::EINTR {
                continue;
            }
            return Err(if e == libc::EAGAIN {
                libc::ETIMEDOUT
            } else {
                e
            });
        }
        buf = buf.get(n as usize..).unwrap_or_default();
    }
    Ok(())
}

/// One read; 0 = EOF.
fn read_some(fd: &Fd, buf: &mut [u8], o: &Opts) -> Result<usize, i32> {
    loop {
        // SAFETY: valid buffer and length.
        let n = unsafe { libc::read(fd.0, buf.as_mut_ptr() as *mut libc::c_void, buf.len()) };
        if n >= 0 {
            return Ok(n as usize);
        }
        let e = errno();
        if e == libc::EAGAIN && o.nonblock {
            poll_one(fd.0, libc::POLLIN, o.timeout_ms)?;
            continue;
        }
        if e == libc::EINTR {
            continue;
        }
        return Err(if e == libc::EAGAIN {
            libc::ETIMEDOUT
        } else {
            e
        });
    }
}

fn cmd_connect(host: &str, port: &str, o: &Opts) {
    let _fd = connect_host(host, port, o, true);
    println!("ok");
}

fn cmd_echo(host: &str, port: &str, o: &Opts) {
    let payload: Vec<u8> = (0..o.bytes).map(|i| (i % 251) as u8).collect();
    let mut back = vec![0u8; o.bytes.max(1)];
    let mut times = Vec::with_capacity(o.count);
    for i in 0..o.count {
        let t0 = Instant::now();
        let fd = connect_host(host, port, o, false);
        if let Err(e) = write_all(&fd, &payload, o) {
            fail_errno("write", e);
        }
        let mut got = 0;
        while got < o.bytes {
            match read_some(&fd, back.get_mut(got..o.bytes).unwrap_or_default(), o) {
                Ok(0) => fail(&format!("eof-after-{got}-bytes-conn-{i}")),
                Ok(n) => got += n,
                Err(e) => fail_errno("read", e),
            }
        }
        if back.get(..o.bytes) != Some(&payload[..]) {
            fail("mismatch");
        }
        drop(fd);
        times.push(t0.elapsed().as_micros());
    }
    if o.time {
        times.sort_unstable();
        let median = times.get(times.len() / 2).copied().unwrap_or(0);
        println!("ok {} median_us={median}", o.count);
    } else {
        println!("ok {}", o.count);
    }
}

fn cmd_http(host: &str, port: &str, path: &str, o: &Opts) {
    let fd = connect_host(host, port, o, false);
    let hosthdr = if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    };
    let req = format!(
        "GET {path} HTTP/1.1\r\nHost: {hosthdr}\r\nUser-Agent: csclient\r\nConnection: close\r\n\r\n"
    );
    if let Err(e) = write_all(&fd, req.as_bytes(), o) {
        fail_errno("write", e);
    }
    let mut resp = Vec::new();
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        match read_some(&fd, &mut buf, o) {
            Ok(0) => break,
            Ok(n) => resp.extend_from_slice(buf.get(..n).unwrap_or_default()),
            Err(e) => fail_errno("read", e),
        }
    }
    let Some(end) = resp.windows(4).position(|w| w == b"\r\n\r\n") else {
        fail("no-http-header")
    };
    let head = String::from_utf8_lossy(resp.get(..end).unwrap_or_default()).into_owned();
    let body = resp.get(end + 4..).unwrap_or_default();
    let status = head
        .lines()
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .unwrap_or("?")
        .to_string();
    let clen = head.lines().find_map(|l| {
        let (k, v) = l.split_once(':')?;
        k.trim()
            .eq_ignore_ascii_case("content-length")
            .then(|| v.trim().parse::<usize>().ok())
            .flatten()
    });
    let d = Sha256::digest(body);
    let hex: String = d.iter().map(|b| format!("{b:02x}")).collect();
    println!("status={status} len={} sha256={hex}", body.len());
    if let Some(c) = clen
        && c != body.len()
    {
        fail(&format!("length-mismatch expected={c} got={}", body.len()));
    }
}

fn cmd_resolve(name: &str, o: &Opts) {
    for a in resolve(name, None, o.family) {
        println!("{}", a.text());
    }
}

/// One `seq` step: `HOST,PORT[,read=N][,echo=B]`.
struct Step {
    host: String,
    port: String,
    read: usize,
    echo: usize,
}

fn parse_step(spec: &str) -> Step {
    let mut parts = spec.split(',');
    let (Some(host), Some(port)) = (parts.next(), parts.next()) else {
        usage()
    };
    let mut st = Step {
        host: host.to_string(),
        port: port.to_string(),
        read: 0,
        echo: 0,
    };
    for p in parts {
        match p.split_once('=') {
            Some(("read", n)) => st.read = n.parse().unwrap_or_else(|_| usage()),
            Some(("echo", n)) => st.echo = n.parse().unwrap_or_else(|_| usage()),
            _ => usage(),
        }
    }
    st
}

extern "C" fn on_alarm(_sig: libc::c_int) {
    SIGNALS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
}

/// Installs the SIGALRM handler and starts (`ms` > 0) or stops (`ms` = 0) the interval timer.
fn alarm_every(ms: i64, restart: bool) {
    // SAFETY: a zeroed sigaction with a valid handler and an empty mask; itimerval is plain
    // data. The handler only touches an atomic (async-signal-safe).
    unsafe {
        if ms > 0 {
            let mut sa: libc::sigaction = std::mem::zeroed();
            sa.sa_sigaction = on_alarm as extern "C" fn(libc::c_int) as libc::sighandler_t;
            sa.sa_flags = if restart { libc::SA_RESTART } else { 0 };
            libc::sigemptyset(&mut sa.sa_mask);
            if libc::sigaction(libc::SIGALRM, &sa, std::ptr::null_mut()) != 0 {
                fail_errno("sigaction", errno());
            }
        }
        let tv = libc::timeval {
            tv_sec: (ms / 1000) as libc::time_t,
            tv_usec: ((ms % 1000) * 1000) as libc::suseconds_t,
        };
        let it = libc::itimerval {
            it_interval: tv,
            it_value: tv,
        };
        if libc::setitimer(libc::ITIMER_REAL, &it, std::ptr::null_mut()) != 0 {
            fail_errno("setitimer", errno());
        }
    }
}

/// Runs one step; returns its line (after `step=I `) and whether it succeeded.
fn seq_step(st: &Step, o: &Opts) -> (String, bool) {
    use std::sync::atomic::Ordering::Relaxed;
    let Some(&a) = resolve(&st.host, Some(&st.port), o.family).first() else {
        return ("error=no-address".into(), false);
    };
    let sig0 = SIGNALS.load(Relaxed);
    let t0 = Instant::now();
    let r = connect_addr(a, o, false);
    let ms = t0.elapsed().as_millis();
    let sigs = SIGNALS.load(Relaxed) - sig0;
    let sig_note = if o.signals.is_some() {
        format!(" signals={sigs}")
    } else {
        String::new()
    };
    let fd = match r {
        Ok(fd) => fd,
        Err(e) => {
            eprintln!(
                "csclient: connect {}: {}",
                a.text(),
                std::io::Error::from_raw_os_error(e)
            );
            return (
                format!("errno={} ({e}) ms={ms}{sig_note}", errno_name(e)),
                false,
            );
        }
    };
    let mut line = format!("ok ms={ms}");
    if st.read > 0 {
        let mut got = vec![0u8; st.read];
        let mut n = 0;
        while n < st.read {
            match read_some(&fd, got.get_mut(n..).unwrap_or_default(), o) {
                Ok(0) => {
                    line.push_str(&format!(" read=eof-after-{n}-bytes{sig_note}"));
                    return (line, false);
                }
                Ok(k) => n += k,
                Err(e) => {
                    line.push_str(&format!(" read_errno={}{sig_note}", errno_name(e)));
                    return (line, false);
                }
            }
        }
        line.push_str(&format!(" read={}", got.escape_ascii()));
    }
    if st.echo > 0 {
        let payload: Vec<u8> = (0..st.echo).map(|i| (i % 251) as u8).collect();
        let mut back = vec![0u8; st.echo];
        let mut n = 0;
        let mut res = write_all(&fd, &payload, o);
        while res.is_ok() && n < st.echo {
            match read_some(&fd, back.get_mut(n..).unwrap_or_default(), o) {
                Ok(0) => res = Err(0),
                Ok(k) => n += k,
                Err(e) => res = Err(e),
            }
        }
        match res {
            Ok(()) if back == payload => line.push_str(" echo=ok"),
            Ok(()) => line.push_str(" echo=mismatch"),
            Err(0) => line.push_str(&format!(" echo=eof-after-{n}-bytes")),
            Err(e) => line.push_str(&format!(" echo_errno={}", errno_name(e))),
        }
        if !line.ends_with("echo=ok") {
            line.push_str(&sig_note);
            return (line, false);
        }
    }
    line.push_str(&sig_note);
    (line, true)
}

fn cmd_seq(specs: &[&str], o: &Opts) {
    use std::io::Write as _;
    let steps: Vec<Step> = specs.iter().map(|s| parse_step(s)).collect();
    if let Some(restart) = o.signals {
        alarm_every(o.signal_ms.max(1), restart);
    }
    let mut all_ok = true;
    for (i, st) in steps.iter().enumerate() {
        let (line, ok) = seq_step(st, o);
        all_ok &= ok;
        println!("step={} {line}", i + 1);
        let _ = std::io::stdout().flush();
    }
    if o.signals.is_some() {
        alarm_every(0, false);
    }
    // SAFETY: zeroed rusage is a valid out-parameter.
    let maxrss = unsafe {
        let mut ru: libc::rusage = std::mem::zeroed();
        libc::getrusage(libc::RUSAGE_SELF, &mut ru);
        ru.ru_maxrss
    };
    let total = if o.signals.is_some() {
        format!(
            " signals_total={}",
            SIGNALS.load(std::sync::atomic::Ordering::Relaxed)
        )
    } else {
        String::new()
    };
    println!("maxrss_kb={maxrss}{total}");
    exit(if all_ok { 0 } else { 1 })
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut pos: Vec<&str> = Vec::new();
    let mut o = Opts {
        family: libc::AF_UNSPEC,
        v6sock: false,
        nonblock: false,
        timeout_ms: 10_000,
        count: 1,
        bytes: 1,
        time: false,
        signals: None,
        signal_ms: 10,
    };
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let mut val = || it.next().map(String::as_str).unwrap_or_else(|| usage());
        match a.as_str() {
            "--family" => o.family = clientsys::family_arg(val()).unwrap_or_else(|| usage()),
            "--v6sock" => o.v6sock = true,
            "--nonblock" => o.nonblock = true,
            "--time" => o.time = true,
            "--timeout-ms" => o.timeout_ms = val().parse().unwrap_or_else(|_| usage()),
            "--count" => o.count = val().parse().unwrap_or_else(|_| usage()),
            "--bytes" => o.bytes = val().parse().unwrap_or_else(|_| usage()),
            "--signals" => {
                o.signals = match val() {
                    "restart" => Some(true),
                    "norestart" => Some(false),
                    _ => usage(),
                }
            }
            "--signal-ms" => o.signal_ms = val().parse().unwrap_or_else(|_| usage()),
            s if s.starts_with("--") => usage(),
            s => pos.push(s),
        }
    }
    match pos.as_slice() {
        ["connect", host, port] => cmd_connect(host, port, &o),
        ["echo", host, port] => cmd_echo(host, port, &o),
        ["http", host, port, path] => cmd_http(host, port, path, &o),
        ["resolve", name] => cmd_resolve(name, &o),
        ["seq", steps @ ..] if !steps.is_empty() => cmd_seq(steps, &o),
        _ => usage(),
    }
}
