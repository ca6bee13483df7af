//! Whether LD_PRELOAD can apply to a program at all: the launcher warns (or, with
//! `--strict-launch`, refuses) before exec when it cannot.
//!
//! The dynamic linker never sees a statically linked ELF (no PT_INTERP), and ignores
//! LD_PRELOAD for setuid/setgid programs and programs with file capabilities (secure mode).
//! Go programs, even dynamically linked ones, make their system calls themselves (and, with
//! the cgo resolver, connect to the fake addresses our lookups hand out): they are recognized
//! by a `.go.buildinfo` section or a Go build-id note. Scripts are judged by nothing (their
//! interpreter is almost always dynamic).
//! Must never: trust a size read from the file (every read is bounded), or refuse a program
//! it cannot read (no verdict: the launch goes on).

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::FileExt;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

/// Finds `prog` the way exec will: a path as is, else the first executable in $PATH.
pub fn find_program(prog: &OsStr) -> Option<PathBuf> {
    if prog.as_bytes().contains(&b'/') {
        return Some(PathBuf::from(prog));
    }
    let path = std::env::var_os("PATH").unwrap_or_else(|| "/usr/local/bin:/usr/bin:/bin".into());
    std::env::split_paths(&path)
        .map(|d| d.join(prog))
        .find(|p| {
            std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        })
}

/// Why LD_PRELOAD cannot cover a program.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BlindSpot {
    Setuid,
    Setgid,
    FileCaps,
    /// A statically linked ELF that is not a Go program.
    Static,
    /// A Go program (`.go.buildinfo` section or Go build-id note), static or dynamic: Go makes
    /// its system calls itself, so its connects and its DNS never reach the library.
    Go {
        dynamic: bool,
    },
}

impl BlindSpot {
    /// The reason, as the warning says it (`PATH <why>: LD_PRELOAD will not apply…`).
    pub fn why(self) -> &'static str {
        match self {
            BlindSpot::Setuid => "is setuid",
            BlindSpot::Setgid => "is setgid",
            BlindSpot::FileCaps => "has file capabilities",
            BlindSpot::Static => "is statically linked",
            BlindSpot::Go { dynamic: true } => "is a Go program (Go makes its own system calls)",
            BlindSpot::Go { dynamic: false } => "is a statically linked Go program",
        }
    }
}

/// Why LD_PRELOAD would not apply to the program at `path`, if it would not.
pub fn why_not_shimmable(path: &Path) -> Option<BlindSpot> {
    let meta = std::fs::metadata(path).ok()?;
    let mode = meta.permissions().mode();
    if mode & 0o4000 != 0 {
        return Some(BlindSpot::Setuid);
    }
    if mode & 0o2000 != 0 {
        return Some(BlindSpot::Setgid);
    }
    if has_file_caps(path) {
        return Some(BlindSpot::FileCaps);
    }
    let file = std::fs::File::open(path).ok()?;
    let read = |off, buf: &mut [u8]| file.read_at(buf, off).ok();
    let elf = Elf::read(&read)?;
    match (elf.is_go(), elf.has_interp()) {
        (true, dynamic) => Some(BlindSpot::Go { dynamic }),
        (false, false) => Some(BlindSpot::Static),
        (false, true) => None,
    }
}

fn has_file_caps(path: &Path) -> bool {
    let Ok(c) = std::ffi::CString::new(path.as_os_str().as_bytes()) else {
        return false;
    };
    // SAFETY: size query of an xattr (NULL buffer, size 0).
    let n = unsafe {
        libc::getxattr(
            c.as_ptr(),
            c"security.capability".as_ptr(),
            std::ptr::null_mut(),
            0,
        )
    };
    n > 0
}

/// Reads `buf.len()` bytes at an offset of the file; `None` if they are not all there.
type ReadAt<'a> = &'a dyn Fn(u64, &mut [u8]) -> Option<usize>;

