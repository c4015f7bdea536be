//! The module import graph reads in one direction: the profile at the bottom, then
//! the host, the resources, the engine and reports, and the commands and the watchdog on top.
//! A module may import its own layer or any layer below, never one above, and the top-level
//! modules import each other without a circle. Read from the `crate::` paths of each file's
//! code (its `#[cfg(test)]` part left out).

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// Layer of each top-level module, lowest first; what each may import is said above.
const LAYERS: &[(&str, u8)] = &[
    // Leaves: no import of the crate's own modules but each other.
    ("error", 0),
    ("escape", 0),
    ("exposition", 0),
    ("failpoint", 0),
    ("logging", 0),
    ("memo", 0),
    ("cli", 0),
    ("rooted", 0),
    ("secret", 0),
    ("words", 0),
    // The validated profile: what is wanted.
    ("profile", 1),
    // How vakt touches the machine: commands, files, the Engine API.
    ("runner", 2),
    ("fsutil", 2),
    ("engine_api", 2),
    ("netlink", 2),
    ("netfilter", 2),
    // The machine, through those.
    ("host", 3),
    ("sockets", 3),
    // One module per managed thing, and the rendered-output invariants they hold.
    ("resource", 4),
    ("invariants", 4),
    // Running resources, and reporting what they found.
    ("engine", 5),
    ("report", 5),
    // What the operator runs.
    ("cmd", 6),
    ("watch", 6),
];

fn layer(module: &str) -> u8 {
    LAYERS.iter().find(|(m, _)| *m == module).map(|(_, l)| *l).unwrap_or_else(|| panic!("module {module} has no layer"))
}

/// The top-level module a source file belongs to (`src/resource/nginx/tls.rs` → `resource`).
fn owner(path: &Path) -> Option<String> {
    let rel = path.strip_prefix(concat!(env!("CARGO_MANIFEST_DIR"), "/src")).ok()?;
    let first = rel.components().next()?.as_os_str().to_string_lossy().into_owned();
    let name = first.trim_end_matches(".rs").to_string();
    (name != "main" && name != "lib").then_some(name)
}

fn files(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
    for e in std::fs::read_dir(dir).expect("src").flatten() {
        let p = e.path();
        if p.is_dir() {
            files(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

/// Every `crate::NAME` the file's non-test code names.
fn imports(text: &str) -> BTreeSet<String> {
    let code = text.split("#[cfg(test)]").next().unwrap_or("");
    let mut out = BTreeSet::new();
    for (i, _) in code.match_indices("crate::") {
        let rest = &code[i + "crate::".len()..];
        let name: String = rest.chars().take_while(|c| c.is_ascii_alphanumeric() || *c == '_').collect();
        if !name.is_empty() {
            out.insert(name);
        }
    }
    // `use crate::{a, b::c}`
    for (i, _) in code.match_indices("crate::{") {
        let group = &code[i + "crate::{".len()..];
        let group = &group[..group.find('}').unwrap_or(0)];
        for item in group.split(',') {
            let name: String = item.trim().chars().take_while(|c| c.is_ascii_alphanumeric() || *c == '_').collect();
            if !name.is_empty() {
                out.insert(name);
            }
        }
    }
    out
}

#[test]
fn imports_run_from_the_profile_up_to_the_commands_with_no_circle() {
    let mut all = Vec::new();
    files(Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/src")), &mut all);
    let mut graph: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let mut upward = Vec::new();
    for path in &all {
        let Some(from) = owner(path) else { continue };
        // A file named tests.rs is a module's test code.
        if path.file_name().is_some_and(|n| n == "tests.rs") {
            continue;
        }
        let text = std::fs::read_to_string(path).expect("source");
        for to in imports(&text).into_iter().filter(|m| *m != from) {
            if layer(&to) > layer(&from) {
                upward.push(format!(
                    "{}: {from} (layer {}) imports {to} (layer {})",
                    path.display(),
                    layer(&from),
                    layer(&to)
                ));
            }
            graph.entry(from.clone()).or_default().insert(to);
        }
    }
    assert!(upward.is_empty(), "imports from a lower layer to a higher one:\n{}", upward.join("\n"));
    // No circle among the top-level modules (depth-first search for a back edge).
    fn visit(
        m: &str,
        graph: &BTreeMap<String, BTreeSet<String>>,
        path: &mut Vec<String>,
        done: &mut BTreeSet<String>,
    ) -> Option<Vec<String>> {
        if let Some(at) = path.iter().position(|p| p == m) {
            let mut circle = path[at..].to_vec();
            circle.push(m.to_string());
            return Some(circle);
        }
        if done.contains(m) {
            return None;
        }
        path.push(m.to_string());
        for next in graph.get(m).into_iter().flatten() {
            if let Some(c) = visit(next, graph, path, done) {
                return Some(c);
            }
        }
        path.pop();
        done.insert(m.to_string());
        None
    }
    let mut done = BTreeSet::new();
    for m in graph.keys() {
        let circle = visit(m, &graph, &mut Vec::new(), &mut done);
        assert!(circle.is_none(), "a circle of imports: {}", circle.unwrap_or_default().join(" → "));
    }
}

#[test]
fn the_import_reader_sees_grouped_and_inline_paths() {
    let text = "use crate::{escape, profile::Proto};\nfn f() { crate::host::under(); }\n#[cfg(test)]\nmod t { use crate::cmd; }\n";
    let got: Vec<String> = imports(text).into_iter().collect();
    assert_eq!(got, ["escape", "host", "profile"]);
}
