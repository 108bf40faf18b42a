//! The mapped bytes of the segments being appended to, and the lock-free reservation
//! cursor that hands them out. This is the only module of the crate with `unsafe` code.
//!
//! # Safety
//!
//! Writers encode records straight into a shared, writable mapping of a segment file
//! while other threads scan the same mapping for published records. What keeps that
//! free of data races and of use-after-unmap:
//!
//! 1. **One writer per byte.** A [`Claim`] is a byte range `[offset, offset + span)`
//!    obtained from one `fetch_add` on the [`Cursor`]; two `fetch_add`s never return
//!    overlapping ranges, ranges that do not fit below the capacity are never written
//!    (except by the single *crossing* reservation, which owns everything from its
//!    offset to the end of the segment and writes one padding header there), and the
//!    cursor of a segment is never moved backwards. So each byte is written by at most
//!    one thread, through at most one `&mut [u8]` at a time.
//! 2. **Publication.** A claim writes its payload and header bytes `8..32` with plain
//!    stores, then the publication word (bytes `0..8`) with one release store. Readers
//!    ([`SegmentMap::advance_published`]) acquire-load publication words only at record
//!    boundaries, starting from a boundary they already know (the published frontier,
//!    which only ever holds boundaries), and step over a record only once its word is
//!    non-zero. A boundary is never inside another claim's plain-written bytes, so the
//!    atomic loads never race with plain stores. Bytes below the published frontier are
//!    never written again, so copying them out ([`SegmentMap::read_published`]) races
//!    with nothing.
//! 3. **Liveness of the mapping.** The cursor's ring owns an `Arc` of each of the last
//!    `RING_SLOTS` (4) segments and writers dereference a ring slot only while they hold an
//!    unpublished claim in it. A slot is reused only after the segment in it has been
//!    published to its very end, i.e. after every claim in it was published or dropped
//!    (a dropped claim publishes a skip record). A claim does not touch the mapping
//!    after its release store. The slot pointer is stored before the cursor value that
//!    makes it reachable (release), and read after the `fetch_add` (acquire) that
//!    returned that cursor value.
//! 4. **The file under the mapping** is never truncated while mapped: segments are
//!    created at full size by the preparer, the directory lock keeps other cooperating
//!    processes out, and recovery zeroes a torn tail with `pwrite`, never `ftruncate`.
//!    Blocks were allocated (fallocate) before mapping, so a store into the mapping
//!    never needs a block and cannot raise SIGBUS on a full disk. A process outside
//!    segstore truncating a live segment is outside this argument, as for every mapped
//!    file (see memmap2's documentation).
//! 5. **Zero-filling under the writers.** A segment may be mapped before all of it is
//!    zero-filled on disk; the bytes from its *writable offset* on are then written by
//!    one zero-filler thread, through the file (`pwrite`), never through the mapping.
//!    This process touches those bytes in no other way: a claim, and the crossing
//!    reservation's padding header, wait until their range lies below the writable
//!    offset before they write (or, once the filler has failed for good and writes no
//!    more, write their skip record); the frontier scan and the readers stop at it. The
//!    filler moves the offset (release) only past zeros it has written, and it only
//!    grows, so the ranges the filler writes and the ranges anything else touches never
//!    meet. (Faulting pages in ahead of the writers, `prefault_wanted`, stops at the
//!    writable offset too; it reads and writes no byte.)
//!
//! 6. **CPU features.** The checksum's kernels (`checksum.rs`) are `#[target_feature]`
//!    functions: running one on a CPU without its features is undefined. They are
//!    called only through the two shims at the end of this module, whose one caller
//!    (`checksum::dispatch`) calls each only after `is_x86_feature_detected!` said the
//!    CPU has every feature that kernel enables.
//!
//! 7. **Dropping page-table entries before a sync.** [`SegmentMap::unmap_pages`]
//!    calls `madvise(MADV_DONTNEED)` on a range of the mapping, while writers may be
//!    storing into it and readers loading from it. memmap2 makes this call `unsafe`
//!    because on a private or anonymous mapping the bytes revert to the file's or to
//!    zeros. It is made only on writable shared mappings of a file (`shared_file`; the
//!    anonymous maps of tests and models and read-only maps never make it), where it
//!    changes no byte: the page stays in the file's page cache, the kernel carries a
//!    dirty page-table entry's state to the page as it drops the entry, and the next
//!    store or load faults the same page back in. A store racing with the call lands
//!    in the same page before the entry goes or after the fault. References handed out
//!    (claims, `PublishedBytes`) keep pointing at valid memory holding the same bytes.
//!
//! Under `--cfg loom` the mapping is replaced by heap cells that loom can watch (an
//! atomic per 8-byte publication word, an `UnsafeCell` per 8 bytes of data); every
//! other line of this module is the same code.

#![allow(unsafe_code)]
#![deny(unsafe_op_in_unsafe_fn)]

use std::io;
use std::ptr::NonNull;

use crate::checksum;
use crate::record::{self, RecordFlags, RecordHeader, RecordKind, RECORD_ALIGNMENT, RECORD_HEADER_SIZE};
use crate::sync::{self, Arc, AtomicBool, AtomicPtr, AtomicU64, Condvar, Mutex, Ordering, WaitWord};

/// Segments the cursor keeps reachable; a slot is reused this many rotations later.
pub(crate) const RING_SLOTS: usize = 4;
/// The largest segment the cursor can address (see [`Cursor`] for the headroom argument).
pub const MAX_SEGMENT_SIZE_BYTES: u64 = 1 << 30;

const EPOCH_SHIFT: u32 = 44;
const OFFSET_MASK: u64 = (1 << EPOCH_SHIFT) - 1;
const EPOCH_MASK: u64 = (1 << (64 - EPOCH_SHIFT)) - 1;
#[cfg(not(loom))]
const SPIN_ROUNDS: u32 = 200;
#[cfg(loom)]
const SPIN_ROUNDS: u32 = 0;

// Every thread adds at most `capacity + 1` to a cursor epoch before it waits for the
// next one, so 2^44 bytes of offset leave room for 16,383 threads on 1 GiB segments.
const _: () = assert!(MAX_SEGMENT_SIZE_BYTES * 16_383 <= OFFSET_MASK);

