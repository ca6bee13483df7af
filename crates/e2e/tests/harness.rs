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
