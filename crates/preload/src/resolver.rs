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

use std::collections::HashSet;
use std::ffi::{CStr, CString};
use std::net::IpAddr;
use std::ptr;
use std::sync::atomic::{AtomicBool, AtomicPtr, AtomicU64, Ordering};

use chainsocks_core::Error;
use chainsocks_core::config::LogLevel;
use chainsocks_core::fakedns::normalize;
use libc::{addrinfo, c_char, c_int, hostent, sockaddr, sockaddr_in, sockaddr_in6};

use crate::hooks::Bypass;
use crate::real;
use crate::state::{self, Fake};

/// What a lookup of one name does.
pub enum Lookup {
    /// The real resolver answers (and why).
    Real(Bypass),
    /// The table's id for the name, and the normalized name.
    Fake(&'static Fake, u32, String),
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
    if is_local_name(&norm) {
        return Lookup::Real(Bypass::LocalName);
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
    let st = state::get();
    let fake = st.fake.as_ref()?.as_ref().ok()?;
    if !fake.ranges.contains(ip) {
        return None;
    }
    let name = fake.ranges.id_of(ip).and_then(|id| fake.table.name_of(id));
    Some(name.ok_or(Error::UnknownFakeIp(ip)))
}

fn is_local_name(name: &str) -> bool {
    if name == "localhost" || name.ends_with(".localhost") {
        return true;
    }
    local_names(|h| h.hostname.eq_ignore_ascii_case(name) || h.names.contains(name))
}

/// The names answered locally: /etc/hosts and the machine's host name. Re-read when
/// /etc/hosts changes (keyed by its stat), looked at no more than once a second (so a lookup
/// costs no syscall on the hot path; a change is seen within a second).
struct Hosts {
    key: [i64; 5],
    checked_ms: AtomicU64,
    hostname: String,
    names: HashSet<String>,
}

static HOSTS: AtomicPtr<Hosts> = AtomicPtr::new(ptr::null_mut());

fn coarse_ms() -> u64 {
    // SAFETY: zeroed timespec filled by clock_gettime (vDSO, no syscall).
    let mut ts: libc::timespec = unsafe { std::mem::zeroed() };
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC_COARSE, &mut ts) };
    ts.tv_sec as u64 * 1000 + ts.tv_nsec as u64 / 1_000_000
}

