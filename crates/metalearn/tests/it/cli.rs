//! The `metalearn` command: experiment files, bad input, kill -9 and resume, eval.

#![allow(clippy::unwrap_used)] // test helpers fail loudly

use burn::backend::Autodiff;
use metalearn::core::backend::{BackendKind, NdArrayCpu};
use metalearn::core::DynLearner;
use metalearn::experiment::{claim_run_dir, Experiment, LearnerSpec, ModelSpec};
use metalearn::run::{eval, learner, read_result, train, training_learner, EvalOverrides};
use metalearn::train::files::list_checkpoints;
use metalearn::train::metrics::{read, Record};
use metalearn::train::{load_best, read_state, Progress, RunDir};
use metalearn::update::MamlPlusPlus;
use std::path::{Path, PathBuf};
use std::process::Command;
use toml::{Table, Value};

use crate::common;
use crate::common::{kill_when, spawn, temp};

fn experiments() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../experiments")
}

fn files() -> Vec<PathBuf> {
    let mut out = Vec::new();
    for sub in ["omniglot", "sinusoid", "dynamics", "folder"] {
        for e in std::fs::read_dir(experiments().join(sub)).unwrap() {
            let p = e.unwrap().path();
            if p.extension().is_some_and(|x| x == "toml") {
                out.push(p);
            }
        }
    }
    out.sort();
    out
}

/// `text` with `section.key = value` set.
fn set(text: &str, edits: &[(&str, &str, Value)]) -> String {
    let mut t: Table = toml::from_str(text).unwrap();
    for (section, key, v) in edits {
        t.entry(section.to_string())
            .or_insert_with(|| Value::Table(Table::new()))
            .as_table_mut()
            .unwrap()
            .insert(key.to_string(), v.clone());
    }
    toml::to_string(&t).unwrap()
}

/// `text` with the top-level `init` (a warm start) set to `dir`, replacing any it has.
fn with_init(text: &str, dir: &Path) -> String {
    let mut t: Table = toml::from_str(text).unwrap();
    t.insert("init".into(), Value::String(dir.display().to_string()));
    toml::to_string(&t).unwrap()
}

