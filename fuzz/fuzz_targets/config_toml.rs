//! `Config::from_toml` on UTF-8 input: never panics; errors show no URL password; an accepted
//! config validates, and its normalized TOML (`to_toml`, what the launcher hands to its
//! processes) reads back equal.
#![no_main]

use chainsocks_core::config::{Config, redact_urls};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    match Config::from_toml(text) {
        Ok(cfg) => {
            assert!(cfg.validate().is_ok());
            let _ = cfg.chain_views();
            let out = cfg.to_toml();
            assert!(!out.is_empty(), "to_toml of {cfg:?} is empty");
            match Config::from_toml(&out) {
                Ok(back) => assert_eq!(back, cfg, "\n---\n{out}"),
                Err(e) => panic!("to_toml does not read back: {e}\n---\n{out}"),
            }
        }
        Err(e) => {
            assert!(!e.to_string().is_empty());
            // Every URL password in a message is already hidden.
            assert_eq!(redact_urls(&e.msg), e.msg, "{e:?}");
            // A position, when there is one, is in the text.
            if e.line > 0 {
                assert!(e.line <= text.split('\n').count(), "{e:?}");
            }
        }
    }
});
