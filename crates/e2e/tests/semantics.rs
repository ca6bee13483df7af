//! End-to-end tests of socket semantics under the shim (issue 5): non-blocking sockets,
//! getpeername / getsockname, errno preservation, TCP Fast Open, closed stderr, fork / vfork /
//! exec under load, and memory under many connections. Real programs (python3, curl, the
//! csload driver) through real dante, in a fresh network namespace per test.

use std::process::{Command, Output};
use std::time::Duration;

use e2e::*;

const T: Duration = Duration::from_secs(120);

fn dante_launch() -> Option<(Dante, Launch)> {
    let dante = Dante::start(DanteOpts::default())?;
    let l = Launch::chain(&[format!("socks5://127.0.0.1:{}", dante.port())]);
    Some((dante, l))
}

fn python(l: &Launch, script: &str) -> Option<Output> {
    let py = require("python3")?;
    let mut c = l.cmd(py);
    c.args(["-c", script]);
    Some(run(&mut c, T))
}

fn csload() -> std::path::PathBuf {
    csclient().with_file_name("csload")
}

#[test]
fn non_blocking_connect_getpeername_and_dup() {
    netns();
    let echo = Echo::start();
    let Some((dante, l)) = dante_launch() else {
        return;
    };
    let script = format!(
        r#"
import socket, select, errno, fcntl, os
port, proxy = {port}, {proxy}
s = socket.socket(); s.setblocking(False)
assert s.connect_ex(('127.0.0.1', port)) == 0
r, w, x = select.select([], [s], [], 5); assert w == [s], w
assert s.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR) == 0
assert s.connect_ex(('127.0.0.1', port)) == errno.EISCONN
assert fcntl.fcntl(s, fcntl.F_GETFL) & os.O_NONBLOCK
assert s.getpeername() == ('127.0.0.1', port), s.getpeername()
local = s.getsockname()
assert local[0] == '127.0.0.1' and local[1] not in (port, proxy), local
d = socket.socket(fileno=os.dup(s.fileno()))
assert d.getpeername() == ('127.0.0.1', port), 'dup keeps the peer'
d2 = os.dup2(s.fileno(), 900)
assert socket.socket(fileno=os.dup(900)).getpeername() == ('127.0.0.1', port)
s.setblocking(True); s.sendall(b'ping'); assert s.recv(4) == b'ping'
# A fresh socket that reuses a closed one's fd number reports its own peer.
n = s.fileno(); s.close(); d.close(); os.close(900)
u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); u.connect(('127.0.0.1', 9))
try:
    print('udp peer', u.getpeername())
except OSError as e:
    print('udp', e)
# Failure keeps the socket usable: a refused target, then EISCONN is not claimed.
f = socket.socket(); assert f.connect_ex(('127.0.0.1', 1)) == errno.ECONNREFUSED
try:
    f.getpeername(); raise SystemExit('failed socket has a peer')
except OSError as e:
    assert e.errno == errno.ENOTCONN, e
print('ok')
"#,
        port = echo.port(),
        proxy = dante.port()
    );
    let Some(o) = python(&l, &script) else { return };
    assert!(
        stdout(&o).contains("udp peer ('127.0.0.1', 9)"),
        "{}",
        show(&o)
    );
    assert!(
        stdout(&o).trim_end().ends_with("ok"),
        "{}\n{}",
        show(&o),
        l.log()
    );
    assert!(
        echo.peers()
            .iter()
            .all(|p| p.ip().to_string() == "127.0.0.2")
    );
}

#[test]
fn errno_is_left_alone_on_success_and_set_on_failure() {
    netns();
    let echo = Echo::start();
    let Some((_dante, l)) = dante_launch() else {
        return;
    };
    let script = format!(
        r#"
import ctypes, socket, struct
libc = ctypes.CDLL(None, use_errno=True)
def sa(port):
    return struct.pack('<HH4s8x', socket.AF_INET, socket.htons(port), socket.inet_aton('127.0.0.1'))
s = socket.socket(); fd = s.fileno()
ctypes.set_errno(77)
addr = sa({port})
assert libc.connect(fd, addr, len(addr)) == 0
assert ctypes.get_errno() == 77, ctypes.get_errno()
g = socket.socket(); ctypes.set_errno(77)
bad = sa(1)
assert libc.connect(g.fileno(), bad, len(bad)) == -1
assert ctypes.get_errno() == 111, ctypes.get_errno()
buf = ctypes.create_string_buffer(128); ln = ctypes.c_uint(128)
ctypes.set_errno(55)
assert libc.getpeername(fd, buf, ctypes.byref(ln)) == 0 and ctypes.get_errno() == 55
assert ln.value == 16 and struct.unpack('>H', buf.raw[2:4])[0] == {port}
short = ctypes.c_uint(4)
assert libc.getpeername(fd, buf, ctypes.byref(short)) == 0 and short.value == 16, 'truncated, full size reported'
print('ok')
"#,
        port = echo.port()
    );
    let Some(o) = python(&l, &script) else { return };
    assert_eq!(stdout(&o).trim(), "ok", "{}\n{}", show(&o), l.log());
}

