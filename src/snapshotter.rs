//! Snapshot files, as etcd's `Snapshotter` keeps them but written atomically.
//!
//! A snapshot is the file `{term:016x}-{index:016x}.snap` holding etcd's
//! `snappb.Snapshot { crc = CRC-32C(data), data = raftpb.Snapshot }`, byte for byte what
//! etcd writes. Unlike etcd, which writes the file in place (a crash can leave an empty
//! or partial `.snap`, etcd#3498) and never syncs the directory, a save here writes a
//! temporary file, syncs it, renames it into place and syncs the directory. Unreadable
//! files are renamed `.broken` and skipped, as etcd does.

use std::fs::OpenOptions;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use prost::Message;

use crate::error::{Error, Result};
use crate::fs;
use crate::raftpb::Snapshot;
use crate::storage::SnapshotMarker;

const SNAPSHOT_SUFFIX: &str = ".snap";
const TEMPORARY_SUFFIX: &str = ".snap.tmp";
const BROKEN_SUFFIX: &str = ".broken";

/// etcd's `snappb.Snapshot`: the file format.
#[derive(Clone, PartialEq, Eq, prost::Message)]
struct SnapshotFile {
    #[prost(uint32, required, tag = "1")]
    crc: u32,
    #[prost(bytes = "vec", optional, tag = "2")]
    data: Option<Vec<u8>>,
}

/// The snapshot files of one directory.
#[derive(Clone, Debug)]
pub struct Snapshotter {
    directory: PathBuf,
}

/// `{term:016x}-{index:016x}.snap`
pub fn snapshot_file_name(term: u64, index: u64) -> String {
    format!("{term:016x}-{index:016x}{SNAPSHOT_SUFFIX}")
}

/// The (term, index) a snapshot file name carries.
fn parse_snapshot_file_name(name: &str) -> Option<(u64, u64)> {
    crate::segment::parse_hex_pair_name(name, SNAPSHOT_SUFFIX)
}

impl Snapshotter {
    /// The snapshots in `directory`, which is created if missing. Temporary files left
    /// by an interrupted save are removed.
    pub fn new(directory: impl AsRef<Path>) -> Result<Self> {
        let directory = directory.as_ref().to_path_buf();
        std::fs::create_dir_all(&directory).map_err(|source| Error::io("create directory", &directory, source))?;
        let snapshotter = Snapshotter { directory };
        for name in snapshotter.file_names()? {
            if name.ends_with(TEMPORARY_SUFFIX) {
                let path = snapshotter.directory.join(&name);
                std::fs::remove_file(&path).map_err(|source| Error::io("remove temporary snapshot", &path, source))?;
            }
        }
        Ok(snapshotter)
    }

    pub fn directory(&self) -> &Path {
        &self.directory
    }

    fn file_names(&self) -> Result<Vec<String>> {
        let entries = std::fs::read_dir(&self.directory).map_err(|source| Error::io("list directory", &self.directory, source))?;
        let mut names = Vec::new();
        for entry in entries {
            let entry = entry.map_err(|source| Error::io("list directory", &self.directory, source))?;
            if let Some(name) = entry.file_name().to_str() {
                names.push(name.to_string());
            }
        }
        Ok(names)
    }

    /// Snapshot file names, newest (highest term, then index) first.
    fn snapshot_names(&self) -> Result<Vec<(u64, u64, String)>> {
        let mut snapshots: Vec<(u64, u64, String)> = self
            .file_names()?
            .into_iter()
            .filter_map(|name| parse_snapshot_file_name(&name).map(|(term, index)| (term, index, name)))
            .collect();
        snapshots.sort_by(|a, b| b.cmp(a));
        Ok(snapshots)
    }

    /// Saves `snapshot` atomically and durably. A snapshot at index 0 is no snapshot:
    /// nothing is written.
    pub fn save_snapshot(&self, snapshot: &Snapshot) -> Result<()> {
        if snapshot.is_empty() {
            return Ok(());
        }
        let data = snapshot.encode_to_vec();
        let file = SnapshotFile { crc: crc32c::crc32c(&data), data: Some(data) };
        let name = snapshot_file_name(snapshot.metadata.term, snapshot.metadata.index);
        let path = self.directory.join(&name);
        let temporary = self.directory.join(format!("{name}.tmp"));
        let written = (|| {
            let mut handle = OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .mode(0o600)
                .open(&temporary)
                .map_err(|source| Error::io("create snapshot", &temporary, source))?;
            handle.write_all(&file.encode_to_vec()).map_err(|source| Error::io("write snapshot", &temporary, source))?;
            fs::fsync(&handle, &temporary)?;
            fs::rename(&temporary, &path)?;
            fs::sync_directory(&self.directory)
        })();
        if written.is_err() {
            let _ = std::fs::remove_file(&temporary);
        }
        written
    }

    /// Reads and verifies one snapshot file.
    pub fn read(path: &Path) -> Result<Snapshot> {
        let bytes = std::fs::read(path).map_err(|source| Error::io("read snapshot", path, source))?;
        let corrupt = |reason: String| Error::corrupt(path, 0, reason);
        if bytes.is_empty() {
            return Err(corrupt("empty snapshot file".into()));
        }
        let file = SnapshotFile::decode(&bytes[..]).map_err(|error| corrupt(error.to_string()))?;
        let data = file.data.unwrap_or_default();
        if data.is_empty() || file.crc == 0 {
            return Err(corrupt("empty snapshot".into()));
        }
        let crc = crc32c::crc32c(&data);
        if crc != file.crc {
            return Err(corrupt(format!("snapshot checksum mismatch: stored {:#010x}, computed {crc:#010x}", file.crc)));
        }
        Snapshot::decode(&data[..]).map_err(|error| corrupt(error.to_string()))
    }

    /// The newest snapshot that reads back whole. Files that do not are renamed
    /// `<name>.broken` (with a log line) and skipped.
    pub fn load(&self) -> Result<Snapshot> {
        self.load_matching(|_, _| true)
    }

    /// The newest snapshot that reads back whole and that the log has a marker for
    /// (`markers`, from [`crate::Storage::valid_snapshot_markers`]). Files that read back
    /// but have no marker are left alone; unreadable ones are renamed `.broken`.
    pub fn load_newest_available(&self, markers: &[SnapshotMarker]) -> Result<Snapshot> {
        self.load_matching(|term, index| markers.iter().any(|marker| marker.term == term && marker.index == index))
    }

    fn load_matching(&self, wanted: impl Fn(u64, u64) -> bool) -> Result<Snapshot> {
        for (term, index, name) in self.snapshot_names()? {
            if !wanted(term, index) {
                continue;
            }
            let path = self.directory.join(&name);
            match Self::read(&path) {
                Ok(snapshot) => return Ok(snapshot),
                Err(error) => {
                    log::warn!("skipping unreadable snapshot {}: {error}", path.display());
                    let broken = self.directory.join(format!("{name}{BROKEN_SUFFIX}"));
                    fs::rename(&path, &broken)?;
                }
            }
        }
        Err(Error::NoSnapshot)
    }

    /// Deletes all but the newest `keep` snapshot files; returns how many went.
    pub fn purge(&self, keep: usize) -> Result<usize> {
        let names = self.snapshot_names()?;
        let mut removed = 0;
        for (_, _, name) in names.iter().skip(keep) {
            let path = self.directory.join(name);
            std::fs::remove_file(&path).map_err(|source| Error::io("remove snapshot", &path, source))?;
            removed += 1;
        }
        if removed > 0 {
            fs::sync_directory(&self.directory)?;
        }
        Ok(removed)
    }
}
