//! Layers that can be differentiated twice on burn 0.21.
//!
//! burn 0.21's `nn::Linear::forward` (fused linear) and `nn::pool::MaxPool2d`/`AvgPool2d` panic
//! in a double backward ("Can't differentiate …"), so [`Dense`] is matmul + bias and
//! [`max_pool2x2`] gathers the input at the argmax of burn's pooling kernel. burn's `nn::BatchNorm` broadcasts `[1, C, 1, 1]` over
//! `[N, C, H, W]`, which misses burn-flex's fast path; [`batch_norm_train`] repeats per-channel
//! statistics to `[N, C, 1, 1]` instead (faster for Conv4 forward + backward; the per-layer
//! timings are in the speed suite's report, `cargo xtask bench --suite speed`).
//!
//! # The channel-major fast path (CPU)
//!
//! [`Conv2d::forward_channel_major`], [`batch_norm_channel_major`] and [`max_pool2x2`] also work
//! on *channel-major* activations `[C, N, H, W]` (one row of `N·H·W` values per channel):
//!
//! - the convolution is an im2col matrix and **one matmul**: `[N·H·W, k²·C]` built by one row
//!   `select` of the pixel rows (plus a zero row that stands for the padding; backward: one row
//!   scatter-add), or, for fewer than 4 input channels, `k²` shifted slices of the zero-padded
//!   input concatenated into `[k²·C, N·H·W]`; the output is channel-major again. Forward and
//!   backward are GEMMs plus copies, and every op nests under `Autodiff<Autodiff<B>>` (exact
//!   second order);
//! - batch-norm statistics are reductions over contiguous rows, and the per-channel scale and
//!   shift are `[C, 1]` columns, which burn-flex broadcasts on its SIMD fast path without
//!   materialising anything;
//! - pooling treats `[C, N]` as the batch dimensions.
//!
//! burn 0.21's own `conv2d` backward on burn-flex goes through a generic convolution with the
//! gradient map as kernel and a transposed convolution, several times slower than the GEMMs
//! (see docs/ARCHITECTURE.md, "Speed", for the per-layer measurements).
//! [`ConvPath`] picks the path: `Auto` uses the channel-major path on the CPU backends and burn's
//! `conv2d` elsewhere (GPU backends have tuned convolution kernels).

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

    /// Convolve channel-major `x: [in, n, h, w]` to `[out, n, h, w]` (im2col + one matmul; see
    /// [`conv2d_channel_major`]).
    pub fn forward_channel_major(&self, x: Tensor<B, 4>) -> Tensor<B, 4> {
        conv2d_channel_major(x, self.weight.val(), self.bias.val())
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

/// How a convolutional model computes its convolutions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ConvPath {
    /// [`ChannelMajor`](Self::ChannelMajor) on CPU backends (burn-flex, burn-ndarray),
    /// [`Burn`](Self::Burn) on every other backend.
    #[default]
    Auto,
    /// Channel-major activations, im2col + one matmul per convolution (see the module docs).
    ChannelMajor,
    /// burn's `conv2d` on `[N, C, H, W]` activations.
    Burn,
}

impl ConvPath {
    /// The concrete path for backend `B` (never `Auto`).
    pub fn resolve<B: Backend>(self, device: &B::Device) -> Self {
        match self {
            Self::Auto => {
                let name = B::name(device).to_ascii_lowercase();
                if name.contains("flex") || name.contains("ndarray") {
                    Self::ChannelMajor
                } else {
                    Self::Burn
                }
            }
            other => other,
        }
    }
}

