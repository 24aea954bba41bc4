//! The search loop: ask a strategy for candidates, evaluate them (in parallel, each with its own
//! seed), journal every result, tell the strategy — and resume from the journal after a crash.

use crate::journal::{Journal, Record};
use crate::objective::Objective;
use crate::space::{Architecture, SearchSpace};
use crate::strategy::Strategy;
use crate::{Error, Result};
use metalearn_core::parallel::TaskPool;
use metalearn_core::SeedStream;
use serde::{Deserialize, Serialize};
use std::path::Path;
use std::time::Instant;

/// The score recorded for a candidate whose evaluation failed (its adaptation or meta-training
/// diverged, its score was not finite, or burn panicked on it): the lowest finite `f64`, so it
/// is never the best, survives the JSON journal, and the search goes on. The failure's reason
/// is in [`Record::failure`].
pub const FAILED_SCORE: f64 = f64::MIN;

/// Whether `score` marks a failed evaluation ([`FAILED_SCORE`]).
pub fn is_failure(score: f64) -> bool {
    score <= FAILED_SCORE
}

/// Whether an objective's error is the candidate's own failure (recorded with
/// [`FAILED_SCORE`]) rather than a problem of the search (bad data, I/O), which stops it.
fn candidate_failure(e: &Error) -> Option<String> {
    use metalearn_core::Error as C;
    let core = match e {
        Error::Score(s) => return Some(format!("score {s} is not finite")),
        Error::Core(c) | Error::Update(metalearn_update::Error::Core(c)) => c,
        _ => return None,
    };
    matches!(
        core,
        C::Diverged { .. } | C::AdaptationDiverged { .. } | C::TaskPanicked { .. }
    )
    .then(|| core.to_string())
}

/// How long and how wide a search runs.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct SearchConfig {
    /// Candidates evaluated in all.
    pub evaluations: usize,
    /// Candidates evaluated at once (asked together, evaluated in parallel with rayon, told in
    /// order). Results do not depend on thread scheduling; they do depend on this number, since
    /// the strategy learns only between rounds.
    pub parallel: usize,
    /// Root seed of the evaluations: candidate `i` is evaluated with `SeedStream::new(seed).child(i)`.
    pub seed: u64,
    /// Threads evaluating a round's candidates (0: one per core). Results do not depend on it.
    #[serde(default)]
    pub threads: usize,
}

impl SearchConfig {
    /// `evaluations` candidates, one at a time.
    pub fn new(evaluations: usize, seed: u64) -> Self {
        Self {
            evaluations,
            parallel: 1,
            seed,
            threads: 0,
        }
    }

    /// Evaluate a round's candidates on `threads` threads (0: one per core).
    pub fn with_threads(self, threads: usize) -> Self {
        Self { threads, ..self }
    }

    /// Evaluate `parallel` candidates at once.
    pub fn with_parallel(self, parallel: usize) -> Self {
        Self { parallel, ..self }
    }
}

/// What a search found.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SearchResult {
    /// Every evaluation, in order.
    pub records: Vec<Record>,
    /// How many of them were read back from the journal rather than evaluated.
    pub resumed: usize,
}

impl SearchResult {
    /// The best evaluation (first of equals).
    pub fn best(&self) -> Option<&Record> {
        self.records
            .iter()
            .fold(None, |best: Option<&Record>, r| match best {
                Some(b) if b.score >= r.score => Some(b),
                _ => Some(r),
            })
    }

    /// Best score after each evaluation (the anytime curve).
    pub fn best_so_far(&self) -> Vec<f64> {
        let mut best = f64::NEG_INFINITY;
        self.records
            .iter()
            .map(|r| {
                best = best.max(r.score);
                best
            })
            .collect()
    }
}

