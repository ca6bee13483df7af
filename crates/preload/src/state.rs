//! The process's view of the launch: its configuration and log sink, loaded lazily on the
//! first hooked call that needs it, once per process.
//!
//! Owns: finding the config (the launcher's shared state `CHAINSOCKS_SHM`, else
//! `CHAINSOCKS_CONFIG` and the search order), and installing it without a lock: every thread
//! that finds it missing builds one and a compare-exchange keeps the first, so a `fork` at any
//! moment can never leave the child waiting on a lock.
//! Also: the [`Host`] the shared dialer ([`chainsocks_core::connect`]) runs with in this
//! process — waits that let the program's signal handlers run but abandon the handshake on an
//! interrupting signal (SIGINT, SIGTERM, SIGHUP, SIGQUIT the program handles without
//! SA_RESTART), getpeername bookkeeping, log and report sinks.
//! Must never: block, run before it is needed (programs that never connect pay nothing), or
//! resolve a name through our own hooks.

use std::ffi::{CStr, CString};
use std::net::IpAddr;
use std::path::Path;
use std::ptr;
use std::sync::atomic::{AtomicPtr, AtomicU64, Ordering};

use std::cell::Cell;
use std::net::SocketAddr;
use std::time::Instant;

use chainsocks_core::Error;
use chainsocks_core::chain::Health;
use chainsocks_core::config::{Config, LogLevel, find_config};
use chainsocks_core::connect::{Bypass, Host, Outcome, wait_sliced};
use chainsocks_core::fakedns::{self, FakeRanges, FakeTable};
use chainsocks_core::report::Event;
use chainsocks_core::shm;
use chainsocks_core::sys::{self, Disposition, KernelSigset, sigbit};

use crate::log::Sink;
use crate::real;
use crate::shared::Mapping;

pub struct State {
    /// The configuration, or why there is none (every proxied call then fails closed).
    pub cfg: Result<Config, String>,
    pub sink: Sink,
    /// Remote DNS: `None` when `proxy_dns = false`; `Err` when the table is unusable (every
    /// name lookup then fails closed).
    pub fake: Option<Result<Fake, String>>,
    /// Proxy health (dead marks, round-robin counters): the launch's shared page, or this
    /// process's own.
    pub counters: &'static [AtomicU64],
}

/// Health counters of a process preloaded without the launcher (copied by fork).
static LOCAL_COUNTERS: [AtomicU64; shm::COUNTER_WORDS] =
    [const { AtomicU64::new(0) }; shm::COUNTER_WORDS];

impl State {
    /// The proxy health view over this state's counters.
    pub fn health(&self) -> Health<'static> {
        let c = self.counters;
        Health {
            dead_until: c.get(shm::DEAD_WORDS).unwrap_or(&[]),
            rr: c.get(shm::RR_WORDS).unwrap_or(&[]),
        }
    }
}

/// The fake-DNS table of this launch and its address ranges.
pub struct Fake {
    pub ranges: FakeRanges,
    pub table: FakeTable<'static>,
}

static STATE: AtomicPtr<State> = AtomicPtr::new(ptr::null_mut());

/// The process's state, loading it on first use.
pub fn get() -> &'static State {
    let p = STATE.load(Ordering::Acquire);
    if !p.is_null() {
        // SAFETY: once published, a State is never freed or mutated.
        return unsafe { &*p };
    }
    let mine = Box::into_raw(Box::new(load()));
    match STATE.compare_exchange(ptr::null_mut(), mine, Ordering::AcqRel, Ordering::Acquire) {
        // SAFETY: we just published it; it lives for the rest of the process.
        Ok(_) => unsafe { &*mine },
        Err(theirs) => {
            // SAFETY: `mine` was never published; `theirs` is published and immortal.
            unsafe {
                drop(Box::from_raw(mine));
                &*theirs
            }
        }
    }
}

/// The state if it is already loaded.
pub fn peek() -> Option<&'static State> {
    // SAFETY: once published, a State is never freed or mutated.
    unsafe { STATE.load(Ordering::Acquire).as_ref() }
}

