//! # metalearn-search
//!
//! Search-type meta-learners: they search model *structure* rather than parameters.
//!
//! - [`SearchSpace`]: named categorical decisions with implication constraints, declared in
//!   TOML or JSON ([`presets`] has a Conv4-like few-shot backbone space and an MLP space, and
//!   builds real `metalearn-zoo` modules from their architectures).
//! - [`Strategy`] (ask/tell): [`RandomSearch`], [`Reinforce`] (a learned autoregressive
//!   controller trained with REINFORCE, an EMA baseline and an entropy bonus; Zoph & Le 2017)
//!   and [`RegularizedEvolution`] (aging evolution; Real et al. 2019). Deterministic from a seed.
//! - [`Objective`]: any closure, [`SupervisedObjective`], or [`MetaObjective`] — the
//!   architecture's few-shot accuracy on held-out classes after brief meta-training with
//!   Prototypical Networks or FOMAML.
//! - [`run_search`]: evaluates candidates in parallel (rayon; each with its own seed, so results
//!   do not depend on scheduling), appends each result to a JSON-lines [`Journal`] synced to disk,
//!   and resumes a killed search from it.
//!
//! ```
//! use metalearn_search::{run_search, RegularizedEvolution, SearchConfig, SearchSpace};
//!
//! let space = SearchSpace::from_toml(r#"
//!     [[decisions]]
//!     name = "width"
//!     choices = [8, 16, 32, 64]
//!     [[decisions]]
//!     name = "depth"
//!     choices = [1, 2, 3]
//! "#)?;
//! // A toy objective with its optimum at width 32, depth 2.
//! let objective = |s: &SearchSpace, a: &metalearn_search::Architecture, _seed: u64| {
//!     let w = s.value(a, "width")?.as_int().unwrap_or(0) as f64;
//!     let d = s.value(a, "depth")?.as_int().unwrap_or(0) as f64;
//!     Ok(-((w - 32.0) / 8.0).powi(2) - (d - 2.0).powi(2))
//! };
//! let mut evolution = RegularizedEvolution::new(space.clone(), 4, 2, 0)?;
//! let result = run_search(&space, &mut evolution, &objective, SearchConfig::new(20, 0), None)?;
//! assert_eq!(result.best().map(|r| r.score), Some(0.0));
//! # Ok::<(), metalearn_search::Error>(())
//! ```
#![warn(missing_docs)]

mod error;
pub mod journal;
pub mod objective;
pub mod presets;
mod search;
pub mod space;
pub mod strategy;

pub use error::{Error, Result};
pub use journal::{Journal, Record};
pub use objective::{
    MetaMethod, MetaObjective, MetaObjectiveConfig, Objective, SupervisedObjective,
};
pub use search::{is_failure, run_search, SearchConfig, SearchResult, FAILED_SCORE};
pub use space::{Architecture, Condition, Constraint, Decision, SearchSpace, Value};
pub use strategy::{RandomSearch, RegularizedEvolution, Reinforce, ReinforceConfig, Strategy};
