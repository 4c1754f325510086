//! Per-query contrastive cross-entropy of ReCo and its gradient, without autograd.
//!
//! For query row `i` with normalised feature `q`, positive key `k₀` (its class prototype)
//! and negative keys `k₁..k_M` (normalised pixel features), the logits are
//! `s_j = q·k_j / τ` and the loss is `ℓ = logsumexp(s) − s₀`. Its gradient with respect to
//! `q` is `(Σ_j softmax(s)_j k_j − k₀) / τ`. Keys carry no gradient in the original, so
//! these two quantities are all the backward pass needs. Computing them here, outside
//! autograd, avoids both keeping `[rows, M, D]` gathered keys alive in the graph and
//! candle's matmul backward building a key gradient nobody uses (~2.8 GB at the VOC
//! shape). `reco.rs` feeds the gradient back through a surrogate term.

use candle_core::{DType, Tensor, D};
use rayon::prelude::*;

use crate::simd::Simd;

/// Loss per row `[R]` and gradient per row `[R, D]` with respect to the normalised query.
pub(crate) struct RowTerms {
    pub loss: Tensor,
    pub grad: Tensor,
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

/// Query rows per chunk of the host kernel: the chunk's queries and gradients (2 x 512 KB
/// at D = 256) stay in cache while the key table streams past.
const ROWS_PER_CHUNK: usize = 512;

/// Entries `e = row * M + j` of one chunk grouped by key pixel: entries of pixel `p` are
/// `order[start[p]..start[p + 1]]`, ascending (a stable counting sort).
fn group_by_pixel(negatives: &[u32], num_pixels: usize) -> (Vec<u32>, Vec<u32>) {
    let mut start = vec![0u32; num_pixels + 1];
    for &p in negatives {
        start[p as usize + 1] += 1;
    }
    for i in 0..num_pixels {
        start[i + 1] += start[i];
    }
    let mut next = start.clone();
    let mut order = vec![0u32; negatives.len()];
    for (e, &p) in negatives.iter().enumerate() {
        let slot = &mut next[p as usize];
        order[*slot as usize] = e as u32;
        *slot += 1;
    }
    (start, order)
}

/// Key rows with entries to fetch ahead of the one in use: the walk skips pixels (the
/// chunk's own classes, masked pixels), which breaks the hardware prefetcher's stream.
const PREFETCH_ROWS: usize = 4;

/// Calls `f(key_row, entries)` for every pixel that has entries, in pixel order.
fn for_each_key(
    table: &[f32],
    d: usize,
    start: &[u32],
    order: &[u32],
    mut f: impl FnMut(&[f32], &[u32]),
) {
    let has_entries = |p: usize| start[p] < start[p + 1];
    let num_pixels = start.len() - 1;
    // `ahead` runs PREFETCH_ROWS pixels-with-entries in front of the walk.
    let mut ahead = 0;
    let advance = |ahead: &mut usize| {
        while *ahead < num_pixels && !has_entries(*ahead) {
            *ahead += 1;
        }
        if *ahead < num_pixels {
            crate::simd::prefetch(&table[*ahead * d..(*ahead + 1) * d]);
            *ahead += 1;
        }
    };
    for _ in 0..PREFETCH_ROWS {
        advance(&mut ahead);
    }
    for (p, bounds) in start.windows(2).enumerate() {
        let (a, b) = (bounds[0] as usize, bounds[1] as usize);
        if a < b {
            advance(&mut ahead);
            f(&table[p * d..(p + 1) * d], &order[a..b]);
        }
    }
}

/// Smallest temperature for the single-pass kernel: its fixed shift keeps every weight
/// `exp(s − 1/τ) ≥ exp(−2/τ)`, which stays a normal f32 for τ ≥ 0.025.
const SINGLE_PASS_MIN_TEMP: f64 = 0.03;

/// One chunk of query rows: its queries, positives, negatives and outputs.
struct Chunk<'a> {
    queries: &'a [f32],
    positives: &'a [f32],
    negatives: &'a [u32],
    loss: &'a mut [f32],
    grad: &'a mut [f32],
}

