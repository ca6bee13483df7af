//! Smoke tests of the HARNESS itself, without chainsocks: curl speaks SOCKS4,
//! 4a, 5, 5-hostname and HTTP CONNECT natively, so it proves each real server,
//! the origins, the namespace isolation, the private-/etc/hosts trick and the
//! csclient binary work. Every test that starts anything calls `netns()` first.

use e2e::*;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpStream, ToSocketAddrs};
use std::process::{Command, Output};
use std::time::Duration;

const MIB: usize = 1 << 20;
const T: Duration = Duration::from_secs(30);

/// An origin serving `/big` (1 MiB) and its sha256.
fn big_origin(v6: bool) -> (HttpOrigin, String) {
    let data = random_bytes(MIB, 42);
    let sha = sha256_hex(&data);
    let files = vec![("/big".to_string(), data)];
    let o = if v6 {
        HttpOrigin::start_v6(files)
    } else {
        HttpOrigin::start(files)
    };
    (o, sha)
}

/// Runs curl with no proxy environment, body on stdout.
fn curl(args: &[&str]) -> Option<Output> {
    let bin = require("curl")?;
    let mut c = Command::new(bin);
    for v in [
        "http_proxy",
        "https_proxy",
        "HTTP_PROXY",
        "HTTPS_PROXY",
        "ALL_PROXY",
        "all_proxy",
        "NO_PROXY",
        "no_proxy",
    ] {
        c.env_remove(v);
    }
    c.args(["-q", "-sS", "--max-time", "20", "--connect-timeout", "10"]);
    c.args(args);
    Some(run(&mut c, T))
}

/// curl through `proxy_args` to `url`; asserts success and the body's sha.
#[track_caller]
fn fetch_ok(proxy_args: &[&str], url: &str, sha: &str, log: &dyn Fn() -> String) {
    let mut args = vec!["--fail"];
    args.extend_from_slice(proxy_args);
    args.push(url);
    let Some(out) = curl(&args) else { return };
    assert!(
        out.status.success(),
        "curl {args:?} failed: {}\n----- server log -----\n{}",
        String::from_utf8_lossy(&out.stderr),
        log()
    );
    assert_eq!(out.stdout.len(), MIB, "curl {args:?}: body length");
    assert_eq!(sha256_hex(&out.stdout), sha, "curl {args:?}: body sha256");
}

