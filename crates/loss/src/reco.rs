//! The ReCo (regional contrast) loss: prototypes, per-pixel class codes, active sampling,
//! and the contrastive cross-entropy with gradients into the sampled queries only.

use candle_core::{DType, Device, Tensor};

use crate::check;
use crate::config::{ContrastKernel, ReCoConfig};
use crate::contrast::{self, DeviceContrast, HostContrast, RowTerms};
use crate::sampler::{self, ClassPixels, Draws, NO_CLASS};

/// What the loss needs to know about the batch on the host, from one device-to-host copy.
struct HostView {
    pixels: ClassPixels,
    /// Row-major `[C, C]` cosine similarity of the class prototypes.
    proto_cos: Vec<f32>,
    /// `[C, D]` normalised prototypes on the device (zero rows for absent classes).
    protos: Tensor,
}

/// Checked shapes of the four inputs.
struct Shapes {
    b: usize,
    d: usize,
    c: usize,
    h: usize,
    w: usize,
}

fn check_inputs(
    rep: &Tensor,
    label: &Tensor,
    mask: &Tensor,
    prob: &Tensor,
) -> candle_core::Result<Shapes> {
    let [b, d, h, w] = check::dims::<4>(rep, "reco_loss: rep", "[B,D,h,w]")?;
    let [lb, c, lh, lw] = check::dims::<4>(label, "reco_loss: label", "[B,C,h,w] one-hot")?;
    let mdims = check::dims::<4>(mask, "reco_loss: mask", "[B,1,h,w]")?;
    let pdims = check::dims::<4>(prob, "reco_loss: prob", "[B,C,h,w]")?;
    if (lb, lh, lw) != (b, h, w) || mdims != [b, 1, h, w] || pdims != [b, c, h, w] {
        candle_core::bail!(
            "reco_loss: shapes disagree: rep {:?}, label {:?}, mask {:?}, prob {:?} \
             (expected [B,D,h,w], [B,C,h,w], [B,1,h,w], [B,C,h,w])",
            rep.dims(),
            label.dims(),
            mask.dims(),
            prob.dims()
        );
    }
    for (t, what) in [
        (rep, "rep"),
        (label, "label"),
        (mask, "mask"),
        (prob, "prob"),
    ] {
        check::float(t, &format!("reco_loss: {what}"))?;
        if t.device().location() != rep.device().location() {
            candle_core::bail!(
                "reco_loss: {what} is on {:?}, rep on {:?}",
                t.device().location(),
                rep.device().location()
            );
        }
    }
    if c == 0 || d == 0 || b * h * w == 0 {
        candle_core::bail!("reco_loss: empty input (rep {:?}, {c} classes)", rep.dims());
    }
    Ok(Shapes { b, d, c, h, w })
}

/// Per-pixel codes and the prototype cosines, computed on the device, then copied to the
/// host together (the only host sync before sampling).
///
/// A pixel is valid for class `c` when `label * mask` is non-zero there (as the
/// original's `.bool()`), and hard when additionally `prob[c] < strong_threshold`
/// (compared in `prob`'s dtype, like PyTorch). Prototypes are plain means of the valid
/// features of each class.
fn host_view(
    rep: &Tensor,
    label: &Tensor,
    mask: &Tensor,
    prob: &Tensor,
    s: &Shapes,
    threshold: f64,
) -> candle_core::Result<HostView> {
    let Shapes { b, d, c, h, w } = *s;
    let p = h * w;
    let valid = label.broadcast_mul(mask)?.ne(0.0)?.to_dtype(DType::F32)?;
    let count_per_pixel = valid.sum(1)?;
    let class = valid.argmax(1)?.to_dtype(DType::F32)?;
    let hard = prob
        .lt(threshold)?
        .to_dtype(DType::F32)?
        .mul(&valid)?
        .sum(1)?;
    let codes = Tensor::stack(
        &[
            count_per_pixel.flatten_all()?,
            class.flatten_all()?,
            hard.flatten_all()?,
        ],
        0,
    )?;

    let rep = rep.detach();
    let valid3 = valid.to_dtype(rep.dtype())?.reshape((b, c, p))?;
    let sums = valid3
        .matmul(&rep.reshape((b, d, p))?.transpose(1, 2)?)?
        .sum(0)?;
    let counts = valid3.sum(2)?.sum(0)?.maximum(1.0)?.unsqueeze(1)?;
    let protos = contrast::normalize_rows(&sums.broadcast_div(&counts)?)?;
    let proto_cos = protos.matmul(&protos.t()?)?.to_dtype(DType::F32)?;

    let codes = codes.to_vec2::<f32>()?;
    let proto_cos = proto_cos.flatten_all()?.to_vec1::<f32>()?;
    let (counts, classes, hard) = (&codes[0], &codes[1], &codes[2]);
    if let Some(pix) = counts.iter().position(|&n| n > 1.5) {
        let (bi, y, x) = (pix / p, (pix % p) / w, pix % w);
        candle_core::bail!(
            "reco_loss: label must be one-hot, but pixel (b={bi}, y={y}, x={x}) is valid for {} classes",
            counts[pix]
        );
    }
    let class_code: Vec<u32> = counts
        .iter()
        .zip(classes)
        .map(|(&n, &k)| if n > 0.5 { k as u32 } else { NO_CLASS })
        .collect();
    let hard_flag: Vec<bool> = hard.iter().map(|&v| v > 0.5).collect();
    Ok(HostView {
        pixels: ClassPixels::from_codes(&class_code, &hard_flag, c)?,
        proto_cos,
        protos,
    })
}

