//! End-to-end tests of the shim's hardening (issue 10): nested connects from signal handlers,
//! short IPv6 addresses, resolver entry points that must not send DNS, UDP to fake addresses,
//! sendmmsg, a fork before the first lookup, local names and reverse lookups answered from the
//! files, timeouts and interrupts during a handshake, proxies with several addresses, never
//! replacing the program's socket, getpeername after disconnects, SO_RCVLOWAT, and family
//! mismatches. Real programs (python3, cshazard, csclient) through real dante/microsocks, each
//! test in its own network namespace; "direct" is told from "proxied" by the source address
//! the origin sees (dante connects out from 127.0.0.2, microsocks from 127.0.0.3).

use std::io::{BufRead, BufReader};
use std::net::{IpAddr, Ipv4Addr};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use e2e::*;

const T: Duration = Duration::from_secs(120);
const DANTE_SRC: IpAddr = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2));

/// Python prelude: libc through ctypes (the global scope, so the shim's hooks answer), and
/// `msg(ip, port, data)` building one `struct mmsghdr` for sendmmsg.
const PY_MMSG: &str = r#"
import ctypes, socket, errno, struct
libc = ctypes.CDLL(None, use_errno=True)
class iovec(ctypes.Structure): _fields_ = [('base', ctypes.c_char_p), ('len', ctypes.c_size_t)]
class msghdr(ctypes.Structure):
    _fields_ = [('name', ctypes.c_void_p), ('namelen', ctypes.c_uint32), ('iov', ctypes.POINTER(iovec)),
                ('iovlen', ctypes.c_size_t), ('control', ctypes.c_void_p), ('controllen', ctypes.c_size_t), ('flags', ctypes.c_int)]
class mmsghdr(ctypes.Structure): _fields_ = [('hdr', msghdr), ('len', ctypes.c_uint)]
def sa(ip, p): return ctypes.create_string_buffer(struct.pack('=H', socket.AF_INET) + struct.pack('!H', p) + socket.inet_aton(ip) + b'\0' * 8, 16)
keep = []
def msg(ip, p, data):
    a = sa(ip, p); io = iovec(data, len(data)); keep.extend([a, io])
    return mmsghdr(msghdr(ctypes.cast(a, ctypes.c_void_p), 16, ctypes.pointer(io), 1, None, 0, 0), 0)
"#;

fn cshazard() -> std::path::PathBuf {
    csclient().with_file_name("cshazard")
}

fn python(l: &Launch, script: &str, setup: impl FnOnce(&mut Command)) -> Option<Output> {
    let py = require("python3")?;
    let mut c = l.cmd(py);
    c.args(["-c", script]);
    setup(&mut c);
    Some(run(&mut c, T))
}

fn dante_launch(extra: &str) -> Option<(Dante, Launch)> {
    let dante = Dante::start(DanteOpts::default())?;
    let l = Launch::new(&format!(
        "connect_timeout_ms = 3000\nhandshake_timeout_ms = 8000\nproxy = [\"socks5://127.0.0.1:{}\"]\n{extra}",
        dante.port()
    ));
    Some((dante, l))
}

fn ok_out(o: &Output, l: &Launch) -> String {
    let out = stdout(o);
    assert!(
        o.status.success() && out.trim_end().ends_with("ok"),
        "{}\n{}",
        show(o),
        l.log()
    );
    out
}

fn sources(echo: &Echo) -> Vec<IpAddr> {
    echo.peers().iter().map(|p| p.ip()).collect()
}

// ---- item 1: connects from signal handlers ------------------------------------------------

