//! The inner loop shared by the gradient-based learners (MAML, FOMAML, ANIL, BOIL, Meta-SGD,
//! MAML++, Reptile), public so that a new learner can be written outside this crate.
//!
//! An inner step is `φᵢ ← φᵢ − sᵢ ⊙ ∇ᵢ L_support(φ)` for every parameter tensor `i` (visiting
//! order), where the step sizes `s` are a scalar (MAML), a scalar on a subset of tensors (ANIL,
//! BOIL: [`group_mask`]), or learned per-element tensors (Meta-SGD) — the [`Sizes`]; any other
//! rule (Adam: [`InnerAdam`]) implements [`InnerUpdate`].
//!
//! # Writing your own learner
//!
//! A gradient-based learner is three parts, each a building block here or in [`outer`](crate::outer):
//!
//! 1. **The outer state**: an [`Outer`](crate::outer::Outer) owns θ, its Adam and the iteration
//!    counter; [`Outer::step`](crate::outer::Outer::step) applies a meta-gradient (refusing a
//!    non-finite one, so a diverged task never reaches θ) and its `save`/`load` are the learner's
//!    checkpoint.
//! 2. **The meta-gradient**: [`meta_batch_gradient`] runs every task's [`task_gradient`] (exact
//!    second order through `Autodiff<Autodiff<B>>`, or first order) on a
//!    [`TaskPool`](metalearn_core::TaskPool)'s lanes and averages them in task order, so the
//!    result does not depend on the thread count; [`adapt`] and [`evaluate`] are the value-only
//!    pieces (Reptile's update, a meta-objective for finite differences).
//! 3. **Test-time adaptation**: implement [`InnerAdapt`] (the start θ, a fresh inner rule, the
//!    evaluation protocol, the device) and put [`adaptation_methods!`](crate::adaptation_methods)
//!    inside the `impl MetaLearner<D>` block: it writes `adapt`, `adaptation_curve`, `evaluate`
//!    and `predict` — the same code our learners run.
//!
//! `crates/update/tests/it/own_learner.rs` writes MAML this way outside the crate (its parameters
//! after seeded meta-steps equal [`Maml`](crate::Maml)'s bit for bit) and a learner of its own
//! with a custom inner rule; docs/ARCHITECTURE.md, "How to add a learner", says which files a
//! learner inside the crates touches.

use burn::backend::Autodiff;
use burn::module::{AutodiffModule, HasAutodiffModule, Module, ModuleVisitor, Param};
use burn::optim::GradientsParams;
use burn::tensor::backend::{AutodiffBackend, Backend};
use burn::tensor::Tensor;
use metalearn_core::episode::EpisodeData;
use metalearn_core::error::{Error, Result};
use metalearn_core::loss::{accuracy, scalar, task_loss};
use metalearn_core::model::{check_episode, non_transductive, MetaModule, MetaTrainable};
use metalearn_core::params;

/// The autodiff backend the meta-parameters θ live on.
pub type AB<B> = Autodiff<B>;
/// The nested autodiff backend an exact second-order inner step runs on.
pub type AA<B> = Autodiff<Autodiff<B>>;

/// Inner-loop step sizes, per parameter tensor in visiting order.
#[derive(Debug, Clone)]
pub enum Sizes<T> {
    /// One learning rate for every parameter.
    Uniform(f64),
    /// One learning rate for the tensors marked `true`; the others are not adapted.
    Masked(f64, Vec<bool>),
    /// A learned step size per element (Meta-SGD), one tensor per parameter tensor.
    PerElement(Vec<T>),
}

impl<T> Sizes<T> {
    /// `lr` on the tensors `mask` marks (uniform when it marks them all).
    pub fn masked(lr: f64, mask: &[bool]) -> Self {
        if mask.iter().all(|&m| m) {
            Self::Uniform(lr)
        } else {
            Self::Masked(lr, mask.to_vec())
        }
    }

    /// Whether tensor `i` is adapted at all.
    pub fn adapts(&self, i: usize) -> bool {
        match self {
            Self::Masked(_, m) => m.get(i).copied().unwrap_or(false),
            _ => true,
        }
    }
}

