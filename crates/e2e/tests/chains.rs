//! End-to-end tests of chains, rules and configuration (issue 4): chain modes against real
//! servers with one proxy down, the same driven by a proxychains.conf, rules (direct / block /
//! named chain) by IP, CIDR+port and domain glob, `chainsocks check`, quick config from the
//! command line and the environment, and the launcher's configuration errors.

use std::collections::HashMap;
use std::process::{Command, Output};
use std::time::Duration;

use e2e::*;

const T: Duration = Duration::from_secs(60);

/// Source addresses of the echo server's peers, counted: each proxy connects out from its
/// own address (dante 127.0.0.2, microsocks 127.0.0.3, tinyproxy 127.0.0.4), a direct
/// connection comes from 127.0.0.1.
fn by_source(echo: &Echo) -> HashMap<String, usize> {
    let mut m = HashMap::new();
    for p in echo.peers() {
        *m.entry(p.ip().to_string()).or_insert(0) += 1;
    }
    m
}

struct Three {
    dante: Dante,
    ms: Microsocks,
    tp: Tinyproxy,
    down: u16,
}

fn three() -> Option<Three> {
    Some(Three {
        dante: Dante::start(DanteOpts::default())?,
        ms: Microsocks::start(MicrosocksOpts::default())?,
        tp: Tinyproxy::start(TinyproxyOpts::default())?,
        down: free_port(),
    })
}

impl Three {
    /// The proxy list with the dead one in position `dead_at`.
    fn urls(&self, dead_at: usize) -> Vec<String> {
        let mut v = vec![
            format!("socks5://127.0.0.1:{}", self.dante.port()),
            format!("socks5://127.0.0.1:{}", self.ms.port()),
            format!("http://127.0.0.1:{}", self.tp.port()),
        ];
        v.insert(dead_at, format!("socks5://127.0.0.1:{}", self.down));
        v
    }
}

fn toml_chain(mode: &str, len: Option<usize>, urls: &[String]) -> String {
    let list: Vec<String> = urls.iter().map(|u| format!("{u:?}")).collect();
    format!(
        "chain = \"{mode}\"\n{}connect_timeout_ms = 2000\nhandshake_timeout_ms = 8000\nproxy = [{}]\n",
        len.map(|n| format!("chain_len = {n}\n"))
            .unwrap_or_default(),
        list.join(", ")
    )
}

fn echo_n(l: &Launch, echo: &Echo, n: usize) -> Output {
    let mut c = l.csclient();
    c.args([
        "echo",
        "127.0.0.1",
        &echo.port().to_string(),
        "--count",
        &n.to_string(),
    ]);
    run(&mut c, T)
}

#[test]
fn strict_chain_with_a_dead_proxy_fails() {
    netns();
    let echo = Echo::start();
    let Some(s) = three() else { return };
    for dead_at in [0, 1] {
        let l = Launch::new(&toml_chain("strict", None, &s.urls(dead_at)));
        let o = echo_n(&l, &echo, 1);
        assert!(
            stdout(&o).contains("errno=ECONNREFUSED"),
            "dead at {dead_at}: {}\n{}",
            show(&o),
            l.log()
        );
    }
    assert!(echo.peers().is_empty());
}

#[test]
fn dynamic_chain_skips_the_dead_proxy() {
    netns();
    let echo = Echo::start();
    let Some(s) = three() else { return };
    for dead_at in [0, 2] {
        let l = Launch::new(&toml_chain("dynamic", None, &s.urls(dead_at)));
        let o = echo_n(&l, &echo, 5);
        assert!(o.status.success(), "{}\n{}", show(&o), l.log());
        // Marked dead once, then skipped for every later connection (shared health).
        assert_eq!(l.log().matches("looks dead").count(), 1, "{}", l.log());
    }
    // All three live proxies in order: the last hop is tinyproxy.
    assert_eq!(
        by_source(&echo).get("127.0.0.4"),
        Some(&10),
        "{:?}",
        by_source(&echo)
    );
}

