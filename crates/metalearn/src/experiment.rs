//! Experiment files: what `metalearn train` reads.
//!
//! ```toml
//! seed = 1
//! backend = "flex"            # flex | ndarray | wgpu (`--backend` overrides it)
//! # init = "../runs/fomaml"   # optional warm start: the model starts from the best model of
//!                             #   this run directory (relative to the file; same [model]),
//!                             #   e.g. second-order MAML after a first-order run; from a
//!                             #   run of the same learner, its learned rates, per-step
//!                             #   parameters and carried inner Adam too
//!
//! [task]
//! source = "omniglot"         # omniglot | folder | sinusoid | dynamics
//! split = "vinyals"           # omniglot: vinyals (train/val/test characters) | lake
//! ways = 5
//! shots = 1
//! queries = 15                # query examples per class in training episodes
//!
//! [model]
//! kind = "conv4"              # conv4 | mlp; the rest are the model config's fields
//!
//! [learner]
//! kind = "maml"               # maml | fomaml | anil | boil | meta_sgd | maml_pp | reptile |
//!                             #   protonet | finetune | distill
//! inner_lr = 0.4              # the rest are the learner config's fields
//!
//! [budget]                    # metalearn_train::TrainerConfig (seed is the top-level one)
//! iterations = 1000
//!
//! [eval]                      # the test protocol (default: the task's ways/shots, 15 queries)
//! episodes = 600
//! steps = 3
//!
//! [validation]                # optional, image tasks: the validation episodes' shape
//! ways = 5                    #   (default: the training episodes'), e.g. to select a ProtoNet
//! shots = 1                   #   trained on 60-way episodes by its 5-way accuracy; a learner
//! queries = 15                #   with a `ways`-class head (MAML family) keeps the task's ways
//! ```
//!
//! `finetune` (pretrain + fine-tune, Chen et al. 2019's *Baseline*) trains a classifier over
//! every training class on batches of labelled images, then fits a new linear head on each
//! test task's support set (`eval.steps` Adam steps, default 100). Its model's `ways` is the
//! number of training classes, filled in when the run starts:
//!
//! ```toml
//! [learner]
//! kind = "finetune"
//! batch = 64                  # labelled images per half of a pretraining batch
//! batch_size = 1              # such batches per update
//! learning_rate = 0.001       # Adam, pretraining
//! head_lr = 0.01              # Adam, the new head at test time
//! ```
//!
//! `distill` (meta-distillation, Hinton et al. 2015 on few-shot episodes) trains the
//! experiment's model, a Prototypical-Network student, to match the prototype classifier of a
//! trained teacher — the best model of another run directory, e.g. a shipped model — on every
//! training episode; it is evaluated as a Prototypical Network:
//!
//! ```toml
//! [learner]
//! kind = "distill"
//! teacher = "../../models/omniglot/protonet-5way-1shot"   # relative to the experiment file
//! temperature = 4.0           # softmax temperature of the soft targets
//! alpha = 0.9                 # weight of the teacher's soft targets (1 − alpha: the labels)
//! learning_rate = 0.001       # Adam, the student
//! meta_batch_size = 1         # episodes per update
//! ```
//!
//! The other task sources:
//!
//! ```toml
//! [task]                      # your own images: one sub-folder per class (PNG or JPEG)
//! source = "folder"
//! path = "data/my-images"     # relative to the experiment file's folder
//! split = "random"            # random: class folders directly under `path`, split by
//!                             #   val_fraction / test_fraction (shuffled by split_seed);
//!                             # folders: path/train, path/val, path/test hold class folders
//! val_fraction = 0.15
//! test_fraction = 0.25
//! split_seed = 0
//! image_size = 84             # area-resized to image_size × image_size
//! grayscale = false           # true: one luminance channel (conv4 in_channels = 1)
//! invert = false              # true: 1 − value (dark ink on light paper → ink = 1)
//! ways = 5
//! shots = 1
//! queries = 15
//!
//! [task]                      # vector fields of a dynamical-system family (MLP, 2 → 2)
//! source = "dynamics"
//! family = "pendulum"         # oscillator | pendulum | lotka_volterra
//! support = 10                # observed consecutive states per task
//! query = 10                  # states where the true derivative is scored
//! dt = 0.1
//! noise = 0.0                 # observation noise std on the support set
//! ranges = [[0.5, 2.0], [0.0, 0.5], [-1.0, 1.0]]   # parameter ranges (family default)
//! ```
//!
//! Every key that is left out takes its default; [`Experiment::resolved_toml`] is the file with
//! every default filled in (written to the run directory as `experiment.toml`). Every error names
//! the file, the key and the reason — an unknown key, a wrong type, a value out of range —
//! before any work starts.

use metalearn_core::backend::BackendKind;
pub use metalearn_tasks::OmniglotSplit;
use metalearn_tasks::{DynamicsConfig, Family, ImageFolderConfig, NWayKShotConfig, SinusoidConfig};
use metalearn_train::TrainerConfig;
use metalearn_update::{
    DistillConfig, FineTuneConfig, MamlConfig, MamlPlusPlusConfig, ProtoNetConfig, ReptileConfig,
};
use metalearn_zoo::{Conv4Config, MlpConfig};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use toml::{Table, Value};

/// An error in an experiment file, or a refused run directory.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file is not valid TOML.
    #[error("{file}: {message}")]
    Syntax {
        /// The file.
        file: String,
        /// The parser's message (with line and column).
        message: String,
    },
    /// A key is unknown, has the wrong type, or is out of range.
    #[error("{file}: `{key}`: {reason}")]
    Key {
        /// The file.
        file: String,
        /// The dotted key (`learner.inner_lr`).
        key: String,
        /// What is wrong.
        reason: String,
    },
    /// The run directory was made by a different experiment.
    #[error(
        "run directory {dir} holds a different experiment (keys that differ: {}); use a new \
         --run-dir, or the same experiment file to resume (only `budget.iterations`, \
         `learner.threads` and `[eval]` may change)",
        keys.join(", ")
    )]
    Differs {
        /// The run directory.
        dir: String,
        /// The dotted keys whose values differ.
        keys: Vec<String>,
    },
    /// The file could not be read.
    #[error("{file}: {source}")]
    Io {
        /// The file.
        file: String,
        /// The underlying error.
        source: std::io::Error,
    },
}

type Result<T> = std::result::Result<T, ConfigError>;

/// How an image folder's classes are split into meta-train / meta-validation / meta-test.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FolderSplit {
    /// The class folders directly under the path, shuffled by `split_seed` and split by
    /// `val_fraction` and `test_fraction` (the rest trains).
    Random,
    /// `path/train`, `path/val` and `path/test`, each holding class folders (the layout of
    /// Ravi & Larochelle's mini-ImageNet split and most few-shot benchmark exports).
    Folders,
}

