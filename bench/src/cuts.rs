//! W6, latency across Cuts: one writer's durable 256 B saves through a run that moves
//! to a new segment at least 20 times, against the same run in segments large enough
//! never to cut. Cuts come two ways: the log filling small segments (rotation), and
//! `Storage::cut()` called every so many saves on default-sized segments.

use std::path::Path;

use segstore::{Options, Storage};
use segstore_cli::comparison::Comparison;
use segstore_cli::contender::{Contender, Role};
use segstore_cli::workload::{drive_saves, entries, hard_state, DataPool, SaveRun, SaveSpec};

/// Cuts in each run that cuts: at least the 20 the workload asks for.
const CUTS: u64 = 21;

/// What one save of a 256 B entry and its hard state takes in the log, about: the
/// two records with their headers. Sizes the rotation run's segments.
const LOG_BYTES_PER_SAVE: u64 = 340;

/// segstore saving 256 B entries, cutting (or not) as configured.
pub struct CuttingSegstore {
    name: String,
    role: Role,
    segment_size_bytes: u64,
    cut_every_saves: Option<u64>,
}

impl CuttingSegstore {
    /// The three runs of W6: no cuts (the reference), rotation, explicit cuts so that
    /// both cut about as often.
    pub fn variants(spec: &SaveSpec, cuts: u64) -> Vec<CuttingSegstore> {
        let total_saves = (spec.saves + spec.warmup_saves) as u64;
        let cut_every = total_saves / cuts;
        // Two more segments than cuts wanted, so that rotation crosses enough of them.
        let rotation_segment_bytes = (total_saves * LOG_BYTES_PER_SAVE / (cuts + 2)) / 4096 * 4096;
        vec![
            CuttingSegstore {
                name: "no cuts (64 MiB segments)".into(),
                role: Role::Limit,
                segment_size_bytes: 64 << 20,
                cut_every_saves: None,
            },
            CuttingSegstore {
                name: format!("rotation ({} KiB segments)", rotation_segment_bytes >> 10),
                role: Role::Ours,
                segment_size_bytes: rotation_segment_bytes.max(segstore::MIN_SEGMENT_SIZE_BYTES),
                cut_every_saves: None,
            },
            CuttingSegstore {
                name: format!("cut() every {cut_every} saves (64 MiB segments)"),
                role: Role::Ours,
                segment_size_bytes: 64 << 20,
                cut_every_saves: Some(cut_every),
            },
        ]
    }
}

impl Contender for CuttingSegstore {
    fn name(&self) -> &str {
        &self.name
    }

    fn role(&self) -> Role {
        self.role
    }

    fn run_saves(&self, dir: &Path, spec: &SaveSpec, device_stat: Option<&Path>) -> anyhow::Result<SaveRun> {
        let storage =
            Storage::create(dir, b"segstore-bench", Options { segment_size_bytes: self.segment_size_bytes, ..Options::default() })?;
        storage.log().wait_for_preparation();
        let data = DataPool::new(spec.entry_data_bytes);
        let run = drive_saves(spec, device_stat, |_, sequence| {
            if self.cut_every_saves.is_some_and(|every| sequence > 0 && sequence % every == 0) {
                storage.cut()?;
            }
            let index = sequence + 1;
            storage.save(&hard_state(index), &entries(index, 1, &data))?;
            Ok(())
        })?;
        let cuts = storage.log().segment_count() - 1;
        anyhow::ensure!(
            self.role == Role::Limit || cuts >= 20,
            "{}: the run cut {cuts} times, fewer than the 20 it is meant to cross",
            self.name
        );
        anyhow::ensure!(self.role == Role::Ours || cuts == 0, "the reference run cut {cuts} times");
        storage.close()?;
        Ok(run)
    }
}

pub fn run_cuts(
    spec: &SaveSpec,
    rounds: usize,
    scratch: &Path,
    device_stat: Option<&Path>,
    tick: &mut dyn FnMut(&str),
) -> anyhow::Result<Comparison> {
    let variants = CuttingSegstore::variants(spec, CUTS);
    let contenders: Vec<&dyn Contender> = variants.iter().map(|variant| variant as &dyn Contender).collect();
    Comparison::run(&contenders, spec, rounds, scratch, device_stat, tick)
}