#[test]
fn random_and_round_robin_use_every_live_proxy_never_the_dead_one() {
    netns();
    let Some(s) = three() else { return };
    for mode in ["random", "round_robin"] {
        let echo = Echo::start();
        let l = Launch::new(&toml_chain(mode, Some(1), &s.urls(1)));
        let o = echo_n(&l, &echo, 100);
        assert!(o.status.success(), "{mode}: {}\n{}", show(&o), l.log());
        let seen = by_source(&echo);
        assert_eq!(seen.values().sum::<usize>(), 100, "{mode}: {seen:?}");
        for src in ["127.0.0.2", "127.0.0.3", "127.0.0.4"] {
            assert!(
                seen.get(src).copied().unwrap_or(0) >= 15,
                "{mode}: {src} barely used: {seen:?}"
            );
        }
        assert!(
            !seen.contains_key("127.0.0.1"),
            "{mode}: a direct connection: {seen:?}"
        );
        assert!(
            l.log().matches("looks dead").count() <= 1,
            "{mode}: dead proxy retried:\n{}",
            l.log()
        );
        if mode == "round_robin" {
            // Three live proxies in turn: each within one of a third.
            for src in ["127.0.0.2", "127.0.0.3", "127.0.0.4"] {
                let n = seen.get(src).copied().unwrap_or(0);
                assert!((32..=35).contains(&n), "round robin uneven: {seen:?}");
            }
        }
    }
}

#[test]
fn dead_marks_are_shared_by_the_process_tree() {
    netns();
    let echo = Echo::start();
    let Some(s) = three() else { return };
    let l = Launch::new(&toml_chain("dynamic", None, &s.urls(0)));
    let cs = csclient();
    let port = echo.port();
    let mut c = l.cmd("sh");
    c.args([
        "-c",
        &format!(
            "for i in 1 2 3 4; do {} echo 127.0.0.1 {port} || exit 1; done",
            cs.display()
        ),
    ]);
    let o = run(&mut c, T);
    assert!(o.status.success(), "{}\n{}", show(&o), l.log());
    assert_eq!(
        l.log().matches("looks dead").count(),
        1,
        "four processes, one dead mark:\n{}",
        l.log()
    );
}

#[test]
fn target_refused_is_not_retried_on_another_chain() {
    netns();
    let Some(s) = three() else { return };
    let mut live = s.urls(0);
    live.remove(0);
    let l = Launch::new(&toml_chain("dynamic", None, &live));
    let mut c = l.csclient();
    c.args(["connect", "127.0.0.1", &free_port().to_string()]);
    let o = run(&mut c, T);
    assert!(!o.status.success(), "{}", show(&o));
    assert!(
        !l.log().contains("looks dead"),
        "a refused target must not mark proxies dead:\n{}",
        l.log()
    );
}

#[test]
fn proxychains_conf_drives_the_same_chains() {
    netns();
    let Some(s) = three() else { return };
    let conf = |mode: &str, extra: &str| {
        format!(
            "# a proxychains.conf\n{mode}\n{extra}tcp_connect_time_out 2000\ntcp_read_time_out 8000\nquiet_mode\n\n[ProxyList]\nsocks5 127.0.0.1 {}\nsocks5 127.0.0.1 {}\nsocks5 127.0.0.1 {}\nhttp 127.0.0.1 {}\n",
            s.down,
            s.dante.port(),
            s.ms.port(),
            s.tp.port()
        )
    };
    let dir = TempDir::new("pxconf");
    // strict: the first proxy is dead.
    let echo = Echo::start();
    let f = dir.write("strict.conf", conf("strict_chain", "").as_bytes());
    let o = run(
        clean(Command::new(chainsocks_bin()))
            .arg("-f")
            .arg(&f)
            .arg(csclient())
            .args(["connect", "127.0.0.1", &echo.port().to_string()]),
        T,
    );
    assert!(stdout(&o).contains("errno=ECONNREFUSED"), "{}", show(&o));
    // dynamic: skips it.
    let f = dir.write("dynamic.conf", conf("dynamic_chain", "").as_bytes());
    let o = run(
        clean(Command::new(chainsocks_bin()))
            .arg("-f")
            .arg(&f)
            .arg(csclient())
            .args([
                "echo",
                "127.0.0.1",
                &echo.port().to_string(),
                "--count",
                "3",
            ]),
        T,
    );
    assert!(o.status.success(), "{}", show(&o));
    assert!(
        String::from_utf8_lossy(&o.stderr).is_empty()
            || !String::from_utf8_lossy(&o.stderr).contains(" ok"),
        "quiet_mode: {}",
        show(&o)
    );
    assert_eq!(by_source(&echo).get("127.0.0.4"), Some(&3));
    // round robin over the live ones.
    let echo = Echo::start();
    let f = dir.write(
        "rr.conf",
        conf("round_robin_chain", "chain_len = 1\n").as_bytes(),
    );
    let o = run(
        clean(Command::new(chainsocks_bin()))
            .arg("-f")
            .arg(&f)
            .arg(csclient())
            .args([
                "echo",
                "127.0.0.1",
                &echo.port().to_string(),
                "--count",
                "30",
            ]),
        T,
    );
    assert!(o.status.success(), "{}", show(&o));
    let seen = by_source(&echo);
    for src in ["127.0.0.2", "127.0.0.3", "127.0.0.4"] {
        assert!(seen.get(src).copied().unwrap_or(0) >= 8, "{seen:?}");
    }
    // The same file through $PROXYCHAINS_CONF_FILE, and converted to TOML.
    let echo = Echo::start();
    let mut c = clean(Command::new(chainsocks_bin()));
    c.env("PROXYCHAINS_CONF_FILE", dir.join("dynamic.conf"))
        .arg(csclient())
        .args(["connect", "127.0.0.1", &echo.port().to_string()]);
    let o = run(&mut c, T);
    assert!(o.status.success(), "{}", show(&o));
    let o = run(
        clean(Command::new(chainsocks_bin()))
            .args(["config", "convert"])
            .arg(dir.join("dynamic.conf")),
        T,
    );
    let toml = stdout(&o);
    assert!(
        toml.contains("chain = \"dynamic\"") && toml.contains("type = \"socks5h\""),
        "{toml}"
    );
    let back = dir.write("converted.toml", toml.as_bytes());
    let o = run(
        clean(Command::new(chainsocks_bin()))
            .arg("-f")
            .arg(&back)
            .arg(csclient())
            .args(["connect", "127.0.0.1", &echo.port().to_string()]),
        T,
    );
    assert!(o.status.success(), "{}", show(&o));
}

