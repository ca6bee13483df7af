//! The command line: clap's definition of every option, subcommand and COMMAND. Shared by
//! the launcher (main.rs parses with it) and build.rs (the man page and completions of the
//! Debian package are generated from it), so it depends on clap alone.
//! Must never: take an unknown option before COMMAND for the program's name (clap rejects it,
//! with its suggestion, exit 2), or an option after COMMAND for chainsocks'.

use std::ffi::OsString;
use std::path::PathBuf;

use clap::{Parser, Subcommand};

#[derive(Parser, Debug)]
#[command(
    name = "chainsocks",
    version,
    subcommand_value_name = "SUBCOMMAND",
    override_usage = "chainsocks [OPTIONS] [--] COMMAND [ARGS]...\n       chainsocks [OPTIONS] check --target HOST:PORT [--json] [--no-probe]\n       chainsocks [OPTIONS] config [show | convert FILE]\n       chainsocks policy learn REPORT... [--merge FILE] [--collapse N]",
    about = "Run a program with every TCP connection and UDP datagram sent through a chain of SOCKS4/4a/5 or HTTP proxies.",
    after_help = "Examples:\n  chainsocks -x socks5h://127.0.0.1:9050 curl https://example.com/\n  chainsocks -f chain.toml -- ssh host\n  chainsocks -f /etc/proxychains4.conf git fetch\n  chainsocks -f chain.toml check --target example.com:443\n\nConfig search order without -f/-x: $CHAINSOCKS_CONFIG, $PROXYCHAINS_CONF_FILE, ./chainsocks.toml,\n$XDG_CONFIG_HOME/chainsocks/config.toml (~/.config/…), /etc/chainsocks.toml, then proxychains'\n./proxychains.conf, ~/.proxychains/proxychains.conf, /etc/proxychains.conf, /etc/proxychains4.conf.\n$CHAINSOCKS_PROXY=\"URL,URL…\" works like -x."
)]
pub struct Cli {
    /// Configuration file: chainsocks TOML, or a proxychains.conf (read as-is).
    #[arg(short = 'f', long = "config", value_name = "FILE", global = true)]
    pub config: Option<PathBuf>,
    /// Proxy URL (repeatable, in chain order): socks4://, socks4a://, socks5://, socks5h://,
    /// http://, raw://, with optional user:pass@ and ?pipeline=1. Replaces the file's proxy list.
    #[arg(short = 'x', long = "proxy", value_name = "URL", global = true)]
    pub proxy: Vec<String>,
    /// Chain mode of the default chain: strict, dynamic, random, round_robin.
    #[arg(long, value_name = "MODE", global = true, ignore_case = true, value_parser = chain_modes())]
    pub chain_mode: Option<String>,
    /// Send this destination direct (CIDR[:port], IP[:port] or domain glob; repeatable).
    #[arg(long, value_name = "DEST", global = true)]
    pub direct: Vec<String>,
    /// Refuse this destination (CIDR[:port], IP[:port] or domain glob; repeatable).
    #[arg(long, value_name = "DEST", global = true)]
    pub block: Vec<String>,
    /// Allowlist mode: let this destination out (CIDR[:port], IP[:port] or domain glob;
    /// repeatable); every destination no entry names is refused (EACCES).
    #[arg(long, value_name = "DEST", global = true)]
    pub allow: Vec<String>,
    /// Allowlist mode with the `allow = [...]` of FILE (as `chainsocks policy learn` writes
    /// it; repeatable).
    #[arg(long, value_name = "FILE", global = true)]
    pub allowlist: Vec<PathBuf>,
    /// No per-connection log lines.
    #[arg(short, long, global = true)]
    pub quiet: bool,
    /// Refuse to run a program LD_PRELOAD cannot apply to (static, Go, setuid/setgid, file
    /// capabilities) instead of warning, and refuse to run without the seccomp supervisor
    /// when it is unavailable.
    #[arg(long)]
    pub strict_launch: bool,
    /// Do not start the seccomp supervisor (which proxies static binaries, Go programs and raw
    /// syscalls): LD_PRELOAD alone, no NO_NEW_PRIVS.
    #[arg(long)]
    pub no_supervisor: bool,
    /// Run the program in a network namespace where only the proxies are reachable (and the
    /// --allow-direct destinations); implies --deny-direct.
    #[arg(long)]
    pub isolate: bool,
    /// With --isolate: also forward this exact destination (repeatable). With an allowlist:
    /// allow it, direct.
    #[arg(long, value_name = "HOST:PORT")]
    pub allow_direct: Vec<String>,
    /// policy = "proxy-only": refuse direct connections and direct UDP to non-loopback
    /// addresses.
    #[arg(long)]
    pub deny_direct: bool,
    /// Append one JSON line per connection, lookup, block and UDP destination to FILE (every
    /// process).
    #[arg(long, value_name = "FILE")]
    pub report: Option<PathBuf>,
    /// At exit, print connection counts, top destinations and blocked attempts on stderr (and
    /// append a Markdown summary to $GITHUB_STEP_SUMMARY when it is set).
    #[arg(long)]
    pub summary: bool,
    /// Exit 3 when COMMAND exited 0 but a connection or datagram was blocked (COMMAND's own
    /// non-zero status is kept), after printing the blocked destinations.
    #[arg(long)]
    pub fail_on_block: bool,
    /// Print the path of the preload library (extracted to the per-user cache if needed) and
    /// exit: `LD_PRELOAD=$(chainsocks --print-lib-path) CHAINSOCKS_CONFIG=FILE program`.
    #[arg(long, exclusive = true)]
    pub print_lib_path: bool,
    /// Print the manual page (roff) and exit: `chainsocks --man-page | man -l -`.
    #[arg(long, exclusive = true)]
    pub man_page: bool,
    /// Print a completion script for SHELL and exit.
    #[arg(long, value_name = "SHELL", exclusive = true)]
    pub completions: Option<clap_complete::Shell>,
    #[command(subcommand)]
    pub sub: Option<Sub>,
    /// The program to run, and its arguments.
    // An option before COMMAND is chainsocks' (an unknown one is an error with clap's
    // suggestion); from COMMAND on, everything is the program's; `--` ends our options.
    #[arg(trailing_var_arg = true, value_name = "COMMAND")]
    pub command: Vec<OsString>,
}

