//! What the `metalearn` command does, as library functions: build an experiment's tasks, model
//! and learner on a backend, train it in a run directory, evaluate the best model.

use crate::experiment::{
    check_same_experiment, claim_run_dir, load_run_dir, Experiment, FolderSplit, LearnerSpec,
    ModelSpec, OmniglotSplit, TaskSpec,
};
use crate::{Error, Result};
use burn::backend::Autodiff;
use burn::tensor::backend::Backend;
use metalearn_core::episode::{EpisodeData, HostBatch};
use metalearn_core::{
    with_backend, AnyLearner, DynLearner, LearnerState, SeedStream, TaskDistribution, TaskKind,
};
use metalearn_eval::StepsCurve;
use metalearn_tasks::{
    image_files, load_image, load_image_folder, ClassBatches, ClassDataset, Dynamics, ImageFolder,
    ImageFolderConfig, NWayKShot, NWayKShotConfig, Omniglot, OmniglotClasses, OmniglotConfig,
    Sinusoid,
};
use metalearn_train::{
    evaluate, evaluate_curve, load_best, write_report, Progress, RunDir, TrainSummary, Trainer,
    Validation,
};
use metalearn_update::transfer::{Transfer, TransferConfig};
use metalearn_update::{
    EpisodicDistiller, FineTune, Maml, MamlPlusPlus, MetaSgd, ProtoNet, Reptile,
};
use metalearn_zoo::{Conv4, Conv4Config};
use rand::seq::SliceRandom;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Meta-train / meta-validation / meta-test task sources.
pub struct Tasks {
    /// Training tasks.
    pub train: Box<dyn TaskDistribution>,
    /// Validation tasks (held-out classes), in the training episode shape unless the
    /// experiment's `[validation]` sets another.
    pub val: Box<dyn TaskDistribution>,
    /// Test tasks (held-out classes) in the evaluation shape.
    pub test: Box<dyn TaskDistribution>,
    /// Classes of the training split (classification; 0 for regression).
    pub train_classes: usize,
}

impl std::fmt::Debug for Tasks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Tasks")
    }
}

/// Omniglot's character split: (train, validation, test) classes.
pub fn omniglot_classes(
    split: OmniglotSplit,
    rotations: bool,
    image_size: usize,
) -> Result<[Arc<OmniglotClasses>; 3]> {
    let config = OmniglotConfig::new().with_image_size(image_size);
    Ok(Arc::new(Omniglot::load(None, &config)?).split(split, rotations))
}

/// An image folder's (train, validation, test) classes: `path/train`, `path/val`, `path/test`
/// (`FolderSplit::Folders`), or the class folders under `path` shuffled by `split_seed` and
/// split by the (validation, test) `fractions` of the classes (each split at least one class).
pub fn folder_classes(
    path: &Path,
    split: FolderSplit,
    fractions: (f64, f64),
    split_seed: u64,
    image: ImageFolderConfig,
) -> Result<[ImageFolder; 3]> {
    match split {
        FolderSplit::Folders => Ok([
            load_image_folder(&path.join("train"), image)?,
            load_image_folder(&path.join("val"), image)?,
            load_image_folder(&path.join("test"), image)?,
        ]),
        FolderSplit::Random => {
            let all = load_image_folder(path, image)?;
            let n = all.names.len();
            let count = |f: f64| ((f * n as f64).round() as usize).max(1);
            let (n_val, n_test) = (count(fractions.0), count(fractions.1));
            if n_val + n_test >= n {
                return Err(Error::Usage(format!(
                    "{}: {n} class folders cannot be split into training, validation \
                     ({n_val}) and test ({n_test}) classes",
                    path.display()
                )));
            }
            let mut order: Vec<usize> = (0..n).collect();
            order.shuffle(&mut metalearn_core::seed::rng(
                SeedStream::new(split_seed).named("class split").seed(),
            ));
            let (test, rest) = order.split_at(n_test);
            let (val, train) = rest.split_at(n_val);
            let sorted = |s: &[usize]| {
                let mut v = s.to_vec();
                v.sort_unstable();
                v
            };
            Ok([
                all.subset(&sorted(train))?,
                all.subset(&sorted(val))?,
                all.subset(&sorted(test))?,
            ])
        }
    }
}

