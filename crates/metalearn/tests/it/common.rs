//! Helpers shared by the command's integration tests.
#![allow(dead_code, clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// A fresh temporary directory for test `name`.
pub fn temp(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("ml-cli-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    d
}

/// `metalearn ARGS…` to completion; fails the test (showing its stderr) on error.
pub fn run_ok<S: AsRef<std::ffi::OsStr>>(args: impl IntoIterator<Item = S>) -> Output {
    let out = Command::new(env!("CARGO_BIN_EXE_metalearn"))
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// `metalearn SUBCOMMAND FILE --run-dir DIR` (quiet), to completion; fails the test on error.
pub fn run_to_end(subcommand: &str, file: &Path, dir: &Path) -> Output {
    run_ok([
        subcommand.as_ref(),
        file.as_os_str(),
        "--run-dir".as_ref(),
        dir.as_os_str(),
    ])
}

/// Start `metalearn SUBCOMMAND FILE --run-dir DIR` in the background.
pub fn spawn(subcommand: &str, file: &Path, dir: &Path) -> Child {
    Command::new(env!("CARGO_BIN_EXE_metalearn"))
        .arg(subcommand)
        .arg(file)
        .arg("--run-dir")
        .arg(dir)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap()
}

/// `kill -9` the child as soon as `ready()` holds. Fails if the child ends first or if
/// nothing happens for 300 s (a watchdog: a hang must fail, not stall CI).
pub fn kill_when(child: &mut Child, ready: impl Fn() -> bool, what: &str) {
    let start = Instant::now();
    while !ready() {
        if let Some(status) = child.try_wait().unwrap() {
            panic!("the process ended ({status}) before {what}: give it more work");
        }
        assert!(
            start.elapsed() < Duration::from_secs(300),
            "watchdog: no {what} after 300 s"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    child.kill().unwrap(); // SIGKILL on Unix
    child.wait().unwrap();
}
