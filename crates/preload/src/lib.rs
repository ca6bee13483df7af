//! libchainsocks.so: the LD_PRELOAD shim. The only crate with `extern "C"` and nearly all
//! `unsafe` of chainsocks.
//!
//! - [`hooks`]: the exported C symbols, thin: pointers → guard → safe code → errno.
//! - [`real`]: the real libc functions (dlsym RTLD_NEXT table).
//! - [`guard`]: the per-thread reentrancy guard.
//! - [`state`]: the configuration, loaded lazily once per process, lock-free.
//! - [`dialer`]: what a proxied connect does; [`sock`]: the raw socket operations.
//! - [`resolver`]: remote DNS (fake addresses); [`shared`]: the launch's shared mapping.
//! - [`peers`]: what getpeername reports for proxied sockets.
//! - [`report`]: the egress report (JSON lines).
//! - [`log`]: one write per log line, no fd kept open.
//!
//! Rules: no threads, nothing async, no locks a `fork` could inherit held; a failure never
//! falls back to a direct connection; a panic never crosses `extern "C"`.

pub mod dialer;
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

/// The library constructor: fill the real-function table and note whether fd 2 is open.
/// Nothing else: programs that never connect must pay (almost) nothing.
extern "C" fn init() {
    // Real functions are resolved on first use (see real.rs): nothing to pay at load.
    log::init();
}

#[used]
#[unsafe(link_section = ".init_array")]
static INIT: extern "C" fn() = init;
