//! `vakt apply --confirm` and `vakt confirm` (issue 26) against the real ufw and netfilter in
//! a private namespace: ufw's files and the kernel's rules come back exactly, confirming keeps
//! the change, a second apply waits, and both commands can run twice.
//!
//! There is no systemd in the namespace. Stand-ins for `systemd-run` and `systemctl`, first on
//! PATH (vakt has no test switch of its own), record what vakt asks of systemd and succeed (or
//! fail, to prove the apply is then refused); the test then runs the armed command itself, as
//! systemd would at the deadline. The VM test (tests/vm/guest.sh) lets real systemd fire it.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use common::netns::{ARTICLE as BEFORE, UfwSandbox};
use common::*;

fn ready() -> bool {
    require("root", is_root()) && require("ufw and iptables", has("ufw") && has("iptables-save") && has("ip"))
}

/// Before: the article's rules (`ARTICLE`). The confirmed change prunes 8080 and 2377, rejects
/// instead of denying, and writes vakt's published-ports block into after.rules (a new
/// after.rules.vakt-prev).
const CHANGE: &str = "[firewall]
prune = true
incoming = \"reject\"
published_ports = \"profile\"
[[firewall.allow]]
port = 22
comment = \"ssh\"
[[firewall.allow]]
port = 80
";

/// ufw's files (content and mode, or absent) as vakt's revert promises to restore them.
const FILES: &[&str] = &[
    "etc/ufw/ufw.conf",
    "etc/default/ufw",
    "etc/ufw/user.rules",
    "etc/ufw/user6.rules",
    "etc/ufw/before.rules",
    "etc/ufw/before6.rules",
    "etc/ufw/after.rules",
    "etc/ufw/after6.rules",
    "etc/ufw/after.rules.vakt-prev",
    "etc/ufw/after6.rules.vakt-prev",
    "etc/ufw/sysctl.conf",
];

/// A file's content and mode, or `None` when it is absent.
type Kept = Option<(Vec<u8>, u32)>;

/// ufw's files and the kernel's rules.
#[derive(PartialEq)]
struct State {
    files: Vec<(String, Kept)>,
    kernel: String,
}

struct Lab {
    sb: UfwSandbox,
    bin: PathBuf,
}

