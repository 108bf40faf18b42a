//! Crash consistency, part 1: a crash-image simulator over the real appender, encoder
//! and recovery (ARCHITECTURE.md, failure model).
//!
//! Writers append through `Log` (and, in a variant, a Raft driver through `Storage`,
//! with snapshots and releases). Crashes are captured at random moments and inside
//! syncs; from each capture, images of what a power loss may leave are built (see
//! `common::crash_sim`: pages or sectors old or new, garbage, reused files holding an
//! earlier log, a flipped bit in a durable record) and recovered in memory, a sample
//! also through the real opens on files, where the recovered log is then appended to,
//! crashed again and recovered again. Every image must recover (a) every acknowledged
//! record, byte for byte, (b) a prefix of what was written, without holes, (c) no stale
//! or garbage record, (d) the same log on every open; damage to durable bytes must be
//! reported whenever a later record proves it durable.
//!
//! What is durable is what the log's real syncs covered, not what the log says: this
//! log's sync observer tells the disk model about every msync.
//!
//! `SEGSTORE_CRASH_SEED` replays a seed (thread timing still varies: a failing image is
//! also saved to a directory named in the failure); `SEGSTORE_CRASH_SCALE` multiplies
//! the number of images.

mod common;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::time::{Duration, Instant};

use prost::Message;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use segstore::raftpb::{must_sync, Entry, HardState};
use segstore::record::data_span_bytes;
use segstore::storage::kind;
use segstore::{Log, Options, Position, SnapshotMarker, Storage, SyncMode};

use common::crash_sim::{
    self, all_masks, build, canonical, check_image, check_on_disk, damage_durable_record, damage_verdict, describe, earlier_log,
    fates_of_mask, random_fates, versions, write_image, Capture, Counts, Expect, Failures, Fate, Image, Mode, Recovered, WatchGuard,
    Written, WrittenRecord, MODES,
};
use common::raft::{entries, hard_state, Model};
use common::{payload, KIND};

const SEGMENT_SIZE_BYTES: u64 = 16 << 10;
const WRITERS: usize = 8;
const METADATA: &[u8] = b"cluster 7, member 3";

fn options() -> Options {
    Options { segment_size_bytes: SEGMENT_SIZE_BYTES, sync_mode: SyncMode::Msync }
}

/// How many images: debug builds (CI's `cargo test`) check fewer per capture.
#[derive(Clone, Copy, Debug)]
struct Budget {
    /// Random images per mode and capture, when not enumerating.
    random_per_mode: usize,
    /// Enumerate every combination up to this many dirty units.
    exhaustive_up_to: usize,
    /// Bytes the writers append in one run.
    workload_bytes: u64,
    /// Of the captures, every n-th is also recovered on files and crashed again.
    crash_again_every: usize,
}

fn budget() -> Budget {
    let scale: usize = std::env::var("SEGSTORE_CRASH_SCALE").ok().and_then(|text| text.trim().parse().ok()).unwrap_or(1).max(1);
    let base = if cfg!(debug_assertions) {
        Budget { random_per_mode: 64, exhaustive_up_to: 8, workload_bytes: 192 << 10, crash_again_every: 4 }
    } else {
        Budget { random_per_mode: 128, exhaustive_up_to: 10, workload_bytes: 768 << 10, crash_again_every: 3 }
    };
    Budget { random_per_mode: base.random_per_mode * scale, workload_bytes: base.workload_bytes * scale as u64, ..base }
}

// ---------------------------------------------------------------------------------
// Checking the images of a capture

/// Checks images of captures of one log, counting and collecting failures.
struct Checker {
    rng: StdRng,
    failures: Failures,
    counts: Counts,
    budget: Budget,
    started: Instant,
}

/// Whether the real opens of a sample of a capture's images also check the Raft layer.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Layer {
    Log,
    Raft,
}

impl Checker {
    fn new(test: &'static str, seed: u64) -> Checker {
        Checker {
            rng: StdRng::seed_from_u64(seed ^ 0x1a9e5),
            failures: Failures::new(test, seed),
            counts: Counts::default(),
            budget: budget(),
            started: Instant::now(),
        }
    }

