//! The pretrain + fine-tune baseline (Chen, Liu, Kira, Wang & Huang 2019, "A Closer Look at
//! Few-shot Classification", *Baseline*).
//!
//! Meta-training is ordinary supervised training of a classifier over all meta-training classes
//! (episodes from `metalearn_tasks::ClassBatches`, labels = global class ids). At test time the
//! body is frozen and a new linear head is trained on the support set's embeddings.

use crate::head::LinearHead;
use crate::inner::AB;
use crate::outer::{outer_checkpoint_methods, Outer};
use crate::transfer::fit_head;
use crate::Result as UpdateResult;
use burn::config::Config;
use burn::module::AutodiffModule;
use burn::tensor::backend::Backend;
use burn::tensor::Tensor;
use metalearn_core::checkpoint::Checkpoint;
use metalearn_core::episode::{EpisodeData, TaskKind};
use metalearn_core::error::{ensure_positive, Error};
use metalearn_core::learner::{AdaptationCurve, MetaLearner, StepMetrics, StepStats};
use metalearn_core::loss::{accuracy, cross_entropy, scalar};
use metalearn_core::model::{non_transductive, EmbeddingModule, MetaModule};

/// Baseline hyper-parameters.
///
/// | name | default | meaning | valid |
/// |---|---|---|---|
/// | `learning_rate` | 0.001 | Adam learning rate of pretraining | > 0 |
/// | `head_lr` | 0.01 | Adam learning rate of the new head at test time | > 0 |
/// | `batch_size` | 1 | `ClassBatches` episodes per pretraining update | ≥ 1 |
/// | `transductive` | true | embed the query batch in one forward pass (false: each query example with the support set) | — |
#[derive(Config, Debug)]
pub struct FineTuneConfig {
    /// Adam learning rate of pretraining.
    #[config(default = 1e-3)]
    pub learning_rate: f64,
    /// Adam learning rate of the new head.
    #[config(default = 0.01)]
    pub head_lr: f64,
    /// Episodes per pretraining update.
    #[config(default = 1)]
    pub batch_size: usize,
    /// Embed the query batch in one forward pass (`false`: each query example in one batch with
    /// the support set).
    #[config(default = true)]
    pub transductive: bool,
}

impl FineTuneConfig {
    /// Check every field.
    pub fn validate(&self) -> metalearn_core::Result<()> {
        ensure_positive("learning_rate", self.learning_rate)?;
        ensure_positive("head_lr", self.head_lr)?;
        metalearn_core::error::ensure_nonzero("batch_size", self.batch_size)
    }
}

/// The pretrain + fine-tune baseline over a classifier that exposes its embedding.
pub struct FineTune<B: Backend, M, const D: usize>
where
    M: AutodiffModule<AB<B>> + MetaModule<AB<B>, D>,
    M::InnerModule: EmbeddingModule<B, D>,
{
    outer: Outer<B, M>,
    config: FineTuneConfig,
    device: B::Device,
}

impl<B: Backend, M, const D: usize> std::fmt::Debug for FineTune<B, M, D>
where
    M: AutodiffModule<AB<B>> + MetaModule<AB<B>, D>,
    M::InnerModule: EmbeddingModule<B, D>,
{
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FineTune")
            .field("config", &self.config)
            .field("iterations", &self.outer.iterations())
            .finish()
    }
}

impl<B: Backend, M, const D: usize> FineTune<B, M, D>
where
    M: AutodiffModule<AB<B>> + MetaModule<AB<B>, D>,
    M::InnerModule: EmbeddingModule<B, D>,
{
    /// Validate `config` and wrap the classifier `model` (outputs = number of pretraining classes).
    pub fn new(config: FineTuneConfig, model: M, device: B::Device) -> UpdateResult<Self> {
        config.validate()?;
        Ok(Self {
            outer: Outer::new(model),
            config,
            device,
        })
    }

    /// The pretrained classifier.
    pub fn model(&self) -> &M {
        self.outer.model()
    }
}