/// Which parameters (of `names`, visiting order; see
/// [`params::names`](metalearn_core::params::names)) an inner loop adapts: the last
/// `adapt_last` (0: all), within the groups `adapt_only` (empty: all), outside the groups
/// `freeze`. A group that names no parameter, or a selection that adapts nothing, is an
/// [`Error::InvalidConfig`] naming the field.
pub fn group_mask(
    names: &[String],
    adapt_last: usize,
    adapt_only: &[String],
    freeze: &[String],
) -> Result<Vec<bool>> {
    use metalearn_core::params::in_group;
    let count = names.len();
    if adapt_last > count {
        return Err(Error::config(
            "adapt_last",
            format!("is {adapt_last} but the model has only {count} parameter tensors"),
        ));
    }
    for (field, groups) in [("adapt_only", adapt_only), ("freeze", freeze)] {
        for g in groups {
            if !names.iter().any(|n| in_group(n, g)) {
                return Err(Error::config(
                    field,
                    format!(
                        "group `{g}` names no parameter of the model (its parameters: {})",
                        names.join(", ")
                    ),
                ));
            }
        }
    }
    let mask: Vec<bool> = names
        .iter()
        .enumerate()
        .map(|(i, n)| {
            (adapt_last == 0 || i + adapt_last >= count)
                && (adapt_only.is_empty() || adapt_only.iter().any(|g| in_group(n, g)))
                && !freeze.iter().any(|g| in_group(n, g))
        })
        .collect();
    if !mask.contains(&true) {
        return Err(Error::config(
            "freeze",
            "with adapt_last, adapt_only and freeze together no parameter adapts",
        ));
    }
    Ok(mask)
}

/// `t − s ⊙ g` for tensor `i`.
pub fn step<Bk: Backend>(
    t: Tensor<Bk, 1>,
    g: Option<Tensor<Bk, 1>>,
    i: usize,
    sizes: &Sizes<Tensor<Bk, 1>>,
) -> Tensor<Bk, 1> {
    let Some(g) = g else { return t };
    match sizes {
        Sizes::Uniform(lr) => t - g.mul_scalar(*lr),
        Sizes::Masked(lr, mask) if mask.get(i).copied().unwrap_or(false) => t - g.mul_scalar(*lr),
        Sizes::Masked(..) => t,
        Sizes::PerElement(a) => t - g * a[i].clone(),
    }
}

/// Gradients of every float parameter of `module` (visiting order), flattened; `None` where a
/// parameter did not take part in the loss.
pub fn collect_grads<A: AutodiffBackend, N: Module<A>>(
    module: &N,
    grads: &A::Gradients,
) -> Vec<Option<Tensor<A::InnerBackend, 1>>> {
    struct V<'a, A: AutodiffBackend> {
        grads: &'a A::Gradients,
        out: Vec<Option<Tensor<A::InnerBackend, 1>>>,
    }
    impl<A: AutodiffBackend> ModuleVisitor<A> for V<'_, A> {
        fn visit_float<const D: usize>(&mut self, p: &Param<Tensor<A, D>>) {
            self.out
                .push(p.val().grad(self.grads).map(|g| g.reshape([-1])));
        }
    }
    let mut v = V::<A> {
        grads,
        out: Vec::new(),
    };
    module.visit(&mut v);
    v.out
}

/// A rule that turns parameter tensor `i` and its support gradient into the next iterate.
pub trait InnerUpdate<B: Backend> {
    /// The next value of parameter tensor `i` (visiting order); `g` is `None` where the tensor
    /// did not take part in the loss. Called once per tensor per step, in order.
    fn update(&mut self, i: usize, t: Tensor<B, 1>, g: Option<Tensor<B, 1>>) -> Tensor<B, 1>;
}

impl<B: Backend> InnerUpdate<B> for &Sizes<Tensor<B, 1>> {
    fn update(&mut self, i: usize, t: Tensor<B, 1>, g: Option<Tensor<B, 1>>) -> Tensor<B, 1> {
        step(t, g, i, self)
    }
}

/// A rule lent to one adaptation keeps its state for the next (Adam's moments across
/// Reptile's inner minibatches).
impl<B: Backend, R: InnerUpdate<B>> InnerUpdate<B> for &mut R {
    fn update(&mut self, i: usize, t: Tensor<B, 1>, g: Option<Tensor<B, 1>>) -> Tensor<B, 1> {
        (**self).update(i, t, g)
    }
}

impl<B: Backend> InnerUpdate<B> for Sizes<Tensor<B, 1>> {
    fn update(&mut self, i: usize, t: Tensor<B, 1>, g: Option<Tensor<B, 1>>) -> Tensor<B, 1> {
        step(t, g, i, self)
    }
}

