//! The class-relation matrix against a direct computation, and the class-mean accumulator
//! against hand-computed means.

use candle_core::{DType, Device, IndexOp, Tensor};
use reco_loss::{class_relation_matrix, ClassMeanAccumulator};

/// softmax over k != c of cos(m_c, m_k) / temp, written out with tensor ops.
fn direct(means: &Tensor, temp: f64) -> Vec<Vec<f64>> {
    let m = means.to_dtype(DType::F64).unwrap();
    let norm = m.sqr().unwrap().sum_keepdim(1).unwrap().sqrt().unwrap();
    let n = m.broadcast_div(&norm).unwrap();
    let cos: Vec<Vec<f64>> = n.matmul(&n.t().unwrap()).unwrap().to_vec2().unwrap();
    let c = cos.len();
    (0..c)
        .map(|i| {
            let z: f64 = (0..c)
                .filter(|&k| k != i)
                .map(|k| (cos[i][k] / temp).exp())
                .sum();
            (0..c)
                .map(|k| {
                    if k == i {
                        f64::NAN
                    } else {
                        (cos[i][k] / temp).exp() / z
                    }
                })
                .collect()
        })
        .collect()
}

#[test]
fn matrix_matches_a_direct_softmax_of_cosines_with_the_diagonal_masked() {
    let dev = Device::Cpu;
    let (c, d, temp) = (5, 7, 0.5);
    let means = Tensor::randn(0f32, 1.0, (c, d), &dev).unwrap();
    let got = class_relation_matrix(&means, &vec![true; c], temp).unwrap();
    let want = direct(&means, temp);
    for (i, want_row) in want.iter().enumerate() {
        let mut row_sum = 0.0;
        for (k, &w) in want_row.iter().enumerate() {
            let g = got.get(i, k);
            if i == k {
                assert!(g.is_nan(), "diagonal ({i},{i}) = {g}");
                continue;
            }
            assert!((f64::from(g) - w).abs() < 1e-6, "({i},{k}): {g} vs {w}");
            row_sum += f64::from(g);
        }
        assert!((row_sum - 1.0).abs() < 1e-5);
    }
    // Cosines ignore the scale of each mean.
    let scaled = means
        .broadcast_mul(&Tensor::new(&[[1f32], [3.0], [0.5], [10.0], [2.0]], &dev).unwrap())
        .unwrap();
    let again = class_relation_matrix(&scaled, &vec![true; c], temp).unwrap();
    for (a, b) in got.matrix.iter().zip(&again.matrix) {
        assert!((a.is_nan() && b.is_nan()) || (a - b).abs() < 1e-6);
    }
    // JSON rows: null where NaN.
    let rows = got.rows_json();
    assert!(rows[2][2].is_none() && rows[2][3].is_some());
}

#[test]
fn absent_classes_are_excluded_from_rows_and_columns() {
    let dev = Device::Cpu;
    let (c, d, temp) = (4, 3, 0.5);
    let means = Tensor::randn(0f32, 1.0, (c, d), &dev).unwrap();
    let present = [true, false, true, true];
    let got = class_relation_matrix(&means, &present, temp).unwrap();
    let sub = Tensor::cat(&[means.i(0..1).unwrap(), means.i(2..4).unwrap()], 0).unwrap();
    let want = direct(&sub, temp);
    let map = [0usize, 2, 3];
    for (si, &i) in map.iter().enumerate() {
        for (sk, &k) in map.iter().enumerate() {
            if i != k {
                assert!((f64::from(got.get(i, k)) - want[si][sk]).abs() < 1e-6);
            }
        }
        assert!(got.get(i, 1).is_nan(), "column of the absent class");
    }
    assert!(
        got.row(1).iter().all(|v| v.is_nan()),
        "row of the absent class"
    );
    assert_eq!(got.present, present.to_vec());
    // A single present class has nothing to relate to.
    let one = class_relation_matrix(&means, &[false, false, true, false], temp).unwrap();
    assert!(one.matrix.iter().all(|v| v.is_nan()));
}

#[test]
fn bad_inputs_are_errors() {
    let dev = Device::Cpu;
    let means = Tensor::zeros((3, 2), DType::F32, &dev).unwrap();
    assert!(class_relation_matrix(&means, &[true, true], 0.5).is_err());
    assert!(class_relation_matrix(&means, &[true; 3], 0.0).is_err());
    assert!(class_relation_matrix(&means.flatten_all().unwrap(), &[true; 3], 0.5).is_err());
    let mut acc = ClassMeanAccumulator::new(3, 2);
    let rep = Tensor::zeros((1, 2, 2, 2), DType::F32, &dev).unwrap();
    let too_big = Tensor::new(&[[[0i64, 3], [1, 2]]], &dev).unwrap();
    assert!(acc.add(&rep, &too_big).is_err(), "label 3 with 3 classes");
    let wrong_dim = Tensor::zeros((1, 5, 2, 2), DType::F32, &dev).unwrap();
    assert!(acc
        .add(
            &wrong_dim,
            &Tensor::zeros((1, 2, 2), DType::I64, &dev).unwrap()
        )
        .is_err());
}

