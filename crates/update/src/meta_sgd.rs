//! Meta-SGD (Li, Zhou, Chen & Li 2017, "Meta-SGD: Learning to Learn Quickly for Few-Shot
//! Learning"): MAML whose inner step sizes are learned, one per parameter element:
//! `φ = θ − α ⊙ ∇L_support(θ)`, with θ and α both meta-learned by Adam through the same exact
//! second-order machinery as [`Maml`](crate::Maml).

use crate::inner::{adaptation_methods, impl_inner_adapt, meta_batch_gradient, Sizes, AB};
use crate::maml::MamlConfig;
use crate::outer::{Learned, Outer};
use crate::Result as UpdateResult;
use burn::module::{ModuleMapper, Param, ParamId};
use burn::tensor::backend::Backend;
use burn::tensor::Tensor;
use metalearn_core::checkpoint::{Checkpoint, LearnerState};
use metalearn_core::episode::EpisodeData;
use metalearn_core::error::ensure_positive;
use metalearn_core::learner::{MetaLearner, StepStats};
use metalearn_core::model::MetaTrainable;
use metalearn_core::parallel::TaskPool;
use metalearn_core::params;

/// Meta-SGD over any [`MetaTrainable`] model.
///
/// Hyper-parameters are [`MamlConfig`]'s: `inner_lr` is the initial value of every learned step
/// size α (Li et al. draw α uniformly from [0.005, 0.1]; a constant start is the common
/// reimplementation choice), `outer_lr` is Adam's learning rate for θ and α alike; `adapt_last`,
/// `adapt_only` and `freeze` are ignored (every parameter has its own learned rate). `second_order = false` detaches the
/// support gradients but still learns α (its gradient is first order in the Hessian).
pub struct MetaSgd<B: Backend, M: MetaTrainable<B, D>, const D: usize> {
    outer: Outer<B, M>,
    rates: Learned<B, M>,
    config: MamlConfig,
    device: B::Device,
    pool: TaskPool,
}

impl<B: Backend, M: MetaTrainable<B, D>, const D: usize> std::fmt::Debug for MetaSgd<B, M, D> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MetaSgd")
            .field("config", &self.config)
            .field("iterations", &self.outer.iterations())
            .finish()
    }
}

/// Every parameter set to `value`, each with a fresh id (so that its gradients are not confused
/// with the model's).
struct FreshConstant(f64);

impl<Bk: Backend> ModuleMapper<Bk> for FreshConstant {
    fn map_float<const D: usize>(&mut self, p: Param<Tensor<Bk, D>>) -> Param<Tensor<Bk, D>> {
        let (_, t, mapper) = p.consume();
        let t = t.detach().zeros_like().add_scalar(self.0).require_grad();
        Param::from_mapped_value(ParamId::new(), t, mapper)
    }
}

impl<B: Backend, M: MetaTrainable<B, D>, const D: usize> MetaSgd<B, M, D> {
    /// Validate `config` and wrap `model`; every step size starts at `config.inner_lr`.
    pub fn new(config: MamlConfig, model: M, device: B::Device) -> UpdateResult<Self> {
        config.validate_for(&params::names(&model))?;
        ensure_positive("inner_lr", config.inner_lr)?;
        let outer = Outer::new(model);
        let rates = Learned::new(
            outer
                .model()
                .clone()
                .map(&mut FreshConstant(config.inner_lr)),
        );
        Ok(Self {
            outer,
            rates,
            pool: TaskPool::new(config.threads),
            config,
            device,
        })
    }

    /// The meta-learned initialisation θ.
    pub fn model(&self) -> &M {
        self.outer.model()
    }

    /// The learned step sizes α (same architecture as the model).
    pub fn rates(&self) -> &M {
        self.rates.module()
    }

    fn sizes(&self) -> Sizes<Tensor<B, 1>> {
        Sizes::PerElement(
            params::tensors(&self.rates().valid())
                .into_iter()
                .map(|(_, t)| t)
                .collect(),
        )
    }

    /// The meta-gradients (θ, α) at the current parameters, as host values in visiting order.
    pub fn meta_gradient_vec(
        &self,
        episodes: &[EpisodeData],
    ) -> metalearn_core::Result<(Vec<f64>, Vec<f64>)> {
        let g = self.meta_gradient(episodes)?;
        let rates = g.sizes.unwrap_or_default();
        Ok((
            params::grads_to_vec::<AB<B>, M>(self.model(), &g.theta),
            params::grads_to_vec::<AB<B>, M>(self.rates(), &rates),
        ))
    }

    fn meta_gradient(
        &self,
        episodes: &[EpisodeData],
    ) -> metalearn_core::Result<crate::inner::BatchGradient> {
        meta_batch_gradient::<B, M, D>(
            &self.pool,
            self.model(),
            Some(self.rates()),
            &self.sizes(),
            episodes,
            (self.config.inner_steps, self.config.second_order),
            &self.device,
        )
    }
}

impl_inner_adapt!(MetaSgd, Sizes<Tensor<B, 1>>, sizes);

impl<B: Backend, M: MetaTrainable<B, D>, const D: usize> MetaLearner<D> for MetaSgd<B, M, D> {
    type Adapted = M::InnerModule;

    fn meta_step(&mut self, episodes: &[EpisodeData]) -> metalearn_core::Result<StepStats> {
        let g = self.meta_gradient(episodes)?;
        let extra = g.sizes.map(|rg| (&mut self.rates, rg));
        self.outer
            .step_with(self.config.outer_lr, g.theta, extra, g.loss, g.accuracy)
    }

    fn meta_batch_size(&self) -> usize {
        self.config.meta_batch_size
    }

    adaptation_methods!(B, M, D);
}

impl<B: Backend, M: MetaTrainable<B, D>, const D: usize> Checkpoint for MetaSgd<B, M, D> {
    fn learner_name(&self) -> &'static str {
        "Meta-SGD"
    }

    fn iterations(&self) -> usize {
        self.outer.iterations()
    }

    fn parameters(&self) -> Vec<f64> {
        let mut v = self.outer.parameters();
        v.extend(metalearn_core::params::to_vec(self.rates()));
        v
    }

    fn state(&self) -> metalearn_core::Result<LearnerState> {
        let s = self.outer.save(self.learner_name())?;
        self.rates.save(s, "rates", "optim_rates")
    }

    fn load_state(&mut self, state: &LearnerState) -> metalearn_core::Result<()> {
        let outer = self.outer.load(state, self.learner_name(), &self.device)?;
        self.rates = self
            .rates
            .load(state, "rates", "optim_rates", &self.device)?;
        self.outer = outer;
        Ok(())
    }
}
