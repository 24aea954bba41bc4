//! Search files: what `metalearn search` reads — an architecture search scored by few-shot
//! accuracy after brief meta-training on Omniglot.
//!
//! ```toml
//! seed = 1
//! backend = "flex"
//!
//! [space]                    # default: the Conv4 preset (blocks, filters, kernel)
//! [[space.decisions]]
//! name = "blocks"
//! choices = [2, 3, 4]
//! # … `filters` and `kernel` too; [[space.constraints]] as in `SearchSpace::from_toml`
//!
//! [strategy]
//! kind = "evolution"         # random | reinforce | evolution
//! population = 8             # evolution: population and tournament size
//! sample = 3
//!
//! [objective]                # metalearn_search::MetaObjectiveConfig
//! method = "ProtoNet"        # ProtoNet | Fomaml
//! iterations = 50
//!
//! [search]
//! evaluations = 24
//! parallel = 1
//! ```
//!
//! The run directory gets `search.toml` (the resolved file), `journal.jsonl` (one synced line
//! per evaluated candidate: a killed search resumes from it, neither losing nor repeating a
//! finished evaluation) and `result.json`.

use crate::experiment::{claim, parse_backend, parse_seed, ConfigError, Ctx, OmniglotSplit};
use crate::run::omniglot_classes;
use crate::Result;
use burn::tensor::backend::Backend;
use metalearn_core::backend::BackendKind;
use metalearn_core::with_backend;
use metalearn_search::presets::CONV_SPACE_TOML;
use metalearn_search::{
    run_search, MetaObjective, MetaObjectiveConfig, RandomSearch, RegularizedEvolution, Reinforce,
    ReinforceConfig, SearchConfig, SearchResult, SearchSpace, Strategy,
};
use serde::{Deserialize, Serialize};
use std::path::Path;
use toml::{Table, Value};

/// The REINFORCE controller's backend: a tiny model, on the CPU.
type CpuController = burn::backend::Autodiff<metalearn_core::backend::NdArrayCpu>;

/// The search strategy.
#[derive(Debug, Clone, PartialEq)]
pub enum StrategySpec {
    /// Uniform random search.
    Random,
    /// REINFORCE with a learned controller.
    Reinforce(ReinforceConfig),
    /// Regularized (aging) evolution.
    Evolution {
        /// Population size.
        population: usize,
        /// Tournament size.
        sample: usize,
    },
}

/// A parsed, checked search file.
#[derive(Debug, Clone)]
pub struct SearchFile {
    /// Root seed.
    pub seed: u64,
    /// Backend the candidates train on.
    pub backend: BackendKind,
    /// The space.
    pub space: SearchSpace,
    /// The strategy.
    pub strategy: StrategySpec,
    /// The objective's budget.
    pub objective: MetaObjectiveConfig,
    /// Omniglot split: candidates train on its training characters and are scored on its
    /// validation characters.
    pub split: OmniglotSplit,
    /// Evaluations and parallelism.
    pub search: SearchConfig,
    resolved: Table,
}

#[derive(Serialize, Deserialize)]
struct Evolution {
    population: usize,
    sample: usize,
}

#[derive(Serialize, Deserialize)]
struct Rounds {
    evaluations: usize,
    parallel: usize,
    threads: usize,
}

const TOP_KEYS: [&str; 6] = [
    "seed",
    "backend",
    "space",
    "strategy",
    "objective",
    "search",
];

