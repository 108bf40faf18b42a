//! Fail-stop (ARCHITECTURE.md, failure model): after one failed sync the kernel may report the next
//! one as successful while the disk holds old bytes, so the log must stop for good: no
//! acknowledgment after the failure, every waiter failed, no sync retried, appends
//! refused. A reopen then recovers every record acknowledged before the failure.
//!
//! Failures are injected through `segstore::fault`, which fails one call of a kind on
//! the files of one directory; every test uses its own directory, so tests running at
//! once do not see each other's faults.

mod common;

use std::path::{Path, PathBuf};
use std::sync::Barrier;

use segstore::fault::{self, FaultPoint};
use segstore::{Appended, Error, Log, Options, Result, SyncMode};

use common::{files_ending_in, options, reopen_and_read, wait_for_prepared_segment, wait_until, KIND};

const SEGMENT_SIZE_BYTES: u64 = 64 << 10;
const THREADS: usize = 4;
const EIO: i32 = 5;

/// The operation an injected failure of `point` is reported with.
fn operation_of(point: FaultPoint) -> &'static str {
    match point {
        FaultPoint::Fsync => "fsync",
        FaultPoint::Fdatasync => "fdatasync",
        FaultPoint::Msync => "msync",
        FaultPoint::Fallocate => "fallocate",
        FaultPoint::Rename => "rename",
        FaultPoint::DirectoryFsync => "fsync directory",
        FaultPoint::HeaderWrite => "write segment header",
        FaultPoint::ZeroFill => "zero-fill",
    }
}

/// Watches a directory's calls for the life of a test, and forgets them (and any fault
/// still armed) at its end, even when the test fails.
struct Faults {
    directory: PathBuf,
}

impl Faults {
    fn watch(directory: &Path) -> Faults {
        fault::watch(directory);
        Faults { directory: directory.to_path_buf() }
    }

    fn calls(&self, point: FaultPoint) -> u64 {
        fault::calls(&self.directory, point)
    }

    /// Makes the next call of `point` fail with EIO.
    fn fail_next(&self, point: FaultPoint) {
        fault::arm(&self.directory, point, 0);
    }

    /// Makes the next call of `point` by the preparer of a log about to be opened fail.
    fn fail_next_preparation(&self, point: FaultPoint) {
        fault::arm(&self.directory, point, calls_by_open(point));
    }
}

impl Drop for Faults {
    fn drop(&mut self) {
        fault::reset(&self.directory);
    }
}

/// Calls of `point` that opening a cleanly closed log makes before it starts the
/// preparer: it syncs the directory, and zero-fills past the log end (one write, one
/// flush).
fn calls_by_open(point: FaultPoint) -> u64 {
    match point {
        FaultPoint::DirectoryFsync => 1,
        FaultPoint::ZeroFill => 2,
        _ => 0,
    }
}

/// Checks that `error` is the injected failure of `point` on a file of `directory`.
fn assert_injected(error: &Error, point: FaultPoint, directory: &Path, context: &str) {
    match error.root_cause() {
        Error::Io { operation, path, source } => {
            assert_eq!(*operation, operation_of(point), "{context}: the error names another operation ({error})");
            assert!(path.starts_with(directory), "{context}: the error names {}, outside the log", path.display());
            assert_eq!(source.raw_os_error(), Some(EIO), "{context}: the error is not the injected EIO ({error})");
        }
        other => panic!("{context}: the root cause should be the injected {point:?} failure, not {other:?}"),
    }
}

/// Checks that `result` is the log refusing because of the injected failure of `point`.
fn assert_poisoned_by<T: std::fmt::Debug>(result: Result<T>, point: FaultPoint, directory: &Path, context: &str) {
    match result {
        Err(error @ Error::Poisoned { .. }) => assert_injected(&error, point, directory, context),
        other => panic!("{context}: expected the log to be poisoned by the {point:?} failure, got {other:?}"),
    }
}

