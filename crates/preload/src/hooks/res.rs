//! The resolver entry points besides getaddrinfo and gethostby*: `getaddrinfo_a` and the
//! `res_*` family (`res_query`, `res_search`, `res_querydomain`, `res_send` and their `res_n*`
//! forms, each also under glibc's older `__res_*` name).
//!
//! With remote DNS on, none of them may send a query:
//! - `getaddrinfo_a` answers every request at once from our getaddrinfo (fake addresses, local
//!   names from the files); its results are there when it returns, so glibc's own `gai_error`,
//!   `gai_suspend` and `gai_cancel` work on them (completed requests). A SIGEV_SIGNAL or
//!   SIGEV_THREAD notification is delivered by glibc itself for a numeric placeholder request
//!   (no DNS), so the program is notified the way it asked, from glibc's own thread.
//! - the `res_*` family fails closed: -1 with `h_errno = NO_RECOVERY` and one log line per
//!   process (a raw DNS query cannot be carried by a SOCKS proxy; A/AAAA lookups belong to
//!   getaddrinfo).
//!
//! With remote DNS off, every call goes to the real function.

use std::sync::atomic::{AtomicBool, Ordering};

use chainsocks_core::config::LogLevel;
use libc::{addrinfo, c_char, c_int, c_uchar, c_void};

use crate::guard::Guard;
use crate::real;
use crate::resolver::NO_RECOVERY;
use crate::state;

/// glibc's `struct gaicb` (netdb.h).
#[repr(C)]
pub struct Gaicb {
    pub ar_name: *const c_char,
    pub ar_service: *const c_char,
    pub ar_request: *const addrinfo,
    pub ar_result: *mut addrinfo,
    pub ret: c_int,
    reserved: [c_int; 5],
}

const GAI_NOWAIT: c_int = 1;

unsafe extern "C" {
    fn __h_errno_location() -> *mut c_int;
}

/// Whether remote DNS is on in this process (the configuration loaded and `proxy_dns`).
fn remote_dns() -> bool {
    state::get().fake.is_some()
}

/// # Safety
/// The getaddrinfo_a(3) contract: `list` holds `nitems` pointers to requests (or NULLs).
#[unsafe(no_mangle)]
pub unsafe extern "C" fn getaddrinfo_a(
    mode: c_int,
    list: *mut *mut Gaicb,
    nitems: c_int,
    sevp: *mut libc::sigevent,
) -> c_int {
    let Some(real) = real::getaddrinfo_a() else {
        return libc::EAI_SYSTEM;
    };
    let remote = Guard::enter()
        .and_then(|_g| super::catch("getaddrinfo_a", remote_dns))
        .unwrap_or(true);
    if !remote || list.is_null() || nitems <= 0 {
        // SAFETY: the program's arguments, to the real function.
        return unsafe { real(mode, list, nitems, sevp) };
    }
    for i in 0..nitems as usize {
        // SAFETY: list holds nitems entries (contract).
        let Some(r) = (unsafe { (*list.add(i)).as_mut() }) else {
            continue;
        };
        // SAFETY: the request's own pointers, to our getaddrinfo (which never sends DNS).
        r.ret = unsafe {
            super::resolve::getaddrinfo(r.ar_name, r.ar_service, r.ar_request, &mut r.ar_result)
        };
    }
    // SAFETY: sevp is null or a valid sigevent (contract).
    let notify = unsafe { sevp.as_ref() }.is_some_and(|s| s.sigev_notify != libc::SIGEV_NONE);
    if mode == GAI_NOWAIT && notify {
        // glibc notifies for a request that needs no DNS; the request must outlive its
        // worker: it is leaked on purpose (a few dozen bytes per notified call).
        // SAFETY: all-zero hints are valid; numeric-only.
        let mut hints: addrinfo = unsafe { std::mem::zeroed() };
        hints.ai_flags = libc::AI_NUMERICHOST;
        hints.ai_socktype = libc::SOCK_STREAM;
        let hints: &'static addrinfo = Box::leak(Box::new(hints));
        let req: &'static mut Gaicb = Box::leak(Box::new(Gaicb {
            ar_name: c"127.0.0.1".as_ptr(),
            ar_service: std::ptr::null(),
            ar_request: hints,
            ar_result: std::ptr::null_mut(),
            ret: 0,
            reserved: [0; 5],
        }));
        let mut one: [*mut Gaicb; 1] = [req];
        // SAFETY: a valid one-entry list and the program's sigevent.
        return unsafe { real(GAI_NOWAIT, one.as_mut_ptr(), 1, sevp) };
    }
    0
}

