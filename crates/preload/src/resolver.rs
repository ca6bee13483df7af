//! Remote DNS: which names the program may resolve itself, and fake addresses for the rest.
//!
//! Owns: the decision per name (address literals, `localhost`, the machine's own host name and
//! /etc/hosts names go to the real resolver; every other name gets the id of the launch's
//! fake-DNS table), the results in glibc's own shapes (addrinfo lists, hostent buffers), and
//! reverse lookups of fake addresses.
//! Must never: send a name we take over to the real resolver (that is the leak this module
//! exists to prevent), allocate an addrinfo list that the real freeaddrinfo could not free, or
//! write past a caller's buffer.
//!
//! getaddrinfo results for fake names are real glibc lists: the real getaddrinfo answers for a
//! numeric placeholder (0.0.0.0 and/or ::) with the program's service and hints — so socket
//! types, protocols, ports and EAI_* errors are exactly glibc's — and then only the addresses and
//! the canonical name are rewritten. AF_UNSPEC gets the IPv4 list followed by the IPv6 list
//! (glibc frees node by node, so the two linked are still one glibc list). Every list therefore
//! has one owner and one free: the real freeaddrinfo, whatever the program re-links.

use std::collections::HashMap;
use std::ffi::{CStr, CString};
use std::net::IpAddr;
use std::ptr;
use std::sync::atomic::{AtomicBool, AtomicPtr, AtomicU64, Ordering};

use chainsocks_core::Error;
use chainsocks_core::config::LogLevel;
use chainsocks_core::fakedns::normalize;
use chainsocks_core::hosts::HostsFile;
use libc::{addrinfo, c_char, c_int, hostent, sockaddr};

use crate::hooks::Bypass;
use crate::real;
use crate::state::{self, Fake};
use chainsocks_core::sys;

