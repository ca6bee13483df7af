//! End-to-end tests of the launcher's hardening (issue 10, items 3, 10, 11, 12, 13 and 22): Go
//! programs are recognized, `--isolate` cannot be made to write through another user's
//! symlinks, passwords stay out of `/proc/<pid>/cmdline` and the program's environment, no
//! private file survives the program's signal death, config errors never echo a password, and
//! proxychains.conf passwords are read as proxychains-ng reads them. Each test runs in its own
//! network namespace with the real servers it needs.

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use e2e::*;

const T: Duration = Duration::from_secs(60);

/// A directory like /tmp (mode 1777) for the launcher's TMPDIR.
fn sticky_tmp(prefix: &str) -> TempDir {
    let d = TempDir::new(prefix);
    std::fs::set_permissions(d.path(), std::fs::Permissions::from_mode(0o1777)).unwrap();
    d
}

/// microsocks that accepts only user `csuser` with `pass`.
fn microsocks_with_password(pass: &str) -> Option<Microsocks> {
    Microsocks::start(MicrosocksOpts {
        auth: Some(("csuser".into(), pass.into())),
        ..Default::default()
    })
}

/// The names in `dir`, sorted.
fn entries(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

#[test]
fn go_programs_get_the_static_warning_and_strict_launch_refuses_them() {
    netns();
    let origin = HttpOrigin::start(vec![("/f".into(), b"go".to_vec())]);
    let Some(dante) = Dante::start(DanteOpts::default()) else {
        return;
    };
    // Debian's hey: a dynamically linked Go program (raw syscalls, its own resolver).
    let Some(hey) = require("hey") else { return };
    let l = Launch::chain(&[format!("socks5://127.0.0.1:{}", dante.port())]);
    let peers = || {
        origin
            .peers()
            .iter()
            .map(|p| p.ip().to_string())
            .collect::<Vec<_>>()
    };
    // With the seccomp supervisor (the default) the Go program is proxied: no warning.
    let mut c = l.cmd(&hey);
    c.args(["-n", "1", "-c", "1", &origin.url("/f")]);
    let o = run(&mut c, T);
    assert!(o.status.success(), "{}", show(&o));
    assert!(!stderr(&o).contains("warning"), "{}", show(&o));
    assert_eq!(peers(), ["127.0.0.2"], "through dante");
    // Without it, the launcher warns, and the request goes straight to the origin.
    let mut c = l.cmd_with(&["--no-supervisor"], &hey);
    c.args(["-n", "1", "-c", "1", &origin.url("/f")]);
    let o = run(&mut c, T);
    assert!(o.status.success(), "{}", show(&o));
    assert!(
        stderr(&o).contains(&format!(
            "chainsocks: warning: {} is a Go program (Go makes its own system calls): LD_PRELOAD will not apply: traffic from this program would go direct",
            hey.display()
        )),
        "{}",
        show(&o)
    );
    assert_eq!(peers(), ["127.0.0.2", "127.0.0.1"]);
    let mut c = clean(Command::new(chainsocks_bin()));
    c.arg("-f")
        .arg(&l.config)
        .args(["--strict-launch", "--no-supervisor"])
        .arg(&hey);
    c.args(["-n", "1", "-c", "1", &origin.url("/f")]);
    let o = run(&mut c, T);
    assert_eq!(o.status.code(), Some(2), "{}", show(&o));
    assert!(
        stderr(&o).contains("refusing to run (--strict-launch)")
            && stderr(&o).contains("is a Go program"),
        "{}",
        show(&o)
    );
    assert_eq!(origin.requests().len(), 2, "the refused program never ran");
    // A C program is not a Go program: no warning.
    let Some(curl) = require("curl") else { return };
    let mut c = l.cmd(&curl);
    c.args(["-sS", &origin.url("/f")]);
    let o = run(&mut c, T);
    assert_eq!(stdout(&o), "go", "{}", show(&o));
    assert!(!stderr(&o).contains("warning"), "{}", show(&o));
}

#[test]
fn isolate_as_root_never_writes_through_another_users_files() {
    netns();
    // SAFETY: geteuid cannot fail.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("skipped: needs root");
        return;
    }
    let origin = HttpOrigin::start(vec![("/f".into(), b"still works".to_vec())]);
    let Some(dante) = Dante::start(DanteOpts {
        hosts: vec![("origin.test".into(), "127.0.0.1".parse().unwrap())],
        ..Default::default()
    }) else {
        return;
    };
    let (Some(curl), Some(setpriv), Some(unshare)) =
        (require("curl"), require("setpriv"), require("unshare"))
    else {
        return;
    };
    let tmp = sticky_tmp("cs-tmp-hijack");
    let vdir = TempDir::new("cs-victim");
    let victim = vdir.write("victim", b"root's file\n");
    std::fs::set_permissions(&victim, std::fs::Permissions::from_mode(0o644)).unwrap();
    // Another user (nobody) prepares what the old launcher used: chainsocks-isolate-<pid>/
    // with its files as symlinks to the victim, and chainsocks-report-<pid>.jsonl, for the
    // pids the launcher gets in a fresh pid namespace.
    let plant = format!(
        "set -e; cd {tmp}; for pid in $(seq 1 64); do \
           d=chainsocks-isolate-$pid; mkdir -m 0777 $d; \
           for f in state resolv.conf hosts report.jsonl; do ln -s {v} $d/$f; done; \
           ln -s {v} chainsocks-report-$pid.jsonl; done",
        tmp = tmp.path().display(),
        v = victim.display()
    );
    let o = run(
        Command::new(&setpriv)
            .args([
                "--reuid=65534",
                "--regid=65534",
                "--clear-groups",
                "sh",
                "-c",
            ])
            .arg(&plant),
        T,
    );
    assert!(o.status.success(), "{}", show(&o));
    let planted = entries(tmp.path());
    assert_eq!(planted.len(), 128);
    assert_eq!(
        std::fs::symlink_metadata(tmp.join("chainsocks-isolate-2"))
            .unwrap()
            .uid(),
        65534
    );
    let l = Launch::chain(&[format!("socks5://127.0.0.1:{}", dante.port())]);
    let mut c = clean(Command::new(unshare));
    c.args([
        "--pid",
        "--fork",
        "--mount-proc",
        "sh",
        "-c",
        "\"$@\"; exit $?",
        "sh",
    ])
    .arg(chainsocks_bin())
    .arg("-f")
    .arg(&l.config)
    .args(["--isolate", "--summary"])
    .arg(&curl)
    .args(["-sS", &origin.url_with_host("origin.test", "/f")]);
    c.env("TMPDIR", tmp.path());
    c.env("CHAINSOCKS_LOG_FILE", l.log_path());
    let o = run(&mut c, T);
    assert_eq!(
        std::fs::read_to_string(&victim).unwrap(),
        "root's file\n",
        "the victim is unchanged"
    );
    assert_eq!(stdout(&o), "still works", "{}\n{}", show(&o), l.log());
    assert!(o.status.success(), "{}", show(&o));
    assert!(
        stderr(&o).contains("summary: 1 connections (0 failed)"),
        "{}",
        show(&o)
    );
    assert_eq!(
        origin
            .peers()
            .iter()
            .map(|p| p.ip().to_string())
            .collect::<Vec<_>>(),
        ["127.0.0.2"],
        "through dante"
    );
    assert_eq!(entries(tmp.path()), planted, "nothing of ours left behind");
}

