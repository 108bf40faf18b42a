//! What the log does with its mappings' page tables: a sync drops the pages it covers
//! first (see `SegmentMap::unmap_pages`), and no byte changes for it, not for the writer,
//! not for a reader holding a zero-copy view of the record; with msync, the preparer
//! keeps a bounded lead of pages past the appends faulted in.

mod common;

use std::io::{Read, Seek, SeekFrom};
use std::time::{Duration, Instant};

use common::{faults_appending_pages, KIND};
use segstore::{Log, Options, Position, SyncMode};
const PAGE_BYTES: usize = 4096;

/// Whether the page holding `address` is mapped in this process's page tables
/// (`/proc/self/pagemap`: one little-endian word per page, bit 63 "present").
fn page_is_mapped(address: usize) -> bool {
    let mut pagemap = std::fs::File::open("/proc/self/pagemap").unwrap();
    pagemap.seek(SeekFrom::Start((address / PAGE_BYTES * 8) as u64)).unwrap();
    let mut word = [0u8; 8];
    pagemap.read_exact(&mut word).unwrap();
    u64::from_le_bytes(word) >> 63 == 1
}

/// The addresses of the pages lying wholly inside `bytes`.
fn whole_pages(bytes: &[u8]) -> Vec<usize> {
    let start = (bytes.as_ptr() as usize).next_multiple_of(PAGE_BYTES);
    let end = bytes.as_ptr() as usize + bytes.len();
    (start..end.saturating_sub(PAGE_BYTES - 1)).step_by(PAGE_BYTES).collect()
}

#[test]
fn a_sync_unmaps_the_pages_it_covers_and_no_byte_changes() {
    for sync_mode in [SyncMode::Msync, SyncMode::Fdatasync] {
        let directory = tempfile::tempdir().unwrap();
        let log = Log::open(directory.path(), Options { segment_size_bytes: 1 << 20, sync_mode }).unwrap();
        // With msync the preparer faults pages in ahead of the appends: once it has done
        // so past the record below, it maps none of the record's pages again after the
        // sync dropped them.
        if sync_mode == SyncMode::Msync {
            let start = start_large_syncs(&log);
            wait_for_lead(&log, start);
        }
        let payload: Vec<u8> = (0..4 * PAGE_BYTES).map(|index| (index % 251) as u8 + 1).collect();
        let appended = log.append(KIND, &payload).unwrap();
        let (_, shared) = log.read_shared(appended.position).unwrap();
        let pages = whole_pages(&shared);
        assert!(pages.len() >= 3, "{sync_mode:?}: the record spans whole pages");
        // The writer's stores mapped them (without this the check below could not fail).
        assert!(pages.iter().all(|&page| page_is_mapped(page)), "{sync_mode:?}: written pages are mapped before the sync");

        log.wait_durable(appended.end).unwrap();

        assert!(pages.iter().all(|&page| !page_is_mapped(page)), "{sync_mode:?}: synced pages are no longer mapped");
        // Reading faults the same page-cache pages back in, with the same bytes.
        assert_eq!(&shared[..], &payload[..], "{sync_mode:?}: the zero-copy view reads the record");
        assert_eq!(log.read(appended.position).unwrap().payload, payload, "{sync_mode:?}: a copy reads the record");
        // The writer goes on in the page the record ended in.
        let next = log.append_durable(KIND, b"after the sync").unwrap();
        assert_eq!(log.read(next.position).unwrap().payload, b"after the sync");
        log.close().unwrap();

        let reopened = Log::open(directory.path(), Options { segment_size_bytes: 1 << 20, sync_mode }).unwrap();
        assert_eq!(reopened.read(appended.position).unwrap().payload, payload, "{sync_mode:?}: the record is on disk");
        assert_eq!(reopened.read(next.position).unwrap().payload, b"after the sync");
    }
}

/// Syncs 64 KiB, so that the appends after it ask for pages faulted in ahead, and
/// appends a small record after it; returns that record's position.
fn start_large_syncs(log: &Log) -> Position {
    log.append_durable(KIND, &vec![3u8; 64 << 10]).unwrap();
    log.append_durable(KIND, b"start").unwrap().position
}

/// Waits until the page 512 KiB past the record at `position` is mapped (the preparer
/// faulted the appends' lead in); returns the record's address.
fn wait_for_lead(log: &Log, position: Position) -> usize {
    let (_, shared) = log.read_shared(position).unwrap();
    let record = shared.as_ptr() as usize;
    let deadline = Instant::now() + Duration::from_secs(10);
    while !page_is_mapped(record + (512 << 10)) {
        assert!(Instant::now() < deadline, "the page 512 KiB past the appends was never faulted in");
        std::thread::sleep(Duration::from_millis(5));
    }
    record
}

/// With msync the preparer keeps the next MiB past the appends faulted in writable, so
/// appends into it take no fault per fresh page, and it faults in nothing further.
#[test]
fn with_msync_a_lead_of_pages_past_the_appends_is_faulted_in_and_no_more() {
    let directory = tempfile::tempdir().unwrap();
    let log = Log::open(directory.path(), Options { segment_size_bytes: 8 << 20, sync_mode: SyncMode::Msync }).unwrap();
    log.wait_for_preparation();
    let record = wait_for_lead(&log, start_large_syncs(&log));
    assert!(!page_is_mapped(record + (4 << 20)), "the page 4 MiB past the appends was faulted in: the lead is not bounded");

    let faults = faults_appending_pages(&log, 16);
    assert!(faults < 4, "{faults} faults appending 16 pages inside the lead");
    log.close().unwrap();
}

/// Saves that sync a page or two take a fault only every few saves: for them the
/// preparer faults nothing in ahead (its bursts of faulting delayed the saves beside
/// them more than it saved).
#[test]
fn with_msync_small_syncs_get_no_pages_faulted_in_ahead() {
    let directory = tempfile::tempdir().unwrap();
    let log = Log::open(directory.path(), Options { segment_size_bytes: 8 << 20, sync_mode: SyncMode::Msync }).unwrap();
    log.wait_for_preparation();
    let first = log.append_durable(KIND, &[1u8; 256]).unwrap();
    for _ in 0..100 {
        log.append_durable(KIND, &[2u8; 256]).unwrap();
    }
    std::thread::sleep(Duration::from_millis(100));
    let (_, shared) = log.read_shared(first.position).unwrap();
    assert!(!page_is_mapped(shared.as_ptr() as usize + (512 << 10)), "pages 512 KiB past small saves were faulted in");
    log.close().unwrap();
}
