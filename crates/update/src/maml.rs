//! MAML: Model-Agnostic Meta-Learning (Finn, Abbeel & Levine, ICML 2017), exact second order,
//! with first-order MAML (FOMAML) as a switch.
//!
//! # How exact second order works on burn 0.21
//!
//! The meta-parameters θ live on `Autodiff<B>`. For each inner step the current fast weights φₖ
//! are lifted into `Autodiff<Autodiff<B>>` as fresh leaves; the support-loss gradient taken there
//! comes back as a tensor on `Autodiff<B>` that is *still tracked* as a function of φₖ (and so of
//! θ). `φₖ₊₁ = φₖ − α·g` is formed on `Autodiff<B>`, and the query loss at φ_K is
//! back-propagated on `Autodiff<B>` to θ — through the Hessian-vector products of every inner
//! step. First order detaches `g` instead, which drops those terms; it is computed without
//! nesting at all (cheaper): the inner loop runs on detached values and the query gradient at φ_K
//! is applied to θ.

use crate::{Error as UpdateError, Result as UpdateResult};
use burn::backend::Autodiff;
use burn::config::Config;
use burn::module::{AutodiffModule, HasAutodiffModule, Module, ModuleMapper, ModuleVisitor, Param};
use burn::optim::adaptor::OptimizerAdaptor;
use burn::optim::{Adam, AdamConfig, GradientsParams, Optimizer};
use burn::tensor::backend::{AutodiffBackend, Backend};
use burn::tensor::Tensor;
use metalearn_core::episode::{EpisodeData, HostBatch, TaskKind};
use metalearn_core::error::{ensure_nonzero, ensure_positive, Error};
use metalearn_core::learner::{check_finite, AdaptationCurve, MetaLearner, StepMetrics, StepStats};
use metalearn_core::loss::{accuracy, scalar, task_loss};
use metalearn_core::model::{MetaModule, MetaTrainable};
use metalearn_core::params;
use rayon::prelude::*;
use std::sync::Arc;

pub(crate) type AB<B> = Autodiff<B>;
pub(crate) type AA<B> = Autodiff<Autodiff<B>>;

/// MAML hyper-parameters.
///
/// | name | default | meaning | valid |
/// |---|---|---|---|
/// | `inner_lr` | 0.01 | inner-loop SGD step α (also used at test-time adaptation) | > 0 |
/// | `inner_steps` | 1 | inner SGD steps during meta-training | ≥ 1 (≥ 0 for first order) |
/// | `meta_batch_size` | 25 | tasks per meta-update | ≥ 1 |
/// | `outer_lr` | 0.001 | Adam learning rate β of the meta-update | > 0 |
/// | `second_order` | true | exact second-order meta-gradient (false: FOMAML) | — |
/// | `threads` | 0 | worker threads for the tasks of a meta-batch (0: one per core) | — |
///
/// The defaults are the sinusoid settings of Finn et al. (2017), §5.1.
#[derive(Config, Debug)]
pub struct MamlConfig {
    /// Inner-loop SGD step size α.
    #[config(default = 0.01)]
    pub inner_lr: f64,
    /// Inner SGD steps during meta-training.
    #[config(default = 1)]
    pub inner_steps: usize,
    /// Tasks per meta-update.
    #[config(default = 25)]
    pub meta_batch_size: usize,
    /// Adam learning rate of the meta-update.
    #[config(default = 1e-3)]
    pub outer_lr: f64,
    /// Exact second-order meta-gradient (`false`: first-order MAML).
    #[config(default = true)]
    pub second_order: bool,
    /// Worker threads for the tasks of a meta-batch (0: one per core).
    #[config(default = 0)]
    pub threads: usize,
}

impl MamlConfig {
    /// Check every field; called by the learners before any training.
    pub fn validate(&self) -> metalearn_core::Result<()> {
        ensure_positive("inner_lr", self.inner_lr)?;
        ensure_positive("outer_lr", self.outer_lr)?;
        ensure_nonzero("meta_batch_size", self.meta_batch_size)?;
        if self.second_order && self.inner_steps == 0 {
            return Err(Error::config(
                "inner_steps",
                "second-order MAML needs at least one inner step (0 steps has no second-order term)",
            ));
        }
        Ok(())
    }
}

/// Model-Agnostic Meta-Learning over any [`MetaTrainable`] model with rank-`D` inputs.
pub struct Maml<B: Backend, M: MetaTrainable<B, D>, const D: usize> {
    pub(crate) model: M,
    optim: OptimizerAdaptor<Adam, M, AB<B>>,
    pub(crate) config: MamlConfig,
    pub(crate) device: B::Device,
    pub(crate) pool: Arc<rayon::ThreadPool>,
    iterations: usize,
}

