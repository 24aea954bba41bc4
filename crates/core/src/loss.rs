//! Task losses and metrics, written from primitive ops so that they can be differentiated twice.

use crate::{Error, Result, TaskKind};
use burn::tensor::{activation::log_softmax, backend::Backend, Tensor};

/// Mean squared error over all elements: `mean((o − t)²)`.
pub fn mse<B: Backend>(outputs: Tensor<B, 2>, targets: Tensor<B, 2>) -> Tensor<B, 1> {
    let n = outputs.shape().num_elements().max(1);
    let d = outputs - targets;
    // sum · (1/n) rather than mean(): burn 0.21 computes some scalar-division backwards in f32.
    (d.clone() * d).sum().mul_scalar(1.0 / n as f64)
}

/// Cross-entropy with one-hot (or soft) targets: `−mean_i Σ_c t_ic · log softmax(o_i)_c`.
pub fn cross_entropy<B: Backend>(logits: Tensor<B, 2>, targets: Tensor<B, 2>) -> Tensor<B, 1> {
    let n = logits.dims()[0].max(1);
    (log_softmax(logits, 1) * targets)
        .sum()
        .mul_scalar(-1.0 / n as f64)
}

/// The loss a task of `kind` is trained with. Outputs and targets must have the same shape
/// (no broadcasting: a 1-wide output against 3-wide targets is an error, not a silent mean).
pub fn task_loss<B: Backend>(
    kind: TaskKind,
    outputs: Tensor<B, 2>,
    targets: Tensor<B, 2>,
) -> Result<Tensor<B, 1>> {
    let (o, t) = (outputs.dims(), targets.dims());
    if o != t {
        return Err(Error::ShapeMismatch(format!(
            "the model gives outputs of shape {o:?} but the {} targets have shape {t:?}",
            kind.describe()
        )));
    }
    Ok(match kind {
        TaskKind::Regression => mse(outputs, targets),
        TaskKind::Classification { .. } => cross_entropy(outputs, targets),
    })
}

/// Fraction of rows whose arg-max equals the label.
pub fn accuracy<B: Backend>(logits: Tensor<B, 2>, labels: &[usize]) -> f64 {
    if labels.is_empty() {
        return 0.0;
    }
    let pred = logits.argmax(1).into_data();
    let pred: Vec<i64> = pred.iter::<i64>().collect();
    let hits = pred
        .iter()
        .zip(labels)
        .filter(|(p, l)| **p == **l as i64)
        .count();
    hits as f64 / labels.len() as f64
}

/// A scalar tensor as `f64`.
pub fn scalar<B: Backend>(t: Tensor<B, 1>) -> f64 {
    t.into_data().iter::<f64>().next().unwrap_or(f64::NAN)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::NdArrayCpu as B;

    #[test]
    fn losses_by_hand() {
        let d = Default::default();
        let o = Tensor::<B, 2>::from_floats([[1.0, 2.0], [3.0, 4.0]], &d);
        let t = Tensor::<B, 2>::from_floats([[1.0, 0.0], [0.0, 1.0]], &d);
        // (0 + 4 + 9 + 9) / 4
        assert!((scalar(mse(o.clone(), t.clone())) - 5.5).abs() < 1e-6);
        // each row: log(1 + e) - (chosen logit - other): row0 picks the smaller logit.
        let l0 = (1.0f64.exp() + 2.0f64.exp()).ln() - 1.0;
        let l1 = (3.0f64.exp() + 4.0f64.exp()).ln() - 4.0;
        assert!((scalar(cross_entropy(o.clone(), t)) - 0.5 * (l0 + l1)).abs() < 1e-5);
        assert_eq!(accuracy(o, &[1, 1]), 1.0);
    }
}