/// What a lookup of one name does.
pub enum Lookup {
    /// The real resolver answers (and why).
    Real(Bypass),
    /// The table's id for the name, and the normalized name.
    Fake(&'static Fake, u32, String),
    /// Answered from the files alone, never DNS: these addresses (in file order) and the
    /// canonical name (/etc/hosts names; `localhost`, `*.localhost` and the machine's own host
    /// name when the file does not list them: loopback).
    Local(Vec<IpAddr>, String),
    /// Fail closed with this error.
    Fail(Error),
}

static FULL_LOGGED: AtomicBool = AtomicBool::new(false);

/// Decides what to do with a host name the program wants resolved.
pub fn classify(name: &CStr) -> Lookup {
    let st = state::get();
    let fake = match (&st.cfg, &st.fake) {
        (Err(e), _) => return Lookup::Fail(Error::Config(e.clone())),
        (Ok(_), None) => return Lookup::Real(Bypass::ProxyDnsOff),
        (Ok(_), Some(Err(e))) => return Lookup::Fail(Error::Config(e.clone())),
        (Ok(_), Some(Ok(f))) => f,
    };
    let Ok(text) = name.to_str() else {
        return Lookup::Fail(Error::BadName);
    };
    let bare = text.trim_start_matches('[').trim_end_matches(']');
    if bare.parse::<IpAddr>().is_ok()
        || bare
            .split('%')
            .next()
            .is_some_and(|a| a.parse::<IpAddr>().is_ok())
    {
        return Lookup::Real(Bypass::Numeric);
    }
    let Some(norm) = normalize(text) else {
        return Lookup::Fail(Error::BadName);
    };
    if let Some((addrs, canon)) = local_answer(&norm) {
        return Lookup::Local(addrs, canon);
    }
    match fake.table.id_for(&norm) {
        Ok(id) => {
            if st.sink.enabled(LogLevel::Debug) {
                st.sink.log(
                    LogLevel::Debug,
                    format_args!(
                        "lookup {norm} -> {} / {}",
                        fake.ranges.v4_of(id),
                        fake.ranges.v6_of(id)
                    ),
                );
            }
            lookup_event(&norm, Some(fake.ranges.v4_of(id).into()), "ok");
            Lookup::Fake(fake, id, norm)
        }
        Err(e) => {
            lookup_event(&norm, None, chainsocks_core::error::errno_name(e.errno()));
            if !FULL_LOGGED.swap(true, Ordering::Relaxed) {
                st.sink.log(
                    LogLevel::Error,
                    format_args!(
                        "fake-DNS table full ({} names): lookup of {norm} fails with EAI_AGAIN",
                        fake.table.capacity()
                    ),
                );
            }
            Lookup::Fail(e)
        }
    }
}

/// Records a lookup in the egress report (if there is one).
fn lookup_event(name: &str, ip: Option<IpAddr>, result: &str) {
    if crate::report::enabled() {
        crate::report::record(&crate::report::Event {
            kind: crate::report::Kind::Lookup,
            name: Some(name),
            ip,
            port: None,
            rule: None,
            chain: None,
            result,
            ms: None,
        });
    }
}

/// The name behind a fake address: `None` if `ip` is not in a fake range (or remote DNS is
/// off); `Some(Err)` for an address of the range that was never handed out.
pub fn reverse(ip: IpAddr) -> Option<Result<String, Error>> {
    chainsocks_core::connect::Host::fake_name(state::get(), ip)
}

/// What a reverse lookup of an address gives when remote DNS is on: never a PTR query.
pub enum Reverse {
    /// Remote DNS is off: the real resolver.
    Real,
    /// A fake address's name, or an /etc/hosts name.
    Name(String),
    /// No name without asking DNS: the numeric form (or EAI_NONAME / HOST_NOT_FOUND).
    Nameless,
}

/// The name of `ip` for getnameinfo / gethostbyaddr.
pub fn reverse_lookup(ip: IpAddr) -> Reverse {
    let st = state::get();
    if !matches!(st.fake, Some(Ok(_))) {
        return Reverse::Real;
    }
    match reverse(ip) {
        Some(Ok(name)) => Reverse::Name(name),
        Some(Err(_)) => Reverse::Nameless,
        None => match with_hosts(|h| h.by_addr.get(&ip).cloned()) {
            Some(name) => Reverse::Name(name),
            None => Reverse::Nameless,
        },
    }
}

/// The files' answer for a normalized name, if it is a local one.
fn local_answer(name: &str) -> Option<(Vec<IpAddr>, String)> {
    let loopback = || {
        vec![
            IpAddr::from([127, 0, 0, 1]),
            IpAddr::from([0u16, 0, 0, 0, 0, 0, 0, 1]),
        ]
    };
    with_hosts(|h| {
        if let Some((canon, addrs)) = h.by_name.get(name) {
            return Some((addrs.clone(), canon.clone()));
        }
        // RFC 6761: localhost and every name under it are loopback; so is the machine's own
        // name when /etc/hosts does not list it (asking DNS for it would leak it).
        if name == "localhost"
            || name.ends_with(".localhost")
            || (!h.hostname.is_empty() && h.hostname.eq_ignore_ascii_case(name))
        {
            return Some((loopback(), name.to_string()));
        }
        None
    })
}

/// The names answered locally: /etc/hosts and the machine's host name. Re-read when
/// /etc/hosts changes (keyed by its stat), looked at no more than once a second (so a lookup
/// costs no syscall on the hot path; a change is seen within a second).
struct Hosts {
    key: [i64; 5],
    checked_ms: AtomicU64,
    hostname: String,
    /// name → (canonical name: the first of its line, addresses in file order).
    by_name: HashMap<String, (String, Vec<IpAddr>)>,
    /// address → its first name.
    by_addr: HashMap<IpAddr, String>,
}

static HOSTS: AtomicPtr<Hosts> = AtomicPtr::new(ptr::null_mut());

fn coarse_ms() -> u64 {
    // SAFETY: zeroed timespec filled by clock_gettime (vDSO, no syscall).
    let mut ts: libc::timespec = unsafe { std::mem::zeroed() };
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC_COARSE, &mut ts) };
    ts.tv_sec as u64 * 1000 + ts.tv_nsec as u64 / 1_000_000
}

