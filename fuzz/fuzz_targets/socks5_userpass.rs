//! `socks5::decode_userpass` (server side, RFC 1929): decoder contract; credentials with a
//! non-empty user name re-encode exactly.
#![no_main]

use chainsocks_core::proto::socks5::{decode_userpass, encode_userpass};
use chainsocks_fuzz::{check_decoder, check_reencode};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some(((user, pass), used)) = check_decoder(data, decode_userpass) else {
        return;
    };
    assert_eq!(used, 3 + user.len() + pass.len());
    let mut out = Vec::new();
    match encode_userpass(&user, &pass, &mut out) {
        Ok(()) => {
            assert_eq!(out, data[..used]);
            check_reencode(&(user, pass), &out, decode_userpass);
        }
        Err(_) => assert!(user.is_empty() && out.is_empty()),
    }
});
