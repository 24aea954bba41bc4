//! Resume after an interruption gives the same parameters and metrics as a run that never
//! stopped; a corrupt checkpoint is skipped with a warning naming it.

#![allow(clippy::unwrap_used)] // test helpers fail loudly

use burn::backend::Autodiff;
use metalearn_core::backend::NdArrayCpu;
use metalearn_core::episode::EpisodeData;
use metalearn_core::{AnyLearner, DynLearner, TaskDistribution};
use metalearn_tasks::{Sinusoid, SinusoidConfig};
use metalearn_train::files::list_checkpoints;
use metalearn_train::metrics::{read, Record};
use metalearn_train::{read_state, write_report, Progress, RunDir, Trainer, TrainerConfig};
use metalearn_update::{Maml, MamlConfig, MetaSgd};
use metalearn_zoo::MlpConfig;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};

fn dir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("ml-train-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    d
}

fn learner(kind: &str) -> Box<dyn AnyLearner> {
    let device = Default::default();
    let model = MlpConfig::new(vec![1, 16, 16, 1])
        .init::<Autodiff<NdArrayCpu>>(3, &device)
        .unwrap();
    let cfg = MamlConfig::new().with_meta_batch_size(3).with_threads(1);
    match kind {
        "maml" => DynLearner::<_, 2>::boxed(Maml::new(cfg, model, device).unwrap()),
        _ => DynLearner::<_, 2>::boxed(MetaSgd::new(cfg, model, device).unwrap()),
    }
}

/// Tasks that fail after `left` samples: a crash in the middle of a run.
struct Crashing {
    inner: Sinusoid,
    left: AtomicUsize,
}

impl TaskDistribution for Crashing {
    fn sample(&self, seed: u64) -> metalearn_core::Result<EpisodeData> {
        if self.left.fetch_sub(1, Ordering::SeqCst) == 0 {
            return Err(metalearn_core::Error::Unsatisfiable(
                "simulated crash".into(),
            ));
        }
        self.inner.sample(seed)
    }

    fn kind(&self) -> metalearn_core::TaskKind {
        self.inner.kind()
    }
}

fn config() -> TrainerConfig {
    TrainerConfig::new(12)
        .with_validate_every(4)
        .with_checkpoint_every(4)
        .with_val_episodes(4)
        .with_val_steps(2)
        .with_keep_last(2)
        .with_seed(7)
}

/// Metrics without wall times.
fn metrics(run: &RunDir) -> Vec<Record> {
    read(&run.metrics())
        .unwrap()
        .into_iter()
        .map(Record::without_times)
        .collect()
}

fn final_parameters(run: &RunDir, kind: &str) -> (Vec<f64>, Vec<f64>) {
    let newest = &list_checkpoints(&run.checkpoints()).unwrap()[0].1;
    let mut l = learner(kind);
    l.load_state(&read_state(newest).unwrap()).unwrap();
    let mut b = learner(kind);
    b.load_state(&read_state(&run.best_model()).unwrap())
        .unwrap();
    (l.parameters(), b.parameters())
}

#[test]
fn resume_after_a_crash_is_bit_identical() {
    let tasks = Sinusoid::new(SinusoidConfig::new(5, 5)).unwrap();
    for kind in ["maml", "meta_sgd"] {
        let a = RunDir::new(dir(&format!("a-{kind}")));
        let trainer = Trainer::new(config(), a.clone())
            .unwrap()
            .with_progress(Progress::Quiet);
        let sa = trainer.fit(learner(kind).as_mut(), &tasks, &tasks).unwrap();
        assert_eq!(sa.iterations, 12);
        assert_eq!(sa.state.validations.len(), 4, "{:?}", sa.state);

        // Crash during iteration 6 (3 tasks per iteration): the last checkpoint is at 4.
        let b = RunDir::new(dir(&format!("b-{kind}")));
        let tb = Trainer::new(config(), b.clone())
            .unwrap()
            .with_progress(Progress::Quiet);
        let crashing = Crashing {
            inner: tasks.clone(),
            left: AtomicUsize::new(3 * 6 + 1),
        };
        let err = tb
            .fit(learner(kind).as_mut(), &crashing, &tasks)
            .unwrap_err();
        assert!(err.to_string().contains("simulated crash"), "{err}");
        let sb = tb.fit(learner(kind).as_mut(), &tasks, &tasks).unwrap();
        assert_eq!(sb.resumed_from, Some(4));
        assert!(sb.warnings.is_empty(), "{:?}", sb.warnings);
        assert_eq!(sb.state.validations, sa.state.validations);
        assert_eq!(metrics(&a), metrics(&b), "{kind}: metrics differ");
        let (pa, ba) = final_parameters(&a, kind);
        let (pb, bb) = final_parameters(&b, kind);
        assert_eq!(pa, pb, "{kind}: final parameters differ");
        assert_eq!(ba, bb, "{kind}: best models differ");
        // Parameters moved during training (the comparison is not vacuous).
        assert_ne!(pa, learner(kind).parameters());
        let report = write_report(&b, "test").unwrap();
        let md = std::fs::read_to_string(report).unwrap();
        assert!(md.contains("12 meta-iterations"), "{md}");
        assert!(b.root().join("learning_curve.svg").exists());
        for d in [a, b] {
            std::fs::remove_dir_all(d.root()).unwrap();
        }
    }
}

