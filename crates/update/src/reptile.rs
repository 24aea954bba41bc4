//! Reptile (Nichol, Achiam & Schulman 2018, "On First-Order Meta-Learning Algorithms").
//!
//! For each task of a meta-batch: `k` SGD (or Adam) steps on all its examples (support and query: Reptile
//! has no held-out inner objective) — each step on all of them, or, with `inner_batch`, on
//! minibatches drawn without replacement as in the reference implementation — from θ give φ; then `θ ← θ + ε · (mean φ − θ)`, with ε
//! annealed linearly to 0 over training when asked. The reported meta-loss is the training loss
//! after adaptation. At test time only the support set is used: all of it every step, or, with
//! `eval_batch`, minibatches of it as the reference implementation's evaluation.

use crate::inner::{
    adapt, adapt_inner, evaluate, impl_inner_adapt, predictions, step_metrics, InnerAdam,
    InnerAdapt, Rule, Sizes,
};
use crate::state::{put_module, take_module};
use crate::Result as UpdateResult;
use burn::config::Config;
use burn::tensor::backend::Backend;
use metalearn_core::checkpoint::{Checkpoint, LearnerState};
use metalearn_core::episode::EpisodeData;
use metalearn_core::error::{ensure_nonzero, ensure_positive, Error};
use metalearn_core::learner::{check_finite, check_finite_model, MetaLearner, StepStats};
use metalearn_core::model::MetaTrainable;
use metalearn_core::parallel::TaskPool;
use metalearn_core::params;

/// Reptile hyper-parameters (defaults: Nichol et al.'s Omniglot settings, SGD inner loop).
///
/// | name | default | meaning | valid |
/// |---|---|---|---|
/// | `inner_lr` | 0.1 | inner SGD step size | > 0 |
/// | `inner_steps` | 5 | inner steps `k` per task during meta-training | ≥ 1 |
/// | `meta_batch_size` | 5 | tasks per outer step | ≥ 1 |
/// | `epsilon` | 1.0 | outer step size ε | (0, 1] |
/// | `anneal_to` | 0 | meta-iterations over which ε decays linearly to 0 (0: constant ε) | — |
/// | `threads` | 0 | worker threads (0: one per core) | — |
/// | `inner_adam` | false | Adam instead of SGD in the inner loop (training and test-time adaptation) | — |
/// | `adam_beta1` | 0.0 | Adam's β₁ (Nichol et al.: 0) | [0, 1) |
/// | `adam_beta2` | 0.999 | Adam's β₂ | [0, 1) |
/// | `carry_adam` | false | carry the inner Adam's moments from task to task, as the reference implementation (needs `inner_adam`) | — |
/// | `transductive` | true | evaluate the query batch in one forward pass (false: each query example with the support set, Nichol et al.'s protocol) | — |
/// | `inner_batch` | 0 | examples per inner step during meta-training (0: all of the task's; Nichol et al.: 10) | — |
/// | `eval_batch` | 0 | support examples per test-time adaptation step (0: the whole support set; Nichol et al.: 5 at 5-way, 10 at 20-way) | — |
/// | `seed` | 0 | seed of the inner minibatches' order (with the iteration and the task's place in the meta-batch) | — |
///
/// Nichol et al. use Adam (β₁ = 0) with learning rate 0.001 in the inner loop
/// ([`ReptileConfig::nichol_omniglot`]); the default here is plain SGD, for which 0.1 works well
/// on Omniglot. By default Adam's moments start from zero for every task, which keeps tasks
/// independent, so a meta-batch runs on parallel lanes. The reference implementation instead
/// keeps one Adam for the whole run: `carry_adam = true` does the same — the tasks of a
/// meta-batch adapt one after another, in order, each continuing the moments (and step counts)
/// the previous one left, and every test-time adaptation starts from the moments training
/// reached (without changing them). The moments are then part of the learner's state (its
/// checkpoints and best model). Their reported Omniglot numbers are non-transductive: set
/// `transductive = false` to compare.
#[derive(Config, Debug)]
pub struct ReptileConfig {
    /// Inner SGD step size.
    #[config(default = 0.1)]
    pub inner_lr: f64,
    /// Inner steps per task.
    #[config(default = 5)]
    pub inner_steps: usize,
    /// Tasks per outer step.
    #[config(default = 5)]
    pub meta_batch_size: usize,
    /// Outer step size ε.
    #[config(default = 1.0)]
    pub epsilon: f64,
    /// Anneal ε linearly to 0 over this many meta-iterations (0: constant).
    #[config(default = 0)]
    pub anneal_to: usize,
    /// Worker threads (0: one per core).
    #[config(default = 0)]
    pub threads: usize,
    /// Adam instead of SGD in the inner loop.
    #[config(default = false)]
    pub inner_adam: bool,
    /// Adam's β₁.
    #[config(default = 0.0)]
    pub adam_beta1: f64,
    /// Adam's β₂.
    #[config(default = 0.999)]
    pub adam_beta2: f64,
    /// Carry the inner Adam's moments from task to task (the reference implementation's one
    /// Adam for the whole run); the tasks of a meta-batch then adapt in order, one at a time.
    #[config(default = false)]
    pub carry_adam: bool,
    /// Evaluate the query batch in one forward pass (`false`: each query example with the
    /// support set).
    #[config(default = true)]
    pub transductive: bool,
    /// Examples per inner step during meta-training (0: all of the task's examples). The
    /// reference implementation's Omniglot setting is 10: five steps on minibatches of 10 are
    /// one pass over a 5-way task's 50 examples, in a shuffled order, without replacement
    /// (a new shuffle when a pass is used up). Test-time adaptation: see `eval_batch`.
    #[config(default = 0)]
    pub inner_batch: usize,
    /// Support examples per test-time adaptation step (validation and test; 0: the whole
    /// support set every step). The reference implementation's `--eval-batch`: 5 at 5-way, 10
    /// at 20-way, so that its 50 steps at 20-way 5-shot are five shuffled passes over the 100
    /// support examples rather than 50 full-batch steps. Drawn as `inner_batch`'s minibatches,
    /// from `seed`: the same order of support positions in every episode (an episode's classes
    /// come in random order, so the classes a minibatch holds vary).
    #[config(default = 0)]
    pub eval_batch: usize,
    /// Seed of the inner minibatches' order.
    #[config(default = 0)]
    pub seed: u64,
}

