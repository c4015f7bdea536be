//! `nginx -t`'s verdicts of one run, by everything a verdict came from. `nginx -t` is the
//! dearest command of the nginx resource (5–15 ms of CPU) and a first apply asked it three
//! times of one unchanged config: observed ahead, observed again after the firewall changed,
//! and verified after the write. A verdict is reused only while its inputs are the same: the
//! config rendered from the profile, every file of the live config directory it is staged
//! beside (links followed, each by inode, size, mtime and ctime, a link by its target too, and
//! a directory by its listing), every absolute path the rendered config names (certificates, includes) and the
//! nginx binary. A change of any of them, by vakt (a package installed, a certificate obtained)
//! or by anyone else, asks nginx again. Kept in memory, for the run only.

use std::collections::HashMap;
use std::fmt::Write;
use std::path::Path;
use std::sync::{Mutex, PoisonError};

use super::Invalid;

/// nginx -t's warnings, or why the config was not accepted.
pub type Verdict = Result<Vec<String>, Invalid>;

/// How deep the config directory is walked (`/etc/nginx/sites-enabled/x` is 2).
const DEPTH: usize = 6;

#[derive(Debug, Default)]
pub struct Verdicts(Mutex<HashMap<String, Verdict>>);

impl Verdicts {
    /// The verdict on `inputs`: kept, or asked of `nginx` and kept when nginx accepted the
    /// config. A refusal, or nginx -t that could not run (a timeout on a busy host), is asked
    /// again: what made it fail may be outside the inputs (a certificate an operator's site
    /// names, which a package installed meanwhile).
    pub fn get(&self, inputs: String, nginx: impl FnOnce() -> Verdict) -> Verdict {
        if let Some(v) = self.0.lock().unwrap_or_else(PoisonError::into_inner).get(&inputs) {
            return v.clone();
        }
        let verdict = nginx();
        if verdict.is_ok() {
            self.0.lock().unwrap_or_else(PoisonError::into_inner).insert(inputs, verdict.clone());
        }
        verdict
    }
}

/// What a verdict on `rendered`, staged beside `dir`'s entries but `live` and `without`, comes
/// from (see the module's text).
pub fn inputs(dir: &Path, live: &Path, without: Option<&Path>, rendered: &str) -> String {
    let mut out = String::with_capacity(rendered.len() + 4096);
    out.push_str(rendered);
    out.push_str("\n--\n");
    // vakt's own backups and temporary files beside the config are no input of nginx's.
    let own = |p: &Path| {
        let name = p.file_name().unwrap_or_default().to_string_lossy();
        name.ends_with(".vakt-prev") || name.starts_with(".vakt-")
    };
    let skip = |p: &Path| p == live || Some(p) == without || own(p);
    walk(dir, dir, DEPTH, &skip, &mut out);
    out.push_str("--\n");
    // A directory the config names (`location /`, a webroot) is no file nginx -t reads.
    for path in rendered.split_whitespace().map(|w| w.trim_end_matches(';')).filter(|w| w.starts_with('/')) {
        if Path::new(path).is_dir() {
            let _ = writeln!(out, "{path}/");
        } else {
            stamp(Path::new(path), path, &mut out);
        }
    }
    match crate::runner::find_on_path("nginx") {
        Some(binary) => stamp(&binary, "nginx", &mut out),
        None => out.push_str("nginx not found\n"),
    }
    out
}

fn walk(root: &Path, dir: &Path, depth: usize, skip: &dyn Fn(&Path) -> bool, out: &mut String) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        let _ = writeln!(out, "{} unreadable", dir.display());
        return;
    };
    let mut paths: Vec<_> = entries.filter_map(|e| e.ok().map(|e| e.path())).filter(|p| !skip(p)).collect();
    paths.sort();
    for path in paths {
        let shown = path.strip_prefix(root).unwrap_or(&path).display().to_string();
        if let Ok(target) = std::fs::read_link(&path) {
            let _ = writeln!(out, "{shown} -> {}", target.display());
        }
        // A directory is its listing (whose change moves its own mtime, which is left out so
        // that the stage without a link equals the directory after its removal); past the
        // depth, its metadata.
        if depth > 1 && path.is_dir() {
            let _ = writeln!(out, "{shown}/");
            walk(root, &path, depth - 1, skip, out);
        } else {
            stamp(&path, &shown, out);
        }
    }
}

