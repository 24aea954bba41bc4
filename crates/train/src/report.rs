//! A run's report: `report.md` with the learning curves as SVG, from `metrics.jsonl`.

use crate::files::write_atomic;
use crate::metrics::{read, Metric, Record};
use crate::progress::format_duration;
use crate::trainer::RunDir;
use crate::Result;
use metalearn_core::stats::median;
use metalearn_eval::plot::{line_plot, Series};
use std::fmt::Write as _;
use std::path::PathBuf;

/// Trailing mean over `window` points (the raw meta-loss is noisy: one meta-batch each).
fn smooth(points: &[(f64, f64)], window: usize) -> Vec<(f64, f64)> {
    let w = window.max(1);
    let mut sum = 0.0;
    points
        .iter()
        .enumerate()
        .map(|(i, &(x, y))| {
            sum += y;
            if i >= w {
                sum -= points[i - w].1;
            }
            (x, sum / (i + 1).min(w) as f64)
        })
        .collect()
}

/// Every `k`-th point and the last, `k` chosen so that at most `max` remain (a plot of 60,000
/// meta-iterations needs no more points than its width has pixels).
fn thin(points: Vec<(f64, f64)>, max: usize) -> Vec<(f64, f64)> {
    let k = points.len().div_ceil(max.max(2) - 1).max(1);
    let last = points.len().saturating_sub(1);
    points
        .into_iter()
        .enumerate()
        .filter(|(i, _)| i % k == 0 || *i == last)
        .map(|(_, p)| p)
        .collect()
}

/// Points of the meta-loss plot at most.
const PLOT_POINTS: usize = 500;

/// Write `report.md`, `learning_curve.svg` (validation score) and `meta_loss.svg` into the run
/// directory from its metrics log; returns the markdown's path.
pub fn write_report(run: &RunDir, title: &str) -> Result<PathBuf> {
    let records = read(&run.metrics())?;
    let mut loss = Vec::new();
    let mut times = Vec::new();
    let mut elapsed: f64 = 0.0;
    let mut vals = Vec::new();
    let mut metric = Metric::Loss;
    for r in &records {
        match *r {
            Record::Step {
                iteration,
                meta_loss,
                ms,
                elapsed_s,
                ..
            } => {
                loss.push(((iteration + 1) as f64, meta_loss));
                times.push(ms);
                elapsed = elapsed.max(elapsed_s);
            }
            Record::Validation {
                iteration,
                metric: m,
                mean,
                ci95,
                best,
                ..
            } => {
                metric = m;
                vals.push((iteration, mean, ci95, best));
            }
        }
    }
    let pct = |v: f64| match metric {
        Metric::Accuracy => 100.0 * v,
        Metric::Loss => v,
    };
    let (what, unit) = match metric {
        Metric::Accuracy => ("validation accuracy", "%"),
        Metric::Loss => ("validation loss", ""),
    };
    let mut md = format!("# {title}\n\n");
    let iterations = loss.len();
    let _ = writeln!(
        md,
        "{iterations} meta-iterations in {} of training ({:.2} it/s; median {:.1} ms per \
         meta-iteration).\n",
        format_duration(elapsed),
        iterations as f64 / elapsed.max(1e-9),
        median(&times).unwrap_or(f64::NAN)
    );
    if let Some(b) = vals.iter().rfind(|v| v.3) {
        let _ = writeln!(
            md,
            "Best {what}: **{:.2} ± {:.2}{unit}** after {} iterations (saved in `best/`).\n",
            pct(b.1),
            pct(b.2),
            b.0
        );
    }
    if !vals.is_empty() {
        let series = Series {
            label: what.to_string(),
            points: vals.iter().map(|v| (v.0 as f64, pct(v.1))).collect(),
            errors: vals.iter().map(|v| pct(v.2)).collect(),
        };
        line_plot(
            &run.root().join("learning_curve.svg"),
            title,
            "meta-iterations",
            &format!("{what} ({})", if unit.is_empty() { "MSE" } else { unit }),
            &[series],
            false,
        )?;
        md.push_str("![learning curve](learning_curve.svg)\n\n");
        md.push_str("| iterations | score | 95% CI | best so far |\n|---|---|---|---|\n");
        for v in &vals {
            let _ = writeln!(
                md,
                "| {} | {:.2} | ± {:.2} | {} |",
                v.0,
                pct(v.1),
                pct(v.2),
                if v.3 { "yes" } else { "" }
            );
        }
        md.push('\n');
    }
    if loss.len() >= 2 {
        let window = (loss.len() / 20).clamp(1, 100);
        line_plot(
            &run.root().join("meta_loss.svg"),
            "meta-training loss",
            "meta-iterations",
            "query loss after adaptation",
            &[Series {
                label: format!("mean of the last {window} meta-batches"),
                points: thin(smooth(&loss, window), PLOT_POINTS),
                errors: Vec::new(),
            }],
            false,
        )?;
        md.push_str("![meta-training loss](meta_loss.svg)\n");
    }
    let path = run.root().join("report.md");
    write_atomic(&path, md.as_bytes())?;
    Ok(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn smoothing_is_a_trailing_mean() {
        let p: Vec<_> = (0..5).map(|i| (i as f64, i as f64)).collect();
        let s = smooth(&p, 2);
        assert_eq!(
            s.iter().map(|q| q.1).collect::<Vec<_>>(),
            [0.0, 0.5, 1.5, 2.5, 3.5]
        );
    }

    #[test]
    fn thinning_keeps_the_ends_and_at_most_max_points() {
        let p = |n: usize| (0..n).map(|i| (i as f64, 0.0)).collect::<Vec<_>>();
        assert_eq!(thin(p(3), 500).len(), 3);
        for n in [499, 500, 501, 1000, 60_000, 60_001] {
            let t = thin(p(n), 500);
            assert!(t.len() <= 500, "{n}: {}", t.len());
            assert!(t.len() >= 250, "{n}: {}", t.len());
            assert_eq!(t[0].0, 0.0);
            assert_eq!(t.last().unwrap().0, (n - 1) as f64);
        }
    }
}
