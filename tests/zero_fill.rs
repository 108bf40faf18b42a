//! Zero-filling ahead of the appends: a new segment is handed over with only its head
//! zero-filled, and the preparer zero-fills the rest while appends go on in it (see
//! `mapping.rs`, point 5). Zero-fill calls are counted through the fault-injection
//! seam, which counts every call per directory.

mod common;

use std::path::Path;

use segstore::fault::{self, FaultPoint};
use segstore::{Log, Position, SyncMode};

use common::{options, reopen_and_read, wait_for_prepared_segment, KIND};

/// Zero-fill calls made so far on the files of `directory`: a write and a flush each
/// time a range is zero-filled.
fn zero_fills(directory: &Path) -> u64 {
    fault::calls(directory, FaultPoint::ZeroFill) / 2
}

/// A temporary directory whose calls are counted, and forgotten at the end of the test,
/// even a failed one.
struct WatchedDirectory(tempfile::TempDir);

impl WatchedDirectory {
    fn new() -> Self {
        let directory = tempfile::tempdir().unwrap();
        fault::watch(directory.path());
        WatchedDirectory(directory)
    }

    fn path(&self) -> &Path {
        self.0.path()
    }
}

impl Drop for WatchedDirectory {
    fn drop(&mut self) {
        fault::reset(self.0.path());
    }
}

/// Threads appending records of up to 2 MiB run far past the 1 MiB head a new log's
/// segment starts with, and into the next segment: writers that reach the end of the
/// zero-filled part wait for the preparer, none of their bytes is ever overwritten by
/// its zeros, and everything reads back after a reopen.
#[test]
fn appends_past_the_zero_filled_head_read_back_after_reopen() {
    const THREADS: usize = 4;
    const RECORDS_PER_THREAD: usize = 1500;
    let directory = WatchedDirectory::new();
    let directory = directory.path();
    let options = options(16 << 20, SyncMode::Msync);
    let log = Log::open(directory, options.clone()).unwrap();
    let fills_at_open = zero_fills(directory);
    let appended: Vec<(u64, Vec<u8>)> = std::thread::scope(|scope| {
        let writers: Vec<_> = (0..THREADS)
            .map(|thread| {
                let log = &log;
                scope.spawn(move || {
                    let mut appended = Vec::new();
                    for index in 0..RECORDS_PER_THREAD {
                        // Now and then a record larger than the head of a fresh segment.
                        let length = if index % 500 == 499 { 2 << 20 } else { 3000 + index % 97 };
                        let payload = vec![(thread * 64 + index % 61) as u8 + 1; length];
                        let at = log.append(KIND, &payload).unwrap();
                        if index % 8 == 0 {
                            log.wait_durable(at.end).unwrap();
                        }
                        appended.push((at.position.0, payload));
                    }
                    appended
                })
            })
            .collect();
        writers.into_iter().flat_map(|writer| writer.join().unwrap()).collect()
    });
    assert!(log.segment_count() >= 2, "the appends were meant to reach a second segment");
    assert!(
        zero_fills(directory) > fills_at_open + 4,
        "the appends were meant to make the preparer zero-fill ahead of them ({} fills, {fills_at_open} at open)",
        zero_fills(directory)
    );
    log.close().unwrap();
    let mut appended = appended;
    appended.sort();
    assert_eq!(reopen_and_read(directory, options), appended);
}

/// A record three times as large as the zero-filled head of a fresh log's segment,
/// appended first: its writer must wait for the preparer to zero-fill that far, or the
/// zeros would land on its bytes.
#[test]
fn a_record_past_the_zero_filled_head_waits_for_the_zeros_and_reads_back() {
    let directory = tempfile::tempdir().unwrap();
    let directory = directory.path();
    let log = Log::open(directory, options(16 << 20, SyncMode::Msync)).unwrap();
    for round in 0..3u8 {
        let payload: Vec<u8> = (0..3 << 20).map(|index: u32| (index % 251) as u8 + round + 1).collect();
        let at = log.append_durable(KIND, &payload).unwrap();
        assert!(log.read(at.position).unwrap().payload == payload, "round {round}: the record came back damaged");
        // The next round starts a segment with a fresh head.
        log.cut().unwrap();
    }
    log.close().unwrap();
}

