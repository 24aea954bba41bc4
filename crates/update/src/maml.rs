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

use crate::inner::{
    adapt, adaptation_methods, evaluate, impl_inner_adapt, meta_batch_gradient, BatchGradient,
    Sizes, AB,
};
use crate::outer::{outer_checkpoint_methods, Outer};
use crate::Result as UpdateResult;
use burn::config::Config;
use burn::tensor::backend::Backend;
use burn::tensor::Tensor;
use metalearn_core::checkpoint::Checkpoint;
use metalearn_core::episode::EpisodeData;
use metalearn_core::error::{ensure_nonzero, ensure_positive, Error};
use metalearn_core::learner::{MetaLearner, StepStats};
use metalearn_core::model::MetaTrainable;
use metalearn_core::parallel::TaskPool;
use metalearn_core::params;

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
/// | `adapt_last` | 0 | adapt only the last `n` parameter tensors in the inner loop (0: all; 2 with a linear head: ANIL) | — |
/// | `transductive` | true | evaluate the query batch in one forward pass (false: each query example with the support set) | — |
/// | `adapt_only` | [] | adapt only the parameters in these groups (dotted path prefixes: `head`, `convs.3`; [] = all) | each names ≥ 1 parameter |
/// | `freeze` | [] | never adapt the parameters in these groups in the inner loop | each names ≥ 1 parameter |
///
/// The defaults are the sinusoid settings of Finn et al. (2017), §5.1.
///
/// **Parameter groups** are named by the parameters' paths in the module
/// ([`params::names`]: `convs.0.weight`, `norms.3.beta`, `head.bias` in the zoo's Conv4); a
/// group is a path prefix. `adapt_only`, `freeze` and `adapt_last` combine (a parameter adapts
/// when every one of them lets it); at least one parameter must adapt.
///
/// **BOIL** (Oh et al. 2021, "BOIL: Towards Representation Change for Few-shot Learning"):
/// [`MamlConfig::boil`] sets `freeze = ["head"]`, so the inner loop adapts only the body
/// (feature extractor) while the head stays at its meta-learned value — the opposite of ANIL.
///
/// **ANIL** (Raghu et al. 2020, "Rapid Learning or Feature Reuse?"): [`MamlConfig::anil`] sets
/// `adapt_last = 2`, so the inner loop adapts only the head (weight and bias of the last linear
/// layer, visited last in the zoo's models) while the body is learned in the outer loop only.
///
/// **Batch norm** during adaptation: the zoo's models normalise with the statistics of the batch
/// they see. In the inner loop that is the support batch. At evaluation (`adapt`-then-test,
/// [`MetaLearner::adaptation_curve`]) `transductive = true` runs the query batch in one forward
/// pass, so each query example is normalised with all queries' statistics — the setting of Finn
/// et al. (2017) used by most reported MAML numbers. `transductive = false` is Nichol et al.'s
/// (2018) non-transductive protocol: each query example is run in one batch with the support set
/// only ([`non_transductive`](metalearn_core::model::non_transductive)), at one forward pass of
/// `support + 1` examples per query example. Meta-training always uses the query batch.
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
    /// Adapt only the last `n` parameter tensors in the inner loop (0: all of them).
    #[config(default = 0)]
    pub adapt_last: usize,
    /// Evaluate the query batch in one forward pass (`false`: each query example with the
    /// support set, so batch statistics never mix query examples).
    #[config(default = true)]
    pub transductive: bool,
    /// Adapt only the parameters in these groups in the inner loop (dotted path prefixes; empty:
    /// all).
    #[config(default = "Vec::new()")]
    pub adapt_only: Vec<String>,
    /// Never adapt the parameters in these groups in the inner loop (BOIL: `["head"]`).
    #[config(default = "Vec::new()")]
    pub freeze: Vec<String>,
}

impl MamlConfig {
    /// ANIL: MAML whose inner loop adapts only the head (the last two parameter tensors).
    pub fn anil() -> Self {
        Self::new().with_adapt_last(2)
    }

    /// BOIL: MAML whose inner loop adapts only the body; the head (the parameters under `head`,
    /// as in the zoo's models) is frozen during adaptation and learned in the outer loop only.
    pub fn boil() -> Self {
        Self::new().with_freeze(vec!["head".into()])
    }

    /// Check the fields that depend on the model, whose parameters are `names`
    /// ([`params::names`]): `adapt_last` must not exceed their number, every group must name
    /// at least one of them, and at least one parameter must adapt.
    pub fn validate_for(&self, names: &[String]) -> metalearn_core::Result<()> {
        self.validate()?;
        self.inner_mask(names).map(|_| ())
    }

