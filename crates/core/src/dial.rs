//! The chain handshake: given a byte stream already connected to the first proxy, make each hop
//! open a tunnel to the next one, and the last one to the destination.
//!
//! Owns: the order of messages on the wire (safe: one step at a time; pipelined: every message
//! of a run of pipelined hops in one write, then every reply verified in order), deadlines per
//! hop and for the whole handshake, and which hop failed.
//! Must never: consume a byte after the last reply (it belongs to the program), or succeed on
//! any reply it did not verify. A SOCKS reply is read with reads of exactly the length its
//! decoder still needs (`Need`, which never reaches past the message); an HTTP response, whose
//! end is only found by looking, is peeked and only its own bytes are consumed. I/O goes
//! through [`Transport`], so the preloaded library can use its own raw-fd implementation and
//! tests can use anything.

use std::borrow::{Borrow, Cow};
use std::time::{Duration, Instant};

use crate::config::{Proxy, ProxyKind};
use crate::error::Error;
use crate::proto::socks5::{self, Method, ReplyCode};
use crate::proto::{Decoded, Dest, ProtoError, http, socks4};

/// A byte stream to the first proxy, with deadlines.
pub trait Transport {
    /// Writes all of `buf`, or fails (Timeout at `deadline`).
    fn send_all(&mut self, buf: &[u8], deadline: Instant) -> Result<(), Error>;
    /// Reads (consumes) up to `buf.len()` bytes, waiting for them until `deadline`; `Ok(0)`
    /// means the peer closed the stream. The handshake never asks for a byte past the message
    /// it is reading. `ready`: the bytes are probably there already (the rest of a message
    /// begun, a pipelined reply after the first): read before waiting.
    fn recv(&mut self, buf: &mut [u8], deadline: Instant, ready: bool) -> Result<usize, Error>;
    /// Waits for data and copies up to `buf.len()` bytes WITHOUT consuming them (MSG_PEEK);
    /// `Ok(0)` means the peer closed the stream.
    fn peek(&mut self, buf: &mut [u8], deadline: Instant) -> Result<usize, Error>;
    /// Consumes `n` bytes that a previous `peek` returned.
    fn consume(&mut self, n: usize) -> Result<(), Error>;
}

/// The step of a hop at which a handshake failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// The TCP connect to the first proxy.
    Connect,
    /// SOCKS5 method negotiation.
    Greeting,
    /// RFC 1929 user/password.
    Auth,
    /// The CONNECT request: the hop's answer about the next hop or the destination.
    Request,
}

impl Phase {
    pub fn name(self) -> &'static str {
        match self {
            Phase::Connect => "connect",
            Phase::Greeting => "greeting",
            Phase::Auth => "auth",
            Phase::Request => "request",
        }
    }
}

/// A failed chain handshake: which proxy (index into the chain), at which step, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DialError {
    pub hop: usize,
    pub phase: Phase,
    pub error: Error,
}

impl DialError {
    /// True when the last proxy answered that the destination itself failed (refused,
    /// unreachable...): the chain works, so retrying another chain would not help.
    pub fn is_target_failure(&self, hops: usize) -> bool {
        self.hop + 1 == hops && self.phase == Phase::Request && self.error.is_reply()
    }

    /// The index of the proxy that looks dead (unreachable or broken), if any. A hop whose
    /// CONNECT to the next proxy failed points at that next proxy.
    pub fn dead_proxy(&self, hops: usize) -> Option<usize> {
        if self.is_target_failure(hops) || self.error == Error::Interrupted {
            return None;
        }
        match (self.phase, &self.error) {
            (Phase::Request, e) if e.is_reply() => Some(self.hop + 1),
            _ => Some(self.hop),
        }
    }
}

/// One timed step, for `CHAINSOCKS_LOG=debug` and `chainsocks check`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Step {
    pub hop: usize,
    pub phase: Phase,
    /// Time from the start of the handshake until this step's reply was verified.
    pub at: Duration,
    /// Auth used (for the greeting step): the method the proxy chose.
    pub detail: &'static str,
}

/// Options for one handshake.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// When the whole handshake must be done.
    pub deadline: Instant,
    /// Default time a hop may take to answer its CONNECT (overridden per proxy).
    pub hop_timeout: Duration,
}

