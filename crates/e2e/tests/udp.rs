//! End-to-end tests of UDP through SOCKS5 UDP ASSOCIATE (issue 12): real programs (csudp's
//! libc modes, python3, busybox-static, dig) under chainsocks, through two real UDP-capable
//! proxies (danted, shadowsocks-libev's ss-local + ss-server) and two that are not (microsocks
//! answers 07, `ssh -D` closes). The echo origin names the process that sent each datagram:
//! `danted` / `ss-server` proves the proxy carried it; the program's own name would be a leak.
//! Each test runs in its own network namespace with only `lo`.

use std::process::Command;
use std::time::Duration;

use e2e::*;

const T: Duration = Duration::from_secs(60);

fn field<'a>(out: &'a str, key: &str) -> &'a str {
    result_field(out.trim(), key).unwrap_or_else(|| panic!("no {key}= in {out:?}"))
}

fn all_answered(o: &std::process::Output, n: usize, l: &Launch) -> String {
    let out = stdout(o);
    assert!(
        out.starts_with("ok ") && field(&out, "answered") == format!("{n}/{n}"),
        "{}\n{}",
        show(o),
        l.log()
    );
    out
}

fn senders(echo: &UdpEcho) -> Vec<String> {
    let mut s = echo.senders();
    s.dedup();
    s
}

fn dante_launch(extra: &str) -> Option<(Dante, Launch)> {
    let dante = Dante::start(DanteOpts {
        hosts: vec![("udp.test".into(), "127.0.0.1".parse().unwrap())],
        ..Default::default()
    })?;
    let l = Launch::new(&format!(
        "connect_timeout_ms = 3000\nhandshake_timeout_ms = 8000\nproxy = [\"socks5://127.0.0.1:{}\"]\n{extra}",
        dante.port()
    ));
    Some((dante, l))
}

#[test]
fn every_libc_way_of_sending_goes_through_dante_and_shadowsocks() {
    netns();
    let echo = UdpEcho::start();
    let Some((_dante, dl)) = dante_launch("") else {
        return;
    };
    let Some(ss) = Shadowsocks::start(ShadowsocksOpts::default()) else {
        return;
    };
    let sl = Launch::chain(&[format!("socks5://127.0.0.1:{}", ss.port())]);
    for (l, who) in [(&dl, "danted"), (&sl, "ss-server")] {
        for mode in ["sendto", "connected", "sendmsg", "mmsg", "readwrite"] {
            let before = echo.count();
            let mut c = l.csudp();
            c.args([mode, "127.0.0.1", &echo.port().to_string(), "--count", "16"]);
            let o = run(&mut c, T);
            let out = all_answered(&o, 16, l);
            if mode != "connected" && mode != "readwrite" {
                assert_eq!(field(&out, "source"), "ok", "{mode}: {out}");
            } else {
                assert_eq!(field(&out, "peer"), "ok", "{mode}: {out}");
            }
            assert!(echo.wait_count(before + 16, T));
            let mut new: Vec<String> = echo.senders().split_off(before);
            new.dedup();
            assert_eq!(new, [who], "{who} {mode}");
        }
    }
}

