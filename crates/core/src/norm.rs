//! Batch normalisation over rows with a hand-written backward pass that nests.
//!
//! [`batch_norm_rows`] normalises `x: [T, C, M]` over its last dimension (per task `t` and
//! channel `c`, with the batch's own statistics) and applies a per-row scale and shift. Written
//! as tensor operations, autodiff records about ten full-size steps for it and its backward pass
//! makes about fifteen full-size passes over the activations; for Conv4's first block
//! (64 × 80 × 28 × 28 values) that is memory traffic, not arithmetic, and it is most of the block's
//! time (the speed suite's per-layer table).
//!
//! On `Autodiff<I>` this module registers batch norm as **one** autodiff step whose backward is
//! the closed form (with `x_c = x − μ`, `s = 1/√(σ² + ε)`, `g` the output gradient, `M` the row
//! length):
//!
//! ```text
//! ∂β = Σ g        ∂γ = s · Σ g·x_c        ∂x = γs · (g − ∂β/M − x_c · s² · Σ g·x_c / M)
//! ```
//!
//! (`γ = 1` without a scale): five element-wise passes and two row reductions. The backward
//! pass is written in tensor operations of `I`, so when `I` is itself an autodiff
//! backend (second order: `Autodiff<Autodiff<B>>`) those operations are recorded and
//! differentiated again: the meta-gradient stays exact (the f64 finite-difference checks of the
//! Conv4 meta-gradient run through this step).
//!
//! Rust has no specialisation, so [`batch_norm_rows`] recognises the backends it registers the
//! step on by type: `Autodiff<X>` and `Autodiff<Autodiff<X>>` for each CPU backend this crate is
//! built with (`flex`, `ndarray` f32 and f64) and `wgpu`. Every other backend takes the same
//! formula as tensor operations ([`batch_norm_rows_composed`]); the forward values are
//! bit-identical either way.

// Built without any backend feature, no type takes the registered step.
#![cfg_attr(
    not(any(feature = "flex", feature = "ndarray", feature = "wgpu")),
    allow(dead_code, unused_macros)
)]

use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::NoCheckpointing;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::backend::Autodiff;
use burn::tensor::backend::Backend;
use burn::tensor::ops::FloatTensor;
use burn::tensor::{Tensor, TensorPrimitive};
use std::any::Any;

/// `γ · (x − μ) / √(σ² + ε) + β` over the last dimension of `x: [T, C, M]`, with per-row batch
/// mean `μ` and biased variance `σ²`; `gamma: [T, C]` (`None`: no scale, as `γ = 1`),
/// `beta: [T, C]`. Registered as one autodiff step with a closed-form backward on the
/// backends named in the [module docs](self).
pub fn batch_norm_rows<B: Backend>(
    x: Tensor<B, 3>,
    gamma: Option<Tensor<B, 2>>,
    beta: Tensor<B, 2>,
    eps: f64,
) -> Tensor<B, 3> {
    macro_rules! on {
        ($($inner:ty),* $(,)?) => {
            $(
                if std::any::TypeId::of::<B>() == std::any::TypeId::of::<Autodiff<$inner>>() {
                    return fused::<B, $inner>(x, gamma, beta, eps);
                }
            )*
        };
    }
    #[cfg(feature = "flex")]
    on!(crate::backend::FlexCpu, Autodiff<crate::backend::FlexCpu>);
    #[cfg(feature = "ndarray")]
    on!(
        crate::backend::NdArrayCpu,
        Autodiff<crate::backend::NdArrayCpu>,
        crate::backend::NdArrayF64,
        Autodiff<crate::backend::NdArrayF64>,
    );
    #[cfg(feature = "wgpu")]
    on!(crate::backend::Gpu, Autodiff<crate::backend::Gpu>);
    batch_norm_rows_composed(x, gamma, beta, eps)
}

/// [`batch_norm_rows`] as plain tensor operations (what autodiff differentiates step by step
/// on backends without the registered step).
pub fn batch_norm_rows_composed<B: Backend>(
    x: Tensor<B, 3>,
    gamma: Option<Tensor<B, 2>>,
    beta: Tensor<B, 2>,
    eps: f64,
) -> Tensor<B, 3> {
    let [t, c, _] = x.dims();
    let (centered, inv_std) = centre(x, eps);
    let scale = match gamma {
        Some(gamma) => inv_std * gamma.reshape([t, c, 1]),
        None => inv_std,
    };
    centered * scale + beta.reshape([t, c, 1])
}

