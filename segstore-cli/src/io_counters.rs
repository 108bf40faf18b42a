//! What a run wrote: the process's own `write_bytes` and the block device's sectors
//! written, read before and after the measured phase; and what file system it ran on.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

const TMPFS_MAGIC: i64 = 0x0102_1994;

/// `write_bytes` of `/proc/self/io`: bytes this process caused to be sent to storage,
/// counted when a page is dirtied, in units of the page-cache folio.
pub fn proc_write_bytes() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/self/io").ok()?;
    text.lines().find_map(|line| line.strip_prefix("write_bytes:")).and_then(|value| value.trim().parse().ok())
}

/// The `/sys/dev/block/MAJOR:MINOR/stat` file of the device holding `path`, if readable.
pub fn device_stat_path(path: &Path) -> Option<PathBuf> {
    let dev = std::fs::metadata(path).ok()?.dev();
    let stat = PathBuf::from(format!("/sys/dev/block/{}:{}/stat", rustix::fs::major(dev), rustix::fs::minor(dev)));
    std::fs::read_to_string(&stat).ok().map(|_| stat)
}

/// Field `index` of a block device stat file, in bytes (sectors × 512).
fn device_sectors_bytes(stat: &Path, index: usize) -> Option<u64> {
    let text = std::fs::read_to_string(stat).ok()?;
    let sectors: u64 = text.split_whitespace().nth(index)?.parse().ok()?;
    Some(sectors * 512)
}

/// Bytes the device has written so far. Counts the whole device: journal commits
/// included, and any other process's writes too.
pub fn device_written_bytes(stat: &Path) -> Option<u64> {
    device_sectors_bytes(stat, 6)
}

/// Bytes the device has read so far: whether a "cold" read really reached it.
pub fn device_read_bytes(stat: &Path) -> Option<u64> {
    device_sectors_bytes(stat, 2)
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

    /// Bytes written between `self` (before) and `after`.
    pub fn delta(&self, after: &WriteCounters) -> WriteCounters {
        let delta = |before: Option<u64>, after: Option<u64>| Some(after?.saturating_sub(before?));
        WriteCounters { process: delta(self.process, after.process), device: delta(self.device, after.device) }
    }
}

pub fn filesystem_magic(path: &Path) -> Option<i64> {
    // `f_type` is i64 here but narrower on some targets.
    #[allow(clippy::unnecessary_cast)]
    rustix::fs::statfs(path).ok().map(|stat| stat.f_type as i64)
}

pub fn is_tmpfs(path: &Path) -> bool {
    filesystem_magic(path) == Some(TMPFS_MAGIC)
}

pub fn filesystem_name(path: &Path) -> String {
    match filesystem_magic(path) {
        Some(0xEF53) => "ext4".into(),
        Some(0x5846_5342) => "xfs".into(),
        Some(0x9123_683E) => "btrfs".into(),
        Some(TMPFS_MAGIC) => "tmpfs".into(),
        Some(magic) => format!("fs magic {magic:#x}"),
        None => "unknown fs".into(),
    }
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