#[test]
fn every_experiment_file_parses_round_trips_and_runs() {
    let files = files();
    assert!(files.len() >= 12, "{files:?}");
    let images = temp("images");
    write_class_folders(&images, 6, 3);
    for f in files {
        let mut text = std::fs::read_to_string(&f).unwrap();
        if f.parent().unwrap().ends_with("folder") {
            // The example names the user's folder; here it is a small synthetic one.
            text = set(
                &text,
                &[
                    ("task", "path", Value::String(images.display().to_string())),
                    ("task", "image_size", Value::Integer(16)),
                    ("task", "val_fraction", Value::Float(0.34)),
                    ("task", "test_fraction", Value::Float(0.34)),
                    ("task", "ways", Value::Integer(2)),
                    ("task", "queries", Value::Integer(2)),
                    ("eval", "queries", Value::Integer(2)),
                ],
            );
        }
        let exp = Experiment::parse(&text, &f.display().to_string())
            .unwrap_or_else(|e| panic!("{}: {e}", f.display()));
        // TOML → config → TOML: the resolved file parses to the same experiment.
        let again = Experiment::parse(&exp.resolved_toml(), "resolved").unwrap();
        assert_eq!(again.resolved(), exp.resolved(), "{}", f.display());
        assert_eq!(again.resolved_toml(), exp.resolved_toml());
        // A few iterations of each, small.
        let classification = exp.task.is_classification();
        let omniglot = exp.resolved()["task"]["source"].as_str() == Some("omniglot");
        let mut edits = vec![
            ("budget", "iterations", Value::Integer(2)),
            ("budget", "val_episodes", Value::Integer(2)),
            ("budget", "validate_every", Value::Integer(2)),
            ("budget", "checkpoint_every", Value::Integer(1)),
            ("eval", "episodes", Value::Integer(2)),
        ];
        let kind = exp.learner_kind.clone();
        match kind.as_str() {
            "protonet" => {}
            "finetune" => {
                edits.push(("learner", "batch_size", Value::Integer(2)));
                edits.push(("learner", "batch", Value::Integer(4)));
                edits.push(("budget", "val_steps", Value::Integer(2)));
                edits.push(("eval", "steps", Value::Integer(2)));
            }
            _ => edits.push(("learner", "meta_batch_size", Value::Integer(2))),
        }
        if omniglot && (kind == "protonet" || kind == "distill") {
            edits.push(("task", "ways", Value::Integer(10)));
        }
        if kind == "reptile" {
            edits.push(("learner", "inner_steps", Value::Integer(2)));
            edits.push(("budget", "val_steps", Value::Integer(2)));
            edits.push(("eval", "steps", Value::Integer(2)));
        }
        // The Omniglot runs on burn-flex (Conv4 on burn-ndarray took ~10x longer, most of this
        // test's time); the small ones on burn-ndarray, so the command runs both CPU backends.
        let backend = if omniglot {
            BackendKind::Flex
        } else {
            BackendKind::Ndarray
        };
        let small = Experiment::parse(&set(&text, &edits), &f.display().to_string())
            .unwrap()
            .with_backend(backend);
        let dir = temp(&format!("run-{}", f.file_stem().unwrap().to_string_lossy()));
        let s =
            train(&small, &dir, Progress::Quiet).unwrap_or_else(|e| panic!("{}: {e}", f.display()));
        assert_eq!(s.iterations, 2);
        assert_eq!(s.state.validations.len(), 2, "at 0 and 2");
        for p in [
            "experiment.toml",
            "metrics.jsonl",
            "report.md",
            "best/model.mlstate",
        ] {
            assert!(dir.join(p).exists(), "{}: no {p}", f.display());
        }
        let r = eval(&dir, EvalOverrides::default()).unwrap();
        assert_eq!(r.episodes, 2);
        assert!(r.loss.is_finite());
        assert_eq!(r.accuracy.is_some(), classification);
        if kind == "finetune" {
            // The hand-written file leaves the head's size out; shipping beside it accepts it.
            let by_hand = temp("finetune-by-hand");
            std::fs::create_dir_all(&by_hand).unwrap();
            let written = format!("backend = \"{backend}\"\n{}", set(&text, &edits));
            std::fs::write(by_hand.join("experiment.toml"), written).unwrap();
            let shipped = metalearn::run::ship(&dir, &by_hand, None, &[])
                .unwrap_or_else(|e| panic!("{}: {e}", f.display()));
            // Same model, same episodes: the same accuracy, and the same loss up to f32
            // rounding (measured 1.2e-7 relative; before the burn-autodiff patch,
            // patches/README.md, other tests' backward passes moved it by ~2e-6).
            assert_eq!(shipped.test.accuracy, r.accuracy);
            assert!(
                (shipped.test.loss - r.loss).abs() <= 1e-6 * r.loss.abs(),
                "{r:?}"
            );
            std::fs::remove_dir_all(&by_hand).unwrap();
        }
        if omniglot && kind == "maml" {
            // A fixed 5-way head cannot be measured at 20 ways: a typed error naming it, before
            // the full test runs, and nothing shipped.
            let to = temp("maml-also-20");
            let e = metalearn::run::ship(&dir, &to, None, &[20])
                .unwrap_err()
                .to_string();
            assert!(e.contains("20-way"), "{e}");
            assert!(!to.join("RESULT.json").exists());
            let _ = std::fs::remove_dir_all(&to);
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }
    std::fs::remove_dir_all(&images).unwrap();
}

/// `classes` class folders of `per_class` RGB PNGs each (16×16; class c is a distinct colour
/// with per-image noise).
fn write_class_folders(root: &Path, classes: usize, per_class: usize) {
    for c in 0..classes {
        let dir = root.join(format!("class-{c:02}"));
        std::fs::create_dir_all(&dir).unwrap();
        for i in 0..per_class {
            let mut data = Vec::new();
            for p in 0..256usize {
                let noise = ((p * 31 + i * 17 + c * 7) % 23) as u8;
                data.extend([
                    (c * 40 % 256) as u8 ^ noise,
                    (c * 90 % 256) as u8,
                    255 - (c * 25) as u8,
                ]);
            }
            let mut out = Vec::new();
            {
                let mut e = png::Encoder::new(&mut out, 16, 16);
                e.set_color(png::ColorType::Rgb);
                e.set_depth(png::BitDepth::Eight);
                let mut w = e.write_header().unwrap();
                w.write_image_data(&data).unwrap();
            }
            std::fs::write(dir.join(format!("{i}.png")), out).unwrap();
        }
    }
}

fn int_array(v: &[i64]) -> Value {
    Value::Array(v.iter().map(|&i| Value::Integer(i)).collect())
}

fn shipped_protonet() -> String {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../models/omniglot/protonet-5way-1shot")
        .display()
        .to_string()
}

#[test]
fn a_distillation_student_trains_only_with_its_teacher() {
    let text = std::fs::read_to_string(experiments().join("omniglot/distill-5way-1shot.toml"))
        .unwrap()
        .replace("iterations = 6000", "iterations = 1");
    let exp = Experiment::parse(&text, "exp.toml").unwrap();
    match &exp.learner {
        metalearn::experiment::LearnerSpec::Distill { teacher, .. } => {
            assert!(teacher.dir.is_absolute());
            assert!(teacher.model.is_some(), "the shipped ProtoNet teaches");
        }
        other => panic!("{other:?}"),
    }
    assert!(exp.check_teacher().is_ok());
    // A run directory whose teacher is gone still parses (its student can be evaluated), but
    // does not train.
    let gone = text.replace(
        "../../models/omniglot/protonet-5way-1shot",
        "/nonexistent/teacher-run",
    );
    let exp = Experiment::parse(&gone, "exp.toml").unwrap();
    let e = exp.check_teacher().unwrap_err().to_string();
    assert!(
        e.contains("`learner.teacher`: /nonexistent/teacher-run has no best model"),
        "{e}"
    );
    let e = refused_before_writing(&exp, "distill-without-teacher");
    assert!(e.contains("train the teacher first"), "{e}");
}

/// `train`'s error for `exp` in a new run directory, which must not have been created.
fn refused_before_writing(exp: &Experiment, name: &str) -> String {
    let dir = temp(name);
    let e = train(exp, &dir, Progress::Quiet).unwrap_err().to_string();
    assert!(!dir.exists(), "nothing written before the check: {e}");
    e
}

#[test]
fn a_warm_start_begins_from_another_runs_best_model() {
    let from =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../models/omniglot/fomaml-20way-5shot");
    let shipped = metalearn::experiment::load_run_dir(&from).unwrap();
    // Second-order MAML from the shipped first-order model (a first-order warm-up).
    let body = set(
        &std::fs::read_to_string(from.join("experiment.toml")).unwrap(),
        &[
            ("learner", "kind", Value::String("maml".into())),
            ("learner", "second_order", Value::Boolean(true)),
        ],
    );
    let text = format!("init = {:?}\n{body}", from.display().to_string());
    let exp = Experiment::parse(&text, "exp.toml").unwrap();
    assert!(exp.init.as_ref().unwrap().is_absolute());
    exp.check_init().unwrap();
    let again = Experiment::parse(&exp.resolved_toml(), "resolved").unwrap();
    assert_eq!(
        again.resolved(),
        exp.resolved(),
        "the resolved file keeps `init`"
    );

    let warm = training_learner::<NdArrayCpu>(&exp).unwrap();
    let mut best = learner::<NdArrayCpu>(&shipped).unwrap();
    load_best(&RunDir::new(&from), best.as_mut()).unwrap();
    assert_eq!(
        warm.parameters(),
        best.parameters(),
        "the model is the shipped one"
    );
    assert_eq!(warm.iterations(), 0, "the iteration counter starts fresh");
    let cold = learner::<NdArrayCpu>(&exp).unwrap();
    assert_ne!(cold.parameters(), warm.parameters());
    // Without `init`, the same experiment starts from its seeded initialisation.
    let plain = Experiment::parse(&body, "exp.toml").unwrap();
    assert_eq!(
        training_learner::<NdArrayCpu>(&plain).unwrap().parameters(),
        cold.parameters()
    );

    // MAML++ (a learned batch-norm scale, per-step batch-norm copies) from the same first-order
    // model, whose record keeps γ = 1: the learner is built around the warm start, so the
    // per-step copies start at its batch-norm values, not at the seeded ones.
    let models = from.parent().unwrap();
    let pp_text = with_init(
        &std::fs::read_to_string(models.join("maml_pp-20way-1shot/experiment.toml")).unwrap(),
        &from,
    );
    let pp = Experiment::parse(&pp_text, "pp.toml").unwrap();
    pp.check_init().unwrap();
    let (ModelSpec::Conv4(c), LearnerSpec::MamlPlusPlus(l)) = (&pp.model, &pp.learner) else {
        panic!("a MAML++ experiment on Conv4")
    };
    assert!(c.bn_scale && !l.per_step_groups.is_empty());
    let expected = maml_pp_around_model_of(&pp, &from);
    assert_eq!(
        training_learner::<NdArrayCpu>(&pp).unwrap().parameters(),
        expected.parameters()
    );
    // The other way round (a learned scale dropped) would change the function: refused.
    let scaled = models.join("maml_pp-20way-1shot");
    let e = Experiment::parse(
        &format!("init = {:?}\n{body}", scaled.display().to_string()),
        "exp.toml",
    )
    .unwrap()
    .check_init()
    .unwrap_err()
    .to_string();
    assert!(e.contains("model.bn_scale differ"), "{e}");

    // Another model is refused, naming the keys.
    let other = set(&text, &[("model", "filters", Value::Integer(32))]);
    let e = Experiment::parse(&other, "exp.toml")
        .unwrap()
        .check_init()
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("`init`") && e.contains("model.filters differ"),
        "{e}"
    );
    // A missing run directory parses (a shipped run is evaluated without its warm start) but
    // does not train, and nothing is written.
    let gone = text.replace(&from.display().to_string(), "/nonexistent/warm-start");
    let exp = Experiment::parse(&gone, "exp.toml").unwrap();
    let e = exp.check_init().unwrap_err().to_string();
    assert!(
        e.contains("/nonexistent/warm-start has no best model"),
        "{e}"
    );
    let e = refused_before_writing(&exp, "warm-start-missing");
    assert!(e.contains("has no best model"), "{e}");
}

