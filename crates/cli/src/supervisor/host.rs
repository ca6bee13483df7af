//! The [`Host`] the shared dialer runs with in the supervisor: the launch's config and shared
//! state, the supervisor's log, report records in the name of the program that connected, the
//! launcher's own resolver for names a rule sends direct, and poll waits, which also watch the
//! listener while this thread is the receiver (and pass that role on once a connect is pending).
//!
//! Must never: answer for a socket it did not connect (no getpeername bookkeeping: the
//! supervisor does not see getpeername), or wait anywhere it cannot watch the listener while it
//! still holds the receiver's role.

use std::net::{IpAddr, SocketAddr, ToSocketAddrs};
use std::time::Instant;

use chainsocks_core::Error;
use chainsocks_core::chain::Health;
use chainsocks_core::config::{Config, LogLevel};
use chainsocks_core::connect::{Bypass, Host, Outcome, poll_until, poll_wait, udp};
use chainsocks_core::report::{Event, Who, append_line, line};
use chainsocks_core::udp::{UdpPlan, associate, plan};
use libc::c_int;

use super::{Ctx, Receiving, Requester};

pub struct SupHost<'a> {
    ctx: &'a Ctx,
    who: &'a Requester,
    /// The receiver's role: passed on before a wait that cannot watch the listener (a
    /// lookup, a blocking connect), and from a poll for the proxy once another connect is
    /// pending, so a handshake nobody waits behind costs no thread wake-up and one that
    /// waits stalls nobody.
    role: &'a dyn Receiving,
}

impl<'a> SupHost<'a> {
    pub fn new(ctx: &'a Ctx, who: &'a Requester, role: &'a dyn Receiving) -> SupHost<'a> {
        SupHost { ctx, who, role }
    }
}

/// Which of the two a wait saw first.
enum Ready {
    Fd,
    Listener,
}

/// Waits until `fd` has one of `events` (or an error/hangup) or the listener has a pending
/// notification (or hung up), retrying signals, until `deadline` (then `Err(Timeout)`).
fn wait_either(fd: c_int, events: i16, listener: c_int, deadline: Instant) -> Result<Ready, Error> {
    let mut p = [
        libc::pollfd {
            fd,
            events,
            revents: 0,
        },
        libc::pollfd {
            fd: listener,
            events: libc::POLLIN,
            revents: 0,
        },
    ];
    poll_until(&mut p, deadline, None, || Ok(()))?;
    Ok(if p[0].revents != 0 {
        Ready::Fd
    } else {
        Ready::Listener
    })
}

/// No health counters (the state could not be mapped): nothing is ever marked dead.
const NO_HEALTH: Health<'static> = Health {
    dead_until: &[],
    rr: &[],
};

