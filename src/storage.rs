//! The Raft storage layer: etcd's WAL `Storage` (save, save_snapshot, cut, release,
//! read_all) on the segment log, plus what raft-rs and openraft read from storage
//! (entries by index, terms, first and last index), served from the mapped segments.
//!
//! Records, all of the segment log's data kinds:
//!
//! | kind | payload                                                   |
//! |------|-----------------------------------------------------------|
//! | 16   | metadata: opaque bytes given to `create`                  |
//! | 17   | entry: `raftpb.Entry`, exactly as etcd encodes it          |
//! | 18   | hard state: `raftpb.HardState`                            |
//! | 19   | snapshot marker: `walpb.Snapshot {index, term, conf_state}` |
//!
//! Kinds 32 to 63 are reserved for the same records of one Raft group among several
//! sharing a log: kind + 16, payload prefixed by the group id as a varint. A reader of
//! this version refuses them rather than misread them.
//!
//! Ordering: a save's records are reserved and published under one short write lock,
//! so that the log holds each save's entries, then its hard state, contiguously and in
//! the order the in-memory index saw them; waiting for durability happens after the
//! lock is released, so concurrent saves share their syncs. Because recovery returns a
//! prefix of the log, it can never return a hard state without the entries before it.

use std::path::{Path, PathBuf};
use std::sync::{RwLock, RwLockReadGuard, RwLockWriteGuard};

use bytes::Bytes;
use prost::Message;

use crate::committed_feed::{CommittedFeed, MAX_HELD_BYTES};
use crate::entry_index::EntryIndex;
use crate::error::{Error, Result};
use crate::log::{Log, Position};
use crate::options::Options;
use crate::raftpb::{must_sync, ConfState, Entry, HardState};
use crate::record::RecordKind;

/// Record kinds of the Raft layer.
pub mod kind {
    use crate::record::RecordKind;
    pub const METADATA: RecordKind = RecordKind(16);
    pub const ENTRY: RecordKind = RecordKind(17);
    pub const HARD_STATE: RecordKind = RecordKind(18);
    pub const SNAPSHOT: RecordKind = RecordKind(19);
}

/// The WAL's record of a snapshot (etcd's `walpb.Snapshot`): the log may be replayed
/// from here once the state machine holds the snapshot at `index`.
#[derive(Clone, PartialEq, Eq, Hash, prost::Message)]
pub struct SnapshotMarker {
    #[prost(uint64, required, tag = "1")]
    pub index: u64,
    #[prost(uint64, required, tag = "2")]
    pub term: u64,
    #[prost(message, optional, tag = "3")]
    pub conf_state: Option<ConfState>,
}

impl SnapshotMarker {
    pub fn new(index: u64, term: u64) -> Self {
        SnapshotMarker { index, term, conf_state: None }
    }
}

/// What the log holds, as the in-memory state sees it.
#[derive(Default)]
struct State {
    metadata: Vec<u8>,
    metadata_position: u64,
    hard_state: HardState,
    /// Where the latest hard state record is; `None` if there is none.
    hard_state_position: Option<u64>,
    /// Snapshot markers still in the log, in log order, with their positions.
    snapshots: Vec<(SnapshotMarker, u64)>,
    /// The highest index any snapshot marker in the log ever had: entries at or below it
    /// are committed and may not be written again.
    highest_marker_index: u64,
    /// The snapshot the entries start after: the one opened at, or a later one the
    /// index was compacted to.
    snapshot: SnapshotMarker,
    index: EntryIndex,
}

/// The Raft log of one node. `Send + Sync`.
pub struct Storage {
    log: Log,
    state: RwLock<State>,
}

impl std::fmt::Debug for Storage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Storage").field("log", &self.log).finish_non_exhaustive()
    }
}

