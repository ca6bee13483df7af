//! The launcher's private files: the `--isolate` state, resolv.conf and hosts, and the
//! `--summary` records. They hold passwords and every destination, so they are never at a
//! name another user can predict, pre-create or point elsewhere.
//!
//! How: a directory with a random name, made with `mkdir(0700)` (which fails if the name
//! exists) and then used only through an fd checked to be that directory and ours; files in it
//! created with `O_CREAT | O_EXCL | O_NOFOLLOW`, mode 0600; everything removed when the owner
//! is dropped — which the launcher does on every way out, including a program's signal death.
//! Where no other process needs a path, a memfd (nothing on disk at all).
//! Must never: follow a symlink, reuse an existing file or directory, or leave a file behind
//! on any exit the launcher survives.

use std::ffi::CString;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

fn os_err(what: &str) -> String {
    format!("{what}: {}", std::io::Error::last_os_error())
}

/// `n` random bytes as hex, from the kernel's generator.
pub fn random_hex(n: usize) -> Result<String, String> {
    let mut buf = vec![0u8; n];
    let mut got = 0;
    while got < n {
        let rest = &mut buf[got..];
        // SAFETY: getrandom into our own buffer.
        let r = unsafe { libc::getrandom(rest.as_mut_ptr().cast(), rest.len(), 0) };
        if r < 0 {
            if std::io::Error::last_os_error().raw_os_error() == Some(libc::EINTR) {
                continue;
            }
            return Err(os_err("getrandom"));
        }
        got += r as usize;
    }
    Ok(buf.iter().map(|b| format!("{b:02x}")).collect())
}

/// Moves `fd` above 0-2 if it landed there (a launcher started with stdio closed): a later
/// message to stderr must never land in a private file.
pub fn above_stdio(fd: RawFd) -> Result<RawFd, String> {
    if fd >= 3 {
        return Ok(fd);
    }
    // SAFETY: duplicating our own fd above 2, then closing the low one.
    let high = unsafe { libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, 3) };
    unsafe { libc::close(fd) };
    if high < 0 {
        return Err(os_err("fcntl"));
    }
    Ok(high)
}

/// A directory only this launch can use, removed with everything in it on drop.
pub struct PrivateDir {
    path: PathBuf,
    fd: OwnedFd,
}

impl PrivateDir {
    /// Creates `<temp dir>/<prefix>-<random>` (mode 0700) and opens it.
    pub fn create(prefix: &str) -> Result<PrivateDir, String> {
        let base = std::env::temp_dir();
        for _ in 0..16 {
            let path = base.join(format!("{prefix}-{}", random_hex(12)?));
            let c = CString::new(path.as_os_str().as_bytes()).map_err(|_| "NUL in TMPDIR")?;
            // SAFETY: mkdir with a valid path; fails if anything exists there (even a symlink).
            if unsafe { libc::mkdir(c.as_ptr(), 0o700) } != 0 {
                let e = std::io::Error::last_os_error();
                if e.raw_os_error() == Some(libc::EEXIST) {
                    continue;
                }
                return Err(format!("creating {}: {e}", path.display()));
            }
            // SAFETY: open of the directory we just made; O_NOFOLLOW: not if it was replaced
            // by a symlink meanwhile.
            let fd = unsafe {
                libc::open(
                    c.as_ptr(),
                    libc::O_RDONLY | libc::O_DIRECTORY | libc::O_NOFOLLOW | libc::O_CLOEXEC,
                )
            };
            if fd < 0 {
                return Err(os_err(&format!("opening {}", path.display())));
            }
            // SAFETY: a new fd we own.
            let fd = unsafe { OwnedFd::from_raw_fd(above_stdio(fd)?) };
            let dir = PrivateDir { path, fd };
            dir.verify()?;
            return Ok(dir);
        }
        Err(format!(
            "cannot create a private directory in {}",
            base.display()
        ))
    }

