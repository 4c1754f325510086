//! Decode + augment throughput for VOC-sized JPEGs (500x375) at crop 321.
//! `cargo bench -p reco-data --bench decode_augment` (optionally `-- <runs>`).
//!
//! Writes a VOC-shaped folder of 48 JPEG/PNG pairs to a temp dir, then measures, each
//! several times (median reported):
//! - decode: `PascalVoc::load` (JPEG + label PNG), one thread;
//! - decode+augment: load + the labelled transform (rescale 0.5-1.5, crop 321, jitter,
//!   blur, flip, normalise), one thread;
//! - loader: `Loader::train` batches of 10 on all cores, end to end (tensors included).

use std::sync::Arc;
use std::time::Instant;

use image::{GrayImage, Rgb, RgbImage};
use rand::Rng;
use reco_data::rng::rng_for;
use reco_data::transforms::augment_sample;
use reco_data::*;
use reco_util::bench::median;

const N: usize = 48;
const W: u32 = 500;
const H: u32 = 375;

fn make_voc(root: &std::path::Path) -> Vec<String> {
    std::fs::create_dir_all(root.join("JPEGImages")).unwrap();
    std::fs::create_dir_all(root.join("SegmentationClassAug")).unwrap();
    let ids: Vec<String> = (0..N).map(|i| format!("2007_{i:06}")).collect();
    let mut rng = rng_for(&[42]);
    for (i, id) in ids.iter().enumerate() {
        // Photo-like content: smooth gradients, a few blobs, noise (JPEG ~50-100 kB).
        let (cx, cy) = (rng.gen_range(0.0..W as f32), rng.gen_range(0.0..H as f32));
        let img = RgbImage::from_fn(W, H, |x, y| {
            let d = ((x as f32 - cx).powi(2) + (y as f32 - cy).powi(2)).sqrt();
            let n: f32 = rng.gen_range(-20.0..20.0);
            Rgb([
                ((x as f32 * 0.4 + n) as i32).clamp(0, 255) as u8,
                ((y as f32 * 0.6 + d * 0.2 + n) as i32).clamp(0, 255) as u8,
                ((128.0 + 100.0 * (d / 40.0).sin() + n) as i32).clamp(0, 255) as u8,
            ])
        });
        img.save(root.join(format!("JPEGImages/{id}.jpg"))).unwrap();
        let label = GrayImage::from_fn(W, H, |x, y| {
            let d = ((x as f32 - cx).powi(2) + (y as f32 - cy).powi(2)).sqrt();
            image::Luma([if d < 80.0 {
                (1 + i % 20) as u8
            } else if d < 84.0 {
                255
            } else {
                0
            }])
        });
        label
            .save(root.join(format!("SegmentationClassAug/{id}.png")))
            .unwrap();
    }
    std::fs::write(root.join("train_aug.txt"), ids.join("\n")).unwrap();
    std::fs::write(root.join("val.txt"), ids[..4].join("\n")).unwrap();
    ids
}