/// The MAML++ learner of `pp` built around the model alone (state part `model`) of the best
/// model in run directory `dir`: what a warm start from another learner gives.
fn maml_pp_around_model_of(pp: &Experiment, dir: &Path) -> Box<dyn metalearn::core::AnyLearner> {
    let (ModelSpec::Conv4(c), LearnerSpec::MamlPlusPlus(l)) = (&pp.model, &pp.learner) else {
        panic!("a MAML++ experiment on Conv4")
    };
    let device = Default::default();
    let model = metalearn::core::checkpoint::load_module_bytes::<Autodiff<NdArrayCpu>, _>(
        c.init(0, &device).unwrap(),
        read_state(&RunDir::new(dir).best_model())
            .unwrap()
            .part("model")
            .unwrap(),
        &device,
    )
    .unwrap();
    DynLearner::<_, 4>::boxed(
        MamlPlusPlus::<NdArrayCpu, _, 4>::new(l.clone(), model, device).unwrap(),
    )
}

/// `init` naming a run of the same learner continues what it learned besides the model:
/// MAML++'s learned inner rates and per-step batch-norm parameters, Reptile's carried inner
/// Adam; the iteration counter (and with it every schedule) starts at 0.
#[test]
fn a_warm_start_from_the_same_learner_continues_its_learned_parts() {
    let models = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../models/omniglot");
    let warm_from = |name: &str, edits: &[(&str, &str, Value)]| {
        let dir = models.join(name);
        let body = set(
            &std::fs::read_to_string(dir.join("experiment.toml")).unwrap(),
            edits,
        );
        let text = with_init(&body, &dir);
        let exp = Experiment::parse(&text, "warm.toml").unwrap();
        exp.check_init().unwrap();
        let shipped = metalearn::experiment::load_run_dir(&dir).unwrap();
        let mut best = learner::<NdArrayCpu>(&shipped).unwrap();
        load_best(&RunDir::new(&dir), best.as_mut()).unwrap();
        (exp, best)
    };

    let (pp, best) = warm_from("maml_pp-20way-1shot", &[]);
    let warm = training_learner::<NdArrayCpu>(&pp).unwrap();
    assert_eq!(
        warm.parameters(),
        best.parameters(),
        "model, learned rates and per-step batch-norm parameters are the shipped ones"
    );
    assert_eq!(warm.iterations(), 0, "the schedules start over");
    // Fresh optimisers: the same as a cold learner's.
    let (ws, cold) = (
        warm.state().unwrap(),
        learner::<NdArrayCpu>(&pp).unwrap().state().unwrap(),
    );
    for k in ws.parts.keys().filter(|k| k.starts_with("optim")) {
        assert!(ws.parts[k] == cold.parts[k], "{k} starts fresh");
    }
    // Not vacuous: the model alone (what a warm start from another learner carries) gives
    // the initial rates and copies, not the learned ones.
    let model_only = maml_pp_around_model_of(&pp, &models.join("maml_pp-20way-1shot"));
    assert_ne!(model_only.parameters(), warm.parameters());

    // Learned parts that do not fit (rates for 5 steps, 3 asked for): refused, naming the
    // warm start.
    let (fewer, _) = warm_from(
        "maml_pp-20way-1shot",
        &[("learner", "inner_steps", Value::Integer(3))],
    );
    let e = training_learner::<NdArrayCpu>(&fewer)
        .err()
        .expect("rates for 5 steps do not fit 3")
        .to_string();
    assert!(
        e.contains("maml_pp-20way-1shot") && e.contains("does not fit"),
        "{e}"
    );

    // Reptile continues its carried inner Adam (test-time adaptation starts from it too).
    let (reptile, best) = warm_from("reptile-20way-1shot", &[]);
    let warm = training_learner::<NdArrayCpu>(&reptile).unwrap();
    assert_eq!(warm.parameters(), best.parameters());
    assert_eq!(warm.iterations(), 0);
    let adam = |l: &dyn metalearn::core::AnyLearner| l.state().unwrap().parts["inner_adam"].clone();
    assert_eq!(adam(warm.as_ref()), adam(best.as_ref()));
    assert_ne!(
        adam(warm.as_ref()),
        adam(learner::<NdArrayCpu>(&reptile).unwrap().as_ref()),
        "not a fresh Adam"
    );
}

