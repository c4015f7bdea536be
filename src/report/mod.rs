//! Rendering a `Report` as text, JSON, JUnit XML or Prometheus text.

mod junit;
mod prometheus;
mod text;

use crate::cli::Format;
use crate::engine::Report;

#[derive(Debug, Clone, Copy)]
pub struct TextStyle {
    pub color: bool,
    pub verbose: bool,
    pub quiet: bool,
    pub diff: bool,
}

pub fn render(report: &Report, format: Format, style: TextStyle) -> String {
    match format {
        Format::Text => text::render(report, style),
        Format::Json => serde_json::to_string_pretty(report).map(|s| s + "\n").unwrap_or_default(),
        Format::Junit => junit::render(report),
        Format::Prometheus => prometheus::render(report),
    }
}
