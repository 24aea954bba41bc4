//! SVG plots (plotters, no system fonts needed for the SVG backend).

use crate::{Error, Result};
use plotters::prelude::*;
use std::path::Path;

/// One line of a plot: a label and `(x, y)` points, with optional symmetric error bars.
#[derive(Debug, Clone)]
pub struct Series {
    /// Legend label.
    pub label: String,
    /// Points.
    pub points: Vec<(f64, f64)>,
    /// Error half-widths, one per point (empty: none).
    pub errors: Vec<f64>,
}

const COLORS: [RGBColor; 6] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(214, 39, 40),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
];

/// Draw `series` as lines into an SVG file; `log_y` puts the y axis on a log scale.
pub fn line_plot(
    path: &Path,
    title: &str,
    x_label: &str,
    y_label: &str,
    series: &[Series],
    log_y: bool,
) -> Result<()> {
    let err = |e: &dyn std::fmt::Display| Error::Plot {
        path: path.display().to_string(),
        message: e.to_string(),
    };
    let pts = series.iter().flat_map(|s| {
        s.points.iter().enumerate().flat_map(move |(i, &(x, y))| {
            let e = s.errors.get(i).copied().unwrap_or(0.0);
            [(x, y - e), (x, y + e)]
        })
    });
    let (mut x0, mut x1, mut y0, mut y1) = (f64::MAX, f64::MIN, f64::MAX, f64::MIN);
    for (x, y) in pts.filter(|(x, y)| x.is_finite() && y.is_finite()) {
        x0 = x0.min(x);
        x1 = x1.max(x);
        y0 = y0.min(y);
        y1 = y1.max(y);
    }
    if x0 > x1 {
        return Err(Error::Plot {
            path: path.display().to_string(),
            message: "no finite points to plot".into(),
        });
    }
    if x1 <= x0 {
        x1 = x0 + 1.0;
    }
    let root = SVGBackend::new(path, (800, 500)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| err(&e))?;
    let mut builder = ChartBuilder::on(&root);
    builder
        .caption(title, ("sans-serif", 22))
        .margin(15)
        .x_label_area_size(40)
        .y_label_area_size(60);
    macro_rules! draw {
        ($chart:expr) => {{
            let mut chart = $chart;
            chart
                .configure_mesh()
                .x_desc(x_label)
                .y_desc(y_label)
                .draw()
                .map_err(|e| err(&e))?;
            for (k, s) in series.iter().enumerate() {
                let c = COLORS[k % COLORS.len()];
                let pts: Vec<_> = s
                    .points
                    .iter()
                    .copied()
                    .filter(|(x, y)| x.is_finite() && y.is_finite() && (!log_y || *y > 0.0))
                    .collect();
                chart
                    .draw_series(LineSeries::new(pts.clone(), c.stroke_width(2)))
                    .map_err(|e| err(&e))?
                    .label(s.label.clone())
                    .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], c));
                chart
                    .draw_series(pts.iter().map(|&p| Circle::new(p, 3, c.filled())))
                    .map_err(|e| err(&e))?;
                for (i, &(x, y)) in s.points.iter().enumerate() {
                    if let Some(&e) = s.errors.get(i) {
                        let lo = if log_y { (y - e).max(y * 1e-3) } else { y - e };
                        chart
                            .draw_series(std::iter::once(PathElement::new(
                                vec![(x, lo), (x, y + e)],
                                c,
                            )))
                            .map_err(|e| err(&e))?;
                    }
                }
            }
            chart
                .configure_series_labels()
                .background_style(WHITE.mix(0.8))
                .border_style(BLACK)
                .draw()
                .map_err(|e| err(&e))?;
        }};
    }
    if log_y {
        let lo = if y0 > 0.0 { y0 * 0.8 } else { 1e-3 };
        let hi = (y1 * 1.2).max(lo * 10.0);
        draw!(builder
            .build_cartesian_2d(x0..x1, (lo..hi).log_scale())
            .map_err(|e| err(&e))?);
    } else {
        let pad = ((y1 - y0) * 0.05).max(1e-6);
        draw!(builder
            .build_cartesian_2d(x0..x1, (y0 - pad)..(y1 + pad))
            .map_err(|e| err(&e))?);
    }
    root.present().map_err(|e| err(&e))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_an_svg_and_rejects_empty_data() {
        let dir = std::env::temp_dir().join(format!("metalearn-plot-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join("a.svg");
        let s = Series {
            label: "maml".into(),
            points: vec![(0.0, 3.0), (1.0, 1.0), (2.0, 0.5)],
            errors: vec![0.1, 0.1, 0.05],
        };
        line_plot(&p, "t", "x", "y", std::slice::from_ref(&s), true).unwrap();
        let text = std::fs::read_to_string(&p).unwrap();
        assert!(text.starts_with("<svg") && text.contains("maml"));
        let empty = Series {
            label: "e".into(),
            points: vec![],
            errors: vec![],
        };
        assert!(line_plot(&p, "t", "x", "y", &[empty], false).is_err());
    }
}
