//! Supervised and unsupervised losses against the original's values and gradients.

mod common;

use candle_core::{DType, Var};
use common::{fixtures, get, rel_l2, scalar_f64, vec_f64};

#[test]
fn supervised_matches_original_loss_and_gradient() {
    let f = fixtures();
    let pred = Var::from_tensor(get(&f, "sup.pred")).unwrap();
    let loss = reco_loss::supervised_loss(pred.as_tensor(), get(&f, "sup.target")).unwrap();
    assert_eq!(loss.rank(), 0);
    let value = loss
        .to_dtype(DType::F64)
        .unwrap()
        .to_scalar::<f64>()
        .unwrap();
    let want = scalar_f64(&f, "sup.loss");
    assert!(
        ((value - want) / want).abs() < 1e-5,
        "loss {value} vs {want}"
    );
    let grads = loss.backward().unwrap();
    let grad = vec_f64(grads.get(pred.as_tensor()).expect("gradient reaches pred"));
    let err = rel_l2(&grad, &vec_f64(get(&f, "sup.grad")));
    eprintln!("supervised: loss {value} (ref {want}), gradient rel error {err:.2e}");
    assert!(err < 1e-5, "gradient rel error {err}");
}

#[test]
fn unsupervised_matches_original_loss_and_gradient() {
    let f = fixtures();
    let pred = Var::from_tensor(get(&f, "unsup.pred")).unwrap();
    let threshold = scalar_f64(&f, "unsup.strong_threshold");
    let loss = reco_loss::unsupervised_loss(
        pred.as_tensor(),
        get(&f, "unsup.target"),
        get(&f, "unsup.confidence"),
        threshold,
    )
    .unwrap();
    let value = loss
        .to_dtype(DType::F64)
        .unwrap()
        .to_scalar::<f64>()
        .unwrap();
    let want = scalar_f64(&f, "unsup.loss");
    assert!(
        ((value - want) / want).abs() < 1e-5,
        "loss {value} vs {want}"
    );
    let grads = loss.backward().unwrap();
    let grad = vec_f64(grads.get(pred.as_tensor()).expect("gradient reaches pred"));
    let err = rel_l2(&grad, &vec_f64(get(&f, "unsup.grad")));
    eprintln!("unsupervised: loss {value} (ref {want}), gradient rel error {err:.2e}");
    assert!(err < 1e-4, "gradient rel error {err}");
}

#[test]
fn fixture_targets_contain_ignored_pixels() {
    // The comparisons above only test the ignore handling if the fixture has ignored pixels.
    let f = fixtures();
    for key in ["sup.target", "unsup.target"] {
        let t = get(&f, key)
            .flatten_all()
            .unwrap()
            .to_vec1::<i64>()
            .unwrap();
        assert!(t.contains(&-1), "{key} has no ignored pixel");
    }
}

#[test]
fn bad_targets_are_errors() {
    let f = fixtures();
    let pred = get(&f, "sup.pred");
    let target = get(&f, "sup.target");
    let too_big = (target.ones_like().unwrap() * 5.0)
        .unwrap()
        .to_dtype(DType::I64)
        .unwrap();
    assert!(reco_loss::supervised_loss(pred, &too_big).is_err());
    let too_small = (target.ones_like().unwrap() * -2.0)
        .unwrap()
        .to_dtype(DType::I64)
        .unwrap();
    assert!(reco_loss::supervised_loss(pred, &too_small).is_err());
    let wrong_shape = target.narrow(1, 0, 3).unwrap();
    assert!(reco_loss::supervised_loss(pred, &wrong_shape).is_err());
    assert!(reco_loss::supervised_loss(pred, &target.to_dtype(DType::F32).unwrap()).is_err());
    let conf = get(&f, "unsup.confidence").narrow(2, 0, 4).unwrap();
    assert!(reco_loss::unsupervised_loss(pred, target, &conf, 0.97).is_err());
}

#[test]
fn all_ignored_gives_zero_not_nan() {
    let f = fixtures();
    let pred = get(&f, "sup.pred");
    let ignored = (get(&f, "sup.target").ones_like().unwrap() * -1.0)
        .unwrap()
        .to_dtype(DType::I64)
        .unwrap();
    let sup = reco_loss::supervised_loss(pred, &ignored)
        .unwrap()
        .to_scalar::<f32>()
        .unwrap();
    assert_eq!(sup, 0.0);
    let conf = get(&f, "unsup.confidence");
    let unsup = reco_loss::unsupervised_loss(pred, &ignored, conf, 0.97)
        .unwrap()
        .to_scalar::<f32>()
        .unwrap();
    assert_eq!(unsup, 0.0);
}