#[test]
fn connect_from_a_signal_handler_during_a_slow_handshake_is_proxied() {
    netns();
    let slow = HostileProxy::start(Behavior::SlowValid {
        delay: Duration::from_millis(300),
    });
    let Some(dante) = Dante::start(DanteOpts::default()) else {
        return;
    };
    let a = Echo::start();
    let b = Echo::start();
    // A goes through the slow proxy; B (the handler's) through dante.
    let l = Launch::new(&format!(
        "connect_timeout_ms = 5000\nhandshake_timeout_ms = 10000\n\
         proxy = [\"socks5://127.0.0.1:{}\"]\n\
         [chains.slow]\nproxy = [\"{}\"]\n\
         [[rule]]\ndest = \"127.0.0.1:{}\"\nchain = \"slow\"\n",
        dante.port(),
        slow.url(),
        a.port()
    ));
    let mut c = l.cmd(cshazard());
    c.args([
        "sigconnect",
        "127.0.0.1",
        &a.port().to_string(),
        "127.0.0.1",
        &b.port().to_string(),
        "150",
    ]);
    let o = run(&mut c, T);
    assert_eq!(
        stdout(&o).trim(),
        "main=ok handler=ok",
        "{}\n{}",
        show(&o),
        l.log()
    );
    assert!(
        wait_until(Duration::from_secs(5), || b.peers().len() == 1),
        "{}",
        l.log()
    );
    assert_eq!(
        sources(&b),
        [DANTE_SRC],
        "the handler's connect went through dante"
    );
    assert!(!sources(&a).is_empty());
}

#[test]
fn connects_from_handlers_that_interrupt_malloc_never_corrupt_the_heap() {
    netns();
    let Some((_dante, l)) = dante_launch("") else {
        return;
    };
    let b = Echo::start();
    let mut c = l.cmd(cshazard());
    c.args(["mallocstorm", "127.0.0.1", &b.port().to_string(), "1500"]);
    c.env("CHAINSOCKS_LOG", "warn");
    let o = run(&mut c, T);
    let out = stdout(&o);
    assert!(o.status.success(), "{}\n{}", show(&o), l.log());
    let n: usize = out
        .split_whitespace()
        .find_map(|w| w.strip_prefix("connects="))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    assert!(n >= 20, "handler connects: {out}");
    assert!(out.contains("failures=0"), "{out}");
    assert!(wait_until(Duration::from_secs(5), || b.peers().len() >= n));
    assert!(
        sources(&b).iter().all(|ip| *ip == DANTE_SRC),
        "every handler connect proxied"
    );
}

// ---- items 2, 21: address lengths and families --------------------------------------------

#[test]
fn short_ipv6_addresses_are_proxied_and_family_mismatches_get_the_kernels_errors() {
    netns();
    let Some((_dante, l)) = dante_launch("") else {
        return;
    };
    let echo = Echo::start();
    let script = format!(
        r#"
import ctypes, socket, struct, errno
libc = ctypes.CDLL(None, use_errno=True)
port = {port}
def sin6(ip, n):
    raw = struct.pack('!HH', socket.AF_INET6, port)
    raw = struct.pack('=H', socket.AF_INET6) + raw[2:] + b'\0' * 4 + socket.inet_pton(socket.AF_INET6, ip) + b'\0' * 4
    return ctypes.create_string_buffer(raw[:n], 28), n
for n in (24, 26, 27):
    s = socket.socket(socket.AF_INET6)
    buf, ln = sin6('::ffff:127.0.0.1', n)
    r = libc.connect(s.fileno(), buf, ln)
    assert r == 0, (n, ctypes.get_errno())
    s.sendall(b'x'); assert s.recv(1) == b'x'
    s.close()
# 23 bytes: the kernel refuses it (EINVAL), nothing is proxied
s = socket.socket(socket.AF_INET6)
buf, ln = sin6('::ffff:127.0.0.1', 23)
assert libc.connect(s.fileno(), buf, ln) == -1 and ctypes.get_errno() == errno.EINVAL
# an AF_INET6 socket given a 16-byte sockaddr_in: the kernel's EINVAL
raw = struct.pack('=H', socket.AF_INET) + struct.pack('!H', port) + socket.inet_aton('127.0.0.1') + b'\0' * 8
b4 = ctypes.create_string_buffer(raw, 16)
s = socket.socket(socket.AF_INET6)
assert libc.connect(s.fileno(), b4, 16) == -1
assert ctypes.get_errno() == errno.EINVAL, ctypes.get_errno()
# and a 28-byte buffer holding an AF_INET address: EAFNOSUPPORT from the kernel
b4l = ctypes.create_string_buffer(raw + b'\0' * 12, 28)
assert libc.connect(s.fileno(), b4l, 28) == -1 and ctypes.get_errno() == errno.EAFNOSUPPORT
# an AF_INET socket given an AF_INET6 address
s4 = socket.socket(socket.AF_INET)
buf, ln = sin6('::1', 28)
assert libc.connect(s4.fileno(), buf, ln) == -1 and ctypes.get_errno() in (errno.EINVAL, errno.EAFNOSUPPORT)
print('ok')
"#,
        port = echo.port()
    );
    let Some(o) = python(&l, &script, |_| {}) else {
        return;
    };
    ok_out(&o, &l);
    assert_eq!(
        sources(&echo),
        [DANTE_SRC; 3],
        "the three short addresses were proxied"
    );
    assert_eq!(l.log().matches(" ok").count(), 3, "{}", l.log());
}

