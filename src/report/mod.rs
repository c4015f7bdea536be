//! Rendering a `Report` as text, JSON, JUnit XML or Prometheus text.

mod junit;
mod prometheus;
pub mod text;

use crate::cli::Format;
use crate::engine::Report;

#[derive(Debug, Clone, Copy)]
pub struct TextStyle {
    pub color: bool,
    pub verbose: bool,
    pub quiet: bool,
    pub diff: bool,
}

/// What a machine format prints when the run could not start (an invalid profile or flag):
/// the error in that format, so that a consumer never parses an empty document.
pub fn render_error(command: &str, format: Format, message: &str) -> Option<String> {
    match format {
        Format::Text => None,
        Format::Json => {
            let doc = serde_json::json!({ "schema": 1, "command": command, "error": message, "exit_code": 2 });
            serde_json::to_string_pretty(&doc).ok().map(|s| s + "\n")
        }
        Format::Junit => Some(junit::render_error(command, message)),
        Format::Prometheus => Some(prometheus::render_up(false)),
    }
}

pub fn render(report: &Report, format: Format, style: TextStyle) -> String {
    match format {
        Format::Text => text::render(report, style),
        Format::Json => serde_json::to_string_pretty(report).map(|s| s + "\n").unwrap_or_default(),
        Format::Junit => junit::render(report),
        Format::Prometheus => prometheus::render(report),
    }
}
