//! The rest of the update-type family on real data: model averaging (soups, ensembles),
//! knowledge distillation (supervised and episodic meta-distillation), transfer learning from
//! three starts (sample-efficiency curve), and iterated averaging compared with MAML and Reptile.
//!
//! Data: Omniglot (Vinyals split). The supervised problem for averaging and distillation is to
//! classify `classes` held-out characters (test split, unrotated) from 10 drawings each, choosing
//! soups on 5 further drawings (validation) and scoring on the last 5 (test).

use crate::omniglot::{load, Data};
use crate::Args;
use anyhow::Result;
use burn::backend::Autodiff;
use burn::module::{AutodiffModule, Module};
use burn::tensor::backend::Backend;
use metalearn_core::episode::HostBatch;
use metalearn_core::learner::MetaLearner;
use metalearn_core::loss::accuracy;
use metalearn_core::stats::Summary;
use metalearn_core::{MetaModule, SeedStream, TaskDistribution};
use metalearn_eval::fewshot::QUERY_PER_CLASS;
use metalearn_eval::plot::{line_plot, Series};
use metalearn_eval::{meta_test, meta_test_final};
use metalearn_tasks::{
    ClassBatches, InMemoryClasses, NWayKShot, NWayKShotConfig, Sinusoid, SinusoidConfig,
};
use metalearn_update::transfer::{Transfer, TransferConfig};
use metalearn_update::{
    greedy_soup, uniform_soup, BatchedMaml, DistillConfig, Distiller, Ensemble, EpisodicDistiller,
    FineTune, FineTuneConfig, GreedySoupSummary, MamlConfig, ProtoNet, ProtoNetConfig, Reptile,
    ReptileConfig,
};
use metalearn_zoo::{Conv4, Conv4Config, MlpConfig};
use serde::Serialize;
use std::fmt::Write as _;
use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

type AB<B> = Autodiff<B>;

/// Iterations and sizes of one budget.
#[derive(Debug, Clone, Copy, Serialize)]
struct Budget {
    name: &'static str,
    /// Supervised pretraining iterations on the meta-training classes (batch 128).
    pretrain_iterations: usize,
    /// Classes of the supervised target problem.
    classes: usize,
    /// Fine-tuning iterations per soup ingredient (batch 64).
    finetune_iterations: usize,
    /// Soup ingredients (fine-tuned models).
    soup_models: usize,
    /// Student training iterations (batch 64).
    distill_iterations: usize,
    /// Filters of the student Conv4s.
    student_filters: usize,
    /// Episodes of the ProtoNet teacher and of each student.
    proto_iterations: usize,
    /// Test episodes per few-shot setting.
    test_episodes: usize,
    /// Target tasks per transfer point (head only / all layers).
    transfer_episodes_head: usize,
    transfer_episodes_all: usize,
    /// Fine-tuning steps at transfer (head only / all layers).
    transfer_steps_head: usize,
    transfer_steps_all: usize,
    /// Sinusoid meta-iterations of MAML, Reptile and iterated averaging.
    sinusoid_iterations: usize,
}

impl Budget {
    fn pick(args: &Args) -> Self {
        if args.quick {
            Self {
                name: "quick",
                pretrain_iterations: 60,
                classes: 20,
                finetune_iterations: 40,
                soup_models: 4,
                distill_iterations: 100,
                student_filters: 16,
                proto_iterations: 60,
                test_episodes: 30,
                transfer_episodes_head: 10,
                transfer_episodes_all: 3,
                transfer_steps_head: 100,
                transfer_steps_all: 20,
                sinusoid_iterations: 1000,
            }
        } else {
            Self {
                name: if args.full { "full" } else { "default" },
                pretrain_iterations: if args.full { 5000 } else { 300 },
                classes: 50,
                finetune_iterations: 150,
                soup_models: 6,
                distill_iterations: 500,
                student_filters: 16,
                proto_iterations: if args.full { 5000 } else { 300 },
                test_episodes: if args.full { 600 } else { 100 },
                transfer_episodes_head: 40,
                transfer_episodes_all: 10,
                transfer_steps_head: 100,
                transfer_steps_all: 30,
                sinusoid_iterations: 5000,
            }
        }
    }
}

#[derive(Serialize, Clone)]
struct ModelRow {
    name: String,
    parameters: usize,
    validation_accuracy: Option<f64>,
    test_accuracy: f64,
}

#[derive(Serialize, Clone)]
struct FewShotRow {
    name: String,
    parameters: usize,
    one_shot: Summary,
    five_shot: Summary,
}

