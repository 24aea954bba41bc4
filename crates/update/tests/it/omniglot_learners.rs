//! Every few-shot learner on real Omniglot: a short, seeded run on a small subset of the
//! meta-training characters must lift 5-way accuracy on *held-out* characters far above the 20%
//! of chance — a bar a broken learner cannot pass. Reads the data through the same loader users
//! run, from `METALEARN_DATA` (CI: `../shared/data`); skipped loudly without it.
//!
//! Each test body is generic over the backend: the same runs execute on the default CPU backend
//! and, with the `wgpu` feature, on burn-wgpu (lavapipe in CI).
#![allow(clippy::unwrap_used)]

use burn::backend::Autodiff;
use burn::module::AutodiffModule;
use burn::tensor::backend::Backend;
use metalearn_core::backend::Cpu;
use metalearn_core::learner::MetaLearner;
use metalearn_core::{params, SeedStream, TaskDistribution};
use metalearn_eval::meta_test_final;
use metalearn_tasks::{
    ClassBatches, NWayKShot, NWayKShotConfig, Omniglot, OmniglotClasses, OmniglotConfig,
};
use metalearn_update::{
    FineTune, FineTuneConfig, Maml, MamlConfig, MamlPlusPlus, MamlPlusPlusConfig, MetaSgd,
    ProtoNet, ProtoNetConfig, Reptile, ReptileConfig,
};
use metalearn_zoo::{Conv4, Conv4Config};
use std::sync::{Arc, OnceLock};
use std::time::Instant;

struct Data {
    train: Arc<OmniglotClasses>,
    test: Arc<OmniglotClasses>,
}

/// Image size and Conv4 width of a run: the CPU tests use the standard 28×28 images and a
/// 32-filter Conv4; on wgpu (a software Vulkan driver in CI, ~15× slower per step) the same runs
/// use 16×16 images and 16 filters (and the fine-tune baseline, cheap per step, pretrains
/// longer).
#[derive(Clone, Copy)]
struct Scale {
    image: usize,
    filters: usize,
    /// Supervised pretraining iterations (batch 32) of the fine-tune baseline.
    finetune_iterations: usize,
}

const FULL: Scale = Scale {
    image: 28,
    filters: 32,
    finetune_iterations: 100,
};
#[cfg_attr(not(feature = "wgpu"), allow(dead_code))]
const SMALL: Scale = Scale {
    image: 16,
    filters: 16,
    finetune_iterations: 300,
};

fn data(s: Scale) -> Option<&'static Data> {
    static FULL_DATA: OnceLock<Option<Data>> = OnceLock::new();
    static SMALL_DATA: OnceLock<Option<Data>> = OnceLock::new();
    let cell = if s.image == FULL.image {
        &FULL_DATA
    } else {
        &SMALL_DATA
    };
    cell.get_or_init(|| {
        let dir = std::env::var_os("METALEARN_DATA")?;
        let config = OmniglotConfig::new().with_image_size(s.image);
        let o = Arc::new(Omniglot::load(Some(std::path::Path::new(&dir)), &config).unwrap());
        let (train, _, test) = o.vinyals_split();
        Some(Data {
            // 100 training characters (400 classes with rotations), 50 held-out characters.
            train: Arc::new(o.classes(train[..100].to_vec(), true)),
            test: Arc::new(o.classes(test[..50].to_vec(), false)),
        })
    })
    .as_ref()
    .or_else(|| {
        eprintln!(
            "\n!!!!! SKIPPED: METALEARN_DATA is not set; Omniglot learner test not run !!!!!\n"
        );
        None
    })
}

fn conv4<B: Backend>(s: Scale, ways: usize) -> Conv4<Autodiff<B>> {
    Conv4Config::new(ways)
        .with_filters(s.filters)
        .with_input_size(s.image)
        .init::<Autodiff<B>>(7, &Default::default())
        .unwrap()
}

/// Mean held-out 5-way 1-shot query accuracy after `steps` adaptation steps (40 episodes).
fn held_out_accuracy<L: MetaLearner<4> + Sync>(s: Scale, learner: &L, steps: usize) -> f64 {
    let d = data(s).unwrap();
    let tasks = NWayKShot::new(d.test.clone(), NWayKShotConfig::new(5, 1, 5)).unwrap();
    let curve = meta_test_final(learner, &tasks, 40, steps, SeedStream::new(77)).unwrap();
    let point = &curve.points[0];
    assert_eq!(point.steps, steps);
    // The one-pass evaluation is the last point of the per-step curve.
    let ep = tasks.sample(SeedStream::new(77).child(0).seed()).unwrap();
    let last = *learner
        .adaptation_curve(&ep, steps)
        .unwrap()
        .last()
        .unwrap();
    let once = learner.evaluate(&ep, steps).unwrap();
    assert_eq!(once.accuracy, last.accuracy);
    assert!((once.loss - last.loss).abs() <= 1e-5 * last.loss.abs().max(1.0));
    point.accuracy.unwrap().mean
}

