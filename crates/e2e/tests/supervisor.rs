//! End-to-end tests of the seccomp supervisor (issue 11) and of the launcher's wait loop
//! (issue 10, items 14 and 15). Each test runs in its own network namespace with only `lo`.
//!
//! Programs the preload cannot see are played by `csraw` (raw `syscall()`s: connect from the
//! main thread, a second thread, a fork child, a vfork child, a double-forked daemon; io_uring;
//! TCP Fast Open; an address flipped by a racing thread) and busybox-static. A supervised
//! connect goes through the same dialer as the library's: the origin sees dante's outgoing
//! address (127.0.0.2), never the program's (127.0.0.1); the control runs with
//! `--no-supervisor` prove the same connect would otherwise go direct.

use std::os::unix::process::CommandExt;
use std::process::Command;
use std::time::{Duration, Instant};

use e2e::*;

const T: Duration = Duration::from_secs(30);
/// dante's outgoing address: a connection from it went through the proxy.
const VIA_DANTE: std::net::IpAddr = std::net::IpAddr::V4(std::net::Ipv4Addr::new(127, 0, 0, 2));

fn csraw() -> &'static str {
    env!("CARGO_BIN_EXE_csraw")
}

/// A launch whose only proxy is dante.
fn launch(dante: &Dante) -> Launch {
    Launch::chain(&[format!("socks5://127.0.0.1:{}", dante.port())])
}

fn debug(mut c: Command) -> Command {
    c.env("CHAINSOCKS_LOG", "debug");
    c
}

/// `chainsocks -f CONFIG --no-supervisor -- program`.
fn unsupervised(l: &Launch, program: &str) -> Command {
    l.cmd_with(&["--no-supervisor"], program)
}

/// The supervisor's closing debug line: (notifications, continued, proxied, dns).
fn counts(log: &str) -> (u64, u64, u64, u64) {
    let line = log
        .lines()
        .rfind(|l| l.contains("supervisor: ") && l.contains(" notifications ("))
        .unwrap_or_else(|| panic!("no supervisor summary in the log:\n{log}"));
    let nums: Vec<u64> = line
        .split(|c: char| !c.is_ascii_digit())
        .filter(|s| !s.is_empty())
        .map(|s| s.parse().unwrap())
        .collect();
    // chainsocks[PID]: supervisor: N notifications (C continued, P proxied, D to ...; W at once)
    let n = nums.len();
    (nums[n - 5], nums[n - 4], nums[n - 3], nums[n - 2])
}

#[test]
fn raw_connects_from_every_kind_of_process_are_seen_and_none_goes_direct() {
    netns();
    let origin = HttpOrigin::start(vec![("/f".into(), b"origin".to_vec())]);
    let Some(dante) = Dante::start(DanteOpts::default()) else {
        return;
    };
    let l = launch(&dante);
    let (ip, port) = ("127.0.0.1", origin.port().to_string());
    for mode in ["", "--thread", "--fork", "--vfork"] {
        let mut c = debug(l.cmd(csraw()));
        c.args(["connect", ip, &port]);
        if !mode.is_empty() {
            c.arg(mode);
        }
        let o = run(&mut c, T);
        let out = stdout(&o);
        assert!(
            o.status.success() && out.contains(" ok"),
            "{mode}: {}\n{}",
            show(&o),
            l.log()
        );
        if mode == "--thread" {
            // The connect came from a non-leader thread, and the supervisor saw that thread.
            let tid = out.split("tid=").nth(1).unwrap().split(' ').next().unwrap();
            let main = out.split("main_tid=").nth(1).unwrap().trim();
            assert_ne!(tid, main, "{out}");
            assert!(
                l.log().contains(&format!("connect from tid {tid} ")),
                "{}",
                l.log()
            );
        }
    }
    // fork + exec descendants, and a static binary.
    let script = format!(
        "sh -c '{csraw} connect {ip} {port}'; sh -c 'sh -c \"busybox wget -q -O- http://{ip}:{port}/f\"'; echo wget=$?",
        csraw = csraw()
    );
    let mut c = debug(l.cmd("sh"));
    c.args(["-c", &script]);
    let o = run(&mut c, T);
    let out = stdout(&o);
    assert!(out.contains(" ok"), "{}", show(&o));
    let want = if require("busybox").is_some() {
        assert!(
            out.contains("origin") && out.contains("wget=0"),
            "{}\n{}",
            show(&o),
            l.log()
        );
        6
    } else {
        5
    };
    let peers = origin.peers();
    assert_eq!(peers.len(), want, "{peers:?}");
    assert!(
        peers.iter().all(|p| p.ip() == VIA_DANTE),
        "direct: {peers:?}"
    );
    // Control: without the supervisor the same raw connect goes straight to the origin.
    let mut c = unsupervised(&l, csraw());
    c.args(["connect", ip, &port]);
    let o = run(&mut c, T);
    assert!(o.status.success(), "{}", show(&o));
    assert_eq!(origin.peers().len(), want + 1);
    assert_eq!(
        origin.peers().last().map(|p| p.ip()),
        Some(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST))
    );
}

