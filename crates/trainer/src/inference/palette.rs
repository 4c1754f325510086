//! Class colours of a trained network for pictures: those of its dataset's table, or, for
//! the folder dataset, those of the folder's classes.txt (found through the run's
//! config.json beside the checkpoint), else a generated colour per class.

use std::path::Path;

use reco_data::datasets::default_class_color;
use reco_data::{open, DatasetKind};

use super::checkpoint::run_config_beside;

/// One colour per class of a `num_classes` network trained on `kind` (when known).
pub fn palette_for(
    kind: Option<DatasetKind>,
    num_classes: usize,
    checkpoint: &Path,
) -> Vec<[u8; 3]> {
    let from_table = kind
        .map(|k| k.palette().to_vec())
        .filter(|p| p.len() >= num_classes);
    let from_folder = || {
        let cfg = run_config_beside(checkpoint)?;
        if cfg.dataset != DatasetKind::Folder {
            return None;
        }
        let ds = open(DatasetKind::Folder, cfg.data_root.as_deref()).ok()?;
        Some(ds.palette()).filter(|p| p.len() >= num_classes)
    };
    from_table
        .or_else(from_folder)
        .unwrap_or_else(|| (0..num_classes).map(default_class_color).collect())
}
