//! End-to-end tests of installing chainsocks (issue 13): `cargo install` gives one
//! self-contained file that proxies with an empty HOME; the embedded library's extraction to
//! the per-user cache (eight concurrent first runs, a tampered cache, a noexec HOME, another
//! user's directory) never lets a program run unproxied; `--print-lib-path` with a plain
//! LD_PRELOAD; the man page and completion scripts load; the Debian package; the command-line
//! conventions. Every test that runs a program is in its own network namespace with only `lo`.
//!
//! The installed binary is built once per test run (`cargo install --path crates/cli`,
//! release, offline, into target/e2e-install/, sharing the workspace's target dir with
//! `cargo deb`): the first test that needs it pays one release build.

use std::ffi::OsString;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;
use std::time::Duration;

use e2e::*;

const T: Duration = Duration::from_secs(60);
/// A cold release build of the launcher (and of the library inside it) on 2 cores.
const BUILD: Duration = Duration::from_secs(20 * 60);

fn workspace() -> PathBuf {
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    std::fs::canonicalize(&p).unwrap_or(p)
}

fn cargo() -> OsString {
    std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into())
}

/// The workspace's target dir (`target_dir()` is `target/<profile>`).
fn target_root() -> PathBuf {
    let d = target_dir();
    d.parent().map_or(d.clone(), Path::to_path_buf)
}

/// A cargo command in the workspace, offline (tests run in a namespace without network) and
/// with the locked dependency versions.
fn cargo_cmd(args: &[&str]) -> Command {
    let mut c = Command::new(cargo());
    c.args(args).current_dir(workspace());
    c
}

/// `cargo install --path crates/cli --root target/e2e-install`: the installed binary.
fn installed() -> &'static Path {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        let root = target_root().join("e2e-install");
        let _ = std::fs::remove_dir_all(&root);
        let mut c = cargo_cmd(&["install", "--offline", "--locked", "--path", "crates/cli"]);
        c.arg("--root").arg(&root);
        c.arg("--target-dir").arg(target_root());
        let o = run(&mut c, BUILD);
        assert!(o.status.success(), "cargo install failed: {}", show(&o));
        let bins: Vec<_> = std::fs::read_dir(root.join("bin"))
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(bins, ["chainsocks"], "one file, nothing next to it");
        root.join("bin/chainsocks")
    })
}

/// `bin` with no proxy variables, no XDG variables and HOME = `home`.
fn with_home(bin: &Path, home: &Path) -> Command {
    let mut c = clean(Command::new(bin));
    for v in ["XDG_RUNTIME_DIR", "XDG_CACHE_HOME", "CHAINSOCKS_LIB"] {
        c.env_remove(v);
    }
    c.env("HOME", home);
    c
}

/// A 64 KiB file on an HTTP origin and dante in front of it, in the test's namespace.
struct Net {
    origin: HttpOrigin,
    sha: String,
    dante: Dante,
}

impl Net {
    /// Enters a fresh network namespace and starts both; `None` if dante is not installed.
    fn start() -> Option<Net> {
        netns();
        let data = random_bytes(64 * 1024, 13);
        let sha = sha256_hex(&data);
        let origin = HttpOrigin::start(vec![("/f".into(), data)]);
        let dante = Dante::start(DanteOpts::default())?;
        Some(Net { origin, sha, dante })
    }

    /// `bin -q -x socks5h://DANTE curl URL` with HOME = `home` and no XDG variables.
    fn curl(&self, bin: &Path, home: &Path) -> Command {
        let mut c = with_home(bin, home);
        c.args(["-q", "-x"])
            .arg(format!("socks5h://127.0.0.1:{}", self.dante.port()))
            .args(["curl", "-sS", "--fail", "--max-time", "20"])
            .arg(self.origin.url("/f"));
        c
    }

    /// The body came whole, and each of the `requests` so far reached the origin from dante's
    /// address (127.0.0.2), none directly.
    fn assert_proxied(&self, o: &Output, requests: usize) {
        assert!(o.status.success(), "{}", show(o));
        assert_eq!(sha256_hex(&o.stdout), self.sha);
        let peers = self.origin.peers();
        assert_eq!(peers.len(), requests, "{peers:?}");
        assert!(
            peers.iter().all(|p| p.ip().to_string() == "127.0.0.2"),
            "every request must come through dante (127.0.0.2): {peers:?}"
        );
    }
}

