//! Task-batched MAML: the whole meta-batch as one stacked computation.
//!
//! The fast weights of the `T` tasks are stacked along a leading task dimension (`[T, numel]` per
//! parameter) and the model runs them with batched 3-D matmuls
//! ([`TaskBatchedModule`](metalearn_core::model::TaskBatchedModule)) — what `torch.func.vmap`
//! does. The inner loss is the *sum* of the per-task mean losses, so its gradient with respect to
//! task `t`'s slice is exactly task `t`'s own gradient; the meta-gradient equals the per-task
//! path's (a test checks this).

use crate::inner::{BatchGradient, AA, AB};
use crate::maml::{Maml, MamlConfig};
use crate::Result as UpdateResult;
use burn::module::{AutodiffModule, HasAutodiffModule};
use burn::optim::GradientsParams;
use burn::tensor::activation::log_softmax;
use burn::tensor::backend::Backend;
use burn::tensor::{Tensor, TensorData};
use metalearn_core::checkpoint::{Checkpoint, LearnerState};
use metalearn_core::episode::{EpisodeData, HostBatch, TaskKind};
use metalearn_core::error::Error;
use metalearn_core::error::Result;
use metalearn_core::learner::{AdaptationCurve, MetaLearner, StepStats};
use metalearn_core::loss::scalar;
use metalearn_core::model::{BatchedMetaTrainable, TaskBatchedModule};
use metalearn_core::params;

/// MAML with the task-batched fast path; see [`Maml`] for the algorithm and hyper-parameters.
/// Episodes of a meta-batch must have equal support and query sizes. `D` is the rank of the
/// episodes' inputs (2: feature vectors, the default; 4: images, e.g. `Conv4`).
///
/// Only the meta-gradient is task-batched; adaptation and evaluation of single episodes run
/// the per-task path ([`Maml`]), which computes the same function.
#[derive(Debug)]
pub struct BatchedMaml<B: Backend, M, const D: usize = 2>
where
    M: BatchedMetaTrainable<B, D>,
{
    inner: Maml<B, M, D>,
}

/// Sum over tasks of each task's mean loss, and the per-task losses. `out`, `y`: `[T, n, o]`.
fn batched_loss<B: Backend>(kind: TaskKind, out: Tensor<B, 3>, y: Tensor<B, 3>) -> Tensor<B, 1> {
    let [_, n, o] = out.dims();
    match kind {
        TaskKind::Regression => {
            let d = out - y;
            (d.clone() * d).sum().mul_scalar(1.0 / (n * o) as f64)
        }
        TaskKind::Classification { .. } => {
            (log_softmax(out, 2) * y).sum().mul_scalar(-1.0 / n as f64)
        }
    }
}