#[derive(Serialize, Clone)]
struct TransferPoint {
    start: String,
    scope: String,
    shots: usize,
    accuracy: Summary,
}

#[derive(Serialize, Clone)]
struct SinusoidRow {
    name: String,
    iterations: usize,
    train_seconds: f64,
    mse_after_1: Summary,
    mse_after_10: Summary,
}

#[derive(Serialize)]
struct Results {
    suite: &'static str,
    backend: String,
    budget: Budget,
    seed: u64,
    pretrain_seconds: f64,
    averaging: Vec<ModelRow>,
    greedy_soup: GreedySoupSummary,
    distillation: Vec<ModelRow>,
    meta_distillation: Vec<FewShotRow>,
    transfer: Vec<TransferPoint>,
    iterated_averaging: Vec<SinusoidRow>,
}

fn conv4<B: Backend>(ways: usize, filters: usize, seed: u64) -> Result<Conv4<AB<B>>> {
    Ok(Conv4Config::new(ways)
        .with_filters(filters)
        .init::<AB<B>>(seed, &Default::default())?)
}

/// Accuracy of a classifier on a labelled batch.
fn score<B: Backend, M: MetaModule<B, 4>>(m: &M, batch: &HostBatch) -> Result<f64> {
    let x = batch.to_batch::<B, 4>(&Default::default())?;
    let labels = x.labels.unwrap_or_default();
    Ok(accuracy(m.forward(x.inputs), &labels))
}

fn ensemble_score<B: Backend, M: MetaModule<B, 4>>(
    e: &Ensemble<M>,
    batch: &HostBatch,
) -> Result<f64> {
    let x = batch.to_batch::<B, 4>(&Default::default())?;
    let labels = x.labels.unwrap_or_default();
    Ok(accuracy(e.probabilities(x.inputs)?, &labels))
}

/// Mean accuracy and CI after the last adaptation step on `n` test episodes.
fn few_shot<L: MetaLearner<4> + Sync>(
    learner: &L,
    data: &Data,
    shots: usize,
    n: usize,
    steps: usize,
    seed: SeedStream,
) -> Result<Summary> {
    let tasks = NWayKShot::new(
        data.test.clone(),
        NWayKShotConfig::new(5, shots, QUERY_PER_CLASS),
    )?;
    let c = meta_test_final(learner, &tasks, n, steps, seed)?;
    c.points
        .last()
        .and_then(|p| p.accuracy)
        .ok_or_else(|| anyhow::anyhow!("no accuracy in the test curve"))
}

fn pct(s: &Summary) -> String {
    format!("{:.1} ± {:.1}", 100.0 * s.mean, 100.0 * s.ci95)
}

