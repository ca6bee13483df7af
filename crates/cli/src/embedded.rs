//! Which preload library the launcher hands to the dynamic loader, and the proof that the
//! loader can use it.
//!
//! Order: `$CHAINSOCKS_LIB`; a `libchainsocks.so` next to the executable (or in
//! `../lib/chainsocks/`: distribution packages, the build tree); else the copy embedded in this
//! binary (build.rs), extracted to the first per-user cache that works:
//! `$XDG_RUNTIME_DIR/chainsocks/`, `$XDG_CACHE_HOME/chainsocks/`, `~/.cache/chainsocks/`.
//!
//! Extraction: the directory is 0700 and ours (another owner's is refused, a symlink too); the
//! file is `libchainsocks-<SHA-256 prefix>.so`, mode 0500, written as a new temp file, fsync'd
//! and renamed into place — never rewritten in place, since truncating a mapped library crashes
//! the processes running it. An existing file is compared byte for byte with the embedded
//! library on every use and replaced (with a warning) when it differs. Concurrent first runs
//! each write their own temp file; the renames are atomic and the contents identical.
//!
//! Must never: hand the loader a file it would skip — on a `noexec` mount, unreadable,
//! truncated, for another machine — because the loader only warns and runs the program
//! unproxied. Every candidate is proven first: ELF header and segment bounds, then an
//! executable mapping of the file, the way the loader maps it. Where nothing can be proven the
//! launcher exits 2 with the reason and runs nothing.

use std::ffi::CString;
use std::fs::File;
use std::io::Write;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{DirBuilderExt, FileExt, MetadataExt};
use std::path::{Path, PathBuf};

/// The preload library, built from crates/preload's sources by build.rs.
static EMBEDDED: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/libchainsocks.so"));
/// SHA-256 of [`EMBEDDED`], hex.
const HASH: &str = env!("CHAINSOCKS_LIB_SHA256");
const LIB_NAME: &str = "libchainsocks.so";

/// The library to preload: proven loadable, absolute.
pub fn library() -> Result<PathBuf, String> {
    if let Some(p) = std::env::var_os("CHAINSOCKS_LIB").filter(|p| !p.is_empty()) {
        let p = PathBuf::from(p);
        if !p.is_file() {
            return Err(format!("CHAINSOCKS_LIB={} does not exist", p.display()));
        }
        let p = std::fs::canonicalize(&p).unwrap_or(p);
        prove_loadable(&p).map_err(|why| format!("CHAINSOCKS_LIB={}: {why}", p.display()))?;
        return Ok(p);
    }
    if let Some(p) = beside_executable() {
        prove_loadable(&p).map_err(|why| format!("{}: {why}", p.display()))?;
        return Ok(p);
    }
    let mut why = Vec::new();
    for (dir, create_base) in cache_dirs() {
        match extract(&dir, create_base).and_then(|p| prove_loadable(&p).map(|()| p)) {
            Ok(p) => return Ok(p),
            Err(e) => why.push(format!("{}: {e}", dir.display())),
        }
    }
    if why.is_empty() {
        why.push("no cache directory (XDG_RUNTIME_DIR, XDG_CACHE_HOME and HOME unset)".into());
    }
    Err(format!(
        "cannot put the preload library where the dynamic loader can use it, so nothing is run: \
         {} (point XDG_CACHE_HOME at a directory of yours on an exec-allowed file system, or \
         CHAINSOCKS_LIB at a libchainsocks.so)",
        why.join("; ")
    ))
}

/// `libchainsocks.so` next to the executable, or in `../lib/chainsocks/` from it.
fn beside_executable() -> Option<PathBuf> {
    let exe = std::env::current_exe().ok()?;
    let dir = exe.parent()?;
    [
        dir.join(LIB_NAME),
        dir.join("../lib/chainsocks").join(LIB_NAME),
    ]
    .into_iter()
    .find(|p| p.is_file())
    .map(|p| std::fs::canonicalize(&p).unwrap_or(p))
}

