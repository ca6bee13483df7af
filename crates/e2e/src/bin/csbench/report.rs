//! docs/benchmarks.md: the machine, the versions, the method, the table, the misses and why.

use std::path::Path;
use std::process::Command;

use crate::{DELAY_MS, Facts, Plan, Results};

/// Where and with what the numbers were taken.
pub struct Environment {
    pub date: String,
    pub nproc: String,
    pub cpu: String,
    pub kernel: String,
    pub chainsocks: String,
    pub proxychains4: String,
    pub dante: String,
    pub openssh: String,
    pub rustc: String,
}

fn cmd_out(program: &str, args: &[&str]) -> String {
    match Command::new(program).args(args).output() {
        Ok(o) => {
            let mut s = String::from_utf8_lossy(&o.stdout).into_owned();
            if s.trim().is_empty() {
                s = String::from_utf8_lossy(&o.stderr).into_owned();
            }
            s.lines().next().unwrap_or("").trim().to_string()
        }
        Err(_) => "unknown".into(),
    }
}

fn dpkg_version(pkg: &str) -> String {
    let v = cmd_out("dpkg-query", &["-W", "-f=${Version}", pkg]);
    if v.is_empty() { "unknown".into() } else { v }
}

impl Environment {
    pub fn collect(chainsocks: &Path, quick: bool) -> Environment {
        let cpu = std::fs::read_to_string("/proc/cpuinfo")
            .unwrap_or_default()
            .lines()
            .find(|l| l.starts_with("model name"))
            .and_then(|l| l.split(':').nth(1))
            .map(|s| s.trim().to_string())
            .unwrap_or_else(|| "unknown".into());
        let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
            .map(|s| s.trim().to_string())
            .unwrap_or_else(|_| "unknown".into());
        let rev = cmd_out("git", &["rev-parse", "--short", "HEAD"]);
        let dirty = !cmd_out("git", &["status", "--porcelain", "--untracked-files=no"]).is_empty();
        let cs = format!(
            "{} (git {rev}{}, profiling build: release + debug = 1)",
            cmd_out(&chainsocks.to_string_lossy(), &["--version"]),
            if dirty { " + uncommitted changes" } else { "" }
        );
        Environment {
            date: format!(
                "{}{}",
                cmd_out("date", &["-u", "+%Y-%m-%d %H:%M UTC"]),
                if quick { " (--quick)" } else { "" }
            ),
            nproc: cmd_out("nproc", &[]),
            cpu,
            kernel,
            chainsocks: cs,
            proxychains4: format!(
                "proxychains-ng {} (Debian package)",
                dpkg_version("proxychains4")
            ),
            dante: format!(
                "{} (dante-server {})",
                cmd_out("danted", &["-v"])
                    .trim_end_matches('.')
                    .split("  ")
                    .next()
                    .unwrap_or(""),
                dpkg_version("dante-server")
            ),
            openssh: cmd_out("ssh", &["-V"]),
            rustc: cmd_out("rustc", &["--version"]),
        }
    }
}

/// The syscalls where `col` exceeds the floor (column 0), as "name +k" items.
fn extra_syscalls(f: &Facts, col: usize) -> (f64, String) {
    let mut total = 0.0;
    let mut items = Vec::new();
    for (name, v) in &f.syscalls {
        let d = v.get(col).copied().unwrap_or(0.0) - v.first().copied().unwrap_or(0.0);
        total += d;
        if d >= 0.5 {
            items.push(format!("`{name}` +{d:.0}"));
        }
    }
    (total, items.join(", "))
}

/// The mechanism of the ssh -D stall (strace -tt of ssh and sshd, while building B2).
const B2_STALL: &str = "The pipelined handshake loses ~40 ms at the ssh -D \
             hop, not in chainsocks or in the emulated network. In the per-hop timings (Details) \
             hop 3's CONNECT reply arrives ~40 ms after hop 3's greeting reply, although dante #2 \
             sends both within about a millisecond; the control chain dante → dante → dante \
             through the same relays has no such gap (its row: about the limit). strace -tt of the \
             ssh client and its sshd, on loopback without any relay, showed the mechanism: sshd \
             writes the packet carrying dante #2's CONNECT reply while the packet carrying its \
             method reply is still unacknowledged; the ssh client has nothing to send back (it \
             only forwards to dante #1), so its kernel delays the ACK, and Nagle on sshd's socket \
             holds the second packet until the delayed-ACK timer fires: 39.7 ms between sshd's \
             write and ssh's read. OpenSSH sets TCP_NODELAY on its transport only for interactive \
             sessions, and `ssh -N -D` has none. The same stall shows with no delay relay at all \
             (B1b's pipelined row, when the two replies do not happen to reach sshd together). It \
             hits any pipelined chain in which a SOCKS5 hop that answers in two writes sits \
             behind `ssh -D`; a client can only avoid it by not pipelining that hop's CONNECT \
             (its reply then follows a round trip that carries the ACK).";

