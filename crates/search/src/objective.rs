//! What a search maximises: any closure, a supervised objective (train the candidate briefly,
//! return held-out accuracy), or the meta objective — meta-train the candidate briefly with a
//! meta-learner and return its few-shot accuracy on held-out classes.

use crate::presets::conv4_config;
use crate::space::{Architecture, SearchSpace};
use crate::{Error, Result};
use burn::backend::Autodiff;
use burn::tensor::backend::Backend;
use metalearn_core::episode::HostBatch;
use metalearn_core::learner::MetaLearner;
use metalearn_core::loss::accuracy;
use metalearn_core::{MetaModule, SeedStream, TaskDistribution};
use metalearn_tasks::{ClassBatches, ClassDataset, NWayKShot, NWayKShotConfig};
use metalearn_update::{FineTune, FineTuneConfig, Maml, MamlConfig, ProtoNet, ProtoNetConfig};
use serde::{Deserialize, Serialize};
use std::marker::PhantomData;
use std::sync::Arc;

/// A score for an architecture (higher is better), from a seed. Implementations must be
/// deterministic given the seed: searches are reproducible and resumable because of it.
pub trait Objective: Sync {
    /// Score `arch` of `space` using `seed` for every random choice.
    fn evaluate(&self, space: &SearchSpace, arch: &Architecture, seed: u64) -> Result<f64>;
}

impl<F> Objective for F
where
    F: Fn(&SearchSpace, &Architecture, u64) -> Result<f64> + Sync,
{
    fn evaluate(&self, space: &SearchSpace, arch: &Architecture, seed: u64) -> Result<f64> {
        self(space, arch, seed)
    }
}

/// Which meta-learner the meta objective trains candidates with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum MetaMethod {
    /// Prototypical Networks (no inner loop; cheap).
    ProtoNet,
    /// First-order MAML.
    Fomaml,
}

/// Budget of the meta objective.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct MetaObjectiveConfig {
    /// The meta-learner.
    pub method: MetaMethod,
    /// Ways and shots of training and validation episodes.
    pub ways: usize,
    /// Support examples per class.
    pub shots: usize,
    /// Query examples per class.
    pub query: usize,
    /// Meta-training iterations per candidate.
    pub iterations: usize,
    /// Validation episodes per candidate (the same episodes for every candidate).
    pub validation_episodes: usize,
    /// Seed of the validation episodes.
    pub validation_seed: u64,
    /// Image side.
    pub input_size: usize,
}

impl MetaObjectiveConfig {
    /// ProtoNet, 5-way 1-shot with 5 queries per class, 50 iterations per candidate, 20
    /// validation episodes (seed 12345), 28×28 images; change a field with the `with_*` methods.
    pub fn new() -> Self {
        Self {
            method: MetaMethod::ProtoNet,
            ways: 5,
            shots: 1,
            query: 5,
            iterations: 50,
            validation_episodes: 20,
            validation_seed: 12345,
            input_size: 28,
        }
    }

    /// The meta-learner.
    pub fn with_method(mut self, method: MetaMethod) -> Self {
        self.method = method;
        self
    }

    /// Ways, shots and query examples per class of the episodes.
    pub fn with_episode(mut self, ways: usize, shots: usize, query: usize) -> Self {
        (self.ways, self.shots, self.query) = (ways, shots, query);
        self
    }

    /// Meta-training iterations per candidate.
    pub fn with_iterations(mut self, iterations: usize) -> Self {
        self.iterations = iterations;
        self
    }

    /// Validation episodes per candidate and their seed.
    pub fn with_validation(mut self, episodes: usize, seed: u64) -> Self {
        (self.validation_episodes, self.validation_seed) = (episodes, seed);
        self
    }

    /// Image side.
    pub fn with_input_size(mut self, input_size: usize) -> Self {
        self.input_size = input_size;
        self
    }
}

impl Default for MetaObjectiveConfig {
    fn default() -> Self {
        Self::new()
    }
}

/// The meta objective: meta-train a Conv4 built from the architecture (a space with `blocks`,
/// `filters`, `kernel`; e.g. [`conv_space`](crate::presets::conv_space)) on episodes of the
/// `train` classes, and return its mean few-shot accuracy on episodes of the `validation`
/// classes — how well the architecture *adapts to new tasks*.
pub struct MetaObjective<B: Backend, D: ClassDataset> {
    train: Arc<D>,
    validation: Arc<D>,
    config: MetaObjectiveConfig,
    backend: PhantomData<fn() -> B>,
}

impl<B: Backend, D: ClassDataset> std::fmt::Debug for MetaObjective<B, D> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MetaObjective")
            .field("config", &self.config)
            .finish()
    }
}