/// im2col + matmul convolution with stride 1 and "same" padding on channel-major activations.
///
/// `x: [C, N, H, W]`, `weight: [O, C, k, k]` (PyTorch's layout), `bias: [O]`; returns
/// `[O, N, H, W]`. The same function as [`burn::tensor::module::conv2d`] with padding `k / 2`
/// (tests check values and gradients), built from a transpose, a concatenation, a row
/// `select` and a matmul, so it nests under double autodiff. The im2col matrix is built
/// channels-last (`[N·H·W, k²·C]`, one row copy of `C` values per pixel and kernel offset),
/// the layout whose `select` and its backward (a row scatter-add) run on contiguous rows.
pub fn conv2d_channel_major<B: Backend>(
    x: Tensor<B, 4>,
    weight: Tensor<B, 4>,
    bias: Tensor<B, 1>,
) -> Tensor<B, 4> {
    let [c, n, h, w] = x.dims();
    let o = weight.dims()[0];
    let m = n * h * w;
    if c < ROW_SELECT_MIN_CHANNELS {
        return conv_shifted_slices(x, weight, bias);
    }
    // One row per pixel (a transposing copy of the small input), plus the zero row.
    let rows = x.reshape([c, m]).transpose();
    let out = conv_rows(rows, weight, [n, h, w]);
    // [N·H·W, O] -> [O, N·H·W] (copied once by the bias add).
    (out.transpose() + bias.reshape([o, 1])).reshape([o, n, h, w])
}

/// Below this many input channels the channel-major convolution builds its im2col matrix from
/// `k²` shifted slices (rows of `W` pixels) rather than a row `select` (rows of `C` values): the
/// faster of the two for Conv4's first block (1 channel, 80 × 28 × 28) on burn-flex, forward +
/// backward (chosen by measurement; the per-layer times are in the speed suite's report).
const ROW_SELECT_MIN_CHANNELS: usize = 4;

/// The channel-major convolution for few input channels: zero-pad, `k²` shifted slices
/// concatenated into `[k²·C, N·H·W]` (row `(dy·k + dx)·C + c`), one matmul.
fn conv_shifted_slices<B: Backend>(
    x: Tensor<B, 4>,
    weight: Tensor<B, 4>,
    bias: Tensor<B, 1>,
) -> Tensor<B, 4> {
    let [c, n, h, w] = x.dims();
    let [o, _, k, _] = weight.dims();
    let p = k / 2;
    let padded = Tensor::<B, 4>::zeros([c, n, h + 2 * p, w + 2 * p], &x.device())
        .slice_assign([0..c, 0..n, p..p + h, p..p + w], x);
    let shifted: Vec<Tensor<B, 4>> = (0..k * k)
        .map(|i| {
            let (dy, dx) = (i / k, i % k);
            padded.clone().slice([0..c, 0..n, dy..dy + h, dx..dx + w])
        })
        .collect();
    let cols = Tensor::cat(shifted, 0).reshape([k * k * c, n * h * w]);
    // [O, C, k, k] -> [O, k, k, C] -> [O, k²·C], matching the rows of `cols`.
    let wmat = weight.permute([0, 2, 3, 1]).reshape([o, k * k * c]);
    (wmat.matmul(cols) + bias.reshape([o, 1])).reshape([o, n, h, w])
}

/// The im2col convolution on pixel rows `rows: [N·H·W, C]` (any layout): one `select` of rows
/// builds `[N·H·W, k²·C]` (the padding reads a zero row), one matmul gives `[N·H·W, O]`. Its
/// backward is one matmul and one row scatter-add, and both nest under double autodiff.
fn conv_rows<B: Backend>(
    rows: Tensor<B, 2>,
    weight: Tensor<B, 4>,
    [n, h, w]: [usize; 3],
) -> Tensor<B, 2> {
    let [m, c] = rows.dims();
    let [o, _, k, _] = weight.dims();
    let device = rows.device();
    let rows = Tensor::cat(vec![rows, Tensor::<B, 2>::zeros([1, c], &device)], 0);
    let idx = im2col_rows(1, n, h, w, k);
    let idx = Tensor::<B, 1, burn::tensor::Int>::from_data(
        TensorData::new(idx.as_ref().clone(), [m * k * k]),
        &device,
    );
    let cols = rows.select(0, idx).reshape([m, k * k * c]);
    // [O, C, k, k] -> [k, k, C, O] -> [k²·C, O], matching the columns of `cols`.
    let wmat = weight.permute([2, 3, 1, 0]).reshape([k * k * c, o]);
    cols.matmul(wmat)
}

