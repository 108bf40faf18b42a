//! The directory lock: one writing log per directory, across processes.

use std::fs::{File, OpenOptions};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use rustix::fs::FlockOperation;

use crate::error::{Error, Result};

pub(crate) const LOCK_FILE_NAME: &str = "LOCK";

/// An `flock` on `<dir>/LOCK`, held until drop: exclusive for a writable log, shared
/// for read-only ones. The kernel drops it if the process dies.
#[derive(Debug)]
pub(crate) struct DirLock {
    _file: File,
}

impl DirLock {
    pub(crate) fn acquire(directory: &Path, exclusive: bool) -> Result<Self> {
        let path: PathBuf = directory.join(LOCK_FILE_NAME);
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(&path)
            .map_err(|source| Error::io("open lock file", &path, source))?;
        let operation = if exclusive { FlockOperation::NonBlockingLockExclusive } else { FlockOperation::NonBlockingLockShared };
        match rustix::fs::flock(&file, operation) {
            Ok(()) => Ok(DirLock { _file: file }),
            Err(rustix::io::Errno::WOULDBLOCK) => Err(Error::AlreadyInUse { path: directory.to_path_buf() }),
            Err(errno) => Err(Error::io("lock", &path, errno.into())),
        }
    }
}
