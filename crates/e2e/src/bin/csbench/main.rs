//! csbench: chainsocks against proxychains4, same real servers, same client (issue 6).
//!
//! Run it with `sudo scripts/bench [--quick]` (which builds the workspace first, profile
//! `profiling`: release with line tables and symbols for perf and valgrind). As
//! root it moves its main thread into a fresh network namespace (`e2e::netns()`), starts two
//! danted, `ssh -D` (with its own sshd), an echo server, a bulk source and the delay relays
//! there — all on 127.0.0.1 — and runs the `csbenchclient` binary plainly, under the release
//! `chainsocks` launcher (`-q`, `quiet = true`, `CHAINSOCKS_LOG=off`) and under
//! `proxychains4 -q` (strict_chain, quiet_mode). It prints one Markdown table and writes
//! docs/benchmarks.md, docs/bench-b2.svg and docs/bench-b1-b3.svg.
//! The supervisor cases (SUP) run the same client linked statically under the launcher (its
//! seccomp supervisor proxies it) and Debian's `hey` (Go) under the launcher against hey's own
//! SOCKS5 client; the UDP cases run `csudp` through dante's UDP ASSOCIATE.
//!
//! ```text
//! csbench [--quick] [--only B1,B2,B3,B4,B5,B6,SUP,UDP,PROFILE] [--docs DIR | --no-write]
//! csbench --serve      start the servers and relays, print their ports, wait for EOF on stdin
//!                      (for profiling by hand: nsenter -t PID -n …)
//! ```
//! Method (why the numbers can be trusted on a shared, noisy 2-core machine):
//! - Differences that are small against the servers' own time (B1's cost above the floor,
//!   B5's throughput) are measured in PAIRS inside one client process: under a shim the client
//!   alternates a libc connection (proxied by the shim) with a floor connection made of raw
//!   `syscall()`s that no LD_PRELOAD shim sees, the client speaking SOCKS5 itself. Both halves
//!   of a pair run within a millisecond of each other, so background load cancels out.
//! - Ratios between separate commands (B3, B4) are taken per round (the variants of a round run
//!   back to back, in an order that rotates every round), then the median of the rounds.
//! - Before each round it samples /proc/stat while its own processes are idle, and waits (a
//!   bounded time) while other processes keep the CPUs busy; the loads are in the report.
//!
//! Never: binds or connects outside loopback, signals a process it did not start, or changes
//! a target or the method after seeing a result.

mod cases;
mod echo;
mod profile;
mod relay;
mod report;
mod stats;
mod sup;
mod svg;
mod udp;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use e2e::{Dante, DanteOpts, Echo, SshOpts, SshSocks, TempDir};
use stats::Row;

/// How long one client run may take.
const RUN_TIMEOUT: Duration = Duration::from_secs(600);
/// B2's one-way delay per link crossing (ms).
pub const DELAY_MS: u64 = 10;
const GIB: u64 = 1 << 30;

/// Repetition counts: full run and `--quick`.
#[derive(Clone, Copy)]
pub struct Plan {
    pub quick: bool,
    /// B1: connections (pairs, under a shim) per client run; rounds.
    pub b1_conns: usize,
    pub b1_runs: usize,
    /// B2: connections per client run; rounds.
    pub b2_conns: usize,
    pub b2_runs: usize,
    /// B3: rounds (each variant runs one loop of 1,000 execs per round).
    pub b3_runs: usize,
    /// B4: lookups per run with one thread / 64 threads; rounds.
    pub b4_one: usize,
    pub b4_many: usize,
    pub b4_runs: usize,
    /// B5: bytes per transfer; pairs (chainsocks) per run... runs.
    pub b5_bytes: u64,
    pub b5_runs: usize,
    /// SUP: connections (pairs) per client run and rounds of the connect case; requests per
    /// `hey` run and rounds of the hey case.
    pub sup_conns: usize,
    pub sup_runs: usize,
    pub hey_requests: usize,
    pub hey_runs: usize,
    /// UDP: datagrams per round-trip run and per throughput run; rounds.
    pub udp_rtt_count: usize,
    pub udp_tput_count: usize,
    pub udp_runs: usize,
}

