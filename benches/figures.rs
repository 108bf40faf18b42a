//! The project's headline figures, each measured side by side with its reference in one
//! run: the variants being compared take turns (round-robin, the starting variant
//! rotating every round), and every figure is the median over rounds with the min–max.
//!
//! `cargo bench --bench figures [-- --quick] [-- --only=latency,throughput,tail]`
//!
//! Environment: `SEGSTORE_BENCH_DIR` (parent of the temporary directory; default
//! `target/` under the current directory), `SEGSTORE_BENCH_ROUNDS` (default 5),
//! `SEGSTORE_BENCH_LATENCY_ROUNDS` (default 15: the rounds are short and the p50 ratio
//! needs them), `SEGSTORE_BENCH_QUICK=1` (same as `--quick`).

mod support;

use std::fs::{File, OpenOptions};
use std::io::Write as _;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::Barrier;
use std::time::{Duration, Instant};

use segstore::record::data_span_bytes;
use segstore::{RecordKind, SyncMode};
use support::{median, micros, percentile, ratio, summary, verdict, Bench};

const KIND: RecordKind = RecordKind(16);
const DURABLE_PAYLOAD_BYTES: usize = 256;
const WARMUP_APPENDS: usize = 20;
/// The default segment size: big enough that the latency runs never rotate.
const LARGE_SEGMENT_BYTES: u64 = 64 << 20;

struct Config {
    quick: bool,
    rounds: usize,
    latency_rounds: usize,
    latency_appends: usize,
    throughput_payload_bytes: u64,
    tail_appends: usize,
    small_segment_bytes: u64,
    cut_every: usize,
    sections: Vec<String>,
}

impl Config {
    fn from_env_and_args() -> Config {
        let args: Vec<String> = std::env::args().skip(1).collect();
        let quick = args.iter().any(|arg| arg == "--quick") || std::env::var("SEGSTORE_BENCH_QUICK").is_ok_and(|value| value == "1");
        let rounds_from =
            |name: &str, default: usize| std::env::var(name).ok().and_then(|value| value.parse().ok()).unwrap_or(default).max(1);
        let rounds = rounds_from("SEGSTORE_BENCH_ROUNDS", 5);
        let latency_rounds = rounds_from("SEGSTORE_BENCH_LATENCY_ROUNDS", if quick { rounds } else { rounds.max(15) });
        let sections = args
            .iter()
            .find_map(|arg| arg.strip_prefix("--only="))
            .map(|list| list.split(',').map(str::to_string).collect())
            .unwrap_or_else(|| vec!["latency".into(), "throughput".into(), "tail".into()]);
        let tail_appends = if quick { 10_000 } else { 80_000 };
        // At least 20 rotations: the largest power-of-two segment the run fills 21 times.
        let tail_bytes = tail_appends as u64 * data_span_bytes(DURABLE_PAYLOAD_BYTES as u64);
        let small_segment_bytes = (tail_bytes / 21).next_power_of_two() / 2;
        Config {
            quick,
            rounds,
            latency_rounds,
            latency_appends: if quick { 500 } else { 2000 },
            throughput_payload_bytes: if quick { 32 << 20 } else { 128 << 20 },
            tail_appends,
            small_segment_bytes: small_segment_bytes.clamp(segstore::MIN_SEGMENT_SIZE_BYTES, 1 << 20),
            cut_every: tail_appends / 25,
            sections,
        }
    }

    fn wants(&self, section: &str) -> bool {
        self.sections.iter().any(|wanted| wanted == section)
    }
}

// ---------------------------------------------------------------------------------
// Statistics

fn kib(bytes: f64) -> String {
    format!("{:.2} KiB", bytes / 1024.0)
}

fn column(rounds: &[Round], pick: impl Fn(&Round) -> f64) -> Vec<f64> {
    rounds.iter().map(pick).collect()
}

fn paired(a: &[Round], b: &[Round], pick: impl Fn(&Round) -> f64) -> Vec<f64> {
    a.iter().zip(b).map(|(a, b)| pick(a) / pick(b)).collect()
}

/// What one variant measured in one round.
#[derive(Clone, Debug, Default)]
struct Round {
    p50: f64,
    p99: f64,
    p999: f64,
    max: f64,
    process_bytes_per_op: f64,
    device_bytes_per_op: f64,
    records_per_second: f64,
    bytes_per_second: f64,
    cuts: f64,
    /// Appends slower than 1 ms.
    slow: f64,
}

