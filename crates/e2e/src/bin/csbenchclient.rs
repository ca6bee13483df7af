//! csbenchclient: the benchmark's client (driven by `csbench`, see scripts/bench). Small and
//! dynamically linked; it calls libc directly (socket, connect, read, write, getaddrinfo), so
//! an LD_PRELOAD shim (chainsocks or proxychains4) sees exactly these calls, and it times from
//! inside the process so that process start-up never hides the shim's per-call cost.
//!
//! ```text
//! csbenchclient echo HOST PORT N [--socks5 H:P[,H:P...] [--pipeline all|hold-last]]
//!                                [--pair [--self]]
//!     N sequential connections: socket, connect, [the SOCKS5 handshake of every hop, done by
//!     this client itself, one hop after the other], write 1 byte, read it back, close.
//!     --pipeline all: the client's own handshake sends every hop's greeting and CONNECT in
//!     one write, then reads every reply; hold-last: the same, except that the last hop's
//!     CONNECT is sent only after its greeting's reply came back.
//!     --pair (run under a shim): N pairs instead, alternately ordered (AB BA AB …): A is the
//!     libc path without --socks5 (the shim proxies it), B the floor: raw `syscall()`s, which
//!     no LD_PRELOAD shim sees, with the client's own SOCKS5 handshake over --socks5. Both
//!     halves of a pair run within a millisecond of each other, so background load cancels
//!     out of their difference. B's timings are printed as floor_connect_ns / floor_echo_ns.
//!     B's connect carries chainsocks' marker length (113, zero-padded), which the launcher's
//!     seccomp supervisor lets through: under the launcher only A is proxied, as under a shim.
//!     --pair --self (no shim, the null test of the method): A speaks SOCKS5 itself too.
//!     -> connect_ns V...   per connection: socket() until connect() returned (or, with
//!                          --socks5, until the last hop's reply was read)
//!        echo_ns V...      per connection: socket() until the echoed byte was read
//!        vmhwm_kb K        peak RSS of this process (/proc/self/status VmHWM)
//!        loop cpu_ns C wall_ns W   CPU time (user + system, getrusage) and wall time of
//!                          the N connections together
//! csbenchclient bulk HOST PORT BYTES [--socks5 H:P[,H:P...]] [--pair [--floor-first]]
//!     One connection that reads BYTES from the bulk source in requests of 64 MiB (each a
//!     little-endian u64 count, answered with that many bytes).
//!     -> bulk_ns T bytes B (T: the time from each request to its last byte, summed)
//!     --pair: two connections open together, the libc one (proxied by the shim) and the
//!     raw-syscall floor with the client's own SOCKS5 handshake (floor_bulk_ns); their
//!     requests alternate, AB BA AB … (BA AB … with --floor-first), BYTES through each.
//! csbenchclient resolve new|known|name=NAME|spin THREADS COUNT
//!     COUNT getaddrinfo(NAME, "80", {AF_UNSPEC, SOCK_STREAM}) + freeaddrinfo calls spread over
//!     THREADS threads started together. `new`: every call a name never asked before;
//!     `known`: 64 names asked once before the clock starts, then cycled; `name=NAME`: that
//!     name every time; `spin`: no lookup, a fixed CPU-bound loop of about a lookup's length
//!     (what the machine's CPUs give THREADS threads: the calibration of the scaling limit).
//!     -> resolve n=COUNT wall_ns W median_ns M first=ADDR
//! csbenchclient exec ROUNDS PROGRAM VARIANT...
//!     B3's paired breakdown: in each round PROGRAM (no arguments) is spawned once per
//!     VARIANT, in an order rotating every round, each timed from posix_spawn until it was
//!     reaped. VARIANT `-`: without LD_PRELOAD; anything else: the library to preload. The
//!     spawns of a round run within a few ms of each other, so load from elsewhere cancels
//!     out of their ratios.
//!     -> exec_ns I V1 V2 ...   one line per variant (I: its position), ns per round
//! ```
//! Any failure: `error: …` on stdout and exit status 1. Usage errors exit 2.

