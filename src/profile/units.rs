//! Durations (`"300s"`, `"5m"`) and nginx-style sizes (`"128k"`, `"50m"`) as they appear in
//! profiles: parsed with checked arithmetic, and printed back as the operator wrote them.

use std::fmt;
use std::time::Duration;

/// Splits `"300s"` into 300 and `"s"`; the number must be plain ASCII digits.
fn split(text: &str) -> Option<(u64, &str)> {
    let digits = text.find(|c: char| !c.is_ascii_digit()).unwrap_or(text.len());
    let (num, unit) = text.split_at(digits);
    Some((num.parse().ok()?, unit))
}

/// A duration as written: a count and a unit nginx also understands (`ms`, `s`, `m`, `h`, `d`;
/// a bare number is seconds). Compares by length, prints as written.
#[derive(Debug, Clone, Copy)]
pub struct Span {
    count: u64,
    unit: &'static str,
    length: Duration,
}

const TIME_UNITS: &[(&str, u64)] =
    &[("ms", 1), ("", 1000), ("s", 1000), ("m", 60_000), ("h", 3_600_000), ("d", 86_400_000)];

impl Span {
    pub fn parse(text: &str) -> Result<Span, String> {
        let (count, unit) = split(text)
            .ok_or_else(|| format!("`{text}` is not a duration; write it like \"300s\", \"5m\" or \"500ms\""))?;
        let &(unit, millis) = TIME_UNITS
            .iter()
            .find(|(u, _)| *u == unit)
            .ok_or_else(|| format!("`{text}` has an unknown unit `{unit}`; use ms, s, m, h or d"))?;
        let length = count
            .checked_mul(millis)
            .map(Duration::from_millis)
            .ok_or_else(|| format!("`{text}` is too long to be a duration"))?;
        Ok(Span { count, unit, length })
    }

    pub fn get(self) -> Duration {
        self.length
    }
}

impl From<Duration> for Span {
    /// The largest unit that divides it, as a profile would say it.
    fn from(d: Duration) -> Span {
        let ms = u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
        let (unit, size) = [("d", 86_400_000), ("h", 3_600_000), ("m", 60_000), ("s", 1000)]
            .into_iter()
            .find(|(_, size)| ms != 0 && ms % size == 0)
            .unwrap_or(("ms", 1));
        Span { count: ms / size, unit, length: d }
    }
}

impl PartialEq for Span {
    fn eq(&self, other: &Span) -> bool {
        self.length == other.length
    }
}

impl PartialOrd for Span {
    fn partial_cmp(&self, other: &Span) -> Option<std::cmp::Ordering> {
        self.length.partial_cmp(&other.length)
    }
}

impl fmt::Display for Span {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}{}", self.count, self.unit)
    }
}

/// Parses `"500ms"`, `"5s"`, `"5m"`, `"1h"`, `"2d"`; a bare number is seconds.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    Span::parse(text).map(Span::get)
}

/// Formats a duration the way nginx and the profile write it: the largest unit that divides it.
pub fn format_duration(d: Duration) -> String {
    Span::from(d).to_string()
}

/// A byte size written nginx-style: a number with an optional `k`, `m` or `g` suffix (either
/// case). Compares by bytes, prints as written.
#[derive(Debug, Clone, Copy)]
pub struct Size {
    count: u64,
    unit: char,
    bytes: u64,
}

impl Size {
    pub fn parse(text: &str) -> Result<Size, String> {
        let bad = || format!("`{text}` is not a size; write it like \"128k\" or \"50m\"");
        let (count, unit) = split(text).ok_or_else(bad)?;
        let (unit, mult) = match unit {
            "" => (' ', 1u64),
            "k" | "K" => ('k', 1 << 10),
            "m" | "M" => ('m', 1 << 20),
            "g" | "G" => ('g', 1 << 30),
            _ => return Err(bad()),
        };
        let bytes = count.checked_mul(mult).ok_or_else(|| format!("`{text}` is too large to be a size"))?;
        Ok(Size { count, unit, bytes })
    }

    pub fn bytes(self) -> u64 {
        self.bytes
    }
}

impl PartialEq for Size {
    fn eq(&self, other: &Size) -> bool {
        self.bytes == other.bytes
    }
}

impl PartialOrd for Size {
    fn partial_cmp(&self, other: &Size) -> Option<std::cmp::Ordering> {
        self.bytes.partial_cmp(&other.bytes)
    }
}

impl fmt::Display for Size {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.unit {
            ' ' => write!(f, "{}", self.count),
            unit => write!(f, "{}{unit}", self.count),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn durations_parse_and_print_as_written() {
        assert_eq!(parse_duration("300s"), Ok(Duration::from_secs(300)));
        assert_eq!(parse_duration("5m"), Ok(Duration::from_secs(300)));
        assert_eq!(parse_duration("200ms"), Ok(Duration::from_millis(200)));
        assert_eq!(parse_duration("65"), Ok(Duration::from_secs(65)));
        assert_eq!(Span::parse("300s").map(|s| s.to_string()), Ok("300s".into()));
        assert_eq!(Span::parse("5m").map(|s| s.to_string()), Ok("5m".into()));
        assert_eq!(format_duration(Duration::from_secs(300)), "5m");
        assert_eq!(format_duration(Duration::from_millis(1500)), "1500ms");
        assert!(parse_duration("5 minutes").unwrap_err().contains("unknown unit"));
        assert!(parse_duration("soon").unwrap_err().contains("not a duration"));
        assert!(parse_duration(" 5s").unwrap_err().contains("not a duration"));
        assert!(parse_duration("+5s").unwrap_err().contains("not a duration"));
    }

    #[test]
    fn overflow_is_an_error_not_a_wrap() {
        // Both used to wrap in release builds: 384ms, and a body size of 0 (unlimited).
        assert!(parse_duration("18446744073709552s").unwrap_err().contains("too long"));
        assert!(Size::parse("17179869184g").unwrap_err().contains("too large"));
        assert!(Size::parse("99999999999999999999").is_err());
    }

    #[test]
    fn sizes_follow_nginx_suffixes() {
        assert_eq!(Size::parse("128k").map(Size::bytes), Ok(131_072));
        assert_eq!(Size::parse("50M").map(Size::bytes), Ok(52_428_800));
        assert_eq!(Size::parse("512").map(Size::bytes), Ok(512));
        assert_eq!(Size::parse("50m").map(|s| s.to_string()), Ok("50m".into()));
        assert!(Size::parse("lots").is_err());
        assert!(Size::parse("1 m").is_err());
    }

    proptest! {
        /// Any text either fails to parse or prints back to text that parses to the same value,
        /// made only of digits and a unit: nothing else can reach a rendered file.
        #[test]
        fn durations_fail_or_round_trip(text in "\\PC{0,12}|[0-9]{1,22}(ms|s|m|h|d)?") {
            if let Ok(span) = Span::parse(&text) {
                let shown = span.to_string();
                prop_assert!(shown.chars().all(|c| c.is_ascii_alphanumeric()), "{shown}");
                prop_assert_eq!(Span::parse(&shown).map(Span::get), Ok(span.get()));
            }
        }

        #[test]
        fn sizes_fail_or_round_trip(text in "\\PC{0,12}|[0-9]{1,22}[kKmMgG]?") {
            if let Ok(size) = Size::parse(&text) {
                let shown = size.to_string();
                prop_assert!(shown.chars().all(|c| c.is_ascii_alphanumeric()), "{shown}");
                prop_assert_eq!(Size::parse(&shown).map(Size::bytes), Ok(size.bytes()));
            }
        }
    }
}
