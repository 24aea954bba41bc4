//! Sinusoid regression (Finn et al. 2017, §5.1).
//!
//! A task is `y = A · sin(x − φ)` with amplitude `A ~ U[0.1, 5.0]`, phase `φ ~ U[0, π]`, inputs
//! `x ~ U[−5, 5]`; the learner sees `K` support points and is scored on a separate query set.

use metalearn_core::episode::{EpisodeData, HostBatch, TaskDistribution, TaskKind};
use metalearn_core::error::{ensure_nonzero, Error, Result};
use metalearn_core::seed::rng;
use rand::Rng;
use serde::{Deserialize, Serialize};

/// Configuration of the sinusoid family.
///
/// | field | default | meaning | valid |
/// |---|---|---|---|
/// | `k_shot` | — | support points per task | ≥ 1 |
/// | `query` | — | query points per task | ≥ 1 |
/// | `amplitude` | (0.1, 5.0) | range of `A` | lo ≤ hi, finite |
/// | `phase` | (0, π) | range of `φ` | lo ≤ hi, finite |
/// | `x_range` | (−5, 5) | range of inputs | lo < hi, finite |
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SinusoidConfig {
    /// Support points per task.
    pub k_shot: usize,
    /// Query points per task.
    pub query: usize,
    /// Amplitude range.
    pub amplitude: (f64, f64),
    /// Phase range.
    pub phase: (f64, f64),
    /// Input range.
    pub x_range: (f64, f64),
}

impl SinusoidConfig {
    /// The paper's family with `k_shot` support and `query` query points.
    pub fn new(k_shot: usize, query: usize) -> Self {
        Self {
            k_shot,
            query,
            amplitude: (0.1, 5.0),
            phase: (0.0, std::f64::consts::PI),
            x_range: (-5.0, 5.0),
        }
    }

    /// Override the amplitude range (e.g. for out-of-distribution tests).
    pub fn with_amplitude(mut self, lo: f64, hi: f64) -> Self {
        self.amplitude = (lo, hi);
        self
    }

    /// Check every field.
    pub fn validate(&self) -> Result<()> {
        ensure_nonzero("k_shot", self.k_shot)?;
        ensure_nonzero("query", self.query)?;
        for (field, (lo, hi)) in [
            ("amplitude", self.amplitude),
            ("phase", self.phase),
            ("x_range", self.x_range),
        ] {
            if !lo.is_finite() || !hi.is_finite() || lo > hi {
                return Err(Error::config(field, format!("bad range ({lo}, {hi})")));
            }
        }
        if self.x_range.0 >= self.x_range.1 {
            return Err(Error::config("x_range", "must have lo < hi"));
        }
        Ok(())
    }
}

/// One sinusoid.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SinusoidTask {
    /// Amplitude `A`.
    pub amplitude: f64,
    /// Phase `φ`.
    pub phase: f64,
}

impl SinusoidTask {
    /// `A · sin(x − φ)`.
    pub fn eval(&self, x: f64) -> f64 {
        self.amplitude * (x - self.phase).sin()
    }
}

/// The sinusoid task distribution.
#[derive(Debug, Clone)]
pub struct Sinusoid {
    config: SinusoidConfig,
}

impl Sinusoid {
    /// Validate the config and build the distribution.
    pub fn new(config: SinusoidConfig) -> Result<Self> {
        config.validate()?;
        Ok(Self { config })
    }

    /// The configuration.
    pub fn config(&self) -> &SinusoidConfig {
        &self.config
    }

    /// The task (amplitude, phase) that `seed` selects, and the RNG for its points.
    pub fn task(&self, seed: u64) -> SinusoidTask {
        let mut r = rng(seed);
        self.draw_task(&mut r)
    }

    fn draw_task(&self, r: &mut impl Rng) -> SinusoidTask {
        let c = &self.config;
        SinusoidTask {
            amplitude: uniform(r, c.amplitude),
            phase: uniform(r, c.phase),
        }
    }

    fn points(&self, r: &mut impl Rng, task: &SinusoidTask, n: usize) -> Result<HostBatch> {
        let xs: Vec<f64> = (0..n).map(|_| uniform(r, self.config.x_range)).collect();
        let ys: Vec<f32> = xs.iter().map(|&x| task.eval(x) as f32).collect();
        HostBatch::regression(xs.iter().map(|&x| x as f32).collect(), vec![n, 1], ys, 1)
    }
}

fn uniform(r: &mut impl Rng, (lo, hi): (f64, f64)) -> f64 {
    lo + (hi - lo) * r.random::<f64>()
}

impl TaskDistribution for Sinusoid {
    fn kind(&self) -> TaskKind {
        TaskKind::Regression
    }

    fn sample(&self, seed: u64) -> Result<EpisodeData> {
        let mut r = rng(seed);
        let task = self.draw_task(&mut r);
        let support = self.points(&mut r, &task, self.config.k_shot)?;
        let query = self.points(&mut r, &task, self.config.query)?;
        Ok(EpisodeData {
            kind: TaskKind::Regression,
            support,
            query,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn points_lie_on_the_task_curve_within_ranges() {
        let s = Sinusoid::new(SinusoidConfig::new(5, 7)).unwrap();
        for seed in 0..50 {
            let ep = s.sample(seed).unwrap();
            let t = s.task(seed);
            assert!((0.1..=5.0).contains(&t.amplitude));
            assert!((0.0..=std::f64::consts::PI).contains(&t.phase));
            assert_eq!(ep.support.len(), 5);
            assert_eq!(ep.query.len(), 7);
            for b in [&ep.support, &ep.query] {
                for (x, y) in b.inputs.iter().zip(&b.targets) {
                    assert!((-5.0..=5.0).contains(x));
                    assert!((t.eval(*x as f64) as f32 - y).abs() < 1e-4);
                }
            }
        }
    }

    #[test]
    fn seeds_reproduce_and_differ() {
        let s = Sinusoid::new(SinusoidConfig::new(10, 10)).unwrap();
        assert_eq!(s.sample(3).unwrap(), s.sample(3).unwrap());
        assert_ne!(s.sample(3).unwrap(), s.sample(4).unwrap());
    }

    #[test]
    fn bad_configs_are_rejected() {
        assert!(matches!(
            Sinusoid::new(SinusoidConfig::new(0, 10)),
            Err(Error::InvalidConfig {
                field: "k_shot",
                ..
            })
        ));
        assert!(Sinusoid::new(SinusoidConfig::new(5, 5).with_amplitude(3.0, 1.0)).is_err());
    }
}
