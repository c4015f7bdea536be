//! Test-only failpoints for the crash-safety tests. With the `failpoints` feature, a run with
//! `VAKT_FAILPOINT=NAME` kills itself with SIGKILL the first time it reaches NAME (no
//! cleanup, no unwinding: a power cut as far as the files are concerned), `NAME#N` the Nth
//! time, `NAME:sleep=MS` pauses there, and `NAME:wait=PATH` waits there until PATH exists (20 s at most). Without the feature, `hit` compiles to nothing.

#[cfg(feature = "failpoints")]
pub fn hit(name: &str) {
    use std::sync::atomic::{AtomicUsize, Ordering};
    static HITS: AtomicUsize = AtomicUsize::new(0);
    let Ok(spec) = std::env::var("VAKT_FAILPOINT") else { return };
    let (point, action) = spec.split_once(':').unwrap_or((&spec, "kill"));
    let (point, nth) = point.split_once('#').map_or((point, 1), |(p, n)| (p, n.parse().unwrap_or(1)));
    if point != name || HITS.fetch_add(1, Ordering::SeqCst) + 1 != nth {
        return;
    }
    if let Some(path) = action.strip_prefix("wait=") {
        // Until another process made PATH, for 20 s at most.
        let started = std::time::Instant::now();
        while !std::path::Path::new(path).exists() && started.elapsed() < std::time::Duration::from_secs(20) {
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        return;
    }
    match action.strip_prefix("sleep=").and_then(|m| m.parse().ok()) {
        Some(ms) => std::thread::sleep(std::time::Duration::from_millis(ms)),
        None => {
            let _ = nix::sys::signal::raise(nix::sys::signal::Signal::SIGKILL);
        }
    }
}

#[cfg(not(feature = "failpoints"))]
#[inline(always)]
pub fn hit(_name: &str) {}
