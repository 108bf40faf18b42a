//! Figures of the Raft storage layer, each measured side by side with a raw reference in
//! the same run: the variants take turns (the first one rotating every round), and every
//! figure is the median over rounds with the min–max.
//!
//! - `save`: durable `Storage::save` of one 256 B entry, against pwrite+fdatasync of as
//!   many bytes as the log writes for it;
//! - `batch`: durable saves of 64 entries × 1 KiB, against 64 KiB pwrite+fdatasync
//!   (both tables add the same saves never synced: the CPU path alone);
//! - `reopen`: `Storage::open` and a read of every entry of a 1 GiB log, each run in a
//!   new process, cold and warm, against a sequential read of the same segment files.
//!
//! `cargo bench --bench storage_figures [-- --quick] [-- --only=save,batch,reopen]`
//!
//! Environment: `SEGSTORE_BENCH_DIR` (parent of the logs; default `target/` under the
//! current directory), `SEGSTORE_BENCH_ROUNDS` (default 5, also the reopen rounds; 3
//! with `--quick`), `SEGSTORE_BENCH_LATENCY_ROUNDS` (default 15), `SEGSTORE_BENCH_QUICK=1`.
//!
//! The reopen log is written once and kept (`<dir>/segstore-reopen-log-<entries>x<bytes>`).
//! The measured processes are this binary run as `--child=reopen DIR ENTRIES DATA_BYTES`
//! and `--child=read DIR`; run them by hand to profile one.

mod support;

use std::collections::HashMap;
use std::ffi::OsString;
use std::fs::File;
use std::io::{Read as _, Write as _};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

use bytes::Bytes;
use prost::Message;
use segstore::raftpb::{Entry, HardState};
use segstore::record::data_span_bytes;
use segstore::{Options, SnapshotMarker, Storage, SyncMode};
use support::{median, micros, paired_ratios, percentile, ratio, summary, verdict, Bench};

const SEGMENT_BYTES: u64 = 64 << 20;
const WARMUP_SAVES: usize = 20;
const SAVE_DATA_BYTES: usize = 256;
const BATCH_ENTRIES: usize = 64;
const BATCH_DATA_BYTES: usize = 1024;
const REOPEN_DATA_BYTES: usize = 512;
const REOPEN_ENTRIES_PER_SAVE: u64 = 256;
const RAW_READ_BYTES: usize = 1 << 20;
/// Term and vote never change: a save syncs because it carries entries.
const TERM: u64 = 1;
const VOTE: u64 = 1;
const CHILD_RESULT: &str = "child-result";
const COMPLETE_MARKER: &str = "BENCH-LOG-COMPLETE";

struct Config {
    quick: bool,
    rounds: usize,
    latency_rounds: usize,
    saves: usize,
    batch_saves: usize,
    reopen_entries: u64,
    sections: Vec<String>,
}

impl Config {
    fn from_env_and_args(args: &[String]) -> Config {
        let quick = args.iter().any(|arg| arg == "--quick") || std::env::var("SEGSTORE_BENCH_QUICK").is_ok_and(|value| value == "1");
        let rounds_from =
            |name: &str, default: usize| std::env::var(name).ok().and_then(|value| value.parse().ok()).unwrap_or(default).max(1);
        let rounds = rounds_from("SEGSTORE_BENCH_ROUNDS", if quick { 3 } else { 5 });
        let latency_rounds = rounds_from("SEGSTORE_BENCH_LATENCY_ROUNDS", if quick { 5 } else { 15 });
        let sections = args
            .iter()
            .find_map(|arg| arg.strip_prefix("--only="))
            .map(|list| list.split(',').map(str::to_string).collect())
            .unwrap_or_else(|| vec!["save".into(), "batch".into(), "reopen".into()]);
        Config {
            quick,
            rounds,
            latency_rounds,
            saves: if quick { 500 } else { 2000 },
            batch_saves: if quick { 100 } else { 300 },
            // 1 GiB of entry data (128 MiB quick).
            reopen_entries: if quick { 1 << 18 } else { 1 << 21 },
            sections,
        }
    }

    fn wants(&self, section: &str) -> bool {
        self.sections.iter().any(|wanted| wanted == section)
    }
}

// ---------------------------------------------------------------------------------
// Durable saves and their raw reference

