//! Crash images of the Raft storage's whole cycle (save → cut → save_snapshot →
//! release_to), booted the way etcd boots: open at the newest snapshot marker
//! `valid_snapshot_markers` offers.
//!
//! After every operation of a scripted workload the segment files are copied twice:
//! as they are (a killed process: the page cache holds every byte written), and with
//! every byte from the durable position on back to zero (a power loss that kept only
//! what was synced), plus a torn variant cut at a random place above it. A release that
//! deletes several segments is also imaged with only some of them gone. Each image must
//! open, to the state after the operation (killed) or to a state no older than the last
//! durable save (power loss); never to a hard state without the entries it commits, and
//! never to a snapshot older than one the log was released to.

mod common;

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Instant;

use bytes::Bytes;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use segstore::raftpb::{ConfState, Entry, HardState, Snapshot, SnapshotMetadata};
use segstore::snapshotter::snapshot_file_name;
use segstore::storage::kind;
use segstore::{Error, Log, Options, SnapshotMarker, Snapshotter, Storage, SyncMode};

use common::raft::{entries, hard_state, newest_valid_marker, segment_image, shape, write_image, zeroed_from, Model};
use common::{copy_log, test_seed, SeedGuard};

const METADATA: &[u8] = b"cluster 7, member 3";
const SEGMENT_SIZE_BYTES: u64 = 8192;

fn options() -> Options {
    Options { segment_size_bytes: SEGMENT_SIZE_BYTES, sync_mode: SyncMode::Msync }
}

fn marker(index: u64, term: u64) -> SnapshotMarker {
    SnapshotMarker::new(index, term)
}

#[derive(Clone, Debug)]
enum Action {
    Save(HardState, Vec<Entry>),
    Cut,
    Snapshot(SnapshotMarker),
    Release(u64),
}

fn describe(action: &Action) -> String {
    match action {
        Action::Save(hard_state, entries) => {
            let range = match (entries.first(), entries.last()) {
                (Some(first), Some(last)) => format!("{}..={} of term {}", first.index, last.index, first.term),
                _ => "no entries".to_string(),
            };
            format!("save {hard_state:?}, {range}")
        }
        other => format!("{other:?}"),
    }
}

/// What an image of the log may recover to.
struct Expected<'a> {
    model: &'a Model,
    /// Hard states the image may hold: exactly the model's for a killed process; for a
    /// power loss, any saved since the last sync (commit-only changes are not synced).
    hard_states: &'a [HardState],
    /// Every snapshot marker saved.
    markers: &'a [SnapshotMarker],
    /// The snapshot the log was last released to: no image may need an older one.
    released_to: &'a SnapshotMarker,
}

/// Boots `directory` as etcd does and checks what it recovers; returns the marker.
fn check_image(directory: &Path, expected: &Expected<'_>, case: &str) -> SnapshotMarker {
    let at = match newest_valid_marker(directory) {
        Ok(Some(at)) => at,
        Ok(None) => panic!("{case}: no valid snapshot marker (released to {:?})", expected.released_to),
        Err(error) => panic!("{case}: valid_snapshot_markers failed: {error:?}"),
    };
    let read_only = Storage::open_read_only(directory, &at)
        .unwrap_or_else(|error| panic!("{case}: read-only open at {at:?} failed: {error:?}"))
        .read_all()
        .unwrap();
    // A booting node replaying the whole log during the open, on a copy of the image
    // (opening repairs a torn tail): the same entries.
    let copy = tempfile::tempdir().unwrap();
    common::copy_log(directory, copy.path());
    let mut replayed = Vec::new();
    Storage::open_replaying(copy.path(), &at, options(), |entry| replayed.push(entry))
        .unwrap_or_else(|error| panic!("{case}: open_replaying at {at:?} failed: {error:?}"));
    assert!(replayed == read_only.2, "{case}: replayed {:?}, read {:?}", shape(&replayed), shape(&read_only.2));
    let storage = Storage::open(directory, &at, options()).unwrap_or_else(|error| panic!("{case}: open at {at:?} failed: {error:?}"));
    let (metadata, recovered_hard_state, recovered) = storage.read_all().unwrap();
    assert!((&metadata, &recovered_hard_state, &recovered) == (&read_only.0, &read_only.1, &read_only.2), "{case}: the two opens differ");
    assert_eq!(metadata, METADATA, "{case}: metadata");
    assert!(
        expected.hard_states.contains(&recovered_hard_state),
        "{case}: hard state {recovered_hard_state:?}, expected one of {:?}",
        expected.hard_states
    );
    assert!(expected.markers.contains(&at), "{case}: opened at {at:?}, which was never saved");
    assert!(
        at.index >= expected.released_to.index,
        "{case}: the newest valid marker {at:?} is older than {:?}, which the log was released to",
        expected.released_to
    );
    // A hard state never comes without the entries it commits.
    for index in at.index + 1..=recovered_hard_state.commit {
        assert!(
            recovered.iter().any(|entry| entry.index == index),
            "{case}: commit {} but entry {index} is missing",
            recovered_hard_state.commit
        );
    }
    let expected_entries = expected.model.entries_after(at.index);
    assert!(
        recovered == expected_entries,
        "{case}: opened at {at:?}, recovered {:?}, expected {:?}",
        shape(&recovered),
        shape(&expected_entries)
    );
    if expected.hard_states.len() == 1 {
        // Nothing was lost: the newest committed marker is the one to boot from.
        let newest = expected.markers.iter().filter(|marker| marker.index <= recovered_hard_state.commit).max_by_key(|marker| marker.index);
        assert_eq!(Some(&at), newest, "{case}: not the newest committed marker");
    }
    at
}