/// Where the tasks come from.
#[derive(Debug, Clone, PartialEq)]
pub enum TaskSpec {
    /// Omniglot N-way K-shot classification (data: `METALEARN_DATA` or the download dir).
    Omniglot {
        /// The character split.
        split: OmniglotSplit,
        /// Add the 90°, 180° and 270° rotations of each character as classes.
        rotations: bool,
        /// Image height = width.
        image_size: usize,
        /// Training episodes' shape.
        episode: NWayKShotConfig,
    },
    /// N-way K-shot classification of the user's images (one folder per class).
    Folder {
        /// The folder (absolute once parsed).
        path: PathBuf,
        /// How the classes are split.
        split: FolderSplit,
        /// Share of the classes held out for validation (`split = "random"`).
        val_fraction: f64,
        /// Share of the classes held out for testing (`split = "random"`).
        test_fraction: f64,
        /// Seed of the random class split.
        split_seed: u64,
        /// Image preprocessing.
        image: ImageFolderConfig,
        /// Training episodes' shape.
        episode: NWayKShotConfig,
    },
    /// Sinusoid regression (Finn et al. 2017).
    Sinusoid(SinusoidConfig),
    /// Vector-field regression on a dynamical-system family (state → derivative).
    Dynamics(DynamicsConfig),
}

impl TaskSpec {
    /// Whether the tasks are classification (images) rather than regression.
    pub fn is_classification(&self) -> bool {
        matches!(self, Self::Omniglot { .. } | Self::Folder { .. })
    }

    /// (channels, height = width) of an image task's inputs.
    fn image_input(&self) -> Option<(usize, usize)> {
        match self {
            Self::Omniglot { image_size, .. } => Some((1, *image_size)),
            Self::Folder { image, .. } => Some((if image.grayscale { 1 } else { 3 }, image.size)),
            Self::Sinusoid(_) | Self::Dynamics(_) => None,
        }
    }

    /// (input features, outputs) of a regression task's examples.
    fn regression_dims(&self) -> Option<(usize, usize)> {
        match self {
            Self::Sinusoid(_) => Some((1, 1)),
            Self::Dynamics(_) => Some((2, 2)),
            Self::Omniglot { .. } | Self::Folder { .. } => None,
        }
    }
}

/// The model.
#[derive(Debug, Clone)]
pub enum ModelSpec {
    /// The four-block convolutional network of the few-shot papers.
    Conv4(Conv4Config),
    /// A multi-layer perceptron.
    Mlp(MlpConfig),
}

/// The learner and its hyper-parameters.
#[derive(Debug, Clone)]
pub enum LearnerSpec {
    /// MAML (second order), FOMAML (`second_order = false`), ANIL (`adapt_last = 2`) or BOIL
    /// (`freeze = ["head"]`).
    Maml(MamlConfig),
    /// Meta-SGD.
    MetaSgd(MamlConfig),
    /// MAML++.
    MamlPlusPlus(MamlPlusPlusConfig),
    /// Reptile.
    Reptile(ReptileConfig),
    /// Prototypical Networks.
    ProtoNet(ProtoNetConfig),
    /// Pretrain + fine-tune (Chen et al. 2019's *Baseline*): supervised training of a
    /// classifier over all training classes (batches of `batch` labelled images per half, from
    /// `metalearn_tasks::ClassBatches`), then a new linear head fitted on each test task's
    /// support set. The model's `ways` is the number of training classes, filled in when the
    /// run starts ([`Experiment::with_pretraining_classes`]).
    FineTune {
        /// The learner's hyper-parameters.
        config: FineTuneConfig,
        /// Labelled images per half of a pretraining batch (`learner.batch`).
        batch: usize,
    },
    /// Meta-distillation (Hinton et al. 2015 on few-shot episodes): the experiment's model, a
    /// Prototypical-Network student, learns to match the prototype classifier of a trained
    /// teacher (the best model of another run) on every training episode.
    Distill {
        /// The distillation hyper-parameters.
        config: DistillConfig,
        /// Episodes per update (`learner.meta_batch_size`).
        meta_batch_size: usize,
        /// The teacher.
        teacher: Box<Teacher>,
    },
}

/// A distillation teacher: the best model of a finished (or running) run.
#[derive(Debug, Clone)]
pub struct Teacher {
    /// The teacher's run directory (absolute once parsed, when it exists).
    pub dir: PathBuf,
    /// The teacher's model as its run recorded it; `None` when `dir` holds no best model
    /// (training refuses to start, evaluating the student needs no teacher).
    pub model: Option<ModelSpec>,
}

impl LearnerSpec {
    /// Whether the model's head is the task's `ways` (MAML family) rather than something else:
    /// ProtoNet and distillation students have no head, FineTune's covers every training class.
    pub fn head_is_task_ways(&self) -> bool {
        !matches!(
            self,
            Self::ProtoNet(_) | Self::FineTune { .. } | Self::Distill { .. }
        )
    }

    /// Whether query examples are classified together, in one batch (`true`), or each with
    /// the support set alone (`false`, Nichol et al.'s non-transductive protocol).
    pub fn transductive(&self) -> bool {
        match self {
            Self::Maml(c) | Self::MetaSgd(c) => c.transductive,
            Self::MamlPlusPlus(c) => c.transductive,
            Self::Reptile(c) => c.transductive,
            Self::ProtoNet(c) => c.transductive,
            Self::FineTune { config, .. } => config.transductive,
            Self::Distill { config, .. } => config.transductive,
        }
    }

    /// Set [`transductive`](Self::transductive): training is unchanged (it only decides how
    /// query examples are scored), so a model trained one way can be evaluated the other.
    pub fn set_transductive(&mut self, on: bool) {
        match self {
            Self::Maml(c) | Self::MetaSgd(c) => c.transductive = on,
            Self::MamlPlusPlus(c) => c.transductive = on,
            Self::Reptile(c) => c.transductive = on,
            Self::ProtoNet(c) => c.transductive = on,
            Self::FineTune { config, .. } => config.transductive = on,
            Self::Distill { config, .. } => config.transductive = on,
        }
    }
}

/// The test protocol.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct EvalSpec {
    /// Test episodes.
    pub episodes: usize,
    /// Adaptation steps at test time (ignored by ProtoNet).
    pub steps: usize,
    /// Classes per test episode (classification).
    pub ways: usize,
    /// Support examples per class (classification) or support points (regression).
    pub shots: usize,
    /// Query examples per class (classification) or query points (regression).
    pub queries: usize,
}

