//! Which pixels of a prediction the ReCo loss would use as queries, for pictures of the
//! method (`predict --explain`): on an unlabelled image the pseudo-label is the argmax,
//! its softmax probability the confidence; a pixel is valid when the confidence reaches
//! the weak threshold δw and a hard query when it is valid and below the strong threshold
//! δs (see docs/design.md#losses-and-sampling). Hard pixels lie on region borders.

use candle_core::{DType, Tensor};

use crate::check;

/// Per-pixel maps of one prediction, all `[B,H,W]`.
#[derive(Clone, Debug)]
pub struct QueryMap {
    /// Argmax class (u32).
    pub pseudo: Tensor,
    /// Max softmax probability (f32).
    pub confidence: Tensor,
    /// 1 where `confidence >= weak_threshold` (u8).
    pub valid: Tensor,
    /// 1 where valid and `confidence < strong_threshold` (u8).
    pub hard: Tensor,
}

/// The [`QueryMap`] of `logits` `[B,C,H,W]` (any float dtype and device).
pub fn query_map(
    logits: &Tensor,
    weak_threshold: f64,
    strong_threshold: f64,
) -> candle_core::Result<QueryMap> {
    let [_, c, _, _] = check::dims::<4>(logits, "query_map: logits", "[B,C,H,W]")?;
    check::float(logits, "query_map: logits")?;
    if c == 0 {
        candle_core::bail!("query_map: logits have no class channel");
    }
    for (name, t) in [("weak", weak_threshold), ("strong", strong_threshold)] {
        if !t.is_finite() {
            candle_core::bail!("query_map: the {name} threshold must be finite, got {t}");
        }
    }
    let prob = candle_nn::ops::softmax(&logits.to_dtype(DType::F32)?, 1)?;
    let confidence = prob.max(1)?;
    let pseudo = prob.argmax(1)?;
    let valid = confidence.ge(weak_threshold)?;
    let hard = valid.mul(&confidence.lt(strong_threshold)?)?;
    Ok(QueryMap {
        pseudo,
        confidence,
        valid,
        hard,
    })
}
