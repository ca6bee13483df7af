//! `socks4::decode_reply` (client side): decoder contract, and the 8 bytes re-encode exactly.
#![no_main]

use chainsocks_core::proto::socks4::{decode_reply, encode_reply};
use chainsocks_fuzz::{check_decoder, check_reencode};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Some((reply, used)) = check_decoder(data, decode_reply) {
        assert_eq!(used, 8);
        let mut out = Vec::new();
        encode_reply(reply.code, reply.port, reply.ip, &mut out);
        assert_eq!(out, data[..used], "{reply:?}");
        check_reencode(&reply, &out, decode_reply);
    }
});