use std::ffi::{CStr, CString};
use std::net::{Ipv4Addr, SocketAddrV4};
use std::process::exit;
use std::sync::{Arc, Barrier};
use std::time::Instant;

use chainsocks_core::sys::MARKER_ADDRLEN;

fn fail(msg: impl std::fmt::Display) -> ! {
    println!("error: {msg}");
    exit(1)
}

fn usage() -> ! {
    eprintln!(
        "usage: csbenchclient echo HOST PORT N [--socks5 H:P,... [--pipeline all|hold-last]] [--pair [--self]]\n\
         \x20      csbenchclient bulk HOST PORT BYTES [--socks5 H:P,...] [--pair [--floor-first]]\n\
         \x20      csbenchclient resolve new|known|name=NAME THREADS COUNT\n\
         \x20      csbenchclient exec ROUNDS PROGRAM -|LIBRARY..."
    );
    exit(2)
}

fn os_err(what: &str) -> String {
    format!("{what}: {}", std::io::Error::last_os_error())
}

fn parse_addr(host: &str, port: &str) -> SocketAddrV4 {
    let ip: Ipv4Addr = host.parse().unwrap_or_else(|_| usage());
    let port: u16 = port.parse().unwrap_or_else(|_| usage());
    SocketAddrV4::new(ip, port)
}

fn parse_chain(s: &str) -> Vec<SocketAddrV4> {
    s.split(',')
        .map(|hp| hp.parse::<SocketAddrV4>().unwrap_or_else(|_| usage()))
        .collect()
}

/// An owned socket, closed on drop (the way it was opened).
struct Fd(i32, Io);

impl Drop for Fd {
    fn drop(&mut self) {
        self.1.close(self.0);
    }
}

fn sockaddr_of(a: &SocketAddrV4) -> libc::sockaddr_in {
    // SAFETY: all-zero is a valid sockaddr_in.
    let mut sa: libc::sockaddr_in = unsafe { std::mem::zeroed() };
    sa.sin_family = libc::AF_INET as libc::sa_family_t;
    sa.sin_port = a.port().to_be();
    sa.sin_addr.s_addr = u32::from(*a.ip()).to_be();
    sa
}

/// How a connection makes its calls: through libc (what a shim hooks) or raw `syscall()`s
/// (what no LD_PRELOAD shim sees: the floor of `--pair`).
#[derive(Clone, Copy, PartialEq, Eq)]
enum Io {
    Libc,
    Raw,
}

impl Io {
    fn socket(self) -> i32 {
        let (d, t) = (libc::AF_INET, libc::SOCK_STREAM | libc::SOCK_CLOEXEC);
        match self {
            // SAFETY: plain syscall.
            Io::Libc => unsafe { libc::socket(d, t, 0) },
            // SAFETY: plain syscall.
            Io::Raw => unsafe { libc::syscall(libc::SYS_socket, d, t, 0) as i32 },
        }
    }

    /// # Safety
    /// `sa` points to `len` readable bytes.
    unsafe fn connect(self, fd: i32, sa: *const libc::sockaddr, len: libc::socklen_t) -> i32 {
        match self {
            // SAFETY: the caller's contract.
            Io::Libc => unsafe { libc::connect(fd, sa, len) },
            // The launcher's seccomp supervisor lets a connect of the marker length through
            // unseen (as it does the library's own connects to its first proxy): the floor
            // reaches its proxy itself under every variant.
            Io::Raw => {
                // SAFETY: all-zero is a valid sockaddr_storage (128 bytes).
                let mut st: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
                let n = (len as usize).min(std::mem::size_of::<libc::sockaddr_storage>());
                // SAFETY: `n` readable bytes at sa (the caller's contract), 128 writable.
                unsafe {
                    std::ptr::copy_nonoverlapping(
                        sa.cast::<u8>(),
                        (&mut st as *mut libc::sockaddr_storage).cast::<u8>(),
                        n,
                    )
                };
                // SAFETY: a zero-padded 128-byte address buffer.
                unsafe {
                    libc::syscall(
                        libc::SYS_connect,
                        fd,
                        &st as *const libc::sockaddr_storage,
                        MARKER_ADDRLEN,
                    ) as i32
                }
            }
        }
    }

