//! `vakt check`: observe and plan every resource, change nothing, report.

use anyhow::Context;

use crate::cli::{CheckArgs, Cli};
use crate::engine::audit;
use crate::host::Host;
use crate::profile;

pub fn run(cli: &Cli, args: &CheckArgs) -> anyhow::Result<u8> {
    super::or_error_document("check", args.format, || check(cli, args))
}

fn check(cli: &Cli, args: &CheckArgs) -> anyhow::Result<u8> {
    let profile = profile::load(args.select.profile.as_deref(), &cli.root, true)?;
    let host = Host::new(&cli.root);
    let report = audit(&host, &profile, &args.select.only)?;
    super::emit(&crate::report::render(&report, args.format, super::text_style(cli, args.select.diff)))?;
    if let Some(path) = &args.textfile {
        let text = crate::report::render(&report, crate::cli::Format::Prometheus, super::text_style(cli, false));
        crate::fsutil::write_atomic(path, text.as_bytes(), false)
            .with_context(|| format!("failed to write the textfile {}", path.display()))?;
    }
    Ok(report.summary.exit_code())
}
