//! `vakt watch`: the watchdog service.

use crate::cli::{Cli, WatchArgs};
use crate::error::Invalid;

pub fn run(_cli: &Cli, _args: &WatchArgs) -> anyhow::Result<u8> {
    Err(Invalid("vakt watch is not implemented yet".into()).into())
}
