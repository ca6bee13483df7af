//! The echo cases: B1 (connect cost on loopback, and the client's memory) and B2 (latency
//! through delay relays), plus `--serve`.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use crate::relay::DelayRelay;
use crate::stats::{Row, Samples, median, near};
use crate::{Ctx, DELAY_MS, Plan, Results, Servers, Via, chain_arg, urls};
use e2e::{SshOpts, SshSocks};

/// What `csbenchclient echo` printed (µs; floor_* only with --pair).
struct EchoRun {
    connect_us: Vec<f64>,
    echo_us: Vec<f64>,
    floor_connect_us: Vec<f64>,
    floor_echo_us: Vec<f64>,
    hwm_kb: f64,
}

/// The nanosecond values of the first output line starting with `key`, in µs (none: empty).
pub fn ns_line_us(out: &str, key: &str) -> Vec<f64> {
    out.lines()
        .find_map(|l| l.strip_prefix(key))
        .map(|l| {
            l.split_whitespace()
                .filter_map(|v| v.parse::<f64>().ok())
                .map(|ns| ns / 1e3)
                .collect()
        })
        .unwrap_or_default()
}

fn parse_echo(out: &str) -> Result<EchoRun, String> {
    let nums = |key: &str| ns_line_us(out, key);
    let hwm = out
        .lines()
        .find_map(|l| l.strip_prefix("vmhwm_kb "))
        .and_then(|v| v.trim().parse::<f64>().ok())
        .ok_or_else(|| format!("no vmhwm_kb in client output: {out}"))?;
    Ok(EchoRun {
        connect_us: nums("connect_ns "),
        echo_us: nums("echo_ns "),
        floor_connect_us: nums("floor_connect_ns "),
        floor_echo_us: nums("floor_echo_ns "),
        hwm_kb: hwm,
    })
}

/// One variant of an echo case: how it is launched, the client's own SOCKS5 chain (the floor
/// half of a pair, or the whole connection without --pair), and which source address the echo
/// server must see (proof that it went through a proxy, or not).
pub struct Variant {
    pub name: &'static str,
    pub via: Via,
    pub socks: Option<String>,
    pub pair: bool,
    pub peer: IpAddr,
    /// Fewer connections than the case's (a variant that takes 40 ms each).
    pub conns: Option<usize>,
    /// Which client binary runs, and how.
    pub client: Client,
    /// More client arguments (`--pipeline all`).
    pub flags: &'static [&'static str],
}

/// Which csbenchclient a variant runs.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Client {
    /// As cargo built it, dynamically linked: an LD_PRELOAD shim sees its libc calls.
    Dynamic,
    /// The same binary without the library (`env -u LD_PRELOAD`): under the launcher only its
    /// seccomp supervisor sees the client's connects.
    Bare,
    /// csbenchclient linked statically (glibc, `crt-static`; scripts/bench builds it): no
    /// dynamic loader, so no preload ever sees it, like a Go tool or a static binary.
    Static,
}

pub const DANTE_EXTERNAL: IpAddr = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2));
pub const LOCAL: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);

/// Per variant, µs: first echo byte back, connect() returned, paired differences to the floor
/// half (first echo byte), the in-process floor half, and peak RSS (KiB) per run.
#[derive(Default)]
pub struct EchoResult {
    pub echo: Samples,
    pub connect: Samples,
    pub diff: Samples,
    pub floor_in: Samples,
    pub hwm_kb: Vec<f64>,
}

