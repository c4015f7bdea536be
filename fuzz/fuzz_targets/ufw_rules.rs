//! Any user.rules text parses into tuples without a panic.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let _ = vakt::resource::firewall::parse_rules(&text, false);
    let _ = vakt::resource::firewall::parse_rules(&text, true);
});
