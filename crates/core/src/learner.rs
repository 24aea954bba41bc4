//! The learner traits: meta-train on batches of episodes, adapt to one episode's support set,
//! evaluate on its query set.

use crate::episode::{EpisodeData, TaskDistribution};
use crate::seed::SeedStream;
use crate::{Error, Result};
use serde::{Deserialize, Serialize};

/// What one meta-iteration did.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct StepStats {
    /// The learner's global iteration number (0-based): it continues across `meta_train` calls
    /// and across a checkpoint and resume.
    pub iteration: usize,
    /// Mean post-adaptation query loss over the meta-batch (the meta-objective).
    pub meta_loss: f64,
    /// Mean post-adaptation query accuracy (classification only).
    pub meta_accuracy: Option<f64>,
}

/// One meta-iteration as [`MetaLearner::meta_train`] reports it: the learner's
/// [`StepStats`] (also reachable through `Deref`: `step.meta_loss`) and the timing a progress
/// bar or log line needs (rate, ETA).
///
/// Timing is wall time, so it differs between runs; compare [`stats`](Self::stats) when
/// checking that two runs computed the same thing.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct TrainStep {
    /// What the meta-iteration did.
    pub stats: StepStats,
    /// Iterations done in this `meta_train` call, this one included (1-based).
    pub done: usize,
    /// Iterations asked of this call (`usize::MAX`: until the callback stops it).
    pub total: usize,
    /// Wall seconds of this iteration (sampling the episodes and the meta-step).
    pub seconds: f64,
    /// Wall seconds since the call began.
    pub elapsed: f64,
}

impl TrainStep {
    /// Mean meta-iterations per second of this call so far.
    pub fn iterations_per_second(&self) -> f64 {
        if self.elapsed > 0.0 {
            self.done as f64 / self.elapsed
        } else {
            f64::INFINITY
        }
    }

    /// Seconds left at the mean rate so far; `None` for an open-ended call
    /// (`total == usize::MAX`).
    pub fn eta_seconds(&self) -> Option<f64> {
        (self.total != usize::MAX).then(|| {
            let left = self.total.saturating_sub(self.done) as f64;
            if left == 0.0 {
                0.0
            } else {
                left / self.iterations_per_second()
            }
        })
    }
}

impl std::ops::Deref for TrainStep {
    type Target = StepStats;
    fn deref(&self) -> &StepStats {
        &self.stats
    }
}

/// Query loss (and accuracy) after a given number of adaptation steps.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct StepMetrics {
    /// Number of adaptation steps taken on the support set.
    pub steps: usize,
    /// Query loss.
    pub loss: f64,
    /// Query accuracy (classification only).
    pub accuracy: Option<f64>,
}

/// Query metrics after 0, 1, …, S adaptation steps on one episode.
pub type AdaptationCurve = Vec<StepMetrics>;

/// A meta-learner over episodes whose inputs have rank `D`.
pub trait MetaLearner<const D: usize> {
    /// The model a successful adaptation returns.
    type Adapted;

    /// One meta-update from a meta-batch of episodes. On error (e.g. a diverging loss) the
    /// learner's parameters are left as they were.
    fn meta_step(&mut self, episodes: &[EpisodeData]) -> Result<StepStats>;

    /// The number of episodes [`meta_train`](Self::meta_train) draws per meta-iteration.
    fn meta_batch_size(&self) -> usize;

    /// Adapt to an episode's support set with `steps` inner steps.
    fn adapt(&self, episode: &EpisodeData, steps: usize) -> Result<Self::Adapted>;

    /// Query metrics after 0..=`steps` adaptation steps on the support set.
    fn adaptation_curve(&self, episode: &EpisodeData, steps: usize) -> Result<AdaptationCurve>;

    /// Query metrics after exactly `steps` adaptation steps: the last point of
    /// [`adaptation_curve`](Self::adaptation_curve). Learners whose curve needs a query pass per
    /// step override it to score the query set once.
    fn evaluate(&self, episode: &EpisodeData, steps: usize) -> Result<StepMetrics> {
        self.adaptation_curve(episode, steps)?
            .pop()
            .ok_or(Error::Empty("adaptation curve"))
    }

    /// The query outputs after `steps` adaptation steps on the support set, row-major
    /// `[query examples, outputs]`: class scores (logits) for classification, predicted values
    /// for regression. The query targets are not read: this is how a meta-learned model is
    /// applied to new, unlabelled data. Learners that cannot predict return
    /// [`Error::Unsupported`].
    fn predict(&self, episode: &EpisodeData, steps: usize) -> Result<Vec<f32>> {
        let _ = (episode, steps);
        Err(Error::Unsupported(
            "this learner does not implement predictions".into(),
        ))
    }

    /// Meta-train for `iterations` meta-iterations on tasks drawn from `tasks`.
    ///
    /// The episodes of iteration `i` are drawn with seeds `seed.child(i).child(j)`, so a run is
    /// reproducible and independent of how many threads evaluate the tasks (`i` counts this
    /// call's iterations; the [`StepStats::iteration`] it reports is the learner's global
    /// counter). `on_step` sees each iteration's statistics and timing ([`TrainStep`]: elapsed
    /// time, iterations per second, ETA) for progress bars, learning curves and early stopping
    /// (return `false` to stop); the same records are returned as the history.
    fn meta_train(
        &mut self,
        tasks: &dyn TaskDistribution,
        iterations: usize,
        seed: SeedStream,
        on_step: &mut dyn FnMut(&TrainStep) -> bool,
    ) -> Result<Vec<TrainStep>> {
        // No `with_capacity(iterations)`: "run until the callback says stop" passes `usize::MAX`.
        let mut history = Vec::new();
        let start = std::time::Instant::now();
        for i in 0..iterations {
            let t0 = std::time::Instant::now();
            let it = seed.child(i as u64);
            let batch = (0..self.meta_batch_size())
                .map(|j| tasks.sample(it.child(j as u64).seed()))
                .collect::<Result<Vec<_>>>()?;
            let step = TrainStep {
                stats: self.meta_step(&batch)?,
                done: i + 1,
                total: iterations,
                seconds: t0.elapsed().as_secs_f64(),
                elapsed: start.elapsed().as_secs_f64(),
            };
            history.push(step);
            if !on_step(&step) {
                break;
            }
        }
        Ok(history)
    }
}

/// Fail with [`Error::Diverged`] when a loss is not finite.
pub fn check_finite(iteration: usize, value: f64) -> Result<f64> {
    if value.is_finite() {
        Ok(value)
    } else {
        Err(Error::Diverged { iteration, value })
    }
}

/// Fail with [`Error::Diverged`] when a parameter of `model` is not finite (checked after every
/// update, so a step that overflows is refused and the old parameters are kept).
pub fn check_finite_model<B: burn::tensor::backend::Backend, M: burn::module::Module<B>>(
    iteration: usize,
    model: &M,
) -> Result<()> {
    match crate::params::to_vec(model)
        .into_iter()
        .find(|v| !v.is_finite())
    {
        Some(value) => Err(Error::Diverged { iteration, value }),
        None => Ok(()),
    }
}