    fn read(self, fd: i32, buf: &mut [u8]) -> isize {
        match self {
            // SAFETY: buf is writable for its length.
            Io::Libc => unsafe { libc::read(fd, buf.as_mut_ptr().cast(), buf.len()) },
            // SAFETY: as above.
            Io::Raw => unsafe {
                libc::syscall(libc::SYS_read, fd, buf.as_mut_ptr(), buf.len()) as isize
            },
        }
    }

    fn write(self, fd: i32, buf: &[u8]) -> isize {
        match self {
            // SAFETY: buf is readable for its length.
            Io::Libc => unsafe { libc::write(fd, buf.as_ptr().cast(), buf.len()) },
            // SAFETY: as above.
            Io::Raw => unsafe {
                libc::syscall(libc::SYS_write, fd, buf.as_ptr(), buf.len()) as isize
            },
        }
    }

    fn close(self, fd: i32) {
        match self {
            // SAFETY: we own the descriptor.
            Io::Libc => unsafe { libc::close(fd) },
            // SAFETY: as above.
            Io::Raw => unsafe { libc::syscall(libc::SYS_close, fd) as i32 },
        };
    }
}

/// socket + connect (blocking), retried on EINTR.
fn connect_to(io: Io, a: &SocketAddrV4) -> Result<Fd, String> {
    let fd = io.socket();
    if fd < 0 {
        return Err(os_err("socket"));
    }
    let fd = Fd(fd, io);
    let sa = sockaddr_of(a);
    loop {
        // SAFETY: sa is a valid sockaddr_in of the given length.
        let r = unsafe {
            io.connect(
                fd.0,
                (&sa as *const libc::sockaddr_in).cast(),
                std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t,
            )
        };
        if r == 0 {
            return Ok(fd);
        }
        let e = std::io::Error::last_os_error();
        if e.raw_os_error() != Some(libc::EINTR) {
            return Err(format!("connect {a}: {e}"));
        }
    }
}

fn write_all(io: Io, fd: i32, mut buf: &[u8]) -> Result<(), String> {
    while !buf.is_empty() {
        let n = io.write(fd, buf);
        if n < 0 {
            if std::io::Error::last_os_error().raw_os_error() == Some(libc::EINTR) {
                continue;
            }
            return Err(os_err("write"));
        }
        buf = buf.get(n as usize..).unwrap_or_default();
    }
    Ok(())
}

/// Reads exactly `buf.len()` bytes (several reads only if the peer split them).
fn read_exact(io: Io, fd: i32, buf: &mut [u8]) -> Result<(), String> {
    let mut got = 0;
    while got < buf.len() {
        let rest = buf.get_mut(got..).unwrap_or_default();
        let n = io.read(fd, rest);
        if n < 0 {
            if std::io::Error::last_os_error().raw_os_error() == Some(libc::EINTR) {
                continue;
            }
            return Err(os_err("read"));
        }
        if n == 0 {
            return Err(format!("read: EOF after {got} of {} bytes", buf.len()));
        }
        got += n as usize;
    }
    Ok(())
}

/// How the client's own handshake is sent (`--pipeline`).
#[derive(Clone, Copy, PartialEq, Eq)]
enum Pipeline {
    /// One step at a time.
    No,
    /// Every message in one write.
    All,
    /// Every message in one write but the last CONNECT, which follows its greeting's reply.
    HoldLast,
}