/// What the launcher needs from an ELF image: its program headers (PT_INTERP, PT_NOTE) and its
/// section names. Every size read from the file is bounded: a hostile file costs at most a few
/// hundred KiB of reads.
pub struct Elf<'a> {
    read: ReadAt<'a>,
    is64: bool,
    le: bool,
    phoff: u64,
    phentsize: u64,
    phnum: u64,
    shoff: u64,
    shentsize: u64,
    shnum: u64,
    shstrndx: u64,
}

/// Offsets in the ELF header of e_phoff, e_shoff (both of the address width), e_phentsize,
/// e_phnum, e_shentsize, e_shnum, e_shstrndx (16 bits), and the address width: [ELF32, ELF64].
const HEADER_FIELDS: [([usize; 7], usize); 2] = [
    ([0x1c, 0x20, 0x2a, 0x2c, 0x2e, 0x30, 0x32], 4),
    ([0x20, 0x28, 0x36, 0x38, 0x3a, 0x3c, 0x3e], 8),
];
const PT_INTERP: u64 = 3;
const PT_NOTE: u64 = 4;
/// Go's build-id note: owner "Go", type 4 (`NT_GO_BUILDID` in cmd/link).
const NT_GO_BUILDID: u64 = 4;
/// No section, program header or note area larger than this is read.
const MAX_READ: u64 = 256 * 1024;

