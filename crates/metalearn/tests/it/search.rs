//! `metalearn search`: search files, bad input, and a real `kill -9` in the middle of a search
//! (no finished evaluation lost or repeated; the result equals an uninterrupted search's).

#![allow(clippy::unwrap_used)] // test helpers fail loudly

use metalearn::search::journal::Record;
use metalearn::search_file::SearchFile;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::common;
use crate::common::{kill_when, spawn};

fn example() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../experiments/search/conv4-evolution.toml")
}

fn small() -> String {
    std::fs::read_to_string(example())
        .unwrap()
        .replace("iterations = 50", "iterations = 3")
        .replace("validation_episodes = 20", "validation_episodes = 3")
        .replace("evaluations = 24", "evaluations = 8")
}

fn records(dir: &Path) -> Vec<(usize, String, f64, u64)> {
    std::fs::read_to_string(dir.join("journal.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str::<Record>(l).unwrap())
        .map(|r| (r.index, r.label, r.score, r.seed))
        .collect()
}

fn run(file: &Path, dir: &Path) {
    common::run_to_end("search", file, dir);
}

#[test]
fn search_files_parse_and_bad_keys_are_named() {
    let f = SearchFile::load(&example()).unwrap();
    assert_eq!(f.search.evaluations, 24);
    let text = std::fs::read_to_string(example()).unwrap();
    for (bad, expected) in [
        (
            text.replace("kind = \"evolution\"", "kind = \"annealing\""),
            "unknown strategy",
        ),
        (
            text.replace("population = 6", "population = 2"),
            "`strategy.sample`",
        ),
        (
            text.replace("iterations = 50", "iterations = \"many\""),
            "`objective.iterations`",
        ),
        (
            text.replace("[search]", "[search]\nrounds = 3"),
            "`search.rounds`: unknown key",
        ),
        (
            text.replace("name = \"kernel\"", "name = \"stride\""),
            "`kernel`",
        ),
        (
            text.replace("method = \"ProtoNet\"", "method = \"MAML\""),
            "`objective.method`",
        ),
    ] {
        let e = SearchFile::parse(&bad, "s.toml").unwrap_err().to_string();
        assert!(
            e.contains("s.toml") && e.contains(expected),
            "expected `{expected}` in: {e}"
        );
    }
}

#[test]
fn kill_9_during_a_search_loses_and_repeats_nothing() {
    let root = std::env::temp_dir().join(format!("ml-search-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&root);
    std::fs::create_dir_all(&root).unwrap();
    let file = root.join("search.toml");
    std::fs::write(&file, small()).unwrap();

    let reference = root.join("reference");
    run(&file, &reference);
    let want = records(&reference);
    assert_eq!(want.len(), 8);

    let killed = root.join("killed");
    let mut child = spawn("search", &file, &killed);
    let journal_lines = || {
        std::fs::read_to_string(killed.join("journal.jsonl"))
            .map(|t| t.lines().count())
            .unwrap_or(0)
    };
    kill_when(
        &mut child,
        || journal_lines() >= 2,
        "2 finished evaluations",
    );
    let partial = records(&killed);
    assert!(partial.len() < 8, "killed too late to test anything");
    run(&file, &killed);
    let got = records(&killed);
    assert_eq!(
        got, want,
        "resumed search differs from the uninterrupted one"
    );
    // The same file again on a finished search changes nothing; another file is refused.
    run(&file, &killed);
    assert_eq!(records(&killed), want);
    std::fs::write(&file, small().replace("seed = 1", "seed = 2")).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_metalearn"))
        .arg("search")
        .arg(&file)
        .arg("--run-dir")
        .arg(&killed)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("seed"));
    std::fs::remove_dir_all(&root).unwrap();
}
