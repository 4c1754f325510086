//! The DINOv2 vision transformer (Oquab et al. 2023) as an encoder for dense prediction,
//! under the parameter names of Meta's checkpoints and UniMatch V2's `DINOv2` module
//! (timm's: `patch_embed.proj`, `cls_token`, `pos_embed`, `blocks.N.{norm1, attn.qkv,
//! attn.proj, ls1.gamma, norm2, mlp.fc1, mlp.fc2, ls2.gamma}`, `norm`, `mask_token`).
//!
//! Written here instead of taken from candle-transformers' `models::dinov2` for what
//! training needs and that module lacks (checked against candle-transformers 0.11):
//! - gradients: its blocks use candle-nn's `LayerNorm`, whose fused op has no backward,
//!   so nothing before the last layer norm would learn; here [`crate::ops::layer_norm`];
//! - intermediate layers: DPT reads four blocks' outputs, each through the final norm;
//! - position embeddings resized to the crop as DINOv2 does it (bicubic, with its 0.1
//!   offset, rows and columns kept apart for non-square crops; candle's is nearest and
//!   swaps H and W), see [`interpolated_position_embedding`];
//! - DINOv2's own constants: layer-norm eps 1e-6 (candle's module uses 1e-5) and the exact
//!   erf GELU of `nn.GELU` (candle's uses the tanh approximation);
//! - mixed precision and the no-graph mode of this crate's layers ([`Mode`]).
//!
//! Not implemented, because no recipe this crate follows uses them: drop-path (UniMatch
//! V2 trains with rate 0), register tokens (dinov2-reg checkpoints), the SwiGLU FFN of
//! ViT-g. `mask_token` is kept as a variable only so that checkpoints load strictly.

use candle_core::{DType, Result, Tensor};
use candle_nn::{Init, VarBuilder};

use crate::layers::{param_in, Conv2d, Conv2dConfig, Mode};
use crate::ops::{bicubic_matrix, gelu_erf, layer_norm, softmax_last_dim};
use crate::resnet::Backbone;

/// DINOv2's patch size: crops are multiples of it.
pub const PATCH_SIZE: usize = 14;
/// The patch grid of DINOv2's position embeddings (518 / 14: it was trained at 518).
pub const PRETRAIN_GRID: usize = 37;
/// DINOv2's layer-norm epsilon.
const LAYER_NORM_EPS: f64 = 1e-6;
/// DINOv2's `interpolate_offset`: added to the target grid before computing the scale.
const INTERPOLATE_OFFSET: f64 = 0.1;
/// The standard deviation of timm's ViT initialisation (linear layers, position
/// embeddings) for a network trained from scratch.
const TIMM_INIT_STD: f64 = 0.02;

/// The size of one DINOv2 ViT/14.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct VitConfig {
    pub embed_dim: usize,
    pub depth: usize,
    pub num_heads: usize,
    /// Hidden width of each MLP.
    pub mlp_dim: usize,
}

impl VitConfig {
    /// DINOv2's ViT-S, -B and -L (`vit_small`, `vit_base`, `vit_large` of its code).
    pub fn for_backbone(backbone: Backbone) -> Result<Self> {
        let (embed_dim, depth, num_heads) = match backbone {
            Backbone::Dinov2Small => (384, 12, 6),
            Backbone::Dinov2Base => (768, 12, 12),
            Backbone::Dinov2Large => (1024, 24, 16),
            other => candle_core::bail!("{other} is not a vision transformer"),
        };
        Ok(Self {
            embed_dim,
            depth,
            num_heads,
            mlp_dim: 4 * embed_dim,
        })
    }
}

/// `nn.Linear`: `weight [out, in]`, `bias [out]`, cast to the input's type in the graph
/// (as [`Conv2d`] does in mixed precision).
#[derive(Clone, Debug)]
struct Linear {
    weight: Tensor,
    bias: Tensor,
}

impl Linear {
    fn new(input: usize, output: usize, vb: VarBuilder) -> Result<Self> {
        let normal = Init::Randn {
            mean: 0.0,
            stdev: TIMM_INIT_STD,
        };
        Ok(Self {
            weight: vb.get_with_hints((output, input), "weight", normal)?,
            bias: vb.get_with_hints(output, "bias", Init::Const(0.0))?,
        })
    }