/// Parses `term` and `index` out of an encoded entry without touching its data.
fn entry_term_and_index(mut payload: &[u8]) -> std::result::Result<(u64, u64), &'static str> {
    fn varint(bytes: &mut &[u8]) -> std::result::Result<u64, &'static str> {
        let mut value = 0u64;
        for shift in (0..64).step_by(7) {
            let (&byte, rest) = bytes.split_first().ok_or("truncated varint")?;
            *bytes = rest;
            value |= u64::from(byte & 0x7f) << shift;
            if byte & 0x80 == 0 {
                return Ok(value);
            }
        }
        Err("varint longer than 10 bytes")
    }
    let (mut term, mut index) = (0, 0);
    while !payload.is_empty() {
        let key = varint(&mut payload)?;
        match (key >> 3, key & 7) {
            (2, 0) => term = varint(&mut payload)?,
            (3, 0) => index = varint(&mut payload)?,
            (_, 0) => {
                varint(&mut payload)?;
            }
            (_, 2) => {
                let length = usize::try_from(varint(&mut payload)?).map_err(|_| "length overflows")?;
                payload = payload.get(length..).ok_or("truncated field")?;
            }
            _ => return Err("unexpected wire type"),
        }
    }
    Ok((term, index))
}

impl State {
    /// Whether an entry at `index` starts the log afresh: it lies past the last entry
    /// plus one, right after a snapshot marker (a follower installed a snapshot beyond
    /// its log and continues from there).
    fn restarts_at(&self, index: u64) -> bool {
        let last = self.index.last_index().unwrap_or(self.snapshot.index);
        index > last + 1 && (self.snapshot.index + 1 == index || self.snapshots.iter().any(|(marker, _)| marker.index + 1 == index))
    }
}

/// Replays records in log order into a `State` (etcd's ReadAll rules, minus its bugs).
struct Replay<'v> {
    start: SnapshotMarker,
    state: State,
    seen_metadata: bool,
    matched: bool,
    error: Option<Error>,
    /// Where live entries go during the scan, for `open_replaying`.
    feed: Option<CommittedFeed<'v>>,
}

impl<'v> Replay<'v> {
    fn new(start: SnapshotMarker) -> Self {
        Replay { start, state: State::default(), seen_metadata: false, matched: false, error: None, feed: None }
    }

    fn feeding(start: SnapshotMarker, visit: &'v mut dyn FnMut(Entry)) -> Self {
        let feed = CommittedFeed::new(start.index, MAX_HELD_BYTES, visit);
        Replay { feed: Some(feed), ..Replay::new(start) }
    }

    fn visit(&mut self, position: Position, kind: RecordKind, payload: &[u8]) {
        if self.error.is_none() {
            if let Err(error) = self.apply(position.0, kind, payload) {
                self.error = Some(error);
            }
        }
    }

    fn apply(&mut self, position: u64, kind: RecordKind, payload: &[u8]) -> Result<()> {
        let bad = |reason: String| Error::BadRecord { position, reason };
        match kind {
            kind::ENTRY => {
                let (term, index) = entry_term_and_index(payload).map_err(|reason| bad(reason.to_string()))?;
                // A snapshot installed beyond the log lets the log restart after it.
                let restarted = self.state.restarts_at(index);
                if restarted {
                    self.state.index.clear();
                }
                // Applied to every entry, also those at or below the start snapshot: an
                // overwrite there still drops the stale entries above it.
                self.state
                    .index
                    .append(index, term, position)
                    .map_err(|gap| Error::EntryGap { expected: gap.expected, found: gap.found })?;
                if let Some(feed) = &mut self.feed {
                    feed.entry(index, position, payload, restarted)?;
                }
            }
            kind::HARD_STATE => {
                self.state.hard_state = HardState::decode(payload).map_err(|error| bad(error.to_string()))?;
                self.state.hard_state_position = Some(position);
                if let Some(feed) = &mut self.feed {
                    feed.commit(self.state.hard_state.commit);
                }
            }
            kind::METADATA => {
                if !self.seen_metadata {
                    self.state.metadata = payload.to_vec();
                    self.seen_metadata = true;
                } else if self.state.metadata != payload {
                    return Err(Error::MetadataConflict);
                }
                self.state.metadata_position = position;
            }
            kind::SNAPSHOT => {
                let marker = SnapshotMarker::decode(payload).map_err(|error| bad(error.to_string()))?;
                if marker.index == self.start.index {
                    if marker.term != self.start.term {
                        return Err(Error::SnapshotMismatch {
                            index: marker.index,
                            expected_term: self.start.term,
                            found_term: marker.term,
                        });
                    }
                    self.matched = true;
                }
                self.state.highest_marker_index = self.state.highest_marker_index.max(marker.index);
                self.state.snapshots.push((marker, position));
            }
            other => return Err(bad(format!("record kind {} is not one of the Raft layer's", other.0))),
        }
        Ok(())
    }