#[test]
fn a_double_forking_daemon_keeps_the_launcher_and_is_still_supervised() {
    netns();
    let echo = Echo::start();
    let Some(dante) = Dante::start(DanteOpts::default()) else {
        return;
    };
    let l = launch(&dante);
    let out = l.dir().join("daemon.out");
    let script = format!(
        "{} daemon 127.0.0.1 {} {} 1500; exit 7",
        csraw(),
        echo.port(),
        out.display()
    );
    let mut c = debug(l.cmd("sh"));
    c.args(["-c", &script]);
    let started = Instant::now();
    let child = c
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let launcher = child.id();
    let o = child.wait_with_output().unwrap();
    let took = started.elapsed();
    assert_eq!(o.status.code(), Some(7), "COMMAND's status");
    assert!(
        took >= Duration::from_millis(1500),
        "the launcher left before the daemon ({took:?})"
    );
    let line = std::fs::read_to_string(&out).expect("the daemon ran");
    assert!(line.contains(" ok"), "{line}\n{}", l.log());
    // The daemon was adopted by the launcher (subreaper), not by init.
    assert!(line.contains(&format!("ppid={launcher}")), "{line}");
    let peers: Vec<_> = echo.peers().iter().map(|p| p.ip()).collect();
    assert_eq!(peers, [VIA_DANTE], "through dante, not direct");
    assert_eq!(counts(&l.log()).2, 1, "{}", l.log());
}

#[test]
fn background_jobs_reach_the_launch_state_after_the_program_exits() {
    netns();
    let origin = HttpOrigin::start(vec![("/f".into(), b"later".to_vec())]);
    let Some(dante) = Dante::start(DanteOpts::default()) else {
        return;
    };
    let Some(curl) = require("curl") else { return };
    let l = launch(&dante);
    for supervisor in [true, false] {
        let out = l.dir().join(format!("bg-{supervisor}.out"));
        // The program exits at once with 3; its background job first uses the shim 1 s later.
        let script = format!(
            "(sleep 1; {} -sS --max-time 10 {} > {} 2>&1) & exit 3",
            curl.display(),
            origin.url("/f"),
            out.display()
        );
        let mut c = if supervisor {
            l.cmd("sh")
        } else {
            unsupervised(&l, "sh")
        };
        c.args(["-c", &script]);
        let o = run(&mut c, T);
        assert_eq!(o.status.code(), Some(3), "{}", show(&o));
        let got = std::fs::read_to_string(&out).unwrap_or_default();
        assert_eq!(got, "later", "supervisor={supervisor}: {}", l.log());
    }
    assert_eq!(origin.requests().len(), 2);
    assert!(
        origin
            .requests()
            .iter()
            .all(|(p, _)| p.ip().to_string() == "127.0.0.2"),
        "through dante: {:?}",
        origin.requests()
    );
}

