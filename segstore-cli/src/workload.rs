//! The durable save workloads: what a save carries, how many threads issue them, and
//! the driver that times every save while the write counters watch.

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Barrier;
use std::time::Instant;

use bytes::Bytes;
use segstore::raftpb::{Entry, HardState};

use crate::io_counters::WriteCounters;
use crate::stats::percentile;

/// The one term every benchmark entry carries: a save syncs because it has entries.
pub const TERM: u64 = 1;

/// A durable save workload: `saves` Raft Readies in all, each of `entries_per_save`
/// entries of `entry_data_bytes`, issued by `threads` threads, after `warmup_saves`
/// unmeasured saves from one thread, while `busy_threads` more threads of the process
/// keep a CPU busy (as a Raft server's other threads do between its saves).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SaveSpec {
    pub saves: usize,
    pub entries_per_save: usize,
    pub entry_data_bytes: usize,
    pub threads: usize,
    pub warmup_saves: usize,
    pub busy_threads: usize,
}

impl SaveSpec {
    /// A workload with no busy threads beside the writers.
    pub fn new(saves: usize, entries_per_save: usize, entry_data_bytes: usize, threads: usize, warmup_saves: usize) -> SaveSpec {
        SaveSpec { saves, entries_per_save, entry_data_bytes, threads, warmup_saves, busy_threads: 0 }
    }

    /// How many measured saves thread `thread` issues.
    pub fn saves_of_thread(&self, thread: usize) -> usize {
        self.saves / self.threads + usize::from(thread < self.saves % self.threads)
    }

    /// Entry data bytes in one save.
    pub fn data_bytes_per_save(&self) -> usize {
        self.entries_per_save * self.entry_data_bytes
    }
}

/// What one run of a [`SaveSpec`] measured.
#[derive(Clone, Debug, Default)]
pub struct SaveRun {
    /// Every measured save's latency, sorted.
    pub latencies_ns: Vec<u64>,
    /// Wall time of the measured phase, first save issued to last acknowledged.
    pub elapsed_ns: u64,
    /// Bytes written during the measured phase.
    pub written: WriteCounters,
    /// Entry data bytes in one save.
    pub data_bytes_per_save: usize,
}

impl SaveRun {
    pub fn saves(&self) -> usize {
        self.latencies_ns.len()
    }

    pub fn latency_ns(&self, quantile: f64) -> f64 {
        if self.latencies_ns.is_empty() {
            return f64::NAN;
        }
        percentile(&self.latencies_ns, quantile) as f64
    }

    pub fn saves_per_second(&self) -> f64 {
        self.saves() as f64 * 1e9 / self.elapsed_ns as f64
    }

    /// Entry data bytes acknowledged per second.
    pub fn data_bytes_per_second(&self) -> f64 {
        self.saves_per_second() * self.data_bytes_per_save as f64
    }

    /// Device bytes written per save (NaN when the device counters are unreadable).
    pub fn device_bytes_per_save(&self) -> f64 {
        self.written.device.map_or(f64::NAN, |bytes| bytes as f64 / self.saves() as f64)
    }

    pub fn process_bytes_per_save(&self) -> f64 {
        self.written.process.map_or(f64::NAN, |bytes| bytes as f64 / self.saves() as f64)
    }
}

