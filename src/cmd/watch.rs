//! `vakt watch`: the watchdog service.

use crate::cli::{Cli, WatchArgs};

pub fn run(cli: &Cli, args: &WatchArgs) -> anyhow::Result<u8> {
    crate::watch::run(args.profile.clone(), cli.root.clone())
}
