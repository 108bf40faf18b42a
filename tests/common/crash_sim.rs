//! A crash-image simulator (ARCHITECTURE.md, failure model): what a power loss may leave of
//! the segment files of a running log, built from the real files.
//!
//! The disk is modelled from the syncs the log really makes: the log's sync observer
//! (feature `fault-injection`) reports every msync to [`msync_hook`], so "durable" means
//! "covered by a sync that returned", not "what the log says is durable". A [`Capture`] takes, at
//! one moment, the highest acknowledged position, the log's durable position, the
//! modelled disk and the page cache. An image of a capture picks, for each unit (4 KiB
//! page or 512 B sector) in which the disk and the page cache differ, the old bytes,
//! the new ones or garbage, and recovery runs over it in memory
//! (`segstore::recovery::find_log_end`) or on files.

use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use segstore::record::{self, Decoded, Expected, RecordKind};
use segstore::recovery::{find_log_end, SegmentSource};
use segstore::segment::{parse_file_name, SegmentInfo, SEGMENT_HEADER_SIZE};
use segstore::{Error, Log, Options, Position};

pub const PAGE_BYTES: usize = 4096;
pub const SECTOR_BYTES: usize = 512;
const HEADER_BYTES: usize = SEGMENT_HEADER_SIZE as usize;

/// Exhaustive enumeration up to this many dirty units (2^12 = 4096 images).
pub const MAX_EXHAUSTIVE_UNITS: usize = 12;

// ---------------------------------------------------------------------------------
// The disk model

/// What the disk holds of one segment file.
struct DiskFile {
    bytes: Vec<u8>,
    /// Pages a completed sync wrote since the file was prepared.
    synced_pages: Vec<bool>,
}

impl DiskFile {
    /// A new segment as the preparer left it: header and zeros, synced before it was named.
    fn prepared(path: &Path) -> Option<DiskFile> {
        let file = std::fs::File::open(path).ok()?;
        let size_bytes = file.metadata().ok()?.len() as usize;
        let mut bytes = vec![0; size_bytes];
        file.read_exact_at(&mut bytes[..HEADER_BYTES], 0).ok()?;
        Some(DiskFile { bytes, synced_pages: vec![false; size_bytes.div_ceil(PAGE_BYTES)] })
    }

    /// The file exactly as it is now: right after a recovery that synced it.
    fn as_is(path: &Path) -> Option<DiskFile> {
        let bytes = std::fs::read(path).ok()?;
        let pages = bytes.len().div_ceil(PAGE_BYTES);
        Some(DiskFile { bytes, synced_pages: vec![true; pages] })
    }
}

/// Runs inside every sync of a watched directory, before the sync itself.
pub type SyncHook = Arc<dyn Fn() + Send + Sync>;

struct Watched {
    directory: PathBuf,
    hook: Option<SyncHook>,
}

#[derive(Default)]
struct DiskModel {
    watched: Vec<Watched>,
    files: HashMap<PathBuf, DiskFile>,
}

impl DiskModel {
    fn file(&mut self, path: &Path) -> Option<&mut DiskFile> {
        if !self.files.contains_key(path) {
            let prepared = DiskFile::prepared(path)?;
            self.files.insert(path.to_path_buf(), prepared);
        }
        self.files.get_mut(path)
    }
}

static DISK: Mutex<Option<DiskModel>> = Mutex::new(None);

fn with_disk<R>(f: impl FnOnce(&mut DiskModel) -> R) -> R {
    let mut guard = DISK.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    f(guard.get_or_insert_with(DiskModel::default))
}

/// The path `/proc/self/maps` shows for files of `directory`.
pub fn canonical(directory: &Path) -> PathBuf {
    directory.canonicalize().unwrap_or_else(|error| panic!("{}: {error}", directory.display()))
}

/// Models the disk under `directory`: files already there or created later are taken
/// as the preparer leaves them, then changed by each sync.
pub fn watch(directory: &Path, hook: Option<SyncHook>) {
    install_sync_observer();
    let directory = canonical(directory);
    with_disk(|disk| disk.watched.push(Watched { directory, hook }));
}

