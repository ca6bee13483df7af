//! `--isolate`: the program runs in a new network namespace whose only interface is `lo`
//! (plus a user namespace when not root, and a mount namespace for its own resolv.conf and
//! hosts). Nothing is reachable but the launcher's forwarders: for every proxy, a listener on
//! the namespace's loopback that the launcher — outside, in the original namespace — relays to
//! the real proxy; and one per `--allow-direct HOST:PORT`.
//!
//! How: the forked child unshares, brings `lo` up, binds the listeners, sends their fds to the
//! launcher over a socketpair (SCM_RIGHTS), waits for a go, then execs the program. The
//! launcher accepts on those fds (sockets belong to the namespace they were made in) and
//! connects out from its own namespace; data moves with splice(2) through a pipe, one thread
//! per direction with a small stack.
//! Must never: run the program unisolated when the namespace cannot be made (the child exits
//! with the reason, the launcher prints it and exits 2), or forward anywhere but the planned
//! targets.

use std::ffi::CString;
use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpStream, ToSocketAddrs};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;
use std::time::Duration;

use chainsocks_core::config::{Config, Policy, Rule, RuleAction};
use chainsocks_core::rules::{AddrPort, Dnat, Pattern};

use crate::private::PrivateDir;

/// One in-namespace listener and where the launcher forwards what it accepts.
#[derive(Debug, Clone)]
pub struct Forward {
    pub inside: SocketAddr,
    pub target: SocketAddr,
}

/// Everything the sandbox needs, decided before fork.
pub struct Plan {
    pub forwards: Vec<Forward>,
    /// The in-namespace UDP hub (datagrams to SOCKS5 relays outside the sandbox).
    pub hub: SocketAddr,
    /// The in-namespace DNS responder (UDP and TCP), when remote DNS is on: the sandbox's
    /// resolv.conf names it.
    pub responder: Option<SocketAddr>,
    pub resolv_conf: CString,
    pub hosts: CString,
    pub root: bool,
    /// The launch's shared state, as a file in the plan's private directory (created empty).
    state: (OwnedFd, std::path::PathBuf),
    /// The private directory (random name, 0700), removed with its files when the plan drops.
    pub dir: PrivateDir,
}

/// The in-namespace UDP hub's port.
const HUB_PORT: u16 = 19_999;

/// First port of the proxy forwarders inside the namespace (a fresh namespace has every port
/// free, so the plan can name them before the namespace exists).
const FIRST_PORT: u16 = 20_000;