/// Every call that could acknowledge or add something fails with the poison.
fn assert_everything_refused(log: &Log, acknowledged_end: segstore::Position, point: FaultPoint, directory: &Path) {
    assert_poisoned_by(log.append(KIND, b"after"), point, directory, "append after the failure");
    assert_poisoned_by(log.append_durable(KIND, b"after"), point, directory, "append_durable after the failure");
    // Even a position that was durable before: the log acknowledges nothing any more.
    assert_poisoned_by(log.wait_durable(acknowledged_end), point, directory, "wait_durable after the failure");
    assert_poisoned_by(log.cut(), point, directory, "cut after the failure");
}

/// What a scenario appended, and which of it was acknowledged.
#[derive(Default)]
struct Ledger {
    appended: Vec<(Appended, Vec<u8>)>,
    acknowledged: Vec<(Appended, Vec<u8>)>,
}

impl Ledger {
    fn append_durable(&mut self, log: &Log, bytes: Vec<u8>) {
        let at = log.append_durable(KIND, &bytes).unwrap();
        self.appended.push((at, bytes.clone()));
        self.acknowledged.push((at, bytes));
    }

    /// Reopens the log (with every fault forgotten) and checks that every acknowledged
    /// record is back and that nothing is there that was not appended.
    fn check_reopen(&self, directory: &Path, options: Options, context: &str) {
        let recovered = reopen_and_read(directory, options);
        for (at, bytes) in &self.acknowledged {
            assert!(
                recovered.contains(&(at.position.0, bytes.clone())),
                "{context}: the acknowledged record at {} was lost",
                at.position.0
            );
        }
        for (position, bytes) in &recovered {
            assert!(
                self.appended.iter().any(|(at, appended)| at.position.0 == *position && appended == bytes),
                "{context}: a record was recovered at {position} that was never appended there"
            );
        }
    }
}

/// How the failing sync comes about.
#[derive(Clone, Copy, Debug)]
enum Trigger {
    /// Several threads wait for their records at once; one of them syncs.
    ConcurrentWaiters,
    /// Appends fill the segment; the writer that seals it syncs it before the next
    /// segment may take a record.
    Rotation,
}

fn sync_failure(sync_mode: SyncMode, point: FaultPoint, trigger: Trigger) {
    let context = format!("{point:?} failing in {sync_mode:?} mode, on {trigger:?}");
    let directory = tempfile::tempdir().unwrap();
    let directory = directory.path();
    let options = options(SEGMENT_SIZE_BYTES, sync_mode);
    let faults = Faults::watch(directory);
    let log = Log::open(directory, options.clone()).unwrap();
    let mut ledger = Ledger::default();
    for index in 0..10u8 {
        ledger.append_durable(&log, vec![index; 700]);
    }
    let acknowledged_end = ledger.acknowledged.last().unwrap().0.end;
    let calls_before = faults.calls(point);
    faults.fail_next(point);
    match trigger {
        Trigger::ConcurrentWaiters => {
            // Every thread appends before any waits, so that all of them wait for
            // records that only the failing sync could have made durable.
            let barrier = Barrier::new(THREADS);
            let outcomes: Vec<(Appended, Vec<u8>, Result<()>)> = std::thread::scope(|scope| {
                let waiters: Vec<_> = (0..THREADS)
                    .map(|thread| {
                        let (log, barrier) = (&log, &barrier);
                        scope.spawn(move || {
                            let bytes = vec![0x40 + thread as u8; 1000];
                            let at = log.append(KIND, &bytes).unwrap();
                            barrier.wait();
                            let waited = log.wait_durable(at.end);
                            (at, bytes, waited)
                        })
                    })
                    .collect();
                waiters.into_iter().map(|waiter| waiter.join().unwrap()).collect()
            });
            for (thread, (at, bytes, waited)) in outcomes.into_iter().enumerate() {
                assert_poisoned_by(waited, point, directory, &format!("{context}: waiter {thread}"));
                ledger.appended.push((at, bytes));
            }
        }
        Trigger::Rotation => {
            let mut failed = None;
            for index in 0..SEGMENT_SIZE_BYTES / 2000 + 2 {
                let bytes = vec![index as u8; 2000];
                match log.append(KIND, &bytes) {
                    Ok(at) => ledger.appended.push((at, bytes)),
                    Err(error) => {
                        failed = Some(error);
                        break;
                    }
                }
            }
            let error = failed.unwrap_or_else(|| panic!("{context}: filling a segment never failed"));
            assert_poisoned_by::<()>(Err(error), point, directory, &format!("{context}: the append that needed a rotation"));
        }
    }
    assert_eq!(faults.calls(point), calls_before + 1, "{context}: exactly one sync was tried, the failing one");
    assert_everything_refused(&log, acknowledged_end, point, directory);
    // What was acknowledged can still be read, to help whoever looks into the failure.
    let (first, first_bytes) = &ledger.acknowledged[0];
    assert_eq!(&log.read(first.position).unwrap().payload, first_bytes);
    assert_eq!(faults.calls(point), calls_before + 1, "{context}: the failed sync is never retried");
    drop(log);
    drop(faults);
    ledger.check_reopen(directory, options, &context);
}

