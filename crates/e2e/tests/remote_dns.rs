//! End-to-end tests of remote DNS (issue 3): programs under chainsocks resolve names they
//! cannot resolve themselves, get fake addresses, and the proxy receives the NAME.
//!
//! Every test runs in its own network namespace with a [`DnsTrap`] on 127.0.0.1:53: the shimmed
//! programs get a private resolv.conf pointing there, so any lookup that escapes to the real
//! resolver shows up as a packet (and fails). The test names (`origin.test`, `origin6.test`)
//! are only in the PROXIES' private /etc/hosts: a fetch by name that succeeds was resolved by
//! the proxy. After every shimmed run the trap must have seen nothing; the control test shows
//! the trap does catch the client's resolver when remote DNS is off.

use std::collections::{HashMap, HashSet};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::PathBuf;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use e2e::*;

const MIB: usize = 1 << 20;
const T: Duration = Duration::from_secs(30);

fn big_origin() -> (HttpOrigin, String) {
    let data = random_bytes(MIB, 33);
    let sha = sha256_hex(&data);
    (HttpOrigin::start(vec![("/big".into(), data)]), sha)
}

fn big_origin_v6() -> (HttpOrigin, String) {
    let data = random_bytes(MIB, 66);
    let sha = sha256_hex(&data);
    (HttpOrigin::start_v6(vec![("/big".into(), data)]), sha)
}

/// The names only the proxies know.
fn proxy_hosts() -> Vec<(String, IpAddr)> {
    vec![
        ("origin.test".into(), IpAddr::V4(Ipv4Addr::LOCALHOST)),
        ("origin6.test".into(), IpAddr::V6(Ipv6Addr::LOCALHOST)),
    ]
}

/// In 198.18.0.0/15 (the default fake IPv4 range).
fn fake4(s: &str) -> bool {
    s.trim()
        .parse::<Ipv4Addr>()
        .is_ok_and(|ip| ip.octets()[0] == 198 && ip.octets()[1] & 0xfe == 18)
}

/// In fd63:6873:6f63:6b73::/64 (the default fake IPv6 range).
fn fake6(s: &str) -> bool {
    s.trim()
        .parse::<Ipv6Addr>()
        .is_ok_and(|ip| ip.segments()[..4] == [0xfd63, 0x6873, 0x6f63, 0x6b73])
}

/// Runs `program args…` under the launch, trapped, and checks that nothing leaked.
fn shim(l: &Launch, trap: &DnsTrap, program: impl AsRef<std::ffi::OsStr>, args: &[&str]) -> Output {
    let mut c = l.cmd(program);
    c.args(args);
    trap.apply(&mut c);
    let o = run(&mut c, T);
    trap.assert_no_leak(&format!("{:?}", c));
    o
}

/// curl under the shim; the sha256 of the body.
fn curl_sha(l: &Launch, trap: &DnsTrap, extra: &[&str], url: &str) -> Option<String> {
    let curl = require("curl")?;
    let mut args = vec!["-sS", "--fail", "--max-time", "20"];
    args.extend_from_slice(extra);
    args.push(url);
    let o = shim(l, trap, curl, &args);
    assert!(
        o.status.success(),
        "curl failed: {}\nshim log: {}",
        show(&o),
        l.log()
    );
    Some(sha256_hex(&o.stdout))
}

fn csstress() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_csstress"))
}

/// `name ip` lines → map (panics on a duplicate with another address).
fn name_ips(out: &str) -> HashMap<String, String> {
    let mut m = HashMap::new();
    for line in out.lines() {
        let Some((name, ip)) = line.split_once(' ') else {
            continue;
        };
        if let Some(old) = m.insert(name.to_string(), ip.to_string()) {
            assert_eq!(old, ip, "{name} resolved to two addresses");
        }
    }
    m
}

/// `key=value` lines → map.
fn kv(out: &str) -> HashMap<String, String> {
    out.lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

// ------------------------------------------------------------ fetch by name, four servers

#[test]
fn curl_by_name_through_dante_sends_socks5_atyp3() {
    netns();
    let trap = DnsTrap::start();
    let (origin, sha) = big_origin();
    let Some(dante) = Dante::start(DanteOpts {
        hosts: proxy_hosts(),
        ..Default::default()
    }) else {
        return;
    };
    let l = Launch::chain(&[format!("socks5://127.0.0.1:{}", dante.port())]);
    let Some(got) = curl_sha(&l, &trap, &[], &origin.url_with_host("origin.test", "/big")) else {
        return;
    };
    assert_eq!(got, sha);
    let asked = format!("ATYP: 3 address: origin.test.{}", origin.port());
    assert!(dante.wait_log(&asked, T), "{}", dante.log());
    assert!(
        l.log()
            .contains(&format!("-> origin.test:{} ok", origin.port())),
        "{}",
        l.log()
    );
    let reqs = origin.requests();
    assert_eq!(reqs.len(), 1, "{reqs:?}");
    assert_eq!(reqs[0].0.ip(), IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2)));
}