/// What the learner trains on from the training classes: episodes of the experiment's shape,
/// or, for FineTune, batches of labelled images over every training class.
fn training_tasks<D: ClassDataset + 'static>(
    exp: &Experiment,
    classes: Arc<D>,
    episode: NWayKShotConfig,
) -> metalearn_core::Result<Box<dyn TaskDistribution>> {
    Ok(match &exp.learner {
        LearnerSpec::FineTune { batch, .. } => Box::new(ClassBatches::new(classes, *batch)?),
        _ => Box::new(NWayKShot::new(classes, episode)?),
    })
}

/// The experiment's tasks; `test` has the shape of `eval` (ways, shots, queries).
pub fn tasks(exp: &Experiment) -> Result<Tasks> {
    let e = exp.eval;
    Ok(match &exp.task {
        TaskSpec::Omniglot {
            split,
            rotations,
            image_size,
            episode,
        } => {
            let [train, val, test] = omniglot_classes(*split, *rotations, *image_size)?;
            Tasks {
                train_classes: train.num_classes(),
                train: training_tasks(exp, train, *episode)?,
                val: Box::new(NWayKShot::new(val, exp.validation.unwrap_or(*episode))?),
                test: Box::new(NWayKShot::new(
                    test,
                    NWayKShotConfig::new(e.ways, e.shots, e.queries),
                )?),
            }
        }
        TaskSpec::Folder {
            path,
            split,
            val_fraction,
            test_fraction,
            split_seed,
            image,
            episode,
        } => {
            let [train, val, test] = folder_classes(
                path,
                *split,
                (*val_fraction, *test_fraction),
                *split_seed,
                *image,
            )?;
            // Episodes of one split; NWayKShot's own errors (too few classes or images) get the
            // folder and the split's name.
            let episodes_of = |name: &str,
                               folder: ImageFolder,
                               shape: NWayKShotConfig|
             -> Result<Box<dyn TaskDistribution>> {
                let tasks = NWayKShot::new(Arc::new(folder.classes), shape).map_err(|e| {
                    Error::Usage(format!("{}: the {name} split: {e}", path.display()))
                })?;
                Ok(Box::new(tasks))
            };
            let train_classes = train.classes.num_classes();
            Tasks {
                train_classes,
                train: training_tasks(exp, Arc::new(train.classes), *episode).map_err(|e| {
                    Error::Usage(format!("{}: the train split: {e}", path.display()))
                })?,
                val: episodes_of("val", val, exp.validation.unwrap_or(*episode))?,
                test: episodes_of(
                    "test",
                    test,
                    NWayKShotConfig::new(e.ways, e.shots, e.queries),
                )?,
            }
        }
        TaskSpec::Dynamics(d) => {
            let mut test = d.clone();
            (test.support, test.query) = (e.shots, e.queries);
            Tasks {
                train_classes: 0,
                train: Box::new(Dynamics::new(d.clone())?),
                val: Box::new(Dynamics::new(d.clone())?),
                test: Box::new(Dynamics::new(test)?),
            }
        }
        TaskSpec::Sinusoid(s) => {
            let mut test = s.clone();
            (test.k_shot, test.query) = (e.shots, e.queries);
            Tasks {
                train_classes: 0,
                train: Box::new(Sinusoid::new(s.clone())?),
                val: Box::new(Sinusoid::new(s.clone())?),
                test: Box::new(Sinusoid::new(test)?),
            }
        }
    })
}

/// The experiment's learner on backend `B`, with a freshly initialised model (seeded by the
/// experiment's seed), boxed so that a program can hold any of them.
pub fn learner<B: Backend>(exp: &Experiment) -> Result<Box<dyn AnyLearner>> {
    learner_from::<B>(exp, None)
}

/// The learner of a new run of `exp`: [`learner`], its model started from the best model of
/// the run directory `exp.init` where the experiment names a warm start (checked by
/// [`Experiment::check_init`]). The learner is built around that model, so what it derives
/// from the model when it starts (MAML++'s per-step batch-norm copies) is the warm start's
/// too; a warm start from the same learner also continues its other learned parts
/// (`continue_learned`); the optimiser and iteration counter start fresh.
pub fn training_learner<B: Backend>(exp: &Experiment) -> Result<Box<dyn AnyLearner>> {
    learner_from::<B>(exp, exp.init.as_deref())
}

