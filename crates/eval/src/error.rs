//! Errors of evaluation and reporting.

use thiserror::Error;

/// Errors raised while evaluating or writing reports.
#[derive(Debug, Error)]
pub enum Error {
    /// An error from metalearn-core.
    #[error(transparent)]
    Core(#[from] metalearn_core::Error),
    /// Drawing a plot failed.
    #[error("plot {path}: {message}")]
    Plot {
        /// Output file.
        path: String,
        /// What went wrong.
        message: String,
    },
}

/// Result alias using [`Error`].
pub type Result<T> = std::result::Result<T, Error>;
