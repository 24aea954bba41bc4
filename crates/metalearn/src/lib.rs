//! # metalearn
//!
//! Meta-learning ("learning to learn") in Rust on [burn](https://burn.dev): the umbrella crate.
//! It re-exports the focused crates — as `burn` does for its own — and holds the `metalearn`
//! command:
//!
//! ```text
//! metalearn train EXPERIMENT.toml --run-dir DIR [--backend flex|ndarray|wgpu]
//! metalearn eval --run-dir DIR [--episodes 600] [--ways N] [--shots K] [--steps S] [--curve]
//!                [--transfer] [--transductive true|false] [--json]
//! metalearn adapt --run-dir DIR --support FOLDER --query FOLDER [--steps S] [--json]
//! metalearn search SEARCH.toml --run-dir DIR
//! ```
//!
//! `train` reads an experiment file ([`experiment`]), meta-trains with checkpoints in `DIR`
//! and resumes when run again on the same directory; `eval` measures the best model on the
//! meta-test tasks; `adapt` classifies the user's own images after adapting the best model to a
//! few labelled ones; `search` runs an architecture search ([`search_file`]) with a journal it
//! resumes from. Everything the command does is a library function in [`run`], so a program
//! can do the same without the binary.
//!
//! | crate | re-exported as | what |
//! |---|---|---|
//! | `metalearn-core` | [`core`] | traits, episodes, errors, seeding, backends, checkpoint state |
//! | `metalearn-tasks` | [`tasks`] | sinusoid, Omniglot, image folders, dynamical systems |
//! | `metalearn-zoo` | [`zoo`] | Conv4, MLP, second-order-safe layers |
//! | `metalearn-update` | [`update`] | MAML, FOMAML, ANIL, Meta-SGD, Reptile, ProtoNet, … |
//! | `metalearn-search` | [`search`] | search spaces, random search, REINFORCE, evolution |
//! | `metalearn-eval` | [`eval`] | few-shot protocol, steps curves, CKA, plots |
//! | `metalearn-train` | [`train`] | the meta-trainer: validation, checkpoints, resume |
#![warn(missing_docs)]

pub mod experiment;
pub mod run;
pub mod search_file;

pub use metalearn_core as core;
pub use metalearn_eval as eval;
pub use metalearn_search as search;
pub use metalearn_tasks as tasks;
pub use metalearn_train as train;
pub use metalearn_update as update;
pub use metalearn_zoo as zoo;

pub use experiment::{ConfigError, Experiment};

/// Errors of the `metalearn` command and its library functions.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A bad experiment file or run directory.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// From the trainer (checkpoints, run directory, a diverging loss).
    #[error(transparent)]
    Train(#[from] metalearn_train::Error),
    /// From the learners.
    #[error(transparent)]
    Update(#[from] metalearn_update::Error),
    /// From the task sources (missing data, …).
    #[error(transparent)]
    Tasks(#[from] metalearn_tasks::Error),
    /// From the core crate.
    #[error(transparent)]
    Core(#[from] metalearn_core::Error),
    /// From the architecture search (a bad space, a journal of another search).
    #[error(transparent)]
    Search(#[from] metalearn_search::Error),
    /// From evaluation.
    #[error(transparent)]
    Eval(#[from] metalearn_eval::Error),
    /// A bad command-line argument.
    #[error("{0}")]
    Usage(String),
}

/// Result alias using [`Error`].
pub type Result<T> = std::result::Result<T, Error>;
