//! Where the time of a connection goes, for the B1a workload: syscalls per connection
//! (`strace -f -c`) and user-space instructions per connection (`valgrind --tool=callgrind`),
//! each the difference between a run of 600 and a run of 100 connections divided by 500, so
//! process start-up cancels out. Deterministic counts: unlike timings, they do not depend on
//! what else the machine is doing.

use std::collections::BTreeMap;

use crate::{Ctx, Results, Servers, Via, chain_arg, urls};

const SMALL: usize = 100;
const BIG: usize = 600;

/// The profile when issue 15 (performance, round 2) was filed: docs/benchmarks.md at this
/// commit. Counts, which do not depend on load, shown beside today's as "before".
const BEFORE: &str = "73924f7";
/// chainsocks' syscalls per B1a connection then (`strace -f -c`, same method).
const SYSCALLS_BEFORE: &[(&str, f64)] = &[
    ("close", 1.0),
    ("connect", 1.0),
    ("fcntl", 3.0),
    ("getpeername", 1.0),
    ("getsockopt", 3.0),
    ("newfstatat", 1.0),
    ("poll", 3.0),
    ("read", 1.0),
    ("recvfrom", 4.0),
    ("sendto", 2.0),
    ("socket", 1.0),
    ("write", 1.0),
];
/// User-space instructions per B1a connection then: the floor, chainsocks.
const INSTR_BEFORE: [f64; 2] = [1296.0, 5707.0];
/// Instructions of one /bin/true then: plain, with libchainsocks.so (which needed
/// libgcc_s.so.1 then).
const EXEC_BEFORE: [f64; 2] = [128320.0, 215284.0];