#[test]
fn corrupt_checkpoints_are_skipped_with_a_warning() {
    let tasks = Sinusoid::new(SinusoidConfig::new(5, 5)).unwrap();
    let run = RunDir::new(dir("corrupt"));
    let t = Trainer::new(config().with_keep_last(3), run.clone())
        .unwrap()
        .with_progress(Progress::Quiet);
    let full = t.fit(learner("maml").as_mut(), &tasks, &tasks).unwrap();
    let (p_full, _) = final_parameters(&run, "maml");
    let ckpts = list_checkpoints(&run.checkpoints()).unwrap();
    assert_eq!(
        ckpts.iter().map(|c| c.0).collect::<Vec<_>>(),
        [12, 8, 4],
        "the last 3 are kept"
    );
    // Flip a bit in the newest, truncate the next one: the run falls back to iteration 4.
    let mut bytes = std::fs::read(&ckpts[0].1).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 1;
    std::fs::write(&ckpts[0].1, bytes).unwrap();
    let bytes = std::fs::read(&ckpts[1].1).unwrap();
    std::fs::write(&ckpts[1].1, &bytes[..bytes.len() - 10]).unwrap();
    let resumed = t.fit(learner("maml").as_mut(), &tasks, &tasks).unwrap();
    assert_eq!(resumed.resumed_from, Some(4));
    assert_eq!(resumed.warnings.len(), 2, "{:?}", resumed.warnings);
    assert!(
        resumed.warnings[0].contains("ckpt-000000012"),
        "{:?}",
        resumed.warnings
    );
    assert!(
        resumed.warnings[0].contains("checksum"),
        "{:?}",
        resumed.warnings
    );
    assert!(
        resumed.warnings[1].contains("ckpt-000000008"),
        "{:?}",
        resumed.warnings
    );
    assert_eq!(resumed.state.validations, full.state.validations);
    let (p, _) = final_parameters(&run, "maml");
    assert_eq!(p, p_full);
    std::fs::remove_dir_all(run.root()).unwrap();
}

#[test]
fn early_stopping_and_a_finished_run() {
    let tasks = Sinusoid::new(SinusoidConfig::new(5, 5)).unwrap();
    let run = RunDir::new(dir("early"));
    // Patience 1 with a validation every iteration: whether the run stops depends on the
    // numbers, so check the rule in both cases.
    let t = Trainer::new(
        TrainerConfig {
            iterations: 40,
            ..config()
        }
        .with_validate_every(1)
        .with_patience(1),
        run.clone(),
    )
    .unwrap()
    .with_progress(Progress::Quiet);
    let s = t.fit(learner("maml").as_mut(), &tasks, &tasks).unwrap();
    let v = &s.state.validations;
    if s.state.stopped_early {
        // Stopped at the first validation that did not improve on the best.
        let last = v[v.len() - 1];
        let best = s.state.best.unwrap();
        assert!(last.mean >= best.mean && last.iteration > best.iteration);
        assert_eq!(s.iterations, last.iteration);
        assert!(s.iterations < 40);
    } else {
        // Every validation improved.
        assert!(v.windows(2).all(|w| w[1].mean < w[0].mean), "{v:?}");
    }
    // Running a finished (or stopped) run again does nothing more.
    let again = t.fit(learner("maml").as_mut(), &tasks, &tasks).unwrap();
    assert_eq!(again.iterations, s.iterations);
    assert_eq!(again.state, s.state);
    std::fs::remove_dir_all(run.root()).unwrap();
}