/// The mapped bytes of one segment.
pub struct SegmentMap {
    memory: Memory,
    size_bytes: u64,
    base_position: u64,
    generation: u32,
    /// Offset below which every byte is published: always a record boundary, or the
    /// segment's size once a padding record reaching the end is published.
    published_offset: AtomicU64,
    /// Zero-copy handles (`published_bytes`) alive: the log keeps the file while any is.
    shared_handles: AtomicU64,
    /// Offset up to which pages were faulted in writable ahead of the writers.
    prefaulted_offset: AtomicU64,
    /// How far the zero-filler thread is asked to fault pages in (see
    /// [`SegmentMap::with_prefault_lead`]).
    prefault_wanted_offset: AtomicU64,
    /// Claims and seals write only below this offset; from here on the zero-filler may
    /// be writing (point 5). Only grows; the segment's size when nothing is left to fill.
    writable_offset: AtomicU64,
    /// How far the zero-filler is asked to go.
    zero_fill_wanted_offset: AtomicU64,
    /// The zero-filler failed: the writable offset moves no more.
    zero_fill_failed: AtomicBool,
    /// Writers waiting for the writable offset sleep on this.
    writable_changed: WaitWord,
    /// The zero-filler's wake-up and how far ahead of the writers it is asked to keep
    /// the writable offset; `None` when the whole segment is writable from the start.
    zero_filler: Option<ZeroFiller>,
    /// Where the padding record that sealed the segment starts; `u64::MAX` until then.
    sealed_offset: AtomicU64,
}

struct ZeroFiller {
    wake: Arc<WaitWord>,
    lead: Lead,
    /// How far past the writers the same thread keeps pages faulted in; 0 for none.
    prefault_lead_bytes: u64,
}

/// How far ahead of an append's end the zero-filler is asked to keep the writable
/// offset: as far as the segment has been appended to so far, within these bounds. A
/// segment cut soon after it was started costs little more zero-filling than it took,
/// and one that has taken much so far (likely to take more) gets a long lead.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Lead {
    pub min_bytes: u64,
    pub max_bytes: u64,
}

impl Lead {
    fn at(&self, end: u64) -> u64 {
        end.clamp(self.min_bytes, self.max_bytes)
    }
}

/// Zero-filling the rest of a segment failed: nothing more of it becomes writable.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ZeroFillFailed;

impl std::fmt::Debug for SegmentMap {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SegmentMap")
            .field("size_bytes", &self.size_bytes)
            .field("base_position", &self.base_position)
            .field("generation", &self.generation)
            .field("published_offset", &self.published_offset.load(Ordering::Relaxed))
            .finish()
    }
}

impl SegmentMap {
    /// Maps `file`, whose first `size_bytes` must be allocated and must stay so while
    /// the map lives (point 4 of the module's safety argument). Bytes below
    /// `published_offset` are records recovered from disk; the bytes from there on must
    /// be zero.
    #[cfg(not(loom))]
    pub fn map_file(file: &std::fs::File, size_bytes: u64, base_position: u64, generation: u32, published_offset: u64) -> io::Result<Self> {
        check_geometry(size_bytes, published_offset)?;
        let raw = memmap2::MmapOptions::new().len(size_bytes as usize).map_raw(file)?;
        Ok(Self::from_memory(Memory { raw, shared_file: true }, size_bytes, base_position, generation, published_offset))
    }

    /// Maps `file` for reading only: for read-only logs, whose segments are never
    /// appended to. Every byte below `published_offset` must be a recovered record.
    #[cfg(not(loom))]
    pub fn map_file_read_only(
        file: &std::fs::File,
        size_bytes: u64,
        base_position: u64,
        generation: u32,
        published_offset: u64,
    ) -> io::Result<Self> {
        check_geometry(size_bytes, published_offset)?;
        let raw = memmap2::MmapOptions::new().len(size_bytes as usize).map_raw_read_only(file)?;
        Ok(Self::from_memory(Memory { raw, shared_file: false }, size_bytes, base_position, generation, published_offset))
    }

    /// A map of zeroed memory backed by no file: for tests and models.
    pub fn anonymous(size_bytes: u64, base_position: u64, generation: u32, published_offset: u64) -> io::Result<Self> {
        check_geometry(size_bytes, published_offset)?;
        Ok(Self::from_memory(Memory::zeroed(size_bytes as usize)?, size_bytes, base_position, generation, published_offset))
    }

    fn from_memory(memory: Memory, size_bytes: u64, base_position: u64, generation: u32, published_offset: u64) -> Self {
        SegmentMap {
            memory,
            size_bytes,
            base_position,
            generation,
            published_offset: AtomicU64::new(published_offset),
            shared_handles: AtomicU64::new(0),
            prefaulted_offset: AtomicU64::new(published_offset),
            prefault_wanted_offset: AtomicU64::new(published_offset),
            writable_offset: AtomicU64::new(size_bytes),
            zero_fill_wanted_offset: AtomicU64::new(size_bytes),
            zero_fill_failed: AtomicBool::new(false),
            writable_changed: WaitWord::new(),
            zero_filler: None,
            sealed_offset: AtomicU64::new(u64::MAX),
        }
    }

    /// Where the segment was sealed (how much of it the log used), once it is.
    pub fn sealed_offset(&self) -> Option<u64> {
        let offset = self.sealed_offset.load(Ordering::Acquire);
        (offset != u64::MAX).then_some(offset)
    }

    /// Makes only `[0, writable_offset)` writable (the rest is not zero-filled on disk
    /// yet): writers that come within a quarter of their `lead` of what the filler was
    /// asked for wake it through `wake` and ask for their lead past themselves; writers
    /// past the writable offset wait. The filler is the one thread that then calls
    /// [`SegmentMap::next_zero_fill`] and [`SegmentMap::zero_filled`]. `writable_offset`
    /// must be a record boundary at or above the published frontier (the log passes
    /// page boundaries, so that the filler writes whole pages).
    pub fn with_zero_filler(mut self, writable_offset: u64, lead: Lead, wake: Arc<WaitWord>) -> Self {
        let published = self.published_offset.load(Ordering::Acquire);
        assert!(
            writable_offset >= published && writable_offset <= self.size_bytes && lead.min_bytes > 0 && lead.min_bytes <= lead.max_bytes
        );
        assert!(writable_offset.is_multiple_of(RECORD_ALIGNMENT as u64));
        self.writable_offset = AtomicU64::new(writable_offset);
        self.zero_fill_wanted_offset = AtomicU64::new(writable_offset);
        self.zero_filler = Some(ZeroFiller { wake, lead, prefault_lead_bytes: 0 });
        self
    }