    /// Checks one image in memory; returns what it recovered when that passed.
    fn check_one(
        &mut self,
        capture: &Capture,
        image: &Image<'_>,
        written: &Written,
        expect: Expect,
        keep: bool,
        description: impl FnOnce() -> String,
    ) -> Option<Recovered> {
        let floor = capture.acked_position.max(capture.durable_position);
        let names = capture.names();
        match check_image(image, &names, written, floor, expect, keep) {
            Ok(recovered) => {
                if matches!(expect, Expect::Corrupt { .. }) {
                    self.counts.corruption_reported += 1;
                }
                Some(recovered)
            }
            Err(error) => {
                self.failures.record(&description(), &error, Some((&names, image)));
                None
            }
        }
    }

    /// Every mode over one capture: enumerated when few units are dirty, sampled
    /// otherwise. With `exhaustive_up_to`, enumerates up to that many units instead.
    fn check_capture(&mut self, capture: &Capture, written: &Written, exhaustive_up_to: usize) {
        let names = capture.names();
        for mode in MODES {
            if self.failures.is_full() {
                return;
            }
            if mode == Mode::Stale && capture.segments.iter().any(|segment| segment.stale.is_none()) {
                continue;
            }
            let versions = versions(capture, mode);
            let units = versions.units.len();
            // Where the log ends when every unit is new: an image ending below discarded a tail.
            let all_new = build(&versions, &vec![Fate::New; units], 0);
            let full_end = check_image(&all_new, &names, written, 0, Expect::Recovers, false).map_or(0, |recovered| recovered.end_position);
            let tally = |counts: &mut Counts, recovered: Option<Recovered>| {
                counts.add(mode);
                if recovered.is_some_and(|recovered| recovered.end_position != 0 && recovered.end_position < full_end) {
                    counts.tails_discarded += 1;
                }
            };
            let enumerate = matches!(mode, Mode::Pages | Mode::Sectors | Mode::Stale) && units <= exhaustive_up_to;
            if enumerate {
                self.counts.exhaustive_cases += 1;
                for mask in all_masks(units) {
                    let fates = fates_of_mask(units, mask);
                    let image = build(&versions, &fates, 0);
                    let recovered =
                        self.check_one(capture, &image, written, Expect::Recovers, false, || describe(capture, &versions, &fates));
                    tally(&mut self.counts, recovered);
                }
                continue;
            }
            for _ in 0..self.budget.random_per_mode {
                let fates = random_fates(&mut self.rng, &versions.units, mode == Mode::Garbage);
                let garbage_seed = self.rng.gen();
                let mut image = build(&versions, &fates, garbage_seed);
                let (expect, damage) = if mode == Mode::Damage {
                    match damage_durable_record(&mut self.rng, capture, &mut image, written) {
                        Some((position, what)) => (damage_verdict(&image, written, position), what),
                        None => break,
                    }
                } else {
                    (Expect::Recovers, String::new())
                };
                let recovered = self.check_one(capture, &image, written, expect, false, || {
                    format!("{}, garbage seed {garbage_seed} {damage}", describe(capture, &versions, &fates))
                });
                tally(&mut self.counts, recovered);
            }
        }
    }

    /// One random image of `mode` recovered in memory and through the real opens;
    /// returns the directory the opens left, and what they recovered.
    fn check_capture_on_disk(
        &mut self,
        capture: &Capture,
        written: &Written,
        mode: Mode,
        layer: Layer,
    ) -> Option<(tempfile::TempDir, Recovered)> {
        let names = capture.names();
        let versions = versions(capture, mode);
        let fates = random_fates(&mut self.rng, &versions.units, false);
        let image = build(&versions, &fates, 0);
        let description = || format!("{} (on files)", describe(capture, &versions, &fates));
        let recovered = self.check_one(capture, &image, written, Expect::Recovers, true, description)?;
        let directory = tempfile::tempdir().unwrap();
        write_image(directory.path(), &names, &image);
        self.counts.on_disk += 1;
        let checked = match layer {
            Layer::Log => check_on_disk(directory.path(), &options(), &recovered).map(drop),
            Layer::Raft => check_raft_on_disk(directory.path(), &recovered),
        };
        if let Err(error) = checked {
            self.failures.record(&description(), &error, Some((&names, &image)));
            return None;
        }
        Some((directory, recovered))
    }