impl ReptileConfig {
    /// Nichol et al.'s (2018) Omniglot settings: inner Adam (lr 0.001, β₁ = 0) carried through
    /// the run as their implementation, 5 inner steps, meta-batch 5, ε = 1 annealed linearly to
    /// 0 over `iterations` (the paper: 100,000), non-transductive evaluation.
    pub fn nichol_omniglot(iterations: usize) -> Self {
        Self::new()
            .with_inner_lr(1e-3)
            .with_inner_adam(true)
            .with_carry_adam(true)
            .with_anneal_to(iterations)
            .with_transductive(false)
    }

    /// Iterated model averaging (federated averaging over tasks): every iteration fine-tunes the
    /// current initialisation on each task of a meta-batch with `inner_steps` SGD steps of size
    /// `inner_lr` and *replaces* it by the uniform average of the fine-tuned models — Reptile
    /// with ε = 1 and no annealing, so that it can be compared with MAML and Reptile on the same
    /// tasks.
    pub fn averaging(inner_lr: f64, inner_steps: usize, meta_batch_size: usize) -> Self {
        Self::new()
            .with_inner_lr(inner_lr)
            .with_inner_steps(inner_steps)
            .with_meta_batch_size(meta_batch_size)
            .with_epsilon(1.0)
            .with_anneal_to(0)
    }

    /// Check every field.
    pub fn validate(&self) -> metalearn_core::Result<()> {
        ensure_positive("inner_lr", self.inner_lr)?;
        ensure_nonzero("inner_steps", self.inner_steps)?;
        ensure_nonzero("meta_batch_size", self.meta_batch_size)?;
        for (name, beta) in [
            ("adam_beta1", self.adam_beta1),
            ("adam_beta2", self.adam_beta2),
        ] {
            if !(0.0..1.0).contains(&beta) {
                return Err(Error::config(
                    name,
                    format!("must be in [0, 1), got {beta}"),
                ));
            }
        }
        if self.carry_adam && !self.inner_adam {
            return Err(Error::config(
                "carry_adam",
                "carries the inner Adam's moments, so it needs inner_adam = true",
            ));
        }
        if !(self.epsilon > 0.0 && self.epsilon <= 1.0) {
            return Err(Error::config(
                "epsilon",
                format!("must be in (0, 1], got {}", self.epsilon),
            ));
        }
        Ok(())
    }
}