/// A parsed, checked experiment.
#[derive(Debug, Clone)]
pub struct Experiment {
    /// The seed every random choice of the run derives from.
    pub seed: u64,
    /// The backend.
    pub backend: BackendKind,
    /// The tasks.
    pub task: TaskSpec,
    /// The model.
    pub model: ModelSpec,
    /// The learner.
    pub learner: LearnerSpec,
    /// The meta-trainer's budget (its `seed` is [`seed`](Self::seed)).
    pub budget: TrainerConfig,
    /// The test protocol.
    pub eval: EvalSpec,
    /// The validation episodes' shape where `[validation]` sets one (image tasks); `None`:
    /// the training episodes' shape.
    pub validation: Option<NWayKShotConfig>,
    /// The learner's kind as written (`maml`, `fomaml`, …).
    pub learner_kind: String,
    /// A warm start (`init = "run dir"`): the run directory whose best model the new run's
    /// model starts from instead of a seeded initialisation (absolute once parsed, when it
    /// exists); from a run of the same learner, the rest of what it learned too
    /// (`run::training_learner`).
    pub init: Option<PathBuf>,
    resolved: Table,
}

/// Reads one file, naming it and the key in every error.
pub(crate) struct Ctx<'a> {
    pub(crate) file: &'a str,
}

impl Ctx<'_> {
    pub(crate) fn key(&self, key: impl Into<String>, reason: impl Into<String>) -> ConfigError {
        ConfigError::Key {
            file: self.file.to_string(),
            key: key.into(),
            reason: reason.into(),
        }
    }

    /// Map a config's own range check (`InvalidConfig { field }`) to this file's key.
    pub(crate) fn checked(&self, section: &str, r: metalearn_core::Result<()>) -> Result<()> {
        r.map_err(|e| match e {
            metalearn_core::Error::InvalidConfig { field, reason } => {
                self.key(format!("{section}.{field}"), reason)
            }
            e => self.key(section, e.to_string()),
        })
    }

    pub(crate) fn section<'t>(
        &self,
        root: &'t Table,
        name: &str,
        required: bool,
    ) -> Result<Option<&'t Table>> {
        match root.get(name) {
            Some(Value::Table(t)) => Ok(Some(t)),
            Some(v) => Err(self.key(name, format!("must be a table, found {}", v.type_str()))),
            None if required => Err(self.key(name, "missing section")),
            None => Ok(None),
        }
    }

    pub(crate) fn string<'t>(
        &self,
        t: &'t Table,
        section: &str,
        key: &str,
    ) -> Result<Option<&'t str>> {
        match t.get(key) {
            Some(Value::String(s)) => Ok(Some(s)),
            Some(v) => Err(self.key(
                format!("{section}.{key}"),
                format!("must be a string, found {}", v.type_str()),
            )),
            None => Ok(None),
        }
    }

    /// `base` with the user's keys of `user` (except `consumed` ones) laid over it. A key the
    /// base does not have is unknown; a value of another type than the default's is refused.
    pub(crate) fn overlay<C: Serialize + DeserializeOwned>(
        &self,
        section: &str,
        base: &C,
        user: Option<&Table>,
        consumed: &[&str],
    ) -> Result<(C, Table)> {
        let mut table = Table::try_from(base)
            .map_err(|e| self.key(section, format!("cannot represent defaults: {e}")))?;
        for (k, v) in user.into_iter().flatten() {
            if consumed.contains(&k.as_str()) {
                continue;
            }
            let key = format!("{section}.{k}");
            let v = match table.get(k) {
                None => {
                    let mut known: Vec<_> = table.keys().map(String::as_str).collect();
                    known.extend(consumed);
                    known.sort_unstable();
                    return Err(self.key(
                        key,
                        format!("unknown key (expected one of: {})", known.join(", ")),
                    ));
                }
                Some(d) => coerce(d, v).ok_or_else(|| {
                    self.key(
                        &key,
                        format!("must be {}, found {}", article(d), v.type_str()),
                    )
                })?,
            };
            table.insert(k.clone(), v);
        }
        let c = match C::deserialize(Value::Table(table.clone())) {
            Ok(c) => c,
            Err(e) => {
                // Name the key: the first user value that fails on its own over the defaults.
                let base_table = Table::try_from(base).unwrap_or_default();
                let culprit = table.iter().find(|(k, v)| {
                    let mut one = base_table.clone();
                    one.insert((*k).clone(), (*v).clone());
                    C::deserialize(Value::Table(one)).is_err()
                });
                let key = culprit.map_or(section.to_string(), |(k, _)| format!("{section}.{k}"));
                return Err(self.key(key, e.to_string()));
            }
        };
        // Keep the resolved table in the config's own spelling (e.g. integers as floats).
        let table = Table::try_from(&c).map_err(|e| self.key(section, e.to_string()))?;
        Ok((c, table))
    }
}

fn article(v: &Value) -> &'static str {
    match v {
        Value::String(_) => "a string",
        Value::Integer(_) => "an integer",
        Value::Float(_) => "a number",
        Value::Boolean(_) => "true or false",
        Value::Datetime(_) => "a date",
        Value::Array(_) => "an array",
        Value::Table(_) => "a table",
    }
}

/// `v` if it has the type of `default` (an integer is accepted where a float is expected).
fn coerce(default: &Value, v: &Value) -> Option<Value> {
    match (default, v) {
        (Value::Float(_), Value::Integer(i)) => Some(Value::Float(*i as f64)),
        (Value::Array(d), Value::Array(a)) => match d.first() {
            Some(first) => a
                .iter()
                .map(|x| coerce(first, x))
                .collect::<Option<Vec<_>>>()
                .map(Value::Array),
            None => Some(v.clone()),
        },
        (d, v) if d.same_type(v) => Some(v.clone()),
        _ => None,
    }
}

const TOP_KEYS: [&str; 9] = [
    "seed",
    "backend",
    "init",
    "task",
    "model",
    "learner",
    "budget",
    "eval",
    "validation",
];

