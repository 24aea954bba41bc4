//! The meta-trainer: drives any learner through its budget with validation, model selection,
//! early stopping, a metrics log, crash-safe checkpoints and exact resume.

use crate::files::{checkpoint_path, list_checkpoints, prune_checkpoints, write_atomic};
use crate::metrics::{Metric, MetricsLog, Record};
use crate::progress::Progress;
use crate::Error;
use burn::config::Config;
use metalearn_core::episode::EpisodeData;
use metalearn_core::error::ensure_nonzero;
use metalearn_core::parallel::TaskPool;
use metalearn_core::{AdaptationCurve, AnyLearner, LearnerState, SeedStream, TaskDistribution};
use metalearn_eval::StepsCurve;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::time::Instant;

/// The meta-trainer's settings.
///
/// | name | default | meaning |
/// |---|---|---|
/// | `iterations` | — | meta-iterations in all (a resumed run continues up to this number) |
/// | `validate_every` | 100 | validate on held-out tasks every this many iterations (0: only at the end) |
/// | `val_episodes` | 100 | validation episodes (the same ones each time) |
/// | `val_steps` | 1 | adaptation steps at validation |
/// | `checkpoint_every` | 100 | write a checkpoint every this many iterations (0: only at the end) |
/// | `keep_last` | 3 | checkpoints kept (the best model is kept separately, in `best/`) |
/// | `patience` | 0 | stop after this many validations without improvement (0: never) |
/// | `seed` | 0 | the seed every episode of the run derives from |
#[derive(Config, Debug, PartialEq)]
pub struct TrainerConfig {
    /// Meta-iterations in all.
    pub iterations: usize,
    /// Validate every this many iterations (0: only at the end).
    #[config(default = 100)]
    pub validate_every: usize,
    /// Validation episodes.
    #[config(default = 100)]
    pub val_episodes: usize,
    /// Adaptation steps at validation.
    #[config(default = 1)]
    pub val_steps: usize,
    /// Write a checkpoint every this many iterations (0: only at the end).
    #[config(default = 100)]
    pub checkpoint_every: usize,
    /// Checkpoints kept.
    #[config(default = 3)]
    pub keep_last: usize,
    /// Validations without improvement before stopping (0: never stop early).
    #[config(default = 0)]
    pub patience: usize,
    /// Seed of the run's episodes.
    #[config(default = 0)]
    pub seed: u64,
}

impl TrainerConfig {
    /// Check every field.
    pub fn check(&self) -> metalearn_core::Result<()> {
        ensure_nonzero("iterations", self.iterations)?;
        ensure_nonzero("val_episodes", self.val_episodes)?;
        ensure_nonzero("keep_last", self.keep_last)
    }
}

/// One validation: score and its 95% CI.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Validation {
    /// Iterations done.
    pub iteration: usize,
    /// Mean accuracy (classification) or loss (regression) over validation episodes.
    pub mean: f64,
    /// 95% confidence half-width.
    pub ci95: f64,
}

/// The trainer's own state, saved in every checkpoint beside the learner's.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct TrainerState {
    /// What the validations measure (set by the first one).
    pub metric: Option<Metric>,
    /// The best validation so far.
    pub best: Option<Validation>,
    /// Validations since the best one.
    pub since_best: usize,
    /// Training wall time over every session of the run, s.
    pub elapsed_s: f64,
    /// Every validation so far.
    pub validations: Vec<Validation>,
    /// Whether early stopping ended the run.
    pub stopped_early: bool,
}

impl TrainerState {
    fn improves(&self, metric: Metric, v: f64) -> bool {
        match (self.best, metric) {
            (None, _) => true,
            (Some(b), Metric::Accuracy) => v > b.mean,
            (Some(b), Metric::Loss) => v < b.mean,
        }
    }
}

/// What a call to [`Trainer::fit`] did.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrainSummary {
    /// Iterations done at the end.
    pub iterations: usize,
    /// The checkpoint iteration the run resumed from (`None`: started fresh).
    pub resumed_from: Option<usize>,
    /// Checkpoints that could not be used (corrupt, truncated, from another learner), each
    /// naming the file and the reason.
    pub warnings: Vec<String>,
    /// The trainer's state at the end (best validation, all validations, time).
    pub state: TrainerState,
}

/// The layout of a run directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunDir {
    root: PathBuf,
}

impl RunDir {
    /// A run directory at `root` (created when training starts).
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self { root: root.into() }
    }
    /// The directory.
    pub fn root(&self) -> &Path {
        &self.root
    }
    /// `checkpoints/`.
    pub fn checkpoints(&self) -> PathBuf {
        self.root.join("checkpoints")
    }
    /// `best/model.mlstate`: the best model by validation score (no optimiser state).
    pub fn best_model(&self) -> PathBuf {
        self.root.join("best").join("model.mlstate")
    }
    /// `best/validation.json`.
    pub fn best_info(&self) -> PathBuf {
        self.root.join("best").join("validation.json")
    }
    /// `metrics.jsonl`.
    pub fn metrics(&self) -> PathBuf {
        self.root.join("metrics.jsonl")
    }
}

