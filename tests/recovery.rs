//! Recovery, on crash images built from the real segment files of a log: the files of
//! a dropped log are copied into a fresh directory, bytes are changed there the way a
//! crash or a bad disk changes them, and the copy is opened.
//!
//! The failure model (ARCHITECTURE.md): after a power loss, every 4 KiB page or 512 B
//! sector written since the last successful sync may hold its old bytes, its new bytes
//! or, on a bad disk, garbage; what was synced stays. A torn tail must be discarded;
//! damage to bytes that were durable must be reported, with its place, and nothing
//! dropped; bytes that are not this log's records must never be taken for records.

mod common;

use std::path::Path;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use segstore::record::{data_span_bytes, RECORD_HEADER_SIZE};
use segstore::segment::SEGMENT_HEADER_SIZE;
use segstore::{Appended, Error, Log, Options, SyncMode};

use common::{
    as_records, assert_zero_from, copy_log, files_ending_in, options, payload, records, reopen_and_read, segment_files, segment_holding,
    snapshot, test_seed, wait_for_prepared_segment, SeedGuard, SegmentOnDisk, KIND,
};

const SEGMENT_SIZE_BYTES: u64 = 64 << 10;

/// The offset of log position `position` in its segment (every segment here has one size).
fn offset_in_segment(position: u64) -> u64 {
    position % SEGMENT_SIZE_BYTES
}

/// A log a crash left behind: its files (copied after a drop without close, so that an
/// empty prepared segment is among them), every record appended to it in order, and
/// the durable position at the moment of the crash.
struct Crashed {
    directory: tempfile::TempDir,
    options: Options,
    appended: Vec<(Appended, Vec<u8>)>,
    durable_position: u64,
}

impl Crashed {
    /// Records wholly below the durable position: acknowledged, so never to be lost.
    fn durable_records(&self) -> usize {
        self.appended.iter().take_while(|(at, _)| at.end.0 <= self.durable_position).count()
    }
}

/// Where the records appended after the last sync lie.
#[derive(Clone, Copy, Debug)]
enum UnsyncedTail {
    /// In the segment where the durable records end.
    WithinSegment,
    /// Across a rotation: a segment is synced before the next one takes a record, so the
    /// durable position moves to the sealed segment's end and the tail is in the next.
    AcrossRotation,
}

/// Writes records synced one by one into a third segment, then records not synced.
fn crashed_log(sync_mode: SyncMode, tail: UnsyncedTail, seed: u64) -> Crashed {
    let mut rng = StdRng::seed_from_u64(seed);
    let directory = tempfile::tempdir().unwrap();
    let options = options(SEGMENT_SIZE_BYTES, sync_mode);
    let log = Log::open(directory.path(), options.clone()).unwrap();
    let mut appended = Vec::new();
    let durable_until_offset = match tail {
        UnsyncedTail::WithinSegment => 8 << 10,
        UnsyncedTail::AcrossRotation => 48 << 10,
    };
    while log.segment_count() < 3 || offset_in_segment(log.published_position().0) < durable_until_offset {
        // Sizes that are not multiples of 8 and cross sector and page boundaries anywhere.
        let size = rng.gen_range(0..1500);
        let bytes = payload(&mut rng, size);
        appended.push((log.append_durable(KIND, &bytes).unwrap(), bytes));
    }
    let durable_before_tail = log.durable_position().0;
    let mut unsynced_bytes = 0;
    while unsynced_bytes < 24 << 10 {
        let size = rng.gen_range(0..1500);
        let bytes = payload(&mut rng, size);
        let at = log.append(KIND, &bytes).unwrap();
        unsynced_bytes += at.end.0 - at.position.0;
        appended.push((at, bytes));
    }
    let durable_position = log.durable_position().0;
    match tail {
        UnsyncedTail::WithinSegment => assert_eq!(durable_position, durable_before_tail, "the unsynced tail stays in its segment"),
        UnsyncedTail::AcrossRotation => {
            assert!(durable_position > durable_before_tail && offset_in_segment(durable_position) == 0, "the tail crossed a rotation")
        }
    }
    wait_for_prepared_segment(&log);
    drop(log);
    Crashed { directory, options, appended, durable_position }
}

/// What one page or sector written since the last sync holds after the crash.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Fate {
    /// What it held at the last sync: zeros, as the preparer left it.
    Old,
    /// What was written since.
    New,
    /// Neither: a bad disk.
    Garbage,
}

