//! # metalearn-eval
//!
//! Evaluation and reports:
//!
//! - [`meta_test`]: adapt a learner to fresh tasks and summarise the query loss/accuracy after
//!   0, 1, …, S adaptation steps (the *steps curve*), each with mean, standard deviation and 95%
//!   confidence interval.
//! - [`meta_test_final`]: the same tasks scored once, after the last step (one query pass per
//!   task; the few-shot protocol's final accuracy). Tasks run in parallel on rayon's pool, gathered
//!   in order, so the numbers do not depend on the thread count.
//! - [`plot`]: SVG plots of steps curves and learning curves.
//! - [`analysis`]: interpretability — linear CKA between representations and per-layer
//!   parameter change during adaptation (Raghu et al. 2020).
//! - JSON output through serde for every result type.
//!
//! ```
//! use metalearn_eval::StepsCurve;
//! use metalearn_core::learner::StepMetrics;
//! let curves = vec![
//!     vec![StepMetrics { steps: 0, loss: 2.0, accuracy: None }, StepMetrics { steps: 1, loss: 1.0, accuracy: None }],
//!     vec![StepMetrics { steps: 0, loss: 4.0, accuracy: None }, StepMetrics { steps: 1, loss: 3.0, accuracy: None }],
//! ];
//! let s = StepsCurve::from_curves(&curves).unwrap();
//! assert_eq!(s.points[1].loss.mean, 2.0);
//! ```
#![warn(missing_docs)]

pub mod analysis;
mod error;
pub mod fewshot;
pub mod plot;
mod steps;

pub use error::{Error, Result};
pub use steps::{meta_test, meta_test_final, StepsCurve, StepsPoint};
