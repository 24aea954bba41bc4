//! Search spaces, strategies, objectives and the journal.
#![allow(clippy::unwrap_used)]

use metalearn_search::presets::{conv4_config, conv_space, mlp_config, mlp_space};
use metalearn_search::{
    run_search, Architecture, Error, MetaMethod, MetaObjective, MetaObjectiveConfig, Objective,
    RandomSearch, RegularizedEvolution, Reinforce, ReinforceConfig, SearchConfig, SearchSpace,
    Strategy,
};
use proptest::prelude::*;
use std::sync::atomic::{AtomicUsize, Ordering};

/// The REINFORCE controller's backend: a tiny model, on the CPU.
type CpuController = burn::backend::Autodiff<metalearn_core::backend::NdArrayCpu>;

#[test]
fn spaces_round_trip_through_toml_and_json() {
    for space in [conv_space().unwrap(), mlp_space().unwrap()] {
        let t = SearchSpace::from_toml(&space.to_toml().unwrap()).unwrap();
        assert_eq!(t, space);
        let j = SearchSpace::from_json(&space.to_json().unwrap()).unwrap();
        assert_eq!(j, space);
    }
}

#[test]
fn invalid_spaces_are_typed_errors() {
    let cases = [
        ("decisions = []", "no decisions"),
        ("[[decisions]]\nname = \"a\"\nchoices = []", "no choices"),
        (
            "[[decisions]]\nname = \"a\"\nchoices = [1]\n[[decisions]]\nname = \"a\"\nchoices = [2]",
            "twice",
        ),
        (
            "[[decisions]]\nname = \"a\"\nchoices = [1, 2]\n[[constraints]]\nif = { decision = \"b\", in = [1] }\nthen = { decision = \"a\", in = [1] }",
            "unknown decision",
        ),
        (
            "[[decisions]]\nname = \"a\"\nchoices = [1, 2]\n[[constraints]]\nif = { decision = \"a\", in = [3] }\nthen = { decision = \"a\", in = [1] }",
            "not a choice",
        ),
        // a = 1 ⇒ b = 1, a = 2 ⇒ b = 1, b = 1 ⇒ a = 3 (impossible): nothing satisfies it
        (
            "[[decisions]]\nname = \"a\"\nchoices = [1, 2]\n[[decisions]]\nname = \"b\"\nchoices = [1, 2]\n\
             [[constraints]]\nif = { decision = \"a\", in = [1, 2] }\nthen = { decision = \"b\", in = [1] }\n\
             [[constraints]]\nif = { decision = \"b\", in = [1] }\nthen = { decision = \"a\", in = [] }",
            "lists no values",
        ),
        (
            "[[decisions]]\nname = \"a\"\nchoices = [1, 2]\n[[decisions]]\nname = \"b\"\nchoices = [1, 2]\n\
             [[constraints]]\nif = { decision = \"a\", in = [1, 2] }\nthen = { decision = \"b\", in = [1] }\n\
             [[constraints]]\nif = { decision = \"b\", in = [1] }\nthen = { decision = \"a\", in = [7] }",
            "not a choice",
        ),
        (
            "[[decisions]]\nname = \"a\"\nchoices = [1, 2]\n[[decisions]]\nname = \"b\"\nchoices = [1, 2]\n\
             [[constraints]]\nif = { decision = \"a\", in = [1, 2] }\nthen = { decision = \"b\", in = [1] }\n\
             [[constraints]]\nif = { decision = \"b\", in = [1] }\nthen = { decision = \"a\", in = [1] }\n\
             [[constraints]]\nif = { decision = \"a\", in = [1] }\nthen = { decision = \"b\", in = [2] }",
            "no architecture satisfies",
        ),
        ("not toml at all [", "parse"),
    ];
    for (text, want) in cases {
        match SearchSpace::from_toml(text) {
            Err(e @ (Error::InvalidSpace(_) | Error::Parse(_))) => {
                let msg = e.to_string();
                assert!(msg.contains(want), "{want}: {msg}");
            }
            other => panic!("{want}: expected an invalid-space error, got {other:?}"),
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]
    /// Every sampled or mutated architecture is valid and builds a real module.
    #[test]
    fn sampled_and_mutated_architectures_are_valid_and_build(seed in 0u64..10_000) {
        let space = conv_space().unwrap();
        let mut rng = metalearn_core::seed::rng(seed);
        let a = space.sample(&mut rng);
        prop_assert!(space.is_valid(&a));
        let m = space.mutate(&a, &mut rng).unwrap();
        prop_assert!(space.is_valid(&m));
        prop_assert_eq!(m.0.iter().zip(&a.0).filter(|(x, y)| x != y).count(), 1);
        for arch in [&a, &m] {
            let cfg = conv4_config(&space, arch, 5, 28).unwrap();
            let net = cfg.init::<metalearn_core::backend::NdArrayCpu>(seed, &Default::default());
            prop_assert!(net.is_ok());
            // constraint: 5×5 kernels only with ≤ 32 filters
            prop_assert!(!(cfg.kernel == 5 && cfg.filters == 64));
        }
        let mspace = mlp_space().unwrap();
        let b = mspace.sample(&mut rng);
        let mlp = mlp_config(&mspace, &b, 3, 2).unwrap();
        prop_assert!(mlp.init::<metalearn_core::backend::NdArrayCpu>(seed, &Default::default()).is_ok());
    }
}

#[test]
fn reinforce_raises_the_probability_of_a_rewarded_choice() {
    let space = SearchSpace::from_toml(
        "[[decisions]]\nname = \"a\"\nchoices = [0, 1, 2]\n[[decisions]]\nname = \"b\"\nchoices = [0, 1]",
    )
    .unwrap();
    let mut rl = Reinforce::<CpuController>::new(space, ReinforceConfig::new(), 3).unwrap();
    let before = rl.probabilities(&[], 0)[2];
    assert!((before - 1.0 / 3.0).abs() < 1e-6);
    for _ in 0..60 {
        let a = rl.ask().unwrap();
        let r = if a.0[0] == 2 { 1.0 } else { 0.0 };
        rl.tell(&a, r).unwrap();
    }
    let after = rl.probabilities(&[], 0)[2];
    assert!(after > 0.7, "P(rewarded choice) {before} -> {after}");
    assert!(rl.tell(&Architecture(vec![0, 0]), f64::NAN).is_err());
    assert!(rl.tell(&Architecture(vec![5, 0]), 1.0).is_err());
}

/// A synthetic landscape over 5 decisions × 4 choices (1024 architectures) with one optimum.
fn landscape() -> (
    SearchSpace,
    impl Fn(&SearchSpace, &Architecture, u64) -> metalearn_search::Result<f64>,
) {
    let mut toml = String::new();
    for i in 0..5 {
        toml.push_str(&format!(
            "[[decisions]]\nname = \"d{i}\"\nchoices = [0, 1, 2, 3]\n"
        ));
    }
    let space = SearchSpace::from_toml(&toml).unwrap();
    let target = [3usize, 1, 2, 0, 3];
    let f = move |_: &SearchSpace, a: &Architecture, _: u64| {
        Ok(-a
            .0
            .iter()
            .zip(target)
            .map(|(&c, t)| (c as f64 - t as f64).powi(2))
            .sum::<f64>())
    };
    (space, f)
}

/// Evaluations until the optimum (score 0) is first found, capped at `cap`.
fn hits(strategy: &mut dyn Strategy, space: &SearchSpace, cap: usize) -> usize {
    let (_, f) = landscape();
    let r = run_search(space, strategy, &f, SearchConfig::new(cap, 0), None).unwrap();
    r.records
        .iter()
        .position(|x| x.score == 0.0)
        .map_or(cap, |p| p + 1)
}

#[test]
fn evolution_and_reinforce_beat_random_on_a_synthetic_landscape() {
    let (space, _) = landscape();
    let cap = 400;
    let seeds = 0..10u64;
    let mean = |make: &dyn Fn(u64) -> Box<dyn Strategy>| {
        seeds
            .clone()
            .map(|s| hits(make(s).as_mut(), &space, cap))
            .sum::<usize>() as f64
            / seeds.clone().count() as f64
    };
    let random = mean(&|s| Box::new(RandomSearch::new(space.clone(), s)));
    let evolution =
        mean(&|s| Box::new(RegularizedEvolution::new(space.clone(), 20, 5, s).unwrap()));
    let rl = mean(&|s| {
        Box::new(
            Reinforce::<CpuController>::new(
                space.clone(),
                ReinforceConfig {
                    learning_rate: 0.1,
                    ..ReinforceConfig::new()
                },
                s,
            )
            .unwrap(),
        )
    });
    eprintln!(
        "mean evaluations to the optimum: random {random}, evolution {evolution}, REINFORCE {rl}"
    );
    assert!(
        evolution < random,
        "evolution {evolution} vs random {random}"
    );
    assert!(rl < random, "REINFORCE {rl} vs random {random}");
}

#[test]
fn strategies_are_deterministic_given_a_seed() {
    let (space, f) = landscape();
    let run = |seed| {
        let mut s = RegularizedEvolution::new(space.clone(), 8, 3, seed).unwrap();
        run_search(&space, &mut s, &f, SearchConfig::new(30, 1), None)
            .unwrap()
            .records
    };
    let (a, b) = (run(4), run(4));
    let key = |r: &[metalearn_search::Record]| {
        r.iter()
            .map(|x| (x.architecture.clone(), x.score))
            .collect::<Vec<_>>()
    };
    assert_eq!(key(&a), key(&b));
    assert_ne!(key(&a), key(&run(5)));
    // parallel rounds: the same result whatever the thread scheduling
    let par = |threads| {
        let mut s =
            Reinforce::<CpuController>::new(space.clone(), ReinforceConfig::new(), 2).unwrap();
        run_search(
            &space,
            &mut s,
            &f,
            SearchConfig::new(24, 1)
                .with_parallel(4)
                .with_threads(threads),
            None,
        )
        .unwrap()
        .records
    };
    assert_eq!(key(&par(1)), key(&par(3)));
}

fn key(r: &[metalearn_search::Record]) -> Vec<(Architecture, f64, u64)> {
    r.iter()
        .map(|x| (x.architecture.clone(), x.score, x.seed))
        .collect()
}

#[test]
fn a_crashed_search_resumes_from_its_journal_to_the_same_result() {
    let (space, f) = landscape();
    let dir = std::env::temp_dir().join(format!("metalearn-journal-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    for (name, parallel) in [("evolution", 1), ("reinforce", 3)] {
        let make = || -> Box<dyn Strategy> {
            if name == "evolution" {
                Box::new(RegularizedEvolution::new(space.clone(), 6, 2, 9).unwrap())
            } else {
                Box::new(
                    Reinforce::<CpuController>::new(space.clone(), ReinforceConfig::new(), 9)
                        .unwrap(),
                )
            }
        };
        let cfg = SearchConfig::new(25, 7).with_parallel(parallel);
        let full = run_search(&space, make().as_mut(), &f, cfg, None).unwrap();

        // "Crash" at evaluation 13: the objective fails there (as a kill would stop it).
        let path = dir.join(format!("{name}.jsonl"));
        let _ = std::fs::remove_file(&path);
        let calls = AtomicUsize::new(0);
        let crashing = |s: &SearchSpace, a: &Architecture, seed: u64| {
            if calls.fetch_add(1, Ordering::SeqCst) >= 13 {
                return Err(Error::Config("simulated crash".into()));
            }
            f(s, a, seed)
        };
        assert!(run_search(&space, make().as_mut(), &crashing, cfg, Some(&path)).is_err());
        let saved = std::fs::read_to_string(&path).unwrap();
        let n_saved = saved.lines().count();
        assert!(n_saved >= 13 - parallel && n_saved <= 13, "{n_saved}");
        // and a torn write at the end
        std::fs::write(&path, format!("{saved}{{\"index\": {n_saved}, \"archit")).unwrap();

        let evaluated = AtomicUsize::new(0);
        let counting = |s: &SearchSpace, a: &Architecture, seed: u64| {
            evaluated.fetch_add(1, Ordering::SeqCst);
            f(s, a, seed)
        };
        let resumed = run_search(&space, make().as_mut(), &counting, cfg, Some(&path)).unwrap();
        assert_eq!(resumed.resumed, n_saved);
        assert_eq!(evaluated.load(Ordering::SeqCst), 25 - n_saved);
        assert_eq!(key(&resumed.records), key(&full.records), "{name}");
        assert_eq!(std::fs::read_to_string(&path).unwrap().lines().count(), 25);

        // A journal of another search is refused.
        let other = RegularizedEvolution::new(space.clone(), 6, 2, 10).unwrap();
        let mut other: Box<dyn Strategy> = Box::new(other);
        if name == "evolution" {
            let r = run_search(&space, other.as_mut(), &f, cfg, Some(&path));
            assert!(matches!(r, Err(Error::Journal { .. })), "{r:?}");
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn meta_objective_scores_a_candidate_by_few_shot_accuracy() {
    use metalearn_tasks::InMemoryClasses;
    use std::sync::Arc;
    // 8 learnable classes of 16×16 images (a fixed pattern plus noise).
    let mut r = metalearn_core::seed::rng(1);
    let classes: Vec<Vec<f32>> = (0..8)
        .map(|_| {
            use rand::Rng;
            let base: Vec<f32> = (0..256).map(|_| r.random::<f32>()).collect();
            (0..6)
                .flat_map(|_| {
                    base.iter()
                        .map(|b| b + 0.2 * r.random::<f32>())
                        .collect::<Vec<_>>()
                })
                .collect()
        })
        .collect();
    let all = InMemoryClasses::new(vec![1, 16, 16], classes).unwrap();
    let train = Arc::new(InMemoryClasses::select(&all, &[0, 1, 2, 3, 4], 0..6).unwrap());
    let val = Arc::new(InMemoryClasses::select(&all, &[5, 6, 7], 0..6).unwrap());
    let space = conv_space().unwrap();
    let arch = space.sample(&mut metalearn_core::seed::rng(0));
    for method in [MetaMethod::ProtoNet, MetaMethod::Fomaml] {
        let obj = MetaObjective::<metalearn_core::backend::Cpu, _>::new(
            train.clone(),
            val.clone(),
            MetaObjectiveConfig {
                method,
                ways: 3,
                shots: 1,
                query: 2,
                iterations: 3,
                validation_episodes: 4,
                input_size: 16,
                ..MetaObjectiveConfig::new()
            },
        )
        .unwrap();
        let a = obj.evaluate(&space, &arch, 5).unwrap();
        let b = obj.evaluate(&space, &arch, 5).unwrap();
        assert!((0.0..=1.0).contains(&a));
        assert_eq!(a, b, "{method:?}: same seed, same score");
    }
    // a shape the data cannot serve is a typed error
    let bad = MetaObjective::<metalearn_core::backend::Cpu, _>::new(
        train,
        val,
        MetaObjectiveConfig {
            ways: 4,
            ..MetaObjectiveConfig::new()
        },
    );
    assert!(bad.is_err());
}