impl Host for SupHost<'_> {
    type DialScope = ();

    fn config(&self) -> Result<&Config, &str> {
        Ok(&self.ctx.cfg)
    }

    fn health(&self) -> Health<'_> {
        self.ctx.shared.as_ref().map_or(NO_HEALTH, |s| s.health())
    }

    fn fake_name(&self, ip: IpAddr) -> Option<Result<String, Error>> {
        if !self.ctx.cfg.proxy_dns {
            return None;
        }
        let s = self.ctx.shared.as_ref()?;
        if !s.ranges.contains(ip) {
            return None;
        }
        let name = s.ranges.id_of(ip).and_then(|id| s.table.name_of(id));
        Some(name.ok_or(Error::UnknownFakeIp(ip)))
    }

    fn log_enabled(&self, level: LogLevel) -> bool {
        self.ctx.log.enabled(level)
    }

    fn log(&self, level: LogLevel, msg: std::fmt::Arguments) {
        self.ctx
            .log
            .line(level, format_args!("[pid {}] {msg}", self.who.pid()))
    }

    fn report_enabled(&self) -> bool {
        self.ctx.cfg.report_file.is_some()
    }

    fn report(&self, e: &Event) {
        let Some(path) = &self.ctx.cfg.report_file else {
            return;
        };
        let Ok(path) = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()) else {
            return;
        };
        let program = self.who.program();
        let pid = self.who.pid();
        let cmdline = std::ffi::CString::new(format!("/proc/{pid}/cmdline"))
            .map(|p| chainsocks_core::report::read_cmdline(&p))
            .unwrap_or_default();
        let who = Who {
            pid,
            ppid: self.who.ppid(),
            program: &program,
            cmdline: &cmdline,
        };
        append_line(&path, line(e, &who).as_bytes());
    }

    fn resolve_real(&self, name: &str, family: c_int) -> Result<IpAddr, String> {
        self.role.hand_over();
        (name, 0)
            .to_socket_addrs()
            .map_err(|e| e.to_string())?
            .map(|a| a.ip())
            .find(|ip| family != libc::AF_INET || ip.is_ipv4())
            .ok_or_else(|| "no address".to_string())
    }

    fn set_peer(&self, _fd: c_int, _asked: SocketAddr, _actual: SocketAddr) {}

    fn begin_dial(&self) {}

    fn wait(&self, fd: c_int, events: i16, deadline: Instant) -> Result<(), Error> {
        if let Some(listener) = self.role.watch() {
            match wait_either(fd, events, listener, deadline)? {
                Ready::Fd => return Ok(()),
                Ready::Listener => self.role.hand_over(),
            }
        }
        poll_wait(fd, events, deadline)
    }

    /// A supervised UDP socket connected to a proxied destination: the launcher makes the
    /// association and connects the program's socket to its UDP hub, which frames the
    /// program's plain datagrams (the program cannot). Direct destinations: the kernel's
    /// connect on the duplicate. Refusals: as the library's.
    fn udp_connect(&self, fd: c_int, dest: SocketAddr, domain: Option<c_int>) -> Outcome {
        self.role.hand_over();
        let cfg = &self.ctx.cfg;
        let (plan, _) = plan(self, cfg, dest);
        let (proxy, target) = match plan {
            Ok(UdpPlan::Proxy { proxy, target, .. }) => (proxy, target),
            Ok(UdpPlan::DirectTo(to)) => {
                return Outcome::Done(
                    chainsocks_core::sys::connect(fd, &to, false)
                        .map(|()| 0)
                        .map_err(Error::Os),
                );
            }
            // Direct and refused destinations: the shared policy (logs and records).
            _ => return udp(self, dest, "connect"),
        };
        let Some(hub) = &self.ctx.hub else {
            return Outcome::Done(Err(Error::Os(libc::ENETUNREACH)));
        };
        let assoc = match associate(self, cfg, proxy, 0, 0, false) {
            Ok(a) => a,
            Err(e) => {
                self.log(
                    LogLevel::Info,
                    format_args!(
                        "UDP to {target}: no association through {proxy} ({} at {}): refused ({})",
                        e.error,
                        e.phase.name(),
                        chainsocks_core::error::errno_name(e.error.errno())
                    ),
                );
                return Outcome::Done(Err(e.error));
            }
        };
        // SAFETY: the association's control fd is ours from here on.
        let ctl =
            unsafe { <std::os::fd::OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(assoc.ctl) };
        let Some(hub_addr) = hub.addr() else {
            return Outcome::Done(Err(Error::Os(libc::ENETUNREACH)));
        };
        // Triage read it (the dialer passes it on); read here only for a caller that did not.
        let domain = domain.map_or_else(
            || chainsocks_core::sys::getsockopt_int(fd, libc::SOL_SOCKET, libc::SO_DOMAIN),
            Ok,
        );
        let to = match (domain, hub_addr.ip()) {
            (Ok(libc::AF_INET6), IpAddr::V4(v4)) => {
                SocketAddr::new(IpAddr::V6(v4.to_ipv6_mapped()), hub_addr.port())
            }
            _ => hub_addr,
        };
        if let Err(e) = chainsocks_core::sys::connect(fd, &to, false) {
            return Outcome::Done(Err(Error::Os(e)));
        }
        let sender = match chainsocks_core::sys::local(fd) {
            Ok(a) => chainsocks_core::connect::unmap(a),
            Err(e) => return Outcome::Done(Err(Error::Os(e))),
        };
        if let Err(e) = hub.register(sender, &target, assoc.relay, ctl) {
            self.log(LogLevel::Error, format_args!("UDP hub: {e}"));
            return Outcome::Done(Err(Error::Os(libc::EIO)));
        }
        self.log(
            LogLevel::Info,
            format_args!(
                "UDP association through {proxy} (relay {}) for {target}",
                assoc.relay
            ),
        );
        let _ = Bypass::NotStream;
        Outcome::Done(Ok(0))
    }
}