    /// Has writers ask the zero-filler thread (woken through the zero-filler's `wake`)
    /// to keep the pages of the next `lead_bytes` past them faulted in writable, asking
    /// again once they come within half of it: the writers then store into mapped,
    /// writable pages instead of taking a fault per fresh page. The pages faulted in
    /// are dirty, so only for a sync mode that writes back just the ranges it syncs
    /// (msync); the thread faults in only below the writable offset (point 5).
    pub fn with_prefault_lead(mut self, lead_bytes: u64) -> Self {
        self.zero_filler.as_mut().expect("the zero-filler's thread does the faulting").prefault_lead_bytes = lead_bytes;
        self
    }

    /// Asks for the pages of the lead past `end` to be faulted in, waking the
    /// zero-filler thread if that is more than it was asked for and `end` came within
    /// half a lead of what it was asked for.
    pub fn want_prefaulted(&self, end: u64) {
        let Some(filler) = &self.zero_filler else { return };
        let lead = filler.prefault_lead_bytes;
        if lead == 0 || end + lead / 2 <= self.prefault_wanted_offset.load(Ordering::Acquire) {
            return;
        }
        let target = (end + lead).min(self.size_bytes);
        if self.prefault_wanted_offset.fetch_max(target, Ordering::AcqRel) < target {
            filler.wake.change_and_wake(1);
        }
    }

    /// For the zero-filler thread: faults in, writable, up to `window_bytes` of what the
    /// writers asked for ([`SegmentMap::want_prefaulted`]), never past the writable
    /// offset; `false` when there is nothing (more) to do.
    pub fn prefault_wanted(&self, window_bytes: u64) -> bool {
        let faulted = self.prefaulted_offset.load(Ordering::Acquire);
        let limit = self.prefault_wanted_offset.load(Ordering::Acquire).min(self.writable_offset.load(Ordering::Acquire));
        if faulted >= limit {
            return false;
        }
        // Pages the writers already wrote (they outran the thread) need no faulting in.
        let start = faulted.max(self.published_offset.load(Ordering::Acquire));
        self.claim_prefault(faulted, start, limit.min(start + window_bytes).max(start));
        true
    }

    pub fn size_bytes(&self) -> u64 {
        self.size_bytes
    }

    pub fn base_position(&self) -> u64 {
        self.base_position
    }

    pub fn end_position(&self) -> u64 {
        self.base_position + self.size_bytes
    }

    pub fn generation(&self) -> u32 {
        self.generation
    }

    /// The published frontier as last computed, without scanning.
    pub fn published_offset(&self) -> u64 {
        self.published_offset.load(Ordering::Acquire)
    }

    /// Scans publication words from the known frontier and returns the new frontier:
    /// every byte below it is published. Equals the segment's size once sealed.
    pub fn advance_published(&self) -> u64 {
        let start = self.published_offset.load(Ordering::Acquire);
        // Nothing at or past the writable offset is published, and the zero-filler may be
        // writing there (point 5).
        let writable = self.writable_offset.load(Ordering::Acquire);
        let mut offset = start;
        while offset + RECORD_HEADER_SIZE as u64 <= writable {
            let word = self.memory.load_word(offset as usize);
            if word == 0 {
                break;
            }
            // This word was stored by a claim of this process, which only stores valid
            // spans; a span of zero or one past the end would mean the mapping was
            // changed behind our back, and stopping is the only safe answer.
            match record::span_from_publication_word(word) {
                Some(span) if span >= RECORD_HEADER_SIZE as u64 && offset + span <= self.size_bytes => offset += span,
                _ => break,
            }
        }
        if offset > start {
            self.published_offset.fetch_max(offset, Ordering::AcqRel);
        }
        self.published_offset.load(Ordering::Acquire)
    }

    /// Copies published bytes at `offset` into `destination`; `false` (and nothing
    /// copied) when any of them is not below the published frontier.
    pub fn read_published(&self, offset: u64, destination: &mut [u8]) -> bool {
        let frontier = self.readable_end();
        let Some(end) = offset.checked_add(destination.len() as u64) else { return false };
        if end > frontier {
            return false;
        }
        self.memory.read(offset as usize, destination);
        true
    }

    /// Published bytes at `offset`, shared without copying: the `Bytes` keeps this map
    /// alive. `None` when any of them is not below the published frontier.
    #[cfg(not(loom))]
    pub fn published_bytes(self: &Arc<Self>, offset: u64, length_bytes: u64) -> Option<bytes::Bytes> {
        let frontier = self.readable_end();
        if offset.checked_add(length_bytes)? > frontier {
            return None;
        }
        self.shared_handles.fetch_add(1, Ordering::AcqRel);
        Some(bytes::Bytes::from_owner(PublishedBytes {
            map: Arc::clone(self),
            offset: offset as usize,
            length_bytes: length_bytes as usize,
        }))
    }

    /// Where reads through the mapping end: the published frontier, but never past the
    /// writable offset (a padding record's body may lie past it, still being filled).
    fn readable_end(&self) -> u64 {
        let frontier = self.published_offset.load(Ordering::Acquire);
        frontier.min(self.writable_offset.load(Ordering::Acquire))
    }

    /// Claims and seals may write below this offset (point 5).
    pub fn writable_offset(&self) -> u64 {
        self.writable_offset.load(Ordering::Acquire)
    }

