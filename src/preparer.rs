//! The background preparer: keeps the next segment created, allocated, synced, named
//! and mapped before the appenders need it, so that a rotation is a pointer swap; and
//! zero-fills the segment appends go to ahead of them.
//!
//! A new segment gets only a head zero-filled before it is handed over (1.5 times what
//! the log used of the last segment sealed, see [`zero_fill_head_bytes`]); the
//! thread zero-fills the rest as the appends come within a quarter lead of what it was
//! asked for (see `mapping.rs`, point 5), flushing at most 4 MiB at a time. A rotation
//! of a full segment finds the whole of the next one zero-filled, as before; an
//! explicit cut no longer costs a whole segment of zero writes: cutting 64 MiB segments
//! every ~1.3 MB wrote ~170 MB/s of zeros beside the appends and put their p99.9 at
//! 10.6x the run without cuts (W6).
//!
//! With [`SyncMode::None`](crate::SyncMode::None) it also faults the mappings in,
//! writable, first the segment the log opened in, then each segment it prepares: a
//! first write to a page of a file mapping costs a fault that makes the page dirty,
//! which cost more than the 4 KiB copy itself (W5: 4 KiB appends went from 1.9 to
//! 9–12 GB/s once the writer stopped taking those faults). Nothing syncs in that mode,
//! so dirtying pages ahead costs no write-protect round trips; the price is that pages
//! left unwritten for the kernel's dirty expiry (30 s by default) are written back as
//! zeros once. With fdatasync it never does: the sync would write the dirtied zeros of
//! the whole file back. With msync, while the syncs are large (see `log.rs`), it keeps
//! a lead of 1 MiB past the appends faulted in (see [`prefault_lead_bytes`]).

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;

use crate::error::{Error, Result};
use crate::fs;
use crate::mapping::{Lead, SegmentMap};
use crate::options::SyncMode;
use crate::segment::{self, SegmentFile, SegmentInfo, SEGMENT_HEADER_SIZE, ZERO_FILL_FLUSH_BYTES};
use crate::sync::WaitWord;

/// How much of a new segment is zero-filled before it is handed over, at least. The
/// preparer gives it 1.5 times what the log used of the last segment sealed (all of it
/// while segments fill up, or when nothing was sealed yet): zeros written in the
/// current segment's file instead are converted from unwritten extents in a journal
/// commit that an append syncing meanwhile waits for. Appends ask for more zeros once
/// within a quarter lead (a quarter of their own way into the segment) of what was
/// asked for, so a segment taking up to 1.2 times what the last one took asks for none.
/// W6, cuts every ~1.3 MB of 64 MiB segments, p99.9 against the run without cuts
/// (5 rounds each): whole segments 10.6x; 1 MiB heads and the rest zero-filled ahead of
/// the appends 2.6x; twice the last use, asking at half a lead, 1.24x; 1.5 times,
/// asking at a quarter, 1.12x and 1.03x. The head is flushed in one piece, and the less
/// of it there is, the shorter the appends syncing meanwhile wait behind it.
const NEW_SEGMENT_ZERO_FILL_BYTES: u64 = 1 << 20;
/// Who makes a new segment, for [`zero_fill_head_bytes`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Maker {
    /// Opening a log with no segment: appends wait for it.
    Open,
    /// The preparer, in the background; `last_used_bytes` is what the log used of the
    /// last segment sealed, if any was.
    Preparer { last_used_bytes: Option<u64> },
}

/// How much of a new segment of `size_bytes` is zero-filled before appends enter it (the
/// zero-filler does the rest ahead of them). Without a zero-filler (`fault_in`, no-sync
/// mode): all of it. Made by opening: [`NEW_SEGMENT_ZERO_FILL_BYTES`], so that opening
/// stays quick. Made by the preparer: 1.5 times the last use, at least
/// [`NEW_SEGMENT_ZERO_FILL_BYTES`], or all of it before any segment was sealed (nothing
/// is waiting for it then).
pub(crate) fn zero_fill_head_bytes(size_bytes: u64, fault_in: bool, maker: Maker) -> u64 {
    let head_bytes = match maker {
        _ if fault_in => size_bytes,
        Maker::Open => NEW_SEGMENT_ZERO_FILL_BYTES,
        Maker::Preparer { last_used_bytes: Some(used_bytes) } => (used_bytes.saturating_mul(3) / 2).max(NEW_SEGMENT_ZERO_FILL_BYTES),
        Maker::Preparer { last_used_bytes: None } => size_bytes,
    };
    head_bytes.min(size_bytes)
}