/// Run the suite on backend `B`, write report files into `dir`, return the markdown.
pub fn run<B: Backend>(args: &Args, dir: &Path) -> Result<String> {
    let budget = Budget::pick(args);
    let data = load()?;
    let root = SeedStream::new(args.seed).named("update");
    let device = B::Device::default();
    let log =
        |what: &str, t: Instant| eprintln!("[update] {what}: {:.0} s", t.elapsed().as_secs_f64());

    // 1. Supervised pretraining on all meta-training classes: the "pretrained start".
    let t = Instant::now();
    let train_classes = metalearn_tasks::ClassDataset::num_classes(data.train.as_ref());
    let mut pre = FineTune::new(
        FineTuneConfig::new(),
        conv4::<B>(train_classes, 64, 1)?,
        device.clone(),
    )?;
    pre.meta_train(
        &ClassBatches::new(data.train.clone(), 64)?,
        budget.pretrain_iterations,
        root.named("pretrain"),
        &mut |_| true,
    )?;
    let pretrained: Conv4<AB<B>> = pre.model().clone();
    let pretrain_seconds = t.elapsed().as_secs_f64();
    log("pretraining", t);

    // 2. Model averaging on a supervised problem over held-out characters.
    let t = Instant::now();
    let chars: Vec<usize> = (0..budget.classes).map(|i| 4 * i).collect();
    let split = |r: std::ops::Range<usize>| InMemoryClasses::select(data.test.as_ref(), &chars, r);
    let train_split = Arc::new(split(0..10)?);
    let val = split(10..15)?.labelled_batch()?;
    let test = split(15..20)?.labelled_batch()?;
    let lrs = [5e-4, 1e-3, 2e-3];
    let mut models: Vec<Conv4<B>> = Vec::new();
    let mut averaging = Vec::new();
    for k in 0..budget.soup_models {
        let lr = lrs[k % lrs.len()];
        let mut ft = FineTune::new(
            FineTuneConfig::new().with_learning_rate(lr),
            pretrained.clone().with_new_head(budget.classes, 7)?,
            device.clone(),
        )?;
        ft.meta_train(
            &ClassBatches::new(train_split.clone(), 32)?,
            budget.finetune_iterations,
            root.named("finetune").child(k as u64),
            &mut |_| true,
        )?;
        let m = ft.model().valid();
        averaging.push(ModelRow {
            name: format!("fine-tuned #{k} (lr {lr}, seed {k})"),
            parameters: m.num_params(),
            validation_accuracy: Some(score::<B, _>(&m, &val)?),
            test_accuracy: score::<B, _>(&m, &test)?,
        });
        models.push(m);
    }
    let soup = uniform_soup(&models)?;
    averaging.push(ModelRow {
        name: "uniform soup".into(),
        parameters: soup.num_params(),
        validation_accuracy: Some(score::<B, _>(&soup, &val)?),
        test_accuracy: score::<B, _>(&soup, &test)?,
    });
    let greedy = greedy_soup(&models, |m| {
        score::<B, _>(m, &val).map_err(|e| metalearn_core::Error::config("held_out", e.to_string()))
    })?;
    averaging.push(ModelRow {
        name: format!("greedy soup (ingredients {:?})", greedy.ingredients),
        parameters: greedy.model.num_params(),
        validation_accuracy: Some(greedy.score),
        test_accuracy: score::<B, _>(&greedy.model, &test)?,
    });
    let ensemble = Ensemble::uniform(models.clone())?;
    let ensemble_params: usize = models.iter().map(Module::num_params).sum();
    averaging.push(ModelRow {
        name: format!("ensemble of {} (probabilities averaged)", models.len()),
        parameters: ensemble_params,
        validation_accuracy: Some(ensemble_score::<B, _>(&ensemble, &val)?),
        test_accuracy: ensemble_score::<B, _>(&ensemble, &test)?,
    });
    log("averaging", t);

    // 3. Distillation of the ensemble into a small Conv4, against the same student trained on
    // the labels alone (α = 0), same steps and batches.
    let t = Instant::now();
    let mut distillation = vec![
        averaging[averaging.len() - 1].clone(),
        ModelRow {
            name: "best single teacher".into(),
            ..averaging[..budget.soup_models]
                .iter()
                .max_by(|a, b| a.test_accuracy.total_cmp(&b.test_accuracy))
                .cloned()
                .ok_or_else(|| anyhow::anyhow!("no models"))?
        },
    ];
    distillation[0].name = "teacher: ensemble".into();
    for (name, alpha) in [
        ("student, labels only", 0.0),
        ("student, distilled (T = 4, α = 0.9)", 0.9),
    ] {
        let student = conv4::<B>(budget.classes, budget.student_filters, 5)?;
        let mut d = Distiller::new(
            DistillConfig::new().with_alpha(alpha),
            student,
            models.clone(),
            vec![1.0; models.len()],
            device.clone(),
        )?;
        d.fit(
            &ClassBatches::new(train_split.clone(), 32)?,
            budget.distill_iterations,
            root.named("distill"),
        )?;
        let s = d.student().valid();
        distillation.push(ModelRow {
            name: format!("{name}, Conv4-{}", budget.student_filters),
            parameters: s.num_params(),
            validation_accuracy: Some(score::<B, _>(&s, &val)?),
            test_accuracy: score::<B, _>(&s, &test)?,
        });
    }
    log("distillation", t);

    // 4. Meta-distillation: a ProtoNet teacher (Conv4-64) into a Conv4-16 student embedding.
    let t = Instant::now();
    let proto_train = NWayKShot::new(data.train.clone(), NWayKShotConfig::new(5, 5, 5))?;
    let mut teacher = ProtoNet::new(ProtoNetConfig::new(), conv4::<B>(1, 64, 1)?, device.clone())?;
    teacher.meta_train(
        &proto_train,
        budget.proto_iterations,
        root.named("proto"),
        &mut |_| true,
    )?;
    let test_seed = root.named("fewshot-test");
    let row =
        |name: String, params: usize, l: &dyn Fn(usize) -> Result<Summary>| -> Result<FewShotRow> {
            Ok(FewShotRow {
                name,
                parameters: params,
                one_shot: l(1)?,
                five_shot: l(5)?,
            })
        };
    let mut meta_distillation = vec![row(
        "teacher: ProtoNet Conv4-64".into(),
        teacher.model().num_params(),
        &|k| {
            few_shot(
                &teacher,
                &data,
                k,
                budget.test_episodes,
                0,
                test_seed.child(k as u64),
            )
        },
    )?];
    let mut student = ProtoNet::new(
        ProtoNetConfig::new(),
        conv4::<B>(1, budget.student_filters, 2)?,
        device.clone(),
    )?;
    student.meta_train(
        &proto_train,
        budget.proto_iterations,
        root.named("proto"),
        &mut |_| true,
    )?;
    meta_distillation.push(row(
        format!(
            "student ProtoNet Conv4-{}, labels only",
            budget.student_filters
        ),
        student.model().num_params(),
        &|k| {
            few_shot(
                &student,
                &data,
                k,
                budget.test_episodes,
                0,
                test_seed.child(k as u64),
            )
        },
    )?);
    let mut distilled = EpisodicDistiller::new(
        DistillConfig::new(),
        conv4::<B>(1, budget.student_filters, 2)?,
        teacher.model().valid(),
        1,
        device.clone(),
    )?;
    distilled.meta_train(
        &proto_train,
        budget.proto_iterations,
        root.named("proto"),
        &mut |_| true,
    )?;
    meta_distillation.push(row(
        format!("student Conv4-{}, meta-distilled", budget.student_filters),
        distilled.student().num_params(),
        &|k| {
            few_shot(
                &distilled,
                &data,
                k,
                budget.test_episodes,
                0,
                test_seed.child(k as u64),
            )
        },
    )?);
    log("meta-distillation", t);

    // 5. Transfer: random, supervised-pretrained and meta-learned starts; head only or all layers.
    let t = Instant::now();
    let starts: Vec<(&str, Conv4<AB<B>>)> = vec![
        ("random", conv4::<B>(1, 64, 3)?),
        ("pretrained (supervised)", pretrained.clone()),
        ("meta-learned (ProtoNet)", teacher.model().clone()),
    ];
    let shots = [1usize, 5, 10, 15];
    let mut transfer = Vec::new();
    for (start, body) in &starts {
        for (scope, freeze, steps, episodes) in [
            (
                "head only",
                true,
                budget.transfer_steps_head,
                budget.transfer_episodes_head,
            ),
            (
                "all layers",
                false,
                budget.transfer_steps_all,
                budget.transfer_episodes_all,
            ),
        ] {
            let tr = Transfer::<B, _, 4>::new(
                TransferConfig::new().with_freeze_body(freeze),
                body.clone(),
                device.clone(),
            )?;
            for &k in &shots {
                let tasks = NWayKShot::new(data.test.clone(), NWayKShotConfig::new(5, k, 5))?;
                let c = meta_test_final(
                    &tr,
                    &tasks,
                    episodes,
                    steps,
                    root.named("transfer").child(k as u64),
                )?;
                let acc = c
                    .points
                    .last()
                    .and_then(|p| p.accuracy)
                    .ok_or_else(|| anyhow::anyhow!("no accuracy"))?;
                eprintln!(
                    "[update] transfer {start}, {scope}, {k}-shot: {}",
                    pct(&acc)
                );
                transfer.push(TransferPoint {
                    start: start.to_string(),
                    scope: scope.to_string(),
                    shots: k,
                    accuracy: acc,
                });
            }
        }
    }
    log("transfer", t);

    // 6. Iterated averaging vs MAML and Reptile on the sinusoid family.
    let t = Instant::now();
    let iterated_averaging = sinusoid::<B>(&budget, args, &root)?;
    log("iterated averaging", t);

    let results = Results {
        suite: "update",
        backend: B::name(&device),
        budget,
        seed: args.seed,
        pretrain_seconds,
        averaging,
        greedy_soup: greedy.summary(),
        distillation,
        meta_distillation,
        transfer,
        iterated_averaging,
    };
    plot_transfer(&results, dir)?;
    crate::finish(dir, &results, report(&results))
}

