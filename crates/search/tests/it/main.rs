//! The search crate's integration tests, one test binary (each file used to compile its own
//! copy of the learners it searches over). `concurrency.rs` stays a binary of its own: it
//! checks a whole process (rayon's global pool included) under a watchdog.
#![allow(clippy::unwrap_used)] // test helpers fail loudly

mod bad_input;
mod search;
