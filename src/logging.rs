//! Logging setup: compact stderr for the commands, journald (when running) for the watchdog.

use std::io::IsTerminal;

use tracing_subscriber::EnvFilter;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

/// `verbosity`: -1 quiet, 0 normal, 1 `-v`, 2 `-vv`. `journald` adds the journald layer when
/// a journal is listening; returns whether it did.
pub fn init(verbosity: i8, journald: bool) -> bool {
    let level = match verbosity {
        i8::MIN..=-1 => "error",
        0 => "warn",
        1 => "info,vakt=debug",
        _ => "debug,vakt=trace",
    };
    let watch_level = if verbosity > 0 { level } else { "warn,vakt=info" };
    let filter = EnvFilter::try_from_env("VAKT_LOG")
        .unwrap_or_else(|_| EnvFilter::new(if journald { watch_level } else { level }));
    let journal = if journald { tracing_journald::layer().ok().map(|l| l.with_field_prefix(None)) } else { None };
    let has_journal = journal.is_some();
    let stderr = (!has_journal).then(|| {
        tracing_subscriber::fmt::layer()
            .with_writer(std::io::stderr)
            .with_ansi(std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty()))
            .with_target(false)
            .without_time()
            .compact()
    });
    // bollard logs every request body at debug level, a swarm join's token included: its
    // debug and trace lines are dropped whatever the filter says.
    let no_request_bodies = tracing_subscriber::filter::filter_fn(|meta| {
        !(meta.target().starts_with("bollard") && *meta.level() > tracing::Level::INFO)
    });
    let _ = tracing_subscriber::registry().with(no_request_bodies).with(filter).with(journal).with(stderr).try_init();
    has_journal
}