#[test]
fn an_inherited_sigchld_ignore_does_not_hang_the_launcher() {
    netns();
    let l = Launch::chain(&["socks5://127.0.0.1:9".to_string()]);
    for supervisor in [true, false] {
        let mut c = if supervisor {
            l.cmd("sh")
        } else {
            unsupervised(&l, "sh")
        };
        c.args(["-c", "sleep 0.2 & exit 5"]);
        let ignore = |c: &mut Command| {
            // SAFETY: only signal() between fork and exec.
            unsafe {
                c.pre_exec(|| {
                    libc::signal(libc::SIGCHLD, libc::SIG_IGN);
                    Ok(())
                });
            }
        };
        ignore(&mut c);
        let started = Instant::now();
        let o = run(&mut c, Duration::from_secs(20));
        assert_eq!(o.status.code(), Some(5), "{}", show(&o));
        assert!(started.elapsed() < Duration::from_secs(10));
        // The program itself still inherits SIGCHLD ignored (bit 17 - 1 of the mask).
        let mut c = if supervisor {
            l.cmd("grep")
        } else {
            unsupervised(&l, "grep")
        };
        c.args(["SigIgn", "/proc/self/status"]);
        ignore(&mut c);
        let o = run(&mut c, T);
        let mask = u64::from_str_radix(stdout(&o).split_whitespace().nth(1).unwrap(), 16).unwrap();
        assert_ne!(mask & (1 << 16), 0, "{}", show(&o));
    }
}

#[test]
fn non_internet_sockets_are_connected_by_the_kernel_for_the_program() {
    netns();
    let l = Launch::chain(&["socks5://127.0.0.1:9".to_string()]);
    let path = l.dir().join("unix.sock");
    let listener = std::os::unix::net::UnixListener::bind(&path).unwrap();
    std::thread::spawn(move || {
        use std::io::Write;
        use std::os::fd::AsRawFd;
        for mut s in listener.incoming().flatten() {
            let mut cred = libc::ucred {
                pid: 0,
                uid: 0,
                gid: 0,
            };
            let mut len = std::mem::size_of::<libc::ucred>() as libc::socklen_t;
            // SAFETY: SO_PEERCRED into a ucred.
            unsafe {
                libc::getsockopt(
                    s.as_raw_fd(),
                    libc::SOL_SOCKET,
                    libc::SO_PEERCRED,
                    (&mut cred as *mut libc::ucred).cast(),
                    &mut len,
                )
            };
            let _ = write!(s, "{}", cred.pid);
        }
    });
    let mut c = debug(l.cmd(csraw()));
    c.args(["unix", path.to_str().unwrap()]);
    let o = run(&mut c, T);
    let out = stdout(&o);
    assert!(o.status.success(), "{}", show(&o));
    // The peer is the program itself (the kernel continued its own connect), not the launcher.
    let pid = out.split("pid=").nth(1).unwrap().split(' ').next().unwrap();
    assert!(out.contains(&format!("reply={pid}")), "{out}");
    let (n, continued, proxied, _) = counts(&l.log());
    assert_eq!((n, continued, proxied), (1, 1, 0), "{}", l.log());
}

#[test]
fn io_uring_and_tcp_fast_open_are_refused_never_direct() {
    netns();
    let echo = Echo::start();
    let l = Launch::chain(&["socks5://127.0.0.1:9".to_string()]);
    let mut c = l.cmd(csraw());
    c.arg("io_uring");
    let o = run(&mut c, T);
    assert!(
        stdout(&o).contains("io_uring_setup errno=38"),
        "{}",
        show(&o)
    ); // ENOSYS
    let mut c = l.cmd(csraw());
    c.args(["fastopen", "127.0.0.1", &echo.port().to_string()]);
    let o = run(&mut c, T);
    assert!(stdout(&o).contains("errno=95"), "{}", show(&o)); // EOPNOTSUPP
    std::thread::sleep(Duration::from_millis(100));
    assert!(echo.peers().is_empty(), "direct: {:?}", echo.peers());
    // Controls: without the supervisor both work (and fast open connects straight out).
    let mut c = unsupervised(&l, csraw());
    c.arg("io_uring");
    assert!(stdout(&run(&mut c, T)).contains("io_uring_setup ok"));
    let mut c = unsupervised(&l, csraw());
    c.args(["fastopen", "127.0.0.1", &echo.port().to_string()]);
    let o = run(&mut c, T);
    assert!(stdout(&o).contains("ok 8"), "{}", show(&o));
    assert!(wait_until(T, || echo.peers().len() == 1));
}

