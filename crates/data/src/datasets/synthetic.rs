//! The built-in synthetic dataset: textured, coloured, overlapping shapes on cluttered
//! backgrounds, generated on the fly from a seed, with exact pixel labels.
//!
//! Why it is hard enough for semi-supervised learning to matter: a class is a *shape*
//! (disc, square, triangle) *and* a *texture* (stripes, checkerboard) together, while all
//! stripe periods, orientations, sizes and positions are random. The background
//! holds distractors that share one of the two cues but not both (plain or speckled
//! discs/squares/triangles; striped or checkered bars, rings and crosses), so neither
//! texture nor shape alone gives the class. Objects overlap and run off the
//! image edge. A handful of labelled images cannot cover these combinations; a thousand can.
//!
//! By default ([`SyntheticConfig::class_colours`]) each class also draws one of its two
//! texture colours near a colour of its own, and clutter is light (0–2 distractors, noise
//! ±8): with every colour random and more clutter, a ResNet-18 DeepLabV3+ trained on all
//! 2000 images for 200 steps on a CPU stayed at the background-only level (12–15 % mIoU),
//! so the default run could not show anything in its 10 minutes. With these defaults (and
//! the trainer's synthetic hue jitter of 0.05 instead of the original's 0.25) the same
//! run reaches 33 %. Colour is then a strong cue, but classes with nearby colours and
//! distractors of any colour still need shape and texture.

use std::path::Path;

use image::{GrayImage, RgbImage};
use rand::Rng;
use rand_chacha::rand_core::SeedableRng;
use rand_chacha::ChaCha8Rng;

use crate::dataset::{Sample, SegDataset, Subset};
use crate::error::{DataError, Result};
use crate::kind::{DatasetDefaults, DatasetKind, KindInfo, IGNORE};
use crate::rng::mix_seed;

/// Classes: background plus shape x texture.
pub const NUM_CLASSES: usize = 7;
/// Default image side in pixels (images are square).
pub const IMAGE_SIZE: usize = 96;

/// Class names, index = class id.
pub const CLASS_NAMES: [&str; NUM_CLASSES] = [
    "background",
    "striped disc",
    "checkered disc",
    "striped square",
    "checkered square",
    "striped triangle",
    "checkered triangle",
];

const PALETTE: [[u8; 3]; NUM_CLASSES] = [
    [0, 0, 0],
    [230, 25, 75],
    [60, 180, 75],
    [255, 225, 25],
    [0, 130, 200],
    [245, 130, 48],
    [145, 30, 180],
];

/// Defaults (our own choice: the original has no synthetic dataset), names and colours.
pub(crate) const INFO: KindInfo = KindInfo {
    defaults: DatasetDefaults {
        num_classes: NUM_CLASSES,
        crop_size: (64, 64),
        scale_range: (0.75, 1.25),
        batch_size: 8,
        eval_size: (IMAGE_SIZE, IMAGE_SIZE),
        min_classes: 3,
        default_root: "",
    },
    class_names: &CLASS_NAMES,
    palette: &PALETTE,
};

/// How the synthetic dataset is generated.
#[derive(Clone, Debug, PartialEq)]
pub struct SyntheticConfig {
    /// Seed of the whole dataset: the same seed gives the same images.
    pub seed: u64,
    pub train_size: usize,
    pub val_size: usize,
    /// Image side in pixels (square images).
    pub image_size: usize,
    /// Range (inclusive) of the number of class objects per image.
    pub objects: (usize, usize),
    /// Range (inclusive) of the number of background distractors per image.
    pub distractors: (usize, usize),
    /// Amplitude of the per-pixel noise (grey levels, triangular distribution).
    pub noise: f32,
    /// Range of object (and distractor) radii, as a fraction of the image side.
    pub object_size: (f32, f32),
    /// Each class draws its first texture colour near a colour of its own (±`CLASS_COLOUR_JITTER`
    /// per channel), so that a small network trained for minutes on a CPU finds a first cue;
    /// shape and texture still decide between classes whose colours are near. `false`
    /// gives the harder variant where all colours are random.
    pub class_colours: bool,
}

