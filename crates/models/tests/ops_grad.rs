//! The ops written for candle's gaps: forward values against independent references and
//! gradients against central finite differences, in f64.

use candle_core::{DType, Device, Tensor, Var};
use reco_models::ops::{
    add_channel_bias, add_relu, conv2d, gelu_erf, layer_norm, max_pool_3x3_s2,
    max_pool_3x3_s2_composed, resize_bilinear, softmax_last_dim, ConvParams,
};
use reco_util::ops_path::{with_ops_path, OpsPath};

fn seeded(shape: &[usize], seed: u64) -> Tensor {
    // A small LCG keeps the test independent of candle's unseedable RNG.
    let n: usize = shape.iter().product();
    let mut s = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    let v: Vec<f64> = (0..n)
        .map(|_| {
            s = s
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((s >> 11) as f64 / (1u64 << 53) as f64) * 2.0 - 1.0
        })
        .collect();
    Tensor::from_vec(v, shape, &Device::Cpu).unwrap()
}

/// Every value of `t` (f64), in row-major order.
fn values(t: &Tensor) -> Vec<f64> {
    t.flatten_all().unwrap().to_vec1::<f64>().unwrap()
}

fn conv_params(stride: usize, padding: usize, dilation: usize) -> ConvParams {
    ConvParams {
        stride,
        padding,
        dilation,
    }
}

fn max_abs_diff(a: &Tensor, b: &Tensor) -> f64 {
    (a - b)
        .unwrap()
        .abs()
        .unwrap()
        .flatten_all()
        .unwrap()
        .max(0)
        .unwrap()
        .to_scalar::<f64>()
        .unwrap()
}

/// Checks d sum(f(inputs) * G) / d inputs[i] at every element against central differences.
fn check_gradients(inputs: &[Tensor], f: impl Fn(&[Tensor]) -> Tensor) {
    let vars: Vec<Var> = inputs
        .iter()
        .map(|t| Var::from_tensor(t).unwrap())
        .collect();
    let tensors: Vec<Tensor> = vars.iter().map(|v| v.as_tensor().clone()).collect();
    let out = f(&tensors);
    let g = seeded(out.dims(), 99);
    let grads = (&out * &g).unwrap().sum_all().unwrap().backward().unwrap();
    let loss_at = |ts: &[Tensor]| -> f64 {
        (f(ts) * &g)
            .unwrap()
            .sum_all()
            .unwrap()
            .to_scalar::<f64>()
            .unwrap()
    };
    let eps = 1e-6;
    for (i, input) in inputs.iter().enumerate() {
        let analytic = grads
            .get(vars[i].as_tensor())
            .expect("gradient reaches every input");
        let analytic = values(analytic);
        let base = values(input);
        for k in 0..base.len() {
            let shifted = |d: f64| -> Vec<Tensor> {
                let mut v = base.clone();
                v[k] += d;
                let mut ts: Vec<Tensor> = inputs.to_vec();
                ts[i] = Tensor::from_vec(v, input.dims(), &Device::Cpu).unwrap();
                ts
            };
            let numeric = (loss_at(&shifted(eps)) - loss_at(&shifted(-eps))) / (2.0 * eps);
            let err = (numeric - analytic[k]).abs();
            assert!(
                err < 1e-6 * (1.0 + numeric.abs()),
                "input {i} element {k}: analytic {} numeric {numeric}",
                analytic[k]
            );
        }
    }
}

const CASES: &[(usize, usize, usize, usize, [usize; 2])] = &[
    // (kernel, stride, padding, dilation, input HxW)
    (3, 1, 1, 1, [6, 5]),
    (3, 2, 1, 1, [10, 9]), // H and W of different parity at a stride-2 layer
    (3, 1, 2, 2, [7, 6]),
    (1, 2, 0, 1, [7, 8]),
    (1, 1, 0, 1, [5, 4]),
    (7, 2, 3, 1, [11, 10]),
];

#[test]
fn conv_forward_matches_candle() {
    for &(k, s, p, d, [h, w]) in CASES {
        let x = seeded(&[2, 3, h + 4, w + 4], 1);
        let wt = seeded(&[4, 3, k, k], 2);
        let ours = conv2d(&x, &wt, conv_params(s, p, d)).unwrap();
        let theirs = x.conv2d(&wt, p, s, d, 1).unwrap();
        assert_eq!(ours.dims(), theirs.dims());
        assert!(
            max_abs_diff(&ours, &theirs) < 1e-12,
            "case k{k} s{s} p{p} d{d}"
        );
    }
}

