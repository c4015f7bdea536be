//! vakt as a library: the profile, the resources, the engine and the watchdog, used by the
//! `vakt` binary, the fuzz targets, the integration tests and the examples. Modules are public
//! so that those can drive them; only the Engine API client stays private.

pub mod cli;
pub mod cmd;
pub mod engine;
mod engine_api;
pub mod error;
pub mod escape;
pub mod exposition;
pub mod failpoint;
pub mod fsutil;
pub mod host;
#[cfg(any(test, feature = "invariants"))]
pub mod invariants;
pub mod logging;
pub mod memo;
pub mod netfilter;
mod netlink;
pub mod profile;
pub mod report;
pub mod resource;
pub mod rooted;
pub mod runner;
pub mod secret;
pub mod sockets;
pub mod watch;
pub mod words;
