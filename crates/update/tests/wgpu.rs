//! The GPU path: the second-order meta-gradient on burn-wgpu matches burn-ndarray's (f32).
//! Runs in CI on a software Vulkan driver (lavapipe, `mesa-vulkan-drivers`).
#![cfg(feature = "wgpu")]
#![allow(clippy::unwrap_used)]

use burn::backend::Autodiff;
use burn::tensor::backend::Backend;
use metalearn_core::backend::{Gpu, NdArrayCpu};
use metalearn_core::{SeedStream, TaskDistribution};
use metalearn_tasks::{Sinusoid, SinusoidConfig};
use metalearn_update::{Maml, MamlConfig};
use metalearn_zoo::{Mlp, MlpConfig};

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
    let num: f64 = cpu
        .iter()
        .zip(&gpu)
        .map(|(a, b)| (a - b).powi(2))
        .sum::<f64>()
        .sqrt();
    let den: f64 = cpu.iter().map(|a| a * a).sum::<f64>().sqrt();
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
        let classes: Vec<Vec<f32>> = (0..6)
            .map(|_| (0..4 * 256).map(|_| r.random::<f32>()).collect())
            .collect();
        let ds = Arc::new(InMemoryClasses::new(vec![1, 16, 16], classes).unwrap());
        let s = NWayKShot::new(ds, NWayKShotConfig::new(3, 1, 2)).unwrap();
        (0..2).map(|i| s.sample(i).unwrap()).collect()
    }

    fn conv<B: Backend>(ways: usize) -> Conv4<Autodiff<B>> {
        Conv4Config::new(ways)
            .with_filters(8)
            .with_input_size(16)
            .init(1, &Default::default())
            .unwrap()
    }

    fn after_step<B: Backend>(name: &str) -> Vec<f64> {
        let d = B::Device::default();
        let eps = episodes();
        let maml = MamlConfig::new().with_inner_lr(0.1).with_meta_batch_size(2);
        match name {
            "maml" => {
                let mut l = Maml::new(maml, conv::<B>(3), d).unwrap();
                l.meta_step(&eps).unwrap();
                params::to_vec(l.model())
            }
            "anil" => {
                let mut l =
                    Maml::new(MamlConfig::anil().with_inner_lr(0.1), conv::<B>(3), d).unwrap();
                l.meta_step(&eps).unwrap();
                params::to_vec(l.model())
            }
            "meta-sgd" => {
                let mut l = MetaSgd::new(maml, conv::<B>(3), d).unwrap();
                l.meta_step(&eps).unwrap();
                params::to_vec(l.rates())
            }
            "reptile" => {
                let mut l =
                    Reptile::new(ReptileConfig::new().with_epsilon(0.5), conv::<B>(3), d).unwrap();
                l.meta_step(&eps).unwrap();
                params::to_vec(l.model())
            }
            "protonet" => {
                let mut l = ProtoNet::new(ProtoNetConfig::new(), conv::<B>(3), d).unwrap();
                l.meta_step(&eps).unwrap();
                params::to_vec(l.model())
            }
            _ => {
                let mut l = FineTune::new(FineTuneConfig::new(), conv::<B>(3), d).unwrap();
                l.meta_step(&eps).unwrap();
                let curve = l.adaptation_curve(&eps[0], 5).unwrap();
                let mut v = params::to_vec(l.model());
                v.extend(curve.iter().map(|c| c.loss));
                v
            }
        }
    }

    #[test]
    fn wgpu_every_learner_step_matches_ndarray() {
        for name in [
            "maml", "anil", "meta-sgd", "reptile", "protonet", "finetune",
        ] {
            let cpu = after_step::<NdArrayCpu>(name);
            let gpu = after_step::<Gpu>(name);
            assert_eq!(cpu.len(), gpu.len());
            let num: f64 = cpu
                .iter()
                .zip(&gpu)
                .map(|(a, b)| (a - b).powi(2))
                .sum::<f64>()
                .sqrt();
            let den: f64 = cpu.iter().map(|a| a * a).sum::<f64>().sqrt();
            assert!(
                num / den < 1e-4,
                "{name}: relative difference {}",
                num / den
            );
        }
    }
}
