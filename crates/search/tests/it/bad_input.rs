//! Bad input to the search crate: strict space files, rejected configs, bounded validation,
//! searches that survive failing candidates, resume checks, and a real `kill -9` resumed bit
//! for bit.
#![allow(clippy::unwrap_used)]

use metalearn_search::{
    is_failure, run_search, Architecture, Error, RandomSearch, RegularizedEvolution, Reinforce,
    ReinforceConfig, SearchConfig, SearchSpace, Strategy, FAILED_SCORE,
};
use std::time::{Duration, Instant};

/// The REINFORCE controller's backend: a tiny model, on the CPU.
type CpuController = burn::backend::Autodiff<metalearn_core::backend::NdArrayCpu>;

fn parse_err(r: Result<SearchSpace, Error>) -> String {
    match r {
        Err(e @ (Error::Parse(_) | Error::InvalidSpace(_))) => e.to_string(),
        other => panic!("expected a parse or space error, got {other:?}"),
    }
}

#[test]
fn unknown_keys_in_space_files_are_errors_with_their_line() {
    let toml = "[[decisions]]\nname = \"a\"\nchoices = [1, 2]\n\n[[constraint]]\n\
                if = { decision = \"a\", in = [1] }\nthen = { decision = \"a\", in = [1] }\n";
    let e = parse_err(SearchSpace::from_toml(toml));
    assert!(e.contains("constraint") && e.contains("line 5"), "{e}");
    let json = r#"{"decisions": [{"name": "a", "choices": [1, 2]}],
        "constrains": [{"if": {"decision": "a", "in": [1]}, "then": {"decision": "a", "in": [2]}}]}"#;
    let e = parse_err(SearchSpace::from_json(json));
    assert!(e.contains("constrains") && e.contains("line 2"), "{e}");
    // inside a decision and inside a condition
    let e = parse_err(SearchSpace::from_toml(
        "[[decisions]]\nname = \"a\"\nchoices = [1]\nchoice = [2]\n",
    ));
    assert!(e.contains("choice"), "{e}");
    let e = parse_err(SearchSpace::from_toml(
        "[[decisions]]\nname = \"a\"\nchoices = [1, 2]\n[[constraints]]\n\
         if = { decision = \"a\", in = [1], not = true }\nthen = { decision = \"a\", in = [1] }\n",
    ));
    assert!(e.contains("not"), "{e}");
}

#[test]
fn nan_choices_empty_names_and_infinite_bonuses_are_rejected() {
    let e = parse_err(SearchSpace::from_toml(
        "[[decisions]]\nname = \"a\"\nchoices = [nan, nan]\n",
    ));
    assert!(e.contains("finite"), "{e}");
    let e = parse_err(SearchSpace::from_toml(
        "[[decisions]]\nname = \"\"\nchoices = [1]\n",
    ));
    assert!(e.contains("empty name"), "{e}");
    let space = SearchSpace::from_toml("[[decisions]]\nname = \"a\"\nchoices = [1, 2]\n").unwrap();
    for bonus in [f64::INFINITY, f64::NAN, -1.0] {
        let cfg = ReinforceConfig {
            entropy_bonus: bonus,
            ..ReinforceConfig::new()
        };
        assert!(matches!(
            Reinforce::<CpuController>::new(space.clone(), cfg, 0),
            Err(Error::Config(_))
        ));
    }
}