/// The source rows of a channels-last im2col over `t` stacked tasks: for every task, output
/// pixel `(n, y, x)` (row-major) and kernel offset `(dy, dx)`, the row of `[T·N·H·W + 1, C]` it
/// reads, where row `T·N·H·W` is the zero row that stands for the padding. Cached per shape
/// (host memory).
fn im2col_rows(t: usize, n: usize, h: usize, w: usize, k: usize) -> std::sync::Arc<Vec<i64>> {
    use std::collections::HashMap;
    use std::sync::{Arc, Mutex};
    type Cache = Mutex<HashMap<[usize; 5], Arc<Vec<i64>>>>;
    static CACHE: std::sync::OnceLock<Cache> = std::sync::OnceLock::new();
    let cache = CACHE.get_or_init(Default::default);
    let key = [t, n, h, w, k];
    if let Some(v) = cache.lock().unwrap_or_else(|e| e.into_inner()).get(&key) {
        return v.clone();
    }
    let p = (k / 2) as isize;
    let zero = (t * n * h * w) as i64;
    let mut rows = Vec::with_capacity(t * n * h * w * k * k);
    // Task `t`'s images are images `t·N .. (t+1)·N` of one stacked batch.
    for b in 0..t * n {
        for y in 0..h as isize {
            for x in 0..w as isize {
                for dy in 0..k as isize {
                    for dx in 0..k as isize {
                        let (yy, xx) = (y + dy - p, x + dx - p);
                        rows.push(
                            if yy < 0 || xx < 0 || yy >= h as isize || xx >= w as isize {
                                zero
                            } else {
                                ((b * h + yy as usize) * w + xx as usize) as i64
                            },
                        );
                    }
                }
            }
        }
    }
    let v = Arc::new(rows);
    cache
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .insert(key, v.clone());
    v
}

/// [`conv2d_channel_major`] for `T` tasks at once, each with its own weights: `x: [T, C, N, H, W]`
/// (each task's activations channel-major), `weight: [T, O, C, k, k]`, `bias: [T, O]`; returns
/// `[T, O, N, H, W]`. The im2col matrices of all tasks are built by one `select` (or `k²` shifted
/// slices for few channels) and applied by one batched matmul, so `T` small convolutions become
/// one large one; task `t`'s output is exactly `conv2d_channel_major` of its own slices.
pub fn conv2d_tasks<B: Backend>(
    x: Tensor<B, 5>,
    weight: Tensor<B, 5>,
    bias: Tensor<B, 2>,
) -> Tensor<B, 5> {
    let [t, c, n, h, w] = x.dims();
    let [_, o, _, k, _] = weight.dims();
    let m = n * h * w;
    let bias = bias.reshape([t, o, 1]);
    if c < ROW_SELECT_MIN_CHANNELS {
        // Zero-pad, k² shifted slices → [T, k²·C, N·H·W] (row (dy·k + dx)·C + c), one matmul.
        let p = k / 2;
        let tc = t * c;
        let padded = Tensor::<B, 4>::zeros([tc, n, h + 2 * p, w + 2 * p], &x.device())
            .slice_assign([0..tc, 0..n, p..p + h, p..p + w], x.reshape([tc, n, h, w]));
        let shifted: Vec<Tensor<B, 3>> = (0..k * k)
            .map(|i| {
                let (dy, dx) = (i / k, i % k);
                padded
                    .clone()
                    .slice([0..tc, 0..n, dy..dy + h, dx..dx + w])
                    .reshape([t, c, m])
            })
            .collect();
        let cols = Tensor::cat(shifted, 1);
        // [T, O, C, k, k] -> [T, O, k, k, C] -> [T, O, k²·C], matching the rows of `cols`.
        let wmat = weight.permute([0, 1, 3, 4, 2]).reshape([t, o, k * k * c]);
        return (wmat.matmul(cols) + bias).reshape([t, o, n, h, w]);
    }
    // One row per pixel of every task ([T·N·H·W, C]), plus the zero row.
    let device = x.device();
    let rows = x.reshape([t, c, m]).swap_dims(1, 2).reshape([t * m, c]);
    let rows = Tensor::cat(vec![rows, Tensor::<B, 2>::zeros([1, c], &device)], 0);
    let idx = im2col_rows(t, n, h, w, k);
    let idx = Tensor::<B, 1, burn::tensor::Int>::from_data(
        TensorData::new(idx.as_ref().clone(), [t * m * k * k]),
        &device,
    );
    let cols = rows.select(0, idx).reshape([t, m, k * k * c]);
    // [T, O, C, k, k] -> [T, k, k, C, O] -> [T, k²·C, O], matching the columns of `cols`.
    let wmat = weight.permute([0, 3, 4, 2, 1]).reshape([t, k * k * c, o]);
    (cols.matmul(wmat).swap_dims(1, 2) + bias).reshape([t, o, n, h, w])
}

