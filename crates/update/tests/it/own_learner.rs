//! Writing a learner outside this crate with the public building blocks of
//! `metalearn_update::inner` and `metalearn_update::outer`, as a user would:
//!
//! - `MyMaml`: MAML rebuilt from `Outer` + `meta_batch_gradient` + `InnerAdapt` +
//!   `adaptation_methods!`; its parameters after seeded meta-steps, and its adaptation curves,
//!   equal `Maml`'s bit for bit, so the public pieces are the ones our learners run.
//! - `DecayingFomaml`: a learner of its own (first-order MAML whose inner step size decays as
//!   `α / (1 + k)` at inner step `k`, a custom `InnerUpdate`), checked by its learning curve.

#![allow(clippy::unwrap_used)] // test helpers fail loudly

use burn::backend::Autodiff;
use burn::optim::GradientsParams;
use burn::tensor::backend::Backend;
use burn::tensor::Tensor;
use metalearn_core::backend::Cpu as B;
use metalearn_core::episode::EpisodeData;
use metalearn_core::learner::{MetaLearner, StepStats};
use metalearn_core::loss::{scalar, task_loss};
use metalearn_core::model::MetaTrainable;
use metalearn_core::{params, SeedStream, TaskDistribution, TaskPool};
use metalearn_tasks::{Sinusoid, SinusoidConfig};
use metalearn_update::inner::{
    adapt, combine, meta_batch_gradient, InnerAdapt, InnerUpdate, Sizes, TaskGradient,
};
use metalearn_update::{Maml, MamlConfig, Outer};
use metalearn_zoo::{Mlp, MlpConfig};

/// MAML from the public pieces: θ and its Adam in an `Outer`, the meta-gradient from
/// `meta_batch_gradient`, test-time adaptation from `InnerAdapt` + `adaptation_methods!`.
struct MyMaml<B: Backend, M: MetaTrainable<B, D>, const D: usize> {
    outer: Outer<B, M>,
    inner_lr: f64,
    inner_steps: usize,
    outer_lr: f64,
    meta_batch: usize,
    pool: TaskPool,
    device: B::Device,
}

impl<B: Backend, M: MetaTrainable<B, D>, const D: usize> InnerAdapt<B, M, D> for MyMaml<B, M, D> {
    type Rule = Sizes<Tensor<B, 1>>;

    fn start(&self) -> M::InnerModule {
        self.outer.model().valid()
    }

    fn inner_rule(&self) -> Self::Rule {
        Sizes::Uniform(self.inner_lr)
    }

    fn transductive(&self) -> bool {
        true
    }

    fn device(&self) -> &B::Device {
        &self.device
    }
}

impl<B: Backend, M: MetaTrainable<B, D>, const D: usize> MetaLearner<D> for MyMaml<B, M, D> {
    type Adapted = M::InnerModule;

    fn meta_step(&mut self, episodes: &[EpisodeData]) -> metalearn_core::Result<StepStats> {
        let g = meta_batch_gradient::<B, M, D>(
            &self.pool,
            self.outer.model(),
            None,
            &self.inner_rule(),
            episodes,
            (self.inner_steps, true),
            &self.device,
        )?;
        self.outer.step(self.outer_lr, g.theta, g.loss, g.accuracy)
    }

    fn meta_batch_size(&self) -> usize {
        self.meta_batch
    }

    metalearn_update::adaptation_methods!(B, M, D);
}

fn mlp() -> Mlp<Autodiff<B>> {
    MlpConfig::new(vec![1, 16, 16, 1])
        .init::<Autodiff<B>>(3, &Default::default())
        .unwrap()
}

fn sinusoid() -> Sinusoid {
    Sinusoid::new(SinusoidConfig::new(5, 10)).unwrap()
}

#[test]
fn maml_written_outside_the_crate_equals_maml() {
    let (inner_lr, inner_steps, outer_lr, meta_batch) = (0.02, 2, 3e-3, 3);
    let config = MamlConfig::new()
        .with_inner_lr(inner_lr)
        .with_inner_steps(inner_steps)
        .with_outer_lr(outer_lr)
        .with_meta_batch_size(meta_batch);
    let mut ours = Maml::new(config, mlp(), Default::default()).unwrap();
    let mut mine = MyMaml::<B, _, 2> {
        outer: Outer::new(mlp()),
        inner_lr,
        inner_steps,
        outer_lr,
        meta_batch,
        pool: TaskPool::new(0),
        device: Default::default(),
    };
    let tasks = sinusoid();
    let a = ours
        .meta_train(&tasks, 4, SeedStream::new(8), &mut |_| true)
        .unwrap();
    let b = mine
        .meta_train(&tasks, 4, SeedStream::new(8), &mut |_| true)
        .unwrap();
    let losses =
        |h: &[metalearn_core::TrainStep]| -> Vec<f64> { h.iter().map(|s| s.meta_loss).collect() };
    assert_eq!(losses(&a), losses(&b), "meta-losses differ");
    assert_ne!(
        params::to_vec(&mlp()),
        params::to_vec(ours.model()),
        "training changed nothing"
    );
    assert_eq!(
        params::to_vec(ours.model()),
        params::to_vec(mine.outer.model()),
        "parameters after 4 meta-steps differ"
    );
    let ep = tasks.sample(77).unwrap();
    let (ca, cb) = (
        ours.adaptation_curve(&ep, 3).unwrap(),
        mine.adaptation_curve(&ep, 3).unwrap(),
    );
    assert_eq!(
        format!("{ca:?}"),
        format!("{cb:?}"),
        "adaptation curves differ"
    );
    assert_eq!(
        ours.predict(&ep, 2).unwrap(),
        mine.predict(&ep, 2).unwrap(),
        "predictions differ"
    );
}

