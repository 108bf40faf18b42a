//! Segment files: their names, their header, and how a new one is prepared.
//!
//! A segment is a file of a fixed size named `{sequence:016x}-{base_position:016x}.seg`:
//! the order of segments and the log position of each one's first byte are readable
//! from the names alone. Its first [`SEGMENT_HEADER_SIZE`] bytes are a header; records
//! follow from there to the end, which a padding record reaches once it is sealed.

use std::fs::{File, OpenOptions};
use std::hash::{BuildHasher, Hasher};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use zerocopy::byteorder::little_endian::{U32, U64};
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout, Unaligned};

use crate::error::{Error, Result};
use crate::fs::{self, Allocation};

/// Bytes of the segment header; the first record starts here.
pub const SEGMENT_HEADER_SIZE: u64 = 64;
pub const SEGMENT_MAGIC: [u8; 8] = *b"SEGSTORE";
pub const SEGMENT_FORMAT_VERSION: u32 = 1;
pub(crate) const SEGMENT_SUFFIX: &str = ".seg";
pub(crate) const TEMPORARY_SUFFIX: &str = ".tmp";
/// Bytes of zeros written and flushed at a time, here and by the zero-filler ahead of
/// the writers. Each flush delays the appends syncing meanwhile: smaller chunks shorten
/// the worst delay but delay more appends (256 KiB: worst ~4 ms, but p99.9 across 1 MiB
/// rotations went from 1.0x to 1.75x the run without; 4 MiB: 0.97x, worst ~8 ms after a
/// cut of a 64 MiB segment).
pub(crate) const ZERO_FILL_FLUSH_BYTES: u64 = 4 << 20;

const _: () = assert!(std::mem::size_of::<SegmentHeader>() == SEGMENT_HEADER_SIZE as usize);
const _: () = assert!(SEGMENT_HEADER_SIZE.is_multiple_of(crate::record::RECORD_ALIGNMENT as u64));

/// The on-disk header at offset 0 of every segment.
#[derive(Clone, Copy, Debug, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
pub struct SegmentHeader {
    pub magic: [u8; 8],
    pub format_version: U32,
    pub header_size: U32,
    pub sequence: U64,
    pub base_position: U64,
    pub size_bytes: U64,
    /// Drawn at random when the file is created; every record in it carries it.
    pub generation: U32,
    pub flags: U32,
    pub reserved: [u8; 12],
    /// CRC-32C of the 60 bytes before it.
    pub crc: U32,
}

/// What a segment header says.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SegmentInfo {
    pub sequence: u64,
    pub base_position: u64,
    pub size_bytes: u64,
    pub generation: u32,
}

impl SegmentInfo {
    pub fn end_position(&self) -> u64 {
        self.base_position + self.size_bytes
    }

    pub fn data_start_position(&self) -> u64 {
        self.base_position + SEGMENT_HEADER_SIZE
    }

    pub fn file_name(&self) -> String {
        file_name(self.sequence, self.base_position)
    }

    pub fn encode(&self) -> SegmentHeader {
        let mut header = SegmentHeader {
            magic: SEGMENT_MAGIC,
            format_version: U32::new(SEGMENT_FORMAT_VERSION),
            header_size: U32::new(SEGMENT_HEADER_SIZE as u32),
            sequence: U64::new(self.sequence),
            base_position: U64::new(self.base_position),
            size_bytes: U64::new(self.size_bytes),
            generation: U32::new(self.generation),
            flags: U32::new(0),
            reserved: [0; 12],
            crc: U32::new(0),
        };
        header.crc = U32::new(crc32c::crc32c(&header.as_bytes()[..60]));
        header
    }