    /// The replayed state, or why the log cannot be opened at `start`; with a feed, the
    /// index to read on from if it could not hold every entry until now.
    fn finish(mut self) -> Result<(State, Option<u64>)> {
        if let Some(error) = self.error {
            return Err(error);
        }
        // Unlike etcd in write mode (PR #21369), a missing marker is never swallowed.
        if !self.matched {
            return Err(Error::SnapshotNotFound { index: self.start.index, term: self.start.term });
        }
        self.state.index.compact_to(self.start.index + 1);
        self.state.snapshot = self.start;
        let read_on_from = self.feed.and_then(CommittedFeed::finish);
        Ok((self.state, read_on_from))
    }
}

impl Storage {
    /// Creates a log in `directory` holding `metadata` and the snapshot marker {0, 0},
    /// built aside and renamed into place so that a crash leaves either no log or a
    /// whole one. Fails with [`Error::AlreadyExists`] if `directory` holds segments.
    pub fn create(directory: impl AsRef<Path>, metadata: &[u8], options: Options) -> Result<Storage> {
        let directory = directory.as_ref();
        if holds_segments(directory)? {
            return Err(Error::AlreadyExists { path: directory.to_path_buf() });
        }
        let building = sibling(directory, ".tmp")?;
        if building.exists() {
            std::fs::remove_dir_all(&building).map_err(|source| Error::io("remove", &building, source))?;
        }
        {
            let log = Log::open(&building, options.clone())?;
            log.append(kind::METADATA, metadata)?;
            let marker = SnapshotMarker::new(0, 0).encode_to_vec();
            let appended = log.append(kind::SNAPSHOT, &marker)?;
            log.wait_durable(appended.end)?;
            log.close()?;
        }
        if directory.exists() {
            // Empty of segments (checked above): whatever else is there goes.
            std::fs::remove_dir_all(directory).map_err(|source| Error::io("remove", directory, source))?;
        }
        std::fs::rename(&building, directory).map_err(|source| Error::io("rename", directory, source))?;
        let parent = directory.parent().filter(|parent| !parent.as_os_str().is_empty()).unwrap_or(Path::new("."));
        crate::fs::sync_directory(parent)?;
        Self::open(directory, &SnapshotMarker::new(0, 0), options)
    }

    /// Opens the log in `directory` for appending, replaying it from the snapshot marker
    /// `snapshot` (which must be in the log, with the same term).
    pub fn open(directory: impl AsRef<Path>, snapshot: &SnapshotMarker, options: Options) -> Result<Storage> {
        let (storage, _) = Self::open_with_replay(directory.as_ref(), options, Replay::new(snapshot.clone()))?;
        Ok(storage)
    }

