//! Issue 26: an operator at a terminal sees each resource as soon as it is done and, for a
//! step longer than a second, a live line saying what runs and for how long, cleared when it
//! ends; off a terminal the output carries no control sequence and the JSON report is the same
//! document. Driven in a real pseudo-terminal (util-linux `script`). The slow step is a
//! stand-in `apt-get` (with `dpkg-query` and `apt-cache` stand-ins): installing a real package
//! here would change this machine.

mod common;

use std::path::Path;
use std::process::Command;

use common::*;

const PKG: &str = "vakt-test-pkg";

/// Stand-ins on PATH: the package is missing until the slow `apt-get install` marks it.
fn stand_ins(dir: &Path) {
    let bin = dir.join("bin");
    std::fs::create_dir_all(&bin).expect("bin");
    let mark = dir.join("installed");
    let m = mark.display();
    let scripts = [
        (
            "dpkg-query",
            format!(
                "#!/bin/sh\nif [ -e {m} ]; then printf '{PKG}\\tii \\n'; else echo 'dpkg-query: no packages found matching {PKG}' >&2; exit 1; fi\n"
            ),
        ),
        ("apt-cache", format!("#!/bin/sh\nprintf '{PKG}:\\n  Installed: (none)\\n  Candidate: 1.0\\n'\n")),
        ("apt-get", format!("#!/bin/sh\nsleep 2.5\ntouch {m}\n")),
    ];
    for (name, text) in scripts {
        let p = bin.join(name);
        std::fs::write(&p, text).expect("stand-in");
        let _ = Command::new("chmod").arg("755").arg(&p).status();
    }
    let _ = std::fs::remove_file(mark);
}

/// A script that runs vakt as the live host with a private /run (its apply lock) and the
/// stand-ins first on PATH.
fn runner(dir: &Path, args: &str) -> String {
    let t = dir.display();
    let script = dir.join("run.sh");
    std::fs::write(
        &script,
        format!(
            "#!/bin/sh\nmkdir -p {t}/run\nexec unshare -m --propagation private sh -ec 'mount --bind {t}/run /run; \
             PATH={t}/bin:$PATH exec {vakt} {args}'\n",
            vakt = env!("CARGO_BIN_EXE_vakt")
        ),
    )
    .expect("script");
    let _ = Command::new("chmod").arg("755").arg(&script).status();
    script.display().to_string()
}

/// Runs `script` in a pseudo-terminal; returns everything the terminal received.
fn in_terminal(script: &str) -> String {
    let out =
        run(Command::new("script").args(["-qfec", script, "/dev/null"]).env("TERM", "xterm").env_remove("NO_COLOR"));
    out.stdout
}

/// `text` without SGR colour sequences (`ESC [ ... m`).
fn without_colour(text: &str) -> String {
    let mut out = String::new();
    let mut rest = text;
    while let Some(at) = rest.find("\x1b[") {
        out.push_str(&rest[..at]);
        let tail = &rest[at + 2..];
        match tail.find(|c: char| c.is_ascii_alphabetic()) {
            Some(end) if tail.as_bytes()[end] == b'm' => rest = &tail[end + 1..],
            _ => {
                out.push_str("\x1b[");
                rest = tail;
            }
        }
    }
    out.push_str(rest);
    out
}

fn ready() -> bool {
    require("root", is_root()) && require("script and unshare (util-linux)", has("script") && has("unshare"))
}

#[test]
fn a_long_step_shows_a_live_line_on_a_terminal_and_nothing_off_it() {
    if !ready() {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let profile = dir.path().join("p.toml");
    std::fs::write(&profile, format!("[packages]\ninstall = [\"{PKG}\"]\nupdate = false\n")).expect("profile");
    let p = profile.display();

    stand_ins(dir.path());
    let tty = in_terminal(&runner(dir.path(), &format!("apply -p {p}")));
    // The live line, with the tool and the elapsed time, then cleared (indicatif erases the
    // line with CSI 2K) before the resource's own lines.
    assert!(tty.contains(&format!("installing {PKG} (apt-get, ")), "no live line:\n{tty:?}");
    assert!(tty.contains("\x1b[2K"), "the live line is not cleared:\n{tty:?}");
    let changed = tty.find(&format!("packages.{PKG}")).expect("the finding");
    assert!(tty.rfind("installing").is_some_and(|i| i < changed), "findings come after the live line ends");
    assert!(tty.contains("summary: 0 ok, 1 changed"), "{tty:?}");

    // Off a terminal: the same lines, no control sequence.
    stand_ins(dir.path());
    let piped = run(&mut Command::new(runner(dir.path(), &format!("apply -p {p}"))));
    assert_eq!(piped.code, 0, "{}{}", piped.stdout, piped.stderr);
    assert!(!piped.stdout.contains('\x1b') && !piped.stderr.contains('\x1b'), "{}", piped.stdout);
    assert!(!piped.stdout.contains("installing"), "no live line off a terminal");
    // The terminal's lines are the same, colour aside.
    let plain_tty = without_colour(&tty);
    for line in piped.stdout.lines().filter(|l| !l.starts_with("summary:")) {
        assert!(plain_tty.contains(line), "the terminal showed a different line: {line}\n{tty:?}");
    }

    // JSON: the same document with and without a terminal (but the time, memory and CPU it took), and no
    // control sequence in either.
    let json_of = |text: &str| {
        let mut v: serde_json::Value = serde_json::from_str(text.trim()).expect("one JSON document");
        v["elapsed_ms"] = serde_json::Value::Null;
        v["peak_rss_kib"] = serde_json::Value::Null;
        v["cpu_us"] = serde_json::Value::Null;
        v
    };
    stand_ins(dir.path());
    let tty_json = in_terminal(&runner(dir.path(), &format!("apply -p {p} --format json"))).replace("\r\n", "\n");
    stand_ins(dir.path());
    let plain_json = run(&mut Command::new(runner(dir.path(), &format!("apply -p {p} --format json"))));
    assert!(!tty_json.contains('\x1b') && !plain_json.stdout.contains('\x1b'), "{tty_json:?}");
    assert_eq!(json_of(&tty_json), json_of(&plain_json.stdout));
}