#[test]
fn curl_by_name_through_ssh_dynamic_forward_socks5_and_socks4a() {
    netns();
    let trap = DnsTrap::start();
    let (origin, sha) = big_origin();
    let Some(ssh) = SshSocks::start(SshOpts {
        hosts: proxy_hosts(),
        ..SshOpts::default()
    }) else {
        return;
    };
    for scheme in ["socks5", "socks4a"] {
        let l = Launch::chain(&[format!("{scheme}://127.0.0.1:{}", ssh.port())]);
        let url = origin.url_with_host("origin.test", "/big");
        let Some(got) = curl_sha(&l, &trap, &[], &url) else {
            return;
        };
        assert_eq!(got, sha, "{scheme}");
        assert!(
            l.log()
                .contains(&format!("-> origin.test:{} ok", origin.port())),
            "{scheme}: {}",
            l.log()
        );
    }
    assert_eq!(origin.requests().len(), 2);
    // ssh forwarded to the name (sshd resolved it from its private /etc/hosts).
    let fwd = format!("for origin.test port {}", origin.port());
    assert!(
        wait_until(T, || ssh.log().matches(&fwd).count() >= 2),
        "{}",
        ssh.log()
    );
}

#[test]
fn curl_by_name_through_tinyproxy_http_connect() {
    netns();
    let trap = DnsTrap::start();
    let (origin, sha) = big_origin();
    let Some(tp) = Tinyproxy::start(TinyproxyOpts {
        hosts: proxy_hosts(),
        ..Default::default()
    }) else {
        return;
    };
    let l = Launch::chain(&[format!("http://127.0.0.1:{}", tp.port())]);
    let Some(got) = curl_sha(&l, &trap, &[], &origin.url_with_host("origin.test", "/big")) else {
        return;
    };
    assert_eq!(got, sha);
    let asked = format!("CONNECT origin.test:{}", origin.port());
    assert!(tp.wait_log(&asked, T), "{}", tp.log());
    assert!(
        origin
            .requests()
            .iter()
            .all(|(p, _)| p.ip() == IpAddr::V4(Ipv4Addr::new(127, 0, 0, 4)))
    );
}

#[test]
fn curl_by_name_through_microsocks() {
    netns();
    let trap = DnsTrap::start();
    let (origin, sha) = big_origin();
    let Some(ms) = Microsocks::start(MicrosocksOpts {
        hosts: proxy_hosts(),
        ..Default::default()
    }) else {
        return;
    };
    let l = Launch::chain(&[format!("socks5://127.0.0.1:{}", ms.port())]);
    let Some(got) = curl_sha(&l, &trap, &[], &origin.url_with_host("origin.test", "/big")) else {
        return;
    };
    assert_eq!(got, sha);
    let asked = format!("connected to origin.test:{}", origin.port());
    assert!(ms.wait_log(&asked, T), "{}", ms.log());
    assert!(
        origin
            .requests()
            .iter()
            .all(|(p, _)| p.ip() == IpAddr::V4(Ipv4Addr::new(127, 0, 0, 3)))
    );
}

// ------------------------------------------------------------ the control, and failures

/// The trap itself, without chainsocks: a plain lookup of an unknown name reaches it (UDP, and
/// a TCP connection counts too); a name of the client's private /etc/hosts sends nothing.
#[test]
fn dns_trap_sees_a_plain_lookup() {
    netns();
    let trap = DnsTrap::with_client_hosts(&[(
        "client.test".into(),
        IpAddr::V4(Ipv4Addr::new(127, 0, 0, 7)),
    )]);
    let Some(py) = require("python3") else { return };
    let lookup = |name: &str| {
        let script = format!(
            "import socket\n\
             try: print(socket.getaddrinfo('{name}', 80, socket.AF_INET)[0][4][0])\n\
             except socket.gaierror as e: print('gai', e.errno)\n"
        );
        let mut c = clean(Command::new(&py));
        c.args(["-c", &script]);
        trap.apply(&mut c);
        run(&mut c, T)
    };
    let o = lookup("client.test");
    assert_eq!(stdout(&o), "127.0.0.7\n", "{}", show(&o));
    trap.assert_no_leak("a name of the private /etc/hosts");
    let o = lookup("leak.test");
    assert!(stdout(&o).starts_with("gai "), "{}", show(&o));
    assert!(trap.wait_count(1, Duration::from_secs(5)) >= 1);
    assert!(
        trap.queried_names().iter().all(|n| n == "leak.test"),
        "{:?}",
        trap.queried_names()
    );
    let before = trap.count();
    let _tcp = std::net::TcpStream::connect("127.0.0.1:53");
    assert_eq!(
        trap.wait_count(before + 1, Duration::from_secs(5)),
        before + 1
    );
}

/// With `proxy_dns = false` the program resolves by itself: the same lookup reaches the trap
/// (so the trap works and the client really cannot resolve the test names), and fails.
#[test]
fn control_proxy_dns_off_resolves_locally_and_the_trap_sees_it() {
    netns();
    let trap = DnsTrap::start();
    let (origin, _) = big_origin();
    let Some(dante) = Dante::start(DanteOpts {
        hosts: proxy_hosts(),
        ..Default::default()
    }) else {
        return;
    };
    let l = Launch::new(&format!(
        "proxy_dns = false\nproxy = [\"socks5://127.0.0.1:{}\"]\n",
        dante.port()
    ));
    let mut c = l.csclient();
    c.args(["resolve", "origin.test", "--family", "4"]);
    trap.apply(&mut c);
    let o = run(&mut c, T);
    assert!(!o.status.success(), "{}", show(&o));
    assert!(stdout(&o).starts_with("gai="), "{}", show(&o));
    assert!(trap.wait_count(1, Duration::from_secs(5)) >= 1);
    assert!(
        trap.queried_names().iter().any(|n| n == "origin.test"),
        "{:?}",
        trap.queried_names()
    );
    if let Some(curl) = require("curl") {
        let before = trap.count();
        let mut c = l.cmd(curl);
        c.args([
            "-sS",
            "--max-time",
            "20",
            &origin.url_with_host("origin.test", "/big"),
        ]);
        trap.apply(&mut c);
        let o = run(&mut c, T);
        assert_eq!(
            o.status.code(),
            Some(6),
            "could not resolve host: {}",
            show(&o)
        );
        assert!(trap.wait_count(before + 1, Duration::from_secs(5)) > before);
    }
    assert!(origin.requests().is_empty());
    // No name reached the proxy in a CONNECT (its DNS queries, UDP like any other datagram,
    // may have travelled through its UDP association).
    assert!(!dante.log().contains("CMD: 1"), "{}", dante.log());
}