/// [`watch`], taking the segment files already there as durable as they are now.
pub fn watch_as_is(directory: &Path) {
    install_sync_observer();
    let directory = canonical(directory);
    let files: Vec<(PathBuf, DiskFile)> = segment_names(&directory)
        .into_iter()
        .filter_map(|name| {
            let path = directory.join(name);
            DiskFile::as_is(&path).map(|file| (path, file))
        })
        .collect();
    with_disk(|disk| {
        disk.files.extend(files);
        disk.watched.push(Watched { directory, hook: None });
    });
}

pub fn unwatch(directory: &Path) {
    let directory = canonical(directory);
    with_disk(|disk| {
        disk.watched.retain(|watched| watched.directory != directory);
        disk.files.retain(|path, _| !path.starts_with(&directory));
    });
}

/// Unwatches a directory when dropped, also when a test fails.
pub struct WatchGuard(pub PathBuf);

impl Drop for WatchGuard {
    fn drop(&mut self) {
        unwatch(&self.0);
    }
}

fn read_at(path: &Path, offset: usize, length_bytes: usize) -> Option<Vec<u8>> {
    let file = std::fs::File::open(path).ok()?;
    let size_bytes = file.metadata().ok()?.len() as usize;
    let mut bytes = vec![0; length_bytes.min(size_bytes.saturating_sub(offset))];
    file.read_exact_at(&mut bytes, offset as u64).ok()?;
    Some(bytes)
}

/// Reports every msync of the log to the disk model (through the log's sync observer,
/// `segstore::fault::observe_syncs`). Idempotent.
pub fn install_sync_observer() {
    static INSTALL: std::sync::Once = std::sync::Once::new();
    INSTALL.call_once(|| {
        segstore::fault::observe_syncs(Some(Arc::new(
            |path: &Path, offset: u64, length_bytes: u64, sync: &mut dyn FnMut() -> std::io::Result<()>| {
                msync_hook(path, offset as usize, length_bytes as usize, sync)
            },
        )));
    });
}

/// Called for every msync of the page-aligned range `[offset, offset + length_bytes)` of
/// `path`; `sync` makes the real call.
pub fn msync_hook(path: &Path, offset: usize, length_bytes: usize, sync: &mut dyn FnMut() -> std::io::Result<()>) -> std::io::Result<()> {
    let path = match (path.parent().and_then(|parent| std::fs::canonicalize(parent).ok()), path.file_name()) {
        (Some(parent), Some(name)) => parent.join(name),
        _ => return sync(),
    };
    let watched = with_disk(|disk| disk.watched.iter().any(|watched| path.starts_with(&watched.directory)));
    if !watched {
        return sync();
    }
    // The kernel syncs whole pages. Every byte they hold as the sync starts is on the
    // disk once it returns; bytes changed meanwhile may or may not be (unsynced).
    let before = read_at(&path, offset, length_bytes.div_ceil(PAGE_BYTES) * PAGE_BYTES);
    let hook = with_disk(|disk| disk.watched.iter().find(|watched| path.starts_with(&watched.directory)).and_then(|w| w.hook.clone()));
    if let Some(hook) = hook {
        hook();
    }
    let result = sync();
    if let (Ok(()), Some(before)) = (&result, before) {
        with_disk(|disk| {
            if let Some(file) = disk.file(&path) {
                let end = (offset + before.len()).min(file.bytes.len());
                file.bytes[offset..end].copy_from_slice(&before[..end - offset]);
                for page in offset / PAGE_BYTES..end.div_ceil(PAGE_BYTES) {
                    file.synced_pages[page] = true;
                }
            }
        });
    }
    result
}

// ---------------------------------------------------------------------------------
// Captures

/// Segment file names of `directory`, in log order.
pub fn segment_names(directory: &Path) -> Vec<String> {
    let mut names: Vec<(u64, String)> = std::fs::read_dir(directory)
        .unwrap()
        .filter_map(|entry| {
            let name = entry.ok()?.file_name().into_string().ok()?;
            parse_file_name(&name).map(|(sequence, _)| (sequence, name))
        })
        .collect();
    names.sort();
    names.into_iter().map(|(_, name)| name).collect()
}