#[test]
fn a_warm_started_run_resumes_after_its_warm_start_moved() {
    let text = std::fs::read_to_string(experiments().join("sinusoid/maml.toml")).unwrap();
    let short = |iterations: i64| {
        set(
            &text,
            &[
                ("budget", "iterations", Value::Integer(iterations)),
                ("budget", "checkpoint_every", Value::Integer(5)),
                ("budget", "validate_every", Value::Integer(5)),
                ("budget", "val_episodes", Value::Integer(5)),
                ("learner", "meta_batch_size", Value::Integer(2)),
            ],
        )
    };
    let root = temp("warm-resume");
    let from = root.join("from");
    train(
        &Experiment::parse(&short(10), "from.toml").unwrap(),
        &from,
        Progress::Quiet,
    )
    .unwrap();
    let warm = |iterations: i64, init: &Path| {
        let text = format!(
            "init = {:?}\n{}",
            init.display().to_string(),
            short(iterations)
        );
        Experiment::parse(&text, "warm.toml").unwrap()
    };
    let run = root.join("warm");
    let first = train(&warm(10, &from), &run, Progress::Quiet).unwrap();
    assert_eq!((first.iterations, first.resumed_from), (10, None));
    // The warm start moves away: the run resumes from its checkpoint and trains on.
    let moved = root.join("moved");
    std::fs::rename(&from, &moved).unwrap();
    let longer = train(&warm(15, &from), &run, Progress::Quiet).unwrap();
    assert_eq!((longer.iterations, longer.resumed_from), (15, Some(10)));
    // It continued the warm-started run: the same as training it for 15 at once.
    let at_once = root.join("at-once");
    train(&warm(15, &moved), &at_once, Progress::Quiet).unwrap();
    let exp = warm(15, &moved);
    assert_eq!(parameters(&run, &exp).0, parameters(&at_once, &exp).0);
    // A run that has not started still needs its warm start.
    let e = refused_before_writing(&warm(15, &from), "warm-resume-new");
    assert!(e.contains("has no best model"), "{e}");
    std::fs::remove_dir_all(&root).unwrap();
}