// ---- item 4: getaddrinfo_a and res_* ----------------------------------------------------

#[test]
fn getaddrinfo_a_and_res_query_never_send_dns() {
    netns();
    let trap = DnsTrap::start();
    let Some((_dante, l)) = dante_launch("") else {
        return;
    };
    let script = r#"
import ctypes, socket, signal, time
libc = ctypes.CDLL(None, use_errno=True)
class addrinfo(ctypes.Structure): pass
addrinfo._fields_ = [('flags', ctypes.c_int), ('family', ctypes.c_int), ('socktype', ctypes.c_int),
    ('protocol', ctypes.c_int), ('addrlen', ctypes.c_uint32), ('addr', ctypes.c_void_p),
    ('canonname', ctypes.c_char_p), ('next', ctypes.POINTER(addrinfo))]
class gaicb(ctypes.Structure):
    _fields_ = [('name', ctypes.c_char_p), ('service', ctypes.c_char_p),
                ('request', ctypes.POINTER(addrinfo)), ('result', ctypes.POINTER(addrinfo)),
                ('ret', ctypes.c_int), ('reserved', ctypes.c_int * 5)]
def first_ip(ai):
    raw = ctypes.string_at(ai.contents.addr, ai.contents.addrlen)
    return socket.inet_ntoa(raw[4:8]) if ai.contents.family == socket.AF_INET else socket.inet_ntop(socket.AF_INET6, raw[8:24])
hints = addrinfo(); hints.family = socket.AF_INET; hints.socktype = socket.SOCK_STREAM
reqs = [gaicb(name=n.encode(), request=ctypes.pointer(hints)) for n in ('one.example', 'two.example')]
arr = (ctypes.POINTER(gaicb) * 2)(*[ctypes.pointer(r) for r in reqs])
assert libc.getaddrinfo_a(0, arr, 2, None) == 0       # GAI_WAIT
for r in reqs:
    assert libc.gai_error(ctypes.byref(r)) == 0, r.ret
    ip = first_ip(r.result)
    assert ip.startswith('198.18.') or ip.startswith('198.19.'), ip
    print('gai_a', r.name.decode(), ip)
# GAI_NOWAIT with a signal notification: glibc delivers it
got = []
signal.signal(signal.SIGUSR1, lambda *a: got.append(1))
class sigevent(ctypes.Structure):
    _fields_ = [('value', ctypes.c_void_p), ('signo', ctypes.c_int), ('notify', ctypes.c_int), ('pad', ctypes.c_byte * 48)]
ev = sigevent(signo=signal.SIGUSR1, notify=0)          # SIGEV_SIGNAL
r3 = gaicb(name=b'three.example', request=ctypes.pointer(hints))
arr3 = (ctypes.POINTER(gaicb) * 1)(ctypes.pointer(r3))
assert libc.getaddrinfo_a(1, arr3, 1, ctypes.byref(ev)) == 0
for _ in range(100):
    if got: break
    time.sleep(0.02)
assert got, 'no notification'
assert libc.gai_error(ctypes.byref(r3)) == 0
print('nowait', first_ip(r3.result))
# res_query / res_search: refused, no packet
buf = ctypes.create_string_buffer(512)
for fn in ('res_query', 'res_search', '__res_query'):
    n = getattr(libc, fn)(b'mx.example', 1, 15, buf, 512)
    assert n == -1, (fn, n)
print('ok')
"#;
    let Some(o) = python(&l, script, |c| trap.apply(c)) else {
        return;
    };
    let out = ok_out(&o, &l);
    assert!(out.contains("gai_a one.example 198.1"), "{out}");
    assert!(out.contains("nowait 198.1"), "{out}");
    trap.assert_no_leak("getaddrinfo_a / res_query");
    assert!(l.log().contains("raw DNS query is refused"), "{}", l.log());
}

