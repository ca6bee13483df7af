//! `Shadowsocks`: Debian's shadowsocks-libev 3.3.5 as a SOCKS5 proxy that carries UDP:
//! `ss-server -u` plus `ss-local -u` (the SOCKS5 side) pointing at it, both on 127.0.0.1.
//!
//! Owns: starting both (server first) on free ports with a random password and an AEAD
//! method, waiting until each accepts on TCP AND has bound its UDP port, and the handle
//! (ss-local is stopped first, then ss-server).
//! Never does: use `-f` (that daemonizes: the process would leave our process group), the
//! system config (/etc/shadowsocks-libev), or listen on anything but 127.0.0.1.
//!
//! Facts (shadowsocks-libev 3.3.5 on Debian 12; flags from its --help and man pages):
//! - `ss-server -s 127.0.0.1 -p SPORT -k PASS -m METHOD -u -v` listens on SPORT for TCP and
//!   UDP (`-b` there would be the OUTGOING source address; not used, so IPv4 and IPv6
//!   destinations both work). `ss-local -s 127.0.0.1 -p SPORT -b 127.0.0.1 -l PORT -k PASS
//!   -m METHOD -u -v` is the SOCKS5 server (`-b` = its listen address).
//! - UDP ASSOCIATE: ss-local answers `05 00 00 01 7f 00 00 01 PORT` (its relay is UDP on the
//!   same port number as its SOCKS5 TCP port), takes ATYP 1, 3 and 4 destinations, and
//!   replies with ATYP 1/4 headers. The origin sees datagrams from an ss-server socket (one
//!   per client association: `[udp] cache miss: 127.0.0.1:17000 <-> 127.0.0.1:38487`).
//! - ss-server resolves ATYP 3 names itself (c-ares, /etc/hosts first: the private-hosts
//!   trick works on it); `-v` logs `[udp] cache miss: NAME:PORT <-> ...` and ss-local logs
//!   `udp assc request accepted` per association.
//! - Datagram size: both sides size their UDP buffers from `--mtu`; without it a datagram
//!   over about 1.4 KB is cut and dropped (`[udp] server_recv_recvfrom fragmentation, MTU at
//!   least be: 2889`, then `failed to handshake with 127.0.0.1: suspicious UDP packet`).
//!   The harness passes `--mtu 65535` unless told otherwise: 65,000-byte datagrams pass.
//! - Both log to stdout/stderr, one process each, no children.

use crate::process::{READY_TIMEOUT, ServerProc, Spec, free_port, wait_until};
use crate::{TempDir, require};
use std::ffi::OsString;
use std::io::Read;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;

/// The cipher both sides use (AEAD, shadowsocks-libev's default).
pub const SS_METHOD: &str = "chacha20-ietf-poly1305";

/// Options for [`Shadowsocks::start`].
#[derive(Clone, Debug)]
pub struct ShadowsocksOpts {
    /// Names only ss-server resolves (private /etc/hosts), e.g. `origin.test`.
    pub hosts: Vec<(String, IpAddr)>,
    /// `--mtu` of both sides; default 65535 (datagrams up to 64 KiB pass). `None`: the
    /// program's default, which drops datagrams over about 1.4 KB.
    pub mtu: Option<u32>,
}

impl Default for ShadowsocksOpts {
    fn default() -> Self {
        ShadowsocksOpts {
            hosts: Vec::new(),
            mtu: Some(65535),
        }
    }
}

/// A running ss-local (SOCKS5, TCP + UDP) on 127.0.0.1 and the ss-server behind it.
pub struct Shadowsocks {
    port: u16,
    /// ss-local first (dropped first), then ss-server.
    procs: Vec<ServerProc>,
    server_port: u16,
    password: String,
    dir: TempDir,
}

crate::server_common!(Shadowsocks);

impl Shadowsocks {
    /// Starts ss-server and ss-local; `None` (test skipped) if shadowsocks-libev is not
    /// installed and not CI.
    ///
    /// # Panics
    /// If either does not start or bind its UDP port (message includes the logs).
    pub fn start(opts: ShadowsocksOpts) -> Option<Shadowsocks> {
        let server_bin = require("ss-server")?;
        let local_bin = require("ss-local")?;
        let dir = TempDir::new("shadowsocks");
        let password = random_password();
        let server_port = free_port();
        let port = free_port();
        let common = |extra: &[String]| -> Vec<OsString> {
            let mut a: Vec<OsString> = vec![
                "-s".into(),
                "127.0.0.1".into(),
                "-p".into(),
                server_port.to_string().into(),
            ];
            a.extend(extra.iter().map(OsString::from));
            a.extend(
                [
                    "-k",
                    password.as_str(),
                    "-m",
                    SS_METHOD,
                    "-t",
                    "60",
                    "-u",
                    "-v",
                ]
                .map(OsString::from),
            );
            if let Some(mtu) = opts.mtu {
                a.extend(["--mtu".into(), mtu.to_string().into()]);
            }
            a
        };
        let server_args = common(&[]);
        let local_args = common(&[
            "-b".into(),
            "127.0.0.1".into(),
            "-l".into(),
            port.to_string(),
        ]);
        let server = start_one(
            &dir,
            "ss-server",
            server_bin,
            server_args,
            opts.hosts,
            server_port,
        );
        let local = start_one(&dir, "ss-local", local_bin, local_args, Vec::new(), port);
        Some(Shadowsocks {
            port,
            procs: vec![local, server],
            server_port,
            password,
            dir,
        })
    }

    /// ss-server's port (TCP and UDP) on 127.0.0.1.
    pub fn server_port(&self) -> u16 {
        self.server_port
    }

    /// ss-server's pid (`pid()` is ss-local's).
    pub fn server_pid(&self) -> u32 {
        self.procs.get(1).map_or(0, |p| p.pid())
    }

    /// The password both sides share (random per instance).
    pub fn password(&self) -> &str {
        &self.password
    }
}

/// Starts one side, waits for its TCP port, then for its UDP socket on the same port.
fn start_one(
    dir: &TempDir,
    name: &'static str,
    program: PathBuf,
    args: Vec<OsString>,
    hosts: Vec<(String, IpAddr)>,
    port: u16,
) -> ServerProc {
    let cmdline = dir.write(
        &format!("{name}.cmdline"),
        format!("{} {}\n", program.display(), shell_words(&args)),
    );
    let proc = ServerProc::start(
        dir,
        Spec {
            name,
            program,
            args,
            hosts,
            own_logs: Vec::new(),
            ready_port: port,
            configs: vec![cmdline],
        },
    );
    let udp = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    if !wait_until(READY_TIMEOUT, || crate::procnet::udp_inode(udp).is_some()) {
        panic!(
            "e2e: {name} accepts on TCP {port} but has no UDP socket on {udp} after {READY_TIMEOUT:?}\n{}",
            proc.log()
        );
    }
    proc
}

fn shell_words(args: &[OsString]) -> String {
    args.iter()
        .map(|a| a.to_string_lossy().into_owned())
        .collect::<Vec<_>>()
        .join(" ")
}

/// 32 hex digits from /dev/urandom (a fixed fallback only if it cannot be read).
fn random_password() -> String {
    let mut b = [0u8; 16];
    let ok = std::fs::File::open("/dev/urandom").and_then(|mut f| f.read_exact(&mut b));
    if ok.is_err() {
        return format!("e2e-{}", std::process::id());
    }
    b.iter().map(|x| format!("{x:02x}")).collect()
}