fn sinusoid<B: Backend>(
    budget: &Budget,
    args: &Args,
    root: &SeedStream,
) -> Result<Vec<SinusoidRow>> {
    let device = B::Device::default();
    let tasks = Sinusoid::new(SinusoidConfig::new(10, 10))?;
    let test = Sinusoid::new(SinusoidConfig::new(10, 100))?;
    let mlp = || MlpConfig::new(vec![1, 40, 40, 1]).init::<AB<B>>(1, &device);
    let n_test = args.test_tasks.min(500);
    let mut rows = Vec::new();
    let mut record = |name: &str, l: &dyn MetaLearnerDyn, secs: f64| -> Result<()> {
        let c = l.test(&test, n_test, root.named("sinusoid-test"))?;
        let at = |s: usize| {
            c.at(s)
                .map(|p| p.loss)
                .ok_or_else(|| anyhow::anyhow!("no point"))
        };
        rows.push(SinusoidRow {
            name: name.into(),
            iterations: budget.sinusoid_iterations,
            train_seconds: secs,
            mse_after_1: at(1)?,
            mse_after_10: at(10)?,
        });
        Ok(())
    };
    let iters = budget.sinusoid_iterations;
    let seed = root.named("sinusoid");
    let t = Instant::now();
    let mut maml = BatchedMaml::new(
        MamlConfig::new().with_meta_batch_size(10),
        mlp()?,
        device.clone(),
    )?;
    maml.meta_train(&tasks, iters, seed, &mut |_| true)?;
    record(
        "MAML (α = 0.01, Adam β = 0.001)",
        &maml,
        t.elapsed().as_secs_f64(),
    )?;
    for (name, cfg) in [
        (
            "Reptile (5 SGD steps of 0.02, ε = 0.1)",
            ReptileConfig::new()
                .with_inner_lr(0.02)
                .with_meta_batch_size(10)
                .with_epsilon(0.1),
        ),
        (
            "iterated averaging (5 SGD steps of 0.02, ε = 1)",
            ReptileConfig::averaging(0.02, 5, 10),
        ),
    ] {
        let t = Instant::now();
        let mut l = Reptile::new(cfg, mlp()?, device.clone())?;
        l.meta_train(&tasks, iters, seed, &mut |_| true)?;
        record(name, &l, t.elapsed().as_secs_f64())?;
    }
    Ok(rows)
}