#[test]
fn no_password_in_the_launchers_command_line_or_the_programs_environment() {
    netns();
    const PASS: &str = "Hunter2-cmdline-secret";
    let origin = HttpOrigin::start(vec![("/f".into(), b"authenticated".to_vec())]);
    let Some(ms) = microsocks_with_password(PASS) else {
        return;
    };
    let Some(curl) = require("curl") else { return };
    let url = format!("socks5://csuser:{PASS}@127.0.0.1:{}", ms.port());
    // While the program runs: the launcher's command line (its parent's) and its own
    // environment, then a request through the proxy that needs the password.
    let script = format!(
        "tr '\\0' ' ' < /proc/$PPID/cmdline; echo; tr '\\0' '\\n' < /proc/self/environ; \
         echo; {} -sS {}",
        curl.display(),
        origin.url("/f")
    );
    let forms: [&[&str]; 3] = [&["-x", &url], &[&format!("--proxy={url}")], &["-qx", &url]];
    for args in forms {
        let mut c = clean(Command::new(chainsocks_bin()));
        c.args(args).args(["--", "sh", "-c", &script]);
        // Also set: what the program must not inherit.
        c.env("CHAINSOCKS_PROXY", &url);
        let o = run(&mut c, T);
        let out = stdout(&o);
        assert!(out.ends_with("authenticated"), "{args:?}: {}", show(&o));
        assert!(!out.contains(PASS), "{args:?}: {out}");
        assert!(!out.contains("CHAINSOCKS_PROXY"), "{args:?}: {out}");
        let cmdline = out.lines().next().unwrap_or_default();
        assert!(
            cmdline.contains(&format!(
                "socks5://csuser:{}@127.0.0.1:",
                "*".repeat(PASS.len())
            )) && cmdline.contains("-- sh -c"),
            "{args:?}: the command line keeps its shape: {cmdline}"
        );
    }
    // $CHAINSOCKS_PROXY alone: the program still authenticates, and does not see it.
    let mut c = clean(Command::new(chainsocks_bin()));
    c.args(["sh", "-c", &script]);
    c.env("CHAINSOCKS_PROXY", &url);
    let o = run(&mut c, T);
    let out = stdout(&o);
    assert!(out.ends_with("authenticated"), "{}", show(&o));
    assert!(
        !out.contains(PASS) && !out.contains("CHAINSOCKS_PROXY"),
        "{out}"
    );
    assert_eq!(origin.requests().len(), 4);
    assert!(
        origin
            .peers()
            .iter()
            .all(|p| p.ip().to_string() == "127.0.0.3"),
        "every request through microsocks"
    );
}

