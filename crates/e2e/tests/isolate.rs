//! End-to-end tests of `--isolate`, the proxy-only policy and the egress report (issue 7).
//! Each test runs in its own network namespace (with only `lo`) where the real servers live;
//! `--isolate` then makes a second, nested namespace for the program, reachable from the
//! outside only through the launcher's forwarders.

use std::process::Command;
use std::time::{Duration, Instant};

use e2e::*;

const T: Duration = Duration::from_secs(60);

fn origin_test() -> Vec<(String, std::net::IpAddr)> {
    vec![("origin.test".to_string(), "127.0.0.1".parse().unwrap())]
}

/// The report's records, parsed loosely (one JSON object per line).
fn records(path: &std::path::Path) -> Vec<String> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(String::from)
        .collect()
}

#[test]
fn curl_and_python_reach_the_origin_through_the_proxy_and_the_report_lists_them() {
    netns();
    let origin = HttpOrigin::start(vec![("/f".into(), b"inside".to_vec())]);
    let Some(dante) = Dante::start(DanteOpts {
        hosts: origin_test(),
        ..Default::default()
    }) else {
        return;
    };
    let Some(curl) = require("curl") else { return };
    let Some(py) = require("python3") else { return };
    let l = Launch::chain(&[format!("socks5://127.0.0.1:{}", dante.port())]);
    let report = l.dir().join("egress.jsonl");
    let by_ip = origin.url("/f");
    let by_name = origin.url_with_host("origin.test", "/f");
    let script = format!(
        "{curl} -sS --fail {by_ip}; echo; {curl} -sS --fail {by_name}; echo; {py} -c \"import urllib.request;print(urllib.request.urlopen('{by_name}').read().decode())\"",
        curl = curl.display(),
        py = py.display()
    );
    let mut c = clean(Command::new(chainsocks_bin()));
    c.arg("-f")
        .arg(&l.config)
        .arg("--isolate")
        .arg("--report")
        .arg(&report)
        .arg("--summary")
        .args(["sh", "-c", &script]);
    c.env("CHAINSOCKS_LOG_FILE", l.log_path());
    let o = run(&mut c, T);
    assert_eq!(
        stdout(&o),
        "inside\ninside\ninside\n",
        "{}\n{}",
        show(&o),
        l.log()
    );
    assert_eq!(origin.requests().len(), 3);
    assert!(
        origin
            .requests()
            .iter()
            .all(|(p, _)| p.ip().to_string() == "127.0.0.2"),
        "through dante only"
    );
    let recs = records(&report);
    let connects: Vec<&String> = recs
        .iter()
        .filter(|r| r.contains("\"kind\":\"connect\""))
        .collect();
    assert_eq!(connects.len(), 3, "{recs:#?}");
    assert!(
        connects
            .iter()
            .all(|r| r.contains("\"result\":\"ok\"") && r.contains("\"chain\":\"default\"")),
        "{recs:#?}"
    );
    assert_eq!(
        connects
            .iter()
            .filter(|r| r.contains("\"name\":\"origin.test\""))
            .count(),
        2,
        "{recs:#?}"
    );
    assert!(connects.iter().any(|r| r.contains("\"ip\":\"127.0.0.1\"")
        && r.contains(&format!("\"port\":{}", origin.port()))));
    assert!(
        connects
            .iter()
            .any(|r| r.contains("\"program\":\"") && r.contains("curl")),
        "{recs:#?}"
    );
    assert!(
        recs.iter()
            .any(|r| r.contains("\"kind\":\"lookup\"") && r.contains("origin.test")),
        "{recs:#?}"
    );
    assert!(
        recs.iter()
            .all(|r| r.starts_with("{\"time\":\"20") && r.ends_with('}')),
        "whole lines only: {recs:#?}"
    );
    let err = stderr(&o);
    assert!(
        err.contains("summary: 3 connections (0 failed)") && err.contains("origin.test:"),
        "{err}"
    );
}

