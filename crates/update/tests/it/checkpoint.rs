//! Every learner's checkpoint holds its whole training state: a learner restored from the
//! state (written to bytes and read back) has the same parameters and iteration count, and its
//! next meta-step gives the same parameters as the original's — also while other threads of the
//! process run backward passes of their own (burn-autodiff's orphan clean-up used to free steps
//! of graphs still being built on another thread; `patches/burn-autodiff`).

use burn::backend::Autodiff;
use burn::module::AutodiffModule;
use metalearn_core::backend::Cpu as B;
use metalearn_core::checkpoint::{Checkpoint, LearnerState};
use metalearn_core::episode::{EpisodeData, HostBatch, TaskKind};
use metalearn_core::learner::MetaLearner;
use metalearn_update::{
    DistillConfig, EpisodicDistiller, FineTune, FineTuneConfig, MamlConfig, MamlPlusPlus,
    MamlPlusPlusConfig, MetaSgd, ProtoNet, ProtoNetConfig, Reptile, ReptileConfig,
};
use metalearn_zoo::{Conv4, Conv4Config};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;

type AB = Autodiff<B>;

/// A 3-way episode of 2 examples per class, 1 × 16 × 16 images that differ per `seed`.
fn images(seed: usize) -> EpisodeData {
    let (ways, shots, size) = (3, 2, 16);
    let batch = |salt: usize| {
        let n = ways * shots;
        let labels: Vec<usize> = (0..n).map(|i| i % ways).collect();
        let inputs: Vec<f32> = (0..n * size * size)
            .map(|i| ((i * 7919 + seed * 31 + salt) % 97) as f32 / 97.0)
            .collect();
        HostBatch::classification(inputs, vec![n, 1, size, size], labels, ways).unwrap()
    };
    EpisodeData {
        kind: TaskKind::Classification { ways },
        support: batch(0),
        query: batch(1),
    }
}

fn conv4(seed: u64) -> Conv4<AB> {
    Conv4Config::new(3)
        .with_input_size(16)
        .with_filters(4)
        .init::<AB>(seed, &Default::default())
        .unwrap()
}

fn resumes_exactly<L: MetaLearner<4> + Checkpoint>(make: impl Fn() -> L) {
    let batches: Vec<Vec<EpisodeData>> = (0..3)
        .map(|i| vec![images(2 * i), images(2 * i + 1)])
        .collect();
    let mut a = make();
    let name = a.learner_name();
    for b in &batches[..2] {
        a.meta_step(b).unwrap();
    }
    let state = LearnerState::from_bytes(&a.state().unwrap().to_bytes().unwrap()).unwrap();
    let mut b = make();
    assert_ne!(
        a.parameters(),
        b.parameters(),
        "{name}: training changed nothing"
    );
    b.load_state(&state).unwrap();
    assert_eq!(b.iterations(), 2, "{name}");
    assert_eq!(
        a.parameters(),
        b.parameters(),
        "{name}: restored parameters"
    );
    a.meta_step(&batches[2]).unwrap();
    b.meta_step(&batches[2]).unwrap();
    assert!(
        a.parameters() == b.parameters(),
        "{name}: the step after a restore differs (optimiser state or schedule not saved)"
    );
}

