//! End-to-end tests of the foundation (issue 2): real programs (curl, python3, csclient) under
//! chainsocks through real servers (danted, microsocks, ssh -D, tinyproxy), each test in its
//! own network namespace with only `lo`.

use std::process::{Command, Output};
use std::time::{Duration, Instant};

use e2e::*;

const MIB: usize = 1 << 20;
const T: Duration = Duration::from_secs(30);

fn big_origin() -> (HttpOrigin, String) {
    let data = random_bytes(MIB, 7);
    let sha = sha256_hex(&data);
    (HttpOrigin::start(vec![("/big".into(), data)]), sha)
}

/// curl under the shim fetching `url`; returns the sha256 of the body.
fn curl_sha(l: &Launch, url: &str) -> Option<String> {
    let curl = require("curl")?;
    let mut c = l.cmd(curl);
    c.args(["-sS", "--fail", "--max-time", "20", url]);
    let o = run(&mut c, T);
    assert!(
        o.status.success(),
        "curl failed: {}\nshim log: {}",
        show(&o),
        l.log()
    );
    Some(sha256_hex(&o.stdout))
}

/// csclient under the shim; returns its output.
fn csclient(l: &Launch, args: &[&str]) -> Output {
    let mut c = l.csclient();
    c.args(args);
    run(&mut c, T)
}

/// A non-blocking connect through the shim succeeds and the socket is still non-blocking.
fn assert_nonblock_kept(l: &Launch, port: u16) {
    let o = csclient(
        l,
        &["connect", "127.0.0.1", &port.to_string(), "--nonblock"],
    );
    assert!(stdout(&o).contains("flags=nonblock-kept"), "{}", show(&o));
}

fn assert_errno(o: &Output, name: &str) {
    assert!(
        !o.status.success(),
        "expected failure with {name}: {}",
        show(o)
    );
    assert!(
        stdout(o).contains(&format!("errno={name}")),
        "expected {name}: {}",
        show(o)
    );
}

fn url(p: &impl ProxyAddr, scheme: &str) -> String {
    format!("{scheme}://127.0.0.1:{}", p.port_())
}

trait ProxyAddr {
    fn port_(&self) -> u16;
}
macro_rules! proxy_addr {
    ($($t:ty),*) => { $(impl ProxyAddr for $t { fn port_(&self) -> u16 { self.port() } })* };
}
proxy_addr!(Dante, Microsocks, SshSocks, Tinyproxy);

#[test]
fn curl_through_dante_socks5_and_socks4() {
    netns();
    let (origin, sha) = big_origin();
    let Some(dante) = Dante::start(DanteOpts::default()) else {
        return;
    };
    for scheme in ["socks5", "socks4"] {
        let l = Launch::chain(&[url(&dante, scheme)]);
        let Some(got) = curl_sha(&l, &origin.url("/big")) else {
            return;
        };
        assert_eq!(got, sha, "{scheme}");
        assert!(
            l.log().contains(&format!(
                "127.0.0.1:{} -> {} ok",
                dante.port(),
                origin.addr()
            )),
            "{}",
            l.log()
        );
    }
    // The origin saw only the proxy (dante's external address), never the client.
    let reqs = origin.requests();
    assert_eq!(reqs.len(), 2);
    assert!(
        reqs.iter()
            .all(|(peer, _)| peer.ip().to_string() == "127.0.0.2"),
        "{reqs:?}"
    );
    assert!(
        dante.wait_log("VER: 4", Duration::from_secs(2)),
        "{}",
        dante.log()
    );
    assert!(dante.log().contains("VER: 5"), "{}", dante.log());
}

#[test]
fn curl_through_microsocks() {
    netns();
    let (origin, sha) = big_origin();
    let Some(ms) = Microsocks::start(MicrosocksOpts::default()) else {
        return;
    };
    let l = Launch::chain(&[url(&ms, "socks5")]);
    let Some(got) = curl_sha(&l, &origin.url("/big")) else {
        return;
    };
    assert_eq!(got, sha);
    assert!(
        origin
            .requests()
            .iter()
            .all(|(p, _)| p.ip().to_string() == "127.0.0.3")
    );
}