pub fn profile(ctx: &Ctx, srv: &Servers, res: &mut Results) -> Result<(), String> {
    let ports = [srv.d1.port()];
    let variants: [(&str, Via, bool); 3] = [
        ("floor (the client speaks SOCKS5)", Via::Plain, true),
        (
            "chainsocks",
            ctx.cs_conf("prof", &urls(&ports, false)),
            false,
        ),
        ("proxychains4", ctx.pc_conf("prof", &ports), false),
    ];
    let client_args = |n: usize, native: bool| {
        let mut a = vec![
            ctx.client.to_string_lossy().into_owned(),
            "echo".into(),
            "127.0.0.1".into(),
            srv.echo.port().to_string(),
            n.to_string(),
        ];
        if native {
            a.push("--socks5".into());
            a.push(chain_arg(&ports));
        }
        a
    };
    let mut text = String::new();

    if let Some(strace) = e2e::find_program("strace") {
        eprintln!("profile: strace -c of the B1a workload");
        let mut table: BTreeMap<String, Vec<f64>> = BTreeMap::new();
        let mut totals = Vec::new();
        for (i, (_, via, native)) in variants.iter().enumerate() {
            let mut counts = Vec::new();
            for n in [SMALL, BIG] {
                let out = ctx.dir.join(&format!("strace-{i}-{n}.txt"));
                let mut args = vec![
                    "-f".to_string(),
                    "-c".into(),
                    "-o".into(),
                    out.to_string_lossy().into_owned(),
                ];
                args.extend(client_args(n, *native));
                ctx.run(via, &strace, &args)?;
                counts.push(parse_strace(
                    &std::fs::read_to_string(&out).unwrap_or_default(),
                ));
            }
            let (a, b) = (
                counts.first().cloned().unwrap_or_default(),
                counts.get(1).cloned().unwrap_or_default(),
            );
            let mut total = 0.0;
            for (name, nb) in &b {
                let per = (nb - a.get(name).copied().unwrap_or(0.0)) / (BIG - SMALL) as f64;
                if per >= 0.05 {
                    let e = table
                        .entry(name.clone())
                        .or_insert_with(|| vec![0.0; variants.len()]);
                    if let Some(x) = e.get_mut(i) {
                        *x = per;
                    }
                    total += per;
                }
            }
            totals.push(total);
        }
        text.push_str(&format!(
            "Syscalls per connection of the client process (`socket` → echo byte back → \
             `close`), `strace -f -c`, ({BIG} − {SMALL} connections) ÷ {}:\n\n| syscall |",
            BIG - SMALL
        ));
        for (name, _, _) in &variants {
            text.push_str(&format!(" {name} |"));
        }
        text.push_str(&format!(" chainsocks before ({BEFORE}) |\n|---|"));
        for _ in 0..=variants.len() {
            text.push_str("---:|");
        }
        text.push('\n');
        let before = |name: &str| {
            SYSCALLS_BEFORE
                .iter()
                .find(|(n, _)| *n == name)
                .map_or(0.0, |(_, c)| *c)
        };
        for (name, _) in SYSCALLS_BEFORE {
            table
                .entry(name.to_string())
                .or_insert_with(|| vec![0.0; variants.len()]);
        }
        for (name, v) in &table {
            if v.iter().any(|x| *x > 0.0) {
                res.facts.syscalls.push((
                    name.clone(),
                    [
                        v.first().copied().unwrap_or(0.0),
                        v.get(1).copied().unwrap_or(0.0),
                        v.get(2).copied().unwrap_or(0.0),
                    ],
                ));
            }
            text.push_str(&format!("| {name} |"));
            for x in v {
                text.push_str(&format!(" {x:.1} |"));
            }
            text.push_str(&format!(" {:.1} |\n", before(name)));
        }
        text.push_str("| **total** |");
        for t in &totals {
            text.push_str(&format!(" **{t:.1}** |"));
        }
        let total_before: f64 = SYSCALLS_BEFORE.iter().map(|(_, c)| c).sum();
        text.push_str(&format!(" **{total_before:.1}** |\n\n"));
    } else {
        text.push_str("strace is not installed: no syscall counts.\n\n");
    }

    if let Some(valgrind) = e2e::find_program("valgrind") {
        eprintln!("profile: callgrind instruction counts of the B1a workload");
        let mut per = Vec::new();
        for (i, (_, via, native)) in variants.iter().enumerate() {
            let mut ir = Vec::new();
            for n in [SMALL, BIG] {
                let log = ctx.dir.join(&format!("callgrind-{i}-{n}.log"));
                let out = ctx.dir.join(&format!("callgrind-{i}-{n}.out"));
                let mut args = vec![
                    "--tool=callgrind".to_string(),
                    format!("--callgrind-out-file={}", out.display()),
                    format!("--log-file={}", log.display()),
                ];
                args.extend(client_args(n, *native));
                ctx.run(via, &valgrind, &args)?;
                let l = std::fs::read_to_string(&log).unwrap_or_default();
                let c = l
                    .lines()
                    .find_map(|x| x.split("Collected :").nth(1))
                    .and_then(|v| v.trim().parse::<f64>().ok())
                    .ok_or_else(|| format!("callgrind: no count in {}", log.display()))?;
                ir.push(c);
            }
            per.push(
                (ir.get(1).copied().unwrap_or(0.0) - ir.first().copied().unwrap_or(0.0))
                    / (BIG - SMALL) as f64,
            );
        }
        text.push_str(
            "User-space instructions per connection of the client process, shim included \
             (`valgrind --tool=callgrind`, same difference of two runs; the kernel's share of \
             each syscall is not in it):\n\n| | instructions |\n|---|---:|\n",
        );
        for ((name, _, _), v) in variants.iter().zip(&per) {
            text.push_str(&format!("| {name} | {v:.0} |\n"));
        }
        let [floor_then, cs_then] = INSTR_BEFORE;
        text.push_str(&format!(
            "| chainsocks before ({BEFORE}; the floor then: {floor_then:.0}) | {cs_then:.0} |\n\n"
        ));
        if let [a, b, c] = per[..] {
            res.facts.instr = Some([a, b, c]);
        }
        res.facts.exec_instr = exec_instructions(ctx, &valgrind, res, &mut text)?;
    } else {
        text.push_str("valgrind is not installed: no instruction counts.\n\n");
    }
    elf_facts(ctx, res, &mut text);
    if let Some(strace) = e2e::find_program("strace") {
        lookup_syscalls(ctx, &strace, srv, res, &mut text)?;
    }
    if let Some(perf) = e2e::find_program("perf") {
        perf_lookups(ctx, &perf, srv, res, &mut text);
    }
    res.notes
        .push(("Where a connection's time goes (B1a workload)".into(), text));
    Ok(())
}

