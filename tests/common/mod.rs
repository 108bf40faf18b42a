//! Helpers shared by the integration tests: options, seeds, the segment files of a log
//! directory as bytes on disk, and reading a log back.

// Each test crate uses its own subset of these helpers.
#![allow(dead_code)]

#[cfg(feature = "fault-injection")]
pub mod crash_sim;
pub mod raft;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use segstore::segment::{parse_file_name, SEGMENT_HEADER_SIZE};
use segstore::{Appended, Log, Options, Position, RecordKind, SyncMode};

pub const KIND: RecordKind = RecordKind(16);

/// The directory lock: created by every open, never part of a log's contents.
pub const LOCK_FILE_NAME: &str = "LOCK";

pub fn options(segment_size_bytes: u64, sync_mode: SyncMode) -> Options {
    Options { segment_size_bytes, sync_mode }
}

/// The seed of a randomized test: `SEGSTORE_TEST_SEED` when set (to replay a failure),
/// a fresh one otherwise.
pub fn test_seed() -> u64 {
    match std::env::var("SEGSTORE_TEST_SEED") {
        Ok(text) => text.trim().parse().unwrap_or_else(|_| panic!("SEGSTORE_TEST_SEED={text:?} is not a u64")),
        Err(_) => {
            use std::hash::{BuildHasher, Hasher};
            let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
            hasher.write_u128(std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos());
            hasher.finish()
        }
    }
}

/// Prints the seed when the test panics while the guard lives, so the failure can be
/// replayed with `SEGSTORE_TEST_SEED`.
pub struct SeedGuard {
    pub test: &'static str,
    pub seed: u64,
}

impl Drop for SeedGuard {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("{} failed with seed {}; replay with SEGSTORE_TEST_SEED={}", self.test, self.seed, self.seed);
        }
    }
}

/// One segment file as found in a directory.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SegmentOnDisk {
    pub path: PathBuf,
    pub sequence: u64,
    pub base_position: u64,
}

impl SegmentOnDisk {
    pub fn name(&self) -> String {
        self.path.file_name().unwrap().to_str().unwrap().to_string()
    }

    /// The offset in this file of log position `position`.
    pub fn offset_of(&self, position: u64) -> u64 {
        position - self.base_position
    }
}

/// The segment files of `directory`, in log order.
pub fn segment_files(directory: &Path) -> Vec<SegmentOnDisk> {
    let mut segments: Vec<SegmentOnDisk> = std::fs::read_dir(directory)
        .unwrap()
        .filter_map(|entry| {
            let path = entry.unwrap().path();
            let (sequence, base_position) = parse_file_name(path.file_name()?.to_str()?)?;
            Some(SegmentOnDisk { path, sequence, base_position })
        })
        .collect();
    segments.sort_by_key(|segment| segment.sequence);
    segments
}

/// The segment file holding log position `position`.
pub fn segment_holding(directory: &Path, position: u64) -> SegmentOnDisk {
    segment_files(directory)
        .into_iter()
        .rev()
        .find(|segment| segment.base_position <= position)
        .unwrap_or_else(|| panic!("no segment holds position {position}"))
}

/// Names of the files in `directory` ending in `suffix`.
pub fn files_ending_in(directory: &Path, suffix: &str) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(directory)
        .unwrap()
        .map(|entry| entry.unwrap().file_name().into_string().unwrap())
        .filter(|name| name.ends_with(suffix))
        .collect();
    names.sort();
    names
}

/// Every file of a log directory (but the lock) with its bytes.
pub fn snapshot(directory: &Path) -> BTreeMap<String, Vec<u8>> {
    std::fs::read_dir(directory)
        .unwrap()
        .map(|entry| entry.unwrap())
        .filter(|entry| entry.file_name() != LOCK_FILE_NAME)
        .map(|entry| (entry.file_name().into_string().unwrap(), std::fs::read(entry.path()).unwrap()))
        .collect()
}