#[test]
fn curl_through_ssh_dynamic_forward() {
    netns();
    let (origin, sha) = big_origin();
    let Some(ssh) = SshSocks::start(SshOpts::default()) else {
        return;
    };
    for scheme in ["socks5", "socks4a", "socks4"] {
        let l = Launch::chain(&[url(&ssh, scheme)]);
        let Some(got) = curl_sha(&l, &origin.url("/big")) else {
            return;
        };
        assert_eq!(got, sha, "{scheme}");
    }
    assert_eq!(origin.requests().len(), 3);
}

#[test]
fn curl_through_tinyproxy_http_connect() {
    netns();
    let (origin, sha) = big_origin();
    let Some(tp) = Tinyproxy::start(TinyproxyOpts::default()) else {
        return;
    };
    let l = Launch::chain(&[url(&tp, "http")]);
    let Some(got) = curl_sha(&l, &origin.url("/big")) else {
        return;
    };
    assert_eq!(got, sha);
    assert!(
        origin
            .requests()
            .iter()
            .all(|(p, _)| p.ip().to_string() == "127.0.0.4")
    );
    assert!(
        tp.wait_log("CONNECT", Duration::from_secs(2)),
        "{}",
        tp.log()
    );
}

#[test]
fn three_hop_chain_dante_ssh_microsocks() {
    netns();
    let (origin, sha) = big_origin();
    let Some(dante) = Dante::start(DanteOpts::default()) else {
        return;
    };
    let Some(ssh) = SshSocks::start(SshOpts::default()) else {
        return;
    };
    let Some(ms) = Microsocks::start(MicrosocksOpts::default()) else {
        return;
    };
    let l = Launch::chain(&[
        url(&dante, "socks5"),
        url(&ssh, "socks5"),
        url(&ms, "socks5"),
    ]);
    let Some(got) = curl_sha(&l, &origin.url("/big")) else {
        return;
    };
    assert_eq!(got, sha);
    // Each hop saw the next one: dante was asked for ssh's port, microsocks for the origin,
    // and the origin saw microsocks' outgoing address.
    assert!(
        dante.wait_log(&format!("{}", ssh.port()), Duration::from_secs(2)),
        "{}",
        dante.log()
    );
    assert!(
        ms.wait_log(
            &format!("connected to 127.0.0.1:{}", origin.port()),
            Duration::from_secs(2)
        ),
        "{}",
        ms.log()
    );
    assert!(
        origin
            .requests()
            .iter()
            .all(|(p, _)| p.ip().to_string() == "127.0.0.3")
    );
}

#[test]
fn two_hop_chain_ending_in_http_connect() {
    netns();
    let (origin, sha) = big_origin();
    let Some(dante) = Dante::start(DanteOpts::default()) else {
        return;
    };
    let Some(tp) = Tinyproxy::start(TinyproxyOpts::default()) else {
        return;
    };
    let l = Launch::chain(&[url(&dante, "socks5"), url(&tp, "http")]);
    let Some(got) = curl_sha(&l, &origin.url("/big")) else {
        return;
    };
    assert_eq!(got, sha);
    assert!(
        origin
            .requests()
            .iter()
            .all(|(p, _)| p.ip().to_string() == "127.0.0.4")
    );
}

