//! The whole Omniglot pipeline with a model of your own, as a program outside our crates would
//! write it: load the official zips, split the characters (Vinyals et al.), draw 5-way 1-shot
//! episodes, meta-train exact second-order MAML on a user-defined conv net, and meta-test it on
//! held-out characters with a 95% confidence interval — before and after meta-training.
//!
//! ```text
//! METALEARN_DATA=/path/to/data cargo run --release -p metalearn --example omniglot_own_model -- [ITERATIONS]
//! ```
//!
//! `METALEARN_DATA` names a folder holding `omniglot/images_background.zip` and
//! `omniglot/images_evaluation.zip` (the official zips; `cargo xtask bench --download` fetches
//! them). The first run decodes them into a cache (`METALEARN_CACHE`, else next to the data).
//! 200 iterations take a few minutes on 2 cores and lift held-out 5-way 1-shot accuracy from
//! chance to well above it; the papers train for 60,000.

use burn::backend::Autodiff;
use burn::prelude::*;
use burn::tensor::activation::relu;
use metalearn::core::{backend::Cpu, seed::rng, Error, MetaLearner, MetaModule, SeedStream};
use metalearn::eval::meta_test_final;
use metalearn::tasks::{NWayKShot, NWayKShotConfig, Omniglot, OmniglotConfig, OmniglotSplit};
use metalearn::update::{Maml, MamlConfig};
use metalearn::zoo::{max_pool2x2, BatchNorm2d, Conv2d, Dense};
use std::sync::Arc;

/// The user's model: three conv blocks (conv → batch norm → 2×2 max-pool → ReLU), a global
/// average pool and a linear head. Built only from layers that can be differentiated twice
/// (`metalearn::zoo`'s `Conv2d`, `BatchNorm2d`, `max_pool2x2`, `Dense`; burn 0.21's
/// `nn::Linear::forward` and `MaxPool2d` cannot), with its parameters initialised eagerly, so
/// clones share their weights.
#[derive(Module, Debug)]
struct SmallConvNet<B: Backend> {
    convs: Vec<Conv2d<B>>,
    norms: Vec<BatchNorm2d<B>>,
    head: Dense<B>,
}

impl<B: Backend> SmallConvNet<B> {
    fn new(ways: usize, filters: usize, seed: u64, device: &B::Device) -> Self {
        let mut r = rng(seed);
        let convs = (0..3)
            .map(|b| Conv2d::new(&mut r, if b == 0 { 1 } else { filters }, filters, 3, device))
            .collect();
        let norms = (0..3).map(|_| BatchNorm2d::new(filters, device)).collect();
        let head = Dense::new(&mut r, filters, ways, device);
        Self { convs, norms, head }
    }
}

/// The one trait a model implements to work with every learner, for every backend (so also on
/// `Autodiff<Autodiff<B>>`, which exact second order needs).
impl<B: Backend> MetaModule<B, 4> for SmallConvNet<B> {
    fn forward(&self, x: Tensor<B, 4>) -> Tensor<B, 2> {
        let mut h = x;
        for (conv, norm) in self.convs.iter().zip(&self.norms) {
            h = relu(max_pool2x2(norm.forward(conv.forward(h))));
        }
        let [n, c, height, width] = h.dims();
        let pooled = h
            .reshape([n, c, height * width])
            .mean_dim(2)
            .reshape([n, c]);
        self.head.forward(pooled)
    }

    /// Optional: lets every learner refuse an episode of the wrong shape with a typed error
    /// before the first burn op.
    fn output_width(&self, example: &[usize]) -> metalearn::core::Result<Option<usize>> {
        match example {
            [1, h, w] if *h >= 8 && *w >= 8 => Ok(Some(self.head.bias.dims()[0])),
            _ => Err(Error::ShapeMismatch(format!(
                "SmallConvNet takes [1, H, W] images with H, W ≥ 8, got {example:?}"
            ))),
        }
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let iterations: usize = match std::env::args().nth(1) {
        Some(s) => s
            .parse()
            .map_err(|e| format!("ITERATIONS must be a number, got {s:?}: {e}"))?,
        None => 200,
    };

    // Data: the official zips → characters → (train, validation, test) classes, rotations as
    // extra classes → episodes (5 queries per class to train, 15 to test, as the papers do).
    let omniglot = Arc::new(Omniglot::load(None, &OmniglotConfig::new())?);
    let [train, _validation, test] = omniglot.split(OmniglotSplit::Vinyals, true);
    let train_tasks = NWayKShot::new(train, NWayKShotConfig::new(5, 1, 5))?;
    let test_tasks = NWayKShot::new(test, NWayKShotConfig::new(5, 1, 15))?;

    // Learner: MAML, exact second order, Finn et al.'s 5-way step size (α = 0.4, one inner step
    // in training, three at test), four tasks per meta-update.
    let device = Default::default();
    let model = SmallConvNet::<Autodiff<Cpu>>::new(5, 32, 0, &device);
    let config = MamlConfig::new()
        .with_inner_lr(0.4)
        .with_inner_steps(1)
        .with_meta_batch_size(4);
    let mut maml = Maml::new(config, model, device)?;

    let accuracy = |maml: &Maml<Cpu, SmallConvNet<Autodiff<Cpu>>, 4>| {
        let curve = meta_test_final(maml, &test_tasks, 100, 3, SeedStream::new(7))?;
        let acc = curve.points[0]
            .accuracy
            .ok_or("classification episodes give an accuracy")?;
        Ok::<_, Box<dyn std::error::Error>>(format!(
            "{:.1} ± {:.1}%",
            100.0 * acc.mean,
            100.0 * acc.ci95
        ))
    };
    println!(
        "held-out 5-way 1-shot accuracy before meta-training: {}",
        accuracy(&maml)?
    );

    maml.meta_train(&train_tasks, iterations, SeedStream::new(0), &mut |step| {
        if step.done % 20 == 0 || step.done == step.total {
            eprintln!(
                "iteration {:>5}/{}: query loss {:.3}, accuracy {:.0}%, {:.2} it/s, {:.0} s left",
                step.done,
                step.total,
                step.meta_loss,
                100.0 * step.meta_accuracy.unwrap_or(f64::NAN),
                step.iterations_per_second(),
                step.eta_seconds().unwrap_or(f64::NAN),
            );
        }
        true
    })?;
    println!(
        "held-out 5-way 1-shot accuracy after {iterations} meta-iterations: {}",
        accuracy(&maml)?
    );
    Ok(())
}
