//! The human report: one line per finding, evidence and changes indented under it.

use std::fmt::Write;

use super::TextStyle;
use crate::engine::{Report, Run};
use crate::resource::host::Machine;
use crate::resource::{ResourceReport, Status};

fn paint(style: TextStyle, status: Status) -> String {
    let word = format!("{:<8}", status.as_str());
    if !style.color {
        return word;
    }
    let code = match status {
        Status::Ok => "32",
        Status::Changed => "33",
        Status::Drift => "31",
        Status::Failed => "1;31",
        Status::Unknown => "35",
        Status::Skipped => "2",
    };
    format!("\x1b[{code}m{word}\x1b[0m")
}

/// Text from the host or the profile, made safe for a terminal: control characters (escape
/// sequences, carriage returns) are shown escaped, never sent.
fn clean(text: &str) -> String {
    crate::escape::controls(text)
}

pub fn render(report: &Report, style: TextStyle) -> String {
    let mut out = header(report.command.as_str(), report.dry_run, &report.profile, &report.machine, style);
    let would = report.dry_run || report.command == Run::Check;
    for r in &report.resources {
        out.push_str(&resource(r, style, would));
    }
    out.push_str(&summary(report));
    out
}

/// The first line: what ran, with which profile, on which machine (none when quiet).
pub fn header(command: &str, dry_run: bool, profile: &str, m: &Machine, style: TextStyle) -> String {
    let mut out = String::new();
    if !style.quiet {
        let verb = if dry_run { "apply --dry-run" } else { command };
        let _ = writeln!(
            out,
            "vakt {verb}: {} on {} ({}, kernel {}, {} CPUs, {} MiB)",
            profile,
            m.hostname.as_deref().unwrap_or("?"),
            m.os.as_deref().unwrap_or("unknown OS"),
            m.kernel.as_deref().unwrap_or("?"),
            m.cpus,
            m.memory_mib.map_or("?".into(), |n| n.to_string()),
        );
    }
    out
}

/// One resource's lines: its findings, error, facts and warnings. `would`: a plan (check,
/// dry run), not a run.
pub fn resource(r: &ResourceReport, style: TextStyle, would: bool) -> String {
    let mut out = String::new();
    for f in &r.findings {
        let problem = matches!(f.status, Status::Drift | Status::Failed | Status::Unknown);
        if style.quiet && !problem {
            continue;
        }
        let mut title = f.title.lines();
        let _ = writeln!(out, "{} {:<28} {}", paint(style, f.status), clean(&f.id), clean(title.next().unwrap_or("")));
        for more in title {
            let _ = writeln!(out, "           {}", clean(more));
        }
        if problem || style.verbose {
            for e in f.evidence.iter().flat_map(|e| e.lines()) {
                let _ = writeln!(out, "           {}", clean(e));
            }
        }
        if let Some(change) = &f.change {
            // "ran" only for what ran: a drift left after apply was not run (refused, or
            // stopped by an earlier failure), and says so.
            let arrow = match f.status {
                Status::Changed => "ran",
                Status::Failed => "tried",
                Status::Drift if would => "would run",
                Status::Drift => "not run",
                _ => "",
            };
            if !arrow.is_empty() {
                let _ = writeln!(out, "           {arrow}: {}", clean(change));
            }
        }
        if style.diff
            && let Some(diff) = &f.diff
        {
            for line in diff.lines() {
                let _ = writeln!(out, "           {}", clean(line));
            }
        }
    }
    // One line per fact: an error a finding already carries is not printed again.
    if let Some(e) = &r.error
        && !r.findings.iter().any(|f| f.evidence.contains(e))
    {
        let _ = writeln!(out, "{} {:<28} {}", paint(style, Status::Failed), r.id, clean(e));
    }
    if !r.facts.is_empty() && !style.quiet {
        let facts: Vec<String> = r.facts.iter().map(|f| format!("{} {}", f.name.replace('_', " "), f.value)).collect();
        let _ = writeln!(out, "facts    {:<28} {}", r.id, clean(&facts.join(", ")));
    }
    for w in &r.warnings {
        let _ = writeln!(out, "warning  {:<28} {}", r.id, clean(w));
    }
    out
}

/// The last line: the counts and the time taken.
pub fn summary(report: &Report) -> String {
    let mut out = String::new();
    let s = &report.summary;
    let facts = match s.unknown_facts {
        0 => String::new(),
        n => format!(" ({n} of them host facts apply cannot change: not counted in the exit code)"),
    };
    let _ = writeln!(
        out,
        "summary: {} ok, {} changed, {} drift, {} failed, {} unknown{facts}, {} skipped in {} ms",
        s.ok, s.changed, s.drift, s.failed, s.unknown, s.skipped, report.elapsed_ms
    );
    out
}