    /// Decodes and validates a header; the error says what is wrong.
    pub fn decode(bytes: &[u8]) -> std::result::Result<SegmentInfo, String> {
        let Ok((header, _)) = SegmentHeader::read_from_prefix(bytes) else {
            return Err(format!("header needs {SEGMENT_HEADER_SIZE} bytes, file has {}", bytes.len()));
        };
        if header.magic != SEGMENT_MAGIC {
            return Err("not a segstore segment (bad magic)".into());
        }
        if crc32c::crc32c(&header.as_bytes()[..60]) != header.crc.get() {
            return Err("segment header checksum mismatch".into());
        }
        if header.format_version.get() != SEGMENT_FORMAT_VERSION {
            return Err(format!("unsupported segment format version {}", header.format_version.get()));
        }
        if u64::from(header.header_size.get()) != SEGMENT_HEADER_SIZE || header.flags.get() != 0 || header.reserved != [0; 12] {
            return Err("segment header has fields this version does not know".into());
        }
        let info = SegmentInfo {
            sequence: header.sequence.get(),
            base_position: header.base_position.get(),
            size_bytes: header.size_bytes.get(),
            generation: header.generation.get(),
        };
        let smallest = SEGMENT_HEADER_SIZE + 2 * crate::record::RECORD_HEADER_SIZE as u64;
        if info.size_bytes < smallest || info.size_bytes > crate::mapping::MAX_SEGMENT_SIZE_BYTES || !info.size_bytes.is_multiple_of(8) {
            return Err(format!("segment size {} out of range", info.size_bytes));
        }
        if info.base_position.checked_add(info.size_bytes).is_none() {
            return Err("segment base position overflows".into());
        }
        Ok(info)
    }
}

/// `{sequence:016x}-{base_position:016x}.seg`
pub fn file_name(sequence: u64, base_position: u64) -> String {
    format!("{sequence:016x}-{base_position:016x}{SEGMENT_SUFFIX}")
}

/// The (sequence, base position) a segment file name carries.
pub fn parse_file_name(name: &str) -> Option<(u64, u64)> {
    parse_hex_pair_name(name, SEGMENT_SUFFIX)
}

/// The two numbers of a `{:016x}-{:016x}{suffix}` name (etcd's naming scheme, used for
/// segments and snapshot files): exactly 16 lower-case hex digits each.
pub(crate) fn parse_hex_pair_name(name: &str, suffix: &str) -> Option<(u64, u64)> {
    let stem = name.strip_suffix(suffix)?;
    let (first, second) = stem.split_once('-')?;
    let is_hex16 = |text: &str| text.len() == 16 && text.bytes().all(|byte| byte.is_ascii_digit() || (b'a'..=b'f').contains(&byte));
    if !is_hex16(first) || !is_hex16(second) {
        return None;
    }
    Some((u64::from_str_radix(first, 16).ok()?, u64::from_str_radix(second, 16).ok()?))
}

/// A segment file, open.
#[derive(Debug)]
pub(crate) struct SegmentFile {
    pub info: SegmentInfo,
    pub path: PathBuf,
    pub file: File,
}

/// A fresh random generation for a new segment file.
pub(crate) fn new_generation(sequence: u64) -> u32 {
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u64(sequence);
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|elapsed| elapsed.as_nanos()).unwrap_or(0);
    hasher.write_u128(nanos);
    hasher.write_u32(std::process::id());
    hasher.finish() as u32
}

/// Creates the segment `info` in `directory`, off the append path: a temporary file,
/// fallocated to full size (a full disk fails here, not as SIGBUS later), its first
/// `zero_fill_bytes` zero-filled in 4 KiB writes (so later syncs convert no extents and
/// the page cache holds small folios; the rest reads as zeros too, but a sync after
/// the first write to each of its blocks would commit the extent change to the file
/// system's journal, and the zero-filler writes it ahead of the appends), the header,
/// fsync, rename into place, fsync of the directory. Calls `between_chunks` after each
/// flushed chunk of zeros (the preparer zero-fills ahead of the appends meanwhile).
pub(crate) fn prepare(directory: &Path, info: SegmentInfo, zero_fill_bytes: u64, between_chunks: &mut dyn FnMut()) -> Result<SegmentFile> {
    let temporary = directory.join(format!("{:016x}{TEMPORARY_SUFFIX}", info.sequence));
    let path = directory.join(info.file_name());
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&temporary)
        .map_err(|source| Error::io("create segment", &temporary, source))?;
    let prepared = fill_and_install(&file, &temporary, &path, directory, info, zero_fill_bytes.min(info.size_bytes), between_chunks);
    if prepared.is_err() {
        let _ = std::fs::remove_file(&temporary);
    }
    prepared?;
    Ok(SegmentFile { info, path, file })
}

