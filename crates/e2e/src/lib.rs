//! End-to-end test harness for chainsocks.
//!
//! Owns: starting REAL third-party proxies from Debian's packages (danted,
//! microsocks, `ssh -D` + sshd, tinyproxy, shadowsocks-libev's ss-server +
//! ss-local) on free loopback ports in temp dirs, in-process origin servers
//! (HTTP, echo, UDP sink, UDP echo that names the sending process), the DNS
//! leak check ([`DnsTrap`]: a silent resolver on 127.0.0.1:53), an isolated
//! network namespace per test ([`netns`]), and the test binaries in src/bin/
//! (`csclient`, `csudp`, `csstress`, ...).
//! Never does: send traffic to a non-loopback address, bind anything but
//! loopback, signal a process it did not start (servers are stopped by
//! pid/process group, never by name), or modify system files other than
//! creating the test system user for dante's `username` method
//! ([`ensure_system_user`]) and /run/sshd.
//!
//! Typical test:
//! ```no_run
//! use e2e::*;
//! e2e::netns();
//! let origin = HttpOrigin::start(vec![("/f".into(), random_bytes(1 << 20, 1))]);
//! let Some(dante) = Dante::start(DanteOpts::default()) else { return };
//! // curl -x socks5h://127.0.0.1:{dante.port()} {origin.url("/f")}
//! # drop((origin, dante));
//! ```
//!
//! Every server handle has `port()`, `addr()`, `log()`, `wait_log()`, `pid()`
//! and `dir()`, and stops its processes on drop. `start` returns `None` when
//! the program is missing and `CI` is not `true` (see [`require`]).

macro_rules! server_common {
    ($t:ident) => {
        impl $t {
            /// The SOCKS/HTTP proxy port on 127.0.0.1.
            pub fn port(&self) -> u16 {
                self.port
            }

            /// `127.0.0.1:port()`.
            pub fn addr(&self) -> std::net::SocketAddr {
                std::net::SocketAddr::from((std::net::Ipv4Addr::LOCALHOST, self.port))
            }

            /// Everything the server processes logged so far (their log files,
            /// then their captured stdout/stderr).
            pub fn log(&self) -> String {
                self.procs
                    .iter()
                    .map(|p| p.log())
                    .collect::<Vec<_>>()
                    .join("\n")
            }

            /// Polls [`Self::log`] until it contains `needle` or `timeout` passes.
            pub fn wait_log(&self, needle: &str, timeout: std::time::Duration) -> bool {
                crate::process::wait_until(timeout, || self.log().contains(needle))
            }

            /// Pid (= process group id) of the main process.
            pub fn pid(&self) -> u32 {
                self.procs.first().map_or(0, |p| p.pid())
            }

            /// The temp dir holding its config, keys, and logs.
            pub fn dir(&self) -> &std::path::Path {
                self.dir.path()
            }
        }
    };
}
pub(crate) use server_common;

pub mod clientsys;
mod dante;
mod dnstrap;
mod hostile;
mod microsocks;
mod ns;
mod origin;
mod process;
mod procnet;
mod shadowsocks;
mod shim;
mod sshsocks;
mod tempdir;
mod tinyproxy;
mod udp;

pub use dante::{DANTE_PASS, DANTE_USER, Dante, DanteOpts, block_port, ensure_system_user};
pub use dnstrap::{DnsTrap, TRAP_RESOLV_CONF};
pub use hostile::{Behavior, Bound, EXTRA_TUNNEL_BYTES, HostileProxy, Session};
pub use microsocks::{Microsocks, MicrosocksOpts};
pub use ns::{
    csclient, csudp, find_program, is_ci, netns, netns_id, require, require_with, result_field,
};
pub use origin::{Echo, HttpOrigin, random_bytes, sha256_hex};
pub use process::{
    READY_TIMEOUT, free_port, hosts_file_contents, private_files, run, show, stderr, stdout,
    try_run, wait_until,
};
pub use procnet::{Owner, udp_owner};
pub use shadowsocks::{SS_METHOD, Shadowsocks, ShadowsocksOpts};
pub use shim::{Launch, chainsocks_bin, clean, target_dir};
pub use sshsocks::{SshOpts, SshSocks};
pub use tempdir::TempDir;
pub use tinyproxy::{Tinyproxy, TinyproxyOpts};
pub use udp::{UdpDatagram, UdpEcho, UdpSink};