#[test]
fn debian_sample_proxychains_conf_is_read_as_is() {
    let Some(sample) = ["/etc/proxychains4.conf", "/etc/proxychains.conf"]
        .iter()
        .find(|p| std::path::Path::new(p).exists())
    else {
        assert!(!is_ci(), "proxychains4 is not installed (CI=true)");
        eprintln!("SKIP: no Debian proxychains sample");
        return;
    };
    let o = run(
        clean(Command::new(chainsocks_bin())).args(["-f", sample, "config", "show"]),
        T,
    );
    assert!(o.status.success(), "{}", show(&o));
    let out = stdout(&o);
    assert!(
        out.contains("chain = \"strict\"") && out.contains("9050"),
        "{out}"
    );
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("remote_dns_subnet"),
        "{}",
        show(&o)
    );
}

#[test]
fn rules_direct_block_and_named_chains() {
    netns();
    let echo = Echo::start();
    let echo2 = Echo::start();
    let origin = HttpOrigin::start(vec![("/f".into(), b"hello".to_vec())]);
    let hosts = vec![
        ("origin.test".to_string(), "127.0.0.1".parse().unwrap()),
        ("git.corp.test".to_string(), "127.0.0.1".parse().unwrap()),
    ];
    let Some(dante) = Dante::start(DanteOpts {
        hosts: hosts.clone(),
        ..Default::default()
    }) else {
        return;
    };
    let Some(ms) = Microsocks::start(MicrosocksOpts {
        hosts,
        ..Default::default()
    }) else {
        return;
    };
    let l = Launch::new(&format!(
        r#"
proxy = ["socks5://127.0.0.1:{dp}"]
[chains.corp]
proxy = ["socks5://127.0.0.1:{mp}"]
[[rule]]
dest = "127.0.0.1:{direct}"
action = "direct"
[[rule]]
dest = "127.0.0.0/8:{blocked}"
action = "block"
[[rule]]
dest = "*.corp.test"
chain = "corp"
"#,
        dp = dante.port(),
        mp = ms.port(),
        direct = echo.port(),
        blocked = echo2.port(),
    ));
    // IP + port rule: direct (the echo server sees the client itself).
    let o = echo_n(&l, &echo, 2);
    assert!(o.status.success(), "{}\n{}", show(&o), l.log());
    assert_eq!(
        by_source(&echo).get("127.0.0.1"),
        Some(&2),
        "{:?}",
        by_source(&echo)
    );
    assert!(l.log().contains("direct (rule 1)"), "{}", l.log());
    // CIDR + port rule: blocked with EACCES, nothing reaches the server.
    let o = echo_n(&l, &echo2, 1);
    assert!(stdout(&o).contains("errno=EACCES"), "{}", show(&o));
    assert!(echo2.peers().is_empty());
    assert!(l.log().contains("blocked (rule 2)"), "{}", l.log());
    // Domain glob with remote DNS: git.corp.test goes through the corp chain (microsocks),
    // origin.test through the default chain (dante).
    let Some(curl) = require("curl") else { return };
    for (host, via) in [("git.corp.test", "127.0.0.3"), ("origin.test", "127.0.0.2")] {
        let mut c = l.cmd(&curl);
        c.args(["-sS", "--fail", &origin.url_with_host(host, "/f")]);
        let o = run(&mut c, T);
        assert_eq!(stdout(&o), "hello", "{host}: {}\n{}", show(&o), l.log());
        let last = origin.requests().last().cloned();
        assert_eq!(
            last.map(|(p, _)| p.ip().to_string()),
            Some(via.to_string()),
            "{host}"
        );
    }
    assert!(l.log().contains("[corp by rule 3]"), "{}", l.log());
    assert!(
        ms.log().contains("connected to git.corp.test:"),
        "{}",
        ms.log()
    );
}