impl<'a> Elf<'a> {
    /// The ELF header, or `None` if this is not an ELF file.
    pub fn read(read: ReadAt<'a>) -> Option<Elf<'a>> {
        let mut h = [0u8; 64];
        let n = read(0, &mut h)?;
        let h = h.get(..n)?;
        if h.get(..4)? != b"\x7fELF" {
            return None;
        }
        let is64 = *h.get(4)? == 2;
        let le = *h.get(5)? == 1;
        let mut elf = Elf {
            read,
            is64,
            le,
            phoff: 0,
            phentsize: 0,
            phnum: 0,
            shoff: 0,
            shentsize: 0,
            shnum: 0,
            shstrndx: 0,
        };
        let (at, w) = HEADER_FIELDS[usize::from(is64)];
        let [phoff, shoff, phentsize, phnum, shentsize, shnum, shstrndx] = at;
        elf.phoff = elf.uint(h, phoff, w)?;
        elf.shoff = elf.uint(h, shoff, w)?;
        elf.phentsize = elf.uint(h, phentsize, 2)?;
        elf.phnum = elf.uint(h, phnum, 2)?;
        elf.shentsize = elf.uint(h, shentsize, 2)?;
        elf.shnum = elf.uint(h, shnum, 2)?;
        elf.shstrndx = elf.uint(h, shstrndx, 2)?;
        Some(elf)
    }

    /// An unsigned integer of `len` bytes (2, 4 or 8) at `off` of `b`, in the file's byte order.
    fn uint(&self, b: &[u8], off: usize, len: usize) -> Option<u64> {
        let s = b.get(off..off.checked_add(len)?)?;
        let mut v = 0u64;
        for i in 0..len {
            let byte = if self.le {
                s.get(len - 1 - i)?
            } else {
                s.get(i)?
            };
            v = (v << 8) | u64::from(*byte);
        }
        Some(v)
    }

    /// `len` bytes at `off` of the file (at most [`MAX_READ`]).
    fn bytes(&self, off: u64, len: u64) -> Option<Vec<u8>> {
        if len > MAX_READ {
            return None;
        }
        let mut buf = vec![0u8; len as usize];
        let mut done = 0;
        while done < buf.len() {
            let n = (self.read)(off + done as u64, buf.get_mut(done..)?)?;
            if n == 0 {
                return None;
            }
            done += n;
        }
        Some(buf)
    }

    /// The program headers as (type, file offset, file size).
    fn segments(&self) -> Vec<(u64, u64, u64)> {
        let min = if self.is64 { 56 } else { 32 };
        if self.phentsize < min {
            return Vec::new();
        }
        let Some(table) = self.bytes(self.phoff, self.phentsize * self.phnum) else {
            return Vec::new();
        };
        let w = if self.is64 { 8 } else { 4 };
        let (off_at, size_at) = if self.is64 { (8, 32) } else { (4, 16) };
        (0..self.phnum as usize)
            .filter_map(|i| {
                let e = table.get(i * self.phentsize as usize..)?;
                Some((
                    self.uint(e, 0, 4)?,
                    self.uint(e, off_at, w)?,
                    self.uint(e, size_at, w)?,
                ))
            })
            .collect()
    }

    /// Whether the image names a program interpreter (PT_INTERP): dynamically linked.
    pub fn has_interp(&self) -> bool {
        self.segments().iter().any(|s| s.0 == PT_INTERP)
    }

    /// Whether this is a Go program: a Go build-id note in a PT_NOTE segment, or a section
    /// named `.go.buildinfo` or `.note.go.buildid` (stripped Go binaries keep them).
    pub fn is_go(&self) -> bool {
        self.has_go_note()
            || self
                .section_names()
                .iter()
                .any(|n| GO_SECTIONS.contains(&n.as_slice()))
    }

    fn has_go_note(&self) -> bool {
        self.segments()
            .iter()
            .filter(|s| s.0 == PT_NOTE)
            .filter_map(|s| self.bytes(s.1, s.2))
            .any(|notes| self.notes_have_go(&notes))
    }

    /// Walks the notes of one PT_NOTE area: namesz, descsz, type, then name and desc, each
    /// padded to 4 bytes.
    fn notes_have_go(&self, notes: &[u8]) -> bool {
        let mut at = 0usize;
        let pad = |n: u64| -> usize { (n as usize).div_ceil(4) * 4 };
        while let (Some(namesz), Some(descsz), Some(kind)) = (
            self.uint(notes, at, 4),
            self.uint(notes, at + 4, 4),
            self.uint(notes, at + 8, 4),
        ) {
            let name_at = at + 12;
            let Some(name) = notes.get(name_at..name_at + namesz as usize) else {
                return false;
            };
            let owner = name.split(|&b| b == 0).next().unwrap_or(name);
            if kind == NT_GO_BUILDID && owner == b"Go" {
                return true;
            }
            at = name_at + pad(namesz) + pad(descsz);
        }
        false
    }

    /// The section names (from the section header string table).
    fn section_names(&self) -> Vec<Vec<u8>> {
        let min = if self.is64 { 64 } else { 40 };
        if self.shentsize < min || self.shnum == 0 || self.shstrndx >= self.shnum {
            return Vec::new();
        }
        let Some(table) = self.bytes(self.shoff, self.shentsize * self.shnum) else {
            return Vec::new();
        };
        let w = if self.is64 { 8 } else { 4 };
        let (off_at, size_at) = if self.is64 {
            (0x18, 0x20)
        } else {
            (0x10, 0x14)
        };
        let entry = |i: u64| table.get((i * self.shentsize) as usize..);
        let Some(strtab) = entry(self.shstrndx).and_then(|e| {
            let off = self.uint(e, off_at, w)?;
            let size = self.uint(e, size_at, w)?;
            self.bytes(off, size)
        }) else {
            return Vec::new();
        };
        (0..self.shnum)
            .filter_map(|i| {
                let name = self.uint(entry(i)?, 0, 4)? as usize;
                let rest = strtab.get(name..)?;
                let end = rest.iter().position(|&b| b == 0)?;
                Some(rest.get(..end)?.to_vec())
            })
            .collect()
    }
}

const GO_SECTIONS: [&[u8]; 2] = [b".go.buildinfo", b".note.go.buildid"];

#[cfg(test)]
mod tests {
    use super::*;

    fn verdict(image: &[u8]) -> Option<(bool, bool)> {
        let read = |off: u64, buf: &mut [u8]| -> Option<usize> {
            let src = image.get(off as usize..)?;
            let n = src.len().min(buf.len());
            buf.get_mut(..n)?.copy_from_slice(src.get(..n)?);
            Some(n)
        };
        let elf = Elf::read(&read)?;
        Some((elf.has_interp(), elf.is_go()))
    }

