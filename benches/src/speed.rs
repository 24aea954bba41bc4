//! Speed suite: Conv4 forward + backward, Conv4 MAML / FOMAML meta-iterations, a ProtoNet
//! episode, sinusoid MAML and a per-layer breakdown, at 1 and 2 threads, with median / min / max
//! and the load average — and, with `--peers PYTHON`, the same workloads in PyTorch
//! (`benches/peers/speed.py`) run interleaved with ours (A B A B) so that the ratios come from
//! one time window.
//!
//! Writes `report.md` and `results.json`. Speed is measured here, never asserted in tests.

use crate::Args;
use anyhow::{bail, Context, Result};
use burn::backend::Autodiff;
use burn::tensor::activation::relu;
use burn::tensor::backend::Backend;
use burn::tensor::{Distribution, Tensor};
use metalearn_core::episode::{EpisodeData, HostBatch, TaskKind};
use metalearn_core::learner::MetaLearner;
use metalearn_core::parallel::run_exclusive;
use metalearn_core::seed::rng;
use metalearn_core::stats::median;
use metalearn_core::{MetaModule, SeedStream, TaskDistribution};
use metalearn_tasks::{Sinusoid, SinusoidConfig};
use metalearn_update::{BatchedMaml, Maml, MamlConfig, ProtoNet, ProtoNetConfig};
use metalearn_zoo::{
    batch_norm_channel_major, max_pool2x2, Conv2d, Conv4, Conv4Config, ConvPath, MlpConfig,
};
use rand::Rng as _;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;
use std::process::Command;
use std::time::Instant;

/// 5-way 1-shot, 15 queries per class (the MAML / learn2learn Omniglot setting).
const WAYS: usize = 5;
const QUERY: usize = 15;
const SIZE: usize = 28;

/// One workload's timings on one system at one thread count.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Timing {
    /// Workload name (shared with `benches/peers/speed.py`).
    pub workload: String,
    /// `metalearn` or `torch/<variant>`.
    pub system: String,
    /// Threads.
    pub threads: usize,
    /// PyTorch's device (`cpu` or `cuda`); absent for ours (the report names our backend).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device: Option<String>,
    /// Wall times of the timed runs, ms.
    pub times_ms: Vec<f64>,
    /// 1-minute load average before and after.
    pub load: [f64; 2],
    /// Floating-point work of one run (multiply-adds count 2), when known.
    pub gflop: Option<f64>,
}

impl Timing {
    fn median(&self) -> f64 {
        median(&self.times_ms).unwrap_or(f64::NAN)
    }
    fn min(&self) -> f64 {
        self.times_ms.iter().copied().fold(f64::INFINITY, f64::min)
    }
    fn max(&self) -> f64 {
        self.times_ms.iter().copied().fold(0.0, f64::max)
    }
}

#[derive(Serialize)]
struct Results {
    suite: &'static str,
    backend: String,
    quick: bool,
    cpu: String,
    peak_gflops_per_core: f64,
    gemm_gflops: BTreeMap<usize, f64>,
    /// PyTorch's device when `--peers` ran.
    peers_device: Option<String>,
    /// A GPU backend: the CPU's FLOP peak does not apply (the report leaves the share out).
    gpu: bool,
    timings: Vec<Timing>,
}

fn loadavg() -> f64 {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|s| s.split_whitespace().next().and_then(|v| v.parse().ok()))
        .unwrap_or(f64::NAN)
}

/// The CPU's model name and its nominal f32 peak per core (GFLOP/s): clock × FMA width × 2
/// FMA units (AVX-512: 16 lanes, AVX2: 8) × 2 FLOP per FMA. AMD's Zen 4 (family 25 with
/// AVX-512) runs a 512-bit instruction as two 256-bit halves, so its FMA width is 8 lanes.
fn cpu_peak() -> (String, f64) {
    let info = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let field = |name: &str| {
        info.lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split(':').nth(1))
            .map(|v| v.trim().to_string())
    };
    let model = field("model name").unwrap_or_else(|| "unknown CPU".into());
    let mhz: f64 = field("cpu MHz").and_then(|v| v.parse().ok()).unwrap_or(0.0);
    let flags = field("flags").unwrap_or_default();
    let has = |f: &str| flags.split_whitespace().any(|x| x == f);
    let zen4 = field("vendor_id").as_deref() == Some("AuthenticAMD")
        && field("cpu family").as_deref() == Some("25");
    let lanes = if has("avx512f") && !zen4 {
        16.0
    } else if has("avx512f") || has("avx2") {
        8.0
    } else {
        4.0
    };
    let fma = if has("fma") { 2.0 } else { 1.0 };
    (model, mhz / 1000.0 * lanes * fma * 2.0)
}

