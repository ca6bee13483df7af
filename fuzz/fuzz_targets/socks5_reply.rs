//! `socks5::decode_reply` (client side): decoder contract; the reply re-encodes to the same
//! bytes (except RSV, which is ignored on input and 0 on output).
#![no_main]

use chainsocks_core::proto::socks5::{ReplyCode, WireAddr, decode_reply, encode_reply};
use chainsocks_fuzz::{check_decoder, check_reencode};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((reply, used)) = check_decoder(data, decode_reply) else {
        return;
    };
    assert_eq!(ReplyCode::from_u8(reply.code.to_u8()), reply.code);
    if let WireAddr::Name(n, _) = &reply.bound {
        assert!(!n.is_empty() && n.len() <= 255);
    }
    let mut out = Vec::new();
    encode_reply(reply.code, &reply.bound, &mut out).expect("a decoded reply is encodable");
    let mut wire = data[..used].to_vec();
    wire[2] = 0;
    assert_eq!(out, wire, "{reply:?}");
    check_reencode(&reply, &out, decode_reply);
});