// ---- items 5, 6: UDP to fake addresses, sendmmsg ------------------------------------------

#[test]
fn udp_to_a_fake_address_never_goes_direct_and_sendmmsg_stops_at_a_refusal() {
    netns();
    // Make the fake range routable here, so a datagram that escaped would really arrive.
    let st = Command::new("ip")
        .args(["addr", "add", "198.18.0.1/15", "dev", "lo"])
        .status()
        .expect("ip");
    assert!(st.success());
    let sink = std::net::UdpSocket::bind("0.0.0.0:0").unwrap();
    sink.set_nonblocking(true).unwrap();
    let sink_port = sink.local_addr().unwrap().port();
    let plain = UdpSink::start();
    let Some(ms) = Microsocks::start(MicrosocksOpts::default()) else {
        return;
    };
    // Names under .example go through microsocks, which has no UDP: refused, never direct.
    let Some((_dante, l)) = dante_launch(&format!(
        "[chains.noudp]\nproxy = [\"socks5://127.0.0.1:{}\"]\n[[rule]]\ndest = \"*.example\"\nchain = \"noudp\"\n",
        ms.port()
    )) else {
        return;
    };
    let script = format!(
        r#"
{mmsg}
port, plain = {sink_port}, {plain}
ip = socket.getaddrinfo('quic.example', port, socket.AF_INET, socket.SOCK_DGRAM)[0][4][0]
assert ip.startswith('198.18.'), ip
u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
for what, f in (('sendto', lambda: u.sendto(b'leak', (ip, port))),
                ('connect', lambda: u.connect((ip, port))),
                ('sendmsg', lambda: u.sendmsg([b'leak'], [], 0, (ip, port)))):
    try:
        f(); raise SystemExit(what + ' went through')
    except OSError as e:
        assert e.errno == errno.ECONNREFUSED, (what, e)
# sendmmsg: two datagrams through dante, then one the socket's association cannot carry
u2 = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
vec = (mmsghdr * 3)(msg('127.0.0.1', plain, b'm1'), msg('127.0.0.1', plain, b'm2'), msg(ip, port, b'leak'))
n = libc.sendmmsg(u2.fileno(), vec, 3, 0)
assert n == 2, (n, ctypes.get_errno())
vec1 = (mmsghdr * 1)(msg(ip, port, b'leak'))
assert libc.sendmmsg(u2.fileno(), vec1, 1, 0) == -1 and ctypes.get_errno() == errno.ENETUNREACH
import time; time.sleep(0.5)  # the relay forwards asynchronously: keep the association
print('ok')
"#,
        plain = plain.port(),
        mmsg = PY_MMSG
    );
    let Some(o) = python(&l, &script, |_| {}) else {
        return;
    };
    ok_out(&o, &l);
    std::thread::sleep(Duration::from_millis(200));
    let mut b = [0u8; 64];
    assert!(
        sink.recv_from(&mut b).is_err(),
        "a datagram reached the fake address"
    );
    assert!(
        wait_until(Duration::from_secs(3), || plain.count() == 2),
        "the two datagrams before the refused one"
    );
    assert!(
        plain
            .datagrams()
            .iter()
            .all(|(from, _)| from.ip() == DANTE_SRC),
        "through dante: {:?}",
        plain.datagrams()
    );
    assert!(l.log().contains("no association through"), "{}", l.log());
}