/// What a gradient-based learner's test-time adaptation needs: the meta-learned start, its
/// inner rule, the evaluation protocol and the device. A learner implementing it gets
/// `MetaLearner`'s `adapt`, `adaptation_curve`, `evaluate` and `predict` from
/// [`adaptation_methods!`](crate::adaptation_methods) (one definition for MAML, Meta-SGD and MAML++; Reptile, whose test-time steps may take minibatches of the support set, writes its own around the same [`adapt_inner`], [`step_metrics`] and [`predictions`]).
pub trait InnerAdapt<B: Backend, M: MetaTrainable<B, D>, const D: usize> {
    /// The inner rule of one adaptation.
    type Rule: InnerUpdate<B>;
    /// θ, the start of every adaptation.
    fn start(&self) -> M::InnerModule;
    /// A fresh inner rule (step sizes, or Adam with fresh moments).
    fn inner_rule(&self) -> Self::Rule;
    /// Whether the query batch is evaluated in one pass.
    fn transductive(&self) -> bool;
    /// The device.
    fn device(&self) -> &B::Device;
}

/// [`InnerAdapt`] for a learner `$learner<B, M, D>` with a method `model()`, the fields
/// `config.transductive` and `device`, whose method `$make()` returns its inner rule of type
/// `$rule`.
macro_rules! impl_inner_adapt {
    ($learner:ident, $rule:ty, $make:ident) => {
        impl<B: Backend, M: MetaTrainable<B, D>, const D: usize> $crate::inner::InnerAdapt<B, M, D>
            for $learner<B, M, D>
        {
            type Rule = $rule;

            fn start(&self) -> M::InnerModule {
                self.model().valid()
            }

            fn inner_rule(&self) -> $rule {
                self.$make()
            }

            fn transductive(&self) -> bool {
                self.config.transductive
            }

            fn device(&self) -> &B::Device {
                &self.device
            }
        }
    };
}
pub(crate) use impl_inner_adapt;

/// `MetaLearner`'s adaptation methods (`adapt`, `adaptation_curve`, `evaluate`, `predict`) for a
/// learner implementing [`InnerAdapt`](crate::inner::InnerAdapt), whose `Adapted` type is the
/// model's inner module. Write it inside the learner's `impl MetaLearner<D>` block, naming the
/// block's backend, model and rank parameters:
///
/// ```ignore
/// impl<B: Backend, M: MetaTrainable<B, D>, const D: usize> MetaLearner<D> for MyLearner<B, M, D> {
///     type Adapted = M::InnerModule;
///     fn meta_step(&mut self, episodes: &[EpisodeData]) -> metalearn_core::Result<StepStats> { … }
///     fn meta_batch_size(&self) -> usize { … }
///     metalearn_update::adaptation_methods!(B, M, D);
/// }
/// ```
///
/// (`crates/update/tests/it/own_learner.rs` does it from outside the crate.)
#[macro_export]
macro_rules! adaptation_methods {
    ($B:ident, $M:ident, $D:ident) => {
        fn adapt(
            &self,
            episode: &$crate::__core::episode::EpisodeData,
            steps: usize,
        ) -> $crate::__core::Result<Self::Adapted> {
            use $crate::inner::InnerAdapt as _;
            $crate::inner::adapt::<$B, $M, $D>(
                self.start(),
                episode,
                steps,
                self.inner_rule(),
                self.device(),
            )
        }

        fn adaptation_curve(
            &self,
            episode: &$crate::__core::episode::EpisodeData,
            steps: usize,
        ) -> $crate::__core::Result<$crate::__core::learner::AdaptationCurve> {
            use $crate::inner::InnerAdapt as _;
            $crate::inner::adaptation_curve::<$B, $M, $D>(
                self.start(),
                episode,
                steps,
                self.inner_rule(),
                self.transductive(),
                self.device(),
            )
        }

        fn evaluate(
            &self,
            episode: &$crate::__core::episode::EpisodeData,
            steps: usize,
        ) -> $crate::__core::Result<$crate::__core::learner::StepMetrics> {
            use $crate::inner::InnerAdapt as _;
            $crate::inner::evaluate_after::<$B, $M, $D>(
                self.start(),
                episode,
                steps,
                self.inner_rule(),
                self.transductive(),
                self.device(),
            )
        }

        fn predict(
            &self,
            episode: &$crate::__core::episode::EpisodeData,
            steps: usize,
        ) -> $crate::__core::Result<Vec<f32>> {
            use $crate::inner::InnerAdapt as _;
            $crate::inner::predict_after::<$B, $M, $D>(
                self.start(),
                episode,
                steps,
                self.inner_rule(),
                self.transductive(),
                self.device(),
            )
        }
    };
}
pub use crate::adaptation_methods;

