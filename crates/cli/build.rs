//! Build script of the `chainsocks` package.
//!
//! 1. The preload library. It compiles libchainsocks.so from `shim/` (the preload crate's
//!    sources, which `cargo package` ships inside this package: `shim/src` and `shim/build.rs`
//!    are symlinks to crates/preload, followed when packaging) against chainsocks-core's
//!    sources (found through core's `links` metadata, `DEP_CHAINSOCKS_CORE_SRC`, so this works
//!    from the published .crate files too). It runs the same cargo and rustc, offline, with its
//!    own target dir (`target/<profile>/chainsocks-shim/`, shared by every feature variant of
//!    this build) and a manifest generated from `shim/Cargo.toml.in`, release when this build
//!    is release. The launcher embeds the bytes (`embedded.rs`), with their
//!    SHA-256 in `CHAINSOCKS_LIB_SHA256`.
//! 2. The man page (also gzipped, for the Debian package) and shell completions (from the
//!    same clap definition as the binary), written to `target/<profile>/chainsocks-assets/`,
//!    where cargo-deb's `target/release/` asset paths find them.
//!
//! Must never: write into the source tree; let this build's flags, profile, features or target
//! dir leak into the inner build (the `CARGO_*` and `RUSTFLAGS` variables are scrubbed, except
//! the few that say where crates come from and the jobserver); embed a stale library (every
//! source it is built from is a `rerun-if-changed`).

use std::env;
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

#[allow(dead_code)]
#[path = "src/cli.rs"]
mod cli;
#[allow(dead_code)]
#[path = "src/manual.rs"]
mod manual;

const LIB: &str = "libchainsocks.so";

fn main() {
    let out = PathBuf::from(env::var_os("OUT_DIR").unwrap_or_default());
    let lib = match build_shim(&out) {
        Ok(lib) => lib,
        Err(e) => {
            eprintln!("error: building the preload library for embedding: {e}");
            std::process::exit(1);
        }
    };
    let bytes = fs::read(&lib).unwrap_or_default();
    let hash = sha256_hex(&bytes);
    let embedded = out.join(LIB);
    if let Err(e) = write_if_changed(&embedded, &bytes) {
        eprintln!("error: {}: {e}", embedded.display());
        std::process::exit(1);
    }
    println!("cargo::rustc-env=CHAINSOCKS_LIB_SHA256={hash}");
    if let Err(e) = write_assets(&out) {
        println!("cargo::warning=man page and completions not written: {e}");
    }
}

