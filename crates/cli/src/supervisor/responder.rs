//! The launch's fake-DNS responder, for programs that send their own DNS (Go's resolver,
//! dig, busybox nslookup, glibc's resolver inside any program): the supervisor connects
//! their UDP or TCP sockets aimed at port 53 of a resolv.conf nameserver here instead.
//!
//! Owns: the responder's sockets (UDP and TCP, on the loopback of the namespace the program
//! runs in), the answer policy per name, and the [`Redirect`] the supervisor consults.
//! Must never: send a packet anywhere but back to the asking socket, answer a name from
//! anything but the launch's shared table (the same ids the preload hands out: a name looked
//! up by Go and connected to by curl is one entry) or the hosts file, or block on one client.
//!
//! Answers: A/AAAA (and ANY: both) get the name's fake addresses; `localhost` and
//! `*.localhost` get 127.0.0.1 / ::1; names in the hosts file get their addresses of the asked
//! family (none: an empty NOERROR), the machine's host name an empty NOERROR unless listed;
//! PTR of a fake address gives its name back, of any other address NXDOMAIN (never a query);
//! other types an empty NOERROR; a class other than IN, or a name no table could hold,
//! REFUSED; other opcodes NOTIMP; malformed questions FORMERR. TTL 60 s.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::os::fd::{BorrowedFd, RawFd};
use std::sync::atomic::AtomicU64;
use std::time::Duration;

use chainsocks_core::config::{Config, DnsRedirect, LogLevel};
use chainsocks_core::dns::{self, DnsError, Query, Rdata};
use chainsocks_core::fakedns::{FakeRanges, FakeTable, normalize};
use chainsocks_core::proto::Decoded;
use chainsocks_core::shm;

use super::Log;

const TTL: u32 = 60;

/// Where the supervisor sends a program's DNS instead of its nameserver: the launch's
/// [`DnsRedirect`] (the same the library reads from the config).
pub struct Redirect(pub DnsRedirect);

impl Redirect {
    /// The responder address for a connect of a socket (`domain`, `ty`) to `dest`, if `dest`
    /// is port 53 of a nameserver.
    pub fn redirect(
        &self,
        sock: BorrowedFd,
        domain: libc::c_int,
        ty: libc::c_int,
        dest: SocketAddr,
    ) -> Option<SocketAddr> {
        self.0.target(dest, ty, || {
            (
                domain,
                domain == libc::AF_INET6
                    && chainsocks_core::sys::v6only(std::os::fd::AsRawFd::as_raw_fd(&sock)),
            )
        })
    }
}

/// The launch's fake-DNS table, mapped from the launcher's state file.
struct Table {
    table: FakeTable<'static>,
    ranges: FakeRanges,
}

fn map_table(cfg: &Config, shm_fd: RawFd) -> Result<Table, String> {
    let ranges = cfg.fake_ranges().map_err(|e| e.to_string())?;
    // SAFETY: fstat of our own fd into zeroed storage.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    if unsafe { libc::fstat(shm_fd, &mut st) } != 0 {
        return Err(format!("fstat: {}", std::io::Error::last_os_error()));
    }
    let len = st.st_size as usize;
    // SAFETY: a shared mapping of our own state file, never unmapped (it lives as long as
    // the launcher: the table borrows it for 'static).
    let p = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            len,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_SHARED,
            shm_fd,
            0,
        )
    };
    if p == libc::MAP_FAILED {
        return Err(format!("mmap: {}", std::io::Error::last_os_error()));
    }
    // SAFETY: the header page is mapped and never written after creation.
    let head = unsafe { std::slice::from_raw_parts(p as *const u8, shm::HEADER_SIZE.min(len)) };
    let (off, words) = shm::table_location(head).ok_or("bad shared-state layout")?;
    if off + words * 8 > len {
        return Err("shared state smaller than its table".into());
    }
    // SAFETY: in bounds, 8-byte aligned (page-aligned mapping, offset multiple of 8); the
    // table is only ever accessed through atomics, by every process of the launch.
    let words: &'static [AtomicU64] =
        unsafe { std::slice::from_raw_parts((p as *const u8).add(off).cast(), words) };
    let table = FakeTable::new(words)?;
    Ok(Table { table, ranges })
}