/// A warm-up run longer than this (s) cuts the timed runs to 3 (also in `peers/speed.py`).
const SLOW_SECONDS: f64 = 2.0;

/// Time `f`: `warmup` untimed runs, then `iters` timed ones, on an exclusive lane of `threads`.
fn time<F: FnMut() -> Result<()> + Send>(
    threads: usize,
    warmup: usize,
    iters: usize,
    mut f: F,
) -> Result<(Vec<f64>, [f64; 2])> {
    let load0 = loadavg();
    let mut run = || -> Result<Vec<f64>> {
        let mut slow = false;
        for _ in 0..warmup {
            let t = Instant::now();
            f()?;
            slow |= t.elapsed().as_secs_f64() > SLOW_SECONDS;
        }
        // Multi-second workloads (meta-batch 32) get fewer timed runs.
        let iters = if slow { iters.min(3) } else { iters };
        let mut times = Vec::with_capacity(iters);
        for _ in 0..iters {
            let t = Instant::now();
            f()?;
            times.push(t.elapsed().as_secs_f64() * 1e3);
        }
        Ok(times)
    };
    // The lane's error type is metalearn's; carry ours through it.
    let times = run_exclusive(threads, move || Ok(run()))??;
    Ok((times, [load0, loadavg()]))
}

/// A synthetic 5-way 1-shot episode of 28×28 images with standard-normal pixels.
fn episode(seed: u64) -> Result<EpisodeData> {
    let mut r = rng(seed);
    let mut images = |n: usize| -> Vec<f32> {
        (0..n * SIZE * SIZE)
            .map(|_| {
                // Box–Muller
                let (u, v): (f64, f64) = (r.random::<f64>().max(1e-12), r.random());
                ((-2.0 * u.ln()).sqrt() * (std::f64::consts::TAU * v).cos()) as f32
            })
            .collect()
    };
    let support = HostBatch::classification(
        images(WAYS),
        vec![WAYS, 1, SIZE, SIZE],
        (0..WAYS).collect(),
        WAYS,
    )?;
    let query = HostBatch::classification(
        images(WAYS * QUERY),
        vec![WAYS * QUERY, 1, SIZE, SIZE],
        (0..WAYS * QUERY).map(|i| i / QUERY).collect(),
        WAYS,
    )?;
    Ok(EpisodeData {
        kind: TaskKind::Classification { ways: WAYS },
        support,
        query,
    })
}

/// FLOPs of one 3×3 convolution forward (multiply-adds count 2).
fn conv_flops(n: usize, c_in: usize, c_out: usize, s: usize) -> f64 {
    2.0 * (n * s * s * c_in * c_out * 9) as f64
}

/// Conv4 forward + backward FLOPs on `n` 28×28 images (convolutions only; the input gradient of
/// block 1 is not needed).
fn conv4_fwd_bwd_flops(n: usize) -> f64 {
    (0..4)
        .map(|b| {
            let c_in = if b == 0 { 1 } else { 64 };
            conv_flops(n, c_in, 64, SIZE >> b) * if b == 0 { 2.0 } else { 3.0 }
        })
        .sum()
}

/// A named workload: runs once per call.
type Work<'a> = Box<dyn FnMut() -> Result<()> + Send + 'a>;

struct Workload<'a> {
    name: String,
    gflop: Option<f64>,
    work: Work<'a>,
}

fn conv4_model<B: Backend>(path: ConvPath) -> Result<Conv4<Autodiff<B>>> {
    Ok(Conv4Config::new(WAYS)
        .with_conv_path(path)
        .init::<Autodiff<B>>(0, &Default::default())?)
}

