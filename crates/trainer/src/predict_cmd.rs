//! `trainer predict`: segments one image or every image of a folder and writes, per
//! image, the class mask in the dataset's palette and an overlay on the photo. Photos are
//! turned upright by their EXIF orientation first, so that the mask lines up with the
//! photo as viewers show it. An image that cannot be read does not stop a folder: the
//! others are predicted, and the failures are listed at the end (with an error).

use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use image::{DynamicImage, ImageDecoder, ImageReader, RgbImage};
use reco_data::{colorize, DatasetKind};
use reco_models::MIN_INPUT_SIZE;

use crate::checkpoint_model::LoadedModel;
use crate::cli_args::{DeviceArgs, InferenceArgs, ModelSource, PREDICT_TILE, PREDICT_TILE_ABOVE};

/// Lower-case; matched case-insensitively.
const IMAGE_EXTENSIONS: [&str; 3] = ["jpg", "jpeg", "png"];
/// Weight of the mask colour in the overlay.
const OVERLAY_ALPHA: f32 = 0.5;

#[derive(clap::Args, Debug, Clone)]
pub struct PredictArgs {
    #[command(flatten)]
    pub model: ModelSource,
    /// An image (jpg or png) or a folder of images.
    #[arg(long)]
    pub input: PathBuf,
    /// Folder for <name>_mask.png and <name>_overlay.png.
    #[arg(long)]
    pub output: PathBuf,
    #[command(flatten)]
    pub device: DeviceArgs,
    #[command(flatten)]
    pub explain: crate::explain::ExplainArgs,
    #[command(flatten)]
    pub inference: InferenceArgs,
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

pub(crate) fn save_png(img: &RgbImage, path: &Path) -> anyhow::Result<()> {
    let mut bytes = Vec::new();
    img.write_to(
        &mut std::io::Cursor::new(&mut bytes),
        image::ImageFormat::Png,
    )
    .with_context(|| format!("cannot encode {}", path.display()))?;
    reco_util::fs::write_atomic(path, &bytes)
        .with_context(|| format!("cannot save {}", path.display()))
}

/// The photo at `path` as viewers show it: decoded, then turned by its EXIF orientation.
pub fn read_photo(path: &Path) -> anyhow::Result<RgbImage> {
    let bytes = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
    let decode = || -> image::ImageResult<DynamicImage> {
        let mut decoder = ImageReader::new(std::io::Cursor::new(&bytes))
            .with_guessed_format()?
            .into_decoder()?;
        let orientation = decoder.orientation()?;
        let mut img = DynamicImage::from_decoder(decoder)?;
        img.apply_orientation(orientation);
        Ok(img)
    };
    let img = decode().with_context(|| {
        format!(
            "{} is not a readable image (predict reads .jpg and .png photos)",
            path.display()
        )
    })?;
    Ok(img.into_rgb8())
}

/// Segments one photo into `output`; returns the mask and overlay written.
fn predict_one(
    path: &Path,
    loaded: &LoadedModel,
    palette: &[[u8; 3]],
    inference: &InferenceArgs,
    output: &Path,
) -> anyhow::Result<[PathBuf; 2]> {
    let photo = read_photo(path)?;
    let (w, h) = (photo.width() as usize, photo.height() as usize);
    if w < MIN_INPUT_SIZE || h < MIN_INPUT_SIZE {
        bail!("it is {w}x{h}: images must be at least {MIN_INPUT_SIZE}x{MIN_INPUT_SIZE} pixels (upscale or pad it)");
    }
    let opts = inference.options(h, w, Some((PREDICT_TILE, PREDICT_TILE_ABOVE)))?;
    let image = reco_models::RgbImage {
        data: photo.as_raw(),
        width: w,
        height: h,
    };
    let classes: Vec<i64> = loaded
        .segmenter
        .predict_image(image, &opts)?
        .classes
        .flatten_all()?
        .to_vec1::<u32>()?
        .into_iter()
        .map(i64::from)
        .collect();
    let mask = colorize(&classes, w, h, palette)?;
    let stem = path
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    let mask_path = output.join(format!("{stem}_mask.png"));
    let overlay_path = output.join(format!("{stem}_overlay.png"));
    save_png(&mask, &mask_path)?;
    save_png(&overlay(&photo, &mask), &overlay_path)?;
    Ok([mask_path, overlay_path])
}

/// Returns the files written; an error (after predicting every readable image) when
/// some image failed, listing each with its reason.
pub fn run(args: &PredictArgs) -> anyhow::Result<Vec<PathBuf>> {
    let device = args.device.open()?;
    // Bad flags fail here, not once per image.
    args.inference
        .options(0, 0, Some((PREDICT_TILE, PREDICT_TILE_ABOVE)))?;
    let loaded = args.model.load(&device)?;
    let num_classes = loaded.num_classes();
    let kind = loaded.dataset.or_else(|| {
        DatasetKind::ALL
            .into_iter()
            .find(|k| k.defaults().num_classes == num_classes)
    });
    let palette = crate::classes::palette_for(kind, num_classes, &args.model.checkpoint);
    let explain = args.explain.thresholds(&args.model.checkpoint)?;
    let images = list_images(&args.input)?;
    std::fs::create_dir_all(&args.output)
        .with_context(|| format!("cannot create {}", args.output.display()))?;
    let mut written = Vec::new();
    let mut failed: Vec<(PathBuf, anyhow::Error)> = Vec::new();
    let mut explained = Vec::new();
    for path in images {
        match predict_one(&path, &loaded, &palette, &args.inference, &args.output) {
            Ok(files) => {
                eprintln!("{} -> {}", path.display(), files[0].display());
                written.extend(files);
                if let Some(t) = explain {
                    let maps = crate::explain::explain_file(
                        &loaded.segmenter,
                        &path,
                        t,
                        &device,
                        &args.output,
                    )?;
                    explained.extend(maps);
                }
            }
            Err(e) => {
                eprintln!("{}: failed: {e:#}", path.display());
                failed.push((path, e));
            }
        }
    }
    if !failed.is_empty() {
        let list: Vec<String> = failed
            .iter()
            .map(|(p, e)| format!("  {}: {e:#}", p.display()))
            .collect();
        bail!(
            "{} of {} images could not be segmented ({} written to {}):\n{}",
            failed.len(),
            failed.len() + written.len() / 2,
            written.len() / 2,
            args.output.display(),
            list.join("\n")
        );
    }
    written.extend(explained);
    Ok(written)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::TrainConfig;
    use image::{ImageFormat, Rgb};
    use std::io::Cursor;

    /// An untrained synthetic-dataset network saved as a checkpoint: predict only needs
    /// weights of the right shapes.
    fn checkpoint(dir: &Path) -> PathBuf {
        let net =
            crate::train::Network::new(&TrainConfig::default(), &candle_core::Device::Cpu).unwrap();
        let path = dir.join("model.safetensors");
        reco_models::export_state_dict(&net.vars, &path, 0).unwrap();
        path
    }

    fn photo(w: u32, h: u32) -> RgbImage {
        RgbImage::from_fn(w, h, |x, y| Rgb([(x * 5) as u8, (y * 6) as u8, 90]))
    }

    /// A JPEG of `w`x`h` with an APP1 Exif segment (written by hand: a big-endian TIFF
    /// header and one IFD holding only the Orientation tag, 0x0112) right after SOI.
    fn jpeg_with_orientation(w: u32, h: u32, orientation: u16) -> Vec<u8> {
        let mut jpeg = Vec::new();
        photo(w, h)
            .write_to(&mut Cursor::new(&mut jpeg), ImageFormat::Jpeg)
            .unwrap();
        let mut tiff = b"MM\0\x2a".to_vec();
        tiff.extend(8u32.to_be_bytes()); // offset of the first IFD
        tiff.extend(1u16.to_be_bytes()); // one entry
        tiff.extend(0x0112u16.to_be_bytes()); // Orientation
        tiff.extend(3u16.to_be_bytes()); // SHORT
        tiff.extend(1u32.to_be_bytes()); // one value
        tiff.extend(orientation.to_be_bytes());
        tiff.extend([0, 0]); // the value field is 4 bytes
        tiff.extend(0u32.to_be_bytes()); // no next IFD
        let mut app1 = b"Exif\0\0".to_vec();
        app1.extend(tiff);
        let mut out = jpeg[..2].to_vec(); // SOI
        out.extend([0xFF, 0xE1]);
        out.extend(((app1.len() + 2) as u16).to_be_bytes());
        out.extend(app1);
        out.extend(&jpeg[2..]);
        out
    }

    #[test]
    fn exif_orientation_turns_the_photo_upright() {
        let dir = tempfile::tempdir().unwrap();
        let upright = dir.path().join("upright.jpg");
        std::fs::write(&upright, jpeg_with_orientation(45, 37, 1)).unwrap();
        assert_eq!(read_photo(&upright).unwrap().dimensions(), (45, 37));
        // 6: stored landscape, shown turned 90° clockwise.
        let turned = dir.path().join("turned.jpg");
        std::fs::write(&turned, jpeg_with_orientation(45, 37, 6)).unwrap();
        assert_eq!(read_photo(&turned).unwrap().dimensions(), (37, 45));
    }

    #[test]
    fn a_folder_with_a_corrupt_image_predicts_the_rest_and_lists_the_failure() {
        let dir = tempfile::tempdir().unwrap();
        let ckpt = checkpoint(dir.path());
        let input = dir.path().join("photos");
        std::fs::create_dir_all(&input).unwrap();
        photo(45, 37).save(input.join("good.png")).unwrap();
        std::fs::write(input.join("broken.jpg"), b"\xff\xd8 not really").unwrap();
        std::fs::write(input.join("phone.jpg"), jpeg_with_orientation(45, 37, 6)).unwrap();
        let output = dir.path().join("preds");
        let args = PredictArgs {
            model: ModelSource {
                checkpoint: ckpt,
                dataset: Some(DatasetKind::Synthetic),
                output_stride: None,
            },
            input,
            output: output.clone(),
            device: DeviceArgs::default(),
            explain: Default::default(),
            inference: InferenceArgs::default(),
        };
        let err = format!("{:#}", run(&args).unwrap_err());
        assert!(err.contains("1 of 3 images"), "{err}");
        assert!(err.contains("broken.jpg"), "{err}");
        assert!(
            !err.contains("good.png") && !err.contains("phone.jpg"),
            "{err}"
        );
        let mask = image::open(output.join("good_mask.png")).unwrap();
        assert_eq!((mask.width(), mask.height()), (45, 37));
        assert!(output.join("good_overlay.png").is_file());
        // The phone photo's mask has the upright photo's size.
        let mask = image::open(output.join("phone_mask.png")).unwrap();
        assert_eq!((mask.width(), mask.height()), (37, 45));
        assert!(!output.join("broken_mask.png").exists());
    }
}
