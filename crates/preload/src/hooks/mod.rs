//! The exported C entry points, one file per family. Every hook has the same thin shape:
//! convert pointers → take the reentrancy guard → run safe code under `catch_unwind` → map the
//! [`Route`] to a return value and errno.
//!
//! Must never: let a panic cross `extern "C"` (a caught panic fails the call closed, it never
//! calls the real function for a destination we would proxy), or leave errno changed on success.

pub mod connect;
pub mod peer;
pub mod resolve;
pub mod send;

use std::panic::{AssertUnwindSafe, catch_unwind};

use chainsocks_core::Error;
use chainsocks_core::config::LogLevel;
use libc::c_int;

use crate::sock::{errno, set_errno};

/// Why a call goes to the real function untouched. Logged at debug level.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Bypass {
    /// Not an AF_INET / AF_INET6 address (unix sockets, AF_UNSPEC disconnect…), or a short one.
    NotInet,
    /// Not a stream socket (UDP, raw…).
    NotStream,
    /// Not a socket at all, or a bad fd: the kernel reports the error.
    NotSocket,
    /// `proxy_dns = false`: the program resolves names itself.
    ProxyDnsOff,
    /// No host name to resolve (NULL node, AI_NUMERICHOST, an address literal).
    Numeric,
    /// `localhost`, the machine's own host name, or a name in /etc/hosts: answered locally.
    LocalName,
    /// A reverse lookup of an address outside the fake ranges.
    NotFake,
    /// localnet or a `direct` rule.
    Direct,
}

/// What a hook's safe body decided.
pub enum Route {
    /// Call the real function with the program's arguments.
    Real(Bypass),
    /// Handled: the return value, or the error to report.
    Done(Result<c_int, Error>),
}

/// Runs a hook body; `None` (and an error line) if it panicked: the caller fails closed.
pub fn catch<T>(hook: &str, body: impl FnOnce() -> T) -> Option<T> {
    match catch_unwind(AssertUnwindSafe(body)) {
        Ok(v) => Some(v),
        Err(_) => {
            let sink = &crate::state::get().sink;
            sink.log(
                LogLevel::Error,
                format_args!("{hook}: internal error (panic); failing closed"),
            );
            None
        }
    }
}

/// Runs a hook body, catching panics (fail closed with [`Error::Internal`]).
pub fn run(hook: &'static str, body: impl FnOnce() -> Route) -> Route {
    catch(hook, body).unwrap_or(Route::Done(Err(Error::Internal("panic in hook"))))
}

/// Logs (at debug) why a call went to the real function. Never loads the configuration just
/// for this (a program that only uses unix sockets pays nothing).
pub fn note_bypass(hook: &str, why: Bypass) {
    let Some(st) = crate::state::peek() else {
        return;
    };
    if st.sink.enabled(LogLevel::Debug) {
        st.sink
            .log(LogLevel::Debug, format_args!("{hook}: direct ({why:?})"));
    }
}

/// Turns a route into the C return value: errno untouched on success, set last on failure.
pub fn finish(route: Route, saved_errno: c_int, hook: &str, real: impl FnOnce() -> c_int) -> c_int {
    match route {
        Route::Real(why) => {
            note_bypass(hook, why);
            set_errno(saved_errno);
            real()
        }
        Route::Done(Ok(v)) => {
            set_errno(saved_errno);
            v
        }
        Route::Done(Err(e)) => {
            set_errno(e.errno());
            -1
        }
    }
}

/// The errno on entry, to restore on success.
pub fn entry_errno() -> c_int {
    errno()
}