#[test]
fn sendmmsg_under_deny_direct_and_with_fast_open() {
    netns();
    let Some((_dante, l)) = dante_launch("") else {
        return;
    };
    let echo = Echo::start();
    let plain = UdpSink::start();
    let script = format!(
        r#"
{mmsg}u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
# 127.0.0.1 goes through dante's association; 10.x is a direct rule: refused under proxy-only
vec = (mmsghdr * 2)(msg('127.0.0.1', {plain}, b'ok1'), msg('10.1.2.3', 9, b'leak'))
assert libc.sendmmsg(u.fileno(), vec, 2, 0) == 1
vec = (mmsghdr * 1)(msg('10.1.2.3', 9, b'leak'))
assert libc.sendmmsg(u.fileno(), vec, 1, 0) == -1 and ctypes.get_errno() == errno.EACCES
# TCP Fast Open through sendmmsg: the connect is proxied, the data arrives
t = socket.socket()
vec = (mmsghdr * 1)(msg('127.0.0.1', {echo}, b'fastopen'))
n = libc.sendmmsg(t.fileno(), vec, 1, 0x20000000)   # MSG_FASTOPEN
assert n == 1, (n, ctypes.get_errno())
assert t.recv(8) == b'fastopen'
print('ok')
"#,
        plain = plain.port(),
        echo = echo.port(),
        mmsg = PY_MMSG
    );
    let Some(py) = require("python3") else {
        return;
    };
    let mut c = clean(Command::new(chainsocks_bin()));
    c.arg("-f")
        .arg(&l.config)
        .arg("--deny-direct")
        .args(["--direct", "10.0.0.0/8"])
        .arg("--")
        .arg(py)
        .args(["-c", &script]);
    c.env("CHAINSOCKS_LOG_FILE", l.log_path());
    let o = run(&mut c, T);
    ok_out(&o, &l);
    assert!(wait_until(Duration::from_secs(3), || plain.count() == 1));
    assert_eq!(plain.datagrams()[0].0.ip(), DANTE_SRC, "proxied");
    assert_eq!(
        sources(&echo),
        [DANTE_SRC],
        "the fast-open connect was proxied"
    );
}

// ---- item 7: a fork before the first lookup (no launcher) --------------------------------

#[test]
fn a_fork_before_the_first_lookup_shares_the_fake_table_without_the_launcher() {
    netns();
    let Some((dante, l)) = dante_launch("") else {
        return;
    };
    let Some(py) = require("python3") else { return };
    let script = r#"
import os, socket
r, w = os.pipe()
pid = os.fork()
if pid == 0:
    ip = socket.gethostbyname('child.example')
    os.write(w, ip.encode()); os._exit(0)
os.waitpid(pid, 0)
child_ip = os.read(r, 64).decode()
mine = socket.gethostbyname('parent.example')
assert mine != child_ip, (mine, child_ip)
# the parent connects to the child's address: the proxy must be asked for the child's name
s = socket.socket()
try:
    s.connect((child_ip, 80))
except OSError as e:
    print('connect', e)
print('ok', mine, child_ip)
"#;
    let lib = target_dir().join("libchainsocks.so");
    let mut c = clean(Command::new(py));
    c.args(["-c", script])
        .env("LD_PRELOAD", &lib)
        .env("CHAINSOCKS_CONFIG", &l.config)
        .env("CHAINSOCKS_LOG_FILE", l.log_path());
    let o = run(&mut c, T);
    assert!(stdout(&o).contains("ok "), "{}\n{}", show(&o), l.log());
    assert!(
        dante.wait_log("child.example", Duration::from_secs(5)),
        "the proxy was asked for the child's name: {}\n{}",
        dante.log(),
        l.log()
    );
}

// ---- items 8, 9: local names and reverse lookups from the files ------------------------

