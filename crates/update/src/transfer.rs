//! Transfer learning: fine-tune a model on a target task from any start — random weights,
//! supervised pretraining on source classes ([`FineTune`](crate::FineTune)), or a meta-learned
//! initialisation (MAML, Reptile, ProtoNet, …) — either the whole network or only a new linear
//! head on a frozen body.
//!
//! The start is the body (an [`EmbeddingModule`]); a fresh zero-initialised
//! [`LinearHead`] maps its embedding to the target task's classes, so every start is compared
//! with the same head. [`Transfer`] implements [`MetaLearner`] for evaluation only
//! (`adaptation_curve` fine-tunes on the support set and scores the query set), so
//! `metalearn_eval::meta_test` gives accuracy ± CI over target tasks; sweeping the number of
//! support examples per class gives the sample-efficiency curve.

use crate::head::LinearHead;
use crate::inner::AB;
use crate::Result as UpdateResult;
use burn::config::Config;
use burn::module::AutodiffModule;
use burn::optim::{AdamConfig, GradientsParams, Optimizer};
use burn::tensor::backend::Backend;
use burn::tensor::Tensor;
use metalearn_core::episode::{EpisodeData, TaskKind};
use metalearn_core::error::{ensure_positive, Error};
use metalearn_core::learner::{AdaptationCurve, MetaLearner, StepMetrics, StepStats};
use metalearn_core::loss::{accuracy, cross_entropy, scalar};
use metalearn_core::model::{non_transductive, EmbeddingModule};

type CoreResult<T> = metalearn_core::Result<T>;

/// Fine-tuning hyper-parameters.
///
/// | name | default | meaning | valid |
/// |---|---|---|---|
/// | `steps` | 100 | Adam steps on the support set | — |
/// | `head_lr` | 0.01 | Adam learning rate of the new head | > 0 |
/// | `body_lr` | 0.001 | Adam learning rate of the body (when not frozen) | > 0 |
/// | `freeze_body` | true | train only the head (false: all layers) | — |
/// | `transductive` | true | embed the query batch in one forward pass (false: each query example with the support set) | — |
#[derive(Config, Debug)]
pub struct TransferConfig {
    /// Adam steps on the support set.
    #[config(default = 100)]
    pub steps: usize,
    /// Adam learning rate of the head.
    #[config(default = 0.01)]
    pub head_lr: f64,
    /// Adam learning rate of the body.
    #[config(default = 1e-3)]
    pub body_lr: f64,
    /// Train only the head.
    #[config(default = true)]
    pub freeze_body: bool,
    /// Embed the query batch in one forward pass.
    #[config(default = true)]
    pub transductive: bool,
}

impl TransferConfig {
    /// Check every field.
    pub fn validate(&self) -> CoreResult<()> {
        ensure_positive("head_lr", self.head_lr)?;
        ensure_positive("body_lr", self.body_lr)
    }
}

fn classes(ep: &EpisodeData) -> CoreResult<usize> {
    match ep.kind {
        TaskKind::Classification { ways } => Ok(ways),
        TaskKind::Regression => Err(Error::config(
            "episodes",
            "fine-tuning a new classification head needs classification episodes",
        )),
    }
}

/// Fine-tune `body` plus a new zero head on `episode`'s support set for `config.steps` Adam
/// steps; `on_step(s, body, head)` sees every iterate (s = 0 is the start).
pub fn fine_tune<B, M, const D: usize>(
    body: &M,
    episode: &EpisodeData,
    config: &TransferConfig,
    device: &B::Device,
    mut on_step: impl FnMut(usize, &M::InnerModule, &LinearHead<B>) -> CoreResult<()>,
) -> CoreResult<(M::InnerModule, LinearHead<B>)>
where
    B: Backend,
    M: AutodiffModule<AB<B>> + EmbeddingModule<AB<B>, D>,
    M::InnerModule: EmbeddingModule<B, D>,
{
    config.validate()?;
    let ways = classes(episode)?;
    metalearn_core::model::check_embed_episode::<AB<B>, M, D>(body, episode)?;
    let s = episode.support.to_batch::<AB<B>, D>(device)?;
    if config.freeze_body {
        let frozen = body.valid();
        let head = fit_head(
            &frozen,
            episode,
            config.steps,
            config.head_lr,
            device,
            |s, head| on_step(s, &frozen, head),
        )?;
        return Ok((frozen, head));
    }
    let mut body_ad = metalearn_core::params::require_grad(body.clone());
    let dim = body_ad.embed(s.inputs.clone()).dims()[1];
    let mut head = LinearHead::<AB<B>>::zeros(dim, ways, device);
    let mut head_optim = AdamConfig::new().init::<AB<B>, LinearHead<AB<B>>>();
    let mut body_optim = AdamConfig::new().init::<AB<B>, M>();
    on_step(0, &body_ad.valid(), &head.valid())?;
    for step in 1..=config.steps {
        let loss = cross_entropy(
            head.forward(body_ad.embed(s.inputs.clone())),
            s.targets.clone(),
        );
        let mut grads = metalearn_core::parallel::backward(loss)?;
        let g_body = GradientsParams::from_module(&mut grads, &body_ad);
        let g_head = GradientsParams::from_module(&mut grads, &head);
        body_ad = body_optim.step(config.body_lr, body_ad, g_body);
        head = head_optim.step(config.head_lr, head, g_head);
        on_step(step, &body_ad.valid(), &head.valid())?;
    }
    Ok((body_ad.valid(), head.valid()))
}