fn error_of(text: &str) -> String {
    Experiment::parse(text, "exp.toml").unwrap_err().to_string()
}

#[test]
fn finetune_heads_are_sized_to_the_training_classes() {
    let text = "[task]\nsource = \"folder\"\npath = \"/\"\nways = 5\n[learner]\nkind = \"finetune\"\n[budget]\niterations = 1\n";
    let exp = Experiment::parse(text, "exp.toml").unwrap();
    // A placeholder until the data is known; the test protocol fits 100 head steps.
    assert_eq!(exp.eval.steps, 100);
    let sized = exp.clone().with_pretraining_classes(37);
    assert_eq!(sized.resolved()["model"]["ways"].as_integer(), Some(37));
    match &sized.model {
        metalearn::experiment::ModelSpec::Conv4(c) => assert_eq!(c.ways, 37),
        other => panic!("{other:?}"),
    }
    // The stored file parses back to the same head (its ways differ from the task's).
    let again = Experiment::parse(&sized.resolved_toml(), "stored").unwrap();
    assert_eq!(again.resolved(), sized.resolved());
    // Other learners keep the task's ways.
    let proto = Experiment::parse(&text.replace("finetune", "protonet"), "exp.toml").unwrap();
    let same = proto.clone().with_pretraining_classes(37);
    assert_eq!(same.resolved(), proto.resolved());
    assert!(Experiment::parse(
        &text
            .replace("[learner]", "[model]\nways = 3\n[learner]")
            .replace("finetune", "protonet"),
        "exp.toml"
    )
    .unwrap_err()
    .to_string()
    .contains("`model.ways`: is 3 but the task has 5 ways"));
}

#[test]
fn bad_experiment_files_name_the_key() {
    let good = std::fs::read_to_string(experiments().join("sinusoid/maml.toml")).unwrap();
    let dynamics = good.replace(
        "source = \"sinusoid\"\nk_shot = 10\nquery = 10",
        "source = \"dynamics\"",
    );
    let folder = "[task]\nsource = \"folder\"\npath = \"/\"\nways = 5\n[model]\n[learner]\nkind = \"protonet\"\n[budget]\niterations = 1\n".to_string();
    let cases: Vec<(String, &str)> = vec![
        ("seed = 1\n[task\n".to_string(), "exp.toml"),
        (
            set(&good, &[("learner", "inner_rl", Value::Float(0.1))]),
            "`learner.inner_rl`: unknown key",
        ),
        (
            set(
                &good,
                &[("learner", "inner_lr", Value::String("fast".into()))],
            ),
            "`learner.inner_lr`: must be a number, found string",
        ),
        (
            set(&good, &[("learner", "inner_lr", Value::Float(-1.0))]),
            "`learner.inner_lr`",
        ),
        (
            set(&good, &[("learner", "kind", Value::String("mamal".into()))]),
            "unknown learner `mamal`",
        ),
        (
            set(&good, &[("budget", "iterations", Value::Integer(0))]),
            "`budget.iterations`",
        ),
        (
            set(&good, &[("budget", "keep_last", Value::Integer(-3))]),
            "`budget.keep_last`",
        ),
        (
            set(&good, &[("budget", "sed", Value::Integer(3))]),
            "`budget.sed`: unknown key",
        ),
        (
            set(
                &good,
                &[("task", "source", Value::String("imagenet".into()))],
            ),
            "unknown task source",
        ),
        (
            set(&good, &[("task", "k_shot", Value::Integer(0))]),
            "`task.k_shot`",
        ),
        (
            set(
                &good,
                &[(
                    "model",
                    "widths",
                    Value::Array(vec![Value::String("a".into())]),
                )],
            ),
            "`model.widths`",
        ),
        (
            set(&good, &[("model", "kind", Value::String("conv4".into()))]),
            "`model.widths`: unknown key",
        ),
        (
            good.replace(
                "kind = \"mlp\"\nwidths = [1, 40, 40, 1]",
                "kind = \"conv4\"",
            ),
            "`model.kind`: `conv4` does not take",
        ),
        (
            set(
                &good,
                &[("learner", "kind", Value::String("protonet".into()))],
            ),
            "classification",
        ),
        (
            set(&good, &[("eval", "episodes", Value::Integer(0))]),
            "`eval.episodes`",
        ),
        (
            good.replace("seed = 1", "seed = 1\nbackend = \"tpu\""),
            "`backend`: unknown backend `tpu`",
        ),
        (
            good.replace("[budget]", "[budgets]"),
            "`budgets`: unknown key",
        ),
        (
            good.replace("iterations = 70000\n", ""),
            "`budget.iterations`: missing",
        ),
        (
            set(&good, &[("model", "widths", int_array(&[2, 40, 1]))]),
            "`model.widths`: start with 1 and end with 1",
        ),
        (dynamics.clone(), "`task.family`: missing"),
        (
            set(
                &dynamics,
                &[("task", "family", Value::String("Pendulumm".into()))],
            ),
            "`task.family`: unknown family",
        ),
        (
            set(
                &dynamics,
                &[("task", "family", Value::String("pendulum".into()))],
            ),
            "`model.widths`: start with 2 and end with 2",
        ),
        (
            set(
                &dynamics,
                &[
                    ("task", "family", Value::String("oscillator".into())),
                    ("task", "ranges", Value::Array(vec![int_array(&[1, 2])])),
                ],
            ),
            "`task.ranges`",
        ),
        (folder.replace("path = \"/\"\n", ""), "`task.path`: missing"),
        (
            folder.replace("path = \"/\"", "path = \"no/such/folder\""),
            "`task.path`: no/such/folder",
        ),
        (
            folder.replace("[task]", "[task]\nsplit = \"folders\""),
            "`task.path`: /train is not a folder",
        ),
        (
            folder.replace("[task]", "[task]\ntest_fraction = 0.9"),
            "`task.test_fraction`: val_fraction + test_fraction",
        ),
        (
            folder.replace("[model]", "[model]\nin_channels = 1"),
            "`model.in_channels`: is 1 but the task's images have 3",
        ),
        (
            set(
                &good,
                &[("learner", "kind", Value::String("finetune".into()))],
            ),
            "`learner.kind`: finetune needs a classification task",
        ),
        (
            folder.replace("kind = \"protonet\"", "kind = \"finetune\"\nbatch = 0"),
            "`learner.batch`: must be at least 1",
        ),
        (
            folder.replace("kind = \"protonet\"", "kind = \"distill\""),
            "`learner.teacher`: missing",
        ),
        (
            folder.replace(
                "kind = \"protonet\"",
                "kind = \"distill\"\nteacher = \"/\"\nalpha = 2.0",
            ),
            "`learner.alpha`",
        ),
        (
            // The shipped ProtoNet saw 1×28×28 Omniglot images; this folder task has 3×84×84.
            folder.replace(
                "kind = \"protonet\"",
                &format!("kind = \"distill\"\nteacher = {:?}", shipped_protonet()),
            ),
            "`learner.teacher`: the teacher was trained on 1×28×28 images, this task has \
             3×84×84 images",
        ),
        (
            set(
                &good,
                &[("learner", "kind", Value::String("distill".into()))],
            ),
            "`learner.kind`: distill needs a classification task",
        ),
        (
            format!("{good}\n[validation]\nways = 5\n"),
            "`validation`: only image tasks",
        ),
        (
            format!("{folder}[validation]\nways = 0\n"),
            "`validation.ways`: must be at least 1",
        ),
        (
            format!("{folder}[validation]\nway = 5\n"),
            "`validation.way`: unknown key",
        ),
        (
            format!("{folder}[validation]\nways = 20\n")
                .replace("kind = \"protonet\"", "kind = \"maml\""),
            "`validation.ways`: the model's head has 5 classes",
        ),
    ];
    for (text, expected) in cases {
        let e = error_of(&text);
        assert!(e.contains("exp.toml"), "no file name in: {e}");
        assert!(
            e.contains(expected),
            "expected `{expected}` in: {e}\n---\n{text}"
        );
    }
}