/// Prepares `cfg` for the sandbox (policy proxy-only, first hops via the forwarders,
/// allow-direct entries) and returns the plan.
pub fn plan(cfg: &mut Config, allow_direct: &[String]) -> Result<Plan, String> {
    cfg.policy = Policy::ProxyOnly;
    let mut forwards = Vec::new();
    let mut proxies: Vec<SocketAddr> = cfg
        .proxies
        .iter()
        .chain(cfg.chains.values().flat_map(|c| c.proxies.iter()))
        .flat_map(|p| p.socket_addrs())
        .collect();
    proxies.sort();
    proxies.dedup();
    for (i, target) in proxies.iter().enumerate() {
        let inside = SocketAddr::new(Ipv4Addr::LOCALHOST.into(), FIRST_PORT + i as u16);
        cfg.via.insert(target.to_string(), inside.to_string());
        forwards.push(Forward {
            inside,
            target: *target,
        });
    }
    let mut hosts_extra = String::new();
    let mut front_rules = Vec::new();
    for (i, spec) in allow_direct.iter().enumerate() {
        let (host, port) = chainsocks_core::config::split_host_port(spec)
            .map_err(|e| format!("--allow-direct {spec}: {e}"))?;
        let port = port.ok_or_else(|| format!("--allow-direct {spec}: needs HOST:PORT"))?;
        let target = (host.as_str(), port)
            .to_socket_addrs()
            .map_err(|e| format!("--allow-direct {spec}: {e}"))?
            .next()
            .ok_or_else(|| format!("--allow-direct {spec}: no address"))?;
        let inside_ip = Ipv4Addr::new(127, 0, 100, 1 + i as u8);
        let inside = SocketAddr::new(inside_ip.into(), port);
        match host.parse::<IpAddr>() {
            Ok(ip) => cfg.dnat.insert(
                0,
                Dnat {
                    from: AddrPort {
                        ip,
                        port: Some(port),
                    },
                    to: AddrPort {
                        ip: inside_ip.into(),
                        port: Some(port),
                    },
                },
            ),
            // A name: the sandbox's own /etc/hosts answers it with the forwarder's address.
            Err(_) => hosts_extra.push_str(&format!("{inside_ip} {host}\n")),
        }
        let dest = Pattern::parse(&inside.to_string()).map_err(|e| e.to_string())?;
        cfg.allowed_direct.push(dest.clone());
        front_rules.push(Rule {
            dest,
            action: Some(RuleAction::Direct),
            chain: None,
        });
        forwards.push(Forward { inside, target });
    }
    front_rules.append(&mut cfg.rules);
    cfg.rules = front_rules;

    // SAFETY: getuid cannot fail.
    let root = unsafe { libc::geteuid() } == 0;
    let dir = PrivateDir::create("chainsocks-isolate")?;
    // The sandbox's nameserver is the launch's fake-DNS responder on its own loopback: a
    // program that sends its own DNS packets gets fake addresses (names then reach the proxy),
    // never a real query. Without remote DNS: a nameserver with no route (ENETUNREACH).
    // (Bind-mount sources are paths in the private directory: a file opened before the
    // child's unshare(CLONE_NEWNS) belongs to the old namespace's mount and cannot be bound.)
    let responder = cfg
        .proxy_dns
        .then(|| SocketAddr::new(Ipv4Addr::LOCALHOST.into(), 53));
    let resolv: &[u8] = if responder.is_some() {
        b"# chainsocks --isolate: names resolve through the proxy\nnameserver 127.0.0.1\n"
    } else {
        b"# chainsocks --isolate: names resolve through the proxy\nnameserver 192.0.2.53\n"
    };
    dir.create_file("resolv.conf", resolv)?;
    if let Some(r) = responder {
        cfg.dns_redirect = Some(chainsocks_core::config::DnsRedirect {
            nameservers: vec![r.ip()],
            udp4: r,
            udp6: None,
            tcp4: r,
            tcp6: None,
        });
    }
    let hub = SocketAddr::new(Ipv4Addr::LOCALHOST.into(), HUB_PORT);
    cfg.udp_via = Some(hub.to_string());
    cfg.udp_hub = Some(hub.to_string());
    let mut hosts =
        std::fs::read_to_string("/etc/hosts").unwrap_or_else(|_| "127.0.0.1 localhost\n".into());
    hosts.push_str(&hosts_extra);
    dir.create_file("hosts", hosts.as_bytes())?;
    let c = |name: &str| {
        CString::new(dir.path().join(name).into_os_string().into_encoded_bytes())
            .map_err(|_| "NUL in path".to_string())
    };
    Ok(Plan {
        forwards,
        hub,
        responder,
        resolv_conf: c("resolv.conf")?,
        hosts: c("hosts")?,
        root,
        state: (dir.create_file("state", b"")?, dir.path().join("state")),
        dir,
    })
}

impl Plan {
    /// The shared-state file: its fd, and the path the sandboxed processes open.
    pub fn state_file(&self) -> (RawFd, &std::path::Path) {
        (self.state.0.as_raw_fd(), &self.state.1)
    }
}

fn os_err(what: &str) -> String {
    format!("{what}: {}", std::io::Error::last_os_error())
}

