//! `--summary`: at exit, a few lines on stderr from the egress report: how many connections,
//! the distinct destinations (top 10 by count), and the blocked attempts.

use std::collections::HashMap;
use std::path::Path;

/// The summary text of a JSON-lines report.
pub fn summarize(report: &Path) -> String {
    let text = std::fs::read_to_string(report).unwrap_or_default();
    let mut connections = 0usize;
    let mut failed = 0usize;
    let mut blocked = 0usize;
    let mut lookups = 0usize;
    let mut dests: HashMap<String, usize> = HashMap::new();
    for line in text.lines() {
        let Ok(v) = serde_json::from_str::<serde_json::Value>(line) else {
            continue;
        };
        let kind = v["kind"].as_str().unwrap_or("");
        let dest = match (v["name"].as_str(), v["ip"].as_str(), v["port"].as_u64()) {
            (Some(n), _, Some(p)) => format!("{n}:{p}"),
            (None, Some(ip), Some(p)) if ip.contains(':') => format!("[{ip}]:{p}"),
            (None, Some(ip), Some(p)) => format!("{ip}:{p}"),
            (Some(n), _, None) => n.to_string(),
            _ => "?".into(),
        };
        match kind {
            "connect" => {
                connections += 1;
                if v["result"].as_str() != Some("ok") {
                    failed += 1;
                }
                *dests.entry(dest).or_insert(0) += 1;
            }
            "block" => blocked += 1,
            "udp" if v["result"].as_str() != Some("ok") => blocked += 1,
            "lookup" => lookups += 1,
            _ => {}
        }
    }
    let mut top: Vec<(String, usize)> = dests.into_iter().collect();
    top.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
    let mut out = format!(
        "chainsocks: summary: {connections} connections ({failed} failed), {} distinct destinations, {blocked} blocked, {lookups} name lookups\n",
        top.len()
    );
    for (d, n) in top.iter().take(10) {
        out.push_str(&format!("chainsocks:   {n:>6}  {d}\n"));
    }
    out
}
