//! `socks4::decode_request` (server side): decoder contract; a CONNECT request that
//! `encode_connect` can express encodes back to the same request.
#![no_main]

use chainsocks_core::proto::Dest;
use chainsocks_core::proto::socks4::{CMD_CONNECT, MAX_FIELD, decode_request, encode_connect};
use chainsocks_fuzz::{check_decoder, check_reencode};
use libfuzzer_sys::fuzz_target;
use std::net::{Ipv4Addr, SocketAddr};

fuzz_target!(|data: &[u8]| {
    let Some((req, used)) = check_decoder(data, decode_request) else {
        return;
    };
    assert!(req.user_id.len() <= MAX_FIELD && !req.user_id.contains(&0));
    let extra = req.name.as_ref().map_or(0, |n| n.len() + 1);
    assert_eq!(used, 8 + req.user_id.len() + 1 + extra, "{req:?}");
    if let Some(name) = &req.name {
        assert!(!name.is_empty() && name.len() <= MAX_FIELD && !name.contains(&0));
        let [a, b, c, d] = req.ip.octets();
        assert!(a == 0 && b == 0 && c == 0 && d != 0, "{req:?}");
    }

    // encode_connect sends CONNECT, and 0.0.0.1 as the SOCKS4a marker.
    let dest = match &req.name {
        None => Dest::Ip(SocketAddr::from((req.ip, req.port))),
        Some(name) => match std::str::from_utf8(name) {
            Ok(s) => Dest::Name(s.to_string(), req.port),
            Err(_) => return,
        },
    };
    let mut out = Vec::new();
    encode_connect(&dest, &req.user_id, &mut out).expect("a decoded request is encodable");
    let mut expected = req.clone();
    expected.command = CMD_CONNECT;
    if expected.name.is_some() {
        expected.ip = Ipv4Addr::new(0, 0, 0, 1);
    }
    if req == expected {
        assert_eq!(out, data[..used]);
    }
    check_reencode(&expected, &out, decode_request);
});