/// Runs `spec` through `save(thread, sequence)`, which must return only once that save
/// is durable. `sequence` counts each thread's saves from 0, the warm-up's included
/// (they are thread 0's first ones). The counters are read just outside the measured
/// phase, so setup and warm-up writes are not charged to it.
pub fn drive_saves<F>(spec: &SaveSpec, device_stat: Option<&Path>, save: F) -> anyhow::Result<SaveRun>
where
    F: Fn(usize, u64) -> anyhow::Result<()> + Sync,
{
    anyhow::ensure!(spec.threads >= 1 && spec.saves >= spec.threads, "need at least one save per thread: {spec:?}");
    for sequence in 0..spec.warmup_saves {
        save(0, sequence as u64)?;
    }
    let start_line = Barrier::new(spec.threads + spec.busy_threads + 1);
    let done = AtomicBool::new(false);
    let (before, started, per_thread) = std::thread::scope(|scope| {
        for _ in 0..spec.busy_threads {
            let (start_line, done) = (&start_line, &done);
            scope.spawn(move || {
                start_line.wait();
                let mut state = 1u64;
                while !done.load(Ordering::Relaxed) {
                    // Pure computation: no system calls, no shared memory written.
                    for _ in 0..1000 {
                        state = std::hint::black_box(state.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1));
                    }
                }
            });
        }
        let workers: Vec<_> = (0..spec.threads)
            .map(|thread| {
                let (save, start_line) = (&save, &start_line);
                let first = if thread == 0 { spec.warmup_saves as u64 } else { 0 };
                let count = spec.saves_of_thread(thread) as u64;
                scope.spawn(move || -> anyhow::Result<Vec<u64>> {
                    let mut latencies = Vec::with_capacity(count as usize);
                    start_line.wait();
                    for sequence in first..first + count {
                        let begun = Instant::now();
                        save(thread, sequence)?;
                        latencies.push(begun.elapsed().as_nanos() as u64);
                    }
                    Ok(latencies)
                })
            })
            .collect();
        let before = WriteCounters::read(device_stat);
        let started = Instant::now();
        start_line.wait();
        // Set on the way out, a panicking save thread included: the scope waits for the busy threads.
        let _stop_busy = SetOnDrop(&done);
        let per_thread: Vec<_> = workers.into_iter().map(|worker| worker.join().expect("save thread panicked")).collect();
        (before, started, per_thread)
    });
    let elapsed_ns = started.elapsed().as_nanos() as u64;
    let written = before.delta(&WriteCounters::read(device_stat));
    let mut latencies_ns = Vec::with_capacity(spec.saves);
    for latencies in per_thread {
        latencies_ns.extend(latencies?);
    }
    latencies_ns.sort_unstable();
    Ok(SaveRun { latencies_ns, elapsed_ns, written, data_bytes_per_save: spec.data_bytes_per_save() })
}

struct SetOnDrop<'a>(&'a AtomicBool);

impl Drop for SetOnDrop<'_> {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

/// Entry data that is not all zeros and differs between entries, so that no layer
/// can compress or deduplicate it away.
pub fn entry_data(bytes: usize, index: u64) -> Bytes {
    let mut state = index.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..bytes)
        .map(|_| {
            // xorshift64: cheap, and enough to defeat compression.
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state as u8
        })
        .collect::<Vec<u8>>()
        .into()
}

/// Distinct entry data blobs, built once per run so that building a save allocates no
/// payload. Consecutive entries get different blobs: an engine that compresses its
/// batches (raft-engine does, with LZ4 over a 64 KiB window) must not get repeated
/// data to squeeze.
pub struct DataPool {
    blobs: Vec<Bytes>,
}

impl DataPool {
    /// How many blobs: more than the entries of any one batch, fewer than would make
    /// building them slow.
    const BLOBS: u64 = 1024;

    pub fn new(entry_data_bytes: usize) -> DataPool {
        DataPool { blobs: (0..Self::BLOBS).map(|seed| entry_data(entry_data_bytes, seed)).collect() }
    }

    /// The data of the entry at `index`.
    pub fn get(&self, index: u64) -> &Bytes {
        &self.blobs[(index % Self::BLOBS) as usize]
    }
}

/// The Raft entries of one save, starting at `first_index`.
pub fn entries(first_index: u64, count: usize, data: &DataPool) -> Vec<Entry> {
    (first_index..first_index + count as u64)
        .map(|index| Entry { entry_type: 0, term: TERM, index, data: Some(data.get(index).clone()) })
        .collect()
}

/// The hard state saved with entries ending at `last_index`: it commits the entries
/// before them, as a leader's Ready would.
pub fn hard_state(last_index: u64) -> HardState {
    HardState { term: TERM, vote: 1, commit: last_index.saturating_sub(1) }
}