fn image_directory(image: &BTreeMap<String, Vec<u8>>) -> tempfile::TempDir {
    let directory = tempfile::tempdir().unwrap();
    write_image(image, directory.path());
    directory
}

/// A Raft-like workload: appends, overwrites of the uncommitted suffix in a new term,
/// commit-only and term changes, cuts, snapshots at committed indexes and releases to
/// them, with entries of every size over small segments.
fn next_action(rng: &mut StdRng, model: &Model, newest_marker: &SnapshotMarker) -> Action {
    let hs = model.hard_state;
    let (term, commit, last) = (hs.term.max(1), hs.commit, model.last_index());
    loop {
        match rng.gen_range(0..100) {
            0..=39 => {
                let overwrite = last > commit && rng.gen_bool(0.25);
                let (first, term) = if overwrite { (rng.gen_range(commit + 1..=last), term + 1) } else { (last + 1, term) };
                let count = rng.gen_range(1..=6);
                let batch = entries(first..=first + count - 1, term, rng.gen_range(20..1500));
                let commit = if rng.gen_bool(0.5) { rng.gen_range(commit..=first - 1) } else { commit };
                return Action::Save(hard_state(term, 1, commit), batch);
            }
            40..=54 if commit < last => return Action::Save(hard_state(term, hs.vote, rng.gen_range(commit + 1..=last)), vec![]),
            55..=59 => return Action::Save(hard_state(term + 1, 0, commit), vec![]),
            60..=67 => return Action::Cut,
            68..=82 if commit > newest_marker.index => {
                let index = rng.gen_range(newest_marker.index + 1..=commit);
                return Action::Snapshot(marker(index, model.term(index).unwrap()));
            }
            // Also below the snapshot the storage is at: an older marker must not take
            // live entries with it.
            83..=99 => return Action::Release(rng.gen_range(0..=commit)),
            _ => {}
        }
    }
}

