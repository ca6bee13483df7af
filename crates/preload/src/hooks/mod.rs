//! The exported C entry points, one file per family. Every hook has the same thin shape:
//! convert pointers → take the reentrancy guard → run safe code under `catch_unwind` → map the
//! [`Route`] to a return value and errno.
//!
//! Must never: let a panic cross `extern "C"` (a caught panic fails the call closed, it never
//! calls the real function for a destination we would proxy), or leave errno changed on success.

pub mod connect;
pub mod fd;
pub mod io;
pub mod peer;
pub mod res;
pub mod resolve;
pub mod send;
pub mod sockopt;

use std::panic::{AssertUnwindSafe, catch_unwind};

use chainsocks_core::Error;
use chainsocks_core::config::LogLevel;
pub use chainsocks_core::connect::{Bypass, Outcome as Route};
use libc::c_int;

use crate::sock::{errno, set_errno};

/// Runs a hook body; `None` (and an error line) if it panicked: the caller fails closed.
pub fn catch<T>(hook: &str, body: impl FnOnce() -> T) -> Option<T> {
    match catch_unwind(AssertUnwindSafe(|| {
        test_panic(hook);
        body()
    })) {
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

/// Debug builds only (tests): `CHAINSOCKS_TEST_PANIC=<hook>` panics inside that hook's
/// `catch`, so a test can show that a panic fails the call closed with the unwinder the
/// library is really linked with. Release builds have no such switch.
#[cfg(debug_assertions)]
fn test_panic(hook: &str) {
    if crate::state::env("CHAINSOCKS_TEST_PANIC").is_some_and(|h| h == hook) {
        #[allow(clippy::panic)]
        {
            panic!("CHAINSOCKS_TEST_PANIC={hook}");
        }
    }
}

#[cfg(not(debug_assertions))]
fn test_panic(_hook: &str) {}

/// Runs a hook body, catching panics (fail closed with [`Error::Internal`]).
pub fn run(hook: &'static str, body: impl FnOnce() -> Route) -> Route {
    catch(hook, body).unwrap_or(Route::Done(Err(Error::Internal("panic in hook"))))
}

/// What a hook does when this thread is already too deep in our hooks (a runaway recursion):
/// fail closed.
pub fn too_deep() -> Route {
    Route::Done(Err(Error::Internal("hooks nested too deep")))
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
/// `real(marked)` makes the real call; `marked` is true when we decided to let an internet
/// destination through.
pub fn finish(
    route: Route,
    saved_errno: c_int,
    hook: &str,
    real: impl FnOnce(bool) -> c_int,
) -> c_int {
    match route {
        Route::Real(why) => {
            note_bypass(hook, why);
            set_errno(saved_errno);
            real(why.decided_inet())
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
