//! Parity of the hub's DINOv2 names with transformers itself: `Dinov2Model` with
//! facebook/dinov2-small's config, every tensor filled with the formula weights of its
//! Hugging Face name (docs/design.md#reference-fixtures), run in eval mode in f32 by
//! `tests/fixtures/make_dinov2_transformers.py` into `dinov2s_transformers.safetensors`.
//! Here the same hub-named tensors go through `vit::timm_from_hf` into our `Dinov2`,
//! whose intermediate layers must match transformers' layer-normed hidden states.
//!
//! The input is 1x3x518x518: the 37x37 patch grid of the position embeddings, so
//! neither side interpolates them (transformers' interpolation differs from Meta's,
//! which ours follows; `parity_dpt.rs` checks that one against UniMatch V2's code).

mod common;

use std::collections::HashMap;

use candle_core::{DType, Device, Tensor};
use candle_nn::{VarBuilder, VarMap};
use common::*;
use reco_models::layers::Mode;
use reco_models::reference::formula_weight;
use reco_models::vit::{timm_from_hf, Dinov2, VitConfig};
use reco_models::Backbone;

const FILE: &str = "dinov2s_transformers.safetensors";
/// Tighter than the 1e-4 of the other eval-mode fixtures, so that a query/key mix-up
/// fails (see the controls at the end of the test); measured 3.8e-7.
const TOL: f64 = 1e-5;

/// Tensor names with their shapes.
type Layout = Vec<(String, Vec<usize>)>;

/// The fixture's metadata: the checkpoint's tensors as (hub name, shape), the input
/// shape, the blocks compared.
fn fixture_meta() -> (Layout, Vec<usize>, Vec<usize>) {
    let bytes = std::fs::read(fixture(FILE)).unwrap();
    let (_, meta) = safetensors::SafeTensors::read_metadata(&bytes).unwrap();
    let meta = meta.metadata().clone().expect("fixture metadata");
    let json = |key: &str| {
        meta.get(key)
            .unwrap_or_else(|| panic!("metadata {key}"))
            .clone()
    };
    (
        serde_json::from_str(&json("hf_state_dict")).unwrap(),
        serde_json::from_str(&json("input_shape")).unwrap(),
        serde_json::from_str(&json("blocks")).unwrap(),
    )
}

/// transformers' tensors under their hub names, filled with the formula.
fn hub_tensors(state_dict: &[(String, Vec<usize>)]) -> HashMap<String, Tensor> {
    state_dict
        .iter()
        .map(|(name, shape)| {
            let t = Tensor::from_vec(
                formula_weight(name, shape, false),
                shape.as_slice(),
                &Device::Cpu,
            )
            .unwrap();
            (name.clone(), t)
        })
        .collect()
}

/// `[1, D, h, w]` maps to their first `n` patch tokens, `[1, n, D]`.
fn first_tokens(map: &Tensor, n: usize) -> Tensor {
    map.flatten_from(2)
        .unwrap()
        .transpose(1, 2)
        .unwrap()
        .narrow(1, 0, n)
        .unwrap()
        .contiguous()
        .unwrap()
}

