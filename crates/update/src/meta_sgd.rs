//! Meta-SGD (Li, Zhou, Chen & Li 2017, "Meta-SGD: Learning to Learn Quickly for Few-Shot
//! Learning"): MAML whose inner step sizes are learned, one per parameter element:
//! `φ = θ − α ⊙ ∇L_support(θ)`, with θ and α both meta-learned by Adam through the same exact
//! second-order machinery as [`Maml`](crate::Maml).

use crate::inner::{
    adaptation_methods, guarded_step, impl_inner_adapt, meta_batch_gradient, Sizes, AB,
};
use crate::maml::MamlConfig;
use crate::state::{put_module, put_optim, take_module, take_optim};
use crate::Result as UpdateResult;
use burn::module::{ModuleMapper, Param, ParamId};
use burn::optim::adaptor::OptimizerAdaptor;
use burn::optim::{Adam, AdamConfig};
use burn::tensor::backend::Backend;
use burn::tensor::Tensor;
use metalearn_core::checkpoint::{Checkpoint, LearnerState};
use metalearn_core::episode::EpisodeData;
use metalearn_core::error::ensure_positive;
use metalearn_core::learner::{check_finite, MetaLearner, StepStats};
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
    model: M,
    rates: M,
    optim: OptimizerAdaptor<Adam, M, AB<B>>,
    optim_rates: OptimizerAdaptor<Adam, M, AB<B>>,
    config: MamlConfig,
    device: B::Device,
    pool: TaskPool,
    iterations: usize,
}

impl<B: Backend, M: MetaTrainable<B, D>, const D: usize> std::fmt::Debug for MetaSgd<B, M, D> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MetaSgd")
            .field("config", &self.config)
            .field("iterations", &self.iterations)
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
        let model = params::require_grad(model);
        let rates = model.clone().map(&mut FreshConstant(config.inner_lr));
        Ok(Self {
            model,
            rates,
            optim: AdamConfig::new().init(),
            optim_rates: AdamConfig::new().init(),
            pool: TaskPool::new(config.threads),
            config,
            device,
            iterations: 0,
        })
    }

    /// The meta-learned initialisation θ.
    pub fn model(&self) -> &M {
        &self.model
    }

    /// The learned step sizes α (same architecture as the model).
    pub fn rates(&self) -> &M {
        &self.rates
    }

    fn sizes(&self) -> Sizes<Tensor<B, 1>> {
        Sizes::PerElement(
            params::tensors(&self.rates.valid())
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
            params::grads_to_vec::<AB<B>, M>(&self.model, &g.theta),
            params::grads_to_vec::<AB<B>, M>(&self.rates, &rates),
        ))
    }

    fn meta_gradient(
        &self,
        episodes: &[EpisodeData],
    ) -> metalearn_core::Result<crate::inner::BatchGradient> {
        meta_batch_gradient::<B, M, D>(
            &self.pool,
            &self.model,
            Some(&self.rates),
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
        check_finite(self.iterations, g.loss)?;
        let lr = self.config.outer_lr;
        let (saved, it) = (self.optim.clone(), self.iterations);
        let model = guarded_step(&mut self.optim, lr, &self.model, g.theta, it)?;
        if let Some(rg) = g.sizes {
            match guarded_step(&mut self.optim_rates, lr, &self.rates, rg, it) {
                Ok(rates) => self.rates = rates,
                Err(e) => {
                    self.optim = saved;
                    return Err(e);
                }
            }
        }
        self.model = model;
        let stats = StepStats {
            iteration: self.iterations,
            meta_loss: g.loss,
            meta_accuracy: g.accuracy,
        };
        self.iterations += 1;
        Ok(stats)
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
        self.iterations
    }

    fn parameters(&self) -> Vec<f64> {
        let mut v = metalearn_core::params::to_vec(&self.model);
        v.extend(metalearn_core::params::to_vec(&self.rates));
        v
    }

    fn state(&self) -> metalearn_core::Result<LearnerState> {
        let s = LearnerState::new(self.learner_name(), self.iterations);
        let s = put_module::<B, M>(s, "model", &self.model)?;
        let s = put_module::<B, M>(s, "rates", &self.rates)?;
        let s = put_optim::<B, M>(s, "optim", &self.optim)?;
        put_optim::<B, M>(s, "optim_rates", &self.optim_rates)
    }

    fn load_state(&mut self, state: &LearnerState) -> metalearn_core::Result<()> {
        state.expect_learner(self.learner_name())?;
        let model = take_module::<B, M>(state, "model", &self.model, &self.device)?;
        let rates = take_module::<B, M>(state, "rates", &self.rates, &self.device)?;
        let optim = take_optim::<B, M>(state, "optim", &self.device)?;
        self.optim_rates = take_optim::<B, M>(state, "optim_rates", &self.device)?;
        (self.model, self.rates, self.optim) = (model, rates, optim);
        self.iterations = state.iterations;
        Ok(())
    }
}
