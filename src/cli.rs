//! vakt's command line: the subcommands, their flags and the global options (`--root`, `-v`,
//! `-q`, `--color`), as clap parses them; the man page and completions are generated from it.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

const AFTER_HELP: &str = "\
Exit codes:
  0  compliant (check) or converged (apply)
  1  drift found (check), or some resource failed to converge (apply)
  2  invalid invocation or profile; nothing was touched
  3  something could not be verified (e.g. the Docker socket is unreachable) and nothing else was wrong

Without -p, the profile is /etc/vakt/profile.toml plus /etc/vakt/profile.d/*.toml; check and
watch fall back to the built-in `openfaas-swarm` profile, apply never does.";

#[derive(Debug, Parser)]
#[command(name = "vakt", version, about = "Provision, audit and watch a self-hosted KVM server from one TOML profile", after_help = AFTER_HELP)]
pub struct Cli {
    /// Resolve every host path (/etc, /proc, /sys, /var/lib, /run) under DIR
    #[arg(long, global = true, value_name = "DIR", default_value = "/")]
    pub root: PathBuf,
    /// More output (-v shows evidence and every command run; -vv traces)
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,
    /// Less output (-q prints only problems and the summary)
    #[arg(short, long, global = true, action = clap::ArgAction::Count, conflicts_with = "verbose")]
    pub quiet: u8,
    /// When to colour the text output
    #[arg(long, global = true, value_enum, default_value_t = Color::Auto)]
    pub color: Color,
    #[command(subcommand)]
    pub command: Command,
}

impl Cli {
    /// `--root` must name a directory: an audit of a tree that is not there would report an
    /// empty host instead of an error.
    pub fn check_root(&self) -> anyhow::Result<()> {
        match std::fs::metadata(&self.root) {
            Ok(m) if m.is_dir() => Ok(()),
            Ok(_) => Err(crate::error::Invalid(format!("--root {}: not a directory", self.root.display())).into()),
            Err(e) => Err(crate::error::Invalid(format!("--root {}: {e}", self.root.display())).into()),
        }
    }
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Converge the host to the profile (idempotent)
    Apply(ApplyArgs),
    /// Audit the host against the profile; changes nothing
    Check(CheckArgs),
    /// Run the watchdog: steal time, I/O wait and pressure to journald, systemd and Prometheus
    Watch(WatchArgs),
    /// Keep the firewall change of `apply --confirm`, or revert it now (--revert)
    Confirm(ConfirmArgs),
    /// Validate or show profiles
    #[command(subcommand)]
    Profile(ProfileCommand),
}

#[derive(Debug, Args)]
pub struct Selection {
    /// Profile file, or builtin:NAME (openfaas-swarm, hardened, watch-only)
    #[arg(short, long, value_name = "PROFILE")]
    pub profile: Option<String>,
    /// Only these resources: host, packages, firewall, docker, swarm, nginx, tuning, exposure
    #[arg(long, value_delimiter = ',', value_name = "RES,..")]
    pub only: Vec<String>,
    /// Show unified diffs of managed files
    #[arg(long)]
    pub diff: bool,
}

#[derive(Debug, Args)]
pub struct ApplyArgs {
    #[command(flatten)]
    pub select: Selection,
    /// Show what would change, change nothing
    #[arg(long)]
    pub dry_run: bool,
    /// Revert the firewall to its state before this apply unless `vakt confirm` runs within
    /// DURATION (10s to 1h) of the apply's end; a systemd timer does it, so it also happens
    /// when the SSH session dies
    #[arg(long, value_name = "DURATION", conflicts_with = "dry_run")]
    pub confirm: Option<String>,
    /// Converge one resource at a time, in order (by default nginx converges while Docker
    /// restarts)
    #[arg(long, conflicts_with = "dry_run")]
    pub serial: bool,
    #[arg(long, value_enum, default_value_t = Format::Text)]
    pub format: Format,
}

#[derive(Debug, Args)]
pub struct ConfirmArgs {
    /// Revert the pending change now instead of keeping it (only ID's, when given)
    #[arg(long, value_name = "ID", num_args = 0..=1, default_missing_value = "")]
    pub revert: Option<String>,
    /// Set by the revert timer: revert only once the pending change's deadline has come (an
    /// apply that outlasted its window re-arms the deadline from its end)
    #[arg(long, hide = true, requires = "revert")]
    pub timer: bool,
}

#[derive(Debug, Args)]
pub struct CheckArgs {
    #[command(flatten)]
    pub select: Selection,
    #[arg(long, value_enum, default_value_t = Format::Text)]
    pub format: Format,
    /// Also write the result as Prometheus text to PATH, atomically (node_exporter's textfile collector)
    #[arg(long, value_name = "PATH")]
    pub textfile: Option<std::path::PathBuf>,
}

#[derive(Debug, Args)]
pub struct WatchArgs {
    /// Profile file, or builtin:NAME
    #[arg(short, long, value_name = "PROFILE")]
    pub profile: Option<String>,
}

#[derive(Debug, Subcommand)]
pub enum ProfileCommand {
    /// Parse and validate FILE (or builtin:NAME) without touching the host
    Validate { file: String },
    /// Print the effective profile, defaults filled in, as TOML
    Show {
        #[arg(short, long, value_name = "PROFILE")]
        profile: Option<String>,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Format {
    Text,
    Json,
    Junit,
    Prometheus,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Color {
    Auto,
    Always,
    Never,
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn global_flags_work_before_and_after_the_subcommand() {
        let a = Cli::try_parse_from(["vakt", "--root", "/tmp/r", "check", "--only", "host,docker"]).expect("parses");
        let b = Cli::try_parse_from(["vakt", "check", "--only", "host,docker", "--root", "/tmp/r"]).expect("parses");
        for cli in [a, b] {
            assert_eq!(cli.root, PathBuf::from("/tmp/r"));
            let Command::Check(args) = cli.command else { panic!("not check") };
            assert_eq!(args.select.only, vec!["host", "docker"]);
        }
    }
}
