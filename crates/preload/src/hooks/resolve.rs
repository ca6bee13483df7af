//! The resolver entry points: getaddrinfo, freeaddrinfo, gethostbyname{,2}{,_r},
//! gethostbyaddr{,_r}, getnameinfo. Thin: the decisions are in [`crate::resolver`].

use std::cell::UnsafeCell;
use std::ffi::CStr;
use std::mem::MaybeUninit;
use std::ptr;

use libc::{addrinfo, c_char, c_int, c_void, hostent, size_t, sockaddr, socklen_t};

use super::{catch, entry_errno, note_bypass};
use crate::guard::Guard;
use crate::real;
use crate::resolver::{self, HostAnswer, NETDB_INTERNAL, NO_RECOVERY, Reverse};
use crate::sock::set_errno;

unsafe extern "C" {
    fn __h_errno_location() -> *mut c_int;
}

fn set_h_errno(v: c_int) {
    // SAFETY: glibc's per-thread h_errno slot.
    unsafe { *__h_errno_location() = v };
}

/// # Safety
/// The getaddrinfo(3) contract.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn getaddrinfo(
    node: *const c_char,
    service: *const c_char,
    hints: *const addrinfo,
    res: *mut *mut addrinfo,
) -> c_int {
    let Some(real) = real::getaddrinfo() else {
        return libc::EAI_FAIL;
    };
    let Some(_guard) = Guard::enter() else {
        return libc::EAI_AGAIN;
    };
    let saved = entry_errno();
    // SAFETY: getaddrinfo(3) contract.
    let outcome = catch("getaddrinfo", || unsafe {
        resolver::getaddrinfo(node, service, hints, res)
    });
    match outcome {
        None => libc::EAI_FAIL,
        Some(Err(why)) => {
            note_bypass("getaddrinfo", why);
            set_errno(saved);
            // SAFETY: as above.
            unsafe { real(node, service, hints, res) }
        }
        Some(Ok(Ok(rc))) => {
            if rc != libc::EAI_SYSTEM {
                set_errno(saved);
            }
            rc
        }
        Some(Ok(Err(e))) => {
            set_errno(e.errno());
            e.eai()
        }
    }
}

/// Every list getaddrinfo returns (ours included: see [`crate::resolver`]) is a glibc list.
///
/// # Safety
/// The freeaddrinfo(3) contract.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn freeaddrinfo(ai: *mut addrinfo) {
    if let Some(real) = real::freeaddrinfo() {
        // SAFETY: a list from getaddrinfo.
        unsafe { real(ai) }
    }
}

/// Where an answer goes: the caller's buffer (`_r`) or this thread's static one.
enum Out {
    Caller {
        ret: *mut hostent,
        buf: *mut c_char,
        buflen: usize,
        result: *mut *mut hostent,
        h_errnop: *mut c_int,
    },
    Static,
}

thread_local! {
    static HOSTENT: UnsafeCell<MaybeUninit<hostent>> = const { UnsafeCell::new(MaybeUninit::zeroed()) };
    static HOSTBUF: UnsafeCell<[u64; 160]> = const { UnsafeCell::new([0; 160]) };
}

/// Delivers a decided answer; returns the `_r` return code (the static form ignores it).
fn deliver(answer: Result<HostAnswer, (c_int, c_int)>, out: &Out) -> (c_int, *mut hostent) {
    let fail = |h: c_int, e: c_int| {
        if let Out::Caller {
            result, h_errnop, ..
        } = out
        {
            // SAFETY: the caller's out-pointers (contract).
            unsafe {
                if !result.is_null() {
                    **result = ptr::null_mut();
                }
                if !h_errnop.is_null() {
                    **h_errnop = h;
                }
            }
        }
        // The `_r` forms too: glibc's DNS backend sets the global h_errno as well, and programs
        // read it after an `_r` call (CPython's gethostbyaddr/gethostbyname_ex raise
        // `herror(h_errno)`: without this, "Resolver Error 0 (no error)").
        set_h_errno(h);
        if e != 0 {
            set_errno(e);
        }
        // _r: "not found" is 0 with a NULL result; ERANGE / EAGAIN are returned.
        let rc = if e == libc::ERANGE || e == libc::EAGAIN {
            e
        } else {
            0
        };
        (rc, ptr::null_mut())
    };
    let a = match answer {
        Ok(a) => a,
        Err((h, e)) => return fail(h, e),
    };
    match out {
        Out::Caller {
            ret,
            buf,
            buflen,
            result,
            ..
        } => {
            // SAFETY: the caller's buffer of buflen bytes (contract).
            match unsafe { a.fill(*ret, *buf, *buflen) } {
                Ok(()) => {
                    // SAFETY: caller's out-pointer.
                    unsafe {
                        if !result.is_null() {
                            **result = *ret;
                        }
                    }
                    (0, *ret)
                }
                Err(e) => fail(NETDB_INTERNAL, e),
            }
        }
        Out::Static => {
            let he = HOSTENT.with(|h| h.get().cast::<hostent>());
            let buf = HOSTBUF.with(|b| b.get());
            // SAFETY: this thread's static storage, 1280 bytes (a name is at most 255, at most
            // 16 addresses).
            match unsafe { a.fill(he, buf.cast(), size_of::<[u64; 160]>()) } {
                Ok(()) => (0, he),
                Err(_) => fail(NO_RECOVERY, 0),
            }
        }
    }
}