static PIPELINE: std::sync::atomic::AtomicU8 = std::sync::atomic::AtomicU8::new(0);

fn pipeline() -> Pipeline {
    match PIPELINE.load(std::sync::atomic::Ordering::Relaxed) {
        1 => Pipeline::All,
        2 => Pipeline::HoldLast,
        _ => Pipeline::No,
    }
}

/// A CONNECT (ATYP 1) to `next`.
fn connect_request(next: &SocketAddrV4) -> [u8; 10] {
    let o = next.ip().octets();
    let p = next.port().to_be_bytes();
    [5, 1, 0, 1, o[0], o[1], o[2], o[3], p[0], p[1]]
}

fn read_method_reply(io: Io, fd: i32, hop: usize) -> Result<(), String> {
    let mut m = [0u8; 2];
    read_exact(io, fd, &mut m)?;
    if m != [5, 0] {
        return Err(format!("hop {hop}: method reply {m:?}"));
    }
    Ok(())
}

/// The whole chain handshake done by this client, one hop after the other: for each hop a
/// greeting (no auth) and its reply, then CONNECT to the next hop (or `dest`) and its reply.
/// With `--pipeline`, the messages go out together instead (see the usage).
fn socks5_chain(io: Io, fd: i32, hops: &[SocketAddrV4], dest: &SocketAddrV4) -> Result<(), String> {
    let mode = pipeline();
    if mode != Pipeline::No {
        let last = hops.len().saturating_sub(1);
        let mut burst = Vec::with_capacity(13 * hops.len());
        for (i, _) in hops.iter().enumerate() {
            burst.extend_from_slice(&[5, 1, 0]);
            if !(mode == Pipeline::HoldLast && i == last) {
                burst.extend_from_slice(&connect_request(hops.get(i + 1).unwrap_or(dest)));
            }
        }
        write_all(io, fd, &burst)?;
        for i in 0..hops.len() {
            read_method_reply(io, fd, i + 1)?;
            if mode == Pipeline::HoldLast && i == last {
                write_all(io, fd, &connect_request(dest))?;
            }
            read_connect_reply(io, fd, i + 1)?;
        }
        return Ok(());
    }
    for (i, _) in hops.iter().enumerate() {
        let next = hops.get(i + 1).unwrap_or(dest);
        write_all(io, fd, &[5, 1, 0])?;
        read_method_reply(io, fd, i + 1)?;
        write_all(io, fd, &connect_request(next))?;
        read_connect_reply(io, fd, i + 1)?;
    }
    Ok(())
}

/// A CONNECT reply; the usual one (ATYP 1) is 10 bytes: read them in one call.
fn read_connect_reply(io: Io, fd: i32, hop: usize) -> Result<(), String> {
    let mut r = [0u8; 10];
    read_exact(io, fd, &mut r)?;
    if r[0] != 5 || r[1] != 0 {
        return Err(format!("hop {hop}: CONNECT reply {:?}", &r[..2]));
    }
    let extra = match r[3] {
        1 => 0,
        4 => 12,
        3 => (7 + r[4] as usize).saturating_sub(10),
        t => return Err(format!("hop {hop}: reply ATYP {t}")),
    };
    if extra > 0 {
        let mut rest = vec![0u8; extra];
        read_exact(io, fd, &mut rest)?;
    }
    Ok(())
}

fn status_kb(field: &str) -> u64 {
    let s = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    s.lines()
        .find(|l| l.starts_with(field))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

fn join(v: &[u64]) -> String {
    let mut s = String::with_capacity(v.len() * 7);
    for (i, x) in v.iter().enumerate() {
        if i > 0 {
            s.push(' ');
        }
        s.push_str(&x.to_string());
    }
    s
}

/// CPU time (user + system) this process used so far, ns.
fn cpu_ns() -> u64 {
    // SAFETY: all-zero is a valid rusage; getrusage fills it.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: ru is writable.
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut ru) };
    let tv = |t: libc::timeval| t.tv_sec as u64 * 1_000_000_000 + t.tv_usec as u64 * 1_000;
    tv(ru.ru_utime) + tv(ru.ru_stime)
}

