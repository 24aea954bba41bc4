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

/// Series colours (matplotlib's "tab10"); series 11–20 repeat them with square markers, 21–30
/// with triangles, so that no two of the first 30 series look alike.
const COLORS: [RGBColor; 10] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(214, 39, 40),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
    RGBColor(227, 119, 194),
    RGBColor(127, 127, 127),
    RGBColor(188, 189, 34),
    RGBColor(23, 190, 207),
];

/// Draw series `k`'s marker at each of `points` (any coordinate system) on `area`.
fn draw_markers<DB: DrawingBackend, CT: CoordTranslate>(
    area: &DrawingArea<DB, CT>,
    k: usize,
    points: &[CT::From],
) -> std::result::Result<(), DrawingAreaErrorKind<DB::ErrorType>>
where
    CT::From: Clone,
{
    let c = COLORS[k % COLORS.len()];
    for p in points {
        let at = EmptyElement::at(p.clone());
        match (k / COLORS.len()) % 3 {
            0 => area.draw(&(at + Circle::new((0, 0), 3, c.filled())))?,
            1 => area.draw(&(at + Rectangle::new([(-3, -3), (3, 3)], c.filled())))?,
            _ => area.draw(&(at + TriangleMarker::new((0, 0), 4, c.filled())))?,
        }
    }
    Ok(())
}

/// Width and height of every plot, in pixels.
pub const SIZE: (u32, u32) = (900, 500);

/// A tick label: at most 3 significant digits, no trailing zeros, thousands without decimals
/// (`0.0123`, `0.5`, `12.5`, `1500`).
pub fn tick_label(v: f64) -> String {
    if v == 0.0 || !v.is_finite() {
        return if v == 0.0 { "0".into() } else { v.to_string() };
    }
    let a = v.abs();
    if !(1e-4..1e5).contains(&a) {
        return format!("{v:.1e}");
    }
    let decimals = (2 - a.log10().floor() as i32).max(0) as usize;
    let s = format!("{v:.decimals$}");
    if s.contains('.') {
        s.trim_end_matches('0').trim_end_matches('.').to_string()
    } else {
        s
    }
}

/// Width of the legend column: sized to the longest label (~7 px per character).
fn legend_width(series: &[Series]) -> u32 {
    let longest = series
        .iter()
        .map(|s| s.label.chars().count())
        .max()
        .unwrap_or(0);
    (longest as u32 * 7 + 50).clamp(120, 330)
}