#[test]
fn plain_socks4_last_hop_cannot_carry_a_name() {
    netns();
    let trap = DnsTrap::start();
    let (origin, _) = big_origin();
    let Some(dante) = Dante::start(DanteOpts {
        hosts: proxy_hosts(),
        ..Default::default()
    }) else {
        return;
    };
    let port = origin.port().to_string();
    let l = Launch::chain(&[format!("socks4://127.0.0.1:{}", dante.port())]);
    let o = shim(&l, &trap, csclient(), &["connect", "origin.test", &port]);
    assert!(!o.status.success(), "{}", show(&o));
    assert!(stdout(&o).contains("errno=EHOSTUNREACH"), "{}", show(&o));
    assert!(l.log().contains("use socks4a"), "{}", l.log());
    assert!(l.log().contains("origin.test"), "{}", l.log());
    assert!(origin.peers().is_empty());
    assert!(!dante.log().contains("VER: 4"), "{}", dante.log());

    // socks4_resolve = "local": the shim resolves the name itself (a DNS query, by the user's
    // choice), which fails here (nothing answers): still EHOSTUNREACH, never a direct connect.
    let l = Launch::new(&format!(
        "socks4_resolve = \"local\"\nconnect_timeout_ms = 3000\nproxy = [\"socks4://127.0.0.1:{}\"]\n",
        dante.port()
    ));
    let mut c = l.csclient();
    c.args(["connect", "origin.test", &port]);
    trap.apply(&mut c);
    let o = run(&mut c, T);
    assert!(stdout(&o).contains("errno=EHOSTUNREACH"), "{}", show(&o));
    assert!(trap.wait_count(1, Duration::from_secs(5)) >= 1);
    assert!(
        trap.queried_names().iter().all(|n| n == "origin.test"),
        "{:?}",
        trap.queried_names()
    );
    assert!(origin.peers().is_empty());
}

#[test]
fn connect_to_a_fake_ip_never_handed_out_is_refused() {
    netns();
    let trap = DnsTrap::start();
    let echo = Echo::start();
    let Some(dante) = Dante::start(DanteOpts::default()) else {
        return;
    };
    let l = Launch::chain(&[format!("socks5://127.0.0.1:{}", dante.port())]);
    let port = echo.port().to_string();
    // The harness's readiness probe is dante's only client so far (wait for its log line).
    let accepts = || dante.log().matches("tcp/accept [").count();
    assert!(dante.wait_log("tcp/accept [", T), "{}", dante.log());
    let before = accepts();
    let o = shim(&l, &trap, csclient(), &["connect", "198.18.200.200", &port]);
    assert!(stdout(&o).contains("errno=ECONNREFUSED"), "{}", show(&o));
    assert!(
        l.log().contains("198.18.200.200") && l.log().contains("never handed out"),
        "{}",
        l.log()
    );
    let o = shim(
        &l,
        &trap,
        csclient(),
        &[
            "connect",
            "fd63:6873:6f63:6b73::abcd",
            &port,
            "--family",
            "6",
        ],
    );
    assert!(stdout(&o).contains("errno=ECONNREFUSED"), "{}", show(&o));
    assert!(l.log().contains("fd63:6873:6f63:6b73::abcd"), "{}", l.log());
    // Nothing reached the proxy (not even a TCP connection) nor the origin.
    std::thread::sleep(Duration::from_millis(100));
    assert!(!dante.log().contains("VER:"), "{}", dante.log());
    assert_eq!(accepts(), before, "{}", dante.log());
    assert!(echo.peers().is_empty());
}

// ------------------------------------------------------------ python, exec, IPv6

#[test]
fn python_getaddrinfo_connect_and_get_by_name() {
    netns();
    let trap = DnsTrap::start();
    let (origin, sha) = big_origin();
    let Some(dante) = Dante::start(DanteOpts {
        hosts: proxy_hosts(),
        ..Default::default()
    }) else {
        return;
    };
    let Some(py) = require("python3") else { return };
    let l = Launch::chain(&[format!("socks5://127.0.0.1:{}", dante.port())]);
    let script = r#"
import hashlib, socket, sys
port = int(sys.argv[1])
fam, st, proto, _, sa = socket.getaddrinfo("origin.test", port, type=socket.SOCK_STREAM)[0]
print("ip=" + sa[0])
s = socket.socket(fam, st, proto)
s.connect(sa)
s.sendall(b"GET /big HTTP/1.1\r\nHost: origin.test\r\nConnection: close\r\n\r\n")
data = b""
while True:
    chunk = s.recv(65536)
    if not chunk:
        break
    data += chunk
head, body = data.split(b"\r\n\r\n", 1)
print("status=" + head.split()[1].decode())
print("sha=" + hashlib.sha256(body).hexdigest())
"#;
    let o = shim(&l, &trap, py, &["-c", script, &origin.port().to_string()]);
    let r = kv(&stdout(&o));
    assert!(fake4(&r["ip"]), "{}", show(&o));
    assert_eq!(
        r.get("status").map(String::as_str),
        Some("200"),
        "{}",
        show(&o)
    );
    assert_eq!(r.get("sha"), Some(&sha), "{}", show(&o));
    let asked = format!("ATYP: 3 address: origin.test.{}", origin.port());
    assert!(dante.wait_log(&asked, T), "{}", dante.log());
}

