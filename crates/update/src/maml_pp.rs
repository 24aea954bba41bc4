//! MAML++ (Antoniou, Edwards & Storkey, ICLR 2019, "How to train your MAML"): MAML with the
//! paper's fixes for unstable, slow meta-training, each a switch of [`MamlPlusPlusConfig`]:
//!
//! - **Multi-step loss (MSL)**: the meta-objective is a weighted sum of the query losses after
//!   *every* inner step, not only the last; the weights start uniform and anneal to the last
//!   step over `msl_iterations` (the paper's importance vector: non-final weights fall linearly
//!   to `0.03 / K`, the final weight takes the rest), after which only the last step counts.
//! - **Learned per-layer per-step inner learning rates (LSLR)**: one learned step size per
//!   parameter tensor and inner step (a `[K, tensors]` matrix, each started at `inner_lr`; as in
//!   the reference implementation every tensor of a layer — weight and bias — has its own),
//!   meta-learned with θ.
//! - **Derivative-order annealing**: first-order meta-gradients for the first
//!   `first_order_iterations` iterations, exact second order after.
//! - **Cosine annealing** of the outer learning rate from `outer_lr` to `min_outer_lr` over
//!   `anneal_iterations`.
//!
//! - **Per-step batch-norm weights and biases (BNWB)**: `per_step_groups = ["norms"]` gives the
//!   parameters of those groups (the zoo Conv4's batch-norm `γ`, `β`) one meta-learned copy per
//!   inner-loop iterate: φ₀ (the support pass of step 1) uses copy 0, the iterate after step
//!   `s` (the query pass scored after step `s` and the support pass of step `s + 1`) uses copy
//!   `s`, so `K + 1` copies in all (the reference implementation's `K` copies index the step
//!   instead of the iterate, scoring the query after step `s` with the copy of step `s`; same
//!   expressiveness). Those parameters are not adapted in the inner loop (as in the reference
//!   implementation); beyond the trained steps at test time the last copy is used. Any
//!   parameter group works, not only batch norm.
//!
//! Not here: per-step batch-norm *running statistics* (BNRS). The zoo's models always normalise
//! with the statistics of the batch they see (transductive, as MAML's published numbers), so
//! there are no running statistics to keep per step.
//!
//! Exact second order runs on `Autodiff<Autodiff<B>>` as in [`Maml`](crate::Maml); the
//! learned rates are leaves of the outer graph, so their meta-gradient is exact too (checked
//! against f64 finite differences in `tests/gradcheck_f64.rs`).

use crate::inner::{
    adaptation_methods, collect_grads, evaluate, group_mask, mean_grads, InnerAdapt, InnerUpdate,
    AA, AB,
};
use crate::outer::{Learned, Outer};
use crate::Result as UpdateResult;
use burn::config::Config;
use burn::module::{AutodiffModule, HasAutodiffModule, Module, Param};
use burn::optim::GradientsParams;
use burn::tensor::backend::Backend;
use burn::tensor::{Tensor, TensorData};
use metalearn_core::checkpoint::{Checkpoint, LearnerState};
use metalearn_core::episode::EpisodeData;
use metalearn_core::error::{ensure_nonzero, ensure_positive, Error};
use metalearn_core::learner::{MetaLearner, StepStats};
use metalearn_core::loss::{accuracy, scalar, task_loss};
use metalearn_core::model::{check_episode, MetaModule, MetaTrainable};
use metalearn_core::parallel::TaskPool;
use metalearn_core::params;