/// Copies the files of a (closed or dropped) log directory into `to`, which must exist.
pub fn copy_log(from: &Path, to: &Path) {
    for (name, bytes) in snapshot(from) {
        std::fs::write(to.join(name), bytes).unwrap();
    }
}

/// Every data record of `log`, in order, as (position, payload).
pub fn records(log: &Log) -> Vec<(u64, Vec<u8>)> {
    log.iter_from(Position(0))
        .map(|record| {
            let record = record.unwrap_or_else(|error| panic!("reading {}: {error}", log.directory().display()));
            (record.position.0, record.payload)
        })
        .collect()
}

/// (position, payload) of appended records, the form [`records`] returns.
pub fn as_records(appended: &[(Appended, Vec<u8>)]) -> Vec<(u64, Vec<u8>)> {
    appended.iter().map(|(at, payload)| (at.position.0, payload.clone())).collect()
}

/// Opens the log, reads every record and drops the log again (without close).
pub fn reopen_and_read(directory: &Path, options: Options) -> Vec<(u64, Vec<u8>)> {
    let log = Log::open(directory, options).unwrap_or_else(|error| panic!("reopening {}: {error}", directory.display()));
    records(&log)
}

/// Payload bytes that differ from record to record.
pub fn payload(rng: &mut impl rand::Rng, size: usize) -> Vec<u8> {
    let mut bytes = vec![0u8; size];
    rng.fill(&mut bytes[..]);
    bytes
}

/// Checks that no byte of any segment's record area at or past log position `end` is
/// set: recovery zeroes a discarded tail, and new segments start zeroed.
pub fn assert_zero_from(directory: &Path, end: u64) {
    for segment in segment_files(directory) {
        let bytes = std::fs::read(&segment.path).unwrap();
        let start = end.saturating_sub(segment.base_position).clamp(SEGMENT_HEADER_SIZE, bytes.len() as u64) as usize;
        if let Some(at) = bytes[start..].iter().position(|&byte| byte != 0) {
            panic!("{}: byte at offset {} is not zero, but the log ends at position {end}", segment.name(), start + at);
        }
    }
}

/// Waits until `condition` holds, for at most 10 s.
pub fn wait_until(what: &str, mut condition: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !condition() {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// Waits until the background preparer has named the segment after the log's last one.
pub fn wait_for_prepared_segment(log: &Log) {
    wait_until("the next segment is prepared", || segment_files(log.directory()).len() > log.segment_count());
}

/// A child process running one ignored test of this very test binary: how a test gets
/// a writer process it can kill. Killed and reaped when dropped, so that none outlives
/// a failed test (or keeps a file system busy).
pub struct ChildTest(pub std::process::Child);

impl ChildTest {
    /// Starts test `test_name` with `env` set, stdin closed, stdout and stderr piped.
    pub fn spawn(test_name: &str, env: &[(&str, std::ffi::OsString)]) -> ChildTest {
        use std::process::{Command, Stdio};
        let child = Command::new(std::env::current_exe().unwrap())
            .args(["--exact", test_name, "--ignored", "--nocapture", "--test-threads=1"])
            .envs(env.iter().map(|(name, value)| (name, value)))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        ChildTest(child)
    }
}

impl Drop for ChildTest {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Minor page faults the calling thread has taken.
pub fn thread_minor_faults() -> u64 {
    let stat = std::fs::read_to_string("/proc/thread-self/stat").unwrap();
    // After "pid (comm) ": state ppid pgrp session tty_nr tpgid flags minflt …
    let fields: Vec<&str> = stat[stat.rfind(')').unwrap() + 2..].split(' ').collect();
    fields[7].parse().unwrap()
}

/// Minor faults the calling thread takes appending `count` 4 KiB records.
pub fn faults_appending_pages(log: &Log, count: usize) -> u64 {
    let payload = vec![7u8; 4096];
    let before = thread_minor_faults();
    for _ in 0..count {
        log.append(KIND, &payload).unwrap();
    }
    thread_minor_faults() - before
}
