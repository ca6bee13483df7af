//! csraw: a test client that makes its network calls with raw `syscall()`s, the way static
//! binaries and Go programs do — no LD_PRELOAD shim sees them; only the launcher's seccomp
//! supervisor can.
//!
//! Owns: the subcommands below and their one-line outputs on stdout (errno as a number).
//! Never does: call libc's connect/sendto (the shim would see them), or retry.
//!
//! ```text
//! csraw connect IP PORT [--thread|--fork|--vfork] [--send TEXT]
//!     -> tid=T pid=P ok [reply=TEXT]   |   tid=T pid=P errno=N
//! csraw daemon IP PORT OUTFILE MS      double fork + setsid; the grandchild waits MS ms, then
//!                                      connects and writes its `connect` line to OUTFILE
//! csraw io_uring                       -> io_uring_setup ok | io_uring_setup errno=N
//! csraw fastopen IP PORT               sendto(MSG_FASTOPEN) on a new TCP socket
//!     -> ok N | errno=N
//! csraw flip IP1 PORT1 IP2 PORT2 COUNT  COUNT connects of new sockets to one sockaddr buffer
//!                                      that a second thread keeps flipping between the two
//!     -> connects=COUNT ok=A errnos=N:K,...
//! csraw repeat N unix PATH | repeat N connect IP PORT
//!                                      N connects on new sockets, results ignored (a unix
//!                                      listener or a refused port): -> n=N avg_us=U
//! csraw dns IP PORT NAME [--tcp]       an A query over UDP (or TCP), raw syscalls
//!     -> dns rcode=R answers=N [a=IP]
//! csraw udp IP PORT TEXT               a connected UDP socket: write TEXT, read the answer
//!     -> udp ok reply=TEXT | udp errno=N
//! csraw udpto IP PORT TEXT [--sendmsg|--sendmmsg|--unspec]
//!                                      an unconnected UDP socket: sendto (or sendmsg, sendmmsg,
//!                                      or sendto with an AF_UNSPEC address on an AF_INET
//!                                      socket) TEXT to IP:PORT, read the answer for 3 s
//!     -> udpto ok reply=TEXT | udpto send errno=N | udpto read errno=N
//! csraw unix PATH                      connect(AF_UNIX), read the listener's answer
//!     -> unix ok pid=P reply=TEXT | unix errno=N
//! ```
//! Exit status 0 when the (last) call succeeded, 1 when it failed, 2 on usage errors.

use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicBool, Ordering};

fn errno() -> i32 {
    std::io::Error::last_os_error().raw_os_error().unwrap_or(0)
}

fn usage() -> ! {
    eprintln!("usage: see the module documentation of csraw");
    std::process::exit(2)
}

fn addr(ip: &str, port: &str) -> SocketAddr {
    let ip: IpAddr = ip.parse().unwrap_or_else(|_| usage());
    SocketAddr::new(ip, port.parse().unwrap_or_else(|_| usage()))
}

/// A sockaddr of exactly the kernel's size for the family.
fn sockaddr(sa: &SocketAddr) -> ([u8; 28], usize) {
    let mut b = [0u8; 28];
    match sa {
        SocketAddr::V4(v4) => {
            b[..2].copy_from_slice(&(libc::AF_INET as u16).to_ne_bytes());
            b[2..4].copy_from_slice(&v4.port().to_be_bytes());
            b[4..8].copy_from_slice(&v4.ip().octets());
            (b, 16)
        }
        SocketAddr::V6(v6) => {
            b[..2].copy_from_slice(&(libc::AF_INET6 as u16).to_ne_bytes());
            b[2..4].copy_from_slice(&v6.port().to_be_bytes());
            b[8..24].copy_from_slice(&v6.ip().octets());
            (b, 28)
        }
    }
}

