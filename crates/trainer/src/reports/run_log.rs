//! A run's log on rank 0: every line of `metrics.jsonl`, and the same values as
//! TensorBoard scalars in the run folder's `events.out.tfevents.*` file, plus the
//! pictures of each evaluation. One writer for both, so that the two never disagree.
//!
//! Scalars, by `metrics.jsonl` key (train lines, then eval lines):
//! `loss` → `loss/total`, `sup` → `loss/sup`, `unsup` → `loss/unsup`, `reco` →
//! `loss/reco`, `lr` → `train/lr`, `strong_threshold` → `train/strong_threshold`,
//! `images_per_s` → `train/images_per_s`, and in f16 runs `loss_scale` →
//! `train/loss_scale`, `skipped_steps` → `train/skipped_steps`; `miou` → `eval/miou`,
//! `pixel_acc` → `eval/pixel_acc`, and `per_class_iou[i]` → `iou/<class name>` (spaces as
//! `_`; absent classes are skipped).

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::Context;
use image::RgbImage;

use super::tensorboard::EventWriter;

/// `metrics.jsonl` key → TensorBoard tag, for lines of each kind.
pub const TRAIN_SCALARS: [(&str, &str); 9] = [
    ("loss", "loss/total"),
    ("sup", "loss/sup"),
    ("unsup", "loss/unsup"),
    ("reco", "loss/reco"),
    ("lr", "train/lr"),
    ("strong_threshold", "train/strong_threshold"),
    ("images_per_s", "train/images_per_s"),
    ("loss_scale", "train/loss_scale"),
    ("skipped_steps", "train/skipped_steps"),
];
pub const EVAL_SCALARS: [(&str, &str); 2] =
    [("miou", "eval/miou"), ("pixel_acc", "eval/pixel_acc")];

/// The TensorBoard tag of a class's IoU.
pub fn iou_tag(class_name: &str) -> String {
    let name: String = class_name
        .chars()
        .map(|c| if c.is_whitespace() { '_' } else { c })
        .collect();
    format!("iou/{name}")
}

/// The scalars of one `metrics.jsonl` line, as TensorBoard gets them.
pub fn scalars_of(line: &serde_json::Value, class_names: &[String]) -> Vec<(String, f64)> {
    let table: &[(&str, &str)] = match line["kind"].as_str() {
        Some("train") => &TRAIN_SCALARS,
        Some("eval") => &EVAL_SCALARS,
        _ => &[],
    };
    let mut out: Vec<(String, f64)> = table
        .iter()
        .filter_map(|(key, tag)| line[*key].as_f64().map(|v| (tag.to_string(), v)))
        .collect();
    if let Some(ious) = line["per_class_iou"].as_array() {
        for (i, iou) in ious.iter().enumerate() {
            if let (Some(v), Some(name)) = (iou.as_f64(), class_names.get(i)) {
                out.push((iou_tag(name), v));
            }
        }
    }
    out
}

/// `metrics.jsonl` and the TensorBoard event file of one run folder.
pub struct RunLog {
    metrics: PathBuf,
    events: EventWriter,
    class_names: Vec<String>,
}

impl RunLog {
    /// Opens the log of the run folder `dir` whose metrics file is `metrics`; a new event
    /// file is created now (so an unwritable folder fails before the first step). A run
    /// resumed at `start_step > 0` marks the restart, so that TensorBoard drops what the
    /// interrupted run logged after its saved state.
    pub fn open(
        dir: &Path,
        metrics: PathBuf,
        class_names: Vec<String>,
        start_step: usize,
    ) -> anyhow::Result<Self> {
        let mut events = EventWriter::create(dir)?;
        if start_step > 0 {
            events.restart_at(start_step as u64 + 1)?;
        }
        Ok(Self {
            metrics,
            events,
            class_names,
        })
    }

    /// The event file being written.
    pub fn events_path(&self) -> &Path {
        self.events.path()
    }

    /// Appends `line` to `metrics.jsonl` and its scalars to the event file.
    pub fn append(&mut self, line: &serde_json::Value) -> anyhow::Result<()> {
        let path = &self.metrics;
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .with_context(|| format!("cannot open {}", path.display()))?;
        writeln!(f, "{line}").with_context(|| format!("cannot write {}", path.display()))?;
        let step = line["step"]
            .as_u64()
            .context("a metrics line without a step")?;
        let scalars = scalars_of(line, &self.class_names);
        let refs: Vec<(&str, f64)> = scalars.iter().map(|(t, v)| (t.as_str(), *v)).collect();
        self.events.scalars(step, &refs)
    }

