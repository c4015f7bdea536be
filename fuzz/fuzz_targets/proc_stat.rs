//! Any two /proc/stat texts give shares within 0–100 %.
#![no_main]
use libfuzzer_sys::fuzz_target;
use vakt::watch::cpu::{parse_stat, usage};

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let (a, b) = text.split_once("\n--\n").unwrap_or((&text, ""));
    let u = usage(&parse_stat(a), &parse_stat(b), 1.0);
    for p in [u.system.steal_pct(), u.system.iowait_pct()] {
        assert!((0.0..=100.0).contains(&p));
    }
    let _ = vakt::watch::psi::parse(&text);
});