pub struct CapturedSegment {
    pub name: String,
    pub info: SegmentInfo,
    /// The page cache: every byte written.
    pub cache: Vec<u8>,
    /// The modelled disk.
    pub disk: Vec<u8>,
    pub synced_pages: Vec<bool>,
    /// Bytes of an earlier log's file of the same name (see [`Mode::Stale`]).
    pub stale: Option<Vec<u8>>,
}

/// One crash moment of a log.
pub struct Capture {
    pub label: String,
    /// Every record ending at or below this was acknowledged by a `wait_durable`.
    pub acked_position: u64,
    /// What the log said was durable.
    pub durable_position: u64,
    pub segments: Vec<CapturedSegment>,
}

/// A segment's name, disk bytes, synced pages and page cache bytes.
type FileCopy = (String, Vec<u8>, Vec<bool>, Vec<u8>);

/// Captures `directory` now; `positions` gives the acknowledged position, then the
/// log's durable position.
pub fn capture(directory: &Path, label: String, positions: impl FnOnce() -> (u64, u64)) -> Capture {
    let directory = canonical(directory);
    let names = segment_names(&directory);
    // One moment for the positions, the disk and the page cache: no sync is reported
    // meanwhile (the report waits for the lock), so nothing acknowledged, durable or
    // vouched for by a durable hint in the cache is missing from the copied disk.
    let ((acked_position, durable_position), copies): ((u64, u64), Vec<FileCopy>) = with_disk(|disk| {
        let positions = positions();
        let copies = names
            .into_iter()
            .filter_map(|name| {
                let path = directory.join(&name);
                let file = disk.file(&path)?;
                let (bytes, synced_pages) = (file.bytes.clone(), file.synced_pages.clone());
                let cache = std::fs::read(&path).ok()?;
                Some((name, bytes, synced_pages, cache))
            })
            .collect();
        (positions, copies)
    });
    let mut segments = Vec::new();
    for (name, disk, synced_pages, cache) in copies {
        let info = SegmentInfo::decode(&cache).unwrap_or_else(|reason| panic!("{label}: {name}: {reason}"));
        assert_eq!(cache.len(), disk.len(), "{label}: {name} changed size");
        segments.push(CapturedSegment { name, info, cache, disk, synced_pages, stale: None });
    }
    Capture { label, acked_position, durable_position, segments }
}

impl Capture {
    pub fn names(&self) -> Vec<String> {
        self.segments.iter().map(|segment| segment.name.clone()).collect()
    }

    /// Gives every segment the bytes of the earlier log's file of its name (zeros past
    /// the header if it has none).
    pub fn attach_stale(&mut self, stale: &HashMap<String, Vec<u8>>) {
        for segment in &mut self.segments {
            let mut bytes = stale.get(&segment.name).cloned().unwrap_or_default();
            bytes.resize(segment.cache.len(), 0);
            segment.stale = Some(bytes);
        }
    }
}

// ---------------------------------------------------------------------------------
// Images

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// A: each dirty 4 KiB page old or new.
    Pages,
    /// B: each dirty 512 B sector old or new.
    Sectors,
    /// C: each dirty sector old, new or (above every durable byte) garbage.
    Garbage,
    /// D: the files were reused: bytes never written by this log, on the disk or in the
    /// cache, are an earlier log's records at the same positions. Sectors old or new.
    Stale,
    /// E: a sector mix as B, plus one flipped bit in a durable record (a bad disk).
    Damage,
}

pub const MODES: [Mode; 5] = [Mode::Pages, Mode::Sectors, Mode::Garbage, Mode::Stale, Mode::Damage];

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fate {
    New,
    Old,
    Garbage,
}

#[derive(Clone, Copy, Debug)]
pub struct Unit {
    pub segment: usize,
    pub start: usize,
    pub end: usize,
    /// Garbage only where no durable byte is: under the failure model synced bytes stay.
    pub garbage_allowed: bool,
}

/// The bytes of every segment of a log, in order.
pub type Image<'a> = Vec<Cow<'a, [u8]>>;

/// The old and new bytes of every segment of a capture, and the units where they differ.
pub struct Versions<'a> {
    pub mode: Mode,
    pub new: Image<'a>,
    pub old: Image<'a>,
    pub units: Vec<Unit>,
}

