//! Files that must never be seen half-written (checkpoints, metrics, prepared datasets):
//! written to a temporary sibling in the same folder, synced, then renamed over the
//! target. A crash or a full disk leaves the previous file intact; the temporary file is
//! removed on error.

use std::io::Write;
use std::path::{Path, PathBuf};

/// The temporary sibling used for `path`: `.name.tmp` in the same folder (same file
/// system, so the final rename is atomic; hidden, and matched by `*.tmp` ignores).
pub fn temp_sibling(path: &Path) -> std::io::Result<PathBuf> {
    let name = path.file_name().ok_or_else(|| {
        std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            format!("{} names no file", path.display()),
        )
    })?;
    Ok(path.with_file_name(format!(".{}.tmp", name.to_string_lossy())))
}

/// Writes through `write` into a temporary sibling of `path`, syncs it, and renames it
/// over `path`. Errors carry the path.
pub fn write_atomic_with(
    path: &Path,
    write: impl FnOnce(&mut std::fs::File) -> std::io::Result<()>,
) -> std::io::Result<()> {
    let tmp = temp_sibling(path)?;
    let result = (|| {
        let mut file = std::fs::File::create(&tmp)?;
        write(&mut file)?;
        file.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
        .map_err(|e| std::io::Error::new(e.kind(), format!("cannot write {}: {e}", path.display())))
}

/// Writes `bytes` to `path` atomically.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    write_atomic_with(path, |f| f.write_all(bytes))
}

/// Copies `src` to `dst` atomically (a reader never sees a partial `dst`).
pub fn copy_atomic(src: &Path, dst: &Path) -> std::io::Result<()> {
    let mut input = std::fs::File::open(src).map_err(|e| {
        std::io::Error::new(e.kind(), format!("cannot open {}: {e}", src.display()))
    })?;
    write_atomic_with(dst, |f| std::io::copy(&mut input, f).map(|_| ()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn write_replaces_and_leaves_no_temp_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.json");
        write_atomic(&path, b"one").unwrap();
        write_atomic(&path, b"two").unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"two");
        let names: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
        assert_eq!(names.len(), 1);
    }

    #[test]
    fn failed_write_keeps_the_old_file_and_names_the_path() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.bin");
        write_atomic(&path, b"old").unwrap();
        let err =
            write_atomic_with(&path, |_| Err(std::io::Error::other("disk full"))).unwrap_err();
        assert!(err.to_string().contains("a.bin"), "{err}");
        assert_eq!(std::fs::read(&path).unwrap(), b"old");
        assert!(!temp_sibling(&path).unwrap().exists());
    }

    #[test]
    fn copy_atomic_copies_and_reports_a_missing_source() {
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("src");
        std::fs::write(&src, b"payload").unwrap();
        let dst = dir.path().join("dst");
        copy_atomic(&src, &dst).unwrap();
        assert_eq!(std::fs::read(&dst).unwrap(), b"payload");
        let err = copy_atomic(&dir.path().join("missing"), &dst).unwrap_err();
        assert!(err.to_string().contains("missing"), "{err}");
    }

    #[test]
    fn a_path_without_file_name_is_an_error() {
        assert!(write_atomic(Path::new("/"), b"x").is_err());
    }
}