#[test]
fn a_static_binary_goes_direct_without_isolate_and_nowhere_with_it() {
    netns();
    let echo = Echo::start();
    let Some(dante) = Dante::start(DanteOpts::default()) else {
        return;
    };
    let Some(busybox) = require("busybox") else {
        return;
    };
    let l = Launch::chain(&[format!("socks5://127.0.0.1:{}", dante.port())]);
    let nc = format!("printf ping | busybox nc -w 3 127.0.0.1 {}", echo.port());
    // Without --isolate and without the supervisor: the LD_PRELOAD limit, shown — the launcher
    // warns, and the static program (busybox sh + nc) connects straight to the server (peer
    // 127.0.0.1, no proxy).
    let mut c = l.cmd_with(&["--no-supervisor"], &busybox);
    c.args(["sh", "-c", &nc]);
    let o = run(&mut c, T);
    assert_eq!(stdout(&o), "ping", "{}", show(&o));
    assert!(
        stderr(&o).contains("statically linked: LD_PRELOAD will not apply"),
        "{}",
        show(&o)
    );
    assert_eq!(
        echo.peers()
            .iter()
            .map(|p| p.ip().to_string())
            .collect::<Vec<_>>(),
        ["127.0.0.1"]
    );
    // With --isolate and without the supervisor: it cannot reach anything; the server
    // receives nothing.
    let mut c = clean(Command::new(chainsocks_bin()));
    c.arg("-f")
        .arg(&l.config)
        .args(["--isolate", "--no-supervisor"])
        .arg(&busybox)
        .args(["sh", "-c", &format!("{nc}; echo rc=$?")]);
    let o = run(&mut c, T);
    assert!(
        stdout(&o).contains("rc=1") && !stdout(&o).contains("ping"),
        "{}",
        show(&o)
    );
    assert!(stderr(&o).contains("Connection refused"), "{}", show(&o));
    assert_eq!(echo.peers().len(), 1, "nothing new reached the server");
    // With --isolate and the supervisor: the static program reaches the server through the
    // in-namespace forwarder and dante (peer 127.0.0.2).
    let mut c = clean(Command::new(chainsocks_bin()));
    c.arg("-f")
        .arg(&l.config)
        .arg("--isolate")
        .arg(&busybox)
        .args(["sh", "-c", &nc]);
    let o = run(&mut c, T);
    assert_eq!(stdout(&o), "ping", "{}", show(&o));
    assert_eq!(
        echo.peers().last().map(|p| p.ip().to_string()).as_deref(),
        Some("127.0.0.2"),
        "through dante"
    );
}

#[test]
fn dns_packets_from_the_program_get_fake_answers_inside_and_never_leave() {
    netns();
    // A DNS server in the outer namespace that would see any query that left the sandbox.
    let sink = UdpSink::start_on("127.0.0.1:53".parse().unwrap());
    let Some(dante) = Dante::start(DanteOpts::default()) else {
        return;
    };
    let Some(busybox) = require("busybox") else {
        return;
    };
    let Some(py) = require("python3") else { return };
    let l = Launch::chain(&[format!("socks5://127.0.0.1:{}", dante.port())]);
    // A static resolver: busybox nslookup asks the sandbox's nameserver, the launch's
    // responder, and gets a fake address.
    let mut c = clean(Command::new(chainsocks_bin()));
    c.arg("-f")
        .arg(&l.config)
        .arg("--isolate")
        .arg(&busybox)
        .args(["nslookup", "example.com"]);
    let o = run(&mut c, T);
    assert!(o.status.success(), "{}", show(&o));
    assert!(stdout(&o).contains("198.18."), "{}", show(&o));
    // A dynamically linked program sending its own DNS queries (unconnected and connected).
    let script = r#"
import socket
q = b'\x12\x34\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00\x07example\x03com\x00\x00\x01\x00\x01'
ns = [l.split()[1] for l in open('/etc/resolv.conf') if l.startswith('nameserver')][0]
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.settimeout(2)
s.sendto(q, (ns, 53)); a, src = s.recvfrom(512)
print('sendto', src[0], src[1], socket.inet_ntoa(a[-4:]))
c = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); c.settimeout(2)
c.connect((ns, 53)); c.send(q); a = c.recv(512)
print('connect', socket.inet_ntoa(a[-4:]))
"#;
    let mut c = clean(Command::new(chainsocks_bin()));
    c.arg("-f")
        .arg(&l.config)
        .arg("--isolate")
        .arg(&py)
        .args(["-c", script]);
    let o = run(&mut c, T);
    let out = stdout(&o);
    assert!(
        out.contains("sendto 127.0.0.1 53 198.18.") && out.contains("connect 198.18."),
        "{}",
        show(&o)
    );
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(sink.count(), 0, "no DNS packet reached the outer namespace");
}

