//! Layers that can be differentiated twice on burn 0.21.
//!
//! burn 0.21's `nn::Linear::forward` (fused linear) and `nn::pool::MaxPool2d`/`AvgPool2d` panic
//! in a double backward ("Can't differentiate …"), so [`Dense`] is matmul + bias and
//! [`max_pool2x2`] gathers the input at the argmax of burn's pooling kernel. burn's `nn::BatchNorm` broadcasts `[1, C, 1, 1]` over
//! `[N, C, H, W]`, which misses burn-flex's fast path; [`batch_norm_train`] repeats per-channel
//! statistics to `[N, C, 1, 1]` instead (measured ~3× faster for Conv4 forward + backward).

use burn::module::{Module, Param, ParamId};
use burn::tensor::ops::ConvOptions;
use burn::tensor::{backend::Backend, Tensor, TensorData};
use metalearn_core::seed::Rng;
use rand::Rng as _;

/// A tensor of `shape` with entries `U[−bound, bound]` drawn from `rng`.
pub(crate) fn uniform<B: Backend, const D: usize>(
    rng: &mut Rng,
    shape: [usize; D],
    bound: f64,
    device: &B::Device,
) -> Param<Tensor<B, D>> {
    let n: usize = shape.iter().product();
    let v: Vec<f32> = (0..n)
        .map(|_| ((2.0 * rng.random::<f64>() - 1.0) * bound) as f32)
        .collect();
    Param::initialized(
        ParamId::new(),
        Tensor::from_data(TensorData::new(v, shape), device).require_grad(),
    )
}

pub(crate) fn constant<B: Backend, const D: usize>(
    shape: [usize; D],
    value: f32,
    device: &B::Device,
) -> Param<Tensor<B, D>> {
    Param::initialized(
        ParamId::new(),
        Tensor::<B, D>::full(shape, value, device).require_grad(),
    )
}

/// Fully connected layer `y = x W + b` with `W: [in, out]`.
#[derive(Module, Debug)]
pub struct Dense<B: Backend> {
    /// `[in, out]`.
    pub weight: Param<Tensor<B, 2>>,
    /// `[out]`.
    pub bias: Param<Tensor<B, 1>>,
}

impl<B: Backend> Dense<B> {
    /// PyTorch's default initialisation: `U[−1/√in, 1/√in]` for weight and bias.
    pub fn new(rng: &mut Rng, d_in: usize, d_out: usize, device: &B::Device) -> Self {
        let bound = 1.0 / (d_in as f64).sqrt();
        Self {
            weight: uniform(rng, [d_in, d_out], bound, device),
            bias: uniform(rng, [d_out], bound, device),
        }
    }

    /// `x W + b` for `x: [n, in]`.
    pub fn forward(&self, x: Tensor<B, 2>) -> Tensor<B, 2> {
        let n = x.dims()[0];
        let out = self.bias.dims()[0];
        x.matmul(self.weight.val()) + self.bias.val().reshape([1, out]).repeat_dim(0, n)
    }
}

/// 3×3 (or k×k) convolution with stride 1 and "same" padding.
#[derive(Module, Debug)]
pub struct Conv2d<B: Backend> {
    /// `[out, in, k, k]`.
    pub weight: Param<Tensor<B, 4>>,
    /// `[out]`.
    pub bias: Param<Tensor<B, 1>>,
}

impl<B: Backend> Conv2d<B> {
    /// PyTorch's default initialisation (`U[−1/√fan_in, 1/√fan_in]`).
    pub fn new(rng: &mut Rng, c_in: usize, c_out: usize, k: usize, device: &B::Device) -> Self {
        let bound = 1.0 / ((c_in * k * k) as f64).sqrt();
        Self {
            weight: uniform(rng, [c_out, c_in, k, k], bound, device),
            bias: uniform(rng, [c_out], bound, device),
        }
    }

    /// Convolve `x: [n, in, h, w]` to `[n, out, h, w]`.
    pub fn forward(&self, x: Tensor<B, 4>) -> Tensor<B, 4> {
        let k = self.weight.dims()[2];
        let pad = k / 2;
        burn::tensor::module::conv2d(
            x,
            self.weight.val(),
            Some(self.bias.val()),
            ConvOptions::new([1, 1], [pad, pad], [1, 1], 1),
        )
    }
}

