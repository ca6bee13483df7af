//! Publishes where this crate's sources are, as `DEP_CHAINSOCKS_CORE_SRC` for the build
//! scripts of crates that depend on it directly (the launcher, which compiles the preload
//! library against these sources, also when built from the published .crate files).
//! Must never: build or link anything.
fn main() {
    println!("cargo::rerun-if-changed=build.rs");
    if let Some(dir) = std::env::var_os("CARGO_MANIFEST_DIR") {
        println!(
            "cargo::metadata=src={}",
            std::path::Path::new(&dir).display()
        );
    }
}
