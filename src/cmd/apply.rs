//! `vakt apply`: converge every resource in dependency order (independent ones at once),
//! verify, report.

use std::io::IsTerminal;
use std::time::Instant;

use super::confirm;
use crate::cli::{ApplyArgs, Cli, Format};
use crate::engine::{self, Report, Run};
use crate::error::Invalid;
use crate::host::Host;
use crate::profile;
use crate::report::text;

pub fn run(cli: &Cli, args: &ApplyArgs) -> anyhow::Result<u8> {
    if matches!(args.format, Format::Junit | Format::Prometheus) {
        return Err(Invalid("apply reports as text or json; junit and prometheus are for check".into()).into());
    }
    super::or_error_document("apply", args.format, || apply(cli, args))
}

fn apply(cli: &Cli, args: &ApplyArgs) -> anyhow::Result<u8> {
    let started = Instant::now();
    let window = args.confirm.as_deref().map(confirm::parse_window).transpose()?;
    let profile = profile::load(args.select.profile.as_deref(), &cli.root, false)?;
    let host = Host::new(&cli.root);
    if window.is_some() {
        confirm::usable(&host, profile.firewall.is_some(), &args.select.only)?;
    }
    let resources = engine::registry(&profile, &args.select.only)?;
    let style = super::text_style(cli, args.select.diff);
    // An operator at a terminal sees each resource as it converges and a live line for a long
    // step; anything else (journald, a pipe, JSON) gets the whole report at the end, as ever.
    let live = args.format == Format::Text && !args.dry_run && std::io::stdout().is_terminal();
    host.runner.show_progress(live && !style.quiet && std::io::stderr().is_terminal());
    let mut revert_note = None;
    let results = if args.dry_run {
        engine::check_all(&host, &resources)
    } else {
        let _lock = crate::fsutil::lock_apply(host.root())?;
        confirm::refuse_if_pending(&host)?;
        // Armed before anything changes: an apply that dies half-way is still reverted.
        let guard = window.map(|w| confirm::arm(&host, w)).transpose()?;
        let schedule = || match args.serial {
            true => engine::Schedule::serial(resources.len()),
            false => engine::Schedule::of(&resources, &profile, &host),
        };
        let results = if live {
            let machine = crate::resource::host::Machine::read(&host);
            super::emit(&text::header("apply", false, &profile.source, &machine, style))?;
            engine::apply_each(&host, &resources, schedule, |r| {
                // Another resource may be showing its live line meanwhile.
                let _ = host.runner.above_live_line(|| super::emit(&text::resource(r, style, false)));
            })
        } else {
            engine::apply_all(&host, &resources, schedule)
        };
        revert_note = guard.map(|g| g.rearm(&host));
        results
    };
    let report = Report::new(Run::Apply, args.dry_run, &profile, &host, results, started);
    if live {
        super::emit(&text::summary(&report))?;
    } else {
        super::emit(&crate::report::render(&report, args.format, style))?;
    }
    if let Some(note) = revert_note {
        // JSON on stdout stays one document.
        if args.format == Format::Text {
            super::emit(&note)?;
        } else {
            eprint!("{note}");
        }
    }
    Ok(report.summary.exit_code())
}