#[test]
fn user_password_hops() {
    netns();
    let echo = Echo::start();
    let port = echo.port().to_string();
    let auth = Some((DANTE_USER.to_string(), DANTE_PASS.to_string()));
    let Some(dante) = Dante::start(DanteOpts {
        auth: auth.clone(),
        ..Default::default()
    }) else {
        return;
    };
    let creds = ("msuser".to_string(), "mspass".to_string());
    let Some(ms) = Microsocks::start(MicrosocksOpts {
        auth: Some(creds.clone()),
        ..Default::default()
    }) else {
        return;
    };
    let Some(tp) = Tinyproxy::start(TinyproxyOpts {
        auth: Some(("tpuser".into(), "tppass".into())),
        ..Default::default()
    }) else {
        return;
    };
    let cases = [
        (
            format!(
                "socks5://{DANTE_USER}:{DANTE_PASS}@127.0.0.1:{}",
                dante.port()
            ),
            None,
        ),
        (
            format!("socks5://{DANTE_USER}:wrongpw9@127.0.0.1:{}", dante.port()),
            Some("EACCES"),
        ),
        (
            format!("socks5://127.0.0.1:{}", dante.port()),
            Some("EACCES"),
        ),
        (
            format!("socks5://msuser:mspass@127.0.0.1:{}", ms.port()),
            None,
        ),
        (
            format!("socks5://msuser:nope@127.0.0.1:{}", ms.port()),
            Some("EACCES"),
        ),
        (
            format!("http://tpuser:tppass@127.0.0.1:{}", tp.port()),
            None,
        ),
        (
            format!("http://tpuser:nope@127.0.0.1:{}", tp.port()),
            Some("EACCES"),
        ),
        (format!("http://127.0.0.1:{}", tp.port()), Some("EACCES")),
    ];
    for (u, want) in cases {
        let l = Launch::chain(std::slice::from_ref(&u));
        let start = Instant::now();
        let o = csclient(&l, &["echo", "127.0.0.1", &port]);
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "{u}: took {:?}",
            start.elapsed()
        );
        match want {
            None => assert!(o.status.success(), "{u}: {}\n{}", show(&o), l.log()),
            Some(e) => assert_errno(&o, e),
        }
        assert!(
            !l.log().contains("pass@") && !l.log().contains("wrongpw9"),
            "password in log: {}",
            l.log()
        );
    }
}

#[test]
fn proxy_down_fails_fast_with_econnrefused() {
    netns();
    let echo = Echo::start();
    let l = Launch::chain(&[format!("socks5://127.0.0.1:{}", free_port())]);
    let start = Instant::now();
    let o = csclient(&l, &["connect", "127.0.0.1", &echo.port().to_string()]);
    assert!(
        start.elapsed() < Duration::from_secs(1),
        "took {:?}",
        start.elapsed()
    );
    assert_errno(&o, "ECONNREFUSED");
    assert!(
        echo.peers().is_empty(),
        "a failure must never fall back to a direct connection"
    );
}

#[test]
fn dante_block_rule_gives_eacces() {
    netns();
    let echo = Echo::start();
    let Some(dante) = Dante::start(DanteOpts {
        block: vec![block_port(echo.port())],
        ..Default::default()
    }) else {
        return;
    };
    let l = Launch::chain(&[url(&dante, "socks5")]);
    let o = csclient(&l, &["connect", "127.0.0.1", &echo.port().to_string()]);
    assert_errno(&o, "EACCES");
    assert!(echo.peers().is_empty());
    assert!(l.log().contains("not allowed"), "{}", l.log());
}

#[test]
fn target_refused_gives_econnrefused() {
    netns();
    let Some(dante) = Dante::start(DanteOpts::default()) else {
        return;
    };
    let l = Launch::chain(&[url(&dante, "socks5")]);
    let o = csclient(&l, &["connect", "127.0.0.1", &free_port().to_string()]);
    assert_errno(&o, "ECONNREFUSED");
}