impl Experiment {
    /// Read and check the experiment file at `path`.
    pub fn load(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Io {
            file: path.display().to_string(),
            source,
        })?;
        Self::parse(&text, &path.display().to_string())
    }

    /// Parse and check experiment text; `file` names it in errors.
    pub fn parse(text: &str, file: &str) -> Result<Self> {
        let cx = Ctx { file };
        let root: Table = toml::from_str(text).map_err(|e| ConfigError::Syntax {
            file: file.to_string(),
            message: e.to_string(),
        })?;
        for k in root.keys() {
            if !TOP_KEYS.contains(&k.as_str()) {
                return Err(cx.key(
                    k,
                    format!("unknown key (expected one of: {})", TOP_KEYS.join(", ")),
                ));
            }
        }
        let seed = parse_seed(&cx, &root)?;
        let backend = parse_backend(&cx, &root)?;
        let mut resolved = Table::new();
        resolved.insert("seed".into(), Value::Integer(seed as i64));
        resolved.insert("backend".into(), Value::String(backend.to_string()));
        // Only a file that has the key records it, so that run directories made before it
        // existed resume unchanged.
        let init = match cx.string(&root, "", "init")? {
            Some(path) => {
                let dir = run_dir_key(&cx, path);
                let text = dir.to_str().ok_or_else(|| {
                    cx.key("init", format!("{} is not valid UTF-8", dir.display()))
                })?;
                resolved.insert("init".into(), Value::String(text.into()));
                Some(dir)
            }
            None => None,
        };

        let (task, task_table, ways) = parse_task(&cx, cx.section(&root, "task", true)?)?;
        resolved.insert("task".into(), Value::Table(task_table));

        let (learner, learner_kind, learner_table) =
            parse_learner(&cx, cx.section(&root, "learner", true)?, &task)?;
        // FineTune's head covers the training classes, not the task's ways (sized at run
        // start, when the classes are known).
        let pretraining = matches!(learner, LearnerSpec::FineTune { .. });
        let (model, model_table) = parse_model(
            &cx,
            cx.section(&root, "model", false)?,
            &task,
            (!pretraining).then_some(ways),
        )?;
        resolved.insert("model".into(), Value::Table(model_table));
        resolved.insert("learner".into(), Value::Table(learner_table));

        let base = TrainerConfig::new(1).with_seed(seed);
        let budget_user = cx.section(&root, "budget", true)?;
        if let Some(t) = budget_user {
            if t.contains_key("seed") {
                return Err(cx.key(
                    "budget.seed",
                    "set the run's seed at the top level (`seed = …`)",
                ));
            }
            if !t.contains_key("iterations") {
                return Err(cx.key("budget.iterations", "missing (meta-iterations in all)"));
            }
        }
        let (budget, mut budget_table): (TrainerConfig, _) =
            cx.overlay("budget", &base, budget_user, &[])?;
        budget_table.remove("seed");
        cx.checked("budget", budget.check())?;
        resolved.insert("budget".into(), Value::Table(budget_table));

        let eval_base = match &task {
            TaskSpec::Omniglot { episode, .. } | TaskSpec::Folder { episode, .. } => EvalSpec {
                episodes: 600,
                // FineTune fits a new head from zero: Chen et al. take 100 Adam steps.
                steps: if pretraining { 100 } else { 1 },
                ways: episode.ways,
                shots: episode.shots,
                queries: metalearn_eval::fewshot::QUERY_PER_CLASS,
            },
            TaskSpec::Sinusoid(s) => EvalSpec {
                episodes: 600,
                steps: 10,
                ways: 1,
                shots: s.k_shot,
                queries: s.query,
            },
            TaskSpec::Dynamics(d) => EvalSpec {
                episodes: 600,
                steps: 10,
                ways: 1,
                shots: d.support,
                queries: d.query,
            },
        };
        let (eval, eval_table) =
            cx.overlay("eval", &eval_base, cx.section(&root, "eval", false)?, &[])?;
        for (k, v) in [
            ("episodes", eval.episodes),
            ("ways", eval.ways),
            ("shots", eval.shots),
            ("queries", eval.queries),
        ] {
            if v == 0 {
                return Err(cx.key(format!("eval.{k}"), "must be at least 1"));
            }
        }
        resolved.insert("eval".into(), Value::Table(eval_table));
        // Only a file that has the section records it, so that run directories made before
        // it existed resume unchanged.
        let validation = match cx.section(&root, "validation", false)? {
            Some(t) => {
                let (shape, table) = parse_validation(&cx, t, &task, &learner)?;
                resolved.insert("validation".into(), Value::Table(table));
                Some(shape)
            }
            None => None,
        };
        Ok(Self {
            seed,
            backend,
            task,
            model,
            learner,
            budget,
            eval,
            validation,
            learner_kind,
            init,
            resolved,
        })
    }

    /// The experiment with every default filled in, as TOML.
    pub fn resolved_toml(&self) -> String {
        toml::to_string_pretty(&self.resolved).unwrap_or_default()
    }

    /// The resolved experiment as a TOML table.
    pub fn resolved(&self) -> &Table {
        &self.resolved
    }

    /// The experiment with FineTune's classifier sized for `classes` training classes
    /// (`model.ways`); other learners are returned unchanged. [`run::train`](crate::run::train)
    /// calls it with the training split's class count before the run directory is claimed, so
    /// the stored `experiment.toml` names the head every later command loads.
    pub fn with_pretraining_classes(mut self, classes: usize) -> Self {
        if let (LearnerSpec::FineTune { .. }, ModelSpec::Conv4(c)) =
            (&self.learner, &mut self.model)
        {
            c.ways = classes;
            if let Some(Value::Table(m)) = self.resolved.get_mut("model") {
                m.insert("ways".into(), Value::Integer(classes as i64));
            }
        }
        self
    }

    /// Refuse to train a distillation student without its teacher (a run directory with a
    /// best model); every other experiment passes.
    pub fn check_teacher(&self) -> Result<()> {
        match &self.learner {
            LearnerSpec::Distill { teacher, .. } if teacher.model.is_none() => {
                let best = metalearn_train::RunDir::new(&teacher.dir).best_model();
                Err(ConfigError::Key {
                    file: "experiment".into(),
                    key: "learner.teacher".into(),
                    reason: format!(
                        "{} has no best model ({} is missing; train the teacher first)",
                        teacher.dir.display(),
                        best.display()
                    ),
                })
            }
            _ => Ok(()),
        }
    }

    /// Refuse to train from a warm start (`init`) that is not there (a run directory without
    /// a best model) or whose model is not this experiment's (`model` tables differ; the keys
    /// are named; a model without a learned batch-norm scale may start one with it). Evaluating a trained run needs no `init`, so parsing accepts a missing one.
    /// [`run::train`](crate::run::train) calls it before anything is loaded or written.
    pub fn check_init(&self) -> Result<()> {
        let Some(dir) = &self.init else {
            return Ok(());
        };
        let refuse = |reason: String| ConfigError::Key {
            file: "experiment".into(),
            key: "init".into(),
            reason,
        };
        let best = metalearn_train::RunDir::new(dir).best_model();
        if !best.is_file() {
            return Err(refuse(format!(
                "{} has no best model ({} is missing)",
                dir.display(),
                best.display()
            )));
        }
        let theirs =
            load_run_dir(dir).map_err(|e| refuse(format!("the warm start's experiment: {e}")))?;
        let model = |e: &Self| {
            Table::from_iter(
                e.resolved
                    .get_key_value("model")
                    .map(|(k, v)| (k.clone(), v.clone())),
            )
        };
        // FineTune's head (`ways`) is sized when its run starts; loading the model checks it.
        let sized_later = matches!(self.learner, LearnerSpec::FineTune { .. });
        // A model without a learned batch-norm scale keeps γ = 1 in its record: the same
        // function as a model with one, which then learns it (MAML++ from a FOMAML model).
        let gains_scale = matches!(
            (&self.model, &theirs.model),
            (ModelSpec::Conv4(ours), ModelSpec::Conv4(start)) if ours.bn_scale && !start.bn_scale
        );
        let differ: Vec<String> = differing_keys(&model(self), &model(&theirs))
            .into_iter()
            .filter(|k| {
                let exempt =
                    (sized_later && k == "model.ways") || (gains_scale && k == "model.bn_scale");
                !exempt
            })
            .collect();
        if differ.is_empty() {
            Ok(())
        } else {
            Err(refuse(format!(
                "{} trained another model ({} differ)",
                dir.display(),
                differ.join(", ")
            )))
        }
    }

    /// The same experiment on another backend.
    pub fn with_backend(mut self, backend: BackendKind) -> Self {
        self.backend = backend;
        self.resolved
            .insert("backend".into(), Value::String(backend.to_string()));
        self
    }

    /// A readable name (`MAML, Omniglot 5-way 1-shot`).
    pub fn title(&self) -> String {
        let task = match &self.task {
            TaskSpec::Omniglot { episode, .. } => {
                format!("Omniglot {}-way {}-shot", episode.ways, episode.shots)
            }
            TaskSpec::Folder { path, episode, .. } => format!(
                "{} {}-way {}-shot",
                path.file_name().map_or_else(
                    || path.display().to_string(),
                    |n| n.to_string_lossy().into()
                ),
                episode.ways,
                episode.shots
            ),
            TaskSpec::Sinusoid(s) => format!("sinusoid {}-shot", s.k_shot),
            TaskSpec::Dynamics(d) => format!(
                "{} dynamics {}-shot",
                toml::Value::try_from(d.family)
                    .ok()
                    .and_then(|v| v.as_str().map(str::to_string))
                    .unwrap_or_default(),
                d.support
            ),
        };
        format!("{}, {task}", self.learner_kind)
    }
}

