//! Test-only helpers shared by the protocol tests: a reader that reads exactly what a decoder
//! asks for, prefix/monotonicity checks on decoders, and a tiny deterministic PRNG for fuzzing.

use super::{Decoded, ProtoError};
use std::fmt::Debug;

pub type Res<T> = Result<Decoded<T>, ProtoError>;

/// Simulates a reader that asks for exactly `Need(n)` bytes each time, with the peer's bytes
/// arriving in chunks of at most `chunk` bytes (a read may return fewer bytes than asked; the
/// decoder is then called again). Panics if the decoder ever asks for a byte past the end of
/// `wire`, or if `Done` does not end exactly where the reader stopped.
pub fn feed<T: Debug>(
    wire: &[u8],
    chunk: usize,
    decode: impl Fn(&[u8]) -> Res<T>,
) -> Result<(T, usize), ProtoError> {
    assert!(chunk >= 1);
    let mut have = 0;
    loop {
        match decode(&wire[..have])? {
            Decoded::Need(n) => {
                assert!(n >= 1, "Need(0) at {have}");
                assert!(
                    have + n <= wire.len(),
                    "over-read: have {have}, need {n}, wire {}",
                    wire.len()
                );
                have += n.min(chunk);
            }
            Decoded::Done(v, used) => {
                assert_eq!(
                    used, have,
                    "an exact reader must stop on the message boundary"
                );
                return Ok((v, used));
            }
        }
    }
}

/// Byte-exact reader: [`feed`] with all requested bytes available at once.
pub fn feed_exact<T: Debug>(
    wire: &[u8],
    decode: impl Fn(&[u8]) -> Res<T>,
) -> Result<(T, usize), ProtoError> {
    feed(wire, usize::MAX, decode)
}

/// `wire[..used]` is one complete message (maybe followed by other bytes): every shorter prefix
/// must be `Need(n)` with `1 <= n <= used - k`, and `Done(_, used)` from `used` on.
pub fn check_prefixes<T: Debug + PartialEq>(
    wire: &[u8],
    used: usize,
    decode: impl Fn(&[u8]) -> Res<T>,
) -> T {
    for k in 0..used {
        match decode(&wire[..k]) {
            Ok(Decoded::Need(n)) => {
                assert!(
                    n >= 1 && n <= used - k,
                    "prefix {k}: Need({n}) with used {used}"
                )
            }
            other => panic!("prefix {k} of {used}: expected Need, got {other:?}"),
        }
    }
    let whole = match decode(&wire[..used]) {
        Ok(Decoded::Done(v, u)) if u == used => v,
        other => panic!("complete message: expected Done(_, {used}), got {other:?}"),
    };
    for k in used..=wire.len() {
        match decode(&wire[..k]) {
            Ok(Decoded::Done(v, u)) if u == used && v == whole => {}
            other => panic!("with {} trailing bytes: got {other:?}", k - used),
        }
    }
    whole
}

/// Consistency of a decoder over all prefixes of arbitrary input: `Need(n)` has `n >= 1` and no
/// prefix shorter than `k + n` completes; `Done(_, u)` has `1 <= u <= k` and stays `Done(_, u)`
/// for every longer prefix; an error stays an error.
pub fn check_monotone<T: Debug + PartialEq>(buf: &[u8], decode: impl Fn(&[u8]) -> Res<T>) {
    let results: Vec<Res<T>> = (0..=buf.len()).map(|k| decode(&buf[..k])).collect();
    for (k, r) in results.iter().enumerate() {
        match r {
            Ok(Decoded::Need(n)) => {
                assert!(*n >= 1);
                for (j, later) in results.iter().enumerate().take(k + n).skip(k + 1) {
                    assert!(
                        !matches!(later, Ok(Decoded::Done(..))),
                        "Need({n}) at {k} but Done at {j}: {buf:02x?}"
                    );
                }
            }
            Ok(Decoded::Done(v, u)) => {
                assert!(*u >= 1 && *u <= k, "Done used {u} at {k}");
                for later in results.iter().skip(k + 1) {
                    match later {
                        Ok(Decoded::Done(v2, u2)) if u2 == u && v2 == v => {}
                        other => panic!("Done at {k} then {other:?}: {buf:02x?}"),
                    }
                }
            }
            Err(_) => {
                for later in results.iter().skip(k + 1) {
                    assert!(later.is_err(), "error at {k} then {later:?}: {buf:02x?}");
                }
            }
        }
    }
}

/// xorshift64*: deterministic, dependency-free randomness for fuzz-style tests.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(seed | 1)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n as u64) as usize
    }

    pub fn byte(&mut self) -> u8 {
        self.next_u64() as u8
    }

    /// A copy of `base` with a few random edits (byte flips, truncation, insertion).
    pub fn mutate(&mut self, base: &[u8]) -> Vec<u8> {
        let mut v = base.to_vec();
        for _ in 0..=self.below(3) {
            match self.below(4) {
                0 if !v.is_empty() => {
                    let i = self.below(v.len());
                    v[i] = self.byte();
                }
                1 if !v.is_empty() => {
                    let i = self.below(v.len());
                    v.truncate(i);
                }
                2 => {
                    let i = self.below(v.len() + 1);
                    let b = self.byte();
                    v.insert(i, b);
                }
                _ => {
                    let b = self.byte();
                    v.push(b);
                }
            }
        }
        v
    }
}