#[test]
fn every_step_of_a_workload_recovers_from_a_crash() {
    let seed = test_seed();
    let _guard = SeedGuard { test: "every_step_of_a_workload_recovers_from_a_crash", seed };
    println!("seed {seed}");
    let started = Instant::now();
    let mut rng = StdRng::seed_from_u64(seed);
    let directory = tempfile::tempdir().unwrap();
    let path = directory.path().join("wal");
    let storage = Storage::create(&path, METADATA, options()).unwrap();
    let mut model = Model::default();
    let mut markers = vec![marker(0, 0)];
    let mut released_to = marker(0, 0);
    // Hard states saved since the last moment everything was durable, oldest first.
    let mut unsynced_hard_states = vec![HardState::default()];
    let (mut images, mut releases_imaged) = (0, 0);
    for step in 0..200 {
        let action = next_action(&mut rng, &model, markers.last().unwrap());
        let before = matches!(action, Action::Release(_)).then(|| segment_image(&path));
        match &action {
            Action::Save(state, batch) => {
                storage.save(state, batch).unwrap();
                model.save(state, batch);
            }
            Action::Cut => storage.cut().unwrap(),
            Action::Snapshot(snapshot) => {
                storage.save_snapshot(snapshot).unwrap();
                markers.push(snapshot.clone());
            }
            Action::Release(index) => {
                storage.release_to(*index).unwrap();
                released_to = storage.snapshot_marker();
            }
        }
        let log = storage.log();
        let (durable, published) = (log.durable_position().0, log.published_position().0);
        if durable == published {
            unsynced_hard_states = vec![model.hard_state];
        } else if unsynced_hard_states.last() != Some(&model.hard_state) {
            unsynced_hard_states.push(model.hard_state);
        }
        let image = segment_image(&path);
        let case = format!("step {step} ({}), seed {seed}", describe(&action));

        let killed = Expected { model: &model, hard_states: &[model.hard_state], markers: &markers, released_to: &released_to };
        check_image(image_directory(&image).path(), &killed, &format!("{case}, killed"));
        let power_loss = Expected { hard_states: &unsynced_hard_states, ..killed };
        check_image(image_directory(&zeroed_from(&image, durable)).path(), &power_loss, &format!("{case}, power loss"));
        images += 2;
        if published > durable {
            let torn_at = rng.gen_range(durable..published);
            check_image(image_directory(&zeroed_from(&image, torn_at)).path(), &power_loss, &format!("{case}, torn at {torn_at}"));
            images += 1;
        }

        // A crash in the middle of the release: its carried records are written, the
        // first `gone` of the segments it deletes are.
        if let Some(before) = before {
            let deleted: Vec<&String> = before.keys().filter(|name| !image.contains_key(*name)).collect();
            for gone in 0..deleted.len() {
                let mut partial = image.clone();
                for name in &deleted[gone..] {
                    partial.insert((*name).clone(), before[*name].clone());
                }
                let case = format!("{case}, {gone} of {} deleted", deleted.len());
                check_image(image_directory(&partial).path(), &killed, &format!("{case}, killed"));
                check_image(image_directory(&zeroed_from(&partial, durable)).path(), &power_loss, &format!("{case}, power loss"));
                images += 2;
                releases_imaged += 1;
            }
        }
    }
    assert!(releases_imaged > 0, "the workload released nothing in several segments");
    println!("{images} images ({releases_imaged} taken during releases) in {:?}", started.elapsed());
    storage.close().unwrap();
}

/// Leaves, at the given path, what a crash left of a creation.
type Leftover = Box<dyn Fn(&Path)>;

/// The images a crash leaves while `Storage::create` builds the log aside: a temporary
/// directory in some state of completion.
fn interrupted_creations() -> Vec<(&'static str, Leftover)> {
    vec![
        ("an empty temporary directory", Box::new(|building: &Path| std::fs::create_dir_all(building).unwrap())),
        (
            "a segment without records",
            Box::new(|building: &Path| {
                drop(Log::open(building, options()).unwrap());
            }),
        ),
        (
            "the metadata without the snapshot marker",
            Box::new(|building: &Path| {
                let log = Log::open(building, options()).unwrap();
                log.append(kind::METADATA, b"an older attempt").unwrap();
                drop(log);
            }),
        ),
        (
            "a whole log not yet renamed",
            Box::new(|building: &Path| {
                let scratch = tempfile::tempdir().unwrap();
                Storage::create(scratch.path().join("log"), b"an older attempt", options()).unwrap().close().unwrap();
                std::fs::create_dir_all(building).unwrap();
                copy_log(&scratch.path().join("log"), building);
            }),
        ),
        (
            "stray files",
            Box::new(|building: &Path| {
                std::fs::create_dir_all(building).unwrap();
                std::fs::write(building.join("0000000000000000-0000000000000000.seg"), b"torn").unwrap();
                std::fs::write(building.join("notes"), b"x").unwrap();
            }),
        ),
    ]
}

#[test]
fn create_retries_after_a_crash_left_its_temporary_directory() {
    for (name, leave) in interrupted_creations() {
        let parent = tempfile::tempdir().unwrap();
        let path = parent.path().join("wal");
        leave(&parent.path().join("wal.tmp"));
        let storage = Storage::create(&path, METADATA, options()).unwrap_or_else(|error| panic!("{name}: create failed: {error:?}"));
        assert!(!parent.path().join("wal.tmp").exists(), "{name}: the temporary directory is left");
        storage.save(&hard_state(1, 1, 1), &entries(1..=3, 1, 100)).unwrap();
        storage.close().unwrap();
        let reopened = Storage::open(&path, &marker(0, 0), options()).unwrap_or_else(|error| panic!("{name}: reopen failed: {error:?}"));
        assert!(reopened.read_all().unwrap() == (METADATA.to_vec(), hard_state(1, 1, 1), entries(1..=3, 1, 100)), "{name}");
    }
}