impl Lab {
    fn new() -> Lab {
        let sb = UfwSandbox::new();
        std::fs::create_dir_all(sb.file("var/lib")).expect("var/lib");
        let bin = sb.file("fake-bin");
        std::fs::create_dir_all(&bin).expect("bin");
        for tool in ["systemd-run", "systemctl"] {
            let log = bin.join(format!("{tool}.log"));
            let fail = bin.join(format!("{tool}.fail"));
            let script = format!(
                "#!/bin/sh\nfor a in \"$@\"; do printf '%s\\t' \"$a\"; done >> {log}\necho >> {log}\n[ ! -e {fail} ]\n",
                log = log.display(),
                fail = fail.display()
            );
            let path = bin.join(tool);
            std::fs::write(&path, script).expect("stand-in");
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).expect("chmod");
        }
        Lab { sb, bin }
    }

    fn vakt(&self, args: &[&str]) -> Run {
        let mut argv = vec![env!("CARGO_BIN_EXE_vakt")];
        argv.extend_from_slice(args);
        let path = format!("{}:{}", self.bin.display(), std::env::var("PATH").unwrap_or_default());
        run(self.sb.command(&argv).env("PATH", path))
    }

    fn profile(&self, name: &str, body: &str) -> String {
        let path = self.sb.file(name);
        std::fs::write(&path, body).expect("profile");
        path.display().to_string()
    }

    /// Each recorded call of a stand-in, as its arguments.
    fn calls(&self, tool: &str) -> Vec<Vec<String>> {
        let log = std::fs::read_to_string(self.bin.join(format!("{tool}.log"))).unwrap_or_default();
        log.lines().map(|l| l.split('\t').filter(|a| !a.is_empty()).map(String::from).collect()).collect()
    }

    /// ufw's files and the kernel's rules.
    fn state(&self) -> State {
        let files = FILES
            .iter()
            .map(|f| {
                let p = self.sb.file(f);
                let kept =
                    std::fs::read(&p).ok().map(|c| (c, std::fs::metadata(&p).expect("meta").permissions().mode()));
                (f.to_string(), kept)
            })
            .collect();
        State { files, kernel: self.sb.iptables_save() }
    }

    fn pending_dirs(&self) -> Vec<String> {
        std::fs::read_dir(self.sb.file("var/lib/vakt/confirm"))
            .map(|d| {
                d.flatten()
                    .filter(|e| e.path().is_dir())
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default()
    }
}

/// The id the revert timer was armed with: the argument after `--revert`.
fn armed_id(call: &[String]) -> String {
    let at = call.iter().position(|a| a == "--revert").expect("--revert in the armed command");
    call[at + 1].clone()
}

fn assert_same(lab: &Lab, before: &State, what: &str) {
    let now = lab.state();
    for ((name, was), (_, is)) in before.files.iter().zip(&now.files) {
        assert!(was == is, "{what}: {name} differs");
    }
    assert_eq!(before.kernel, now.kernel, "{what}: the kernel's rules differ");
}

/// A lab with BEFORE applied, and its state then.
fn with_before() -> (Lab, State) {
    let lab = Lab::new();
    let before = lab.profile("before.toml", BEFORE);
    assert_eq!(lab.vakt(&["apply", "-p", &before]).code, 0);
    let state = lab.state();
    (lab, state)
}

/// Applies BEFORE, then CHANGE with `--confirm 30s`; returns the state before the change and
/// the change's id.
fn confirmed_change(lab: &Lab) -> (State, String) {
    let before = lab.profile("before.toml", BEFORE);
    let out = lab.vakt(&["apply", "-p", &before]);
    assert_eq!(out.code, 0, "{}{}", out.stdout, out.stderr);
    let state = lab.state();
    let change = lab.profile("change.toml", CHANGE);
    let out = lab.vakt(&["apply", "-p", &change, "--confirm", "30s"]);
    assert_eq!(out.code, 0, "{}{}", out.stdout, out.stderr);
    let runs = lab.calls("systemd-run");
    assert_eq!(runs.len(), 2, "armed before the apply, then again from its end: {runs:?}");
    let id = armed_id(&runs[1]);
    assert!(
        out.stdout.contains(&format!("firewall change {id} will be reverted at "))
            && out.stdout.contains("unless `vakt confirm` runs (revert timer vakt-revert-"),
        "{}",
        out.stdout
    );
    assert!(lab.state() != state, "the change took effect");
    (state, id)
}

#[test]
fn the_revert_puts_ufw_back_exactly() {
    if !ready() {
        return;
    }
    let lab = Lab::new();
    let (before, id) = confirmed_change(&lab);

    // What vakt asked of systemd: a timer before the apply, one from its end, the first stopped.
    let runs = lab.calls("systemd-run");
    for (call, unit) in runs.iter().zip([format!("vakt-revert-{id}-during-apply"), format!("vakt-revert-{id}")]) {
        assert!(call.contains(&format!("--unit={unit}")), "{call:?}");
        assert!(call.contains(&"--on-active=30000ms".to_string()), "{call:?}");
        assert!(call.ends_with(&["confirm".into(), "--revert".into(), id.clone(), "--timer".into()]), "{call:?}");
        assert!(Path::new(&call[call.len() - 5]).is_absolute(), "vakt's own path: {call:?}");
    }
    assert!(
        lab.calls("systemctl").contains(&vec!["stop".into(), format!("vakt-revert-{id}-during-apply.timer")]),
        "{:?}",
        lab.calls("systemctl")
    );
    assert_eq!(lab.pending_dirs(), vec![id.clone()]);

    // While it is pending, another apply is refused, naming it; check still works.
    let before_profile = lab.sb.file("before.toml").display().to_string();
    let out = lab.vakt(&["apply", "-p", &before_profile]);
    assert_eq!(out.code, 2, "{}{}", out.stdout, out.stderr);
    assert!(
        out.stderr.contains(&format!("a firewall change is pending confirmation: {id} (applied at ")),
        "{}",
        out.stderr
    );
    assert!(out.stderr.contains("run `vakt confirm` to keep it"), "{}", out.stderr);
    let change = lab.sb.file("change.toml").display().to_string();
    let check = lab.vakt(&["check", "-p", &change, "--only", "firewall"]);
    assert_eq!(check.code, 0, "{}", check.stdout);

    // The armed command, as systemd runs it: before the deadline it leaves the change alone.
    let armed = &runs[1][runs[1].len() - 4..];
    let armed: Vec<&str> = armed.iter().map(String::as_str).collect();
    let out = lab.vakt(&armed);
    assert_eq!(out.code, 0, "{}{}", out.stdout, out.stderr);
    assert!(out.stdout.starts_with(&format!("not yet: firewall change {id} is reverted at ")), "{}", out.stdout);
    // At the deadline (the manifest's deadline moved to now): ufw comes back.
    let manifest = lab.sb.file(&format!("var/lib/vakt/confirm/{id}/manifest.json"));
    let mut m: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&manifest).expect("manifest")).expect("json");
    m["deadline"] = m["created"].clone();
    std::fs::write(&manifest, m.to_string()).expect("manifest");
    let out = lab.vakt(&armed);
    assert_eq!(out.code, 0, "{}{}", out.stdout, out.stderr);
    assert!(out.stdout.starts_with("reverted: firewall change of "), "{}", out.stdout);
    for said in [
        "restored ",
        "user.rules",
        "removed ",
        "after.rules.vakt-prev (it did not exist before)",
        // ufw stayed enabled with the same chains: its saved chains are loaded in one step
        // per family, not through `ufw reload`'s many commands.
        "loaded ufw's chains (IPv4) as they were: ",
        "loaded ufw's chains (IPv6) as they were: ",
        "removed DOCKER-USER (IPv4), which did not exist before",
    ] {
        assert!(out.stdout.contains(said), "{said}: {}", out.stdout);
    }
    assert!(!out.stdout.contains("ufw reload"), "{}", out.stdout);
    assert_same(&lab, &before, "after the revert");
    assert!(lab.pending_dirs().is_empty());

    // Idempotent: a second revert and a late confirm say nothing is pending, and change nothing.
    let out = lab.vakt(&armed);
    assert_eq!(
        (
            out.code,
            out.stdout.as_str().starts_with(&format!(
                "nothing to revert: firewall change {id} is not pending (last: firewall change {id} reverted at "
            ))
        ),
        (0, true),
        "{}",
        out.stdout
    );
    let out = lab.vakt(&["confirm"]);
    assert_eq!(out.code, 0);
    assert!(out.stdout.starts_with("nothing to confirm: no firewall change is pending (last: "), "{}", out.stdout);
    assert_same(&lab, &before, "after the second revert");

    // And apply works again.
    let out = lab.vakt(&["apply", "-p", &before_profile]);
    assert_eq!(out.code, 0, "{}{}", out.stdout, out.stderr);
}

