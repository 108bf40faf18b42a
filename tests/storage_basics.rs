//! The Raft storage layer end to end: create, save, read back, reopen, snapshot, release.

use bytes::Bytes;
use segstore::raftpb::{Entry, HardState};
use segstore::{Error, Options, SnapshotMarker, Storage, SyncMode};

fn options() -> Options {
    Options { segment_size_bytes: 64 * 1024, sync_mode: SyncMode::Msync }
}

fn entry(index: u64, term: u64) -> Entry {
    Entry::new(term, index, Bytes::from(format!("entry {index} of term {term}").into_bytes()))
}

fn entries(range: std::ops::RangeInclusive<u64>, term: u64) -> Vec<Entry> {
    range.map(|index| entry(index, term)).collect()
}

#[test]
fn saves_read_back_before_and_after_reopen() {
    let directory = tempfile::tempdir().unwrap();
    let path = directory.path().join("wal");
    let state = HardState { term: 2, vote: 1, commit: 3 };
    {
        let storage = Storage::create(&path, b"cluster 7", options()).unwrap();
        storage.save(&HardState { term: 1, vote: 1, commit: 0 }, &entries(1..=5, 1)).unwrap();
        storage.save(&state, &entries(4..=6, 2)).unwrap();
        assert_eq!((storage.first_index(), storage.last_index()), (1, 6));
        assert_eq!(storage.term(3).unwrap(), 1);
        assert_eq!(storage.term(4).unwrap(), 2);
        assert_eq!(storage.entries(2, 5, None).unwrap(), vec![entry(2, 1), entry(3, 1), entry(4, 2)]);
        storage.close().unwrap();
    }
    let storage = Storage::open(&path, &SnapshotMarker::new(0, 0), options()).unwrap();
    let (metadata, hard_state, read) = storage.read_all().unwrap();
    assert_eq!(metadata, b"cluster 7");
    assert_eq!(hard_state, state);
    let mut expected = entries(1..=3, 1);
    expected.extend(entries(4..=6, 2));
    assert_eq!(read, expected);
}

#[test]
fn snapshots_release_segments_and_carry_the_hard_state_forward() {
    let directory = tempfile::tempdir().unwrap();
    let path = directory.path().join("wal");
    let storage = Storage::create(&path, b"meta", options()).unwrap();
    let big = |index: u64| Entry::new(1, index, Bytes::from(vec![index as u8; 3000]));
    storage.save(&HardState { term: 1, vote: 1, commit: 1 }, &[big(1)]).unwrap();
    for index in 2..=100 {
        storage.save(&HardState { term: 1, vote: 1, commit: index }, &[big(index)]).unwrap();
    }
    let segments_before = storage.log().segment_count();
    assert!(segments_before > 3);
    storage.save_snapshot(&SnapshotMarker::new(90, 1)).unwrap();
    let released = storage.release_to(90).unwrap();
    assert!(released > 0, "segments below entry 91 are released");
    assert_eq!(storage.first_index(), 91);
    assert!(matches!(storage.entries(50, 60, None), Err(Error::Compacted { .. })));
    assert_eq!(storage.entries(91, 92, None).unwrap(), vec![big(91)]);
    drop(storage);
    assert!(matches!(Storage::open(&path, &SnapshotMarker::new(0, 0), options()), Err(Error::SnapshotNotFound { index: 0, term: 0 })));
    assert!(matches!(Storage::open(&path, &SnapshotMarker::new(90, 2), options()), Err(Error::SnapshotMismatch { .. })));
    let storage = Storage::open(&path, &SnapshotMarker::new(90, 1), options()).unwrap();
    let (metadata, hard_state, read) = storage.read_all().unwrap();
    assert_eq!(metadata, b"meta");
    assert_eq!(hard_state, HardState { term: 1, vote: 1, commit: 100 });
    assert_eq!(read, (91..=100).map(big).collect::<Vec<_>>());
    assert!(matches!(Storage::valid_snapshot_markers(&path), Err(Error::AlreadyInUse { .. })), "a writer holds the log");
    drop(storage);
    assert_eq!(Storage::valid_snapshot_markers(&path).unwrap(), vec![SnapshotMarker::new(90, 1)], "{{0, 0}} was released");
}

#[test]
fn create_refuses_an_existing_log() {
    let directory = tempfile::tempdir().unwrap();
    let path = directory.path().join("wal");
    drop(Storage::create(&path, b"", options()).unwrap());
    assert!(matches!(Storage::create(&path, b"", options()), Err(Error::AlreadyExists { .. })));
}

#[test]
fn streaming_every_entry_skips_overwritten_ones_and_stops_when_asked() {
    let directory = tempfile::tempdir().unwrap();
    let path = directory.path().join("wal");
    let storage = Storage::create(&path, b"", options()).unwrap();
    storage.save(&HardState { term: 1, vote: 1, commit: 0 }, &entries(1..=50, 1)).unwrap();
    storage.save(&HardState { term: 2, vote: 1, commit: 0 }, &entries(20..=30, 2)).unwrap();
    let mut seen = Vec::new();
    storage
        .for_each_entry(1, |entry| {
            seen.push((entry.index, entry.term));
            true
        })
        .unwrap();
    let expected: Vec<(u64, u64)> = (1..=19).map(|index| (index, 1)).chain((20..=30).map(|index| (index, 2))).collect();
    assert_eq!(seen, expected, "entries 31..50 of term 1 were dropped by the overwrite at 20");
    let mut first_three = Vec::new();
    storage
        .for_each_entry(5, |entry| {
            first_three.push(entry.index);
            first_three.len() < 3
        })
        .unwrap();
    assert_eq!(first_three, vec![5, 6, 7]);
    storage.for_each_entry(31, |_| panic!("nothing after the last entry")).unwrap();
    assert!(matches!(storage.for_each_entry(32, |_| true), Err(Error::Unavailable { .. })));
}

#[test]
fn release_ignores_snapshots_the_hard_state_has_not_committed() {
    let directory = tempfile::tempdir().unwrap();
    let path = directory.path().join("wal");
    let storage = Storage::create(&path, b"", options()).unwrap();
    for index in 1..=10 {
        storage.save(&HardState { term: 1, vote: 1, commit: 5 }, &[entry(index, 1)]).unwrap();
        storage.cut().unwrap();
    }
    // A snapshot above the durable commit (etcd applies while the commit is still being
    // saved): boot only trusts committed markers, so releasing up to it would strand the log.
    storage.save_snapshot(&SnapshotMarker::new(8, 1)).unwrap();
    assert_eq!(storage.release_to(8).unwrap(), 0);
    storage.save(&HardState { term: 1, vote: 1, commit: 10 }, &[]).unwrap();
    assert!(storage.release_to(8).unwrap() > 0, "committed now");
    drop(storage);
    assert_eq!(Storage::valid_snapshot_markers(&path).unwrap(), vec![SnapshotMarker::new(8, 1)]);
}