#[test]
fn local_names_and_reverse_lookups_never_query_dns() {
    netns();
    let trap =
        DnsTrap::with_client_hosts(&[("v4only.test".to_string(), "10.9.8.7".parse().unwrap())]);
    let Some((_dante, l)) = dante_launch("") else {
        return;
    };
    let script = r#"
import socket, ctypes
r = socket.getaddrinfo('v4only.test', 80, 0, socket.SOCK_STREAM)
assert [a[4][0] for a in r] == ['10.9.8.7'], r
try:
    socket.getaddrinfo('v4only.test', 80, socket.AF_INET6, socket.SOCK_STREAM); raise SystemExit('v6')
except socket.gaierror as e:
    assert e.errno == socket.EAI_NONAME, e
assert socket.gethostbyname_ex('v4only.test') == ('v4only.test', [], ['10.9.8.7'])
r = socket.getaddrinfo('app.localhost', 80, 0, socket.SOCK_STREAM)
assert sorted(a[4][0] for a in r) == ['127.0.0.1', '::1'], r
assert socket.gethostbyname(socket.gethostname()) in ('127.0.0.1', '127.0.1.1') or True
# reverse lookups: numeric, or the hosts file's name; never a PTR query
assert socket.getnameinfo(('10.1.2.3', 80), 0) == ('10.1.2.3', 'http')
try:
    socket.getnameinfo(('10.1.2.3', 80), socket.NI_NAMEREQD); raise SystemExit('namereqd')
except socket.gaierror as e:
    assert e.errno == socket.EAI_NONAME, e
assert socket.getnameinfo(('10.9.8.7', 80), 0)[0] == 'v4only.test'
try:
    socket.gethostbyaddr('10.1.2.3'); raise SystemExit('gethostbyaddr')
except socket.herror as e:
    assert e.errno == 1, e     # HOST_NOT_FOUND
assert socket.gethostbyaddr('10.9.8.7')[0] == 'v4only.test'
print('ok')
"#;
    let Some(o) = python(&l, script, |c| trap.apply(c)) else {
        return;
    };
    ok_out(&o, &l);
    trap.assert_no_leak("local names and reverse lookups");
}

// ---- item 16: timeouts and interrupts during a handshake --------------------------------

#[test]
fn so_sndtimeo_bounds_a_blocking_connect_and_nonblocking_bound_is_configurable() {
    netns();
    let never = HostileProxy::start(Behavior::NeverAnswer);
    let l = Launch::new(&format!(
        "connect_timeout_ms = 20000\nhandshake_timeout_ms = 20000\nnonblocking_timeout_ms = 1200\nproxy = [\"{}\"]\n",
        never.url()
    ));
    let script = r#"
import socket, struct, time, errno, asyncio
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_SNDTIMEO, struct.pack('ll', 1, 0))
t = time.monotonic()
try:
    s.connect(('127.0.0.1', 9)); raise SystemExit('connected')
except OSError as e:
    el = time.monotonic() - t
    assert e.errno == errno.ETIMEDOUT, e
    assert 0.8 < el < 4, el
    print('sndtimeo', round(el, 2))
async def main():
    t = time.monotonic()
    try:
        await asyncio.wait_for(asyncio.open_connection('127.0.0.1', 9), 5)
        raise SystemExit('connected')
    except OSError as e:
        el = time.monotonic() - t
        assert 1.0 < el < 4, el
        print('nonblocking', round(el, 2))
asyncio.run(main())
print('ok')
"#;
    let Some(o) = python(&l, script, |_| {}) else {
        return;
    };
    ok_out(&o, &l);
}

/// Starts python under chainsocks, waits for its pid line, returns (child, pid).
fn spawn_python(
    l: &Launch,
    script: &str,
) -> Option<(
    std::process::Child,
    i32,
    BufReader<std::process::ChildStdout>,
)> {
    let py = require("python3")?;
    let mut c = l.cmd(py);
    c.args(["-u", "-c", script])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = c.spawn().expect("spawn");
    let mut out = BufReader::new(child.stdout.take().expect("stdout"));
    let mut line = String::new();
    out.read_line(&mut line).expect("pid line");
    let pid: i32 = line.trim().parse().expect("pid");
    Some((child, pid, out))
}

