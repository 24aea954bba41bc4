//! No deadlock when autodiff work runs concurrently from many threads.
//!
//! burn-autodiff 0.21 locks a graph for a whole backward pass, and a thread finishing one locks
//! every live graph in turn; burn-flex runs kernels on rayon. Before exclusive lanes
//! (`metalearn_core::parallel`), a backward pass on a plain thread waited on rayon's global pool
//! while that pool's workers, running `meta_test_final`'s episodes, waited on its graph lock: the
//! process hung forever. This test runs, at the same time and many times over, the parallel
//! evaluation, meta-steps of a learner with its own task pool, a parallel search whose
//! objective adapts models, direct calls from plain threads and calls from inside rayon's global
//! pool — under a watchdog that fails with the names of the threads still running, instead of
//! hanging CI.
#![allow(clippy::unwrap_used)]

use burn::backend::Autodiff;
use metalearn_core::backend::Cpu;
use metalearn_core::learner::MetaLearner;
use metalearn_core::{SeedStream, TaskDistribution};
use metalearn_eval::meta_test_final;
use metalearn_search::{run_search, RandomSearch, SearchConfig, SearchSpace};
use metalearn_tasks::{InMemoryClasses, NWayKShot, NWayKShotConfig};
use metalearn_update::{Maml, MamlConfig};
use metalearn_zoo::{Conv4, Conv4Config};
use rand::{Rng, SeedableRng};
use rayon::prelude::*;
use std::io::Write as _;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

type B = Cpu;
type Model = Conv4<Autodiff<B>>;

const SIZE: usize = 16;

fn tasks() -> NWayKShot<InMemoryClasses> {
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(7);
    let classes: Vec<Vec<f32>> = (0..12)
        .map(|_| (0..6 * SIZE * SIZE).map(|_| rng.random::<f32>()).collect())
        .collect();
    let data = Arc::new(InMemoryClasses::new(vec![1, SIZE, SIZE], classes).unwrap());
    NWayKShot::new(data, NWayKShotConfig::new(3, 1, 2)).unwrap()
}

fn learner(threads: usize, seed: u64) -> Maml<B, Model, 4> {
    let model = Conv4Config::new(3)
        .with_input_size(SIZE)
        .with_filters(4)
        .init::<Autodiff<B>>(seed, &Default::default())
        .unwrap();
    let cfg = MamlConfig::new()
        .with_inner_lr(0.1)
        .with_meta_batch_size(3)
        .with_threads(threads);
    Maml::new(cfg, model, Default::default()).unwrap()
}

/// The names of this process's threads (Linux), for the watchdog's report.
fn thread_names() -> Vec<String> {
    let Ok(dir) = std::fs::read_dir("/proc/self/task") else {
        return vec!["(thread list unavailable)".into()];
    };
    let mut names: Vec<String> = dir
        .filter_map(|e| e.ok())
        .filter_map(|e| std::fs::read_to_string(e.path().join("comm")).ok())
        .map(|s| s.trim().to_string())
        .collect();
    names.sort();
    names
}

/// Run the named `jobs` concurrently; fail (without hanging) if they are not all done within
/// `limit`, naming the unfinished jobs and every thread of the process.
fn under_watchdog(limit: Duration, jobs: Vec<(&'static str, Box<dyn FnOnce() + Send>)>) {
    let (tx, rx) = mpsc::channel::<(&'static str, std::thread::Result<()>)>();
    let pending = Arc::new(Mutex::new(
        jobs.iter().map(|(n, _)| *n).collect::<Vec<&'static str>>(),
    ));
    let n = jobs.len();
    for (name, job) in jobs {
        let tx = tx.clone();
        std::thread::Builder::new()
            .name(format!("stress-{name}"))
            .spawn(move || {
                let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(job));
                let _ = tx.send((name, r));
            })
            .unwrap();
    }
    let deadline = Instant::now() + limit;
    for _ in 0..n {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok((name, Ok(()))) => pending.lock().unwrap().retain(|p| *p != name),
            Ok((name, Err(p))) => {
                let msg = metalearn_core::parallel::panic_message(&*p);
                panic!("stress job `{name}` failed: {msg}");
            }
            Err(_) => {
                let report = format!(
                    "DEADLOCK: stress jobs {:?} still running after {limit:?}; threads: {:?}",
                    pending.lock().unwrap(),
                    thread_names()
                );
                // Straight to the process's stderr: libtest's capture would swallow `eprintln!`,
                // and the exit below leaves it no time to print what it captured.
                let _ = writeln!(std::io::stderr(), "{report}");
                // The hung threads cannot be joined: end the test binary with a failure now.
                std::process::exit(101);
            }
        }
    }
}

