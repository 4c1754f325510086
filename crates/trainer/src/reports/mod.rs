//! What a run and a trained network are judged by: the segmentation [`metrics`], the
//! training [`curves`] (`curves.png`), the class-[`relation`] graph (`relation.png`) and
//! the [`explain`] pictures of `predict --explain`, the [`tensorboard`] event-file
//! writer and the [`run_log`] that writes metrics.jsonl and TensorBoard together.

pub mod curves;
pub mod explain;
pub mod metrics;
pub mod relation;
pub mod run_log;
pub mod tensorboard;

use plotters::style::FontStyle;

/// DejaVu Sans Mono (its licence is beside it), so that plots need no system fonts.
static FONT: &[u8] = include_bytes!("../../assets/DejaVuSansMono.ttf");

pub(crate) fn register_font() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        // Registration fails only for an invalid font file, which this one is not.
        let _ = plotters::style::register_font("sans-serif", FontStyle::Normal, FONT);
    });
}
