//! What a new daemon.json asks of the running engine: nothing, a reload or a restart. dockerd
//! re-reads a few keys on SIGHUP (`systemctl reload docker`, the unit's ExecReload). vakt
//! reloads for those of them whose running value the Engine API's `/info` shows, so that a
//! reload dockerd refused (it logs why and keeps its old values) is told from one it took.
//! Every other key takes a restart, but a storage driver the engine already runs: writing it
//! down changes nothing until the next start, which picks that driver anyway.

use std::collections::BTreeSet;

use serde_json::{Map, Value};

use crate::engine_api::Reloadable;

/// The keys reloaded for rather than restarted.
pub const RELOADABLE: &[&str] = &["labels", "debug", "live-restore"];

/// What the running engine needs to run a new daemon.json, least first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Takes {
    Nothing,
    Reload,
    Restart,
}

/// What the engine running on `driver` needs to run `merged` where the file held `existing`.
pub fn takes(existing: &Map<String, Value>, merged: &Map<String, Value>, driver: &str) -> Takes {
    merged
        .iter()
        .filter(|(key, value)| existing.get(*key) != Some(*value))
        .map(|(key, value)| match key.as_str() {
            "storage-driver" if value.as_str() == Some(driver) => Takes::Nothing,
            k if RELOADABLE.contains(&k) => Takes::Reload,
            _ => Takes::Restart,
        })
        .max()
        .unwrap_or(Takes::Nothing)
}

/// The first of the `owned` reloadable keys whose value the engine does not run, said as
/// `labels: the engine runs ["a=b"]`; None when it runs them all. A key whose running value
/// `/info` does not show is not judged.
pub fn differs(owned: &Map<String, Value>, running: &Reloadable) -> Option<String> {
    owned.iter().find_map(|(key, want)| {
        let (runs, now) = match key.as_str() {
            "labels" => {
                let labels = running.labels.as_ref()?;
                // dockerd keeps one of each label and orders them its own way.
                let wanted: BTreeSet<&str> = want.as_array()?.iter().filter_map(Value::as_str).collect();
                let runs: BTreeSet<&str> = labels.iter().map(String::as_str).collect();
                (wanted == runs, Value::from(labels.clone()))
            }
            "debug" => (want.as_bool() == Some(running.debug?), Value::Bool(running.debug?)),
            "live-restore" => (want.as_bool() == Some(running.live_restore?), Value::Bool(running.live_restore?)),
            _ => return None,
        };
        // The labels are the operator's text: escaped, as JSON and for the terminal.
        (!runs).then(|| crate::escape::controls(&format!("{key}: the engine runs {now}")))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn map(v: Value) -> Map<String, Value> {
        v.as_object().expect("object").clone()
    }

    #[test]
    fn each_change_takes_what_its_key_needs() {
        let before = map(json!({"storage-driver": "overlay2", "labels": ["a=1"]}));
        let same = |after: Value| takes(&before, &map(after), "overlay2");
        assert_eq!(same(json!({"storage-driver": "overlay2", "labels": ["a=1"]})), Takes::Nothing);
        assert_eq!(same(json!({"storage-driver": "overlay2", "labels": ["a=2"]})), Takes::Reload);
        assert_eq!(same(json!({"storage-driver": "overlay2", "labels": ["a=1"], "debug": true})), Takes::Reload);
        assert_eq!(
            same(json!({"storage-driver": "overlay2", "labels": ["a=2"], "log-opts": {"max-size": "10m"}})),
            Takes::Restart,
            "one key that needs a restart restarts"
        );
        // The driver the engine runs, written down for the first time: nothing to do now.
        let fresh = map(json!({"storage-driver": "overlay2"}));
        assert_eq!(takes(&Map::new(), &fresh, "overlay2"), Takes::Nothing);
        assert_eq!(takes(&Map::new(), &fresh, "vfs"), Takes::Restart, "a driver switch restarts");
        assert_eq!(takes(&map(json!({"storage-driver": "vfs"})), &fresh, "overlay2"), Takes::Nothing);
    }

    #[test]
    fn the_engine_runs_labels_as_a_set_and_flags_as_they_are() {
        let running = Reloadable {
            labels: Some(vec!["b=2".into(), "a=1".into()]),
            debug: Some(false),
            live_restore: Some(false),
        };
        assert_eq!(differs(&map(json!({"labels": ["a=1", "b=2", "a=1"], "debug": false})), &running), None);
        assert_eq!(
            differs(&map(json!({"labels": ["a=1"]})), &running).as_deref(),
            Some(r#"labels: the engine runs ["b=2","a=1"]"#)
        );
        assert_eq!(differs(&map(json!({"debug": true})), &running).as_deref(), Some("debug: the engine runs false"));
        assert_eq!(
            differs(&map(json!({"live-restore": true})), &running).as_deref(),
            Some("live-restore: the engine runs false")
        );
        assert_eq!(
            differs(&map(json!({"log-level": "debug", "storage-driver": "vfs"})), &running),
            None,
            "not shown: not judged"
        );
        let sneaky = Reloadable { labels: Some(vec!["x=\u{1b}[2J\u{9b}".into()]), ..running.clone() };
        let said = differs(&map(json!({"labels": []})), &sneaky).expect("differs");
        assert!(!said.contains('\u{1b}') && !said.contains('\u{9b}'), "escaped: {said}");
        let silent = Reloadable::default();
        assert_eq!(differs(&map(json!({"labels": ["a=1"], "debug": true})), &silent), None, "not shown: not judged");
    }
}