/// Names answered from the hosts file, and the host name.
struct Local {
    hosts: HashMap<String, Vec<IpAddr>>,
    hostname: Option<String>,
}

impl Local {
    fn new(hosts_text: &str) -> Local {
        let mut hosts: HashMap<String, Vec<IpAddr>> = HashMap::new();
        for line in hosts_text.lines() {
            let line = line.split('#').next().unwrap_or("");
            let mut w = line.split_whitespace();
            let Some(ip) = w.next().and_then(|a| a.parse::<IpAddr>().ok()) else {
                continue;
            };
            for name in w.filter_map(normalize) {
                let e = hosts.entry(name).or_default();
                if !e.contains(&ip) {
                    e.push(ip);
                }
            }
        }
        let hostname = std::fs::read_to_string("/proc/sys/kernel/hostname")
            .ok()
            .and_then(|h| normalize(h.trim()));
        Local { hosts, hostname }
    }
}

struct Responder {
    table: Table,
    local: Local,
    log: Log,
}

impl Responder {
    /// The answer to one message (`None`: drop it).
    fn respond(&self, msg: &[u8], limit: usize) -> Option<Vec<u8>> {
        let q = match dns::decode(msg) {
            Ok(q) => q,
            Err(DnsError::Drop) => return None,
            Err(DnsError::Reply { id, flags, rcode }) => {
                return Some(dns::encode_error(id, flags, rcode));
            }
        };
        let (rcode, answers) = self.answer(&q);
        Some(dns::encode_answer(&q, rcode, &answers, TTL, limit))
    }

    fn answer(&self, q: &Query) -> (u8, Vec<Rdata>) {
        if q.qclass != dns::CLASS_IN && q.qclass != dns::CLASS_ANY {
            return (dns::REFUSED, Vec::new());
        }
        let Some(text) = q.name() else {
            return (dns::REFUSED, Vec::new());
        };
        let (want4, want6) = match q.qtype {
            dns::TYPE_A => (true, false),
            dns::TYPE_AAAA => (false, true),
            dns::TYPE_ANY => (true, true),
            dns::TYPE_PTR => return self.reverse(&text),
            _ => (false, false),
        };
        if text.is_empty() {
            return (dns::NOERROR, Vec::new());
        }
        let Some(name) = normalize(&text) else {
            return (dns::REFUSED, Vec::new());
        };
        let pick = |ips: &[IpAddr]| -> Vec<Rdata> {
            ips.iter()
                .filter(|ip| (ip.is_ipv4() && want4) || (ip.is_ipv6() && want6))
                .map(|ip| Rdata::Addr(*ip))
                .collect()
        };
        if name == "localhost" || name.ends_with(".localhost") {
            let lo = [
                IpAddr::V4(Ipv4Addr::LOCALHOST),
                IpAddr::V6(Ipv6Addr::LOCALHOST),
            ];
            return (dns::NOERROR, pick(&lo));
        }
        if let Some(ips) = self.local.hosts.get(&name) {
            return (dns::NOERROR, pick(ips));
        }
        if self.local.hostname.as_deref() == Some(name.as_str()) {
            return (dns::NOERROR, Vec::new());
        }
        if !want4 && !want6 {
            return (dns::NOERROR, Vec::new());
        }
        match self.table.table.id_for(&name) {
            Ok(id) => {
                let (v4, v6) = (self.table.ranges.v4_of(id), self.table.ranges.v6_of(id));
                self.log.line(
                    LogLevel::Debug,
                    format_args!("dns responder: {name} -> {v4} / {v6}"),
                );
                (dns::NOERROR, pick(&[IpAddr::V4(v4), IpAddr::V6(v6)]))
            }
            Err(e) => {
                self.log.line(
                    LogLevel::Warn,
                    format_args!("dns responder: {name}: {e} (SERVFAIL)"),
                );
                (dns::SERVFAIL, Vec::new())
            }
        }
    }

    fn reverse(&self, name: &str) -> (u8, Vec<Rdata>) {
        let Some(ip) = dns::reverse_addr(name) else {
            return (dns::NXDOMAIN, Vec::new());
        };
        match self
            .table
            .ranges
            .id_of(ip)
            .and_then(|id| self.table.table.name_of(id))
        {
            Some(n) => (dns::NOERROR, vec![Rdata::Name(n)]),
            None => (dns::NXDOMAIN, Vec::new()),
        }
    }