/// `(x − μ, 1/√(σ² + ε))` per row of `x: [T, C, M]`; the second is `[T, C, 1]`.
fn centre<B: Backend>(x: Tensor<B, 3>, eps: f64) -> (Tensor<B, 3>, Tensor<B, 3>) {
    let inv_count = 1.0 / x.dims()[2] as f64;
    let mean = x.clone().sum_dim(2).mul_scalar(inv_count);
    let centered = x - mean;
    let var = (centered.clone() * centered.clone())
        .sum_dim(2)
        .mul_scalar(inv_count);
    (centered, var.add_scalar(eps).sqrt().recip())
}

/// `value` as `T` when `S` and `T` are the same type.
fn same<S: 'static, T: 'static>(value: S) -> Option<T> {
    (Box::new(value) as Box<dyn Any>)
        .downcast::<T>()
        .ok()
        .map(|b| *b)
}

/// The registered step on `B = Autodiff<I>` (checked by the caller).
fn fused<B: Backend, I: Backend>(
    x: Tensor<B, 3>,
    gamma: Option<Tensor<B, 2>>,
    beta: Tensor<B, 2>,
    eps: f64,
) -> Tensor<B, 3> {
    let cast = |x: Tensor<B, 3>, gamma: Option<Tensor<B, 2>>, beta: Tensor<B, 2>| {
        Some((
            same::<_, Tensor<Autodiff<I>, 3>>(x)?,
            match gamma {
                Some(g) => Some(same::<_, Tensor<Autodiff<I>, 2>>(g)?),
                None => None,
            },
            same::<_, Tensor<Autodiff<I>, 2>>(beta)?,
        ))
    };
    let Some((x, gamma, beta)) = cast(x.clone(), gamma.clone(), beta.clone()) else {
        // Unreachable (the caller compared the types); the composed formula is the same.
        return batch_norm_rows_composed(x, gamma, beta, eps);
    };
    let y = registered::<I>(x, gamma, beta, eps);
    same::<_, Tensor<B, 3>>(y).expect("B is Autodiff<I>")
}

/// What the backward pass keeps: `x − μ`, `1/√(σ² + ε)` (`[T, C, 1]`) and `γ` (`[T, C, 1]`).
#[derive(Debug, Clone)]
struct Saved<I: Backend> {
    centered: Tensor<I, 3>,
    inv_std: Tensor<I, 3>,
    gamma: Option<Tensor<I, 3>>,
}

/// Batch norm's autodiff step: its parents are `[x, γ, β]` (`N = 3`) or `[x, β]` (`N = 2`).
#[derive(Debug)]
struct BatchNormStep;

fn inner<I: Backend, const D: usize>(t: &Tensor<Autodiff<I>, D>) -> Tensor<I, D> {
    t.clone().inner()
}

fn float<I: Backend, const D: usize>(t: Tensor<I, D>) -> I::FloatTensorPrimitive {
    t.into_primitive().tensor()
}

fn registered<I: Backend>(
    x: Tensor<Autodiff<I>, 3>,
    gamma: Option<Tensor<Autodiff<I>, 2>>,
    beta: Tensor<Autodiff<I>, 2>,
    eps: f64,
) -> Tensor<Autodiff<I>, 3> {
    #[cfg(test)]
    tests::REGISTERED.with(|n| n.set(n.get() + 1));
    let [t, c, _] = x.dims();
    let (centered, inv_std) = centre(inner(&x), eps);
    let gamma_i = gamma.as_ref().map(|g| inner(g).reshape([t, c, 1]));
    let scale = match &gamma_i {
        Some(g) => inv_std.clone() * g.clone(),
        None => inv_std.clone(),
    };
    let y = float(centered.clone() * scale + inner(&beta).reshape([t, c, 1]));
    let saved = Saved {
        centered,
        inv_std,
        gamma: gamma_i,
    };
    let (x, beta) = (x.into_primitive().tensor(), beta.into_primitive().tensor());
    let out = match gamma {
        Some(g) => record([x, g.into_primitive().tensor(), beta], saved, y),
        None => record([x, beta], saved, y),
    };
    Tensor::from_primitive(TensorPrimitive::Float(out))
}