#[derive(Clone, Copy, Debug)]
enum Pattern {
    Every(Fate),
    /// Each unit picks its fate at random.
    Random(u64),
    /// The unit of this index (counted from the durable position on, over every segment)
    /// gets the fate, every other one is new: a hole or a bad spot with intact records
    /// after it, which recovery must not take back.
    One {
        unit: usize,
        fate: Fate,
    },
}

/// Builds a crash image of `crashed` in a fresh directory: everything below the durable
/// position (and every segment header, synced by the preparer before the segment was
/// named) as it is; each `unit_bytes` unit above it (its part above, for the unit
/// holding the durable position) as `pattern` says. Also returns the lowest log position
/// whose byte the image changed.
fn crash_image(crashed: &Crashed, unit_bytes: u64, pattern: Pattern) -> (tempfile::TempDir, Option<u64>) {
    let image = tempfile::tempdir().unwrap();
    let mut rng = StdRng::seed_from_u64(match pattern {
        Pattern::Random(seed) => seed,
        Pattern::Every(_) | Pattern::One { .. } => 0,
    });
    let mut first_changed: Option<u64> = None;
    let mut unit_index = 0;
    for segment in segment_files(crashed.directory.path()) {
        let original = std::fs::read(&segment.path).unwrap();
        let mut bytes = original.clone();
        let size_bytes = bytes.len() as u64;
        let durable_offset = crashed.durable_position.saturating_sub(segment.base_position).clamp(SEGMENT_HEADER_SIZE, size_bytes);
        let mut unit_start = durable_offset / unit_bytes * unit_bytes;
        while unit_start < size_bytes {
            let range = unit_start.max(durable_offset) as usize..(unit_start + unit_bytes).min(size_bytes) as usize;
            let fate = match pattern {
                Pattern::Every(fate) => fate,
                Pattern::Random(_) => match rng.gen_range(0..4) {
                    0 => Fate::Old,
                    1 => Fate::Garbage,
                    _ => Fate::New,
                },
                Pattern::One { unit, fate } if unit == unit_index => fate,
                Pattern::One { .. } => Fate::New,
            };
            match fate {
                Fate::Old => bytes[range.clone()].fill(0),
                Fate::New => {}
                Fate::Garbage => rng.fill(&mut bytes[range.clone()]),
            }
            if first_changed.is_none() {
                if let Some(at) = range.clone().find(|&offset| bytes[offset] != original[offset]) {
                    first_changed = Some(segment.base_position + at as u64);
                }
            }
            unit_start += unit_bytes;
            unit_index += 1;
        }
        std::fs::write(image.path().join(segment.name()), bytes).unwrap();
    }
    (image, first_changed)
}

/// Opens a crash image and checks what recovery made of it: every record below the
/// first changed byte (which includes every durable one) and nothing else, the same
/// from a read-only open, zeros on disk past the end, the same again on a second open,
/// and appends after recovery kept.
fn check_torn_tail_recovery(crashed: &Crashed, image: &Path, first_changed: Option<u64>, case: &str) {
    let appended = as_records(&crashed.appended);
    let durable_records = crashed.durable_records();
    // Appends were sequential: the valid prefix is every record wholly below the first
    // damaged byte; the record holding it fails its checksum, and nothing after a bad
    // record may come back.
    let intact_records = crashed.appended.iter().take_while(|(at, _)| first_changed.is_none_or(|changed| at.end.0 <= changed)).count();

    let before = snapshot(image);
    let read_only = records(&Log::open_read_only(image).unwrap_or_else(|error| panic!("{case}: read-only open failed: {error}")));
    assert!(snapshot(image) == before, "{case}: a read-only open changed the files");

    let (recovered, end) = {
        let log = Log::open(image, crashed.options.clone()).unwrap_or_else(|error| panic!("{case}: open failed: {error}"));
        (records(&log), log.recovery_report().append_position.0)
    };
    assert!(recovered == read_only, "{case}: open recovered {} records, a read-only open {}", recovered.len(), read_only.len());
    assert!(
        recovered.len() >= durable_records,
        "{case}: {} records recovered, but {durable_records} were durable (durable position {})",
        recovered.len(),
        crashed.durable_position
    );
    assert!(
        recovered[..] == appended[..intact_records],
        "{case}: recovered {} records, expected the {intact_records} below the first damaged byte at {first_changed:?}",
        recovered.len()
    );
    if let Some((position, bytes)) = recovered.last() {
        assert!(end >= position + data_span_bytes(bytes.len() as u64), "{case}: appends continue at {end}, inside the last record");
    }
    assert_zero_from(image, end);

    // Idempotent: a second open finds exactly the same log.
    {
        let log = Log::open(image, crashed.options.clone()).unwrap_or_else(|error| panic!("{case}: second open failed: {error}"));
        assert!(records(&log) == recovered, "{case}: a second open recovered other records");
        assert_eq!(log.recovery_report().append_position.0, end, "{case}: a second open continues elsewhere");
    }
    assert_zero_from(image, end);

    // Recovery, then appends, then a reopen: both kept.
    let mut expected = recovered;
    {
        let log = Log::open(image, crashed.options.clone()).unwrap();
        for size in [0, 7, 3000] {
            let bytes = vec![0xa5; size];
            expected.push((log.append_durable(KIND, &bytes).unwrap().position.0, bytes));
        }
    }
    assert!(reopen_and_read(image, crashed.options.clone()) == expected, "{case}: records appended after recovery were not kept");
}

