//! Prototypical Networks (Snell, Swersky & Zemel 2017).
//!
//! An episode's class prototypes are the mean embeddings of its support examples; a query is
//! classified by a softmax over negative squared Euclidean distances to the prototypes. The
//! embedding network is trained end to end on episodes (optionally with more ways at training
//! than at test, which Snell et al. found helps: 60-way training for Omniglot).

use crate::inner::AB;
use crate::outer::{outer_checkpoint_methods, Outer};
use crate::Result as UpdateResult;
use burn::config::Config;
use burn::module::AutodiffModule;
use burn::tensor::backend::Backend;
use burn::tensor::Tensor;
use metalearn_core::checkpoint::Checkpoint;
use metalearn_core::episode::{check_meta_batch, EpisodeData, TaskKind};
use metalearn_core::error::{ensure_nonzero, ensure_positive, Error};
use metalearn_core::learner::{AdaptationCurve, MetaLearner, StepMetrics, StepStats};
use metalearn_core::loss::{accuracy, cross_entropy, scalar};
use metalearn_core::model::{check_embed_episode, non_transductive, EmbeddingModule};

/// Prototypical Networks hyper-parameters.
///
/// | name | default | meaning | valid |
/// |---|---|---|---|
/// | `learning_rate` | 0.001 | Adam learning rate (Snell et al.: 1e-3, halved every 2000 episodes) | > 0 |
/// | `meta_batch_size` | 1 | episodes per update | ≥ 1 |
/// | `lr_halving_every` | 0 | halve the learning rate every this many updates (0: never) | — |
/// | `transductive` | true | embed the query batch in one forward pass (false: each query example with the support set, whose embeddings then give that example's prototypes) | — |
/// | `divergence_loss` | 1e4 | a meta-batch loss above this is [`Error::Diverged`] and takes no step (chance is ln N ≈ 1.6–4.1; a too-large learning rate sends it to ~1e24, then parks it at chance for good) | > 0 |
#[derive(Config, Debug)]
pub struct ProtoNetConfig {
    /// Adam learning rate.
    #[config(default = 1e-3)]
    pub learning_rate: f64,
    /// Episodes per update.
    #[config(default = 1)]
    pub meta_batch_size: usize,
    /// Halve the learning rate every this many updates (0: never).
    #[config(default = 0)]
    pub lr_halving_every: usize,
    /// Embed the query batch in one forward pass (`false`: each query example in one batch with
    /// the support set, so batch statistics never mix query examples).
    #[config(default = true)]
    pub transductive: bool,
    /// A meta-batch loss above this is a divergence (the step is refused).
    #[config(default = 1e4)]
    pub divergence_loss: f64,
}

impl ProtoNetConfig {
    /// Check every field.
    pub fn validate(&self) -> metalearn_core::Result<()> {
        ensure_positive("learning_rate", self.learning_rate)?;
        ensure_positive("divergence_loss", self.divergence_loss)?;
        ensure_nonzero("meta_batch_size", self.meta_batch_size)
    }
}

/// Logits `−‖q − p_c‖²` of query embeddings `[n_q, d]` against the prototypes of the support
/// embeddings `[n_s, d]` with one-hot labels `[n_s, N]`.
pub fn prototype_logits<Bk: Backend>(
    support: Tensor<Bk, 2>,
    support_onehot: Tensor<Bk, 2>,
    query: Tensor<Bk, 2>,
) -> Tensor<Bk, 2> {
    prototype_logits_from(prototypes(support, support_onehot), query)
}

/// Class prototypes `[N, d]`: the mean support embedding of each class.
pub fn prototypes<Bk: Backend>(support: Tensor<Bk, 2>, onehot: Tensor<Bk, 2>) -> Tensor<Bk, 2> {
    let [_, n] = onehot.dims();
    let d = support.dims()[1];
    let counts = onehot.clone().sum_dim(0).clamp_min(1.0).recip(); // [1, N]
    let sums = onehot.transpose().matmul(support); // [N, d]
    sums * counts.reshape([n, 1]).repeat_dim(1, d)
}