    /// A crafted ELF: `segments` as (type, payload), `sections` by name.
    fn craft(is64: bool, le: bool, segments: &[(u32, Vec<u8>)], sections: &[&str]) -> Vec<u8> {
        let put = |v: &mut Vec<u8>, at: usize, len: usize, x: u64| {
            for i in 0..len {
                let shift = if le { 8 * i } else { 8 * (len - 1 - i) };
                v[at + i] = (x >> shift) as u8;
            }
        };
        let (ehsize, phentsize, shentsize) = if is64 { (64, 56, 64) } else { (52, 32, 40) };
        let w = if is64 { 8 } else { 4 };
        let mut img = vec![0u8; ehsize];
        img[..4].copy_from_slice(b"\x7fELF");
        img[4] = if is64 { 2 } else { 1 };
        img[5] = if le { 1 } else { 2 };
        let phoff = img.len();
        img.resize(phoff + phentsize * segments.len(), 0);
        for (i, (kind, payload)) in segments.iter().enumerate() {
            let at = img.len();
            img.extend_from_slice(payload);
            let e = phoff + i * phentsize;
            put(&mut img, e, 4, u64::from(*kind));
            let (off_at, size_at) = if is64 { (8, 32) } else { (4, 16) };
            put(&mut img, e + off_at, w, at as u64);
            put(&mut img, e + size_at, w, payload.len() as u64);
        }
        let mut strtab = vec![0u8];
        let mut names = Vec::new();
        for n in sections.iter().chain([&".shstrtab"]) {
            names.push(strtab.len());
            strtab.extend_from_slice(n.as_bytes());
            strtab.push(0);
        }
        let str_at = img.len();
        img.extend_from_slice(&strtab);
        let shoff = img.len();
        let shnum = names.len() + 1; // index 0 is the null section
        img.resize(shoff + shentsize * shnum, 0);
        for (i, name) in names.iter().enumerate() {
            let e = shoff + (i + 1) * shentsize;
            put(&mut img, e, 4, *name as u64);
            let (off_at, size_at) = if is64 { (0x18, 0x20) } else { (0x10, 0x14) };
            put(&mut img, e + off_at, w, str_at as u64);
            put(&mut img, e + size_at, w, strtab.len() as u64);
        }
        let (h, _) = HEADER_FIELDS[usize::from(is64)];
        put(&mut img, h[0], w, phoff as u64);
        put(&mut img, h[1], w, shoff as u64);
        put(&mut img, h[2], 2, phentsize as u64);
        put(&mut img, h[3], 2, segments.len() as u64);
        put(&mut img, h[4], 2, shentsize as u64);
        put(&mut img, h[5], 2, shnum as u64);
        put(&mut img, h[6], 2, shnum as u64 - 1);
        img
    }

    /// One note: namesz, descsz, type, name and desc padded to 4 bytes (little-endian).
    fn note(name: &[u8], kind: u32, desc: &[u8], le: bool) -> Vec<u8> {
        let word = |x: u32| if le { x.to_le_bytes() } else { x.to_be_bytes() };
        let mut n = Vec::new();
        n.extend_from_slice(&word(name.len() as u32));
        n.extend_from_slice(&word(desc.len() as u32));
        n.extend_from_slice(&word(kind));
        n.extend_from_slice(name);
        n.resize(n.len().div_ceil(4) * 4, 0);
        n.extend_from_slice(desc);
        n.resize(n.len().div_ceil(4) * 4, 0);
        n
    }

