//! Gathering the query features `[R, D]` out of `rep` `[B, D, h, w]` with a gradient.
//!
//! On the CPU (unless `RECO_OPS=generic`) a custom op reads the features in place and its backward scatters the
//! query gradients into one zeroed buffer. The generic path (`index_select` on the
//! flattened tensor) needs a `[R*D]` index tensor and its backward copies a full-size
//! zero tensor once more inside `index_add`: at the VOC shape that is another 134 MB
//! buffer per step.

use candle_core::{CpuStorage, CustomOp1, DType, Layout, Shape, Tensor};
use rayon::prelude::*;

/// Query pixels (flat `b*h*w + y*w + x`) to gather from a `[B, D, P]` tensor.
struct GatherQueries {
    pixels: Vec<u32>,
    dim: usize,
    plane: usize,
}

impl GatherQueries {
    /// Offset of feature `k` of pixel `pix` in the `[B, D, P]` layout.
    #[inline]
    fn offset(&self, pix: u32, k: usize) -> usize {
        let (bi, s) = (pix as usize / self.plane, pix as usize % self.plane);
        (bi * self.dim + k) * self.plane + s
    }
}

impl CustomOp1 for GatherQueries {
    fn name(&self) -> &'static str {
        "reco-gather-queries"
    }

    fn cpu_fwd(
        &self,
        storage: &CpuStorage,
        layout: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let Some((start, end)) = layout.contiguous_offsets() else {
            candle_core::bail!("reco-gather-queries: rep must be contiguous");
        };
        let data = &storage.as_slice::<f32>()?[start..end];
        let d = self.dim;
        let mut out = vec![0f32; self.pixels.len() * d];
        for (row, &pix) in out.chunks_mut(d).zip(&self.pixels) {
            for (k, o) in row.iter_mut().enumerate() {
                *o = data[self.offset(pix, k)];
            }
        }
        Ok((CpuStorage::F32(out), Shape::from((self.pixels.len(), d))))
    }

    fn bwd(
        &self,
        arg: &Tensor,
        _res: &Tensor,
        grad_res: &Tensor,
    ) -> candle_core::Result<Option<Tensor>> {
        let grad = grad_res.to_dtype(DType::F32)?.contiguous()?;
        let (d, plane) = (self.dim, self.plane);
        // Rows of each image, in row order (duplicates add up in that order, as a serial
        // scatter would, so the result does not depend on the thread count).
        let images = arg.elem_count() / (d * plane).max(1);
        let mut by_image: Vec<Vec<(usize, usize)>> = vec![Vec::new(); images];
        for (r, &pix) in self.pixels.iter().enumerate() {
            let (bi, s) = (pix as usize / plane, pix as usize % plane);
            by_image[bi].push((s, r));
        }
        // One zeroed allocation (fresh pages: the zeros cost nothing until touched), then
        // every feature plane filled by one task in address order, so the first-touch page
        // faults are spread over the threads and sequential instead of random.
        let mut out = crate::buffers::zeroed_f32(arg.elem_count());
        crate::contrast::with_cpu_f32(&grad, |g| {
            out.par_chunks_mut(plane)
                .enumerate()
                .for_each(|(i, out_plane)| {
                    let (bi, k) = (i / d, i % d);
                    for &(s, r) in &by_image[bi] {
                        out_plane[s] += g[r * d + k];
                    }
                });
        })?;
        Ok(Some(Tensor::from_vec(out, arg.shape(), arg.device())?))
    }
}

/// `[R, D]` features of the given pixels of `rep` `[B, D, h, w]`, differentiable.
pub(crate) fn gather_queries(rep: &Tensor, pixels: &[u32]) -> candle_core::Result<Tensor> {
    let (_b, d, h, w) = rep.dims4()?;
    let plane = h * w;
    let rep = rep.contiguous()?;
    if !crate::config::use_generic_path(rep.device()) && rep.dtype() == DType::F32 {
        return rep.apply_op1(GatherQueries {
            pixels: pixels.to_vec(),
            dim: d,
            plane,
        });
    }
    let op = GatherQueries {
        pixels: Vec::new(),
        dim: d,
        plane,
    };
    let mut idx = Vec::with_capacity(pixels.len() * d);
    for &pix in pixels {
        idx.extend((0..d).map(|k| op.offset(pix, k) as u32));
    }
    let idx = Tensor::from_vec(idx, pixels.len() * d, rep.device())?;
    rep.flatten_all()?
        .index_select(&idx, 0)?
        .reshape((pixels.len(), d))
}