#[test]
fn no_private_file_survives_the_programs_signal_death() {
    netns();
    let origin = HttpOrigin::start(vec![("/f".into(), b"x".to_vec())]);
    let Some(dante) = Dante::start(DanteOpts::default()) else {
        return;
    };
    let Some(curl) = require("curl") else { return };
    let l = Launch::chain(&[format!(
        "socks5://{DANTE_USER}:{DANTE_PASS}@127.0.0.1:{}",
        dante.port()
    )]);
    let request = format!("{} -sS -o /dev/null {}", curl.display(), origin.url("/f"));
    for (isolate, sig) in [
        (false, libc::SIGKILL),
        (false, libc::SIGTERM),
        (true, libc::SIGKILL),
        (true, libc::SIGTERM),
    ] {
        let tmp = sticky_tmp("cs-tmp-sig");
        // During the run: what is in TMPDIR, with modes; then the program kills itself.
        let script = format!(
            "{request}; cd \"$TMPDIR\" && find . -mindepth 1 -printf '%p %m\\n' | sort; kill -{sig} $$"
        );
        let mut c = clean(Command::new(chainsocks_bin()));
        c.arg("-f").arg(&l.config).arg("--summary");
        if isolate {
            c.arg("--isolate");
        }
        c.args(["sh", "-c", &script]);
        c.env("TMPDIR", tmp.path());
        let o = run(&mut c, T);
        let what = format!("isolate={isolate} signal {sig}: {}", show(&o));
        assert_eq!(o.status.signal(), Some(sig), "{what}");
        assert!(
            stderr(&o).contains("summary: 1 connections (0 failed)"),
            "{what}"
        );
        let listing = stdout(&o);
        if isolate {
            // One private directory with a random name, closed to others; files 0600.
            let lines: Vec<&str> = listing.lines().collect();
            assert_eq!(lines.len(), 5, "{what}");
            let dir = lines[0]
                .strip_suffix(" 700")
                .unwrap_or_else(|| panic!("{what}"));
            assert!(dir.starts_with("./chainsocks-isolate-"), "{what}");
            assert_eq!(dir.len(), "./chainsocks-isolate-".len() + 24, "{what}");
            for (line, f) in
                lines[1..]
                    .iter()
                    .zip(["hosts", "report.jsonl", "resolv.conf", "state"])
            {
                assert_eq!(*line, format!("{dir}/{f} 600"), "{what}");
            }
        } else {
            assert_eq!(listing, "", "nothing on disk at all: {what}");
        }
        assert_eq!(entries(tmp.path()), Vec::<String>::new(), "{what}");
    }
}