/// Runs the handshake of every hop over `t`, which is already connected to `hops[0]`.
/// `steps` receives the timeline (pass `None` to skip it).
pub fn handshake<T: Transport, P: Borrow<Proxy>>(
    t: &mut T,
    hops: &[P],
    target: &Dest,
    limits: Limits,
    steps: Option<&mut Vec<Step>>,
) -> Result<(), DialError> {
    handshake_cmd(t, hops, target, socks5::Command::Connect, limits, steps).map(|_| ())
}

/// [`handshake`] with `cmd` as the last hop's request (CONNECT, or UDP ASSOCIATE, which only a
/// SOCKS5 last hop can carry); returns the last hop's bound address (BND.ADDR/BND.PORT of a
/// SOCKS5 or SOCKS4 reply; `None` for HTTP and raw hops).
pub fn handshake_cmd<T: Transport, P: Borrow<Proxy>>(
    t: &mut T,
    hops: &[P],
    target: &Dest,
    cmd: socks5::Command,
    limits: Limits,
    mut steps: Option<&mut Vec<Step>>,
) -> Result<Option<socks5::WireAddr>, DialError> {
    let pipelined = |k: usize| hops.get(k).is_some_and(|p| p.borrow().pipeline);
    if cmd != socks5::Command::Connect && !hops.last().is_some_and(|p| p.borrow().kind.is_socks5())
    {
        return Err(fail(
            hops.len().saturating_sub(1),
            Phase::Request,
            Error::Socks5(ReplyCode::CommandNotSupported),
        ));
    }
    // The timeline's origin, only when one is kept.
    let start = steps.is_some().then(Instant::now);
    let last = hops.len().saturating_sub(1);
    let mut bound = None;
    let mut rd = Reader::default();
    let mut out = Vec::with_capacity(64);
    let mut i = 0;
    while i < hops.len() {
        let run_end = if pipelined(i) {
            // A run of pipelined hops: all their messages in one write.
            let mut j = i;
            while pipelined(j) {
                j += 1;
            }
            j
        } else {
            i + 1
        };
        let cmd_of = |k: usize| {
            if k == last {
                cmd
            } else {
                socks5::Command::Connect
            }
        };
        out.clear();
        if pipelined(i) {
            for k in i..run_end {
                let (proxy, dest) = hop_at(hops, k, target)?;
                encode_pipelined(proxy, &dest, cmd_of(k), &mut out)
                    .map_err(|e| fail(k, Phase::Greeting, e))?;
            }
            t.send_all(&out, limits.deadline)
                .map_err(|e| fail(i, Phase::Greeting, e))?;
            for k in i..run_end {
                let (proxy, _) = hop_at(hops, k, target)?;
                bound = verify_pipelined(t, &mut rd, k, proxy, limits, start, &mut steps)?;
            }
        } else {
            let (proxy, dest) = hop_at(hops, i, target)?;
            let hop = Hop {
                k: i,
                proxy,
                dest: &dest,
                cmd: cmd_of(i),
            };
            bound = run_safe(t, &mut rd, &mut out, hop, limits, start, &mut steps)?;
        }
        i = run_end;
    }
    Ok(bound)
}

fn fail(hop: usize, phase: Phase, error: impl Into<Error>) -> DialError {
    DialError {
        hop,
        phase,
        error: error.into(),
    }
}

/// The proxy at `k` and where it must connect: the next proxy, or the target.
fn hop_at<'a, P: Borrow<Proxy>>(
    hops: &'a [P],
    k: usize,
    target: &'a Dest,
) -> Result<(&'a Proxy, Cow<'a, Dest>), DialError> {
    let proxy = hops
        .get(k)
        .ok_or_else(|| fail(k, Phase::Request, Error::Internal("hop index")))?
        .borrow();
    let dest = match hops.get(k + 1).map(Borrow::borrow) {
        None => Cow::Borrowed(target),
        Some(next) => Cow::Owned(match next.socket_addr() {
            Some(sa) => Dest::Ip(sa),
            None => Dest::Name(next.host.clone(), next.port),
        }),
    };
    Ok((proxy, dest))
}

fn hop_deadline(proxy: &Proxy, limits: Limits) -> Instant {
    let per_hop = proxy
        .connect_timeout_ms
        .map_or(limits.hop_timeout, Duration::from_millis);
    limits.deadline.min(Instant::now() + per_hop)
}