/// `model`, or the best model of the run in `init` loaded into it.
fn warm_started<B: Backend, M: burn::module::Module<Autodiff<B>>>(
    model: M,
    init: Option<&Path>,
    device: &B::Device,
) -> Result<M> {
    match init {
        None => Ok(model),
        Some(dir) => best_model::<B, _>(model, dir, device)
            .map_err(|e| Error::Usage(format!("init = {}: {e}", dir.display()))),
    }
}

/// [`learner`] with its model started from the run in `init`, if any.
fn learner_from<B: Backend>(exp: &Experiment, init: Option<&Path>) -> Result<Box<dyn AnyLearner>> {
    let device = B::Device::default();
    let seed = SeedStream::new(exp.seed).named("model").seed();
    // The same learners over either model (rank-4 images or rank-2 features).
    macro_rules! boxed {
        ($d:literal, $model:expr) => {{
            let model = $model;
            match &exp.learner {
                LearnerSpec::Maml(l) => {
                    DynLearner::<_, $d>::boxed(Maml::new(l.clone(), model, device)?)
                }
                LearnerSpec::MetaSgd(l) => {
                    DynLearner::<_, $d>::boxed(MetaSgd::new(l.clone(), model, device)?)
                }
                LearnerSpec::MamlPlusPlus(l) => {
                    DynLearner::<_, $d>::boxed(MamlPlusPlus::new(l.clone(), model, device)?)
                }
                LearnerSpec::Reptile(l) => {
                    DynLearner::<_, $d>::boxed(Reptile::new(l.clone(), model, device)?)
                }
                LearnerSpec::ProtoNet(l) => {
                    DynLearner::<_, $d>::boxed(ProtoNet::new(l.clone(), model, device)?)
                }
                LearnerSpec::FineTune { config, .. } => {
                    DynLearner::<_, $d>::boxed(FineTune::new(config.clone(), model, device)?)
                }
                // Built above (a teacher and a student of their own types).
                LearnerSpec::Distill { .. } => {
                    return Err(Error::Usage("distillation needs conv4 models".into()))
                }
            }
        }};
    }
    if let LearnerSpec::Distill {
        config,
        meta_batch_size,
        teacher,
    } = &exp.learner
    {
        let ModelSpec::Conv4(student) = &exp.model else {
            return Err(Error::Usage("distillation needs a conv4 student".into()));
        };
        // Without its teacher (a run directory moved elsewhere) the student can still be
        // evaluated and used: only training consults the teacher, and `train` refuses to
        // start without it (Experiment::check_teacher).
        let teacher = match &teacher.model {
            Some(ModelSpec::Conv4(c)) => load_teacher::<B>(c, &teacher.dir, &device)?,
            Some(ModelSpec::Mlp(_)) => {
                return Err(Error::Usage("distillation needs a conv4 teacher".into()))
            }
            None => student.init::<B>(seed, &device)?,
        };
        let student = warm_started::<B, _>(student.init(seed, &device)?, init, &device)?;
        return Ok(DynLearner::<_, 4>::boxed(EpisodicDistiller::new(
            config.clone(),
            student,
            teacher,
            *meta_batch_size,
            device,
        )?));
    }
    let mut learner = match &exp.model {
        ModelSpec::Conv4(c) => boxed!(
            4,
            warm_started::<B, _>(c.init(seed, &device)?, init, &device)?
        ),
        ModelSpec::Mlp(c) => boxed!(
            2,
            warm_started::<B, _>(c.init(seed, &device)?, init, &device)?
        ),
    };
    if let Some(dir) = init {
        continue_learned(learner.as_mut(), dir)?;
    }
    Ok(learner)
}