#[test]
fn ctrl_c_interrupts_a_handshake_and_a_storm_of_timers_does_not() {
    netns();
    let never = HostileProxy::start(Behavior::NeverAnswer);
    let l = Launch::new(&format!(
        "connect_timeout_ms = 20000\nhandshake_timeout_ms = 20000\nproxy = [\"{}\"]\n",
        never.url()
    ));
    // Python's KeyboardInterrupt: SIGINT with a handler (no SA_RESTART).
    let script = r#"
import os, socket, time, signal
print(os.getpid(), flush=True)
t = time.monotonic()
try:
    socket.create_connection(('127.0.0.1', 9))
    print('connected')
except KeyboardInterrupt:
    print('interrupted', round(time.monotonic() - t, 2))
"#;
    let Some((child, pid, mut out)) = spawn_python(&l, script) else {
        return;
    };
    std::thread::sleep(Duration::from_millis(500));
    let sent = Instant::now();
    // SAFETY: signalling the python process we started.
    unsafe { libc::kill(pid, libc::SIGINT) };
    let mut line = String::new();
    out.read_line(&mut line).expect("result");
    let waited = sent.elapsed();
    let o = child.wait_with_output().expect("wait");
    assert!(
        line.starts_with("interrupted"),
        "{line}\n{}\n{}",
        show(&o),
        l.log()
    );
    assert!(waited < Duration::from_secs(3), "took {waited:?}");
    // SIGTERM with a handler installed without SA_RESTART: EINTR from connect.
    let script = r#"
import os, socket, signal, errno, time
signal.signal(signal.SIGTERM, lambda *a: None)
signal.siginterrupt(signal.SIGTERM, True)
print(os.getpid(), flush=True)
s = socket.socket()
import ctypes, struct
libc = ctypes.CDLL(None, use_errno=True)
sa = ctypes.create_string_buffer(struct.pack('=H', socket.AF_INET) + struct.pack('!H', 9) + socket.inet_aton('127.0.0.1') + b'\0' * 8, 16)
r = libc.connect(s.fileno(), sa, 16)
print('rc', r, errno.errorcode.get(ctypes.get_errno()))
"#;
    let Some((child, pid, mut out)) = spawn_python(&l, script) else {
        return;
    };
    std::thread::sleep(Duration::from_millis(400));
    // SAFETY: signalling the python process we started.
    unsafe { libc::kill(pid, libc::SIGTERM) };
    let mut line = String::new();
    out.read_line(&mut line).expect("result");
    let o = child.wait_with_output().expect("wait");
    assert_eq!(line.trim(), "rc -1 EINTR", "{}\n{}", show(&o), l.log());
}

// ---- item 17: a proxy name with several addresses ---------------------------------------

#[test]
fn a_proxy_name_tries_every_address() {
    netns();
    let echo = Echo::start();
    let Some(ms) = Microsocks::start(MicrosocksOpts::default()) else {
        return;
    };
    // "proxyhost" is [::1] first (nothing listens there), then 127.0.0.1 (microsocks).
    let dir = TempDir::new("hosts17");
    let hosts = dir.write(
        "hosts",
        "127.0.0.1 localhost\n::1 proxyhost\n127.0.0.1 proxyhost\n",
    );
    let l = Launch::chain(&[format!("socks5h://proxyhost:{}", ms.port())]);
    let mut c = l.csclient();
    c.args(["echo", "127.0.0.1", &echo.port().to_string()]);
    private_files(&mut c, &[(hosts, "/etc/hosts")]);
    let o = run(&mut c, T);
    assert!(o.status.success(), "{}\n{}", show(&o), l.log());
    assert_eq!(
        sources(&echo),
        [IpAddr::V4(Ipv4Addr::new(127, 0, 0, 3))],
        "through microsocks"
    );
}

// ---- item 18: never replace the socket -------------------------------------------------

#[test]
fn a_v6only_socket_keeps_its_epoll_registration_through_an_ipv4_proxy() {
    netns();
    let echo = Echo::start_v6();
    let Some((_dante, l)) = dante_launch("") else {
        return;
    };
    let script = format!(
        r#"
import socket, select, errno
s = socket.socket(socket.AF_INET6)
s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
s.setblocking(False)
fd = s.fileno()
ep = select.epoll(); ep.register(fd, select.EPOLLOUT | select.EPOLLIN)
assert s.connect_ex(('::1', {port})) == 0
ev = ep.poll(5)
assert ev and ev[0][0] == fd and ev[0][1] & select.EPOLLOUT, ev
assert s.fileno() == fd
s.setblocking(True); s.sendall(b'v6only'); assert s.recv(6) == b'v6only'
# bound V6ONLY socket: the option cannot change; a clear error, never a replacement
b = socket.socket(socket.AF_INET6)
b.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
b.bind(('::1', 0))
assert b.connect_ex(('::1', {port})) == errno.ENETUNREACH
print('ok')
"#,
        port = echo.port()
    );
    let Some(o) = python(&l, &script, |_| {}) else {
        return;
    };
    ok_out(&o, &l);
    assert_eq!(echo.peers().len(), 1);
}