fn latency_round(mut latencies: Vec<u64>, counters: (Option<f64>, Option<f64>)) -> Round {
    latencies.sort_unstable();
    let slow = latencies.iter().filter(|&&nanos| nanos > 1_000_000).count() as f64;
    Round {
        slow,
        p50: percentile(&latencies, 0.50) as f64,
        p99: percentile(&latencies, 0.99) as f64,
        p999: percentile(&latencies, 0.999) as f64,
        max: *latencies.last().expect("latencies") as f64,
        process_bytes_per_op: counters.0.unwrap_or(f64::NAN),
        device_bytes_per_op: counters.1.unwrap_or(f64::NAN),
        ..Round::default()
    }
}

// ---------------------------------------------------------------------------------
// The workloads

/// `appends` durable 256 B appends to a fresh log; `cut_every` adds explicit cuts.
fn segstore_durable(bench: &mut Bench, sync_mode: SyncMode, segment_size_bytes: u64, appends: usize, cut_every: Option<usize>) -> Round {
    let dir = bench.fresh_path("log");
    let log = support::open_quiet(&dir, segment_size_bytes, sync_mode);
    let payload = support::payload(DURABLE_PAYLOAD_BYTES);
    for _ in 0..WARMUP_APPENDS {
        log.append_durable(KIND, &payload).expect("durable append");
    }
    let segments_before = log.segment_count();
    let mut latencies = Vec::with_capacity(appends);
    let before = bench.counters();
    for index in 0..appends {
        if let Some(every) = cut_every {
            // Cuts are between appends, so their own cost shows in the append after them.
            if index > 0 && index % every == 0 {
                log.cut().expect("cut");
            }
        }
        let start = Instant::now();
        log.append_durable(KIND, &payload).expect("durable append");
        latencies.push(start.elapsed().as_nanos() as u64);
    }
    let after = bench.counters();
    let cuts = (log.segment_count() - segments_before) as f64;
    log.close().expect("close");
    std::fs::remove_dir_all(&dir).expect("remove log directory");
    Round { cuts, ..latency_round(latencies, before.per_op(&after, appends as u64)) }
}

/// The physical reference: `pwrite` of 256 B appended sequentially to a file that was
/// zero-filled with 4 KiB writes and fsynced, each followed by `fdatasync`.
fn raw_pwrite_fdatasync(bench: &mut Bench, appends: usize) -> Round {
    let path = bench.fresh_path("raw");
    let total = (appends + WARMUP_APPENDS) as u64 * DURABLE_PAYLOAD_BYTES as u64;
    let size = (total + (1 << 20)).next_multiple_of(1 << 20);
    let file = OpenOptions::new().read(true).write(true).create_new(true).open(&path).expect("create raw file");
    let zeros = [0u8; 4096];
    for offset in (0..size).step_by(zeros.len()) {
        file.write_all_at(&zeros, offset).expect("zero-fill");
    }
    file.sync_all().expect("fsync raw file");
    File::open(bench.root()).and_then(|dir| dir.sync_all()).expect("fsync directory");
    let payload = support::payload(DURABLE_PAYLOAD_BYTES);
    let mut offset = 0u64;
    let mut append = |file: &File| {
        file.write_all_at(&payload, offset).expect("pwrite");
        file.sync_data().expect("fdatasync");
        offset += DURABLE_PAYLOAD_BYTES as u64;
    };
    for _ in 0..WARMUP_APPENDS {
        append(&file);
    }
    let mut latencies = Vec::with_capacity(appends);
    let before = bench.counters();
    for _ in 0..appends {
        let start = Instant::now();
        append(&file);
        latencies.push(start.elapsed().as_nanos() as u64);
    }
    let after = bench.counters();
    drop(file);
    std::fs::remove_file(&path).expect("remove raw file");
    latency_round(latencies, before.per_op(&after, appends as u64))
}

/// Runs `threads` threads, each calling `work(thread, share)`, and returns the wall time
/// from the first thread's start to the last one's end. The threads take their own
/// clocks: a coordinator woken late by the barrier would miss part of the work.
fn timed_threads(threads: usize, records: u64, work: &(dyn Fn(usize, u64) + Sync)) -> Duration {
    let barrier = Barrier::new(threads);
    let spans: Vec<(Instant, Instant)> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..threads)
            .map(|thread| {
                let share = records / threads as u64 + u64::from((thread as u64) < records % threads as u64);
                let barrier = &barrier;
                scope.spawn(move || {
                    barrier.wait();
                    let start = Instant::now();
                    work(thread, share);
                    (start, Instant::now())
                })
            })
            .collect();
        handles.into_iter().map(|handle| handle.join().expect("worker")).collect()
    });
    let first = spans.iter().map(|span| span.0).min().expect("threads");
    let last = spans.iter().map(|span| span.1).max().expect("threads");
    last - first
}

