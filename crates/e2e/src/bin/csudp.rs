//! csudp: the UDP test client. Two families of modes:
//!
//! - `socks5`: speaks SOCKS5 UDP ASSOCIATE ITSELF (RFC 1928 section 7; no shim involved): the
//!   reference client for the harness's self-tests and the baseline of the UDP benchmark.
//! - the plain modes call libc directly (socket, getaddrinfo, sendto/recvfrom, connect,
//!   send/recv, sendmsg/recvmsg, sendmmsg/recvmmsg, write/read, poll), so an LD_PRELOAD shim
//!   sees exactly these calls, as it would from a C program.
//!
//! Owns: the subcommands below and their one-line outputs on stdout.
//! Never does: retry a failed call, send anything but to the given destination (or proxy),
//! or print anything but the result line on stdout (diagnostics go to stderr).
//!
//! ```text
//! csudp socks5 PROXY_HOST:PORT DEST_HOST:PORT [--count N] [--size B] [--name]
//!              [--timeout-ms T] [--auth USER:PASS] [--zero-client]
//!     TCP to the proxy, greeting (no auth, or username with --auth), UDP ASSOCIATE, then N
//!     datagrams through the relay (10/22/7+n-byte header added and stripped here), each
//!     awaiting its echo for up to T ms. DEST_HOST: an IP literal goes as ATYP 1/4, anything
//!     else as ATYP 3 (the proxy resolves it); --name sends even an IP literal as ATYP 3.
//!     The request carries the UDP socket's own address (bound to the TCP connection's local
//!     IP), or 0.0.0.0:0 with --zero-client. A relay BND.ADDR of 0.0.0.0/:: means the
//!     proxy's address.
//!     -> ok answered=N/M bad=K source=ok|BAD:<addr>|resolved:<addr> median_us=U
//!        elapsed_us=E assoc_us=A local=<udp socket> relay=<relay addr>
//!     (source: the address in the relay's reply headers: it must equal an IP DEST;
//!     for a name, the first one seen is shown.)
//!     SOCKS failures: error=closed (the proxy closed the connection before replying),
//!     error=reply 0x07 (REP != 0), error=method 0xff, error=auth N, error=proto <what>.
//! csudp sendto|connected|sendmsg|mmsg|readwrite HOST PORT [--count N] [--size B]
//!              [--family 4|6] [--timeout-ms T] [--batch K] [--nonblock]
//!     HOST goes through getaddrinfo (SOCK_DGRAM, the family given; the first address is
//!     used), so a name only a proxy can resolve works under a shim with remote DNS. One
//!     socket for the whole run. N datagrams, each awaiting its echo (poll, up to T ms):
//!       sendto     unconnected: sendto / recvfrom
//!       connected  connect, then send / recv
//!       sendmsg    unconnected: sendmsg / recvmsg, payload in two iovecs
//!       mmsg       unconnected: sendmmsg of K datagrams (default 8), recvmmsg until the K
//!                  echoes are in (or T ms)
//!       readwrite  connect, then write / read
//!     --nonblock: O_NONBLOCK on the socket (EAGAIN on a send waits for POLLOUT).
//!     -> ok answered=N/M bad=K source=ok|BAD:<addr>|n/a peer=ok|BAD:<addr>|n/a
//!        median_us=U elapsed_us=E local=<getsockname>
//!     source: recvfrom/recvmsg/recvmmsg must report the destination as the sender; peer:
//!     getpeername of a connected socket must be the destination.
//!     Failure of a call: errno=NAME (n) call=<function> answered=N/M; a failed lookup:
//!     gai=EAI_NAME (rc).
//! ```
//! A datagram's payload is B bytes (default 64, at least 1; at least 8 for mmsg), its sequence number in the
//! first 8 bytes (big-endian, fewer if B < 8), then a pattern: an echo of an EARLIER datagram
//! that arrives late is skipped, any other mismatch counts in `bad`. Exit status: 0 when
//! every datagram was answered, bad=0 and source/peer are ok; 3 when the run completed
//! otherwise (the `ok ...` line says how); 1 on an error line; 2 on a usage error.
//! `median_us` is the median round trip of the answered datagrams; `elapsed_us` the time of
//! the whole datagram loop (association set-up excluded: `assoc_us`).