/// [`batch_norm_channel_major`] for `T` tasks at once: `x: [T, C, N, H, W]`, per-task
/// `gamma` (`None`: no scale, as `γ = 1`), `beta: [T, C]`; each task is normalised with its own
/// batch statistics.
pub fn batch_norm_tasks<B: Backend>(
    x: Tensor<B, 5>,
    gamma: Option<Tensor<B, 2>>,
    beta: Tensor<B, 2>,
    eps: f64,
) -> Tensor<B, 5> {
    let [t, c, n, h, w] = x.dims();
    // One autodiff step with a closed-form backward on the common backends (five passes over
    // the activations instead of ~15; exact under nesting): `metalearn_core::norm`.
    metalearn_core::norm::batch_norm_rows(x.reshape([t, c, n * h * w]), gamma, beta, eps)
        .reshape([t, c, n, h, w])
}

/// Convolution on channels-last activations `x: [N, H, W, C]` (stride 1, "same" padding):
/// one `select` of rows builds the im2col matrix `[N·H·W, k²·C]`, one matmul applies the
/// weights. Returns `[N, H, W, O]`.
pub fn conv2d_channels_last<B: Backend>(
    x: Tensor<B, 4>,
    weight: Tensor<B, 4>,
    bias: Tensor<B, 1>,
) -> Tensor<B, 4> {
    let [n, h, w, c] = x.dims();
    let o = weight.dims()[0];
    let out = conv_rows(x.reshape([n * h * w, c]), weight, [n, h, w]);
    (out + bias.reshape([1, o])).reshape([n, h, w, o])
}

/// [`batch_norm_train`] on channel-major activations `x: [C, N, H, W]`: statistics are
/// reductions over contiguous rows and scale and shift broadcast as `[C, 1]` columns.
pub fn batch_norm_channel_major<B: Backend>(
    x: Tensor<B, 4>,
    gamma: Option<Tensor<B, 1>>,
    beta: Tensor<B, 1>,
    eps: f64,
) -> Tensor<B, 4> {
    let [c, n, h, w] = x.dims();
    // One task: the same reductions over the same contiguous rows.
    batch_norm_tasks(
        x.reshape([1, c, n, h, w]),
        gamma.map(|g| g.reshape([1, c])),
        beta.reshape([1, c]),
        eps,
    )
    .reshape([c, n, h, w])
}

/// Batch norm with learned scale and shift and no running statistics: always normalises with
/// the current batch's statistics (the transductive setting of Finn et al. 2017).
///
/// [`without_scale`](Self::without_scale) fixes `γ = 1` (TensorFlow's `batch_norm` default,
/// `scale=False`, which Finn et al.'s reference code uses): `gamma` stays in the record but
/// takes no part in the forward pass, so no gradient, inner or outer, ever moves it.
#[derive(Module, Debug)]
pub struct BatchNorm2d<B: Backend> {
    /// Scale `γ`, `[C]`.
    pub gamma: Param<Tensor<B, 1>>,
    /// Shift `β`, `[C]`.
    pub beta: Param<Tensor<B, 1>>,
    /// Whether `γ` is applied (and so learned); `false`: the output is not scaled.
    #[module(skip)]
    pub scale: bool,
}

impl<B: Backend> BatchNorm2d<B> {
    /// `γ = 1`, `β = 0`, with a learned scale.
    pub fn new(channels: usize, device: &B::Device) -> Self {
        Self {
            gamma: constant([channels], 1.0, device),
            beta: constant([channels], 0.0, device),
            scale: true,
        }
    }

    /// The same layer with `γ` fixed at 1 (no learned scale).
    pub fn without_scale(self) -> Self {
        Self {
            scale: false,
            ..self
        }
    }

    /// `γ`, or `None` when the layer has no learned scale.
    pub fn applied_gamma(&self) -> Option<Tensor<B, 1>> {
        self.scale.then(|| self.gamma.val())
    }