    /// Recovery, then appends by a few threads, then a crash: every record of the first
    /// recovery and every new acknowledgment must survive the second.
    fn crash_again(&mut self, directory: &Path, first: &Recovered, label: &str) {
        let seed: u64 = self.rng.gen();
        let _watch = WatchGuard(canonical(directory));
        crash_sim::watch_as_is(directory);
        let log = match Log::open(directory, options()) {
            Ok(log) => Arc::new(log),
            Err(error) => return self.failures.record(label, &format!("third open: {error}"), None),
        };
        let first_end = first.records.last().map_or(0, |(position, _, payload)| position + data_span_bytes(payload.len() as u64));
        let acked = AtomicU64::new(first_end);
        let appended: Vec<Vec<(u64, WrittenRecord)>> = std::thread::scope(|scope| {
            let handles: Vec<_> = (0..3u64)
                .map(|thread| {
                    let (log, acked) = (&log, &acked);
                    scope.spawn(move || {
                        let mut rng = StdRng::seed_from_u64(seed ^ thread);
                        let mut mine = Vec::new();
                        for _ in 0..rng.gen_range(2..10) {
                            let size = rng.gen_range(0..1200);
                            let bytes = payload(&mut rng, size);
                            let at = log.append(KIND, &bytes).unwrap();
                            mine.push((at.position.0, WrittenRecord { end: at.end.0, kind: KIND, payload: bytes }));
                            if rng.gen_bool(0.3) {
                                log.wait_durable(at.end).unwrap();
                                acked.fetch_max(at.end.0, Ordering::SeqCst);
                            }
                        }
                        mine
                    })
                })
                .collect();
            handles.into_iter().map(|handle| handle.join().unwrap()).collect()
        });
        let capture =
            crash_sim::capture(directory, format!("{label}, crashed again"), || (acked.load(Ordering::SeqCst), log.durable_position().0));
        drop(log);
        let mut written: Written = first
            .records
            .iter()
            .map(|(position, kind, payload)| {
                (*position, WrittenRecord { end: position + data_span_bytes(payload.len() as u64), kind: *kind, payload: payload.clone() })
            })
            .collect();
        written.extend(appended.into_iter().flatten());
        let names = capture.names();
        for mode in [Mode::Pages, Mode::Sectors] {
            let versions = versions(&capture, mode);
            for _ in 0..8 {
                let fates = random_fates(&mut self.rng, &versions.units, false);
                let image = build(&versions, &fates, 0);
                self.check_one(&capture, &image, &written, Expect::Recovers, false, || describe(&capture, &versions, &fates));
                self.counts.add(mode);
            }
        }
        // The second recovery, on files.
        let versions = versions(&capture, Mode::Sectors);
        let fates = random_fates(&mut self.rng, &versions.units, false);
        let image = build(&versions, &fates, 0);
        let description = || format!("{} (recovered on files)", describe(&capture, &versions, &fates));
        let Some(recovered) = self.check_one(&capture, &image, &written, Expect::Recovers, true, description) else { return };
        if recovered.end_position < first_end {
            return self.failures.record(&description(), "the records of the first recovery were lost", Some((&names, &image)));
        }
        let again = tempfile::tempdir().unwrap();
        write_image(again.path(), &names, &image);
        if let Err(error) = check_on_disk(again.path(), &options(), &recovered) {
            self.failures.record(&description(), &error, Some((&names, &image)));
        }
        self.counts.crash_again += 1;
        self.counts.on_disk += 1;
    }

    fn finish(self, test: &str) {
        println!("{}", self.counts.report(test, self.started.elapsed()));
        self.failures.finish();
    }
}

// ---------------------------------------------------------------------------------
// Multi-writer Log workload

struct LogWorld {
    directory: PathBuf,
    log: OnceLock<Weak<Log>>,
    /// The highest position a `wait_durable` returned for.
    acked: AtomicU64,
    captures: Mutex<Vec<Capture>>,
    /// Syncs until the next capture inside a sync.
    sync_countdown: AtomicI64,
    captures_in_syncs: AtomicUsize,
    rng: Mutex<StdRng>,
}

impl LogWorld {
    fn capture(&self, label: String) {
        let Some(log) = self.log.get().and_then(Weak::upgrade) else { return };
        let capture = crash_sim::capture(&self.directory, label, || (self.acked.load(Ordering::SeqCst), log.durable_position().0));
        self.captures.lock().unwrap().push(capture);
    }

