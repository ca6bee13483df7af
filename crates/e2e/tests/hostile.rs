//! End-to-end tests with hostile and broken proxies (issue 5): a program under chainsocks
//! (`csclient seq`) talks to an in-process [`HostileProxy`] and must get the specific errno,
//! within the deadline, and keep running: its next connection, routed by a rule to a good proxy,
//! succeeds in the same process. Each test in its own network namespace with only `lo`.
//!
//! Deadlines in these tests: `connect_timeout_ms = 1500` (TCP connect to the first proxy, and
//! each hop's answer to its CONNECT request), `handshake_timeout_ms = 2500` (the whole chain).
//!
//! | case (proxy behavior) | what the program's `connect` returns |
//! |---|---|
//! | SOCKS5: closes the connection right after reading the greeting | ECONNREFUSED, at once |
//! | SOCKS5: answers the greeting with version 4 (`04 00`) | ECONNREFUSED, at once |
//! | SOCKS5: method 0xFF (no acceptable method) | EACCES, at once |
//! | SOCKS5: user/password rejected (RFC 1929 status 1) | EACCES, at once |
//! | SOCKS5: success reply with ATYP 3 and a 255-byte bound name | success; the tunnel works |
//! | SOCKS5: tunnel bytes in the segment of the success reply (bound IPv4, IPv6, a 1-byte name); pipelined: method selection, reply and tunnel bytes in one segment | success; those bytes are the program's first read |
//! | SOCKS5: every reply byte in its own segment, 5 ms apart (safe and pipelined) | success |
//! | SOCKS5: reply with unknown ATYP 9 | ECONNREFUSED, at once |
//! | SOCKS5: 6 of the 10 reply bytes, then close | ECONNREFUSED, at once |
//! | SOCKS5: valid replies dripped at 1 byte/s | ETIMEDOUT at `handshake_timeout_ms` |
//! | SOCKS5: never answers the greeting | ETIMEDOUT at `handshake_timeout_ms` |
//! | SOCKS5: answers the greeting, never answers the CONNECT | ETIMEDOUT at `connect_timeout_ms` |
//! | SOCKS5: RST (SO_LINGER 0 + close) after reading the greeting | ECONNRESET, at once |
//! | SOCKS5: valid but 300 ms before each reply, program gets SIGALRM every 10 ms (with and without SA_RESTART) | success (EINTR is retried inside the shim) |
//! | SOCKS5: never answers, program gets SIGALRM every 10 ms | ETIMEDOUT at `handshake_timeout_ms` (not EINTR, not earlier) |
//! | HTTP: `200` and the first tunnel bytes in one segment | success; those bytes are the program's first read |
//! | HTTP: `200` then header lines without end (or ending after 20 KiB) | ECONNREFUSED at 16 KiB of header, at once; memory stays bounded |
//! | HTTP: `407 Proxy Authentication Required` | EACCES, at once |
//! | SOCKS4: reply 0x5B (rejected or failed) | ECONNREFUSED, at once |
//!
//! "At once" is asserted as under 1000 ms (so it cannot be a timeout); a timeout is asserted
//! between its deadline − 50 ms and its deadline + 500 ms.

use std::process::Output;
use std::time::{Duration, Instant};

use chainsocks_core::proto::socks5::Method;
use e2e::*;

const CONNECT_MS: u64 = 1500;
const HANDSHAKE_MS: u64 = 2500;
/// A failure that is not a timeout must come faster than this.
const FAST_MS: u64 = 1000;
/// Tolerances around a deadline.
const EARLY_MS: u64 = 50;
const LATE_MS: u64 = 500;
/// Bound on a whole csclient run.
const T: Duration = Duration::from_secs(20);

/// A hostile proxy as the default chain, a good proxy (chain "good", by rule for `echo_b`),
/// and two echo origins: step 1 goes to `echo_a` through the hostile proxy, step 2 to
/// `echo_b` through the good one.
struct Setup {
    hostile: HostileProxy,
    good: HostileProxy,
    echo_a: Echo,
    echo_b: Echo,
    launch: Launch,
}