/// Inner SGD whose step size at inner step `k` (0-based) is `lr / (1 + k)`.
struct Decaying {
    lr: f64,
    step: usize,
    started: bool,
}

impl<B: Backend> InnerUpdate<B> for Decaying {
    fn update(&mut self, i: usize, t: Tensor<B, 1>, g: Option<Tensor<B, 1>>) -> Tensor<B, 1> {
        // Tensor 0 opens every step (the rule sees each tensor once per step, in order).
        if i == 0 {
            if self.started {
                self.step += 1;
            }
            self.started = true;
        }
        match g {
            Some(g) => t - g.mul_scalar(self.lr / (1 + self.step) as f64),
            None => t,
        }
    }
}

/// First-order MAML with the decaying inner rule: adapt on values with `adapt`, take the query
/// gradient at φ_K, average with `combine`, step with `Outer`.
struct DecayingFomaml<B: Backend, M: MetaTrainable<B, D>, const D: usize> {
    outer: Outer<B, M>,
    inner_lr: f64,
    device: B::Device,
}

impl<B: Backend, M: MetaTrainable<B, D>, const D: usize> InnerAdapt<B, M, D>
    for DecayingFomaml<B, M, D>
{
    type Rule = Decaying;

    fn start(&self) -> M::InnerModule {
        self.outer.model().valid()
    }

    fn inner_rule(&self) -> Decaying {
        Decaying {
            lr: self.inner_lr,
            step: 0,
            started: false,
        }
    }

    fn transductive(&self) -> bool {
        true
    }

    fn device(&self) -> &B::Device {
        &self.device
    }
}

impl<B: Backend, M: MetaTrainable<B, D>, const D: usize> MetaLearner<D>
    for DecayingFomaml<B, M, D>
{
    type Adapted = M::InnerModule;

    fn meta_step(&mut self, episodes: &[EpisodeData]) -> metalearn_core::Result<StepStats> {
        let parts = episodes
            .iter()
            .map(|ep| {
                let phi = adapt::<B, M, D>(self.start(), ep, 3, self.inner_rule(), &self.device)?;
                let leaf: M = params::require_grad(M::from_inner(phi));
                let q = ep.query.to_batch::<Autodiff<B>, D>(&self.device)?;
                let loss = task_loss(ep.kind, leaf.forward(q.inputs), q.targets)?;
                let value = scalar(loss.clone().inner());
                let mut grads = metalearn_core::parallel::backward(loss)?;
                Ok(TaskGradient {
                    theta: GradientsParams::from_module(&mut grads, &leaf),
                    sizes: None,
                    loss: value,
                    accuracy: None,
                })
            })
            .collect();
        let g = combine::<B, M>(self.outer.model(), None, parts)?;
        self.outer.step(3e-3, g.theta, g.loss, g.accuracy)
    }

    fn meta_batch_size(&self) -> usize {
        10
    }

    metalearn_update::adaptation_methods!(B, M, D);
}

#[test]
fn a_learner_of_its_own_learns() {
    let tasks = sinusoid();
    let model = MlpConfig::new(vec![1, 40, 40, 1])
        .init::<Autodiff<B>>(3, &Default::default())
        .unwrap();
    let mut learner = DecayingFomaml::<B, _, 2> {
        outer: Outer::new(model),
        inner_lr: 0.02,
        device: Default::default(),
    };
    let mse = |l: &DecayingFomaml<B, Mlp<Autodiff<B>>, 2>| -> f64 {
        (0..20)
            .map(|i| {
                let ep = tasks.sample(SeedStream::new(500).child(i).seed()).unwrap();
                l.evaluate(&ep, 3).unwrap().loss
            })
            .sum::<f64>()
            / 20.0
    };
    let before = mse(&learner);
    learner
        .meta_train(&tasks, 1500, SeedStream::new(2), &mut |_| true)
        .unwrap();
    let after = mse(&learner);
    eprintln!("decaying FOMAML: post-adaptation MSE {before:.3} -> {after:.3}");
    assert_eq!(learner.outer.iterations(), 1500);
    assert!(after < 0.5 * before, "MSE {before} -> {after}");
    // The custom rule is what adaptation runs: 3 decaying steps differ from 3 plain ones.
    let ep = tasks.sample(1).unwrap();
    let plain = adapt::<B, Mlp<Autodiff<B>>, 2>(
        learner.start(),
        &ep,
        3,
        Sizes::<Tensor<B, 1>>::Uniform(0.02),
        &Default::default(),
    )
    .unwrap();
    assert_ne!(
        params::to_vec(&plain),
        params::to_vec(&learner.adapt(&ep, 3).unwrap())
    );
}
