//! The background preparer: keeps the next segment created, allocated, zeroed, synced
//! and named before the appenders need it, so that a rotation is a pointer swap.

use std::path::PathBuf;
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;

use crate::error::{Error, Result};
use crate::segment::{self, SegmentFile, SegmentInfo};

struct State {
    /// The segment to prepare next.
    next: SegmentInfo,
    ready: Option<Result<SegmentFile>>,
    /// A preparation failed: every later request gets this error (its file was removed).
    failed: Option<Arc<Error>>,
    shutdown: bool,
}

struct Shared {
    directory: PathBuf,
    state: Mutex<State>,
    changed: Condvar,
}

/// A thread preparing segments one ahead of the appenders.
pub(crate) struct Preparer {
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
}

fn lock(shared: &Shared) -> std::sync::MutexGuard<'_, State> {
    shared.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl Preparer {
    /// Starts preparing `first_sequence` at `first_base_position`, and so on.
    pub(crate) fn start(directory: PathBuf, first_sequence: u64, first_base_position: u64, size_bytes: u64) -> Result<Self> {
        let next = SegmentInfo { sequence: first_sequence, base_position: first_base_position, size_bytes, generation: 0 };
        let shared = Arc::new(Shared {
            directory,
            state: Mutex::new(State { next, ready: None, failed: None, shutdown: false }),
            changed: Condvar::new(),
        });
        let thread_shared = Arc::clone(&shared);
        let thread = std::thread::Builder::new()
            .name("segstore-preparer".into())
            .spawn(move || run(&thread_shared))
            .map_err(|source| Error::io("spawn segment preparer", &shared.directory, source))?;
        Ok(Preparer { shared, thread: Some(thread) })
    }

    /// The next segment, waiting for it if the preparer is behind.
    pub(crate) fn take(&self) -> Result<SegmentFile> {
        let mut state = lock(&self.shared);
        loop {
            if let Some(failed) = &state.failed {
                return Err(Error::Poisoned { cause: Arc::clone(failed) });
            }
            if let Some(ready) = state.ready.take() {
                self.shared.changed.notify_all();
                return match ready {
                    Ok(file) => Ok(file),
                    Err(error) => {
                        let error = Arc::new(error);
                        state.failed = Some(Arc::clone(&error));
                        Err(Error::Poisoned { cause: error })
                    }
                };
            }
            if state.shutdown {
                return Err(Error::invalid("the log is closing"));
            }
            state = self.shared.changed.wait(state).unwrap_or_else(|poisoned| poisoned.into_inner());
        }
    }

    /// Stops the thread; returns the prepared segment nobody took, if any.
    pub(crate) fn stop(&mut self) -> Option<SegmentFile> {
        lock(&self.shared).shutdown = true;
        self.shared.changed.notify_all();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
        lock(&self.shared).ready.take().and_then(Result::ok)
    }
}

impl Drop for Preparer {
    fn drop(&mut self) {
        self.stop();
    }
}

fn run(shared: &Shared) {
    loop {
        let info = {
            let mut state = lock(shared);
            while !state.shutdown && (state.ready.is_some() || state.failed.is_some()) {
                state = shared.changed.wait(state).unwrap_or_else(|poisoned| poisoned.into_inner());
            }
            if state.shutdown {
                return;
            }
            state.next
        };
        let info = SegmentInfo { generation: segment::new_generation(info.sequence), ..info };
        let prepared = segment::prepare(&shared.directory, info);
        let mut state = lock(shared);
        if prepared.is_ok() {
            state.next = SegmentInfo { sequence: info.sequence + 1, base_position: info.end_position(), ..info };
        } else if let Err(error) = &prepared {
            log::error!("{}: preparing segment {} failed: {error}", shared.directory.display(), info.file_name());
        }
        state.ready = Some(prepared);
        shared.changed.notify_all();
    }
}