/// The offset up to which `bytes` hold records: the published records from the first,
/// or past the last non-zero byte, whichever is further.
fn written_up_to(bytes: &[u8]) -> usize {
    let mut offset = HEADER_BYTES;
    while offset + record::RECORD_HEADER_SIZE <= bytes.len() {
        let word = u64::from_ne_bytes(bytes[offset..offset + 8].try_into().unwrap());
        match record::span_from_publication_word(word) {
            Some(span) if word != 0 && span >= record::RECORD_HEADER_SIZE as u64 && offset + span as usize <= bytes.len() => {
                offset += span as usize
            }
            _ => break,
        }
    }
    let non_zero = bytes.iter().rposition(|&byte| byte != 0).map_or(0, |at| (at / 8 + 1) * 8);
    offset.max(non_zero).max(HEADER_BYTES).min(bytes.len())
}

fn stale_versions(segment: &CapturedSegment) -> (Vec<u8>, Vec<u8>) {
    let stale = segment.stale.as_ref().expect("stale bytes attached to the capture");
    let mut new = segment.cache.clone();
    let cache_end = written_up_to(&segment.cache);
    new[cache_end..].copy_from_slice(&stale[cache_end..]);
    let mut old = stale.clone();
    old[..HEADER_BYTES].copy_from_slice(&segment.cache[..HEADER_BYTES]);
    let disk_end = written_up_to(&segment.disk);
    for (page, _) in segment.synced_pages.iter().enumerate().filter(|(_, &synced)| synced) {
        let range = page * PAGE_BYTES..((page + 1) * PAGE_BYTES).min(disk_end);
        if !range.is_empty() {
            old[range.clone()].copy_from_slice(&segment.disk[range]);
        }
    }
    (new, old)
}

pub fn versions(capture: &Capture, mode: Mode) -> Versions<'_> {
    let (new, old): (Image<'_>, Image<'_>) = match mode {
        Mode::Stale => capture
            .segments
            .iter()
            .map(|segment| {
                let (new, old) = stale_versions(segment);
                (Cow::Owned(new), Cow::Owned(old))
            })
            .unzip(),
        _ => capture.segments.iter().map(|segment| (Cow::Borrowed(&segment.cache[..]), Cow::Borrowed(&segment.disk[..]))).unzip(),
    };
    let unit_bytes = if mode == Mode::Pages { PAGE_BYTES } else { SECTOR_BYTES };
    let protected = capture.acked_position.max(capture.durable_position);
    let mut units = Vec::new();
    for (index, segment) in capture.segments.iter().enumerate() {
        // The log's durable position may lag the disk (read before the syncer moved it),
        // and what a sync wrote may already be vouched for: no garbage over it either.
        let synced_end = written_up_to(&segment.disk);
        for start in (0..segment.cache.len()).step_by(unit_bytes) {
            let end = (start + unit_bytes).min(segment.cache.len());
            if new[index][start..end] != old[index][start..end] {
                let garbage_allowed = start >= synced_end && segment.info.base_position + start as u64 >= protected;
                units.push(Unit { segment: index, start, end, garbage_allowed });
            }
        }
    }
    Versions { mode, new, old, units }
}

/// Every combination of old and new over `units` units, as bit masks (bit set: old).
pub fn all_masks(units: usize) -> impl Iterator<Item = u64> {
    assert!(units <= MAX_EXHAUSTIVE_UNITS);
    0..1u64 << units
}

pub fn fates_of_mask(units: usize, mask: u64) -> Vec<Fate> {
    (0..units).map(|unit| if mask >> unit & 1 == 1 { Fate::Old } else { Fate::New }).collect()
}

/// A random choice per unit, drawn from one of a few shapes: independent units, a
/// prefix written back in order, one hole.
pub fn random_fates(rng: &mut StdRng, units: &[Unit], garbage: bool) -> Vec<Fate> {
    let draw = |rng: &mut StdRng, unit: &Unit, p_old: f64| {
        if garbage && unit.garbage_allowed && rng.gen_bool(0.3) {
            Fate::Garbage
        } else if rng.gen_bool(p_old) {
            Fate::Old
        } else {
            Fate::New
        }
    };
    match rng.gen_range(0..4) {
        0 => {
            let p_old = rng.gen_range(0.1..0.9);
            units.iter().map(|unit| draw(rng, unit, p_old)).collect()
        }
        1 => {
            let written = rng.gen_range(0..=units.len());
            units.iter().enumerate().map(|(index, unit)| if index < written { Fate::New } else { draw(rng, unit, 1.0) }).collect()
        }
        2 if !units.is_empty() => {
            let hole = rng.gen_range(0..units.len());
            units.iter().enumerate().map(|(index, unit)| if index == hole { draw(rng, unit, 1.0) } else { Fate::New }).collect()
        }
        _ => units.iter().map(|unit| draw(rng, unit, 0.5)).collect(),
    }
}