/// What a hop sends for its CONNECT request (SOCKS4/4a, SOCKS5 request, HTTP CONNECT); a SOCKS5
/// hop may be asked for another command (UDP ASSOCIATE).
fn encode_request(
    proxy: &Proxy,
    dest: &Dest,
    cmd: socks5::Command,
    out: &mut Vec<u8>,
) -> Result<(), Error> {
    match proxy.kind {
        ProxyKind::Socks4 | ProxyKind::Socks4a => {
            if proxy.kind == ProxyKind::Socks4 && matches!(dest, Dest::Name(..)) {
                return Err(Error::Socks4NeedsName);
            }
            let user = proxy.username.as_deref().unwrap_or("");
            socks4::encode_connect(dest, user.as_bytes(), out)?;
        }
        ProxyKind::Socks5 | ProxyKind::Socks5h => {
            socks5::encode_request(cmd, dest, out)?;
        }
        ProxyKind::Http => http::encode_connect(dest, proxy.credentials(), out)?,
        ProxyKind::Raw => {}
    }
    Ok(())
}

fn encode_userpass(proxy: &Proxy, out: &mut Vec<u8>) -> Result<(), Error> {
    let (u, p) = proxy.credentials().unwrap_or(("", ""));
    socks5::encode_userpass(u.as_bytes(), p.as_bytes(), out)?;
    Ok(())
}

/// Every message of one hop, assuming the replies we expect (the method is known from the
/// config: user/pass when credentials are set, else none).
fn encode_pipelined(
    proxy: &Proxy,
    dest: &Dest,
    cmd: socks5::Command,
    out: &mut Vec<u8>,
) -> Result<(), Error> {
    if proxy.kind.is_socks5() {
        if proxy.credentials().is_some() {
            socks5::encode_greeting(&[Method::UserPass], out)?;
            encode_userpass(proxy, out)?;
        } else {
            socks5::encode_greeting(&[Method::NoAuth], out)?;
        }
    }
    encode_request(proxy, dest, cmd, out)
}

fn verify_pipelined<T: Transport>(
    t: &mut T,
    rd: &mut Reader,
    k: usize,
    proxy: &Proxy,
    limits: Limits,
    start: Option<Instant>,
    steps: &mut Option<&mut Vec<Step>>,
) -> Result<Option<socks5::WireAddr>, DialError> {
    if proxy.kind.is_socks5() {
        let m = rd
            .read(t, limits.deadline, socks5::decode_method_selection)
            .map_err(|e| fail(k, Phase::Greeting, e))?;
        let want = if proxy.credentials().is_some() {
            Method::UserPass
        } else {
            Method::NoAuth
        };
        check_method(m, want == Method::UserPass).map_err(|e| fail(k, Phase::Greeting, e))?;
        if m != want {
            return Err(fail(k, Phase::Greeting, Error::UnexpectedMethod(m)));
        }
        record(steps, k, Phase::Greeting, start, method_name(m));
        if m == Method::UserPass {
            read_auth(t, rd, limits.deadline).map_err(|e| fail(k, Phase::Auth, e))?;
            record(steps, k, Phase::Auth, start, "");
        }
    }
    let bound = read_request_reply(t, rd, proxy, hop_deadline(proxy, limits))
        .map_err(|e| fail(k, Phase::Request, e))?;
    record(steps, k, Phase::Request, start, "");
    Ok(bound)
}

/// One hop of a safe-mode handshake: which, the proxy, what it must reach, with which command.
struct Hop<'a> {
    k: usize,
    proxy: &'a Proxy,
    dest: &'a Dest,
    cmd: socks5::Command,
}

