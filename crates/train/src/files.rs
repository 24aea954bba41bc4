//! Crash-safe files: atomic writes and the checkpoint directory.

use crate::{Error, Result};
use std::fs::{self, File};
use std::io::Write;
use std::path::{Path, PathBuf};

/// Write `bytes` to `path` atomically: a temporary file in the same directory, fsync, rename,
/// fsync of the directory. A crash leaves either the old file or the new one, never a mix.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = dir.join(format!(".{name}.tmp"));
    {
        let mut f = File::create(&tmp).map_err(|e| Error::io(&tmp, e))?;
        f.write_all(bytes).map_err(|e| Error::io(&tmp, e))?;
        f.sync_all().map_err(|e| Error::io(&tmp, e))?;
    }
    fs::rename(&tmp, path).map_err(|e| Error::io(path, e))?;
    // Persist the rename itself (directories can be opened and synced on Unix).
    if let Ok(d) = File::open(dir) {
        let _ = d.sync_all();
    }
    Ok(())
}

/// The checkpoint file of iteration `iteration` in `dir`.
pub fn checkpoint_path(dir: &Path, iteration: usize) -> PathBuf {
    dir.join(format!("ckpt-{iteration:09}.mlstate"))
}

/// The checkpoints in `dir`, newest (highest iteration) first.
pub fn list_checkpoints(dir: &Path) -> Result<Vec<(usize, PathBuf)>> {
    if !dir.exists() {
        return Ok(Vec::new());
    }
    let mut out = Vec::new();
    for entry in fs::read_dir(dir).map_err(|e| Error::io(dir, e))? {
        let entry = entry.map_err(|e| Error::io(dir, e))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if let Some(n) = name
            .strip_prefix("ckpt-")
            .and_then(|r| r.strip_suffix(".mlstate"))
            .and_then(|n| n.parse::<usize>().ok())
        {
            out.push((n, entry.path()));
        }
    }
    out.sort_by_key(|c| std::cmp::Reverse(c.0));
    Ok(out)
}

/// Delete all but the newest `keep` checkpoints in `dir`.
pub fn prune_checkpoints(dir: &Path, keep: usize) -> Result<()> {
    for (_, path) in list_checkpoints(dir)?.into_iter().skip(keep.max(1)) {
        fs::remove_file(&path).map_err(|e| Error::io(&path, e))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn atomic_write_replaces_and_prune_keeps_newest() {
        let dir = std::env::temp_dir().join(format!("ml-files-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        let p = dir.join("a.bin");
        write_atomic(&p, b"one").unwrap();
        write_atomic(&p, b"two").unwrap();
        assert_eq!(fs::read(&p).unwrap(), b"two");
        assert!(!dir.join(".a.bin.tmp").exists());
        for i in [5, 10, 15, 20] {
            write_atomic(&checkpoint_path(&dir, i), b"x").unwrap();
        }
        write_atomic(&dir.join("ckpt-junk.mlstate"), b"x").unwrap();
        let l = list_checkpoints(&dir).unwrap();
        assert_eq!(l.iter().map(|c| c.0).collect::<Vec<_>>(), [20, 15, 10, 5]);
        prune_checkpoints(&dir, 2).unwrap();
        let l = list_checkpoints(&dir).unwrap();
        assert_eq!(l.iter().map(|c| c.0).collect::<Vec<_>>(), [20, 15]);
        fs::remove_dir_all(&dir).unwrap();
    }
}