/// Adam in the inner loop (Kingma & Ba 2015): `m ← β₁m + (1−β₁)g`, `v ← β₂v + (1−β₂)g²`,
/// `φ ← φ − lr · m̂ / (√v̂ + ε)` with bias-corrected `m̂`, `v̂`. A new one starts with zero
/// moments; a clone carries the moments and step counts on (Reptile's `carry_adam`).
#[derive(Clone)]
pub struct InnerAdam<B: Backend> {
    lr: f64,
    beta1: f64,
    beta2: f64,
    epsilon: f64,
    /// Steps taken per tensor (bias correction).
    t: Vec<i32>,
    m: Vec<Option<Tensor<B, 1>>>,
    v: Vec<Option<Tensor<B, 1>>>,
}

impl<B: Backend> InnerAdam<B> {
    /// Adam with step size `lr`, moment decays `beta1`, `beta2` and `epsilon` in the denominator.
    pub fn new(lr: f64, beta1: f64, beta2: f64, epsilon: f64) -> Self {
        Self {
            lr,
            beta1,
            beta2,
            epsilon,
            t: Vec::new(),
            m: Vec::new(),
            v: Vec::new(),
        }
    }
}

/// [`InnerAdam`]'s moments and step counts, as a checkpoint stores them.
#[derive(burn::record::Record)]
struct InnerAdamRecord<B: Backend> {
    t: Vec<i64>,
    m: Vec<Option<Tensor<B, 1>>>,
    v: Vec<Option<Tensor<B, 1>>>,
}

impl<B: Backend> InnerAdam<B> {
    /// The moments and step counts as bytes (a checkpoint part). With `β₁ = 0` the first moment
    /// is the last gradient, which the next step overwrites, so it is left out.
    pub fn state_to_bytes(&self) -> metalearn_core::Result<Vec<u8>> {
        let m = if self.beta1 == 0.0 {
            vec![None; self.m.len()]
        } else {
            self.m.clone()
        };
        metalearn_core::checkpoint::record_to_bytes::<B, _>(InnerAdamRecord {
            t: self.t.iter().map(|&t| i64::from(t)).collect(),
            m,
            v: self.v.clone(),
        })
    }

    /// The same rule with the moments and step counts of [`state_to_bytes`](Self::state_to_bytes)
    /// (a corrupt or inconsistent state is an error).
    pub fn with_state_bytes(
        mut self,
        bytes: &[u8],
        device: &B::Device,
    ) -> metalearn_core::Result<Self> {
        let r: InnerAdamRecord<B> =
            metalearn_core::checkpoint::record_from_bytes::<B, _>(bytes, device)?;
        if r.m.len() != r.t.len() || r.v.len() != r.t.len() {
            return Err(Error::corrupt(
                "inner Adam state",
                format!(
                    "{} step counts, {} first and {} second moments",
                    r.t.len(),
                    r.m.len(),
                    r.v.len()
                ),
            ));
        }
        self.t =
            r.t.iter()
                .map(|&t| {
                    i32::try_from(t).map_err(|e| Error::corrupt("inner Adam state", e.to_string()))
                })
                .collect::<metalearn_core::Result<_>>()?;
        (self.m, self.v) = (r.m, r.v);
        Ok(self)
    }

    /// Adam steps taken so far on tensor `i` (0 before the first).
    pub fn steps(&self, i: usize) -> usize {
        self.t.get(i).map_or(0, |&t| t as usize)
    }
}

impl<B: Backend> InnerUpdate<B> for InnerAdam<B> {
    fn update(&mut self, i: usize, t: Tensor<B, 1>, g: Option<Tensor<B, 1>>) -> Tensor<B, 1> {
        let Some(g) = g else { return t };
        if self.m.len() <= i {
            self.m.resize(i + 1, None);
            self.v.resize(i + 1, None);
            self.t.resize(i + 1, 0);
        }
        let (b1, b2) = (self.beta1, self.beta2);
        let m = match self.m[i].take() {
            Some(m) => m.mul_scalar(b1) + g.clone().mul_scalar(1.0 - b1),
            None => g.clone().mul_scalar(1.0 - b1),
        };
        let g2 = g.clone() * g;
        let v = match self.v[i].take() {
            Some(v) => v.mul_scalar(b2) + g2.mul_scalar(1.0 - b2),
            None => g2.mul_scalar(1.0 - b2),
        };
        self.t[i] += 1;
        let step = self.t[i];
        let m_hat = m.clone().div_scalar(1.0 - b1.powi(step));
        let v_hat = v.clone().div_scalar(1.0 - b2.powi(step));
        self.m[i] = Some(m);
        self.v[i] = Some(v);
        t - (m_hat / v_hat.sqrt().add_scalar(self.epsilon)).mul_scalar(self.lr)
    }
}