/// MAML++ hyper-parameters. The defaults are the paper's Omniglot settings (Antoniou et al.
/// 2019, §5 and their released configurations): 5 inner steps of 0.1, meta-batch 8, Adam 1e-3
/// cosine-annealed to 1e-5 over 150 epochs of 500 iterations, multi-step loss over the first
/// 15 epochs.
///
/// | name | default | meaning | valid |
/// |---|---|---|---|
/// | `inner_lr` | 0.1 | inner step size (the initial value of every learned rate with `learned_rates`) | > 0 |
/// | `inner_steps` | 5 | inner steps in meta-training | ≥ 1 |
/// | `meta_batch_size` | 8 | tasks per meta-update | ≥ 1 |
/// | `outer_lr` | 0.001 | Adam learning rate of the meta-update (the cosine schedule's start) | > 0 |
/// | `min_outer_lr` | 1e-5 | the cosine schedule's end | ≥ 0, ≤ `outer_lr` |
/// | `cosine_annealing` | true | anneal the outer learning rate (false: constant `outer_lr`) | — |
/// | `anneal_iterations` | 75,000 | iterations of the cosine schedule | ≥ 1 |
/// | `multi_step_loss` | true | score the query after every inner step (MSL) | — |
/// | `msl_iterations` | 7,500 | iterations over which MSL anneals to the last step | ≥ 1 |
/// | `learned_rates` | true | learned per-tensor per-step inner rates (LSLR) | — |
/// | `second_order` | true | exact second order (after `first_order_iterations`) | — |
/// | `first_order_iterations` | 0 | derivative-order annealing: first order before this iteration | — |
/// | `threads` | 0 | worker threads for a meta-batch's tasks (0: one per core) | — |
/// | `transductive` | true | the query batch in one forward pass at evaluation | — |
/// | `adapt_only` / `freeze` | [] | parameter groups the inner loop adapts / leaves (see [`MamlConfig`](crate::MamlConfig)) | each names ≥ 1 parameter |
/// | `per_step_groups` | [] | parameter groups with one meta-learned copy per inner-loop iterate, not adapted (BNWB: `["norms"]` on Conv4) | each names ≥ 1 parameter; ≥ 1 parameter still adapts |
#[derive(Config, Debug)]
pub struct MamlPlusPlusConfig {
    /// Inner step size (initial learned rate).
    #[config(default = 0.1)]
    pub inner_lr: f64,
    /// Inner steps during meta-training.
    #[config(default = 5)]
    pub inner_steps: usize,
    /// Tasks per meta-update.
    #[config(default = 8)]
    pub meta_batch_size: usize,
    /// Adam learning rate of the meta-update.
    #[config(default = 1e-3)]
    pub outer_lr: f64,
    /// End of the cosine schedule.
    #[config(default = 1e-5)]
    pub min_outer_lr: f64,
    /// Cosine-anneal the outer learning rate.
    #[config(default = true)]
    pub cosine_annealing: bool,
    /// Length of the cosine schedule, iterations.
    #[config(default = 75_000)]
    pub anneal_iterations: usize,
    /// Multi-step loss.
    #[config(default = true)]
    pub multi_step_loss: bool,
    /// Iterations over which the multi-step loss anneals to the last step.
    #[config(default = 7_500)]
    pub msl_iterations: usize,
    /// Learned per-tensor per-step inner learning rates.
    #[config(default = true)]
    pub learned_rates: bool,
    /// Exact second order (after `first_order_iterations`).
    #[config(default = true)]
    pub second_order: bool,
    /// First order before this iteration (derivative-order annealing).
    #[config(default = 0)]
    pub first_order_iterations: usize,
    /// Worker threads for a meta-batch's tasks (0: one per core).
    #[config(default = 0)]
    pub threads: usize,
    /// Evaluate the query batch in one forward pass.
    #[config(default = true)]
    pub transductive: bool,
    /// Adapt only these parameter groups in the inner loop (empty: all).
    #[config(default = "Vec::new()")]
    pub adapt_only: Vec<String>,
    /// Never adapt these parameter groups in the inner loop.
    #[config(default = "Vec::new()")]
    pub freeze: Vec<String>,
    /// Parameter groups with one meta-learned copy per inner-loop iterate (BNWB: `["norms"]`).
    #[config(default = "Vec::new()")]
    pub per_step_groups: Vec<String>,
}

impl MamlPlusPlusConfig {
    /// Check every field.
    pub fn validate(&self) -> metalearn_core::Result<()> {
        ensure_positive("inner_lr", self.inner_lr)?;
        ensure_positive("outer_lr", self.outer_lr)?;
        ensure_nonzero("inner_steps", self.inner_steps)?;
        ensure_nonzero("meta_batch_size", self.meta_batch_size)?;
        ensure_nonzero("anneal_iterations", self.anneal_iterations)?;
        ensure_nonzero("msl_iterations", self.msl_iterations)?;
        if !(self.min_outer_lr >= 0.0 && self.min_outer_lr <= self.outer_lr) {
            return Err(Error::config(
                "min_outer_lr",
                format!(
                    "must be in [0, outer_lr = {}], got {}",
                    self.outer_lr, self.min_outer_lr
                ),
            ));
        }
        Ok(())
    }

