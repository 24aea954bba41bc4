//! Bad input to the learners: typed errors naming the mismatch, never a panic, never a silent
//! `Ok` with meaningless numbers — and the learner unchanged afterwards.
#![allow(clippy::unwrap_used)]

use burn::backend::Autodiff;
use metalearn_core::backend::Cpu as B;
use metalearn_core::episode::{EpisodeData, HostBatch, TaskKind};
use metalearn_core::learner::MetaLearner;
use metalearn_core::{params, Error, SeedStream};
use metalearn_tasks::{Sinusoid, SinusoidConfig};
use metalearn_update::{BatchedMaml, Maml, MamlConfig, MetaSgd, ProtoNet, ProtoNetConfig, Reptile};
use metalearn_zoo::{Conv4, Conv4Config, Mlp, MlpConfig};
use proptest::prelude::*;

type AB = Autodiff<B>;

fn regression(n: usize, features: usize, targets: usize, value: f32) -> EpisodeData {
    let batch = |n: usize| {
        HostBatch::regression(
            vec![value; n * features],
            vec![n, features],
            vec![0.5; n * targets],
            targets,
        )
        .unwrap()
    };
    EpisodeData {
        kind: TaskKind::Regression,
        support: batch(n),
        query: batch(n),
    }
}

fn images(ways: usize, shots: usize, c: usize, size: usize) -> EpisodeData {
    let batch = || {
        let n = ways * shots;
        let labels: Vec<usize> = (0..n).map(|i| i % ways).collect();
        let inputs: Vec<f32> = (0..n * c * size * size)
            .map(|i| ((i * 7919) % 97) as f32 / 97.0)
            .collect();
        HostBatch::classification(inputs, vec![n, c, size, size], labels, ways).unwrap()
    };
    EpisodeData {
        kind: TaskKind::Classification { ways },
        support: batch(),
        query: batch(),
    }
}

fn mlp(widths: Vec<usize>) -> Mlp<AB> {
    MlpConfig::new(widths)
        .init::<AB>(0, &Default::default())
        .unwrap()
}

fn conv4(ways: usize, channels: usize, size: usize) -> Conv4<AB> {
    Conv4Config::new(ways)
        .with_in_channels(channels)
        .with_input_size(size)
        .with_filters(4)
        .init::<AB>(0, &Default::default())
        .unwrap()
}

fn shape_error<T: std::fmt::Debug>(r: metalearn_core::Result<T>, needle: &str) {
    match r {
        Err(Error::ShapeMismatch(m)) => assert!(m.contains(needle), "`{m}` lacks `{needle}`"),
        other => panic!("expected a shape mismatch naming `{needle}`, got {other:?}"),
    }
}

fn maml<M: metalearn_core::MetaTrainable<B, D>, const D: usize>(
    model: M,
    second_order: bool,
) -> Maml<B, M, D> {
    let cfg = MamlConfig::new()
        .with_meta_batch_size(2)
        .with_second_order(second_order)
        .with_threads(2);
    Maml::new(cfg, model, Default::default()).unwrap()
}

#[test]
fn wrong_input_width_is_a_typed_error_for_every_path() {
    let ep = regression(5, 3, 1, 0.1);
    for second_order in [true, false] {
        let mut l = maml(mlp(vec![1, 8, 1]), second_order);
        shape_error(l.meta_step(&[ep.clone(), ep.clone()]), "1 input features");
        shape_error(l.adaptation_curve(&ep, 2), "1 input features");
        shape_error(l.evaluate(&ep, 2), "1 input features");
        shape_error(l.adapt(&ep, 2).map(|_| ()), "1 input features");
    }
    let mut b = BatchedMaml::new(
        MamlConfig::new().with_meta_batch_size(2),
        mlp(vec![1, 8, 1]),
        Default::default(),
    )
    .unwrap();
    shape_error(b.meta_step(&[ep.clone(), ep]), "1 input features");
}

#[test]
fn conv4_mismatches_are_typed_errors() {
    // 5 ways on 20-way episodes
    let mut l = maml(conv4(5, 1, 16), false);
    shape_error(l.meta_step(&[images(20, 1, 1, 16)]), "5 outputs");
    // 1 input channel on 3-channel images: MAML and ProtoNet
    shape_error(l.meta_step(&[images(5, 1, 3, 16)]), "1-channel");
    let mut p = ProtoNet::new(ProtoNetConfig::new(), conv4(5, 1, 16), Default::default()).unwrap();
    shape_error(p.meta_step(&[images(5, 1, 3, 16)]), "1-channel");
    shape_error(p.adaptation_curve(&images(5, 1, 3, 16), 0), "1-channel");
    // built for 16x16, fed 48x48
    shape_error(l.meta_step(&[images(5, 1, 1, 48)]), "head takes");
    shape_error(l.evaluate(&images(5, 1, 1, 48), 1), "head takes");
}

#[test]
fn meta_train_until_the_callback_stops() {
    let tasks = Sinusoid::new(SinusoidConfig::new(5, 5)).unwrap();
    let mut l = maml(mlp(vec![1, 8, 1]), false);
    let mut seen = 0;
    let h = l
        .meta_train(&tasks, usize::MAX, SeedStream::new(0), &mut |_| {
            seen += 1;
            seen < 3
        })
        .unwrap();
    assert_eq!(h.len(), 3);
}