fn with_hosts<T>(test: impl Fn(&Hosts) -> T) -> T {
    let now = coarse_ms();
    let cur = HOSTS.load(Ordering::Acquire);
    // SAFETY: published Hosts are never freed.
    if let Some(h) = unsafe { cur.as_ref() }
        && now.saturating_sub(h.checked_ms.load(Ordering::Relaxed)) < 1000
    {
        return test(h);
    }
    let key = match chainsocks_core::sys::stat(c"/etc/hosts") {
        Ok(st) => [
            st.st_dev as i64,
            st.st_ino as i64,
            st.st_mtime,
            st.st_mtime_nsec,
            st.st_size,
        ],
        Err(_) => [0; 5],
    };
    let hostname = chainsocks_core::sys::hostname()
        .map(|h| String::from_utf8_lossy(&h).into_owned())
        .unwrap_or_default();
    // SAFETY: as above.
    if let Some(h) = unsafe { cur.as_ref() }
        && h.key == key
        && h.hostname == hostname
    {
        h.checked_ms.store(now, Ordering::Relaxed);
        return test(h);
    }
    let text = std::fs::read_to_string("/etc/hosts").unwrap_or_default();
    let HostsFile { by_name, by_addr } = HostsFile::parse(&text);
    let fresh = Box::new(Hosts {
        key,
        checked_ms: AtomicU64::new(now),
        hostname,
        by_name,
        by_addr,
    });
    let found = test(&fresh);
    // Publish; an older table is leaked on purpose (another thread may still read it).
    let fresh = Box::into_raw(fresh);
    if HOSTS
        .compare_exchange(cur, fresh, Ordering::AcqRel, Ordering::Acquire)
        .is_err()
    {
        // SAFETY: never published.
        drop(unsafe { Box::from_raw(fresh) });
    }
    found
}

/// glibc's default flags for a NULL `hints`.
const DEFAULT_FLAGS: c_int = libc::AI_V4MAPPED | libc::AI_ADDRCONFIG;