#[test]
fn a_failed_msync_stops_the_log() {
    for trigger in [Trigger::ConcurrentWaiters, Trigger::Rotation] {
        sync_failure(SyncMode::Msync, FaultPoint::Msync, trigger);
    }
}

#[test]
fn a_failed_fdatasync_stops_the_log() {
    for trigger in [Trigger::ConcurrentWaiters, Trigger::Rotation] {
        sync_failure(SyncMode::Fdatasync, FaultPoint::Fdatasync, trigger);
    }
}

/// The calls the background preparer makes for the next segment.
const PREPARER_POINTS: [FaultPoint; 6] = [
    FaultPoint::Fallocate,
    FaultPoint::ZeroFill,
    FaultPoint::HeaderWrite,
    FaultPoint::Fsync,
    FaultPoint::Rename,
    FaultPoint::DirectoryFsync,
];

/// The preparer fails to prepare the next segment. That is not the log's failure until
/// a rotation needs that segment: appends that fit in the current one go on.
fn preparer_failure(point: FaultPoint) {
    let context = format!("{point:?} failing in the preparer");
    let directory = tempfile::tempdir().unwrap();
    let directory = directory.path();
    let options = options(SEGMENT_SIZE_BYTES, SyncMode::Msync);
    let mut ledger = Ledger::default();
    {
        let log = Log::open(directory, options.clone()).unwrap();
        for index in 0..5u8 {
            ledger.append_durable(&log, vec![index; 500]);
        }
        // Removes the prepared segment: the reopen below prepares the next one again.
        log.close().unwrap();
    }
    let faults = Faults::watch(directory);
    faults.fail_next_preparation(point);
    // Opening a cleanly closed log creates no segment itself; its preparer does, at once.
    let log = Log::open(directory, options.clone()).unwrap();
    wait_until("the preparer has failed", || faults.calls(point) > calls_by_open(point));

    for index in 0..5u8 {
        ledger.append_durable(&log, vec![0x10 + index; 500]);
    }

    // Writers fill the segment: the rotation finds the failed preparation.
    let outcomes: Vec<(Ledger, Error)> = std::thread::scope(|scope| {
        let writers: Vec<_> = (0..THREADS)
            .map(|thread| {
                let log = &log;
                scope.spawn(move || {
                    let mut ledger = Ledger::default();
                    for index in 0..SEGMENT_SIZE_BYTES / 2000 + 2 {
                        let bytes = vec![(thread * 64) as u8 + index as u8; 2000];
                        let at = match log.append(KIND, &bytes) {
                            Ok(at) => at,
                            Err(error) => return (ledger, error),
                        };
                        ledger.appended.push((at, bytes.clone()));
                        match log.wait_durable(at.end) {
                            Ok(()) => ledger.acknowledged.push((at, bytes)),
                            Err(error) => return (ledger, error),
                        }
                    }
                    panic!("writer {thread} filled more than a segment without an error");
                })
            })
            .collect();
        writers.into_iter().map(|writer| writer.join().unwrap_or_else(|panic| std::panic::resume_unwind(panic))).collect()
    });
    for (thread, (writer_ledger, error)) in outcomes.into_iter().enumerate() {
        assert_poisoned_by::<()>(Err(error), point, directory, &format!("{context}: writer {thread}"));
        ledger.appended.extend(writer_ledger.appended);
        ledger.acknowledged.extend(writer_ledger.acknowledged);
    }
    let acknowledged_end = ledger.acknowledged.last().unwrap().0.end;
    assert_everything_refused(&log, acknowledged_end, point, directory);
    assert_eq!(faults.calls(point), calls_by_open(point) + 1, "{context}: the failed preparation is never retried");
    assert!(files_ending_in(directory, ".tmp").is_empty(), "{context}: the failed preparation left its temporary file");
    drop(log);
    drop(faults);
    ledger.check_reopen(directory, options, &context);
}

