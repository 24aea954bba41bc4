//! Errors of the update-type learners.

use thiserror::Error;

/// Errors raised by update-type learners.
#[derive(Debug, Error)]
pub enum Error {
    /// An error from metalearn-core (bad config, shapes, divergence, …).
    #[error(transparent)]
    Core(#[from] metalearn_core::Error),
}

/// Result alias using [`Error`].
pub type Result<T> = std::result::Result<T, Error>;
