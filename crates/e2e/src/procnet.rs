//! Which process owns a local UDP socket: `(IP, port)` -> socket inode (from
//! `/proc/thread-self/net/udp` and `udp6`) -> pids whose `/proc/PID/fd` holds
//! `socket:[INODE]` -> their `/proc/PID/comm`.
//!
//! Owns: parsing those /proc files, nothing else (no sockets, no signals).
//! Never does: read another namespace's socket table (it reads the CALLING
//! THREAD's one, `/proc/thread-self/net/...`: `/proc/self/net` would be the
//! thread-group leader's namespace, and [`crate::netns`] moves only a thread),
//! or fail loudly: an owner that cannot be found is `None`, since the sender may
//! be gone by the time we look.
//!
//! Facts:
//! - The kernel prints each address as the raw network-order words with `%08X`,
//!   so the hex of one 32-bit word is its native-endian value (`to_ne_bytes`
//!   gives the address bytes back). `udp6` also lists dual-stack AF_INET6
//!   sockets; an IPv4 peer of such a socket is seen as `::ffff:a.b.c.d`.
//! - Socket inodes are unique machine-wide (sockfs), so the fd scan may look
//!   at every process; a socket shared by several processes (fork, SCM_RIGHTS)
//!   yields all of them.
//! - A full scan of /proc/*/fd costs a few ms: callers cache by inode (an inode
//!   names one socket for its whole life).

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

/// The process(es) that own one socket.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Owner {
    /// The socket's inode.
    pub inode: u64,
    /// Every pid that has it open, ascending.
    pub pids: Vec<u32>,
    /// Their distinct `comm` names (sorted, joined by `,`), e.g. `danted`.
    pub comm: String,
}

/// One row of /proc/net/udp{,6}: local address and inode.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Row {
    local: SocketAddr,
    inode: u64,
}

/// Parses `hex` (8 or 32 hex digits as the kernel prints them) into an address.
fn parse_ip(hex: &str) -> Option<IpAddr> {
    let word = |i: usize| -> Option<[u8; 4]> {
        let s = hex.get(i * 8..i * 8 + 8)?;
        u32::from_str_radix(s, 16).ok().map(u32::to_ne_bytes)
    };
    match hex.len() {
        8 => word(0).map(|b| IpAddr::V4(Ipv4Addr::from(b))),
        32 => {
            let mut a = [0u8; 16];
            for (i, chunk) in a.chunks_exact_mut(4).enumerate() {
                chunk.copy_from_slice(&word(i)?);
            }
            Some(IpAddr::V6(Ipv6Addr::from(a)))
        }
        _ => None,
    }
}

/// Parses one table (the contents of /proc/net/udp or udp6), header included.
fn parse_table(text: &str) -> Vec<Row> {
    text.lines()
        .skip(1)
        .filter_map(|line| {
            let f: Vec<&str> = line.split_whitespace().collect();
            let (ip, port) = f.get(1)?.split_once(':')?;
            let ip = parse_ip(ip)?;
            let port = u16::from_str_radix(port, 16).ok()?;
            let inode = f.get(9)?.parse().ok()?;
            Some(Row {
                local: SocketAddr::new(ip, port),
                inode,
            })
        })
        .collect()
}