static LOGGED: AtomicBool = AtomicBool::new(false);

/// The common body: `None` means call the real function; `Some(rc)` is our answer.
fn refuse(hook: &str) -> Option<c_int> {
    let _g = Guard::enter()?;
    let remote = super::catch(hook, remote_dns).unwrap_or(true);
    if !remote {
        return None;
    }
    if !LOGGED.swap(true, Ordering::Relaxed) {
        state::get().sink.log(
            LogLevel::Info,
            format_args!(
                "{hook}: a raw DNS query is refused with remote DNS (names are resolved by the \
                 proxy; use getaddrinfo)"
            ),
        );
    }
    // SAFETY: glibc's per-thread h_errno slot.
    unsafe { *__h_errno_location() = NO_RECOVERY };
    Some(-1)
}

/// Exports one `res_*` function under its names, refusing with remote DNS on.
macro_rules! res_hooks {
    ($($name:ident / $alias:ident: fn($($arg:ident: $ty:ty),*) = $real:ident;)*) => {
        $(
            /// # Safety
            /// The resolver(3) contract.
            #[unsafe(no_mangle)]
            pub unsafe extern "C" fn $name($($arg: $ty),*) -> c_int {
                match refuse(stringify!($name)) {
                    Some(rc) => rc,
                    // SAFETY: the program's arguments, to the real function.
                    None => real::$real().map_or(-1, |f| unsafe { f($($arg),*) }),
                }
            }

            /// # Safety
            /// The resolver(3) contract (glibc's older name).
            #[unsafe(no_mangle)]
            pub unsafe extern "C" fn $alias($($arg: $ty),*) -> c_int {
                // SAFETY: same contract.
                unsafe { $name($($arg),*) }
            }
        )*
    };
}

res_hooks! {
    res_query / __res_query: fn(dname: *const c_char, class: c_int, ty: c_int, answer: *mut c_uchar, anslen: c_int) = res_query;
    res_search / __res_search: fn(dname: *const c_char, class: c_int, ty: c_int, answer: *mut c_uchar, anslen: c_int) = res_search;
    res_querydomain / __res_querydomain: fn(name: *const c_char, domain: *const c_char, class: c_int, ty: c_int, answer: *mut c_uchar, anslen: c_int) = res_querydomain;
    res_send / __res_send: fn(msg: *const c_uchar, msglen: c_int, answer: *mut c_uchar, anslen: c_int) = res_send;
    res_nquery / __res_nquery: fn(st: *mut c_void, dname: *const c_char, class: c_int, ty: c_int, answer: *mut c_uchar, anslen: c_int) = res_nquery;
    res_nsearch / __res_nsearch: fn(st: *mut c_void, dname: *const c_char, class: c_int, ty: c_int, answer: *mut c_uchar, anslen: c_int) = res_nsearch;
    res_nquerydomain / __res_nquerydomain: fn(st: *mut c_void, name: *const c_char, domain: *const c_char, class: c_int, ty: c_int, answer: *mut c_uchar, anslen: c_int) = res_nquerydomain;
    res_nsend / __res_nsend: fn(st: *mut c_void, msg: *const c_uchar, msglen: c_int, answer: *mut c_uchar, anslen: c_int) = res_nsend;
}