    /// An image at `step`.
    pub fn image(&mut self, step: usize, tag: &str, img: &RgbImage) -> anyhow::Result<()> {
        self.events.rgb_image(step as u64, tag, img)
    }

    /// A PNG file written by the run (`relation.png`) as the image `tag`.
    pub fn png_file(&mut self, step: usize, tag: &str, path: &Path) -> anyhow::Result<()> {
        let bytes =
            std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
        // The header says the size and colour type; the pixels need no decoding.
        let decoder = image::ImageReader::new(std::io::Cursor::new(&bytes))
            .with_guessed_format()
            .map_err(anyhow::Error::from)
            .and_then(|r| Ok(r.into_decoder()?))
            .with_context(|| format!("{} is not an image", path.display()))?;
        let (width, height) = image::ImageDecoder::dimensions(&decoder);
        let channels = u32::from(image::ImageDecoder::color_type(&decoder).channel_count());
        drop(decoder);
        self.events
            .png(step as u64, tag, bytes, (width, height, channels))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_metrics_key_becomes_its_tag_and_absent_classes_are_skipped() {
        let names = vec![
            "background".to_string(),
            "potted plant".to_string(),
            "x".into(),
        ];
        let train = serde_json::json!({"kind": "train", "step": 4, "loss": 1.5, "sup": 1.0,
            "unsup": 0.25, "reco": 0.25, "lr": 0.01, "strong_threshold": 0.97, "images_per_s": 3.0});
        let tags: Vec<String> = scalars_of(&train, &names)
            .into_iter()
            .map(|(t, _)| t)
            .collect();
        assert_eq!(tags.len(), 7);
        assert!(tags.contains(&"loss/reco".to_string()));
        let eval = serde_json::json!({"kind": "eval", "step": 4, "miou": 0.5, "pixel_acc": 0.75,
            "per_class_iou": [0.5, null, 0.25]});
        let scalars = scalars_of(&eval, &names);
        assert_eq!(
            scalars,
            vec![
                ("eval/miou".to_string(), 0.5),
                ("eval/pixel_acc".to_string(), 0.75),
                ("iou/background".to_string(), 0.5),
                ("iou/x".to_string(), 0.25),
            ]
        );
        assert_eq!(iou_tag("potted plant"), "iou/potted_plant");
    }

    #[test]
    fn a_png_file_becomes_an_image_with_its_size_and_bytes() {
        use super::super::tensorboard::{event, read_events, summary};
        let dir = tempfile::tempdir().unwrap();
        let png = dir.path().join("relation.png");
        let img = RgbImage::from_pixel(5, 3, image::Rgb([1, 2, 3]));
        crate::image_io::save_png(&img, &png).unwrap();
        let mut log = RunLog::open(dir.path(), dir.path().join("m.jsonl"), vec![], 0).unwrap();
        log.png_file(7, "eval/relation", &png).unwrap();
        let events = read_events(log.events_path()).unwrap();
        let Some(event::What::Summary(s)) = &events[1].what else {
            panic!("no summary: {:?}", events[1]);
        };
        let Some(summary::value::Value::Image(im)) = &s.value[0].value else {
            panic!("no image");
        };
        assert_eq!(
            (events[1].step, im.width, im.height, im.colorspace),
            (7, 5, 3, 3)
        );
        assert_eq!(im.encoded_image_string, std::fs::read(&png).unwrap());
        std::fs::write(&png, b"not a png").unwrap();
        let err = format!("{:#}", log.png_file(8, "x", &png).unwrap_err());
        assert!(err.contains("is not an image"), "{err}");
    }

    #[test]
    fn a_line_reaches_both_files() {
        let dir = tempfile::tempdir().unwrap();
        let metrics = dir.path().join("metrics.jsonl");
        let mut log = RunLog::open(dir.path(), metrics.clone(), vec!["a".into()], 3).unwrap();
        log.append(
            &serde_json::json!({"kind": "eval", "step": 5, "miou": 0.5, "pixel_acc": 1.0,
            "per_class_iou": [0.5]}),
        )
        .unwrap();
        let events = super::super::tensorboard::read_events(log.events_path()).unwrap();
        // version, restart mark at step 4, the scalars.
        assert_eq!(events.len(), 3);
        assert_eq!(events[1].step, 4);
        assert_eq!(events[2].step, 5);
        assert!(std::fs::read_to_string(&metrics)
            .unwrap()
            .contains("\"miou\":0.5"));
    }
}