/// A warm start from a run of the same learner continues everything that learner learned
/// besides the model (MAML++'s learned inner rates and per-step batch-norm parameters,
/// Meta-SGD's rates, Reptile's carried inner Adam), with fresh optimisers and the iteration
/// counter at 0, so every schedule (ε's annealing, MAML++'s first-order phase and cosine outer
/// rate) starts over. From another learner only the model carries over (loaded before the
/// learner was built). Learned parts that do not fit this learner's configuration (another
/// number of inner steps) are refused, naming the warm start.
fn continue_learned(learner: &mut dyn AnyLearner, dir: &Path) -> Result<()> {
    let state = metalearn_train::read_state(&RunDir::new(dir).best_model())?;
    if state.learner != learner.learner_name() {
        return Ok(());
    }
    let state = LearnerState {
        iterations: 0,
        ..state.without_optimizer()
    };
    learner.load_state(&state).map_err(|e| {
        Error::Usage(format!(
            "init = {}: the {} state there does not fit this experiment's learner: {e}",
            dir.display(),
            state.learner
        ))
    })
}

/// The best model of the run in `dir` (state part `model`) loaded into `init`.
fn best_model<B: Backend, M: burn::module::Module<Autodiff<B>>>(
    init: M,
    dir: &Path,
    device: &B::Device,
) -> Result<M> {
    let best = RunDir::new(dir).best_model();
    let state = metalearn_train::read_state(&best)?;
    metalearn_core::checkpoint::load_module_bytes::<Autodiff<B>, _>(
        init,
        state.part("model")?,
        device,
    )
    .map_err(|e| Error::Usage(format!("{}: {e}", best.display())))
}

/// The best model of the run in `dir` (a distillation teacher), on the plain backend.
fn load_teacher<B: Backend>(
    model: &Conv4Config,
    dir: &Path,
    device: &B::Device,
) -> Result<Conv4<B>> {
    use burn::module::AutodiffModule;
    Ok(best_model::<B, _>(model.init::<Autodiff<B>>(0, device)?, dir, device)?.valid())
}

/// The best model of the run in `dir` as a transfer start: evaluated by fitting a new linear
/// head on each support set, the body frozen (`metalearn eval --transfer`).
fn transfer_learner<B: Backend>(exp: &Experiment, dir: &Path) -> Result<Box<dyn AnyLearner>> {
    let device = B::Device::default();
    match &exp.model {
        ModelSpec::Conv4(c) => {
            let body = best_model::<B, _>(c.init::<Autodiff<B>>(0, &device)?, dir, &device)?;
            Ok(DynLearner::<_, 4>::boxed(Transfer::new(
                TransferConfig::new().with_transductive(exp.learner.transductive()),
                body,
                device,
            )?))
        }
        ModelSpec::Mlp(_) => Err(Error::Usage(
            "--transfer fits a new classification head: it needs a run on images".into(),
        )),
    }
}

/// Train `exp` in `dir`: a new run, or the resumption of the one there (refused if `dir` holds
/// a different experiment). Writes `experiment.toml`, `metrics.jsonl`, `checkpoints/`, `best/`
/// and `report.md`.
///
/// The data is loaded first: FineTune's classifier is sized to the training split's classes
/// ([`Experiment::with_pretraining_classes`]) before the run directory is claimed, so the stored
/// experiment names the head that `eval`, `adapt` and `ship` rebuild.
pub fn train(exp: &Experiment, dir: &Path, progress: Progress) -> Result<TrainSummary> {
    exp.check_teacher()?;
    // A warm start is read when a run starts: a run that resumes has its model in a checkpoint,
    // so it resumes even where its warm start's directory has since moved.
    let resumes = has_usable_checkpoint(&RunDir::new(dir))?;
    if !resumes {
        exp.check_init()?;
    }
    let tasks = tasks(exp)?;
    let exp = &exp.clone().with_pretraining_classes(tasks.train_classes);
    claim_run_dir(exp, dir)?;
    let mut learner = with_backend!(exp.backend, B => if resumes {
        learner::<B>(exp)
    } else {
        training_learner::<B>(exp)
    })?;
    let trainer = Trainer::new(exp.budget.clone(), RunDir::new(dir))?.with_progress(progress);
    let summary = trainer.fit(learner.as_mut(), tasks.train.as_ref(), tasks.val.as_ref())?;
    write_report(trainer.run_dir(), &exp.title())?;
    Ok(summary)
}

/// Whether the run in `run` holds a checkpoint that reads back intact (the trainer resumes from
/// the newest such one).
fn has_usable_checkpoint(run: &RunDir) -> Result<bool> {
    Ok(
        metalearn_train::files::list_checkpoints(&run.checkpoints())?
            .iter()
            .any(|(_, path)| metalearn_train::read_state(path).is_ok()),
    )
}

