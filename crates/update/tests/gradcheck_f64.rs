//! Exact second-order MAML meta-gradients against central finite differences, in f64.
//!
//! The meta-objective is F(θ) = mean_t L_query,t(φ_K,t(θ)), φ_{k+1} = φ_k − α ∇L_support,t(φ_k),
//! φ_0 = θ, so dF/dθ = mean_t Π_k (I − α ∇²L_support,t(φ_k)) ∇L_query,t(φ_K). We compare the
//! learner's gradient with (F(θ + h eᵢ) − F(θ − h eᵢ)) / 2h.
//!
//! This file is its own test binary (its own process): burn-ndarray's f32 and f64 backends share
//! one default dtype per process, and `init_f64` must run before any tensor is created.

#![allow(clippy::unwrap_used)]

use burn::backend::Autodiff;
use burn::module::AutodiffModule;
use metalearn_core::backend::{init_f64, NdArrayF64 as B};
use metalearn_core::episode::EpisodeData;
use metalearn_core::MetaLearner;
use metalearn_core::{params, MetaTrainable, SeedStream, TaskDistribution};
use metalearn_tasks::{InMemoryClasses, NWayKShot, NWayKShotConfig, Sinusoid, SinusoidConfig};
use metalearn_update::{BatchedMaml, Maml, MamlConfig, MamlPlusPlus, MamlPlusPlusConfig};
use metalearn_zoo::{Conv4Config, ConvPath, MlpConfig};
use rand::Rng;
use std::sync::{Arc, Once};

static F64: Once = Once::new();

fn setup() {
    F64.call_once(|| assert!(init_f64(), "ndarray did not switch to f64"));
}

fn rel_err(a: &[f64], b: &[f64]) -> f64 {
    let num: f64 = a
        .iter()
        .zip(b)
        .map(|(x, y)| (x - y).powi(2))
        .sum::<f64>()
        .sqrt();
    let den: f64 = b.iter().map(|y| y * y).sum::<f64>().sqrt();
    num / den.max(1e-300)
}

/// Central differences of `f` at `base`, every coordinate, step `h`.
fn central(base: &[f64], h: f64, f: impl Fn(&[f64]) -> f64) -> Vec<f64> {
    (0..base.len())
        .map(|i| {
            let (mut a, mut b) = (base.to_vec(), base.to_vec());
            a[i] += h;
            b[i] -= h;
            (f(&a) - f(&b)) / (2.0 * h)
        })
        .collect()
}

/// Central differences of the meta-objective on the coordinates `coords`.
fn finite_differences<M: MetaTrainable<B, D>, const D: usize>(
    maml: &Maml<B, M, D>,
    episodes: &[EpisodeData],
    coords: &[usize],
    h: f64,
) -> Vec<f64> {
    let theta = maml.model().valid();
    let base = params::to_vec(&theta);
    coords
        .iter()
        .map(|&i| {
            let mut p = base.clone();
            p[i] = base[i] + h;
            let fp = maml
                .meta_objective(&params::from_vec(theta.clone(), &p).unwrap(), episodes)
                .unwrap();
            p[i] = base[i] - h;
            let fm = maml
                .meta_objective(&params::from_vec(theta.clone(), &p).unwrap(), episodes)
                .unwrap();
            (fp - fm) / (2.0 * h)
        })
        .collect()
}

fn sinusoid_batch(n: usize, k: usize) -> Vec<EpisodeData> {
    let tasks = Sinusoid::new(SinusoidConfig::new(k, k)).unwrap();
    (0..n)
        .map(|j| {
            tasks
                .sample(SeedStream::new(11).child(j as u64).seed())
                .unwrap()
        })
        .collect()
}