#[test]
fn an_address_flipped_during_connect_never_goes_direct() {
    netns();
    let a = Echo::start();
    let b = Echo::start_on("127.0.0.2".parse().unwrap());
    let l = Launch::chain(&["socks5://127.0.0.1:9".to_string()]);
    let mut c = l.cmd(csraw());
    c.args([
        "flip",
        "127.0.0.1",
        &a.port().to_string(),
        "127.0.0.2",
        &b.port().to_string(),
        "2000",
    ]);
    c.env("CHAINSOCKS_LOG", "error");
    let o = run(&mut c, Duration::from_secs(120));
    assert!(
        stdout(&o).contains("connects=2000 ok=0 errnos=111:2000"),
        "{}",
        show(&o)
    );
    assert!(a.peers().is_empty() && b.peers().is_empty());
}

#[test]
fn connects_fail_closed_once_the_supervisor_is_gone() {
    netns();
    let echo = Echo::start();
    let l = Launch::chain(&["socks5://127.0.0.1:9".to_string()]);
    let (ready, go, out) = (
        l.dir().join("ready"),
        l.dir().join("go"),
        l.dir().join("out"),
    );
    let script = format!(
        "touch {ready}; while [ ! -e {go} ]; do sleep 0.05; done; {csraw} connect 127.0.0.1 {port} > {out} 2>&1",
        ready = ready.display(),
        go = go.display(),
        out = out.display(),
        csraw = csraw(),
        port = echo.port()
    );
    let mut c = l.cmd("sh");
    c.args(["-c", &script])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null());
    let mut launcher = c.spawn().unwrap();
    assert!(wait_until(T, || ready.exists()));
    launcher.kill().unwrap(); // SIGKILL: the supervisor dies with the launcher
    launcher.wait().unwrap();
    std::fs::write(&go, "").unwrap();
    assert!(wait_until(T, || std::fs::read_to_string(&out)
        .is_ok_and(|s| s.contains("errno="))));
    let got = std::fs::read_to_string(&out).unwrap();
    assert!(got.contains("errno=38"), "{got}"); // ENOSYS
    assert!(echo.peers().is_empty(), "direct: {:?}", echo.peers());
}

#[test]
fn dynamic_programs_pay_no_notification_and_are_proxied_once() {
    netns();
    let origin = HttpOrigin::start(vec![("/f".into(), b"once".to_vec())]);
    let Some(dante) = Dante::start(DanteOpts::default()) else {
        return;
    };
    let Some(curl) = require("curl") else { return };
    let l = launch(&dante);
    let mut c = debug(l.cmd(&curl));
    c.args(["-sS", "--max-time", "10", &origin.url("/f")]);
    let o = run(&mut c, T);
    assert_eq!(stdout(&o), "once", "{}\n{}", show(&o), l.log());
    let log = l.log();
    assert!(!log.contains("supervisor: connect from"), "{log}");
    assert_eq!(counts(&log).2, 0, "{log}");
    let reqs = origin.requests();
    assert_eq!(reqs.len(), 1);
    assert_eq!(reqs[0].0.ip().to_string(), "127.0.0.2", "through dante");
    // Nor for their datagrams: sendmsg on unix sockets, and UDP the library frames itself
    // (the filter would otherwise ask about every sendmsg). glibc's own internal calls (an
    // nscd connect for a user lookup, a netlink sendto) are seen and continued, as many as
    // the environment makes: the count must not grow with the program's sendmsg calls.
    let Some(py) = require("python3") else { return };
    let script = r#"
import socket, sys
n = int(sys.argv[1])
a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
for i in range(5 * n):
    a.sendmsg([b'x']); assert b.recv(10) == b'x'
r = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); r.bind(('127.0.0.1', 0)); r.settimeout(5)
u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
for i in range(2 * n):
    u.sendmsg([b'y'], [], 0, r.getsockname()); assert r.recv(10) == b'y'
print('ok')
"#;
    let mut seen = Vec::new();
    for n in ["1", "10"] {
        let mut c = debug(l.cmd(&py));
        c.args(["-c", script, n]);
        let o = run(&mut c, T);
        assert_eq!(stdout(&o).trim(), "ok", "{}\n{}", show(&o), l.log());
        let log = l.log();
        assert!(log.contains("UDP association through"), "{log}");
        seen.push(counts(&log).0);
    }
    assert_eq!(
        seen[0],
        seen[1],
        "notifications for 5+2 vs 50+20 sendmsg\n{}",
        l.log()
    );
}