#[track_caller]
fn fetch_fails(proxy_args: &[&str], url: &str) -> String {
    let mut args = proxy_args.to_vec();
    args.push(url);
    let Some(out) = curl(&args) else {
        return String::new();
    };
    assert!(
        !out.status.success(),
        "curl {args:?} unexpectedly succeeded"
    );
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn peers_ips(o: &HttpOrigin) -> Vec<IpAddr> {
    o.requests().iter().map(|(p, _)| p.ip()).collect()
}

fn ip(s: &str) -> IpAddr {
    s.parse().expect("ip")
}

fn csclient_cmd(args: &[&str]) -> Output {
    run(Command::new(env!("CARGO_BIN_EXE_csclient")).args(args), T)
}

// ---------------------------------------------------------------- harness

#[test]
fn netns_is_per_thread_and_inherited() {
    let outer = netns_id();
    netns();
    let mine = netns_id();
    assert_ne!(outer, mine, "netns() did not change the thread's namespace");
    netns(); // idempotent on the same thread
    assert_eq!(netns_id(), mine);
    // Spawned threads (origins) inherit the thread's namespace.
    let child = std::thread::spawn(netns_id).join().unwrap();
    assert_eq!(child, mine);
    // lo is up, with both families.
    let echo = Echo::start();
    let echo6 = Echo::start_v6();
    TcpStream::connect(echo.addr()).expect("connect v4 in netns");
    TcpStream::connect(echo6.addr()).expect("connect v6 in netns");
    // Another thread's fresh namespace cannot see this one's listener.
    let addr = echo.addr();
    let other = std::thread::spawn(move || {
        netns();
        (netns_id(), TcpStream::connect(addr).is_ok())
    })
    .join()
    .unwrap();
    assert_ne!(other.0, mine);
    assert!(!other.1, "a listener leaked across namespaces");
    // Processes inherit it too.
    let out = run(Command::new("readlink").arg("/proc/self/ns/net"), T);
    assert_eq!(stdout(&out).trim(), format!("net:[{mine}]"));
}

#[test]
#[should_panic(expected = "not installed")]
fn require_panics_for_missing_program_under_ci() {
    let _ = require_with("e2e-no-such-program-xyz", true);
}

#[test]
fn require_skips_missing_program_outside_ci_and_finds_present_ones() {
    assert_eq!(require_with("e2e-no-such-program-xyz", false), None);
    assert!(require_with("sh", true).is_some());
    assert!(find_program("/usr/sbin/sshd").is_some() || !is_ci());
}

#[test]
fn data_helpers_are_deterministic() {
    assert_eq!(random_bytes(1000, 7), random_bytes(1000, 7));
    assert_ne!(random_bytes(1000, 7), random_bytes(1000, 8));
    assert_eq!(random_bytes(13, 1).len(), 13);
    assert_eq!(
        sha256_hex(b"abc"),
        "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
    );
}

#[test]
fn dropping_a_server_kills_its_process_group() {
    netns();
    let Some(d) = Dante::start(DanteOpts::default()) else {
        return;
    };
    let pgid = d.pid() as i32;
    // danted forks children into the same group.
    assert_eq!(unsafe { libc::kill(-pgid, 0) }, 0);
    drop(d);
    let gone = wait_until(
        Duration::from_secs(3),
        || unsafe { libc::kill(-pgid, 0) } != 0,
    );
    assert!(gone, "process group {pgid} still alive after drop");
}

// ---------------------------------------------------------------- dante

#[test]
fn dante_socks4_socks5_and_hostname() {
    netns();
    let (o, sha) = big_origin(false);
    let Some(d) = Dante::start(DanteOpts::default()) else {
        return;
    };
    let p = d.addr().to_string();
    let log = || d.log();
    fetch_ok(&["--socks4", &p], &o.url("/big"), &sha, &log);
    fetch_ok(&["--socks5", &p], &o.url("/big"), &sha, &log);
    fetch_ok(
        &["--socks5-hostname", &p],
        &o.url_with_host("localhost", "/big"),
        &sha,
        &log,
    );
    // danted does not implement SOCKS4a.
    fetch_fails(&["--socks4a", &p], &o.url_with_host("localhost", "/big"));
    assert_eq!(peers_ips(&o), vec![ip("127.0.0.2"); 3], "external address");
    assert!(
        d.wait_log("VER: 4 CMD: 1 address: 127.0.0.1.", T),
        "{}",
        d.log()
    );
    assert!(d.wait_log("ATYP: 1 address: 127.0.0.1.", T), "{}", d.log());
    assert!(d.wait_log("ATYP: 3 address: localhost.", T), "{}", d.log());
}

#[test]
fn dante_username_auth() {
    netns();
    let (o, sha) = big_origin(false);
    let opts = DanteOpts {
        auth: Some((DANTE_USER.into(), DANTE_PASS.into())),
        ..DanteOpts::default()
    };
    let Some(d) = Dante::start(opts) else { return };
    let p = d.addr().to_string();
    let good = format!("{DANTE_USER}:{DANTE_PASS}");
    let bad = format!("{DANTE_USER}:wrong");
    fetch_ok(
        &["--socks5", &p, "--proxy-user", &good],
        &o.url("/big"),
        &sha,
        &|| d.log(),
    );
    let e = fetch_fails(&["--socks5", &p, "--proxy-user", &bad], &o.url("/big"));
    assert!(e.contains("rejected"), "{e}");
    let e = fetch_fails(&["--socks5", &p], &o.url("/big"));
    assert!(e.contains("No authentication method"), "{e}");
    assert_eq!(o.requests().len(), 1);
    assert!(
        d.wait_log("system password authentication failed", T),
        "{}",
        d.log()
    );
}

#[test]
fn dante_block_rule() {
    netns();
    let (o, sha) = big_origin(false);
    let blocked = Echo::start();
    let opts = DanteOpts {
        block: vec![block_port(blocked.port())],
        ..DanteOpts::default()
    };
    let Some(d) = Dante::start(opts) else { return };
    let p = d.addr().to_string();
    fetch_ok(&["--socks5", &p], &o.url("/big"), &sha, &|| d.log());
    fetch_fails(
        &["--socks5", &p],
        &format!("http://127.0.0.1:{}/", blocked.port()),
    );
    assert!(
        blocked.peers().is_empty(),
        "blocked destination was reached"
    );
    assert!(
        d.wait_log("blocked by higher-level socks-rule", T),
        "{}",
        d.log()
    );
}

#[test]
fn dante_ipv6_origin() {
    netns();
    let (o, sha) = big_origin(true);
    let Some(d) = Dante::start(DanteOpts::default()) else {
        return;
    };
    let p = d.addr().to_string();
    fetch_ok(&["--socks5", &p], &o.url("/big"), &sha, &|| d.log());
    fetch_ok(&["--socks5-hostname", &p], &o.url("/big"), &sha, &|| {
        d.log()
    });
    assert_eq!(peers_ips(&o), vec![ip("::1"); 2]);
    assert!(d.wait_log("ATYP: 4 address: ::1.", T), "{}", d.log());
}

// ---------------------------------------------------------------- others

#[test]
fn microsocks_socks5_bind_out_and_auth() {
    netns();
    let (o, sha) = big_origin(false);
    let Some(m) = Microsocks::start(MicrosocksOpts::default()) else {
        return;
    };
    let p = m.addr().to_string();
    fetch_ok(&["--socks5", &p], &o.url("/big"), &sha, &|| m.log());
    fetch_ok(
        &["--socks5-hostname", &p],
        &o.url_with_host("localhost", "/big"),
        &sha,
        &|| m.log(),
    );
    assert_eq!(peers_ips(&o), vec![ip("127.0.0.3"); 2], "-b source address");
    assert!(m.wait_log("connected to", T), "{}", m.log());

    let opts = MicrosocksOpts {
        auth: Some(("msuser".into(), "mspass".into())),
        ..MicrosocksOpts::default()
    };
    let Some(ma) = Microsocks::start(opts) else {
        return;
    };
    let p = ma.addr().to_string();
    fetch_ok(
        &["--socks5", &p, "--proxy-user", "msuser:mspass"],
        &o.url("/big"),
        &sha,
        &|| ma.log(),
    );
    let e = fetch_fails(
        &["--socks5", &p, "--proxy-user", "msuser:nope"],
        &o.url("/big"),
    );
    assert!(e.contains("rejected"), "{e}");
    fetch_fails(&["--socks5", &p], &o.url("/big"));
    assert_eq!(o.requests().len(), 3);
}

#[test]
fn ssh_dynamic_forward_all_socks_versions() {
    netns();
    let (o, sha) = big_origin(false);
    let Some(s) = SshSocks::start(SshOpts::default()) else {
        return;
    };
    let p = s.addr().to_string();
    let log = || s.log();
    fetch_ok(&["--socks4", &p], &o.url("/big"), &sha, &log);
    fetch_ok(
        &["--socks4a", &p],
        &o.url_with_host("localhost", "/big"),
        &sha,
        &log,
    );
    fetch_ok(&["--socks5", &p], &o.url("/big"), &sha, &log);
    fetch_ok(
        &["--socks5-hostname", &p],
        &o.url_with_host("localhost", "/big"),
        &sha,
        &log,
    );
    assert_eq!(o.requests().len(), 4);
    assert!(s.wait_log("direct-tcpip: listening port", T), "{}", s.log());
    assert_ne!(s.sshd_port(), s.port());
}

#[test]
fn tinyproxy_connect_bind_and_basic_auth() {
    netns();
    let (o, sha) = big_origin(false);
    let opts = TinyproxyOpts {
        auth: Some(("tpuser".into(), "tppass".into())),
        ..TinyproxyOpts::default()
    };
    let Some(t) = Tinyproxy::start(opts) else {
        return;
    };
    let good = format!("http://tpuser:tppass@{}", t.addr());
    let bad = format!("http://tpuser:bad@{}", t.addr());
    fetch_ok(&["-p", "--proxy", &good], &o.url("/big"), &sha, &|| t.log());
    // tinyproxy answers 401 to wrong credentials, 407 to none.
    let e = fetch_fails(&["-p", "--proxy", &bad], &o.url("/big"));
    assert!(e.contains("response 401"), "{e}");
    let e = fetch_fails(
        &["-p", "--proxy", &format!("http://{}", t.addr())],
        &o.url("/big"),
    );
    assert!(e.contains("response 407"), "{e}");
    assert_eq!(peers_ips(&o), vec![ip("127.0.0.4")], "Bind source address");
    assert!(t.wait_log("CONNECT 127.0.0.1:", T), "{}", t.log());

    // No Bind: IPv6 destinations work too.
    let (o6, sha6) = big_origin(true);
    let Some(t6) = Tinyproxy::start(TinyproxyOpts {
        bind: None,
        ..TinyproxyOpts::default()
    }) else {
        return;
    };
    let px = format!("http://{}", t6.addr());
    fetch_ok(&["-p", "--proxy", &px], &o6.url("/big"), &sha6, &|| {
        t6.log()
    });
    assert_eq!(peers_ips(&o6), vec![ip("::1")]);
}

// ---------------------------------------------------------------- remote DNS

fn origin_test_hosts() -> Vec<(String, IpAddr)> {
    vec![("origin.test".to_string(), IpAddr::V4(Ipv4Addr::LOCALHOST))]
}

/// The test process itself cannot resolve origin.test.
fn assert_unresolvable_here() {
    assert!(
        ("origin.test", 80).to_socket_addrs().is_err(),
        "origin.test resolves in the test process"
    );
    let out = csclient_cmd(&["resolve", "origin.test"]);
    assert!(!out.status.success());
    assert!(stdout(&out).starts_with("gai="), "{}", stdout(&out));
}

#[test]
fn remote_dns_dante() {
    netns();
    let (o, sha) = big_origin(false);
    let Some(d) = Dante::start(DanteOpts {
        hosts: origin_test_hosts(),
        ..DanteOpts::default()
    }) else {
        return;
    };
    assert_unresolvable_here();
    let p = d.addr().to_string();
    fetch_ok(
        &["--socks5-hostname", &p],
        &o.url_with_host("origin.test", "/big"),
        &sha,
        &|| d.log(),
    );
    assert!(
        d.wait_log("ATYP: 3 address: origin.test.", T),
        "{}",
        d.log()
    );
}

#[test]
fn remote_dns_microsocks() {
    netns();
    let (o, sha) = big_origin(false);
    let Some(m) = Microsocks::start(MicrosocksOpts {
        hosts: origin_test_hosts(),
        ..MicrosocksOpts::default()
    }) else {
        return;
    };
    assert_unresolvable_here();
    let p = m.addr().to_string();
    fetch_ok(
        &["--socks5-hostname", &p],
        &o.url_with_host("origin.test", "/big"),
        &sha,
        &|| m.log(),
    );
}

#[test]
fn remote_dns_ssh() {
    netns();
    let (o, sha) = big_origin(false);
    let Some(s) = SshSocks::start(SshOpts {
        hosts: origin_test_hosts(),
        ..SshOpts::default()
    }) else {
        return;
    };
    assert_unresolvable_here();
    let p = s.addr().to_string();
    fetch_ok(
        &["--socks5-hostname", &p],
        &o.url_with_host("origin.test", "/big"),
        &sha,
        &|| s.log(),
    );
    fetch_ok(
        &["--socks4a", &p],
        &o.url_with_host("origin.test", "/big"),
        &sha,
        &|| s.log(),
    );
}

#[test]
fn remote_dns_tinyproxy() {
    netns();
    let (o, sha) = big_origin(false);
    let Some(t) = Tinyproxy::start(TinyproxyOpts {
        hosts: origin_test_hosts(),
        ..TinyproxyOpts::default()
    }) else {
        return;
    };
    assert_unresolvable_here();
    let px = format!("http://{}", t.addr());
    fetch_ok(
        &["-p", "--proxy", &px],
        &o.url_with_host("origin.test", "/big"),
        &sha,
        &|| t.log(),
    );
    assert!(t.wait_log("CONNECT origin.test:", T), "{}", t.log());
}

// ---------------------------------------------------------------- origins + csclient

#[test]
fn csclient_direct_to_origins() {
    netns();
    let (o, sha) = big_origin(false);
    let echo = Echo::start();
    let echo6 = Echo::start_v6();
    let ep = echo.port().to_string();
    let ep6 = echo6.port().to_string();

    let out = csclient_cmd(&["connect", "127.0.0.1", &ep]);
    assert_eq!(stdout(&out), "ok\n");
    let out = csclient_cmd(&["connect", "127.0.0.1", &ep, "--nonblock"]);
    assert!(out.status.success(), "{}", stdout(&out));
    let s = stdout(&out);
    assert!(
        s.contains("connect=inprogress") || s.contains("connect=immediate"),
        "{s}"
    );
    assert!(s.contains("flags=nonblock-kept\nok\n"), "{s}");
    let out = csclient_cmd(&["connect", "127.0.0.1", &ep, "--v6sock"]);
    assert_eq!(stdout(&out), "ok\n");
    let out = csclient_cmd(&["connect", "::1", &ep6, "--family", "6"]);
    assert_eq!(stdout(&out), "ok\n");
    let out = csclient_cmd(&["connect", "localhost", &ep, "--family", "4", "--nonblock"]);
    assert!(stdout(&out).ends_with("ok\n"), "{}", stdout(&out));

    // A closed port: refused, named errno, exit 1.
    let closed = free_port().to_string();
    let out = csclient_cmd(&["connect", "127.0.0.1", &closed]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(stdout(&out), "errno=ECONNREFUSED (111)\n");
    let out = csclient_cmd(&["connect", "127.0.0.1", &closed, "--nonblock"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stdout(&out).ends_with("errno=ECONNREFUSED (111)\n"),
        "{}",
        stdout(&out)
    );

    let out = csclient_cmd(&[
        "echo",
        "127.0.0.1",
        &ep,
        "--count",
        "20",
        "--bytes",
        "1000",
        "--time",
    ]);
    assert!(
        stdout(&out).starts_with("ok 20 median_us="),
        "{}",
        stdout(&out)
    );
    let out = csclient_cmd(&["echo", "::1", &ep6, "--count", "5", "--nonblock"]);
    assert_eq!(stdout(&out), "ok 5\n");
    let out = csclient_cmd(&[
        "echo",
        "127.0.0.1",
        &ep,
        "--count",
        "3",
        "--v6sock",
        "--nonblock",
        "--bytes",
        "200000",
    ]);
    assert_eq!(stdout(&out), "ok 3\n");
    assert_eq!(echo.peers().len(), 20 + 3 + 4);
    assert!(echo.peers().iter().all(|p| p.ip().is_loopback()));

    let out = csclient_cmd(&["http", "127.0.0.1", &o.port().to_string(), "/big"]);
    assert_eq!(stdout(&out), format!("status=200 len={MIB} sha256={sha}\n"));
    let out = csclient_cmd(&["http", "127.0.0.1", &o.port().to_string(), "/nope"]);
    assert!(stdout(&out).starts_with("status=404 "), "{}", stdout(&out));
    assert_eq!(
        o.requests(),
        vec![
            (
                SocketAddr::new(o.requests()[0].0.ip(), o.requests()[0].0.port()),
                "/big".to_string()
            ),
            (o.requests()[1].0, "/nope".to_string())
        ]
    );
    assert!(o.requests().iter().all(|(p, _)| p.ip() == ip("127.0.0.1")));

    let out = csclient_cmd(&["resolve", "localhost", "--family", "4"]);
    assert_eq!(stdout(&out), "127.0.0.1\n");
    let out = csclient_cmd(&["resolve", "::1", "--family", "6"]);
    assert_eq!(stdout(&out), "::1\n");
}

#[test]
fn csclient_is_dynamically_linked() {
    let bin = std::fs::read(env!("CARGO_BIN_EXE_csclient")).unwrap();
    // A dynamic executable names its ELF interpreter (the PT_INTERP string).
    assert!(
        bin.windows(b"/ld-linux".len()).any(|w| w == b"/ld-linux"),
        "csclient has no ELF interpreter: not dynamically linked"
    );
}

#[test]
fn echo_handles_many_concurrent_connections() {
    netns();
    let echo = Echo::start();
    let addr = echo.addr();
    let mut streams = Vec::new();
    for _ in 0..64 {
        streams.push(TcpStream::connect(addr).unwrap());
    }
    let handles: Vec<_> = streams
        .into_iter()
        .enumerate()
        .map(|(i, mut s)| {
            std::thread::spawn(move || {
                use std::io::{Read, Write};
                let msg = random_bytes(10_000, i as u64);
                s.write_all(&msg).unwrap();
                let mut back = vec![0u8; msg.len()];
                s.read_exact(&mut back).unwrap();
                back == msg
            })
        })
        .collect();
    for h in handles {
        assert!(h.join().unwrap());
    }
    assert_eq!(echo.peers().len(), 64);
}

#[test]
fn udp_sink_records_datagrams() {
    netns();
    let sink = UdpSink::start();
    let s = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    for i in 0..5u8 {
        s.send_to(&[i; 3], sink.addr()).unwrap();
    }
    assert!(wait_until(Duration::from_secs(5), || sink.count() == 5));
    let d = sink.datagrams();
    assert_eq!(d[4].1, vec![4u8; 3]);
    assert_eq!(d[0].0, s.local_addr().unwrap());
}

#[test]
#[should_panic(expected = "----- log -----")]
fn a_server_that_fails_to_start_panics_with_its_log() {
    netns();
    if find_program("danted").is_none() {
        panic!("----- log ----- (danted missing: nothing to check)");
    }
    // An invalid rule: danted exits at once; the panic shows its complaint.
    let _ = Dante::start(DanteOpts {
        block: vec!["this is not an address".into()],
        ..DanteOpts::default()
    });
}

// ---------------------------------------------------------------- UDP

/// Runs the csudp test client (no shim).
fn csudp(args: &[&str]) -> Output {
    run(Command::new(e2e::csudp()).args(args), T)
}

#[test]
fn result_field_and_csudp_path() {
    let line = "ok answered=5/5 bad=0 source=BAD:[::1]:53 local=1.2.3.4:5";
    assert_eq!(result_field(line, "answered"), Some("5/5"));
    assert_eq!(result_field(line, "source"), Some("BAD:[::1]:53"));
    assert_eq!(result_field(line, "bad"), Some("0"));
    assert_eq!(result_field(line, "ba"), None);
    assert_eq!(result_field(line, "median_us"), None);
    let path = e2e::csudp();
    assert_eq!(path, std::path::Path::new(env!("CARGO_BIN_EXE_csudp")));
}

/// The value of `key=` in csudp's result line (panics with the output if absent).
#[track_caller]
fn field(out: &Output, key: &str) -> String {
    result_field(&stdout(out), key)
        .map(str::to_string)
        .unwrap_or_else(|| panic!("no {key}= in csudp output: {}", show(out)))
}

/// csudp ran to the end with every datagram answered, exit 0.
#[track_caller]
fn assert_all_answered(out: &Output, n: usize, log: &dyn Fn() -> String) {
    assert!(
        out.status.success() && stdout(out).starts_with("ok "),
        "csudp: {}\n----- server log -----\n{}",
        show(out),
        log()
    );
    assert_eq!(field(out, "answered"), format!("{n}/{n}"), "{}", show(out));
    assert_eq!(field(out, "bad"), "0", "{}", show(out));
}

#[track_caller]
fn assert_senders(echo: &UdpEcho, comm: &str, n: usize) {
    let senders = echo.senders();
    assert_eq!(senders.len(), n, "datagrams at the origin: {senders:?}");
    assert!(
        senders.iter().all(|s| s == comm),
        "expected every datagram from {comm}, got {senders:?}"
    );
}

#[test]
fn udp_echo_names_the_sending_process() {
    netns();
    let echo = UdpEcho::start();
    // From this process: the pid is ours.
    let s = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    s.set_read_timeout(Some(T)).unwrap();
    s.send_to(b"ping", echo.addr()).unwrap();
    let mut buf = [0u8; 16];
    let (n, from) = s.recv_from(&mut buf).unwrap();
    assert_eq!((&buf[..n], from), (&b"ping"[..], echo.addr()), "echoed");
    let d = echo.datagrams();
    assert_eq!(d.len(), 1);
    assert_eq!(d[0].peer, s.local_addr().unwrap());
    assert_eq!(d[0].payload, b"ping");
    assert!(d[0].pids.contains(&std::process::id()), "{d:?}");
    // A dual-stack socket sending to an IPv4 origin, and a python3 sender (which waits for
    // its echo: one that exits at once may be gone before the lookup, then the sender is `?`).
    let s6 = std::net::UdpSocket::bind("[::]:0").unwrap();
    let mapped = format!("[::ffff:127.0.0.1]:{}", echo.port());
    s6.send_to(b"v6", mapped.as_str()).unwrap();
    assert!(echo.wait_count(2, T));
    assert!(echo.datagrams()[1].pids.contains(&std::process::id()));
    if let Some(py) = require("python3") {
        let code = format!(
            "import socket; s=socket.socket(socket.AF_INET, socket.SOCK_DGRAM); \
             s.settimeout(20); s.sendto(b'py', ('127.0.0.1', {})); s.recv(16)",
            echo.port()
        );
        let out = run(Command::new(py).args(["-c", &code]), T);
        assert!(out.status.success(), "{}", show(&out));
        assert_eq!(echo.count(), 3);
        assert_eq!(echo.senders()[2], "python3");
    }
}

#[test]
fn csudp_plain_modes_direct() {
    netns();
    let echo = UdpEcho::start();
    let echo6 = UdpEcho::start_v6();
    let port = echo.port().to_string();
    let port6 = echo6.port().to_string();
    let mut sent = 0;
    for (mode, extra) in [
        ("sendto", &[][..]),
        ("connected", &[][..]),
        ("sendmsg", &[][..]),
        ("mmsg", &["--batch", "7"][..]),
        ("readwrite", &[][..]),
        ("sendto", &["--nonblock", "--size", "8000"][..]),
        ("sendmsg", &["--size", "1"][..]),
        ("sendto", &["--window", "8"][..]),
        ("connected", &["--window", "20", "--nonblock"][..]),
    ] {
        let mut args = vec![mode, "127.0.0.1", &port, "--count", "20"];
        args.extend_from_slice(extra);
        let out = csudp(&args);
        assert_all_answered(&out, 20, &String::new);
        let connects = matches!(mode, "connected" | "readwrite");
        assert_eq!(field(&out, "source"), if connects { "n/a" } else { "ok" });
        assert_eq!(field(&out, "peer"), if connects { "ok" } else { "n/a" });
        sent += 20;
        let local: SocketAddr = field(&out, "local").parse().unwrap();
        assert_eq!(echo.count(), sent, "{mode}: {}", show(&out));
        let last = echo.datagrams().pop().unwrap();
        assert_eq!(
            last.peer.port(),
            local.port(),
            "{mode}: local= names the socket"
        );
        assert_eq!(last.sender, "csudp", "{mode}");
    }
    assert_senders(&echo, "csudp", sent);
    // Many in flight: 1,000 datagrams, 32 at a time.
    let out = csudp(&[
        "sendmsg",
        "127.0.0.1",
        &port,
        "--count",
        "1000",
        "--window",
        "32",
    ]);
    assert_all_answered(&out, 1000, &String::new);
    assert_eq!(echo.count(), sent + 1000);
    // IPv6, by name through getaddrinfo.
    for mode in ["sendto", "mmsg", "connected"] {
        let out = csudp(&[mode, "::1", &port6, "--count", "10", "--family", "6"]);
        assert_all_answered(&out, 10, &String::new);
    }
    assert_senders(&echo6, "csudp", 30);
    assert!(echo6.peers().iter().all(|p| p.ip() == ip("::1")));
}

#[test]
fn csudp_reports_what_goes_wrong() {
    netns();
    // Nobody listening: nothing answered, exit 3.
    let dead = UdpSink::start();
    let dead_port = dead.port().to_string();
    drop(dead);
    let out = csudp(&[
        "sendto",
        "127.0.0.1",
        &dead_port,
        "--count",
        "2",
        "--timeout-ms",
        "200",
    ]);
    assert_eq!(out.status.code(), Some(3), "{}", show(&out));
    assert_eq!(field(&out, "answered"), "0/2");
    let many = [
        "sendto",
        "127.0.0.1",
        &dead_port,
        "--count",
        "50",
        "--window",
        "10",
        "--timeout-ms",
        "200",
    ];
    assert_eq!(field(&csudp(&many), "answered"), "0/50");
    // Connected to a closed port: the ICMP error surfaces as ECONNREFUSED on the recv.
    let out = csudp(&["connected", "127.0.0.1", &dead_port, "--timeout-ms", "2000"]);
    assert_eq!(out.status.code(), Some(1), "{}", show(&out));
    assert!(
        stdout(&out).starts_with("errno=ECONNREFUSED (111) call=recv"),
        "{}",
        show(&out)
    );
    // Answers from another socket than the one written to: source=BAD.
    let a = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let b = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let (a_addr, b_addr) = (a.local_addr().unwrap(), b.local_addr().unwrap());
    a.set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let stop2 = stop.clone();
    let reflector = std::thread::spawn(move || {
        let mut buf = [0u8; 2048];
        while !stop2.load(std::sync::atomic::Ordering::SeqCst) {
            if let Ok((n, from)) = a.recv_from(&mut buf) {
                let _ = b.send_to(&buf[..n], from);
            }
        }
    });
    let out = csudp(&[
        "sendto",
        "127.0.0.1",
        &a_addr.port().to_string(),
        "--count",
        "3",
    ]);
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    reflector.join().unwrap();
    assert_eq!(out.status.code(), Some(3), "{}", show(&out));
    assert_eq!(field(&out, "answered"), "3/3");
    assert_eq!(field(&out, "source"), format!("BAD:{b_addr}"));
    // A name nobody resolves.
    let out = csudp(&["sendto", "nosuch.invalid", "9"]);
    assert_eq!(out.status.code(), Some(1), "{}", show(&out));
    assert!(stdout(&out).starts_with("gai="), "{}", show(&out));
    // Usage errors.
    assert_eq!(
        csudp(&["mmsg", "127.0.0.1", "9", "--size", "4"])
            .status
            .code(),
        Some(2)
    );
    assert_eq!(
        csudp(&["nosuchmode", "127.0.0.1", "9"]).status.code(),
        Some(2)
    );
}

#[test]
fn csudp_socks5_through_dante() {
    netns();
    let echo = UdpEcho::start();
    let Some(d) = Dante::start(DanteOpts {
        hosts: origin_test_hosts(),
        ..DanteOpts::default()
    }) else {
        return;
    };
    let proxy = d.addr().to_string();
    let dest = echo.addr().to_string();
    let out = csudp(&["socks5", &proxy, &dest, "--count", "200"]);
    assert_all_answered(&out, 200, &|| d.log());
    assert_eq!(field(&out, "source"), "ok");
    assert_eq!(field(&out, "header"), "10");
    assert_senders(&echo, "danted", 200);
    assert!(
        echo.peers().iter().all(|p| p.ip() == ip("127.0.0.2")),
        "dante's external"
    );
    assert!(d.wait_log("udp/udpreply", T), "{}", d.log());
    // A window of 16 in flight.
    let out = csudp(&["socks5", &proxy, &dest, "--count", "500", "--window", "16"]);
    assert_all_answered(&out, 500, &|| d.log());
    assert_senders(&echo, "danted", 700);
    // The client address as 0.0.0.0:0 works too; so does an 8,000-byte datagram.
    let out = csudp(&["socks5", &proxy, &dest, "--zero-client", "--size", "8000"]);
    assert_all_answered(&out, 1, &|| d.log());
    assert_eq!(echo.datagrams().pop().unwrap().payload.len(), 8000);
    assert_eq!(echo.count(), 701);
    // A name only dante resolves (ATYP 3).
    assert_unresolvable_here();
    let named = format!("origin.test:{}", echo.port());
    let out = csudp(&["socks5", &proxy, &named, "--count", "5"]);
    assert_all_answered(&out, 5, &|| d.log());
    assert_eq!(field(&out, "header"), "18");
    assert_eq!(field(&out, "source"), format!("resolved:{dest}"));
    assert_senders(&echo, "danted", 706);
}

#[test]
fn csudp_socks5_through_dante_to_ipv6() {
    netns();
    let echo6 = UdpEcho::start_v6();
    let Some(d) = Dante::start(DanteOpts::default()) else {
        return;
    };
    let dest = echo6.addr().to_string();
    let out = csudp(&["socks5", &d.addr().to_string(), &dest, "--count", "20"]);
    assert_all_answered(&out, 20, &|| d.log());
    assert_eq!(field(&out, "source"), "ok");
    assert_eq!(field(&out, "header"), "22");
    assert_senders(&echo6, "danted", 20);
    assert!(echo6.peers().iter().all(|p| p.ip() == ip("::1")));
}

#[test]
fn csudp_socks5_through_shadowsocks() {
    netns();
    let echo = UdpEcho::start();
    let echo6 = UdpEcho::start_v6();
    let Some(ss) = Shadowsocks::start(ShadowsocksOpts {
        hosts: origin_test_hosts(),
        ..ShadowsocksOpts::default()
    }) else {
        return;
    };
    let proxy = ss.addr().to_string();
    let dest = echo.addr().to_string();
    let out = csudp(&["socks5", &proxy, &dest, "--count", "200"]);
    assert_all_answered(&out, 200, &|| ss.log());
    assert_eq!(field(&out, "source"), "ok");
    // Its relay is UDP on the SOCKS5 port.
    assert_eq!(field(&out, "relay"), proxy);
    assert_senders(&echo, "ss-server", 200);
    assert!(
        echo.datagrams()
            .iter()
            .all(|d| d.pids == vec![ss.server_pid()])
    );
    // Large datagrams (--mtu 65535), IPv6, and a name only ss-server resolves.
    let out = csudp(&["socks5", &proxy, &dest, "--size", "8000", "--count", "3"]);
    assert_all_answered(&out, 3, &|| ss.log());
    let out = csudp(&["socks5", &proxy, &echo6.addr().to_string(), "--count", "5"]);
    assert_all_answered(&out, 5, &|| ss.log());
    assert_senders(&echo6, "ss-server", 5);
    assert_unresolvable_here();
    let named = format!("origin.test:{}", echo.port());
    let out = csudp(&["socks5", &proxy, &named, "--count", "5"]);
    assert_all_answered(&out, 5, &|| ss.log());
    assert_eq!(field(&out, "source"), format!("resolved:{dest}"));
    assert_senders(&echo, "ss-server", 208);
    assert!(ss.wait_log("cache miss: origin.test:", T), "{}", ss.log());
    assert!(ss.wait_log("udp assc request accepted", T), "{}", ss.log());
}

#[test]
fn microsocks_refuses_udp_associate_with_reply_7() {
    netns();
    let echo = UdpEcho::start();
    let Some(m) = Microsocks::start(MicrosocksOpts::default()) else {
        return;
    };
    let out = csudp(&["socks5", &m.addr().to_string(), &echo.addr().to_string()]);
    assert_eq!(out.status.code(), Some(1), "{}", show(&out));
    assert_eq!(stdout(&out).trim(), "error=reply 0x07", "{}", show(&out));
    assert_eq!(echo.count(), 0);
}

#[test]
fn ssh_socks_closes_on_udp_associate() {
    netns();
    let echo = UdpEcho::start();
    let Some(s) = SshSocks::start(SshOpts::default()) else {
        return;
    };
    let out = csudp(&["socks5", &s.addr().to_string(), &echo.addr().to_string()]);
    assert_eq!(out.status.code(), Some(1), "{}", show(&out));
    assert_eq!(
        stdout(&out).trim(),
        "error=closed",
        "{}\n{}",
        show(&out),
        s.log()
    );
    assert_eq!(echo.count(), 0);
}