/// The workloads at `threads` threads (learners whose task pool needs the count are built here).
fn workloads<'a, B: Backend>(
    threads: usize,
    quick: bool,
    batches: &'a BTreeMap<usize, Vec<EpisodeData>>,
    sinusoid: &'a [EpisodeData],
) -> Result<Vec<Workload<'a>>> {
    type A<B> = Autodiff<B>;
    let device = B::Device::default();
    let mut out: Vec<Workload<'a>> = Vec::new();

    // Conv4 forward + backward on 80 images, both convolution paths, and forward alone.
    let x = Tensor::<A<B>, 4>::random([80, 1, SIZE, SIZE], Distribution::Normal(0.0, 1.0), &device);
    for (suffix, path) in [("", ConvPath::Auto), ("/burn_conv2d", ConvPath::Burn)] {
        let model = conv4_model::<B>(path)?;
        let x = x.clone();
        out.push(Workload {
            name: format!("conv4_fwd_bwd_80{suffix}"),
            gflop: Some(conv4_fwd_bwd_flops(80) / 1e9),
            work: Box::new(move || {
                let loss = model.forward(x.clone()).powf_scalar(2.0).mean();
                let _ = metalearn_core::parallel::backward(loss)?;
                Ok(())
            }),
        });
    }
    let model = conv4_model::<B>(ConvPath::Auto)?;
    let inner = burn::module::AutodiffModule::valid(&model);
    let xi = x.clone().inner();
    out.push(Workload {
        name: "conv4_fwd_80_nograd".into(),
        gflop: Some(conv4_fwd_bwd_flops(80) / 3.0 / 1e9),
        work: Box::new(move || {
            let _ = inner.forward(xi.clone()).into_data();
            Ok(())
        }),
    });

    // Conv4 5-way 1-shot MAML: 1 inner step, inner lr 0.4, Adam 0.003 (learn2learn's example).
    for (&mb, batch) in batches {
        if quick && mb > 4 {
            continue;
        }
        for second_order in [true, false] {
            let config = MamlConfig::new()
                .with_inner_lr(0.4)
                .with_outer_lr(0.003)
                .with_meta_batch_size(mb)
                .with_second_order(second_order)
                .with_threads(threads);
            let mut maml = Maml::new(
                config.clone(),
                conv4_model::<B>(ConvPath::Auto)?,
                device.clone(),
            )?;
            let order = if second_order { "maml2" } else { "fomaml" };
            out.push(Workload {
                name: format!("conv4_5w1s/{order}_mb{mb}"),
                gflop: None,
                work: Box::new(move || {
                    maml.meta_step(batch)?;
                    Ok(())
                }),
            });
            // The same meta-gradient with the meta-batch as one stacked computation.
            let mut batched =
                BatchedMaml::new(config, conv4_model::<B>(ConvPath::Auto)?, device.clone())?;
            out.push(Workload {
                name: format!("conv4_5w1s/{order}_mb{mb}/task_batched"),
                gflop: None,
                work: Box::new(move || {
                    batched.meta_step(batch)?;
                    Ok(())
                }),
            });
        }
    }

    // One ProtoNet 5-way 1-shot episode (support and query embedded separately).
    let first = batches
        .values()
        .next()
        .context("no meta-batch")?
        .first()
        .context("empty meta-batch")?;
    let mut proto = ProtoNet::new(
        ProtoNetConfig::new(),
        conv4_model::<B>(ConvPath::Auto)?,
        device.clone(),
    )?;
    out.push(Workload {
        name: "protonet_5w1s_episode".into(),
        gflop: None,
        work: Box::new(move || {
            proto.meta_step(std::slice::from_ref(first))?;
            Ok(())
        }),
    });

    // Sinusoid MAML, meta-batch 25, K = 10 (Finn et al. 2017): per-task and task-batched.
    for second_order in [true, false] {
        let config = MamlConfig::new()
            .with_second_order(second_order)
            .with_threads(threads);
        let mlp = MlpConfig::new(vec![1, 40, 40, 1]).init::<A<B>>(0, &device)?;
        let order = if second_order { "maml2" } else { "fomaml" };
        let mut per_task = Maml::new(config.clone(), mlp.clone(), device.clone())?;
        out.push(Workload {
            name: format!("sinusoid/{order}_mb25"),
            gflop: None,
            work: Box::new(move || {
                per_task.meta_step(sinusoid)?;
                Ok(())
            }),
        });
        let mut batched = BatchedMaml::new(config, mlp, device.clone())?;
        out.push(Workload {
            name: format!("sinusoid/{order}_mb25/task_batched"),
            gflop: None,
            work: Box::new(move || {
                batched.meta_step(sinusoid)?;
                Ok(())
            }),
        });
    }

    layer_workloads::<B>(&mut out)?;
    Ok(out)
}