#[test]
fn every_learner_resumes_exactly_from_its_state() {
    let d = Default::default;
    let maml = || MamlConfig::new().with_inner_lr(0.1).with_threads(1);
    resumes_exactly(|| MetaSgd::<B, _, 4>::new(maml(), conv4(1), d()).unwrap());
    resumes_exactly(|| {
        let c = MamlPlusPlusConfig::new()
            .with_inner_steps(2)
            .with_threads(1)
            .with_anneal_iterations(5);
        MamlPlusPlus::<B, _, 4>::new(c, conv4(1), d()).unwrap()
    });
    // With per-step batch-norm weights and biases (BNWB): their copies and Adam state too.
    resumes_exactly(|| {
        let c = MamlPlusPlusConfig::new()
            .with_inner_steps(2)
            .with_threads(1)
            .with_per_step_groups(vec!["norms".into()]);
        MamlPlusPlus::<B, _, 4>::new(c, conv4(1), d()).unwrap()
    });
    resumes_exactly(|| {
        let c = ProtoNetConfig::new().with_lr_halving_every(2);
        ProtoNet::<B, _, 4>::new(c, conv4(1), d()).unwrap()
    });
    resumes_exactly(|| FineTune::<B, _, 4>::new(FineTuneConfig::new(), conv4(1), d()).unwrap());
    // Reptile's inner Adam carried from task to task: its moments are part of the state.
    for carry in [false, true] {
        resumes_exactly(|| {
            let c = ReptileConfig::new()
                .with_inner_adam(true)
                .with_inner_lr(0.01)
                .with_inner_steps(2)
                .with_anneal_to(10)
                .with_threads(1)
                .with_carry_adam(carry);
            Reptile::<B, _, 4>::new(c, conv4(1), d()).unwrap()
        });
    }
    resumes_exactly(|| {
        let teacher = conv4(9).valid();
        EpisodicDistiller::<B, _, _, 4>::new(DistillConfig::new(), conv4(1), teacher, 2, d())
            .unwrap()
    });
}

/// Runs `f` while another thread runs small backward passes in a loop (one plain
/// `Tensor::backward`, one through `parallel::backward`, and a `cat` — the op whose inputs
/// burn-autodiff 0.21 released too early); returns `f`'s result and the passes that ran.
fn under_backward_load<R>(f: impl FnOnce() -> R) -> (R, usize) {
    let stop = Arc::new(AtomicBool::new(false));
    let passes = Arc::new(AtomicUsize::new(0));
    let load = {
        let (stop, passes) = (stop.clone(), passes.clone());
        std::thread::spawn(move || {
            let d = Default::default();
            while !stop.load(Ordering::Relaxed) {
                let x = burn::tensor::Tensor::<AB, 2>::ones([16, 16], &d).require_grad();
                let y = burn::tensor::Tensor::cat(vec![x.clone(), x.clone().exp()], 0);
                let _ = y.clone().sum().backward();
                let _ = metalearn_core::parallel::backward(y.matmul(x).sum()).unwrap();
                passes.fetch_add(1, Ordering::Relaxed);
            }
        })
    };
    let r = f();
    stop.store(true, Ordering::Relaxed);
    load.join().unwrap();
    (r, passes.load(Ordering::Relaxed))
}

/// Three meta-steps from a fixed start, alone and with another thread running backward passes:
/// bit-identical parameters. Before the burn-autodiff patch, ProtoNet's and FineTune's differed
/// in 500+ of 531 parameters in 2 of 3 runs (gradient contributions were lost).
fn steps_ignore_concurrent_backward<L: MetaLearner<4> + Checkpoint>(make: impl Fn() -> L) {
    let train = || {
        let mut l = make();
        for i in 0..3 {
            l.meta_step(&[images(2 * i), images(2 * i + 1)]).unwrap();
        }
        (l.learner_name(), l.parameters())
    };
    let (name, alone) = train();
    for attempt in 0..3 {
        let ((_, loaded), passes) = under_backward_load(train);
        assert!(passes > 0, "{name}: the load thread ran no backward pass");
        let differ = alone.iter().zip(&loaded).filter(|(a, b)| a != b).count();
        assert_eq!(
            differ,
            0,
            "{name}, attempt {attempt}: {differ} of {} parameters differ when another thread \
             runs backward passes ({passes} ran)",
            alone.len()
        );
    }
}

#[test]
fn learner_steps_are_bit_identical_while_other_threads_run_backward_passes() {
    let d = Default::default;
    steps_ignore_concurrent_backward(|| {
        ProtoNet::<B, _, 4>::new(ProtoNetConfig::new(), conv4(1), d()).unwrap()
    });
    steps_ignore_concurrent_backward(|| {
        FineTune::<B, _, 4>::new(FineTuneConfig::new(), conv4(1), d()).unwrap()
    });
    steps_ignore_concurrent_backward(|| {
        let c = MamlConfig::new().with_inner_lr(0.1).with_threads(2);
        MetaSgd::<B, _, 4>::new(c, conv4(1), d()).unwrap()
    });
}