/// Builds libchainsocks.so in the inner target dir; returns its path.
fn build_shim(out: &Path) -> Result<PathBuf, String> {
    let here = PathBuf::from(env::var_os("CARGO_MANIFEST_DIR").ok_or("no CARGO_MANIFEST_DIR")?);
    let shim = here.join("shim");
    let real = |p: PathBuf| fs::canonicalize(&p).map_err(|e| format!("{}: {e}", p.display()));
    let src = real(shim.join("src"))?;
    let script = real(shim.join("build.rs"))?;
    let template = shim.join("Cargo.toml.in");
    let core = PathBuf::from(
        env::var_os("DEP_CHAINSOCKS_CORE_SRC").ok_or("chainsocks-core did not say where it is")?,
    );
    for p in [
        &src,
        &script,
        &template,
        &core.join("src"),
        &core.join("Cargo.toml"),
    ] {
        println!("cargo::rerun-if-changed={}", p.display());
    }
    let manifest = fs::read_to_string(&template)
        .map_err(|e| format!("{}: {e}", template.display()))?
        .replace("@VERSION@", &toml_str(env!("CARGO_PKG_VERSION")))
        .replace(
            "@SHIM_SRC@",
            &toml_str(&src.join("lib.rs").display().to_string()),
        )
        .replace("@SHIM_BUILD@", &toml_str(&script.display().to_string()))
        .replace("@CORE@", &toml_str(&core.display().to_string()));
    // One inner build tree per profile directory, shared by every variant of this build
    // (`build -p chainsocks`, `--workspace`, clippy and tests unify features differently and
    // so get different OUT_DIRs): switching between them rebuilds nothing. The manifest lives
    // in a folder named by its content, so sources at another path (`cargo package`'s
    // verification) never flip-flop with these.
    let base = profile_dir(out).map_or_else(|| out.to_path_buf(), Path::to_path_buf);
    let base = base.join("chainsocks-shim");
    let dir = base.join(sha256_hex(manifest.as_bytes()).get(..16).unwrap_or("m"));
    fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    write_if_changed(&dir.join("Cargo.toml"), manifest.as_bytes())
        .map_err(|e| format!("{}: {e}", dir.display()))?;

    let target = env::var("TARGET").map_err(|_| "no TARGET")?;
    let release = env::var("PROFILE").is_ok_and(|p| p == "release");
    // Cargo decides whether the inner build's path dependencies changed by file mtimes, and
    // sources unpacked from a .crate (`cargo package`'s verification, a registry) all carry
    // one fixed old mtime: a new core of the same version would look unchanged and the
    // library would be linked against the core compiled last time. Those builds get a target
    // dir named by the content of the sources instead (the workspace keeps one tree, whose
    // mtimes are real, so an edit rebuilds only what it touches).
    let packaged = here.parent().is_none_or(|crates| !core.starts_with(crates));
    let target_dir = if packaged {
        let mut all = Vec::new();
        for d in [&src, &core] {
            tree_bytes(d, &mut all).map_err(|e| format!("{}: {e}", d.display()))?;
        }
        all.extend(fs::read(&script).map_err(|e| format!("{}: {e}", script.display()))?);
        let h = sha256_hex(&all);
        base.join(format!("target-{}", h.get(..16).unwrap_or("x")))
    } else {
        base.join("target")
    };
    let cargo = env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let run = |offline: bool| -> Result<bool, String> {
        let mut c = Command::new(&cargo);
        c.arg("build")
            .arg("--lib")
            .arg("--manifest-path")
            .arg(dir.join("Cargo.toml"))
            .arg("--target")
            .arg(&target)
            .arg("--target-dir")
            .arg(&target_dir)
            .current_dir(&dir)
            // Cargo reads directives from our stdout: the inner build's output goes to stderr.
            .stdout(Stdio::from(std::io::stderr()))
            .stderr(Stdio::inherit());
        if release {
            c.arg("--release");
        }
        if offline {
            c.arg("--offline");
        }
        scrub(&mut c);
        c.status()
            .map(|s| s.success())
            .map_err(|e| format!("running {}: {e}", Path::new(&cargo).display()))
    };
    // Every crate the library needs is one this build already fetched: offline first, so a
    // build without network works; online only if that fails (a registry cache we cannot see).
    if !run(true)? && !run(false)? {
        return Err("the inner cargo build failed (its output is above)".into());
    }
    let profile = if release { "release" } else { "debug" };
    Ok(target_dir.join(&target).join(profile).join(LIB))
}

/// Removes what would make the inner build differ from a plain `cargo build` of the library:
/// this build's flags, profile overrides, target dir, features and package variables, and
/// clippy's wrapper. Kept: where crates come from (CARGO_HOME, registries, network and HTTP
/// settings), linkers, and the jobserver (CARGO_MAKEFLAGS), so both builds share the cores.
fn scrub(c: &mut Command) {
    for (k, _) in env::vars_os() {
        let Some(k) = k.to_str() else { continue };
        let keep = k == "CARGO_HOME"
            || k == "CARGO_MAKEFLAGS"
            || k.starts_with("CARGO_NET_")
            || k.starts_with("CARGO_HTTP_")
            || k.starts_with("CARGO_REGISTRIES_")
            || k.starts_with("CARGO_REGISTRY_")
            || (k.starts_with("CARGO_TARGET_") && k.ends_with("_LINKER"));
        let leaks = (k.starts_with("CARGO") && !keep)
            || k.starts_with("__CARGO")
            || k.starts_with("DEP_")
            || matches!(
                k,
                "RUSTFLAGS"
                    | "RUSTDOCFLAGS"
                    | "RUSTC_WORKSPACE_WRAPPER"
                    | "OUT_DIR"
                    | "TARGET"
                    | "HOST"
                    | "NUM_JOBS"
                    | "OPT_LEVEL"
                    | "DEBUG"
                    | "PROFILE"
            );
        if leaks {
            c.env_remove(k);
        }
    }
}

