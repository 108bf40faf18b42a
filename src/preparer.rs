//! The background preparer: keeps the next segment created, allocated, zeroed, synced,
//! named and mapped before the appenders need it, so that a rotation is a pointer swap.
//!
//! With [`SyncMode::None`](crate::SyncMode::None) it also faults the mappings in,
//! writable, first the segment the log opened in, then each segment it prepares: a
//! first write to a page of a file mapping costs a fault that makes the page dirty,
//! which cost more than the 4 KiB copy itself (W5: 4 KiB appends went from 1.9 to
//! 9–12 GB/s once the writer stopped taking those faults). Nothing syncs in that mode,
//! so dirtying pages ahead costs no write-protect round trips; the price is that pages
//! left unwritten for the kernel's dirty expiry (30 s by default) are written back as
//! zeros once. The durable modes never do it: a sync would write the dirtied zeros of
//! its whole range back (fdatasync) or write-protect them again (msync).

use std::path::PathBuf;
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;

use crate::error::{Error, Result};
use crate::mapping::SegmentMap;
use crate::segment::{self, SegmentFile, SegmentInfo, SEGMENT_HEADER_SIZE};

/// Bytes faulted in per call when the preparer faults a mapping in: small enough that
/// appenders faulting ahead of themselves interleave with it.
const FAULT_IN_WINDOW_BYTES: u64 = 1 << 20;

/// A prepared segment: its file, and its mapping with nothing published yet.
pub(crate) struct Prepared {
    pub file: SegmentFile,
    pub map: Arc<SegmentMap>,
}

struct State {
    /// The segment to prepare next.
    next: SegmentInfo,
    ready: Option<Result<Prepared>>,
    /// The thread is faulting a mapping in.
    faulting_in: bool,
    /// A preparation failed: every later request gets this error (its file was removed).
    failed: Option<Arc<Error>>,
    shutdown: bool,
}

struct Shared {
    directory: PathBuf,
    /// Fault mappings in (`SyncMode::None`).
    fault_in: bool,
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
    /// Starts preparing `first_sequence` at `first_base_position`, and so on. With
    /// `fault_in`, first faults in the rest of `current` (the segment appends go to).
    pub(crate) fn start(
        directory: PathBuf,
        first_sequence: u64,
        first_base_position: u64,
        size_bytes: u64,
        fault_in: bool,
        current: Arc<SegmentMap>,
    ) -> Result<Self> {
        let next = SegmentInfo { sequence: first_sequence, base_position: first_base_position, size_bytes, generation: 0 };
        let shared = Arc::new(Shared {
            directory,
            fault_in,
            state: Mutex::new(State { next, ready: None, faulting_in: fault_in, failed: None, shutdown: false }),
            changed: Condvar::new(),
        });
        let thread_shared = Arc::clone(&shared);
        let thread = std::thread::Builder::new()
            .name("segstore-preparer".into())
            .spawn(move || run(&thread_shared, current))
            .map_err(|source| Error::io("spawn segment preparer", &shared.directory, source))?;
        Ok(Preparer { shared, thread: Some(thread) })
    }

    /// The next segment, waiting for it if the preparer is behind.
    pub(crate) fn take(&self) -> Result<Prepared> {
        let mut state = lock(&self.shared);
        loop {
            if let Some(failed) = &state.failed {
                return Err(Error::Poisoned { cause: Arc::clone(failed) });
            }
            if let Some(ready) = state.ready.take() {
                self.shared.changed.notify_all();
                return match ready {
                    Ok(prepared) => Ok(prepared),
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

    /// Returns once the next segment is prepared (or its preparation failed) and no
    /// mapping is being faulted in: the thread is idle until the next rotation.
    pub(crate) fn wait_idle(&self) {
        let mut state = lock(&self.shared);
        while !state.shutdown && (state.faulting_in || (state.ready.is_none() && state.failed.is_none())) {
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
        lock(&self.shared).ready.take().and_then(Result::ok).map(|prepared| prepared.file)
    }
}

impl Drop for Preparer {
    fn drop(&mut self) {
        self.stop();
    }
}

fn run(shared: &Shared, current: Arc<SegmentMap>) {
    if shared.fault_in {
        fault_in(shared, &current);
    }
    drop(current);
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
        let prepared = segment::prepare(&shared.directory, info).and_then(|file| {
            let map = SegmentMap::map_file(&file.file, info.size_bytes, info.base_position, info.generation, SEGMENT_HEADER_SIZE)
                .map_err(|source| Error::io("map segment", &file.path, source))?;
            Ok(Prepared { file, map: Arc::new(map) })
        });
        let to_fault_in = prepared.as_ref().ok().filter(|_| shared.fault_in).map(|prepared| Arc::clone(&prepared.map));
        {
            let mut state = lock(shared);
            if prepared.is_ok() {
                state.next = SegmentInfo { sequence: info.sequence + 1, base_position: info.end_position(), ..info };
            } else if let Err(error) = &prepared {
                log::error!("{}: preparing segment {} failed: {error}", shared.directory.display(), info.file_name());
            }
            state.ready = Some(prepared);
            state.faulting_in = to_fault_in.is_some();
            shared.changed.notify_all();
        }
        // After handing it over: a rotation never waits for this.
        if let Some(map) = to_fault_in {
            fault_in(shared, &map);
        }
    }
}

/// Faults `map` in from its prefault frontier to its end, a window at a time, stopping
/// early if the log closes; then clears `faulting_in`.
fn fault_in(shared: &Shared, map: &SegmentMap) {
    while !lock(shared).shutdown && map.prefault_next_window(FAULT_IN_WINDOW_BYTES) {}
    lock(shared).faulting_in = false;
    shared.changed.notify_all();
}