/// `meta_test` behind a trait object (the learners differ in type).
trait MetaLearnerDyn {
    fn test(
        &self,
        tasks: &dyn TaskDistribution,
        n: usize,
        seed: SeedStream,
    ) -> Result<metalearn_eval::StepsCurve>;
}

impl<L: MetaLearner<2> + Sync> MetaLearnerDyn for L {
    fn test(
        &self,
        tasks: &dyn TaskDistribution,
        n: usize,
        seed: SeedStream,
    ) -> Result<metalearn_eval::StepsCurve> {
        Ok(meta_test(self, tasks, n, 10, seed)?)
    }
}

fn plot_transfer(r: &Results, dir: &Path) -> Result<()> {
    let mut series: Vec<Series> = Vec::new();
    for p in &r.transfer {
        let label = format!("{}, {}", p.start, p.scope);
        let pos = series
            .iter()
            .position(|s| s.label == label)
            .unwrap_or_else(|| {
                series.push(Series {
                    label: label.clone(),
                    points: Vec::new(),
                    errors: Vec::new(),
                });
                series.len() - 1
            });
        series[pos]
            .points
            .push((p.shots as f64, 100.0 * p.accuracy.mean));
        series[pos].errors.push(100.0 * p.accuracy.ci95);
    }
    line_plot(
        &dir.join("transfer_sample_efficiency.svg"),
        "Transfer to held-out Omniglot characters (5-way): accuracy vs. examples per class",
        "examples per class",
        "accuracy (%)",
        &series,
        false,
    )?;
    Ok(())
}

fn model_table(md: &mut String, rows: &[ModelRow]) {
    let _ = writeln!(
        md,
        "| model | parameters | validation | test |\n|---|---|---|---|"
    );
    for m in rows {
        let _ = writeln!(
            md,
            "| {} | {} | {:.1} | {:.1} |",
            m.name,
            m.parameters,
            100.0 * m.validation_accuracy.unwrap_or(f64::NAN),
            100.0 * m.test_accuracy
        );
    }
}