/// Plain SGD with [`Sizes`], or Adam: the inner rules a learner can be configured with.
pub enum Rule<B: Backend> {
    /// SGD with the given step sizes.
    Sgd(Sizes<Tensor<B, 1>>),
    /// Adam with fresh moments.
    Adam(InnerAdam<B>),
}

impl<B: Backend> InnerUpdate<B> for Rule<B> {
    fn update(&mut self, i: usize, t: Tensor<B, 1>, g: Option<Tensor<B, 1>>) -> Tensor<B, 1> {
        match self {
            Self::Sgd(sizes) => step(t, g, i, sizes),
            Self::Adam(adam) => adam.update(i, t, g),
        }
    }
}

/// `steps` inner steps on the support set from `start`, on values only (first-order autodiff,
/// no graph kept), each step made by `rule`. `on_step(s, φ_s)` sees every iterate, including φ₀.
pub fn adapt_inner<B: Backend, M: MetaTrainable<B, D>, const D: usize>(
    start: M::InnerModule,
    episode: &EpisodeData,
    steps: usize,
    mut rule: impl InnerUpdate<B>,
    device: &B::Device,
    mut on_step: impl FnMut(usize, &M::InnerModule) -> Result<()>,
) -> Result<M::InnerModule> {
    check_episode::<B, M::InnerModule, D>(&start, episode)?;
    let support = episode.support.to_batch::<AB<B>, D>(device)?;
    let mut phi = start;
    on_step(0, &phi)?;
    for s in 1..=steps {
        let leaf: M = params::require_grad(M::from_inner(phi.clone()));
        let out = leaf.forward(support.inputs.clone());
        let loss = task_loss(episode.kind, out, support.targets.clone())?;
        let grads = metalearn_core::parallel::backward(loss)?;
        let g = collect_grads::<AB<B>, _>(&leaf, &grads);
        phi = params::map_indexed(phi, |i, t| Ok(rule.update(i, t, g[i].clone())))?;
        on_step(s, &phi)?;
    }
    Ok(phi)
}

/// [`adapt_inner`] without a per-step callback: the adapted parameters only.
pub fn adapt<B: Backend, M: MetaTrainable<B, D>, const D: usize>(
    start: M::InnerModule,
    episode: &EpisodeData,
    steps: usize,
    rule: impl InnerUpdate<B>,
    device: &B::Device,
) -> Result<M::InnerModule> {
    adapt_inner::<B, M, D>(start, episode, steps, rule, device, |_, _| Ok(()))
}

/// An adaptation whose query loss after `step` inner steps is not finite (a diverged inner loop
/// makes the adapted parameters, and so the loss, non-finite) is [`Error::AdaptationDiverged`],
/// not a NaN metric.
pub fn adaptation_finite(step: usize, loss: f64) -> Result<f64> {
    if loss.is_finite() {
        Ok(loss)
    } else {
        Err(Error::AdaptationDiverged { step, value: loss })
    }
}

/// Query loss and accuracy of `model` on `episode`: the query batch in one forward pass when
/// `transductive`, else each query example with the support set
/// ([`non_transductive`](metalearn_core::model::non_transductive)).
pub fn evaluate<B: Backend, N: MetaModule<B, D>, const D: usize>(
    model: &N,
    episode: &EpisodeData,
    transductive: bool,
    device: &B::Device,
) -> Result<(f64, Option<f64>)> {
    let q = episode.query.to_batch::<B, D>(device)?;
    let out = query_outputs::<B, N, D>(model, episode, transductive, device)?;
    let loss = scalar(task_loss(episode.kind, out.clone(), q.targets)?);
    let acc = q.labels.as_deref().map(|l| accuracy(out, l));
    Ok((loss, acc))
}

/// The model's outputs on the query inputs (see [`evaluate`] for `transductive`).
pub fn query_outputs<B: Backend, N: MetaModule<B, D>, const D: usize>(
    model: &N,
    episode: &EpisodeData,
    transductive: bool,
    device: &B::Device,
) -> Result<Tensor<B, 2>> {
    let q = episode.query.to_batch::<B, D>(device)?;
    Ok(if transductive {
        model.forward(q.inputs)
    } else {
        let s = episode.support.to_batch::<B, D>(device)?;
        non_transductive(s.inputs, q.inputs, |x, n| model.forward(x).narrow(0, n, 1))
    })
}

/// Query outputs (host, row-major) after exactly `steps` inner steps from `start`.
pub fn predict_after<B: Backend, M: MetaTrainable<B, D>, const D: usize>(
    start: M::InnerModule,
    episode: &EpisodeData,
    steps: usize,
    rule: impl InnerUpdate<B>,
    transductive: bool,
    device: &B::Device,
) -> Result<Vec<f32>> {
    let phi = adapt::<B, M, D>(start, episode, steps, rule, device)?;
    predictions::<B, M::InnerModule, D>(&phi, episode, steps, transductive, device)
}

