//! loom models of the concurrent core, run on the real code through the crate's `sync`
//! shim: `RUSTFLAGS="--cfg loom" cargo test --release --test loom`.
#![cfg(loom)]

use loom::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use loom::sync::Arc;
use segstore::mapping::{Cursor, Lead, RotationFailed, SegmentMap};
use segstore::model::{GroupCommit, WaitWord};
use segstore::record::{self, Decoded, Expected, RecordKind};
use segstore::Error;

const DATA_START: u64 = 64;
const KIND: RecordKind = RecordKind(16);
const GENERATION: u32 = 7;

fn no_rotation() -> Result<Arc<SegmentMap>, RotationFailed> {
    panic!("this model never fills its segment")
}

/// Decodes every record below `frontier` and returns the payloads of the data records;
/// panics if any published byte is not a valid record.
fn published_payloads(segment: &SegmentMap, frontier: u64) -> Vec<Vec<u8>> {
    let mut bytes = vec![0u8; (frontier - DATA_START) as usize];
    assert!(segment.read_published(DATA_START, &mut bytes));
    let mut payloads = Vec::new();
    let mut offset = 0usize;
    while offset < bytes.len() {
        let expected = Expected { generation: segment.generation(), position: segment.base_position() + DATA_START + offset as u64 };
        match record::decode(&bytes[offset..], expected) {
            Decoded::Record(found) => {
                if found.kind.is_data() {
                    payloads.push(found.payload.to_vec());
                }
                offset += found.span_bytes as usize;
            }
            other => panic!("published bytes at {offset} do not decode: {other:?}"),
        }
    }
    payloads
}

#[test]
fn claims_are_disjoint_and_the_frontier_covers_only_published_records() {
    loom::model(|| {
        let segment = Arc::new(SegmentMap::anonymous(512, 0, GENERATION, DATA_START).unwrap());
        let cursor = Arc::new(Cursor::new(Arc::clone(&segment), DATA_START, DATA_START));
        let writers: Vec<_> = (1..=2u8)
            .map(|byte| {
                let cursor = Arc::clone(&cursor);
                loom::thread::spawn(move || {
                    let mut claim = cursor.reserve(8, 0, &mut no_rotation).unwrap();
                    claim.fill(|payload| payload.fill(byte));
                    claim.publish(KIND, 0)
                })
            })
            .collect();
        // A scanner racing the writers sees only whole records.
        let frontier = segment.advance_published();
        let seen = published_payloads(&segment, frontier);
        assert!(seen.len() <= 2);
        let ends: Vec<u64> = writers.into_iter().map(|writer| writer.join().unwrap()).collect();
        let frontier = segment.advance_published();
        assert_eq!(frontier, *ends.iter().max().unwrap());
        assert_eq!(frontier, DATA_START + 2 * record::data_span_bytes(8));
        let mut payloads = published_payloads(&segment, frontier);
        payloads.sort();
        assert_eq!(payloads, vec![vec![1u8; 8], vec![2u8; 8]]);
    });
}

#[test]
fn an_abandoned_claim_is_published_as_a_skip_and_does_not_stall_the_frontier() {
    loom::model(|| {
        let segment = Arc::new(SegmentMap::anonymous(512, 0, GENERATION, DATA_START).unwrap());
        let cursor = Arc::new(Cursor::new(Arc::clone(&segment), DATA_START, DATA_START));
        let abandoning = {
            let cursor = Arc::clone(&cursor);
            loom::thread::spawn(move || {
                let mut claim = cursor.reserve(16, 0, &mut no_rotation).unwrap();
                claim.fill(|payload| payload[0] = 9);
                drop(claim);
            })
        };
        let mut claim = cursor.reserve(8, 0, &mut no_rotation).unwrap();
        claim.fill(|payload| payload.fill(1));
        let end = claim.publish(KIND, 0);
        abandoning.join().unwrap();
        let frontier = segment.advance_published();
        assert!(frontier >= end);
        assert_eq!(frontier, DATA_START + record::data_span_bytes(16) + record::data_span_bytes(8));
        assert_eq!(published_payloads(&segment, frontier), vec![vec![1u8; 8]]);
    });
}

/// 160-byte segments: records start at 64 and must end at or below 128, so a second
/// 40-byte record crosses the end and rotates.
fn small_segment(base_position: u64, generation: u32) -> Arc<SegmentMap> {
    Arc::new(SegmentMap::anonymous(160, base_position, generation, DATA_START).unwrap())
}