/// libchainsocks.so's dynamic section (`readelf -d`): its NEEDED libraries and whether every
/// import is bound at load time (BIND_NOW / FLAGS_1 NOW).
fn elf_facts(ctx: &Ctx, res: &mut Results, text: &mut String) {
    let lib = ctx
        .cs_bin
        .parent()
        .map(|d| d.join("libchainsocks.so"))
        .unwrap_or_default();
    let Ok(o) = std::process::Command::new("readelf")
        .arg("-d")
        .arg(&lib)
        .output()
    else {
        return;
    };
    let out = String::from_utf8_lossy(&o.stdout);
    let needed: Vec<&str> = out
        .lines()
        .filter(|l| l.contains("(NEEDED)"))
        .filter_map(|l| l.split('[').nth(1).and_then(|x| x.split(']').next()))
        .collect();
    let bind_now = out.lines().any(|l| {
        (l.contains("(FLAGS)") && l.contains("BIND_NOW"))
            || (l.contains("(FLAGS_1)") && l.contains("NOW"))
    });
    res.facts.lib_needs_gcc = Some(needed.iter().any(|n| n.starts_with("libgcc_s")));
    res.facts.lib_bind_now = Some(bind_now);
    text.push_str(&format!(
        "libchainsocks.so (`readelf -d`): needs {}; {}.",
        needed.join(", "),
        if bind_now {
            "linked with BIND_NOW (every import bound at load)"
        } else {
            "lazy binding for its PLT slots"
        }
    ));
    // Relocations (`readelf -r`): relative ones cost a store each (and dirty the page they
    // are on); a symbol reference outside the PLT is looked up at load, lazy or not.
    if let Ok(o) = std::process::Command::new("readelf")
        .args(["-r", "-W"])
        .arg(&lib)
        .output()
    {
        let out = String::from_utf8_lossy(&o.stdout);
        let count = |k: &str| out.lines().filter(|l| l.contains(k)).count();
        let relative = count("R_X86_64_RELATIVE");
        let plt = count("R_X86_64_JUMP_SLOT");
        let at_load = out
            .lines()
            .filter(|l| {
                l.contains("R_X86_64_") && !l.contains("RELATIVE") && !l.contains("JUMP_SLOT")
            })
            .count();
        res.facts.lib_relocs = Some([relative, at_load, plt]);
        text.push_str(&format!(
            " Relocations (`readelf -r`): {relative} relative, {at_load} symbol references \
             bound at load (GOT), {plt} PLT slots bound on first call."
        ));
    }
    // Program headers (`readelf -l`): each PT_LOAD is an mmap at every load.
    if let Ok(o) = std::process::Command::new("readelf")
        .args(["-l", "-W"])
        .arg(&lib)
        .output()
    {
        let out = String::from_utf8_lossy(&o.stdout);
        let loads: Vec<&str> = out
            .lines()
            .filter(|l| l.trim_start().starts_with("LOAD "))
            .collect();
        // A segment that is executable and starts at file offset 0 holds the headers and the
        // read-only data too (no separate code).
        let merged = loads.iter().any(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            f.get(1).is_some_and(|o| {
                o.trim_start_matches("0x")
                    .trim_start_matches('0')
                    .is_empty()
            }) && l.contains(" R E ")
        });
        res.facts.lib_loads = Some((loads.len(), merged));
        text.push_str(&format!(
            " Loadable segments (`readelf -l`): {}{}.",
            loads.len(),
            if merged {
                " (read-only data and code in one)"
            } else {
                ""
            }
        ));
    }
    text.push_str("\n\n");
}

