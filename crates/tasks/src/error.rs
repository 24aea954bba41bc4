//! Errors of task distributions and dataset loaders.

use std::path::PathBuf;
use thiserror::Error;

/// Errors raised while loading datasets or sampling tasks.
#[derive(Debug, Error)]
pub enum Error {
    /// An error from metalearn-core (bad config, unsatisfiable request, …).
    #[error(transparent)]
    Core(#[from] metalearn_core::Error),
    /// Reading or writing a file failed.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// The file is missing.
    #[error("{path} not found: {hint}")]
    Missing {
        /// The file that was looked for.
        path: PathBuf,
        /// How to get it.
        hint: String,
    },
    /// The file is not a zip archive (an HTML error page from a failed download, a truncated
    /// file, …).
    #[error("{path} is not a valid zip archive: {reason}")]
    NotAZip {
        /// The file.
        path: PathBuf,
        /// What was found instead.
        reason: String,
    },
    /// An image could not be decoded.
    #[error("{path}: cannot decode image `{entry}`: {reason}")]
    BadImage {
        /// The archive or folder.
        path: PathBuf,
        /// The image inside it.
        entry: String,
        /// Why.
        reason: String,
    },
    /// The archive decodes but does not hold what the dataset must hold.
    #[error("{path}: wrong contents: {reason}")]
    WrongCounts {
        /// The archive.
        path: PathBuf,
        /// Expected vs. found.
        reason: String,
    },
    /// A file's checksum does not match the published one.
    #[error("{path}: sha256 {found} does not match the expected {expected}")]
    Checksum {
        /// The file.
        path: PathBuf,
        /// Expected digest (hex).
        expected: String,
        /// Actual digest (hex).
        found: String,
    },
}

/// Result alias using [`Error`].
pub type Result<T> = std::result::Result<T, Error>;

pub(crate) fn io(path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> Error {
    let path = path.into();
    move |source| Error::Io { path, source }
}
