//! Errors of the meta-trainer.

use thiserror::Error;

/// Errors raised while training, checkpointing or resuming.
#[derive(Debug, Error)]
pub enum Error {
    /// An error from the learner or the task source (a diverging loss, a bad episode).
    #[error(transparent)]
    Core(#[from] metalearn_core::Error),
    /// An error while evaluating or plotting.
    #[error(transparent)]
    Eval(#[from] metalearn_eval::Error),
    /// Reading or writing a file in the run directory failed.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// The underlying error.
        source: std::io::Error,
    },
    /// The run directory holds something the trainer cannot use.
    #[error("run directory {path}: {reason}")]
    RunDir {
        /// The directory or file.
        path: String,
        /// What is wrong.
        reason: String,
    },
}

/// Result alias using [`Error`].
pub type Result<T> = std::result::Result<T, Error>;

impl Error {
    /// Wrap an i/o error on `path`.
    pub fn io(path: &std::path::Path, source: std::io::Error) -> Self {
        Self::Io {
            path: path.display().to_string(),
            source,
        }
    }
}
