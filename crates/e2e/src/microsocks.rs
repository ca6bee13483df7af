//! `Microsocks`: Debian's microsocks 1.0.3 (SOCKS5 only) on 127.0.0.1.
//!
//! Owns: starting `microsocks -i 127.0.0.1 -p PORT [-u U -P P] [-b ADDR]` with
//! its stdout/stderr captured to a file in a temp dir, and the handle.
//! Never does: use `-1` (auth-once whitelisting would leak state between
//! connections), or listen on anything but 127.0.0.1.
//!
//! Facts (microsocks 1.0.3):
//! - SOCKS5 only (no SOCKS4/4a); ATYP 1, 3, 4 all work.
//! - It logs one line per successful connect on stderr:
//!   `client[5] 127.0.0.1: connected to 127.0.0.1:18000` (an ATYP-3 name is
//!   printed as sent: `connected to localhost:18000`); a refused destination
//!   logs nothing and is answered with SOCKS5 REP 5.
//! - `-b 127.0.0.3` sets the source address of IPv4 outgoing connections; IPv6
//!   destinations still work (they go out from ::1).
//! - With `-u/-P` it offers only username auth: no-auth clients get method
//!   0xFF, a wrong password gets auth status 1.
//! - It does not handle a pipelined greeting+request (it drops what follows
//!   the greeting and hangs): clients must wait for each reply.
//! - One process, a thread per client; no pid file.

use crate::process::{ServerProc, Spec, free_port};
use crate::{TempDir, require};
use std::ffi::OsString;
use std::net::{IpAddr, Ipv4Addr};

/// Options for [`Microsocks::start`].
#[derive(Clone, Debug)]
pub struct MicrosocksOpts {
    /// `Some((user, pass))`: `-u user -P pass` (username auth required).
    pub auth: Option<(String, String)>,
    /// `-b`: source address of outgoing connections; default 127.0.0.3.
    pub bind_out: Option<IpAddr>,
    /// Names only microsocks resolves (private /etc/hosts).
    pub hosts: Vec<(String, IpAddr)>,
    /// `-i`: where it listens; default 127.0.0.1 (use ::1 for an IPv6 proxy).
    pub listen: IpAddr,
}

impl Default for MicrosocksOpts {
    fn default() -> Self {
        MicrosocksOpts {
            auth: None,
            bind_out: Some(IpAddr::V4(Ipv4Addr::new(127, 0, 0, 3))),
            hosts: Vec::new(),
            listen: IpAddr::V4(Ipv4Addr::LOCALHOST),
        }
    }
}

/// A running microsocks (SOCKS5) on 127.0.0.1.
pub struct Microsocks {
    listen: IpAddr,
    port: u16,
    procs: Vec<ServerProc>,
    auth: Option<(String, String)>,
    dir: TempDir,
}

crate::server_common!(Microsocks);

impl Microsocks {
    /// Starts microsocks; `None` (test skipped) if not installed and not CI.
    ///
    /// # Panics
    /// If it does not start (message includes its output).
    pub fn start(opts: MicrosocksOpts) -> Option<Microsocks> {
        let bin = require("microsocks")?;
        let dir = TempDir::new("microsocks");
        let port = free_port();
        let mut args: Vec<OsString> = vec![
            "-i".into(),
            opts.listen.to_string().into(),
            "-p".into(),
            port.to_string().into(),
        ];
        if let Some((u, p)) = &opts.auth {
            args.extend(["-u".into(), u.into(), "-P".into(), p.into()]);
        }
        if let Some(b) = opts.bind_out {
            args.extend(["-b".into(), b.to_string().into()]);
        }
        let spec = Spec {
            name: "microsocks",
            program: bin,
            args,
            hosts: opts.hosts.clone(),
            own_logs: Vec::new(),
            ready_port: port,
            configs: Vec::new(),
        };
        let proc = ServerProc::start(&dir, spec);
        Some(Microsocks {
            listen: opts.listen,
            port,
            procs: vec![proc],
            auth: opts.auth,
            dir,
        })
    }

    /// Where it listens (`addr()` assumes 127.0.0.1).
    pub fn listen_addr(&self) -> std::net::SocketAddr {
        std::net::SocketAddr::new(self.listen, self.port)
    }

    /// The credentials this instance requires, if any.
    pub fn auth(&self) -> Option<(&str, &str)> {
        self.auth.as_ref().map(|(u, p)| (u.as_str(), p.as_str()))
    }
}
