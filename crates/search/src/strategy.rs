//! Search strategies behind one ask/tell interface: [`RandomSearch`], [`Reinforce`] (a learned
//! controller, Zoph & Le 2017) and [`RegularizedEvolution`] (Real et al. 2019). All are
//! deterministic given their seed and the scores they are told.

use crate::space::{Architecture, SearchSpace};
use crate::{Error, Result};
use burn::module::{AutodiffModule, Module, Param};
use burn::optim::adaptor::OptimizerAdaptor;
use burn::optim::{Adam, AdamConfig, GradientsParams, Optimizer};
use burn::tensor::activation::{log_softmax, softmax};
use burn::tensor::backend::{AutodiffBackend, Backend};
use burn::tensor::Tensor;
use metalearn_core::seed::{rng, Rng};
use rand::Rng as _;
use std::collections::VecDeque;

/// A search strategy: propose architectures (`ask`), learn from their scores (`tell`, higher is
/// better). Several asks may be outstanding (parallel evaluation); tells may come in any order.
pub trait Strategy: Send {
    /// The next architecture to evaluate.
    fn ask(&mut self) -> Result<Architecture>;
    /// The score of an architecture returned by `ask`.
    fn tell(&mut self, arch: &Architecture, score: f64) -> Result<()>;
    /// A short name for reports.
    fn name(&self) -> String;
}

fn finite(score: f64) -> Result<f64> {
    if score.is_finite() {
        Ok(score)
    } else {
        Err(Error::Score(score))
    }
}

/// Uniform random search (with constraint-aware sampling).
#[derive(Debug)]
pub struct RandomSearch {
    space: SearchSpace,
    rng: Rng,
}

impl RandomSearch {
    /// Random search over `space` from `seed`.
    pub fn new(space: SearchSpace, seed: u64) -> Self {
        Self {
            space,
            rng: rng(seed),
        }
    }
}

impl Strategy for RandomSearch {
    fn ask(&mut self) -> Result<Architecture> {
        Ok(self.space.sample(&mut self.rng))
    }
    fn tell(&mut self, arch: &Architecture, score: f64) -> Result<()> {
        self.space.check(arch)?;
        finite(score).map(|_| ())
    }
    fn name(&self) -> String {
        "random".into()
    }
}

/// Regularized (aging) evolution, Real et al. 2019: a population of the `population` most
/// recent evaluations; each proposal mutates one decision of the best of `sample` members drawn
/// at random; the oldest member leaves when a new one arrives. The first `population` proposals
/// are random.
#[derive(Debug)]
pub struct RegularizedEvolution {
    space: SearchSpace,
    population: VecDeque<(Architecture, f64)>,
    size: usize,
    sample: usize,
    asked: usize,
    rng: Rng,
}

impl RegularizedEvolution {
    /// Population `population` (P), tournament `sample` (S ≤ P).
    ///
    /// Errors: P = 0, S = 0 or S > P.
    pub fn new(space: SearchSpace, population: usize, sample: usize, seed: u64) -> Result<Self> {
        if population == 0 || sample == 0 || sample > population {
            return Err(Error::Config(format!(
                "regularized evolution needs 1 ≤ sample ≤ population, got sample {sample}, \
                 population {population}"
            )));
        }
        Ok(Self {
            space,
            population: VecDeque::new(),
            size: population,
            sample,
            asked: 0,
            rng: rng(seed),
        })
    }
}

impl Strategy for RegularizedEvolution {
    fn ask(&mut self) -> Result<Architecture> {
        self.asked += 1;
        if self.asked <= self.size || self.population.is_empty() {
            return Ok(self.space.sample(&mut self.rng));
        }
        let n = self.population.len();
        let mut idx: Vec<usize> = (0..n).collect();
        let s = self.sample.min(n);
        for i in 0..s {
            let j = self.rng.random_range(i..n);
            idx.swap(i, j);
        }
        let parent = idx[..s]
            .iter()
            .map(|&i| &self.population[i])
            .max_by(|a, b| a.1.total_cmp(&b.1))
            .map(|p| p.0.clone())
            .ok_or(Error::Config("empty tournament".into()))?;
        Ok(match self.space.mutate(&parent, &mut self.rng) {
            Some(child) => child,
            None => self.space.sample(&mut self.rng),
        })
    }

    fn tell(&mut self, arch: &Architecture, score: f64) -> Result<()> {
        self.space.check(arch)?;
        self.population.push_back((arch.clone(), finite(score)?));
        if self.population.len() > self.size {
            self.population.pop_front();
        }
        Ok(())
    }

