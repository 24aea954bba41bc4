//! The burn-flex kernels that metalearn patches (patches/README.md) and the convolution paths
//! that rely on them, checked on burn-flex against burn-ndarray as the reference: strided
//! copies (reshape of slices and permutations), concatenation of strided inputs, 2×2 max
//! pooling with indices, the parallel row scatter-add (the im2col backward), element-wise ops
//! with a broadcast operand on either side, the gradients of reductions (whose backward the
//! burn-autodiff patch broadcasts as a view), and Conv4's values and gradients on every
//! convolution path.

use burn::backend::Autodiff;
use burn::tensor::backend::Backend;
use burn::tensor::{Tensor, TensorData};
use metalearn_core::backend::{FlexCpu, NdArrayCpu};
use metalearn_core::MetaModule;
use metalearn_zoo::{Conv4, Conv4Config, ConvPath};

fn values(n: usize, seed: usize) -> Vec<f32> {
    (0..n)
        .map(|i| (((i + seed) * 7919 % 1009) as f32 - 504.0) / 97.0)
        .collect()
}

fn host<B: Backend, const D: usize>(t: Tensor<B, D>) -> (Vec<usize>, Vec<f32>) {
    (t.dims().to_vec(), t.into_data().iter::<f32>().collect())
}

/// Every strided layout the channel-major path produces, on both backends.
fn strided_ops<B: Backend>() -> Vec<(Vec<usize>, Vec<f32>)> {
    let d = B::Device::default();
    let x = Tensor::<B, 4>::from_data(TensorData::new(values(3 * 5 * 7 * 6, 1), [3, 5, 7, 6]), &d);
    let y = Tensor::<B, 4>::from_data(TensorData::new(values(3 * 5 * 7 * 6, 2), [3, 5, 7, 6]), &d);
    let mut out = vec![
        // 3-D and 4-D slices with inner contiguous rows, made contiguous by a reshape.
        host(
            x.clone()
                .slice([0..3, 1..4, 1..6, 2..5])
                .reshape([3, 3 * 5 * 3]),
        ),
        host(
            x.clone()
                .slice([1..2, 0..5, 0..7, 1..6])
                .reshape([5 * 7 * 5]),
        ),
        // A permutation (inner stride ≠ 1) and a permuted slice.
        host(x.clone().permute([0, 2, 3, 1]).reshape([3 * 7 * 6, 5])),
        host(
            x.clone()
                .permute([3, 1, 0, 2])
                .slice([1..5, 0..5, 0..3, 2..7])
                .reshape([-1]),
        ),
    ];
    // Concatenation of strided inputs along every dimension, mixed with contiguous ones.
    for dim in 0..4 {
        let a = x.clone().slice([0..3, 0..5, 0..7, 0..6]);
        let b = y.clone().permute([0, 1, 2, 3]);
        let c = x.clone().slice([0..3, 0..5, 0..7, 0..6]).swap_dims(2, 2);
        out.push(host(Tensor::cat(vec![a, b, c], dim)));
    }
    let parts: Vec<Tensor<B, 4>> = (0..3)
        .map(|i| x.clone().slice([0..3, 0..5, i..i + 5, 1..5]))
        .collect();
    out.push(host(Tensor::cat(parts, 0)));
    let parts: Vec<Tensor<B, 4>> = (0..2)
        .map(|i| {
            y.clone()
                .swap_dims(1, 3)
                .slice([0..3, i..i + 4, 0..7, 0..5])
        })
        .collect();
    out.push(host(Tensor::cat(parts, 1)));
    // 2×2 max pooling with indices, even and odd sizes, with ties.
    for (h, w) in [(6, 8), (7, 5), (2, 2)] {
        let v: Vec<f32> = values(2 * 3 * h * w, 3).iter().map(|v| v.round()).collect();
        let t = Tensor::<B, 4>::from_data(TensorData::new(v, [2, 3, h, w]), &d);
        let (vals, idx) =
            burn::tensor::module::max_pool2d_with_indices(t, [2, 2], [2, 2], [0, 0], [1, 1], false);
        out.push(host(vals));
        let idx: Vec<f32> = idx.into_data().iter::<i64>().map(|i| i as f32).collect();
        out.push((vec![idx.len()], idx));
    }
    out
}

#[test]
fn patched_flex_kernels_match_ndarray() {
    let flex = strided_ops::<FlexCpu>();
    let reference = strided_ops::<NdArrayCpu>();
    assert_eq!(flex.len(), reference.len());
    for (k, (a, b)) in flex.iter().zip(&reference).enumerate() {
        assert_eq!(a.0, b.0, "case {k}: shapes differ");
        assert_eq!(a.1, b.1, "case {k}: values differ");
    }
}