fn raw_socket(family: i32, ty: i32) -> i32 {
    // SAFETY: socket(2) through syscall().
    let fd = unsafe { libc::syscall(libc::SYS_socket, family, ty | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        println!("socket errno={}", errno());
        std::process::exit(1);
    }
    fd as i32
}

fn family(sa: &SocketAddr) -> i32 {
    if sa.is_ipv4() {
        libc::AF_INET
    } else {
        libc::AF_INET6
    }
}

/// connect(2) through syscall(): 0 or the errno.
fn raw_connect(fd: i32, b: &[u8]) -> i32 {
    // SAFETY: b is a readable sockaddr of b.len() bytes.
    let r = unsafe { libc::syscall(libc::SYS_connect, fd, b.as_ptr(), b.len()) };
    if r == 0 { 0 } else { errno() }
}

fn tid() -> i64 {
    // SAFETY: gettid cannot fail.
    unsafe { libc::syscall(libc::SYS_gettid) }
}

/// One connect (and optional exchange); the result line.
fn connect_line(to: &SocketAddr, send: Option<&str>) -> (String, bool) {
    let fd = raw_socket(family(to), libc::SOCK_STREAM);
    let (b, len) = sockaddr(to);
    let who = format!("tid={} pid={}", tid(), std::process::id());
    let e = raw_connect(fd, &b[..len]);
    if e != 0 {
        return (format!("{who} errno={e}"), false);
    }
    let mut line = format!("{who} ok");
    if let Some(text) = send {
        let mut reply = [0u8; 256];
        // SAFETY: write/read on our socket with our buffers.
        let n = unsafe {
            libc::syscall(libc::SYS_write, fd, text.as_ptr(), text.len());
            libc::syscall(libc::SYS_read, fd, reply.as_mut_ptr(), reply.len())
        };
        let got = reply.get(..n.max(0) as usize).unwrap_or(&[]);
        line.push_str(&format!(" reply={}", String::from_utf8_lossy(got)));
    }
    (line, true)
}

fn cmd_connect(args: &[String]) -> bool {
    let [ip, port, rest @ ..] = args else { usage() };
    let to = addr(ip, port);
    let send = rest
        .iter()
        .position(|a| a == "--send")
        .and_then(|i| rest.get(i + 1))
        .cloned();
    let mode = rest.first().map(String::as_str).unwrap_or("");
    match mode {
        "--thread" => {
            let h = std::thread::spawn(move || connect_line(&to, send.as_deref()));
            let (line, ok) = h.join().unwrap_or_else(|_| ("panic".into(), false));
            println!("{line} main_tid={}", tid());
            ok
        }
        "--fork" => {
            // SAFETY: fork in a single-threaded program; the child prints and exits.
            let pid = unsafe { libc::fork() };
            if pid == 0 {
                let (line, ok) = connect_line(&to, send.as_deref());
                println!("{line}");
                std::process::exit(if ok { 0 } else { 1 });
            }
            wait_ok(pid)
        }
        "--vfork" => {
            // A vfork child (CLONE_VM | CLONE_VFORK: our memory, we are suspended until it
            // exits) that connects before any exec; glibc's clone() runs it on its own stack.
            struct Arg {
                fd: i32,
                b: [u8; 28],
                len: usize,
            }
            extern "C" fn child(p: *mut libc::c_void) -> i32 {
                // SAFETY: p is the Arg below, alive while we are suspended.
                let a = unsafe { &*(p as *const Arg) };
                raw_connect(a.fd, a.b.get(..a.len).unwrap_or(&[]))
            }
            let (b, len) = sockaddr(&to);
            let mut arg = Arg {
                fd: raw_socket(family(&to), libc::SOCK_STREAM),
                b,
                len,
            };
            let mut stack = vec![0u8; 64 * 1024];
            // SAFETY: a child on its own stack (top of `stack`, 16-byte aligned) sharing our
            // memory; `arg` and `stack` outlive it (we are suspended until it exits).
            let pid = unsafe {
                let top = stack.as_mut_ptr().add(stack.len() - 64);
                let top = (top as usize & !15) as *mut libc::c_void;
                libc::clone(
                    child,
                    top,
                    libc::CLONE_VM | libc::CLONE_VFORK | libc::SIGCHLD,
                    (&mut arg as *mut Arg).cast(),
                )
            };
            if pid < 0 {
                println!("clone errno={}", errno());
                return false;
            }
            let mut status = 0;
            // SAFETY: reaping our child.
            unsafe { libc::waitpid(pid, &mut status, 0) };
            let e = libc::WEXITSTATUS(status);
            if e == 0 {
                println!("vfork child={pid} ok");
            } else {
                println!("vfork child={pid} errno={e}");
            }
            e == 0
        }
        _ => {
            let (line, ok) = connect_line(&to, send.as_deref());
            println!("{line}");
            ok
        }
    }
}

fn wait_ok(pid: i32) -> bool {
    let mut status = 0;
    // SAFETY: reaping our child.
    unsafe { libc::waitpid(pid, &mut status, 0) };
    libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0
}

fn cmd_daemon(args: &[String]) -> bool {
    let [ip, port, out, ms] = args else { usage() };
    let to = addr(ip, port);
    let ms: u64 = ms.parse().unwrap_or_else(|_| usage());
    // SAFETY: fork/setsid/fork in a single-threaded program; the middle child exits at once.
    unsafe {
        let p = libc::fork();
        if p > 0 {
            return wait_ok(p);
        }
        libc::setsid();
        if libc::fork() > 0 {
            libc::_exit(0);
        }
    }
    std::thread::sleep(std::time::Duration::from_millis(ms));
    let (line, _) = connect_line(&to, None);
    // SAFETY: getppid cannot fail.
    let ppid = unsafe { libc::getppid() };
    let _ = std::fs::write(out, format!("{line} ppid={ppid}\n"));
    std::process::exit(0)
}

fn cmd_io_uring() -> bool {
    let mut params = [0u8; 120]; // struct io_uring_params
    // SAFETY: io_uring_setup(8, &params).
    let fd = unsafe { libc::syscall(libc::SYS_io_uring_setup, 8, params.as_mut_ptr()) };
    if fd < 0 {
        println!("io_uring_setup errno={}", errno());
        return false;
    }
    println!("io_uring_setup ok");
    true
}

fn cmd_fastopen(args: &[String]) -> bool {
    let [ip, port] = args else { usage() };
    let to = addr(ip, port);
    let fd = raw_socket(family(&to), libc::SOCK_STREAM);
    let (b, len) = sockaddr(&to);
    let data = b"fastopen";
    // SAFETY: sendto(2) through syscall() with our buffers.
    let n = unsafe {
        libc::syscall(
            libc::SYS_sendto,
            fd,
            data.as_ptr(),
            data.len(),
            libc::MSG_FASTOPEN,
            b.as_ptr(),
            len,
        )
    };
    if n < 0 {
        println!("errno={}", errno());
        return false;
    }
    println!("ok {n}");
    true
}

fn cmd_flip(args: &[String]) -> bool {
    let [ip1, p1, ip2, p2, count] = args else {
        usage()
    };
    let (a, b) = (addr(ip1, p1), addr(ip2, p2));
    let count: usize = count.parse().unwrap_or_else(|_| usage());
    if family(&a) != family(&b) {
        usage();
    }
    let (ba, len) = sockaddr(&a);
    let (bb, _) = sockaddr(&b);
    // One buffer the kernel reads, rewritten byte by byte by the flipper, as a racing program
    // would.
    let buf: &'static [std::sync::atomic::AtomicU8] = Box::leak(
        ba.iter()
            .map(|&x| std::sync::atomic::AtomicU8::new(x))
            .collect::<Vec<_>>()
            .into_boxed_slice(),
    );
    static STOP: AtomicBool = AtomicBool::new(false);
    let flipper = std::thread::spawn(move || {
        let mut which = false;
        while !STOP.load(Ordering::Relaxed) {
            let src = if which { &ba } else { &bb };
            for (d, s) in buf.iter().zip(src.iter()) {
                d.store(*s, Ordering::Relaxed);
            }
            which = !which;
        }
    });
    let mut ok = 0;
    let mut errs: std::collections::BTreeMap<i32, usize> = Default::default();
    for _ in 0..count {
        let fd = raw_socket(family(&a), libc::SOCK_STREAM);
        // SAFETY: buf is `len` readable bytes (atomics of u8 have u8's layout).
        let r = unsafe { libc::syscall(libc::SYS_connect, fd, buf.as_ptr(), len) };
        if r == 0 {
            ok += 1;
        } else {
            *errs.entry(errno()).or_default() += 1;
        }
        // SAFETY: our socket.
        unsafe { libc::close(fd) };
    }
    STOP.store(true, Ordering::Relaxed);
    let _ = flipper.join();
    let errs: Vec<String> = errs.iter().map(|(e, n)| format!("{e}:{n}")).collect();
    println!("connects={count} ok={ok} errnos={}", errs.join(","));
    ok == count
}