/// One connection: (ns until connected, ns until the echo byte was back).
fn one_echo(io: Io, dest: &SocketAddrV4, chain: &[SocketAddrV4]) -> Result<(u64, u64), String> {
    let t0 = Instant::now();
    let first = chain.first().unwrap_or(dest);
    let fd = connect_to(io, first)?;
    if !chain.is_empty() {
        socks5_chain(io, fd.0, chain, dest)?;
    }
    let t1 = Instant::now();
    let b = [b'x'];
    write_all(io, fd.0, &b)?;
    let mut back = [0u8; 1];
    read_exact(io, fd.0, &mut back)?;
    let t2 = Instant::now();
    if back != b {
        return Err("echo mismatch".into());
    }
    drop(fd);
    Ok(((t1 - t0).as_nanos() as u64, (t2 - t0).as_nanos() as u64))
}

fn echo(dest: SocketAddrV4, n: usize, chain: &[SocketAddrV4], pair: bool, own: bool) {
    let (mut conn, mut echo) = (Vec::with_capacity(n), Vec::with_capacity(n));
    let (mut fconn, mut fecho) = (Vec::with_capacity(n), Vec::with_capacity(n));
    let cpu0 = cpu_ns();
    let wall0 = Instant::now();
    for i in 0..n {
        let mut run = |floor: bool| {
            let (io, ch, c, e) = if floor {
                (Io::Raw, chain, &mut fconn, &mut fecho)
            } else if pair && !own {
                (Io::Libc, &[][..], &mut conn, &mut echo)
            } else {
                (Io::Libc, chain, &mut conn, &mut echo)
            };
            let (tc, te) = one_echo(io, &dest, ch).unwrap_or_else(|e| {
                fail(format!(
                    "conn {i}{}: {e}",
                    if floor { " (floor)" } else { "" }
                ))
            });
            c.push(tc);
            e.push(te);
        };
        if !pair {
            run(false);
        } else if i % 2 == 0 {
            run(false);
            run(true);
        } else {
            run(true);
            run(false);
        }
    }
    let cpu = cpu_ns() - cpu0;
    let wall = wall0.elapsed().as_nanos();
    println!("loop cpu_ns {cpu} wall_ns {wall}");
    println!("connect_ns {}", join(&conn));
    println!("echo_ns {}", join(&echo));
    if pair {
        println!("floor_connect_ns {}", join(&fconn));
        println!("floor_echo_ns {}", join(&fecho));
    }
    println!("vmhwm_kb {}", status_kb("VmHWM:"));
}

/// A connection to the bulk source (through the shim, or the floor with the client's own
/// SOCKS5 handshake).
fn bulk_conn(io: Io, dest: &SocketAddrV4, chain: &[SocketAddrV4]) -> Result<Fd, String> {
    let first = chain.first().unwrap_or(dest);
    let fd = connect_to(io, first)?;
    if !chain.is_empty() {
        socks5_chain(io, fd.0, chain, dest)?;
    }
    Ok(fd)
}

/// Asks for `n` bytes and reads them; ns from the request to the last byte.
fn chunk(io: Io, fd: i32, n: u64, buf: &mut [u8]) -> Result<u64, String> {
    let t0 = Instant::now();
    write_all(io, fd, &n.to_le_bytes())?;
    let mut got: u64 = 0;
    while got < n {
        let r = io.read(fd, buf);
        if r < 0 {
            if std::io::Error::last_os_error().raw_os_error() == Some(libc::EINTR) {
                continue;
            }
            return Err(os_err("read"));
        }
        if r == 0 {
            return Err(format!("EOF after {got} of {n} bytes"));
        }
        got += r as u64;
    }
    Ok(t0.elapsed().as_nanos() as u64)
}