    /// A crash while a sync is under way: nothing it covers may be acknowledged yet.
    fn inside_sync(&self) {
        if self.sync_countdown.fetch_sub(1, Ordering::SeqCst) != 1 {
            return;
        }
        // Time for writers to take an acknowledgment given too early.
        std::thread::sleep(Duration::from_millis(2));
        let count = self.captures_in_syncs.fetch_add(1, Ordering::SeqCst);
        self.capture(format!("inside sync, capture {count}"));
        let next = self.rng.lock().unwrap().gen_range(3..25);
        self.sync_countdown.store(next, Ordering::SeqCst);
    }
}

fn writer(
    log: &Log,
    world: &LogWorld,
    seed: u64,
    stop: &AtomicBool,
    appended_bytes: &AtomicU64,
    limit_bytes: u64,
) -> Vec<(u64, WrittenRecord)> {
    let mut rng = StdRng::seed_from_u64(seed);
    let wait_probability = rng.gen_range(0.05..0.7);
    let mut mine: Vec<(u64, WrittenRecord)> = Vec::new();
    while !stop.load(Ordering::SeqCst) {
        let size = match rng.gen_range(0..20) {
            0 => rng.gen_range(2000..6000),
            1..=3 => rng.gen_range(0..16),
            _ => rng.gen_range(16..1200),
        };
        let bytes = payload(&mut rng, size);
        let at = log.append(KIND, &bytes).unwrap();
        mine.push((at.position.0, WrittenRecord { end: at.end.0, kind: KIND, payload: bytes }));
        if appended_bytes.fetch_add(at.end.0 - at.position.0, Ordering::SeqCst) >= limit_bytes {
            stop.store(true, Ordering::SeqCst);
        }
        if rng.gen_bool(wait_probability) {
            // Mostly the record just appended, sometimes an older one.
            let target = if rng.gen_bool(0.8) { at.end.0 } else { mine[rng.gen_range(0..mine.len())].1.end };
            log.wait_durable(Position(target)).unwrap();
            world.acked.fetch_max(target, Ordering::SeqCst);
        }
        if rng.gen_range(0..150) == 0 {
            log.cut().unwrap();
        }
        if rng.gen_range(0..40) == 0 {
            std::thread::sleep(Duration::from_micros(rng.gen_range(0..400)));
        }
    }
    mine
}

/// Runs the writers until they appended `limit_bytes`, capturing all along; returns
/// the captures and every record written.
fn run_log_workload(seed: u64, limit_bytes: u64) -> (Vec<Capture>, Written) {
    let directory = tempfile::tempdir().unwrap();
    let path = canonical(directory.path());
    let world = Arc::new(LogWorld {
        directory: path.clone(),
        log: OnceLock::new(),
        acked: AtomicU64::new(0),
        captures: Mutex::new(Vec::new()),
        sync_countdown: AtomicI64::new(5),
        captures_in_syncs: AtomicUsize::new(0),
        rng: Mutex::new(StdRng::seed_from_u64(seed ^ 0x5ca1)),
    });
    let hook_world = Arc::clone(&world);
    crash_sim::watch(&path, Some(Arc::new(move || hook_world.inside_sync())));
    let _watch = WatchGuard(path.clone());
    let log = Arc::new(Log::open(&path, options()).unwrap());
    world.log.set(Arc::downgrade(&log)).unwrap();
    let stop = AtomicBool::new(false);
    let appended_bytes = AtomicU64::new(0);
    let mut rng = StdRng::seed_from_u64(seed);
    let tables: Vec<Vec<(u64, WrittenRecord)>> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..WRITERS as u64)
            .map(|thread| {
                let (log, world, stop, appended_bytes) = (&log, &world, &stop, &appended_bytes);
                scope.spawn(move || writer(log, world, seed.wrapping_add(thread + 1), stop, appended_bytes, limit_bytes))
            })
            .collect();
        let mut count = 0;
        while !stop.load(Ordering::SeqCst) {
            std::thread::sleep(Duration::from_micros(rng.gen_range(0..3000)));
            world.capture(format!("random moment, capture {count}"));
            count += 1;
        }
        handles.into_iter().map(|handle| handle.join().unwrap()).collect()
    });
    // And the moment the writers stopped.
    world.capture("after the writers stopped".to_string());
    drop(log);
    let captures = std::mem::take(&mut *world.captures.lock().unwrap());
    (captures, tables.into_iter().flatten().collect())
}

