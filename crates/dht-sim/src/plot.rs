//! SVG plots of a provide run ([`write_plots`]): record holders over the cycle, requests per
//! minute by type, how far behind its schedule the provider was, and its memory; drawn with
//! plotters' SVG backend from [`ProvideReport::holder_samples`](crate::provide::PhaseReport)
//! and [`ProvideReport::timeline`].

use std::path::{Path, PathBuf};

use plotters::{coord::Shift, prelude::*};

use crate::{
    SimError,
    provide::{ProvideReport, TimelineSample},
};

/// The plots [`write_plots`] writes, by file name.
pub const PLOTS: [&str; 4] = ["holders.svg", "requests.svg", "behind.svg", "memory.svg"];

const SIZE: (u32, u32) = (960, 720);
const STARTED: &str = "hours since the provider started";
const CYCLE: &str = "hours since the reprovide cycle started";
const MIB: f64 = 1024.0 * 1024.0;

/// One line: its name, colour and points (hours, value).
struct Line {
    name: &'static str,
    color: RGBColor,
    points: Vec<(f64, f64)>,
}

/// Writes the four [`PLOTS`] of `report` into `dir` (created if needed); returns their paths.
/// Record holders are plotted from the reprovide cycle's samples (none when servers only
/// count records); the other three from [`ProvideReport::timeline`].
///
/// # Errors
/// [`SimError::Plot`] if a file cannot be written.
pub fn write_plots(report: &ProvideReport, dir: &Path) -> Result<Vec<PathBuf>, SimError> {
    std::fs::create_dir_all(dir).map_err(|e| plot_error(dir, e))?;
    let hours = |secs: u64| secs as f64 / 3600.0;
    let samples = report
        .reprovide
        .as_ref()
        .map(|r| r.holder_samples.as_slice())
        .unwrap_or_default();
    let holders = vec![
        Line {
            name: "mean holders",
            color: BLUE,
            points: samples
                .iter()
                .map(|s| (hours(s.at_secs), s.mean_holders))
                .collect(),
        },
        Line {
            name: "5th percentile",
            color: RED,
            points: samples
                .iter()
                .filter_map(|s| s.p5_holders.map(|p| (hours(s.at_secs), p as f64)))
                .collect(),
        },
    ];
    let t = &report.timeline;
    let series = |f: fn(&TimelineSample) -> Option<f64>| -> Vec<(f64, f64)> {
        t.iter()
            .filter_map(|s| f(s).map(|v| (hours(s.at_secs), v)))
            .collect()
    };
    let line = |name, color, f| Line {
        name,
        color,
        points: series(f),
    };
    let paths: Vec<PathBuf> = PLOTS.iter().map(|name| dir.join(name)).collect();
    let holders_title = if samples.is_empty() {
        "Record holders of the true 20 closest (no samples: servers only counted records)"
    } else {
        "Record holders of the true 20 closest, over the reprovide cycle"
    };
    draw(&paths[0], holders_title, (CYCLE, "holders"), &[holders])?;
    draw(
        &paths[1],
        "Requests sent per minute",
        (STARTED, "per minute"),
        &[
            vec![line("FIND_NODE", BLUE, |s| Some(s.find_node as f64))],
            vec![line("ADD_PROVIDER", RED, |s| Some(s.add_provider as f64))],
            vec![line("other", GREEN, |s| Some(s.other as f64))],
        ],
    )?;
    draw(
        &paths[2],
        "Behind schedule",
        (STARTED, ""),
        &[
            vec![line("behind schedule (s)", RED, |s| {
                Some(s.behind_schedule_secs as f64)
            })],
            vec![line("keys waiting for a first provide", BLUE, |s| {
                Some(s.keys_queued as f64)
            })],
        ],
    )?;
    draw(
        &paths[3],
        "The provider's memory (MiB)",
        (STARTED, "MiB"),
        &[vec![
            line("heap above its start", BLUE, |s| {
                s.heap_bytes.map(|b| b as f64 / MIB)
            }),
            line("RocksDB", RED, |s| s.store_bytes.map(|b| b as f64 / MIB)),
            line("together", BLACK, |s| {
                s.heap_bytes
                    .or(s.store_bytes)
                    .map(|_| (s.heap_bytes.unwrap_or(0) + s.store_bytes.unwrap_or(0)) as f64 / MIB)
            }),
        ]],
    )?;
    Ok(paths)
}

/// Draws one chart per entry of `charts`, stacked, into an SVG file at `path`.
fn draw(
    path: &Path,
    title: &str,
    desc: (&str, &str),
    charts: &[Vec<Line>],
) -> Result<(), SimError> {
    let err = |e| plot_error(path, e);
    let root = SVGBackend::new(path, SIZE).into_drawing_area();
    root.fill(&WHITE).map_err(err)?;
    let root = root.titled(title, ("sans-serif", 20)).map_err(err)?;
    let areas = root.split_evenly((charts.len().max(1), 1));
    for (area, lines) in areas.iter().zip(charts) {
        chart(area, desc, lines).map_err(err)?;
    }
    root.present().map_err(err)
}

fn plot_error(path: &Path, source: impl std::error::Error + Send + Sync + 'static) -> SimError {
    SimError::Plot {
        path: path.to_path_buf(),
        source: dht_proto::SharedError::new(source),
    }
}

fn chart(
    area: &DrawingArea<SVGBackend<'_>, Shift>,
    (x_desc, y_desc): (&str, &str),
    lines: &[Line],
) -> Result<(), DrawingAreaErrorKind<std::io::Error>> {
    let all = || lines.iter().flat_map(|l| l.points.iter());
    let x_max = all().map(|p| p.0).fold(0.0, f64::max).max(1.0 / 60.0);
    let y_max = all().map(|p| p.1).fold(0.0, f64::max).max(1.0) * 1.05;
    let mut chart = ChartBuilder::on(area)
        .margin(10)
        .x_label_area_size(35)
        .y_label_area_size(70)
        .build_cartesian_2d(0.0..x_max, 0.0..y_max)?;
    chart
        .configure_mesh()
        .x_desc(x_desc)
        .y_desc(y_desc)
        .draw()?;
    for l in lines {
        let color = l.color;
        chart
            .draw_series(LineSeries::new(l.points.iter().copied(), color))?
            .label(l.name)
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], color));
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperRight)
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()?;
    Ok(())
}