/// Logits `−‖q − p‖²` for queries `[n_q, d]` and prototypes `[N, d]`.
pub fn prototype_logits_from<Bk: Backend>(
    protos: Tensor<Bk, 2>,
    query: Tensor<Bk, 2>,
) -> Tensor<Bk, 2> {
    let [nq, _] = query.dims();
    let n = protos.dims()[0];
    let q2 = (query.clone() * query.clone()).sum_dim(1).repeat_dim(1, n); // [n_q, N]
    let p2 = (protos.clone() * protos.clone())
        .sum_dim(1)
        .reshape([1, n])
        .repeat_dim(0, nq);
    let qp = query.matmul(protos.transpose());
    qp.mul_scalar(2.0) - q2 - p2
}

/// Prototypical Networks over any embedding model.
pub struct ProtoNet<B: Backend, M, const D: usize>
where
    M: AutodiffModule<AB<B>> + EmbeddingModule<AB<B>, D>,
    M::InnerModule: EmbeddingModule<B, D>,
{
    outer: Outer<B, M>,
    config: ProtoNetConfig,
    device: B::Device,
}

impl<B: Backend, M, const D: usize> std::fmt::Debug for ProtoNet<B, M, D>
where
    M: AutodiffModule<AB<B>> + EmbeddingModule<AB<B>, D>,
    M::InnerModule: EmbeddingModule<B, D>,
{
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProtoNet")
            .field("config", &self.config)
            .field("iterations", &self.outer.iterations())
            .finish()
    }
}

pub(crate) fn ways(ep: &EpisodeData) -> metalearn_core::Result<usize> {
    match ep.kind {
        TaskKind::Classification { ways } => Ok(ways),
        TaskKind::Regression => Err(Error::config(
            "episodes",
            "Prototypical Networks need classification episodes",
        )),
    }
}

impl<B: Backend, M, const D: usize> ProtoNet<B, M, D>
where
    M: AutodiffModule<AB<B>> + EmbeddingModule<AB<B>, D>,
    M::InnerModule: EmbeddingModule<B, D>,
{
    /// Validate `config` and wrap the embedding network `model`.
    pub fn new(config: ProtoNetConfig, model: M, device: B::Device) -> UpdateResult<Self> {
        config.validate()?;
        Ok(Self {
            outer: Outer::new(model),
            config,
            device,
        })
    }

    /// The embedding network.
    pub fn model(&self) -> &M {
        self.outer.model()
    }

    fn learning_rate(&self) -> f64 {
        let c = &self.config;
        match c.lr_halving_every {
            0 => c.learning_rate,
            k => c.learning_rate * 0.5f64.powi((self.outer.iterations() / k) as i32),
        }
    }
}

impl<B: Backend, M, const D: usize> MetaLearner<D> for ProtoNet<B, M, D>
where
    M: AutodiffModule<AB<B>> + EmbeddingModule<AB<B>, D>,
    M::InnerModule: EmbeddingModule<B, D>,
{
    /// The embedding network and the episode's prototypes `[N, d]`.
    type Adapted = (M::InnerModule, Tensor<B, 2>);

    fn meta_step(&mut self, episodes: &[EpisodeData]) -> metalearn_core::Result<StepStats> {
        check_meta_batch(episodes)?;
        let mut total: Option<Tensor<AB<B>, 1>> = None;
        let (mut acc, mut n) = (0.0, 0usize);
        for ep in episodes {
            ways(ep)?;
            check_embed_episode::<AB<B>, M, D>(self.model(), ep)?;
            let s = ep.support.to_batch::<AB<B>, D>(&self.device)?;
            let q = ep.query.to_batch::<AB<B>, D>(&self.device)?;
            let logits = prototype_logits(
                self.model().embed(s.inputs),
                s.targets,
                self.model().embed(q.inputs),
            );
            if let Some(l) = &q.labels {
                acc += accuracy(logits.clone().inner(), l);
                n += 1;
            }
            let loss = cross_entropy(logits, q.targets);
            total = Some(match total {
                Some(t) => t + loss,
                None => loss,
            });
        }
        let loss = total
            .ok_or(Error::Empty("meta-batch"))?
            .mul_scalar(1.0 / episodes.len() as f64);
        let value = scalar(loss.clone().inner());
        if value > self.config.divergence_loss {
            return Err(Error::Diverged {
                iteration: self.outer.iterations(),
                value,
            });
        }
        let lr = self.learning_rate();
        self.outer
            .step_loss(lr, loss, (n > 0).then(|| acc / n as f64))
    }

    fn meta_batch_size(&self) -> usize {
        self.config.meta_batch_size
    }

    /// Prototypes from the support set; `steps` is ignored (no gradient steps at test time).
    fn adapt(&self, episode: &EpisodeData, _steps: usize) -> metalearn_core::Result<Self::Adapted> {
        ways(episode)?;
        let model = self.model().valid();
        check_embed_episode::<B, _, D>(&model, episode)?;
        let s = episode.support.to_batch::<B, D>(&self.device)?;
        let protos = prototypes(model.embed(s.inputs), s.targets);
        Ok((model, protos))
    }

    /// One point (0 steps): prototypes need no gradient steps.
    fn adaptation_curve(
        &self,
        episode: &EpisodeData,
        _steps: usize,
    ) -> metalearn_core::Result<AdaptationCurve> {
        proto_curve(
            &self.model().valid(),
            episode,
            self.config.transductive,
            &self.device,
        )
    }

    fn predict(&self, episode: &EpisodeData, _steps: usize) -> metalearn_core::Result<Vec<f32>> {
        let logits = proto_query_logits::<B, M::InnerModule, D>(
            &self.model().valid(),
            episode,
            self.config.transductive,
            &self.device,
        )?;
        logits
            .into_data()
            .convert::<f32>()
            .to_vec()
            .map_err(|e| Error::Serde(format!("{e:?}")))
    }
}

