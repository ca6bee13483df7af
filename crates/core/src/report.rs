//! The egress report's record format: one JSON object per line per event (connect, lookup,
//! block, udp), written by every process of a launch (the preloaded library) and by the
//! launcher's supervisor for the programs it proxies.
//!
//! Owns: the fields and their JSON (documented in the README), the process's command line as
//! a record shows it ([`cmdline`], [`read_cmdline`]: argv joined, URL passwords hidden,
//! truncated), and appending a line to the report file with ONE `write` on an `O_APPEND` fd
//! opened and closed each time (lines of concurrent processes never interleave).
//! Must never: keep an fd open, write through a libc symbol the library hooks (see [`crate::sys`]),
//! change errno, or show a URL's password from a command line.

use std::fmt::Write as _;
use std::net::IpAddr;
use std::time::{SystemTime, UNIX_EPOCH};

/// What happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Connect,
    Lookup,
    Block,
    Udp,
}

impl Kind {
    pub fn name(self) -> &'static str {
        match self {
            Kind::Connect => "connect",
            Kind::Lookup => "lookup",
            Kind::Block => "block",
            Kind::Udp => "udp",
        }
    }
}

/// One event.
#[derive(Debug, Clone, Copy)]
pub struct Event<'a> {
    pub kind: Kind,
    pub name: Option<&'a str>,
    pub ip: Option<IpAddr>,
    pub port: Option<u16>,
    /// What chose the route: `default`, `rule 2`, `localnet`, `policy`.
    pub rule: Option<&'a str>,
    pub chain: Option<&'a str>,
    /// `ok` or an errno name.
    pub result: &'a str,
    pub ms: Option<f64>,
}

/// The process an event belongs to.
#[derive(Debug, Clone, Copy)]
pub struct Who<'a> {
    pub pid: i32,
    /// Its parent (so a reader can follow a tree: `sh` → `pip` → `python3`).
    pub ppid: i32,
    /// `/proc/PID/exe`.
    pub program: &'a str,
    /// Its command line as [`cmdline`] shows it.
    pub cmdline: &'a str,
}

/// The most bytes of a command line a record keeps (then `…`).
pub const CMDLINE_MAX: usize = 256;

/// How much of `/proc/PID/cmdline` [`read_cmdline`] reads (passwords are hidden in this much
/// before it is cut to [`CMDLINE_MAX`]).
const CMDLINE_READ: usize = 4096;

/// A command line for a record, from the NUL-separated bytes of `/proc/PID/cmdline`: the
/// arguments joined with spaces (invalid UTF-8 replaced), the password of every URL in them
/// `***`, cut at [`CMDLINE_MAX`] bytes on a character boundary with `…` appended.
pub fn cmdline(raw: &[u8]) -> String {
    let raw = raw.strip_suffix(b"\0").unwrap_or(raw);
    let joined: Vec<u8> = raw.iter().map(|&b| if b == 0 { b' ' } else { b }).collect();
    let text = crate::config::redact_urls(&String::from_utf8_lossy(&joined));
    if text.len() <= CMDLINE_MAX {
        return text;
    }
    let mut end = CMDLINE_MAX;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    let mut out = text.get(..end).unwrap_or("").to_string();
    out.push('…');
    out
}

/// The command line of a process as [`cmdline`] shows it, read from `path`
/// (`/proc/self/cmdline`, `/proc/PID/cmdline`) with raw syscalls; empty if it cannot be read
/// (a zombie, a kernel thread). errno is left as it was.
pub fn read_cmdline(path: &std::ffi::CStr) -> String {
    let saved = crate::sys::errno();
    let mut buf = vec![0u8; CMDLINE_READ];
    let mut len = 0;
    if let Ok(fd) = crate::sys::open(path, libc::O_RDONLY | libc::O_CLOEXEC, 0) {
        while len < buf.len() {
            match crate::sys::read(fd, buf.get_mut(len..).unwrap_or(&mut [])) {
                Ok(0) | Err(_) => break,
                Ok(n) => len += n,
            }
        }
        crate::sys::close(fd);
    }
    crate::sys::set_errno(saved);
    buf.truncate(len);
    cmdline(&buf)
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
pub fn utc_now() -> String {
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

/// The JSON line (with its newline) for `e`, done by `who`.
pub fn line(e: &Event, who: &Who) -> String {
    let mut line = String::with_capacity(256);
    line.push_str("{\"time\":");
    json_str(&mut line, &utc_now());
    let _ = write!(
        line,
        ",\"pid\":{},\"ppid\":{},\"program\":",
        who.pid, who.ppid
    );
    json_str(&mut line, who.program);
    line.push_str(",\"cmdline\":");
    json_str(&mut line, who.cmdline);
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
    line
}

/// Appends `line` to the file at `path` with one `write` (O_APPEND: lines written by concurrent
/// processes never interleave), opening and closing it each time; errno is left as it was.
pub fn append_line(path: &std::ffi::CStr, line: &[u8]) {
    let saved = crate::sys::errno();
    if let Ok(fd) = crate::sys::open(
        path,
        libc::O_WRONLY | libc::O_APPEND | libc::O_CREAT | libc::O_CLOEXEC,
        0o600,
    ) {
        let _ = crate::sys::write(fd, line);
        crate::sys::close(fd);
    }
    crate::sys::set_errno(saved);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_line_is_one_json_object() {
        let e = Event {
            kind: Kind::Connect,
            name: Some("a\"b.test"),
            ip: None,
            port: Some(443),
            rule: Some("default"),
            chain: Some("default"),
            result: "ok",
            ms: Some(1.5),
        };
        let l = line(
            &e,
            &Who {
                pid: 7,
                ppid: 1,
                program: "/usr/bin/curl",
                cmdline: "curl -sS \"http://x/\"",
            },
        );
        assert!(l.ends_with("}\n"));
        assert!(l.contains(r#""pid":7,"ppid":1,"program":"/usr/bin/curl","cmdline":"curl -sS \"http://x/\"","kind":"connect","name":"a\"b.test","ip":null,"port":443,"rule":"default","chain":"default","result":"ok","ms":1.500}"#), "{l}");
        assert_eq!(utc_now().len(), 24);
    }

    #[test]
    fn command_lines() {
        assert_eq!(
            cmdline(b"pip\0install\0-r\0req.txt\0"),
            "pip install -r req.txt"
        );
        assert_eq!(cmdline(b""), "");
        assert_eq!(
            cmdline(b"git\0clone\0https://bot:t0ken@git.example/r.git\0"),
            "git clone https://bot:***@git.example/r.git"
        );
        let long: Vec<u8> = std::iter::repeat_n("é".bytes(), 200).flatten().collect();
        let c = cmdline(&long);
        assert!(
            c.ends_with('…') && c.len() <= CMDLINE_MAX + '…'.len_utf8(),
            "{c}"
        );
        // A password past the cut is hidden before cutting, never shown in part.
        let mut raw = vec![b'x'; CMDLINE_MAX - 20];
        raw.extend_from_slice(b"\0https://u:supersecretpassword@h/");
        let c = cmdline(&raw);
        assert!(!c.contains("supersec"), "{c}");
        assert!(read_cmdline(c"/proc/self/cmdline").contains("chainsocks_core"));
        assert_eq!(read_cmdline(c"/nonexistent"), "");
    }
}