    fn serve_udp(&self, s: &UdpSocket) {
        let mut buf = [0u8; 4096];
        loop {
            let Ok((n, from)) = s.recv_from(&mut buf) else {
                continue;
            };
            if let Some(a) = buf.get(..n).and_then(|m| self.respond(m, dns::UDP_LIMIT)) {
                let _ = s.send_to(&a, from);
            }
        }
    }

    fn serve_tcp(&self, mut c: TcpStream) {
        let _ = c.set_read_timeout(Some(Duration::from_secs(10)));
        let mut buf = Vec::new();
        let mut chunk = [0u8; 4096];
        loop {
            match dns::decode_tcp(&buf) {
                Decoded::Need(_) => match c.read(&mut chunk) {
                    Ok(0) | Err(_) => return,
                    Ok(n) => buf.extend_from_slice(chunk.get(..n).unwrap_or(&[])),
                },
                Decoded::Done(_, used) => {
                    let msg = buf.get(2..used).unwrap_or(&[]);
                    if let Some(a) = self.respond(msg, usize::from(u16::MAX)) {
                        let mut framed = (a.len() as u16).to_be_bytes().to_vec();
                        framed.extend_from_slice(&a);
                        if c.write_all(&framed).is_err() {
                            return;
                        }
                    }
                    buf.drain(..used);
                }
            }
        }
    }
}

fn spawn(name: &str, f: impl FnOnce() + Send + 'static) -> Result<(), String> {
    std::thread::Builder::new()
        .name(name.into())
        .stack_size(256 * 1024)
        .spawn(f)
        .map(|_| ())
        .map_err(|e| format!("starting the DNS responder: {e}"))
}

/// The responder's sockets, bound on this namespace's loopback (127.0.0.1, and ::1 when it
/// exists) before the launch's state is written (their addresses go into the config).
pub struct Bound {
    socks: Vec<(UdpSocket, TcpListener)>,
    pub redirect: DnsRedirect,
}

/// Binds the responder for `nameservers`.
pub fn bind(nameservers: Vec<IpAddr>) -> Result<Bound, String> {
    let bind = |ip: IpAddr| -> std::io::Result<(UdpSocket, TcpListener)> {
        Ok((UdpSocket::bind((ip, 0))?, TcpListener::bind((ip, 0))?))
    };
    let (u4, t4) = bind(IpAddr::V4(Ipv4Addr::LOCALHOST))
        .map_err(|e| format!("DNS responder on 127.0.0.1: {e}"))?;
    let v6 = bind(IpAddr::V6(Ipv6Addr::LOCALHOST)).ok();
    let addr = |s: &UdpSocket| s.local_addr().map_err(|e| e.to_string());
    let taddr = |s: &TcpListener| s.local_addr().map_err(|e| e.to_string());
    let redirect = DnsRedirect {
        nameservers,
        udp4: addr(&u4)?,
        tcp4: taddr(&t4)?,
        udp6: v6.as_ref().map(|(u, _)| addr(u)).transpose()?,
        tcp6: v6.as_ref().map(|(_, t)| taddr(t)).transpose()?,
    };
    let mut socks = vec![(u4, t4)];
    socks.extend(v6);
    Ok(Bound { socks, redirect })
}

impl Bound {
    /// A responder on sockets made elsewhere (inside the `--isolate` sandbox).
    pub fn from_sockets(udp: UdpSocket, tcp: TcpListener, redirect: DnsRedirect) -> Bound {
        Bound {
            socks: vec![(udp, tcp)],
            redirect,
        }
    }

