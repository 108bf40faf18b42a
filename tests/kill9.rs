//! The kill -9 loop: a child process appends durably from several
//! threads and prints every acknowledgment; the parent kills it with SIGKILL at a random
//! moment, recovers the log and checks that every acknowledged record is there byte for
//! byte and that nothing appears that no writer wrote. The page cache survives a killed
//! process, so this tests holes, half-written records, recovery of recovered logs and
//! the acknowledgment rule, not power loss (see `storage_crash.rs` for that).
//!
//! Two children: one appends to a `Log` from four threads while another cuts every few
//! milliseconds (so kills land in rotations); one runs the Raft storage cycle (saves,
//! cuts, snapshot file + `save_snapshot` + `release_to` + purge) and the parent boots it
//! as etcd does. Each directory is reused for several kills before a fresh one.
//!
//! 20 kills per child by default; for a long run:
//!
//!     SEGSTORE_KILL9_ITERATIONS=500 cargo test --release --test kill9
//!
//! The child is this test binary run again with an environment variable saying which.

mod common;

use std::collections::{BTreeMap, HashMap};
use std::io::{BufRead, BufReader, Read};
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::ExitStatus;
use std::sync::mpsc;
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use bytes::Bytes;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use segstore::raftpb::{ConfState, Entry, EntryType, HardState, Snapshot, SnapshotMetadata};
use segstore::{Error, Log, Options, Position, SnapshotMarker, Snapshotter, Storage, SyncMode};

use common::raft::entry_data;
use common::{test_seed, ChildTest, SeedGuard, KIND};

const DEFAULT_ITERATIONS: usize = 20;
const ITERATIONS_ENV: &str = "SEGSTORE_KILL9_ITERATIONS";
/// Kills a directory goes through before the next iteration starts a fresh one.
const KILLS_PER_DIRECTORY: usize = 10;
const LOG_WRITER_THREADS: u32 = 4;
const SEGMENT_SIZE_BYTES: u64 = 64 << 10;
const METADATA: &[u8] = b"kill9 cluster, member 1";
const MAX_ENTRIES_PER_SAVE: u64 = 8;
const SNAPSHOT_FILES_KEPT: usize = 3;
const SIGKILL: i32 = 9;

/// Selects the child's part; its value is the run number (which names the records).
const CHILD_RUN_ENV: &str = "SEGSTORE_KILL9_CHILD_RUN";
const CHILD_DIRECTORY_ENV: &str = "SEGSTORE_KILL9_CHILD_DIRECTORY";
const LOG_CHILD: &str = "kill9_log_child";
const STORAGE_CHILD: &str = "kill9_storage_child";
/// A child nobody kills exits by itself after this long.
const CHILD_LIFETIME: Duration = Duration::from_secs(30);
/// Starts every line a child prints for the parent (the test harness may print before
/// it on the same line).
const LINE_TAG: &str = "@@ ";

/// The tests of this file run one at a time: a process one of them spawns holds copies of
/// every descriptor of this process until it execs, among them the directory lock
/// (`flock`) of a log another test just dropped, whose next open then fails as
/// `AlreadyInUse`.
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

fn one_at_a_time() -> MutexGuard<'static, ()> {
    ONE_AT_A_TIME.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn iterations() -> usize {
    match std::env::var(ITERATIONS_ENV) {
        Ok(text) => text.trim().parse().unwrap_or_else(|_| panic!("{ITERATIONS_ENV}={text:?} is not a count")),
        Err(_) => DEFAULT_ITERATIONS,
    }
}

fn log_options(run: u32) -> Options {
    // Both sync modes, alternately: they differ in what a sync covers.
    let sync_mode = if run.is_multiple_of(2) { SyncMode::Msync } else { SyncMode::Fdatasync };
    Options { segment_size_bytes: SEGMENT_SIZE_BYTES, sync_mode }
}

fn storage_options() -> Options {
    Options { segment_size_bytes: SEGMENT_SIZE_BYTES, sync_mode: SyncMode::Msync }
}

// ---------------------------------------------------------------------------------------
// Running a child and killing it.

