//! Project automation: `cargo xtask <command>`.
//!
//! - `cargo xtask bench [--quick] [--backend flex|ndarray|wgpu] [--suite NAME] [...]`: run the
//!   benchmark suites (release build) and write reports under `target/bench/`;
//!   `--suite speed --peers PYTHON` times our workloads and PyTorch's side by side.
//! - `cargo xtask criterion`: run the criterion micro-benchmarks in `benches/`.
//! - `cargo xtask tidy`: repository rules the compiler does not check (`tidy.rs`); CI runs it.

mod tidy;

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand};
use std::process::Command;

#[derive(Parser)]
#[command(about = "metalearn project tasks")]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run the benchmark suites and write reports to target/bench/.
    Bench {
        /// Arguments for the suite runner (see `cargo xtask bench -- --help`).
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// Check the repository rules: `#[ignore]` reasons, loud real-data skips, documented
    /// public items, crate layering.
    Tidy,
    /// Run the criterion micro-benchmarks.
    Criterion {
        /// Extra arguments for criterion (e.g. a filter).
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
}

fn cargo() -> Command {
    Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
}

fn wants_wgpu(args: &[String]) -> bool {
    args.windows(2)
        .any(|w| w[0] == "--backend" && (w[1] == "wgpu" || w[1] == "gpu"))
        || args
            .iter()
            .any(|a| a == "--backend=wgpu" || a == "--backend=gpu")
}

fn run(mut cmd: Command) -> Result<()> {
    let status = cmd.status().context("failed to start cargo")?;
    if !status.success() {
        bail!("command failed: {status}");
    }
    Ok(())
}

fn main() -> Result<()> {
    match Cli::parse().command {
        Cmd::Bench { args } => {
            let mut cmd = cargo();
            cmd.args([
                "run",
                "--release",
                "--package",
                "metalearn-benches",
                "--bin",
                "metalearn-bench",
            ]);
            if wants_wgpu(&args) {
                cmd.args(["--features", "wgpu"]);
            }
            cmd.arg("--").args(&args);
            run(cmd)
        }
        Cmd::Tidy => {
            let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
            let problems = tidy::check(&root);
            for p in &problems {
                eprintln!("tidy: {p}");
            }
            if !problems.is_empty() {
                bail!("{} tidy problem(s)", problems.len());
            }
            println!("tidy: ok");
            Ok(())
        }
        Cmd::Criterion { args } => {
            let mut cmd = cargo();
            cmd.args([
                "bench",
                "--package",
                "metalearn-benches",
                "--bench",
                "bench_main",
                "--",
            ]);
            cmd.args(&args);
            run(cmd)
        }
    }
}