/// Every unit size and pattern over one crashed log.
fn torn_tails(test: &'static str, sync_mode: SyncMode, tail: UnsyncedTail) {
    let seed = test_seed();
    let _guard = SeedGuard { test, seed };
    let crashed = crashed_log(sync_mode, tail, seed);
    let mut rng = StdRng::seed_from_u64(seed);
    for unit_bytes in [4096, 512] {
        // The unsynced tail is 24 KiB; the units past it are zeros, some in the prepared segment.
        let tail_units = (32 << 10) / unit_bytes as usize;
        let mut patterns: Vec<Pattern> = [Fate::Old, Fate::New, Fate::Garbage].map(Pattern::Every).to_vec();
        for index in 0..5 {
            patterns.push(Pattern::Random(rng.gen()));
            let fate = if index % 2 == 0 { Fate::Old } else { Fate::Garbage };
            patterns.push(Pattern::One { unit: rng.gen_range(0..tail_units), fate });
        }
        for pattern in patterns {
            let case = format!("{sync_mode:?}, {tail:?}, {unit_bytes} B units, {pattern:?}");
            let (image, first_changed) = crash_image(&crashed, unit_bytes, pattern);
            check_torn_tail_recovery(&crashed, image.path(), first_changed, &case);
        }
    }
}

#[test]
fn torn_tail_within_a_segment_with_msync() {
    torn_tails("torn_tail_within_a_segment_with_msync", SyncMode::Msync, UnsyncedTail::WithinSegment);
}

#[test]
fn torn_tail_within_a_segment_with_fdatasync() {
    torn_tails("torn_tail_within_a_segment_with_fdatasync", SyncMode::Fdatasync, UnsyncedTail::WithinSegment);
}

#[test]
fn torn_tail_across_a_rotation_with_msync() {
    torn_tails("torn_tail_across_a_rotation_with_msync", SyncMode::Msync, UnsyncedTail::AcrossRotation);
}

#[test]
fn torn_tail_across_a_rotation_with_fdatasync() {
    torn_tails("torn_tail_across_a_rotation_with_fdatasync", SyncMode::Fdatasync, UnsyncedTail::AcrossRotation);
}

/// A log of records each appended with `append_durable`, dropped without close once
/// `segments_with_records` segments hold records (the last one partly filled).
struct Written {
    directory: tempfile::TempDir,
    options: Options,
    appended: Vec<(Appended, Vec<u8>)>,
}

impl Written {
    fn new(segments_with_records: usize, segment_size_bytes: u64, seed: u64) -> Written {
        let mut rng = StdRng::seed_from_u64(seed);
        let directory = tempfile::tempdir().unwrap();
        let options = options(segment_size_bytes, SyncMode::Fdatasync);
        let log = Log::open(directory.path(), options.clone()).unwrap();
        let mut appended = Vec::new();
        while log.segment_count() < segments_with_records || log.published_position().0 % segment_size_bytes < 16 << 10 {
            // Never empty, so that every record has a payload byte to damage.
            let size = rng.gen_range(100..1500);
            let bytes = payload(&mut rng, size);
            appended.push((log.append_durable(KIND, &bytes).unwrap(), bytes));
        }
        wait_for_prepared_segment(&log);
        drop(log);
        Written { directory, options, appended }
    }

    fn segments(&self) -> Vec<SegmentOnDisk> {
        segment_files(self.directory.path())
    }

    /// The records of `segment`, in order.
    fn records_in(&self, segment: &SegmentOnDisk) -> Vec<&(Appended, Vec<u8>)> {
        let size_bytes = self.options.segment_size_bytes;
        self.appended
            .iter()
            .filter(|(at, _)| (segment.base_position..segment.base_position + size_bytes).contains(&at.position.0))
            .collect()
    }

