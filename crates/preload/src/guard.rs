//! The reentrancy guard: while a hook runs on a thread, a hooked call made by our own code on
//! that thread goes straight to the real function.
//!
//! Must never: allocate or register a TLS destructor (a `const` thread-local `Cell<bool>`).

use std::cell::Cell;

thread_local! {
    static BUSY: Cell<bool> = const { Cell::new(false) };
}

/// Held while a hook's body runs.
pub struct Guard(());

impl Guard {
    /// `None` if this thread is already inside a hook (or its TLS is gone).
    pub fn enter() -> Option<Guard> {
        BUSY.try_with(|b| {
            if b.replace(true) {
                None
            } else {
                Some(Guard(()))
            }
        })
        .ok()
        .flatten()
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        let _ = BUSY.try_with(|b| b.set(false));
    }
}
