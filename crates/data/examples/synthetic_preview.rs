//! Writes a preview grid of synthetic images (top) and their coloured labels (bottom).
//! `cargo run -p reco-data --example synthetic_preview -- out.png [count]`

use image::RgbImage;
use reco_data::datasets::{Synthetic, SyntheticConfig};
use reco_data::{DatasetKind, SegDataset, Subset, IGNORE};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let out = args
        .get(1)
        .map(String::as_str)
        .unwrap_or("synthetic_preview.png");
    let n: usize = args.get(2).map(|s| s.parse()).transpose()?.unwrap_or(8);
    let ds = Synthetic::new(SyntheticConfig::default())?;
    let s = ds.config().image_size as u32;
    let palette = DatasetKind::Synthetic.palette();
    let mut grid = RgbImage::new(s * n as u32, 2 * s);
    for (i, id) in ds.ids(Subset::Train).iter().take(n).enumerate() {
        let sample = ds.load(id)?;
        for (x, y, p) in sample.image.enumerate_pixels() {
            grid.put_pixel(i as u32 * s + x, y, *p);
            let l = sample.label.get_pixel(x, y)[0];
            let c = if l == IGNORE {
                [255, 255, 255]
            } else {
                palette[l as usize]
            };
            grid.put_pixel(i as u32 * s + x, s + y, image::Rgb(c));
        }
    }
    grid.save(out)?;
    println!("wrote {out}");
    Ok(())
}