/// One layer (or a whole block) of the per-layer breakdown.
#[derive(Debug, Clone, Copy)]
enum Op {
    /// The convolution on the default (channel-major) path.
    Conv,
    /// burn's `conv2d` on `[N, C, H, W]`.
    ConvBurn,
    /// Channels-last im2col by a row `select`.
    ConvChannelsLast,
    BatchNorm,
    Pool,
    Relu,
    /// conv → batch norm → pool → ReLU, channel-major.
    Block,
}

impl Op {
    const ALL: [Op; 7] = [
        Op::Conv,
        Op::ConvBurn,
        Op::ConvChannelsLast,
        Op::BatchNorm,
        Op::Pool,
        Op::Relu,
        Op::Block,
    ];

    fn name(self) -> &'static str {
        match self {
            Op::Conv => "conv",
            Op::ConvBurn => "conv_burn_conv2d",
            Op::ConvChannelsLast => "conv_channels_last",
            Op::BatchNorm => "bn",
            Op::Pool => "pool",
            Op::Relu => "relu",
            Op::Block => "block",
        }
    }
}

/// A block's parameters on backend `Bk`.
#[derive(Clone)]
struct LayerParams<Bk: Backend> {
    conv: Conv2d<Bk>,
    gamma: Tensor<Bk, 1>,
    beta: Tensor<Bk, 1>,
}

fn apply<Bk: Backend>(op: Op, p: &LayerParams<Bk>, x: Tensor<Bk, 4>) -> Tensor<Bk, 4> {
    let bn = |x| batch_norm_channel_major(x, Some(p.gamma.clone()), p.beta.clone(), 1e-5);
    match op {
        Op::Conv => p.conv.forward_channel_major(x),
        Op::ConvBurn => p.conv.forward(x),
        Op::ConvChannelsLast => {
            metalearn_zoo::conv2d_channels_last(x, p.conv.weight.val(), p.conv.bias.val())
        }
        Op::BatchNorm => bn(x),
        Op::Pool => max_pool2x2(x),
        Op::Relu => relu(x),
        Op::Block => relu(max_pool2x2(bn(p.conv.forward_channel_major(x)))),
    }
}

