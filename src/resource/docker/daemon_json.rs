//! daemon.json as data and as text: parsed, merged with the keys vakt owns, and edited so
//! that only the owned members are replaced or added; every other byte (the operator's key
//! order, indentation, spacing, line ends) stays as it was.

use std::ops::Range;

use serde::Serialize;
use serde_json::{Map, Value};

/// One top-level member: where its key (quotes included) and its value lie in the text.
#[derive(Debug)]
struct Member {
    key: String,
    key_span: Range<usize>,
    value: Range<usize>,
}

/// The top-level object: the offsets of its braces and its members in order.
#[derive(Debug)]
struct Layout {
    open: usize,
    close: usize,
    members: Vec<Member>,
}

fn skip_ws(b: &[u8], mut i: usize) -> usize {
    while b.get(i).is_some_and(|c| matches!(c, b' ' | b'\t' | b'\n' | b'\r')) {
        i += 1;
    }
    i
}

/// The end (one past the closing quote) of the string whose opening quote is at `i`.
fn string_end(b: &[u8], mut i: usize) -> Option<usize> {
    i += 1;
    while let Some(c) = b.get(i) {
        match c {
            b'\\' => i += 2,
            b'"' => return Some(i + 1),
            _ => i += 1,
        }
    }
    None
}

/// The end of the value that starts at `i`.
fn value_end(b: &[u8], i: usize) -> Option<usize> {
    match b.get(i)? {
        b'"' => string_end(b, i),
        b'{' | b'[' => {
            let mut depth = 0usize;
            let mut j = i;
            while let Some(c) = b.get(j) {
                match c {
                    b'"' => {
                        j = string_end(b, j)?;
                        continue;
                    }
                    b'{' | b'[' => depth += 1,
                    b'}' | b']' => {
                        depth = depth.checked_sub(1)?;
                        if depth == 0 {
                            return Some(j + 1);
                        }
                    }
                    _ => {}
                }
                j += 1;
            }
            None
        }
        _ => {
            let end = (i..b.len())
                .find(|&j| matches!(b[j], b',' | b'}' | b']' | b' ' | b'\t' | b'\n' | b'\r'))
                .unwrap_or(b.len());
            (end > i).then_some(end)
        }
    }
}

/// The members of the top-level object, or `None` where the text is not one.
fn layout(text: &str) -> Option<Layout> {
    let b = text.as_bytes();
    let open = skip_ws(b, 0);
    if b.get(open) != Some(&b'{') {
        return None;
    }
    let mut members = Vec::new();
    let mut i = skip_ws(b, open + 1);
    if b.get(i) == Some(&b'}') {
        return Some(Layout { open, close: i, members });
    }
    loop {
        if b.get(i) != Some(&b'"') {
            return None;
        }
        let key_end = string_end(b, i)?;
        let key: String = serde_json::from_str(text.get(i..key_end)?).ok()?;
        let colon = skip_ws(b, key_end);
        if b.get(colon) != Some(&b':') {
            return None;
        }
        let start = skip_ws(b, colon + 1);
        let end = value_end(b, start)?;
        members.push(Member { key, key_span: i..key_end, value: start..end });
        let next = skip_ws(b, end);
        match b.get(next)? {
            b',' => i = skip_ws(b, next + 1),
            b'}' => return Some(Layout { open, close: next, members }),
            _ => return None,
        }
    }
}

/// How the file lays out its members, learnt from its last one.
struct Style<'t> {
    /// What precedes a member's key: `"\n  "` in a pretty file, `" "` or `""` on one line.
    before_key: &'t str,
    /// Between key and value: `": "`, `":"`, ...
    colon: &'t str,
}

impl<'t> Style<'t> {
    /// The style of the last member; for an empty object, the common two-space pretty one.
    fn of(text: &'t str, l: &Layout) -> Style<'t> {
        match l.members.last() {
            Some(last) => {
                let before = &text[..last.key_span.start];
                let ws_start = before.trim_end_matches([' ', '\t', '\n', '\r']).len();
                Style { before_key: &before[ws_start..], colon: &text[last.key_span.end..last.value.start] }
            }
            None => Style { before_key: "\n  ", colon: ": " },
        }
    }

    /// The indentation of a member's line when members sit on lines of their own.
    fn indent(&self) -> Option<&'t str> {
        self.before_key.rfind('\n').map(|n| &self.before_key[n + 1..])
    }

