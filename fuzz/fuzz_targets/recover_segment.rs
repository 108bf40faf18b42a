//! Recovery over one segment image: it must never panic, and what it reports must agree
//! with what is in the image.
//!
//! Two input forms:
//! - anything not starting with [`STRUCTURED`]: the input is the raw segment image;
//! - [`STRUCTURED`] followed by a description: a valid segment is built (header, data,
//!   skip and padding records at their true positions), a few byte mutations are
//!   applied, and the scan is checked against what the builder knows. Random bytes
//!   almost never get past the header and record checksums, so this form is what lets
//!   the fuzzer reach the record walk and the torn-tail/corruption rules.

#![no_main]

use std::collections::HashSet;

use arbitrary::{Result, Unstructured};
use libfuzzer_sys::fuzz_target;
use segstore::record::{encode_to_vec, header_if_plausible, marker_header, Expected, Invalid, RecordFlags, RecordKind, RECORD_HEADER_SIZE};
use segstore::recovery::{scan_image, ImageScan, LogEnd};
use segstore::segment::{SegmentInfo, SEGMENT_HEADER_SIZE};
use zerocopy::IntoBytes;

const STRUCTURED: u8 = 0xA5;
const HEADER: u64 = RECORD_HEADER_SIZE as u64;
const MAX_MUTATIONS: u8 = 4;
const MAX_RECORDS: usize = 256;

fuzz_target!(|data: &[u8]| {
    match data.split_first() {
        Some((&STRUCTURED, rest)) => structured(rest),
        _ => {
            let scan = scan_image(data);
            check_sane(data, &scan);
        }
    }
});

/// Invariants of any scan, whatever the image.
fn check_sane(image: &[u8], scan: &ImageScan) {
    let ImageScan::Valid { end, payload_bytes } = scan else { return };
    let info = SegmentInfo::decode(image).expect("a scan past the header means the header is valid");
    assert_eq!(end.segment_index, 0);
    assert_eq!(end.offset % 8, 0, "{end:?}");
    assert!(end.offset >= SEGMENT_HEADER_SIZE && end.offset <= info.size_bytes, "{end:?} in {info:?}");
    assert!(!end.sealed || (end.offset == info.size_bytes && end.torn.is_none()), "{end:?} in {info:?}");
    // Every data record costs a header besides its payload, all inside the valid prefix.
    assert!(end.data_records * HEADER + payload_bytes <= end.offset - SEGMENT_HEADER_SIZE, "{end:?}, {payload_bytes} payload bytes");
}

#[derive(Clone, Copy, Debug)]
enum Mutation {
    Xor {
        at: u32,
        value: u8,
    },
    Set {
        at: u32,
        value: u8,
    },
    Zero {
        at: u32,
        length: u16,
    },
    Copy {
        from: u32,
        at: u32,
        length: u16,
    },
    Truncate {
        at: u32,
    },
    /// Bytes past the segment's size: the scan must ignore them.
    Extend {
        length: u16,
        value: u8,
    },
}

/// A record the builder laid down.
#[derive(Clone, Copy, Debug)]
struct Laid {
    offset: u64,
    span: u64,
    /// Bytes the decoder checks: the whole span of a data record, the header of a marker.
    checked: u64,
    is_data: bool,
    payload_bytes: u64,
    durable_hint: u64,
}

/// The scan that ends at `offset` after `records`.
fn scan_of(records: &[Laid], offset: u64, sealed: bool, torn: Option<Invalid>) -> ImageScan {
    let data = records.iter().filter(|laid| laid.is_data);
    ImageScan::Valid {
        end: LogEnd { segment_index: 0, offset, sealed, torn, data_records: data.clone().count() as u64 },
        payload_bytes: data.map(|laid| laid.payload_bytes).sum(),
    }
}

struct Built {
    info: SegmentInfo,
    image: Vec<u8>,
    records: Vec<Laid>,
    end_offset: u64,
    sealed: bool,
}