fn throughput_round(records: u64, payload_bytes: usize, elapsed: Duration) -> Round {
    let seconds = elapsed.as_secs_f64();
    Round {
        records_per_second: records as f64 / seconds,
        bytes_per_second: (records * payload_bytes as u64) as f64 / seconds,
        ..Round::default()
    }
}

fn segstore_nondurable(bench: &mut Bench, threads: usize, payload_bytes: usize, records: u64) -> Round {
    let dir = bench.fresh_path("log");
    let log_bytes = records * data_span_bytes(payload_bytes as u64);
    // One segment holds the whole run: rotation is measured by the tail figure instead.
    let segment_size_bytes = (log_bytes + (1 << 20)).next_power_of_two().min(segstore::mapping::MAX_SEGMENT_SIZE_BYTES);
    assert!(log_bytes + (1 << 20) <= segment_size_bytes, "the run does not fit in one segment");
    let log = support::open_quiet(&dir, segment_size_bytes, SyncMode::None);
    let payload = support::payload(payload_bytes);
    let elapsed = timed_threads(threads, records, &|_, share| {
        for _ in 0..share {
            std::hint::black_box(log.append(KIND, &payload).expect("append"));
        }
    });
    assert_eq!(log.segment_count(), 1, "the run rotated");
    // No final sync: the dirty pages are dropped with the files.
    drop(log);
    std::fs::remove_dir_all(&dir).expect("remove log directory");
    throughput_round(records, payload_bytes, elapsed)
}

/// The reference: the same payload copies into a pre-faulted buffer.
fn memcpy_reference(buffer: &mut [u8], threads: usize, payload_bytes: usize, records: u64) -> Round {
    let payload = support::payload(payload_bytes);
    let per_thread = records.div_ceil(threads as u64) as usize * payload_bytes;
    let regions: Vec<std::sync::Mutex<&mut [u8]>> = buffer.chunks_mut(per_thread).map(std::sync::Mutex::new).collect();
    let elapsed = timed_threads(threads, records, &|thread, share| {
        let mut region = regions[thread].lock().expect("region");
        for record in 0..share as usize {
            region[record * payload_bytes..(record + 1) * payload_bytes].copy_from_slice(&payload);
        }
        std::hint::black_box(&mut **region);
    });
    throughput_round(records, payload_bytes, elapsed)
}

/// The floor for any appender into a file mapping: the same payloads at the same
/// spacing as the log's records, copied into a fresh shared mapping of a file prepared
/// like a segment (zero-filled with 4 KiB writes, fsynced). What it costs over the
/// heap copy is the page faults; what the log costs over it is the log's own work.
fn mapped_memcpy_reference(bench: &mut Bench, threads: usize, payload_bytes: usize, records: u64) -> Round {
    let path = bench.fresh_path("mapped");
    let span = data_span_bytes(payload_bytes as u64) as usize;
    let per_thread = records.div_ceil(threads as u64) as usize * span;
    let size = (per_thread * threads + (1 << 20)).next_multiple_of(1 << 20);
    let file = OpenOptions::new().read(true).write(true).create_new(true).open(&path).expect("create mapped file");
    let zeros = [0u8; 4096];
    for offset in (0..size as u64).step_by(zeros.len()) {
        file.write_all_at(&zeros, offset).expect("zero-fill");
    }
    file.sync_all().expect("fsync mapped file");
    // SAFETY: the file is private to this benchmark, never truncated while mapped.
    #[allow(unsafe_code)]
    let mut map = unsafe { memmap2::MmapOptions::new().len(size).map_mut(&file) }.expect("map file");
    let payload = support::payload(payload_bytes);
    let regions: Vec<std::sync::Mutex<&mut [u8]>> = map.chunks_mut(per_thread).map(std::sync::Mutex::new).collect();
    let elapsed = timed_threads(threads, records, &|thread, share| {
        let mut region = regions[thread].lock().expect("region");
        for record in 0..share as usize {
            region[record * span..record * span + payload_bytes].copy_from_slice(&payload);
        }
        std::hint::black_box(&mut **region);
    });
    drop(regions);
    drop(map);
    drop(file);
    std::fs::remove_file(&path).expect("remove mapped file");
    throughput_round(records, payload_bytes, elapsed)
}

// ---------------------------------------------------------------------------------
// The figures

