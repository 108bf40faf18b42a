//! Criterion benchmarks of the append paths and of the record codec.
//!
//! `cargo bench --bench append` (add `-- --quick` for a short run). Logs live in a
//! temporary directory under `target/` (or `SEGSTORE_BENCH_DIR`), never on tmpfs.
//! `SEGSTORE_BENCH_SEGMENT_MIB` sets the segment size of the non-durable benchmarks.

mod support;

use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use criterion::measurement::WallTime;
use criterion::{black_box, criterion_group, criterion_main, BenchmarkGroup, BenchmarkId, Criterion, Throughput};
use segstore::record::{self, data_span_bytes, Decoded, Expected, RecordFlags, RecordHeader, RECORD_HEADER_SIZE};
use segstore::recovery;
use segstore::segment::SEGMENT_HEADER_SIZE;
use segstore::{Log, RecordKind, SyncMode};

const KIND: RecordKind = RecordKind(16);

/// A log that is replaced by a fresh one, outside the timed region, before a batch of
/// appends would fill its segment: rotation (and the background zero-fill of the next
/// segment it triggers) is not what these benchmarks measure.
struct LogSlot {
    segment_size_bytes: u64,
    sync_mode: SyncMode,
    used_bytes: u64,
    log: Option<Arc<Log>>,
    dir: Option<tempfile::TempDir>,
}

impl LogSlot {
    fn new(segment_size_bytes: u64, sync_mode: SyncMode) -> Self {
        LogSlot { segment_size_bytes, sync_mode, used_bytes: 0, log: None, dir: None }
    }

    /// Bytes of records one segment holds (the seal's padding header needs room too).
    fn capacity_bytes(&self) -> u64 {
        self.segment_size_bytes - SEGMENT_HEADER_SIZE - RECORD_HEADER_SIZE as u64
    }

    /// A log with room for `bytes` more record bytes in its current segment.
    fn with_room(&mut self, bytes: u64) -> &Arc<Log> {
        assert!(bytes <= self.capacity_bytes());
        if self.log.is_none() || self.used_bytes + bytes > self.capacity_bytes() {
            // Drop the old log before its directory, then start clean.
            self.log = None;
            self.dir = None;
            let dir = support::temp_dir();
            let log = support::open_quiet(dir.path(), self.segment_size_bytes, self.sync_mode);
            if self.sync_mode == SyncMode::None {
                // The preparer faults the new segment in; appends timed meanwhile would
                // measure its page faults.
                log.wait_for_preparation();
            }
            self.log = Some(Arc::new(log));
            self.dir = Some(dir);
            self.used_bytes = 0;
        }
        self.used_bytes += bytes;
        self.log.as_ref().expect("opened above")
    }

    /// Runs `iterations` records of `span_bytes` each as `run(log, records)` calls that
    /// each fit in the current segment, and sums the durations they report.
    fn time_in_segments(&mut self, iterations: u64, span_bytes: u64, mut run: impl FnMut(&Arc<Log>, u64) -> Duration) -> Duration {
        let per_segment = self.capacity_bytes() / span_bytes;
        let mut total = Duration::ZERO;
        let mut remaining = iterations;
        while remaining > 0 {
            let chunk = remaining.min(per_segment);
            total += run(self.with_room(chunk * span_bytes), chunk);
            remaining -= chunk;
        }
        total
    }
}

fn segment_size_bytes() -> u64 {
    let mib: u64 = std::env::var("SEGSTORE_BENCH_SEGMENT_MIB").ok().and_then(|value| value.parse().ok()).unwrap_or(256);
    mib.clamp(1, 1024) << 20
}

/// Appender threads kept across samples: spawning threads per sample would dominate
/// short samples (as `--quick` takes).
struct Pool {
    shared: Arc<PoolShared>,
    workers: Vec<std::thread::JoinHandle<()>>,
}

struct Job {
    log: Arc<Log>,
    records: u64,
    payload: Arc<Vec<u8>>,
}

#[derive(Default)]
struct PoolState {
    generation: u64,
    job: Option<Arc<Job>>,
    spans: Vec<(Instant, Instant)>,
    shutdown: bool,
}

#[derive(Default)]
struct PoolShared {
    state: Mutex<PoolState>,
    changed: Condvar,
}

impl Pool {
    fn new(threads: usize) -> Pool {
        let shared = Arc::new(PoolShared::default());
        let workers = (0..threads)
            .map(|index| {
                let shared = Arc::clone(&shared);
                std::thread::spawn(move || worker(&shared, index, threads))
            })
            .collect();
        Pool { shared, workers }
    }

