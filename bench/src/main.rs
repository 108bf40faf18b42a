//! The peer benchmark: segstore side by side with the disk's limits, raft-engine,
//! okaywal and etcd's wal, on workloads W1–W6, with interleaved rounds; writes
//! BENCHMARKS.md and a plot.
//!
//! `cargo run --release -p segstore-bench -- [--quick] [--rounds N] [--only w1,w3]`

mod cuts;
mod etcd_peer;
mod nondurable;
mod okaywal_peer;
mod plot;
mod raft_engine_peer;
mod recovery;
mod report;

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::Context;
use clap::{Parser, Subcommand};
use indicatif::{ProgressBar, ProgressStyle};
use segstore::SyncMode;
use segstore_cli::comparison::{Comparison, Metric, DATA_RATE, DEVICE_BYTES_PER_SAVE, MAX, P50, P99, P999, SAVES_PER_SECOND};
use segstore_cli::contender::{Contender, Role};
use segstore_cli::io_counters::{device_stat_path, filesystem_name, is_tmpfs};
use segstore_cli::raw_limit::{RawLimit, RawSync};
use segstore_cli::segstore_contender::Segstore;
use segstore_cli::stats::{self, Spread};
use segstore_cli::table::Table;
use segstore_cli::workload::SaveSpec;

use crate::etcd_peer::EtcdPeer;
use crate::okaywal_peer::OkaywalPeer;
use crate::raft_engine_peer::RaftEnginePeer;
use crate::recovery::{RawRead, RecoveryComparison, RecoveryContender, RecoveryRun, RecoverySpec, SegstoreRecovery};
use crate::report::Report;

#[derive(Parser)]
#[command(name = "segstore-bench", about = "segstore side by side with the disk's limits and the peers (W1–W6)")]
struct Cli {
    #[command(subcommand)]
    child: Option<Child>,
    /// Where logs are written. W4's 1 GiB logs are kept there and reused by later runs.
    #[arg(long, default_value = "target/bench-data")]
    dir: PathBuf,
    /// Rounds per workload (the engines take turns within each).
    #[arg(long, default_value_t = 5)]
    rounds: usize,
    /// A quarter of the saves and an eighth of W4's log: minutes instead of tens of minutes.
    #[arg(long)]
    quick: bool,
    /// Workloads to run.
    #[arg(long, value_delimiter = ',', default_value = "w1,w2,w3,w4,w5,w6")]
    only: Vec<String>,
    /// The Markdown report.
    #[arg(long, default_value = "BENCHMARKS.md")]
    output: PathBuf,
    /// The plot, next to the report.
    #[arg(long, default_value = "benchmarks.svg")]
    plot: PathBuf,
    /// The etcd wal driver (built by bench/etcd-wal/build.sh when missing).
    #[arg(long)]
    etcd_binary: Option<PathBuf>,
    /// Leave etcd's wal out.
    #[arg(long)]
    no_etcd: bool,
    /// segstore's segment size in W1–W3, in MiB (the library's default is 64). W2's
    /// saves, warm-up included, write a little more than 64 MiB, so with the default its
    /// run crosses one segment boundary.
    #[arg(long, default_value_t = 64)]
    segment_mib: u64,
}

#[derive(Subcommand)]
enum Child {
    /// Runs inside W4's measured child process.
    #[command(hide = true)]
    ChildRead { key: String, dir: PathBuf },
}

struct Scale {
    quick: bool,
}

impl Scale {
    fn saves(&self, full: usize) -> usize {
        if self.quick {
            full / 4
        } else {
            full
        }
    }
}

fn save_spec(saves: usize, entries_per_save: usize, entry_data_bytes: usize, threads: usize) -> SaveSpec {
    SaveSpec::new(saves, entries_per_save, entry_data_bytes, threads, 20)
}

/// The etcd driver, built on first use; `None` with the reason when it cannot be.
fn etcd_binary(cli: &Cli) -> Result<PathBuf, String> {
    if cli.no_etcd {
        return Err("left out (--no-etcd)".into());
    }
    let binary = cli.etcd_binary.clone().unwrap_or_else(|| cli.dir.join("etcd-wal-bench"));
    if binary.exists() {
        return Ok(binary);
    }
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("etcd-wal/build.sh");
    eprintln!("building the etcd wal driver with {}", script.display());
    match Command::new("bash").arg(&script).arg(&binary).status() {
        Ok(status) if status.success() && binary.exists() => Ok(binary),
        Ok(status) => Err(format!("{} failed ({status})", script.display())),
        Err(error) => Err(format!("cannot run {}: {error}", script.display())),
    }
}

