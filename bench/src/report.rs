//! BENCHMARKS.md: the machine, every workload's tables and the targets, each judged
//! from the figures of this run.

use segstore_cli::stats;
use segstore_cli::table::Table;

pub struct Report {
    sections: String,
    targets: Table,
}

impl Report {
    pub fn new() -> Report {
        Report { sections: String::new(), targets: Table::new(["target", "measured", "verdict"]) }
    }

    pub fn section(&mut self, markdown: &str) {
        self.sections.push_str(markdown);
        self.sections.push('\n');
    }

    /// A target with what was measured for it. A figure that could not be measured
    /// (NaN) is neither met nor missed.
    pub fn target(&mut self, name: &str, value: f64, measured: String, met: impl Fn(f64) -> bool) {
        let verdict = if !value.is_finite() {
            "not measured"
        } else if met(value) {
            "met"
        } else {
            "**missed**"
        };
        self.targets.row([name.to_string(), measured, verdict.to_string()]);
    }

    pub fn ratio_target(&mut self, name: &str, ratio: f64, met: impl Fn(f64) -> bool) {
        self.target(name, ratio, stats::ratio(ratio), met);
    }

    pub fn targets_markdown(&self) -> String {
        self.targets.markdown()
    }

    pub fn render(&self, preamble: &str, plot_file: Option<&str>) -> String {
        let mut out = String::from(preamble);
        if !self.targets.is_empty() {
            out.push_str("\n## Targets\n\n");
            out.push_str(&self.targets.markdown());
        }
        if let Some(plot) = plot_file {
            out.push_str(&format!("\n![latency distributions and throughput per engine]({plot})\n"));
        }
        out.push('\n');
        out.push_str(&self.sections);
        out
    }
}
