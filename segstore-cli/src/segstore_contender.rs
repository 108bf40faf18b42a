//! segstore in the save workloads: one writer saves Raft Readies through [`Storage`],
//! as a Raft node does; many writers append to one shared [`Log`], as the groups of a
//! multi-raft node share one log, each save waiting for its own records to be durable.

use std::path::Path;

use prost::Message;
use segstore::{Log, Options, RecordKind, Storage, SyncMode};

use crate::contender::{Contender, Role};
use crate::workload::{drive_saves, entries, hard_state, DataPool, SaveRun, SaveSpec};

/// The record kind of the many-writer workload's entries (any data kind would do).
const SHARED_ENTRY_KIND: RecordKind = RecordKind(64);

pub struct Segstore {
    name: String,
    options: Options,
}

impl Segstore {
    pub fn new(sync_mode: SyncMode) -> Segstore {
        let name = match sync_mode {
            SyncMode::Msync => "segstore",
            SyncMode::Fdatasync => "segstore fdatasync",
            SyncMode::None => "segstore (no sync)",
        };
        Segstore { name: name.into(), options: Options { sync_mode, ..Options::default() } }
    }

    pub fn with_segment_size_bytes(mut self, segment_size_bytes: u64) -> Segstore {
        self.options.segment_size_bytes = segment_size_bytes;
        self
    }

    pub fn options(&self) -> &Options {
        &self.options
    }
}

impl Contender for Segstore {
    fn name(&self) -> &str {
        &self.name
    }

    fn role(&self) -> Role {
        Role::Ours
    }

    fn run_saves(&self, dir: &Path, spec: &SaveSpec, device_stat: Option<&Path>) -> anyhow::Result<SaveRun> {
        let data = DataPool::new(spec.entry_data_bytes);
        let per_save = spec.entries_per_save as u64;
        if spec.threads == 1 {
            let storage = Storage::create(dir, b"segstore-bench", self.options.clone())?;
            storage.log().wait_for_preparation();
            let run = drive_saves(spec, device_stat, |_, sequence| {
                let first = sequence * per_save + 1;
                storage.save(&hard_state(first + per_save - 1), &entries(first, spec.entries_per_save, &data))?;
                Ok(())
            })?;
            storage.close()?;
            return Ok(run);
        }
        let log = Log::open(dir, self.options.clone())?;
        log.wait_for_preparation();
        let run = drive_saves(spec, device_stat, |_, sequence| {
            // Each thread stands for a Raft group with indexes of its own.
            let first = sequence * per_save + 1;
            let mut end = None;
            for entry in entries(first, spec.entries_per_save, &data) {
                let (appended, ()) = log.append_with(SHARED_ENTRY_KIND, entry.encoded_len(), |mut bytes| entry.encode_raw(&mut bytes))?;
                end = Some(appended.end);
            }
            log.wait_durable(end.expect("a save has entries"))?;
            Ok(())
        })?;
        log.close()?;
        Ok(run)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn single_writer_saves_are_readable_raft_entries() {
        let dir = tempfile::tempdir().unwrap();
        let spec = SaveSpec { saves: 5, entries_per_save: 3, entry_data_bytes: 50, threads: 1, warmup_saves: 2, busy_threads: 0 };
        let contender = Segstore::new(SyncMode::Msync).with_segment_size_bytes(1 << 20);
        let run = contender.run_saves(&dir.path().join("log"), &spec, None).unwrap();
        assert_eq!(run.saves(), 5);
        let marker = segstore::SnapshotMarker::new(0, 0);
        let storage = Storage::open_read_only(dir.path().join("log"), &marker).unwrap();
        assert_eq!((storage.first_index(), storage.last_index()), (1, 21));
        assert_eq!(storage.entries(21, 22, None).unwrap()[0].data.as_ref(), Some(DataPool::new(50).get(21)));
    }

    #[test]
    fn many_writers_share_one_log() {
        let dir = tempfile::tempdir().unwrap();
        let spec = SaveSpec { saves: 40, entries_per_save: 2, entry_data_bytes: 30, threads: 4, warmup_saves: 0, busy_threads: 0 };
        let run =
            Segstore::new(SyncMode::Fdatasync).with_segment_size_bytes(1 << 20).run_saves(&dir.path().join("log"), &spec, None).unwrap();
        assert_eq!(run.saves(), 40);
        let log = Log::open_read_only(dir.path().join("log")).unwrap();
        let records = log.iter_from(log.first_position()).filter(|record| record.as_ref().unwrap().kind == SHARED_ENTRY_KIND).count();
        assert_eq!(records, 80);
    }
}