/// When to send SIGKILL.
#[derive(Clone, Copy, Debug)]
enum KillAt {
    /// This long after the spawn: often while the child opens (recovers) the log.
    AfterSpawn(Duration),
    /// This long after the child says it has opened the log.
    AfterOpen(Duration),
}

fn pick_kill_moment(rng: &mut StdRng) -> KillAt {
    if rng.gen_bool(0.2) {
        KillAt::AfterSpawn(Duration::from_millis(rng.gen_range(0..60)))
    } else {
        KillAt::AfterOpen(Duration::from_millis(rng.gen_range(2..250)))
    }
}

struct Killed {
    /// Every whole line the child printed before it died, tag removed.
    lines: Vec<String>,
}

/// Runs child `test_name` on `directory` as run `run` and kills it at `kill_at`. Panics
/// if the child ends any other way.
fn run_and_kill(test_name: &str, directory: &Path, run: u32, kill_at: KillAt) -> Killed {
    let mut child =
        ChildTest::spawn(test_name, &[(CHILD_RUN_ENV, run.to_string().into()), (CHILD_DIRECTORY_ENV, directory.as_os_str().to_owned())]);
    let spawned = Instant::now();
    let stdout = child.0.stdout.take().unwrap();
    let mut stderr = child.0.stderr.take().unwrap();
    let (sender, receiver) = mpsc::channel();
    let stdout_reader = std::thread::spawn(move || {
        let mut reader = BufReader::new(stdout);
        loop {
            let mut line = String::new();
            match reader.read_line(&mut line) {
                // A line cut short by the kill is not an acknowledgment.
                Ok(_) if line.ends_with('\n') => {
                    if let Some((_, fact)) = line.trim_end().split_once(LINE_TAG) {
                        let _ = sender.send(fact.to_string());
                    }
                }
                _ => break,
            }
        }
    });
    let stderr_reader = std::thread::spawn(move || {
        let mut text = String::new();
        let _ = stderr.read_to_string(&mut text);
        text
    });

    let mut lines = Vec::new();
    let mut kill_deadline = match kill_at {
        KillAt::AfterSpawn(delay) => Some(spawned + delay),
        KillAt::AfterOpen(_) => None,
    };
    let give_up = spawned + Duration::from_secs(20);
    let mut ended_early = false;
    loop {
        let until = kill_deadline.unwrap_or(give_up).min(give_up);
        let Some(wait) = until.checked_duration_since(Instant::now()) else { break };
        match receiver.recv_timeout(wait) {
            Ok(line) => {
                if let (None, KillAt::AfterOpen(delay)) = (kill_deadline, kill_at) {
                    if line.starts_with("open ") {
                        kill_deadline = Some(Instant::now() + delay);
                    }
                }
                lines.push(line);
            }
            Err(mpsc::RecvTimeoutError::Timeout) => break,
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                ended_early = true;
                break;
            }
        }
    }
    let _ = child.0.kill();
    let status: ExitStatus = child.0.wait().unwrap();
    stdout_reader.join().unwrap();
    // Lines still in the pipe were printed before the kill: acknowledgments all the same.
    lines.extend(receiver.try_iter());
    let stderr = stderr_reader.join().unwrap();
    let context = || format!("{test_name} run {run} ({kill_at:?}): {status}\nlast lines:\n{}\nstderr:\n{stderr}", tail(&lines, 20));
    assert!(!ended_early && status.signal() == Some(SIGKILL), "the child did not live until it was killed: {}", context());
    assert!(kill_deadline.is_some(), "the child never opened its log: {}", context());
    Killed { lines }
}

fn tail(lines: &[String], count: usize) -> String {
    lines[lines.len().saturating_sub(count)..].join("\n")
}

fn child_arguments() -> Option<(PathBuf, u32)> {
    let run = std::env::var(CHILD_RUN_ENV).ok()?.parse().unwrap();
    let directory = PathBuf::from(std::env::var_os(CHILD_DIRECTORY_ENV).unwrap());
    // Nothing may keep a child alive if its parent is gone.
    std::thread::spawn(|| {
        std::thread::sleep(CHILD_LIFETIME);
        std::process::exit(3);
    });
    Some((directory, run))
}