/// `[validation]` sets the validation episodes' shape (here 2-way 1-shot with 2 queries for a
/// ProtoNet trained on 3-way 2-shot episodes), is recorded, and cannot be added to a run.
#[test]
fn validation_episodes_take_the_shape_of_the_validation_section() {
    let images = temp("validation-images");
    write_class_folders(&images, 12, 4);
    let text = format!(
        "seed = 3\n[task]\nsource = \"folder\"\npath = {:?}\nimage_size = 16\n\
         val_fraction = 0.34\ntest_fraction = 0.34\nways = 3\nshots = 2\nqueries = 1\n\
         [learner]\nkind = \"protonet\"\n[budget]\niterations = 1\n[eval]\nqueries = 2\n",
        images.display().to_string()
    );
    let with = format!("{text}[validation]\nways = 2\nshots = 1\nqueries = 2\n");
    let plain = Experiment::parse(&text, "exp.toml").unwrap();
    let exp = Experiment::parse(&with, "exp.toml").unwrap();
    assert_eq!(plain.validation, None);
    assert!(!plain.resolved().contains_key("validation"));
    assert_eq!(
        Experiment::parse(&exp.resolved_toml(), "resolved")
            .unwrap()
            .resolved(),
        exp.resolved()
    );
    let shape = |e: &Experiment| {
        let tasks = metalearn::run::tasks(e).unwrap();
        let [train, val] = [&tasks.train, &tasks.val].map(|t| {
            let ep = t.sample(7).unwrap();
            (ep.support.input_shape[0], ep.query.input_shape[0])
        });
        (train, val)
    };
    // (support, query) rows: ways × shots and ways × queries.
    assert_eq!(shape(&plain), ((6, 3), (6, 3)));
    assert_eq!(shape(&exp), ((6, 3), (2, 4)));
    // A run directory keeps the shape it validated with.
    let dir = temp("validation-run");
    claim_run_dir(&plain, &dir).unwrap();
    let e = claim_run_dir(&exp, &dir).unwrap_err().to_string();
    assert!(e.contains("validation"), "{e}");
    std::fs::remove_dir_all(&dir).unwrap();
    std::fs::remove_dir_all(&images).unwrap();
}