/// An environment variable, read without std's env lock (fork-safe).
pub fn env(name: &str) -> Option<String> {
    let c = CString::new(name).ok()?;
    // SAFETY: getenv with a NUL-terminated name; the result is copied at once.
    let p = unsafe { libc::getenv(c.as_ptr()) };
    if p.is_null() {
        return None;
    }
    // SAFETY: getenv returned a NUL-terminated string.
    Some(unsafe { CStr::from_ptr(p) }.to_string_lossy().into_owned())
}

fn load() -> State {
    let (cfg, mapping) = match load_config() {
        Ok((c, m)) => (Ok(c), m),
        Err(e) => (Err(e), None),
    };
    let fake = match &cfg {
        Ok(c) if c.proxy_dns => Some(fake_table(c, mapping)),
        _ => None,
    };
    let counters = mapping
        .and_then(|m| {
            m.words(
                shm::counters_location(m.frozen_bytes())?,
                shm::COUNTER_WORDS,
            )
        })
        .unwrap_or(&LOCAL_COUNTERS);
    let mut level = match &cfg {
        Ok(c) if c.quiet => c.log.min(LogLevel::Warn),
        Ok(c) => c.log,
        Err(_) => LogLevel::Warn,
    };
    if let Some(l) = env("CHAINSOCKS_LOG").and_then(|s| LogLevel::parse(&s)) {
        level = l;
    }
    let file = env("CHAINSOCKS_LOG_FILE")
        .filter(|s| !s.is_empty())
        .or_else(|| {
            cfg.as_ref()
                .ok()?
                .log_file
                .as_ref()
                .map(|p| p.to_string_lossy().into_owned())
        })
        .and_then(|s| CString::new(s).ok());
    State {
        cfg,
        sink: Sink { level, file },
        fake,
        counters,
    }
}

/// The launch's table (in the shared file), or a new one for this process and its forks.
fn fake_table(cfg: &Config, mapping: Option<&'static Mapping>) -> Result<Fake, String> {
    let ranges = cfg.fake_ranges().map_err(|e| e.to_string())?;
    let words = match mapping {
        Some(m) => {
            let (off, n) =
                shm::table_location(m.frozen_bytes()).ok_or("state file has no table")?;
            m.words(off, n).ok_or("state file table out of bounds")?
        }
        None => {
            // Mapped by the constructor (so a fork before this first use still shares it).
            let m = standalone_table().ok_or("no table mapping")?;
            let n = fakedns::words_for(ranges.capacity());
            let words = m.words(0, n).ok_or("anonymous table out of bounds")?;
            // Every process of the tree writes the same header (same config): first one wins.
            for (w, v) in words.iter().zip(fakedns::header(ranges.capacity())) {
                let _ = w.compare_exchange(
                    0,
                    v,
                    std::sync::atomic::Ordering::AcqRel,
                    std::sync::atomic::Ordering::Relaxed,
                );
            }
            words
        }
    };
    let table = FakeTable::new(words)?;
    Ok(Fake { ranges, table })
}

/// The fake-DNS table of a process preloaded without the launcher, mapped (MAP_SHARED,
/// MAP_NORESERVE: address space only) by the library constructor so that every fork child
/// shares it with its parent whenever it forked. Exec'd programs get a new one (the launcher's
/// shared state is what spans exec).
static STANDALONE: AtomicPtr<Mapping> = AtomicPtr::new(ptr::null_mut());

/// Called by the constructor with the environment glibc passes it (`None` where the C library
/// passes none): maps the standalone table unless the launcher's state is named there. Reading
/// `envp` itself keeps libc's `getenv` (and its page) out of every process that never connects.
///
/// # Safety
/// `envp`, when given, is a NULL-terminated array of NUL-terminated strings.
pub unsafe fn map_standalone_table_at_load(envp: Option<*const *const libc::c_char>) {
    let launched = match envp {
        // SAFETY: the caller's contract.
        Some(envp) => unsafe { env_in(envp, shm::ENV) },
        None => env_is_set(shm::ENV),
    };
    if !launched {
        map_standalone_table();
    }
}