#[test]
fn ipv6_names_many_and_large_datagrams() {
    netns();
    let echo = UdpEcho::start();
    let echo6 = UdpEcho::start_v6();
    let Some((dante, l)) = dante_launch("") else {
        return;
    };
    // An IPv6 destination.
    let mut c = l.csudp();
    c.args(["sendto", "::1", &echo6.port().to_string(), "--family", "6"]);
    all_answered(&run(&mut c, T), 1, &l);
    assert_eq!(senders(&echo6), ["danted"]);
    // A name only dante resolves: it travels as ATYP 3; the reply is reported as coming from
    // the name's fake address (the program's own destination).
    let mut c = l.csudp();
    c.args([
        "sendto",
        "udp.test",
        &echo.port().to_string(),
        "--count",
        "3",
    ]);
    let out = all_answered(&run(&mut c, T), 3, &l);
    assert_eq!(field(&out, "source"), "ok", "{out}");
    assert!(dante.log().contains("udp.test"), "{}", dante.log());
    // A thousand datagrams, eight in flight: at least 99 % answered on loopback.
    let mut c = l.csudp();
    c.args([
        "sendto",
        "127.0.0.1",
        &echo.port().to_string(),
        "--count",
        "1000",
        "--window",
        "8",
    ]);
    let o = run(&mut c, T);
    let answered: usize = field(&stdout(&o), "answered")
        .split('/')
        .next()
        .and_then(|n| n.parse().ok())
        .unwrap_or(0);
    assert!(answered >= 990, "{}", show(&o));
    // An 8,000-byte datagram, whole.
    let mut c = l.csudp();
    c.args([
        "connected",
        "127.0.0.1",
        &echo.port().to_string(),
        "--size",
        "8000",
    ]);
    all_answered(&run(&mut c, T), 1, &l);
    assert_eq!(echo.datagrams().last().map(|d| d.payload.len()), Some(8000));
    assert_eq!(senders(&echo), ["danted"]);
}

#[test]
fn python_sees_ordinary_datagrams_and_offload_and_oversize_are_refused() {
    netns();
    let echo = UdpEcho::start();
    let Some((_dante, l)) = dante_launch("") else {
        return;
    };
    let Some(py) = require("python3") else { return };
    let script = format!(
        r#"
import socket, errno, select, os
port = {port}
u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); u.settimeout(5)
u.sendto(b'one', ('127.0.0.1', port))
p = select.poll(); p.register(u, select.POLLIN); assert p.poll(5000), 'readable'
d, src = u.recvfrom(100); assert (d, src) == (b'one', ('127.0.0.1', port)), (d, src)
u.sendmsg([b't', b'wo'], [], 0, ('127.0.0.1', port))
d, anc, flags, src = u.recvmsg(100); assert (d, src) == (b'two', ('127.0.0.1', port)), (d, src)
c = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); c.settimeout(5)
c.connect(('127.0.0.1', port)); c.send(b'three')
assert c.recv(100) == b'three'
assert c.getpeername() == ('127.0.0.1', port), c.getpeername()
assert os.writev(c.fileno(), [b'fo', b'ur']) == 4
a, b = bytearray(2), bytearray(10)
p = select.poll(); p.register(c, select.POLLIN); assert p.poll(5000), 'readable'
assert os.readv(c.fileno(), [a, b]) == 4 and bytes(a + b[:2]) == b'four', (a, b)
# QUIC stacks: no segmentation offload on a proxied socket (one header per datagram)
for opt in (103, 104):   # UDP_SEGMENT, UDP_GRO
    try:
        c.setsockopt(17, opt, 1); raise SystemExit('offload accepted')
    except OSError as e:
        assert e.errno == errno.ENOPROTOOPT, e
# too large once the header is added: EMSGSIZE, never truncated
try:
    c.send(b'x' * 65507); raise SystemExit('oversize sent')
except OSError as e:
    assert e.errno == errno.EMSGSIZE, e
print('ok')
"#,
        port = echo.port()
    );
    let mut c = l.cmd(py);
    c.args(["-c", &script]);
    let o = run(&mut c, T);
    assert_eq!(stdout(&o).trim(), "ok", "{}\n{}", show(&o), l.log());
    assert_eq!(senders(&echo), ["danted"]);
    assert_eq!(echo.count(), 4);
}

