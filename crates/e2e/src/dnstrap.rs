//! [`DnsTrap`]: the DNS leak check. A UDP sink and a TCP listener on 127.0.0.1:53 of the
//! test's network namespace, and a private `/etc/resolv.conf` (`nameserver 127.0.0.1`) plus,
//! optionally, a private `/etc/hosts` for the client commands it is applied to.
//!
//! Owns: the two port-53 sockets (bound in the calling thread's namespace: call
//! [`crate::netns`] first), the temp files, and counting what reached them.
//! Never does: answer a query (a leaked lookup fails after `timeout:1 attempts:1`), bind
//! anything but 127.0.0.1, or touch the host's resolver files (the files are bind-mounted in
//! the client's private mount namespace only, see [`crate::private_files`]).
//!
//! Facts:
//! - glibc's resolver sends its packets through internal calls that no preload sees, so a leak
//!   can only be seen on the wire: here, as a datagram or connection on 127.0.0.1:53.
//! - nsswitch here is `files dns`: a name found in the (private) /etc/hosts sends no query.

use std::net::{Ipv4Addr, SocketAddr, TcpListener};
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use crate::{TempDir, UdpSink, hosts_file_contents, private_files, wait_until};

/// The resolv.conf every trapped client gets.
pub const TRAP_RESOLV_CONF: &str = "nameserver 127.0.0.1\noptions timeout:1 attempts:1\n";

/// A DNS server that records and never answers, and the files that point clients at it.
pub struct DnsTrap {
    udp: UdpSink,
    tcp: TcpListener,
    tcp_seen: std::cell::Cell<usize>,
    resolv: PathBuf,
    hosts: Option<PathBuf>,
    _dir: TempDir,
}

impl DnsTrap {
    /// Binds 127.0.0.1:53 (UDP and TCP) in the current namespace.
    ///
    /// # Panics
    /// If port 53 cannot be bound (not in a fresh namespace? not root?).
    pub fn start() -> DnsTrap {
        DnsTrap::start_with_hosts(None)
    }

    /// Same, and clients also get a private /etc/hosts with only `localhost` and these names.
    pub fn with_client_hosts(hosts: &[(String, std::net::IpAddr)]) -> DnsTrap {
        DnsTrap::start_with_hosts(Some(hosts))
    }

    fn start_with_hosts(hosts: Option<&[(String, std::net::IpAddr)]>) -> DnsTrap {
        let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, 53));
        let udp = UdpSink::start_on(addr);
        let tcp = match TcpListener::bind(addr) {
            Ok(l) => l,
            Err(e) => panic!("e2e: dns trap: cannot bind tcp {addr} (netns()? root?): {e}"),
        };
        if let Err(e) = tcp.set_nonblocking(true) {
            panic!("e2e: dns trap: set_nonblocking: {e}");
        }
        let dir = TempDir::new("dnstrap");
        let resolv = dir.write("resolv.conf", TRAP_RESOLV_CONF);
        let hosts = hosts.map(|h| dir.write("hosts", hosts_file_contents(h)));
        DnsTrap {
            udp,
            tcp,
            tcp_seen: std::cell::Cell::new(0),
            resolv,
            hosts,
            _dir: dir,
        }
    }

    /// Gives `cmd` the trap's resolv.conf (and hosts file, if any) in a private mount namespace.
    pub fn apply(&self, cmd: &mut Command) {
        let mut binds = vec![(self.resolv.clone(), "/etc/resolv.conf")];
        if let Some(h) = &self.hosts {
            binds.push((h.clone(), "/etc/hosts"));
        }
        private_files(cmd, &binds);
    }

    /// Datagrams plus TCP connections that reached 127.0.0.1:53 so far (exact: it drains the
    /// kernel queues of both sockets, non-blocking).
    pub fn count(&self) -> usize {
        while self.tcp.accept().is_ok() {
            self.tcp_seen.set(self.tcp_seen.get() + 1);
        }
        self.udp.count() + self.tcp_seen.get()
    }

    /// The UDP payloads received (raw DNS queries).
    pub fn datagrams(&self) -> Vec<Vec<u8>> {
        self.udp.datagrams().into_iter().map(|(_, d)| d).collect()
    }

    /// The query names found in the datagrams (best effort DNS question decoding).
    pub fn queried_names(&self) -> Vec<String> {
        self.datagrams().iter().filter_map(|d| qname(d)).collect()
    }

    /// Waits up to `timeout` for at least `n` packets/connections; returns the count.
    pub fn wait_count(&self, n: usize, timeout: Duration) -> usize {
        wait_until(timeout, || self.count() >= n);
        self.count()
    }

    /// Panics if anything reached port 53 (`what` names the step, for the message).
    /// [`Self::count`] reads the kernel queues, so what a finished command sent is normally
    /// counted at once; 50 ms of grace covers loopback delivery deferred to ksoftirqd under load.
    pub fn assert_no_leak(&self, what: &str) {
        let n = self.wait_count(1, Duration::from_millis(50));
        assert_eq!(
            n,
            0,
            "DNS leak after {what}: {n} packet(s)/connection(s) reached 127.0.0.1:53, names {:?}",
            self.queried_names()
        );
    }
}

/// The question name of a DNS query (`None` if it does not parse).
fn qname(d: &[u8]) -> Option<String> {
    let mut at = 12;
    let mut labels = Vec::new();
    loop {
        let len = *d.get(at)? as usize;
        if len == 0 {
            break;
        }
        let label = d.get(at + 1..at + 1 + len)?;
        labels.push(String::from_utf8_lossy(label).into_owned());
        at += 1 + len;
    }
    Some(labels.join("."))
}
