//! The log's API end to end: append, read, iterate, cut, reopen, release, lock.

mod common;

use common::faults_appending_pages;
use segstore::{Error, Log, Options, Position, RecordKind, SyncMode};

const KIND: RecordKind = RecordKind(16);

fn small_options(sync_mode: SyncMode) -> Options {
    Options { segment_size_bytes: 64 * 1024, sync_mode }
}

#[test]
fn appended_records_read_back_and_survive_reopen() {
    let directory = tempfile::tempdir().unwrap();
    let mut appended = Vec::new();
    {
        let log = Log::open(directory.path(), small_options(SyncMode::Msync)).unwrap();
        for index in 0..100u32 {
            let payload = vec![index as u8; index as usize * 13];
            appended.push((log.append_durable(KIND, &payload).unwrap(), payload));
        }
        for (at, payload) in &appended {
            assert_eq!(&log.read(at.position).unwrap().payload, payload);
        }
        log.close().unwrap();
    }
    let log = Log::open(directory.path(), small_options(SyncMode::Msync)).unwrap();
    assert_eq!(log.recovery_report().data_records, 100);
    let read: Vec<_> = log.iter_from(Position(0)).map(|record| record.unwrap()).collect();
    assert_eq!(read.len(), 100);
    for ((at, payload), record) in appended.iter().zip(&read) {
        assert_eq!(record.position, at.position);
        assert_eq!(&record.payload, payload);
    }
    assert!(log.segment_count() > 1, "100 records of up to 1.3 KiB fill more than one 64 KiB segment");
}

#[test]
fn cut_starts_a_new_segment_and_release_deletes_old_ones() {
    let directory = tempfile::tempdir().unwrap();
    let log = Log::open(directory.path(), small_options(SyncMode::Fdatasync)).unwrap();
    let first = log.append_durable(KIND, b"one").unwrap();
    log.cut().unwrap();
    let second = log.append_durable(KIND, b"two").unwrap();
    assert_eq!(log.segment_count(), 2);
    assert_eq!(second.position.0, 64 * 1024 + 64, "the record after a cut is the first of the next segment");
    assert_eq!(log.release_to(second.position).unwrap(), 1);
    assert_eq!(log.segment_count(), 1);
    assert!(log.read(first.position).is_err());
    assert_eq!(log.read(second.position).unwrap().payload, b"two");
    drop(log);
    let log = Log::open(directory.path(), small_options(SyncMode::Fdatasync)).unwrap();
    let read: Vec<_> = log.iter_from(Position(0)).map(|record| record.unwrap().payload).collect();
    assert_eq!(read, vec![b"two".to_vec()]);
}

#[test]
fn a_second_open_of_the_same_directory_is_refused() {
    let directory = tempfile::tempdir().unwrap();
    let _log = Log::open(directory.path(), small_options(SyncMode::None)).unwrap();
    match Log::open(directory.path(), small_options(SyncMode::None)) {
        Err(Error::AlreadyInUse { path }) => assert_eq!(path, directory.path()),
        other => panic!("expected AlreadyInUse, got {other:?}"),
    }
    assert!(matches!(Log::open_read_only(directory.path()), Err(Error::AlreadyInUse { .. })));
}

#[test]
fn records_too_large_for_a_segment_are_rejected_and_the_log_goes_on() {
    let directory = tempfile::tempdir().unwrap();
    let log = Log::open(directory.path(), small_options(SyncMode::None)).unwrap();
    let limit = log.max_payload_bytes();
    match log.append(KIND, &vec![0; limit as usize + 1]) {
        Err(Error::RecordTooLarge { payload_bytes, limit_bytes }) => assert_eq!((payload_bytes, limit_bytes), (limit + 1, limit)),
        other => panic!("expected RecordTooLarge, got {other:?}"),
    }
    let largest = log.append_durable(KIND, &vec![7; limit as usize]).unwrap();
    assert_eq!(log.read(largest.position).unwrap().payload.len() as u64, limit);
}

