//! The UDP cases: datagrams through dante's UDP ASSOCIATE (a quiet danted of its own: no log
//! line per datagram), `csudp pair` against the benchmark's UDP echo, under the launcher.
//!
//! The paired method of B1 for datagrams: one csudp process takes turns between three links
//! (order rotating): *chainsocks* (plain libc sendto/recvfrom: the library frames the
//! datagrams), *own SOCKS5* (csudp's own association made of raw syscalls no shim sees: the
//! reference) and *direct* (raw datagrams straight to the echo: the floor). Measured: the
//! round trip of 64-byte datagrams one at a time (turns of one datagram: the differences to
//! the floor are taken datagram by datagram), and the datagrams per second of 64- and
//! 1,400-byte datagrams with a window in flight (turns of a chunk of datagrams, each link's
//! loop time summed). Ratios are per run (one process), then the median of the runs.
//!
//! Never: counts a run in which the echo saw a datagram from an address other than the two
//! it must come from (127.0.0.2, dante's external address, for the proxied links; 127.0.0.1
//! for the floor), or fewer than were answered.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::time::Duration;

use e2e::{Dante, DanteOpts};

use crate::echo::{DANTE_EXTERNAL, LOCAL};
use crate::relay::UdpBenchEcho;
use crate::stats::{Row, Samples, median, near};
use crate::{Ctx, Plan, Results, Via, urls};

/// Datagrams in flight in the throughput runs.
pub const WINDOW: usize = 16;
/// A datagram whose echo has not come back after this long counts as lost (throughput runs).
const LOST_MS: u64 = 200;

/// One `csudp pair` result line: per link (chainsocks, own SOCKS5, direct) datagrams
/// answered, median round trip (µs) and loop time (µs); the medians of the per-turn
/// differences to the floor (chainsocks, own).
struct Run {
    answered: [f64; 3],
    median_us: [f64; 3],
    above_us: [f64; 2],
    elapsed_us: [f64; 3],
}

fn parse(out: &str) -> Option<Run> {
    let line = out.lines().find(|l| l.starts_with("ok "))?;
    let list = |k: &str| -> Vec<f64> {
        line.split_whitespace()
            .find_map(|w| w.strip_prefix(k))
            .map(|v| {
                v.split('/')
                    .next()
                    .unwrap_or("")
                    .split(',')
                    .filter_map(|x| x.parse().ok())
                    .collect()
            })
            .unwrap_or_default()
    };
    let three = |v: Vec<f64>| -> Option<[f64; 3]> { v.try_into().ok() };
    Some(Run {
        answered: three(list("answered="))?,
        median_us: three(list("median_us="))?,
        above_us: list("above_us=").try_into().ok()?,
        elapsed_us: three(list("elapsed_us="))?,
    })
}

/// Runs `csudp pair`; exit status 3 (the run completed, some datagram lost) is a result too.
fn csudp(ctx: &Ctx, via: &Via, args: &[String]) -> Result<Run, String> {
    let mut cmd = ctx.command(via, &e2e::csudp(), args);
    let shown = format!("{cmd:?}");
    let o = match e2e::try_run(&mut cmd, Duration::from_secs(300)) {
        Ok(o) | Err(o) => o,
    };
    let out = String::from_utf8_lossy(&o.stdout);
    match (o.status.code(), parse(&out)) {
        (Some(0 | 3), Some(r)) => Ok(r),
        _ => Err(format!(
            "{shown} failed ({:?})\nstdout: {out}\nstderr: {}",
            o.status,
            String::from_utf8_lossy(&o.stderr)
        )),
    }
}

/// Datagrams per turn of a link in the throughput runs.
const CHUNK: usize = 1000;