use chainsocks_core::proto::socks5::{
    Command, Method, ReplyCode, WireAddr, decode_auth_reply, decode_method_selection, decode_reply,
    decode_udp_header, encode_greeting, encode_request, encode_udp_header, encode_userpass,
};
use chainsocks_core::proto::{Decoded, Dest};
use e2e::clientsys::{self, Addr, Fd, errno, errno_name, poll_one};
use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpStream, ToSocketAddrs, UdpSocket};
use std::process::exit;
use std::time::{Duration, Instant};

const PROG: &str = "csudp";
/// Receive buffer: the largest UDP payload plus a SOCKS5 header.
const BUF: usize = 65536 + 262;

#[derive(Clone, Debug)]
struct Opts {
    count: usize,
    size: usize,
    family: i32,
    timeout_ms: i32,
    batch: usize,
    nonblock: bool,
    name: bool,
    auth: Option<(String, String)>,
    zero_client: bool,
}

fn usage() -> ! {
    eprintln!(
        "usage (see the source's header):\n\
         csudp socks5 PROXY_HOST:PORT DEST_HOST:PORT [--count N] [--size B] [--name] \
         [--timeout-ms T] [--auth USER:PASS] [--zero-client]\n\
         csudp sendto|connected|sendmsg|mmsg|readwrite HOST PORT [--count N] [--size B] \
         [--family 4|6] [--timeout-ms T] [--batch K] [--nonblock]"
    );
    exit(2)
}

fn error(msg: &str) -> ! {
    clientsys::fail(msg)
}

/// The payload of datagram `seq`.
fn payload(seq: u64, size: usize) -> Vec<u8> {
    let mut p: Vec<u8> = (0..size)
        .map(|j| ((seq as usize).wrapping_mul(31).wrapping_add(j) % 251) as u8)
        .collect();
    for (d, s) in p.iter_mut().zip(seq.to_be_bytes()) {
        *d = s;
    }
    p
}

/// What a received payload is, compared with datagram `seq` (the one awaited).
#[derive(PartialEq, Eq)]
enum Match {
    Mine,
    Late,
    Bad,
}

fn classify(got: &[u8], seq: u64, size: usize) -> Match {
    if got == payload(seq, size) {
        return Match::Mine;
    }
    if got.len() == size && size >= 8 {
        let mut b = [0u8; 8];
        b.copy_from_slice(got.get(..8).unwrap_or(&[0; 8]));
        let s = u64::from_be_bytes(b);
        if s < seq && got == payload(s, size) {
            return Match::Late;
        }
    }
    Match::Bad
}

/// Results of a datagram loop.
#[derive(Default)]
struct Tally {
    answered: usize,
    bad: usize,
    rtts_us: Vec<u64>,
    /// First wrong source seen (`None` = all matched or not checked).
    source_bad: Option<String>,
    /// For name destinations: the first source the relay reported.
    source_seen: Option<String>,
}

impl Tally {
    fn median_us(&mut self) -> u64 {
        self.rtts_us.sort_unstable();
        self.rtts_us
            .get(self.rtts_us.len() / 2)
            .copied()
            .unwrap_or(0)
    }

    fn all_ok(&self, count: usize) -> bool {
        self.answered == count && self.bad == 0 && self.source_bad.is_none()
    }
}

// ------------------------------------------------------------------------------ socks5 mode

fn io_fail(call: &str, e: &std::io::Error) -> ! {
    match e.raw_os_error() {
        Some(n) => {
            eprintln!("{PROG}: {call}: {e}");
            println!("errno={} ({n}) call={call}", errno_name(n));
            exit(1)
        }
        None if e.kind() == std::io::ErrorKind::UnexpectedEof => error("closed"),
        None => error(&format!("io {call}: {e}")),
    }
}

/// Reads one message decoded by `decode` (reading exactly what it asks for).
fn read_msg<T>(
    s: &mut TcpStream,
    what: &str,
    decode: impl Fn(&[u8]) -> Result<Decoded<T>, chainsocks_core::proto::ProtoError>,
) -> T {
    let mut buf = Vec::new();
    loop {
        match decode(&buf) {
            Ok(Decoded::Done(v, _)) => return v,
            Ok(Decoded::Need(n)) => {
                let at = buf.len();
                buf.resize(at + n, 0);
                if let Err(e) = s.read_exact(buf.get_mut(at..).unwrap_or_default()) {
                    io_fail(&format!("read {what}"), &e);
                }
            }
            Err(e) => error(&format!("proto {what}: {e}")),
        }
    }
}

