//! Resumable HTTP downloads (ureq, rustls).
//!
//! A transfer writes `<dest>.part`; when a `.part` file exists the next run asks the server
//! for the rest with `Range: bytes=<len>-`. The `.part` file is renamed to `<dest>` only once
//! the body is complete (the server's length is reached, or the connection ended cleanly
//! without a declared length), so a file at `<dest>` is always a finished transfer. Whether
//! it is the *right* file is the checksum's job (`fetch.rs`).

use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context, Result};
use ureq::Agent;

use crate::progress;

/// A blocking HTTP client. One per command, so that cookies (Cityscapes login) persist.
#[derive(Clone)]
pub struct Downloader {
    agent: Agent,
}

/// Where a `.part` file should be for `dest`.
pub fn part_path(dest: &Path) -> PathBuf {
    let mut name = dest.file_name().unwrap_or_default().to_os_string();
    name.push(".part");
    dest.with_file_name(name)
}

impl Downloader {
    /// `follow_redirects = false` is for sites where a redirect means "not logged in"
    /// (Cityscapes), as in their official downloader.
    pub fn new(follow_redirects: bool) -> Self {
        let agent: Agent = Agent::config_builder()
            // Statuses are inspected by hand: 206/200/416 all mean something for a resume.
            .http_status_as_error(false)
            .max_redirects(if follow_redirects { 10 } else { 0 })
            .timeout_connect(Some(Duration::from_secs(30)))
            // A stalled connection errors out instead of hanging; the next run resumes.
            .timeout_recv_body(None)
            .timeout_per_read(Some(Duration::from_secs(120)))
            .user_agent(concat!("reco-xtask/", env!("CARGO_PKG_VERSION")))
            .build()
            .into();
        Self { agent }
    }

    pub fn agent(&self) -> &Agent {
        &self.agent
    }

    /// Downloads `url` to `dest`, resuming `<dest>.part` if present. `expected_size`, when
    /// known, must match the final size (a mismatch is reported as a truncated or wrong file).
    pub fn fetch(&self, url: &str, dest: &Path, expected_size: Option<u64>) -> Result<()> {
        if let Some(dir) = dest.parent() {
            std::fs::create_dir_all(dir)
                .with_context(|| format!("cannot create the folder {}", dir.display()))?;
        }
        let part = part_path(dest);
        let have = std::fs::metadata(&part).map(|m| m.len()).unwrap_or(0);
        if let Some(size) = expected_size {
            if have > size {
                // Cannot be a prefix of the right file: start over.
                std::fs::remove_file(&part)
                    .with_context(|| format!("cannot remove {}", part.display()))?;
                return self.fetch(url, dest, expected_size);
            }
        }

        let mut request = self.agent.get(url);
        if have > 0 {
            request = request.header("Range", format!("bytes={have}-"));
        }
        let response = request.call().with_context(|| {
            format!("cannot connect to {url} (check the network or use --mirror / --from)")
        })?;
        let status = response.status().as_u16();
        let header = |name: &str| {
            response
                .headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_string)
        };
        let content_length: Option<u64> = header("content-length").and_then(|v| v.parse().ok());