fn latency_figures(bench: &mut Bench, config: &Config) {
    const NAMES: [&str; 3] = ["segstore msync", "segstore fdatasync", "raw pwrite+fdatasync"];
    let mut results: [Vec<Round>; 3] = Default::default();
    for round in 0..config.latency_rounds {
        for turn in 0..NAMES.len() {
            let variant = (round + turn) % NAMES.len();
            let measured = match variant {
                0 => segstore_durable(bench, SyncMode::Msync, LARGE_SEGMENT_BYTES, config.latency_appends, None),
                1 => segstore_durable(bench, SyncMode::Fdatasync, LARGE_SEGMENT_BYTES, config.latency_appends, None),
                _ => raw_pwrite_fdatasync(bench, config.latency_appends),
            };
            results[variant].push(measured);
        }
    }
    println!(
        "\n### Durable 256 B append, 1 writer ({} appends per round, {} rounds, 64 MiB segments)\n",
        config.latency_appends, config.latency_rounds
    );
    println!("| variant | p50 | p99 | p99.9 | p50 / raw | p99 / raw | process write_bytes per append | device bytes per append |");
    println!("|---|---|---|---|---|---|---|---|");
    let raw = &results[2];
    for (name, rounds) in NAMES.iter().zip(&results) {
        println!(
            "| {name} | {} | {} | {} | {} | {} | {} | {} |",
            summary(&column(rounds, |r| r.p50), micros),
            summary(&column(rounds, |r| r.p99), micros),
            summary(&column(rounds, |r| r.p999), micros),
            summary(&paired(rounds, raw, |r| r.p50), ratio),
            summary(&paired(rounds, raw, |r| r.p99), ratio),
            summary(&column(rounds, |r| r.process_bytes_per_op), kib),
            summary(&column(rounds, |r| r.device_bytes_per_op), kib),
        );
    }
    println!();
    for (index, name) in NAMES.iter().enumerate().take(2) {
        let p50_ratio = median(&paired(&results[index], raw, |r| r.p50));
        // Other processes only ever add to the device counter: its minimum over rounds is
        // the closest to what this process caused.
        let device = column(&results[index], |r| r.device_bytes_per_op).into_iter().fold(f64::NAN, f64::min);
        let process = median(&column(&results[index], |r| r.process_bytes_per_op));
        let (bytes, source) = if device.is_finite() { (device, "device, min over rounds") } else { (process, "process") };
        println!(
            "- target {name}: p50 ≤ 1.10× raw: {} ({p50_ratio:.2}×); ≤ 8 KiB written per append: {} ({}, {source}; process counter {})",
            verdict(p50_ratio <= 1.10),
            verdict(bytes <= 8192.0),
            kib(bytes),
            kib(process),
        );
    }
}

fn throughput_figures(bench: &mut Bench, config: &Config) {
    println!(
        "\n### Non-durable append throughput ({} MiB of payload per run, {} rounds)\n",
        config.throughput_payload_bytes >> 20,
        config.rounds
    );
    println!("References: memcpy of the same payloads into a pre-faulted heap buffer, and into a fresh mapping of a zero-filled file at the log's record spacing.\n");
    println!("| payload | threads | segstore records/s | segstore GB/s | memcpy heap GB/s | memcpy mapped file GB/s | segstore / heap | segstore / mapped file |");
    println!("|---|---|---|---|---|---|---|---|");
    for payload_bytes in [64usize, 4096] {
        let records = config.throughput_payload_bytes / payload_bytes as u64;
        let mut buffer = vec![1u8; (records as usize + 4) * payload_bytes];
        for threads in [1usize, 2, 4] {
            let mut results: [Vec<Round>; 3] = Default::default();
            for round in 0..config.rounds {
                for turn in 0..3 {
                    let variant = (round + turn) % 3;
                    let measured = match variant {
                        0 => segstore_nondurable(bench, threads, payload_bytes, records),
                        1 => memcpy_reference(&mut buffer, threads, payload_bytes, records),
                        _ => mapped_memcpy_reference(bench, threads, payload_bytes, records),
                    };
                    results[variant].push(measured);
                }
            }
            let gigabytes = |v: f64| format!("{:.2}", v / 1e9);
            println!(
                "| {payload_bytes} B | {threads} | {} | {} | {} | {} | {} | {} |",
                summary(&column(&results[0], |r| r.records_per_second), |v| format!("{:.2} M", v / 1e6)),
                summary(&column(&results[0], |r| r.bytes_per_second), gigabytes),
                summary(&column(&results[1], |r| r.bytes_per_second), gigabytes),
                summary(&column(&results[2], |r| r.bytes_per_second), gigabytes),
                summary(&paired(&results[0], &results[1], |r| r.bytes_per_second), ratio),
                summary(&paired(&results[0], &results[2], |r| r.bytes_per_second), ratio),
            );
        }
    }
}