    /// Returns once `[.., end)` lies below the writable offset. On the way, with
    /// `ask_ahead`, asks the zero-filler for more once `end` comes within a quarter of
    /// its lead of what it was asked for: one wake-up per 3/4 lead, not one per record.
    /// (The padding header that seals the segment asks for nothing past itself.)
    fn ensure_writable(&self, end: u64, ask_ahead: bool) -> Result<(), ZeroFillFailed> {
        let Some(filler) = &self.zero_filler else { return Ok(()) };
        let writable = self.writable_offset.load(Ordering::Acquire);
        let lead_bytes = if ask_ahead { filler.lead.at(end) } else { 0 };
        if end + lead_bytes / 4 > self.zero_fill_wanted_offset.load(Ordering::Acquire) {
            self.want_writable(end + lead_bytes);
        }
        if end <= writable {
            return Ok(());
        }
        // No spinning first: the filler moves the offset after a flushed write of at
        // least a granule, milliseconds away, and spinning would take the CPU it needs.
        loop {
            let seen = self.writable_changed.load();
            if self.writable_offset.load(Ordering::Acquire) >= end {
                return Ok(());
            }
            if self.zero_fill_failed.load(Ordering::Acquire) {
                return Err(ZeroFillFailed);
            }
            self.writable_changed.wait(seen);
        }
    }

    /// Asks the zero-filler to make everything below `offset` writable (capped at the
    /// segment's end), waking it if that is more than it was asked for so far.
    pub fn want_writable(&self, offset: u64) {
        let Some(filler) = &self.zero_filler else { return };
        let offset = offset.min(self.size_bytes);
        if self.zero_fill_wanted_offset.fetch_max(offset, Ordering::AcqRel) < offset {
            filler.wake.change_and_wake(1);
        }
    }

    /// For the zero-filler: the range to zero-fill next, from the writable offset to
    /// what it was asked for rounded up to `granule_bytes` (a power of two), at most
    /// `max_bytes`; `None` when it has done what it was asked. The filler writes zeros
    /// there through the file, then calls [`SegmentMap::zero_filled`].
    pub fn next_zero_fill(&self, granule_bytes: u64, max_bytes: u64) -> Option<(u64, u64)> {
        if self.zero_filler.is_none() || self.zero_fill_failed.load(Ordering::Acquire) {
            return None;
        }
        let writable = self.writable_offset.load(Ordering::Acquire);
        let wanted = self.zero_fill_wanted_offset.load(Ordering::Acquire);
        let end = wanted.next_multiple_of(granule_bytes).min(writable + max_bytes).min(self.size_bytes);
        (writable < wanted).then_some((writable, end))
    }

    /// For the zero-filler: the bytes below `end` are zeros on disk; writers may have
    /// them. `end` is the end of the range [`SegmentMap::next_zero_fill`] returned.
    pub fn zero_filled(&self, end: u64) {
        self.writable_offset.fetch_max(end, Ordering::AcqRel);
        self.writable_changed.change_and_wake(u32::MAX);
    }

    /// For the zero-filler: it failed and writes no more; writers waiting for room get
    /// [`ZeroFillFailed`].
    pub fn zero_fill_failed(&self) {
        self.zero_fill_failed.store(true, Ordering::Release);
        self.writable_changed.change_and_wake(u32::MAX);
    }

    /// Whether everything the zero-filler was asked for is writable (or it failed).
    pub fn zero_fill_done(&self) -> bool {
        self.zero_fill_failed.load(Ordering::Acquire)
            || self.writable_offset.load(Ordering::Acquire) >= self.zero_fill_wanted_offset.load(Ordering::Acquire)
    }

    /// Under loom: the zero-filler's writes, as stores to the cells loom watches.
    #[cfg(loom)]
    pub fn zero_fill_for_model(&self, start: u64, end: u64) {
        self.memory.write_cells(start as usize, &vec![0u8; (end - start) as usize]);
    }

    /// Zero-copy handles into this map still alive.
    pub fn shared_handles(&self) -> u64 {
        self.shared_handles.load(Ordering::Acquire)
    }

    /// Faults in, writable, the next `window_bytes` past the prefault frontier and moves
    /// the frontier there; `false` once it is at the end. A window is claimed before it
    /// is faulted, so no two threads fault the same pages. Pages faulted in are dirty:
    /// only for sync modes that never sync them (see `preparer.rs`).
    pub fn prefault_next_window(&self, window_bytes: u64) -> bool {
        let faulted = self.prefaulted_offset.load(Ordering::Acquire);
        if faulted >= self.size_bytes {
            return false;
        }
        self.claim_prefault(faulted, faulted, (faulted + window_bytes).min(self.size_bytes));
        true
    }

    /// Moves the prefault frontier from `faulted` (as this thread loaded it) to `target`
    /// and, if no other thread moved it first, faults `[start, target)` in.
    fn claim_prefault(&self, faulted: u64, start: u64, target: u64) {
        if self.prefaulted_offset.compare_exchange(faulted, target, Ordering::AcqRel, Ordering::Acquire).is_ok() {
            self.memory.prefault(start as usize, (target - start) as usize);
        }
    }

    /// `msync(MS_SYNC)` of the pages holding `[offset, offset + length)`.
    pub fn sync_range(&self, offset: u64, length: u64) -> io::Result<()> {
        if offset.checked_add(length).is_none_or(|end| end > self.size_bytes) {
            return Err(io::Error::new(io::ErrorKind::InvalidInput, "sync range outside the segment"));
        }
        self.memory.flush_range(offset as usize, length as usize)
    }

    /// Drops this process's page-table entries for the pages holding `[offset, offset +
    /// length)`, before a sync writes them back: the writeback write-protects every
    /// mapped page it cleans, one TLB flush per page, and each of those interrupts every
    /// other CPU running a thread of this process at that moment. Dropped first, the
    /// pages cost one batched flush, and the writeback finds nothing mapped. Bytes do not
    /// change (point 7 of the module's safety argument); the next access faults the page
    /// back in, as the write-protected page would have faulted on the next store.
    pub fn unmap_pages(&self, offset: u64, length: u64) {
        if offset.checked_add(length).is_some_and(|end| end <= self.size_bytes) {
            self.memory.unmap_pages(offset as usize, length as usize);
        }
    }

    fn publish_header(&self, offset: u64, header: &RecordHeader) {
        // SAFETY (of the callers' exclusivity, see point 1): only a claim or the crossing
        // reservation that owns `offset` calls this, once.
        self.memory.write_header(offset as usize, header);
    }
}