/// The dotted keys whose values differ between two resolved experiments.
pub fn differing_keys(a: &Table, b: &Table) -> Vec<String> {
    fn walk(prefix: &str, a: &Table, b: &Table, out: &mut Vec<String>) {
        let mut keys: Vec<&String> = a.keys().chain(b.keys()).collect();
        keys.sort();
        keys.dedup();
        for k in keys {
            let name = if prefix.is_empty() {
                k.clone()
            } else {
                format!("{prefix}.{k}")
            };
            match (a.get(k), b.get(k)) {
                (Some(Value::Table(x)), Some(Value::Table(y))) => walk(&name, x, y, out),
                (x, y) if x != y => out.push(name),
                _ => {}
            }
        }
    }
    let mut out = Vec::new();
    walk("", a, b, &mut out);
    out
}

/// Keys of an experiment that may change between runs on one run directory, since they do not
/// change what the iterations already done computed: `budget.iterations` (train a run longer, or
/// stop it sooner), the test protocol (`eval`) and `learner.threads` (the meta-gradient is
/// averaged in task order, so a run resumed on more or fewer lanes computes the same numbers).
pub const RESUMABLE_CHANGES: [&str; 3] = ["budget.iterations", "eval", "learner.threads"];

/// The `keys` that are not (under) one of the `mutable` keys or tables.
fn fixed_keys(keys: &[String], mutable: &[&str]) -> Vec<String> {
    keys.iter()
        .filter(|k| {
            !mutable
                .iter()
                .any(|m| k == m || k.strip_prefix(m).is_some_and(|r| r.starts_with('.')))
        })
        .cloned()
        .collect()
}

/// Check that the experiment file `file` (hand-written: keys may be left to their defaults)
/// describes `exp` up to [`RESUMABLE_CHANGES`]; refuses a different one, naming the keys.
pub fn check_same_experiment(
    exp: &Experiment,
    file: &Path,
) -> std::result::Result<(), crate::Error> {
    let mut other = Experiment::load(file)?;
    // FineTune's head is sized when the run starts; a hand-written file leaves it out.
    if let ModelSpec::Conv4(c) = &exp.model {
        other = other.with_pretraining_classes(c.ways);
    }
    let keys = fixed_keys(
        &differing_keys(other.resolved(), exp.resolved()),
        &RESUMABLE_CHANGES,
    );
    if keys.is_empty() {
        Ok(())
    } else {
        Err(ConfigError::Differs {
            dir: file.parent().unwrap_or(file).display().to_string(),
            keys,
        }
        .into())
    }
}

/// Check `exp` against the run directory's `experiment.toml` (refusing a different one) or
/// write it there for a new run. A change of only [`RESUMABLE_CHANGES`] is accepted and
/// recorded: running the file again with a larger `budget.iterations` continues the run.
///
/// The stored file is read as this version reads experiment files, defaults filled in, so a
/// run directory written before a learner gained a setting (absent there, its default here)
/// still resumes; the file is then rewritten with every key.
pub fn claim_run_dir(exp: &Experiment, dir: &Path) -> std::result::Result<(), crate::Error> {
    let path = dir.join("experiment.toml");
    if path.exists() {
        check_same_experiment(exp, &path)?;
        let text = std::fs::read_to_string(&path).map_err(|source| ConfigError::Io {
            file: path.display().to_string(),
            source,
        })?;
        if toml::from_str::<Table>(&text).is_ok_and(|stored| &stored == exp.resolved()) {
            return Ok(());
        }
    }
    write_table(exp.resolved(), &path)
}

/// Write `table` to `path` (atomically).
fn write_table(table: &Table, path: &Path) -> std::result::Result<(), crate::Error> {
    let text = toml::to_string_pretty(table).map_err(|e| ConfigError::Syntax {
        file: path.display().to_string(),
        message: e.to_string(),
    })?;
    metalearn_train::files::write_atomic(path, text.as_bytes())?;
    Ok(())
}

/// Check a resolved `table` against `dir/name` (refusing a different one, naming the keys that
/// differ) or write it there. Differences only in `mutable` keys (a dotted key or a table's
/// name) are accepted and the new table is written.
pub(crate) fn claim(
    table: &Table,
    dir: &Path,
    name: &str,
    mutable: &[&str],
) -> std::result::Result<(), crate::Error> {
    let path = dir.join(name);
    if path.exists() {
        let text = std::fs::read_to_string(&path).map_err(|source| ConfigError::Io {
            file: path.display().to_string(),
            source,
        })?;
        let old: Table = toml::from_str(&text).map_err(|e| ConfigError::Syntax {
            file: path.display().to_string(),
            message: e.to_string(),
        })?;
        let keys = differing_keys(&old, table);
        let fixed = fixed_keys(&keys, mutable);
        if !fixed.is_empty() {
            return Err(ConfigError::Differs {
                dir: dir.display().to_string(),
                keys: fixed,
            }
            .into());
        }
        if keys.is_empty() {
            return Ok(());
        }
    }
    write_table(table, &path)
}

/// The experiment recorded in a run directory.
pub fn load_run_dir(dir: &Path) -> Result<Experiment> {
    Experiment::load(&dir.join("experiment.toml"))
}

