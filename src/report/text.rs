//! The human report: one line per finding, evidence and changes indented under it.

use std::fmt::Write;

use super::TextStyle;
use crate::engine::{Report, Status};

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

pub fn render(report: &Report, style: TextStyle) -> String {
    let mut out = String::new();
    let m = &report.machine;
    if !style.quiet {
        let verb = if report.dry_run { "apply --dry-run" } else { report.command };
        let _ = writeln!(
            out,
            "vakt {verb}: {} on {} ({}, kernel {}, {} CPUs, {} MiB)",
            report.profile,
            m.hostname.as_deref().unwrap_or("?"),
            m.os.as_deref().unwrap_or("unknown OS"),
            m.kernel.as_deref().unwrap_or("?"),
            m.cpus,
            m.memory_mib.map_or("?".into(), |n| n.to_string()),
        );
    }
    let would = report.dry_run || report.command == "check";
    for r in &report.resources {
        for f in &r.findings {
            let problem = matches!(f.status, Status::Drift | Status::Failed | Status::Unknown);
            if style.quiet && !problem {
                continue;
            }
            let _ = writeln!(out, "{} {:<28} {}", paint(style, f.status), f.id, f.title);
            if problem || style.verbose {
                for e in &f.evidence {
                    let _ = writeln!(out, "           {e}");
                }
            }
            if let Some(change) = &f.change
                && matches!(f.status, Status::Drift | Status::Changed | Status::Failed)
            {
                let arrow = if would && f.status == Status::Drift { "would run" } else { "ran" };
                let _ = writeln!(out, "           {arrow}: {change}");
            }
            if style.diff
                && let Some(diff) = &f.diff
            {
                for line in diff.lines() {
                    let _ = writeln!(out, "           {line}");
                }
            }
        }
        if let Some(e) = &r.error {
            let _ = writeln!(out, "{} {:<28} {e}", paint(style, Status::Failed), r.id);
        }
        for w in &r.warnings {
            let _ = writeln!(out, "warning  {:<28} {w}", r.id);
        }
    }
    let s = &report.summary;
    let _ = writeln!(
        out,
        "summary: {} ok, {} changed, {} drift, {} failed, {} unknown, {} skipped in {} ms",
        s.ok, s.changed, s.drift, s.failed, s.unknown, s.skipped, report.elapsed_ms
    );
    out
}
