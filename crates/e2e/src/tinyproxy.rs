//! `Tinyproxy`: Debian's tinyproxy 1.11.1 as an HTTP proxy (CONNECT) on 127.0.0.1.
//!
//! Owns: writing its config into a temp dir, starting `tinyproxy -d -c CONF`,
//! and the handle.
//! Never does: use /etc/tinyproxy, the system log or pid file, or listen on
//! anything but 127.0.0.1.
//!
//! Facts (tinyproxy 1.11.1):
//! - With no `ConnectPort` line, CONNECT is allowed to every port.
//! - `Bind ADDR` sets the source address of EVERY outgoing connection; with an
//!   IPv4 `Bind`, CONNECT to an IPv6 destination fails with HTTP 500
//!   ("bind_socket: getaddrinfo failed for 127.0.0.4 … AF_INET6"). Set
//!   `bind: None` for tests with IPv6 destinations.
//! - `BasicAuth user pass` makes it answer 401 (also to CONNECT) without or
//!   with wrong `Proxy-Authorization`.
//! - Run as root without `User` it warns ("You SHOULD set a UserName") and keeps
//!   running as root. One process, threads; `-d` keeps it in the foreground.
//! - `LogLevel Info` logs `Request (file descriptor 5): CONNECT host:port
//!   HTTP/1.1`, `Bound to 127.0.0.4`, `Established connection to host "…"`.
//!   Names in CONNECT are resolved by tinyproxy (getaddrinfo).
//! - It also proxies plain `GET http://…` requests (curl without `-p`).

use crate::process::{ServerProc, Spec, free_port};
use crate::{TempDir, require};
use std::net::{IpAddr, Ipv4Addr};

/// Options for [`Tinyproxy::start`].
#[derive(Clone, Debug)]
pub struct TinyproxyOpts {
    /// `Some((user, pass))`: `BasicAuth user pass`.
    pub auth: Option<(String, String)>,
    /// `Bind`: source address of outgoing connections; default 127.0.0.4.
    /// Must be `None` to reach IPv6 destinations.
    pub bind: Option<IpAddr>,
    /// Names only tinyproxy resolves (private /etc/hosts).
    pub hosts: Vec<(String, IpAddr)>,
}

impl Default for TinyproxyOpts {
    fn default() -> Self {
        TinyproxyOpts {
            auth: None,
            bind: Some(IpAddr::V4(Ipv4Addr::new(127, 0, 0, 4))),
            hosts: Vec::new(),
        }
    }
}

/// A running tinyproxy (HTTP CONNECT) on 127.0.0.1.
pub struct Tinyproxy {
    port: u16,
    procs: Vec<ServerProc>,
    auth: Option<(String, String)>,
    dir: TempDir,
}

crate::server_common!(Tinyproxy);

impl Tinyproxy {
    /// Starts tinyproxy; `None` (test skipped) if not installed and not CI.
    ///
    /// # Panics
    /// If it does not start (message includes its log).
    pub fn start(opts: TinyproxyOpts) -> Option<Tinyproxy> {
        let bin = require("tinyproxy")?;
        let dir = TempDir::new("tinyproxy");
        let port = free_port();
        let log = dir.join("tinyproxy.log");
        let mut conf = format!(
            "Port {port}\n\
             Listen 127.0.0.1\n\
             Timeout 60\n\
             LogFile \"{}\"\n\
             LogLevel Info\n\
             PidFile \"{}\"\n\
             MaxClients 200\n\
             Allow 127.0.0.0/8\n\
             DisableViaHeader Yes\n",
            log.display(),
            dir.join("tinyproxy.pid").display()
        );
        if let Some(b) = opts.bind {
            conf.push_str(&format!("Bind {b}\n"));
        }
        if let Some((u, p)) = &opts.auth {
            conf.push_str(&format!("BasicAuth {u} {p}\n"));
        }
        let conf = dir.write("tinyproxy.conf", conf);
        let spec = Spec {
            name: "tinyproxy",
            program: bin,
            args: vec!["-d".into(), "-c".into(), conf.clone().into_os_string()],
            hosts: opts.hosts.clone(),
            own_logs: vec![log],
            ready_port: port,
            configs: vec![conf],
        };
        let proc = ServerProc::start(&dir, spec);
        Some(Tinyproxy {
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