/// The per-user cache directories, in order of preference, and whether their parent may be
/// created (not `$XDG_RUNTIME_DIR`: the system makes it, with the right owner, or it is not
/// there).
fn cache_dirs() -> Vec<(PathBuf, bool)> {
    let var = |k: &str| {
        std::env::var_os(k)
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
            .filter(|p| p.is_absolute())
    };
    let mut dirs = Vec::new();
    if let Some(d) = var("XDG_RUNTIME_DIR") {
        dirs.push((d.join("chainsocks"), false));
    }
    if let Some(d) = var("XDG_CACHE_HOME") {
        dirs.push((d.join("chainsocks"), true));
    }
    if let Some(h) = var("HOME").or_else(home_from_passwd) {
        dirs.push((h.join(".cache").join("chainsocks"), true));
    }
    dirs.dedup_by(|a, b| a.0 == b.0);
    dirs
}

fn home_from_passwd() -> Option<PathBuf> {
    let mut buf = vec![0 as libc::c_char; 16384];
    // SAFETY: zeroed passwd is a valid out-parameter.
    let mut pw: libc::passwd = unsafe { std::mem::zeroed() };
    let mut res: *mut libc::passwd = std::ptr::null_mut();
    // SAFETY: getpwuid_r with our buffers; res is NULL or points at pw.
    let r = unsafe {
        libc::getpwuid_r(
            libc::geteuid(),
            &mut pw,
            buf.as_mut_ptr(),
            buf.len(),
            &mut res,
        )
    };
    if r != 0 || res.is_null() || pw.pw_dir.is_null() {
        return None;
    }
    // SAFETY: pw_dir points into buf, NUL-terminated by getpwuid_r.
    let dir = unsafe { std::ffi::CStr::from_ptr(pw.pw_dir) };
    let dir = PathBuf::from(std::ffi::OsStr::from_bytes(dir.to_bytes()));
    (dir.is_absolute()).then_some(dir)
}

/// An errno as a reason a user can act on.
fn describe(e: &std::io::Error) -> String {
    match e.raw_os_error() {
        Some(libc::EACCES) | Some(libc::EPERM) => format!("permission denied ({e})"),
        Some(libc::EROFS) => "read-only file system".into(),
        Some(libc::ENOSPC) | Some(libc::EDQUOT) => format!("no space left ({e})"),
        _ => e.to_string(),
    }
}

fn cstr(p: &Path) -> Result<CString, String> {
    CString::new(p.as_os_str().as_bytes()).map_err(|_| "NUL byte in path".to_string())
}

