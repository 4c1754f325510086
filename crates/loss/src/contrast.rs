//! Per-query contrastive cross-entropy of ReCo and its gradient, without autograd.
//!
//! For query row `i` with normalised feature `q`, positive key `k₀` (its class prototype)
//! and negative keys `k₁..k_M` (normalised pixel features), the logits are
//! `s_j = q·k_j / τ` and the loss is `ℓ = logsumexp(s) − s₀`. Its gradient with respect to
//! `q` is `(Σ_j softmax(s)_j k_j − k₀) / τ`. Keys carry no gradient in the original, so
//! these two quantities are all the backward pass needs; computing them here, in one
//! pass over the gathered keys, avoids both materialising `[rows, M, D]` key tensors in
//! the autograd graph and candle's matmul backward building a key gradient nobody uses.

use candle_core::{DType, Tensor, D};
use rayon::prelude::*;

/// Loss per row `[R]` and gradient per row `[R, D]` with respect to the normalised query.
pub(crate) struct RowTerms {
    pub loss: Tensor,
    pub grad: Tensor,
}

#[inline]
fn dot(a: &[f32], b: &[f32]) -> f32 {
    // Eight independent accumulators let the compiler vectorise the loop.
    let mut acc = [0f32; 8];
    let (ca, cb) = (a.chunks_exact(8), b.chunks_exact(8));
    let (ra, rb) = (ca.remainder(), cb.remainder());
    for (x, y) in ca.zip(cb) {
        for l in 0..8 {
            acc[l] += x[l] * y[l];
        }
    }
    let mut s: f32 = acc.iter().sum();
    for (x, y) in ra.iter().zip(rb) {
        s += x * y;
    }
    s
}

#[inline]
fn axpy(alpha: f32, x: &[f32], y: &mut [f32]) {
    for (yi, xi) in y.iter_mut().zip(x) {
        *yi += alpha * xi;
    }
}

/// Host inputs of the fused kernel. All feature rows are already L2-normalised.
pub(crate) struct HostContrast<'a> {
    /// `[R, D]` normalised queries.
    pub queries: &'a [f32],
    /// `[R, D]` positive key (normalised prototype) of every row.
    pub positives: &'a [f32],
    /// `[N, D]` normalised features of every pixel.
    pub table: &'a [f32],
    /// `[R, M]` pixel index of every negative key.
    pub negatives: &'a [u32],
    pub dim: usize,
    pub num_negatives: usize,
    pub temp: f64,
}

/// Fused gather-dot-softmax on the host: returns `(loss [R], grad [R*D])`. Rows are
/// independent, so they are split across rayon threads.
pub(crate) fn host_rows(x: &HostContrast<'_>) -> (Vec<f32>, Vec<f32>) {
    let (d, m) = (x.dim, x.num_negatives);
    let rows = x.queries.len() / d;
    let inv_t = (1.0 / x.temp) as f32;
    let mut loss = vec![0f32; rows];
    let mut grad = vec![0f32; rows * d];
    loss.par_iter_mut()
        .zip(grad.par_chunks_mut(d))
        .enumerate()
        .for_each_init(
            || vec![0f32; m + 1],
            |logits, (i, (loss_i, grad_i))| {
                let q = &x.queries[i * d..(i + 1) * d];
                let pos = &x.positives[i * d..(i + 1) * d];
                let neg = &x.negatives[i * m..(i + 1) * m];
                let key = |p: u32| &x.table[p as usize * d..(p as usize + 1) * d];
                logits[0] = dot(q, pos) * inv_t;
                for (l, &p) in logits[1..].iter_mut().zip(neg) {
                    *l = dot(q, key(p)) * inv_t;
                }
                let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
                let mut total = 0f64;
                for l in logits.iter_mut() {
                    *l = (*l - max).exp();
                    total += f64::from(*l);
                }
                // ℓ = logsumexp(s) − s₀ = log(Σ e^{s_j − max}) − (s₀ − max); logits[0] now holds e^{s₀ − max}.
                *loss_i = (total.ln() - f64::from(logits[0]).ln()) as f32;
                let scale = (1.0 / total) as f32 * inv_t;
                axpy(logits[0] * scale - inv_t, pos, grad_i);
                for (&e, &p) in logits[1..].iter().zip(neg) {
                    axpy(e * scale, key(p), grad_i);
                }
            },
        );
    (loss, grad)
}

/// Device inputs of the portable path.
pub(crate) struct DeviceContrast<'a> {
    /// `[R, D]` normalised queries (detached).
    pub queries: &'a Tensor,
    /// `[R, D]` positive key of every row.
    pub positives: &'a Tensor,
    /// `[N, D]` normalised pixel features.
    pub table: &'a Tensor,
    /// `[R, M]` negative pixel indices on the host; uploaded chunk by chunk.
    pub negatives: &'a [u32],
    pub num_negatives: usize,
    pub temp: f64,
    pub chunk_rows: usize,
}