/// Before the rename, the log's directory does not exist: opening it must fail and
/// leave nothing behind that stops a later `create`.
#[test]
fn opening_a_log_whose_creation_never_finished_fails_cleanly() {
    for (name, leave) in interrupted_creations() {
        let parent = tempfile::tempdir().unwrap();
        let path = parent.path().join("wal");
        leave(&parent.path().join("wal.tmp"));
        match Storage::open(&path, &marker(0, 0), options()) {
            Ok(_) => panic!("{name}: opened a log that was never created"),
            Err(error) => println!("{name}: open failed with {error}"),
        }
        assert!(Storage::open_read_only(&path, &marker(0, 0)).is_err(), "{name}: read-only open");
        let storage =
            Storage::create(&path, METADATA, options()).unwrap_or_else(|error| panic!("{name}: create after the failed open: {error:?}"));
        assert!(storage.read_all().unwrap() == (METADATA.to_vec(), HardState::default(), vec![]), "{name}");
    }
}

/// A follower's order (etcd's: the snapshot's marker, then the hard state that commits
/// it, commit-only so not synced, then the release). A power loss after the release must
/// leave a marker to boot from: if the old markers are deleted while the hard state
/// committing the new one is not durable, `valid_snapshot_markers` offers none (etcd
/// hit this as etcd#10219 and syncs before it releases).
#[test]
fn release_waits_for_the_hard_state_that_commits_its_snapshot() {
    let directory = tempfile::tempdir().unwrap();
    let path = directory.path().join("wal");
    let storage = Storage::create(&path, METADATA, options()).unwrap();
    storage.save(&hard_state(1, 1, 2), &entries(1..=2, 1, 100)).unwrap();
    storage.cut().unwrap();
    storage.save_snapshot(&marker(2, 1)).unwrap();
    storage.save(&hard_state(1, 1, 2), &entries(3..=14, 1, 1000)).unwrap();
    // Carries the metadata and hard state past entry 14 (and syncs them).
    assert!(storage.release_to(2).unwrap() > 0);
    // A new term, synced; then the leader's snapshot at 10, which conflicts with the log.
    storage.save(&hard_state(2, 0, 2), &[]).unwrap();
    storage.save_snapshot(&marker(10, 2)).unwrap();
    storage.save(&hard_state(2, 0, 10), &[]).unwrap();
    let released = storage.release_to(10).unwrap();
    let log = storage.log();
    let (durable, published) = (log.durable_position().0, log.published_position().0);
    assert!(released > 0, "the segment with {{2, 1}} is deleted");
    let image = zeroed_from(&segment_image(&path), durable);
    drop(storage);
    let image = image_directory(&image);
    println!("durable {durable}, published {published}");
    let at = newest_valid_marker(image.path()).unwrap();
    assert!(at.is_some(), "no snapshot marker to boot from after a power loss");
    let at = at.unwrap();
    let storage = Storage::open(image.path(), &at, options()).unwrap();
    assert_eq!(storage.read_all().unwrap().0, METADATA);
}

fn snapshot(index: u64, term: u64) -> Snapshot {
    let conf_state = ConfState { voters: vec![1, 2, 3], ..ConfState::default() };
    Snapshot { data: Some(Bytes::from(format!("state machine at {index}"))), metadata: SnapshotMetadata { conf_state, index, term } }
}

/// A node's data directory: snapshot files and the log side by side.
struct Node {
    root: tempfile::TempDir,
}

impl Node {
    fn new() -> Node {
        Node { root: tempfile::tempdir().unwrap() }
    }

    fn snap(&self) -> std::path::PathBuf {
        self.root.path().join("snap")
    }

    fn wal(&self) -> std::path::PathBuf {
        self.root.path().join("wal")
    }

    /// A crash image: the snapshot files (saved durably and atomically) and the log's
    /// segments, as a killed process or a power loss leaves them.
    fn crash(&self, storage: &Storage, power_loss: bool) -> Node {
        let image = Node::new();
        std::fs::create_dir_all(image.snap()).unwrap();
        for entry in std::fs::read_dir(self.snap()).unwrap() {
            let entry = entry.unwrap();
            std::fs::copy(entry.path(), image.snap().join(entry.file_name())).unwrap();
        }
        let mut segments = segment_image(&self.wal());
        if power_loss {
            segments = zeroed_from(&segments, storage.log().durable_position().0);
        }
        write_image(&segments, &image.wal());
        image
    }

    /// etcd's boot: the newest snapshot file the log has a committed marker for, then
    /// the log opened at it.
    fn boot(&self) -> (Option<Snapshot>, Storage) {
        let markers = Storage::valid_snapshot_markers(self.wal()).unwrap();
        let snapshot = match Snapshotter::new(self.snap()).unwrap().load_newest_available(&markers) {
            Ok(snapshot) => Some(snapshot),
            Err(Error::NoSnapshot) => None,
            Err(error) => panic!("loading the snapshot: {error:?}"),
        };
        let at = snapshot.as_ref().map_or(marker(0, 0), |snapshot| marker(snapshot.metadata.index, snapshot.metadata.term));
        let storage = Storage::open(self.wal(), &at, options()).unwrap_or_else(|error| panic!("opening the log at {at:?}: {error:?}"));
        (snapshot, storage)
    }
}