#[test]
fn a_different_experiment_is_refused_for_an_existing_run_dir() {
    let text = std::fs::read_to_string(experiments().join("sinusoid/maml.toml")).unwrap();
    let with =
        |edits: &[(&str, &str, Value)]| Experiment::parse(&set(&text, edits), "exp").unwrap();
    let a = with(&[]);
    let b = with(&[
        ("learner", "inner_lr", Value::Float(0.02)),
        ("budget", "patience", Value::Integer(3)),
    ]);
    let dir = temp("differs");
    claim_run_dir(&a, &dir).unwrap();
    claim_run_dir(&a, &dir).unwrap();
    let e = claim_run_dir(&b, &dir).unwrap_err().to_string();
    assert!(e.contains("budget.patience, learner.inner_lr"), "{e}");
    // A longer budget and another test protocol continue the run, and are recorded.
    let longer = with(&[
        ("budget", "iterations", Value::Integer(123_456)),
        ("eval", "episodes", Value::Integer(17)),
        ("learner", "threads", Value::Integer(3)),
    ]);
    claim_run_dir(&longer, &dir).unwrap();
    let recorded = metalearn::experiment::load_run_dir(&dir).unwrap();
    assert_eq!(recorded.budget.iterations, 123_456);
    assert_eq!(recorded.eval.episodes, 17);
    assert_eq!(
        recorded.resolved()["learner"]["threads"].as_integer(),
        Some(3)
    );
    // …but not together with a key that changes the training.
    let e = claim_run_dir(&b, &dir).unwrap_err().to_string();
    assert!(
        e.contains("(keys that differ: budget.patience, learner.inner_lr)"),
        "{e}"
    );
    // A run directory written before a setting existed (the stored file lacks the key, whose
    // default this version fills in) resumes, and the file is rewritten with the key.
    let stored = dir.join("experiment.toml");
    let mut old: Table = toml::from_str(&std::fs::read_to_string(&stored).unwrap()).unwrap();
    let learner = old["learner"].as_table_mut().unwrap();
    assert!(learner.remove("transductive").is_some());
    std::fs::write(&stored, toml::to_string(&old).unwrap()).unwrap();
    claim_run_dir(&longer, &dir).unwrap();
    let rewritten: Table = toml::from_str(&std::fs::read_to_string(&stored).unwrap()).unwrap();
    assert_eq!(&rewritten, longer.resolved());
    // The same file with another value of that key is still refused.
    let e = claim_run_dir(
        &with(&[
            ("budget", "iterations", Value::Integer(123_456)),
            ("learner", "transductive", Value::Boolean(false)),
        ]),
        &dir,
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("learner.transductive"), "{e}");
    std::fs::remove_dir_all(&dir).unwrap();
}

fn strip_times(records: Vec<Record>) -> Vec<Record> {
    records.into_iter().map(Record::without_times).collect()
}

fn run_to_end(exp: &Path, dir: &Path) {
    common::run_to_end("train", exp, dir);
}

/// Parameters of the newest checkpoint and of the best model.
fn parameters(dir: &Path, exp: &Experiment) -> (Vec<f64>, Vec<f64>) {
    let run = RunDir::new(dir);
    let newest = &list_checkpoints(&run.checkpoints()).unwrap()[0].1;
    let mut l = learner::<NdArrayCpu>(exp).unwrap();
    l.load_state(&read_state(newest).unwrap()).unwrap();
    let mut b = learner::<NdArrayCpu>(exp).unwrap();
    b.load_state(&read_state(&run.best_model()).unwrap())
        .unwrap();
    (l.parameters(), b.parameters())
}