/// Fused gather-dot-softmax on the host: returns `(loss [R], grad [R*D])`.
///
/// The keys are random rows of a table far larger than the caches; fetched row by row
/// per query the loop would wait on memory for every key. Instead each chunk of query
/// rows sorts its (query, key) pairs by key pixel and walks the table in order, so the
/// table streams sequentially while the chunk's queries and gradients stay in cache.
/// Chunks are a fixed size and independent, so the result does not depend on the thread
/// count.
pub(crate) fn host_rows(x: &HostContrast<'_>) -> (Vec<f32>, Vec<f32>) {
    let d = x.dim;
    let m = x.num_negatives;
    let rows = x.queries.len() / d;
    let mut loss = vec![0f32; rows];
    let mut grad = vec![0f32; rows * d];
    loss.par_chunks_mut(ROWS_PER_CHUNK)
        .zip(grad.par_chunks_mut(ROWS_PER_CHUNK * d))
        .enumerate()
        .for_each(|(i, (loss, grad))| {
            let (r0, nr) = (i * ROWS_PER_CHUNK, loss.len());
            let chunk = Chunk {
                queries: &x.queries[r0 * d..(r0 + nr) * d],
                positives: &x.positives[r0 * d..(r0 + nr) * d],
                negatives: &x.negatives[r0 * m..(r0 + nr) * m],
                loss,
                grad,
            };
            if x.temp >= SINGLE_PASS_MIN_TEMP {
                single_pass(x, chunk);
            } else {
                two_pass(x, chunk);
            }
        });
    (loss, grad)
}

/// One walk over the table. All vectors are unit vectors, so every logit is at most
/// `1/τ`: with that fixed shift the weights `exp(s − 1/τ)` need no running maximum, and
/// `Σ_j w_j k_j` and `Σ_j w_j` accumulate while each key is in L1; the row's softmax
/// normalisation is applied at the end.
fn single_pass(x: &HostContrast<'_>, c: Chunk<'_>) {
    let simd = Simd::detect();
    let (d, m) = (x.dim, x.num_negatives);
    let inv_t = (1.0 / x.temp) as f32;
    let nr = c.loss.len();
    let (start, order) = group_by_pixel(c.negatives, x.table.len() / d);
    let mut total = vec![0f64; nr];
    for_each_key(x.table, d, &start, &order, |key, entries| {
        for &e in entries {
            let r = e as usize / m;
            let weight = (simd.dot(&c.queries[r * d..(r + 1) * d], key) * inv_t - inv_t).exp();
            total[r] += f64::from(weight);
            simd.axpy(weight, key, &mut c.grad[r * d..(r + 1) * d]);
        }
    });
    for (r, (loss, grad)) in c.loss.iter_mut().zip(c.grad.chunks_mut(d)).enumerate() {
        let pos = &c.positives[r * d..(r + 1) * d];
        let s0 = simd.dot(&c.queries[r * d..(r + 1) * d], pos) * inv_t;
        let e0 = (s0 - inv_t).exp();
        let z = total[r] + f64::from(e0);
        // ℓ = logsumexp(s) − s₀ = log(Σ e^{s_j − 1/τ}) − (s₀ − 1/τ).
        *loss = (z.ln() - f64::from(s0 - inv_t)) as f32;
        // dℓ/dq̂ = (Σ_j softmax_j k_j − k₀) / τ.
        let scale = (1.0 / z) as f32 * inv_t;
        for g in grad.iter_mut() {
            *g *= scale;
        }
        simd.axpy(e0 * scale - inv_t, pos, grad);
    }
}

