//! Errors of the search crate.

use thiserror::Error;

/// Errors raised by search spaces, strategies, objectives and journals.
#[derive(Debug, Error)]
pub enum Error {
    /// An error from metalearn-core (bad config, shapes, divergence, …).
    #[error(transparent)]
    Core(#[from] metalearn_core::Error),
    /// An error from the update-type learners an objective trains.
    #[error(transparent)]
    Update(#[from] metalearn_update::Error),
    /// The space is not valid (empty choices, unknown names, unsatisfiable constraints, …).
    #[error("invalid search space: {0}")]
    InvalidSpace(String),
    /// An architecture that is not a valid assignment of the space.
    #[error("invalid architecture: {0}")]
    InvalidArchitecture(String),
    /// A space file that does not parse.
    #[error("cannot parse search space: {0}")]
    Parse(String),
    /// A strategy or search configuration that is not valid.
    #[error("invalid configuration: {0}")]
    Config(String),
    /// An objective returned a score that is not finite.
    #[error("score {0} is not finite")]
    Score(f64),
    /// Reading or writing a journal failed.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// The cause.
        source: std::io::Error,
    },
    /// A journal that cannot be resumed.
    #[error("journal {path}, line {line}: {message}")]
    Journal {
        /// The file.
        path: String,
        /// 1-based line number.
        line: usize,
        /// What is wrong.
        message: String,
    },
}

/// Result alias using [`Error`].
pub type Result<T> = std::result::Result<T, Error>;