impl Plan {
    fn new(quick: bool) -> Plan {
        if quick {
            Plan {
                quick,
                b1_conns: 300,
                b1_runs: 2,
                b2_conns: 3,
                b2_runs: 2,
                b3_runs: 3,
                b4_one: 32_000,
                b4_many: 32_000,
                b4_runs: 3,
                b5_bytes: GIB,
                b5_runs: 2,
                sup_conns: 300,
                sup_runs: 2,
                hey_requests: 1008,
                hey_runs: 2,
                udp_rtt_count: 500,
                udp_tput_count: 5_000,
                udp_runs: 2,
            }
        } else {
            Plan {
                quick,
                b1_conns: 2_000,
                b1_runs: 3,
                b2_conns: 6,
                b2_runs: 3,
                // B3's and SUP's effects (a few % of an exec, tens of µs of a connect) are
                // near the rounds' spread on a shared VM: more rounds steady the medians.
                b3_runs: 15,
                // New names must fit the fake-DNS table (131,070 per launch); 2,000 per thread
                // keeps thread start-up and exit a small share of a run.
                b4_one: 128_000,
                b4_many: 128_000,
                // A run lasts a few tenths of a second, so one stall of the VM moves a single
                // round's scaling by ±0.4 (seen: 0.89-1.79): more rounds.
                b4_runs: 9,
                // B5's ratio is 1.00 but for the pairs' noise, and SUP's and hey's are within
                // their rounds' spread of the targets: more rounds, steadier medians (about a
                // minute more in all).
                b5_bytes: GIB,
                b5_runs: 9,
                sup_conns: 2_000,
                sup_runs: 7,
                hey_requests: 2_000,
                hey_runs: 9,
                udp_rtt_count: 2_000,
                udp_tput_count: 20_000,
                udp_runs: 5,
            }
        }
    }
}

/// How a client run is launched.
#[derive(Clone)]
pub enum Via {
    Plain,
    /// chainsocks with this config file (the library and, as root, the seccomp supervisor).
    Cs(PathBuf),
    /// chainsocks `--no-supervisor` with this config file: the library alone.
    CsNoSupervisor(PathBuf),
    /// proxychains4 with this config file.
    Pc(PathBuf),
    /// chainsocks `--isolate` with this config file (first hop through the forwarder).
    CsIsolated(PathBuf),
}

/// Binaries, the temp dir for configs, and how to run things.
pub struct Ctx {
    pub cs_bin: PathBuf,
    pub client: PathBuf,
    pub pc_bin: PathBuf,
    pub dir: TempDir,
    /// Set: chainsocks runs log at debug level to this file (one breakdown in B2).
    pub cs_log_debug: Option<PathBuf>,
    /// Background CPU load sampled before each round (fraction of all CPUs), and the seconds
    /// spent waiting for the machine to quieten.
    pub loads: std::cell::RefCell<Vec<f64>>,
    pub waited: std::cell::Cell<f64>,
    /// Background load measured over each round (see [`Ctx::round_mark`]), and the snapshot
    /// taken when the current round began.
    pub during: std::cell::RefCell<Vec<f64>>,
    pub mark: std::cell::Cell<Option<(u64, u64, f64)>>,
}

