//! Fully connected ReLU network.

use crate::layers::Dense;
use burn::config::Config;
use burn::module::Module;
use burn::tensor::{activation::relu, backend::Backend, Tensor};
use metalearn_core::error::Error;
use metalearn_core::model::{EmbeddingModule, MetaModule, TaskBatchedModule};
use metalearn_core::seed::rng;

/// MLP configuration.
///
/// | field | default | meaning | valid |
/// |---|---|---|---|
/// | `widths` | — | layer widths, input first, output last (sinusoid: `[1, 40, 40, 1]`) | ≥ 2 entries, all ≥ 1 |
#[derive(Config, Debug)]
pub struct MlpConfig {
    /// Layer widths, input first, output last.
    pub widths: Vec<usize>,
}

impl MlpConfig {
    /// Check the widths.
    pub fn validate(&self) -> metalearn_core::Result<()> {
        if self.widths.len() < 2 {
            return Err(Error::config("widths", "needs at least input and output"));
        }
        if self.widths.contains(&0) {
            return Err(Error::config("widths", "every width must be ≥ 1"));
        }
        Ok(())
    }

    /// Build the network with weights drawn from `seed`.
    pub fn init<B: Backend>(
        &self,
        seed: u64,
        device: &B::Device,
    ) -> metalearn_core::Result<Mlp<B>> {
        self.validate()?;
        let mut r = rng(seed);
        let layers = self
            .widths
            .windows(2)
            .map(|w| Dense::new(&mut r, w[0], w[1], device))
            .collect();
        Ok(Mlp { layers })
    }
}

/// Fully connected network with ReLU between layers and a linear output.
#[derive(Module, Debug)]
pub struct Mlp<B: Backend> {
    /// The layers, input first.
    pub layers: Vec<Dense<B>>,
}

impl<B: Backend> Mlp<B> {
    /// Hidden representation after layer `upto` (1-based; `upto = len` gives the output).
    pub fn features(&self, x: Tensor<B, 2>, upto: usize) -> Tensor<B, 2> {
        let last = self.layers.len() - 1;
        let mut h = x;
        for (i, layer) in self.layers.iter().enumerate().take(upto) {
            h = layer.forward(h);
            if i < last {
                h = relu(h);
            }
        }
        h
    }
}

impl<B: Backend> Mlp<B> {
    /// Check that examples of shape `example` fit the input layer.
    fn check_input(&self, example: &[usize]) -> metalearn_core::Result<()> {
        let d_in = self.layers.first().map_or(0, |l| l.weight.dims()[0]);
        if example != [d_in] {
            return Err(Error::ShapeMismatch(format!(
                "the MLP takes {d_in} input features but the episode's examples have shape \
                 {example:?}"
            )));
        }
        Ok(())
    }
}

impl<B: Backend> MetaModule<B, 2> for Mlp<B> {
    fn forward(&self, x: Tensor<B, 2>) -> Tensor<B, 2> {
        self.features(x, self.layers.len())
    }

    fn output_width(&self, example: &[usize]) -> metalearn_core::Result<Option<usize>> {
        self.check_input(example)?;
        Ok(self.layers.last().map(|l| l.weight.dims()[1]))
    }
}

impl<B: Backend> EmbeddingModule<B, 2> for Mlp<B> {
    /// The last hidden layer's activations (everything but the output layer).
    fn embed(&self, x: Tensor<B, 2>) -> Tensor<B, 2> {
        self.features(x, self.layers.len() - 1)
    }

    fn check_embed_input(&self, example: &[usize]) -> metalearn_core::Result<()> {
        self.check_input(example)
    }
}

impl<B: Backend> TaskBatchedModule<B> for Mlp<B> {
    fn forward_tasks(&self, params: &[Tensor<B, 2>], x: Tensor<B, 3>, _: &[usize]) -> Tensor<B, 3> {
        let [t, n, _] = x.dims();
        let last = self.layers.len() - 1;
        let mut h = x;
        for (i, layer) in self.layers.iter().enumerate() {
            let [d_in, d_out] = layer.weight.dims();
            let w = params[2 * i].clone().reshape([t, d_in, d_out]);
            let b = params[2 * i + 1]
                .clone()
                .reshape([t, 1, d_out])
                .repeat_dim(1, n);
            h = h.matmul(w) + b;
            if i < last {
                h = relu(h);
            }
        }
        h
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use metalearn_core::backend::NdArrayCpu as B;
    use metalearn_core::params;

    #[test]
    fn batched_forward_equals_per_task_forward() {
        let d = Default::default();
        let cfg = MlpConfig::new(vec![1, 8, 8, 2]);
        let models: Vec<Mlp<B>> = (0..3).map(|s| cfg.init(s, &d).unwrap()).collect();
        let x = Tensor::<B, 3>::random([3, 5, 1], burn::tensor::Distribution::Default, &d);
        let per: Vec<_> = params::tensors(&models[0])
            .iter()
            .enumerate()
            .map(|(i, _)| {
                let rows: Vec<_> = models
                    .iter()
                    .map(|m| params::tensors(m)[i].1.clone().unsqueeze::<2>())
                    .collect();
                Tensor::cat(rows, 0)
            })
            .collect();
        let yb = models[0].forward_tasks(&per, x.clone(), &[1]);
        for (t, m) in models.iter().enumerate() {
            let xt = x.clone().slice([t..t + 1, 0..5, 0..1]).reshape([5, 1]);
            let y = m.forward(xt);
            let ybt = yb.clone().slice([t..t + 1, 0..5, 0..2]).reshape([5, 2]);
            let diff: f64 = metalearn_core::loss::scalar((y - ybt).abs().max().reshape([1]));
            assert!(diff < 1e-5, "task {t}: {diff}");
        }
    }

    #[test]
    fn same_seed_same_weights_and_bad_widths_rejected() {
        let d = Default::default();
        let a = MlpConfig::new(vec![1, 40, 40, 1]).init::<B>(3, &d).unwrap();
        let b = MlpConfig::new(vec![1, 40, 40, 1]).init::<B>(3, &d).unwrap();
        assert_eq!(params::to_vec(&a), params::to_vec(&b));
        assert_eq!(params::count(&a), 2 * 40 + 40 * 41 + 41);
        assert!(MlpConfig::new(vec![1]).init::<B>(0, &d).is_err());
        assert!(MlpConfig::new(vec![1, 0, 1]).init::<B>(0, &d).is_err());
    }
}