    /// `x [..., in]` to `[..., out]`.
    fn forward(&self, x: &Tensor, mode: Mode) -> Result<Tensor> {
        let w = param_in(&self.weight, mode, x.dtype())?;
        let b = param_in(&self.bias, mode, x.dtype())?;
        let dims = x.dims().to_vec();
        let input = dims[dims.len() - 1];
        let rows = x.elem_count() / input.max(1);
        let mut out_dims = dims;
        let last = out_dims.len() - 1;
        out_dims[last] = w.dim(0)?;
        x.reshape((rows, input))?
            .matmul(&w.t()?)?
            .broadcast_add(&b)?
            .reshape(out_dims)
    }
}

#[derive(Clone, Debug)]
struct LayerNorm {
    weight: Tensor,
    bias: Tensor,
}

impl LayerNorm {
    fn new(dim: usize, vb: VarBuilder) -> Result<Self> {
        Ok(Self {
            weight: vb.get_with_hints(dim, "weight", Init::Const(1.0))?,
            bias: vb.get_with_hints(dim, "bias", Init::Const(0.0))?,
        })
    }

    /// Normalises in the weights' type (f32 in mixed precision) and returns `x`'s type.
    fn forward(&self, x: &Tensor, mode: Mode) -> Result<Tensor> {
        let own = self.weight.dtype();
        let w = param_in(&self.weight, mode, own)?;
        let b = param_in(&self.bias, mode, own)?;
        layer_norm(x, &w, &b, LAYER_NORM_EPS)
    }
}

#[derive(Clone, Debug)]
struct Attention {
    qkv: Linear,
    proj: Linear,
    num_heads: usize,
}

impl Attention {
    fn forward(&self, x: &Tensor, mode: Mode) -> Result<Tensor> {
        let (b, n, c) = x.dims3()?;
        let head_dim = c / self.num_heads;
        let qkv = self
            .qkv
            .forward(x, mode)?
            .reshape((b, n, 3, self.num_heads, head_dim))?
            .permute((2, 0, 3, 1, 4))?;
        let scale = (head_dim as f64).powf(-0.5);
        let q = (qkv.get(0)?.contiguous()? * scale)?;
        let k = qkv.get(1)?.contiguous()?;
        let v = qkv.get(2)?.contiguous()?;
        let logits = q.matmul(&k.t()?)?;
        // Softmax in at least f32, as PyTorch's autocast runs it.
        let low = matches!(logits.dtype(), DType::F16 | DType::BF16);
        let logits = if low {
            logits.to_dtype(DType::F32)?
        } else {
            logits
        };
        // candle-nn's fused softmax has no backward (see ops::softmax_last_dim).
        let attn = softmax_last_dim(&logits, mode.grad)?;
        let attn = attn.to_dtype(v.dtype())?;
        let y = attn
            .matmul(&v)?
            .transpose(1, 2)?
            .contiguous()?
            .reshape((b, n, c))?;
        self.proj.forward(&y, mode)
    }
}

/// DINOv2's `LayerScale`: a learnt per-channel factor on each residual branch.
#[derive(Clone, Debug)]
struct LayerScale {
    gamma: Tensor,
}

impl LayerScale {
    fn new(dim: usize, vb: VarBuilder) -> Result<Self> {
        // DINOv2's init_values = 1.0 (UniMatch V2's `DINOv2(...)`).
        Ok(Self {
            gamma: vb.get_with_hints(dim, "gamma", Init::Const(1.0))?,
        })
    }

    fn forward(&self, x: &Tensor, mode: Mode) -> Result<Tensor> {
        x.broadcast_mul(&param_in(&self.gamma, mode, x.dtype())?)
    }
}

#[derive(Clone, Debug)]
struct Mlp {
    fc1: Linear,
    fc2: Linear,
}

impl Mlp {
    fn forward(&self, x: &Tensor, mode: Mode) -> Result<Tensor> {
        // nn.GELU's exact form (erf), as DINOv2 trains with.
        let h = gelu_erf(&self.fc1.forward(x, mode)?, mode.grad)?;
        self.fc2.forward(&h, mode)
    }
}

#[derive(Clone, Debug)]
struct Block {
    norm1: LayerNorm,
    attn: Attention,
    ls1: LayerScale,
    norm2: LayerNorm,
    mlp: Mlp,
    ls2: LayerScale,
}

impl Block {
    fn new(cfg: &VitConfig, vb: VarBuilder) -> Result<Self> {
        let d = cfg.embed_dim;
        let attn = vb.pp("attn");
        let mlp = vb.pp("mlp");
        Ok(Self {
            norm1: LayerNorm::new(d, vb.pp("norm1"))?,
            attn: Attention {
                qkv: Linear::new(d, 3 * d, attn.pp("qkv"))?,
                proj: Linear::new(d, d, attn.pp("proj"))?,
                num_heads: cfg.num_heads,
            },
            ls1: LayerScale::new(d, vb.pp("ls1"))?,
            norm2: LayerNorm::new(d, vb.pp("norm2"))?,
            mlp: Mlp {
                fc1: Linear::new(d, cfg.mlp_dim, mlp.pp("fc1"))?,
                fc2: Linear::new(cfg.mlp_dim, d, mlp.pp("fc2"))?,
            },
            ls2: LayerScale::new(d, vb.pp("ls2"))?,
        })
    }