fn check_geometry(size_bytes: u64, published_offset: u64) -> io::Result<()> {
    // A sealed segment is published to its very end; an open one has room for the seal.
    let room = published_offset == size_bytes || published_offset + RECORD_HEADER_SIZE as u64 <= size_bytes;
    let fits = size_bytes <= MAX_SEGMENT_SIZE_BYTES
        && size_bytes.is_multiple_of(RECORD_ALIGNMENT as u64)
        && published_offset.is_multiple_of(RECORD_ALIGNMENT as u64)
        && room;
    if fits {
        Ok(())
    } else {
        Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("segment of {size_bytes} bytes cannot start appending at {published_offset}"),
        ))
    }
}

/// Published bytes of a mapping, owned by a `Bytes`.
#[cfg(not(loom))]
struct PublishedBytes {
    map: Arc<SegmentMap>,
    offset: usize,
    length_bytes: usize,
}

#[cfg(not(loom))]
impl Drop for PublishedBytes {
    fn drop(&mut self) {
        self.map.shared_handles.fetch_sub(1, Ordering::AcqRel);
    }
}

#[cfg(not(loom))]
impl AsRef<[u8]> for PublishedBytes {
    fn as_ref(&self) -> &[u8] {
        let raw = &self.map.memory.raw;
        assert!(self.offset + self.length_bytes <= raw.len());
        // SAFETY: in bounds (asserted); the bytes were below the published frontier when this
        // was made, and published bytes are never written again (point 2); the map lives as
        // long as `self.map`, which this value owns (point 3's reasoning needs no ring here:
        // the Arc alone keeps the mapping).
        unsafe { std::slice::from_raw_parts(raw.as_ptr().add(self.offset), self.length_bytes) }
    }
}

/// The rotation step failed (the next segment could not be had): the cursor refuses
/// every later reservation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RotationFailed;

/// Why a reservation was not granted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReserveError {
    /// The record cannot fit in an empty segment.
    TooLarge { span_bytes: u64, capacity_bytes: u64 },
    /// A rotation failed earlier; the cursor is closed for good.
    RotationFailed,
    /// The segment could not be zero-filled as far as the record reaches.
    ZeroFillFailed,
}

/// Hands out byte ranges of the current segment to concurrent writers with one
/// `fetch_add`, and rotates to the next segment when a range crosses the end.
///
/// The cursor word packs an epoch (which ring slot, 20 bits) and an offset (44 bits).
/// A `fetch_add` that returns an offset past the capacity is an *overflow*: that writer
/// waits for the epoch to change and retries. Exactly one reservation per epoch
/// *crosses* the capacity (its offset is at or below it, its end above): that writer
/// seals the segment with a padding record and installs the next segment by storing a
/// fresh cursor word, discarding the overflow increments made meanwhile.
pub struct Cursor {
    packed: AtomicU64,
    ring: [AtomicPtr<SegmentMap>; RING_SLOTS],
    owners: Mutex<[Option<Arc<SegmentMap>>; RING_SLOTS]>,
    size_bytes: u64,
    /// A data record must end at or below this offset; the bytes above are kept for
    /// the padding header that seals the segment.
    capacity_bytes: u64,
    data_start_offset: u64,
    /// The log position where the segment being appended to ends: no record handed out
    /// so far ends past it. Set before the epoch that makes the segment reachable.
    end_position: AtomicU64,
    failed: AtomicBool,
    rotation_lock: Mutex<()>,
    rotated: Condvar,
}

impl Cursor {
    /// A cursor appending to `first` from `append_offset`; later segments are appended
    /// to from `data_start_offset`.
    pub fn new(first: Arc<SegmentMap>, append_offset: u64, data_start_offset: u64) -> Self {
        let size_bytes = first.size_bytes;
        assert!(append_offset <= size_bytes - RECORD_HEADER_SIZE as u64 && append_offset.is_multiple_of(RECORD_ALIGNMENT as u64));
        assert_eq!(first.published_offset(), append_offset, "the frontier of the first segment starts where appends start");
        let ring = std::array::from_fn(|_| AtomicPtr::new(std::ptr::null_mut()));
        ring[0].store(Arc::as_ptr(&first).cast_mut(), Ordering::Release);
        let end_position = AtomicU64::new(first.end_position());
        let mut owners: [Option<Arc<SegmentMap>>; RING_SLOTS] = Default::default();
        owners[0] = Some(first);
        Cursor {
            packed: AtomicU64::new(append_offset),
            ring,
            owners: Mutex::new(owners),
            size_bytes,
            capacity_bytes: size_bytes - RECORD_HEADER_SIZE as u64,
            data_start_offset,
            end_position,
            failed: AtomicBool::new(false),
            rotation_lock: Mutex::new(()),
            rotated: Condvar::new(),
        }
    }

    /// The largest payload a single record may carry.
    pub fn max_payload_bytes(&self) -> u64 {
        let largest_span = (self.capacity_bytes - self.data_start_offset) & !(RECORD_ALIGNMENT as u64 - 1);
        largest_span - RECORD_HEADER_SIZE as u64
    }

    pub fn has_failed(&self) -> bool {
        self.failed.load(Ordering::Acquire)
    }

    /// Where the segment currently appended to ends: every position a reservation has
    /// returned lies below it. Lock-free.
    pub fn end_position(&self) -> u64 {
        self.end_position.load(Ordering::Acquire)
    }