/// CPU ticks (USER_HZ) used by the benchmark: this process and its waited-for descendants
/// (getrusage), plus every other live process in this network namespace (the servers).
fn our_ticks() -> f64 {
    let ru = |who| {
        // SAFETY: all-zero is a valid rusage; getrusage fills it.
        let mut r: libc::rusage = unsafe { std::mem::zeroed() };
        // SAFETY: r is writable.
        unsafe { libc::getrusage(who, &mut r) };
        let us = |t: libc::timeval| t.tv_sec as f64 * 1e6 + t.tv_usec as f64;
        us(r.ru_utime) + us(r.ru_stime)
    };
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    let mut ticks = (ru(libc::RUSAGE_SELF) + ru(libc::RUSAGE_CHILDREN)) / 1e6 * hz;
    let me = std::process::id();
    let ns = e2e::netns_id();
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return ticks;
    };
    for e in dir.flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|n| n.parse::<u32>().ok()) else {
            continue;
        };
        if pid == me {
            continue;
        }
        use std::os::unix::fs::MetadataExt;
        let same = std::fs::metadata(format!("/proc/{pid}/ns/net")).is_ok_and(|m| m.ino() == ns);
        if !same {
            continue;
        }
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        // Fields after "(comm)": state is the 1st, utime the 12th, stime the 13th.
        let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
        let f: Vec<&str> = rest.split_whitespace().collect();
        let get = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
        ticks += get(11) + get(12);
    }
    ticks
}

/// Busy and total jiffies of all CPUs.
fn cpu_jiffies() -> Option<(u64, u64)> {
    let s = std::fs::read_to_string("/proc/stat").ok()?;
    let line = s.lines().next()?;
    let v: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .filter_map(|x| x.parse().ok())
        .collect();
    // user nice system idle iowait irq softirq steal
    let idle = v.get(3)? + v.get(4).unwrap_or(&0);
    let total: u64 = v.iter().take(8).sum();
    Some((total - idle, total))
}

/// The fraction of all CPUs busy during `ms` (our own processes are idle when this runs).
fn busy_fraction(ms: u64) -> f64 {
    let a = cpu_jiffies();
    std::thread::sleep(Duration::from_millis(ms));
    match (a, cpu_jiffies()) {
        (Some((b0, t0)), Some((b1, t1))) if t1 > t0 => (b1 - b0) as f64 / (t1 - t0) as f64,
        _ => 0.0,
    }
}

/// Max background load a round starts under without waiting, max wait per round, in total.
pub const QUIET: f64 = 0.25;
pub const WAIT_ROUND: f64 = 5.0;
const WAIT_TOTAL: f64 = 90.0;

impl Ctx {
    /// Closes the round in progress, if any: the fraction of all CPUs that processes other
    /// than the benchmark's used during it (busy time from /proc/stat minus [`our_ticks`]).
    pub fn round_mark(&self) {
        if let (Some((b0, t0, o0)), Some((b1, t1))) = (self.mark.take(), cpu_jiffies())
            && t1 > t0
        {
            let other = (b1 - b0) as f64 - (our_ticks() - o0);
            self.during
                .borrow_mut()
                .push((other / (t1 - t0) as f64).clamp(0.0, 1.0));
        }
    }

    fn round_begin(&self) {
        if let Some((b, t)) = cpu_jiffies() {
            self.mark.set(Some((b, t, our_ticks())));
        }
    }

    /// Waits (bounded) until other processes leave the CPUs mostly idle; records the load;
    /// starts measuring the load during the round that follows.
    pub fn settle(&self) {
        self.round_mark();
        let start = Instant::now();
        let mut load = busy_fraction(300);
        while load > QUIET
            && start.elapsed().as_secs_f64() < WAIT_ROUND
            && self.waited.get() + start.elapsed().as_secs_f64() < WAIT_TOTAL
        {
            load = busy_fraction(500);
        }
        self.waited
            .set(self.waited.get() + start.elapsed().as_secs_f64() - 0.3);
        self.loads.borrow_mut().push(load);
        self.round_begin();
    }

