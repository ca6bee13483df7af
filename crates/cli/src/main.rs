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
mod ghsummary;
mod isolate;
mod launch;
mod manual;
mod policy;
mod private;
mod records;
mod scrub;
mod summary;
mod supervisor;
mod udphub;

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use chainsocks_core::config::{
    ChainMode, Config, ConfigError, Proxy, Rule, RuleAction, find_config,
};
use chainsocks_core::pxconf;
use chainsocks_core::rules::Pattern;
use clap::Parser;
use cli::{Cli, ConfigCmd, PolicyCmd, Sub};

fn main() -> ExitCode {
    let cli = Cli::parse();
    // clap has its copies: from now on, other users' `ps` sees no -x password.
    scrub::scrub_argv(&cli.proxy);
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
    if let Some(Sub::Policy {
        action:
            PolicyCmd::Learn {
                reports,
                merge,
                collapse,
            },
    }) = &cli.sub
    {
        return policy::learn(&policy::Learn {
            reports,
            merge: merge.as_deref(),
            collapse: collapse.map(usize::from),
        });
    }
    let cfg = match load(&cli) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("chainsocks: {}", e.redacted(None));
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
        Some(Sub::Policy { .. }) => ExitCode::SUCCESS,
        None => {
            if cli.command.is_empty() {
                eprintln!("chainsocks: no command given (see chainsocks --help)");
                return ExitCode::from(2);
            }
            let supervision = match launch::preflight(
                cli.command.first().map(|c| c.as_os_str()),
                cli.isolate,
                cli.strict_launch,
                !cli.no_supervisor,
            ) {
                Ok(s) => s,
                Err(msg) => {
                    eprintln!("chainsocks: {msg}");
                    return ExitCode::from(2);
                }
            };
            let mut cfg = cfg;
            let mut extras = launch::Extras {
                supervisor: supervision,
                ..Default::default()
            };
            if cli.deny_direct {
                cfg.policy = chainsocks_core::config::Policy::ProxyOnly;
            }
            // Allowlist entries marked direct: forwarders under --isolate, entries without.
            let direct = match cli.isolate {
                true => {
                    policy::isolate_direct(&cfg).map(|d| [cli.allow_direct.clone(), d].concat())
                }
                false if cli.allow_direct.is_empty() => Ok(Vec::new()),
                false => policy::allow_direct(&mut cfg, &cli.allow_direct).map(|()| Vec::new()),
            };
            let direct = match direct {
                Ok(d) => d,
                Err(e) => {
                    eprintln!("chainsocks: {e}");
                    return ExitCode::from(2);
                }
            };
            if cli.isolate {
                match isolate::plan(&mut cfg, &direct) {
                    Ok(p) => extras.sandbox = Some(p),
                    Err(e) => {
                        eprintln!("chainsocks: --isolate: {e}");
                        return ExitCode::from(2);
                    }
                }
            }
            // Records go to the user's --report FILE, or for --summary alone to a private
            // temporary (see private.rs), which `extras` owns and removes on every way out.
            let report = match (&cli.report, cli.summary || cli.fail_on_block) {
                (Some(r), _) => private::user_report(r).map(Some),
                (None, true) => {
                    private::TempReport::create(extras.sandbox.as_ref().map(|p| &p.dir)).map(|t| {
                        let path = t.path.clone();
                        extras.temp_report = Some(t);
                        Some(path)
                    })
                }
                (None, false) => Ok(None),
            };
            match report {
                Ok(None) => {}
                Ok(Some(r)) => {
                    if cli.summary {
                        extras.summary = Some(r.clone());
                    }
                    if cli.fail_on_block {
                        extras.fail_on_block = Some(r.clone());
                    }
                    cfg.report_file = Some(r);
                }
                Err(e) => {
                    eprintln!("chainsocks: {e}");
                    return ExitCode::from(2);
                }
            }
            launch::run(&cfg, &cli.command, extras)
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
    policy::apply(&mut cfg, &cli.allow, &cli.allowlist)?;
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
        Ok((host, port)
            .to_socket_addrs()
            .map_err(|e| e.to_string())?
            .map(|sa| sa.ip())
            .collect())
    })
    .map_err(in_file)?;
    Ok(cfg)
}
