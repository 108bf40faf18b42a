//! Helpers of the criterion benches: where logs live, and waiting for the background
//! preparer so that its zero-fill does not overlap a measurement.

use std::path::{Path, PathBuf};

use segstore::{Log, Options, SyncMode};

const TMPFS_MAGIC: i64 = 0x0102_1994;

/// The parent of every temporary benchmark directory: `SEGSTORE_BENCH_DIR` if set, else
/// `target/` (or `.`) under the current directory. Never tmpfs by default: sync costs
/// nothing there, which would make every durable figure meaningless.
pub fn bench_root() -> PathBuf {
    let root = match std::env::var_os("SEGSTORE_BENCH_DIR") {
        Some(dir) => PathBuf::from(dir),
        None if Path::new("target").is_dir() => PathBuf::from("target"),
        None => PathBuf::from("."),
    };
    std::fs::create_dir_all(&root).expect("create benchmark directory");
    if filesystem_magic(&root) == Some(TMPFS_MAGIC) {
        eprintln!("warning: {} is on tmpfs; durable figures will be meaningless", root.display());
    }
    root
}

pub fn temp_dir() -> tempfile::TempDir {
    tempfile::Builder::new().prefix("segstore-bench-").tempdir_in(bench_root()).expect("create temporary directory")
}

pub fn filesystem_magic(path: &Path) -> Option<i64> {
    // `f_type` is i64 here but narrower on some targets.
    #[allow(clippy::unnecessary_cast)]
    rustix::fs::statfs(path).ok().map(|stat| stat.f_type as i64)
}

/// Opens a fresh log in `dir` and waits for the preparer to be idle.
pub fn open_quiet(dir: &Path, segment_size_bytes: u64, sync_mode: SyncMode) -> Log {
    let log = Log::open(dir, Options { segment_size_bytes, sync_mode }).expect("open log");
    log.wait_for_preparation();
    log
}

/// A 256 B (or any size) payload that is not all zeros.
pub fn payload(bytes: usize) -> Vec<u8> {
    (0..bytes).map(|i| (i as u8).wrapping_mul(31).wrapping_add(7)).collect()
}
