//! What the launcher says at exit from the egress report: `--summary` (a few lines on stderr:
//! how many connections, the distinct destinations — top 10 by count —, the blocked attempts;
//! plus a Markdown summary appended to `$GITHUB_STEP_SUMMARY` when that is set, see
//! [`crate::ghsummary`]) and `--fail-on-block` (the blocked destinations, and the exit status).
//!
//! Must never: hide the command's own failure (a non-zero status or a signal death stays the
//! launcher's), or fail the launch because a summary cannot be written (one line says why).

use std::path::Path;

use crate::launch::Exit;
use crate::records::{self, Summary};

/// The exit status of `--fail-on-block` when the command exited 0 but an attempt was blocked
/// (2 is chainsocks' own error; a command's own non-zero status is kept as it is).
pub const BLOCKED_STATUS: u8 = 3;

/// The summary lines, with at most `blocked_max` blocked destinations.
fn text(s: &Summary, blocked_max: usize) -> String {
    let mut out = format!(
        "chainsocks: summary: {} connections ({} failed), {} distinct destinations, {} blocked, {} name lookups\n",
        s.connections,
        s.failed,
        s.dests.len(),
        s.blocked_attempts,
        s.lookups
    );
    for (d, t) in Summary::top(&s.dests).iter().take(10) {
        out.push_str(&format!("chainsocks:   {:>6}  {d}\n", t.count));
    }
    out.push_str(&blocked_lines(s, blocked_max));
    out
}

/// One line per blocked destination (most attempts first, at most `max`): why, and who tried.
fn blocked_lines(s: &Summary, max: usize) -> String {
    let top = Summary::top(&s.blocked);
    let mut out = String::new();
    for (d, t) in top.iter().take(max) {
        out.push_str(&format!(
            "chainsocks:   blocked {d} ×{} ({}) by {}\n",
            t.count,
            t.via.join(", "),
            t.who.join("; ")
        ));
    }
    if top.len() > max {
        out.push_str(&format!(
            "chainsocks:   … and {} more blocked destinations\n",
            top.len() - max
        ));
    }
    out
}

/// At the launcher's exit: prints the summary (`summary`: the report to read), appends the
/// Markdown one to `$GITHUB_STEP_SUMMARY`, and applies `--fail-on-block` (`fail_on_block`: the
/// report to read) to how the command ended.
pub fn at_exit(summary: Option<&Path>, fail_on_block: Option<&Path>, exit: Exit) -> Exit {
    let Some(report) = summary.or(fail_on_block) else {
        return exit;
    };
    let s = Summary::of(&records::read(report));
    if summary.is_some() {
        // --fail-on-block prints every blocked destination.
        let max = if fail_on_block.is_some() {
            usize::MAX
        } else {
            10
        };
        eprint!("{}", text(&s, max));
        if let Some(file) = std::env::var_os("GITHUB_STEP_SUMMARY").filter(|f| !f.is_empty())
            && let Err(e) = crate::ghsummary::append(Path::new(&file), &s)
        {
            eprintln!("chainsocks: cannot append the summary to $GITHUB_STEP_SUMMARY: {e}");
        }
    }
    if fail_on_block.is_none() || s.blocked_attempts == 0 {
        return exit;
    }
    if summary.is_none() {
        eprint!("{}", blocked_lines(&s, usize::MAX));
    }
    match exit {
        Exit::Code(0) => {
            eprintln!(
                "chainsocks: --fail-on-block: {} attempts blocked ({} destinations); the command exited 0, exit status {BLOCKED_STATUS}",
                s.blocked_attempts,
                s.blocked.len()
            );
            Exit::Code(BLOCKED_STATUS)
        }
        other => {
            eprintln!(
                "chainsocks: --fail-on-block: {} attempts blocked ({} destinations); keeping the command's own status",
                s.blocked_attempts,
                s.blocked.len()
            );
            other
        }
    }
}
