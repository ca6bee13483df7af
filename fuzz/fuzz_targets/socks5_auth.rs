//! `socks5::decode_auth_reply` (client side, RFC 1929 status): decoder contract; the status
//! re-encodes (VER 1; VER 5 is accepted on input).
#![no_main]

use chainsocks_core::proto::socks5::{decode_auth_reply, encode_auth_reply};
use chainsocks_fuzz::{check_decoder, check_reencode};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Some((status, used)) = check_decoder(data, decode_auth_reply) {
        assert_eq!(used, 2);
        assert!(matches!(data[0], 1 | 5));
        assert_eq!(status, data[1]);
        let mut out = Vec::new();
        encode_auth_reply(status, &mut out);
        assert_eq!(out, [1, status]);
        check_reencode(&status, &out, decode_auth_reply);
    }
});
