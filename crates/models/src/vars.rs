//! The network's variables by name: which are trained and which are batch-norm running
//! statistics (variables of the VarMap, saved in checkpoints, but never given to the
//! optimiser, weight decay or the EMA). Callers ask here instead of matching name
//! suffixes themselves, so the naming stays this crate's business.

use std::collections::BTreeMap;

use candle_core::{Result, Var};
use candle_nn::VarMap;

/// Suffixes of the batch-norm running statistics, as in PyTorch's state_dict.
const RUNNING_STAT_SUFFIXES: [&str; 2] = [".running_mean", ".running_var"];

/// True for batch-norm running statistics (`*.running_mean`, `*.running_var`).
pub fn is_running_stat(name: &str) -> bool {
    RUNNING_STAT_SUFFIXES.iter().any(|s| name.ends_with(s))
}

/// True for variables the optimiser updates (everything but running statistics).
pub fn is_trainable(name: &str) -> bool {
    !is_running_stat(name)
}

/// True for the encoder's variables (the ResNet's `resnet_*`, DINOv2's `backbone.*`):
/// the group that a pretrained backbone trains at the base learning rate, while the
/// decoder and heads may take a multiple of it.
pub fn is_encoder(name: &str) -> bool {
    name.starts_with("resnet_") || name.starts_with("backbone.")
}

/// Every variable of `varmap`, sorted by name (so iteration never depends on a hash
/// map's order). A map poisoned by an earlier panic is an error, not a panic.
pub fn named_vars(varmap: &VarMap) -> Result<BTreeMap<String, Var>> {
    let vars = varmap.data().lock().map_err(|_| {
        candle_core::Error::Msg("the variable map is poisoned by an earlier panic".into())
    })?;
    Ok(vars.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
}

/// The trainable variables of `varmap` by name, sorted.
pub fn trainable_vars(varmap: &VarMap) -> Result<BTreeMap<String, Var>> {
    let mut vars = named_vars(varmap)?;
    vars.retain(|name, _| is_trainable(name));
    Ok(vars)
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{DType, Device};
    use candle_nn::{Init, VarBuilder};

    #[test]
    fn running_statistics_are_not_trainable() {
        let map = VarMap::new();
        let vb = VarBuilder::from_varmap(&map, DType::F32, &Device::Cpu);
        for name in [
            "bn.weight",
            "bn.bias",
            "bn.running_mean",
            "bn.running_var",
            "conv.weight",
        ] {
            vb.get_with_hints(2, name, Init::Const(0.0)).unwrap();
        }
        let all: Vec<_> = named_vars(&map).unwrap().into_keys().collect();
        assert_eq!(
            all,
            [
                "bn.bias",
                "bn.running_mean",
                "bn.running_var",
                "bn.weight",
                "conv.weight"
            ]
        );
        let trained: Vec<_> = trainable_vars(&map).unwrap().into_keys().collect();
        assert_eq!(trained, ["bn.bias", "bn.weight", "conv.weight"]);
        assert!(is_running_stat("backbone.bn1.running_var"));
        assert!(!is_running_stat("backbone.bn1.weight"));
    }
}