/// Where new-name lookups spend their time with 1 and with 64 threads (`perf record -e
/// cpu-clock`, no hardware counters needed): what grows with the threads is what does not
/// scale. Skipped quietly if perf cannot record here.
fn perf_lookups(
    ctx: &Ctx,
    perf: &std::path::Path,
    srv: &Servers,
    res: &mut Results,
    text: &mut String,
) {
    let cs = ctx.cs_conf("prof-perf", &urls(&[srv.d1.port()], false));
    let mut cols: Vec<Vec<(String, f64)>> = Vec::new();
    for threads in [1usize, 64] {
        let data = ctx.dir.join(&format!("perf-{threads}.data"));
        let args = vec![
            "record".to_string(),
            "-q".into(),
            "-e".into(),
            "cpu-clock".into(),
            "-F".into(),
            "10000".into(),
            "-o".into(),
            data.to_string_lossy().into_owned(),
            ctx.client.to_string_lossy().into_owned(),
            "resolve".into(),
            "new".into(),
            threads.to_string(),
            "64000".into(),
        ];
        if ctx.run(&cs, perf, &args).is_err() {
            return;
        }
        let Ok(o) = std::process::Command::new(perf)
            .args(["report", "--stdio", "--no-children", "--sort", "sym", "-i"])
            .arg(&data)
            .output()
        else {
            return;
        };
        let top: Vec<(String, f64)> = String::from_utf8_lossy(&o.stdout)
            .lines()
            .filter_map(|l| {
                let t = l.trim_start();
                let (pct, rest) = t.split_once('%')?;
                let pct = pct.parse::<f64>().ok()?;
                let sym = rest
                    .trim()
                    .trim_start_matches("[.]")
                    .trim_start_matches("[k]")
                    .trim();
                let kind = if rest.contains("[k]") {
                    " (kernel)"
                } else {
                    ""
                };
                Some((format!("`{sym}`{kind}"), pct))
            })
            .take(10)
            .collect();
        cols.push(top);
    }
    text.push_str(
        "Where new-name lookups spend their time (`perf record -e cpu-clock`, chainsocks, 64,000 \
         new names), top symbols with 1 and with 64 threads:\n\n| 1 thread | % | 64 threads | % |\n|---|---:|---|---:|\n",
    );
    for i in 0..10 {
        let cell = |c: Option<&Vec<(String, f64)>>| {
            c.and_then(|v| v.get(i))
                .map_or((String::new(), String::new()), |(n, p)| {
                    (n.clone(), format!("{p:.1}"))
                })
        };
        let (a, pa) = cell(cols.first());
        let (b, pb) = cell(cols.get(1));
        text.push_str(&format!("| {a} | {pa} | {b} | {pb} |\n"));
    }
    text.push('\n');
    // What grew from 1 to 64 threads (a symbol outside the 1-thread top 10 counts as 0 there).
    if let (Some(one), Some(many)) = (cols.first(), cols.get(1)) {
        let mut grew: Vec<(String, f64)> = many
            .iter()
            .map(|(n, p)| {
                let before = one.iter().find(|(m, _)| m == n).map_or(0.0, |(_, q)| *q);
                (n.clone(), p - before)
            })
            .filter(|(_, d)| *d >= 1.0)
            .collect();
        grew.sort_by(|a, b| b.1.total_cmp(&a.1));
        res.facts.perf_growth = Some(grew);
    }
}

/// Syscalls per getaddrinfo + freeaddrinfo (B4): a new name under chainsocks, and the real
/// lookup of the /etc/hosts name without a shim.
fn lookup_syscalls(
    ctx: &Ctx,
    strace: &std::path::Path,
    srv: &Servers,
    res: &mut Results,
    text: &mut String,
) -> Result<(), String> {
    let cs = ctx.cs_conf("prof-dns", &urls(&[srv.d1.port()], false));
    let real = format!("name={}", crate::cases::hosts_name());
    let mut cols: Vec<BTreeMap<String, f64>> = Vec::new();
    for (i, (via, mode)) in [(&cs, "new".to_string()), (&Via::Plain, real)]
        .iter()
        .enumerate()
    {
        let mut counts = Vec::new();
        for n in [SMALL, BIG] {
            let out = ctx.dir.join(&format!("strace-dns-{i}-{n}.txt"));
            let args = vec![
                "-f".to_string(),
                "-c".into(),
                "-o".into(),
                out.to_string_lossy().into_owned(),
                ctx.client.to_string_lossy().into_owned(),
                "resolve".into(),
                mode.clone(),
                "1".into(),
                n.to_string(),
            ];
            ctx.run(via, strace, &args)?;
            counts.push(parse_strace(
                &std::fs::read_to_string(&out).unwrap_or_default(),
            ));
        }
        let (a, b) = (
            counts.first().cloned().unwrap_or_default(),
            counts.get(1).cloned().unwrap_or_default(),
        );
        let per: BTreeMap<String, f64> = b
            .iter()
            .map(|(k, v)| {
                (
                    k.clone(),
                    (v - a.get(k).copied().unwrap_or(0.0)) / (BIG - SMALL) as f64,
                )
            })
            .filter(|(_, v)| *v >= 0.05)
            .collect();
        cols.push(per);
    }
    let names: std::collections::BTreeSet<String> =
        cols.iter().flat_map(|c| c.keys().cloned()).collect();
    text.push_str(
        "Syscalls per `getaddrinfo` + `freeaddrinfo` (B4, one thread, same difference of two \
         runs):\n\n| syscall | chainsocks, new name | real lookup, /etc/hosts |\n|---|---:|---:|\n",
    );
    let mut tot = [0.0f64; 2];
    for n in &names {
        let v = [
            cols.first().and_then(|c| c.get(n)).copied().unwrap_or(0.0),
            cols.get(1).and_then(|c| c.get(n)).copied().unwrap_or(0.0),
        ];
        tot[0] += v[0];
        tot[1] += v[1];
        text.push_str(&format!("| {n} | {:.2} | {:.2} |\n", v[0], v[1]));
        res.facts.lookup_syscalls.push((n.clone(), v));
    }
    text.push_str(&format!(
        "| **total** | **{:.2}** | **{:.2}** |\n\n",
        tot[0], tot[1]
    ));
    Ok(())
}