fn parse_hostport(s: &str) -> (String, u16) {
    let (h, p) = s.rsplit_once(':').unwrap_or_else(|| usage());
    let h = h.trim_start_matches('[').trim_end_matches(']');
    (h.to_string(), p.parse().unwrap_or_else(|_| usage()))
}

fn cmd_socks5(proxy: &str, dest: &str, o: &Opts) {
    let timeout = Duration::from_millis(o.timeout_ms.max(1) as u64);
    let (ph, pp) = parse_hostport(proxy);
    let proxy: SocketAddr = match (ph.as_str(), pp).to_socket_addrs().map(|mut a| a.next()) {
        Ok(Some(a)) => a,
        _ => error("proxy address"),
    };
    let (dh, dp) = parse_hostport(dest);
    let dest = match dh.parse::<IpAddr>() {
        Ok(ip) if !o.name => Dest::Ip(SocketAddr::new(ip, dp)),
        _ => Dest::Name(dh.clone(), dp),
    };
    let t0 = Instant::now();
    let mut tcp = match TcpStream::connect_timeout(&proxy, timeout) {
        Ok(s) => s,
        Err(e) => io_fail("connect", &e),
    };
    let _ = tcp.set_nodelay(true);
    let _ = tcp.set_read_timeout(Some(timeout));
    let send = |tcp: &mut TcpStream, b: &[u8], what: &str| {
        if let Err(e) = tcp.write_all(b) {
            io_fail(&format!("write {what}"), &e);
        }
    };
    // Greeting and auth.
    let method = if o.auth.is_some() {
        Method::UserPass
    } else {
        Method::NoAuth
    };
    let mut out = Vec::new();
    if let Err(e) = encode_greeting(&[method], &mut out) {
        error(&format!("proto greeting: {e}"));
    }
    send(&mut tcp, &out, "greeting");
    let chosen = read_msg(&mut tcp, "method", decode_method_selection);
    if chosen != method {
        error(&format!("method {:#04x}", chosen.to_u8()));
    }
    if let Some((u, p)) = &o.auth {
        out.clear();
        if let Err(e) = encode_userpass(u.as_bytes(), p.as_bytes(), &mut out) {
            error(&format!("proto auth: {e}"));
        }
        send(&mut tcp, &out, "auth");
        let status = read_msg(&mut tcp, "auth", decode_auth_reply);
        if status != 0 {
            error(&format!("auth {status}"));
        }
    }
    // The UDP socket, on the control connection's local IP.
    let local_ip = match tcp.local_addr() {
        Ok(a) => a.ip(),
        Err(e) => io_fail("getsockname", &e),
    };
    let udp = match UdpSocket::bind(SocketAddr::new(local_ip, 0)) {
        Ok(u) => u,
        Err(e) => io_fail("bind", &e),
    };
    let udp_local = match udp.local_addr() {
        Ok(a) => a,
        Err(e) => io_fail("getsockname", &e),
    };
    let client = if o.zero_client {
        let any = match local_ip {
            IpAddr::V4(_) => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
            IpAddr::V6(_) => IpAddr::V6(Ipv6Addr::UNSPECIFIED),
        };
        SocketAddr::new(any, 0)
    } else {
        udp_local
    };
    out.clear();
    if let Err(e) = encode_request(Command::UdpAssociate, &Dest::Ip(client), &mut out) {
        error(&format!("proto request: {e}"));
    }
    send(&mut tcp, &out, "request");
    let reply = read_msg(&mut tcp, "reply", decode_reply);
    if reply.code != ReplyCode::Succeeded {
        eprintln!(
            "{PROG}: UDP ASSOCIATE refused: {}",
            reply.code.description()
        );
        error(&format!("reply {:#04x}", reply.code.to_u8()));
    }
    let relay = match reply.bound {
        WireAddr::Ip(a) if a.ip().is_unspecified() => SocketAddr::new(proxy.ip(), a.port()),
        WireAddr::Ip(a) => a,
        WireAddr::Name(..) => error("proto relay address is a name"),
    };
    if relay.is_ipv4() != udp_local.is_ipv4() {
        error(&format!(
            "relay family: {relay} from a socket on {udp_local}"
        ));
    }
    let assoc_us = t0.elapsed().as_micros();
    let _ = udp.set_read_timeout(Some(timeout));
    let mut header = Vec::new();
    if let Err(e) = encode_udp_header(0, &dest, &mut header) {
        error(&format!("proto header: {e}"));
    }
    let hlen = header.len();
    let mut t = Tally::default();
    let mut buf = vec![0u8; BUF];
    let start = Instant::now();
    for seq in 0..o.count as u64 {
        let mut dgram = header.clone();
        dgram.extend_from_slice(&payload(seq, o.size));
        let sent_at = Instant::now();
        if let Err(e) = udp.send_to(&dgram, relay) {
            io_fail("sendto", &e);
        }
        let deadline = sent_at + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() || udp.set_read_timeout(Some(left)).is_err() {
                break;
            }
            let (n, from) = match udp.recv_from(&mut buf) {
                Ok(x) => x,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == std::io::ErrorKind::TimedOut => break,
                Err(e) => io_fail("recvfrom", &e),
            };
            if from != relay {
                eprintln!("{PROG}: datagram from {from}, not the relay: ignored");
                continue;
            }
            let got = buf.get(..n).unwrap_or_default();
            let (src, used) = match decode_udp_header(got) {
                Ok(Decoded::Done((_frag, src), used)) => (src, used),
                _ => {
                    t.bad += 1;
                    continue;
                }
            };
            match classify(got.get(used..).unwrap_or_default(), seq, o.size) {
                Match::Late => continue,
                Match::Bad => {
                    t.bad += 1;
                    continue;
                }
                Match::Mine => {}
            }
            t.answered += 1;
            t.rtts_us.push(sent_at.elapsed().as_micros() as u64);
            let src_text = match &src {
                WireAddr::Ip(a) => a.to_string(),
                WireAddr::Name(n, p) => format!("{}:{p}", String::from_utf8_lossy(n)),
            };
            match &dest {
                Dest::Ip(d) if src != WireAddr::Ip(*d) => {
                    t.source_bad.get_or_insert(src_text);
                }
                Dest::Ip(_) => {}
                Dest::Name(..) => {
                    t.source_seen.get_or_insert(src_text);
                }
            }
            break;
        }
    }
    let elapsed = start.elapsed().as_micros();
    drop(tcp);
    let source = match (&t.source_bad, &t.source_seen) {
        (Some(b), _) => format!("BAD:{b}"),
        (None, Some(s)) => format!("resolved:{s}"),
        (None, None) => "ok".into(),
    };
    let all_ok = t.all_ok(o.count);
    let median = t.median_us();
    println!(
        "ok answered={}/{} bad={} source={source} median_us={median} elapsed_us={elapsed} assoc_us={assoc_us} local={udp_local} relay={relay} header={hlen}",
        t.answered, o.count, t.bad,
    );
    exit(if all_ok { 0 } else { 3 })
}