impl SearchFile {
    /// Read and check the search file at `path`.
    pub fn load(path: &Path) -> std::result::Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Io {
            file: path.display().to_string(),
            source,
        })?;
        Self::parse(&text, &path.display().to_string())
    }

    /// Parse and check search-file text; `file` names it in errors.
    pub fn parse(text: &str, file: &str) -> std::result::Result<Self, ConfigError> {
        let cx = Ctx { file };
        let root: Table = toml::from_str(text).map_err(|e| ConfigError::Syntax {
            file: file.to_string(),
            message: e.to_string(),
        })?;
        if let Some(k) = root.keys().find(|k| !TOP_KEYS.contains(&k.as_str())) {
            return Err(cx.key(
                k,
                format!("unknown key (expected one of: {})", TOP_KEYS.join(", ")),
            ));
        }
        let seed = parse_seed(&cx, &root)?;
        let backend = parse_backend(&cx, &root)?;
        let mut resolved = Table::new();
        resolved.insert("seed".into(), Value::Integer(seed as i64));
        resolved.insert("backend".into(), Value::String(backend.to_string()));

        let space_table = match cx.section(&root, "space", false)? {
            Some(t) => t.clone(),
            None => toml::from_str(CONV_SPACE_TOML).map_err(|e| cx.key("space", e.to_string()))?,
        };
        let space_text =
            toml::to_string(&space_table).map_err(|e| cx.key("space", e.to_string()))?;
        let space =
            SearchSpace::from_toml(&space_text).map_err(|e| cx.key("space", e.to_string()))?;
        for needed in ["blocks", "filters", "kernel"] {
            if !space.decisions().iter().any(|d| d.name == needed) {
                return Err(cx.key(
                    "space",
                    format!("the Conv4 search needs a decision named `{needed}`"),
                ));
            }
        }
        resolved.insert("space".into(), Value::Table(space_table));

        let st = cx.section(&root, "strategy", true)?;
        let kind = st
            .and_then(|t| t.get("kind"))
            .and_then(Value::as_str)
            .ok_or_else(|| cx.key("strategy.kind", "missing (random, reinforce or evolution)"))?;
        let (strategy, mut st_table) = match kind {
            "random" => (
                StrategySpec::Random,
                cx.overlay("strategy", &Table::new(), st, &["kind"])?.1,
            ),
            "reinforce" => {
                let (c, t) = cx.overlay("strategy", &ReinforceConfig::new(), st, &["kind"])?;
                (StrategySpec::Reinforce(c), t)
            }
            "evolution" => {
                let base = Evolution {
                    population: 8,
                    sample: 3,
                };
                let (e, t): (Evolution, _) = cx.overlay("strategy", &base, st, &["kind"])?;
                if e.population == 0 || e.sample == 0 || e.sample > e.population {
                    return Err(cx.key("strategy.sample", "needs 1 ≤ sample ≤ population"));
                }
                (
                    StrategySpec::Evolution {
                        population: e.population,
                        sample: e.sample,
                    },
                    t,
                )
            }
            other => {
                return Err(cx.key(
                    "strategy.kind",
                    format!("unknown strategy `{other}` (expected random, reinforce or evolution)"),
                ))
            }
        };
        st_table.insert("kind".into(), Value::String(kind.into()));
        resolved.insert("strategy".into(), Value::Table(st_table));

        let ob = cx.section(&root, "objective", false)?;
        let split = match ob
            .map(|t| cx.string(t, "objective", "split"))
            .transpose()?
            .flatten()
        {
            None | Some("vinyals") => OmniglotSplit::Vinyals,
            Some("lake") => OmniglotSplit::Lake,
            Some(other) => {
                return Err(cx.key(
                    "objective.split",
                    format!("unknown split `{other}` (expected vinyals or lake)"),
                ))
            }
        };
        let (objective, mut ob_table): (MetaObjectiveConfig, _) =
            cx.overlay("objective", &MetaObjectiveConfig::new(), ob, &["split"])?;
        for (k, v) in [
            ("ways", objective.ways),
            ("shots", objective.shots),
            ("query", objective.query),
            ("iterations", objective.iterations),
            ("validation_episodes", objective.validation_episodes),
            ("input_size", objective.input_size),
        ] {
            if v == 0 {
                return Err(cx.key(format!("objective.{k}"), "must be at least 1"));
            }
        }
        ob_table.insert(
            "split".into(),
            Value::String(match split {
                OmniglotSplit::Vinyals => "vinyals".into(),
                OmniglotSplit::Lake => "lake".into(),
            }),
        );
        resolved.insert("objective".into(), Value::Table(ob_table));

        let base = Rounds {
            evaluations: 20,
            parallel: 1,
            threads: 0,
        };
        let (r, r_table): (Rounds, _) =
            cx.overlay("search", &base, cx.section(&root, "search", false)?, &[])?;
        if r.evaluations == 0 || r.parallel == 0 {
            return Err(cx.key("search", "`evaluations` and `parallel` must be at least 1"));
        }
        resolved.insert("search".into(), Value::Table(r_table));
        let search = SearchConfig::new(r.evaluations, seed)
            .with_parallel(r.parallel)
            .with_threads(r.threads);
        Ok(Self {
            seed,
            backend,
            space,
            strategy,
            objective,
            split,
            search,
            resolved,
        })
    }

    /// The resolved search file (every default filled in).
    pub fn resolved(&self) -> &Table {
        &self.resolved
    }

    fn strategy(&self) -> Result<Box<dyn Strategy>> {
        let seed = metalearn_core::SeedStream::new(self.seed)
            .named("strategy")
            .seed();
        Ok(match &self.strategy {
            StrategySpec::Random => Box::new(RandomSearch::new(self.space.clone(), seed)),
            StrategySpec::Reinforce(c) => Box::new(Reinforce::<CpuController>::new(
                self.space.clone(),
                *c,
                seed,
            )?),
            StrategySpec::Evolution { population, sample } => Box::new(RegularizedEvolution::new(
                self.space.clone(),
                *population,
                *sample,
                seed,
            )?),
        })
    }
}

/// Run (or resume) the search of `file` in `dir`: candidates meta-train on the split's training
/// characters and are scored on its validation characters; every finished evaluation is in
/// `dir/journal.jsonl`, the summary in `dir/result.json`.
pub fn search(file: &SearchFile, dir: &Path) -> Result<SearchResult> {
    claim(file.resolved(), dir, "search.toml", &[])?;
    with_backend!(file.backend, B => search_on::<B>(file, dir))
}

fn search_on<B: Backend>(file: &SearchFile, dir: &Path) -> Result<SearchResult> {
    let [train, val, _] = omniglot_classes(file.split, true, file.objective.input_size)?;
    let objective = MetaObjective::<B, _>::new(train, val, file.objective)?;
    let mut strategy = file.strategy()?;
    let result = run_search(
        &file.space,
        strategy.as_mut(),
        &objective,
        file.search,
        Some(&dir.join("journal.jsonl")),
    )?;
    let summary = serde_json::json!({
        "best": result.best(),
        "best_so_far": result.best_so_far(),
        "evaluations": result.records.len(),
        "resumed": result.resumed,
        "records": result.records,
    });
    let text = serde_json::to_vec_pretty(&summary)
        .map_err(|e| metalearn_core::Error::Serde(e.to_string()))?;
    metalearn_train::files::write_atomic(&dir.join("result.json"), &text)?;
    Ok(result)
}
