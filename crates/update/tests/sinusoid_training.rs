//! Learners checked by learning curves: a short seeded sinusoid run must lower the
//! post-adaptation meta-test MSE well below its pre-training value, reproducibly.

#![allow(clippy::unwrap_used)]

use burn::backend::Autodiff;
use metalearn_core::backend::Cpu as B;
use metalearn_core::learner::MetaLearner;
use metalearn_core::{Error, SeedStream, TaskDistribution};
use metalearn_tasks::{Sinusoid, SinusoidConfig};
use metalearn_update::{BatchedMaml, Maml, MamlConfig};
use metalearn_zoo::{Mlp, MlpConfig};

fn post_adaptation_mse<L: MetaLearner<2>>(learner: &L, tasks: &Sinusoid) -> f64 {
    let n = 40;
    (0..n)
        .map(|i| {
            let ep = tasks.sample(SeedStream::new(999).child(i).seed()).unwrap();
            learner.adaptation_curve(&ep, 1).unwrap()[1].loss
        })
        .sum::<f64>()
        / n as f64
}

fn train(second_order: bool, iterations: usize) -> (Vec<f64>, f64, f64) {
    let device = Default::default();
    let model = MlpConfig::new(vec![1, 40, 40, 1])
        .init::<Autodiff<B>>(1, &device)
        .unwrap();
    let cfg = MamlConfig::new()
        .with_meta_batch_size(10)
        .with_outer_lr(3e-3)
        .with_second_order(second_order);
    let mut maml = BatchedMaml::new(cfg, model, device).unwrap();
    let tasks = Sinusoid::new(SinusoidConfig::new(10, 10)).unwrap();
    let before = post_adaptation_mse(&maml, &tasks);
    let hist = maml
        .meta_train(&tasks, iterations, SeedStream::new(5), &mut |_| true)
        .unwrap();
    let after = post_adaptation_mse(&maml, &tasks);
    (hist.iter().map(|s| s.meta_loss).collect(), before, after)
}

#[test]
fn maml_meta_training_lowers_post_adaptation_mse() {
    let (_, before, after) = train(true, 1500);
    eprintln!("MAML: post-adaptation MSE {before:.3} -> {after:.3}");
    assert!(before > 1.5, "untrained MSE unexpectedly low: {before}");
    assert!(after < 0.5 * before, "MSE {before} -> {after}");
}

#[test]
fn fomaml_meta_training_lowers_post_adaptation_mse() {
    let (_, before, after) = train(false, 1500);
    eprintln!("FOMAML: post-adaptation MSE {before:.3} -> {after:.3}");
    assert!(after < 0.5 * before, "MSE {before} -> {after}");
}

#[test]
fn same_seed_same_numbers() {
    let (a, _, ma) = train(true, 15);
    let (b, _, mb) = train(true, 15);
    assert_eq!(a, b);
    assert_eq!(ma, mb);
}

#[test]
fn per_task_path_trains_too_and_is_thread_count_independent() {
    let device = Default::default();
    let tasks = Sinusoid::new(SinusoidConfig::new(10, 10)).unwrap();
    let run = |threads: usize| {
        let model = MlpConfig::new(vec![1, 40, 40, 1])
            .init::<Autodiff<B>>(1, &device)
            .unwrap();
        let cfg = MamlConfig::new()
            .with_meta_batch_size(5)
            .with_threads(threads);
        let mut m: Maml<B, Mlp<Autodiff<B>>, 2> = Maml::new(cfg, model, device).unwrap();
        m.meta_train(&tasks, 5, SeedStream::new(3), &mut |_| true)
            .unwrap()
            .iter()
            .map(|s| s.meta_loss)
            .collect::<Vec<_>>()
    };
    assert_eq!(run(1), run(2));
}

#[test]
fn bad_configs_are_rejected_before_training() {
    let device = Default::default();
    let model = || {
        MlpConfig::new(vec![1, 4, 1])
            .init::<Autodiff<B>>(0, &device)
            .unwrap()
    };
    let bad = [
        (MamlConfig::new().with_inner_steps(0), "inner_steps"),
        (MamlConfig::new().with_inner_lr(-0.1), "inner_lr"),
        (MamlConfig::new().with_outer_lr(f64::NAN), "outer_lr"),
        (MamlConfig::new().with_meta_batch_size(0), "meta_batch_size"),
    ];
    for (cfg, name) in bad {
        let r = Maml::<B, Mlp<Autodiff<B>>, 2>::new(cfg, model(), device);
        match r {
            Err(metalearn_update::Error::Core(Error::InvalidConfig { field, .. })) => {
                assert_eq!(field, name)
            }
            other => panic!("expected InvalidConfig({name}), got {other:?}"),
        }
    }
    // first order with zero inner steps is allowed (it is joint training on the query set)
    assert!(Maml::<B, Mlp<Autodiff<B>>, 2>::new(
        MamlConfig::new()
            .with_inner_steps(0)
            .with_second_order(false),
        model(),
        device
    )
    .is_ok());
    // K = 0 and N = 0 are rejected by the task samplers
    assert!(Sinusoid::new(SinusoidConfig::new(0, 5)).is_err());
}

#[test]
fn diverging_loss_is_a_typed_error_and_keeps_parameters() {
    let device = Default::default();
    let model = MlpConfig::new(vec![1, 40, 40, 1])
        .init::<Autodiff<B>>(0, &device)
        .unwrap();
    let mut maml =
        BatchedMaml::new(MamlConfig::new().with_meta_batch_size(2), model, device).unwrap();
    let tasks = Sinusoid::new(SinusoidConfig::new(5, 5)).unwrap();
    let mut eps: Vec<_> = (0..2).map(|s| tasks.sample(s).unwrap()).collect();
    eps[0].query.targets[0] = f32::NAN;
    let before = metalearn_core::params::to_vec(maml.model());
    let r = maml.meta_step(&eps);
    assert!(matches!(r, Err(Error::Diverged { .. })), "{r:?}");
    assert_eq!(before, metalearn_core::params::to_vec(maml.model()));
}
