//! Dynamical systems whose parameters vary by task, for meta-learning dynamics models and online
//! adaptation.
//!
//! Families ([`Family`]): a damped harmonic oscillator (mass, damping, stiffness), a damped
//! pendulum with a constant applied torque (length, damping, forcing) and Lotka–Volterra
//! predator–prey (four rates). Trajectories are integrated with a fixed-step classical
//! Runge–Kutta scheme ([`rk4_step`]).
//!
//! A task ([`Dynamics`]) is one system: the support set is a short *observed trajectory* — `K`
//! consecutive states (step `dt`) with their observed time derivatives, both with optional
//! Gaussian observation noise — and the query set asks for the vector field (the true time
//! derivative) at `Q` states elsewhere in the state space. A model learns `state → d state/dt`
//! and is rolled out with [`rollout`] to compare against the true trajectory.
//!
//! [`DriftingStream`] produces windows of observations of one system whose parameters drift
//! slowly (a random walk) and sometimes jump, for online adaptation.

use metalearn_core::episode::{EpisodeData, HostBatch, TaskDistribution, TaskKind};
use metalearn_core::error::{ensure_nonzero, Error, Result};
use metalearn_core::seed::{rng, Rng};
use rand::Rng as _;
use serde::{Deserialize, Serialize};

/// One RK4 step of `dx/dt = f(x)` from `x` with step `dt`.
pub fn rk4_step(f: &dyn Fn(&[f64]) -> Vec<f64>, x: &[f64], dt: f64) -> Vec<f64> {
    let add = |a: &[f64], b: &[f64], s: f64| -> Vec<f64> {
        a.iter().zip(b).map(|(u, v)| u + s * v).collect()
    };
    let k1 = f(x);
    let k2 = f(&add(x, &k1, dt / 2.0));
    let k3 = f(&add(x, &k2, dt / 2.0));
    let k4 = f(&add(x, &k3, dt));
    x.iter()
        .enumerate()
        .map(|(i, xi)| xi + dt / 6.0 * (k1[i] + 2.0 * k2[i] + 2.0 * k3[i] + k4[i]))
        .collect()
}

/// `steps` RK4 steps from `x0`: the states at `0, dt, …, steps·dt` (`steps + 1` of them).
pub fn integrate(
    f: &dyn Fn(&[f64]) -> Vec<f64>,
    x0: &[f64],
    dt: f64,
    steps: usize,
) -> Vec<Vec<f64>> {
    let mut out = Vec::with_capacity(steps + 1);
    out.push(x0.to_vec());
    for _ in 0..steps {
        let next = rk4_step(f, out.last().map_or(x0, |v| v.as_slice()), dt);
        out.push(next);
    }
    out
}

/// A family of systems.
///
/// In files (experiment TOML, results JSON) the families are spelled `oscillator`, `pendulum`
/// and `lotka_volterra`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Family {
    /// `m ẍ + c ẋ + k x = 0`; state `(x, v)`; parameters `(m, c, k)`.
    Oscillator,
    /// `θ̈ = −(g/L) sin θ − b θ̇ + u`; state `(θ, ω)`; parameters `(L, b, u)`.
    Pendulum,
    /// `ẋ = αx − βxy`, `ẏ = δxy − γy`; state `(x, y)`; parameters `(α, β, δ, γ)`.
    LotkaVolterra,
}

impl Family {
    /// Parameter names, in order.
    pub fn parameter_names(self) -> &'static [&'static str] {
        match self {
            Self::Oscillator => &["mass", "damping", "stiffness"],
            Self::Pendulum => &["length", "damping", "forcing"],
            Self::LotkaVolterra => &["alpha", "beta", "delta", "gamma"],
        }
    }

    /// The default parameter ranges (meta-training distribution).
    pub fn default_ranges(self) -> Vec<(f64, f64)> {
        match self {
            Self::Oscillator => vec![(0.5, 2.0), (0.0, 0.5), (0.5, 4.0)],
            Self::Pendulum => vec![(0.5, 2.0), (0.0, 0.5), (-0.5, 0.5)],
            Self::LotkaVolterra => vec![(0.8, 1.5), (0.3, 0.7), (0.3, 0.7), (0.8, 1.5)],
        }
    }

    /// Range of each state coordinate where initial states and query states are drawn.
    pub fn state_ranges(self) -> [(f64, f64); 2] {
        match self {
            Self::Oscillator | Self::Pendulum => [(-2.0, 2.0), (-2.0, 2.0)],
            Self::LotkaVolterra => [(0.5, 3.0), (0.5, 3.0)],
        }
    }
}