    /// `value` as it should read in this file: compact on one line, else pretty-printed with
    /// the file's indentation unit, continuation lines under the member's own indentation.
    fn value(&self, value: &Value, line_indent: Option<&str>) -> String {
        let (Some(unit), Some(at)) = (self.indent().filter(|u| !u.is_empty()), line_indent) else {
            return value.to_string();
        };
        let mut out = Vec::new();
        let formatter = serde_json::ser::PrettyFormatter::with_indent(unit.as_bytes());
        let mut ser = serde_json::Serializer::with_formatter(&mut out, formatter);
        match value.serialize(&mut ser).ok().and_then(|()| String::from_utf8(out).ok()) {
            Some(pretty) => {
                let newline = if self.before_key.contains("\r\n") { "\r\n" } else { "\n" };
                pretty.replace('\n', &format!("{newline}{at}"))
            }
            None => value.to_string(),
        }
    }

    fn member(&self, key: &str, value: &Value) -> String {
        format!("{}{}{}", Value::from(key), self.colon, self.value(value, self.indent()))
    }
}

/// The indentation of the line `at` is on, when only whitespace precedes it there.
fn line_indent(text: &str, at: usize) -> Option<&str> {
    let line_start = text[..at].rfind('\n').map_or(0, |n| n + 1);
    let lead = &text[line_start..at];
    (line_start > 0 && lead.chars().all(|c| c == ' ' || c == '\t')).then_some(lead)
}

/// Parses daemon.json text; empty counts as `{}`. The error says where the JSON is broken.
pub fn parse_daemon_json(text: &str) -> Result<Map<String, Value>, String> {
    if text.trim().is_empty() {
        return Ok(Map::new());
    }
    match serde_json::from_str::<Value>(text) {
        Ok(Value::Object(map)) => Ok(map),
        Ok(_) => Err("the top level is not a JSON object".into()),
        Err(e) => Err(format!("invalid JSON at line {} column {}: {e}", e.line(), e.column())),
    }
}

/// The existing keys with the owned ones set: unowned keys keep their values.
pub fn merge(existing: &Map<String, Value>, owned: &Map<String, Value>) -> Map<String, Value> {
    let mut merged = existing.clone();
    for (k, v) in owned {
        merged.insert(k.clone(), v.clone());
    }
    merged
}

pub fn render(map: &Map<String, Value>) -> String {
    serde_json::to_string_pretty(map).map(|s| s + "\n").unwrap_or_default()
}

/// The new daemon.json: `text` (which parsed as `existing`) with only the owned members
/// replaced or added, their order and formatting kept. An empty `text` (a new file) gets the
/// merged map pretty-printed, and so would a text whose edit did not read back as the merged
/// map: that one is checked, never trusted.
pub fn rewrite(text: &str, existing: &Map<String, Value>, owned: &Map<String, Value>) -> String {
    let merged = merge(existing, owned);
    if !text.trim().is_empty()
        && let Some(edited) = edit(text, owned)
        && parse_daemon_json(&edited).as_ref() == Ok(&merged)
    {
        return edited;
    }
    render(&merged)
}

/// `text` (a daemon.json that parses) with the `owned` members set: a member whose value
/// differs gets the new value in place, a missing one is added after the last member in the
/// file's own style, and nothing else changes. `None` when the text is not a JSON object.
pub fn edit(text: &str, owned: &Map<String, Value>) -> Option<String> {
    let l = layout(text)?;
    let style = Style::of(text, &l);
    let mut edits: Vec<(Range<usize>, String)> = Vec::new();
    let mut added = Vec::new();
    for (key, want) in owned {
        let mut found = false;
        // Every occurrence of a duplicated key: dockerd reads the last, a reader the first.
        for m in l.members.iter().filter(|m| &m.key == key) {
            found = true;
            let now: Value = serde_json::from_str(&text[m.value.clone()]).ok()?;
            if &now != want {
                let indent = style.indent().and(line_indent(text, m.key_span.start));
                edits.push((m.value.clone(), style.value(want, indent)));
            }
        }
        if !found {
            added.push(style.member(key, want));
        }
    }
    if !added.is_empty() {
        match l.members.last() {
            Some(last) => {
                let text: String = added.iter().map(|m| format!(",{}{m}", style.before_key)).collect();
                edits.push((last.value.end..last.value.end, text));
            }
            None => {
                let inner: Vec<String> = added.iter().map(|m| format!("{}{m}", style.before_key)).collect();
                edits.push((l.open + 1..l.close, format!("{}\n", inner.join(","))));
            }
        }
    }
    // From the end backwards, so that each range still means what it meant; an insertion
    // right after a replaced value goes first.
    edits.sort_by_key(|(r, _)| std::cmp::Reverse((r.start, r.end)));
    let mut out = text.to_string();
    for (range, with) in edits {
        out.replace_range(range, &with);
    }
    Some(out)
}