/// Why a target was missed. Built from what this run measured ([`Facts`]); the mechanisms
/// named come from the profiles taken while building the benchmark (callgrind, strace, perf,
/// `CHAINSOCKS_LOG=debug`, strace -tt of ssh/sshd).
fn analysis(id: &str, f: &Facts) -> String {
    match id {
        "B1a" | "B1b" => {
            let mut t = String::from(
                "chainsocks' cost above the floor is its own work per connection in the client \
                 process: the handshake's messages and round trips are the floor's.",
            );
            for (hops, [cs, pc]) in &f.b1_above {
                t.push_str(&format!(
                    " With {hops} hop{}: chainsocks {cs:+.1} µs, proxychains4 {pc:+.1} µs.",
                    if *hops == 1 { "" } else { "s" }
                ));
            }
            if !f.syscalls.is_empty() {
                let (cs_n, cs_list) = extra_syscalls(f, 1);
                let (pc_n, pc_list) = extra_syscalls(f, 2);
                t.push_str(&format!(
                    " Per connection, counted with strace on one hop (counts do not depend on the \
                     load): chainsocks makes {cs_n:.0} syscalls more than the floor ({cs_list}); \
                     proxychains4 {pc_n:.0} more ({pc_list}), most of them a `poll` and a 1-byte \
                     `read` per reply byte, which return at once because the reply is already \
                     there."
                ));
            }
            if let Some([fl, cs, pc]) = f.instr {
                t.push_str(&format!(
                    " User-space instructions above the floor (callgrind): chainsocks {:+.0}, \
                     proxychains4 {:+.0}.",
                    cs - fl,
                    pc - fl
                ));
            }
            t.push_str(
                " Where the rest goes was measured while the connect path was trimmed (thread CPU \
                 time per connection, paired with a raw-syscall floor, 3000 pairs): the same \
                 syscall sequence made by a small C client costs about 5 µs above the floor \
                 against dante; chainsocks itself about 4 µs against a one-process SOCKS5 \
                 server, and about 25 µs against one that touches 4 MB between its replies. So \
                 most of the cost is the shim's own code and data (per connection about 370 \
                 cache lines of code and 120 of data, valgrind lackey) and the kernel's, cold \
                 again after dante's processes ran between the handshake's steps: each syscall \
                 and each line touched costs far more there than in a loop. The syscalls left \
                 each carry a semantic of README \"Socket semantics\": the socket's type and \
                 family (2 getsockopt), its flags (F_GETFL, and F_SETFL twice for a blocking \
                 socket, whose waits are ours), SO_SNDTIMEO and SO_RCVLOWAT (reading them only \
                 once a dial had lasted 1 ms cost more: a slower dial then takes an extra timer \
                 wakeup), the interrupting signals blocked and unblocked, a second connect (the \
                 kernel's own EISCONN later), a poll per reply, a second read of a SOCKS5 reply \
                 (its length is known from its first 5 bytes) and the fstat that ties \
                 getpeername's answer to the socket.",
            );
            t
        }
        "Mem-1" | "Mem-3" => "The added peak RSS is the library's pages touched at load and on \
                              the first connect (its text and data, the parsed configuration, the \
                              shared-state mapping); compare B1a and B1b: it does not grow with \
                              the number of connections."
            .into(),
        "B2-pipe-pc" | "B2-pipe-limit" => {
            let mut t = String::from(B2_STALL);
            if let [cs, client, held, tty] = f.b2_rtt.as_slice() {
                let verdict = if held < client {
                    "less than the stall costs here (the links' round trip is shorter than the \
                     delayed-ACK timer)"
                } else {
                    "the extra round trip through three links costs more than the delayed ACK \
                     it avoids, so chainsocks keeps pipelining it"
                };
                t.push_str(&format!(
                    " Measured in this run (info rows): the client's own pipelined handshake, \
                     without chainsocks, takes {client:.2} RTT (chainsocks {cs:.2}): the stall is \
                     the chain's. Not pipelining hop 3's CONNECT (sending it only after hop 3's \
                     greeting reply came back) takes {held:.2} RTT: {verdict}. Through an `ssh \
                     -tt -D … sleep` (a session with a pty, for \
                     which OpenSSH sets TCP_NODELAY on both ends) the same pipelined chain takes \
                     {tty:.2} RTT: the way around it is on the ssh side, in how `ssh -D` is \
                     started (README, Pipelined handshakes)."
                ));
            }
            t
        }
        "B2-safe-pc" => "Safe mode and proxychains4 send the same messages in the same order and \
             wait for the same replies (both ~16.5 RTT); either shim's CPU cost per connection is \
             tens of µs against ~330 ms, so the ratio is 1.00 within the spread of the rounds \
             (spread column): this target is decided by noise in the servers, not by the shim."
            .into(),
        "B2-verify" => "A relay's first chunk did not hold the whole pipelined rest of the \
             handshake: some hop did not accept or did not pass on the pipelined bytes in one \
             piece (see the sizes in Details)."
            .into(),
        "B3" | "B3-sup" => b3_analysis(id, f),
        "SUP-connect" => {
            let mut t = String::from(
                "A connect the library cannot see costs the supervisor's round trip on top of \
                 the handshake: the kernel stops the program's `connect` and queues a \
                 notification, a launcher thread receives it, reads the address from the \
                 program's memory, takes a duplicate of the socket (`pidfd_getfd`), runs the \
                 same handshake as the library on it and answers; the program's thread sleeps \
                 meanwhile, so each connect adds at least two wake-ups of another process and \
                 the syscalls of the exchange. Counted with `strace -f` of the launcher (the \
                 same per connect): the `NOTIF_RECV` ioctl (called straight away: on Linux \
                 6.6+ it also ends once no process is left, so no `poll` precedes it), \
                 `NOTIF_ID_VALID`, \
                 `pidfd_getfd` (the thread's pidfd is kept from its first connect), one \
                 `getsockopt` (SO_DOMAIN, which the dialer then takes as known), \
                 `process_vm_readv`, the handshake's own syscalls (its waits for the proxy \
                 also watch the listener: no other thread is woken unless another connect \
                 comes meanwhile), `NOTIF_SEND` and the `close` of the duplicate. Cold after \
                 the switch between processes, those few syscalls cost several µs each on \
                 this VM. The launcher's supervisor threads ask for the kernel's shortest \
                 scheduling slice (100 µs, Linux 6.12+): woken by the program's connect or by \
                 the proxy's reply, they run at once instead of queueing behind the proxy's \
                 own processes on that CPU (measured in pairs of launchers, by hand: about \
                 +17–26 µs above the floor before, +7–11 µs after). Before the benchmark capped \
                 TIME_WAIT (Method), rounds in which the kernel's search for a free port made \
                 every connect about 1 ms slower put the supervisor at +35–50 µs, with or \
                 without the short slice.",
            );
            if let Some([lib, sup]) = f.sup_above {
                t.push_str(&format!(
                    " Above the floor: library {lib:+.1} µs, supervisor {sup:+.1} µs per \
                     connection."
                ));
            }
            t
        }
        "SUP-hey" => {
            let mut t = String::from(
                "hey's own SOCKS5 client runs the handshake inside each goroutine; under \
                 chainsocks every connect of the 16 workers waits for the supervisor (a \
                 notification, a launcher thread that runs the handshake on a duplicate of the \
                 socket), on the same 2 CPUs as hey, danted and the origin. hey's connects \
                 are non-blocking: its own client parks the goroutine and the Go scheduler \
                 runs another on that CPU, while a supervised connect blocks the Go thread in \
                 the kernel for the whole handshake (the runtime hands its CPU to another \
                 thread only after noticing). The machine is busy throughout, so requests/s follow \
                 CPU time per request: measured by hand in the same setup (`csbench --serve`, \
                 `perf record -e cpu-clock -a` over 4,000 requests each, TIME_WAIT capped as \
                 here) dante spent 580 µs per request with hey's own client and 602 under \
                 chainsocks, hey 167 and 147, the launcher's supervisor threads 90 (mostly the \
                 kernel's TCP work of the connect and the handshake's sends, which hey's \
                 threads did themselves before, and the wake-ups), the origin 110 and 116, \
                 and the CPUs stood idle 54 and 81 µs per request (moments when every \
                 worker's thread sat blocked in `connect`): about 11 % more CPU per request. \
                 (Before TIME_WAIT was capped, over a third of all samples of these rounds \
                 were the kernel's search for a free local port, in hey's connects and in \
                 the launcher's alike.) \
                 Counted by hand in the same setup (`csbench --serve`, `perf record -e \
                 sched:sched_switch -a`, one round each): per request hey's threads switched \
                 out 4.3 times with its own client and 7.2 times under chainsocks (the \
                 connect that blocks, the Go runtime handing the CPU of the blocked thread \
                 over and taking it back), the launcher's threads 3.8 times (the \
                 notification, a wait for each of dante's two replies, the receiver's role \
                 passed on), dante's 4.7 and 5.8 times. With the handshake pipelined (one \
                 wait for dante instead of two) the ratio stayed as low (0.84-0.93 in 4 \
                 rounds): what is left is the Go thread blocked in `connect` until the \
                 handshake is done, which a supervisor that answers only then (the only \
                 answer that keeps the program's first bytes out of the handshake) cannot \
                 avoid.",
            );
            if let Some([own, cs]) = f.hey_rps {
                t.push_str(&format!(
                    " Requests/s: hey's own SOCKS5 {own:.0}, under chainsocks {cs:.0}."
                ));
            }
            t
        }
        "UDP-rtt" | "UDP-64" | "UDP-1400" => {
            let mut t = String::from(
                "Per datagram the library does in the program what the reference client does \
                 itself (header added on send, checked and stripped on receive) plus its own \
                 bookkeeping: the socket's association looked up in its table, the hooks' \
                 guard and errno handling, and the source address rewritten for \
                 `recvfrom`.",
            );
            if let Some([d, o, c]) = f.udp_rtt {
                t.push_str(&format!(
                    " Round trip of 64 B: direct {d:.1} µs, reference {o:.1} µs, chainsocks \
                     {c:.1} µs."
                ));
            }
            for (bytes, [o, c]) in &f.udp_tput {
                t.push_str(&format!(
                    " {bytes} B: reference {o:.0} datagrams/s, chainsocks {c:.0}."
                ));
            }
            t
        }
        "B4-new" => {
            let tot = |i: usize| {
                f.lookup_syscalls
                    .iter()
                    .map(|(_, v)| v.get(i).copied().unwrap_or(0.0))
                    .sum::<f64>()
            };
            if f.lookup_syscalls.is_empty() {
                "No syscall counts were taken (PROFILE not run).".into()
            } else {
                format!(
                    "A new fake name costs {:.1} syscalls per lookup against {:.1} for the real \
                     /etc/hosts lookup (Details), plus the real getaddrinfo of a numeric \
                     placeholder for the list's shape.",
                    tot(0),
                    tot(1)
                )
            }
        }
        "B4-new64" | "B4-known64" => {
            let mut t = String::new();
            if let Some(c) = f.b4_calibration {
                t.push_str(&format!(
                    "This machine's 2 vCPUs gave {c:.2}× to a CPU-bound loop of the same thread \
                     counts and work per item (calibration row), not 2×; the lookups get part of \
                     that."
                ));
            }
            let tot: f64 = f
                .lookup_syscalls
                .iter()
                .map(|(_, v)| v.first().copied().unwrap_or(0.0))
                .sum();
            if !f.lookup_syscalls.is_empty() {
                t.push_str(&format!(
                    " A new-name lookup makes {tot:.1} syscalls (Details)."
                ));
            }
            if let Some(grew) = &f.perf_growth {
                let list: Vec<String> = grew.iter().map(|(n, d)| format!("{n} {d:+.1}")).collect();
                t.push_str(&format!(
                    " In the perf profiles under Details these grew from 1 to 64 threads \
                     (percentage points of all samples): {}.",
                    if list.is_empty() {
                        "nothing by 1 point or more".to_string()
                    } else {
                        list.join(", ")
                    }
                ));
                let has = |k: &str| grew.iter().any(|(n, _)| n.contains(k));
                if has("finish_task_switch") || has("spin_unlock") || has("schedule") {
                    t.push_str(
                        " In call graphs of the same workload (`perf record -g`, taken while \
                         this benchmark was built) most of `_raw_spin_unlock_irqrestore` sits \
                         under `fault_dirty_shared_page` → `folio_wake_bit`: a thread's first \
                         write to a page of the launch's shared table waking threads that waited \
                         for that page's lock (consecutive new names go to neighbouring slots); \
                         the task switches are those waits and 64 threads taking turns on 2 \
                         CPUs. Two changes were measured and not kept: slots striped over 16 \
                         regions, so that names taken at once land on different pages (64 \
                         threads +2 %, 1 thread −7 %), and the whole table allocated up front \
                         (both thread counts faster alike: not what limits the scaling).",
                    );
                }
                if has("page_fault") || has("shmem") || has("clear_page") {
                    t.push_str(
                        " The page-fault symbols are the shared fake-DNS table's new slots being \
                         touched for the first time.",
                    );
                }
                if has("FakeTable") {
                    t.push_str(
                        " A growing `FakeTable` share is contention on the table's shared atomics \
                         (the next-id counter and the index).",
                    );
                }
            }
            t.push_str(" Background load during the rounds (above) takes its share too.");
            t
        }
        "B5" => "After the handshake chainsocks stays out of a TCP connection's data: its \
             read/write/recv/send hooks frame only the datagrams of a UDP socket associated \
             through a proxy, and in a process that has none each call costs one relaxed atomic \
             load before the real function (a 256 KiB read buffer here: at least 4,096 calls \
             per GiB). A ratio below 0.98 can only come from noise between the two halves of \
             the pairs (see the per-pair spread)."
            .into(),
        _ => "No explanation recorded for this target.".into(),
    }
}

