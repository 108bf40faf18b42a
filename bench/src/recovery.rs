//! W4, recovery: a 1 GiB log written once per engine, then reopened and read back in
//! full by a new process, with the page cache dropped (cold) and again right after
//! (warm). Each child times its own open + read and reports its own peak resident set
//! (`VmHWM`: the parent cannot use `wait4`'s `ru_maxrss`, which keeps the high-water
//! mark of the parent's memory the child was forked from). A raw sequential read of
//! segstore's segment files is the limit.

use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::Context;
use segstore::{Options, SnapshotMarker, Storage};
use segstore_cli::comparison::turns;
use segstore_cli::io_counters::{device_read_bytes, drop_page_cache, peak_rss_bytes};
use segstore_cli::stats::{paired_ratio, Spread};
use segstore_cli::workload::{batches, entries, hard_state, DataPool};

use crate::etcd_peer::parse_report;

const RAW_READ_CHUNK_BYTES: usize = 1 << 20;

/// What a child read back.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ReadBack {
    pub entries: u64,
    pub data_bytes: u64,
}

pub trait RecoveryContender: Sync {
    fn name(&self) -> &str;

    /// The name the child process is told, and the log directory's prefix.
    fn key(&self) -> &str;

    /// The contender whose log this one reads instead of writing its own.
    fn reads_log_of(&self) -> Option<&str> {
        None
    }

    /// Whether it reads entries (checked against what was written), not just bytes.
    fn counts_entries(&self) -> bool {
        true
    }

    /// Writes `entries` Raft entries of `entry_data_bytes`, `entries_per_save` per
    /// durable save, into `dir`, which does not exist yet.
    fn write(&self, dir: &Path, entries: u64, entry_data_bytes: usize, entries_per_save: usize) -> anyhow::Result<()>;

    /// Opens the log in `dir` and reads every entry (in the child process).
    fn read(&self, dir: &Path) -> anyhow::Result<ReadBack>;

    /// The child process that opens and reads `dir`.
    fn read_command(&self, dir: &Path) -> anyhow::Result<Command> {
        let mut command = Command::new(std::env::current_exe()?);
        command.arg("child-read").arg(self.key()).arg(dir);
        Ok(command)
    }
}

/// segstore, as a node replaying its log at boot reads it: `Storage::open_replaying`,
/// one pass that opens the log and hands over every entry; or, with `two_pass`,
/// `Storage::open` and then `for_each_entry`, which reads and checks everything twice.
pub struct SegstoreRecovery {
    pub two_pass: bool,
}

impl RecoveryContender for SegstoreRecovery {
    fn name(&self) -> &str {
        if self.two_pass {
            "segstore, open then for_each_entry"
        } else {
            "segstore"
        }
    }

    fn key(&self) -> &str {
        if self.two_pass {
            "segstore-two-pass"
        } else {
            "segstore"
        }
    }

    fn reads_log_of(&self) -> Option<&str> {
        self.two_pass.then_some("segstore")
    }

    fn write(&self, dir: &Path, count: u64, entry_data_bytes: usize, entries_per_save: usize) -> anyhow::Result<()> {
        let storage = Storage::create(dir, b"segstore-bench", Options::default())?;
        let data = DataPool::new(entry_data_bytes);
        for (first, batch_entries) in batches(count, entries_per_save) {
            let batch = entries(first, batch_entries, &data);
            storage.save(&hard_state(first + batch.len() as u64 - 1), &batch)?;
        }
        storage.close()?;
        Ok(())
    }

    fn read(&self, dir: &Path) -> anyhow::Result<ReadBack> {
        let mut read = ReadBack::default();
        let mut count = |entry: segstore::raftpb::Entry| {
            read.entries += 1;
            read.data_bytes += entry.data.map_or(0, |data| data.len() as u64);
        };
        let start = SnapshotMarker::new(0, 0);
        if self.two_pass {
            let storage = Storage::open(dir, &start, Options::default())?;
            storage.for_each_entry(storage.first_index(), |entry| {
                count(entry);
                true
            })?;
        } else {
            Storage::open_replaying(dir, &start, Options::default(), count)?;
        }
        Ok(read)
    }
}

