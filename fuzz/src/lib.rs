//! Invariants shared by the fuzz targets (see `fuzz_targets/`).
//!
//! The decoder contract (crates/core/src/proto/mod.rs): `Need(n)` has `n >= 1` and reading `n`
//! more bytes never reads past the end of the message; `Done(v, used)` has
//! `1 <= used <= input length`, uses exactly the message's bytes (the same decoder on the input
//! truncated to `used` gives the same `Done(v, used)`, and so does any longer input), and an
//! error stays an error as more bytes arrive. [`check_decoder`] checks all of that against
//! prefixes of the fuzz input.

use chainsocks_core::proto::{Decoded, ProtoError};
use std::fmt::Debug;

pub type Res<T> = Result<Decoded<T>, ProtoError>;

/// Inputs up to this length have every prefix checked; longer ones a sample of prefixes
/// (the start, evenly spaced points, and the bytes around the end of the message).
const ALL_PREFIXES_UP_TO: usize = 300;
/// How many prefixes of each kind a long input gets.
const SAMPLE: usize = 48;
/// An exact reader (reads what `Need` asks for) is simulated for at most this many reads.
const MAX_READS: usize = 512;

/// Runs `decode` on `data` and checks the decoder contract against prefixes of `data`.
/// Returns the message and its length when `data` starts with a complete one.
pub fn check_decoder<T, F>(data: &[u8], decode: F) -> Option<(T, usize)>
where
    T: Debug + PartialEq,
    F: Fn(&[u8]) -> Res<T>,
{
    let whole = decode(data);
    // Deterministic.
    assert_eq!(decode(data), whole, "two calls on the same input differ");
    let used = match &whole {
        Ok(Decoded::Need(n)) => {
            assert!(*n >= 1, "Need({n}) on {} bytes", data.len());
            None
        }
        Ok(Decoded::Done(v, used)) => {
            let used = *used;
            assert!(
                used >= 1 && used <= data.len(),
                "Done used {used} of {} bytes",
                data.len()
            );
            // Truncated to `used`: the same message, the same length.
            let trunc = decode(&data[..used]);
            assert!(
                matches!(&trunc, Ok(Decoded::Done(v2, u2)) if *u2 == used && v2 == v),
                "Done({v:?}, {used}) on {} bytes, but on the first {used}: {trunc:?}",
                data.len()
            );
            Some(used)
        }
        Err(e) => {
            assert!(!e.to_string().is_empty());
            None
        }
    };

    // Every (or a sample of) prefix, against the result for the whole input.
    let mut first_err: Option<usize> = None;
    for k in prefixes(data.len(), used) {
        let r = decode(&data[..k]);
        if let Some(e) = first_err {
            assert!(r.is_err(), "error on {e} bytes, then {r:?} on {k} bytes");
        }
        match (&r, &whole) {
            (Ok(Decoded::Need(n)), _) => {
                assert!(*n >= 1, "Need({n}) on {k} bytes");
                if let Some(u) = used {
                    assert!(k < u, "Need({n}) on {k} bytes, though Done({u}) on fewer");
                    assert!(
                        k + n <= u,
                        "over-read: Need({n}) on {k} bytes, message is {u}"
                    );
                }
            }
            (Ok(Decoded::Done(v, u)), Ok(Decoded::Done(wv, wu))) => {
                assert!(
                    u == wu && v == wv && k >= *u,
                    "Done({v:?}, {u}) on {k} bytes, but Done({wv:?}, {wu}) on {}",
                    data.len()
                );
            }
            (Ok(Decoded::Done(v, u)), _) => {
                panic!(
                    "Done({v:?}, {u}) on {k} bytes, but {whole:?} on {} bytes",
                    data.len()
                );
            }
            (Err(e), _) => {
                assert!(
                    whole.is_err(),
                    "{e:?} on {k} bytes, but {whole:?} on {} bytes",
                    data.len()
                );
                first_err.get_or_insert(k);
            }
        }
    }

    // A reader that reads exactly what `Need` asks for stops on the message boundary.
    if let Some(u) = used {
        let mut have = 0;
        for _ in 0..MAX_READS {
            match decode(&data[..have]) {
                Ok(Decoded::Need(n)) => {
                    assert!(
                        have + n <= u,
                        "exact reader: Need({n}) at {have}, message {u}"
                    );
                    have += n;
                }
                Ok(Decoded::Done(_, got)) => {
                    assert_eq!((got, have), (u, u), "exact reader stopped at {have}");
                    break;
                }
                Err(e) => panic!("exact reader: {e:?} at {have} of a {u}-byte message"),
            }
        }
    }

    match whole {
        Ok(Decoded::Done(v, u)) => Some((v, u)),
        _ => None,
    }
}

/// The prefix lengths to check, ascending (duplicates removed): all of them for short inputs;
/// for long ones the first [`SAMPLE`], [`SAMPLE`] evenly spaced, and the [`SAMPLE`] around
/// the end of the message.
fn prefixes(len: usize, used: Option<usize>) -> Vec<usize> {
    if len <= ALL_PREFIXES_UP_TO {
        return (0..=len).collect();
    }
    let mut ks: Vec<usize> = (0..SAMPLE).collect();
    ks.extend((0..=SAMPLE).map(|i| len * i / SAMPLE));
    if let Some(u) = used {
        ks.extend(u.saturating_sub(SAMPLE)..=(u + 2).min(len));
    }
    ks.sort_unstable();
    ks.dedup();
    ks
}

/// A complete message must re-encode: `encoded` (the decoded value encoded again) decodes to
/// the same value with `used == encoded.len()`.
pub fn check_reencode<T, F>(value: &T, encoded: &[u8], decode: F)
where
    T: Debug + PartialEq,
    F: Fn(&[u8]) -> Res<T>,
{
    match decode(encoded) {
        Ok(Decoded::Done(v, u)) if u == encoded.len() && v == *value => {}
        other => panic!("{value:?} encodes to {encoded:02x?}, which decodes to {other:?}"),
    }
}