/// One system: a family and its parameters.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct System {
    /// The family.
    pub family: Family,
    /// Its parameters ([`Family::parameter_names`] order).
    pub parameters: Vec<f64>,
}

impl System {
    /// A system; errors if the parameter count is wrong or a parameter is not finite, or a
    /// mass / length is not positive.
    pub fn new(family: Family, parameters: Vec<f64>) -> Result<Self> {
        if parameters.len() != family.parameter_names().len() {
            return Err(Error::ShapeMismatch(format!(
                "{family:?} has {} parameters, got {}",
                family.parameter_names().len(),
                parameters.len()
            )));
        }
        if parameters.iter().any(|p| !p.is_finite())
            || (matches!(family, Family::Oscillator | Family::Pendulum) && parameters[0] <= 0.0)
        {
            return Err(Error::config(
                "parameters",
                format!("invalid {family:?} parameters {parameters:?}"),
            ));
        }
        Ok(Self { family, parameters })
    }

    /// The vector field `dx/dt` at state `x`.
    pub fn derivative(&self, x: &[f64]) -> Vec<f64> {
        let p = &self.parameters;
        match self.family {
            Family::Oscillator => vec![x[1], -(p[1] * x[1] + p[2] * x[0]) / p[0]],
            Family::Pendulum => vec![x[1], -(9.81 / p[0]) * x[0].sin() - p[1] * x[1] + p[2]],
            Family::LotkaVolterra => vec![
                p[0] * x[0] - p[1] * x[0] * x[1],
                p[2] * x[0] * x[1] - p[3] * x[1],
            ],
        }
    }

    /// The trajectory from `x0`: `steps + 1` states `dt` apart.
    pub fn trajectory(&self, x0: &[f64], dt: f64, steps: usize) -> Vec<Vec<f64>> {
        integrate(&|x| self.derivative(x), x0, dt, steps)
    }
}

/// Configuration of a [`Dynamics`] task family.
///
/// | field | default | meaning | valid |
/// |---|---|---|---|
/// | `family` | — | the system family | — |
/// | `support` | — | observed consecutive states per task (K) | ≥ 1 |
/// | `query` | — | query states per task | ≥ 1 |
/// | `dt` | 0.1 | observation step | > 0 |
/// | `noise` | 0.0 | std of Gaussian observation noise on support states and derivatives | ≥ 0 |
/// | `ranges` | family default | parameter ranges (uniform) | lo ≤ hi |
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DynamicsConfig {
    /// The family.
    pub family: Family,
    /// Observed states per task.
    pub support: usize,
    /// Query states per task.
    pub query: usize,
    /// Observation step.
    pub dt: f64,
    /// Observation noise std.
    pub noise: f64,
    /// Parameter ranges.
    pub ranges: Vec<(f64, f64)>,
}

impl DynamicsConfig {
    /// `family` with its default ranges, no noise, `dt = 0.1`.
    pub fn new(family: Family, support: usize, query: usize) -> Self {
        Self {
            family,
            support,
            query,
            dt: 0.1,
            noise: 0.0,
            ranges: family.default_ranges(),
        }
    }

    /// Set the observation noise.
    pub fn with_noise(mut self, noise: f64) -> Self {
        self.noise = noise;
        self
    }

    /// Set the parameter ranges (e.g. outside the training ranges for generalisation tests).
    pub fn with_ranges(mut self, ranges: Vec<(f64, f64)>) -> Self {
        self.ranges = ranges;
        self
    }

    /// Check every field.
    pub fn validate(&self) -> Result<()> {
        ensure_nonzero("support", self.support)?;
        ensure_nonzero("query", self.query)?;
        if !(self.dt > 0.0 && self.dt.is_finite()) {
            return Err(Error::config(
                "dt",
                format!("must be positive, got {}", self.dt),
            ));
        }
        if !(self.noise >= 0.0 && self.noise.is_finite()) {
            return Err(Error::config(
                "noise",
                format!("must be ≥ 0, got {}", self.noise),
            ));
        }
        if self.ranges.len() != self.family.parameter_names().len()
            || self
                .ranges
                .iter()
                .any(|(lo, hi)| !lo.is_finite() || !hi.is_finite() || lo > hi)
        {
            return Err(Error::config(
                "ranges",
                format!("{:?} needs one finite (lo, hi) per parameter", self.family),
            ));
        }
        Ok(())
    }
}

