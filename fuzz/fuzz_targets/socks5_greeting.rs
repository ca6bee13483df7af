//! `socks5::decode_greeting` (server side): decoder contract; a non-empty method list
//! re-encodes exactly.
#![no_main]

use chainsocks_core::proto::socks5::{decode_greeting, encode_greeting};
use chainsocks_fuzz::{check_decoder, check_reencode};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((methods, used)) = check_decoder(data, decode_greeting) else {
        return;
    };
    assert_eq!(used, 2 + methods.len());
    let mut out = Vec::new();
    match encode_greeting(&methods, &mut out) {
        Ok(()) => {
            assert_eq!(out, data[..used]);
            check_reencode(&methods, &out, decode_greeting);
        }
        Err(_) => assert!(methods.is_empty() && out.is_empty()),
    }
});