fn machine_description(dir: &Path, device_stat: Option<&Path>) -> String {
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|info| {
            info.lines().find_map(|line| line.strip_prefix("model name")).map(|name| name.trim_start_matches([' ', '\t', ':']).to_string())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    let cpus = std::thread::available_parallelism().map_or(0, |count| count.get());
    let memory = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|info| info.lines().next().and_then(|line| line.split_whitespace().nth(1)).and_then(|kib| kib.parse::<f64>().ok()))
        .map_or("?".into(), |kib| format!("{:.0} GiB", kib / 1024.0 / 1024.0));
    let device = device_stat
        .and_then(|stat| stat.parent())
        .and_then(|device| device.file_name())
        .map_or("?".into(), |name| name.to_string_lossy().into_owned());
    format!("Linux {}, {cpus} × {cpu}, {memory} RAM; {} on block device {device}", kernel.trim(), filesystem_name(dir))
}

fn save_section(report: &mut Report, title: &str, comparison: &Comparison, metrics: &[Metric]) {
    report.section(&format!(
        "## {title}\n\n{} saves per run, {} thread(s), {} × {} B entries per save; median [min–max] over {} rounds.\n\n{}\nsegstore against the limit and the best peer (medians of per-round ratios):\n\n{}",
        comparison.spec.saves,
        comparison.spec.threads,
        comparison.spec.entries_per_save,
        comparison.spec.entry_data_bytes,
        comparison.runs[0].len(),
        comparison.table(metrics).markdown(),
        comparison.ratio_table(metrics).markdown(),
    ));
}

/// segstore ÷ the named contender (or the limit/best peer) for a metric.
fn ours_versus(comparison: &Comparison, other: Option<usize>, metric: &Metric) -> f64 {
    match (comparison.index_of("segstore"), other) {
        (Some(ours), Some(other)) => comparison.ratio(ours, other, metric),
        _ => f64::NAN,
    }
}

fn median_of(comparison: &Comparison, name: &str, metric: &Metric) -> f64 {
    comparison.index_of(name).and_then(|index| comparison.spread(index, metric)).map_or(f64::NAN, |spread| spread.median)
}