#[test]
fn localnet_and_dnat() {
    netns();
    let echo = Echo::start();
    let real = Echo::start();
    let Some(dante) = Dante::start(DanteOpts::default()) else {
        return;
    };
    let l = Launch::new(&format!(
        "localnet = [\"127.0.0.0/8:{lp}\"]\nproxy = [\"socks5://127.0.0.1:{dp}\"]\n[[dnat]]\nfrom = \"10.20.30.40:80\"\nto = \"127.0.0.1:{rp}\"\n",
        lp = echo.port(),
        dp = dante.port(),
        rp = real.port()
    ));
    let o = echo_n(&l, &echo, 1);
    assert!(o.status.success(), "{}", show(&o));
    assert_eq!(
        by_source(&echo).get("127.0.0.1"),
        Some(&1),
        "localnet goes direct"
    );
    // 10.20.30.40:80 is rewritten, then proxied (never sent to 10.20.30.40).
    let mut c = l.csclient();
    c.args(["echo", "10.20.30.40", "80"]);
    let o = run(&mut c, T);
    assert!(o.status.success(), "{}\n{}", show(&o), l.log());
    assert_eq!(
        by_source(&real).get("127.0.0.2"),
        Some(&1),
        "{:?}",
        by_source(&real)
    );
}

#[test]
fn quick_config_from_flags_and_environment() {
    netns();
    let echo = Echo::start();
    let blocked = Echo::start();
    let Some(ms) = Microsocks::start(MicrosocksOpts::default()) else {
        return;
    };
    let url = format!("socks5://127.0.0.1:{}", ms.port());
    // $CHAINSOCKS_PROXY, in a grandchild that changed directory.
    let mut c = clean(Command::new(chainsocks_bin()));
    c.env("CHAINSOCKS_PROXY", &url)
        .args([
            "--block",
            &format!("127.0.0.1:{}", blocked.port()),
            "--direct",
            "10.0.0.0/8",
            "sh",
            "-c",
        ])
        .arg(format!(
            "cd / && {cs} echo 127.0.0.1 {e} && {cs} connect 127.0.0.1 {b}; echo rc=$?",
            cs = csclient().display(),
            e = echo.port(),
            b = blocked.port()
        ));
    let o = run(&mut c, T);
    let out = stdout(&o);
    assert!(
        out.contains("ok 1") && out.contains("errno=EACCES") && out.contains("rc=1"),
        "{}",
        show(&o)
    );
    assert_eq!(by_source(&echo).get("127.0.0.3"), Some(&1));
    assert!(blocked.peers().is_empty());
    // --chain-mode with two -x, the first dead.
    let mut c = clean(Command::new(chainsocks_bin()));
    c.args([
        "-q",
        "--chain-mode",
        "dynamic",
        "-x",
        &format!("socks5://127.0.0.1:{}", free_port()),
        "-x",
        &url,
    ])
    .arg(csclient())
    .args(["connect", "127.0.0.1", &echo.port().to_string()]);
    let o = run(&mut c, T);
    assert!(o.status.success(), "{}", show(&o));
}

