//! The outer loop every learner of this crate shares, as a building block for new ones: the
//! meta-learned module θ with its Adam optimiser ([`Learned`]), the meta-iteration counter, one
//! guarded update per meta-iteration and the checkpoint parts ([`Outer`]).
//!
//! A learner owns an [`Outer`] (and a [`Learned`] for each further meta-learned module, such as
//! Meta-SGD's step sizes) and supplies only what is its own: the meta-gradient of a meta-batch.
//! Its `meta_step` is then
//!
//! ```ignore
//! let g = my_meta_gradient(self.outer.model(), episodes)?;   // the learner's own part
//! self.outer.step(self.config.outer_lr, g.theta, g.loss, g.accuracy)
//! ```
//!
//! and its [`Checkpoint`](metalearn_core::Checkpoint) implementation `self.outer.save(NAME)` /
//! `self.outer.load(state, NAME, device)`, plus its own parts.

use crate::inner::AB;
use crate::state::{put_module, put_optim, take_module, take_optim, OuterAdam};
use burn::module::AutodiffModule;
use burn::optim::{AdamConfig, GradientsParams, Optimizer};
use burn::tensor::backend::Backend;
use burn::tensor::Tensor;
use metalearn_core::learner::{check_finite, StepStats};
use metalearn_core::loss::scalar;
use metalearn_core::{params, LearnerState, Result};

/// A meta-learned module and its outer Adam optimiser.
#[derive(Clone)]
pub struct Learned<B: Backend, M: AutodiffModule<AB<B>>> {
    module: M,
    optim: OuterAdam<B, M>,
}

impl<B: Backend, M: AutodiffModule<AB<B>>> std::fmt::Debug for Learned<B, M> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Learned")
            .field("parameters", &params::count(&self.module))
            .finish()
    }
}

impl<B: Backend, M: AutodiffModule<AB<B>>> Learned<B, M> {
    /// `module` (tracked for gradients) with a fresh Adam optimiser.
    pub fn new(module: M) -> Self {
        Self {
            module: params::require_grad(module),
            optim: AdamConfig::new().init(),
        }
    }

    /// The module.
    pub fn module(&self) -> &M {
        &self.module
    }

    /// Consume it, returning the module.
    pub fn into_module(self) -> M {
        self.module
    }

    /// The module after one Adam step on `grads` with learning rate `lr`, without changing
    /// `self`: [`Error::Diverged`](metalearn_core::Error::Diverged) (naming `iteration`) when a
    /// parameter would become non-finite.
    pub fn updated(&self, lr: f64, grads: GradientsParams, iteration: usize) -> Result<Self> {
        // The step runs on a copy of the optimiser: on an error `self` is untouched.
        let mut optim = self.optim.clone();
        let module = optim.step(lr, self.module.clone(), grads);
        metalearn_core::learner::check_finite_model(iteration, &module)?;
        Ok(Self { module, optim })
    }

    /// `state` with the module as part `part` and the optimiser as part `optim_part` (which
    /// must start with [`OPTIMIZER_PREFIX`](metalearn_core::checkpoint::OPTIMIZER_PREFIX)).
    pub fn save(&self, state: LearnerState, part: &str, optim_part: &str) -> Result<LearnerState> {
        let s = put_module::<B, M>(state, part, &self.module)?;
        put_optim::<B, M>(s, optim_part, &self.optim)
    }

    /// What [`save`](Self::save) wrote, loaded into a copy of `self` (a state without the
    /// optimiser part gives a fresh optimiser).
    pub fn load(
        &self,
        state: &LearnerState,
        part: &str,
        optim_part: &str,
        device: &B::Device,
    ) -> Result<Self> {
        Ok(Self {
            module: take_module::<B, M>(state, part, &self.module, device)?,
            optim: take_optim::<B, M>(state, optim_part, device)?,
        })
    }
}

/// The meta-learned θ with its outer Adam optimiser, and the meta-iterations done.
#[derive(Clone)]
pub struct Outer<B: Backend, M: AutodiffModule<AB<B>>> {
    theta: Learned<B, M>,
    iterations: usize,
}

impl<B: Backend, M: AutodiffModule<AB<B>>> std::fmt::Debug for Outer<B, M> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Outer")
            .field("theta", &self.theta)
            .field("iterations", &self.iterations)
            .finish()
    }
}

