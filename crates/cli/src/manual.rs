//! The manual page and the shell completion scripts, generated from the clap definition in
//! cli.rs plus the reference tables below (configuration keys, environment variables, files).
//! Used by `--man-page` / `--completions` at run time and by build.rs for the Debian package,
//! so it depends on clap, clap_mangen and clap_complete alone.
//! Must never: document a key or variable the code does not have (a test compares the key
//! table with README.md's configuration reference).

use clap::CommandFactory;
use clap_mangen::roff::{Roff, bold, italic, roman};

/// The configuration file's keys: (key, default, meaning), in README.md's order.
pub const CONFIG_KEYS: &[(&str, &str, &str)] = &[
    (
        "proxy",
        "(required)",
        "the default chain, in order: URLs and/or [[proxy]] tables",
    ),
    (
        "chain",
        "\"strict\"",
        "strict: every proxy in order, any failure fails; dynamic: the live proxies in order, \
         dead ones skipped; random: chain_len live proxies in random order; round_robin: \
         chain_len live proxies, starting after the last used",
    ),
    (
        "chain_len",
        "1",
        "proxies per connection for random / round_robin",
    ),
    (
        "dead_retry_ms",
        "30000",
        "how long a proxy found dead is skipped (shared by every process of the launch)",
    ),
    (
        "connect_timeout_ms",
        "10000",
        "each TCP connect to the first proxy, and each hop's answer to its CONNECT",
    ),
    (
        "handshake_timeout_ms",
        "30000",
        "one deadline for the whole chain handshake, all attempts",
    ),
    (
        "nonblocking_timeout_ms",
        "handshake_timeout_ms",
        "the handshake deadline for a non-blocking socket (its connect blocks the calling \
         thread for the handshake)",
    ),
    (
        "proxy_dns",
        "true",
        "names are resolved by the last proxy: programs get fake addresses",
    ),
    (
        "fake_ip_range",
        "\"198.18.0.0/15\"",
        "fake IPv4 addresses (never multicast, loopback, or smaller than a /24)",
    ),
    (
        "fake_ip6_range",
        "\"fd63:6873:6f63:6b73::/64\"",
        "fake IPv6 addresses, for AF_INET6 lookups",
    ),
    (
        "socks4_resolve",
        "\"remote\"",
        "a name to a plain socks4:// last hop: remote fails (EHOSTUNREACH, use socks4a); \
         local resolves it here",
    ),
    (
        "localnet",
        "[]",
        "destinations that always go direct: \"10.0.0.0/8\", \"127.0.0.0/8:8080\", \
         \"[::1]/128:22\"",
    ),
    (
        "allow",
        "none",
        "the egress allowlist: destination patterns, or { dest = \"HOST:PORT\", direct = true }; \
         when set, everything it does not name is refused",
    ),
    (
        "udp_proxy",
        "none",
        "the SOCKS5 proxy that carries UDP for chains that cannot (more than one hop, or a \
         last hop that is not SOCKS5)",
    ),
    (
        "[[dnat]]",
        "none",
        "from = \"1.2.3.4[:port]\", to = \"5.6.7.8[:port]\": rewrite a destination before \
         anything else",
    ),
    (
        "[chains.NAME]",
        "none",
        "a named chain: proxy, chain, chain_len as above",
    ),
    (
        "[[rule]]",
        "none",
        "dest plus action = \"direct\" | \"block\" | \"proxy\" or chain = \"NAME\"; first \
         match wins, no match: the default chain",
    ),
    (
        "block_errno",
        "\"EACCES\"",
        "what a blocked connect reports: EACCES or ECONNREFUSED",
    ),
    ("quiet", "false", "no per-connection log lines"),
    ("log", "\"info\"", "off, error, warn, info, debug"),
    ("log_file", "(stderr)", "append log lines to this file"),
];