#[derive(Subcommand, Debug)]
pub enum Sub {
    /// Dial every chain to a destination and report each hop: protocol, auth, timings,
    /// pipelining, the exact failure. Exit 0 only if every chain works.
    Check {
        /// Where the last proxy connects (HOST:PORT; a name is resolved by the proxy).
        #[arg(long, value_name = "HOST:PORT")]
        target: String,
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
        /// Skip the per-proxy pipelining probe.
        #[arg(long)]
        no_probe: bool,
    },
    /// Print the effective configuration (passwords hidden), or convert a proxychains.conf.
    Config {
        #[command(subcommand)]
        action: Option<ConfigCmd>,
    },
    /// The egress allowlist: learn one from --report files.
    Policy {
        #[command(subcommand)]
        action: PolicyCmd,
    },
}

#[derive(Subcommand, Debug)]
pub enum PolicyCmd {
    /// Print a commented TOML allowlist of the destinations in egress reports (--report FILE):
    /// one entry per destination with its count and the programs that used it.
    Learn {
        /// The JSON-lines reports to read.
        #[arg(required = true, value_name = "REPORT")]
        reports: Vec<PathBuf>,
        /// Merge with this allowlist file: its entries are kept, destinations it allows
        /// already are not added again.
        #[arg(long, value_name = "FILE")]
        merge: Option<PathBuf>,
        /// N or more subdomains of one registrable domain (same port) become `*.domain`.
        #[arg(long, value_name = "N", value_parser = clap::value_parser!(u16).range(2..))]
        collapse: Option<u16>,
    },
}

#[derive(Subcommand, Debug)]
pub enum ConfigCmd {
    /// Print the effective configuration as TOML (passwords hidden).
    Show,
    /// Print the chainsocks TOML equivalent of a proxychains.conf.
    Convert { file: PathBuf },
}

/// The chain modes `--chain-mode` accepts (any case, `-` for `_`).
fn chain_modes() -> clap::builder::PossibleValuesParser {
    use clap::builder::PossibleValue;
    clap::builder::PossibleValuesParser::new([
        PossibleValue::new("strict").help("every proxy in order; any failure fails"),
        PossibleValue::new("dynamic").help("the live proxies in order, dead ones skipped"),
        PossibleValue::new("random").help("chain_len live proxies in random order"),
        PossibleValue::new("round_robin")
            .alias("round-robin")
            .help("chain_len live proxies, starting after the last used"),
    ])
}
