//! The inner loop shared by the gradient-based learners (MAML, FOMAML, ANIL, Meta-SGD, Reptile).
//!
//! An inner step is `φᵢ ← φᵢ − sᵢ ⊙ ∇ᵢ L_support(φ)` for every parameter tensor `i` (visiting
//! order), where the step sizes `s` are a scalar (MAML), a scalar on a subset of tensors (ANIL:
//! the head), or learned per-element tensors (Meta-SGD).

use burn::backend::Autodiff;
use burn::module::{AutodiffModule, HasAutodiffModule, Module, ModuleVisitor, Param};
use burn::optim::GradientsParams;
use burn::tensor::backend::{AutodiffBackend, Backend};
use burn::tensor::Tensor;
use metalearn_core::episode::EpisodeData;
use metalearn_core::error::{Error, Result};
use metalearn_core::loss::{accuracy, scalar, task_loss};
use metalearn_core::model::{MetaModule, MetaTrainable};
use metalearn_core::params;

pub(crate) type AB<B> = Autodiff<B>;
pub(crate) type AA<B> = Autodiff<Autodiff<B>>;

/// Inner-loop step sizes, per parameter tensor in visiting order.
#[derive(Debug, Clone)]
pub(crate) enum Sizes<T> {
    /// One learning rate for every parameter.
    Uniform(f64),
    /// One learning rate for the tensors marked `true`; the others are not adapted.
    Masked(f64, Vec<bool>),
    /// A learned step size per element (Meta-SGD), one tensor per parameter tensor.
    PerElement(Vec<T>),
}

impl<T> Sizes<T> {
    /// Uniform, or masked to the last `last` of `count` tensors when `last > 0`.
    pub fn scalar(lr: f64, last: usize, count: usize) -> Self {
        if last == 0 || last >= count {
            Self::Uniform(lr)
        } else {
            Self::Masked(lr, (0..count).map(|i| i + last >= count).collect())
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

/// `t − s ⊙ g` for tensor `i`.
pub(crate) fn step<Bk: Backend>(
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

/// `steps` inner steps on the support set from `start`, on values only (first-order autodiff,
/// no graph kept). `on_step(s, φ_s)` sees every iterate, including φ₀.
pub(crate) fn adapt_inner<B: Backend, M: MetaTrainable<B, D>, const D: usize>(
    start: M::InnerModule,
    episode: &EpisodeData,
    steps: usize,
    sizes: &Sizes<Tensor<B, 1>>,
    device: &B::Device,
    mut on_step: impl FnMut(usize, &M::InnerModule) -> Result<()>,
) -> Result<M::InnerModule> {
    let support = episode.support.to_batch::<AB<B>, D>(device)?;
    let mut phi = start;
    on_step(0, &phi)?;
    for s in 1..=steps {
        let leaf: M = params::require_grad(M::from_inner(phi.clone()));
        let out = leaf.forward(support.inputs.clone());
        let loss = task_loss(episode.kind, out, support.targets.clone());
        let grads = loss.backward();
        let g = collect_grads::<AB<B>, _>(&leaf, &grads);
        phi = params::map_indexed(phi, |i, t| Ok(step(t, g[i].clone(), i, sizes)))?;
        on_step(s, &phi)?;
    }
    Ok(phi)
}

/// [`adapt_inner`] without a per-step callback: the adapted parameters only.
pub(crate) fn adapt<B: Backend, M: MetaTrainable<B, D>, const D: usize>(
    start: M::InnerModule,
    episode: &EpisodeData,
    steps: usize,
    sizes: &Sizes<Tensor<B, 1>>,
    device: &B::Device,
) -> Result<M::InnerModule> {
    adapt_inner::<B, M, D>(start, episode, steps, sizes, device, |_, _| Ok(()))
}

/// Query loss and accuracy of `model` on `episode`.
pub(crate) fn evaluate<B: Backend, N: MetaModule<B, D>, const D: usize>(
    model: &N,
    episode: &EpisodeData,
    device: &B::Device,
) -> Result<(f64, Option<f64>)> {
    let q = episode.query.to_batch::<B, D>(device)?;
    let out = model.forward(q.inputs);
    let loss = scalar(task_loss(episode.kind, out.clone(), q.targets));
    let acc = q.labels.as_deref().map(|l| accuracy(out, l));
    Ok((loss, acc))
}

/// Query metrics after 0..=`steps` inner steps from `start`.
pub(crate) fn adaptation_curve<B: Backend, M: MetaTrainable<B, D>, const D: usize>(
    start: M::InnerModule,
    episode: &EpisodeData,
    steps: usize,
    sizes: &Sizes<Tensor<B, 1>>,
    device: &B::Device,
) -> Result<metalearn_core::learner::AdaptationCurve> {
    let mut curve = Vec::with_capacity(steps + 1);
    adapt_inner::<B, M, D>(start, episode, steps, sizes, device, |s, phi| {
        let (loss, accuracy) = evaluate::<B, M::InnerModule, D>(phi, episode, device)?;
        curve.push(metalearn_core::learner::StepMetrics {
            steps: s,
            loss,
            accuracy,
        });
        Ok(())
    })?;
    Ok(curve)
}

/// One task's contribution to the meta-gradient.
pub(crate) struct TaskGradient {
    pub theta: GradientsParams,
    pub sizes: Option<GradientsParams>,
    pub loss: f64,
    pub accuracy: Option<f64>,
}

/// The meta-gradient of one task's post-adaptation query loss.
///
/// `sizes` are plain values; for [`Sizes::PerElement`], `size_module` is the module holding them
/// (same architecture as θ, its own parameter ids) and receives a gradient too.
pub(crate) fn task_gradient<B: Backend, M: MetaTrainable<B, D>, const D: usize>(
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
        let loss = task_loss(ep.kind, out, support.targets.clone());
        let mut g = collect_grads::<AA<B>, _>(&lifted, &loss.backward());
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
    let loss = task_loss(ep.kind, out.clone(), q.targets);
    let value = scalar(loss.clone().inner());
    let acc = q.labels.as_deref().map(|l| accuracy(out.inner(), l));
    let mut grads = loss.backward();
    let theta = GradientsParams::from_module(&mut grads, wrt);
    let sizes = sizes.map(|m| GradientsParams::from_module(&mut grads, m));
    Ok(TaskGradient {
        theta,
        sizes,
        loss: value,
        accuracy: acc,
    })
}

/// Mean of per-task gradients of `model`'s parameters, matched by parameter id.
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

/// Summary of a meta-batch of task gradients.
pub(crate) struct BatchGradient {
    pub theta: GradientsParams,
    pub sizes: Option<GradientsParams>,
    pub loss: f64,
    pub accuracy: Option<f64>,
}

/// Average task gradients (in task order, so the result does not depend on threads).
pub(crate) fn combine<B: Backend, M: AutodiffModule<AB<B>>>(
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
