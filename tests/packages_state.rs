//! The packages resource against existing dpkg state: a copy of this machine's real
//! dpkg database under a `--root` tree, put into a hold or an interrupted installation by the
//! real dpkg and apt-mark, then checked and applied by the built binary.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::*;

fn ready() -> bool {
    require(
        "root, dpkg, dpkg-deb, dpkg-query and apt-mark",
        is_root() && has("dpkg") && has("dpkg-deb") && has("dpkg-query") && has("apt-mark"),
    )
}

fn sh(cmd: &mut Command) -> Run {
    let out = run(cmd);
    assert_eq!(out.code, 0, "{:?}: {}{}", cmd, out.stdout, out.stderr);
    out
}

/// A host tree whose dpkg database is a copy of this machine's (status, architectures and the
/// file lists dpkg reads before it installs anything), for the real tools to change.
fn tree_with_dpkg_copy() -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().expect("tempdir");
    let admin = dir.path().join("var/lib/dpkg");
    for sub in ["updates", "triggers"] {
        std::fs::create_dir_all(admin.join(sub)).expect("mkdir");
    }
    sh(Command::new("cp").arg("-a").arg("/var/lib/dpkg/info").arg(&admin));
    for f in ["status", "arch"] {
        let from = Path::new("/var/lib/dpkg").join(f);
        if from.exists() {
            std::fs::copy(&from, admin.join(f)).expect("copy");
        }
    }
    (dir, admin)
}

fn abbrev(admin: &Path, package: &str) -> String {
    let out = run(Command::new("dpkg-query").arg(format!("--admindir={}", admin.display())).args([
        "-W",
        "-f=${db:Status-Abbrev}",
        package,
    ]));
    out.stdout.trim_end().to_string()
}

fn profile(root: &Path, packages: &[&str]) -> PathBuf {
    let p = root.join("p.toml");
    let list: Vec<String> = packages.iter().map(|n| format!("\"{n}\"")).collect();
    std::fs::write(&p, format!("[packages]\ninstall = [{}]\nupdate = false\n", list.join(", "))).expect("profile");
    p
}

fn vakt_on(root: &Path, args: &[&str]) -> Run {
    run(vakt().arg("--root").arg(root).args(args))
}

/// The report's `commands` (every command vakt ran) observed dpkg and ran no apt-get.
fn assert_no_apt_get(report: &serde_json::Value) {
    let commands: Vec<&str> = report["commands"].as_array().into_iter().flatten().filter_map(|c| c.as_str()).collect();
    assert!(commands.iter().any(|c| c.contains("dpkg-query")), "commands: {commands:?}");
    assert!(!commands.iter().any(|c| c.contains("apt-get")), "apt-get ran: {commands:?}");
}

/// A package that dpkg unpacks into the tree; its configuration fails when `postinst_fails`.
fn build_deb(dir: &Path, name: &str, postinst_fails: bool) -> PathBuf {
    let src = dir.join(format!("{name}-src"));
    write_file(&src, &format!("usr/share/doc/{name}/README"), "test package\n");
    write_file(
        &src,
        "DEBIAN/control",
        &format!(
            "Package: {name}\nVersion: 1.0\nArchitecture: all\nMaintainer: vakt tests <tests@invalid>\nDescription: vakt test package\n"
        ),
    );
    if postinst_fails {
        write_file(&src, "DEBIAN/postinst", "#!/bin/sh\nexit 1\n");
        sh(Command::new("chmod").arg("755").arg(src.join("DEBIAN/postinst")));
    }
    let deb = dir.join(format!("{name}.deb"));
    sh(Command::new("dpkg-deb").args(["--root-owner-group", "-b"]).arg(&src).arg(&deb));
    deb
}

