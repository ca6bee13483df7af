//! `socks5::decode_request` (server side): decoder contract; `encode_request` gives back the
//! same bytes (RSV aside) for a destination it can express (a UTF-8 name or an address).
#![no_main]

use chainsocks_core::proto::socks5::{Command, WireAddr, decode_request, encode_request};
use chainsocks_fuzz::{check_decoder, check_reencode};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some(((cmd, addr), used)) = check_decoder(data, decode_request) else {
        return;
    };
    assert_eq!(Command::from_u8(cmd.to_u8()), cmd);
    let Some(dest) = addr.to_dest() else {
        assert!(matches!(&addr, WireAddr::Name(n, _) if std::str::from_utf8(n).is_err()));
        return;
    };
    assert_eq!(WireAddr::from_dest(&dest), addr);
    let mut out = Vec::new();
    encode_request(cmd, &dest, &mut out).expect("a decoded request is encodable");
    let mut wire = data[..used].to_vec();
    wire[2] = 0;
    assert_eq!(out, wire, "{cmd:?} {addr:?}");
    check_reencode(&(cmd, addr), &out, decode_request);
});
