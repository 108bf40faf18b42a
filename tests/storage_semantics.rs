//! What the Raft storage layer returns, as tables: each row a sequence of operations
//! (save, save_snapshot, cut, release_to, reopen, and records written under it through
//! the segment log) and the metadata, hard state and entries expected after it, or the
//! error. Every row that ends open is also closed and reopened, read-write and
//! read-only: what a node sees before a restart must be what it sees after.

mod common;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Barrier, Condvar, Mutex};

use prost::Message;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use segstore::raftpb::{must_sync, Entry, HardState};
use segstore::storage::kind;
use segstore::{Error, Log, Options, RecordKind, SnapshotMarker, Storage, SyncMode};

use common::raft::{entries, entry, hard_state, shape, sized_entry, Model};
use common::{copy_log, segment_files, test_seed, SeedGuard};

const METADATA: &[u8] = b"cluster 7, member 3";

// The log must be shareable between the threads of a node.
const _: fn() = || {
    fn send_and_sync<T: Send + Sync>() {}
    send_and_sync::<Storage>();
};

fn marker(index: u64, term: u64) -> SnapshotMarker {
    SnapshotMarker::new(index, term)
}

fn options(segment_size_bytes: u64) -> Options {
    Options { segment_size_bytes, sync_mode: SyncMode::Msync }
}

/// What `release_to` is expected to delete.
#[derive(Clone, Copy, Debug)]
enum Released {
    Nothing,
    Some,
    Any,
}