#[test]
fn check_reports_working_and_broken_chains() {
    netns();
    let echo = Echo::start();
    let Some(dante) = Dante::start(DanteOpts::default()) else {
        return;
    };
    let Some(ms) = Microsocks::start(MicrosocksOpts::default()) else {
        return;
    };
    let good = format!("socks5://127.0.0.1:{}", dante.port());
    let target = format!("127.0.0.1:{}", echo.port());
    let o = run(
        clean(Command::new(chainsocks_bin())).args([
            "-x",
            &good,
            "-x",
            &format!("socks5://127.0.0.1:{}", ms.port()),
            "check",
            "--target",
            &target,
        ]),
        T,
    );
    let out = stdout(&o);
    assert_eq!(o.status.code(), Some(0), "{}", show(&o));
    assert!(
        out.contains("chain default (strict)") && out.contains(": ok in"),
        "{out}"
    );
    assert!(
        out.contains("hop 1: socks5://127.0.0.1")
            && out.contains("auth: no auth")
            && out.contains("greeting"),
        "{out}"
    );
    // dante takes a pipelined handshake, microsocks does not.
    let lines: Vec<&str> = out.lines().filter(|l| l.contains("pipelining")).collect();
    assert_eq!(lines.len(), 2, "{out}");
    assert!(lines[0].contains("yes"), "{out}");
    assert!(lines[1].contains("no"), "{out}");
    // A broken chain: the second hop refuses (nothing listens), exit 1, reply code shown.
    let dead = free_port();
    let o = run(
        clean(Command::new(chainsocks_bin())).args([
            "-x",
            &good,
            "-x",
            &format!("socks5://127.0.0.1:{dead}"),
            "check",
            "--target",
            &target,
            "--json",
            "--no-probe",
        ]),
        T,
    );
    assert_eq!(o.status.code(), Some(1), "{}", show(&o));
    let out = stdout(&o);
    assert!(
        out.contains("\"ok\": false") && out.contains("SOCKS5 reply 0x05"),
        "{out}"
    );
    // --target is required.
    let o = run(
        clean(Command::new(chainsocks_bin())).args(["-x", &good, "check"]),
        T,
    );
    assert_eq!(o.status.code(), Some(2), "{}", show(&o));
}

#[test]
fn configuration_errors_are_precise() {
    let dir = TempDir::new("cfgerr");
    let cases: &[(&str, &str, &str)] = &[
        (
            "proxy = [\"socks5://h:1\"]\nchain = \"zigzag\"\n",
            "bad.toml:2:",
            "strict",
        ),
        (
            "proxy = [\"socks5://h:1\"]\n[[rule]]\ndest = \"*\"\nchain = \"nope\"\n",
            "bad.toml:4:",
            "unknown chain `nope`",
        ),
        (
            "proxy = [\"socks5://h:1\"]\n[[rule]]\ndest = \"10.0.0.0/99\"\naction = \"block\"\n",
            "bad.toml:3:",
            "bad destination",
        ),
        (
            "proxy = [\"socks5://h:1\"]\n[[rule]]\ndest = \"*\"\n",
            "bad.toml",
            "needs `action",
        ),
        (
            "proxy = [\"socks5://h:1\"]\nlocalnet = [\"10.0.0.0/8:x\"]\n",
            "bad.toml:2:",
            "bad port",
        ),
        (
            "proxy = [\"socks5://h:1\"]\nfake_ip_range = \"224.0.0.0/8\"\n",
            "bad.toml",
            "multicast",
        ),
        (
            "proxy = [\"ftp://h:1\"]\n",
            "bad.toml:1:",
            "accepted: socks4, socks4a, socks5, socks5h, http, raw",
        ),
        (
            "strict_chain\nbogus_option\n[ProxyList]\nsocks5 127.0.0.1 1080\n",
            "bad.toml:2:",
            "unknown directive",
        ),
        (
            "strict_chain\n[ProxyList]\nsocks9 127.0.0.1 1080\n",
            "bad.toml:3:1:",
            "socks4, socks5, http, raw",
        ),
    ];
    for (text, loc, msg) in cases {
        let f = dir.write("bad.toml", text.as_bytes());
        let o = run(
            clean(Command::new(chainsocks_bin()))
                .arg("-f")
                .arg(&f)
                .arg("true"),
            T,
        );
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(2), "{text}: {}", show(&o));
        assert!(err.contains(loc) && err.contains(msg), "{text}:\n{err}");
    }
    // A password in a world-readable file: a warning, not an error.
    let f = dir.write("pw.toml", b"proxy = [\"socks5://u:secret@127.0.0.1:1\"]\n");
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o644)).unwrap();
    let o = run(
        clean(Command::new(chainsocks_bin()))
            .arg("-f")
            .arg(&f)
            .arg("true"),
        T,
    );
    assert!(o.status.success(), "{}", show(&o));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("readable by every user") && !err.contains("secret"),
        "{err}"
    );
    std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o600)).unwrap();
    let o = run(
        clean(Command::new(chainsocks_bin()))
            .arg("-f")
            .arg(&f)
            .arg("true"),
        T,
    );
    assert!(
        !String::from_utf8_lossy(&o.stderr).contains("readable"),
        "{}",
        show(&o)
    );
}

