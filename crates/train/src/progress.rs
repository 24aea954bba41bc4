//! Progress display: a bar on a terminal, plain log lines otherwise (CI logs, `nohup`).

use crate::metrics::Metric;
use crate::trainer::Validation;
use indicatif::{ProgressBar, ProgressStyle};
use metalearn_core::StepStats;
use serde::{Deserialize, Serialize};
use std::io::IsTerminal;

/// How the trainer shows progress.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Progress {
    /// A bar when stderr is a terminal, log lines otherwise.
    #[default]
    Auto,
    /// An indicatif progress bar on stderr.
    Bar,
    /// One line on stderr about every 5% of the run and at every validation.
    Lines,
    /// Nothing.
    Quiet,
}

/// A running display.
#[derive(Debug)]
pub(crate) struct Display {
    mode: Progress,
    bar: Option<ProgressBar>,
    total: usize,
    every: usize,
}

/// `1h02m`, `3m05s`, `12s`.
pub fn format_duration(s: f64) -> String {
    let s = s.max(0.0).round() as u64;
    match (s / 3600, (s % 3600) / 60, s % 60) {
        (0, 0, s) => format!("{s}s"),
        (0, m, s) => format!("{m}m{s:02}s"),
        (h, m, _) => format!("{h}h{m:02}m"),
    }
}

impl Progress {
    pub(crate) fn start(self, total: usize, done: usize, name: &str) -> Display {
        let mode = match self {
            Progress::Auto if std::io::stderr().is_terminal() => Progress::Bar,
            Progress::Auto => Progress::Lines,
            m => m,
        };
        let bar = (mode == Progress::Bar).then(|| {
            let b = ProgressBar::new(total as u64).with_position(done as u64);
            if let Ok(style) = ProgressStyle::with_template(
                "{prefix} [{bar:30}] {pos}/{len} {per_sec} ETA {eta} {msg}",
            ) {
                b.set_style(style.progress_chars("=> "));
            }
            b.set_prefix(name.to_string());
            b
        });
        Display {
            mode,
            bar,
            total,
            every: (total / 20).max(1),
        }
    }
}

impl Display {
    /// After iteration `done` (1-based); `secs` and `steps` are this session's time and steps.
    pub(crate) fn step(&mut self, done: usize, stats: &StepStats, secs: f64, steps: usize) {
        let rate = steps as f64 / secs.max(1e-9);
        let acc = stats
            .meta_accuracy
            .map_or(String::new(), |a| format!(" acc {:.1}%", 100.0 * a));
        let msg = format!("loss {:.4}{acc}", stats.meta_loss);
        match self.mode {
            Progress::Bar => {
                if let Some(b) = &self.bar {
                    b.set_position(done as u64);
                    b.set_message(msg);
                }
            }
            Progress::Lines if done.is_multiple_of(self.every) || done == self.total => {
                let eta = (self.total - done) as f64 / rate.max(1e-9);
                eprintln!(
                    "iteration {done}/{} {msg} {rate:.2} it/s ETA {}",
                    self.total,
                    format_duration(eta)
                );
            }
            _ => {}
        }
    }

    pub(crate) fn validation(&self, v: &Validation, metric: Option<Metric>) {
        let text = match metric {
            Some(Metric::Accuracy) => format!(
                "validation at {}: accuracy {:.2} ± {:.2}%",
                v.iteration,
                100.0 * v.mean,
                100.0 * v.ci95
            ),
            _ => format!(
                "validation at {}: loss {:.4} ± {:.4}",
                v.iteration, v.mean, v.ci95
            ),
        };
        match (&self.bar, self.mode) {
            (Some(b), _) => b.println(text),
            (None, Progress::Lines) => eprintln!("{text}"),
            _ => {}
        }
    }

    pub(crate) fn finish(self) {
        if let Some(b) = self.bar {
            b.finish_and_clear();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_naturally() {
        assert_eq!(format_duration(12.4), "12s");
        assert_eq!(format_duration(185.0), "3m05s");
        assert_eq!(format_duration(3720.0), "1h02m");
    }
}
