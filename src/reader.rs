//! Reading records out of a segment with positioned reads (`pread`), never through the
//! mapping: a media error is then an `Err`, never SIGBUS, and nothing is read past the
//! file's size.

use std::fs::File;
use std::io;
use std::num::NonZeroU64;
use std::ops::Range;
use std::os::unix::fs::FileExt;
use std::path::Path;

use crate::error::{Error, Result};
use zerocopy::FromBytes;

use crate::read_ahead::PREFETCH_PIECE_BYTES;
use crate::record::{self, Decoded, DecodedRecord, Expected, Invalid, RecordHeader, RecordKind, RECORD_HEADER_SIZE};
use crate::segment::{SegmentInfo, SEGMENT_HEADER_SIZE};

/// Bytes read per `pread` when streaming through a segment.
pub(crate) const READ_CHUNK_BYTES: usize = 1 << 20;

/// Bytes of position words checked at once for zeros by [`SegmentReader::search_valid_records`].
const ZERO_SKIP_BYTES: usize = 256;

/// Bytes that can be read at an offset: a file, or an in-memory image of one.
pub trait ReadAt {
    /// Fills `buffer` from `offset`; fewer bytes than asked is an error.
    fn read_exact_at(&self, buffer: &mut [u8], offset: u64) -> io::Result<()>;

    /// A hint that all of it will be read soon, so the reading can start now.
    fn prefetch(&self) {}

    /// The first range at or after `offset` that may hold non-zero bytes (all else reads
    /// as zeros): not empty, and starting at `offset` or later. `None` if nothing past
    /// `offset` does. By default, all of it.
    fn data_range_from(&self, offset: u64) -> Option<Range<u64>> {
        Some(offset..u64::MAX)
    }

    /// Whether [`ReadAt::prefetch`] does anything.
    fn can_prefetch(&self) -> bool {
        false
    }
}

impl ReadAt for File {
    fn read_exact_at(&self, buffer: &mut [u8], offset: u64) -> io::Result<()> {
        FileExt::read_exact_at(self, buffer, offset)
    }

    fn prefetch(&self) {
        // Only a hint, in pieces (see `read_ahead.rs`): the kernel reads the file while
        // the segment before it is being checked. Failure changes nothing. Holes are
        // left out: reading one ahead would only fill the page cache with zeros.
        let size_bytes = self.metadata().map_or(0, |metadata| metadata.len());
        for range in crate::fs::data_ranges(self, 0, size_bytes) {
            for piece in range.clone().step_by(PREFETCH_PIECE_BYTES as usize) {
                let length = NonZeroU64::new(PREFETCH_PIECE_BYTES.min(range.end - piece));
                let _ = rustix::fs::fadvise(self, piece, length, rustix::fs::Advice::WillNeed);
            }
        }
    }

    fn data_range_from(&self, offset: u64) -> Option<Range<u64>> {
        crate::fs::data_range_from(self, offset)
    }

    fn can_prefetch(&self) -> bool {
        true
    }
}

impl ReadAt for [u8] {
    fn read_exact_at(&self, buffer: &mut [u8], offset: u64) -> io::Result<()> {
        let start = usize::try_from(offset).ok().filter(|&start| start <= self.len());
        match start.and_then(|start| self.get(start..start.checked_add(buffer.len())?)) {
            Some(bytes) => {
                buffer.copy_from_slice(bytes);
                Ok(())
            }
            None => Err(io::ErrorKind::UnexpectedEof.into()),
        }
    }
}

/// Bytes read ahead of a segment, kept between reads.
pub(crate) struct ReadBuffer {
    bytes: Vec<u8>,
    /// Segment offset of `bytes[0]`.
    offset: u64,
    /// Bytes to read at least per `pread`.
    chunk_bytes: u64,
}

impl ReadBuffer {
    pub(crate) fn new(chunk_bytes: usize) -> Self {
        ReadBuffer { bytes: Vec::new(), offset: 0, chunk_bytes: chunk_bytes as u64 }
    }
}

/// A window of buffered bytes over one segment.
pub(crate) struct SegmentReader<'a, S: ReadAt + ?Sized> {
    source: &'a S,
    path: &'a Path,
    pub info: SegmentInfo,
    buffer: &'a mut ReadBuffer,
}

/// What is at one record position of a segment.
pub(crate) enum Step<'a> {
    Record(DecodedRecord<'a>),
    Unwritten,
    Invalid(Invalid),
}