#[cfg(test)]
mod tests {

    /// Found by the daemon_json fuzz target: a number too large for i64 is a float, which must
    /// read back bit for bit after vakt renders it (serde_json's `float_roundtrip`).
    #[test]
    fn a_huge_number_round_trips() {
        let existing = parse_daemon_json("{\"urivs\":-1088888888888888888888888}\n").expect("valid JSON");
        assert_eq!(parse_daemon_json(&render(&existing)).ok(), Some(existing));
    }

    use super::*;
    use serde_json::json;

    fn owned(v: Value) -> Map<String, Value> {
        v.as_object().cloned().expect("object")
    }

    #[test]
    fn unowned_keys_survive_the_merge() {
        let existing =
            parse_daemon_json(r#"{"log-driver": "journald", "storage-driver": "vfs", "x": [1, {"y": null}]}"#)
                .expect("json");
        let owned = json!({"storage-driver": "overlay2"}).as_object().cloned().expect("map");
        let merged = merge(&existing, &owned);
        assert_eq!(merged["log-driver"], "journald");
        assert_eq!(merged["x"], json!([1, {"y": null}]));
        assert_eq!(merged["storage-driver"], "overlay2");
    }

    #[test]
    fn broken_json_says_where() {
        assert!(parse_daemon_json("  \n").expect("empty is {}").is_empty());
        let e = parse_daemon_json("{\n  \"a\": 1,\n  \"b\": \n}").unwrap_err();
        assert!(e.contains("line 4 column 1"), "{e}");
        assert!(parse_daemon_json("[1]").unwrap_err().contains("not a JSON object"));
    }

    #[test]
    fn a_pretty_file_keeps_its_order_and_gets_new_keys_at_the_end() {
        let text = "{\n  \"storage-driver\": \"vfs\",\n  \"log-level\": \"warn\",\n  \"default-address-pools\": [{\"base\": \"10.201.0.0/16\", \"size\": 24}]\n}\n";
        let out = edit(text, &owned(json!({"storage-driver": "overlay2", "max-concurrent-downloads": 4})));
        assert_eq!(
            out.as_deref(),
            Some(
                "{\n  \"storage-driver\": \"overlay2\",\n  \"log-level\": \"warn\",\n  \"default-address-pools\": [{\"base\": \"10.201.0.0/16\", \"size\": 24}],\n  \"max-concurrent-downloads\": 4\n}\n"
            )
        );
    }

    #[test]
    fn one_line_files_stay_on_one_line() {
        let owned = owned(json!({"storage-driver": "overlay2", "log-opts": {"max-size": "10m"}}));
        assert_eq!(
            edit("{\"b\":1}", &owned).as_deref(),
            Some("{\"b\":1,\"log-opts\":{\"max-size\":\"10m\"},\"storage-driver\":\"overlay2\"}")
        );
        assert_eq!(
            edit("{ \"b\": 1 }\n", &owned).as_deref(),
            Some("{ \"b\": 1, \"log-opts\": {\"max-size\":\"10m\"}, \"storage-driver\": \"overlay2\" }\n")
        );
    }

    #[test]
    fn an_empty_object_gets_a_pretty_body() {
        let owned = owned(json!({"storage-driver": "overlay2"}));
        assert_eq!(edit("{}\n", &owned).as_deref(), Some("{\n  \"storage-driver\": \"overlay2\"\n}\n"));
        assert_eq!(edit(" { \n } ", &owned).as_deref(), Some(" {\n  \"storage-driver\": \"overlay2\"\n} "));
    }

    #[test]
    fn tabs_crlf_and_nested_values_follow_the_file() {
        let text = "{\r\n\t\"hosts\": [\r\n\t\t\"fd://\"\r\n\t],\r\n\t\"debug\": false\r\n}\r\n";
        let out = edit(text, &owned(json!({"debug": true, "log-opts": {"max-file": "3"}}))).expect("edits");
        assert_eq!(
            out,
            "{\r\n\t\"hosts\": [\r\n\t\t\"fd://\"\r\n\t],\r\n\t\"debug\": true,\r\n\t\"log-opts\": {\r\n\t\t\"max-file\": \"3\"\r\n\t}\r\n}\r\n"
        );
        assert_eq!(serde_json::from_str::<Value>(&out).expect("json")["log-opts"]["max-file"], "3");
    }

    #[test]
    fn an_unchanged_file_comes_back_byte_for_byte() {
        let text = "{ \"storage-driver\" :\"overlay2\",\n\n   \"x\": [1,2] }";
        assert_eq!(edit(text, &owned(json!({"storage-driver": "overlay2"}))).as_deref(), Some(text));
    }

    #[test]
    fn escaped_keys_and_duplicates_are_recognised() {
        let text = "{\"storage\\u002ddriver\": \"vfs\", \"a\": \"}\\\"{\", \"storage-driver\": \"btrfs\"}";
        let out = edit(text, &owned(json!({"storage-driver": "overlay2"}))).expect("edits");
        assert_eq!(
            out,
            "{\"storage\\u002ddriver\": \"overlay2\", \"a\": \"}\\\"{\", \"storage-driver\": \"overlay2\"}"
        );
        assert!(edit("[1]", &Map::new()).is_none());
    }
}

#[cfg(test)]
mod properties {
    use super::*;
    use proptest::prelude::*;

