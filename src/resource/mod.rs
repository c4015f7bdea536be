//! The managed resources, one module each, listed in dependency order.

pub mod host;

use crate::engine::Managed;
use crate::profile::Profile;

/// What the registry holds for one resource id.
pub enum Slot<'p> {
    Managed(Box<dyn Managed + 'p>),
    /// The profile has no section for it.
    Absent,
    /// vakt does not manage it yet.
    NotYet,
}

fn slot<'p, S, R: Managed + 'p>(section: Option<&'p S>, make: impl FnOnce(&'p S) -> R) -> Slot<'p> {
    match section {
        Some(s) => Slot::Managed(Box::new(make(s))),
        None => Slot::Absent,
    }
}

/// One slot per id in `engine::RESOURCE_IDS`, in that order.
pub fn all(p: &Profile) -> Vec<Slot<'_>> {
    vec![
        slot(p.host.as_ref(), host::HostVerdicts::new),
        Slot::NotYet,
        Slot::NotYet,
        Slot::NotYet,
        Slot::NotYet,
        Slot::NotYet,
        Slot::NotYet,
    ]
}
