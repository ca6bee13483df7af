//! B3 (exec overhead), B4 (fake DNS), B5 (data path), B6 (--isolate forwarder throughput).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Instant;

use crate::relay::BulkSource;
use crate::stats::{Row, Samples, median, near};
use crate::{Ctx, Plan, Results, Servers, Via, chain_arg, field, urls};

/// Samples per key, in round order.
type Series = BTreeMap<&'static str, Vec<f64>>;

fn med(t: &Series, k: &str) -> f64 {
    median(t.get(k).map(|v| v.as_slice()).unwrap_or(&[]))
}

/// `min–max (n runs)` of single values per round.
fn spread(t: &Series, k: &str, scale: f64, digits: usize) -> String {
    let mut s = Samples::default();
    for &x in t.get(k).map(|v| v.as_slice()).unwrap_or(&[]) {
        s.add_run(&[x]);
    }
    s.spread(scale, digits)
}

/// Per-round ratios a[i] / b[i].
fn ratios(t: &Series, a: &str, b: &str) -> Vec<f64> {
    let (Some(x), Some(y)) = (t.get(a), t.get(b)) else {
        return Vec::new();
    };
    x.iter().zip(y).map(|(p, q)| p / q).collect()
}

fn ratio_spread(v: &[f64]) -> String {
    let mut s = Samples::default();
    for &x in v {
        s.add_run(&[x]);
    }
    format!("per round: {}", s.spread(1.0, 3))
}

// ---------------------------------------------------------------- B3

/// CPU time (ms) and minor page faults of the waited-for descendants so far.
fn children_usage() -> (f64, f64) {
    // SAFETY: all-zero is a valid rusage; getrusage fills it.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: ru is writable.
    unsafe { libc::getrusage(libc::RUSAGE_CHILDREN, &mut ru) };
    let ms = |t: libc::timeval| t.tv_sec as f64 * 1e3 + t.tv_usec as f64 / 1e3;
    (ms(ru.ru_utime) + ms(ru.ru_stime), ru.ru_minflt as f64)
}

/// An empty shared library (one function, built with the system's C compiler into the
/// benchmark's temp dir): what preloading any library costs, the floor of every LD_PRELOAD
/// shim. `None` without a C compiler.
pub fn empty_lib(ctx: &Ctx) -> Option<PathBuf> {
    let lib = ctx.dir.join("libcsempty.so");
    if lib.is_file() {
        return Some(lib);
    }
    let src = ctx
        .dir
        .write("csempty.c", b"int csbench_empty(void) { return 0; }\n");
    let ok = std::process::Command::new("cc")
        .args(["-O2", "-shared", "-fPIC", "-o"])
        .arg(&lib)
        .arg(&src)
        .status()
        .is_ok_and(|s| s.success());
    ok.then_some(lib)
}