fn check_mlp(steps: usize) {
    setup();
    let device = Default::default();
    let model = MlpConfig::new(vec![1, 8, 8, 1])
        .init::<Autodiff<B>>(3, &device)
        .unwrap();
    let episodes = sinusoid_batch(3, 5);
    let cfg = MamlConfig::new()
        .with_inner_steps(steps)
        .with_inner_lr(0.05);
    let so = Maml::new(cfg.clone(), model.clone(), device).unwrap();
    let g = so.meta_gradient_vec(&episodes).unwrap();
    let coords: Vec<usize> = (0..g.len()).collect();
    let fd = finite_differences(&so, &episodes, &coords, 1e-5);
    let e = rel_err(&g, &fd);
    assert!(e < 1e-6, "MLP, {steps} inner steps: relative error {e:e}");

    // The task-batched fast path gives the same meta-gradient.
    let batched = BatchedMaml::new(cfg.clone(), model.clone(), device).unwrap();
    let gb = batched.meta_gradient_vec(&episodes).unwrap();
    let eb = rel_err(&gb, &g);
    assert!(eb < 1e-9, "batched vs per-task: relative error {eb:e}");

    // First order drops the Hessian terms and so differs measurably (both paths).
    let fo = Maml::new(cfg.clone().with_second_order(false), model.clone(), device).unwrap();
    let gf = fo.meta_gradient_vec(&episodes).unwrap();
    let ef = rel_err(&gf, &g);
    assert!(
        ef > 1e-3,
        "first order should differ from second order, got {ef:e}"
    );
    let fob = BatchedMaml::new(cfg.with_second_order(false), model, device).unwrap();
    let gfb = fob.meta_gradient_vec(&episodes).unwrap();
    assert!(
        rel_err(&gfb, &gf) < 1e-9,
        "batched first order differs from per-task"
    );
}

/// First-order MAML's meta-gradient is, by definition, the query-loss gradient at each task's
/// adapted parameters φ (dφ/dθ taken as the identity), averaged over the meta-batch: checked
/// against central differences of the query loss around φ, for an MLP and a Conv4 (the
/// parameter-id bookkeeping that carries φ's gradient back to θ must lose no layer).
#[test]
fn first_order_gradient_is_the_query_gradient_at_the_adapted_parameters() {
    use metalearn_update::inner::{adapt, evaluate, Sizes};
    setup();
    let device = Default::default();
    fn check<M: MetaTrainable<B, D>, const D: usize>(
        model: M,
        episodes: &[EpisodeData],
        cfg: MamlConfig,
        what: &str,
    ) {
        let device = Default::default();
        let fo = Maml::new(cfg.clone().with_second_order(false), model, device).unwrap();
        let g = fo.meta_gradient_vec(episodes).unwrap();
        // Central differences at two step sizes; ReLU, max-pool and batch norm put kinks near
        // φ, so compare on the coordinates where the two agree (most must).
        let (mut fd_a, mut fd_b) = (vec![0.0; g.len()], vec![0.0; g.len()]);
        for ep in episodes {
            let sizes: Sizes<burn::tensor::Tensor<B, 1>> = Sizes::Uniform(cfg.inner_lr);
            let phi =
                adapt::<B, M, D>(fo.model().valid(), ep, cfg.inner_steps, &sizes, &device).unwrap();
            let base = params::to_vec(&phi);
            let q = |p: &[f64]| {
                let m = params::from_vec(phi.clone(), p).unwrap();
                evaluate::<B, _, D>(&m, ep, true, &device).unwrap().0
            };
            let n = episodes.len() as f64;
            for (fd, h) in [(&mut fd_a, 1e-6), (&mut fd_b, 2.5e-7)] {
                for (acc, d) in fd.iter_mut().zip(central(&base, h, q)) {
                    *acc += d / n;
                }
            }
        }
        let smooth: Vec<usize> = (0..g.len())
            .filter(|&k| (fd_a[k] - fd_b[k]).abs() <= 1e-6 * fd_a[k].abs().max(1e-2))
            .collect();
        assert!(
            smooth.len() * 10 >= g.len() * 8,
            "{what}: only {} of {} coordinates away from kinks",
            smooth.len(),
            g.len()
        );
        let gs: Vec<f64> = smooth.iter().map(|&k| g[k]).collect();
        let fd: Vec<f64> = smooth.iter().map(|&k| fd_a[k]).collect();
        let e = rel_err(&gs, &fd);
        assert!(
            e < 1e-6,
            "{what}: first-order gradient vs central differences at φ: {e:e}"
        );
    }
    let mlp = MlpConfig::new(vec![1, 8, 8, 1])
        .init::<Autodiff<B>>(3, &device)
        .unwrap();
    let cfg = MamlConfig::new().with_inner_steps(2).with_inner_lr(0.05);
    check(mlp, &sinusoid_batch(3, 5), cfg, "MLP");
    let conv = Conv4Config::new(3)
        .with_filters(2)
        .with_input_size(16)
        .init::<Autodiff<B>>(5, &device)
        .unwrap();
    let cfg = MamlConfig::new().with_inner_steps(1).with_inner_lr(0.4);
    check(conv, &random_image_episodes(1, 2), cfg, "Conv4");
}

