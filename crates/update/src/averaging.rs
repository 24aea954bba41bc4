//! Model averaging: parameter soups (averages of weights) and ensembles (averages of
//! predictions).
//!
//! - [`uniform_soup`] and [`weighted_soup`]: `θ = Σ wᵢ θᵢ / Σ wᵢ` over models of one architecture.
//!   Averaging weights only makes sense for models that sit in one basin — typically models
//!   fine-tuned from one pretrained start (Wortsman et al. 2022, "Model soups").
//! - [`greedy_soup`] (Wortsman et al. 2022, Recipe 1): sort the candidates by their held-out
//!   score, then add each to the soup only if the soup's held-out score does not drop. The result
//!   never scores below the best single candidate on that held-out set.
//! - [`Ensemble`]: weighted average of the members' class probabilities (classification) or
//!   outputs (regression); costs one forward pass per member at prediction time.
//! - Averaging as meta-learning — fine-tune the current initialisation on each of many training
//!   tasks and replace it by the average of the results, repeatedly (federated averaging) — is
//!   Reptile with ε = 1: [`ReptileConfig::averaging`](crate::ReptileConfig::averaging).
//!
//! All functions work on any burn module through `metalearn_core::params`; models with
//! different parameter shapes are a typed error.

use burn::module::Module;
use burn::tensor::activation::softmax;
use burn::tensor::backend::Backend;
use burn::tensor::Tensor;
use metalearn_core::episode::TaskKind;
use metalearn_core::error::{check_weights, Error, Result};
use metalearn_core::model::MetaModule;
use metalearn_core::params;
use serde::{Deserialize, Serialize};

/// Uniform parameter average of `models` (one architecture).
///
/// Errors: an empty list, or models whose parameter shapes differ.
pub fn uniform_soup<B: Backend, M: Module<B>>(models: &[M]) -> Result<M> {
    params::average(models)
}

/// Weighted parameter average `Σ wᵢ θᵢ / Σ wᵢ`.
///
/// Errors: an empty list, a weight count that differs from the model count, a negative or
/// non-finite weight, weights that do not sum to a positive number, mismatched shapes.
pub fn weighted_soup<B: Backend, M: Module<B>>(models: &[M], weights: &[f64]) -> Result<M> {
    params::weighted_average(models, weights)
}

/// What [`greedy_soup`] chose.
#[derive(Debug, Clone)]
pub struct GreedySoup<M> {
    /// The soup: the uniform average of the chosen ingredients.
    pub model: M,
    /// Indices (into the candidate list) of the ingredients, in the order they were added.
    pub ingredients: Vec<usize>,
    /// Each candidate's own held-out score (candidate order).
    pub candidate_scores: Vec<f64>,
    /// The soup's held-out score.
    pub score: f64,
}

/// A record of a greedy soup for reports.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct GreedySoupSummary {
    /// Indices of the ingredients, in the order added.
    pub ingredients: Vec<usize>,
    /// Each candidate's held-out score.
    pub candidate_scores: Vec<f64>,
    /// The soup's held-out score.
    pub score: f64,
}

impl<M> GreedySoup<M> {
    /// The soup without its model.
    pub fn summary(&self) -> GreedySoupSummary {
        GreedySoupSummary {
            ingredients: self.ingredients.clone(),
            candidate_scores: self.candidate_scores.clone(),
            score: self.score,
        }
    }
}

