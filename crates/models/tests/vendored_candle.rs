//! The two changes to the vendored candle-core (vendor/README.md): a node's first
//! gradient is stored rather than added to zeros, and the thread count is cached. The
//! gradients must be the values candle's original accumulation gives.

use candle_core::{Device, Tensor, Var};

fn vec(t: &Tensor) -> Vec<f32> {
    t.flatten_all().unwrap().to_vec1::<f32>().unwrap()
}

#[test]
fn gradients_sum_over_every_use() {
    let dev = Device::Cpu;
    let x = Var::new(&[1f32, -2., 3.], &dev).unwrap();
    // Three uses: two products and x itself twice in one add (the occupied path).
    let y = ((x.as_tensor() * 2.0).unwrap() + (x.as_tensor() * 3.0).unwrap()).unwrap();
    let y = (y + (x.as_tensor() + x.as_tensor()).unwrap()).unwrap();
    let grads = y.sum_all().unwrap().backward().unwrap();
    assert_eq!(vec(grads.get(x.as_tensor()).unwrap()), [7., 7., 7.]);
}

#[test]
fn a_subtracted_tensor_gets_the_negated_gradient() {
    let dev = Device::Cpu;
    let a = Var::new(&[1f32, 2.], &dev).unwrap();
    let b = Var::new(&[5f32, 7.], &dev).unwrap();
    let w = Tensor::new(&[3f32, 4.], &dev).unwrap();
    let d = ((a.as_tensor() - b.as_tensor()).unwrap() * &w).unwrap();
    // And a second use of b through a division, whose rhs gradient is subtracted too.
    let q = (&w / b.as_tensor()).unwrap();
    let grads = (d.sum_all().unwrap() + q.sum_all().unwrap())
        .unwrap()
        .backward()
        .unwrap();
    assert_eq!(vec(grads.get(a.as_tensor()).unwrap()), [3., 4.]);
    let gb = vec(grads.get(b.as_tensor()).unwrap());
    let want = [-3. - 3. / 25., -4. - 4. / 49.];
    for (g, w) in gb.iter().zip(want) {
        assert!((g - w).abs() < 1e-6, "{gb:?} vs {want:?}");
    }
}

#[test]
fn a_gradient_that_arrives_as_a_view_is_stored_contiguous() {
    let dev = Device::Cpu;
    let x = Var::new(&[[1f32, 2., 3.], [4., 5., 6.]], &dev).unwrap();
    // The gradient of a transpose is a transposed view, of a mean a broadcast one.
    let t = x.as_tensor().t().unwrap();
    let w = Tensor::new(&[[1f32, 10.], [100., 1000.], [1e4, 1e5]], &dev).unwrap();
    let grads = (&t * &w).unwrap().sum_all().unwrap().backward().unwrap();
    let g = grads.get(x.as_tensor()).unwrap();
    assert!(g.is_contiguous());
    assert_eq!(vec(g), [1., 100., 1e4, 10., 1000., 1e5]);
    let grads = x.as_tensor().mean_all().unwrap().backward().unwrap();
    let g = grads.get(x.as_tensor()).unwrap();
    assert!(g.is_contiguous());
    assert_eq!(vec(g), [1. / 6.; 6]);
}

#[test]
fn shared_gradients_survive_an_update_of_the_parameters() {
    // Both sides of an add receive the same gradient tensor now; updating one
    // parameter must not change the other's gradient.
    let dev = Device::Cpu;
    let a = Var::new(&[1f32, 2.], &dev).unwrap();
    let b = Var::new(&[3f32, 4.], &dev).unwrap();
    let grads = (a.as_tensor() + b.as_tensor())
        .unwrap()
        .sum_all()
        .unwrap()
        .backward()
        .unwrap();
    let ga = grads.get(a.as_tensor()).unwrap().clone();
    a.set(&(a.as_tensor() - &ga).unwrap()).unwrap();
    assert_eq!(vec(a.as_tensor()), [0., 1.]);
    assert_eq!(vec(grads.get(b.as_tensor()).unwrap()), [1., 1.]);
    assert_eq!(vec(&ga), [1., 1.]);
}

#[test]
fn the_thread_count_is_stable() {
    let n = candle_core::utils::get_num_threads();
    assert!(n >= 1);
    assert_eq!(candle_core::utils::get_num_threads(), n);
}
