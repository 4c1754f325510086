//! Is the synthetic dataset hard enough that few labels hurt? Trains the same small
//! dilated CNN (candle-nn, CPU) on 10 and on 1000 labelled images for the same number of
//! steps with the loader's augmentation, and prints validation mIoU for each.
//!
//! `cargo run --release -p reco-data --example synthetic_difficulty -- [steps] [labels...]`
//! (defaults: 600 steps, labels 10 1000). Candle's CPU RNG cannot be seeded, so the
//! initial weights differ between runs; compare the gap, not the third decimal.

use std::sync::Arc;
use std::time::Instant;

use candle_core::{DType, Device, Module, Tensor};
use candle_nn::{
    batch_norm, conv2d_no_bias, AdamW, BatchNorm, Conv2d, Conv2dConfig, ModuleT, Optimizer,
    ParamsAdamW, VarBuilder, VarMap,
};
use reco_data::datasets::{Synthetic, SyntheticConfig};
use reco_data::*;

struct Net {
    layers: Vec<(Conv2d, BatchNorm)>,
    head: Conv2d,
}

impl Net {
    fn new(vb: VarBuilder, classes: usize) -> candle_core::Result<Self> {
        let c = |pad, stride, dil| Conv2dConfig {
            padding: pad,
            stride,
            dilation: dil,
            ..Default::default()
        };
        // Stride 4 overall, receptive field about 60 px: enough to see a whole object.
        let spec = [
            (3, 32, c(1, 1, 1)),
            (32, 48, c(1, 2, 1)),
            (48, 64, c(1, 1, 1)),
            (64, 64, c(1, 2, 1)),
            (64, 64, c(2, 1, 2)),
            (64, 64, c(4, 1, 4)),
            (64, 64, c(1, 1, 1)),
        ];
        let layers = spec
            .iter()
            .enumerate()
            .map(|(i, (i_c, o_c, cfg))| {
                Ok((
                    conv2d_no_bias(*i_c, *o_c, 3, *cfg, vb.pp(format!("c{i}")))?,
                    batch_norm(*o_c, 1e-5, vb.pp(format!("bn{i}")))?,
                ))
            })
            .collect::<candle_core::Result<_>>()?;
        let head = candle_nn::conv2d(64, classes, 1, Default::default(), vb.pp("head"))?;
        Ok(Self { layers, head })
    }

    fn forward(&self, x: &Tensor, train: bool) -> candle_core::Result<Tensor> {
        let mut h = x.clone();
        for (conv, bn) in &self.layers {
            h = bn.forward_t(&conv.forward(&h)?, train)?.relu()?;
        }
        self.head.forward(&h)
    }
}

/// Labels subsampled to the logits' stride-4 grid (pixel 4i+2, 4j+2), flattened.
fn subsample(labels: &Tensor, stride: usize) -> candle_core::Result<Vec<i64>> {
    let (b, h, w) = labels.dims3()?;
    let l = labels.flatten_all()?.to_vec1::<i64>()?;
    let (oh, ow) = (h / stride, w / stride);
    let mut out = Vec::with_capacity(b * oh * ow);
    for n in 0..b {
        for y in 0..oh {
            for x in 0..ow {
                out.push(l[n * h * w + (y * stride + stride / 2) * w + x * stride + stride / 2]);
            }
        }
    }
    Ok(out)
}

