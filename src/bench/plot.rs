//! The report's SVG plots, drawn with plotters (SVG backend only, no fonts to load: the text
//! is left to the viewer).

use std::path::Path;

use plotters::prelude::*;

use super::report::Report;
use crate::error::{Error, Result};

const FONT: &str = "sans-serif";

fn plot_err(e: impl std::fmt::Display) -> Error {
    Error::backend("plotters", e.to_string())
}

/// A point of the latency-against-recall plot.
struct Point {
    label: String,
    ms: f64,
    recall: f64,
}

/// Search methods (median time of one labelled query against their recall@k) and the
/// vector index (graph search and exact scan against recall relative to the exact top k).
fn latency_points(report: &Report) -> (Vec<Point>, usize) {
    let mut points = Vec::new();
    let mut k = 10;
    for (method, ms) in &report.search_latency {
        let recall = report
            .quality
            .iter()
            .find(|r| r.task == "search" && &r.method == method && r.metric == "recall");
        if let Some(r) = recall {
            k = r.k;
            points.push(Point {
                label: format!("search {method}"),
                ms: *ms,
                recall: r.value,
            });
        }
    }
    if let Some(a) = &report.ann {
        points.push(Point {
            label: "ANN (HNSW) vs exact".to_string(),
            ms: a.hnsw_p50_ms,
            recall: a.recall,
        });
        points.push(Point {
            label: "exact scan".to_string(),
            ms: a.exact_p50_ms,
            recall: 1.0,
        });
    }
    (points, k)
}

/// Median latency (x) against recall@k (y).
pub(super) fn latency_recall(report: &Report, path: &Path) -> Result<()> {
    let (points, k) = latency_points(report);
    let root = SVGBackend::new(path, (900, 560)).into_drawing_area();
    root.fill(&WHITE).map_err(plot_err)?;
    let x_max = points.iter().map(|p| p.ms).fold(0.0, f64::max).max(1e-3) * 1.25;
    let mut chart = ChartBuilder::on(&root)
        .caption(
            format!("{}: latency against recall@{k}", report.dataset),
            (FONT, 20),
        )
        .margin(20)
        .x_label_area_size(40)
        .y_label_area_size(50)
        .build_cartesian_2d(0f64..x_max, 0f64..1.05)
        .map_err(plot_err)?;
    chart
        .configure_mesh()
        .x_desc("median latency (ms)")
        .y_desc(format!("recall@{k}"))
        .draw()
        .map_err(plot_err)?;
    chart
        .draw_series(points.iter().map(|p| {
            EmptyElement::at((p.ms, p.recall))
                + Circle::new((0, 0), 5, BLUE.filled())
                + Text::new(p.label.clone(), (8, -8), (FONT, 13))
        }))
        .map_err(plot_err)?;
    root.present().map_err(plot_err)?;
    Ok(())
}

/// The exposure sweep: nDCG@k against the Gini index of exposure of each setting (the
/// trade-off: down and to the left is fairer and less accurate). Nothing is drawn without a
/// sweep.
pub(super) fn exposure(report: &Report, path: &Path) -> Result<()> {
    let rows: Vec<_> = report
        .quality
        .iter()
        .filter(|r| r.task == "exposure" && r.metric == "ndcg")
        .collect();
    let Some(k) = rows.first().map(|r| r.k) else {
        return Ok(());
    };
    let points: Vec<(String, f64, f64)> = rows
        .iter()
        .filter(|r| r.k == k)
        .filter_map(|r| {
            report
                .quality("exposure", &r.method, "gini", k)
                .map(|g| (r.method.clone(), g, r.value))
        })
        .collect();
    let root = SVGBackend::new(path, (900, 560)).into_drawing_area();
    root.fill(&WHITE).map_err(plot_err)?;
    let y_max = points.iter().map(|p| p.2).fold(0.0, f64::max).max(0.01) * 1.15;
    let mut chart = ChartBuilder::on(&root)
        .caption(
            format!(
                "{}: exposure controls, nDCG@{k} against Gini@{k}",
                report.dataset
            ),
            (FONT, 20),
        )
        .margin(20)
        .x_label_area_size(40)
        .y_label_area_size(50)
        .build_cartesian_2d(0f64..1.0, 0f64..y_max)
        .map_err(plot_err)?;
    chart
        .configure_mesh()
        .x_desc(format!("Gini index of exposure @{k} (lower is fairer)"))
        .y_desc(format!("nDCG@{k}"))
        .draw()
        .map_err(plot_err)?;
    chart
        .draw_series(points.iter().map(|(label, gini, ndcg)| {
            EmptyElement::at((*gini, *ndcg))
                + Circle::new((0, 0), 5, BLUE.filled())
                + Text::new(label.clone(), (8, -8), (FONT, 13))
        }))
        .map_err(plot_err)?;
    root.present().map_err(plot_err)?;
    Ok(())
}

/// nDCG@k of every method, recommendation bars in blue, search bars in red.
pub(super) fn ablation(report: &Report, path: &Path) -> Result<()> {
    let bars: Vec<(&str, &str, f64, usize)> = report
        .quality
        .iter()
        .filter(|r| r.metric == "ndcg" && (r.task == "recommend" || r.task == "search"))
        .map(|r| (r.task.as_str(), r.method.as_str(), r.value, r.k))
        .collect();
    let k = bars.first().map_or(10, |b| b.3);
    let bars: Vec<_> = bars.into_iter().filter(|b| b.3 == k).collect();
    let n = bars.len().max(1);
    let root = SVGBackend::new(path, (120 + 80 * n as u32, 560)).into_drawing_area();
    root.fill(&WHITE).map_err(plot_err)?;
    let y_max = bars.iter().map(|b| b.2).fold(0.0, f64::max).max(0.01) * 1.15;
    let mut chart = ChartBuilder::on(&root)
        .caption(
            format!(
                "{}: nDCG@{k} per method (blue: recommend, red: search)",
                report.dataset
            ),
            (FONT, 20),
        )
        .margin(20)
        .x_label_area_size(40)
        .y_label_area_size(50)
        .build_cartesian_2d((0..n).into_segmented(), 0f64..y_max)
        .map_err(plot_err)?;
    let names: Vec<String> = bars.iter().map(|b| b.1.to_string()).collect();
    chart
        .configure_mesh()
        .disable_x_mesh()
        .x_labels(n)
        .x_label_formatter(&|x| match x {
            SegmentValue::CenterOf(i) | SegmentValue::Exact(i) => {
                names.get(*i).cloned().unwrap_or_default()
            }
            SegmentValue::Last => String::new(),
        })
        .y_desc(format!("nDCG@{k}"))
        .draw()
        .map_err(plot_err)?;
    chart
        .draw_series(bars.iter().enumerate().map(|(i, (task, _, v, _))| {
            let colour = if *task == "search" { RED } else { BLUE };
            Rectangle::new(
                [
                    (SegmentValue::Exact(i), 0.0),
                    (SegmentValue::Exact(i + 1), *v),
                ],
                colour.mix(0.6).filled(),
            )
        }))
        .map_err(plot_err)?;
    chart
        .draw_series(bars.iter().enumerate().map(|(i, (_, _, v, _))| {
            Text::new(
                format!("{v:.3}"),
                (SegmentValue::CenterOf(i), *v),
                (FONT, 12),
            )
        }))
        .map_err(plot_err)?;
    root.present().map_err(plot_err)?;
    Ok(())
}
