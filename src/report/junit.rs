//! JUnit XML, one test suite per resource, for CI dashboards.

use std::fmt::Write;

use crate::engine::Report;
use crate::resource::Status;

fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            c if (c as u32) < 0x20 && c != '\n' && c != '\t' => {}
            c => out.push(c),
        }
    }
    out
}

/// One suite with one erroring case: the run could not start.
pub fn render_error(command: &str, message: &str) -> String {
    format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<testsuites name=\"vakt {command}\" tests=\"1\" failures=\"0\" errors=\"1\">\n  <testsuite name=\"profile\" tests=\"1\" failures=\"0\" errors=\"1\">\n    <testcase classname=\"profile\" name=\"profile\"><error message=\"{}\"/></testcase>\n  </testsuite>\n</testsuites>\n",
        escape(message)
    )
}

pub fn render(report: &Report) -> String {
    let mut out = String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
    let s = &report.summary;
    let _ = writeln!(
        out,
        "<testsuites name=\"vakt {}\" tests=\"{}\" failures=\"{}\" errors=\"{}\" skipped=\"{}\" time=\"{:.3}\">",
        report.command,
        s.ok + s.changed + s.drift + s.failed + s.unknown + s.skipped,
        s.drift + s.failed,
        s.unknown,
        s.skipped,
        report.elapsed_ms as f64 / 1000.0
    );
    for r in &report.resources {
        let count = |st: &[Status]| r.findings.iter().filter(|f| st.contains(&f.status)).count();
        let _ = writeln!(
            out,
            "  <testsuite name=\"{}\" tests=\"{}\" failures=\"{}\" errors=\"{}\" skipped=\"{}\">",
            r.id,
            r.findings.len(),
            count(&[Status::Drift, Status::Failed]),
            count(&[Status::Unknown]),
            count(&[Status::Skipped])
        );
        for f in &r.findings {
            let _ = write!(out, "    <testcase classname=\"{}\" name=\"{}\"", r.id, escape(&f.id));
            let body = [f.evidence.join("\n"), f.change.clone().map(|c| format!("fix: {c}")).unwrap_or_default()]
                .into_iter()
                .filter(|s| !s.is_empty())
                .collect::<Vec<_>>()
                .join("\n");
            let tag = match f.status {
                Status::Drift | Status::Failed => Some("failure"),
                Status::Unknown => Some("error"),
                Status::Skipped => Some("skipped"),
                Status::Ok | Status::Changed => None,
            };
            match tag {
                None => out.push_str("/>\n"),
                Some(tag) => {
                    let _ = writeln!(
                        out,
                        ">\n      <{tag} message=\"{}\">{}</{tag}>\n    </testcase>",
                        escape(&f.title),
                        escape(&body)
                    );
                }
            }
        }
        out.push_str("  </testsuite>\n");
    }
    out.push_str("</testsuites>\n");
    out
}