impl Built {
    fn position(&self, offset: u64) -> u64 {
        self.info.base_position + offset
    }

    /// The scan of the image as built, from the builder's knowledge alone.
    fn expected_scan(&self) -> ImageScan {
        // Zeros after the last record read as unwritten; less room than a header reads as truncated.
        let torn = (!self.sealed && self.end_offset + HEADER > self.info.size_bytes).then_some(Invalid::Truncated);
        scan_of(&self.records, self.end_offset, self.sealed, torn)
    }

    /// Whether `image` has, at an 8-byte boundary from `from` on that is not where the
    /// builder put a record, a header naming this segment and that place. Only such
    /// headers can turn into records the builder does not know of (a payload may well
    /// embed a whole valid record), so the exact predictions are skipped when there is one.
    fn stray_header_from(&self, image: &[u8], from: u64, starts: &HashSet<u64>) -> bool {
        let size = self.info.size_bytes;
        let mut offset = from.next_multiple_of(8);
        while offset + HEADER <= size {
            if !starts.contains(&offset) {
                let expected = Expected { generation: self.info.generation, position: self.position(offset) };
                if header_if_plausible(&image[offset as usize..size as usize], expected).is_some() {
                    return true;
                }
            }
            offset += 8;
        }
        false
    }
}

fn structured(input: &[u8]) {
    let mut u = Unstructured::new(input);
    let Ok((built, mutations)) = build(&mut u) else { return };
    let mut image = built.image.clone();
    for mutation in &mutations {
        apply(&mut image, *mutation);
    }
    let scan = scan_image(&image);
    check_sane(&image, &scan);
    check_against_builder(&built, &image, &scan);
}