/// getent (one process) prints the fake IP; curl (another process, by IP) reaches the origin:
/// the table is the launch's, shared across exec.
#[test]
fn exec_getent_ip_then_curl_by_ip_reaches_the_origin() {
    netns();
    let trap = DnsTrap::start();
    let (origin, sha) = big_origin();
    let Some(dante) = Dante::start(DanteOpts {
        hosts: proxy_hosts(),
        ..Default::default()
    }) else {
        return;
    };
    if require("curl").is_none() || require("getent").is_none() {
        return;
    }
    let l = Launch::chain(&[format!("socks5://127.0.0.1:{}", dante.port())]);
    let script = format!(
        "ip=$(getent hosts origin.test | cut -d' ' -f1); echo \"ip=$ip\"; \
         echo \"sha=$(curl -sS --fail --max-time 20 http://$ip:{}/big | sha256sum | cut -d' ' -f1)\"",
        origin.port()
    );
    let o = shim(&l, &trap, "sh", &["-c", &script]);
    let r = kv(&stdout(&o));
    assert!(fake4(&r["ip"]), "{}", show(&o));
    assert_eq!(r.get("sha"), Some(&sha), "{}\n{}", show(&o), l.log());
    let asked = format!("ATYP: 3 address: origin.test.{}", origin.port());
    assert!(dante.wait_log(&asked, T), "{}", dante.log());
}

#[test]
fn processes_of_one_launch_agree_and_launches_are_independent() {
    netns();
    let trap = DnsTrap::start();
    let Some(py) = require("python3") else { return };
    if require("getent").is_none() {
        return;
    }
    let l = Launch::chain(&["socks5://127.0.0.1:9".into()]);
    let script = format!(
        "getent hosts b.test a.test | sed 's/  */ /' | sed 's/^\\(.*\\) \\(.*\\)$/getent-\\2=\\1/'; \
         echo \"csclient-a.test=$({cs} resolve a.test --family 4)\"; \
         echo \"python-a.test=$({py} -c 'import socket; print(socket.gethostbyname(\"a.test\"))')\"; \
         echo \"csstress-$({st} resolve b.test | sed 's/ /=/')\"",
        cs = csclient().display(),
        py = py.display(),
        st = csstress().display(),
    );
    let o = shim(&l, &trap, "sh", &["-c", &script]);
    assert!(o.status.success(), "{}", show(&o));
    let r = kv(&stdout(&o));
    let (a, b) = (&r["getent-a.test"], &r["getent-b.test"]);
    assert!(fake4(a) && fake4(b) && a != b, "{}", show(&o));
    assert_eq!(&r["csclient-a.test"], a, "{}", show(&o));
    assert_eq!(&r["python-a.test"], a, "{}", show(&o));
    assert_eq!(&r["csstress-b.test"], b, "{}", show(&o));

    // Two processes of one launch racing on the same 300 new names agree on every one.
    let names: Vec<String> = (0..300).map(|i| format!("race{i}.test")).collect();
    let st = csstress().display().to_string();
    let script = format!(
        "{st} resolve {n} > one & {st} resolve {n} > two & wait; cat one; echo ---; cat two",
        n = names.join(" ")
    );
    let mut c = l.cmd("sh");
    c.args(["-c", &script]).current_dir(l.dir());
    trap.apply(&mut c);
    let o = run(&mut c, T);
    trap.assert_no_leak("two racing csstress");
    let out = stdout(&o);
    let (one, two) = out.split_once("---\n").unwrap_or_default();
    let (one, two) = (name_ips(one), name_ips(two));
    assert_eq!(one.len(), 300, "{}", show(&o));
    assert_eq!(one, two);
    let distinct: HashSet<&String> = one.values().collect();
    assert_eq!(distinct.len(), 300);
    assert!(one.values().all(|ip| fake4(ip)));

    // A second launch has its own table: a.test is its first name, b.test's address (taken
    // first in the launch above) now means a.test or nothing, never b.test.
    // (Each `chainsocks` run is a launch: the two steps share one `sh -c`.)
    let l2 = Launch::chain(&["socks5://127.0.0.1:9".into()]);
    let rev = format!(
        "import socket\n\
         for ip in ['{b}', '{a}']:\n\
         \x20   try: print('rev-' + ip + '=' + socket.gethostbyaddr(ip)[0])\n\
         \x20   except socket.herror as e: print('rev-' + ip + '=herror %d' % e.errno)\n"
    );
    let script = format!(
        "echo \"$({st} resolve a.test | sed 's/ /=/')\"; {py} -c \"$REV\"",
        py = py.display()
    );
    let mut c = l2.cmd("sh");
    c.args(["-c", &script]).env("REV", &rev);
    trap.apply(&mut c);
    let o2 = run(&mut c, T);
    trap.assert_no_leak("second launch");
    let r2 = kv(&stdout(&o2));
    let a2 = r2.get("a.test").cloned().unwrap_or_default();
    assert!(fake4(&a2), "{}", show(&o2));
    assert_ne!(&a2, a, "a fresh launch starts a fresh table: {}", show(&o2));
    assert_eq!(&a2, b, "both launches hand out their first address first");
    // In the second launch b.test's old address means a.test, and a.test's old one nothing.
    let get = |k: String| r2.get(&k).cloned().unwrap_or_default();
    assert_eq!(get(format!("rev-{b}")), "a.test", "{}", show(&o2));
    assert_eq!(
        get(format!("rev-{a}")),
        "herror 1",
        "HOST_NOT_FOUND: {}",
        show(&o2)
    );
}

