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