/// Environment variables: (name, meaning).
pub const ENVIRONMENT: &[(&str, &str)] = &[
    (
        "CHAINSOCKS_PROXY",
        "comma-separated proxy URLs, used like -x when no -x is given",
    ),
    (
        "CHAINSOCKS_CONFIG",
        "the configuration file when no -f is given; also read by the library when it is \
         preloaded without the launcher",
    ),
    (
        "PROXYCHAINS_CONF_FILE",
        "a proxychains.conf, when neither -f nor CHAINSOCKS_CONFIG is given",
    ),
    (
        "CHAINSOCKS_LOG",
        "off, error, warn, info (default), debug: the library's log level, in every process",
    ),
    (
        "CHAINSOCKS_LOG_FILE",
        "append the library's log lines to this file instead of the program's stderr",
    ),
    (
        "CHAINSOCKS_LIB",
        "use this libchainsocks.so instead of the embedded one",
    ),
    (
        "XDG_RUNTIME_DIR, XDG_CACHE_HOME, HOME",
        "where the embedded library is extracted: $XDG_RUNTIME_DIR/chainsocks/, else \
         $XDG_CACHE_HOME/chainsocks/, else ~/.cache/chainsocks/",
    ),
    (
        "XDG_CONFIG_HOME",
        "the per-user configuration is $XDG_CONFIG_HOME/chainsocks/config.toml \
         (default ~/.config/chainsocks/config.toml)",
    ),
    (
        "LD_PRELOAD",
        "kept: the library is put first, the entries already there follow",
    ),
];

/// Where the configuration is looked for without -f / -x, in order.
pub const CONFIG_SEARCH: &[&str] = &[
    "$CHAINSOCKS_CONFIG",
    "$PROXYCHAINS_CONF_FILE",
    "./chainsocks.toml",
    "$XDG_CONFIG_HOME/chainsocks/config.toml (default ~/.config/chainsocks/config.toml)",
    "/etc/chainsocks.toml",
    "./proxychains.conf",
    "~/.proxychains/proxychains.conf",
    "/etc/proxychains.conf",
    "/etc/proxychains4.conf",
];

/// The whole manual page, roff.
pub fn man_page() -> Vec<u8> {
    let cmd = crate::cli::Cli::command().long_about(
        "chainsocks runs COMMAND with libchainsocks.so preloaded, so that every TCP \
         connection it (and every process it starts) makes goes through a chain of proxies: \
         SOCKS4, SOCKS4a, SOCKS5 (with user/password) or HTTP CONNECT, and every UDP datagram \
         through a SOCKS5 UDP association. Programs the library cannot see (Go, static \
         binaries, raw syscalls) are covered by a seccomp supervisor in the launcher \
         (--no-supervisor turns it off). Host names are \
         resolved by the last proxy (remote DNS through fake addresses). An error never falls \
         back to a direct connection. A proxychains.conf is read as it is. \
         The library is embedded in the chainsocks binary and extracted, verified, to a \
         per-user cache before the first run; chainsocks proves it can be loaded before it \
         runs COMMAND, and refuses (exit 2) where it cannot.",
    );
    // The synopsis is the usage lines of `--help` (clap_mangen's would list every flag).
    let mut synopsis = Roff::new();
    synopsis.control("SH", ["SYNOPSIS"]);
    synopsis.control("nf", []);
    let usage = cmd
        .get_overridden_usage()
        .map(|u| u.to_string())
        .unwrap_or_default();
    for line in usage.lines() {
        let line = line.trim().strip_prefix("chainsocks").unwrap_or(line);
        synopsis.text([bold("chainsocks"), roman(line)]);
    }
    synopsis.control("fi", []);
    let man = clap_mangen::Man::new(cmd);
    let mut out = Vec::new();
    // Writing into a Vec cannot fail.
    let _ = man.render_title(&mut out);
    let _ = man.render_name_section(&mut out);
    let _ = synopsis.to_writer(&mut out);
    let _ = man.render_description_section(&mut out);
    let _ = man.render_options_section(&mut out);
    let _ = extra_sections().to_writer(&mut out);
    let _ = man.render_version_section(&mut out);
    out
}