/// Bytes this thread has dirtied in the page cache: a store through a mapping is
/// charged the whole folio it dirties.
fn thread_dirtied_bytes() -> u64 {
    let io = std::fs::read_to_string("/proc/thread-self/io").unwrap();
    io.lines().find_map(|line| line.strip_prefix("write_bytes: ")).unwrap().trim().parse().unwrap()
}

/// Durable 256 B appends dirty about a page each, in a created log and in a reopened
/// one (cold, as after a restart): recovery reads the segment appends go to whole, the
/// pages readahead caches for that come in large folios, which a store dirties whole
/// and msync writes back whole; opening drops them before zero-filling past the log end.
#[test]
fn appends_after_opening_dirty_pages_not_large_folios() {
    const APPENDS: u64 = 200;
    let directory = tempfile::tempdir().unwrap();
    let directory = directory.path();
    let options = options(64 << 20, SyncMode::Msync);
    for open in ["created", "reopened"] {
        let log = Log::open(directory, options.clone()).unwrap();
        log.wait_for_preparation();
        // Past the zero-filled head a new segment starts with, and past what opening
        // zero-fills, deep into what only recovery's reads had cached (readahead makes
        // its folios larger the further it goes).
        let target = log.published_position().0.max(30 << 20) + (2 << 20);
        let mut end = log.published_position();
        while end.0 < target {
            end = log.append(KIND, &[8u8; 4096]).unwrap().end;
        }
        log.wait_durable(end).unwrap();
        let before = thread_dirtied_bytes();
        for _ in 0..APPENDS {
            log.append_durable(KIND, &[9u8; 256]).unwrap();
        }
        let per_append = (thread_dirtied_bytes() - before) / APPENDS;
        assert!(per_append <= 16 << 10, "{open} log: {per_append} bytes dirtied per 256 B append");
        log.close().unwrap();
        // The reopen starts cold, as after a restart: nothing of the log cached.
        for entry in std::fs::read_dir(directory).unwrap() {
            let file = std::fs::File::open(entry.unwrap().path()).unwrap();
            rustix::fs::fadvise(&file, 0, None, rustix::fs::Advice::DontNeed).unwrap();
        }
    }
}

/// Cutting 64 MiB segments every ~100 KB zero-fills about what the log used, not whole
/// segments: the first segment the preparer makes is zero-filled whole (nothing was
/// sealed yet), each later one 1.5 times as far as the log used the last one sealed
/// (here: the 1 MiB minimum, one fill), instead of 16 fills of 4 MiB each.
#[test]
fn frequent_cuts_zero_fill_about_what_the_log_uses() {
    const CUTS: u64 = 6;
    const WHOLE_SEGMENT_FILLS: u64 = 16;
    // Opening a new log zero-fills a 1 MiB head of its first segment: one fill. Counted
    // from the watch's start, not from after `open`: the preparer starts within `open`,
    // and a count read after it may already hold some of the preparer's fills.
    const FILLS_AT_OPEN: u64 = 1;
    let directory = WatchedDirectory::new();
    let directory = directory.path();
    let log = Log::open(directory, options(64 << 20, SyncMode::Msync)).unwrap();
    for _ in 0..CUTS {
        for _ in 0..100 {
            log.append_durable(KIND, &[7u8; 1000]).unwrap();
        }
        log.cut().unwrap();
    }
    wait_for_prepared_segment(&log);
    let fills = zero_fills(directory) - FILLS_AT_OPEN;
    assert_eq!(
        fills,
        WHOLE_SEGMENT_FILLS + CUTS,
        "zero-fills for {} prepared segments (whole segments would take {})",
        CUTS + 1,
        (CUTS + 1) * WHOLE_SEGMENT_FILLS
    );
}

/// `wait_for_preparation` zero-fills the current segment to its end: the appends after
/// it, up to that end, make the preparer write no zeros.
#[test]
fn after_waiting_for_preparation_appends_need_no_zero_filling() {
    let directory = WatchedDirectory::new();
    let directory = directory.path();
    let log = Log::open(directory, options(16 << 20, SyncMode::Msync)).unwrap();
    log.wait_for_preparation();
    let fills = zero_fills(directory);
    let payload = vec![3u8; 64 << 10];
    while log.published_position().0 + (128 << 10) < 16 << 20 {
        log.append_durable(KIND, &payload).unwrap();
    }
    assert_eq!(log.segment_count(), 1);
    assert_eq!(zero_fills(directory), fills, "appends into a segment zero-filled to its end zero-filled more of it");
    assert!(log.read(Position(64)).is_ok());
}
