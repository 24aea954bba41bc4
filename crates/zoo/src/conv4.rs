//! Conv4: the standard few-shot backbone.

use crate::layers::{
    batch_norm_tasks, conv2d_tasks, max_pool2x2, BatchNorm2d, Conv2d, ConvPath, Dense,
};
use burn::config::Config;
use burn::module::Module;
use burn::tensor::{activation::relu, backend::Backend, Tensor};
use metalearn_core::error::{ensure_nonzero, Error};
use metalearn_core::model::{EmbeddingModule, MetaModule, TaskBatchedModule};
use metalearn_core::seed::rng;

/// Conv4 configuration (Vinyals et al. 2016; Finn et al. 2017).
///
/// | field | default | meaning | valid |
/// |---|---|---|---|
/// | `ways` | — | output classes | ≥ 1 |
/// | `in_channels` | 1 | image channels (Omniglot 1, mini-ImageNet 3) | ≥ 1 |
/// | `input_size` | 28 | image height = width | ≥ 2^blocks |
/// | `filters` | 64 | filters per conv block | ≥ 1 |
/// | `blocks` | 4 | conv blocks | ≥ 1 |
/// | `kernel` | 3 | conv kernel size (odd) | odd ≥ 1 |
/// | `conv_path` | `auto` | how convolutions are computed ([`ConvPath`]): the channel-major im2col path on CPU, burn's `conv2d` elsewhere | — |
///
/// Both paths compute the same function (a test checks values and gradients); only speed
/// differs.
#[derive(Config, Debug)]
pub struct Conv4Config {
    /// Output classes.
    pub ways: usize,
    /// Image channels.
    #[config(default = 1)]
    pub in_channels: usize,
    /// Image height = width.
    #[config(default = 28)]
    pub input_size: usize,
    /// Filters per block.
    #[config(default = 64)]
    pub filters: usize,
    /// Number of conv blocks.
    #[config(default = 4)]
    pub blocks: usize,
    /// Kernel size.
    #[config(default = 3)]
    pub kernel: usize,
    /// How convolutions are computed.
    #[config(default = "ConvPath::Auto")]
    pub conv_path: ConvPath,
    /// Whether batch norm learns a scale `γ` (PyTorch's `affine=True`, learn2learn's Conv4);
    /// `false` fixes `γ = 1` as TensorFlow's `batch_norm` does by default (`scale=False`, Finn
    /// et al.'s reference MAML code). First-order learners need `false`: a learned `γ` grows
    /// the effective inner step, which a first-order meta-gradient cannot see.
    #[config(default = true)]
    pub bn_scale: bool,
}

impl Conv4Config {
    /// Check every field.
    pub fn validate(&self) -> metalearn_core::Result<()> {
        ensure_nonzero("ways", self.ways)?;
        ensure_nonzero("in_channels", self.in_channels)?;
        ensure_nonzero("filters", self.filters)?;
        ensure_nonzero("blocks", self.blocks)?;
        if self.kernel.is_multiple_of(2) {
            return Err(Error::config("kernel", "must be odd"));
        }
        if self.feature_size() == 0 {
            return Err(Error::config(
                "input_size",
                format!(
                    "{} is too small for {} pooling blocks",
                    self.input_size, self.blocks
                ),
            ));
        }
        Ok(())
    }

    /// Spatial size after the conv blocks.
    pub fn feature_size(&self) -> usize {
        (0..self.blocks).fold(self.input_size, |s, _| s / 2)
    }

    /// Length of the flattened embedding fed to the head.
    pub fn embedding_dim(&self) -> usize {
        let s = self.feature_size();
        self.filters * s * s
    }