fn cmd_unix(args: &[String]) -> bool {
    let [path] = args else { usage() };
    let fd = raw_socket(libc::AF_UNIX, libc::SOCK_STREAM);
    let mut b = vec![0u8; 2 + path.len() + 1];
    b[..2].copy_from_slice(&(libc::AF_UNIX as u16).to_ne_bytes());
    b[2..2 + path.len()].copy_from_slice(path.as_bytes());
    let e = raw_connect(fd, &b);
    if e != 0 {
        println!("unix errno={e}");
        return false;
    }
    let mut reply = [0u8; 256];
    // SAFETY: read on our socket into our buffer.
    let n = unsafe { libc::syscall(libc::SYS_read, fd, reply.as_mut_ptr(), reply.len()) };
    let got = reply.get(..n.max(0) as usize).unwrap_or(&[]);
    println!(
        "unix ok pid={} reply={}",
        std::process::id(),
        String::from_utf8_lossy(got)
    );
    true
}

fn cmd_udp(args: &[String]) -> bool {
    let [ip, port, text] = args else { usage() };
    let to = addr(ip, port);
    let fd = raw_socket(family(&to), libc::SOCK_DGRAM);
    let (b, len) = sockaddr(&to);
    let e = raw_connect(fd, &b[..len]);
    if e != 0 {
        println!("udp errno={e}");
        return false;
    }
    // SAFETY: a raw write on our socket from our buffer.
    unsafe { libc::syscall(libc::SYS_write, fd, text.as_ptr(), text.len()) };
    match read_reply(fd) {
        Ok(r) => {
            println!("udp ok reply={r}");
            true
        }
        Err(e) => {
            println!("udp errno={e}");
            false
        }
    }
}

