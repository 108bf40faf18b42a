//! segstore: a write-ahead log for Raft, built from preallocated, memory-mapped segment
//! files that many threads append to at once without a lock, with group-committed,
//! fail-stop durability and protocol-aware recovery.
//!
//! ```no_run
//! use segstore::{Log, Options, RecordKind};
//!
//! let log = Log::open("/var/lib/example/wal", Options::default())?;
//! let appended = log.append_durable(RecordKind(16), b"hello")?;
//! assert_eq!(log.read(appended.position)?.payload, b"hello");
//! # Ok::<(), segstore::Error>(())
//! ```
//!
//! See `ARCHITECTURE.md` for how it works and what it guarantees.

#![deny(unsafe_code)]
#![deny(clippy::undocumented_unsafe_blocks)]

mod checksum;
mod commit;
#[cfg(not(loom))]
mod committed_feed;
pub mod error;
pub mod fault;
pub mod mapping;
pub mod raftpb;
pub mod record;
mod sync;

#[cfg(not(loom))]
mod dir_lock;
#[cfg(not(loom))]
pub mod entry_index;
#[cfg(not(loom))]
mod fs;
#[cfg(not(loom))]
mod log;
#[cfg(not(loom))]
mod options;
#[cfg(not(loom))]
mod preparer;
#[cfg(not(loom))]
mod read_ahead;
#[cfg(not(loom))]
pub mod reader;
#[cfg(not(loom))]
pub mod recovery;
#[cfg(not(loom))]
pub mod segment;
#[cfg(not(loom))]
pub mod snapshotter;
#[cfg(not(loom))]
pub mod storage;

pub use error::{Error, Result};
#[cfg(not(loom))]
pub use log::{Appended, Log, LogIter, Position, Record, RecoveryReport};
#[cfg(not(loom))]
pub use options::{Options, SyncMode, MIN_SEGMENT_SIZE_BYTES};
pub use record::RecordKind;
#[cfg(not(loom))]
pub use snapshotter::Snapshotter;
#[cfg(not(loom))]
pub use storage::{SnapshotMarker, Storage};

/// The group-commit machinery and the wait word, exposed for the loom models and the
/// tests of the mapping only.
#[doc(hidden)]
pub mod model {
    pub use crate::commit::GroupCommit;
    pub use crate::sync::WaitWord;
}
