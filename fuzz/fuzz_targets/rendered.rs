//! Any profile that validates renders nginx.conf, sysctl.d and ufw argv with one directive or
//! entry per line and every value inside its slot (see `vakt::invariants`).
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data)
        && let Ok(profile) = vakt::profile::parse("fuzz.toml", text)
        && let Err(e) = vakt::invariants::check(&profile)
    {
        panic!("{e}\n{text}");
    }
});