/// A user's model built on burn's `nn::Linear`, which burn 0.21 cannot differentiate twice.
mod user {
    use burn::module::Module;
    use burn::tensor::backend::Backend;
    use burn::tensor::Tensor;
    use metalearn_core::MetaModule;

    #[derive(Module, Debug)]
    pub struct LinearNet<B: Backend> {
        pub fc: burn::nn::Linear<B>,
    }

    impl<B: Backend> MetaModule<B, 2> for LinearNet<B> {
        fn forward(&self, x: Tensor<B, 2>) -> Tensor<B, 2> {
            self.fc.forward(x)
        }
    }
}
use user::LinearNet;

#[test]
fn nn_linear_under_second_order_is_a_typed_error_and_the_learner_is_unchanged() {
    let model = params::materialize(LinearNet {
        fc: burn::nn::LinearConfig::new(1, 1).init::<AB>(&Default::default()),
    });
    let mut l = maml(model, true);
    let before = params::to_vec(l.model());
    let ep = regression(4, 1, 1, 0.3);
    match l.meta_step(&[ep.clone(), ep]) {
        Err(Error::TaskPanicked { message, hint }) => {
            assert!(message.contains("differentiate"), "{message}");
            assert!(hint.contains("metalearn_zoo::Dense"), "{hint}");
        }
        other => panic!("expected a caught panic, got {other:?}"),
    }
    assert_eq!(params::to_vec(l.model()), before);
    assert_eq!(l.iterations(), 0);
}

#[test]
fn silent_failures_are_errors() {
    // 1-wide output against 3-wide regression targets: no broadcasting
    let mut l = maml(mlp(vec![1, 8, 1]), true);
    let wide = regression(4, 1, 3, 0.2);
    shape_error(l.meta_step(std::slice::from_ref(&wide)), "1 outputs");
    shape_error(l.adaptation_curve(&wide, 1), "1 outputs");
    // a meta-batch mixing regression and classification
    let mut l2 = maml(mlp(vec![1, 8, 2]), false);
    let reg = regression(4, 1, 2, 0.2);
    let cls = {
        let b =
            || HostBatch::classification(vec![0.1; 4], vec![4, 1], vec![0, 1, 0, 1], 2).unwrap();
        EpisodeData {
            kind: TaskKind::Classification { ways: 2 },
            support: b(),
            query: b(),
        }
    };
    shape_error(l2.meta_step(&[reg.clone(), cls]), "episode 1");
    // an empty episode is not an iteration
    let empty = EpisodeData {
        kind: TaskKind::Regression,
        support: HostBatch::regression(vec![], vec![0, 1], vec![], 1).unwrap(),
        query: HostBatch::regression(vec![], vec![0, 1], vec![], 1).unwrap(),
    };
    assert!(matches!(l.meta_step(&[empty]), Err(Error::Empty(_))));
    assert_eq!(l.iterations(), 0);
}

#[test]
fn an_update_to_non_finite_parameters_is_refused() {
    // FOMAML with 0 inner steps on inputs near f32's limit: the loss is finite... the update not.
    let cfg = MamlConfig::new()
        .with_inner_steps(0)
        .with_second_order(false)
        .with_meta_batch_size(1)
        .with_outer_lr(1e38);
    let mut l = Maml::new(cfg, mlp(vec![1, 1]), Default::default()).unwrap();
    let before = params::to_vec(l.model());
    let ep = regression(2, 1, 1, 3e38);
    let r = l.meta_step(std::slice::from_ref(&ep));
    assert!(matches!(r, Err(Error::Diverged { .. })), "{r:?}");
    assert_eq!(params::to_vec(l.model()), before);
    // Meta-SGD and Reptile too
    let mut s = MetaSgd::new(
        MamlConfig::new()
            .with_meta_batch_size(1)
            .with_second_order(false)
            .with_outer_lr(1e38),
        mlp(vec![1, 1]),
        Default::default(),
    )
    .unwrap();
    let before = params::to_vec(s.model());
    assert!(s.meta_step(std::slice::from_ref(&ep)).is_err());
    assert_eq!(params::to_vec(s.model()), before);
    let mut r = Reptile::new(
        metalearn_update::ReptileConfig::new().with_inner_lr(1e38),
        mlp(vec![1, 1]),
        Default::default(),
    )
    .unwrap();
    assert!(r.meta_step(&[ep]).is_err());
}