#[test]
fn a_reservation_crossing_the_end_seals_the_segment_and_every_writer_lands_once() {
    loom::model(|| {
        let first = small_segment(0, 1);
        let cursor = Arc::new(Cursor::new(Arc::clone(&first), DATA_START, DATA_START));
        let rotations = Arc::new(AtomicU64::new(0));
        let second_slot: Arc<loom::sync::Mutex<Option<Arc<SegmentMap>>>> = Arc::new(loom::sync::Mutex::new(None));
        let writers: Vec<_> = (1..=2u8)
            .map(|byte| {
                let cursor = Arc::clone(&cursor);
                let rotations = Arc::clone(&rotations);
                let second_slot = Arc::clone(&second_slot);
                loom::thread::spawn(move || {
                    let mut next = || {
                        rotations.fetch_add(1, Ordering::SeqCst);
                        let next = small_segment(160, 2);
                        *second_slot.lock().unwrap() = Some(Arc::clone(&next));
                        Ok(next)
                    };
                    let mut claim = cursor.reserve(8, 0, &mut next).unwrap();
                    claim.fill(|payload| payload.fill(byte));
                    let position = claim.position();
                    claim.publish(KIND, 0);
                    position
                })
            })
            .collect();
        let positions: Vec<u64> = writers.into_iter().map(|writer| writer.join().unwrap()).collect();
        assert_eq!(rotations.load(Ordering::SeqCst), 1, "exactly one writer rotates");
        let second = second_slot.lock().unwrap().clone().expect("rotated");
        // The first segment holds one record and the padding reaching its end.
        assert_eq!(first.advance_published(), 160);
        assert_eq!(published_payloads(&first, 160).len(), 1);
        // The other record went to the second segment, once.
        let frontier = second.advance_published();
        assert_eq!(published_payloads(&second, frontier).len(), 1);
        let mut positions = positions;
        positions.sort();
        assert_eq!(positions, vec![DATA_START, 160 + DATA_START]);
    });
}

#[test]
fn a_cut_racing_an_append_rotates_once() {
    loom::model(|| {
        let first = small_segment(0, 1);
        let cursor = Arc::new(Cursor::new(Arc::clone(&first), DATA_START, DATA_START));
        let rotations = Arc::new(AtomicU64::new(0));
        let next_for = |rotations: Arc<AtomicU64>| {
            move || {
                rotations.fetch_add(1, Ordering::SeqCst);
                Ok(small_segment(160, 2))
            }
        };
        let cutter = {
            let cursor = Arc::clone(&cursor);
            let mut next = next_for(Arc::clone(&rotations));
            loom::thread::spawn(move || cursor.cut(0, &mut next).unwrap())
        };
        let mut next = next_for(Arc::clone(&rotations));
        let mut claim = cursor.reserve(8, 0, &mut next).unwrap();
        claim.fill(|payload| payload.fill(3));
        let end = claim.publish(KIND, 0);
        cutter.join().unwrap();
        assert_eq!(rotations.load(Ordering::SeqCst), 1);
        assert_eq!(first.advance_published(), 160, "the first segment is sealed");
        // The record landed either before the cut or in the next segment.
        assert!(end == DATA_START + 40 || end == 160 + DATA_START + 40);
    });
}

/// A 256-byte segment zero-filled on disk only below 128: a 40-byte record at 64 ends
/// at 136, past that, so its writer asks the zero-filler for more and waits while the
/// filler writes the bytes from 128 on (here, the cells loom watches). loom reports a
/// data race if the writer ever touches them before the filler is done with them, and
/// a deadlock if the request or the wake-up is lost.
#[test]
fn a_claim_past_the_zero_filled_part_waits_for_the_zero_filler() {
    let mut builder = loom::model::Builder::new();
    // Two threads around two wait words: bounded preemptions keep the search short.
    builder.preemption_bound = Some(3);
    builder.check(|| {
        let wake = Arc::new(WaitWord::new());
        let lead = Lead { min_bytes: 64, max_bytes: 64 };
        let segment =
            Arc::new(SegmentMap::anonymous(256, 0, GENERATION, DATA_START).unwrap().with_zero_filler(128, lead, Arc::clone(&wake)));
        let cursor = Cursor::new(Arc::clone(&segment), DATA_START, DATA_START);
        // The filler sleeps until asked, zero-fills once (all that is asked: up to 200)
        // and stops.
        let filler = {
            let (segment, wake) = (Arc::clone(&segment), Arc::clone(&wake));
            loom::thread::spawn(move || loop {
                let seen = wake.load();
                if let Some((start, end)) = segment.next_zero_fill(8, 128) {
                    segment.zero_fill_for_model(start, end);
                    segment.zero_filled(end);
                    return end;
                }
                wake.wait(seen);
            })
        };
        let mut claim = cursor.reserve(40, 0, &mut no_rotation).unwrap();
        claim.fill(|payload| payload.fill(5));
        let end = claim.publish(KIND, 0);
        assert_eq!(filler.join().unwrap(), 200);
        assert_eq!(end, DATA_START + record::data_span_bytes(40));
        assert_eq!(segment.advance_published(), end);
        assert_eq!(published_payloads(&segment, end), vec![vec![5u8; 40]]);
    });
}