/// Whether `envp` sets `name` to a non-empty value (the first entry for it, as getenv reads).
///
/// # Safety
/// `envp` is null or a NULL-terminated array of NUL-terminated strings.
unsafe fn env_in(envp: *const *const libc::c_char, name: &str) -> bool {
    if envp.is_null() {
        return false;
    }
    let name = name.as_bytes();
    let mut i = 0;
    loop {
        // SAFETY: within the NULL-terminated array.
        let entry = unsafe { *envp.add(i) };
        if entry.is_null() {
            return false;
        }
        // SAFETY: a NUL-terminated string; the comparison stops at its NUL.
        let matched = name
            .iter()
            .enumerate()
            .all(|(k, &b)| unsafe { *entry.add(k) } as u8 == b);
        // SAFETY: when matched, the name's bytes (no NUL among them) were the entry's, so the
        // entry goes on at least to the byte after them.
        if matched && unsafe { *entry.add(name.len()) } as u8 == b'=' {
            // SAFETY: as above, the value's first byte or its NUL.
            return unsafe { *entry.add(name.len() + 1) } != 0;
        }
        i += 1;
    }
}

/// Maps the standalone table unless the launcher's state is named in the environment.
pub fn map_standalone_table() {
    if env_is_set(shm::ENV) {
        return;
    }
    let n = fakedns::words_for(fakedns::MAX_CAPACITY);
    if let Ok(m) = Mapping::anonymous(n) {
        let p = Box::into_raw(Box::new(m));
        if STANDALONE
            .compare_exchange(ptr::null_mut(), p, Ordering::AcqRel, Ordering::Acquire)
            .is_err()
        {
            // SAFETY: never published.
            drop(unsafe { Box::from_raw(p) });
        }
    }
}

fn standalone_table() -> Option<&'static Mapping> {
    if STANDALONE.load(Ordering::Acquire).is_null() {
        map_standalone_table();
    }
    // SAFETY: published mappings are never freed.
    unsafe { STANDALONE.load(Ordering::Acquire).as_ref() }
}

/// Whether an environment variable is set and non-empty (no allocation).
fn env_is_set(name: &str) -> bool {
    let mut buf = [0u8; 64];
    let Some(dst) = buf.get_mut(..name.len()) else {
        return false;
    };
    dst.copy_from_slice(name.as_bytes());
    // SAFETY: buf holds the name and a NUL (zeroed, name shorter than 64).
    let p = unsafe { libc::getenv(buf.as_ptr().cast()) };
    // SAFETY: getenv returned NULL or a NUL-terminated string.
    !p.is_null() && unsafe { *p } != 0
}

fn load_config() -> Result<(Config, Option<&'static Mapping>), String> {
    if let Some(path) = env(shm::ENV).filter(|s| !s.is_empty()) {
        let m: &'static Mapping = Box::leak(Box::new(Mapping::open(&path)?));
        let text = shm::config_text(m.frozen_bytes()).map_err(|e| format!("{path}: {e}"))?;
        let cfg = Config::from_toml(text).map_err(|e| format!("{path}: {e}"))?;
        return Ok((cfg, Some(m)));
    }
    let path = find_config(env, |p: &Path| p.exists()).ok_or_else(|| {
        "no configuration: run the program through `chainsocks`, or set CHAINSOCKS_CONFIG"
            .to_string()
    })?;
    let mut cfg = Config::from_file(&path).map_err(|e| e.to_string())?;
    cfg.resolve_proxies(|h, _| resolve_real_all(h, libc::AF_UNSPEC))
        .map_err(|e| e.in_file(&path).to_string())?;
    Ok((cfg, None))
}

/// Resolves a host name with the real getaddrinfo (never our hook): the first address of
/// `family` (AF_UNSPEC: any).
pub fn resolve_real(host: &str, family: libc::c_int) -> Result<IpAddr, String> {
    resolve_real_all(host, family)?
        .into_iter()
        .next()
        .ok_or_else(|| "no address".to_string())
}

/// Every address of a host name, in the real getaddrinfo's order. While it runs, this thread
/// is listed in the launch's shared page as doing a real lookup, so that the launcher's
/// supervisor lets its DNS packets reach the real nameserver.
pub fn resolve_real_all(host: &str, family: libc::c_int) -> Result<Vec<IpAddr>, String> {
    let slot = peek()
        .and_then(|st| st.counters.get(shm::REAL_LOOKUP_WORDS))
        .and_then(|words| {
            // SAFETY: gettid cannot fail.
            let tid = unsafe { libc::syscall(libc::SYS_gettid) } as u64 + 1;
            words.iter().find(|w| {
                w.compare_exchange(0, tid, Ordering::AcqRel, Ordering::Relaxed)
                    .is_ok()
            })
        });
    let r = resolve_real_unmarked(host, family);
    if let Some(w) = slot {
        w.store(0, Ordering::Release);
    }
    r
}

