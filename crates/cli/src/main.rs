//! `chainsocks`: the launcher. Validates the configuration, then runs the program with
//! libchainsocks.so preloaded and the launch's shared state (config, later the fake-DNS table)
//! in a memory file every process of the tree can open.
//!
//! Must never: run anything when the configuration is wrong (one message naming file, line and
//! column, exit 2), or be preloaded itself (it is a separate binary; the library is a cdylib).

mod launch;

use std::ffi::OsString;
use std::path::PathBuf;
use std::process::ExitCode;

use chainsocks_core::config::{Config, ConfigError, Proxy, find_config};
use clap::{Parser, Subcommand};

#[derive(Parser, Debug)]
#[command(
    name = "chainsocks",
    version,
    about = "Run a program with every TCP connection sent through a chain of SOCKS4/4a/5 or HTTP proxies.",
    after_help = "Examples:\n  chainsocks -x socks5h://127.0.0.1:9050 curl https://example.com/\n  chainsocks -f chain.toml -- ssh host\n\nConfig search order without -f/-x: $CHAINSOCKS_CONFIG, ./chainsocks.toml,\n$XDG_CONFIG_HOME/chainsocks/config.toml (~/.config/…), /etc/chainsocks.toml."
)]
struct Cli {
    /// Configuration file (TOML).
    #[arg(short = 'f', long = "config", value_name = "FILE", global = true)]
    config: Option<PathBuf>,
    /// Proxy URL (repeatable, in chain order): socks4://, socks4a://, socks5://, socks5h://,
    /// http://, with optional user:pass@. Replaces the file's proxy list.
    #[arg(short = 'x', long = "proxy", value_name = "URL", global = true)]
    proxy: Vec<String>,
    /// No per-connection log lines.
    #[arg(short, long, global = true)]
    quiet: bool,
    #[command(subcommand)]
    sub: Option<Sub>,
    /// The program to run, and its arguments.
    #[arg(
        trailing_var_arg = true,
        allow_hyphen_values = true,
        value_name = "COMMAND"
    )]
    command: Vec<OsString>,
}

#[derive(Subcommand, Debug)]
enum Sub {
    /// Print the effective configuration (normalized TOML, passwords hidden) and exit.
    Config,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let cfg = match load(&cli) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("chainsocks: {e}");
            return ExitCode::from(2);
        }
    };
    match cli.sub {
        Some(Sub::Config) => {
            let mut shown = cfg.clone();
            for p in &mut shown.proxies {
                if p.password.is_some() {
                    p.password = Some("***".into());
                }
            }
            print!("{}", shown.to_toml());
            ExitCode::SUCCESS
        }
        None => {
            if cli.command.is_empty() {
                eprintln!("chainsocks: no command given (see chainsocks --help)");
                return ExitCode::from(2);
            }
            launch::run(&cfg, &cli.command)
        }
    }
}

/// The effective configuration: the file (or the search order), `-x` proxies, `-q`; validated,
/// with proxy host names resolved once, here.
fn load(cli: &Cli) -> Result<Config, ConfigError> {
    let path = cli.config.clone().or_else(|| {
        if cli.proxy.is_empty() {
            find_config(|k| std::env::var(k).ok(), |p| p.exists())
        } else {
            None
        }
    });
    let mut cfg = match &path {
        Some(p) => match Config::from_file(p) {
            Ok(c) => c,
            // A file whose only problem is "no proxy" is fine when -x gives them.
            Err(e) if !cli.proxy.is_empty() && e.msg.starts_with("no proxy") => {
                let text = std::fs::read_to_string(p).unwrap_or_default();
                toml::from_str::<Config>(&text).map_err(|_| e)?
            }
            Err(e) => return Err(e),
        },
        None if cli.proxy.is_empty() => {
            return Err(ConfigError::new(
                "no configuration found: give -f FILE or -x URL, or create ./chainsocks.toml \
                 or ~/.config/chainsocks/config.toml (see chainsocks --help)",
            ));
        }
        None => Config::default(),
    };
    if !cli.proxy.is_empty() {
        cfg.proxies = cli
            .proxy
            .iter()
            .map(|u| Proxy::from_url(u).map_err(|e| ConfigError::new(format!("-x: {e}"))))
            .collect::<Result<_, _>>()?;
    }
    if cli.quiet {
        cfg.quiet = true;
    }
    let in_file = |e: ConfigError| match &path {
        Some(p) if cli.proxy.is_empty() => e.in_file(p),
        _ => e,
    };
    cfg.validate().map_err(in_file)?;
    cfg.resolve_proxies(|host, port| {
        use std::net::ToSocketAddrs;
        (host, port)
            .to_socket_addrs()
            .map_err(|e| e.to_string())?
            .next()
            .map(|sa| sa.ip())
            .ok_or_else(|| "no address".to_string())
    })
    .map_err(in_file)?;
    Ok(cfg)
}
