//! `HostsFile::parse` (/etc/hosts) on UTF-8 input: never panics; every name kept is a valid
//! normalized host name; every name has at least one address, none twice; every address's
//! name is one of its names.
#![no_main]

use chainsocks_core::fakedns::normalize;
use chainsocks_core::hosts::HostsFile;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let h = HostsFile::parse(text);
    for (name, (canon, addrs)) in &h.by_name {
        assert_eq!(normalize(name).as_deref(), Some(name.as_str()), "{name:?}");
        assert_eq!(
            normalize(canon).as_deref(),
            Some(canon.as_str()),
            "{canon:?}"
        );
        assert!(!addrs.is_empty(), "{name:?}");
        for (i, a) in addrs.iter().enumerate() {
            assert!(!addrs[..i].contains(a), "{name:?}: {a} twice");
        }
    }
    for (ip, name) in &h.by_addr {
        let (_, addrs) = h
            .by_name
            .get(name)
            .unwrap_or_else(|| panic!("{name:?} unknown"));
        assert!(addrs.contains(ip), "{ip} not an address of {name:?}");
    }
});