/// Register the step with `parents` (see [`BatchNormStep`]) and output `y`.
fn record<I: Backend, const N: usize>(
    parents: [FloatTensor<Autodiff<I>>; N],
    saved: Saved<I>,
    y: I::FloatTensorPrimitive,
) -> FloatTensor<Autodiff<I>> {
    match BatchNormStep
        .prepare::<NoCheckpointing>(parents.map(|p| p.node))
        .compute_bound()
        .stateful()
    {
        OpsKind::Tracked(prep) => prep.finish(saved, y),
        OpsKind::UnTracked(prep) => prep.finish(y),
    }
}

/// The closed-form gradients `(∂x, ∂γ, ∂β)` (`∂γ`, `∂β` as `[T, C, 1]`) for output gradient `g`.
fn gradients<I: Backend>(
    g: Tensor<I, 3>,
    s: Saved<I>,
    want_x: bool,
) -> (Option<Tensor<I, 3>>, Tensor<I, 3>, Tensor<I, 3>) {
    let inv_count = 1.0 / g.dims()[2] as f64;
    let d_beta = g.clone().sum_dim(2);
    // Σ g·x_c; ∂γ = s · Σ g·x_c.
    let g_xc = (g.clone() * s.centered.clone()).sum_dim(2);
    let d_gamma = g_xc.clone() * s.inv_std.clone();
    let d_x = want_x.then(|| {
        // ∂x = γs · (g − ∂β/M − x_c · s² Σ g·x_c / M)
        let s2 = s.inv_std.clone() * s.inv_std.clone();
        let col = g_xc * s2.mul_scalar(inv_count);
        let out_scale = match s.gamma {
            Some(gamma) => s.inv_std * gamma,
            None => s.inv_std,
        };
        (g - d_beta.clone().mul_scalar(inv_count) - s.centered * col) * out_scale
    });
    (d_x, d_gamma, d_beta)
}

/// Register a `[T, C, 1]` gradient for a `[T, C]` parent.
fn register_rows<I: Backend>(
    grads: &mut Gradients,
    id: Option<burn::backend::autodiff::NodeId>,
    t: Tensor<I, 3>,
) {
    if let Some(id) = id {
        let [a, b, _] = t.dims();
        grads.register::<I>(id, float(t.reshape([a, b])));
    }
}

impl<I: Backend, const N: usize> Backward<I, N> for BatchNormStep {
    type State = Saved<I>;

    fn backward(self, ops: Ops<Self::State, N>, grads: &mut Gradients, _: &mut Checkpointer) {
        let mut parents = ops.parents.into_iter();
        let node_x = parents.next().flatten();
        let node_beta = parents.next_back().flatten();
        let node_gamma = parents.next().flatten(); // none left when N = 2
        let g =
            Tensor::<I, 3>::from_primitive(TensorPrimitive::Float(grads.consume::<I>(&ops.node)));
        let (d_x, d_gamma, d_beta) = gradients(g, ops.state, node_x.is_some());
        if let (Some(node), Some(d_x)) = (node_x, d_x) {
            grads.register::<I>(node.id, float(d_x));
        }
        register_rows(grads, node_gamma.map(|n| n.id), d_gamma);
        register_rows(grads, node_beta.map(|n| n.id), d_beta);
    }
}

#[cfg(all(test, feature = "flex"))]
mod tests {
    use super::*;
    use crate::backend::FlexCpu as F;
    use burn::tensor::Distribution;

    type A = Autodiff<F>;
    type AA = Autodiff<Autodiff<F>>;

    thread_local! {
        /// How many times this thread took the registered step.
        pub(super) static REGISTERED: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
    }

    fn registered_steps() -> usize {
        REGISTERED.with(std::cell::Cell::get)
    }

    fn close(a: Tensor<F, 1>, b: Tensor<F, 1>, what: &str) {
        let (a, b) = (
            a.to_data().to_vec::<f32>().expect("f32 values"),
            b.to_data().to_vec::<f32>().expect("f32 values"),
        );
        assert_eq!(a.len(), b.len());
        let scale = b.iter().fold(1e-3f32, |m, v| m.max(v.abs()));
        let worst = a
            .iter()
            .zip(&b)
            .map(|(x, y)| (x - y).abs())
            .fold(0.0, f32::max);
        assert!(
            worst <= 1e-4 * scale,
            "{what}: max difference {worst} (scale {scale})"
        );
    }

    fn flat<B: Backend, const D: usize>(t: Tensor<B, D>) -> Tensor<B, 1> {
        let n = t.shape().num_elements();
        t.reshape([n])
    }