    /// Which parameters (of `names`, visiting order) the inner loop adapts.
    pub fn inner_mask(&self, names: &[String]) -> metalearn_core::Result<Vec<bool>> {
        crate::inner::group_mask(names, self.adapt_last, &self.adapt_only, &self.freeze)
    }

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

/// Model-Agnostic Meta-Learning over any [`MetaTrainable`] model with rank-`D` inputs
/// (and ANIL, with [`MamlConfig::anil`]).
pub struct Maml<B: Backend, M: MetaTrainable<B, D>, const D: usize> {
    outer: Outer<B, M>,
    /// Which parameter tensors the inner loop adapts (from the config's groups).
    mask: Vec<bool>,
    pub(crate) config: MamlConfig,
    pub(crate) device: B::Device,
    pub(crate) pool: TaskPool,
}

impl<B: Backend, M: MetaTrainable<B, D>, const D: usize> std::fmt::Debug for Maml<B, M, D> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Maml")
            .field("config", &self.config)
            .field("iterations", &self.iterations())
            .finish()
    }
}

impl<B: Backend, M: MetaTrainable<B, D>, const D: usize> Maml<B, M, D> {
    /// Validate `config` and wrap `model` (whose current parameters are the initial θ).
    pub fn new(config: MamlConfig, model: M, device: B::Device) -> UpdateResult<Self> {
        config.validate()?;
        let mask = config.inner_mask(&params::names(&model))?;
        Ok(Self {
            outer: Outer::new(model),
            mask,
            pool: TaskPool::new(config.threads),
            config,
            device,
        })
    }

    /// The meta-learned model.
    pub fn model(&self) -> &M {
        self.outer.model()
    }

    /// Consume the learner, returning the model.
    pub fn into_model(self) -> M {
        self.outer.into_model()
    }

    /// The hyper-parameters.
    pub fn config(&self) -> &MamlConfig {
        &self.config
    }

    /// Meta-iterations done so far.
    pub fn iterations(&self) -> usize {
        self.outer.iterations()
    }

    pub(crate) fn sizes(&self) -> Sizes<Tensor<B, 1>> {
        Sizes::masked(self.config.inner_lr, &self.mask)
    }

    /// The meta-objective at θ = `model`: mean over `episodes` of the query loss after
    /// `inner_steps` inner steps on the support set. Used by gradient checks.
    pub fn meta_objective(
        &self,
        model: &M::InnerModule,
        episodes: &[EpisodeData],
    ) -> metalearn_core::Result<f64> {
        let sizes = self.sizes();
        let mut total = 0.0;
        for ep in episodes {
            let phi = adapt::<B, M, D>(
                model.clone(),
                ep,
                self.config.inner_steps,
                &sizes,
                &self.device,
            )?;
            total += evaluate::<B, M::InnerModule, D>(&phi, ep, true, &self.device)?.0;
        }
        Ok(total / episodes.len().max(1) as f64)
    }

    /// The meta-gradient (mean over `episodes`) at the current θ, as host values in the model's
    /// parameter visiting order.
    pub fn meta_gradient_vec(&self, episodes: &[EpisodeData]) -> metalearn_core::Result<Vec<f64>> {
        let g = self.meta_gradient(episodes)?;
        Ok(params::grads_to_vec::<AB<B>, M>(self.model(), &g.theta))
    }

    pub(crate) fn meta_gradient(
        &self,
        episodes: &[EpisodeData],
    ) -> metalearn_core::Result<BatchGradient> {
        meta_batch_gradient::<B, M, D>(
            &self.pool,
            self.model(),
            None,
            &self.sizes(),
            episodes,
            (self.config.inner_steps, self.config.second_order),
            &self.device,
        )
    }

    /// Apply a meta-gradient unless its loss diverged (then nothing changes).
    pub(crate) fn apply(&mut self, g: BatchGradient) -> metalearn_core::Result<StepStats> {
        self.outer
            .step(self.config.outer_lr, g.theta, g.loss, g.accuracy)
    }
}

impl_inner_adapt!(Maml, Sizes<Tensor<B, 1>>, sizes);

impl<B: Backend, M: MetaTrainable<B, D>, const D: usize> MetaLearner<D> for Maml<B, M, D> {
    type Adapted = M::InnerModule;

    fn meta_step(&mut self, episodes: &[EpisodeData]) -> metalearn_core::Result<StepStats> {
        let g = self.meta_gradient(episodes)?;
        self.apply(g)
    }

    fn meta_batch_size(&self) -> usize {
        self.config.meta_batch_size
    }

    adaptation_methods!(B, M, D);
}

impl<B: Backend, M: MetaTrainable<B, D>, const D: usize> Checkpoint for Maml<B, M, D> {
    outer_checkpoint_methods!("MAML");
}