    #[test]
    fn crafted_images() {
        let interp = (3u32, b"/lib64/ld-linux-x86-64.so.2\0".to_vec());
        for (is64, le) in [(true, true), (false, true), (true, false), (false, false)] {
            let gnu = note(b"GNU\0", 3, &[1; 20], le);
            let go = note(b"Go\0\0", 4, b"some/build/id", le);
            // A plain dynamic C program: build-id note from GNU, usual sections.
            let c = craft(
                is64,
                le,
                &[interp.clone(), (4, gnu.clone())],
                &[".text", ".data"],
            );
            assert_eq!(verdict(&c), Some((true, false)), "{is64} {le}");
            // Static C.
            let c = craft(is64, le, &[(4, gnu.clone())], &[".text"]);
            assert_eq!(verdict(&c), Some((false, false)));
            // Dynamic Go, known by its note only (sections stripped away entirely).
            let mut notes = gnu.clone();
            notes.extend_from_slice(&go);
            let g = craft(is64, le, &[interp.clone(), (4, notes)], &[]);
            assert_eq!(verdict(&g), Some((true, true)), "{is64} {le}");
            // Go known by its sections only (no note segment).
            let g = craft(
                is64,
                le,
                std::slice::from_ref(&interp),
                &[".text", ".go.buildinfo"],
            );
            assert_eq!(verdict(&g), Some((true, true)));
            let g = craft(is64, le, &[], &[".note.go.buildid"]);
            assert_eq!(verdict(&g), Some((false, true)));
            // A note named "Go" of another type, or type 4 of another owner: not Go.
            let other = note(b"Go\0\0", 1, b"x", le);
            let c = craft(is64, le, &[interp.clone(), (4, other)], &[".gopher"]);
            assert_eq!(verdict(&c), Some((true, false)));
            let other = note(b"GNU\0", 4, b"x", le);
            let c = craft(is64, le, &[(4, other)], &[".go.buildinfox"]);
            assert_eq!(verdict(&c), Some((false, false)));
        }
    }

    #[test]
    fn hostile_sizes_are_bounded() {
        assert_eq!(verdict(b"#!/bin/sh\n"), None);
        assert_eq!(verdict(b"\x7fEL"), None);
        // Header only, with tables pointing far outside the file and absurd counts.
        let mut h = craft(true, true, &[], &[]);
        h[0x20..0x28].copy_from_slice(&u64::MAX.to_le_bytes());
        h[0x28..0x30].copy_from_slice(&(u64::MAX - 8).to_le_bytes());
        h[0x38..0x3a].copy_from_slice(&u16::MAX.to_le_bytes());
        h[0x3c..0x3e].copy_from_slice(&u16::MAX.to_le_bytes());
        assert_eq!(verdict(&h), Some((false, false)));
        // A note whose sizes run past its segment.
        let mut bad = note(b"Go\0\0", 4, b"id", true);
        bad[0..4].copy_from_slice(&u32::MAX.to_le_bytes());
        let c = craft(true, true, &[(4, bad)], &[]);
        assert_eq!(verdict(&c), Some((false, false)));
        // Every truncation of a Go image is read without a panic.
        let go = note(b"Go\0\0", 4, b"id", true);
        let g = craft(true, true, &[(4, go)], &[".go.buildinfo"]);
        for n in 0..g.len() {
            let _ = verdict(&g[..n]);
        }
    }

    #[test]
    fn real_programs() {
        assert_eq!(why_not_shimmable(Path::new("/bin/sh")), None);
        // Debian's busybox-static is a static ELF (installed by scripts/setup).
        if Path::new("/bin/busybox").exists() {
            assert_eq!(
                why_not_shimmable(Path::new("/bin/busybox")),
                Some(BlindSpot::Static)
            );
        }
        // Debian's hey: a dynamically linked Go program (installed by scripts/setup).
        if Path::new("/usr/bin/hey").exists() {
            assert_eq!(
                why_not_shimmable(Path::new("/usr/bin/hey")),
                Some(BlindSpot::Go { dynamic: true })
            );
        }
        if Path::new("/usr/bin/passwd").exists() {
            assert_eq!(
                why_not_shimmable(Path::new("/usr/bin/passwd")),
                Some(BlindSpot::Setuid)
            );
        }
        let script = std::env::temp_dir().join(format!("cs-elf-{}.sh", std::process::id()));
        std::fs::write(&script, "#!/bin/sh\n").unwrap();
        assert_eq!(why_not_shimmable(&script), None);
        let _ = std::fs::remove_file(&script);
    }
}