    /// A copy of the log's files in a fresh directory.
    fn image(&self) -> tempfile::TempDir {
        let image = tempfile::tempdir().unwrap();
        copy_log(self.directory.path(), image.path());
        image
    }
}

/// Flips the bits of `mask` in the byte at `offset` of file `path`, in place.
fn flip_byte(path: &Path, offset: u64, mask: u8) {
    use std::os::unix::fs::FileExt;
    let file = std::fs::OpenOptions::new().read(true).write(true).open(path).unwrap();
    let mut byte = [0u8];
    file.read_exact_at(&mut byte, offset).unwrap();
    file.write_all_at(&[byte[0] ^ mask], offset).unwrap();
}

/// Writes `new_bytes` at `offset` of file `path`, in place.
fn overwrite(path: &Path, offset: u64, new_bytes: &[u8]) {
    use std::os::unix::fs::FileExt;
    let file = std::fs::OpenOptions::new().write(true).open(path).unwrap();
    assert!(offset + new_bytes.len() as u64 <= file.metadata().unwrap().len(), "overwrites stay inside the file");
    file.write_all_at(new_bytes, offset).unwrap();
}

/// Both a writable and a read-only open of `image` must fail with `Corrupt` at `path`,
/// `offset`, and change no file.
fn expect_corrupt(image: &Path, options: &Options, path: &Path, offset: u64, case: &str) {
    let before = snapshot(image);
    let opens: [(&str, &dyn Fn() -> segstore::Result<()>); 2] =
        [("open", &|| Log::open(image, options.clone()).map(drop)), ("read-only open", &|| Log::open_read_only(image).map(drop))];
    for (how, open) in opens {
        match open() {
            Err(Error::Corrupt { path: error_path, offset: error_offset, reason }) => {
                assert_eq!((error_path.as_path(), error_offset), (path, offset), "{case}: {how} reported the wrong place ({reason})");
            }
            other => panic!("{case}: {how} should fail with Corrupt at {} offset {offset}, got {other:?}", path.display()),
        }
        assert!(snapshot(image) == before, "{case}: a failed {how} changed the files");
    }
}

/// Which record of a segment to damage.
#[derive(Clone, Copy, Debug)]
enum Target {
    First,
    Middle,
    Last,
    /// The padding record that seals the segment.
    Padding,
}

#[derive(Clone, Copy, Debug)]
enum Change {
    /// Flips the lowest bit of this header byte.
    FlipHeaderByte(u64),
    FlipPayloadByte,
    /// Zeroes the publication word (bytes 0..8): the record reads as never written.
    ZeroPublicationWord,
}

#[test]
fn damage_in_a_sealed_segment_is_corruption() {
    #[rustfmt::skip]
    let cases: &[(&str, usize, Target, Change)] = &[
        ("payload of a record",                       0, Target::Middle,  Change::FlipPayloadByte),
        ("length of the first record",                0, Target::First,   Change::FlipHeaderByte(0)),
        ("kind",                                      1, Target::Middle,  Change::FlipHeaderByte(4)),
        ("checksum",                                  1, Target::Last,    Change::FlipHeaderByte(8)),
        ("generation",                                0, Target::Middle,  Change::FlipHeaderByte(12)),
        ("position",                                  1, Target::First,   Change::FlipHeaderByte(16)),
        ("durable hint",                              1, Target::Middle,  Change::FlipHeaderByte(24)),
        ("a record made to look unwritten",           0, Target::Middle,  Change::ZeroPublicationWord),
        ("the last record before the seal",           2, Target::Last,    Change::FlipPayloadByte),
        ("the seal's padding record",                 1, Target::Padding, Change::FlipHeaderByte(0)),
        ("the seal made to look unwritten",           0, Target::Padding, Change::ZeroPublicationWord),
    ];
    let written = Written::new(4, SEGMENT_SIZE_BYTES, 0x5ea1ed);
    let segments = written.segments();
    for &(what, segment_index, target, change) in cases {
        let segment = &segments[segment_index];
        let in_segment = written.records_in(segment);
        assert!(!written.records_in(&segments[segment_index + 1]).is_empty(), "segment {segment_index} is followed by records");
        let (offset, payload_bytes) = match target {
            Target::First => (segment.offset_of(in_segment[0].0.position.0), in_segment[0].1.len()),
            Target::Middle => {
                let (at, bytes) = in_segment[in_segment.len() / 2];
                (segment.offset_of(at.position.0), bytes.len())
            }
            Target::Last => {
                let (at, bytes) = in_segment[in_segment.len() - 1];
                (segment.offset_of(at.position.0), bytes.len())
            }
            Target::Padding => (segment.offset_of(in_segment[in_segment.len() - 1].0.end.0), 0),
        };
        let image = written.image();
        let path = image.path().join(segment.name());
        match change {
            Change::FlipHeaderByte(byte) => flip_byte(&path, offset + byte, 1),
            Change::FlipPayloadByte => flip_byte(&path, offset + RECORD_HEADER_SIZE as u64 + payload_bytes as u64 / 2, 0x10),
            Change::ZeroPublicationWord => overwrite(&path, offset, &[0; 8]),
        }
        let case = format!("{what} in sealed segment {segment_index} at offset {offset}");
        expect_corrupt(image.path(), &written.options, &path, offset, &case);
    }
}