/// Lines of text as an indented, unfilled block.
fn block(r: &mut Roff, lines: &[&str]) {
    r.control("PP", []);
    r.control("RS", ["4"]);
    r.control("nf", []);
    for l in lines {
        r.text([roman(*l)]);
    }
    r.control("fi", []);
    r.control("RE", []);
}

/// How an argument is written in a usage line.
fn arg_usage(a: &clap::Arg) -> String {
    let values: Vec<String> = a
        .get_value_names()
        .unwrap_or_default()
        .iter()
        .map(|v| format!("<{v}>"))
        .collect();
    let flag = match (a.get_long(), a.get_short()) {
        (Some(l), _) => format!("--{l}"),
        (None, Some(s)) => format!("-{s}"),
        (None, None) => return values.join(" "),
    };
    let text = if a.get_action().takes_values() {
        format!("{flag} {}", values.join(" "))
    } else {
        flag
    };
    if a.is_required_set() {
        text
    } else {
        format!("[{text}]")
    }
}

/// Every subcommand (recursively), with its arguments, under one section.
fn subcommands(r: &mut Roff, cmd: &clap::Command, prefix: &str) {
    for sub in cmd.get_subcommands().filter(|s| s.get_name() != "help") {
        let name = format!("{prefix} {}", sub.get_name());
        let args: Vec<&clap::Arg> = sub
            .get_arguments()
            .filter(|a| !a.is_hide_set() && a.get_id() != "help")
            .collect();
        let usage: Vec<String> = args.iter().map(|a| arg_usage(a)).collect();
        r.control("TP", []);
        r.text([bold(name.clone()), roman(format!(" {}", usage.join(" ")))]);
        r.text([roman(
            sub.get_about().map(|s| s.to_string()).unwrap_or_default(),
        )]);
        for a in args.iter().filter(|a| a.get_help().is_some()) {
            r.control("RS", ["4"]);
            r.control("TP", []);
            r.text([bold(arg_usage(a).trim_matches(['[', ']']).to_string())]);
            r.text([roman(
                a.get_help().map(|s| s.to_string()).unwrap_or_default(),
            )]);
            r.control("RE", []);
        }
        subcommands(r, sub, &name);
    }
}