#[test]
fn conv_gradients_match_finite_differences() {
    for &(k, s, p, d, [h, w]) in CASES {
        let x = seeded(&[2, 2, h, w], 3);
        let wt = seeded(&[3, 2, k, k], 4);
        let params = conv_params(s, p, d);
        check_gradients(&[x, wt], |ts| conv2d(&ts[0], &ts[1], params).unwrap());
    }
}

#[test]
fn conv_runs_in_f32() {
    let x = seeded(&[1, 2, 9, 10], 5).to_dtype(DType::F32).unwrap();
    let w = seeded(&[3, 2, 3, 3], 6).to_dtype(DType::F32).unwrap();
    let p = conv_params(2, 1, 1);
    let ours = conv2d(&x, &w, p).unwrap();
    let theirs = x.conv2d(&w, 1, 2, 1, 1).unwrap();
    assert!(
        max_abs_diff(
            &ours.to_dtype(DType::F64).unwrap(),
            &theirs.to_dtype(DType::F64).unwrap()
        ) < 1e-5
    );
}

#[test]
fn conv_rejects_input_smaller_than_kernel() {
    let x = seeded(&[1, 1, 2, 2], 7);
    let w = seeded(&[1, 1, 7, 7], 8);
    let err = conv2d(&x, &w, conv_params(2, 0, 1)).unwrap_err();
    assert!(err.to_string().contains("too small"), "{err}");
}

#[test]
fn max_pool_matches_composed_version_and_pytorch_sizes() {
    for (h, w) in [(7, 8), (8, 8), (9, 5), (2, 3)] {
        let x = seeded(&[2, 3, h, w], 10);
        let a = max_pool_3x3_s2(&x).unwrap();
        let b = max_pool_3x3_s2_composed(&x).unwrap();
        // PyTorch: floor((n + 2 - 3) / 2) + 1.
        assert_eq!(a.dims(), &[2, 3, (h - 1) / 2 + 1, (w - 1) / 2 + 1]);
        assert_eq!(max_abs_diff(&a, &b), 0.0);
    }
}

#[test]
fn max_pool_gradients_match_finite_differences() {
    for (h, w) in [(7, 8), (6, 5)] {
        check_gradients(&[seeded(&[2, 2, h, w], 11)], |ts| {
            max_pool_3x3_s2(&ts[0]).unwrap()
        });
        check_gradients(&[seeded(&[1, 2, h, w], 12)], |ts| {
            max_pool_3x3_s2_composed(&ts[0]).unwrap()
        });
    }
}

#[test]
fn max_pool_sends_gradient_to_first_maximum_on_ties() {
    // All-equal input: PyTorch routes each window's gradient to its first element.
    let x =
        Var::from_tensor(&Tensor::zeros((1, 1, 4, 4), DType::F64, &Device::Cpu).unwrap()).unwrap();
    let y = max_pool_3x3_s2(x.as_tensor()).unwrap();
    let g = y.sum_all().unwrap().backward().unwrap();
    let dx = g
        .get(x.as_tensor())
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1::<f64>()
        .unwrap();
    // Windows start at (-1,-1), (-1,1), (1,-1), (1,1): first valid pixels (0,0), (0,1), (1,0), (1,1).
    let mut expected = vec![0.0; 16];
    for i in [0, 1, 4, 5] {
        expected[i] = 1.0;
    }
    assert_eq!(dx, expected);
}

#[test]
fn bilinear_matches_pytorch_values() {
    let x = Tensor::new(&[[[[1f64, 2.0]]]], &Device::Cpu).unwrap();
    // F.interpolate(x, (1, 4), mode="bilinear", align_corners=False / True)
    let a = values(&resize_bilinear(&x, 1, 4, false).unwrap());
    assert_eq!(a, vec![1.0, 1.25, 1.75, 2.0]);
    let b = values(&resize_bilinear(&x, 1, 4, true).unwrap());
    let expected = [1.0, 4.0 / 3.0, 5.0 / 3.0, 2.0];
    for (u, v) in b.iter().zip(expected) {
        assert!((u - v).abs() < 1e-12);
    }
    // Down-sampling with align_corners=False: 4 -> 3 reads source 0.1667, 1.5, 2.8333.
    let x = Tensor::new(&[[[[0f64, 1.0, 2.0, 3.0]]]], &Device::Cpu).unwrap();
    let c = values(&resize_bilinear(&x, 1, 3, false).unwrap());
    for (u, v) in c.iter().zip([1.0 / 6.0, 1.5, 17.0 / 6.0]) {
        assert!((u - v).abs() < 1e-12, "{c:?}");
    }
}