impl<B: Backend, M: AutodiffModule<AB<B>>> Outer<B, M> {
    /// θ = `model` (its current parameters, tracked for gradients), a fresh optimiser, no
    /// iterations done.
    pub fn new(model: M) -> Self {
        Self {
            theta: Learned::new(model),
            iterations: 0,
        }
    }

    /// θ.
    pub fn model(&self) -> &M {
        self.theta.module()
    }

    /// Consume it, returning θ.
    pub fn into_model(self) -> M {
        self.theta.into_module()
    }

    /// Meta-iterations done.
    pub fn iterations(&self) -> usize {
        self.iterations
    }

    /// θ's parameters as host values, visiting order.
    pub fn parameters(&self) -> Vec<f64> {
        params::to_vec(self.model())
    }

    /// One meta-iteration: an Adam step of θ on the meta-gradient `grads` with learning rate
    /// `lr`. A non-finite `loss` or parameter is [`Error::Diverged`](metalearn_core::Error::Diverged)
    /// and changes nothing; otherwise the iteration is counted and its statistics returned.
    pub fn step(
        &mut self,
        lr: f64,
        grads: GradientsParams,
        loss: f64,
        accuracy: Option<f64>,
    ) -> Result<StepStats> {
        self.step_with::<M>(lr, grads, None, loss, accuracy)
    }

    /// [`step`](Self::step) on the gradient of `loss` (a scalar on the autodiff backend, a
    /// function of θ): back-propagates it and steps.
    pub fn step_loss(
        &mut self,
        lr: f64,
        loss: Tensor<AB<B>, 1>,
        accuracy: Option<f64>,
    ) -> Result<StepStats> {
        let value = check_finite(self.iterations, scalar(loss.clone().inner()))?;
        let grads =
            GradientsParams::from_grads(metalearn_core::parallel::backward(loss)?, self.model());
        self.step(lr, grads, value, accuracy)
    }

    /// [`step`](Self::step) that also updates a second meta-learned module (`extra`: the module
    /// and its meta-gradient) with the same learning rate; either both change or neither does.
    pub fn step_with<N: AutodiffModule<AB<B>>>(
        &mut self,
        lr: f64,
        grads: GradientsParams,
        extra: Option<(&mut Learned<B, N>, GradientsParams)>,
        loss: f64,
        accuracy: Option<f64>,
    ) -> Result<StepStats> {
        let iteration = self.iterations;
        check_finite(iteration, loss)?;
        let theta = self.theta.updated(lr, grads, iteration)?;
        if let Some((learned, g)) = extra {
            *learned = learned.updated(lr, g, iteration)?;
        }
        self.theta = theta;
        self.iterations += 1;
        Ok(StepStats {
            iteration,
            meta_loss: loss,
            meta_accuracy: accuracy,
        })
    }

    /// The learner state of `learner` with θ and its optimiser (parts `model` and `optim`) and
    /// the iteration count; a learner adds its own parts to it.
    pub fn save(&self, learner: &str) -> Result<LearnerState> {
        self.theta.save(
            LearnerState::new(learner, self.iterations),
            "model",
            "optim",
        )
    }

    /// What [`save`](Self::save) wrote, checked to be `learner`'s, loaded into a copy of `self`:
    /// the caller swaps it in once every part of its own has loaded too.
    pub fn load(&self, state: &LearnerState, learner: &str, device: &B::Device) -> Result<Self> {
        state.expect_learner(learner)?;
        Ok(Self {
            theta: self.theta.load(state, "model", "optim", device)?,
            iterations: state.iterations,
        })
    }
}

/// `Checkpoint`'s methods for a learner whose whole state is its [`Outer`] (field `outer`,
/// with a field `device`), under the name `$name`; used inside its `impl Checkpoint` block.
macro_rules! outer_checkpoint_methods {
    ($name:literal) => {
        fn learner_name(&self) -> &'static str {
            $name
        }

        fn iterations(&self) -> usize {
            self.outer.iterations()
        }

        fn parameters(&self) -> Vec<f64> {
            self.outer.parameters()
        }

        fn state(&self) -> metalearn_core::Result<metalearn_core::LearnerState> {
            self.outer.save($name)
        }

        fn load_state(
            &mut self,
            state: &metalearn_core::LearnerState,
        ) -> metalearn_core::Result<()> {
            self.outer = self.outer.load(state, $name, &self.device)?;
            Ok(())
        }
    };
}
pub(crate) use outer_checkpoint_methods;
