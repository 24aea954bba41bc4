//! Conv4: the standard few-shot backbone.

use crate::layers::{max_pool2x2, BatchNorm2d, Conv2d, Dense};
use burn::config::Config;
use burn::module::Module;
use burn::tensor::{activation::relu, backend::Backend, Tensor};
use metalearn_core::error::{ensure_nonzero, Error};
use metalearn_core::model::{EmbeddingModule, MetaModule};
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
            norms.push(BatchNorm2d::new(self.filters, device));
        }
        let head = Dense::new(&mut r, self.embedding_dim(), self.ways, device);
        Ok(Conv4 { convs, norms, head })
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
}

/// conv → batch norm → 2×2 max-pool → ReLU. ReLU is monotone, so it commutes with max-pooling:
/// the same function as the usual conv → BN → ReLU → pool, with ReLU on a 4× smaller tensor.
fn block<B: Backend>(conv: &Conv2d<B>, norm: &BatchNorm2d<B>, h: Tensor<B, 4>) -> Tensor<B, 4> {
    relu(max_pool2x2(norm.forward(conv.forward(h))))
}

impl<B: Backend> Conv4<B> {
    /// The flattened embedding `[n, embedding_dim]` (body output).
    pub fn embed(&self, x: Tensor<B, 4>) -> Tensor<B, 2> {
        let mut h = x;
        for (conv, norm) in self.convs.iter().zip(&self.norms) {
            h = block(conv, norm, h);
        }
        let n = h.dims()[0];
        h.reshape([n as i32, -1])
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
        let mut out = Vec::with_capacity(self.convs.len() + 1);
        let mut h = x;
        for (conv, norm) in self.convs.iter().zip(&self.norms) {
            h = block(conv, norm, h);
            let n = h.dims()[0];
            out.push(h.clone().reshape([n as i32, -1]));
        }
        let n = h.dims()[0];
        out.push(self.head.forward(h.reshape([n as i32, -1])));
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
        let grads = max_pool2x2(x.clone()).sum().backward();
        let g: Vec<f32> = x
            .grad(&grads)
            .expect("grad")
            .into_data()
            .iter::<f32>()
            .collect();
        assert_eq!(g, vec![0.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 0.0]);
    }
}