/// B3's unit of work, one `/bin/true`, under callgrind: instructions from exec to exit
/// (dynamic loader included) plainly and with each library preloaded; then where the
/// loader's added instructions go with libchainsocks.so (`callgrind_annotate`, per function,
/// against plain). libchainsocks.so runs as under the launcher (`CHAINSOCKS_SHM` set: its
/// constructor maps nothing).
fn exec_instructions(
    ctx: &Ctx,
    valgrind: &std::path::Path,
    res: &mut Results,
    text: &mut String,
) -> Result<Vec<(String, f64)>, String> {
    let mut got = Vec::new();
    let lib = ctx
        .cs_bin
        .parent()
        .map(|d| d.join("libchainsocks.so"))
        .unwrap_or_default();
    let pc_lib = crate::cases::proxychains_lib();
    let mut cases: Vec<(&str, Option<std::path::PathBuf>)> = vec![("plain", None)];
    if let Some(e) = crate::cases::empty_lib(ctx) {
        cases.push(("LD_PRELOAD=empty C library", Some(e)));
    }
    cases.push(("LD_PRELOAD=libchainsocks.so", Some(lib)));
    if let Some(p) = pc_lib {
        cases.push(("LD_PRELOAD=libproxychains.so.4", Some(p)));
    }
    let pc_conf = ctx.dir.join("exec-pc.conf");
    let _ = std::fs::write(
        &pc_conf,
        "strict_chain\nquiet_mode\nproxy_dns\n[ProxyList]\nsocks5 127.0.0.1 9\n",
    );
    text.push_str(
        "Instructions of one `/bin/true` from exec to exit, dynamic loader and library \
         constructors included (`valgrind --tool=callgrind`), B3's unit of work \
         (libchainsocks.so as under the launcher):\n\n\
         | | instructions | added |\n|---|---:|---:|\n",
    );
    let mut base = None;
    let mut outs = Vec::new();
    for (i, (name, pre)) in cases.iter().enumerate() {
        let log = ctx.dir.join(&format!("callgrind-true-{i}.log"));
        let out = ctx.dir.join(&format!("callgrind-true-{i}.out"));
        let mut cmd = e2e::clean(std::process::Command::new(valgrind));
        cmd.arg("--tool=callgrind")
            .arg(format!("--callgrind-out-file={}", out.display()))
            .arg(format!("--log-file={}", log.display()))
            .arg("/bin/true")
            .env("CHAINSOCKS_LOG", "off")
            .env("CHAINSOCKS_SHM", ctx.dir.join("no-such-state"))
            .env("PROXYCHAINS_QUIET_MODE", "1")
            .env("PROXYCHAINS_CONF_FILE", &pc_conf);
        if let Some(p) = pre {
            cmd.env("LD_PRELOAD", p);
        }
        ctx.run_cmd(cmd)?;
        let l = std::fs::read_to_string(&log).unwrap_or_default();
        let c = l
            .lines()
            .find_map(|x| x.split("Collected :").nth(1))
            .and_then(|v| v.trim().parse::<f64>().ok())
            .ok_or_else(|| format!("callgrind: no count in {}", log.display()))?;
        let b = *base.get_or_insert(c);
        text.push_str(&format!("| {name} | {c:.0} | {:+.0} |\n", c - b));
        got.push((name.to_string(), c));
        outs.push((name.to_string(), out));
    }
    let [plain_then, cs_then] = EXEC_BEFORE;
    text.push_str(&format!(
        "| LD_PRELOAD=libchainsocks.so before ({BEFORE}: it needed libgcc_s.so.1; plain then: \
         {plain_then:.0}) | {cs_then:.0} | {:+.0} |\n\n",
        cs_then - plain_then
    ));
    let per_fn = |name: &str| {
        outs.iter()
            .find(|(n, _)| n == name)
            .map(|(_, f)| annotate(f))
            .unwrap_or_default()
    };
    let (plain, cs) = (per_fn("plain"), per_fn("LD_PRELOAD=libchainsocks.so"));
    if !plain.is_empty() && !cs.is_empty() {
        let mut added: Vec<(String, f64)> = cs
            .iter()
            .map(|(f, n)| (f.clone(), n - plain.get(f).copied().unwrap_or(0.0)))
            .filter(|(_, d)| *d >= 500.0)
            .collect();
        added.sort_by(|a, b| b.1.total_cmp(&a.1));
        added.truncate(10);
        text.push_str(
            "Where the added instructions of one `/bin/true` with libchainsocks.so go, per \
             function (`callgrind_annotate`, against plain; the dynamic loader's symbol \
             lookups are `do_lookup_x`, `_dl_lookup_symbol_x`, `check_match`, `strcmp`; its \
             relocation loop `_dl_relocate_object`; symbol versions `_dl_check_map_versions`):\n\n\
             | function | instructions added |\n|---|---:|\n",
        );
        for (f, d) in &added {
            text.push_str(&format!("| `{f}` | {d:+.0} |\n"));
        }
        text.push('\n');
        res.facts.loader_top = added;
    }
    Ok(got)
}