/// The body shared by the six hostent entry points: `decide` (run under the guard and
/// `catch_unwind`) says whether the real function answers or what we answer, and where to.
type Decision = Result<Result<HostAnswer, (c_int, c_int)>, crate::hooks::Bypass>;

fn hostent_hook(
    hook: &'static str,
    out: Out,
    decide: impl FnOnce() -> Decision,
    real: impl FnOnce() -> (c_int, *mut hostent),
) -> (c_int, *mut hostent) {
    let Some(_guard) = Guard::enter() else {
        return deliver(Err((NO_RECOVERY, libc::EAGAIN)), &out);
    };
    let saved = entry_errno();
    match catch(hook, decide) {
        None => deliver(Err((NO_RECOVERY, libc::EIO)), &out),
        Some(Err(why)) => {
            note_bypass(hook, why);
            set_errno(saved);
            real()
        }
        Some(Ok(answer)) => {
            let ok = answer.is_ok();
            let r = deliver(answer, &out);
            if ok {
                set_errno(saved);
            }
            r
        }
    }
}

/// By name: a NULL name goes to the real function.
fn by_name(
    hook: &'static str,
    name: *const c_char,
    af: c_int,
    out: Out,
    real: impl FnOnce() -> (c_int, *mut hostent),
) -> (c_int, *mut hostent) {
    if name.is_null() {
        return real();
    }
    // SAFETY: name is NUL-terminated (contract).
    let decide = || resolver::host_by_name(unsafe { CStr::from_ptr(name) }, af);
    hostent_hook(hook, out, decide, real)
}

/// By address.
fn by_addr(
    hook: &'static str,
    addr: *const c_void,
    len: socklen_t,
    af: c_int,
    out: Out,
    real: impl FnOnce() -> (c_int, *mut hostent),
) -> (c_int, *mut hostent) {
    // SAFETY: addr is readable for len bytes (contract).
    let decide = || unsafe { resolver::host_by_addr(addr.cast(), len as usize, af) };
    hostent_hook(hook, out, decide, real)
}

/// # Safety
/// The gethostbyname(3) contract.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn gethostbyname(name: *const c_char) -> *mut hostent {
    by_name("gethostbyname", name, libc::AF_INET, Out::Static, || {
        // SAFETY: the program's argument, to the real function.
        (
            0,
            real::gethostbyname().map_or(ptr::null_mut(), |f| unsafe { f(name) }),
        )
    })
    .1
}

/// # Safety
/// The gethostbyname2(3) contract.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn gethostbyname2(name: *const c_char, af: c_int) -> *mut hostent {
    by_name("gethostbyname2", name, af, Out::Static, || {
        // SAFETY: the program's arguments, to the real function.
        (
            0,
            real::gethostbyname2().map_or(ptr::null_mut(), |f| unsafe { f(name, af) }),
        )
    })
    .1
}

/// # Safety
/// The gethostbyname_r(3) contract.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn gethostbyname_r(
    name: *const c_char,
    ret: *mut hostent,
    buf: *mut c_char,
    buflen: size_t,
    result: *mut *mut hostent,
    h_errnop: *mut c_int,
) -> c_int {
    let out = Out::Caller {
        ret,
        buf,
        buflen,
        result,
        h_errnop,
    };
    by_name("gethostbyname_r", name, libc::AF_INET, out, || {
        // SAFETY: the program's arguments, to the real function.
        let rc = real::gethostbyname_r().map_or(libc::ENOSYS, |f| unsafe {
            f(name, ret, buf, buflen, result, h_errnop)
        });
        (rc, ptr::null_mut())
    })
    .0
}

