//! The egress report: one JSON line per event (connect, lookup, block, udp), appended by every
//! process of the launch to the file the launcher's `--report` names.
//!
//! Owns: the record format (documented in the README) and its writing: the file is opened,
//! written with ONE `write` of the whole line (O_APPEND: lines of concurrent processes never
//! interleave) and closed each time.
//! Must never: keep an fd open, block on anything but the write, or change errno.

use std::ffi::CString;
use std::fmt::Write as _;
use std::time::{SystemTime, UNIX_EPOCH};

use crate::state;

/// What happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Connect,
    Lookup,
    Block,
    Udp,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::Connect => "connect",
            Kind::Lookup => "lookup",
            Kind::Block => "block",
            Kind::Udp => "udp",
        }
    }
}

/// One event.
pub struct Event<'a> {
    pub kind: Kind,
    pub name: Option<&'a str>,
    pub ip: Option<std::net::IpAddr>,
    pub port: Option<u16>,
    /// What chose the route: `default`, `rule 2`, `localnet`, `policy`.
    pub rule: Option<&'a str>,
    pub chain: Option<&'a str>,
    /// `ok` or an errno name.
    pub result: &'a str,
    pub ms: Option<f64>,
}

/// Whether events are recorded in this process.
pub fn enabled() -> bool {
    matches!(&state::get().cfg, Ok(c) if c.report_file.is_some())
}

fn json_str(out: &mut String, s: &str) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

/// UTC `YYYY-MM-DDTHH:MM:SS.mmmZ` (civil-from-days, no time-zone database needed).
fn utc_now() -> String {
    let d = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    let secs = d.as_secs() as i64;
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        d.subsec_millis()
    )
}

fn program() -> String {
    std::fs::read_link("/proc/self/exe")
        .map(|p| p.to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// Appends `e` to the report, if one is configured.
pub fn record(e: &Event) {
    let st = state::get();
    let Ok(cfg) = &st.cfg else { return };
    let Some(path) = &cfg.report_file else { return };
    let Ok(path) = CString::new(path.as_os_str().as_encoded_bytes()) else {
        return;
    };
    let mut line = String::with_capacity(256);
    line.push_str("{\"time\":");
    json_str(&mut line, &utc_now());
    // SAFETY: getpid cannot fail.
    let _ = write!(line, ",\"pid\":{},\"program\":", unsafe { libc::getpid() });
    json_str(&mut line, &program());
    line.push_str(",\"kind\":");
    json_str(&mut line, e.kind.name());
    let opt = |line: &mut String, key: &str, v: Option<&str>| {
        let _ = write!(line, ",\"{key}\":");
        match v {
            Some(s) => json_str(line, s),
            None => line.push_str("null"),
        }
    };
    opt(&mut line, "name", e.name);
    opt(&mut line, "ip", e.ip.map(|ip| ip.to_string()).as_deref());
    match e.port {
        Some(p) => {
            let _ = write!(line, ",\"port\":{p}");
        }
        None => line.push_str(",\"port\":null"),
    }
    opt(&mut line, "rule", e.rule);
    opt(&mut line, "chain", e.chain);
    line.push_str(",\"result\":");
    json_str(&mut line, e.result);
    match e.ms {
        Some(ms) => {
            let _ = write!(line, ",\"ms\":{ms:.3}");
        }
        None => line.push_str(",\"ms\":null"),
    }
    line.push_str("}\n");
    let saved = crate::sock::errno();
    crate::log::append_line(&path, line.as_bytes());
    crate::sock::set_errno(saved);
}