    /// [`Storage::open`], handing `visit` every live entry after `snapshot` in index
    /// order — what `for_each_entry(first_index())` would give after opening — in the
    /// same pass over the log that opening makes, so a node replaying its log at boot
    /// reads and checks every byte once instead of twice.
    ///
    /// An entry is handed over during the scan once a later hard state commits it
    /// (Raft never rewrites a committed entry); the uncommitted tail follows at the end.
    /// A log that rewrites an entry already handed over fails with
    /// [`Error::CommittedEntryRewritten`]. A log restarted after an installed snapshot
    /// (see [`Storage::save`]) hands over the entries before the restart that were
    /// committed, then continues at the restart's index. If the open fails, `visit` may
    /// already have seen some entries: all of them checked, all committed.
    pub fn open_replaying(
        directory: impl AsRef<Path>,
        snapshot: &SnapshotMarker,
        options: Options,
        mut visit: impl FnMut(Entry),
    ) -> Result<Storage> {
        let (storage, read_on_from) = Self::open_with_replay(directory.as_ref(), options, Replay::feeding(snapshot.clone(), &mut visit))?;
        if let Some(low) = read_on_from {
            // A restart after the feed gave up dropped every entry below the new start.
            storage.for_each_entry(low.max(storage.first_index()), |entry| {
                visit(entry);
                true
            })?;
        }
        Ok(storage)
    }

    fn open_with_replay(directory: &Path, options: Options, mut replay: Replay<'_>) -> Result<(Storage, Option<u64>)> {
        if !holds_segments(directory)? {
            // Never create a log here: that is `create`'s job, and a half-made one would
            // make a later `create` fail.
            return Err(Error::io("open log", directory, std::io::Error::new(std::io::ErrorKind::NotFound, "no log segments here")));
        }
        let log = Log::open_with(directory, options, &mut |position, kind, payload| replay.visit(position, kind, payload))?;
        let (state, read_on_from) = replay.finish()?;
        Ok((Storage { log, state: RwLock::new(state) }, read_on_from))
    }

    /// Opens the log for reading only (see [`Log::open_read_only`]).
    pub fn open_read_only(directory: impl AsRef<Path>, snapshot: &SnapshotMarker) -> Result<Storage> {
        let mut replay = Replay::new(snapshot.clone());
        let log = Log::open_read_only_with(directory, &mut |position, kind, payload| replay.visit(position, kind, payload))?;
        let (state, _) = replay.finish()?;
        Ok(Storage { log, state: RwLock::new(state) })
    }

    /// The snapshot markers of the log in `directory` whose index the log's hard state
    /// has committed (etcd's `ValidSnapshotEntries`): candidates to boot from.
    pub fn valid_snapshot_markers(directory: impl AsRef<Path>) -> Result<Vec<SnapshotMarker>> {
        let mut markers = Vec::new();
        let mut hard_state = HardState::default();
        let mut failure = None;
        Log::open_read_only_with(directory, &mut |position, kind, payload| {
            let decoded = match kind {
                kind::SNAPSHOT => SnapshotMarker::decode(payload).map(|marker| markers.push(marker)),
                kind::HARD_STATE => HardState::decode(payload).map(|state| hard_state = state),
                _ => Ok(()),
            };
            if let Err(error) = decoded {
                failure.get_or_insert(Error::BadRecord { position: position.0, reason: error.to_string() });
            }
        })?;
        if let Some(error) = failure {
            return Err(error);
        }
        markers.retain(|marker| marker.index <= hard_state.commit);
        Ok(markers)
    }

    fn read_state(&self) -> RwLockReadGuard<'_, State> {
        self.state.read().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn write_state(&self) -> RwLockWriteGuard<'_, State> {
        self.state.write().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// etcd's `ReadAll`: the metadata, the last hard state, and the entries after the
    /// snapshot the storage was opened at (or last compacted to). Entry data is shared
    /// with the mapped segments, not copied.
    pub fn read_all(&self) -> Result<(Vec<u8>, HardState, Vec<Entry>)> {
        let state = self.read_state();
        let entries = match (state.index.first_index(), state.index.last_index()) {
            (Some(first), Some(last)) => self.read_entries(&state, first, last + 1, None)?,
            _ => Vec::new(),
        };
        Ok((state.metadata.clone(), state.hard_state, entries))
    }