/// Greedy soup (Wortsman et al. 2022): candidates sorted by `held_out(candidate)` (higher is
/// better); starting from the best, each next candidate joins the soup if the uniform average of
/// the soup plus it scores at least as well as the soup without it.
///
/// `held_out` must score on data none of the candidates was trained on (the paper uses the
/// held-out validation set); the result then never scores below the best candidate on it.
///
/// Errors: an empty list, mismatched shapes, a non-finite score, or an error of `held_out`.
pub fn greedy_soup<B: Backend, M: Module<B>>(
    candidates: &[M],
    mut held_out: impl FnMut(&M) -> Result<f64>,
) -> Result<GreedySoup<M>> {
    if candidates.is_empty() {
        return Err(Error::Empty("soup candidates"));
    }
    // Shapes are checked up front so that a mismatch is reported even if that candidate would
    // not have been added.
    params::average(candidates)?;
    let mut score = |m: &M| -> Result<f64> {
        let s = held_out(m)?;
        if s.is_finite() {
            Ok(s)
        } else {
            Err(Error::config(
                "held_out",
                format!("score must be finite, got {s}"),
            ))
        }
    };
    let candidate_scores = candidates
        .iter()
        .map(&mut score)
        .collect::<Result<Vec<f64>>>()?;
    let mut order: Vec<usize> = (0..candidates.len()).collect();
    // Stable sort, best first; ties keep candidate order.
    order.sort_by(|&a, &b| candidate_scores[b].total_cmp(&candidate_scores[a]));
    let mut ingredients = vec![order[0]];
    let mut soup = candidates[order[0]].clone();
    let mut best = candidate_scores[order[0]];
    for &c in &order[1..] {
        let mut trial: Vec<M> = ingredients.iter().map(|&i| candidates[i].clone()).collect();
        trial.push(candidates[c].clone());
        let mixed = params::average(&trial)?;
        let s = score(&mixed)?;
        if s >= best {
            ingredients.push(c);
            soup = mixed;
            best = s;
        }
    }
    Ok(GreedySoup {
        model: soup,
        ingredients,
        candidate_scores,
        score: best,
    })
}

/// A weighted ensemble of models: predictions are averaged, not parameters, so the members may
/// have different architectures as long as they share `M`'s type and output width.
#[derive(Debug, Clone)]
pub struct Ensemble<M> {
    members: Vec<M>,
    /// Normalised to sum to 1.
    weights: Vec<f64>,
}

impl<M> Ensemble<M> {
    /// An ensemble with equal weights.
    ///
    /// Errors: an empty list.
    pub fn uniform(members: Vec<M>) -> Result<Self> {
        let n = members.len();
        Self::weighted(members, vec![1.0; n])
    }

    /// An ensemble with member weights `weights` (normalised to sum to 1).
    ///
    /// Errors: an empty list, a weight count that differs from the member count, a negative or
    /// non-finite weight, weights that do not sum to a positive number.
    pub fn weighted(members: Vec<M>, weights: Vec<f64>) -> Result<Self> {
        if members.is_empty() {
            return Err(Error::Empty("ensemble members"));
        }
        let total = check_weights(&weights, members.len(), "ensemble members")?;
        Ok(Self {
            members,
            weights: weights.into_iter().map(|w| w / total).collect(),
        })
    }

    /// The members.
    pub fn members(&self) -> &[M] {
        &self.members
    }

    /// The normalised weights.
    pub fn weights(&self) -> &[f64] {
        &self.weights
    }

    /// `Σ wᵢ fᵢ(x)` with `f = g` applied to each member's output.
    fn mix<B: Backend, const D: usize>(
        &self,
        inputs: Tensor<B, D>,
        g: impl Fn(Tensor<B, 2>) -> Tensor<B, 2>,
    ) -> Result<Tensor<B, 2>>
    where
        M: MetaModule<B, D>,
    {
        let mut acc: Option<Tensor<B, 2>> = None;
        for (m, &w) in self.members.iter().zip(&self.weights) {
            let out = g(m.forward(inputs.clone())).mul_scalar(w);
            acc = Some(match acc {
                None => out,
                Some(a) if a.dims() == out.dims() => a + out,
                Some(a) => {
                    return Err(Error::ShapeMismatch(format!(
                        "ensemble members give outputs {:?} and {:?}",
                        a.dims(),
                        out.dims()
                    )))
                }
            });
        }
        acc.ok_or(Error::Empty("ensemble members"))
    }

    /// Weighted average of the members' class probabilities `softmax(fᵢ(x))`: `[batch, classes]`.
    pub fn probabilities<B: Backend, const D: usize>(
        &self,
        inputs: Tensor<B, D>,
    ) -> Result<Tensor<B, 2>>
    where
        M: MetaModule<B, D>,
    {
        self.mix(inputs, |o| softmax(o, 1))
    }

    /// Weighted average of the members' raw outputs (regression): `[batch, outputs]`.
    pub fn outputs<B: Backend, const D: usize>(&self, inputs: Tensor<B, D>) -> Result<Tensor<B, 2>>
    where
        M: MetaModule<B, D>,
    {
        self.mix(inputs, |o| o)
    }