/// Query loss and accuracy of the prototype classifier of embedding `model` on `episode`
/// (one point: no adaptation steps).
pub(crate) fn proto_curve<B: Backend, E: EmbeddingModule<B, D>, const D: usize>(
    model: &E,
    episode: &EpisodeData,
    transductive: bool,
    device: &B::Device,
) -> metalearn_core::Result<AdaptationCurve> {
    let q = episode.query.to_batch::<B, D>(device)?;
    let logits = proto_query_logits::<B, E, D>(model, episode, transductive, device)?;
    Ok(vec![StepMetrics {
        steps: 0,
        loss: scalar(cross_entropy(logits.clone(), q.targets)),
        accuracy: q.labels.as_deref().map(|l| accuracy(logits, l)),
    }])
}

/// The prototype classifier's logits `[query, ways]` on `episode`'s query inputs.
pub(crate) fn proto_query_logits<B: Backend, E: EmbeddingModule<B, D>, const D: usize>(
    model: &E,
    episode: &EpisodeData,
    transductive: bool,
    device: &B::Device,
) -> metalearn_core::Result<Tensor<B, 2>> {
    ways(episode)?;
    check_embed_episode::<B, E, D>(model, episode)?;
    let s = episode.support.to_batch::<B, D>(device)?;
    let q = episode.query.to_batch::<B, D>(device)?;
    Ok(if transductive {
        let protos = prototypes(model.embed(s.inputs), s.targets);
        prototype_logits_from(protos, model.embed(q.inputs))
    } else {
        non_transductive(s.inputs, q.inputs, |x, n| {
            let emb = model.embed(x);
            let rows = emb.dims()[0];
            prototype_logits(
                emb.clone().narrow(0, 0, n),
                s.targets.clone(),
                emb.narrow(0, n, rows - n),
            )
        })
    })
}

impl<B: Backend, M, const D: usize> Checkpoint for ProtoNet<B, M, D>
where
    M: AutodiffModule<AB<B>> + EmbeddingModule<AB<B>, D>,
    M::InnerModule: EmbeddingModule<B, D>,
{
    outer_checkpoint_methods!("ProtoNet");
}

#[cfg(test)]
mod tests {
    use super::*;
    use metalearn_core::backend::NdArrayCpu as Bk;

    #[test]
    fn prototype_distances_by_hand() {
        let d = Default::default();
        // class 0: (0,0) and (2,0) -> prototype (1,0); class 1: (0,4) -> (0,4)
        let s = Tensor::<Bk, 2>::from_floats([[0.0, 0.0], [2.0, 0.0], [0.0, 4.0]], &d);
        let y = Tensor::<Bk, 2>::from_floats([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0]], &d);
        let q = Tensor::<Bk, 2>::from_floats([[1.0, 1.0], [0.0, 3.0]], &d);
        let l: Vec<f32> = prototype_logits(s, y, q)
            .into_data()
            .iter::<f32>()
            .collect();
        // q0=(1,1): to (1,0) dist² 1; to (0,4) 1 + 9 = 10. q1=(0,3): 1 + 9 = 10; 1.
        let want = [-1.0, -10.0, -10.0, -1.0];
        for (a, b) in l.iter().zip(want) {
            assert!((a - b).abs() < 1e-5, "{l:?}");
        }
    }
}
