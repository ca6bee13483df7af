//! Whether LD_PRELOAD can apply to a program at all: the launcher warns (or, with
//! `--strict-launch`, refuses) before exec when it cannot.
//!
//! The dynamic linker never sees a statically linked ELF (no PT_INTERP), and ignores
//! LD_PRELOAD for setuid/setgid programs and programs with file capabilities (secure mode).
//! Scripts are judged by nothing (their interpreter is almost always dynamic).

use std::ffi::OsStr;
use std::io::Read;
use std::os::unix::ffi::OsStrExt;
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

/// Why LD_PRELOAD would not apply to the program at `path`, if it would not.
pub fn why_not_shimmable(path: &Path) -> Option<String> {
    let meta = std::fs::metadata(path).ok()?;
    let mode = meta.permissions().mode();
    if mode & 0o4000 != 0 {
        return Some("is setuid".into());
    }
    if mode & 0o2000 != 0 {
        return Some("is setgid".into());
    }
    if has_file_caps(path) {
        return Some("has file capabilities".into());
    }
    let mut head = Vec::with_capacity(4096);
    std::fs::File::open(path)
        .ok()?
        .take(64 * 1024)
        .read_to_end(&mut head)
        .ok()?;
    match elf_has_interp(&head) {
        Some(false) => Some("is statically linked".into()),
        _ => None,
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

/// `Some(true)` if the ELF image has a PT_INTERP program header, `Some(false)` if it is an ELF
/// without one (static), `None` if it is not an ELF we can read.
pub fn elf_has_interp(b: &[u8]) -> Option<bool> {
    if b.get(..4)? != b"\x7fELF" {
        return None;
    }
    let is64 = *b.get(4)? == 2;
    let le = *b.get(5)? == 1;
    let u16_at = |o: usize| -> Option<u64> {
        let s: [u8; 2] = b.get(o..o + 2)?.try_into().ok()?;
        Some(if le {
            u16::from_le_bytes(s)
        } else {
            u16::from_be_bytes(s)
        } as u64)
    };
    let u32_at = |o: usize| -> Option<u64> {
        let s: [u8; 4] = b.get(o..o + 4)?.try_into().ok()?;
        Some(if le {
            u32::from_le_bytes(s)
        } else {
            u32::from_be_bytes(s)
        } as u64)
    };
    let u64_at = |o: usize| -> Option<u64> {
        let s: [u8; 8] = b.get(o..o + 8)?.try_into().ok()?;
        Some(if le {
            u64::from_le_bytes(s)
        } else {
            u64::from_be_bytes(s)
        })
    };
    let (phoff, phentsize, phnum) = if is64 {
        (u64_at(0x20)?, u16_at(0x36)?, u16_at(0x38)?)
    } else {
        (u32_at(0x1c)?, u16_at(0x2a)?, u16_at(0x2c)?)
    };
    for i in 0..phnum {
        let at = (phoff + i * phentsize) as usize;
        if u32_at(at)? == 3 {
            return Some(true); // PT_INTERP
        }
    }
    Some(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dynamic_and_static() {
        let sh = std::fs::read("/bin/sh").unwrap();
        assert_eq!(elf_has_interp(&sh), Some(true));
        assert_eq!(why_not_shimmable(Path::new("/bin/sh")), None);
        // Debian's busybox-static is a static ELF (installed by scripts/setup).
        if let Ok(b) = std::fs::read("/bin/busybox") {
            assert_eq!(elf_has_interp(&b), Some(false));
        }
        assert_eq!(elf_has_interp(b"#!/bin/sh\n"), None);
        if Path::new("/usr/bin/passwd").exists() {
            assert_eq!(
                why_not_shimmable(Path::new("/usr/bin/passwd")).as_deref(),
                Some("is setuid")
            );
        }
    }
}