/// The one cached library under `dir`, checked: directory 0700, file 0500, the content hash
/// in its name, no temp files left.
fn cached_library(dir: &Path) -> PathBuf {
    let meta = std::fs::metadata(dir).unwrap();
    assert_eq!(meta.mode() & 0o7777, 0o700, "{}", dir.display());
    let names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names.len(), 1, "one library, no temp files: {names:?}");
    let lib = dir.join(&names[0]);
    let hex = names[0]
        .strip_prefix("libchainsocks-")
        .and_then(|n| n.strip_suffix(".so"))
        .unwrap_or_else(|| panic!("unexpected name {names:?}"));
    let bytes = std::fs::read(&lib).unwrap();
    assert!(sha256_hex(&bytes).starts_with(hex), "content matches name");
    assert_eq!(
        std::fs::metadata(&lib).unwrap().mode() & 0o7777,
        0o500,
        "{}",
        lib.display()
    );
    lib
}

#[test]
fn cargo_install_gives_one_file_that_proxies_with_an_empty_home() {
    let Some(net) = Net::start() else { return };
    let bin = installed();
    let size = std::fs::metadata(bin).unwrap().len();
    assert!(size < 8 << 20, "release binary is {size} bytes");
    if let Some(readelf) = find_program("readelf") {
        let o = run(Command::new(readelf).args(["-S", "--wide"]).arg(bin), T);
        assert!(
            !stdout(&o).contains(".debug_info"),
            "no debug info in the release binary"
        );
    }
    let home = TempDir::new("cs-home");
    net.assert_proxied(&run(&mut net.curl(bin, home.path()), T), 1);
    cached_library(&home.join(".cache/chainsocks"));
    // The second run reuses the cached file.
    net.assert_proxied(&run(&mut net.curl(bin, home.path()), T), 2);
    cached_library(&home.join(".cache/chainsocks"));
}

#[test]
fn eight_concurrent_first_runs_all_work() {
    let Some(net) = Net::start() else { return };
    let bin = installed();
    let home = TempDir::new("cs-home8");
    let outputs: Vec<Output> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..8)
            .map(|_| s.spawn(|| run(&mut net.curl(bin, home.path()), T)))
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    for o in &outputs {
        net.assert_proxied(o, 8);
        assert!(o.stderr.is_empty(), "{}", show(o));
    }
    cached_library(&home.join(".cache/chainsocks"));
}

#[test]
fn a_tampered_cached_library_is_replaced_never_used() {
    let Some(net) = Net::start() else { return };
    let bin = installed();
    let home = TempDir::new("cs-tamper");
    let cache = home.join(".cache/chainsocks");
    net.assert_proxied(&run(&mut net.curl(bin, home.path()), T), 1);
    let lib = cached_library(&cache);
    let good = std::fs::read(&lib).unwrap();
    type Tamper<'a> = (&'a str, Box<dyn Fn(&Path) + 'a>);
    let tamper: [Tamper; 3] = [
        (
            "overwritten bytes",
            Box::new(|p| {
                let mut b = good.clone();
                for x in &mut b[0x1000..0x3000] {
                    *x = 0xcc;
                }
                std::fs::write(p, b).unwrap();
            }),
        ),
        (
            "truncated",
            Box::new(|p| std::fs::write(p, &good[..good.len() / 2]).unwrap()),
        ),
        (
            "a symlink",
            Box::new(|p| {
                std::fs::remove_file(p).unwrap();
                std::os::unix::fs::symlink("/bin/sh", p).unwrap();
            }),
        ),
    ];
    for (i, (what, f)) in tamper.iter().enumerate() {
        std::fs::set_permissions(&lib, std::fs::Permissions::from_mode(0o600)).unwrap();
        f(&lib);
        let o = run(&mut net.curl(bin, home.path()), T);
        // Replaced (with a warning) and proxied: never run with a broken preload.
        net.assert_proxied(&o, i + 2);
        assert!(
            stderr(&o).contains("replacing it with the embedded library"),
            "{what}: {}",
            show(&o)
        );
        assert_eq!(
            std::fs::read(cached_library(&cache)).unwrap(),
            good,
            "{what}"
        );
    }
}