/// A TOML basic string.
/// Appends the relative path and the bytes of every file under `dir` (sorted) to `out`.
fn tree_bytes(dir: &Path, out: &mut Vec<u8>) -> std::io::Result<()> {
    let mut stack = vec![dir.to_path_buf()];
    let mut files = Vec::new();
    while let Some(d) = stack.pop() {
        for e in fs::read_dir(&d)? {
            let p = e?.path();
            if p.is_dir() {
                stack.push(p);
            } else {
                files.push(p);
            }
        }
    }
    files.sort();
    for f in files {
        out.extend_from_slice(
            f.strip_prefix(dir)
                .unwrap_or(&f)
                .as_os_str()
                .as_encoded_bytes(),
        );
        out.push(0);
        out.extend_from_slice(&fs::read(&f)?);
    }
    Ok(())
}

fn toml_str(s: &str) -> String {
    let mut o = String::from("\"");
    for ch in s.chars() {
        match ch {
            '"' => o.push_str("\\\""),
            '\\' => o.push_str("\\\\"),
            c if (c as u32) < 0x20 || c == '\u{7f}' => o.push_str(&format!("\\u{:04x}", c as u32)),
            c => o.push(c),
        }
    }
    o.push('"');
    o
}

fn sha256_hex(b: &[u8]) -> String {
    use sha2::Digest;
    sha2::Sha256::digest(b)
        .iter()
        .map(|x| format!("{x:02x}"))
        .collect()
}

/// Writes only when the content differs (an unchanged file keeps its mtime).
fn write_if_changed(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    if fs::read(path).is_ok_and(|old| old == bytes) {
        return Ok(());
    }
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let mut f = fs::File::create(&tmp)?;
    f.write_all(bytes)?;
    drop(f);
    fs::rename(&tmp, path)
}

/// `<target dir>/[<triple>/]<profile>/`: OUT_DIR is `<that>/build/chainsocks-HASH/out`.
fn profile_dir(out: &Path) -> Option<&Path> {
    out.parent()
        .and_then(Path::parent)
        .filter(|b| b.file_name().is_some_and(|n| n == "build"))
        .and_then(Path::parent)
}

/// The man page and completions into `<target dir>/<profile>/chainsocks-assets/` (OUT_DIR is
/// `<that profile dir>/build/chainsocks-HASH/out`).
fn write_assets(out: &Path) -> Result<(), String> {
    let profile_dir =
        profile_dir(out).ok_or_else(|| format!("unexpected OUT_DIR layout: {}", out.display()))?;
    let dir = profile_dir.join("chainsocks-assets");
    fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    use clap_complete::Shell;
    let files = [
        ("chainsocks.1", manual::man_page()),
        ("chainsocks.bash", manual::completions(Shell::Bash)),
        ("_chainsocks", manual::completions(Shell::Zsh)),
        ("chainsocks.fish", manual::completions(Shell::Fish)),
    ];
    for (name, bytes) in files {
        write_if_changed(&dir.join(name), &bytes)
            .map_err(|e| format!("{}: {e}", dir.join(name).display()))?;
    }
    // Debian policy wants man pages compressed with `gzip -9n` (no name, no time stamp: the
    // same bytes every build), and cargo-deb compresses only assets it did not build (those
    // under target/ count as built).
    let gz = dir.join("chainsocks.1.gz");
    let o = Command::new("gzip")
        .args(["-9n", "-c"])
        .arg(dir.join("chainsocks.1"))
        .output()
        .map_err(|e| format!("gzip: {e}"))?;
    if !o.status.success() {
        return Err(format!("gzip -9n: {}", o.status));
    }
    write_if_changed(&gz, &o.stdout).map_err(|e| format!("{}: {e}", gz.display()))?;
    Ok(())
}