fn fill_and_install(
    file: &File,
    temporary: &Path,
    path: &Path,
    directory: &Path,
    info: SegmentInfo,
    zero_fill_bytes: u64,
    between_chunks: &mut dyn FnMut(),
) -> Result<()> {
    if fs::fallocate(file, info.size_bytes, temporary)? == Allocation::Unsupported {
        log::warn!("{}: fallocate is not supported here; allocating the segment by writing zeros", directory.display());
    }
    // In chunks, each flushed before the next is written: one fsync of the whole segment
    // at the end would hold the disk for tens of milliseconds (64 MiB) and every append
    // waiting for its own sync would wait behind it.
    let mut chunk_start = 0;
    while chunk_start < zero_fill_bytes {
        let chunk_end = (chunk_start + ZERO_FILL_FLUSH_BYTES).min(zero_fill_bytes);
        fs::write_zeros(file, chunk_start, chunk_end, temporary)?;
        fs::flush_zero_fill(file, temporary)?;
        between_chunks();
        chunk_start = chunk_end;
    }
    fs::write_header(file, info.encode().as_bytes(), 0, temporary)?;
    fs::fsync(file, temporary)?;
    fs::rename(temporary, path)?;
    fs::sync_directory(directory)
}

/// Opens an existing segment and validates its header and its name.
pub(crate) fn open_existing(path: &Path, writable: bool) -> Result<SegmentFile> {
    let file = OpenOptions::new().read(true).write(writable).open(path).map_err(|source| Error::io("open segment", path, source))?;
    let file_size_bytes = file.metadata().map_err(|source| Error::io("stat segment", path, source))?.len();
    let mut bytes = [0u8; SEGMENT_HEADER_SIZE as usize];
    if file_size_bytes < SEGMENT_HEADER_SIZE {
        return Err(Error::corrupt(path, 0, format!("file of {file_size_bytes} bytes is too short for a segment header")));
    }
    fs::read_exact_at(&file, &mut bytes, 0, path)?;
    let info = SegmentInfo::decode(&bytes).map_err(|reason| Error::corrupt(path, 0, reason))?;
    let name = path.file_name().and_then(|name| name.to_str()).unwrap_or_default();
    if parse_file_name(name) != Some((info.sequence, info.base_position)) {
        return Err(Error::corrupt(
            path,
            0,
            format!("header says sequence {} at position {} but the file is named {name}", info.sequence, info.base_position),
        ));
    }
    if file_size_bytes < info.size_bytes {
        return Err(Error::corrupt(path, file_size_bytes, format!("file is {file_size_bytes} bytes, its header says {}", info.size_bytes)));
    }
    Ok(SegmentFile { info, path: path.to_path_buf(), file })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_sort_in_log_order() {
        assert_eq!(file_name(1, 0x4000), "0000000000000001-0000000000004000.seg");
        assert_eq!(parse_file_name(&file_name(7, 99)), Some((7, 99)));
        assert_eq!(parse_file_name("0000000000000001-0000000000004000.wal"), None);
        assert_eq!(parse_file_name("000000000000001-0000000000004000.seg"), None);
        assert_eq!(parse_file_name("000000000000000G-0000000000004000.seg"), None);
        assert!(file_name(9, 0) < file_name(10, 0));
    }

    #[test]
    fn header_round_trips_and_rejects_damage() {
        let info = SegmentInfo { sequence: 3, base_position: 1 << 20, size_bytes: 1 << 16, generation: 77 };
        let header = info.encode();
        assert_eq!(SegmentInfo::decode(header.as_bytes()), Ok(info));
        for bit in 0..SEGMENT_HEADER_SIZE as usize * 8 {
            let mut bytes = header.as_bytes().to_vec();
            bytes[bit / 8] ^= 1 << (bit % 8);
            assert!(SegmentInfo::decode(&bytes).is_err(), "flip of bit {bit} accepted");
        }
    }

    #[test]
    fn prepared_segment_is_zeroed_full_size_and_named() {
        let directory = tempfile::tempdir().unwrap();
        let info = SegmentInfo { sequence: 0, base_position: 0, size_bytes: 64 * 1024, generation: 5 };
        let prepared = prepare(directory.path(), info, info.size_bytes, &mut || {}).unwrap();
        let bytes = std::fs::read(&prepared.path).unwrap();
        assert_eq!(bytes.len() as u64, info.size_bytes);
        assert_eq!(SegmentInfo::decode(&bytes).unwrap(), info);
        assert!(bytes[SEGMENT_HEADER_SIZE as usize..].iter().all(|&byte| byte == 0));
        assert_eq!(open_existing(&prepared.path, false).unwrap().info, info);
        let leftovers: Vec<_> = std::fs::read_dir(directory.path()).unwrap().map(|entry| entry.unwrap().file_name()).collect();
        assert_eq!(leftovers.len(), 1, "no temporary file is left: {leftovers:?}");
    }
}