/// What recovery must make of a damaged record in the last segment.
#[derive(Clone, Copy, Debug)]
enum Verdict {
    Corrupt,
    /// A torn tail: the log keeps this many records.
    TornTail(usize),
}

#[test]
fn damage_below_a_durable_hint_in_the_last_segment_is_corruption() {
    const SYNCED: usize = 20;
    #[rustfmt::skip]
    let cases: &[(&str, usize, usize, Verdict)] = &[
        // (what, records appended without sync after the synced ones, damaged record, verdict)
        ("the first record: every later one vouches for it",                    5,  0, Verdict::Corrupt),
        ("a record in the middle",                                              5, 10, Verdict::Corrupt),
        ("the last synced record: the unsynced ones were appended after it was durable",
                                                                                5, 19, Verdict::Corrupt),
        ("an unsynced record: the later ones carry hints below it",             5, 21, Verdict::TornTail(21)),
        ("the last record, unsynced",                                           5, 24, Verdict::TornTail(24)),
        // What the rules cannot see: nothing written later vouches for the last
        // acknowledged record, so its damage reads as a torn tail.
        ("the last synced record, with nothing after it",                       0, 19, Verdict::TornTail(19)),
    ];
    for &(what, unsynced, damaged, verdict) in cases {
        // One segment large enough for every record: no later segment holds records, so
        // only a durable hint can tell corruption from a torn tail.
        let directory = tempfile::tempdir().unwrap();
        let options = options(256 << 10, SyncMode::Msync);
        let mut appended = Vec::new();
        {
            let log = Log::open(directory.path(), options.clone()).unwrap();
            for index in 0..SYNCED + unsynced {
                let bytes = vec![index as u8 + 1; 500 + index];
                let at = if index < SYNCED { log.append_durable(KIND, &bytes) } else { log.append(KIND, &bytes) }.unwrap();
                appended.push((at, bytes));
            }
            assert_eq!(log.segment_count(), 1);
        }
        let (at, bytes) = &appended[damaged];
        let segment = segment_holding(directory.path(), at.position.0);
        let offset = segment.offset_of(at.position.0);
        flip_byte(&segment.path, offset + RECORD_HEADER_SIZE as u64 + bytes.len() as u64 / 2, 0x01);
        let case = format!("{what} (record {damaged} at offset {offset})");
        match verdict {
            Verdict::Corrupt => expect_corrupt(directory.path(), &options, &segment.path, offset, &case),
            Verdict::TornTail(kept) => {
                let log = Log::open(directory.path(), options.clone()).unwrap_or_else(|error| panic!("{case}: {error}"));
                assert!(records(&log) == as_records(&appended[..kept]), "{case}: should keep the first {kept} records");
                assert!(log.recovery_report().torn_tail.is_some(), "{case}: the report names the torn tail");
                drop(log);
                assert_zero_from(directory.path(), at.position.0);
            }
        }
    }
}

/// Deallocates `[start, end)` of `path` (4 KiB-aligned), leaving a hole that reads as
/// zeros and that the file system reports as a hole; fails if it does not.
fn punch_hole(path: &Path, start: u64, end: u64) {
    use rustix::fs::{FallocateFlags, SeekFrom};
    let file = std::fs::OpenOptions::new().read(true).write(true).open(path).unwrap();
    rustix::fs::fallocate(&file, FallocateFlags::PUNCH_HOLE | FallocateFlags::KEEP_SIZE, start, end - start).unwrap();
    // No data at all past `start` (ENXIO) is a hole too.
    if let Ok(data_at) = rustix::fs::seek(&file, SeekFrom::Data(start)) {
        assert!(data_at >= end, "the file system reports the punched range [{start}, {end}) as a hole (data at {data_at})");
    }
}

