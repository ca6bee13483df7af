//! End-to-end tests of the CI egress policy (issue 14): audit a job with `--report`, learn an
//! allowlist with `chainsocks policy learn`, enforce it (`--allowlist`, `--allow`, with and
//! without `--isolate`), `--fail-on-block` exit statuses, the Markdown summary for
//! `$GITHUB_STEP_SUMMARY`, and the allowlist for UDP datagrams and direct entries.
//! Each test runs in its own network namespace with real dante and real clients (python3,
//! sh); outcomes are proven at the origins (which peer connected, or that nothing did).
//! Two tests give the namespace's `lo` an extra, non-loopback address (198.51.100.1/32,
//! TEST-NET-2) to have a destination that is not exempt as loopback: it exists only in that
//! namespace, whose only interface is `lo`.

use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr, TcpListener, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use e2e::*;

const T: Duration = Duration::from_secs(60);

/// A client that fetches `http://HOST:PORT/PATH` URLs with a plain socket (the name through
/// getaddrinfo, so it gets a fake address) and prints `OK URL BODY` or `ERR URL ERRNO`.
const FETCH_PY: &str = r#"
import socket, sys
for url in sys.argv[1:]:
    hostport, path = url[len('http://'):].split('/', 1)
    host, port = hostport.rsplit(':', 1)
    try:
        s = socket.create_connection((host, int(port)), timeout=10)
        s.sendall(('GET /%s HTTP/1.0\r\nHost: %s\r\n\r\n' % (path, host)).encode())
        data = b''
        while True:
            b = s.recv(65536)
            if not b:
                break
            data += b
        print('OK', url, data.split(b'\r\n\r\n', 1)[1].decode(), flush=True)
    except OSError as e:
        print('ERR', url, e.errno, flush=True)
"#;

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

/// One origin per address, each serving `/f` with its own body.
fn origin(addr: &str, body: &str) -> HttpOrigin {
    HttpOrigin::start_on(ip(addr), vec![("/f".into(), body.as_bytes().to_vec())])
}

/// `python3 fetch.py`, written in `dir`.
fn fetch_script(dir: &Path) -> PathBuf {
    let p = dir.join("fetch.py");
    std::fs::write(&p, FETCH_PY).unwrap();
    p
}

/// What most tests here use: dante (resolving `hosts`, which only it knows), python3, a
/// launch through dante and the fetch client. `None`: a program is missing (test skipped).
struct Job {
    /// Kept alive for the test (bound as `_dante`).
    _dante: Dante,
    py: PathBuf,
    l: Launch,
    fetch: PathBuf,
}

fn job(hosts: &[(&str, &str)]) -> Option<Job> {
    let dante = Dante::start(DanteOpts {
        hosts: hosts.iter().map(|(n, a)| (n.to_string(), ip(a))).collect(),
        ..Default::default()
    })?;
    let py = require("python3")?;
    let l = Launch::chain(&[format!("socks5://127.0.0.1:{}", dante.port())]);
    let fetch = fetch_script(l.dir());
    Some(Job {
        _dante: dante,
        py,
        l,
        fetch,
    })
}

/// `chainsocks -f CONFIG ARGS…`, logging to the launch's log file.
fn cs(l: &Launch, args: &[&str]) -> Command {
    let mut c = clean(Command::new(chainsocks_bin()));
    c.arg("-f").arg(&l.config).args(args);
    c.env("CHAINSOCKS_LOG_FILE", l.log_path());
    c
}