    /// The directory behind our fd is ours and closed to everyone else.
    fn verify(&self) -> Result<(), String> {
        // SAFETY: fstat into a zeroed struct.
        let st = unsafe {
            let mut st: libc::stat = std::mem::zeroed();
            if libc::fstat(self.fd.as_raw_fd(), &mut st) != 0 {
                return Err(os_err("fstat"));
            }
            st
        };
        // SAFETY: geteuid cannot fail.
        let me = unsafe { libc::geteuid() };
        if st.st_mode & libc::S_IFMT != libc::S_IFDIR || st.st_uid != me || st.st_mode & 0o077 != 0
        {
            return Err(format!(
                "{}: not a private directory of ours (owner {}, mode {:o})",
                self.path.display(),
                st.st_uid,
                st.st_mode & 0o7777
            ));
        }
        Ok(())
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Creates `name` in the directory (0600, must not exist, never through a symlink) with
    /// `contents`; returns its fd (close-on-exec).
    pub fn create_file(&self, name: &str, contents: &[u8]) -> Result<OwnedFd, String> {
        let c = CString::new(name).map_err(|_| "NUL in file name")?;
        // SAFETY: openat relative to our directory fd.
        let fd = unsafe {
            libc::openat(
                self.fd.as_raw_fd(),
                c.as_ptr(),
                libc::O_RDWR | libc::O_CREAT | libc::O_EXCL | libc::O_NOFOLLOW | libc::O_CLOEXEC,
                0o600,
            )
        };
        if fd < 0 {
            return Err(os_err(&format!(
                "creating {}",
                self.path.join(name).display()
            )));
        }
        // SAFETY: a new fd we own.
        let fd = unsafe { OwnedFd::from_raw_fd(above_stdio(fd)?) };
        write_all(fd.as_raw_fd(), contents)?;
        Ok(fd)
    }
}

impl Drop for PrivateDir {
    fn drop(&mut self) {
        // Everything in it is ours (no one else can create there). Names are removed through
        // our fd, so a directory swapped in at the path is never touched.
        if let Ok(entries) = std::fs::read_dir(format!("/proc/self/fd/{}", self.fd.as_raw_fd())) {
            for e in entries.flatten() {
                if let Ok(c) = CString::new(e.file_name().as_bytes()) {
                    // SAFETY: unlinkat relative to our directory fd.
                    unsafe { libc::unlinkat(self.fd.as_raw_fd(), c.as_ptr(), 0) };
                }
            }
        }
        if let Ok(c) = CString::new(self.path.as_os_str().as_bytes()) {
            // SAFETY: rmdir of our (now empty) directory; fails harmlessly otherwise.
            unsafe { libc::rmdir(c.as_ptr()) };
        }
    }
}

fn write_all(fd: RawFd, mut bytes: &[u8]) -> Result<(), String> {
    while !bytes.is_empty() {
        // SAFETY: writing our own buffer to our fd.
        let n = unsafe { libc::write(fd, bytes.as_ptr().cast(), bytes.len()) };
        if n < 0 && std::io::Error::last_os_error().raw_os_error() == Some(libc::EINTR) {
            continue;
        }
        if n <= 0 {
            return Err(os_err("writing a private file"));
        }
        bytes = &bytes[n as usize..];
    }
    Ok(())
}

/// The records `--summary` reads at exit when no `--report FILE` was given.
pub struct TempReport {
    /// Where every process of the tree appends its records.
    pub path: PathBuf,
    /// Keeps a memfd alive for the launch (its path is `/proc/<launcher>/fd/N`).
    _memfd: Option<OwnedFd>,
}

impl TempReport {
    /// A memfd reached as `/proc/<launcher pid>/fd/N` (nothing on disk); or, with `dir` (under
    /// `--isolate`, where a process in the sandbox's user namespace may not open another
    /// namespace's `/proc/<pid>/fd`), a 0600 file in that private directory.
    pub fn create(dir: Option<&PrivateDir>) -> Result<TempReport, String> {
        if let Some(dir) = dir {
            drop(dir.create_file("report.jsonl", b"")?);
            return Ok(TempReport {
                path: dir.path().join("report.jsonl"),
                _memfd: None,
            });
        }
        // SAFETY: memfd_create with a static name.
        let fd = unsafe { libc::memfd_create(c"chainsocks-report".as_ptr(), libc::MFD_CLOEXEC) };
        if fd < 0 {
            return Err(os_err("memfd_create"));
        }
        // SAFETY: a new fd we own.
        let fd = unsafe { OwnedFd::from_raw_fd(above_stdio(fd)?) };
        Ok(TempReport {
            path: PathBuf::from(format!(
                "/proc/{}/fd/{}",
                std::process::id(),
                fd.as_raw_fd()
            )),
            _memfd: Some(fd),
        })
    }
}

/// Opens (creating 0600 if new) the `--report FILE` the user named, for appending; its
/// absolute path for the processes of the tree.
pub fn user_report(path: &Path) -> Result<PathBuf, String> {
    use std::os::unix::fs::OpenOptionsExt;
    let abs = std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf());
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .open(&abs)
        .map_err(|e| format!("--report {}: {e}", abs.display()))?;
    Ok(abs)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::{MetadataExt, PermissionsExt};

    #[test]
    fn private_dir_is_private_and_cleaned() {
        let d = PrivateDir::create("cs-test").unwrap();
        let path = d.path().to_path_buf();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        assert!(name.starts_with("cs-test-") && name.len() == "cs-test-".len() + 24);
        let m = std::fs::symlink_metadata(&path).unwrap();
        assert!(m.is_dir());
        assert_eq!(m.permissions().mode() & 0o777, 0o700);
        let fd = d.create_file("state", b"secret").unwrap();
        drop(fd);
        let f = std::fs::symlink_metadata(path.join("state")).unwrap();
        assert_eq!(f.permissions().mode() & 0o777, 0o600);
        assert_eq!(f.uid(), unsafe { libc::geteuid() });
        assert_eq!(std::fs::read(path.join("state")).unwrap(), b"secret");
        // Never a second time, never through a symlink.
        assert!(d.create_file("state", b"x").is_err());
        std::os::unix::fs::symlink("/nonexistent-target", path.join("link")).unwrap();
        assert!(d.create_file("link", b"x").is_err());
        assert!(!Path::new("/nonexistent-target").exists());
        drop(d);
        assert!(!path.exists(), "removed with its files");
    }

    #[test]
    fn names_are_random() {
        let a = random_hex(12).unwrap();
        let b = random_hex(12).unwrap();
        assert_eq!(a.len(), 24);
        assert_ne!(a, b);
    }

    #[test]
    fn temp_report_in_memory() {
        let r = TempReport::create(None).unwrap();
        let p = r.path.clone();
        assert!(p.starts_with(format!("/proc/{}/fd/", std::process::id())));
        {
            use std::io::Write;
            let mut f = std::fs::OpenOptions::new().append(true).open(&p).unwrap();
            f.write_all(b"{\"kind\":\"connect\"}\n").unwrap();
        }
        assert_eq!(
            std::fs::read_to_string(&p).unwrap(),
            "{\"kind\":\"connect\"}\n"
        );
    }
}
