//! # metalearn-update
//!
//! Update-type meta-learners: they learn *parameters* (an initialisation, learning rates, …) from
//! which a model adapts to a new task in a few gradient steps.
//!
//! - [`Maml`]: Model-Agnostic Meta-Learning (Finn et al. 2017) with exact second-order
//!   meta-gradients through nested autodiff, and first-order MAML as a switch.
//! - ANIL ([`MamlConfig::anil`]): inner loop on the head only (Raghu et al. 2020).
//! - BOIL ([`MamlConfig::boil`]): inner loop on the body only, head frozen (Oh et al. 2021).
//! - [`MetaSgd`]: learned per-parameter inner learning rates (Li et al. 2017).
//! - [`MamlPlusPlus`]: MAML++ (Antoniou et al. 2019): multi-step loss, learned per-layer
//!   per-step inner rates, derivative-order annealing, cosine-annealed outer learning rate.
//! - [`Reptile`]: first-order meta-learning by interpolation (Nichol et al. 2018).
//! - [`ProtoNet`]: Prototypical Networks (Snell et al. 2017).
//! - [`FineTune`]: pretrain + fine-tune baseline (Chen et al. 2019).
//! - Model averaging ([`uniform_soup`], [`weighted_soup`], [`greedy_soup`], [`Ensemble`]) and
//!   iterated averaging over tasks ([`ReptileConfig::averaging`]).
//! - Knowledge distillation ([`Distiller`], [`distillation_loss`]; ensembles of teachers) and
//!   meta-distillation of a Prototypical Network ([`EpisodicDistiller`]).
//! - Transfer learning ([`transfer`]): fine-tune all layers or only a new head from any start.
//! - [`BatchedMaml`]: the same algorithm for [`TaskBatchedModule`](metalearn_core::model::TaskBatchedModule)s,
//!   running the whole meta-batch as one stacked computation (the `vmap` fast path: fast for the
//!   sinusoid MLP; for Conv4 exact but slower than [`Maml`]'s parallel tasks on CPU).
//!
//! Meta-training a model takes about five lines:
//!
//! ```
//! use metalearn_core::{backend::Cpu, MetaLearner, SeedStream};
//! use metalearn_tasks::{Sinusoid, SinusoidConfig};
//! use metalearn_update::{Maml, MamlConfig};
//! use metalearn_zoo::MlpConfig;
//! use burn::backend::Autodiff;
//!
//! let device = Default::default();
//! let model = MlpConfig::new(vec![1, 40, 40, 1]).init::<Autodiff<Cpu>>(0, &device).unwrap();
//! let mut maml = Maml::new(MamlConfig::new().with_meta_batch_size(4), model, device).unwrap();
//! let tasks = Sinusoid::new(SinusoidConfig::new(10, 10)).unwrap();
//! maml.meta_train(&tasks, 3, SeedStream::new(1), &mut |_| true).unwrap();
//! let curve = maml.adaptation_curve(&metalearn_core::TaskDistribution::sample(&tasks, 99).unwrap(), 5).unwrap();
//! assert_eq!(curve.len(), 6);
//! ```
#![warn(missing_docs)]

mod averaging;
mod batched;
mod distill;
mod error;
mod finetune;
mod head;
pub mod inner;
mod maml;
mod maml_pp;
mod meta_sgd;
pub mod outer;
mod protonet;
mod reptile;
mod state;
pub mod transfer;

pub use averaging::{
    greedy_soup, uniform_soup, weighted_soup, Ensemble, GreedySoup, GreedySoupSummary,
};
pub use batched::BatchedMaml;
pub use distill::{distillation_loss, soft_targets, DistillConfig, Distiller, EpisodicDistiller};
pub use error::{Error, Result};
pub use finetune::{FineTune, FineTuneConfig};
pub use head::LinearHead;
pub use maml::{Maml, MamlConfig};
pub use maml_pp::{MamlPlusPlus, MamlPlusPlusConfig, PerStep, StepParams, StepRates};
pub use meta_sgd::MetaSgd;
pub use outer::{Learned, Outer};
pub use protonet::{prototype_logits, prototype_logits_from, prototypes, ProtoNet, ProtoNetConfig};
pub use reptile::{Reptile, ReptileConfig};

/// ANIL (Raghu et al. 2020): [`Maml`] whose inner loop adapts only the head; build it with
/// [`MamlConfig::anil`].
pub type Anil<B, M, const D: usize> = Maml<B, M, D>;

/// BOIL (Oh et al. 2021): [`Maml`] whose inner loop adapts only the body, the head frozen;
/// build it with [`MamlConfig::boil`].
pub type Boil<B, M, const D: usize> = Maml<B, M, D>;

#[doc(hidden)]
/// The core crate under a fixed path, for the exported macros.
pub use metalearn_core as __core;

/// The README's examples, compiled and run as doctests.
#[doc = include_str!("../../../README.md")]
#[cfg(doctest)]
pub struct ReadmeDoctests;