#[test]
fn concurrent_evaluation_meta_steps_and_search_do_not_deadlock() {
    let rounds: usize = std::env::var("METALEARN_STRESS_ROUNDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(20);
    let tasks = Arc::new(tasks());
    let shared = Arc::new(learner(2, 1));
    let done = Arc::new(AtomicUsize::new(0));
    let mut jobs: Vec<(&'static str, Box<dyn FnOnce() + Send>)> = Vec::new();

    // The parallel evaluation (several episodes at once) ...
    for name in ["eval-a", "eval-b"] {
        let (tasks, l, done) = (tasks.clone(), shared.clone(), done.clone());
        jobs.push((
            name,
            Box::new(move || {
                for r in 0..rounds {
                    meta_test_final(&*l, &*tasks, 6, 2, SeedStream::new(r as u64)).unwrap();
                    done.fetch_add(1, Ordering::Relaxed);
                }
            }),
        ));
    }
    // ... against a plain thread adapting directly (the hang's other half) ...
    {
        let (tasks, l, done) = (tasks.clone(), shared.clone(), done.clone());
        jobs.push((
            "direct",
            Box::new(move || {
                for r in 0..rounds * 3 {
                    let ep = tasks.sample(100 + r as u64).unwrap();
                    l.evaluate(&ep, 2).unwrap();
                    done.fetch_add(1, Ordering::Relaxed);
                }
            }),
        ));
    }
    // ... and from inside rayon's global pool, as a user's own `par_iter` would ...
    {
        let (tasks, l, done) = (tasks.clone(), shared.clone(), done.clone());
        jobs.push((
            "global-pool",
            Box::new(move || {
                for r in 0..rounds {
                    (0..4).into_par_iter().for_each(|i| {
                        let ep = tasks.sample((1000 * r + i) as u64).unwrap();
                        l.adaptation_curve(&ep, 1).unwrap();
                    });
                    done.fetch_add(1, Ordering::Relaxed);
                }
            }),
        ));
    }
    // ... meta-steps of a learner with its own task pool ...
    {
        let (tasks, done) = (tasks.clone(), done.clone());
        jobs.push((
            "meta-step",
            Box::new(move || {
                let mut l = learner(2, 2);
                l.meta_train(&*tasks, rounds * 2, SeedStream::new(3), &mut |_| true)
                    .unwrap();
                done.fetch_add(1, Ordering::Relaxed);
            }),
        ));
    }
    // ... and a parallel search whose objective meta-trains and evaluates a model.
    {
        let (tasks, done) = (tasks.clone(), done.clone());
        jobs.push((
            "search",
            Box::new(move || {
                let space = SearchSpace::from_toml(
                    "[[decisions]]\nname = \"inner_lr\"\nchoices = [0.05, 0.1, 0.2]\n",
                )
                .unwrap();
                let objective = |s: &SearchSpace, a: &metalearn_search::Architecture, seed| {
                    let lr = match s.value(a, "inner_lr")? {
                        metalearn_search::Value::Float(x) => *x,
                        _ => 0.1,
                    };
                    let model = Conv4Config::new(3)
                        .with_input_size(SIZE)
                        .with_filters(4)
                        .init::<Autodiff<B>>(seed, &Default::default())?;
                    let cfg = MamlConfig::new()
                        .with_inner_lr(lr)
                        .with_meta_batch_size(2)
                        .with_threads(2);
                    let mut l = Maml::new(cfg, model, Default::default())?;
                    l.meta_train(&*tasks, 1, SeedStream::new(seed), &mut |_| true)?;
                    let c = meta_test_final(&l, &*tasks, 2, 1, SeedStream::new(seed))
                        .map_err(|e| metalearn_search::Error::Config(e.to_string()))?;
                    Ok(c.points[0].accuracy.as_ref().map_or(0.0, |a| a.mean))
                };
                let mut strategy = RandomSearch::new(space.clone(), 5);
                let r = run_search(
                    &space,
                    &mut strategy,
                    &objective,
                    SearchConfig::new(rounds * 2, 9).with_parallel(2),
                    None,
                )
                .unwrap();
                assert_eq!(r.records.len(), rounds * 2);
                done.fetch_add(1, Ordering::Relaxed);
            }),
        ));
    }
    let limit = std::env::var("METALEARN_STRESS_TIMEOUT_S")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(600);
    under_watchdog(Duration::from_secs(limit), jobs);
    assert_eq!(
        done.load(Ordering::Relaxed),
        2 * rounds + 3 * rounds + rounds + 2
    );
}
