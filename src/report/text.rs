//! The human report: one line per finding, evidence and changes indented under it.

use std::fmt::Write;

use super::TextStyle;
use crate::engine::Report;
use crate::resource::Status;

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
            let mut title = f.title.lines();
            let _ =
                writeln!(out, "{} {:<28} {}", paint(style, f.status), clean(&f.id), clean(title.next().unwrap_or("")));
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
            let facts: Vec<String> =
                r.facts.iter().map(|f| format!("{} {}", f.name.replace('_', " "), f.value)).collect();
            let _ = writeln!(out, "facts    {:<28} {}", r.id, clean(&facts.join(", ")));
        }
        for w in &r.warnings {
            let _ = writeln!(out, "warning  {:<28} {}", r.id, clean(w));
        }
    }
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
