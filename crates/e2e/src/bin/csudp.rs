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
//! csudp socks5 PROXY_HOST:PORT DEST_HOST:PORT [--count N] [--size B] [--window W] [--name]
//!              [--timeout-ms T] [--auth USER:PASS] [--zero-client]
//!     TCP to the proxy, greeting (no auth, or username with --auth), UDP ASSOCIATE, then N
//!     datagrams through the relay (the 10/22/7+n-byte header added and stripped here).
//!     DEST_HOST: an IP literal goes as ATYP 1/4, anything else as ATYP 3 (the proxy resolves
//!     it); --name sends even an IP literal as ATYP 3. The request carries the UDP socket's
//!     own address (bound to the TCP connection's local IP), or 0.0.0.0:0 with
//!     --zero-client. A relay BND.ADDR of 0.0.0.0/:: means the proxy's address.
//!     -> ok answered=N/M bad=K source=ok|BAD:<addr>|resolved:<addr> median_us=U
//!        elapsed_us=E assoc_us=A local=<udp socket> relay=<relay addr> header=<bytes>
//!     source: the address in the relay's reply headers must equal an IP DEST; for a name
//!     the first one seen is shown.
//!     SOCKS failures: error=closed (the proxy closed the connection before replying),
//!     error=reply 0x07 (REP != 0), error=method 0xff, error=auth N, error=proto <what>.
//! csudp sendto|connected|sendmsg|mmsg|readwrite HOST PORT [--count N] [--size B]
//!              [--window W] [--family 4|6] [--timeout-ms T] [--batch K] [--nonblock]
//!     HOST goes through getaddrinfo (SOCK_DGRAM, the family given; the first address is
//!     used), so a name only a proxy can resolve works under a shim with remote DNS. One
//!     socket for the whole run:
//!       sendto     unconnected: sendto / recvfrom
//!       connected  connect, then send / recv
//!       sendmsg    unconnected: sendmsg / recvmsg, payload in two iovecs
//!       mmsg       unconnected: sendmmsg of K datagrams (--batch, default 8), recvmmsg until
//!                  the K echoes are in (or T ms)
//!       readwrite  connect, then write / read
//!     --nonblock: O_NONBLOCK on the socket (EAGAIN on a send waits for POLLOUT).
//!     -> ok answered=N/M bad=K source=ok|BAD:<addr>|n/a peer=ok|BAD:<addr>|n/a
//!        median_us=U elapsed_us=E local=<getsockname>
//!     source: recvfrom/recvmsg/recvmmsg must report the destination as the sender; peer:
//!     getpeername of a connected socket must be the destination.
//!     Failure of a call: errno=NAME (n) call=<function> answered=N/M; a failed lookup:
//!     gai=EAI_NAME (rc).
//! csudp pair PROXY_IP:PORT DEST_IP:PORT [--count N] [--size B] [--window W] [--chunk K]
//!              [--timeout-ms T]
//!     The benchmark's paired mode, run under a shim: three links in one process, each sending
//!     K datagrams in turn (order rotating ABC, BCA, CAB, …), so that load from elsewhere
//!     cancels out of their differences:
//!       A  plain libc sendto/recvfrom to DEST (the shim carries it),
//!       B  this client's own SOCKS5 UDP association through PROXY, made of raw syscalls that
//!          no LD_PRELOAD shim sees (the control connection's connect carries chainsocks'
//!          marker length, which the launcher's seccomp supervisor lets through),
//!       C  raw sendto/recvfrom straight to DEST (the floor).
//!     -> ok answered=A,B,C/N bad=K median_us=A,B,C above_us=A-C,B-C elapsed_us=A,B,C
//!     median_us: of every answered round trip of a link; above_us: the medians of the
//!     per-turn differences to C's round trip (K = 1: datagram by datagram); elapsed_us: each
//!     link's loop time summed over its turns (N / elapsed is its throughput).
//! ```
//! Pacing: at most W datagrams in flight (default 1: each awaits its echo); one whose echo
//! has not come T ms (default 2000) after it was sent counts as lost. With W = 1 `median_us`
//! is the round trip; with a larger W, N / `elapsed_us` is the throughput.
//! A datagram's payload is B bytes (default 64; at least 8 with W > 1 or mmsg), its sequence
//! number in the first 8 bytes (big-endian, fewer if B < 8), then a pattern: a late or
//! repeated echo of a datagram no longer awaited is skipped, any other mismatch (or a
//! truncated datagram) counts in `bad`.
//! Exit status: 0 when every datagram was answered, bad=0 and source/peer are ok; 3 when the
//! run completed otherwise (the `ok ...` line says how); 1 on an error line; 2 on a usage
//! error. `elapsed_us` is the time of the datagram loop (association set-up: `assoc_us`).

use chainsocks_core::proto::socks5::{
    Command, Method, ReplyCode, WireAddr, decode_auth_reply, decode_method_selection, decode_reply,
    decode_udp_header, encode_greeting, encode_request, encode_udp_header, encode_userpass,
};
use chainsocks_core::proto::{Decoded, Dest, ProtoError};
use e2e::clientsys::{self, Addr, Fd, errno, errno_name, poll_one};
use std::collections::VecDeque;
use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpStream, ToSocketAddrs, UdpSocket};
use std::process::exit;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

const PROG: &str = "csudp";
/// Receive buffer: the largest UDP payload plus a SOCKS5 header.
const BUF: usize = 65536 + 262;

/// Datagrams answered so far and the total, for the error line.
static ANSWERED: AtomicUsize = AtomicUsize::new(0);
static COUNT: AtomicUsize = AtomicUsize::new(0);

#[derive(Clone, Debug)]
struct Opts {
    count: usize,
    size: usize,
    window: usize,
    family: i32,
    timeout_ms: i32,
    batch: usize,
    chunk: usize,
    nonblock: bool,
    name: bool,
    auth: Option<(String, String)>,
    zero_client: bool,
}

impl Opts {
    fn timeout(&self) -> Duration {
        Duration::from_millis(self.timeout_ms.max(1) as u64)
    }
}

