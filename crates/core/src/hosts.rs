//! /etc/hosts, parsed: what local names the resolver hooks answer from the files alone (never
//! DNS), and the names of local addresses for reverse lookups.
//!
//! Owns: the file's syntax as glibc reads it (an address, then names; `#` starts a comment
//! anywhere on a line; unparsable lines are skipped), names normalized like the fake-DNS table's.
//! Must never: panic on any input, or keep a name that is not a valid host name.

use std::collections::HashMap;
use std::net::IpAddr;

use crate::fakedns::normalize;

/// A parsed hosts file.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct HostsFile {
    /// name → (canonical name: the first name of its first line, addresses in file order).
    pub by_name: HashMap<String, (String, Vec<IpAddr>)>,
    /// address → its first name.
    pub by_addr: HashMap<IpAddr, String>,
}

impl HostsFile {
    /// Parses the text of a hosts file.
    pub fn parse(text: &str) -> HostsFile {
        let mut h = HostsFile::default();
        for line in text.lines() {
            let mut words = line.split('#').next().unwrap_or("").split_whitespace();
            let Some(ip) = words.next().and_then(|a| a.parse::<IpAddr>().ok()) else {
                continue;
            };
            let names: Vec<String> = words.filter_map(normalize).collect();
            let Some(canon) = names.first().cloned() else {
                continue;
            };
            h.by_addr.entry(ip).or_insert_with(|| canon.clone());
            for n in names {
                let e = h
                    .by_name
                    .entry(n)
                    .or_insert_with(|| (canon.clone(), Vec::new()));
                if !e.1.contains(&ip) {
                    e.1.push(ip);
                }
            }
        }
        h
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parsing() {
        let h = HostsFile::parse(
            "127.0.0.1 localhost\n::1 localhost ip6-localhost # c\n10.1.2.3 App.Local app # x\n\
             10.1.2.4 app\n# 10.9.9.9 commented\nbogus line\n10.1.2.3\n",
        );
        let (canon, addrs) = &h.by_name["app"];
        assert_eq!(canon, "app.local");
        assert_eq!(
            addrs,
            &[
                "10.1.2.3".parse::<IpAddr>().unwrap(),
                "10.1.2.4".parse().unwrap()
            ]
        );
        assert_eq!(h.by_name["localhost"].1.len(), 2);
        assert_eq!(
            h.by_addr[&"10.1.2.3".parse::<IpAddr>().unwrap()],
            "app.local"
        );
        assert!(!h.by_name.contains_key("commented"));
        assert!(
            !h.by_addr
                .contains_key(&"10.9.9.9".parse::<IpAddr>().unwrap())
        );
    }
}
