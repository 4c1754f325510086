//! Resumable HTTP downloads (ureq, rustls).
//!
//! A transfer writes `<dest>.part`; when a `.part` file exists the next request asks the
//! server for the rest with `Range: bytes=<len>-` (a server that ignores Range and answers
//! 200 restarts the file from zero). A cut connection, a stalled read or a 5xx answer is
//! retried by itself with exponential backoff ([`RetryPolicy`], each try logged to stderr),
//! so a 2 GB academic download survives a flaky link in one run; only when the tries are
//! exhausted does the run stop, and the next run resumes from the `.part` file too.
//! The `.part` file is synced and renamed to `<dest>` only once the body is complete (the
//! server's length is reached, or the connection ended cleanly without a declared length),
//! so a file at `<dest>` is always a finished transfer. Whether it is the *right* file is
//! the checksum's job (`fetch.rs`).

use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context, Result};
use ureq::Agent;

use crate::progress;

/// How often and how patiently a transfer is retried after a transient failure.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Tries per file, the first included (at least 1).
    pub tries: u32,
    /// Wait before the second try; doubled before each further one.
    pub base_delay: Duration,
    /// Upper bound of the wait between two tries.
    pub max_delay: Duration,
}

impl Default for RetryPolicy {
    /// 5 tries, waiting 2, 4, 8 and 16 s: enough to ride out a dropped connection or a
    /// server restart without hiding a host that is really down.
    fn default() -> Self {
        Self {
            tries: 5,
            base_delay: Duration::from_secs(2),
            max_delay: Duration::from_secs(60),
        }
    }
}

impl RetryPolicy {
    /// The wait before try number `next_try` (2 for the first retry).
    pub fn delay_before(&self, next_try: u32) -> Duration {
        let doublings = next_try.saturating_sub(2).min(16);
        self.base_delay
            .saturating_mul(1 << doublings)
            .min(self.max_delay)
    }
}

/// Why one try failed: worth another try (the network), or not (the answer itself).
enum TryError {
    Transient(anyhow::Error),
    Fatal(anyhow::Error),
}

impl From<anyhow::Error> for TryError {
    fn from(e: anyhow::Error) -> Self {
        TryError::Fatal(e)
    }
}

/// `bail!` for [`Downloader::try_once`]: an error that another try would not fix.
macro_rules! fatal {
    ($($arg:tt)*) => {
        return Err(TryError::Fatal(anyhow::anyhow!($($arg)*)))
    };
}