/// `a` as IPv4 if it is v4-mapped, else as is.
fn unmapped(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

/// The inode of the UDP socket (in the calling thread's network namespace)
/// bound to `addr`: an exact (IP, port) match first, then a wildcard-bound
/// socket on that port (`0.0.0.0` / `::`). A v4-mapped peer of a dual-stack
/// socket is matched in either table.
pub fn udp_inode(addr: SocketAddr) -> Option<u64> {
    let mut rows = Vec::new();
    for t in ["udp", "udp6"] {
        if let Ok(text) = std::fs::read_to_string(format!("/proc/thread-self/net/{t}")) {
            rows.extend(parse_table(&text));
        }
    }
    pick(&rows, addr)
}

fn pick(rows: &[Row], addr: SocketAddr) -> Option<u64> {
    let want = unmapped(addr.ip());
    let on_port = || rows.iter().filter(|r| r.local.port() == addr.port());
    on_port()
        .find(|r| unmapped(r.local.ip()) == want)
        .or_else(|| on_port().find(|r| r.local.ip().is_unspecified()))
        .map(|r| r.inode)
}

/// Every pid whose fd table holds `socket:[inode]`, ascending.
pub fn pids_of_inode(inode: u64) -> Vec<u32> {
    let needle = format!("socket:[{inode}]");
    let mut pids = Vec::new();
    let Ok(procs) = std::fs::read_dir("/proc") else {
        return pids;
    };
    for p in procs.flatten() {
        let Some(pid) = p.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
            continue;
        };
        let Ok(fds) = std::fs::read_dir(p.path().join("fd")) else {
            continue;
        };
        let owns = fds.flatten().any(|fd| {
            std::fs::read_link(fd.path())
                .is_ok_and(|t| t.as_os_str().as_encoded_bytes() == needle.as_bytes())
        });
        if owns {
            pids.push(pid);
        }
    }
    pids.sort_unstable();
    pids
}

/// `/proc/PID/comm` without the newline; `None` if the process is gone.
pub fn comm(pid: u32) -> Option<String> {
    std::fs::read_to_string(format!("/proc/{pid}/comm"))
        .ok()
        .map(|s| s.trim_end_matches('\n').to_string())
}

/// Who owns the UDP socket bound to `addr`, looking inodes up in `cache`
/// first (an inode's owner is looked up once).
pub fn udp_owner(addr: SocketAddr, cache: &mut HashMap<u64, Owner>) -> Option<Owner> {
    let inode = udp_inode(addr)?;
    if let Some(o) = cache.get(&inode) {
        return Some(o.clone());
    }
    let pids = pids_of_inode(inode);
    let mut comms: Vec<String> = pids.iter().filter_map(|&p| comm(p)).collect();
    comms.sort();
    comms.dedup();
    if comms.is_empty() {
        return None; // gone already, or not visible: do not cache a miss
    }
    let o = Owner {
        inode,
        pids,
        comm: comms.join(","),
    };
    cache.insert(inode, o.clone());
    Some(o)
}

#[cfg(test)]
mod tests {
    use super::*;

    const UDP: &str = "   sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode ref pointer drops\n\
  1: 0100007F:4268 00000000:0000 07 00000000:00000000 00:00000000 00000000     0        0 1234 2 0000000000000000 0\n\
  2: 00000000:0035 00000000:0000 07 00000000:00000000 00:00000000 00000000     0        0 99 2 0000000000000000 0\n";
    const UDP6: &str = "  sl  local_address                         remote_address                        st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode ref pointer drops\n\
  1: 00000000000000000000000001000000:4269 00000000000000000000000000000000:0000 07 00000000:00000000 00:00000000 00000000     0        0 5678 2 0000000000000000 0\n\
  2: 0000000000000000FFFF00000200007F:426A 00000000000000000000000000000000:0000 07 00000000:00000000 00:00000000 00000000     0        0 777 2 0000000000000000 0\n";

    #[test]
    fn parses_both_tables_and_picks_exact_then_wildcard() {
        if cfg!(target_endian = "big") {
            return; // the fixtures are little-endian kernel output
        }
        let mut rows = parse_table(UDP);
        rows.extend(parse_table(UDP6));
        assert_eq!(rows.len(), 4);
        assert_eq!(rows[0].local, "127.0.0.1:17000".parse().unwrap());
        assert_eq!(rows[2].local, "[::1]:17001".parse().unwrap());
        assert_eq!(rows[3].local, "[::ffff:127.0.0.2]:17002".parse().unwrap());
        assert_eq!(pick(&rows, "127.0.0.1:17000".parse().unwrap()), Some(1234));
        assert_eq!(pick(&rows, "127.0.0.9:53".parse().unwrap()), Some(99));
        assert_eq!(pick(&rows, "[::1]:17001".parse().unwrap()), Some(5678));
        // a v4 peer of a dual-stack socket, either spelling
        assert_eq!(pick(&rows, "127.0.0.2:17002".parse().unwrap()), Some(777));
        assert_eq!(pick(&rows, "127.0.0.1:1".parse().unwrap()), None);
    }
}
