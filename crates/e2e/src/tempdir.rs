//! A tiny temporary-directory helper (the `tempfile` crate is not a dependency).
//!
//! Owns: creating a fresh, uniquely named directory under `$TMPDIR` (default
//! `/tmp`) and removing it recursively on drop.
//! Never does: follow symlinks out of the directory when removing, or remove a
//! directory it did not create. Set `E2E_KEEP=1` to keep every directory for
//! post-mortem inspection (its path is printed to stderr).

use std::fs;
use std::io;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

static COUNTER: AtomicU64 = AtomicU64::new(0);

/// A directory removed (recursively) when dropped.
#[derive(Debug)]
pub struct TempDir {
    path: PathBuf,
}

impl TempDir {
    /// Creates `$TMPDIR/e2e-<prefix>-<pid>-<n>-<nanos>` with mode 0755 (servers
    /// that drop privileges to `nobody` can still read their config in it).
    ///
    /// # Panics
    /// If no directory can be created.
    pub fn new(prefix: &str) -> TempDir {
        let base = std::env::temp_dir();
        let mut last_err: Option<io::Error> = None;
        for _ in 0..100 {
            let n = COUNTER.fetch_add(1, Ordering::Relaxed);
            let nanos = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map(|d| d.subsec_nanos())
                .unwrap_or(0);
            let path = base.join(format!("e2e-{prefix}-{}-{n}-{nanos}", std::process::id()));
            match fs::create_dir(&path) {
                Ok(()) => {
                    let _ = fs::set_permissions(&path, fs::Permissions::from_mode(0o755));
                    return TempDir { path };
                }
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => last_err = Some(e),
                Err(e) => {
                    panic!(
                        "e2e: cannot create a temp dir under {}: {e}",
                        base.display()
                    )
                }
            }
        }
        panic!("e2e: cannot create a unique temp dir: {last_err:?}")
    }

    /// The directory's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// `path().join(name)`.
    pub fn join(&self, name: &str) -> PathBuf {
        self.path.join(name)
    }

    /// Writes `contents` to `name` inside the directory and returns its path.
    ///
    /// # Panics
    /// If the write fails.
    pub fn write(&self, name: &str, contents: impl AsRef<[u8]>) -> PathBuf {
        let p = self.join(name);
        if let Err(e) = fs::write(&p, contents) {
            panic!("e2e: cannot write {}: {e}", p.display());
        }
        p
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        if std::env::var_os("E2E_KEEP").is_some_and(|v| v == "1") {
            let _ = writeln_stderr(&format!("e2e: keeping {}", self.path.display()));
            return;
        }
        // remove_dir_all does not follow symlinks.
        let _ = fs::remove_dir_all(&self.path);
    }
}

fn writeln_stderr(s: &str) -> io::Result<()> {
    use std::io::Write;
    writeln!(io::stderr(), "{s}")
}