    pub fn cs_conf(&self, name: &str, urls: &[String]) -> Via {
        let list: Vec<String> = urls.iter().map(|u| format!("{u:?}")).collect();
        let toml = format!(
            "# csbench: strict chain, quiet\nquiet = true\nlog = \"off\"\nchain = \"strict\"\n\
             connect_timeout_ms = 10000\nhandshake_timeout_ms = 30000\nproxy = [{}]\n",
            list.join(", ")
        );
        Via::Cs(self.dir.write(&format!("{name}.toml"), toml.as_bytes()))
    }

    pub fn pc_conf(&self, name: &str, ports: &[u16]) -> Via {
        self.pc_conf_dns(name, ports, true)
    }

    /// A proxychains4 config; `proxy_dns` as chainsocks' default remote DNS, or without it
    /// (how proxychains4 runs for a program that connects to IP addresses only).
    pub fn pc_conf_dns(&self, name: &str, ports: &[u16], proxy_dns: bool) -> Via {
        let mut c = format!(
            "# csbench: strict chain, quiet{}\n\
             strict_chain\nquiet_mode\n{}remote_dns_subnet 224\n\
             tcp_read_time_out 15000\ntcp_connect_time_out 8000\n[ProxyList]\n",
            if proxy_dns {
                ", remote DNS like chainsocks' default"
            } else {
                ", no proxy_dns"
            },
            if proxy_dns { "proxy_dns\n" } else { "" }
        );
        for p in ports {
            c.push_str(&format!("socks5 127.0.0.1 {p}\n"));
        }
        Via::Pc(self.dir.write(&format!("{name}.conf"), c.as_bytes()))
    }

    pub fn command(&self, via: &Via, program: &Path, args: &[String]) -> Command {
        let mut c = match via {
            Via::Plain => Command::new(program),
            Via::Cs(conf) => {
                let mut c = Command::new(&self.cs_bin);
                c.arg("-f").arg(conf).arg("-q").arg("--").arg(program);
                c
            }
            Via::CsNoSupervisor(conf) => {
                let mut c = Command::new(&self.cs_bin);
                c.arg("-f")
                    .arg(conf)
                    .args(["-q", "--no-supervisor", "--"])
                    .arg(program);
                c
            }
            Via::Pc(conf) => {
                let mut c = Command::new(&self.pc_bin);
                c.arg("-q").arg("-f").arg(conf).arg(program);
                c
            }
            Via::CsIsolated(conf) => {
                let mut c = Command::new(&self.cs_bin);
                c.arg("-f")
                    .arg(conf)
                    .args(["-q", "--isolate", "--"])
                    .arg(program);
                c
            }
        };
        c.args(args);
        let mut c = e2e::clean(c);
        if let Via::Cs(_) | Via::CsNoSupervisor(_) | Via::CsIsolated(_) = via {
            match &self.cs_log_debug {
                Some(f) => c
                    .env("CHAINSOCKS_LOG", "debug")
                    .env("CHAINSOCKS_LOG_FILE", f),
                None => c.env("CHAINSOCKS_LOG", "off"),
            };
        }
        c
    }

    /// Runs `program args` via `via`; its stdout, or an error with everything it printed.
    pub fn run(&self, via: &Via, program: &Path, args: &[String]) -> Result<String, String> {
        self.run_cmd(self.command(via, program, args))
    }

    /// Runs `cmd`; its stdout, or an error with everything it printed.
    pub fn run_cmd(&self, mut cmd: Command) -> Result<String, String> {
        let shown = format!("{cmd:?}");
        match e2e::try_run(&mut cmd, RUN_TIMEOUT) {
            Ok(o) if o.status.success() => Ok(String::from_utf8_lossy(&o.stdout).into_owned()),
            Ok(o) | Err(o) => Err(format!(
                "{shown} failed ({:?})\nstdout: {}\nstderr: {}",
                o.status,
                String::from_utf8_lossy(&o.stdout),
                String::from_utf8_lossy(&o.stderr)
            )),
        }
    }

    pub fn client(&self, via: &Via, args: &[String]) -> Result<String, String> {
        self.run(via, &self.client, args)
    }