impl<B: Backend, M: MetaTrainable<B, D>, const D: usize> std::fmt::Debug for Maml<B, M, D> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Maml")
            .field("config", &self.config)
            .field("iterations", &self.iterations)
            .finish()
    }
}

/// A meta-gradient and the meta-batch statistics it came with.
pub(crate) struct MetaGradient {
    pub grads: GradientsParams,
    pub loss: f64,
    pub accuracy: Option<f64>,
}

impl<B: Backend, M: MetaTrainable<B, D>, const D: usize> Maml<B, M, D> {
    /// Validate `config` and wrap `model` (whose current parameters are the initial θ).
    pub fn new(config: MamlConfig, model: M, device: B::Device) -> UpdateResult<Self> {
        config.validate()?;
        let mut pool = rayon::ThreadPoolBuilder::new();
        if config.threads > 0 {
            pool = pool.num_threads(config.threads);
        }
        let pool = pool
            .build()
            .map_err(|e| UpdateError::ThreadPool(e.to_string()))?;
        Ok(Self {
            model: params::require_grad(model),
            optim: AdamConfig::new().init(),
            config,
            device,
            pool: Arc::new(pool),
            iterations: 0,
        })
    }

    /// The meta-learned model.
    pub fn model(&self) -> &M {
        &self.model
    }

    /// Consume the learner, returning the model.
    pub fn into_model(self) -> M {
        self.model
    }

    /// The hyper-parameters.
    pub fn config(&self) -> &MamlConfig {
        &self.config
    }

    /// Meta-iterations done so far.
    pub fn iterations(&self) -> usize {
        self.iterations
    }

    /// The meta-objective at θ = `model`: mean over `episodes` of the query loss after
    /// `inner_steps` SGD steps on the support set. Used by gradient checks.
    pub fn meta_objective(
        &self,
        model: &M::InnerModule,
        episodes: &[EpisodeData],
    ) -> metalearn_core::Result<f64> {
        let mut total = 0.0;
        for ep in episodes {
            let phi = adapt_inner::<B, M, D>(
                model.clone(),
                ep,
                self.config.inner_steps,
                self.config.inner_lr,
                &self.device,
                |_, _| Ok(()),
            )?;
            total += evaluate::<B, M::InnerModule, D>(&phi, ep, &self.device)?.0;
        }
        Ok(total / episodes.len().max(1) as f64)
    }

    /// The meta-gradient (mean over `episodes`) at the current θ, as host values in the model's
    /// parameter visiting order.
    pub fn meta_gradient_vec(&self, episodes: &[EpisodeData]) -> metalearn_core::Result<Vec<f64>> {
        let g = self.meta_gradient(episodes)?;
        Ok(params::grads_to_vec::<AB<B>, M>(&self.model, &g.grads))
    }

    pub(crate) fn meta_gradient(
        &self,
        episodes: &[EpisodeData],
    ) -> metalearn_core::Result<MetaGradient> {
        if episodes.is_empty() {
            return Err(Error::Empty("meta-batch"));
        }
        let theta = self.model.valid();
        let jobs: Vec<_> = episodes.iter().map(|e| (theta.clone(), e)).collect();
        let (cfg, device) = (&self.config, &self.device);
        let parts: Vec<metalearn_core::Result<(GradientsParams, f64, Option<f64>)>> =
            self.pool.install(|| {
                jobs.into_par_iter()
                    .map(|(theta, ep)| {
                        if cfg.second_order {
                            task_gradient_second_order::<B, M, D>(theta, ep, cfg, device)
                        } else {
                            task_gradient_first_order::<B, M, D>(theta, ep, cfg, device)
                        }
                    })
                    .collect()
            });
        let mut grads = Vec::with_capacity(parts.len());
        let (mut loss, mut acc, mut n_acc) = (0.0, 0.0, 0usize);
        for p in parts {
            let (g, l, a) = p?;
            grads.push(g);
            loss += l;
            if let Some(a) = a {
                acc += a;
                n_acc += 1;
            }
        }
        let n = grads.len() as f64;
        Ok(MetaGradient {
            grads: mean_grads::<B, M>(&self.model, grads),
            loss: loss / n,
            accuracy: (n_acc > 0).then(|| acc / n_acc as f64),
        })
    }

    /// Apply a meta-gradient unless its loss diverged (then nothing changes).
    pub(crate) fn apply(&mut self, g: MetaGradient) -> metalearn_core::Result<StepStats> {
        check_finite(self.iterations, g.loss)?;
        let model = self.model.clone();
        self.model = self.optim.step(self.config.outer_lr, model, g.grads);
        let stats = StepStats {
            iteration: self.iterations,
            meta_loss: g.loss,
            meta_accuracy: g.accuracy,
        };
        self.iterations += 1;
        Ok(stats)
    }
}

