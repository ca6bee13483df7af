//! `pxconf::parse` (proxychains.conf) on UTF-8 input: never panics; errors show no URL
//! password; warnings start with `line N:`; an accepted file converts (`to_toml`) to TOML that
//! reads back to the same config.
#![no_main]

use chainsocks_core::config::{Config, redact_urls};
use chainsocks_core::pxconf::{looks_like_proxychains, parse, to_toml};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let _ = looks_like_proxychains(text);
    let lines = text.split('\n').count();
    match parse(text) {
        Ok(parsed) => {
            assert!(parsed.config.validate().is_ok());
            for w in &parsed.warnings {
                let n: usize = w
                    .strip_prefix("line ")
                    .and_then(|r| r.split(':').next())
                    .and_then(|n| n.parse().ok())
                    .unwrap_or_else(|| panic!("warning without `line N:`: {w:?}"));
                assert!(n >= 1 && n <= lines, "{w:?}");
            }
            let out = to_toml(&parsed, "fuzz.conf");
            match Config::from_toml(&out) {
                Ok(back) => assert_eq!(back, parsed.config, "\n---\n{out}"),
                Err(e) => panic!("converted TOML does not read back: {e}\n---\n{out}"),
            }
        }
        Err(e) => {
            assert!(!e.to_string().is_empty());
            // Every URL password in a message is already hidden.
            assert_eq!(redact_urls(&e.msg), e.msg, "{e:?}");
            if e.line > 0 {
                assert!(e.line <= lines, "{e:?}");
            }
        }
    }
});