/// Conv4's output and parameter gradients on `B` with convolution path `path`.
fn conv4_run<B: Backend>(
    path: ConvPath,
    cfg: &Conv4Config,
    x: &[f32],
    n: usize,
) -> (Vec<f32>, Vec<f64>) {
    type A<B> = Autodiff<B>;
    let d = B::Device::default();
    let m: Conv4<A<B>> = cfg
        .clone()
        .with_conv_path(path)
        .init(11, &d)
        .expect("valid");
    let m = metalearn_core::params::require_grad(m);
    let s = cfg.input_size;
    let x =
        Tensor::<A<B>, 4>::from_data(TensorData::new(x.to_vec(), [n, cfg.in_channels, s, s]), &d);
    let y = m.forward(x);
    let out: Vec<f32> = y.clone().into_data().iter::<f32>().collect();
    let grads = (y.clone() * y).sum().backward();
    let grads = burn::optim::GradientsParams::from_grads(grads, &m);
    (
        out,
        metalearn_core::params::grads_to_vec::<A<B>, Conv4<A<B>>>(&m, &grads),
    )
}

#[test]
fn conv4_paths_agree_on_flex_and_ndarray() {
    for (c_in, size, blocks) in [(1, 28, 4), (3, 12, 2)] {
        let cfg = Conv4Config::new(5)
            .with_in_channels(c_in)
            .with_input_size(size)
            .with_filters(16)
            .with_blocks(blocks);
        let n = 10;
        let x = values(n * c_in * size * size, 5);
        let (y_ref, g_ref) = conv4_run::<NdArrayCpu>(ConvPath::Burn, &cfg, &x, n);
        for path in [ConvPath::Auto, ConvPath::ChannelMajor, ConvPath::Burn] {
            let (y, g) = conv4_run::<FlexCpu>(path, &cfg, &x, n);
            let worst_y = y
                .iter()
                .zip(&y_ref)
                .map(|(a, b)| (a - b).abs() / (1.0 + b.abs()))
                .fold(0.0, f32::max);
            assert!(
                worst_y < 1e-4,
                "{path:?} {cfg:?}: outputs differ by {worst_y}"
            );
            let worst_g = g
                .iter()
                .zip(&g_ref)
                .map(|(a, b)| (a - b).abs() / (1.0 + b.abs()))
                .fold(0.0, f64::max);
            assert!(
                worst_g < 1e-3,
                "{path:?} {cfg:?}: gradients differ by {worst_g}"
            );
        }
    }
    assert_eq!(
        ConvPath::Auto.resolve::<FlexCpu>(&Default::default()),
        ConvPath::ChannelMajor
    );
}

/// Large element-wise ops (same shape, per-row scalar `[C, 1]` and shared-row `[1, M]`
/// broadcasts) are split across the pool's threads by the patch; on a 2-thread lane they must
/// equal burn-ndarray's results exactly.
fn elementwise<B: Backend>() -> Vec<(Vec<usize>, Vec<f32>)> {
    let d = B::Device::default();
    let (c, m) = (64, 8192);
    let x = Tensor::<B, 2>::from_data(TensorData::new(values(c * m, 7), [c, m]), &d);
    let y = Tensor::<B, 2>::from_data(TensorData::new(values(c * m, 8), [c, m]), &d);
    let col = Tensor::<B, 2>::from_data(TensorData::new(values(c, 9), [c, 1]), &d);
    let row = Tensor::<B, 2>::from_data(TensorData::new(values(m, 10), [1, m]), &d);
    vec![
        host(x.clone() + y.clone()),
        host(x.clone() - y.clone()),
        host(x.clone() * y.clone()),
        host(x.clone() / (y.clone().abs() + 1.0)),
        host(x.clone() - col.clone()),
        host(x.clone() * col.clone()),
        host(x.clone() + row.clone()),
        host(x.clone() / (row.clone().abs() + 1.0)),
        // A broadcast view on the left of a commutative op (swapped by the patch).
        host(col.clone().expand([c, m]) + y.clone()),
        host(row.expand([c, m]) * x),
        host(col.expand([c, m]) - y),
    ]
}