/// Overrides of the experiment's test protocol.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct EvalOverrides {
    /// Test episodes.
    pub episodes: Option<usize>,
    /// Classes per episode.
    pub ways: Option<usize>,
    /// Support examples per class.
    pub shots: Option<usize>,
    /// Adaptation steps.
    pub steps: Option<usize>,
    /// Also measure the steps curve: accuracy and loss after 0, 1, …, `steps` steps.
    pub curve: bool,
    /// Evaluate by transfer instead of the learner's own adaptation: a new linear head fitted
    /// on each support set (Adam, `steps` steps, default 100) on the frozen trained body — the
    /// linear-probe protocol of Chen et al. (2019), which compares any learner's features.
    pub transfer: bool,
    /// Score the query examples together (`Some(true)`) or each with the support set alone
    /// (`Some(false)`: Nichol et al.'s non-transductive protocol) instead of as the experiment
    /// says.
    pub transductive: Option<bool>,
}

/// The test metrics after a number of adaptation steps (one point of the steps curve).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct CurvePoint {
    /// Adaptation steps.
    pub steps: usize,
    /// Mean accuracy (classification).
    pub accuracy: Option<f64>,
    /// Its 95% CI half-width.
    pub accuracy_ci95: Option<f64>,
    /// Mean query loss.
    pub loss: f64,
    /// Its 95% CI half-width.
    pub loss_ci95: f64,
}

/// What `metalearn eval` measured.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EvalReport {
    /// The experiment's title.
    pub experiment: String,
    /// Iterations the evaluated (best) model was trained for.
    pub iterations: usize,
    /// Its validation score when it was saved.
    pub validation: Validation,
    /// The protocol.
    pub episodes: usize,
    /// Classes per episode (classification).
    pub ways: usize,
    /// Support examples per class.
    pub shots: usize,
    /// Query examples per class.
    pub queries: usize,
    /// Adaptation steps.
    pub steps: usize,
    /// Mean accuracy over test episodes (classification).
    pub accuracy: Option<f64>,
    /// Its 95% CI half-width.
    pub accuracy_ci95: Option<f64>,
    /// Mean query loss.
    pub loss: f64,
    /// Its 95% CI half-width.
    pub loss_ci95: f64,
    /// Scored by transfer (a new linear head on the frozen body), not the learner's own
    /// adaptation.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub transfer: bool,
    /// Query examples scored together, in one batch (`false`: each with the support set
    /// alone, Nichol et al.'s non-transductive protocol). Reports written before this field
    /// existed were all transductive.
    #[serde(default = "transductive_default")]
    pub transductive: bool,
    /// The steps curve (with `--curve`; empty otherwise): the same episodes scored after
    /// 0, 1, …, `steps` adaptation steps.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub curve: Vec<CurvePoint>,
}

fn transductive_default() -> bool {
    true
}