    /// Which parameters (of `names`, visiting order) adapt in the inner loop, and which have
    /// per-step copies. A group that names no parameter, or a selection that adapts nothing, is
    /// an [`Error::InvalidConfig`] naming the field.
    pub fn masks(&self, names: &[String]) -> metalearn_core::Result<(Vec<bool>, Vec<bool>)> {
        let per_step = if self.per_step_groups.is_empty() {
            vec![false; names.len()]
        } else {
            // Every group must name a parameter; adapting nothing is checked below.
            group_mask(names, 0, &self.per_step_groups, &[]).map_err(|e| match e {
                Error::InvalidConfig { reason, .. } => Error::config("per_step_groups", reason),
                e => e,
            })?
        };
        let mut mask = group_mask(names, 0, &self.adapt_only, &self.freeze)?;
        for (m, p) in mask.iter_mut().zip(&per_step) {
            *m &= !p;
        }
        if !mask.contains(&true) {
            return Err(Error::config(
                "per_step_groups",
                "with adapt_only, freeze and per_step_groups together no parameter adapts",
            ));
        }
        Ok((mask, per_step))
    }

    /// The outer learning rate at `iteration`.
    pub fn outer_lr_at(&self, iteration: usize) -> f64 {
        if !self.cosine_annealing {
            return self.outer_lr;
        }
        let t = (iteration as f64 / self.anneal_iterations as f64).min(1.0);
        self.min_outer_lr
            + 0.5 * (self.outer_lr - self.min_outer_lr) * (1.0 + (std::f64::consts::PI * t).cos())
    }

    /// The query-loss weight of each inner step 1..=K at `iteration` (they sum to 1).
    pub fn loss_weights_at(&self, iteration: usize) -> Vec<f64> {
        let k = self.inner_steps;
        let mut w = vec![0.0; k];
        if !self.multi_step_loss || iteration >= self.msl_iterations || k == 1 {
            w[k - 1] = 1.0;
            return w;
        }
        let kf = k as f64;
        let p = iteration as f64 / self.msl_iterations as f64;
        let floor = 0.03 / kf;
        for x in &mut w[..k - 1] {
            *x = (1.0 / kf - p / kf).max(floor);
        }
        w[k - 1] = 1.0 - (kf - 1.0) * w[0];
        w
    }

    /// Whether the meta-gradient at `iteration` is second order.
    pub fn second_order_at(&self, iteration: usize) -> bool {
        self.second_order && iteration >= self.first_order_iterations
    }
}

/// The learned inner step sizes: one per inner step (rows) and parameter tensor (columns).
#[derive(Module, Debug)]
pub struct StepRates<B: Backend> {
    /// `[steps, tensors]`.
    pub rates: Param<Tensor<B, 2>>,
}

/// The per-step copies of the parameters in `per_step_groups`: one `[K + 1, numel]` matrix per
/// such parameter tensor (visiting order), row `s` used by the inner-loop iterate after `s`
/// steps.
#[derive(Module, Debug)]
pub struct StepParams<B: Backend> {
    /// One `[K + 1, numel]` matrix per per-step parameter tensor.
    pub copies: Vec<Param<Tensor<B, 2>>>,
}

impl<B: Backend> StepParams<B> {
    /// Row `s` (the last row beyond the trained steps) of copy `j`, flattened.
    fn row(&self, j: usize, s: usize) -> Tensor<B, 1> {
        let m = self.copies[j].val();
        let [rows, n] = m.dims();
        let s = s.min(rows - 1);
        m.slice([s..s + 1, 0..n]).reshape([n])
    }

    /// `phi` with every per-step tensor (`per_step`, visiting order) replaced by row `s` of
    /// its copies.
    fn put<N: Module<B>>(&self, phi: N, per_step: &[bool], s: usize) -> metalearn_core::Result<N> {
        let mut j = 0;
        params::map_indexed(phi, |i, t| {
            if !per_step[i] {
                return Ok(t);
            }
            j += 1;
            Ok(self.row(j - 1, s))
        })
    }
}

/// MAML++ over any [`MetaTrainable`] model.
pub struct MamlPlusPlus<B: Backend, M: MetaTrainable<B, D>, const D: usize> {
    outer: Outer<B, M>,
    rates: Option<Learned<B, StepRates<AB<B>>>>,
    /// Per-step copies of the `per_step_groups` parameters.
    step_params: Option<Learned<B, StepParams<AB<B>>>>,
    /// Which parameter tensors have per-step copies.
    per_step: Vec<bool>,
    mask: Vec<bool>,
    config: MamlPlusPlusConfig,
    device: B::Device,
    pool: TaskPool,
}

impl<B: Backend, M: MetaTrainable<B, D>, const D: usize> std::fmt::Debug for MamlPlusPlus<B, M, D> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MamlPlusPlus")
            .field("config", &self.config)
            .field("iterations", &self.outer.iterations())
            .finish()
    }
}