/// How far ahead of the appends the zero-filled part of a segment is kept: as far as
/// they have come in it, from 1 MiB up to two flush chunks (then the appends ask for
/// more with 2 MiB still to go).
const ZERO_FILL_LEAD: Lead = Lead { min_bytes: 1 << 20, max_bytes: 2 * ZERO_FILL_FLUSH_BYTES };
/// The zero-filler rounds what it is asked for up to this: no flush of a few pages.
const ZERO_FILL_GRANULE_BYTES: u64 = 256 << 10;

/// Bytes faulted in per call when the preparer faults a mapping in: small enough that
/// appenders faulting ahead of themselves interleave with it.
const FAULT_IN_WINDOW_BYTES: u64 = 1 << 20;

/// With msync, how far past the appends the thread keeps pages faulted in writable
/// (see [`prefault_lead_bytes`]).
const PREFAULT_LEAD_BYTES: u64 = 1 << 20;
/// Bytes faulted in per call for the appends' lead: a quarter of it (64 pages, at ~2 µs
/// a fault about 0.13 ms), so that a zero-fill the appends wait for is not kept behind
/// a whole lead of faulting.
const LEAD_FAULT_IN_BYTES: u64 = PREFAULT_LEAD_BYTES / 4;

/// How far ahead of the appends the thread keeps pages faulted in, for a sync mode.
/// A first store into a page of a file mapping faults (the file system's
/// `page_mkwrite`, ~2 µs here); 17 of them made up most of the gap between a 64 KiB
/// save through the mapping and one through `pwrite`. Faulted in by this thread, the
/// pages are dirty zeros the appends then fill: msync writes back only the range it
/// syncs, and a sync drops its pages from the page tables first (`unmap_pages`), so
/// these pages cost no write-protect round trip and no interrupt to this thread's CPU.
/// W2 (`segstore-bench --rounds 3 --only w2,w6 --no-etcd`, alternating): 0.66-0.78x
/// the raw `pwrite` bandwidth without, 0.82-0.96x with. What is left of the lead past
/// a cut (at most 1 MiB) stays dirty, and the kernel's flusher writes it back as zeros.
/// A 256 KiB lead helped less (0.72-0.84x): the thread fell behind. fdatasync would
/// write the whole file's dirty zeros back: none there.
pub(crate) fn prefault_lead_bytes(sync_mode: SyncMode) -> u64 {
    match sync_mode {
        SyncMode::Msync => PREFAULT_LEAD_BYTES,
        SyncMode::Fdatasync | SyncMode::None => 0,
    }
}

/// A prepared segment: its file, and its mapping with nothing published yet.
pub(crate) struct Prepared {
    pub file: SegmentFile,
    pub map: Arc<SegmentMap>,
}

/// A segment the thread zero-fills ahead of the appends, through its own open file
/// description: a write-back error its flush reports is then still reported to the
/// log's own syncs of the file (each open file description sees each error once).
struct Filling {
    map: Arc<SegmentMap>,
    file: File,
    path: PathBuf,
}

impl Filling {
    fn open(map: Arc<SegmentMap>, path: &Path) -> Result<Filling> {
        let file = File::options().write(true).open(path).map_err(|source| Error::io("open segment to zero-fill", path, source))?;
        Ok(Filling { map, file, path: path.to_path_buf() })
    }

    /// Zero-fills the next chunk the appends asked for; `false` when there is none.
    fn fill_next_chunk(&self) -> Result<bool> {
        let Some((start, end)) = self.map.next_zero_fill(ZERO_FILL_GRANULE_BYTES, ZERO_FILL_FLUSH_BYTES) else { return Ok(false) };
        let filled = fs::write_zeros(&self.file, start, end, &self.path).and_then(|()| fs::flush_zero_fill(&self.file, &self.path));
        match filled {
            Ok(()) => {
                self.map.zero_filled(end);
                Ok(true)
            }
            Err(error) => {
                self.map.zero_fill_failed();
                Err(error)
            }
        }
    }
}

struct State {
    /// The segment to prepare next.
    next: SegmentInfo,
    ready: Option<Result<Prepared>>,
    /// The thread is faulting a mapping in.
    faulting_in: bool,
    /// A preparation or a zero-fill failed: every later request gets this error.
    failed: Option<Arc<Error>>,
    shutdown: bool,
}

