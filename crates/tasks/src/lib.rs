//! # metalearn-tasks
//!
//! Task distributions and episode samplers:
//!
//! - [`Sinusoid`]: the sinusoid regression family of Finn et al. (2017).
//! - [`NWayKShot`]: N-way K-shot classification episodes over any [`ClassDataset`]
//!   (an in-memory one is [`InMemoryClasses`]; real data: [`Omniglot`], image folders via
//!   [`load_image_folder`]).
//! - [`ClassBatches`]: plain supervised minibatches over all classes (for pretraining).
//! - [`dynamics`]: families of dynamical systems (oscillator, pendulum, Lotka–Volterra) with
//!   per-task parameters, RK4 integration, rollouts and drifting streams for online adaptation.
//!
//! Every sampler is a [`TaskDistribution`](metalearn_core::TaskDistribution): the same seed gives the
//! same episode, on every platform.
//!
//! ```
//! use metalearn_core::TaskDistribution;
//! use metalearn_tasks::{Sinusoid, SinusoidConfig};
//!
//! let tasks = Sinusoid::new(SinusoidConfig::new(10, 10)).unwrap();
//! let ep = tasks.sample(42).unwrap();
//! assert_eq!(ep.support.input_shape, vec![10, 1]);
//! assert_eq!(ep, tasks.sample(42).unwrap());
//! ```
#![warn(missing_docs)]

mod classes;
pub mod dynamics;
mod error;
mod folder;
pub mod image;
pub mod omniglot;
mod sinusoid;

pub use classes::{ClassBatches, ClassDataset, InMemoryClasses, NWayKShot, NWayKShotConfig};
pub use dynamics::{Dynamics, DynamicsConfig, Family};
pub use error::{Error, Result};
pub use folder::{image_files, load_image, load_image_folder, ImageFolder, ImageFolderConfig};
pub use omniglot::{Omniglot, OmniglotClasses, OmniglotConfig, OmniglotSplit};
pub use sinusoid::{Sinusoid, SinusoidConfig, SinusoidTask};