#[test]
fn accumulator_averages_per_class_at_representation_resolution() {
    let dev = Device::Cpu;
    let (c, d) = (3, 2);
    // rep [1, 2, 2, 2]: channel 0 = 1, 2, 3, 4; channel 1 = 10, 20, 30, 40 (row-major).
    let rep = Tensor::new(
        &[[[[1f32, 2.], [3., 4.]], [[10f32, 20.], [30., 40.]]]],
        &dev,
    )
    .unwrap();
    // Labels at 4x4: nearest to 2x2 reads rows/cols 0 and 2.
    let labels = Tensor::new(
        &[[[0i64, 9, 1, 9], [9, 9, 9, 9], [0, 9, -1, 9], [9, 9, 9, 9]]],
        &dev,
    )
    .unwrap()
    // 9s are never read by the nearest rule; make them valid class ids anyway.
    .minimum(2i64)
    .unwrap();
    let mut acc = ClassMeanAccumulator::new(c, d);
    acc.add(&rep, &labels).unwrap();
    // Second batch: the whole 2x2 map is class 2.
    let labels2 = Tensor::full(2i64, (1, 2, 2), &dev).unwrap();
    acc.add(&rep, &labels2).unwrap();
    assert_eq!(acc.counts(), &[2, 1, 4]);
    let means = acc.means();
    let want = [2.0f32, 20.0, 2.0, 20.0, 2.5, 25.0];
    for (g, w) in means.iter().zip(want) {
        assert!((g - w).abs() < 1e-6, "{means:?}");
    }
    let from_acc = acc.relation(0.5).unwrap();
    let direct_means = Tensor::from_vec(means, (c, d), &dev).unwrap();
    let from_means = class_relation_matrix(&direct_means, &[true; 3], 0.5).unwrap();
    for (a, b) in from_acc.matrix.iter().zip(&from_means.matrix) {
        assert!((a.is_nan() && b.is_nan()) || (a - b).abs() < 1e-6);
    }
    // Absent class: NaN mean row.
    let empty = ClassMeanAccumulator::new(2, 2);
    assert!(empty.means().iter().all(|v| v.is_nan()));
    assert!(empty
        .relation(0.5)
        .unwrap()
        .matrix
        .iter()
        .all(|v| v.is_nan()));
}

#[test]
fn query_map_marks_valid_and_hard_pixels_by_the_two_thresholds() {
    use reco_loss::query_map;
    let dev = Device::Cpu;
    // One image, 2 classes, 1x4 pixels: logit differences give p(max) of about
    // 0.5, 0.73, 0.95 and 0.99995.
    let d = [0f32, 1.0, 2.944, 10.0];
    let l0: Vec<f32> = d.iter().map(|&x| -x / 2.0).collect();
    let l1: Vec<f32> = d.iter().map(|&x| x / 2.0).collect();
    let logits = Tensor::from_vec([l0, l1].concat(), (1, 2, 1, 4), &dev).unwrap();
    assert_eq!(logits.dims(), &[1, 2, 1, 4]);
    let m = query_map(&logits, 0.7, 0.97).unwrap();
    let conf: Vec<f32> = m.confidence.flatten_all().unwrap().to_vec1().unwrap();
    for (c, x) in conf.iter().zip(d) {
        let want = 1.0 / (1.0 + (-x).exp());
        assert!((c - want).abs() < 1e-5, "{conf:?}");
    }
    let valid: Vec<u8> = m.valid.flatten_all().unwrap().to_vec1().unwrap();
    let hard: Vec<u8> = m.hard.flatten_all().unwrap().to_vec1().unwrap();
    assert_eq!(valid, [0, 1, 1, 1]);
    assert_eq!(hard, [0, 1, 1, 0]);
    let pseudo: Vec<u32> = m.pseudo.flatten_all().unwrap().to_vec1().unwrap();
    assert_eq!(pseudo[1..], [1, 1, 1]);
    // Raising the strong threshold makes more pixels hard.
    let m = query_map(&logits, 0.7, 0.99999).unwrap();
    let hard: Vec<u8> = m.hard.flatten_all().unwrap().to_vec1().unwrap();
    assert_eq!(hard, [0, 1, 1, 1]);
    assert!(query_map(&logits.squeeze(0).unwrap(), 0.7, 0.97).is_err());
}