fn attach_earlier_log(captures: &mut [Capture], written: &Written, seed: u64) {
    let end = written.values().map(|record| record.end).max().unwrap_or(0);
    let earlier = earlier_log(written, SEGMENT_SIZE_BYTES, end, seed);
    for capture in captures {
        capture.attach_stale(&earlier);
    }
}

#[test]
fn log_crash_images() {
    let seed = crash_sim::crash_seed();
    println!("log_crash_images: SEGSTORE_CRASH_SEED={seed}");
    let mut checker = Checker::new("log_crash_images", seed);
    let workload_started = Instant::now();
    let (mut captures, written) = run_log_workload(seed, checker.budget.workload_bytes);
    attach_earlier_log(&mut captures, &written, seed);
    let in_syncs = captures.iter().filter(|capture| capture.label.starts_with("inside sync")).count();
    println!(
        "log_crash_images: {} records by {WRITERS} writers, {} captures ({in_syncs} inside syncs) in {:.2?}",
        written.len(),
        captures.len(),
        workload_started.elapsed()
    );
    for (index, capture) in captures.iter().enumerate() {
        checker.check_capture(capture, &written, checker.budget.exhaustive_up_to);
        let mode = if index % 2 == 0 { Mode::Sectors } else { Mode::Stale };
        if let Some((directory, recovered)) = checker.check_capture_on_disk(capture, &written, mode, Layer::Log) {
            if index % checker.budget.crash_again_every == 0 {
                checker.crash_again(directory.path(), &recovered, &capture.label);
            }
        }
        if checker.failures.is_full() {
            break;
        }
    }
    checker.finish("log_crash_images");
    assert!(in_syncs > 0, "no capture inside a sync: the log made no msync");
}

// ---------------------------------------------------------------------------------
// Small cases, every combination

/// Durable records, then an unsynced tail of `dirty_sectors` sectors: every old/new
/// combination of its sectors, of its pages and, over a reused file, of its sectors.
#[test]
fn every_combination_of_small_unsynced_tails() {
    let seed = crash_sim::crash_seed();
    println!("every_combination_of_small_unsynced_tails: SEGSTORE_CRASH_SEED={seed}");
    let mut checker = Checker::new("every_combination_of_small_unsynced_tails", seed);
    let mut rng = StdRng::seed_from_u64(seed ^ 0xe4a);
    for dirty_sectors in 1..=crash_sim::MAX_EXHAUSTIVE_UNITS {
        let (mut capture, written) = small_case(&mut rng, dirty_sectors);
        let units = versions(&capture, Mode::Sectors).units.len();
        assert!(units <= crash_sim::MAX_EXHAUSTIVE_UNITS, "case {dirty_sectors}: {units} dirty sectors");
        attach_earlier_log(std::slice::from_mut(&mut capture), &written, seed ^ dirty_sectors as u64);
        checker.check_capture(&capture, &written, crash_sim::MAX_EXHAUSTIVE_UNITS);
        if let Some((directory, recovered)) = checker.check_capture_on_disk(&capture, &written, Mode::Sectors, Layer::Log) {
            if dirty_sectors % 3 == 0 {
                checker.crash_again(directory.path(), &recovered, &capture.label);
            }
        }
    }
    checker.finish("every_combination_of_small_unsynced_tails");
}

fn small_case(rng: &mut StdRng, dirty_sectors: usize) -> (Capture, Written) {
    loop {
        let directory = tempfile::tempdir().unwrap();
        let path = canonical(directory.path());
        crash_sim::watch(&path, None);
        let _watch = WatchGuard(path.clone());
        let log = Log::open(&path, options()).unwrap();
        let mut written = Written::new();
        let mut append = |log: &Log, size: usize, rng: &mut StdRng| {
            let bytes = payload(rng, size);
            let at = log.append(KIND, &bytes).unwrap();
            written.insert(at.position.0, WrittenRecord { end: at.end.0, kind: KIND, payload: bytes });
            at
        };
        for _ in 0..rng.gen_range(0..30) {
            let at = append(&log, rng.gen_range(0..1500), rng);
            log.wait_durable(at.end).unwrap();
        }
        let acked = log.durable_position().0;
        let take = |label: String| crash_sim::capture(&path, label, || (acked, log.durable_position().0));
        let mut capture = take(format!("{dirty_sectors} dirty sectors"));
        while versions(&capture, Mode::Sectors).units.len() < dirty_sectors {
            append(&log, rng.gen_range(0..200), rng);
            capture = take(format!("{dirty_sectors} dirty sectors"));
        }
        if versions(&capture, Mode::Sectors).units.len() == dirty_sectors {
            return (capture, written);
        }
    }
}

