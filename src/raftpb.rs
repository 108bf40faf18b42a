//! Raft's messages as etcd writes them (`raftpb`, proto2 through gogoproto), with prost
//! derives written by hand: no protoc. Byte-compatible with etcd 3.4: entry and hard
//! state fields are always emitted, even when zero; `data` is emitted only when present
//! (etcd tells nil from empty); repeated fields are written unpacked and read either way.
//! `tests/raftpb_etcd.rs` compares the bytes with fixtures marshalled by etcd's own code.

use bytes::Bytes;

/// What an entry's data is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, prost::Enumeration)]
#[repr(i32)]
pub enum EntryType {
    EntryNormal = 0,
    EntryConfChange = 1,
    EntryConfChangeV2 = 2,
}

/// One Raft log entry. `data` stays a `Bytes`, so an entry read from the log can share
/// the mapped segment instead of copying it.
#[derive(Clone, PartialEq, Eq, prost::Message)]
pub struct Entry {
    #[prost(enumeration = "EntryType", required, tag = "1")]
    pub entry_type: i32,
    #[prost(uint64, required, tag = "2")]
    pub term: u64,
    #[prost(uint64, required, tag = "3")]
    pub index: u64,
    #[prost(bytes = "bytes", optional, tag = "4")]
    pub data: Option<Bytes>,
}

impl Entry {
    /// A normal entry carrying `data`.
    pub fn new(term: u64, index: u64, data: impl Into<Bytes>) -> Self {
        Entry { entry_type: EntryType::EntryNormal as i32, term, index, data: Some(data.into()) }
    }

    /// The entry's data, empty when absent.
    pub fn data_bytes(&self) -> &[u8] {
        self.data.as_deref().unwrap_or_default()
    }
}

/// The state Raft must not forget: the current term, the vote in it, and the commit index.
#[derive(Clone, Copy, PartialEq, Eq, Hash, prost::Message)]
pub struct HardState {
    #[prost(uint64, required, tag = "1")]
    pub term: u64,
    #[prost(uint64, required, tag = "2")]
    pub vote: u64,
    #[prost(uint64, required, tag = "3")]
    pub commit: u64,
}

impl HardState {
    /// etcd's `IsEmptyHardState`: every field zero.
    pub fn is_empty(&self) -> bool {
        *self == HardState::default()
    }
}

/// The configuration of a Raft group.
#[derive(Clone, PartialEq, Eq, Hash, prost::Message)]
pub struct ConfState {
    #[prost(uint64, repeated, packed = "false", tag = "1")]
    pub voters: Vec<u64>,
    #[prost(uint64, repeated, packed = "false", tag = "2")]
    pub learners: Vec<u64>,
    #[prost(uint64, repeated, packed = "false", tag = "3")]
    pub voters_outgoing: Vec<u64>,
    #[prost(uint64, repeated, packed = "false", tag = "4")]
    pub learners_next: Vec<u64>,
    #[prost(bool, required, tag = "5")]
    pub auto_leave: bool,
}

/// What a snapshot covers: the log up to `index` (whose entry has `term`), and the
/// configuration at that point.
#[derive(Clone, PartialEq, Eq, Hash, prost::Message)]
pub struct SnapshotMetadata {
    #[prost(message, required, tag = "1")]
    pub conf_state: ConfState,
    #[prost(uint64, required, tag = "2")]
    pub index: u64,
    #[prost(uint64, required, tag = "3")]
    pub term: u64,
}

/// A state machine snapshot.
#[derive(Clone, PartialEq, Eq, prost::Message)]
pub struct Snapshot {
    #[prost(bytes = "bytes", optional, tag = "1")]
    pub data: Option<Bytes>,
    #[prost(message, required, tag = "2")]
    pub metadata: SnapshotMetadata,
}

impl Snapshot {
    /// etcd's `IsEmptySnap`: a snapshot at index 0 is no snapshot.
    pub fn is_empty(&self) -> bool {
        self.metadata.index == 0
    }
}

/// etcd's `MustSync`: a save must be durable before Raft goes on when it carries
/// entries, or when the term or the vote changed. A change of `commit` alone need not
/// be: Raft can learn the commit index again from the leader.
pub fn must_sync(state: &HardState, previous: &HardState, entry_count: usize) -> bool {
    entry_count != 0 || state.vote != previous.vote || state.term != previous.term
}