/// A fake log for the group-commit models: `published` is the frontier, `synced` what
/// the (fake) syncs covered.
struct FakeDisk {
    published: AtomicU64,
    synced: AtomicU64,
    syncing: AtomicBool,
    fail_syncs: bool,
    syncs: AtomicU64,
}

impl FakeDisk {
    fn new(fail_syncs: bool) -> Arc<Self> {
        Arc::new(FakeDisk {
            published: AtomicU64::new(0),
            synced: AtomicU64::new(0),
            syncing: AtomicBool::new(false),
            fail_syncs,
            syncs: AtomicU64::new(0),
        })
    }

    fn frontier(&self) -> u64 {
        self.published.load(Ordering::Acquire)
    }

    fn sync(&self, from: u64, to: u64) -> segstore::Result<()> {
        assert!(!self.syncing.swap(true, Ordering::AcqRel), "two syncs at once");
        assert!(from < to && to <= self.frontier(), "sync of unpublished bytes {from}..{to}");
        self.syncs.fetch_add(1, Ordering::AcqRel);
        let result = if self.fail_syncs {
            Err(Error::Io { operation: "fdatasync", path: "fake".into(), source: std::io::Error::from_raw_os_error(5) })
        } else {
            self.synced.fetch_max(to, Ordering::AcqRel);
            Ok(())
        };
        self.syncing.store(false, Ordering::Release);
        result
    }
}

fn append_and_wait(commit: &GroupCommit, disk: &FakeDisk, bytes: u64) -> (u64, segstore::Result<()>) {
    let end = disk.published.fetch_add(bytes, Ordering::AcqRel) + bytes;
    let result = commit.wait_durable(end, &|| disk.frontier(), &|from, to| disk.sync(from, to));
    (end, result)
}

/// Runs `writers` threads that each append 10 bytes and wait for them to be durable,
/// then `check` what each got; returns once all are done.
fn run_writers(
    writers: usize,
    fail_syncs: bool,
    check: fn(&GroupCommit, &FakeDisk, u64, segstore::Result<()>),
) -> (Arc<GroupCommit>, Arc<FakeDisk>) {
    let commit = Arc::new(GroupCommit::new(0));
    let disk = FakeDisk::new(fail_syncs);
    let threads: Vec<_> = (0..writers)
        .map(|_| {
            let (commit, disk) = (Arc::clone(&commit), Arc::clone(&disk));
            loom::thread::spawn(move || {
                let (end, result) = append_and_wait(&commit, &disk, 10);
                check(&commit, &disk, end, result);
            })
        })
        .collect();
    for thread in threads {
        thread.join().unwrap();
    }
    (commit, disk)
}

#[test]
fn the_durable_watermark_never_passes_what_a_sync_covered() {
    loom::model(|| {
        let (commit, disk) = run_writers(2, false, |commit, disk, end, result| {
            result.unwrap();
            // The ack rule: acknowledged only once a sync covered it.
            assert!(disk.synced.load(Ordering::Acquire) >= end);
            assert!(commit.durable_position() >= end);
        });
        assert_eq!(commit.durable_position(), 20);
        assert!(disk.syncs.load(Ordering::Acquire) <= 2, "one sync may cover both waiters");
    });
}

/// Three writers: whoever publishes after a sync took its target sleeps on the other
/// parity's wait word and is woken by that sync's end (one of them, to run the next
/// sync for all). A lost wake-up there is a deadlock, which loom reports.
#[test]
fn waiters_beyond_the_sync_in_progress_are_woken_for_the_next_one() {
    let mut builder = loom::model::Builder::new();
    // Three threads around two wait words: bounded preemptions keep the search short.
    builder.preemption_bound = Some(3);
    builder.check(|| {
        let (commit, _) = run_writers(3, false, |_, disk, end, result| {
            result.unwrap();
            assert!(disk.synced.load(Ordering::Acquire) >= end);
        });
        assert_eq!(commit.durable_position(), 30);
    });
}

#[test]
fn a_failed_sync_fails_every_waiter_and_is_never_retried() {
    loom::model(|| {
        let (commit, disk) = run_writers(2, true, |_, _, _, result| match result {
            Err(Error::Poisoned { cause }) => assert!(matches!(*cause, Error::Io { operation: "fdatasync", .. })),
            other => panic!("a waiter was not failed: {other:?}"),
        });
        assert_eq!(disk.syncs.load(Ordering::Acquire), 1, "the failed sync is not retried");
        assert_eq!(commit.durable_position(), 0);
        assert!(commit.wait_durable(1, &|| 20, &|_, _| Ok(())).is_err(), "nothing is acknowledged after the failure");
    });
}
