//! `cargo xtask tidy`: repository rules a compiler does not check, in the spirit of
//! rust-analyzer's tidy tests. Each rule reads files as text and reports `file:line: what`.
//!
//! - `#[ignore]` needs a reason: `#[ignore = "why"]`.
//! - A real-data test (`tests/`) that reads `METALEARN_DATA` must skip *loudly* when it is unset (a
//!   `SKIPPED` message) and must not swallow a failed load when it is set (no `.ok()`,
//!   `if let Ok`, `unwrap_or` on a load, no `Err(_) => return`).
//! - Every library crate denies undocumented public items: its `lib.rs` has
//!   `#![warn(missing_docs)]` (CI's clippy turns warnings into errors).
//! - Crates depend on siblings only as the layering rules in `docs/ARCHITECTURE.md` say
//!   ([`ALLOWED`]).
//! - Library crates name no backend: their `[dependencies]` neither enable metalearn-core's CPU
//!   backend features (`flex`, `ndarray`) nor depend on a backend crate, and the workspace takes
//!   metalearn-core without its default features; only [`BACKEND_CHOOSERS`] pick backends.

use std::path::{Path, PathBuf};

/// The layering rules of docs/ARCHITECTURE.md: each crate and the sibling crates its
/// `[dependencies]` may name (dev-dependencies are free).
pub const ALLOWED: &[(&str, &[&str])] = &[
    ("core", &[]),
    ("tasks", &["core"]),
    ("zoo", &["core"]),
    ("update", &["core"]),
    ("eval", &["core"]),
    ("search", &["core", "tasks", "zoo", "update"]),
    ("train", &["core", "eval"]),
    (
        "metalearn",
        &["core", "tasks", "zoo", "update", "search", "eval", "train"],
    ),
];

/// The crates whose `[dependencies]` may compile CPU backends in (the command, which switches
/// between them at run time). Benches and xtask are not library crates and are not checked.
pub const BACKEND_CHOOSERS: &[&str] = &["metalearn"];

/// Lines of a manifest's `[dependencies]` table that compile a CPU backend in: a non-optional
/// backend crate, or metalearn-core with its `flex` / `ndarray` feature.
pub fn backend_dependencies(manifest: &str) -> Vec<String> {
    dependency_lines(manifest)
        .filter(|t| {
            // Optional ones are core's, behind its features.
            let backend_crate = (t.starts_with("burn-flex") || t.starts_with("burn-ndarray"))
                && !t.contains("optional = true");
            let core_feature = t.starts_with("metalearn-core")
                && (t.contains("\"flex\"") || t.contains("\"ndarray\""));
            backend_crate || core_feature
        })
        .map(str::to_string)
        .collect()
}

/// The trimmed lines of a manifest's `[dependencies]` table.
fn dependency_lines(manifest: &str) -> impl Iterator<Item = &str> {
    let mut in_deps = false;
    manifest.lines().map(str::trim).filter(move |t| {
        if t.starts_with('[') {
            in_deps = *t == "[dependencies]";
            return false;
        }
        in_deps
    })
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    let mut paths: Vec<PathBuf> = entries.filter_map(|e| e.ok().map(|e| e.path())).collect();
    paths.sort();
    for p in paths {
        let name = p.file_name().and_then(|n| n.to_str()).unwrap_or("");
        if p.is_dir() {
            if name != "target" && !name.starts_with('.') {
                rust_files(&p, out);
            }
        } else if name.ends_with(".rs") {
            out.push(p);
        }
    }
}

/// Problems with `#[ignore]` and real-data tests in the Rust file `path` holding `text`.
pub fn check_tests(path: &Path, text: &str) -> Vec<String> {
    let mut problems = Vec::new();
    let at = |i: usize, what: &str| format!("{}:{}: {what}", path.display(), i + 1);
    for (i, line) in text.lines().enumerate() {
        let t = line.trim();
        if t.starts_with("#[ignore]") || t.starts_with("#[ignore ]") {
            problems.push(at(
                i,
                "#[ignore] without a reason (write #[ignore = \"why\"])",
            ));
        }
    }
    let reads_data =
        text.contains("var_os(\"METALEARN_DATA\")") || text.contains("var(\"METALEARN_DATA\")");
    // Real-data tests are integration tests (`tests/`); a library that reads the variable to
    // find its data is not one.
    let is_test = path.components().any(|c| c.as_os_str() == "tests");
    if reads_data && is_test {
        if !text.contains("SKIPPED") {
            problems.push(at(
                0,
                "reads METALEARN_DATA but never says SKIPPED: a real-data test must skip loudly",
            ));
        }
        for (i, line) in text.lines().enumerate() {
            let loads = line.contains("Omniglot::load") || line.contains("load_from(");
            let swallows =
                line.contains(".ok()") || line.contains("if let Ok") || line.contains("unwrap_or");
            if loads && swallows {
                problems.push(at(
                    i,
                    "a failed data load is swallowed: with METALEARN_DATA set, missing data \
                     must fail the test",
                ));
            }
            if line.contains("Err(_) => return") {
                problems.push(at(i, "an error ends the test silently (Err(_) => return)"));
            }
        }
    }
    problems
}