    /// Reserves room for a data record of `payload_bytes`. When the room crosses the end
    /// of the segment, seals the segment (padding carrying `durable_hint`) and rotates to
    /// the segment `next_segment` returns, then retries there.
    pub fn reserve(
        &self,
        payload_bytes: usize,
        durable_hint: u64,
        next_segment: &mut dyn FnMut() -> Result<Arc<SegmentMap>, RotationFailed>,
    ) -> Result<Claim<'_>, ReserveError> {
        let span_bytes = record::data_span_bytes(payload_bytes as u64);
        if payload_bytes as u64 > self.max_payload_bytes() {
            return Err(ReserveError::TooLarge { span_bytes, capacity_bytes: self.capacity_bytes - self.data_start_offset });
        }
        loop {
            if self.has_failed() {
                return Err(ReserveError::RotationFailed);
            }
            let packed = self.packed.fetch_add(span_bytes, Ordering::AcqRel);
            let (epoch, offset) = (epoch_of(packed), packed & OFFSET_MASK);
            if offset + span_bytes <= self.capacity_bytes {
                let claim = Claim {
                    segment: self.slot_pointer(epoch),
                    offset,
                    span_bytes,
                    payload_bytes,
                    published: false,
                    _cursor: std::marker::PhantomData,
                };
                return match claim.segment().ensure_writable(offset + span_bytes, true) {
                    Ok(()) => Ok(claim),
                    // Dropping the claim publishes a skip record over it: the filler has
                    // stopped for good, so its range is this thread's alone (point 5).
                    Err(ZeroFillFailed) => Err(ReserveError::ZeroFillFailed),
                };
            }
            if offset <= self.capacity_bytes {
                self.seal_and_rotate(epoch, offset, RecordFlags::empty(), durable_hint, next_segment)
                    .map_err(|RotationFailed| ReserveError::RotationFailed)?;
            } else {
                self.wait_for_rotation(epoch);
            }
        }
    }

    /// Seals the current segment, even if it has room left, and rotates to the next.
    /// Returns once the cursor is in a later segment than when it was called.
    pub fn cut(
        &self,
        durable_hint: u64,
        next_segment: &mut dyn FnMut() -> Result<Arc<SegmentMap>, RotationFailed>,
    ) -> Result<(), RotationFailed> {
        if self.has_failed() {
            return Err(RotationFailed);
        }
        // Adding more than the capacity makes this reservation cross unless another
        // one already did, in which case that one's rotation is the cut.
        let packed = self.packed.fetch_add(self.capacity_bytes + 1, Ordering::AcqRel);
        let (epoch, offset) = (epoch_of(packed), packed & OFFSET_MASK);
        if offset <= self.capacity_bytes {
            self.seal_and_rotate(epoch, offset, RecordFlags::CUT, durable_hint, next_segment)
        } else {
            self.wait_for_rotation(epoch);
            if self.has_failed() {
                Err(RotationFailed)
            } else {
                Ok(())
            }
        }
    }

    fn slot_pointer(&self, epoch: u64) -> NonNull<SegmentMap> {
        let pointer = self.ring[slot_of(epoch)].load(Ordering::Acquire);
        NonNull::new(pointer).expect("a reachable epoch has its segment installed")
    }

    fn seal_and_rotate(
        &self,
        epoch: u64,
        offset: u64,
        flags: RecordFlags,
        durable_hint: u64,
        next_segment: &mut dyn FnMut() -> Result<Arc<SegmentMap>, RotationFailed>,
    ) -> Result<(), RotationFailed> {
        // If anything below unwinds or fails, waiting writers must be woken to an error
        // rather than wait for a rotation that will never come.
        let mut failure_guard = FailOnDrop { cursor: self, armed: true };
        {
            // SAFETY: this thread's reservation crossed the capacity, so it owns
            // [offset, size) of the epoch's segment (point 1), which is therefore not yet
            // published to its end and still owned by the ring (point 3).
            let segment = unsafe { self.slot_pointer(epoch).as_ref() };
            segment.ensure_writable(offset + RECORD_HEADER_SIZE as u64, false).map_err(|ZeroFillFailed| RotationFailed)?;
            segment.sealed_offset.store(offset, Ordering::Release);
            let span_bytes = self.size_bytes - offset;
            let position = segment.base_position + offset;
            let header =
                record::marker_header(RecordKind::PADDING, flags, span_bytes, segment.generation, position, durable_hint.min(position));
            segment.publish_header(offset, &header);
            // No access to `segment` after this point: it may be reclaimed.
        }
        let next = next_segment()?;
        assert_eq!(next.size_bytes, self.size_bytes, "all segments of a cursor have one size");
        assert_eq!(next.published_offset(), self.data_start_offset, "a new segment starts empty");
        let next_epoch = (epoch + 1) & EPOCH_MASK;
        let slot = slot_of(next_epoch);
        let previous = sync::lock(&self.owners)[slot].clone();
        if let Some(previous) = previous {
            let mut round = 0;
            while previous.advance_published() < previous.size_bytes {
                sync::spin_wait(round);
                round = round.saturating_add(1);
            }
        }
        self.end_position.fetch_max(next.end_position(), Ordering::AcqRel);
        self.ring[slot].store(Arc::as_ptr(&next).cast_mut(), Ordering::Release);
        sync::lock(&self.owners)[slot] = Some(next);
        // A swap rather than a store: it reads the last overflow increment made in the old
        // epoch, so it is ordered after every one of them and no waiter can see the old
        // epoch once it has synchronized with this thread.
        self.packed.swap(next_epoch << EPOCH_SHIFT | self.data_start_offset, Ordering::AcqRel);
        failure_guard.armed = false;
        let _guard = sync::lock(&self.rotation_lock);
        self.rotated.notify_all();
        Ok(())
    }

    fn wait_for_rotation(&self, epoch: u64) {
        let moved_on = || epoch_of(self.packed.load(Ordering::Acquire)) != epoch || self.has_failed();
        for round in 0..SPIN_ROUNDS {
            if moved_on() {
                return;
            }
            sync::spin_wait(round);
        }
        let mut guard = sync::lock(&self.rotation_lock);
        while !moved_on() {
            guard = sync::wait(&self.rotated, guard);
        }
    }
}

struct FailOnDrop<'a> {
    cursor: &'a Cursor,
    armed: bool,
}

impl Drop for FailOnDrop<'_> {
    fn drop(&mut self) {
        if self.armed {
            self.cursor.failed.store(true, Ordering::Release);
            let _guard = sync::lock(&self.cursor.rotation_lock);
            self.cursor.rotated.notify_all();
        }
    }
}

fn epoch_of(packed: u64) -> u64 {
    packed >> EPOCH_SHIFT
}

fn slot_of(epoch: u64) -> usize {
    (epoch % RING_SLOTS as u64) as usize
}