fn recovery_section(report: &mut Report, comparison: &RecoveryComparison, spec: &RecoverySpec) {
    let mut table = Table::new(["engine", "cold open + read", "warm open + read", "peak RSS (warm)", "device bytes read (cold)"]);
    let show = |runs: &[RecoveryRun], value: fn(&RecoveryRun) -> f64, format: fn(f64) -> String| {
        RecoveryComparison::spread(runs, value).map_or("n/a".to_string(), |spread: Spread| spread.show(format))
    };
    for (index, name) in comparison.names.iter().enumerate() {
        table.row([
            name.clone(),
            show(&comparison.cold[index], |run| run.seconds, stats::seconds),
            show(&comparison.warm[index], |run| run.seconds, stats::seconds),
            show(&comparison.warm[index], |run| run.peak_rss_bytes, stats::mebibytes),
            show(&comparison.cold[index], |run| run.device_read_bytes, stats::mebibytes),
        ]);
    }
    let note = comparison.cold_skipped.as_ref().map_or(String::new(), |reason| format!("\nCold reads were skipped: {reason}.\n"));
    report.section(&format!(
        "## W4: reopen and read back {} entries × {} B ({:.2} GiB of entry data)\n\nEach engine's log was written once ({} entries per durable save); every read is a new process that opens the log and reads every entry, timed inside the process; `cold` follows `sync; echo 3 > /proc/sys/vm/drop_caches`, `warm` runs right after it. segstore opens with `Storage::open_replaying`, which hands over every entry during the scan that opens the log; the row below it opens, then reads with `for_each_entry` (two passes). The raw read is segstore's segment files read front to back with 1 MiB reads. Peak RSS is the child's own `VmHWM`.\n\n{}{note}",
        spec.entries,
        spec.entry_data_bytes,
        (spec.entries * spec.entry_data_bytes as u64) as f64 / (1u64 << 30) as f64,
        spec.entries_per_save,
        table.markdown()
    ));
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let raw_read = RawRead;
    let segstore_recovery = SegstoreRecovery { two_pass: false };
    let segstore_two_pass = SegstoreRecovery { two_pass: true };
    if let Some(Child::ChildRead { key, dir }) = &cli.child {
        let contenders: [&dyn RecoveryContender; 5] = [&segstore_recovery, &segstore_two_pass, &raw_read, &RaftEnginePeer, &OkaywalPeer];
        recovery::child_read(&contenders, key, dir)?;
        // Skip teardown: what is measured is open + read, and the parent waits for exit.
        std::process::exit(0);
    }
    anyhow::ensure!(cli.rounds >= 1, "--rounds must be at least 1");
    let wants = |workload: &str| cli.only.iter().any(|wanted| wanted.eq_ignore_ascii_case(workload));
    std::fs::create_dir_all(&cli.dir)?;
    let dir = cli.dir.canonicalize()?;
    let scratch = tempfile::Builder::new().prefix("scratch-").tempdir_in(&dir)?;
    let device_stat = device_stat_path(&dir);
    if is_tmpfs(&dir) {
        eprintln!("warning: {} is on tmpfs; durable figures mean nothing there", dir.display());
    }
    let scale = Scale { quick: cli.quick };
    let etcd = etcd_binary(&cli).map(EtcdPeer::new);
    let segstore = Segstore::new(SyncMode::Msync).with_segment_size_bytes(cli.segment_mib << 20);
    let pwrite = RawLimit::new(RawSync::PwriteFdatasync);
    let msync = RawLimit::new(RawSync::MmapMsync);
    let raft_engine = RaftEnginePeer;
    let okaywal = OkaywalPeer;
    let mut peers: Vec<&dyn Contender> = vec![&raft_engine, &okaywal];
    if let Ok(etcd) = &etcd {
        peers.push(etcd);
    }
    let with_limits = |threads: usize| -> Vec<&dyn Contender> {
        let mut all: Vec<&dyn Contender> = vec![&segstore, &pwrite];
        if threads == 1 {
            all.push(&msync);
        }
        all.extend(peers.iter().copied());
        all
    };
    let engine_names: Vec<String> =
        with_limits(1).iter().map(|contender| contender.name().to_string()).chain(["raw sequential read".to_string()]).collect();

    let progress = ProgressBar::new_spinner();
    progress.set_style(ProgressStyle::with_template("{spinner} {elapsed_precise} {msg}").expect("valid template"));
    progress.enable_steady_tick(std::time::Duration::from_millis(200));
    let mut report = Report::new();
    let mut plot_bars = Vec::new();
    let mut distributions = Vec::new();

    let w1 = save_spec(scale.saves(5000), 1, 256, 1);
    let w2 = save_spec(scale.saves(1000), 64, 1024, 1);
    let w3 = save_spec(scale.saves(20_000), 1, 256, 8);
    let w3_wide = save_spec(scale.saves(20_000), 1, 256, 64);
    let w6 = save_spec(scale.saves(80_000), 1, 256, 1);

    let run_among = |label: &str, spec: &SaveSpec, contenders: &[&dyn Contender]| -> anyhow::Result<Comparison> {
        let mut tick = |step: &str| progress.set_message(format!("{label}: {step}"));
        Comparison::run(contenders, spec, cli.rounds, scratch.path(), device_stat.as_deref(), &mut tick)
    };
    let run_saves = |label: &str, spec: &SaveSpec| run_among(label, spec, &with_limits(spec.threads));

    if wants("w1") {
        let comparison = run_saves("W1", &w1)?;
        save_section(
            &mut report,
            "W1: one writer, one 256 B entry per durable save",
            &comparison,
            &[P50, P99, P999, SAVES_PER_SECOND, DEVICE_BYTES_PER_SAVE],
        );
        let p50_to_limit = ours_versus(&comparison, comparison.limit(&P50), &P50);
        report.ratio_target("W1 p50 ≤ 1.10 × raw pwrite+fdatasync", p50_to_limit, |ratio| ratio <= 1.10);
        report.ratio_target(
            "W1 p50 below every peer (÷ best peer < 1)",
            ours_versus(&comparison, comparison.best_peer(&P50), &P50),
            |ratio| ratio < 1.0,
        );
        let device = median_of(&comparison, "segstore", &DEVICE_BYTES_PER_SAVE);
        report.target("device bytes per durable 256 B save ≤ 8 KiB", device, stats::kibibytes(device), |bytes| bytes <= 8192.0);
        distributions = (0..comparison.names.len())
            .map(|index| plot::Distribution { name: comparison.names[index].clone(), sorted_ns: comparison.all_latencies_ns(index) })
            .collect();
    }
    if wants("w2") {
        let comparison = run_saves("W2", &w2)?;
        save_section(
            &mut report,
            "W2: one writer, 64 × 1 KiB entries per durable save",
            &comparison,
            &[DATA_RATE, P50, P99, DEVICE_BYTES_PER_SAVE],
        );
        report.ratio_target(
            "W2 ≥ 0.85 × raw 64 KiB pwrite+fdatasync bandwidth",
            ours_versus(&comparison, comparison.index_of(pwrite.name()), &DATA_RATE),
            |ratio| ratio >= 0.85,
        );
        plot_bars.push(bars(&comparison, "W2: 64 × 1 KiB per durable save", "MB/s of entry data", &DATA_RATE, 1e-6));

        // Not one of the workloads: W2 as a Raft server runs it, with its other
        // threads busy. etcd's wal runs in a process of its own, which the busy thread
        // would not share, so it is left out.
        let busy = SaveSpec { busy_threads: 1, ..w2.clone() };
        let comparison = run_among("W2 with a busy thread", &busy, &[&segstore, &pwrite, &msync, &raft_engine, &okaywal])?;
        let metrics = [DATA_RATE, P50, P99, DEVICE_BYTES_PER_SAVE];
        report.section(&format!(
            "## W2 with a busy thread\n\nW2's saves while one more thread of the same process computes without pause, as a Raft server's other threads (network, apply) do between its saves. Not a target of its own: it shows what a sync costs when other CPUs run the process. A sync writes back every page it covers; the kernel write-protects each page of a mapping as it cleans it, and every CPU running a thread of the process must then flush that page from its TLB (an interrupt per page). segstore drops the pages from its page tables before it syncs (one flush for the range). etcd's wal is left out: it runs in a process of its own, where the busy thread is not. Median [min–max] over {} rounds.\n\n{}\nsegstore against the limit and the best peer (medians of per-round ratios):\n\n{}",
            comparison.runs[0].len(),
            comparison.table(&metrics).markdown(),
            comparison.ratio_table(&metrics).markdown(),
        ));
    }
    if wants("w3") {
        for (spec, label) in [(&w3, "8"), (&w3_wide, "64")] {
            let comparison = run_saves(&format!("W3 {label} threads"), spec)?;
            save_section(
                &mut report,
                &format!("W3: {label} writer threads, one 256 B entry per durable save"),
                &comparison,
                &[SAVES_PER_SECOND, P50, P99, DEVICE_BYTES_PER_SAVE],
            );
            let best = comparison.best_peer(&SAVES_PER_SECOND);
            report.ratio_target(
                &format!("W3 {label} threads saves/s ≥ 2 × best peer"),
                ours_versus(&comparison, best, &SAVES_PER_SECOND),
                |ratio| ratio >= 2.0,
            );
            report.ratio_target(
                &format!("W3 {label} threads p99 below every peer (÷ best peer < 1)"),
                ours_versus(&comparison, comparison.best_peer(&P99), &P99),
                |ratio| ratio < 1.0,
            );
            plot_bars.push(bars(
                &comparison,
                &format!("W3: {label} threads × 256 B durable saves"),
                "thousand saves/s",
                &SAVES_PER_SECOND,
                1e-3,
            ));
        }
    }
    if wants("w4") {
        let spec = RecoverySpec { entries: if cli.quick { 262_144 } else { 2_097_152 }, entry_data_bytes: 512, entries_per_save: 256 };
        let mut contenders: Vec<&dyn RecoveryContender> = vec![&segstore_recovery, &segstore_two_pass, &raw_read, &raft_engine, &okaywal];
        if let Ok(etcd) = &etcd {
            contenders.push(etcd);
        }
        let mut tick = |step: &str| progress.set_message(format!("W4: {step}"));
        let comparison = recovery::run_recovery(&contenders, &spec, cli.rounds, &dir, device_stat.as_deref(), &mut tick)?;
        recovery_section(&mut report, &comparison, &spec);
        let ours = comparison.index_of("segstore").expect("segstore is a W4 contender");
        let versus = |other: &str, runs: fn(&RecoveryComparison) -> &Vec<Vec<RecoveryRun>>, value: fn(&RecoveryRun) -> f64| {
            comparison
                .index_of(other)
                .map_or(f64::NAN, |other| RecoveryComparison::ratio(&runs(&comparison)[ours], &runs(&comparison)[other], value))
        };
        report.ratio_target("W4 cold ≤ 1.0 × raft-engine", versus("raft-engine", |c| &c.cold, |run| run.seconds), |ratio| ratio <= 1.0);
        report.ratio_target(
            "W4 cold ≤ 1.2 × raw sequential read",
            versus("raw sequential read", |c| &c.cold, |run| run.seconds),
            |ratio| ratio <= 1.2,
        );
        report.ratio_target("W4 peak RSS ≤ 0.25 × raft-engine", versus("raft-engine", |c| &c.warm, |run| run.peak_rss_bytes), |ratio| {
            ratio <= 0.25
        });
        let runs = if comparison.cold_skipped.is_none() { &comparison.cold } else { &comparison.warm };
        plot_bars.push(plot::Bars {
            title: format!("W4: reopen + read 1 GiB ({})", if comparison.cold_skipped.is_none() { "cold" } else { "warm" }),
            unit: "seconds".into(),
            bars: comparison
                .names
                .iter()
                .zip(runs)
                .map(|(name, runs)| {
                    (name.clone(), RecoveryComparison::spread(runs, |run| run.seconds).map_or(f64::NAN, |spread| spread.median))
                })
                .collect(),
        });
    }
    if wants("w5") {
        let mut tick = |step: &str| progress.set_message(format!("W5: {step}"));
        let payload_total_bytes = if cli.quick { 64 << 20 } else { 256 << 20 };
        let rows = nondurable::run_nondurable(payload_total_bytes, cli.rounds, scratch.path(), &mut tick)?;
        let mut table = Table::new(["record", "threads", "segstore records/s", "segstore GB/s", "memcpy GB/s", "segstore ÷ memcpy"]);
        for row in &rows {
            let show = |spread: Option<Spread>, format: fn(f64) -> String| spread.map_or("n/a".into(), |spread| spread.show(format));
            table.row([
                format!("{} B", row.payload_bytes),
                row.threads.to_string(),
                show(row.segstore_spread(|run| run.records_per_second), |value| format!("{:.2} M", value / 1e6)),
                show(row.segstore_spread(|run| run.bytes_per_second), |value| format!("{:.2}", value / 1e9)),
                show(row.memcpy_spread(|run| run.bytes_per_second), |value| format!("{:.2}", value / 1e9)),
                stats::ratio(row.ratio_to_memcpy()),
            ]);
        }
        report.section(&format!(
            "## W5: non-durable appends\n\n{} MiB of payload per run into one `Log` with `SyncMode::None`, against a memcpy of the same payloads into a pre-faulted heap buffer of the same size, both from one 64-byte-aligned payload and the reference into 64-byte-aligned regions (the C library's copy of a few KiB runs at half speed on this CPU when source and destination differ mod 32); median [min–max] over {} rounds. The peers are not run here: none of them has a log write that skips the sync in the same sense.\n\n{}",
            payload_total_bytes >> 20,
            cli.rounds,
            table.markdown()
        ));
        let one_thread = |payload: usize| rows.iter().find(|row| row.payload_bytes == payload && row.threads == 1).expect("1-thread rows");
        report.ratio_target("W5 4 KiB records, 1 thread ≥ 0.7 × memcpy bandwidth", one_thread(4096).ratio_to_memcpy(), |ratio| {
            ratio >= 0.7
        });
        let records = one_thread(64).segstore_spread(|run| run.records_per_second).map_or(f64::NAN, |spread| spread.median);
        report.target("W5 64 B records, 1 thread ≥ 5 M records/s", records, format!("{:.2} M/s", records / 1e6), |value| value >= 5e6);
    }
    if wants("w6") {
        let mut tick = |step: &str| progress.set_message(format!("W6: {step}"));
        let comparison = cuts::run_cuts(&w6, cli.rounds, scratch.path(), device_stat.as_deref(), &mut tick)?;
        let reference = comparison.limit(&P999).expect("the no-cut run");
        let mut table = Table::new(["run", "p50", "p99", "p99.9", "max", "p99.9 ÷ no cuts"]);
        for index in 0..comparison.names.len() {
            let show = |metric: &Metric| comparison.spread(index, metric).map_or("n/a".into(), |spread| spread.show(metric.format));
            table.row([
                comparison.names[index].clone(),
                show(&P50),
                show(&P99),
                show(&P999),
                show(&MAX),
                stats::ratio(comparison.ratio(index, reference, &P999)),
            ]);
        }
        report.section(&format!(
            "## W6: durable 256 B saves across Cuts\n\n{} saves per run, one writer, msync, 21 cuts per run in the two runs that cut; median [min–max] over {} rounds. The cuts themselves are the slowest saves (see max); p99.9 says whether they slow down the saves around them.\n\n{}",
            w6.saves,
            cli.rounds,
            table.markdown()
        ));
        for index in (0..comparison.names.len()).filter(|&index| comparison.roles[index] == Role::Ours) {
            report.ratio_target(
                &format!("W6 p99.9 with Cuts ≤ 1.2 × without: {}", comparison.names[index]),
                comparison.ratio(index, reference, &P999),
                |ratio| ratio <= 1.2,
            );
        }
    }
    progress.finish_and_clear();

    let plot_name = if distributions.is_empty() && plot_bars.is_empty() {
        None
    } else {
        plot::draw(&cli.plot, &engine_names, "W1: durable 256 B saves, latency distribution (all rounds)", &distributions, &plot_bars)
            .context("draw the plot")?;
        Some(cli.plot.file_name().map_or("benchmarks.svg".into(), |name| name.to_string_lossy().into_owned()))
    };
    let etcd_note = match &etcd {
        Ok(_) => {
            "etcd's wal is etcd 3.4 from Debian's `golang-etcd-server-dev`, driven by the Go program in `bench/etcd-wal/`.".to_string()
        }
        Err(reason) => format!("etcd's wal was not run: {reason}."),
    };
    let preamble = format!(
        "# segstore benchmarks\n\nProduced by `cargo run --release -p segstore-bench -- {}` on {}.\n\n\
         Every figure is a median over rounds in which the engines take turns (the first one rotating each round), with [min–max] across rounds; ratios are medians of per-round ratios, so drift of the machine between rounds cancels out. Durable means acknowledged only after a sync. Device bytes count the whole block device (journal commits included, and any other process's writes). \
         Engines: segstore (msync; {} MiB segments in W1–W3), raft-engine {} (default `Config`, `write(batch, sync = true)`), okaywal {} (default configuration, one committed entry per save), and the disk's limits: `pwrite` + `fdatasync`, and `memcpy` into a shared mapping + `msync`, of the same bytes into a file zero-filled and synced beforehand. {etcd_note}\n",
        std::env::args().skip(1).collect::<Vec<_>>().join(" "),
        machine_description(&dir, device_stat.as_deref()),
        cli.segment_mib,
        "0.4.2",
        "0.3.1",
    );
    let markdown = report.render(&preamble, plot_name.as_deref());
    std::fs::write(&cli.output, &markdown).with_context(|| format!("write {}", cli.output.display()))?;
    println!("{}", report.targets_markdown());
    println!("wrote {} and {}", cli.output.display(), cli.plot.display());
    Ok(())
}

fn bars(comparison: &Comparison, title: &str, unit: &str, metric: &Metric, scale: f64) -> plot::Bars {
    plot::Bars {
        title: title.into(),
        unit: unit.into(),
        bars: (0..comparison.names.len())
            .map(|index| {
                (comparison.names[index].clone(), comparison.spread(index, metric).map_or(f64::NAN, |spread| spread.median * scale))
            })
            .collect(),
    }
}