fn tail_figures(bench: &mut Bench, config: &Config) {
    // Explicit cuts in two segment sizes: each cut makes the preparer zero-fill and sync
    // a whole new segment in the background, so their cost grows with the segment size.
    let runs: [(String, u64, Option<usize>); 4] = [
        ("no cuts (64 MiB segments)".into(), LARGE_SEGMENT_BYTES, None),
        (format!("rotation ({} KiB segments)", config.small_segment_bytes >> 10), config.small_segment_bytes, None),
        (format!("cut() every {} appends, 64 MiB segments", config.cut_every), LARGE_SEGMENT_BYTES, Some(config.cut_every)),
        (format!("cut() every {} appends, 8 MiB segments", config.cut_every), 8 << 20, Some(config.cut_every)),
    ];
    let mut results: Vec<Vec<Round>> = vec![Vec::new(); runs.len()];
    for round in 0..config.rounds {
        for turn in 0..runs.len() {
            let variant = (round + turn) % runs.len();
            let (_, segment_size_bytes, cut_every) = runs[variant];
            let measured = segstore_durable(bench, SyncMode::Msync, segment_size_bytes, config.tail_appends, cut_every);
            results[variant].push(measured);
        }
    }
    println!("\n### Durable 256 B append tail across cuts, msync ({} appends per round, {} rounds)\n", config.tail_appends, config.rounds);
    if config.quick {
        println!(
            "Quick run: cuts come every few tens of ms, faster than a 64 MiB segment can be prepared; the full run is the reference.\n"
        );
    }
    println!("| run | cuts | p50 | p99 | p99.9 | max | appends > 1 ms | p99.9 / no cuts |");
    println!("|---|---|---|---|---|---|---|---|");
    for ((name, _, _), rounds) in runs.iter().zip(&results) {
        println!(
            "| {name} | {} | {} | {} | {} | {} | {} | {} |",
            summary(&column(rounds, |r| r.cuts), |v| format!("{v:.0}")),
            summary(&column(rounds, |r| r.p50), micros),
            summary(&column(rounds, |r| r.p99), micros),
            summary(&column(rounds, |r| r.p999), micros),
            summary(&column(rounds, |r| r.max), micros),
            summary(&column(rounds, |r| r.slow), |v| format!("{v:.0}")),
            summary(&paired(rounds, &results[0], |r| r.p999), ratio),
        );
    }
    println!();
    for ((name, _, _), rounds) in runs.iter().zip(&results).skip(1) {
        let tail_ratio = median(&paired(rounds, &results[0], |r| r.p999));
        println!("- target {name}: p99.9 ≤ 1.2× no cuts: {} ({tail_ratio:.2}×)", verdict(tail_ratio <= 1.2));
    }
}

fn describe_environment(root: &Path, device_stat: Option<&Path>, config: &Config) {
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let cpus = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0);
    println!("## segstore figures{}\n", if config.quick { " (quick)" } else { "" });
    println!(
        "- directory: {} ({}), device counter: {}",
        root.display(),
        support::filesystem_name(root),
        device_stat.map_or("unavailable".to_string(), |path| path.display().to_string())
    );
    println!(
        "- kernel {}, {cpus} CPUs; medians over interleaved rounds ({} for latency, {} otherwise), [min–max] across rounds",
        kernel.trim(),
        config.latency_rounds,
        config.rounds
    );
    println!("- device bytes count the whole device (journal included, other processes too)");
    std::io::stdout().flush().ok();
}

fn main() {
    let config = Config::from_env_and_args();
    let root = tempfile::Builder::new().prefix("segstore-figures-").tempdir_in(support::bench_root()).expect("create temporary directory");
    let device_stat = support::device_stat_path(root.path());
    describe_environment(root.path(), device_stat.as_deref(), &config);
    let mut bench = Bench::new(root, device_stat);
    let started = Instant::now();
    if config.wants("latency") {
        latency_figures(&mut bench, &config);
    }
    if config.wants("throughput") {
        throughput_figures(&mut bench, &config);
    }
    if config.wants("tail") {
        tail_figures(&mut bench, &config);
    }
    println!("\n(total {:.0} s)", started.elapsed().as_secs_f64());
}