#[test]
fn ipv6_only_client_reaches_an_ipv6_origin_by_name() {
    netns();
    let trap = DnsTrap::start();
    let (origin, sha) = big_origin_v6();
    let Some(dante) = Dante::start(DanteOpts {
        hosts: proxy_hosts(),
        ..Default::default()
    }) else {
        return;
    };
    let l = Launch::chain(&[format!("socks5://127.0.0.1:{}", dante.port())]);
    let o = shim(
        &l,
        &trap,
        csclient(),
        &["resolve", "origin6.test", "--family", "6"],
    );
    let ip = stdout(&o);
    assert!(fake6(&ip), "{}", show(&o));
    let url = origin.url_with_host("origin6.test", "/big");
    let Some(got) = curl_sha(&l, &trap, &["-6"], &url) else {
        return;
    };
    assert_eq!(got, sha);
    let asked = format!("ATYP: 3 address: origin6.test.{}", origin.port());
    assert!(dante.wait_log(&asked, T), "{}", dante.log());
    let reqs = origin.requests();
    assert_eq!(reqs.len(), 1);
    assert_eq!(reqs[0].0.ip(), IpAddr::V6(Ipv6Addr::LOCALHOST));
}

// ------------------------------------------------------------ resolver semantics

#[test]
fn reverse_lookups_of_fake_addresses_give_the_name() {
    netns();
    let trap = DnsTrap::start();
    let Some(py) = require("python3") else { return };
    let l = Launch::chain(&["socks5://127.0.0.1:9".into()]);
    let script = r#"
import socket
ip = socket.gethostbyname("rev.test")
print("ip=" + ip)
print("gethostbyaddr=%s %s" % (socket.gethostbyaddr(ip)[0], socket.gethostbyaddr(ip)[2]))
print("getnameinfo=%s %s" % socket.getnameinfo((ip, 80), 0))
ip6 = socket.getaddrinfo("rev6.test", 443, socket.AF_INET6, socket.SOCK_STREAM)[0][4][0]
print("ip6=" + ip6)
print("getnameinfo6=%s %s" % socket.getnameinfo((ip6, 443, 0, 0), 0))
print("gethostbyaddr6=" + socket.gethostbyaddr(ip6)[0])
print("local=%s %s" % (socket.gethostbyaddr("127.0.0.1")[0], socket.getnameinfo(("127.0.0.1", 80), 0)[0]))
print("numeric=%s %s" % socket.getnameinfo((ip, 80), socket.NI_NUMERICHOST | socket.NI_NUMERICSERV))
print("unknown=" + socket.getnameinfo(("198.18.200.200", 80), 0)[0])
try:
    socket.getnameinfo(("198.18.200.200", 80), socket.NI_NAMEREQD)
    print("unknown_namereqd=ok")
except socket.gaierror as e:
    print("unknown_namereqd=%d" % e.errno)
try:
    socket.gethostbyaddr("198.18.200.200")
    print("unknown_gethostbyaddr=ok")
except socket.herror as e:
    print("unknown_gethostbyaddr=%d" % e.errno)
"#;
    let o = shim(&l, &trap, py, &["-c", script]);
    let r = kv(&stdout(&o));
    let ip = r.get("ip").cloned().unwrap_or_default();
    assert!(fake4(&ip), "{}", show(&o));
    assert_eq!(
        r["gethostbyaddr"],
        format!("rev.test ['{ip}']"),
        "{}",
        show(&o)
    );
    assert_eq!(r["getnameinfo"], "rev.test http");
    let ip6 = r.get("ip6").cloned().unwrap_or_default();
    assert!(fake6(&ip6), "{}", show(&o));
    assert_eq!(r["getnameinfo6"], "rev6.test https");
    assert_eq!(r["gethostbyaddr6"], "rev6.test");
    assert_eq!(r["local"], "localhost localhost");
    assert_eq!(r["numeric"], format!("{ip} 80"));
    assert_eq!(
        r["unknown"], "198.18.200.200",
        "numeric for an address never handed out"
    );
    assert_eq!(r["unknown_namereqd"], libc::EAI_NONAME.to_string());
    assert_eq!(r["unknown_gethostbyaddr"], "1", "HOST_NOT_FOUND");
}