/// Gradients of every reduction (sum, mean, and their `_dim` forms), whose backward the
/// burn-autodiff patch hands on as a broadcast view instead of multiplying a tensor of ones:
/// the input's gradient is a sum of broadcast terms, which must equal burn-ndarray's exactly.
fn reduction_grads<B: Backend>() -> Vec<(Vec<usize>, Vec<f32>)> {
    type A<B> = Autodiff<B>;
    let d = B::Device::default();
    let (c, m) = (64, 4096);
    let x =
        Tensor::<A<B>, 2>::from_data(TensorData::new(values(c * m, 13), [c, m]), &d).require_grad();
    let y = Tensor::<A<B>, 2>::from_data(TensorData::new(values(c * m, 14), [c, m]), &d);
    let col = Tensor::<A<B>, 2>::from_data(TensorData::new(values(c, 15), [c, 1]), &d);
    let row = Tensor::<A<B>, 2>::from_data(TensorData::new(values(m, 16), [1, m]), &d);
    let loss = (x.clone().sum_dim(1) * col).sum()
        + (x.clone().mean_dim(0) * row).sum()
        + x.clone().mean() * 3.0
        + (x.clone() * y).sum();
    let grads = loss.backward();
    vec![host(x.grad(&grads).expect("x is tracked"))]
}

/// Each case of `cases` run on burn-flex on a 2-thread lane equals burn-ndarray's bit for bit.
fn assert_flex_matches_ndarray(
    cases: fn() -> Vec<(Vec<usize>, Vec<f32>)>,
    reference: fn() -> Vec<(Vec<usize>, Vec<f32>)>,
) {
    let flex = metalearn_core::parallel::run_exclusive(2, || Ok(cases())).expect("lane");
    let reference = reference();
    assert_eq!(flex.len(), reference.len());
    for (k, (a, b)) in flex.iter().zip(&reference).enumerate() {
        assert_eq!(a.0, b.0, "case {k}: shapes differ");
        assert!(a.1 == b.1, "case {k}: values differ");
    }
}

#[test]
fn parallel_elementwise_ops_match_ndarray() {
    assert_flex_matches_ndarray(elementwise::<FlexCpu>, elementwise::<NdArrayCpu>);
}

#[test]
fn reduction_gradients_match_ndarray() {
    assert_flex_matches_ndarray(reduction_grads::<FlexCpu>, reduction_grads::<NdArrayCpu>);
}

/// The backward of an im2col row `select`: `select_assign(.., Add)` of `[N·H·W·k², C]` value
/// rows into `[N·H·W + 1, C]` (each destination row receives up to k² = 9 rows, the last
/// one, the padding row, many more). The patch splits it across the pool's threads by
/// destination row; `integral` values make every sum exact, so burn-ndarray's result is the
/// reference whatever its order of additions.
fn scatter_add<B: Backend>(integral: bool) -> (Vec<usize>, Vec<f32>) {
    use burn::tensor::{IndexingUpdateOp, Int};
    let d = B::Device::default();
    let (n, h, w, k, c) = (12usize, 14usize, 14usize, 3usize, 64usize);
    let m = n * h * w;
    let mut idx = Vec::with_capacity(m * k * k);
    for b in 0..n {
        for y in 0..h as isize {
            for x in 0..w as isize {
                for dy in -1..=1isize {
                    for dx in -1..=1isize {
                        let (yy, xx) = (y + dy, x + dx);
                        idx.push(
                            if yy < 0 || xx < 0 || yy >= h as isize || xx >= w as isize {
                                m as i64
                            } else {
                                ((b * h + yy as usize) * w + xx as usize) as i64
                            },
                        );
                    }
                }
            }
        }
    }
    let mut v = values(m * k * k * c, 11);
    if integral {
        v.iter_mut().for_each(|x| *x = x.round());
    }
    let base = Tensor::<B, 2>::from_data(TensorData::new(values((m + 1) * c, 12), [m + 1, c]), &d);
    let rows = Tensor::<B, 2>::from_data(TensorData::new(v, [m * k * k, c]), &d);
    let idx = Tensor::<B, 1, Int>::from_data(TensorData::new(idx, [m * k * k]), &d);
    host(base.select_assign(0, idx, rows, IndexingUpdateOp::Add))
}

#[test]
fn parallel_row_scatter_add_matches_serial_and_ndarray() {
    let on = |threads, integral| {
        metalearn_core::parallel::run_exclusive(threads, || Ok(scatter_add::<FlexCpu>(integral)))
            .expect("lane")
    };
    // Bit for bit at any thread count (each row sums in the serial order).
    let (one, two) = (on(1, false), on(2, false));
    assert_eq!(one.0, two.0);
    assert!(one.1 == two.1, "2 threads differ from 1");
    let reference = scatter_add::<NdArrayCpu>(true);
    let flex = on(2, true);
    assert_eq!(flex.0, reference.0);
    assert!(flex.1 == reference.1, "flex differs from ndarray");
}