/// MAML++'s inner rule for one adaptation on plain values: learned step sizes `[step][tensor]`
/// (the last row for steps beyond those trained) or one `lr`, on the tensors its mask marks.
/// Made by the learner ([`InnerAdapt::inner_rule`](crate::inner::InnerAdapt::inner_rule)).
pub struct PerStep {
    rates: Option<Vec<Vec<f64>>>,
    lr: f64,
    mask: Vec<bool>,
    /// Per-step copies (host values `[tensor][iterate][element]`) of the tensors they replace.
    copies: Option<(Vec<Vec<Vec<f64>>>, Vec<bool>)>,
    calls: usize,
}

impl<Bk: Backend> InnerUpdate<Bk> for PerStep {
    fn update(&mut self, i: usize, t: Tensor<Bk, 1>, g: Option<Tensor<Bk, 1>>) -> Tensor<Bk, 1> {
        let step = self.calls / self.mask.len().max(1);
        self.calls += 1;
        if let Some((copies, per_step)) = &self.copies {
            if per_step[i] {
                // The next iterate (after step + 1 steps) takes its own copy.
                let j = per_step[..i].iter().filter(|&&p| p).count();
                let rows = &copies[j];
                let v = &rows[(step + 1).min(rows.len() - 1)];
                return Tensor::from_data(TensorData::new(v.clone(), [v.len()]), &t.device());
            }
        }
        match g {
            Some(g) if self.mask.get(i).copied().unwrap_or(false) => {
                let lr = match &self.rates {
                    Some(r) => r[step.min(r.len() - 1)][i],
                    None => self.lr,
                };
                t - g.mul_scalar(lr)
            }
            _ => t,
        }
    }
}

/// One task's contribution: gradients of θ and the rates, the last step's query loss and
/// accuracy.
struct TaskPart {
    theta: GradientsParams,
    rates: Option<GradientsParams>,
    step_params: Option<GradientsParams>,
    loss: f64,
    accuracy: Option<f64>,
}

impl<B: Backend, M: MetaTrainable<B, D>, const D: usize> MamlPlusPlus<B, M, D> {
    /// Validate `config` and wrap `model` (its parameters are the initial θ; every learned rate
    /// starts at `inner_lr`).
    pub fn new(config: MamlPlusPlusConfig, model: M, device: B::Device) -> UpdateResult<Self> {
        config.validate()?;
        let names = params::names(&model);
        let (mask, per_step) = config.masks(&names)?;
        let rates = config.learned_rates.then(|| {
            let init = vec![config.inner_lr; config.inner_steps * names.len()];
            let t = Tensor::<AB<B>, 2>::from_data(
                TensorData::new(init, [config.inner_steps, names.len()]),
                &device,
            );
            Learned::new(StepRates {
                rates: Param::from_tensor(t),
            })
        });
        // Every copy starts at θ's value of its tensor.
        let step_params = per_step.contains(&true).then(|| {
            let copies = params::tensors(&model)
                .into_iter()
                .zip(&per_step)
                .filter(|(_, &p)| p)
                .map(|((_, t), _)| {
                    let n = t.dims()[0];
                    Param::from_tensor(
                        t.detach()
                            .reshape([1, n])
                            .repeat_dim(0, config.inner_steps + 1),
                    )
                })
                .collect();
            Learned::new(StepParams { copies })
        });
        Ok(Self {
            outer: Outer::new(model),
            rates,
            step_params,
            per_step,
            mask,
            pool: TaskPool::new(config.threads),
            config,
            device,
        })
    }

    /// The meta-learned initialisation θ.
    pub fn model(&self) -> &M {
        self.outer.model()
    }

    /// The learned inner rates `[step][tensor]` (tensors in visiting order), if learned.
    pub fn rates(&self) -> Option<Vec<Vec<f64>>> {
        self.rates.as_ref().map(|r| {
            let t = r.module().rates.val();
            let [_, n] = t.dims();
            let v: Vec<f64> = t.into_data().iter::<f64>().collect();
            v.chunks(n.max(1)).map(<[f64]>::to_vec).collect()
        })
    }

    /// The hyper-parameters.
    pub fn config(&self) -> &MamlPlusPlusConfig {
        &self.config
    }

    /// The per-step copies of the `per_step_groups` parameters, host values
    /// `[tensor][iterate][element]` (tensors in visiting order), if any.
    pub fn step_params(&self) -> Option<Vec<Vec<Vec<f64>>>> {
        self.step_params.as_ref().map(|m| {
            m.module()
                .copies
                .iter()
                .map(|c| {
                    let t = c.val();
                    let [_, n] = t.dims();
                    let v: Vec<f64> = t.into_data().iter::<f64>().collect();
                    v.chunks(n.max(1)).map(<[f64]>::to_vec).collect()
                })
                .collect()
        })
    }