    /// Appends `records` spread over the workers; returns the wall time from the first
    /// worker's start to the last one's end (each worker reads its own clock).
    fn run(&self, log: &Arc<Log>, records: u64, payload: &Arc<Vec<u8>>) -> Duration {
        let job = Arc::new(Job { log: Arc::clone(log), records, payload: Arc::clone(payload) });
        let mut state = self.shared.state.lock().unwrap();
        state.job = Some(job);
        state.spans.clear();
        state.generation += 1;
        self.shared.changed.notify_all();
        while state.spans.len() < self.workers.len() {
            state = self.shared.changed.wait(state).unwrap();
        }
        state.job = None;
        let first = state.spans.iter().map(|span| span.0).min().expect("workers");
        let last = state.spans.iter().map(|span| span.1).max().expect("workers");
        last - first
    }
}

impl Drop for Pool {
    fn drop(&mut self) {
        self.shared.state.lock().unwrap().shutdown = true;
        self.shared.changed.notify_all();
        for worker in self.workers.drain(..) {
            let _ = worker.join();
        }
    }
}

fn worker(shared: &PoolShared, index: usize, threads: usize) {
    let mut seen = 0;
    loop {
        let job = {
            let mut state = shared.state.lock().unwrap();
            while !state.shutdown && state.generation == seen {
                state = shared.changed.wait(state).unwrap();
            }
            if state.shutdown {
                return;
            }
            seen = state.generation;
            Arc::clone(state.job.as_ref().expect("a new generation carries a job"))
        };
        let share = job.records / threads as u64 + u64::from((index as u64) < job.records % threads as u64);
        let start = Instant::now();
        for _ in 0..share {
            black_box(job.log.append(KIND, &job.payload).expect("append"));
        }
        let end = Instant::now();
        drop(job);
        shared.state.lock().unwrap().spans.push((start, end));
        shared.changed.notify_all();
    }
}

/// Appends `records` payloads on this thread, or on the pool's threads if given.
fn append_records(log: &Arc<Log>, pool: Option<&Pool>, records: u64, payload: &Arc<Vec<u8>>) -> Duration {
    match pool {
        Some(pool) => pool.run(log, records, payload),
        None => {
            let start = Instant::now();
            for _ in 0..records {
                black_box(log.append(KIND, payload).expect("append"));
            }
            start.elapsed()
        }
    }
}

fn nondurable(c: &mut Criterion) {
    let segment_size_bytes = segment_size_bytes();
    let mut group = c.benchmark_group("append_nondurable");
    group.sample_size(10).warm_up_time(Duration::from_secs(1)).measurement_time(Duration::from_secs(3));
    for threads in [1usize, 4] {
        for payload_bytes in [64usize, 1024, 4096, 64 * 1024] {
            let payload = Arc::new(support::payload(payload_bytes));
            let span = data_span_bytes(payload_bytes as u64);
            let mut slot = LogSlot::new(segment_size_bytes, SyncMode::None);
            let pool = (threads > 1).then(|| Pool::new(threads));
            group.throughput(Throughput::Bytes(payload_bytes as u64));
            group.bench_function(BenchmarkId::new(format!("{threads}t"), payload_bytes), |bencher| {
                bencher.iter_custom(|iters| {
                    slot.time_in_segments(iters, span, |log, chunk| append_records(log, pool.as_ref(), chunk, &payload))
                })
            });
        }
    }
    // The one-pass copy and checksum of `append` against copying with `append_with`
    // and then checksumming the copy, the way every append went before.
    let payload_bytes = 4096usize;
    let payload = support::payload(payload_bytes);
    let span = data_span_bytes(payload_bytes as u64);
    let mut slot = LogSlot::new(segment_size_bytes, SyncMode::None);
    group.throughput(Throughput::Bytes(payload_bytes as u64));
    group.bench_function(BenchmarkId::new("1t_copy_then_checksum", payload_bytes), |bencher| {
        bencher.iter_custom(|iters| {
            slot.time_in_segments(iters, span, |log, chunk| {
                let start = Instant::now();
                for _ in 0..chunk {
                    black_box(log.append_with(KIND, payload.len(), |bytes| bytes.copy_from_slice(&payload)).expect("append"));
                }
                start.elapsed()
            })
        })
    });
    group.finish();
}

fn durable(c: &mut Criterion) {
    let payload = support::payload(256);
    let span = data_span_bytes(256);
    let mut group = c.benchmark_group("append_durable_256B");
    group.sample_size(10).warm_up_time(Duration::from_secs(1)).measurement_time(Duration::from_secs(3));
    group.throughput(Throughput::Elements(1));
    for (name, sync_mode) in [("msync", SyncMode::Msync), ("fdatasync", SyncMode::Fdatasync)] {
        let mut slot = LogSlot::new(64 << 20, sync_mode);
        group.bench_function(name, |bencher| {
            bencher.iter_custom(|iters| {
                slot.time_in_segments(iters, span, |log, chunk| {
                    let start = Instant::now();
                    for _ in 0..chunk {
                        black_box(log.append_durable(KIND, &payload).expect("durable append"));
                    }
                    start.elapsed()
                })
            })
        });
    }
    group.finish();
}