#[test]
fn proxies_without_udp_fail_closed_and_rules_apply() {
    netns();
    let echo = UdpEcho::start();
    let Some(ms) = Microsocks::start(MicrosocksOpts::default()) else {
        return;
    };
    let Some(ssh) = SshSocks::start(SshOpts::default()) else {
        return;
    };
    for (url, what) in [
        (format!("socks5://127.0.0.1:{}", ms.port()), "microsocks"),
        (format!("socks5://127.0.0.1:{}", ssh.port()), "ssh -D"),
    ] {
        let l = Launch::chain(&[url]);
        let mut c = l.csudp();
        c.args(["sendto", "127.0.0.1", &echo.port().to_string()]);
        let o = run(&mut c, T);
        assert!(
            stdout(&o).contains("errno=ECONNREFUSED") && stdout(&o).contains("call=sendto"),
            "{what}: {}\n{}",
            show(&o),
            l.log()
        );
        assert!(l.log().contains("no association through"), "{}", l.log());
    }
    // A block rule: EACCES; a direct rule under proxy-only: EACCES.
    let Some((_dante, l)) = dante_launch(&format!(
        "[[rule]]\ndest = \"127.0.0.1:{}\"\naction = \"block\"\n",
        echo.port()
    )) else {
        return;
    };
    let mut c = l.csudp();
    c.args(["connected", "127.0.0.1", &echo.port().to_string()]);
    let o = run(&mut c, T);
    assert!(stdout(&o).contains("errno=EACCES"), "{}", show(&o));
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(
        echo.count(),
        0,
        "nothing reached the origin: {:?}",
        echo.datagrams()
    );
}

/// A chain that cannot carry UDP (two hops, or one without UDP) sends its datagrams through
/// `udp_proxy`; without it they are refused, with a log line that says why.
#[test]
fn udp_proxy_carries_what_the_chain_cannot() {
    netns();
    let echo = UdpEcho::start();
    let port = echo.port().to_string();
    let Some(dante) = Dante::start(DanteOpts::default()) else {
        return;
    };
    let Some(ms) = Microsocks::start(MicrosocksOpts::default()) else {
        return;
    };
    let two_hops = format!(
        "proxy = [\"socks5://127.0.0.1:{}\", \"socks5://127.0.0.1:{}\"]\n",
        ms.port(),
        dante.port()
    );
    let without = Launch::new(&format!(
        "connect_timeout_ms = 3000\nhandshake_timeout_ms = 8000\n{two_hops}"
    ));
    let mut c = without.csudp();
    c.args(["sendto", "127.0.0.1", &port]);
    let o = run(&mut c, T);
    assert!(
        stdout(&o).contains("errno=ENETUNREACH"),
        "{}\n{}",
        show(&o),
        without.log()
    );
    assert!(
        without.log().contains("cannot carry UDP"),
        "{}",
        without.log()
    );
    assert_eq!(echo.count(), 0);
    let with = Launch::new(&format!(
        "connect_timeout_ms = 3000\nhandshake_timeout_ms = 8000\nudp_proxy = \"socks5://127.0.0.1:{}\"\n{two_hops}",
        dante.port()
    ));
    for mode in ["sendto", "connected"] {
        let mut c = with.csudp();
        c.args([mode, "127.0.0.1", &port, "--count", "4"]);
        let o = run(&mut c, T);
        all_answered(&o, 4, &with);
    }
    assert_eq!(senders(&echo), ["danted"]);
    assert_eq!(echo.count(), 8);
}

#[test]
fn a_programs_own_dns_query_is_answered_from_the_fake_table_and_never_leaves() {
    netns();
    let trap = DnsTrap::start();
    let Some((_dante, l)) = dante_launch("") else {
        return;
    };
    let Some(py) = require("python3") else { return };
    let script = r#"
import socket
q = b'\x12\x34\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00\x05mydns\x07example\x00\x00\x01\x00\x01'
ns = [l.split()[1] for l in open('/etc/resolv.conf') if l.startswith('nameserver')][0]
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.settimeout(3)
s.sendto(q, (ns, 53)); a, src = s.recvfrom(512)
print('answer', src[0], src[1], socket.inet_ntoa(a[-4:]), socket.gethostbyname('mydns.example'))
"#;
    let mut c = l.cmd(py);
    c.args(["-c", script]);
    trap.apply(&mut c);
    let o = run(&mut c, T);
    let out = stdout(&o);
    let words: Vec<&str> = out.split_whitespace().collect();
    assert!(
        words.len() == 5 && words[1] == "127.0.0.1" && words[2] == "53",
        "{}\n{}",
        show(&o),
        l.log()
    );
    assert!(words[3].starts_with("198.18."), "{out}");
    assert_eq!(words[3], words[4], "the same table entry as getaddrinfo's");
    trap.assert_no_leak("a program's own DNS query");
}