    fn data(shape: [usize; 3], seed: u64) -> Tensor<F, 3> {
        F::seed(&Default::default(), seed);
        Tensor::random(shape, Distribution::Normal(0.5, 2.0), &Default::default())
    }

    /// First-order gradients of `Σ y·r` with the registered step and with the composed formula.
    #[test]
    fn registered_step_matches_the_composed_gradients() {
        let shape = [2, 3, 50];
        let (x0, r) = (data(shape, 1), data(shape, 2));
        let g0 = data([2, 3, 1], 3).reshape([2, 3]);
        let b0 = data([2, 3, 1], 4).reshape([2, 3]);
        for scaled in [true, false] {
            let run = |registered: bool| {
                let x = Tensor::<A, 3>::from_inner(x0.clone()).require_grad();
                let g = Tensor::<A, 2>::from_inner(g0.clone()).require_grad();
                let b = Tensor::<A, 2>::from_inner(b0.clone()).require_grad();
                let gamma = scaled.then(|| g.clone());
                let before = registered_steps();
                let y = if registered {
                    batch_norm_rows(x.clone(), gamma, b.clone(), 1e-5)
                } else {
                    batch_norm_rows_composed(x.clone(), gamma, b.clone(), 1e-5)
                };
                assert_eq!(registered_steps() - before, usize::from(registered));
                let grads = (y.clone() * Tensor::from_inner(r.clone())).sum().backward();
                (
                    flat(y.inner()),
                    flat(x.grad(&grads).unwrap()),
                    g.grad(&grads).map(flat),
                    flat(b.grad(&grads).unwrap()),
                )
            };
            let (fast, slow) = (run(true), run(false));
            // The forward pass is the same arithmetic: bit-identical.
            assert_eq!(
                fast.0.to_data(),
                slow.0.to_data(),
                "forward (scaled: {scaled})"
            );
            close(fast.1, slow.1, "∂x");
            close(fast.3, slow.3, "∂β");
            match (fast.2, slow.2) {
                (Some(a), Some(b)) => close(a, b, "∂γ"),
                (None, None) => assert!(!scaled),
                _ => panic!("∂γ present on one path only (scaled: {scaled})"),
            }
        }
    }

    /// Second order: the gradient of `Σ (∂x ⊙ q)` (∂x of `Σ y·r`) with respect to `x` and `γ`,
    /// through the registered step's backward, against the composed formula's.
    #[test]
    fn registered_step_nests_like_the_composed_formula() {
        let shape = [1, 4, 30];
        let (x0, r, q) = (data(shape, 5), data(shape, 6), data(shape, 7));
        let g0 = data([1, 4, 1], 8).reshape([1, 4]);
        let b0 = data([1, 4, 1], 9).reshape([1, 4]);
        let run = |registered: bool| {
            let xi = Tensor::<A, 3>::from_inner(x0.clone()).require_grad();
            let gi = Tensor::<A, 2>::from_inner(g0.clone()).require_grad();
            let x = Tensor::<AA, 3>::from_inner(xi.clone()).require_grad();
            let g = Tensor::<AA, 2>::from_inner(gi.clone()).require_grad();
            let b = Tensor::<AA, 2>::from_inner(Tensor::from_inner(b0.clone())).require_grad();
            let before = registered_steps();
            let y = if registered {
                batch_norm_rows(x.clone(), Some(g.clone()), b, 1e-5)
            } else {
                batch_norm_rows_composed(x.clone(), Some(g.clone()), b, 1e-5)
            };
            assert_eq!(registered_steps() - before, usize::from(registered));
            let grads = (y * Tensor::from_inner(Tensor::from_inner(r.clone())))
                .sum()
                .backward();
            let dx = x.grad(&grads).unwrap();
            let dg = g.grad(&grads).unwrap();
            let outer = (dx.clone() * Tensor::from_inner(q.clone())).sum() + dg.clone().sum();
            let grads = outer.backward();
            (
                flat(dx.inner()),
                flat(xi.grad(&grads).unwrap()),
                flat(gi.grad(&grads).unwrap()),
            )
        };
        let (fast, slow) = (run(true), run(false));
        close(fast.0, slow.0, "∂x");
        close(fast.1, slow.1, "∂²/∂x");
        close(fast.2, slow.2, "∂²/∂γ");
    }
}