/// Draw `series` as lines (with markers and error bars) into an SVG file of [`SIZE`] pixels,
/// the legend in a column to the right of the data.
///
/// `log_y` puts the y axis on a log scale: values are drawn at `log10(y)` with ticks labelled
/// in the data's own units (`0.05`, `0.1`, `0.2`, …; several per decade), so a value can be
/// read off the axis; the axis description says "log scale". Points with `y ≤ 0` cannot be
/// drawn there and are left out. Put units into `x_label` / `y_label` (e.g.
/// `"accuracy (%)"`).
///
/// Errors: no finite point to plot, or the file cannot be written.
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
    // Drawn coordinates: y or log10(y).
    let ty = |y: f64| if log_y { y.log10() } else { y };
    let drawable = |&(x, y): &(f64, f64)| x.is_finite() && y.is_finite() && (!log_y || y > 0.0);
    let mut ranges = Vec::new();
    for s in series {
        for (i, p) in s.points.iter().enumerate() {
            if !drawable(p) {
                continue;
            }
            let e = s
                .errors
                .get(i)
                .copied()
                .filter(|e| e.is_finite())
                .unwrap_or(0.0);
            let lo = if log_y && p.1 - e <= 0.0 {
                p.1
            } else {
                p.1 - e
            };
            ranges.push((p.0, ty(lo), ty(p.1 + e)));
        }
    }
    if ranges.is_empty() {
        return Err(Error::Plot {
            path: path.display().to_string(),
            message: "no finite points to plot".into(),
        });
    }
    let (mut x0, mut x1, mut y0, mut y1) = (f64::MAX, f64::MIN, f64::MAX, f64::MIN);
    for &(x, lo, hi) in &ranges {
        x0 = x0.min(x);
        x1 = x1.max(x);
        y0 = y0.min(lo);
        y1 = y1.max(hi);
    }
    if x1 <= x0 {
        (x0, x1) = (x0 - 0.5, x0 + 0.5);
    }
    // At least a factor 4 on a log axis, so that it carries several labelled ticks.
    let min_span = if log_y { 0.6 } else { 1e-6 };
    if y1 - y0 < min_span {
        let mid = 0.5 * (y0 + y1);
        (y0, y1) = (mid - min_span / 2.0, mid + min_span / 2.0);
    }
    let pad = 0.05 * (y1 - y0);
    let (y0, y1) = (y0 - pad, y1 + pad);
    let xpad = 0.02 * (x1 - x0);

    let root = SVGBackend::new(path, SIZE).into_drawing_area();
    root.fill(&WHITE).map_err(|e| err(&e))?;
    let root = root
        .titled(title, ("sans-serif", 20))
        .map_err(|e| err(&e))?;
    let (plot_area, legend_area) = root.split_horizontally(SIZE.0 - legend_width(series));
    let mut chart = ChartBuilder::on(&plot_area)
        .margin(12)
        .x_label_area_size(45)
        .y_label_area_size(70)
        .build_cartesian_2d((x0 - xpad)..(x1 + xpad), y0..y1)
        .map_err(|e| err(&e))?;
    let y_desc = if log_y {
        format!("{y_label} (log scale)")
    } else {
        y_label.to_string()
    };
    let y_fmt = |v: &f64| tick_label(if log_y { 10f64.powf(*v) } else { *v });
    let x_fmt = |v: &f64| tick_label(*v);
    chart
        .configure_mesh()
        .x_desc(x_label)
        .y_desc(y_desc)
        .x_labels(8)
        .y_labels(if log_y { 9 } else { 8 })
        .x_label_formatter(&x_fmt)
        .y_label_formatter(&y_fmt)
        .label_style(("sans-serif", 13))
        .axis_desc_style(("sans-serif", 15))
        .light_line_style(RGBColor(235, 235, 235))
        .draw()
        .map_err(|e| err(&e))?;
    for (k, s) in series.iter().enumerate() {
        let c = COLORS[k % COLORS.len()];
        let pts: Vec<(f64, f64)> = s
            .points
            .iter()
            .filter(|p| drawable(p))
            .map(|&(x, y)| (x, ty(y)))
            .collect();
        chart
            .draw_series(LineSeries::new(pts.clone(), c.stroke_width(2)))
            .map_err(|e| err(&e))?;
        draw_markers(chart.plotting_area(), k, &pts).map_err(|e| err(&e))?;
        let bars = s
            .points
            .iter()
            .zip(&s.errors)
            .filter(|(p, e)| drawable(p) && e.is_finite());
        chart
            .draw_series(bars.map(|(&(x, y), &e)| {
                let lo = if log_y && y - e <= 0.0 { y } else { y - e };
                PathElement::new(vec![(x, ty(lo)), (x, ty(y + e))], c)
            }))
            .map_err(|e| err(&e))?;
    }
    // Legend: one row per series (line, marker, label), outside the data.
    for (k, s) in series.iter().enumerate() {
        let c = COLORS[k % COLORS.len()];
        let y = 30 + 24 * k as i32;
        legend_area
            .draw(&PathElement::new(vec![(8, y), (36, y)], c.stroke_width(3)))
            .map_err(|e| err(&e))?;
        draw_markers(&legend_area, k, &[(22, y)]).map_err(|e| err(&e))?;
        legend_area
            .draw(&Text::new(
                s.label.clone(),
                (44, y - 8),
                ("sans-serif", 14).into_font().color(&BLACK),
            ))
            .map_err(|e| err(&e))?;
    }
    root.present().map_err(|e| err(&e))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use resvg::{tiny_skia, usvg};

    fn temp(name: &str) -> std::path::PathBuf {
        let dir = std::env::temp_dir().join(format!("metalearn-plot-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        dir.join(name)
    }

    /// Render an SVG as a browser would (resvg): a file plotters wrote but no renderer can
    /// draw fails here.
    fn render(path: &Path) -> tiny_skia::Pixmap {
        let data = std::fs::read(path).unwrap();
        let tree = usvg::Tree::from_data(&data, &usvg::Options::default())
            .unwrap_or_else(|e| panic!("{} does not parse as SVG: {e}", path.display()));
        let size = tree.size().to_int_size();
        assert_eq!((size.width(), size.height()), SIZE);
        let mut pixmap = tiny_skia::Pixmap::new(size.width(), size.height()).unwrap();
        resvg::render(&tree, tiny_skia::Transform::default(), &mut pixmap.as_mut());
        pixmap
    }

    /// Pixels within a small distance of `c`, as (x, y).
    fn pixels_of(p: &tiny_skia::Pixmap, c: RGBColor) -> Vec<(u32, u32)> {
        let mut out = Vec::new();
        for (i, px) in p.pixels().iter().enumerate() {
            let d = (px.red() as i32 - c.0 as i32).abs()
                + (px.green() as i32 - c.1 as i32).abs()
                + (px.blue() as i32 - c.2 as i32).abs();
            if px.alpha() > 200 && d < 24 {
                out.push((i as u32 % p.width(), i as u32 / p.width()));
            }
        }
        out
    }

    /// The numeric tick labels plotters wrote (text elements that parse as numbers).
    fn numeric_labels(svg: &str) -> Vec<f64> {
        svg.split("<text")
            .skip(1)
            .filter_map(|t| {
                let body = &t[t.find('>')? + 1..t.find("</text>")?];
                body.trim().parse::<f64>().ok()
            })
            .collect()
    }

    fn series(label: &str, points: Vec<(f64, f64)>, errors: Vec<f64>) -> Series {
        Series {
            label: label.into(),
            points,
            errors,
        }
    }

    #[test]
    fn each_series_is_drawn_in_the_data_and_named_in_a_legend_beside_it() {
        let p = temp("lines.svg");
        let all = vec![
            series(
                "MAML (second order)",
                vec![(0.0, 20.0), (50.0, 40.0), (100.0, 70.0)],
                vec![2.0, 3.0, 2.5],
            ),
            series(
                "ProtoNet",
                vec![(0.0, 25.0), (50.0, 80.0), (100.0, 95.0)],
                vec![],
            ),
            series("Reptile", vec![(0.0, 20.0), (100.0, 60.0)], vec![]),
        ];
        line_plot(
            &p,
            "Omniglot",
            "meta-iteration",
            "accuracy (%)",
            &all,
            false,
        )
        .unwrap();
        let img = render(&p);
        let split = SIZE.0 - legend_width(&all);
        let mut rows = Vec::new();
        for (k, s) in all.iter().enumerate() {
            let px = pixels_of(&img, COLORS[k]);
            let data = px.iter().filter(|(x, _)| *x < split).count();
            let legend: Vec<_> = px.iter().filter(|(x, _)| *x >= split).collect();
            assert!(
                data > 100,
                "{}: {data} pixels of its line in the data area",
                s.label
            );
            assert!(legend.len() > 20, "{}: no legend entry", s.label);
            // The legend holds one short row per series (in order), nothing of the data.
            let top = legend.iter().map(|p| p.1).min().unwrap();
            let bottom = legend.iter().map(|p| p.1).max().unwrap();
            assert!(
                bottom - top < 12,
                "{}: legend rows {top}..{bottom}",
                s.label
            );
            rows.push(top);
        }
        assert!(
            rows.windows(2).all(|w| w[0] + 12 < w[1]),
            "legend rows {rows:?}"
        );
        // Readable axes: several ticks on each, as plain numbers.
        let svg = std::fs::read_to_string(&p).unwrap();
        assert!(
            numeric_labels(&svg).len() >= 8,
            "{:?}",
            numeric_labels(&svg)
        );
        assert!(svg.contains("accuracy (%)") && svg.contains("meta-iteration"));
    }

    #[test]
    fn more_series_than_colours_still_get_a_legend_row_each() {
        let p = temp("many.svg");
        let all: Vec<Series> = (0..12)
            .map(|k| {
                series(
                    &format!("s{k}"),
                    vec![(0.0, k as f64), (1.0, k as f64 + 0.5)],
                    vec![],
                )
            })
            .collect();
        line_plot(&p, "many", "x", "y", &all, false).unwrap();
        let img = render(&p);
        let split = SIZE.0 - legend_width(&all);
        // Series 0 and 10 share a colour (10 has square markers): two legend rows of it.
        let mut rows: Vec<u32> = pixels_of(&img, COLORS[0])
            .into_iter()
            .filter(|(x, _)| *x >= split)
            .map(|(_, y)| y)
            .collect();
        rows.sort_unstable();
        let bands = 1 + rows.windows(2).filter(|w| w[1] > w[0] + 4).count();
        assert_eq!(bands, 2, "legend rows of the first colour: {rows:?}");
    }

    #[test]
    fn a_log_axis_carries_several_labelled_ticks_in_data_units() {
        let p = temp("log.svg");
        let s = series(
            "query MSE",
            vec![(0.0, 0.5), (1.0, 0.12), (5.0, 0.04), (10.0, 0.03)],
            vec![0.05, 0.02, 0.01, 0.01],
        );
        line_plot(&p, "steps", "adaptation steps", "query MSE", &[s], true).unwrap();
        render(&p);
        let svg = std::fs::read_to_string(&p).unwrap();
        assert!(svg.contains("query MSE (log scale)"));
        // y ticks are in MSE units: values inside the plotted decade, not exponents.
        let y_ticks: Vec<f64> = numeric_labels(&svg)
            .into_iter()
            .filter(|v| *v > 0.0 && *v < 1.0 && v.fract() != 0.0)
            .collect();
        assert!(y_ticks.len() >= 4, "log-axis ticks {y_ticks:?}");
        // Even a range of less than a factor 2 gets several ticks.
        let narrow = series("flat", vec![(0.0, 0.30), (1.0, 0.25)], vec![]);
        line_plot(&p, "flat", "x", "y", &[narrow], true).unwrap();
        render(&p);
        let svg = std::fs::read_to_string(&p).unwrap();
        let ticks = numeric_labels(&svg)
            .into_iter()
            .filter(|v| v.fract() != 0.0)
            .count();
        assert!(ticks >= 4, "{ticks} ticks on a narrow log axis");
    }

    #[test]
    fn tick_labels_are_short_and_exact_enough_to_read() {
        assert_eq!(tick_label(0.0), "0");
        assert_eq!(tick_label(0.5), "0.5");
        assert_eq!(tick_label(0.0123456), "0.0123");
        assert_eq!(tick_label(12.5), "12.5");
        assert_eq!(tick_label(1500.0), "1500");
        assert_eq!(tick_label(-0.25), "-0.25");
        assert_eq!(tick_label(2.0e6), "2.0e6");
    }

    #[test]
    fn rejects_data_with_nothing_to_draw() {
        let p = temp("empty.svg");
        let empty = series("e", vec![], vec![]);
        assert!(line_plot(&p, "t", "x", "y", &[empty], false).is_err());
        // Only non-positive values on a log axis: nothing drawable either.
        let neg = series("n", vec![(0.0, -1.0), (1.0, 0.0)], vec![]);
        assert!(line_plot(&p, "t", "x", "y", &[neg], true).is_err());
        let nan = series("n", vec![(0.0, f64::NAN)], vec![]);
        assert!(line_plot(&p, "t", "x", "y", &[nan], false).is_err());
    }
}