fn uniform(r: &mut Rng, (lo, hi): (f64, f64)) -> f64 {
    if hi > lo {
        r.random_range(lo..hi)
    } else {
        lo
    }
}

fn gaussian(r: &mut Rng) -> f64 {
    // Box–Muller.
    let u1: f64 = r.random::<f64>().max(1e-300);
    let u2: f64 = r.random();
    (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()
}

/// The task family: one system per seed.
#[derive(Debug, Clone)]
pub struct Dynamics {
    config: DynamicsConfig,
}

impl Dynamics {
    /// Validate `config`.
    pub fn new(config: DynamicsConfig) -> Result<Self> {
        config.validate()?;
        Ok(Self { config })
    }

    /// The configuration.
    pub fn config(&self) -> &DynamicsConfig {
        &self.config
    }

    /// The system of task `seed`.
    pub fn system(&self, seed: u64) -> Result<System> {
        let mut r = rng(seed);
        let p = self
            .config
            .ranges
            .iter()
            .map(|&range| uniform(&mut r, range))
            .collect();
        System::new(self.config.family, p)
    }

    /// Task `seed`: its system and episode.
    pub fn sample_with_system(&self, seed: u64) -> Result<(System, EpisodeData)> {
        let system = self.system(seed)?;
        let mut r = rng(seed ^ 0x9e37_79b9_7f4a_7c15);
        let ranges = self.config.family.state_ranges();
        let x0: Vec<f64> = ranges.iter().map(|&range| uniform(&mut r, range)).collect();
        let ep = episode(&system, &x0, &self.config, &mut r)?;
        Ok((system, ep))
    }
}

/// Support: `K` consecutive observed states from `x0` and their observed derivatives; query: the
/// true derivative at `Q` uniform states.
fn episode(system: &System, x0: &[f64], c: &DynamicsConfig, r: &mut Rng) -> Result<EpisodeData> {
    let traj = system.trajectory(x0, c.dt, c.support - 1);
    let (mut xs, mut ys) = (Vec::new(), Vec::new());
    for x in &traj {
        let d = system.derivative(x);
        for v in x {
            xs.push((v + c.noise * gaussian(r)) as f32);
        }
        for v in d {
            ys.push((v + c.noise * gaussian(r)) as f32);
        }
    }
    let support = HostBatch::regression(xs, vec![c.support, 2], ys, 2)?;
    let ranges = c.family.state_ranges();
    let (mut xq, mut yq) = (Vec::new(), Vec::new());
    for _ in 0..c.query {
        let x: Vec<f64> = ranges.iter().map(|&range| uniform(r, range)).collect();
        yq.extend(system.derivative(&x).into_iter().map(|v| v as f32));
        xq.extend(x.into_iter().map(|v| v as f32));
    }
    let query = HostBatch::regression(xq, vec![c.query, 2], yq, 2)?;
    Ok(EpisodeData {
        kind: TaskKind::Regression,
        support,
        query,
    })
}

impl TaskDistribution for Dynamics {
    fn sample(&self, seed: u64) -> Result<EpisodeData> {
        self.sample_with_system(seed).map(|(_, e)| e)
    }

    fn kind(&self) -> TaskKind {
        TaskKind::Regression
    }
}

/// Roll out a learned vector field `model` (state → derivative) with RK4 from `x0` and compare
/// with the true trajectory of `system`: the mean squared error over the `steps` predicted
/// states (both coordinates), and the predicted trajectory.
pub fn rollout(
    system: &System,
    model: &dyn Fn(&[f64]) -> Vec<f64>,
    x0: &[f64],
    dt: f64,
    steps: usize,
) -> (f64, Vec<Vec<f64>>) {
    let truth = system.trajectory(x0, dt, steps);
    let pred = integrate(model, x0, dt, steps);
    let mut se = 0.0;
    let mut n = 0usize;
    for (a, b) in truth.iter().zip(&pred).skip(1) {
        for (u, v) in a.iter().zip(b) {
            let d = u - v;
            // a diverging rollout counts as a very large (finite) error
            se += if d.is_finite() { d * d } else { 1e12 };
            n += 1;
        }
    }
    (se / n.max(1) as f64, pred)
}

/// Configuration of a [`DriftingStream`].
///
/// | field | default | meaning |
/// |---|---|---|
/// | `drift` | 0.02 | std of the per-window random walk of each parameter, as a fraction of its range |
/// | `jump_probability` | 0.05 | chance per window that all parameters are redrawn (a sudden change) |
/// | `window` | 10 | observed states per window |
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DriftConfig {
    /// The underlying task family (family, ranges, dt, noise; `support` is ignored).
    pub dynamics: DynamicsConfig,
    /// Random-walk std per window (fraction of each range).
    pub drift: f64,
    /// Probability of a sudden jump per window.
    pub jump_probability: f64,
    /// Observed states per window.
    pub window: usize,
}

impl DriftConfig {
    /// Defaults for `family`.
    pub fn new(family: Family) -> Self {
        Self {
            dynamics: DynamicsConfig::new(family, 10, 20),
            drift: 0.02,
            jump_probability: 0.05,
            window: 10,
        }
    }
}

/// A stream of observation windows of one system whose parameters drift and jump.
#[derive(Debug, Clone)]
pub struct DriftingStream {
    config: DriftConfig,
    rng: Rng,
    system: System,
    state: Vec<f64>,
    jumps: Vec<usize>,
    t: usize,
}

/// One window of a drifting stream.
#[derive(Debug, Clone, PartialEq)]
pub struct Window {
    /// Window number.
    pub index: usize,
    /// The system during this window.
    pub system: System,
    /// Whether the parameters jumped at the start of this window.
    pub jumped: bool,
    /// Support: this window's observed states and derivatives. Query: the true derivatives at
    /// states drawn across the state space (the system's current vector field).
    pub episode: EpisodeData,
}

impl DriftingStream {
    /// A stream from `seed`.
    pub fn new(config: DriftConfig, seed: u64) -> Result<Self> {
        config.dynamics.validate()?;
        ensure_nonzero("window", config.window)?;
        if !(config.drift >= 0.0 && (0.0..=1.0).contains(&config.jump_probability)) {
            return Err(Error::config(
                "drift",
                "drift must be ≥ 0 and jump_probability in [0, 1]",
            ));
        }
        let tasks = Dynamics::new(config.dynamics.clone())?;
        let system = tasks.system(seed)?;
        let mut r = rng(seed ^ 0x5151);
        let ranges = config.dynamics.family.state_ranges();
        let state = ranges.iter().map(|&range| uniform(&mut r, range)).collect();
        Ok(Self {
            config,
            rng: r,
            system,
            state,
            jumps: Vec::new(),
            t: 0,
        })
    }

    /// Windows at which the parameters jumped so far.
    pub fn jumps(&self) -> &[usize] {
        &self.jumps
    }

    /// The next window.
    pub fn next_window(&mut self) -> Result<Window> {
        let c = &self.config;
        let ranges = c.dynamics.ranges.clone();
        let jumped = self.t > 0 && self.rng.random::<f64>() < c.jump_probability;
        if jumped {
            self.jumps.push(self.t);
            let p = ranges
                .iter()
                .map(|&range| uniform(&mut self.rng, range))
                .collect();
            self.system = System::new(c.dynamics.family, p)?;
        } else if self.t > 0 {
            let p = self
                .system
                .parameters
                .iter()
                .zip(&ranges)
                .map(|(&v, &(lo, hi))| {
                    (v + c.drift * (hi - lo) * gaussian(&mut self.rng)).clamp(lo, hi)
                })
                .collect();
            self.system = System::new(c.dynamics.family, p)?;
        }
        let mut cfg = c.dynamics.clone();
        cfg.support = c.window;
        // Keep the observed trajectory inside the state box: restart from a fresh state when it
        // has left it (a new excitation of the system).
        let box_ok = self
            .state
            .iter()
            .zip(c.dynamics.family.state_ranges())
            .all(|(v, (lo, hi))| v.is_finite() && *v >= lo - 1.0 && *v <= hi + 1.0);
        if !box_ok {
            let ranges = c.dynamics.family.state_ranges();
            self.state = ranges
                .iter()
                .map(|&range| uniform(&mut self.rng, range))
                .collect();
        }
        let x0 = self.state.clone();
        let episode = episode(&self.system, &x0, &cfg, &mut self.rng)?;
        let traj = self.system.trajectory(&x0, cfg.dt, c.window);
        self.state = traj.last().cloned().unwrap_or(x0);
        let w = Window {
            index: self.t,
            system: self.system.clone(),
            jumped,
            episode,
        };
        self.t += 1;
        Ok(w)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rk4_matches_the_closed_form_oscillator() {
        // Underdamped: m = 1, c = 0.4, k = 4; x(0) = 1, v(0) = 0.
        let s = System::new(Family::Oscillator, vec![1.0, 0.4, 4.0]).unwrap();
        let (gamma, w0) = (0.2f64, 2.0f64);
        let wd = (w0 * w0 - gamma * gamma).sqrt();
        let exact = |t: f64| (-gamma * t).exp() * ((wd * t).cos() + gamma / wd * (wd * t).sin());
        for (dt, tol) in [(0.1, 1e-4), (0.05, 1e-5)] {
            let steps = (10.0 / dt) as usize;
            let traj = s.trajectory(&[1.0, 0.0], dt, steps);
            let err = traj
                .iter()
                .enumerate()
                .map(|(i, x)| (x[0] - exact(i as f64 * dt)).abs())
                .fold(0.0, f64::max);
            assert!(err < tol, "dt {dt}: max error {err}");
        }
        // fourth order: halving dt cuts the error ~16×
        let e = |dt: f64| {
            let n = (10.0 / dt) as usize;
            (s.trajectory(&[1.0, 0.0], dt, n)[n][0] - exact(10.0)).abs()
        };
        let ratio = e(0.1) / e(0.05);
        assert!(ratio > 12.0 && ratio < 20.0, "{ratio}");
    }

    #[test]
    fn tasks_differ_and_are_reproducible() {
        for family in [Family::Oscillator, Family::Pendulum, Family::LotkaVolterra] {
            let d = Dynamics::new(DynamicsConfig::new(family, 5, 7).with_noise(0.01)).unwrap();
            let (s1, e1) = d.sample_with_system(1).unwrap();
            let (s2, _) = d.sample_with_system(2).unwrap();
            assert_ne!(s1.parameters, s2.parameters);
            assert_eq!(e1, d.sample(1).unwrap());
            assert_eq!(e1.support.input_shape, vec![5, 2]);
            assert_eq!(e1.query.targets.len(), 14);
            for (p, (lo, hi)) in s1.parameters.iter().zip(family.default_ranges()) {
                assert!(*p >= lo && *p <= hi);
            }
        }
        assert!(Dynamics::new(DynamicsConfig::new(Family::Pendulum, 0, 3)).is_err());
        assert!(
            Dynamics::new(DynamicsConfig::new(Family::Pendulum, 3, 3).with_noise(-1.0)).is_err()
        );
        assert!(System::new(Family::Oscillator, vec![0.0, 1.0, 1.0]).is_err());
        assert!(System::new(Family::LotkaVolterra, vec![1.0]).is_err());
    }

    #[test]
    fn streams_drift_slowly_and_jump() {
        let mut cfg = DriftConfig::new(Family::Oscillator);
        cfg.jump_probability = 0.1;
        let mut s = DriftingStream::new(cfg, 3).unwrap();
        let windows: Vec<Window> = (0..80).map(|_| s.next_window().unwrap()).collect();
        let ranges = Family::Oscillator.default_ranges();
        let mut moved = 0;
        for w in windows.windows(2) {
            let (a, b) = (&w[0].system.parameters, &w[1].system.parameters);
            if a != b {
                moved += 1;
            }
            if !w[1].jumped {
                for ((x, y), (lo, hi)) in a.iter().zip(b).zip(&ranges) {
                    assert!((x - y).abs() <= 0.02 * (hi - lo) * 6.0, "drift too large");
                }
            }
        }
        assert!(moved >= 70, "parameters should change almost every window");
        assert!(!s.jumps().is_empty(), "no jump in 80 windows at p = 0.1");
        assert!(windows
            .iter()
            .all(|w| w.episode.support.inputs.iter().all(|v| v.is_finite())));
    }

    #[test]
    fn rollout_of_the_true_field_has_zero_error() {
        let s = System::new(Family::Pendulum, vec![1.0, 0.1, 0.2]).unwrap();
        let (mse, traj) = rollout(&s, &|x| s.derivative(x), &[0.5, 0.0], 0.05, 40);
        assert_eq!(mse, 0.0);
        assert_eq!(traj.len(), 41);
        let (bad, _) = rollout(&s, &|x| vec![x[1], 0.0], &[0.5, 0.0], 0.05, 40);
        assert!(bad > 1e-3);
    }
}
