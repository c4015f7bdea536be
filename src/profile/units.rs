//! Durations (`"300s"`, `"5m"`) and nginx-style sizes (`"128k"`, `"50m"`) as they appear in profiles.

use std::fmt;
use std::time::Duration;

/// Parses `"500ms"`, `"5s"`, `"5m"`, `"1h"`, `"2d"`; a bare number is seconds.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let t = text.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: u64 =
        num.parse().map_err(|_| format!("`{text}` is not a duration; write it like \"300s\", \"5m\" or \"500ms\""))?;
    let millis = match unit {
        "ms" => n,
        "" | "s" => n * 1000,
        "m" => n * 60_000,
        "h" => n * 3_600_000,
        "d" => n * 86_400_000,
        _ => {
            return Err(format!("`{text}` has an unknown unit `{unit}`; use ms, s, m, h or d"));
        }
    };
    Ok(Duration::from_millis(millis))
}

/// Formats a duration the way nginx and the profile write it: the largest unit that divides it.
pub fn format_duration(d: Duration) -> String {
    let ms = d.as_millis();
    for (unit, size) in [("d", 86_400_000), ("h", 3_600_000), ("m", 60_000), ("s", 1000)] {
        if ms != 0 && ms.is_multiple_of(size) {
            return format!("{}{unit}", ms / size);
        }
    }
    format!("{ms}ms")
}

/// A byte size written nginx-style: a number with an optional `k` or `m` suffix (either case).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Size(pub u64);

impl Size {
    pub fn parse(text: &str) -> Result<Size, String> {
        let t = text.trim();
        let (num, mult) = match t.chars().last() {
            Some('k' | 'K') => (&t[..t.len() - 1], 1024),
            Some('m' | 'M') => (&t[..t.len() - 1], 1024 * 1024),
            Some('g' | 'G') => (&t[..t.len() - 1], 1024 * 1024 * 1024),
            _ => (t, 1),
        };
        num.parse::<u64>()
            .map(|n| Size(n * mult))
            .map_err(|_| format!("`{text}` is not a size; write it like \"128k\" or \"50m\""))
    }
}

impl fmt::Display for Size {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const M: u64 = 1024 * 1024;
        match self.0 {
            0 => write!(f, "0"),
            n if n % M == 0 => write!(f, "{}m", n / M),
            n if n % 1024 == 0 => write!(f, "{}k", n / 1024),
            n => write!(f, "{n}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse_and_print_back() {
        assert_eq!(parse_duration("300s"), Ok(Duration::from_secs(300)));
        assert_eq!(parse_duration("5m"), Ok(Duration::from_secs(300)));
        assert_eq!(parse_duration("200ms"), Ok(Duration::from_millis(200)));
        assert_eq!(parse_duration("65"), Ok(Duration::from_secs(65)));
        assert_eq!(format_duration(Duration::from_secs(300)), "5m");
        assert_eq!(format_duration(Duration::from_secs(65)), "65s");
        assert_eq!(format_duration(Duration::from_millis(1500)), "1500ms");
        assert!(parse_duration("5 minutes").unwrap_err().contains("unknown unit"));
        assert!(parse_duration("soon").unwrap_err().contains("not a duration"));
    }

    #[test]
    fn sizes_follow_nginx_suffixes() {
        assert_eq!(Size::parse("128k"), Ok(Size(131_072)));
        assert_eq!(Size::parse("50M"), Ok(Size(52_428_800)));
        assert_eq!(Size::parse("512"), Ok(Size(512)));
        assert_eq!(Size(52_428_800).to_string(), "50m");
        assert!(Size::parse("lots").is_err());
    }
}