/// Recovery skips holes without reading them (unwritten blocks read as zeros): records
/// past a hole must still vouch for the bytes before it, and bytes past a hole must still
/// be zeroed when they are a torn tail.
#[test]
fn holes_past_the_end_are_skipped_but_what_lies_past_them_is_not() {
    // Longer than what recovery reads at once (1 MiB), so that skipping it matters.
    const HOLE_START: u64 = 16 << 10;
    const HOLE_END: u64 = 3 << 20;
    let options = options(8 << 20, SyncMode::Msync);

    // Records synced on both sides of what becomes the hole: those past it vouch for the
    // damaged one at its start.
    let directory = tempfile::tempdir().unwrap();
    let mut appended = Vec::new();
    {
        let log = Log::open(directory.path(), options.clone()).unwrap();
        for index in 0..100 {
            let bytes = vec![index as u8 + 1; (40 << 10) + index];
            appended.push((log.append_durable(KIND, &bytes).unwrap(), bytes));
        }
        assert_eq!(log.segment_count(), 1);
    }
    let segment = segment_holding(directory.path(), appended[0].0.position.0);
    let (damaged, _) = appended
        .iter()
        .find(|(at, _)| segment.offset_of(at.position.0) <= HOLE_START && HOLE_START < segment.offset_of(at.end.0))
        .expect("a record spans the start of the hole");
    assert!(segment.offset_of(appended.last().unwrap().0.position.0) > HOLE_END, "records lie past the hole");
    punch_hole(&segment.path, HOLE_START, HOLE_END);
    let offset = segment.offset_of(damaged.position.0);
    expect_corrupt(directory.path(), &options, &segment.path, offset, "a hole over synced records, with synced records past it");

    // A torn tail: garbage past a hole past the end of the log is zeroed with the rest.
    let directory = tempfile::tempdir().unwrap();
    let mut appended = Vec::new();
    {
        let log = Log::open(directory.path(), options.clone()).unwrap();
        for index in 0..5 {
            let bytes = vec![index as u8 + 1; 1000];
            appended.push((log.append_durable(KIND, &bytes).unwrap(), bytes));
        }
    }
    let end = appended.last().unwrap().0.end.0;
    let segment = segment_holding(directory.path(), end);
    assert!(segment.offset_of(end) < HOLE_START);
    punch_hole(&segment.path, HOLE_START, HOLE_END);
    overwrite(&segment.path, HOLE_END + 8, b"not a record, and not zeros");
    let log = Log::open(directory.path(), options.clone()).unwrap();
    assert!(records(&log) == as_records(&appended), "the records before the garbage are kept");
    let torn_tail = log.recovery_report().torn_tail.clone().expect("the garbage is reported as a torn tail");
    assert!(torn_tail.contains("bytes zeroed"), "{torn_tail}");
    drop(log);
    assert_zero_from(directory.path(), end);
}

/// Where a stale copy of a record is put.
#[derive(Clone, Copy, Debug)]
enum StaleDestination {
    /// Where the next record would go: the end of the valid log.
    AtTheEnd,
    /// Past the end, with zeros between.
    PastTheEnd,
    /// The first record place of the empty segment prepared after the last one.
    IntoThePreparedSegment,
}

#[test]
fn records_copied_from_elsewhere_are_not_accepted() {
    #[rustfmt::skip]
    let cases: &[(&str, usize, StaleDestination)] = &[
        // (what, segment the record is copied from, where it goes)
        ("a record of a sealed segment",      0, StaleDestination::AtTheEnd),
        ("a record of a sealed segment",      1, StaleDestination::PastTheEnd),
        ("a record of the same segment",      2, StaleDestination::AtTheEnd),
        ("a record of the same segment",      2, StaleDestination::PastTheEnd),
        ("a record of a sealed segment",      0, StaleDestination::IntoThePreparedSegment),
        ("a record of the last segment",      2, StaleDestination::IntoThePreparedSegment),
    ];
    let written = Written::new(3, SEGMENT_SIZE_BYTES, 0x57a1e);
    let segments = written.segments();
    let (last, prepared) = (&segments[2], &segments[3]);
    assert!(written.records_in(prepared).is_empty(), "the segment after the last one is an empty prepared one");
    let end = written.appended.last().unwrap().0.end.0;
    for &(what, source_index, destination) in cases {
        let source_records = written.records_in(&segments[source_index]);
        let (at, _) = source_records[source_records.len() / 2];
        let source = &segments[source_index];
        let record_bytes =
            std::fs::read(&source.path).unwrap()[source.offset_of(at.position.0) as usize..source.offset_of(at.end.0) as usize].to_vec();
        let (target, offset) = match destination {
            StaleDestination::AtTheEnd => (last, last.offset_of(end)),
            StaleDestination::PastTheEnd => (last, last.offset_of(end) + 4096),
            StaleDestination::IntoThePreparedSegment => (prepared, SEGMENT_HEADER_SIZE),
        };
        let image = written.image();
        overwrite(&image.path().join(target.name()), offset, &record_bytes);
        let case = format!("{what} (segment {source_index}, position {}) put {destination:?}", at.position.0);
        let log = Log::open(image.path(), written.options.clone()).unwrap_or_else(|error| panic!("{case}: {error}"));
        assert!(records(&log) == as_records(&written.appended), "{case}: the recovered records are not exactly the written ones");
        assert_eq!(log.recovery_report().append_position.0, end, "{case}");
        drop(log);
        assert_zero_from(image.path(), end);
    }
}

