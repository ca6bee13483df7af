//! The supervisor cases (SUP): programs the library cannot see, proxied by the launcher's
//! seccomp supervisor.
//!
//! - Connect cost: the B1a workload (`csbenchclient echo`, one dante hop, pairs) under the
//!   launcher with the library (as in B1a) and in a static build of the same client (no
//!   loader, so no library: every connect of the libc half goes to the supervisor); info: the
//!   dynamic client without the library (`env -u LD_PRELOAD`), the same path. The floor
//!   half's raw connect carries the launcher's marker length, so the supervisor lets it
//!   through in all three.
//! - Throughput of a Go program: Debian's `hey` (Go's net/http) under the launcher against the
//!   same hey speaking SOCKS5 itself (`-x socks5://…`; Debian's hey takes its proxy from `-x`
//!   only, through `http.ProxyURL`, so HTTP_PROXY would be ignored and no loopback bypass
//!   applies), same dante, same origin, `-disable-keepalive` (a connection per request).
//!
//! Never: lets a variant count when the origin did not see every request from the proxy.

use std::collections::BTreeMap;

use crate::echo::{Client, DANTE_EXTERNAL, LOCAL, Variant, echo_case};
use crate::stats::{Row, Samples, median, near};
use crate::{Ctx, Plan, Results, Servers, Via, chain_arg, urls};

/// Concurrent workers of `hey` (`-c`).
const HEY_WORKERS: usize = 16;

pub fn connect_cost(
    ctx: &Ctx,
    plan: &Plan,
    srv: &Servers,
    res: &mut Results,
) -> Result<(), String> {
    let ports = [srv.d1.port()];
    eprintln!(
        "SUP connect cost, 1 hop: dante: {} pairs per run, {} rounds",
        plan.sup_conns, plan.sup_runs
    );
    let via = ctx.cs_conf("SUP", &urls(&ports, false));
    let floor = Some(chain_arg(&ports));
    let v = |name, client| Variant {
        name,
        via: via.clone(),
        socks: floor.clone(),
        pair: true,
        peer: DANTE_EXTERNAL,
        conns: None,
        client,
        flags: &[],
    };
    let variants = [
        v("library", Client::Dynamic),
        v("supervisor", Client::Static),
        v("supervisor, dynamic", Client::Bare),
    ];
    let m = echo_case(
        ctx,
        srv,
        srv.echo.addr(),
        &variants,
        plan.sup_conns,
        plan.sup_runs,
    )?;
    let case = "SUP connect cost, 1 hop: dante";
    let get = |k: &str| m.get(k).ok_or_else(|| format!("SUP: missing variant {k}"));
    let (lib, sup) = (get("library")?, get("supervisor")?);
    for (r, what) in [
        (lib, "chainsocks, the library (the B1a path)"),
        (
            sup,
            "chainsocks, the seccomp supervisor (the client linked statically)",
        ),
        (
            get("supervisor, dynamic")?,
            "chainsocks, the seccomp supervisor (info: the dynamic client without LD_PRELOAD)",
        ),
    ] {
        res.rows.push(Row::info(
            case,
            what,
            format!("{:.1} µs", r.echo.median()),
            format!("{:+.1} µs above the floor (paired)", r.diff.median()),
            format!("paired: {}", r.diff.spread(1.0, 1)),
        ));
    }
    let (a, b) = (lib.diff.median(), sup.diff.median());
    res.facts.sup_above = Some([a, b]);
    res.b1_plot.push((
        "1 hop: dante, SUP case".into(),
        vec![("chainsocks, library".into(), a), ("supervisor".into(), b)],
    ));
    res.check(
        "SUP-connect",
        case,
        "supervisor ÷ library, cost above the floor",
        if a > 0.0 {
            near(b / a, 2.0, 2)
        } else {
            format!("n/a (library {a:+.1} µs)")
        },
        "≤ 2.00",
        a > 0.0 && b / a <= 2.0,
    );
    Ok(())
}

/// What `hey` printed: requests/s and the count of 200 responses.
fn parse_hey(out: &str) -> Option<(f64, usize)> {
    let rps = out
        .lines()
        .find_map(|l| l.trim().strip_prefix("Requests/sec:"))
        .and_then(|v| v.trim().parse::<f64>().ok())?;
    let ok = out
        .lines()
        .find_map(|l| {
            let t = l.trim();
            t.strip_prefix("[200]")
                .and_then(|r| r.split_whitespace().next())
        })
        .and_then(|n| n.parse::<usize>().ok())
        .unwrap_or(0);
    Some((rps, ok))
}