/// The fake IPv4 address a line of output names, if any (198.18.0.0/15).
fn fake_v4(text: &str) -> Option<String> {
    text.split(|c: char| !(c.is_ascii_digit() || c == '.'))
        .find(|w| w.starts_with("198.18.") || w.starts_with("198.19."))
        .map(String::from)
}

#[test]
fn programs_doing_their_own_dns_get_the_launchs_fake_addresses() {
    netns();
    let trap = DnsTrap::start();
    let l = Launch::chain(&["socks5://127.0.0.1:9".to_string()]);
    let Some(busybox) = require("busybox") else {
        return;
    };
    // busybox nslookup (static, UDP), then the preload's getaddrinfo (getent) for the same
    // name in the same launch: one entry of the shared table.
    let script = format!(
        "{} nslookup own.example; getent hosts own.example",
        busybox.display()
    );
    let mut c = debug(l.cmd("sh"));
    c.args(["-c", &script]);
    trap.apply(&mut c);
    let o = run(&mut c, T);
    let out = stdout(&o);
    let from_dns = fake_v4(out.split("own.example").nth(1).unwrap_or(""))
        .unwrap_or_else(|| panic!("no fake address from nslookup: {}", show(&o)));
    let from_getent = out
        .lines()
        .rfind(|l| l.contains("own.example"))
        .and_then(fake_v4)
        .unwrap_or_else(|| panic!("no fake address from getent: {}", show(&o)));
    assert_eq!(from_dns, from_getent, "{}", show(&o));
    assert!(counts(&l.log()).3 >= 1, "{}", l.log());
    // Raw queries over UDP and over TCP.
    for tcp in [false, true] {
        let mut c = l.cmd(csraw());
        c.args(["dns", "127.0.0.1", "53", "own.example"]);
        if tcp {
            c.arg("--tcp");
        }
        trap.apply(&mut c);
        let o = run(&mut c, T);
        assert_eq!(
            stdout(&o).trim(),
            format!("dns rcode=0 answers=1 a={from_dns}"),
            "tcp={tcp}: {}",
            show(&o)
        );
    }
    // dig (its UDP socket is connected with connect(2), unmarked: the supervisor sees it).
    if let Some(dig) = require("dig") {
        let mut c = l.cmd(&dig);
        c.args(["+short", "+tries=1", "+timeout=2", "own.example", "A"]);
        trap.apply(&mut c);
        let o = run(&mut c, T);
        assert_eq!(stdout(&o).trim(), from_dns, "{}", show(&o));
        let mut c = l.cmd(&dig);
        c.args(["+short", "+tries=1", "+timeout=2", "own.example", "MX"]);
        trap.apply(&mut c);
        let o = run(&mut c, T);
        assert!(
            o.status.success() && stdout(&o).trim().is_empty(),
            "{}",
            show(&o)
        );
    }
    // Go's own resolver (hey): the name resolves to a fake address, whose connect the
    // supervisor then dials by name (the proxy here is down: the connect fails, by name).
    if let Some(hey) = require("hey") {
        let mut c = debug(l.cmd(&hey));
        c.args(["-n", "1", "-c", "1", "http://go.example:8080/"]);
        c.env("GODEBUG", "netdns=go");
        trap.apply(&mut c);
        let o = run(&mut c, T);
        let log = l.log();
        assert!(
            log.lines()
                .any(|l| l.contains("-> go.example:8080 failed") && l.contains("[pid ")),
            "{}\n{log}",
            show(&o)
        );
    }
    trap.assert_no_leak("own DNS under the supervisor");
}