    /// The statically linked csbenchclient that scripts/bench builds beside the workspace's
    /// (`--target <host>` with `crt-static`: target/<host>/<profile>/csbenchclient), checked
    /// to have no program interpreter, so that no preload can see it.
    pub fn static_client(&self) -> Result<PathBuf, String> {
        let dir = self
            .client
            .parent()
            .ok_or("csbenchclient has no directory")?;
        let (Some(profile), Some(target)) = (dir.file_name(), dir.parent()) else {
            return Err(format!("{}: not under a target directory", dir.display()));
        };
        let host = format!("{}-unknown-linux-gnu", std::env::consts::ARCH);
        let p = target.join(host).join(profile).join("csbenchclient");
        if !p.is_file() {
            return Err(format!(
                "{} is missing (scripts/bench builds the static client: cargo build --target <host> \
                 with RUSTFLAGS=\"-C target-feature=+crt-static\")",
                p.display()
            ));
        }
        if has_interpreter(&p)? {
            return Err(format!("{}: dynamically linked (PT_INTERP)", p.display()));
        }
        Ok(p)
    }
}

/// Whether an ELF file names a program interpreter (`readelf -l`: an INTERP header).
fn has_interpreter(p: &Path) -> Result<bool, String> {
    let o = Command::new("readelf")
        .arg("-lW")
        .arg(p)
        .output()
        .map_err(|e| format!("readelf (binutils): {e}"))?;
    if !o.status.success() {
        return Err(format!("readelf -l {}: {:?}", p.display(), o.status));
    }
    let text = String::from_utf8_lossy(&o.stdout);
    Ok(text.lines().any(|l| l.trim_start().starts_with("INTERP ")))
}

/// The servers every case uses.
pub struct Servers {
    pub echo: Echo,
    pub d1: Dante,
    pub ssh: SshSocks,
    pub d2: Dante,
}

/// `127.0.0.1:p,127.0.0.1:q,…` for csbenchclient --socks5.
pub fn chain_arg(ports: &[u16]) -> String {
    ports
        .iter()
        .map(|p| format!("127.0.0.1:{p}"))
        .collect::<Vec<_>>()
        .join(",")
}

/// chainsocks proxy URLs for these ports.
pub fn urls(ports: &[u16], pipeline: bool) -> Vec<String> {
    ports
        .iter()
        .map(|p| {
            if pipeline {
                format!("socks5://127.0.0.1:{p}?pipeline=1")
            } else {
                format!("socks5://127.0.0.1:{p}")
            }
        })
        .collect()
}

/// A number after `key` in whitespace-separated output.
pub fn field(out: &str, key: &str) -> Option<f64> {
    out.split_whitespace()
        .skip_while(|w| *w != key)
        .nth(1)
        .and_then(|v| v.parse().ok())
}