/// Runs every variant `runs` rounds (order rotated each round, `settle` before each round)
/// with `conns` connections (pairs) to `dest`, checking each time that the echo server saw
/// exactly those connections, from the expected address.
pub fn echo_case(
    ctx: &Ctx,
    srv: &Servers,
    dest: SocketAddr,
    variants: &[Variant],
    conns: usize,
    runs: usize,
) -> Result<BTreeMap<&'static str, EchoResult>, String> {
    let mut out: BTreeMap<&'static str, EchoResult> = BTreeMap::new();
    for round in 0..runs {
        ctx.settle();
        for k in 0..variants.len() {
            let Some(v) = variants.get((k + round) % variants.len()) else {
                continue;
            };
            let conns = v.conns.unwrap_or(conns);
            let mut args = vec![
                "echo".to_string(),
                dest.ip().to_string(),
                dest.port().to_string(),
                conns.to_string(),
            ];
            if let Some(s) = &v.socks {
                args.push("--socks5".into());
                args.push(s.clone());
            }
            args.extend(v.flags.iter().map(|f| f.to_string()));
            if v.pair {
                args.push("--pair".into());
                if matches!(v.via, Via::Plain) {
                    // No shim: the null test, both halves speak SOCKS5 themselves.
                    args.push("--self".into());
                }
            }
            let before = srv.echo.peers().len();
            let text = match v.client {
                Client::Dynamic => ctx.client(&v.via, &args)?,
                Client::Bare => {
                    let env = e2e::find_program("env").ok_or("env is not installed")?;
                    let mut a = vec!["-u".to_string(), "LD_PRELOAD".into()];
                    a.push(ctx.client.to_string_lossy().into_owned());
                    a.extend(args);
                    ctx.run(&v.via, &env, &a)?
                }
                Client::Static => ctx.run(&v.via, &ctx.static_client()?, &args)?,
            };
            let r = parse_echo(&text)?;
            let peers = srv.echo.peers();
            let new: Vec<_> = peers.get(before..).unwrap_or_default().to_vec();
            let expect = if v.pair { 2 * conns } else { conns };
            if new.len() != expect
                || new.iter().any(|p| p.ip() != v.peer)
                || r.echo_us.len() != conns
                || (v.pair && r.floor_echo_us.len() != conns)
            {
                return Err(format!(
                    "{}: expected {expect} connections from {} at the echo server, saw {} ({:?}…)",
                    v.name,
                    v.peer,
                    new.len(),
                    new.first()
                ));
            }
            let e = out.entry(v.name).or_default();
            e.echo.add_run(&r.echo_us);
            e.connect.add_run(&r.connect_us);
            e.hwm_kb.push(r.hwm_kb);
            let mut line = format!(
                "  {:<36} round {}: median {:>9.1} µs",
                v.name,
                round + 1,
                median(&r.echo_us)
            );
            if v.pair {
                let d: Vec<f64> = r
                    .echo_us
                    .iter()
                    .zip(&r.floor_echo_us)
                    .map(|(a, b)| a - b)
                    .collect();
                line.push_str(&format!(
                    ", floor half {:>9.1} µs, paired difference {:>+7.1} µs",
                    median(&r.floor_echo_us),
                    median(&d)
                ));
                e.diff.add_run(&d);
                e.floor_in.add_run(&r.floor_echo_us);
                let _ = &r.floor_connect_us;
            }
            eprintln!("{line}");
        }
    }
    Ok(out)
}

fn get<'a>(m: &'a BTreeMap<&'static str, EchoResult>, k: &str) -> Result<&'a EchoResult, String> {
    m.get(k).ok_or_else(|| format!("missing variant {k}"))
}

fn us(v: f64) -> String {
    format!("{v:.1} µs")
}

// ---------------------------------------------------------------- B1 + memory

