//! Getting a verified archive on disk: from `--from DIR`, a `--mirror`, or the official
//! host; size and checksum checked before anyone extracts it.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

use crate::checksum::{self, Checksum};
use crate::download::{Downloader, RetryPolicy};
use crate::sources::Archive;

/// Where archives come from and how they are checked (the shared `fetch-data` flags).
#[derive(Clone, Debug, Default)]
pub struct SourceOptions {
    /// `--from DIR`: archives the user already has (never modified or deleted).
    pub from: Option<PathBuf>,
    /// `--mirror URL`: fetch `URL/<archive file name>` instead of the official URL.
    pub mirror: Option<String>,
    /// `--checksums FILE`, parsed: replaces the pinned checksum of the named archives.
    pub checksums: HashMap<String, Checksum>,
    /// `--accept-unpinned`: use archives that have no checksum at all (prints their SHA-256).
    pub accept_unpinned: bool,
    /// `--retries` / `--retry-delay-ms`: how a cut download is retried within one run.
    pub retry: RetryPolicy,
}

impl SourceOptions {
    /// The checksum and size an archive must have, with overrides applied.
    fn expectations(&self, archive: &Archive) -> (Option<Checksum>, Option<u64>) {
        match self.checksums.get(archive.file_name) {
            // A repackaging mirror has another size too.
            Some(sum) => (Some(sum.clone()), None),
            None => (archive.pin.checksum(), archive.size),
        }
    }

    /// The URL an archive is downloaded from.
    pub fn url_for(&self, archive: &Archive) -> String {
        match &self.mirror {
            Some(m) => format!("{}/{}", m.trim_end_matches('/'), archive.file_name),
            None => archive.url.to_string(),
        }
    }

    /// Whether `obtain` would contact the official host (Cityscapes then needs a login).
    pub fn needs_official_download(&self, archive: &Archive, download_dir: &Path) -> bool {
        self.from.is_none()
            && self.mirror.is_none()
            && !download_dir.join(archive.file_name).exists()
    }
}

/// Returns the path of a complete, verified copy of `archive`, downloading it into
/// `download_dir` when needed. A downloaded file that fails its checksum is renamed to
/// `<name>.corrupt` (so the next run downloads it again) and the run stops with an error.
pub fn obtain(
    archive: &Archive,
    opts: &SourceOptions,
    download_dir: &Path,
    downloader: &Downloader,
) -> Result<PathBuf> {
    let (checksum, size) = opts.expectations(archive);
    if checksum.is_none() && !opts.accept_unpinned {
        bail!(
            "no checksum is known for {name} (none is published). Pass its checksum with \
             --checksums FILE (JSON: {{\"{name}\": {{\"sha256\": \"...\"}}}}), or pass \
             --accept-unpinned to use it unverified (its SHA-256 is then printed so you can \
             pin it)",
            name = archive.file_name
        );
    }
    let (path, downloaded) = match &opts.from {
        Some(dir) => {
            let p = dir.join(archive.file_name);
            if !p.is_file() {
                bail!(
                    "--from {}: {} is missing; put the archive there (official URL: {}) or \
                     drop --from to download it",
                    dir.display(),
                    archive.file_name,
                    archive.url
                );
            }
            (p, false)
        }
        None => {
            let p = download_dir.join(archive.file_name);
            if !p.is_file() {
                let url = opts.url_for(archive);
                println!("downloading {url}");
                downloader.fetch(&url, &p, size)?;
            }
            (p, true)
        }
    };
    if let Some(size) = size {
        let len = std::fs::metadata(&path)
            .with_context(|| format!("cannot read {}", path.display()))?
            .len();
        if len != size {
            let hint = if downloaded {
                quarantine(&path)
            } else {
                String::new()
            };
            bail!(
                "{} has {len} bytes, the official file has {size}: truncated or another \
                 file{hint}",
                path.display()
            );
        }
    }
    match checksum {
        Some(sum) => {
            if let Err(e) = sum.verify(&path) {
                let hint = if downloaded {
                    quarantine(&path)
                } else {
                    String::new()
                };
                return Err(e.context(format!("{} failed verification{hint}", archive.file_name)));
            }
        }
        None => {
            let sha = checksum::sha256_file(&path)?;
            eprintln!(
                "warning: {} is UNVERIFIED (no published checksum); its sha256 is {sha}. Pin it \
                 with --checksums to detect changes next time",
                path.display()
            );
        }
    }
    Ok(path)
}

/// Moves a bad download aside so that the next run fetches it again; returns a hint.
fn quarantine(path: &Path) -> String {
    let mut bad = path.as_os_str().to_os_string();
    bad.push(".corrupt");
    match std::fs::rename(path, &bad) {
        Ok(()) => format!(
            " (moved to {}; run again to download it anew)",
            Path::new(&bad).display()
        ),
        Err(_) => format!(" (delete {} and run again)", path.display()),
    }
}
