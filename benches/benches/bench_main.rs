//! Criterion micro-benchmarks: one MAML meta-iteration on sinusoid (second and first order,
//! per-task and task-batched paths) and Conv4 forward + backward on each CPU backend.
//!
//! Run with `cargo xtask criterion` (or `cargo bench -p metalearn-benches`).
//!
//! Same allocator as `metalearn-bench` and the `metalearn` command (mimalloc, freed memory kept
//! mapped): with glibc's malloc, a Conv4 forward + backward on 80 images spent 41% of its
//! samples in the kernel (page faults and zeroing of the activations' fresh pages, perf, 2
//! threads), which would time the allocator rather than the network.

use burn::backend::Autodiff;
use burn::tensor::backend::Backend;
use burn::tensor::{Distribution, Tensor};
use criterion::{criterion_group, Criterion};
use metalearn_core::backend::{FlexCpu, NdArrayCpu};
use metalearn_core::learner::MetaLearner;
use metalearn_core::{MetaModule, SeedStream, TaskDistribution};
use metalearn_tasks::{Sinusoid, SinusoidConfig};
use metalearn_update::{BatchedMaml, Maml, MamlConfig};
use metalearn_zoo::{Conv4Config, Mlp, MlpConfig};

fn maml_iteration(c: &mut Criterion) {
    type B = FlexCpu;
    let device = Default::default();
    let tasks = Sinusoid::new(SinusoidConfig::new(10, 10)).expect("valid config");
    let seed = SeedStream::new(0);
    let batch: Vec<_> = (0..25)
        .map(|j| tasks.sample(seed.child(j).seed()).expect("sample"))
        .collect();
    let mlp = MlpConfig::new(vec![1, 40, 40, 1]);
    let mut group = c.benchmark_group("maml_sinusoid_meta_iteration");
    group.sample_size(20);
    for second_order in [true, false] {
        let order = if second_order {
            "second_order"
        } else {
            "first_order"
        };
        let config = MamlConfig::new().with_second_order(second_order);
        let model = mlp.init::<Autodiff<B>>(0, &device).expect("valid mlp");
        let mut per_task: Maml<B, Mlp<Autodiff<B>>, 2> =
            Maml::new(config.clone(), model.clone(), device).expect("valid maml");
        group.bench_function(format!("{order}/per_task"), |b| {
            b.iter(|| per_task.meta_step(&batch).expect("step"))
        });
        let mut batched = BatchedMaml::new(config, model, device).expect("valid maml");
        group.bench_function(format!("{order}/task_batched"), |b| {
            b.iter(|| batched.meta_step(&batch).expect("step"))
        });
    }
    group.finish();
}

fn conv4_fwd_bwd<B: Backend>(c: &mut Criterion, name: &str) {
    let device = B::Device::default();
    let model = Conv4Config::new(5)
        .init::<Autodiff<B>>(0, &device)
        .expect("valid conv4");
    // 5-way 1-shot + 15 query per class = 80 images of 28x28.
    let x = Tensor::<Autodiff<B>, 4>::random([80, 1, 28, 28], Distribution::Default, &device);
    c.bench_function(&format!("conv4_forward_backward/{name}"), |b| {
        b.iter(|| {
            let loss = model.forward(x.clone()).powf_scalar(2.0).mean();
            loss.backward()
        })
    });
}

fn conv4(c: &mut Criterion) {
    conv4_fwd_bwd::<FlexCpu>(c, "flex");
    conv4_fwd_bwd::<NdArrayCpu>(c, "ndarray");
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(10);
    targets = maml_iteration, conv4
}
/// mimalloc, with freed memory kept mapped by `main` (`metalearn_train::allocator`).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() {
    metalearn_train::allocator::keep_freed_memory_mapped();
    benches();
    Criterion::default().configure_from_args().final_summary();
}