struct Shared {
    directory: PathBuf,
    /// Fault mappings in (`SyncMode::None`) rather than zero-fill ahead of the appends.
    fault_in: bool,
    /// How far ahead of the appends pages are kept faulted in ([`prefault_lead_bytes`]).
    prefault_lead_bytes: u64,
    state: Mutex<State>,
    /// Threads waiting for the preparer (`take`, `wait_idle`) sleep on this.
    changed: Condvar,
    /// The preparer thread sleeps on this: segments taken, the log closing and
    /// appends asking for zero-filling wake it.
    work: Arc<WaitWord>,
}

/// A thread preparing segments one ahead of the appenders.
pub(crate) struct Preparer {
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
}

fn lock(shared: &Shared) -> std::sync::MutexGuard<'_, State> {
    shared.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// How the segment appends go to when the log opens is to be kept ahead of them.
pub(crate) enum Current {
    /// Fault it in (`SyncMode::None`): it is writable to its end.
    FaultIn(Arc<SegmentMap>),
    /// Zero-fill it ahead of the appends: a map made with
    /// [`Preparer::zero_fill_ahead`], and its file.
    ZeroFill(Arc<SegmentMap>, PathBuf),
}

impl Preparer {
    /// `map`, to be zero-filled by the preparer woken by `wake` from `writable_offset` on,
    /// and faulted in `prefault_lead_bytes` ahead of the appends.
    pub(crate) fn zero_fill_ahead(map: SegmentMap, writable_offset: u64, wake: &Arc<WaitWord>, prefault_lead_bytes: u64) -> SegmentMap {
        map.with_zero_filler(writable_offset, ZERO_FILL_LEAD, Arc::clone(wake)).with_prefault_lead(prefault_lead_bytes)
    }

