//! W5, non-durable appends: how fast records go into the log when nobody waits for a
//! sync (`SyncMode::None`), against a plain memcpy of the same payloads into a
//! pre-faulted heap buffer of the same size, from 1, 2 and 4 threads.
//!
//! Both copy from one payload at a 64-byte-aligned address, and the reference copies
//! to 64-byte-aligned regions: the C library's copy of a few KiB runs at half speed on
//! some CPUs when source and destination differ in alignment mod 32, which made a
//! reference copying from wherever the allocator put the payload swing between ~12 and
//! ~22 GB/s from one run to the next. For the payload sizes run here (64 B, 4 KiB) a
//! record spans a multiple of 32 bytes and its payload starts 32 bytes in, so segstore
//! gets the fast copy from this source as well.

use std::sync::{Barrier, Mutex};
use std::time::{Duration, Instant};

use segstore::record::data_span_bytes;
use segstore::{Log, Options, RecordKind, SyncMode};
use segstore_cli::comparison::turns;
use segstore_cli::stats::{paired_ratio, Spread};
use segstore_cli::workload::entry_data;

use std::path::Path;

const KIND: RecordKind = RecordKind(64);

/// Where the payload and the reference's regions start.
const ALIGNMENT_BYTES: usize = 64;

/// `buffer` from its first 64-byte-aligned address on.
fn aligned_mut(buffer: &mut [u8]) -> &mut [u8] {
    let start = buffer.as_ptr().align_offset(ALIGNMENT_BYTES);
    &mut buffer[start..]
}

#[derive(Clone, Copy, Debug)]
pub struct Throughput {
    pub records_per_second: f64,
    pub bytes_per_second: f64,
}

fn throughput(records: u64, payload_bytes: usize, elapsed: Duration) -> Throughput {
    let seconds = elapsed.as_secs_f64();
    Throughput { records_per_second: records as f64 / seconds, bytes_per_second: (records * payload_bytes as u64) as f64 / seconds }
}

/// Runs `work(thread, records)` on `threads` threads and returns the span from the first
/// start to the last end. Each thread takes its own clock: a coordinator woken late by
/// the barrier would miss part of the work.
fn timed_threads(threads: usize, records: u64, work: &(dyn Fn(usize, u64) -> anyhow::Result<()> + Sync)) -> anyhow::Result<Duration> {
    let barrier = Barrier::new(threads);
    let spans = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..threads)
            .map(|thread| {
                let share = records / threads as u64 + u64::from((thread as u64) < records % threads as u64);
                let barrier = &barrier;
                scope.spawn(move || -> anyhow::Result<(Instant, Instant)> {
                    barrier.wait();
                    let start = Instant::now();
                    work(thread, share)?;
                    Ok((start, Instant::now()))
                })
            })
            .collect();
        handles.into_iter().map(|handle| handle.join().expect("worker thread panicked")).collect::<anyhow::Result<Vec<_>>>()
    })?;
    let first = spans.iter().map(|span| span.0).min().expect("at least one thread");
    let last = spans.iter().map(|span| span.1).max().expect("at least one thread");
    Ok(last - first)
}

/// segstore in one segment large enough for the whole run (rotation is W6's subject).
fn segstore_run(dir: &Path, threads: usize, payload: &[u8], records: u64) -> anyhow::Result<Throughput> {
    let payload_bytes = payload.len();
    let log_bytes = records * data_span_bytes(payload_bytes as u64);
    let segment_size_bytes = (log_bytes + (1 << 20)).next_multiple_of(1 << 20);
    let log = Log::open(dir, Options { segment_size_bytes, sync_mode: SyncMode::None })?;
    log.wait_for_preparation();
    let elapsed = timed_threads(threads, records, &|_, share| {
        for _ in 0..share {
            std::hint::black_box(log.append(KIND, payload)?);
        }
        Ok(())
    })?;
    anyhow::ensure!(log.segment_count() == 1, "the run rotated");
    // No final sync: the dirty pages go with the files.
    drop(log);
    std::fs::remove_dir_all(dir)?;
    Ok(throughput(records, payload_bytes, elapsed))
}

/// The same payload copies into a pre-faulted heap buffer, one region per thread, each
/// starting 64-byte-aligned.
fn memcpy_run(buffer: &mut [u8], threads: usize, payload: &[u8], records: u64) -> anyhow::Result<Throughput> {
    let payload_bytes = payload.len();
    let per_thread = (records.div_ceil(threads as u64) as usize * payload_bytes).next_multiple_of(ALIGNMENT_BYTES);
    let buffer = aligned_mut(buffer);
    let regions: Vec<Mutex<&mut [u8]>> = buffer.chunks_mut(per_thread).map(Mutex::new).collect();
    let elapsed = timed_threads(threads, records, &|thread, share| {
        let mut region = regions[thread].lock().expect("one thread per region");
        for record in 0..share as usize {
            region[record * payload_bytes..(record + 1) * payload_bytes].copy_from_slice(payload);
        }
        std::hint::black_box(&mut **region);
        Ok(())
    })?;
    Ok(throughput(records, payload_bytes, elapsed))
}

pub struct NondurableRow {
    pub payload_bytes: usize,
    pub threads: usize,
    pub segstore: Vec<Throughput>,
    pub memcpy: Vec<Throughput>,
}

impl NondurableRow {
    pub fn segstore_spread(&self, value: fn(&Throughput) -> f64) -> Option<Spread> {
        Spread::of(&self.segstore.iter().map(value).collect::<Vec<_>>())
    }

    pub fn memcpy_spread(&self, value: fn(&Throughput) -> f64) -> Option<Spread> {
        Spread::of(&self.memcpy.iter().map(value).collect::<Vec<_>>())
    }

    /// segstore's bandwidth ÷ memcpy's, paired by round.
    pub fn ratio_to_memcpy(&self) -> f64 {
        let bandwidth = |runs: &[Throughput]| runs.iter().map(|run| run.bytes_per_second).collect::<Vec<_>>();
        paired_ratio(&bandwidth(&self.segstore), &bandwidth(&self.memcpy))
    }
}

/// Every payload size × thread count, `rounds` rounds of segstore and memcpy taking turns.
pub fn run_nondurable(
    payload_total_bytes: u64,
    rounds: usize,
    scratch: &Path,
    tick: &mut dyn FnMut(&str),
) -> anyhow::Result<Vec<NondurableRow>> {
    let mut rows = Vec::new();
    for payload_bytes in [64usize, 4096] {
        let records = payload_total_bytes / payload_bytes as u64;
        let mut buffer = vec![1u8; (records as usize + 4) * payload_bytes + 4 * ALIGNMENT_BYTES];
        let mut payload_buffer = vec![0u8; payload_bytes + ALIGNMENT_BYTES];
        let payload = aligned_mut(&mut payload_buffer);
        payload[..payload_bytes].copy_from_slice(&entry_data(payload_bytes, 1));
        let payload = &payload[..payload_bytes];
        for threads in [1usize, 2, 4] {
            let mut row = NondurableRow { payload_bytes, threads, segstore: Vec::new(), memcpy: Vec::new() };
            for (round, variant) in turns(rounds, 2) {
                tick(&format!("{payload_bytes} B × {threads} threads, round {}/{rounds}", round + 1));
                if variant == 0 {
                    let dir = scratch.join(format!("w5-{payload_bytes}-{threads}-{round}"));
                    row.segstore.push(segstore_run(&dir, threads, payload, records)?);
                } else {
                    row.memcpy.push(memcpy_run(&mut buffer, threads, payload, records)?);
                }
            }
            rows.push(row);
        }
    }
    Ok(rows)
}