/// BOIL's mask (the last layer frozen in the inner loop) under exact second order.
#[test]
fn boil_mlp_second_order_matches_finite_differences() {
    setup();
    let device = Default::default();
    let model = MlpConfig::new(vec![1, 8, 8, 1])
        .init::<Autodiff<B>>(3, &device)
        .unwrap();
    let episodes = sinusoid_batch(3, 5);
    let cfg = MamlConfig::new()
        .with_inner_steps(2)
        .with_inner_lr(0.05)
        .with_freeze(vec!["layers.2".into()]);
    let boil = Maml::new(cfg, model.clone(), device).unwrap();
    let g = boil.meta_gradient_vec(&episodes).unwrap();
    let coords: Vec<usize> = (0..g.len()).collect();
    let e = rel_err(&g, &finite_differences(&boil, &episodes, &coords, 1e-5));
    assert!(e < 1e-6, "BOIL: relative error {e:e}");
    // Adaptation leaves the frozen head where it was and moves the body.
    let phi = boil.adapt(&episodes[0], 3).unwrap();
    let names = params::names(&phi);
    let (before, after) = (params::tensors(&model.valid()), params::tensors(&phi));
    for ((name, (_, b)), (_, a)) in names.iter().zip(&before).zip(&after) {
        let moved: f64 = (b.clone() - a.clone())
            .abs()
            .into_data()
            .iter::<f64>()
            .sum();
        if name.starts_with("layers.2") {
            assert_eq!(moved, 0.0, "{name} moved");
        } else {
            assert!(moved > 0.0, "{name} did not move");
        }
    }
}

/// MAML++ with per-step copies of a parameter group (BNWB's mechanism; here the MLP's middle
/// layer, which has no batch norm): the meta-gradients of θ, the rates and the copies against
/// central differences; the copies are not adapted, so θ's own copy of that group gets no
/// gradient.
#[test]
fn maml_plus_plus_per_step_parameters_match_finite_differences() {
    setup();
    let device = Default::default();
    let model = MlpConfig::new(vec![1, 6, 6, 1])
        .init::<Autodiff<B>>(5, &device)
        .unwrap();
    let episodes = sinusoid_batch(2, 5);
    let cfg = MamlPlusPlusConfig::new()
        .with_inner_steps(2)
        .with_inner_lr(0.05)
        .with_msl_iterations(10)
        .with_meta_batch_size(2)
        .with_per_step_groups(vec!["layers.1".into()]);
    let pp = MamlPlusPlus::new(cfg, model, device).unwrap();
    let (g, gr, gc) = pp.meta_gradient_vecs(&episodes).unwrap();
    // layers.1: a 6×6 weight and a bias of 6, one copy per iterate (3 for 2 steps).
    assert_eq!(gc.len(), 3 * (36 + 6));
    let theta = pp.model().valid();
    let base = params::to_vec(&theta);
    let (rates, copies) = (pp.rates().unwrap(), pp.step_params().unwrap());
    let h = 1e-5;
    let f = |p: &[f64], c: &[Vec<Vec<f64>>]| {
        pp.meta_objective_with(
            &params::from_vec(theta.clone(), p).unwrap(),
            Some(rates.clone()),
            Some(c.to_vec()),
            &episodes,
        )
        .unwrap()
    };
    let fd = central(&base, h, |p| f(p, &copies));
    let e = rel_err(&g, &fd);
    assert!(
        e < 1e-6,
        "MAML++ θ with per-step copies: relative error {e:e}"
    );
    // θ's own layers.1 (tensors 2 and 3: 36 + 6 values after 6 + 6) is replaced everywhere.
    assert!(g[12..12 + 42].iter().all(|v| *v == 0.0));
    assert!(fd[12..12 + 42].iter().all(|v| v.abs() < 1e-9));
    // The copies, flattened tensor by tensor, row-major [iterate, element] as `gc`.
    let flat: Vec<f64> = copies.iter().flatten().flatten().copied().collect();
    let unflatten = |v: &[f64]| -> Vec<Vec<Vec<f64>>> {
        let mut it = v.iter().copied();
        copies
            .iter()
            .map(|t| {
                t.iter()
                    .map(|r| r.iter().map(|_| it.next().unwrap()).collect())
                    .collect()
            })
            .collect()
    };
    let fdc = central(&flat, h, |c| f(&base, &unflatten(c)));
    let ec = rel_err(&gc, &fdc);
    assert!(ec < 1e-6, "MAML++ per-step copies: relative error {ec:e}");
    // Every iterate's copy takes part: support of step 1 (copy 0), query and support after
    // step 1 (copy 1), query after step 2 (copy 2).
    for s in 0..3 {
        let row: f64 = (0..36).map(|k| gc[s * 36 + k].abs()).sum();
        assert!(row > 0.0, "copy {s} of layers.1.weight has no gradient");
    }
    assert!(!gr.is_empty());
}