/// Everything measured, for the report.
#[derive(Default)]
pub struct Results {
    pub rows: Vec<Row>,
    /// Text blocks for docs/benchmarks.md (breakdowns, verifications), in order.
    pub notes: Vec<(String, String)>,
    /// B2 bars (label, median ms) and limits (label, ms).
    pub b2_bars: Vec<(String, f64)>,
    pub b2_limits: Vec<(String, f64)>,
    /// docs/bench-b1-b3.svg: B1's cost above the floor per connection (one group of bars per
    /// hop count) and B3's cost per exec above plain (a group for the whole launch, one for
    /// the paired breakdown), µs.
    pub b1_plot: Vec<(String, Vec<(String, f64)>)>,
    pub b3_plot: Vec<(String, Vec<(String, f64)>)>,
    /// Missed targets: (check id, what was measured).
    pub misses: Vec<(&'static str, String)>,
    /// Measured facts the explanations of misses are built from (this run's, not remembered).
    pub facts: Facts,
}

/// What the profile and the cases measured, for the explanations in docs/benchmarks.md.
#[derive(Default)]
pub struct Facts {
    /// Syscalls per connection of the B1a workload: (name, [floor, chainsocks, proxychains4]).
    pub syscalls: Vec<(String, [f64; 3])>,
    /// User-space instructions per connection: [floor, chainsocks, proxychains4].
    pub instr: Option<[f64; 3]>,
    /// Instructions of one /bin/true: (variant, count), plain first.
    pub exec_instr: Vec<(String, f64)>,
    /// B3 per exec: page faults (plain, chainsocks, an empty library preloaded).
    pub b3_faults: Option<[f64; 3]>,
    /// B3's loop, µs added per iteration (from the per-round ratios): [under the launcher
    /// without the supervisor, LD_PRELOAD of the library alone, LD_PRELOAD of an empty one].
    pub b3_loop: Option<[f64; 3]>,
    /// libchainsocks.so's dynamic section: needs libgcc_s.so.1, binds every import at load.
    pub lib_needs_gcc: Option<bool>,
    pub lib_bind_now: Option<bool>,
    /// libchainsocks.so's relocations: relative, symbol lookups at load (GLOB_DAT and the
    /// like), PLT slots bound on first call.
    pub lib_relocs: Option<[usize; 3]>,
    /// libchainsocks.so's loadable segments (PT_LOAD): each an `mmap` in every exec; and
    /// whether its read-only data is mapped executable (GNU ld `-z noseparate-code`).
    pub lib_loads: Option<(usize, bool)>,
    /// Where the loader's added instructions go: (function, instructions added per exec of
    /// /bin/true with libchainsocks.so preloaded, against plain), largest first.
    pub loader_top: Vec<(String, f64)>,
    /// SUP: cost above the floor (µs) [library, supervisor]; hey requests/s [own, chainsocks].
    pub sup_above: Option<[f64; 2]>,
    pub hey_rps: Option<[f64; 2]>,
    /// UDP medians: round trip µs [direct, own SOCKS5, chainsocks]; datagrams/s of 64 and
    /// 1400 bytes [own SOCKS5, chainsocks].
    pub udp_rtt: Option<[f64; 3]>,
    pub udp_tput: Vec<(usize, [f64; 2])>,
    /// B3's paired breakdown, µs per exec of /bin/true above plain: [libchainsocks.so, an
    /// empty library].
    pub b3_paired: Option<[f64; 2]>,
    /// B3's paired breakdown: the load-time twin's µs per exec above plain, how many symbol
    /// imports and relative relocations it has (libchainsocks.so's), and plain's µs per exec.
    pub b3_twin: Option<(f64, usize, usize, f64)>,
    /// Syscalls per getaddrinfo+freeaddrinfo: (name, [chainsocks new name, real /etc/hosts]).
    pub lookup_syscalls: Vec<(String, [f64; 2])>,
    /// B4's CPU-bound calibration, 64 threads ÷ 1 thread.
    pub b4_calibration: Option<f64>,
    /// Symbols whose share of new-name lookup time grew from 1 to 64 threads (perf), in
    /// percentage points; `None` if perf could not record.
    pub perf_growth: Option<Vec<(String, f64)>>,
    /// B1 cost above the floor (µs) [chainsocks, proxychains4] for 1 and 3 hops.
    pub b1_above: Vec<(usize, [f64; 2])>,
    /// B2 in RTT: chainsocks pipelined, the client's own pipelined handshake, the same with
    /// hop 3's CONNECT held, chainsocks pipelined through ssh -D with a pty.
    pub b2_rtt: Vec<f64>,
}

impl Results {
    pub fn check(
        &mut self,
        id: &'static str,
        case: &str,
        what: &str,
        value: String,
        target: &str,
        pass: bool,
    ) {
        if !pass {
            self.misses
                .push((id, format!("{case}: {what} = {value} (target {target})")));
        }
        self.rows.push(Row::check(case, what, value, target, pass));
    }
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut quick = false;
    let mut serve = false;
    let mut only: Option<Vec<String>> = None;
    let mut docs: Option<PathBuf> = Some(PathBuf::from("docs"));
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--quick" => quick = true,
            "--serve" => serve = true,
            "--only" => {
                only = it
                    .next()
                    .map(|s| s.split(',').map(|x| x.to_uppercase()).collect())
            }
            "--docs" => docs = it.next().map(PathBuf::from),
            "--no-write" => docs = None,
            "-h" | "--help" => {
                eprintln!(
                    "usage: csbench [--quick] [--only B1,B2,B3,B4,B5,B6,SUP,UDP,PROFILE] [--docs DIR | --no-write]\n\
                     \x20      csbench --serve"
                );
                return;
            }
            other => {
                eprintln!("csbench: unknown argument {other} (see --help)");
                std::process::exit(2);
            }
        }
    }
    let started = Instant::now();
    match run(quick, serve, only, docs) {
        Ok(()) => eprintln!("csbench: done in {:.0} s", started.elapsed().as_secs_f64()),
        Err(e) => {
            eprintln!("csbench: {e}");
            std::process::exit(1);
        }
    }
}