/// Per-layer workloads for each of Conv4's blocks on 80 images: convolution (both paths),
/// batch norm, pooling, ReLU and the whole block, forward (no autodiff) and forward + backward
/// (loss `Σ y ⊙ r` with a fixed random `r`), on channel-major activations as the default path
/// keeps them.
fn layer_workloads<'a, B: Backend>(out: &mut Vec<Workload<'a>>) -> Result<()> {
    type A<B> = Autodiff<B>;
    let device = B::Device::default();
    let n = 80;
    let mut r = rng(3);
    for b in 0..4 {
        let c_in = if b == 0 { 1 } else { 64 };
        let s = SIZE >> b;
        let params = LayerParams::<A<B>> {
            conv: metalearn_core::params::require_grad(Conv2d::new(&mut r, c_in, 64, 3, &device)),
            gamma: Tensor::ones([64], &device).require_grad(),
            beta: Tensor::zeros([64], &device).require_grad(),
        };
        let inner = LayerParams::<B> {
            conv: burn::module::AutodiffModule::valid(&params.conv),
            gamma: params.gamma.clone().inner(),
            beta: params.beta.clone().inner(),
        };
        let conv_flops = conv_flops(n, c_in, 64, s) / 1e9;
        for op in Op::ALL {
            let shape = match op {
                Op::Conv | Op::Block => [c_in, n, s, s],
                Op::ConvBurn => [n, c_in, s, s],
                Op::ConvChannelsLast => [n, s, s, c_in],
                Op::BatchNorm | Op::Pool => [64, n, s, s],
                Op::Relu => [64, n, s / 2, s / 2],
            };
            let x = Tensor::<A<B>, 4>::random(shape, Distribution::Normal(0.0, 1.0), &device);
            // Block 1's input is the data: no gradient needed there.
            let x = if b == 0
                && matches!(
                    op,
                    Op::Conv | Op::ConvBurn | Op::ConvChannelsLast | Op::Block
                ) {
                x
            } else {
                x.require_grad()
            };
            let y = apply(op, &inner, x.clone().inner());
            let weights = Tensor::<A<B>, 4>::random(y.dims(), Distribution::Default, &device);
            let (fwd, bwd) = match op {
                Op::Conv | Op::ConvBurn | Op::ConvChannelsLast | Op::Block => (
                    Some(conv_flops),
                    Some(conv_flops * if b == 0 { 2.0 } else { 3.0 }),
                ),
                _ => (None, None),
            };
            let xi = x.clone().inner();
            let p = inner.clone();
            let dev = device.clone();
            out.push(Workload {
                name: format!("layers/block{}/{}_fwd", b + 1, op.name()),
                gflop: fwd,
                work: Box::new(move || {
                    drop(apply(op, &p, xi.clone()));
                    B::sync(&dev).map_err(|e| anyhow::anyhow!("{e:?}"))
                }),
            });
            let p = params.clone();
            out.push(Workload {
                name: format!("layers/block{}/{}_fwd_bwd", b + 1, op.name()),
                gflop: bwd,
                work: Box::new(move || {
                    let y = apply(op, &p, x.clone());
                    let _ = metalearn_core::parallel::backward((y * weights.clone()).sum())?;
                    Ok(())
                }),
            });
        }
    }
    Ok(())
}