    /// Starts answering, from the launch's state file (`shm_fd`) and the hosts file.
    pub fn serve(self, cfg: &Config, shm_fd: RawFd, hosts_text: &str) -> Result<Redirect, String> {
        let r: &'static Responder = Box::leak(Box::new(Responder {
            table: map_table(cfg, shm_fd)?,
            local: Local::new(hosts_text),
            log: Log::new(cfg),
        }));
        for (u, t) in self.socks {
            spawn("cs-dns-udp", move || r.serve_udp(&u))?;
            spawn("cs-dns-tcp", move || {
                for c in t.incoming().flatten() {
                    let _ = spawn("cs-dns-tcp", move || r.serve_tcp(c));
                }
            })?;
        }
        Ok(Redirect(self.redirect))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::Ordering;

    fn responder(hosts: &str) -> Responder {
        let cfg = Config::default();
        let ranges = cfg.fake_ranges().unwrap();
        let cap = 100;
        let words: &'static [AtomicU64] = Box::leak(
            (0..chainsocks_core::fakedns::words_for(cap))
                .map(|_| AtomicU64::new(0))
                .collect::<Vec<_>>()
                .into_boxed_slice(),
        );
        for (w, v) in words.iter().zip(chainsocks_core::fakedns::header(cap)) {
            w.store(v, Ordering::Relaxed);
        }
        Responder {
            table: Table {
                table: FakeTable::new(words).unwrap(),
                ranges,
            },
            local: Local::new(hosts),
            log: Log::new(&cfg),
        }
    }

    fn q(name: &str, qtype: u16) -> Query {
        Query {
            id: 1,
            flags: 0x0100,
            labels: dns::labels_of(name).unwrap(),
            qtype,
            qclass: dns::CLASS_IN,
        }
    }

    #[test]
    fn answers_from_the_table_and_the_hosts_file() {
        let r = responder("127.0.0.1 localhost\n10.1.2.3 db.internal # v4 only\n");
        let (rc, a) = r.answer(&q("Go.Example", dns::TYPE_A));
        assert_eq!(rc, dns::NOERROR);
        let id = r.table.table.find("go.example").unwrap();
        assert_eq!(a, vec![Rdata::Addr(IpAddr::V4(r.table.ranges.v4_of(id)))]);
        let (_, a6) = r.answer(&q("go.example", dns::TYPE_AAAA));
        assert_eq!(a6, vec![Rdata::Addr(IpAddr::V6(r.table.ranges.v6_of(id)))]);
        assert_eq!(r.answer(&q("go.example", dns::TYPE_ANY)).1.len(), 2);
        assert_eq!(r.answer(&q("go.example", 16)), (dns::NOERROR, vec![]));
        // hosts names: their own addresses, an empty answer for the missing family
        assert_eq!(
            r.answer(&q("db.internal", dns::TYPE_A)).1,
            vec![Rdata::Addr("10.1.2.3".parse().unwrap())]
        );
        assert_eq!(
            r.answer(&q("db.internal", dns::TYPE_AAAA)),
            (dns::NOERROR, vec![])
        );
        assert_eq!(
            r.answer(&q("app.localhost", dns::TYPE_AAAA)).1,
            vec![Rdata::Addr("::1".parse().unwrap())]
        );
        assert!(r.table.table.find("db.internal").is_none());
        // reverse of a fake address: the name; of a real one: NXDOMAIN
        let v4 = r.table.ranges.v4_of(id).octets();
        let rev = format!("{}.{}.{}.{}.in-addr.arpa", v4[3], v4[2], v4[1], v4[0]);
        assert_eq!(
            r.answer(&q(&rev, dns::TYPE_PTR)),
            (dns::NOERROR, vec![Rdata::Name("go.example".into())])
        );
        assert_eq!(
            r.answer(&q("1.0.0.127.in-addr.arpa", dns::TYPE_PTR)).0,
            dns::NXDOMAIN
        );
        let mut chaos = q("version.bind", 16);
        chaos.qclass = 3;
        assert_eq!(r.answer(&chaos).0, dns::REFUSED);
    }

    #[test]
    fn wire_in_wire_out() {
        let r = responder("");
        assert_eq!(r.respond(&[1, 2, 3], 512), None);
        let mut m = vec![0xab, 0xcd, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0];
        m.extend_from_slice(&[4, b'n', b'a', b'm', b'e', 0, 0, 1, 0, 1]);
        let a = r.respond(&m, 512).unwrap();
        assert_eq!(&a[..2], &[0xab, 0xcd]);
        assert_eq!(&a[6..8], &[0, 1], "one answer");
        m[2] = 0x30; // opcode 6
        assert_eq!(r.respond(&m, 512).unwrap()[3] & 0xf, dns::NOTIMP);
    }
}