    fn rule(&self) -> PerStep {
        PerStep {
            rates: self.rates(),
            lr: self.config.inner_lr,
            mask: self.mask.clone(),
            copies: self.step_params().map(|c| (c, self.per_step.clone())),
            calls: 0,
        }
    }

    /// φ₀ of an adaptation from θ = `model`: the per-step tensors take their copy 0.
    fn start_from(&self, model: M::InnerModule) -> metalearn_core::Result<M::InnerModule> {
        match &self.step_params {
            Some(m) => m.module().valid().put(model, &self.per_step, 0),
            None => Ok(model),
        }
    }

    /// The meta-objective at θ = `model` and learned rates `rates` (`[step][tensor]`, or the
    /// learner's own when `None`) at the learner's current iteration: the mean over
    /// `episodes` of the weighted query losses after each inner step. Used by gradient checks.
    pub fn meta_objective(
        &self,
        model: &M::InnerModule,
        rates: Option<Vec<Vec<f64>>>,
        episodes: &[EpisodeData],
    ) -> metalearn_core::Result<f64> {
        self.meta_objective_with(model, rates, None, episodes)
    }

    /// [`meta_objective`](Self::meta_objective) with the per-step copies `step_params`
    /// (`[tensor][iterate][element]`, as [`step_params`](Self::step_params); the learner's own
    /// when `None`).
    pub fn meta_objective_with(
        &self,
        model: &M::InnerModule,
        rates: Option<Vec<Vec<f64>>>,
        step_params: Option<Vec<Vec<Vec<f64>>>>,
        episodes: &[EpisodeData],
    ) -> metalearn_core::Result<f64> {
        let weights = self.config.loss_weights_at(self.outer.iterations());
        let mut total = 0.0;
        for ep in episodes {
            let mut rule = self.rule();
            if rates.is_some() {
                rule.rates = rates.clone();
            }
            if let Some(c) = &step_params {
                rule.copies = Some((c.clone(), self.per_step.clone()));
            }
            // φ₀: the per-step tensors at their copy 0.
            let mut start = model.clone();
            if let Some((c, _)) = &rule.copies {
                let mut j = 0;
                start = params::map_indexed(start, |i, t| {
                    if !self.per_step[i] {
                        return Ok(t);
                    }
                    j += 1;
                    let v = &c[j - 1][0];
                    Ok(Tensor::from_data(
                        TensorData::new(v.clone(), [v.len()]),
                        &t.device(),
                    ))
                })?;
            }
            let steps = self.config.inner_steps;
            let mut sum = 0.0;
            crate::inner::adapt_inner::<B, M, D>(
                start,
                ep,
                steps,
                rule,
                &self.device,
                |s, phi| {
                    if s > 0 && weights[s - 1] > 0.0 {
                        let (l, _) = evaluate::<B, M::InnerModule, D>(phi, ep, true, &self.device)?;
                        sum += weights[s - 1] * l;
                    }
                    Ok(())
                },
            )?;
            total += sum;
        }
        Ok(total / episodes.len().max(1) as f64)
    }

    /// The meta-gradients (θ, rates) at the current parameters and iteration, as host values
    /// (θ in visiting order; rates row-major `[step, tensor]`, empty without learned rates).
    pub fn meta_gradient_vec(
        &self,
        episodes: &[EpisodeData],
    ) -> metalearn_core::Result<(Vec<f64>, Vec<f64>)> {
        let (theta, rates, _) = self.meta_gradient_vecs(episodes)?;
        Ok((theta, rates))
    }

    /// [`meta_gradient_vec`](Self::meta_gradient_vec) and the gradient of the per-step copies
    /// (tensor by tensor, each row-major `[iterate, element]`; empty without per-step groups).
    pub fn meta_gradient_vecs(
        &self,
        episodes: &[EpisodeData],
    ) -> metalearn_core::Result<(Vec<f64>, Vec<f64>, Vec<f64>)> {
        let g = self.meta_gradient(episodes)?;
        let r = match (&self.rates, g.rates) {
            (Some(m), Some(g)) => params::grads_to_vec::<AB<B>, StepRates<AB<B>>>(m.module(), &g),
            _ => Vec::new(),
        };
        let c = match (&self.step_params, g.step_params) {
            (Some(m), Some(g)) => params::grads_to_vec::<AB<B>, StepParams<AB<B>>>(m.module(), &g),
            _ => Vec::new(),
        };
        Ok((
            params::grads_to_vec::<AB<B>, M>(self.model(), &g.theta),
            r,
            c,
        ))
    }