#[test]
fn bilinear_gradients_match_finite_differences() {
    for align in [true, false] {
        check_gradients(&[seeded(&[1, 2, 3, 4], 13)], |ts| {
            resize_bilinear(&ts[0], 7, 5, align).unwrap()
        });
        check_gradients(&[seeded(&[1, 1, 6, 5], 14)], |ts| {
            resize_bilinear(&ts[0], 4, 2, align).unwrap()
        });
    }
}

#[test]
fn batch_norm_gradients_match_finite_differences() {
    use reco_models::ops::{batch_norm, Normalize};
    let rm = seeded(&[3], 20).affine(0.1, 0.0).unwrap();
    let rv = seeded(&[3], 21).affine(0.2, 1.0).unwrap();
    for relu in [false, true] {
        check_gradients(
            &[
                seeded(&[2, 3, 4, 5], 22),
                seeded(&[3], 23),
                seeded(&[3], 24),
            ],
            |ts| {
                batch_norm(&ts[0], &ts[1], &ts[2], Normalize::Batch, 1e-5, relu)
                    .unwrap()
                    .0
            },
        );
        check_gradients(
            &[
                seeded(&[2, 3, 3, 2], 25),
                seeded(&[3], 26),
                seeded(&[3], 27),
            ],
            |ts| {
                let norm = Normalize::Running {
                    mean: &rm,
                    var: &rv,
                };
                batch_norm(&ts[0], &ts[1], &ts[2], norm, 1e-5, relu)
                    .unwrap()
                    .0
            },
        );
    }
}

#[test]
fn batch_norm_returns_biased_batch_statistics() {
    use reco_models::ops::{batch_norm, Normalize};
    let x = Tensor::new(
        &[[[[1f64, 2.0]], [[0.0, 4.0]]], [[[3.0, 6.0]], [[2.0, 2.0]]]],
        &Device::Cpu,
    )
    .unwrap();
    let ones = Tensor::ones(2, DType::F64, &Device::Cpu).unwrap();
    let zeros = Tensor::zeros(2, DType::F64, &Device::Cpu).unwrap();
    let (y, stats) = batch_norm(&x, &ones, &zeros, Normalize::Batch, 0.0, false).unwrap();
    let stats = stats.unwrap();
    let as_vec = |t: &Tensor| t.to_dtype(DType::F64).unwrap().to_vec1::<f64>().unwrap();
    assert_eq!(as_vec(&stats.mean), vec![3.0, 2.0]);
    assert_eq!(as_vec(&stats.var), vec![3.5, 2.0]);
    let y = values(&y);
    assert!((y[0] + 2.0 / 3.5f64.sqrt()).abs() < 1e-12);
}

/// Forward value and both gradients of `sum(conv(x, w) * G)`.
fn conv_value_and_grads(x: &Tensor, wt: &Tensor, p: ConvParams, generic: bool) -> [Tensor; 3] {
    let (xv, wv) = (Var::from_tensor(x).unwrap(), Var::from_tensor(wt).unwrap());
    let y = if generic {
        reco_models::ops::conv2d_generic(xv.as_tensor(), wv.as_tensor(), p).unwrap()
    } else {
        with_ops_path(OpsPath::Cpu, || conv2d(xv.as_tensor(), wv.as_tensor(), p)).unwrap()
    };
    let g = seeded(y.dims(), 31);
    let grads = (&y * &g).unwrap().sum_all().unwrap().backward().unwrap();
    [
        y,
        grads.get(xv.as_tensor()).unwrap().clone(),
        grads.get(wv.as_tensor()).unwrap().clone(),
    ]
}

/// The CPU kernel's output and both gradients equal those of `conv2d_generic` (candle's
/// convolution and its backward) to `tol`.
fn assert_cpu_matches_generic(x: &Tensor, wt: &Tensor, params: ConvParams, tol: f64, case: &str) {
    let cpu = conv_value_and_grads(x, wt, params, false);
    let generic = conv_value_and_grads(x, wt, params, true);
    for (what, a, b) in [
        ("output", &generic[0], &cpu[0]),
        ("input gradient", &generic[1], &cpu[1]),
        ("weight gradient", &generic[2], &cpu[2]),
    ] {
        assert_eq!(a.dims(), b.dims(), "{what}, case {case}");
        assert!(
            max_abs_diff(a, b) < tol,
            "{what}, case {case}: {}",
            max_abs_diff(a, b)
        );
    }
}