#[test]
fn allow_direct_opens_exactly_that_destination() {
    netns();
    let allowed = Echo::start();
    let other = Echo::start();
    let Some(dante) = Dante::start(DanteOpts::default()) else {
        return;
    };
    let l = Launch::new(&format!(
        "proxy = [\"socks5://127.0.0.1:{}\"]\n[[rule]]\ndest = \"127.0.0.0/8\"\naction = \"direct\"\n",
        dante.port()
    ));
    let dir = TempDir::new("allow");
    let hosts = dir.write("hosts", b"127.0.0.1 localhost\n127.0.0.1 db.test\n");
    let cs = csclient();
    let script = format!(
        "{cs} echo 127.0.0.1 {a}; {cs} echo db.test {a}; {cs} echo 127.0.0.1 {b}; true",
        cs = cs.display(),
        a = allowed.port(),
        b = other.port()
    );
    let mut c = clean(Command::new(chainsocks_bin()));
    c.arg("-f")
        .arg(&l.config)
        .args(["--isolate", "--allow-direct"])
        .arg(format!("127.0.0.1:{}", allowed.port()));
    c.args([
        "--allow-direct",
        &format!("db.test:{}", allowed.port()),
        "sh",
        "-c",
        &script,
    ]);
    c.env("CHAINSOCKS_LOG_FILE", l.log_path());
    // The launcher resolves db.test (outside); the sandbox answers it with the forwarder.
    private_files(&mut c, &[(hosts, "/etc/hosts")]);
    let o = run(&mut c, T);
    let out = stdout(&o);
    assert_eq!(out.matches("ok 1").count(), 2, "{}\n{}", show(&o), l.log());
    assert!(
        out.contains("errno=EACCES"),
        "a direct rule becomes block under --isolate: {}",
        show(&o)
    );
    assert_eq!(allowed.peers().len(), 2);
    assert!(
        allowed
            .peers()
            .iter()
            .all(|p| p.ip().to_string() == "127.0.0.1"),
        "direct, not via dante"
    );
    assert!(other.peers().is_empty());
    assert!(
        l.log().contains("blocked (policy proxy-only"),
        "{}",
        l.log()
    );
}

#[test]
fn deny_direct_without_isolate() {
    netns();
    let echo = Echo::start();
    let Some(dante) = Dante::start(DanteOpts::default()) else {
        return;
    };
    let l = Launch::new(&format!(
        "proxy = [\"socks5://127.0.0.1:{}\"]\nlocalnet = [\"127.0.0.0/8:{}\"]\n",
        dante.port(),
        echo.port()
    ));
    let mut c = clean(Command::new(chainsocks_bin()));
    c.arg("-f")
        .arg(&l.config)
        .arg("--deny-direct")
        .arg(csclient())
        .args(["echo", "127.0.0.1", &echo.port().to_string()]);
    let o = run(&mut c, T);
    assert!(stdout(&o).contains("errno=EACCES"), "{}", show(&o));
    assert!(echo.peers().is_empty());
}