/// A child's fatal error: printed for the parent, which sees the child exit unkilled.
fn die(what: &str, error: Error) -> ! {
    eprintln!("{what} failed: {error} ({error:?})");
    std::process::exit(2);
}

/// Where the last of `stages` (child lines naming steps of one thread) says the thread
/// was when the kill came, or "none".
fn last_stage<'a>(lines: &'a [String], stages: &[&str]) -> &'a str {
    lines.iter().rev().filter_map(|line| line.split(' ').next()).find(|word| stages.contains(word)).unwrap_or("none")
}

/// How often kills landed at each place.
#[derive(Default)]
struct KillCounts(BTreeMap<String, usize>);

impl KillCounts {
    fn add(&mut self, place: impl Into<String>) {
        *self.0.entry(place.into()).or_default() += 1;
    }
}

impl std::fmt::Display for KillCounts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let parts: Vec<String> = self.0.iter().map(|(place, count)| format!("{place}: {count}")).collect();
        write!(f, "{}", parts.join(", "))
    }
}

// ---------------------------------------------------------------------------------------
// The Log child: four writers and a cutter.

/// Who appended a record: the run (child process), the writer thread, and its count.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
struct Identity {
    run: u32,
    thread: u32,
    sequence: u32,
}

fn mix(mut value: u64) -> u64 {
    value = value.wrapping_add(0x9e37_79b9_7f4a_7c15);
    value = (value ^ (value >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    value = (value ^ (value >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    value ^ (value >> 31)
}

/// The record `identity` appends: its identity, then bytes derived from it, 16 to about
/// 1500 bytes in all, so that any record read back can be checked without a copy. Every
/// eighth record of thread 0 is 33 KiB instead: syncs covering it are large enough
/// that, with msync, the preparer faults pages in ahead of the appends.
fn payload(identity: Identity) -> Vec<u8> {
    let seed = mix(u64::from(identity.run) << 40 ^ u64::from(identity.thread) << 32 ^ u64::from(identity.sequence));
    let length = if identity.thread == 0 && identity.sequence % 8 == 7 { 33 << 10 } else { 16 + (seed % 1500) as usize };
    let mut bytes = Vec::with_capacity(length + 8);
    bytes.extend_from_slice(&identity.run.to_le_bytes());
    bytes.extend_from_slice(&identity.thread.to_le_bytes());
    bytes.extend_from_slice(&identity.sequence.to_le_bytes());
    let mut state = seed;
    while bytes.len() < length {
        state = mix(state);
        bytes.extend_from_slice(&state.to_le_bytes());
    }
    bytes.truncate(length);
    bytes
}

fn identity_of(payload: &[u8]) -> Option<Identity> {
    let word = |at: usize| payload.get(at..at + 4).map(|bytes| u32::from_le_bytes(bytes.try_into().unwrap()));
    Some(Identity { run: word(0)?, thread: word(4)?, sequence: word(8)? })
}

#[test]
#[ignore = "the child process of kill9_log_appends_and_cuts, run by it"]
fn kill9_log_child() {
    let Some((directory, run)) = child_arguments() else { return };
    let log = Log::open(&directory, log_options(run)).unwrap_or_else(|error| die("open", error));
    println!("{LINE_TAG}open {}", log.recovery_report().append_position.0);
    std::thread::scope(|scope| {
        for thread in 0..LOG_WRITER_THREADS {
            let log = &log;
            scope.spawn(move || {
                for sequence in 0.. {
                    let identity = Identity { run, thread, sequence };
                    let appended = log.append_durable(KIND, &payload(identity)).unwrap_or_else(|error| die("append", error));
                    // Printed only once durable: the parent holds the log to every line.
                    println!("{LINE_TAG}ack {thread} {sequence} {}", appended.position.0);
                }
            });
        }
        let log = &log;
        scope.spawn(move || {
            let mut rng = StdRng::seed_from_u64(u64::from(run));
            loop {
                std::thread::sleep(Duration::from_micros(rng.gen_range(500..4000)));
                println!("{LINE_TAG}cutting");
                log.cut().unwrap_or_else(|error| die("cut", error));
                println!("{LINE_TAG}cut");
            }
        });
    });
}

/// Every record acknowledged in the directory: position → identity.
type Acknowledged = BTreeMap<u64, Identity>;

#[test]
fn kill9_log_appends_and_cuts() {
    let _one_at_a_time = one_at_a_time();
    let seed = test_seed();
    let _seed_guard = SeedGuard { test: "kill9_log_appends_and_cuts", seed };
    let mut rng = StdRng::seed_from_u64(seed);
    let started = Instant::now();
    let mut directory = tempfile::tempdir().unwrap();
    let mut acknowledged = Acknowledged::new();
    let (mut total_acknowledged, mut total_recovered) = (0, 0);
    let mut kills = KillCounts::default();
    for iteration in 0..iterations() {
        if iteration > 0 && iteration % KILLS_PER_DIRECTORY == 0 {
            directory = tempfile::tempdir().unwrap();
            acknowledged.clear();
        }
        let run = iteration as u32;
        let kill_at = pick_kill_moment(&mut rng);
        let killed = run_and_kill(LOG_CHILD, directory.path(), run, kill_at);
        let case = format!("run {run} ({kill_at:?}, seed {seed})");
        let mut new_acknowledgments = 0;
        for line in &killed.lines {
            if let ["ack", thread, sequence, position] = line.split(' ').collect::<Vec<_>>()[..] {
                let identity = Identity { run, thread: thread.parse().unwrap(), sequence: sequence.parse().unwrap() };
                let previous = acknowledged.insert(position.parse().unwrap(), identity);
                assert!(previous.is_none(), "{case}: position {position} acknowledged twice: {previous:?} and {identity:?}");
                new_acknowledgments += 1;
            }
        }
        total_acknowledged += new_acknowledgments;
        kills.add(match last_stage(&killed.lines, &["open", "cutting", "cut"]) {
            "none" => "before the open returned",
            "cutting" => "during a cut",
            _ => "while appending",
        });

        // Read-only first: it changes nothing, so the next child recovers the raw crash.
        let log = match Log::open_read_only(directory.path()) {
            Ok(log) => log,
            // Killed before the first child created the log's first segment.
            Err(Error::Io { source, .. }) if source.kind() == std::io::ErrorKind::NotFound && acknowledged.is_empty() => continue,
            Err(error) => panic!("{case}: read-only open: {error}"),
        };
        total_recovered += check_log(&log, &acknowledged, &case);
        drop(log);
        let last_of_directory = (iteration + 1) % KILLS_PER_DIRECTORY == 0 || iteration + 1 == iterations();
        if iteration % 3 == 2 || last_of_directory {
            let log = Log::open(directory.path(), log_options(run)).unwrap_or_else(|error| panic!("{case}: open: {error}"));
            check_log(&log, &acknowledged, &format!("{case}, writable open"));
            if rng.gen_bool(0.5) {
                log.close().unwrap();
            }
        }
    }
    println!(
        "kill9 log: {} kills ({kills}); {total_acknowledged} appends acknowledged, {total_recovered} records checked; {:.1} s",
        iterations(),
        started.elapsed().as_secs_f64()
    );
}

/// Checks `log` against what was acknowledged; returns how many records it holds.
fn check_log(log: &Log, acknowledged: &Acknowledged, case: &str) -> usize {
    // Per (run, thread): how many of its records the log holds, which must be its first
    // ones (the log is a prefix of what was written, and each writer appends in order).
    let mut held: HashMap<(u32, u32), u32> = HashMap::new();
    let mut recovered = BTreeMap::new();
    let mut last_run = 0;
    for record in log.iter_from(Position(0)) {
        let record = record.unwrap_or_else(|error| panic!("{case}: reading the log: {error}"));
        let at = record.position.0;
        let identity = identity_of(&record.payload).unwrap_or_else(|| panic!("{case}: the record at {at} names no writer"));
        assert!(record.payload == payload(identity), "{case}: the record at {at} is not what {identity:?} appended");
        assert!(identity.thread < LOG_WRITER_THREADS, "{case}: the record at {at} names writer {identity:?}");
        assert!(identity.run >= last_run, "{case}: the record at {at} of run {} follows one of run {last_run}", identity.run);
        last_run = identity.run;
        let count = held.entry((identity.run, identity.thread)).or_default();
        assert_eq!(identity.sequence, *count, "{case}: the record at {at} is {identity:?}, but {count} came before it from that writer");
        *count += 1;
        recovered.insert(at, identity);
    }
    let mut acknowledged_count: HashMap<(u32, u32), u32> = HashMap::new();
    for (position, identity) in acknowledged {
        assert_eq!(recovered.get(position), Some(identity), "{case}: the acknowledged record at {position} is lost");
        let count = acknowledged_count.entry((identity.run, identity.thread)).or_default();
        *count = (*count).max(identity.sequence + 1);
    }
    // A writer appends its next record only after printing the last acknowledgment.
    for (&(run, thread), &count) in &held {
        let acknowledged = acknowledged_count.get(&(run, thread)).copied().unwrap_or(0);
        assert!(
            count <= acknowledged + 1,
            "{case}: run {run} writer {thread} has {count} records but only {acknowledged} were acknowledged"
        );
    }
    recovered.len()
}

// ---------------------------------------------------------------------------------------
// The Storage child: a Raft loop saving entries, snapshots with releases, cuts.

fn entry_bytes(index: u64, term: u64) -> Bytes {
    entry_data(index, term, 16 + (mix(index ^ term << 48) % 600) as usize)
}

fn snapshot_bytes(index: u64, term: u64) -> Bytes {
    Bytes::from(format!("state machine at {index}/{term}").repeat(8))
}

fn conf_state() -> ConfState {
    ConfState { voters: vec![1], ..ConfState::default() }
}

/// Boots as etcd does: the snapshot markers the hard state commits, the newest snapshot
/// file among them (none: the log's start), the log opened at it.
fn boot(root: &Path, writable: bool) -> Result<(Storage, SnapshotMarker, Option<Snapshot>), Error> {
    let wal = root.join("wal");
    let markers = Storage::valid_snapshot_markers(&wal)?;
    let snapshot = match Snapshotter::new(root.join("snap"))?.load_newest_available(&markers) {
        Ok(snapshot) => Some(snapshot),
        Err(Error::NoSnapshot) => None,
        Err(error) => return Err(error),
    };
    let start = snapshot
        .as_ref()
        .map_or(SnapshotMarker::new(0, 0), |snapshot| SnapshotMarker::new(snapshot.metadata.index, snapshot.metadata.term));
    let storage = if writable { Storage::open(&wal, &start, storage_options())? } else { Storage::open_read_only(&wal, &start)? };
    Ok((storage, start, snapshot))
}

#[test]
#[ignore = "the child process of kill9_storage_snapshots, run by it"]
fn kill9_storage_child() {
    let Some((root, run)) = child_arguments() else { return };
    let (storage, start, _) = boot(&root, true).unwrap_or_else(|error| die("boot", error));
    let snapshotter = Snapshotter::new(root.join("snap")).unwrap_or_else(|error| die("snapshotter", error));
    let term = u64::from(run) + 1;
    let hard_state = storage.hard_state();
    // Raft snapshots only what is committed: the newest committed entry, as (index, term).
    let committed = if hard_state.commit > start.index {
        Mutex::new((hard_state.commit, storage.term(hard_state.commit).unwrap_or_else(|error| die("term", error))))
    } else {
        Mutex::new((start.index, start.term))
    };
    println!("{LINE_TAG}open {} {}", start.index, storage.last_index());
    std::thread::scope(|scope| {
        let (storage, committed) = (&storage, &committed);
        scope.spawn(move || {
            let mut rng = StdRng::seed_from_u64(u64::from(run));
            let mut next = storage.last_index() + 1;
            loop {
                let last = next + rng.gen_range(0..MAX_ENTRIES_PER_SAVE);
                let entries: Vec<Entry> = (next..=last).map(|index| Entry::new(term, index, entry_bytes(index, term))).collect();
                let hard_state = HardState { term, vote: 1, commit: last };
                storage.save(&hard_state, &entries).unwrap_or_else(|error| die("save", error));
                println!("{LINE_TAG}save {next} {last} {term}");
                *committed.lock().unwrap() = (last, term);
                next = last + 1;
            }
        });
        scope.spawn(move || {
            let mut rng = StdRng::seed_from_u64(u64::from(run) ^ 1);
            let mut snapshot_index = start.index;
            loop {
                std::thread::sleep(Duration::from_micros(rng.gen_range(500..5000)));
                let (index, term) = *committed.lock().unwrap();
                if index <= snapshot_index {
                    continue;
                }
                // etcd's order: the file, then the marker, then the release.
                let metadata = SnapshotMetadata { conf_state: conf_state(), index, term };
                let snapshot = Snapshot { data: Some(snapshot_bytes(index, term)), metadata };
                println!("{LINE_TAG}snapshotting {index} {term}");
                snapshotter.save_snapshot(&snapshot).unwrap_or_else(|error| die("save snapshot file", error));
                println!("{LINE_TAG}saved-file {index} {term}");
                let marker = SnapshotMarker { index, term, conf_state: Some(conf_state()) };
                storage.save_snapshot(&marker).unwrap_or_else(|error| die("save_snapshot", error));
                println!("{LINE_TAG}marker {index} {term}");
                let released = storage.release_to(index).unwrap_or_else(|error| die("release_to", error));
                println!("{LINE_TAG}released {index} {released}");
                snapshotter.purge(SNAPSHOT_FILES_KEPT).unwrap_or_else(|error| die("purge", error));
                println!("{LINE_TAG}purged {index}");
                snapshot_index = index;
            }
        });
        scope.spawn(move || {
            let mut rng = StdRng::seed_from_u64(u64::from(run) ^ 2);
            loop {
                std::thread::sleep(Duration::from_micros(rng.gen_range(500..4000)));
                println!("{LINE_TAG}cutting");
                storage.cut().unwrap_or_else(|error| die("cut", error));
                println!("{LINE_TAG}cut");
            }
        });
    });
}

/// What the storage children of one directory acknowledged.
#[derive(Default)]
struct StorageAcknowledged {
    /// (first index, last index, term) of every save that returned.
    saves: Vec<(u64, u64, u64)>,
    /// The highest index of a snapshot marker whose `save_snapshot` returned.
    newest_marker_index: u64,
    /// The highest last index a child booted to or a save of it acknowledged: the log may
    /// hold one unacknowledged save more.
    newest_known_index: u64,
}

#[test]
fn kill9_storage_snapshots() {
    let _one_at_a_time = one_at_a_time();
    let seed = test_seed();
    let _seed_guard = SeedGuard { test: "kill9_storage_snapshots", seed };
    let mut rng = StdRng::seed_from_u64(seed);
    let started = Instant::now();
    let mut directory = tempfile::tempdir().unwrap();
    let mut acknowledged = StorageAcknowledged::default();
    let mut kills = KillCounts::default();
    let (mut saves, mut markers, mut released_segments) = (0, 0, 0);
    for iteration in 0..iterations() {
        if iteration % KILLS_PER_DIRECTORY == 0 {
            directory = tempfile::tempdir().unwrap();
            acknowledged = StorageAcknowledged::default();
            Storage::create(directory.path().join("wal"), METADATA, storage_options()).unwrap().close().unwrap();
        }
        let run = iteration as u32;
        let kill_at = pick_kill_moment(&mut rng);
        let killed = run_and_kill(STORAGE_CHILD, directory.path(), run, kill_at);
        let case = format!("run {run} ({kill_at:?}, seed {seed})");
        for line in &killed.lines {
            match line.split(' ').collect::<Vec<_>>()[..] {
                ["open", _, last] => acknowledged.newest_known_index = acknowledged.newest_known_index.max(last.parse().unwrap()),
                ["save", first, last, term] => {
                    let last = last.parse().unwrap();
                    acknowledged.saves.push((first.parse().unwrap(), last, term.parse().unwrap()));
                    acknowledged.newest_known_index = acknowledged.newest_known_index.max(last);
                    saves += 1;
                }
                ["marker", index, _] => {
                    acknowledged.newest_marker_index = acknowledged.newest_marker_index.max(index.parse().unwrap());
                    markers += 1;
                }
                ["released", _, count] => released_segments += count.parse::<usize>().unwrap(),
                _ => {}
            }
        }
        let stage = last_stage(&killed.lines, &["open", "snapshotting", "saved-file", "marker", "released", "purged"]);
        kills.add(match stage {
            "none" => "before the boot returned",
            "snapshotting" => "saving a snapshot file",
            "saved-file" => "saving a snapshot marker",
            "marker" => "releasing",
            "released" => "purging snapshot files",
            _ => "between snapshots",
        });
        if last_stage(&killed.lines, &["cutting", "cut"]) == "cutting" {
            kills.add("(also) during a cut");
        }

        check_storage(directory.path(), &acknowledged, false, &case);
        let last_of_directory = (iteration + 1) % KILLS_PER_DIRECTORY == 0 || iteration + 1 == iterations();
        if iteration % 3 == 2 || last_of_directory {
            check_storage(directory.path(), &acknowledged, true, &format!("{case}, writable boot"));
        }
    }
    println!(
        "kill9 storage: {} kills ({kills}); acknowledged: {saves} saves, {markers} snapshot markers, \
         {released_segments} segments released; {:.1} s",
        iterations(),
        started.elapsed().as_secs_f64()
    );
}

/// Boots the storage in `root` as etcd does and checks it against what was acknowledged.
fn check_storage(root: &Path, acknowledged: &StorageAcknowledged, writable: bool, case: &str) {
    let (storage, start, snapshot) = boot(root, writable).unwrap_or_else(|error| panic!("{case}: boot failed: {error} ({error:?})"));
    if let Some(snapshot) = &snapshot {
        assert_eq!(snapshot.data.as_deref(), Some(&snapshot_bytes(start.index, start.term)[..]), "{case}: snapshot {start:?}");
    }
    // Its file was durable before its marker, and the hard state committing it before that.
    assert!(
        start.index >= acknowledged.newest_marker_index,
        "{case}: booted at snapshot {start:?}, older than the acknowledged snapshot at {}",
        acknowledged.newest_marker_index
    );
    let (metadata, hard_state, entries) = storage.read_all().unwrap_or_else(|error| panic!("{case}: read_all: {error}"));
    assert_eq!(metadata, METADATA, "{case}: metadata");
    let mut terms = BTreeMap::new();
    for (offset, entry) in entries.iter().enumerate() {
        assert_eq!(entry.index, start.index + 1 + offset as u64, "{case}: entries after {start:?} are not contiguous");
        assert_eq!(entry.entry_type, EntryType::EntryNormal as i32, "{case}: entry {}", entry.index);
        assert!(
            entry.data_bytes() == &entry_bytes(entry.index, entry.term)[..],
            "{case}: entry {}/{} holds bytes never saved",
            entry.index,
            entry.term
        );
        terms.insert(entry.index, entry.term);
    }
    for &(first, last, term) in &acknowledged.saves {
        for index in first.max(start.index + 1)..=last {
            assert_eq!(terms.get(&index), Some(&term), "{case}: entry {index} of the acknowledged save {first}..={last} (term {term})");
        }
    }
    let last_index = start.index + entries.len() as u64;
    let newest_saved = acknowledged.saves.iter().map(|&(_, last, _)| last).max().unwrap_or(0);
    assert!(hard_state.commit >= newest_saved, "{case}: hard state {hard_state:?} lost the commit of the save up to {newest_saved}");
    assert!(hard_state.commit <= last_index, "{case}: hard state {hard_state:?} commits past the last entry {last_index}");
    let bound = acknowledged.newest_known_index.max(start.index) + MAX_ENTRIES_PER_SAVE;
    assert!(last_index <= bound, "{case}: entries up to {last_index} were never saved (at most {bound} can have been)");
    if writable {
        storage.close().unwrap_or_else(|error| panic!("{case}: close: {error}"));
    }
}