/// The limit: segstore's segment files read front to back with 1 MiB reads. Reports
/// bytes, not entries.
pub struct RawRead;

impl RecoveryContender for RawRead {
    fn name(&self) -> &str {
        "raw sequential read"
    }

    fn key(&self) -> &str {
        "raw-read"
    }

    fn reads_log_of(&self) -> Option<&str> {
        Some("segstore")
    }

    fn counts_entries(&self) -> bool {
        false
    }

    fn write(&self, _dir: &Path, _entries: u64, _entry_data_bytes: usize, _entries_per_save: usize) -> anyhow::Result<()> {
        Ok(())
    }

    fn read(&self, dir: &Path) -> anyhow::Result<ReadBack> {
        let mut files: Vec<PathBuf> = std::fs::read_dir(dir)?.map(|entry| entry.map(|entry| entry.path())).collect::<Result<_, _>>()?;
        files.retain(|path| path.extension().is_some_and(|extension| extension == "seg"));
        files.sort();
        let mut buffer = vec![0u8; RAW_READ_CHUNK_BYTES];
        let mut read = ReadBack::default();
        for path in files {
            let mut file = File::open(&path)?;
            loop {
                let length = file.read(&mut buffer)?;
                if length == 0 {
                    break;
                }
                read.data_bytes += length as u64;
            }
        }
        Ok(read)
    }
}

/// Runs in the child: reads `dir` with the contender named `key` and prints what it
/// read and how long it took, for the parent to parse.
pub fn child_read(contenders: &[&dyn RecoveryContender], key: &str, dir: &Path) -> anyhow::Result<()> {
    let contender = contenders.iter().find(|contender| contender.key() == key).with_context(|| format!("no engine {key}"))?;
    let started = std::time::Instant::now();
    let read = contender.read(dir)?;
    let elapsed = started.elapsed();
    println!("entries {}\ndata_bytes {}\nelapsed_ns {}", read.entries, read.data_bytes, elapsed.as_nanos());
    if let Some(peak) = peak_rss_bytes() {
        println!("peak_rss_bytes {peak}");
    }
    Ok(())
}

#[derive(Clone, Debug)]
pub struct RecoverySpec {
    pub entries: u64,
    pub entry_data_bytes: usize,
    pub entries_per_save: usize,
}

/// One child's figures.
#[derive(Clone, Copy, Debug)]
pub struct RecoveryRun {
    pub seconds: f64,
    pub peak_rss_bytes: f64,
    pub device_read_bytes: f64,
}

pub struct RecoveryComparison {
    pub names: Vec<String>,
    /// `cold[contender][round]`; empty when the page cache could not be dropped.
    pub cold: Vec<Vec<RecoveryRun>>,
    pub warm: Vec<Vec<RecoveryRun>>,
    pub cold_skipped: Option<String>,
}

impl RecoveryComparison {
    pub fn spread(runs: &[RecoveryRun], value: impl Fn(&RecoveryRun) -> f64) -> Option<Spread> {
        Spread::of(&runs.iter().map(value).collect::<Vec<_>>())
    }

    pub fn ratio(a: &[RecoveryRun], b: &[RecoveryRun], value: impl Fn(&RecoveryRun) -> f64) -> f64 {
        paired_ratio(&a.iter().map(&value).collect::<Vec<_>>(), &b.iter().map(&value).collect::<Vec<_>>())
    }

    pub fn index_of(&self, name: &str) -> Option<usize> {
        self.names.iter().position(|candidate| candidate == name)
    }
}

fn log_dir(root: &Path, key: &str, spec: &RecoverySpec) -> PathBuf {
    root.join(format!("w4-{key}-{}x{}", spec.entries, spec.entry_data_bytes))
}