impl Default for SyntheticConfig {
    fn default() -> Self {
        Self {
            seed: 0,
            train_size: 2000,
            val_size: 200,
            image_size: IMAGE_SIZE,
            objects: (2, 4),
            distractors: (0, 2),
            noise: 8.0,
            object_size: (0.18, 0.32),
            class_colours: true,
        }
    }
}

/// The synthetic dataset. Ids are `train-00000`.. and `val-00000`..; `load` renders the
/// image on each call (about 0.2 ms at 96 px), so nothing is stored.
pub struct Synthetic {
    cfg: SyntheticConfig,
    train: Vec<String>,
    val: Vec<String>,
}

impl Synthetic {
    pub fn new(cfg: SyntheticConfig) -> Result<Self> {
        if cfg.image_size < 16
            || cfg.train_size == 0
            || cfg.val_size == 0
            || cfg.objects.0 > cfg.objects.1
            || cfg.distractors.0 > cfg.distractors.1
            || cfg.noise.is_nan()
            || cfg.noise < 0.0
            || !(cfg.object_size.0 > 0.0 && cfg.object_size.0 < cfg.object_size.1)
        {
            return Err(DataError::Config(format!(
                "synthetic dataset needs image_size >= 16, non-empty subsets, ordered \
                 ranges and noise >= 0; got {cfg:?}"
            )));
        }
        let train = (0..cfg.train_size)
            .map(|i| format!("train-{i:05}"))
            .collect();
        let val = (0..cfg.val_size).map(|i| format!("val-{i:05}")).collect();
        Ok(Self { cfg, train, val })
    }

    pub fn config(&self) -> &SyntheticConfig {
        &self.cfg
    }

    fn parse_id(&self, id: &str) -> Result<(u64, usize)> {
        let bad = |reason: &str| DataError::UnknownId {
            id: id.to_string(),
            dataset: "synthetic".into(),
            reason: reason.to_string(),
        };
        let (tag, n, max) = if let Some(n) = id.strip_prefix("train-") {
            (1u64, n, self.cfg.train_size)
        } else if let Some(n) = id.strip_prefix("val-") {
            (2u64, n, self.cfg.val_size)
        } else {
            return Err(bad("expected `train-<n>` or `val-<n>`"));
        };
        let n: usize = n.parse().map_err(|_| bad("the index is not a number"))?;
        if n >= max {
            return Err(bad(&format!("index out of range (size {max})")));
        }
        Ok((tag, n))
    }
}

impl SegDataset for Synthetic {
    fn kind(&self) -> DatasetKind {
        DatasetKind::Synthetic
    }
    fn root(&self) -> &Path {
        Path::new("")
    }
    fn ids(&self, subset: Subset) -> &[String] {
        match subset {
            Subset::Train => &self.train,
            Subset::Val => &self.val,
        }
    }
    fn load(&self, id: &str) -> Result<Sample> {
        let (tag, n) = self.parse_id(id)?;
        let (image, label) = render(mix_seed(&[self.cfg.seed, tag, n as u64]), &self.cfg);
        Ok(Sample {
            id: id.to_string(),
            image,
            label,
        })
    }
    fn check_id(&self, id: &str) -> Result<()> {
        self.parse_id(id).map(|_| ())
    }
    fn num_classes(&self) -> usize {
        NUM_CLASSES
    }
    fn class_names(&self) -> Vec<String> {
        CLASS_NAMES.iter().map(|s| s.to_string()).collect()
    }
    fn palette(&self) -> Vec<[u8; 3]> {
        PALETTE.to_vec()
    }
    fn min_classes(&self) -> usize {
        INFO.defaults.min_classes
    }
    fn eval_size(&self) -> (usize, usize) {
        INFO.defaults.eval_size
    }
}

#[derive(Clone, Copy, PartialEq)]
enum Shape {
    Disc,
    Square,
    Triangle,
    // Distractor-only shapes.
    Bar,
    Ring,
    Cross,
}

#[derive(Clone, Copy, PartialEq)]
enum Texture {
    Stripes,
    Checker,
    // Distractor-only textures.
    Flat,
    Speckle,
}