/// Evaluate the best model of the run in `dir` on the meta-test tasks (episodes drawn from the
/// experiment's seed, so the same command gives the same number).
pub fn eval(dir: &Path, overrides: EvalOverrides) -> Result<EvalReport> {
    let mut exp = load_run_dir(dir)?;
    let e = &mut exp.eval;
    e.episodes = overrides.episodes.unwrap_or(e.episodes);
    e.ways = overrides.ways.unwrap_or(e.ways);
    e.shots = overrides.shots.unwrap_or(e.shots);
    // A new head starts from zero: Chen et al. fit it with 100 Adam steps.
    e.steps = overrides
        .steps
        .unwrap_or(if overrides.transfer { 100 } else { e.steps });
    if e.episodes == 0 || e.ways == 0 || e.shots == 0 {
        return Err(Error::Usage(
            "--episodes, --ways and --shots must be at least 1".into(),
        ));
    }
    if let Some(on) = overrides.transductive {
        exp.learner.set_transductive(on);
    }
    let tasks = tasks(&exp)?;
    let mut learner = with_backend!(exp.backend, B => learner::<B>(&exp))?;
    let run = RunDir::new(dir);
    let validation = load_best(&run, learner.as_mut())?;
    let iterations = learner.iterations();
    if overrides.transfer {
        learner = with_backend!(exp.backend, B => transfer_learner::<B>(&exp, dir))?;
    }
    let measure = if overrides.curve {
        evaluate_curve
    } else {
        evaluate
    };
    let curve: StepsCurve = measure(
        learner.as_ref(),
        tasks.test.as_ref(),
        exp.eval.episodes,
        exp.eval.steps,
        SeedStream::new(exp.seed).named("test"),
    )?;
    let p = curve
        .points
        .last()
        .ok_or(metalearn_core::Error::Empty("test curve"))?;
    Ok(EvalReport {
        experiment: exp.title(),
        iterations,
        validation,
        episodes: exp.eval.episodes,
        ways: exp.eval.ways,
        shots: exp.eval.shots,
        queries: exp.eval.queries,
        steps: exp.eval.steps,
        accuracy: p.accuracy.map(|a| a.mean),
        accuracy_ci95: p.accuracy.map(|a| a.ci95),
        loss: p.loss.mean,
        loss_ci95: p.loss.ci95,
        transfer: overrides.transfer,
        transductive: exp.learner.transductive(),
        curve: if overrides.curve {
            curve
                .points
                .iter()
                .map(|q| CurvePoint {
                    steps: q.steps,
                    accuracy: q.accuracy.map(|a| a.mean),
                    accuracy_ci95: q.accuracy.map(|a| a.ci95),
                    loss: q.loss.mean,
                    loss_ci95: q.loss.ci95,
                })
                .collect()
        } else {
            Vec::new()
        },
    })
}

impl EvalReport {
    /// The steps curve as a table, one row per number of steps (empty without `--curve`).
    pub fn curve_table(&self) -> String {
        let mut out = String::new();
        for q in &self.curve {
            let score = match (q.accuracy, q.accuracy_ci95) {
                (Some(a), Some(c)) => format!("accuracy {:6.2} ± {:.2}%, ", 100.0 * a, 100.0 * c),
                _ => String::new(),
            };
            out.push_str(&format!(
                "  after {:>3} steps: {score}loss {:.4} ± {:.4}\n",
                q.steps, q.loss, q.loss_ci95
            ));
        }
        out
    }

    /// One line: `MAML, Omniglot 5-way 1-shot: 97.10 ± 0.52% (5-way 1-shot, 600 episodes, 3 steps)`.
    pub fn line(&self) -> String {
        let score = match (self.accuracy, self.accuracy_ci95) {
            (Some(a), Some(c)) => format!("accuracy {:.2} ± {:.2}%", 100.0 * a, 100.0 * c),
            _ => format!("loss {:.4} ± {:.4}", self.loss, self.loss_ci95),
        };
        let how = if self.transfer {
            "steps fitting a new linear head on the frozen body"
        } else {
            "adaptation steps"
        };
        let protocol = if self.transductive {
            ""
        } else {
            ", non-transductive"
        };
        format!(
            "{}: {score} ({}-way {}-shot, {} queries, {} episodes, {} {how}{protocol}; model \
             of iteration {})",
            self.experiment,
            self.ways,
            self.shots,
            self.queries,
            self.episodes,
            self.steps,
            self.iterations
        )
    }
}

/// One query image's prediction.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Prediction {
    /// The image file, relative to the query folder.
    pub file: String,
    /// The predicted class (a support folder's name).
    pub class: String,
    /// Its probability (softmax of the class scores).
    pub probability: f64,
    /// Every class's probability, in the order of the support folders (sorted by name).
    pub probabilities: Vec<f64>,
}

/// How the run's images were preprocessed (so that the user's images are treated the same).
fn image_config(exp: &Experiment) -> Result<ImageFolderConfig> {
    match &exp.task {
        // Omniglot: grayscale, ink = 1 (dark ink on light paper is inverted), area-resized.
        TaskSpec::Omniglot { image_size, .. } => Ok(ImageFolderConfig::new()
            .with_size(*image_size)
            .with_grayscale(true)
            .with_invert(true)),
        TaskSpec::Folder { image, .. } => Ok(*image),
        TaskSpec::Sinusoid(_) | TaskSpec::Dynamics(_) => Err(Error::Usage(
            "`adapt` takes a run trained on images (this one is a regression task)".into(),
        )),
    }
}