/// Train a new zero-initialised linear head on the support embeddings of the frozen `body` with
/// `steps` Adam steps (learning rate `lr`); `on_step(s, head)` sees every iterate.
pub fn fit_head<B: Backend, E: EmbeddingModule<B, D>, const D: usize>(
    body: &E,
    episode: &EpisodeData,
    steps: usize,
    lr: f64,
    device: &B::Device,
    mut on_step: impl FnMut(usize, &LinearHead<B>) -> CoreResult<()>,
) -> CoreResult<LinearHead<B>> {
    ensure_positive("head_lr", lr)?;
    let ways = classes(episode)?;
    metalearn_core::model::check_embed_episode::<B, E, D>(body, episode)?;
    let s = episode.support.to_batch::<B, D>(device)?;
    // Embeddings of a frozen body are computed once.
    let emb = Tensor::<AB<B>, 2>::from_inner(body.embed(s.inputs));
    let targets = Tensor::<AB<B>, 2>::from_inner(s.targets);
    let mut head = LinearHead::<AB<B>>::zeros(emb.dims()[1], ways, device);
    let mut optim = AdamConfig::new().init::<AB<B>, LinearHead<AB<B>>>();
    on_step(0, &head.valid())?;
    for step in 1..=steps {
        let loss = cross_entropy(head.forward(emb.clone()), targets.clone());
        let grads = GradientsParams::from_grads(metalearn_core::parallel::backward(loss)?, &head);
        head = optim.step(lr, head, grads);
        on_step(step, &head.valid())?;
    }
    Ok(head.valid())
}

/// Query loss and accuracy of `body` + `head` on `episode`.
pub fn evaluate<B: Backend, E: EmbeddingModule<B, D>, const D: usize>(
    body: &E,
    head: &LinearHead<B>,
    episode: &EpisodeData,
    transductive: bool,
    device: &B::Device,
) -> CoreResult<(f64, f64)> {
    let q = episode.query.to_batch::<B, D>(device)?;
    let emb = if transductive {
        body.embed(q.inputs)
    } else {
        let s = episode.support.to_batch::<B, D>(device)?;
        non_transductive(s.inputs, q.inputs, |x, n| body.embed(x).narrow(0, n, 1))
    };
    let logits = head.forward(emb);
    let labels = q
        .labels
        .ok_or_else(|| Error::config("episodes", "classification episodes need labels"))?;
    Ok((
        scalar(cross_entropy(logits.clone(), q.targets)),
        accuracy(logits, &labels),
    ))
}

/// A start for transfer: a body and a fine-tuning recipe. As a [`MetaLearner`] it does not
/// meta-train (`meta_step` is an error); `adaptation_curve(episode, steps)` fine-tunes for
/// `steps` steps (overriding `config.steps`) and reports the query metrics at every step.
#[derive(Debug)]
pub struct Transfer<B: Backend, M, const D: usize> {
    body: M,
    config: TransferConfig,
    device: B::Device,
}

impl<B, M, const D: usize> Transfer<B, M, D>
where
    B: Backend,
    M: AutodiffModule<AB<B>> + EmbeddingModule<AB<B>, D>,
    M::InnerModule: EmbeddingModule<B, D>,
{
    /// Validate `config` and wrap the start `body`.
    pub fn new(config: TransferConfig, body: M, device: B::Device) -> UpdateResult<Self> {
        config.validate()?;
        Ok(Self {
            body,
            config,
            device,
        })
    }

    /// The start.
    pub fn body(&self) -> &M {
        &self.body
    }
}

impl<B, M, const D: usize> MetaLearner<D> for Transfer<B, M, D>
where
    B: Backend,
    M: AutodiffModule<AB<B>> + EmbeddingModule<AB<B>, D>,
    M::InnerModule: EmbeddingModule<B, D>,
{
    type Adapted = (M::InnerModule, LinearHead<B>);

    fn meta_step(&mut self, _episodes: &[EpisodeData]) -> CoreResult<StepStats> {
        Err(Error::config(
            "learner",
            "Transfer fine-tunes a fixed start and does not meta-train; train the start with a \
             learner and pass its model",
        ))
    }

    fn meta_batch_size(&self) -> usize {
        1
    }

    fn adapt(&self, episode: &EpisodeData, steps: usize) -> CoreResult<Self::Adapted> {
        let cfg = self.config.clone().with_steps(steps);
        fine_tune(&self.body, episode, &cfg, &self.device, |_, _, _| Ok(()))
    }

    fn adaptation_curve(&self, episode: &EpisodeData, steps: usize) -> CoreResult<AdaptationCurve> {
        let cfg = self.config.clone().with_steps(steps);
        let mut curve = Vec::with_capacity(steps + 1);
        let transductive = self.config.transductive;
        fine_tune(&self.body, episode, &cfg, &self.device, |s, body, head| {
            // Scoring every step of a 100-step fine-tune would dominate the cost: score the
            // start, the end, and powers of two in between.
            if s == 0 || s == steps || s.is_power_of_two() {
                let (loss, acc) = evaluate(body, head, episode, transductive, &self.device)?;
                curve.push(StepMetrics {
                    steps: s,
                    loss,
                    accuracy: Some(acc),
                });
            }
            Ok(())
        })?;
        Ok(curve)
    }
}