#[test]
fn pipelined_handshakes_through_real_servers() {
    netns();
    let data = random_bytes(1 << 20, 9);
    let sha = sha256_hex(&data);
    let origin = HttpOrigin::start(vec![("/big".into(), data)]);
    let Some(d1) = Dante::start(DanteOpts::default()) else {
        return;
    };
    let Some(ssh) = SshSocks::start(SshOpts::default()) else {
        return;
    };
    let Some(d2) = Dante::start(DanteOpts {
        external: "127.0.0.5".parse().unwrap(),
        ..Default::default()
    }) else {
        return;
    };
    let Some(ms) = Microsocks::start(MicrosocksOpts::default()) else {
        return;
    };
    // A fully pipelined 3-hop chain: every hop's greeting and request in one write.
    let urls: Vec<String> = [d1.port(), ssh.port(), d2.port()]
        .iter()
        .map(|p| format!("socks5://127.0.0.1:{p}?pipeline=1"))
        .collect();
    let l = Launch::chain(&urls);
    let Some(curl) = require("curl") else { return };
    let mut c = l.cmd(&curl);
    c.args(["-sS", "--fail", &origin.url("/big")]);
    c.env("CHAINSOCKS_LOG", "debug");
    let o = run(&mut c, T);
    assert_eq!(sha256_hex(&o.stdout), sha, "{}\n{}", show(&o), l.log());
    assert!(
        origin
            .requests()
            .iter()
            .all(|(p, _)| p.ip().to_string() == "127.0.0.5")
    );
    assert!(l.log().contains("hop 3 request"), "{}", l.log());
    // microsocks drops what follows the greeting: pipelined, it fails at the deadline (never
    // a wrong success); in safe mode it works.
    let echo = Echo::start();
    let l = Launch::new(&format!(
        "connect_timeout_ms = 1000\nhandshake_timeout_ms = 1500\nproxy = [\"socks5://127.0.0.1:{}?pipeline=1\"]\n",
        ms.port()
    ));
    let o = echo_n(&l, &echo, 1);
    assert!(
        stdout(&o).contains("errno=ETIMEDOUT"),
        "{}\n{}",
        show(&o),
        l.log()
    );
    let l = Launch::chain(&[format!("socks5://127.0.0.1:{}", ms.port())]);
    let o = echo_n(&l, &echo, 1);
    assert!(o.status.success(), "{}", show(&o));
}

#[test]
fn a_direct_rule_for_a_name_resolves_it_for_real_at_connect_time() {
    netns();
    let echo = Echo::start();
    let Some(dante) = Dante::start(DanteOpts::default()) else {
        return;
    };
    let Some(py) = require("python3") else { return };
    let l = Launch::new(&format!(
        "proxy = [\"socks5://127.0.0.1:{}\"]\n[[rule]]\ndest = \"*.direct.test\"\naction = \"direct\"\n",
        dante.port()
    ));
    // The client's own /etc/hosts (private to it) does not know the name at lookup time, so
    // the name gets a fake address; the program then adds it, and the connect — matched by
    // the domain rule — resolves it for real and goes direct.
    let dir = TempDir::new("late");
    let hosts = dir.write("hosts", b"127.0.0.1 localhost\n");
    let script = format!(
        r#"
import socket
ip = socket.gethostbyname('db.direct.test')
assert ip.startswith('198.18.'), ip
open('/etc/hosts', 'a').write('127.0.0.1 db.direct.test\n')
s = socket.create_connection((ip, {port})); s.sendall(b'hi'); print(s.recv(2).decode(), s.getpeername()[0])
"#,
        port = echo.port()
    );
    let mut c = l.cmd(&py);
    c.args(["-c", &script]);
    private_files(&mut c, &[(hosts, "/etc/hosts")]);
    let o = run(&mut c, T);
    assert!(
        stdout(&o).starts_with("hi 198.18."),
        "getpeername shows the address asked for: {}\n{}",
        show(&o),
        l.log()
    );
    assert_eq!(
        by_source(&echo).get("127.0.0.1"),
        Some(&1),
        "direct, not through dante"
    );
    assert!(
        l.log().contains("db.direct.test:") && l.log().contains("direct (rule 1)"),
        "{}",
        l.log()
    );
}