fn extra_sections() -> Roff {
    let mut r = Roff::new();
    r.control("SH", ["SUBCOMMANDS"]);
    r.text([roman(
        "The options above (-f, -x, --chain-mode, --direct, --block, -q) apply to these too.",
    )]);
    subcommands(&mut r, &crate::cli::Cli::command(), "chainsocks");
    r.control("SH", ["CONFIGURATION"]);
    r.text([
        roman(
            "A TOML file (unknown keys are errors, reported with file, line and column), or a \
               proxychains.conf, recognized by its ",
        ),
        bold("[ProxyList]"),
        roman(" line or its directives. A commented example is in "),
        italic("/usr/share/doc/chainsocks/examples/chainsocks.toml"),
        roman(". Keys:"),
    ]);
    for (key, default, meaning) in CONFIG_KEYS {
        r.control("TP", []);
        let default = if default.starts_with('(') {
            format!(" {default}")
        } else {
            format!(" (default {default})")
        };
        r.text([bold(*key), roman(default)]);
        r.text([roman(*meaning)]);
    }
    r.control("PP", []);
    r.text([roman(
        "A proxy URL is scheme://[user[:password]@]host[:port][?pipeline=1], schemes socks4, \
         socks4a, socks5, socks5h, http, raw. Order of decisions for every connection: dnat, \
         localnet (direct), the rules in order, the default chain.",
    )]);
    r.control("SH", ["ENVIRONMENT"]);
    for (name, meaning) in ENVIRONMENT {
        r.control("TP", []);
        r.text([bold(*name)]);
        r.text([roman(*meaning)]);
    }
    r.control("SH", ["FILES"]);
    r.text([roman(
        "Without -f or -x, the first of these that exists is the configuration:",
    )]);
    block(&mut r, CONFIG_SEARCH);
    r.control("PP", []);
    r.text([
        roman("The embedded library is extracted as "),
        italic("libchainsocks-HASH.so"),
        roman(" (mode 0500, in a directory of mode 0700 owned by the user) to "),
        italic("$XDG_RUNTIME_DIR/chainsocks/"),
        roman(", else "),
        italic("$XDG_CACHE_HOME/chainsocks/"),
        roman(", else "),
        italic("~/.cache/chainsocks/"),
        roman(
            "; a location that is mounted noexec or not the user's is skipped. A \
             libchainsocks.so next to the binary, or in ../lib/chainsocks/, is used instead.",
        ),
    ]);
    r.control("SH", ["EXIT STATUS"]);
    r.text([roman(
        "COMMAND's exit status (chainsocks dies of the same signal if COMMAND was killed); 2 \
         for a usage or configuration error, or when the library cannot be loaded (nothing is \
         run then); 126 or 127 when COMMAND cannot be run or is not found.",
    )]);
    r.control("SH", ["EXAMPLES"]);
    block(
        &mut r,
        &[
            "chainsocks -x socks5h://127.0.0.1:9050 curl https://example.com/",
            "chainsocks -f chain.toml -- git fetch",
            "chainsocks -f /etc/proxychains4.conf ssh host",
            "chainsocks -f chain.toml check --target example.com:443",
            "LD_PRELOAD=$(chainsocks --print-lib-path) CHAINSOCKS_CONFIG=chain.toml curl URL",
        ],
    );
    r.control("SH", ["SEE ALSO"]);
    r.text([
        bold("proxychains4"),
        roman("(1), "),
        bold("ld.so"),
        roman("(8)"),
    ]);
    r
}

/// The completion script for `shell`.
pub fn completions(shell: clap_complete::Shell) -> Vec<u8> {
    let mut cmd = crate::cli::Cli::command();
    let mut out = Vec::new();
    clap_complete::generate(shell, &mut cmd, "chainsocks", &mut out);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The man page's key table and README.md's configuration reference list the same keys.
    #[test]
    fn config_keys_match_the_readme() {
        let here = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
        let Some(readme) = [here.join("../../README.md"), here.join("README.md")]
            .into_iter()
            .find_map(|p| std::fs::read_to_string(p).ok())
        else {
            return;
        };
        let section = readme
            .split("## Configuration reference")
            .nth(1)
            .and_then(|s| s.split("\n\n").nth(2))
            .unwrap();
        let readme_keys: Vec<&str> = section
            .lines()
            .filter_map(|l| l.strip_prefix("| `"))
            .filter_map(|l| l.split('`').next())
            .collect();
        let ours: Vec<&str> = CONFIG_KEYS.iter().map(|(k, _, _)| *k).collect();
        assert_eq!(ours, readme_keys);
    }

    #[test]
    fn man_page_and_completions_are_generated() {
        let page = String::from_utf8(man_page()).unwrap();
        assert!(
            page.starts_with(".ie") || page.contains(".TH chainsocks 1"),
            "{page}"
        );
        for s in [
            "CONFIGURATION",
            "ENVIRONMENT",
            "FILES",
            "EXIT STATUS",
            "print\\-lib\\-path",
        ] {
            assert!(page.contains(s), "{s}");
        }
        for shell in [
            clap_complete::Shell::Bash,
            clap_complete::Shell::Zsh,
            clap_complete::Shell::Fish,
        ] {
            let script = String::from_utf8(completions(shell)).unwrap();
            assert!(script.contains("print-lib-path"), "{shell:?}");
        }
    }
}