#[test]
fn a_held_package_is_installed_and_shown_as_held_and_apply_runs_nothing() {
    if !ready() {
        return;
    }
    let (dir, admin) = tree_with_dpkg_copy();
    let host_before = abbrev(Path::new("/var/lib/dpkg"), "dpkg");
    // apt-mark as an operator runs it, pointed at the copy.
    sh(Command::new("apt-mark")
        .arg(format!("-oDir::State::status={}", admin.join("status").display()))
        .arg(format!("-oDPkg::Options::=--admindir={}", admin.display()))
        .args(["hold", "dpkg"]));
    assert_eq!(abbrev(&admin, "dpkg"), "hi", "the copy holds dpkg");
    assert_eq!(abbrev(Path::new("/var/lib/dpkg"), "dpkg"), host_before, "this machine's selection untouched");

    let p = profile(dir.path(), &["dpkg"]);
    let p = p.to_str().expect("utf-8");
    let check = vakt_on(dir.path(), &["check", "--only", "packages", "--format", "json", "-p", p]);
    assert_eq!(check.code, 0, "a held package is no drift:\n{}{}", check.stdout, check.stderr);
    let report = json(&check);
    assert_eq!(status_of(&report, "packages.dpkg"), "ok");
    assert!(evidence(&report, "packages.dpkg").starts_with("held (apt-mark hold)"), "{}", check.stdout);

    let text = vakt_on(dir.path(), &["check", "--only", "packages", "-v", "-p", p]);
    assert!(text.stdout.contains("held (apt-mark hold)"), "the hold is shown to the operator:\n{}", text.stdout);

    let apply = vakt_on(dir.path(), &["apply", "--only", "packages", "--format", "json", "-p", p]);
    assert_eq!(apply.code, 0, "{}{}", apply.stdout, apply.stderr);
    let report = json(&apply);
    assert_no_apt_get(&report);
    assert_eq!(abbrev(&admin, "dpkg"), "hi", "the hold stays");
}

#[test]
fn an_interrupted_installation_names_dpkg_configure_and_apply_never_runs_apt_get() {
    if !ready() {
        return;
    }
    let (dir, admin) = tree_with_dpkg_copy();
    let root = dir.path().display().to_string();
    // The real dpkg leaves these states: a configuration that fails (iF) and an unpack that
    // was never configured (iU). Maintainer scripts run outside the tree; this one only fails.
    let broken = build_deb(dir.path(), "vakt-test-half-configured", true);
    let out =
        run(Command::new("dpkg").arg(format!("--root={root}")).arg("--force-script-chrootless").arg("-i").arg(&broken));
    assert_eq!(out.code, 1, "the failing postinst stops dpkg: {}", out.stderr);
    let unpacked = build_deb(dir.path(), "vakt-test-unpacked", false);
    sh(Command::new("dpkg").arg(format!("--root={root}")).arg("--unpack").arg(&unpacked));
    assert_eq!(abbrev(&admin, "vakt-test-half-configured"), "iF");
    assert_eq!(abbrev(&admin, "vakt-test-unpacked"), "iU");
    assert!(
        run(Command::new("dpkg-query").args(["-W", "vakt-test-half-configured"])).code != 0,
        "this machine's dpkg database untouched"
    );

    let names = ["dpkg", "vakt-test-half-configured", "vakt-test-unpacked", "vakt-test-never-installed"];
    let p = profile(dir.path(), &names);
    let p = p.to_str().expect("utf-8");
    let check = vakt_on(dir.path(), &["check", "--only", "packages", "-p", p]);
    assert_eq!(check.code, 1, "{}{}", check.stdout, check.stderr);
    for line in [
        "dpkg status `iF`: half-configured; an installation was interrupted",
        "dpkg status `iU`: unpacked but not configured; an installation was interrupted",
        "run `dpkg --configure -a` as root to finish it, then run vakt again",
        "vakt installs it once the interrupted installation above is finished",
    ] {
        assert!(check.stdout.contains(line), "check says {line:?}:\n{}", check.stdout);
    }
    assert!(!check.stdout.contains("would run"), "check promises no apt-get:\n{}", check.stdout);

    let apply = vakt_on(dir.path(), &["apply", "--only", "packages", "--format", "json", "-p", p]);
    assert_eq!(apply.code, 1, "{}{}", apply.stdout, apply.stderr);
    let report = json(&apply);
    assert_no_apt_get(&report);
    assert_eq!(
        statuses(&report),
        vec![
            ("packages.dpkg".to_string(), "ok".to_string()),
            ("packages.vakt-test-half-configured".to_string(), "failed".to_string()),
            ("packages.vakt-test-unpacked".to_string(), "failed".to_string()),
            ("packages.vakt-test-never-installed".to_string(), "failed".to_string()),
        ]
    );
    assert_eq!(abbrev(&admin, "vakt-test-half-configured"), "iF", "vakt changed nothing in dpkg");
}
