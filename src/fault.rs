//! Fault injection: every file-system call that can lose data passes a named fault
//! point (see `fs.rs`). With the `fault-injection` feature, tests arm a point for a
//! directory so that one of its calls fails; without it, checks compile to nothing.

use std::io;
use std::path::Path;

/// A kind of file-system call that the log's durability depends on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum FaultPoint {
    Fsync,
    Fdatasync,
    Msync,
    Fallocate,
    Rename,
    DirectoryFsync,
    HeaderWrite,
    ZeroFill,
}

impl FaultPoint {
    pub const ALL: [FaultPoint; 8] = [
        FaultPoint::Fsync,
        FaultPoint::Fdatasync,
        FaultPoint::Msync,
        FaultPoint::Fallocate,
        FaultPoint::Rename,
        FaultPoint::DirectoryFsync,
        FaultPoint::HeaderWrite,
        FaultPoint::ZeroFill,
    ];
}

#[cfg(feature = "fault-injection")]
mod armed {
    use super::FaultPoint;
    use std::collections::HashMap;
    use std::io;
    use std::path::{Path, PathBuf};
    use std::sync::Mutex;

    struct Registry {
        /// Directories whose calls are counted and may fail.
        watched: Vec<PathBuf>,
        /// (directory, point) → calls to let through before failing one.
        armed: HashMap<(PathBuf, FaultPoint), u64>,
        calls: HashMap<(PathBuf, FaultPoint), u64>,
    }

    static REGISTRY: Mutex<Option<Registry>> = Mutex::new(None);

    fn with<R>(f: impl FnOnce(&mut Registry) -> R) -> R {
        let mut guard = REGISTRY.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let registry = guard.get_or_insert_with(|| Registry { watched: Vec::new(), armed: HashMap::new(), calls: HashMap::new() });
        f(registry)
    }

    /// Makes the call after the next `calls_before_failure` calls of `point` on files of
    /// `directory` fail once with EIO. Starts watching `directory`.
    pub fn arm(directory: &Path, point: FaultPoint, calls_before_failure: u64) {
        watch(directory);
        with(|registry| registry.armed.insert((directory.to_path_buf(), point), calls_before_failure));
    }

    /// Starts counting the calls on files of `directory` (and the directory itself).
    pub fn watch(directory: &Path) {
        with(|registry| {
            if !registry.watched.iter().any(|dir| dir == directory) {
                registry.watched.push(directory.to_path_buf());
            }
        });
    }

    /// Forgets every armed fault and count of `directory`, and stops watching it.
    pub fn reset(directory: &Path) {
        with(|registry| {
            registry.watched.retain(|dir| dir != directory);
            registry.armed.retain(|(dir, _), _| dir != directory);
            registry.calls.retain(|(dir, _), _| dir != directory);
        });
    }

    /// How often `point` was passed for files of `directory`.
    pub fn calls(directory: &Path, point: FaultPoint) -> u64 {
        with(|registry| registry.calls.get(&(directory.to_path_buf(), point)).copied().unwrap_or(0))
    }

    #[cfg_attr(loom, allow(dead_code))] // the loom build has no file system to fault
    pub(crate) fn check(point: FaultPoint, path: &Path) -> io::Result<()> {
        with(|registry| {
            let Some(directory) = registry.watched.iter().find(|dir| path.starts_with(dir)).cloned() else {
                return Ok(());
            };
            *registry.calls.entry((directory.clone(), point)).or_insert(0) += 1;
            match registry.armed.get_mut(&(directory.clone(), point)) {
                Some(0) => {
                    registry.armed.remove(&(directory, point));
                    Err(io::Error::from_raw_os_error(5))
                }
                Some(remaining) => {
                    *remaining -= 1;
                    Ok(())
                }
                None => Ok(()),
            }
        })
    }
}

#[cfg(feature = "fault-injection")]
pub use armed::{arm, calls, reset, watch};

/// Sees every `msync` the log makes: the file, the page-aligned byte range, and the call
/// itself to run (crash simulations record what each sync put on the disk).
#[cfg(feature = "fault-injection")]
pub type SyncObserver = std::sync::Arc<dyn Fn(&Path, u64, u64, &mut dyn FnMut() -> io::Result<()>) -> io::Result<()> + Send + Sync>;

#[cfg(feature = "fault-injection")]
static SYNC_OBSERVER: std::sync::RwLock<Option<SyncObserver>> = std::sync::RwLock::new(None);

/// Installs (or with `None` removes) the process-wide [`SyncObserver`].
#[cfg(feature = "fault-injection")]
pub fn observe_syncs(observer: Option<SyncObserver>) {
    *SYNC_OBSERVER.write().unwrap_or_else(|poisoned| poisoned.into_inner()) = observer;
}

/// Runs the msync of `[offset, offset + length_bytes)` of `path`, through the observer
/// if one is installed.
#[cfg(feature = "fault-injection")]
#[cfg_attr(loom, allow(dead_code))] // the loom build has no file system to fault
pub(crate) fn around_msync(path: &Path, offset: u64, length_bytes: u64, sync: &mut dyn FnMut() -> io::Result<()>) -> io::Result<()> {
    let observer = SYNC_OBSERVER.read().unwrap_or_else(|poisoned| poisoned.into_inner()).clone();
    match observer {
        Some(observer) => observer(path, offset, length_bytes, sync),
        None => sync(),
    }
}

#[cfg(not(feature = "fault-injection"))]
#[inline(always)]
#[cfg_attr(loom, allow(dead_code))] // the loom build has no file system to fault
pub(crate) fn around_msync(_path: &Path, _offset: u64, _length_bytes: u64, sync: &mut dyn FnMut() -> io::Result<()>) -> io::Result<()> {
    sync()
}

#[cfg(feature = "fault-injection")]
#[cfg_attr(loom, allow(dead_code))] // the loom build has no file system to fault
pub(crate) fn check(point: FaultPoint, path: &Path) -> io::Result<()> {
    armed::check(point, path)
}

#[cfg(not(feature = "fault-injection"))]
#[inline(always)]
#[cfg_attr(loom, allow(dead_code))] // the loom build has no file system to fault
pub(crate) fn check(_point: FaultPoint, _path: &Path) -> io::Result<()> {
    Ok(())
}