#[test]
fn generic_conv_matches_cpu_kernel_when_h_and_w_differ_in_parity() {
    // candle's own conv2d backward fails for these (docs/design.md, candle gap 3);
    // `conv2d_generic` pads the axis with the smaller remainder and must give the CPU
    // kernel's values and gradients exactly (up to summation order).
    for &(k, s, p, d, [h, w]) in &[
        (3, 2, 1, 1, [10, 9]),
        (3, 2, 1, 1, [9, 10]),
        (1, 2, 0, 1, [8, 7]),
        (7, 2, 3, 1, [12, 9]),
        (3, 2, 1, 1, [11, 11]),
        (3, 1, 4, 4, [9, 10]),
    ] {
        let x = seeded(&[2, 3, h, w], 32);
        let wt = seeded(&[4, 3, k, k], 33);
        let params = conv_params(s, p, d);
        let case = format!("k{k} s{s} p{p} d{d} {h}x{w}");
        assert_cpu_matches_generic(&x, &wt, params, 1e-12, &case);
    }
    // And against finite differences, independent of either implementation.
    let params = conv_params(2, 1, 1);
    check_gradients(
        &[seeded(&[1, 2, 6, 5], 34), seeded(&[2, 2, 3, 3], 35)],
        |ts| reco_models::ops::conv2d_generic(&ts[0], &ts[1], params).unwrap(),
    );
}

#[test]
fn large_convolutions_match_candle() {
    // Shapes that take the CPU kernel's other paths: the per-tap forward and input
    // gradient (stride 1, at least 4096 outputs and 256 channels), the sliced weight
    // gradient (at least 1024 outputs per image; 1024-pixel slices, so a ragged last one)
    // and the valid-rectangle taps (at least 256 outputs, dilation large against the
    // image as in the ASPP: some taps read only padding, the third case only in the
    // forward and input gradient, the fourth is not "same"-padded), against candle's
    // convolution and its backward (`conv2d_generic`).
    for &(c, o, k, s, p, d, [h, w]) in &[
        (6, 3, 3, 1, 12, 12, [18, 17]),
        (5, 4, 3, 1, 20, 20, [16, 17]),
        (4, 3, 3, 1, 5, 5, [17, 16]),
        (4, 3, 3, 1, 4, 6, [20, 22]),
        (256, 3, 3, 1, 1, 1, [66, 64]),
        (256, 2, 3, 1, 2, 2, [65, 66]),
        (4, 3, 3, 2, 1, 1, [70, 65]),
        (5, 3, 1, 1, 0, 1, [40, 33]),
        (3, 4, 7, 2, 3, 1, [67, 70]),
    ] {
        let x = seeded(&[2, c, h, w], 37);
        let wt = seeded(&[o, c, k, k], 38);
        let params = conv_params(s, p, d);
        // Sums of up to ~10^4 products of O(1) terms, in a different order.
        let case = format!("c{c} k{k} s{s} p{p} d{d} {h}x{w}");
        assert_cpu_matches_generic(&x, &wt, params, 1e-9, &case);
    }
}

#[test]
fn sliced_weight_gradient_does_not_depend_on_the_thread_count() {
    // 3 slices of 1024 output pixels per image: with 1, 2 or 3 threads the partial
    // gradients must be added in the same order, bit for bit.
    let x = seeded(&[2, 3, 60, 50], 39);
    let g = seeded(&[2, 4, 60, 50], 40);
    let p = conv_params(1, 1, 1);
    let dw_with = |threads: usize| {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .unwrap();
        pool.install(|| reco_models::ops::conv2d_weight_grad(&x, &g, p, 3))
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1::<f64>()
            .unwrap()
    };
    let one = dw_with(1);
    assert_eq!(one, dw_with(2));
    assert_eq!(one, dw_with(3));
}

