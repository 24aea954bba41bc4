//! The learners' integration tests, one test binary (rust-analyzer's `tests/slow-tests` habit):
//! each file used to link its own copy of every learner it instantiates; one binary compiles
//! them once. Two files stay binaries of their own: `gradcheck_f64.rs` (burn-ndarray's f32 and
//! f64 share one default dtype per process) and `checkpoint.rs`, whose bit-for-bit comparison
//! of a learner's next step fails when other tests run in the same process (an open bug,
//! docs/ARCHITECTURE.md "Known non-determinism").
#![allow(clippy::unwrap_used)] // test helpers fail loudly

mod bad_input;
mod omniglot_learners;
mod own_learner;
mod sinusoid_training;
mod wgpu;
