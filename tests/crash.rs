//! Crash safety: `vakt apply` killed with SIGKILL at every managed-file write (before the
//! temp file is written, before and after each rename, after the backup) leaves every managed
//! file either its old or its new content, byte for byte; a rerun converges and a check
//! passes. Needs the test-only `failpoints` feature (tests/run.sh enables it).
#![cfg(feature = "failpoints")]

mod common;

use std::collections::BTreeMap;
use std::os::unix::process::ExitStatusExt;
use std::path::Path;

use common::*;

const PROFILE: &str = "[docker]\nrestart = false\n[docker.daemon]\nlog-level = \"info\"\n\
[nginx]\nlisten = \"127.0.0.1:18088\"\n\
[tuning]\nio_scheduler = \"keep\"\n[tuning.sysctl]\n\"vm.swappiness\" = 10\n";

const MANAGED: &[&str] =
    &["etc/docker/daemon.json", "etc/nginx/nginx.conf", "etc/sysctl.d/60-vakt.conf", "proc/sys/vm/swappiness"];

/// A host tree with an old version of every managed file.
fn old_tree() -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("tempdir");
    let w = |rel: &str, text: &str| write_file(dir.path(), rel, text);
    w("etc/docker/daemon.json", "{\n  \"log-level\": \"warn\",\n  \"storage-driver\": \"vfs\"\n}\n");
    w("etc/nginx/nginx.conf", "# an operator's old config\nevents {}\n");
    std::fs::copy("/etc/nginx/mime.types", dir.path().join("etc/nginx/mime.types")).expect("mime.types");
    w("etc/sysctl.d/60-vakt.conf", "vm.swappiness = 60\n");
    w("proc/sys/vm/swappiness", "60\n");
    w("profile.toml", PROFILE);
    dir
}

/// The managed files, with the tree's own path (it names the profile in nginx.conf's header)
/// replaced so that trees compare.
fn contents(root: &Path) -> BTreeMap<&'static str, String> {
    let own = root.display().to_string();
    MANAGED
        .iter()
        .map(|m| (*m, std::fs::read_to_string(root.join(m)).unwrap_or_default().replace(&own, "<root>")))
        .collect()
}

fn apply(root: &Path, failpoint: Option<&str>) -> std::process::ExitStatus {
    let mut c = vakt();
    c.arg("--root").arg(root).args(["apply", "-q", "-p"]).arg(root.join("profile.toml"));
    if let Some(f) = failpoint {
        c.env("VAKT_FAILPOINT", f);
    }
    c.output().expect("vakt runs").status
}

#[test]
fn sigkill_at_every_write_leaves_old_or_new_files() {
    if !require("nginx (for nginx -t)", has("nginx")) {
        return;
    }
    let reference = old_tree();
    let old = contents(reference.path());
    apply(reference.path(), None);
    let new = contents(reference.path());
    for m in MANAGED {
        assert_ne!(old[m], new[m], "{m} changes in a full apply");
    }

    let mut kills = 0;
    for point in ["write-before-temp", "write-before-rename", "write-after-rename", "write-after-backup"] {
        for nth in 1..=6 {
            let tree = old_tree();
            let spec = format!("{point}#{nth}");
            let status = apply(tree.path(), Some(&spec));
            if status.signal() != Some(9) {
                break; // fewer than `nth` writes reach this point
            }
            kills += 1;
            for (m, now) in contents(tree.path()) {
                assert!(now == old[m] || now == new[m], "{spec}: {m} is neither old nor new:\n{now}");
            }
            let rerun = apply(tree.path(), None);
            assert_ne!(rerun.signal(), Some(9));
            assert_eq!(contents(tree.path()), new, "{spec}: a rerun converges");
            let check = run(vakt()
                .arg("--root")
                .arg(tree.path())
                .args(["check", "--format", "json", "-p"])
                .arg(tree.path().join("profile.toml")));
            let bad: Vec<_> =
                statuses(&json(&check)).into_iter().filter(|(_, s)| s == "drift" || s == "failed").collect();
            assert!(bad.is_empty(), "{spec}: check after the rerun: {bad:?}");
        }
    }
    assert!(kills >= 12, "killed at {kills} points");
}

#[test]
fn a_second_apply_waits_for_the_first() {
    let tree = old_tree();
    let profile = tree.path().join("profile.toml");
    let mut first = vakt()
        .arg("--root")
        .arg(tree.path())
        .args(["apply", "-q", "--only", "tuning", "-p"])
        .arg(&profile)
        .env("VAKT_FAILPOINT", "apply-locked:sleep=1500")
        .stdout(std::process::Stdio::null())
        .spawn()
        .expect("first apply");
    std::thread::sleep(std::time::Duration::from_millis(400));
    let second = run(vakt().arg("--root").arg(tree.path()).args(["apply", "--only", "tuning", "-p"]).arg(&profile));
    let _ = first.wait();
    assert!(
        second.stderr.contains("another `vakt apply` holds") && second.stderr.contains("waiting"),
        "{}",
        second.stderr
    );
    assert_eq!(second.code, 0, "it ran after the first finished: {}", second.stdout);
    assert!(second.stdout.contains("ok       tuning.sysctl.vm.swappiness"), "{}", second.stdout);
}
