//! Archive checksums: MD5 (what the dataset hosts publish) and SHA-256, and the
//! `--checksums FILE` overrides for mirrors that repackage.

use std::collections::HashMap;
use std::fmt;
use std::io::Read;
use std::path::Path;

use anyhow::{bail, Context, Result};
use md5::Md5;
use serde::Deserialize;
use sha2::{Digest, Sha256};

use crate::progress;

/// An expected digest, lowercase hex.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Checksum {
    Md5(String),
    Sha256(String),
}

impl fmt::Display for Checksum {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Checksum::Md5(h) => write!(f, "md5 {h}"),
            Checksum::Sha256(h) => write!(f, "sha256 {h}"),
        }
    }
}

impl Checksum {
    fn normalised(&self) -> Result<Checksum> {
        let (hex, len) = match self {
            Checksum::Md5(h) => (h, 32),
            Checksum::Sha256(h) => (h, 64),
        };
        let hex = hex.trim().to_ascii_lowercase();
        if hex.len() != len || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
            bail!("`{self}` is not a {len}-digit hex digest");
        }
        Ok(match self {
            Checksum::Md5(_) => Checksum::Md5(hex),
            Checksum::Sha256(_) => Checksum::Sha256(hex),
        })
    }

    /// Hashes `path` and compares. The error names the file, both digests and what to do.
    pub fn verify(&self, path: &Path) -> Result<()> {
        let expected = self.normalised()?;
        let actual = match expected {
            Checksum::Md5(_) => Checksum::Md5(hash_file::<Md5>(path)?),
            Checksum::Sha256(_) => Checksum::Sha256(hash_file::<Sha256>(path)?),
        };
        if actual != expected {
            bail!(
                "checksum mismatch for {}: expected {expected}, got {actual}. The file is \
                 corrupt, truncated, or not the official one. Delete it and run the command \
                 again to download it anew; if your mirror repackages the archive on purpose, \
                 pass its checksum with --checksums FILE",
                path.display()
            );
        }
        Ok(())
    }
}

/// Hex digest of a whole file, with a progress bar (archives are up to 11 GB).
pub fn hash_file<D: Digest>(path: &Path) -> Result<String> {
    let mut file =
        std::fs::File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
    let len = file.metadata().map(|m| m.len()).unwrap_or(0);
    let bar = progress::bytes_bar(len, &format!("checking {}", file_label(path)));
    let mut hasher = D::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = file
            .read(&mut buf)
            .with_context(|| format!("cannot read {}", path.display()))?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        bar.inc(n as u64);
    }
    bar.finish_and_clear();
    Ok(hex(&hasher.finalize()))
}

pub fn sha256_file(path: &Path) -> Result<String> {
    hash_file::<Sha256>(path)
}

pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn file_label(path: &Path) -> String {
    path.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| path.display().to_string())
}

/// Reads a `--checksums` file: a JSON object from archive file name to
/// `{"md5": "<hex>"}` or `{"sha256": "<hex>"}`.
pub fn load_overrides(path: &Path) -> Result<HashMap<String, Checksum>> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read the checksums file {}", path.display()))?;
    let map: HashMap<String, Checksum> = serde_json::from_str(&text).with_context(|| {
        format!(
            "{} is not a valid checksums file: expected a JSON object like \
             {{\"benchmark.tgz\": {{\"md5\": \"...\"}}, \"x.zip\": {{\"sha256\": \"...\"}}}}",
            path.display()
        )
    })?;
    for (name, sum) in &map {
        sum.normalised()
            .with_context(|| format!("{}: entry {name:?}", path.display()))?;
    }
    Ok(map)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_digests() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("abc");
        std::fs::write(&p, b"abc").unwrap();
        Checksum::Md5("900150983cd24fb0d6963f7d28e17f72".into())
            .verify(&p)
            .unwrap();
        Checksum::Sha256("BA7816BF8F01CFEA414140DE5DAE2223B00361A396177A9CB410FF61F20015AD".into())
            .verify(&p)
            .unwrap();
        let err = Checksum::Md5("00000000000000000000000000000000".into())
            .verify(&p)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("checksum mismatch") && err.contains("abc"),
            "{err}"
        );
        assert!(Checksum::Md5("xyz".into()).verify(&p).is_err());
    }

    #[test]
    fn overrides_file() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("sums.json");
        std::fs::write(
            &p,
            r#"{"a.tar": {"md5": "900150983cd24fb0d6963f7d28e17f72"}, "b.zip": {"sha256": "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"}}"#,
        )
        .unwrap();
        let m = load_overrides(&p).unwrap();
        assert_eq!(
            m["a.tar"],
            Checksum::Md5("900150983cd24fb0d6963f7d28e17f72".into())
        );
        assert!(matches!(m["b.zip"], Checksum::Sha256(_)));
        std::fs::write(&p, r#"{"a.tar": {"crc": "1"}}"#).unwrap();
        assert!(load_overrides(&p).is_err());
        std::fs::write(&p, r#"{"a.tar": {"md5": "12"}}"#).unwrap();
        assert!(load_overrides(&p).is_err());
    }
}