/// Why B3 (the library) or B3-sup (the default launch, with the seccomp filter) missed.
fn b3_analysis(id: &str, f: &Facts) -> String {
    let mut t = String::from(
        "The cost is loading the library into every process: `sh` itself, preloaded, forks \
         for each command, and each `/bin/true` loads the library again.",
    );
    if let Some([cs, alone, empty]) = f.b3_loop {
        t.push_str(&format!(
            " Per iteration of the loop (from the per-round ratios): under the launcher \
             {cs:+.1} µs; `LD_PRELOAD=libchainsocks.so` without it {alone:+.1} µs (each process \
             then sets up a fake-DNS table and health counters of its own, where under the \
             launcher it maps the launch's); an empty C library {empty:+.1} µs, what \
             preloading anything costs here."
        ));
    }
    let instr = |k: &str| {
        f.exec_instr
            .iter()
            .find(|(n, _)| n.contains(k))
            .map(|x| x.1)
    };
    if let (Some(plain), Some(cs)) = (instr("plain"), instr("libchainsocks")) {
        t.push_str(&format!(
            " Per exec of /bin/true the dynamic loader and the constructors run {:+.0} \
             instructions (callgrind",
            cs - plain
        ));
        if let Some(e) = instr("empty") {
            t.push_str(&format!("; the empty library {:+.0}", e - plain));
        }
        t.push(')');
        if !f.loader_top.is_empty() {
            let top: Vec<String> = f
                .loader_top
                .iter()
                .take(6)
                .map(|(n, d)| format!("`{n}` {d:+.0}"))
                .collect();
            t.push_str(&format!(", most of them in the loader: {}", top.join(", ")));
        }
        t.push('.');
    }
    if let Some([relative, at_load, plt]) = f.lib_relocs {
        t.push_str(&format!(
            " libchainsocks.so has {relative} relative relocations (each a store into a page \
             of .data.rel.ro or the GOT, which that exec then copies on write), {at_load} \
             symbol references the loader looks up at load (Rust calls imports through the \
             GOT, so `-z lazy` defers only the {plt} PLT slots)"
        ));
        if let Some(gcc) = f.lib_needs_gcc {
            t.push_str(if gcc {
                ", and it pulls in libgcc_s.so.1 (Rust's unwinder: another library to map, \
                 relocate and version-check, and a constructor whose CPUID probes trap to the \
                 hypervisor on a VM)"
            } else {
                "; its unwinder is linked in (libgcc_eh), no libgcc_s.so.1; no C start files \
                 (their weak symbols and exit-time `__cxa_finalize` cost lookups in every \
                 process), and its calls to the functions it exports itself (std's \
                 `close`, `read`, `write`) bound inside it (`-Bsymbolic-functions`), not \
                 looked up"
            });
        }
        if let Some((n, merged)) = f.lib_loads {
            t.push_str(&format!(
                "; {n} loadable segments, each an `mmap` in every exec"
            ));
            if merged {
                t.push_str(
                    " (GNU ld `-z noseparate-code`: headers, read-only data and code in one, \
                     RELRO and data in the other, where rustc's default lld makes four; \
                     read-only data is then mapped executable, RELRO is kept)",
                );
            }
        }
        t.push('.');
    }
    if let Some([p, c, e]) = f.b3_faults {
        t.push_str(&format!(
            " Page faults per exec: {c:.1} against {p:.1} plain ({:+.1}; the empty library \
             {:+.1}): the pages of its headers, relocated data and constructors' code, each a \
             fault in every process.",
            c - p,
            e - p
        ));
    }
    if let Some([lib, empty]) = f.b3_paired {
        t.push_str(&format!(
            " Paired per exec of /bin/true alone (breakdown rows, robust against load): the \
             library {lib:+.1} µs, an empty C library {empty:+.1} µs"
        ));
        match f.b3_twin {
            Some((twin, syms, relative, plain)) => {
                let budget = (crate::cases::B3_TARGET - 1.0) * plain;
                t.push_str(&format!(
                    ", the empty library with libchainsocks.so's load-time relocations added \
                     ({syms} symbols looked up, {relative} relative) {twin:+.1} µs. So the \
                     relocations of a Rust library with std (the libc functions it imports, its \
                     vtables and static tables) cost {:+.1} µs by themselves; the rest, {:+.1} \
                     µs, is chainsocks' own (its segments, constructors and TLS, less the C \
                     start files it does without). The target, {:.2}× plain per exec, leaves \
                     {:+.0} µs here above the empty library.",
                    twin - empty,
                    lib - twin,
                    crate::cases::B3_TARGET,
                    budget - empty,
                ));
            }
            None => t.push_str(": what is chainsocks' own is the difference."),
        }
        if let Some([cs, _, e]) = f.b3_loop {
            t.push_str(&format!(
                " Of the loop's {cs:+.1} µs per iteration under the launcher, the exec of \
                 /bin/true alone is {lib:+.1}; the rest, {:+.1} µs, is `sh` forking as a \
                 preloaded process and the launcher's own start, once per run (about 2 ms: \
                 2 µs per iteration). With the empty library the same rest is {:+.1} µs \
                 (no launcher; both rests are differences between medians measured apart, \
                 which move by several µs from run to run).",
                cs - lib,
                e - empty
            ));
        }
    }
    if id == "B3-sup" {
        t.push_str(
            " With the supervisor, the launcher also starts its notification thread and the \
             DNS responder, and every syscall of every process in the tree passes the seccomp \
             filter (the kernel's constant-action cache skips the filter program for the \
             syscalls it never inspects).",
        );
    }
    t
}