#[test]
fn protonet_with_a_huge_learning_rate_diverges_loudly() {
    // Adam moves every parameter by about the learning rate per step, so 1e38 overflows f32
    // within a few steps on any CPU: the loss or the update is non-finite. (A merely huge rate,
    // 1e12, sends the loss to ~1e24 — over `divergence_loss` — on some CPUs, while on others
    // every ReLU dies at the first step and the loss sits at exactly chance, ln 5, with
    // parameters of 1e12: not detected as divergence; README, "Known limits".)
    let cfg = ProtoNetConfig::new().with_learning_rate(1e38);
    let mut p = ProtoNet::new(cfg, conv4(5, 1, 16), Default::default()).unwrap();
    let mut err = None;
    for i in 0..10 {
        if let Err(e) = p.meta_step(&[images(5, 1, 1, 16)]) {
            err = Some((i, e));
            break;
        }
    }
    match err {
        Some((_, Error::Diverged { .. })) => {}
        other => panic!("expected divergence within 10 steps, got {other:?}"),
    }
}

#[test]
fn a_diverging_inner_loop_is_an_error_not_a_nan_metric() {
    let cfg = MamlConfig::new()
        .with_inner_lr(1e30)
        .with_meta_batch_size(1);
    let l = Maml::new(cfg, mlp(vec![1, 8, 1]), Default::default()).unwrap();
    let ep = regression(5, 1, 1, 2.0);
    for r in [
        l.adaptation_curve(&ep, 5).map(|_| ()),
        l.evaluate(&ep, 5).map(|_| ()),
    ] {
        assert!(matches!(r, Err(Error::AdaptationDiverged { .. })), "{r:?}");
    }
}

#[test]
fn adapt_last_beyond_the_model_is_rejected() {
    let cfg = MamlConfig::new().with_adapt_last(7);
    match Maml::<B, _, 2>::new(cfg, mlp(vec![1, 8, 1]), Default::default()) {
        Err(metalearn_update::Error::Core(Error::InvalidConfig { field, .. })) => {
            assert_eq!(field, "adapt_last")
        }
        other => panic!("{other:?}"),
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    /// Random episode shapes against a fixed model, for every learner: a typed error or `Ok`,
    /// never a panic.
    #[test]
    fn random_shapes_never_panic(
        n_s in 0usize..4, n_q in 0usize..4, feat in 1usize..4, out in 1usize..4,
        classify in any::<bool>(), ways in 1usize..4,
    ) {
        let make = |n: usize| if classify {
            HostBatch::classification(
                vec![0.3; n * feat], vec![n, feat], (0..n).map(|i| i % ways).collect(), ways,
            ).unwrap()
        } else {
            HostBatch::regression(vec![0.3; n * feat], vec![n, feat], vec![0.1; n * out], out).unwrap()
        };
        let kind = if classify { TaskKind::Classification { ways } } else { TaskKind::Regression };
        let ep = EpisodeData { kind, support: make(n_s), query: make(n_q) };
        let mut l = maml(mlp(vec![2, 4, 2]), true);
        let _ = l.meta_step(std::slice::from_ref(&ep));
        let _ = l.adaptation_curve(&ep, 1);
        let _ = l.evaluate(&ep, 1);
        let mut f = maml(mlp(vec![2, 4, 2]), false);
        let _ = f.meta_step(std::slice::from_ref(&ep));
        let mut s = MetaSgd::new(MamlConfig::new().with_meta_batch_size(1), mlp(vec![2, 4, 2]),
            Default::default()).unwrap();
        let _ = s.meta_step(std::slice::from_ref(&ep));
        let mut r = Reptile::new(metalearn_update::ReptileConfig::new(), mlp(vec![2, 4, 2]),
            Default::default()).unwrap();
        let _ = r.meta_step(std::slice::from_ref(&ep));
        let _ = r.evaluate(&ep, 1);
        let mut p = ProtoNet::new(ProtoNetConfig::new(), mlp(vec![2, 4, 2]), Default::default()).unwrap();
        let _ = p.meta_step(std::slice::from_ref(&ep));
        let _ = p.adaptation_curve(&ep, 0);
        let mut b = BatchedMaml::new(MamlConfig::new().with_meta_batch_size(1), mlp(vec![2, 4, 2]),
            Default::default()).unwrap();
        let _ = b.meta_step(std::slice::from_ref(&ep));
        let _ = b.adaptation_curve(&ep, 1);
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 16, ..ProptestConfig::default() })]

    /// Random image shapes and ways against a Conv4 built for 3-way 1-channel 16x16 images:
    /// `Ok` exactly when they fit, a typed error otherwise, never a panic.
    #[test]
    fn random_image_shapes_never_panic(
        ways in 1usize..5, channels in 1usize..4, size in 1usize..40,
    ) {
        let ep = images(ways, 1, channels, size);
        let fits = ways == 3 && channels == 1 && (16..32).contains(&size);
        let mut l = maml(conv4(3, 1, 16), false);
        let r = l.meta_step(std::slice::from_ref(&ep));
        prop_assert_eq!(r.is_ok(), fits, "{:?}", r);
        let e = l.evaluate(&ep, 1);
        prop_assert_eq!(e.is_ok(), fits, "{:?}", e);
        // ProtoNet needs only the body to fit (any ways, any size that survives pooling).
        let mut p = ProtoNet::new(ProtoNetConfig::new(), conv4(3, 1, 16), Default::default()).unwrap();
        let r = p.meta_step(std::slice::from_ref(&ep));
        prop_assert_eq!(r.is_ok(), channels == 1 && size >= 16, "{:?}", r);
    }
}
