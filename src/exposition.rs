//! The Prometheus text exposition format (version 0.0.4: what node_exporter serves, its textfile
//! collector reads and `promtool check metrics` accepts), written in one place for the audit's
//! report and the watchdog's `/metrics`.

use std::fmt::{Display, Write};

/// The HTTP content type of the format.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// What a metric family is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Gauge,
    Counter,
    Summary,
}

impl Kind {
    fn as_str(self) -> &'static str {
        match self {
            Kind::Gauge => "gauge",
            Kind::Counter => "counter",
            Kind::Summary => "summary",
        }
    }
}

/// Families and their samples, in the order written.
#[derive(Debug, Default)]
pub struct Writer {
    text: String,
}

impl Writer {
    /// Starts a family: its HELP and TYPE lines.
    pub fn family(&mut self, name: &str, kind: Kind, help: &str) -> &mut Self {
        debug_assert!(valid_name(name), "metric name {name:?}");
        let help = help.replace('\\', "\\\\").replace('\n', "\\n");
        let _ = writeln!(self.text, "# HELP {name} {help}\n# TYPE {name} {}", kind.as_str());
        self
    }

    /// One sample: `name{label="value",...} value`, the label values escaped.
    pub fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: impl Display) -> &mut Self {
        debug_assert!(valid_name(name), "metric name {name:?}");
        self.text.push_str(name);
        if !labels.is_empty() {
            let pairs: Vec<String> = labels
                .iter()
                .map(|(k, v)| {
                    debug_assert!(valid_name(k) && !k.contains(':'), "label name {k:?}");
                    format!("{k}=\"{}\"", label_value(v))
                })
                .collect();
            let _ = write!(self.text, "{{{}}}", pairs.join(","));
        }
        let _ = writeln!(self.text, " {value}");
        self
    }

    /// A family of one unlabelled sample.
    pub fn single(&mut self, name: &str, kind: Kind, help: &str, value: impl Display) -> &mut Self {
        self.family(name, kind, help).sample(name, &[], value)
    }

    pub fn into_text(self) -> String {
        self.text
    }
}

/// A label value as the format quotes it: backslash, double quote and newline escaped.
pub fn label_value(text: &str) -> String {
    text.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

fn valid_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_' || c == ':')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_families_and_escapes_label_values() {
        let mut w = Writer::default();
        w.family("vakt_x", Kind::Gauge, "Help with a \\ and\na newline.")
            .sample("vakt_x", &[("id", "a\"b\\c\nd")], 1)
            .single("vakt_y_total", Kind::Counter, "Y.", 2.5);
        assert_eq!(
            w.into_text(),
            "# HELP vakt_x Help with a \\\\ and\\na newline.\n# TYPE vakt_x gauge\nvakt_x{id=\"a\\\"b\\\\c\\nd\"} 1\n\
             # HELP vakt_y_total Y.\n# TYPE vakt_y_total counter\nvakt_y_total 2.5\n"
        );
    }
}