#[test]
fn non_blocking_clients() {
    netns();
    let echo = Echo::start();
    let Some(dante) = Dante::start(DanteOpts::default()) else {
        return;
    };
    let l = Launch::chain(&[url(&dante, "socks5")]);
    let o = csclient(
        &l,
        &[
            "echo",
            "127.0.0.1",
            &echo.port().to_string(),
            "--nonblock",
            "--count",
            "20",
            "--bytes",
            "1000",
        ],
    );
    assert!(o.status.success(), "{}", show(&o));
    assert_nonblock_kept(&l, echo.port());
    let Some(py) = require("python3") else { return };
    let script = format!(
        "import asyncio\n\
         async def main():\n\
         \x20   r, w = await asyncio.open_connection('127.0.0.1', {})\n\
         \x20   w.write(b'asyncio-ping'); await w.drain()\n\
         \x20   print((await r.readexactly(12)).decode())\n\
         \x20   w.close()\n\
         asyncio.run(main())\n",
        echo.port()
    );
    let mut c = l.cmd(py);
    c.args(["-c", &script]);
    let o = run(&mut c, T);
    assert_eq!(stdout(&o).trim(), "asyncio-ping", "{}", show(&o));
    // Every one of these went through dante (127.0.0.2), none direct.
    let peers = echo.peers();
    assert_eq!(peers.len(), 22, "{peers:?}");
    assert!(
        peers.iter().all(|p| p.ip().to_string() == "127.0.0.2"),
        "{peers:?}"
    );
}

#[test]
fn ipv6_sockets_through_an_ipv4_proxy() {
    netns();
    let echo6 = Echo::start_v6();
    let echo4 = Echo::start();
    let Some(dante) = Dante::start(DanteOpts::default()) else {
        return;
    };
    let l = Launch::chain(&[url(&dante, "socks5")]);
    // An AF_INET6 socket to [::1] (v4-mapped proxy address on the program's own socket).
    let o = csclient(
        &l,
        &["echo", "::1", &echo6.port().to_string(), "--family", "6"],
    );
    assert!(o.status.success(), "{}\n{}", show(&o), l.log());
    assert_eq!(echo6.peers().len(), 1);
    // An AF_INET6 socket to an IPv4 destination written as ::ffff:127.0.0.1.
    let o = csclient(
        &l,
        &["echo", "127.0.0.1", &echo4.port().to_string(), "--v6sock"],
    );
    assert!(o.status.success(), "{}\n{}", show(&o), l.log());
    assert!(
        echo4
            .peers()
            .iter()
            .all(|p| p.ip().to_string() == "127.0.0.2")
    );
}

#[test]
fn python_and_grandchildren_are_proxied() {
    netns();
    let (origin, sha) = big_origin();
    let Some(ms) = Microsocks::start(MicrosocksOpts::default()) else {
        return;
    };
    let l = Launch::chain(&[url(&ms, "socks5")]);
    let Some(py) = require("python3") else { return };
    let mut c = l.cmd(py);
    c.args([
        "-c",
        &format!(
            "import urllib.request,hashlib;print(hashlib.sha256(urllib.request.urlopen('{}').read()).hexdigest())",
            origin.url("/big")
        ),
    ]);
    let o = run(&mut c, T);
    assert_eq!(stdout(&o).trim(), sha, "{}", show(&o));
    // sh -c 'curl …' in another directory: the config reaches grandchildren.
    let mut c = l.cmd("sh");
    c.args([
        "-c",
        &format!("cd / && curl -sS --fail {} | sha256sum", origin.url("/big")),
    ]);
    let o = run(&mut c, T);
    assert!(stdout(&o).starts_with(&sha), "{}", show(&o));
    assert_eq!(origin.requests().len(), 2);
    assert!(
        origin
            .requests()
            .iter()
            .all(|(p, _)| p.ip().to_string() == "127.0.0.3")
    );
}

