//! The learners' integration tests, one test binary (rust-analyzer's `tests/slow-tests` habit):
//! each file used to link its own copy of every learner it instantiates; one binary compiles
//! them once. `gradcheck_f64.rs` stays a binary of its own: burn-ndarray's f32 and f64 share
//! one default dtype per process.
#![allow(clippy::unwrap_used)] // test helpers fail loudly

mod bad_input;
mod checkpoint;
mod omniglot_learners;
mod own_learner;
mod sinusoid_training;
mod wgpu;