/// What one variant measured in one round.
#[derive(Clone, Debug, Default)]
struct Round {
    p50: f64,
    p99: f64,
    p999: f64,
    /// Bytes of entry data per second (10^6 B per MB), over the time spent in saves.
    megabytes_per_second: f64,
    process_bytes_per_op: f64,
    device_bytes_per_op: f64,
    /// Minor page faults of the whole process per operation.
    faults_per_op: f64,
}

fn latency_round(mut latencies: Vec<u64>, data_bytes_per_op: usize, counters: (Option<f64>, Option<f64>), faults: Option<u64>) -> Round {
    let total_nanos: u64 = latencies.iter().sum();
    latencies.sort_unstable();
    Round {
        p50: percentile(&latencies, 0.50) as f64,
        p99: percentile(&latencies, 0.99) as f64,
        p999: percentile(&latencies, 0.999) as f64,
        megabytes_per_second: (latencies.len() * data_bytes_per_op) as f64 / total_nanos as f64 * 1e3,
        process_bytes_per_op: counters.0.unwrap_or(f64::NAN),
        device_bytes_per_op: counters.1.unwrap_or(f64::NAN),
        faults_per_op: faults.map_or(f64::NAN, |faults| faults as f64 / latencies.len() as f64),
    }
}

fn column(rounds: &[Round], pick: impl Fn(&Round) -> f64) -> Vec<f64> {
    rounds.iter().map(pick).collect()
}

fn entries_from(first_index: u64, count: usize, data: &Bytes) -> Vec<Entry> {
    (0..count as u64).map(|offset| Entry::new(TERM, first_index + offset, data.clone())).collect()
}

/// Bytes the log writes for one entry of `data_bytes` at an index of this magnitude.
fn entry_span_bytes(index: u64, data_bytes: usize) -> u64 {
    data_span_bytes(Entry::new(TERM, index, vec![0u8; data_bytes]).encoded_len() as u64)
}

/// `saves` durable saves of `entries_per_save` entries to a fresh storage, one at a time.
fn storage_saves(bench: &mut Bench, sync_mode: SyncMode, entries_per_save: usize, data_bytes: usize, saves: usize) -> Round {
    let dir = bench.fresh_path("storage");
    let storage = Storage::create(&dir, b"bench", Options { segment_size_bytes: SEGMENT_BYTES, sync_mode }).expect("create storage");
    support::wait_for_preparer(storage.log());
    let data = Bytes::from(support::payload(data_bytes));
    // A constant hard state is written once, with the first save: later saves carry only
    // entries, as a follower's steady-state `Ready` does.
    let hard_state = HardState { term: TERM, vote: VOTE, commit: 0 };
    let mut next_index = 1;
    for _ in 0..WARMUP_SAVES {
        storage.save(&hard_state, &entries_from(next_index, entries_per_save, &data)).expect("save");
        next_index += entries_per_save as u64;
    }
    let mut latencies = Vec::with_capacity(saves);
    let before = bench.counters();
    let faults_before = support::minor_faults();
    for _ in 0..saves {
        let entries = entries_from(next_index, entries_per_save, &data);
        next_index += entries_per_save as u64;
        let start = Instant::now();
        storage.save(&hard_state, &entries).expect("save");
        latencies.push(start.elapsed().as_nanos() as u64);
    }
    let after = bench.counters();
    let faults = support::minor_faults().zip(faults_before).map(|(after, before)| after - before);
    assert_eq!(storage.log().segment_count(), 1, "the run rotated: rotation is not what this measures");
    storage.close().expect("close");
    std::fs::remove_dir_all(&dir).expect("remove storage directory");
    latency_round(latencies, entries_per_save * data_bytes, before.per_op(&after, saves as u64), faults)
}