/// Two walks over the table (logits, then gradient) with an exact per-row maximum, for
/// temperatures too small for [`single_pass`]'s fixed shift.
fn two_pass(x: &HostContrast<'_>, c: Chunk<'_>) {
    let simd = Simd::detect();
    let (d, m) = (x.dim, x.num_negatives);
    let inv_t = (1.0 / x.temp) as f32;
    let nr = c.loss.len();
    let (start, order) = group_by_pixel(c.negatives, x.table.len() / d);
    // Pass 1: negative logits s[e] = q·k / τ.
    let mut weights = vec![0f32; nr * m];
    for_each_key(x.table, d, &start, &order, |key, entries| {
        for &e in entries {
            let r = e as usize / m;
            weights[e as usize] = simd.dot(&c.queries[r * d..(r + 1) * d], key) * inv_t;
        }
    });
    // Per row: softmax with the positive logit, loss, and the positive's gradient; the
    // negatives' logits become their softmax weights divided by τ.
    for r in 0..nr {
        let (q, pos) = (
            &c.queries[r * d..(r + 1) * d],
            &c.positives[r * d..(r + 1) * d],
        );
        let row = &mut weights[r * m..(r + 1) * m];
        let s0 = simd.dot(q, pos) * inv_t;
        let max = row.iter().copied().fold(s0, f32::max);
        let e0 = (s0 - max).exp();
        let mut total = f64::from(e0);
        for l in row.iter_mut() {
            *l = (*l - max).exp();
            total += f64::from(*l);
        }
        c.loss[r] = (total.ln() - f64::from(s0 - max)) as f32;
        let scale = (1.0 / total) as f32 * inv_t;
        for l in row.iter_mut() {
            *l *= scale;
        }
        simd.axpy(e0 * scale - inv_t, pos, &mut c.grad[r * d..(r + 1) * d]);
    }
    // Pass 2: gradient += Σ_j weight_j k_j.
    for_each_key(x.table, d, &start, &order, |key, entries| {
        for &e in entries {
            let r = e as usize / m;
            simd.axpy(weights[e as usize], key, &mut c.grad[r * d..(r + 1) * d]);
        }
    });
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

/// The key table of the fused kernel and the per-class feature sums, from one pass over
/// the representation.
pub(crate) struct HostTable {
    /// `[B*P, D]` L2-normalised feature rows.
    pub table: Vec<f32>,
    /// `[C, D]` sums of the raw features of each class's valid pixels.
    pub class_sums: Vec<f64>,
}

/// `[B, D, P]` features (contiguous f32) → [`HostTable`]; `class_code[pixel]` is the
/// pixel's valid class or [`crate::sampler::NO_CLASS`]. One parallel pass, one large
/// allocation.
pub(crate) fn host_table(
    rep: &[f32],
    b: usize,
    d: usize,
    p: usize,
    class_code: &[u32],
    num_classes: usize,
) -> HostTable {
    // Pixels per tile: the tile's rows (BLOCK x D floats) stay in L1/L2 while every
    // channel is read as a contiguous run of BLOCK values.
    const BLOCK: usize = 32;
    let simd = Simd::detect();
    let mut table = crate::buffers::zeroed_f32(b * p * d);
    let partial: Vec<Vec<f64>> = table
        .par_chunks_mut(p * d)
        .enumerate()
        .map(|(bi, image)| {
            let mut sums = vec![0f64; num_classes * d];
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
                for (j, row) in out.chunks_mut(d).enumerate() {
                    let c = class_code[bi * p + first + j];
                    if let Some(sum) = sums.get_mut(c as usize * d..(c as usize + 1) * d) {
                        for (s, &v) in sum.iter_mut().zip(row.iter()) {
                            *s += f64::from(v);
                        }
                    }
                    let inv = 1.0 / simd.dot(row, row).sqrt().max(1e-8);
                    for o in row.iter_mut() {
                        *o *= inv;
                    }
                }
            }
            sums
        })
        .collect();
    let mut class_sums = vec![0f64; num_classes * d];
    for part in partial {
        for (s, v) in class_sums.iter_mut().zip(part) {
            *s += v;
        }
    }
    HostTable { table, class_sums }
}
