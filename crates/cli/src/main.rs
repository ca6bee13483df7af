//! `chainsocks`: the launcher. Validates the configuration, then runs the program with
//! libchainsocks.so preloaded and the launch's shared state (config, fake-DNS table, proxy
//! health) in a memory file every process of the tree can open.
//!
//! Must never: run anything when the configuration is wrong (one message naming file, line and
//! column, exit 2), or be preloaded itself (it is a separate binary; the library is a cdylib).

mod check;
mod cli;
mod elfcheck;
mod embedded;
mod isolate;
mod launch;
mod manual;
mod summary;

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use chainsocks_core::config::{
    ChainMode, Config, ConfigError, Proxy, Rule, RuleAction, find_config,
};
use chainsocks_core::pxconf;
use chainsocks_core::rules::Pattern;
use clap::Parser;
use cli::{Cli, ConfigCmd, Sub};

fn main() -> ExitCode {
    let cli = Cli::parse();
    if cli.print_lib_path {
        return embedded::print_lib_path();
    }
    if cli.man_page || cli.completions.is_some() {
        use std::io::Write;
        let text = match cli.completions {
            Some(shell) => manual::completions(shell),
            None => manual::man_page(),
        };
        let _ = std::io::stdout().lock().write_all(&text);
        return ExitCode::SUCCESS;
    }
    if let Some(Sub::Config {
        action: Some(ConfigCmd::Convert { file }),
    }) = &cli.sub
    {
        return convert(file);
    }
    let cfg = match load(&cli) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("chainsocks: {e}");
            return ExitCode::from(2);
        }
    };
    match cli.sub {
        Some(Sub::Config { .. }) => {
            let mut shown = cfg.clone();
            let named = shown.chains.values_mut().flat_map(|c| c.proxies.iter_mut());
            for p in shown.proxies.iter_mut().chain(named) {
                if p.password.is_some() {
                    p.password = Some("***".into());
                }
            }
            print!("{}", shown.to_toml());
            ExitCode::SUCCESS
        }
        Some(Sub::Check {
            target,
            json,
            no_probe,
        }) => run_check(&cfg, &target, json, !no_probe),
        None => {
            if cli.command.is_empty() {
                eprintln!("chainsocks: no command given (see chainsocks --help)");
                return ExitCode::from(2);
            }
            if let Some(first) = cli.command.first()
                && let Some(path) = elfcheck::find_program(first)
                && let Some(why) = elfcheck::why_not_shimmable(&path)
            {
                let msg = format!(
                    "{} {why}: LD_PRELOAD will not apply: traffic from this program would go direct",
                    path.display()
                );
                if cli.isolate && !cli.strict_launch {
                    // Contained anyway: nothing but the proxies is reachable in the sandbox.
                } else if cli.strict_launch {
                    eprintln!("chainsocks: refusing to run (--strict-launch): {msg}");
                    return ExitCode::from(2);
                } else {
                    eprintln!("chainsocks: warning: {msg}");
                }
            }
            let mut cfg = cfg;
            let mut extras = launch::Extras::default();
            if cli.deny_direct {
                cfg.policy = chainsocks_core::config::Policy::ProxyOnly;
            }
            if !cli.allow_direct.is_empty() && !cli.isolate {
                eprintln!("chainsocks: --allow-direct needs --isolate");
                return ExitCode::from(2);
            }
            let mut temp_report = None;
            let report = match (&cli.report, cli.summary) {
                (Some(r), _) => Some(std::path::absolute(r).unwrap_or_else(|_| r.clone())),
                (None, true) => {
                    let p = std::env::temp_dir()
                        .join(format!("chainsocks-report-{}.jsonl", std::process::id()));
                    temp_report = Some(p.clone());
                    Some(p)
                }
                (None, false) => None,
            };
            if let Some(r) = &report {
                if let Err(e) = std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(r)
                {
                    eprintln!("chainsocks: --report {}: {e}", r.display());
                    return ExitCode::from(2);
                }
                cfg.report_file = Some(r.clone());
                if cli.summary {
                    extras.summary = Some(r.clone());
                }
            }
            if cli.isolate {
                match isolate::plan(&mut cfg, &cli.allow_direct) {
                    Ok(p) => extras.sandbox = Some(p),
                    Err(e) => {
                        eprintln!("chainsocks: --isolate: {e}");
                        return ExitCode::from(2);
                    }
                }
            }
            let code = launch::run(&cfg, &cli.command, extras);
            if let Some(t) = temp_report {
                let _ = std::fs::remove_file(t);
            }
            code
        }
    }
}

fn run_check(cfg: &Config, target: &str, json: bool, probe: bool) -> ExitCode {
    let target = match check::parse_target(target) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("chainsocks: {e}");
            return ExitCode::from(2);
        }
    };
    let reports: Vec<check::ChainReport> = cfg
        .chain_views()
        .iter()
        .filter(|v| !v.proxies.is_empty())
        .map(|v| check::check_chain(cfg, v, &target, probe))
        .collect();
    if json {
        match serde_json::to_string_pretty(&reports) {
            Ok(s) => println!("{s}"),
            Err(e) => eprintln!("chainsocks: {e}"),
        }
    } else {
        check::print_human(&reports, &target);
    }
    if reports.iter().all(|r| r.ok) {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
}

fn convert(file: &Path) -> ExitCode {
    let text = match std::fs::read_to_string(file) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("chainsocks: {}: cannot read: {e}", file.display());
            return ExitCode::from(2);
        }
    };
    match pxconf::parse(&text) {
        Ok(p) => {
            print!("{}", pxconf::to_toml(&p, &file.display().to_string()));
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("chainsocks: {}", e.in_file(file));
            ExitCode::from(2)
        }
    }
}