/// Batch norm with learned scale and shift and no running statistics: always normalises with
/// the current batch's statistics (the transductive setting of Finn et al. 2017).
#[derive(Module, Debug)]
pub struct BatchNorm2d<B: Backend> {
    /// Scale `γ`, `[C]`.
    pub gamma: Param<Tensor<B, 1>>,
    /// Shift `β`, `[C]`.
    pub beta: Param<Tensor<B, 1>>,
}

impl<B: Backend> BatchNorm2d<B> {
    /// `γ = 1`, `β = 0`.
    pub fn new(channels: usize, device: &B::Device) -> Self {
        Self {
            gamma: constant([channels], 1.0, device),
            beta: constant([channels], 0.0, device),
        }
    }

    /// Normalise `x: [n, c, h, w]` with batch statistics.
    pub fn forward(&self, x: Tensor<B, 4>) -> Tensor<B, 4> {
        batch_norm_train(x, self.gamma.val(), self.beta.val(), 1e-5)
    }
}

/// `γ · (x − μ) / √(σ² + ε) + β` with per-channel batch mean `μ` and (biased) variance `σ²`.
///
/// Per-channel tensors are repeated to `[N, C, 1, 1]` before broadcasting over `H, W`.
pub fn batch_norm_train<B: Backend>(
    x: Tensor<B, 4>,
    gamma: Tensor<B, 1>,
    beta: Tensor<B, 1>,
    eps: f64,
) -> Tensor<B, 4> {
    let [n, c, h, w] = x.dims();
    let inv_count = 1.0 / (n * h * w) as f64;
    let per_channel = |t: Tensor<B, 4>| -> Tensor<B, 4> {
        // [N, C, H, W] -> [C] sums, as [1, C, 1, 1]
        t.sum_dim(3).sum_dim(2).sum_dim(0).mul_scalar(inv_count)
    };
    let mean = per_channel(x.clone()).repeat_dim(0, n);
    let centered = x - mean;
    let var = per_channel(centered.clone() * centered.clone());
    let scale = (var.add_scalar(eps).sqrt().recip() * gamma.reshape([1, c, 1, 1])).repeat_dim(0, n);
    let shift = beta.reshape([1, c, 1, 1]).repeat_dim(0, n);
    centered * scale + shift
}

/// 2×2 max-pooling with stride 2 (odd trailing rows and columns are dropped, like PyTorch's
/// floor mode) that nests under double autodiff.
///
/// burn's pooling kernel finds the argmax on a detached copy; the values are then a `gather` of
/// the input at those positions, whose backward (a scatter-add, itself differentiable) is what
/// autodiff sees. Measured on burn-flex (80 × 64 × 28 × 28, forward + backward): ~2× faster than
/// the reshape + `max_dim` formulation it replaces.
/// Untracked inputs (inference) take a reshape + `max_dim` path instead, whose forward pass is
/// faster still.
pub fn max_pool2x2<B: Backend>(x: Tensor<B, 4>) -> Tensor<B, 4> {
    let [n, c, h, w] = x.dims();
    let (h2, w2) = (h / 2, w / 2);
    if !x.is_require_grad() {
        let x = if h % 2 == 1 || w % 2 == 1 {
            x.slice([0..n, 0..c, 0..h2 * 2, 0..w2 * 2])
        } else {
            x
        };
        return x
            .reshape([n, c, h2, 2, w2, 2])
            .max_dim(5)
            .max_dim(3)
            .reshape([n, c, h2, w2]);
    }
    let (_, argmax) = burn::tensor::module::max_pool2d_with_indices(
        x.clone().detach(),
        [2, 2],
        [2, 2],
        [0, 0],
        [1, 1],
        false,
    );
    x.reshape([n, c, h * w])
        .gather(2, argmax.reshape([n, c, h2 * w2]))
        .reshape([n, c, h2, w2])
}