fn usage() -> ! {
    eprintln!(
        "usage (see the source's header):\n\
         csudp socks5 PROXY_HOST:PORT DEST_HOST:PORT [--count N] [--size B] [--window W] \
         [--name] [--timeout-ms T] [--auth USER:PASS] [--zero-client]\n\
         csudp sendto|connected|sendmsg|mmsg|readwrite HOST PORT [--count N] [--size B] \
         [--window W] [--family 4|6] [--timeout-ms T] [--batch K] [--nonblock]\n\
         csudp pair PROXY_IP:PORT DEST_IP:PORT [--count N] [--size B] [--window W] [--chunk K] \
         [--timeout-ms T]"
    );
    exit(2)
}

fn error(msg: &str) -> ! {
    clientsys::fail(msg)
}

/// Prints `errno=NAME (n) call=CALL answered=N/M` and exits 1.
fn fail_call(call: &str, e: i32) -> ! {
    eprintln!("{PROG}: {call}: {}", std::io::Error::from_raw_os_error(e));
    println!(
        "errno={} ({e}) call={call} answered={}/{}",
        errno_name(e),
        ANSWERED.load(Ordering::Relaxed),
        COUNT.load(Ordering::Relaxed)
    );
    exit(1)
}

fn io_fail(call: &str, e: &std::io::Error) -> ! {
    match e.raw_os_error() {
        Some(n) => fail_call(call, n),
        None if e.kind() == std::io::ErrorKind::UnexpectedEof => error("closed"),
        None => error(&format!("io {call}: {e}")),
    }
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

/// The sequence number in a payload of at least 8 bytes.
fn seq_of(got: &[u8]) -> Option<u64> {
    got.first_chunk::<8>().map(|b| u64::from_be_bytes(*b))
}

/// What the far side reported as a datagram's source.
enum Source {
    /// Not reported by this call (recv, read).
    NotChecked,
    Ok,
    Bad(String),
    /// A name destination: the address the proxy resolved it to.
    Resolved(String),
}

/// One way to send and receive datagrams.
trait Link {
    /// Sends one datagram (exits on error).
    fn send(&mut self, p: &[u8]);
    /// The next datagram's payload and reported source, or `None` once `deadline` passed.
    /// A datagram that cannot be a whole echo (truncated, bad header) is an empty payload.
    fn recv(&mut self, deadline: Instant) -> Option<(Vec<u8>, Source)>;
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
    elapsed_us: u128,
}

impl Tally {
    fn median_us(&self) -> u64 {
        let mut v = self.rtts_us.clone();
        v.sort_unstable();
        v.get(v.len() / 2).copied().unwrap_or(0)
    }

    fn all_ok(&self, count: usize) -> bool {
        self.answered == count && self.bad == 0 && self.source_bad.is_none()
    }

    fn answer(&mut self, sent_at: Instant, src: Source) {
        self.answered += 1;
        ANSWERED.store(self.answered, Ordering::Relaxed);
        self.rtts_us.push(sent_at.elapsed().as_micros() as u64);
        match src {
            Source::Bad(s) => {
                self.source_bad.get_or_insert(s);
            }
            Source::Resolved(s) => {
                self.source_seen.get_or_insert(s);
            }
            Source::NotChecked | Source::Ok => {}
        }
    }

    /// `source=` for the result line; `checked`: whether the calls report a source.
    fn source_text(&self, checked: bool) -> String {
        match (&self.source_bad, &self.source_seen) {
            (Some(b), _) => format!("BAD:{b}"),
            (None, Some(s)) => format!("resolved:{s}"),
            (None, None) if checked => "ok".into(),
            (None, None) => "n/a".into(),
        }
    }
}

/// Sends `o.count` datagrams over `link`, at most `o.window` in flight, each awaited for
/// `o.timeout_ms` after it was sent.
fn run_loop(link: &mut dyn Link, o: &Opts) -> Tally {
    run_loop_from(link, o, 0)
}

/// [`run_loop`] with sequence numbers from `first` (a link used for several turns: an echo
/// from an earlier turn is then "late", never mistaken for a current one).
fn run_loop_from(link: &mut dyn Link, o: &Opts, first: u64) -> Tally {
    let timeout = o.timeout();
    let window = o.window.max(1);
    let mut in_flight: VecDeque<(u64, Instant)> = VecDeque::new();
    let mut next = first;
    let mut t = Tally::default();
    let start = Instant::now();
    loop {
        while ((next - first) as usize) < o.count && in_flight.len() < window {
            let p = payload(next, o.size);
            let at = Instant::now(); // the round trip includes the send call
            link.send(&p);
            in_flight.push_back((next, at));
            next += 1;
        }
        let Some(&(_, oldest)) = in_flight.front() else {
            break;
        };
        let Some((got, src)) = link.recv(oldest + timeout) else {
            in_flight.pop_front(); // lost
            continue;
        };
        // Below 8 bytes there is no room for the number: window 1, the one in flight.
        let seq = if o.size >= 8 {
            seq_of(&got)
        } else {
            in_flight.front().map(|f| f.0)
        };
        let Some(seq) = seq.filter(|&s| got == payload(s, o.size)) else {
            t.bad += 1;
            continue;
        };
        match in_flight.iter().position(|f| f.0 == seq) {
            Some(i) => {
                if let Some((_, sent_at)) = in_flight.remove(i) {
                    t.answer(sent_at, src);
                }
            }
            None if seq < next => {} // late or repeated: no longer awaited
            None => t.bad += 1,
        }
    }
    t.elapsed_us = start.elapsed().as_micros();
    t
}

// ------------------------------------------------------------------------------ socks5 mode

/// Reads one message decoded by `decode` (reading exactly what it asks for).
fn read_msg<T>(
    s: &mut TcpStream,
    what: &str,
    decode: impl Fn(&[u8]) -> Result<Decoded<T>, ProtoError>,
) -> T {
    read_decoded(what, decode, |b| {
        if let Err(e) = s.read_exact(b) {
            io_fail(&format!("read-{what}"), &e);
        }
    })
}

/// Reads one message decoded by `decode`, `fill` reading exactly the bytes it asks for (or
/// failing the run).
fn read_decoded<T>(
    what: &str,
    decode: impl Fn(&[u8]) -> Result<Decoded<T>, ProtoError>,
    mut fill: impl FnMut(&mut [u8]),
) -> T {
    let mut buf = Vec::new();
    loop {
        match decode(&buf) {
            Ok(Decoded::Done(v, _)) => return v,
            Ok(Decoded::Need(n)) => {
                let at = buf.len();
                buf.resize(at + n, 0);
                fill(buf.get_mut(at..).unwrap_or_default());
            }
            Err(e) => error(&format!("proto {what}: {e}")),
        }
    }
}

fn write_msg(s: &mut TcpStream, what: &str, encoded: Result<Vec<u8>, ProtoError>) {
    let b = encoded.unwrap_or_else(|e| error(&format!("proto {what}: {e}")));
    if let Err(e) = s.write_all(&b) {
        io_fail(&format!("write-{what}"), &e);
    }
}

fn encoded(f: impl FnOnce(&mut Vec<u8>) -> Result<(), ProtoError>) -> Result<Vec<u8>, ProtoError> {
    let mut out = Vec::new();
    f(&mut out).map(|()| out)
}

fn parse_hostport(s: &str) -> (String, u16) {
    let (h, p) = s.rsplit_once(':').unwrap_or_else(|| usage());
    let h = h.trim_start_matches('[').trim_end_matches(']');
    (h.to_string(), p.parse().unwrap_or_else(|_| usage()))
}

/// Datagrams through a SOCKS5 UDP relay, framed here.
struct Socks5Link {
    udp: UdpSocket,
    relay: SocketAddr,
    header: Vec<u8>,
    dest: Dest,
    buf: Vec<u8>,
}

/// A datagram for the relay: the SOCKS5 UDP header, then the payload.
fn framed(header: &[u8], p: &[u8]) -> Vec<u8> {
    let mut d = Vec::with_capacity(header.len() + p.len());
    d.extend_from_slice(header);
    d.extend_from_slice(p);
    d
}

impl Link for Socks5Link {
    fn send(&mut self, p: &[u8]) {
        let d = framed(&self.header, p);
        if let Err(e) = self.udp.send_to(&d, self.relay) {
            io_fail("sendto", &e);
        }
    }

    fn recv(&mut self, deadline: Instant) -> Option<(Vec<u8>, Source)> {
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() || self.udp.set_read_timeout(Some(left)).is_err() {
                return None;
            }
            let (n, from) = match self.udp.recv_from(&mut self.buf) {
                Ok(x) => x,
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) =>
                {
                    return None;
                }
                Err(e) => io_fail("recvfrom", &e),
            };
            if from != self.relay {
                eprintln!("{PROG}: datagram from {from}, not the relay: ignored");
                continue;
            }
            let got = self.buf.get(..n).unwrap_or_default();
            let Ok(Decoded::Done((_frag, src), used)) = decode_udp_header(got) else {
                return Some((Vec::new(), Source::NotChecked));
            };
            let text = match &src {
                WireAddr::Ip(a) => a.to_string(),
                WireAddr::Name(n, p) => format!("{}:{p}", String::from_utf8_lossy(n)),
            };
            let source = match &self.dest {
                Dest::Ip(d) if src == WireAddr::Ip(*d) => Source::Ok,
                Dest::Ip(_) => Source::Bad(text),
                Dest::Name(..) => Source::Resolved(text),
            };
            return Some((got.get(used..).unwrap_or_default().to_vec(), source));
        }
    }
}