fn train<L: MetaLearner<4>>(
    s: Scale,
    name: &str,
    learner: &mut L,
    iterations: usize,
    shots: usize,
) {
    let d = data(s).unwrap();
    let tasks = NWayKShot::new(d.train.clone(), NWayKShotConfig::new(5, shots, 5)).unwrap();
    let t = Instant::now();
    learner
        .meta_train(&tasks, iterations, SeedStream::new(1), &mut |_| true)
        .unwrap();
    eprintln!(
        "{name}: {iterations} iterations in {:.1} s",
        t.elapsed().as_secs_f64()
    );
}

/// `name` and the backend it runs on.
fn tag<B: Backend>(name: &str) -> String {
    format!("{name} [{}]", B::name(&Default::default()))
}

fn check(name: &str, before: f64, after: f64) {
    eprintln!("{name}: held-out 5-way 1-shot accuracy {before:.3} -> {after:.3}");
    assert!(
        after > 0.45,
        "{name}: accuracy {after} is not far above chance (0.2)"
    );
    assert!(after > before + 0.1, "{name}: {before} -> {after}");
}

fn fomaml_and_maml<B: Backend>(s: Scale) {
    if data(s).is_none() {
        return;
    }
    for (name, second) in [("FOMAML", false), ("MAML", true)] {
        let cfg = MamlConfig::new()
            .with_inner_lr(0.4)
            .with_meta_batch_size(4)
            .with_outer_lr(3e-3)
            .with_second_order(second);
        let mut m = Maml::<B, _, 4>::new(cfg, conv4::<B>(s, 5), Default::default()).unwrap();
        let before = held_out_accuracy(s, &m, 3);
        let name = tag::<B>(name);
        train(s, &name, &mut m, 60, 1);
        check(&name, before, held_out_accuracy(s, &m, 3));
    }
}

fn anil<B: Backend>(s: Scale) {
    if data(s).is_none() {
        return;
    }
    let cfg = MamlConfig::anil()
        .with_inner_lr(0.4)
        .with_meta_batch_size(4)
        .with_outer_lr(3e-3);
    let mut m = Maml::<B, _, 4>::new(cfg, conv4::<B>(s, 5), Default::default()).unwrap();
    let before = held_out_accuracy(s, &m, 5);
    train(s, &tag::<B>("ANIL"), &mut m, 60, 1);
    check(&tag::<B>("ANIL"), before, held_out_accuracy(s, &m, 5));
    // The inner loop changes only the head: the last two parameter tensors.
    let d = data(s).unwrap();
    let tasks = NWayKShot::new(d.test.clone(), NWayKShotConfig::new(5, 1, 5)).unwrap();
    let ep = tasks.sample(5).unwrap();
    let adapted = m.adapt(&ep, 5).unwrap();
    let change = params::relative_change(&m.model().valid(), &adapted).unwrap();
    let n = change.len();
    assert!(change[..n - 2].iter().all(|&c| c == 0.0), "{change:?}");
    assert!(change[n - 2] > 0.0);
}

fn boil<B: Backend>(s: Scale) {
    if data(s).is_none() {
        return;
    }
    let cfg = MamlConfig::boil()
        .with_inner_lr(0.4)
        .with_meta_batch_size(4)
        .with_outer_lr(3e-3);
    let mut m = Maml::<B, _, 4>::new(cfg, conv4::<B>(s, 5), Default::default()).unwrap();
    let before = held_out_accuracy(s, &m, 3);
    train(s, &tag::<B>("BOIL"), &mut m, 60, 1);
    check(&tag::<B>("BOIL"), before, held_out_accuracy(s, &m, 3));
    // The inner loop changes only the body: the head (last two tensors) stays.
    let d = data(s).unwrap();
    let tasks = NWayKShot::new(d.test.clone(), NWayKShotConfig::new(5, 1, 5)).unwrap();
    let adapted = m.adapt(&tasks.sample(5).unwrap(), 3).unwrap();
    let change = params::relative_change(&m.model().valid(), &adapted).unwrap();
    let n = change.len();
    assert!(change[n - 2..].iter().all(|&c| c == 0.0), "{change:?}");
    assert!(change[..n - 2].iter().all(|&c| c > 0.0), "{change:?}");
}