    /// Build the network with weights drawn from `seed`.
    pub fn init<B: Backend>(
        &self,
        seed: u64,
        device: &B::Device,
    ) -> metalearn_core::Result<Conv4<B>> {
        self.validate()?;
        let mut r = rng(seed);
        let mut convs = Vec::new();
        let mut norms = Vec::new();
        for b in 0..self.blocks {
            let c_in = if b == 0 {
                self.in_channels
            } else {
                self.filters
            };
            convs.push(Conv2d::new(&mut r, c_in, self.filters, self.kernel, device));
            let norm = BatchNorm2d::new(self.filters, device);
            norms.push(if self.bn_scale {
                norm
            } else {
                norm.without_scale()
            });
        }
        let head = Dense::new(&mut r, self.embedding_dim(), self.ways, device);
        Ok(Conv4 {
            convs,
            norms,
            head,
            path: self.conv_path.resolve::<B>(device),
        })
    }
}

/// Conv blocks (conv → batch norm → ReLU → 2×2 max-pool, computed as pool then ReLU) and a
/// linear head.
#[derive(Module, Debug)]
pub struct Conv4<B: Backend> {
    /// Convolutions, one per block.
    pub convs: Vec<Conv2d<B>>,
    /// Batch norms, one per block.
    pub norms: Vec<BatchNorm2d<B>>,
    /// Linear classifier on the flattened features.
    pub head: Dense<B>,
    /// How the convolutions are computed (resolved for the backend at `init`; not a parameter).
    #[module(skip)]
    pub path: ConvPath,
}

/// conv → batch norm → 2×2 max-pool → ReLU. ReLU is monotone, so it commutes with max-pooling:
/// the same function as the usual conv → BN → ReLU → pool, with ReLU on a 4× smaller tensor.
/// `channel_major`: `h` is `[C, N, H, W]` (and so is the result), else `[N, C, H, W]`.
fn block<B: Backend>(
    conv: &Conv2d<B>,
    norm: &BatchNorm2d<B>,
    h: Tensor<B, 4>,
    channel_major: bool,
) -> Tensor<B, 4> {
    if channel_major {
        relu(max_pool2x2(
            norm.forward_channel_major(conv.forward_channel_major(h)),
        ))
    } else {
        relu(max_pool2x2(norm.forward(conv.forward(h))))
    }
}

impl<B: Backend> Conv4<B> {
    fn channel_major(&self) -> bool {
        self.path.resolve::<B>(&self.head.bias.device()) == ConvPath::ChannelMajor
    }

    /// Each block's output, `[N, C, H, W]` images in: channel-major (`[C, N, H, W]`) on the
    /// channel-major path, `[N, C, H, W]` otherwise.
    fn blocks(&self, x: Tensor<B, 4>) -> (Vec<Tensor<B, 4>>, bool) {
        let cm = self.channel_major();
        let mut h = if cm { to_channel_major(x) } else { x };
        let mut out = Vec::with_capacity(self.convs.len());
        for (conv, norm) in self.convs.iter().zip(&self.norms) {
            h = block(conv, norm, h, cm);
            out.push(h.clone());
        }
        (out, cm)
    }

    /// The flattened embedding `[n, embedding_dim]` (body output).
    pub fn embed(&self, x: Tensor<B, 4>) -> Tensor<B, 2> {
        let cm = self.channel_major();
        let mut h = if cm { to_channel_major(x) } else { x };
        for (conv, norm) in self.convs.iter().zip(&self.norms) {
            h = block(conv, norm, h, cm);
        }
        flatten(h, cm)
    }
}

/// `[N, C, H, W]` -> `[C, N, H, W]` (free for one channel).
fn to_channel_major<B: Backend>(x: Tensor<B, 4>) -> Tensor<B, 4> {
    let [n, c, h, w] = x.dims();
    if c == 1 {
        x.reshape([1, n, h, w])
    } else {
        x.swap_dims(0, 1)
    }
}

/// Block output -> `[N, C·H·W]`, flattened in PyTorch's `(c, h, w)` order on both paths.
fn flatten<B: Backend>(h: Tensor<B, 4>, channel_major: bool) -> Tensor<B, 2> {
    if !channel_major {
        let n = h.dims()[0];
        return h.reshape([n as i32, -1]);
    }
    let [c, n, fh, fw] = h.dims();
    if fh * fw == 1 {
        h.reshape([c, n]).transpose()
    } else {
        h.swap_dims(0, 1).reshape([n, c * fh * fw])
    }
}