/// Child side, after fork: enter the namespaces, set them up, hand the listeners to the
/// launcher, wait for its go. On error: the reason (the caller writes it and exits).
pub fn enter(plan: &Plan, chan: &UnixStream) -> Result<(), String> {
    // SAFETY: getuid/getgid cannot fail.
    let (uid, gid) = unsafe { (libc::getuid(), libc::getgid()) };
    let flags =
        libc::CLONE_NEWNET | libc::CLONE_NEWNS | if plan.root { 0 } else { libc::CLONE_NEWUSER };
    // SAFETY: unshare of this (single-threaded) child.
    if unsafe { libc::unshare(flags) } != 0 {
        let e = std::io::Error::last_os_error();
        return Err(if plan.root {
            format!("cannot create a network namespace: {e}")
        } else {
            format!(
                "cannot create a user + network namespace as an unprivileged user: {e} \
                 (unprivileged user namespaces are disabled here: kernel.unprivileged_userns_clone \
                 or user.max_user_namespaces; run as root instead)"
            )
        });
    }
    if !plan.root {
        let w = |path: &str, text: String| {
            std::fs::write(path, text).map_err(|e| format!("{path}: {e}"))
        };
        w("/proc/self/setgroups", "deny".into())?;
        w("/proc/self/uid_map", format!("{uid} {uid} 1"))?;
        w("/proc/self/gid_map", format!("{gid} {gid} 1"))?;
    }
    // SAFETY: mount calls with valid C strings, in our own new mount namespace.
    unsafe {
        if libc::mount(
            std::ptr::null(),
            c"/".as_ptr(),
            std::ptr::null(),
            libc::MS_REC | libc::MS_PRIVATE,
            std::ptr::null(),
        ) != 0
        {
            return Err(os_err("making mounts private"));
        }
        for (src, dst) in [
            (&plan.resolv_conf, c"/etc/resolv.conf"),
            (&plan.hosts, c"/etc/hosts"),
        ] {
            if libc::mount(
                src.as_ptr(),
                dst.as_ptr(),
                std::ptr::null(),
                libc::MS_BIND,
                std::ptr::null(),
            ) != 0
            {
                return Err(os_err(&format!("bind-mounting {}", dst.to_string_lossy())));
            }
        }
    }
    lo_up()?;
    let mut fds: Vec<RawFd> = Vec::new();
    for f in &plan.forwards {
        fds.push(listen(f.inside)?);
    }
    // The UDP hub, then the DNS responder's UDP and TCP sockets (the launcher serves them).
    fds.push(udp_socket(plan.hub)?);
    if let Some(r) = plan.responder {
        fds.push(udp_socket(r)?);
        fds.push(listen(r)?);
    }
    send_fds(chan, &fds)?;
    for fd in fds {
        // SAFETY: ours; the launcher holds its own copies now.
        unsafe { libc::close(fd) };
    }
    let mut go = [0u8; 1];
    (&*chan)
        .read_exact(&mut go)
        .map_err(|e| format!("waiting for the launcher: {e}"))?;
    Ok(())
}

fn lo_up() -> Result<(), String> {
    // SAFETY: an ioctl on a throwaway datagram socket with a zeroed ifreq naming "lo".
    unsafe {
        let s = libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0);
        if s < 0 {
            return Err(os_err("socket"));
        }
        let mut ifr: libc::ifreq = std::mem::zeroed();
        for (d, b) in ifr.ifr_name.iter_mut().zip(b"lo\0") {
            *d = *b as libc::c_char;
        }
        let ok = libc::ioctl(s, libc::SIOCGIFFLAGS, &mut ifr) == 0 && {
            ifr.ifr_ifru.ifru_flags |= libc::IFF_UP as libc::c_short;
            libc::ioctl(s, libc::SIOCSIFFLAGS, &mut ifr) == 0
        };
        let e = os_err("bringing lo up");
        libc::close(s);
        if ok { Ok(()) } else { Err(e) }
    }
}

fn udp_socket(at: SocketAddr) -> Result<RawFd, String> {
    let s = std::net::UdpSocket::bind(at).map_err(|e| format!("binding udp {at} inside: {e}"))?;
    Ok(std::os::fd::IntoRawFd::into_raw_fd(s))
}

impl Plan {
    /// How many fds the child sends: the forwarders' listeners, the hub, the responder's two.
    pub fn fd_count(&self) -> usize {
        self.forwards.len() + 1 + if self.responder.is_some() { 2 } else { 0 }
    }
}

/// The fds the child sent, sorted out.
pub struct Received {
    pub listeners: Vec<OwnedFd>,
    pub hub: std::net::UdpSocket,
    pub responder: Option<(std::net::UdpSocket, std::net::TcpListener)>,
}

