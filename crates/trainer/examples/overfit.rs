//! Sanity check of the whole optimisation path: one fixed batch, many steps; the
//! supervised loss must fall towards zero.
//! `cargo run --release -p trainer --example overfit -- [steps] [lr]`

use std::sync::Arc;

use candle_core::Device;
use reco_data::datasets::{Synthetic, SyntheticConfig};
use reco_data::{DatasetKind, Loader, SegDataset, Subset, TrainLoaderConfig};
use trainer::train::config::{TrainConfig, TrainMode};
use trainer::train::Learner;

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let steps: usize = args.get(1).map(|s| s.parse()).transpose()?.unwrap_or(60);
    let lr: f64 = args.get(2).map(|s| s.parse()).transpose()?.unwrap_or(1e-2);
    let mut cfg = TrainConfig::for_dataset(DatasetKind::Synthetic);
    cfg.mode = TrainMode::Sup;
    cfg.reco = false;
    let ds: Arc<dyn SegDataset> = Arc::new(Synthetic::new(SyntheticConfig::default())?);
    let ids = ds.ids(Subset::Train).to_vec();
    let mut lcfg = TrainLoaderConfig::labelled(DatasetKind::Synthetic, 0);
    lcfg.batch_size = 8;
    let batch = Loader::train(ds, ids, lcfg)?.next().expect("a batch")?;
    let mut learner = Learner::new(cfg, Device::Cpu)?;
    for step in 0..steps {
        let l = learner.step(&batch, None, step, lr)?;
        if step % 5 == 0 || step + 1 == steps {
            println!("step {step}: supervised loss {:.4}", l.sup);
        }
    }
    Ok(())
}
