//! # metalearn-zoo
//!
//! Models for meta-learning, each an implementation of
//! [`MetaModule`](metalearn_core::MetaModule) written so that it can be differentiated twice on
//! burn 0.21 (`Autodiff<Autodiff<B>>`):
//!
//! - [`Mlp`]: fully connected ReLU network (sinusoid: 1-40-40-1), with a task-batched fast path.
//! - [`Conv4`]: the few-shot backbone of Vinyals et al. / Finn et al.: 4 × (3×3 conv, batch norm,
//!   ReLU, 2×2 max-pool) and a linear head, also task-batched ([`conv2d_tasks`],
//!   [`batch_norm_tasks`]: exact, but on CPU slower than running tasks on parallel lanes).
//!
//! Initial weights are drawn on the host from a seed (ChaCha8), so a seed gives the same model on
//! every backend.
//!
//! ```
//! use metalearn_core::{backend::Cpu, MetaModule};
//! use metalearn_zoo::MlpConfig;
//! use burn::tensor::Tensor;
//!
//! let device = Default::default();
//! let mlp = MlpConfig::new(vec![1, 40, 40, 1]).init::<Cpu>(7, &device).unwrap();
//! let y = mlp.forward(Tensor::zeros([5, 1], &device));
//! assert_eq!(y.dims(), [5, 1]);
//! ```
#![warn(missing_docs)]

mod conv4;
mod layers;
mod mlp;

pub use conv4::{Conv4, Conv4Config};
pub use layers::{
    batch_norm_channel_major, batch_norm_tasks, batch_norm_train, conv2d_channel_major,
    conv2d_channels_last, conv2d_tasks, max_pool2x2, BatchNorm2d, Conv2d, ConvPath, Dense,
};
pub use mlp::{Mlp, MlpConfig};
