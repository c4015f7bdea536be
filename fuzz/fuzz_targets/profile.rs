//! Any text given as a profile is either a valid profile or an error; never a panic.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = vakt::profile::parse("fuzz.toml", text);
    }
});
