//! Interpretability: what adaptation changes inside a model.
//!
//! - [`linear_cka`]: linear centered kernel alignment (Kornblith et al. 2019) between two
//!   representations of the same examples — 1 for identical representations, invariant to
//!   orthogonal transforms and isotropic scaling. Raghu et al. (2020) use it to show that MAML's
//!   body barely changes during adaptation while its head does (feature reuse).
//! - [`layer_changes`]: per-parameter-tensor relative change `‖θ' − θ‖ / ‖θ‖` between a model and
//!   its adapted copy.

use burn::module::Module;
use burn::tensor::backend::Backend;
use burn::tensor::Tensor;
use metalearn_core::error::{Error, Result};
use metalearn_core::params;
use serde::{Deserialize, Serialize};

/// Linear CKA between representations `x` (`n × p`, row-major) and `y` (`n × q`) of the same `n`
/// examples: `‖Yᶜᵀ Xᶜ‖²_F / (‖Xᶜᵀ Xᶜ‖_F ‖Yᶜᵀ Yᶜ‖_F)` with column-centred `Xᶜ`, `Yᶜ`.
///
/// Errors: fewer than 2 examples, lengths that are not `n × width`, a constant representation
/// (CKA undefined).
pub fn linear_cka(x: &[f64], p: usize, y: &[f64], q: usize) -> Result<f64> {
    if p == 0
        || q == 0
        || !x.len().is_multiple_of(p)
        || !y.len().is_multiple_of(q)
        || x.len() / p != y.len() / q
    {
        return Err(Error::ShapeMismatch(format!(
            "representations of {} × {p} and {} × {q} values",
            x.len(),
            y.len()
        )));
    }
    let n = x.len() / p;
    if n < 2 {
        return Err(Error::ShapeMismatch("CKA needs at least 2 examples".into()));
    }
    let centre = |m: &[f64], w: usize| -> Vec<f64> {
        let mut c = m.to_vec();
        for j in 0..w {
            let mean = (0..n).map(|i| m[i * w + j]).sum::<f64>() / n as f64;
            for i in 0..n {
                c[i * w + j] -= mean;
            }
        }
        c
    };
    let (xc, yc) = (centre(x, p), centre(y, q));
    // ‖Aᵀ B‖²_F for centred A (n × a), B (n × b); computed via the n × n Gram matrices, which is
    // cheaper when widths exceed n: ‖AᵀB‖²_F = tr(AAᵀ BBᵀ).
    let gram = |m: &[f64], w: usize| -> Vec<f64> {
        let mut g = vec![0.0; n * n];
        for i in 0..n {
            for k in i..n {
                let s: f64 = (0..w).map(|j| m[i * w + j] * m[k * w + j]).sum();
                g[i * n + k] = s;
                g[k * n + i] = s;
            }
        }
        g
    };
    let (gx, gy) = (gram(&xc, p), gram(&yc, q));
    let dot = |a: &[f64], b: &[f64]| a.iter().zip(b).map(|(u, v)| u * v).sum::<f64>();
    let (xy, xx, yy) = (dot(&gx, &gy), dot(&gx, &gx), dot(&gy, &gy));
    if xx <= 0.0 || yy <= 0.0 {
        return Err(Error::config(
            "representation",
            "a constant representation has no CKA",
        ));
    }
    Ok(xy / (xx.sqrt() * yy.sqrt()))
}

/// [`linear_cka`] of two `[n, width]` tensors.
pub fn linear_cka_tensors<B: Backend>(x: Tensor<B, 2>, y: Tensor<B, 2>) -> Result<f64> {
    let (p, q) = (x.dims()[1], y.dims()[1]);
    let xv: Vec<f64> = x.into_data().iter::<f64>().collect();
    let yv: Vec<f64> = y.into_data().iter::<f64>().collect();
    linear_cka(&xv, p, &yv, q)
}

/// The relative change of one parameter tensor.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LayerChange {
    /// Position in the module's visiting order.
    pub index: usize,
    /// Its shape.
    pub shape: Vec<usize>,
    /// `‖θ' − θ‖ / ‖θ‖` (absolute change where `‖θ‖ = 0`).
    pub relative_change: f64,
}

/// Per-parameter-tensor relative change between `before` and `after` (one architecture).
///
/// Errors: modules of different architectures.
pub fn layer_changes<B: Backend, M: Module<B>>(before: &M, after: &M) -> Result<Vec<LayerChange>> {
    let rel = params::relative_change(before, after)?;
    Ok(params::tensors(before)
        .into_iter()
        .zip(rel)
        .enumerate()
        .map(|(index, ((shape, _), relative_change))| LayerChange {
            index,
            shape,
            relative_change,
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn matrix(n: usize, w: usize, seed: u64) -> Vec<f64> {
        // a deterministic pseudo-random matrix
        let mut s = seed.wrapping_mul(6364136223846793005).wrapping_add(1);
        (0..n * w)
            .map(|_| {
                s = s
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                ((s >> 11) as f64 / (1u64 << 53) as f64) - 0.5
            })
            .collect()
    }

    fn matmul(a: &[f64], n: usize, k: usize, b: &[f64], m: usize) -> Vec<f64> {
        let mut c = vec![0.0; n * m];
        for i in 0..n {
            for j in 0..m {
                c[i * m + j] = (0..k).map(|t| a[i * k + t] * b[t * m + j]).sum();
            }
        }
        c
    }

    #[test]
    fn cka_of_a_representation_with_itself_is_one() {
        let x = matrix(20, 6, 1);
        assert!((linear_cka(&x, 6, &x, 6).unwrap() - 1.0).abs() < 1e-12);
    }

    #[test]
    fn cka_is_invariant_to_orthogonal_transforms_and_isotropic_scaling() {
        let x = matrix(30, 3, 2);
        let y = matrix(30, 4, 3);
        let base = linear_cka(&x, 3, &y, 4).unwrap();
        // a rotation in the (0, 1) plane combined with a reflection of axis 2
        let (c, s) = (0.6f64, 0.8f64);
        let r = [c, -s, 0.0, s, c, 0.0, 0.0, 0.0, -1.0];
        let xr = matmul(&x, 30, 3, &r, 3);
        let scaled: Vec<f64> = xr.iter().map(|v| 7.5 * v).collect();
        assert!((linear_cka(&scaled, 3, &y, 4).unwrap() - base).abs() < 1e-12);
        // and unrelated representations are far from 1
        assert!(base < 0.9, "{base}");
    }

    #[test]
    fn cka_bad_inputs_are_typed_errors() {
        assert!(linear_cka(&[1.0, 2.0, 3.0], 2, &[1.0, 2.0], 1).is_err());
        assert!(linear_cka(&[1.0], 1, &[1.0], 1).is_err());
        assert!(linear_cka(&[1.0, 1.0], 1, &[1.0, 2.0], 1).is_err());
    }
}