    fn name(&self) -> String {
        format!("evolution (P = {}, S = {})", self.size, self.sample)
    }
}

/// The controller policy: decision `i`'s logits are a linear function of `[1, one-hot of every
/// earlier choice]`, so each decision is conditioned on all earlier ones (an autoregressive
/// policy; Zoph & Le use an LSTM, which a linear map on the full history subsumes for
/// categorical decisions of a fixed order).
#[derive(Module, Debug)]
pub struct Controller<B: Backend> {
    /// `W_i`: `[1 + Σ_{j<i} n_j, n_i]`, zero-initialised (uniform policy).
    weights: Vec<Param<Tensor<B, 2>>>,
}

impl<B: Backend> Controller<B> {
    fn new(space: &SearchSpace, device: &B::Device) -> Self {
        let mut inputs = 1;
        let mut weights = Vec::new();
        for d in space.decisions() {
            let n = d.choices.len();
            weights.push(Param::from_tensor(Tensor::zeros([inputs, n], device)));
            inputs += n;
        }
        Self { weights }
    }

    /// The history vector `[1, one-hot(a_0), …, one-hot(a_{i-1})]` for decision `i`.
    fn history(&self, arch: &[usize], i: usize, device: &B::Device) -> Tensor<B, 2> {
        let mut h = vec![1.0f32];
        for (j, w) in self.weights.iter().take(i).enumerate() {
            let n = w.dims()[1];
            let mut one = vec![0.0f32; n];
            if let Some(slot) = arch.get(j).and_then(|&c| one.get_mut(c)) {
                *slot = 1.0;
            }
            h.extend(one);
        }
        let len = h.len();
        Tensor::<B, 1>::from_floats(h.as_slice(), device).reshape([1, len])
    }

    fn logits(&self, arch: &[usize], i: usize, device: &B::Device) -> Tensor<B, 2> {
        self.history(arch, i, device).matmul(self.weights[i].val())
    }
}

/// REINFORCE search (Williams 1992; Zoph & Le 2017): sample each decision from the
/// [`Controller`]; after a score `R`, take an Adam step on
/// `−(R − b) · Σᵢ log π(aᵢ | a_{<i}) − β · Σᵢ H(π(· | a_{<i}))`, where `b` is an exponential
/// moving average of past rewards (decay `baseline_decay`) and `β` the entropy bonus.
///
/// The controller runs on the autodiff backend `B` the program picks (a tiny model: a CPU
/// backend such as `Autodiff<NdArrayCpu>` is the natural choice even when candidates train on a
/// GPU).
pub struct Reinforce<B: AutodiffBackend> {
    space: SearchSpace,
    controller: Controller<B>,
    optim: OptimizerAdaptor<Adam, Controller<B>, B>,
    learning_rate: f64,
    entropy_bonus: f64,
    baseline_decay: f64,
    baseline: Option<f64>,
    /// Lowest and highest real (not failed) scores told so far.
    worst: Option<f64>,
    best: Option<f64>,
    rng: Rng,
}

impl<B: AutodiffBackend> std::fmt::Debug for Reinforce<B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Reinforce")
            .field("learning_rate", &self.learning_rate)
            .field("entropy_bonus", &self.entropy_bonus)
            .field("baseline", &self.baseline)
            .finish()
    }
}

/// REINFORCE hyper-parameters.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct ReinforceConfig {
    /// Adam learning rate of the controller.
    pub learning_rate: f64,
    /// Entropy bonus β.
    pub entropy_bonus: f64,
    /// Decay of the reward baseline's moving average.
    pub baseline_decay: f64,
}

impl ReinforceConfig {
    /// Learning rate 0.05, entropy bonus 1e-3, baseline decay 0.9; change a field with the
    /// `with_*` methods.
    pub fn new() -> Self {
        Self {
            learning_rate: 0.05,
            entropy_bonus: 1e-3,
            baseline_decay: 0.9,
        }
    }

    /// Adam learning rate of the controller.
    pub fn with_learning_rate(mut self, learning_rate: f64) -> Self {
        self.learning_rate = learning_rate;
        self
    }

    /// Entropy bonus β.
    pub fn with_entropy_bonus(mut self, entropy_bonus: f64) -> Self {
        self.entropy_bonus = entropy_bonus;
        self
    }

