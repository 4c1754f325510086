//! Safe, restartable archive extraction (tar, tar.gz/tgz, zip).
//!
//! Safety: every entry name is checked before anything is written. Absolute paths, `..`
//! components and Windows prefixes end the extraction with an error (an archive that has them
//! is malicious or broken); link entries (symlinks, hard links) are never created, only
//! counted and reported, so no later entry can be redirected through one. Device files and
//! other special entries are skipped the same way.
//!
//! Restartability: `extract_once` unpacks into `<staging>/<archive name>/` and writes
//! `<staging>/<archive name>.done` only after the last entry. A folder without its `.done`
//! marker is the remains of an interrupted run: it is deleted and the extraction redone.

use std::fs::File;
use std::io::{BufReader, Read};
use std::path::{Component, Path, PathBuf};

use anyhow::{bail, Context, Result};
use indicatif::ProgressBar;

use crate::progress;

/// What an extraction did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Extracted {
    pub files: usize,
    pub skipped_links: usize,
}

/// Turns an archive entry name into a path relative to the destination, or refuses it.
/// `Ok(None)` for names that are empty after removing `./` (the archive's root entry).
pub fn safe_relative(name: &str) -> Result<Option<PathBuf>> {
    let mut out = PathBuf::new();
    for component in Path::new(name).components() {
        match component {
            Component::Normal(part) => out.push(part),
            Component::CurDir => {}
            Component::ParentDir => {
                bail!("archive entry {name:?} contains `..`: refusing to write outside the destination")
            }
            Component::RootDir | Component::Prefix(_) => {
                bail!("archive entry {name:?} is an absolute path: refusing to write outside the destination")
            }
        }
    }
    Ok(if out.as_os_str().is_empty() {
        None
    } else {
        Some(out)
    })
}

/// Extracts `archive` into `staging/<archive file name>/` unless a previous run finished it
/// (see module docs). `keep` selects entries by their (sanitised) relative path; directories
/// are created on demand. Returns the folder.
pub fn extract_once(
    archive: &Path,
    staging: &Path,
    keep: &dyn Fn(&Path) -> bool,
) -> Result<PathBuf> {
    let name = archive
        .file_name()
        .with_context(|| format!("{} is not a file name", archive.display()))?;
    let dir = staging.join(name);
    let mut marker_name = name.to_os_string();
    marker_name.push(".done");
    let marker = staging.join(marker_name);
    if marker.exists() && dir.is_dir() {
        return Ok(dir);
    }
    if dir.exists() {
        // Remains of an interrupted extraction: start over.
        std::fs::remove_dir_all(&dir)
            .with_context(|| format!("cannot remove the partial extraction {}", dir.display()))?;
    }
    std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let result = extract(archive, &dir, keep)
        .with_context(|| format!("cannot extract {}", archive.display()))?;
    if result.skipped_links > 0 {
        eprintln!(
            "note: {} link entries in {} were not extracted (links are never created)",
            result.skipped_links,
            archive.display()
        );
    }
    std::fs::write(&marker, format!("{} files\n", result.files))
        .with_context(|| format!("cannot write {}", marker.display()))?;
    Ok(dir)
}

/// Extracts the entries of `archive` selected by `keep` into `dest` (which must exist).
pub fn extract(archive: &Path, dest: &Path, keep: &dyn Fn(&Path) -> bool) -> Result<Extracted> {
    let name = archive
        .file_name()
        .map(|n| n.to_string_lossy().to_ascii_lowercase())
        .unwrap_or_default();
    let file = File::open(archive).with_context(|| format!("cannot open {}", archive.display()))?;
    let len = file.metadata().map(|m| m.len()).unwrap_or(0);
    let bar = progress::bytes_bar(len, &format!("extracting {name}"));
    let out = if name.ends_with(".zip") {
        extract_zip(file, dest, keep, &bar)
    } else if name.ends_with(".tar.gz") || name.ends_with(".tgz") {
        let reader = flate2::read::GzDecoder::new(BufReader::new(Counting::new(file, &bar)));
        extract_tar(reader, dest, keep)
    } else if name.ends_with(".tar") {
        extract_tar(BufReader::new(Counting::new(file, &bar)), dest, keep)
    } else {
        bail!(
            "{}: unknown archive type (expected .tar, .tar.gz, .tgz or .zip)",
            archive.display()
        )
    };
    bar.finish_and_clear();
    out
}