/// Indices into `rep.flatten_all()` of every feature of every query row (`[R*D]`), so
/// that queries are gathered straight from the `[B,D,h,w]` layout without a transposed copy.
fn query_feature_indices(queries: &[u32], d: usize, p: usize) -> Vec<u32> {
    let mut out = Vec::with_capacity(queries.len() * d);
    for &q in queries {
        let (bi, pi) = (q as usize / p, q as usize % p);
        let base = bi * d * p + pi;
        out.extend((0..d).map(|k| (base + k * p) as u32));
    }
    out
}

/// Loss and gradient per row from the fused host kernel (CPU, f32) or the portable path.
fn row_terms(
    rep: &Tensor,
    queries_n: &Tensor,
    draws: &Draws,
    s: &Shapes,
    cfg: &ReCoConfig,
    protos: &Tensor,
) -> candle_core::Result<RowTerms> {
    let Shapes { b, d, h, w, .. } = *s;
    let p = h * w;
    let rows = draws.rows();
    let row_class: Vec<u32> = draws
        .query_classes
        .iter()
        .flat_map(|&c| std::iter::repeat_n(c as u32, cfg.num_queries))
        .collect();
    let positives = protos.index_select(&Tensor::new(row_class, protos.device())?, 0)?;
    let use_host =
        cfg.kernel == ContrastKernel::Auto && rep.device().is_cpu() && rep.dtype() == DType::F32;
    if use_host {
        let rep_c = rep.detach().contiguous()?;
        let table =
            contrast::with_cpu_f32(&rep_c, |x| contrast::host_normalized_table(x, b, d, p))?;
        let q = queries_n.detach().contiguous()?;
        let pos = positives.to_dtype(DType::F32)?.contiguous()?;
        let (loss, grad) = contrast::with_cpu_f32(&q, |q| {
            contrast::with_cpu_f32(&pos, |pos| {
                contrast::host_rows(&HostContrast {
                    queries: q,
                    positives: pos,
                    table: &table,
                    negatives: &draws.negatives,
                    dim: d,
                    num_negatives: cfg.num_negatives,
                    temp: cfg.temp,
                })
            })
        })??;
        drop(table);
        Ok(RowTerms {
            loss: Tensor::from_vec(loss, rows, &Device::Cpu)?,
            grad: Tensor::from_vec(grad, (rows, d), &Device::Cpu)?,
        })
    } else {
        let table = rep
            .detach()
            .reshape((b, d, p))?
            .transpose(1, 2)?
            .contiguous()?
            .reshape((b * p, d))?;
        let table = contrast::normalize_rows(&table)?;
        contrast::device_rows(&DeviceContrast {
            queries: &queries_n.detach(),
            positives: &positives.to_dtype(rep.dtype())?,
            table: &table,
            negatives: &draws.negatives,
            num_negatives: cfg.num_negatives,
            temp: cfg.temp,
            chunk_rows: cfg.chunk_rows,
        })
    }
}