/// The image `fates` describe; garbage is drawn from `garbage_seed`.
pub fn build<'a>(versions: &'a Versions<'a>, fates: &[Fate], garbage_seed: u64) -> Vec<Cow<'a, [u8]>> {
    let mut image: Vec<Cow<'a, [u8]>> = versions.new.iter().map(|bytes| Cow::Borrowed(&bytes[..])).collect();
    let mut rng = StdRng::seed_from_u64(garbage_seed);
    for (unit, fate) in versions.units.iter().zip(fates) {
        match fate {
            Fate::New => {}
            Fate::Old => {
                image[unit.segment].to_mut()[unit.start..unit.end].copy_from_slice(&versions.old[unit.segment][unit.start..unit.end])
            }
            Fate::Garbage => rng.fill(&mut image[unit.segment].to_mut()[unit.start..unit.end]),
        }
    }
    image
}

/// Which units an image changed, for a reproducer line.
pub fn describe(capture: &Capture, versions: &Versions<'_>, fates: &[Fate]) -> String {
    let changed: Vec<String> = versions
        .units
        .iter()
        .zip(fates)
        .filter(|(_, fate)| **fate != Fate::New)
        .map(|(unit, fate)| format!("{}@{}..{}={fate:?}", unit.segment, unit.start, unit.end))
        .collect();
    format!(
        "capture '{}' (acked {}, durable {}), mode {:?}, {} dirty units, not new: [{}]",
        capture.label,
        capture.acked_position,
        capture.durable_position,
        versions.mode,
        versions.units.len(),
        changed.join(" ")
    )
}

/// Flips one bit of a durable record in `image`; returns the record's position and
/// what was done, or `None` when the capture holds no durable record.
pub fn damage_durable_record(rng: &mut StdRng, capture: &Capture, image: &mut [Cow<'_, [u8]>], written: &Written) -> Option<(u64, String)> {
    let first = capture.segments.first()?.info.data_start_position();
    let durable: Vec<(u64, u64)> = written
        .range(first..capture.durable_position)
        .filter(|(_, record)| record.end <= capture.durable_position)
        .map(|(&position, record)| (position, record.end))
        .collect();
    let &(position, end) = durable.get(rng.gen_range(0..durable.len().max(1)))?;
    let segment =
        capture.segments.iter().position(|segment| segment.info.base_position <= position && position < segment.info.end_position())?;
    let at = rng.gen_range(position..end);
    let offset = (at - capture.segments[segment].info.base_position) as usize;
    let bit = rng.gen_range(0..8);
    image[segment].to_mut()[offset] ^= 1 << bit;
    Some((position, format!("bit {bit} of the byte at position {at} flipped (record at {position})")))
}

// ---------------------------------------------------------------------------------
// Checks

/// A record as written: what recovery must return byte for byte.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WrittenRecord {
    pub end: u64,
    pub kind: RecordKind,
    pub payload: Vec<u8>,
}

/// Every record appended, by position.
pub type Written = BTreeMap<u64, WrittenRecord>;

/// What recovery must make of an image.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Expect {
    /// A log holding at least everything acknowledged and durable.
    Recovers,
    /// A log ending exactly at this position (damage nothing vouches for).
    EndsAt(u64),
    /// Corruption reported in this segment at this offset.
    Corrupt { segment: usize, offset: u64 },
}

/// What recovery made of an image.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Recovered {
    pub end_position: u64,
    pub records: Vec<(u64, RecordKind, Vec<u8>)>,
}

fn image_paths(names: &[String]) -> Vec<PathBuf> {
    names.iter().map(PathBuf::from).collect()
}

