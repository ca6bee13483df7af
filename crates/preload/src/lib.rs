//! libchainsocks.so: the LD_PRELOAD shim. The only crate with `extern "C"` and nearly all
//! `unsafe` of chainsocks.
//!
//! - [`hooks`]: the exported C symbols, thin: pointers → guard → safe code → errno.
//! - [`real`]: the real libc functions (dlsym RTLD_NEXT table).
//! - [`guard`]: the per-thread reentrancy guard.
//! - [`state`]: the configuration, loaded lazily once per process, lock-free; the
//!   [`chainsocks_core::connect::Host`] the shared dialer runs with here.
//! - [`sock`]: the program's own connect passed on (marked when we decided it).
//! - [`alloc`]: the library's own async-signal-safe allocator (never the program's malloc).
//! - [`resolver`]: remote DNS (fake addresses); [`shared`]: the launch's shared mapping.
//! - [`peers`]: what getpeername reports for proxied sockets.
//! - [`udp`]: UDP sockets carried through SOCKS5 associations (framing, control connections).
//! - [`report`]: the egress report (JSON lines).
//! - [`log`]: one write per log line, no fd kept open.
//!
//! Rules: no threads, nothing async, no locks a `fork` could inherit held; a failure never
//! falls back to a direct connection; a panic never crosses `extern "C"`.

pub mod alloc;
pub mod guard;
pub mod hooks;
pub mod log;
pub mod peers;
pub mod real;
pub mod report;
pub mod resolver;
pub mod shared;
pub mod sock;
pub mod state;
pub mod udp;

/// Every Rust allocation of the library: lock-free, reentrant, never glibc's heap (hooks may
/// run in signal handlers that interrupted the program's malloc).
#[global_allocator]
static ALLOC: alloc::SignalSafeAlloc = alloc::SignalSafeAlloc::new();

/// The library constructor: note whether fd 2 is open, and (without the launcher) map the
/// fake-DNS table so that fork children share it whenever they fork. Nothing else: programs
/// that never connect must pay (almost) nothing, so it calls no libc function (the first call
/// into one of libc's pages costs a page fault in every process). glibc calls `.init_array`
/// functions with `(argc, argv, envp)`; elsewhere they get nothing, and the environment is
/// read with getenv.
///
/// Its code sits in `.init`, which linkers place before `.plt` and `.text`: within the 64 KiB
/// around the ELF headers that the kernel maps in on the loader's first read of them
/// (fault-around), so running it costs no page fault of its own (about 3 µs per exec of
/// /bin/true, measured in pairs). Only when the library is linked with `-nostartfiles`
/// (build.rs sets `chainsocks_nostartfiles` then; the unit tests' executable links the C
/// start files all the same): with them, `.init` holds `_init`'s prologue and epilogue, which
/// must not enclose another function.
#[cfg_attr(
    all(chainsocks_nostartfiles, not(test)),
    unsafe(link_section = ".init")
)]
extern "C" fn init(
    _argc: libc::c_int,
    _argv: *const *const libc::c_char,
    envp: *const *const libc::c_char,
) {
    // Real functions are resolved on first use (see real.rs): nothing to pay at load.
    log::init();
    let envp = cfg!(all(target_os = "linux", target_env = "gnu")).then_some(envp);
    // SAFETY: glibc's envp: the environment's NULL-terminated array.
    unsafe { state::map_standalone_table_at_load(envp) };
}

#[used]
#[unsafe(link_section = ".init_array")]
static INIT: extern "C" fn(libc::c_int, *const *const libc::c_char, *const *const libc::c_char) =
    init;
