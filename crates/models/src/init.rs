//! Seeded initialisation. candle's CPU random generator cannot be seeded, so the
//! initial weights are drawn on the host from a seed, with the distributions the
//! original asks for: Kaiming normal (fan-out, ReLU gain) for the backbone's
//! convolutions as torchvision's ResNet, PyTorch's uniform default for the heads'
//! convolutions and for biases, ones and zeros for batch norm. Same seed, same network, on any device.

use candle_core::{Result, Tensor};
use candle_nn::VarMap;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
// FNV-1a: stable across Rust versions, unlike DefaultHasher.
use reco_util::seed::hash_str;

/// The standard deviation of timm's ViT initialisation (linear layers, position
/// embeddings), as DINOv2's `init_weights_vit_timm`.
const VIT_STD: f64 = 0.02;

/// Standard normal draws by Box–Muller (keeps the dependency list short).
fn normal(rng: &mut ChaCha8Rng) -> f64 {
    let u1: f64 = rng.gen_range(f64::EPSILON..1.0);
    let u2: f64 = rng.gen();
    (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()
}

/// Re-initialises every variable of a network's VarMap from `seed`; each variable's
/// values depend only on the seed and its name. For DPT: timm's ViT rules for the
/// encoder (a network trained from scratch; fine-tuning loads DINOv2's weights), PyTorch's
/// defaults for the head's convolutions.
pub fn init_seeded(varmap: &VarMap, seed: u64) -> Result<()> {
    let vars = crate::vars::named_vars(varmap)?;
    for (name, var) in vars.iter() {
        let dims = var.dims().to_vec();
        let n: usize = dims.iter().product();
        let mut rng = ChaCha8Rng::seed_from_u64(seed ^ hash_str(name));
        let values: Vec<f64> = if dims.len() == 4 && name.starts_with("resnet_") {
            let fan_out = (dims[0] * dims[2] * dims[3]) as f64;
            let std = (2.0 / fan_out).sqrt();
            (0..n).map(|_| std * normal(&mut rng)).collect()
        } else if dims.len() == 4 {
            // The heads (ASPP, decoder, classifier, representation) keep PyTorch's default
            // conv init in the original, kaiming_uniform(a=√5) = U(±1/√fan_in): a fan-out
            // normal here would make the initial logits of the 1x1 classifier huge.
            let bound = 1.0 / ((dims[1] * dims[2] * dims[3]) as f64).sqrt();
            (0..n).map(|_| rng.gen_range(-bound..bound)).collect()
        } else if dims.len() == 2 && name.ends_with(".weight") {
            // A linear layer (the ViT's): timm's ViT initialisation, N(0, 0.02²)
            // (trunc_normal_ truncates at ±2, i.e. 100 standard deviations: never).
            (0..n).map(|_| VIT_STD * normal(&mut rng)).collect()
        } else if name.ends_with("pos_embed") {
            (0..n).map(|_| VIT_STD * normal(&mut rng)).collect()
        } else if name.ends_with("cls_token") {
            (0..n).map(|_| 1e-6 * normal(&mut rng)).collect()
        } else if name.ends_with("mask_token") {
            vec![0.0; n]
        } else if name.ends_with(".gamma") {
            // DINOv2's LayerScale, init_values = 1.
            vec![1.0; n]
        } else if name.ends_with(".running_var") {
            vec![1.0; n]
        } else if name.ends_with(".running_mean") {
            vec![0.0; n]
        } else if name.ends_with(".weight") {
            // A weight that is not 4-D is a batch-norm scale.
            vec![1.0; n]
        } else if let Some(prefix) = name.strip_suffix(".bias") {
            let conv_weight = format!("{prefix}.weight");
            match vars.get(&conv_weight).map(|w| w.dims().to_vec()) {
                Some(w) if w.len() == 4 => {
                    let bound = 1.0 / ((w[1] * w[2] * w[3]) as f64).sqrt();
                    (0..n).map(|_| rng.gen_range(-bound..bound)).collect()
                }
                _ => vec![0.0; n],
            }
        } else {
            candle_core::bail!("init_seeded: no rule for variable {name} {dims:?}")
        };
        let t = Tensor::from_vec(values, dims.as_slice(), &candle_core::Device::Cpu)?
            .to_dtype(var.dtype())?
            .to_device(var.device())?;
        var.set(&t)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Backbone, DeepLabConfig, DeepLabV3Plus};
    use candle_core::{DType, Device};
    use candle_nn::VarBuilder;

    fn net(seed: u64) -> VarMap {
        let vars = VarMap::new();
        let cfg = DeepLabConfig {
            backbone: Backbone::ResNet18,
            output_stride: 16,
            num_classes: 5,
            output_dim: 8,
        };
        DeepLabV3Plus::new(
            &cfg,
            VarBuilder::from_varmap(&vars, DType::F32, &Device::Cpu),
        )
        .unwrap();
        init_seeded(&vars, seed).unwrap();
        vars
    }

    fn values(vars: &VarMap, name: &str) -> Vec<f32> {
        let data = vars.data().lock().unwrap();
        data[name]
            .as_tensor()
            .flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap()
    }

    #[test]
    fn seeded_init_is_reproducible_and_has_the_original_distributions() {
        let (a, b, c) = (net(7), net(7), net(8));
        let conv = "resnet_layer1.0.conv1.weight"; // 64x64x3x3: fan-out 576
        assert_eq!(values(&a, conv), values(&b, conv));
        assert_ne!(values(&a, conv), values(&c, conv));
        let v = values(&a, conv);
        let std = (v.iter().map(|x| x * x).sum::<f32>() / v.len() as f32).sqrt();
        let want = (2.0f32 / 576.0).sqrt();
        assert!(
            (std / want - 1.0).abs() < 0.05,
            "backbone std {std} vs {want}"
        );
        // classifier.3: 5x256x1x1, U(±1/16).
        let head = values(&a, "classifier.3.weight");
        assert!(head.iter().all(|x| x.abs() <= 1.0 / 16.0));
        assert!(head.iter().any(|x| x.abs() > 0.75 / 16.0));
        assert!(values(&a, "resnet_bn1.weight").iter().all(|&x| x == 1.0));
        assert!(values(&a, "resnet_bn1.running_var")
            .iter()
            .all(|&x| x == 1.0));
        assert!(values(&a, "resnet_bn1.bias").iter().all(|&x| x == 0.0));
    }
}