/// Bytes per request: a transfer is a series of these.
const CHUNK: u64 = 64 << 20;

fn bulk(dest: SocketAddrV4, bytes: u64, chain: &[SocketAddrV4], pair: bool, floor_first: bool) {
    let mut buf = vec![0u8; 256 * 1024];
    let shim_chain: &[SocketAddrV4] = if pair { &[] } else { chain };
    let shim = bulk_conn(Io::Libc, &dest, shim_chain).unwrap_or_else(|e| fail(e));
    let floor = if pair {
        Some(bulk_conn(Io::Raw, &dest, chain).unwrap_or_else(|e| fail(format!("floor: {e}"))))
    } else {
        None
    };
    let (mut t_shim, mut t_floor, mut left) = (0u64, 0u64, bytes);
    let mut k = 0;
    while left > 0 {
        let n = left.min(CHUNK);
        let order = if (k % 2 == 0) != floor_first {
            [false, true]
        } else {
            [true, false]
        };
        for is_floor in order {
            match (is_floor, &floor) {
                (false, _) => {
                    t_shim += chunk(Io::Libc, shim.0, n, &mut buf).unwrap_or_else(|e| fail(e))
                }
                (true, Some(f)) => {
                    t_floor += chunk(Io::Raw, f.0, n, &mut buf)
                        .unwrap_or_else(|e| fail(format!("floor: {e}")))
                }
                (true, None) => {}
            }
        }
        left -= n;
        k += 1;
    }
    if pair {
        println!("bulk_ns {t_shim} floor_bulk_ns {t_floor} bytes {bytes}");
    } else {
        println!("bulk_ns {t_shim} bytes {bytes}");
    }
}

/// One getaddrinfo + freeaddrinfo; the first address as text.
fn lookup(name: &CStr, service: &CStr, want_addr: bool) -> Result<Option<String>, String> {
    // SAFETY: all-zero is a valid addrinfo hints.
    let mut hints: libc::addrinfo = unsafe { std::mem::zeroed() };
    hints.ai_family = libc::AF_UNSPEC;
    hints.ai_socktype = libc::SOCK_STREAM;
    let mut res: *mut libc::addrinfo = std::ptr::null_mut();
    // SAFETY: valid C strings and hints; res receives a list we free below.
    let rc = unsafe { libc::getaddrinfo(name.as_ptr(), service.as_ptr(), &hints, &mut res) };
    if rc != 0 {
        // SAFETY: gai_strerror returns a static string.
        let msg = unsafe { CStr::from_ptr(libc::gai_strerror(rc)) };
        return Err(format!("getaddrinfo({name:?}): {}", msg.to_string_lossy()));
    }
    let mut first = None;
    if want_addr && !res.is_null() {
        // SAFETY: res is a list getaddrinfo returned.
        let ai = unsafe { &*res };
        if ai.ai_family == libc::AF_INET && !ai.ai_addr.is_null() {
            // SAFETY: an AF_INET entry holds a sockaddr_in.
            let sin = unsafe { &*(ai.ai_addr as *const libc::sockaddr_in) };
            first = Some(Ipv4Addr::from(u32::from_be(sin.sin_addr.s_addr)).to_string());
        } else {
            first = Some(format!("family{}", ai.ai_family));
        }
    }
    // SAFETY: the list getaddrinfo returned, freed once.
    unsafe { libc::freeaddrinfo(res) };
    Ok(first)
}

/// A CPU-bound unit of work of about a fake-name lookup's length (~1 µs here), no syscalls, no
/// shared memory.
fn spin() {
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    for _ in 0..600 {
        x = std::hint::black_box(
            x.wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407),
        );
    }
    std::hint::black_box(x);
}

