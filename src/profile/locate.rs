//! Finding where a key sits in profile text, for error messages that name a line and column.

/// Line and column (1-based) of a byte offset.
pub fn line_col(source: &str, offset: usize) -> (usize, usize) {
    let before = &source[..offset.min(source.len())];
    let line = before.matches('\n').count() + 1;
    let col = before.rfind('\n').map_or(before.len(), |nl| before.len() - nl - 1) + 1;
    (line, col)
}

/// Line and column of `key` inside `[section]` (or the `nth` `[[section]]`), by a textual scan.
/// Good enough for hand-written profiles; `None` when the key is only a default.
pub fn key_position(source: &str, section: &str, nth: Option<usize>, key: &str) -> Option<(usize, usize)> {
    let mut in_section = false;
    let mut seen = 0usize;
    for (index, line) in source.lines().enumerate() {
        let t = line.trim();
        if t.starts_with('[') {
            let name = t.trim_start_matches('[').split(']').next().unwrap_or("").trim();
            in_section = name == section
                && match nth {
                    None => true,
                    Some(n) => {
                        seen += 1;
                        seen == n + 1
                    }
                };
            continue;
        }
        if in_section {
            let lhs = t.split('=').next().unwrap_or("").trim().trim_matches('"');
            if t.contains('=') && lhs == key {
                return Some((index + 1, line.len() - line.trim_start().len() + 1));
            }
        }
    }
    None
}

/// The key of the `key = value` line that holds byte `offset`, if that line is one.
pub fn key_at(source: &str, offset: usize) -> Option<&str> {
    let start = source[..offset.min(source.len())].rfind('\n').map_or(0, |nl| nl + 1);
    let line = source[start..].lines().next()?;
    let (key, _) = line.split_once('=')?;
    let key = key.trim().trim_matches('"');
    (!key.is_empty() && !key.starts_with('[')).then_some(key)
}

/// The candidate closest to `word` by edit distance, if it is close enough to be a typo.
pub fn closest<'a>(word: &str, candidates: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    candidates
        .into_iter()
        .map(|c| (strsim::levenshtein(word, c), c))
        .filter(|(d, c)| *d <= (c.len().max(word.len()) / 3).max(2))
        .min_by_key(|(d, _)| *d)
        .map(|(_, c)| c)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_keys_in_sections_and_array_tables() {
        let src = "[watch]\nsteal_warn = 5\n\n[[firewall.allow]]\nport = 22\n[[firewall.allow]]\n  port = 80\n";
        assert_eq!(key_position(src, "watch", None, "steal_warn"), Some((2, 1)));
        assert_eq!(key_position(src, "firewall.allow", Some(1), "port"), Some((7, 3)));
        assert_eq!(key_position(src, "watch", None, "window"), None);
        assert_eq!(line_col(src, 8), (2, 1));
        assert_eq!(key_at(src, 20), Some("steal_warn"));
        assert_eq!(key_at(src, 0), None);
    }

    #[test]
    fn suggests_only_near_misses() {
        let keys = ["steal_warn", "steal_clear", "interval"];
        assert_eq!(closest("stel_warn", keys), Some("steal_warn"));
        assert_eq!(closest("intervall", keys), Some("interval"));
        assert_eq!(closest("colour", keys), None);
    }
}