#[derive(Clone, Debug)]
enum Op {
    Save(HardState, Vec<Entry>),
    /// A save that must fail with an error whose `Debug` starts with the text, and
    /// write nothing.
    SaveFails(HardState, Vec<Entry>, &'static str),
    Snapshot(SnapshotMarker),
    Cut,
    Release(u64, Released),
    /// Close, then open at the marker.
    Reopen(SnapshotMarker),
    /// Close, append a record through the segment log, reopen at the same marker.
    Inject(RecordKind, Vec<u8>),
}

use Op::{Cut, Inject, Release, Reopen, Save, SaveFails, Snapshot};

#[derive(Clone, Debug)]
enum Expect {
    /// The hard state and the (index, term) of the entries read back.
    State(HardState, Vec<(u64, u64)>),
    /// The last operation (a reopen or an injection) fails to open the log, read-write
    /// and read-only alike, with an error whose `Debug` starts with the text.
    OpenFails(&'static str),
}

struct Case {
    name: &'static str,
    segment_size_bytes: u64,
    /// Data bytes of every entry (`sized_entry`), so entries read back can be rebuilt.
    entry_bytes: usize,
    ops: Vec<Op>,
    expect: Expect,
}

fn case(name: &'static str, ops: Vec<Op>, expect: Expect) -> Case {
    Case { name, segment_size_bytes: 64 << 10, entry_bytes: 24, ops, expect }
}

fn run(range: std::ops::RangeInclusive<u64>, term: u64) -> Vec<Entry> {
    entries(range, term, 24)
}

fn state(hard_state: HardState, shape: &[(u64, u64)]) -> Expect {
    Expect::State(hard_state, shape.to_vec())
}

/// `(index, term)` for `range`, all of `term`.
fn terms(range: std::ops::RangeInclusive<u64>, term: u64) -> Vec<(u64, u64)> {
    range.map(|index| (index, term)).collect()
}

fn concat(parts: &[Vec<(u64, u64)>]) -> Vec<(u64, u64)> {
    parts.concat()
}

fn expect_error<T>(result: Result<T, Error>, want: &str, what: &str) -> Error {
    match result {
        Ok(_) => panic!("{what}: succeeded, expected {want}…"),
        Err(error) => {
            assert!(format!("{error:?}").starts_with(want), "{what}: failed with {error:?}, expected {want}…");
            error
        }
    }
}

/// An operation in a message: entries by shape, not data.
fn describe(op: &Op) -> String {
    match op {
        Save(hard_state, entries) => format!("Save({hard_state:?}, {:?})", shape(entries)),
        SaveFails(hard_state, entries, want) => format!("SaveFails({hard_state:?}, {:?}, {want})", shape(entries)),
        other => format!("{other:?}"),
    }
}

fn check_state(storage: &Storage, case: &Case, hard_state: &HardState, expected: &[(u64, u64)], when: &str) {
    let what = format!("{}: {when}", case.name);
    let (metadata, read_hard_state, read) = storage.read_all().unwrap_or_else(|error| panic!("{what}: read_all: {error}"));
    assert_eq!(metadata, METADATA, "{what}: metadata");
    assert_eq!(read_hard_state, *hard_state, "{what}: hard state");
    assert_eq!(shape(&read), expected, "{what}: entries");
    for entry in &read {
        assert!(*entry == sized_entry(entry.index, entry.term, case.entry_bytes), "{what}: data of entry {}", entry.index);
    }
    assert_eq!(storage.hard_state(), *hard_state, "{what}: hard_state()");
    let snapshot = storage.snapshot_marker();
    assert_eq!(storage.first_index(), expected.first().map_or(snapshot.index + 1, |&(index, _)| index), "{what}: first_index");
    assert_eq!(storage.last_index(), expected.last().map_or(snapshot.index, |&(index, _)| index), "{what}: last_index");
    assert_eq!(storage.term(snapshot.index).unwrap(), snapshot.term, "{what}: term of the snapshot's index");
    for &(index, term) in expected {
        assert_eq!(storage.term(index).unwrap(), term, "{what}: term({index})");
    }
}

fn check_case(case: &Case) {
    let directory = tempfile::tempdir().unwrap();
    let path = directory.path().join("wal");
    let options = options(case.segment_size_bytes);
    let mut storage = Some(Storage::create(&path, METADATA, options.clone()).unwrap());
    // The marker and error of a failed open, and the marker the storage was open at
    // before (where the log must still open), if the log was not changed under it.
    let mut open_failure: Option<(SnapshotMarker, Error, Option<SnapshotMarker>)> = None;
    for (step, op) in case.ops.iter().enumerate() {
        assert!(open_failure.is_none(), "{}: a failed open must be the last operation", case.name);
        let what = format!("{}: step {step} {}", case.name, describe(op));
        let current = storage.as_ref().unwrap();
        match op {
            Save(hard_state, entries) => current.save(hard_state, entries).unwrap_or_else(|error| panic!("{what}: {error}")),
            SaveFails(hard_state, entries, want) => {
                let published = current.log().published_position();
                let before = current.read_all().unwrap();
                expect_error(current.save(hard_state, entries), want, &what);
                assert_eq!(current.log().published_position(), published, "{what}: a failed save wrote records");
                assert!(current.read_all().unwrap() == before, "{what}: a failed save changed the state");
            }
            Snapshot(snapshot) => current.save_snapshot(snapshot).unwrap_or_else(|error| panic!("{what}: {error}")),
            Cut => current.cut().unwrap_or_else(|error| panic!("{what}: {error}")),
            Release(index, released) => {
                let count = current.release_to(*index).unwrap_or_else(|error| panic!("{what}: {error}"));
                match released {
                    Released::Nothing => assert_eq!(count, 0, "{what}: segments released"),
                    Released::Some => assert!(count > 0, "{what}: nothing released"),
                    Released::Any => {}
                }
            }
            Reopen(at) => {
                let before = current.snapshot_marker();
                storage.take().unwrap().close().unwrap();
                match Storage::open(&path, at, options.clone()) {
                    Ok(reopened) => storage = Some(reopened),
                    Err(error) => open_failure = Some((at.clone(), error, Some(before))),
                }
            }
            Inject(record_kind, payload) => {
                let at = current.snapshot_marker();
                storage.take().unwrap().close().unwrap();
                let log = Log::open(&path, options.clone()).unwrap();
                log.append_durable(*record_kind, payload).unwrap();
                log.close().unwrap();
                match Storage::open(&path, &at, options.clone()) {
                    Ok(reopened) => storage = Some(reopened),
                    Err(error) => open_failure = Some((at, error, None)),
                }
            }
        }
    }
    match (&case.expect, open_failure) {
        (Expect::OpenFails(want), Some((at, error, before))) => {
            expect_error::<()>(Err(error), want, &format!("{}: open at {at:?}", case.name));
            // Unlike etcd in write mode (PR #21369), both modes report it.
            expect_error(Storage::open_read_only(&path, &at), want, &format!("{}: read-only open at {at:?}", case.name));
            expect_error(Storage::open(&path, &at, options.clone()), want, &format!("{}: second open at {at:?}", case.name));
            match Storage::open_replaying(&path, &at, options.clone(), |_| {}) {
                Err(Error::CommittedEntryRewritten { .. }) if rewrites_committed_entries(case) => {}
                result => {
                    expect_error(result, want, &format!("{}: open_replaying at {at:?}", case.name));
                }
            }
            // The failed opens left the log as it was.
            if let Some(before) = before {
                Storage::open(&path, &before, options)
                    .unwrap_or_else(|error| panic!("{}: opening at {before:?} after the failed open: {error}", case.name));
            }
        }
        (Expect::OpenFails(want), None) => panic!("{}: every operation succeeded, expected an open to fail with {want}…", case.name),
        (Expect::State(_, _), Some((at, error, _))) => panic!("{}: open at {at:?} failed: {error:?}", case.name),
        (Expect::State(hard_state, expected), None) => {
            let storage = storage.unwrap();
            check_state(&storage, case, hard_state, expected, "before reopening");
            let at = storage.snapshot_marker();
            storage.close().unwrap();
            let reopened =
                Storage::open(&path, &at, options.clone()).unwrap_or_else(|error| panic!("{}: reopen at {at:?}: {error}", case.name));
            check_state(&reopened, case, hard_state, expected, "after reopening");
            drop(reopened);
            let read_only = Storage::open_read_only(&path, &at).unwrap_or_else(|error| panic!("{}: read-only open: {error}", case.name));
            check_state(&read_only, case, hard_state, expected, "read-only");
            drop(read_only);
            check_replay(case, &path, &at, options, hard_state, expected);
        }
    }
}

/// `Storage::open_replaying` hands over exactly the entries `read_all` returns, or, for
/// a history that rewrote an entry after committing it (which Raft never does), may
/// refuse to.
fn check_replay(
    case: &Case,
    path: &std::path::Path,
    at: &SnapshotMarker,
    options: Options,
    hard_state: &HardState,
    expected: &[(u64, u64)],
) {
    let mut replayed = Vec::new();
    match Storage::open_replaying(path, at, options, |entry| replayed.push(entry)) {
        Ok(storage) => {
            assert_eq!(shape(&replayed), expected, "{}: entries replayed", case.name);
            for entry in &replayed {
                assert!(
                    *entry == sized_entry(entry.index, entry.term, case.entry_bytes),
                    "{}: data of replayed entry {}",
                    case.name,
                    entry.index
                );
            }
            check_state(&storage, case, hard_state, expected, "opened replaying");
        }
        Err(Error::CommittedEntryRewritten { .. }) if rewrites_committed_entries(case) => {}
        Err(error) => panic!("{}: open_replaying at {at:?}: {error}", case.name),
    }
}

/// Whether a save of the case writes an entry at or below a commit index saved before.
fn rewrites_committed_entries(case: &Case) -> bool {
    let mut commit = 0;
    for op in &case.ops {
        if let Save(hard_state, entries) = op {
            if entries.first().is_some_and(|first| first.index <= commit) {
                return true;
            }
            commit = commit.max(hard_state.commit);
        }
    }
    false
}

fn check_all(cases: &[Case]) {
    for case in cases {
        check_case(case);
    }
}

fn hs(term: u64, commit: u64) -> HardState {
    hard_state(term, 1, commit)
}

#[test]
fn overwrites_follow_raft() {
    fn big(name: &'static str, segment_size_bytes: u64, entry_bytes: usize, ops: Vec<Op>, expect: Expect) -> Case {
        Case { name, segment_size_bytes, entry_bytes, ops, expect }
    }
    let big_run = |range: std::ops::RangeInclusive<u64>, term| entries(range, term, 1500);
    check_all(&[
        case(
            "overwrite in the middle",
            vec![Save(hs(1, 0), run(1..=5, 1)), Save(hs(2, 0), run(3..=4, 2))],
            state(hs(2, 0), &[(1, 1), (2, 1), (3, 2), (4, 2)]),
        ),
        case("overwrite of the last entry", vec![Save(hs(1, 0), run(1..=5, 1)), Save(hs(2, 0), run(5..=5, 2))], {
            state(hs(2, 0), &concat(&[terms(1..=4, 1), terms(5..=5, 2)]))
        }),
        case("append at last + 1 drops nothing", vec![Save(hs(1, 2), run(1..=3, 1)), Save(hs(2, 2), run(4..=5, 2))], {
            state(hs(2, 2), &concat(&[terms(1..=3, 1), terms(4..=5, 2)]))
        }),
        case(
            "overwrite of the whole log from its first entry",
            vec![Save(hs(1, 0), run(1..=5, 1)), Save(hs(2, 0), run(1..=2, 2))],
            state(hs(2, 0), &terms(1..=2, 2)),
        ),
        case(
            "a longer overwrite",
            vec![Save(hs(1, 0), run(1..=5, 1)), Save(hs(2, 0), run(2..=9, 2))],
            state(hs(2, 0), &concat(&[terms(1..=1, 1), terms(2..=9, 2)])),
        ),
        case(
            "repeated overwrites",
            vec![
                Save(hs(1, 0), run(1..=5, 1)),
                Save(hs(2, 0), run(3..=4, 2)),
                Save(hs(3, 0), run(4..=6, 3)),
                Save(hs(4, 1), run(2..=2, 4)),
            ],
            state(hs(4, 1), &[(1, 1), (2, 4)]),
        ),
        case(
            "overwrites on both sides of a reopen",
            vec![
                Save(hs(1, 0), run(1..=6, 1)),
                Save(hs(2, 0), run(4..=7, 2)),
                Reopen(marker(0, 0)),
                Save(hs(3, 0), run(6..=8, 3)),
                Reopen(marker(0, 0)),
            ],
            state(hs(3, 0), &concat(&[terms(1..=3, 1), terms(4..=5, 2), terms(6..=8, 3)])),
        ),
        case(
            "overwrite from the first index after a release",
            vec![Save(hs(1, 4), run(1..=8, 1)), Snapshot(marker(4, 1)), Release(4, Released::Any), Save(hs(2, 4), run(5..=6, 2))],
            state(hs(2, 4), &terms(5..=6, 2)),
        ),
        big(
            "overwrite across segment boundaries",
            4096,
            1500,
            vec![Save(hs(1, 0), big_run(1..=12, 1)), Cut, Save(hs(2, 0), big_run(3..=5, 2))],
            state(hs(2, 0), &concat(&[terms(1..=2, 1), terms(3..=5, 2)])),
        ),
        big(
            "overwrite spanning segments, with cuts between saves",
            8192,
            1500,
            vec![
                Save(hs(1, 0), big_run(1..=4, 1)),
                Cut,
                Save(hs(1, 0), big_run(5..=8, 1)),
                Cut,
                Save(hs(2, 0), big_run(3..=14, 2)),
                Cut,
                Save(hs(3, 0), big_run(12..=13, 3)),
            ],
            state(hs(3, 0), &concat(&[terms(1..=2, 1), terms(3..=11, 2), terms(12..=13, 3)])),
        ),
        big(
            "overwrite of a whole tail that fills earlier segments",
            16384,
            1500,
            vec![Save(hs(1, 0), big_run(1..=40, 1)), Save(hs(2, 0), big_run(11..=12, 2)), Reopen(marker(0, 0))],
            state(hs(2, 0), &concat(&[terms(1..=10, 1), terms(11..=12, 2)])),
        ),
    ]);
}

#[test]
fn open_returns_the_entries_above_the_snapshot_after_every_overwrite() {
    check_all(&[
        // etcd#22442: etcd drops entries at or below the snapshot together with the
        // truncation they imply, and returns the stale [5/1].
        case(
            "etcd#22442",
            vec![Save(hs(1, 0), run(1..=5, 1)), Save(hs(2, 4), run(3..=4, 2)), Snapshot(marker(4, 2)), Reopen(marker(4, 2))],
            state(hs(2, 4), &[]),
        ),
        case(
            "etcd#22442 with entries after the snapshot",
            vec![
                Save(hs(1, 0), run(1..=5, 1)),
                Save(hs(2, 4), run(3..=4, 2)),
                Snapshot(marker(4, 2)),
                Save(hs(2, 4), run(5..=6, 2)),
                Reopen(marker(4, 2)),
            ],
            state(hs(2, 4), &terms(5..=6, 2)),
        ),
        case(
            "etcd#22442 with the overwrite reaching above the snapshot",
            vec![Save(hs(1, 0), run(1..=5, 1)), Save(hs(2, 4), run(3..=5, 2)), Snapshot(marker(4, 2)), Reopen(marker(4, 2))],
            state(hs(2, 4), &[(5, 2)]),
        ),
        case(
            "snapshot below the overwrite",
            vec![Save(hs(1, 2), run(1..=5, 1)), Snapshot(marker(2, 1)), Save(hs(2, 2), run(3..=4, 2)), Reopen(marker(2, 1))],
            state(hs(2, 2), &terms(3..=4, 2)),
        ),
        case(
            "snapshot at the last entry",
            vec![Save(hs(1, 5), run(1..=5, 1)), Snapshot(marker(5, 1)), Reopen(marker(5, 1))],
            state(hs(1, 5), &[]),
        ),
        case(
            "an older snapshot still opens after a newer one",
            vec![Save(hs(1, 5), run(1..=5, 1)), Snapshot(marker(2, 1)), Snapshot(marker(4, 1)), Reopen(marker(2, 1))],
            state(hs(1, 5), &terms(3..=5, 1)),
        ),
        case(
            "reopen at {0, 0} after snapshots",
            vec![Save(hs(1, 5), run(1..=5, 1)), Snapshot(marker(3, 1)), Reopen(marker(0, 0))],
            state(hs(1, 5), &terms(1..=5, 1)),
        ),
    ]);
}

#[test]
fn opening_at_a_snapshot_the_log_does_not_hold_fails() {
    check_all(&[
        case(
            "never saved",
            vec![Save(hs(1, 3), run(1..=5, 1)), Reopen(marker(3, 1))],
            Expect::OpenFails("SnapshotNotFound { index: 3, term: 1 }"),
        ),
        case(
            "saved with another term",
            vec![Save(hs(2, 4), run(1..=5, 2)), Snapshot(marker(4, 2)), Reopen(marker(4, 1))],
            Expect::OpenFails("SnapshotMismatch { index: 4, expected_term: 1, found_term: 2 }"),
        ),
        case(
            "{0, 0} with another term",
            vec![Save(hs(1, 0), run(1..=2, 1)), Reopen(marker(0, 3))],
            Expect::OpenFails("SnapshotMismatch { index: 0, expected_term: 3, found_term: 0 }"),
        ),
        case(
            "above the log",
            vec![Save(hs(1, 5), run(1..=5, 1)), Snapshot(marker(5, 1)), Reopen(marker(6, 1))],
            Expect::OpenFails("SnapshotNotFound { index: 6, term: 1 }"),
        ),
        Case {
            name: "{0, 0} after its segment was released",
            segment_size_bytes: 4096,
            entry_bytes: 1000,
            ops: vec![
                Save(hs(1, 10), entries(1..=10, 1, 1000)),
                Cut,
                Snapshot(marker(10, 1)),
                Release(10, Released::Some),
                Reopen(marker(0, 0)),
            ],
            expect: Expect::OpenFails("SnapshotNotFound { index: 0, term: 0 }"),
        },
    ]);
}

fn encoded(entry: &Entry) -> Vec<u8> {
    entry.encode_to_vec()
}

#[test]
fn records_the_storage_never_writes_fail_the_open() {
    let base = || vec![Save(hs(1, 2), run(1..=5, 1))];
    let with = |op: Op| {
        let mut ops = base();
        ops.push(op);
        ops
    };
    check_all(&[
        case("another metadata", with(Inject(kind::METADATA, b"other".to_vec())), Expect::OpenFails("MetadataConflict")),
        case("empty metadata", with(Inject(kind::METADATA, Vec::new())), Expect::OpenFails("MetadataConflict")),
        case("the same metadata again", with(Inject(kind::METADATA, METADATA.to_vec())), state(hs(1, 2), &terms(1..=5, 1))),
        case(
            "an entry past a gap",
            with(Inject(kind::ENTRY, encoded(&entry(7, 1)))),
            Expect::OpenFails("EntryGap { expected: 6, found: 7 }"),
        ),
        case("the next entry", with(Inject(kind::ENTRY, encoded(&entry(6, 1)))), state(hs(1, 2), &terms(1..=6, 1))),
        case("an entry that does not decode", with(Inject(kind::ENTRY, vec![0x08])), Expect::OpenFails("BadRecord")),
        case("a hard state that does not decode", with(Inject(kind::HARD_STATE, vec![0x08, 0x80])), Expect::OpenFails("BadRecord")),
        case(
            "a snapshot marker that does not decode",
            with(Inject(kind::SNAPSHOT, vec![0x0a, 0x05, 0x01])),
            Expect::OpenFails("BadRecord"),
        ),
        case("a data kind the layer does not know", with(Inject(RecordKind(20), b"x".to_vec())), Expect::OpenFails("BadRecord")),
        // Reserved for several groups sharing a log: refused, not misread.
        case("a multi-group entry", with(Inject(RecordKind(33), b"x".to_vec())), Expect::OpenFails("BadRecord")),
    ]);
}

#[test]
fn saves_that_would_leave_a_hole_write_nothing() {
    let mut too_large = entry(7, 1);
    too_large.data = Some(vec![7u8; 70 << 10].into());
    check_all(&[
        case(
            "entries not contiguous",
            vec![Save(hs(1, 0), run(1..=2, 1)), SaveFails(hs(1, 2), vec![entry(3, 1), entry(5, 1)], "EntryGap { expected: 4, found: 5 }")],
            state(hs(1, 0), &terms(1..=2, 1)),
        ),
        case(
            "entries out of order",
            vec![Save(hs(1, 0), run(1..=2, 1)), SaveFails(hs(1, 2), vec![entry(3, 1), entry(3, 1)], "EntryGap { expected: 4, found: 3 }")],
            state(hs(1, 0), &terms(1..=2, 1)),
        ),
        case(
            "a gap after the last entry",
            vec![Save(hs(1, 0), run(1..=5, 1)), SaveFails(hs(2, 3), run(7..=8, 2), "EntryGap { expected: 6, found: 7 }")],
            state(hs(1, 0), &terms(1..=5, 1)),
        ),
        case(
            "a gap after the last entry, then the right save",
            vec![
                Save(hs(1, 0), run(1..=5, 1)),
                SaveFails(hs(2, 3), run(7..=8, 2), "EntryGap { expected: 6, found: 7 }"),
                Save(hs(2, 3), run(6..=8, 2)),
            ],
            state(hs(2, 3), &concat(&[terms(1..=5, 1), terms(6..=8, 2)])),
        ),
        case(
            "an entry larger than a segment",
            vec![Save(hs(1, 0), run(1..=5, 1)), SaveFails(hs(2, 3), vec![entry(6, 1), too_large], "RecordTooLarge")],
            state(hs(1, 0), &terms(1..=5, 1)),
        ),
    ]);
}

// A save after compaction whose entries do not start right after the snapshot must fail
// like any other gap: accepting it writes a log that no longer opens.
#[test]
fn a_gap_after_the_snapshot_is_refused() {
    check_all(&[
        case(
            "a first save not starting at 1",
            vec![SaveFails(hs(1, 0), run(5..=8, 1), "EntryGap { expected: 1, found: 5 }")],
            state(HardState::default(), &[]),
        ),
        case(
            "a gap after the compacted snapshot",
            vec![
                Save(hs(1, 10), run(1..=10, 1)),
                Snapshot(marker(10, 1)),
                Release(10, Released::Any),
                SaveFails(hs(1, 10), run(15..=16, 1), "EntryGap { expected: 11, found: 15 }"),
            ],
            state(hs(1, 10), &[]),
        ),
    ]);
}

// A follower far behind receives a snapshot and goes on from it: etcd saves the snapshot
// marker, then the hard state and the entries after the snapshot. etcd's ReadAll drops
// the entries at or below the snapshot, so the jump from the old entries to the new ones
// is no gap.
#[test]
fn entries_may_continue_after_a_snapshot_beyond_the_log() {
    check_all(&[
        case(
            "etcd's order: marker, then entries",
            vec![Save(hs(1, 10), run(1..=10, 1)), Snapshot(marker(100, 2)), Save(hs(2, 100), run(101..=103, 2)), Reopen(marker(100, 2))],
            state(hs(2, 100), &terms(101..=103, 2)),
        ),
        case(
            "marker, release, then entries",
            vec![
                Save(hs(1, 10), run(1..=10, 1)),
                Snapshot(marker(100, 2)),
                Release(100, Released::Any),
                Save(hs(2, 100), run(101..=103, 2)),
                Reopen(marker(100, 2)),
            ],
            state(hs(2, 100), &terms(101..=103, 2)),
        ),
    ]);
}

// An append below the snapshot cannot come from Raft (those entries are committed). If
// it is accepted, the storage must show what a reopen will find; raft-rs's MemStorage
// refuses it instead.
#[test]
fn a_save_at_or_below_a_snapshot_is_refused_as_compacted() {
    // Entries a snapshot covers are committed: Raft never writes them again, and taking
    // them would make the log read differently before and after a reopen.
    check_all(&[
        case(
            "overwrite below a released snapshot",
            vec![
                Save(hs(1, 6), run(1..=8, 1)),
                Snapshot(marker(6, 1)),
                Release(6, Released::Any),
                SaveFails(hs(2, 6), run(5..=7, 2), "Compacted { index: 5, first_index: 7 }"),
            ],
            state(hs(1, 6), &terms(7..=8, 1)),
        ),
        case(
            "overwrite below a snapshot not yet released",
            vec![
                Save(hs(1, 6), run(1..=8, 1)),
                Snapshot(marker(6, 1)),
                SaveFails(hs(2, 6), run(6..=7, 2), "Compacted { index: 6, first_index: 7 }"),
            ],
            state(hs(1, 6), &terms(1..=8, 1)),
        ),
    ]);
}

#[test]
fn release_never_goes_past_the_snapshot() {
    let big = |ops: Vec<Op>, name: &'static str, expect: Expect| Case { name, segment_size_bytes: 4096, entry_bytes: 1000, ops, expect };
    let big_run = |range: std::ops::RangeInclusive<u64>, term| entries(range, term, 1000);
    check_all(&[
        case("without a snapshot above 0", vec![Save(hs(1, 5), run(1..=5, 1)), Release(5, Released::Nothing)], {
            state(hs(1, 5), &terms(1..=5, 1))
        }),
        case(
            "below the only snapshot",
            vec![Save(hs(1, 5), run(1..=5, 1)), Snapshot(marker(3, 1)), Release(2, Released::Nothing)],
            state(hs(1, 5), &terms(1..=5, 1)),
        ),
        case(
            "compacts even when no segment goes",
            vec![Save(hs(1, 5), run(1..=5, 1)), Snapshot(marker(3, 1)), Release(3, Released::Nothing)],
            state(hs(1, 5), &terms(4..=5, 1)),
        ),
        big(
            vec![Save(hs(1, 8), big_run(1..=8, 1)), Snapshot(marker(8, 1)), Release(8, Released::Some), Save(hs(1, 8), big_run(9..=10, 1))],
            "to the last entry, then on",
            state(hs(1, 8), &terms(9..=10, 1)),
        ),
        big(
            vec![
                Save(hs(1, 4), big_run(1..=10, 1)),
                Snapshot(marker(4, 1)),
                Save(hs(2, 4), big_run(6..=12, 2)),
                Release(4, Released::Some),
            ],
            "to a snapshot below a later overwrite",
            state(hs(2, 4), &concat(&[terms(5..=5, 1), terms(6..=12, 2)])),
        ),
        big(
            vec![
                Save(hs(1, 0), big_run(1..=5, 1)),
                Save(hs(2, 4), big_run(3..=4, 2)),
                Snapshot(marker(4, 2)),
                Release(4, Released::Some),
                Save(hs(2, 4), big_run(5..=6, 2)),
            ],
            "etcd#22442, released",
            state(hs(2, 4), &terms(5..=6, 2)),
        ),
        big(
            vec![
                Save(hs(1, 30), big_run(1..=30, 1)),
                Snapshot(marker(10, 1)),
                Snapshot(marker(20, 1)),
                Release(10, Released::Some),
                Release(20, Released::Some),
                Reopen(marker(20, 1)),
                Release(30, Released::Nothing),
            ],
            "twice, then from a reopen",
            state(hs(1, 30), &terms(21..=30, 1)),
        ),
    ]);
}

#[test]
fn the_last_hard_state_wins() {
    check_all(&[
        case(
            "last of several",
            vec![
                Save(hard_state(1, 1, 0), run(1..=3, 1)),
                Save(hard_state(2, 2, 1), vec![]),
                Save(hard_state(3, 0, 2), vec![]),
                Save(HardState::default(), run(4..=4, 3)),
            ],
            state(hard_state(3, 0, 2), &concat(&[terms(1..=3, 1), terms(4..=4, 3)])),
        ),
        case(
            "a commit-only change is written",
            vec![Save(hard_state(1, 1, 3), run(1..=5, 1)), Save(hard_state(1, 1, 5), vec![]), Reopen(marker(0, 0))],
            state(hard_state(1, 1, 5), &terms(1..=5, 1)),
        ),
        case(
            "the same hard state again",
            vec![Save(hard_state(1, 1, 3), run(1..=5, 1)), Save(hard_state(1, 1, 3), vec![]), Reopen(marker(0, 0))],
            state(hard_state(1, 1, 3), &terms(1..=5, 1)),
        ),
        case("no hard state ever", vec![Save(HardState::default(), run(1..=2, 1))], state(HardState::default(), &terms(1..=2, 1))),
        case(
            "a hard state saved alone, then across a reopen",
            vec![Save(hard_state(4, 2, 0), vec![]), Reopen(marker(0, 0)), Save(hard_state(5, 0, 0), vec![])],
            state(hard_state(5, 0, 0), &[]),
        ),
    ]);
}

#[test]
fn must_sync_follows_etcd() {
    let previous = hard_state(2, 1, 10);
    // (state, entry count, must sync)
    let table = [
        (hard_state(2, 1, 10), 0, false),
        (hard_state(2, 1, 11), 0, false),
        (hard_state(2, 1, 9), 0, false),
        (HardState::default(), 0, true),
        (hard_state(2, 1, 10), 1, true),
        (hard_state(2, 1, 11), 3, true),
        (hard_state(3, 1, 10), 0, true),
        (hard_state(2, 2, 10), 0, true),
        (hard_state(2, 0, 10), 0, true),
        (hard_state(3, 0, 11), 0, true),
    ];
    for (state, count, expected) in table {
        assert_eq!(must_sync(&state, &previous, count), expected, "must_sync({state:?}, {previous:?}, {count})");
    }
}

/// A save returns once durable exactly when `must_sync` says so: a commit-only change
/// is published but left for the next sync.
#[test]
fn only_saves_that_must_sync_wait_for_durability() {
    let directory = tempfile::tempdir().unwrap();
    let path = directory.path().join("wal");
    let storage = Storage::create(&path, METADATA, options(64 << 10)).unwrap();
    let log = storage.log();
    let all_durable = || log.durable_position() == log.published_position();
    storage.save(&hard_state(1, 1, 0), &run(1..=3, 1)).unwrap();
    assert!(all_durable(), "entries are synced");
    let published = log.published_position();
    storage.save(&hard_state(1, 1, 2), &[]).unwrap();
    assert!(log.published_position() > published, "a commit-only change is written");
    assert!(!all_durable(), "a commit-only change is not synced");
    storage.save(&hard_state(1, 1, 2), &[]).unwrap();
    storage.save(&HardState::default(), &[]).unwrap();
    assert!(!all_durable(), "nothing new to sync");
    storage.save(&hard_state(1, 2, 2), &[]).unwrap();
    assert!(all_durable(), "a new vote is synced");
    storage.save(&hard_state(1, 2, 3), &[]).unwrap();
    storage.save(&hard_state(2, 0, 3), &[]).unwrap();
    assert!(all_durable(), "a new term is synced, with the commit-only change before it");
    storage.save(&hard_state(2, 0, 3), &run(4..=4, 2)).unwrap();
    assert!(all_durable(), "entries with an unchanged hard state are synced");
    let published = log.published_position();
    storage.save(&hard_state(2, 0, 3), &[]).unwrap();
    storage.save(&HardState::default(), &[]).unwrap();
    assert_eq!(log.published_position(), published, "an unchanged or empty hard state writes nothing");
}

#[test]
fn entries_follow_raft_rs() {
    let directory = tempfile::tempdir().unwrap();
    let path = directory.path().join("wal");
    let storage = Storage::create(&path, METADATA, options(8192)).unwrap();
    let size = |entries: &[Entry]| entries.iter().map(|entry| entry.encoded_len() as u64).sum::<u64>();
    // Entries 1..=30 of term 1, then an overwrite from 21 of term 2 over 20..=40.
    storage.save(&hs(1, 20), &entries(1..=30, 1, 300)).unwrap();
    storage.save(&hs(2, 20), &entries(21..=40, 2, 300)).unwrap();
    let expected =
        |low: u64, high: u64| -> Vec<Entry> { (low..high).map(|index| sized_entry(index, if index <= 20 { 1 } else { 2 }, 300)).collect() };
    for (low, high) in [(1, 41), (1, 2), (5, 25), (20, 22), (40, 41)] {
        assert!(storage.entries(low, high, None).unwrap() == expected(low, high), "entries({low}, {high})");
    }
    assert_eq!(storage.entries(7, 7, None).unwrap(), vec![], "an empty range");
    expect_error(storage.entries(0, 3, None), "Compacted { index: 0, first_index: 1 }", "below the first index");
    expect_error(storage.entries(40, 42, None), "Unavailable { index: 41, last_index: 40 }", "past last_index + 1");
    expect_error(storage.entries(41, 42, None), "Unavailable { index: 41, last_index: 40 }", "starting past the last");
    expect_error(storage.entries(5, 4, None), "InvalidArgument", "low above high");

    // max_size: the longest prefix within the limit, but never nothing.
    let one = size(&expected(10, 11));
    assert_eq!(storage.entries(10, 20, Some(0)).unwrap().len(), 1, "always one entry");
    assert_eq!(storage.entries(10, 20, Some(one - 1)).unwrap().len(), 1, "always one entry");
    assert_eq!(storage.entries(10, 20, Some(one)).unwrap().len(), 1);
    assert_eq!(storage.entries(10, 20, Some(3 * one)).unwrap().len(), 3, "exactly three fit");
    assert_eq!(storage.entries(10, 20, Some(3 * one + one - 1)).unwrap().len(), 3);
    assert!(storage.entries(10, 20, Some(u64::MAX)).unwrap() == expected(10, 20));
    assert!(storage.entries(18, 25, Some(size(&expected(18, 23)))).unwrap() == expected(18, 23), "across the change of term");

    // Terms: the snapshot's index answers with the snapshot's term.
    assert_eq!(storage.term(0).unwrap(), 0);
    assert_eq!((storage.term(20).unwrap(), storage.term(21).unwrap()), (1, 2));
    expect_error(storage.term(41), "Unavailable { index: 41, last_index: 40 }", "term past the last");
    assert_eq!((storage.first_index(), storage.last_index()), (1, 40));

    // After a snapshot and release, the snapshot's term answers for its index and the
    // entries at or below it are compacted.
    storage.cut().unwrap();
    storage.save_snapshot(&marker(25, 2)).unwrap();
    // Releasing needs a hard state that commits the snapshot (boot trusts no other).
    storage.save(&hs(2, 40), &[]).unwrap();
    assert!(storage.release_to(25).unwrap() > 0);
    assert_eq!((storage.first_index(), storage.last_index()), (26, 40));
    assert_eq!(storage.term(25).unwrap(), 2);
    expect_error(storage.term(24), "Compacted { index: 24, first_index: 26 }", "term below the snapshot");
    expect_error(storage.entries(25, 27, None), "Compacted { index: 25, first_index: 26 }", "entries from the snapshot");
    assert!(storage.entries(26, 41, Some(1)).unwrap() == expected(26, 27));
    assert!(storage.read_all().unwrap().2 == expected(26, 41));

    // Snapshot at the last entry: no entries, first_index one past it.
    storage.save_snapshot(&marker(40, 2)).unwrap();
    storage.release_to(40).unwrap();
    assert_eq!((storage.first_index(), storage.last_index()), (41, 40));
    assert_eq!(storage.term(40).unwrap(), 2);
    expect_error(storage.entries(40, 41, None), "Compacted { index: 40, first_index: 41 }", "the snapshot's own entry");
    expect_error(storage.entries(41, 42, None), "Unavailable { index: 41, last_index: 40 }", "past the snapshot");
    assert_eq!(storage.read_all().unwrap().2, vec![]);
    storage.save(&hs(2, 40), &entries(41..=41, 2, 300)).unwrap();
    assert!(storage.entries(41, 42, None).unwrap() == vec![sized_entry(41, 2, 300)]);
    storage.close().unwrap();
    let reopened = Storage::open(&path, &marker(40, 2), options(8192)).unwrap();
    assert_eq!((reopened.first_index(), reopened.last_index()), (41, 41));
    assert!(reopened.read_all().unwrap().2 == vec![sized_entry(41, 2, 300)]);
}

const BIG_ENTRY_BYTES: usize = 1000;

/// A log of entries 1..=100 over many 8 KiB segments, with a hard state and the
/// metadata in the first segments only.
fn hundred_entries(path: &std::path::Path) -> Storage {
    let storage = Storage::create(path, METADATA, options(8192)).unwrap();
    storage.save(&hs(1, 100), &entries(1..=100, 1, BIG_ENTRY_BYTES)).unwrap();
    assert!(storage.log().segment_count() > 10);
    storage
}

#[test]
fn release_keeps_everything_above_the_snapshot() {
    let directory = tempfile::tempdir().unwrap();
    let path = directory.path().join("wal");
    let storage = hundred_entries(&path);
    let expected_above = |index: u64| entries(index + 1..=100, 1, BIG_ENTRY_BYTES);

    // Only {0, 0} is there: nothing is covered, nothing goes.
    assert_eq!(storage.release_to(100).unwrap(), 0, "release without a snapshot above 0");
    assert_eq!(storage.first_index(), 1);

    storage.save_snapshot(&marker(50, 1)).unwrap();
    assert_eq!(storage.release_to(49).unwrap(), 0, "below the only snapshot but {{0, 0}}");
    assert_eq!(storage.first_index(), 1);
    let released = storage.release_to(50).unwrap();
    assert!(released > 0, "the segments below entry 51 go");
    assert_eq!(storage.first_index(), 51);
    assert!(storage.read_all().unwrap().2 == expected_above(50), "entries 51..=100 sit in old segments and stay");
    assert_eq!(storage.release_to(50).unwrap(), 0, "a second release finds nothing more");
    storage.close().unwrap();
    let reopened = Storage::open(&path, &marker(50, 1), options(8192)).unwrap();
    assert!(reopened.read_all().unwrap() == (METADATA.to_vec(), hs(1, 100), expected_above(50)));
    let first_segment = segment_files(&path)[0].base_position;
    assert!(reopened.log().first_position().0 >= first_segment && first_segment > 0);
}

#[test]
fn release_carries_the_hard_state_and_metadata_forward() {
    let directory = tempfile::tempdir().unwrap();
    let path = directory.path().join("wal");
    let storage = hundred_entries(&path);
    // No hard state after the first save: its record is in the first segments only.
    storage.save(&HardState::default(), &entries(101..=120, 1, BIG_ENTRY_BYTES)).unwrap();
    storage.save_snapshot(&marker(100, 1)).unwrap();
    assert!(storage.release_to(100).unwrap() > 5);
    assert!(segment_files(&path)[0].sequence > 0, "the first segment, with the metadata, is gone");
    assert!(storage.read_all().unwrap() == (METADATA.to_vec(), hs(1, 100), entries(101..=120, 1, BIG_ENTRY_BYTES)));
    // A second release, over the segments the carried records went to; the snapshot at
    // 150 needs a hard state committing it before anything is released up to it.
    storage.save(&HardState::default(), &entries(121..=160, 1, BIG_ENTRY_BYTES)).unwrap();
    storage.save_snapshot(&marker(150, 1)).unwrap();
    assert_eq!(storage.release_to(150).unwrap(), 0, "150 is not committed yet");
    storage.save(&hs(1, 150), &[]).unwrap();
    assert!(storage.release_to(150).unwrap() > 0);
    storage.close().unwrap();
    for read_only in [false, true] {
        let reopened = if read_only {
            Storage::open_read_only(&path, &marker(150, 1)).unwrap()
        } else {
            Storage::open(&path, &marker(150, 1), options(8192)).unwrap()
        };
        assert!(reopened.read_all().unwrap() == (METADATA.to_vec(), hs(1, 150), entries(151..=160, 1, BIG_ENTRY_BYTES)));
    }
}

#[test]
fn release_uses_the_newest_snapshot_at_or_below_the_index() {
    let directory = tempfile::tempdir().unwrap();
    let path = directory.path().join("wal");
    let storage = hundred_entries(&path);
    storage.save_snapshot(&marker(30, 1)).unwrap();
    storage.save_snapshot(&marker(60, 1)).unwrap();
    assert!(storage.release_to(45).unwrap() > 0);
    assert_eq!(storage.snapshot_marker(), marker(30, 1));
    assert_eq!(storage.first_index(), 31);
    storage.close().unwrap();
    for (at, first) in [(marker(30, 1), 31), (marker(60, 1), 61)] {
        let reopened = Storage::open(&path, &at, options(8192)).unwrap();
        assert!(reopened.read_all().unwrap().2 == entries(first..=100, 1, BIG_ENTRY_BYTES), "opened at {at:?}");
    }
}

// Releasing to an older snapshot than the one the storage starts at must not delete
// the entries it holds: they are not covered by the older snapshot.
#[test]
fn release_to_an_older_snapshot_keeps_the_entries_held() {
    for reopen in [true, false] {
        let directory = tempfile::tempdir().unwrap();
        let path = directory.path().join("wal");
        let mut storage = hundred_entries(&path);
        storage.save_snapshot(&marker(50, 1)).unwrap();
        storage.save_snapshot(&marker(60, 1)).unwrap();
        if reopen {
            storage.close().unwrap();
            storage = Storage::open(&path, &marker(60, 1), options(8192)).unwrap();
        } else {
            storage.release_to(60).unwrap();
        }
        storage.release_to(55).unwrap();
        let case = if reopen { "after a reopen at {60, 1}" } else { "after release_to(60)" };
        assert!(storage.read_all().map(|all| all.2).ok() == Some(entries(61..=100, 1, BIG_ENTRY_BYTES)), "{case}: entries 61..=100");
        storage.close().unwrap();
        let reopened = Storage::open(&path, &marker(60, 1), options(8192)).unwrap();
        assert!(reopened.read_all().unwrap().2 == entries(61..=100, 1, BIG_ENTRY_BYTES), "{case}: entries 61..=100 after a reopen");
    }
}

#[test]
fn valid_snapshot_markers_are_those_committed() {
    let directory = tempfile::tempdir().unwrap();
    let path = directory.path().join("wal");
    let markers = |storage: Storage| {
        storage.close().unwrap();
        let markers = Storage::valid_snapshot_markers(&path).unwrap();
        (Storage::open(&path, &marker(0, 0), options(64 << 10)).unwrap(), markers)
    };
    let storage = Storage::create(&path, METADATA, options(64 << 10)).unwrap();
    let (storage, found) = markers(storage);
    assert_eq!(found, vec![marker(0, 0)], "a new log");
    storage.save(&hs(1, 3), &run(1..=10, 1)).unwrap();
    storage.save_snapshot(&marker(3, 1)).unwrap();
    storage.save_snapshot(&marker(5, 1)).unwrap();
    let (storage, found) = markers(storage);
    assert_eq!(found, vec![marker(0, 0), marker(3, 1)], "{{5, 1}} is above the commit index");
    storage.save(&hs(2, 5), &[]).unwrap();
    let (storage, found) = markers(storage);
    assert_eq!(found, vec![marker(0, 0), marker(3, 1), marker(5, 1)]);
    storage.save(&hs(2, 5), &run(6..=12, 2)).unwrap();
    storage.save_snapshot(&marker(9, 2)).unwrap();
    storage.save(&hs(2, 9), &[]).unwrap();
    let (storage, found) = markers(storage);
    assert_eq!(found, vec![marker(0, 0), marker(3, 1), marker(5, 1), marker(9, 2)], "the last hard state counts");
    // A hard state later in the log with a lower commit (a restarted node relearning it).
    storage.save(&hard_state(3, 0, 4), &[]).unwrap();
    let (storage, found) = markers(storage);
    assert_eq!(found, vec![marker(0, 0), marker(3, 1)]);
    drop(storage);
    let storage = Storage::open(&path, &marker(0, 0), options(64 << 10)).unwrap();
    expect_error(Storage::valid_snapshot_markers(&path), "AlreadyInUse", "while a writer holds the log");
    drop(storage);
}

#[test]
fn read_only_storage_refuses_writes() {
    let directory = tempfile::tempdir().unwrap();
    let path = directory.path().join("wal");
    Storage::create(&path, METADATA, options(64 << 10)).unwrap().close().unwrap();
    let storage = Storage::open_read_only(&path, &marker(0, 0)).unwrap();
    expect_error(storage.save(&hs(1, 0), &[]), "ReadOnly", "save of a hard state");
    expect_error(storage.save_snapshot(&marker(0, 0)), "ReadOnly", "save_snapshot");
    expect_error(storage.cut(), "ReadOnly", "cut");
    expect_error(storage.release_to(0), "ReadOnly", "release_to");
    assert!(storage.read_all().unwrap() == (METADATA.to_vec(), HardState::default(), vec![]));
}

#[test]
fn read_only_storage_refuses_entries_as_read_only() {
    let directory = tempfile::tempdir().unwrap();
    let path = directory.path().join("wal");
    Storage::create(&path, METADATA, options(64 << 10)).unwrap().close().unwrap();
    let storage = Storage::open_read_only(&path, &marker(0, 0)).unwrap();
    expect_error(storage.save(&hs(1, 0), &run(1..=1, 1)), "ReadOnly", "save of entries");
}

/// A log 1..=12 built by overwrites, with a snapshot marker at every index: opened at
/// each, it returns the model's entries above it, and so does a release to it. Markers
/// go either after every save or as early as Raft allows.
#[test]
fn every_snapshot_of_a_log_with_overwrites_opens_to_the_model() {
    // Each save: first index, last index, term. Final log: 1..=3/1, 4..=6/2, 7..=8/3, 9..=12/4.
    let saves: [(u64, u64, u64); 5] = [(1, 6, 1), (4, 8, 2), (7, 10, 3), (9, 11, 4), (12, 12, 4)];
    let mut model = Model::default();
    for &(first, last, term) in &saves {
        model.save(&hs(term, 0), &entries(first..=last, term, 700));
    }
    let final_model = model;
    let last_index = final_model.last_index();
    assert_eq!(shape(&final_model.entries_after(0)), concat(&[terms(1..=3, 1), terms(4..=6, 2), terms(7..=8, 3), terms(9..=12, 4)]));
    let markers: Vec<SnapshotMarker> = (0..=last_index).map(|index| marker(index, final_model.term(index).unwrap_or(0))).collect();

    #[derive(Clone, Copy, Debug)]
    enum Placement {
        /// Every marker after every save: overwrites of entries at and below it come
        /// first (the etcd#22442 order).
        AtTheEnd,
        /// Each marker right after the save that wrote its entry for the last time.
        Earliest,
    }
    for placement in [Placement::AtTheEnd, Placement::Earliest] {
        let directory = tempfile::tempdir().unwrap();
        let path = directory.path().join("wal");
        let storage = Storage::create(&path, METADATA, options(4096)).unwrap();
        let mut saved = vec![false; markers.len()];
        saved[0] = true;
        let mut hard_state = HardState::default();
        for (number, &(first, last, term)) in saves.iter().enumerate() {
            // Entries final after this save: every one below the next save's first index.
            let final_below = saves.get(number + 1).map_or(last_index + 1, |next| next.0);
            hard_state = hs(term, (final_below - 1).min(last));
            storage.save(&hard_state, &entries(first..=last, term, 700)).unwrap();
            if number % 2 == 1 {
                storage.cut().unwrap();
            }
            if let Placement::Earliest = placement {
                for index in 1..final_below.min(last + 1) {
                    if !saved[index as usize] {
                        storage.save_snapshot(&markers[index as usize]).unwrap();
                        saved[index as usize] = true;
                    }
                }
            }
        }
        for (index, done) in saved.iter_mut().enumerate() {
            if !*done {
                storage.save_snapshot(&markers[index]).unwrap();
                *done = true;
            }
        }
        storage.close().unwrap();
        let mut expected_model = final_model.clone();
        expected_model.hard_state = hard_state;
        for at in &markers {
            let case = format!("{placement:?}, opened at {at:?}");
            let opened = Storage::open(&path, at, options(4096)).unwrap_or_else(|error| panic!("{case}: {error}"));
            common::raft::assert_matches_model(&opened, &expected_model, at, METADATA, &case);
            drop(opened);
            common::raft::assert_replay_matches_model(&path, options(4096), &expected_model, at, METADATA, &case);
            // Released to the marker in a copy, then reopened.
            let copy = tempfile::tempdir().unwrap();
            copy_log(&path, copy.path());
            let released = Storage::open(copy.path(), &marker(0, 0), options(4096)).unwrap();
            released.release_to(at.index).unwrap();
            common::raft::assert_matches_model(&released, &expected_model, at, METADATA, &format!("{case}, released"));
            released.close().unwrap();
            let reopened = Storage::open(copy.path(), at, options(4096)).unwrap_or_else(|error| panic!("{case}, released: {error}"));
            common::raft::assert_matches_model(&reopened, &expected_model, at, METADATA, &format!("{case}, released and reopened"));
        }
    }
}

/// Random Raft-like histories: terms change, uncommitted suffixes are overwritten, the
/// commit index advances, snapshots are taken at committed indexes (never lower than the
/// last), cuts and reopens happen anywhere. At the end every marker opens to the model.
#[test]
fn random_histories_open_to_the_model_at_every_snapshot() {
    let seed = test_seed();
    let _guard = SeedGuard { test: "random_histories_open_to_the_model_at_every_snapshot", seed };
    println!("seed {seed}");
    let mut rng = StdRng::seed_from_u64(seed);
    for history in 0..12 {
        let directory = tempfile::tempdir().unwrap();
        let path = directory.path().join("wal");
        let options = options(8192);
        let mut storage = Storage::create(&path, METADATA, options.clone()).unwrap();
        let mut model = Model::default();
        let mut markers = vec![marker(0, 0)];
        let mut opened_at = marker(0, 0);
        let (mut term, mut commit) = (1u64, 0u64);
        for _ in 0..rng.gen_range(20..60) {
            match rng.gen_range(0..10) {
                0..=5 => {
                    let last = model.last_index();
                    // Overwrite anything uncommitted, or append.
                    let first = if rng.gen_bool(0.3) && last > commit { rng.gen_range(commit + 1..=last) } else { last + 1 };
                    if first <= last {
                        term += 1;
                    }
                    let count = rng.gen_range(1..8);
                    let size = rng.gen_range(10..900);
                    let batch = entries(first..=first + count - 1, term, size);
                    let new_last = first + count - 1;
                    if rng.gen_bool(0.6) {
                        commit = rng.gen_range(commit..=new_last);
                    }
                    let state = hard_state(term, 1, commit);
                    storage.save(&state, &batch).unwrap();
                    model.save(&state, &batch);
                }
                6 => {
                    let newest = markers.last().unwrap().index;
                    if commit > newest {
                        let index = rng.gen_range(newest + 1..=commit);
                        let snapshot = marker(index, model.term(index).unwrap());
                        storage.save_snapshot(&snapshot).unwrap();
                        markers.push(snapshot);
                    }
                }
                7 => storage.cut().unwrap(),
                8 => {
                    storage.close().unwrap();
                    opened_at = markers[rng.gen_range(0..markers.len())].clone();
                    storage = Storage::open(&path, &opened_at, options.clone()).unwrap();
                    common::raft::assert_matches_model(&storage, &model, &opened_at, METADATA, &format!("history {history}, reopened"));
                }
                _ => {
                    if rng.gen_bool(0.5) {
                        // A commit-only change.
                        commit = rng.gen_range(commit..=model.last_index());
                        let state = hard_state(term, 1, commit);
                        storage.save(&state, &[]).unwrap();
                        model.save(&state, &[]);
                    }
                }
            }
        }
        common::raft::assert_matches_model(&storage, &model, &opened_at, METADATA, &format!("history {history}, at the end"));
        storage.close().unwrap();
        for at in &markers {
            let case = format!("history {history}, opened at {at:?}");
            let opened = Storage::open(&path, at, options.clone()).unwrap_or_else(|error| panic!("{case}: {error}"));
            common::raft::assert_matches_model(&opened, &model, at, METADATA, &case);
            drop(opened);
            let read_only = Storage::open_read_only(&path, at).unwrap_or_else(|error| panic!("{case}, read-only: {error}"));
            common::raft::assert_matches_model(&read_only, &model, at, METADATA, &format!("{case}, read-only"));
            drop(read_only);
            common::raft::assert_replay_matches_model(&path, options.clone(), &model, at, METADATA, &case);
        }
        // Released to the newest marker: it and every entry above it stay.
        let newest = markers.last().unwrap().clone();
        let storage = Storage::open(&path, &marker(0, 0), options.clone()).unwrap();
        storage.release_to(newest.index).unwrap();
        common::raft::assert_matches_model(&storage, &model, &newest, METADATA, &format!("history {history}, released"));
        storage.close().unwrap();
        let reopened = Storage::open(&path, &newest, options.clone()).unwrap();
        common::raft::assert_matches_model(&reopened, &model, &newest, METADATA, &format!("history {history}, released and reopened"));
    }
}

/// Saves of the hard state from several threads and reads from others, all at once:
/// every read sees the whole log, and the hard state a reopen finds is the one the
/// storage last reported (records reach the log in the order the storage saw them).
#[test]
fn concurrent_hard_state_saves_and_reads_are_safe() {
    const THREADS: u64 = 4;
    const SAVES: u64 = 200;
    let directory = tempfile::tempdir().unwrap();
    let path = directory.path().join("wal");
    let storage = Arc::new(Storage::create(&path, METADATA, options(16384)).unwrap());
    storage.save(&hs(1, 0), &entries(1..=50, 1, 200)).unwrap();
    let barrier = Arc::new(Barrier::new(THREADS as usize * 2));
    let mut savers = Vec::new();
    let mut readers = Vec::new();
    for thread in 0..THREADS {
        let (saver_storage, saver_barrier) = (Arc::clone(&storage), Arc::clone(&barrier));
        savers.push(std::thread::spawn(move || {
            let (storage, barrier) = (saver_storage, saver_barrier);
            barrier.wait();
            let mut state = HardState::default();
            for save in 0..SAVES {
                // Distinct for every thread and save; every fourth one changes the vote.
                state = hard_state(1 + save / 4, thread + 1 + save % 4 / 3 * 10, save * THREADS + thread);
                storage.save(&state, &[]).unwrap();
            }
            state
        }));
        let (storage, barrier) = (Arc::clone(&storage), Arc::clone(&barrier));
        readers.push(std::thread::spawn(move || {
            barrier.wait();
            for read in 0..SAVES {
                let low = 1 + read % 50;
                assert!(storage.entries(low, 51, None).unwrap() == entries(low..=50, 1, 200));
                let (metadata, _, all) = storage.read_all().unwrap();
                assert!(metadata == METADATA && all.len() == 50);
                assert_eq!(storage.term(low).unwrap(), 1);
            }
        }));
    }
    let last_states: Vec<HardState> = savers.into_iter().map(|handle| handle.join().unwrap()).collect();
    for handle in readers {
        handle.join().unwrap();
    }
    let last = storage.hard_state();
    assert!(last_states.contains(&last), "{last:?} is not the last save of any thread: {last_states:?}");
    Arc::into_inner(storage).unwrap().close().unwrap();
    let reopened = Storage::open(&path, &marker(0, 0), options(16384)).unwrap();
    assert!(reopened.read_all().unwrap() == (METADATA.to_vec(), last, entries(1..=50, 1, 200)));
}

/// Threads saving consecutive batches in turn, serialized by a shared counter (Raft has
/// one writer per group; the counter stands for its ordering), with readers of the
/// growing log alongside and segment rotations under them.
#[test]
fn concurrent_consecutive_batches_serialized_by_a_counter() {
    const THREADS: u64 = 4;
    const BATCHES: u64 = 120;
    const BATCH: u64 = 3;
    let directory = tempfile::tempdir().unwrap();
    let path = directory.path().join("wal");
    let storage = Arc::new(Storage::create(&path, METADATA, options(16384)).unwrap());
    // The next batch number; its owner is `batch % THREADS`.
    let turn = Arc::new((Mutex::new(0u64), Condvar::new()));
    let saved_last = Arc::new(AtomicU64::new(0));
    let mut handles = Vec::new();
    for thread in 0..THREADS {
        let (storage, turn, saved_last) = (Arc::clone(&storage), Arc::clone(&turn), Arc::clone(&saved_last));
        handles.push(std::thread::spawn(move || {
            let (next_batch, changed) = &*turn;
            loop {
                let mut batch =
                    changed.wait_while(next_batch.lock().unwrap(), |batch| *batch < BATCHES && *batch % THREADS != thread).unwrap();
                if *batch >= BATCHES {
                    return;
                }
                let first = *batch * BATCH + 1;
                let last = first + BATCH - 1;
                storage.save(&hs(1, first - 1), &entries(first..=last, 1, 400)).unwrap();
                saved_last.store(last, Ordering::Release);
                *batch += 1;
                changed.notify_all();
            }
        }));
    }
    for _ in 0..2 {
        let (storage, saved_last) = (Arc::clone(&storage), Arc::clone(&saved_last));
        handles.push(std::thread::spawn(move || {
            while saved_last.load(Ordering::Acquire) < BATCHES * BATCH {
                let last = saved_last.load(Ordering::Acquire);
                if last == 0 {
                    std::thread::yield_now();
                    continue;
                }
                assert!(storage.last_index() >= last);
                let low = 1 + last / 2;
                assert!(storage.entries(low, last + 1, None).unwrap() == entries(low..=last, 1, 400));
            }
        }));
    }
    for handle in handles {
        handle.join().unwrap();
    }
    let total = BATCHES * BATCH;
    assert!(storage.log().segment_count() > 5, "the batches crossed segments");
    assert!(storage.read_all().unwrap().2 == entries(1..=total, 1, 400));
    Arc::into_inner(storage).unwrap().close().unwrap();
    let reopened = Storage::open(&path, &marker(0, 0), options(16384)).unwrap();
    assert!(reopened.read_all().unwrap() == (METADATA.to_vec(), hs(1, total - BATCH), entries(1..=total, 1, 400)));
}

/// Raft never rewrites a committed entry; a log that does still opens, but a replaying
/// open cannot take back the entries it handed over, so it says where the log did it.
#[test]
fn open_replaying_refuses_a_log_that_rewrites_committed_entries() {
    let directory = tempfile::tempdir().unwrap();
    let path = directory.path().join("wal");
    let storage = Storage::create(&path, METADATA, options(1 << 20)).unwrap();
    storage.save(&hs(1, 3), &entries(1..=5, 1, 40)).unwrap();
    storage.save(&hs(2, 3), &entries(3..=4, 2, 40)).unwrap();
    let position = storage.log().published_position().0;
    storage.close().unwrap();
    let opened = Storage::open(&path, &marker(0, 0), options(1 << 20)).unwrap();
    assert_eq!(shape(&opened.read_all().unwrap().2), [(1, 1), (2, 1), (3, 2), (4, 2)]);
    drop(opened);
    let mut replayed = Vec::new();
    match Storage::open_replaying(&path, &marker(0, 0), options(1 << 20), |entry| replayed.push(entry)) {
        Err(Error::CommittedEntryRewritten { index: 3, position: at, delivered_through: 3 }) => {
            assert!(at < position, "the rewrite's position {at} lies in the log (published up to {position})");
        }
        other => panic!("expected CommittedEntryRewritten for entry 3, got {other:?}"),
    }
    assert_eq!(shape(&replayed), [(1, 1), (2, 1), (3, 1)], "what was handed over was committed");
}

/// Saves entries 1..=1152 of 64 KiB, 16 per save with `hard_state`: 72 MiB, more than
/// a replaying open holds while waiting for a commit. Returns the model of the saves.
fn save_past_the_replay_bound(storage: &Storage, hard_state: HardState) -> Model {
    let mut model = Model::default();
    for first in (1..=16 * 72).step_by(16) {
        let batch = entries(first..=first + 15, 1, 64 << 10);
        storage.save(&hard_state, &batch).unwrap();
        model.save(&hard_state, &batch);
    }
    model
}

/// Past the bound on entries held for a commit, a replaying open reads the rest back from
/// the opened log: still every entry, once, in order.
#[test]
fn open_replaying_hands_over_a_long_uncommitted_tail() {
    let directory = tempfile::tempdir().unwrap();
    let path = directory.path().join("wal");
    let options = options(16 << 20);
    let storage = Storage::create(&path, METADATA, options.clone()).unwrap();
    let model = save_past_the_replay_bound(&storage, hs(1, 16));
    storage.close().unwrap();
    // 1,136 uncommitted entries of 64 KiB: over 64 MiB.
    common::raft::assert_replay_matches_model(&path, options, &model, &marker(0, 0), METADATA, "uncommitted tail past the bound");
}

/// Past the bound, then a restart after an installed snapshot: what is read back from
/// the opened log starts where the restarted log does.
#[test]
fn open_replaying_past_its_bound_follows_a_restart() {
    let directory = tempfile::tempdir().unwrap();
    let path = directory.path().join("wal");
    let options = options(16 << 20);
    let storage = Storage::create(&path, METADATA, options.clone()).unwrap();
    save_past_the_replay_bound(&storage, hs(1, 0));
    storage.save_snapshot(&marker(5000, 2)).unwrap();
    storage.save(&hs(2, 5001), &entries(5001..=5003, 2, 100)).unwrap();
    storage.close().unwrap();
    let opened = Storage::open(&path, &marker(0, 0), options.clone()).unwrap();
    let expected = opened.read_all().unwrap().2;
    assert_eq!(shape(&expected), terms(5001..=5003, 2));
    drop(opened);
    let mut replayed = Vec::new();
    Storage::open_replaying(&path, &marker(0, 0), options, |entry| replayed.push(entry)).unwrap();
    assert!(replayed == expected, "replayed {:?}", shape(&replayed));
}
