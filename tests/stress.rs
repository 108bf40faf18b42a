//! Many threads append, sync and cut at once over small segments (so that rotations
//! race with appends and syncs); the log is then dropped without `close` and reopened.
//! Every acknowledged record must be back at its position byte for byte, the records
//! must come back in position order without duplicates, and nothing may appear that
//! no thread appended there.

mod common;

use std::collections::BTreeMap;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use segstore::{Appended, Log, Options, Position, SyncMode};

use common::{options, payload, records, test_seed, SeedGuard, KIND};

const THREADS: usize = 8;
/// Per writer and round; sized so that each test takes a few seconds in a debug build.
const OPERATIONS_PER_THREAD: usize = 600;
const SEGMENT_SIZES_BYTES: [u64; 3] = [64 << 10, 128 << 10, 256 << 10];

/// What one writer thread did.
#[derive(Default)]
struct WriterOutcome {
    appended: Vec<(Appended, Vec<u8>)>,
    /// Indexes into `appended` of the records a `wait_durable` or `append_durable`
    /// covering their end returned `Ok` for.
    acknowledged: Vec<usize>,
}

/// A random payload: mostly small, sometimes large enough to fill a good part of a
/// 64 KiB segment.
fn random_payload(rng: &mut StdRng) -> Vec<u8> {
    let size = if rng.gen_bool(0.08) { rng.gen_range(3000..=20_000) } else { rng.gen_range(0..3000) };
    payload(rng, size)
}

/// One writer: a random mix of appends, durable appends, waits and cuts. Every call
/// must succeed; reads of its own records are checked on the way.
fn run_writer(log: &Log, seed: u64, operations: usize) -> WriterOutcome {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut outcome = WriterOutcome::default();
    // Indexes of appended records not acknowledged yet.
    let mut pending: Vec<usize> = Vec::new();
    let acknowledge_up_to = |outcome: &mut WriterOutcome, pending: &mut Vec<usize>, end: Position| {
        assert!(log.durable_position() >= end, "wait_durable({}) returned before the durable position reached it", end.0);
        pending.retain(|&index| {
            let covered = outcome.appended[index].0.end <= end;
            if covered {
                outcome.acknowledged.push(index);
            }
            !covered
        });
    };
    for _ in 0..operations {
        match rng.gen_range(0..100) {
            0..=54 => {
                let bytes = random_payload(&mut rng);
                let appended = log.append(KIND, &bytes).unwrap();
                pending.push(outcome.appended.len());
                outcome.appended.push((appended, bytes));
            }
            55..=69 => {
                let bytes = random_payload(&mut rng);
                let appended = log.append_durable(KIND, &bytes).unwrap();
                pending.push(outcome.appended.len());
                outcome.appended.push((appended, bytes));
                acknowledge_up_to(&mut outcome, &mut pending, appended.end);
            }
            70..=89 if !pending.is_empty() => {
                // Wait for some pending record, not always the latest: covers waits for
                // positions that other syncs have already passed.
                let index = pending[rng.gen_range(0..pending.len())];
                let end = outcome.appended[index].0.end;
                log.wait_durable(end).unwrap();
                acknowledge_up_to(&mut outcome, &mut pending, end);
            }
            90..=91 => log.cut().unwrap(),
            _ if !outcome.appended.is_empty() => {
                // A record reads back as soon as its append returned, whatever other
                // threads are still writing below it.
                let (at, bytes) = &outcome.appended[rng.gen_range(0..outcome.appended.len())];
                assert_eq!(&log.read(at.position).unwrap().payload, bytes, "reading back the record at {}", at.position.0);
            }
            _ => {}
        }
    }
    // Whatever is still pending stays unacknowledged: the log is dropped without a sync.
    outcome
}

/// Every record any writer appended, by position, with whether it was acknowledged.
#[derive(Default)]
struct Model {
    records: BTreeMap<u64, (Appended, Vec<u8>, bool)>,
}

impl Model {
    fn add(&mut self, outcome: WriterOutcome) {
        let mut acknowledged = vec![false; outcome.appended.len()];
        for index in outcome.acknowledged {
            acknowledged[index] = true;
        }
        for ((at, bytes), acknowledged) in outcome.appended.into_iter().zip(acknowledged) {
            let earlier = self.records.insert(at.position.0, (at, bytes, acknowledged));
            assert!(earlier.is_none(), "two appends were given position {}", at.position.0);
        }
    }

    /// Appends never overlap: each record ends at or before the next one starts.
    fn check_disjoint(&self) {
        let mut previous_end = 0;
        for (at, _, _) in self.records.values() {
            assert!(at.position.0 >= previous_end, "the record at {} overlaps the one before (ending at {previous_end})", at.position.0);
            previous_end = at.end.0;
        }
    }

