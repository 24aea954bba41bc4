//! Meta-testing on fresh tasks: the steps curve.

use crate::Result;
use metalearn_core::learner::{AdaptationCurve, MetaLearner};
use metalearn_core::parallel::TaskPool;
use metalearn_core::stats::Summary;
use metalearn_core::{Error, SeedStream, TaskDistribution};
use serde::{Deserialize, Serialize};

/// Summary of the query metrics after a number of adaptation steps.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StepsPoint {
    /// Adaptation steps.
    pub steps: usize,
    /// Query loss over tasks.
    pub loss: Summary,
    /// Query accuracy over tasks (classification only).
    pub accuracy: Option<Summary>,
}

/// Query metrics after 0, 1, …, S adaptation steps, summarised over tasks.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StepsCurve {
    /// One point per number of steps, in increasing order.
    pub points: Vec<StepsPoint>,
}

impl StepsCurve {
    /// Summarise per-task adaptation curves (all of the same length).
    pub fn from_curves(curves: &[AdaptationCurve]) -> Result<Self> {
        let first = curves.first().ok_or(Error::Empty("adaptation curves"))?;
        if curves.iter().any(|c| c.len() != first.len()) {
            return Err(
                Error::ShapeMismatch("adaptation curves of different lengths".into()).into(),
            );
        }
        let points = (0..first.len())
            .map(|i| {
                let losses: Vec<f64> = curves.iter().map(|c| c[i].loss).collect();
                let accs: Vec<f64> = curves.iter().filter_map(|c| c[i].accuracy).collect();
                StepsPoint {
                    steps: first[i].steps,
                    loss: Summary::of(&losses).unwrap_or(Summary {
                        n: 0,
                        mean: f64::NAN,
                        std: 0.0,
                        ci95: 0.0,
                    }),
                    accuracy: Summary::of(&accs),
                }
            })
            .collect();
        Ok(Self { points })
    }

    /// The point after `steps` adaptation steps.
    pub fn at(&self, steps: usize) -> Option<&StepsPoint> {
        self.points.iter().find(|p| p.steps == steps)
    }
}

/// Adapt `learner` to `n_tasks` fresh tasks drawn from `tasks` with seeds
/// `seed.child(0..n_tasks)` and summarise the query metrics after 0..=`max_steps` steps.
///
/// Tasks are adapted in parallel, one per core, each on its own exclusive lane
/// ([`TaskPool`]; never on rayon's global pool, so this cannot deadlock against backward passes
/// running elsewhere), and gathered in task order, so the numbers do not depend on the number of
/// threads. CPU backends run one small task per thread faster than they spread one task's small
/// ops over threads: on 2 cores this halves the time of a test run.
pub fn meta_test<L: MetaLearner<D> + Sync, const D: usize>(
    learner: &L,
    tasks: &dyn TaskDistribution,
    n_tasks: usize,
    max_steps: usize,
    seed: SeedStream,
) -> Result<StepsCurve> {
    if n_tasks == 0 {
        return Err(Error::config("n_tasks", "must be at least 1").into());
    }
    let curves = TaskPool::default().map((0..n_tasks).collect(), |_, i| {
        let ep = tasks.sample(seed.child(i as u64).seed())?;
        learner.adaptation_curve(&ep, max_steps)
    })?;
    StepsCurve::from_curves(&curves)
}

/// [`meta_test`] scored after exactly `steps` adaptation steps: a one-point [`StepsCurve`].
///
/// The same tasks (and, for learners whose query metrics do not depend on how often they are
/// measured, the same numbers) as the last point of `meta_test`, with one query pass per task
/// instead of `steps + 1` ([`MetaLearner::evaluate`]): what a test protocol that reports the
/// final accuracy needs.
pub fn meta_test_final<L: MetaLearner<D> + Sync, const D: usize>(
    learner: &L,
    tasks: &dyn TaskDistribution,
    n_tasks: usize,
    steps: usize,
    seed: SeedStream,
) -> Result<StepsCurve> {
    if n_tasks == 0 {
        return Err(Error::config("n_tasks", "must be at least 1").into());
    }
    let points = TaskPool::default().map((0..n_tasks).collect(), |_, i| {
        let ep = tasks.sample(seed.child(i as u64).seed())?;
        Ok(vec![learner.evaluate(&ep, steps)?])
    })?;
    StepsCurve::from_curves(&points)
}