#[test]
fn composed_max_pool_routes_ties_like_the_cpu_kernel() {
    // Repeated values (as after a ReLU): both paths must pick the same first maximum.
    let v: Vec<f64> = (0..2 * 2 * 7 * 6).map(|i| ((i * 7) % 5) as f64).collect();
    let x = Tensor::from_vec(v, (2, 2, 7, 6), &Device::Cpu).unwrap();
    let grad_of = |generic: bool| {
        let xv = Var::from_tensor(&x).unwrap();
        let y = if generic {
            max_pool_3x3_s2_composed(xv.as_tensor()).unwrap()
        } else {
            with_ops_path(OpsPath::Cpu, || max_pool_3x3_s2(xv.as_tensor())).unwrap()
        };
        let g = seeded(y.dims(), 36);
        let grads = (&y * &g).unwrap().sum_all().unwrap().backward().unwrap();
        (y, grads.get(xv.as_tensor()).unwrap().clone())
    };
    let ((ya, ga), (yb, gb)) = (grad_of(false), grad_of(true));
    assert_eq!(max_abs_diff(&ya, &yb), 0.0);
    assert_eq!(max_abs_diff(&ga, &gb), 0.0);
}

#[test]
fn add_relu_matches_composition_and_finite_differences() {
    let (a, b) = (seeded(&[2, 3, 4, 5], 31), seeded(&[2, 3, 4, 5], 32));
    let fused = add_relu(&a, &b).unwrap();
    let composed = (&a + &b).unwrap().relu().unwrap();
    assert_eq!(max_abs_diff(&fused, &composed), 0.0);
    assert!(fused.min_all().unwrap().to_scalar::<f64>().unwrap() >= 0.0);
    // The same values through the device-generic path (candle's add and ReLU).
    let generic = with_ops_path(OpsPath::Generic, || add_relu(&a, &b).unwrap());
    assert_eq!(max_abs_diff(&generic, &fused), 0.0);
    check_gradients(&[a, b], |ts| add_relu(&ts[0], &ts[1]).unwrap());
    // f32 too, and mismatched shapes are an error rather than a broadcast.
    let a32 = seeded(&[1, 2, 3, 3], 33).to_dtype(DType::F32).unwrap();
    let b32 = seeded(&[1, 2, 3, 3], 34).to_dtype(DType::F32).unwrap();
    assert_eq!(add_relu(&a32, &b32).unwrap().dims(), [1, 2, 3, 3]);
    let err = add_relu(
        &a32,
        &seeded(&[1, 2, 3, 1], 35).to_dtype(DType::F32).unwrap(),
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("shapes"), "{err}");
}

/// The convolution bias op against candle's broadcast add, with both gradients (the
/// composed path is what other devices run).
#[test]
fn channel_bias_matches_broadcast_add_and_finite_differences() {
    let (y, b) = (seeded(&[3, 4, 5, 2], 41), seeded(&[4], 42));
    let fused = add_channel_bias(&y, &b).unwrap();
    let composed = y.broadcast_add(&b.reshape((1, 4, 1, 1)).unwrap()).unwrap();
    assert_eq!(max_abs_diff(&fused, &composed), 0.0);
    let generic = with_ops_path(OpsPath::Generic, || add_channel_bias(&y, &b).unwrap());
    assert_eq!(max_abs_diff(&generic, &fused), 0.0);
    check_gradients(&[y.clone(), b.clone()], |ts| {
        add_channel_bias(&ts[0], &ts[1]).unwrap()
    });
    // Only the bias tracked (a frozen input), and f32.
    let bv = Var::from_tensor(&b.to_dtype(DType::F32).unwrap()).unwrap();
    let y32 = y.to_dtype(DType::F32).unwrap();
    let out = add_channel_bias(&y32, bv.as_tensor()).unwrap();
    let grads = out.sqr().unwrap().sum_all().unwrap().backward().unwrap();
    let want = (y32
        .broadcast_add(&bv.as_tensor().reshape((1, 4, 1, 1)).unwrap())
        .unwrap()
        * 2.0)
        .unwrap()
        .sum((0, 2, 3))
        .unwrap();
    let got = grads.get(bv.as_tensor()).unwrap();
    let diff = (got - want).unwrap().abs().unwrap().max(0).unwrap();
    assert!(diff.to_scalar::<f32>().unwrap() < 1e-4);
    // A bias of the wrong length is an error naming the channels.
    let err = add_channel_bias(&y, &seeded(&[3], 43))
        .unwrap_err()
        .to_string();
    assert!(err.contains("4 channels"), "{err}");
}