/// Everything [`reco_loss`] computes on the way, for tests and diagnostics.
#[derive(Debug)]
pub struct ReCoParts {
    /// The 0-dim loss (differentiable with respect to `rep`).
    pub loss: Tensor,
    /// The indices that were drawn (empty when the loss is 0 by definition).
    pub draws: Draws,
    /// Valid and hard pixels per class.
    pub pixels: ClassPixels,
    /// Row-major `[C, C]` prototype cosine similarities.
    pub proto_cos: Vec<f32>,
}

/// [`reco_loss`] together with its draws and class lists.
pub fn reco_loss_parts(
    rep: &Tensor,
    label: &Tensor,
    mask: &Tensor,
    prob: &Tensor,
    cfg: &ReCoConfig,
    seed: u64,
) -> candle_core::Result<ReCoParts> {
    cfg.validate()?;
    let shapes = check_inputs(rep, label, mask, prob)?;
    let view = host_view(rep, label, mask, prob, &shapes, cfg.strong_threshold)?;
    let draws = sampler::draw(&view.pixels, &view.proto_cos, cfg, seed)?;
    let zero = Tensor::zeros((), rep.dtype(), rep.device())?;
    if draws.present.len() < 2 || draws.rows() == 0 {
        // Fewer than two classes, or no class with a hard query: the original returns a
        // constant 0 (no gradient).
        return Ok(ReCoParts {
            loss: zero,
            draws,
            pixels: view.pixels,
            proto_cos: view.proto_cos,
        });
    }
    let Shapes { d, h, w, .. } = shapes;
    let p = h * w;

    // Queries keep their graph: the only path of the gradient back into `rep`.
    let feature_idx = query_feature_indices(&draws.queries, d, p);
    let feature_idx = Tensor::from_vec(feature_idx, draws.rows() * d, rep.device())?;
    let queries = rep
        .contiguous()?
        .flatten_all()?
        .index_select(&feature_idx, 0)?
        .reshape((draws.rows(), d))?;
    let queries_n = contrast::normalize_rows(&queries)?;

    let terms = row_terms(rep, &queries_n, &draws, &shapes, cfg, &view.protos)?;
    let grad = terms.grad.to_dtype(rep.dtype())?.to_device(rep.device())?;
    let loss_rows = terms.loss.to_dtype(rep.dtype())?.to_device(rep.device())?;
    // Value: Σℓ. Gradient: d/dq̂ of Σ q̂·g is g = dℓ/dq̂, and (x − detach(x)) is exactly 0.
    let linear = queries_n.mul(&grad)?.sum_all()?;
    let surrogate = linear.sub(&linear.detach())?;
    let total = loss_rows.sum_all()?.add(&surrogate)?;
    let divisor = (cfg.num_queries * draws.present.len()) as f64;
    let loss = (total / divisor)?;
    Ok(ReCoParts {
        loss,
        draws,
        pixels: view.pixels,
        proto_cos: view.proto_cos,
    })
}

/// The ReCo loss of the original `compute_reco_loss`, vectorised.
///
/// * `rep` `[B,D,h,w]`: representations (the gradient flows into them).
/// * `label` `[B,C,h,w]` f32 one-hot; `mask` `[B,1,h,w]` f32, non-zero = valid;
///   `prob` `[B,C,h,w]` f32 softmax of the prediction.
///
/// For every class present, `num_queries` hard queries (valid, `prob < strong_threshold`)
/// are drawn with replacement; each is contrasted with its class prototype (positive) and
/// `num_negatives` valid pixels of other classes, their class drawn from the softmax of
/// prototype cosines over the other classes. The cross-entropies are averaged per class,
/// summed, and divided by the number of classes present; a class without hard queries adds
/// 0. Fewer than two classes present gives 0. Prototypes and keys carry no gradient.
///
/// `seed` fixes every draw: the same seed gives the same loss; different seeds give
/// independent draws. Returns a 0-dim tensor on `rep`'s device.
pub fn reco_loss(
    rep: &Tensor,
    label: &Tensor,
    mask: &Tensor,
    prob: &Tensor,
    cfg: &ReCoConfig,
    seed: u64,
) -> candle_core::Result<Tensor> {
    Ok(reco_loss_parts(rep, label, mask, prob, cfg, seed)?.loss)
}
