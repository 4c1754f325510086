//! The ReCo (regional contrast) loss: prototypes, per-pixel class codes, active sampling,
//! and the contrastive cross-entropy with gradients into the sampled queries only.

use candle_core::{DType, Device, Tensor};

use crate::config::{ContrastKernel, ReCoConfig};
use crate::contrast::{self, DeviceContrast, HostContrast, RowTerms};
use crate::sampler::{self, ClassPixels, Draws, NO_CLASS};
use crate::{check, gather};

/// What the loss needs to know about the batch on the host.
struct HostView {
    pixels: ClassPixels,
    /// Row-major `[C, C]` cosine similarity of the class prototypes.
    proto_cos: Vec<f32>,
    /// `[C, D]` L2-normalised prototypes (zero rows for absent classes).
    protos: Vec<f32>,
    /// `[B*h*w, D]` normalised key table, built on the fast CPU path only.
    table: Option<Vec<f32>>,
}

/// The four tensors the loss reads, handed together to the checks and to both views.
#[derive(Clone, Copy)]
struct Inputs<'a> {
    rep: &'a Tensor,
    label: &'a Tensor,
    mask: &'a Tensor,
    prob: &'a Tensor,
}

impl<'a> Inputs<'a> {
    /// `(rep, label, mask, prob)`.
    fn parts(self) -> (&'a Tensor, &'a Tensor, &'a Tensor, &'a Tensor) {
        (self.rep, self.label, self.mask, self.prob)
    }
}

/// Checked shapes of the four inputs.
struct Shapes {
    b: usize,
    d: usize,
    c: usize,
    h: usize,
    w: usize,
}