    /// Persists a Raft `Ready`: `entries` (dropping every logged entry at or above the
    /// first of them), then `hard_state` if it is not empty. Returns once durable when
    /// etcd's `MustSync` says so (entries, or a new term or vote). A change of `commit`
    /// alone is written but not waited for: it becomes durable with the next sync, and
    /// Raft can learn the commit index again if it is lost.
    pub fn save(&self, hard_state: &HardState, entries: &[Entry]) -> Result<()> {
        if hard_state.is_empty() && entries.is_empty() {
            return Ok(());
        }
        self.check_writable()?;
        let limit = self.log.max_payload_bytes();
        for pair in entries.windows(2) {
            if pair[1].index != pair[0].index + 1 {
                return Err(Error::EntryGap { expected: pair[0].index + 1, found: pair[1].index });
            }
        }
        if let Some(entry) = entries.iter().find(|entry| entry.encoded_len() as u64 > limit) {
            return Err(Error::RecordTooLarge { payload_bytes: entry.encoded_len() as u64, limit_bytes: limit });
        }
        let mut end = None;
        let sync = {
            let mut state = self.write_state();
            if let Some(first) = entries.first() {
                if first.index <= state.highest_marker_index {
                    // Committed under a snapshot: Raft never rewrites those.
                    return Err(Error::Compacted { index: first.index, first_index: state.highest_marker_index + 1 });
                }
                let last = state.index.last_index().unwrap_or(state.snapshot.index);
                if state.restarts_at(first.index) {
                    state.index.clear();
                } else if first.index > last + 1 {
                    return Err(Error::EntryGap { expected: last + 1, found: first.index });
                }
            }
            let sync = must_sync(hard_state, &state.hard_state, entries.len());
            for entry in entries {
                let (appended, ()) = self.log.append_with(kind::ENTRY, entry.encoded_len(), |mut bytes| {
                    entry.encode_raw(&mut bytes);
                    debug_assert!(bytes.is_empty(), "encoded_len matches encode_raw");
                })?;
                state.index.append(entry.index, entry.term, appended.position.0).expect("checked for gaps above");
                end = Some(appended.end);
            }
            if !hard_state.is_empty() && (*hard_state != state.hard_state || state.hard_state_position.is_none()) {
                let appended = self.log.append(kind::HARD_STATE, &hard_state.encode_to_vec())?;
                state.hard_state = *hard_state;
                state.hard_state_position = Some(appended.position.0);
                end = Some(appended.end);
            }
            sync
        };
        match end {
            Some(end) if sync => self.log.wait_durable(end),
            _ => Ok(()),
        }
    }

    /// Writes a snapshot marker (etcd's `SaveSnapshot`) and waits until it is durable.
    /// Save the snapshot file itself first (see [`crate::Snapshotter`]), so that a
    /// marker always has its file.
    pub fn save_snapshot(&self, marker: &SnapshotMarker) -> Result<()> {
        self.check_writable()?;
        let appended = {
            let mut state = self.write_state();
            let appended = self.log.append(kind::SNAPSHOT, &marker.encode_to_vec())?;
            state.highest_marker_index = state.highest_marker_index.max(marker.index);
            state.snapshots.push((marker.clone(), appended.position.0));
            appended
        };
        self.log.wait_durable(appended.end)
    }

    /// Continues the log in a new segment.
    pub fn cut(&self) -> Result<()> {
        self.check_writable()?;
        self.log.cut()
    }

    fn check_writable(&self) -> Result<()> {
        if self.log.is_read_only() {
            return Err(Error::ReadOnly);
        }
        Ok(())
    }