/// getaddrinfo. `Ok(code)` is the return value (0 or an EAI_* the real function gave);
/// `Err(bypass)` means: call the real function with the program's arguments.
///
/// # Safety
/// The getaddrinfo(3) contract for all pointers.
pub unsafe fn getaddrinfo(
    node: *const c_char,
    service: *const c_char,
    hints: *const addrinfo,
    res: *mut *mut addrinfo,
) -> Result<Result<c_int, Error>, Bypass> {
    if node.is_null() {
        return Err(Bypass::Numeric);
    }
    let real = real::getaddrinfo().ok_or(Bypass::Numeric)?;
    // SAFETY: all-zero is a valid addrinfo; hints (if any) is readable.
    let mut h: addrinfo = unsafe { std::mem::zeroed() };
    match unsafe { hints.as_ref() } {
        Some(given) => {
            h.ai_flags = given.ai_flags;
            h.ai_family = given.ai_family;
            h.ai_socktype = given.ai_socktype;
            h.ai_protocol = given.ai_protocol;
        }
        None => h.ai_flags = DEFAULT_FLAGS,
    }
    if h.ai_flags & libc::AI_NUMERICHOST != 0 {
        return Err(Bypass::Numeric);
    }
    // A numeric host (in any form glibc accepts) or an error that does not depend on the name
    // (EAI_SERVICE, EAI_FAMILY, EAI_SOCKTYPE, EAI_BADFLAGS): the real answer, no DNS.
    let mut probe = h;
    probe.ai_flags |= libc::AI_NUMERICHOST;
    // SAFETY: the program's pointers and our probe hints; the real function.
    let rc = unsafe { real(node, service, &probe, res) };
    if rc != libc::EAI_NONAME {
        return Ok(Ok(rc));
    }
    // SAFETY: node is a NUL-terminated string (contract).
    let name = unsafe { CStr::from_ptr(node) };
    let (addrs, canon): (Vec<IpAddr>, String) = match classify(name) {
        Lookup::Real(b) => return Err(b),
        Lookup::Fail(e) => return Ok(Err(e)),
        // A fake name has both an IPv4 and an IPv6 address: AF_UNSPEC gets both, IPv4 first
        // (the order glibc's RFC 6724 sort gives an IPv4 and a ULA address). Programs that
        // ask AF_UNSPEC and keep one family themselves (curl -6 does) then find theirs.
        Lookup::Fake(f, id, n) => (
            vec![f.ranges.v4_of(id).into(), f.ranges.v6_of(id).into()],
            n,
        ),
        Lookup::Local(a, c) => (a, c),
    };
    let mut chosen: Vec<(c_int, IpAddr)> = Vec::with_capacity(addrs.len());
    for &ip in &addrs {
        match (h.ai_family, ip) {
            (libc::AF_INET | libc::AF_UNSPEC, IpAddr::V4(_)) => chosen.push((libc::AF_INET, ip)),
            (libc::AF_INET6 | libc::AF_UNSPEC, IpAddr::V6(_)) => chosen.push((libc::AF_INET6, ip)),
            _ => {}
        }
    }
    if chosen.is_empty() && h.ai_family == libc::AF_INET6 && h.ai_flags & libc::AI_V4MAPPED != 0 {
        for &ip in &addrs {
            if let IpAddr::V4(v4) = ip {
                chosen.push((libc::AF_INET6, IpAddr::V6(v4.to_ipv6_mapped())));
            }
        }
    }
    if chosen.is_empty() {
        // The name exists, but not with this family: no DNS to ask.
        return Ok(Ok(libc::EAI_NONAME));
    }
    // SAFETY: the program's service and our hints; the real function with numeric hosts.
    Ok(unsafe { numeric_list(real, &chosen, &canon, service, &h, res) })
}

/// A real glibc list for `addrs`: the real getaddrinfo answers each numeric address with the
/// program's service and hints (so socket types, protocols, ports and EAI_* errors are
/// glibc's), the lists are linked (glibc frees node by node, so linked lists are one list),
/// and the canonical name is set on the first node when AI_CANONNAME asks for it.
///
/// # Safety
/// `service` is null or NUL-terminated; `res` is writable.
unsafe fn numeric_list(
    real: real::Getaddrinfo,
    addrs: &[(c_int, IpAddr)],
    canon: &str,
    service: *const c_char,
    h: &addrinfo,
    res: *mut *mut addrinfo,
) -> Result<c_int, Error> {
    let mut head: *mut addrinfo = ptr::null_mut();
    let mut tail: *mut *mut addrinfo = &mut head;
    for &(family, ip) in addrs {
        let mut place = *h;
        place.ai_family = family;
        place.ai_flags = (h.ai_flags | libc::AI_NUMERICHOST)
            & !(libc::AI_ADDRCONFIG | libc::AI_ALL | libc::AI_V4MAPPED | libc::AI_CANONNAME);
        let Ok(text) = CString::new(ip.to_string()) else {
            continue;
        };
        let mut part: *mut addrinfo = ptr::null_mut();
        // SAFETY: a numeric host, the program's service, our hints and out-pointer.
        let rc = unsafe { real(text.as_ptr(), service, &place, &mut part) };
        if rc != 0 {
            if head.is_null() {
                return Ok(rc);
            }
            break;
        }
        // SAFETY: tail points at head or at the ai_next of our list's last node.
        unsafe {
            *tail = part;
            while let Some(ai) = (*tail).as_mut() {
                tail = &mut ai.ai_next;
            }
        }
    }
    if h.ai_flags & libc::AI_CANONNAME != 0
        && let (Some(first), Ok(c)) = (unsafe { head.as_mut() }, CString::new(canon))
    {
        // SAFETY: glibc's canonname is malloc'd (or NULL) and freed with free(): ours too.
        unsafe {
            libc::free(first.ai_canonname.cast());
            first.ai_canonname = libc::strdup(c.as_ptr());
        }
    }
    // SAFETY: res is writable (contract).
    unsafe { *res = head };
    Ok(0)
}

