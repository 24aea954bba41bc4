//! The meta-trained models shipped under `models/`: each loads from its directory alone
//! (experiment file, `best/`), is under 1 MB, and a short evaluation on the meta-test tasks (the
//! first 25 of the recorded episodes) lands within three standard deviations of a 25-episode
//! subset mean around the accuracy its `RESULT.json` records. Reads Omniglot from `METALEARN_DATA`
//! (CI: `../shared/data`); skipped loudly without it.

#![allow(clippy::unwrap_used)] // test helpers fail loudly

use metalearn::run::{eval, read_result, EvalOverrides};
use std::path::{Path, PathBuf};

/// Every directory under `models/` holding a `RESULT.json`.
fn shipped() -> Vec<PathBuf> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../models");
    let mut out = Vec::new();
    let mut stack = vec![root];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else if p.file_name().is_some_and(|n| n == "RESULT.json") {
                out.push(d.clone());
            }
        }
    }
    out.sort();
    out
}

/// Episodes of each short evaluation: the first of the recorded ones. 25 keeps the test at
/// ~2.5 minutes of one core for a dozen settings (50 took 5; the 20-way and many-step ones
/// cost most), while a broken model (chance: 20% / 5%) still fails by tens of deviations.
const EPISODES: usize = 25;

#[test]
fn shipped_models_load_and_reproduce_their_accuracy() {
    let models: Vec<_> = shipped()
        .into_iter()
        .map(|d| {
            let r = read_result(&d).unwrap();
            (d, r)
        })
        .collect();
    assert!(!models.is_empty(), "no RESULT.json under models/");
    for (dir, r) in &models {
        let size = std::fs::metadata(dir.join("best/model.mlstate"))
            .unwrap()
            .len();
        assert!(size < 1 << 20, "{}: model is {size} bytes", dir.display());
        for t in std::iter::once(&r.test).chain(&r.also) {
            assert!(t.episodes >= 600, "{}", dir.display());
            assert_eq!(t.queries, 15, "{}: the papers' 15 queries", dir.display());
        }
    }
    if std::env::var_os("METALEARN_DATA").is_none() {
        eprintln!(
            "\n!!!!! SKIPPED: METALEARN_DATA is not set; shipped models not evaluated !!!!!\n"
        );
        return;
    }
    for (dir, r) in &models {
        // The recorded setting, then every further one RESULT.json records (`also`).
        for (i, want) in std::iter::once(&r.test).chain(&r.also).enumerate() {
            let started = std::time::Instant::now();
            let short = eval(
                dir,
                EvalOverrides {
                    episodes: Some(EPISODES),
                    ways: (i > 0).then_some(want.ways),
                    ..Default::default()
                },
            )
            .unwrap();
            eprintln!(
                "{} ({}-way): {:.2}% in {:.1} s",
                dir.display(),
                want.ways,
                100.0 * short.accuracy.unwrap_or(f64::NAN),
                started.elapsed().as_secs_f64()
            );
            assert_eq!(
                (short.ways, short.shots, short.queries),
                (want.ways, want.shots, want.queries),
                "{}",
                dir.display()
            );
            // The first 25 of the recorded episodes (same seeds): a subset mean of n = 25 out of
            // N deviates from the full mean with standard deviation σ·√(1/n − 1/N), σ the
            // per-episode spread recorded by the full run (its CI is 1.96·σ/√N). Allowed: three
            // such deviations. (Near 100% a 25-episode CI of its own is too narrow to judge by:
            // most episodes score 1.0.)
            let (a, c) = (short.accuracy.unwrap(), short.accuracy_ci95.unwrap());
            let (a0, c0) = (want.accuracy.unwrap(), want.accuracy_ci95.unwrap());
            let (n, n_all) = (short.episodes as f64, want.episodes as f64);
            let sigma = c0 * n_all.sqrt() / 1.96;
            let allowed = 3.0 * sigma * (1.0 / n - 1.0 / n_all).sqrt();
            assert!(
                (a - a0).abs() <= allowed,
                "{} ({}-way): {EPISODES} episodes give {:.2} ± {:.2}%, RESULT.json {:.2} ± {:.2}% \
                 (allowed deviation {:.2} points)",
                dir.display(),
                want.ways,
                100.0 * a,
                100.0 * c,
                100.0 * a0,
                100.0 * c0,
                100.0 * allowed
            );
            assert_eq!(short.iterations, want.iterations, "{}", dir.display());
        }
    }
}

/// The shipped 5-way 1-shot ProtoNet, or `None` (skipped loudly, saying `what` is lost) when
/// `METALEARN_DATA` is not set.
fn shipped_protonet(what: &str) -> Option<PathBuf> {
    if std::env::var_os("METALEARN_DATA").is_none() {
        eprintln!("\n!!!!! SKIPPED: METALEARN_DATA is not set; {what} !!!!!\n");
        return None;
    }
    Some(Path::new(env!("CARGO_MANIFEST_DIR")).join("../../models/omniglot/protonet-5way-1shot"))
}

/// `metalearn eval --transfer`: a new linear head fitted on each support set with the shipped
/// ProtoNet's body frozen (Chen et al.'s linear probe) classifies far above chance (20%), and
/// the report says it was scored that way.
#[test]
fn a_shipped_body_transfers_to_new_characters_with_a_new_head() {
    let Some(dir) = shipped_protonet("transfer not evaluated") else {
        return;
    };
    let r = eval(
        &dir,
        EvalOverrides {
            episodes: Some(20),
            transfer: true,
            ..Default::default()
        },
    )
    .unwrap();
    assert!(r.transfer && r.line().contains("new linear head"), "{r:?}");
    assert_eq!(
        r.steps, 100,
        "a new head gets Chen et al.'s 100 steps by default"
    );
    let a = r.accuracy.unwrap();
    assert!(
        a > 0.8,
        "5-way 1-shot by a linear probe on ProtoNet features: {a}"
    );
}

/// `metalearn eval --transductive false` scores each query image with the support set alone
/// (Nichol et al.'s protocol) on the same episodes: the report says so, the numbers differ
/// from the transductive ones (other batch-norm statistics), and a shipped model still
/// classifies far above chance (20%).
#[test]
fn a_shipped_model_is_evaluated_non_transductively_on_request() {
    let Some(dir) = shipped_protonet("nothing evaluated") else {
        return;
    };
    let measure = |transductive| {
        eval(
            &dir,
            EvalOverrides {
                episodes: Some(10),
                transductive,
                ..Default::default()
            },
        )
        .unwrap()
    };
    let (default, batch, alone) = (measure(None), measure(Some(true)), measure(Some(false)));
    assert!(default.transductive && batch.transductive && !alone.transductive);
    assert_eq!(
        default.loss, batch.loss,
        "the experiment's protocol is transductive"
    );
    assert!(!default.line().contains("non-transductive"));
    assert!(
        alone.line().contains("non-transductive"),
        "{}",
        alone.line()
    );
    assert_ne!(
        alone.loss, batch.loss,
        "one query at a time changes the statistics"
    );
    let a = alone.accuracy.unwrap();
    assert!(a > 0.8, "5-way 1-shot, non-transductive: {a}");
}
