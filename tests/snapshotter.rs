//! Snapshot files: etcd's format byte for byte, atomic saves, `.broken` handling, purge.

use bytes::Bytes;
use segstore::raftpb::{ConfState, Snapshot, SnapshotMetadata};
use segstore::snapshotter::snapshot_file_name;
use segstore::{Error, SnapshotMarker, Snapshotter};

fn snapshot(term: u64, index: u64) -> Snapshot {
    let conf_state =
        ConfState { voters: vec![1, 2, 3], learners: vec![4], voters_outgoing: vec![1, 2], learners_next: vec![5], auto_leave: true };
    Snapshot { data: Some(Bytes::from_static(b"state machine")), metadata: SnapshotMetadata { conf_state, index, term } }
}

fn etcd_fixture_directory() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/raftpb/snap")
}

#[test]
fn files_are_byte_identical_to_etcds_and_etcds_load() {
    let directory = tempfile::tempdir().unwrap();
    let snapshotter = Snapshotter::new(directory.path()).unwrap();
    snapshotter.save_snapshot(&snapshot(7, 1000)).unwrap();
    let name = snapshot_file_name(7, 1000);
    assert_eq!(name, "0000000000000007-00000000000003e8.snap");
    let ours = std::fs::read(directory.path().join(&name)).unwrap();
    let etcds = std::fs::read(etcd_fixture_directory().join(&name)).unwrap();
    assert_eq!(ours, etcds);
    assert_eq!(Snapshotter::read(&etcd_fixture_directory().join(&name)).unwrap(), snapshot(7, 1000));
}

#[test]
fn load_returns_the_newest_readable_and_renames_broken_files() {
    let directory = tempfile::tempdir().unwrap();
    let snapshotter = Snapshotter::new(directory.path()).unwrap();
    snapshotter.save_snapshot(&snapshot(1, 10)).unwrap();
    snapshotter.save_snapshot(&snapshot(2, 20)).unwrap();
    snapshotter.save_snapshot(&snapshot(2, 30)).unwrap();
    // The newest is damaged, an empty one sits above it.
    let newest = directory.path().join(snapshot_file_name(2, 30));
    let mut bytes = std::fs::read(&newest).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 0x40;
    std::fs::write(&newest, bytes).unwrap();
    std::fs::write(directory.path().join(snapshot_file_name(3, 40)), b"").unwrap();
    assert_eq!(snapshotter.load().unwrap(), snapshot(2, 20));
    assert!(directory.path().join(format!("{}.broken", snapshot_file_name(2, 30))).exists());
    assert!(directory.path().join(format!("{}.broken", snapshot_file_name(3, 40))).exists());
    assert!(!newest.exists());
}

#[test]
fn load_newest_available_needs_a_marker_and_leaves_unmarked_files_alone() {
    let directory = tempfile::tempdir().unwrap();
    let snapshotter = Snapshotter::new(directory.path()).unwrap();
    snapshotter.save_snapshot(&snapshot(1, 10)).unwrap();
    snapshotter.save_snapshot(&snapshot(1, 20)).unwrap();
    let markers = [SnapshotMarker::new(0, 0), SnapshotMarker::new(10, 1)];
    assert_eq!(snapshotter.load_newest_available(&markers).unwrap(), snapshot(1, 10));
    assert!(directory.path().join(snapshot_file_name(1, 20)).exists(), "an orphan that reads fine stays");
    assert!(matches!(snapshotter.load_newest_available(&[SnapshotMarker::new(5, 1)]), Err(Error::NoSnapshot)));
}

#[test]
fn empty_snapshots_are_not_written_and_leftovers_are_removed() {
    let directory = tempfile::tempdir().unwrap();
    let snapshotter = Snapshotter::new(directory.path()).unwrap();
    snapshotter.save_snapshot(&Snapshot::default()).unwrap();
    assert_eq!(std::fs::read_dir(directory.path()).unwrap().count(), 0);
    std::fs::write(directory.path().join(format!("{}.tmp", snapshot_file_name(1, 1))), b"partial").unwrap();
    Snapshotter::new(directory.path()).unwrap();
    assert_eq!(std::fs::read_dir(directory.path()).unwrap().count(), 0);
    assert!(matches!(Snapshotter::new(directory.path()).unwrap().load(), Err(Error::NoSnapshot)));
}

#[test]
fn purge_keeps_the_newest() {
    let directory = tempfile::tempdir().unwrap();
    let snapshotter = Snapshotter::new(directory.path()).unwrap();
    for index in 1..=6 {
        snapshotter.save_snapshot(&snapshot(1, index * 10)).unwrap();
    }
    assert_eq!(snapshotter.purge(2).unwrap(), 4);
    let mut names: Vec<_> =
        std::fs::read_dir(directory.path()).unwrap().map(|entry| entry.unwrap().file_name().into_string().unwrap()).collect();
    names.sort();
    assert_eq!(names, vec![snapshot_file_name(1, 50), snapshot_file_name(1, 60)]);
}