/// A path key, relative to the experiment file's folder when not absolute, made absolute.
fn resolve_path(cx: &Ctx<'_>, key: &str, path: &str) -> Result<PathBuf> {
    let p = relative_to_file(cx, path);
    std::fs::canonicalize(&p).map_err(|e| cx.key(key, format!("{}: {e}", p.display())))
}

/// `path` joined to the experiment file's folder when relative.
fn relative_to_file(cx: &Ctx<'_>, path: &str) -> PathBuf {
    let p = PathBuf::from(path);
    if p.is_relative() {
        Path::new(cx.file).parent().unwrap_or(Path::new("")).join(p)
    } else {
        p
    }
}

/// A key naming another run directory (`learner.teacher`, `init`): relative to the experiment
/// file's folder, made absolute when it exists and kept as written otherwise, so that a run
/// whose source has moved still parses.
fn run_dir_key(cx: &Ctx<'_>, path: &str) -> PathBuf {
    let dir = relative_to_file(cx, path);
    std::fs::canonicalize(&dir).unwrap_or(dir)
}

/// `learner.teacher`: a run directory (relative to the experiment file's folder). When it holds
/// a best model, its experiment must be on images of the student's shape; when it does not (a
/// run directory moved to another machine without its teacher), the experiment still parses,
/// so that the student can be evaluated and used, and [`Experiment::check_teacher`] refuses to
/// train it.
fn parse_teacher(cx: &Ctx<'_>, t: &Table, task: &TaskSpec) -> Result<Teacher> {
    let key = "learner.teacher";
    let path = cx.string(t, "learner", "teacher")?.ok_or_else(|| {
        cx.key(
            key,
            "missing (the run directory of the teacher, e.g. a shipped model under \
             models/omniglot/)",
        )
    })?;
    let dir = run_dir_key(cx, path);
    if !metalearn_train::RunDir::new(&dir).best_model().is_file() {
        return Ok(Teacher { dir, model: None });
    }
    let exp =
        load_run_dir(&dir).map_err(|e| cx.key(key, format!("the teacher's experiment: {e}")))?;
    let (theirs, ours) = (exp.task.image_input(), task.image_input());
    if theirs != ours {
        let shape = |s: Option<(usize, usize)>| match s {
            Some((c, n)) => format!("{c}×{n}×{n} images"),
            None => "no images".to_string(),
        };
        return Err(cx.key(
            key,
            format!(
                "the teacher was trained on {}, this task has {}",
                shape(theirs),
                shape(ours)
            ),
        ));
    }
    Ok(Teacher {
        dir,
        model: Some(exp.model),
    })
}

/// The top-level `backend` key (default: flex).
pub(crate) fn parse_backend(cx: &Ctx<'_>, root: &Table) -> Result<BackendKind> {
    match cx.string(root, "", "backend") {
        Ok(None) => Ok(BackendKind::default()),
        Ok(Some(s)) => s.parse().map_err(|e: metalearn_core::Error| {
            cx.key(
                "backend",
                e.to_string().replace("invalid config: `backend` ", ""),
            )
        }),
        Err(_) => Err(cx.key("backend", "must be a string")),
    }
}

/// The top-level `seed` key (default 0).
pub(crate) fn parse_seed(cx: &Ctx<'_>, root: &Table) -> Result<u64> {
    match root.get("seed") {
        None => Ok(0),
        Some(Value::Integer(i)) if *i >= 0 => Ok(*i as u64),
        Some(v) => Err(cx.key("seed", format!("must be a non-negative integer, found {v}"))),
    }
}

fn usize_key(
    cx: &Ctx<'_>,
    t: &Table,
    section: &str,
    key: &str,
    default: Option<usize>,
) -> Result<usize> {
    match (t.get(key), default) {
        (Some(Value::Integer(i)), _) if *i >= 0 => Ok(*i as usize),
        (Some(v), _) => Err(cx.key(
            format!("{section}.{key}"),
            format!("must be a non-negative integer, found {v}"),
        )),
        (None, Some(d)) => Ok(d),
        (None, None) => Err(cx.key(format!("{section}.{key}"), "missing")),
    }
}

fn parse_task(cx: &Ctx<'_>, t: Option<&Table>) -> Result<(TaskSpec, Table, usize)> {
    let empty = Table::new();
    let t = t.unwrap_or(&empty);
    let source = cx.string(t, "task", "source")?.ok_or_else(|| {
        cx.key(
            "task.source",
            "missing (omniglot, folder, sinusoid or dynamics)",
        )
    })?;
    match source {
        "omniglot" => {
            #[derive(Serialize, Deserialize)]
            struct Omni {
                split: OmniglotSplit,
                rotations: bool,
                image_size: usize,
                ways: usize,
                shots: usize,
                queries: usize,
            }
            let base = Omni {
                split: OmniglotSplit::Vinyals,
                rotations: true,
                image_size: 28,
                ways: usize_key(cx, t, "task", "ways", None)?,
                shots: usize_key(cx, t, "task", "shots", Some(1))?,
                queries: usize_key(cx, t, "task", "queries", Some(15))?,
            };
            let (o, mut table): (Omni, _) = cx.overlay("task", &base, Some(t), &["source"])?;
            let episode = episode_shape(cx, "task", o.ways, o.shots, o.queries)?;
            if o.image_size == 0 {
                return Err(cx.key("task.image_size", "must be at least 1"));
            }
            table.insert("source".into(), Value::String(source.into()));
            Ok((
                TaskSpec::Omniglot {
                    split: o.split,
                    rotations: o.rotations,
                    image_size: o.image_size,
                    episode,
                },
                table,
                o.ways,
            ))
        }
        "folder" => parse_folder(cx, t),
        "dynamics" => {
            let family = match t.get("family") {
                None => {
                    return Err(cx.key(
                        "task.family",
                        "missing (oscillator, pendulum or lotka_volterra)",
                    ))
                }
                Some(v) => Family::deserialize(v.clone()).map_err(|_| {
                    cx.key(
                        "task.family",
                        format!(
                            "unknown family {v} (expected oscillator, pendulum or lotka_volterra)"
                        ),
                    )
                })?,
            };
            let base = DynamicsConfig::new(family, 10, 10);
            let (d, mut table): (DynamicsConfig, _) =
                cx.overlay("task", &base, Some(t), &["source"])?;
            cx.checked("task", d.validate())?;
            table.insert("source".into(), Value::String(source.into()));
            Ok((TaskSpec::Dynamics(d), table, 1))
        }
        "sinusoid" => {
            let base = SinusoidConfig::new(10, 10);
            let (s, mut table): (SinusoidConfig, _) =
                cx.overlay("task", &base, Some(t), &["source"])?;
            cx.checked("task", s.validate())?;
            table.insert("source".into(), Value::String(source.into()));
            Ok((TaskSpec::Sinusoid(s), table, 1))
        }
        other => Err(cx.key(
            "task.source",
            format!(
                "unknown task source `{other}` (expected omniglot, folder, sinusoid or dynamics)"
            ),
        )),
    }
}