fn codec(c: &mut Criterion) {
    let payload = support::payload(256);
    let expected = Expected { generation: 0x5eed_1234, position: 4096 };
    let encoded = record::encode_to_vec(KIND, &payload, expected, 0);
    let mut group = c.benchmark_group("codec_256B");
    checksums(&mut group, expected, &payload);
    group.bench_function("encode_to_vec", |bencher| {
        bencher.iter(|| record::encode_to_vec(KIND, black_box(&payload), black_box(expected), 0))
    });
    group.bench_function("decode", |bencher| {
        bencher.iter(|| match record::decode(black_box(&encoded), black_box(expected)) {
            Decoded::Record(found) => found.span_bytes,
            other => panic!("the encoded record does not decode: {other:?}"),
        })
    });
    group.finish();
    // At 4 KiB the folding kernel of `checksum.rs` runs.
    let mut group = c.benchmark_group("codec_4KiB");
    checksums(&mut group, expected, &support::payload(4096));
    group.finish();
}

/// Sets up a codec group for `payload` and adds the record checksum of it, against the
/// `crc32c` crate on the same bytes.
fn checksums(group: &mut BenchmarkGroup<'_, WallTime>, expected: Expected, payload: &[u8]) {
    let header = RecordHeader::new(KIND, RecordFlags::empty(), payload.len() as u32, expected.generation, expected.position, 0);
    group.sample_size(20).warm_up_time(Duration::from_millis(500)).measurement_time(Duration::from_secs(2));
    group.throughput(Throughput::Bytes(payload.len() as u64));
    group.bench_function("crc32c_payload", |bencher| bencher.iter(|| crc32c::crc32c(black_box(payload))));
    group.bench_function("record_crc", |bencher| bencher.iter(|| record::record_crc(black_box(&header), black_box(payload))));
}

/// Recovery's scan of one sealed-at-close 4 MiB segment full of 256 B records: the
/// per-byte cost of reopening a log once its files are in the page cache.
fn recovery_scan(c: &mut Criterion) {
    const SEGMENT_BYTES: u64 = 4 << 20;
    let dir = support::temp_dir();
    let log = support::open_quiet(dir.path(), SEGMENT_BYTES, SyncMode::None);
    let payload = support::payload(256);
    let records = (SEGMENT_BYTES - SEGMENT_HEADER_SIZE) / data_span_bytes(256) - 1;
    for _ in 0..records {
        log.append(KIND, &payload).expect("append");
    }
    log.close().expect("close");
    let first = std::fs::read_dir(dir.path())
        .expect("list log")
        .flatten()
        .map(|entry| entry.path())
        .filter(|path| path.extension().is_some_and(|extension| extension == "seg"))
        .min()
        .expect("a segment");
    let image = std::fs::read(first).expect("read segment");
    let mut group = c.benchmark_group("recovery_scan");
    group.sample_size(20).warm_up_time(Duration::from_millis(500)).measurement_time(Duration::from_secs(3));
    group.throughput(Throughput::Bytes(image.len() as u64));
    group.bench_function("4MiB_segment_256B_records", |bencher| {
        bencher.iter(|| match recovery::scan_image(black_box(&image)) {
            recovery::ImageScan::Valid { end, .. } => assert_eq!(end.data_records, records),
            other => panic!("the segment does not scan: {other:?}"),
        })
    });
    group.finish();
}

/// Opening a closed log whose one 64 MiB segment holds a single record: what a reopen
/// costs beyond the records, which is checking the rest of the last segment for
/// records past the end. As a log leaves it after light use (zero-filled 1 MiB past
/// the end, unwritten blocks after), and zero-filled to its end (as segments are when
/// the log fills them).
fn reopen(c: &mut Criterion) {
    const SEGMENT_BYTES: u64 = 64 << 20;
    let mut group = c.benchmark_group("reopen");
    group.sample_size(20).warm_up_time(Duration::from_millis(500)).measurement_time(Duration::from_secs(3));
    for (name, zero_filled_to_end) in [("read_only_64MiB_segment_1_record", false), ("read_only_64MiB_zero_filled_segment_1_record", true)]
    {
        let dir = support::temp_dir();
        let log =
            Log::open(dir.path(), segstore::Options { segment_size_bytes: SEGMENT_BYTES, sync_mode: SyncMode::Msync }).expect("open log");
        if zero_filled_to_end {
            log.wait_for_preparation();
        }
        log.append_durable(KIND, &support::payload(256)).expect("append");
        log.close().expect("close");
        group.bench_function(name, |bencher| bencher.iter(|| drop(Log::open_read_only(black_box(dir.path())).expect("open"))));
    }
    group.finish();
}

criterion_group!(benches, codec, durable, nondurable, recovery_scan, reopen);
criterion_main!(benches);
