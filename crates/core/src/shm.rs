//! Layout of the launch's shared state: one memory file the launcher creates and every process
//! of the tree maps (`CHAINSOCKS_SHM` names it).
//!
//! Owns: the byte layout (header, normalized config text, room for shared tables).
//! Must never: hold a pointer or anything process-specific; every field is plain bytes or an
//! atomic that any process of the tree may read at any time.
//!
//! ```text
//! 0     magic "CHSOCKS1"
//! 8     u32 LE  header size (= HEADER_SIZE)
//! 12    u32 LE  config length in bytes
//! 16    u32 LE  offset of the config text
//! 20    u32 LE  total size of the file
//! 24    u32 LE  offset of the fake-DNS table (8-byte aligned; see fakedns)
//! 28    u32 LE  length of the fake-DNS table in 8-byte words
//! 32    u32 LE  offset of the health counters (one page of atomics, see chain::Health)
//! 36..  reserved (zero)
//! HEADER_SIZE   config text (normalized TOML, UTF-8)
//! …             health counters: words 0..32 round-robin per chain, 64..320 dead-until per proxy
//! …             fake-DNS table (page aligned; zero but for its header words)
//! ```
//! The file is sparse: pages of the table cost memory only once a name lands in them.

/// Identifies the file and its layout version.
pub const MAGIC: &[u8; 8] = b"CHSOCKS1";
/// Size of the fixed header (one page).
pub const HEADER_SIZE: usize = 4096;
/// The environment variable through which processes find the shared state.
pub const ENV: &str = "CHAINSOCKS_SHM";

/// Builds a new shared-state file: the returned bytes are its beginning (header, config, the
/// table's header words); the file must then be extended with zeros to [`total_size`].
pub fn build(config_toml: &str, table_capacity: u32) -> Vec<u8> {
    let counters_off = HEADER_SIZE + config_toml.len().next_multiple_of(HEADER_SIZE);
    let table_off = counters_off + HEADER_SIZE;
    let table_words = crate::fakedns::words_for(table_capacity);
    let total = table_off + (table_words * 8).next_multiple_of(HEADER_SIZE);
    let table_hdr = crate::fakedns::header(table_capacity);
    let mut out = vec![0u8; table_off + table_hdr.len() * 8];
    let put = |out: &mut Vec<u8>, at: usize, v: u32| {
        if let Some(dst) = out.get_mut(at..at + 4) {
            dst.copy_from_slice(&v.to_le_bytes());
        }
    };
    if let Some(dst) = out.get_mut(..8) {
        dst.copy_from_slice(MAGIC);
    }
    put(&mut out, 8, HEADER_SIZE as u32);
    put(&mut out, 12, config_toml.len() as u32);
    put(&mut out, 16, HEADER_SIZE as u32);
    put(&mut out, 20, total as u32);
    put(&mut out, 24, table_off as u32);
    put(&mut out, 28, table_words as u32);
    put(&mut out, 32, counters_off as u32);
    for (i, w) in table_hdr.iter().enumerate() {
        if let Some(dst) = out.get_mut(table_off + i * 8..table_off + i * 8 + 8) {
            dst.copy_from_slice(&w.to_le_bytes());
        }
    }
    if let Some(dst) = out.get_mut(HEADER_SIZE..HEADER_SIZE + config_toml.len()) {
        dst.copy_from_slice(config_toml.as_bytes());
    }
    out
}

/// The config text of a shared-state file (`bytes` is at least the header and config).
pub fn config_text(bytes: &[u8]) -> Result<&str, &'static str> {
    if bytes.get(..8) != Some(MAGIC.as_slice()) {
        return Err("not a chainsocks shared-state file (bad magic)");
    }
    let (len, off) = match (field(bytes, 12), field(bytes, 16)) {
        (Some(l), Some(o)) => (l, o),
        _ => return Err("truncated shared-state header"),
    };
    let text = bytes
        .get(off..off.saturating_add(len))
        .ok_or("truncated shared-state config")?;
    std::str::from_utf8(text).map_err(|_| "shared-state config is not UTF-8")
}

fn field(bytes: &[u8], at: usize) -> Option<usize> {
    let b: [u8; 4] = bytes.get(at..at + 4)?.try_into().ok()?;
    Some(u32::from_le_bytes(b) as usize)
}

/// Total size recorded in the header.
pub fn total_size(bytes: &[u8]) -> Option<usize> {
    field(bytes, 20)
}

/// Words of the health page: round-robin counters per chain.
pub const RR_WORDS: std::ops::Range<usize> = 0..32;
/// Words of the health page: dead-until marks per proxy.
pub const DEAD_WORDS: std::ops::Range<usize> = 64..320;
/// Words of the health page: thread ids (+1) of the library's own real lookups in progress (a
/// `direct` rule's name, `socks4_resolve = "local"`): the supervisor lets their DNS packets
/// reach the real nameserver instead of the launch's responder.
pub const REAL_LOOKUP_WORDS: std::ops::Range<usize> = 320..352;
/// Words in the health page.
pub const COUNTER_WORDS: usize = HEADER_SIZE / 8;

/// Byte offset of the health counters page.
pub fn counters_location(bytes: &[u8]) -> Option<usize> {
    let off = field(bytes, 32)?;
    (off.is_multiple_of(8) && off + HEADER_SIZE <= total_size(bytes)?).then_some(off)
}

/// Byte offset and length in words of the fake-DNS table.
pub fn table_location(bytes: &[u8]) -> Option<(usize, usize)> {
    let (off, words) = (field(bytes, 24)?, field(bytes, 28)?);
    (off.is_multiple_of(8) && off.checked_add(words.checked_mul(8)?)? <= total_size(bytes)?)
        .then_some((off, words))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let b = build("quiet = true\n", 1000);
        assert_eq!(b.len(), 3 * HEADER_SIZE + 24);
        assert_eq!(config_text(&b), Ok("quiet = true\n"));
        assert_eq!(counters_location(&b), Some(2 * HEADER_SIZE));
        let (off, words) = table_location(&b).unwrap();
        assert_eq!(off, 3 * HEADER_SIZE);
        assert_eq!(words, crate::fakedns::words_for(1000));
        assert!(total_size(&b).unwrap() >= off + words * 8);
        assert_eq!(&b[off + 8..off + 16], &1000u64.to_le_bytes());
        assert!(config_text(b"nope").is_err());
        let mut t = b.clone();
        t.truncate(HEADER_SIZE + 3);
        assert!(config_text(&t).is_err());
    }
}