    /// Normalise `x: [n, c, h, w]` with batch statistics.
    pub fn forward(&self, x: Tensor<B, 4>) -> Tensor<B, 4> {
        batch_norm_train(x, self.applied_gamma(), self.beta.val(), 1e-5)
    }

    /// Normalise channel-major `x: [c, n, h, w]` with batch statistics.
    pub fn forward_channel_major(&self, x: Tensor<B, 4>) -> Tensor<B, 4> {
        batch_norm_channel_major(x, self.applied_gamma(), self.beta.val(), 1e-5)
    }
}

/// `γ · (x − μ) / √(σ² + ε) + β` with per-channel batch mean `μ` and (biased) variance `σ²`
/// (`gamma = None`: `γ = 1`, not multiplied).
///
/// Per-channel tensors are repeated to `[N, C, 1, 1]` before broadcasting over `H, W`.
pub fn batch_norm_train<B: Backend>(
    x: Tensor<B, 4>,
    gamma: Option<Tensor<B, 1>>,
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
    let inv_std = var.add_scalar(eps).sqrt().recip();
    let scale = match gamma {
        Some(gamma) => inv_std * gamma.reshape([1, c, 1, 1]),
        None => inv_std,
    }
    .repeat_dim(0, n);
    let shift = beta.reshape([1, c, 1, 1]).repeat_dim(0, n);
    centered * scale + shift
}

/// 2×2 max-pooling with stride 2 over the last two dimensions (odd trailing rows and columns
/// are dropped, like PyTorch's floor mode) that nests under double autodiff. The first two
/// dimensions are batch dimensions, so it pools `[N, C, H, W]` and channel-major `[C, N, H, W]`
/// alike.
///
/// On autodiff backends burn's pooling kernel finds the argmax on a detached copy; the values are
/// then a `gather` of the input at those positions, whose backward (a scatter-add, itself
/// differentiable) is what autodiff sees. On burn-flex this is faster than the reshape +
/// `max_dim` formulation, whose backward is a general N-D scatter: the gather and its
/// scatter-add run on 2-D views (burn-flex's fast path; times in the speed suite's report).
/// Backends without autodiff (inference) take the pooling kernel's values directly.
///
/// The branch is chosen by the *backend* (`B::ad_enabled(device)`), not by `x.is_require_grad()`:
/// burn-autodiff 0.21 reports `true` there only for leaf tensors, so every activation inside a
/// network (an intermediate) would take the inference path during training.
///
/// burn-candle 0.21 has no pooling kernel with indices; there the pooling is a reshape to
/// `[N, C, H/2, 2, W/2, 2]` and two `max_dim`s (the same values and gradients).
pub fn max_pool2x2<B: Backend>(x: Tensor<B, 4>) -> Tensor<B, 4> {
    let [n, c, h, w] = x.dims();
    let (h2, w2) = (h / 2, w / 2);
    // The type name is a static string: no allocation on this hot path (unlike `B::name`).
    if std::any::type_name::<B>().contains("burn_candle") {
        return max_pool2x2_by_reshape(x);
    }
    if !B::ad_enabled(&x.device()) {
        return burn::tensor::module::max_pool2d_with_indices(
            x,
            [2, 2],
            [2, 2],
            [0, 0],
            [1, 1],
            false,
        )
        .0;
    }
    let (_, argmax) = burn::tensor::module::max_pool2d_with_indices(
        x.clone().detach(),
        [2, 2],
        [2, 2],
        [0, 0],
        [1, 1],
        false,
    );
    // 2-D gather (and scatter-add backward): burn-flex's fast path.
    x.reshape([n * c, h * w])
        .gather(1, argmax.reshape([n * c, h2 * w2]))
        .reshape([n, c, h2, w2])
}

/// [`max_pool2x2`] from a reshape and two `max_dim`s: for backends without a pooling kernel.
pub(crate) fn max_pool2x2_by_reshape<B: Backend>(x: Tensor<B, 4>) -> Tensor<B, 4> {
    let [n, c, h, w] = x.dims();
    let (h2, w2) = (h / 2, w / 2);
    x.slice([0..n, 0..c, 0..2 * h2, 0..2 * w2])
        .reshape([n, c, h2, 2, w2, 2])
        .max_dim(5)
        .max_dim(3)
        .reshape([n, c, h2, w2])
}