/// A blocking HTTP client. One per command, so that cookies (Cityscapes login) persist.
#[derive(Clone)]
pub struct Downloader {
    agent: Agent,
    retry: RetryPolicy,
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
        Self {
            agent,
            retry: RetryPolicy::default(),
        }
    }

    /// The same client with another retry policy.
    pub fn with_retry(mut self, retry: RetryPolicy) -> Self {
        self.retry = retry;
        self
    }

    pub fn agent(&self) -> &Agent {
        &self.agent
    }

    /// Downloads `url` to `dest`, resuming `<dest>.part` if present and retrying transient
    /// failures as the [`RetryPolicy`] says. `expected_size`, when known, must match the
    /// final size (a mismatch is reported as a truncated or wrong file).
    pub fn fetch(&self, url: &str, dest: &Path, expected_size: Option<u64>) -> Result<()> {
        if let Some(dir) = dest.parent() {
            std::fs::create_dir_all(dir)
                .with_context(|| format!("cannot create the folder {}", dir.display()))?;
        }
        let part = part_path(dest);
        let tries = self.retry.tries.max(1);
        let mut last_error = None;
        for attempt in 1..=tries {
            if let Some(e) = &last_error {
                let have = std::fs::metadata(&part).map(|m| m.len()).unwrap_or(0);
                eprintln!("try {attempt}/{tries} for {url}: resuming at {have} bytes after {e:#}");
                std::thread::sleep(self.retry.delay_before(attempt));
            }
            match self.try_once(url, dest, &part, expected_size) {
                Ok(()) => return Ok(()),
                Err(TryError::Fatal(e)) => return Err(e),
                Err(TryError::Transient(e)) => last_error = Some(e),
            }
        }
        let e = last_error.unwrap_or_else(|| anyhow::anyhow!("no try was made"));
        Err(e.context(format!(
            "the download of {url} failed {tries} times in a row; check the network (or use \
             --mirror / --from) and run the same command again: it resumes from {}",
            part.display()
        )))
    }

    /// One request: appends what the server sends to `part`, and renames it to `dest`
    /// when complete.
    fn try_once(
        &self,
        url: &str,
        dest: &Path,
        part: &Path,
        expected_size: Option<u64>,
    ) -> std::result::Result<(), TryError> {
        let have = std::fs::metadata(part).map(|m| m.len()).unwrap_or(0);
        if let Some(size) = expected_size {
            if have > size {
                // Cannot be a prefix of the right file: start over.
                std::fs::remove_file(part)
                    .with_context(|| format!("cannot remove {}", part.display()))?;
                return self.try_once(url, dest, part, expected_size);
            }
        }

        let mut request = self.agent.get(url);
        if have > 0 {
            request = request.header("Range", format!("bytes={have}-"));
        }
        let response = request.call().map_err(|e| {
            // Only the network's failures pass by themselves; a bad URL does not.
            let transient = matches!(
                e,
                ureq::Error::Io(_)
                    | ureq::Error::Timeout(_)
                    | ureq::Error::HostNotFound
                    | ureq::Error::ConnectionFailed
                    | ureq::Error::Protocol(_)
                    | ureq::Error::BodyStalled
            );
            let e = anyhow::Error::new(e).context(format!("cannot connect to {url}"));
            if transient {
                TryError::Transient(e)
            } else {
                TryError::Fatal(e.context("check the URL or use --mirror / --from"))
            }
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
                    return Err(anyhow::anyhow!(
                        "{url} resumed at byte {first} but {} has {have} bytes; delete it and \
                         run again",
                        part.display()
                    )
                    .into());
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
                    return Ok(finish(part, dest, have, expected_size)?);
                }
                std::fs::remove_file(part)
                    .with_context(|| format!("cannot remove {}", part.display()))?;
                return self.try_once(url, dest, part, expected_size);
            }
            // Server trouble and rate limits pass; everything else is the answer.
            408 | 429 | 500..=599 => {
                return Err(TryError::Transient(anyhow::anyhow!(
                    "{url} answered HTTP {status}"
                )))
            }
            302 | 303 | 301 | 307 | 308 => fatal!(
                "{url} redirected to {:?} instead of sending the file (for Cityscapes this \
                 means the login failed or the account lacks access to this package)",
                header("location").unwrap_or_default()
            ),
            401 | 403 => fatal!(
                "{url} refused access (HTTP {status}); check the credentials or use --from DIR \
                 with archives you downloaded yourself"
            ),
            _ => fatal!("{url} answered HTTP {status}; check the URL or use --mirror / --from"),
        };
        if let (Some(total), Some(size)) = (total, expected_size) {
            if total != size {
                fatal!(
                    "{url} serves {total} bytes but {} should have {size}; the server sends \
                     another file (pass --checksums for a repackaging mirror)",
                    dest.display()
                );
            }
        }

        let mut file = if start == 0 {
            File::create(part)
        } else {
            OpenOptions::new().append(true).open(part)
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
                    return Err(TryError::Transient(anyhow::anyhow!(
                        "the transfer stopped after {received} bytes ({e})"
                    )));
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
                return Err(TryError::Transient(anyhow::anyhow!(
                    "the transfer stopped after {received} of {total} bytes"
                )));
            }
        }
        Ok(finish(part, dest, received, expected_size)?)
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
    // Durable before visible: after a crash, `dest` is either absent or complete.
    File::open(part)
        .and_then(|f| f.sync_all())
        .with_context(|| format!("cannot sync {}", part.display()))?;
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
    fn backoff_doubles_up_to_the_cap() {
        let p = RetryPolicy {
            tries: 5,
            base_delay: Duration::from_millis(100),
            max_delay: Duration::from_millis(350),
        };
        let waits: Vec<_> = (2..=5).map(|t| p.delay_before(t).as_millis()).collect();
        assert_eq!(waits, [100, 200, 350, 350]);
        assert_eq!(
            RetryPolicy::default().delay_before(2),
            Duration::from_secs(2)
        );
    }

    #[test]
    fn part_name() {
        assert_eq!(
            part_path(Path::new("/a/b.tar")),
            PathBuf::from("/a/b.tar.part")
        );
    }
}