/// h_errno values (netdb.h).
pub const HOST_NOT_FOUND: c_int = 1;
pub const TRY_AGAIN: c_int = 2;
pub const NO_RECOVERY: c_int = 3;
pub const NO_DATA: c_int = 4;
pub const NETDB_INTERNAL: c_int = -1;

/// The h_errno a failed lookup reports.
pub fn h_errno_of(e: &Error) -> c_int {
    match e {
        Error::TableFull => TRY_AGAIN,
        Error::BadName | Error::UnknownFakeIp(_) => HOST_NOT_FOUND,
        _ => NO_RECOVERY,
    }
}

/// A hostent answer: the name, the family and its addresses.
pub struct HostAnswer {
    pub name: String,
    pub family: c_int,
    /// Up to [`MAX_HOST_ADDRS`] addresses of `family` (4 or 16 bytes used of each).
    pub addrs: Vec<[u8; 16]>,
}

/// The most addresses a hostent answer carries.
pub const MAX_HOST_ADDRS: usize = 16;

impl HostAnswer {
    fn addr_len(&self) -> usize {
        if self.family == libc::AF_INET6 { 16 } else { 4 }
    }

    /// Bytes of caller buffer [`fill`](Self::fill) needs.
    pub fn needed(&self) -> usize {
        let ptrs = (self.addrs.len() + 2) * size_of::<*mut c_char>();
        7 + ptrs + 16 * self.addrs.len() + self.name.len() + 1
    }

    /// Fills `ret` with pointers into `buf` (h_addr_list, h_aliases, addresses, name).
    /// `Err(ERANGE)` if `buf` is too small; nothing is written then.
    ///
    /// # Safety
    /// `ret` is writable; `buf` is writable for `buflen` bytes.
    pub unsafe fn fill(
        &self,
        ret: *mut hostent,
        buf: *mut c_char,
        buflen: usize,
    ) -> Result<(), c_int> {
        if ret.is_null() || buf.is_null() || buflen < self.needed() {
            return Err(libc::ERANGE);
        }
        let n = self.addrs.len();
        let align = (buf as usize).next_multiple_of(align_of::<*mut c_char>()) - buf as usize;
        // SAFETY: every write below is inside buf[..needed()] (checked), pointers aligned.
        unsafe {
            let base = buf.add(align);
            let list = base as *mut *mut c_char; // [addr..., NULL]
            let aliases = list.add(n + 1); // [NULL]
            let mut addr = aliases.add(1) as *mut c_char;
            for (i, a) in self.addrs.iter().enumerate() {
                ptr::copy_nonoverlapping(a.as_ptr().cast(), addr, self.addr_len());
                *list.add(i) = addr;
                addr = addr.add(16);
            }
            *list.add(n) = ptr::null_mut();
            *aliases = ptr::null_mut();
            let name = addr;
            ptr::copy_nonoverlapping(self.name.as_ptr().cast(), name, self.name.len());
            *name.add(self.name.len()) = 0;
            (*ret).h_name = name;
            (*ret).h_aliases = aliases;
            (*ret).h_addrtype = self.family;
            (*ret).h_length = self.addr_len() as c_int;
            (*ret).h_addr_list = list;
        }
        Ok(())
    }
}

fn octets(ip: IpAddr) -> [u8; 16] {
    let mut b = [0u8; 16];
    match ip {
        IpAddr::V4(v4) => b[..4].copy_from_slice(&v4.octets()),
        IpAddr::V6(v6) => b = v6.octets(),
    }
    b
}