// ---- items 19, 20: getpeername after disconnects, SO_RCVLOWAT ---------------------------

#[test]
fn getpeername_never_reports_a_stale_peer_and_rcvlowat_is_kept() {
    netns();
    let echo = Echo::start();
    let other = Echo::start();
    let Some((_dante, l)) = dante_launch(&format!(
        "localnet = [\"127.0.0.1/32:{}\"]\n[[dnat]]\nfrom = \"10.7.7.7:80\"\nto = \"127.0.0.1:1\"\n",
        other.port()
    )) else {
        return;
    };
    let script = format!(
        r#"
import socket, ctypes, struct, errno, select
libc = ctypes.CDLL(None, use_errno=True)
port, other = {port}, {other}
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVLOWAT, 64)
s.connect(('127.0.0.1', port))
assert s.getpeername() == ('127.0.0.1', port)
assert s.getsockopt(socket.SOL_SOCKET, socket.SO_RCVLOWAT) == 64
unspec = ctypes.create_string_buffer(16)
assert libc.connect(s.fileno(), unspec, 16) == 0
try:
    s.getpeername(); raise SystemExit('stale after AF_UNSPEC')
except OSError as e:
    assert e.errno == errno.ENOTCONN, e
# reconnected elsewhere (localnet: direct): the real peer
s.connect(('127.0.0.1', other))
assert s.getpeername() == ('127.0.0.1', other), s.getpeername()
# a failed non-blocking dnat connect: no peer
f = socket.socket(); f.setblocking(False)
r = f.connect_ex(('10.7.7.7', 80))
select.select([], [f], [], 3)
try:
    f.getpeername(); raise SystemExit('stale after a failed dnat connect')
except OSError as e:
    assert e.errno == errno.ENOTCONN, e
print('ok')
"#,
        port = echo.port(),
        other = other.port()
    );
    let Some(o) = python(&l, &script, |_| {}) else {
        return;
    };
    ok_out(&o, &l);
    assert_eq!(sources(&echo), [DANTE_SRC]);
    assert_eq!(
        other.peers().iter().map(|p| p.ip()).collect::<Vec<_>>(),
        [IpAddr::V4(Ipv4Addr::LOCALHOST)]
    );
}

// ---- a panic inside a hook -------------------------------------------------------------------

/// A panic inside a hook is caught by the unwinder the library is linked with (libgcc_eh,
/// inside it: crates/preload/build.rs): the call fails closed with EIO and one log line, the
/// origin sees nothing, and the program carries on. The switch `CHAINSOCKS_TEST_PANIC` exists
/// in debug builds of the library only.
#[test]
fn a_panic_in_a_hook_fails_the_call_closed_and_the_program_continues() {
    if !cfg!(debug_assertions) {
        return; // a release library has no panic switch
    }
    netns();
    let echo = Echo::start();
    let Some((_dante, l)) = dante_launch("") else {
        return;
    };
    let script = format!(
        r#"
import socket, errno
for i in range(2):
    s = socket.socket()
    try:
        s.connect(('127.0.0.1', {port})); raise SystemExit('connect went through')
    except OSError as e:
        assert e.errno == errno.EIO, e
    s.close()
print('ok')
"#,
        port = echo.port()
    );
    let Some(o) = python(&l, &script, |c| {
        c.env("CHAINSOCKS_TEST_PANIC", "connect");
    }) else {
        return;
    };
    ok_out(&o, &l);
    assert!(echo.peers().is_empty(), "{:?}", echo.peers());
    let log = l.log();
    assert_eq!(
        log.matches("connect: internal error (panic); failing closed")
            .count(),
        2,
        "{log}"
    );
}