/// The empty library plus, and nothing else, what libchainsocks.so's relocations make the
/// loader do: the same symbols looked up at load (its GOT imports, versioned as its are) and as
/// many relative relocations, spread over pages of read-only-after-relocation data like Rust's
/// vtables and static tables. Built as the empty library is: between the two lies what these
/// relocations cost; between it and libchainsocks.so, what is chainsocks' own (its segments,
/// constructors, TLS, less the C start files it does without). `None` without readelf or a C
/// compiler.
pub fn load_twin_lib(ctx: &Ctx, lib: &std::path::Path) -> Option<(PathBuf, usize, usize)> {
    let out = std::process::Command::new("readelf")
        .args(["-r", "-W"])
        .arg(lib)
        .output()
        .ok()?;
    let out = String::from_utf8_lossy(&out.stdout);
    let relative = out
        .lines()
        .filter(|l| l.contains("R_X86_64_RELATIVE"))
        .count();
    let mut syms: Vec<String> = out
        .lines()
        .filter(|l| l.contains("R_X86_64_") && !l.contains("RELATIVE") && !l.contains("JUMP_SLOT"))
        .filter_map(|l| l.split_whitespace().nth(4))
        .map(|s| s.split('@').next().unwrap_or(s).to_string())
        .filter(|s| s.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') && !s.is_empty())
        .collect();
    syms.sort();
    syms.dedup();
    if syms.is_empty() || relative == 0 {
        return None;
    }
    let twin = ctx.dir.join("libcstwin.so");
    // Strong references first, versioned as libchainsocks.so's are; weak ones if this libc
    // lacks one of them.
    let built = ["", " __attribute__((weak))"].iter().any(|weak| {
        let mut c =
            String::from("int csbench_empty(void) { return 0; }\nstatic const char s[8];\n");
        for s in &syms {
            c.push_str(&format!("extern char {s}[]{weak};\n"));
        }
        c.push_str("void *const csbench_imports[] = {\n");
        for s in &syms {
            c.push_str(&format!("    {s},\n"));
        }
        // One relocated pointer in every other slot: about the density of Rust's .data.rel.ro.
        c.push_str("};\nconst void *const csbench_relative[] = {\n");
        for _ in 0..relative {
            c.push_str("    s, 0,\n");
        }
        c.push_str("};\n");
        let src = ctx.dir.write("cstwin.c", c.as_bytes());
        std::process::Command::new("cc")
            .args(["-O2", "-w", "-shared", "-fPIC", "-o"])
            .arg(&twin)
            .arg(&src)
            .stderr(std::process::Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    });
    built.then_some((twin, syms.len(), relative))
}

/// Debian's libproxychains.so.4, if installed.
pub fn proxychains_lib() -> Option<PathBuf> {
    [
        "/usr/lib/x86_64-linux-gnu/libproxychains.so.4",
        "/lib/x86_64-linux-gnu/libproxychains.so.4",
    ]
    .iter()
    .map(PathBuf::from)
    .find(|p| p.is_file())
}

/// Execs per variant in B3's paired breakdown.
const PAIRED_EXECS: usize = 2000;

/// Issue 15's B3 target: the library's exec ÷ plain.
pub const B3_TARGET: f64 = 1.10;

/// A copy of `lib` in the benchmark's directory, so that every library preloaded in B3 was
/// written the same way: the same file as a linker wrote it measured ~10 µs per exec slower
/// than a `cp` of it here (the page cache holds them in different folios), which is more than
/// some differences these rows show. Copied once per run (B3's rounds and its breakdown
/// preload the same copy); the original if it cannot be copied.
fn copied(ctx: &Ctx, lib: &std::path::Path, name: &str) -> PathBuf {
    let to = ctx.dir.join(&format!("b3-{name}.so"));
    if to.is_file() {
        return to;
    }
    match std::fs::copy(lib, &to) {
        Ok(_) => to,
        Err(_) => lib.to_path_buf(),
    }
}

/// The breakdown's variant built by [`load_twin_lib`].
const TWIN: &str = "the empty C library plus libchainsocks.so's load-time relocations";

/// B3's paired breakdown: `csbenchclient exec` spawns /bin/true once per variant in turn
/// (plain, libchainsocks.so as under the launcher, an empty library, its load-time twin,
/// libproxychains.so.4), so
/// load from elsewhere cancels out of the per-turn ratios. The library's part of B3 without
/// `sh`'s forks and the launcher.
fn b3_paired(ctx: &Ctx, lib: &std::path::Path, res: &mut Results) -> Result<(), String> {
    let path = |p: PathBuf| p.to_string_lossy().into_owned();
    let mut variants: Vec<(&str, String)> = vec![
        ("plain", "-".into()),
        (
            "libchainsocks.so (as under the launcher)",
            path(copied(ctx, lib, "chainsocks")),
        ),
    ];
    if let Some(e) = empty_lib(ctx) {
        variants.push(("an empty C library", path(copied(ctx, &e, "empty"))));
    }
    let twin = load_twin_lib(ctx, lib);
    if let Some((t, _, _)) = &twin {
        variants.push((TWIN, path(copied(ctx, t, "twin"))));
    }
    if let Some(p) = proxychains_lib() {
        variants.push(("libproxychains.so.4", path(copied(ctx, &p, "proxychains"))));
    }
    eprintln!(
        "B3 paired breakdown: /bin/true × {PAIRED_EXECS} per variant, {} variants in turn",
        variants.len()
    );
    let pc_conf = ctx.dir.write(
        "exec-paired-pc.conf",
        b"strict_chain\nquiet_mode\nproxy_dns\n[ProxyList]\nsocks5 127.0.0.1 9\n",
    );
    let mut cmd = ctx.command(&Via::Plain, &ctx.client, &[]);
    cmd.arg("exec")
        .arg(PAIRED_EXECS.to_string())
        .arg("/bin/true")
        .args(variants.iter().map(|(_, v)| v))
        .env("CHAINSOCKS_LOG", "off")
        .env("CHAINSOCKS_SHM", ctx.dir.join("no-such-state"))
        .env("PROXYCHAINS_QUIET_MODE", "1")
        .env("PROXYCHAINS_CONF_FILE", &pc_conf);
    let out = ctx.run_cmd(cmd)?;
    let us: Vec<Vec<f64>> = (0..variants.len())
        .map(|i| crate::echo::ns_line_us(&out, &format!("exec_ns {i} ")))
        .collect();
    let plain = us.first().cloned().unwrap_or_default();
    let case = "B3 paired breakdown: /bin/true spawned in turn";
    let mut bars = Vec::new();
    let above = |what: &str| {
        let i = variants.iter().position(|(w, _)| *w == what)?;
        let v = us.get(i)?;
        Some(median(
            &v.iter()
                .zip(&plain)
                .map(|(a, b)| a - b)
                .collect::<Vec<f64>>(),
        ))
    };
    if let (Some(l), Some(e)) = (
        above("libchainsocks.so (as under the launcher)"),
        above("an empty C library"),
    ) {
        res.facts.b3_paired = Some([l, e]);
    }
    if let (Some(t), Some((_, syms, relative))) = (above(TWIN), &twin) {
        res.facts.b3_twin = Some((t, *syms, *relative, median(&plain)));
    }
    for ((what, _), v) in variants.iter().zip(&us) {
        let diff: Vec<f64> = v.iter().zip(&plain).map(|(a, b)| a - b).collect();
        let ratio: Vec<f64> = v.iter().zip(&plain).map(|(a, b)| a / b).collect();
        bars.push((
            match *what {
                "plain" => "plain (floor)".to_string(),
                "libchainsocks.so (as under the launcher)" => "chainsocks".into(),
                "an empty C library" => "empty library".into(),
                TWIN => "its relocations alone".into(),
                "libproxychains.so.4" => "proxychains4".into(),
                w => w.to_string(),
            },
            median(&diff),
        ));
        res.rows.push(Row::info(
            case,
            what,
            format!("{:.0} µs", median(v)),
            if what == &"plain" {
                String::new()
            } else {
                format!(
                    "{:+.1} µs, {:.3}× plain (medians of the per-turn differences and ratios)",
                    median(&diff),
                    median(&ratio)
                )
            },
            String::new(),
        ));
    }
    res.b3_plot
        .push(("paired: /bin/true alone, spawned in turn".into(), bars));
    Ok(())
}

pub fn b3(ctx: &Ctx, plan: &Plan, srv: &Servers, res: &mut Results) -> Result<(), String> {
    eprintln!(
        "B3 exec overhead: sh looping 1,000 × /bin/true, {} rounds",
        plan.b3_runs
    );
    let script = "i=0; while [ $i -lt 1000 ]; do /bin/true; i=$((i+1)); done".to_string();
    let args = vec!["-c".to_string(), script];
    let sh = PathBuf::from("/bin/sh");
    let one = [srv.d1.port()];
    let lib = ctx
        .cs_bin
        .parent()
        .map(|d| d.join("libchainsocks.so"))
        .unwrap_or_default();
    let Via::Cs(conf) = ctx.cs_conf("B3", &urls(&one, false)) else {
        return Err("B3: config".into());
    };
    // (name, how, LD_PRELOAD without a launcher)
    let mut variants: Vec<(&'static str, Via, Option<PathBuf>)> = vec![
        ("plain", Via::Plain, None),
        ("chainsocks", Via::CsNoSupervisor(conf.clone()), None),
        ("chainsocks supervised", Via::Cs(conf), None),
        ("proxychains4", ctx.pc_conf("B3", &one), None),
        (
            "preload lib",
            Via::Plain,
            Some(copied(ctx, &lib, "chainsocks")),
        ),
    ];
    if let Some(e) = empty_lib(ctx) {
        variants.push(("preload empty", Via::Plain, Some(copied(ctx, &e, "empty"))));
    }
    let mut t: Series = BTreeMap::new();
    let mut cpu: Series = BTreeMap::new();
    let mut faults: Series = BTreeMap::new();
    for round in 0..plan.b3_runs {
        ctx.settle();
        for k in 0..variants.len() {
            let Some((name, via, preload)) = variants.get((k + round) % variants.len()) else {
                continue;
            };
            let mut cmd = ctx.command(via, &sh, &args);
            if let Some(p) = preload {
                cmd.env("LD_PRELOAD", p).env("CHAINSOCKS_LOG", "off");
            }
            let (c0, f0) = children_usage();
            let start = Instant::now();
            ctx.run_cmd(cmd)?;
            let ms = start.elapsed().as_secs_f64() * 1e3;
            let (c1, f1) = children_usage();
            eprintln!(
                "  {name:<21} round {}: {ms:.0} ms, CPU {:.0} ms, {:.1} page faults per exec",
                round + 1,
                c1 - c0,
                (f1 - f0) / 1000.0
            );
            t.entry(name).or_default().push(ms);
            cpu.entry(name).or_default().push(c1 - c0);
            faults.entry(name).or_default().push((f1 - f0) / 1000.0);
        }
    }
    let case = "B3 exec: sh + 1,000 × /bin/true";
    let mut names: Vec<(&str, &str)> = vec![
        ("plain", "plain"),
        ("proxychains4", "under proxychains4 (info)"),
        (
            "chainsocks",
            "under chainsocks --no-supervisor (the library; launcher included)",
        ),
        (
            "chainsocks supervised",
            "under chainsocks, default launch: library + seccomp supervisor",
        ),
        (
            "preload lib",
            "breakdown: LD_PRELOAD=libchainsocks.so alone, no launcher",
        ),
    ];
    if t.contains_key("preload empty") {
        names.push((
            "preload empty",
            "reference: LD_PRELOAD of an empty C library (what preloading anything costs)",
        ));
    }
    for (name, what) in names {
        let v = med(&t, name);
        res.rows.push(Row::info(
            case,
            what,
            format!("{v:.0} ms"),
            format!(
                "{:.3}× plain; {:.0} µs per exec; CPU {:.0} µs, {:.1} page faults per exec",
                median(&ratios(&t, name, "plain")),
                v,
                med(&cpu, name),
                med(&faults, name)
            ),
            spread(&t, name, 1.0, 0),
        ));
    }
    res.facts.b3_faults = Some([
        med(&faults, "plain"),
        med(&faults, "chainsocks"),
        med(&faults, "preload empty"),
    ]);
    // Added per exec, from the per-round ratios (robust against load that moves whole
    // rounds) times plain's time per exec.
    let per_exec = med(&t, "plain");
    let mut bars = vec![("plain (floor)".to_string(), 0.0)];
    for (name, bar) in [
        ("preload empty", "empty library"),
        ("chainsocks", "chainsocks, library only"),
        ("chainsocks supervised", "chainsocks + supervisor"),
        ("proxychains4", "proxychains4"),
    ] {
        if t.contains_key(name) {
            let r = median(&ratios(&t, name, "plain"));
            bars.push((bar.to_string(), (r - 1.0) * per_exec));
        }
    }
    res.b3_plot
        .push(("whole launch: sh + 1,000 × /bin/true".into(), bars));
    let added = |name| (median(&ratios(&t, name, "plain")) - 1.0) * per_exec;
    if t.contains_key("preload empty") {
        res.facts.b3_loop = Some([
            added("chainsocks"),
            added("preload lib"),
            added("preload empty"),
        ]);
    }
    let rc = ratios(&cpu, "chainsocks", "plain");
    res.rows.push(Row::info(
        case,
        "chainsocks --no-supervisor ÷ plain in CPU time of the processes (info: less sensitive \
         to other load)",
        format!("{:.3}", median(&rc)),
        String::new(),
        ratio_spread(&rc),
    ));
    for (id, name, what, limit) in [
        (
            "B3",
            "chainsocks",
            "chainsocks --no-supervisor ÷ plain, median of the per-round ratios",
            B3_TARGET,
        ),
        (
            "B3-sup",
            "chainsocks supervised",
            "chainsocks with the supervisor's seccomp filter ÷ plain, median of the per-round \
             ratios",
            1.15,
        ),
    ] {
        let r = ratios(&t, name, "plain");
        let v = median(&r);
        res.check(
            id,
            case,
            what,
            near(v, limit, 3),
            &format!("≤ {limit:.2}"),
            v <= limit,
        );
        if let Some(last) = res.rows.last_mut() {
            last.spread = ratio_spread(&r);
        }
    }
    ctx.settle();
    b3_paired(ctx, &lib, res)
}

// ---------------------------------------------------------------- B4

pub fn b4(ctx: &Ctx, plan: &Plan, srv: &Servers, res: &mut Results) -> Result<(), String> {
    eprintln!(
        "B4 fake DNS: {} lookups with 1 thread, {} with 64 threads, {} rounds",
        plan.b4_one, plan.b4_many, plan.b4_runs
    );
    let hosts_name = hosts_name();
    let cs = ctx.cs_conf("B4", &urls(&[srv.d1.port()], false));
    let real = format!("name={hosts_name}");
    let kinds: Vec<(&'static str, Via, String, usize, usize)> = vec![
        ("real 1", Via::Plain, real.clone(), 1, plan.b4_one),
        ("real 64", Via::Plain, real, 64, plan.b4_many),
        ("new 1", cs.clone(), "new".into(), 1, plan.b4_one),
        ("new 64", cs.clone(), "new".into(), 64, plan.b4_many),
        ("known 1", cs.clone(), "known".into(), 1, plan.b4_one),
        ("known 64", cs, "known".into(), 64, plan.b4_many),
        ("spin 1", Via::Plain, "spin".into(), 1, plan.b4_one),
        ("spin 64", Via::Plain, "spin".into(), 64, plan.b4_many),
    ];
    // Per kind and round: median ns per call, lookups/s.
    let mut lat: Series = BTreeMap::new();
    let mut rate: Series = BTreeMap::new();
    for round in 0..plan.b4_runs {
        ctx.settle();
        for k in 0..kinds.len() {
            let Some((name, via, mode, threads, count)) = kinds.get((k + round) % kinds.len())
            else {
                continue;
            };
            let args = vec![
                "resolve".to_string(),
                mode.clone(),
                threads.to_string(),
                count.to_string(),
            ];
            let out = ctx.client(via, &args)?;
            let bad = || format!("B4 {name}: unexpected output {out}");
            let n = out
                .split_whitespace()
                .find_map(|w| w.strip_prefix("n="))
                .and_then(|v| v.parse::<f64>().ok())
                .ok_or_else(bad)?;
            let wall = field(&out, "wall_ns").ok_or_else(bad)?;
            let m = field(&out, "median_ns").ok_or_else(bad)?;
            let first = out
                .split_whitespace()
                .find_map(|w| w.strip_prefix("first="))
                .unwrap_or("");
            // Under the shim every name must get a fake address (198.18.0.0/15 by default);
            // the real lookup must find the /etc/hosts entry.
            if name.starts_with("spin") {
                // The calibration: no lookup, nothing to check.
            } else if name.starts_with("real") {
                if first != "127.0.0.1" {
                    return Err(format!(
                        "B4 {name}: {hosts_name} did not resolve to 127.0.0.1: {out}"
                    ));
                }
            } else if !first.starts_with("198.18.") && !first.starts_with("198.19.") {
                return Err(format!("B4 {name}: not a fake address: {out}"));
            }
            let r = n / (wall / 1e9);
            lat.entry(name).or_default().push(m);
            rate.entry(name).or_default().push(r);
            eprintln!(
                "  {name:<9} round {}: median {:.2} µs per lookup, {r:.0} lookups/s",
                round + 1,
                m / 1e3
            );
        }
    }
    let case = "B4 getaddrinfo";
    for (k, what) in [
        (
            "real 1",
            format!("real lookup of `{hosts_name}` (/etc/hosts), no shim, 1 thread"),
        ),
        ("new 1", "chainsocks, new names, 1 thread".to_string()),
        ("known 1", "chainsocks, known names, 1 thread".to_string()),
    ] {
        res.rows.push(Row::info(
            case,
            &what,
            format!("{:.2} µs", med(&lat, k) / 1e3),
            format!("{:.0} lookups/s", med(&rate, k)),
            spread(&lat, k, 1e-3, 2),
        ));
    }
    let r = ratios(&lat, "new 1", "real 1");
    res.check(
        "B4-new",
        case,
        "new fake name ÷ real /etc/hosts lookup (latency, per-round median)",
        near(median(&r), 1.0, 2),
        "< 1.00",
        median(&r) < 1.0,
    );
    if let Some(last) = res.rows.last_mut() {
        last.spread = ratio_spread(&r);
    }
    for (k, one, what) in [
        (
            "real 64",
            "real 1",
            format!("real lookup of `{hosts_name}`, 64 threads (info)"),
        ),
        (
            "new 64",
            "new 1",
            "chainsocks, new names, 64 threads".to_string(),
        ),
        (
            "known 64",
            "known 1",
            "chainsocks, known names, 64 threads".to_string(),
        ),
    ] {
        res.rows.push(Row::info(
            case,
            &what,
            format!("{:.0} lookups/s", med(&rate, k)),
            format!("{:.2}× one thread", median(&ratios(&rate, k, one))),
            spread(&rate, k, 1.0, 0),
        ));
    }
    let cores = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);
    let cal = ratios(&rate, "spin 64", "spin 1");
    res.facts.b4_calibration = Some(median(&cal));
    res.rows.push(Row::info(
        case,
        &format!(
            "calibration: a CPU-bound loop of a lookup's length, 64 threads ÷ 1 thread (what \
             these {cores} vCPUs deliver; {cores}× on dedicated cores)"
        ),
        format!("{:.2}×", median(&cal)),
        String::new(),
        ratio_spread(&cal),
    ));
    for (id, k, one) in [
        ("B4-new64", "new 64", "new 1"),
        ("B4-known64", "known 64", "known 1"),
    ] {
        let r = ratios(&rate, k, one);
        let v = median(&r);
        res.check(
            id,
            case,
            &format!("{k} threads ÷ 1 thread, lookups/s ({cores} cores: the limit is {cores}×)"),
            format!("{}×", near(v, 1.5, 2)),
            "≥ 1.50×",
            v >= 1.5,
        );
        if let Some(last) = res.rows.last_mut() {
            last.spread = ratio_spread(&r);
        }
    }
    Ok(())
}

/// A name /etc/hosts maps to 127.0.0.1 (`localhost` when present).
pub fn hosts_name() -> String {
    let text = std::fs::read_to_string("/etc/hosts").unwrap_or_default();
    let names: Vec<&str> = text
        .lines()
        .map(|l| l.split('#').next().unwrap_or(""))
        .filter(|l| l.trim_start().starts_with("127.0.0.1"))
        .flat_map(|l| l.split_whitespace().skip(1))
        .collect();
    if names.contains(&"localhost") {
        "localhost".into()
    } else {
        names.first().map_or("localhost".into(), |s| s.to_string())
    }
}

// ---------------------------------------------------------------- B5

pub fn b5(ctx: &Ctx, plan: &Plan, srv: &Servers, res: &mut Results) -> Result<(), String> {
    eprintln!(
        "B5 data path: {} MiB through one dante hop, {} pairs per shim",
        plan.b5_bytes >> 20,
        plan.b5_runs
    );
    let src = BulkSource::start()?;
    let one = [srv.d1.port()];
    let variants: [(&'static str, Via); 2] = [
        ("chainsocks", ctx.cs_conf("B5", &urls(&one, false))),
        ("proxychains4", ctx.pc_conf("B5", &one)),
    ];
    // MB/s of the shimmed and of the native half of each pair, and their ratio.
    let mut t: Series = BTreeMap::new();
    for round in 0..plan.b5_runs {
        ctx.settle();
        for (name, via) in &variants {
            let mut args = vec![
                "bulk".to_string(),
                "127.0.0.1".into(),
                src.port().to_string(),
                plan.b5_bytes.to_string(),
                "--socks5".into(),
                chain_arg(&one),
                "--pair".into(),
            ];
            if round % 2 == 1 {
                args.push("--floor-first".into());
            }
            let out = ctx.client(via, &args)?;
            let bad = || format!("B5: unexpected output {out}");
            let shim = field(&out, "bulk_ns").ok_or_else(bad)?;
            let floor = field(&out, "floor_bulk_ns").ok_or_else(bad)?;
            let bytes = field(&out, "bytes").ok_or_else(bad)?;
            if bytes as u64 != plan.b5_bytes {
                return Err(bad());
            }
            let (a, b) = (bytes / (shim / 1e9) / 1e6, bytes / (floor / 1e9) / 1e6);
            eprintln!(
                "  {name:<12} round {}: {a:.0} MB/s, native half {b:.0} MB/s",
                round + 1
            );
            let (k_shim, k_native, k_ratio) = match *name {
                "chainsocks" => ("cs", "cs native", "cs ratio"),
                _ => ("pc", "pc native", "pc ratio"),
            };
            t.entry(k_shim).or_default().push(a);
            t.entry(k_native).or_default().push(b);
            t.entry(k_ratio).or_default().push(a / b);
        }
    }
    let case = "B5 1 GiB through dante";
    let mut native = t.get("cs native").cloned().unwrap_or_default();
    native.extend(t.get("pc native").cloned().unwrap_or_default());
    let mut all: Series = BTreeMap::new();
    all.insert("native", native);
    res.rows.push(Row::info(
        case,
        "native: the client speaks SOCKS5 itself (the native half of every pair)",
        format!("{:.0} MB/s", med(&all, "native")),
        String::new(),
        spread(&all, "native", 1.0, 0),
    ));
    for (k, r, what) in [
        ("pc", "pc ratio", "proxychains4 (info)"),
        ("cs", "cs ratio", "chainsocks"),
    ] {
        res.rows.push(Row::info(
            case,
            what,
            format!("{:.0} MB/s", med(&t, k)),
            format!("{:.3}× its native half (per-pair median)", med(&t, r)),
            spread(&t, k, 1.0, 0),
        ));
    }
    let r = t.get("cs ratio").cloned().unwrap_or_default();
    let v = median(&r);
    res.check(
        "B5",
        case,
        "chainsocks ÷ native, MB/s (per-pair median)",
        near(v, 0.98, 3),
        "1.00 (≥ 0.98)",
        v >= 0.98,
    );
    if let Some(last) = res.rows.last_mut() {
        last.spread = ratio_spread(&r);
    }
    Ok(())
}

// ---------------------------------------------------------------- B6

/// Throughput through `--isolate`'s forwarder (program in its own namespace, first hop through
/// the launcher's splice relay) against the same transfer without `--isolate`, one dante hop.
pub fn b6(ctx: &Ctx, plan: &Plan, srv: &Servers, res: &mut Results) -> Result<(), String> {
    eprintln!(
        "B6 --isolate forwarder: {} MiB through one dante hop, {} rounds",
        plan.b5_bytes >> 20,
        plan.b5_runs
    );
    let src = BulkSource::start()?;
    let one = [srv.d1.port()];
    let direct = ctx.cs_conf("B6", &urls(&one, false));
    let Via::Cs(conf) = &direct else {
        return Err("B6: config".into());
    };
    let isolated = Via::CsIsolated(conf.clone());
    let mut t: Series = BTreeMap::new();
    for round in 0..plan.b5_runs {
        ctx.settle();
        let order: [(&'static str, &Via); 2] = if round % 2 == 0 {
            [("direct", &direct), ("isolated", &isolated)]
        } else {
            [("isolated", &isolated), ("direct", &direct)]
        };
        let mut got = BTreeMap::new();
        for (name, via) in order {
            let args = vec![
                "bulk".to_string(),
                "127.0.0.1".into(),
                src.port().to_string(),
                plan.b5_bytes.to_string(),
            ];
            let out = ctx.client(via, &args)?;
            let bad = || format!("B6: unexpected output {out}");
            let ns = field(&out, "bulk_ns").ok_or_else(bad)?;
            let bytes = field(&out, "bytes").ok_or_else(bad)?;
            if bytes as u64 != plan.b5_bytes {
                return Err(bad());
            }
            let mbs = bytes / (ns / 1e9) / 1e6;
            eprintln!("  {name:<9} round {}: {mbs:.0} MB/s", round + 1);
            got.insert(name, mbs);
            t.entry(name).or_default().push(mbs);
        }
        if let (Some(i), Some(d)) = (got.get("isolated"), got.get("direct")) {
            t.entry("ratio").or_default().push(i / d);
        }
    }
    let case = "B6 --isolate, 1 GiB through dante";
    for (k, what) in [
        ("direct", "chainsocks, the proxy reached directly"),
        (
            "isolated",
            "chainsocks --isolate: through the launcher's splice forwarder",
        ),
    ] {
        res.rows.push(Row::info(
            case,
            what,
            format!("{:.0} MB/s", med(&t, k)),
            String::new(),
            spread(&t, k, 1.0, 0),
        ));
    }
    let r = t.get("ratio").cloned().unwrap_or_default();
    let v = median(&r);
    res.check(
        "B6",
        case,
        "isolated ÷ direct, MB/s (per-round median)",
        near(v, 0.9, 3),
        "≥ 0.90",
        v >= 0.9,
    );
    if let Some(last) = res.rows.last_mut() {
        last.spread = ratio_spread(&r);
    }
    Ok(())
}