fn local_names(test: impl Fn(&Hosts) -> bool) -> bool {
    let now = coarse_ms();
    let cur = HOSTS.load(Ordering::Acquire);
    // SAFETY: published Hosts are never freed.
    if let Some(h) = unsafe { cur.as_ref() }
        && now.saturating_sub(h.checked_ms.load(Ordering::Relaxed)) < 1000
    {
        return test(h);
    }
    // SAFETY: stat into zeroed storage.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    let key = if unsafe { libc::stat(c"/etc/hosts".as_ptr(), &mut st) } == 0 {
        [
            st.st_dev as i64,
            st.st_ino as i64,
            st.st_mtime,
            st.st_mtime_nsec,
            st.st_size,
        ]
    } else {
        [0; 5]
    };
    let mut buf = [0u8; 256];
    // SAFETY: buf is writable for its length.
    let hostname = if unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) } == 0 {
        let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
        String::from_utf8_lossy(buf.get(..end).unwrap_or(&[])).into_owned()
    } else {
        String::new()
    };
    // SAFETY: as above.
    if let Some(h) = unsafe { cur.as_ref() }
        && h.key == key
        && h.hostname == hostname
    {
        h.checked_ms.store(now, Ordering::Relaxed);
        return test(h);
    }
    let text = std::fs::read_to_string("/etc/hosts").unwrap_or_default();
    let names: HashSet<String> = text
        .lines()
        .map(|l| l.split('#').next().unwrap_or(""))
        .flat_map(|l| l.split_whitespace().skip(1))
        .filter_map(normalize)
        .collect();
    let fresh = Box::new(Hosts {
        key,
        checked_ms: AtomicU64::new(now),
        hostname,
        names,
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
    let (fake, id, norm) = match classify(name) {
        Lookup::Real(b) => return Err(b),
        Lookup::Fail(e) => return Ok(Err(e)),
        Lookup::Fake(f, id, n) => (f, id, n),
    };
    // A fake name has both an IPv4 and an IPv6 address: AF_UNSPEC gets both, IPv4 first (the
    // order glibc's RFC 6724 sort gives an IPv4 and a ULA address). Programs that ask AF_UNSPEC
    // and keep one family themselves (curl -6 does) then find theirs.
    let families: &[c_int] = match h.ai_family {
        libc::AF_INET => &[libc::AF_INET],
        libc::AF_INET6 => &[libc::AF_INET6],
        _ => &[libc::AF_INET, libc::AF_INET6],
    };
    let mut head: *mut addrinfo = ptr::null_mut();
    let mut tail: *mut *mut addrinfo = &mut head;
    for &family in families {
        let mut place = h;
        place.ai_family = family;
        place.ai_flags =
            (h.ai_flags | libc::AI_NUMERICHOST) & !(libc::AI_ADDRCONFIG | libc::AI_ALL);
        let placeholder = if family == libc::AF_INET6 {
            c"::"
        } else {
            c"0.0.0.0"
        };
        let mut part: *mut addrinfo = ptr::null_mut();
        // SAFETY: as above, with a numeric placeholder host and our own out-pointer.
        let rc = unsafe { real(placeholder.as_ptr(), service, &place, &mut part) };
        if rc != 0 {
            if head.is_null() {
                return Ok(Ok(rc));
            }
            break;
        }
        // Append: glibc allocates every node (with its sockaddr) separately and its
        // freeaddrinfo frees node by node, so two of its lists linked are one of its lists.
        // SAFETY: tail points at head or at the ai_next of our list's last node.
        unsafe {
            *tail = part;
            while let Some(ai) = (*tail).as_mut() {
                tail = &mut ai.ai_next;
            }
        }
    }
    let canon = if h.ai_flags & libc::AI_CANONNAME != 0 {
        CString::new(norm).ok()
    } else {
        None
    };
    let mut cur = head;
    let mut first = true;
    // SAFETY: `head` is the list the real getaddrinfo just returned to us (one or two of them
    // linked).
    while let Some(ai) = unsafe { cur.as_mut() } {
        // SAFETY: ai_addr holds a sockaddr of ai_family (glibc allocates it with the node).
        unsafe { patch_addr(ai, fake, id) };
        // glibc puts the canonical name on the first node only; the second list's first node
        // carries the placeholder's.
        // SAFETY: glibc's canonname is malloc'd (or NULL) and freed with free().
        unsafe {
            match (&canon, first) {
                (Some(c), true) => {
                    libc::free(ai.ai_canonname.cast());
                    ai.ai_canonname = libc::strdup(c.as_ptr());
                }
                _ if !first && !ai.ai_canonname.is_null() => {
                    libc::free(ai.ai_canonname.cast());
                    ai.ai_canonname = ptr::null_mut();
                }
                _ => {}
            }
        }
        first = false;
        cur = ai.ai_next;
    }
    // SAFETY: res is writable (contract).
    unsafe { *res = head };
    Ok(Ok(0))
}

/// Writes the fake address of `id` into a node's sockaddr (same family, same size).
unsafe fn patch_addr(ai: &mut addrinfo, fake: &Fake, id: u32) {
    if ai.ai_addr.is_null() {
        return;
    }
    match ai.ai_family {
        libc::AF_INET => {
            // SAFETY: an AF_INET node's ai_addr is a sockaddr_in.
            let sin = unsafe { &mut *(ai.ai_addr as *mut sockaddr_in) };
            sin.sin_addr.s_addr = u32::from(fake.ranges.v4_of(id)).to_be();
        }
        libc::AF_INET6 => {
            // SAFETY: an AF_INET6 node's ai_addr is a sockaddr_in6.
            let sin6 = unsafe { &mut *(ai.ai_addr as *mut sockaddr_in6) };
            sin6.sin6_addr.s6_addr = fake.ranges.v6_of(id).octets();
        }
        _ => {}
    }
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

/// A hostent answer: the name, the family and one address.
pub struct HostAnswer {
    pub name: String,
    pub family: c_int,
    pub addr: [u8; 16],
}

impl HostAnswer {
    fn addr_len(&self) -> usize {
        if self.family == libc::AF_INET6 { 16 } else { 4 }
    }

    /// Bytes of caller buffer [`fill`](Self::fill) needs.
    pub fn needed(&self) -> usize {
        let ptrs = 3 * size_of::<*mut c_char>();
        7 + ptrs + 16 + self.name.len() + 1
    }

    /// Fills `ret` with pointers into `buf` (h_addr_list, h_aliases, address, name).
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
        let align = (buf as usize).next_multiple_of(align_of::<*mut c_char>()) - buf as usize;
        // SAFETY: every write below is inside buf[..needed()] (checked), pointers aligned.
        unsafe {
            let base = buf.add(align);
            let list = base as *mut *mut c_char; // [addr, NULL]
            let aliases = list.add(2); // [NULL]
            let addr = aliases.add(1) as *mut c_char;
            let name = addr.add(16);
            ptr::copy_nonoverlapping(self.addr.as_ptr().cast(), addr, self.addr_len());
            ptr::copy_nonoverlapping(self.name.as_ptr().cast(), name, self.name.len());
            *name.add(self.name.len()) = 0;
            *list = addr;
            *list.add(1) = ptr::null_mut();
            *aliases = ptr::null_mut();
            (*ret).h_name = name;
            (*ret).h_aliases = aliases;
            (*ret).h_addrtype = self.family;
            (*ret).h_length = self.addr_len() as c_int;
            (*ret).h_addr_list = list;
        }
        Ok(())
    }
}

/// gethostbyname2 for a name: `Err(bypass)` = real function; `Ok(Err((h_errno, errno)))` =
/// fail; `Ok(Ok(answer))`. A fake name has only an IPv4 answer here (AF_INET6 gives NO_DATA),
/// like a name with only an A record: tools such as `getent hosts` try AF_INET6 first and
/// print whatever answers, and an IPv4 address is what a URL or a script can use as is.
/// Programs that want IPv6 fake addresses ask getaddrinfo with AF_INET6.
pub fn host_by_name(name: &CStr, af: c_int) -> Result<Result<HostAnswer, (c_int, c_int)>, Bypass> {
    if af != libc::AF_INET && af != libc::AF_INET6 {
        return Ok(Err((NETDB_INTERNAL, libc::EAFNOSUPPORT)));
    }
    match classify(name) {
        Lookup::Real(b) => Err(b),
        Lookup::Fail(e) => Ok(Err((h_errno_of(&e), e.errno()))),
        Lookup::Fake(_, _, _) if af == libc::AF_INET6 => Ok(Err((NO_DATA, 0))),
        Lookup::Fake(fake, id, norm) => {
            let mut addr = [0u8; 16];
            addr[..4].copy_from_slice(&fake.ranges.v4_of(id).octets());
            Ok(Ok(HostAnswer {
                name: norm,
                family: libc::AF_INET,
                addr,
            }))
        }
    }
}

/// gethostbyaddr for `len` bytes at `addr` of `family`: the name if it is a fake address.
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
    match reverse(ip) {
        None => Err(Bypass::NotFake),
        Some(Err(e)) => Ok(Err((h_errno_of(&e), 0))),
        Some(Ok(name)) => Ok(Ok(HostAnswer {
            name,
            family,
            addr: bytes,
        })),
    }
}

/// The name for getnameinfo of a fake address: `None` = not a fake address.
///
/// # Safety
/// `sa` is readable for `len` bytes (or null).
pub unsafe fn name_info(
    sa: *const sockaddr,
    len: libc::socklen_t,
) -> Option<Result<String, Error>> {
    // SAFETY: caller's contract.
    let addr = unsafe { crate::sock::read_sockaddr(sa, len) }?;
    reverse(addr.ip())
}