/// MAML++ (multi-step loss, learned per-step rates, 3 steps): the meta-gradients of θ and of
/// the rates against central differences of the same weighted objective; first order (its
/// derivative-order annealing phase) differs.
#[test]
fn maml_plus_plus_meta_gradients_match_finite_differences() {
    setup();
    let device = Default::default();
    let model = MlpConfig::new(vec![1, 8, 8, 1])
        .init::<Autodiff<B>>(4, &device)
        .unwrap();
    let episodes = sinusoid_batch(3, 5);
    let cfg = MamlPlusPlusConfig::new()
        .with_inner_steps(3)
        .with_inner_lr(0.04)
        .with_msl_iterations(10)
        .with_meta_batch_size(3);
    let pp = MamlPlusPlus::new(cfg.clone(), model.clone(), device).unwrap();
    let (g, gr) = pp.meta_gradient_vec(&episodes).unwrap();
    assert_eq!(gr.len(), 3 * 6, "one rate per step and tensor");
    let theta = pp.model().valid();
    let base = params::to_vec(&theta);
    let rates = pp.rates().unwrap();
    let h = 1e-5;
    let f = |p: &[f64], r: &[Vec<f64>]| {
        pp.meta_objective(
            &params::from_vec(theta.clone(), p).unwrap(),
            Some(r.to_vec()),
            &episodes,
        )
        .unwrap()
    };
    let fd = central(&base, h, |p| f(p, &rates));
    let e = rel_err(&g, &fd);
    assert!(e < 1e-6, "MAML++ θ: relative error {e:e}");
    let fdr: Vec<f64> = (0..gr.len())
        .map(|j| {
            let (k, i) = (j / 6, j % 6);
            let (mut a, mut b) = (rates.clone(), rates.clone());
            a[k][i] += h;
            b[k][i] -= h;
            (f(&base, &a) - f(&base, &b)) / (2.0 * h)
        })
        .collect();
    let er = rel_err(&gr, &fdr);
    assert!(er < 1e-6, "MAML++ rates: relative error {er:e}");
    // Derivative-order annealing: the first-order phase drops the Hessian terms.
    let fo = MamlPlusPlus::new(cfg.with_first_order_iterations(5), model, device).unwrap();
    let (gf, grf) = fo.meta_gradient_vec(&episodes).unwrap();
    assert!(rel_err(&gf, &g) > 1e-3);
    assert!(
        grf.iter().any(|v| *v != 0.0),
        "first order still learns the rates"
    );
}

#[test]
fn mlp_second_order_one_step_matches_finite_differences() {
    check_mlp(1);
}

#[test]
fn mlp_second_order_three_steps_matches_finite_differences() {
    check_mlp(3);
}

