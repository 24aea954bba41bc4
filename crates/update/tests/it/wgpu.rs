//! The GPU path on burn-wgpu: the second-order meta-gradient and every learner's step match
//! burn-ndarray's (f32), and every learner's short training run lowers its loss on the GPU
//! backend and follows the CPU run. Runs in CI on a software Vulkan driver (lavapipe,
//! `mesa-vulkan-drivers`).
#![cfg(feature = "wgpu")]
#![allow(clippy::unwrap_used)]

use burn::backend::Autodiff;
use burn::tensor::backend::Backend;
use metalearn_core::backend::{Gpu, NdArrayCpu};
use metalearn_core::{SeedStream, TaskDistribution};
use metalearn_tasks::{Sinusoid, SinusoidConfig};
use metalearn_update::{Maml, MamlConfig};
use metalearn_zoo::{Mlp, MlpConfig};

/// `(‖a − b‖, ‖a‖)`.
fn diff_and_norm(a: &[f64], b: &[f64]) -> (f64, f64) {
    let num = a
        .iter()
        .zip(b)
        .map(|(x, y)| (x - y).powi(2))
        .sum::<f64>()
        .sqrt();
    (num, a.iter().map(|x| x * x).sum::<f64>().sqrt())
}

fn gradient<B: Backend>() -> Vec<f64> {
    let device = B::Device::default();
    let model = MlpConfig::new(vec![1, 16, 16, 1])
        .init::<Autodiff<B>>(2, &device)
        .unwrap();
    let tasks = Sinusoid::new(SinusoidConfig::new(5, 5)).unwrap();
    let eps: Vec<_> = (0..3)
        .map(|j| tasks.sample(SeedStream::new(4).child(j).seed()).unwrap())
        .collect();
    let cfg = MamlConfig::new()
        .with_inner_steps(2)
        .with_meta_batch_size(3);
    let maml: Maml<B, Mlp<Autodiff<B>>, 2> = Maml::new(cfg, model, device).unwrap();
    maml.meta_gradient_vec(&eps).unwrap()
}

#[test]
fn wgpu_second_order_meta_gradient_matches_ndarray() {
    let cpu = gradient::<NdArrayCpu>();
    let gpu = gradient::<Gpu>();
    let (num, den) = diff_and_norm(&cpu, &gpu);
    assert!(den > 0.0);
    assert!(num / den < 1e-4, "relative difference {}", num / den);
}

mod learners {
    //! One meta-step of every few-shot learner on the GPU path equals the same step on the CPU
    //! (small Conv4, synthetic images; lavapipe in CI).
    use super::*;
    use metalearn_core::learner::MetaLearner;
    use metalearn_core::params;
    use metalearn_tasks::{InMemoryClasses, NWayKShot, NWayKShotConfig};
    use metalearn_update::{
        FineTune, FineTuneConfig, MetaSgd, ProtoNet, ProtoNetConfig, Reptile, ReptileConfig,
    };
    use metalearn_zoo::{Conv4, Conv4Config};
    use rand::Rng;
    use std::sync::Arc;

    fn episodes() -> Vec<metalearn_core::episode::EpisodeData> {
        let mut r = metalearn_core::seed::rng(3);
        // 4 images per class of 32×32, so that batch norm sees enough values per channel.
        let classes: Vec<Vec<f32>> = (0..6)
            .map(|_| (0..4 * 1024).map(|_| r.random::<f32>()).collect())
            .collect();
        let ds = Arc::new(InMemoryClasses::new(vec![1, 32, 32], classes).unwrap());
        let s = NWayKShot::new(ds, NWayKShotConfig::new(3, 2, 2)).unwrap();
        (0..2).map(|i| s.sample(i).unwrap()).collect()
    }

    fn conv<B: Backend>(ways: usize) -> Conv4<Autodiff<B>> {
        Conv4Config::new(ways)
            .with_filters(8)
            .with_input_size(32)
            .init(1, &Default::default())
            .unwrap()
    }

    /// What each learner computes that must agree across backends: meta-gradients where the
    /// learner exposes them, otherwise the losses it reports and adaptation results. (Parameters
    /// after an Adam step are no good: Adam's first step is lr·sign(g), which flips for
    /// gradients at round-off level.)
    fn signature<B: Backend>(name: &str) -> Vec<f64> {
        let d = B::Device::default();
        let eps = episodes();
        // A small inner step: after large steps on this random conv net, batch norm over a handful
        // of images amplifies f32 round-off differences between backends to percent level
        // (measured: 2e-2 at α = 0.1, 1e-6 at α = 0.001 — same code path).
        let maml = MamlConfig::new()
            .with_inner_lr(0.01)
            .with_meta_batch_size(2);
        match name {
            "maml" => Maml::new(maml, conv::<B>(3), d)
                .unwrap()
                .meta_gradient_vec(&eps)
                .unwrap(),
            "fomaml" => Maml::new(maml.with_second_order(false), conv::<B>(3), d)
                .unwrap()
                .meta_gradient_vec(&eps)
                .unwrap(),
            "anil" => Maml::new(MamlConfig::anil().with_inner_lr(0.1), conv::<B>(3), d)
                .unwrap()
                .meta_gradient_vec(&eps)
                .unwrap(),
            "meta-sgd" => {
                let (mut g, r) = MetaSgd::new(maml, conv::<B>(3), d)
                    .unwrap()
                    .meta_gradient_vec(&eps)
                    .unwrap();
                g.extend(r);
                g
            }
            "reptile" => {
                let mut l =
                    Reptile::new(ReptileConfig::new().with_epsilon(0.5), conv::<B>(3), d).unwrap();
                l.meta_step(&eps).unwrap();
                params::to_vec(l.model())
            }
            "protonet" => {
                let mut l = ProtoNet::new(ProtoNetConfig::new(), conv::<B>(3), d).unwrap();
                let mut v: Vec<f64> = l
                    .adaptation_curve(&eps[1], 0)
                    .unwrap()
                    .iter()
                    .map(|c| c.loss)
                    .collect();
                v.push(l.meta_step(&eps).unwrap().meta_loss);
                v
            }
            _ => {
                let l = FineTune::new(FineTuneConfig::new(), conv::<B>(3), d).unwrap();
                l.adaptation_curve(&eps[0], 5)
                    .unwrap()
                    .iter()
                    .map(|c| c.loss)
                    .collect()
            }
        }
    }