#[test]
fn a_failed_segment_preparation_stops_the_log_at_the_next_rotation() {
    for point in PREPARER_POINTS {
        preparer_failure(point);
    }
}

/// The preparer fails to zero-fill the current segment ahead of the appends. Appends
/// below what was zero-filled go on; the first one past it fails, and the log stops
/// with the zero-fill's error.
#[test]
fn a_failed_zero_fill_ahead_of_the_appends_stops_the_log_where_they_need_it() {
    const SEGMENT_BYTES: u64 = 16 << 20;
    let point = FaultPoint::ZeroFill;
    let context = "zero-filling ahead of the appends failing";
    let directory = tempfile::tempdir().unwrap();
    let directory = directory.path();
    let options = options(SEGMENT_BYTES, SyncMode::Msync);
    let faults = Faults::watch(directory);
    let log = Log::open(directory, options.clone()).unwrap();
    // The new log's segment is zero-filled 1 MiB deep; the preparer then zero-fills
    // the next segment whole (nothing was sealed yet), 4 MiB at a time.
    let calls_before_appends = 2 * (1 + SEGMENT_BYTES / (4 << 20));
    wait_until("the next segment is prepared", || faults.calls(point) == calls_before_appends);
    wait_for_prepared_segment(&log);
    faults.fail_next(point);
    let mut ledger = Ledger::default();
    let error = loop {
        let bytes = vec![ledger.appended.len() as u8; 3000];
        match log.append(KIND, &bytes) {
            Ok(at) => {
                ledger.appended.push((at, bytes.clone()));
                log.wait_durable(at.end).unwrap();
                ledger.acknowledged.push((at, bytes));
            }
            Err(error) => break error,
        }
        assert!(ledger.appended.len() < 1000, "{context}: appends went on past the zero-filled 1 MiB");
    };
    assert_poisoned_by::<()>(Err(error), point, directory, context);
    let acknowledged_end = ledger.acknowledged.last().unwrap().0.end;
    assert!(acknowledged_end.0 > 1 << 19, "{context}: appends stopped before they needed the zero-fill");
    assert!(acknowledged_end.0 <= 1 << 20, "{context}: appends went past the zero-filled 1 MiB");
    assert_everything_refused(&log, acknowledged_end, point, directory);
    assert_eq!(faults.calls(point), calls_before_appends + 1, "{context}: the failed zero-fill is never retried");
    drop(log);
    drop(faults);
    ledger.check_reopen(directory, options, context);
}