/// getaddrinfo / gethostbyname* exactly as glibc shapes them, through ctypes where Python's own
/// API cannot express the call.
#[test]
fn glibc_resolver_semantics() {
    netns();
    let trap = DnsTrap::with_client_hosts(&[(
        "client.test".into(),
        IpAddr::V4(Ipv4Addr::new(127, 0, 0, 7)),
    )]);
    let Some(py) = require("python3") else { return };
    let l = Launch::chain(&["socks5://127.0.0.1:9".into()]);
    let o = shim(&l, &trap, py, &["-c", GLIBC_SCRIPT]);
    assert!(o.status.success(), "{}", show(&o));
    let r = kv(&stdout(&o));
    let get = |k: &str| -> &str { r.get(k).map_or("<missing>", String::as_str) };
    let out = show(&o);
    // An entry is family/socktype/protocol/address/port[/canonname].
    let entries = |k: &str| -> Vec<Vec<String>> {
        get(k)
            .split(' ')
            .map(|e| e.split('/').map(str::to_string).collect())
            .collect()
    };
    let field = |e: &Vec<String>, i: usize| e.get(i).cloned().unwrap_or_default();
    let shape = |k: &str| -> Vec<(String, String, String)> {
        entries(k)
            .iter()
            .map(|e| (field(e, 0), field(e, 1), field(e, 4)))
            .collect()
    };

    // NULL hints (AF_UNSPEC, every socket type): the real IPv4 shape for a numeric host, then
    // the same for AF_INET6: a fake name has both families, IPv4 first.
    let real4 = shape("null_hints_real");
    assert_eq!(real4.len(), 3, "STREAM, DGRAM, RAW: {out}");
    let mut want = real4.clone();
    want.extend(
        real4
            .iter()
            .map(|(_, t, p)| ("10".into(), t.clone(), p.clone())),
    );
    assert_eq!(shape("null_hints"), want, "{out}");
    let null = entries("null_hints");
    let (ip4, ip6) = (field(&null[0], 3), field(&null[3], 3));
    assert!(fake4(&ip4) && fake6(&ip6), "{out}");
    assert!(null[..3].iter().all(|e| field(e, 3) == ip4), "{out}");
    assert!(null[3..].iter().all(|e| field(e, 3) == ip6), "{out}");
    // One id: the same host number in both ranges.
    let id4 = ip4
        .parse::<Ipv4Addr>()
        .map_or(0, |a| u16::from(a.octets()[3]));
    let id6 = ip6.parse::<Ipv6Addr>().map_or(0, |a| a.segments()[7]);
    assert_eq!(id4, id6, "{out}");
    assert_eq!(
        get("unspec"),
        format!("2/1/6/{ip4}/80 10/1/6/{ip6}/80"),
        "{out}"
    );
    assert_eq!(get("v6"), format!("10/1/6/{ip6}/80"), "{out}");
    // socktype 0 with a named service: one entry per socket type the service has, like glibc.
    assert_eq!(shape("http"), shape("http_real"), "{out}");
    assert_eq!(shape("http"), vec![("2".into(), "1".into(), "80".into())]);
    assert_eq!(shape("domain"), shape("domain_real"), "{out}");
    assert_eq!(entries("domain").len(), 2, "tcp and udp: {out}");
    let svc: Vec<Vec<String>> = [entries("http"), entries("domain")].concat();
    assert!(
        svc.iter().all(|e| field(e, 3) == ip4),
        "one name, one address: {out}"
    );
    // AI_CANONNAME: the name, on the first entry only.
    assert_eq!(field(&entries("canon")[0], 5), "canon.test", "{out}");
    assert_eq!(field(&entries("canon")[0], 4), "443");
    let cu = entries("canon_unspec");
    assert_eq!(cu.len(), 2, "{out}");
    assert_eq!(field(&cu[0], 5), "canon.test", "{out}");
    assert_eq!(cu[1].len(), 5, "no canonname after the first entry: {out}");
    // Errors that do not depend on the name are glibc's.
    let rc = |e: i32| format!("rc={e}");
    assert_eq!(get("bad_service"), rc(libc::EAI_SERVICE), "{out}");
    assert_eq!(get("unix"), rc(libc::EAI_FAMILY), "{out}");
    assert_eq!(get("empty"), rc(libc::EAI_NONAME), "{out}");
    assert_eq!(get("numerichost_flag"), rc(libc::EAI_NONAME), "{out}");
    // Real answers: localhost, the client's own /etc/hosts, numeric hosts. (glibc lists
    // localhost once per /etc/hosts line: twice with the usual ::1 line.)
    let localhost = get("localhost");
    assert!(
        !localhost.is_empty() && localhost.split(' ').all(|e| e == "2/1/6/127.0.0.1/80"),
        "{out}"
    );
    assert_eq!(get("client_hosts"), "2/1/6/127.0.0.7/80", "{out}");
    assert_eq!(get("numeric"), "2/1/6/127.0.0.5/80", "{out}");
    assert_eq!(get("numeric6"), "10/1/6/::1/80", "{out}");
    // gethostbyname_r: ERANGE for a small buffer, the fake for a big one.
    let erange = format!("rc={} null=True", libc::ERANGE);
    assert!(get("ghbn_r_small").starts_with(&erange), "{out}");
    let want = format!("rc=0 name=svc.test type=2 addr={ip4} more=False");
    assert_eq!(get("ghbn_r_big"), want, "{out}");
    let local = "rc=0 name=localhost type=2 addr=127.0.0.1 ";
    assert!(get("ghbn_r_localhost").starts_with(local), "{out}");
    assert_eq!(get("ghbn"), format!("svc.test {ip4}"), "{out}");
    assert_eq!(get("ghbn2_v4"), format!("svc.test {ip4}"), "{out}");
    assert_eq!(get("ghbn2_v6"), "null h_errno=4", "NO_DATA: {out}");
}

const GLIBC_SCRIPT: &str = r#"
import ctypes as C, socket
libc = C.CDLL(None, use_errno=True)
class addrinfo(C.Structure):
    pass
addrinfo._fields_ = [("ai_flags", C.c_int), ("ai_family", C.c_int), ("ai_socktype", C.c_int),
    ("ai_protocol", C.c_int), ("ai_addrlen", C.c_uint32), ("ai_addr", C.c_void_p),
    ("ai_canonname", C.c_char_p), ("ai_next", C.POINTER(addrinfo))]