    /// Releases the log below the newest durable snapshot marker at or below `index` (and
    /// at or below the hard state's commit index):
    /// deletes the segments wholly below both that marker and the first entry after it,
    /// and forgets the entries the snapshot covers. The latest hard state and the
    /// metadata are carried forward (written again, durably) first if their records would
    /// go. Never releases anything not covered by a durable snapshot. Returns the number
    /// of segment files deleted.
    pub fn release_to(&self, index: u64) -> Result<usize> {
        self.check_writable()?;
        let mut state = self.write_state();
        let durable = self.log.durable_position().0;
        // Only a marker the hard state commits: boot (etcd's ValidSnapshotEntries) ignores
        // the others, so releasing up to one would leave nothing to boot from.
        let commit = state.hard_state.commit;
        let Some((marker, marker_position)) = state
            .snapshots
            .iter()
            .rev()
            .find(|(marker, position)| marker.index <= index && marker.index <= commit && *position < durable)
            .cloned()
        else {
            return Ok(0);
        };
        // Keep every entry still held above the snapshot (its first one may lie after an
        // older marker's successor was compacted away).
        let mut limit = marker_position;
        let first_live_index = (marker.index + 1).max(state.index.first_index().unwrap_or(u64::MAX));
        if let Some(position) = state.index.position(first_live_index) {
            limit = limit.min(position);
        }
        if state.hard_state_position.is_some_and(|position| position < limit) {
            let appended = self.log.append(kind::HARD_STATE, &state.hard_state.encode_to_vec())?;
            state.hard_state_position = Some(appended.position.0);
        }
        if state.metadata_position < limit {
            let appended = self.log.append(kind::METADATA, &state.metadata)?;
            state.metadata_position = appended.position.0;
        }
        // Everything written so far must be durable before anything is deleted: the hard
        // state that commits the snapshot (a commit-only save is not synced by itself;
        // without it a power loss leaves no committed marker to boot from, etcd#10219),
        // and whatever was carried forward.
        self.log.wait_durable(self.log.published_position())?;
        let released = self.log.release_to(Position(limit))?;
        let first_position = self.log.first_position().0;
        state.snapshots.retain(|(_, position)| *position >= first_position);
        if marker.index >= state.snapshot.index {
            state.index.compact_to(marker.index + 1);
            state.snapshot = marker;
        }
        Ok(released)
    }

    /// Makes everything written durable and closes the log.
    pub fn close(self) -> Result<()> {
        self.log.close()
    }

    /// The hard state last saved (or recovered).
    pub fn hard_state(&self) -> HardState {
        self.read_state().hard_state
    }

    /// The metadata given to `create`.
    pub fn metadata(&self) -> Vec<u8> {
        self.read_state().metadata.clone()
    }

    /// The snapshot the entries start after.
    pub fn snapshot_marker(&self) -> SnapshotMarker {
        self.read_state().snapshot.clone()
    }

    /// The index of the first entry available (one past the snapshot's when none is).
    pub fn first_index(&self) -> u64 {
        let state = self.read_state();
        state.index.first_index().unwrap_or(state.snapshot.index + 1)
    }

    /// The index of the last entry (the snapshot's when there is none).
    pub fn last_index(&self) -> u64 {
        let state = self.read_state();
        state.index.last_index().unwrap_or(state.snapshot.index)
    }

    /// The term of entry `index`; also answers for the snapshot's own index.
    pub fn term(&self, index: u64) -> Result<u64> {
        let state = self.read_state();
        if index == state.snapshot.index {
            return Ok(state.snapshot.term);
        }
        state.index.term(index).ok_or_else(|| out_of_range(&state, index))
    }

    /// Entries `low..high`, at most `max_size_bytes` of them in encoded size but always
    /// at least one (as raft-rs asks). Data is shared with the mapped segments.
    pub fn entries(&self, low: u64, high: u64, max_size_bytes: Option<u64>) -> Result<Vec<Entry>> {
        let state = self.read_state();
        self.read_entries(&state, low, high, max_size_bytes)
    }

    fn read_entries(&self, state: &State, low: u64, high: u64, max_size_bytes: Option<u64>) -> Result<Vec<Entry>> {
        if low > high {
            return Err(Error::invalid(format!("entries {low}..{high}: low above high")));
        }
        if low == high {
            return Ok(Vec::new());
        }
        for index in [low, high - 1] {
            if state.index.position(index).is_none() {
                return Err(out_of_range(state, index));
            }
        }
        let mut entries = Vec::with_capacity((high - low).min(1024) as usize);
        let mut total_bytes = 0u64;
        for index in low..high {
            let position = state.index.position(index).expect("checked the range's ends");
            let entry = self.read_entry(position)?;
            if entry.index != index {
                return Err(Error::BadRecord { position, reason: format!("holds entry {}, the index says {index}", entry.index) });
            }
            total_bytes += entry.encoded_len() as u64;
            if !entries.is_empty() && max_size_bytes.is_some_and(|max| total_bytes > max) {
                break;
            }
            entries.push(entry);
        }
        Ok(entries)
    }