/// The query outputs (host, row-major) of `phi`, the parameters adapted by `steps` steps; a
/// non-finite output is [`Error::AdaptationDiverged`].
pub fn predictions<B: Backend, N: MetaModule<B, D>, const D: usize>(
    phi: &N,
    episode: &EpisodeData,
    steps: usize,
    transductive: bool,
    device: &B::Device,
) -> Result<Vec<f32>> {
    let out = query_outputs::<B, N, D>(phi, episode, transductive, device)?;
    let v: Vec<f32> = out
        .into_data()
        .convert::<f32>()
        .to_vec()
        .map_err(|e| Error::Serde(format!("{e:?}")))?;
    if v.iter().any(|x| !x.is_finite()) {
        return Err(Error::AdaptationDiverged {
            step: steps,
            value: f64::NAN,
        });
    }
    Ok(v)
}

/// Query metrics after exactly `steps` inner steps from `start` (one query pass; see
/// [`evaluate`] for `transductive`).
pub fn evaluate_after<B: Backend, M: MetaTrainable<B, D>, const D: usize>(
    start: M::InnerModule,
    episode: &EpisodeData,
    steps: usize,
    rule: impl InnerUpdate<B>,
    transductive: bool,
    device: &B::Device,
) -> Result<metalearn_core::learner::StepMetrics> {
    let phi = adapt::<B, M, D>(start, episode, steps, rule, device)?;
    step_metrics::<B, M::InnerModule, D>(&phi, episode, steps, transductive, device)
}

/// The query metrics of `phi`, the parameters adapted by `steps` steps (see [`evaluate`] for
/// `transductive`; a non-finite loss is [`Error::AdaptationDiverged`]).
pub fn step_metrics<B: Backend, N: MetaModule<B, D>, const D: usize>(
    phi: &N,
    episode: &EpisodeData,
    steps: usize,
    transductive: bool,
    device: &B::Device,
) -> Result<metalearn_core::learner::StepMetrics> {
    let (loss, accuracy) = evaluate::<B, N, D>(phi, episode, transductive, device)?;
    Ok(metalearn_core::learner::StepMetrics {
        steps,
        loss: adaptation_finite(steps, loss)?,
        accuracy,
    })
}

/// Query metrics after 0..=`steps` inner steps from `start` (see [`evaluate`] for
/// `transductive`).
pub fn adaptation_curve<B: Backend, M: MetaTrainable<B, D>, const D: usize>(
    start: M::InnerModule,
    episode: &EpisodeData,
    steps: usize,
    rule: impl InnerUpdate<B>,
    transductive: bool,
    device: &B::Device,
) -> Result<metalearn_core::learner::AdaptationCurve> {
    let mut curve = Vec::with_capacity(steps + 1);
    adapt_inner::<B, M, D>(start, episode, steps, rule, device, |s, phi| {
        curve.push(step_metrics::<B, M::InnerModule, D>(
            phi,
            episode,
            s,
            transductive,
            device,
        )?);
        Ok(())
    })?;
    Ok(curve)
}

/// One task's contribution to the meta-gradient.
pub struct TaskGradient {
    /// The gradient of the task's query loss after adaptation with respect to θ.
    pub theta: GradientsParams,
    /// The gradient with respect to the learned step sizes (Meta-SGD), if any.
    pub sizes: Option<GradientsParams>,
    /// The query loss after adaptation.
    pub loss: f64,
    /// The query accuracy after adaptation (classification).
    pub accuracy: Option<f64>,
}

