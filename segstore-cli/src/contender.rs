//! A contender in a save workload: segstore, a raw limit of the disk, or a peer.

use std::path::Path;

use crate::workload::{SaveRun, SaveSpec};

/// What a contender's figures are compared as.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// segstore itself: the rows the targets are about.
    Ours,
    /// A physical limit of the disk (raw writes and syncs), which the others are
    /// divided by.
    Limit,
    /// Another log store a user could pick instead.
    Peer,
}

pub trait Contender {
    /// The name tables and plots show.
    fn name(&self) -> &str;

    fn role(&self) -> Role;

    /// Creates a log (or reference file) in `dir`, which does not exist yet, runs
    /// `spec` on it and reports. Every save must be durable before it counts.
    fn run_saves(&self, dir: &Path, spec: &SaveSpec, device_stat: Option<&Path>) -> anyhow::Result<SaveRun>;
}