#[test]
fn signals_and_exit_codes_pass_through_the_sandbox() {
    netns();
    let Some(dante) = Dante::start(DanteOpts::default()) else {
        return;
    };
    let l = Launch::chain(&[format!("socks5://127.0.0.1:{}", dante.port())]);
    let mut c = clean(Command::new(chainsocks_bin()));
    c.arg("-f")
        .arg(&l.config)
        .args(["--isolate", "sh", "-c", "exit 7"]);
    assert_eq!(run(&mut c, T).status.code(), Some(7));
    let dir = TempDir::new("sig");
    let mark = dir.join("got-term");
    let mut c = clean(Command::new(chainsocks_bin()));
    c.arg("-f")
        .arg(&l.config)
        .args(["--isolate", "sh", "-c"])
        .arg(format!(
            "trap 'echo term > {}; exit 3' TERM; sleep 30 & wait",
            mark.display()
        ));
    c.stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null());
    let mut child = c.spawn().unwrap();
    std::thread::sleep(Duration::from_millis(700));
    // SAFETY: signalling the launcher we started.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let start = Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "the launcher did not exit after SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    assert_eq!(status.code(), Some(3));
    assert_eq!(
        std::fs::read_to_string(&mark).unwrap_or_default().trim(),
        "term"
    );
}

/// A command that runs as `nobody` (setpriv) with the test's binaries readable.
fn as_nobody(args: &[&str]) -> Option<Command> {
    let setpriv = require("setpriv")?;
    let mut c = clean(Command::new(setpriv));
    c.args(["--reuid=65534", "--regid=65534", "--clear-groups", "--"])
        .arg(chainsocks_bin())
        .args(args);
    Some(c)
}

#[test]
fn unprivileged_user_gets_the_sandbox_or_a_clear_error() {
    netns();
    let origin = HttpOrigin::start(vec![("/f".into(), b"nobody".to_vec())]);
    let Some(dante) = Dante::start(DanteOpts::default()) else {
        return;
    };
    let Some(curl) = require("curl") else { return };
    let url = format!("socks5://127.0.0.1:{}", dante.port());
    let Some(mut c) = as_nobody(&[
        "-x",
        &url,
        "--isolate",
        "--",
        curl.to_str().unwrap(),
        "-sS",
        "--fail",
        &origin.url("/f"),
    ]) else {
        return;
    };
    c.current_dir("/tmp");
    let o = run(&mut c, T);
    assert_eq!(
        stdout(&o),
        "nobody",
        "as nobody with user namespaces: {}",
        show(&o)
    );
    assert!(
        origin
            .requests()
            .iter()
            .all(|(p, _)| p.ip().to_string() == "127.0.0.2")
    );

    // Where unprivileged user namespaces are disabled: simulated inside a throwaway user
    // namespace (uids 0-65535 mapped) whose max_user_namespaces is 0; there, `nobody` runs the
    // launcher, which must say why in one line, exit 2, and never run the command.
    let marker = TempDir::new("nouserns");
    let ran = marker.join("ran");
    let out = marker.join("out");
    let inner = format!(
        "echo 0 > /proc/sys/user/max_user_namespaces || exit 99; exec setpriv --reuid=65534 --regid=65534 --clear-groups -- {cs} -x {url} --isolate -- touch {ran}",
        cs = chainsocks_bin().display(),
        ran = ran.display()
    );
    let (code, text) = in_throwaway_userns(&inner, &out);
    if code == 99 {
        assert!(
            !is_ci(),
            "cannot simulate disabled user namespaces here: {text}"
        );
        eprintln!(
            "SKIP (simulation): cannot lower max_user_namespaces in a throwaway namespace: {text}"
        );
        return;
    }
    assert_eq!(code, 2, "{text}");
    assert!(
        text.contains("cannot create a user + network namespace"),
        "{text}"
    );
    assert_eq!(text.lines().count(), 1, "one line: {text}");
    assert!(!ran.exists(), "the command must never run unisolated");
}

