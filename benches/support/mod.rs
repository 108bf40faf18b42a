//! Helpers shared by the benchmarks: where logs live, waiting for the background
//! preparer, and the I/O counters used to measure bytes written.

#![allow(dead_code)]

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

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

pub fn filesystem_name(path: &Path) -> String {
    match filesystem_magic(path) {
        Some(0xEF53) => "ext2/3/4".into(),
        Some(0x5846_5342) => "xfs".into(),
        Some(0x9123_683E) => "btrfs".into(),
        Some(TMPFS_MAGIC) => "tmpfs".into(),
        Some(magic) => format!("fs magic {magic:#x}"),
        None => "unknown fs".into(),
    }
}

fn segment_files(dir: &Path) -> (usize, usize) {
    let (mut segments, mut temporary) = (0, 0);
    for entry in std::fs::read_dir(dir).expect("list log directory").flatten() {
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if name.ends_with(".seg") {
            segments += 1;
        } else if name.ends_with(".tmp") {
            temporary += 1;
        }
    }
    (segments, temporary)
}

/// Waits until the preparer has installed the segment after the current one, so that
/// its zero-fill and fsync do not overlap (and pollute) a measurement.
pub fn wait_for_preparer(log: &Log) {
    let want = log.segment_count() + 1;
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let (segments, temporary) = segment_files(log.directory());
        if segments >= want && temporary == 0 {
            return;
        }
        assert!(Instant::now() < deadline, "the next segment was not prepared within 120 s");
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// Opens a fresh log in `dir` and waits for the preparer to be idle.
pub fn open_quiet(dir: &Path, segment_size_bytes: u64, sync_mode: SyncMode) -> Log {
    let log = Log::open(dir, Options { segment_size_bytes, sync_mode }).expect("open log");
    wait_for_preparer(&log);
    log
}

/// `write_bytes` of `/proc/self/io`: bytes this process caused to be sent to storage
/// (counted when a page is dirtied, in units of the page-cache folio).
pub fn proc_write_bytes() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/self/io").ok()?;
    text.lines().find_map(|line| line.strip_prefix("write_bytes:")).and_then(|value| value.trim().parse().ok())
}

/// The `/sys/.../stat` file of the block device holding `path`, if readable.
pub fn device_stat_path(path: &Path) -> Option<PathBuf> {
    let dev = std::fs::metadata(path).ok()?.dev();
    let stat = PathBuf::from(format!("/sys/dev/block/{}:{}/stat", rustix::fs::major(dev), rustix::fs::minor(dev)));
    std::fs::read_to_string(&stat).ok().map(|_| stat)
}

/// Bytes the device has written so far (sectors written × 512). Counts the whole
/// device, journal commits included, and every other process's writes too.
pub fn device_written_bytes(stat: &Path) -> Option<u64> {
    let text = std::fs::read_to_string(stat).ok()?;
    let sectors: u64 = text.split_whitespace().nth(6)?.parse().ok()?;
    Some(sectors * 512)
}

/// Both write counters at one moment.
#[derive(Clone, Copy, Debug, Default)]
pub struct WriteCounters {
    pub process: Option<u64>,
    pub device: Option<u64>,
}

impl WriteCounters {
    pub fn read(device_stat: Option<&Path>) -> Self {
        WriteCounters { process: proc_write_bytes(), device: device_stat.and_then(device_written_bytes) }
    }

    /// Bytes per operation between `self` (before) and `after`.
    pub fn per_op(&self, after: &WriteCounters, ops: u64) -> (Option<f64>, Option<f64>) {
        let per = |before: Option<u64>, after: Option<u64>| Some(after?.saturating_sub(before?) as f64 / ops as f64);
        (per(self.process, after.process), per(self.device, after.device))
    }
}

/// A 256 B (or any size) payload that is not all zeros.
pub fn payload(bytes: usize) -> Vec<u8> {
    (0..bytes).map(|i| (i as u8).wrapping_mul(31).wrapping_add(7)).collect()
}