    fn forward(&self, x: &Tensor, mode: Mode) -> Result<Tensor> {
        let a = self.attn.forward(&self.norm1.forward(x, mode)?, mode)?;
        let x = (x + self.ls1.forward(&a, mode)?)?;
        let m = self.mlp.forward(&self.norm2.forward(&x, mode)?, mode)?;
        x + self.ls2.forward(&m, mode)?
    }
}

/// The DINOv2 encoder; [`Dinov2::intermediate_layers`] is what DPT reads.
#[derive(Clone, Debug)]
pub struct Dinov2 {
    cfg: VitConfig,
    patch_embed: Conv2d,
    cls_token: Tensor,
    pos_embed: Tensor,
    blocks: Vec<Block>,
    norm: LayerNorm,
}

impl Dinov2 {
    pub fn new(cfg: &VitConfig, vb: VarBuilder) -> Result<Self> {
        let d = cfg.embed_dim;
        let patch_embed = Conv2d::new(
            Conv2dConfig::new(3, d, PATCH_SIZE)
                .stride(PATCH_SIZE)
                .with_bias(),
            vb.pp("patch_embed").pp("proj"),
        )?;
        let cls_token = vb.get_with_hints(
            (1, 1, d),
            "cls_token",
            Init::Randn {
                mean: 0.0,
                stdev: 1e-6,
            },
        )?;
        let tokens = PRETRAIN_GRID * PRETRAIN_GRID + 1;
        let pos_embed = vb.get_with_hints(
            (1, tokens, d),
            "pos_embed",
            Init::Randn {
                mean: 0.0,
                stdev: TIMM_INIT_STD,
            },
        )?;
        // Only in the checkpoints (DINOv2's masked-image pretraining); unused here.
        vb.get_with_hints((1, d), "mask_token", Init::Const(0.0))?;
        let blocks = (0..cfg.depth)
            .map(|i| Block::new(cfg, vb.pp("blocks").pp(i)))
            .collect::<Result<Vec<_>>>()?;
        Ok(Self {
            cfg: *cfg,
            patch_embed,
            cls_token,
            pos_embed,
            blocks,
            norm: LayerNorm::new(d, vb.pp("norm"))?,
        })
    }

    pub fn config(&self) -> &VitConfig {
        &self.cfg
    }

    /// The patch tokens after each block in `layers` (indices from 0, increasing), each
    /// through the final layer norm, as `[B, D, H/14, W/14]` maps: DINOv2's
    /// `get_intermediate_layers(x, layers, norm=True)` without the class token, reshaped.
    /// `x` is `[B, 3, H, W]` with H and W multiples of [`PATCH_SIZE`].
    pub fn intermediate_layers(
        &self,
        x: &Tensor,
        layers: &[usize],
        mode: Mode,
    ) -> Result<Vec<Tensor>> {
        let (b, _, h, w) = x.dims4()?;
        if h % PATCH_SIZE != 0 || w % PATCH_SIZE != 0 || h == 0 || w == 0 {
            candle_core::bail!(
                "DINOv2 needs an input whose height and width are multiples of {PATCH_SIZE}, got {h}x{w}"
            )
        }
        if let Some(&last) = layers.last() {
            if last >= self.blocks.len() || layers.windows(2).any(|p| p[0] >= p[1]) {
                candle_core::bail!(
                    "intermediate layers {layers:?} must increase and lie below the encoder's {} blocks",
                    self.blocks.len()
                )
            }
        }
        let (gh, gw) = (h / PATCH_SIZE, w / PATCH_SIZE);
        let d = self.cfg.embed_dim;
        let patches = self
            .patch_embed
            .forward(x, mode)?
            .flatten_from(2)?
            .transpose(1, 2)?; // [B, gh·gw, D]
        let cls = param_in(&self.cls_token, mode, patches.dtype())?.broadcast_as((b, 1, d))?;
        let tokens = Tensor::cat(&[&cls, &patches], 1)?;
        let pos = interpolated_position_embedding(
            &param_in(&self.pos_embed, mode, self.pos_embed.dtype())?,
            h,
            w,
        )?
        .to_dtype(tokens.dtype())?;
        let mut x = tokens.broadcast_add(&pos)?;
        let mut out = Vec::with_capacity(layers.len());
        for (i, block) in self.blocks.iter().enumerate() {
            if out.len() == layers.len() {
                break;
            }
            x = block.forward(&x, mode)?;
            if layers.contains(&i) {
                let normed = self.norm.forward(&x, mode)?;
                let map = normed
                    .narrow(1, 1, gh * gw)?
                    .transpose(1, 2)?
                    .reshape((b, d, gh, gw))?;
                out.push(map);
            }
        }
        Ok(out)
    }
}