/// Takes a snapshot the way etcd does: the file first, then the marker, then the release.
/// `crash_after` stops after that many of the three steps.
fn take_snapshot(storage: &Storage, snapshotter: &Snapshotter, index: u64, term: u64, crash_after: usize) {
    snapshotter.save_snapshot(&snapshot(index, term)).unwrap();
    if crash_after >= 2 {
        let conf_state = snapshot(index, term).metadata.conf_state;
        storage.save_snapshot(&SnapshotMarker { index, term, conf_state: Some(conf_state) }).unwrap();
    }
    if crash_after >= 3 {
        storage.release_to(index).unwrap();
    }
}

#[test]
fn snapshot_files_and_markers_boot_like_etcd() {
    let big = |range: std::ops::RangeInclusive<u64>| entries(range, 1, 900);
    for crash_after in 1..=3 {
        for power_loss in [false, true] {
            let case = format!("crash after {crash_after} of file, marker, release; power loss: {power_loss}");
            let node = Node::new();
            let snapshotter = Snapshotter::new(node.snap()).unwrap();
            let storage = Storage::create(node.wal(), METADATA, options()).unwrap();
            storage.save(&hard_state(1, 1, 20), &big(1..=20)).unwrap();
            take_snapshot(&storage, &snapshotter, 10, 1, 3);
            storage.save(&hard_state(1, 1, 42), &big(21..=42)).unwrap();
            take_snapshot(&storage, &snapshotter, 30, 1, crash_after);
            let image = node.crash(&storage, power_loss);
            drop(storage);

            let (loaded, storage) = image.boot();
            let expected_index = if crash_after >= 2 { 30 } else { 10 };
            assert_eq!(loaded, Some(snapshot(expected_index, 1)), "{case}");
            let (metadata, state, read) = storage.read_all().unwrap();
            assert_eq!(metadata, METADATA, "{case}");
            assert_eq!(state, hard_state(1, 1, 42), "{case}");
            assert!(read == big(expected_index + 1..=42), "{case}: entries {:?}", shape(&read));
            // The orphan file reads fine and stays for a later marker.
            let orphan = image.snap().join(snapshot_file_name(1, 30));
            assert!(orphan.exists(), "{case}: the file of the newest snapshot is gone");
            assert!(!image.snap().join(format!("{}.broken", snapshot_file_name(1, 30))).exists(), "{case}");

            // The booted node goes on: snapshot again, release, boot again.
            let snapshotter = Snapshotter::new(image.snap()).unwrap();
            storage.save(&hard_state(1, 1, 50), &big(43..=50)).unwrap();
            take_snapshot(&storage, &snapshotter, 45, 1, 3);
            assert_eq!(snapshotter.purge(2).unwrap(), 1, "{case}: purge keeps the two newest files");
            let again = image.crash(&storage, power_loss);
            drop(storage);
            let (loaded, storage) = again.boot();
            assert_eq!(loaded, Some(snapshot(45, 1)), "{case}: second boot");
            assert!(storage.read_all().unwrap().2 == big(46..=50), "{case}: second boot");
        }
    }
}

/// A snapshot file whose marker is not committed by the durable hard state is skipped
/// at boot, like one without a marker.
#[test]
fn a_marker_above_the_durable_commit_is_not_booted_from() {
    let node = Node::new();
    let snapshotter = Snapshotter::new(node.snap()).unwrap();
    let storage = Storage::create(node.wal(), METADATA, options()).unwrap();
    storage.save(&hard_state(1, 1, 5), &entries(1..=10, 1, 200)).unwrap();
    take_snapshot(&storage, &snapshotter, 4, 1, 2);
    // Saved ahead of the commit index that covers it, as a follower installing a
    // snapshot does before its hard state.
    take_snapshot(&storage, &snapshotter, 8, 1, 2);
    let image = node.crash(&storage, true);
    drop(storage);
    assert_eq!(Storage::valid_snapshot_markers(image.wal()).unwrap().iter().map(|marker| marker.index).collect::<Vec<_>>(), vec![0, 4]);
    let (loaded, storage) = image.boot();
    assert_eq!(loaded, Some(snapshot(4, 1)));
    assert!(storage.read_all().unwrap() == (METADATA.to_vec(), hard_state(1, 1, 5), entries(5..=10, 1, 200)));
}