/// `n` 3-way 2-shot episodes (2 queries per class) of 16×16 images with `channels` channels.
/// Random pixels (seeded): structured synthetic images make exact ties and dead channels
/// common, where the loss has kinks and central differences stop being a reference.
fn random_image_episodes(channels: usize, n: u64) -> Vec<EpisodeData> {
    let mut r = metalearn_core::seed::rng(9);
    let classes: Vec<Vec<f32>> = (0..4)
        .map(|_| {
            (0..4 * channels * 256)
                .map(|_| r.random::<f32>() - 0.5)
                .collect()
        })
        .collect();
    let ds = Arc::new(InMemoryClasses::new(vec![channels, 16, 16], classes).unwrap());
    let sampler = NWayKShot::new(ds, NWayKShotConfig::new(3, 2, 2)).unwrap();
    (0..n).map(|s| sampler.sample(s).unwrap()).collect()
}

fn check_conv(steps: usize, path: ConvPath) {
    setup();
    let device = Default::default();
    // Conv4's architecture (4 × conv-BN-ReLU-pool + head) at a size finite differences can afford.
    let model = Conv4Config::new(3)
        .with_filters(4)
        .with_input_size(16)
        .with_conv_path(path)
        .init::<Autodiff<B>>(5, &device)
        .unwrap();
    let episodes = random_image_episodes(1, 2);
    let cfg = MamlConfig::new().with_inner_steps(steps).with_inner_lr(0.1);
    let so = Maml::new(cfg.clone(), model.clone(), device).unwrap();
    let g = so.meta_gradient_vec(&episodes).unwrap();
    // Every `stride`-th coordinate: covers every layer (conv, BN, head) at a fraction of the cost.
    let stride = if steps == 1 { 7 } else { 19 };
    let coords: Vec<usize> = (0..g.len()).step_by(stride).collect();
    // ReLU and max-pool make the conv net's loss piecewise smooth, and batch norm over a handful
    // of examples puts kinks within 1e-5 of θ. Take central differences at two step sizes and
    // keep the coordinates where they agree (away from kinks); most must survive.
    let fd_a = finite_differences(&so, &episodes, &coords, 1e-6);
    let fd_b = finite_differences(&so, &episodes, &coords, 2.5e-7);
    let smooth: Vec<usize> = (0..coords.len())
        .filter(|&k| (fd_a[k] - fd_b[k]).abs() <= 1e-6 * fd_a[k].abs().max(1e-2))
        .collect();
    assert!(
        smooth.len() * 10 >= coords.len() * 8,
        "only {} of {} coordinates away from kinks",
        smooth.len(),
        coords.len()
    );
    let coords: Vec<usize> = smooth.iter().map(|&k| coords[k]).collect();
    let fd: Vec<f64> = smooth.iter().map(|&k| fd_a[k]).collect();
    let gs: Vec<f64> = coords.iter().map(|&i| g[i]).collect();
    let e = rel_err(&gs, &fd);
    for (k, (a, b)) in gs.iter().zip(&fd).enumerate() {
        if (a - b).abs() > 1e-6 * b.abs().max(1e-3) {
            eprintln!("coord {}: analytic {a:e} fd {b:e}", coords[k]);
        }
    }
    assert!(
        e < 1e-6,
        "conv net, {steps} inner steps: relative error {e:e}"
    );
    let fo = Maml::new(cfg.with_second_order(false), model, device).unwrap();
    let gf = fo.meta_gradient_vec(&episodes).unwrap();
    assert!(rel_err(&gf, &g) > 1e-3);
}

/// The default path on CPU backends: channel-major im2col convolutions.
#[test]
fn conv_second_order_one_step_matches_finite_differences() {
    check_conv(1, ConvPath::Auto);
}

#[test]
fn conv_second_order_three_steps_matches_finite_differences() {
    check_conv(3, ConvPath::Auto);
}

/// burn's `conv2d` path (the default on GPU backends).
#[test]
fn conv_second_order_burn_conv2d_path_matches_finite_differences() {
    check_conv(1, ConvPath::Burn);
}