#[test]
fn tcp_fast_open_sendto_is_proxied() {
    netns();
    let echo = Echo::start();
    let origin = HttpOrigin::start(vec![("/f".into(), b"fast".to_vec())]);
    let Some((_dante, l)) = dante_launch() else {
        return;
    };
    let script = format!(
        r#"
import socket
s = socket.socket()
n = s.sendto(b'hello', socket.MSG_FASTOPEN, ('127.0.0.1', {port}))
assert n == 5, n
assert s.recv(5) == b'hello'
m = socket.socket()
import array
print('ok', s.getpeername())
"#,
        port = echo.port()
    );
    let Some(o) = python(&l, &script) else { return };
    assert!(stdout(&o).starts_with("ok"), "{}\n{}", show(&o), l.log());
    assert_eq!(echo.peers().len(), 1);
    assert!(
        echo.peers()
            .iter()
            .all(|p| p.ip().to_string() == "127.0.0.2"),
        "{:?}",
        echo.peers()
    );
    let Some(curl) = require("curl") else { return };
    let mut c = l.cmd(curl);
    c.args(["-sS", "--fail", "--tcp-fastopen", &origin.url("/f")]);
    let o = run(&mut c, T);
    assert_eq!(stdout(&o), "fast", "{}\n{}", show(&o), l.log());
    assert!(
        origin
            .requests()
            .iter()
            .all(|(p, _)| p.ip().to_string() == "127.0.0.2")
    );
}

#[test]
fn closed_stderr_never_receives_log_lines() {
    netns();
    let echo = Echo::start();
    let Some((_dante, l)) = dante_launch() else {
        return;
    };
    let dir = TempDir::new("stderr");
    let data = dir.join("data.txt");
    let script = format!(
        "import os, socket\nfd = os.open({data:?}, os.O_WRONLY | os.O_CREAT)\nif fd != 2:\n    os.dup2(fd, 2); os.close(fd)\nsocket.create_connection(('127.0.0.1', {port})).close()\nos.write(2, b'program data\\n')\n",
        port = echo.port(),
        data = data.display().to_string()
    );
    let Some(py) = require("python3") else { return };
    // The interpreter itself (not a wrapper script that may reopen fd 2 before it).
    let real_py = run(
        Command::new(&py).args(["-c", "import sys; print(sys.executable)"]),
        T,
    );
    let py = std::path::PathBuf::from(stdout(&real_py).trim());
    let mut c = l.cmd("sh");
    c.env_remove("CHAINSOCKS_LOG_FILE");
    c.args([
        "-c",
        "exec 2>&- \"$0\" -c \"$1\"",
        &py.display().to_string(),
        &script,
    ]);
    let o = run(&mut c, T);
    assert!(o.status.success(), "{}", show(&o));
    let content = std::fs::read_to_string(&data).unwrap_or_default();
    assert_eq!(
        content, "program data\n",
        "the log must not land in the program's fd 2"
    );
    assert_eq!(echo.peers().len(), 1);
}

#[test]
fn many_threads_connect_through_dante() {
    netns();
    let echo = Echo::start();
    let Some((_dante, l)) = dante_launch() else {
        return;
    };
    let mut c = l.cmd(csload());
    c.args([
        "threads",
        "127.0.0.1",
        &echo.port().to_string(),
        "64",
        "100",
    ]);
    let o = run(&mut c, T);
    assert_eq!(stdout(&o).trim(), "ok 6400", "{}", show(&o));
    assert_eq!(echo.peers().len(), 6400);
    assert!(
        echo.peers()
            .iter()
            .all(|p| p.ip().to_string() == "127.0.0.2")
    );
}

#[test]
fn fork_from_any_thread_while_others_connect_and_resolve() {
    netns();
    let echo = Echo::start();
    let Some((_dante, l)) = dante_launch() else {
        return;
    };
    let mut c = l.cmd(csload());
    c.args(["forks", "127.0.0.1", &echo.port().to_string(), "63", "200"]);
    let o = run(&mut c, T);
    assert!(
        stdout(&o).starts_with("ok 200 forks"),
        "{}\n{}",
        show(&o),
        l.log().lines().last().unwrap_or("")
    );
}

#[test]
fn vfork_and_exec_while_threads_connect() {
    netns();
    let echo = Echo::start();
    let Some((_dante, l)) = dante_launch() else {
        return;
    };
    let script = format!(
        r#"
import socket, subprocess, threading
stop = False; errors = []
def work():
    while not stop:
        try:
            socket.create_connection(('127.0.0.1', {port})).close()
        except Exception as e:
            errors.append(e)
ts = [threading.Thread(target=work) for _ in range(8)]
[t.start() for t in ts]
for i in range(100):
    subprocess.run(['true'], check=True)   # vfork/posix_spawn + exec
    subprocess.run(['sh', '-c', 'exec true'], check=True)
stop = True
[t.join() for t in ts]
assert not errors, errors[:3]
print('ok')
"#,
        port = echo.port()
    );
    let Some(o) = python(&l, &script) else { return };
    assert_eq!(stdout(&o).trim(), "ok", "{}", show(&o));
    assert!(echo.peers().len() >= 8);
}

#[test]
fn memory_does_not_grow_with_connections() {
    netns();
    let echo = Echo::start();
    let Some((_dante, l)) = dante_launch() else {
        return;
    };
    let mut c = l.cmd(csload());
    c.args(["rss", "127.0.0.1", &echo.port().to_string(), "10000"]);
    c.env("CHAINSOCKS_LOG", "warn");
    let o = run(&mut c, T);
    let out = stdout(&o);
    let field = |k: &str| -> f64 {
        out.split_whitespace()
            .find_map(|w| w.strip_prefix(k))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0.0)
    };
    let (a, b) = (field("rss1000="), field("rss10000="));
    assert!(a > 0.0 && b > 0.0, "{}", show(&o));
    assert!(b <= a * 1.05, "RSS grew from {a} KiB to {b} KiB");
}
