//! `SshSocks`: an OpenSSH `ssh -N -D 127.0.0.1:PORT` client (or, with
//! [`SshOpts::tty`], `ssh -tt -D … sleep`) connected to a loopback-only `sshd`
//! that this module starts (OpenSSH 9.2 on Debian 12).
//!
//! Owns: generating a host key and a user key (ed25519, `ssh-keygen -q -N ''`),
//! writing an sshd config, an authorized_keys file, starting sshd and then the
//! ssh client, and the handle (which stops the client first, then sshd).
//! Never does: read or write ~/.ssh, /etc/ssh, the system known_hosts, or
//! listen anywhere but 127.0.0.1.
//!
//! Facts (OpenSSH 9.2p1):
//! - sshd must be started by absolute path (/usr/sbin/sshd) and needs
//!   /run/sshd (privilege separation dir; created here). `StrictModes no`
//!   because the keys live under /tmp. Logs go to stderr with `-e`.
//! - sshd's per-connection child calls setsid() (leaves our process group); it
//!   exits when the ssh client's connection closes, hence the stop order.
//! - `ssh -D` speaks SOCKS4, SOCKS4a and SOCKS5 (ATYP 1, 3, 4). The name of
//!   a 4a/ATYP-3 request is resolved by SSHD (the side that connects out), so
//!   the private-/etc/hosts trick is applied to sshd, not to the client.
//! - A failed destination connect is not answered with a SOCKS error reply:
//!   ssh just closes the client connection (curl: "connection to proxy closed");
//!   sshd logs `connect_to HOST port P: failed.`
//! - `ssh -v -E FILE` logs each forwarded destination:
//!   `channel 1: free: direct-tcpip: listening port 11090 for 127.0.0.1 port 18000, connect from …`.
//! - Small writes can stall ~40 ms on delayed ACKs (use echo workloads for latency):
//!   OpenSSH sets TCP_NODELAY only for sessions with a pty, so `ssh -N -D`'s sshd
//!   holds a second small packet until the first is acknowledged (Nagle); through
//!   `ssh -tt -D` it does not (csbench B2 measures both).

use crate::process::{ServerProc, Spec, free_port, run};
use crate::{TempDir, require};
use std::net::IpAddr;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

/// Options for [`SshSocks::start`].
#[derive(Clone, Debug, Default)]
pub struct SshOpts {
    /// Names only sshd resolves (private /etc/hosts), e.g. `origin.test`.
    pub hosts: Vec<(String, IpAddr)>,
    /// Run `ssh -tt -D … sleep` (a session with a pty) instead of `ssh -N -D`: sshd and ssh
    /// then set TCP_NODELAY on the connection (OpenSSH does for interactive sessions only), so
    /// sshd never holds a small packet back for an ACK (Nagle).
    pub tty: bool,
}

/// A running `ssh -D` SOCKS server on 127.0.0.1, backed by a private sshd.
pub struct SshSocks {
    port: u16,
    /// ssh client first (dropped first), then sshd.
    procs: Vec<ServerProc>,
    sshd_port: u16,
    dir: TempDir,
}

crate::server_common!(SshSocks);

fn keygen(bin: &Path, file: &Path) {
    let out = run(
        Command::new(bin)
            .args(["-q", "-N", "", "-t", "ed25519", "-C", "e2e", "-f"])
            .arg(file),
        Duration::from_secs(20),
    );
    if !out.status.success() {
        panic!(
            "e2e: ssh-keygen failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

impl SshSocks {
    /// Starts sshd and `ssh -N -D`; `None` (test skipped) if sshd, ssh or
    /// ssh-keygen is not installed and not CI.
    ///
    /// # Panics
    /// If either does not start (message includes the logs).
    pub fn start(opts: SshOpts) -> Option<SshSocks> {
        let sshd = require("/usr/sbin/sshd")?;
        let ssh = require("ssh")?;
        let keygen_bin = require("ssh-keygen")?;
        let dir = TempDir::new("sshsocks");
        let host_key = dir.join("host_key");
        let user_key = dir.join("user_key");
        keygen(&keygen_bin, &host_key);
        keygen(&keygen_bin, &user_key);
        let pubkey = crate::process::read_lossy(&dir.join("user_key.pub"));
        let ak = dir.write("authorized_keys", pubkey);
        if let Err(e) = std::fs::create_dir_all("/run/sshd") {
            panic!("e2e: cannot create /run/sshd: {e}");
        }
        let sshd_port = free_port();
        let conf = dir.write(
            "sshd_config",
            format!(
                "ListenAddress 127.0.0.1:{sshd_port}\n\
                 HostKey {}\n\
                 AuthorizedKeysFile {}\n\
                 PidFile {}\n\
                 PermitRootLogin prohibit-password\n\
                 PubkeyAuthentication yes\n\
                 PasswordAuthentication no\n\
                 KbdInteractiveAuthentication no\n\
                 StrictModes no\n\
                 UsePAM no\n\
                 AllowTcpForwarding yes\n\
                 LogLevel VERBOSE\n",
                host_key.display(),
                ak.display(),
                dir.join("sshd.pid").display()
            ),
        );
        let sshd_proc = ServerProc::start(
            &dir,
            Spec {
                name: "sshd",
                program: sshd,
                args: vec![
                    "-D".into(),
                    "-e".into(),
                    "-f".into(),
                    conf.clone().into_os_string(),
                ],
                hosts: opts.hosts.clone(),
                own_logs: Vec::new(),
                ready_port: sshd_port,
                configs: vec![conf],
            },
        );
        let port = free_port();
        let ssh_log = dir.join("ssh.log");
        let user = current_user();
        let mut args: Vec<std::ffi::OsString> = vec![
            if opts.tty { "-tt" } else { "-N" }.into(),
            "-D".into(),
            format!("127.0.0.1:{port}").into(),
            "-F".into(),
            "/dev/null".into(),
            "-i".into(),
            user_key.into_os_string(),
            "-p".into(),
            sshd_port.to_string().into(),
            "-o".into(),
            "StrictHostKeyChecking=no".into(),
            "-o".into(),
            "UserKnownHostsFile=/dev/null".into(),
            "-o".into(),
            "GlobalKnownHostsFile=/dev/null".into(),
            "-o".into(),
            "BatchMode=yes".into(),
            "-o".into(),
            "IdentitiesOnly=yes".into(),
            "-o".into(),
            "ExitOnForwardFailure=yes".into(),
            "-o".into(),
            "ServerAliveInterval=0".into(),
            "-v".into(),
            "-E".into(),
            ssh_log.clone().into_os_string(),
            format!("{user}@127.0.0.1").into(),
        ];
        if opts.tty {
            args.push("sleep 2147483647".into());
        }
        let ssh_proc = ServerProc::start(
            &dir,
            Spec {
                name: "ssh",
                program: ssh,
                args,
                hosts: Vec::new(),
                own_logs: vec![ssh_log],
                ready_port: port,
                configs: Vec::new(),
            },
        );
        Some(SshSocks {
            port,
            procs: vec![ssh_proc, sshd_proc],
            sshd_port,
            dir,
        })
    }

    /// The private sshd's port on 127.0.0.1.
    pub fn sshd_port(&self) -> u16 {
        self.sshd_port
    }
}

/// The login user: always root (netns() requires root; getpwuid is not
/// thread-safe, and sshd is configured with `PermitRootLogin prohibit-password`).
fn current_user() -> &'static str {
    "root"
}