    /// Calls `visit` with every live entry from `low` on, in index order, until it
    /// returns `false`. Streams the log with positioned reads into a small buffer instead
    /// of mapping it, so a scan of the whole log keeps memory flat (what `entries` maps
    /// stays resident while the returned `Bytes` live). Entries overwritten by later
    /// saves are skipped.
    pub fn for_each_entry(&self, low: u64, mut visit: impl FnMut(Entry) -> bool) -> Result<()> {
        let state = self.read_state();
        let Some(start) = state.index.position(low) else {
            if state.index.last_index().is_none_or(|last| low == last + 1) && low > state.snapshot.index {
                return Ok(());
            }
            return Err(out_of_range(&state, low));
        };
        for record in self.log.iter_from(Position(start)) {
            let record = record?;
            if record.kind != kind::ENTRY {
                continue;
            }
            let (_, index) = entry_term_and_index(&record.payload)
                .map_err(|reason| Error::BadRecord { position: record.position.0, reason: reason.into() })?;
            if state.index.position(index) != Some(record.position.0) {
                continue;
            }
            let entry = Entry::decode(Bytes::from(record.payload))
                .map_err(|error| Error::BadRecord { position: record.position.0, reason: error.to_string() })?;
            if !visit(entry) {
                break;
            }
        }
        Ok(())
    }

    fn read_entry(&self, position: u64) -> Result<Entry> {
        let (kind, payload): (RecordKind, Bytes) = self.log.read_shared(Position(position))?;
        if kind != kind::ENTRY {
            return Err(Error::BadRecord { position, reason: format!("expected an entry, found kind {}", kind.0) });
        }
        Entry::decode(payload).map_err(|error| Error::BadRecord { position, reason: error.to_string() })
    }

    /// Bytes of memory the entry index uses.
    pub fn index_heap_bytes(&self) -> usize {
        self.read_state().index.heap_bytes()
    }

    /// The segment log underneath.
    pub fn log(&self) -> &Log {
        &self.log
    }
}

fn out_of_range(state: &State, index: u64) -> Error {
    let first_index = state.index.first_index().unwrap_or(state.snapshot.index + 1);
    if index < first_index {
        Error::Compacted { index, first_index }
    } else {
        Error::Unavailable { index, last_index: state.index.last_index().unwrap_or(state.snapshot.index) }
    }
}

fn holds_segments(directory: &Path) -> Result<bool> {
    match std::fs::read_dir(directory) {
        Ok(entries) => {
            for entry in entries {
                let entry = entry.map_err(|source| Error::io("list directory", directory, source))?;
                if entry.file_name().to_str().and_then(crate::segment::parse_file_name).is_some() {
                    return Ok(true);
                }
            }
            Ok(false)
        }
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(false),
        Err(source) => Err(Error::io("list directory", directory, source)),
    }
}

/// `<directory><suffix>`, beside `directory`.
fn sibling(directory: &Path, suffix: &str) -> Result<PathBuf> {
    let name = directory.file_name().ok_or_else(|| Error::invalid(format!("{} has no file name", directory.display())))?;
    let mut name = name.to_os_string();
    name.push(suffix);
    Ok(directory.with_file_name(name))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn term_and_index_are_read_without_decoding_data() {
        for entry in
            [Entry::new(3, 9, Bytes::from_static(b"data")), Entry::default(), Entry { data: None, ..Entry::new(u64::MAX, u64::MAX, "") }]
        {
            assert_eq!(entry_term_and_index(&entry.encode_to_vec()), Ok((entry.term, entry.index)));
        }
        assert!(entry_term_and_index(&[0x08]).is_err());
        assert!(entry_term_and_index(&[0x22, 0x05, 0x01]).is_err());
    }
}