impl<B: Backend, M: MetaTrainable<B, D>, const D: usize> MetaLearner<D> for Maml<B, M, D> {
    type Adapted = M::InnerModule;

    fn meta_step(&mut self, episodes: &[EpisodeData]) -> metalearn_core::Result<StepStats> {
        let g = self.meta_gradient(episodes)?;
        self.apply(g)
    }

    fn meta_batch_size(&self) -> usize {
        self.config.meta_batch_size
    }

    fn adapt(&self, episode: &EpisodeData, steps: usize) -> metalearn_core::Result<Self::Adapted> {
        adapt_inner::<B, M, D>(
            self.model.valid(),
            episode,
            steps,
            self.config.inner_lr,
            &self.device,
            |_, _| Ok(()),
        )
    }

    fn adaptation_curve(
        &self,
        episode: &EpisodeData,
        steps: usize,
    ) -> metalearn_core::Result<AdaptationCurve> {
        adaptation_curve::<B, M, D>(
            self.model.valid(),
            episode,
            steps,
            self.config.inner_lr,
            &self.device,
        )
    }
}

/// Query metrics after 0..=`steps` SGD steps from `start`.
pub(crate) fn adaptation_curve<B: Backend, M: MetaTrainable<B, D>, const D: usize>(
    start: M::InnerModule,
    episode: &EpisodeData,
    steps: usize,
    lr: f64,
    device: &B::Device,
) -> metalearn_core::Result<AdaptationCurve> {
    let mut curve = Vec::with_capacity(steps + 1);
    adapt_inner::<B, M, D>(start, episode, steps, lr, device, |s, phi| {
        let (loss, accuracy) = evaluate::<B, M::InnerModule, D>(phi, episode, device)?;
        curve.push(StepMetrics {
            steps: s,
            loss,
            accuracy,
        });
        Ok(())
    })?;
    Ok(curve)
}

/// Query loss and accuracy of `model` on `episode`.
pub(crate) fn evaluate<B: Backend, N: MetaModule<B, D>, const D: usize>(
    model: &N,
    episode: &EpisodeData,
    device: &B::Device,
) -> metalearn_core::Result<(f64, Option<f64>)> {
    let q = episode.query.to_batch::<B, D>(device)?;
    let out = model.forward(q.inputs);
    let loss = scalar(task_loss(episode.kind, out.clone(), q.targets));
    let acc = q.labels.as_deref().map(|l| accuracy(out, l));
    Ok((loss, acc))
}

/// `steps` plain SGD steps on the support set starting from `start` (values only: first-order
/// autodiff, no graph kept). `on_step(s, φ_s)` sees every iterate, including φ₀.
pub(crate) fn adapt_inner<B: Backend, M: MetaTrainable<B, D>, const D: usize>(
    start: M::InnerModule,
    episode: &EpisodeData,
    steps: usize,
    lr: f64,
    device: &B::Device,
    mut on_step: impl FnMut(usize, &M::InnerModule) -> metalearn_core::Result<()>,
) -> metalearn_core::Result<M::InnerModule> {
    let support = episode.support.to_batch::<AB<B>, D>(device)?;
    let mut phi = start;
    on_step(0, &phi)?;
    for s in 1..=steps {
        let leaf: M = params::require_grad(M::from_inner(phi.clone()));
        let out = leaf.forward(support.inputs.clone());
        let loss = task_loss(episode.kind, out, support.targets.clone());
        let grads = GradientsParams::from_grads(loss.backward(), &leaf);
        phi = sgd_step::<B, M::InnerModule>(phi, &grads, lr);
        on_step(s, &phi)?;
    }
    Ok(phi)
}

/// `θ − lr · g` on a plain-backend module, with `g` looked up by parameter id.
pub(crate) fn sgd_step<B: Backend, N: Module<B>>(model: N, grads: &GradientsParams, lr: f64) -> N {
    struct Sgd<'a> {
        grads: &'a GradientsParams,
        lr: f64,
    }
    impl<B: Backend> ModuleMapper<B> for Sgd<'_> {
        fn map_float<const D: usize>(&mut self, p: Param<Tensor<B, D>>) -> Param<Tensor<B, D>> {
            let (id, t, mapper) = p.consume();
            let t = match self.grads.get::<B, D>(id) {
                Some(g) => t - g.mul_scalar(self.lr),
                None => t,
            };
            Param::from_mapped_value(id, t, mapper)
        }
    }
    model.map(&mut Sgd { grads, lr })
}