/// A UDP DNS server on 127.0.0.1 answering every A query with 10.0.0.42 (behind the proxy).
fn tiny_dns() -> u16 {
    let s = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let port = s.local_addr().unwrap().port();
    std::thread::spawn(move || {
        let mut b = [0u8; 512];
        while let Ok((n, from)) = s.recv_from(&mut b) {
            if n < 12 {
                continue;
            }
            // The header and the question only (no EDNS record): then one answer.
            let mut end = 12;
            while end < n && b[end] != 0 {
                end += 1 + b[end] as usize;
            }
            end += 5;
            if end > n {
                continue;
            }
            let mut a = b[..end].to_vec();
            a[2] = 0x81;
            a[3] = 0x80;
            a[7] = 1; // one answer
            a[10] = 0;
            a[11] = 0; // no additional records
            a.extend_from_slice(&[0xc0, 12, 0, 1, 0, 1, 0, 0, 0, 60, 0, 4, 10, 0, 0, 42]);
            let _ = s.send_to(&a, from);
        }
    });
    port
}

#[test]
fn dig_and_busybox_reach_servers_behind_the_proxy_through_the_supervisor() {
    netns();
    let echo = UdpEcho::start();
    let dns_port = tiny_dns();
    let Some((_dante, l)) = dante_launch("") else {
        return;
    };
    // dig sends with raw syscalls: the supervisor connects its socket to the launcher's hub,
    // which carries it through dante's association.
    if let Some(dig) = require("dig") {
        let mut c = l.cmd(&dig);
        c.args([
            "+short",
            "+tries=1",
            "+timeout=3",
            "-p",
            &dns_port.to_string(),
            "@127.0.0.1",
            "anything.test",
            "A",
        ]);
        let o = run(&mut c, T);
        assert_eq!(stdout(&o).trim(), "10.0.0.42", "{}\n{}", show(&o), l.log());
    }
    // A static program (raw syscalls, connected UDP).
    let mut c = l.cmd(env!("CARGO_BIN_EXE_csraw"));
    c.args(["udp", "127.0.0.1", &echo.port().to_string(), "static"]);
    let o = run(&mut c, T);
    assert_eq!(
        stdout(&o).trim(),
        "udp ok reply=static",
        "{}\n{}",
        show(&o),
        l.log()
    );
    assert_eq!(senders(&echo), ["danted"]);
}