impl<B: Backend, D: ClassDataset> MetaObjective<B, D> {
    /// Errors: episode shapes the datasets cannot serve.
    pub fn new(train: Arc<D>, validation: Arc<D>, config: MetaObjectiveConfig) -> Result<Self> {
        let shape = NWayKShotConfig::new(config.ways, config.shots, config.query);
        NWayKShot::new(train.clone(), shape)?;
        NWayKShot::new(validation.clone(), shape)?;
        if config.iterations == 0 || config.validation_episodes == 0 {
            return Err(Error::Config(
                "the meta objective needs iterations and validation episodes".into(),
            ));
        }
        Ok(Self {
            train,
            validation,
            config,
            backend: PhantomData,
        })
    }

    fn score<L: MetaLearner<4>>(&self, mut learner: L, steps: usize, seed: u64) -> Result<f64> {
        let c = &self.config;
        let shape = NWayKShotConfig::new(c.ways, c.shots, c.query);
        let train = NWayKShot::new(self.train.clone(), shape)?;
        learner.meta_train(&train, c.iterations, SeedStream::new(seed), &mut |_| true)?;
        let val = NWayKShot::new(self.validation.clone(), shape)?;
        let vs = SeedStream::new(c.validation_seed);
        let mut total = 0.0;
        for i in 0..c.validation_episodes {
            let ep = val.sample(vs.child(i as u64).seed())?;
            // A missing accuracy is an error, never a score of 0 a search would rank.
            total += learner.evaluate(&ep, steps)?.accuracy.ok_or_else(|| {
                Error::Config(format!(
                    "validation episode {i} has no accuracy: the meta objective scores \
                     classification episodes"
                ))
            })?;
        }
        Ok(total / c.validation_episodes as f64)
    }
}

impl<B: Backend, D: ClassDataset> Objective for MetaObjective<B, D> {
    fn evaluate(&self, space: &SearchSpace, arch: &Architecture, seed: u64) -> Result<f64> {
        let c = &self.config;
        let device = B::Device::default();
        match c.method {
            MetaMethod::ProtoNet => {
                let model = conv4_config(space, arch, 1, c.input_size)?
                    .init::<Autodiff<B>>(seed, &device)?;
                let l = ProtoNet::new(ProtoNetConfig::new(), model, device)?;
                self.score(l, 0, seed)
            }
            MetaMethod::Fomaml => {
                let model = conv4_config(space, arch, c.ways, c.input_size)?
                    .init::<Autodiff<B>>(seed, &device)?;
                let cfg = MamlConfig::new()
                    .with_inner_lr(0.4)
                    .with_meta_batch_size(4)
                    .with_outer_lr(3e-3)
                    .with_second_order(false)
                    .with_threads(1);
                let l = Maml::new(cfg, model, device)?;
                self.score(l, 3, seed)
            }
        }
    }
}

/// The supervised objective: train a Conv4 classifier built from the architecture on
/// minibatches of all `train` classes for `iterations` Adam steps (batch `2 × batch`), return
/// its accuracy on the labelled `test` batch (same classes, held-out examples).
pub struct SupervisedObjective<B: Backend, D: ClassDataset> {
    train: Arc<D>,
    test: HostBatch,
    iterations: usize,
    batch: usize,
    input_size: usize,
    backend: PhantomData<fn() -> B>,
}

impl<B: Backend, D: ClassDataset> std::fmt::Debug for SupervisedObjective<B, D> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SupervisedObjective")
            .field("iterations", &self.iterations)
            .finish()
    }
}

impl<B: Backend, D: ClassDataset> SupervisedObjective<B, D> {
    /// Errors: a test batch without labels, zero iterations or batch.
    pub fn new(
        train: Arc<D>,
        test: HostBatch,
        iterations: usize,
        batch: usize,
        input_size: usize,
    ) -> Result<Self> {
        if test.labels.is_none() || iterations == 0 || batch == 0 {
            return Err(Error::Config(
                "the supervised objective needs a labelled test batch, iterations and a batch size"
                    .into(),
            ));
        }
        Ok(Self {
            train,
            test,
            iterations,
            batch,
            input_size,
            backend: PhantomData,
        })
    }
}

impl<B: Backend, D: ClassDataset> Objective for SupervisedObjective<B, D> {
    fn evaluate(&self, space: &SearchSpace, arch: &Architecture, seed: u64) -> Result<f64> {
        let device = B::Device::default();
        let classes = self.train.num_classes();
        let model = conv4_config(space, arch, classes, self.input_size)?
            .init::<Autodiff<B>>(seed, &device)?;
        let mut l = FineTune::new(FineTuneConfig::new(), model, device.clone())?;
        let batches = ClassBatches::new(self.train.clone(), self.batch)?;
        l.meta_train(
            &batches,
            self.iterations,
            SeedStream::new(seed),
            &mut |_| true,
        )?;
        let x = self.test.to_batch::<B, 4>(&device)?;
        let labels = x.labels.unwrap_or_default();
        let m = burn::module::AutodiffModule::valid(l.model());
        Ok(accuracy(m.forward(x.inputs), &labels))
    }
}
