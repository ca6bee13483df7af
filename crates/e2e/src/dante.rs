//! `Dante`: Debian's danted 1.4.2 as a SOCKS4/SOCKS5 server on 127.0.0.1.
//!
//! Owns: writing a danted config into a temp dir, creating the system user its
//! `username` method checks, starting danted in the foreground, and the handle.
//! Never does: edit /etc/danted.conf or use /var/run/danted.pid (every instance
//! has its own config, pid file and log), or listen on anything but 127.0.0.1.
//!
//! Facts (measured with danted 1.4.2 on Debian 12):
//! - Run as `danted -f CONF -p PIDFILE -N 1` (no `-D`: stays in the
//!   foreground). It forks a mother plus negotiate/request/io children; all stay
//!   in the process group, and SIGTERM makes the mother shut them down.
//! - Options (`logoutput:`, `debug:`, `internal:`, `external:`, methods, users)
//!   go before the rules. `debug: 1` logs each request, e.g.
//!   `dorequest(): … Packet: VER: 5 CMD: 1 FLAG: 0 ATYP: 3 address: localhost.8080`
//!   and SOCKS4 as `VER: 4 CMD: 1 address: 127.0.0.1.8080`; blocked requests log
//!   `block(1): tcp/accept ]: … blocked by higher-level socks-rule #N`.
//! - Several `external:` lines work: with the default `external.rotation: none`
//!   danted picks the one matching the destination's family, so
//!   `external: 127.0.0.2` + `external: ::1` makes IPv4 origins see peer
//!   127.0.0.2 and IPv6 origins ([::1]) see peer ::1.
//! - SOCKS4 works; SOCKS4a does NOT (a 0.0.0.x destination is tried literally:
//!   reply 91). SOCKS5 with ATYP 1, 3 (danted resolves the name) and 4 works.
//! - A `socks block { to: 127.0.0.1/32 port = 9 }` rule also blocks a name that
//!   resolves there (`localhost:9`): the reply is SOCKS5 REP 2 / SOCKS4 91.
//! - `socksmethod: username` checks the SYSTEM password database (/etc/shadow,
//!   needs `user.privileged: root`); such an instance refuses clients offering
//!   only "no auth" (method reply 0xFF), wrong password gives auth status != 0.
//!   SOCKS4 requests are refused (no method applies) on such an instance.
//! - UDP ASSOCIATE (relays both ways, IPv4 and IPv6 destinations, ATYP 3 names resolved
//!   by danted): the reply's BND is `127.0.0.1:PORT`, a new relay port per association; the
//!   origin sees datagrams from the `external:` address (127.0.0.2, or ::1 for IPv6) on a
//!   socket of a danted io child (comm `danted`). A client address of 0.0.0.0:0 and the
//!   client's real UDP address both work. Replies need the separate `command: udpreply`
//!   rule (included): without it danted logs `block(0): udp/udpreply -: …` and drops every
//!   reply silently. Each datagram logs `pass(1): udp/udpassociate -: …` and each reply
//!   `pass(2): udp/udpreply -: …`.

use crate::process::{ServerProc, Spec, free_port};
use crate::{TempDir, require};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::process::{Command, Stdio};
use std::sync::Mutex;
use std::time::Duration;

/// The system user the tests use for danted's `username` method.
pub const DANTE_USER: &str = "csuser1";
/// Its password.
pub const DANTE_PASS: &str = "cspass1";

/// Options for [`Dante::start`].
#[derive(Clone, Debug)]
pub struct DanteOpts {
    /// `Some((user, pass))`: only `username` auth is accepted and the system
    /// user is created/updated (useradd + chpasswd). Use one fixed password per
    /// user name across tests (e.g. [`DANTE_USER`]/[`DANTE_PASS`]).
    pub auth: Option<(String, String)>,
    /// Destinations refused by a `socks block` rule, each a dante `to:`
    /// expression such as `"127.0.0.1/32 port = 9"` (see [`block_port`]).
    pub block: Vec<String>,
    /// Source address for IPv4 destinations (`external:`), default 127.0.0.2.
    pub external: IpAddr,
    /// Source address for IPv6 destinations, default `Some(::1)`.
    pub external_v6: Option<Ipv6Addr>,
    /// Names only danted resolves (private /etc/hosts), e.g. `origin.test`.
    pub hosts: Vec<(String, IpAddr)>,
    /// No `debug: 1` and rules that log errors only: no log line per request or per UDP
    /// datagram (for the benchmark, where writing them would be most of danted's work).
    pub quiet: bool,
}

impl Default for DanteOpts {
    fn default() -> Self {
        DanteOpts {
            auth: None,
            block: Vec::new(),
            external: IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2)),
            external_v6: Some(Ipv6Addr::LOCALHOST),
            hosts: Vec::new(),
            quiet: false,
        }
    }
}

/// A dante `to:` expression blocking one TCP port on 127.0.0.1.
pub fn block_port(port: u16) -> String {
    format!("127.0.0.1/32 port = {port}")
}

