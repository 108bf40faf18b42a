//! The disk's limits for a durable save: the same bytes written with `pwrite` and made
//! durable with `fdatasync`, or copied into a shared mapping and made durable with
//! `msync`, into a file zero-filled and synced beforehand, so that no write allocates
//! a block or changes the file's size (the cheapest a sync can be on this file system).

use std::fs::{File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};

use anyhow::Context;

use crate::contender::{Contender, Role};
use prost::Message;

use crate::workload::{drive_saves, entries, DataPool, SaveRun, SaveSpec};

/// Zeros go in 4 KiB writes, as segstore's preparer writes them: larger writes leave
/// large folios in the page cache, and a sync of one dirty 4 KiB page in a large folio
/// writes the whole folio back (hundreds of KiB per save through a mapping).
const ZERO_FILL_CHUNK_BYTES: usize = 4096;
const PAGE_BYTES: u64 = 4096;

/// How the raw reference makes a save durable.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RawSync {
    /// `pwrite` then `fdatasync`, from every thread at once.
    PwriteFdatasync,
    /// `memcpy` into a shared mapping then `msync(MS_SYNC)` of the pages touched; one
    /// thread only.
    MmapMsync,
}

pub struct RawLimit {
    sync: RawSync,
}

impl RawLimit {
    pub fn new(sync: RawSync) -> RawLimit {
        RawLimit { sync }
    }
}

/// The bytes of one save as a log would frame them: the encoded entries back to back.
fn save_bytes(spec: &SaveSpec) -> Vec<u8> {
    entries(1, spec.entries_per_save, &DataPool::new(spec.entry_data_bytes)).iter().flat_map(Message::encode_to_vec).collect()
}

/// Creates `path` at `size_bytes` of zeros, written and synced with its directory.
/// Flushed every 4 MiB, as the preparer does, so the zero-fill of a large reference
/// file never queues a single huge writeback.
fn prezeroed_file(path: &Path, size_bytes: u64) -> anyhow::Result<File> {
    let file =
        OpenOptions::new().read(true).write(true).create_new(true).open(path).with_context(|| format!("create {}", path.display()))?;
    let zeros = vec![0u8; ZERO_FILL_CHUNK_BYTES];
    let mut offset = 0;
    while offset < size_bytes {
        let length = (size_bytes - offset).min(zeros.len() as u64) as usize;
        file.write_all_at(&zeros[..length], offset)?;
        offset += length as u64;
        if offset % (4 << 20) == 0 {
            file.sync_data()?;
        }
    }
    file.sync_all()?;
    File::open(path.parent().context("reference file has a parent")?)?.sync_all()?;
    Ok(file)
}

/// Maps the reference file. The crate's one `unsafe`: the limit it measures is a write
/// through a shared mapping, which no safe interface offers.
#[allow(unsafe_code)]
fn map_reference_file(file: &File) -> std::io::Result<memmap2::MmapMut> {
    // SAFETY: the file was created by this process in a directory of its own and is
    // never truncated while mapped, so every mapped page stays backed; the map is only
    // accessed through the `&mut [u8]` it derefs to, one writer at a time.
    unsafe { memmap2::MmapMut::map_mut(file) }
}

impl Contender for RawLimit {
    fn name(&self) -> &str {
        match self.sync {
            RawSync::PwriteFdatasync => "raw pwrite+fdatasync",
            RawSync::MmapMsync => "raw mmap+msync",
        }
    }

    fn role(&self) -> Role {
        Role::Limit
    }

    fn run_saves(&self, dir: &Path, spec: &SaveSpec, device_stat: Option<&Path>) -> anyhow::Result<SaveRun> {
        std::fs::create_dir_all(dir)?;
        let bytes = save_bytes(spec);
        let total_saves = (spec.saves + spec.warmup_saves) as u64;
        let size_bytes = (total_saves * bytes.len() as u64).div_ceil(PAGE_BYTES) * PAGE_BYTES + PAGE_BYTES;
        let file = prezeroed_file(&dir.join("raw.ref"), size_bytes)?;
        let next_offset = AtomicU64::new(0);
        match self.sync {
            RawSync::PwriteFdatasync => drive_saves(spec, device_stat, |_, _| {
                let offset = next_offset.fetch_add(bytes.len() as u64, Ordering::Relaxed);
                file.write_all_at(&bytes, offset)?;
                file.sync_data()?;
                Ok(())
            }),
            RawSync::MmapMsync => {
                anyhow::ensure!(spec.threads == 1, "the mmap+msync reference is single-threaded");
                let map = std::sync::Mutex::new(map_reference_file(&file)?);
                drive_saves(spec, device_stat, |_, _| {
                    let offset = next_offset.fetch_add(bytes.len() as u64, Ordering::Relaxed) as usize;
                    let mut map = map.lock().expect("single writer");
                    map[offset..offset + bytes.len()].copy_from_slice(&bytes);
                    map.flush_range(offset, bytes.len())?;
                    Ok(())
                })
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn raw_saves_land_in_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let spec = SaveSpec { saves: 6, entries_per_save: 2, entry_data_bytes: 100, threads: 2, warmup_saves: 1, busy_threads: 0 };
        let run = RawLimit::new(RawSync::PwriteFdatasync).run_saves(&dir.path().join("a"), &spec, None).unwrap();
        assert_eq!(run.saves(), 6);
        let written = std::fs::read(dir.path().join("a/raw.ref")).unwrap();
        let save = save_bytes(&spec);
        assert_eq!(&written[..save.len()], &save[..]);
        assert_eq!(&written[6 * save.len()..7 * save.len()], &save[..]);

        let spec = SaveSpec { threads: 1, ..spec };
        RawLimit::new(RawSync::MmapMsync).run_saves(&dir.path().join("b"), &spec, None).unwrap();
        let written = std::fs::read(dir.path().join("b/raw.ref")).unwrap();
        assert_eq!(&written[6 * save.len()..7 * save.len()], &save[..]);
    }
}
