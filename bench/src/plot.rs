//! The figure of BENCHMARKS.md: W1's latency distributions and the throughput and
//! recovery bars of every engine, as one SVG.

use std::path::Path;

use plotters::prelude::*;

/// One bar chart: a title, a unit and (engine, median) bars.
pub struct Bars {
    pub title: String,
    pub unit: String,
    pub bars: Vec<(String, f64)>,
}

/// One latency distribution: an engine's sorted latencies in nanoseconds.
pub struct Distribution {
    pub name: String,
    pub sorted_ns: Vec<u64>,
}

const PALETTE: [RGBColor; 8] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(214, 39, 40),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
    RGBColor(227, 119, 194),
    RGBColor(127, 127, 127),
];

fn color_of(names: &[String], name: &str) -> RGBColor {
    PALETTE[names.iter().position(|candidate| candidate == name).unwrap_or(0) % PALETTE.len()]
}

pub fn draw(
    path: &Path,
    engines: &[String],
    latency_title: &str,
    distributions: &[Distribution],
    bar_charts: &[Bars],
) -> anyhow::Result<()> {
    let panels = 1 + bar_charts.len();
    let rows = panels.div_ceil(2) as u32;
    let root = SVGBackend::new(path, (1200, 420 * rows)).into_drawing_area();
    root.fill(&WHITE)?;
    let areas = root.split_evenly((rows as usize, 2));
    draw_distributions(&areas[0], engines, latency_title, distributions)?;
    for (area, bars) in areas[1..].iter().zip(bar_charts) {
        draw_bars(area, engines, bars)?;
    }
    root.present()?;
    Ok(())
}

/// Latency (log scale) against the fraction of saves at or below it.
fn draw_distributions(
    area: &DrawingArea<SVGBackend, plotters::coord::Shift>,
    engines: &[String],
    title: &str,
    distributions: &[Distribution],
) -> anyhow::Result<()> {
    let all = distributions.iter().flat_map(|distribution| distribution.sorted_ns.iter().copied());
    let (low, high) = all.fold((u64::MAX, 0), |(low, high), value| (low.min(value), high.max(value)));
    if high == 0 {
        return Ok(());
    }
    let (low_us, high_us) = ((low as f64 / 1000.0 * 0.9).max(1.0), high as f64 / 1000.0 * 1.1);
    let mut chart = ChartBuilder::on(area)
        .caption(title, ("sans-serif", 18))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(50)
        .build_cartesian_2d((low_us..high_us).log_scale(), 0.0..1.0)?;
    chart.configure_mesh().x_desc("latency (µs, log scale)").y_desc("fraction of saves").draw()?;
    for distribution in distributions {
        let color = color_of(engines, &distribution.name);
        let count = distribution.sorted_ns.len() as f64;
        let step = (distribution.sorted_ns.len() / 2000).max(1);
        let points = distribution
            .sorted_ns
            .iter()
            .enumerate()
            .filter(|(rank, _)| rank % step == 0 || *rank + 1 == distribution.sorted_ns.len())
            .map(|(rank, &ns)| (ns as f64 / 1000.0, (rank + 1) as f64 / count));
        chart
            .draw_series(LineSeries::new(points, color.stroke_width(2)))?
            .label(distribution.name.clone())
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2)));
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::LowerRight)
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()?;
    Ok(())
}

fn draw_bars(area: &DrawingArea<SVGBackend, plotters::coord::Shift>, engines: &[String], bars: &Bars) -> anyhow::Result<()> {
    let bars_drawn: Vec<&(String, f64)> = bars.bars.iter().filter(|(_, value)| value.is_finite()).collect();
    let top = bars_drawn.iter().map(|(_, value)| *value).fold(0.0, f64::max) * 1.15;
    if bars_drawn.is_empty() || top <= 0.0 {
        return Ok(());
    }
    let count = bars_drawn.len();
    let mut chart = ChartBuilder::on(area)
        .caption(&bars.title, ("sans-serif", 18))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(60)
        .build_cartesian_2d(0.0..count as f64, 0.0..top)?;
    let names: Vec<String> = bars_drawn.iter().map(|(name, _)| name.clone()).collect();
    chart
        .configure_mesh()
        .disable_x_mesh()
        .x_labels(count * 2 + 1)
        .x_label_formatter(&|x| {
            let slot = *x - 0.5;
            if slot >= 0.0 && slot.fract().abs() < 1e-6 {
                names.get(slot as usize).cloned().unwrap_or_default()
            } else {
                String::new()
            }
        })
        .y_desc(bars.unit.as_str())
        .draw()?;
    chart.draw_series(bars_drawn.iter().enumerate().map(|(slot, (name, value))| {
        let color = color_of(engines, name);
        Rectangle::new([(slot as f64 + 0.15, 0.0), (slot as f64 + 0.85, *value)], color.filled())
    }))?;
    Ok(())
}
