//! Recovery: find where the valid log ends, and tell a torn tail from corruption.
//!
//! The valid log is the longest run of valid records from the first segment's first
//! record, through each segment sealed by a padding record, up to the first position
//! `X` that holds no valid record. What lies past `X` was either never acknowledged
//! (a torn tail: discarded) or is evidence that acknowledged bytes were lost
//! (corruption: reported, nothing dropped). It is corruption when
//!
//! 1. a later segment holds any valid record: the appender makes a segment wholly
//!    durable before the next one takes its first record, so damage in a segment that
//!    has a successor with records is damage to durable bytes; or
//! 2. a valid record past `X` carries a durable hint above `X`: when that record was
//!    written, the bytes at `X` had already been made durable.
//!
//! Records are self-identifying (segment generation and position under the checksum),
//! so neither test can be fooled by stale bytes of another segment or another place.
//! What the rules cannot see: damage to the very last records acknowledged before a
//! crash, when no later record exists to vouch for them. Under the failure model
//! (synced bytes stay as synced) that damage can only come from the medium itself.

use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
use crate::read_ahead::{self, ScanProgress};
use crate::reader::{first_record_offset, ReadAt, ReadBuffer, SegmentReader, Step, READ_CHUNK_BYTES};
use crate::record::{DecodedRecord, Invalid, RecordKind};
use crate::segment::SegmentInfo;

/// Where the valid records of a log end.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LogEnd {
    /// Index (into the segments given) of the segment where appends continue.
    pub segment_index: usize,
    /// Offset in that segment of the first byte after the last valid record.
    pub offset: u64,
    /// The segment is sealed (a padding record reaches its end): appends continue in a
    /// new segment.
    pub sealed: bool,
    /// Why the valid records stop there: `None` for a clean end (zeros or a seal).
    pub torn: Option<Invalid>,
    /// Data records in the valid log.
    pub data_records: u64,
}

/// One segment as recovery sees it.
pub struct SegmentSource<'a, S: ReadAt + ?Sized> {
    pub info: SegmentInfo,
    pub path: &'a Path,
    pub source: &'a S,
}

/// Finds the end of the valid log over `segments` (consecutive, in order), calling
/// `visit` with every data record of the valid log, in order.
pub fn find_log_end<S: ReadAt + Sync + ?Sized>(
    segments: &[SegmentSource<'_, S>],
    visit: &mut dyn FnMut(&SegmentInfo, &DecodedRecord<'_>),
) -> Result<LogEnd> {
    assert!(!segments.is_empty(), "a log has at least one segment");
    let sources: Vec<&S> = segments.iter().map(|segment| segment.source).collect();
    read_ahead::with_read_ahead(&sources, |progress| scan_segments(segments, progress, visit))
}

fn scan_segments<S: ReadAt + ?Sized>(
    segments: &[SegmentSource<'_, S>],
    progress: &ScanProgress,
    visit: &mut dyn FnMut(&SegmentInfo, &DecodedRecord<'_>),
) -> Result<LogEnd> {
    let mut data_records = 0;
    for (segment_index, segment) in segments.iter().enumerate() {
        progress.entered(segment_index);
        let mut buffer = ReadBuffer::new(READ_CHUNK_BYTES);
        let mut reader = SegmentReader::new(segment.source, segment.path, segment.info, &mut buffer);
        let mut offset = first_record_offset();
        let stop = loop {
            match reader.step(offset)? {
                Step::Record(record) => {
                    if record.kind == RecordKind::PADDING {
                        break None;
                    }
                    if record.kind.is_data() {
                        data_records += 1;
                        visit(&segment.info, &record);
                    }
                    offset += record.span_bytes;
                }
                Step::Unwritten => break Some(None),
                Step::Invalid(invalid) => break Some(Some(invalid)),
            }
        };
        let Some(torn) = stop else {
            // Sealed: the log continues in the next segment, if there is one.
            if segment_index + 1 == segments.len() {
                return Ok(LogEnd { segment_index, offset: segment.info.size_bytes, sealed: true, torn: None, data_records });
            }
            continue;
        };
        check_nothing_durable_beyond(segments, segment_index, offset, torn, &mut reader)?;
        return Ok(LogEnd { segment_index, offset, sealed: false, torn, data_records });
    }
    unreachable!("the loop returns at the last segment")
}

fn check_nothing_durable_beyond<S: ReadAt + ?Sized>(
    segments: &[SegmentSource<'_, S>],
    segment_index: usize,
    end_offset: u64,
    torn: Option<Invalid>,
    reader: &mut SegmentReader<'_, S>,
) -> Result<()> {
    let end_position = segments[segment_index].info.base_position + end_offset;
    let path = segments[segment_index].path;
    let what = match torn {
        Some(invalid) => format!("invalid record ({invalid})"),
        None => "unwritten bytes".to_string(),
    };
    // Rule 2: a later record in this segment vouching for the bytes at the end.
    let mut vouching: Option<(u64, u64)> = None;
    reader.search_valid_records(end_offset + crate::record::RECORD_ALIGNMENT as u64, &mut |record| {
        if record.durable_hint > end_position && vouching.is_none() {
            vouching = Some((record.position, record.durable_hint));
        }
    })?;
    if let Some((position, hint)) = vouching {
        return Err(Error::corrupt(
            path,
            end_offset,
            format!("{what} below a durable point: the record at log position {position} says everything below {hint} had been synced"),
        ));
    }
    // Rule 1: a later segment with records means this one was wholly durable.
    for later in &segments[segment_index + 1..] {
        let mut buffer = ReadBuffer::new(READ_CHUNK_BYTES);
        let mut later_reader = SegmentReader::new(later.source, later.path, later.info, &mut buffer);
        let mut first_valid: Option<u64> = None;
        later_reader.search_valid_records(first_record_offset(), &mut |record| {
            first_valid.get_or_insert(record.position);
        })?;
        if let Some(position) = first_valid {
            return Err(Error::corrupt(
                path,
                end_offset,
                format!("{what} in a sealed segment: the later segment {} holds a record at log position {position}", later.path.display()),
            ));
        }
    }
    Ok(())
}

/// The verdict of [`scan_image`] on one segment image.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ImageScan {
    /// The header did not validate.
    BadHeader(String),
    /// The valid records end at `end`.
    Valid { end: LogEnd, payload_bytes: u64 },
    /// Recovery reported corruption or a read error.
    Failed(String),
}

/// Runs recovery over `image` taken as the only segment of a log: the entry point of the
/// recovery fuzz target and of tests that build images by hand.
pub fn scan_image(image: &[u8]) -> ImageScan {
    let info = match SegmentInfo::decode(image) {
        Ok(info) => info,
        Err(reason) => return ImageScan::BadHeader(reason),
    };
    let path = PathBuf::from("image.seg");
    let segments = [SegmentSource { info, path: &path, source: image }];
    let mut payload_bytes = 0;
    match find_log_end(&segments, &mut |_, record| payload_bytes += record.payload.len() as u64) {
        Ok(end) => ImageScan::Valid { end, payload_bytes },
        Err(error) => ImageScan::Failed(error.to_string()),
    }
}