impl<B: Backend> Conv4<B> {
    /// The same body with a new head for `ways` classes, drawn from `seed` (PyTorch's default
    /// initialisation): how a pretrained or meta-learned Conv4 starts on a new problem. Models
    /// given the same `seed` get identical heads (what parameter soups need).
    pub fn with_new_head(self, ways: usize, seed: u64) -> metalearn_core::Result<Self> {
        ensure_nonzero("ways", ways)?;
        let d_in = self.head.weight.dims()[0];
        let device = self.head.weight.device();
        Ok(Self {
            head: Dense::new(&mut rng(seed), d_in, ways, &device),
            ..self
        })
    }
}

impl<B: Backend> Conv4<B> {
    /// The representation after each conv block (flattened to `[n, features]`) and the logits:
    /// `blocks + 1` matrices, for layer-wise analyses such as CKA.
    pub fn block_outputs(&self, x: Tensor<B, 4>) -> Vec<Tensor<B, 2>> {
        let (blocks, cm) = self.blocks(x);
        let mut out: Vec<Tensor<B, 2>> = blocks.into_iter().map(|h| flatten(h, cm)).collect();
        if let Some(last) = out.last().cloned() {
            out.push(self.head.forward(last));
        }
        out
    }
}

impl<B: Backend> Conv4<B> {
    /// Check that images of shape `example` = `[channels, height, width]` fit the body (the
    /// first convolution's channels, at least one pixel after pooling); returns the embedding
    /// width they give.
    pub fn check_body(&self, example: &[usize]) -> metalearn_core::Result<usize> {
        let c_in = self.convs.first().map_or(0, |c| c.weight.dims()[1]);
        let filters = self.convs.last().map_or(c_in, |c| c.weight.dims()[0]);
        let &[c, h, w] = example else {
            return Err(Error::ShapeMismatch(format!(
                "Conv4 takes [channels, height, width] images but the episode's examples have \
                 shape {example:?}"
            )));
        };
        if c != c_in {
            return Err(Error::ShapeMismatch(format!(
                "Conv4 takes {c_in}-channel images but the episode's images have {c} channels \
                 (shape {example:?})"
            )));
        }
        let blocks = self.convs.len() as u32;
        let (fh, fw) = (h >> blocks, w >> blocks);
        if fh == 0 || fw == 0 {
            return Err(Error::ShapeMismatch(format!(
                "{h}x{w} images are too small for Conv4's {blocks} pooling blocks"
            )));
        }
        Ok(filters * fh * fw)
    }

    /// [`check_body`](Self::check_body), and that the embedding is as wide as the head takes
    /// (the image size the model was built for); returns that width.
    pub fn check_input(&self, example: &[usize]) -> metalearn_core::Result<usize> {
        let got = self.check_body(example)?;
        let want = self.head.weight.dims()[0];
        if got != want {
            return Err(Error::ShapeMismatch(format!(
                "Conv4's head takes {want} features but images of shape {example:?} give {got} \
                 (build the model for this image size)"
            )));
        }
        Ok(got)
    }
}

impl<B: Backend> EmbeddingModule<B, 4> for Conv4<B> {
    fn embed(&self, x: Tensor<B, 4>) -> Tensor<B, 2> {
        Conv4::embed(self, x)
    }

    fn check_embed_input(&self, example: &[usize]) -> metalearn_core::Result<()> {
        self.check_body(example).map(|_| ())
    }
}

impl<B: Backend> MetaModule<B, 4> for Conv4<B> {
    fn forward(&self, x: Tensor<B, 4>) -> Tensor<B, 2> {
        self.head.forward(self.embed(x))
    }

    fn output_width(&self, example: &[usize]) -> metalearn_core::Result<Option<usize>> {
        self.check_input(example)?;
        Ok(Some(self.head.weight.dims()[1]))
    }
}

