//! Contenders measured side by side on one save workload: rounds that take turns
//! (the first contender rotating every round), then every figure as median [min–max]
//! and as paired ratios to the disk's limit and to the best peer.

use std::path::Path;

use crate::contender::{Contender, Role};
use crate::stats::{self, paired_ratio, Spread};
use crate::table::Table;
use crate::workload::{SaveRun, SaveSpec};

/// One figure of a save run.
#[derive(Clone, Copy)]
pub struct Metric {
    pub name: &'static str,
    pub higher_is_better: bool,
    pub value: fn(&SaveRun) -> f64,
    pub format: fn(f64) -> String,
}

pub const P50: Metric = Metric { name: "p50", higher_is_better: false, value: |run| run.latency_ns(0.50), format: stats::micros };
pub const P99: Metric = Metric { name: "p99", higher_is_better: false, value: |run| run.latency_ns(0.99), format: stats::micros };
pub const P999: Metric = Metric { name: "p99.9", higher_is_better: false, value: |run| run.latency_ns(0.999), format: stats::micros };
pub const MAX: Metric = Metric { name: "max", higher_is_better: false, value: |run| run.latency_ns(1.0), format: stats::micros };
pub const SAVES_PER_SECOND: Metric =
    Metric { name: "saves/s", higher_is_better: true, value: SaveRun::saves_per_second, format: stats::thousands_per_second };
pub const DATA_RATE: Metric =
    Metric { name: "entry data", higher_is_better: true, value: SaveRun::data_bytes_per_second, format: stats::megabytes_per_second };
pub const DEVICE_BYTES_PER_SAVE: Metric =
    Metric { name: "device bytes/save", higher_is_better: false, value: SaveRun::device_bytes_per_save, format: stats::kibibytes };

/// The order in which `contenders` take turns over `rounds`: `(round, contender)`, each
/// round starting one contender later than the one before, so that drift in the
/// machine's state (a cache, a disk's background work) does not favour one of them.
pub fn turns(rounds: usize, contenders: usize) -> impl Iterator<Item = (usize, usize)> {
    (0..rounds).flat_map(move |round| (0..contenders).map(move |turn| (round, (round + turn) % contenders)))
}

pub struct Comparison {
    pub spec: SaveSpec,
    pub names: Vec<String>,
    pub roles: Vec<Role>,
    /// `runs[contender][round]`.
    pub runs: Vec<Vec<SaveRun>>,
}

impl Comparison {
    /// Runs `spec` for every contender, `rounds` times, each run in a new directory
    /// under `scratch` that is removed afterwards. `before_run(label)` is called before
    /// each run (for a progress bar).
    pub fn run(
        contenders: &[&dyn Contender],
        spec: &SaveSpec,
        rounds: usize,
        scratch: &Path,
        device_stat: Option<&Path>,
        before_run: &mut dyn FnMut(&str),
    ) -> anyhow::Result<Comparison> {
        let mut runs: Vec<Vec<SaveRun>> = contenders.iter().map(|_| Vec::with_capacity(rounds)).collect();
        for (round, index) in turns(rounds, contenders.len()) {
            let contender = contenders[index];
            before_run(&format!("round {}/{rounds}: {}", round + 1, contender.name()));
            let dir = scratch.join(format!("run-{round}-{index}"));
            let run =
                contender.run_saves(&dir, spec, device_stat).map_err(|error| error.context(format!("{} failed", contender.name())))?;
            std::fs::remove_dir_all(&dir).ok();
            runs[index].push(run);
        }
        Ok(Comparison {
            spec: spec.clone(),
            names: contenders.iter().map(|contender| contender.name().to_string()).collect(),
            roles: contenders.iter().map(|contender| contender.role()).collect(),
            runs,
        })
    }

    /// A metric's value in every round, for one contender.
    pub fn values(&self, contender: usize, metric: &Metric) -> Vec<f64> {
        self.runs[contender].iter().map(metric.value).collect()
    }

    pub fn spread(&self, contender: usize, metric: &Metric) -> Option<Spread> {
        Spread::of(&self.values(contender, metric))
    }

    pub fn index_of(&self, name: &str) -> Option<usize> {
        self.names.iter().position(|candidate| candidate == name)
    }

    /// The first limit that measured `metric`.
    pub fn limit(&self, metric: &Metric) -> Option<usize> {
        (0..self.names.len()).find(|&index| self.roles[index] == Role::Limit && self.spread(index, metric).is_some())
    }

    /// The peer with the best median of `metric`.
    pub fn best_peer(&self, metric: &Metric) -> Option<usize> {
        let peers = (0..self.names.len()).filter(|&index| self.roles[index] == Role::Peer);
        let medians = peers.filter_map(|index| Some((index, self.spread(index, metric)?.median)));
        if metric.higher_is_better {
            medians.max_by(|a, b| a.1.total_cmp(&b.1)).map(|(index, _)| index)
        } else {
            medians.min_by(|a, b| a.1.total_cmp(&b.1)).map(|(index, _)| index)
        }
    }