/// Runs `sh -c script` as uid 0 of a new user namespace mapping uids/gids 0-65535 to the same
/// ids outside (the test runs as root); returns its exit code and output.
fn in_throwaway_userns(script: &str, out: &std::path::Path) -> (i32, String) {
    use std::ffi::CString;
    let sh = CString::new("/bin/sh").unwrap();
    let args = [
        sh.clone(),
        CString::new("-c").unwrap(),
        CString::new(script).unwrap(),
    ];
    let mut argv: Vec<*const libc::c_char> = args.iter().map(|a| a.as_ptr()).collect();
    argv.push(std::ptr::null());
    let out_c = CString::new(out.as_os_str().as_encoded_bytes()).unwrap();
    let mut p = [0i32; 2];
    // SAFETY: a pipe, a fork; the child only makes raw syscalls before exec.
    unsafe {
        assert_eq!(libc::pipe(p.as_mut_ptr()), 0);
        let pid = libc::fork();
        if pid == 0 {
            let mut b = 0u8;
            if libc::unshare(libc::CLONE_NEWUSER) != 0
                || libc::read(p[0], (&mut b as *mut u8).cast(), 1) != 1
            {
                libc::_exit(98);
            }
            let fd = libc::open(
                out_c.as_ptr(),
                libc::O_WRONLY | libc::O_CREAT | libc::O_TRUNC,
                0o644,
            );
            libc::dup2(fd, 1);
            libc::dup2(fd, 2);
            if libc::setresgid(0, 0, 0) != 0 || libc::setresuid(0, 0, 0) != 0 {
                libc::_exit(97);
            }
            libc::execv(sh.as_ptr(), argv.as_ptr());
            libc::_exit(96);
        }
        // Wait until the child is in its new user namespace.
        let mine = std::fs::read_link("/proc/self/ns/user").unwrap();
        assert!(wait_until(Duration::from_secs(5), || std::fs::read_link(
            format!("/proc/{pid}/ns/user")
        )
        .is_ok_and(|n| n != mine)));
        std::fs::write(format!("/proc/{pid}/uid_map"), "0 0 65536").unwrap();
        std::fs::write(format!("/proc/{pid}/gid_map"), "0 0 65536").unwrap();
        libc::write(p[1], b"g".as_ptr().cast(), 1);
        let mut status = 0;
        libc::waitpid(pid, &mut status, 0);
        (
            libc::WEXITSTATUS(status),
            std::fs::read_to_string(out).unwrap_or_default(),
        )
    }
}

#[test]
fn the_forwarder_carries_a_thousand_concurrent_connections() {
    netns();
    let echo = Echo::start();
    let Some(dante) = Dante::start(DanteOpts::default()) else {
        return;
    };
    let Some(py) = require("python3") else { return };
    let l = Launch::chain(&[format!("socks5://127.0.0.1:{}", dante.port())]);
    let script = format!(
        r#"
import resource, socket
soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, 8192), hard))
socks = [socket.create_connection(('127.0.0.1', {port})) for _ in range(1000)]
for i, s in enumerate(socks):
    s.sendall(b'%06d' % i)
ok = sum(1 for i, s in enumerate(socks) if s.recv(6) == b'%06d' % i)
for s in socks:
    s.close()
print('ok', ok)
"#,
        port = echo.port()
    );
    let mut c = clean(Command::new(chainsocks_bin()));
    c.arg("-f")
        .arg(&l.config)
        .arg("--isolate")
        .arg(&py)
        .args(["-c", &script]);
    let o = run(&mut c, Duration::from_secs(120));
    assert_eq!(stdout(&o).trim(), "ok 1000", "{}", show(&o));
    assert_eq!(echo.peers().len(), 1000);
}