/// Read and check a state file (checkpoint or model).
pub fn read_state(path: &Path) -> crate::Result<LearnerState> {
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    LearnerState::from_bytes(&bytes).map_err(|e| match e {
        metalearn_core::Error::Corrupt { reason, .. } => metalearn_core::Error::Corrupt {
            what: path.display().to_string(),
            reason,
        }
        .into(),
        e => e.into(),
    })
}

/// Load the run's best model into `learner` (its optimiser starts fresh).
pub fn load_best(run: &RunDir, learner: &mut dyn AnyLearner) -> crate::Result<Validation> {
    let state = read_state(&run.best_model())?;
    learner.load_state(&state)?;
    let info = std::fs::read(run.best_info()).map_err(|e| Error::io(&run.best_info(), e))?;
    serde_json::from_slice(&info).map_err(|e| Error::RunDir {
        path: run.best_info().display().to_string(),
        reason: e.to_string(),
    })
}

/// Score `learner` after `steps` adaptation steps on `n` episodes drawn from `tasks` with seeds
/// `seed.child(0..n)` (in parallel, gathered in order: independent of the thread count).
pub fn evaluate(
    learner: &dyn AnyLearner,
    tasks: &dyn TaskDistribution,
    n: usize,
    steps: usize,
    seed: SeedStream,
) -> crate::Result<StepsCurve> {
    over_episodes(tasks, n, seed, |ep| Ok(vec![learner.evaluate(ep, steps)?]))
}

/// Like [`evaluate`], but the query metrics after every number of adaptation steps from 0 to
/// `steps` (the steps curve: does accuracy keep rising with more steps, or does adaptation
/// overshoot?).
pub fn evaluate_curve(
    learner: &dyn AnyLearner,
    tasks: &dyn TaskDistribution,
    n: usize,
    steps: usize,
    seed: SeedStream,
) -> crate::Result<StepsCurve> {
    over_episodes(tasks, n, seed, |ep| learner.adaptation_curve(ep, steps))
}

/// `score` on `n` episodes drawn with seeds `seed.child(0..n)`, in parallel, gathered in order.
fn over_episodes(
    tasks: &dyn TaskDistribution,
    n: usize,
    seed: SeedStream,
    score: impl Fn(&EpisodeData) -> metalearn_core::Result<AdaptationCurve> + Sync,
) -> crate::Result<StepsCurve> {
    ensure_nonzero("episodes", n)?;
    let curves = TaskPool::default().map((0..n).collect(), |_, i| {
        score(&tasks.sample(seed.child(i as u64).seed())?)
    })?;
    Ok(StepsCurve::from_curves(&curves)?)
}

/// Drives a learner through [`TrainerConfig::iterations`] meta-iterations in a [`RunDir`].
#[derive(Debug, Clone)]
pub struct Trainer {
    config: TrainerConfig,
    run: RunDir,
    progress: Progress,
}

impl Trainer {
    /// A trainer writing into `run`.
    pub fn new(config: TrainerConfig, run: RunDir) -> crate::Result<Self> {
        config.check()?;
        Ok(Self {
            config,
            run,
            progress: Progress::Auto,
        })
    }

    /// How progress is shown (default: a bar on a terminal, log lines otherwise).
    pub fn with_progress(mut self, progress: Progress) -> Self {
        self.progress = progress;
        self
    }

    /// The run directory.
    pub fn run_dir(&self) -> &RunDir {
        &self.run
    }

    /// Restore the newest usable checkpoint into `learner`; each unusable one is skipped with a
    /// warning naming it.
    fn resume(
        &self,
        learner: &mut dyn AnyLearner,
        warnings: &mut Vec<String>,
    ) -> crate::Result<Option<(usize, TrainerState)>> {
        for (_, path) in list_checkpoints(&self.run.checkpoints())? {
            let restored = read_state(&path).and_then(|state| {
                let trainer: TrainerState = serde_json::from_slice(state.part("trainer")?)
                    .map_err(|e| metalearn_core::Error::corrupt("trainer state", e.to_string()))?;
                learner.load_state(&state)?;
                Ok((state.iterations, trainer))
            });
            match restored {
                Ok(r) => return Ok(Some(r)),
                Err(e) => {
                    let w = format!("skipping checkpoint {}: {e}", path.display());
                    eprintln!("warning: {w}");
                    warnings.push(w);
                }
            }
        }
        Ok(None)
    }

    fn checkpoint(&self, learner: &dyn AnyLearner, trainer: &TrainerState) -> crate::Result<()> {
        let state = learner.state()?.with_part(
            "trainer",
            serde_json::to_vec(trainer).map_err(|e| metalearn_core::Error::Serde(e.to_string()))?,
        );
        let dir = self.run.checkpoints();
        write_atomic(
            &checkpoint_path(&dir, learner.iterations()),
            &state.to_bytes()?,
        )?;
        prune_checkpoints(&dir, self.config.keep_last)
    }