/// The physical reference: `pwrite` of `write_bytes` appended sequentially to a
/// pre-zeroed file in the same directory, each followed by `fdatasync`.
fn raw_pwrite_fdatasync(bench: &mut Bench, write_bytes: usize, data_bytes_per_op: usize, ops: usize) -> Round {
    let path = bench.fresh_path("raw");
    let size = ((ops + WARMUP_SAVES) as u64 * write_bytes as u64 + (1 << 20)).next_multiple_of(1 << 20);
    let file = support::prezeroed_file(&path, size);
    let payload = support::payload(write_bytes);
    let mut offset = 0u64;
    let mut write = |file: &File| {
        file.write_all_at(&payload, offset).expect("pwrite");
        file.sync_data().expect("fdatasync");
        offset += write_bytes as u64;
    };
    for _ in 0..WARMUP_SAVES {
        write(&file);
    }
    let mut latencies = Vec::with_capacity(ops);
    let before = bench.counters();
    let faults_before = support::minor_faults();
    for _ in 0..ops {
        let start = Instant::now();
        write(&file);
        latencies.push(start.elapsed().as_nanos() as u64);
    }
    let after = bench.counters();
    let faults = support::minor_faults().zip(faults_before).map(|(after, before)| after - before);
    drop(file);
    std::fs::remove_file(&path).expect("remove raw file");
    latency_round(latencies, data_bytes_per_op, before.per_op(&after, ops as u64), faults)
}

/// The durable variants first, then the CPU path alone (same saves, never synced: what a
/// save costs before it waits for the disk), then the reference.
const SAVE_VARIANTS: [(&str, Option<SyncMode>); 4] = [
    ("Storage::save, msync", Some(SyncMode::Msync)),
    ("Storage::save, fdatasync", Some(SyncMode::Fdatasync)),
    ("Storage::save, no sync (CPU path only)", Some(SyncMode::None)),
    ("raw pwrite+fdatasync", None),
];
const RAW: usize = SAVE_VARIANTS.len() - 1;

fn kib(bytes: f64) -> String {
    format!("{:.2} KiB", bytes / 1024.0)
}

fn save_figures(bench: &mut Bench, config: &Config) {
    // The span of an entry at the indexes the run reaches: the bytes the raw side writes.
    let span = entry_span_bytes((WARMUP_SAVES + config.saves) as u64, SAVE_DATA_BYTES) as usize;
    let results = support::interleaved(config.latency_rounds, SAVE_VARIANTS.len(), |variant| match SAVE_VARIANTS[variant].1 {
        Some(mode) => storage_saves(bench, mode, 1, SAVE_DATA_BYTES, config.saves),
        None => raw_pwrite_fdatasync(bench, span, SAVE_DATA_BYTES, config.saves),
    });
    println!(
        "\n### Durable `Storage::save` of 1 entry × {SAVE_DATA_BYTES} B, 1 writer ({} saves per round, {} rounds, 64 MiB segments)\n",
        config.saves, config.latency_rounds
    );
    println!(
        "Reference: pwrite of {span} B (the entry's record span) appended to a pre-zeroed file in the same directory, then fdatasync.\n"
    );
    println!("| variant | p50 | p99 | p99.9 | p50 / raw | p99 / raw | process write_bytes per save | device bytes per save | minor faults per save |");
    println!("|---|---|---|---|---|---|---|---|---|");
    let raw = &results[RAW];
    for ((name, _), rounds) in SAVE_VARIANTS.iter().zip(&results) {
        println!(
            "| {name} | {} | {} | {} | {} | {} | {} | {} | {} |",
            summary(&column(rounds, |r| r.p50), micros),
            summary(&column(rounds, |r| r.p99), micros),
            summary(&column(rounds, |r| r.p999), micros),
            summary(&paired_ratios(&column(rounds, |r| r.p50), &column(raw, |r| r.p50)), ratio),
            summary(&paired_ratios(&column(rounds, |r| r.p99), &column(raw, |r| r.p99)), ratio),
            summary(&column(rounds, |r| r.process_bytes_per_op), kib),
            summary(&column(rounds, |r| r.device_bytes_per_op), kib),
            summary(&column(rounds, |r| r.faults_per_op), |v| format!("{v:.1}")),
        );
    }
    println!();
    for ((name, _), rounds) in SAVE_VARIANTS.iter().zip(&results).take(2) {
        let p50 = median(&paired_ratios(&column(rounds, |r| r.p50), &column(raw, |r| r.p50)));
        println!("- target {name}: p50 ≤ 1.10× raw: {} ({p50:.2}×)", verdict(p50 <= 1.10));
    }
}

