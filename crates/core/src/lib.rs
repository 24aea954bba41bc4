//! # metalearn-core
//!
//! The shared vocabulary of metalearn: episodes and task distributions, the learner traits, the
//! one trait a user's model implements ([`MetaModule`]), losses, typed errors, seeding, backend
//! aliases, and parameter-space utilities that work on *any* burn [`Module`](burn::module::Module).
//!
//! Every other metalearn crate depends on this one and (unless an issue says otherwise) on no
//! sibling.
//!
//! ```
//! use burn::tensor::Tensor;
//! use metalearn_core::{backend::Cpu, params};
//! use burn::nn::LinearConfig;
//!
//! let device = Default::default();
//! // burn initialises parameters lazily, per clone: materialise before sharing.
//! let a = params::materialize(LinearConfig::new(3, 2).init::<Cpu>(&device));
//! let b = params::scale(&a, 3.0);
//! // ‖3a − a‖ = 2‖a‖
//! let d = params::diff_norm(&b, &a).unwrap();
//! let n = params::norm(&a);
//! assert!((d - 2.0 * n).abs() < 1e-4 * n.max(1.0));
//! # let _ = Tensor::<Cpu, 1>::zeros([1], &device);
//! ```
#![warn(missing_docs)]

pub mod backend;
pub mod checkpoint;
pub mod episode;
pub mod error;
pub mod learner;
pub mod loss;
pub mod model;
pub mod norm;
pub mod parallel;
pub mod params;
pub mod seed;
pub mod stats;

pub use checkpoint::{AnyLearner, Checkpoint, DynLearner, LearnerState};
pub use episode::{Batch, Episode, TaskDistribution, TaskKind};
pub use error::{Error, Result};
pub use learner::{AdaptationCurve, MetaLearner, StepMetrics, StepStats, TrainStep};
pub use model::{
    BatchedMetaTrainable, EmbeddingModule, MetaModule, MetaTrainable, TaskBatchedModule,
};
pub use parallel::TaskPool;
pub use seed::SeedStream;