/// `[validation]`: the validation episodes' shape (image tasks), defaulting to the training
/// episodes'; a learner whose head has the task's `ways` classes cannot change `ways`.
fn parse_validation(
    cx: &Ctx<'_>,
    t: &Table,
    task: &TaskSpec,
    learner: &LearnerSpec,
) -> Result<(NWayKShotConfig, Table)> {
    #[derive(Serialize, Deserialize)]
    struct Shape {
        ways: usize,
        shots: usize,
        queries: usize,
    }
    let episode = match task {
        TaskSpec::Omniglot { episode, .. } | TaskSpec::Folder { episode, .. } => *episode,
        TaskSpec::Sinusoid(_) | TaskSpec::Dynamics(_) => {
            return Err(cx.key(
                "validation",
                "only image tasks (omniglot, folder) have a validation episode shape; \
                 regression tasks validate on the training task shape",
            ))
        }
    };
    let base = Shape {
        ways: episode.ways,
        shots: episode.shots,
        queries: episode.query,
    };
    let (v, table): (Shape, _) = cx.overlay("validation", &base, Some(t), &[])?;
    let shape = episode_shape(cx, "validation", v.ways, v.shots, v.queries)?;
    if v.ways != episode.ways && learner.head_is_task_ways() {
        return Err(cx.key(
            "validation.ways",
            format!(
                "the model's head has {} classes (task.ways), so it validates at {} ways, not \
                 {}; only learners without such a head (protonet, finetune, distill) can",
                episode.ways, episode.ways, v.ways
            ),
        ));
    }
    Ok((shape, table))
}

/// An episode shape from `section` (`task`: training episodes, `validation`), checked.
fn episode_shape(
    cx: &Ctx<'_>,
    section: &str,
    ways: usize,
    shots: usize,
    queries: usize,
) -> Result<NWayKShotConfig> {
    for (k, v) in [("ways", ways), ("shots", shots), ("queries", queries)] {
        if v == 0 {
            return Err(cx.key(format!("{section}.{k}"), "must be at least 1"));
        }
    }
    let episode = NWayKShotConfig::new(ways, shots, queries);
    cx.checked(section, episode.validate())?;
    Ok(episode)
}

/// `[task] source = "folder"`: the path resolved against the experiment file's folder and
/// checked to exist (with the split's sub-folders), so that a typo fails before any work.
fn parse_folder(cx: &Ctx<'_>, t: &Table) -> Result<(TaskSpec, Table, usize)> {
    #[derive(Serialize, Deserialize)]
    struct Folder {
        path: String,
        split: FolderSplit,
        val_fraction: f64,
        test_fraction: f64,
        split_seed: u64,
        image_size: usize,
        grayscale: bool,
        invert: bool,
        ways: usize,
        shots: usize,
        queries: usize,
    }
    let path = cx.string(t, "task", "path")?.ok_or_else(|| {
        cx.key(
            "task.path",
            "missing (the folder holding one sub-folder of images per class)",
        )
    })?;
    let base = Folder {
        path: path.to_string(),
        split: FolderSplit::Random,
        val_fraction: 0.15,
        test_fraction: 0.25,
        split_seed: 0,
        image_size: 84,
        grayscale: false,
        invert: false,
        ways: usize_key(cx, t, "task", "ways", None)?,
        shots: usize_key(cx, t, "task", "shots", Some(1))?,
        queries: usize_key(cx, t, "task", "queries", Some(15))?,
    };
    let (f, mut table): (Folder, _) = cx.overlay("task", &base, Some(t), &["source"])?;
    let episode = episode_shape(cx, "task", f.ways, f.shots, f.queries)?;
    if f.image_size == 0 {
        return Err(cx.key("task.image_size", "must be at least 1"));
    }
    for (k, v) in [
        ("val_fraction", f.val_fraction),
        ("test_fraction", f.test_fraction),
    ] {
        if !(v > 0.0 && v < 1.0) {
            return Err(cx.key(format!("task.{k}"), format!("must be in (0, 1), got {v}")));
        }
    }
    if f.val_fraction + f.test_fraction >= 1.0 {
        return Err(cx.key(
            "task.test_fraction",
            "val_fraction + test_fraction must leave classes to train on (sum < 1)",
        ));
    }
    let dir = resolve_path(cx, "task.path", &f.path)?;
    let needed: &[&str] = match f.split {
        FolderSplit::Random => &[""],
        FolderSplit::Folders => &["train", "val", "test"],
    };
    for sub in needed {
        let d = dir.join(sub);
        if !d.is_dir() {
            return Err(cx.key(
                "task.path",
                format!("{} is not a folder (split = {:?})", d.display(), f.split),
            ));
        }
    }
    let path_text = dir
        .to_str()
        .ok_or_else(|| cx.key("task.path", format!("{} is not valid UTF-8", dir.display())))?;
    table.insert("path".into(), Value::String(path_text.into()));
    table.insert("source".into(), Value::String("folder".into()));
    Ok((
        TaskSpec::Folder {
            path: dir,
            split: f.split,
            val_fraction: f.val_fraction,
            test_fraction: f.test_fraction,
            split_seed: f.split_seed,
            image: ImageFolderConfig::new()
                .with_size(f.image_size)
                .with_grayscale(f.grayscale)
                .with_invert(f.invert),
            episode,
        },
        table,
        f.ways,
    ))
}