/// B1 makes ~35,000 connections from 127.0.0.1 in a minute (pairs double the count) and the
/// client closes first, so each leaves a TIME_WAIT for 60 s. Two sysctls of this private
/// network namespace only (they are per namespace, and the namespace dies with the
/// benchmark):
/// - the ephemeral port range widened to 1024–65535 (the default 28,232 ports would run out);
/// - at most [`TIME_WAIT_CAP`] sockets in TIME_WAIT (`tcp_max_tw_buckets`; past it the kernel
///   closes a connection without one). With ~35,000 of them the kernel's search for a free
///   local port (`__inet_hash_connect`) at times took about 1 ms per `connect`, in every
///   variant and in a direct connection alike: rounds in which every absolute median was about
///   2.5× its usual value (a whole-machine profile of one: 42 % of all samples in that
///   search). On loopback inside a namespace of its own no delayed segment can reach a reused
///   port, which is what TIME_WAIT guards against.
fn tune_tcp() -> Result<(), String> {
    for (p, v) in [
        ("/proc/sys/net/ipv4/ip_local_port_range", "1024 65535"),
        ("/proc/sys/net/ipv4/tcp_max_tw_buckets", TIME_WAIT_CAP),
    ] {
        std::fs::write(p, v).map_err(|e| format!("{p}: {e}"))?;
        let now = std::fs::read_to_string(p).unwrap_or_default();
        if now.split_whitespace().collect::<Vec<_>>() != v.split(' ').collect::<Vec<_>>() {
            return Err(format!("{p} is {now:?} after writing {v}"));
        }
    }
    Ok(())
}

/// See [`tune_tcp`].
const TIME_WAIT_CAP: &str = "2048";