#[test]
fn kill_9_then_the_same_command_gives_the_uninterrupted_result() {
    let text = std::fs::read_to_string(experiments().join("sinusoid/maml.toml")).unwrap();
    let text = set(
        &text,
        &[
            ("budget", "iterations", Value::Integer(400)),
            ("budget", "checkpoint_every", Value::Integer(20)),
            ("budget", "validate_every", Value::Integer(50)),
            ("budget", "val_episodes", Value::Integer(10)),
            ("learner", "meta_batch_size", Value::Integer(5)),
        ],
    );
    let root = temp("kill");
    std::fs::create_dir_all(&root).unwrap();
    let file = root.join("exp.toml");
    std::fs::write(&file, &text).unwrap();
    let exp = Experiment::load(&file).unwrap();

    let reference = root.join("reference");
    run_to_end(&file, &reference);

    let killed = root.join("killed");
    let mut child = spawn("train", &file, &killed);
    let ckpts = killed.join("checkpoints");
    let newest = || {
        list_checkpoints(&ckpts)
            .ok()
            .and_then(|c| c.first().map(|c| c.0))
    };
    kill_when(
        &mut child,
        || newest().is_some_and(|n| n >= 60),
        "a checkpoint at iteration 60",
    );
    let done_at_kill = read(&killed.join("metrics.jsonl")).unwrap().len();
    let newest_at_kill = newest().unwrap();
    // Resume with a shorter budget first, then extend it to the reference's: training a run
    // longer is the same as having asked for the longer budget at the start. The shorter leg
    // runs the meta-batch on one lane (the others on one per core): the numbers are the same.
    let shorter = root.join("shorter.toml");
    std::fs::write(
        &shorter,
        set(
            &text,
            &[
                ("budget", "iterations", Value::Integer(200)),
                ("learner", "threads", Value::Integer(1)),
            ],
        ),
    )
    .unwrap();
    run_to_end(&shorter, &killed);
    assert_eq!(newest(), Some(newest_at_kill.max(200)));
    run_to_end(&file, &killed);
    assert!(done_at_kill > 0);

    assert_eq!(
        strip_times(read(&reference.join("metrics.jsonl")).unwrap()),
        strip_times(read(&killed.join("metrics.jsonl")).unwrap()),
        "metrics differ after kill -9 and resume"
    );
    let (p_ref, best_ref) = parameters(&reference, &exp);
    let (p_res, best_res) = parameters(&killed, &exp);
    assert_eq!(p_ref, p_res, "final parameters differ");
    assert_eq!(best_ref, best_res, "best models differ");

    // eval re-measures the same number twice, as text and JSON.
    let out = common::run_ok([
        "eval".as_ref(),
        "--episodes".as_ref(),
        "20".as_ref(),
        "--json".as_ref(),
        "--run-dir".as_ref(),
        killed.as_os_str(),
    ]);
    let j: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let r = eval(
        &killed,
        EvalOverrides {
            episodes: Some(20),
            ..Default::default()
        },
    )
    .unwrap();
    assert_eq!(j["loss"].as_f64(), Some(r.loss));
    // Meta-training helped: the meta-learned init adapts better than chance level (a sine's
    // mean square is A²/2 ≈ 4.3 for A ~ U[0.1, 5]).
    assert!(r.loss < 2.0, "{r:?}");
    // --curve scores the same episodes after 0..=steps steps: its last point is the number
    // above, and adapting helps (the meta-learned init alone does not fit a new sine).
    let c = eval(
        &killed,
        EvalOverrides {
            episodes: Some(20),
            curve: true,
            ..Default::default()
        },
    )
    .unwrap();
    assert_eq!(c.curve.len(), r.steps + 1, "{:?}", c.curve);
    let last = c.curve.last().unwrap();
    assert!(
        (last.loss - r.loss).abs() <= 1e-6 * r.loss.abs().max(1.0),
        "{last:?} vs {r:?}"
    );
    assert!(c.curve[0].loss > last.loss, "{:?}", c.curve);
    assert_eq!(c.curve_table().lines().count(), r.steps + 1);

    // Shipping: the shipped directory alone re-measures RESULT.json's number.
    let shipped = root.join("shipped");
    common::run_ok([
        "ship".as_ref(),
        "--run-dir".as_ref(),
        killed.as_os_str(),
        "--to".as_ref(),
        shipped.as_os_str(),
    ]);
    let result = read_result(&shipped).unwrap();
    assert_eq!(result.iterations_trained, 400);
    assert_eq!(result.seed, exp.seed);
    assert!(result.training_seconds > 0.0 && result.seconds_to_model <= result.training_seconds);
    assert_eq!(result.test.episodes, exp.eval.episodes);
    let again = eval(&shipped, EvalOverrides::default()).unwrap();
    assert_eq!(again, result.test);
    for f in ["best/model.mlstate", "report.md", "learning_curve.svg"] {
        assert!(shipped.join(f).is_file(), "{f} not shipped");
    }
    assert!(!shipped.join("checkpoints").exists());
    // Into a directory holding the hand-written experiment file: the file stays as written;
    // a different experiment there is refused, naming the key.
    let by_hand = root.join("by-hand");
    std::fs::create_dir_all(&by_hand).unwrap();
    std::fs::write(by_hand.join("experiment.toml"), &text).unwrap();
    let r = metalearn::run::ship(&killed, &by_hand, None, &[]).unwrap();
    assert_eq!(r.test, result.test);
    assert_eq!(
        std::fs::read_to_string(by_hand.join("experiment.toml")).unwrap(),
        text
    );
    std::fs::write(
        by_hand.join("experiment.toml"),
        set(&text, &[("learner", "inner_lr", Value::Float(0.5))]),
    )
    .unwrap();
    let e = metalearn::run::ship(&killed, &by_hand, None, &[])
        .unwrap_err()
        .to_string();
    assert!(e.contains("learner.inner_lr"), "{e}");
    std::fs::remove_dir_all(&root).unwrap();
}

#[test]
fn the_command_reports_errors_without_panicking() {
    let root = temp("errors");
    std::fs::create_dir_all(&root).unwrap();
    let bad = root.join("bad.toml");
    std::fs::write(&bad, "[learner]\nkind = \"maml\"\ninner_lr = \"x\"\n").unwrap();
    for args in [
        vec![
            "train".to_string(),
            bad.display().to_string(),
            "--run-dir".into(),
            root.join("r").display().to_string(),
        ],
        vec![
            "train".to_string(),
            root.join("missing.toml").display().to_string(),
            "--run-dir".into(),
            root.join("r").display().to_string(),
        ],
        vec![
            "eval".to_string(),
            "--run-dir".into(),
            root.join("nothing").display().to_string(),
        ],
    ] {
        let out = Command::new(env!("CARGO_BIN_EXE_metalearn"))
            .args(&args)
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {err}");
        assert!(err.starts_with("error: "), "{err}");
        assert!(!err.contains("panicked"), "{err}");
    }
    std::fs::remove_dir_all(&root).unwrap();
}
