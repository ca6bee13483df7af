//! Credentials out of what other users can read about the launcher: the passwords of `-x`
//! URLs are overwritten in the process's own argv memory once parsed (as curl does for its
//! `-x`/`-u`), so `/proc/<pid>/cmdline` and `ps` show `*` in their place for the whole run.
//! (The program never sees `$CHAINSOCKS_PROXY`: launch.rs leaves it out of its environment.)
//!
//! How: glibc calls every `.init_array` function with (argc, argv, envp) before `main`; ours
//! keeps argv, the very strings the kernel shows as the command line.
//! Must never: change an argument's length or any byte outside a password (the command line
//! keeps its shape), or touch argv before clap has copied it.

use std::sync::atomic::{AtomicPtr, AtomicUsize, Ordering};

use chainsocks_core::config::url_password_span;

static ARGC: AtomicUsize = AtomicUsize::new(0);
static ARGV: AtomicPtr<*mut libc::c_char> = AtomicPtr::new(std::ptr::null_mut());

extern "C" fn keep_argv(
    argc: libc::c_int,
    argv: *mut *mut libc::c_char,
    _envp: *mut *mut libc::c_char,
) {
    ARGC.store(usize::try_from(argc).unwrap_or(0), Ordering::Relaxed);
    ARGV.store(argv, Ordering::Relaxed);
}

#[used]
#[unsafe(link_section = ".init_array")]
static KEEP_ARGV: extern "C" fn(libc::c_int, *mut *mut libc::c_char, *mut *mut libc::c_char) =
    keep_argv;

/// Overwrites, in the process's argv, the password of every argument that carries one of the
/// `-x` URLs in `proxies` (`-x URL`, `--proxy URL`, `--proxy=URL`, `-xURL`, `-qxURL`).
/// Returns how many arguments were changed.
pub fn scrub_argv(proxies: &[String]) -> usize {
    let argc = ARGC.load(Ordering::Relaxed);
    let argv = ARGV.load(Ordering::Relaxed);
    if argv.is_null() {
        return 0;
    }
    let mut changed = 0;
    for i in 1..argc {
        // SAFETY: argv has argc valid entries (the kernel built it); each is a NUL-terminated
        // string in our own writable memory, and we change bytes only within its length.
        let arg = unsafe {
            let p = *argv.add(i);
            if p.is_null() {
                break;
            }
            std::slice::from_raw_parts_mut(p.cast::<u8>(), libc::strlen(p))
        };
        if scrub_arg(arg, proxies) {
            changed += 1;
        }
    }
    changed
}

/// Overwrites with `*` the password in `arg` if `arg` is one of `proxies` as an option value.
fn scrub_arg(arg: &mut [u8], proxies: &[String]) -> bool {
    for url in proxies {
        let url = url.as_bytes();
        let Some(prefix) = arg.len().checked_sub(url.len()) else {
            continue;
        };
        if !arg.ends_with(url) || !is_option_prefix(&arg[..prefix]) {
            continue;
        }
        if let Some(r) = url_password_span(url) {
            arg[prefix + r.start..prefix + r.end].fill(b'*');
            return true;
        }
    }
    false
}

/// What may precede a `-x` value in the same argument: nothing, `--proxy=`, or a cluster of
/// short flags ending in `x`.
fn is_option_prefix(p: &[u8]) -> bool {
    p.is_empty()
        || p == b"--proxy="
        || (p.len() >= 2
            && p[0] == b'-'
            && p[1] != b'-'
            && p.ends_with(b"x")
            && p[1..].iter().all(u8::is_ascii_alphabetic))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_passwords_of_proxy_values() {
        let proxies = vec![
            "socks5://u:hunter2@127.0.0.1:1080".to_string(),
            "http://v:p@ss@h:8080".to_string(),
        ];
        let cases = [
            (
                "socks5://u:hunter2@127.0.0.1:1080",
                "socks5://u:*******@127.0.0.1:1080",
            ),
            (
                "--proxy=socks5://u:hunter2@127.0.0.1:1080",
                "--proxy=socks5://u:*******@127.0.0.1:1080",
            ),
            (
                "-xsocks5://u:hunter2@127.0.0.1:1080",
                "-xsocks5://u:*******@127.0.0.1:1080",
            ),
            ("-qxhttp://v:p@ss@h:8080", "-qxhttp://v:****@h:8080"),
            // Not a proxy value: left alone.
            (
                "--report=socks5://u:hunter2@127.0.0.1:1080",
                "--report=socks5://u:hunter2@127.0.0.1:1080",
            ),
            (
                "socks5://u:other@127.0.0.1:1080",
                "socks5://u:other@127.0.0.1:1080",
            ),
            ("curl", "curl"),
        ];
        for (before, after) in cases {
            let mut a = before.as_bytes().to_vec();
            assert_eq!(scrub_arg(&mut a, &proxies), before != after, "{before}");
            assert_eq!(String::from_utf8(a).unwrap(), after);
        }
    }

    #[test]
    fn argv_was_kept() {
        // The test binary's own argv: found, and an argument that is not a proxy is kept.
        assert!(!ARGV.load(Ordering::Relaxed).is_null());
        assert!(ARGC.load(Ordering::Relaxed) >= 1);
        assert_eq!(scrub_argv(&["socks5://u:p@h:1".into()]), 0);
    }
}
