//! The log: opening (with recovery), appending, group-committed durability, cut,
//! reading and purging, over the segments of one directory.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use crate::commit::GroupCommit;
use crate::dir_lock::DirLock;
use crate::error::{Error, Result};
use crate::fs;
use crate::mapping::{Claim, Cursor, ReserveError, RotationFailed, SegmentMap};
use crate::options::{Options, SyncMode};
use crate::preparer::{prefault_lead_bytes, zero_fill_head_bytes, Current, Maker, Preparer};
use crate::reader::{all_zero, ReadBuffer, SegmentReader, Step, READ_CHUNK_BYTES};
use crate::record::{self, RecordFlags, RecordKind, RECORD_HEADER_SIZE};
use crate::recovery::{self, LogEnd, SegmentSource};
use zerocopy::FromBytes;

use crate::segment::{self, SegmentFile, SegmentInfo, SEGMENT_HEADER_SIZE, SEGMENT_SUFFIX, TEMPORARY_SUFFIX};

/// Bytes of a segment a writer faults in ahead of itself when it has outrun the
/// preparer (which faults whole segments in, see `preparer.rs`), in no-sync mode only:
/// fdatasync would write the pre-dirtied zero pages back with every sync (device bytes
/// per 64 x 1 KiB save: 71 -> 139 KiB), and with msync the writer that faults a window
/// in pays ~200 us for it (a save of 64 x 1 KiB saw its p99 double). With msync the
/// preparer keeps a bounded lead faulted in instead (`preparer::prefault_lead_bytes`),
/// which only paid once syncs dropped their pages from the page tables: before, each
/// page msync write-protected needed a TLB-shootdown IPI to the preparer's CPU while
/// it ran, about what the faults it saved had cost.
const PREFAULT_WINDOW_BYTES: u64 = 1 << 20;

/// Appends ask the preparer to keep pages faulted in ahead of them (msync) only while
/// the syncs cover at least this much (8 pages): then the appends between two syncs
/// took several faults. Small saves take a fault only every few syncs, and the preparer
/// faulting 1 MiB in beside them (256 faults, at ~2 µs each about 0.5 ms of its CPU)
/// delayed the saves it overlapped more than it saved: W6 p99.9 with cuts went from
/// 1.18x and 1.14x to 1.41x and 1.35x the run without, in alternating runs. So did W3's
/// 64 writers, whose syncs cover at most 64 saves of ~300 B (19 KiB), a page per dozen
/// saves: 95k and 102k saves/s with a 16 KiB threshold against 112k and 111k without
/// faulting ahead.
const PREFAULT_MIN_SYNC_BYTES: u64 = 32 << 10;

/// Bytes past the log end that opening zero-fills in the segment appends continue in
/// (whatever a previous run zero-filled there is not known): the first appends need
/// not wait for the preparer, which takes over from there.
const OPEN_ZERO_FILL_BYTES: u64 = 1 << 20;

/// A place in the log, in bytes from the start of the log's first segment ever.
/// Positions only grow; a record's position never changes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Position(pub u64);

/// Where an appended record went.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Appended {
    /// The record's position: read it back with [`Log::read`].
    pub position: Position,
    /// The position just past it: the record is durable once [`Log::wait_durable`] of
    /// this position returns.
    pub end: Position,
}

/// A data record read back from the log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Record {
    pub position: Position,
    pub end: Position,
    pub kind: RecordKind,
    pub payload: Vec<u8>,
}

/// What opening a log found and did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RecoveryReport {
    /// Data records in the recovered log.
    pub data_records: u64,
    /// Segment files in the log after recovery.
    pub segments: usize,
    /// Bytes past the valid log that were discarded as a torn tail (zeroed, or deleted
    /// with later segments that held nothing durable).
    pub torn_tail: Option<String>,
    /// Where appends continue.
    pub append_position: Position,
}

/// One segment file of the log.
#[derive(Debug)]
pub(crate) struct Segment {
    pub info: SegmentInfo,
    pub path: PathBuf,
    pub file: File,
    /// Every segment is mapped: appended-to ones for writing, all for zero-copy reads.
    pub map: Arc<SegmentMap>,
}

struct Appender {
    cursor: Cursor,
    preparer: Preparer,
}

/// A segmented write-ahead log in one directory. `Send + Sync`: share it (in an `Arc`)
/// between any number of appending, syncing and reading threads.
pub struct Log {
    directory: PathBuf,
    options: Options,
    segments: Mutex<Vec<Arc<Segment>>>,
    appender: Option<Appender>,
    commit: GroupCommit,
    /// Every byte below is published (writable) or recovered (read-only).
    published_position: AtomicU64,
    /// The last sync covered [`PREFAULT_MIN_SYNC_BYTES`] or more: appends ask the
    /// preparer to keep pages faulted in ahead of them (msync only).
    syncs_are_large: AtomicBool,
    report: RecoveryReport,
    _lock: DirLock,
}