// ---------------------------------------------------------------------------------
// Raft storage workload

/// The records of the log appended since `next`, into `written`; returns the new `next`.
fn read_new_records(log: &Log, next: u64, written: &mut Written) -> u64 {
    let mut next = next;
    for record in log.iter_from(Position(next)) {
        let record = record.unwrap();
        next = record.end.0;
        written.insert(record.position.0, WrittenRecord { end: record.end.0, kind: record.kind, payload: record.payload });
    }
    next
}

#[test]
fn storage_crash_images() {
    let seed = crash_sim::crash_seed();
    println!("storage_crash_images: SEGSTORE_CRASH_SEED={seed}");
    let mut checker = Checker::new("storage_crash_images", seed);
    let mut rng = StdRng::seed_from_u64(seed ^ 0x5707);
    let parent = tempfile::tempdir().unwrap();
    let path = canonical(parent.path()).join("wal");
    let storage = Arc::new(Storage::create(&path, METADATA, options()).unwrap());
    crash_sim::watch_as_is(&path);
    let _watch = WatchGuard(path.clone());
    let acked = AtomicU64::new(0);
    // Captures read the directory while no release deletes files: a crash leaves the
    // files of a release deleted oldest first, never with a hole.
    let releasing = Mutex::new(());
    let captures = Mutex::new(Vec::new());
    let stop = AtomicBool::new(false);
    let take = |label: String| {
        let _files = releasing.lock().unwrap();
        let capture = crash_sim::capture(&path, label, || (acked.load(Ordering::SeqCst), storage.log().durable_position().0));
        captures.lock().unwrap().push(capture);
    };
    let mut written = Written::new();
    let mut next = read_new_records(storage.log(), 0, &mut written);
    let operations = if cfg!(debug_assertions) { 100 } else { 240 } * budget().workload_bytes as usize / (192 << 10);
    std::thread::scope(|scope| {
        let mut capture_rng = StdRng::seed_from_u64(seed ^ 0xca9);
        let (stop, take) = (&stop, &take);
        scope.spawn(move || {
            let mut count = 0;
            while !stop.load(Ordering::SeqCst) {
                std::thread::sleep(Duration::from_micros(capture_rng.gen_range(0..4000)));
                take(format!("random moment, capture {count}"));
                count += 1;
            }
        });
        let mut model = Model::default();
        let mut markers = vec![SnapshotMarker::new(0, 0)];
        for step in 0..operations {
            let synced = raft_step(&mut rng, &storage, &mut model, &mut markers, &releasing);
            next = read_new_records(storage.log(), next, &mut written);
            if synced {
                acked.fetch_max(storage.log().published_position().0, Ordering::SeqCst);
            }
            if rng.gen_range(0..12) == 0 {
                take(format!("after step {step}"));
            }
        }
        stop.store(true, Ordering::SeqCst);
    });
    let mut captures = captures.into_inner().unwrap();
    println!("storage_crash_images: {} records, {} captures", written.len(), captures.len());
    attach_earlier_log(&mut captures, &written, seed);
    for (index, capture) in captures.iter().enumerate() {
        checker.check_capture(capture, &written, checker.budget.exhaustive_up_to);
        if index % 2 == 0 {
            checker.check_capture_on_disk(capture, &written, Mode::Sectors, Layer::Raft);
        }
        if checker.failures.is_full() {
            break;
        }
    }
    drop(storage);
    checker.finish("storage_crash_images");
}

