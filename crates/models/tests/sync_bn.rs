//! Synchronized batch norm over simulated ranks equals plain batch norm over the whole
//! batch (f64, 1e-10): outputs, input gradients and the summed parameter gradients; on
//! the CPU kernel and on the composed device path (`RECO_OPS=generic`), whose f16 run
//! stays within f16's rounding of the f64 result.
//!
//! Each rank runs in its own thread with its half of the batch; the fake group sums the
//! ranks' contributions behind a barrier, as an MPI/NCCL all-reduce would.

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Barrier, Mutex};

use candle_core::DType;
use candle_core::{Device, Result, Tensor, Var};
use rand::{Rng, SeedableRng};
use reco_models::ops::{batch_norm, Normalize};
use reco_models::sync_bn::{sync_batch_norm, StatsAllReduce};
use reco_util::ops_path::{with_ops_path, OpsPath};

struct Shared {
    slots: Mutex<Vec<Option<Vec<f64>>>>,
    barrier: Barrier,
    calls: AtomicUsize,
}

struct FakeRank {
    rank: usize,
    shared: Arc<Shared>,
}

impl StatsAllReduce for FakeRank {
    fn all_reduce_sum(&self, t: &Tensor) -> Result<Tensor> {
        self.shared.calls.fetch_add(1, Ordering::SeqCst);
        let v: Vec<f64> = t.to_vec1()?;
        self.shared.slots.lock().unwrap()[self.rank] = Some(v);
        self.shared.barrier.wait();
        let sum = {
            let slots = self.shared.slots.lock().unwrap();
            let mut sum = vec![0.0; t.elem_count()];
            for s in slots.iter() {
                let s = s.as_ref().expect("every rank contributed");
                assert_eq!(s.len(), sum.len(), "ranks all-reduce different sizes");
                sum.iter_mut().zip(s).for_each(|(a, b)| *a += b);
            }
            sum
        };
        // Nobody overwrites a slot before every rank has read the sum.
        self.shared.barrier.wait();
        Tensor::from_vec(sum, t.shape(), t.device())
    }
}

fn random(n: usize, seed: u64, offset: f64, scale: f64) -> Vec<f64> {
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    (0..n)
        .map(|_| offset + scale * (rng.gen::<f64>() * 2.0 - 1.0))
        .collect()
}

struct Grads {
    y: Vec<f64>,
    dx: Vec<f64>,
    dw: Vec<f64>,
    db: Vec<f64>,
}

/// Loss `Σ y·r`: the sum over ranks of the per-rank losses is the full-batch loss.
fn run(
    x: Vec<f64>,
    shape: (usize, usize, usize, usize),
    (w, b): (&[f64], &[f64]),
    r: Vec<f64>,
    relu: bool,
    group: Option<Arc<dyn StatsAllReduce>>,
    dtype: DType,
) -> Result<Grads> {
    let dev = Device::Cpu;
    let c = w.len();
    let x = Var::from_tensor(&Tensor::from_vec(x, shape, &dev)?.to_dtype(dtype)?)?;
    let wv = Var::from_tensor(&Tensor::from_slice(w, c, &dev)?.to_dtype(dtype)?)?;
    let bv = Var::from_tensor(&Tensor::from_slice(b, c, &dev)?.to_dtype(dtype)?)?;
    let y = match group {
        Some(g) => sync_batch_norm(x.as_tensor(), &wv, &bv, g, 1e-5, relu)?.0,
        None => batch_norm(x.as_tensor(), &wv, &bv, Normalize::Batch, 1e-5, relu)?.0,
    };
    let loss = y
        .mul(&Tensor::from_vec(r, shape, &dev)?.to_dtype(dtype)?)?
        .sum_all()?;
    let grads = loss.backward()?;
    let get = |t: &Tensor| -> Result<Vec<f64>> {
        grads
            .get(t)
            .expect("gradient present")
            .flatten_all()?
            .to_dtype(DType::F64)?
            .to_vec1()
    };
    Ok(Grads {
        y: y.flatten_all()?.to_dtype(DType::F64)?.to_vec1()?,
        dx: get(x.as_tensor())?,
        dw: get(wv.as_tensor())?,
        db: get(bv.as_tensor())?,
    })
}

