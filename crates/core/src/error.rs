//! Typed errors shared by every metalearn crate.

use thiserror::Error;

/// Errors raised by metalearn-core and wrapped by the other crates.
#[derive(Debug, Error)]
pub enum Error {
    /// A configuration field holds a value outside its valid range.
    #[error("invalid config: `{field}` {reason}")]
    InvalidConfig {
        /// Name of the offending field.
        field: &'static str,
        /// What is wrong with it.
        reason: String,
    },
    /// A request for data that the source cannot satisfy (e.g. more ways than classes).
    #[error("cannot sample episode: {0}")]
    Unsatisfiable(String),
    /// Tensor or module shapes do not agree.
    #[error("shape mismatch: {0}")]
    ShapeMismatch(String),
    /// A list that must not be empty was empty.
    #[error("empty input: {0}")]
    Empty(&'static str),
    /// The training loss became NaN or infinite.
    #[error("loss diverged at iteration {iteration}: {value}")]
    Diverged {
        /// Meta-iteration at which it happened.
        iteration: usize,
        /// The offending value.
        value: f64,
    },
    /// An adaptation's loss became NaN or infinite (inner step size too large for the task,
    /// inputs out of range): its metrics would be meaningless.
    #[error("adaptation diverged at inner step {step}: loss {value}")]
    AdaptationDiverged {
        /// Inner steps taken when the loss was measured.
        step: usize,
        /// The offending value.
        value: f64,
    },
    /// Reading or writing a file failed.
    #[error("i/o error on {path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// The underlying error.
        source: std::io::Error,
    },
    /// (De)serialisation failed.
    #[error("serialisation error: {0}")]
    Serde(String),
    /// A saved file (checkpoint, model, record) is truncated, altered or of another kind.
    #[error("{what} is corrupt: {reason}")]
    Corrupt {
        /// What was being read (a path or a kind of file).
        what: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The learner does not offer this operation.
    #[error("not supported: {0}")]
    Unsupported(String),
    /// A worker thread pool could not be built.
    #[error("thread pool: {0}")]
    ThreadPool(String),
    /// A task (an episode's gradient, an adaptation, a candidate's evaluation) panicked inside
    /// burn; the learner's state was left unchanged.
    #[error("a task panicked: {message}{hint}")]
    TaskPanicked {
        /// The panic's message.
        message: String,
        /// The likely cause and its fix, when known (empty otherwise).
        hint: String,
    },
}

/// Result alias using [`Error`].
pub type Result<T> = std::result::Result<T, Error>;

impl Error {
    /// Shorthand for [`Error::InvalidConfig`].
    pub fn config(field: &'static str, reason: impl Into<String>) -> Self {
        Self::InvalidConfig {
            field,
            reason: reason.into(),
        }
    }
}

impl Error {
    /// Shorthand for [`Error::Corrupt`].
    pub fn corrupt(what: impl Into<String>, reason: impl Into<String>) -> Self {
        Self::Corrupt {
            what: what.into(),
            reason: reason.into(),
        }
    }
}

/// Hint appended to panics raised by ops that burn 0.21 cannot differentiate twice.
pub const SECOND_ORDER_HINT: &str = " (burn 0.21 cannot differentiate this op twice, as exact \
second-order MAML needs: replace `nn::Linear` with `metalearn_zoo::Dense`, `nn::pool::MaxPool2d` \
/ `AvgPool2d` with `metalearn_zoo::max_pool2x2`, avoid `nn::Embedding` and deformable \
convolutions, or train first order)";

impl Error {
    /// [`Error::TaskPanicked`] for a panic `message`, with a hint when the cause is known.
    pub fn panicked(message: &str) -> Self {
        let hint = if message.contains("differentiate") {
            SECOND_ORDER_HINT.to_string()
        } else {
            String::new()
        };
        Self::TaskPanicked {
            message: message.to_string(),
            hint,
        }
    }
}

/// Check that a float config value is finite and strictly positive.
pub fn ensure_positive(field: &'static str, value: f64) -> Result<()> {
    if value.is_finite() && value > 0.0 {
        Ok(())
    } else {
        Err(Error::config(
            field,
            format!("must be finite and > 0, got {value}"),
        ))
    }
}

/// Check that a count is at least one.
pub fn ensure_nonzero(field: &'static str, value: usize) -> Result<()> {
    if value > 0 {
        Ok(())
    } else {
        Err(Error::config(field, "must be at least 1, got 0"))
    }
}

/// Check mixing weights for `n` items (models, teachers, ensemble members) and return their sum:
/// one weight per item, each finite and non-negative, summing to a positive number.
pub fn check_weights(weights: &[f64], n: usize, what: &str) -> Result<f64> {
    if weights.len() != n {
        return Err(Error::ShapeMismatch(format!(
            "{} weights for {n} {what}",
            weights.len()
        )));
    }
    if weights.iter().any(|w| !w.is_finite() || *w < 0.0) {
        return Err(Error::config("weights", "must be finite and non-negative"));
    }
    let total: f64 = weights.iter().sum();
    if total > 0.0 {
        Ok(total)
    } else {
        Err(Error::config("weights", "must sum to a positive number"))
    }
}