#[test]
fn a_panicking_encoder_leaves_a_skip_record_and_the_log_goes_on() {
    let directory = tempfile::tempdir().unwrap();
    let log = Log::open(directory.path(), small_options(SyncMode::Msync)).unwrap();
    let before = log.append(KIND, b"before").unwrap();
    let panicked = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        log.append_with(KIND, 100, |bytes| {
            bytes[0] = 1;
            panic!("encoder failed");
        })
    }));
    assert!(panicked.is_err());
    let after = log.append_durable(KIND, b"after").unwrap();
    let read: Vec<_> = log.iter_from(before.position).map(|record| record.unwrap().payload).collect();
    assert_eq!(read, vec![b"before".to_vec(), b"after".to_vec()]);
    assert!(log.durable_position() >= after.end);
}

#[test]
fn read_only_open_sees_the_log_and_changes_nothing() {
    let directory = tempfile::tempdir().unwrap();
    {
        let log = Log::open(directory.path(), small_options(SyncMode::Msync)).unwrap();
        log.append_durable(KIND, b"kept").unwrap();
    }
    let listing = |path: &std::path::Path| {
        let mut names: Vec<_> = std::fs::read_dir(path).unwrap().map(|entry| entry.unwrap().file_name()).collect();
        names.sort();
        names
    };
    let before = listing(directory.path());
    let log = Log::open_read_only(directory.path()).unwrap();
    let read: Vec<_> = log.iter_from(Position(0)).map(|record| record.unwrap().payload).collect();
    assert_eq!(read, vec![b"kept".to_vec()]);
    assert!(matches!(log.append(KIND, b"no"), Err(Error::ReadOnly)));
    assert_eq!(listing(directory.path()), before);
}

#[test]
fn reserved_kinds_are_refused() {
    let directory = tempfile::tempdir().unwrap();
    let log = Log::open(directory.path(), small_options(SyncMode::None)).unwrap();
    assert!(matches!(log.append(RecordKind::PADDING, b"x"), Err(Error::InvalidArgument { .. })));
}

#[test]
fn a_segment_is_not_deleted_while_a_shared_read_holds_its_bytes() {
    let directory = tempfile::tempdir().unwrap();
    let log = Log::open(directory.path(), small_options(SyncMode::Msync)).unwrap();
    let first = log.append_durable(KIND, b"held").unwrap();
    log.cut().unwrap();
    let second = log.append_durable(KIND, b"later").unwrap();
    let (_, held) = log.read_shared(first.position).unwrap();
    assert_eq!(log.release_to(second.position).unwrap(), 0, "the first segment is still read");
    assert_eq!(log.segment_count(), 2);
    assert_eq!(&held[..], b"held");
    drop(held);
    assert_eq!(log.release_to(second.position).unwrap(), 1, "free now");
    assert_eq!(log.segment_count(), 1);
}

/// Minor page faults taken by the calling thread so far (`/proc/thread-self/stat`).
/// Without syncs the preparer faults the segments in ahead of the appenders (the open
/// one, then each one it prepares), so appends fault no page; with fdatasync it never
/// does (the sync would write back every page dirtied ahead). With msync it keeps a
/// bounded lead faulted in: `tests/page_tables.rs`.
#[test]
fn the_preparer_faults_whole_segments_in_only_when_nothing_syncs() {
    const PAGES: usize = 1024;
    let options = |sync_mode| Options { segment_size_bytes: 8 << 20, sync_mode };
    let directory = tempfile::tempdir().unwrap();
    let log = Log::open(directory.path().join("none"), options(SyncMode::None)).unwrap();
    log.wait_for_preparation();
    let faults = faults_appending_pages(&log, PAGES);
    assert!(faults < 64, "{faults} faults appending {PAGES} pages to the segment opened");
    log.cut().unwrap();
    log.wait_for_preparation();
    let faults = faults_appending_pages(&log, PAGES);
    assert!(faults < 64, "{faults} faults appending {PAGES} pages to a prepared segment");
    drop(log);

    let log = Log::open(directory.path().join("fdatasync"), options(SyncMode::Fdatasync)).unwrap();
    log.wait_for_preparation();
    let faults = faults_appending_pages(&log, PAGES);
    assert!(faults >= PAGES as u64 / 2, "only {faults} faults appending {PAGES} pages: were they faulted in ahead?");
}