pub fn hey(ctx: &Ctx, plan: &Plan, srv: &Servers, res: &mut Results) -> Result<(), String> {
    let Some(hey) = e2e::find_program("hey") else {
        eprintln!("SUP hey: hey is not installed (scripts/setup): skipped");
        return Ok(());
    };
    // hey gives each worker n / c requests: a multiple of the workers is what it sends.
    let n = plan.hey_requests / HEY_WORKERS * HEY_WORKERS;
    eprintln!(
        "SUP hey: {n} requests, {HEY_WORKERS} workers, no keep-alive, {} rounds",
        plan.hey_runs
    );
    let origin = e2e::HttpOrigin::start(vec![("/".into(), b"csbench\n".to_vec())]);
    let url = origin.url("/");
    let dante = srv.d1.port();
    let cs = ctx.cs_conf("SUP-hey", &urls(&[dante], false));
    let base = vec![
        "-n".to_string(),
        n.to_string(),
        "-c".into(),
        HEY_WORKERS.to_string(),
        "-disable-keepalive".into(),
    ];
    let mut own = base.clone();
    own.extend(["-x".into(), format!("socks5://127.0.0.1:{dante}")]);
    // (name, how, args, the address the origin must see)
    let variants: [(&'static str, Via, Vec<String>, std::net::IpAddr); 3] = [
        ("direct", Via::Plain, base.clone(), LOCAL),
        ("own", Via::Plain, own, DANTE_EXTERNAL),
        ("chainsocks", cs, base, DANTE_EXTERNAL),
    ];
    let mut rps: BTreeMap<&'static str, Vec<f64>> = BTreeMap::new();
    for round in 0..plan.hey_runs {
        ctx.settle();
        for k in 0..variants.len() {
            let Some((name, via, args, peer)) = variants.get((k + round) % variants.len()) else {
                continue;
            };
            let mut a = args.clone();
            a.push(url.clone());
            let before = origin.requests().len();
            let out = ctx.run(via, &hey, &a)?;
            let (r, ok) = parse_hey(&out).ok_or_else(|| format!("SUP hey {name}: {out}"))?;
            let seen = origin.requests();
            let new = seen.get(before..).unwrap_or_default();
            if ok != n || new.len() != n || new.iter().any(|(p, _)| p.ip() != *peer) {
                return Err(format!(
                    "SUP hey {name}: {ok} of {n} answered 200, the origin saw {} requests \
                     ({:?}…), all expected from {peer}\n{out}",
                    new.len(),
                    new.first()
                ));
            }
            eprintln!("  {name:<10} round {}: {r:.0} requests/s", round + 1);
            rps.entry(name).or_default().push(r);
        }
    }
    let case = "SUP Go: hey, 16 workers, a connection per request";
    let med = |k: &str| median(rps.get(k).map(|v| v.as_slice()).unwrap_or(&[]));
    let spread = |k: &str| {
        let mut s = Samples::default();
        for &x in rps.get(k).map(|v| v.as_slice()).unwrap_or(&[]) {
            s.add_run(&[x]);
        }
        s.spread(1.0, 0)
    };
    for (k, what) in [
        ("direct", "hey straight to the origin (no proxy, info)"),
        (
            "own",
            "hey speaking SOCKS5 itself (`-x socks5://`, Go's client)",
        ),
        (
            "chainsocks",
            "hey under chainsocks (the supervisor; hey makes raw syscalls)",
        ),
    ] {
        res.rows.push(Row::info(
            case,
            what,
            format!("{:.0} requests/s", med(k)),
            String::new(),
            spread(k),
        ));
    }
    let per_round: Vec<f64> = match (rps.get("chainsocks"), rps.get("own")) {
        (Some(c), Some(o)) => c.iter().zip(o).map(|(a, b)| a / b).collect(),
        _ => Vec::new(),
    };
    let v = median(&per_round);
    res.facts.hey_rps = Some([med("own"), med("chainsocks")]);
    res.check(
        "SUP-hey",
        case,
        "chainsocks ÷ hey's own SOCKS5, requests/s (per-round median)",
        near(v, 0.9, 3),
        "≥ 0.90",
        v >= 0.9,
    );
    if let Some(last) = res.rows.last_mut() {
        let mut s = Samples::default();
        for &x in &per_round {
            s.add_run(&[x]);
        }
        last.spread = format!("per round: {}", s.spread(1.0, 3));
    }
    Ok(())
}
