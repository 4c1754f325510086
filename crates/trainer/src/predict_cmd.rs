//! `trainer predict`: segments one image or every image of a folder and writes, per
//! image, the class mask in the dataset's palette and an overlay on the photo.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use image::RgbImage;
use reco_data::{colorize, image_to_tensor, io::read_rgb, DatasetKind};
use reco_models::MIN_INPUT_SIZE;

use crate::checkpoint_model::load_model;
use crate::config::parse_device;
use crate::eval::predict_classes;

/// Lower-case; matched case-insensitively.
const IMAGE_EXTENSIONS: [&str; 3] = ["jpg", "jpeg", "png"];
/// Weight of the mask colour in the overlay.
const OVERLAY_ALPHA: f32 = 0.5;

#[derive(clap::Args, Debug, Clone)]
pub struct PredictArgs {
    #[arg(long)]
    pub checkpoint: PathBuf,
    /// An image (jpg or png) or a folder of images.
    #[arg(long)]
    pub input: PathBuf,
    /// Folder for <name>_mask.png and <name>_overlay.png.
    #[arg(long)]
    pub output: PathBuf,
    /// Dataset whose palette colours the mask (default: that of the run the checkpoint is
    /// in, else guessed from the class count).
    #[arg(long)]
    pub dataset: Option<DatasetKind>,
    #[arg(long)]
    pub output_stride: Option<usize>,
    #[arg(long, default_value = "cpu")]
    pub device: String,
}

fn list_images(input: &Path) -> anyhow::Result<Vec<PathBuf>> {
    if input.is_file() {
        return Ok(vec![input.to_path_buf()]);
    }
    if !input.is_dir() {
        bail!(
            "--input {} is neither an image nor a folder",
            input.display()
        );
    }
    let mut files: Vec<PathBuf> = std::fs::read_dir(input)
        .with_context(|| format!("cannot list {}", input.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.extension()
                .and_then(|e| e.to_str())
                .is_some_and(|e| IMAGE_EXTENSIONS.contains(&e.to_ascii_lowercase().as_str()))
        })
        .collect();
    files.sort();
    if files.is_empty() {
        bail!("--input {} holds no .jpg or .png image", input.display());
    }
    Ok(files)
}

fn overlay(photo: &RgbImage, mask: &RgbImage) -> RgbImage {
    RgbImage::from_fn(photo.width(), photo.height(), |x, y| {
        let (p, m) = (photo.get_pixel(x, y).0, mask.get_pixel(x, y).0);
        image::Rgb(std::array::from_fn(|c| {
            ((1.0 - OVERLAY_ALPHA) * p[c] as f32 + OVERLAY_ALPHA * m[c] as f32).round() as u8
        }))
    })
}

fn save_png(img: &RgbImage, path: &Path) -> anyhow::Result<()> {
    let mut bytes = Vec::new();
    img.write_to(
        &mut std::io::Cursor::new(&mut bytes),
        image::ImageFormat::Png,
    )
    .with_context(|| format!("cannot encode {}", path.display()))?;
    crate::fsutil::write_atomic(path, &bytes)
}

/// Returns the files written.
pub fn run(args: &PredictArgs) -> anyhow::Result<Vec<PathBuf>> {
    let device = parse_device(&args.device)?;
    let loaded = load_model(&args.checkpoint, args.dataset, args.output_stride, &device)?;
    let num_classes = loaded.model.config().num_classes;
    let kind = loaded.dataset.or_else(|| {
        DatasetKind::ALL
            .into_iter()
            .find(|k| k.defaults().num_classes == num_classes)
    });
    let palette: Vec<[u8; 3]> = match kind {
        Some(k) => k.palette().to_vec(),
        None => (0..num_classes)
            .map(|c| DatasetKind::Pascal.palette()[c % 21])
            .collect(),
    };
    let images = list_images(&args.input)?;
    std::fs::create_dir_all(&args.output)
        .with_context(|| format!("cannot create {}", args.output.display()))?;
    let mut written = Vec::new();
    for path in images {
        let photo = read_rgb(&path, "predict reads .jpg and .png photos")?;
        let (w, h) = (photo.width() as usize, photo.height() as usize);
        if w < MIN_INPUT_SIZE || h < MIN_INPUT_SIZE {
            bail!(
                "{} is {w}x{h}: images must be at least {MIN_INPUT_SIZE}x{MIN_INPUT_SIZE}",
                path.display()
            );
        }
        let x = image_to_tensor(&photo)?.to_device(&device)?;
        let classes = predict_classes(&loaded.model, &x)?
            .flatten_all()?
            .to_dtype(candle_core::DType::I64)?
            .to_vec1::<i64>()?;
        let mask = colorize(&classes, w, h, &palette)?;
        let stem = path
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default();
        let mask_path = args.output.join(format!("{stem}_mask.png"));
        let overlay_path = args.output.join(format!("{stem}_overlay.png"));
        save_png(&mask, &mask_path)?;
        save_png(&overlay(&photo, &mask), &overlay_path)?;
        eprintln!("{} -> {}", path.display(), mask_path.display());
        written.push(mask_path);
        written.push(overlay_path);
    }
    Ok(written)
}
