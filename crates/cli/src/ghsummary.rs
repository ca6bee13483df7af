//! The Markdown summary for CI pages: with `--summary` and `$GITHUB_STEP_SUMMARY` set (GitHub
//! Actions), the launcher appends a section to that file: the totals, a table of destinations
//! (connections, failures, chain used, who connected) and a table of blocked attempts (why,
//! which program tried).
//!
//! Owns: the Markdown text (GitHub-flavoured tables; every cell escaped so a command line
//! cannot break the table) and appending it.
//! Must never: truncate or rewrite the file (other steps' summaries are in it: append only), or
//! follow the variable anywhere but the file it names.

use std::io::Write;
use std::path::Path;

use crate::records::{Summary, Tally};

/// At most this many rows per table (the rest is counted in a line below it).
const MAX_ROWS: usize = 50;

/// Appends the Markdown summary of `s` to `file`.
pub fn append(file: &Path, s: &Summary) -> std::io::Result<()> {
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .create(true)
        .open(file)?;
    f.write_all(markdown(s).as_bytes())
}

/// The Markdown section.
pub fn markdown(s: &Summary) -> String {
    let mut out = String::from("### chainsocks egress\n\n");
    out.push_str(&format!(
        "{} connections ({} failed) to {} destinations, {} blocked attempts, {} name lookups.\n\n",
        s.connections,
        s.failed,
        s.dests.len(),
        s.blocked_attempts,
        s.lookups
    ));
    if !s.dests.is_empty() {
        out.push_str("| destination | connections | failed | chain | programs |\n");
        out.push_str("|---|---:|---:|---|---|\n");
        table(&mut out, &s.dests, |d, t| {
            format!(
                "| {} | {} | {} | {} | {} |\n",
                code(d),
                t.count,
                t.failed,
                cell(&t.via.join(", ")),
                who(t)
            )
        });
    }
    if !s.blocked.is_empty() {
        out.push_str("**Blocked**\n\n");
        out.push_str("| destination | attempts | blocked by | programs |\n");
        out.push_str("|---|---:|---|---|\n");
        table(&mut out, &s.blocked, |d, t| {
            format!(
                "| {} | {} | {} | {} |\n",
                code(d),
                t.count,
                cell(&t.via.join(", ")),
                who(t)
            )
        });
    }
    out
}

fn table(
    out: &mut String,
    map: &std::collections::BTreeMap<String, Tally>,
    row: impl Fn(&str, &Tally) -> String,
) {
    let top = Summary::top(map);
    for (d, t) in top.iter().take(MAX_ROWS) {
        out.push_str(&row(d, t));
    }
    if top.len() > MAX_ROWS {
        out.push_str(&format!("\n… and {} more.\n", top.len() - MAX_ROWS));
    }
    out.push('\n');
}

/// Who connected: each command line in a code span, separated by `<br>`.
fn who(t: &Tally) -> String {
    let shown: Vec<String> = t.who.iter().take(5).map(|w| code(w)).collect();
    let mut s = shown.join("<br>");
    if t.who.len() > 5 {
        s.push_str(&format!("<br>… {} more", t.who.len() - 5));
    }
    s
}

/// Text in a table cell: pipes, backslashes and HTML escaped, line breaks as spaces.
fn cell(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '|' => out.push_str("\\|"),
            '\\' => out.push_str("\\\\"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '&' => out.push_str("&amp;"),
            '`' => out.push('\''),
            c if c.is_control() => out.push(' '),
            c => out.push(c),
        }
    }
    out
}

/// A code span in a table cell (GitHub still splits cells at `|` inside one: escaped; the
/// backslash of `\|` is not shown in a code span inside a table).
fn code(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('`');
    for c in s.chars() {
        match c {
            '|' => out.push_str("\\|"),
            '`' => out.push('\''),
            c if c.is_control() => out.push(' '),
            c => out.push(c),
        }
    }
    out.push('`');
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::records::parse;

    #[test]
    fn tables_parse_back() {
        let text = r#"{"pid":5,"program":"/usr/bin/curl","cmdline":"sh -c curl a | tee x","kind":"connect","name":"a.test","ip":null,"port":80,"rule":"default","chain":"default","result":"ok"}
{"pid":5,"program":"/usr/bin/curl","cmdline":"curl b","kind":"connect","name":"a.test","ip":null,"port":80,"rule":"default","chain":"default","result":"ok"}
{"pid":6,"program":"/usr/bin/python3","cmdline":"python3 x.py","kind":"block","name":null,"ip":"10.1.2.3","port":5432,"rule":"allowlist","chain":null,"result":"EACCES"}
"#;
        let md = markdown(&Summary::of(&parse(text)));
        assert!(md.starts_with("### chainsocks egress\n\n2 connections (0 failed) to 1 destinations, 1 blocked attempts"), "{md}");
        assert!(
            md.contains(
                "| `a.test:80` | 2 | 0 | default | `sh -c curl a \\| tee x`<br>`curl b` |\n"
            ),
            "{md}"
        );
        assert!(md.contains("**Blocked**\n\n| destination | attempts | blocked by | programs |\n|---|---:|---|---|\n| `10.1.2.3:5432` | 1 | allowlist | `python3 x.py` |\n"), "{md}");
        assert_eq!(cell("a<b>|\n`"), "a&lt;b&gt;\\| '");
    }
}