/// Reads a config file: chainsocks TOML, or proxychains.conf when it looks like one.
///
/// `named`: the user chose this file (-f, $CHAINSOCKS_CONFIG, $PROXYCHAINS_CONF_FILE). In a
/// file the search found (a system proxychains.conf), proxychains' own `remote_dns_subnet`
/// default is not the user's choice: its warning is a note shown at debug level only.
fn read_file(path: &Path, named: bool) -> Result<Config, ConfigError> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| ConfigError::new(format!("cannot read: {e}")).in_file(path))?;
    let cfg = if pxconf::looks_like_proxychains(&text) {
        let p = pxconf::parse(&text).map_err(|e| e.in_file(path))?;
        let debug = std::env::var("CHAINSOCKS_LOG")
            .ok()
            .and_then(|v| chainsocks_core::config::LogLevel::parse(&v))
            == Some(chainsocks_core::config::LogLevel::Debug);
        for w in &p.warnings {
            let subnet = w.contains(": remote_dns_subnet ");
            if named || !subnet {
                eprintln!("chainsocks: {}: warning: {w}", path.display());
            } else if debug {
                eprintln!("chainsocks: {}: note: {w}", path.display());
            }
        }
        p.config
    } else {
        Config::from_toml(&text).map_err(|e| e.in_file(path))?
    };
    warn_if_world_readable(path, &cfg);
    Ok(cfg)
}

fn warn_if_world_readable(path: &Path, cfg: &Config) {
    use std::os::unix::fs::PermissionsExt;
    let has_password = cfg
        .proxies
        .iter()
        .chain(cfg.chains.values().flat_map(|c| c.proxies.iter()))
        .any(|p| p.password.is_some());
    let world = std::fs::metadata(path).is_ok_and(|m| m.permissions().mode() & 0o004 != 0);
    if has_password && world {
        eprintln!(
            "chainsocks: {}: warning: the file holds a password and is readable by every user (chmod 600 it)",
            path.display()
        );
    }
}

/// Where a config is looked for when none is given: chainsocks' own places, then
/// proxychains'.
fn search() -> Option<PathBuf> {
    let env = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
    if let Some(p) = env("CHAINSOCKS_CONFIG") {
        return Some(PathBuf::from(p));
    }
    if let Some(p) = env("PROXYCHAINS_CONF_FILE") {
        return Some(PathBuf::from(p));
    }
    find_config(env, |p| p.exists()).or_else(|| {
        let mut c = vec![PathBuf::from("proxychains.conf")];
        if let Some(h) = env("HOME") {
            c.push(Path::new(&h).join(".proxychains/proxychains.conf"));
        }
        c.push("/etc/proxychains.conf".into());
        c.push("/etc/proxychains4.conf".into());
        c.into_iter().find(|p| p.exists())
    })
}

/// The effective configuration: the file (or the search order), `-x` / `$CHAINSOCKS_PROXY`
/// proxies, the rule and mode flags, `-q`; validated, with proxy host names resolved once,
/// here.
fn load(cli: &Cli) -> Result<Config, ConfigError> {
    let env_proxies: Vec<String> = std::env::var("CHAINSOCKS_PROXY")
        .ok()
        .map(|v| {
            v.split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(String::from)
                .collect()
        })
        .unwrap_or_default();
    let (urls, from) = if !cli.proxy.is_empty() {
        (cli.proxy.clone(), "-x")
    } else {
        (env_proxies, "CHAINSOCKS_PROXY")
    };
    let path = cli
        .config
        .clone()
        .or_else(|| if urls.is_empty() { search() } else { None });
    let named = cli.config.is_some()
        || ["CHAINSOCKS_CONFIG", "PROXYCHAINS_CONF_FILE"]
            .iter()
            .any(|k| std::env::var_os(k).is_some_and(|v| !v.is_empty()));
    let mut cfg = match &path {
        Some(p) => match read_file(p, named) {
            Ok(c) => c,
            // A file whose only problem is "no proxy" is fine when -x gives them.
            Err(e) if !urls.is_empty() && e.msg.starts_with("no proxy") => {
                let text = std::fs::read_to_string(p).unwrap_or_default();
                toml::from_str::<Config>(&text).map_err(|_| e)?
            }
            Err(e) => return Err(e),
        },
        None if urls.is_empty() => {
            return Err(ConfigError::new(
                "no configuration found: give -f FILE or -x URL, set CHAINSOCKS_PROXY, or create \
                 ./chainsocks.toml or ~/.config/chainsocks/config.toml (see chainsocks --help)",
            ));
        }
        None => Config::default(),
    };
    if !urls.is_empty() {
        cfg.proxies = urls
            .iter()
            .map(|u| Proxy::from_url(u).map_err(|e| ConfigError::new(format!("{from}: {e}"))))
            .collect::<Result<_, _>>()?;
    }
    if let Some(m) = cli.chain_mode.as_deref().and_then(ChainMode::parse) {
        cfg.chain = m;
    }
    // Flag rules go first: blocks, then directs, in the order given.
    let mut flag_rules = Vec::new();
    for (list, action, flag) in [
        (&cli.block, RuleAction::Block, "--block"),
        (&cli.direct, RuleAction::Direct, "--direct"),
    ] {
        for d in list {
            let dest = Pattern::parse(d).map_err(|e| ConfigError::new(format!("{flag}: {e}")))?;
            flag_rules.push(Rule {
                dest,
                action: Some(action),
                chain: None,
            });
        }
    }
    flag_rules.append(&mut cfg.rules);
    cfg.rules = flag_rules;
    if cli.quiet {
        cfg.quiet = true;
    }
    let in_file = |e: ConfigError| match &path {
        Some(p) if urls.is_empty() => e.in_file(p),
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
