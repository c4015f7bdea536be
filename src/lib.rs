//! vakt as a library: the profile, the resources, the engine and the watchdog, used by the
//! `vakt` binary and by the fuzz targets. The pure parsers are public for fuzzing and
//! property tests; everything else is the binary's.

pub mod cli;
pub mod cmd;
pub mod engine;
mod engine_api;
pub mod error;
pub mod escape;
pub mod failpoint;
pub mod fsutil;
pub mod host;
pub mod invariants;
pub mod logging;
pub mod profile;
pub mod report;
pub mod resource;
pub mod runner;
pub mod watch;