fn check_inputs(inputs: Inputs) -> candle_core::Result<Shapes> {
    let (rep, label, mask, prob) = inputs.parts();
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

/// Normalises prototype sums (`[C, D]`, divided by the class counts) and computes their
/// cosine matrix, with `torch.cosine_similarity`'s clamp of the norm at 1e-8.
pub(crate) fn prototypes(sums: &[f64], counts: &[usize], d: usize) -> (Vec<f32>, Vec<f32>) {
    let c = counts.len();
    let mut protos = vec![0f32; c * d];
    for (k, (row, sum)) in protos.chunks_mut(d).zip(sums.chunks(d)).enumerate() {
        let n = counts[k].max(1) as f64;
        // Mean in f64, rounded to f32 like the original's f32 prototype.
        let mean: Vec<f32> = sum.iter().map(|&s| (s / n) as f32).collect();
        let norm = mean
            .iter()
            .map(|&v| f64::from(v) * f64::from(v))
            .sum::<f64>()
            .sqrt()
            .max(1e-8);
        for (r, &m) in row.iter_mut().zip(&mean) {
            *r = (f64::from(m) / norm) as f32;
        }
    }
    let mut cos = vec![0f32; c * c];
    for i in 0..c {
        for j in 0..c {
            let (a, b) = (&protos[i * d..(i + 1) * d], &protos[j * d..(j + 1) * d]);
            cos[i * c + j] = a
                .iter()
                .zip(b)
                .map(|(&x, &y)| f64::from(x) * f64::from(y))
                .sum::<f64>() as f32;
        }
    }
    (protos, cos)
}

/// Class code and hard flag of every pixel from the per-class valid and hard masks,
/// failing on pixels valid for several classes. The masks are called with the element
/// index `i` in `[B, C, P]` and the pixel index `b*P + s` (no divisions in the loop).
fn codes_from_masks(
    is_valid: impl Fn(usize, usize) -> bool,
    is_hard: impl Fn(usize) -> bool,
    s: &Shapes,
) -> candle_core::Result<(Vec<u32>, Vec<bool>)> {
    let Shapes { b, c, h, w, .. } = *s;
    let p = h * w;
    let mut class = vec![NO_CLASS; b * p];
    let mut hard = vec![false; b * p];
    for bi in 0..b {
        for ci in 0..c {
            for s_ in 0..p {
                let i = (bi * c + ci) * p + s_;
                let pix = bi * p + s_;
                if !is_valid(i, pix) {
                    continue;
                }
                if class[pix] != NO_CLASS {
                    let (y, x) = (s_ / w, s_ % w);
                    candle_core::bail!(
                        "reco_loss: label must be one-hot, but pixel (b={bi}, y={y}, x={x}) is valid for classes {} and {ci}",
                        class[pix]
                    );
                }
                class[pix] = ci as u32;
                hard[pix] = is_hard(i);
            }
        }
    }
    Ok((class, hard))
}

fn class_counts(pixels: &ClassPixels) -> Vec<usize> {
    pixels.valid.iter().map(Vec::len).collect()
}

/// Fast CPU path: codes, prototypes and the key table straight from the f32 slices, with
/// no intermediate tensors (fresh large buffers cost page faults on every call).
///
/// A pixel is valid for class `c` when `label * mask` is non-zero there (as the
/// original's `.bool()`), and hard when additionally `prob[c] < strong_threshold`
/// (compared in f32, like PyTorch compares an f32 tensor with a Python float).
fn cpu_view(inputs: Inputs, s: &Shapes, threshold: f64) -> candle_core::Result<HostView> {
    let (rep, label, mask, prob) = inputs.parts();
    let Shapes { b, d, c, h, w } = *s;
    let p = h * w;
    let threshold = threshold as f32;
    let (label, mask, prob) = (label.contiguous()?, mask.contiguous()?, prob.contiguous()?);
    let (class_code, hard) = contrast::with_cpu_f32(&label, |l| {
        contrast::with_cpu_f32(&mask, |m| {
            contrast::with_cpu_f32(&prob, |pr| {
                codes_from_masks(|i, pix| l[i] * m[pix] != 0.0, |i| pr[i] < threshold, s)
            })
        })
    })????;
    let pixels = ClassPixels::from_codes(&class_code, &hard, c)?;
    let present = pixels.present();
    if present.len() < 2 || present.iter().all(|&k| pixels.hard[k].is_empty()) {
        // The loss is 0 by definition: skip the pass over `rep`.
        return Ok(HostView {
            pixels,
            proto_cos: vec![0.0; c * c],
            protos: vec![0.0; c * d],
            table: None,
        });
    }
    let rep = rep.detach().contiguous()?;
    let host = contrast::with_cpu_f32(&rep, |x| contrast::host_table(x, b, d, p, &class_code, c))?;
    let (protos, proto_cos) = prototypes(&host.class_sums, &class_counts(&pixels), d);
    Ok(HostView {
        pixels,
        proto_cos,
        protos,
        table: Some(host.table),
    })
}

/// Portable path: masks and prototype sums with tensor ops on the device, then one small
/// copy to the host: three numbers per pixel (how many classes it is valid for, which,
/// and whether it is hard) and the `[C, D]` prototype sums.
fn device_view(inputs: Inputs, s: &Shapes, threshold: f64) -> candle_core::Result<HostView> {
    let (rep, label, mask, prob) = inputs.parts();
    let Shapes { b, d, c, h, w } = *s;
    let p = h * w;
    let valid = label.broadcast_mul(mask)?.ne(0.0)?.to_dtype(DType::F32)?;
    let count = valid.sum(1)?;
    let class = valid.argmax(1)?.to_dtype(DType::F32)?;
    let hard = prob
        .lt(threshold)?
        .to_dtype(DType::F32)?
        .mul(&valid)?
        .sum(1)?;
    let codes = Tensor::stack(
        &[
            count.flatten_all()?,
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
    let sums = sums.to_dtype(DType::F64)?.flatten_all()?.to_vec1::<f64>()?;
    let codes = codes.to_vec2::<f32>()?;
    reco_util::ops_path::record_host_copy();
    reco_util::ops_path::record_host_copy();
    let (count, class, hard) = (&codes[0], &codes[1], &codes[2]);
    if let Some(pix) = count.iter().position(|&n| n > 1.5) {
        let (bi, y, x) = (pix / p, (pix % p) / w, pix % w);
        candle_core::bail!(
            "reco_loss: label must be one-hot, but pixel (b={bi}, y={y}, x={x}) is valid for {} classes",
            count[pix]
        );
    }
    let class_code: Vec<u32> = count
        .iter()
        .zip(class)
        .map(|(&n, &k)| if n > 0.5 { k as u32 } else { NO_CLASS })
        .collect();
    let hard: Vec<bool> = hard.iter().map(|&v| v > 0.5).collect();
    let pixels = ClassPixels::from_codes(&class_code, &hard, c)?;
    let (protos, proto_cos) = prototypes(&sums, &class_counts(&pixels), d);
    Ok(HostView {
        pixels,
        proto_cos,
        protos,
        table: None,
    })
}

/// Loss and gradient per row from the fused host kernel (CPU, f32) or the portable path.
fn row_terms(
    rep: &Tensor,
    queries_n: &Tensor,
    draws: &Draws,
    view: &HostView,
    s: &Shapes,
    cfg: &ReCoConfig,
) -> candle_core::Result<RowTerms> {
    let Shapes { b, d, h, w, .. } = *s;
    let p = h * w;
    let rows = draws.rows();
    let mut positives = Vec::with_capacity(rows * d);
    for &c in &draws.query_classes {
        for _ in 0..cfg.num_queries {
            positives.extend_from_slice(&view.protos[c * d..(c + 1) * d]);
        }
    }
    if let Some(table) = &view.table {
        let q = queries_n.detach().contiguous()?;
        let (loss, grad) = contrast::with_cpu_f32(&q, |q| {
            contrast::host_rows(&HostContrast {
                queries: q,
                positives: &positives,
                table,
                negatives: &draws.negatives,
                dim: d,
                num_negatives: cfg.num_negatives,
                temp: cfg.temp,
            })
        })?;
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
        let positives =
            Tensor::from_vec(positives, (rows, d), rep.device())?.to_dtype(rep.dtype())?;
        contrast::device_rows(&DeviceContrast {
            queries: &queries_n.detach(),
            positives: &positives,
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
    /// Row-major `[C, C]` prototype cosine similarities (all zero when the fast CPU path
    /// skipped them because the loss is 0 by definition).
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
    let inputs = Inputs {
        rep,
        label,
        mask,
        prob,
    };
    let shapes = check_inputs(inputs)?;
    let fast = cfg.kernel == ContrastKernel::Auto
        && !crate::config::use_generic_path(rep.device())
        && [rep, label, mask, prob]
            .iter()
            .all(|t| t.device().is_cpu() && t.dtype() == DType::F32);
    let view = if fast {
        cpu_view(inputs, &shapes, cfg.strong_threshold)?
    } else {
        device_view(inputs, &shapes, cfg.strong_threshold)?
    };
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
    // Queries keep their graph: the only path of the gradient back into `rep`.
    let queries = gather::gather_queries(rep, &draws.queries)?;
    let queries_n = contrast::normalize_rows(&queries)?;

    let terms = row_terms(rep, &queries_n, &draws, &view, &shapes, cfg)?;
    drop(view.table);
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