/// DINOv2's `interpolate_pos_encoding` for an `h x w` input: the class token's embedding
/// unchanged, the 37x37 grid resized bicubically to `(h/14) x (w/14)` with scale factors
/// `(h/14 + 0.1) / 37` and `(w/14 + 0.1) / 37`; the embedding itself when the grid
/// already fits and the input is square (as DINOv2 tests it). `pos_embed` is
/// `[1, 1 + 37², D]`; the result `[1, 1 + (h/14)(w/14), D]`, differentiable (two
/// interpolation matrices).
pub fn interpolated_position_embedding(pos_embed: &Tensor, h: usize, w: usize) -> Result<Tensor> {
    let (_, tokens, d) = pos_embed.dims3()?;
    let n = tokens - 1;
    let grid = (n as f64).sqrt() as usize;
    if grid * grid != n {
        candle_core::bail!("position embedding of {tokens} tokens has no square patch grid")
    }
    let (gh, gw) = (h / PATCH_SIZE, w / PATCH_SIZE);
    if gh * gw == n && h == w {
        return Ok(pos_embed.clone());
    }
    let (dtype, dev) = (pos_embed.dtype(), pos_embed.device());
    let scale = |g: usize| (g as f64 + INTERPOLATE_OFFSET) / grid as f64;
    let rows = bicubic_matrix(grid, gh, scale(gh), dtype, dev)?; // [gh, grid]
    let cols = bicubic_matrix(grid, gw, scale(gw), dtype, dev)?; // [gw, grid]
    let class = pos_embed.narrow(1, 0, 1)?;
    // [grid, grid, D] as [grid, grid·D]: rows first, then columns on [gh, grid, D].
    let patch = pos_embed.narrow(1, 1, n)?.reshape((grid, grid * d))?;
    let by_rows = rows.matmul(&patch)?.reshape((gh, grid, d))?; // [gh, grid, D]
    let by_cols = cols.broadcast_left(gh)?.matmul(&by_rows)?; // [gh, gw, D]
    let patch = by_cols.reshape((1, gh * gw, d))?;
    Tensor::cat(&[&class, &patch], 1)
}