#[test]
fn another_users_cache_directory_is_refused() {
    netns();
    let bin = installed();
    let home = TempDir::new("cs-owner");
    let marker = home.join("ran");
    let cache = home.join(".cache/chainsocks");
    std::fs::create_dir_all(&cache).unwrap();
    std::os::unix::fs::chown(&cache, Some(65534), Some(65534)).unwrap();
    let mut c = with_home(bin, home.path());
    c.args(["-x", "socks5://127.0.0.1:1", "touch"]).arg(&marker);
    let o = run(&mut c, T);
    assert_eq!(o.status.code(), Some(2), "{}", show(&o));
    assert!(stderr(&o).contains("owned by uid 65534"), "{}", show(&o));
    assert_eq!(stderr(&o).lines().count(), 1, "one line: {}", show(&o));
    assert!(!marker.exists(), "nothing may run");
    assert_eq!(std::fs::read_dir(&cache).unwrap().count(), 0);
}

/// `sh -c 'mount tmpfs noexec on $dir; exec COMMAND'` in a private mount namespace.
fn on_noexec_tmpfs(dir: &Path, cmd: Command) -> Command {
    let mut c = Command::new("unshare");
    c.args(["--mount", "--propagation", "private", "sh", "-c"])
        .arg(r#"mount -t tmpfs -o noexec,mode=755 tmpfs "$0" && exec "$@""#)
        .arg(dir)
        .arg(cmd.get_program())
        .args(cmd.get_args());
    for (k, v) in cmd.get_envs() {
        match v {
            Some(v) => c.env(k, v),
            None => c.env_remove(k),
        };
    }
    c
}

#[test]
fn a_noexec_home_falls_back_or_refuses_never_unproxied() {
    let Some(net) = Net::start() else { return };
    if require("unshare").is_none() {
        return;
    }
    let bin = installed();
    let outside = TempDir::new("cs-noexec");
    let marker = outside.join("ran");
    // HOME on noexec, no XDG variables: nowhere to load from → exit 2 naming noexec.
    let home = TempDir::new("cs-nxhome");
    let mut c = with_home(bin, home.path());
    c.args(["-q", "-x"])
        .arg(format!("socks5h://127.0.0.1:{}", net.dante.port()))
        .args(["sh", "-c"])
        .arg(format!(
            "touch {}; curl -sS --max-time 20 {}",
            marker.display(),
            net.origin.url("/f")
        ));
    let o = run(&mut on_noexec_tmpfs(home.path(), c), T);
    assert_eq!(o.status.code(), Some(2), "{}", show(&o));
    assert!(stderr(&o).contains("noexec"), "{}", show(&o));
    assert_eq!(stderr(&o).lines().count(), 1, "one line: {}", show(&o));
    assert!(!marker.exists(), "the program must not run");
    assert!(net.origin.peers().is_empty());

    // XDG_RUNTIME_DIR on noexec, HOME fine: falls back to ~/.cache and proxies.
    let runtime = TempDir::new("cs-nxrun");
    let home = TempDir::new("cs-xhome");
    let mut c = net.curl(bin, home.path());
    c.env("XDG_RUNTIME_DIR", runtime.path());
    net.assert_proxied(&run(&mut on_noexec_tmpfs(runtime.path(), c), T), 1);
    cached_library(&home.join(".cache/chainsocks"));
}

/// The released library carries its unwinder inside (crates/preload/build.rs): no
/// libgcc_s.so.1 to load in every process, and no `_Unwind_*` exported that could interpose
/// the program's own.
fn unwinder_is_private(lib: &Path) {
    let Some(readelf) = require("readelf") else {
        return;
    };
    let o = run(
        Command::new(readelf)
            .args(["-d", "--dyn-syms", "-W"])
            .arg(lib),
        T,
    );
    assert!(o.status.success(), "{}", show(&o));
    let out = stdout(&o);
    assert!(!out.contains("[libgcc_s"), "{out}");
    let exported: Vec<&str> = out
        .lines()
        .filter(|l| l.contains("_Unwind_") && !l.contains(" UND "))
        .collect();
    assert!(exported.is_empty(), "{exported:?}");
}

/// The released library's program headers (crates/preload/build.rs): RELRO kept, no segment
/// both writable and executable, no text relocations; where the C compiler links with GNU ld,
/// two loadable segments (read-execute, read-write: two `mmap`s at every exec) and the
/// constructor's code in `.init`, next to the headers.
fn load_layout_is_hardened(lib: &Path) {
    let Some(readelf) = require("readelf") else {
        return;
    };
    let o = run(
        Command::new(&readelf)
            .args(["-l", "-d", "-S", "-W"])
            .arg(lib),
        T,
    );
    assert!(o.status.success(), "{}", show(&o));
    let out = stdout(&o);
    let loads: Vec<&str> = out
        .lines()
        .filter(|l| l.trim_start().starts_with("LOAD "))
        .collect();
    assert!(out.contains("GNU_RELRO"), "no RELRO: {out}");
    assert!(!out.contains("TEXTREL"), "text relocations: {out}");
    assert!(
        loads
            .iter()
            .all(|l| !(l.contains(" RW") && l.contains('E'))),
        "a writable and executable segment: {loads:?}"
    );
    let gnu_ld = Command::new("cc")
        .args(["-fuse-ld=bfd", "-Wl,--version"])
        .output()
        .is_ok_and(|o| o.status.success() && o.stdout.starts_with(b"GNU ld"));
    if gnu_ld {
        assert_eq!(loads.len(), 2, "{loads:?}");
        // `.init` holds the constructor only (no start files: no DT_INIT to call it twice),
        // and `.init_array` points into it.
        assert!(!out.contains("(INIT)"), "DT_INIT present: {out}");
        // (address, size) of a section, from `readelf -S -W`.
        let section = |name: &str, kind: &str| {
            let line = out
                .lines()
                .find(|l| l.contains(&format!(" {name} ")) && l.contains(kind))
                .unwrap_or_else(|| panic!("no {name} section: {out}"));
            let f: Vec<&str> = line.split_whitespace().collect();
            let pos = f.iter().position(|x| *x == kind).unwrap();
            let hex = |x: &str| u64::from_str_radix(x, 16).unwrap();
            (hex(f[pos + 1]), hex(f[pos + 3]))
        };
        let (start, size) = section(".init", "PROGBITS");
        let (_, array_size) = section(".init_array", "INIT_ARRAY");
        let o = run(
            Command::new(readelf).args(["-x", ".init_array"]).arg(lib),
            T,
        );
        // Hex dump lines: address, up to four words of 4 bytes, then the same bytes as text
        // (which the section's size cuts off).
        let mut bytes: Vec<u8> = stdout(&o)
            .lines()
            .filter(|l| l.trim_start().starts_with("0x"))
            .flat_map(|l| l.split_whitespace().skip(1).collect::<Vec<_>>())
            .filter(|w| w.len() == 8 && w.chars().all(|c| c.is_ascii_hexdigit()))
            .flat_map(|w| {
                (0..4)
                    .map(|i| u8::from_str_radix(&w[2 * i..2 * i + 2], 16).unwrap())
                    .collect::<Vec<_>>()
            })
            .collect();
        bytes.truncate(usize::try_from(array_size).unwrap());
        let ptrs: Vec<u64> = bytes
            .chunks_exact(8)
            .map(|c| u64::from_le_bytes(c.try_into().unwrap()))
            .collect();
        assert!(
            ptrs.iter().any(|p| (start..start + size).contains(p)),
            "no constructor in .init ({start:#x}+{size:#x}): {ptrs:x?}"
        );
    }
}

#[test]
fn print_lib_path_with_plain_ld_preload_proxies_curl() {
    let Some(net) = Net::start() else { return };
    let Some(curl) = require("curl") else { return };
    let bin = installed();
    let home = TempDir::new("cs-plain");
    let o = run(with_home(bin, home.path()).arg("--print-lib-path"), T);
    assert!(o.status.success(), "{}", show(&o));
    let lib = PathBuf::from(stdout(&o).trim_end());
    assert_eq!(lib, cached_library(&home.join(".cache/chainsocks")));
    unwinder_is_private(&lib);
    load_layout_is_hardened(&lib);
    let conf = home.write(
        "chain.toml",
        format!("proxy = [\"socks5h://127.0.0.1:{}\"]\n", net.dante.port()),
    );
    let log = home.join("shim.log");
    let mut c = clean(Command::new(curl));
    c.env("LD_PRELOAD", &lib)
        .env("CHAINSOCKS_CONFIG", &conf)
        .env("CHAINSOCKS_LOG_FILE", &log)
        .args(["-sS", "--fail", "--max-time", "20", &net.origin.url("/f")]);
    net.assert_proxied(&run(&mut c, T), 1);
    let log = std::fs::read_to_string(&log).unwrap_or_default();
    assert!(
        log.contains(&format!(
            "127.0.0.1:{} -> {} ok",
            net.dante.port(),
            net.origin.addr()
        )),
        "{log}"
    );
}

#[test]
fn man_page_renders_with_man() {
    let Some(man) = require("man") else { return };
    let page = run(Command::new(chainsocks_bin()).arg("--man-page"), T);
    assert!(page.status.success(), "{}", show(&page));
    let mut c = Command::new(man);
    c.args(["-P", "cat", "-l", "-"]).env("MANWIDTH", "100");
    let o = run_with_stdin(&mut c, &page.stdout);
    assert!(o.status.success(), "{}", show(&o));
    let text = stdout(&o);
    for needle in [
        "SYNOPSIS",
        "--print-lib-path",
        "chainsocks check --target",
        "CONFIGURATION",
        "handshake_timeout_ms",
        "ENVIRONMENT",
        "CHAINSOCKS_LIB",
        "XDG_CACHE_HOME",
        "FILES",
        "/etc/proxychains4.conf",
        "EXIT STATUS",
    ] {
        assert!(text.contains(needle), "{needle} missing:\n{text}");
    }
    assert!(
        !stderr(&o).contains("warning"),
        "roff warnings: {}",
        stderr(&o)
    );
}

/// Runs `c` with `input` on its stdin.
fn run_with_stdin(c: &mut Command, input: &[u8]) -> Output {
    use std::io::Write;
    use std::process::Stdio;
    let mut child = c
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let input = input.to_vec();
    let feeder = std::thread::spawn(move || {
        let _ = stdin.write_all(&input);
    });
    let o = child.wait_with_output().unwrap();
    feeder.join().unwrap();
    o
}

#[test]
fn completion_scripts_load_in_their_shells() {
    let dir = TempDir::new("cs-compl");
    let script = |shell: &str| {
        let o = run(
            Command::new(chainsocks_bin()).args(["--completions", shell]),
            T,
        );
        assert!(o.status.success(), "{shell}: {}", show(&o));
        dir.write(&format!("chainsocks.{shell}"), &o.stdout)
    };
    let bash = script("bash");
    let o = run(
        Command::new("bash")
            .arg("-c")
            .arg(r#"source "$0" && complete -p chainsocks"#)
            .arg(&bash),
        T,
    );
    assert!(stdout(&o).contains("chainsocks"), "bash: {}", show(&o));
    if let Some(zsh) = require("zsh") {
        let o = run(Command::new(zsh).arg("-n").arg(script("zsh")), T);
        assert!(o.status.success(), "zsh -n: {}", show(&o));
    }
    if let Some(fish) = require("fish") {
        let f = script("fish");
        let o = run(Command::new(&fish).arg("-n").arg(&f), T);
        assert!(o.status.success(), "fish -n: {}", show(&o));
        let o = run(
            Command::new(&fish)
                .arg("-c")
                .arg("source $argv[1]; complete -C'chainsocks --pro'")
                .arg(&f),
            T,
        );
        assert!(stdout(&o).contains("--proxy"), "fish: {}", show(&o));
    }
    for shell in ["elvish", "powershell"] {
        assert!(!std::fs::read(script(shell)).unwrap().is_empty());
    }
}

#[test]
fn debian_package_has_binary_man_page_completions_and_works() {
    let Some(net) = Net::start() else { return };
    if require("cargo-deb").is_none() || require("dpkg-deb").is_none() {
        return;
    }
    let out = TempDir::new("cs-deb");
    let mut c = cargo_cmd(&["deb", "-p", "chainsocks", "-o"]);
    c.arg(out.path()).args(["--", "--offline", "--locked"]);
    let o = run(&mut c, BUILD);
    assert!(o.status.success(), "cargo deb: {}", show(&o));
    let deb = std::fs::read_dir(out.path())
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.extension().is_some_and(|e| e == "deb"))
        .unwrap_or_else(|| panic!("no .deb: {}", show(&o)));
    let root = out.join("root");
    let o = run(Command::new("dpkg").arg("-x").arg(&deb).arg(&root), T);
    assert!(o.status.success(), "dpkg -x: {}", show(&o));
    let o = run(
        Command::new("dpkg-deb")
            .args(["-f"])
            .arg(&deb)
            .arg("Package"),
        T,
    );
    assert_eq!(stdout(&o).trim(), "chainsocks");
    let man = root.join("usr/share/man/man1/chainsocks.1.gz");
    for f in [
        "usr/bin/chainsocks",
        "usr/share/man/man1/chainsocks.1.gz",
        "usr/share/bash-completion/completions/chainsocks",
        "usr/share/zsh/vendor-completions/_chainsocks",
        "usr/share/fish/vendor_completions.d/chainsocks.fish",
        "usr/share/doc/chainsocks/README.md",
        "usr/share/doc/chainsocks/examples/chainsocks.toml",
    ] {
        assert!(root.join(f).is_file(), "{f} missing from the package");
    }
    let bin = root.join("usr/bin/chainsocks");
    // The packaged man page is the one the binary prints, compressed as Debian policy wants
    // (`gzip -9n`: maximum compression, no file name or time stamp in the header).
    let page = run(Command::new(&bin).arg("--man-page"), T);
    let gz = std::fs::read(&man).unwrap();
    assert!(gz.len() > 10 && gz[..2] == [0x1f, 0x8b], "not gzip");
    assert_eq!(gz[4..8], [0, 0, 0, 0], "a time stamp in the gzip header");
    assert_eq!(gz[3] & 0x08, 0, "a file name in the gzip header");
    assert_eq!(gz[8], 2, "not compressed with -9 (XFL)");
    let o = run(Command::new("gzip").arg("-dc").arg(&man), T);
    assert!(o.status.success(), "gzip -dc: {}", show(&o));
    assert_eq!(o.stdout, page.stdout);
    // The example config is valid as it stands.
    let example = root.join("usr/share/doc/chainsocks/examples/chainsocks.toml");
    let o = run(
        clean(Command::new(&bin))
            .arg("-f")
            .arg(&example)
            .args(["config", "show"]),
        T,
    );
    assert!(o.status.success(), "example config: {}", show(&o));
    // Its binary works on its own, with an empty HOME.
    let home = TempDir::new("cs-debhome");
    net.assert_proxied(&run(&mut net.curl(&bin, home.path()), T), 1);
}

#[test]
fn unknown_options_before_command_are_errors() {
    netns();
    let dir = TempDir::new("cs-args");
    let marker = dir.join("ran");
    let mut c = clean(Command::new(chainsocks_bin()));
    c.args(["--proxi", "socks5://127.0.0.1:1", "touch"])
        .arg(&marker);
    let o = run(&mut c, T);
    assert_eq!(o.status.code(), Some(2), "{}", show(&o));
    assert!(
        stderr(&o).contains("'--proxy'"),
        "clap's suggestion: {}",
        show(&o)
    );
    assert!(!marker.exists(), "nothing may run");
    // `--` ends chainsocks' options; after COMMAND everything is the program's.
    for args in [
        &["--", "sh", "-c", "echo \"$@\"", "sh", "--proxi", "-x"][..],
        &["sh", "-c", "echo \"$@\"", "sh", "--proxi", "-x"][..],
    ] {
        let mut c = clean(Command::new(chainsocks_bin()));
        c.args(["-q", "-x", "socks5://127.0.0.1:1"]).args(args);
        let o = run(&mut c, T);
        assert!(o.status.success(), "{args:?}: {}", show(&o));
        assert_eq!(stdout(&o), "--proxi -x\n", "{args:?}");
    }
}

#[test]
fn remote_dns_subnet_warning_only_for_files_the_user_names() {
    netns();
    if Path::new("/etc/chainsocks.toml").exists() {
        eprintln!("SKIP: /etc/chainsocks.toml exists and would be found first");
        return;
    }
    let dir = TempDir::new("cs-pxwarn");
    let home = TempDir::new("cs-pxhome");
    let conf = dir.write(
        "proxychains.conf",
        "strict_chain\nproxy_dns\nremote_dns_subnet 224\n[ProxyList]\nsocks5 127.0.0.1 1080\n",
    );
    let show_config = |named: bool, debug: bool| {
        let mut c = with_home(&chainsocks_bin(), home.path());
        c.env_remove("PROXYCHAINS_CONF_FILE")
            .env("XDG_CONFIG_HOME", home.path())
            .current_dir(dir.path());
        if named {
            c.arg("-f").arg(&conf);
        }
        if debug {
            c.env("CHAINSOCKS_LOG", "debug");
        }
        c.args(["config", "show"]);
        let o = run(&mut c, T);
        assert!(o.status.success(), "{}", show(&o));
        stderr(&o)
    };
    let err = show_config(true, false);
    assert!(
        err.contains("warning: line 3: remote_dns_subnet 224"),
        "-f names it: {err}"
    );
    let err = show_config(false, false);
    assert!(
        !err.contains("remote_dns_subnet"),
        "found, not named: {err}"
    );
    let err = show_config(false, true);
    assert!(
        err.contains("note: line 3: remote_dns_subnet 224"),
        "debug level: {err}"
    );
}
