//! One-hot, nearest resizing and the step-5 assembly.

use candle_core::{DType, Device, Tensor};
use reco_loss::{
    nearest_source_indices, one_hot, reco_targets, reco_targets_labelled, resize_nearest,
};

#[test]
fn nearest_indices_match_pytorch() {
    // Produced by torch 2.15 `F.interpolate(arange(n)[None,None,None], size=(1,m), mode="nearest")`.
    // (26→22) and (52→22) are cases where PyTorch's f32 arithmetic differs from exact
    // floor(i*in/out); (2→82) the same when upsampling (index 41 is 0, not 1).
    let cases: [(usize, usize, Vec<u32>); 4] = [
        (
            26,
            22,
            vec![
                0, 1, 2, 3, 4, 5, 7, 8, 9, 10, 11, 12, 14, 15, 16, 17, 18, 20, 21, 22, 23, 24,
            ],
        ),
        (
            52,
            22,
            vec![
                0, 2, 4, 7, 9, 11, 14, 16, 18, 21, 23, 25, 28, 30, 33, 35, 37, 40, 42, 44, 47, 49,
            ],
        ),
        (
            49,
            13,
            vec![0, 3, 7, 11, 15, 18, 22, 26, 30, 33, 37, 41, 45],
        ),
        (7, 10, vec![0, 0, 1, 2, 2, 3, 4, 4, 5, 6]),
    ];
    for (i, o, want) in cases {
        assert_eq!(nearest_source_indices(i, o), want, "{i} -> {o}");
    }
    let up = nearest_source_indices(2, 82);
    assert_eq!((up[40], up[41], up[42]), (0, 0, 1));
    // The training shapes (VOC 321 → 81, Cityscapes 512 → 128) follow floor(i*in/out).
    for (i, o) in [(321usize, 81usize), (512, 128), (513, 129)] {
        let exact: Vec<u32> = (0..o).map(|k| (k * i / o) as u32).collect();
        assert_eq!(nearest_source_indices(i, o), exact);
    }
}

#[test]
fn resize_nearest_picks_source_pixels() {
    let x = Tensor::arange(0i64, 2 * 5 * 7, &Device::Cpu)
        .unwrap()
        .reshape((2, 5, 7))
        .unwrap();
    let y = resize_nearest(&x, 3, 4).unwrap();
    assert_eq!(y.dims(), &[2, 3, 4]);
    let rows = nearest_source_indices(5, 3);
    let cols = nearest_source_indices(7, 4);
    let y = y.to_vec3::<i64>().unwrap();
    for (b, plane) in y.iter().enumerate() {
        for (i, &r) in rows.iter().enumerate() {
            for (j, &c) in cols.iter().enumerate() {
                assert_eq!(plane[i][j], (b * 35 + r as usize * 7 + c as usize) as i64);
            }
        }
    }
    assert!(resize_nearest(&x, 0, 4).is_err());
    assert!(resize_nearest(&x.flatten_all().unwrap(), 2, 2).is_err());
}

#[test]
fn one_hot_with_ignore() {
    let labels = Tensor::new(&[[[0i64, 2], [-1, 1]]], &Device::Cpu).unwrap();
    let oh = one_hot(&labels, 3).unwrap();
    assert_eq!(oh.dims(), &[1, 3, 2, 2]);
    assert_eq!(oh.dtype(), DType::F32);
    let v: Vec<f32> = oh.flatten_all().unwrap().to_vec1().unwrap();
    // class 0 plane, class 1 plane, class 2 plane
    assert_eq!(v, vec![1., 0., 0., 0., 0., 0., 0., 1., 0., 1., 0., 0.]);
    assert!(one_hot(&labels, 2).is_err(), "label 2 with 2 classes");
    let bad = Tensor::new(&[[[-2i64]]], &Device::Cpu).unwrap();
    assert!(one_hot(&bad, 3).is_err());
    assert!(one_hot(&labels.to_dtype(DType::F32).unwrap(), 3).is_err());
}