    fn meta_gradient(&self, episodes: &[EpisodeData]) -> metalearn_core::Result<MetaGradient> {
        metalearn_core::episode::check_meta_batch(episodes)?;
        let weights = self.config.loss_weights_at(self.outer.iterations());
        let second_order = self.config.second_order_at(self.outer.iterations());
        let theta = self.model().valid();
        let rates = self.rates.as_ref().map(|r| r.module().valid());
        let copies = self.step_params.as_ref().map(|r| r.module().valid());
        let jobs: Vec<_> = episodes
            .iter()
            .map(|e| (theta.clone(), rates.clone(), copies.clone(), e))
            .collect();
        let plan = Plan {
            mask: &self.mask,
            per_step: &self.per_step,
            inner_lr: self.config.inner_lr,
            weights: &weights,
            second_order,
        };
        let device = &self.device;
        let parts = self.pool.map(jobs, |_, (theta, rates, copies, ep)| {
            Ok(task_gradient::<B, M, D>(
                theta, rates, copies, ep, &plan, device,
            ))
        })?;
        let (mut thetas, mut rate_parts, mut copy_parts) = (Vec::new(), Vec::new(), Vec::new());
        let (mut loss, mut acc, mut n_acc) = (0.0, 0.0, 0usize);
        for p in parts {
            let p = p?;
            thetas.push(p.theta);
            rate_parts.extend(p.rates);
            copy_parts.extend(p.step_params);
            loss += p.loss;
            if let Some(a) = p.accuracy {
                acc += a;
                n_acc += 1;
            }
        }
        let n = thetas.len().max(1) as f64;
        Ok(MetaGradient {
            theta: mean_grads::<B, M>(self.model(), thetas),
            rates: self
                .rates
                .as_ref()
                .map(|m| mean_grads::<B, StepRates<AB<B>>>(m.module(), rate_parts)),
            step_params: self
                .step_params
                .as_ref()
                .map(|m| mean_grads::<B, StepParams<AB<B>>>(m.module(), copy_parts)),
            loss: loss / n,
            accuracy: (n_acc > 0).then(|| acc / n_acc as f64),
        })
    }
}

/// A meta-batch's mean meta-gradients and its last-step query metrics.
struct MetaGradient {
    theta: GradientsParams,
    rates: Option<GradientsParams>,
    step_params: Option<GradientsParams>,
    loss: f64,
    accuracy: Option<f64>,
}

/// What one meta-iteration's inner loops do.
struct Plan<'a> {
    /// Which tensors adapt.
    mask: &'a [bool],
    /// Which tensors take their per-step copy at every iterate.
    per_step: &'a [bool],
    /// The step size without learned rates.
    inner_lr: f64,
    /// Query-loss weight after each inner step (their number is the number of steps).
    weights: &'a [f64],
    second_order: bool,
}

