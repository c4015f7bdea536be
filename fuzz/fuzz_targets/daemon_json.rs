//! Any daemon.json either is refused or merges with the owned keys and round-trips.
#![no_main]
use libfuzzer_sys::fuzz_target;
use vakt::resource::docker::{merge, parse_daemon_json, render};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let Ok(existing) = parse_daemon_json(text) else { return };
    let mut owned = serde_json::Map::new();
    owned.insert("storage-driver".into(), serde_json::Value::String("overlay2".into()));
    let merged = merge(&existing, &owned);
    for (k, v) in &existing {
        if k != "storage-driver" {
            assert_eq!(merged.get(k), Some(v));
        }
    }
    assert_eq!(parse_daemon_json(&render(&merged)).ok(), Some(merged));
});
