//! # metalearn-search
//!
//! Search-type meta-learners: they search model *structure* rather than parameters.
//!
//! This crate is the home of (to be built, see the project's issues):
//!
//! - a declarative search space (named categorical decisions with constraints, loaded from
//!   TOML/JSON) whose assignments build real models through `metalearn-zoo`;
//! - ask/tell strategies: random search, REINFORCE with a learned controller (Zoph & Le 2017),
//!   and regularized evolution (Real et al. 2019);
//! - objectives that score an architecture by how well it *adapts to new tasks* after brief
//!   meta-training, with a crash-safe JSON-lines journal.
//!
//! Nothing is exported yet.
#![warn(missing_docs)]
