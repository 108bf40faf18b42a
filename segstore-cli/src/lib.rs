//! The workloads behind `segstore bench` and the peer benchmark: durable Raft saves
//! driven from one or many threads, the raw limits of the disk they run on, and the
//! statistics and tables that put the two side by side.
//!
//! Every durable figure is measured next to a reference in the same run, because
//! absolute times drift on shared machines while ratios of interleaved rounds hold.

pub mod comparison;
pub mod contender;
pub mod io_counters;
pub mod raw_limit;
pub mod segstore_contender;
pub mod stats;
pub mod table;
pub mod workload;