fn extract_tar(reader: impl Read, dest: &Path, keep: &dyn Fn(&Path) -> bool) -> Result<Extracted> {
    use tar::EntryType;
    let mut archive = tar::Archive::new(reader);
    let mut done = Extracted::default();
    for entry in archive
        .entries()
        .context("not a tar archive, or truncated")?
    {
        let mut entry = entry.context("truncated or corrupt tar archive")?;
        let raw = entry.path_bytes().into_owned();
        let raw = String::from_utf8_lossy(&raw).into_owned();
        let Some(rel) = safe_relative(&raw)? else {
            continue;
        };
        match entry.header().entry_type() {
            EntryType::Regular | EntryType::Continuous => {
                if keep(&rel) {
                    let target = dest.join(&rel);
                    let size = entry.size();
                    write_entry(&mut entry, &target, Some(size))
                        .with_context(|| format!("entry {raw:?}"))?;
                    done.files += 1;
                }
            }
            EntryType::Directory => {}
            EntryType::Symlink | EntryType::Link => done.skipped_links += 1,
            // pax/GNU metadata entries are consumed by the tar crate; anything else
            // (devices, fifos) has no place in a dataset.
            _ => done.skipped_links += 1,
        }
    }
    Ok(done)
}

fn extract_zip(
    file: File,
    dest: &Path,
    keep: &dyn Fn(&Path) -> bool,
    bar: &ProgressBar,
) -> Result<Extracted> {
    let mut archive = zip::ZipArchive::new(BufReader::new(file))
        .context("not a zip archive, or truncated (its central directory is missing)")?;
    let mut done = Extracted::default();
    for i in 0..archive.len() {
        let mut entry = archive
            .by_index(i)
            .with_context(|| format!("corrupt zip entry #{i}"))?;
        let raw = entry
            .name()
            .with_context(|| format!("zip entry #{i} has an unreadable name"))?
            .into_owned();
        bar.inc(entry.compressed_size());
        let Some(rel) = safe_relative(&raw)? else {
            continue;
        };
        if entry.is_symlink() {
            done.skipped_links += 1;
            continue;
        }
        if entry.is_dir() || !keep(&rel) {
            continue;
        }
        let target = dest.join(&rel);
        // The zip reader checks each entry's CRC-32 when it reaches the end.
        write_entry(&mut entry, &target, None).with_context(|| format!("entry {raw:?}"))?;
        done.files += 1;
    }
    Ok(done)
}

fn write_entry(reader: &mut impl Read, target: &Path, size: Option<u64>) -> Result<()> {
    if let Some(dir) = target.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    }
    let mut out =
        File::create(target).with_context(|| format!("cannot create {}", target.display()))?;
    let written = std::io::copy(reader, &mut out)
        .with_context(|| format!("cannot write {}", target.display()))?;
    if let Some(size) = size {
        if written != size {
            bail!(
                "the archive ends after {written} of {size} bytes of this entry: truncated archive"
            );
        }
    }
    Ok(())
}

/// Advances a progress bar by the compressed bytes read.
struct Counting<'a, R> {
    inner: R,
    bar: &'a ProgressBar,
}

impl<'a, R> Counting<'a, R> {
    fn new(inner: R, bar: &'a ProgressBar) -> Self {
        Self { inner, bar }
    }
}