struct Item {
    shape: Shape,
    texture: Texture,
    cx: f32,
    cy: f32,
    r: f32,
    cos: f32,
    sin: f32,
    /// Texture parameters: period/cell size, orientation, two colours.
    period: f32,
    tcos: f32,
    tsin: f32,
    c1: [f32; 3],
    c2: [f32; 3],
    class: u8,
}

impl Item {
    fn contains(&self, x: f32, y: f32) -> bool {
        let (dx, dy) = (x - self.cx, y - self.cy);
        // Rotate into the item's frame.
        let u = dx * self.cos + dy * self.sin;
        let v = -dx * self.sin + dy * self.cos;
        let r = self.r;
        match self.shape {
            Shape::Disc => u * u + v * v <= r * r,
            // Half-side 0.85 r: about the area of the disc's inscribed square, so sizes match.
            Shape::Square => u.abs() <= 0.85 * r && v.abs() <= 0.85 * r,
            Shape::Triangle => {
                // Equilateral triangle with circumradius 1.2 r: three half-planes.
                let rr = 1.2 * r;
                (0..3).all(|k| {
                    let a = std::f32::consts::TAU * k as f32 / 3.0;
                    u * a.cos() + v * a.sin() <= 0.5 * rr
                })
            }
            Shape::Bar => u.abs() <= r && v.abs() <= 0.3 * r,
            Shape::Ring => {
                let d2 = u * u + v * v;
                d2 <= r * r && d2 >= 0.36 * r * r
            }
            Shape::Cross => {
                (u.abs() <= r && v.abs() <= 0.3 * r) || (v.abs() <= r && u.abs() <= 0.3 * r)
            }
        }
    }

    fn colour(&self, x: f32, y: f32, noise: f32) -> [f32; 3] {
        let u = x * self.tcos + y * self.tsin;
        let v = -x * self.tsin + y * self.tcos;
        let first = match self.texture {
            Texture::Stripes => (u / self.period).rem_euclid(1.0) < 0.5,
            Texture::Checker => {
                ((u / self.period).floor() + (v / self.period).floor()).rem_euclid(2.0) < 1.0
            }
            Texture::Flat => true,
            Texture::Speckle => noise < 0.5,
        };
        if first {
            self.c1
        } else {
            self.c2
        }
    }
}

/// Base colours of the six object classes (see [`SyntheticConfig::class_colours`]).
const CLASS_BASE_COLOURS: [[f32; 3]; 6] = [
    [220.0, 60.0, 60.0],
    [60.0, 200.0, 60.0],
    [60.0, 90.0, 230.0],
    [230.0, 210.0, 50.0],
    [200.0, 60.0, 210.0],
    [50.0, 210.0, 210.0],
];
const CLASS_COLOUR_JITTER: f32 = 40.0;

fn class_colour(rng: &mut ChaCha8Rng, class: u8) -> [f32; 3] {
    let base = CLASS_BASE_COLOURS[(class as usize - 1) % CLASS_BASE_COLOURS.len()];
    std::array::from_fn(|k| {
        (base[k] + rng.gen_range(-CLASS_COLOUR_JITTER..CLASS_COLOUR_JITTER)).clamp(0.0, 255.0)
    })
}

fn random_colour(rng: &mut ChaCha8Rng) -> [f32; 3] {
    [
        rng.gen_range(0.0..255.0),
        rng.gen_range(0.0..255.0),
        rng.gen_range(0.0..255.0),
    ]
}

/// A second colour far enough from the first that the texture is visible.
fn contrasting_colour(rng: &mut ChaCha8Rng, c: [f32; 3]) -> [f32; 3] {
    for _ in 0..16 {
        let d = random_colour(rng);
        let dist: f32 = (0..3).map(|k| (d[k] - c[k]).abs()).sum();
        if dist >= 150.0 {
            return d;
        }
    }
    [255.0 - c[0], 255.0 - c[1], 255.0 - c[2]]
}