/// 40 two-choice decisions plus two rules that make the last one impossible: the plain
/// depth-first check took time doubling per decision (0.66 s at 24, ages at 40).
#[test]
fn unsatisfiable_constraints_are_found_fast() {
    let mut t = String::new();
    for i in 0..40 {
        t.push_str(&format!(
            "[[decisions]]\nname = \"d{i}\"\nchoices = [0, 1]\n"
        ));
    }
    for (a, b) in [(0, 1), (1, 0)] {
        t.push_str(&format!(
            "[[constraints]]\nif = {{ decision = \"d39\", in = [{a}] }}\n\
             then = {{ decision = \"d39\", in = [{b}] }}\n"
        ));
    }
    let start = Instant::now();
    let e = parse_err(SearchSpace::from_toml(&t));
    assert!(e.contains("no architecture"), "{e}");
    // The same with the impossibility reached through a chain of other decisions.
    let mut chain = String::new();
    for i in 0..40 {
        chain.push_str(&format!(
            "[[decisions]]\nname = \"d{i}\"\nchoices = [0, 1]\n"
        ));
    }
    for i in 0..39 {
        for v in [0, 1] {
            chain.push_str(&format!(
                "[[constraints]]\nif = {{ decision = \"d{i}\", in = [{v}] }}\n\
                 then = {{ decision = \"d{}\", in = [{v}] }}\n",
                i + 1
            ));
        }
    }
    // d39 = 0 forces d0..d38 = 0 (contrapositive) and d39 = 1 forces ... both impossible:
    chain.push_str(
        "[[constraints]]\nif = { decision = \"d39\", in = [0] }\nthen = { decision = \"d0\", in = [1] }\n\
         [[constraints]]\nif = { decision = \"d39\", in = [1] }\nthen = { decision = \"d0\", in = [0] }\n",
    );
    let e = parse_err(SearchSpace::from_toml(&chain));
    assert!(e.contains("no architecture"), "{e}");
    assert!(
        start.elapsed() < Duration::from_secs(5),
        "{:?}",
        start.elapsed()
    );
    // A satisfiable 40-decision chain samples valid architectures.
    let mut ok = String::new();
    for i in 0..40 {
        ok.push_str(&format!(
            "[[decisions]]\nname = \"d{i}\"\nchoices = [0, 1, 2]\n"
        ));
    }
    for i in 0..39 {
        ok.push_str(&format!(
            "[[constraints]]\nif = {{ decision = \"d{i}\", in = [0] }}\n\
             then = {{ decision = \"d{}\", in = [1, 2] }}\n",
            i + 1
        ));
    }
    let space = SearchSpace::from_toml(&ok).unwrap();
    let mut s = RandomSearch::new(space.clone(), 3);
    for _ in 0..50 {
        assert!(space.is_valid(&s.ask().unwrap()));
    }
}

fn small_space() -> SearchSpace {
    SearchSpace::from_toml(
        "[[decisions]]\nname = \"a\"\nchoices = [0, 1, 2, 3]\n\
         [[decisions]]\nname = \"b\"\nchoices = [0, 1, 2]\n",
    )
    .unwrap()
}

fn smooth(_: &SearchSpace, a: &Architecture, seed: u64) -> metalearn_search::Result<f64> {
    // An irrational-looking score, so that a float that does not round-trip shows.
    Ok(
        -((a.0[0] as f64 + 0.1).ln() * 1.3 + (a.0[1] as f64 * 0.7).sqrt())
            - (seed % 1000) as f64 * 1e-7,
    )
}

#[test]
fn diverging_candidates_get_a_failing_score_and_the_search_goes_on() {
    let space = small_space();
    let f = |s: &SearchSpace, a: &Architecture, seed: u64| {
        if a.0[0] == 1 {
            return Err(metalearn_core::Error::AdaptationDiverged {
                step: 3,
                value: f64::NAN,
            }
            .into());
        }
        if a.0[0] == 2 {
            return Ok(f64::NAN);
        }
        if a.0[0] == 3 && a.0[1] == 0 {
            panic!("Can't differentiate linear_weight_backward.");
        }
        smooth(s, a, seed)
    };
    let strategies: Vec<Box<dyn Strategy>> = vec![
        Box::new(RandomSearch::new(space.clone(), 1)),
        Box::new(RegularizedEvolution::new(space.clone(), 4, 2, 1).unwrap()),
        Box::new(
            Reinforce::<CpuController>::new(space.clone(), ReinforceConfig::new(), 1).unwrap(),
        ),
    ];
    for mut s in strategies {
        let r = run_search(
            &space,
            s.as_mut(),
            &f,
            SearchConfig::new(30, 2).with_parallel(2),
            None,
        )
        .unwrap();
        assert_eq!(r.records.len(), 30);
        let failed: Vec<_> = r.records.iter().filter(|x| is_failure(x.score)).collect();
        assert!(!failed.is_empty(), "{}", s.name());
        for x in &failed {
            assert_eq!(x.score, FAILED_SCORE);
            assert!(x.failure.is_some());
            assert!(x.architecture.0[0] != 0 || x.architecture.0[1] == 0);
        }
        let best = r.best().unwrap();
        assert!(!is_failure(best.score), "{}: {best:?}", s.name());
        assert!(r.records.iter().all(|x| x.score.is_finite()));
    }
    // Other errors (bad data, I/O) still stop the search.
    let bad = |_: &SearchSpace, _: &Architecture, _: u64| -> metalearn_search::Result<f64> {
        Err(Error::Config("no data".into()))
    };
    let mut s = RandomSearch::new(space.clone(), 1);
    assert!(run_search(&space, &mut s, &bad, SearchConfig::new(3, 2), None).is_err());
}

