//! Every file-system call the log's durability depends on, each behind a fault point,
//! each returning an [`Error`] that names the call and the path.

use std::fs::File;
use std::ops::Range;
use std::os::unix::fs::FileExt;
use std::path::Path;

use crate::error::{Error, Result};
use crate::fault::{self, FaultPoint};
use crate::mapping::SegmentMap;

/// Zeros are written in pages of this size, so the page cache holds small folios and a
/// later ranged msync writes back only the pages an append touched.
pub(crate) const ZERO_FILL_CHUNK_BYTES: usize = 4096;
static ZERO_PAGE: [u8; ZERO_FILL_CHUNK_BYTES] = [0; ZERO_FILL_CHUNK_BYTES];

pub(crate) fn fsync(file: &File, path: &Path) -> Result<()> {
    fault::check(FaultPoint::Fsync, path)
        .and_then(|()| rustix::fs::fsync(file).map_err(Into::into))
        .map_err(|source| Error::io("fsync", path, source))
}

pub(crate) fn fdatasync(file: &File, path: &Path) -> Result<()> {
    fault::check(FaultPoint::Fdatasync, path)
        .and_then(|()| rustix::fs::fdatasync(file).map_err(Into::into))
        .map_err(|source| Error::io("fdatasync", path, source))
}

pub(crate) fn msync(map: &SegmentMap, offset: u64, length_bytes: u64, path: &Path) -> Result<()> {
    // The kernel syncs whole pages: report the range it really covers.
    let page_start = offset / ZERO_FILL_CHUNK_BYTES as u64 * ZERO_FILL_CHUNK_BYTES as u64;
    let page_end = (offset + length_bytes).div_ceil(ZERO_FILL_CHUNK_BYTES as u64) * ZERO_FILL_CHUNK_BYTES as u64;
    fault::check(FaultPoint::Msync, path)
        .and_then(|()| fault::around_msync(path, page_start, page_end - page_start, &mut || map.sync_range(offset, length_bytes)))
        .map_err(|source| Error::io("msync", path, source))
}

/// Whether `fallocate` reserved the blocks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Allocation {
    Reserved,
    /// The file system does not support fallocate; zero-filling will allocate instead.
    Unsupported,
}

pub(crate) fn fallocate(file: &File, size_bytes: u64, path: &Path) -> Result<Allocation> {
    fault::check(FaultPoint::Fallocate, path).map_err(|source| Error::io("fallocate", path, source))?;
    match rustix::fs::fallocate(file, rustix::fs::FallocateFlags::empty(), 0, size_bytes) {
        Ok(()) => Ok(Allocation::Reserved),
        Err(rustix::io::Errno::OPNOTSUPP) => Ok(Allocation::Unsupported),
        Err(errno) => Err(Error::io("fallocate", path, errno.into())),
    }
}

pub(crate) fn rename(from: &Path, to: &Path) -> Result<()> {
    fault::check(FaultPoint::Rename, to).and_then(|()| std::fs::rename(from, to)).map_err(|source| Error::io("rename", to, source))
}

pub(crate) fn sync_directory(directory: &Path) -> Result<()> {
    fault::check(FaultPoint::DirectoryFsync, directory)
        .and_then(|()| File::open(directory))
        .and_then(|dir| rustix::fs::fsync(&dir).map_err(Into::into))
        .map_err(|source| Error::io("fsync directory", directory, source))
}

pub(crate) fn write_header(file: &File, bytes: &[u8], offset: u64, path: &Path) -> Result<()> {
    fault::check(FaultPoint::HeaderWrite, path)
        .and_then(|()| file.write_all_at(bytes, offset))
        .map_err(|source| Error::io("write segment header", path, source))
}

/// Writes zeros over `[start, end)` in page-sized writes.
pub(crate) fn write_zeros(file: &File, start: u64, end: u64, path: &Path) -> Result<()> {
    fault::check(FaultPoint::ZeroFill, path).map_err(|source| Error::io("zero-fill", path, source))?;
    let mut offset = start;
    while offset < end {
        // Align later writes to page boundaries so each one fills exactly one page.
        let page_end = (offset / ZERO_FILL_CHUNK_BYTES as u64 + 1) * ZERO_FILL_CHUNK_BYTES as u64;
        let chunk_end = page_end.min(end);
        file.write_all_at(&ZERO_PAGE[..(chunk_end - offset) as usize], offset).map_err(|source| Error::io("zero-fill", path, source))?;
        offset = chunk_end;
    }
    Ok(())
}

/// Flushes the zeros written so far into a segment being prepared (part of zero-filling,
/// so it shares that fault point).
pub(crate) fn flush_zero_fill(file: &File, path: &Path) -> Result<()> {
    fault::check(FaultPoint::ZeroFill, path)
        .and_then(|()| rustix::fs::fdatasync(file).map_err(Into::into))
        .map_err(|source| Error::io("flush zero-fill", path, source))
}

/// Drops the cached pages of `[start, end)` (clean ones; a hint, so failures are
/// ignored): recovery reads the segment appends continue in to its end, and readahead
/// caches what it read in large folios, which a store through the mapping dirties
/// whole and msync writes back whole: many times the bytes appended.
/// Zeros written afterwards in pages come back in 4 KiB folios.
pub(crate) fn drop_cached(file: &File, start: u64, end: u64) {
    if let Some(length) = end.checked_sub(start).and_then(std::num::NonZeroU64::new) {
        let _ = rustix::fs::fadvise(file, start, Some(length), rustix::fs::Advice::DontNeed);
    }
}

/// The first range at or after `offset` that may hold non-zero bytes (not empty, and
/// starting at `offset` or later), or `None` if nothing past `offset` does. What lies
/// outside such ranges the file system reports as holes (unallocated or unwritten blocks
/// with nothing in the page cache), which read as zeros: readers skip them instead of
/// reading them, which for an unwritten block would also fill the page cache with zeros.
/// Where the file system cannot tell (an error other than "no data past here"), the rest
/// of the file counts as data.
pub(crate) fn data_range_from(file: &File, offset: u64) -> Option<Range<u64>> {
    let start = match rustix::fs::seek(file, rustix::fs::SeekFrom::Data(offset)) {
        Ok(start) => start,
        Err(rustix::io::Errno::NXIO) => return None,
        Err(_) => return Some(offset..u64::MAX),
    };
    // A hole starts past any data offset, and at the latest at the end of the file.
    let end = rustix::fs::seek(file, rustix::fs::SeekFrom::Hole(start)).unwrap_or(u64::MAX);
    Some(start..end.max(start + 1))
}

/// The ranges of `[from, to)` that may hold non-zero bytes, in order (see
/// [`data_range_from`]).
pub(crate) fn data_ranges(file: &File, from: u64, to: u64) -> impl Iterator<Item = Range<u64>> + '_ {
    let mut offset = from;
    std::iter::from_fn(move || {
        if offset >= to {
            return None;
        }
        let range = data_range_from(file, offset)?;
        let (start, end) = (range.start.min(to), range.end.min(to));
        offset = end;
        (start < end).then_some(start..end)
    })
}

/// Reads exactly `buffer.len()` bytes at `offset`; a short file is an error.
pub(crate) fn read_exact_at(file: &File, buffer: &mut [u8], offset: u64, path: &Path) -> Result<()> {
    file.read_exact_at(buffer, offset).map_err(|source| Error::io("read", path, source))
}
