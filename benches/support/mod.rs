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

/// `sectors read` of a `/sys/.../stat` file, in bytes: whether a "cold" read really
/// reached the device (the whole device, other processes included).
pub fn device_read_bytes(stat: &Path) -> Option<u64> {
    let text = std::fs::read_to_string(stat).ok()?;
    let sectors: u64 = text.split_whitespace().nth(2)?.parse().ok()?;
    Some(sectors * 512)
}

/// Creates `path` at `size_bytes`, zero-filled with 4 KiB writes (as the preparer does)
/// and synced with its directory: a reference file whose later writes allocate nothing.
pub fn prezeroed_file(path: &Path, size_bytes: u64) -> std::fs::File {
    use std::os::unix::fs::FileExt;
    let file = std::fs::OpenOptions::new().read(true).write(true).create_new(true).open(path).expect("create reference file");
    let zeros = [0u8; 4096];
    for offset in (0..size_bytes).step_by(zeros.len()) {
        file.write_all_at(&zeros, offset).expect("zero-fill");
    }
    file.sync_all().expect("fsync reference file");
    let parent = path.parent().filter(|parent| !parent.as_os_str().is_empty()).unwrap_or(Path::new("."));
    std::fs::File::open(parent).and_then(|dir| dir.sync_all()).expect("fsync directory");
    file
}

/// `sync; echo 3 > /proc/sys/vm/drop_caches`. Needs root; the error says why not.
pub fn drop_page_cache() -> Result<(), String> {
    rustix::fs::sync();
    std::fs::write("/proc/sys/vm/drop_caches", "3\n").map_err(|error| format!("cannot write /proc/sys/vm/drop_caches: {error}"))
}

/// Peak resident set of this process (`VmHWM`), in bytes.
pub fn peak_rss_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let kib: u64 = status.lines().find_map(|line| line.strip_prefix("VmHWM:"))?.trim().strip_suffix("kB")?.trim().parse().ok()?;
    Some(kib * 1024)
}

/// Runs `variants` variants for `rounds` rounds, taking turns and rotating which one
/// goes first each round, so that drift in the machine's state hits them all alike.
/// Returns each variant's results in round order.
pub fn interleaved<R>(rounds: usize, variants: usize, mut measure: impl FnMut(usize) -> R) -> Vec<Vec<R>> {
    let mut results: Vec<Vec<R>> = (0..variants).map(|_| Vec::with_capacity(rounds)).collect();
    for round in 0..rounds {
        for turn in 0..variants {
            let variant = (round + turn) % variants;
            results[variant].push(measure(variant));
        }
    }
    results
}

// Statistics and formatting shared by the figure harnesses.

/// Nearest-rank percentile of sorted values.
pub fn percentile(sorted: &[u64], quantile: f64) -> u64 {
    assert!(!sorted.is_empty());
    let rank = (quantile * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// Median of the finite values (NaN if there are none).
pub fn median(values: &[f64]) -> f64 {
    let mut sorted: Vec<f64> = values.iter().copied().filter(|value| value.is_finite()).collect();
    if sorted.is_empty() {
        return f64::NAN;
    }
    sorted.sort_by(f64::total_cmp);
    let middle = sorted.len() / 2;
    if sorted.len() % 2 == 1 {
        sorted[middle]
    } else {
        (sorted[middle - 1] + sorted[middle]) / 2.0
    }
}

/// "median [min–max]" of per-round values, formatted by `format`.
pub fn summary(values: &[f64], format: impl Fn(f64) -> String) -> String {
    let finite: Vec<f64> = values.iter().copied().filter(|value| value.is_finite()).collect();
    if finite.is_empty() {
        return "n/a".into();
    }
    let min = finite.iter().copied().fold(f64::INFINITY, f64::min);
    let max = finite.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    format!("{} [{}–{}]", format(median(&finite)), format(min), format(max))
}

/// Per-round ratios `a[i] / b[i]` of values measured in the same round.
pub fn paired_ratios(a: &[f64], b: &[f64]) -> Vec<f64> {
    a.iter().zip(b).map(|(a, b)| a / b).collect()
}

pub fn micros(nanos: f64) -> String {
    format!("{:.1} µs", nanos / 1000.0)
}

pub fn ratio(value: f64) -> String {
    format!("{value:.2}×")
}

pub fn verdict(met: bool) -> &'static str {
    if met {
        "met"
    } else {
        "MISSED"
    }
}

/// Minor page faults of this process so far (`minflt` of `/proc/self/stat`).
pub fn minor_faults() -> Option<u64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // Fields after the command name, which may hold spaces: state is the first, minflt the eighth.
    stat.rsplit_once(')')?.1.split_whitespace().nth(7)?.parse().ok()
}

/// A run's scratch directory and the device counters next to every durable figure.
pub struct Bench {
    root: tempfile::TempDir,
    device_stat: Option<PathBuf>,
    next_id: usize,
}

impl Bench {
    pub fn new(root: tempfile::TempDir, device_stat: Option<PathBuf>) -> Self {
        Bench { root, device_stat, next_id: 0 }
    }

    /// A path in the scratch directory no earlier call returned.
    pub fn fresh_path(&mut self, name: &str) -> PathBuf {
        self.next_id += 1;
        self.root.path().join(format!("{name}-{}", self.next_id))
    }

    pub fn counters(&self) -> WriteCounters {
        WriteCounters::read(self.device_stat.as_deref())
    }

    /// The scratch directory itself.
    pub fn root(&self) -> &Path {
        self.root.path()
    }

    /// The block device's stat file, when it could be found.
    pub fn device_stat(&self) -> Option<&Path> {
        self.device_stat.as_deref()
    }
}