fn batch_figures(bench: &mut Bench, config: &Config) {
    let batch_bytes = BATCH_ENTRIES * BATCH_DATA_BYTES;
    let span = entry_span_bytes((WARMUP_SAVES + config.batch_saves) as u64 * BATCH_ENTRIES as u64, BATCH_DATA_BYTES);
    let results = support::interleaved(config.rounds, SAVE_VARIANTS.len(), |variant| match SAVE_VARIANTS[variant].1 {
        Some(mode) => storage_saves(bench, mode, BATCH_ENTRIES, BATCH_DATA_BYTES, config.batch_saves),
        None => raw_pwrite_fdatasync(bench, batch_bytes, batch_bytes, config.batch_saves),
    });
    println!(
        "\n### Durable `Storage::save` of {BATCH_ENTRIES} entries × {} KiB, 1 writer ({} saves per round, {} rounds, 64 MiB segments)\n",
        BATCH_DATA_BYTES >> 10,
        config.batch_saves,
        config.rounds
    );
    println!(
        "Reference: pwrite of {} KiB appended to a pre-zeroed file in the same directory, then fdatasync. \
         MB/s = entry data (10^6 B) over the time spent in saves; the log writes {} B per save ({span} B per entry).\n",
        batch_bytes >> 10,
        span * BATCH_ENTRIES as u64
    );
    println!("| variant | MB/s | MB/s / raw | p50 | p99 | p50 / raw | p99 / raw | device bytes per save | minor faults per save |");
    println!("|---|---|---|---|---|---|---|---|---|");
    let raw = &results[RAW];
    for ((name, _), rounds) in SAVE_VARIANTS.iter().zip(&results) {
        println!(
            "| {name} | {} | {} | {} | {} | {} | {} | {} | {} |",
            summary(&column(rounds, |r| r.megabytes_per_second), |v| format!("{v:.1}")),
            summary(&paired_ratios(&column(rounds, |r| r.megabytes_per_second), &column(raw, |r| r.megabytes_per_second)), ratio),
            summary(&column(rounds, |r| r.p50), micros),
            summary(&column(rounds, |r| r.p99), micros),
            summary(&paired_ratios(&column(rounds, |r| r.p50), &column(raw, |r| r.p50)), ratio),
            summary(&paired_ratios(&column(rounds, |r| r.p99), &column(raw, |r| r.p99)), ratio),
            summary(&column(rounds, |r| r.device_bytes_per_op), kib),
            summary(&column(rounds, |r| r.faults_per_op), |v| format!("{v:.1}")),
        );
    }
}

// ---------------------------------------------------------------------------------
// Reopen: the log, the child processes and the figure

fn reopen_options() -> Options {
    Options { segment_size_bytes: SEGMENT_BYTES, sync_mode: SyncMode::Msync }
}

fn marker_text(entries: u64) -> String {
    format!("entries={entries} data_bytes={REOPEN_DATA_BYTES} segment_bytes={SEGMENT_BYTES} entries_per_save={REOPEN_ENTRIES_PER_SAVE}\n")
}

/// The reopen log, written now unless a complete one with the same shape is there.
fn ensure_reopen_log(entries: u64) -> PathBuf {
    let dir = support::bench_root().join(format!("segstore-reopen-log-{entries}x{REOPEN_DATA_BYTES}"));
    let marker = dir.join(COMPLETE_MARKER);
    if std::fs::read_to_string(&marker).is_ok_and(|text| text == marker_text(entries)) {
        println!("\n- reopen log: reusing {}", dir.display());
        return dir;
    }
    if dir.exists() {
        std::fs::remove_dir_all(&dir).expect("remove incomplete reopen log");
    }
    let started = Instant::now();
    let storage = Storage::create(&dir, b"bench", reopen_options()).expect("create reopen log");
    let data = Bytes::from(support::payload(REOPEN_DATA_BYTES));
    let mut next_index = 1;
    while next_index <= entries {
        let count = REOPEN_ENTRIES_PER_SAVE.min(entries + 1 - next_index);
        let batch = entries_from(next_index, count as usize, &data);
        next_index += count;
        // Commit follows the log, so the log holds a hard state record per save too.
        storage.save(&HardState { term: TERM, vote: VOTE, commit: next_index - 1 }, &batch).expect("save");
    }
    storage.close().expect("close reopen log");
    // Written last: a log interrupted while being written is never taken as complete.
    let mut file = File::create(&marker).expect("create marker");
    file.write_all(marker_text(entries).as_bytes()).and_then(|()| file.sync_all()).expect("write marker");
    println!("\n- reopen log: wrote {} in {:.1} s", dir.display(), started.elapsed().as_secs_f64());
    dir
}