/// One task's meta-gradient: inner steps on `Autodiff<Autodiff<B>>` (support gradients
/// detached in first order), the weighted query losses after each step back-propagated to
/// θ and the learned rates.
fn task_gradient<B: Backend, M: MetaTrainable<B, D>, const D: usize>(
    theta: M::InnerModule,
    rates: Option<StepRates<B>>,
    copies: Option<StepParams<B>>,
    ep: &EpisodeData,
    plan: &Plan<'_>,
    device: &B::Device,
) -> metalearn_core::Result<TaskPart> {
    check_episode::<B, M::InnerModule, D>(&theta, ep)?;
    let theta: M = params::require_grad(M::from_inner(theta));
    let rates: Option<StepRates<AB<B>>> =
        rates.map(|r| params::require_grad(StepRates::from_inner(r)));
    let rate_matrix = rates.as_ref().map(|r| r.rates.val());
    let copies: Option<StepParams<AB<B>>> =
        copies.map(|c| params::require_grad(StepParams::from_inner(c)));
    let support = ep.support.to_batch::<AA<B>, D>(device)?;
    let query = ep.query.to_batch::<AB<B>, D>(device)?;
    let steps = plan.weights.len();
    let mut phi = match &copies {
        Some(c) => c.put(theta.clone(), plan.per_step, 0)?,
        None => theta.clone(),
    };
    let mut objective: Option<Tensor<AB<B>, 1>> = None;
    let (mut last_loss, mut last_acc) = (f64::NAN, None);
    for k in 0..steps {
        let lifted = params::require_grad(
            <M as HasAutodiffModule<AA<B>>>::TrainModule::from_inner(phi.clone()),
        );
        let out = lifted.forward(support.inputs.clone());
        let loss = task_loss(ep.kind, out, support.targets.clone())?;
        let mut g = collect_grads::<AA<B>, _>(&lifted, &metalearn_core::parallel::backward(loss)?);
        if !plan.second_order {
            g = g.into_iter().map(|g| g.map(Tensor::detach)).collect();
        }
        phi = params::map_indexed(phi, |i, t| {
            let (true, Some(g)) = (plan.mask[i], g[i].clone()) else {
                return Ok(t);
            };
            Ok(match &rate_matrix {
                // [numel] · [1]: the step's learned rate for tensor i, broadcast.
                Some(r) => t - g * r.clone().slice([k..k + 1, i..i + 1]).reshape([1]),
                None => t - g.mul_scalar(plan.inner_lr),
            })
        })?;
        if let Some(c) = &copies {
            phi = c.put(phi, plan.per_step, k + 1)?;
        }
        let w = plan.weights[k];
        if w > 0.0 || k + 1 == steps {
            let out = phi.forward(query.inputs.clone());
            let l = task_loss(ep.kind, out.clone(), query.targets.clone())?;
            if k + 1 == steps {
                last_loss = scalar(l.clone().inner());
                last_acc = query.labels.as_deref().map(|y| accuracy(out.inner(), y));
            }
            if w > 0.0 {
                let term = l.mul_scalar(w);
                objective = Some(match objective {
                    Some(o) => o + term,
                    None => term,
                });
            }
        }
    }
    let objective = objective.ok_or(Error::Empty("multi-step loss"))?;
    let mut grads = metalearn_core::parallel::backward(objective)?;
    Ok(TaskPart {
        theta: GradientsParams::from_module(&mut grads, &theta),
        rates: rates.map(|r| GradientsParams::from_module(&mut grads, &r)),
        step_params: copies.map(|c| GradientsParams::from_module(&mut grads, &c)),
        loss: last_loss,
        accuracy: last_acc,
    })
}

impl<B: Backend, M: MetaTrainable<B, D>, const D: usize> InnerAdapt<B, M, D>
    for MamlPlusPlus<B, M, D>
{
    type Rule = PerStep;

    fn start(&self) -> M::InnerModule {
        let theta = self.model().valid();
        match &self.step_params {
            // The copies have the shapes of the tensors they replace (checked at `new` and on
            // load), so this cannot fail.
            Some(_) => self.start_from(theta.clone()).unwrap_or(theta),
            None => theta,
        }
    }

    fn inner_rule(&self) -> PerStep {
        self.rule()
    }

    fn transductive(&self) -> bool {
        self.config.transductive
    }

    fn device(&self) -> &B::Device {
        &self.device
    }
}

impl<B: Backend, M: MetaTrainable<B, D>, const D: usize> MetaLearner<D> for MamlPlusPlus<B, M, D> {
    type Adapted = M::InnerModule;

    fn meta_step(&mut self, episodes: &[EpisodeData]) -> metalearn_core::Result<StepStats> {
        let g = self.meta_gradient(episodes)?;
        let iteration = self.outer.iterations();
        let lr = self.config.outer_lr_at(iteration);
        // The per-step copies are stepped first, on a copy: θ, the rates and the copies change
        // together or (a diverged step) not at all.
        let copies = match (&self.step_params, g.step_params) {
            (Some(m), Some(grads)) => {
                metalearn_core::learner::check_finite(iteration, g.loss)?;
                Some(m.updated(lr, grads, iteration)?)
            }
            _ => None,
        };
        let extra = self.rates.as_mut().zip(g.rates);
        let stats = self
            .outer
            .step_with(lr, g.theta, extra, g.loss, g.accuracy)?;
        if copies.is_some() {
            self.step_params = copies;
        }
        Ok(stats)
    }

    fn meta_batch_size(&self) -> usize {
        self.config.meta_batch_size
    }

    adaptation_methods!(B, M, D);
}