fn journal_dir(tag: &str) -> std::path::PathBuf {
    let d = std::env::temp_dir().join(format!("metalearn-bad-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

#[test]
fn resuming_with_another_seed_or_parallel_names_the_field() {
    let space = small_space();
    let dir = journal_dir("fields");
    let path = dir.join("j.jsonl");
    let mut s = RandomSearch::new(space.clone(), 4);
    run_search(
        &space,
        &mut s,
        &smooth,
        SearchConfig::new(6, 1),
        Some(&path),
    )
    .unwrap();
    // Same strategy seed, another SearchConfig.seed: the proposals match, the seeds do not.
    let mut s = RandomSearch::new(space.clone(), 4);
    let r = run_search(
        &space,
        &mut s,
        &smooth,
        SearchConfig::new(10, 2),
        Some(&path),
    );
    match r {
        Err(Error::Journal { message, .. }) => assert!(message.contains("seed"), "{message}"),
        other => panic!("{other:?}"),
    }
    let mut s = RandomSearch::new(space.clone(), 4);
    let cfg = SearchConfig::new(10, 1).with_parallel(4);
    match run_search(&space, &mut s, &smooth, cfg, Some(&path)) {
        Err(Error::Journal { message, .. }) => {
            assert!(message.contains("parallel"), "{message}")
        }
        other => panic!("{other:?}"),
    }
    let _ = std::fs::remove_dir_all(&dir);
}

fn exact(r: &[metalearn_search::Record]) -> Vec<(Architecture, u64, u64, String)> {
    r.iter()
        .map(|x| {
            (
                x.architecture.clone(),
                x.score.to_bits(),
                x.seed,
                x.label.clone(),
            )
        })
        .collect()
}

const CHILD: &str = "METALEARN_KILL_CHILD_JOURNAL";
const EVALS: usize = 40;

fn reinforce_search(
    journal: Option<&std::path::Path>,
    slow: bool,
) -> metalearn_search::SearchResult {
    let space = small_space();
    let mut s = Reinforce::<CpuController>::new(space.clone(), ReinforceConfig::new(), 11).unwrap();
    let f = |sp: &SearchSpace, a: &Architecture, seed: u64| {
        if slow {
            std::thread::sleep(Duration::from_millis(40));
        }
        smooth(sp, a, seed)
    };
    let cfg = SearchConfig::new(EVALS, 5).with_parallel(2);
    run_search(&space, &mut s, &f, cfg, journal).unwrap()
}

/// Runs only as the child of `a_search_killed_with_sigkill_resumes_bit_for_bit`.
#[test]
fn kill_child_helper() {
    if let Some(path) = std::env::var_os(CHILD) {
        reinforce_search(Some(std::path::Path::new(&path)), true);
    }
}

#[test]
fn a_search_killed_with_sigkill_resumes_bit_for_bit() {
    let full = reinforce_search(None, false);
    let dir = journal_dir("kill");
    let path = dir.join("j.jsonl");
    let mut lines = 0;
    for kill_after in [6, 15, 24] {
        let mut child = std::process::Command::new(std::env::current_exe().unwrap())
            .args([
                "--exact",
                "bad_input::kill_child_helper", // its name in the `it` test binary
                "--nocapture",
                "--test-threads=1",
            ])
            .env(CHILD, &path)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let start = Instant::now();
        loop {
            lines = std::fs::read_to_string(&path).map_or(0, |t| t.lines().count());
            if lines >= kill_after || start.elapsed() > Duration::from_secs(120) {
                break;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        assert!(lines >= kill_after, "child wrote only {lines} records");
    }
    assert!(lines < EVALS, "the child finished before it was killed");
    let resumed = reinforce_search(Some(&path), false);
    assert!(resumed.resumed >= 24, "{}", resumed.resumed);
    assert_eq!(exact(&resumed.records), exact(&full.records));
    let _ = std::fs::remove_dir_all(&dir);
}