impl<'a, S: ReadAt + ?Sized> SegmentReader<'a, S> {
    /// A reader over `source`; `buffer` must be empty or hold bytes of this same segment.
    pub(crate) fn new(source: &'a S, path: &'a Path, info: SegmentInfo, buffer: &'a mut ReadBuffer) -> Self {
        SegmentReader { source, path, info, buffer }
    }

    /// `length` bytes at segment offset `offset`, reading more around them when needed.
    fn bytes_at(&mut self, offset: u64, length: u64) -> Result<&[u8]> {
        let end = offset + length;
        debug_assert!(end <= self.info.size_bytes);
        let buffer = &mut *self.buffer;
        let buffered_end = buffer.offset + buffer.bytes.len() as u64;
        if offset < buffer.offset || end > buffered_end {
            let read_end = (offset + length.max(buffer.chunk_bytes)).min(self.info.size_bytes);
            buffer.bytes.resize((read_end - offset) as usize, 0);
            buffer.offset = offset;
            if let Err(source) = self.source.read_exact_at(&mut buffer.bytes, offset) {
                buffer.bytes.clear();
                return Err(Error::io("read segment", self.path, source));
            }
        }
        let start = (offset - buffer.offset) as usize;
        Ok(&buffer.bytes[start..start + length as usize])
    }

    /// Decodes the record at `offset` (a multiple of 8 at or past the segment header).
    pub(crate) fn step(&mut self, offset: u64) -> Result<Step<'_>> {
        let size_bytes = self.info.size_bytes;
        if offset + RECORD_HEADER_SIZE as u64 > size_bytes {
            return Ok(Step::Invalid(Invalid::Truncated));
        }
        let header_bytes = self.bytes_at(offset, RECORD_HEADER_SIZE as u64)?;
        let (header, _) = RecordHeader::read_from_prefix(header_bytes).expect("32 bytes hold a header");
        if header.publication_word() == 0 {
            return Ok(Step::Unwritten);
        }
        let decode_length = match header.span_bytes() {
            Some(_) if !header.kind().is_data() => RECORD_HEADER_SIZE as u64,
            // Bounded before use: a span past the segment end is invalid, not a read.
            Some(span) if offset + span <= size_bytes => span,
            Some(_) => return Ok(Step::Invalid(Invalid::Truncated)),
            None => return Ok(Step::Invalid(Invalid::UnknownKind(header.kind))),
        };
        let expected = Expected { generation: self.info.generation, position: self.info.base_position + offset };
        let bytes = self.bytes_at(offset, decode_length)?;
        Ok(match record::decode(bytes, expected) {
            Decoded::Record(record) if !record.kind.is_data() && offset + record.span_bytes > size_bytes => Step::Invalid(Invalid::BadSpan),
            Decoded::Record(record) if record.kind == RecordKind::PADDING && offset + record.span_bytes != size_bytes => {
                Step::Invalid(Invalid::BadSpan)
            }
            Decoded::Record(record) => Step::Record(record),
            Decoded::Unwritten => Step::Unwritten,
            Decoded::Invalid(invalid) => Step::Invalid(invalid),
        })
    }

    /// Looks at every 8-byte boundary from `offset` to the end of the segment for
    /// records that validate, stepping over each one found. Calls `found` with each.
    pub(crate) fn search_valid_records(&mut self, mut offset: u64, found: &mut dyn FnMut(&DecodedRecord<'_>)) -> Result<()> {
        let size_bytes = self.info.size_bytes;
        let header_bytes = RECORD_HEADER_SIZE as u64;
        // Where the range of bytes that may be non-zero, as the source last said, ends.
        let mut data_end = offset;
        while offset + header_bytes <= size_bytes {
            if offset >= data_end {
                // A candidate starting in a hole has a zero publication word: not a record.
                // Holes are whole blocks, so rounding down to a boundary only looks at more.
                let Some(range) = self.source.data_range_from(offset) else { return Ok(()) };
                offset = offset.max(range.start / record::RECORD_ALIGNMENT as u64 * record::RECORD_ALIGNMENT as u64);
                data_end = range.end;
                continue;
            }
            // A record names its own position at bytes 16..24: look for that first, a
            // word compare per boundary over a whole buffered chunk.
            let chunk_end = (offset + self.buffer.chunk_bytes.max(header_bytes)).min(size_bytes);
            let base_position = self.info.base_position;
            let bytes = self.bytes_at(offset, chunk_end - offset)?;
            let mut candidate = None;
            let mut relative = 0usize;
            // Past the last candidate (relative to `offset`) whose header fits in the chunk.
            let candidates_end = ((chunk_end - offset - header_bytes) as usize + 1).next_multiple_of(record::RECORD_ALIGNMENT);
            let names_itself = |relative: usize| {
                let word: [u8; 8] = bytes[relative + 16..relative + 24].try_into().expect("8 bytes");
                u64::from_le_bytes(word) == base_position + offset + relative as u64
            };
            while relative < candidates_end {
                // Past the log's end most bytes are zeros, and a zero word names no
                // position here (every candidate lies past the segment header): skip
                // the candidates whose words lie in an all-zero block, a block at a time,
                // and compare word by word only in the others.
                if bytes.get(relative + 16..relative + 16 + ZERO_SKIP_BYTES).is_some_and(all_zero) {
                    relative += ZERO_SKIP_BYTES;
                    continue;
                }
                let block_end = (relative + ZERO_SKIP_BYTES).min(candidates_end);
                if let Some(found) = (relative..block_end).step_by(record::RECORD_ALIGNMENT).find(|&at| names_itself(at)) {
                    candidate = Some(offset + found as u64);
                    break;
                }
                relative = block_end;
            }
            let Some(candidate) = candidate else {
                offset += relative as u64;
                continue;
            };
            let expected = Expected { generation: self.info.generation, position: base_position + candidate };
            let plausible = record::header_if_plausible(self.bytes_at(candidate, header_bytes)?, expected).is_some();
            if plausible {
                if let Step::Record(record) = self.step(candidate)? {
                    found(&record);
                    offset = candidate + record.span_bytes;
                    continue;
                }
            }
            offset = candidate + record::RECORD_ALIGNMENT as u64;
        }
        Ok(())
    }
}

