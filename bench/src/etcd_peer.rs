//! etcd's own `wal` package (etcd 3.4, as Debian packages it), driven by the Go program
//! in `bench/etcd-wal/`: each save is one `WAL.Save(hardState, entries)`, which
//! fdatasyncs before returning; threads share one WAL, as etcd has one per member.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::Context;
use segstore_cli::contender::{Contender, Role};
use segstore_cli::io_counters::WriteCounters;
use segstore_cli::workload::{SaveRun, SaveSpec};

use crate::recovery::{ReadBack, RecoveryContender};

pub struct EtcdPeer {
    binary: PathBuf,
}

impl EtcdPeer {
    pub fn new(binary: PathBuf) -> EtcdPeer {
        EtcdPeer { binary }
    }

    fn run(&self, args: &[String]) -> anyhow::Result<HashMap<String, String>> {
        let output = Command::new(&self.binary).args(args).output().with_context(|| format!("run {}", self.binary.display()))?;
        anyhow::ensure!(output.status.success(), "etcd-wal-bench {args:?} failed: {}", String::from_utf8_lossy(&output.stderr).trim());
        Ok(parse_report(&String::from_utf8_lossy(&output.stdout)))
    }
}

/// `key value...` lines into a map of key to the rest of the line.
pub fn parse_report(text: &str) -> HashMap<String, String> {
    text.lines().filter_map(|line| line.split_once(' ')).map(|(key, value)| (key.to_string(), value.trim().to_string())).collect()
}

fn number(report: &HashMap<String, String>, key: &str) -> anyhow::Result<u64> {
    report.get(key).with_context(|| format!("no {key} in the report"))?.parse().with_context(|| format!("{key} is not a number"))
}

fn path_arg(path: &Path) -> anyhow::Result<String> {
    path.to_str().map(str::to_string).context("non-UTF-8 path")
}

impl Contender for EtcdPeer {
    fn name(&self) -> &str {
        "etcd wal"
    }

    fn role(&self) -> Role {
        Role::Peer
    }

    fn run_saves(&self, dir: &Path, spec: &SaveSpec, device_stat: Option<&Path>) -> anyhow::Result<SaveRun> {
        let mut args: Vec<String> = vec!["save".into(), "-dir".into(), path_arg(dir)?];
        for (flag, value) in [
            ("-saves", spec.saves),
            ("-entries", spec.entries_per_save),
            ("-bytes", spec.entry_data_bytes),
            ("-threads", spec.threads),
            ("-warmup", spec.warmup_saves),
        ] {
            args.extend([flag.to_string(), value.to_string()]);
        }
        if let Some(stat) = device_stat {
            args.extend(["-device-stat".to_string(), path_arg(stat)?]);
        }
        let report = self.run(&args)?;
        let mut latencies_ns: Vec<u64> = report
            .get("latencies_ns")
            .context("no latencies in the report")?
            .split_whitespace()
            .map(str::parse)
            .collect::<Result<_, _>>()
            .context("latencies are not numbers")?;
        anyhow::ensure!(latencies_ns.len() == spec.saves, "etcd-wal-bench reported {} saves, not {}", latencies_ns.len(), spec.saves);
        latencies_ns.sort_unstable();
        Ok(SaveRun {
            latencies_ns,
            elapsed_ns: number(&report, "elapsed_ns")?,
            written: WriteCounters {
                process: number(&report, "proc_write_bytes").ok(),
                device: number(&report, "device_write_bytes").ok(),
            },
            data_bytes_per_save: spec.data_bytes_per_save(),
        })
    }
}

impl RecoveryContender for EtcdPeer {
    fn name(&self) -> &str {
        "etcd wal"
    }

    fn key(&self) -> &str {
        "etcd"
    }

    fn write(&self, dir: &Path, entries: u64, entry_data_bytes: usize, entries_per_save: usize) -> anyhow::Result<()> {
        let args = ["write", "-dir", &path_arg(dir)?, "-entries", &entries.to_string(), "-bytes", &entry_data_bytes.to_string()]
            .into_iter()
            .map(str::to_string)
            .chain(["-per-save".to_string(), entries_per_save.to_string()])
            .collect::<Vec<_>>();
        let report = self.run(&args)?;
        anyhow::ensure!(number(&report, "entries")? == entries, "etcd-wal-bench wrote {report:?}");
        Ok(())
    }

    fn read(&self, _dir: &Path) -> anyhow::Result<ReadBack> {
        anyhow::bail!("etcd's wal is read back by its own program: see read_command")
    }

    fn read_command(&self, dir: &Path) -> anyhow::Result<Command> {
        let mut command = Command::new(&self.binary);
        command.args(["read", "-dir", &path_arg(dir)?]);
        Ok(command)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reports_parse_into_keys_and_values() {
        let report = parse_report("saves 3\nlatencies_ns 5 1 2\nelapsed_ns 99\n");
        assert_eq!(number(&report, "saves").unwrap(), 3);
        assert_eq!(report["latencies_ns"], "5 1 2");
        assert!(number(&report, "device_write_bytes").is_err());
    }
}
