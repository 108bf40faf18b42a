//! A sync drops the pages it covers from the process's page tables first (see
//! `SegmentMap::unmap_pages`), and no byte changes for it: not for the writer, not for
//! a reader holding a zero-copy view of the record.

use std::io::{Read, Seek, SeekFrom};

use segstore::{Log, Options, SyncMode};

const KIND: segstore::RecordKind = segstore::RecordKind(16);
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
