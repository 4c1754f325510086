//! The `segment` example end to end: a tiny checkpoint with metadata written here, a
//! photo, the mask it writes. The example's logic is compiled into this test (cargo
//! cannot run examples from tests), so CI runs exactly the documented program.

#[allow(dead_code)]
#[path = "../examples/segment.rs"]
mod example;

mod common;

use candle_core::{DType, Device};
use common::*;
use reco_models::{
    export_with_meta, CheckpointMeta, MetaFallback, NetworkKind, PredictOptions, RgbImage,
    Segmenter,
};

#[test]
fn the_example_writes_the_predicted_palette_mask() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = small_config(3, 8);
    let (varmap, _) = formula_network(NetworkKind::DeepLabV3Plus, &cfg, DType::F32);
    let checkpoint = dir.path().join("tiny.safetensors");
    let meta = CheckpointMeta::new(NetworkKind::DeepLabV3Plus, &cfg)
        .with_dataset("test", vec!["sky".into(), "grass".into(), "road".into()]);
    export_with_meta(&varmap, &meta, &checkpoint, 0).unwrap();

    let (w, h) = (72u32, 48u32);
    let photo = image::RgbImage::from_fn(w, h, |x, y| {
        image::Rgb([(x * 3) as u8, (y * 5) as u8, ((x * y) % 251) as u8])
    });
    let photo_path = dir.path().join("photo.png");
    photo.save(&photo_path).unwrap();
    let mask_path = dir.path().join("mask.png");

    for tile in [None, Some(40)] {
        let counts = example::segment(&checkpoint, &photo_path, &mask_path, tile).unwrap();
        assert_eq!(counts.iter().sum::<usize>(), (w * h) as usize);
        let mask = image::open(&mask_path).unwrap().to_rgb8();
        assert_eq!(mask.dimensions(), (w, h));
        // Every pixel has the palette colour of the class the library predicts.
        let seg = Segmenter::load(&checkpoint, &Device::Cpu, &MetaFallback::default()).unwrap();
        let opts = PredictOptions {
            sliding_window: tile.map(reco_models::SlidingWindow::new),
            ..PredictOptions::default()
        };
        let classes = seg
            .predict_image(
                RgbImage {
                    data: photo.as_raw(),
                    width: w as usize,
                    height: h as usize,
                },
                &opts,
            )
            .unwrap()
            .classes
            .flatten_all()
            .unwrap()
            .to_vec1::<u32>()
            .unwrap();
        for (i, px) in mask.pixels().enumerate() {
            assert_eq!(px.0, example::palette(classes[i]));
        }
    }
    assert_eq!(example::palette(1), [128, 0, 0]);
    assert_eq!(example::palette(15), [192, 128, 128]); // VOC "person"
    let err =
        example::segment(&checkpoint, &dir.path().join("none.png"), &mask_path, None).unwrap_err();
    assert!(err.to_string().contains("none.png"), "{err}");
}