fn report(r: &Results) -> String {
    let b = r.budget;
    let mut md = String::new();
    let _ = writeln!(
        md,
        "# Update-type family: averaging, distillation, transfer\n"
    );
    let _ = writeln!(
        md,
        "Backend `{}`, budget `{}`, seed {}. Pretrained start: Conv4-64 trained as a {}-iteration \
         supervised classifier on the 4400 meta-training classes ({:.0} s).\n",
        r.backend, b.name, r.seed, b.pretrain_iterations, r.pretrain_seconds
    );
    let _ = writeln!(md, "## Model averaging\n");
    let _ = writeln!(
        md,
        "{} held-out Omniglot characters, 10 drawings each for training, 5 for validation (soup \
         selection), 5 for test. Each model is the pretrained Conv4-64 with a new head (same \
         initial head for all), fine-tuned end to end for {} iterations (batch 64) with the \
         learning rate and seed shown. Accuracy in %.\n",
        b.classes, b.finetune_iterations
    );
    model_table(&mut md, &r.averaging);
    let _ = writeln!(md, "\n## Knowledge distillation\n");
    let _ = writeln!(
        md,
        "Teacher: the ensemble above. Students: Conv4-{} from random weights, {} iterations on \
         the same 10 drawings per class; labels only (α = 0) vs. Hinton et al.'s loss (T = 4, \
         α = 0.9). Accuracy in %.\n",
        b.student_filters, b.distill_iterations
    );
    model_table(&mut md, &r.distillation);
    let _ = writeln!(md, "\n## Meta-distillation (few-shot)\n");
    let _ = writeln!(
        md,
        "ProtoNet teacher and students trained for {} 5-way 5-shot episodes; the distilled \
         student matches the teacher's prototype classifier on each episode (T = 4, α = 0.9). \
         5-way accuracy (%) on held-out characters, {} episodes, {} queries per class, ± 95% CI.\n",
        b.proto_iterations, b.test_episodes, QUERY_PER_CLASS
    );
    let _ = writeln!(
        md,
        "| model | parameters | 1-shot | 5-shot | 1-shot kept |\n|---|---|---|---|---|"
    );
    let teacher = r
        .meta_distillation
        .first()
        .map_or(f64::NAN, |t| t.one_shot.mean);
    for m in &r.meta_distillation {
        let _ = writeln!(
            md,
            "| {} | {} | {} | {} | {:.0}% |",
            m.name,
            m.parameters,
            pct(&m.one_shot),
            pct(&m.five_shot),
            100.0 * m.one_shot.mean / teacher
        );
    }
    let _ = writeln!(md, "\n## Transfer (sample efficiency)\n");
    let _ = writeln!(
        md,
        "5-way tasks on held-out characters, 5 queries per class; a new zero head fine-tuned with \
         Adam ({} steps, head only; {} steps, all layers). Omniglot has 20 drawings per \
         character, so 15 is the largest number of examples per class that leaves queries. \
         Plot: `transfer_sample_efficiency.svg`. Accuracy in % ± 95% CI ({} / {} tasks).\n",
        b.transfer_steps_head,
        b.transfer_steps_all,
        b.transfer_episodes_head,
        b.transfer_episodes_all
    );
    let _ = writeln!(
        md,
        "| start | fine-tuned | 1 | 5 | 10 | 15 |\n|---|---|---|---|---|---|"
    );
    let mut keys: Vec<(String, String)> = Vec::new();
    for p in &r.transfer {
        let k = (p.start.clone(), p.scope.clone());
        if !keys.contains(&k) {
            keys.push(k);
        }
    }
    for (start, scope) in keys {
        let cells: Vec<String> = r
            .transfer
            .iter()
            .filter(|p| p.start == start && p.scope == scope)
            .map(|p| pct(&p.accuracy))
            .collect();
        let _ = writeln!(md, "| {start} | {scope} | {} |", cells.join(" | "));
    }
    let _ = writeln!(
        md,
        "\n## Iterated averaging vs. MAML and Reptile (sinusoid)\n"
    );
    let _ = writeln!(
        md,
        "{} meta-iterations, meta-batch 10, K = 10; post-adaptation MSE on fresh tasks (100 query \
         points) after 1 and 10 steps of each learner's own inner step size.\n",
        b.sinusoid_iterations
    );
    let _ = writeln!(
        md,
        "| learner | MSE after 1 step | after 10 steps | training time |\n|---|---|---|---|"
    );
    for s in &r.iterated_averaging {
        let _ = writeln!(
            md,
            "| {} | {:.3} ± {:.3} | {:.3} ± {:.3} | {:.0} s |",
            s.name,
            s.mse_after_1.mean,
            s.mse_after_1.ci95,
            s.mse_after_10.mean,
            s.mse_after_10.ci95,
            s.train_seconds
        );
    }
    let _ = writeln!(md, "\nRaw numbers: `results.json`.");
    md
}