/// The saves that write entries `1..=entries`, `entries_per_save` at a time (the last
/// one may be short): `(first index, entry count)` of each.
pub fn batches(entries: u64, entries_per_save: usize) -> impl Iterator<Item = (u64, usize)> {
    (1..=entries).step_by(entries_per_save).map(move |first| (first, entries_per_save.min((entries - first + 1) as usize)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[test]
    fn saves_are_spread_over_threads_and_sequences_continue_after_the_warmup() {
        let spec = SaveSpec { saves: 10, entries_per_save: 1, entry_data_bytes: 8, threads: 3, warmup_saves: 2, busy_threads: 0 };
        assert_eq!((0..3).map(|thread| spec.saves_of_thread(thread)).collect::<Vec<_>>(), vec![4, 3, 3]);
        let calls = std::sync::Mutex::new(Vec::new());
        let run = drive_saves(&spec, None, |thread, sequence| {
            calls.lock().unwrap().push((thread, sequence));
            Ok(())
        })
        .unwrap();
        assert_eq!(run.saves(), 10);
        let mut calls = calls.into_inner().unwrap();
        calls.sort();
        let thread0: Vec<u64> = calls.iter().filter(|call| call.0 == 0).map(|call| call.1).collect();
        assert_eq!(thread0, vec![0, 1, 2, 3, 4, 5]);
        assert_eq!(calls.iter().filter(|call| call.0 == 2).count(), 3);
        assert!(run.latencies_ns.windows(2).all(|pair| pair[0] <= pair[1]));
    }

    #[test]
    fn a_failed_save_fails_the_run() {
        let spec = SaveSpec { saves: 4, entries_per_save: 1, entry_data_bytes: 8, threads: 2, warmup_saves: 0, busy_threads: 0 };
        let count = AtomicUsize::new(0);
        let result = drive_saves(&spec, None, |_, _| {
            if count.fetch_add(1, Ordering::Relaxed) == 2 {
                anyhow::bail!("disk on fire");
            }
            Ok(())
        });
        assert!(result.unwrap_err().to_string().contains("disk on fire"));
    }

    #[test]
    fn busy_threads_stop_with_the_run_whether_it_succeeds_fails_or_panics() {
        // Each run goes on a thread of its own so that busy threads left spinning fail the
        // test instead of hanging it.
        let run_within = |busy_threads: usize, outcome: fn(u64) -> anyhow::Result<()>| {
            let (sender, receiver) = std::sync::mpsc::channel();
            std::thread::spawn(move || {
                let spec = SaveSpec { saves: 6, entries_per_save: 1, entry_data_bytes: 8, threads: 2, warmup_saves: 0, busy_threads };
                let result = std::panic::catch_unwind(|| drive_saves(&spec, None, |_, sequence| outcome(sequence)).map(|run| run.saves()));
                sender.send(result.map_err(|_| "panicked")).unwrap();
            });
            receiver.recv_timeout(std::time::Duration::from_secs(30)).expect("the run ended")
        };
        assert_eq!(run_within(2, |_| Ok(())).unwrap().unwrap(), 6);
        let failed = run_within(2, |sequence| if sequence == 1 { anyhow::bail!("disk on fire") } else { Ok(()) });
        assert!(failed.unwrap().unwrap_err().to_string().contains("disk on fire"));
        let panicked = run_within(2, |sequence| if sequence == 1 { panic!("encoder bug") } else { Ok(()) });
        assert_eq!(panicked.unwrap_err(), "panicked");
    }

    #[test]
    fn batches_cover_every_entry_once() {
        assert_eq!(batches(10, 4).collect::<Vec<_>>(), vec![(1, 4), (5, 4), (9, 2)]);
        assert_eq!(batches(8, 4).collect::<Vec<_>>(), vec![(1, 4), (5, 4)]);
    }

    #[test]
    fn entry_data_differs_between_entries() {
        assert_ne!(entry_data(64, 1), entry_data(64, 2));
        assert_eq!(entry_data(64, 1), entry_data(64, 1));
        assert_eq!(entry_data(4096, 9).len(), 4096);
        let pool = DataPool::new(16);
        let batch = entries(7, 64, &pool);
        assert_eq!(batch.iter().map(|entry| entry.index).collect::<Vec<_>>(), (7..71).collect::<Vec<_>>());
        let distinct: std::collections::HashSet<_> = batch.iter().map(|entry| entry.data.clone()).collect();
        assert_eq!(distinct.len(), 64, "no repeated data within a batch");
    }
}