/// The same computation with tensor ops on the tensors' device, `chunk_rows` query rows
/// at a time so that at most `chunk_rows * M * D` key elements exist at once.
pub(crate) fn device_rows(x: &DeviceContrast<'_>) -> candle_core::Result<RowTerms> {
    let (rows, d) = x.queries.dims2()?;
    let m = x.num_negatives;
    let inv_t = 1.0 / x.temp;
    let mut losses = Vec::new();
    let mut grads = Vec::new();
    let mut start = 0;
    while start < rows {
        let r = x.chunk_rows.min(rows - start);
        let q = x.queries.narrow(0, start, r)?;
        let pos = x.positives.narrow(0, start, r)?;
        let idx = Tensor::from_slice(
            &x.negatives[start * m..(start + r) * m],
            r * m,
            x.table.device(),
        )?;
        let keys = x.table.index_select(&idx, 0)?.reshape((r, m, d))?;
        let neg = keys.matmul(&q.unsqueeze(2)?.contiguous()?)?.squeeze(2)?;
        let pos_logit = q.mul(&pos)?.sum_keepdim(1)?;
        let logits = (Tensor::cat(&[pos_logit, neg], 1)? * inv_t)?;
        let max = logits.max_keepdim(1)?;
        let shifted = logits.broadcast_sub(&max)?;
        let exp = shifted.exp()?;
        let total = exp.sum_keepdim(1)?;
        let prob = exp.broadcast_div(&total)?;
        let loss = total.log()?.sub(&shifted.narrow(1, 0, 1)?)?.squeeze(1)?;
        let p_neg = prob.narrow(1, 1, m)?.unsqueeze(1)?.contiguous()?;
        let p_pos = prob.narrow(1, 0, 1)?;
        let grad = p_neg
            .matmul(&keys)?
            .squeeze(1)?
            .add(&pos.broadcast_mul(&(p_pos - 1.0)?)?)?;
        losses.push(loss);
        grads.push((grad * inv_t)?);
        start += r;
    }
    Ok(RowTerms {
        loss: Tensor::cat(&losses, 0)?,
        grad: Tensor::cat(&grads, 0)?,
    })
}

/// L2-normalises the rows of `x` `[R, D]` like `torch.cosine_similarity` (norm clamped
/// to `1e-8`). Differentiable.
pub(crate) fn normalize_rows(x: &Tensor) -> candle_core::Result<Tensor> {
    let norm = x.sqr()?.sum_keepdim(D::Minus1)?.sqrt()?.maximum(1e-8)?;
    x.broadcast_div(&norm)
}

/// Reads a contiguous f32 CPU tensor as a slice.
pub(crate) fn with_cpu_f32<R>(t: &Tensor, f: impl FnOnce(&[f32]) -> R) -> candle_core::Result<R> {
    if t.dtype() != DType::F32 {
        candle_core::bail!("internal: expected an f32 tensor, got {:?}", t.dtype());
    }
    let (storage, layout) = t.storage_and_layout();
    let candle_core::Storage::Cpu(cpu) = &*storage else {
        candle_core::bail!("internal: expected a CPU tensor");
    };
    let Some((start, end)) = layout.contiguous_offsets() else {
        candle_core::bail!("internal: expected a contiguous tensor");
    };
    Ok(f(&cpu.as_slice::<f32>()?[start..end]))
}

/// `[B, D, P]` features (contiguous f32) → `[B*P, D]` L2-normalised rows: the key table
/// of the fused kernel, built in one parallel pass with a single allocation.
pub(crate) fn host_normalized_table(rep: &[f32], b: usize, d: usize, p: usize) -> Vec<f32> {
    // Pixels per tile: the tile's rows (BLOCK x D floats) stay in L1/L2 while every
    // channel is read as a contiguous run of BLOCK values.
    const BLOCK: usize = 32;
    let mut table = vec![0f32; b * p * d];
    table
        .par_chunks_mut(p * d)
        .enumerate()
        .for_each(|(bi, image)| {
            let src = &rep[bi * d * p..(bi + 1) * d * p];
            for (blk, out) in image.chunks_mut(BLOCK * d).enumerate() {
                let first = blk * BLOCK;
                let n = out.len() / d;
                for k in 0..d {
                    let run = &src[k * p + first..k * p + first + n];
                    for (j, &v) in run.iter().enumerate() {
                        out[j * d + k] = v;
                    }
                }
                for row in out.chunks_mut(d) {
                    let inv = 1.0 / dot(row, row).sqrt().max(1e-8);
                    for o in row.iter_mut() {
                        *o *= inv;
                    }
                }
            }
        });
    table
}