/// A running danted (SOCKS4 + SOCKS5) on 127.0.0.1.
pub struct Dante {
    port: u16,
    procs: Vec<ServerProc>,
    auth: Option<(String, String)>,
    dir: TempDir,
}

crate::server_common!(Dante);

impl Dante {
    /// Starts danted; `None` (test skipped) if it is not installed and not CI.
    ///
    /// # Panics
    /// If it does not start (message includes its log) or the user cannot be made.
    pub fn start(opts: DanteOpts) -> Option<Dante> {
        let bin = require("danted")?;
        if let Some((u, p)) = &opts.auth {
            ensure_system_user(u, p);
        }
        let dir = TempDir::new("danted");
        let port = free_port();
        let log = dir.join("danted.log");
        let conf = dir.write("danted.conf", config(&opts, port, &log.to_string_lossy()));
        let pid = dir.join("danted.pid");
        let spec = Spec {
            name: "danted",
            program: bin,
            args: vec![
                "-f".into(),
                conf.clone().into_os_string(),
                "-p".into(),
                pid.into_os_string(),
                "-N".into(),
                "1".into(),
            ],
            hosts: opts.hosts.clone(),
            own_logs: vec![log],
            ready_port: port,
            configs: vec![conf],
        };
        let proc = ServerProc::start(&dir, spec);
        Some(Dante {
            port,
            procs: vec![proc],
            auth: opts.auth,
            dir,
        })
    }

    /// The credentials this instance requires, if any.
    pub fn auth(&self) -> Option<(&str, &str)> {
        self.auth.as_ref().map(|(u, p)| (u.as_str(), p.as_str()))
    }
}

fn config(o: &DanteOpts, port: u16, log: &str) -> String {
    let method = if o.auth.is_some() { "username" } else { "none" };
    let mut c = format!(
        "logoutput: {log}\n\
         debug: {}\n\
         internal: 127.0.0.1 port = {port}\n\
         external: {}\n",
        if o.quiet { 0 } else { 1 },
        o.external
    );
    if let Some(v6) = o.external_v6 {
        c.push_str(&format!("external: {v6}\n"));
    }
    let rule_log = if o.quiet {
        "error"
    } else {
        "error connect disconnect"
    };
    c.push_str(&format!(
        "clientmethod: none\n\
         socksmethod: {method}\n\
         user.privileged: root\n\
         user.unprivileged: nobody\n\
         client pass {{\n  from: 0/0 to: 0/0\n  log: {rule_log}\n}}\n"
    ));
    for b in &o.block {
        c.push_str(&format!(
            "socks block {{\n  from: 0/0 to: {b}\n  log: error connect\n}}\n"
        ));
    }
    c.push_str(&format!(
        "socks pass {{\n  from: 0/0 to: 0/0\n  command: bind connect udpassociate\n  log: {rule_log}\n}}\n\
         socks pass {{\n  from: 0/0 to: 0/0\n  command: bindreply udpreply\n  log: {rule_log}\n}}\n",
    ));
    c
}

static USERS: Mutex<Vec<(String, String)>> = Mutex::new(Vec::new());

/// Creates system user `name` (no home, nologin shell) if missing and sets its
/// password. Idempotent; retries while another process holds the passwd lock.
///
/// # Panics
/// If useradd/chpasswd keep failing.
pub fn ensure_system_user(name: &str, pass: &str) {
    let mut done = USERS.lock().unwrap_or_else(|e| e.into_inner());
    if done.iter().any(|(u, p)| u == name && p == pass) {
        return;
    }
    let exists = |name: &str| {
        Command::new("id")
            .args(["-u", name])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    };
    let mut last = String::new();
    for _ in 0..50 {
        if exists(name) {
            break;
        }
        match Command::new("useradd")
            .args(["-M", "-d", "/nonexistent", "-s", "/usr/sbin/nologin", name])
            .output()
        {
            Ok(o) if o.status.success() || o.status.code() == Some(9) => break,
            Ok(o) => last = String::from_utf8_lossy(&o.stderr).into_owned(),
            Err(e) => panic!("e2e: cannot run useradd: {e}"),
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    if !exists(name) {
        panic!("e2e: cannot create system user {name}: {last}");
    }
    for _ in 0..50 {
        let child = Command::new("chpasswd")
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn();
        let mut child = match child {
            Ok(c) => c,
            Err(e) => panic!("e2e: cannot run chpasswd: {e}"),
        };
        if let Some(mut stdin) = child.stdin.take() {
            use std::io::Write;
            let _ = writeln!(stdin, "{name}:{pass}");
        }
        match child.wait_with_output() {
            Ok(o) if o.status.success() => {
                done.push((name.to_string(), pass.to_string()));
                return;
            }
            Ok(o) => last = String::from_utf8_lossy(&o.stderr).into_owned(),
            Err(e) => last = e.to_string(),
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("e2e: chpasswd for {name} failed: {last}")
}
