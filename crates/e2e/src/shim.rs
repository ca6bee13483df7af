//! Running programs under chainsocks in tests: the built launcher and library, a config file
//! in a temp dir, a log file, and a clean proxy-free environment.
//!
//! Never: falls back to anything when the binaries are missing (it panics: build first with
//! `cargo build --workspace`), or inherits proxy variables (curl would proxy by itself).

use std::ffi::OsStr;
use std::path::PathBuf;
use std::process::Command;

use crate::TempDir;

/// `target/<profile>/`, where the launcher, library and csclient are built.
pub fn target_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("current_exe");
    let mut dir = exe.parent().map(|p| p.to_path_buf());
    while let Some(d) = dir {
        if d.join("chainsocks").is_file() && d.join("libchainsocks.so").is_file() {
            return d;
        }
        dir = d.parent().map(|p| p.to_path_buf());
    }
    panic!("e2e: chainsocks / libchainsocks.so not built: run `cargo build --workspace` first")
}

/// The `chainsocks` launcher binary.
pub fn chainsocks_bin() -> PathBuf {
    target_dir().join("chainsocks")
}

/// Environment variables that would make a program proxy by itself.
pub const PROXY_VARS: &[&str] = &[
    "http_proxy",
    "https_proxy",
    "HTTP_PROXY",
    "HTTPS_PROXY",
    "ALL_PROXY",
    "all_proxy",
    "NO_PROXY",
    "no_proxy",
    "CHAINSOCKS_CONFIG",
    "CHAINSOCKS_SHM",
    "CHAINSOCKS_LOG",
    "CHAINSOCKS_PROXY",
    "LD_PRELOAD",
];

/// One chainsocks configuration in a temp dir.
pub struct Launch {
    dir: TempDir,
    pub config: PathBuf,
}

impl Launch {
    /// A launch with this TOML config.
    pub fn new(toml: &str) -> Launch {
        let dir = TempDir::new("cs-launch");
        let config = dir.write("chainsocks.toml", toml.as_bytes());
        Launch { dir, config }
    }

    /// A strict chain of these proxy URLs, with short timeouts for tests.
    pub fn chain(urls: &[String]) -> Launch {
        let list: Vec<String> = urls.iter().map(|u| format!("{u:?}")).collect();
        Launch::new(&format!(
            "connect_timeout_ms = 3000\nhandshake_timeout_ms = 8000\nproxy = [{}]\n",
            list.join(", ")
        ))
    }

    /// `chainsocks -f CONFIG -- program`, logging to this launch's log file.
    pub fn cmd(&self, program: impl AsRef<OsStr>) -> Command {
        self.cmd_with(&[], program)
    }

    /// `chainsocks -f CONFIG FLAGS... -- program`, logging to this launch's log file.
    pub fn cmd_with(&self, flags: &[&str], program: impl AsRef<OsStr>) -> Command {
        let mut c = clean(Command::new(chainsocks_bin()));
        c.arg("-f")
            .arg(&self.config)
            .args(flags)
            .arg("--")
            .arg(program);
        c.env("CHAINSOCKS_LOG_FILE", self.log_path());
        c
    }

    /// `chainsocks -f CONFIG -- csclient`.
    pub fn csclient(&self) -> Command {
        self.cmd(crate::csclient())
    }

    /// `chainsocks -f CONFIG -- csudp`.
    pub fn csudp(&self) -> Command {
        self.cmd(crate::csudp())
    }

    pub fn log_path(&self) -> PathBuf {
        self.dir.join("chainsocks.log")
    }

    /// What the shim logged so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    pub fn dir(&self) -> &std::path::Path {
        self.dir.path()
    }
}

/// A command with no proxy-related environment.
pub fn clean(mut c: Command) -> Command {
    for v in PROXY_VARS {
        c.env_remove(v);
    }
    c
}