// ------------------------------------------------------------------------------- plain modes

#[derive(Clone, Copy, PartialEq, Eq)]
enum Mode {
    SendTo,
    Connected,
    SendMsg,
    Mmsg,
    ReadWrite,
}

impl Mode {
    fn connects(self) -> bool {
        matches!(self, Mode::Connected | Mode::ReadWrite)
    }
}

/// The run's state: the socket, where it sends, and the tally.
struct Plain {
    fd: Fd,
    dest: Addr,
    dest_std: Option<SocketAddr>,
    o: Opts,
    t: Tally,
    /// Datagrams answered so far, for the error line.
    done: usize,
}

impl Plain {
    fn fail(&self, call: &str, e: i32) -> ! {
        eprintln!("{PROG}: {call}: {}", std::io::Error::from_raw_os_error(e));
        println!(
            "errno={} ({e}) call={call} answered={}/{}",
            errno_name(e),
            self.done,
            self.o.count
        );
        exit(1)
    }

    /// Runs `f` (a send-type call returning bytes or -1) until it does not fail with EINTR,
    /// waiting for POLLOUT on EAGAIN of a non-blocking socket.
    fn send_call(&self, call: &str, mut f: impl FnMut() -> isize) -> usize {
        loop {
            let n = f();
            if n >= 0 {
                return n as usize;
            }
            match errno() {
                libc::EINTR => continue,
                libc::EAGAIN if self.o.nonblock => {
                    if let Err(e) = poll_one(self.fd.0, libc::POLLOUT, self.o.timeout_ms) {
                        self.fail("poll", e);
                    }
                }
                e => self.fail(call, e),
            }
        }
    }