/// The PyTorch side: `benches/peers/speed.py`, one process per thread count and round.
fn run_peers(
    python: &Path,
    device: &str,
    threads: usize,
    warmup: usize,
    iters: usize,
    quick: bool,
) -> Result<Vec<Timing>> {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("peers/speed.py");
    let mut cmd = Command::new(python);
    cmd.arg(&script)
        .args(["--threads", &threads.to_string()])
        .args(["--device", device])
        .args(["--warmup", &warmup.to_string()])
        .args(["--iters", &iters.to_string()]);
    if quick {
        cmd.arg("--quick");
    }
    let out = cmd
        .output()
        .with_context(|| format!("could not start {}", python.display()))?;
    if !out.status.success() {
        bail!(
            "{} {} failed: {}",
            python.display(),
            script.display(),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| l.starts_with('{'))
        .map(|l| serde_json::from_str(l).with_context(|| format!("bad peer line: {l}")))
        .collect()
}

/// Merge the rounds: one `Timing` per (workload, system, threads) with every round's times.
fn merge(timings: Vec<Timing>) -> Vec<Timing> {
    let mut merged: Vec<Timing> = Vec::new();
    for t in timings {
        match merged
            .iter_mut()
            .find(|m| m.workload == t.workload && m.system == t.system && m.threads == t.threads)
        {
            Some(m) => {
                m.times_ms.extend(t.times_ms);
                m.load[1] = t.load[1];
            }
            None => merged.push(t),
        }
    }
    merged
}

/// Run the suite on backend `B`, write the report files into `dir`, return the markdown.
pub fn run<B: Backend>(args: &Args, dir: &Path) -> Result<String> {
    let (cpu, peak) = cpu_peak();
    let thread_counts: Vec<usize> = match args.threads {
        Some(t) => vec![t],
        None => vec![1, 2],
    };
    let rounds = if args.quick { 1 } else { 2 };
    let peers_device = args.peers_device.clone().unwrap_or_else(|| {
        match args.backend {
            metalearn_core::backend::BackendKind::Wgpu => "cuda",
            _ => "cpu",
        }
        .to_string()
    });
    let (warmup, iters) = if args.quick { (1, 3) } else { (2, 5) };
    let seed = SeedStream::new(args.seed).named("speed");
    let mut batches = BTreeMap::new();
    for mb in [4usize, 32] {
        let eps = (0..mb)
            .map(|j| episode(seed.child(j as u64).seed()))
            .collect::<Result<Vec<_>>>()?;
        batches.insert(mb, eps);
    }
    let sin = Sinusoid::new(SinusoidConfig::new(10, 10))?;
    let sinusoid = (0..25)
        .map(|j| sin.sample(seed.named("sinusoid").child(j).seed()))
        .collect::<metalearn_core::Result<Vec<_>>>()?;

    let mut gemm = BTreeMap::new();
    let mut timings = Vec::new();
    for &threads in &thread_counts {
        // Achieved GEMM roof: one 1024³ matmul on this backend.
        let device = B::Device::default();
        let a = Tensor::<B, 2>::random([1024, 1024], Distribution::Default, &device);
        let (t, _) = time(threads, 1, 5, || {
            drop(a.clone().matmul(a.clone()));
            B::sync(&device).map_err(|e| anyhow::anyhow!("{e:?}"))
        })?;
        gemm.insert(
            threads,
            2.0 * 1024f64.powi(3) / 1e6 / median(&t).unwrap_or(f64::NAN),
        );

        let mut work = workloads::<B>(threads, args.quick, &batches, &sinusoid)?;
        if let Some(only) = &args.only {
            work.retain(|w| w.name.contains(only.as_str()));
        }
        let pb = crate::progress_bar(
            rounds * work.len(),
            &format!("speed, {threads} thread(s)"),
            args.no_progress,
        );
        for round in 0..rounds {
            for w in work.iter_mut() {
                pb.set_message(w.name.clone());
                // Every timed run ends when the device is done (GPU backends queue work).
                let (times_ms, load) = time(threads, warmup, iters, || {
                    (w.work)()?;
                    B::sync(&device).map_err(|e| anyhow::anyhow!("{e:?}"))
                })?;
                timings.push(Timing {
                    workload: w.name.clone(),
                    system: "metalearn".into(),
                    threads,
                    device: None,
                    times_ms,
                    load,
                    gflop: w.gflop,
                });
                pb.inc(1);
            }
            if let Some(python) = &args.peers {
                pb.set_message(format!("PyTorch, round {}", round + 1));
                timings.extend(run_peers(
                    python,
                    &peers_device,
                    threads,
                    warmup,
                    iters,
                    args.quick,
                )?);
            }
        }
        pb.finish_and_clear();
    }
    let timings = merge(timings);
    let results = Results {
        suite: "speed",
        backend: B::name(&Default::default()),
        quick: args.quick,
        cpu: cpu.clone(),
        peak_gflops_per_core: peak,
        gemm_gflops: gemm,
        peers_device: args.peers.as_ref().map(|_| peers_device.clone()),
        gpu: matches!(args.backend, metalearn_core::backend::BackendKind::Wgpu),
        timings,
    };
    crate::finish(dir, &results, report(&results))
}

/// The PyTorch variant each workload is compared with (the reference points).
fn reference(workload: &str) -> &'static [&'static str] {
    if workload.starts_with("conv4_5w1s/") {
        &["torch/learn2learn", "torch/func_loop"]
    } else if workload.starts_with("sinusoid/") {
        &["torch/vmap", "torch/learn2learn"]
    } else {
        &["torch"]
    }
}