/// Call `netns()` first. `hostile_url` defaults to the hostile proxy's own URL.
fn setup(behavior: Behavior, hostile_url: Option<UrlOf>) -> Setup {
    let hostile = HostileProxy::start(behavior);
    let good = HostileProxy::start(Behavior::Working);
    let (echo_a, echo_b) = (Echo::start(), Echo::start());
    let url = hostile_url.map_or_else(|| hostile.url(), |f| f(&hostile));
    let launch = Launch::new(&format!(
        "connect_timeout_ms = {CONNECT_MS}\nhandshake_timeout_ms = {HANDSHAKE_MS}\n\
         proxy = [{url:?}]\n\
         [chains.good]\nproxy = [{:?}]\n\
         [[rule]]\ndest = \"127.0.0.1:{}\"\nchain = \"good\"\n",
        good.url(),
        echo_b.port()
    ));
    Setup {
        hostile,
        good,
        echo_a,
        echo_b,
        launch,
    }
}

/// `csclient seq STEP...` under the shim, in its own process group: on timeout the whole group
/// (launcher AND program) is killed, so a runaway program cannot hang the test (`run` kills
/// only the launcher, then waits for the pipes that the program still holds).
fn seq(l: &Launch, steps: &[String], extra: &[&str]) -> Output {
    use std::os::unix::process::CommandExt;
    use std::process::Stdio;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};
    let mut c = l.csclient();
    c.arg("seq").args(steps).args(extra);
    c.process_group(0)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let child = c
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {c:?}: {e}"));
    let pgid = child.id() as i32;
    let done = Arc::new(AtomicBool::new(false));
    let done2 = done.clone();
    let watchdog = std::thread::spawn(move || {
        let end = Instant::now() + T;
        while Instant::now() < end {
            if done2.load(Ordering::SeqCst) {
                return false;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        // SAFETY: kill(2) on the process group this test created.
        unsafe { libc::kill(-pgid, libc::SIGKILL) };
        true
    });
    let out = child.wait_with_output();
    done.store(true, Ordering::SeqCst);
    let killed = watchdog.join().unwrap_or(true);
    let out = out.unwrap_or_else(|e| panic!("wait: {e}"));
    assert!(!killed, "csclient killed after {T:?}: {}", show(&out));
    out
}

/// The text after `step=I ` in csclient's output.
fn step(o: &Output, i: usize) -> String {
    let prefix = format!("step={i} ");
    String::from_utf8_lossy(&o.stdout)
        .lines()
        .find_map(|l| l.strip_prefix(&prefix).map(str::to_owned))
        .unwrap_or_else(|| panic!("no step {i} in the output: {}", show(o)))
}

/// The `key=N` number in a line.
fn num(line: &str, key: &str) -> u64 {
    let k = format!("{key}=");
    line.split_whitespace()
        .find_map(|w| w.strip_prefix(&k))
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no {key}=N in {line:?}"))
}

/// When a failure must arrive.
#[derive(Clone, Copy, Debug)]
enum When {
    /// Under [`FAST_MS`].
    AtOnce,
    /// At this deadline (ms), within [`EARLY_MS`] / [`LATE_MS`].
    At(u64),
}

fn assert_when(line: &str, when: When, ctx: &str) {
    let ms = num(line, "ms");
    match when {
        When::AtOnce => assert!(ms < FAST_MS, "took {ms} ms, expected < {FAST_MS}: {ctx}"),
        When::At(d) => assert!(
            ms + EARLY_MS >= d && ms <= d + LATE_MS,
            "took {ms} ms, expected the deadline {d} ms (-{EARLY_MS}/+{LATE_MS}): {ctx}"
        ),
    }
}

fn step_to(echo: &Echo, opts: &str) -> String {
    format!("127.0.0.1,{}{opts}", echo.port())
}

/// Step 2 went through the good proxy to `echo_b` and the tunnel worked.
fn assert_program_kept_working(s: &Setup, o: &Output) {
    let second = step(o, 2);
    assert!(
        second.starts_with("ok ") && second.contains("echo=ok"),
        "second connection: {}\nshim log: {}",
        show(o),
        s.launch.log()
    );
    assert!(s.good.wait_finished(1, Duration::from_secs(5)));
    let good = s.good.sessions();
    assert_eq!(good.len(), 1, "{good:?}");
    assert_eq!(
        good.first().and_then(|g| g.target.clone()),
        Some(s.echo_b.addr().to_string())
    );
    assert_eq!(
        s.echo_b.peers(),
        good.iter()
            .filter_map(|g| g.upstream_local)
            .collect::<Vec<_>>(),
        "echo_b must see exactly the good proxy's upstream connection"
    );
}

/// Runs step 1 (hostile) then step 2 (good) and checks step 1 failed with `errno` at `when`,
/// the shim logged `reason`, nothing reached `echo_a` (no direct fallback), and step 2 worked.
fn failing_case(s: &Setup, errno: &str, reason: &str, when: When, extra: &[&str]) -> Output {
    let o = seq(
        &s.launch,
        &[step_to(&s.echo_a, ""), step_to(&s.echo_b, ",echo=64")],
        extra,
    );
    let first = step(&o, 1);
    let ctx = format!("{}\nshim log: {}", show(&o), s.launch.log());
    assert!(
        first.starts_with(&format!("errno={errno} ")),
        "expected errno={errno}: {ctx}"
    );
    assert_when(&first, when, &ctx);
    let log = s.launch.log();
    assert!(
        log.contains(&format!(
            "{} -> {} failed at hop 1",
            s.hostile.addr(),
            s.echo_a.addr()
        )) && log.contains(reason)
            && log.contains(&format!("({errno})")),
        "expected the shim to log {reason:?} ({errno}): {ctx}"
    );
    // No direct fallback: the only connections echo_a may have seen are the hostile proxy's own
    // upstream ones (a header that does end is followed by a tunnel on the proxy's side).
    assert!(s.hostile.wait_finished(1, Duration::from_secs(5)));
    let sessions = s.hostile.sessions();
    assert_eq!(sessions.len(), 1, "{sessions:?}");
    let upstream: Vec<_> = sessions.iter().filter_map(|h| h.upstream_local).collect();
    assert!(
        s.echo_a.peers().iter().all(|p| upstream.contains(p)),
        "the program reached the destination directly: {:?} (proxy upstream {upstream:?})",
        s.echo_a.peers()
    );
    eprintln!("measured: step 1 {first}");
    assert_program_kept_working(s, &o);
    assert!(!o.status.success(), "{}", show(&o)); // step 1 failed
    o
}

/// Step 1 through the hostile proxy must succeed, with `opts` (read/echo) checked by csclient.
fn succeeding_case(s: &Setup, opts: &str, extra: &[&str]) -> (Output, String) {
    let o = seq(
        &s.launch,
        &[step_to(&s.echo_a, opts), step_to(&s.echo_b, ",echo=64")],
        extra,
    );
    let first = step(&o, 1);
    let ctx = format!("{}\nshim log: {}", show(&o), s.launch.log());
    assert!(
        first.starts_with("ok ") && first.contains("echo=ok"),
        "expected success: {ctx}"
    );
    assert!(o.status.success(), "{ctx}");
    eprintln!("measured: step 1 {first}");
    assert!(
        s.launch
            .log()
            .contains(&format!("{} -> {} ok", s.hostile.addr(), s.echo_a.addr())),
        "{ctx}"
    );
    let sessions = s.hostile.sessions();
    assert_eq!(sessions.len(), 1, "{sessions:?}");
    let h = sessions.first().cloned();
    assert_eq!(
        h.as_ref().and_then(|h| h.target.clone()),
        Some(s.echo_a.addr().to_string())
    );
    // The tunnel reached echo_a from the proxy's upstream socket, not from the program.
    assert_eq!(
        s.echo_a.peers(),
        h.and_then(|h| h.upstream_local)
            .into_iter()
            .collect::<Vec<_>>(),
        "{ctx}"
    );
    assert_program_kept_working(s, &o);
    (o, first)
}

// ---------------------------------------------------------------------------------------------
// SOCKS5
// ---------------------------------------------------------------------------------------------

#[test]
fn socks5_close_after_greeting_is_econnrefused() {
    netns();
    let s = setup(Behavior::CloseAfterGreeting, None);
    failing_case(
        &s,
        "ECONNREFUSED",
        "greeting: proxy closed the connection during the handshake",
        When::AtOnce,
        &[],
    );
}

#[test]
fn socks5_wrong_version_is_econnrefused() {
    netns();
    let s = setup(Behavior::WrongVersion, None);
    failing_case(
        &s,
        "ECONNREFUSED",
        "greeting: protocol error: bad version byte 0x04 (expected 0x05)",
        When::AtOnce,
        &[],
    );
}

#[test]
fn socks5_no_acceptable_method_is_eacces() {
    netns();
    let s = setup(Behavior::NoAcceptableMethod, None);
    failing_case(
        &s,
        "EACCES",
        "greeting: proxy accepts none of our auth methods",
        When::AtOnce,
        &[],
    );
    let methods = s.hostile.sessions().first().and_then(|h| h.methods.clone());
    assert_eq!(methods, Some(vec![Method::NoAuth]));
}

#[test]
fn socks5_auth_rejected_is_eacces() {
    netns();
    let s = setup(
        Behavior::AuthRejected,
        Some(|h: &HostileProxy| h.url_with_auth("alice", "wrong")),
    );
    failing_case(
        &s,
        "EACCES",
        "auth: user name/password rejected (status 0x01)",
        When::AtOnce,
        &[],
    );
    let h = s.hostile.sessions().first().cloned();
    let h = h.unwrap_or_else(|| panic!("no session"));
    assert_eq!(h.methods, Some(vec![Method::NoAuth, Method::UserPass]));
    assert_eq!(h.credentials, Some((b"alice".to_vec(), b"wrong".to_vec())));
    assert_eq!(h.target, None, "no CONNECT after a rejected login");
}

#[test]
fn socks5_reply_with_atyp3_and_255_byte_name_succeeds() {
    netns();
    let s = setup(Behavior::ReplyAtyp3Name255, None);
    succeeding_case(&s, ",echo=1000", &[]);
}

/// How a test names the hostile proxy in its config.
type UrlOf = fn(&HostileProxy) -> String;

/// The hostile proxy's URL with pipelining on.
fn pipelined(h: &HostileProxy) -> String {
    format!("{}?pipeline=1", h.url())
}

/// The program's first read after connect returns the bytes the proxy sent right after its
/// success reply (in the reply's own segment): the shim read exactly the reply, no more.
fn extra_bytes_reach_the_program(s: &Setup) {
    let read = format!(",read={},echo=1000", EXTRA_TUNNEL_BYTES.len());
    let (_, first) = succeeding_case(s, &read, &[]);
    assert!(
        first.contains(&format!(
            " read={} ",
            String::from_utf8_lossy(EXTRA_TUNNEL_BYTES)
        )),
        "{first}\nshim log: {}",
        s.launch.log()
    );
}

#[test]
fn socks5_tunnel_bytes_in_the_reply_segment_reach_the_program() {
    netns();
    for bound in [Bound::Ipv4, Bound::Ipv6, Bound::ShortName] {
        let s = setup(
            Behavior::ReplyWithExtra {
                bound,
                together: false,
            },
            None,
        );
        extra_bytes_reach_the_program(&s);
    }
}

/// Pipelined: the method selection, the success reply (the shortest valid one, 8 bytes: a
/// 1-byte bound name) and tunnel bytes arrive in ONE segment.
#[test]
fn socks5_pipelined_replies_and_tunnel_bytes_in_one_segment_reach_the_program() {
    netns();
    for bound in [Bound::ShortName, Bound::Ipv4] {
        let s = setup(
            Behavior::ReplyWithExtra {
                bound,
                together: true,
            },
            Some(pipelined),
        );
        extra_bytes_reach_the_program(&s);
    }
}

/// Every byte of the method selection and of the reply in its own segment, 5 ms apart: the
/// shim's reads of the length still needed reassemble them (safe and pipelined).
#[test]
fn socks5_replies_split_into_one_byte_segments_succeed() {
    netns();
    for url in [None, Some(pipelined as UrlOf)] {
        let s = setup(Behavior::Drip { bytes_per_sec: 200 }, url);
        succeeding_case(&s, ",echo=1000", &[]);
        let sent = s.hostile.sessions().first().map_or(0, |h| h.sent);
        assert_eq!(sent, 12, "2 + 10 bytes, one per segment");
    }
}

#[test]
fn socks5_unknown_atyp_is_econnrefused() {
    netns();
    let s = setup(Behavior::UnknownAtyp, None);
    failing_case(
        &s,
        "ECONNREFUSED",
        "request: protocol error: unknown address type 0x09",
        When::AtOnce,
        &[],
    );
}

#[test]
fn socks5_truncated_reply_then_close_is_econnrefused() {
    netns();
    let s = setup(Behavior::TruncatedReplyThenClose, None);
    failing_case(
        &s,
        "ECONNREFUSED",
        "request: proxy closed the connection during the handshake",
        When::AtOnce,
        &[],
    );
}

#[test]
fn socks5_drip_one_byte_per_second_times_out_at_the_handshake_deadline() {
    netns();
    let s = setup(Behavior::Drip { bytes_per_sec: 1 }, None);
    failing_case(
        &s,
        "ETIMEDOUT",
        "request: timed out",
        When::At(HANDSHAKE_MS),
        &[],
    );
    // The method selection (2 bytes) was dripped and accepted; the reply was still dripping.
    let h = s.hostile.sessions().first().cloned();
    let sent = h.map_or(0, |h| h.sent);
    assert!((2..12).contains(&sent), "sent {sent}");
}

#[test]
fn socks5_never_answering_the_greeting_times_out_at_the_handshake_deadline() {
    netns();
    let s = setup(Behavior::NeverAnswer, None);
    failing_case(
        &s,
        "ETIMEDOUT",
        "greeting: timed out",
        When::At(HANDSHAKE_MS),
        &[],
    );
}

#[test]
fn socks5_never_answering_the_connect_times_out_at_the_connect_timeout() {
    netns();
    let s = setup(Behavior::NeverAnswerRequest, None);
    failing_case(
        &s,
        "ETIMEDOUT",
        "request: timed out",
        When::At(CONNECT_MS),
        &[],
    );
}

#[test]
fn socks5_reset_mid_handshake_is_econnreset() {
    netns();
    let s = setup(Behavior::ResetMidHandshake, None);
    failing_case(
        &s,
        "ECONNRESET",
        "greeting: Connection reset by peer",
        When::AtOnce,
        &[],
    );
}

// ---------------------------------------------------------------------------------------------
// HTTP CONNECT, SOCKS4
// ---------------------------------------------------------------------------------------------

#[test]
fn http_200_with_extra_bytes_delivers_them_as_the_first_tunnel_data() {
    netns();
    let s = setup(Behavior::HttpOkWithExtra, None);
    let read = format!(",read={},echo=1000", EXTRA_TUNNEL_BYTES.len());
    let (_, first) = succeeding_case(&s, &read, &[]);
    assert!(
        first.contains(&format!(
            " read={} ",
            String::from_utf8_lossy(EXTRA_TUNNEL_BYTES)
        )),
        "{first}"
    );
}

/// The huge header fails fast with ECONNREFUSED and the program's peak memory stays within
/// 4 MiB of a run that made only a good connection.
fn huge_header(end_after: Option<usize>) {
    let s = setup(Behavior::HttpHugeHeader { end_after }, None);
    let o = failing_case(
        &s,
        "ECONNREFUSED",
        "request: protocol error: HTTP response header over 16384 bytes",
        When::AtOnce,
        &[],
    );
    let hostile_rss = num(&String::from_utf8_lossy(&o.stdout), "maxrss_kb");
    let base = seq(&s.launch, &[step_to(&s.echo_b, ",echo=64")], &[]);
    assert!(base.status.success(), "{}", show(&base));
    let base_rss = num(&String::from_utf8_lossy(&base.stdout), "maxrss_kb");
    assert!(
        hostile_rss <= base_rss + 4096,
        "peak RSS {hostile_rss} KiB vs {base_rss} KiB for a good connection"
    );
    assert!(s.hostile.wait_finished(1, Duration::from_secs(5)));
    let h = s.hostile.sessions().first().cloned();
    let h = h.unwrap_or_else(|| panic!("no session"));
    eprintln!(
        "huge header (end_after {end_after:?}): proxy sent {} bytes before the client went away \
         (send failed: {}); peak RSS {hostile_rss} KiB, good-only run {base_rss} KiB",
        h.sent, h.send_failed
    );
    assert!(h.sent > 16 * 1024, "{h:?}");
    if end_after.is_none() {
        assert!(!h.tunneled && h.send_failed, "{h:?}");
    }
}

#[test]
fn http_never_ending_header_is_econnrefused_with_bounded_memory() {
    netns();
    huge_header(None);
}

#[test]
fn http_header_ending_after_20k_is_econnrefused() {
    netns();
    huge_header(Some(20 * 1024));
}

#[test]
fn http_407_is_eacces() {
    netns();
    let s = setup(Behavior::Http407, None);
    failing_case(
        &s,
        "EACCES",
        "request: HTTP proxy answered 407",
        When::AtOnce,
        &[],
    );
    let h = s.hostile.sessions().first().cloned();
    assert_eq!(h.and_then(|h| h.target), Some(s.echo_a.addr().to_string()));
}

#[test]
fn socks4_rejected_0x5b_is_econnrefused() {
    netns();
    let s = setup(Behavior::Socks4Rejected, None);
    failing_case(
        &s,
        "ECONNREFUSED",
        "request: SOCKS4 reply 0x5b",
        When::AtOnce,
        &[],
    );
}

// ---------------------------------------------------------------------------------------------
// Signals during a handshake
// ---------------------------------------------------------------------------------------------

/// A valid proxy that waits 300 ms before each of its 2 replies, while the program gets
/// SIGALRM every 10 ms: the connect succeeds, after ~600 ms and dozens of signals.
fn slow_proxy_under_signals(restart: &str) {
    let s = setup(
        Behavior::SlowValid {
            delay: Duration::from_millis(300),
        },
        None,
    );
    let (o, first) = succeeding_case(&s, ",echo=1000", &["--signals", restart]);
    let ms = num(&first, "ms");
    let sigs = num(&first, "signals");
    assert!(
        (550..HANDSHAKE_MS).contains(&ms),
        "took {ms} ms: {}",
        show(&o)
    );
    assert!(
        sigs >= 20,
        "only {sigs} signals during the handshake: {}",
        show(&o)
    );
}

#[test]
fn slow_proxy_with_sigalrm_every_10ms_without_sa_restart_succeeds() {
    netns();
    slow_proxy_under_signals("norestart");
}

#[test]
fn slow_proxy_with_sigalrm_every_10ms_with_sa_restart_succeeds() {
    netns();
    slow_proxy_under_signals("restart");
}

#[test]
fn signals_neither_cut_short_nor_extend_the_handshake_deadline() {
    netns();
    let s = setup(Behavior::NeverAnswer, None);
    let o = failing_case(
        &s,
        "ETIMEDOUT",
        "greeting: timed out",
        When::At(HANDSHAKE_MS),
        &["--signals", "norestart"],
    );
    let sigs = num(&step(&o, 1), "signals");
    assert!(sigs >= 100, "only {sigs} signals: {}", show(&o));
}

// ---------------------------------------------------------------------------------------------
// The fixture itself
// ---------------------------------------------------------------------------------------------

#[test]
fn hostile_proxy_drop_stops_its_threads_and_connections() {
    use std::io::Read;
    netns();
    let p = HostileProxy::start(Behavior::NeverAnswer);
    let mut c = std::net::TcpStream::connect(p.addr()).unwrap_or_else(|e| panic!("{e}"));
    std::io::Write::write_all(&mut c, &[5, 1, 0]).unwrap_or_else(|e| panic!("{e}"));
    assert!(wait_until(Duration::from_secs(5), || {
        p.sessions()
            .first()
            .is_some_and(|s| s.methods == Some(vec![Method::NoAuth]))
    }));
    assert_eq!(
        p.sessions().first().map(|s| s.received.clone()),
        Some(vec![5, 1, 0])
    );
    let t0 = Instant::now();
    drop(p);
    assert!(t0.elapsed() < Duration::from_secs(2), "{:?}", t0.elapsed());
    c.set_read_timeout(Some(Duration::from_secs(2)))
        .unwrap_or_else(|e| panic!("{e}"));
    let mut b = [0u8; 1];
    assert!(
        matches!(c.read(&mut b), Ok(0)),
        "the held connection is closed"
    );
}