/// Datagrams from unconnected sockets of a program the library cannot see: the supervisor reads
/// each destination (sendto's address, sendmsg's and sendmmsg's names in memory, the kernel's
/// AF_UNSPEC reading) and lets the kernel send only what may go direct; a proxied destination
/// cannot be framed there, so the send fails — nothing reaches the origin from the program.
#[test]
fn unconnected_datagrams_the_library_cannot_see_are_refused_or_sent_direct_by_rule() {
    netns();
    let echo = UdpEcho::start();
    let port = echo.port().to_string();
    let Some((_dante, l)) = dante_launch("") else {
        return;
    };
    for how in ["--sendto", "--sendmsg", "--sendmmsg", "--unspec"] {
        let mut c = l.cmd(env!("CARGO_BIN_EXE_csraw"));
        c.args(["udpto", "127.0.0.1", &port, "raw", how]);
        let o = run(&mut c, T);
        assert_eq!(
            stdout(&o).trim(),
            format!("udpto send errno={}", libc::ENETUNREACH),
            "{how}: {}\n{}",
            show(&o),
            l.log()
        );
    }
    assert!(
        l.log()
            .contains("UDP datagram from an unconnected socket to 127.0.0.1:"),
        "{}",
        l.log()
    );
    // The library's own datagrams (framed to dante's relay) are not asked about again, and
    // AF_UNSPEC on an AF_INET socket is read as the kernel reads it (sent like AF_INET).
    let Some(py) = require("python3") else { return };
    let script = format!(
        r#"
import socket, struct, ctypes
libc = ctypes.CDLL(None, use_errno=True)
u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); u.settimeout(5)
sa = struct.pack('=H', 0) + struct.pack('!H', {port}) + socket.inet_aton('127.0.0.1') + bytes(8)
assert libc.sendto(u.fileno(), b'unspec', 6, 0, sa, 16) == 6, ctypes.get_errno()
assert u.recvfrom(100) == (b'unspec', ('127.0.0.1', {port}))
u.sendmsg([b'msg'], [], 0, ('127.0.0.1', {port}))
assert u.recvfrom(100)[0] == b'msg'
print('ok')
"#
    );
    for flags in [&[][..], &["--no-supervisor"][..]] {
        let mut c = l.cmd_with(flags, &py);
        c.args(["-c", &script]);
        let o = run(&mut c, T);
        assert_eq!(
            stdout(&o).trim(),
            "ok",
            "{flags:?}: {}\n{}",
            show(&o),
            l.log()
        );
    }
    assert_eq!(senders(&echo), ["danted"]);
    assert_eq!(echo.count(), 4);
    // A direct rule: the kernel sends the program's own datagram (the origin sees csraw).
    let (_dante2, direct) = dante_launch(&format!(
        "[[rule]]\ndest = \"127.0.0.1:{port}\"\naction = \"direct\"\n"
    ))
    .unwrap();
    for how in ["--sendto", "--sendmsg", "--sendmmsg"] {
        let mut c = direct.cmd(env!("CARGO_BIN_EXE_csraw"));
        c.args(["udpto", "127.0.0.1", &port, how, how]);
        let o = run(&mut c, T);
        assert_eq!(
            stdout(&o).trim(),
            format!("udpto ok reply={how}"),
            "{}\n{}",
            show(&o),
            direct.log()
        );
    }
    assert_eq!(senders(&echo), ["danted", "csraw"]);
    // A block rule: EACCES, from every call.
    let (_dante3, block) = dante_launch(&format!(
        "[[rule]]\ndest = \"127.0.0.1:{port}\"\naction = \"block\"\n"
    ))
    .unwrap();
    for how in ["--sendto", "--sendmmsg"] {
        let mut c = block.cmd(env!("CARGO_BIN_EXE_csraw"));
        c.args(["udpto", "127.0.0.1", &port, "x", how]);
        let o = run(&mut c, T);
        assert_eq!(
            stdout(&o).trim(),
            format!("udpto send errno={}", libc::EACCES),
            "{}",
            show(&o)
        );
    }
    assert_eq!(echo.count(), 7);
}

#[test]
fn isolate_carries_udp_for_dynamic_and_static_programs() {
    netns();
    let echo = UdpEcho::start();
    let Some((_dante, l)) = dante_launch("") else {
        return;
    };
    let mut c = clean(Command::new(chainsocks_bin()));
    c.arg("-f")
        .arg(&l.config)
        .arg("--isolate")
        .arg(csudp())
        .args([
            "sendto",
            "127.0.0.1",
            &echo.port().to_string(),
            "--count",
            "5",
        ]);
    c.env("CHAINSOCKS_LOG_FILE", l.log_path());
    let o = run(&mut c, T);
    let out = all_answered(&o, 5, &l);
    assert_eq!(field(&out, "source"), "ok", "{out}");
    let mut c = clean(Command::new(chainsocks_bin()));
    c.arg("-f")
        .arg(&l.config)
        .arg("--isolate")
        .arg(env!("CARGO_BIN_EXE_csraw"))
        .args(["udp", "127.0.0.1", &echo.port().to_string(), "iso"]);
    let o = run(&mut c, T);
    assert_eq!(
        stdout(&o).trim(),
        "udp ok reply=iso",
        "{}\n{}",
        show(&o),
        l.log()
    );
    assert_eq!(senders(&echo), ["danted"]);
}