#[test]
fn config_errors_never_echo_a_password() {
    netns();
    let dir = TempDir::new("cs-secret-errors");
    let toml = dir.write(
        "chain.toml",
        "[[proxy]]\ntype = \"socks5\"\nhost = \"127.0.0.1\"\nusername = \"u\"\npassword = 98765432\n",
    );
    let pxc = dir.write(
        "proxychains.conf",
        "strict_chain\n[ProxyList]\nsocks5://u:98765432@127.0.0.1:0\n",
    );
    for (file, at) in [(&toml, ":5:12: "), (&pxc, ":3:1: ")] {
        let mut c = clean(Command::new(chainsocks_bin()));
        c.arg("-f").arg(file).arg("true");
        let o = run(&mut c, T);
        assert_eq!(o.status.code(), Some(2), "{}", show(&o));
        let err = stderr(&o);
        assert!(err.contains(&format!("{}{at}", file.display())), "{err}");
        assert!(!err.contains("98765432"), "{err}");
    }
    // -x too.
    let mut c = clean(Command::new(chainsocks_bin()));
    c.args(["-x", "socks5://u:98765432@127.0.0.1:99999", "true"]);
    let o = run(&mut c, T);
    assert_eq!(o.status.code(), Some(2), "{}", show(&o));
    assert!(
        stderr(&o).contains("-x: bad proxy URL") && !stderr(&o).contains("98765432"),
        "{}",
        show(&o)
    );
}

#[test]
fn proxychains_conf_hash_and_percent_passwords_through_a_real_proxy() {
    netns();
    const PASS: &str = "#50%off";
    let origin = HttpOrigin::start(vec![("/f".into(), b"literal".to_vec())]);
    let Some(ms) = microsocks_with_password(PASS) else {
        return;
    };
    let Some(curl) = require("curl") else { return };
    let port = ms.port();
    let dir = TempDir::new("cs-pxc-pass");
    let conf = |name: &str, line: &str| {
        let p = dir.write(
            name,
            format!("strict_chain\ntcp_connect_time_out 3000\n[ProxyList]\n{line}\n"),
        );
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).unwrap();
        p
    };
    let words = conf(
        "words.conf",
        &format!("socks5 127.0.0.1 {port} csuser {PASS}"),
    );
    let url = conf(
        "url.conf",
        &format!("socks5://csuser:{PASS}@127.0.0.1:{port} # a comment"),
    );
    // %-escapes are not decoded: this is the literal password `%2350%25off`, refused.
    let escaped = conf(
        "escaped.conf",
        &format!("socks5://csuser:%2350%25off@127.0.0.1:{port}"),
    );
    let fetch = |file: &Path| {
        let mut c = clean(Command::new(chainsocks_bin()));
        c.arg("-f")
            .arg(file)
            .arg(&curl)
            .args(["-sS", &origin.url("/f")]);
        run(&mut c, T)
    };
    for f in [&words, &url] {
        let o = fetch(f);
        assert_eq!(stdout(&o), "literal", "{}: {}", f.display(), show(&o));
        assert!(!stderr(&o).contains("warning"), "{}", show(&o));
    }
    let o = fetch(&escaped);
    assert!(!o.status.success(), "{}", show(&o));
    assert_eq!(origin.requests().len(), 2);
    assert!(
        origin
            .peers()
            .iter()
            .all(|p| p.ip().to_string() == "127.0.0.3"),
        "through microsocks"
    );
    // proxychains-ng itself reads the same two files the same way.
    if let Some(pc) = require("proxychains4") {
        for f in [&words, &url] {
            let mut c = clean(Command::new(&pc));
            c.arg("-q")
                .arg("-f")
                .arg(f)
                .arg(&curl)
                .args(["-sS", &origin.url("/f")]);
            let o = run(&mut c, T);
            assert_eq!(
                stdout(&o),
                "literal",
                "proxychains4 {}: {}",
                f.display(),
                show(&o)
            );
        }
        assert_eq!(origin.requests().len(), 4);
    }
}
