//! Link options of libchainsocks.so that keep its load cost low in every process it is
//! preloaded into (most of which never connect). Used by both builds of the library: the
//! workspace's and the one crates/cli/build.rs embeds (its shim/build.rs is this file).
//!
//! - The unwinder (`_Unwind_*`, which `catch_unwind` needs so that a panic in a hook fails the
//!   call closed instead of aborting the host program) comes from libgcc_eh.a, linked in and
//!   kept private (the cdylib's version script exports only the hooks), instead of a
//!   DT_NEEDED on libgcc_s.so.1: one library fewer to open, map, relocate and version-check in
//!   every exec, and no libgcc_s constructor (its CPUID probes trap to the hypervisor on a VM).
//!   Where the C compiler has no libgcc_eh.a, libgcc_s.so.1 stays, with a warning.
//!   `panic = "abort"` (no unwinding needed) is decided against: a panic in a hook would then
//!   kill the host program with SIGABRT (a core dump, its work lost, its parent told
//!   "aborted") where now that one call fails with EIO and a log line says why.
//! - Lazy binding of the imports that go through the PLT.
//! - No C start files (`-nostartfiles`): crtbeginS/crtendS/crti/crtn bring only what a Rust
//!   cdylib that uses `.init_array` does not need (frame_dummy, TM clone registration,
//!   `_init`/`_fini`, and `__do_global_dtors_aux`, whose `__cxa_finalize` call binds a PLT slot
//!   at every exit), at the price of four symbol lookups at every load. std references
//!   `__dso_handle` weakly: without crtbeginS it is null, and glibc then counts thread-local
//!   destructors against the main program, which only matters to a `dlclose` (a preloaded
//!   library is never unloaded). The unwinder finds frames through PT_GNU_EH_FRAME, which does
//!   not need crtendS's end marker. Without them `.init` is empty, and the constructor's code
//!   goes there (`chainsocks_nostartfiles`, lib.rs): next to the headers, no page fault of its
//!   own.
//! - Linked by GNU ld (`-fuse-ld=bfd`, where the C compiler has it) with `-z noseparate-code`:
//!   two loadable segments, one read-execute (headers, symbol tables, read-only data and code)
//!   and one read-write (the RELRO part, then `.data`, `.got.plt`, `.bss`), where rustc's
//!   default linker (lld) makes four (read-only, code, RELRO, data): two `mmap`s fewer in every
//!   exec, about 7-11 us per exec of /bin/true measured in pairs (docs/benchmarks.md, B3).
//!   The price, decided explicitly: the library's read-only data is mapped executable, as every
//!   library was before binutils 2.31 made separate code the default (more bytes an exploit of
//!   the host program could use as gadgets; no writable byte becomes executable). Read-only
//!   data is placed before the code (a linker script of one `INSERT`, written to OUT_DIR): GNU
//!   ld's default, after the code, made a connecting process map about 100 KiB more of the
//!   file (VmHWM of the B1 client, 3 runs each: ~3030 against ~2920 KiB). lld with the
//!   segments merged the same way (`--no-rosegment`) saved only 2 us. Timing such layouts, the
//!   files must be written the same way: a library as the linker wrote it measured ~10 us per
//!   exec slower than a `cp` of the same file (the page cache's folios differ).
//!   RELRO stays: `-z norelro` measured 16 us per exec faster still, but would leave the GOT
//!   through which the library calls libc, and its vtables, writable in every host process.
//!   Where the compiler has no GNU ld, lld keeps each loadable segment on pages of its own
//!   (`-z separate-loadable-segments`: `.data`, `.got.plt` and the start of `.bss` then share
//!   one page, where they straddled two, each a copy-on-write fault in every process).
//! - References to its own exported functions bind inside the library (`-Bsymbolic-functions`):
//!   std's own `close`, `read`, `write` (and the like) reach our hooks without a symbol lookup
//!   at every load (5 fewer, about 2,100 instructions per exec of /bin/true), and never a
//!   function of the same name that the program itself defines.
//!
//! Must never: export an unwinder symbol (it would interpose the program's own libgcc_s).

use std::process::Command;

fn main() {
    println!("cargo::rustc-check-cfg=cfg(chainsocks_nostartfiles)");
    println!("cargo:rustc-cdylib-link-arg=-Wl,-z,lazy");
    let var = |k: &str| std::env::var(k).unwrap_or_default();
    if var("CARGO_CFG_TARGET_OS") != "linux" || var("CARGO_CFG_TARGET_ENV") != "gnu" {
        return;
    }
    println!("cargo:rustc-cdylib-link-arg=-nostartfiles");
    // lib.rs places the constructor in `.init`, which only start files would otherwise fill.
    println!("cargo:rustc-cfg=chainsocks_nostartfiles");
    println!("cargo:rustc-cdylib-link-arg=-Wl,-Bsymbolic-functions");
    // Cargo names the configured linker to build scripts; rustc's default is `cc`.
    let linker = std::env::var("RUSTC_LINKER").unwrap_or_else(|_| "cc".into());
    println!("cargo:rerun-if-env-changed=RUSTC_LINKER");
    // Later on the command line than rustc's own `-fuse-ld=lld`, so this one wins.
    let gnu_ld = Command::new(&linker)
        .args(["-fuse-ld=bfd", "-Wl,--version"])
        .output()
        .is_ok_and(|o| o.status.success() && o.stdout.starts_with(b"GNU ld"));
    if gnu_ld {
        println!("cargo:rustc-cdylib-link-arg=-fuse-ld=bfd");
        println!("cargo:rustc-cdylib-link-arg=-Wl,-z,noseparate-code");
        // Read-only data right after the headers, before the code (GNU ld's default puts it
        // after): the pages around the headers that the loader's first read maps in then hold
        // the strings and tables a connect reads, where otherwise two more windows of the file
        // got mapped in (about 100 KiB more of a connecting process's VmHWM, two page faults).
        let out = std::path::PathBuf::from(var("OUT_DIR"));
        let script = out.join("rodata-first.ld");
        let text = "SECTIONS\n{\n  .rodata : { *(.rodata .rodata.* .gnu.linkonce.r.*) }\n}\n\
                    INSERT BEFORE .text;\n";
        if std::fs::write(&script, text).is_ok() {
            println!("cargo:rustc-cdylib-link-arg=-Wl,-T,{}", script.display());
        }
    } else {
        println!("cargo:rustc-cdylib-link-arg=-Wl,-z,separate-loadable-segments");
    }
    let found = Command::new(&linker)
        .arg("-print-file-name=libgcc_eh.a")
        .output()
        .ok()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .filter(|p| p.starts_with('/') && std::path::Path::new(p).is_file());
    match found {
        // Before std's `-lgcc_s` on the link line: the archive resolves every `_Unwind_*`
        // reference, and `--as-needed` (rustc's default) then drops libgcc_s.so.1.
        Some(_) => println!("cargo:rustc-link-lib=static:-bundle=gcc_eh"),
        None => println!(
            "cargo:warning={linker} has no libgcc_eh.a: libchainsocks.so will need libgcc_s.so.1 \
             (a slower load in every process)"
        ),
    }
}