impl std::fmt::Debug for Log {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Log")
            .field("directory", &self.directory)
            .field("durable_position", &self.commit.durable_position())
            .field("published_position", &self.published_position.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl Log {
    /// Opens the log in `directory` for appending, creating the directory and the first
    /// segment if needed. Recovers: a torn tail is discarded (zeroed and synced before
    /// any new append); corruption fails the open with the file and offset.
    pub fn open(directory: impl AsRef<Path>, options: Options) -> Result<Log> {
        Self::open_with(directory, options, &mut |_, _, _| {})
    }

    /// [`Log::open`], calling `visit` with the position, kind and payload of every data
    /// record of the recovered log, in order, during the one scan recovery makes anyway.
    pub fn open_with(directory: impl AsRef<Path>, options: Options, visit: &mut dyn FnMut(Position, RecordKind, &[u8])) -> Result<Log> {
        options.validate()?;
        let directory = directory.as_ref().to_path_buf();
        std::fs::create_dir_all(&directory).map_err(|source| Error::io("create directory", &directory, source))?;
        let dir_lock = DirLock::acquire(&directory, true)?;
        remove_temporary_files(&directory)?;
        let mut files = open_segment_files(&directory, true)?;
        let zero_fill_new = |size_bytes: u64| zero_fill_head_bytes(size_bytes, options.sync_mode == SyncMode::None, Maker::Open);
        let mut created = None;
        if files.is_empty() {
            let info = SegmentInfo {
                sequence: 0,
                base_position: 0,
                size_bytes: options.segment_size_bytes,
                generation: segment::new_generation(0),
            };
            files.push(segment::prepare(&directory, info, zero_fill_new(info.size_bytes), &mut || {})?);
            created = Some(info.sequence);
        }
        let end = find_end(&files, visit)?;
        let torn_tail = discard_torn_tail(&directory, &mut files, &end)?;
        let mut last = files.pop().expect("recovery keeps at least one segment");
        let mut append_offset = end.offset;
        let needs_new_segment = end.sealed || last.info.size_bytes != options.segment_size_bytes;
        if needs_new_segment {
            if !end.sealed {
                seal_at(&last, append_offset)?;
            }
            let info = SegmentInfo {
                sequence: last.info.sequence + 1,
                base_position: last.info.end_position(),
                size_bytes: options.segment_size_bytes,
                generation: segment::new_generation(last.info.sequence + 1),
            };
            files.push(last);
            last = segment::prepare(&directory, info, zero_fill_new(info.size_bytes), &mut || {})?;
            created = Some(info.sequence);
            append_offset = SEGMENT_HEADER_SIZE;
        }
        // A segment found on disk may have been renamed into place by a preparer whose
        // directory sync never happened; its name must be durable before a record in it
        // is acknowledged.
        fs::sync_directory(&directory)?;
        let map = SegmentMap::map_file(&last.file, last.info.size_bytes, last.info.base_position, last.info.generation, append_offset)
            .map_err(|source| Error::io("map segment", &last.path, source))?;
        // The preparer's wake-up word: the segment the log opens in is mapped with it.
        let wake = Arc::default();
        let prefault_lead = prefault_lead_bytes(options.sync_mode);
        let (map, current) = if options.sync_mode == SyncMode::None {
            let map = Arc::new(map);
            (Arc::clone(&map), Current::FaultIn(map))
        } else {
            let writable_offset = if created == Some(last.info.sequence) {
                let head_bytes = zero_fill_new(last.info.size_bytes);
                fs::drop_cached(&last.file, head_bytes, last.info.size_bytes);
                head_bytes
            } else {
                zero_fill_past_end(&last, append_offset)?
            };
            let map = Arc::new(Preparer::zero_fill_ahead(map, writable_offset, &wake, prefault_lead));
            (Arc::clone(&map), Current::ZeroFill(map, last.path.clone()))
        };
        let cursor = Cursor::new(Arc::clone(&map), append_offset, SEGMENT_HEADER_SIZE);
        let append_position = last.info.base_position + append_offset;
        let preparer = Preparer::start(
            directory.clone(),
            last.info.sequence + 1,
            last.info.end_position(),
            options.segment_size_bytes,
            wake,
            current,
            prefault_lead,
        )?;
        let mut segments = Vec::with_capacity(files.len() + 1);
        for file in files {
            // Every segment before the last is sealed: published to its end.
            let size_bytes = file.info.size_bytes;
            let map = SegmentMap::map_file(&file.file, size_bytes, file.info.base_position, file.info.generation, size_bytes)
                .map_err(|source| Error::io("map segment", &file.path, source))?;
            segments.push(Arc::new(into_segment(file, Arc::new(map))));
        }
        segments.push(Arc::new(into_segment(last, map)));
        let report = RecoveryReport {
            data_records: end.data_records,
            segments: segments.len(),
            torn_tail,
            append_position: Position(append_position),
        };
        Ok(Log {
            directory,
            options,
            segments: Mutex::new(segments),
            appender: Some(Appender { cursor, preparer }),
            commit: GroupCommit::new(append_position),
            published_position: AtomicU64::new(append_position),
            syncs_are_large: AtomicBool::new(false),
            report,
            _lock: dir_lock,
        })
    }

    /// Opens the log in `directory` for reading only: nothing on disk is changed, and
    /// the log ends where its valid records end. Shares the directory with other
    /// read-only opens, not with a writable one.
    pub fn open_read_only(directory: impl AsRef<Path>) -> Result<Log> {
        Self::open_read_only_with(directory, &mut |_, _, _| {})
    }

    /// [`Log::open_read_only`] with a visitor, as [`Log::open_with`].
    pub fn open_read_only_with(directory: impl AsRef<Path>, visit: &mut dyn FnMut(Position, RecordKind, &[u8])) -> Result<Log> {
        let directory = directory.as_ref().to_path_buf();
        let dir_lock = DirLock::acquire(&directory, false)?;
        let files = open_segment_files(&directory, false)?;
        if files.is_empty() {
            return Err(Error::io("open log", &directory, std::io::ErrorKind::NotFound.into()));
        }
        let end = find_end(&files, visit)?;
        let end_segment = &files[end.segment_index];
        let end_position = end_segment.info.base_position + end.offset;
        let torn_tail = end.torn.map(|invalid| format!("{} at offset {}: {invalid}", end_segment.path.display(), end.offset));
        let mut segments = Vec::with_capacity(end.segment_index + 1);
        for (index, file) in files.into_iter().take(end.segment_index + 1).enumerate() {
            let published_offset = if index == end.segment_index { end.offset } else { file.info.size_bytes };
            let info = file.info;
            let map = SegmentMap::map_file_read_only(&file.file, info.size_bytes, info.base_position, info.generation, published_offset)
                .map_err(|source| Error::io("map segment", &file.path, source))?;
            segments.push(Arc::new(into_segment(file, Arc::new(map))));
        }
        let report =
            RecoveryReport { data_records: end.data_records, segments: segments.len(), torn_tail, append_position: Position(end_position) };
        let options = Options { segment_size_bytes: segments[0].info.size_bytes, sync_mode: SyncMode::None };
        Ok(Log {
            directory,
            options,
            segments: Mutex::new(segments),
            appender: None,
            commit: GroupCommit::new(end_position),
            published_position: AtomicU64::new(end_position),
            syncs_are_large: AtomicBool::new(false),
            report,
            _lock: dir_lock,
        })
    }

    /// What recovery found when this log was opened.
    pub fn recovery_report(&self) -> &RecoveryReport {
        &self.report
    }

    pub fn directory(&self) -> &Path {
        &self.directory
    }

    /// Whether the log was opened read-only.
    pub fn is_read_only(&self) -> bool {
        self.appender.is_none()
    }

    /// The largest payload one record may carry.
    pub fn max_payload_bytes(&self) -> u64 {
        match &self.appender {
            Some(appender) => appender.cursor.max_payload_bytes(),
            None => 0,
        }
    }

    fn appender(&self) -> Result<&Appender> {
        if self.commit.is_poisoned() {
            return Err(self.commit.poison_error().expect("poisoned implies a cause"));
        }
        self.appender.as_ref().ok_or(Error::ReadOnly)
    }

    /// Appends a data record (not yet durable: see [`Log::wait_durable`]). The payload
    /// is checksummed as it is copied into the mapped segment, in one pass.
    pub fn append(&self, kind: RecordKind, payload: &[u8]) -> Result<Appended> {
        let (claim, durable_hint) = self.reserve(kind, payload.len())?;
        let position = claim.position();
        let end = claim.publish_copy(kind, durable_hint, payload);
        Ok(Appended { position: Position(position), end: Position(end) })
    }

    /// Appends a data record of `payload_bytes`, letting `encode` write the payload
    /// straight into the mapped segment: no intermediate buffer, no lock. `encode` gets
    /// exactly `payload_bytes` of zeroed memory. If it panics, the room is published as
    /// a skip record and the log carries on. `encode` must not append to this log.
    pub fn append_with<R>(&self, kind: RecordKind, payload_bytes: usize, encode: impl FnOnce(&mut [u8]) -> R) -> Result<(Appended, R)> {
        let (mut claim, durable_hint) = self.reserve(kind, payload_bytes)?;
        let output = claim.fill(encode);
        let position = claim.position();
        let end = claim.publish(kind, durable_hint);
        Ok((Appended { position: Position(position), end: Position(end) }, output))
    }

    /// Claims room for a data record of `payload_bytes`; returns the claim and the
    /// durable hint its header is to carry (read before the claim: see `recovery.rs`).
    fn reserve(&self, kind: RecordKind, payload_bytes: usize) -> Result<(Claim<'_>, u64)> {
        if !kind.is_data() {
            return Err(Error::invalid(format!("record kind {} is reserved for the log itself", kind.0)));
        }
        let appender = self.appender()?;
        let durable_hint = self.commit.durable_position();
        let claim = appender.cursor.reserve(payload_bytes, durable_hint, &mut || self.next_segment()).map_err(|error| match error {
            ReserveError::TooLarge { .. } => {
                Error::RecordTooLarge { payload_bytes: payload_bytes as u64, limit_bytes: appender.cursor.max_payload_bytes() }
            }
            ReserveError::RotationFailed | ReserveError::ZeroFillFailed => self.rotation_failure(),
        })?;
        if self.options.sync_mode == SyncMode::None {
            claim.prefault_ahead(PREFAULT_WINDOW_BYTES);
        } else if self.syncs_are_large.load(Ordering::Relaxed) {
            claim.want_prefaulted();
        }
        Ok((claim, durable_hint))
    }

    /// Appends a record and waits until it is durable.
    pub fn append_durable(&self, kind: RecordKind, payload: &[u8]) -> Result<Appended> {
        let appended = self.append(kind, payload)?;
        self.wait_durable(appended.end)?;
        Ok(appended)
    }

    /// Returns once every byte below `position` is durable: this thread either syncs
    /// (everything published so far, in one call) or waits for the sync in progress.
    pub fn wait_durable(&self, position: Position) -> Result<()> {
        let appender = self.appender()?;
        if position.0 > appender.cursor.end_position() {
            return Err(Error::invalid(format!("position {} lies beyond anything appended", position.0)));
        }
        self.commit.wait_durable(position.0, &|| self.published_frontier(), &|from, to| self.sync_range(from, to))
    }

    /// Blocks until the background preparer is idle: the next segment is prepared (or
    /// its preparation failed), the current one is zero-filled to its end and, with
    /// [`SyncMode::None`], the mappings are faulted in. For warming a log up before a
    /// burst, and for benchmarks that time appends without the preparation running
    /// beside them. Returns at once on a read-only log.
    pub fn wait_for_preparation(&self) {
        if let Some(appender) = &self.appender {
            let current = Arc::clone(&lock(&self.segments).last().expect("a log has segments").map);
            appender.preparer.wait_idle(&current);
        }
    }

    /// Seals the current segment and continues in the next (already prepared) one.
    pub fn cut(&self) -> Result<()> {
        let appender = self.appender()?;
        let durable_hint = self.commit.durable_position();
        appender.cursor.cut(durable_hint, &mut || self.next_segment()).map_err(|RotationFailed| self.rotation_failure())
    }

    /// The error of a rotation or zero-fill that failed, poisoning the log with it.
    fn rotation_failure(&self) -> Error {
        if let Some(error) = self.commit.poison_error() {
            return error;
        }
        let cause = self.appender.as_ref().and_then(|appender| appender.preparer.failure());
        self.commit.poison(cause.map_or_else(|| Error::invalid("segment rotation failed"), |cause| Error::Poisoned { cause }))
    }

    /// Called by the one writer whose reservation sealed the current segment.
    fn next_segment(&self) -> Result<Arc<SegmentMap>, RotationFailed> {
        let result = (|| {
            let appender = self.appender.as_ref().expect("only writable logs rotate");
            // Recovery relies on it: a segment is wholly durable before its successor
            // takes a record, so damage in a segment with a successor is corruption.
            let sealed_end = lock(&self.segments).last().expect("a log has segments").info.end_position();
            self.commit.wait_durable(sealed_end, &|| self.published_frontier(), &|from, to| self.sync_range(from, to))?;
            let prepared = appender.preparer.take()?;
            lock(&self.segments).push(Arc::new(into_segment(prepared.file, Arc::clone(&prepared.map))));
            Ok(prepared.map)
        })();
        result.map_err(|error| {
            self.commit.poison(error);
            RotationFailed
        })
    }

    /// Advances and returns the published frontier: every byte below it is published.
    fn published_frontier(&self) -> u64 {
        let segments = lock(&self.segments);
        let mut position = self.published_position.load(Ordering::Acquire);
        let mut index = segments.partition_point(|segment| segment.info.end_position() <= position);
        while let Some(segment) = segments.get(index) {
            let offset = segment.map.advance_published();
            position = position.max(segment.info.base_position + offset);
            if offset < segment.info.size_bytes {
                break;
            }
            index += 1;
        }
        self.published_position.fetch_max(position, Ordering::AcqRel);
        position
    }

    /// Makes `[from, to)` durable with the configured sync mode.
    fn sync_range(&self, from: u64, to: u64) -> Result<()> {
        let large = to - from >= PREFAULT_MIN_SYNC_BYTES;
        if self.syncs_are_large.load(Ordering::Relaxed) != large {
            self.syncs_are_large.store(large, Ordering::Relaxed);
        }
        let overlapping: Vec<Arc<Segment>> = lock(&self.segments)
            .iter()
            .filter(|segment| segment.info.base_position < to && from < segment.info.end_position())
            .cloned()
            .collect();
        for segment in overlapping {
            let start = from.max(segment.info.base_position) - segment.info.base_position;
            let mut end = to.min(segment.info.end_position()) - segment.info.base_position;
            if let Some(sealed_offset) = segment.map.sealed_offset() {
                // Past its header, the padding that seals a segment is never read: its
                // bytes need not be durable, and the pages faulted in ahead of the
                // appends there are dirty zeros not worth writing back.
                end = end.min(sealed_offset + RECORD_HEADER_SIZE as u64);
                if end <= start {
                    continue;
                }
            }
            match self.options.sync_mode {
                SyncMode::Msync => {
                    segment.map.unmap_pages(start, end - start);
                    fs::msync(&segment.map, start, end - start, &segment.path)?
                }
                SyncMode::Fdatasync => {
                    segment.map.unmap_pages(start, end - start);
                    fs::fdatasync(&segment.file, &segment.path)?
                }
                SyncMode::None => {}
            }
        }
        Ok(())
    }

    /// Every byte below this position is durable.
    pub fn durable_position(&self) -> Position {
        Position(self.commit.durable_position())
    }

    /// Every record below this position is published (complete and readable).
    pub fn published_position(&self) -> Position {
        if self.appender.is_some() {
            Position(self.published_frontier())
        } else {
            Position(self.published_position.load(Ordering::Acquire))
        }
    }

    /// The position of the first record still in the log.
    pub fn first_position(&self) -> Position {
        Position(lock(&self.segments)[0].info.data_start_position())
    }

    /// Segment files in the log.
    pub fn segment_count(&self) -> usize {
        lock(&self.segments).len()
    }

    fn segment_at(&self, position: u64) -> Option<Arc<Segment>> {
        let segments = lock(&self.segments);
        let index = segments.partition_point(|segment| segment.info.end_position() <= position);
        segments.get(index).filter(|segment| segment.info.base_position <= position).cloned()
    }

    /// Reads the data record at `position`: any record whose append has returned, even
    /// while a record below it is still being written.
    pub fn read(&self, position: Position) -> Result<Record> {
        // A read-only log ends where its valid records end; past that lie bytes recovery
        // did not accept. A writable log zeroed those at open, so everything valid in it
        // was published by this process.
        let readable_end = match &self.appender {
            Some(appender) => appender.cursor.end_position(),
            None => self.published_position.load(Ordering::Acquire),
        };
        let segment = self.segment_at(position.0).ok_or_else(|| Error::invalid(format!("no segment holds position {}", position.0)))?;
        let offset = position.0 - segment.info.base_position;
        if position.0 >= readable_end || offset < SEGMENT_HEADER_SIZE || !offset.is_multiple_of(record::RECORD_ALIGNMENT as u64) {
            return Err(Error::invalid(format!("no record at position {}", position.0)));
        }
        let mut buffer = ReadBuffer::new(4096);
        let mut reader = SegmentReader::new(&segment.file, &segment.path, segment.info, &mut buffer);
        match reader.step(offset)? {
            Step::Record(found) if found.kind.is_data() && position.0 + found.span_bytes <= readable_end => {
                Ok(Record { position, end: Position(position.0 + found.span_bytes), kind: found.kind, payload: found.payload.to_vec() })
            }
            Step::Record(_) => Err(Error::invalid(format!("no data record at position {}", position.0))),
            Step::Unwritten => Err(Error::invalid(format!("no record published at position {}", position.0))),
            // Below the published frontier bytes are final, so a bad record is damage; above
            // it, the position may simply not start a record (or one still being written).
            Step::Invalid(invalid) if position.0 < self.published_position().0 => {
                Err(Error::corrupt(&segment.path, offset, invalid.to_string()))
            }
            Step::Invalid(invalid) => Err(Error::invalid(format!("no record published at position {}: {invalid}", position.0))),
        }
    }

    /// The kind and payload of the data record at `position`, without copying: the
    /// `Bytes` shares the mapped segment and keeps it mapped (even once released). The
    /// record's checksum is verified. Falls back to [`Log::read`] (a copy) for a record
    /// whose append returned while one below it is still being written.
    pub fn read_shared(&self, position: Position) -> Result<(RecordKind, bytes::Bytes)> {
        let segment = self.segment_at(position.0).ok_or_else(|| Error::invalid(format!("no segment holds position {}", position.0)))?;
        let offset = position.0 - segment.info.base_position;
        let frontier = match &self.appender {
            Some(_) if position.0 >= self.published_position.load(Ordering::Acquire) => self.published_frontier(),
            _ => self.published_position.load(Ordering::Acquire),
        };
        let published = position.0 < frontier && offset >= SEGMENT_HEADER_SIZE;
        let Some(header) = published.then(|| segment.map.published_bytes(offset, RECORD_HEADER_SIZE as u64)).flatten() else {
            let record = self.read(position)?;
            return Ok((record.kind, bytes::Bytes::from(record.payload)));
        };
        let header = record::RecordHeader::read_from_bytes(&header).map_err(|_| Error::corrupt(&segment.path, offset, "short header"))?;
        let span = match header.span_bytes() {
            Some(span) if header.kind().is_data() => span,
            _ => return Err(Error::invalid(format!("no data record at position {}", position.0))),
        };
        let bytes = segment
            .map
            .published_bytes(offset, span)
            .ok_or_else(|| Error::corrupt(&segment.path, offset, "record extends past the published log"))?;
        let expected = record::Expected { generation: segment.info.generation, position: position.0 };
        match record::decode(&bytes, expected) {
            record::Decoded::Record(found) => Ok((found.kind, bytes.slice_ref(found.payload))),
            record::Decoded::Unwritten => Err(Error::corrupt(&segment.path, offset, "unwritten bytes below the published position")),
            record::Decoded::Invalid(invalid) => Err(Error::corrupt(&segment.path, offset, invalid.to_string())),
        }
    }

    /// Iterates over the data records from `position` (a record's position, or the
    /// first position) up to the records published when this is called.
    pub fn iter_from(&self, position: Position) -> LogIter {
        let end = self.published_position().0;
        let segments = lock(&self.segments).clone();
        let position = position.0.max(segments[0].info.data_start_position());
        LogIter { segments, position, end, buffer: ReadBuffer::new(READ_CHUNK_BYTES), current: None, failed: false }
    }

    /// Deletes every segment that lies wholly below both `position` and the durable
    /// position, never the one being appended to, then syncs the directory. A segment
    /// whose bytes a [`Log::read_shared`] handle still holds is kept (with those after
    /// it) until a later release finds it free.
    pub fn release_to(&self, position: Position) -> Result<usize> {
        self.appender()?;
        let limit = position.0.min(self.commit.durable_position());
        let mut released = Vec::new();
        {
            let mut segments = lock(&self.segments);
            // A segment whose bytes are still handed out (zero-copy reads) stays, and so do
            // the ones after it: a later release takes them.
            while segments.len() > 1 && segments[0].info.end_position() <= limit && segments[0].map.shared_handles() == 0 {
                released.push(segments.remove(0));
            }
        }
        // Oldest first, each removal synced before the next: a power loss then leaves a
        // log missing a prefix (what a release looks like), never one with a hole.
        for segment in &released {
            std::fs::remove_file(&segment.path).map_err(|source| Error::io("remove segment", &segment.path, source))?;
            fs::sync_directory(&self.directory).map_err(|error| self.commit.poison(error))?;
        }
        Ok(released.len())
    }

    /// Makes everything published durable, stops the preparer and removes the segment it
    /// had prepared ahead. Dropping a log instead skips the final sync.
    pub fn close(mut self) -> Result<()> {
        let mut result = Ok(());
        if self.appender.is_some() {
            result = match self.commit.poison_error() {
                Some(poisoned) => Err(poisoned),
                None => {
                    let frontier = self.published_frontier();
                    self.commit.wait_durable(frontier, &|| self.published_frontier(), &|from, to| self.sync_range(from, to))
                }
            };
        }
        if let Some(appender) = self.appender.as_mut() {
            if let Some(unused) = appender.preparer.stop() {
                drop(unused.file);
                std::fs::remove_file(&unused.path).map_err(|source| Error::io("remove unused segment", &unused.path, source))?;
                fs::sync_directory(&self.directory)?;
            }
        }
        result
    }
}

/// Data records of a log, in order, read with `pread`.
pub struct LogIter {
    segments: Vec<Arc<Segment>>,
    position: u64,
    end: u64,
    buffer: ReadBuffer,
    /// The segment `position` is in, whose bytes `buffer` holds.
    current: Option<Arc<Segment>>,
    failed: bool,
}

impl Iterator for LogIter {
    type Item = Result<Record>;

    fn next(&mut self) -> Option<Result<Record>> {
        while !self.failed && self.position < self.end {
            let position = self.position;
            if self.current.as_ref().is_none_or(|segment| position >= segment.info.end_position()) {
                let index = self.segments.partition_point(|segment| segment.info.end_position() <= position);
                self.current = Some(Arc::clone(self.segments.get(index)?));
                self.buffer = ReadBuffer::new(READ_CHUNK_BYTES);
            }
            let segment = self.current.as_ref().expect("set above");
            if self.position < segment.info.data_start_position() {
                self.position = segment.info.data_start_position();
                continue;
            }
            let offset = self.position - segment.info.base_position;
            let mut reader = SegmentReader::new(&segment.file, &segment.path, segment.info, &mut self.buffer);
            let step = match reader.step(offset) {
                Ok(step) => step,
                Err(error) => {
                    self.failed = true;
                    return Some(Err(error));
                }
            };
            match step {
                Step::Record(found) => {
                    let position = self.position;
                    self.position += found.span_bytes;
                    if found.kind.is_data() {
                        return Some(Ok(Record {
                            position: Position(position),
                            end: Position(self.position),
                            kind: found.kind,
                            payload: found.payload.to_vec(),
                        }));
                    }
                }
                Step::Unwritten => {
                    self.failed = true;
                    return Some(Err(Error::corrupt(&segment.path, offset, "unwritten bytes below the published position")));
                }
                Step::Invalid(invalid) => {
                    self.failed = true;
                    return Some(Err(Error::corrupt(&segment.path, offset, invalid.to_string())));
                }
            }
        }
        None
    }
}

fn into_segment(file: SegmentFile, map: Arc<SegmentMap>) -> Segment {
    Segment { info: file.info, path: file.path, file: file.file, map }
}

fn remove_temporary_files(directory: &Path) -> Result<()> {
    let mut removed = false;
    for entry in std::fs::read_dir(directory).map_err(|source| Error::io("list directory", directory, source))? {
        let entry = entry.map_err(|source| Error::io("list directory", directory, source))?;
        let name = entry.file_name();
        if name.to_str().is_some_and(|name| name.ends_with(TEMPORARY_SUFFIX)) {
            std::fs::remove_file(entry.path()).map_err(|source| Error::io("remove temporary file", entry.path(), source))?;
            removed = true;
        }
    }
    if removed {
        fs::sync_directory(directory)?;
    }
    Ok(())
}

/// Opens every segment of `directory` in order and checks that they follow each other.
fn open_segment_files(directory: &Path, writable: bool) -> Result<Vec<SegmentFile>> {
    let mut names = Vec::new();
    for entry in std::fs::read_dir(directory).map_err(|source| Error::io("list directory", directory, source))? {
        let entry = entry.map_err(|source| Error::io("list directory", directory, source))?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        if let Some((sequence, _)) = segment::parse_file_name(name) {
            names.push((sequence, entry.path()));
        } else if name.ends_with(SEGMENT_SUFFIX) {
            log::warn!("{}: ignoring {name}, which is not named like a segment", directory.display());
        }
    }
    names.sort();
    let mut files: Vec<SegmentFile> = Vec::with_capacity(names.len());
    for (_, path) in names {
        let file = segment::open_existing(&path, writable)?;
        if let Some(previous) = files.last() {
            if file.info.sequence != previous.info.sequence + 1 {
                return Err(Error::corrupt(&path, 0, format!("segment {} is missing before this one", previous.info.sequence + 1)));
            }
            if file.info.base_position != previous.info.end_position() {
                return Err(Error::corrupt(
                    &path,
                    0,
                    format!(
                        "starts at position {}, the previous segment ends at {}",
                        file.info.base_position,
                        previous.info.end_position()
                    ),
                ));
            }
        }
        files.push(file);
    }
    Ok(files)
}

fn find_end(files: &[SegmentFile], visit: &mut dyn FnMut(Position, RecordKind, &[u8])) -> Result<LogEnd> {
    let sources: Vec<SegmentSource<'_, File>> =
        files.iter().map(|file| SegmentSource { info: file.info, path: &file.path, source: &file.file }).collect();
    recovery::find_log_end(&sources, &mut |_, record| visit(Position(record.position), record.kind, record.payload))
}

/// Zeroes what lies past the valid log in its last segment, deletes later segments
/// (recovery proved they hold nothing durable), and syncs every kept segment, so that
/// bytes recovered from the page cache are on disk before anything new refers to them.
fn discard_torn_tail(directory: &Path, files: &mut Vec<SegmentFile>, end: &LogEnd) -> Result<Option<String>> {
    let last = &files[end.segment_index];
    let mut torn_tail = None;
    if !end.sealed {
        let zeroed = zero_nonzero_bytes(last, end.offset)?;
        if zeroed > 0 || end.torn.is_some() {
            let reason = end.torn.map_or("bytes after unwritten space".to_string(), |invalid| invalid.to_string());
            torn_tail = Some(format!("{} at offset {}: {reason}; {zeroed} bytes zeroed", last.path.display(), end.offset));
            log::warn!("discarding the torn tail of {}", torn_tail.as_deref().unwrap_or_default());
        }
    }
    let later: Vec<SegmentFile> = files.drain(end.segment_index + 1..).collect();
    for file in &later {
        std::fs::remove_file(&file.path).map_err(|source| Error::io("remove segment past the log end", &file.path, source))?;
    }
    for file in files.iter() {
        fs::fdatasync(&file.file, &file.path)?;
    }
    if !later.is_empty() {
        fs::sync_directory(directory)?;
    }
    Ok(torn_tail)
}

/// Writes zeros over every non-zero page-sized chunk from `offset` to the segment end.
/// Holes read as zeros and are not read.
fn zero_nonzero_bytes(segment: &SegmentFile, offset: u64) -> Result<u64> {
    let size_bytes = segment.info.size_bytes;
    let mut buffer = vec![0u8; READ_CHUNK_BYTES];
    let mut zeroed = 0;
    for range in fs::data_ranges(&segment.file, offset, size_bytes) {
        for chunk_start in range.clone().step_by(READ_CHUNK_BYTES) {
            let chunk_end = (chunk_start + READ_CHUNK_BYTES as u64).min(range.end);
            let bytes = &mut buffer[..(chunk_end - chunk_start) as usize];
            fs::read_exact_at(&segment.file, bytes, chunk_start, &segment.path)?;
            let mut page_start = chunk_start;
            while page_start < chunk_end {
                let page_end = ((page_start / fs::ZERO_FILL_CHUNK_BYTES as u64 + 1) * fs::ZERO_FILL_CHUNK_BYTES as u64).min(chunk_end);
                let page = &bytes[(page_start - chunk_start) as usize..(page_end - chunk_start) as usize];
                if !all_zero(page) {
                    fs::write_zeros(&segment.file, page_start, page_end, &segment.path)?;
                    zeroed += page_end - page_start;
                }
                page_start = page_end;
            }
        }
    }
    Ok(zeroed)
}

/// Zero-fills (and flushes) the pages from the one after `append_offset` up to
/// [`OPEN_ZERO_FILL_BYTES`] on, in the segment appends continue in; returns where the
/// zero-filled part ends. Recovery made every byte past the log end zero, so this
/// overwrites zeros: it makes them written blocks. First drops what recovery cached
/// past the end (see [`fs::drop_cached`]).
fn zero_fill_past_end(segment: &SegmentFile, append_offset: u64) -> Result<u64> {
    let page_bytes = fs::ZERO_FILL_CHUNK_BYTES as u64;
    let start = append_offset.next_multiple_of(page_bytes);
    let end = (start + OPEN_ZERO_FILL_BYTES).min(segment.info.size_bytes);
    fs::drop_cached(&segment.file, start, segment.info.size_bytes);
    if start < end {
        fs::write_zeros(&segment.file, start, end, &segment.path)?;
        fs::flush_zero_fill(&segment.file, &segment.path)?;
    }
    Ok(end.max(start.min(segment.info.size_bytes)))
}

/// Seals a recovered segment at `offset` with a padding record written with `pwrite`.
fn seal_at(segment: &SegmentFile, offset: u64) -> Result<()> {
    use zerocopy::IntoBytes;
    let position = segment.info.base_position + offset;
    let span_bytes = segment.info.size_bytes - offset;
    debug_assert!(span_bytes >= RECORD_HEADER_SIZE as u64);
    let header = record::marker_header(RecordKind::PADDING, RecordFlags::CUT, span_bytes, segment.info.generation, position, position);
    fs::write_header(&segment.file, header.as_bytes(), offset, &segment.path)?;
    fs::fdatasync(&segment.file, &segment.path)
}