/// Exclusive room for one data record. Publish it with [`Claim::publish`]; dropping it
/// unpublished publishes a skip record instead, so the log never stalls behind it.
pub struct Claim<'a> {
    segment: NonNull<SegmentMap>,
    offset: u64,
    span_bytes: u64,
    payload_bytes: usize,
    published: bool,
    _cursor: std::marker::PhantomData<&'a Cursor>,
}

// SAFETY: a claim is an exclusive right to bytes of a mapping that is itself shared
// between threads (SegmentMap is Sync); moving the right to another thread is sound.
unsafe impl Send for Claim<'_> {}

impl Claim<'_> {
    fn segment(&self) -> &SegmentMap {
        debug_assert!(!self.published);
        // SAFETY: the claim is unpublished, so its segment is not published to its end and
        // the ring still owns it (point 3 of the module's safety argument).
        unsafe { self.segment.as_ref() }
    }

    /// The log position of the record.
    pub fn position(&self) -> u64 {
        self.segment().base_position + self.offset
    }

    /// The log position just past the record.
    pub fn end_position(&self) -> u64 {
        self.position() + self.span_bytes
    }

    pub fn payload_bytes(&self) -> usize {
        self.payload_bytes
    }

    /// Faults in, writable, the `window_bytes` of the segment after this claim once the
    /// claim comes within half a window of what is already faulted in: one call per
    /// window instead of a write fault per page on the writers' path, and no two writers
    /// faulting the same fresh page. The pages become dirty (zeros), so only for sync
    /// modes that write back just the ranges they sync.
    pub fn prefault_ahead(&self, window_bytes: u64) {
        let segment = self.segment();
        let end = self.offset + self.span_bytes;
        let faulted = segment.prefaulted_offset.load(Ordering::Acquire);
        if end + window_bytes / 2 <= faulted || faulted >= segment.size_bytes {
            return;
        }
        segment.claim_prefault(faulted, faulted.max(end), (end + window_bytes).min(segment.size_bytes));
    }

    /// Asks the zero-filler thread to keep the pages past this claim faulted in (see
    /// [`SegmentMap::with_prefault_lead`]); nothing for a segment without that lead.
    pub fn want_prefaulted(&self) {
        self.segment().want_prefaulted(self.offset + self.span_bytes);
    }

    /// Lets `encode` write the payload in place. The slice is exactly the payload's
    /// length; its bytes start as zeros.
    pub fn fill<R>(&mut self, encode: impl FnOnce(&mut [u8]) -> R) -> R {
        let start = (self.offset + RECORD_HEADER_SIZE as u64) as usize;
        let length = self.payload_bytes;
        let segment = self.segment();
        // The claim owns these bytes alone (point 1) and `&mut self` keeps the slice unique.
        segment.memory.with_exclusive(start, length, encode)
    }

    /// Checksums the payload, writes the header and publishes the record with a
    /// release store of its publication word. Returns the position past the record.
    pub fn publish(self, kind: RecordKind, durable_hint: u64) -> u64 {
        let header = self.header(kind, durable_hint);
        let crc =
            self.segment().memory.with_exclusive(self.payload_offset(), self.payload_bytes, |payload| record::record_crc(&header, payload));
        self.publish_header(header, crc)
    }

    /// Copies `payload` (exactly the claimed length) in while checksumming it, in one
    /// pass, then publishes as [`Claim::publish`] does.
    pub fn publish_copy(self, kind: RecordKind, durable_hint: u64, payload: &[u8]) -> u64 {
        assert_eq!(payload.len(), self.payload_bytes, "the payload fills the claim");
        let header = self.header(kind, durable_hint);
        let header_crc = record::header_crc(&header);
        // The claim owns these bytes alone (point 1).
        let crc = self.segment().memory.with_exclusive(self.payload_offset(), self.payload_bytes, |destination| {
            checksum::copy_and_append(header_crc, destination, payload)
        });
        self.publish_header(header, crc)
    }

    fn header(&self, kind: RecordKind, durable_hint: u64) -> RecordHeader {
        assert!(kind.is_data(), "claims carry data records");
        let position = self.position();
        let length_bytes = u32::try_from(self.payload_bytes).expect("payload fits in a segment");
        RecordHeader::new(kind, RecordFlags::empty(), length_bytes, self.segment().generation, position, durable_hint.min(position))
    }

    fn payload_offset(&self) -> usize {
        (self.offset + RECORD_HEADER_SIZE as u64) as usize
    }

    fn publish_header(mut self, mut header: RecordHeader, crc: u32) -> u64 {
        let end_position = self.end_position();
        header.crc = crc.into();
        self.segment().publish_header(self.offset, &header);
        // No access to the segment after the release store: it may be reclaimed.
        self.published = true;
        end_position
    }
}

/// [`checksum::append_with_avx512`], for its caller, which checked the CPU.
#[cfg(target_arch = "x86_64")]
pub(crate) fn checksum_avx512(crc: u32, source: &[u8], destination: Option<&mut [u8]>) -> u32 {
    debug_assert!(checksum::has_wide_kernel());
    // SAFETY: point 6: the caller checked that the CPU has the function's features.
    unsafe { checksum::append_with_avx512(crc, source, destination) }
}

/// [`checksum::append_with_sse42`], for its caller, which checked the CPU.
#[cfg(target_arch = "x86_64")]
pub(crate) fn checksum_sse42(crc: u32, source: &[u8], destination: Option<&mut [u8]>) -> u32 {
    debug_assert!(std::arch::is_x86_feature_detected!("sse4.2"));
    // SAFETY: point 6: the caller checked that the CPU has SSE 4.2.
    unsafe { checksum::append_with_sse42(crc, source, destination) }
}

impl Drop for Claim<'_> {
    fn drop(&mut self) {
        if self.published {
            return;
        }
        let position = self.position();
        let segment = self.segment();
        let header = record::marker_header(RecordKind::SKIP, RecordFlags::empty(), self.span_bytes, segment.generation, position, 0);
        segment.publish_header(self.offset, &header);
        self.published = true;
    }
}

#[cfg(not(loom))]
struct Memory {
    raw: memmap2::MmapRaw,
    /// A writable shared mapping of a file (not anonymous, not read-only): the only kind
    /// whose page-table entries [`Memory::unmap_pages`] drops (point 7).
    shared_file: bool,
}