/// One read from `fd` within 3 s (raw syscalls): its bytes (at most 1024), or the errno.
fn read_bytes(fd: i32) -> Result<Vec<u8>, i32> {
    let tv = libc::timeval {
        tv_sec: 3,
        tv_usec: 0,
    };
    let mut reply = [0u8; 1024];
    // SAFETY: raw syscalls on our socket with our buffers.
    let n = unsafe {
        libc::syscall(
            libc::SYS_setsockopt,
            fd,
            libc::SOL_SOCKET,
            libc::SO_RCVTIMEO,
            &tv as *const libc::timeval,
            std::mem::size_of::<libc::timeval>(),
        );
        libc::syscall(libc::SYS_read, fd, reply.as_mut_ptr(), reply.len())
    };
    if n < 0 {
        return Err(errno());
    }
    Ok(reply.get(..n as usize).unwrap_or(&[]).to_vec())
}

/// One datagram read from `fd` within 3 s (raw syscalls): its text, or the errno.
fn read_reply(fd: i32) -> Result<String, i32> {
    read_bytes(fd).map(|b| String::from_utf8_lossy(&b).into_owned())
}

fn cmd_udpto(args: &[String]) -> bool {
    let [ip, port, text, rest @ ..] = args else {
        usage()
    };
    let to = addr(ip, port);
    let how = rest.first().map_or("--sendto", String::as_str);
    let fd = raw_socket(family(&to), libc::SOCK_DGRAM);
    let (mut b, len) = sockaddr(&to);
    if how == "--unspec" {
        b[..2].copy_from_slice(&(libc::AF_UNSPEC as u16).to_ne_bytes());
    }
    let mut iov = libc::iovec {
        iov_base: text.as_ptr() as *mut libc::c_void,
        iov_len: text.len(),
    };
    // SAFETY: all-zero is a valid mmsghdr.
    let mut mm: libc::mmsghdr = unsafe { std::mem::zeroed() };
    mm.msg_hdr.msg_name = b.as_mut_ptr().cast();
    mm.msg_hdr.msg_namelen = len as u32;
    mm.msg_hdr.msg_iov = &mut iov;
    mm.msg_hdr.msg_iovlen = 1;
    // SAFETY: raw syscalls on our socket with our buffers.
    let r = unsafe {
        match how {
            "--sendto" | "--unspec" => libc::syscall(
                libc::SYS_sendto,
                fd,
                text.as_ptr(),
                text.len(),
                0,
                b.as_ptr(),
                len,
            ),
            "--sendmsg" => libc::syscall(libc::SYS_sendmsg, fd, &mm.msg_hdr, 0),
            "--sendmmsg" => libc::syscall(libc::SYS_sendmmsg, fd, &mut mm, 1, 0),
            _ => usage(),
        }
    };
    if r < 0 {
        println!("udpto send errno={}", errno());
        return false;
    }
    match read_reply(fd) {
        Ok(r) => {
            println!("udpto ok reply={r}");
            true
        }
        Err(e) => {
            println!("udpto read errno={e}");
            false
        }
    }
}