/// A segment's name is durable only once its directory is synced (ARCHITECTURE.md, failure model).
/// A crash between the preparer's rename and its directory sync (here: that sync
/// fails) leaves a segment whose name may vanish on power loss. If the crash also left
/// the segment before it sealed, the reopened log appends into that segment, so the
/// open must sync the directory before anything in it is acknowledged; otherwise a
/// power loss can take acknowledged records away with the name, silently (the log then
/// ends at the sealed segment).
#[test]
fn a_segment_found_at_open_has_a_durable_name_before_records_in_it_are_acknowledged() {
    let directory = tempfile::tempdir().unwrap();
    let directory = directory.path();
    let options = options(SEGMENT_SIZE_BYTES, SyncMode::Fdatasync);
    {
        let log = Log::open(directory, options.clone()).unwrap();
        log.append_durable(KIND, b"first").unwrap();
        log.close().unwrap();
    }
    let next_base_position = {
        let faults = Faults::watch(directory);
        faults.fail_next_preparation(FaultPoint::DirectoryFsync);
        let log = Log::open(directory, options.clone()).unwrap();
        wait_until("the preparer's directory sync has failed", || faults.calls(FaultPoint::DirectoryFsync) >= 2);
        let sealed_end = log.published_position().0 / SEGMENT_SIZE_BYTES * SEGMENT_SIZE_BYTES + SEGMENT_SIZE_BYTES;
        // The rotation seals the segment (and syncs it), then finds the failed preparation.
        assert!(log.cut().is_err());
        sealed_end
    };
    let segments = common::segment_files(directory);
    assert_eq!(segments.last().unwrap().base_position, next_base_position, "the renamed segment is there, its name not synced");

    let faults = Faults::watch(directory);
    // Keeps the new preparer from syncing the directory on its own (it fails first).
    faults.fail_next(FaultPoint::Fallocate);
    let log = Log::open(directory, options).unwrap();
    assert_eq!(
        log.recovery_report().append_position.0,
        next_base_position + segstore::segment::SEGMENT_HEADER_SIZE,
        "appends continue in the renamed segment"
    );
    log.append_durable(KIND, b"acknowledged in a segment whose name was never synced").unwrap();
    assert!(
        faults.calls(FaultPoint::DirectoryFsync) > 0,
        "a record was acknowledged in a segment whose directory entry no sync has covered"
    );
}

/// A failure of `close`'s final sync must be reported; so must the poison of a log
/// that failed earlier: `close` promises that everything published is durable.
#[test]
fn close_reports_a_poisoned_log() {
    let directory = tempfile::tempdir().unwrap();
    let directory = directory.path();
    let faults = Faults::watch(directory);
    let log = Log::open(directory, options(SEGMENT_SIZE_BYTES, SyncMode::Msync)).unwrap();
    log.append_durable(KIND, b"acknowledged").unwrap();
    faults.fail_next(FaultPoint::Msync);
    let at = log.append(KIND, b"never durable").unwrap();
    assert_poisoned_by(log.wait_durable(at.end), FaultPoint::Msync, directory, "the failing wait");
    assert_poisoned_by(log.close(), FaultPoint::Msync, directory, "close of the poisoned log");
}

#[test]
fn close_reports_a_failure_of_its_final_sync() {
    let directory = tempfile::tempdir().unwrap();
    let directory = directory.path();
    let faults = Faults::watch(directory);
    let log = Log::open(directory, options(SEGMENT_SIZE_BYTES, SyncMode::Fdatasync)).unwrap();
    log.append(KIND, b"published, not yet durable").unwrap();
    faults.fail_next(FaultPoint::Fdatasync);
    assert_poisoned_by(log.close(), FaultPoint::Fdatasync, directory, "close whose sync fails");
}

/// Opening an empty directory creates the first segment in the opening thread: a
/// failure there fails the open itself, leaves no temporary file, and a later open works.
#[test]
fn a_failure_while_creating_the_first_segment_fails_open() {
    for point in PREPARER_POINTS {
        let context = format!("{point:?} failing while creating the first segment");
        let directory = tempfile::tempdir().unwrap();
        let directory = directory.path();
        let options = options(SEGMENT_SIZE_BYTES, SyncMode::Fdatasync);
        let faults = Faults::watch(directory);
        faults.fail_next(point);
        match Log::open(directory, options.clone()) {
            Err(error @ Error::Io { .. }) => assert_injected(&error, point, directory, &context),
            other => panic!("{context}: open should fail with the injected error, got {other:?}"),
        }
        assert!(files_ending_in(directory, ".tmp").is_empty(), "{context}: a temporary file was left");
        drop(faults);
        let mut ledger = Ledger::default();
        {
            let log = Log::open(directory, options.clone()).unwrap_or_else(|error| panic!("{context}: a later open failed: {error}"));
            assert_eq!(log.iter_from(segstore::Position(0)).count(), 0);
            ledger.append_durable(&log, b"first".to_vec());
        }
        ledger.check_reopen(directory, options, &context);
    }
}