/// The launcher's hub keeps a sender's outer socket (its source port at the relay) for as long
/// as the sender's socket lives, idle or not: a new source port would not be accepted by the
/// relay for the same association. With the idle time shortened to 300 ms, a supervised
/// program's connected socket (registered) and the library's datagrams under --isolate
/// (enveloped) are still answered after 2 s of silence.
#[test]
fn idle_sockets_keep_their_association_through_the_hub() {
    netns();
    let echo = UdpEcho::start();
    let Some((_dante, l)) = dante_launch("") else {
        return;
    };
    let Some(py) = require("python3") else { return };
    let script = format!(
        r#"
import socket, time, sys
u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); u.settimeout(5)
if sys.argv[1] == 'connected':
    u.connect(('127.0.0.1', {port}))
    send = lambda b: u.send(b)
else:
    send = lambda b: u.sendto(b, ('127.0.0.1', {port}))
for word in (b'before', b'after'):
    send(word); assert u.recv(100) == word, word
    time.sleep(2)
print('ok')
"#,
        port = echo.port()
    );
    // Without the library (the supervisor's path), and with it under --isolate.
    let runs: [(&[&str], &[&str]); 2] =
        [(&[], &["env", "-u", "LD_PRELOAD"]), (&["--isolate"], &[])];
    for (flags, prefix) in runs {
        let mode = if flags.is_empty() {
            "connected"
        } else {
            "sendto"
        };
        let mut c = clean(Command::new(chainsocks_bin()));
        c.arg("-f")
            .arg(&l.config)
            .args(flags)
            .arg("--")
            .args(prefix);
        c.arg(&py).args(["-c", &script, mode]);
        c.env("CHAINSOCKS_LOG_FILE", l.log_path())
            .env("CHAINSOCKS_UDP_IDLE_MS", "300");
        let o = run(&mut c, T);
        assert_eq!(
            stdout(&o).trim(),
            "ok",
            "{flags:?}: {}\n{}",
            show(&o),
            l.log()
        );
    }
    assert_eq!(senders(&echo), ["danted"]);
    assert_eq!(echo.count(), 4);
}

#[test]
fn check_tells_which_proxies_carry_udp() {
    netns();
    let Some(dante) = Dante::start(DanteOpts::default()) else {
        return;
    };
    let Some(ms) = Microsocks::start(MicrosocksOpts::default()) else {
        return;
    };
    let l = Launch::new(&format!(
        "proxy = [\"socks5://127.0.0.1:{}\"]\n[chains.ms]\nproxy = [\"socks5://127.0.0.1:{}\"]\n",
        dante.port(),
        ms.port()
    ));
    let mut c = clean(Command::new(chainsocks_bin()));
    c.arg("-f")
        .arg(&l.config)
        .args(["check", "--no-probe", "--target", "127.0.0.1:9"]);
    let o = run(&mut c, T);
    let out = stdout(&o);
    let udp: Vec<&str> = out
        .lines()
        .filter(|l| l.trim_start().starts_with("udp:"))
        .collect();
    assert_eq!(udp.len(), 2, "{out}");
    assert!(udp[0].contains("udp: yes"), "{out}");
    assert!(
        udp[1].contains("udp: no") && udp[1].contains("refuses UDP ASSOCIATE"),
        "{out}"
    );
}