/// One line: `shown` and the metadata of `path`, links followed; an absent one too.
fn stamp(path: &Path, shown: &str, out: &mut String) {
    let _ = writeln!(out, "{shown} {}", crate::fsutil::stamp(path));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn any_change_of_what_nginx_reads_is_a_new_key() {
        let t = tempfile::tempdir().expect("tmp");
        let dir = t.path().join("nginx");
        std::fs::create_dir_all(dir.join("sites-enabled")).expect("mkdir");
        std::fs::write(dir.join("mime.types"), "types {}\n").expect("write");
        std::fs::write(t.path().join("site"), "server {}\n").expect("write");
        std::os::unix::fs::symlink(t.path().join("site"), dir.join("sites-enabled/site")).expect("link");
        let live = dir.join("nginx.conf");
        let cert = t.path().join("cert.pem");
        std::fs::write(&cert, "a").expect("write");
        let rendered = format!("ssl_certificate {};\n", cert.display());
        let key = || inputs(&dir, &live, None, &rendered);
        let first = key();
        assert_eq!(first, key(), "the same inputs, the same key");

        // The live config itself is replaced by the rendered one: its edits do not count.
        std::fs::write(&live, "events {}\n").expect("write");
        assert_eq!(first, key());
        // A site's content, reached through a link.
        std::fs::write(t.path().join("site"), "server { listen 81; }\n").expect("write");
        let edited = key();
        assert_ne!(first, edited, "an edited site");
        // A certificate the config names.
        std::fs::write(&cert, "b").expect("write");
        let renewed = key();
        assert_ne!(edited, renewed, "a new certificate");
        // vakt's backup and temporary files beside the config, and a directory the config
        // names (a webroot), are no input.
        std::fs::write(dir.join("nginx.conf.vakt-prev"), "old\n").expect("write");
        std::fs::write(dir.join(".vakt-tmp1"), "partial\n").expect("write");
        let webroot = format!("{rendered}root {};\n", t.path().display());
        let with_root = inputs(&dir, &live, None, &webroot);
        std::fs::write(t.path().join("new-in-webroot"), "x").expect("write");
        assert_eq!(with_root, inputs(&dir, &live, None, &webroot), "a directory named in the config");
        assert_eq!(renewed, key(), "backups and temporary files");
        // A new file in the directory, and the rendered config.
        std::fs::write(dir.join("sites-enabled/other"), "server {}\n").expect("write");
        assert_ne!(renewed, key(), "a new site");
        assert_ne!(key(), inputs(&dir, &live, None, "events {}\n"), "another rendered config");
        // A site that the stage leaves out (the placeholder apply removes) does not count.
        let other = dir.join("sites-enabled/other");
        let without = inputs(&dir, &live, Some(&other), &rendered);
        std::fs::remove_file(&other).expect("rm");
        assert_eq!(without, key(), "the stage without the link is the stage after its removal");
    }

    #[test]
    fn a_verdict_is_asked_once_per_inputs() {
        let verdicts = Verdicts::default();
        let asked = std::cell::Cell::new(0);
        let ask = || {
            asked.set(asked.get() + 1);
            Ok(vec!["warn".to_string()])
        };
        assert!(verdicts.get("a".into(), ask).is_ok());
        assert!(verdicts.get("a".into(), ask).is_ok());
        assert!(verdicts.get("b".into(), ask).is_ok());
        assert_eq!(asked.get(), 2);
        let not_run = || {
            asked.set(asked.get() + 1);
            Err(Invalid::NotRun("timed out".into()))
        };
        assert!(verdicts.get("c".into(), not_run).is_err());
        assert!(verdicts.get("c".into(), not_run).is_err());
        assert_eq!(asked.get(), 4, "a verdict nginx could not give is asked again");
        let refused = || {
            asked.set(asked.get() + 1);
            Err(Invalid::Rejected("no such file".into()))
        };
        assert!(verdicts.get("d".into(), refused).is_err());
        assert!(verdicts.get("d".into(), refused).is_err());
        assert_eq!(asked.get(), 6, "a refusal is asked again");
    }
}
