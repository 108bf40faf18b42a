//! How a log is configured.

use crate::error::{Error, Result};
use crate::mapping::MAX_SEGMENT_SIZE_BYTES;
use crate::record::RECORD_HEADER_SIZE;
use crate::segment::SEGMENT_HEADER_SIZE;

/// How appended bytes are made durable.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum SyncMode {
    /// `msync(MS_SYNC)` of the page-aligned range appended since the last sync: a ranged
    /// fdatasync that writes back only the pages the appends touched.
    #[default]
    Msync,
    /// `fdatasync` of every segment the appended range touches.
    Fdatasync,
    /// No sync at all: `wait_durable` returns once records are published. For tests and
    /// benchmarks that say so; nothing survives a power loss.
    None,
}

/// Options of [`crate::Log::open`].
#[derive(Clone, Debug)]
pub struct Options {
    /// Size of every new segment file (default 64 MiB). A record must fit in an empty
    /// segment; larger ones are rejected with [`Error::RecordTooLarge`].
    pub segment_size_bytes: u64,
    pub sync_mode: SyncMode,
}

impl Default for Options {
    fn default() -> Self {
        Options { segment_size_bytes: 64 << 20, sync_mode: SyncMode::default() }
    }
}

/// The smallest segment: a header, one empty record and the seal.
pub const MIN_SEGMENT_SIZE_BYTES: u64 = 4096;
const _: () = assert!(MIN_SEGMENT_SIZE_BYTES >= SEGMENT_HEADER_SIZE + 2 * RECORD_HEADER_SIZE as u64);

impl Options {
    pub(crate) fn validate(&self) -> Result<()> {
        let size = self.segment_size_bytes;
        if !(MIN_SEGMENT_SIZE_BYTES..=MAX_SEGMENT_SIZE_BYTES).contains(&size) || !size.is_multiple_of(4096) {
            return Err(Error::invalid(format!(
                "segment_size_bytes {size} must be a multiple of 4096 between {MIN_SEGMENT_SIZE_BYTES} and {MAX_SEGMENT_SIZE_BYTES}"
            )));
        }
        Ok(())
    }
}
