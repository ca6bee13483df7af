//! `socks5::decode_method_selection` (client side): decoder contract; re-encodes exactly.
#![no_main]

use chainsocks_core::proto::socks5::{Method, decode_method_selection, encode_method_selection};
use chainsocks_fuzz::{check_decoder, check_reencode};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Some((m, used)) = check_decoder(data, decode_method_selection) {
        assert_eq!(used, 2);
        assert_eq!(Method::from_u8(m.to_u8()), m);
        let mut out = Vec::new();
        encode_method_selection(m, &mut out);
        assert_eq!(out, data[..used], "{m:?}");
        check_reencode(&m, &out, decode_method_selection);
    }
});