/// The meta-gradient of one task's post-adaptation query loss.
///
/// `sizes` are plain values; for [`Sizes::PerElement`], `size_module` is the module holding them
/// (same architecture as θ, its own parameter ids) and receives a gradient too.
pub fn task_gradient<B: Backend, M: MetaTrainable<B, D>, const D: usize>(
    theta: M::InnerModule,
    size_module: Option<M::InnerModule>,
    sizes: &Sizes<Tensor<B, 1>>,
    ep: &EpisodeData,
    inner_steps: usize,
    second_order: bool,
    device: &B::Device,
) -> Result<TaskGradient> {
    if !second_order && size_module.is_none() {
        // First order, fixed step sizes: the query gradient at φ_K, applied to θ (no nesting).
        let phi = adapt::<B, M, D>(theta, ep, inner_steps, sizes, device)?;
        let leaf: M = params::require_grad(M::from_inner(phi));
        return query_gradient::<B, M, D>(&leaf, &leaf, None, ep, device);
    }
    check_episode::<B, M::InnerModule, D>(&theta, ep)?;
    // Fresh leaves: each task gets its own graph, so tasks can run on different threads.
    let theta: M = params::require_grad(M::from_inner(theta));
    let size_leaf: Option<M> = size_module.map(|m| params::require_grad(M::from_inner(m)));
    let sizes_ab: Sizes<Tensor<AB<B>, 1>> = match (&size_leaf, sizes) {
        (Some(m), _) => Sizes::PerElement(params::tensors(m).into_iter().map(|(_, t)| t).collect()),
        (None, Sizes::Uniform(lr)) => Sizes::Uniform(*lr),
        (None, Sizes::Masked(lr, mask)) => Sizes::Masked(*lr, mask.clone()),
        (None, Sizes::PerElement(_)) => {
            return Err(Error::config(
                "sizes",
                "per-element step sizes need their module",
            ))
        }
    };
    let mut phi = theta.clone();
    let support = ep.support.to_batch::<AA<B>, D>(device)?;
    for _ in 0..inner_steps {
        // Lift φₖ one autodiff level up as fresh leaves (burn's derived `from_inner` would leave
        // computed parameters untracked); its gradient comes back on Autodiff<B>, still tracked
        // as a function of φₖ — unless first order detaches it (learned step sizes stay tracked).
        let lifted = params::require_grad(
            <M as HasAutodiffModule<AA<B>>>::TrainModule::from_inner(phi.clone()),
        );
        let out = lifted.forward(support.inputs.clone());
        let loss = task_loss(ep.kind, out, support.targets.clone())?;
        let mut g = collect_grads::<AA<B>, _>(&lifted, &metalearn_core::parallel::backward(loss)?);
        if !second_order {
            g = g.into_iter().map(|g| g.map(Tensor::detach)).collect();
        }
        phi = params::map_indexed(phi, |i, t| Ok(step(t, g[i].clone(), i, &sizes_ab)))?;
    }
    query_gradient::<B, M, D>(&theta, &phi, size_leaf.as_ref(), ep, device)
}

/// Back-propagate the query loss at `phi` to the leaves of `wrt` (and of `sizes`).
fn query_gradient<B: Backend, M: MetaTrainable<B, D>, const D: usize>(
    wrt: &M,
    phi: &M,
    sizes: Option<&M>,
    ep: &EpisodeData,
    device: &B::Device,
) -> Result<TaskGradient> {
    let q = ep.query.to_batch::<AB<B>, D>(device)?;
    let out = phi.forward(q.inputs);
    let loss = task_loss(ep.kind, out.clone(), q.targets)?;
    let value = scalar(loss.clone().inner());
    let acc = q.labels.as_deref().map(|l| accuracy(out.inner(), l));
    let mut grads = metalearn_core::parallel::backward(loss)?;
    let theta = GradientsParams::from_module(&mut grads, wrt);
    let sizes = sizes.map(|m| GradientsParams::from_module(&mut grads, m));
    Ok(TaskGradient {
        theta,
        sizes,
        loss: value,
        accuracy: acc,
    })
}

/// The meta-gradient of a meta-batch at the current `model` (and learned step sizes
/// `size_model`, Meta-SGD): every task's [`task_gradient`] on `pool`'s lanes, averaged in task
/// order.
pub fn meta_batch_gradient<B: Backend, M: MetaTrainable<B, D>, const D: usize>(
    pool: &metalearn_core::TaskPool,
    model: &M,
    size_model: Option<&M>,
    sizes: &Sizes<Tensor<B, 1>>,
    episodes: &[EpisodeData],
    (inner_steps, second_order): (usize, bool),
    device: &B::Device,
) -> Result<BatchGradient> {
    metalearn_core::episode::check_meta_batch(episodes)?;
    let (theta, rates) = (model.valid(), size_model.map(AutodiffModule::valid));
    let jobs: Vec<_> = episodes
        .iter()
        .map(|e| (theta.clone(), rates.clone(), e))
        .collect();
    let parts = pool.map(jobs, |_, (theta, rates, ep)| {
        Ok(task_gradient::<B, M, D>(
            theta,
            rates,
            sizes,
            ep,
            inner_steps,
            second_order,
            device,
        ))
    })?;
    combine::<B, M>(model, size_model, parts)
}