#[test]
fn launcher_reports_config_errors_and_runs_nothing() {
    let dir = TempDir::new("cs-cfg");
    let marker = dir.join("ran");
    let cases = [
        (
            "quiet = true\nbogus = 1\nproxy = [\"socks5://127.0.0.1:1\"]\n",
            ":2:1:",
            "bogus",
        ),
        (
            "proxy = [\n  \"sock5://127.0.0.1:1\",\n]\n",
            ":2:",
            "accepted: socks4, socks4a, socks5, socks5h, http",
        ),
        (
            "connect_timeout_ms = \"x\"\nproxy = []\n",
            ":1:",
            "expected u64",
        ),
        ("quiet = true\n", "", "no proxy"),
    ];
    for (toml, loc, msg) in cases {
        let cfg = dir.write("bad.toml", toml.as_bytes());
        let mut c = clean(Command::new(chainsocks_bin()));
        c.arg("-f").arg(&cfg).args(["touch"]).arg(&marker);
        let o = run(&mut c, T);
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(2), "{}", show(&o));
        assert!(
            err.contains(&format!("{}{loc}", cfg.display())),
            "{toml}: {err}"
        );
        assert!(err.contains(msg), "{toml}: {err}");
        assert!(!marker.exists(), "the program must not run");
    }
    let mut c = clean(Command::new(chainsocks_bin()));
    c.args(["-x", "socks9://h:1", "true"]);
    let o = run(&mut c, T);
    assert_eq!(o.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("unknown scheme"),
        "{}",
        show(&o)
    );
}

#[test]
fn launcher_passes_exit_status_and_signals() {
    let l = Launch::chain(&["socks5://127.0.0.1:1".into()]);
    let mut c = l.cmd("sh");
    c.args(["-c", "exit 7"]);
    assert_eq!(run(&mut c, T).status.code(), Some(7));
    let mut c = l.cmd("sh");
    c.args(["-c", "kill -TERM $$"]);
    let o = run(&mut c, T);
    use std::os::unix::process::ExitStatusExt;
    assert_eq!(o.status.signal(), Some(libc::SIGTERM), "{}", show(&o));
    let mut c = l.cmd("/nonexistent/program");
    assert_eq!(run(&mut c, T).status.code(), Some(127));
    // The program sees LD_PRELOAD with the library first, and no proxy config in its env.
    let mut c = l.cmd("sh");
    c.args(["-c", "echo $LD_PRELOAD; env | grep -c socks5 || true"]);
    let o = run(&mut c, T);
    let out = stdout(&o);
    assert!(
        out.lines()
            .next()
            .unwrap_or("")
            .ends_with("/libchainsocks.so"),
        "{out}"
    );
    assert_eq!(
        out.lines().nth(1),
        Some("0"),
        "the config must not be in the environment: {out}"
    );
}

#[test]
fn ipv4_socket_and_an_ipv6_only_proxy_fail_clearly() {
    // An AF_INET socket cannot reach [::1]: the program's socket is never replaced behind its
    // back (that would drop its epoll registration, binds and dups): the connect fails with
    // ENETUNREACH and one log line says why; nothing reaches the destination.
    netns();
    let echo = Echo::start();
    let opts = MicrosocksOpts {
        listen: "::1".parse().unwrap(),
        bind_out: None,
        ..Default::default()
    };
    let Some(ms) = Microsocks::start(opts) else {
        return;
    };
    let l = Launch::chain(&[format!("socks5://[::1]:{}", ms.port())]);
    let o = csclient(
        &l,
        &[
            "connect",
            "127.0.0.1",
            &echo.port().to_string(),
            "--nonblock",
        ],
    );
    assert!(
        stdout(&o).contains("errno=ENETUNREACH"),
        "{}\n{}",
        show(&o),
        l.log()
    );
    assert!(l.log().contains("cannot reach proxy"), "{}", l.log());
    assert!(echo.peers().is_empty(), "nothing went direct");
    // The same proxy serves AF_INET6 sockets (here to an IPv4 destination, v4-mapped).
    let o = csclient(
        &l,
        &[
            "echo",
            "127.0.0.1",
            &echo.port().to_string(),
            "--v6sock",
            "--nonblock",
        ],
    );
    assert!(o.status.success(), "{}\n{}", show(&o), l.log());
    assert_eq!(echo.peers().len(), 1);
}
