//! `segstore`: the command-line companion of the segstore library.
//!
//! `segstore bench` measures durable Raft saves on a directory of the user's choice,
//! next to the raw limit of the same disk measured in the same run.

use std::path::{Path, PathBuf};

use anyhow::Context;
use clap::{Args, Parser, Subcommand, ValueEnum};
use indicatif::{ProgressBar, ProgressStyle};
use segstore::SyncMode;
use segstore_cli::comparison::{Comparison, Metric, DATA_RATE, DEVICE_BYTES_PER_SAVE, P50, P99, P999, SAVES_PER_SECOND};
use segstore_cli::contender::Contender;
use segstore_cli::io_counters::{device_stat_path, filesystem_name, is_tmpfs};
use segstore_cli::raw_limit::{RawLimit, RawSync};
use segstore_cli::segstore_contender::Segstore;
use segstore_cli::workload::SaveSpec;

#[derive(Parser)]
#[command(name = "segstore", version, about = "Tools for segstore logs")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Measure durable saves on a disk, next to its raw pwrite+fdatasync limit.
    Bench(BenchArgs),
}

#[derive(Args)]
struct BenchArgs {
    /// Where to run: a temporary directory is made inside it and removed afterwards.
    #[arg(long, default_value = ".")]
    dir: PathBuf,
    /// Rounds per workload; the contenders take turns within each round.
    #[arg(long, default_value_t = 3)]
    rounds: usize,
    /// Fewer saves per run: a first look in a few seconds.
    #[arg(long)]
    quick: bool,
    /// How segstore makes saves durable.
    #[arg(long, value_enum, default_value_t = SyncArg::Msync)]
    sync: SyncArg,
    /// Also write the tables as Markdown to this file.
    #[arg(long)]
    markdown: Option<PathBuf>,
}

#[derive(Clone, Copy, ValueEnum)]
enum SyncArg {
    Msync,
    Fdatasync,
}

struct Workload {
    title: &'static str,
    spec: SaveSpec,
    metrics: &'static [Metric],
}

fn workloads(quick: bool) -> Vec<Workload> {
    let scale = |full: usize| if quick { full / 4 } else { full };
    vec![
        Workload {
            title: "one writer, one 256 B entry per durable save",
            spec: SaveSpec::new(scale(2000), 1, 256, 1, 20),
            metrics: &[P50, P99, P999, SAVES_PER_SECOND, DEVICE_BYTES_PER_SAVE],
        },
        Workload {
            title: "one writer, 64 × 1 KiB entries per durable save",
            spec: SaveSpec::new(scale(400), 64, 1024, 1, 10),
            metrics: &[DATA_RATE, P50, P99, DEVICE_BYTES_PER_SAVE],
        },
        Workload {
            title: "8 writer threads, one 256 B entry per durable save",
            spec: SaveSpec::new(scale(8000), 1, 256, 8, 20),
            metrics: &[SAVES_PER_SECOND, P50, P99, DEVICE_BYTES_PER_SAVE],
        },
    ]
}

fn bench(args: &BenchArgs) -> anyhow::Result<()> {
    anyhow::ensure!(args.rounds >= 1, "--rounds must be at least 1");
    std::fs::create_dir_all(&args.dir).with_context(|| format!("create {}", args.dir.display()))?;
    let scratch = tempfile::Builder::new().prefix(".segstore-bench-").tempdir_in(&args.dir).context("create a scratch directory")?;
    let device_stat = device_stat_path(scratch.path());
    let sync_mode = match args.sync {
        SyncArg::Msync => SyncMode::Msync,
        SyncArg::Fdatasync => SyncMode::Fdatasync,
    };
    let segstore = Segstore::new(sync_mode);
    let pwrite = RawLimit::new(RawSync::PwriteFdatasync);
    let msync = RawLimit::new(RawSync::MmapMsync);

    let mut report = header(scratch.path(), device_stat.as_deref(), args.rounds);
    if is_tmpfs(scratch.path()) {
        report.push_str("\nWarning: this directory is on tmpfs, where a sync costs nothing: the figures say nothing about a disk.\n");
    }
    eprint!("{report}");
    let workloads = workloads(args.quick);
    let contenders_of = |spec: &SaveSpec| -> Vec<&dyn Contender> {
        if spec.threads == 1 {
            vec![&segstore, &pwrite, &msync]
        } else {
            vec![&segstore, &pwrite]
        }
    };
    let total_runs: usize = workloads.iter().map(|workload| contenders_of(&workload.spec).len() * args.rounds).sum();
    let progress = ProgressBar::new(total_runs as u64);
    progress.set_style(ProgressStyle::with_template("{bar:32} {pos}/{len} runs  {elapsed}  {msg}").expect("valid template"));
    for (number, workload) in workloads.iter().enumerate() {
        let mut before_run = |label: &str| {
            progress.set_message(format!("W{}: {label}", number + 1));
            progress.inc(1);
        };
        let comparison = Comparison::run(
            &contenders_of(&workload.spec),
            &workload.spec,
            args.rounds,
            scratch.path(),
            device_stat.as_deref(),
            &mut before_run,
        )?;
        let section = format!(
            "\n## W{}: {} ({} saves per run)\n\n{}\n{}",
            number + 1,
            workload.title,
            workload.spec.saves,
            comparison.table(workload.metrics).text(),
            ratio_lines(&comparison, workload.metrics)
        );
        progress.suspend(|| print!("{section}"));
        report.push_str(&section);
    }
    progress.finish_and_clear();
    println!("\nEach figure is the median [min–max] over {} rounds; ratios are medians of per-round ratios.", args.rounds);
    if let Some(path) = &args.markdown {
        std::fs::write(path, report).with_context(|| format!("write {}", path.display()))?;
    }
    Ok(())
}

fn header(dir: &Path, device_stat: Option<&Path>, rounds: usize) -> String {
    let device = device_stat
        .and_then(|stat| stat.parent())
        .and_then(|device| std::fs::read_to_string(device.join("uevent")).ok())
        .and_then(|uevent| uevent.lines().find_map(|line| line.strip_prefix("DEVNAME=")).map(str::to_string))
        .unwrap_or_else(|| "unknown device".into());
    format!("# segstore bench\n\nDirectory {} ({}, {device}); {rounds} rounds per workload.\n", dir.display(), filesystem_name(dir))
}

/// "segstore p50: 1.04× raw pwrite+fdatasync" for each metric with a limit.
fn ratio_lines(comparison: &Comparison, metrics: &[Metric]) -> String {
    let ours = 0;
    let mut lines = String::new();
    for metric in metrics {
        if let Some(limit) = comparison.limit(metric) {
            let ratio = comparison.ratio(ours, limit, metric);
            if ratio.is_finite() {
                lines.push_str(&format!("{} {}: {ratio:.2}× {}\n", comparison.names[ours], metric.name, comparison.names[limit]));
            }
        }
    }
    lines
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match &cli.command {
        Command::Bench(args) => bench(args),
    }
}