fn run(
    quick: bool,
    serve: bool,
    only: Option<Vec<String>>,
    docs: Option<PathBuf>,
) -> Result<(), String> {
    // SAFETY: plain syscall.
    if unsafe { libc::geteuid() } != 0 {
        return Err(
            "run as root (sudo scripts/bench): the servers run in a private network namespace"
                .into(),
        );
    }
    let want = |k: &str| only.as_ref().is_none_or(|o| o.iter().any(|x| x == k));
    let dir = e2e::target_dir();
    let (cs_bin, client) = (dir.join("chainsocks"), dir.join("csbenchclient"));
    for p in [&cs_bin, &client, &dir.join("libchainsocks.so")] {
        if !p.is_file() {
            return Err(format!(
                "{} is missing: cargo build --profile profiling --workspace",
                p.display()
            ));
        }
    }
    let pc_bin =
        e2e::find_program("proxychains4").ok_or("proxychains4 is not installed (scripts/setup)")?;
    let env = report::Environment::collect(&cs_bin, quick);
    let plan = Plan::new(quick);

    e2e::netns();
    tune_tcp()?;
    let mut ctx = Ctx {
        cs_bin,
        client,
        pc_bin,
        dir: TempDir::new("csbench"),
        cs_log_debug: None,
        loads: Default::default(),
        waited: Default::default(),
        during: Default::default(),
        mark: Default::default(),
    };
    let srv = Servers {
        echo: Echo::start(),
        d1: Dante::start(DanteOpts::default()).ok_or("danted is not installed")?,
        ssh: SshSocks::start(SshOpts::default()).ok_or("ssh/sshd is not installed")?,
        d2: Dante::start(DanteOpts::default()).ok_or("danted is not installed")?,
    };
    eprintln!(
        "servers (netns {}): echo {}, dante {}, ssh -D {}, dante {}",
        e2e::netns_id(),
        srv.echo.port(),
        srv.d1.port(),
        srv.ssh.port(),
        srv.d2.port(),
    );
    if serve {
        return echo::serve_forever(&ctx, &srv);
    }
    let mut res = Results::default();
    if want("B1") {
        echo::b1(&ctx, &plan, &srv, &mut res)?;
    }
    if want("B2") {
        echo::b2(&mut ctx, &plan, &srv, &mut res)?;
    }
    if want("B3") {
        cases::b3(&ctx, &plan, &srv, &mut res)?;
    }
    if want("B4") {
        cases::b4(&ctx, &plan, &srv, &mut res)?;
    }
    if want("B5") {
        cases::b5(&ctx, &plan, &srv, &mut res)?;
    }
    if want("B6") {
        cases::b6(&ctx, &plan, &srv, &mut res)?;
    }
    if want("SUP") {
        sup::connect_cost(&ctx, &plan, &srv, &mut res)?;
        sup::hey(&ctx, &plan, &srv, &mut res)?;
    }
    if want("UDP") {
        udp::udp(&ctx, &plan, &mut res)?;
    }
    if want("PROFILE") {
        profile::profile(&ctx, &srv, &mut res)?;
    }
    ctx.round_mark();
    let table = stats::markdown(&res.rows);
    println!("\n{table}");
    let passed = res.rows.iter().filter(|r| r.pass == Some(true)).count();
    let checked = res.rows.iter().filter(|r| r.pass.is_some()).count();
    println!("{passed} of {checked} targets met");
    for (_, m) in &res.misses {
        println!("MISS: {m}");
    }
    let loads = ctx.loads.borrow().clone();
    let during = ctx.during.borrow().clone();
    println!(
        "{}",
        report::load_summary(&loads, &during, ctx.waited.get())
    );
    if let Some(docs) = docs {
        std::fs::create_dir_all(&docs).map_err(|e| format!("{}: {e}", docs.display()))?;
        let md = report::markdown(
            &env,
            &plan,
            &table,
            &res,
            (&loads, &during, ctx.waited.get()),
            only.is_some(),
        );
        let p = docs.join("benchmarks.md");
        std::fs::write(&p, md).map_err(|e| format!("{}: {e}", p.display()))?;
        eprintln!("wrote {}", p.display());
        if !res.b2_bars.is_empty() {
            let p = docs.join("bench-b2.svg");
            let svg = svg::b2_chart(&res.b2_bars, &res.b2_limits, 2.0 * DELAY_MS as f64);
            std::fs::write(&p, svg).map_err(|e| format!("{}: {e}", p.display()))?;
            eprintln!("wrote {}", p.display());
        }
        if !res.b1_plot.is_empty() || !res.b3_plot.is_empty() {
            let p = docs.join("bench-b1-b3.svg");
            let svg = svg::b1_b3_chart(&res.b1_plot, &res.b3_plot);
            std::fs::write(&p, svg).map_err(|e| format!("{}: {e}", p.display()))?;
            eprintln!("wrote {}", p.display());
        }
    }
    drop(srv);
    Ok(())
}
