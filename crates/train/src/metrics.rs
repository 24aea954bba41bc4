//! The metrics log: one JSON object per line, per meta-iteration and per validation.

use crate::files::write_atomic;
use crate::{Error, Result};
use serde::{Deserialize, Serialize};
use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};

/// What a validation score measures.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Metric {
    /// Query accuracy (classification; higher is better).
    Accuracy,
    /// Query loss (regression; lower is better).
    Loss,
}

/// One line of `metrics.jsonl`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Record {
    /// One meta-iteration.
    Step {
        /// Global iteration index (0-based).
        iteration: usize,
        /// Mean post-adaptation query loss of the meta-batch.
        meta_loss: f64,
        /// Mean post-adaptation query accuracy (classification).
        meta_accuracy: Option<f64>,
        /// Wall time of this meta-iteration (sampling and update), ms.
        ms: f64,
        /// Training wall time so far, over every session of the run, s.
        elapsed_s: f64,
    },
    /// A validation on held-out tasks.
    Validation {
        /// Meta-iterations done when it ran (0: before training).
        iteration: usize,
        /// What `mean` measures.
        metric: Metric,
        /// Mean over validation episodes.
        mean: f64,
        /// 95% confidence half-width.
        ci95: f64,
        /// Episodes evaluated.
        episodes: usize,
        /// Whether this is the best score so far (the model was saved to `best/`).
        best: bool,
    },
}

impl Record {
    /// The iteration the record belongs to.
    pub fn iteration(&self) -> usize {
        match self {
            Self::Step { iteration, .. } | Self::Validation { iteration, .. } => *iteration,
        }
    }

    /// The record with its wall times set to zero: what two runs of the same seed must agree on.
    pub fn without_times(self) -> Self {
        match self {
            Self::Step {
                iteration,
                meta_loss,
                meta_accuracy,
                ..
            } => Self::Step {
                iteration,
                meta_loss,
                meta_accuracy,
                ms: 0.0,
                elapsed_s: 0.0,
            },
            v => v,
        }
    }

    /// Whether the record describes the state after `done` iterations or earlier.
    fn within(&self, done: usize) -> bool {
        match self {
            Self::Step { iteration, .. } => *iteration < done,
            Self::Validation { iteration, .. } => *iteration <= done,
        }
    }
}

/// Appends records to a run's `metrics.jsonl`.
#[derive(Debug)]
pub struct MetricsLog {
    path: PathBuf,
    file: File,
}

impl MetricsLog {
    /// Open `path` for a run that has done `done` iterations: records of later iterations (left
    /// by a run that crashed after its last checkpoint) and a partly written last line are
    /// dropped, so the log continues exactly where the restored state is. `done = 0` with no
    /// checkpoint starts an empty log.
    pub fn open(path: &Path, done: Option<usize>) -> Result<Self> {
        let kept = match done {
            Some(done) => read(path)?.into_iter().filter(|r| r.within(done)).collect(),
            None => Vec::new(),
        };
        let mut text = String::new();
        for r in &kept {
            text.push_str(&line(r)?);
        }
        write_atomic(path, text.as_bytes())?;
        let file = OpenOptions::new()
            .append(true)
            .open(path)
            .map_err(|e| Error::io(path, e))?;
        Ok(Self {
            path: path.to_path_buf(),
            file,
        })
    }

    /// Append one record (flushed at once, so a crash loses at most the line being written).
    pub fn push(&mut self, record: &Record) -> Result<()> {
        self.file
            .write_all(line(record)?.as_bytes())
            .and_then(|()| self.file.flush())
            .map_err(|e| Error::io(&self.path, e))
    }
}

fn line(r: &Record) -> Result<String> {
    let mut s =
        serde_json::to_string(r).map_err(|e| metalearn_core::Error::Serde(e.to_string()))?;
    s.push('\n');
    Ok(s)
}

/// Every complete record in a `metrics.jsonl` (missing file: none). A line that does not parse
/// — the partly written last line of a killed run — ends the log.
pub fn read(path: &Path) -> Result<Vec<Record>> {
    let f = match File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(Error::io(path, e)),
    };
    let mut out = Vec::new();
    for l in BufReader::new(f).lines() {
        let l = l.map_err(|e| Error::io(path, e))?;
        match serde_json::from_str::<Record>(&l) {
            Ok(r) => out.push(r),
            Err(_) => break,
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn step(i: usize) -> Record {
        Record::Step {
            iteration: i,
            meta_loss: 1.0 / (i + 1) as f64,
            meta_accuracy: None,
            ms: 1.0,
            elapsed_s: i as f64,
        }
    }

    #[test]
    fn reopening_drops_what_came_after_the_checkpoint() {
        let dir = std::env::temp_dir().join(format!("ml-metrics-{}", std::process::id()));
        let path = dir.join("metrics.jsonl");
        let mut log = MetricsLog::open(&path, None).unwrap();
        for i in 0..6 {
            log.push(&step(i)).unwrap();
        }
        log.push(&Record::Validation {
            iteration: 4,
            metric: Metric::Loss,
            mean: 0.5,
            ci95: 0.1,
            episodes: 3,
            best: true,
        })
        .unwrap();
        drop(log);
        // A half-written line, as after `kill -9`.
        let mut f = OpenOptions::new().append(true).open(&path).unwrap();
        f.write_all(b"{\"kind\":\"step\",\"itera").unwrap();
        drop(f);
        assert_eq!(read(&path).unwrap().len(), 7);
        let log = MetricsLog::open(&path, Some(4)).unwrap();
        drop(log);
        let r = read(&path).unwrap();
        assert_eq!(r.len(), 5, "{r:?}");
        assert_eq!(r.iter().map(Record::iteration).max(), Some(4));
        let _ = MetricsLog::open(&path, None).unwrap();
        assert!(read(&path).unwrap().is_empty());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