fn maml_plus_plus<B: Backend>(s: Scale) {
    if data(s).is_none() {
        return;
    }
    // Every piece on, compressed into a short run: multi-step loss annealed over 20
    // iterations, first order for the first 10, cosine schedule over the 40, per-step
    // batch-norm weights and biases.
    let cfg = MamlPlusPlusConfig::new()
        .with_per_step_groups(vec!["norms".into()])
        .with_inner_lr(0.4)
        .with_inner_steps(2)
        .with_meta_batch_size(4)
        .with_outer_lr(3e-3)
        .with_msl_iterations(20)
        .with_first_order_iterations(10)
        .with_anneal_iterations(40);
    let mut m = MamlPlusPlus::<B, _, 4>::new(cfg, conv4::<B>(s, 5), Default::default()).unwrap();
    let rates_before = m.rates().unwrap();
    let norms_before = m.step_params().unwrap();
    assert_eq!(norms_before.len(), 8, "γ and β of 4 batch norms");
    let before = held_out_accuracy(s, &m, 2);
    train(s, &tag::<B>("MAML++"), &mut m, 40, 1);
    check(&tag::<B>("MAML++"), before, held_out_accuracy(s, &m, 2));
    let rates = m.rates().unwrap();
    assert_eq!(rates.len(), 2);
    assert_ne!(rates, rates_before, "the per-step rates were not learned");
    let norms = m.step_params().unwrap();
    assert!(
        norms.iter().all(|c| c.len() == 3 && c[0] != c[2]),
        "the per-step batch-norm copies were not learned apart"
    );
}

fn meta_sgd<B: Backend>(s: Scale) {
    if data(s).is_none() {
        return;
    }
    let cfg = MamlConfig::new()
        .with_inner_lr(0.1)
        .with_meta_batch_size(4)
        .with_outer_lr(3e-3)
        .with_second_order(false);
    let mut m = MetaSgd::<B, _, 4>::new(cfg, conv4::<B>(s, 5), Default::default()).unwrap();
    let d = data(s).unwrap();
    let tasks = NWayKShot::new(d.train.clone(), NWayKShotConfig::new(5, 1, 5)).unwrap();
    let eps: Vec<_> = (0..2).map(|s| tasks.sample(s).unwrap()).collect();
    let (_, g_rates) = m.meta_gradient_vec(&eps).unwrap();
    assert!(
        g_rates.iter().any(|g| g.abs() > 0.0),
        "learned rates get no gradient"
    );
    let rates_before = params::to_vec(m.rates());
    let before = held_out_accuracy(s, &m, 1);
    train(s, &tag::<B>("Meta-SGD"), &mut m, 60, 1);
    check(&tag::<B>("Meta-SGD"), before, held_out_accuracy(s, &m, 1));
    assert_ne!(rates_before, params::to_vec(m.rates()));
}

fn reptile<B: Backend>(s: Scale) {
    if data(s).is_none() {
        return;
    }
    let cfg = ReptileConfig::new()
        .with_meta_batch_size(4)
        .with_inner_steps(3)
        .with_anneal_to(50);
    let mut m = Reptile::<B, _, 4>::new(cfg, conv4::<B>(s, 5), Default::default()).unwrap();
    // After one adaptation step: what Reptile's initialisation is for (a random initialisation
    // fine-tuned for 10 steps is already well above chance on Omniglot).
    let before = held_out_accuracy(s, &m, 1);
    train(s, &tag::<B>("Reptile"), &mut m, 50, 1);
    check(&tag::<B>("Reptile"), before, held_out_accuracy(s, &m, 1));
}

fn protonet<B: Backend>(s: Scale) {
    if data(s).is_none() {
        return;
    }
    let mut m =
        ProtoNet::<B, _, 4>::new(ProtoNetConfig::new(), conv4::<B>(s, 5), Default::default())
            .unwrap();
    let before = held_out_accuracy(s, &m, 0);
    train(s, &tag::<B>("ProtoNet"), &mut m, 100, 5);
    check(&tag::<B>("ProtoNet"), before, held_out_accuracy(s, &m, 0));
}

fn finetune<B: Backend>(s: Scale) {
    if data(s).is_none() {
        return;
    }
    let d = data(s).unwrap();
    let classes = metalearn_tasks::ClassDataset::num_classes(d.train.as_ref());
    let mut m = FineTune::<B, _, 4>::new(
        FineTuneConfig::new(),
        conv4::<B>(s, classes),
        Default::default(),
    )
    .unwrap();
    let before = held_out_accuracy(s, &m, 50);
    let batches = ClassBatches::new(d.train.clone(), 32).unwrap();
    let t = Instant::now();
    m.meta_train(
        &batches,
        s.finetune_iterations,
        SeedStream::new(2),
        &mut |_| true,
    )
    .unwrap();
    eprintln!(
        "{}: {} iterations in {:.1} s",
        tag::<B>("FineTune"),
        s.finetune_iterations,
        t.elapsed().as_secs_f64()
    );
    check(&tag::<B>("FineTune"), before, held_out_accuracy(s, &m, 50));
}