pub fn udp(ctx: &Ctx, plan: &Plan, res: &mut Results) -> Result<(), String> {
    let dante = Dante::start(DanteOpts {
        quiet: true,
        ..Default::default()
    })
    .ok_or("danted is not installed")?;
    let echo = UdpBenchEcho::start()?;
    eprintln!(
        "UDP through dante, csudp pair under the launcher: {} round trips per link and run, \
         {} datagrams per link and run in a window of {WINDOW}, {} rounds",
        plan.udp_rtt_count, plan.udp_tput_count, plan.udp_runs
    );
    let cs = ctx.cs_conf("UDP", &urls(&[dante.port()], false));
    let lead = vec![
        "pair".to_string(),
        format!("127.0.0.1:{}", dante.port()),
        format!("127.0.0.1:{}", echo.port()),
    ];
    // (kind, datagram size, window, datagrams per turn, count)
    let kinds: [(&'static str, usize, usize, usize, usize); 3] = [
        ("rtt", 64, 1, 1, plan.udp_rtt_count),
        ("64", 64, WINDOW, CHUNK, plan.udp_tput_count),
        ("1400", 1400, WINDOW, CHUNK, plan.udp_tput_count),
    ];
    let mut runs: BTreeMap<&'static str, Vec<Run>> = BTreeMap::new();
    for round in 0..plan.udp_runs {
        ctx.settle();
        for k in 0..kinds.len() {
            let Some(&(kind, size, window, chunk, count)) = kinds.get((k + round) % kinds.len())
            else {
                continue;
            };
            let mut args = lead.clone();
            args.extend([
                "--count".into(),
                count.to_string(),
                "--size".into(),
                size.to_string(),
                "--window".into(),
                window.to_string(),
                "--chunk".into(),
                chunk.to_string(),
            ]);
            if window > 1 {
                args.extend(["--timeout-ms".into(), LOST_MS.to_string()]);
            }
            let before = echo.senders();
            let r = csudp(ctx, &cs, &args)?;
            let after = echo.senders();
            let new = |ip: IpAddr| {
                after.get(&ip).copied().unwrap_or(0) - before.get(&ip).copied().unwrap_or(0)
            };
            let others: Vec<&IpAddr> = after
                .keys()
                .filter(|ip| **ip != DANTE_EXTERNAL && **ip != LOCAL)
                .collect();
            let [a, b, c] = r.answered;
            if !others.is_empty() || (new(DANTE_EXTERNAL) as f64) < a + b || (new(LOCAL) as f64) < c
            {
                return Err(format!(
                    "UDP {kind}: the echo saw {} datagrams from {DANTE_EXTERNAL}, {} from \
                     {LOCAL}, others from {others:?}; answered {a}, {b}, {c}",
                    new(DANTE_EXTERNAL),
                    new(LOCAL)
                ));
            }
            if r.answered.iter().any(|&n| n < 0.99 * count as f64) {
                return Err(format!(
                    "UDP {kind}: answered {:?} of {count} datagrams",
                    r.answered
                ));
            }
            if kind == "rtt" {
                eprintln!(
                    "  rtt  round {}: median round trip chainsocks {:.0} µs, own {:.0} µs, \
                     direct {:.0} µs; above the floor {:+.1} / {:+.1} µs",
                    round + 1,
                    r.median_us[0],
                    r.median_us[1],
                    r.median_us[2],
                    r.above_us[0],
                    r.above_us[1]
                );
            } else {
                let rate = |i: usize| r.answered[i] / (r.elapsed_us[i] / 1e6);
                eprintln!(
                    "  {kind:<4} round {}: chainsocks {:.0}, own {:.0}, direct {:.0} datagrams/s",
                    round + 1,
                    rate(0),
                    rate(1),
                    rate(2)
                );
            }
            runs.entry(kind).or_default().push(r);
        }
    }
    let per_run = |v: &[f64]| {
        let mut s = Samples::default();
        for &x in v {
            s.add_run(&[x]);
        }
        s
    };

    // Round trip.
    let rtt = runs.get("rtt").map(|v| v.as_slice()).unwrap_or_default();
    let case = "UDP round trip, 64 B, one at a time";
    let col = |i: usize| -> Vec<f64> { rtt.iter().map(|r| r.median_us[i]).collect() };
    let abv = |i: usize| -> Vec<f64> { rtt.iter().map(|r| r.above_us[i]).collect() };
    let (d, o, c) = (col(2), col(1), col(0));
    res.rows.push(Row::info(
        case,
        "direct to the echo (floor)",
        format!("{:.1} µs", median(&d)),
        String::new(),
        per_run(&d).spread(1.0, 1),
    ));
    for (v, above, what) in [
        (
            &o,
            abv(1),
            "csudp speaking SOCKS5 UDP itself through dante (reference)",
        ),
        (
            &c,
            abv(0),
            "chainsocks: plain sendto/recvfrom under the launcher",
        ),
    ] {
        res.rows.push(Row::info(
            case,
            what,
            format!("{:.1} µs", median(v)),
            format!("{:+.1} µs above the floor (paired)", median(&above)),
            format!("paired: {}", per_run(&above).spread(1.0, 1)),
        ));
    }
    let ratio_above: Vec<f64> = rtt.iter().map(|r| r.above_us[0] / r.above_us[1]).collect();
    let ratio_total: Vec<f64> = rtt
        .iter()
        .map(|r| r.median_us[0] / r.median_us[1])
        .collect();
    res.facts.udp_rtt = Some([median(&d), median(&o), median(&c)]);
    res.rows.push(Row::info(
        case,
        "chainsocks ÷ reference, whole round trip (info)",
        format!("{:.3}", median(&ratio_total)),
        String::new(),
        format!("per run: {}", per_run(&ratio_total).spread(1.0, 3)),
    ));
    res.check(
        "UDP-rtt",
        case,
        "chainsocks ÷ reference, round trip above the floor (per-run median)",
        near(median(&ratio_above), 1.2, 2),
        "≤ 1.20",
        median(&ratio_above) <= 1.2,
    );
    if let Some(last) = res.rows.last_mut() {
        last.spread = format!("per run: {}", per_run(&ratio_above).spread(1.0, 3));
    }

    // Throughput.
    for (kind, bytes) in [("64", 64usize), ("1400", 1400)] {
        let v = runs.get(kind).map(|v| v.as_slice()).unwrap_or_default();
        let case = format!("UDP throughput, {bytes} B, {WINDOW} in flight");
        let rate = |i: usize| -> Vec<f64> {
            v.iter()
                .map(|r| r.answered[i] / (r.elapsed_us[i] / 1e6))
                .collect()
        };
        let lost = |i: usize| -> f64 {
            v.iter()
                .map(|r| plan.udp_tput_count as f64 - r.answered[i])
                .sum()
        };
        for (i, what) in [
            (2, "direct to the echo (info)"),
            (1, "csudp speaking SOCKS5 UDP itself (reference)"),
            (0, "chainsocks: plain sendto/recvfrom"),
        ] {
            let x = rate(i);
            res.rows.push(Row::info(
                &case,
                what,
                format!("{:.0} datagrams/s", median(&x)),
                format!(
                    "{:.1} MB/s of payload; {:.0} lost in all runs",
                    median(&x) * bytes as f64 / 1e6,
                    lost(i)
                ),
                per_run(&x).spread(1.0, 0),
            ));
        }
        let (o, c) = (rate(1), rate(0));
        let r: Vec<f64> = c.iter().zip(&o).map(|(c, o)| c / o).collect();
        res.facts.udp_tput.push((bytes, [median(&o), median(&c)]));
        res.check(
            if bytes == 64 { "UDP-64" } else { "UDP-1400" },
            &case,
            "chainsocks ÷ reference, datagrams/s (per-run median)",
            near(median(&r), 0.9, 3),
            "≥ 0.90",
            median(&r) >= 0.9,
        );
        if let Some(last) = res.rows.last_mut() {
            last.spread = format!("per run: {}", per_run(&r).spread(1.0, 3));
        }
    }
    drop(dante);
    Ok(())
}