/// Gradients of every float parameter of `module` (visiting order), flattened; `None` where a
/// parameter did not take part in the loss.
pub(crate) fn collect_grads<A: AutodiffBackend, N: Module<A>>(
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

/// One task's exact second-order meta-gradient.
fn task_gradient_second_order<B: Backend, M: MetaTrainable<B, D>, const D: usize>(
    theta: M::InnerModule,
    ep: &EpisodeData,
    cfg: &MamlConfig,
    device: &B::Device,
) -> metalearn_core::Result<(GradientsParams, f64, Option<f64>)> {
    // Fresh leaves: each task gets its own graph, so tasks can run on different threads.
    let theta: M = params::require_grad(M::from_inner(theta));
    let support = ep.support.to_batch::<AA<B>, D>(device)?;
    let mut phi = theta.clone();
    for _ in 0..cfg.inner_steps {
        // Lift φₖ one autodiff level up as fresh leaves (burn's derived `from_inner` would
        // leave computed parameters untracked).
        let lifted = params::require_grad(
            <M as HasAutodiffModule<AA<B>>>::TrainModule::from_inner(phi.clone()),
        );
        let out = lifted.forward(support.inputs.clone());
        let loss = task_loss(ep.kind, out, support.targets.clone());
        let g = collect_grads::<AA<B>, _>(&lifted, &loss.backward());
        phi = params::map_indexed(phi, |i, t| {
            Ok(match &g[i] {
                Some(g) => t - g.clone().mul_scalar(cfg.inner_lr),
                None => t,
            })
        })?;
    }
    query_gradient::<B, M, D>(&theta, &phi, ep, device)
}

/// One task's first-order meta-gradient: the query gradient at φ_K, applied to θ.
fn task_gradient_first_order<B: Backend, M: MetaTrainable<B, D>, const D: usize>(
    theta: M::InnerModule,
    ep: &EpisodeData,
    cfg: &MamlConfig,
    device: &B::Device,
) -> metalearn_core::Result<(GradientsParams, f64, Option<f64>)> {
    let phi = adapt_inner::<B, M, D>(theta, ep, cfg.inner_steps, cfg.inner_lr, device, |_, _| {
        Ok(())
    })?;
    let leaf: M = params::require_grad(M::from_inner(phi));
    query_gradient::<B, M, D>(&leaf, &leaf, ep, device)
}

/// Back-propagate the query loss at `phi` to the leaves of `wrt`.
fn query_gradient<B: Backend, M: MetaTrainable<B, D>, const D: usize>(
    wrt: &M,
    phi: &M,
    ep: &EpisodeData,
    device: &B::Device,
) -> metalearn_core::Result<(GradientsParams, f64, Option<f64>)> {
    let q = ep.query.to_batch::<AB<B>, D>(device)?;
    let out = phi.forward(q.inputs);
    let loss = task_loss(ep.kind, out.clone(), q.targets);
    let value = scalar(loss.clone().inner());
    let acc = q.labels.as_deref().map(|l| accuracy(out.inner(), l));
    let grads = GradientsParams::from_grads(loss.backward(), wrt);
    Ok((grads, value, acc))
}

/// Mean of per-task gradients, matched by parameter id.
pub(crate) fn mean_grads<B: Backend, M: AutodiffModule<AB<B>>>(
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

/// Targets of a meta-batch must agree in kind (checked by the batched path).
pub(crate) fn same_kind(episodes: &[EpisodeData]) -> metalearn_core::Result<TaskKind> {
    let kind = episodes.first().ok_or(Error::Empty("meta-batch"))?.kind;
    if episodes.iter().any(|e| e.kind != kind) {
        return Err(Error::ShapeMismatch(
            "episodes of different kinds in one meta-batch".into(),
        ));
    }
    Ok(kind)
}

/// Stack the same-shaped batches of a meta-batch along a new task dimension.
pub(crate) fn stack_batches(
    batches: &[&HostBatch],
) -> metalearn_core::Result<(Vec<f32>, [usize; 3], Vec<f32>, [usize; 3])> {
    let first = batches.first().ok_or(Error::Empty("meta-batch"))?;
    if first.input_shape.len() != 2 {
        return Err(Error::ShapeMismatch(format!(
            "the task-batched path takes [n, features] inputs, got {:?}",
            first.input_shape
        )));
    }
    let (n, f, o) = (first.input_shape[0], first.input_shape[1], first.target_dim);
    let mut x = Vec::with_capacity(batches.len() * n * f);
    let mut y = Vec::with_capacity(batches.len() * n * o);
    for b in batches {
        if b.input_shape != first.input_shape || b.target_dim != o {
            return Err(Error::ShapeMismatch(format!(
                "the task-batched path needs equal-sized episodes: {:?} vs {:?}",
                b.input_shape, first.input_shape
            )));
        }
        x.extend_from_slice(&b.inputs);
        y.extend_from_slice(&b.targets);
    }
    Ok((x, [batches.len(), n, f], y, [batches.len(), n, o]))
}