/// Reptile over any [`MetaTrainable`] model.
pub struct Reptile<B: Backend, M: MetaTrainable<B, D>, const D: usize> {
    model: M,
    config: ReptileConfig,
    device: B::Device,
    pool: TaskPool,
    iterations: usize,
    /// The inner Adam carried from task to task (`carry_adam`).
    carried: Option<InnerAdam<B>>,
}

impl<B: Backend, M: MetaTrainable<B, D>, const D: usize> std::fmt::Debug for Reptile<B, M, D> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Reptile")
            .field("config", &self.config)
            .field("iterations", &self.iterations)
            .finish()
    }
}

impl<B: Backend, M: MetaTrainable<B, D>, const D: usize> Reptile<B, M, D> {
    /// Validate `config` and wrap `model`.
    pub fn new(config: ReptileConfig, model: M, device: B::Device) -> UpdateResult<Self> {
        config.validate()?;
        Ok(Self {
            model: params::require_grad(model),
            pool: TaskPool::new(config.threads),
            carried: config.carry_adam.then(|| fresh_adam(&config)),
            config,
            device,
            iterations: 0,
        })
    }

    /// The meta-learned initialisation.
    pub fn model(&self) -> &M {
        &self.model
    }

    /// ε at the current iteration.
    pub fn epsilon(&self) -> f64 {
        let c = &self.config;
        if c.anneal_to == 0 {
            c.epsilon
        } else {
            c.epsilon * (1.0 - self.iterations as f64 / c.anneal_to as f64).max(0.0)
        }
    }

    /// The inner-loop rule a task starts with: SGD, Adam with zero moments, or (`carry_adam`)
    /// Adam with the carried moments.
    fn rule(&self) -> Rule<B> {
        let c = &self.config;
        match &self.carried {
            Some(adam) => Rule::Adam(adam.clone()),
            None if c.inner_adam => Rule::Adam(fresh_adam(c)),
            None => Rule::Sgd(Sizes::Uniform(c.inner_lr)),
        }
    }

    /// The inner Adam carried from task to task (`carry_adam`), if any.
    pub fn carried_adam(&self) -> Option<&InnerAdam<B>> {
        self.carried.as_ref()
    }

    /// Test-time adaptation: `steps` steps from θ on the episode's support set, all of it or
    /// (`eval_batch`) minibatches of it; `on_step(s, φ_s)` sees every iterate, φ₀ included.
    fn adapt_support(
        &self,
        episode: &EpisodeData,
        steps: usize,
        mut on_step: impl FnMut(usize, &M::InnerModule) -> metalearn_core::Result<()>,
    ) -> metalearn_core::Result<M::InnerModule> {
        let (batch, n) = (self.config.eval_batch, episode.support.len());
        if batch == 0 || batch >= n {
            return adapt_inner::<B, M, D>(
                self.start(),
                episode,
                steps,
                self.rule(),
                &self.device,
                on_step,
            );
        }
        let order = metalearn_core::SeedStream::new(self.config.seed).named("reptile test batches");
        let rows = minibatches(n, batch, steps, order);
        on_step(0, &self.start())?;
        adapt_on_rows::<B, M, D>(
            self.start(),
            episode,
            &rows,
            &mut self.rule(),
            &self.device,
            |s, phi| on_step(s + 1, phi),
        )
    }

    /// The query metrics of `phi`, adapted by `steps` steps, under this learner's protocol.
    fn metrics(
        &self,
        phi: &M::InnerModule,
        episode: &EpisodeData,
        steps: usize,
    ) -> metalearn_core::Result<metalearn_core::learner::StepMetrics> {
        step_metrics::<B, M::InnerModule, D>(
            phi,
            episode,
            steps,
            self.config.transductive,
            &self.device,
        )
    }
}

/// Inner Adam with zero moments.
fn fresh_adam<B: Backend>(c: &ReptileConfig) -> InnerAdam<B> {
    InnerAdam::new(c.inner_lr, c.adam_beta1, c.adam_beta2, 1e-8)
}

/// The checkpoint part holding the carried inner Adam.
const CARRIED_ADAM: &str = "inner_adam";

impl_inner_adapt!(Reptile, Rule<B>, rule);

impl<B: Backend, M: MetaTrainable<B, D>, const D: usize> MetaLearner<D> for Reptile<B, M, D> {
    type Adapted = M::InnerModule;