    /// Median of the per-round ratios `contender ÷ other` of `metric`.
    pub fn ratio(&self, contender: usize, other: usize, metric: &Metric) -> f64 {
        paired_ratio(&self.values(contender, metric), &self.values(other, metric))
    }

    /// Every latency of every round of one contender, sorted: for distribution plots.
    pub fn all_latencies_ns(&self, contender: usize) -> Vec<u64> {
        let mut all: Vec<u64> = self.runs[contender].iter().flat_map(|run| run.latencies_ns.iter().copied()).collect();
        all.sort_unstable();
        all
    }

    /// One row per contender: each metric as median [min–max].
    pub fn table(&self, metrics: &[Metric]) -> Table {
        let mut table = Table::new(std::iter::once("engine").chain(metrics.iter().map(|metric| metric.name)));
        for (index, name) in self.names.iter().enumerate() {
            let cells = metrics.iter().map(|metric| self.spread(index, metric).map_or("n/a".into(), |spread| spread.show(metric.format)));
            table.row(std::iter::once(name.clone()).chain(cells));
        }
        table
    }

    /// For each of our contenders and each metric: the median, its paired ratio to the
    /// limit and to the best peer of that metric.
    pub fn ratio_table(&self, metrics: &[Metric]) -> Table {
        let mut table = Table::new(["engine", "figure", "median", "÷ limit", "÷ best peer"]);
        for ours in (0..self.names.len()).filter(|&index| self.roles[index] == Role::Ours) {
            for metric in metrics {
                let Some(spread) = self.spread(ours, metric) else { continue };
                let versus = |other: Option<usize>| {
                    other.map_or("–".to_string(), |other| {
                        format!("{} ({})", stats::ratio(self.ratio(ours, other, metric)), self.names[other])
                    })
                };
                table.row([
                    self.names[ours].clone(),
                    metric.name.to_string(),
                    (metric.format)(spread.median),
                    versus(self.limit(metric)),
                    versus(self.best_peer(metric)),
                ]);
            }
        }
        table
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::workload::drive_saves;
    use std::cell::Cell;

    struct Sleeper {
        name: &'static str,
        role: Role,
        micros: u64,
    }

    impl Contender for Sleeper {
        fn name(&self) -> &str {
            self.name
        }
        fn role(&self) -> Role {
            self.role
        }
        fn run_saves(&self, dir: &Path, spec: &SaveSpec, device_stat: Option<&Path>) -> anyhow::Result<SaveRun> {
            std::fs::create_dir_all(dir)?;
            drive_saves(spec, device_stat, |_, _| {
                std::thread::sleep(std::time::Duration::from_micros(self.micros));
                Ok(())
            })
        }
    }

    #[test]
    fn turns_rotate_the_first_contender() {
        assert_eq!(turns(3, 2).collect::<Vec<_>>(), vec![(0, 0), (0, 1), (1, 1), (1, 0), (2, 0), (2, 1)]);
    }

    #[test]
    fn rounds_rotate_and_ratios_pick_the_limit_and_best_peer() {
        let scratch = tempfile::tempdir().unwrap();
        let ours = Sleeper { name: "ours", role: Role::Ours, micros: 2000 };
        let limit = Sleeper { name: "limit", role: Role::Limit, micros: 1000 };
        let slow = Sleeper { name: "slow peer", role: Role::Peer, micros: 8000 };
        let fast = Sleeper { name: "fast peer", role: Role::Peer, micros: 4000 };
        let spec = SaveSpec { saves: 10, entries_per_save: 1, entry_data_bytes: 1, threads: 1, warmup_saves: 0, busy_threads: 0 };
        let labels = Cell::new(Vec::new());
        let mut record = |label: &str| {
            let mut all = labels.take();
            all.push(label.to_string());
            labels.set(all);
        };
        let comparison = Comparison::run(&[&ours, &limit, &slow, &fast], &spec, 2, scratch.path(), None, &mut record).unwrap();
        let labels = labels.take();
        assert_eq!(labels[0], "round 1/2: ours");
        assert_eq!(labels[4], "round 2/2: limit");
        assert_eq!(comparison.limit(&P50), Some(1));
        assert_eq!(comparison.best_peer(&P50), Some(3));
        assert_eq!(comparison.best_peer(&SAVES_PER_SECOND), Some(3));
        let to_limit = comparison.ratio(0, 1, &P50);
        assert!((1.5..3.0).contains(&to_limit), "{to_limit}");
        let text = comparison.ratio_table(&[P50]).markdown();
        assert!(text.contains("(limit)") && text.contains("(fast peer)"), "{text}");
        assert!(comparison.table(&[P50, DEVICE_BYTES_PER_SAVE]).markdown().contains("n/a"));
        assert_eq!(std::fs::read_dir(scratch.path()).unwrap().count(), 0, "run directories are removed");
    }
}