fn assert_close(what: &str, got: &[f64], want: &[f64], tol: f64) {
    assert_eq!(got.len(), want.len(), "{what}: lengths");
    let scale = want.iter().fold(1.0f64, |m, v| m.max(v.abs()));
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        assert!(
            (g - w).abs() <= tol * scale,
            "{what}[{i}]: {g} vs {w} (diff {:e})",
            (g - w).abs()
        );
    }
}

fn two_ranks_equal_full_batch(relu: bool, ranks: usize) {
    two_ranks_equal_full_batch_on(relu, ranks, OpsPath::Cpu, DType::F64, 1e-10);
    two_ranks_equal_full_batch_on(relu, ranks, OpsPath::Generic, DType::F64, 1e-10);
}

fn two_ranks_equal_full_batch_on(relu: bool, ranks: usize, path: OpsPath, dtype: DType, tol: f64) {
    let (b, c, h, w) = (2, 3, 4, 5);
    let full = (b * ranks, c, h, w);
    let per = b * c * h * w;
    // An offset mean makes Σx² − N·μ² lose digits if it were done carelessly.
    let x = random(per * ranks, 1, 3.0, 2.0);
    let r = random(per * ranks, 2, 0.0, 1.0);
    let wt = random(c, 3, 1.0, 0.5);
    let bs = random(c, 4, 0.0, 0.5);
    let want = run(
        x.clone(),
        full,
        (&wt, &bs),
        r.clone(),
        relu,
        None,
        DType::F64,
    )
    .unwrap();

    let shared = Arc::new(Shared {
        slots: Mutex::new(vec![None; ranks]),
        barrier: Barrier::new(ranks),
        calls: AtomicUsize::new(0),
    });
    let got: Vec<Grads> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..ranks)
            .map(|rank| {
                let group: Arc<dyn StatsAllReduce> = Arc::new(FakeRank {
                    rank,
                    shared: shared.clone(),
                });
                let xs = x[rank * per..(rank + 1) * per].to_vec();
                let rs = r[rank * per..(rank + 1) * per].to_vec();
                let (wt, bs) = (&wt, &bs);
                s.spawn(move || {
                    with_ops_path(path, || {
                        run(xs, (b, c, h, w), (wt, bs), rs, relu, Some(group), dtype).unwrap()
                    })
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    // One all-reduce in the forward and one in the backward, on every rank.
    assert_eq!(shared.calls.load(Ordering::SeqCst), 2 * ranks);

    let cat = |f: fn(&Grads) -> &Vec<f64>| got.iter().flat_map(f).copied().collect::<Vec<_>>();
    assert_close("output", &cat(|g| &g.y), &want.y, tol);
    assert_close("input gradient", &cat(|g| &g.dx), &want.dx, tol);
    // Parameter gradients are per-rank sums: summed over ranks they are the full ones.
    let sum = |f: fn(&Grads) -> &Vec<f64>| {
        (0..c)
            .map(|ch| got.iter().map(|g| f(g)[ch]).sum())
            .collect::<Vec<f64>>()
    };
    assert_close("weight gradient", &sum(|g| &g.dw), &want.dw, tol);
    assert_close("bias gradient", &sum(|g| &g.db), &want.db, tol);
    // Each rank alone would normalise differently: the test can tell the two apart.
    let alone = run(
        x[..per].to_vec(),
        (b, c, h, w),
        (&wt, &bs),
        r[..per].to_vec(),
        relu,
        None,
        DType::F64,
    )
    .unwrap();
    let diff = alone
        .y
        .iter()
        .zip(&want.y[..per])
        .fold(0.0f64, |m, (a, b)| m.max((a - b).abs()));
    assert!(diff > 1e-3, "local and global statistics coincide: {diff}");
}

#[test]
fn two_ranks_equal_plain_batch_norm_over_full_batch() {
    two_ranks_equal_full_batch(false, 2);
}

#[test]
fn two_ranks_with_fused_relu_equal_plain_batch_norm() {
    two_ranks_equal_full_batch(true, 2);
}

#[test]
fn three_ranks_equal_plain_batch_norm() {
    two_ranks_equal_full_batch(false, 3);
}

/// f16 inputs and weights on the composed path (statistics and normalisation in f32):
/// within f16's rounding (2^-11 relative per value, a few roundings deep) of f64.
#[test]
fn the_composed_path_in_f16_stays_within_rounding_of_f64() {
    for relu in [false, true] {
        two_ranks_equal_full_batch_on(relu, 2, OpsPath::Generic, DType::F16, 1e-2);
    }
}

struct Identity;
impl StatsAllReduce for Identity {
    fn all_reduce_sum(&self, t: &Tensor) -> Result<Tensor> {
        Ok(t.clone())
    }
}

#[test]
fn global_statistics_are_returned_for_the_running_update() {
    let dev = Device::Cpu;
    let x = Tensor::from_vec(random(2 * 2 * 3 * 3, 5, 1.0, 1.0), (2, 2, 3, 3), &dev).unwrap();
    let w = Tensor::ones(2, candle_core::DType::F64, &dev).unwrap();
    let b = Tensor::zeros(2, candle_core::DType::F64, &dev).unwrap();
    let (_, stats) = sync_batch_norm(&x, &w, &b, Arc::new(Identity), 1e-5, false).unwrap();
    let (_, plain) = batch_norm(&x, &w, &b, Normalize::Batch, 1e-5, false).unwrap();
    let plain = plain.unwrap();
    let plain_mean: Vec<f64> = plain.mean.to_dtype(DType::F64).unwrap().to_vec1().unwrap();
    let plain_var: Vec<f64> = plain.var.to_dtype(DType::F64).unwrap().to_vec1().unwrap();
    assert_eq!(stats.count, 18.0);
    assert_close("mean", &stats.mean, &plain_mean, 1e-12);
    assert_close("variance", &stats.var, &plain_var, 1e-12);
    let unbiased: Vec<f64> = plain_var.iter().map(|v| v * 18.0 / 17.0).collect();
    assert_close("unbiased variance", &stats.unbiased_var(), &unbiased, 1e-12);
}

#[test]
fn bad_shapes_are_errors() {
    let dev = Device::Cpu;
    let x = Tensor::zeros((2, 3, 2, 2), candle_core::DType::F32, &dev).unwrap();
    let w = Tensor::ones(2, candle_core::DType::F32, &dev).unwrap();
    let err = sync_batch_norm(&x, &w, &w, Arc::new(Identity), 1e-5, false).unwrap_err();
    assert!(err.to_string().contains("3 channels"), "{err}");
    let one = Tensor::zeros((1, 2, 1, 1), candle_core::DType::F32, &dev).unwrap();
    let err = sync_batch_norm(&one, &w, &w, Arc::new(Identity), 1e-5, false).unwrap_err();
    assert!(err.to_string().contains("more than one value"), "{err}");
}

/// A whole network with synchronized batch norm (every BN layer of a ResNet-18
/// DeepLabV3+, sharing one group) on 2 simulated ranks equals the network on the full
/// batch: outputs, running statistics and the parameter gradients summed over ranks.
mod network {
    use super::*;
    use crate::common::{network as build_network, small_config};
    use reco_models::{init_seeded, named_vars, NetworkKind, SyncBn};
    use std::collections::BTreeMap;

    const B: usize = 2;
    const SIDE: usize = 40;

    struct Out {
        pred: Vec<f64>,
        rep: Vec<f64>,
        /// Every variable after the forward (running statistics updated), by name.
        vars: BTreeMap<String, Vec<f64>>,
        /// The gradient of every trainable variable, by name.
        grads: BTreeMap<String, Vec<f64>>,
    }

    fn flat(t: &Tensor) -> Vec<f64> {
        t.flatten_all().unwrap().to_vec1().unwrap()
    }

    /// Loss `Σ pred·r + Σ rep·s` over the images `lo..lo+n` of the fixed batch.
    fn run(lo: usize, n: usize, sync: Option<SyncBn>) -> Out {
        let dev = Device::Cpu;
        let (vm, net) = build_network(NetworkKind::DeepLabV3Plus, &small_config(3, 4), DType::F64);
        let net = net.with_sync_bn(sync);
        init_seeded(&vm, 7).unwrap();
        let per = 3 * SIDE * SIDE;
        let all = random(2 * B * per, 11, 0.0, 1.0);
        let x = Tensor::from_vec(
            all[lo * per..(lo + n) * per].to_vec(),
            (n, 3, SIDE, SIDE),
            &dev,
        )
        .unwrap();
        let (pred, rep) = net.forward_t(&x, true).unwrap();
        let weights = |t: &Tensor, seed: u64| {
            let (_, c, h, w) = t.dims4().unwrap();
            let per = c * h * w;
            let all = random(2 * B * per, seed, 0.0, 1.0);
            Tensor::from_vec(all[lo * per..(lo + n) * per].to_vec(), t.shape(), &dev).unwrap()
        };
        let loss = (pred.mul(&weights(&pred, 12)).unwrap().sum_all().unwrap()
            + rep.mul(&weights(&rep, 13)).unwrap().sum_all().unwrap())
        .unwrap();
        let grads = loss.backward().unwrap();
        let named = named_vars(&vm).unwrap();
        Out {
            pred: flat(&pred),
            rep: flat(&rep),
            vars: named
                .iter()
                .map(|(k, v)| (k.clone(), flat(v.as_tensor())))
                .collect(),
            grads: named
                .iter()
                .filter_map(|(k, v)| grads.get(v.as_tensor()).map(|g| (k.clone(), flat(g))))
                .collect(),
        }
    }

    #[test]
    fn two_ranks_with_sync_bn_equal_one_rank_with_the_whole_batch() {
        let want = run(0, 2 * B, None);
        let shared = Arc::new(Shared {
            slots: Mutex::new(vec![None; 2]),
            barrier: Barrier::new(2),
            calls: AtomicUsize::new(0),
        });
        let got: Vec<Out> = std::thread::scope(|s| {
            let handles: Vec<_> = (0..2)
                .map(|rank| {
                    let reducer: Arc<dyn StatsAllReduce> = Arc::new(FakeRank {
                        rank,
                        shared: shared.clone(),
                    });
                    s.spawn(move || run(rank * B, B, Some(SyncBn::new(reducer))))
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        // Every BN layer all-reduces once forward and once backward.
        let bn_layers = want
            .vars
            .keys()
            .filter(|k| k.ends_with("running_mean"))
            .count();
        assert_eq!(shared.calls.load(Ordering::SeqCst), 2 * 2 * bn_layers);

        let cat = |f: fn(&Out) -> &Vec<f64>| got.iter().flat_map(f).copied().collect::<Vec<_>>();
        assert_close("prediction", &cat(|o| &o.pred), &want.pred, 1e-10);
        assert_close("representation", &cat(|o| &o.rep), &want.rep, 1e-10);
        for (name, value) in &want.vars {
            for o in &got {
                assert_close(name, &o.vars[name], value, 1e-10);
            }
        }
        assert!(!want.grads.is_empty());
        for (name, g) in &want.grads {
            let summed: Vec<f64> = (0..g.len())
                .map(|i| got.iter().map(|o| o.grads[name][i]).sum())
                .collect();
            assert_close(&format!("gradient of {name}"), &summed, g, 1e-10);
        }
        // Without the group each rank normalises with its own statistics: different.
        let alone = run(0, B, None);
        let diff = alone
            .pred
            .iter()
            .zip(&want.pred)
            .fold(0.0f64, |m, (a, b)| m.max((a - b).abs()));
        assert!(diff > 1e-6, "local and global statistics coincide: {diff}");
    }

    #[test]
    fn evaluation_mode_never_calls_the_group() {
        let shared = Arc::new(Shared {
            slots: Mutex::new(vec![None; 1]),
            barrier: Barrier::new(1),
            calls: AtomicUsize::new(0),
        });
        let reducer: Arc<dyn StatsAllReduce> = Arc::new(FakeRank {
            rank: 0,
            shared: shared.clone(),
        });
        let dev = Device::Cpu;
        let (_vm, net) = build_network(NetworkKind::DeepLabV2, &small_config(3, 4), DType::F32);
        let net = net.with_sync_bn(Some(SyncBn::new(reducer)));
        let x = Tensor::zeros((1, 3, SIDE, SIDE), DType::F32, &dev).unwrap();
        net.forward_no_grad(&x, false).unwrap();
        net.forward_t(&x, false).unwrap();
        assert_eq!(shared.calls.load(Ordering::SeqCst), 0);
        // Train mode does (one rank: its own statistics, through the group).
        net.forward_no_grad(&x, true).unwrap();
        assert!(shared.calls.load(Ordering::SeqCst) > 0);
        assert!(net.sync_bn().is_some());
    }
}