fn segment_paths(dir: &Path) -> Vec<PathBuf> {
    let mut paths: Vec<PathBuf> = std::fs::read_dir(dir)
        .expect("list log directory")
        .map(|entry| entry.expect("directory entry").path())
        .filter(|path| path.extension().is_some_and(|extension| extension == "seg"))
        .collect();
    paths.sort();
    paths
}

fn child_report(values: &[(&str, f64)]) {
    let fields: Vec<String> = values.iter().map(|(key, value)| format!("{key}={value}")).collect();
    println!("{CHILD_RESULT} {}", fields.join(" "));
}

/// The measured process: open the log at {0, 0}, read every entry, close.
fn reopen_child(dir: &Path, expected_entries: u64, data_bytes: usize) {
    let start = Instant::now();
    let storage = Storage::open(dir, &SnapshotMarker::new(0, 0), reopen_options()).expect("open storage");
    let open_seconds = start.elapsed().as_secs_f64();
    let peak_after_open = support::peak_rss_bytes().unwrap_or(0);
    let first_index = storage.first_index();
    let (mut entries, mut bad, mut expected_index) = (0u64, 0u64, first_index);
    storage
        .for_each_entry(first_index, |entry| {
            if entry.data_bytes().len() != data_bytes || entry.index != expected_index {
                bad += 1;
            }
            expected_index = entry.index + 1;
            entries += 1;
            true
        })
        .expect("read entries");
    let open_read_seconds = start.elapsed().as_secs_f64();
    let peak = support::peak_rss_bytes().unwrap_or(0);
    let index_heap_bytes = storage.index_heap_bytes();
    let close_start = Instant::now();
    storage.close().expect("close storage");
    let close_seconds = close_start.elapsed().as_secs_f64();
    if entries != expected_entries {
        bad += 1;
    }
    child_report(&[
        ("open_s", open_seconds),
        ("open_read_s", open_read_seconds),
        ("close_s", close_seconds),
        ("entries", entries as f64),
        ("bad", bad as f64),
        ("index_heap_bytes", index_heap_bytes as f64),
        ("peak_after_open", peak_after_open as f64),
        ("peak", peak as f64),
    ]);
}

/// The reference process: read every segment file front to back, 1 MiB at a time.
fn read_child(dir: &Path) {
    let paths = segment_paths(dir);
    let start = Instant::now();
    // Page-aligned, as cat's buffer is: a 1 MiB Vec lands at 16 mod 64 (malloc's mmap
    // chunk header), where the kernel's copy to user space runs at half speed on some
    // CPUs, which would make the reference slower than a plain read can be.
    let mut allocation = vec![0u8; RAW_READ_BYTES + 4096];
    let aligned = allocation.as_ptr().align_offset(4096);
    let buffer = &mut allocation[aligned..aligned + RAW_READ_BYTES];
    let mut bytes = 0u64;
    for path in &paths {
        let mut file = File::open(path).expect("open segment file");
        loop {
            let read = file.read(buffer).expect("read segment file");
            if read == 0 {
                break;
            }
            bytes += read as u64;
        }
    }
    let read_seconds = start.elapsed().as_secs_f64();
    child_report(&[("read_s", read_seconds), ("bytes", bytes as f64), ("peak", support::peak_rss_bytes().unwrap_or(0) as f64)]);
}

type ChildResult = HashMap<String, f64>;

