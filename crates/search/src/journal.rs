//! The search journal: one JSON line per evaluated candidate, appended and flushed to disk
//! (`fsync`) before the search goes on, so that a search killed at any moment resumes from it.

use crate::space::Architecture;
use crate::{Error, Result};
use serde::{Deserialize, Serialize};
use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

/// One evaluated candidate.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Record {
    /// Position in the search (0-based).
    pub index: usize,
    /// The candidate.
    pub architecture: Architecture,
    /// `name=value, …` for readers of the file.
    pub label: String,
    /// Its score (higher is better).
    pub score: f64,
    /// Wall-clock seconds its evaluation took.
    pub wall_seconds: f64,
    /// The seed its evaluation used.
    pub seed: u64,
    /// Why the evaluation failed (its adaptation diverged, burn panicked); its score is then
    /// [`FAILED_SCORE`](crate::FAILED_SCORE).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failure: Option<String>,
    /// The [`SearchConfig::parallel`](crate::SearchConfig) of the search that wrote it (checked
    /// on resume).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parallel: Option<usize>,
}

/// An open journal.
#[derive(Debug)]
pub struct Journal {
    path: PathBuf,
    file: File,
}

fn io(path: &Path, source: std::io::Error) -> Error {
    Error::Io {
        path: path.display().to_string(),
        source,
    }
}

impl Journal {
    /// Open (or create) the journal at `path` and read the records already in it.
    ///
    /// A torn last line (a write cut short by a crash: no final newline, or not valid JSON) is
    /// reported on stderr, dropped, and cut from the file so that new records append cleanly.
    /// A bad line before the last one is [`Error::Journal`] (the file was damaged otherwise).
    pub fn open(path: &Path) -> Result<(Self, Vec<Record>)> {
        let mut text = String::new();
        if path.exists() {
            File::open(path)
                .and_then(|mut f| f.read_to_string(&mut text))
                .map_err(|e| io(path, e))?;
        }
        let mut records = Vec::new();
        let mut good_len = 0usize;
        let mut offset = 0usize;
        let lines: Vec<&str> = text.split_inclusive('\n').collect();
        for (k, line) in lines.iter().enumerate() {
            let last = k + 1 == lines.len();
            let complete = line.ends_with('\n');
            let parsed = serde_json::from_str::<Record>(line.trim_end());
            match parsed {
                Ok(r) if complete => {
                    if r.index != records.len() {
                        return Err(Error::Journal {
                            path: path.display().to_string(),
                            line: k + 1,
                            message: format!(
                                "record {} where {} was expected",
                                r.index,
                                records.len()
                            ),
                        });
                    }
                    records.push(r);
                    offset += line.len();
                    good_len = offset;
                }
                _ if last => {
                    eprintln!(
                        "warning: {}: dropping a torn last line ({} bytes) left by an interrupted \
                         write; that candidate will be evaluated again",
                        path.display(),
                        line.len()
                    );
                }
                Err(e) => {
                    return Err(Error::Journal {
                        path: path.display().to_string(),
                        line: k + 1,
                        message: e.to_string(),
                    })
                }
                Ok(_) => {
                    return Err(Error::Journal {
                        path: path.display().to_string(),
                        line: k + 1,
                        message: "line without its newline before the end of the file".into(),
                    })
                }
            }
        }
        if good_len < text.len() {
            let f = OpenOptions::new()
                .write(true)
                .open(path)
                .map_err(|e| io(path, e))?;
            f.set_len(good_len as u64).map_err(|e| io(path, e))?;
            f.sync_all().map_err(|e| io(path, e))?;
        }
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|e| io(dir, e))?;
        }
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .map_err(|e| io(path, e))?;
        Ok((
            Self {
                path: path.to_path_buf(),
                file,
            },
            records,
        ))
    }

    /// Append `record` as one line and flush it to disk.
    pub fn append(&mut self, record: &Record) -> Result<()> {
        let mut line = serde_json::to_string(record).map_err(|e| Error::Journal {
            path: self.path.display().to_string(),
            line: record.index + 1,
            message: e.to_string(),
        })?;
        line.push('\n');
        self.file
            .write_all(line.as_bytes())
            .and_then(|()| self.file.sync_data())
            .map_err(|e| io(&self.path, e))
    }

    /// The file.
    pub fn path(&self) -> &Path {
        &self.path
    }
}
