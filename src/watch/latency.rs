//! Disk latency as a metric (`[watch] latency_every`): the storage probe, on a blocking thread
//! of its own every period, for the disks under `/` and Docker's data. The probe keeps its own
//! bounds (about a second of reads at queue depth 1, never a rotational or busy disk); each
//! disk's last measurement stays until a new one replaces it.

use std::path::PathBuf;
use std::time::Duration;

use tokio::sync::mpsc;

use crate::host::Host;
use crate::resource::probe::Outcome;

/// The paths whose disks are measured.
const PATHS: &[&str] = &["/", "/var/lib/docker"];

/// One round: each disk once, with its outcome.
pub type Round = Vec<(String, Outcome)>;

/// Measures every `every` (the first at once) and sends each round until the receiver is gone.
pub async fn run(root: PathBuf, every: Duration, tx: mpsc::Sender<Round>) {
    let mut ticker = tokio::time::interval(every);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticker.tick().await;
        let root = root.clone();
        let Ok(round) = tokio::task::spawn_blocking(move || measure(&Host::new(root))).await else { return };
        if tx.send(round).await.is_err() {
            return;
        }
    }
}

/// What to do when the probe could not open a disk because the unit's sandbox hides it
/// (vakt.service ships with no device nodes and no disk group): the shipped drop-in.
pub fn sandbox_hint(why: &str) -> &'static str {
    let hidden =
        why.starts_with("no device node ") || why.contains("Permission denied") || why.contains("not permitted");
    if hidden {
        " (under vakt.service, install the drop-in /usr/share/vakt/systemd/disk-latency.conf as \
         /etc/systemd/system/vakt.service.d/disk-latency.conf to let it read the disks)"
    } else {
        ""
    }
}

fn measure(host: &Host) -> Round {
    let mut round: Round = Vec::new();
    for path in PATHS {
        let path = std::path::Path::new(path);
        if !host.path(path).exists() {
            continue;
        }
        let done: Vec<String> = round.iter().map(|(d, _)| d.clone()).collect();
        round.extend(crate::resource::host::latency(host, path, &done));
    }
    round
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_disk_hidden_by_the_sandbox_names_the_drop_in() {
        for why in
            ["no device node /dev/vda", "cannot open /dev/vda for O_DIRECT reads: Permission denied (os error 13)"]
        {
            assert!(sandbox_hint(why).contains("disk-latency.conf"), "{why}");
        }
        assert_eq!(sandbox_hint("vda is busy"), "");
    }
}