    /// Decay of the reward baseline's moving average.
    pub fn with_baseline_decay(mut self, baseline_decay: f64) -> Self {
        self.baseline_decay = baseline_decay;
        self
    }
}

impl Default for ReinforceConfig {
    fn default() -> Self {
        Self::new()
    }
}

impl<B: AutodiffBackend> Reinforce<B> {
    /// A uniform controller over `space`.
    ///
    /// Errors: a non-positive learning rate, a negative entropy bonus, a decay outside [0, 1).
    pub fn new(space: SearchSpace, config: ReinforceConfig, seed: u64) -> Result<Self> {
        let valid = config.learning_rate > 0.0
            && config.learning_rate.is_finite()
            && config.entropy_bonus >= 0.0
            && config.entropy_bonus.is_finite()
            && (0.0..1.0).contains(&config.baseline_decay);
        if !valid {
            return Err(Error::Config(format!(
                "invalid REINFORCE config {config:?}"
            )));
        }
        let controller = Controller::new(&space, &Default::default());
        Ok(Self {
            space,
            controller,
            optim: AdamConfig::new().init(),
            learning_rate: config.learning_rate,
            entropy_bonus: config.entropy_bonus,
            baseline_decay: config.baseline_decay,
            baseline: None,
            worst: None,
            best: None,
            rng: rng(seed),
        })
    }

    /// The controller's probabilities of decision `i`'s choices given earlier choices `prefix`.
    pub fn probabilities(&self, prefix: &[usize], i: usize) -> Vec<f64> {
        let c = self.controller.valid();
        softmax(c.logits(prefix, i, &Default::default()), 1)
            .into_data()
            .iter::<f64>()
            .collect()
    }

    /// The current reward baseline.
    pub fn baseline(&self) -> Option<f64> {
        self.baseline
    }
}

impl<B: AutodiffBackend> Strategy for Reinforce<B> {
    fn ask(&mut self) -> Result<Architecture> {
        // Sample decision by decision; re-draw (at most a few times per decision, then fall back
        // to the space's sampler) when a constraint forbids the sampled choice.
        for _ in 0..100 {
            let mut arch = Vec::with_capacity(self.space.decisions().len());
            for i in 0..self.space.decisions().len() {
                let p = self.probabilities(&arch, i);
                let u: f64 = self.rng.random();
                let mut acc = 0.0;
                let mut pick = p.len() - 1;
                for (k, pk) in p.iter().enumerate() {
                    acc += pk;
                    if u < acc {
                        pick = k;
                        break;
                    }
                }
                arch.push(pick);
            }
            let a = Architecture(arch);
            if self.space.is_valid(&a) {
                return Ok(a);
            }
        }
        Ok(self.space.sample(&mut self.rng))
    }

    fn tell(&mut self, arch: &Architecture, score: f64) -> Result<()> {
        self.space.check(arch)?;
        let r = if crate::search::is_failure(score) {
            // A failed candidate: rewarded a little below the worst score seen (the baseline
            // stays on the scale of real scores); nothing to learn before any real score.
            match (self.worst, self.best) {
                (Some(w), Some(b)) => w - (b - w).max(1e-3),
                _ => return Ok(()),
            }
        } else {
            let r = finite(score)?;
            self.worst = Some(self.worst.map_or(r, |w| w.min(r)));
            self.best = Some(self.best.map_or(r, |b| b.max(r)));
            r
        };
        let b = self.baseline.unwrap_or(r);
        let advantage = r - b;
        self.baseline = Some(self.baseline_decay * b + (1.0 - self.baseline_decay) * r);
        let device = Default::default();
        let mut objective: Option<Tensor<B, 1>> = None;
        for (i, &a) in arch.0.iter().enumerate() {
            let logp = log_softmax(self.controller.logits(&arch.0, i, &device), 1);
            let p = logp.clone().exp();
            let entropy = (p * logp.clone()).sum().neg();
            let chosen = logp.slice([0..1, a..a + 1]).reshape([1]);
            let term = chosen.mul_scalar(-advantage) - entropy.mul_scalar(self.entropy_bonus);
            objective = Some(match objective {
                Some(o) => o + term,
                None => term,
            });
        }
        let Some(loss) = objective else {
            return Ok(());
        };
        let grads = GradientsParams::from_grads(
            metalearn_core::parallel::backward(loss)?,
            &self.controller,
        );
        self.controller = self
            .optim
            .step(self.learning_rate, self.controller.clone(), grads);
        Ok(())
    }

    fn name(&self) -> String {
        "REINFORCE".into()
    }
}