#[test]
fn confirming_keeps_the_change() {
    if !ready() {
        return;
    }
    let lab = Lab::new();
    let (_, id) = confirmed_change(&lab);
    let changed = lab.state();
    let out = lab.vakt(&["confirm"]);
    assert_eq!(out.code, 0, "{}{}", out.stdout, out.stderr);
    assert!(out.stdout.starts_with("confirmed: firewall change of "), "{}", out.stdout);
    assert!(out.stdout.contains(&format!("kept (revert timer vakt-revert-{id} cancelled)")), "{}", out.stdout);
    assert!(lab.calls("systemctl").contains(&vec!["stop".into(), format!("vakt-revert-{id}.timer")]));
    assert!(lab.pending_dirs().is_empty());

    // The timer firing anyway (a race with the confirm) reverts nothing; a second confirm says so.
    let out = lab.vakt(&["confirm", "--revert", &id, "--timer"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(
        out.stdout.contains(&format!("firewall change {id} is not pending (last: firewall change {id} confirmed at ")),
        "{}",
        out.stdout
    );
    let out = lab.vakt(&["confirm"]);
    assert_eq!(out.code, 0);
    assert!(out.stdout.starts_with("nothing to confirm"), "{}", out.stdout);
    assert_same(&lab, &changed, "after confirming");
}

#[test]
fn a_change_that_switches_ufw_off_is_reverted_through_ufw() {
    if !ready() {
        return;
    }
    // ufw's chains are gone after the change, so its saved ones cannot be loaded over them:
    // the revert falls back to ufw's own `ufw reload`, and the end is the same.
    let (lab, state) = with_before();
    let off = lab.profile("off.toml", "[firewall]\nenabled = false\n");
    let out = lab.vakt(&["apply", "-p", &off, "--confirm", "30s"]);
    assert_eq!(out.code, 0, "{}{}", out.stdout, out.stderr);
    assert!(lab.state() != state, "the change took effect");
    let id = armed_id(&lab.calls("systemd-run")[1]);
    let out = lab.vakt(&["confirm", "--revert", &id]);
    assert_eq!(out.code, 0, "{}{}", out.stdout, out.stderr);
    assert!(out.stdout.contains("ran `ufw reload`"), "{}", out.stdout);
    assert!(!out.stdout.contains("loaded ufw's chains"), "{}", out.stdout);
    assert_same(&lab, &state, "after the revert");
}

/// ufw stays enabled but one of its jumps went missing meanwhile (an operator's `iptables
/// -D`): loading the saved chains would not be what ufw does, so the revert runs `ufw reload`.
/// Its files and chains come back; the jump stays gone, as `ufw reload` keeps the built-in
/// chains' jumps.
#[test]
fn a_table_whose_jumps_changed_is_reverted_through_ufw() {
    if !ready() {
        return;
    }
    let lab = Lab::new();
    let (before, id) = confirmed_change(&lab);
    let out = run(&mut lab.sb.command(&["iptables", "-D", "INPUT", "-j", "ufw-before-logging-input"]));
    assert_eq!(out.code, 0, "{}", out.stderr);
    let out = lab.vakt(&["confirm", "--revert", &id]);
    assert_eq!(out.code, 0, "{}{}", out.stdout, out.stderr);
    assert!(out.stdout.contains("ran `ufw reload`"), "{}", out.stdout);
    assert!(!out.stdout.contains("loaded ufw's chains"), "{}", out.stdout);
    let now = lab.state();
    for ((name, was), (_, is)) in before.files.iter().zip(&now.files) {
        assert!(was == is, "after the revert: {name} differs");
    }
    let hook = "-A INPUT -j ufw-before-logging-input\n";
    assert!(before.kernel.contains(hook));
    assert_eq!(now.kernel, before.kernel.replacen(hook, "", 1), "the rest of the tables as they were");
}

#[test]
fn without_systemd_the_apply_is_refused_and_nothing_changes() {
    if !ready() {
        return;
    }
    let (lab, state) = with_before();
    std::fs::write(lab.bin.join("systemd-run.fail"), "").expect("fail");
    let change = lab.profile("change.toml", CHANGE);
    let out = lab.vakt(&["apply", "-p", &change, "--confirm", "1m", "--format", "json"]);
    assert_eq!(out.code, 2, "{}{}", out.stdout, out.stderr);
    assert!(
        out.stderr.contains("--confirm needs systemd to arm the revert timer")
            && out.stderr.contains("nothing was changed"),
        "{}",
        out.stderr
    );
    assert!(json(&out)["error"].as_str().is_some_and(|e| e.contains("needs systemd")), "{}", out.stdout);
    assert_same(&lab, &state, "after the refused apply");
    assert!(lab.pending_dirs().is_empty(), "no pending change is left: {:?}", lab.pending_dirs());
    // Nothing pending, so a plain apply goes ahead.
    assert_eq!(lab.vakt(&["apply", "-p", &change]).code, 0);
}

#[test]
fn confirm_is_refused_where_it_cannot_guard() {
    let root = tempfile::tempdir().expect("tempdir");
    let r = root.path().display().to_string();
    for (args, says) in [
        (vec!["apply", "-p", "builtin:openfaas-swarm", "--confirm", "5s"], "the window is 10s to 1h"),
        (vec!["apply", "-p", "builtin:openfaas-swarm", "--confirm", "30s", "--dry-run"], "cannot be used with"),
        (vec!["--root", &r, "apply", "-p", "builtin:openfaas-swarm", "--confirm", "30s"], "nothing live to revert"),
        (vec!["--root", &r, "apply", "-p", "builtin:watch-only", "--confirm", "30s"], "nothing live to revert"),
        (vec!["--root", &r, "confirm"], "--root is not supported"),
    ] {
        let out = run(vakt().args(&args));
        assert_eq!(out.code, 2, "{args:?}: {}{}", out.stdout, out.stderr);
        assert!(out.stderr.contains(says), "{args:?}: {}", out.stderr);
    }
}