/// Whether every byte is zero. No early exit, so that the fold vectorizes: zeros are the
/// common case where this is asked.
pub(crate) fn all_zero(bytes: &[u8]) -> bool {
    bytes.iter().fold(0u8, |any, &byte| any | byte) == 0
}

/// The offset of the first record of every segment.
pub(crate) const fn first_record_offset() -> u64 {
    SEGMENT_HEADER_SIZE
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::{encode_to_vec, RecordKind};

    /// Zeros, garbage and records at awkward places of a segment image: the search must
    /// find exactly the records, whatever its chunk size (odd sizes put chunk ends off
    /// the 8-byte boundaries, and blocks of zeros and of garbage across them).
    #[test]
    fn the_search_finds_every_record_among_zeros_and_garbage_at_any_chunk_size() {
        const SIZE_BYTES: usize = 64 << 10;
        let info = SegmentInfo { sequence: 0, base_position: 1 << 20, size_bytes: SIZE_BYTES as u64, generation: 7 };
        let mut image = vec![0u8; SIZE_BYTES];
        // Garbage: no byte zero, so no word is zero, and none names its own position.
        let mut garbage = 0x9e37_79b9_7f4a_7c15u64;
        let mut fill_garbage = |image: &mut [u8], range: std::ops::Range<usize>| {
            for byte in &mut image[range] {
                garbage ^= garbage << 13;
                garbage ^= garbage >> 7;
                garbage ^= garbage << 17;
                *byte = garbage as u8 | 1;
            }
        };
        fill_garbage(&mut image, 64..3000);
        fill_garbage(&mut image, 9000..9100);
        fill_garbage(&mut image, 20_000..33_000);
        let mut planted = Vec::new();
        // Right after garbage, after zeros, inside a block of zeros, after a long garbage
        // run across many chunk ends, and the last place a record fits.
        for (offset, payload_bytes) in [(3000, 100), (4096, 10), (5000 + 136, 300), (33_000, 50), (SIZE_BYTES - 64, 8)] {
            let expected = Expected { generation: info.generation, position: info.base_position + offset as u64 };
            let record = encode_to_vec(RecordKind::FIRST_DATA, &vec![offset as u8 | 1; payload_bytes], expected, 0);
            image[offset..offset + record.len()].copy_from_slice(&record);
            planted.push(expected.position);
        }
        for chunk_bytes in [32, 100, 777, 1000, 4096, 1 << 20] {
            let mut buffer = ReadBuffer::new(chunk_bytes);
            let mut reader = SegmentReader::new(&image[..], Path::new("image"), info, &mut buffer);
            let mut found = Vec::new();
            reader.search_valid_records(64, &mut |record| found.push(record.position)).unwrap();
            assert_eq!(found, planted, "chunks of {chunk_bytes} bytes");
        }
    }
}