class hostent(C.Structure):
    _fields_ = [("h_name", C.c_char_p), ("h_aliases", C.POINTER(C.c_char_p)),
        ("h_addrtype", C.c_int), ("h_length", C.c_int),
        ("h_addr_list", C.POINTER(C.POINTER(C.c_ubyte)))]
libc.getaddrinfo.argtypes = [C.c_char_p, C.c_char_p, C.c_void_p, C.POINTER(C.POINTER(addrinfo))]
libc.freeaddrinfo.argtypes = [C.POINTER(addrinfo)]
libc.gethostbyname_r.argtypes = [C.c_char_p, C.POINTER(hostent), C.c_char_p, C.c_size_t,
    C.POINTER(C.POINTER(hostent)), C.POINTER(C.c_int)]
libc.gethostbyname.restype = C.POINTER(hostent)
libc.gethostbyname.argtypes = [C.c_char_p]
libc.gethostbyname2.restype = C.POINTER(hostent)
libc.gethostbyname2.argtypes = [C.c_char_p, C.c_int]
libc.__h_errno_location.restype = C.POINTER(C.c_int)

def gai(node, service, family=0, socktype=0, flags=0, null_hints=False):
    res = C.POINTER(addrinfo)()
    hints = None
    if not null_hints:
        h = addrinfo()
        h.ai_family, h.ai_socktype, h.ai_flags = family, socktype, flags
        hints = C.addressof(h)
    rc = libc.getaddrinfo(node, service, hints, C.byref(res))
    if rc != 0:
        return "rc=%d" % rc
    out, p = [], res
    while p:
        ai = p.contents
        raw = C.string_at(ai.ai_addr, ai.ai_addrlen)
        port = int.from_bytes(raw[2:4], "big")
        if ai.ai_family == socket.AF_INET:
            addr = socket.inet_ntop(socket.AF_INET, raw[4:8])
        else:
            addr = socket.inet_ntop(socket.AF_INET6, raw[8:24])
        e = "%d/%d/%d/%s/%d" % (ai.ai_family, ai.ai_socktype, ai.ai_protocol, addr, port)
        if ai.ai_canonname:
            e += "/" + ai.ai_canonname.decode()
        out.append(e)
        p = ai.ai_next
    libc.freeaddrinfo(res)
    return " ".join(out)

def hent(he):
    addr = bytes(he.h_addr_list[0][:he.h_length])
    return "name=%s type=%d addr=%s more=%s" % (he.h_name.decode(), he.h_addrtype,
        socket.inet_ntop(he.h_addrtype, addr), bool(he.h_addr_list[1]))

def ghbn_r(name, size):
    he, buf = hostent(), C.create_string_buffer(size)
    result, herr = C.POINTER(hostent)(), C.c_int(0)
    rc = libc.gethostbyname_r(name, C.byref(he), buf, size, C.byref(result), C.byref(herr))
    if rc != 0 or not result:
        return "rc=%d null=%s h_errno=%d" % (rc, not result, herr.value)
    return "rc=0 " + hent(result.contents)

def ghbn(p):
    if not p:
        return "null h_errno=%d" % libc.__h_errno_location()[0]
    he = p.contents
    return "%s %s" % (he.h_name.decode(), socket.inet_ntop(he.h_addrtype, bytes(he.h_addr_list[0][:he.h_length])))

AF4, AF6, ST = socket.AF_INET, socket.AF_INET6, socket.SOCK_STREAM
print("null_hints=" + gai(b"svc.test", None, null_hints=True))
print("null_hints_real=" + gai(b"127.0.0.1", None, null_hints=True))
print("http=" + gai(b"svc.test", b"http", AF4))
print("http_real=" + gai(b"127.0.0.1", b"http", AF4))
print("domain=" + gai(b"svc.test", b"domain", AF4))
print("domain_real=" + gai(b"127.0.0.1", b"domain", AF4))
print("canon=" + gai(b"canon.test", b"443", AF4, ST, socket.AI_CANONNAME))
print("canon_unspec=" + gai(b"canon.test", b"443", 0, ST, socket.AI_CANONNAME))
print("unspec=" + gai(b"svc.test", b"80", 0, ST))
print("bad_service=" + gai(b"svc.test", b"no-such-service", AF4))
print("unix=" + gai(b"svc.test", b"80", socket.AF_UNIX))
print("empty=" + gai(b"", b"80"))
print("numerichost_flag=" + gai(b"svc.test", b"80", 0, ST, socket.AI_NUMERICHOST))
print("localhost=" + gai(b"localhost", b"80", AF4, ST))
print("client_hosts=" + gai(b"client.test", b"80", 0, ST))
print("numeric=" + gai(b"127.0.0.5", b"80", 0, ST))
print("numeric6=" + gai(b"::1", b"80", AF6, ST))
print("v6=" + gai(b"svc.test", b"80", AF6, ST))
print("ghbn_r_small=" + ghbn_r(b"svc.test", 16))
print("ghbn_r_big=" + ghbn_r(b"svc.test", 1024))
print("ghbn_r_localhost=" + ghbn_r(b"localhost", 1024))
print("ghbn=" + ghbn(libc.gethostbyname(b"svc.test")))
print("ghbn2_v4=" + ghbn(libc.gethostbyname2(b"svc.test", AF4)))
print("ghbn2_v6=" + ghbn(libc.gethostbyname2(b"svc.test", AF6)))
"#;