#[test]
fn omniglot_real_data_fomaml_and_maml_learn() {
    fomaml_and_maml::<Cpu>(FULL);
}

#[test]
fn omniglot_real_data_anil_learns_and_keeps_body_fixed_in_inner_loop() {
    anil::<Cpu>(FULL);
}

#[test]
fn omniglot_real_data_boil_learns_and_keeps_head_fixed_in_inner_loop() {
    boil::<Cpu>(FULL);
}

#[test]
fn omniglot_real_data_maml_plus_plus_learns_its_rates() {
    maml_plus_plus::<Cpu>(FULL);
}

#[test]
fn omniglot_real_data_meta_sgd_learns_its_rates() {
    meta_sgd::<Cpu>(FULL);
}

#[test]
fn omniglot_real_data_reptile_learns() {
    reptile::<Cpu>(FULL);
}

#[test]
fn omniglot_real_data_protonet_learns() {
    protonet::<Cpu>(FULL);
}

#[test]
fn omniglot_real_data_pretrain_finetune_learns() {
    finetune::<Cpu>(FULL);
}

/// The same short runs on burn-wgpu, at [`SMALL`] scale. Not part of the default test run: on
/// the software Vulkan driver CI has (lavapipe, 2 cores) they take ~12 minutes one at a time and
/// ~3× longer two at a time (measured, one at a time: FOMAML 62 s, MAML 97 s, Meta-SGD 66 s,
/// fine-tune 113 s, ProtoNet 32 s, Reptile 145 s of training; held-out accuracy FOMAML
/// 0.32 → 0.48, MAML 0.32 → 0.63, ANIL 0.35 → 0.55, Meta-SGD 0.29 → 0.59, fine-tune
/// 0.34 → 0.55, ProtoNet 0.35 → 0.65, Reptile 0.29 → 0.59). Run them on a machine with a GPU:
/// `cargo test -p metalearn-update --all-features --test omniglot_learners -- --ignored`.
/// CI checks the GPU path with `tests/it/wgpu.rs` (every learner's meta-step and an 8-step
/// training run against burn-ndarray).
#[cfg(feature = "wgpu")]
mod wgpu {
    use metalearn_core::backend::Gpu;

    #[test]
    #[ignore = "1-2 min per learner on a software Vulkan driver; run with --ignored on a GPU"]
    fn wgpu_omniglot_real_data_fomaml_and_maml_learn() {
        super::fomaml_and_maml::<Gpu>(super::SMALL);
    }

    #[test]
    #[ignore = "1-2 min per learner on a software Vulkan driver; run with --ignored on a GPU"]
    fn wgpu_omniglot_real_data_anil_learns_and_keeps_body_fixed_in_inner_loop() {
        super::anil::<Gpu>(super::SMALL);
    }

    #[test]
    #[ignore = "1-2 min per learner on a software Vulkan driver; run with --ignored on a GPU"]
    fn wgpu_omniglot_real_data_boil_learns() {
        super::boil::<Gpu>(super::SMALL);
    }

    #[test]
    #[ignore = "1-2 min per learner on a software Vulkan driver; run with --ignored on a GPU"]
    fn wgpu_omniglot_real_data_maml_plus_plus_learns() {
        super::maml_plus_plus::<Gpu>(super::SMALL);
    }

    #[test]
    #[ignore = "1-2 min per learner on a software Vulkan driver; run with --ignored on a GPU"]
    fn wgpu_omniglot_real_data_meta_sgd_learns_its_rates() {
        super::meta_sgd::<Gpu>(super::SMALL);
    }

    #[test]
    #[ignore = "1-2 min per learner on a software Vulkan driver; run with --ignored on a GPU"]
    fn wgpu_omniglot_real_data_reptile_learns() {
        super::reptile::<Gpu>(super::SMALL);
    }

    #[test]
    #[ignore = "1-2 min per learner on a software Vulkan driver; run with --ignored on a GPU"]
    fn wgpu_omniglot_real_data_protonet_learns() {
        super::protonet::<Gpu>(super::SMALL);
    }

    #[test]
    #[ignore = "1-2 min per learner on a software Vulkan driver; run with --ignored on a GPU"]
    fn wgpu_omniglot_real_data_pretrain_finetune_learns() {
        super::finetune::<Gpu>(super::SMALL);
    }
}