    fn validate(
        &self,
        learner: &dyn AnyLearner,
        val: &dyn TaskDistribution,
        trainer: &mut TrainerState,
        log: &mut MetricsLog,
    ) -> crate::Result<Validation> {
        let c = &self.config;
        let curve = evaluate(
            learner,
            val,
            c.val_episodes,
            c.val_steps,
            SeedStream::new(c.seed).named("validation"),
        )?;
        let point = curve
            .points
            .last()
            .ok_or(metalearn_core::Error::Empty("validation curve"))?;
        let (metric, s) = match &point.accuracy {
            Some(a) => (Metric::Accuracy, a),
            None => (Metric::Loss, &point.loss),
        };
        let v = Validation {
            iteration: learner.iterations(),
            mean: s.mean,
            ci95: s.ci95,
        };
        let best = trainer.improves(metric, v.mean);
        if best {
            let state = learner.state()?.without_optimizer();
            write_atomic(&self.run.best_model(), &state.to_bytes()?)?;
            write_atomic(
                &self.run.best_info(),
                &serde_json::to_vec_pretty(&v)
                    .map_err(|e| metalearn_core::Error::Serde(e.to_string()))?,
            )?;
            trainer.best = Some(v);
            trainer.since_best = 0;
        } else {
            trainer.since_best += 1;
        }
        trainer.metric = Some(metric);
        trainer.validations.push(v);
        log.push(&Record::Validation {
            iteration: v.iteration,
            metric,
            mean: v.mean,
            ci95: v.ci95,
            episodes: c.val_episodes,
            best,
        })?;
        Ok(v)
    }

    /// Meta-train `learner` on `train`, validating on `val`, until it has done
    /// [`TrainerConfig::iterations`] iterations or early stopping ends the run.
    ///
    /// If the run directory holds a checkpoint, training resumes from the newest usable one and
    /// gives bit-identical parameters and metrics (except wall times) to a run that never
    /// stopped: the episodes of iteration `i` are drawn with seeds `seed.child(i).child(j)`,
    /// and every piece of state is in the checkpoint. On an error (a diverging loss) the run
    /// stops with it; the checkpoints, the best model and the log written so far stay.
    pub fn fit(
        &self,
        learner: &mut dyn AnyLearner,
        train: &dyn TaskDistribution,
        val: &dyn TaskDistribution,
    ) -> crate::Result<TrainSummary> {
        let c = &self.config;
        std::fs::create_dir_all(self.run.root()).map_err(|e| Error::io(self.run.root(), e))?;
        let mut warnings = Vec::new();
        let resumed = self.resume(learner, &mut warnings)?;
        let resumed_from = resumed.as_ref().map(|r| r.0);
        let mut log = MetricsLog::open(&self.run.metrics(), resumed_from)?;
        let mut trainer = resumed.map(|r| r.1).unwrap_or_default();
        if resumed_from.is_none() && learner.iterations() < c.iterations {
            self.validate(learner, val, &mut trainer, &mut log)?;
        }
        let seed = SeedStream::new(c.seed).named("train");
        let start = learner.iterations();
        let mut bar = self
            .progress
            .start(c.iterations, start, learner.learner_name());
        let session = Instant::now();
        let elapsed0 = trainer.elapsed_s;
        while learner.iterations() < c.iterations && !trainer.stopped_early {
            let i = learner.iterations();
            let t0 = Instant::now();
            let it = seed.child(i as u64);
            let batch = (0..learner.meta_batch_size())
                .map(|j| train.sample(it.child(j as u64).seed()))
                .collect::<metalearn_core::Result<Vec<_>>>()?;
            let stats = learner.meta_step(&batch)?;
            let ms = t0.elapsed().as_secs_f64() * 1e3;
            trainer.elapsed_s = elapsed0 + session.elapsed().as_secs_f64();
            log.push(&Record::Step {
                iteration: i,
                meta_loss: stats.meta_loss,
                meta_accuracy: stats.meta_accuracy,
                ms,
                elapsed_s: trainer.elapsed_s,
            })?;
            let done = i + 1;
            bar.step(done, &stats, session.elapsed().as_secs_f64(), done - start);
            let due =
                |every: usize| (every > 0 && done.is_multiple_of(every)) || done == c.iterations;
            if due(c.validate_every) {
                let v = self.validate(learner, val, &mut trainer, &mut log)?;
                bar.validation(&v, trainer.metric);
                if c.patience > 0 && trainer.since_best >= c.patience {
                    trainer.stopped_early = true;
                }
            }
            if due(c.checkpoint_every) || trainer.stopped_early {
                self.checkpoint(learner, &trainer)?;
            }
        }
        bar.finish();
        Ok(TrainSummary {
            iterations: learner.iterations(),
            resumed_from,
            warnings,
            state: trainer,
        })
    }
}