/// openat(2) as an owned fd.
fn open_at(
    dir: Option<&OwnedFd>,
    name: &Path,
    flags: libc::c_int,
    mode: libc::mode_t,
) -> std::io::Result<OwnedFd> {
    let c = CString::new(name.as_os_str().as_bytes())
        .map_err(|_| std::io::Error::from_raw_os_error(libc::EINVAL))?;
    let dirfd = dir.map_or(libc::AT_FDCWD, |d| d.as_raw_fd());
    // SAFETY: valid NUL-terminated name; the fd returned is ours.
    let fd = unsafe { libc::openat(dirfd, c.as_ptr(), flags | libc::O_CLOEXEC, mode) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: a fresh fd nobody else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

fn fstat(fd: &OwnedFd) -> std::io::Result<libc::stat> {
    // SAFETY: zeroed stat is a valid out-parameter; fd is open.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    if unsafe { libc::fstat(fd.as_raw_fd(), &mut st) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(st)
}

fn fchmod(fd: &OwnedFd, mode: libc::mode_t) -> std::io::Result<()> {
    // SAFETY: changing the mode of our own open file.
    if unsafe { libc::fchmod(fd.as_raw_fd(), mode) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// Extracts the embedded library into `dir` (creating it, and its parent if `create_base`),
/// or finds it there intact.
fn extract(dir: &Path, create_base: bool) -> Result<PathBuf, String> {
    // SAFETY: geteuid cannot fail.
    let me = unsafe { libc::geteuid() };
    let base = dir.parent().ok_or("no parent directory")?;
    if create_base {
        make_base(base, me)?;
    }
    let base_fd = open_at(None, base, libc::O_RDONLY | libc::O_DIRECTORY, 0)
        .map_err(|e| format!("{}: {}", base.display(), describe(&e)))?;
    let st = fstat(&base_fd).map_err(|e| describe(&e))?;
    // Whoever may write the parent could swap our directory: only us, root, our own group
    // (user-private groups make ~/.cache 0775 under umask 002), or anyone under a sticky bit.
    // SAFETY: getegid cannot fail.
    let foreign_group = st.st_gid != unsafe { libc::getegid() };
    let others_write = st.st_mode & libc::S_ISVTX == 0
        && (st.st_mode & 0o002 != 0 || (st.st_mode & 0o020 != 0 && foreign_group));
    if (st.st_uid != me && st.st_uid != 0) || others_write {
        return Err(format!(
            "{} belongs to uid {} or is writable by others",
            base.display(),
            st.st_uid
        ));
    }
    let leaf = Path::new(dir.file_name().ok_or("no directory name")?);
    let c = cstr(leaf)?;
    // SAFETY: mkdirat relative to our open directory, valid name.
    if unsafe { libc::mkdirat(base_fd.as_raw_fd(), c.as_ptr(), 0o700) } != 0 {
        let e = std::io::Error::last_os_error();
        if e.raw_os_error() != Some(libc::EEXIST) {
            return Err(describe(&e));
        }
    }
    let dir_fd = open_at(
        Some(&base_fd),
        leaf,
        libc::O_RDONLY | libc::O_DIRECTORY | libc::O_NOFOLLOW,
        0,
    )
    .map_err(|e| match e.raw_os_error() {
        Some(libc::ELOOP) | Some(libc::ENOTDIR) => "is a symlink or not a directory".into(),
        _ => describe(&e),
    })?;
    let st = fstat(&dir_fd).map_err(|e| describe(&e))?;
    if st.st_uid != me {
        return Err(format!(
            "owned by uid {}, not by you (uid {me}): refused",
            st.st_uid
        ));
    }
    if st.st_mode & 0o7777 != 0o700 {
        fchmod(&dir_fd, 0o700).map_err(|e| format!("chmod 700: {}", describe(&e)))?;
    }
    let name = format!("libchainsocks-{}.so", HASH.get(..16).unwrap_or(HASH));
    let path = dir.join(&name);
    match check_existing(&dir_fd, Path::new(&name)) {
        Existing::Intact => return Ok(path),
        Existing::Missing => {}
        Existing::Differs(why) => eprintln!(
            "chainsocks: warning: {}: {why}; replacing it with the embedded library",
            path.display()
        ),
    }
    write_new(&dir_fd, dir, &name).map_err(|e| describe(&e))?;
    Ok(path)
}

/// Creates `base` (and missing parents, 0700) if it does not exist — only under a directory
/// of ours, so that root never creates directories in another user's home.
fn make_base(base: &Path, me: libc::uid_t) -> Result<(), String> {
    if base.is_dir() {
        return Ok(());
    }
    let existing = base
        .ancestors()
        .find(|a| a.is_dir())
        .ok_or("no existing parent")?;
    let owner = std::fs::metadata(existing).map_err(|e| describe(&e))?.uid();
    if owner != me {
        return Err(format!(
            "{} does not exist and {} belongs to uid {owner}",
            base.display(),
            existing.display()
        ));
    }
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(base)
        .map_err(|e| format!("{}: {}", base.display(), describe(&e)))
}

enum Existing {
    Intact,
    Missing,
    Differs(&'static str),
}

/// Whether `name` in `dir` is exactly the embedded library, a regular file of ours, 0500.
fn check_existing(dir: &OwnedFd, name: &Path) -> Existing {
    let fd = match open_at(Some(dir), name, libc::O_RDONLY | libc::O_NOFOLLOW, 0) {
        Ok(fd) => fd,
        Err(e) if e.raw_os_error() == Some(libc::ENOENT) => return Existing::Missing,
        Err(_) => return Existing::Differs("cannot be opened (a symlink?)"),
    };
    let Ok(st) = fstat(&fd) else {
        return Existing::Differs("cannot be examined");
    };
    // SAFETY: geteuid cannot fail.
    if st.st_mode & libc::S_IFMT != libc::S_IFREG || st.st_uid != unsafe { libc::geteuid() } {
        return Existing::Differs("is not a regular file of yours");
    }
    if st.st_size as u64 != EMBEDDED.len() as u64 {
        return Existing::Differs("has the wrong size (truncated or overwritten)");
    }
    let file = File::from(fd);
    let mut buf = vec![0u8; 64 * 1024];
    let mut off = 0usize;
    while off < EMBEDDED.len() {
        let want = (EMBEDDED.len() - off).min(buf.len());
        let (Some(chunk), Some(expect)) = (buf.get_mut(..want), EMBEDDED.get(off..off + want))
        else {
            break;
        };
        if file.read_exact_at(chunk, off as u64).is_err() || chunk != expect {
            return Existing::Differs("differs from the embedded library (overwritten)");
        }
        off += want;
    }
    if st.st_mode & 0o7777 != 0o500 && fchmod(&OwnedFd::from(file), 0o500).is_err() {
        return Existing::Differs("has the wrong mode");
    }
    Existing::Intact
}

/// Writes the embedded library as a new temp file in `dir`, then renames it to `name`.
fn write_new(dir_fd: &OwnedFd, dir: &Path, name: &str) -> std::io::Result<()> {
    remove_stale_temps(dir);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    let tmp = format!(".{name}.{}.{nanos}.tmp", std::process::id());
    let fd = open_at(
        Some(dir_fd),
        Path::new(&tmp),
        libc::O_WRONLY | libc::O_CREAT | libc::O_EXCL | libc::O_NOFOLLOW,
        0o600,
    )?;
    let result = (|| {
        fchmod(&fd, 0o500)?;
        let mut f = File::from(fd);
        f.write_all(EMBEDDED)?;
        f.sync_all()?;
        drop(f);
        let (t, n) = (cstr_io(&tmp)?, cstr_io(name)?);
        // SAFETY: renameat within our open directory, valid names.
        if unsafe {
            libc::renameat(
                dir_fd.as_raw_fd(),
                t.as_ptr(),
                dir_fd.as_raw_fd(),
                n.as_ptr(),
            )
        } != 0
        {
            return Err(std::io::Error::last_os_error());
        }
        // SAFETY: fsync of our directory fd (the rename durable).
        unsafe { libc::fsync(dir_fd.as_raw_fd()) };
        Ok(())
    })();
    if result.is_err()
        && let Ok(t) = cstr_io(&tmp)
    {
        // SAFETY: removing our own temp file.
        unsafe { libc::unlinkat(dir_fd.as_raw_fd(), t.as_ptr(), 0) };
    }
    result
}

fn cstr_io(s: &str) -> std::io::Result<CString> {
    CString::new(s).map_err(|_| std::io::Error::from_raw_os_error(libc::EINVAL))
}

/// Removes temp files an interrupted extraction left behind (older than an hour).
fn remove_stale_temps(dir: &Path) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    let hour = std::time::Duration::from_secs(3600);
    for e in entries.flatten() {
        let name = e.file_name();
        let n = name.as_bytes();
        let ours = n.starts_with(b".libchainsocks-") && n.ends_with(b".tmp");
        let old = e
            .metadata()
            .and_then(|m| m.modified())
            .is_ok_and(|t| t.elapsed().is_ok_and(|age| age > hour));
        if ours && old {
            let _ = std::fs::remove_file(e.path());
        }
    }
}

/// Proves the dynamic loader can map `path`: an ELF shared object for this machine whose
/// segments lie within the file, readable, and mappable executable (not on a `noexec` mount).
pub fn prove_loadable(path: &Path) -> Result<(), String> {
    let file = File::open(path).map_err(|e| format!("cannot open it: {}", describe(&e)))?;
    let len = file.metadata().map_err(|e| describe(&e))?.len();
    check_elf(&file, len)?;
    // SAFETY: a private read+exec mapping of one page of our open file, unmapped at once.
    let map_len = 4096usize;
    let p = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            map_len,
            libc::PROT_READ | libc::PROT_EXEC,
            libc::MAP_PRIVATE,
            file.as_raw_fd(),
            0,
        )
    };
    if p == libc::MAP_FAILED {
        let e = std::io::Error::last_os_error();
        // SAFETY: zeroed statvfs is a valid out-parameter.
        let mut vfs: libc::statvfs = unsafe { std::mem::zeroed() };
        // SAFETY: fstatvfs on our open file.
        let noexec = unsafe { libc::fstatvfs(file.as_raw_fd(), &mut vfs) } == 0
            && vfs.f_flag & libc::ST_NOEXEC != 0;
        return Err(if noexec {
            "its file system is mounted noexec: the dynamic loader would skip the library and \
             run the program unproxied"
                .into()
        } else {
            format!("cannot be mapped executable ({})", describe(&e))
        });
    }
    // SAFETY: unmapping the mapping made above.
    unsafe { libc::munmap(p, map_len) };
    Ok(())
}

/// e_machine of this build's target.
const MACHINE: Option<u16> = if cfg!(target_arch = "x86_64") {
    Some(62)
} else if cfg!(target_arch = "aarch64") {
    Some(183)
} else if cfg!(target_arch = "x86") {
    Some(3)
} else if cfg!(target_arch = "arm") {
    Some(40)
} else if cfg!(target_arch = "riscv64") {
    Some(243)
} else {
    None
};

/// An ELF shared object of this machine's class, byte order and architecture, whose program
/// headers and PT_LOAD segments lie within its `len` bytes.
fn check_elf(file: &File, len: u64) -> Result<(), String> {
    let is64 = cfg!(target_pointer_width = "64");
    let mut h = [0u8; 64];
    let hlen = if is64 { 64 } else { 52 };
    let head = h.get_mut(..hlen).ok_or("header")?;
    file.read_exact_at(head, 0)
        .map_err(|_| format!("not an ELF shared library (only {len} bytes)"))?;
    let rd = |b: &[u8], at: usize, n: usize| -> Option<u64> {
        let s = b.get(at..at + n)?;
        let mut v = [0u8; 8];
        if cfg!(target_endian = "little") {
            v.get_mut(..n)?.copy_from_slice(s);
            Some(u64::from_le_bytes(v))
        } else {
            v.get_mut(8 - n..)?.copy_from_slice(s);
            Some(u64::from_be_bytes(v))
        }
    };
    let native_data = if cfg!(target_endian = "little") { 1 } else { 2 };
    if h.get(..4) != Some(b"\x7fELF".as_slice()) {
        return Err("not an ELF file".into());
    }
    let class_ok = h.get(4) == Some(&if is64 { 2 } else { 1 });
    let machine_ok = MACHINE.is_none_or(|m| rd(&h, 0x12, 2) == Some(u64::from(m)));
    if !class_ok || h.get(5) != Some(&native_data) || !machine_ok {
        return Err("an ELF file for another machine or word size".into());
    }
    if rd(&h, 0x10, 2) != Some(3) {
        return Err("not an ELF shared object".into());
    }
    let (phoff, phentsize, phnum) = if is64 {
        (rd(&h, 0x20, 8), rd(&h, 0x36, 2), rd(&h, 0x38, 2))
    } else {
        (rd(&h, 0x1c, 4), rd(&h, 0x2a, 2), rd(&h, 0x2c, 2))
    };
    let (Some(phoff), Some(phentsize), Some(phnum)) = (phoff, phentsize, phnum) else {
        return Err("bad ELF header".into());
    };
    let truncated = || format!("truncated: its segments end past its {len} bytes");
    let table = phentsize.saturating_mul(phnum);
    if phentsize < if is64 { 56 } else { 32 } || phnum > 256 || phoff.saturating_add(table) > len {
        return Err(truncated());
    }
    let mut ph = vec![0u8; table as usize];
    file.read_exact_at(&mut ph, phoff)
        .map_err(|_| truncated())?;
    for i in 0..phnum as usize {
        let at = i * phentsize as usize;
        let (off, filesz) = if is64 {
            (rd(&ph, at + 8, 8), rd(&ph, at + 32, 8))
        } else {
            (rd(&ph, at + 4, 4), rd(&ph, at + 16, 4))
        };
        let loadable = rd(&ph, at, 4) == Some(1);
        let end = off.zip(filesz).map(|(o, s)| o.saturating_add(s));
        if loadable && end.is_none_or(|e| e > len) {
            return Err(truncated());
        }
    }
    Ok(())
}

/// `--print-lib-path`: the library's path on stdout.
pub fn print_lib_path() -> std::process::ExitCode {
    match library() {
        Ok(p) => {
            let mut out = std::io::stdout().lock();
            let _ = out.write_all(p.as_os_str().as_bytes());
            let _ = out.write_all(b"\n");
            std::process::ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("chainsocks: {e}");
            std::process::ExitCode::from(2)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn embedded_library_is_a_loadable_elf() {
        let dir = std::env::temp_dir().join(format!("cs-embedded-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let lib = extract(&dir.join("chainsocks"), false).unwrap();
        prove_loadable(&lib).unwrap();
        assert_eq!(std::fs::read(&lib).unwrap(), EMBEDDED);
        let meta = std::fs::metadata(&lib).unwrap();
        assert_eq!(meta.mode() & 0o7777, 0o500);
        assert_eq!(
            std::fs::metadata(dir.join("chainsocks")).unwrap().mode() & 0o7777,
            0o700
        );
        // Truncated copies and non-ELF files are refused.
        let t = dir.join("short.so");
        std::fs::write(&t, EMBEDDED.get(..64 * 1024).unwrap()).unwrap();
        assert!(prove_loadable(&t).unwrap_err().contains("truncated"));
        std::fs::write(&t, b"#!/bin/sh\n").unwrap();
        assert!(prove_loadable(&t).unwrap_err().contains("not an ELF"));
        let _ = std::fs::remove_dir_all(&dir);
    }
}

#[cfg(test)]
mod template_tests {
    use std::path::Path;

    fn table(path: &Path, text: Option<String>) -> toml::Table {
        let text = text.unwrap_or_else(|| std::fs::read_to_string(path).unwrap());
        text.parse()
            .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
    }

    /// shim/Cargo.toml.in (what the embedded library is built with) and crates/preload's
    /// manifest (what development builds and lints) agree: lib name and type, edition, and
    /// each dependency at the workspace's version.
    #[test]
    fn shim_template_matches_the_preload_manifest() {
        let here = Path::new(env!("CARGO_MANIFEST_DIR"));
        let preload = here.join("../preload/Cargo.toml");
        if !preload.exists() {
            return; // built from the published crate: nothing to compare with
        }
        let ws = table(&here.join("../../Cargo.toml"), None);
        let pre = table(&preload, None);
        let tpl_path = here.join("shim/Cargo.toml.in");
        let tpl_text = std::fs::read_to_string(&tpl_path)
            .unwrap()
            .replace("@VERSION@", "\"0.0.0\"")
            .replace("@SHIM_SRC@", "\"lib.rs\"")
            .replace("@SHIM_BUILD@", "\"build.rs\"")
            .replace("@CORE@", "\"core\"");
        let tpl = table(&tpl_path, Some(tpl_text));
        assert_eq!(tpl["lib"]["name"], pre["lib"]["name"]);
        assert_eq!(tpl["lib"]["crate-type"], pre["lib"]["crate-type"]);
        assert_eq!(
            tpl["package"]["edition"],
            ws["workspace"]["package"]["edition"]
        );
        let (tdeps, pdeps) = (
            tpl["dependencies"].as_table().unwrap(),
            pre["dependencies"].as_table().unwrap(),
        );
        let names = |t: &toml::Table| t.keys().cloned().collect::<Vec<_>>();
        assert_eq!(names(tdeps), names(pdeps), "same dependencies");
        for (name, dep) in tdeps {
            let wsdep = &ws["workspace"]["dependencies"][name];
            if let Some(v) = dep.as_str() {
                let want = wsdep.as_str().or_else(|| wsdep["version"].as_str());
                assert_eq!(Some(v), want, "{name}: the workspace's version");
            }
        }
        assert_eq!(
            tpl["profile"]["release"]["lto"],
            ws["profile"]["release"]["lto"]
        );
    }
}
