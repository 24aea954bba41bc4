//! `metalearn-bench`: the benchmark suites behind `cargo xtask bench`.
//!
//! Runs on the backend chosen with `--backend` (default: the default CPU backend) and writes
//! `report.md`, `results.json` and SVG plots under `--out` (default `target/bench`).

mod dynamics;
mod omniglot;
mod search;
mod sinusoid;
mod speed;
mod update;

use anyhow::Result;
use clap::Parser;
use metalearn_core::backend::BackendKind;
use std::path::PathBuf;

/// mimalloc, with freed memory kept mapped by `main` (`metalearn_train::allocator`).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// A progress bar for `n` steps labelled `name` (hidden with `--no-progress`).
pub(crate) fn progress_bar(n: usize, name: &str, hidden: bool) -> indicatif::ProgressBar {
    use indicatif::{ProgressBar, ProgressStyle};
    if hidden {
        return ProgressBar::hidden();
    }
    let pb = ProgressBar::new(n as u64);
    pb.set_style(
        ProgressStyle::with_template("{prefix:>22} [{bar:30}] {pos}/{len} {msg} ({eta})")
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
    );
    pb.set_prefix(name.to_string());
    pb
}

/// A suite's last step: write `results.json` and `report.md` (each atomically: an interrupted
/// run never leaves half a report) and return the report.
pub(crate) fn finish<T: serde::Serialize>(
    dir: &std::path::Path,
    results: &T,
    report: String,
) -> Result<String> {
    use metalearn_train::files::write_atomic;
    write_atomic(
        &dir.join("results.json"),
        serde_json::to_string_pretty(results)?.as_bytes(),
    )?;
    write_atomic(&dir.join("report.md"), report.as_bytes())?;
    Ok(report)
}

/// metalearn benchmark suites.
#[derive(Parser, Debug, Clone)]
#[command(version, about)]
pub struct Args {
    /// Backend: flex (default CPU), ndarray, or wgpu (GPU; needs the `wgpu` feature).
    #[arg(long, default_value = "flex")]
    pub backend: BackendKind,
    /// Short run (a smoke check: minutes on 2 cores).
    #[arg(long)]
    pub quick: bool,
    /// The papers' budgets (Omniglot: many hours on a CPU; the report gives estimates).
    #[arg(long, conflicts_with = "quick")]
    pub full: bool,
    /// Which suites to run: sinusoid, omniglot, update (averaging, distillation, transfer),
    /// search (random / REINFORCE / evolution), dynamics (dynamical systems, online adaptation,
    /// sample efficiency, generalisation, interpretability), speed (Conv4, MAML, ProtoNet and
    /// sinusoid timings, per layer; `--peers` for PyTorch side by side), or all.
    #[arg(long, default_value = "all")]
    pub suite: String,
    /// Override the number of meta-training iterations.
    #[arg(long)]
    pub iterations: Option<usize>,
    /// Number of meta-test tasks.
    #[arg(long, default_value_t = 500)]
    pub test_tasks: usize,
    /// Root seed.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Output directory.
    #[arg(long, default_value = "target/bench")]
    pub out: PathBuf,
    /// Hide the progress bars.
    #[arg(long)]
    pub no_progress: bool,
    /// Speed suite: a Python with torch and learn2learn; runs `benches/peers/speed.py` with it,
    /// interleaved with our workloads, and reports ours / theirs.
    #[arg(long)]
    pub peers: Option<PathBuf>,
    /// Speed suite: the device PyTorch runs on with `--peers` (cpu, cuda or auto); default: cuda
    /// for the GPU backend (wgpu), cpu otherwise, so both sides use the same kind of hardware.
    #[arg(long, value_parser = ["cpu", "cuda", "auto"])]
    pub peers_device: Option<String>,
    /// Speed suite: only the workloads whose name contains this (e.g. `layers/block2`).
    #[arg(long)]
    pub only: Option<String>,
    /// Speed suite: one thread count instead of 1 and 2.
    #[arg(long)]
    pub threads: Option<usize>,
    /// Omniglot suite: continue the training runs of an interrupted suite (its `runs/`
    /// directory: checkpoints and metrics of each learner) instead of starting them afresh.
    #[arg(long)]
    pub resume: bool,
    /// Download the official Omniglot zips (sha256-checked, needs curl and internet) into the
    /// data folder (`METALEARN_DATA`, else the user cache dir) when they are missing.
    #[arg(long)]
    pub download: bool,
}