/// What makes an open write to the disk before appending: each case leaves a log whose
/// next open must make that call.
#[derive(Clone, Copy, Debug)]
enum RecoveryWork {
    /// Bytes past the valid records: zeroed, then the segment synced.
    ZeroTornTail,
    /// Every kept segment is synced, whatever recovery found.
    SyncKeptSegments,
    /// The log is opened with another segment size: the recovered segment is sealed.
    SealForNewSize,
}

#[test]
fn a_failure_while_recovering_fails_open_and_a_later_open_recovers() {
    let cases = [
        (RecoveryWork::ZeroTornTail, FaultPoint::ZeroFill),
        (RecoveryWork::SyncKeptSegments, FaultPoint::Fdatasync),
        (RecoveryWork::SealForNewSize, FaultPoint::HeaderWrite),
    ];
    for (work, point) in cases {
        let context = format!("{point:?} failing while recovering ({work:?})");
        let directory = tempfile::tempdir().unwrap();
        let directory = directory.path();
        let options = options(SEGMENT_SIZE_BYTES, SyncMode::Fdatasync);
        let mut ledger = Ledger::default();
        let end = {
            let log = Log::open(directory, options.clone()).unwrap();
            for index in 0..10u8 {
                ledger.append_durable(&log, vec![index; 900]);
            }
            log.published_position().0
        };
        let reopen_options = match work {
            RecoveryWork::ZeroTornTail => {
                // A torn record where the next one would have gone.
                use std::os::unix::fs::FileExt;
                let segment = common::segment_holding(directory, end);
                let file = std::fs::OpenOptions::new().write(true).open(&segment.path).unwrap();
                file.write_all_at(&[0xee; 100], segment.offset_of(end)).unwrap();
                options.clone()
            }
            RecoveryWork::SyncKeptSegments => options.clone(),
            RecoveryWork::SealForNewSize => common::options(2 * SEGMENT_SIZE_BYTES, SyncMode::Fdatasync),
        };
        let faults = Faults::watch(directory);
        faults.fail_next(point);
        match Log::open(directory, reopen_options.clone()) {
            Err(error @ Error::Io { .. }) => assert_injected(&error, point, directory, &context),
            other => panic!("{context}: open should fail with the injected error, got {other:?}"),
        }
        drop(faults);
        ledger.check_reopen(directory, reopen_options, &context);
    }
}

/// Every fault point is on the path of ordinary work, so each failure test above
/// exercises a call the log really makes.
#[test]
fn every_fault_point_is_passed_by_a_normal_workload() {
    let directory = tempfile::tempdir().unwrap();
    let directory = directory.path();
    let faults = Faults::watch(directory);
    for sync_mode in [SyncMode::Msync, SyncMode::Fdatasync] {
        let log = Log::open(directory, options(SEGMENT_SIZE_BYTES, sync_mode)).unwrap();
        // Appends are made durable with the mode's own call, and only with it.
        let (msync_before, fdatasync_before) = (faults.calls(FaultPoint::Msync), faults.calls(FaultPoint::Fdatasync));
        log.append_durable(KIND, b"synced").unwrap();
        let (msync_after, fdatasync_after) = (faults.calls(FaultPoint::Msync), faults.calls(FaultPoint::Fdatasync));
        match sync_mode {
            SyncMode::Msync => assert_eq!((msync_after - msync_before, fdatasync_after - fdatasync_before), (1, 0)),
            SyncMode::Fdatasync => assert_eq!((msync_after - msync_before, fdatasync_after - fdatasync_before), (0, 1)),
            SyncMode::None => unreachable!(),
        }
        for index in 0..100u8 {
            log.append_durable(KIND, &[index; 1500]).unwrap();
        }
        log.cut().unwrap();
        log.append_durable(KIND, b"after the cut").unwrap();
        log.close().unwrap();
    }
    drop(Log::open(directory, options(SEGMENT_SIZE_BYTES, SyncMode::Msync)).unwrap());
    for point in FaultPoint::ALL {
        assert!(faults.calls(point) > 0, "{point:?} was never passed");
    }
}