#[test]
fn timm_from_hf_matches_transformers_dinov2_small() {
    let start = std::time::Instant::now();
    let fx = load_fixture(FILE);
    let (state_dict, input_shape, blocks) = fixture_meta();
    assert_eq!(
        state_dict.len(),
        223,
        "transformers' Dinov2Model for ViT-S/14"
    );
    assert_eq!(input_shape, [1, 3, 518, 518]);
    assert_eq!(blocks, [2, 5, 8, 11]);

    let hub = hub_tensors(&state_dict);
    let timm = timm_from_hf(hub.clone()).unwrap();
    // Exactly the variables of our encoder, no more, no fewer.
    let cfg = VitConfig::for_backbone(Backbone::Dinov2Small).unwrap();
    let varmap = VarMap::new();
    Dinov2::new(
        &cfg,
        VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu),
    )
    .unwrap();
    let mut ours: Layout = varmap
        .data()
        .lock()
        .unwrap()
        .iter()
        .map(|(k, v)| (k.clone(), v.dims().to_vec()))
        .collect();
    let mut converted: Layout = timm
        .iter()
        .map(|(k, v)| (k.clone(), v.dims().to_vec()))
        .collect();
    ours.sort();
    converted.sort();
    assert_eq!(converted, ours);
    drop(varmap);

    let vit = Dinov2::new(
        &cfg,
        VarBuilder::from_tensors(timm, DType::F32, &Device::Cpu),
    )
    .unwrap();
    // The input: the formula, as the script made it (its head stored exactly, its sum).
    let x = formula_x("input", &input_shape, 2.0, DType::F32);
    let head = &fx["input.head"];
    let n = head.dim(0).unwrap();
    assert_eq!(
        x.flatten_all()
            .unwrap()
            .narrow(0, 0, n)
            .unwrap()
            .to_vec1::<f32>()
            .unwrap(),
        head.to_vec1::<f32>().unwrap()
    );
    let sum = x
        .to_dtype(DType::F64)
        .unwrap()
        .sum_all()
        .unwrap()
        .to_scalar::<f64>()
        .unwrap();
    let ref_sum = fx["input.sum"].to_vec1::<f64>().unwrap()[0];
    assert!(
        (sum - ref_sum).abs() < 1e-6 * (1.0 + ref_sum.abs()),
        "{sum} vs {ref_sum}"
    );

    let maps = vit
        .intermediate_layers(&x, &blocks, Mode::new(false, false))
        .unwrap();
    let mut report = Vec::new();
    for (block, map) in blocks.iter().zip(&maps) {
        let reference = &fx[&format!("eval.block{block}")]; // [1, 16, 384]
        let tokens = reference.dim(1).unwrap();
        assert_eq!(map.dims(), &[1, 384, 37, 37]);
        // [1, 384, 37, 37] -> the first patch tokens, [1, 16, 384].
        let e = rel_err(&first_tokens(map, tokens), reference);
        report.push(format!("block {block}: {e:.2e}"));
        assert!(
            e < TOL,
            "block {block}: relative error {e:e}\n{}",
            report.join("\n")
        );
    }
    println!(
        "transformers Dinov2Model vs timm_from_hf + Dinov2 at 518x518: {} ({:.1} s)",
        report.join(", "),
        start.elapsed().as_secs_f64()
    );

    // Controls: hub tensors swapped in pairs in every block (mistakes a name map can
    // make); block 2 must then differ by more than TOL. With formula weights the layer
    // norms' weights are 0.1 x_k, so the attention logits are small and attention nearly
    // uniform: query and key swapped move the outputs by only 2.1e-4 at block 2 (4.8e-4 at
    // block 11), hence TOL = 1e-5 rather than the 1e-4 of the other eval fixtures.
    let swaps = [
        ("attention.attention.query", "attention.attention.key"),
        ("attention.attention.key", "attention.attention.value"),
        ("layer_scale1.lambda1", "layer_scale2.lambda1"),
    ];
    let mut controls = Vec::new();
    for (a, b) in swaps {
        let mut swapped = hub.clone();
        for name in hub.keys() {
            let Some(rest) = name.strip_prefix("encoder.layer.") else {
                continue;
            };
            let (block, field) = rest.split_once('.').unwrap();
            if let Some(tail) = field.strip_prefix(a) {
                let other = format!("encoder.layer.{block}.{b}{tail}");
                swapped.insert(name.clone(), hub[&other].clone());
                swapped.insert(other, hub[name].clone());
            }
        }
        let vb = VarBuilder::from_tensors(timm_from_hf(swapped).unwrap(), DType::F32, &Device::Cpu);
        let map = Dinov2::new(&cfg, vb)
            .unwrap()
            .intermediate_layers(&x, &[2], Mode::new(false, false))
            .unwrap()
            .remove(0);
        let e = rel_err(&first_tokens(&map, 16), &fx["eval.block2"]);
        controls.push(format!("{a} <-> {b}: {e:.2e}"));
        assert!(e > TOL, "{a} <-> {b} still matches: {e:e}");
    }
    println!(
        "block 2 with swapped tensors: {} ({:.1} s in all)",
        controls.join(", "),
        start.elapsed().as_secs_f64()
    );
}