fn path_str(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// `chainsocks policy learn REPORT ARGS…`: the allowlist it prints.
fn learn(report: &Path, args: &[&str]) -> String {
    let mut cmd = clean(Command::new(chainsocks_bin()));
    cmd.args(["policy", "learn"]).arg(report).args(args);
    let o = run(&mut cmd, T);
    assert!(o.status.success(), "{}", show(&o));
    stdout(&o)
}

/// The entries of an allowlist file: the quoted patterns of its `allow` lines.
fn entries(policy: &str) -> Vec<String> {
    policy
        .lines()
        .map(str::trim)
        .filter(|l| l.starts_with('"') || l.starts_with('{'))
        .filter_map(|l| l.split('"').nth(1))
        .map(String::from)
        .collect()
}

#[test]
fn an_audit_learned_allowlist_lets_exactly_the_four_destinations_through() {
    netns();
    let a = origin("127.0.0.3", "a");
    let b = origin("127.0.0.4", "b");
    let c = origin("127.0.0.5", "c");
    let by_ip = origin("127.0.0.6", "ip");
    let fifth_name = origin("127.0.0.7", "d");
    let fifth_addr = origin("127.0.0.8", "e");
    let Some(Job {
        _dante,
        py,
        l,
        fetch,
    }) = job(&[
        ("a.test", "127.0.0.3"),
        ("b.test", "127.0.0.4"),
        ("c.test", "127.0.0.5"),
        ("d.test", "127.0.0.7"),
    ])
    else {
        return;
    };
    let four = [
        a.url_with_host("a.test", "/f"),
        b.url_with_host("b.test", "/f"),
        c.url_with_host("c.test", "/f"),
        by_ip.url("/f"),
    ];
    let refused = [
        fifth_name.url_with_host("d.test", "/f"),
        fifth_addr.url("/f"),
    ];

    // Audit: everything goes out, every process records.
    let audit = l.dir().join("audit.jsonl");
    let mut cmd = cs(&l, &["--report", path_str(&audit), "--"]);
    cmd.arg(&py).arg(&fetch).args(&four);
    let o = run(&mut cmd, T);
    assert!(o.status.success(), "{}\n{}", show(&o), l.log());
    assert_eq!(
        stdout(&o),
        format!(
            "OK {} a\nOK {} b\nOK {} c\nOK {} ip\n",
            four[0], four[1], four[2], four[3]
        ),
        "{}",
        show(&o)
    );
    let records = std::fs::read_to_string(&audit).unwrap();
    assert!(
        records.lines().any(|r| r.contains("\"kind\":\"connect\"")
            && r.contains("\"ppid\":")
            && r.contains("\"cmdline\":\"")
            && r.contains("fetch.py http://a.test:")),
        "records name the command line and the parent: {records}"
    );

    let policy_text = learn(&audit, &[]);
    let mut got = entries(&policy_text);
    got.sort();
    let mut want = vec![
        format!("a.test:{}", a.port()),
        format!("b.test:{}", b.port()),
        format!("c.test:{}", c.port()),
        format!("127.0.0.6:{}", by_ip.port()),
    ];
    want.sort();
    assert_eq!(got, want, "{policy_text}");
    assert!(
        policy_text.contains("# 1 connection: ") && policy_text.contains("fetch.py"),
        "{policy_text}"
    );
    let policy = l.dir().join("egress-policy.toml");
    std::fs::write(&policy, &policy_text).unwrap();

    // Enforce, isolated: the four get through, the fifth name and address are refused
    // (EACCES) and their origins receive nothing; the command exited 0, so --fail-on-block
    // makes it 3 and prints what was blocked.
    let mut cmd = cs(
        &l,
        &[
            "--allowlist",
            path_str(&policy),
            "--isolate",
            "--fail-on-block",
            "--",
        ],
    );
    cmd.arg(&py).arg(&fetch).args(&four).args(&refused);
    let o = run(&mut cmd, T);
    assert_eq!(
        stdout(&o),
        format!(
            "OK {} a\nOK {} b\nOK {} c\nOK {} ip\nERR {} 13\nERR {} 13\n",
            four[0], four[1], four[2], four[3], refused[0], refused[1]
        ),
        "{}\n{}",
        show(&o),
        l.log()
    );
    assert_eq!(o.status.code(), Some(3), "{}", show(&o));
    // Python tries both fake addresses of the name (IPv4, then IPv6): two attempts.
    let err = stderr(&o);
    assert!(
        err.contains(&format!(
            "blocked d.test:{} ×2 (allowlist) by python3 fetch.py",
            fifth_name.port()
        )) && err.contains(&format!(
            "blocked 127.0.0.8:{} ×1 (allowlist) by python3 fetch.py",
            fifth_addr.port()
        )) && err.contains("--fail-on-block: 3 attempts blocked (2 destinations)"),
        "{err}"
    );
    assert!(fifth_name.peers().is_empty(), "the origin received nothing");
    assert!(fifth_addr.peers().is_empty(), "the origin received nothing");
    for o in [&a, &b, &c, &by_ip] {
        let peers: Vec<String> = o.peers().iter().map(|p| p.ip().to_string()).collect();
        assert_eq!(
            peers,
            ["127.0.0.2", "127.0.0.2"],
            "audit + enforce, via dante"
        );
    }
}

#[test]
fn collapse_two_subdomains_gives_a_wildcard_that_enforces() {
    netns();
    let example = origin("127.0.0.3", "example");
    let other = origin("127.0.0.4", "other");
    let Some(Job {
        _dante,
        py,
        l,
        fetch,
    }) = job(&[
        ("a.example.test", "127.0.0.3"),
        ("b.example.test", "127.0.0.3"),
        ("c.example.test", "127.0.0.3"),
        ("x.other.test", "127.0.0.4"),
    ])
    else {
        return;
    };
    let url = |h: &str| example.url_with_host(h, "/f");
    let audit = l.dir().join("audit.jsonl");
    let mut cmd = cs(&l, &["--report", path_str(&audit), "--"]);
    cmd.arg(&py)
        .arg(&fetch)
        .args([url("a.example.test"), url("b.example.test")]);
    let o = run(&mut cmd, T);
    assert!(o.status.success(), "{}", show(&o));

    let plain = learn(&audit, &[]);
    let mut got = entries(&plain);
    got.sort();
    assert_eq!(
        got,
        [
            format!("a.example.test:{}", example.port()),
            format!("b.example.test:{}", example.port())
        ],
        "never a wildcard by itself: {plain}"
    );
    let collapsed = learn(&audit, &["--collapse", "2"]);
    assert_eq!(
        entries(&collapsed),
        [format!("*.example.test:{}", example.port())],
        "{collapsed}"
    );
    assert!(
        collapsed.contains("collapsed (--collapse): a.example.test ×1, b.example.test ×1"),
        "{collapsed}"
    );
    let policy = l.dir().join("policy.toml");
    std::fs::write(&policy, &collapsed).unwrap();
    let mut cmd = cs(&l, &["--allowlist", path_str(&policy), "--"]);
    cmd.arg(&py).arg(&fetch).args([
        url("c.example.test"),
        other.url_with_host("x.other.test", "/f"),
    ]);
    let o = run(&mut cmd, T);
    assert_eq!(
        stdout(&o),
        format!(
            "OK {} example\nERR {} 13\n",
            url("c.example.test"),
            other.url_with_host("x.other.test", "/f")
        ),
        "{}",
        show(&o)
    );
    assert!(other.peers().is_empty());
    assert_eq!(example.peers().len(), 3);
}

#[test]
fn fail_on_block_exit_statuses() {
    netns();
    let allowed = origin("127.0.0.3", "yes");
    let refused = origin("127.0.0.4", "no");
    let Some(Job {
        _dante,
        py,
        l,
        fetch,
    }) = job(&[])
    else {
        return;
    };
    let allow = format!("127.0.0.3:{}", allowed.port());
    let script = |urls: &[String], status: u8| {
        format!(
            "{} {} {}; exit {status}",
            py.display(),
            fetch.display(),
            urls.join(" ")
        )
    };
    let status = |urls: &[String], exit: u8| {
        let mut cmd = cs(&l, &["--allow", &allow, "--fail-on-block", "--"]);
        cmd.args(["sh", "-c", &script(urls, exit)]);
        run(&mut cmd, T)
    };
    // The command exits 0 but one connect was blocked: 3, and the destination is printed.
    let o = status(&[allowed.url("/f"), refused.url("/f")], 0);
    assert_eq!(
        stdout(&o),
        format!(
            "OK {} yes\nERR {} 13\n",
            allowed.url("/f"),
            refused.url("/f")
        ),
        "{}",
        show(&o)
    );
    assert_eq!(o.status.code(), Some(3), "{}", show(&o));
    let err = stderr(&o);
    assert!(
        err.contains(&format!(
            "chainsocks:   blocked 127.0.0.4:{} ×1 (allowlist) by ",
            refused.port()
        )) && err.contains("fetch.py")
            && err.contains("the command exited 0, exit status 3"),
        "{err}"
    );
    assert!(refused.peers().is_empty());
    // Nothing blocked: 0, and nothing printed about blocks.
    let o = status(&[allowed.url("/f")], 0);
    assert_eq!(o.status.code(), Some(0), "{}", show(&o));
    assert!(!stderr(&o).contains("blocked"), "{}", show(&o));
    // The command exits 5 (with a block too): 5, its own status.
    let o = status(&[refused.url("/f")], 5);
    assert_eq!(o.status.code(), Some(5), "{}", show(&o));
    assert!(
        stderr(&o).contains("keeping the command's own status"),
        "{}",
        show(&o)
    );
    // Nothing blocked and the command exits 5: 5.
    let o = status(&[allowed.url("/f")], 5);
    assert_eq!(o.status.code(), Some(5), "{}", show(&o));
    assert!(refused.peers().is_empty());
    assert_eq!(allowed.peers().len(), 3);
}

/// The rows of the Markdown table whose header row is `header`: cells split at unescaped `|`.
fn table_rows(md: &str, header: &str) -> Vec<Vec<String>> {
    let mut lines = md.lines().skip_while(|l| *l != header);
    assert_eq!(lines.next(), Some(header), "no table `{header}` in:\n{md}");
    let sep = lines.next().unwrap_or("");
    assert!(
        sep.starts_with("|---") && sep.matches('|').count() == header.matches('|').count(),
        "{md}"
    );
    lines
        .take_while(|l| l.starts_with('|'))
        .map(|l| {
            let mut cells = Vec::new();
            let mut cur = String::new();
            let mut chars = l.trim().trim_matches('|').chars().peekable();
            while let Some(c) = chars.next() {
                match c {
                    '\\' if chars.peek() == Some(&'|') => {
                        cur.push('|');
                        chars.next();
                    }
                    '|' => cells.push(std::mem::take(&mut cur).trim().to_string()),
                    c => cur.push(c),
                }
            }
            cells.push(cur.trim().to_string());
            assert_eq!(cells.len(), header.matches('|').count() - 1, "{l}");
            cells
        })
        .collect()
}

#[test]
fn github_step_summary_gets_a_markdown_table() {
    netns();
    let allowed = origin("127.0.0.3", "yes");
    let refused = origin("127.0.0.4", "no");
    let Some(Job {
        _dante,
        py,
        l,
        fetch,
    }) = job(&[("a.test", "127.0.0.3")])
    else {
        return;
    };
    let summary = l.dir().join("step_summary.md");
    std::fs::write(&summary, "## an earlier step\n\n").unwrap();
    let a = allowed.url_with_host("a.test", "/f");
    let mut cmd = cs(
        &l,
        &[
            "--allow",
            &format!("a.test:{}", allowed.port()),
            "--summary",
            "--",
        ],
    );
    cmd.env("GITHUB_STEP_SUMMARY", &summary);
    cmd.arg(&py)
        .arg(&fetch)
        .args([a.clone(), a.clone(), refused.url("/f")]);
    let o = run(&mut cmd, T);
    assert!(o.status.success(), "{}", show(&o));
    assert!(
        stderr(&o)
            .contains("summary: 2 connections (0 failed), 1 distinct destinations, 1 blocked"),
        "the plain text stays on stderr: {}",
        show(&o)
    );
    let md = std::fs::read_to_string(&summary).unwrap();
    assert!(
        md.starts_with("## an earlier step\n\n### chainsocks egress\n"),
        "appended: {md}"
    );
    let rows = table_rows(
        &md,
        "| destination | connections | failed | chain | programs |",
    );
    assert_eq!(rows.len(), 1, "{md}");
    let r = &rows[0];
    assert_eq!(r[0], format!("`a.test:{}`", allowed.port()), "{md}");
    assert_eq!(
        (r[1].as_str(), r[2].as_str(), r[3].as_str()),
        ("2", "0", "default")
    );
    assert!(
        r[4].contains("fetch.py") && r[4].contains("python3"),
        "{md}"
    );
    let rows = table_rows(&md, "| destination | attempts | blocked by | programs |");
    assert_eq!(rows.len(), 1, "{md}");
    let r = &rows[0];
    assert_eq!(r[0], format!("`127.0.0.4:{}`", refused.port()), "{md}");
    assert_eq!((r[1].as_str(), r[2].as_str()), ("1", "allowlist"));
    assert!(r[3].contains("fetch.py"), "{md}");
    assert!(refused.peers().is_empty());
}

/// Gives the namespace's `lo` the address 198.51.100.1 (see the module doc).
fn add_test_address() -> Option<IpAddr> {
    let ipcmd = require("ip")?;
    let o = run(
        Command::new(ipcmd).args(["addr", "add", "198.51.100.1/32", "dev", "lo"]),
        T,
    );
    assert!(o.status.success(), "{}", show(&o));
    Some(ip("198.51.100.1"))
}

#[test]
fn udp_datagrams_to_unlisted_destinations_are_refused() {
    // Datagrams travel through dante's UDP association; the allowlist decides which: a
    // loopback destination reached through the proxy is the proxy's loopback, so it is
    // checked like any other.
    netns();
    let Some(addr) = add_test_address() else {
        return;
    };
    let Some(dante) = Dante::start(DanteOpts::default()) else {
        return;
    };
    let Some(py) = require("python3") else { return };
    let listed = UdpSocket::bind((addr, 0)).unwrap();
    let unlisted = UdpSocket::bind((addr, 0)).unwrap();
    let lo = UdpSink::start();
    for s in [&listed, &unlisted] {
        s.set_nonblocking(true).unwrap();
    }
    let l = Launch::new(&format!(
        "connect_timeout_ms = 3000\nproxy = [\"socks5://127.0.0.1:{}\"]\nallow = [\"198.51.100.1:{}\"]\n",
        dante.port(),
        listed.local_addr().unwrap().port()
    ));
    let script = r#"
import socket, sys
def attempt(what, f):
    try:
        f()
        print(what, 'OK', flush=True)
    except OSError as e:
        print(what, 'ERR', e.errno, flush=True)
a = ('198.51.100.1', int(sys.argv[1]))
b = ('198.51.100.1', int(sys.argv[2]))
lo = ('127.0.0.1', int(sys.argv[3]))
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
attempt('sendto-listed', lambda: s.sendto(b'listed', a))
attempt('sendto-unlisted', lambda: s.sendto(b'unlisted', b))
attempt('sendto-loopback', lambda: s.sendto(b'loopback', lo))
c = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
attempt('connect-unlisted', lambda: c.connect(b))
m = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
attempt('sendmsg-unlisted', lambda: m.sendmsg([b'unlisted2'], [], 0, b))
import time; time.sleep(0.5)  # the relay forwards asynchronously: keep the association
"#;
    let report = l.dir().join("r.jsonl");
    let mut cmd = cs(
        &l,
        &["--report", path_str(&report), "--fail-on-block", "--"],
    );
    cmd.arg(&py).args(["-c", script]).args([
        listed.local_addr().unwrap().port().to_string(),
        unlisted.local_addr().unwrap().port().to_string(),
        lo.port().to_string(),
    ]);
    let o = run(&mut cmd, T);
    assert_eq!(
        stdout(&o),
        "sendto-listed OK\nsendto-unlisted ERR 13\nsendto-loopback ERR 13\nconnect-unlisted ERR 13\nsendmsg-unlisted ERR 13\n",
        "{}\n{}",
        show(&o),
        l.log()
    );
    assert_eq!(o.status.code(), Some(3), "UDP blocks count: {}", show(&o));
    let mut buf = [0u8; 64];
    listed.set_nonblocking(false).unwrap();
    listed
        .set_read_timeout(Some(std::time::Duration::from_secs(5)))
        .unwrap();
    let n = listed.recv(&mut buf).expect("the listed datagram arrived");
    assert_eq!(&buf[..n], b"listed");
    assert!(
        unlisted.recv(&mut buf).is_err(),
        "the unlisted destination received nothing"
    );
    assert!(
        lo.datagrams().is_empty(),
        "loopback through the proxy is checked too"
    );
    let recs = std::fs::read_to_string(&report).unwrap();
    let unlisted_port = format!("\"port\":{}", unlisted.local_addr().unwrap().port());
    assert_eq!(
        recs.lines()
            .filter(|r| r.contains("\"kind\":\"udp\"")
                && r.contains(&unlisted_port)
                && r.contains("\"rule\":\"allowlist\"")
                && r.contains("\"result\":\"EACCES\""))
            .count(),
        3,
        "{recs}"
    );
    assert!(
        recs.lines().any(|r| r.contains("\"kind\":\"udp\"")
            && r.contains(&format!("\"port\":{}", listed.local_addr().unwrap().port()))
            && r.contains("\"rule\":\"allow 1\"")
            && r.contains("\"result\":\"ok\"")),
        "{recs}"
    );
}

/// A TCP server on `addr` that answers `direct-ok` and records its peers.
struct Listener {
    port: u16,
    peers: Arc<Mutex<Vec<SocketAddr>>>,
}

impl Listener {
    fn start(addr: IpAddr) -> Listener {
        let l = TcpListener::bind((addr, 0)).unwrap();
        let port = l.local_addr().unwrap().port();
        let peers: Arc<Mutex<Vec<SocketAddr>>> = Arc::default();
        let p2 = peers.clone();
        std::thread::spawn(move || {
            for s in l.incoming() {
                let Ok(mut s) = s else { continue };
                if let Ok(peer) = s.peer_addr() {
                    p2.lock().unwrap().push(peer);
                }
                let _ = s.write_all(b"direct-ok");
                let _ = s.shutdown(std::net::Shutdown::Write);
                let mut sink = Vec::new();
                let _ = s.read_to_end(&mut sink);
            }
        });
        Listener { port, peers }
    }

    fn peers(&self) -> Vec<SocketAddr> {
        self.peers.lock().unwrap().clone()
    }
}

#[test]
fn a_direct_entry_goes_direct_under_deny_direct_and_through_a_forwarder_with_isolate() {
    netns();
    let Some(addr) = add_test_address() else {
        return;
    };
    let Some(dante) = Dante::start(DanteOpts::default()) else {
        return;
    };
    let Some(py) = require("python3") else { return };
    let direct = Listener::start(addr);
    let unlisted = Listener::start(addr);
    let l = Launch::new(&format!(
        "connect_timeout_ms = 3000\nproxy = [\"socks5://127.0.0.1:{}\"]\nallow = [{{ dest = \"198.51.100.1:{}\", direct = true }}]\n",
        dante.port(),
        direct.port
    ));
    let script = r#"
import socket, sys
for port in sys.argv[1:]:
    try:
        s = socket.create_connection(('198.51.100.1', int(port)), timeout=10)
        print('OK', s.recv(64).decode(), flush=True)
    except OSError as e:
        print('ERR', e.errno, flush=True)
"#;
    let ports = [direct.port.to_string(), unlisted.port.to_string()];
    for mode in ["--deny-direct", "--isolate"] {
        let mut cmd = cs(&l, &[mode, "--"]);
        cmd.arg(&py).args(["-c", script]).args(&ports);
        let o = run(&mut cmd, T);
        assert_eq!(
            stdout(&o),
            "OK direct-ok\nERR 13\n",
            "{mode}: {}\n{}",
            show(&o),
            l.log()
        );
    }
    assert_eq!(direct.peers().len(), 2);
    assert!(
        direct
            .peers()
            .iter()
            .all(|p| p.ip().to_string() != "127.0.0.2"),
        "not through dante: {:?}",
        direct.peers()
    );
    assert!(
        unlisted.peers().is_empty(),
        "the unlisted one received nothing"
    );
    // A direct entry that is not one destination cannot be forwarded under --isolate.
    let wide = Launch::new(&format!(
        "proxy = [\"socks5://127.0.0.1:{}\"]\nallow = [{{ dest = \"198.51.100.0/24:5432\", direct = true }}]\n",
        dante.port()
    ));
    let mut cmd = cs(&wide, &["--isolate", "--", "true"]);
    let o = run(&mut cmd, T);
    assert_eq!(o.status.code(), Some(2), "{}", show(&o));
    assert!(
        stderr(&o).contains("is marked direct but is not one HOST:PORT"),
        "{}",
        show(&o)
    );
}