fn cmd_socks5(proxy: &str, dest: &str, o: &Opts) {
    let timeout = o.timeout();
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
    // Greeting and auth.
    let method = if o.auth.is_some() {
        Method::UserPass
    } else {
        Method::NoAuth
    };
    write_msg(
        &mut tcp,
        "greeting",
        encoded(|b| encode_greeting(&[method], b)),
    );
    let chosen = read_msg(&mut tcp, "method", decode_method_selection);
    if chosen != method {
        error(&format!("method {:#04x}", chosen.to_u8()));
    }
    if let Some((u, p)) = &o.auth {
        let userpass = encoded(|b| encode_userpass(u.as_bytes(), p.as_bytes(), b));
        write_msg(&mut tcp, "auth", userpass);
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
    let local = match udp.local_addr() {
        Ok(a) => a,
        Err(e) => io_fail("getsockname", &e),
    };
    let client = match (o.zero_client, local_ip) {
        (false, _) => local,
        (true, IpAddr::V4(_)) => SocketAddr::from((Ipv4Addr::UNSPECIFIED, 0)),
        (true, IpAddr::V6(_)) => SocketAddr::from((Ipv6Addr::UNSPECIFIED, 0)),
    };
    let request = encoded(|b| encode_request(Command::UdpAssociate, &Dest::Ip(client), b));
    write_msg(&mut tcp, "request", request);
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
    if relay.is_ipv4() != local.is_ipv4() {
        error(&format!("relay family: {relay} from a socket on {local}"));
    }
    let assoc_us = t0.elapsed().as_micros();
    let header = encoded(|b| encode_udp_header(0, &dest, b))
        .unwrap_or_else(|e| error(&format!("proto header: {e}")));
    let hlen = header.len();
    let mut link = Socks5Link {
        udp,
        relay,
        header,
        dest,
        buf: vec![0u8; BUF],
    };
    let t = run_loop(&mut link, o);
    drop(tcp); // the association ends with the control connection
    let all_ok = t.all_ok(o.count);
    println!(
        "ok answered={}/{} bad={} source={} median_us={} elapsed_us={} assoc_us={assoc_us} local={local} relay={relay} header={hlen}",
        t.answered,
        o.count,
        t.bad,
        t.source_text(true),
        t.median_us(),
        t.elapsed_us,
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

    fn reports_source(self) -> bool {
        matches!(self, Mode::SendTo | Mode::SendMsg | Mode::Mmsg)
    }
}

/// One socket, the libc calls of a mode.
struct PlainLink {
    fd: i32,
    dest: Addr,
    dest_std: Option<SocketAddr>,
    mode: Mode,
    nonblock: bool,
    timeout_ms: i32,
    buf: Vec<u8>,
}

impl PlainLink {
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
                libc::EAGAIN if self.nonblock => {
                    if let Err(e) = poll_one(self.fd, libc::POLLOUT, self.timeout_ms) {
                        fail_call("poll", e);
                    }
                }
                e => fail_call(call, e),
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
        match poll_one(self.fd, libc::POLLIN, ms) {
            Ok(()) => true,
            Err(libc::ETIMEDOUT) => false,
            Err(e) => fail_call("poll", e),
        }
    }

    fn source(&self, from: &libc::sockaddr_storage, len: libc::socklen_t) -> Source {
        let got = Addr { ss: *from, len }.to_std();
        if got == self.dest_std {
            Source::Ok
        } else {
            Source::Bad(got.map_or_else(|| format!("family-{}", from.ss_family), |a| a.to_string()))
        }
    }
}

/// A receive-type call's result: bytes, or `None` for EAGAIN/EINTR (poll again).
fn recv_result(call: &str, n: isize) -> Option<usize> {
    if n >= 0 {
        return Some(n as usize);
    }
    match errno() {
        libc::EAGAIN | libc::EINTR => None,
        e => fail_call(call, e),
    }
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

fn storage_len() -> libc::socklen_t {
    std::mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t
}

fn zeroed_storage() -> libc::sockaddr_storage {
    // SAFETY: all-zero is a valid sockaddr_storage.
    unsafe { std::mem::zeroed() }
}

impl Link for PlainLink {
    fn send(&mut self, p: &[u8]) {
        let (fd, mut dest) = (self.fd, self.dest);
        let sa = (&dest.ss as *const libc::sockaddr_storage).cast::<libc::sockaddr>();
        // SAFETY (every call): valid buffers, lengths and addresses that outlive the call.
        let sent = match self.mode {
            Mode::SendTo => self.send_call("sendto", || unsafe {
                libc::sendto(fd, p.as_ptr().cast(), p.len(), 0, sa, dest.len)
            }),
            Mode::Connected => self.send_call("send", || unsafe {
                libc::send(fd, p.as_ptr().cast(), p.len(), 0)
            }),
            Mode::ReadWrite => self.send_call("write", || unsafe {
                libc::write(fd, p.as_ptr().cast(), p.len())
            }),
            // (mmsg sends through run_mmsg, never here)
            Mode::SendMsg | Mode::Mmsg => {
                let (a, b) = p.split_at(p.len() / 2);
                let mut iov = [iovec(a), iovec(b)];
                // SAFETY: zeroed msghdr is valid; the pointers are filled below.
                let mut m: libc::msghdr = unsafe { std::mem::zeroed() };
                m.msg_name = (&mut dest.ss as *mut libc::sockaddr_storage).cast();
                m.msg_namelen = dest.len;
                m.msg_iov = iov.as_mut_ptr();
                m.msg_iovlen = iov.len();
                self.send_call("sendmsg", || unsafe { libc::sendmsg(fd, &m, 0) })
            }
        };
        if sent != p.len() {
            error(&format!("short send: {sent} of {}", p.len()));
        }
    }

    fn recv(&mut self, deadline: Instant) -> Option<(Vec<u8>, Source)> {
        let fd = self.fd;
        while self.wait_readable(deadline) {
            let mut from = zeroed_storage();
            let mut flen = storage_len();
            let fromp = (&mut from as *mut libc::sockaddr_storage).cast::<libc::sockaddr>();
            let buf = &mut self.buf;
            // SAFETY (every call): the buffers and lengths are valid for the call.
            let (call, n, truncated) = match self.mode {
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
                Mode::SendMsg | Mode::Mmsg => {
                    let (a, b) = buf.split_at_mut(BUF / 2);
                    let mut iov = [iovec_mut(a), iovec_mut(b)];
                    // SAFETY: zeroed msghdr is valid; the pointers are filled below.
                    let mut m: libc::msghdr = unsafe { std::mem::zeroed() };
                    m.msg_name = fromp.cast();
                    m.msg_namelen = flen;
                    m.msg_iov = iov.as_mut_ptr();
                    m.msg_iovlen = iov.len();
                    let n = unsafe { libc::recvmsg(fd, &mut m, 0) };
                    flen = m.msg_namelen;
                    ("recvmsg", n, m.msg_flags & libc::MSG_TRUNC != 0)
                }
            };
            let Some(n) = recv_result(call, n) else {
                continue;
            };
            if truncated {
                return Some((Vec::new(), Source::NotChecked));
            }
            let source = if self.mode.reports_source() {
                self.source(&from, flen)
            } else {
                Source::NotChecked
            };
            return Some((self.buf.get(..n).unwrap_or_default().to_vec(), source));
        }
        None
    }
}

/// The mmsg mode: batches of K through sendmmsg, echoes collected with recvmmsg.
fn run_mmsg(link: &mut PlainLink, o: &Opts) -> Tally {
    let mut t = Tally::default();
    let start = Instant::now();
    let k = o.batch.max(1);
    let mut first = 0u64;
    while (first as usize) < o.count {
        let n = k.min(o.count - first as usize);
        mmsg_batch(link, o, first, n, &mut t);
        first += n as u64;
    }
    t.elapsed_us = start.elapsed().as_micros();
    t
}

/// sendmmsg of datagrams `first..first + k`, then recvmmsg until all their echoes are in or
/// the timeout passes.
fn mmsg_batch(link: &mut PlainLink, o: &Opts, first: u64, k: usize, t: &mut Tally) {
    let fd = link.fd;
    let payloads: Vec<Vec<u8>> = (0..k as u64).map(|i| payload(first + i, o.size)).collect();
    let mut dests = vec![link.dest; k];
    let mut iovs: Vec<libc::iovec> = payloads.iter().map(|p| iovec(p)).collect();
    // SAFETY: zeroed mmsghdr is valid; the pointers are filled below and outlive the calls.
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
        let n = link.send_call("sendmmsg", || unsafe {
            libc::sendmmsg(fd, rest.as_mut_ptr(), rest.len() as libc::c_uint, 0) as isize
        });
        if n == 0 {
            error("sendmmsg sent nothing");
        }
        sent += n;
    }
    for (m, p) in msgs.iter().zip(&payloads) {
        if m.msg_len as usize != p.len() {
            error(&format!(
                "short sendmmsg entry: {} of {}",
                m.msg_len,
                p.len()
            ));
        }
    }
    let mut awaited: Vec<bool> = vec![true; k];
    let mut bufs: Vec<Vec<u8>> = (0..k).map(|_| vec![0u8; BUF]).collect();
    let mut froms: Vec<libc::sockaddr_storage> = (0..k).map(|_| zeroed_storage()).collect();
    let deadline = sent_at + o.timeout();
    while awaited.contains(&true) && link.wait_readable(deadline) {
        let mut riovs: Vec<libc::iovec> = bufs.iter_mut().map(|b| iovec_mut(b)).collect();
        // SAFETY: as above.
        let mut rmsgs: Vec<libc::mmsghdr> = (0..k).map(|_| unsafe { std::mem::zeroed() }).collect();
        for ((m, f), iov) in rmsgs.iter_mut().zip(froms.iter_mut()).zip(riovs.iter_mut()) {
            m.msg_hdr.msg_name = (f as *mut libc::sockaddr_storage).cast();
            m.msg_hdr.msg_namelen = storage_len();
            m.msg_hdr.msg_iov = iov;
            m.msg_hdr.msg_iovlen = 1;
        }
        // SAFETY: a valid array of initialised mmsghdr; no timeout.
        let n = unsafe {
            libc::recvmmsg(
                fd,
                rmsgs.as_mut_ptr(),
                k as libc::c_uint,
                libc::MSG_DONTWAIT,
                std::ptr::null_mut(),
            )
        };
        let Some(n) = recv_result("recvmmsg", n as isize) else {
            continue;
        };
        for (i, m) in rmsgs.iter().enumerate().take(n) {
            let len = m.msg_len as usize;
            let got = bufs.get(i).and_then(|b| b.get(..len)).unwrap_or_default();
            let seq = seq_of(got).filter(|&s| got == payload(s, o.size));
            let truncated = m.msg_hdr.msg_flags & libc::MSG_TRUNC != 0;
            let Some(seq) = seq.filter(|_| !truncated) else {
                t.bad += 1;
                continue;
            };
            let slot = seq
                .checked_sub(first)
                .and_then(|i| awaited.get_mut(usize::try_from(i).ok()?));
            match slot {
                Some(a) if *a => {
                    *a = false;
                    let src = froms.get(i).map_or(Source::NotChecked, |f| {
                        link.source(f, m.msg_hdr.msg_namelen)
                    });
                    t.answer(sent_at, src);
                }
                _ if seq < first + k as u64 => {} // late or repeated
                _ => t.bad += 1,
            }
        }
    }
}

fn sock_name(fd: i32, peer: bool) -> Result<Option<SocketAddr>, i32> {
    let mut ss = zeroed_storage();
    let mut len = storage_len();
    let p = (&mut ss as *mut libc::sockaddr_storage).cast::<libc::sockaddr>();
    // SAFETY: zeroed storage and its size; the kernel writes at most that.
    let r = unsafe {
        if peer {
            libc::getpeername(fd, p, &mut len)
        } else {
            libc::getsockname(fd, p, &mut len)
        }
    };
    if r != 0 {
        return Err(errno());
    }
    Ok(Addr { ss, len }.to_std())
}

fn cmd_plain(mode: Mode, host: &str, port: &str, o: &Opts) {
    let addrs = clientsys::resolve(PROG, host, Some(port), o.family, libc::SOCK_DGRAM);
    let Some(dest) = addrs.first().copied() else {
        error("no-address")
    };
    // SAFETY: plain socket call; the descriptor is owned by `Fd`.
    let fd = Fd(unsafe { libc::socket(dest.family(), libc::SOCK_DGRAM, 0) });
    if fd.0 < 0 {
        fail_call("socket", errno());
    }
    if o.nonblock {
        // SAFETY: fcntl on our descriptor.
        let ok = unsafe {
            let fl = libc::fcntl(fd.0, libc::F_GETFL);
            fl >= 0 && libc::fcntl(fd.0, libc::F_SETFL, fl | libc::O_NONBLOCK) == 0
        };
        if !ok {
            fail_call("fcntl", errno());
        }
    }
    let mut link = PlainLink {
        fd: fd.0,
        dest,
        dest_std: dest.to_std(),
        mode,
        nonblock: o.nonblock,
        timeout_ms: o.timeout_ms,
        buf: vec![0u8; BUF],
    };
    let mut peer = "n/a".to_string();
    if mode.connects() {
        let sa = (&dest.ss as *const libc::sockaddr_storage).cast::<libc::sockaddr>();
        // SAFETY: a valid address of `dest.len` bytes.
        if unsafe { libc::connect(fd.0, sa, dest.len) } != 0 {
            fail_call("connect", errno());
        }
        peer = match sock_name(fd.0, true) {
            Ok(a) if a == link.dest_std => "ok".into(),
            Ok(a) => format!("BAD:{}", a.map_or("?".into(), |a| a.to_string())),
            Err(e) => fail_call("getpeername", e),
        };
    }
    let t = if mode == Mode::Mmsg {
        run_mmsg(&mut link, o)
    } else {
        run_loop(&mut link, o)
    };
    let local = match sock_name(fd.0, false) {
        Ok(Some(a)) => a.to_string(),
        Ok(None) => "?".into(),
        Err(e) => fail_call("getsockname", e),
    };
    let all_ok = t.all_ok(o.count) && (peer == "ok" || peer == "n/a");
    println!(
        "ok answered={}/{} bad={} source={} peer={peer} median_us={} elapsed_us={} local={local}",
        t.answered,
        o.count,
        t.bad,
        t.source_text(mode.reports_source()),
        t.median_us(),
        t.elapsed_us,
    );
    exit(if all_ok { 0 } else { 3 })
}

// ------------------------------------------------------------------------------- pair mode

/// The calls of the pair mode's B and C links: raw `syscall()`s, which no LD_PRELOAD shim
/// sees (`libc::` wrappers of hooked symbols would be the shim's).
mod raw {
    use super::Addr;
    use chainsocks_core::sys::MARKER_ADDRLEN;

    fn ret(r: libc::c_long) -> Result<i64, i32> {
        if r < 0 { Err(super::errno()) } else { Ok(r) }
    }

    pub fn socket(domain: i32, ty: i32) -> Result<i32, i32> {
        // SAFETY: plain syscall.
        ret(unsafe { libc::syscall(libc::SYS_socket, domain, ty | libc::SOCK_CLOEXEC, 0) })
            .map(|fd| fd as i32)
    }

    pub fn close(fd: i32) {
        // SAFETY: plain syscall on our descriptor.
        unsafe { libc::syscall(libc::SYS_close, fd) };
    }

    /// connect(2) with the address in a zero-padded buffer of the marker length.
    pub fn connect_marked(fd: i32, a: &Addr) -> Result<(), i32> {
        let st = a.ss; // sockaddr_storage: 128 bytes, zero past the address
        // SAFETY: a complete, zero-padded address buffer of 128 bytes.
        ret(unsafe { libc::syscall(libc::SYS_connect, fd, &st, MARKER_ADDRLEN) }).map(|_| ())
    }

    pub fn bind(fd: i32, a: &Addr) -> Result<(), i32> {
        // SAFETY: a valid address of `a.len` bytes.
        ret(unsafe { libc::syscall(libc::SYS_bind, fd, &a.ss, a.len) }).map(|_| ())
    }

    pub fn sockname(fd: i32) -> Result<Addr, i32> {
        let mut a = Addr {
            // SAFETY: all-zero is a valid sockaddr_storage.
            ss: unsafe { std::mem::zeroed() },
            len: std::mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t,
        };
        // SAFETY: storage and its length; the kernel writes at most that.
        ret(unsafe { libc::syscall(libc::SYS_getsockname, fd, &mut a.ss, &mut a.len) })?;
        Ok(a)
    }

    pub fn nodelay(fd: i32) {
        let one: libc::c_int = 1;
        // SAFETY: an int option and its size.
        unsafe {
            libc::syscall(
                libc::SYS_setsockopt,
                fd,
                libc::IPPROTO_TCP,
                libc::TCP_NODELAY,
                &one,
                std::mem::size_of::<libc::c_int>(),
            )
        };
    }

    /// Waits until `fd` is readable (true) or `ms` passed (false); EINTR restarts.
    pub fn readable(fd: i32, ms: i32) -> Result<bool, i32> {
        let mut p = libc::pollfd {
            fd,
            events: libc::POLLIN,
            revents: 0,
        };
        loop {
            // SAFETY: one valid pollfd.
            match ret(unsafe { libc::syscall(libc::SYS_poll, &mut p, 1, ms) }) {
                Ok(n) => return Ok(n > 0),
                Err(libc::EINTR) => continue,
                Err(e) => return Err(e),
            }
        }
    }

    pub fn write_all(fd: i32, mut b: &[u8]) -> Result<(), i32> {
        while !b.is_empty() {
            // SAFETY: the buffer is valid for its length.
            match ret(unsafe { libc::syscall(libc::SYS_write, fd, b.as_ptr(), b.len()) }) {
                Ok(n) => b = b.get(n as usize..).unwrap_or_default(),
                Err(libc::EINTR) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// Reads exactly `b.len()` bytes, waiting at most `ms` for each read.
    pub fn read_exact(fd: i32, b: &mut [u8], ms: i32) -> Result<(), i32> {
        let mut got = 0;
        while got < b.len() {
            if !readable(fd, ms)? {
                return Err(libc::ETIMEDOUT);
            }
            let rest = b.get_mut(got..).unwrap_or_default();
            // SAFETY: the buffer is valid for its length.
            match ret(unsafe { libc::syscall(libc::SYS_read, fd, rest.as_mut_ptr(), rest.len()) }) {
                Ok(0) => return Err(libc::ECONNRESET),
                Ok(n) => got += n as usize,
                Err(libc::EINTR) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// sendto(2) with the address in a zero-padded buffer of the marker length: the launcher's
    /// seccomp filter lets it through unseen (an unmarked datagram to the relay, from a socket
    /// the library does not frame, would be refused as a proxied destination).
    pub fn sendto(fd: i32, b: &[u8], to: &Addr) -> Result<usize, i32> {
        loop {
            // SAFETY: buffer and a complete, zero-padded 128-byte address buffer.
            let r = unsafe {
                libc::syscall(
                    libc::SYS_sendto,
                    fd,
                    b.as_ptr(),
                    b.len(),
                    0,
                    &to.ss,
                    MARKER_ADDRLEN,
                )
            };
            match ret(r) {
                Ok(n) => return Ok(n as usize),
                Err(libc::EINTR) => continue,
                Err(e) => return Err(e),
            }
        }
    }

    /// One datagram: its length and sender.
    pub fn recvfrom(fd: i32, b: &mut [u8]) -> Result<(usize, Addr), i32> {
        let mut a = Addr {
            // SAFETY: all-zero is a valid sockaddr_storage.
            ss: unsafe { std::mem::zeroed() },
            len: std::mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t,
        };
        loop {
            // SAFETY: buffer and storage are valid for the call.
            let r = unsafe {
                libc::syscall(
                    libc::SYS_recvfrom,
                    fd,
                    b.as_mut_ptr(),
                    b.len(),
                    libc::MSG_DONTWAIT,
                    &mut a.ss,
                    &mut a.len,
                )
            };
            match ret(r) {
                Ok(n) => return Ok((n as usize, a)),
                Err(libc::EINTR) => continue,
                Err(e) => return Err(e),
            }
        }
    }
}

/// Milliseconds left until `deadline` (0: passed), for poll.
fn ms_left(deadline: Instant) -> i32 {
    let left = deadline.saturating_duration_since(Instant::now());
    if left.is_zero() {
        0
    } else {
        left.as_millis().clamp(1, i32::MAX as u128) as i32
    }
}

/// The next datagram on a raw UDP socket from `want` (others are ignored), or `None` at
/// `deadline`.
fn raw_recv(fd: i32, buf: &mut [u8], want: SocketAddr, deadline: Instant) -> Option<usize> {
    loop {
        let ms = ms_left(deadline);
        if ms == 0 {
            return None;
        }
        match raw::readable(fd, ms) {
            Ok(true) => {}
            Ok(false) => return None,
            Err(e) => fail_call("poll", e),
        }
        match raw::recvfrom(fd, buf) {
            Ok((n, from)) if from.to_std() == Some(want) => return Some(n),
            Ok((_, from)) => eprintln!("{PROG}: datagram from {}: ignored", from.text()),
            Err(libc::EAGAIN) => {}
            Err(e) => fail_call("recvfrom", e),
        }
    }
}

/// C: raw datagrams straight to the destination.
struct RawDirectLink {
    fd: i32,
    dest: SocketAddr,
    buf: Vec<u8>,
}

impl Link for RawDirectLink {
    fn send(&mut self, p: &[u8]) {
        if let Err(e) = raw::sendto(self.fd, p, &Addr::from_std(self.dest)) {
            fail_call("sendto", e);
        }
    }

    fn recv(&mut self, deadline: Instant) -> Option<(Vec<u8>, Source)> {
        let n = raw_recv(self.fd, &mut self.buf, self.dest, deadline)?;
        Some((self.buf.get(..n).unwrap_or_default().to_vec(), Source::Ok))
    }
}

/// B: the client's own SOCKS5 UDP association, raw syscalls only.
struct RawSocks5Link {
    ctl: i32,
    udp: i32,
    relay: SocketAddr,
    header: Vec<u8>,
    dest: SocketAddr,
    buf: Vec<u8>,
}

impl Link for RawSocks5Link {
    fn send(&mut self, p: &[u8]) {
        let d = framed(&self.header, p);
        if let Err(e) = raw::sendto(self.udp, &d, &Addr::from_std(self.relay)) {
            fail_call("sendto", e);
        }
    }

    fn recv(&mut self, deadline: Instant) -> Option<(Vec<u8>, Source)> {
        let n = raw_recv(self.udp, &mut self.buf, self.relay, deadline)?;
        let got = self.buf.get(..n).unwrap_or_default();
        let Ok(Decoded::Done((_frag, src), used)) = decode_udp_header(got) else {
            return Some((Vec::new(), Source::NotChecked));
        };
        let source = if src == WireAddr::Ip(self.dest) {
            Source::Ok
        } else {
            Source::Bad(format!("{src:?}"))
        };
        Some((got.get(used..).unwrap_or_default().to_vec(), source))
    }
}

/// Reads one message decoded by `decode` from a raw control connection.
fn raw_msg<T>(
    fd: i32,
    what: &str,
    ms: i32,
    decode: impl Fn(&[u8]) -> Result<Decoded<T>, ProtoError>,
) -> T {
    read_decoded(what, decode, |b| {
        if let Err(e) = raw::read_exact(fd, b, ms) {
            fail_call(&format!("read-{what}"), e);
        }
    })
}

fn raw_send_msg(fd: i32, what: &str, encoded: Result<Vec<u8>, ProtoError>) {
    let b = encoded.unwrap_or_else(|e| error(&format!("proto {what}: {e}")));
    if let Err(e) = raw::write_all(fd, &b) {
        fail_call(&format!("write-{what}"), e);
    }
}

/// B's association: control connection (no auth), UDP ASSOCIATE from a raw UDP socket on the
/// control connection's local IP.
fn raw_associate(proxy: SocketAddr, dest: SocketAddr, o: &Opts) -> RawSocks5Link {
    let domain = if proxy.is_ipv4() {
        libc::AF_INET
    } else {
        libc::AF_INET6
    };
    let ms = o.timeout_ms.max(1);
    let ctl = raw::socket(domain, libc::SOCK_STREAM).unwrap_or_else(|e| fail_call("socket", e));
    if let Err(e) = raw::connect_marked(ctl, &Addr::from_std(proxy)) {
        fail_call("connect", e);
    }
    raw::nodelay(ctl);
    raw_send_msg(
        ctl,
        "greeting",
        encoded(|b| encode_greeting(&[Method::NoAuth], b)),
    );
    let chosen = raw_msg(ctl, "method", ms, decode_method_selection);
    if chosen != Method::NoAuth {
        error(&format!("method {:#04x}", chosen.to_u8()));
    }
    let local_ip = raw::sockname(ctl)
        .unwrap_or_else(|e| fail_call("getsockname", e))
        .to_std()
        .map(|a| a.ip())
        .unwrap_or_else(|| error("getsockname: not an internet address"));
    let udp = raw::socket(domain, libc::SOCK_DGRAM).unwrap_or_else(|e| fail_call("socket", e));
    if let Err(e) = raw::bind(udp, &Addr::from_std(SocketAddr::new(local_ip, 0))) {
        fail_call("bind", e);
    }
    let client = raw::sockname(udp)
        .unwrap_or_else(|e| fail_call("getsockname", e))
        .to_std()
        .unwrap_or_else(|| error("getsockname: not an internet address"));
    let request = encoded(|b| encode_request(Command::UdpAssociate, &Dest::Ip(client), b));
    raw_send_msg(ctl, "request", request);
    let reply = raw_msg(ctl, "reply", ms, decode_reply);
    if reply.code != ReplyCode::Succeeded {
        error(&format!("reply {:#04x}", reply.code.to_u8()));
    }
    let relay = match reply.bound {
        WireAddr::Ip(a) if a.ip().is_unspecified() => SocketAddr::new(proxy.ip(), a.port()),
        WireAddr::Ip(a) => a,
        WireAddr::Name(..) => error("proto relay address is a name"),
    };
    let header = encoded(|b| encode_udp_header(0, &Dest::Ip(dest), b))
        .unwrap_or_else(|e| error(&format!("proto header: {e}")));
    RawSocks5Link {
        ctl,
        udp,
        relay,
        header,
        dest,
        buf: vec![0u8; BUF],
    }
}

fn cmd_pair(proxy: &str, dest: &str, o: &Opts) {
    let ip_port = |s: &str| -> SocketAddr {
        let (h, p) = parse_hostport(s);
        match h.parse::<IpAddr>() {
            Ok(ip) => SocketAddr::new(ip, p),
            Err(_) => usage(),
        }
    };
    let (proxy, dest) = (ip_port(proxy), ip_port(dest));
    let domain = if dest.is_ipv4() {
        libc::AF_INET
    } else {
        libc::AF_INET6
    };
    // A: through libc, where the shim is.
    // SAFETY: plain socket call; the descriptor is owned by `Fd`.
    let fd = Fd(unsafe { libc::socket(domain, libc::SOCK_DGRAM, 0) });
    if fd.0 < 0 {
        fail_call("socket", errno());
    }
    let mut a = PlainLink {
        fd: fd.0,
        dest: Addr::from_std(dest),
        dest_std: Some(dest),
        mode: Mode::SendTo,
        nonblock: false,
        timeout_ms: o.timeout_ms,
        buf: vec![0u8; BUF],
    };
    let mut b = raw_associate(proxy, dest, o);
    let cfd = raw::socket(domain, libc::SOCK_DGRAM).unwrap_or_else(|e| fail_call("socket", e));
    let mut c = RawDirectLink {
        fd: cfd,
        dest,
        buf: vec![0u8; BUF],
    };
    let chunk = o.chunk.max(1);
    let mut answered = [0usize; 3];
    let mut bad = 0usize;
    let mut elapsed = [0u128; 3];
    let mut rtts: [Vec<u64>; 3] = Default::default();
    let mut above: [Vec<f64>; 2] = Default::default();
    let mut source_bad: Option<String> = None;
    let (mut sent, mut turn) = (0usize, 0usize);
    while sent < o.count {
        let k = chunk.min(o.count - sent);
        let part = Opts {
            count: k,
            ..o.clone()
        };
        let mut medians = [None; 3];
        for j in 0..3 {
            let i = (j + turn) % 3;
            let link: &mut dyn Link = match i {
                0 => &mut a,
                1 => &mut b,
                _ => &mut c,
            };
            let t = run_loop_from(link, &part, sent as u64);
            if let (Some(x), Some(y), Some(z), Some(r)) = (
                answered.get_mut(i),
                elapsed.get_mut(i),
                medians.get_mut(i),
                rtts.get_mut(i),
            ) {
                *x += t.answered;
                *y += t.elapsed_us;
                if t.answered > 0 {
                    *z = Some(t.median_us() as f64);
                }
                r.extend_from_slice(&t.rtts_us);
            }
            bad += t.bad;
            if source_bad.is_none() {
                source_bad = t.source_bad.clone();
            }
        }
        if let [Some(ma), Some(mb), Some(mc)] = medians {
            above[0].push(ma - mc);
            above[1].push(mb - mc);
        }
        sent += k;
        turn += 1;
    }
    raw::close(b.udp);
    raw::close(b.ctl);
    raw::close(c.fd);
    let med_u = |v: &mut Vec<u64>| {
        v.sort_unstable();
        v.get(v.len() / 2).copied().unwrap_or(0)
    };
    let med_f = |v: &mut Vec<f64>| {
        v.sort_by(|x, y| x.total_cmp(y));
        v.get(v.len() / 2).copied().unwrap_or(0.0)
    };
    let [ra, rb, rc] = &mut rtts;
    let [aa, ab] = &mut above;
    println!(
        "ok answered={},{},{}/{} bad={bad} source={} median_us={},{},{} above_us={:.1},{:.1} elapsed_us={},{},{}",
        answered[0],
        answered[1],
        answered[2],
        o.count,
        source_bad
            .as_deref()
            .map_or("ok".to_string(), |b| format!("BAD:{b}")),
        med_u(ra),
        med_u(rb),
        med_u(rc),
        med_f(aa),
        med_f(ab),
        elapsed[0],
        elapsed[1],
        elapsed[2],
    );
    let all_ok = answered.iter().all(|&n| n == o.count) && bad == 0 && source_bad.is_none();
    exit(if all_ok { 0 } else { 3 })
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut pos: Vec<&str> = Vec::new();
    let mut o = Opts {
        count: 1,
        size: 64,
        window: 1,
        family: libc::AF_UNSPEC,
        timeout_ms: 2000,
        batch: 8,
        chunk: 1,
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
            "--window" => o.window = val().parse().unwrap_or_else(|_| usage()),
            "--batch" => o.batch = val().parse().unwrap_or_else(|_| usage()),
            "--chunk" => o.chunk = val().parse().unwrap_or_else(|_| usage()),
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
    let numbered = o.window > 1 || pos.first() == Some(&"mmsg");
    if o.size == 0 || o.size > 65507 || (numbered && o.size < 8) || o.window == 0 {
        usage();
    }
    COUNT.store(o.count, Ordering::Relaxed);
    match pos.as_slice() {
        ["socks5", proxy, dest] => cmd_socks5(proxy, dest, &o),
        ["pair", proxy, dest] => cmd_pair(proxy, dest, &o),
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