/// Runs this binary with `args` and returns what it reported, plus the device's bytes
/// read and written meanwhile (`device_read`, `device_written`; whole device). Cold runs start from an empty page cache, but for
/// this binary itself: only the log's reads are meant to be cold.
fn run_child(args: &[OsString], cold: bool, device_stat: Option<&Path>) -> ChildResult {
    let exe = std::env::current_exe().expect("current executable");
    if cold {
        support::drop_page_cache().expect("drop the page cache");
        std::fs::read(&exe).expect("read the executable back into the cache");
    }
    let read_before = device_stat.and_then(support::device_read_bytes);
    let written_before = device_stat.and_then(support::device_written_bytes);
    let output = Command::new(&exe).args(args).stdin(Stdio::null()).stderr(Stdio::inherit()).output().expect("spawn child");
    let read_after = device_stat.and_then(support::device_read_bytes);
    let written_after = device_stat.and_then(support::device_written_bytes);
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "child {args:?} failed ({}): {stdout}", output.status);
    let line = stdout.lines().find_map(|line| line.strip_prefix(CHILD_RESULT)).unwrap_or_else(|| panic!("child {args:?} said: {stdout}"));
    let mut result: ChildResult = line
        .split_whitespace()
        .filter_map(|field| field.split_once('='))
        .map(|(key, value)| (key.to_string(), value.parse().expect("numeric child result")))
        .collect();
    let delta = |before: Option<u64>, after: Option<u64>| match (before, after) {
        (Some(before), Some(after)) => after.saturating_sub(before) as f64,
        _ => f64::NAN,
    };
    result.insert("device_read".into(), delta(read_before, read_after));
    result.insert("device_written".into(), delta(written_before, written_after));
    result
}

fn pick(results: &[ChildResult], key: &str) -> Vec<f64> {
    results.iter().map(|result| result[key]).collect()
}

fn seconds(value: f64) -> String {
    if value >= 1.0 {
        format!("{value:.2} s")
    } else {
        format!("{:.0} ms", value * 1e3)
    }
}

fn mib(bytes: f64) -> String {
    format!("{:.0} MiB", bytes / f64::from(1 << 20))
}

fn reopen_figures(bench: &Bench, config: &Config) {
    let entries = config.reopen_entries;
    let dir = ensure_reopen_log(entries);
    let segment_files = segment_paths(&dir);
    let file_bytes: u64 = segment_files.iter().map(|path| std::fs::metadata(path).expect("stat segment").len()).sum();
    let device_stat = bench.device_stat();
    let reopen_args: Vec<OsString> =
        vec!["--child=reopen".into(), dir.clone().into(), entries.to_string().into(), REOPEN_DATA_BYTES.to_string().into()];
    let read_args: Vec<OsString> = vec!["--child=read".into(), dir.clone().into()];
    let cold_skipped = support::drop_page_cache().err();
    if let Some(reason) = &cold_skipped {
        println!("- cold runs skipped: {reason}");
        // Warm runs then need the log in the cache first.
        run_child(&read_args, false, None);
    }
    // [segstore, raw] × [cold, warm]; cold pairs first in each round, so that the warm
    // pair finds the whole log in the cache.
    let mut results: [[Vec<ChildResult>; 2]; 2] = Default::default();
    for round in 0..config.rounds {
        for cold in [true, false] {
            if cold && cold_skipped.is_some() {
                continue;
            }
            for turn in 0..2 {
                let variant = (round + turn) % 2;
                let args = if variant == 0 { &reopen_args } else { &read_args };
                let result = run_child(args, cold, device_stat);
                results[variant][usize::from(!cold)].push(result);
            }
        }
    }
    for result in results[0].iter().flatten() {
        assert_eq!(result["entries"] as u64, entries, "the log does not hold the entries it should: delete {}", dir.display());
        assert_eq!(result["bad"], 0.0, "entries read back wrong from {}", dir.display());
    }
    println!(
        "\n### Reopen and read a log of {entries} entries × {REOPEN_DATA_BYTES} B ({} segment files, {:.2} GiB on disk), a new process per run ({} rounds)\n",
        segment_files.len(),
        file_bytes as f64 / f64::from(1 << 30),
        config.rounds
    );
    println!(
        "`Storage::open` at {{0, 0}}, then `for_each_entry` from the first index counting entries and checking their data length, then `close`. \
         Reference: a sequential read of the same segment files, 1 MiB per read into a page-aligned buffer, in its own process. \
         Cold: `sync; echo 3 > /proc/sys/vm/drop_caches` before each run.\n"
    );
    println!(
        "| cache | open | open + read all | close | raw read | open / raw | open + read / raw | device read segstore / raw | device written segstore / raw | peak RSS segstore / raw |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|");
    for (cache, cold) in [("cold", 0), ("warm", 1)] {
        let (segstore, raw) = (&results[0][cold], &results[1][cold]);
        if segstore.is_empty() {
            println!("| {cache} | skipped | | | | | | | | |");
            continue;
        }
        let raw_seconds = pick(raw, "read_s");
        println!(
            "| {cache} | {} | {} | {} | {} | {} | {} | {} / {} | {} / {} | {} / {} |",
            summary(&pick(segstore, "open_s"), seconds),
            summary(&pick(segstore, "open_read_s"), seconds),
            summary(&pick(segstore, "close_s"), seconds),
            summary(&raw_seconds, seconds),
            summary(&paired_ratios(&pick(segstore, "open_s"), &raw_seconds), ratio),
            summary(&paired_ratios(&pick(segstore, "open_read_s"), &raw_seconds), ratio),
            mib(median(&pick(segstore, "device_read"))),
            mib(median(&pick(raw, "device_read"))),
            mib(median(&pick(segstore, "device_written"))),
            mib(median(&pick(raw, "device_written"))),
            mib(median(&pick(segstore, "peak"))),
            mib(median(&pick(raw, "peak"))),
        );
    }
    let all: Vec<ChildResult> = results[0].iter().flatten().cloned().collect();
    let raw_all: Vec<ChildResult> = results[1].iter().flatten().cloned().collect();
    let index_per_entry = median(&pick(&all, "index_heap_bytes")) / entries as f64;
    println!();
    println!(
        "- raw read: {:.2} GiB per run; throughput cold {}, warm {} GB/s",
        median(&pick(&raw_all, "bytes")) / f64::from(1 << 30),
        if results[1][0].is_empty() {
            "n/a".to_string()
        } else {
            summary(&paired_ratios(&pick(&results[1][0], "bytes"), &pick(&results[1][0], "read_s")), |v| format!("{:.2}", v / 1e9))
        },
        summary(&paired_ratios(&pick(&results[1][1], "bytes"), &pick(&results[1][1], "read_s")), |v| format!("{:.2}", v / 1e9)),
    );
    println!(
        "- segstore peak RSS after open {}, after reading every entry {} (median over all runs)",
        mib(median(&pick(&all, "peak_after_open"))),
        mib(median(&pick(&all, "peak")))
    );
    println!(
        "- target index heap ≤ 16 B per entry: {} ({index_per_entry:.2} B per entry, {} in all)",
        verdict(index_per_entry <= 16.0),
        mib(median(&pick(&all, "index_heap_bytes")))
    );
}