impl Args {
    /// The budget's name: `quick`, `default` or `full`.
    pub fn budget(&self) -> &'static str {
        if self.quick {
            "quick"
        } else if self.full {
            "full"
        } else {
            "default"
        }
    }
}

fn main() -> Result<()> {
    metalearn_train::allocator::keep_freed_memory_mapped();
    let args = Args::parse();
    let suites: Vec<&str> = match args.suite.as_str() {
        "all" => vec![
            "speed", "sinusoid", "omniglot", "update", "search", "dynamics",
        ],
        "sinusoid" | "omniglot" | "update" | "search" | "dynamics" | "speed" => {
            vec![args.suite.as_str()]
        }
        other => anyhow::bail!(
            "unknown suite `{other}` (expected speed, sinusoid, omniglot, update, search, dynamics \
             or all)"
        ),
    };
    if args.download {
        let dir = metalearn_tasks::omniglot::download(
            None,
            &[
                metalearn_tasks::omniglot::ZipSpec::background(),
                metalearn_tasks::omniglot::ZipSpec::evaluation(),
            ],
        )?;
        eprintln!("Omniglot zips in {}", dir.display());
    }
    let budget = args.budget();
    let start_all = std::time::Instant::now();
    let mut ran = 0;
    for suite in suites {
        let dir = args.out.join(suite);
        std::fs::create_dir_all(&dir)?;
        let start = std::time::Instant::now();
        let report = match suite {
            "sinusoid" => {
                metalearn_core::with_backend!(args.backend, B => sinusoid::run::<B>(&args, &dir))?
            }
            "speed" => {
                metalearn_core::with_backend!(args.backend, B => speed::run::<B>(&args, &dir))?
            }
            _ => {
                let r = match suite {
                    "omniglot" => {
                        metalearn_core::with_backend!(args.backend, B => omniglot::run::<B>(&args, &dir))
                    }
                    "update" => {
                        metalearn_core::with_backend!(args.backend, B => update::run::<B>(&args, &dir))
                    }
                    "dynamics" => {
                        metalearn_core::with_backend!(args.backend, B => dynamics::run::<B>(&args, &dir))
                    }
                    _ => {
                        metalearn_core::with_backend!(args.backend, B => search::run::<B>(&args, &dir))
                    }
                };
                match r {
                    Ok(r) => r,
                    // Without the data, `--suite all` says so loudly and goes on; an explicit
                    // `--suite omniglot` fails.
                    Err(e) if args.suite == "all" && omniglot::is_missing_data(&e) => {
                        eprintln!(
                            "\n!!!!! {suite} suite SKIPPED: {e:#}\n!!!!! set METALEARN_DATA to a \
                         folder holding omniglot/images_background.zip and \
                         images_evaluation.zip, or pass --download\n"
                        );
                        continue;
                    }
                    Err(e) => return Err(e),
                }
            }
        };
        let seconds = start.elapsed().as_secs_f64();
        record_time(&args.out, suite, budget, seconds)?;
        ran += 1;
        println!("{report}");
        println!(
            "report written to {} ({suite} suite, {budget} budget: {})",
            dir.join("report.md").display(),
            metalearn_train::format_duration(seconds)
        );
    }
    if ran > 1 {
        let seconds = start_all.elapsed().as_secs_f64();
        record_time(&args.out, "all", budget, seconds)?;
        println!(
            "all suites, {budget} budget: {}",
            metalearn_train::format_duration(seconds)
        );
    }
    Ok(())
}

/// Keep the latest wall time of each (suite, budget) in `out/timings.json`, so the time every
/// budget of every suite takes on this machine is one file (README, "Quick start").
fn record_time(out: &std::path::Path, suite: &str, budget: &str, seconds: f64) -> Result<()> {
    let path = out.join("timings.json");
    let mut all: std::collections::BTreeMap<String, f64> = std::fs::read(&path)
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or_default();
    all.insert(format!("{suite}/{budget}"), (seconds * 10.0).round() / 10.0);
    metalearn_train::files::write_atomic(&path, serde_json::to_string_pretty(&all)?.as_bytes())?;
    Ok(())
}