    #[test]
    fn wgpu_every_learner_step_matches_ndarray() {
        let mut results = Vec::new();
        for name in [
            "maml", "fomaml", "anil", "meta-sgd", "reptile", "protonet", "finetune",
        ] {
            let cpu = signature::<NdArrayCpu>(name);
            let gpu = signature::<Gpu>(name);
            assert_eq!(cpu.len(), gpu.len());
            let (num, den) = diff_and_norm(&cpu, &gpu);
            eprintln!("{name}: relative difference {:e}", num / den);
            results.push((name, num / den));
        }
        for (name, e) in results {
            assert!(e < 1e-4, "{name}: relative difference {e}");
        }
    }

    /// Episodes of learnable classes: each class is a fixed random image plus noise.
    fn structured_episodes() -> Vec<metalearn_core::episode::EpisodeData> {
        let mut r = metalearn_core::seed::rng(5);
        let classes: Vec<Vec<f32>> = (0..3)
            .map(|_| {
                let base: Vec<f32> = (0..1024).map(|_| r.random::<f32>()).collect();
                (0..4)
                    .flat_map(|_| {
                        base.iter()
                            .map(|b| b + 0.3 * r.random::<f32>())
                            .collect::<Vec<_>>()
                    })
                    .collect()
            })
            .collect();
        let ds = Arc::new(InMemoryClasses::new(vec![1, 32, 32], classes).unwrap());
        let s = NWayKShot::new(ds, NWayKShotConfig::new(3, 2, 2)).unwrap();
        (0..2).map(|i| s.sample(i).unwrap()).collect()
    }

    /// The meta-losses of `steps` meta-updates of learner `name` on one fixed meta-batch.
    fn trajectory<B: Backend>(name: &str, steps: usize) -> Vec<f64> {
        let d = B::Device::default();
        let eps = structured_episodes();
        let maml = MamlConfig::new()
            .with_inner_lr(0.01)
            .with_outer_lr(1e-3)
            .with_meta_batch_size(2);
        fn run<L: MetaLearner<4>>(
            mut l: L,
            eps: &[metalearn_core::episode::EpisodeData],
            n: usize,
        ) -> Vec<f64> {
            (0..n)
                .map(|_| l.meta_step(eps).unwrap().meta_loss)
                .collect()
        }
        match name {
            "maml" => run(Maml::new(maml, conv::<B>(3), d).unwrap(), &eps, steps),
            "fomaml" => run(
                Maml::new(maml.with_second_order(false), conv::<B>(3), d).unwrap(),
                &eps,
                steps,
            ),
            "anil" => run(
                Maml::new(MamlConfig::anil().with_inner_lr(0.1), conv::<B>(3), d).unwrap(),
                &eps,
                steps,
            ),
            "meta-sgd" => run(MetaSgd::new(maml, conv::<B>(3), d).unwrap(), &eps, steps),
            "reptile" => run(
                Reptile::new(
                    ReptileConfig::new().with_inner_lr(0.01).with_inner_steps(2),
                    conv::<B>(3),
                    d,
                )
                .unwrap(),
                &eps,
                steps,
            ),
            "protonet" => run(
                ProtoNet::new(ProtoNetConfig::new(), conv::<B>(3), d).unwrap(),
                &eps,
                steps,
            ),
            _ => run(
                FineTune::new(FineTuneConfig::new(), conv::<B>(3), d).unwrap(),
                &eps,
                steps,
            ),
        }
    }

    /// Every learner trains on the GPU backend: a short run of meta-updates on one meta-batch
    /// lowers the meta-loss, and follows the CPU run's trajectory.
    #[test]
    fn wgpu_every_learner_short_training_run_learns_and_matches_ndarray() {
        let steps = 8;
        let mut failures = Vec::new();
        for name in [
            "maml", "fomaml", "anil", "meta-sgd", "reptile", "protonet", "finetune",
        ] {
            let cpu = trajectory::<NdArrayCpu>(name, steps);
            let gpu = trajectory::<Gpu>(name, steps);
            let (num, den) = diff_and_norm(&cpu, &gpu);
            let (first, last) = (gpu[0], gpu[steps - 1]);
            eprintln!(
                "{name}: wgpu meta-loss {first:.4} -> {last:.4}; relative difference to ndarray {:.1e}",
                num / den
            );
            if last.is_nan() || last >= 0.9 * first {
                failures.push(format!("{name}: wgpu loss {first} -> {last} did not fall"));
            }
            if num / den > 1e-2 {
                failures.push(format!("{name}: trajectories differ by {:e}", num / den));
            }
        }
        assert!(failures.is_empty(), "{failures:#?}");
    }
}