/// Every PNG/JPEG under `dir` (any depth), preprocessed as `config` says, with its path.
fn load_images(dir: &Path, config: ImageFolderConfig) -> Result<Vec<(PathBuf, Vec<f32>)>> {
    let files = image_files(dir)?;
    if files.is_empty() {
        return Err(Error::Usage(format!(
            "{}: no PNG or JPEG images",
            dir.display()
        )));
    }
    files
        .into_iter()
        .map(|f| Ok((f.clone(), load_image(&f, config)?)))
        .collect()
}

/// Adapt the best model of the run in `dir` to the labelled images in `support` (one
/// subfolder per class) with `steps` adaptation steps (default: the experiment's test steps),
/// and classify every image under `query`. Images are preprocessed as at training.
///
/// The query images are classified together, in one batch (transductive batch norm, as in
/// the experiment's evaluation).
pub fn adapt(
    dir: &Path,
    support: &Path,
    query: &Path,
    steps: Option<usize>,
) -> Result<Vec<Prediction>> {
    let exp = load_run_dir(dir)?;
    let config = image_config(&exp)?;
    let folder = load_image_folder(support, config)?;
    let ways = folder.names.len();
    // A classifier's head has a fixed number of classes; ProtoNet's prototypes and
    // FineTune's new head do not.
    let head_ways = match (&exp.model, &exp.learner) {
        (ModelSpec::Conv4(c), learner) if learner.head_is_task_ways() => Some(c.ways),
        _ => None,
    };
    if let Some(trained) = head_ways.filter(|&w| w != ways) {
        return Err(Error::Usage(format!(
            "the model was trained for {trained}-way tasks; {} holds {ways} class folders",
            support.display()
        )));
    }
    let support_batch = folder.classes.labelled_batch()?;
    let images = load_images(query, config)?;
    let example = support_batch.input_shape[1..].to_vec();
    let mut shape = vec![images.len()];
    shape.extend_from_slice(&example);
    let inputs: Vec<f32> = images.iter().flat_map(|(_, v)| v.iter().copied()).collect();
    // The labels of the query set are not read by `predict`; class 0 fills the slot.
    let query_batch = HostBatch::classification(inputs, shape, vec![0; images.len()], ways)?;
    let episode = EpisodeData {
        kind: TaskKind::Classification { ways },
        support: support_batch,
        query: query_batch,
    };
    let mut learner = with_backend!(exp.backend, B => learner::<B>(&exp))?;
    load_best(&RunDir::new(dir), learner.as_mut())?;
    let logits = learner.predict(&episode, steps.unwrap_or(exp.eval.steps))?;
    Ok(images
        .iter()
        .zip(logits.chunks(ways))
        .map(|((path, _), row)| {
            let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
            let exp: Vec<f64> = row.iter().map(|&x| f64::from(x - max).exp()).collect();
            let sum: f64 = exp.iter().sum();
            let probabilities: Vec<f64> = exp.iter().map(|e| e / sum).collect();
            let (best, p) = probabilities
                .iter()
                .copied()
                .enumerate()
                .fold((0, f64::MIN), |a, b| if b.1 > a.1 { b } else { a });
            Prediction {
                file: path
                    .strip_prefix(query)
                    .unwrap_or(path)
                    .display()
                    .to_string(),
                class: folder.names[best].clone(),
                probability: p,
                probabilities,
            }
        })
        .collect())
}

/// A shipped model's `RESULT.json`: the test measurement of the run's best model and how it was
/// trained, written by [`ship`] and re-measured by `metalearn eval --run-dir` on the shipped
/// directory.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ShippedResult {
    /// The test measurement (600 episodes with 15 queries per class unless the experiment's
    /// `[eval]` says otherwise).
    pub test: EvalReport,
    /// The experiment's seed.
    pub seed: u64,
    /// Meta-iterations the run trained in all (the shipped model is the best by validation,
    /// `test.iterations`).
    pub iterations_trained: usize,
    /// Training wall time over every session of the run, s.
    pub training_seconds: f64,
    /// Median wall time of one meta-iteration, ms.
    pub median_ms_per_iteration: f64,
    /// Training wall time until the shipped model's iteration, s.
    pub seconds_to_model: f64,
    /// The git commit the shipping checkout was at (`None` outside a git checkout).
    pub commit: Option<String>,
    /// The `metalearn` version.
    pub version: String,
    /// The same model measured on further settings of the same protocol (other ways; e.g. the
    /// 20-way numbers of a ProtoNet trained for 1-shot, as Snell et al. report them).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub also: Vec<EvalReport>,
}