fn resolve(mode: &str, threads: usize, count: usize) {
    let pid = std::process::id();
    let service = c"80";
    let known: Vec<CString> = (0..64)
        .filter_map(|k| CString::new(format!("known{k}-{pid}.bench.example")).ok())
        .collect();
    let fixed = mode
        .strip_prefix("name=")
        .map(|n| CString::new(n).unwrap_or_else(|_| usage()));
    if mode != "new" && mode != "known" && mode != "spin" && fixed.is_none() {
        usage();
    }
    let mut first = String::from("-");
    if mode == "known" {
        for n in &known {
            if let Some(a) = lookup(n, service, true).unwrap_or_else(|e| fail(e)) {
                first = a;
            }
        }
    }
    if let Some(n) = &fixed
        && let Some(a) = lookup(n, service, true).unwrap_or_else(|e| fail(e))
    {
        first = a;
    }
    let known = Arc::new(known);
    let fixed = Arc::new(fixed);
    let barrier = Arc::new(Barrier::new(threads + 1));
    let per = count / threads.max(1);
    let handles: Vec<_> = (0..threads)
        .map(|t| {
            let (known, fixed, barrier) = (known.clone(), fixed.clone(), barrier.clone());
            let mode = mode.to_string();
            std::thread::spawn(
                move || -> Result<(Vec<u64>, Option<String>, Instant, Instant), String> {
                    // Names prepared before the clock starts.
                    let names: Vec<CString> = if mode == "new" {
                        (0..per)
                            .filter_map(|i| {
                                CString::new(format!("n{i}-t{t}-{pid}.bench.example")).ok()
                            })
                            .collect()
                    } else {
                        Vec::new()
                    };
                    let mut lat = Vec::with_capacity(per);
                    let mut seen = None;
                    barrier.wait();
                    // Each thread stamps its own start and end: the main thread may well not run
                    // again until the workers are done.
                    let t_start = Instant::now();
                    for i in 0..per {
                        let name: &CStr = match (&*fixed, mode.as_str()) {
                            (Some(n), _) => n,
                            (None, "new") => names.get(i).map(|c| c.as_c_str()).unwrap_or(c"x"),
                            _ => known
                                .get(i % known.len().max(1))
                                .map(|c| c.as_c_str())
                                .unwrap_or(c"x"),
                        };
                        let s = Instant::now();
                        let a = if mode == "spin" {
                            spin();
                            None
                        } else {
                            lookup(name, service, i == 0 && t == 0)?
                        };
                        lat.push(s.elapsed().as_nanos() as u64);
                        if a.is_some() {
                            seen = a;
                        }
                    }
                    Ok((lat, seen, t_start, Instant::now()))
                },
            )
        })
        .collect();
    barrier.wait();
    let mut all = Vec::with_capacity(count);
    let (mut first_start, mut last_end): (Option<Instant>, Option<Instant>) = (None, None);
    for h in handles {
        match h.join() {
            Ok(Ok((lat, seen, t0, t1))) => {
                first_start = Some(first_start.map_or(t0, |f| f.min(t0)));
                last_end = Some(last_end.map_or(t1, |l| l.max(t1)));
                all.extend(lat);
                if let Some(a) = seen
                    && mode == "new"
                {
                    first = a;
                }
            }
            Ok(Err(e)) => fail(e),
            Err(_) => fail("thread panicked"),
        }
    }
    let wall = match (first_start, last_end) {
        (Some(a), Some(b)) => (b - a).as_nanos(),
        _ => 0,
    };
    all.sort_unstable();
    let median = all.get(all.len() / 2).copied().unwrap_or(0);
    println!(
        "resolve n={} wall_ns {wall} median_ns {median} first={first}",
        all.len()
    );
}

