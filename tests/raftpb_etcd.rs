//! segstore's raftpb encodes exactly as etcd's own Go code does. The fixtures were
//! written by `tools/etcd-fixtures/generate.sh` with etcd 3.4's raftpb package.

use bytes::Bytes;
use prost::Message;
use segstore::raftpb::{ConfState, Entry, EntryType, HardState, Snapshot, SnapshotMetadata};

fn fixture(name: &str) -> Vec<u8> {
    let path = format!("{}/tests/fixtures/raftpb/{name}.bin", env!("CARGO_MANIFEST_DIR"));
    std::fs::read(&path).unwrap_or_else(|error| panic!("{path}: {error}"))
}

fn conf_state() -> ConfState {
    ConfState { voters: vec![1, 2, 3], learners: vec![4], voters_outgoing: vec![1, 2], learners_next: vec![5], auto_leave: true }
}

fn check<M: Message + Default + PartialEq + std::fmt::Debug>(name: &str, message: M) {
    let expected = fixture(name);
    assert_eq!(message.encode_to_vec(), expected, "{name}: segstore's bytes differ from etcd's");
    assert_eq!(message.encoded_len(), expected.len(), "{name}: encoded_len");
    assert_eq!(M::decode(&expected[..]).unwrap(), message, "{name}: decoding etcd's bytes");
}

#[test]
fn entries_match_etcd() {
    let entry = |entry_type: EntryType, term, index, data: Option<&[u8]>| Entry {
        entry_type: entry_type as i32,
        term,
        index,
        data: data.map(Bytes::copy_from_slice),
    };
    check("entry_empty", entry(EntryType::EntryNormal, 0, 0, None));
    check("entry_nil_data", entry(EntryType::EntryNormal, 1, 1, None));
    check("entry_empty_data", entry(EntryType::EntryNormal, 1, 2, Some(b"")));
    check("entry_normal", entry(EntryType::EntryNormal, 5, 300, Some(b"hello raft")));
    check("entry_conf_change", entry(EntryType::EntryConfChange, 7, 70000, Some(&[0, 1, 2, 255])));
    check("entry_conf_change_v2", entry(EntryType::EntryConfChangeV2, 8, 80000, Some(b"v2")));
    check("entry_max", entry(EntryType::EntryNormal, u64::MAX, u64::MAX, Some(&[0; 300])));
}

#[test]
fn hard_states_match_etcd() {
    check("hard_state_empty", HardState::default());
    check("hard_state", HardState { term: 3, vote: 2, commit: 100 });
    check("hard_state_max", HardState { term: u64::MAX, vote: u64::MAX, commit: u64::MAX });
}

#[test]
fn snapshots_and_conf_states_match_etcd() {
    check("conf_state_empty", ConfState::default());
    check("conf_state", conf_state());
    check("snapshot_metadata", SnapshotMetadata { conf_state: conf_state(), index: 1000, term: 7 });
    check("snapshot_empty", Snapshot::default());
    check(
        "snapshot",
        Snapshot {
            data: Some(Bytes::from_static(b"state machine")),
            metadata: SnapshotMetadata { conf_state: conf_state(), index: 1000, term: 7 },
        },
    );
}

#[test]
fn packed_repeated_fields_are_read_too() {
    // Field 1, wire type 2 (packed): voters 1, 2, 3; then auto_leave.
    let packed = [0x0a, 0x03, 0x01, 0x02, 0x03, 0x28, 0x00];
    let decoded = ConfState::decode(&packed[..]).unwrap();
    assert_eq!(decoded.voters, vec![1, 2, 3]);
}

#[test]
fn entry_data_decoded_from_bytes_shares_the_buffer() {
    let encoded = Bytes::from(Entry::new(1, 2, Bytes::from_static(b"shared")).encode_to_vec());
    let decoded = Entry::decode(encoded.clone()).unwrap();
    let data = decoded.data.unwrap();
    let range = encoded.as_ptr_range();
    assert!(range.contains(&data.as_ptr()), "the data points into the encoded buffer, not a copy");
}
