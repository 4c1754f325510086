//! What every dataset preparation shares: the folders under the root, the `.ready` marker,
//! atomic list files and idempotent moves (so an interrupted preparation can be rerun).

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

use crate::fetch::SourceOptions;

/// Options of `fetch-data` common to every dataset.
#[derive(Clone, Debug)]
pub struct DatasetOptions {
    /// The dataset folder the data crate reads (e.g. `data/pascal`).
    pub root: PathBuf,
    pub sources: SourceOptions,
    /// Check the official image counts (off for small test mirrors: `--skip-count-check`).
    pub check_counts: bool,
}

impl DatasetOptions {
    pub fn downloads(&self) -> PathBuf {
        self.root.join("downloads")
    }
    /// Extraction happens here; removed after success.
    pub fn staging(&self) -> PathBuf {
        self.root.join(".staging")
    }
    pub fn ready_marker(&self) -> PathBuf {
        self.root.join(".ready")
    }
    pub fn is_ready(&self) -> bool {
        self.ready_marker().is_file()
    }

    /// The first step of every preparation: `false` (and a line saying why) when the
    /// folder is already prepared, so a rerun does nothing; otherwise creates the root.
    pub fn begin(&self) -> Result<bool> {
        if self.is_ready() {
            println!(
                "{} is already prepared ({} exists); delete that file to prepare it again",
                self.root.display(),
                self.ready_marker().display()
            );
            return Ok(false);
        }
        std::fs::create_dir_all(&self.root)
            .with_context(|| format!("cannot create {}", self.root.display()))?;
        Ok(true)
    }

    /// Writes `.ready` (last step of a successful preparation) and removes the staging folder.
    pub fn mark_ready(&self, summary: &str) -> Result<()> {
        reco_util::fs::write_atomic(&self.ready_marker(), summary.as_bytes())?;
        let staging = self.staging();
        if staging.exists() {
            std::fs::remove_dir_all(&staging)
                .with_context(|| format!("cannot remove {}", staging.display()))?;
        }
        Ok(())
    }

    /// Fails when a count differs from the official one, unless checks are off.
    pub fn check_count(&self, what: &str, got: usize, expected: usize) -> Result<()> {
        if self.check_counts && got != expected {
            bail!(
                "{what}: found {got}, the official release has {expected}. The archives are \
                 not the official ones (use --skip-count-check only for test mirrors)"
            );
        }
        Ok(())
    }
}

/// Writes one id per line, atomically.
pub fn write_list(path: &Path, ids: &[String]) -> Result<()> {
    let mut text = ids.join("\n");
    text.push('\n');
    Ok(reco_util::fs::write_atomic(path, text.as_bytes())?)
}

/// Reads a list file (one id per line; blank lines ignored).
pub fn read_list(path: &Path) -> Result<Vec<String>> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read the list {}", path.display()))?;
    Ok(text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(str::to_string)
        .collect())
}

/// Moves `src` to `dst` (same file system: a rename). Idempotent: when `src` is gone but
/// `dst` exists, an earlier interrupted run already moved it.
pub fn move_into(src: &Path, dst: &Path) -> Result<()> {
    if src.exists() {
        if let Some(dir) = dst.parent() {
            std::fs::create_dir_all(dir)
                .with_context(|| format!("cannot create {}", dir.display()))?;
        }
        std::fs::rename(src, dst)
            .with_context(|| format!("cannot move {} to {}", src.display(), dst.display()))
    } else if dst.exists() {
        Ok(())
    } else {
        bail!(
            "{} is missing from the archive (and {} does not exist yet)",
            src.display(),
            dst.display()
        )
    }
}

/// Tells the user what is ready and what may be deleted.
pub fn report(opts: &DatasetOptions, name: &str) {
    println!("{name} is ready in {}", opts.root.display());
    let downloads = opts.downloads();
    if downloads.is_dir() {
        println!(
            "the downloaded archives stay in {} (delete them to free space, keep them to \
             rebuild without downloading)",
            downloads.display()
        );
    }
}

/// Puts a copy of `src` at `dst` without touching `src` (a hard link when possible, else a
/// atomic copy). Does nothing when `dst` exists: an interrupted run made it.
pub fn link_or_copy(src: &Path, dst: &Path) -> Result<()> {
    if dst.exists() {
        return Ok(());
    }
    if std::fs::hard_link(src, dst).is_ok() {
        return Ok(());
    }
    reco_util::fs::copy_atomic(src, dst)
        .with_context(|| format!("cannot copy {} to {}", src.display(), dst.display()))
}