    fn meta_step(&mut self, episodes: &[EpisodeData]) -> metalearn_core::Result<StepStats> {
        metalearn_core::episode::check_meta_batch(episodes)?;
        let theta = self.model.valid();
        let (steps, device) = (self.config.inner_steps, &self.device);
        let (batch, iteration) = (self.config.inner_batch, self.iterations as u64);
        let order = metalearn_core::SeedStream::new(self.config.seed)
            .named("reptile inner batches")
            .child(iteration);
        // Task `j` of the meta-batch from θ with `rule`.
        let task = |j: usize, theta: M::InnerModule, ep: &EpisodeData, rule: &mut Rule<B>| {
            // Reptile trains on all of a meta-training task's examples.
            let ep = ep.all_as_support()?;
            let phi = if batch == 0 || batch >= ep.support.len() {
                adapt::<B, M, D>(theta, &ep, steps, &mut *rule, device)?
            } else {
                let rows = minibatches(ep.support.len(), batch, steps, order.child(j as u64));
                adapt_on_rows::<B, M, D>(theta, &ep, &rows, &mut *rule, device, |_, _| Ok(()))?
            };
            let (loss, acc) = evaluate::<B, M::InnerModule, D>(&phi, &ep, true, device)?;
            Ok((phi, loss, acc))
        };
        let parts = if let Some(adam) = &self.carried {
            // One Adam through the meta-batch: the tasks in order, on one lane.
            let start = (theta.clone(), Rule::Adam(adam.clone()));
            let (parts, rule) = self
                .pool
                .map(vec![start], |_, (theta, mut rule)| {
                    let parts = episodes
                        .iter()
                        .enumerate()
                        .map(|(j, ep)| task(j, theta.clone(), ep, &mut rule))
                        .collect::<metalearn_core::Result<Vec<_>>>()?;
                    Ok((parts, rule))
                })?
                .pop()
                .ok_or_else(|| {
                    Error::ThreadPool("the carried-Adam job returned no result".into())
                })?;
            if let Rule::Adam(adam) = rule {
                self.carried = Some(adam);
            }
            parts
        } else {
            let jobs: Vec<_> = episodes
                .iter()
                .map(|e| (theta.clone(), e, self.rule()))
                .collect();
            self.pool.map(jobs, |j, (theta, ep, mut rule)| {
                task(j, theta, ep, &mut rule)
            })?
        };
        let mut phis = Vec::with_capacity(parts.len());
        let (mut loss, mut acc, mut n_acc) = (0.0, 0.0, 0usize);
        for (phi, l, a) in parts {
            phis.push(phi);
            loss += l;
            if let Some(a) = a {
                acc += a;
                n_acc += 1;
            }
        }
        let n = phis.len() as f64;
        let loss = check_finite(self.iterations, loss / n)?;
        let mean = params::average(&phis)?;
        let next = params::interpolate(theta, &mean, self.epsilon())?;
        check_finite_model(self.iterations, &next)?;
        self.model = params::require_grad(<M as burn::module::AutodiffModule<_>>::from_inner(next));
        let stats = StepStats {
            iteration: self.iterations,
            meta_loss: loss,
            meta_accuracy: (n_acc > 0).then(|| acc / n_acc as f64),
        };
        self.iterations += 1;
        Ok(stats)
    }

    fn meta_batch_size(&self) -> usize {
        self.config.meta_batch_size
    }

    fn adapt(&self, episode: &EpisodeData, steps: usize) -> metalearn_core::Result<M::InnerModule> {
        self.adapt_support(episode, steps, |_, _| Ok(()))
    }

    fn adaptation_curve(
        &self,
        episode: &EpisodeData,
        steps: usize,
    ) -> metalearn_core::Result<metalearn_core::learner::AdaptationCurve> {
        let mut curve = Vec::with_capacity(steps + 1);
        self.adapt_support(episode, steps, |s, phi| {
            curve.push(self.metrics(phi, episode, s)?);
            Ok(())
        })?;
        Ok(curve)
    }

    fn evaluate(
        &self,
        episode: &EpisodeData,
        steps: usize,
    ) -> metalearn_core::Result<metalearn_core::learner::StepMetrics> {
        let phi = self.adapt(episode, steps)?;
        self.metrics(&phi, episode, steps)
    }

    fn predict(&self, episode: &EpisodeData, steps: usize) -> metalearn_core::Result<Vec<f32>> {
        let phi = self.adapt(episode, steps)?;
        predictions::<B, M::InnerModule, D>(
            &phi,
            episode,
            steps,
            self.config.transductive,
            &self.device,
        )
    }
}