/// A log deleted and created again in the same directory has segments of the same
/// names whose records sit at the same positions. Bytes of the earlier log left in the
/// later one's files (a reused file, blocks not yet overwritten) must not count: not as
/// records, and not as later records whose durable hints would vouch for the bytes at
/// the end of the valid log, which would turn a clean end into a false corruption.
#[test]
fn records_of_an_earlier_log_at_the_same_positions_are_not_accepted() {
    let mut rng = StdRng::seed_from_u64(0xea71e5);
    let directory = tempfile::tempdir().unwrap();
    let options = options(SEGMENT_SIZE_BYTES, SyncMode::Msync);
    let sizes: Vec<usize> = (0..120).map(|_| rng.gen_range(100..1500)).collect();
    let write = |count: usize, rng: &mut StdRng| -> Vec<(Appended, Vec<u8>)> {
        let log = Log::open(directory.path(), options.clone()).unwrap();
        let appended: Vec<_> = sizes[..count]
            .iter()
            .map(|&size| {
                let bytes = payload(rng, size);
                (log.append_durable(KIND, &bytes).unwrap(), bytes)
            })
            .collect();
        wait_for_prepared_segment(&log);
        appended
    };
    let earlier_appended = write(sizes.len(), &mut rng);
    let earlier = snapshot(directory.path());
    for name in earlier.keys() {
        std::fs::remove_file(directory.path().join(name)).unwrap();
    }
    // The later log's records have the sizes of the earlier one's first records, so the
    // earlier log's next record sits exactly where the later log's valid records end.
    let later_appended = write(10, &mut rng);
    let end = later_appended.last().unwrap().0.end.0;
    assert!(earlier_appended.iter().any(|(at, _)| at.position.0 == end));
    assert!(earlier_appended.last().unwrap().0.end.0 > SEGMENT_SIZE_BYTES, "the earlier log filled more than one segment");
    for segment in segment_files(directory.path()) {
        let Some(earlier_bytes) = earlier.get(&segment.name()) else { continue };
        let from = end.saturating_sub(segment.base_position).max(SEGMENT_HEADER_SIZE) as usize;
        overwrite(&segment.path, from as u64, &earlier_bytes[from..]);
    }
    let log = Log::open(directory.path(), options.clone()).unwrap_or_else(|error| panic!("stale records read as corruption: {error}"));
    assert!(records(&log) == as_records(&later_appended), "recovered records other than the later log's");
    assert_eq!(log.recovery_report().append_position.0, end);
    drop(log);
    assert_zero_from(directory.path(), end);
}

#[test]
fn an_empty_segment_prepared_before_a_crash_is_handled() {
    let directory = tempfile::tempdir().unwrap();
    let options = options(SEGMENT_SIZE_BYTES, SyncMode::Msync);
    let mut appended = Vec::new();
    let (segments_before, end) = {
        let log = Log::open(directory.path(), options.clone()).unwrap();
        for index in 0..40u8 {
            let bytes = vec![index; 1000];
            appended.push((log.append_durable(KIND, &bytes).unwrap(), bytes));
        }
        wait_for_prepared_segment(&log);
        (log.segment_count(), log.published_position().0)
    };
    let on_disk = segment_files(directory.path());
    assert_eq!(on_disk.len(), segments_before + 1, "a drop without close leaves the prepared segment");
    assert!(std::fs::read(&on_disk.last().unwrap().path).unwrap()[SEGMENT_HEADER_SIZE as usize..].iter().all(|&byte| byte == 0));

    let log = Log::open(directory.path(), options.clone()).unwrap();
    assert!(records(&log) == as_records(&appended));
    assert_eq!(log.recovery_report().append_position.0, end, "appends continue after the last record, not in the empty segment");
    assert_eq!(log.segment_count(), segments_before);
    // Fill the current segment and go on into the next ones.
    for index in 0..100u8 {
        let bytes = vec![index; 1500];
        appended.push((log.append_durable(KIND, &bytes).unwrap(), bytes));
    }
    assert!(log.segment_count() > segments_before + 1);
    drop(log);
    assert!(reopen_and_read(directory.path(), options) == as_records(&appended));
}