fn train_and_eval(
    ds: Arc<dyn SegDataset>,
    labelled: Vec<String>,
    steps: usize,
) -> std::result::Result<f64, Box<dyn std::error::Error>> {
    let classes = DatasetKind::Synthetic.defaults().num_classes;
    let dev = Device::Cpu;
    let vm = VarMap::new();
    let net = Net::new(VarBuilder::from_varmap(&vm, DType::F32, &dev), classes)?;
    let mut opt = AdamW::new(
        vm.all_vars(),
        ParamsAdamW {
            lr: 1e-3,
            weight_decay: 1e-4,
            ..Default::default()
        },
    )?;
    let mut loader = Loader::train(
        ds.clone(),
        labelled,
        TrainLoaderConfig::labelled(DatasetKind::Synthetic, 0),
    )?;
    for step in 0..steps {
        let b = loader.next().ok_or("loader ended")??;
        let logits = net.forward(&b.images, true)?; // [B,C,h,w]
        let (n, c, h, w) = logits.dims4()?;
        let flat = logits.permute((0, 2, 3, 1))?.reshape((n * h * w, c))?;
        let target = subsample(&b.labels, 4)?;
        let valid: Vec<u32> = (0..target.len() as u32)
            .filter(|&i| target[i as usize] >= 0)
            .collect();
        let tv: Vec<u32> = valid.iter().map(|&i| target[i as usize] as u32).collect();
        let idx = Tensor::from_vec(valid.clone(), valid.len(), &dev)?;
        let sel = flat.index_select(&idx, 0)?;
        let loss = candle_nn::loss::cross_entropy(&sel, &Tensor::from_vec(tv, valid.len(), &dev)?)?;
        opt.backward_step(&loss)?;
        if step % 100 == 0 {
            eprintln!("  step {step}: loss {:.3}", loss.to_scalar::<f32>()?);
        }
    }
    // Validation mIoU over all val pixels (argmax at stride 4, nearest back to full size).
    let mut conf = vec![0u64; classes * classes];
    let mut vcfg = ValLoaderConfig::new(DatasetKind::Synthetic);
    vcfg.batch_size = 20;
    for b in Loader::val(ds.clone(), ds.ids(Subset::Val).to_vec(), vcfg)? {
        let b = b?;
        let pred = net.forward(&b.images, false)?.argmax(1)?; // [B,h,w] u32
        let (n, ph, pw) = pred.dims3()?;
        let p = pred.flatten_all()?.to_vec1::<u32>()?;
        let (_, h, w) = b.labels.dims3()?;
        let l = b.labels.flatten_all()?.to_vec1::<i64>()?;
        for k in 0..n {
            for y in 0..h {
                for x in 0..w {
                    let t = l[k * h * w + y * w + x];
                    if t < 0 {
                        continue;
                    }
                    let q = p[k * ph * pw + (y / 4).min(ph - 1) * pw + (x / 4).min(pw - 1)];
                    conf[t as usize * classes + q as usize] += 1;
                }
            }
        }
    }
    let mut iou = Vec::new();
    for c in 0..classes {
        let tp = conf[c * classes + c] as f64;
        let row: u64 = (0..classes).map(|k| conf[c * classes + k]).sum();
        let col: u64 = (0..classes).map(|k| conf[k * classes + c]).sum();
        let union = row as f64 + col as f64 - tp;
        if union > 0.0 {
            iou.push(tp / union);
        }
    }
    Ok(iou.iter().sum::<f64>() / iou.len() as f64)
}

fn main() -> std::result::Result<(), Box<dyn std::error::Error>> {
    let args: Vec<usize> = std::env::args()
        .skip(1)
        .map(|a| a.parse())
        .collect::<std::result::Result<_, _>>()?;
    let steps = args.first().copied().unwrap_or(600);
    let label_counts = if args.len() > 1 {
        args[1..].to_vec()
    } else {
        vec![10, 1000]
    };
    // Optional overrides, e.g. SYN_OBJECTS=2,3 SYN_DISTRACTORS=0,2 SYN_NOISE=12 SYN_SIZE=0.15,0.3
    let mut cfg = SyntheticConfig::default();
    let pair = |k: &str| -> Option<(f32, f32)> {
        let v = std::env::var(k).ok()?;
        let (a, b) = v.split_once(',')?;
        Some((a.trim().parse().ok()?, b.trim().parse().ok()?))
    };
    if let Some((a, b)) = pair("SYN_OBJECTS") {
        cfg.objects = (a as usize, b as usize);
    }
    if let Some((a, b)) = pair("SYN_DISTRACTORS") {
        cfg.distractors = (a as usize, b as usize);
    }
    if let Some(n) = std::env::var("SYN_NOISE").ok().and_then(|v| v.parse().ok()) {
        cfg.noise = n;
    }
    if let Some(r) = pair("SYN_SIZE") {
        cfg.object_size = r;
    }
    println!("synthetic difficulty: small dilated CNN with batch norm, {steps} steps, batch 8, crop 64, {cfg:?}");
    let ds: Arc<dyn SegDataset> = Arc::new(Synthetic::new(cfg)?);
    for n in label_counts {
        let split = Split::sample(ds.as_ref(), n, 0, None)?;
        let t = Instant::now();
        let miou = train_and_eval(ds.clone(), split.labelled, steps)?;
        println!(
            "labels {n:>5}: val mIoU {:.1} %  ({:.0} s)",
            100.0 * miou,
            t.elapsed().as_secs_f64()
        );
    }
    Ok(())
}
