//! Reading the egress report back: the JSON-lines records the library and the launcher write
//! (format in `chainsocks_core::report`), for `--summary`, the GitHub step summary,
//! `--fail-on-block` and `policy learn`.
//!
//! Owns: the parsed [`Record`], how a destination is shown (`name:port`, `ip:port`,
//! `[v6]:port`), what counts as blocked, and the per-destination tallies the summaries share.
//! Must never: fail on a malformed line (a process killed mid-write, a file the user edited):
//! such lines are skipped.

use std::collections::BTreeMap;
use std::path::Path;

use serde::Deserialize;

/// One event of the report.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct Record {
    pub kind: String,
    pub name: Option<String>,
    pub ip: Option<String>,
    pub port: Option<u16>,
    pub rule: Option<String>,
    pub chain: Option<String>,
    pub result: String,
    pub pid: i64,
    pub ppid: Option<i64>,
    pub program: String,
    pub cmdline: Option<String>,
}

impl Record {
    /// `name:port`, `ip:port`, `[v6]:port`; without a port, the name or address alone.
    pub fn dest(&self) -> String {
        match (&self.name, &self.ip, self.port) {
            (Some(n), _, Some(p)) => format!("{n}:{p}"),
            (None, Some(ip), Some(p)) if ip.contains(':') => format!("[{ip}]:{p}"),
            (None, Some(ip), Some(p)) => format!("{ip}:{p}"),
            (Some(n), _, None) => n.clone(),
            (None, Some(ip), None) => ip.clone(),
            _ => "?".into(),
        }
    }

    /// A connect refused before it left: a `block` record, or a refused datagram.
    pub fn blocked(&self) -> bool {
        self.kind == "block" || (self.kind == "udp" && self.result != "ok")
    }

    pub fn ok(&self) -> bool {
        self.result == "ok"
    }

    /// Who made it: the command line when the record has one (the program and, after an
    /// interpreter, its script shown by file name: `python3 fetch.py URL`), else the
    /// program's file name.
    pub fn who(&self) -> String {
        match self.cmdline.as_deref().filter(|c| !c.is_empty()) {
            Some(c) => {
                let mut words = c.splitn(3, ' ');
                let shown: Vec<&str> = words
                    .next()
                    .into_iter()
                    .chain(words.next())
                    .map(base_name)
                    .chain(words)
                    .collect();
                shown.join(" ")
            }
            None => base_name(&self.program).to_string(),
        }
    }
}

/// The file name of an absolute path (other words as they are).
fn base_name(word: &str) -> &str {
    match word.starts_with('/') {
        true => word
            .rsplit('/')
            .next()
            .filter(|b| !b.is_empty())
            .unwrap_or(word),
        false => word,
    }
}

/// Every record of a report file (an unreadable file: none).
pub fn read(path: &Path) -> Vec<Record> {
    parse(&std::fs::read_to_string(path).unwrap_or_default())
}

/// Every well-formed record of a report's text.
pub fn parse(text: &str) -> Vec<Record> {
    text.lines()
        .filter_map(|l| serde_json::from_str::<Record>(l).ok())
        .filter(|r| !r.kind.is_empty())
        .collect()
}

/// What happened to one destination.
#[derive(Debug, Default, Clone)]
pub struct Tally {
    pub count: usize,
    pub failed: usize,
    /// Chains used (`direct` for direct connections), and rules for blocked attempts.
    pub via: Vec<String>,
    /// Who tried (see [`Record::who`]), in first-seen order, each once.
    pub who: Vec<String>,
}

impl Tally {
    fn add(&mut self, r: &Record, via: Option<&str>) {
        self.count += 1;
        if !r.ok() {
            self.failed += 1;
        }
        if let Some(v) = via
            && !self.via.iter().any(|x| x == v)
        {
            self.via.push(v.to_string());
        }
        let who = r.who();
        if !self.who.contains(&who) {
            self.who.push(who);
        }
    }
}

/// The report, tallied: connections per destination and blocked attempts per destination.
#[derive(Debug, Default)]
pub struct Summary {
    pub connections: usize,
    pub failed: usize,
    pub lookups: usize,
    pub blocked_attempts: usize,
    pub dests: BTreeMap<String, Tally>,
    pub blocked: BTreeMap<String, Tally>,
}

impl Summary {
    pub fn of(records: &[Record]) -> Summary {
        let mut s = Summary::default();
        for r in records {
            if r.blocked() {
                s.blocked_attempts += 1;
                let why = r.rule.as_deref().unwrap_or(r.result.as_str());
                s.blocked.entry(r.dest()).or_default().add(r, Some(why));
                continue;
            }
            match r.kind.as_str() {
                "connect" => {
                    s.connections += 1;
                    if !r.ok() {
                        s.failed += 1;
                    }
                    s.dests
                        .entry(r.dest())
                        .or_default()
                        .add(r, r.chain.as_deref());
                }
                "lookup" => s.lookups += 1,
                _ => {}
            }
        }
        s
    }

    /// Destinations by count (most first), then by name.
    pub fn top(map: &BTreeMap<String, Tally>) -> Vec<(&String, &Tally)> {
        let mut v: Vec<(&String, &Tally)> = map.iter().collect();
        v.sort_by(|a, b| b.1.count.cmp(&a.1.count).then(a.0.cmp(b.0)));
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_and_tallies() {
        let text = r#"{"time":"t","pid":5,"ppid":1,"program":"/usr/bin/curl","cmdline":"curl -sS http://a.test/","kind":"connect","name":"a.test","ip":null,"port":80,"rule":"default","chain":"default","result":"ok","ms":1.0}
not json
{"time":"t","pid":6,"program":"/usr/bin/python3.11","kind":"block","name":null,"ip":"10.1.2.3","port":5432,"rule":"allowlist","chain":null,"result":"EACCES","ms":null}
{"time":"t","pid":6,"program":"/usr/bin/python3.11","kind":"udp","name":null,"ip":"fd00::1","port":53,"rule":"allowlist","chain":null,"result":"EACCES","ms":null}
{"time":"t","pid":5,"program":"/usr/bin/curl","kind":"lookup","name":"a.test","ip":"198.18.0.1","port":null,"rule":null,"chain":null,"result":"ok","ms":null}
{"time":"t","pid":5,"program":"/usr/bin/curl","kind":"connect","name":"a.test","ip":null,"port":80,"rule":"default","chain":"default","result":"ECONNREFUSED","ms":1.0}
"#;
        let r = parse(text);
        assert_eq!(r.len(), 5);
        assert_eq!(r[0].dest(), "a.test:80");
        assert_eq!(r[0].who(), "curl -sS http://a.test/");
        assert_eq!(r[1].who(), "python3.11", "old records: the program");
        let script = Record {
            cmdline: Some("/usr/bin/python3 /tmp/x/fetch.py /a/b http://x/".into()),
            ..Record::default()
        };
        assert_eq!(script.who(), "python3 fetch.py /a/b http://x/");
        assert_eq!(r[2].dest(), "[fd00::1]:53");
        assert!(r[1].blocked() && r[2].blocked() && !r[0].blocked());
        let s = Summary::of(&r);
        assert_eq!((s.connections, s.failed, s.lookups), (2, 1, 1));
        assert_eq!(s.blocked_attempts, 2);
        let a = &s.dests["a.test:80"];
        assert_eq!((a.count, a.failed), (2, 1));
        assert_eq!(a.via, ["default"]);
        assert_eq!(s.blocked["10.1.2.3:5432"].via, ["allowlist"]);
    }
}
