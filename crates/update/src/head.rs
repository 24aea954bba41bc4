//! The linear classifier trained on frozen embeddings at test time (the fine-tune baseline,
//! transfer learning); its own module so that [`finetune`](crate::FineTune) and
//! [`transfer`](crate::transfer) both build on it without depending on each other.

use burn::module::{Module, Param, ParamId};
use burn::tensor::backend::Backend;
use burn::tensor::Tensor;

/// A linear classifier on frozen embeddings.
#[derive(Module, Debug)]
pub struct LinearHead<B: Backend> {
    /// `[d, ways]`.
    pub weight: Param<Tensor<B, 2>>,
    /// `[ways]`.
    pub bias: Param<Tensor<B, 1>>,
}

impl<B: Backend> LinearHead<B> {
    /// Zero-initialised head.
    pub fn zeros(d: usize, ways: usize, device: &B::Device) -> Self {
        Self {
            weight: Param::initialized(
                ParamId::new(),
                Tensor::zeros([d, ways], device).require_grad(),
            ),
            bias: Param::initialized(ParamId::new(), Tensor::zeros([ways], device).require_grad()),
        }
    }

    /// Logits `[n, ways]`.
    pub fn forward(&self, x: Tensor<B, 2>) -> Tensor<B, 2> {
        let n = x.dims()[0];
        let w = self.bias.dims()[0];
        x.matmul(self.weight.val()) + self.bias.val().reshape([1, w]).repeat_dim(0, n)
    }
}