fn report(r: &Results) -> String {
    let mut md = String::new();
    let _ = writeln!(md, "# Speed suite ({})\n", r.backend);
    let _ = writeln!(
        md,
        "CPU: {} — nominal f32 peak {:.0} GFLOP/s per core (clock × FMA width × 2 units × 2, at \
         the clock /proc/cpuinfo reports, which turbo can exceed{}); achieved 1024³ GEMM on \
         this backend: {}. GFLOP/s columns give the share of the nominal 1-core peak and of \
         the GEMM rate at the same thread count (what this backend's matrix products reach).\n",
        r.cpu,
        r.peak_gflops_per_core,
        if r.gpu {
            "; a GPU backend: the GFLOP/s columns leave the CPU share out"
        } else {
            ""
        },
        r.gemm_gflops
            .iter()
            .map(|(t, g)| format!("{g:.0} GFLOP/s at {t} thread(s)"))
            .collect::<Vec<_>>()
            .join(", ")
    );
    let _ = writeln!(
        md,
        "Median ms (min–max) over {} run(s) per cell; load = 1-minute load average before → \
         after. {}\n",
        r.timings.first().map_or(0, |t| t.times_ms.len()),
        match &r.peers_device {
            Some(d) => format!(
                "PyTorch (device `{d}`) ran in the same time window, interleaved with ours \
                 (A B A B); ratio = ours / theirs."
            ),
            None => "Run with `--peers PYTHON` (a Python with torch and learn2learn) for the \
                     PyTorch columns."
                .to_string(),
        }
    );
    let ours: Vec<&Timing> = r
        .timings
        .iter()
        .filter(|t| t.system == "metalearn")
        .collect();
    let find = |w: &str, sys: &str, threads: usize| {
        r.timings
            .iter()
            .find(|t| t.workload == w && t.system == sys && t.threads == threads)
    };
    let cell = |t: &Timing| format!("{:.1} ({:.1}–{:.1})", t.median(), t.min(), t.max());
    // GFLOP/s, with the share of one CPU core's peak and of the measured GEMM rate at the
    // same thread count on CPU backends.
    let rate = |g: f64, t: &Timing| {
        let rate = g / (t.median() / 1e3);
        if r.gpu {
            return format!("{rate:.1}");
        }
        let peak = 100.0 * rate / r.peak_gflops_per_core;
        match r.gemm_gflops.get(&t.threads) {
            Some(gemm) => format!("{rate:.1} ({peak:.0}%, {:.0}%)", 100.0 * rate / gemm),
            None => format!("{rate:.1} ({peak:.0}%, —)"),
        }
    };
    let _ = writeln!(
        md,
        "## Workloads\n\n| workload | threads | metalearn ms | GFLOP/s (% of 1-core peak, % of GEMM) | PyTorch ms | ours / theirs | load |\n|---|---|---|---|---|---|---|"
    );
    for t in ours.iter().filter(|t| !t.workload.starts_with("layers/")) {
        let flops = t.gflop.map_or("—".into(), |g| rate(g, t));
        let peer_name = t
            .workload
            .trim_end_matches("/task_batched")
            .trim_end_matches("/burn_conv2d");
        let (theirs, ratio) = reference(&t.workload)
            .iter()
            .find_map(|sys| find(peer_name, sys, t.threads))
            .map_or(("—".into(), "—".into()), |p| {
                (
                    format!("{} {}", p.system.trim_start_matches("torch/"), cell(p)),
                    format!("{:.2}×", t.median() / p.median()),
                )
            });
        let _ = writeln!(
            md,
            "| {} | {} | {} | {} | {} | {} | {:.2} → {:.2} |",
            t.workload,
            t.threads,
            cell(t),
            flops,
            theirs,
            ratio,
            t.load[0],
            t.load[1]
        );
    }
    let _ = writeln!(md, "\n## Second thread\n\n| workload | 1 thread ms | 2 threads ms | speed-up |\n|---|---|---|---|");
    for t in ours
        .iter()
        .filter(|t| t.threads == 1 && !t.workload.starts_with("layers/"))
    {
        if let Some(t2) = find(&t.workload, "metalearn", 2) {
            let _ = writeln!(
                md,
                "| {} | {:.1} | {:.1} | {:.2}× |",
                t.workload,
                t.median(),
                t2.median(),
                t.median() / t2.median()
            );
        }
    }
    let _ = writeln!(
        md,
        "\n## Per layer (80 images, channel-major unless named)\n\n| layer | threads | metalearn ms | GFLOP/s (% of 1-core peak, % of GEMM) | PyTorch ms | ours / theirs |\n|---|---|---|---|---|---|"
    );
    for t in ours.iter().filter(|t| t.workload.starts_with("layers/")) {
        let flops = t.gflop.map_or("—".into(), |g| rate(g, t));
        let peer_name = t.workload.replace("conv_burn_conv2d", "conv");
        let (theirs, ratio) = find(&peer_name, "torch", t.threads)
            .map_or(("—".into(), "—".into()), |p| {
                (cell(p), format!("{:.2}×", t.median() / p.median()))
            });
        let _ = writeln!(
            md,
            "| {} | {} | {} | {} | {} | {} |",
            t.workload.trim_start_matches("layers/"),
            t.threads,
            cell(t),
            flops,
            theirs,
            ratio
        );
    }
    md
}
