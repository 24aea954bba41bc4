//! The `metalearn` command's integration tests, one test binary: experiment files, kill -9 and
//! resume, `adapt` on a user's images, `search`, and the shipped models re-measured.
#![allow(clippy::unwrap_used)] // test helpers fail loudly

mod adapt;
mod cli;
mod common;
mod search;
mod shipped;
