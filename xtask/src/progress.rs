//! Progress bars (indicatif). They draw on stderr and hide themselves when stderr is not a
//! terminal (CI, tests), so callers never need to check.

use indicatif::{ProgressBar, ProgressStyle};

/// A byte-count bar; `len == 0` means unknown length (spinner with a byte counter).
pub fn bytes_bar(len: u64, message: &str) -> ProgressBar {
    let bar = if len > 0 {
        ProgressBar::new(len)
    } else {
        ProgressBar::new_spinner()
    };
    let template = if len > 0 {
        "{msg:40!} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} eta {eta}"
    } else {
        "{msg:40!} {spinner} {bytes} {bytes_per_sec}"
    };
    if let Ok(style) = ProgressStyle::with_template(template) {
        bar.set_style(style.progress_chars("=> "));
    }
    bar.set_message(message.to_string());
    bar
}

/// A bar counting items (files extracted, labels converted).
pub fn items_bar(len: u64, message: &str) -> ProgressBar {
    let bar = ProgressBar::new(len);
    if let Ok(style) = ProgressStyle::with_template("{msg:40!} [{bar:30}] {pos}/{len} eta {eta}") {
        bar.set_style(style.progress_chars("=> "));
    }
    bar.set_message(message.to_string());
    bar
}