/// Run `config.evaluations` evaluations of `objective` on candidates from `strategy`.
///
/// With a `journal`, every evaluated candidate is appended to it (and synced) before the next
/// round starts, and a journal that already holds records is *resumed*: the strategy is replayed
/// through the recorded rounds (its proposals must match the records — else
/// [`Error::Journal`]: the journal belongs to another search), recorded candidates are not
/// evaluated again, and the run ends as an uninterrupted one with the same seed would.
pub fn run_search(
    space: &SearchSpace,
    strategy: &mut dyn Strategy,
    objective: &dyn Objective,
    config: SearchConfig,
    journal: Option<&Path>,
) -> Result<SearchResult> {
    if config.parallel == 0 {
        return Err(Error::Config("parallel must be at least 1".into()));
    }
    let (mut journal, old) = match journal {
        Some(p) => {
            let (j, r) = Journal::open(p)?;
            (Some(j), r)
        }
        None => (None, Vec::new()),
    };
    if old.len() > config.evaluations {
        return Err(Error::Config(format!(
            "the journal holds {} evaluations, more than the {} asked for",
            old.len(),
            config.evaluations
        )));
    }
    let seeds = SeedStream::new(config.seed);
    let mut records: Vec<Record> = Vec::with_capacity(config.evaluations);
    let mut start = 0;
    while start < config.evaluations {
        let end = (start + config.parallel).min(config.evaluations);
        let round: Vec<(usize, Architecture)> = (start..end)
            .map(|i| strategy.ask().map(|a| (i, a)))
            .collect::<Result<_>>()?;
        for (i, a) in &round {
            if let Some(r) = old.get(*i) {
                let mismatch = |message: String| Error::Journal {
                    path: journal
                        .as_ref()
                        .map_or(String::new(), |j| j.path().display().to_string()),
                    line: i + 1,
                    message,
                };
                if r.seed != seeds.child(*i as u64).seed() {
                    return Err(mismatch(format!(
                        "recorded with another `SearchConfig.seed` (candidate seed {} here, {} \
                         in the journal): resume with the seed that started it",
                        seeds.child(*i as u64).seed(),
                        r.seed
                    )));
                }
                if let Some(p) = r.parallel.filter(|&p| p != config.parallel) {
                    return Err(mismatch(format!(
                        "recorded by a search with `SearchConfig.parallel` = {p}, resumed with \
                         {}: resume with the same `parallel`",
                        config.parallel
                    )));
                }
                if &r.architecture != a {
                    return Err(Error::Journal {
                        path: journal
                            .as_ref()
                            .map_or(String::new(), |j| j.path().display().to_string()),
                        line: i + 1,
                        message: format!(
                            "recorded candidate {:?} but this search proposes {:?} (another \
                             seed, space or strategy?)",
                            r.architecture.0, a.0
                        ),
                    });
                }
            }
        }
        let fresh: Vec<(usize, Architecture)> = round
            .iter()
            .filter(|(i, _)| *i >= old.len())
            .cloned()
            .collect();
        let evaluated: Vec<Result<Record>> =
            TaskPool::new(config.threads).map(fresh, |_, (i, a)| {
                let seed = seeds.child(i as u64).seed();
                let t = Instant::now();
                let outcome = metalearn_core::parallel::caught(|| {
                    Ok(objective.evaluate(space, &a, seed).and_then(|s| {
                        if s.is_finite() {
                            Ok(s)
                        } else {
                            Err(Error::Score(s))
                        }
                    }))
                })
                .map_err(Error::from)
                .and_then(|r| r);
                let (score, failure) = match outcome {
                    Ok(s) => (s, None),
                    Err(e) => match candidate_failure(&e) {
                        Some(why) => (FAILED_SCORE, Some(why)),
                        None => return Ok(Err(e)),
                    },
                };
                Ok(Ok(Record {
                    index: i,
                    label: space.label(&a),
                    architecture: a,
                    score,
                    wall_seconds: t.elapsed().as_secs_f64(),
                    seed,
                    failure,
                    parallel: Some(config.parallel),
                }))
            })?;
        let mut evaluated = evaluated.into_iter();
        for (i, _) in &round {
            let r = match old.get(*i) {
                Some(r) => r.clone(),
                None => {
                    let r = evaluated
                        .next()
                        .ok_or_else(|| Error::Config("lost an evaluation".into()))??;
                    if let Some(j) = journal.as_mut() {
                        j.append(&r)?;
                    }
                    r
                }
            };
            records.push(r);
        }
        for r in &records[start..end] {
            strategy.tell(&r.architecture, r.score)?;
        }
        start = end;
    }
    Ok(SearchResult {
        resumed: old.len(),
        records,
    })
}