fn build(u: &mut Unstructured<'_>) -> Result<(Built, Vec<Mutation>)> {
    // Mostly small segments: more executions per second, and the segment end (where
    // padding, truncation and full segments meet) is reached more often.
    let size_bytes = 8 * match u.int_in_range(0u8..=3)? {
        0..=2 => u.int_in_range(512u64..=1024)?,
        _ => u.int_in_range(512u64..=8192)?,
    };
    let generation: u32 = u.arbitrary()?;
    let sequence: u64 = u.arbitrary()?;
    let base_position = match u.int_in_range(0u8..=2)? {
        0 => 0,
        1 => 4096 * u.int_in_range(0u64..=1 << 40)?,
        // Up to the largest base the header allows: positions near u64::MAX.
        _ => u.int_in_range(0..=u64::MAX - size_bytes)?,
    };
    // Mutations are read before the records so that the records can use all the rest.
    let mut mutations = Vec::new();
    for _ in 0..u.int_in_range(0..=MAX_MUTATIONS)? {
        let at = u.arbitrary()?;
        mutations.push(match u.int_in_range(0u8..=9)? {
            0..=3 => Mutation::Xor { at, value: u.arbitrary()? },
            4 | 5 => Mutation::Set { at, value: u.arbitrary()? },
            6 => Mutation::Zero { at, length: u.arbitrary()? },
            7 => Mutation::Copy { from: u.arbitrary()?, at, length: u.arbitrary()? },
            8 => Mutation::Truncate { at },
            _ => Mutation::Extend { length: u.arbitrary()?, value: u.arbitrary()? },
        });
    }

    let info = SegmentInfo { sequence, base_position, size_bytes, generation };
    let mut image = vec![0u8; size_bytes as usize];
    image[..SEGMENT_HEADER_SIZE as usize].copy_from_slice(info.encode().as_bytes());
    let mut records: Vec<Laid> = Vec::new();
    let mut offset = SEGMENT_HEADER_SIZE;
    let mut sealed = false;
    while !u.is_empty() && records.len() < MAX_RECORDS && offset + HEADER <= size_bytes {
        let position = base_position + offset;
        let room = size_bytes - offset;
        let durable_hint = match u.int_in_range(0u8..=3)? {
            0 => 0,
            // The usual case for a busy log: everything before this record was synced.
            1 => position,
            2 => match records.len() {
                0 => base_position,
                count => base_position + records[u.choose_index(count)?].offset,
            },
            _ => u.int_in_range(0..=position)?,
        };
        let at = offset as usize;
        let laid = match u.int_in_range(0u8..=9)? {
            0 => {
                let span = 8 * u.int_in_range(HEADER / 8..=room / 8)?;
                let header = marker_header(RecordKind::SKIP, RecordFlags::empty(), span, generation, position, durable_hint);
                image[at..at + RECORD_HEADER_SIZE].copy_from_slice(header.as_bytes());
                // A skip covers bytes a writer may have left half-written.
                let body = u.int_in_range(0..=(span - HEADER).min(64))? as usize;
                let body_bytes = u.bytes(body.min(u.len()))?;
                image[at + RECORD_HEADER_SIZE..][..body_bytes.len()].copy_from_slice(body_bytes);
                Laid { offset, span, checked: HEADER, is_data: false, payload_bytes: 0, durable_hint }
            }
            1 => {
                let flags = if u.arbitrary()? { RecordFlags::CUT } else { RecordFlags::empty() };
                let header = marker_header(RecordKind::PADDING, flags, room, generation, position, durable_hint);
                image[at..at + RECORD_HEADER_SIZE].copy_from_slice(header.as_bytes());
                sealed = true;
                Laid { offset, span: room, checked: HEADER, is_data: false, payload_bytes: 0, durable_hint }
            }
            _ => {
                let kind = RecordKind(u.int_in_range(RecordKind::FIRST_DATA.0..=u8::MAX)?);
                let most = room - HEADER;
                let length = match u.int_in_range(0u8..=3)? {
                    0..=2 => u.int_in_range(0..=most.min(64))?,
                    _ => u.int_in_range(0..=most.min(8192))?,
                } as usize;
                let mut payload = u.bytes(length.min(u.len()))?.to_vec();
                payload.extend((payload.len()..length).map(|index| index as u8));
                let bytes = encode_to_vec(kind, &payload, Expected { generation, position }, durable_hint);
                image[at..at + bytes.len()].copy_from_slice(&bytes);
                let span = bytes.len() as u64;
                Laid { offset, span, checked: span, is_data: true, payload_bytes: length as u64, durable_hint }
            }
        };
        records.push(laid);
        offset += laid.span;
        if sealed {
            break;
        }
    }
    Ok((Built { info, image, records, end_offset: offset, sealed }, mutations))
}

fn apply(image: &mut Vec<u8>, mutation: Mutation) {
    let length = image.len();
    if length == 0 {
        return; // truncated away by an earlier mutation
    }
    let index = |at: u32| at as usize % length;
    match mutation {
        Mutation::Xor { at, value } => image[index(at)] ^= value.max(1),
        Mutation::Set { at, value } => image[index(at)] = value,
        Mutation::Zero { at, length: count } => {
            let start = index(at);
            let end = (start + usize::from(count % 512)).min(length);
            image[start..end].fill(0);
        }
        Mutation::Copy { from, at, length: count } => {
            let (from, at) = (index(from), index(at));
            let count = usize::from(count % 512).min(length - from).min(length - at);
            image.copy_within(from..from + count, at);
        }
        Mutation::Truncate { at } => image.truncate(index(at)),
        Mutation::Extend { length: count, value } => image.resize(length + usize::from(count % 4096) + 1, value),
    }
}

/// Offsets where `a` and `b` differ. Compares in chunks first: a per-byte loop costs a
/// comparison hook per byte in an instrumented build.
fn differing_bytes(a: &[u8], b: &[u8]) -> Vec<usize> {
    const CHUNK: usize = 256;
    let mut differing = Vec::new();
    for (chunk, (x, y)) in a.chunks(CHUNK).zip(b.chunks(CHUNK)).enumerate() {
        if x != y {
            differing.extend((0..x.len()).filter(|&at| x[at] != y[at]).map(|at| chunk * CHUNK + at));
        }
    }
    differing
}