#[test]
fn a_nested_launch_falls_back_to_the_preload_and_says_so() {
    netns();
    let echo = Echo::start();
    let Some(busybox) = require("busybox") else {
        return;
    };
    let l = Launch::chain(&["socks5://127.0.0.1:9".to_string()]);
    let nc = format!("printf x | busybox nc -w 2 127.0.0.1 {}", echo.port());
    let inner = |strict: bool| {
        let mut c = l.cmd(chainsocks_bin());
        c.arg("-f").arg(&l.config);
        if strict {
            c.arg("--strict-launch");
        }
        c.arg(&busybox).args(["sh", "-c", &nc]);
        run(&mut c, T)
    };
    // The inner launcher cannot install a second listener: one line, then the preload alone;
    // the outer supervisor still sees the static program's connect.
    let o = inner(false);
    let err = stderr(&o);
    assert!(
        err.contains("statically linked") && err.contains("supervisors cannot nest"),
        "{}",
        show(&o)
    );
    assert!(err.contains("Connection refused"), "{}", show(&o));
    assert_eq!(o.status.code(), Some(1), "{}", show(&o));
    let o = inner(true);
    assert_eq!(o.status.code(), Some(2), "{}", show(&o));
    assert!(
        stderr(&o)
            .contains("refusing to run (--strict-launch): the seccomp supervisor cannot start"),
        "{}",
        show(&o)
    );
    assert!(echo.peers().is_empty(), "direct: {:?}", echo.peers());
}

#[test]
fn without_the_supervisor_a_static_program_is_warned_about_or_refused() {
    netns();
    let Some(busybox) = require("busybox") else {
        return;
    };
    let l = Launch::chain(&["socks5://127.0.0.1:9".to_string()]);
    let mut c = unsupervised(&l, busybox.to_str().unwrap());
    c.arg("true");
    let o = run(&mut c, T);
    assert!(o.status.success(), "{}", show(&o));
    assert!(
        stderr(&o).contains("LD_PRELOAD will not apply"),
        "{}",
        show(&o)
    );
    let mut c = l.cmd_with(&["--no-supervisor", "--strict-launch"], &busybox);
    c.arg("true");
    let o = run(&mut c, T);
    assert_eq!(o.status.code(), Some(2), "{}", show(&o));
    // With the supervisor: no warning, the static program is covered.
    let mut c = l.cmd(&busybox);
    c.arg("true");
    let o = run(&mut c, T);
    assert!(o.status.success() && stderr(&o).is_empty(), "{}", show(&o));
}

#[test]
fn a_handshake_stuck_at_a_silent_proxy_does_not_delay_other_connects() {
    netns();
    let origin = HttpOrigin::start(vec![("/f".into(), b"fast".to_vec())]);
    let Some(dante) = Dante::start(DanteOpts::default()) else {
        return;
    };
    // A proxy that accepts and never answers: a handshake through it waits for its timeout.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let held = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let keep = std::sync::Arc::clone(&held);
    let silent_port = silent.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for s in silent.incoming().flatten() {
            keep.lock().unwrap().push(s);
        }
    });
    let l = Launch::new(&format!(
        "connect_timeout_ms = 3000\nhandshake_timeout_ms = 6000\n\
         proxy = [\"socks5://127.0.0.1:{}\"]\n\
         [chains.silent]\nproxy = [\"socks5://127.0.0.1:{silent_port}\"]\n\
         [[rule]]\ndest = \"127.0.0.1:9\"\nchain = \"silent\"\n",
        dante.port()
    ));
    // Three connects stuck at the silent proxy (one process, three threads' worth of
    // handshakes in the launcher), then one through dante: it must not wait for them.
    let script = format!(
        "for i in 1 2 3; do {csraw} connect 127.0.0.1 9 > stuck$i.out & done; n=0; \
         while [ ! -e go ] && [ $n -lt 400 ]; do sleep 0.05; n=$((n + 1)); done; \
         s=$(date +%s%N); {csraw} connect 127.0.0.1 {port}; e=$(date +%s%N); \
         echo fast_ms=$(( (e - s) / 1000000 )); wait; cat stuck*.out",
        csraw = csraw(),
        port = origin.port()
    );
    // The fast connect starts once the three are at the silent proxy (or after 20 s).
    let (go, stuck) = (l.dir().join("go"), std::sync::Arc::clone(&held));
    std::thread::spawn(move || {
        wait_until(Duration::from_secs(20), || stuck.lock().unwrap().len() >= 3);
        std::fs::write(go, "").unwrap();
    });
    let mut c = debug(l.cmd("sh"));
    c.args(["-c", &script]).current_dir(l.dir());
    let o = run(&mut c, Duration::from_secs(40));
    let out = stdout(&o);
    let fast: u64 = out
        .split("fast_ms=")
        .nth(1)
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("{}\n{}", show(&o), l.log()));
    assert!(out.contains(" ok"), "{}\n{}", show(&o), l.log());
    assert!(
        fast < 3000,
        "the fast connect waited {fast} ms\n{}",
        l.log()
    );
    assert_eq!(origin.peers().len(), 1, "{:?}", origin.peers());
    assert_eq!(origin.peers()[0].ip(), VIA_DANTE);
    // The stuck ones failed (timed out) and none went direct; they were all in the launcher
    // at once with the fast one.
    assert_eq!(
        out.matches("errno=").count(),
        3,
        "{}\n{}",
        show(&o),
        l.log()
    );
    assert_eq!(held.lock().unwrap().len(), 3);
    assert!(
        l.log().contains("4 handshakes at once at most"),
        "{}",
        l.log()
    );
}