// ---------------------------------------------------------------------------------

fn describe_environment(root: &Path, device_stat: Option<&Path>, config: &Config) {
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let cpus = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0);
    println!("## segstore storage figures{}\n", if config.quick { " (quick)" } else { "" });
    println!(
        "- directory: {} ({}), device counter: {}",
        root.display(),
        support::filesystem_name(root),
        device_stat.map_or("unavailable".to_string(), |path| path.display().to_string())
    );
    println!(
        "- kernel {}, {cpus} CPUs; medians over interleaved rounds, [min–max] across rounds; ratios are per round against the reference run in the same round",
        kernel.trim()
    );
    std::io::stdout().flush().ok();
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("--child=reopen") => {
            let number =
                |index: usize| args.get(index).and_then(|value| value.parse().ok()).expect("--child=reopen DIR ENTRIES DATA_BYTES");
            return reopen_child(Path::new(&args[1]), number(2), number(3) as usize);
        }
        Some("--child=read") => return read_child(Path::new(args.get(1).expect("--child=read DIR"))),
        _ => {}
    }
    let config = Config::from_env_and_args(&args);
    let root =
        tempfile::Builder::new().prefix("segstore-storage-figures-").tempdir_in(support::bench_root()).expect("create temporary directory");
    let device_stat = support::device_stat_path(root.path());
    describe_environment(root.path(), device_stat.as_deref(), &config);
    let mut bench = Bench::new(root, device_stat);
    let started = Instant::now();
    if config.wants("save") {
        save_figures(&mut bench, &config);
    }
    if config.wants("batch") {
        batch_figures(&mut bench, &config);
    }
    if config.wants("reopen") {
        reopen_figures(&bench, &config);
    }
    println!("\n(total {:.0} s)", started.elapsed().as_secs_f64());
}
