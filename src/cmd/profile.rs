//! `vakt profile validate|show`: profile work with no host access.

use crate::cli::{Cli, ProfileCommand};
use crate::error::exit;
use crate::profile;

pub fn run(cli: &Cli, command: &ProfileCommand) -> anyhow::Result<u8> {
    match command {
        ProfileCommand::Validate { file } => {
            let p = profile::load(Some(file), &cli.root, false)?;
            let sections: Vec<&str> = [
                ("host", p.host.is_some()),
                ("packages", p.packages.is_some()),
                ("firewall", p.firewall.is_some()),
                ("docker", p.docker.is_some()),
                ("swarm", p.swarm.is_some()),
                ("nginx", p.nginx.is_some()),
                ("tuning", p.tuning.is_some()),
                ("watch", p.watch.is_some()),
            ]
            .into_iter()
            .filter_map(|(name, present)| present.then_some(name))
            .collect();
            super::emit(&format!(
                "{}: valid; manages {}\n",
                p.source,
                if sections.is_empty() { "nothing".into() } else { sections.join(", ") }
            ))?;
        }
        ProfileCommand::Show { profile } => super::emit(&profile::show(profile.as_deref(), &cli.root)?)?,
    }
    Ok(exit::OK)
}
