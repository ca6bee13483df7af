//! The reentrancy guard: how deep in our own hooks this thread is.
//!
//! Hooks nest legitimately: a signal handler that interrupted a hook may call connect (it is
//! async-signal-safe), and a resolver module (NSS) may call a hooked function from inside the
//! real resolver. Such nested calls run the hook in full — they are never sent to the real
//! function for a destination we would proxy. Only a runaway recursion (a bug) is stopped:
//! beyond [`MAX_DEPTH`] a hook fails closed.
//! Must never: allocate or register a TLS destructor (a `const` thread-local `Cell<u8>`).

use std::cell::Cell;

/// Nested hook calls allowed on one thread (signal handlers within handlers…).
pub const MAX_DEPTH: u8 = 4;

thread_local! {
    static DEPTH: Cell<u8> = const { Cell::new(0) };
}

/// Held while a hook's body runs.
pub struct Guard(());

impl Guard {
    /// `None` if this thread is already [`MAX_DEPTH`] hooks deep (or its TLS is gone): the
    /// caller fails closed.
    pub fn enter() -> Option<Guard> {
        DEPTH
            .try_with(|d| {
                let v = d.get();
                if v >= MAX_DEPTH {
                    None
                } else {
                    d.set(v + 1);
                    Some(Guard(()))
                }
            })
            .ok()
            .flatten()
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        let _ = DEPTH.try_with(|d| d.set(d.get().saturating_sub(1)));
    }
}
