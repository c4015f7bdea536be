//! Any mountinfo table and scheduler text parse without a panic (the storage walk's inputs).
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    for path in ["/", "/var/lib/docker", "/a/b"] {
        let _ = vakt::resource::host::mount_of(&text, std::path::Path::new(path));
    }
    let _ = vakt::resource::tuning::parse_scheduler(&text);
});