/// Stack the same-shaped batches of a meta-batch along a new task dimension, each example
/// flattened: `[T, n, features]` inputs and `[T, n, outputs]` targets.
fn stack_batches(
    batches: &[&HostBatch],
) -> metalearn_core::Result<(Vec<f32>, [usize; 3], Vec<f32>, [usize; 3])> {
    let first = batches.first().ok_or(Error::Empty("meta-batch"))?;
    let n = first.input_shape.first().copied().unwrap_or(0);
    let f = first.input_shape.iter().skip(1).product::<usize>();
    let o = first.target_dim;
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

impl<B: Backend, M: BatchedMetaTrainable<B, D>, const D: usize> BatchedMaml<B, M, D> {
    /// Validate `config` and wrap `model`.
    pub fn new(config: MamlConfig, model: M, device: B::Device) -> UpdateResult<Self> {
        Ok(Self {
            inner: Maml::new(config, model, device)?,
        })
    }

    /// The meta-learned model.
    pub fn model(&self) -> &M {
        self.inner.model()
    }

    /// The per-task learner this one wraps (shares model, optimiser and config).
    pub fn as_maml(&self) -> &Maml<B, M, D> {
        &self.inner
    }

    /// The meta-gradient at the current θ, as host values in parameter visiting order.
    pub fn meta_gradient_vec(&self, episodes: &[EpisodeData]) -> Result<Vec<f64>> {
        let g = self.meta_gradient(episodes)?;
        Ok(params::grads_to_vec::<AB<B>, M>(
            self.inner.model(),
            &g.theta,
        ))
    }

    fn meta_gradient(&self, episodes: &[EpisodeData]) -> Result<BatchGradient> {
        let sizes = self.inner.sizes();
        let kind = metalearn_core::episode::check_meta_batch(episodes)?;
        let start = self.inner.model().valid();
        for e in episodes {
            metalearn_core::model::check_episode::<B, M::InnerModule, D>(&start, e)?;
        }
        let cfg = &self.inner.config;
        let device = &self.inner.device;
        let t = episodes.len();
        let supports: Vec<_> = episodes.iter().map(|e| &e.support).collect();
        let queries: Vec<_> = episodes.iter().map(|e| &e.query).collect();
        let (sx, sxs, sy, sys) = stack_batches(&supports)?;
        let (qx, qxs, qy, qys) = stack_batches(&queries)?;
        // One example's shape (validated against the model above): how inputs unflatten.
        let example = &episodes[0].support.input_shape[1..];

        let theta: M = params::require_grad(M::from_inner(self.inner.model().valid()));
        let arch = <M as HasAutodiffModule<AA<B>>>::TrainModule::from_inner(theta.clone());
        let mut phi: Vec<Tensor<AB<B>, 2>> = params::tensors(&theta)
            .into_iter()
            .map(|(_, p)| p.unsqueeze::<2>().repeat_dim(0, t))
            .collect();

        let s_x = Tensor::<AA<B>, 3>::from_data(TensorData::new(sx, sxs), device);
        let s_y = Tensor::<AA<B>, 3>::from_data(TensorData::new(sy, sys), device);
        for _ in 0..cfg.inner_steps {
            let lifted: Vec<Tensor<AA<B>, 2>> = phi
                .iter()
                .map(|p| Tensor::from_inner(p.clone()).require_grad())
                .collect();
            let out = arch.forward_tasks(&lifted, s_x.clone(), example);
            let loss = batched_loss(kind, out, s_y.clone());
            let grads = metalearn_core::parallel::backward(loss)?;
            phi = phi
                .into_iter()
                .zip(&lifted)
                .enumerate()
                .map(|(i, (p, l))| match l.grad(&grads) {
                    Some(g) if !sizes.adapts(i) => {
                        let _ = g;
                        p
                    }
                    Some(g) if cfg.second_order => p - g.mul_scalar(cfg.inner_lr),
                    Some(g) => p - g.detach().mul_scalar(cfg.inner_lr),
                    None => p,
                })
                .collect();
        }
        let q_x = Tensor::<AB<B>, 3>::from_data(TensorData::new(qx, qxs), device);
        let q_y = Tensor::<AB<B>, 3>::from_data(TensorData::new(qy, qys), device);
        let out = theta.forward_tasks(&phi, q_x, example);
        let loss = batched_loss(kind, out.clone(), q_y).mul_scalar(1.0 / t as f64);
        let accuracy = match kind {
            TaskKind::Classification { .. } => {
                let pred = out.inner().argmax(2).into_data();
                let pred: Vec<i64> = pred.iter::<i64>().collect();
                let labels: Vec<usize> = queries
                    .iter()
                    .flat_map(|q| q.labels.clone().unwrap_or_default())
                    .collect();
                let hits = pred
                    .iter()
                    .zip(&labels)
                    .filter(|(p, l)| **p == **l as i64)
                    .count();
                Some(hits as f64 / labels.len().max(1) as f64)
            }
            TaskKind::Regression => None,
        };
        let value = scalar(loss.clone().inner());
        Ok(BatchGradient {
            theta: GradientsParams::from_grads(metalearn_core::parallel::backward(loss)?, &theta),
            sizes: None,
            loss: value,
            accuracy,
        })
    }
}

impl<B: Backend, M: BatchedMetaTrainable<B, D>, const D: usize> MetaLearner<D>
    for BatchedMaml<B, M, D>
{
    type Adapted = M::InnerModule;

    fn meta_step(&mut self, episodes: &[EpisodeData]) -> Result<StepStats> {
        let g = self.meta_gradient(episodes)?;
        self.inner.apply(g)
    }

    fn meta_batch_size(&self) -> usize {
        self.inner.config.meta_batch_size
    }

    fn adapt(&self, episode: &EpisodeData, steps: usize) -> Result<Self::Adapted> {
        self.inner.adapt(episode, steps)
    }

    fn adaptation_curve(&self, episode: &EpisodeData, steps: usize) -> Result<AdaptationCurve> {
        self.inner.adaptation_curve(episode, steps)
    }

    fn evaluate(
        &self,
        episode: &EpisodeData,
        steps: usize,
    ) -> Result<metalearn_core::learner::StepMetrics> {
        self.inner.evaluate(episode, steps)
    }

    fn predict(&self, episode: &EpisodeData, steps: usize) -> Result<Vec<f32>> {
        self.inner.predict(episode, steps)
    }
}

impl<B: Backend, M: BatchedMetaTrainable<B, D>, const D: usize> Checkpoint
    for BatchedMaml<B, M, D>
{
    fn learner_name(&self) -> &'static str {
        self.inner.learner_name()
    }

    fn iterations(&self) -> usize {
        self.inner.iterations()
    }

    fn parameters(&self) -> Vec<f64> {
        self.inner.parameters()
    }

    fn state(&self) -> Result<LearnerState> {
        self.inner.state()
    }

    fn load_state(&mut self, state: &LearnerState) -> Result<()> {
        self.inner.load_state(state)
    }
}
