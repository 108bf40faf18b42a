//! The one error type of the crate.

use std::fmt;
use std::io;
use std::path::PathBuf;
use std::sync::Arc;

/// Everything that can go wrong, with the context needed to act on it.
#[non_exhaustive]
#[derive(Debug)]
pub enum Error {
    /// A file-system call failed.
    Io { operation: &'static str, path: PathBuf, source: io::Error },
    /// Bytes on disk that cannot be what segstore wrote, at a named place. Nothing was
    /// truncated or dropped.
    Corrupt { path: PathBuf, offset: u64, reason: String },
    /// Another log holds the directory's lock.
    AlreadyInUse { path: PathBuf },
    /// An earlier failure (of a sync, a rename, a segment preparation…) stopped the log:
    /// nothing is acknowledged after it and no sync is retried, because after a failed
    /// writeback the kernel may report later syncs as successful while the disk holds
    /// old bytes. Close the log and open it again to recover what was durable.
    Poisoned { cause: Arc<Error> },
    /// A record larger than an empty segment can hold.
    RecordTooLarge { payload_bytes: u64, limit_bytes: u64 },
    /// An argument or option out of its range.
    InvalidArgument { reason: String },
    /// The log was opened read-only.
    ReadOnly,
    /// `Storage::create` found a log already there.
    AlreadyExists { path: PathBuf },
    /// The snapshot the storage was opened at has no marker in the log (it was never
    /// saved, or the segments holding it were released).
    SnapshotNotFound { index: u64, term: u64 },
    /// The log has a snapshot marker at the index asked for, with another term.
    SnapshotMismatch { index: u64, expected_term: u64, found_term: u64 },
    /// Two metadata records of one log differ.
    MetadataConflict,
    /// An entry would leave a hole in the log: Raft appends at most one past the last.
    EntryGap { expected: u64, found: u64 },
    /// Entries at and below `first_index - 1` were compacted away.
    Compacted { index: u64, first_index: u64 },
    /// The entry is beyond the last one in the log.
    Unavailable { index: u64, last_index: u64 },
    /// A record of the Raft layer that does not decode.
    BadRecord { position: u64, reason: String },
    /// While replaying at open, a record rewrites an entry that a hard state had already
    /// committed and that was handed to the caller: Raft never does that.
    CommittedEntryRewritten { index: u64, position: u64, delivered_through: u64 },
    /// No snapshot file qualifies.
    NoSnapshot,
}

// The loom build leaves out the file-system half of the crate, which builds these.
#[cfg_attr(loom, allow(dead_code))]
impl Error {
    pub(crate) fn io(operation: &'static str, path: impl Into<PathBuf>, source: io::Error) -> Self {
        Error::Io { operation, path: path.into(), source }
    }

    pub(crate) fn corrupt(path: impl Into<PathBuf>, offset: u64, reason: impl Into<String>) -> Self {
        Error::Corrupt { path: path.into(), offset, reason: reason.into() }
    }

    pub(crate) fn invalid(reason: impl Into<String>) -> Self {
        Error::InvalidArgument { reason: reason.into() }
    }

    /// The failure at the root of a poisoned log, or this error itself.
    pub fn root_cause(&self) -> &Error {
        match self {
            Error::Poisoned { cause } => cause.root_cause(),
            other => other,
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Io { operation, path, source } => write!(f, "{operation} {}: {source}", path.display()),
            Error::Corrupt { path, offset, reason } => write!(f, "corrupt log: {} at offset {offset}: {reason}", path.display()),
            Error::AlreadyInUse { path } => write!(f, "{} is already in use by another log", path.display()),
            Error::Poisoned { cause } => write!(f, "log stopped after an earlier failure: {cause}"),
            Error::RecordTooLarge { payload_bytes, limit_bytes } => {
                write!(f, "record of {payload_bytes} bytes exceeds the largest a segment holds ({limit_bytes} bytes)")
            }
            Error::InvalidArgument { reason } => write!(f, "invalid argument: {reason}"),
            Error::ReadOnly => write!(f, "the log was opened read-only"),
            Error::AlreadyExists { path } => write!(f, "{} already holds a log", path.display()),
            Error::SnapshotNotFound { index, term } => write!(f, "no snapshot marker at index {index}, term {term} in the log"),
            Error::SnapshotMismatch { index, expected_term, found_term } => {
                write!(f, "the snapshot marker at index {index} has term {found_term}, not {expected_term}")
            }
            Error::MetadataConflict => write!(f, "the log's metadata records differ"),
            Error::EntryGap { expected, found } => write!(f, "entry {found} would leave a hole: the next entry is {expected}"),
            Error::Compacted { index, first_index } => write!(f, "entry {index} was compacted; the first entry is {first_index}"),
            Error::Unavailable { index, last_index } => write!(f, "entry {index} is not in the log; the last entry is {last_index}"),
            Error::BadRecord { position, reason } => write!(f, "record at log position {position} does not decode: {reason}"),
            Error::CommittedEntryRewritten { index, position, delivered_through } => write!(
                f,
                "the record at log position {position} rewrites entry {index}, but entries up to {delivered_through} were committed and already replayed"
            ),
            Error::NoSnapshot => write!(f, "no usable snapshot"),
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Error::Io { source, .. } => Some(source),
            Error::Poisoned { cause } => Some(cause.as_ref()),
            _ => None,
        }
    }
}

impl From<Error> for io::Error {
    fn from(error: Error) -> io::Error {
        let kind = match &error {
            Error::Io { source, .. } => source.kind(),
            Error::Corrupt { .. } => io::ErrorKind::InvalidData,
            Error::AlreadyInUse { .. } => io::ErrorKind::WouldBlock,
            Error::InvalidArgument { .. } | Error::RecordTooLarge { .. } => io::ErrorKind::InvalidInput,
            Error::ReadOnly => io::ErrorKind::PermissionDenied,
            Error::AlreadyExists { .. } => io::ErrorKind::AlreadyExists,
            Error::SnapshotNotFound { .. } | Error::NoSnapshot | Error::Unavailable { .. } | Error::Compacted { .. } => {
                io::ErrorKind::NotFound
            }
            Error::SnapshotMismatch { .. } | Error::MetadataConflict | Error::BadRecord { .. } | Error::CommittedEntryRewritten { .. } => {
                io::ErrorKind::InvalidData
            }
            Error::EntryGap { .. } => io::ErrorKind::InvalidInput,
            Error::Poisoned { .. } => io::ErrorKind::Other,
        };
        io::Error::new(kind, error)
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