/// Files of a run directory a shipped model keeps beside `best/` and `RESULT.json` (those the
/// run has).
const SHIPPED_FILES: [&str; 3] = ["report.md", "learning_curve.svg", "meta_loss.svg"];

/// Ship the best model of the run in `run` to `to`: measure it on the experiment's test
/// protocol, and write `to/experiment.toml` (or check that it describes the same experiment),
/// `to/best/`, the report and `to/RESULT.json`. `also_ways` measures the same model on the
/// same protocol at further numbers of classes per episode ([`ShippedResult::also`]).
/// `metalearn eval --run-dir TO [--ways N]` then re-measures the shipped numbers from those
/// files alone.
pub fn ship(
    run: &Path,
    to: &Path,
    commit: Option<String>,
    also_ways: &[usize],
) -> Result<ShippedResult> {
    let exp = load_run_dir(run)?;
    // The further settings first: one the model cannot do (a fixed 5-way head asked for 20
    // ways) fails in seconds, not after the full test.
    let also = also_ways
        .iter()
        .map(|&w| {
            eval(
                run,
                EvalOverrides {
                    ways: Some(w),
                    ..Default::default()
                },
            )
        })
        .collect::<Result<Vec<_>>>()?;
    let test = eval(run, EvalOverrides::default())?;
    let records = metalearn_train::metrics::read(&RunDir::new(run).metrics())?;
    let mut times = Vec::new();
    let (mut training_seconds, mut seconds_to_model, mut iterations_trained) = (0.0f64, 0.0f64, 0);
    for r in &records {
        if let metalearn_train::metrics::Record::Step {
            iteration,
            ms,
            elapsed_s,
            ..
        } = *r
        {
            times.push(ms);
            training_seconds = training_seconds.max(elapsed_s);
            iterations_trained = iterations_trained.max(iteration + 1);
            if iteration < test.iterations {
                seconds_to_model = seconds_to_model.max(elapsed_s);
            }
        }
    }
    // A hand-written experiment file already there (with its comments) stays, if it describes
    // the same experiment; otherwise the run's resolved one is written.
    let file = to.join("experiment.toml");
    if file.exists() {
        check_same_experiment(&exp, &file)?;
    } else {
        claim_run_dir(&exp, to)?;
    }
    let from = RunDir::new(run);
    let dest = RunDir::new(to);
    let copy = |a: &Path, b: &Path| -> Result<()> {
        let bytes = std::fs::read(a).map_err(|e| metalearn_train::Error::io(a, e))?;
        Ok(metalearn_train::files::write_atomic(b, &bytes)?)
    };
    copy(&from.best_model(), &dest.best_model())?;
    copy(&from.best_info(), &dest.best_info())?;
    for f in SHIPPED_FILES.iter().filter(|f| run.join(f).exists()) {
        copy(&run.join(f), &to.join(f))?;
    }
    let result = ShippedResult {
        test,
        seed: exp.seed,
        iterations_trained,
        training_seconds,
        median_ms_per_iteration: metalearn_core::stats::median(&times).unwrap_or(f64::NAN),
        seconds_to_model,
        commit,
        version: env!("CARGO_PKG_VERSION").to_string(),
        also,
    };
    let json = serde_json::to_vec_pretty(&result).map_err(|e| metalearn_train::Error::RunDir {
        path: to.join("RESULT.json").display().to_string(),
        reason: e.to_string(),
    })?;
    metalearn_train::files::write_atomic(&to.join("RESULT.json"), &json)?;
    Ok(result)
}

/// Read a shipped model's `RESULT.json`.
pub fn read_result(dir: &Path) -> Result<ShippedResult> {
    let path = dir.join("RESULT.json");
    let bytes = std::fs::read(&path).map_err(|e| metalearn_train::Error::io(&path, e))?;
    serde_json::from_slice(&bytes).map_err(|e| {
        metalearn_train::Error::RunDir {
            path: path.display().to_string(),
            reason: e.to_string(),
        }
        .into()
    })
}
