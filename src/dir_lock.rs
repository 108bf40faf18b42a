//! The directory lock: one writing log per directory, across processes.

use std::fs::{File, OpenOptions};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use rustix::fs::FlockOperation;

use crate::error::{Error, Result};

pub(crate) const LOCK_FILE_NAME: &str = "LOCK";
/// How long a busy lock is retried before the directory is reported in use.
const LOCK_RETRY_DURATION: std::time::Duration = std::time::Duration::from_millis(200);

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
        // A child forked by another thread holds a copy of a just-closed log's lock until it
        // execs; a few retries let that window pass before calling the directory busy.
        let mut delay = std::time::Duration::from_millis(1);
        let deadline = std::time::Instant::now() + LOCK_RETRY_DURATION;
        loop {
            match rustix::fs::flock(&file, operation) {
                Ok(()) => return Ok(DirLock { _file: file }),
                Err(rustix::io::Errno::WOULDBLOCK) if std::time::Instant::now() < deadline => {
                    std::thread::sleep(delay);
                    delay = (delay * 2).min(std::time::Duration::from_millis(20));
                }
                Err(rustix::io::Errno::WOULDBLOCK) => return Err(Error::AlreadyInUse { path: directory.to_path_buf() }),
                Err(errno) => return Err(Error::io("lock", &path, errno.into())),
            }
        }
    }
}