/// The sibling crates (`metalearn-*`) named in the `[dependencies]` table of a manifest.
pub fn sibling_dependencies(manifest: &str) -> Vec<String> {
    dependency_lines(manifest)
        .filter_map(|t| t.strip_prefix("metalearn-"))
        .map(|rest| {
            rest.chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect()
        })
        .collect()
}

/// Every rule over the repository at `root`; the problems found (empty: tidy).
pub fn check(root: &Path) -> Vec<String> {
    let mut problems = Vec::new();
    let mut files = Vec::new();
    for dir in ["crates", "benches", "xtask"] {
        rust_files(&root.join(dir), &mut files);
    }
    for f in &files {
        if f.ends_with("xtask/src/tidy.rs") {
            continue; // the rules' own text and tests
        }
        match std::fs::read_to_string(f) {
            Ok(text) => problems.extend(check_tests(f.strip_prefix(root).unwrap_or(f), &text)),
            Err(e) => problems.push(format!("{}: {e}", f.display())),
        }
    }
    let workspace = std::fs::read_to_string(root.join("Cargo.toml")).unwrap_or_default();
    let core_entry = workspace
        .lines()
        .find(|l| l.trim_start().starts_with("metalearn-core"));
    if !core_entry.is_some_and(|l| l.contains("default-features = false")) {
        problems.push(
            "Cargo.toml: the workspace's metalearn-core entry must say `default-features = false` \
             (otherwise every library crate compiles both CPU backends)"
                .to_string(),
        );
    }
    let crates = root.join("crates");
    let mut found = Vec::new();
    if let Ok(entries) = std::fs::read_dir(&crates) {
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if e.path().join("Cargo.toml").exists() {
                found.push(name);
            }
        }
    }
    found.sort();
    for name in found {
        let dir = crates.join(&name);
        let Some((_, allowed)) = ALLOWED.iter().find(|(c, _)| *c == name) else {
            problems.push(format!(
                "crates/{name}: not in the layering rules (xtask/src/tidy.rs ALLOWED and \
                 docs/ARCHITECTURE.md \"Layering rules\")"
            ));
            continue;
        };
        let manifest = std::fs::read_to_string(dir.join("Cargo.toml")).unwrap_or_default();
        for dep in sibling_dependencies(&manifest) {
            if !allowed.contains(&dep.as_str()) {
                problems.push(format!(
                    "crates/{name}/Cargo.toml: depends on metalearn-{dep}, which the layering \
                     rules do not allow (allowed: {})",
                    if allowed.is_empty() {
                        "none".to_string()
                    } else {
                        allowed.join(", ")
                    }
                ));
            }
        }
        if !BACKEND_CHOOSERS.contains(&name.as_str()) {
            for line in backend_dependencies(&manifest) {
                problems.push(format!(
                    "crates/{name}/Cargo.toml: `{line}` compiles a CPU backend into a library \
                     crate (generic code takes `B: Backend`; enable backends in \
                     [dev-dependencies] for tests)"
                ));
            }
        }
        let lib = std::fs::read_to_string(dir.join("src/lib.rs")).unwrap_or_default();
        if !lib.contains("#![warn(missing_docs)]") && !lib.contains("#![deny(missing_docs)]") {
            problems.push(format!(
                "crates/{name}/src/lib.rs: no #![warn(missing_docs)] (every public item needs docs)"
            ));
        }
    }
    problems
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_rule_fires_and_the_repository_is_tidy() {
        let p = Path::new("crates/x/tests/t.rs");
        let bad_ignore = "#[test]\n#[ignore]\nfn slow() {}\n";
        assert_eq!(check_tests(p, bad_ignore).len(), 1);
        assert!(check_tests(p, "#[test]\n#[ignore = \"slow\"]\nfn slow() {}\n").is_empty());
        let silent = "#[test]\nfn t() { let Some(d) = std::env::var_os(\"METALEARN_DATA\") \
                      else { return }; }\n";
        assert_eq!(check_tests(p, silent).len(), 1, "no SKIPPED message");
        let swallowed = "#[test]\nfn t() { let d = std::env::var_os(\"METALEARN_DATA\"); \
                         eprintln!(\"SKIPPED\");\nlet o = Omniglot::load(None, &c).ok();\n}\n";
        assert_eq!(
            check_tests(p, swallowed).len(),
            1,
            "{:?}",
            check_tests(p, swallowed)
        );
        let deps = "[package]\nname = \"x\"\n[dependencies]\nmetalearn-core = { workspace = \
                    true }\nmetalearn-train = { workspace = true }\n[dev-dependencies]\n\
                    metalearn-update = { workspace = true }\n";
        assert_eq!(sibling_dependencies(deps), vec!["core", "train"]);
        assert!(backend_dependencies(deps).is_empty());
        let picks = "[dependencies]\nmetalearn-core = { workspace = true, features = \
                     [\"flex\"] }\nburn-ndarray = \"0.21\"\n[dev-dependencies]\n\
                     metalearn-core = { workspace = true, features = [\"ndarray\"] }\n";
        assert_eq!(
            backend_dependencies(picks).len(),
            2,
            "{:?}",
            backend_dependencies(picks)
        );
        // The repository itself follows every rule.
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        let problems = check(&root);
        assert!(problems.is_empty(), "{}", problems.join("\n"));
    }
}