impl<B: Backend, M, const D: usize> MetaLearner<D> for FineTune<B, M, D>
where
    M: AutodiffModule<AB<B>> + MetaModule<AB<B>, D>,
    M::InnerModule: EmbeddingModule<B, D>,
{
    /// The frozen body and the new head.
    type Adapted = (M::InnerModule, LinearHead<B>);

    /// One supervised step on the support and query examples of each episode (global labels).
    fn meta_step(&mut self, episodes: &[EpisodeData]) -> metalearn_core::Result<StepStats> {
        let first = episodes.first().ok_or(Error::Empty("batch"))?;
        metalearn_core::episode::check_meta_batch(episodes)?;
        for ep in episodes {
            metalearn_core::model::check_episode::<AB<B>, M, D>(self.model(), ep)?;
        }
        let classes = match first.kind {
            TaskKind::Classification { ways } => ways,
            TaskKind::Regression => return Err(Error::config("episodes", "classification only")),
        };
        let mut total: Option<Tensor<AB<B>, 1>> = None;
        let (mut acc, mut n) = (0.0, 0usize);
        for ep in episodes {
            for b in [&ep.support, &ep.query] {
                let x = b.to_batch::<AB<B>, D>(&self.device)?;
                let out = self.model().forward(x.inputs);
                if out.dims()[1] != classes {
                    return Err(Error::ShapeMismatch(format!(
                        "model has {} outputs for {classes} pretraining classes",
                        out.dims()[1]
                    )));
                }
                if let Some(l) = &x.labels {
                    acc += accuracy(out.clone().inner(), l);
                    n += 1;
                }
                let loss = cross_entropy(out, x.targets);
                total = Some(match total {
                    Some(t) => t + loss,
                    None => loss,
                });
            }
        }
        let loss = total
            .ok_or(Error::Empty("batch"))?
            .mul_scalar(1.0 / (2 * episodes.len()) as f64);
        self.outer.step_loss(
            self.config.learning_rate,
            loss,
            (n > 0).then(|| acc / n as f64),
        )
    }

    fn meta_batch_size(&self) -> usize {
        self.config.batch_size
    }

    fn adapt(&self, episode: &EpisodeData, steps: usize) -> metalearn_core::Result<Self::Adapted> {
        let body = self.model().valid();
        let head = fit_head(
            &body,
            episode,
            steps,
            self.config.head_lr,
            &self.device,
            |_, _| Ok(()),
        )?;
        Ok((body, head))
    }

    fn adaptation_curve(
        &self,
        episode: &EpisodeData,
        steps: usize,
    ) -> metalearn_core::Result<AdaptationCurve> {
        let q = episode.query.to_batch::<B, D>(&self.device)?;
        let body = self.model().valid();
        let emb = if self.config.transductive {
            body.embed(q.inputs)
        } else {
            let s = episode.support.to_batch::<B, D>(&self.device)?;
            non_transductive(s.inputs, q.inputs, |x, n| body.embed(x).narrow(0, n, 1))
        };
        let mut curve = Vec::with_capacity(steps + 1);
        fit_head(
            &body,
            episode,
            steps,
            self.config.head_lr,
            &self.device,
            |s, head| {
                let logits = head.forward(emb.clone());
                curve.push(StepMetrics {
                    steps: s,
                    loss: scalar(cross_entropy(logits.clone(), q.targets.clone())),
                    accuracy: q.labels.as_deref().map(|l| accuracy(logits, l)),
                });
                Ok(())
            },
        )?;
        Ok(curve)
    }
}

impl<B: Backend, M, const D: usize> Checkpoint for FineTune<B, M, D>
where
    M: AutodiffModule<AB<B>> + MetaModule<AB<B>, D>,
    M::InnerModule: EmbeddingModule<B, D>,
{
    outer_checkpoint_methods!("FineTune");
}