/// Sorts the child's fds ([`Plan::fd_count`] of them, in the order [`enter`] sent them).
pub fn sort_received(plan: &Plan, mut fds: Vec<OwnedFd>) -> Result<Received, String> {
    let rest = fds.split_off(plan.forwards.len().min(fds.len()));
    let mut rest = rest.into_iter();
    let hub = rest.next().ok_or("no UDP hub from the sandbox")?;
    let responder = match plan.responder {
        Some(_) => {
            let u = rest.next().ok_or("no DNS responder from the sandbox")?;
            let t = rest.next().ok_or("no DNS responder from the sandbox")?;
            Some((std::net::UdpSocket::from(u), std::net::TcpListener::from(t)))
        }
        None => None,
    };
    Ok(Received {
        listeners: fds,
        hub: std::net::UdpSocket::from(hub),
        responder,
    })
}

fn listen(at: SocketAddr) -> Result<RawFd, String> {
    let l =
        std::net::TcpListener::bind(at).map_err(|e| format!("listening on {at} inside: {e}"))?;
    let fd = l.as_raw_fd();
    // SAFETY: backlog for many concurrent connections on our own listener.
    unsafe { libc::listen(fd, 4096) };
    Ok(std::os::fd::IntoRawFd::into_raw_fd(l))
}

pub fn send_fds(chan: &UnixStream, fds: &[RawFd]) -> Result<(), String> {
    let count = (fds.len() as u32).to_le_bytes();
    let space = unsafe { libc::CMSG_SPACE(std::mem::size_of_val(fds) as u32) } as usize;
    let mut cbuf = vec![0u8; space.max(1)];
    let mut iov = libc::iovec {
        iov_base: count.as_ptr() as *mut libc::c_void,
        iov_len: 4,
    };
    // SAFETY: a msghdr over our buffers; one SCM_RIGHTS control message with the fds.
    unsafe {
        let mut msg: libc::msghdr = std::mem::zeroed();
        msg.msg_iov = &mut iov;
        msg.msg_iovlen = 1;
        if !fds.is_empty() {
            msg.msg_control = cbuf.as_mut_ptr().cast();
            msg.msg_controllen = space;
            let c = libc::CMSG_FIRSTHDR(&msg);
            (*c).cmsg_level = libc::SOL_SOCKET;
            (*c).cmsg_type = libc::SCM_RIGHTS;
            (*c).cmsg_len = libc::CMSG_LEN(std::mem::size_of_val(fds) as u32) as usize;
            std::ptr::copy_nonoverlapping(
                fds.as_ptr(),
                libc::CMSG_DATA(c) as *mut RawFd,
                fds.len(),
            );
        }
        // Marked: the supervisor's listener itself is handed over this way, from under the
        // filter, before anyone could answer a notification.
        if libc::syscall(
            libc::SYS_sendmsg,
            chan.as_raw_fd() as libc::c_long,
            &msg as *const libc::msghdr,
            0 as libc::c_long,
            chainsocks_core::sys::MARKER_ARG,
        ) < 0
        {
            return Err(os_err("handing the listeners to the launcher"));
        }
    }
    Ok(())
}

/// Launcher side: the listeners the child made, or the child's reason for failing.
pub fn receive(chan: &UnixStream, n: usize) -> Result<Vec<OwnedFd>, String> {
    let mut data = [0u8; 4096];
    let space = unsafe { libc::CMSG_SPACE((n.max(1) * size_of::<RawFd>()) as u32) } as usize;
    let mut cbuf = vec![0u8; space];
    let mut iov = libc::iovec {
        iov_base: data.as_mut_ptr().cast(),
        iov_len: data.len(),
    };
    // SAFETY: recvmsg into our buffers; the fds of an SCM_RIGHTS message are ours afterwards.
    unsafe {
        let mut msg: libc::msghdr = std::mem::zeroed();
        msg.msg_iov = &mut iov;
        msg.msg_iovlen = 1;
        msg.msg_control = cbuf.as_mut_ptr().cast();
        msg.msg_controllen = space;
        let got = libc::recvmsg(chan.as_raw_fd(), &mut msg, libc::MSG_CMSG_CLOEXEC);
        if got <= 0 {
            return Err("the sandbox setup ended without a word".into());
        }
        let got = got as usize;
        if let Some(text) = data.get(..got).and_then(|d| d.strip_prefix(b"E")) {
            return Err(String::from_utf8_lossy(text).into_owned());
        }
        let mut out = Vec::new();
        let mut c = libc::CMSG_FIRSTHDR(&msg);
        while !c.is_null() {
            if (*c).cmsg_level == libc::SOL_SOCKET && (*c).cmsg_type == libc::SCM_RIGHTS {
                let k = ((*c).cmsg_len - libc::CMSG_LEN(0) as usize) / size_of::<RawFd>();
                let p = libc::CMSG_DATA(c) as *const RawFd;
                for i in 0..k {
                    out.push(OwnedFd::from_raw_fd(*p.add(i)));
                }
            }
            c = libc::CMSG_NXTHDR(&msg, c);
        }
        if out.len() != n {
            return Err(format!(
                "expected {n} listeners from the sandbox, got {}",
                out.len()
            ));
        }
        Ok(out)
    }
}