/// Compares the scan with what follows from where the image differs from the one built.
fn check_against_builder(built: &Built, image: &[u8], scan: &ImageScan) {
    let size = built.info.size_bytes as usize;
    if image.len() < size {
        return; // A short file: only the general invariants hold.
    }
    let differing = differing_bytes(&image[..size], &built.image);
    if differing.is_empty() {
        // Nothing changed in the segment (bytes past its size never count).
        assert_eq!(*scan, built.expected_scan(), "an intact segment must recover exactly as built: {:?}", built.records);
        return;
    }

    let header_bytes = differing.iter().filter(|&&at| at < SEGMENT_HEADER_SIZE as usize).count();
    if header_bytes > 0 {
        if header_bytes == 1 {
            // The header checksum catches any damage confined to one byte.
            assert!(matches!(scan, ImageScan::BadHeader(_)), "one damaged header byte accepted: {scan:?}");
        }
        return;
    }

    // Which records have a byte the decoder checks changed, and whether bytes past the
    // valid log changed. Bytes in the bodies of skip and padding records are never read.
    let mut damaged_records = Vec::new();
    let mut damaged_bytes = 0;
    let mut tail_changed = false;
    for &at in &differing {
        let at = at as u64;
        if at >= built.end_offset {
            tail_changed = true;
        } else if let Some(index) = built.records.iter().position(|laid| laid.offset <= at && at < laid.offset + laid.checked) {
            damaged_bytes += 1;
            damaged_records.push(index);
        }
    }
    let starts: HashSet<u64> = built.records.iter().map(|laid| laid.offset).collect();

    let Some(&first) = damaged_records.iter().min() else {
        if !tail_changed {
            assert_eq!(*scan, built.expected_scan(), "bytes nobody reads changed the scan: {:?}", built.records);
        } else if !built.stray_header_from(image, built.end_offset, &starts) {
            // Damage past the valid log is a torn tail: the same records, no corruption.
            let ImageScan::Valid { end, payload_bytes } = scan else { panic!("damage past the valid log reported as {scan:?}") };
            let ImageScan::Valid { end: built_end, payload_bytes: built_payload } = built.expected_scan() else { unreachable!() };
            assert_eq!(
                (end.offset, end.data_records, end.sealed, *payload_bytes),
                (built_end.offset, built_end.data_records, built_end.sealed, built_payload),
                "damage past the valid log changed it"
            );
        }
        return;
    };

    // The records before the first damaged one are intact: recovery keeps all of them.
    let damaged = built.records[first];
    let before = &built.records[..first];
    if let ImageScan::Valid { end, .. } = scan {
        let kept = before.iter().filter(|laid| laid.is_data).count() as u64;
        assert!(end.offset >= damaged.offset && end.data_records >= kept, "intact records before the damage were lost: {end:?}");
    }
    // One changed byte is always caught by the record checksum, so recovery stops right
    // at the damaged record; whether that is a torn tail or corruption depends only on
    // whether a later record vouches for it.
    if damaged_bytes == 1 && !built.stray_header_from(image, damaged.offset + 8, &starts) {
        let damaged_position = built.position(damaged.offset);
        let vouched = built.records[first + 1..].iter().any(|laid| laid.durable_hint > damaged_position);
        if vouched {
            assert!(matches!(scan, ImageScan::Failed(_)), "damage below a durable hint not reported as corruption: {scan:?}");
        } else {
            let ImageScan::Valid { end, .. } = scan else { panic!("torn tail reported as {scan:?}") };
            let wanted = scan_of(before, damaged.offset, false, end.torn);
            assert_eq!(*scan, wanted, "torn tail not cut at the damaged record");
        }
    }
}
