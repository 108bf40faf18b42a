//! The mapped segment's reader side: what `read_published` and `published_bytes` may
//! hand out while part of a sealed segment is still being zero-filled (soundness point 5
//! of `mapping.rs`, the readers' half).

use std::sync::Arc;

use segstore::mapping::{Cursor, Lead, RotationFailed, SegmentMap};
use segstore::model::WaitWord;
use segstore::RecordKind;

const SEGMENT_BYTES: u64 = 256;
const DATA_START: u64 = 64;
/// Where the zero-filled part of the first segment ends: past the first record and the
/// padding header that seals the segment, before the padding's body ends.
const WRITABLE_OFFSET: u64 = 160;
const KIND: RecordKind = RecordKind(16);

fn next_segment() -> Result<Arc<SegmentMap>, RotationFailed> {
    Ok(Arc::new(SegmentMap::anonymous(SEGMENT_BYTES, SEGMENT_BYTES, 2, DATA_START).unwrap()))
}

#[test]
fn readers_stop_at_the_writable_offset_of_a_segment_sealed_before_it_was_zero_filled() {
    let lead = Lead { min_bytes: 64, max_bytes: 64 };
    let first = Arc::new(SegmentMap::anonymous(SEGMENT_BYTES, 0, 1, DATA_START).unwrap().with_zero_filler(
        WRITABLE_OFFSET,
        lead,
        Arc::new(WaitWord::new()),
    ));
    let cursor = Cursor::new(Arc::clone(&first), DATA_START, DATA_START);

    // 64..112: a record; 112..256: the padding that seals the segment (its header, at
    // 112..144, lies below the writable offset, its body reaches past it).
    let mut claim = cursor.reserve(16, 0, &mut next_segment).unwrap();
    claim.fill(|payload| payload.fill(9));
    assert_eq!(claim.publish(KIND, 0), 112);
    let mut claim = cursor.reserve(100, 0, &mut next_segment).unwrap();
    assert_eq!(claim.position(), SEGMENT_BYTES + DATA_START, "the second record went to the next segment");
    claim.fill(|payload| payload.fill(7));
    claim.publish(KIND, 0);

    assert_eq!(first.advance_published(), SEGMENT_BYTES, "the padding publishes the segment to its end");
    assert_eq!(first.writable_offset(), WRITABLE_OFFSET);
    // Below the writable offset, published bytes are handed out ...
    let mut below = [0u8; 16];
    assert!(first.read_published(WRITABLE_OFFSET - 16, &mut below));
    assert!(first.published_bytes(DATA_START, WRITABLE_OFFSET - DATA_START).is_some());
    // ... and not one byte at or past it, where the zero-filler may still be writing.
    let mut across = [0u8; 16];
    assert!(!first.read_published(WRITABLE_OFFSET - 8, &mut across));
    assert!(!first.read_published(WRITABLE_OFFSET, &mut across));
    assert!(first.published_bytes(WRITABLE_OFFSET - 8, 16).is_none());
    assert!(first.published_bytes(DATA_START, SEGMENT_BYTES - DATA_START).is_none());

    // Once the filler is done, the whole published segment is readable.
    first.zero_filled(SEGMENT_BYTES);
    assert!(first.read_published(WRITABLE_OFFSET, &mut across));
    assert!(first.published_bytes(DATA_START, SEGMENT_BYTES - DATA_START).is_some());
}

/// Dropping page-table entries before a sync changes no byte of a file's shared mapping
/// (`tests/page_tables.rs`), but it would zero an anonymous one: those maps (tests and
/// models) must keep their bytes through both calls (soundness point 7 of `mapping.rs`).
#[test]
fn an_anonymous_map_keeps_its_bytes_through_a_sync() {
    const PAGES_BYTES: u64 = 4 * 4096;
    let map = Arc::new(SegmentMap::anonymous(PAGES_BYTES, 0, 1, DATA_START).unwrap());
    let cursor = Cursor::new(Arc::clone(&map), DATA_START, DATA_START);
    let mut claim = cursor.reserve(3 * 4096, 0, &mut next_segment).unwrap();
    claim.fill(|payload| payload.fill(5));
    let end = claim.publish(KIND, 0);
    assert_eq!(map.advance_published(), end);

    map.unmap_pages(0, PAGES_BYTES);
    map.sync_range(0, PAGES_BYTES).unwrap();

    let mut payload = vec![0u8; 3 * 4096];
    assert!(map.read_published(DATA_START + 32, &mut payload));
    assert!(payload.iter().all(|&byte| byte == 5), "the record's bytes are still there");
}

/// The thread that faults pages in ahead of the writers stops at the writable offset:
/// past it the zero-filler may still be writing (point 5 of `mapping.rs`).
#[test]
fn faulting_ahead_stops_at_the_writable_offset() {
    const PAGE_BYTES: u64 = 4096;
    let lead = Lead { min_bytes: PAGE_BYTES, max_bytes: PAGE_BYTES };
    let map = SegmentMap::anonymous(16 * PAGE_BYTES, 0, 1, DATA_START)
        .unwrap()
        .with_zero_filler(8 * PAGE_BYTES, lead, Arc::new(WaitWord::new()))
        .with_prefault_lead(16 * PAGE_BYTES);
    map.want_prefaulted(DATA_START + 64);
    let windows = |map: &SegmentMap| std::iter::from_fn(|| map.prefault_wanted(PAGE_BYTES).then_some(())).count();
    assert_eq!(windows(&map), 8, "a page at a time up to the writable offset, and no further");
    map.zero_filled(16 * PAGE_BYTES);
    assert_eq!(windows(&map), 8, "the rest once it is zero-filled");
}