/// Mean of per-task gradients of `model`'s parameters, matched by parameter id.
pub fn mean_grads<B: Backend, M: AutodiffModule<AB<B>>>(
    model: &M,
    parts: Vec<GradientsParams>,
) -> GradientsParams {
    struct V<B: Backend> {
        parts: Vec<GradientsParams>,
        out: GradientsParams,
        _b: std::marker::PhantomData<B>,
    }
    impl<B: Backend> ModuleVisitor<AB<B>> for V<B> {
        fn visit_float<const D: usize>(&mut self, p: &Param<Tensor<AB<B>, D>>) {
            let n = self.parts.len() as f64;
            let mut acc: Option<Tensor<B, D>> = None;
            for part in &mut self.parts {
                if let Some(g) = part.remove::<B, D>(p.id) {
                    acc = Some(match acc {
                        Some(a) => a + g,
                        None => g,
                    });
                }
            }
            if let Some(a) = acc {
                self.out.register(p.id, a.mul_scalar(1.0 / n));
            }
        }
    }
    let mut v = V::<B> {
        parts,
        out: GradientsParams::new(),
        _b: std::marker::PhantomData,
    };
    model.visit(&mut v);
    v.out
}

/// Summary of a meta-batch of task gradients.
pub struct BatchGradient {
    /// The mean meta-gradient with respect to θ.
    pub theta: GradientsParams,
    /// The mean meta-gradient with respect to the learned step sizes, if any.
    pub sizes: Option<GradientsParams>,
    /// The mean post-adaptation query loss.
    pub loss: f64,
    /// The mean post-adaptation query accuracy (classification).
    pub accuracy: Option<f64>,
}

/// Average task gradients (in task order, so the result does not depend on threads).
pub fn combine<B: Backend, M: AutodiffModule<AB<B>>>(
    model: &M,
    size_model: Option<&M>,
    parts: Vec<Result<TaskGradient>>,
) -> Result<BatchGradient> {
    let mut thetas = Vec::with_capacity(parts.len());
    let mut sizes = Vec::new();
    let (mut loss, mut acc, mut n_acc) = (0.0, 0.0, 0usize);
    for p in parts {
        let p = p?;
        thetas.push(p.theta);
        if let Some(s) = p.sizes {
            sizes.push(s);
        }
        loss += p.loss;
        if let Some(a) = p.accuracy {
            acc += a;
            n_acc += 1;
        }
    }
    if thetas.is_empty() {
        return Err(Error::Empty("meta-batch"));
    }
    let n = thetas.len() as f64;
    Ok(BatchGradient {
        theta: mean_grads::<B, M>(model, thetas),
        sizes: size_model.map(|m| mean_grads::<B, M>(m, sizes)),
        loss: loss / n,
        accuracy: (n_acc > 0).then(|| acc / n_acc as f64),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use metalearn_core::backend::NdArrayCpu as Bk;

    fn vals(t: Tensor<Bk, 1>) -> Vec<f32> {
        t.into_data().to_vec().unwrap_or_default()
    }

    #[test]
    fn inner_adam_matches_hand_computed_steps() {
        let dev = Default::default();
        let t = Tensor::<Bk, 1>::from_floats([1.0, -2.0], &dev);
        let g1 = Tensor::<Bk, 1>::from_floats([0.5, -4.0], &dev);
        let g2 = Tensor::<Bk, 1>::from_floats([1.0, 2.0], &dev);
        let (lr, b1, b2, eps) = (0.1, 0.5, 0.9, 1e-8);
        let mut adam = InnerAdam::<Bk>::new(lr, b1, b2, eps);
        let t1 = adam.update(0, t, Some(g1));
        // Step 1: m̂ = g, v̂ = g², so the step is lr·sign(g).
        let v1 = vals(t1.clone());
        assert!(
            (v1[0] - 0.9).abs() < 1e-6 && (v1[1] + 1.9).abs() < 1e-6,
            "{v1:?}"
        );
        let t2 = adam.update(0, t1, Some(g2));
        let want: Vec<f64> = [(0.5f64, 1.0f64, 0.9f64), (-4.0, 2.0, -1.9)]
            .iter()
            .map(|&(g1, g2, p)| {
                let m = b1 * (1.0 - b1) * g1 + (1.0 - b1) * g2;
                let v = b2 * (1.0 - b2) * g1 * g1 + (1.0 - b2) * g2 * g2;
                let (mh, vh) = (m / (1.0 - b1 * b1), v / (1.0 - b2 * b2));
                p - lr * mh / (vh.sqrt() + eps)
            })
            .collect();
        for (a, b) in vals(t2).iter().zip(&want) {
            assert!((f64::from(*a) - b).abs() < 1e-5, "{a} vs {b}");
        }
        // A tensor without a gradient is unchanged and does not disturb the others' state.
        let u = Tensor::<Bk, 1>::from_floats([3.0], &dev);
        assert_eq!(vals(adam.update(1, u, None)), vec![3.0]);
    }
}