/// One hop, one step at a time: each message is sent after the previous reply was verified.
/// `out` is the handshake's one write buffer.
fn run_safe<T: Transport>(
    t: &mut T,
    rd: &mut Reader,
    out: &mut Vec<u8>,
    hop: Hop,
    limits: Limits,
    start: Option<Instant>,
    steps: &mut Option<&mut Vec<Step>>,
) -> Result<Option<socks5::WireAddr>, DialError> {
    let Hop {
        k,
        proxy,
        dest,
        cmd,
    } = hop;
    if proxy.kind.is_socks5() {
        let has_creds = proxy.credentials().is_some();
        let offer: &[Method] = if has_creds {
            &[Method::NoAuth, Method::UserPass]
        } else {
            &[Method::NoAuth]
        };
        out.clear();
        socks5::encode_greeting(offer, out).map_err(|e| fail(k, Phase::Greeting, e))?;
        t.send_all(out, limits.deadline)
            .map_err(|e| fail(k, Phase::Greeting, e))?;
        let m = rd
            .read(t, limits.deadline, socks5::decode_method_selection)
            .map_err(|e| fail(k, Phase::Greeting, e))?;
        check_method(m, has_creds).map_err(|e| fail(k, Phase::Greeting, e))?;
        record(steps, k, Phase::Greeting, start, method_name(m));
        if m == Method::UserPass {
            out.clear();
            encode_userpass(proxy, out).map_err(|e| fail(k, Phase::Auth, e))?;
            t.send_all(out, limits.deadline)
                .map_err(|e| fail(k, Phase::Auth, e))?;
            read_auth(t, rd, limits.deadline).map_err(|e| fail(k, Phase::Auth, e))?;
            record(steps, k, Phase::Auth, start, "");
        }
    }
    out.clear();
    encode_request(proxy, dest, cmd, out).map_err(|e| fail(k, Phase::Request, e))?;
    t.send_all(out, limits.deadline)
        .map_err(|e| fail(k, Phase::Request, e))?;
    let bound = read_request_reply(t, rd, proxy, hop_deadline(proxy, limits))
        .map_err(|e| fail(k, Phase::Request, e))?;
    record(steps, k, Phase::Request, start, "");
    Ok(bound)
}

fn record(
    steps: &mut Option<&mut Vec<Step>>,
    hop: usize,
    phase: Phase,
    start: Option<Instant>,
    detail: &'static str,
) {
    if let (Some(s), Some(start)) = (steps.as_deref_mut(), start) {
        s.push(Step {
            hop,
            phase,
            at: start.elapsed(),
            detail,
        });
    }
}

fn method_name(m: Method) -> &'static str {
    match m {
        Method::NoAuth => "no auth",
        Method::UserPass => "user/password",
        Method::Gssapi => "gssapi",
        Method::NoAcceptable => "none acceptable",
        Method::Other(_) => "other",
    }
}

/// The method a SOCKS5 proxy chose is one we can do.
fn check_method(m: Method, has_creds: bool) -> Result<(), Error> {
    match m {
        Method::NoAuth => Ok(()),
        Method::UserPass if has_creds => Ok(()),
        Method::NoAcceptable => Err(Error::NoAcceptableMethod),
        other => Err(Error::UnexpectedMethod(other)),
    }
}

fn read_auth<T: Transport>(t: &mut T, rd: &mut Reader, deadline: Instant) -> Result<(), Error> {
    match rd.read(t, deadline, socks5::decode_auth_reply)? {
        0 => Ok(()),
        status => Err(Error::AuthRejected(status)),
    }
}

/// The hop's answer to its request; the bound address when the protocol has one.
fn read_request_reply<T: Transport>(
    t: &mut T,
    rd: &mut Reader,
    proxy: &Proxy,
    deadline: Instant,
) -> Result<Option<socks5::WireAddr>, Error> {
    match proxy.kind {
        ProxyKind::Socks4 | ProxyKind::Socks4a => {
            let r = rd.read(t, deadline, socks4::decode_reply)?;
            match r.code {
                socks4::Socks4Code::Granted => Ok(None),
                code => Err(Error::Socks4(code)),
            }
        }
        ProxyKind::Socks5 | ProxyKind::Socks5h => {
            let r = rd.read(t, deadline, socks5::decode_reply)?;
            match r.code {
                ReplyCode::Succeeded => Ok(Some(r.bound)),
                code => Err(Error::Socks5(code)),
            }
        }
        ProxyKind::Raw => Ok(None),
        ProxyKind::Http => {
            let r = rd.read_peeked(t, deadline, |b| http::decode_response(b, http::MAX_HEADER))?;
            if r.is_success() {
                Ok(None)
            } else {
                Err(Error::Http(r.status))
            }
        }
    }
}

/// The longest message read with exact reads: a SOCKS5 reply with a 255-byte bound name
/// (VER REP RSV ATYP, length, name, port).
const MAX_EXACT: usize = 4 + 1 + 255 + 2;

/// Reads exactly one message at a time. Bytes after the last reply stay in the socket for the
/// program.
struct Reader {
    /// A SOCKS message being read (exact reads).
    buf: [u8; MAX_EXACT],
    /// An HTTP response header being read (peeked).
    acc: Vec<u8>,
}

impl Default for Reader {
    fn default() -> Reader {
        Reader {
            buf: [0; MAX_EXACT],
            acc: Vec::new(),
        }
    }
}