fn main() {
    let runs: usize = std::env::args()
        .skip(1)
        .find_map(|a| a.parse().ok())
        .unwrap_or(5);
    let dir = tempfile::tempdir().unwrap();
    let ids = make_voc(dir.path());
    let ds: Arc<dyn SegDataset> = open(DatasetKind::Pascal, Some(dir.path())).unwrap();
    let cfg = AugConfig::labelled(DatasetKind::Pascal);
    let (ch, cw) = cfg.crop_size;
    let mut img_out = vec![0f32; 3 * ch * cw];
    let mut lab_out = vec![0i64; ch * cw];
    // The labelled transform of sample `k` in run `r` (both timed loops run it).
    let mut augment = |s: &Sample, r: usize, k: usize| {
        let mut rng = rng_for(&[r as u64, k as u64]);
        augment_sample(
            &s.image,
            &s.label,
            &cfg,
            &mut rng,
            &mut img_out,
            &mut lab_out,
        );
    };

    let mut decode = Vec::new();
    let mut dec_aug = Vec::new();
    let mut aug_only = Vec::new();
    for r in 0..runs {
        let t = Instant::now();
        let samples: Vec<Sample> = ids.iter().map(|id| ds.load(id).unwrap()).collect();
        decode.push(N as f64 / t.elapsed().as_secs_f64());

        let t = Instant::now();
        for (k, s) in samples.iter().enumerate() {
            augment(s, r, k);
        }
        aug_only.push(N as f64 / t.elapsed().as_secs_f64());

        let t = Instant::now();
        for (k, id) in ids.iter().enumerate() {
            augment(&ds.load(id).unwrap(), r, k);
        }
        dec_aug.push(N as f64 / t.elapsed().as_secs_f64());
    }

    // Breakdown of the augmentation on one decoded image.
    let s0 = &ds.load(&ids[0]).unwrap();
    let reps = 20;
    let time = |f: &mut dyn FnMut()| {
        let t = Instant::now();
        for _ in 0..reps {
            f();
        }
        t.elapsed().as_secs_f64() * 1000.0 / reps as f64
    };
    let t_resize = time(&mut || {
        std::hint::black_box(reco_data::transforms::resize_rgb(&s0.image, 562, 750));
    });
    let t_resize_label = time(&mut || {
        std::hint::black_box(reco_data::transforms::resize_label(&s0.label, 562, 750));
    });
    let mut planar = vec![0.5f32; 3 * ch * cw];
    let jitter = reco_data::color::JitterParams {
        order: [0, 1, 2, 3],
        brightness: 1.1,
        contrast: 0.9,
        saturation: 1.2,
        hue: 0.1,
    };
    let t_jitter = time(&mut || reco_data::color::color_jitter(&mut planar, &jitter));
    let t_blur = time(&mut || reco_data::color::gaussian_blur(&mut planar, ch, cw, 1.15));

    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let mut loader_rates = Vec::new();
    for r in 0..runs {
        let mut lcfg = TrainLoaderConfig::labelled(DatasetKind::Pascal, r as u64);
        lcfg.num_threads = threads;
        let mut loader = Loader::train(ds.clone(), ids.clone(), lcfg).unwrap();
        loader.next().unwrap().unwrap(); // warm-up (thread start, first prefetch)
        let batches = 8;
        let t = Instant::now();
        for _ in 0..batches {
            loader.next().unwrap().unwrap();
        }
        loader_rates.push((batches * 10) as f64 / t.elapsed().as_secs_f64());
    }

    // Unlabelled-branch batch transform (runs on the trainer's thread, rayon inside).
    let mut u_loader = Loader::train(
        ds.clone(),
        ids.clone(),
        TrainLoaderConfig::unlabelled(DatasetKind::Pascal, 0),
    )
    .unwrap();
    let u = u_loader.next().unwrap().unwrap();
    drop(u_loader);
    let pseudo = u.labels.clamp(0i64, 20i64).unwrap();
    let conf = (u
        .labels
        .ones_like()
        .unwrap()
        .to_dtype(candle_core::DType::F32)
        .unwrap()
        * 0.9)
        .unwrap();
    {
        use reco_data::transforms::{mix, photometric, rescale_crop};
        let ucfg = UnsupAugConfig::new(DatasetKind::Pascal, MixMode::ClassMix);
        let t = Instant::now();
        let h = HostBatch::from_tensors(&u.images, &pseudo, &conf).unwrap();
        let t1 = t.elapsed().as_secs_f64() * 1e3;
        let t = Instant::now();
        let h = rescale_crop(&h, ucfg.crop_size, ucfg.scale_range, 1).unwrap();
        let t2 = t.elapsed().as_secs_f64() * 1e3;
        let t = Instant::now();
        let mut h = mix(&h, MixMode::ClassMix, 1);
        let t3 = t.elapsed().as_secs_f64() * 1e3;
        let t = Instant::now();
        photometric(&mut h, &ucfg.photometric, 1);
        let t4 = t.elapsed().as_secs_f64() * 1e3;
        let t = Instant::now();
        h.to_tensors(&candle_core::Device::Cpu).unwrap();
        let t5 = t.elapsed().as_secs_f64() * 1e3;
        println!("unsup_transform parts (ms): from_tensors {t1:.1}, rescale_crop {t2:.1}, mix {t3:.1}, photometric {t4:.1}, to_tensors {t5:.1}");
    }
    let mut unsup_ms = Vec::new();
    for mode in [MixMode::ClassMix, MixMode::CutMix, MixMode::CutOut] {
        let ucfg = UnsupAugConfig::new(DatasetKind::Pascal, mode);
        let mut t_runs = Vec::new();
        for r in 0..runs {
            let t = Instant::now();
            unsup_transform(&u.images, &pseudo, &conf, &ucfg, r as u64).unwrap();
            t_runs.push(t.elapsed().as_secs_f64() * 1000.0);
        }
        unsup_ms.push((mode, median(t_runs)));
    }

    println!(
        "decode + augment, VOC-sized JPEG {W}x{H}, crop {ch}, {N} images, median of {runs} runs"
    );
    println!("{:<44} {:>10}", "stage", "images/s");
    println!(
        "{:<44} {:>10.1}",
        "decode (JPEG + label PNG), 1 thread",
        median(decode)
    );
    println!(
        "{:<44} {:>10.1}",
        "augment only (already decoded), 1 thread",
        median(aug_only)
    );
    println!(
        "{:<44} {:>10.1}",
        "decode + augment, 1 thread",
        median(dec_aug)
    );
    println!("breakdown (ms per image): resize image to 750x562 {t_resize:.2}, resize label {t_resize_label:.2}, jitter {t_jitter:.2}, blur sigma 1.15 {t_blur:.2}");
    println!(
        "{:<44} {:>10.1}",
        format!("Loader::train, batch 10, {threads} threads"),
        median(loader_rates)
    );
    for (mode, ms) in unsup_ms {
        println!(
            "unsup_transform {mode:?}, batch 10x3x321x321, {threads} threads: {ms:.1} ms per batch"
        );
    }
}
