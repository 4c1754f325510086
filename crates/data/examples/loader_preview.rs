//! Writes one labelled training batch as the trainer sees it, after augmentation:
//! de-normalised images (top) over their coloured labels (bottom), to check by eye that
//! labels stay aligned with their images.
//! `cargo run --release -p reco-data --example loader_preview -- out.png [batch]`

use std::sync::Arc;

use image::RgbImage;
use reco_data::datasets::{Synthetic, SyntheticConfig};
use reco_data::*;

fn main() -> std::result::Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let out = args
        .get(1)
        .map(String::as_str)
        .unwrap_or("loader_preview.png");
    let batch: usize = args.get(2).map(|s| s.parse()).transpose()?.unwrap_or(8);
    let ds: Arc<dyn SegDataset> = Arc::new(Synthetic::new(SyntheticConfig::default())?);
    let ids = ds.ids(Subset::Train).to_vec();
    let mut cfg = TrainLoaderConfig::labelled(DatasetKind::Synthetic, 0);
    cfg.batch_size = batch;
    let b = Loader::train(ds, ids, cfg)?
        .next()
        .ok_or("loader ended")??;
    let (n, _, h, w) = b.images.dims4()?;
    let images = b.images.flatten_all()?.to_vec1::<f32>()?;
    let labels = b.labels.flatten_all()?.to_vec1::<i64>()?;
    let palette = DatasetKind::Synthetic.palette();
    let mut grid = RgbImage::new((n * w) as u32, (2 * h) as u32);
    for i in 0..n {
        for y in 0..h {
            for x in 0..w {
                let px = |c: usize| {
                    let v =
                        images[((i * 3 + c) * h + y) * w + x] * IMAGENET_STD[c] + IMAGENET_MEAN[c];
                    (v * 255.0).clamp(0.0, 255.0) as u8
                };
                grid.put_pixel(
                    (i * w + x) as u32,
                    y as u32,
                    image::Rgb([px(0), px(1), px(2)]),
                );
                let l = labels[(i * h + y) * w + x];
                let c = usize::try_from(l)
                    .ok()
                    .and_then(|l| palette.get(l))
                    .copied()
                    .unwrap_or([255, 255, 255]);
                grid.put_pixel((i * w + x) as u32, (h + y) as u32, image::Rgb(c));
            }
        }
    }
    grid.save(out)?;
    println!("wrote {out}");
    Ok(())
}
