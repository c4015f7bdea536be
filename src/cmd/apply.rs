//! `vakt apply`: converge every resource in dependency order, verify, report.

use std::time::Instant;

use crate::cli::{ApplyArgs, Cli, Format};
use crate::engine::{self, Report};
use crate::error::Invalid;
use crate::host::Host;
use crate::profile;

pub fn run(cli: &Cli, args: &ApplyArgs) -> anyhow::Result<u8> {
    if matches!(args.format, Format::Junit | Format::Prometheus) {
        return Err(Invalid("apply reports as text or json; junit and prometheus are for check".into()).into());
    }
    super::or_error_document("apply", args.format, || apply(cli, args))
}

fn apply(cli: &Cli, args: &ApplyArgs) -> anyhow::Result<u8> {
    let started = Instant::now();
    let profile = profile::load(args.select.profile.as_deref(), &cli.root, false)?;
    let host = Host::new(&cli.root);
    let resources = engine::registry(&profile, &args.select.only)?;
    let results = if args.dry_run {
        engine::check_all(&host, &resources)
    } else {
        let _lock = crate::fsutil::lock_apply(host.root())?;
        engine::apply_all(&host, &resources)
    };
    let report = Report::new("apply", args.dry_run, &profile, &host, results, started);
    super::emit(&crate::report::render(&report, args.format, super::text_style(cli, args.select.diff)))?;
    Ok(report.summary.exit_code())
}
