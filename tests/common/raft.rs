//! Helpers for the Raft storage tests: entries whose data names them, a model of the
//! Raft log under the overwrite rule, and crash images of a storage directory.

use std::collections::BTreeMap;
use std::path::Path;

use bytes::Bytes;
use segstore::raftpb::{Entry, HardState};
use segstore::segment::{parse_file_name, SEGMENT_HEADER_SIZE};
use segstore::{Error, Options, SnapshotMarker, Storage};

/// Data that names its entry: `index/term:` then a filler derived from both (up to
/// `size_bytes`), so that an entry read from the wrong place cannot pass for the right one.
pub fn entry_data(index: u64, term: u64, size_bytes: usize) -> Bytes {
    let mut bytes = format!("{index}/{term}:").into_bytes();
    let seed = index.wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ term;
    while bytes.len() < size_bytes {
        bytes.push((seed >> (bytes.len() % 8 * 8)) as u8 ^ bytes.len() as u8);
    }
    Bytes::from(bytes)
}

pub fn sized_entry(index: u64, term: u64, size_bytes: usize) -> Entry {
    Entry::new(term, index, entry_data(index, term, size_bytes))
}

pub fn entry(index: u64, term: u64) -> Entry {
    sized_entry(index, term, 24)
}

/// Entries `range`, all of `term`, each `size_bytes` of data.
pub fn entries(range: std::ops::RangeInclusive<u64>, term: u64, size_bytes: usize) -> Vec<Entry> {
    range.map(|index| sized_entry(index, term, size_bytes)).collect()
}

pub fn hard_state(term: u64, vote: u64, commit: u64) -> HardState {
    HardState { term, vote, commit }
}

/// (index, term) of each entry: the shape of a log, for messages and table rows.
pub fn shape(entries: &[Entry]) -> Vec<(u64, u64)> {
    entries.iter().map(|entry| (entry.index, entry.term)).collect()
}

/// What a Raft log holds, by Raft's rules: an entry at `i` drops every entry at `i` or
/// above first; the last non-empty hard state wins.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Model {
    pub entries: BTreeMap<u64, Entry>,
    pub hard_state: HardState,
}

impl Model {
    pub fn save(&mut self, hard_state: &HardState, entries: &[Entry]) {
        if let Some(first) = entries.first() {
            self.entries.split_off(&first.index);
        }
        for entry in entries {
            self.entries.insert(entry.index, entry.clone());
        }
        if !hard_state.is_empty() {
            self.hard_state = *hard_state;
        }
    }

    /// The entries above `index`, as a log opened at a snapshot of `index` returns them.
    pub fn entries_after(&self, index: u64) -> Vec<Entry> {
        self.entries.range(index + 1..).map(|(_, entry)| entry.clone()).collect()
    }

    pub fn term(&self, index: u64) -> Option<u64> {
        self.entries.get(&index).map(|entry| entry.term)
    }

    pub fn last_index(&self) -> u64 {
        self.entries.keys().next_back().copied().unwrap_or(0)
    }
}

/// Checks everything a storage reports against `model`, for a storage whose entries
/// start after `snapshot` (the entries at or below it are not its to return).
pub fn assert_matches_model(storage: &Storage, model: &Model, snapshot: &SnapshotMarker, metadata: &[u8], case: &str) {
    let (read_metadata, hard_state, read) = storage.read_all().unwrap_or_else(|error| panic!("{case}: read_all failed: {error}"));
    let expected = model.entries_after(snapshot.index);
    assert_eq!(read_metadata, metadata, "{case}: metadata");
    assert_eq!(hard_state, model.hard_state, "{case}: hard state");
    assert!(read == expected, "{case}: read {:?}, expected {:?}", shape(&read), shape(&expected));
    assert_eq!(storage.snapshot_marker().index, snapshot.index, "{case}: snapshot marker");
    assert_eq!(storage.first_index(), expected.first().map_or(snapshot.index + 1, |entry| entry.index), "{case}: first_index");
    assert_eq!(storage.last_index(), expected.last().map_or(snapshot.index, |entry| entry.index), "{case}: last_index");
    assert_eq!(storage.term(snapshot.index).ok(), Some(snapshot.term), "{case}: term of the snapshot index");
    for entry in &expected {
        assert_eq!(storage.term(entry.index).ok(), Some(entry.term), "{case}: term({})", entry.index);
    }
}

/// Opens `directory` with `Storage::open_replaying` at `snapshot`: the entries it hands
/// over must be the model's above the snapshot, in index order, each once, and the
/// storage it opens must match the model as `Storage::open`'s does.
pub fn assert_replay_matches_model(
    directory: &Path,
    options: Options,
    model: &Model,
    snapshot: &SnapshotMarker,
    metadata: &[u8],
    case: &str,
) {
    let mut replayed = Vec::new();
    let storage = Storage::open_replaying(directory, snapshot, options, |entry| replayed.push(entry))
        .unwrap_or_else(|error| panic!("{case}: open_replaying failed: {error}"));
    let expected = model.entries_after(snapshot.index);
    assert!(replayed == expected, "{case}: replayed {:?}, expected {:?}", shape(&replayed), shape(&expected));
    assert_matches_model(&storage, model, snapshot, metadata, &format!("{case}, opened replaying"));
}

/// The segment files of `directory` with their bytes: what a crash leaves of a log
/// whose process died (the page cache holds every byte written).
pub fn segment_image(directory: &Path) -> BTreeMap<String, Vec<u8>> {
    let mut image = BTreeMap::new();
    for entry in std::fs::read_dir(directory).unwrap() {
        let entry = entry.unwrap();
        let name = entry.file_name().into_string().unwrap();
        if parse_file_name(&name).is_some() {
            // A segment named in the listing is never deleted or renamed under us: the
            // test's own thread is the only one that releases.
            image.insert(name, std::fs::read(entry.path()).unwrap());
        }
    }
    image
}

/// The image as a power loss may leave it: every byte at or above log position
/// `from` (never below what was durable) back to zero, as the preparer left it. Segment
/// headers stay: the preparer synced them before naming the file.
pub fn zeroed_from(image: &BTreeMap<String, Vec<u8>>, from: u64) -> BTreeMap<String, Vec<u8>> {
    image
        .iter()
        .map(|(name, bytes)| {
            let (_, base_position) = parse_file_name(name).unwrap();
            let mut bytes = bytes.clone();
            let start = from.saturating_sub(base_position).clamp(SEGMENT_HEADER_SIZE, bytes.len() as u64) as usize;
            bytes[start..].fill(0);
            (name.clone(), bytes)
        })
        .collect()
}

/// Writes `image` into `directory` (created if missing).
pub fn write_image(image: &BTreeMap<String, Vec<u8>>, directory: &Path) {
    std::fs::create_dir_all(directory).unwrap();
    for (name, bytes) in image {
        std::fs::write(directory.join(name), bytes).unwrap();
    }
}

/// The newest snapshot marker a booting node may open the log at (the highest index
/// `Storage::valid_snapshot_markers` offers), as etcd's boot picks it.
pub fn newest_valid_marker(directory: &Path) -> Result<Option<SnapshotMarker>, Error> {
    Ok(Storage::valid_snapshot_markers(directory)?.into_iter().max_by_key(|marker| (marker.index, marker.term)))
}