/// Meta's DINOv2 weights as the Hugging Face hub stores them (`facebook/dinov2-small`
/// and its siblings, transformers' `Dinov2Model`) under this module's (timm's) names:
/// `embeddings.*` → `cls_token`, `pos_embed`, `mask_token`, `patch_embed.proj.*`;
/// `encoder.layer.N.*` → `blocks.N.*` with `attention.attention.{query,key,value}`
/// stacked into `attn.qkv` (q; k; v along the output dimension, as timm's fused
/// projection), `attention.output.dense` → `attn.proj`, `layer_scale{1,2}.lambda1` →
/// `ls{1,2}.gamma`; `layernorm` → `norm`. transformers >= 5 names the projections
/// `attention.{q,k,v,o}_proj` in memory (a `state_dict()` saved directly); those map the
/// same way. A `dinov2.` prefix (the task models') is
/// stripped; tensors of other heads (`classifier.*`, `pooler.*`) are dropped. Names
/// that are already timm's pass through, so either layout converts.
pub fn timm_from_hf(
    tensors: std::collections::HashMap<String, Tensor>,
) -> Result<std::collections::HashMap<String, Tensor>> {
    use std::collections::{BTreeMap, HashMap};
    let mut out = HashMap::new();
    // (block, q|k|v, weight|bias) -> tensor, stacked once all three are there.
    let mut qkv: BTreeMap<(usize, &'static str), [Option<Tensor>; 3]> = BTreeMap::new();
    for (name, t) in tensors {
        let name = name.strip_prefix("dinov2.").unwrap_or(&name).to_string();
        let mapped = match name.as_str() {
            "embeddings.cls_token" => "cls_token".to_string(),
            "embeddings.mask_token" => "mask_token".to_string(),
            "embeddings.position_embeddings" => "pos_embed".to_string(),
            n if n.starts_with("embeddings.patch_embeddings.projection.") => n.replace(
                "embeddings.patch_embeddings.projection.",
                "patch_embed.proj.",
            ),
            n if n.starts_with("layernorm.") => n.replace("layernorm.", "norm."),
            n if n.starts_with("encoder.layer.") => {
                let rest = &n["encoder.layer.".len()..];
                let (index, field) = rest.split_once('.').ok_or_else(|| {
                    candle_core::Error::Msg(format!("unexpected DINOv2 tensor {n}"))
                })?;
                let block: usize = index.parse().map_err(|_| {
                    candle_core::Error::Msg(format!("unexpected DINOv2 tensor {n}"))
                })?;
                // The checkpoints' `attention.attention.{query,key,value}`, or the
                // in-memory names of transformers >= 5 (`attention.{q,k,v}_proj`).
                if let Some(part) = field.strip_prefix("attention.attention.").or_else(|| {
                    field
                        .strip_prefix("attention.")
                        .filter(|p| !p.starts_with("output.") && !p.starts_with("o_proj."))
                }) {
                    let (which, kind) = part.split_once('.').ok_or_else(|| {
                        candle_core::Error::Msg(format!("unexpected DINOv2 tensor {n}"))
                    })?;
                    let slot = match which {
                        "query" | "q_proj" => 0,
                        "key" | "k_proj" => 1,
                        "value" | "v_proj" => 2,
                        _ => candle_core::bail!("unexpected DINOv2 tensor {n}"),
                    };
                    let kind: &'static str = match kind {
                        "weight" => "weight",
                        "bias" => "bias",
                        _ => candle_core::bail!("unexpected DINOv2 tensor {n}"),
                    };
                    qkv.entry((block, kind)).or_default()[slot] = Some(t);
                    continue;
                }
                let field = field
                    .replace("attention.output.dense.", "attn.proj.")
                    .replace("attention.o_proj.", "attn.proj.")
                    .replace("layer_scale1.lambda1", "ls1.gamma")
                    .replace("layer_scale2.lambda1", "ls2.gamma");
                format!("blocks.{block}.{field}")
            }
            n if n.starts_with("classifier.") || n.starts_with("pooler.") => continue,
            n => n.to_string(),
        };
        out.insert(mapped, t);
    }
    for ((block, kind), parts) in qkv {
        let [Some(q), Some(k), Some(v)] = parts else {
            candle_core::bail!(
                "DINOv2 block {block}: the attention {kind} needs query, key and value, one is missing"
            )
        };
        out.insert(
            format!("blocks.{block}.attn.qkv.{kind}"),
            Tensor::cat(&[&q, &k, &v], 0)?,
        );
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;
    use std::collections::HashMap;

    #[test]
    fn hub_names_of_either_transformers_generation_stack_into_qkv() {
        let t = |v: f32| Tensor::full(v, (2, 3), &Device::Cpu).unwrap();
        for (q, k, v, o) in [
            (
                "attention.attention.query",
                "attention.attention.key",
                "attention.attention.value",
                "attention.output.dense",
            ),
            (
                "attention.q_proj",
                "attention.k_proj",
                "attention.v_proj",
                "attention.o_proj",
            ),
        ] {
            let hub: HashMap<String, Tensor> = [(q, 1.0), (k, 2.0), (v, 3.0), (o, 4.0)]
                .into_iter()
                .map(|(n, x)| (format!("dinov2.encoder.layer.0.{n}.weight"), t(x)))
                .collect();
            let out = timm_from_hf(hub).unwrap();
            let mut names: Vec<_> = out.keys().cloned().collect();
            names.sort();
            assert_eq!(
                names,
                ["blocks.0.attn.proj.weight", "blocks.0.attn.qkv.weight"]
            );
            let qkv = out["blocks.0.attn.qkv.weight"].to_vec2::<f32>().unwrap();
            let firsts: Vec<f32> = qkv.iter().map(|r| r[0]).collect();
            assert_eq!(firsts, [1.0, 1.0, 2.0, 2.0, 3.0, 3.0], "{q}");
        }
        // A block missing its value projection is an error naming it.
        let hub: HashMap<String, Tensor> = [("query", 1.0), ("key", 2.0)]
            .into_iter()
            .map(|(n, x)| {
                (
                    format!("encoder.layer.3.attention.attention.{n}.bias"),
                    t(x),
                )
            })
            .collect();
        let err = timm_from_hf(hub).unwrap_err().to_string();
        assert!(err.contains("block 3") && err.contains("bias"), "{err}");
    }
}