    /// Starts preparing `first_sequence` at `first_base_position`, and so on, and keeps
    /// `current` (the segment appends go to) ahead of the appends. With `fault_in`,
    /// segments are faulted in rather than zero-filled ahead (`SyncMode::None`).
    pub(crate) fn start(
        directory: PathBuf,
        first_sequence: u64,
        first_base_position: u64,
        size_bytes: u64,
        wake: Arc<WaitWord>,
        current: Current,
        prefault_lead_bytes: u64,
    ) -> Result<Self> {
        let fault_in = matches!(current, Current::FaultIn(_));
        let next = SegmentInfo { sequence: first_sequence, base_position: first_base_position, size_bytes, generation: 0 };
        let shared = Arc::new(Shared {
            directory,
            fault_in,
            prefault_lead_bytes,
            state: Mutex::new(State { next, ready: None, faulting_in: fault_in, failed: None, shutdown: false }),
            changed: Condvar::new(),
            work: wake,
        });
        let thread_shared = Arc::clone(&shared);
        let thread = std::thread::Builder::new()
            .name("segstore-preparer".into())
            .spawn(move || {
                // A panic here must not leave a rotation waiting for a segment forever.
                if std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| run(&thread_shared, current))).is_err() {
                    fail(&thread_shared, Error::invalid("the segment preparer panicked"));
                }
            })
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
                // The segment taken is the one appends go to next: the thread zero-fills it.
                self.shared.work.change_and_wake(1);
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

    /// Returns once the next segment is prepared (or its preparation failed), no mapping
    /// is being faulted in, and `current` (the segment appends go to) is zero-filled to
    /// its end: the thread is idle until the next rotation.
    pub(crate) fn wait_idle(&self, current: &SegmentMap) {
        current.want_writable(current.size_bytes());
        let mut state = lock(&self.shared);
        while !state.shutdown && state.failed.is_none() && (state.faulting_in || state.ready.is_none() || !current.zero_fill_done()) {
            state = self.shared.changed.wait(state).unwrap_or_else(|poisoned| poisoned.into_inner());
        }
    }

    /// Why the preparer stopped working, if it did (a preparation or a zero-fill failed).
    pub(crate) fn failure(&self) -> Option<Arc<Error>> {
        lock(&self.shared).failed.clone()
    }

    /// Stops the thread; returns the prepared segment nobody took, if any.
    pub(crate) fn stop(&mut self) -> Option<SegmentFile> {
        lock(&self.shared).shutdown = true;
        self.shared.changed.notify_all();
        self.shared.work.change_and_wake(1);
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

fn run(shared: &Shared, current: Current) {
    let mut filling = match current {
        Current::FaultIn(map) => {
            fault_in(shared, &map);
            None
        }
        Current::ZeroFill(map, path) => match Filling::open(Arc::clone(&map), &path) {
            Ok(filling) => Some(filling),
            Err(error) => {
                map.zero_fill_failed();
                fail(shared, error);
                None
            }
        },
    };
    // The segment handed over last: appends go to it once it has been taken.
    let mut handed_over: Option<Filling> = None;
    // How much of the last segment sealed the log used.
    let mut last_used_bytes: Option<u64> = None;
    loop {
        let seen = shared.work.load();
        let to_prepare = {
            let state = lock(shared);
            if state.shutdown {
                return;
            }
            if state.ready.is_none() && handed_over.is_some() {
                let sealed = std::mem::replace(&mut filling, handed_over.take());
                last_used_bytes = sealed.and_then(|sealed| sealed.map.sealed_offset()).or(last_used_bytes);
            }
            (state.ready.is_none() && state.failed.is_none()).then_some(state.next)
        };
        // Appends may be waiting for this, so it comes first.
        if serve_zero_fill(shared, &mut filling) || serve_prefault(&filling) {
            continue;
        }
        if let Some(info) = to_prepare {
            let zero_fill_bytes = zero_fill_head_bytes(info.size_bytes, shared.fault_in, Maker::Preparer { last_used_bytes });
            handed_over = prepare_next(shared, info, zero_fill_bytes, &mut || {
                while serve_zero_fill(shared, &mut filling) {}
                while serve_prefault(&filling) {}
            });
            continue;
        }
        {
            let _state = lock(shared);
            shared.changed.notify_all();
        }
        shared.work.wait(seen);
    }
}

/// Zero-fills the next chunk the appends asked for in `filling`; `true` if it did. A
/// failure ends the filling: appends waiting for it are told through the map.
fn serve_zero_fill(shared: &Shared, filling: &mut Option<Filling>) -> bool {
    let Some(current) = filling else { return false };
    match current.fill_next_chunk() {
        Ok(filled) => {
            if filled {
                let _state = lock(shared);
                shared.changed.notify_all();
            }
            filled
        }
        Err(error) => {
            *filling = None;
            fail(shared, error);
            false
        }
    }
}

/// Faults in the next window of what the appends asked for in `filling`; `true` if it did.
fn serve_prefault(filling: &Option<Filling>) -> bool {
    filling.as_ref().is_some_and(|current| current.map.prefault_wanted(LEAD_FAULT_IN_BYTES))
}

/// Prepares the segment `info` (a fresh generation) with its first `zero_fill_bytes`
/// zero-filled and hands it over; returns what to zero-fill once it is taken.
/// `between_chunks` keeps the current segment ahead of the appends meanwhile.
fn prepare_next(shared: &Shared, info: SegmentInfo, zero_fill_bytes: u64, between_chunks: &mut dyn FnMut()) -> Option<Filling> {
    let info = SegmentInfo { generation: segment::new_generation(info.sequence), ..info };
    let zero_fill_bytes = zero_fill_bytes.next_multiple_of(fs::ZERO_FILL_CHUNK_BYTES as u64).min(info.size_bytes);
    let prepared = segment::prepare(&shared.directory, info, zero_fill_bytes, between_chunks).and_then(|file| {
        let map = SegmentMap::map_file(&file.file, info.size_bytes, info.base_position, info.generation, SEGMENT_HEADER_SIZE)
            .map_err(|source| Error::io("map segment", &file.path, source))?;
        let map =
            if shared.fault_in { map } else { Preparer::zero_fill_ahead(map, zero_fill_bytes, &shared.work, shared.prefault_lead_bytes) };
        let map = Arc::new(map);
        let filling = if shared.fault_in { None } else { Some(Filling::open(Arc::clone(&map), &file.path)?) };
        Ok((Prepared { file, map }, filling))
    });
    let (prepared, filling) = match prepared {
        Ok((prepared, filling)) => (Ok(prepared), filling),
        Err(error) => (Err(error), None),
    };
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
    filling
}

/// The thread cannot go on (a zero-fill failed, or it panicked): appends waiting for a
/// zero-fill were told through the map, later rotations get this error.
fn fail(shared: &Shared, error: Error) {
    log::error!("{}: the segment preparer stopped: {error}", shared.directory.display());
    let mut state = lock(shared);
    if state.failed.is_none() {
        state.failed = Some(Arc::new(error));
    }
    shared.changed.notify_all();
}

/// Faults `map` in from its prefault frontier to its end, a window at a time, stopping
/// early if the log closes; then clears `faulting_in`.
fn fault_in(shared: &Shared, map: &SegmentMap) {
    while !lock(shared).shutdown && map.prefault_next_window(FAULT_IN_WINDOW_BYTES) {}
    lock(shared).faulting_in = false;
    shared.changed.notify_all();
}