    fn json_value() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(Value::from),
            "[a-z0-9 ./{}\\[\\]\",:\\\\-]{0,12}".prop_map(Value::String),
        ];
        leaf.prop_recursive(3, 16, 4, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
                prop::collection::btree_map("[a-z-]{1,8}", inner, 0..4)
                    .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }

    fn map() -> impl Strategy<Value = Map<String, Value>> {
        prop::collection::btree_map("[a-z-]{1,6}", json_value(), 0..6).prop_map(|m| m.into_iter().collect())
    }

    /// The map written the ways operators write it: compact, pretty with two or four spaces
    /// or tabs, with or without a final newline.
    fn written(map: &Map<String, Value>, style: u8) -> String {
        let unit: &[u8] = match style % 4 {
            0 => return serde_json::to_string(map).expect("json"),
            1 => b"  ",
            2 => b"    ",
            _ => b"\t",
        };
        let mut out = Vec::new();
        let mut ser =
            serde_json::Serializer::with_formatter(&mut out, serde_json::ser::PrettyFormatter::with_indent(unit));
        map.serialize(&mut ser).expect("json");
        String::from_utf8(out).expect("utf-8") + if style >= 4 { "\n" } else { "" }
    }

    proptest! {
        #[test]
        fn unowned_keys_always_survive(existing in map(), owned in map()) {
            let merged = merge(&existing, &owned);
            for (k, v) in &existing {
                if !owned.contains_key(k) {
                    prop_assert_eq!(merged.get(k), Some(v));
                }
            }
            for (k, v) in &owned {
                prop_assert_eq!(merged.get(k), Some(v));
            }
            prop_assert_eq!(merged.len(), existing.keys().chain(owned.keys()).collect::<std::collections::BTreeSet<_>>().len());
            // What is written parses back to the same map.
            prop_assert_eq!(parse_daemon_json(&render(&merged)).ok(), Some(merged));
        }

        #[test]
        fn only_owned_members_change(existing in map(), owned in map(), style in 0u8..8) {
            let text = written(&existing, style);
            let out = edit(&text, &owned).expect("an object is always edited");
            let mut merged = existing.clone();
            merged.extend(owned.clone());
            prop_assert_eq!(serde_json::from_str::<Value>(&out).ok(), Some(Value::Object(merged)));
            // Every member vakt does not own reads exactly as before, in the same order.
            let slices = |t: &str| -> Vec<String> {
                let l = layout(t).expect("layout");
                l.members.iter().filter(|m| !owned.contains_key(&m.key)).map(|m| t[m.key_span.start..m.value.end].to_string()).collect()
            };
            prop_assert_eq!(slices(&text), slices(&out));
            if owned.iter().all(|(k, v)| existing.get(k) == Some(v)) {
                prop_assert_eq!(out, text);
            }
        }
    }
}