impl<B: Backend, M: MetaTrainable<B, D>, const D: usize> Checkpoint for MamlPlusPlus<B, M, D> {
    fn learner_name(&self) -> &'static str {
        "MAML++"
    }

    fn iterations(&self) -> usize {
        self.outer.iterations()
    }

    fn parameters(&self) -> Vec<f64> {
        let mut v = self.outer.parameters();
        if let Some(r) = &self.rates {
            v.extend(params::to_vec(r.module()));
        }
        if let Some(c) = &self.step_params {
            v.extend(params::to_vec(c.module()));
        }
        v
    }

    fn state(&self) -> metalearn_core::Result<LearnerState> {
        let mut s = self.outer.save(self.learner_name())?;
        if let Some(r) = &self.rates {
            s = r.save(s, "rates", "optim_rates")?;
        }
        if let Some(c) = &self.step_params {
            s = c.save(s, "step_params", "optim_step_params")?;
        }
        Ok(s)
    }

    fn load_state(&mut self, state: &LearnerState) -> metalearn_core::Result<()> {
        let outer = self.outer.load(state, self.learner_name(), &self.device)?;
        let rates = match &self.rates {
            Some(r) => Some(r.load(state, "rates", "optim_rates", &self.device)?),
            None => None,
        };
        let copies = match &self.step_params {
            Some(c) => Some(c.load(state, "step_params", "optim_step_params", &self.device)?),
            None => None,
        };
        (self.outer, self.rates, self.step_params) = (outer, rates, copies);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn per_step_groups_are_checked_against_the_model() {
        let names: Vec<String> = ["norms.0.gamma", "norms.0.beta", "head.weight", "head.bias"]
            .map(String::from)
            .into();
        let c = MamlPlusPlusConfig::new().with_per_step_groups(vec!["norms".into()]);
        let (mask, per_step) = c.masks(&names).unwrap();
        assert_eq!(per_step, [true, true, false, false]);
        assert_eq!(
            mask,
            [false, false, true, true],
            "per-step tensors do not adapt"
        );
        assert_eq!(
            MamlPlusPlusConfig::new().masks(&names).unwrap(),
            (vec![true; 4], vec![false; 4])
        );
        for (groups, why) in [
            (vec!["convs".to_string()], "names no parameter"),
            (vec!["norms".into(), "head".into()], "no parameter adapts"),
        ] {
            match c.clone().with_per_step_groups(groups).masks(&names) {
                Err(Error::InvalidConfig { field, reason }) => {
                    assert_eq!(field, "per_step_groups");
                    assert!(reason.contains(why), "{reason}");
                }
                other => panic!("{why}: {other:?}"),
            }
        }
    }

    #[test]
    fn schedules_follow_the_paper() {
        let c = MamlPlusPlusConfig::new()
            .with_anneal_iterations(100)
            .with_msl_iterations(10);
        // Cosine: outer_lr at 0, the midpoint halfway, min at the end and after.
        assert!((c.outer_lr_at(0) - 1e-3).abs() < 1e-15);
        assert!((c.outer_lr_at(50) - (1e-5 + 0.5 * (1e-3 - 1e-5))).abs() < 1e-12);
        assert!((c.outer_lr_at(100) - 1e-5).abs() < 1e-15);
        assert!((c.outer_lr_at(500) - 1e-5).abs() < 1e-15);
        assert_eq!(c.clone().with_cosine_annealing(false).outer_lr_at(50), 1e-3);
        // MSL: uniform at first, the last step's weight grows, the others fall to 0.03 / K,
        // and after msl_iterations only the last step counts.
        let w0 = c.loss_weights_at(0);
        assert!(w0.iter().all(|w| (w - 0.2).abs() < 1e-12), "{w0:?}");
        let w5 = c.loss_weights_at(5);
        assert!(
            (w5[0] - 0.1).abs() < 1e-12 && (w5[4] - 0.6).abs() < 1e-12,
            "{w5:?}"
        );
        let w9 = c.loss_weights_at(9);
        assert!((w9[0] - 0.02).abs() < 1e-12, "{w9:?}");
        for w in [&w0, &w5, &w9] {
            assert!((w.iter().sum::<f64>() - 1.0).abs() < 1e-12);
        }
        assert_eq!(c.loss_weights_at(10), vec![0.0, 0.0, 0.0, 0.0, 1.0]);
        assert_eq!(
            c.clone().with_multi_step_loss(false).loss_weights_at(0),
            vec![0.0, 0.0, 0.0, 0.0, 1.0]
        );
        // Derivative-order annealing.
        let d = c.clone().with_first_order_iterations(3);
        assert!(!d.second_order_at(2) && d.second_order_at(3));
        assert!(!d.with_second_order(false).second_order_at(10));
        // Bad values are named.
        for (bad, field) in [
            (c.clone().with_inner_steps(0), "inner_steps"),
            (c.clone().with_min_outer_lr(1.0), "min_outer_lr"),
            (c.clone().with_msl_iterations(0), "msl_iterations"),
            (c.clone().with_inner_lr(-1.0), "inner_lr"),
        ] {
            match bad.validate() {
                Err(Error::InvalidConfig { field: f, .. }) => assert_eq!(f, field),
                other => panic!("{field}: {other:?}"),
            }
        }
    }
}