impl Reader {
    /// Reads one message with reads of exactly the length `decode` still needs: its `Need(n)`
    /// never reaches past the end of the message, so no read takes a byte of what follows (the
    /// next reply, or the program's data). The first read waits for the reply; the rest of a
    /// message begun is read before waiting.
    fn read<T: Transport, V>(
        &mut self,
        t: &mut T,
        deadline: Instant,
        decode: impl Fn(&[u8]) -> Result<Decoded<V>, ProtoError>,
    ) -> Result<V, Error> {
        let mut have = 0;
        loop {
            let n = match decode(self.buf.get(..have).unwrap_or_default())? {
                Decoded::Done(v, _) => return Ok(v),
                Decoded::Need(n) => n.max(1),
            };
            // The deadline holds even against a proxy that keeps sending (a read that finds
            // data waiting never blocks, so it would never notice the time); the first read's
            // wait checks it itself.
            if have > 0 && Instant::now() >= deadline {
                return Err(Error::Timeout);
            }
            let Some(room) = self.buf.get_mut(have..have + n) else {
                return Err(Error::Internal("reply longer than any SOCKS reply"));
            };
            match t.recv(room, deadline, have > 0)? {
                0 => return Err(Error::Closed),
                got => have += got.min(n),
            }
        }
    }

    /// Reads one message whose end is only found by looking (an HTTP response header): peeks
    /// at what has arrived, decodes it, and consumes only the bytes the message used.
    fn read_peeked<T: Transport, V>(
        &mut self,
        t: &mut T,
        deadline: Instant,
        decode: impl Fn(&[u8]) -> Result<Decoded<V>, ProtoError>,
    ) -> Result<V, Error> {
        self.acc.clear();
        let mut buf = [0u8; 1024];
        loop {
            if let Decoded::Done(v, _) = decode(&self.acc)? {
                return Ok(v); // an empty message: nothing to consume
            }
            // As above: the deadline holds against a proxy that keeps sending.
            if Instant::now() >= deadline {
                return Err(Error::Timeout);
            }
            let n = t.peek(&mut buf, deadline)?;
            if n == 0 {
                return Err(Error::Closed);
            }
            let seen = self.acc.len();
            self.acc.extend_from_slice(buf.get(..n).unwrap_or(&[]));
            match decode(&self.acc)? {
                Decoded::Done(v, used) => {
                    t.consume(used.saturating_sub(seen))?;
                    return Ok(v);
                }
                Decoded::Need(_) => t.consume(n)?,
            }
        }
    }
}

/// A [`Transport`] over std's `TcpStream`, for the launcher's `check` command and for tests.
/// (Not for the preloaded library, which works on the program's raw fd.)
impl Transport for std::net::TcpStream {
    fn send_all(&mut self, buf: &[u8], deadline: Instant) -> Result<(), Error> {
        use std::io::Write;
        self.set_write_timeout(Some(remaining(deadline)?))
            .map_err(io_err)?;
        self.write_all(buf).map_err(io_err)
    }
    fn recv(&mut self, buf: &mut [u8], deadline: Instant, _ready: bool) -> Result<usize, Error> {
        use std::io::Read;
        self.set_read_timeout(Some(remaining(deadline)?))
            .map_err(io_err)?;
        self.read(buf).map_err(io_err)
    }
    fn peek(&mut self, buf: &mut [u8], deadline: Instant) -> Result<usize, Error> {
        self.set_read_timeout(Some(remaining(deadline)?))
            .map_err(io_err)?;
        std::net::TcpStream::peek(self, buf).map_err(io_err)
    }
    fn consume(&mut self, mut n: usize) -> Result<(), Error> {
        use std::io::Read;
        let mut buf = [0u8; 1024];
        while n > 0 {
            let k = self
                .read(buf.get_mut(..n.min(1024)).unwrap_or(&mut []))
                .map_err(io_err)?;
            if k == 0 {
                return Err(Error::Closed);
            }
            n -= k;
        }
        Ok(())
    }
}

fn remaining(deadline: Instant) -> Result<Duration, Error> {
    let left = deadline.saturating_duration_since(Instant::now());
    if left.is_zero() {
        Err(Error::Timeout)
    } else {
        Ok(left)
    }
}

fn io_err(e: std::io::Error) -> Error {
    match e.kind() {
        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut => Error::Timeout,
        _ => Error::Os(e.raw_os_error().unwrap_or(libc::EIO)),
    }
}