fn resolve_real_unmarked(host: &str, family: libc::c_int) -> Result<Vec<IpAddr>, String> {
    let gai = real::getaddrinfo().ok_or("no getaddrinfo")?;
    let free = real::freeaddrinfo().ok_or("no freeaddrinfo")?;
    let node = CString::new(host).map_err(|_| "NUL in host name")?;
    // SAFETY: all-zero hints are valid; then set the fields we need.
    let mut hints: libc::addrinfo = unsafe { std::mem::zeroed() };
    hints.ai_socktype = libc::SOCK_STREAM;
    hints.ai_family = family;
    let mut res: *mut libc::addrinfo = ptr::null_mut();
    // SAFETY: valid C strings, hints and out-pointer; the real function.
    let rc = unsafe { gai(node.as_ptr(), ptr::null(), &hints, &mut res) };
    if rc != 0 || res.is_null() {
        return Err(chainsocks_core::error::eai_message(rc).to_string());
    }
    let mut found = Vec::new();
    let mut cur = res;
    while !cur.is_null() {
        // SAFETY: cur is a node of the list getaddrinfo returned.
        let ai = unsafe { &*cur };
        // SAFETY: ai_addr holds ai_addrlen bytes.
        if let Some(sa) = unsafe { sys::read_sockaddr(ai.ai_addr, ai.ai_addrlen) }
            && !found.contains(&sa.ip())
        {
            found.push(sa.ip());
        }
        cur = ai.ai_next;
    }
    // SAFETY: the list came from the real getaddrinfo.
    unsafe { free(res) };
    if found.is_empty() {
        return Err("no address".to_string());
    }
    Ok(found)
}

/// Signals users send to stop a program: a handshake they arrive during is abandoned (EINTR)
/// when the program handles them without SA_RESTART (Python's KeyboardInterrupt), or dies of
/// them by default; they are blocked while the dialer works and looked for between waits.
const INTERRUPTING: KernelSigset =
    sigbit(libc::SIGINT) | sigbit(libc::SIGTERM) | sigbit(libc::SIGHUP) | sigbit(libc::SIGQUIT);

/// How often a long wait looks for a pending interrupting signal (the most a ^C waits).
const SIGNAL_CHECK_MS: i32 = 50;

thread_local! {
    /// The program's own signal mask while a dial on this thread has the interrupting
    /// signals blocked (none otherwise).
    static PROGRAM_MASK: Cell<Option<KernelSigset>> = const { Cell::new(None) };
}

/// Restores the thread's signal mask (and the outer dial's saved mask) when the dial ends.
pub struct SigScope {
    old: KernelSigset,
    outer: Option<KernelSigset>,
}

impl Drop for SigScope {
    fn drop(&mut self) {
        let _ = PROGRAM_MASK.try_with(|m| m.set(self.outer));
        sys::sigprocmask(libc::SIG_SETMASK, Some(self.old));
    }
}

/// Whether a signal pending now must end the handshake: delivers those that must not (handlers
/// with SA_RESTART run now, like a restarted syscall's would).
fn interrupted(program_mask: KernelSigset) -> bool {
    let pending = sys::sigpending() & INTERRUPTING & !program_mask;
    if pending == 0 {
        return false;
    }
    for sig in [libc::SIGINT, libc::SIGTERM, libc::SIGHUP, libc::SIGQUIT] {
        if pending & sigbit(sig) == 0 {
            continue;
        }
        match sys::disposition(sig) {
            // Discarded when the mask is restored: nothing to do.
            Disposition::Ignore => {}
            Disposition::Handler { restart: true } => {
                sys::sigprocmask(libc::SIG_UNBLOCK, Some(sigbit(sig)));
                sys::sigprocmask(libc::SIG_BLOCK, Some(sigbit(sig)));
            }
            Disposition::Handler { restart: false } | Disposition::Default => return true,
        }
    }
    false
}

impl Host for State {
    type DialScope = SigScope;