/// One Raft-like operation; returns whether it waited for durability.
fn raft_step(rng: &mut StdRng, storage: &Storage, model: &mut Model, markers: &mut Vec<SnapshotMarker>, releasing: &Mutex<()>) -> bool {
    let hs = model.hard_state;
    let (term, commit, last) = (hs.term.max(1), hs.commit, model.last_index());
    let newest_marker = markers.last().unwrap().index;
    loop {
        match rng.gen_range(0..100) {
            0..=44 => {
                let overwrite = last > commit && rng.gen_bool(0.25);
                let (first, term) = if overwrite { (rng.gen_range(commit + 1..=last), term + 1) } else { (last + 1, term) };
                let batch = entries(first..=first + rng.gen_range(0..6), term, rng.gen_range(20..1500));
                let commit = if rng.gen_bool(0.5) { rng.gen_range(commit..first) } else { commit };
                let state = hard_state(term, 1, commit);
                let synced = must_sync(&state, &model.hard_state, batch.len());
                storage.save(&state, &batch).unwrap();
                model.save(&state, &batch);
                return synced;
            }
            45..=59 if commit < last => {
                let state = hard_state(term, hs.vote, rng.gen_range(commit + 1..=last));
                let synced = must_sync(&state, &model.hard_state, 0);
                storage.save(&state, &[]).unwrap();
                model.save(&state, &[]);
                return synced;
            }
            60..=64 => {
                let state = hard_state(term + 1, 0, commit);
                storage.save(&state, &[]).unwrap();
                model.save(&state, &[]);
                return true;
            }
            65..=72 => {
                storage.cut().unwrap();
                return false;
            }
            73..=84 if commit > newest_marker => {
                let index = rng.gen_range(newest_marker + 1..=commit);
                let marker = SnapshotMarker::new(index, model.term(index).unwrap());
                storage.save_snapshot(&marker).unwrap();
                markers.push(marker);
                return true;
            }
            85..=99 => {
                // Waits for durability only when it finds a marker to release to.
                let _files = releasing.lock().unwrap();
                storage.release_to(rng.gen_range(0..=commit)).unwrap();
                return false;
            }
            _ => {}
        }
    }
}

/// Boots the image as etcd does (the newest marker the durable hard state commits) and
/// checks the Raft state against the records recovered in memory, replayed by Raft's
/// rules.
fn check_raft_on_disk(directory: &Path, recovered: &Recovered) -> Result<(), String> {
    let mut model = Model::default();
    let mut markers = Vec::new();
    for (position, record_kind, payload) in &recovered.records {
        let decoded = match *record_kind {
            kind::ENTRY => Entry::decode(&payload[..]).map(|entry| model.save(&HardState::default(), &[entry])),
            kind::HARD_STATE => HardState::decode(&payload[..]).map(|state| model.hard_state = state),
            kind::SNAPSHOT => SnapshotMarker::decode(&payload[..]).map(|marker| markers.push(marker)),
            kind::METADATA if payload == METADATA => Ok(()),
            other => return Err(format!("record {} of kind {} at {position}", payload.len(), other.0)),
        };
        decoded.map_err(|error| format!("record at {position}: {error}"))?;
    }
    let mut expected_markers: Vec<SnapshotMarker> = markers.into_iter().filter(|marker| marker.index <= model.hard_state.commit).collect();
    let mut valid = Storage::valid_snapshot_markers(directory).map_err(|error| format!("valid_snapshot_markers: {error}"))?;
    let key = |marker: &SnapshotMarker| (marker.index, marker.term);
    expected_markers.sort_by_key(key);
    valid.sort_by_key(key);
    if valid != expected_markers {
        return Err(format!("valid snapshot markers {valid:?}, the recovered records hold {expected_markers:?}"));
    }
    let at = valid.last().cloned().ok_or("no committed snapshot marker to boot from")?;
    let storage = Storage::open(directory, &at, options()).map_err(|error| format!("open at {at:?}: {error}"))?;
    let (metadata, state, read) = storage.read_all().map_err(|error| format!("read_all: {error}"))?;
    let expected = model.entries_after(at.index);
    if metadata != METADATA || state != model.hard_state || read != expected {
        return Err(format!(
            "booted at {at:?}: hard state {state:?} and {} entries, the records say {:?} and {} entries",
            read.len(),
            model.hard_state,
            expected.len()
        ));
    }
    if let Some(missing) = (at.index + 1..=state.commit).find(|index| !read.iter().any(|entry| entry.index == *index)) {
        return Err(format!("commit {} but entry {missing} is missing", state.commit));
    }
    Ok(())
}