/// # Safety
/// The gethostbyname2_r(3) contract.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn gethostbyname2_r(
    name: *const c_char,
    af: c_int,
    ret: *mut hostent,
    buf: *mut c_char,
    buflen: size_t,
    result: *mut *mut hostent,
    h_errnop: *mut c_int,
) -> c_int {
    let out = Out::Caller {
        ret,
        buf,
        buflen,
        result,
        h_errnop,
    };
    by_name("gethostbyname2_r", name, af, out, || {
        // SAFETY: the program's arguments, to the real function.
        let rc = real::gethostbyname2_r().map_or(libc::ENOSYS, |f| unsafe {
            f(name, af, ret, buf, buflen, result, h_errnop)
        });
        (rc, ptr::null_mut())
    })
    .0
}

/// # Safety
/// The gethostbyaddr(3) contract.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn gethostbyaddr(
    addr: *const c_void,
    len: socklen_t,
    af: c_int,
) -> *mut hostent {
    by_addr("gethostbyaddr", addr, len, af, Out::Static, || {
        // SAFETY: the program's arguments, to the real function.
        (
            0,
            real::gethostbyaddr().map_or(ptr::null_mut(), |f| unsafe { f(addr, len, af) }),
        )
    })
    .1
}

/// # Safety
/// The gethostbyaddr_r(3) contract.
#[unsafe(no_mangle)]
#[allow(clippy::too_many_arguments)]
pub unsafe extern "C" fn gethostbyaddr_r(
    addr: *const c_void,
    len: socklen_t,
    af: c_int,
    ret: *mut hostent,
    buf: *mut c_char,
    buflen: size_t,
    result: *mut *mut hostent,
    h_errnop: *mut c_int,
) -> c_int {
    let out = Out::Caller {
        ret,
        buf,
        buflen,
        result,
        h_errnop,
    };
    by_addr("gethostbyaddr_r", addr, len, af, out, || {
        // SAFETY: the program's arguments, to the real function.
        let rc = real::gethostbyaddr_r().map_or(libc::ENOSYS, |f| unsafe {
            f(addr, len, af, ret, buf, buflen, result, h_errnop)
        });
        (rc, ptr::null_mut())
    })
    .0
}

/// # Safety
/// The getnameinfo(3) contract.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn getnameinfo(
    sa: *const sockaddr,
    salen: socklen_t,
    host: *mut c_char,
    hostlen: socklen_t,
    serv: *mut c_char,
    servlen: socklen_t,
    flags: c_int,
) -> c_int {
    let Some(real) = real::getnameinfo() else {
        return libc::EAI_FAIL;
    };
    // SAFETY (all calls of `call`): the program's buffers, to the real function.
    let call = |host: *mut c_char, hostlen: socklen_t, flags: c_int| unsafe {
        real(sa, salen, host, hostlen, serv, servlen, flags)
    };
    if host.is_null() || hostlen == 0 || flags & libc::NI_NUMERICHOST != 0 {
        return call(host, hostlen, flags);
    }
    let Some(_guard) = Guard::enter() else {
        return libc::EAI_AGAIN;
    };
    let saved = entry_errno();
    // SAFETY: sa readable for salen bytes (contract).
    let Some(found) = catch("getnameinfo", || unsafe { resolver::name_info(sa, salen) }) else {
        return libc::EAI_FAIL;
    };
    let rc = match found {
        None | Some(Reverse::Real) => return call(host, hostlen, flags),
        // No name without a PTR query (remote DNS on: never sent): numeric, as proxychains-ng
        // answers, or EAI_NONAME when a name is required.
        Some(Reverse::Nameless) if flags & libc::NI_NAMEREQD != 0 => libc::EAI_NONAME,
        Some(Reverse::Nameless) => call(host, hostlen, flags | libc::NI_NUMERICHOST),
        Some(Reverse::Name(name)) if name.len() + 1 > hostlen as usize => libc::EAI_OVERFLOW,
        Some(Reverse::Name(name)) => {
            let rc = if serv.is_null() {
                0
            } else {
                call(ptr::null_mut(), 0, flags | libc::NI_NUMERICHOST)
            };
            if rc == 0 {
                // SAFETY: host has hostlen > name.len() bytes (checked).
                unsafe {
                    ptr::copy_nonoverlapping(name.as_ptr().cast(), host, name.len());
                    *host.add(name.len()) = 0;
                }
            }
            rc
        }
    };
    if rc != libc::EAI_SYSTEM {
        set_errno(saved);
    }
    rc
}