fn parse_model(
    cx: &Ctx<'_>,
    t: Option<&Table>,
    task: &TaskSpec,
    ways: Option<usize>,
) -> Result<(ModelSpec, Table)> {
    let default_kind = if task.is_classification() {
        "conv4"
    } else {
        "mlp"
    };
    let kind = match t {
        Some(t) => cx.string(t, "model", "kind")?.unwrap_or(default_kind),
        None => default_kind,
    };
    let (model, mut table) = match kind {
        "conv4" => {
            // Without the task's ways (FineTune), a placeholder the run start replaces.
            let mut base = Conv4Config::new(ways.unwrap_or(1));
            // The images' shape, as the task delivers them.
            let input = match task {
                TaskSpec::Omniglot { image_size, .. } => Some((1, *image_size)),
                TaskSpec::Folder { image, .. } => {
                    Some((if image.grayscale { 1 } else { 3 }, image.size))
                }
                TaskSpec::Sinusoid(_) | TaskSpec::Dynamics(_) => None,
            };
            if let Some((channels, size)) = input {
                base = base.with_in_channels(channels).with_input_size(size);
            }
            let (c, table): (Conv4Config, _) = cx.overlay("model", &base, t, &["kind"])?;
            if let Some(ways) = ways.filter(|&w| w != c.ways) {
                return Err(cx.key(
                    "model.ways",
                    format!("is {} but the task has {ways} ways", c.ways),
                ));
            }
            if let Some((channels, size)) = input {
                if c.in_channels != channels {
                    return Err(cx.key(
                        "model.in_channels",
                        format!("is {} but the task's images have {channels}", c.in_channels),
                    ));
                }
                if c.input_size != size {
                    return Err(cx.key(
                        "model.input_size",
                        format!(
                            "is {} but the task's images are {size}×{size}",
                            c.input_size
                        ),
                    ));
                }
            }
            cx.checked("model", c.validate())?;
            (ModelSpec::Conv4(c), table)
        }
        "mlp" => {
            let base = match task {
                TaskSpec::Dynamics(_) => MlpConfig::new(vec![2, 64, 64, 2]),
                _ => MlpConfig::new(vec![1, 40, 40, 1]),
            };
            let (c, table): (MlpConfig, _) = cx.overlay("model", &base, t, &["kind"])?;
            cx.checked("model", c.validate())?;
            if let Some((inputs, outputs)) = task.regression_dims() {
                let (first, last) = (c.widths[0], c.widths[c.widths.len() - 1]);
                if (first, last) != (inputs, outputs) {
                    return Err(cx.key(
                        "model.widths",
                        format!(
                            "start with {inputs} and end with {outputs} (the task's inputs \
                             and outputs), found {first} … {last}"
                        ),
                    ));
                }
            }
            (ModelSpec::Mlp(c), table)
        }
        other => {
            return Err(cx.key(
                "model.kind",
                format!("unknown model `{other}` (expected conv4 or mlp)"),
            ))
        }
    };
    if matches!(model, ModelSpec::Conv4(_)) != task.is_classification() {
        return Err(cx.key(
            "model.kind",
            format!(
                "`{kind}` does not take this task's inputs (images: conv4; sinusoid and \
                 dynamics: mlp)"
            ),
        ));
    }
    table.insert("kind".into(), Value::String(kind.into()));
    Ok((model, table))
}

/// The learner kinds an experiment file can name.
pub const LEARNERS: [&str; 10] = [
    "maml", "fomaml", "anil", "boil", "meta_sgd", "maml_pp", "reptile", "protonet", "finetune",
    "distill",
];

/// Learner kinds that need class labels (prototypes, a classifier head, soft targets).
const CLASSIFICATION_ONLY: [&str; 3] = ["protonet", "finetune", "distill"];

/// `[learner]` overlaid on `base` (keys in `consumed` read elsewhere), then `validate`d: every
/// error names its `learner.*` key.
fn learner_config<C: Serialize + DeserializeOwned>(
    cx: &Ctx<'_>,
    t: &Table,
    base: &C,
    consumed: &[&str],
    validate: impl Fn(&C) -> metalearn_core::Result<()>,
) -> Result<(C, Table)> {
    let (c, table) = cx.overlay("learner", base, Some(t), consumed)?;
    cx.checked("learner", validate(&c))?;
    Ok((c, table))
}

/// `learner.<key>`, a count of at least 1 (`default` when absent), also written into `table`
/// (what the run directory's copy of the experiment records).
fn count_key(
    cx: &Ctx<'_>,
    t: &Table,
    table: &mut Table,
    key: &str,
    default: usize,
) -> Result<usize> {
    let n = usize_key(cx, t, "learner", key, Some(default))?;
    if n == 0 {
        return Err(cx.key(format!("learner.{key}"), "must be at least 1"));
    }
    table.insert(key.into(), Value::Integer(n as i64));
    Ok(n)
}

fn parse_learner(
    cx: &Ctx<'_>,
    t: Option<&Table>,
    task: &TaskSpec,
) -> Result<(LearnerSpec, String, Table)> {
    let empty = Table::new();
    let t = t.unwrap_or(&empty);
    let kind = cx.string(t, "learner", "kind")?.ok_or_else(|| {
        cx.key(
            "learner.kind",
            format!("missing (one of: {})", LEARNERS.join(", ")),
        )
    })?;
    if CLASSIFICATION_ONLY.contains(&kind) && !task.is_classification() {
        return Err(cx.key(
            "learner.kind",
            format!("{kind} needs a classification task"),
        ));
    }
    let (spec, mut table) = match kind {
        "maml" | "fomaml" | "anil" | "boil" | "meta_sgd" => {
            let base = match kind {
                "fomaml" => MamlConfig::new().with_second_order(false),
                "anil" => MamlConfig::anil(),
                "boil" => MamlConfig::boil(),
                _ => MamlConfig::new(),
            };
            let (c, table) = learner_config(cx, t, &base, &["kind"], MamlConfig::validate)?;
            let spec = if kind == "meta_sgd" {
                LearnerSpec::MetaSgd(c)
            } else {
                LearnerSpec::Maml(c)
            };
            (spec, table)
        }
        "maml_pp" => {
            let base = MamlPlusPlusConfig::new();
            let (c, table) = learner_config(cx, t, &base, &["kind"], MamlPlusPlusConfig::validate)?;
            (LearnerSpec::MamlPlusPlus(c), table)
        }
        "reptile" => {
            let base = ReptileConfig::new();
            let (c, table) = learner_config(cx, t, &base, &["kind"], ReptileConfig::validate)?;
            (LearnerSpec::Reptile(c), table)
        }
        "protonet" => {
            let base = ProtoNetConfig::new();
            let (c, table) = learner_config(cx, t, &base, &["kind"], ProtoNetConfig::validate)?;
            (LearnerSpec::ProtoNet(c), table)
        }
        "finetune" => {
            let consumed = ["kind", "batch"];
            let base = FineTuneConfig::new();
            let (c, mut table) = learner_config(cx, t, &base, &consumed, FineTuneConfig::validate)?;
            let batch = count_key(cx, t, &mut table, "batch", 64)?;
            (LearnerSpec::FineTune { config: c, batch }, table)
        }
        "distill" => {
            let consumed = ["kind", "teacher", "meta_batch_size"];
            let teacher = parse_teacher(cx, t, task)?;
            let base = DistillConfig::new();
            let (c, mut table) = learner_config(cx, t, &base, &consumed, DistillConfig::validate)?;
            let meta_batch_size = count_key(cx, t, &mut table, "meta_batch_size", 1)?;
            let dir_text = teacher.dir.to_str().ok_or_else(|| {
                cx.key(
                    "learner.teacher",
                    format!("{} is not valid UTF-8", teacher.dir.display()),
                )
            })?;
            table.insert("teacher".into(), Value::String(dir_text.into()));
            let spec = LearnerSpec::Distill {
                config: c,
                meta_batch_size,
                teacher: Box::new(teacher),
            };
            (spec, table)
        }
        other => {
            return Err(cx.key(
                "learner.kind",
                format!(
                    "unknown learner `{other}` (expected one of: {})",
                    LEARNERS.join(", ")
                ),
            ))
        }
    };
    table.insert("kind".into(), Value::String(kind.into()));
    Ok((spec, kind.to_string(), table))
}