    /// Waits until readable or `deadline`; false on timeout.
    fn wait_readable(&self, deadline: Instant) -> bool {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return false;
        }
        let ms = left.as_millis().clamp(1, i32::MAX as u128) as i32;
        match poll_one(self.fd.0, libc::POLLIN, ms) {
            Ok(()) => true,
            Err(libc::ETIMEDOUT) => false,
            Err(e) => self.fail("poll", e),
        }
    }

    /// A receive-type call's result: bytes, or `None` for EAGAIN/EINTR (poll again).
    fn recv_result(&self, call: &str, n: isize) -> Option<usize> {
        if n >= 0 {
            return Some(n as usize);
        }
        match errno() {
            libc::EAGAIN | libc::EINTR => None,
            e => self.fail(call, e),
        }
    }

    fn check_source(&mut self, from: &libc::sockaddr_storage, len: libc::socklen_t) {
        let got = Addr { ss: *from, len }.to_std();
        if got != self.dest_std {
            let text = got.map_or_else(|| format!("family-{}", from.ss_family), |a| a.to_string());
            self.t.source_bad.get_or_insert(text);
        }
    }

    /// Sends datagram `seq` with the mode's call.
    fn send_one(&mut self, mode: Mode, seq: u64) {
        let p = payload(seq, self.o.size);
        let (fd, dest) = (self.fd.0, self.dest);
        let sa = (&dest.ss as *const libc::sockaddr_storage).cast::<libc::sockaddr>();
        let sent = match mode {
            // SAFETY (all arms): valid buffers, lengths and addresses that outlive the call.
            Mode::SendTo => self.send_call("sendto", || unsafe {
                libc::sendto(fd, p.as_ptr().cast(), p.len(), 0, sa, dest.len)
            }),
            Mode::Connected => self.send_call("send", || unsafe {
                libc::send(fd, p.as_ptr().cast(), p.len(), 0)
            }),
            Mode::ReadWrite => self.send_call("write", || unsafe {
                libc::write(fd, p.as_ptr().cast(), p.len())
            }),
            Mode::SendMsg => {
                let mut d = dest;
                let (a, b) = p.split_at(p.len() / 2);
                let mut iov = [iovec(a), iovec(b)];
                // SAFETY: zeroed msghdr is valid; we fill the pointers below.
                let mut m: libc::msghdr = unsafe { std::mem::zeroed() };
                m.msg_name = (&mut d.ss as *mut libc::sockaddr_storage).cast();
                m.msg_namelen = d.len;
                m.msg_iov = iov.as_mut_ptr();
                m.msg_iovlen = iov.len();
                self.send_call("sendmsg", || unsafe { libc::sendmsg(fd, &m, 0) })
            }
            Mode::Mmsg => unreachable_mode(),
        };
        if sent != p.len() {
            eprintln!("{PROG}: short send: {sent} of {}", p.len());
            self.t.bad += 1;
        }
    }

    /// Receives until datagram `seq`'s echo arrives or the timeout passes.
    fn await_one(&mut self, mode: Mode, seq: u64, sent_at: Instant) {
        let deadline = sent_at + Duration::from_millis(self.o.timeout_ms.max(1) as u64);
        let mut buf = vec![0u8; BUF];
        let fd = self.fd.0;
        while self.wait_readable(deadline) {
            // SAFETY: zeroed sockaddr_storage is valid.
            let mut from: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
            let mut flen = std::mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
            let fromp = (&mut from as *mut libc::sockaddr_storage).cast::<libc::sockaddr>();
            let (call, n, truncated) = match mode {
                // SAFETY (all arms): buffers and lengths are valid for the call.
                Mode::SendTo => {
                    let n = unsafe {
                        libc::recvfrom(fd, buf.as_mut_ptr().cast(), buf.len(), 0, fromp, &mut flen)
                    };
                    ("recvfrom", n, false)
                }
                Mode::Connected => {
                    let n = unsafe { libc::recv(fd, buf.as_mut_ptr().cast(), buf.len(), 0) };
                    ("recv", n, false)
                }
                Mode::ReadWrite => {
                    let n = unsafe { libc::read(fd, buf.as_mut_ptr().cast(), buf.len()) };
                    ("read", n, false)
                }
                Mode::SendMsg => {
                    let (a, b) = buf.split_at_mut(BUF / 2);
                    let mut iov = [iovec_mut(a), iovec_mut(b)];
                    // SAFETY: zeroed msghdr is valid; pointers filled below.
                    let mut m: libc::msghdr = unsafe { std::mem::zeroed() };
                    m.msg_name = (&mut from as *mut libc::sockaddr_storage).cast();
                    m.msg_namelen = flen;
                    m.msg_iov = iov.as_mut_ptr();
                    m.msg_iovlen = iov.len();
                    let n = unsafe { libc::recvmsg(fd, &mut m, 0) };
                    flen = m.msg_namelen;
                    ("recvmsg", n, m.msg_flags & libc::MSG_TRUNC != 0)
                }
                Mode::Mmsg => unreachable_mode(),
            };
            let Some(n) = self.recv_result(call, n) else {
                continue;
            };
            if truncated {
                self.t.bad += 1;
                continue;
            }
            let got = buf.get(..n).unwrap_or_default();
            match classify(got, seq, self.o.size) {
                Match::Late => continue,
                Match::Bad => {
                    self.t.bad += 1;
                    continue;
                }
                Match::Mine => {}
            }
            if matches!(mode, Mode::SendTo | Mode::SendMsg) {
                self.check_source(&from, flen);
            }
            self.t.answered += 1;
            self.done += 1;
            self.t.rtts_us.push(sent_at.elapsed().as_micros() as u64);
            return;
        }
    }

    /// sendmmsg of a batch, then recvmmsg until all its echoes are in or the timeout passes.
    fn batch(&mut self, first: u64, k: usize) {
        let fd = self.fd.0;
        let payloads: Vec<Vec<u8>> = (0..k as u64)
            .map(|i| payload(first + i, self.o.size))
            .collect();
        let mut dests = vec![self.dest; k];
        let mut iovs: Vec<libc::iovec> = payloads.iter().map(|p| iovec(p)).collect();
        // SAFETY: zeroed mmsghdr is valid; pointers filled below and alive during the calls.
        let mut msgs: Vec<libc::mmsghdr> = (0..k).map(|_| unsafe { std::mem::zeroed() }).collect();
        for ((m, d), iov) in msgs.iter_mut().zip(dests.iter_mut()).zip(iovs.iter_mut()) {
            m.msg_hdr.msg_name = (&mut d.ss as *mut libc::sockaddr_storage).cast();
            m.msg_hdr.msg_namelen = d.len;
            m.msg_hdr.msg_iov = iov;
            m.msg_hdr.msg_iovlen = 1;
        }
        let sent_at = Instant::now();
        let mut sent = 0usize;
        while sent < k {
            let rest = msgs.get_mut(sent..).unwrap_or_default();
            // SAFETY: `rest` is a valid array of initialised mmsghdr.
            let n = self.send_call("sendmmsg", || unsafe {
                libc::sendmmsg(fd, rest.as_mut_ptr(), rest.len() as libc::c_uint, 0) as isize
            });
            if n == 0 {
                self.fail("sendmmsg", libc::EIO);
            }
            sent += n;
        }
        for (m, p) in msgs.iter().zip(&payloads) {
            if m.msg_len as usize != p.len() {
                eprintln!("{PROG}: short sendmmsg entry: {} of {}", m.msg_len, p.len());
                self.t.bad += 1;
            }
        }
        // Receive side.
        let mut answered = vec![false; k];
        let mut bufs: Vec<Vec<u8>> = (0..k).map(|_| vec![0u8; BUF]).collect();
        // SAFETY: zeroed sockaddr_storage is valid.
        let mut froms: Vec<libc::sockaddr_storage> =
            (0..k).map(|_| unsafe { std::mem::zeroed() }).collect();
        let deadline = sent_at + Duration::from_millis(self.o.timeout_ms.max(1) as u64);
        while answered.iter().any(|a| !a) && self.wait_readable(deadline) {
            let mut riovs: Vec<libc::iovec> = bufs.iter_mut().map(|b| iovec_mut(b)).collect();
            // SAFETY: as above.
            let mut rmsgs: Vec<libc::mmsghdr> =
                (0..k).map(|_| unsafe { std::mem::zeroed() }).collect();
            for ((m, f), iov) in rmsgs.iter_mut().zip(froms.iter_mut()).zip(riovs.iter_mut()) {
                m.msg_hdr.msg_name = (f as *mut libc::sockaddr_storage).cast();
                m.msg_hdr.msg_namelen =
                    std::mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
                m.msg_hdr.msg_iov = iov;
                m.msg_hdr.msg_iovlen = 1;
            }
            // SAFETY: valid array of initialised mmsghdr; no timeout pointer.
            let n = unsafe {
                libc::recvmmsg(
                    fd,
                    rmsgs.as_mut_ptr(),
                    k as libc::c_uint,
                    libc::MSG_DONTWAIT,
                    std::ptr::null_mut(),
                )
            };
            let Some(n) = self.recv_result("recvmmsg", n as isize) else {
                continue;
            };
            for (i, m) in rmsgs.iter().enumerate().take(n) {
                let len = m.msg_len as usize;
                let got = bufs.get(i).and_then(|b| b.get(..len)).unwrap_or_default();
                let seq = if got.len() >= 8 && self.o.size >= 8 {
                    let mut b = [0u8; 8];
                    b.copy_from_slice(got.get(..8).unwrap_or(&[0; 8]));
                    u64::from_be_bytes(b)
                } else {
                    first // small payloads: matched against the batch's first only
                };
                let idx = seq.wrapping_sub(first) as usize;
                if m.msg_hdr.msg_flags & libc::MSG_TRUNC != 0 {
                    self.t.bad += 1;
                    continue;
                }
                match classify(got, seq, self.o.size) {
                    Match::Mine if idx < k && !answered.get(idx).copied().unwrap_or(true) => {
                        if let Some(a) = answered.get_mut(idx) {
                            *a = true;
                        }
                        if let Some(f) = froms.get(i) {
                            let f = *f;
                            self.check_source(&f, m.msg_hdr.msg_namelen);
                        }
                        self.t.answered += 1;
                        self.done += 1;
                        self.t.rtts_us.push(sent_at.elapsed().as_micros() as u64);
                    }
                    Match::Mine if seq < first => {} // late echo of an earlier batch
                    Match::Late => {}
                    _ => self.t.bad += 1,
                }
            }
        }
    }
}