fn random_item(
    rng: &mut ChaCha8Rng,
    size: f32,
    radius: (f32, f32),
    shape: Shape,
    texture: Texture,
    class: u8,
    class_colours: bool,
) -> Item {
    let angle = rng.gen_range(0.0..std::f32::consts::TAU);
    let tangle = rng.gen_range(0.0..std::f32::consts::PI);
    let c1 = if class_colours && class > 0 {
        class_colour(rng, class)
    } else {
        random_colour(rng)
    };
    let c2 = contrasting_colour(rng, c1);
    let period = match texture {
        Texture::Stripes => rng.gen_range(0.05..0.1) * size,
        _ => rng.gen_range(0.035..0.065) * size,
    };
    Item {
        shape,
        texture,
        cx: rng.gen_range(-0.05..1.05) * size,
        cy: rng.gen_range(-0.05..1.05) * size,
        r: rng.gen_range(radius.0..radius.1) * size,
        cos: angle.cos(),
        sin: angle.sin(),
        period,
        tcos: tangle.cos(),
        tsin: tangle.sin(),
        c1,
        c2,
        class,
    }
}

/// Renders one image and its labels from a seed.
fn render(seed: u64, cfg: &SyntheticConfig) -> (RgbImage, GrayImage) {
    let size = cfg.image_size;
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let s = size as f32;
    const CLASS_SHAPES: [Shape; 3] = [Shape::Disc, Shape::Square, Shape::Triangle];
    const CLASS_TEXTURES: [Texture; 2] = [Texture::Stripes, Texture::Checker];

    // Distractors (background): share one cue with the classes, never both.
    let mut items = Vec::new();
    for _ in 0..rng.gen_range(cfg.distractors.0..=cfg.distractors.1) {
        let item = if rng.gen_bool(0.5) {
            let shape = CLASS_SHAPES[rng.gen_range(0..3)];
            let texture = [Texture::Flat, Texture::Speckle][rng.gen_range(0..2)];
            random_item(&mut rng, s, cfg.object_size, shape, texture, 0, false)
        } else {
            let shape = [Shape::Bar, Shape::Ring, Shape::Cross][rng.gen_range(0..3)];
            let texture = [
                Texture::Stripes,
                Texture::Checker,
                Texture::Flat,
                Texture::Speckle,
            ][rng.gen_range(0..4)];
            random_item(&mut rng, s, cfg.object_size, shape, texture, 0, false)
        };
        items.push(item);
    }
    // Objects, drawn over the distractors and over each other.
    for _ in 0..rng.gen_range(cfg.objects.0..=cfg.objects.1) {
        let si = rng.gen_range(0..3);
        let ti = rng.gen_range(0..2);
        let class = (1 + si * 2 + ti) as u8;
        let item = random_item(
            &mut rng,
            s,
            cfg.object_size,
            CLASS_SHAPES[si],
            CLASS_TEXTURES[ti],
            class,
            cfg.class_colours,
        );
        items.push(item);
    }

    // Background: a colour gradient in a random direction plus per-pixel noise.
    let bg_a = random_colour(&mut rng);
    let bg_b = random_colour(&mut rng);
    let g_angle: f32 = rng.gen_range(0.0..std::f32::consts::TAU);
    let (gc, gs) = (g_angle.cos(), g_angle.sin());

    let mut image = RgbImage::new(size as u32, size as u32);
    let mut label = GrayImage::new(size as u32, size as u32);
    for y in 0..size {
        for x in 0..size {
            let (fx, fy) = (x as f32 + 0.5, y as f32 + 0.5);
            let speckle: f32 = rng.gen();
            let t = (((fx - s / 2.0) * gc + (fy - s / 2.0) * gs) / s + 0.5).clamp(0.0, 1.0);
            let mut c = [0.0f32; 3];
            for k in 0..3 {
                c[k] = bg_a[k] * (1.0 - t) + bg_b[k] * t;
            }
            let mut class = 0u8;
            // Last item containing the pixel is on top.
            if let Some(item) = items.iter().rev().find(|it| it.contains(fx, fy)) {
                c = item.colour(fx, fy, speckle);
                class = item.class;
            }
            let mut px = [0u8; 3];
            for k in 0..3 {
                let noise = (rng.gen::<f32>() + rng.gen::<f32>() - 1.0) * cfg.noise;
                px[k] = (c[k] + noise).round().clamp(0.0, 255.0) as u8;
            }
            image.put_pixel(x as u32, y as u32, image::Rgb(px));
            label.put_pixel(x as u32, y as u32, image::Luma([class]));
        }
    }
    debug_assert!(label
        .iter()
        .all(|&v| (v as usize) < NUM_CLASSES && v != IGNORE));
    (image, label)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_seed_same_image_and_different_ids_differ() {
        let ds = Synthetic::new(SyntheticConfig::default()).unwrap();
        let a = ds.load("train-00003").unwrap();
        let b = ds.load("train-00003").unwrap();
        let c = ds.load("train-00004").unwrap();
        let v = ds.load("val-00003").unwrap();
        assert_eq!(a.image, b.image);
        assert_eq!(a.label, b.label);
        assert_ne!(a.image, c.image);
        assert_ne!(a.image, v.image);
        assert_eq!(a.image.dimensions(), (96, 96));
        assert_eq!(ds.ids(Subset::Train).len(), 2000);
        assert_eq!(ds.ids(Subset::Val).len(), 200);
    }

    #[test]
    fn every_class_appears_and_labels_are_valid() {
        let ds = Synthetic::new(SyntheticConfig::default()).unwrap();
        let mut seen = [0usize; NUM_CLASSES];
        for id in &ds.ids(Subset::Train)[..100] {
            let s = ds.load(id).unwrap();
            for &v in s.label.iter() {
                assert!((v as usize) < NUM_CLASSES);
                seen[v as usize] += 1;
            }
        }
        // Every class covers a real share of the pixels (none is vanishingly rare).
        let total: usize = seen.iter().sum();
        for (c, &n) in seen.iter().enumerate() {
            assert!(
                n * 100 > total,
                "class {c} covers only {n} of {total} pixels"
            );
        }
    }

    /// Mean RGB of the pixels of each class over the first `images` training images.
    fn class_mean_colours(cfg: SyntheticConfig, images: usize) -> [[f64; 3]; NUM_CLASSES] {
        let ds = Synthetic::new(cfg).unwrap();
        let mut sum = [[0f64; 3]; NUM_CLASSES];
        let mut n = [0f64; NUM_CLASSES];
        for id in &ds.ids(Subset::Train)[..images] {
            let s = ds.load(id).unwrap();
            for (p, l) in s.image.pixels().zip(s.label.iter()) {
                for k in 0..3 {
                    sum[*l as usize][k] += p[k] as f64;
                }
                n[*l as usize] += 1.0;
            }
        }
        std::array::from_fn(|c| std::array::from_fn(|k| sum[c][k] / n[c]))
    }

    #[test]
    fn colour_alone_does_not_give_the_class_in_the_hard_variant() {
        // Mean colour of object pixels per class: with random colours (class_colours off),
        // the class means are all close to mid-grey, i.e. colour carries (almost) no class
        // information. The default (class colours on) is checked below.
        let means = class_mean_colours(
            SyntheticConfig {
                class_colours: false,
                ..SyntheticConfig::default()
            },
            200,
        );
        for (c, mean) in means.iter().enumerate().skip(1) {
            for (k, m) in mean.iter().enumerate() {
                assert!((m - 127.5).abs() < 20.0, "class {c} channel {k} mean {m}");
            }
        }
    }

    #[test]
    fn by_default_each_class_leans_to_a_colour_of_its_own() {
        let means = class_mean_colours(SyntheticConfig::default(), 100);
        // Half of an object's pixels carry its class colour: the class mean moves towards
        // the base colour, away from mid-grey, by a clear margin in some channel.
        for c in 1..NUM_CLASSES {
            let base = CLASS_BASE_COLOURS[c - 1];
            let towards: f64 = (0..3)
                .map(|k| (means[c][k] - 127.5) * (base[k] as f64 - 127.5).signum())
                .sum();
            assert!(
                towards > 40.0,
                "class {c}: mean colour moved only {towards} towards its base"
            );
        }
    }

    #[test]
    fn bad_ids_are_errors() {
        let ds = Synthetic::new(SyntheticConfig::default()).unwrap();
        assert!(ds.load("train-99999").is_err());
        assert!(ds.load("test-1").is_err());
        assert!(ds.load("train-x").is_err());
    }
}