/// Writes each contender's log unless a complete one from an earlier run is there.
pub fn prepare_logs(
    contenders: &[&dyn RecoveryContender],
    spec: &RecoverySpec,
    root: &Path,
    tick: &mut dyn FnMut(&str),
) -> anyhow::Result<()> {
    for contender in contenders.iter().filter(|contender| contender.reads_log_of().is_none()) {
        let dir = log_dir(root, contender.key(), spec);
        let complete = dir.with_extension("complete");
        if complete.exists() {
            continue;
        }
        tick(&format!("writing {}'s log", contender.name()));
        if dir.exists() {
            std::fs::remove_dir_all(&dir)?;
        }
        contender
            .write(&dir, spec.entries, spec.entry_data_bytes, spec.entries_per_save)
            .with_context(|| format!("{} write", contender.name()))?;
        std::fs::write(&complete, b"")?;
    }
    Ok(())
}

fn read_once(
    contender: &dyn RecoveryContender,
    dir: &Path,
    spec: &RecoverySpec,
    device_stat: Option<&Path>,
) -> anyhow::Result<RecoveryRun> {
    let before = device_stat.and_then(device_read_bytes);
    let mut command = contender.read_command(dir)?;
    let output = command.stderr(Stdio::inherit()).output().with_context(|| format!("run {command:?}"))?;
    let after = device_stat.and_then(device_read_bytes);
    anyhow::ensure!(output.status.success(), "{} read failed ({})", contender.name(), output.status);
    let stdout = String::from_utf8_lossy(&output.stdout);
    let report = parse_report(&stdout);
    let number = |key: &str| -> anyhow::Result<u64> {
        report.get(key).with_context(|| format!("{} printed no {key}: {stdout:?}", contender.name()))?.parse().context("a number")
    };
    if contender.counts_entries() {
        let expected = ReadBack { entries: spec.entries, data_bytes: spec.entries * spec.entry_data_bytes as u64 };
        let read = ReadBack { entries: number("entries")?, data_bytes: number("data_bytes")? };
        anyhow::ensure!(read == expected, "{} read back {read:?}, not {expected:?}", contender.name());
    }
    Ok(RecoveryRun {
        seconds: number("elapsed_ns")? as f64 / 1e9,
        peak_rss_bytes: number("peak_rss_bytes").map_or(f64::NAN, |bytes| bytes as f64),
        device_read_bytes: match (before, after) {
            (Some(before), Some(after)) => after.saturating_sub(before) as f64,
            _ => f64::NAN,
        },
    })
}

/// Rounds of cold-then-warm reads, the contenders taking turns.
pub fn run_recovery(
    contenders: &[&dyn RecoveryContender],
    spec: &RecoverySpec,
    rounds: usize,
    root: &Path,
    device_stat: Option<&Path>,
    tick: &mut dyn FnMut(&str),
) -> anyhow::Result<RecoveryComparison> {
    prepare_logs(contenders, spec, root, tick)?;
    // Cold reads need the page cache dropped, which needs root: find out once.
    let cold_skipped = drop_page_cache().err();
    let mut cold: Vec<Vec<RecoveryRun>> = vec![Vec::new(); contenders.len()];
    let mut warm: Vec<Vec<RecoveryRun>> = vec![Vec::new(); contenders.len()];
    for (round, index) in turns(rounds, contenders.len()) {
        let contender = contenders[index];
        let dir = log_dir(root, contender.reads_log_of().unwrap_or(contender.key()), spec);
        tick(&format!("round {}/{rounds}: {}", round + 1, contender.name()));
        if cold_skipped.is_none() {
            drop_page_cache().map_err(anyhow::Error::msg)?;
            cold[index].push(read_once(contender, &dir, spec, device_stat)?);
        } else {
            // Fills the cache for the warm read, as the cold read does otherwise.
            read_once(contender, &dir, spec, device_stat)?;
        }
        warm[index].push(read_once(contender, &dir, spec, device_stat)?);
    }
    Ok(RecoveryComparison { names: contenders.iter().map(|contender| contender.name().to_string()).collect(), cold, warm, cold_skipped })
}