// ------------------------------------------------------------ table full, concurrency, fork

#[test]
fn full_table_gives_eai_again_and_known_names_still_resolve() {
    netns();
    let trap = DnsTrap::start();
    let l = Launch::new("fake_ip_range = \"10.99.0.0/24\"\nproxy = [\"socks5://127.0.0.1:9\"]\n");
    let names: Vec<String> = (0..254).map(|i| format!("n{i}.test")).collect();
    // Two processes of one launch: the first fills the table, the second asks for one more.
    let st = csstress().display().to_string();
    let script = format!(
        "{st} resolve {} && echo --- && {st} resolve overflow.test n0.test n253.test",
        names.join(" ")
    );
    let o = shim(&l, &trap, "sh", &["-c", &script]);
    let out = stdout(&o);
    let (fill, more) = out.split_once("---\n").unwrap_or_default();
    let first = name_ips(fill);
    assert_eq!(first.len(), 254, "{}", show(&o));
    let ips: HashSet<&String> = first.values().collect();
    assert_eq!(ips.len(), 254, "one address per name");
    let in_range = |ip: &String| {
        ip.parse::<Ipv4Addr>().is_ok_and(|a| {
            let [x, y, z, h] = a.octets();
            [x, y, z] == [10, 99, 0] && h != 0 && h != 255
        })
    };
    assert!(first.values().all(in_range), "{first:?}");
    // The 255th name fails with EAI_AGAIN; known names still resolve, to the same addresses.
    let overflow = format!("overflow.test gai=EAI_AGAIN ({})", libc::EAI_AGAIN);
    assert!(more.contains(&overflow), "{}", show(&o));
    assert!(!o.status.success(), "csstress reports the failed lookup");
    let again = name_ips(more);
    assert_eq!(again.get("n0.test"), first.get("n0.test"), "{more}");
    assert_eq!(again.get("n253.test"), first.get("n253.test"), "{more}");
    assert!(l.log().contains("fake-DNS table full"), "{}", l.log());
}

#[test]
fn sixty_four_threads_resolve_one_stable_address_per_name() {
    netns();
    let trap = DnsTrap::start();
    let l = Launch::chain(&["socks5://127.0.0.1:9".into()]);
    let st = csstress().display().to_string();
    let script = format!(
        "{st} threads 64 1000 && echo --- && {st} resolve s0.test s998.test t0-1.test t63-999.test"
    );
    let start = Instant::now();
    let o = shim(&l, &trap, "sh", &["-c", &script]);
    let elapsed = start.elapsed();
    assert!(
        o.status.success(),
        "{}",
        show(&o).get(..4000).unwrap_or_default()
    );
    let out = stdout(&o);
    let (all, after) = out.split_once("---\n").unwrap_or_default();
    assert_eq!(all.lines().count(), 64 * 1000);
    let mut by_name: HashMap<&str, &str> = HashMap::new();
    let mut by_ip: HashMap<&str, &str> = HashMap::new();
    for line in all.lines() {
        let (name, ip) = line.split_once(' ').unwrap_or_default();
        assert!(fake4(ip), "{line}");
        assert_eq!(
            *by_name.entry(name).or_insert(ip),
            ip,
            "{name}: two addresses"
        );
        assert_eq!(*by_ip.entry(ip).or_insert(name), name, "{ip}: two names");
    }
    assert_eq!(by_name.len(), 500 + 64 * 500);
    // A later process of the launch sees the same table.
    for (name, ip) in name_ips(after) {
        assert_eq!(by_name.get(name.as_str()), Some(&ip.as_str()), "{name}");
    }
    assert_eq!(name_ips(after).len(), 4, "{after}");
    eprintln!("64 threads x 1000 lookups: {elapsed:?}");
}

#[test]
fn fork_while_63_threads_resolve_never_hangs() {
    netns();
    let trap = DnsTrap::start();
    let l = Launch::chain(&["socks5://127.0.0.1:9".into()]);
    let mut c = l.cmd(csstress());
    c.args(["fork", "200", "63"]);
    trap.apply(&mut c);
    let start = Instant::now();
    let o = match try_run(&mut c, Duration::from_secs(120)) {
        Ok(o) => o,
        Err(o) => panic!(
            "csstress fork hung (killed after 120 s: a deadlock): {}",
            show(&o)
        ),
    };
    let elapsed = start.elapsed();
    trap.assert_no_leak("csstress fork");
    let out = stdout(&o);
    let summary = out.lines().last().unwrap_or_default();
    assert!(
        summary.starts_with("forks=200 ok=200 failed=0 hung=0 "),
        "{}",
        show(&o)
    );
    assert!(summary.contains(" bg_errors=0 "), "{summary}");
    let (mut child, mut parent) = (HashMap::new(), HashMap::new());
    for line in out.lines() {
        let mut w = line.split(' ');
        match (w.next(), w.next(), w.next()) {
            (Some("child"), Some(r), Some(ip)) => child.insert(r.to_string(), ip.to_string()),
            (Some("parent"), Some(r), Some(ip)) => parent.insert(r.to_string(), ip.to_string()),
            _ => None,
        };
    }
    assert_eq!(child.len(), 200, "{out}");
    assert_eq!(
        child, parent,
        "the parent sees every child's name at the child's address"
    );
    assert!(child.values().all(|ip| fake4(ip)));
    assert_eq!(child.values().collect::<HashSet<_>>().len(), 200);
    eprintln!("fork x200 with 63 resolving threads: {elapsed:?} ({summary})");
}
