//! `http::decode_response` with `MAX_HEADER` (client side): decoder contract, the status line
//! and reason as documented, and the same verdict under a small `limit` for a short header.
#![no_main]

use chainsocks_core::proto::Decoded;
use chainsocks_core::proto::http::{MAX_HEADER, Response, decode_response};
use chainsocks_fuzz::check_decoder;
use libfuzzer_sys::fuzz_target;

/// A small header limit, so that `HttpHeaderTooLarge` is reached with short inputs too.
const SMALL: usize = 64;

fn check_response(data: &[u8], resp: &Response, used: usize, limit: usize) {
    assert!(used <= limit, "used {used} over the limit {limit}");
    assert!(data.starts_with(b"HTTP/1.0 ") || data.starts_with(b"HTTP/1.1 "));
    let digits = &data[9..12];
    assert!(digits.iter().all(u8::is_ascii_digit));
    let status = digits
        .iter()
        .fold(0u16, |s, d| s * 10 + u16::from(d - b'0'));
    assert_eq!(resp.status, status);
    assert_eq!(resp.is_success(), (200..300).contains(&status));
    let r = &resp.reason;
    assert!(r.len() <= 200, "reason of {} bytes", r.len());
    assert!(!r.chars().any(char::is_control), "{r:?}");
    assert_eq!(r.trim(), r.as_str());
    // The header ends with its empty line.
    let head = &data[..used];
    assert!(
        head.ends_with(b"\n\n") || head.ends_with(b"\n\r\n"),
        "{head:?}"
    );
}

fuzz_target!(|data: &[u8]| {
    let big = check_decoder(data, |b| decode_response(b, MAX_HEADER));
    if let Some((resp, used)) = &big {
        check_response(data, resp, *used, MAX_HEADER);
    }
    let small = check_decoder(data, |b| decode_response(b, SMALL));
    if let Some((resp, used)) = &small {
        check_response(data, resp, *used, SMALL);
    }
    match (&big, &small) {
        (Some(b), Some(s)) => assert_eq!(b, s),
        (Some((_, used)), None) => assert!(*used > SMALL, "Done({used}) lost under {SMALL}"),
        (None, Some(s)) => panic!("{s:?} only under the limit {SMALL}"),
        (None, None) => {
            if decode_response(data, MAX_HEADER).is_err() {
                let r = decode_response(data, SMALL);
                assert!(r.is_err(), "an error under MAX_HEADER, {r:?} under {SMALL}");
            }
        }
    }
    // Never Need(0), also for the small limit on a long input.
    if let Ok(Decoded::Need(n)) = decode_response(data, SMALL) {
        assert!(n >= 1);
    }
});
