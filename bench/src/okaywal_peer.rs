//! okaywal with its default configuration: each save is one entry whose chunks are the
//! encoded Raft entries and hard state, committed (synced, group-committed with any
//! other thread's entries). For the recovery workload checkpointing is turned off, so
//! that every entry is still in the log to be read back, as the other logs keep theirs.

use std::io;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use okaywal::{Configuration, Entry, EntryId, LogManager, SegmentReader, WriteAheadLog};
use prost::Message;
use segstore_cli::contender::{Contender, Role};
use segstore_cli::workload::{batches, drive_saves, entries, hard_state, DataPool, SaveRun, SaveSpec};

use crate::recovery::{ReadBack, RecoveryContender};

/// Replays every entry at recovery, decoding each chunk as a Raft entry, and keeps
/// nothing at checkpoints (the saves workloads never read back).
#[derive(Debug, Default)]
struct Replay {
    entries: Arc<AtomicU64>,
    data_bytes: Arc<AtomicU64>,
}

impl LogManager for Replay {
    fn recover(&mut self, entry: &mut Entry<'_>) -> io::Result<()> {
        let Some(mut chunks) = entry.read_all_chunks()? else { return Ok(()) };
        // The last chunk of a save is its hard state.
        chunks.pop();
        for chunk in chunks {
            let decoded = segstore::raftpb::Entry::decode(&chunk[..]).map_err(|error| io::Error::new(io::ErrorKind::InvalidData, error))?;
            self.entries.fetch_add(1, Ordering::Relaxed);
            self.data_bytes.fetch_add(decoded.data.map_or(0, |data| data.len() as u64), Ordering::Relaxed);
        }
        Ok(())
    }

    fn checkpoint_to(&mut self, _last: EntryId, _entries: &mut SegmentReader, _wal: &WriteAheadLog) -> io::Result<()> {
        Ok(())
    }
}

pub struct OkaywalPeer;

/// One save as one committed entry.
fn save(wal: &WriteAheadLog, first: u64, count: usize, data: &DataPool) -> anyhow::Result<()> {
    let mut writer = wal.begin_entry()?;
    for entry in entries(first, count, data) {
        writer.write_chunk(&entry.encode_to_vec())?;
    }
    writer.write_chunk(&hard_state(first + count as u64 - 1).encode_to_vec())?;
    writer.commit()?;
    Ok(())
}

impl Contender for OkaywalPeer {
    fn name(&self) -> &str {
        "okaywal"
    }

    fn role(&self) -> Role {
        Role::Peer
    }

    fn run_saves(&self, dir: &Path, spec: &SaveSpec, device_stat: Option<&Path>) -> anyhow::Result<SaveRun> {
        let wal = WriteAheadLog::recover(dir, Replay::default())?;
        let data = DataPool::new(spec.entry_data_bytes);
        let per_save = spec.entries_per_save as u64;
        let run = drive_saves(spec, device_stat, |_, sequence| save(&wal, sequence * per_save + 1, spec.entries_per_save, &data))?;
        wal.shutdown()?;
        Ok(run)
    }
}

impl RecoveryContender for OkaywalPeer {
    fn name(&self) -> &str {
        "okaywal"
    }

    fn key(&self) -> &str {
        "okaywal"
    }

    fn write(&self, dir: &Path, entries: u64, entry_data_bytes: usize, entries_per_save: usize) -> anyhow::Result<()> {
        let wal = Configuration::default_for(dir).checkpoint_after_bytes(u64::MAX).open(Replay::default())?;
        let data = DataPool::new(entry_data_bytes);
        for (first, count) in batches(entries, entries_per_save) {
            save(&wal, first, count, &data)?;
        }
        wal.shutdown()?;
        Ok(())
    }

    fn read(&self, dir: &Path) -> anyhow::Result<ReadBack> {
        let replay = Replay::default();
        let (entries, data_bytes) = (replay.entries.clone(), replay.data_bytes.clone());
        let wal = Configuration::default_for(dir).checkpoint_after_bytes(u64::MAX).open(replay)?;
        let read = ReadBack { entries: entries.load(Ordering::Relaxed), data_bytes: data_bytes.load(Ordering::Relaxed) };
        wal.shutdown()?;
        Ok(read)
    }
}
