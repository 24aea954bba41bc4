//! Learners checked by learning curves: a short seeded sinusoid run must lower the
//! post-adaptation meta-test MSE well below its pre-training value, reproducibly.

#![allow(clippy::unwrap_used)]

use burn::backend::Autodiff;
use metalearn_core::backend::Cpu as B;
use metalearn_core::learner::MetaLearner;
use metalearn_core::{Error, SeedStream, TaskDistribution};
use metalearn_tasks::{Sinusoid, SinusoidConfig};
use metalearn_update::{BatchedMaml, Maml, MamlConfig, Reptile, ReptileConfig};
use metalearn_zoo::{Mlp, MlpConfig};

fn post_adaptation_mse<L: MetaLearner<2>>(learner: &L, tasks: &Sinusoid, steps: usize) -> f64 {
    let n = 40;
    (0..n)
        .map(|i| {
            let ep = tasks.sample(SeedStream::new(999).child(i).seed()).unwrap();
            learner.adaptation_curve(&ep, steps).unwrap()[steps].loss
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
    let before = post_adaptation_mse(&maml, &tasks, 1);
    let hist = maml
        .meta_train(&tasks, iterations, SeedStream::new(5), &mut |_| true)
        .unwrap();
    let after = post_adaptation_mse(&maml, &tasks, 1);
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
    let run = |threads: usize, iterations: usize| {
        let model = MlpConfig::new(vec![1, 40, 40, 1])
            .init::<Autodiff<B>>(1, &device)
            .unwrap();
        let cfg = MamlConfig::new()
            .with_meta_batch_size(5)
            .with_outer_lr(3e-3)
            .with_threads(threads);
        let mut m: Maml<B, Mlp<Autodiff<B>>, 2> = Maml::new(cfg, model, device).unwrap();
        let before = post_adaptation_mse(&m, &tasks, 1);
        let losses = m
            .meta_train(&tasks, iterations, SeedStream::new(3), &mut |_| true)
            .unwrap()
            .iter()
            .map(|s| s.meta_loss)
            .collect::<Vec<_>>();
        (losses, before, post_adaptation_mse(&m, &tasks, 1))
    };
    assert_eq!(run(1, 5), run(2, 5));
    // And it trains: the held-out post-adaptation MSE falls well below its start.
    let (_, before, after) = run(2, 300);
    eprintln!("MAML (per-task path): post-adaptation MSE {before:.3} -> {after:.3}");
    assert!(after < 0.7 * before, "MSE {before} -> {after}");
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

#[test]
fn reptile_with_inner_adam_lowers_post_adaptation_mse() {
    let device = Default::default();
    let model = MlpConfig::new(vec![1, 40, 40, 1])
        .init::<Autodiff<B>>(1, &device)
        .unwrap();
    let cfg = ReptileConfig::new()
        .with_inner_adam(true)
        .with_inner_lr(0.01)
        .with_inner_steps(5)
        .with_meta_batch_size(5);
    let mut reptile: Reptile<B, Mlp<Autodiff<B>>, 2> = Reptile::new(cfg, model, device).unwrap();
    let tasks = Sinusoid::new(SinusoidConfig::new(10, 10)).unwrap();
    let mse = |r: &Reptile<B, Mlp<Autodiff<B>>, 2>| post_adaptation_mse(r, &tasks, 10);
    let before = mse(&reptile);
    reptile
        .meta_train(&tasks, 400, SeedStream::new(2), &mut |_| true)
        .unwrap();
    let after = mse(&reptile);
    eprintln!("Reptile (inner Adam): MSE after 10 steps {before:.3} -> {after:.3}");
    assert!(after < 0.6 * before, "MSE {before} -> {after}");
}

/// `carry_adam`: one inner Adam through the run, as Nichol et al.'s implementation — the tasks
/// of a meta-batch continue each other's moments, test-time adaptation starts from them and
/// leaves them unchanged, and training still lowers the post-adaptation error.
#[test]
fn reptile_carries_its_inner_adam_from_task_to_task() {
    let device = Default::default();
    let make = |carry: bool| {
        let model = MlpConfig::new(vec![1, 40, 40, 1])
            .init::<Autodiff<B>>(1, &device)
            .unwrap();
        let cfg = ReptileConfig::new()
            .with_inner_adam(true)
            .with_inner_lr(0.01)
            .with_inner_steps(5)
            .with_meta_batch_size(5)
            .with_carry_adam(carry);
        Reptile::<B, Mlp<Autodiff<B>>, 2>::new(cfg, model, device).unwrap()
    };
    let tasks = Sinusoid::new(SinusoidConfig::new(10, 10)).unwrap();
    let batch: Vec<_> = (0..5).map(|s| tasks.sample(s).unwrap()).collect();
    let (mut carried, mut fresh) = (make(true), make(false));
    assert!(fresh.carried_adam().is_none());
    assert_eq!(carried.carried_adam().unwrap().steps(0), 0);
    carried.meta_step(&batch).unwrap();
    fresh.meta_step(&batch).unwrap();
    // 5 tasks × 5 steps on one Adam.
    assert_eq!(carried.carried_adam().unwrap().steps(0), 25);
    assert_ne!(
        metalearn_core::params::to_vec(carried.model()),
        metalearn_core::params::to_vec(fresh.model()),
        "carried moments change the inner steps"
    );
    let ep = tasks.sample(99).unwrap();
    let curve = carried.adaptation_curve(&ep, 5).unwrap();
    assert_eq!(curve, carried.adaptation_curve(&ep, 5).unwrap());
    assert_eq!(
        carried.carried_adam().unwrap().steps(0),
        25,
        "test time changes nothing"
    );
    let mse = |r: &Reptile<B, Mlp<Autodiff<B>>, 2>| post_adaptation_mse(r, &tasks, 10);
    let before = mse(&carried);
    carried
        .meta_train(&tasks, 400, SeedStream::new(2), &mut |_| true)
        .unwrap();
    let after = mse(&carried);
    eprintln!("Reptile (carried inner Adam): MSE after 10 steps {before:.3} -> {after:.3}");
    assert!(after < 0.6 * before, "MSE {before} -> {after}");
    // Without an inner Adam there is nothing to carry.
    let model = MlpConfig::new(vec![1, 4, 1])
        .init::<Autodiff<B>>(0, &device)
        .unwrap();
    match Reptile::<B, Mlp<Autodiff<B>>, 2>::new(
        ReptileConfig::new().with_carry_adam(true),
        model,
        device,
    ) {
        Err(metalearn_update::Error::Core(Error::InvalidConfig { field, .. })) => {
            assert_eq!(field, "carry_adam")
        }
        other => panic!("expected InvalidConfig(carry_adam), got {other:?}"),
    }
}

/// `eval_batch`: each test-time step sees `eval_batch` support examples (Nichol et al.'s
/// evaluation), passes over the support set without replacement, and a batch as large as the
/// support set is the full-batch adaptation.
#[test]
fn reptile_adapts_on_support_minibatches_at_test_time() {
    let device = Default::default();
    let make = |eval_batch: usize| {
        let model = MlpConfig::new(vec![1, 40, 40, 1])
            .init::<Autodiff<B>>(1, &device)
            .unwrap();
        let cfg = ReptileConfig::new()
            .with_inner_lr(0.02)
            .with_eval_batch(eval_batch);
        Reptile::<B, Mlp<Autodiff<B>>, 2>::new(cfg, model, device).unwrap()
    };
    let tasks = Sinusoid::new(SinusoidConfig::new(10, 10)).unwrap();
    let ep = tasks.sample(7).unwrap();
    let (full, whole, batched) = (make(0), make(10), make(4));
    let curve = full.adaptation_curve(&ep, 5).unwrap();
    assert_eq!(
        whole.adaptation_curve(&ep, 5).unwrap(),
        curve,
        "a batch of all 10"
    );
    let mini = batched.adaptation_curve(&ep, 5).unwrap();
    assert_eq!(mini, batched.adaptation_curve(&ep, 5).unwrap(), "seeded");
    assert_eq!(mini[0], curve[0], "no step taken");
    assert_ne!(mini[5], curve[5]);
    assert_eq!(batched.evaluate(&ep, 5).unwrap(), mini[5]);
    assert_eq!(
        batched.predict(&ep, 3).unwrap(),
        batched.predict(&ep, 3).unwrap()
    );
    // Which support examples a `steps`-step adaptation depends on: move one target at a time.
    let used = |steps: usize| {
        let base = batched.predict(&ep, steps).unwrap();
        (0..ep.support.len())
            .filter(|&i| {
                let mut moved = ep.clone();
                moved.support.targets[i] += 1.0;
                batched.predict(&moved, steps).unwrap() != base
            })
            .count()
    };
    assert_eq!(used(1), 4, "one step sees one minibatch");
    assert_eq!(
        used(2),
        8,
        "two minibatches of one pass: 8 different examples"
    );
    assert_eq!(used(3), 10, "the pass ends and the next one begins");
}

#[test]
fn adam_betas_are_validated() {
    let device = Default::default();
    for (cfg, name) in [
        (ReptileConfig::new().with_adam_beta1(1.0), "adam_beta1"),
        (ReptileConfig::new().with_adam_beta2(-0.1), "adam_beta2"),
    ] {
        let model = MlpConfig::new(vec![1, 4, 1])
            .init::<Autodiff<B>>(0, &device)
            .unwrap();
        match Reptile::<B, Mlp<Autodiff<B>>, 2>::new(cfg, model, device) {
            Err(metalearn_update::Error::Core(Error::InvalidConfig { field, .. })) => {
                assert_eq!(field, name)
            }
            other => panic!("expected InvalidConfig({name}), got {other:?}"),
        }
    }
}

/// Without batch norm the two evaluation protocols give the same numbers; with it they differ
/// (and non-transductive evaluation does not depend on the other query examples).
#[test]
fn non_transductive_evaluation_isolates_query_examples() {
    use metalearn_core::episode::{EpisodeData, HostBatch, TaskKind};
    use metalearn_zoo::{Conv4, Conv4Config};
    let device = Default::default();
    let mlp = || {
        MlpConfig::new(vec![1, 16, 1])
            .init::<Autodiff<B>>(0, &device)
            .unwrap()
    };
    let tasks = Sinusoid::new(SinusoidConfig::new(5, 7)).unwrap();
    let ep = tasks.sample(4).unwrap();
    let curve = |transductive: bool| {
        let m: Maml<B, Mlp<Autodiff<B>>, 2> = Maml::new(
            MamlConfig::new().with_transductive(transductive),
            mlp(),
            device,
        )
        .unwrap();
        m.adaptation_curve(&ep, 2).unwrap()
    };
    let (t, n) = (curve(true), curve(false));
    for (a, b) in t.iter().zip(&n) {
        assert!(
            (a.loss - b.loss).abs() < 1e-5 * a.loss.max(1.0),
            "{t:?} vs {n:?}"
        );
    }

    // A Conv4 (batch norm) on a 2-way episode of random images.
    let conv = || {
        Conv4Config::new(2)
            .with_filters(4)
            .with_input_size(8)
            .with_blocks(2)
            .init::<Autodiff<B>>(0, &device)
            .unwrap()
    };
    let mut rng = metalearn_core::SeedStream::new(1).rng();
    let images = |n: usize, rng: &mut metalearn_core::seed::Rng| -> Vec<f32> {
        use rand::Rng;
        (0..n * 64).map(|_| rng.random::<f32>()).collect()
    };
    let support =
        HostBatch::classification(images(4, &mut rng), vec![4, 1, 8, 8], vec![0, 1, 0, 1], 2)
            .unwrap();
    let query_a =
        HostBatch::classification(images(4, &mut rng), vec![4, 1, 8, 8], vec![0, 1, 1, 0], 2)
            .unwrap();
    // The same first two query images, with two other companions.
    let mut other = images(4, &mut rng);
    other[..128].copy_from_slice(&query_a.inputs[..128]);
    let query_b = HostBatch::classification(other, vec![4, 1, 8, 8], vec![0, 1, 0, 1], 2).unwrap();
    let kind = TaskKind::Classification { ways: 2 };
    let ep = |q: &HostBatch| EpisodeData {
        support: support.clone(),
        query: q.clone(),
        kind,
    };
    let first_two_logits = |transductive: bool, q: &HostBatch| {
        let m: Maml<B, Conv4<Autodiff<B>>, 4> = Maml::new(
            MamlConfig::new().with_transductive(transductive),
            conv(),
            device,
        )
        .unwrap();
        let adapted = m.adapt(&ep(q), 1).unwrap();
        let s = ep(q).support.to_batch::<B, 4>(&device).unwrap();
        let qb = ep(q).query.to_batch::<B, 4>(&device).unwrap();
        let out = if transductive {
            metalearn_core::MetaModule::forward(&adapted, qb.inputs)
        } else {
            metalearn_core::model::non_transductive(s.inputs, qb.inputs, |x, n| {
                metalearn_core::MetaModule::forward(&adapted, x).narrow(0, n, 1)
            })
        };
        out.narrow(0, 0, 2).into_data().to_vec::<f32>().unwrap()
    };
    let (na, nb) = (
        first_two_logits(false, &query_a),
        first_two_logits(false, &query_b),
    );
    assert_eq!(
        na, nb,
        "non-transductive logits depend on other query examples"
    );
    let (ta, tb) = (
        first_two_logits(true, &query_a),
        first_two_logits(true, &query_b),
    );
    assert_ne!(
        ta, tb,
        "transductive logits should depend on the query batch"
    );
    // And the learner's own non-transductive evaluation runs on the conv net.
    let m: Maml<B, Conv4<Autodiff<B>>, 4> =
        Maml::new(MamlConfig::new().with_transductive(false), conv(), device).unwrap();
    let c = m.adaptation_curve(&ep(&query_a), 1).unwrap();
    assert!(c.iter().all(|p| p.loss.is_finite() && p.accuracy.is_some()));
}

/// Interpretability: the per-layer change of adaptation is exactly zero for layers the inner loop
/// does not adapt (ANIL's body) and positive for the adapted head.
#[test]
fn per_layer_change_is_zero_for_frozen_layers() {
    use burn::module::AutodiffModule;
    use metalearn_eval::analysis::layer_changes;
    let device = Default::default();
    let model = MlpConfig::new(vec![1, 40, 40, 1])
        .init::<Autodiff<B>>(1, &device)
        .unwrap();
    let anil: Maml<B, Mlp<Autodiff<B>>, 2> =
        Maml::new(MamlConfig::anil().with_inner_lr(0.1), model, device).unwrap();
    let tasks = Sinusoid::new(SinusoidConfig::new(10, 10)).unwrap();
    let adapted = anil.adapt(&tasks.sample(3).unwrap(), 5).unwrap();
    let changes = layer_changes(&anil.model().valid(), &adapted).unwrap();
    assert_eq!(changes.len(), 6);
    for c in &changes[..4] {
        assert_eq!(c.relative_change, 0.0, "{c:?}");
    }
    for c in &changes[4..] {
        assert!(c.relative_change > 0.0, "{c:?}");
    }
}