/// `exec`: PROGRAM spawned once per variant per round (see the header).
fn exec(rounds: usize, program: &str, variants: &[&str]) {
    let prog = CString::new(program).unwrap_or_else(|_| usage());
    // Each variant's environment: ours without LD_PRELOAD, plus the variant's.
    let base: Vec<CString> = std::env::vars_os()
        .filter(|(k, _)| k != "LD_PRELOAD")
        .filter_map(|(k, v)| {
            let mut e = k.into_encoded_bytes();
            e.push(b'=');
            e.extend(v.into_encoded_bytes());
            CString::new(e).ok()
        })
        .collect();
    let envs: Vec<Vec<CString>> = variants
        .iter()
        .map(|v| {
            let mut e = base.clone();
            if *v != "-" {
                e.push(CString::new(format!("LD_PRELOAD={v}")).unwrap_or_else(|_| usage()));
            }
            e
        })
        .collect();
    let ptrs: Vec<Vec<*mut libc::c_char>> = envs
        .iter()
        .map(|e| {
            let mut p: Vec<*mut libc::c_char> = e.iter().map(|c| c.as_ptr().cast_mut()).collect();
            p.push(std::ptr::null_mut());
            p
        })
        .collect();
    let argv = [prog.as_ptr().cast_mut(), std::ptr::null_mut()];
    let mut times: Vec<Vec<u64>> = vec![Vec::with_capacity(rounds); variants.len()];
    for r in 0..rounds {
        for k in 0..variants.len() {
            let i = (k + r) % variants.len();
            let Some(env) = ptrs.get(i) else { continue };
            let t0 = Instant::now();
            let mut pid: libc::pid_t = 0;
            // SAFETY: NUL-terminated program path, argv and envp arrays ending in NULL.
            let rc = unsafe {
                libc::posix_spawn(
                    &mut pid,
                    prog.as_ptr(),
                    std::ptr::null(),
                    std::ptr::null(),
                    argv.as_ptr(),
                    env.as_ptr(),
                )
            };
            if rc != 0 {
                fail(format!(
                    "posix_spawn {program}: {}",
                    std::io::Error::from_raw_os_error(rc)
                ));
            }
            let mut status = 0;
            // SAFETY: waiting for our own child.
            if unsafe { libc::waitpid(pid, &mut status, 0) } != pid || status != 0 {
                fail(format!(
                    "{program} (variant {i}) exited with status {status}"
                ));
            }
            if let Some(t) = times.get_mut(i) {
                t.push(t0.elapsed().as_nanos() as u64);
            }
        }
    }
    for (i, t) in times.iter().enumerate() {
        println!("exec_ns {i} {}", join(t));
    }
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut pos = Vec::new();
    let mut chain = Vec::new();
    let (mut pair, mut floor_first, mut own) = (false, false, false);
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--socks5" => chain = parse_chain(it.next().unwrap_or_else(|| usage())),
            "--pair" => pair = true,
            "--self" => own = true,
            "--floor-first" => floor_first = true,
            "--pipeline" => {
                let mode = match it.next().map(String::as_str) {
                    Some("all") => 1,
                    Some("hold-last") => 2,
                    _ => usage(),
                };
                PIPELINE.store(mode, std::sync::atomic::Ordering::Relaxed);
            }
            _ => pos.push(a.as_str()),
        }
    }
    match pos.as_slice() {
        ["echo", host, port, n] => echo(
            parse_addr(host, port),
            n.parse().unwrap_or_else(|_| usage()),
            &chain,
            pair,
            own,
        ),
        ["bulk", host, port, bytes] => bulk(
            parse_addr(host, port),
            bytes.parse().unwrap_or_else(|_| usage()),
            &chain,
            pair,
            floor_first,
        ),
        ["exec", rounds, program, variants @ ..] if !variants.is_empty() => exec(
            rounds.parse().unwrap_or_else(|_| usage()),
            program,
            variants,
        ),
        ["resolve", mode, threads, count] => resolve(
            mode,
            threads.parse().unwrap_or_else(|_| usage()),
            count.parse().unwrap_or_else(|_| usage()),
        ),
        _ => usage(),
    }
}
