//! What every file and argv rendered from a valid profile must satisfy, whatever the profile
//! says: one directive or entry per line, and each value inside its own slot. Checked by the
//! `rendered` fuzz target and by the property test below; a violation is a validation gap.

use crate::profile::Profile;
use crate::resource::{firewall, nginx, tuning};

/// Checks everything `profile` renders; the error says which rule broke and where.
pub fn check(profile: &Profile) -> Result<(), String> {
    if let Some(n) = &profile.nginx {
        nginx_conf(n)?;
    }
    if let Some(t) = &profile.tuning {
        sysctl_file(t)?;
    }
    if let Some(f) = &profile.firewall {
        for rule in &f.rules {
            ufw_argv(&firewall::allow_command(rule), rule.comment.as_deref())?;
        }
    }
    Ok(())
}

/// nginx.conf: every line is blank, a comment, a block opening or closing, or one directive
/// ending in its only `;`; the profile's values appear as whole words in their directives; and
/// the file has exactly as many lines as the same profile with every value a placeholder.
fn nginx_conf(want: &crate::profile::Nginx) -> Result<(), String> {
    let conf = nginx::render(want);
    for (i, line) in conf.lines().enumerate() {
        let t = line.trim();
        let shape_ok = t.is_empty()
            || t.starts_with('#')
            || t == "}"
            || (t.ends_with(" {") && !t[..t.len() - 2].contains(['{', '}', ';', '#']))
            || (t.ends_with(';') && t.matches(';').count() == 1 && !t.contains(['{', '}', '#']));
        if !shape_ok {
            return Err(format!("nginx.conf line {}: not one directive: {t:?}", i + 1));
        }
    }
    let mut placeholder = want.clone();
    placeholder.user = "x".into();
    placeholder.error_log = "x".into();
    placeholder.access_log = "x".into();
    placeholder.mime_types = "x".into();
    placeholder.server_name = "x".into();
    placeholder.pid = "/x".into();
    for u in &mut placeholder.upstream {
        u.host = "x".into();
    }
    let expected = nginx::render(&placeholder).lines().count();
    if conf.lines().count() != expected {
        return Err(format!("nginx.conf has {} lines, its structure {expected}", conf.lines().count()));
    }
    let slots = [
        ("user", want.user.clone()),
        ("pid", want.pid.display().to_string()),
        ("error_log", want.error_log.clone()),
        ("access_log", want.access_log.clone()),
        ("include", want.mime_types.clone()),
        ("listen", format!("{} default_server", want.listen)),
        ("server_name", want.server_name.clone()),
        ("client_max_body_size", want.client_max_body_size.to_string()),
        ("proxy_read_timeout", want.proxy_read_timeout.to_string()),
    ];
    for (directive, value) in slots {
        let line = format!("{directive} {value};");
        let word = value.trim_end_matches(" default_server");
        if word.contains(char::is_whitespace) || !conf.lines().any(|l| l.trim() == line) {
            return Err(format!("nginx.conf: `{directive}` does not hold exactly {value:?}"));
        }
    }
    for u in &want.upstream {
        if !conf.lines().any(|l| l.trim() == format!("server {u};")) {
            return Err(format!("nginx.conf: upstream server {u} is not one `server` line"));
        }
    }
    Ok(())
}

/// sysctl.d: a header, then exactly one `key = value` line per setting, read back unchanged.
fn sysctl_file(want: &crate::profile::Tuning) -> Result<(), String> {
    let Some(text) = tuning::sysctl_file(want) else { return Ok(()) };
    let entries: Vec<&str> = text.lines().filter(|l| !l.starts_with('#')).collect();
    if entries.len() != want.sysctl.len() || text.lines().count() != want.sysctl.len() + 1 {
        return Err(format!("sysctl.d has {} entries for {} settings", entries.len(), want.sysctl.len()));
    }
    for (line, (key, value)) in entries.iter().zip(&want.sysctl) {
        let parsed = line.split_once(" = ").map(|(k, v)| (k.to_string(), v.to_string()));
        if parsed != Some((key.clone(), value.clone())) || key.starts_with(['-', ';', '#']) {
            return Err(format!("sysctl.d line {line:?} is not `{key} = {value}`"));
        }
    }
    Ok(())
}

/// ufw's argv: no word but the fixed ones may look like an option, and a comment is one word.
fn ufw_argv(argv: &[String], comment: Option<&str>) -> Result<(), String> {
    if let Some(word) = argv.iter().skip(1).find(|w| w.starts_with('-')) {
        return Err(format!("ufw argv {argv:?}: {word:?} would be read as an option"));
    }
    let tail = argv.iter().position(|w| w == "comment").map(|i| &argv[i + 1..]);
    match (tail, comment) {
        (None, None) => Ok(()),
        (Some([c]), Some(want)) if c == want => Ok(()),
        _ => Err(format!("ufw argv {argv:?}: the comment is not exactly one word")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Hostile text: the characters that mean something to nginx, sysctl.d, ufw, TOML or a
    /// terminal, mixed with ordinary ones.
    fn hostile() -> impl Strategy<Value = String> {
        prop::collection::vec(
            prop::sample::select(vec![
                "a", "Z", "0", "9", ".", "-", "_", "/", ":", "[", "]", " ", "\t", "\n", "\r", ";", "#", "{", "}", "\"",
                "'", "$", "\\", "\u{1b}", "=", "*", "~", "é", "--", "..", "k", "m", "g", "s", "ms", "d",
            ]),
            0..12,
        )
        .prop_map(|parts| parts.concat())
    }

    fn quoted(text: &str) -> String {
        toml::Value::String(text.to_string()).to_string()
    }

    proptest! {
        #[test]
        fn a_valid_profile_renders_nothing_outside_its_slots(
            values in prop::collection::vec(hostile(), 12),
            upstreams in prop::collection::vec(hostile(), 1..3),
            sysctl in prop::collection::vec((hostile(), hostile()), 0..3),
            comment in hostile(),
        ) {
            let keys = ["user", "pid", "error_log", "access_log", "mime_types", "listen", "server_name",
                "client_max_body_size", "client_body_buffer_size", "proxy_read_timeout", "keepalive_timeout", "config"];
            let mut text = String::from("[nginx]\n");
            for (key, value) in keys.iter().zip(&values) {
                // Half the keys keep their defaults, so that profiles are often valid.
                if value.len() % 2 == 0 {
                    text.push_str(&format!("{key} = {}\n", quoted(value)));
                }
            }
            let list: Vec<String> = upstreams.iter().map(|u| quoted(&format!("127.0.0.1:80{u}"))).collect();
            text.push_str(&format!("upstream = [{}]\n[tuning.sysctl]\n", list.join(", ")));
            for (k, v) in &sysctl {
                text.push_str(&format!("{} = {}\n", quoted(&format!("vm.{k}")), quoted(v)));
            }
            text.push_str(&format!("[firewall]\n[[firewall.allow]]\nport = 22\ncomment = {}\n", quoted(&comment)));
            if let Ok(profile) = crate::profile::parse("prop.toml", &text) {
                prop_assert!(check(&profile).is_ok(), "{:?}\n{text}", check(&profile));
            }
        }
    }

    #[test]
    fn every_shipped_profile_renders_within_its_slots() {
        for (name, text) in crate::profile::BUILTINS {
            let profile = crate::profile::parse(name, text).expect("valid");
            check(&profile).unwrap_or_else(|e| panic!("{name}: {e}"));
        }
    }
}