/// Instructions per function (`callgrind_annotate`, exclusive), summed over files.
fn annotate(out: &std::path::Path) -> BTreeMap<String, f64> {
    let mut m = BTreeMap::new();
    let Ok(o) = std::process::Command::new("callgrind_annotate")
        .args(["--auto=no", "--inclusive=no", "--threshold=100"])
        .arg(out)
        .output()
    else {
        return m;
    };
    for l in String::from_utf8_lossy(&o.stdout).lines() {
        // "12,345 (10.00%)  file:function [object]"
        let t = l.trim_start();
        let Some((num, rest)) = t.split_once(' ') else {
            continue;
        };
        let Ok(n) = num.replace(',', "").parse::<f64>() else {
            continue;
        };
        let Some((_, func)) = rest.split_once(')') else {
            continue;
        };
        let func = func.trim();
        if func.is_empty() || func.contains("PROGRAM TOTALS") {
            continue;
        }
        let func = func.split(" [").next().unwrap_or(func);
        // Drop the source file in front ("./elf/dl-lookup.c:do_lookup_x"), not a path
        // inside a Rust name ("chainsocks::state::init").
        let func = match func.split_once(':') {
            Some((file, f))
                if !f.starts_with(':') && (file.contains('/') || file.contains('.')) =>
            {
                f
            }
            _ => func,
        };
        let func = func.trim().to_string();
        *m.entry(func).or_insert(0.0) += n;
    }
    m
}

fn parse_strace(text: &str) -> BTreeMap<String, f64> {
    let mut m = BTreeMap::new();
    for l in text.lines() {
        let w: Vec<&str> = l.split_whitespace().collect();
        // % time, seconds, usecs/call, calls, [errors], syscall
        if w.len() >= 5 && w.first().is_some_and(|x| x.parse::<f64>().is_ok()) {
            let Some(name) = w.last() else { continue };
            if *name == "total" {
                continue;
            }
            if let Some(calls) = w.get(3).and_then(|c| c.parse::<f64>().ok()) {
                m.insert(name.to_string(), calls);
            }
        }
    }
    m
}