    /// Checks a reopened log against everything appended so far.
    fn check_recovered(&self, log: &Log) {
        let recovered = records(log);
        for pair in recovered.windows(2) {
            assert!(pair[0].0 < pair[1].0, "recovered records out of order or repeated: {} then {}", pair[0].0, pair[1].0);
        }
        for (position, bytes) in &recovered {
            match self.records.get(position) {
                Some((_, appended, _)) => assert!(appended == bytes, "the record recovered at {position} is not the one appended there"),
                None => panic!("a record of {} bytes was recovered at {position}, where nothing was appended", bytes.len()),
            }
        }
        let recovered_positions: std::collections::BTreeSet<u64> = recovered.iter().map(|(position, _)| *position).collect();
        let mut acknowledged = 0;
        for (position, (_, _, was_acknowledged)) in &self.records {
            if *was_acknowledged {
                acknowledged += 1;
                assert!(recovered_positions.contains(position), "the acknowledged record at {position} was lost");
            }
        }
        // No crash happened, only a drop: the page cache keeps every published record, so
        // even the unacknowledged ones must be back.
        assert_eq!(recovered.len(), self.records.len(), "records recovered after a drop without close");
        assert!(acknowledged > 0, "the workload acknowledged nothing: it tests nothing");
    }
}

/// Runs `THREADS` writers on `log` at once and adds what they did to `model`.
fn run_round(log: &Log, model: &mut Model, rng: &mut StdRng, operations_per_thread: usize) {
    let seeds: Vec<u64> = (0..THREADS).map(|_| rng.gen()).collect();
    let outcomes: Vec<WriterOutcome> = std::thread::scope(|scope| {
        let writers: Vec<_> = seeds.iter().map(|&seed| scope.spawn(move || run_writer(log, seed, operations_per_thread))).collect();
        writers.into_iter().map(|writer| writer.join().unwrap_or_else(|panic| std::panic::resume_unwind(panic))).collect()
    });
    for outcome in outcomes {
        model.add(outcome);
    }
    model.check_disjoint();
}

/// Two rounds of concurrent writers, each followed by a drop without close and a
/// reopen. The second round may use another segment size, so the reopen also seals the
/// recovered segment and continues in a segment of the new size.
fn stress(test: &'static str, sync_mode: SyncMode) {
    let seed = test_seed();
    let _guard = SeedGuard { test, seed };
    let mut rng = StdRng::seed_from_u64(seed);
    let directory = tempfile::tempdir().unwrap();
    let mut model = Model::default();
    let first: Options = options(SEGMENT_SIZES_BYTES[rng.gen_range(0..SEGMENT_SIZES_BYTES.len())], sync_mode);
    let second: Options = options(SEGMENT_SIZES_BYTES[rng.gen_range(0..SEGMENT_SIZES_BYTES.len())], sync_mode);
    {
        let log = Log::open(directory.path(), first.clone()).unwrap();
        run_round(&log, &mut model, &mut rng, OPERATIONS_PER_THREAD);
        assert!(log.segment_count() > 3, "the workload should rotate through several segments");
    }
    {
        let log = Log::open(directory.path(), second.clone()).unwrap();
        model.check_recovered(&log);
        run_round(&log, &mut model, &mut rng, OPERATIONS_PER_THREAD);
    }
    let log = Log::open(directory.path(), second.clone()).unwrap();
    model.check_recovered(&log);
    println!(
        "{test}: seed {seed}, segments of {} then {} bytes, {} records in {} segments",
        first.segment_size_bytes,
        second.segment_size_bytes,
        model.records.len(),
        log.segment_count()
    );
}

/// `read` serves the published prefix: a record whose append returned, but which lies
/// behind one another thread is still writing, is refused until that one is published,
/// and reads back from then on. The writers above rely on this.
#[test]
fn a_record_reads_back_as_soon_as_its_append_returns_even_behind_one_still_being_written() {
    let directory = tempfile::tempdir().unwrap();
    let log = Log::open(directory.path(), options(64 << 10, SyncMode::Msync)).unwrap();
    let (reserved_sender, reserved) = std::sync::mpsc::channel();
    let (release_sender, release) = std::sync::mpsc::channel::<()>();
    std::thread::scope(|scope| {
        let log = &log;
        let slow_writer = scope.spawn(move || {
            let (appended, ()) = log
                .append_with(KIND, 100, |bytes| {
                    reserved_sender.send(()).unwrap();
                    release.recv().unwrap();
                    bytes.fill(1);
                })
                .unwrap();
            appended
        });
        reserved.recv().unwrap();
        let behind = log.append(KIND, b"behind").unwrap();
        assert!(log.published_position() <= behind.position, "the slow writer's record is not published yet");
        assert_eq!(log.read(behind.position).unwrap().payload, b"behind", "read-your-own-append");
        match log.read(log.published_position()) {
            Err(segstore::Error::InvalidArgument { .. }) => {}
            other => panic!("the slow writer's unpublished record must not be readable, not {other:?}"),
        }
        release_sender.send(()).unwrap();
        let slow = slow_writer.join().unwrap();
        assert_eq!(log.read(slow.position).unwrap().payload, vec![1; 100]);
        assert_eq!(log.read(behind.position).unwrap().payload, b"behind");
    });
}

#[test]
fn concurrent_writers_with_msync() {
    stress("concurrent_writers_with_msync", SyncMode::Msync);
}

#[test]
fn concurrent_writers_with_fdatasync() {
    stress("concurrent_writers_with_fdatasync", SyncMode::Fdatasync);
}
