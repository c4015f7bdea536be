//! vakt: provision, audit and watch a self-hosted KVM server from one TOML profile.

use std::io::Write;
use std::process::ExitCode;

use clap::Parser;

use vakt::cli::{Cli, Command};
use vakt::error::{Invalid, exit};
use vakt::{cmd, logging};

fn main() -> ExitCode {
    let cli = Cli::parse();
    let verbosity = i8::try_from(cli.verbose).unwrap_or(i8::MAX) - i8::try_from(cli.quiet).unwrap_or(i8::MAX);
    logging::init(verbosity, matches!(cli.command, Command::Watch(_)));
    let result = cli.check_root().and_then(|()| match &cli.command {
        Command::Apply(args) => cmd::apply::run(&cli, args),
        Command::Check(args) => cmd::check::run(&cli, args),
        Command::Watch(args) => cmd::watch::run(&cli, args),
        Command::Confirm(args) => cmd::confirm::run(&cli, args),
        Command::Profile(p) => cmd::profile::run(&cli, p),
    });
    match result {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            // Written, not eprintln!: a closed stderr must not turn an error into a panic.
            let _ = writeln!(std::io::stderr(), "vakt: error: {e:#}");
            ExitCode::from(if e.downcast_ref::<Invalid>().is_some() { exit::INVALID } else { exit::DRIFT })
        }
    }
}
