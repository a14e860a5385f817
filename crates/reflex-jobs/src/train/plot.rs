//! `curve.png`: evaluation success rate and mean return against environment steps.

use crate::train::EvalRow;
use plotters::prelude::*;
use std::path::Path;

/// Whether the plots' text can be drawn: a system sans-serif font is registered on the first
/// call; without one the curves are drawn without labels.
pub(crate) fn text_font() -> bool {
    static READY: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *READY.get_or_init(register_font)
}

fn register_font() -> bool {
    const CANDIDATES: &[&str] = &[
        "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
        "/usr/share/fonts/dejavu/DejaVuSans.ttf",
        "/usr/share/fonts/TTF/DejaVuSans.ttf",
        "/usr/share/fonts/truetype/liberation/LiberationSans-Regular.ttf",
        "/Library/Fonts/Arial.ttf",
    ];
    for path in CANDIDATES {
        if let Ok(bytes) = std::fs::read(path) {
            let bytes: &'static [u8] = Box::leak(bytes.into_boxed_slice());
            if plotters::style::register_font("sans-serif", FontStyle::Normal, bytes).is_ok() {
                return true;
            }
        }
    }
    false
}

/// Draws the two curves of a run into a PNG at `path`.
pub fn plot_curves(path: &Path, title: &str, rows: &[EvalRow]) -> Result<(), String> {
    let text = text_font();
    let root = BitMapBackend::new(path, (1000, 700)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| e.to_string())?;
    let (top, bottom) = root.split_vertically(350);
    let max_x = rows.iter().map(|r| r.env_steps).max().unwrap_or(1).max(1) as f64;
    let rets: Vec<f64> = rows
        .iter()
        .map(|r| r.mean_return)
        .filter(|v| v.is_finite())
        .collect();
    let (rmin, rmax) = rets
        .iter()
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), v| {
            (a.min(*v), b.max(*v))
        });
    let (rmin, rmax) = if rmin.is_finite() && rmax > rmin {
        let pad = 0.05 * (rmax - rmin);
        (rmin - pad, rmax + pad)
    } else {
        (rmin.min(0.0) - 1.0, rmax.max(0.0) + 1.0)
    };
    for (i, area) in [top, bottom].iter().enumerate() {
        let (label, lo, hi) = if i == 0 {
            ("evaluation success rate", 0.0, 1.02)
        } else {
            ("evaluation mean return", rmin, rmax)
        };
        let value = |r: &EvalRow| {
            if i == 0 {
                r.success_rate
            } else {
                r.mean_return
            }
        };
        let mut builder = ChartBuilder::on(area);
        builder
            .margin(12)
            .x_label_area_size(36)
            .y_label_area_size(56);
        if text && i == 0 {
            builder.caption(format!("{title}: learning curve"), ("sans-serif", 22));
        }
        let mut chart = builder
            .build_cartesian_2d(0.0..max_x * 1.02, lo..hi)
            .map_err(|e| e.to_string())?;
        if text {
            chart
                .configure_mesh()
                .x_desc("environment steps")
                .y_desc(label)
                .label_style(("sans-serif", 14))
                .draw()
                .map_err(|e| e.to_string())?;
        } else {
            chart
                .configure_mesh()
                .disable_x_mesh()
                .disable_y_mesh()
                .x_labels(0)
                .y_labels(0)
                .draw()
                .map_err(|e| e.to_string())?;
        }
        let points: Vec<(f64, f64)> = rows
            .iter()
            .map(|r| (r.env_steps as f64, value(r)))
            .filter(|p| p.1.is_finite())
            .collect();
        let color = if i == 0 { BLUE } else { RED };
        chart
            .draw_series(LineSeries::new(points.clone(), color.stroke_width(2)))
            .map_err(|e| e.to_string())?;
        chart
            .draw_series(points.iter().map(|p| Circle::new(*p, 3, color.filled())))
            .map_err(|e| e.to_string())?;
    }
    root.present().map_err(|e| e.to_string())
}
