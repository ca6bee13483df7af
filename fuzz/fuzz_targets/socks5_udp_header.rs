//! `socks5::decode_udp_header` (UDP ASSOCIATE datagrams): decoder contract; the header
//! re-encodes to the same bytes (RSV aside) for a destination `encode_udp_header` can express.
#![no_main]

use chainsocks_core::proto::socks5::{WireAddr, decode_udp_header, encode_udp_header};
use chainsocks_fuzz::{check_decoder, check_reencode};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some(((frag, addr), used)) = check_decoder(data, decode_udp_header) else {
        return;
    };
    let Some(dest) = addr.to_dest() else {
        assert!(matches!(&addr, WireAddr::Name(n, _) if std::str::from_utf8(n).is_err()));
        return;
    };
    let mut out = Vec::new();
    encode_udp_header(frag, &dest, &mut out).expect("a decoded header is encodable");
    let mut wire = data[..used].to_vec();
    wire[0] = 0;
    wire[1] = 0;
    assert_eq!(out, wire, "{frag} {addr:?}");
    check_reencode(&(frag, addr), &out, decode_udp_header);
});
