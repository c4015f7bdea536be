//! The one escaper for text vakt did not write itself: names and output that come from the
//! host, the engine or another tool (process and container names, certificate names, a
//! command's error output), and values quoted back from the profile. Control characters
//! (newlines, carriage returns, escape sequences, DEL and the C1 range) are shown escaped
//! (`\n`, `\u{1b}`), so nothing read can start a line of its own in a report, move the
//! terminal's cursor, or end a field in journald, JUnit or Prometheus output.

/// `text` with every control character written as its Rust escape.
pub fn controls(text: &str) -> String {
    if !text.chars().any(char::is_control) {
        return text.to_string();
    }
    text.chars().flat_map(|c| if c.is_control() { c.escape_default().collect() } else { vec![c] }).collect()
}

/// `text` as one word for sh, quoted only when it needs to be: single quotes, with each
/// embedded `'` written as `'\''`.
pub fn sh_word(text: &str) -> String {
    let plain = !text.is_empty() && text.chars().all(|c| c.is_ascii_alphanumeric() || "-_./:=@%+,".contains(c));
    if plain { text.to_string() } else { sh_quoted(text) }
}

/// `text` in single quotes for sh, each embedded `'` written as `'\''`.
pub fn sh_quoted(text: &str) -> String {
    format!("'{}'", text.replace('\'', "'\\''"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn nothing_escaped_holds_a_control_character(text in "\\PC*|[\\x00-\\x1f\\x7f\\u{80}-\\u{9f}a-z]*") {
            let out = controls(&text);
            prop_assert!(!out.chars().any(char::is_control), "{out:?}");
            // Text without control characters is left as it is.
            if !text.chars().any(char::is_control) {
                prop_assert_eq!(out, text);
            }
        }
    }

    #[test]
    fn sh_words_survive_quotes() {
        assert_eq!(sh_word("ssh"), "ssh");
        assert_eq!(sh_word("web server"), "'web server'");
        assert_eq!(sh_word("it's"), "'it'\\''s'");
        assert_eq!(sh_word(""), "''");
    }

    #[test]
    fn a_forged_line_stays_on_its_own() {
        assert_eq!(controls("x\nwould run: ok"), "x\\nwould run: ok");
        assert_eq!(controls("\u{1b}[2Jgone"), "\\u{1b}[2Jgone");
    }
}