/// The task-batched Conv4 (vmap-style): `T` tasks' fast weights at once, each block a
/// [`conv2d_tasks`] (one batched matmul), a [`batch_norm_tasks`] with per-task statistics, a
/// 2×2 max-pool and a ReLU on `[T, C, N, H, W]` activations, and a batched matmul for the heads.
/// Inputs are `[T, n, C·H·W]`; task `t`'s output equals `forward` of the model with task `t`'s
/// parameters (a test checks that `BatchedMaml`'s meta-gradient equals the per-task one, in f64).
impl<B: Backend> TaskBatchedModule<B, 4> for Conv4<B> {
    fn forward_tasks(
        &self,
        params: &[Tensor<B, 2>],
        x: Tensor<B, 3>,
        example: &[usize],
    ) -> Tensor<B, 3> {
        let [t, n, _] = x.dims();
        let &[c_in, height, width] = example else {
            panic!("Conv4 takes [C, H, W] images, got examples of shape {example:?}");
        };
        let blocks = self.convs.len();
        // [T, n, C·H·W] -> [T, C, n, H, W]: each task channel-major (free for one channel).
        let mut h = if c_in == 1 {
            x.reshape([t, 1, n, height, width])
        } else {
            x.reshape([t, n, c_in, height, width]).swap_dims(1, 2)
        };
        for (b, conv) in self.convs.iter().enumerate() {
            let [o, c, k, _] = conv.weight.dims();
            let w = params[2 * b].clone().reshape([t, o, c, k, k]);
            let y = conv2d_tasks(h, w, params[2 * b + 1].clone());
            let gamma = self.norms[b]
                .scale
                .then(|| params[2 * blocks + 2 * b].clone());
            let beta = params[2 * blocks + 2 * b + 1].clone();
            let y = batch_norm_tasks(y, gamma, beta, 1e-5);
            let [_, _, _, hh, ww] = y.dims();
            let pooled = max_pool2x2(y.reshape([t * o, n, hh, ww]));
            let [_, _, ph, pw] = pooled.dims();
            h = relu(pooled).reshape([t, o, n, ph, pw]);
        }
        // [T, C, n, h, w] -> [T, n, C·h·w] in PyTorch's (c, h, w) order, then the heads.
        let [_, c, _, fh, fw] = h.dims();
        let flat = h.swap_dims(1, 2).reshape([t, n, c * fh * fw]);
        let [d_in, ways] = self.head.weight.dims();
        let w = params[4 * blocks].clone().reshape([t, d_in, ways]);
        let bias = params[4 * blocks + 1].clone().reshape([t, 1, ways]);
        flat.matmul(w) + bias
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::tensor::TensorData;
    use metalearn_core::backend::NdArrayCpu as B;

    #[test]
    fn shapes_and_params() {
        let d = Default::default();
        let cfg = Conv4Config::new(5);
        let m = cfg.init::<B>(0, &d).unwrap();
        let y = m.forward(Tensor::zeros([2, 1, 28, 28], &d));
        assert_eq!(y.dims(), [2, 5]);
        // 4 convs + 4 BN (γ, β) + head
        let convs = (9 + 1) * 64 + 3 * (64 * 9 + 1) * 64;
        assert_eq!(m.num_params(), convs + 4 * 128 + 64 * 5 + 5);
        // Parameter paths, in visiting order: what learners select groups by.
        let names = metalearn_core::params::names(&m);
        assert_eq!(names.len(), 18);
        assert_eq!(&names[..2], ["convs.0.weight", "convs.0.bias"]);
        assert_eq!(&names[8..10], ["norms.0.gamma", "norms.0.beta"]);
        assert_eq!(&names[16..], ["head.weight", "head.bias"]);
        assert_eq!(metalearn_core::params::layer(&names[15]), "norms.3");
        assert!(metalearn_core::params::in_group(&names[2], "convs.1"));
        assert!(!metalearn_core::params::in_group(
            "convs.10.weight",
            "convs.1"
        ));
        assert!(Conv4Config::new(5)
            .with_input_size(8)
            .init::<B>(0, &d)
            .is_err());
        assert!(Conv4Config::new(0).init::<B>(0, &d).is_err());
        let body = metalearn_core::params::to_vec(&m);
        let m20 = m.with_new_head(20, 3).unwrap();
        assert_eq!(
            m20.forward(Tensor::zeros([2, 1, 28, 28], &d)).dims(),
            [2, 20]
        );
        let n_body = body.len() - 64 * 5 - 5;
        assert_eq!(
            metalearn_core::params::to_vec(&m20)[..n_body],
            body[..n_body]
        );
        assert!(m20.with_new_head(0, 3).is_err());
    }

    /// Without a learned scale, batch norm's `γ` takes no part in the forward pass on either
    /// convolution path (no gradient reaches it), and the output equals the scaled model's at
    /// `γ = 1`; with `γ ≠ 1` the two differ.
    #[test]
    fn batch_norm_without_scale_ignores_gamma() {
        use burn::backend::Autodiff;
        type A = Autodiff<B>;
        let d = Default::default();
        let x = || {
            let v: Vec<f32> = (0..3 * 12 * 12)
                .map(|i| ((i * 7919 % 211) as f32 - 105.0) / 50.0)
                .collect();
            Tensor::<A, 4>::from_data(TensorData::new(v, [3, 1, 12, 12]), &d)
        };
        for path in [ConvPath::ChannelMajor, ConvPath::Burn] {
            let cfg = Conv4Config::new(2)
                .with_input_size(12)
                .with_filters(4)
                .with_blocks(2)
                .with_conv_path(path);
            let scaled = cfg.init::<A>(3, &d).unwrap();
            let plain = cfg.clone().with_bn_scale(false).init::<A>(3, &d).unwrap();
            assert!(plain.norms.iter().all(|n| !n.scale));
            let same = scaled.forward(x()).into_data();
            plain
                .forward(x())
                .into_data()
                .assert_approx_eq::<f32>(&same, Default::default());
            let grads = plain.forward(x()).sum().backward();
            for norm in &plain.norms {
                assert!(norm.gamma.val().grad(&grads).is_none(), "{path:?}");
                assert!(norm.beta.val().grad(&grads).is_some(), "{path:?}");
            }
            // γ ≠ 1 changes the scaled model and not the unscaled one.
            let bump = |m: Conv4<A>| {
                let mut m = m;
                m.norms[0].gamma = burn::module::Param::from_tensor(Tensor::from_inner(
                    m.norms[0].gamma.val().inner().mul_scalar(3.0),
                ));
                m.forward(x()).into_data()
            };
            let plain_out = plain.forward(x()).into_data();
            bump(plain).assert_approx_eq::<f32>(&plain_out, Default::default());
            assert_ne!(bump(scaled), same, "{path:?}");
        }
    }

    /// The channel-major im2col path and burn's `conv2d` path compute the same function, with
    /// the same gradients, for several channel counts, kernel sizes and feature-map sizes.
    #[test]
    fn channel_major_path_matches_burn_conv2d() {
        use burn::backend::Autodiff;
        type A = Autodiff<B>;
        let d = Default::default();
        for (c_in, size, filters, blocks, kernel) in [
            (1, 28, 8, 4, 3),
            (3, 12, 6, 2, 3),
            (2, 10, 4, 1, 5),
            (3, 8, 5, 2, 1),
        ] {
            let cfg = Conv4Config::new(4)
                .with_in_channels(c_in)
                .with_input_size(size)
                .with_filters(filters)
                .with_blocks(blocks)
                .with_kernel(kernel);
            let n = 6;
            let v: Vec<f32> = (0..n * c_in * size * size)
                .map(|i| ((i * 7919 % 211) as f32 - 105.0) / 50.0)
                .collect();
            let run = |path: ConvPath| {
                let m = cfg.clone().with_conv_path(path).init::<A>(11, &d).unwrap();
                let m = metalearn_core::params::require_grad(m);
                let x = Tensor::<A, 4>::from_data(
                    TensorData::new(v.clone(), [n, c_in, size, size]),
                    &d,
                );
                let y = m.forward(x);
                let out: Vec<f32> = y.clone().into_data().iter::<f32>().collect();
                let grads = (y.clone() * y).sum().backward();
                let grads = burn::optim::GradientsParams::from_grads(grads, &m);
                let g = metalearn_core::params::grads_to_vec::<A, Conv4<A>>(&m, &grads);
                (out, g)
            };
            let (y_cm, g_cm) = run(ConvPath::ChannelMajor);
            let (y_b, g_b) = run(ConvPath::Burn);
            let close = |a: &[f32], b: &[f32]| {
                a.iter()
                    .zip(b)
                    .all(|(x, y)| (x - y).abs() <= 1e-4 * (1.0 + y.abs()))
            };
            assert!(close(&y_cm, &y_b), "forward differs for {cfg:?}");
            assert_eq!(g_cm.len(), g_b.len());
            let worst = g_cm
                .iter()
                .zip(&g_b)
                .map(|(a, b)| (a - b).abs() / (1.0 + b.abs()))
                .fold(0.0, f64::max);
            assert!(worst < 1e-3, "gradients differ by {worst} for {cfg:?}");
        }
        assert_eq!(ConvPath::Auto.resolve::<B>(&d), ConvPath::ChannelMajor);
        assert_eq!(ConvPath::Burn.resolve::<B>(&d), ConvPath::Burn);
    }

    #[test]
    fn max_pool_matches_hand_values() {
        let d = Default::default();
        let x = Tensor::<B, 4>::from_floats(
            [[[[1.0, 2.0, 5.0], [3.0, 4.0, 6.0], [7.0, 8.0, 9.0]]]],
            &d,
        );
        let y = max_pool2x2(x);
        assert_eq!(y.dims(), [1, 1, 1, 1]);
        assert_eq!(y.into_data().iter::<f32>().next(), Some(4.0));
    }

    #[test]
    fn max_pool_matches_brute_force_on_odd_sizes() {
        let d = Default::default();
        let (n, c, h, w) = (2, 3, 7, 5);
        let v: Vec<f32> = (0..n * c * h * w)
            .map(|i| ((i * 37 % 101) as f32 - 50.0) / 7.0)
            .collect();
        let x = Tensor::<B, 4>::from_data(TensorData::new(v.clone(), [n, c, h, w]), &d);
        // Both paths: untracked (inference) and tracked (training, gather at the argmax).
        let untracked: Vec<f32> = max_pool2x2(x.clone()).into_data().iter::<f32>().collect();
        let reshaped: Vec<f32> = crate::layers::max_pool2x2_by_reshape(x.clone())
            .into_data()
            .iter::<f32>()
            .collect();
        assert_eq!(
            untracked, reshaped,
            "the reshape path (burn-candle) differs"
        );
        let xa =
            Tensor::<burn::backend::Autodiff<B>, 4>::from_data(x.into_data(), &d).require_grad();
        let y = max_pool2x2(xa);
        assert_eq!(y.dims(), [n, c, 3, 2]);
        let got: Vec<f32> = y.into_data().iter::<f32>().collect();
        assert_eq!(untracked, got);
        let mut want = Vec::new();
        for b in 0..n * c {
            for i in 0..3 {
                for j in 0..2 {
                    let at = |di: usize, dj: usize| v[b * h * w + (2 * i + di) * w + 2 * j + dj];
                    want.push(at(0, 0).max(at(0, 1)).max(at(1, 0)).max(at(1, 1)));
                }
            }
        }
        assert_eq!(got, want);
    }

    #[test]
    fn max_pool_gradient_goes_to_the_argmax() {
        use burn::backend::Autodiff;
        let d = Default::default();
        let x = Tensor::<Autodiff<B>, 4>::from_floats(
            [[[[1.0, 2.0, 5.0], [3.0, 4.0, 6.0], [7.0, 8.0, 9.0]]]],
            &d,
        )
        .require_grad();
        let want = vec![0.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 0.0];
        let by_kernel = max_pool2x2(x.clone()).sum().backward();
        let by_reshape = crate::layers::max_pool2x2_by_reshape(x.clone())
            .sum()
            .backward();
        for grads in [by_kernel, by_reshape] {
            let g: Vec<f32> = x
                .grad(&grads)
                .expect("grad")
                .into_data()
                .iter::<f32>()
                .collect();
            assert_eq!(g, want);
        }
    }
}
