//! The `metalearn` command: a thin shell over [`metalearn::run`].

use clap::{Parser, Subcommand};
use metalearn::core::backend::BackendKind;
use metalearn::run::{adapt, eval, ship, train, EvalOverrides};
use metalearn::search_file::{search, SearchFile};
use metalearn::train::Progress;
use metalearn::Experiment;
use std::path::PathBuf;
use std::process::ExitCode;

/// mimalloc instead of glibc's malloc: the activations of a meta-iteration are freed and
/// reallocated every step, and glibc returns them to the kernel, paying page faults each time
/// (mimalloc too, after a delay, unless `main` keeps freed memory mapped: see
/// [`metalearn::train::allocator`]).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(
    name = "metalearn",
    version,
    about = "Meta-learning on burn: train, evaluate and use meta-learned models"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Meta-train the experiment in EXPERIMENT.toml; run it again on the same run directory to resume.
    Train {
        /// The experiment file.
        experiment: PathBuf,
        /// Where checkpoints, metrics, the best model and the report go.
        #[arg(long)]
        run_dir: PathBuf,
        /// Backend (overrides the file's `backend`).
        #[arg(long)]
        backend: Option<BackendKind>,
        /// Progress display.
        #[arg(long, value_enum, default_value = "auto")]
        progress: ProgressArg,
    },
    /// Evaluate the best model of a run on the meta-test tasks (accuracy or loss ± 95% CI).
    Eval {
        /// The run directory.
        #[arg(long)]
        run_dir: PathBuf,
        /// Test episodes (default: the experiment's, 600).
        #[arg(long)]
        episodes: Option<usize>,
        /// Classes per episode.
        #[arg(long)]
        ways: Option<usize>,
        /// Support examples per class.
        #[arg(long)]
        shots: Option<usize>,
        /// Adaptation steps.
        #[arg(long)]
        steps: Option<usize>,
        /// Also print the steps curve: the same episodes scored after 0, 1, …, steps steps.
        #[arg(long)]
        curve: bool,
        /// Score by transfer: fit a new linear head on each support set (Adam, --steps steps,
        /// default 100) with the trained body frozen, instead of the learner's own adaptation
        /// (compares any learner's features, as Chen et al. 2019 do).
        #[arg(long)]
        transfer: bool,
        /// `false`: classify each query image with the support set alone (batch-norm
        /// statistics of the support set and that image: Nichol et al.'s non-transductive
        /// protocol); `true`: all query images in one batch. Default: as the experiment says.
        #[arg(long)]
        transductive: Option<bool>,
        /// Print JSON instead of a line of text.
        #[arg(long)]
        json: bool,
    },
    /// Search Conv4 architectures by few-shot accuracy after brief meta-training; run it again on
    /// the same run directory to resume.
    Search {
        /// The search file.
        file: PathBuf,
        /// Where the journal and the result go.
        #[arg(long)]
        run_dir: PathBuf,
    },
    /// Ship the best model of a run: measure it on the test protocol and copy the experiment,
    /// the model, the report and RESULT.json into a directory of its own (`metalearn eval
    /// --run-dir TO` re-measures it from those files alone).
    Ship {
        /// The run directory.
        #[arg(long)]
        run_dir: PathBuf,
        /// Where the shipped model goes (e.g. models/omniglot/maml-5way-1shot).
        #[arg(long)]
        to: PathBuf,
        /// Also measure the model at these numbers of classes per episode (e.g. 20), recorded
        /// in RESULT.json's `also`.
        #[arg(long, value_delimiter = ',')]
        also_ways: Vec<usize>,
    },
    /// Adapt the best model of a run to your labelled images and classify new ones.
    Adapt {
        /// The run directory.
        #[arg(long)]
        run_dir: PathBuf,
        /// Labelled images: one subfolder per class (PNG or JPEG).
        #[arg(long)]
        support: PathBuf,
        /// Images to classify (any depth).
        #[arg(long)]
        query: PathBuf,
        /// Adaptation steps (default: the experiment's test steps).
        #[arg(long)]
        steps: Option<usize>,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum ProgressArg {
    Auto,
    Bar,
    Lines,
    Quiet,
}

fn run(cli: Cli) -> metalearn::Result<()> {
    match cli.command {
        Command::Train {
            experiment,
            run_dir,
            backend,
            progress,
        } => {
            let mut exp = Experiment::load(&experiment)?;
            if let Some(b) = backend {
                exp = exp.with_backend(b);
            }
            let progress = match progress {
                ProgressArg::Auto => Progress::Auto,
                ProgressArg::Bar => Progress::Bar,
                ProgressArg::Lines => Progress::Lines,
                ProgressArg::Quiet => Progress::Quiet,
            };
            let s = train(&exp, &run_dir, progress)?;
            if let Some(from) = s.resumed_from {
                eprintln!("resumed from the checkpoint of iteration {from}");
            }
            match s.state.best {
                Some(b) => println!(
                    "{}: {} iterations; best validation {:.4} ± {:.4} at iteration {} (in {})",
                    exp.title(),
                    s.iterations,
                    b.mean,
                    b.ci95,
                    b.iteration,
                    run_dir.join("best").display()
                ),
                None => println!("{}: {} iterations", exp.title(), s.iterations),
            }
            if s.state.stopped_early {
                println!("stopped early: no better validation score in `patience` validations");
            }
            Ok(())
        }
        Command::Eval {
            run_dir,
            episodes,
            ways,
            shots,
            steps,
            curve,
            transfer,
            transductive,
            json,
        } => {
            let r = eval(
                &run_dir,
                EvalOverrides {
                    episodes,
                    ways,
                    shots,
                    steps,
                    curve,
                    transfer,
                    transductive,
                },
            )?;
            if json {
                println!("{}", to_json(&r)?);
            } else {
                println!("{}", r.line());
                print!("{}", r.curve_table());
            }
            Ok(())
        }
        Command::Ship {
            run_dir,
            to,
            also_ways,
        } => {
            let r = ship(&run_dir, &to, git_commit(), &also_ways)?;
            println!("{}", r.test.line());
            for a in &r.also {
                println!("{}", a.line());
            }
            println!(
                "shipped to {} ({} iterations trained in {})",
                to.display(),
                r.iterations_trained,
                metalearn::train::format_duration(r.training_seconds)
            );
            Ok(())
        }
        Command::Search { file, run_dir } => {
            let f = SearchFile::load(&file)?;
            let r = search(&f, &run_dir)?;
            if r.resumed > 0 {
                eprintln!(
                    "resumed: {} evaluations read back from the journal",
                    r.resumed
                );
            }
            if let Some(b) = r.best() {
                println!(
                    "best of {} candidates: {} (score {:.4}); journal in {}",
                    r.records.len(),
                    b.label,
                    b.score,
                    run_dir.join("journal.jsonl").display()
                );
            }
            Ok(())
        }
        Command::Adapt {
            run_dir,
            support,
            query,
            steps,
            json,
        } => {
            let predictions = adapt(&run_dir, &support, &query, steps)?;
            if json {
                println!("{}", to_json(&predictions)?);
            } else {
                for p in predictions {
                    println!("{}\t{}\t{:.3}", p.file, p.class, p.probability);
                }
            }
            Ok(())
        }
    }
}

/// The commit of the current git checkout, `-dirty` when tracked files differ from it.
fn git_commit() -> Option<String> {
    let out = std::process::Command::new("git")
        .args([
            "describe",
            "--always",
            "--dirty",
            "--abbrev=40",
            "--exclude=*",
        ])
        .output()
        .ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
}

fn to_json<T: serde::Serialize>(value: &T) -> metalearn::Result<String> {
    serde_json::to_string_pretty(value)
        .map_err(|e| metalearn::core::Error::Serde(e.to_string()).into())
}

fn main() -> ExitCode {
    metalearn::train::allocator::keep_freed_memory_mapped();
    match run(Cli::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}