/// The child reports a failure to the launcher (then exits).
pub fn report_failure(chan: &UnixStream, why: &str) {
    let mut msg = b"E".to_vec();
    msg.extend_from_slice(why.as_bytes());
    let _ = (&*chan).write_all(&msg);
}

/// Starts the forwarders (accept loops in threads). Each relayed connection holds six fds (two
/// sockets, two pipes): the launcher raises its own soft fd limit to the hard one (the
/// program, already started, keeps its own).
pub fn forward(listeners: Vec<OwnedFd>, forwards: &[Forward]) {
    // SAFETY: get/setrlimit on our own process.
    unsafe {
        let mut lim: libc::rlimit = std::mem::zeroed();
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) == 0 && lim.rlim_cur < lim.rlim_max {
            lim.rlim_cur = lim.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
        }
    }
    for (fd, f) in listeners.into_iter().zip(forwards) {
        let l = std::net::TcpListener::from(fd);
        let target = f.target;
        let _ = std::thread::Builder::new()
            .stack_size(128 * 1024)
            .spawn(move || {
                for conn in l.incoming() {
                    let Ok(inner) = conn else { continue };
                    let _ = std::thread::Builder::new()
                        .stack_size(128 * 1024)
                        .spawn(move || relay(inner, target));
                }
            });
    }
}

/// Connects out to `target` and moves bytes both ways until both sides are done.
fn relay(inner: TcpStream, target: SocketAddr) {
    let Ok(outer) = TcpStream::connect_timeout(&target, Duration::from_secs(30)) else {
        return; // dropping `inner` closes it: the program sees the proxy refuse
    };
    let _ = inner.set_nodelay(true);
    let _ = outer.set_nodelay(true);
    // Both directions share the two sockets (no dup: fewer fds); they are closed only after
    // both directions are done (the scope joins the other thread).
    std::thread::scope(|sc| {
        let back = std::thread::Builder::new()
            .stack_size(128 * 1024)
            .spawn_scoped(sc, || pump(&outer, &inner));
        pump(&inner, &outer);
        if let Ok(h) = back {
            let _ = h.join();
        }
    });
}

/// One direction: splice from `from` into a pipe and from the pipe into `to` (zero copy);
/// at EOF, half-close `to`.
fn pump(from: &TcpStream, to: &TcpStream) {
    let mut p = [0 as RawFd; 2];
    // SAFETY: a pipe for this direction, closed below.
    if unsafe { libc::pipe2(p.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return;
    }
    let (pr, pw) = (p[0], p[1]);
    loop {
        // SAFETY: splice between our fds.
        let n = unsafe {
            libc::splice(
                from.as_raw_fd(),
                std::ptr::null_mut(),
                pw,
                std::ptr::null_mut(),
                1 << 16,
                libc::SPLICE_F_MOVE,
            )
        };
        if n <= 0 {
            break;
        }
        let mut left = n as usize;
        while left > 0 {
            // SAFETY: as above.
            let m = unsafe {
                libc::splice(
                    pr,
                    std::ptr::null_mut(),
                    to.as_raw_fd(),
                    std::ptr::null_mut(),
                    left,
                    libc::SPLICE_F_MOVE,
                )
            };
            if m <= 0 {
                left = usize::MAX;
                break;
            }
            left -= m as usize;
        }
        if left == usize::MAX {
            break;
        }
    }
    let _ = to.shutdown(std::net::Shutdown::Write);
    let _ = from.shutdown(std::net::Shutdown::Read);
    // SAFETY: our pipe.
    unsafe {
        libc::close(pr);
        libc::close(pw);
    }
}