/// A start is saved and restored like a learner's model (part `model`), so a program that
/// holds learners as [`AnyLearner`](metalearn_core::AnyLearner)s can hold a transfer start
/// too; it never trains, so its iteration count is 0.
impl<B, M, const D: usize> metalearn_core::Checkpoint for Transfer<B, M, D>
where
    B: Backend,
    M: AutodiffModule<AB<B>> + EmbeddingModule<AB<B>, D>,
    M::InnerModule: EmbeddingModule<B, D>,
{
    fn learner_name(&self) -> &'static str {
        "Transfer"
    }

    fn iterations(&self) -> usize {
        0
    }

    fn parameters(&self) -> Vec<f64> {
        metalearn_core::params::to_vec(&self.body)
    }

    fn state(&self) -> CoreResult<metalearn_core::LearnerState> {
        crate::state::put_module::<B, M>(
            metalearn_core::LearnerState::new(self.learner_name(), 0),
            "model",
            &self.body,
        )
    }

    fn load_state(&mut self, state: &metalearn_core::LearnerState) -> CoreResult<()> {
        state.expect_learner(self.learner_name())?;
        self.body = crate::state::take_module::<B, M>(state, "model", &self.body, &self.device)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use metalearn_core::backend::NdArrayCpu as Bk;
    use metalearn_core::episode::HostBatch;
    use metalearn_core::params;
    use metalearn_zoo::{Mlp, MlpConfig};
    use rand::Rng;

    /// Two Gaussian blobs in 2-D, `n` examples per class in support and query.
    fn blobs(n: usize) -> EpisodeData {
        let mut rng = metalearn_core::seed::rng(3);
        let mut make = |n: usize| {
            let mut x = Vec::new();
            let mut y = Vec::new();
            for c in 0..2 {
                for _ in 0..n {
                    let centre = if c == 0 { -1.5 } else { 1.5 };
                    x.push(centre + rng.random::<f32>() - 0.5);
                    x.push(rng.random::<f32>() - 0.5);
                    y.push(c);
                }
            }
            HostBatch::classification(x, vec![2 * n, 2], y, 2).unwrap()
        };
        EpisodeData {
            kind: TaskKind::Classification { ways: 2 },
            support: make(n),
            query: make(n),
        }
    }

    fn start() -> Mlp<AB<Bk>> {
        MlpConfig::new(vec![2, 16, 16, 2])
            .init::<AB<Bk>>(0, &Default::default())
            .unwrap()
    }

    #[test]
    fn head_only_keeps_the_body_and_learns() {
        let ep = blobs(10);
        let t =
            Transfer::<Bk, _, 2>::new(TransferConfig::new(), start(), Default::default()).unwrap();
        let curve = t.adaptation_curve(&ep, 60).unwrap();
        assert_eq!(
            curve.first().unwrap().accuracy,
            Some(0.5),
            "zero head: chance"
        );
        assert!(curve.last().unwrap().accuracy.unwrap() > 0.9, "{curve:?}");
        let (body, _) = t.adapt(&ep, 20).unwrap();
        assert_eq!(params::to_vec(&body), params::to_vec(&t.body().valid()));
    }

    #[test]
    fn all_layers_moves_the_body() {
        let ep = blobs(10);
        let t = Transfer::<Bk, _, 2>::new(
            TransferConfig::new().with_freeze_body(false),
            start(),
            Default::default(),
        )
        .unwrap();
        let (body, head) = t.adapt(&ep, 30).unwrap();
        let change = params::relative_change(&t.body().valid(), &body).unwrap();
        // Every body layer moves; the MLP's own output layer is not part of its embedding (a
        // new head replaces it), so it stays as it was.
        let n = change.len();
        assert!(change[..n - 2].iter().all(|&c| c > 0.0), "{change:?}");
        assert!(change[n - 2..].iter().all(|&c| c == 0.0), "{change:?}");
        let (_, acc) = evaluate(&body, &head, &ep, true, &Default::default()).unwrap();
        assert!(acc > 0.9);
    }

    #[test]
    fn bad_inputs_are_typed_errors() {
        let r = Transfer::<Bk, _, 2>::new(
            TransferConfig::new().with_head_lr(0.0),
            start(),
            Default::default(),
        );
        assert!(r.is_err());
        let mut t =
            Transfer::<Bk, _, 2>::new(TransferConfig::new(), start(), Default::default()).unwrap();
        assert!(t.meta_step(&[blobs(2)]).is_err());
        let mut reg = blobs(2);
        reg.kind = TaskKind::Regression;
        assert!(t.adapt(&reg, 1).is_err());
    }
}