    fn udp_connect(&self, fd: libc::c_int, dest: SocketAddr, _: Option<libc::c_int>) -> Outcome {
        // The library's connect has read only SO_TYPE by here (the domain is always None);
        // udp::connect reads SO_DOMAIN only where a route needs it.
        match crate::udp::connect(fd, dest) {
            None => Outcome::Real(Bypass::NotStream),
            Some(Ok(())) => Outcome::Done(Ok(0)),
            Some(Err(e)) => Outcome::Done(Err(e)),
        }
    }

    fn config(&self) -> Result<&Config, &str> {
        self.cfg.as_ref().map_err(String::as_str)
    }

    fn health(&self) -> Health<'_> {
        State::health(self)
    }

    fn fake_name(&self, ip: IpAddr) -> Option<Result<String, Error>> {
        let fake = self.fake.as_ref()?.as_ref().ok()?;
        if !fake.ranges.contains(ip) {
            return None;
        }
        let name = fake.ranges.id_of(ip).and_then(|id| fake.table.name_of(id));
        Some(name.ok_or(Error::UnknownFakeIp(ip)))
    }

    fn log_enabled(&self, level: LogLevel) -> bool {
        self.sink.enabled(level)
    }

    fn log(&self, level: LogLevel, msg: std::fmt::Arguments) {
        self.sink.log(level, msg)
    }

    fn report_enabled(&self) -> bool {
        matches!(&self.cfg, Ok(c) if c.report_file.is_some())
    }

    fn report(&self, e: &Event) {
        crate::report::record(e)
    }

    fn resolve_real(&self, name: &str, family: libc::c_int) -> Result<IpAddr, String> {
        resolve_real(name, family)
    }

    fn set_peer(&self, fd: libc::c_int, asked: SocketAddr, actual: SocketAddr) {
        crate::peers::remember(fd, asked, actual)
    }

    fn begin_dial(&self) -> SigScope {
        let old = sys::sigprocmask(libc::SIG_BLOCK, Some(INTERRUPTING));
        let outer = PROGRAM_MASK
            .try_with(|m| m.replace(Some(m.get().unwrap_or(old))))
            .ok()
            .flatten();
        SigScope { old, outer }
    }

    fn wait(&self, fd: libc::c_int, events: i16, deadline: Instant) -> Result<(), Error> {
        match PROGRAM_MASK.try_with(|m| m.get()).ok().flatten() {
            // A dial with the interrupting signals blocked: look for them between slices.
            Some(mask) => wait_sliced(fd, events, deadline, Some(SIGNAL_CHECK_MS), || {
                if interrupted(mask) {
                    Err(Error::Interrupted)
                } else {
                    Ok(())
                }
            }),
            None => wait_sliced(fd, events, deadline, None, || Ok(())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::env_in;
    use std::ffi::CString;

    fn envp_of(entries: &[&str]) -> (Vec<CString>, Vec<*const libc::c_char>) {
        let owned: Vec<CString> = entries.iter().map(|e| CString::new(*e).unwrap()).collect();
        let mut ptrs: Vec<*const libc::c_char> = owned.iter().map(|c| c.as_ptr()).collect();
        ptrs.push(std::ptr::null());
        (owned, ptrs)
    }

    #[test]
    fn env_in_reads_envp_as_getenv_would() {
        let cases: &[(&[&str], bool)] = &[
            (&[], false),
            (&["CHAINSOCKS_SHM=/x"], true),
            (&["PATH=/bin", "CHAINSOCKS_SHM=/dev/shm/a"], true),
            (&["CHAINSOCKS_SHM="], false),
            (&["CHAINSOCKS_SHM"], false),
            (&["CHAINSOCKS_SH=/x", "XCHAINSOCKS_SHM=/x"], false),
            (&["CHAINSOCKS_SHMX=/x"], false),
            // getenv answers with the first entry of a name.
            (&["CHAINSOCKS_SHM=", "CHAINSOCKS_SHM=/x"], false),
            (&["CHAINSOCKS_SHM=/x", "CHAINSOCKS_SHM="], true),
        ];
        for (entries, want) in cases {
            let (_owned, ptrs) = envp_of(entries);
            // SAFETY: a NULL-terminated array of NUL-terminated strings that outlive the call.
            let got = unsafe { env_in(ptrs.as_ptr(), "CHAINSOCKS_SHM") };
            assert_eq!(got, *want, "{entries:?}");
        }
        // SAFETY: null is accepted.
        assert!(!unsafe { env_in(std::ptr::null(), "CHAINSOCKS_SHM") });
    }
}
