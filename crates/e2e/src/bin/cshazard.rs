//! cshazard: connects made from signal handlers, for the end-to-end tests (run under
//! chainsocks). Calls libc directly so the shim sees exactly these calls.
//!
//! cshazard sigconnect A_IP A_PORT B_IP B_PORT DELAY_MS
//!     The main thread connects to A (a slow proxy holds the handshake); DELAY_MS later a
//!     SIGALRM handler opens a socket, connects it to B (blocking), writes "handler", closes.
//!     -> `main=ok|ERRNO handler=ok|ERRNO|none`
//! cshazard mallocstorm B_IP B_PORT MILLIS
//!     The main thread allocates and frees (glibc malloc) for MILLIS ms while a SIGALRM every
//!     2 ms connects to B from the handler, writes "storm" and closes.
//!     -> `ok connects=N failures=F` (an abort from heap corruption shows as a signal death)
//!
//! Never: retries, or does anything in a handler but async-signal-safe calls.

use std::net::Ipv4Addr;
use std::sync::atomic::{AtomicBool, AtomicI32, AtomicU64, Ordering};
use std::time::{Duration, Instant};

static B_ADDR: AtomicU64 = AtomicU64::new(0);
static HANDLER_RESULT: AtomicI32 = AtomicI32::new(-1);
static HANDLER_RAN: AtomicBool = AtomicBool::new(false);
static OK: AtomicU64 = AtomicU64::new(0);
static FAILED: AtomicU64 = AtomicU64::new(0);
static BUSY: AtomicBool = AtomicBool::new(false);

fn sockaddr(ip: Ipv4Addr, port: u16) -> libc::sockaddr_in {
    // SAFETY: all-zero is a valid sockaddr_in.
    let mut sa: libc::sockaddr_in = unsafe { std::mem::zeroed() };
    sa.sin_family = libc::AF_INET as libc::sa_family_t;
    sa.sin_port = port.to_be();
    sa.sin_addr.s_addr = u32::from(ip).to_be();
    sa
}

fn errno() -> i32 {
    // SAFETY: this thread's errno.
    unsafe { *libc::__errno_location() }
}

/// socket + connect + write + close: async-signal-safe calls only. 0 or the errno.
fn connect_and_write(packed: u64, msg: &[u8]) -> i32 {
    let ip = Ipv4Addr::from((packed >> 16) as u32);
    let sa = sockaddr(ip, packed as u16);
    // SAFETY: plain syscalls on our own socket.
    unsafe {
        let s = libc::socket(libc::AF_INET, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0);
        if s < 0 {
            return errno();
        }
        let r = libc::connect(
            s,
            &sa as *const libc::sockaddr_in as *const libc::sockaddr,
            size_of::<libc::sockaddr_in>() as libc::socklen_t,
        );
        let e = if r == 0 {
            libc::write(s, msg.as_ptr().cast(), msg.len());
            0
        } else {
            errno()
        };
        libc::close(s);
        e
    }
}

extern "C" fn on_alarm_once(_: libc::c_int) {
    let saved = errno();
    HANDLER_RAN.store(true, Ordering::SeqCst);
    HANDLER_RESULT.store(
        connect_and_write(B_ADDR.load(Ordering::SeqCst), b"handler"),
        Ordering::SeqCst,
    );
    // SAFETY: restoring the interrupted code's errno.
    unsafe { *libc::__errno_location() = saved };
}

extern "C" fn on_alarm_storm(_: libc::c_int) {
    if BUSY.swap(true, Ordering::SeqCst) {
        return;
    }
    let saved = errno();
    match connect_and_write(B_ADDR.load(Ordering::SeqCst), b"storm") {
        0 => OK.fetch_add(1, Ordering::SeqCst),
        _ => FAILED.fetch_add(1, Ordering::SeqCst),
    };
    // SAFETY: restoring the interrupted code's errno.
    unsafe { *libc::__errno_location() = saved };
    BUSY.store(false, Ordering::SeqCst);
}

fn install(handler: extern "C" fn(libc::c_int), every_us: i64, first_us: i64) {
    // SAFETY: installing a handler and an interval timer for this process.
    unsafe {
        let mut sa: libc::sigaction = std::mem::zeroed();
        sa.sa_sigaction = handler as usize;
        sa.sa_flags = libc::SA_RESTART;
        libc::sigemptyset(&mut sa.sa_mask);
        libc::sigaction(libc::SIGALRM, &sa, std::ptr::null_mut());
        let t = libc::itimerval {
            it_interval: libc::timeval {
                tv_sec: every_us / 1_000_000,
                tv_usec: every_us % 1_000_000,
            },
            it_value: libc::timeval {
                tv_sec: first_us / 1_000_000,
                tv_usec: first_us % 1_000_000,
            },
        };
        libc::setitimer(libc::ITIMER_REAL, &t, std::ptr::null_mut());
    }
}

fn stop_timer() {
    // SAFETY: disarming the interval timer.
    unsafe {
        let t: libc::itimerval = std::mem::zeroed();
        libc::setitimer(libc::ITIMER_REAL, &t, std::ptr::null_mut());
    }
}

fn name(e: i32) -> String {
    if e == 0 {
        "ok".into()
    } else {
        chainsocks_core::error::errno_name(e).to_string()
    }
}

fn pack(ip: &str, port: &str) -> u64 {
    let ip: Ipv4Addr = ip.parse().unwrap_or(Ipv4Addr::LOCALHOST);
    let port: u16 = port.parse().unwrap_or(0);
    ((u32::from(ip) as u64) << 16) | port as u64
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let a = |i: usize| args.get(i).map(String::as_str).unwrap_or("");
    match a(1) {
        "sigconnect" => {
            B_ADDR.store(pack(a(4), a(5)), Ordering::SeqCst);
            let delay: i64 = a(6).parse().unwrap_or(100);
            install(on_alarm_once, 0, delay * 1000);
            let main = connect_and_write(pack(a(2), a(3)), b"main");
            stop_timer();
            let handler = if HANDLER_RAN.load(Ordering::SeqCst) {
                name(HANDLER_RESULT.load(Ordering::SeqCst))
            } else {
                "none".into()
            };
            println!("main={} handler={handler}", name(main));
        }
        "mallocstorm" => {
            B_ADDR.store(pack(a(2), a(3)), Ordering::SeqCst);
            let millis: u64 = a(4).parse().unwrap_or(1000);
            install(on_alarm_storm, 2000, 2000);
            let end = Instant::now() + Duration::from_millis(millis);
            let mut keep: Vec<Vec<u8>> = Vec::new();
            let mut i = 0usize;
            while Instant::now() < end {
                let size = 16 + (i * 7919) % 4000;
                keep.push(vec![i as u8; size]);
                if keep.len() > 64 {
                    keep.swap_remove(i % 64);
                }
                i += 1;
            }
            stop_timer();
            println!(
                "ok connects={} failures={} allocations={i}",
                OK.load(Ordering::SeqCst),
                FAILED.load(Ordering::SeqCst)
            );
        }
        _ => {
            eprintln!("usage: cshazard sigconnect|mallocstorm ...");
            std::process::exit(2);
        }
    }
}