fn cmd_dns(args: &[String]) -> bool {
    let [ip, port, name, rest @ ..] = args else {
        usage()
    };
    let to = addr(ip, port);
    let tcp = rest.iter().any(|a| a == "--tcp");
    let mut q = vec![0x4a, 0x11, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0];
    for label in name.split('.') {
        q.push(label.len() as u8);
        q.extend_from_slice(label.as_bytes());
    }
    q.extend_from_slice(&[0, 0, 1, 0, 1]);
    let ty = if tcp {
        libc::SOCK_STREAM
    } else {
        libc::SOCK_DGRAM
    };
    let fd = raw_socket(family(&to), ty);
    let (b, len) = sockaddr(&to);
    let e = raw_connect(fd, &b[..len]);
    if e != 0 {
        println!("dns connect errno={e}");
        return false;
    }
    let mut msg = Vec::new();
    if tcp {
        msg.extend_from_slice(&(q.len() as u16).to_be_bytes());
    }
    msg.extend_from_slice(&q);
    // SAFETY: a raw write of our buffer to our socket.
    unsafe { libc::syscall(libc::SYS_write, fd, msg.as_ptr(), msg.len()) };
    let reply = match read_bytes(fd) {
        Ok(r) => r,
        Err(e) => {
            println!("dns read errno={e}");
            return false;
        }
    };
    let got = reply.as_slice();
    let got = if tcp {
        got.get(2..).unwrap_or(&[])
    } else {
        got
    };
    let (Some(&flags), Some(&an)) = (got.get(3), got.get(7)) else {
        println!("dns short reply");
        return false;
    };
    let mut line = format!("dns rcode={} answers={an}", flags & 0xf);
    if an > 0
        && let Some(a) = got.get(got.len().saturating_sub(4)..)
    {
        line.push_str(&format!(" a={}.{}.{}.{}", a[0], a[1], a[2], a[3]));
    }
    println!("{line}");
    an > 0
}

fn cmd_repeat(args: &[String]) -> bool {
    let [n, kind, rest @ ..] = args else { usage() };
    let n: u32 = n.parse().unwrap_or_else(|_| usage());
    let (family, b): (i32, Vec<u8>) = match (kind.as_str(), rest) {
        ("unix", [path]) => {
            let mut b = vec![0u8; 2 + path.len() + 1];
            b[..2].copy_from_slice(&(libc::AF_UNIX as u16).to_ne_bytes());
            b[2..2 + path.len()].copy_from_slice(path.as_bytes());
            (libc::AF_UNIX, b)
        }
        ("connect", [ip, port]) => {
            let to = addr(ip, port);
            let (b, len) = sockaddr(&to);
            (family(&to), b[..len].to_vec())
        }
        _ => usage(),
    };
    let start = std::time::Instant::now();
    for _ in 0..n {
        let fd = raw_socket(family, libc::SOCK_STREAM);
        raw_connect(fd, &b);
        // SAFETY: our socket.
        unsafe { libc::close(fd) };
    }
    let us = start.elapsed().as_secs_f64() * 1e6 / n.max(1) as f64;
    println!("n={n} avg_us={us:.2}");
    true
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let Some((cmd, rest)) = args.split_first() else {
        usage()
    };
    let ok = match cmd.as_str() {
        "connect" => cmd_connect(rest),
        "daemon" => cmd_daemon(rest),
        "io_uring" => cmd_io_uring(),
        "fastopen" => cmd_fastopen(rest),
        "flip" => cmd_flip(rest),
        "unix" => cmd_unix(rest),
        "dns" => cmd_dns(rest),
        "udp" => cmd_udp(rest),
        "udpto" => cmd_udpto(rest),
        "repeat" => cmd_repeat(rest),
        _ => usage(),
    };
    std::process::exit(if ok { 0 } else { 1 });
}