#[test]
fn assembly_follows_step_five() {
    let dev = Device::Cpu;
    let (c, h, w) = (3usize, 2usize, 2usize);
    // Labelled: 4x4 crop → 2x2 keeps rows/cols 0 and 2; the 2s elsewhere are dropped.
    let labels_l = Tensor::new(
        &[[[0i64, 2, -1, 2], [2, 2, 2, 2], [2, 2, 1, 2], [2, 2, 2, 2]]],
        &dev,
    )
    .unwrap();
    let pseudo_u = Tensor::new(
        &[[[1i64, 0, 2, 0], [0, 0, 0, 0], [-1, 0, 0, 0], [0, 0, 0, 0]]],
        &dev,
    )
    .unwrap();
    let conf_u = Tensor::new(
        &[[
            [0.9f32, 0.0, 0.69, 0.0],
            [0.0; 4],
            [0.95, 0.0, 0.7, 0.0],
            [0.0; 4],
        ]],
        &dev,
    )
    .unwrap();
    let pred_l = Tensor::arange(0f32, (c * h * w) as f32, &dev)
        .unwrap()
        .reshape((1, c, h, w))
        .unwrap();
    let pred_u = (pred_l.clone() * -0.5).unwrap();
    let t = reco_targets(&labels_l, &pseudo_u, &conf_u, &pred_l, &pred_u, 0.7).unwrap();
    assert_eq!(t.label.dims(), &[2, c, h, w]);
    assert_eq!(t.mask.dims(), &[2, 1, h, w]);
    assert_eq!(t.prob.dims(), &[2, c, h, w]);
    let mask: Vec<f32> = t.mask.flatten_all().unwrap().to_vec1().unwrap();
    // labelled: [0, -1; 2, 1] → valid where label >= 0; unlabelled: conf [0.9, 0.69; 0.95, 0.7] ≥ 0.7.
    assert_eq!(mask, vec![1., 0., 1., 1., 1., 0., 1., 1.]);
    let label: Vec<f32> = t.label.flatten_all().unwrap().to_vec1().unwrap();
    let want_l = one_hot(
        &Tensor::new(&[[[0i64, -1], [2, 1]], [[1, 2], [-1, 0]]], &dev).unwrap(),
        c,
    )
    .unwrap();
    assert_eq!(
        label,
        want_l.flatten_all().unwrap().to_vec1::<f32>().unwrap()
    );
    // A pseudo-label of -1 is never valid for any class even with high confidence.
    let valid = t
        .label
        .broadcast_mul(&t.mask)
        .unwrap()
        .sum(1)
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1::<f32>()
        .unwrap();
    assert_eq!(valid, vec![1., 0., 1., 1., 1., 0., 0., 1.]);
    // prob = softmax over classes of the predictions, labelled first.
    let want_prob =
        candle_nn::ops::softmax(&Tensor::cat(&[&pred_l, &pred_u], 0).unwrap(), 1).unwrap();
    let diff = (t.prob - want_prob)
        .unwrap()
        .abs()
        .unwrap()
        .max_all()
        .unwrap()
        .to_scalar::<f32>()
        .unwrap();
    assert!(diff < 1e-6);

    let sup = reco_targets_labelled(&labels_l, &pred_l).unwrap();
    let m: Vec<f32> = sup.mask.flatten_all().unwrap().to_vec1().unwrap();
    assert_eq!(m, vec![1., 0., 1., 1.]);

    // Mismatches are errors.
    assert!(reco_targets(
        &labels_l,
        &pseudo_u,
        &conf_u.narrow(2, 0, 3).unwrap(),
        &pred_l,
        &pred_u,
        0.7
    )
    .is_err());
    let pred_wrong = Tensor::zeros((1, c + 1, h, w), DType::F32, &dev).unwrap();
    assert!(reco_targets(&labels_l, &pseudo_u, &conf_u, &pred_l, &pred_wrong, 0.7).is_err());
}