#[cfg(not(loom))]
impl Memory {
    fn zeroed(size_bytes: usize) -> io::Result<Self> {
        let anonymous = memmap2::MmapOptions::new().len(size_bytes).map_anon()?;
        Ok(Memory { raw: memmap2::MmapRaw::from(anonymous), shared_file: false })
    }

    fn word(&self, offset: usize) -> &AtomicU64 {
        assert!(offset.is_multiple_of(RECORD_ALIGNMENT) && offset + 8 <= self.raw.len());
        // SAFETY: the pointer is inside the mapping (asserted), 8-aligned (the mapping is
        // page-aligned and so is the offset), valid for as long as `self` (the mapping is
        // unmapped on drop only), and every concurrent access to a publication word is
        // atomic (point 2).
        unsafe { AtomicU64::from_ptr(self.raw.as_mut_ptr().add(offset).cast::<u64>()) }
    }

    fn load_word(&self, offset: usize) -> u64 {
        self.word(offset).load(Ordering::Acquire)
    }

    fn write_header(&self, offset: usize, header: &RecordHeader) {
        use zerocopy::IntoBytes;
        assert!(offset + RECORD_HEADER_SIZE <= self.raw.len());
        let bytes = header.as_bytes();
        // SAFETY: the caller owns [offset, offset + 32) (point 1); the range is inside the
        // mapping (asserted); the source is a distinct local value.
        unsafe {
            std::ptr::copy_nonoverlapping(bytes[8..].as_ptr(), self.raw.as_mut_ptr().add(offset + 8), RECORD_HEADER_SIZE - 8);
        }
        self.word(offset).store(header.publication_word(), Ordering::Release);
    }

    fn with_exclusive<R>(&self, offset: usize, length: usize, f: impl FnOnce(&mut [u8]) -> R) -> R {
        assert!(offset.checked_add(length).is_some_and(|end| end <= self.raw.len()));
        // SAFETY: in bounds (asserted); the caller owns these bytes alone (point 1) and
        // the slice does not outlive this call.
        let bytes = unsafe { std::slice::from_raw_parts_mut(self.raw.as_mut_ptr().add(offset), length) };
        f(bytes)
    }

    fn read(&self, offset: usize, destination: &mut [u8]) {
        assert!(offset.checked_add(destination.len()).is_some_and(|end| end <= self.raw.len()));
        // SAFETY: in bounds (asserted); the caller checked the bytes are published, and
        // published bytes are never written again (point 2).
        unsafe { std::ptr::copy_nonoverlapping(self.raw.as_ptr().add(offset), destination.as_mut_ptr(), destination.len()) }
    }

    fn flush_range(&self, offset: usize, length: usize) -> io::Result<()> {
        self.raw.flush_range(offset, length)
    }

    fn unmap_pages(&self, offset: usize, length: usize) {
        if !self.shared_file {
            return;
        }
        assert!(offset.checked_add(length).is_some_and(|end| end <= self.raw.len()));
        // SAFETY: in bounds (asserted), and this is a writable shared mapping of a file,
        // where MADV_DONTNEED changes no byte of the mapping (point 7). A hint: when the
        // kernel refuses it (locked pages), the sync ahead cleans the pages as it would.
        let _ = unsafe { self.raw.unchecked_advise_range(memmap2::UncheckedAdvice::DontNeed, offset, length) };
    }

    fn prefault(&self, offset: usize, length: usize) {
        // A hint: kernels without MADV_POPULATE_WRITE refuse it, and the writers then take
        // the faults themselves.
        let _ = self.raw.advise_range(memmap2::Advice::PopulateWrite, offset, length);
    }
}

#[cfg(loom)]
struct Memory {
    words: Box<[AtomicU64]>,
    cells: Box<[loom::cell::UnsafeCell<[u8; 8]>]>,
}

#[cfg(loom)]
impl Memory {
    fn zeroed(size_bytes: usize) -> io::Result<Self> {
        let granules = size_bytes / 8;
        Ok(Memory {
            words: (0..granules).map(|_| AtomicU64::new(0)).collect(),
            cells: (0..granules).map(|_| loom::cell::UnsafeCell::new([0; 8])).collect(),
        })
    }

    fn load_word(&self, offset: usize) -> u64 {
        self.words[offset / 8].load(Ordering::Acquire)
    }

    fn write_header(&self, offset: usize, header: &RecordHeader) {
        use zerocopy::IntoBytes;
        self.write_cells(offset, header.as_bytes());
        self.words[offset / 8].store(header.publication_word(), Ordering::Release);
    }

    fn write_cells(&self, offset: usize, bytes: &[u8]) {
        for (index, chunk) in bytes.chunks(8).enumerate() {
            // SAFETY: the caller owns these bytes alone (point 1), so this is the only
            // reference to the cell; loom checks that claim.
            self.cells[offset / 8 + index].with_mut(|cell| unsafe { (&mut *cell)[..chunk.len()].copy_from_slice(chunk) });
        }
    }

    fn with_exclusive<R>(&self, offset: usize, length: usize, f: impl FnOnce(&mut [u8]) -> R) -> R {
        let mut bytes = vec![0u8; length];
        for (index, chunk) in bytes.chunks_mut(8).enumerate() {
            // SAFETY: the caller owns these bytes alone (point 1); loom checks that claim.
            self.cells[offset / 8 + index].with(|cell| chunk.copy_from_slice(unsafe { &(&*cell)[..chunk.len()] }));
        }
        let result = f(&mut bytes);
        self.write_cells(offset, &bytes);
        result
    }

    fn read(&self, offset: usize, destination: &mut [u8]) {
        let mut position = offset;
        for byte in destination.iter_mut() {
            // SAFETY: published bytes are never written again (point 2); loom checks that claim.
            *byte = self.cells[position / 8].with(|cell| unsafe { (&*cell)[position % 8] });
            position += 1;
        }
    }

    fn flush_range(&self, _offset: usize, _length: usize) -> io::Result<()> {
        Ok(())
    }

    fn unmap_pages(&self, _offset: usize, _length: usize) {}

    fn prefault(&self, _offset: usize, _length: usize) {}
}