/// The task-batched Conv4 (vmap-style: one batched matmul per convolution over the meta-batch,
/// batch norm with per-task statistics) gives the per-task path's meta-gradient, second and
/// first order, for one-channel (shifted-slice im2col) and three-channel images, with and
/// without batch norm's learned scale (without it, `γ`'s meta-gradient is exactly zero on both
/// paths).
#[test]
fn task_batched_conv4_meta_gradient_equals_the_per_task_one() {
    setup();
    let device = Default::default();
    for (channels, steps, second_order, bn_scale) in [
        (1, 2, true, true),
        (3, 1, true, true),
        (1, 1, false, true),
        (1, 2, true, false),
        (1, 1, false, false),
    ] {
        let model = Conv4Config::new(3)
            .with_filters(4)
            .with_input_size(16)
            .with_in_channels(channels)
            .with_bn_scale(bn_scale)
            .init::<Autodiff<B>>(5, &device)
            .unwrap();
        let episodes = random_image_episodes(channels, 3);
        let cfg = MamlConfig::new()
            .with_inner_steps(steps)
            .with_inner_lr(0.1)
            .with_second_order(second_order);
        let per_task = Maml::new(cfg.clone(), model.clone(), device).unwrap();
        let g = per_task.meta_gradient_vec(&episodes).unwrap();
        let batched = BatchedMaml::new(cfg, model.clone(), device).unwrap();
        let gb = batched.meta_gradient_vec(&episodes).unwrap();
        let e = rel_err(&gb, &g);
        assert!(
            e < 1e-9,
            "{channels} channels, {steps} steps, second order {second_order}, bn_scale \
             {bn_scale}: batched vs per-task relative error {e:e}"
        );
        // Where the γ coordinates sit in the flattened gradient.
        let mut offset = 0;
        let mut gamma_grads = Vec::new();
        let names = metalearn_core::params::names(&model);
        for (name, (_, p)) in names.iter().zip(metalearn_core::params::tensors(&model)) {
            let n = p.dims()[0];
            if name.ends_with("gamma") {
                gamma_grads.extend_from_slice(&g[offset..offset + n]);
                gamma_grads.extend_from_slice(&gb[offset..offset + n]);
            }
            offset += n;
        }
        assert_eq!(offset, g.len());
        assert_eq!(
            gamma_grads.iter().all(|&x| x == 0.0),
            !bn_scale,
            "bn_scale {bn_scale}: γ meta-gradients {gamma_grads:?}"
        );
    }
}

/// Hinton et al.'s distillation loss: its autodiff gradient with respect to the student's logits
/// matches central differences in f64 (and so does the gradient through a student network).
#[test]
fn distillation_loss_gradient_matches_finite_differences() {
    use burn::tensor::Tensor;
    use metalearn_core::loss::scalar;
    use metalearn_update::{distillation_loss, soft_targets};
    setup();
    type A = Autodiff<B>;
    let d = Default::default();
    let z0 = vec![0.4, -1.2, 0.7, 2.0, 0.1, -0.3];
    let teacher = Tensor::<B, 2>::from_floats([[1.0, 0.5, -2.0], [0.0, 2.0, 0.3]], &d);
    let (t, a) = (3.0, 0.6);
    let soft = soft_targets(&[teacher], &[1.0], t).unwrap();
    let y = Tensor::<B, 2>::from_floats([[0.0, 1.0, 0.0], [1.0, 0.0, 0.0]], &d);
    let f = |z: &[f64]| {
        // from_data keeps f64 (from_floats would round through f32 and swamp h).
        let zt = Tensor::<B, 1>::from_data(burn::tensor::TensorData::new(z.to_vec(), [6]), &d)
            .reshape([2, 3]);
        scalar(distillation_loss(zt, soft.clone(), y.clone(), t, a).unwrap())
    };
    let zt = Tensor::<A, 1>::from_data(burn::tensor::TensorData::new(z0.clone(), [6]), &d)
        .reshape([2, 3])
        .require_grad();
    let loss = distillation_loss(
        zt.clone(),
        Tensor::from_inner(soft.clone()),
        Tensor::from_inner(y.clone()),
        t,
        a,
    )
    .unwrap();
    let g: Vec<f64> = zt
        .grad(&loss.backward())
        .unwrap()
        .into_data()
        .iter::<f64>()
        .collect();
    let h = 1e-6;
    let fd: Vec<f64> = (0..z0.len())
        .map(|k| {
            let (mut up, mut dn) = (z0.clone(), z0.clone());
            up[k] += h;
            dn[k] -= h;
            (f(&up) - f(&dn)) / (2.0 * h)
        })
        .collect();
    let err = rel_err(&g, &fd);
    eprintln!("distillation loss gradient: relative error {err:.2e}");
    assert!(err < 1e-7, "{g:?} vs {fd:?}");
}
