//! # metalearn-train
//!
//! The meta-trainer: what turns a learner into a training *run* that can be watched, stopped,
//! resumed and used afterwards.
//!
//! - [`Trainer::fit`] drives any [`AnyLearner`](metalearn_core::AnyLearner) (every learner of
//!   `metalearn-update`, boxed with [`DynLearner::boxed`](metalearn_core::DynLearner::boxed)):
//!   validation on held-out tasks every N iterations (mean ± 95% CI), the best model by
//!   validation score kept in `best/`, early stopping (patience), a JSON-lines metrics log with
//!   per-iteration timing, a progress bar on a terminal and plain log lines otherwise.
//! - Checkpoints every N iterations hold the whole learner state (model, optimiser, learned
//!   rates, iteration counter) and the trainer's, written atomically (temporary file, fsync,
//!   rename) with a SHA-256 checksum; the last K are kept. Running `fit` again on the same run
//!   directory resumes from the newest valid checkpoint — a corrupt one is skipped with a
//!   warning naming it — and gives bit-identical parameters and metrics to a run that never
//!   stopped.
//! - [`write_report`]: `report.md` with the learning curves as SVG.
//!
//! A run directory:
//!
//! ```text
//! RUN/metrics.jsonl            one line per meta-iteration and per validation
//! RUN/checkpoints/ckpt-*.mlstate
//! RUN/best/model.mlstate       best model (no optimiser state)
//! RUN/best/validation.json     its validation score
//! RUN/report.md, *.svg
//! ```
//!
//! ```no_run
//! use burn::backend::Autodiff;
//! use metalearn_core::{backend::Cpu, DynLearner};
//! use metalearn_tasks::{Sinusoid, SinusoidConfig};
//! use metalearn_train::{RunDir, Trainer, TrainerConfig};
//! use metalearn_update::{Maml, MamlConfig};
//! use metalearn_zoo::MlpConfig;
//!
//! let device = Default::default();
//! let model = MlpConfig::new(vec![1, 40, 40, 1]).init::<Autodiff<Cpu>>(0, &device).unwrap();
//! let maml = Maml::new(MamlConfig::new(), model, device).unwrap();
//! let mut learner = DynLearner::<_, 2>::boxed(maml);
//! let tasks = Sinusoid::new(SinusoidConfig::new(10, 10)).unwrap();
//! let trainer = Trainer::new(TrainerConfig::new(1000), RunDir::new("runs/sinusoid")).unwrap();
//! // Kill it at any point and run it again: it continues from the last checkpoint.
//! let summary = trainer.fit(learner.as_mut(), &tasks, &tasks).unwrap();
//! println!("best: {:?}", summary.state.best);
//! ```
#![warn(missing_docs)]

pub mod allocator;
mod error;
pub mod files;
pub mod metrics;
mod progress;
mod report;
mod trainer;

pub use error::{Error, Result};
pub use progress::{format_duration, Progress};
pub use report::write_report;
pub use trainer::{
    evaluate, evaluate_curve, load_best, read_state, RunDir, TrainSummary, Trainer, TrainerConfig,
    TrainerState, Validation,
};