/// Whether the running kernel is at least `major.minor` (custom EEVDF slices: 6.12).
fn kernel_at_least(major: u32, minor: u32) -> bool {
    let r = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap();
    let mut it = r
        .trim()
        .split(['.', '-'])
        .map(|p| p.parse::<u32>().unwrap_or(0));
    let (a, b) = (it.next().unwrap_or(0), it.next().unwrap_or(0));
    (a, b) >= (major, minor)
}

#[test]
fn supervisor_threads_ask_for_the_shortest_slice_and_the_launch_keeps_its_own() {
    netns();
    let echo = Echo::start();
    let Some(dante) = Dante::start(DanteOpts::default()) else {
        return;
    };
    let l = launch(&dante);
    let (ready, go, out) = (
        l.dir().join("ready"),
        l.dir().join("go"),
        l.dir().join("out"),
    );
    // A supervised connect (a handshake run on a supervisor thread), then the program waits
    // while the test looks at the launcher's threads.
    let script = format!(
        "{csraw} connect 127.0.0.1 {port} > {out} 2>&1; touch {ready}; while [ ! -e {go} ]; do sleep 0.05; done",
        csraw = csraw(),
        port = echo.port(),
        out = out.display(),
        ready = ready.display(),
        go = go.display(),
    );
    let mut c = debug(l.cmd("sh"));
    c.args(["-c", &script]);
    let mut launcher = c.spawn().unwrap();
    assert!(wait_until(T, || ready.exists()), "{}", l.log());
    // (name, se.slice): kernels before EEVDF (6.6) have no se.slice line.
    let threads: Vec<(String, Option<String>)> =
        std::fs::read_dir(format!("/proc/{}/task", launcher.id()))
            .unwrap()
            .filter_map(|t| {
                let t = t.ok()?.path();
                let comm = std::fs::read_to_string(t.join("comm")).ok()?;
                let slice = std::fs::read_to_string(t.join("sched")).ok().and_then(|s| {
                    s.lines()
                        .find(|l| l.starts_with("se.slice"))
                        .and_then(|l| l.rsplit(' ').next())
                        .map(str::to_string)
                });
                Some((comm.trim().to_string(), slice))
            })
            .collect();
    std::fs::write(&go, "").unwrap();
    assert!(launcher.wait().unwrap().success(), "{}", l.log());
    let got = std::fs::read_to_string(&out).unwrap();
    assert!(got.contains(" ok"), "{got}");
    let peers = echo.peers();
    assert!(
        !peers.is_empty() && peers.iter().all(|p| p.ip() == VIA_DANTE),
        "{peers:?}"
    );
    let (sup, other): (Vec<_>, Vec<_>) = threads.iter().partition(|(c, _)| c == "cs-supervisor");
    let short = |(_, s): &&(String, Option<String>)| s.as_deref() == Some("100000");
    assert!(!sup.is_empty() && !other.is_empty(), "{threads:?}");
    if kernel_at_least(6, 12) {
        assert!(sup.iter().all(short), "{threads:?}");
        assert!(
            l.log().contains("threads' scheduling slice: 100 µs"),
            "{}",
            l.log()
        );
    } else {
        assert!(l.log().contains("threads' scheduling slice: unchanged"));
    }
    // Only the supervisor's threads: the launcher's main thread (and so the program it
    // started) keeps the default.
    assert!(!other.iter().any(short), "{threads:?}");
}