impl<R: Read> Read for Counting<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.bar.inc(n as u64);
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entry_names() {
        assert_eq!(
            safe_relative("./a/b.png").unwrap(),
            Some(PathBuf::from("a/b.png"))
        );
        assert_eq!(safe_relative("./").unwrap(), None);
        assert!(safe_relative("../x").is_err());
        assert!(safe_relative("a/../../x").is_err());
        assert!(safe_relative("/etc/passwd").is_err());
    }

    fn tar_with(entries: &[(&str, &[u8])], link: Option<(&str, &str)>) -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        for (name, data) in entries {
            let mut h = tar::Header::new_gnu();
            h.set_size(data.len() as u64);
            h.set_mode(0o644);
            h.set_entry_type(tar::EntryType::Regular);
            // set_path refuses `..`; write the raw name like a hostile archiver would.
            let raw = name.as_bytes();
            h.as_old_mut().name[..raw.len()].copy_from_slice(raw);
            h.set_cksum();
            b.append(&h, *data).unwrap();
        }
        if let Some((name, target)) = link {
            let mut h = tar::Header::new_gnu();
            h.set_entry_type(tar::EntryType::Symlink);
            h.set_size(0);
            b.append_link(&mut h, name, target).unwrap();
        }
        b.into_inner().unwrap()
    }

    #[test]
    fn refuses_parent_dir_and_skips_links() {
        let dir = tempfile::tempdir().unwrap();
        let dest = dir.path().join("out");
        std::fs::create_dir_all(&dest).unwrap();
        let tar_path = dir.path().join("evil.tar");
        std::fs::write(
            &tar_path,
            tar_with(&[("ok.txt", b"fine"), ("../escaped.txt", b"bad")], None),
        )
        .unwrap();
        let err = format!("{:#}", extract(&tar_path, &dest, &|_| true).unwrap_err());
        assert!(err.contains(".."), "{err}");
        assert!(!dir.path().join("escaped.txt").exists());

        std::fs::write(
            &tar_path,
            tar_with(&[("a.txt", b"x")], Some(("link", "/etc"))),
        )
        .unwrap();
        let got = extract(&tar_path, &dest, &|_| true).unwrap();
        assert_eq!(
            got,
            Extracted {
                files: 1,
                skipped_links: 1
            }
        );
        assert!(std::fs::symlink_metadata(dest.join("link")).is_err());
    }

    #[test]
    fn interrupted_extraction_is_redone() {
        let dir = tempfile::tempdir().unwrap();
        let staging = dir.path().join("staging");
        let tar_path = dir.path().join("a.tar");
        std::fs::write(&tar_path, tar_with(&[("x/y.txt", b"hello")], None)).unwrap();
        // Leftover of a killed run: folder without marker, with a stray half-written file.
        std::fs::create_dir_all(staging.join("a.tar/x")).unwrap();
        std::fs::write(staging.join("a.tar/x/stray.txt"), b"half").unwrap();
        let out = extract_once(&tar_path, &staging, &|_| true).unwrap();
        assert_eq!(std::fs::read(out.join("x/y.txt")).unwrap(), b"hello");
        assert!(!out.join("x/stray.txt").exists());
        assert!(staging.join("a.tar.done").exists());
        // A finished extraction is not repeated.
        std::fs::write(out.join("x/y.txt"), b"kept").unwrap();
        extract_once(&tar_path, &staging, &|_| true).unwrap();
        assert_eq!(std::fs::read(out.join("x/y.txt")).unwrap(), b"kept");
    }

    #[test]
    fn truncated_tar_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let dest = dir.path().join("out");
        std::fs::create_dir_all(&dest).unwrap();
        let data = tar_with(&[("big.bin", &[7u8; 5000])], None);
        let tar_path = dir.path().join("t.tar");
        std::fs::write(&tar_path, &data[..2000]).unwrap();
        assert!(extract(&tar_path, &dest, &|_| true).is_err());
    }
}