/// The differentiable layer norm (candle-nn's has no backward): its values against
/// candle-nn's fused forward, its gradients (input, weight, bias) against differences.
#[test]
fn layer_norm_matches_candle_nn_and_has_gradients() {
    let x = seeded(&[2, 5, 7], 41);
    let w = (seeded(&[7], 42) + 1.5).unwrap();
    let b = seeded(&[7], 43);
    // candle-nn's fused op has f32 (and f16/bf16) CPU kernels only.
    let f32_ = |t: &Tensor| t.to_dtype(DType::F32).unwrap();
    let ours = layer_norm(&f32_(&x), &f32_(&w), &f32_(&b), 1e-6).unwrap();
    let theirs = candle_nn::ops::layer_norm(&f32_(&x), &f32_(&w), &f32_(&b), 1e-6).unwrap();
    let diff = max_abs_diff(
        &f32_(&ours).to_dtype(DType::F64).unwrap(),
        &theirs.to_dtype(DType::F64).unwrap(),
    );
    assert!(diff < 1e-5, "{diff}");
    check_gradients(&[x, w, b], |t| {
        layer_norm(&t[0], &t[1], &t[2], 1e-6).unwrap()
    });
    // Shapes that do not fit are an error naming them.
    let err = layer_norm(
        &seeded(&[2, 6], 1),
        &seeded(&[7], 2),
        &seeded(&[7], 3),
        1e-6,
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("[6]"), "{err}");
}

#[test]
fn gelu_erf_has_the_exact_gradient() {
    let x = (seeded(&[3, 41], 51) * 3.0).unwrap();
    let fused = x.gelu_erf().unwrap();
    let ours = gelu_erf(&x, true).unwrap();
    assert!(max_abs_diff(&ours, &fused) < 1e-14);
    assert!(max_abs_diff(&gelu_erf(&x, false).unwrap(), &fused) == 0.0);
    // d/dx x·Φ(x) = Φ(x) + x·φ(x), with φ's 1/√(2π) exact (candle's backward rounds it to
    // 0.398942: a relative error of 7e-7).
    let var = Var::from_tensor(&x).unwrap();
    let grads = gelu_erf(var.as_tensor(), true)
        .unwrap()
        .sum_all()
        .unwrap()
        .backward()
        .unwrap();
    let analytic = grads.get(var.as_tensor()).unwrap();
    let xs = values(&x);
    let exact: Vec<f64> = xs
        .iter()
        .map(|&v| {
            let phi = (-0.5 * v * v).exp() / (2.0 * std::f64::consts::PI).sqrt();
            let cdf = 0.5 * (1.0 + candle_core::cpu::erf::erf_f64(v / std::f64::consts::SQRT_2));
            cdf + v * phi
        })
        .collect();
    for (a, e) in values(analytic).iter().zip(&exact) {
        assert!((a - e).abs() < 1e-12 * (1.0 + e.abs()), "{a} vs {e}");
    }
}

#[test]
fn fused_softmax_matches_the_composed_one_with_gradients() {
    let x = (seeded(&[3, 4, 37], 61) * 4.0).unwrap();
    let fused = softmax_last_dim(&x, true).unwrap();
    let composed = candle_nn::ops::softmax(&x, candle_core::D::Minus1).unwrap();
    assert!(max_abs_diff(&fused, &composed) < 1e-15);
    check_gradients(std::slice::from_ref(&x), |t| {
        softmax_last_dim(&t[0], true).unwrap()
    });
    assert_eq!(
        values(&softmax_last_dim(&x, false).unwrap()),
        values(&fused)
    );
    // f32 too (the training type), against the composed gradient.
    let x32 = x.to_dtype(DType::F32).unwrap();
    let g = seeded(&[3, 4, 37], 62).to_dtype(DType::F32).unwrap();
    let grad_of = |f: &dyn Fn(&Tensor) -> Tensor| {
        let v = Var::from_tensor(&x32).unwrap();
        let grads = (f(v.as_tensor()) * &g)
            .unwrap()
            .sum_all()
            .unwrap()
            .backward()
            .unwrap();
        grads
            .get(v.as_tensor())
            .unwrap()
            .to_dtype(DType::F64)
            .unwrap()
    };
    let ours = grad_of(&|t| softmax_last_dim(t, true).unwrap());
    let theirs = grad_of(&|t| candle_nn::ops::softmax(t, candle_core::D::Minus1).unwrap());
    assert!(max_abs_diff(&ours, &theirs) < 1e-6);
}