/// gethostbyname2 for a name: `Err(bypass)` = real function; `Ok(Err((h_errno, errno)))` =
/// fail; `Ok(Ok(answer))`. A fake name has only an IPv4 answer here (AF_INET6 gives NO_DATA),
/// like a name with only an A record: tools such as `getent hosts` try AF_INET6 first and
/// print whatever answers, and an IPv4 address is what a URL or a script can use as is.
/// Programs that want IPv6 fake addresses ask getaddrinfo with AF_INET6. A local name answers
/// with its addresses of that family (none: NO_DATA, never a DNS query).
pub fn host_by_name(name: &CStr, af: c_int) -> Result<Result<HostAnswer, (c_int, c_int)>, Bypass> {
    if af != libc::AF_INET && af != libc::AF_INET6 {
        return Ok(Err((NETDB_INTERNAL, libc::EAFNOSUPPORT)));
    }
    match classify(name) {
        Lookup::Real(b) => Err(b),
        Lookup::Fail(e) => Ok(Err((h_errno_of(&e), e.errno()))),
        Lookup::Fake(_, _, _) if af == libc::AF_INET6 => Ok(Err((NO_DATA, 0))),
        Lookup::Fake(fake, id, norm) => Ok(Ok(HostAnswer {
            name: norm,
            family: libc::AF_INET,
            addrs: vec![octets(fake.ranges.v4_of(id).into())],
        })),
        Lookup::Local(addrs, canon) => {
            let addrs: Vec<[u8; 16]> = addrs
                .into_iter()
                .filter(|ip| sys::family_of(*ip) == af)
                .take(MAX_HOST_ADDRS)
                .map(octets)
                .collect();
            if addrs.is_empty() {
                return Ok(Err((NO_DATA, 0)));
            }
            Ok(Ok(HostAnswer {
                name: canon,
                family: af,
                addrs,
            }))
        }
    }
}

/// gethostbyaddr for `len` bytes at `addr` of `family`: a fake address's name, an /etc/hosts
/// name, else "not found" (remote DNS on: no PTR query ever leaves).
///
/// # Safety
/// `addr` is readable for `len` bytes (or null).
pub unsafe fn host_by_addr(
    addr: *const u8,
    len: usize,
    family: c_int,
) -> Result<Result<HostAnswer, (c_int, c_int)>, Bypass> {
    if addr.is_null() {
        return Err(Bypass::NotFake);
    }
    let mut bytes = [0u8; 16];
    let ip = match (family, len) {
        (libc::AF_INET, 4) => {
            // SAFETY: 4 readable bytes.
            unsafe { ptr::copy_nonoverlapping(addr, bytes.as_mut_ptr(), 4) };
            IpAddr::from([bytes[0], bytes[1], bytes[2], bytes[3]])
        }
        (libc::AF_INET6, 16) => {
            // SAFETY: 16 readable bytes.
            unsafe { ptr::copy_nonoverlapping(addr, bytes.as_mut_ptr(), 16) };
            IpAddr::from(bytes)
        }
        _ => return Err(Bypass::NotFake),
    };
    match reverse_lookup(ip) {
        Reverse::Real => Err(Bypass::ProxyDnsOff),
        Reverse::Nameless => Ok(Err((HOST_NOT_FOUND, 0))),
        Reverse::Name(name) => Ok(Ok(HostAnswer {
            name,
            family,
            addrs: vec![bytes],
        })),
    }
}

/// What getnameinfo answers for the host part of an internet address; `None`: not an
/// internet address (the real function).
///
/// # Safety
/// `sa` is readable for `len` bytes (or null).
pub unsafe fn name_info(sa: *const sockaddr, len: libc::socklen_t) -> Option<Reverse> {
    // SAFETY: caller's contract.
    let addr = unsafe { sys::read_sockaddr(sa, len) }?;
    let ip = match addr.ip() {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(addr.ip(), IpAddr::V4),
        v4 => v4,
    };
    Some(reverse_lookup(ip))
}