        let (start, total) = match status {
            206 => {
                let range = header("content-range").unwrap_or_default();
                let (first, total) = parse_content_range(&range).with_context(|| {
                    format!("{url} answered 206 with an unusable Content-Range {range:?}")
                })?;
                if first != have {
                    bail!(
                        "{url} resumed at byte {first} but {} has {have} bytes; delete it and \
                         run again",
                        part.display()
                    );
                }
                (have, total.or(content_length.map(|l| have + l)))
            }
            200 => (0, content_length),
            416 if have > 0 => {
                // Nothing after `have`: the part file is either complete or garbage.
                let range = header("content-range").unwrap_or_default();
                let total = range
                    .strip_prefix("bytes */")
                    .and_then(|t| t.trim().parse::<u64>().ok());
                if total == Some(have) {
                    return finish(&part, dest, have, expected_size);
                }
                std::fs::remove_file(&part)
                    .with_context(|| format!("cannot remove {}", part.display()))?;
                return self.fetch(url, dest, expected_size);
            }
            302 | 303 | 301 | 307 | 308 => bail!(
                "{url} redirected to {:?} instead of sending the file (for Cityscapes this \
                 means the login failed or the account lacks access to this package)",
                header("location").unwrap_or_default()
            ),
            401 | 403 => bail!(
                "{url} refused access (HTTP {status}); check the credentials or use --from DIR \
                 with archives you downloaded yourself"
            ),
            _ => bail!("{url} answered HTTP {status}; try again later or use --mirror / --from"),
        };
        if let (Some(total), Some(size)) = (total, expected_size) {
            if total != size {
                bail!(
                    "{url} serves {total} bytes but {} should have {size}; the server sends \
                     another file (pass --checksums for a repackaging mirror)",
                    dest.display()
                );
            }
        }

        let mut file = if start == 0 {
            File::create(&part)
        } else {
            OpenOptions::new().append(true).open(&part)
        }
        .with_context(|| format!("cannot write {}", part.display()))?;

        let name = dest
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let bar = progress::bytes_bar(total.unwrap_or(0), &format!("downloading {name}"));
        bar.set_position(start);
        let mut reader = response.into_body().into_reader();
        let mut buf = vec![0u8; 1 << 16];
        let mut received = start;
        loop {
            let n = match reader.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    bar.abandon();
                    file.flush().ok();
                    bail!(
                        "the transfer of {url} stopped after {received} bytes ({e}); run the \
                         same command again to resume from {}",
                        part.display()
                    );
                }
            };
            file.write_all(&buf[..n])
                .with_context(|| format!("cannot write {} (disk full?)", part.display()))?;
            received += n as u64;
            bar.set_position(received);
        }
        file.flush()
            .with_context(|| format!("cannot write {}", part.display()))?;
        drop(file);
        bar.finish_and_clear();
        if let Some(total) = total {
            if received < total {
                bail!(
                    "the transfer of {url} stopped after {received} of {total} bytes; run the \
                     same command again to resume from {}",
                    part.display()
                );
            }
        }
        finish(&part, dest, received, expected_size)
    }
}

fn finish(part: &Path, dest: &Path, len: u64, expected_size: Option<u64>) -> Result<()> {
    if let Some(size) = expected_size {
        if len != size {
            bail!(
                "{} has {len} bytes but the official file has {size}: truncated download. Run \
                 the same command again to resume",
                part.display()
            );
        }
    }
    std::fs::rename(part, dest)
        .with_context(|| format!("cannot rename {} to {}", part.display(), dest.display()))
}

/// `bytes 100-199/1000` → (100, Some(1000)); `bytes 100-199/*` → (100, None).
fn parse_content_range(value: &str) -> Option<(u64, Option<u64>)> {
    let rest = value.trim().strip_prefix("bytes ")?;
    let (range, total) = rest.split_once('/')?;
    let (first, _last) = range.split_once('-')?;
    let first = first.trim().parse().ok()?;
    let total = match total.trim() {
        "*" => None,
        t => Some(t.parse().ok()?),
    };
    Some((first, total))
}

/// Reads a small response body as text (login pages, error bodies).
pub fn read_text(reader: &mut impl Read, limit: u64) -> String {
    let mut s = String::new();
    let _ = reader.take(limit).read_to_string(&mut s);
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_range() {
        assert_eq!(
            parse_content_range("bytes 100-199/1000"),
            Some((100, Some(1000)))
        );
        assert_eq!(parse_content_range("bytes 5-9/*"), Some((5, None)));
        assert_eq!(parse_content_range("items 1-2/3"), None);
        assert_eq!(parse_content_range("bytes x-9/10"), None);
    }

    #[test]
    fn part_name() {
        assert_eq!(
            part_path(Path::new("/a/b.tar")),
            PathBuf::from("/a/b.tar.part")
        );
    }
}
