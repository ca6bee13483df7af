//! `http::decode_request` with `MAX_HEADER` (server side): decoder contract, and a decoded
//! request written out again (`METHOD target HTTP/1.1`, `Name: value` lines) decodes to the
//! same request.
#![no_main]

use chainsocks_core::proto::http::{ConnectRequest, MAX_HEADER, decode_request};
use chainsocks_fuzz::{check_decoder, check_reencode};
use libfuzzer_sys::fuzz_target;

/// A small header limit, so that `HttpHeaderTooLarge` is reached with short inputs too.
const SMALL: usize = 64;

fn render(req: &ConnectRequest) -> Vec<u8> {
    let mut s = format!("{} {} HTTP/1.1\r\n", req.method, req.target);
    for (name, value) in &req.headers {
        s.push_str(&format!("{name}: {value}\r\n"));
    }
    s.push_str("\r\n");
    s.into_bytes()
}

fn check_request(req: &ConnectRequest, used: usize, limit: usize) {
    assert!(used <= limit);
    assert!(!req.method.is_empty() && !req.method.contains(' '));
    assert!(!req.target.is_empty() && !req.target.contains([' ', '\r', '\n']));
    for (name, value) in &req.headers {
        assert!(
            !name.is_empty() && !name.contains([':', ' ', '\r', '\n']),
            "{name:?}"
        );
        assert!(!value.contains(['\r', '\n', '\0']), "{value:?}");
        assert_eq!(value.trim_matches([' ', '\t']), value.as_str());
        assert!(req.header(name).is_some());
    }
    let out = render(req);
    if out.len() <= limit {
        check_reencode(req, &out, |b| decode_request(b, limit));
    }
}

fuzz_target!(|data: &[u8]| {
    let big = check_decoder(data, |b| decode_request(b, MAX_HEADER));
    if let Some((req, used)) = &big {
        check_request(req, *used, MAX_HEADER);
    }
    let small = check_decoder(data, |b| decode_request(b, SMALL));
    if let Some((req, used)) = &small {
        check_request(req, *used, SMALL);
    }
    match (&big, &small) {
        (Some(b), Some(s)) => assert_eq!(b, s),
        (Some((_, used)), None) => assert!(*used > SMALL, "Done({used}) lost under {SMALL}"),
        (None, Some(s)) => panic!("{s:?} only under the limit {SMALL}"),
        (None, None) => {}
    }
});