    /// The ensemble's prediction for a task of `kind`, as something the task's loss and
    /// [`accuracy`](metalearn_core::loss::accuracy) accept: log-probabilities for classification
    /// (so `cross_entropy` of them is the ensemble's log loss), averaged outputs for regression.
    pub fn predict<B: Backend, const D: usize>(
        &self,
        kind: TaskKind,
        inputs: Tensor<B, D>,
    ) -> Result<Tensor<B, 2>>
    where
        M: MetaModule<B, D>,
    {
        match kind {
            TaskKind::Regression => self.outputs(inputs),
            // log of an average of probabilities; clamped so that a zero probability gives a
            // large finite loss rather than −∞.
            TaskKind::Classification { .. } => {
                Ok(self.probabilities(inputs)?.clamp_min(1e-30).log())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::backend::NdArray;
    use burn::module::Param;
    use metalearn_core::loss::cross_entropy;

    type Bk = NdArray<f32>;

    #[derive(Module, Debug)]
    struct Lin<B: Backend> {
        w: Param<Tensor<B, 2>>,
        b: Param<Tensor<B, 1>>,
    }

    impl<B: Backend> MetaModule<B, 2> for Lin<B> {
        fn forward(&self, x: Tensor<B, 2>) -> Tensor<B, 2> {
            x.matmul(self.w.val()) + self.b.val().unsqueeze()
        }
    }

    fn lin(w: [[f32; 2]; 2], b: [f32; 2]) -> Lin<Bk> {
        let d = Default::default();
        Lin {
            w: Param::from_tensor(Tensor::from_floats(w, &d)),
            b: Param::from_tensor(Tensor::from_floats(b, &d)),
        }
    }

    fn vals<const D: usize>(t: Tensor<Bk, D>) -> Vec<f32> {
        t.into_data().to_vec().unwrap_or_default()
    }

    #[test]
    fn soup_of_identical_models_is_the_model() {
        let m = lin([[1.0, 2.0], [3.0, 4.0]], [0.5, -0.5]);
        let s = uniform_soup(&[m.clone(), m.clone(), m.clone()]).unwrap();
        assert_eq!(params::to_vec(&s), params::to_vec(&m));
    }

    #[test]
    fn averages_by_hand() {
        let a = lin([[1.0, 2.0], [3.0, 4.0]], [0.0, 2.0]);
        let b = lin([[3.0, 0.0], [-1.0, 8.0]], [4.0, -2.0]);
        let u = params::to_vec(&uniform_soup(&[a.clone(), b.clone()]).unwrap());
        assert_eq!(u, vec![2.0, 1.0, 1.0, 6.0, 2.0, 0.0]);
        // weights 3:1 -> 0.75 a + 0.25 b
        let w = params::to_vec(&weighted_soup(&[a, b], &[3.0, 1.0]).unwrap());
        assert_eq!(w, vec![1.5, 1.5, 2.0, 5.0, 1.0, 1.0]);
    }

    #[test]
    fn bad_inputs_are_typed_errors() {
        let a = lin([[1.0, 2.0], [3.0, 4.0]], [0.0, 2.0]);
        assert!(matches!(
            uniform_soup::<Bk, Lin<Bk>>(&[]),
            Err(Error::Empty(_))
        ));
        assert!(matches!(
            weighted_soup(&[a.clone(), a.clone()], &[0.0, 0.0]),
            Err(Error::InvalidConfig {
                field: "weights",
                ..
            })
        ));
        assert!(matches!(
            weighted_soup(&[a.clone(), a.clone()], &[1.0, -1.0]),
            Err(Error::InvalidConfig {
                field: "weights",
                ..
            })
        ));
        assert!(matches!(
            weighted_soup(std::slice::from_ref(&a), &[1.0, 1.0]),
            Err(Error::ShapeMismatch(_))
        ));
        let d = Default::default();
        let wide = Lin::<Bk> {
            w: Param::from_tensor(Tensor::zeros([2, 3], &d)),
            b: Param::from_tensor(Tensor::zeros([3], &d)),
        };
        assert!(matches!(
            uniform_soup(&[a.clone(), wide.clone()]),
            Err(Error::ShapeMismatch(_))
        ));
        assert!(matches!(
            greedy_soup(&[a.clone(), wide], |_| Ok(1.0)),
            Err(Error::ShapeMismatch(_))
        ));
        assert!(matches!(
            greedy_soup(std::slice::from_ref(&a), |_| Ok(f64::NAN)),
            Err(Error::InvalidConfig { .. })
        ));
        assert!(matches!(
            Ensemble::<Lin<Bk>>::uniform(vec![]),
            Err(Error::Empty(_))
        ));
        assert!(matches!(
            Ensemble::weighted(vec![a.clone(), a], vec![0.0, 0.0]),
            Err(Error::InvalidConfig { .. })
        ));
    }

    #[test]
    fn greedy_soup_never_below_its_best_ingredient() {
        // Score: negative distance of the parameters to a target; the best candidate is the
        // closest one, and averaging in a candidate on the far side of the target helps.
        let target = [1.0f64, 1.0, 1.0, 1.0, 0.0, 0.0];
        let score = |m: &Lin<Bk>| -> Result<f64> {
            let v = params::to_vec(m);
            Ok(-v
                .iter()
                .zip(target)
                .map(|(a, b)| (a - b).powi(2))
                .sum::<f64>())
        };
        let cands = vec![
            lin([[5.0, 5.0], [5.0, 5.0]], [4.0, 4.0]), // far away: must be left out
            lin([[1.5, 1.5], [1.5, 1.5]], [0.5, 0.5]), // as close as 2, but no help
            lin([[0.5, 0.5], [0.5, 0.5]], [-0.5, -0.5]), // mirror image of 3: soup near exact
            lin([[1.4, 1.6], [1.5, 1.5]], [0.5, 0.4]), // best single model
        ];
        let soup = greedy_soup(&cands, score).unwrap();
        let best_single = soup
            .candidate_scores
            .iter()
            .copied()
            .fold(f64::NEG_INFINITY, f64::max);
        assert!(soup.score >= best_single, "{soup:?}");
        let best = (0..4)
            .max_by(|&a, &b| soup.candidate_scores[a].total_cmp(&soup.candidate_scores[b]))
            .unwrap();
        assert_eq!(soup.ingredients[0], best);
        assert!(soup.ingredients.contains(&2));
        assert!(!soup.ingredients.contains(&0));
        assert_eq!(soup.score, score(&soup.model).unwrap());
    }

    #[test]
    fn ensemble_of_one_is_the_model_and_probabilities_average() {
        let d = Default::default();
        let a = lin([[1.0, -1.0], [0.5, 2.0]], [0.1, 0.0]);
        let b = lin([[0.0, 1.0], [1.0, 0.0]], [0.0, 0.3]);
        let x = Tensor::<Bk, 2>::from_floats([[1.0, 2.0], [-1.0, 0.5]], &d);
        let one = Ensemble::uniform(vec![a.clone()]).unwrap();
        assert_eq!(
            vals(one.outputs(x.clone()).unwrap()),
            vals(a.forward(x.clone()))
        );
        let p1 = vals(one.probabilities(x.clone()).unwrap());
        let pa = vals(softmax(a.forward(x.clone()), 1));
        for (u, v) in p1.iter().zip(&pa) {
            assert!((u - v).abs() < 1e-6);
        }
        let e = Ensemble::weighted(vec![a.clone(), b.clone()], vec![1.0, 3.0]).unwrap();
        let p = vals(e.probabilities(x.clone()).unwrap());
        let pb = vals(softmax(b.forward(x.clone()), 1));
        for k in 0..p.len() {
            assert!((p[k] - (0.25 * pa[k] + 0.75 * pb[k])).abs() < 1e-6);
        }
        // log-probabilities: the ensemble's log loss
        let logp = e
            .predict(TaskKind::Classification { ways: 2 }, x.clone())
            .unwrap();
        let t = Tensor::<Bk, 2>::from_floats([[1.0, 0.0], [0.0, 1.0]], &d);
        let want = -0.5 * (f64::from(p[0]).ln() + f64::from(p[3]).ln());
        let got = metalearn_core::loss::scalar(cross_entropy(logp, t));
        // cross_entropy applies log_softmax, which leaves normalised log-probabilities as they are
        assert!((got - want).abs() < 1e-5, "{got} vs {want}");
    }
}
