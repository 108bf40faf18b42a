//! raft-engine (TiKV's Raft log store) with its documented default configuration: each
//! save is one `LogBatch` of entries plus the hard state, written with `sync = true`.
//! Threads stand for Raft groups ("regions"), as in TiKV.

use std::path::Path;

use raft::eraftpb::{Entry, HardState};
use raft_engine::{Config, Engine, LogBatch, MessageExt};
use segstore_cli::contender::{Contender, Role};
use segstore_cli::workload::{batches, drive_saves, hard_state, DataPool, SaveRun, SaveSpec, TERM};

use crate::recovery::{ReadBack, RecoveryContender};

const HARD_STATE_KEY: &[u8] = b"hard_state";
/// Entries fetched per call when reading a whole region back.
const FETCH_BATCH_ENTRIES: u64 = 4096;

#[derive(Clone)]
struct EntryFormat;

impl MessageExt for EntryFormat {
    type Entry = Entry;

    fn index(entry: &Entry) -> u64 {
        entry.index
    }
}

pub struct RaftEnginePeer;

fn open(dir: &Path) -> anyhow::Result<Engine> {
    let config = Config { dir: dir.to_str().ok_or_else(|| anyhow::anyhow!("non-UTF-8 path"))?.to_string(), ..Config::default() };
    Ok(Engine::open(config)?)
}

/// One save: entries `first..first + count` of `region`, and the hard state that
/// commits the entries before them.
fn batch(region: u64, first: u64, count: usize, data: &DataPool) -> anyhow::Result<LogBatch> {
    let entries: Vec<Entry> =
        (first..first + count as u64).map(|index| Entry { term: TERM, index, data: data.get(index).clone(), ..Entry::default() }).collect();
    let committed = hard_state(first + count as u64 - 1);
    let hard_state = HardState { term: committed.term, vote: committed.vote, commit: committed.commit, ..HardState::default() };
    let mut batch = LogBatch::default();
    batch.add_entries::<EntryFormat>(region, &entries)?;
    batch.put_message(region, HARD_STATE_KEY.to_vec(), &hard_state)?;
    Ok(batch)
}

impl Contender for RaftEnginePeer {
    fn name(&self) -> &str {
        "raft-engine"
    }

    fn role(&self) -> Role {
        Role::Peer
    }

    fn run_saves(&self, dir: &Path, spec: &SaveSpec, device_stat: Option<&Path>) -> anyhow::Result<SaveRun> {
        let engine = open(dir)?;
        let data = DataPool::new(spec.entry_data_bytes);
        let per_save = spec.entries_per_save as u64;
        drive_saves(spec, device_stat, |thread, sequence| {
            let mut batch = batch(thread as u64 + 1, sequence * per_save + 1, spec.entries_per_save, &data)?;
            engine.write(&mut batch, true)?;
            Ok(())
        })
    }
}

impl RecoveryContender for RaftEnginePeer {
    fn name(&self) -> &str {
        "raft-engine"
    }

    fn key(&self) -> &str {
        "raft-engine"
    }

    fn write(&self, dir: &Path, entries: u64, entry_data_bytes: usize, entries_per_save: usize) -> anyhow::Result<()> {
        let engine = open(dir)?;
        let data = DataPool::new(entry_data_bytes);
        for (first, count) in batches(entries, entries_per_save) {
            engine.write(&mut batch(1, first, count, &data)?, true)?;
        }
        Ok(())
    }

    fn read(&self, dir: &Path) -> anyhow::Result<ReadBack> {
        let engine = open(dir)?;
        let mut read = ReadBack::default();
        if let (Some(first), Some(last)) = (engine.first_index(1), engine.last_index(1)) {
            let mut entries = Vec::with_capacity(FETCH_BATCH_ENTRIES as usize);
            let mut low = first;
            while low <= last {
                let high = (low + FETCH_BATCH_ENTRIES).min(last + 1);
                entries.clear();
                engine.fetch_entries_to::<EntryFormat>(1, low, high, None, &mut entries)?;
                for entry in &entries {
                    read.entries += 1;
                    read.data_bytes += entry.data.len() as u64;
                }
                low = high;
            }
        }
        Ok(read)
    }
}