fn unreachable_mode() -> ! {
    error("internal: mmsg handled by batch()")
}

fn iovec(b: &[u8]) -> libc::iovec {
    libc::iovec {
        iov_base: b.as_ptr() as *mut libc::c_void,
        iov_len: b.len(),
    }
}

fn iovec_mut(b: &mut [u8]) -> libc::iovec {
    libc::iovec {
        iov_base: b.as_mut_ptr().cast(),
        iov_len: b.len(),
    }
}

fn sock_name(fd: i32, peer: bool) -> Result<Option<SocketAddr>, i32> {
    // SAFETY: zeroed storage, its size; the kernel writes at most that.
    unsafe {
        let mut ss: libc::sockaddr_storage = std::mem::zeroed();
        let mut len = std::mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
        let p = (&mut ss as *mut libc::sockaddr_storage).cast::<libc::sockaddr>();
        let r = if peer {
            libc::getpeername(fd, p, &mut len)
        } else {
            libc::getsockname(fd, p, &mut len)
        };
        if r != 0 {
            return Err(errno());
        }
        Ok(Addr { ss, len }.to_std())
    }
}

fn cmd_plain(mode: Mode, host: &str, port: &str, o: &Opts) {
    let addrs = clientsys::resolve(PROG, host, Some(port), o.family, libc::SOCK_DGRAM);
    let Some(dest) = addrs.first().copied() else {
        error("no-address")
    };
    // SAFETY: plain socket/fcntl calls; the descriptor is owned by `Fd`.
    let fd = unsafe { libc::socket(dest.family(), libc::SOCK_DGRAM, 0) };
    let mut run = Plain {
        fd: Fd(fd),
        dest,
        dest_std: dest.to_std(),
        o: o.clone(),
        t: Tally::default(),
        done: 0,
    };
    if fd < 0 {
        run.fail("socket", errno());
    }
    if o.nonblock {
        // SAFETY: fcntl on our descriptor.
        let ok = unsafe {
            let fl = libc::fcntl(fd, libc::F_GETFL);
            fl >= 0 && libc::fcntl(fd, libc::F_SETFL, fl | libc::O_NONBLOCK) == 0
        };
        if !ok {
            run.fail("fcntl", errno());
        }
    }
    let mut peer = "n/a".to_string();
    if mode.connects() {
        let sa = (&dest.ss as *const libc::sockaddr_storage).cast::<libc::sockaddr>();
        // SAFETY: a valid address of `dest.len` bytes.
        if unsafe { libc::connect(fd, sa, dest.len) } != 0 {
            run.fail("connect", errno());
        }
        peer = match sock_name(fd, true) {
            Ok(a) if a == run.dest_std => "ok".into(),
            Ok(a) => format!("BAD:{}", a.map_or("?".into(), |a| a.to_string())),
            Err(e) => run.fail("getpeername", e),
        };
    }
    let start = Instant::now();
    if mode == Mode::Mmsg {
        let k = o.batch.max(1);
        let mut first = 0u64;
        while (first as usize) < o.count {
            let n = k.min(o.count - first as usize);
            run.batch(first, n);
            first += n as u64;
        }
    } else {
        for seq in 0..o.count as u64 {
            let sent_at = Instant::now();
            run.send_one(mode, seq);
            run.await_one(mode, seq, sent_at);
        }
    }
    let elapsed = start.elapsed().as_micros();
    let local = match sock_name(fd, false) {
        Ok(Some(a)) => a.to_string(),
        Ok(None) => "?".into(),
        Err(e) => run.fail("getsockname", e),
    };
    let source = match (&run.t.source_bad, mode) {
        (Some(b), _) => format!("BAD:{b}"),
        (None, Mode::SendTo | Mode::SendMsg | Mode::Mmsg) => "ok".into(),
        (None, _) => "n/a".into(),
    };
    let all_ok = run.t.all_ok(o.count) && (peer == "ok" || peer == "n/a");
    let median = run.t.median_us();
    println!(
        "ok answered={}/{} bad={} source={source} peer={peer} median_us={median} elapsed_us={elapsed} local={local}",
        run.t.answered, o.count, run.t.bad,
    );
    exit(if all_ok { 0 } else { 3 })
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut pos: Vec<&str> = Vec::new();
    let mut o = Opts {
        count: 1,
        size: 64,
        family: libc::AF_UNSPEC,
        timeout_ms: 2000,
        batch: 8,
        nonblock: false,
        name: false,
        auth: None,
        zero_client: false,
    };
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let mut val = || it.next().map(String::as_str).unwrap_or_else(|| usage());
        match a.as_str() {
            "--count" => o.count = val().parse().unwrap_or_else(|_| usage()),
            "--size" => o.size = val().parse().unwrap_or_else(|_| usage()),
            "--batch" => o.batch = val().parse().unwrap_or_else(|_| usage()),
            "--timeout-ms" => o.timeout_ms = val().parse().unwrap_or_else(|_| usage()),
            "--family" => o.family = clientsys::family_arg(val()).unwrap_or_else(|| usage()),
            "--nonblock" => o.nonblock = true,
            "--name" => o.name = true,
            "--zero-client" => o.zero_client = true,
            "--auth" => {
                let (u, p) = val().split_once(':').unwrap_or_else(|| usage());
                o.auth = Some((u.to_string(), p.to_string()));
            }
            s if s.starts_with("--") => usage(),
            s => pos.push(s),
        }
    }
    if o.size == 0 || o.size > 65507 || (pos.first() == Some(&"mmsg") && o.size < 8) {
        usage();
    }
    match pos.as_slice() {
        ["socks5", proxy, dest] => cmd_socks5(proxy, dest, &o),
        [m, host, port] => {
            let mode = match *m {
                "sendto" => Mode::SendTo,
                "connected" => Mode::Connected,
                "sendmsg" => Mode::SendMsg,
                "mmsg" => Mode::Mmsg,
                "readwrite" => Mode::ReadWrite,
                _ => usage(),
            };
            cmd_plain(mode, host, port, &o)
        }
        _ => usage(),
    }
}