#[test]
fn leftover_temporary_files_are_removed_at_open() {
    let directory = tempfile::tempdir().unwrap();
    let options = options(SEGMENT_SIZE_BYTES, SyncMode::Fdatasync);
    let mut appended = Vec::new();
    let next_sequence = {
        let log = Log::open(directory.path(), options.clone()).unwrap();
        for index in 0..10u8 {
            let bytes = vec![index; 700];
            appended.push((log.append_durable(KIND, &bytes).unwrap(), bytes));
        }
        wait_for_prepared_segment(&log);
        segment_files(directory.path()).last().unwrap().sequence + 1
    };
    // A preparation cut short by the crash (named like the preparer names its files),
    // and a stray one.
    let prepared = std::fs::read(&segment_files(directory.path()).last().unwrap().path).unwrap();
    std::fs::write(directory.path().join(format!("{next_sequence:016x}.tmp")), &prepared[..20_000]).unwrap();
    std::fs::write(directory.path().join("0000000000000063.tmp"), b"not a segment").unwrap();

    let before = snapshot(directory.path());
    let read_only = Log::open_read_only(directory.path()).unwrap();
    assert!(records(&read_only) == as_records(&appended));
    drop(read_only);
    assert!(snapshot(directory.path()) == before, "a read-only open removes nothing");

    let log = Log::open(directory.path(), options.clone()).unwrap();
    assert!(records(&log) == as_records(&appended));
    drop(log);
    // The preparer may have created a temporary file of its own since; it renames it away.
    common::wait_until("no temporary file is left", || files_ending_in(directory.path(), ".tmp").is_empty());
    assert!(reopen_and_read(directory.path(), options) == as_records(&appended));
}

#[test]
fn a_segment_missing_in_the_middle_is_corruption() {
    let written = Written::new(4, SEGMENT_SIZE_BYTES, 0x6a9);
    let segments = written.segments();
    assert_eq!(segments.len(), 5, "four segments with records and the prepared one");
    for missing in [1, 2, 3] {
        let image = written.image();
        std::fs::remove_file(image.path().join(segments[missing].name())).unwrap();
        let after_gap = image.path().join(segments[missing + 1].name());
        expect_corrupt(image.path(), &written.options, &after_gap, 0, &format!("segment {missing} missing"));
    }

    // A missing first segment is not a gap: it is what releasing the log's start does.
    let image = written.image();
    std::fs::remove_file(image.path().join(segments[0].name())).unwrap();
    let log = Log::open(image.path(), written.options.clone()).unwrap();
    let kept: Vec<_> = written.appended.iter().filter(|(at, _)| at.position.0 >= segments[1].base_position).cloned().collect();
    assert!(records(&log) == as_records(&kept));
    assert_eq!(log.first_position().0, segments[1].base_position + SEGMENT_HEADER_SIZE);
}

#[test]
fn a_bit_flip_in_a_segment_header_is_corruption() {
    let written = Written::new(3, SEGMENT_SIZE_BYTES, 0x4ead);
    let image = written.image();
    // Every segment: sealed ones, the last one with records, the empty prepared one.
    let segments = segment_files(image.path());
    assert_eq!(segments.len(), 4);
    for segment in &segments {
        for bit in 0..SEGMENT_HEADER_SIZE * 8 {
            flip_byte(&segment.path, bit / 8, 1 << (bit % 8));
            let case = format!("{} with bit {bit} of its header flipped", segment.name());
            expect_corrupt_quickly(image.path(), &written.options, &segment.path, &case);
            flip_byte(&segment.path, bit / 8, 1 << (bit % 8));
        }
    }
    // Every flip was undone: the log opens as written.
    assert!(reopen_and_read(image.path(), written.options.clone()) == as_records(&written.appended));
}

/// [`expect_corrupt`] at offset 0 without comparing every file before and after: the
/// header test makes thousands of opens.
fn expect_corrupt_quickly(image: &Path, options: &Options, path: &Path, case: &str) {
    for (how, result) in [("open", Log::open(image, options.clone()).map(drop)), ("read-only open", Log::open_read_only(image).map(drop))] {
        match result {
            Err(Error::Corrupt { path: error_path, offset: 0, .. }) if error_path == path => {}
            other => panic!("{case}: {how} should fail with Corrupt at {} offset 0, got {other:?}", path.display()),
        }
    }
}