/// Recovers `image` in memory and checks it against `written`: (b) a prefix of it, no
/// hole, nothing never written, and (c) so no stale or garbage record; (a) nothing
/// acknowledged or durable lost. Keeps the records when `keep`.
pub fn check_image(
    image: &[Cow<'_, [u8]>],
    names: &[String],
    written: &Written,
    floor: u64,
    expect: Expect,
    keep: bool,
) -> Result<Recovered, String> {
    let infos = image
        .iter()
        .zip(names)
        .map(|(bytes, name)| SegmentInfo::decode(bytes).map_err(|reason| format!("{name}: header: {reason}")))
        .collect::<Result<Vec<_>, _>>()?;
    let paths = image_paths(names);
    let sources: Vec<SegmentSource<'_, [u8]>> =
        infos.iter().zip(image).zip(&paths).map(|((info, bytes), path)| SegmentSource { info: *info, path, source: &bytes[..] }).collect();
    let first = infos[0].data_start_position();
    let mut expected = written.range(first..).peekable();
    let mut mismatch: Option<String> = None;
    let mut recovered = Recovered::default();
    let result = find_log_end(&sources, &mut |_, record| {
        if mismatch.is_some() {
            return;
        }
        match expected.next() {
            Some((&position, want)) if position == record.position && want.kind == record.kind && want.payload == record.payload => {
                if keep {
                    recovered.records.push((position, record.kind, record.payload.to_vec()));
                }
            }
            Some((&position, want)) if position == record.position => {
                mismatch = Some(format!(
                    "recovered a record at {position} ({} bytes, kind {}) other than the one written there ({} bytes, kind {})",
                    record.payload.len(),
                    record.kind.0,
                    want.payload.len(),
                    want.kind.0
                ))
            }
            Some((&position, _)) => {
                mismatch =
                    Some(format!("recovered a record at {} where none was written (the next written is at {position})", record.position))
            }
            None => mismatch = Some(format!("recovered a record at {} past everything written", record.position)),
        }
    });
    if let Some(mismatch) = mismatch {
        return Err(mismatch);
    }
    let end = match (result, expect) {
        (Ok(end), Expect::Corrupt { segment, offset }) => {
            return Err(format!(
                "recovered to segment {} offset {} ({:?}), but {} offset {offset} is damage below a durable point",
                end.segment_index, end.offset, end.torn, names[segment]
            ))
        }
        (Err(Error::Corrupt { path, offset, .. }), Expect::Corrupt { segment, offset: want }) => {
            if path != paths[segment] || offset != want {
                return Err(format!(
                    "corruption reported at {} offset {offset}, expected {} offset {want}",
                    path.display(),
                    names[segment]
                ));
            }
            return Ok(recovered);
        }
        (Err(error), _) => return Err(format!("recovery failed: {error}")),
        (Ok(end), _) => end,
    };
    let info = infos[end.segment_index];
    recovered.end_position = if end.sealed { info.end_position() } else { info.base_position + end.offset };
    if let Some((&position, _)) = expected.peek() {
        if position < recovered.end_position {
            return Err(format!("hole: the record at {position} is missing, but recovery went on to {}", recovered.end_position));
        }
    }
    match expect {
        Expect::EndsAt(at) if recovered.end_position != at => {
            return Err(format!("recovery ended at {}, expected exactly {at} ({:?})", recovered.end_position, end.torn))
        }
        Expect::EndsAt(_) => {}
        _ if recovered.end_position < floor => {
            return Err(format!(
                "acknowledged or durable records lost: recovery ended at {} ({:?}) below {floor}",
                recovered.end_position, end.torn
            ))
        }
        _ => {}
    }
    Ok(recovered)
}

/// What the rules of `recovery.rs` say about damage to the record at `damaged`: a valid
/// record of this log in a later segment, or past it in its segment with a durable hint
/// above it, proves the damaged bytes were durable.
pub fn damage_verdict(image: &[Cow<'_, [u8]>], written: &Written, damaged: u64) -> Expect {
    let infos: Vec<SegmentInfo> = image.iter().map(|bytes| SegmentInfo::decode(bytes).unwrap()).collect();
    let segment_of = |position: u64| infos.iter().position(|info| info.base_position <= position && position < info.end_position());
    let Some(damaged_segment) = segment_of(damaged) else { return Expect::EndsAt(damaged) };
    // Candidates: every data record written, and a seal after the last one of each segment.
    let mut candidates: Vec<u64> = written.range(damaged + 1..).map(|(&position, _)| position).collect();
    for info in &infos {
        let last_end =
            written.range(info.base_position..info.end_position()).next_back().map_or(info.data_start_position(), |(_, r)| r.end);
        candidates.push(last_end);
    }
    for position in candidates {
        let Some(segment) = segment_of(position) else { continue };
        if segment < damaged_segment || (segment == damaged_segment && position <= damaged) {
            continue;
        }
        let info = infos[segment];
        let offset = (position - info.base_position) as usize;
        if offset + record::RECORD_HEADER_SIZE > image[segment].len() {
            continue;
        }
        let expected = Expected { generation: info.generation, position };
        if let Decoded::Record(found) = record::decode(&image[segment][offset..], expected) {
            if found.kind == RecordKind::PADDING && offset as u64 + found.span_bytes != info.size_bytes {
                continue;
            }
            if segment > damaged_segment || found.durable_hint > damaged {
                return Expect::Corrupt { segment: damaged_segment, offset: damaged - infos[damaged_segment].base_position };
            }
        }
    }
    Expect::EndsAt(damaged)
}

/// Writes an image's segment files into `directory`.
pub fn write_image(directory: &Path, names: &[String], image: &[Cow<'_, [u8]>]) {
    std::fs::create_dir_all(directory).unwrap();
    for (name, bytes) in names.iter().zip(image) {
        std::fs::write(directory.join(name), bytes).unwrap();
    }
}

fn log_records(log: &Log) -> Result<Vec<(u64, RecordKind, Vec<u8>)>, String> {
    log.iter_from(Position(0))
        .map(|record| record.map(|record| (record.position.0, record.kind, record.payload)))
        .collect::<Result<_, _>>()
        .map_err(|e| e.to_string())
}

/// Recovery on files through the real opens: a read-only open and two writable ones
/// (idempotence) must all find the records recovered in memory. Leaves the directory
/// as the second open left it; returns where appends continue.
pub fn check_on_disk(directory: &Path, options: &Options, in_memory: &Recovered) -> Result<u64, String> {
    let read_only = Log::open_read_only(directory).map_err(|error| format!("read-only open: {error}"))?;
    if log_records(&read_only)? != in_memory.records {
        return Err("a read-only open recovered other records than recovery in memory".into());
    }
    drop(read_only);
    let mut append_positions = Vec::new();
    for attempt in ["first", "second"] {
        let log = Log::open(directory, options.clone()).map_err(|error| format!("{attempt} open: {error}"))?;
        if log_records(&log)? != in_memory.records {
            return Err(format!("the {attempt} open recovered other records than recovery in memory"));
        }
        let append_position = log.recovery_report().append_position.0;
        if append_position < in_memory.end_position {
            return Err(format!("the {attempt} open appends at {append_position}, inside the recovered log"));
        }
        append_positions.push(append_position);
    }
    if append_positions[0] != append_positions[1] {
        return Err(format!("opens are not idempotent: appends continue at {append_positions:?}"));
    }
    Ok(append_positions[0])
}

// ---------------------------------------------------------------------------------
// Reporting

/// The seed of a crash-image run: `SEGSTORE_CRASH_SEED` when set, a fresh one otherwise.
pub fn crash_seed() -> u64 {
    match std::env::var("SEGSTORE_CRASH_SEED") {
        Ok(text) => text.trim().parse().unwrap_or_else(|_| panic!("SEGSTORE_CRASH_SEED={text:?} is not a u64")),
        Err(_) => super::test_seed(),
    }
}

/// Failed images of one test: the first few are saved with a reproducer line.
pub struct Failures {
    pub test: &'static str,
    pub seed: u64,
    pub lines: Vec<String>,
    pub count: usize,
}

impl Failures {
    pub fn new(test: &'static str, seed: u64) -> Self {
        Failures { test, seed, lines: Vec::new(), count: 0 }
    }

    pub fn record(&mut self, description: &str, error: &str, image: Option<(&[String], &Image<'_>)>) {
        self.count += 1;
        if self.lines.len() >= 5 {
            return;
        }
        let saved = image.map(|(names, image)| {
            let directory = std::env::temp_dir().join(format!("segstore-crash-{}-{}-{}", self.test, self.seed, self.lines.len()));
            let _ = std::fs::remove_dir_all(&directory);
            write_image(&directory, names, image);
            format!("; image saved in {}", directory.display())
        });
        let line = format!(
            "{error}\n    reproduce: SEGSTORE_CRASH_SEED={} cargo test --all-features --test crash_images {} -- --nocapture\n    image: {description}{}",
            self.seed,
            self.test,
            saved.unwrap_or_default()
        );
        eprintln!("FAILED {line}");
        self.lines.push(line);
    }

    pub fn is_full(&self) -> bool {
        self.count >= 50
    }

    pub fn finish(self) {
        assert!(self.count == 0, "{} failed images (seed {}); the first:\n{}", self.count, self.seed, self.lines.join("\n"));
    }
}

/// Images checked per mode, and on files.
#[derive(Default)]
pub struct Counts {
    pub by_mode: [u64; 5],
    /// Captures and modes whose every old/new combination was checked.
    pub exhaustive_cases: u64,
    pub on_disk: u64,
    pub crash_again: u64,
    /// Images whose recovery discarded records the page cache held (a torn tail).
    pub tails_discarded: u64,
    /// Images whose damage recovery had to report, and did.
    pub corruption_reported: u64,
}

impl Counts {
    pub fn add(&mut self, mode: Mode) {
        self.by_mode[MODES.iter().position(|&m| m == mode).unwrap()] += 1;
    }

    pub fn total(&self) -> u64 {
        self.by_mode.iter().sum()
    }

    pub fn report(&self, test: &str, elapsed: std::time::Duration) -> String {
        let per_mode: Vec<String> = MODES.iter().zip(self.by_mode).map(|(mode, count)| format!("{mode:?} {count}")).collect();
        format!(
            "{test}: {} images in {:.2?} ({:.0} images/s; {}); {} cases enumerated exhaustively; {} with a torn tail discarded, {} with corruption \
             reported; {} recovered on files, {} of them crashed again after recovery",
            self.total(),
            elapsed,
            self.total() as f64 / elapsed.as_secs_f64(),
            per_mode.join(", "),
            self.exhaustive_cases,
            self.tails_discarded,
            self.corruption_reported,
            self.on_disk,
            self.crash_again
        )
    }
}

/// An earlier log of `segment_size_bytes` segments written where this one's records
/// are (the same sizes at the same positions, another generation and other bytes), and
/// on past `end`: the old bytes of reused files. Returns its files by name.
pub fn earlier_log(written: &Written, segment_size_bytes: u64, end: u64, seed: u64) -> HashMap<String, Vec<u8>> {
    let mut rng = StdRng::seed_from_u64(seed ^ 0x51a1e);
    let directory = tempfile::tempdir().unwrap();
    let options = Options { segment_size_bytes, sync_mode: segstore::SyncMode::None };
    let log = Log::open(directory.path(), options).unwrap();
    let kind = RecordKind(16);
    let stale_payload = |rng: &mut StdRng, size: usize| -> Vec<u8> {
        let mut bytes = vec![0u8; size];
        rng.fill(&mut bytes[..]);
        bytes
    };
    for (&position, record) in written.range(SEGMENT_HEADER_SIZE..) {
        // Cut where this log's segments end early (a cut, or a record that did not fit).
        while log.published_position().0 / segment_size_bytes < position / segment_size_bytes {
            log.cut().unwrap();
        }
        if log.published_position().0 != position {
            continue;
        }
        log.append(kind, &stale_payload(&mut rng, record.payload.len())).unwrap();
    }
    while log.published_position().0 < end + 2 * segment_size_bytes {
        let size = rng.gen_range(0..1500);
        log.append(kind, &stale_payload(&mut rng, size)).unwrap();
    }
    drop(log);
    segment_names(directory.path()).into_iter().map(|name| (name.clone(), std::fs::read(directory.path().join(&name)).unwrap())).collect()
}