pub fn b1(ctx: &Ctx, plan: &Plan, srv: &Servers, res: &mut Results) -> Result<(), String> {
    let dest = srv.echo.addr();
    let cases: [(&'static str, &str, Vec<u16>); 2] = [
        ("B1a", "1 hop: dante", vec![srv.d1.port()]),
        (
            "B1b",
            "3 hops: dante → ssh -D → dante",
            vec![srv.d1.port(), srv.ssh.port(), srv.d2.port()],
        ),
    ];
    for (id, label, ports) in cases {
        eprintln!(
            "{id} {label}: {} connections per run (pairs under a shim), {} rounds",
            plan.b1_conns, plan.b1_runs
        );
        let floor = Some(chain_arg(&ports));
        let variants = [
            Variant {
                name: "direct",
                via: Via::Plain,
                socks: None,
                pair: false,
                peer: LOCAL,
                conns: None,
                client: Client::Dynamic,
                flags: &[],
            },
            Variant {
                name: "floor",
                via: Via::Plain,
                socks: floor.clone(),
                pair: true,
                peer: DANTE_EXTERNAL,
                conns: None,
                client: Client::Dynamic,
                flags: &[],
            },
            Variant {
                name: "chainsocks",
                via: ctx.cs_conf(&format!("{id}-safe"), &urls(&ports, false)),
                socks: floor.clone(),
                pair: true,
                peer: DANTE_EXTERNAL,
                conns: None,
                client: Client::Dynamic,
                flags: &[],
            },
            Variant {
                name: "chainsocks pipelined",
                via: ctx.cs_conf(&format!("{id}-pipe"), &urls(&ports, true)),
                socks: floor.clone(),
                pair: true,
                peer: DANTE_EXTERNAL,
                // Through ssh -D every pipelined connection waits ~40 ms (see B2): fewer.
                conns: (ports.len() > 1).then_some(plan.b1_conns.min(100)),
                client: Client::Dynamic,
                flags: &[],
            },
            Variant {
                name: "proxychains4",
                via: ctx.pc_conf(id, &ports),
                socks: floor.clone(),
                pair: true,
                peer: DANTE_EXTERNAL,
                conns: None,
                client: Client::Dynamic,
                flags: &[],
            },
            Variant {
                name: "proxychains4 no proxy_dns",
                via: ctx.pc_conf_dns(&format!("{id}-nodns"), &ports, false),
                socks: floor.clone(),
                pair: true,
                peer: DANTE_EXTERNAL,
                conns: None,
                client: Client::Dynamic,
                flags: &[],
            },
        ];
        let m = echo_case(ctx, srv, dest, &variants, plan.b1_conns, plan.b1_runs)?;
        let case = format!("{id} {label}");
        let floor_what = if ports.len() == 1 {
            "floor: the client speaks SOCKS5 itself"
        } else {
            "floor: the client does the 3-hop handshake itself, sequentially"
        };
        for (name, what) in [
            ("direct", "direct to the echo server (no proxy)"),
            ("floor", floor_what),
            ("chainsocks", "chainsocks (safe)"),
            (
                "chainsocks pipelined",
                if ports.len() > 1 {
                    "chainsocks pipelined (info; ≤ 100 pairs per round)"
                } else {
                    "chainsocks pipelined (info)"
                },
            ),
            ("proxychains4", "proxychains4 (strict_chain)"),
            (
                "proxychains4 no proxy_dns",
                "proxychains4 (strict_chain) without proxy_dns (info)",
            ),
        ] {
            let r = get(&m, name)?;
            let (derived, spread) = if r.diff.all.is_empty() {
                (String::new(), r.echo.spread(1.0, 1))
            } else if name == "floor" {
                (
                    format!(
                        "{:+.1} µs: null test (libc half − raw half, no shim)",
                        r.diff.median()
                    ),
                    format!("paired: {}", r.diff.spread(1.0, 1)),
                )
            } else {
                (
                    format!("{:+.1} µs above the floor (paired)", r.diff.median()),
                    format!("paired: {}", r.diff.spread(1.0, 1)),
                )
            };
            res.rows
                .push(Row::info(&case, what, us(r.echo.median()), derived, spread));
        }
        let cs = get(&m, "chainsocks")?.diff.median();
        let pc = get(&m, "proxychains4")?.diff.median();
        res.facts.b1_above.push((ports.len(), [cs, pc]));
        res.b1_plot.push((
            label.to_string(),
            vec![
                ("floor (null test)".into(), get(&m, "floor")?.diff.median()),
                ("chainsocks".into(), cs),
                ("proxychains4".into(), pc),
            ],
        ));
        let ratio = cs / pc;
        res.check(
            id,
            &case,
            "chainsocks ÷ proxychains4, cost above the floor",
            if pc > 0.0 {
                near(ratio, 0.25, 2)
            } else {
                format!("n/a (proxychains4 {pc:+.1} µs)")
            },
            "≤ 0.25",
            pc > 0.0 && ratio <= 0.25,
        );
        let pc_plain = get(&m, "proxychains4 no proxy_dns")?.diff.median();
        res.rows.push(Row::info(
            &case,
            "chainsocks ÷ proxychains4 without proxy_dns, cost above the floor (info)",
            if pc_plain > 0.0 {
                format!("{:.2}", cs / pc_plain)
            } else {
                format!("n/a (proxychains4 {pc_plain:+.1} µs)")
            },
            String::new(),
            String::new(),
        ));
        let mut t = String::from(
            "| variant | connect() returned | first echo byte back | floor half of the pairs | paired difference |\n\
             |---|---:|---:|---:|---:|\n",
        );
        for (name, r) in &m {
            let opt = |s: &Samples| {
                if s.all.is_empty() {
                    "—".to_string()
                } else {
                    format!("{:.1}", s.median())
                }
            };
            t.push_str(&format!(
                "| {name} | {:.1} | {:.1} | {} | {} |\n",
                r.connect.median(),
                r.echo.median(),
                opt(&r.floor_in),
                opt(&r.diff)
            ));
        }
        res.notes.push((
            format!("{case}: medians in µs per connection"),
            format!(
                "`connect() returned` is measured from `socket()`; for the floor, until the last \
                 SOCKS5 reply was read. The floor half of the pairs is the raw-syscall connection \
                 made by the same process right before or after each shimmed one.\n\n{t}"
            ),
        ));
        memory(&m, id, res)?;
    }
    Ok(())
}

fn memory(
    m: &BTreeMap<&'static str, EchoResult>,
    id: &str,
    res: &mut Results,
) -> Result<(), String> {
    let plain = median(&get(m, "floor")?.hwm_kb);
    let cs = median(&get(m, "chainsocks")?.hwm_kb);
    let pc = median(&get(m, "proxychains4")?.hwm_kb);
    let case = format!("Memory, {id} workload");
    res.rows.push(Row::info(
        &case,
        "client peak RSS (VmHWM), plain (the floor runs)",
        format!("{plain:.0} KiB"),
        String::new(),
        String::new(),
    ));
    res.rows.push(Row::info(
        &case,
        "client VmHWM under proxychains4 (info)",
        format!("{pc:.0} KiB"),
        format!("{:+.0} KiB", pc - plain),
        String::new(),
    ));
    res.rows.push(Row::info(
        &case,
        "client VmHWM under chainsocks",
        format!("{cs:.0} KiB"),
        format!("{:+.0} KiB", cs - plain),
        String::new(),
    ));
    res.check(
        if id == "B1a" { "Mem-1" } else { "Mem-3" },
        &case,
        "VmHWM added by chainsocks",
        format!("{:.0} KiB", cs - plain),
        "< 1024 KiB",
        cs - plain < 1024.0,
    );
    Ok(())
}

// ---------------------------------------------------------------- B2

/// B2's physical limits in RTT units (see the report's method section).
pub const LIMIT_PIPELINED: f64 = 7.0;
pub const LIMIT_SEQUENTIAL: f64 = 16.0;

pub fn b2(ctx: &mut Ctx, plan: &Plan, srv: &Servers, res: &mut Results) -> Result<(), String> {
    let d = Duration::from_millis(DELAY_MS);
    let rtt = 2.0 * DELAY_MS as f64;
    let at = |p: u16| SocketAddr::from((Ipv4Addr::LOCALHOST, p));
    let r1 = DelayRelay::start(at(srv.d1.port()), d)?;
    let r2 = DelayRelay::start(at(srv.ssh.port()), d)?;
    let r3 = DelayRelay::start(at(srv.d2.port()), d)?;
    let r4 = DelayRelay::start(srv.echo.addr(), d)?;
    // The same chain through an `ssh -tt -D … sleep` (a session with a pty: OpenSSH then sets
    // TCP_NODELAY, so sshd never holds the second reply for an ACK), for one info row.
    let ssh_tty = SshSocks::start(SshOpts {
        tty: true,
        ..SshOpts::default()
    })
    .ok_or("ssh/sshd is not installed")?;
    let r2_tty = DelayRelay::start(at(ssh_tty.port()), d)?;
    let ports = [r1.port(), r2.port(), r3.port()];
    let ports_tty = [r1.port(), r2_tty.port(), r3.port()];
    // Control chain without ssh -D: dante → dante → dante (the first dante twice).
    let control = [r1.port(), r3.port(), r1.port()];
    let dest = at(r4.port());
    eprintln!(
        "B2 latency, D = {DELAY_MS} ms per link crossing: {} connections per run, {} rounds",
        plan.b2_conns, plan.b2_runs
    );
    let cs_safe = ctx.cs_conf("B2-safe", &urls(&ports, false));
    let cs_pipe = ctx.cs_conf("B2-pipe", &urls(&ports, true));
    let cs_ctrl = ctx.cs_conf("B2-control", &urls(&control, true));
    let cs_tty = ctx.cs_conf("B2-pipe-tty", &urls(&ports_tty, true));
    let pf = |name, via, socks: Option<String>, peer, flags| Variant {
        name,
        via,
        socks,
        pair: false,
        peer,
        conns: None,
        client: Client::Dynamic,
        flags,
    };
    let p = |name, via, socks, peer| pf(name, via, socks, peer, &[]);
    // The echo server sees its relay (127.0.0.1) in every variant; that the chain was used is
    // checked below on the relay in front of the first dante.
    let variants = [
        p("link", Via::Plain, None, LOCAL),
        p(
            "client sequential",
            Via::Plain,
            Some(chain_arg(&ports)),
            LOCAL,
        ),
        p("proxychains4", ctx.pc_conf("B2", &ports), None, LOCAL),
        p("chainsocks safe", cs_safe.clone(), None, LOCAL),
        p("chainsocks pipelined", cs_pipe.clone(), None, LOCAL),
        p("control", cs_ctrl.clone(), None, LOCAL),
        pf(
            "client pipelined",
            Via::Plain,
            Some(chain_arg(&ports)),
            LOCAL,
            &["--pipeline", "all"],
        ),
        pf(
            "client hold-last",
            Via::Plain,
            Some(chain_arg(&ports)),
            LOCAL,
            &["--pipeline", "hold-last"],
        ),
        p("chainsocks pipelined, tty ssh", cs_tty, None, LOCAL),
    ];
    let m = echo_case(ctx, srv, dest, &variants, plan.b2_conns, plan.b2_runs)?;
    // 7 variants enter the first dante once per connection, the control chain twice.
    let through = r1.first_chunks().len();
    let expect = 9 * plan.b2_conns * plan.b2_runs;
    if through != expect {
        return Err(format!(
            "B2: the first dante's relay saw {through} connections, expected {expect}"
        ));
    }
    let case = "B2 3-hop latency, RTT 20 ms";
    let ms = |name: &str| -> Result<(f64, f64, String), String> {
        let r = get(&m, name)?;
        Ok((
            r.echo.median() / 1e3,
            r.connect.median() / 1e3,
            r.echo.spread(1e-3, 1),
        ))
    };
    let (link, _, link_spread) = ms("link")?;
    res.rows.push(Row::info(
        case,
        "one relayed link, direct (calibration: 1 RTT)",
        format!("{link:.1} ms"),
        format!("{:.2} RTT", link / rtt),
        link_spread,
    ));
    let mut bars = Vec::new();
    for (name, what, bar) in [
        (
            "client sequential",
            "the client's own sequential handshake (reference)",
            "client, sequential",
        ),
        ("proxychains4", "proxychains4", "proxychains4"),
        ("chainsocks safe", "chainsocks safe", "chainsocks safe"),
        (
            "chainsocks pipelined",
            "chainsocks pipelined",
            "chainsocks pipelined",
        ),
        (
            "control",
            "chainsocks pipelined, control chain dante → dante → dante (info)",
            "pipelined, control: dante ×3",
        ),
        (
            "client pipelined",
            "the client's own handshake, every message in one write (info: the stall is not \
             chainsocks')",
            "client, pipelined",
        ),
        (
            "client hold-last",
            "the client's own pipelined handshake, hop 3's CONNECT held until its greeting's \
             reply (info: not pipelining that CONNECT)",
            "client, hop 3 CONNECT held",
        ),
        (
            "chainsocks pipelined, tty ssh",
            "chainsocks pipelined through `ssh -tt -D … sleep` (a pty session: TCP_NODELAY at \
             sshd) (info)",
            "pipelined, ssh -D with a pty",
        ),
    ] {
        let (e, c, spread) = ms(name)?;
        res.rows.push(Row::info(
            case,
            &format!("{what}: first echo byte back"),
            format!("{e:.1} ms"),
            format!(
                "{:.2} RTT (connect() returned: {:.2} RTT)",
                e / rtt,
                c / rtt
            ),
            spread,
        ));
        bars.push((bar.to_string(), e));
    }
    res.rows.push(Row::info(
        case,
        "physical limit, pipelined",
        format!("{:.0} ms", LIMIT_PIPELINED * rtt),
        format!("{LIMIT_PIPELINED:.0} RTT"),
        String::new(),
    ));
    res.rows.push(Row::info(
        case,
        "physical limit, strictly sequential",
        format!("{:.0} ms", LIMIT_SEQUENTIAL * rtt),
        format!("{LIMIT_SEQUENTIAL:.0} RTT"),
        String::new(),
    ));
    let (pc, _, _) = ms("proxychains4")?;
    let (safe, _, _) = ms("chainsocks safe")?;
    let (pipe, _, _) = ms("chainsocks pipelined")?;
    res.facts.b2_rtt = [
        "chainsocks pipelined",
        "client pipelined",
        "client hold-last",
        "chainsocks pipelined, tty ssh",
    ]
    .iter()
    .map(|n| ms(n).map(|(e, _, _)| e / rtt))
    .collect::<Result<Vec<f64>, String>>()?;
    let limit = LIMIT_PIPELINED * rtt;
    res.check(
        "B2-pipe-pc",
        case,
        "pipelined ÷ proxychains4",
        near(pipe / pc, 0.5, 2),
        "≤ 0.50",
        pipe / pc <= 0.5,
    );
    res.check(
        "B2-pipe-limit",
        case,
        "pipelined ÷ physical limit (7 RTT)",
        near(pipe / limit, 1.2, 2),
        "≤ 1.20",
        pipe / limit <= 1.2,
    );
    res.check(
        "B2-safe-pc",
        case,
        "safe ÷ proxychains4",
        near(safe / pc, 1.0, 4),
        "≤ 1.00",
        safe / pc <= 1.0,
    );
    res.b2_bars = bars;
    res.b2_limits = vec![
        ("pipelined limit, 7 RTT".into(), LIMIT_PIPELINED * rtt),
        ("sequential limit, 16 RTT".into(), LIMIT_SEQUENTIAL * rtt),
    ];

    // Verification: what each relay's first chunk held on one pipelined connection (every
    // hop must have taken the pipelined bytes and passed the rest on), and the per-hop timings
    // chainsocks logs at debug level for pipelined, safe and the control chain.
    for r in [&r1, &r2, &r3] {
        r.clear_first_chunks();
    }
    let log = ctx.dir.join("b2-debug.log");
    ctx.cs_log_debug = Some(log.clone());
    let args = vec![
        "echo".to_string(),
        "127.0.0.1".into(),
        dest.port().to_string(),
        "1".into(),
    ];
    let pipe_run = ctx.client(&cs_pipe, &args);
    let chunks: Vec<Vec<usize>> = [&r1, &r2, &r3].iter().map(|r| r.first_chunks()).collect();
    let safe_run = ctx.client(&cs_safe, &args);
    let ctrl_run = ctx.client(&cs_ctrl, &args);
    ctx.cs_log_debug = None;
    pipe_run?;
    safe_run?;
    ctrl_run?;
    let debug = std::fs::read_to_string(&log).unwrap_or_default();
    let first = |i: usize| chunks.get(i).and_then(|v| v.first().copied()).unwrap_or(0);
    let verified = first(0) == 39 && first(1) == 26 && first(2) == 13;
    let mut v = format!(
        "On one pipelined connection the first chunk each relay received was: client → dante \
         {} B (3 greetings + 3 CONNECTs = 39 B), dante → ssh -D {} B (26 B expected), sshd → \
         dante {} B (13 B expected); the echo byte came back. {}\n\n",
        first(0),
        first(1),
        first(2),
        if verified {
            "So every hop accepted the pipelined bytes and passed the rest on in one piece: \
             dante → ssh -D → dante all accept pipelining."
        } else {
            "**This is NOT the fully pipelined pattern** (see the sizes)."
        }
    );
    v.push_str(
        "chainsocks' per-hop timings (`CHAINSOCKS_LOG=debug`; one connection each: pipelined, \
         safe, pipelined control chain dante → dante → dante; each step is the time its reply \
         was verified, from the start of the handshake):\n\n```\n",
    );
    for l in debug.lines().filter(|l| l.contains("total")) {
        v.push_str(l);
        v.push('\n');
    }
    v.push_str("```\n");
    let holds: Vec<String> = [&r1, &r2, &r3, &r4]
        .iter()
        .map(|r| {
            let (h, n) = r.mean_hold_ms();
            format!("{h:.3} ms ({n} chunks)")
        })
        .collect();
    v.push_str(&format!(
        "\nMean time a chunk was actually held (relay before dante #1, ssh -D, dante #2, the \
         echo server): {}.\n",
        holds.join("; ")
    ));
    res.notes
        .push(("B2: pipelining verified, per-hop timings".into(), v));
    if !verified {
        res.misses
            .push(("B2-verify", format!("pipelined first chunks {chunks:?}")));
    }
    Ok(())
}

/// `--serve`: start the B2 relays too, write the configs, print how to reach everything (for
/// profiling by hand: `nsenter -t PID -n …`), and wait until stdin closes.
pub fn serve_forever(ctx: &Ctx, srv: &Servers) -> Result<(), String> {
    let d = Duration::from_millis(DELAY_MS);
    let at = |p: u16| SocketAddr::from((Ipv4Addr::LOCALHOST, p));
    let relays = [
        DelayRelay::start(at(srv.d1.port()), d)?,
        DelayRelay::start(at(srv.ssh.port()), d)?,
        DelayRelay::start(at(srv.d2.port()), d)?,
        DelayRelay::start(srv.echo.addr(), d)?,
    ];
    let one = [srv.d1.port()];
    let three = [srv.d1.port(), srv.ssh.port(), srv.d2.port()];
    let rel: Vec<u16> = relays.iter().take(3).map(|r| r.port()).collect();
    for (name, ports) in [
        ("one", &one[..]),
        ("three", &three[..]),
        ("relayed", &rel[..]),
    ] {
        ctx.cs_conf(&format!("{name}-safe"), &urls(ports, false));
        ctx.cs_conf(&format!("{name}-pipe"), &urls(ports, true));
        ctx.pc_conf(name, ports);
    }
    // The SUP case's origin, for studying `hey` by hand.
    let origin = e2e::HttpOrigin::start(vec![("/".into(), b"csbench\n".to_vec())]);
    println!(
        "pid {} echo {} dante {} ssh {} dante {} relays {:?} -> echo relay {} http origin {}\n\
         configs in {}",
        std::process::id(),
        srv.echo.port(),
        srv.d1.port(),
        srv.ssh.port(),
        srv.d2.port(),
        rel,
        relays.get(3).map_or(0, |r| r.port()),
        origin.port(),
        ctx.dir.path().display()
    );
    let mut line = String::new();
    while std::io::stdin()
        .read_line(&mut line)
        .map(|n| n > 0)
        .unwrap_or(false)
    {
        line.clear();
    }
    Ok(())
}