/// One inner step from `start` per entry of `rows`, each on those rows of the episode's support
/// set; `on_step(s, φ)` sees the iterate after step `s + 1`.
fn adapt_on_rows<B: Backend, M: MetaTrainable<B, D>, const D: usize>(
    start: M::InnerModule,
    episode: &EpisodeData,
    rows: &[Vec<usize>],
    rule: &mut Rule<B>,
    device: &B::Device,
    mut on_step: impl FnMut(usize, &M::InnerModule) -> metalearn_core::Result<()>,
) -> metalearn_core::Result<M::InnerModule> {
    let mut phi = start;
    for (s, r) in rows.iter().enumerate() {
        let support = episode.support.select(r)?;
        // One step reads only the support set.
        let step = EpisodeData {
            kind: episode.kind,
            query: support.clone(),
            support,
        };
        phi = adapt::<B, M, D>(phi, &step, 1, &mut *rule, device)?;
        on_step(s, &phi)?;
    }
    Ok(phi)
}

/// The rows of `steps` minibatches of `batch` out of `n` examples: consecutive chunks of a
/// stream of shuffled passes over the examples (a chunk may span two passes), as the reference
/// implementation draws them.
fn minibatches(
    n: usize,
    batch: usize,
    steps: usize,
    seed: metalearn_core::SeedStream,
) -> Vec<Vec<usize>> {
    use rand::seq::SliceRandom;
    let mut rng = seed.rng();
    let mut pass: Vec<usize> = Vec::new();
    let mut out = Vec::with_capacity(steps);
    for _ in 0..steps {
        let mut rows = Vec::with_capacity(batch);
        while rows.len() < batch {
            if pass.is_empty() {
                pass = (0..n).collect();
                pass.shuffle(&mut rng);
            }
            rows.extend(pass.pop());
        }
        out.push(rows);
    }
    out
}

impl<B: Backend, M: MetaTrainable<B, D>, const D: usize> Checkpoint for Reptile<B, M, D> {
    fn learner_name(&self) -> &'static str {
        "Reptile"
    }

    fn iterations(&self) -> usize {
        self.iterations
    }

    fn parameters(&self) -> Vec<f64> {
        metalearn_core::params::to_vec(&self.model)
    }

    /// The model and the iteration counter (ε's annealing is a function of it; Reptile has no
    /// outer optimiser), and with `carry_adam` the carried inner Adam (kept in the best model
    /// too: test-time adaptation starts from it).
    fn state(&self) -> metalearn_core::Result<LearnerState> {
        let state = put_module::<B, M>(
            LearnerState::new(self.learner_name(), self.iterations),
            "model",
            &self.model,
        )?;
        Ok(match &self.carried {
            Some(adam) => state.with_part(CARRIED_ADAM, adam.state_to_bytes()?),
            None => state,
        })
    }

    /// A state without a carried Adam (saved without `carry_adam`) starts one with zero moments.
    fn load_state(&mut self, state: &LearnerState) -> metalearn_core::Result<()> {
        state.expect_learner(self.learner_name())?;
        self.model = take_module::<B, M>(state, "model", &self.model, &self.device)?;
        self.iterations = state.iterations;
        if self.carried.is_some() {
            let fresh = fresh_adam(&self.config);
            self.carried = Some(match state.parts.get(CARRIED_ADAM) {
                Some(bytes) => fresh.with_state_bytes(bytes, &self.device)?,
                None => fresh,
            });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use metalearn_core::SeedStream;

    #[test]
    fn inner_minibatches_are_passes_without_replacement() {
        // Nichol et al.'s Omniglot setting: 5 minibatches of 10 out of 50 are one pass.
        let rows = minibatches(50, 10, 5, SeedStream::new(3));
        assert_eq!(rows.len(), 5);
        let mut seen: Vec<usize> = rows.concat();
        seen.sort_unstable();
        assert_eq!(seen, (0..50).collect::<Vec<_>>(), "every example once");
        assert_ne!(rows[0], (0..10).collect::<Vec<_>>(), "shuffled");
        // Seeded: the same seed, the same order; another seed, another order.
        assert_eq!(rows, minibatches(50, 10, 5, SeedStream::new(3)));
        assert_ne!(rows, minibatches(50, 10, 5, SeedStream::new(4)));
        // More steps than a pass: every example is used once per pass.
        let long = minibatches(6, 4, 3, SeedStream::new(1)).concat();
        for k in 0..6 {
            assert_eq!(long.iter().filter(|&&r| r == k).count(), 2, "{long:?}");
        }
    }
}