/// What the other processes on this machine did to the rounds.
pub fn load_summary(loads: &[f64], during: &[f64], waited: f64) -> String {
    if loads.is_empty() {
        return String::new();
    }
    let max = |v: &[f64]| v.iter().copied().fold(0.0f64, f64::max) * 100.0;
    let med = |v: &[f64]| crate::stats::median(v) * 100.0;
    let busy = during.iter().filter(|&&l| l > crate::QUIET).count();
    format!(
        "Background CPU load (processes other than the benchmark's, as a share of all CPUs): \
         before each of the {} rounds, sampled while the benchmark was idle, median {:.0} %, \
         max {:.0} % ({waited:.0} s spent waiting for quiet); during the rounds (CPU busy time \
         minus the benchmark's own processes) median {:.0} %, max {:.0} %, {busy} rounds above \
         {:.0} %.",
        loads.len(),
        med(loads),
        max(loads),
        med(during),
        max(during),
        crate::QUIET * 100.0
    )
}

pub fn markdown(
    env: &Environment,
    plan: &Plan,
    table: &str,
    res: &Results,
    (loads, during, waited): (&[f64], &[f64], f64),
    partial: bool,
) -> String {
    let mut s = String::new();
    s.push_str("# Benchmarks: chainsocks against proxychains4\n\n");
    s.push_str(
        "Generated by `sudo scripts/bench` (the `csbench` binary, crates/e2e/src/bin/csbench/); \
         do not edit by hand, re-run it. `scripts/bench --quick` runs fewer repetitions.\n\n",
    );
    if partial {
        s.push_str("**Partial run (`--only`): some cases are missing.**\n\n");
    }
    if plan.quick {
        s.push_str("**Quick run (`--quick`): fewer repetitions than the full run.**\n\n");
    }
    s.push_str(&format!(
        "## Machine\n\n\
         | | |\n|---|---|\n\
         | date | {} |\n| nproc | {} |\n| CPU | {} |\n| kernel | {} |\n\
         | chainsocks | {} |\n| proxychains4 | {} |\n| dante | {} |\n| OpenSSH | {} |\n\
         | rustc | {} |\n\n{}\n\n",
        env.date,
        env.nproc,
        env.cpu,
        env.kernel,
        env.chainsocks,
        env.proxychains4,
        env.dante,
        env.openssh,
        env.rustc,
        load_summary(loads, during, waited)
    ));
    s.push_str(&format!(
        "## Method\n\n\
         Everything runs inside a fresh network namespace that has only `lo` (`e2e::netns()`): \
         two danted, one `ssh -D` with its own sshd, an echo server, a bulk source and the delay \
         relays, all on 127.0.0.1. One client, `csbenchclient` (small, dynamically linked, libc \
         `socket`/`connect`/`read`/`write`/`getaddrinfo`, timing itself with the monotonic \
         clock so that process start-up is not in the numbers), is run plainly, under the \
         release `chainsocks` launcher (`-q`, `quiet = true`, `CHAINSOCKS_LOG=off`) and under \
         `proxychains4 -q` (`strict_chain`, `quiet_mode`, `proxy_dns` like chainsocks' default \
         remote DNS), against the same servers. The order of the variants rotates every round. \
         Every run checks that the echo server saw each connection from the proxy's address \
         (127.0.0.2), never directly. Inside its namespace (only there) the benchmark widens \
         the ephemeral port range to 1024–65535 (B1 makes more connections a minute than the \
         default range holds) and keeps at most 2,048 sockets in TIME_WAIT \
         (`tcp_max_tw_buckets`): with the ~35,000 that B1 otherwise leaves, the kernel's \
         search for a free local port (`__inet_hash_connect`) at times took about 1 ms per \
         `connect`, and every absolute median of such a round, a direct connection's too, was \
         about 2.5× its usual value (42 % of a whole-machine profile of one in that search).\n\n\
         This machine is shared (other jobs compile and test on the same 2 CPUs), so \
         differences that are small against the servers' own time are measured in **pairs \
         inside one process**: under a shim, the client alternates (AB BA AB …) a libc \
         connection, which the shim proxies, with a *floor* connection built from raw \
         `syscall()`s, which no LD_PRELOAD shim sees, the client speaking SOCKS5 itself over the \
         same proxies. The two halves of a pair run within a millisecond of each other, so load \
         from elsewhere cancels out of their difference. The floor's `connect` carries the \
         launcher's marker length (113 bytes, zero-padded), which its seccomp supervisor lets \
         through as it does the library's own connect to its first proxy: under the launcher \
         only the libc half is proxied. Before each round the benchmark waits \
         (at most {wr:.0} s) until other processes use at most {q:.0} % of the CPUs.\n\n\
         - **B1 connect cost**: per run, {n} sequential connections (under a shim {n} pairs): \
         `socket` → `connect` → write 1 byte → read it back → `close`, timed from `socket` \
         until the echo byte is back; {r} rounds. *Floor*: the client speaks SOCKS5 itself (for \
         3 hops the whole chain handshake, one step after the other). *Cost above the floor*: \
         the median of the paired differences. proxychains4 runs twice: with `proxy_dns` (the \
         target's reference, like chainsocks' default) and without it (info: how it runs for \
         programs that connect to addresses). The floor's own row is the null test of the \
         method: a plain process pairing a libc floor connection with a raw-syscall one, whose \
         difference should be ~0. Absolute medians move between rounds (see their spread \
         column), so compare variants through the paired differences, not across rows.\n\
         - **B2 latency**: a delay relay (a user-space TCP forwarder holding each chunk {d} ms \
         in each direction; this kernel has no netem) in front of each proxy and of the echo \
         server, so each of the 4 links has an RTT of {rtt} ms. Measured: from `socket` until \
         the first echo byte is back ({c} connections per run, {r2} rounds); when `connect()` \
         returned is shown too. A user-space relay cannot delay a TCP handshake (connecting to \
         it completes at loopback speed), so the limits count data crossings: pipelined, the \
         requests go out over 3 links and the replies come back (3 RTT), then the echo byte \
         crosses all 4 links and back (4 RTT): **7 RTT**; strictly sequential, hop k's \
         greeting and its request cost k RTT each (1+1+2+2+3+3 = 12 RTT), plus the same 4: \
         **16 RTT**. On a real network the 4 TCP handshakes cost the same 4 RTT with \
         `connect()` returning as the end point, which gives the same 7 and 16.\n\
         - **B3 exec overhead**: `sh -c` running a loop of 1,000 `/bin/true`, wall time of the \
         whole command (the launcher included), {r3} rounds; the ratio is the median of the \
         per-round ratios. *The library*: `chainsocks --no-supervisor`; *the default launch*: \
         the library plus the supervisor's seccomp filter, which every process of the tree \
         inherits (as root without NO_NEW_PRIVS).\n\
         - **B4 fake DNS**: `getaddrinfo(name, \"80\", {{AF_UNSPEC, SOCK_STREAM}})` + \
         `freeaddrinfo`, {b4a} lookups with 1 thread and {b4b} with 64 threads started together \
         (aggregate lookups/s), {r4} rounds. *New*: a name never seen before; *known*: 64 names \
         resolved before the clock starts, then cycled. Reference: the real getaddrinfo of a \
         name in /etc/hosts, not under the shim. Ratios are medians of per-round ratios.\n\
         - **B5 data path**: {gib} MiB from the bulk source through one dante, MB = 10⁶ bytes, \
         from the request to the last byte; {r5} pairs per shim (the shimmed transfer and the \
         native one, in alternating order). *Native*: the client speaks SOCKS5 itself.\n\
         - **Memory**: the client's peak RSS (VmHWM) at the end of each B1 run, chainsocks \
         against the plain floor runs.\n\
         - **SUP supervisor path**: the B1a workload ({sn} pairs per run, {sr} rounds) under \
         the launcher with the library and in csbenchclient linked statically (glibc, \
         `crt-static`: no loader, so no library; its connects go to the seccomp supervisor), \
         cost above the floor as in B1; info: the dynamic client under `env -u LD_PRELOAD`, \
         the same path. A Go program: \
         Debian's `hey -n {hn} -c 16 -disable-keepalive` (a connection per request) to an HTTP \
         origin through the same dante, under the launcher against hey speaking SOCKS5 itself \
         (`-x socks5://…`: Debian's hey takes its proxy from `-x` only, not from HTTP_PROXY), \
         {hr} rounds, ratio of requests/s per round; every request must reach the origin from \
         dante.\n\
         - **UDP**: through a danted of its own without per-datagram logging (UDP \
         ASSOCIATE) to an in-process UDP echo that counts senders, B1's paired method for \
         datagrams: one `csudp pair` process under the launcher takes turns (order rotating) \
         between three links: *chainsocks* (plain libc `sendto`/`recvfrom`: the library frames \
         the datagrams), the client's *own SOCKS5* UDP association made of raw syscalls no shim \
         sees (the reference: header added and stripped in the client), and raw datagrams \
         *direct* to the echo (the floor). Round trip: {ur} datagrams of 64 B per link one at a \
         time, turns of one datagram, the median of the differences to the floor's datagram of \
         the same turn; throughput: {ut} datagrams of 64 B and of 1,400 B per link with 16 in \
         flight (one whose echo is 200 ms late counts as lost), turns of 1,000, datagrams/s \
         from each link's summed loop time; {urr} runs, ratios per run; every datagram must \
         reach the echo from dante's address (the floor's from 127.0.0.1).\n\
         - **Profile**: per connection of the B1a workload, syscall counts (`strace -c`) and \
         user-space instruction counts (`callgrind`), which do not depend on the load; \
         instructions of one `/bin/true` with each library preloaded; libchainsocks.so's dynamic \
         section; syscalls per lookup; a `perf` cpu-clock profile of new-name lookups with 1 and \
         64 threads. The explanations of missed targets are built from these numbers.\n\n",
        wr = crate::WAIT_ROUND,
        q = crate::QUIET * 100.0,
        n = plan.b1_conns,
        r = plan.b1_runs,
        d = DELAY_MS,
        rtt = 2 * DELAY_MS,
        c = plan.b2_conns,
        r2 = plan.b2_runs,
        r3 = plan.b3_runs,
        b4a = plan.b4_one,
        b4b = plan.b4_many,
        r4 = plan.b4_runs,
        gib = plan.b5_bytes >> 20,
        r5 = plan.b5_runs,
        sn = plan.sup_conns,
        sr = plan.sup_runs,
        hn = plan.hey_requests,
        hr = plan.hey_runs,
        ur = plan.udp_rtt_count,
        ut = plan.udp_tput_count,
        urr = plan.udp_runs,
    ));
    s.push_str("## Results\n\n");
    s.push_str(table);
    let passed = res.rows.iter().filter(|r| r.pass == Some(true)).count();
    let checked = res.rows.iter().filter(|r| r.pass.is_some()).count();
    s.push_str(&format!("\n{passed} of {checked} targets met.\n\n"));
    if !res.b2_bars.is_empty() {
        s.push_str("![B2: time to the first echo byte through a 3-hop chain](bench-b2.svg)\n\n");
    }
    if !res.b1_plot.is_empty() || !res.b3_plot.is_empty() {
        s.push_str(
            "![B1: cost per connection above the floor; B3: time per exec](bench-b1-b3.svg)\n\n",
        );
    }
    if !res.misses.is_empty() {
        s.push_str(
            "## Targets missed, and why\n\n\
             The numbers in these explanations are this run's (the profile under Details); the \
             mechanisms named were found with callgrind, strace, perf and `CHAINSOCKS_LOG=debug` \
             while the benchmark was built.\n\n",
        );
        let mut seen: Vec<String> = Vec::new();
        for (id, what) in &res.misses {
            s.push_str(&format!("- **MISS** {what}.\n"));
            let why = analysis(id, &res.facts);
            if !seen.contains(&why) {
                s.push_str(&format!("\n  {why}\n\n"));
                seen.push(why);
            }
        }
        s.push('\n');
    }
    s.push_str("## Details\n\n");
    for (title, body) in &res.notes {
        s.push_str(&format!("### {title}\n\n{body}\n"));
    }
    s
}
