//! Per-layer convolution times against PyTorch: where the DeepLabV3+ train step's
//! convolution time goes, layer geometry by layer geometry.
//!
//! Reads the layer list that `benches/pytorch_conv_layers.py` writes (every distinct
//! convolution of the network with PyTorch's forward, input-gradient and weight-gradient
//! times on this machine), times the same three kernels of `reco_models::ops` (median of
//! `--runs` after a warm-up) and prints one table: the gemm each kernel runs per image
//! (M x N x K), ours and PyTorch's times, the achieved GFLOP/s and totals weighted by how
//! many layers share the geometry.
//!
//! `python crates/models/benches/pytorch_conv_layers.py --out target/conv_layers.json`
//! `cargo bench -p reco-models --bench conv_layers -- --layers target/conv_layers.json [--runs 5]`

use std::time::Instant;

use candle_core::{Device, Tensor};
use reco_models::ops::{conv2d, conv2d_input_grad, conv2d_weight_grad, ConvParams};
use reco_util::bench::median;
use serde::Deserialize;

#[derive(Deserialize)]
struct LayerFile {
    meta: serde_json::Value,
    layers: Vec<Layer>,
}

#[derive(Deserialize)]
struct Layer {
    input: [usize; 4],
    weight: [usize; 4],
    stride: usize,
    padding: usize,
    dilation: usize,
    layers: usize,
    torch_forward_ms: f64,
    torch_input_grad_ms: f64,
    torch_weight_grad_ms: f64,
}

fn parse_args() -> (String, usize) {
    let (mut path, mut runs) = (None, 5);
    let mut it = std::env::args().skip(1);
    while let Some(a) = it.next() {
        let mut value = || it.next().unwrap_or_else(|| panic!("{a} needs a value"));
        match a.as_str() {
            "--layers" => path = Some(value()),
            "--runs" => runs = value().parse().expect("--runs takes a number"),
            "--bench" => {}
            other => panic!("unknown argument {other}"),
        }
    }
    let path = path.unwrap_or_else(|| {
        panic!("--layers FILE is required: write it with benches/pytorch_conv_layers.py")
    });
    (path, runs)
}

fn median_ms(runs: usize, mut f: impl FnMut()) -> f64 {
    f();
    let times: Vec<f64> = (0..runs)
        .map(|_| {
            let t = Instant::now();
            f();
            1e3 * t.elapsed().as_secs_f64()
        })
        .collect();
    median(times)
}

fn main() {
    reco_util::threads::single_candle_elementwise_pool();
    let (path, runs) = parse_args();
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    let file: LayerFile = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{path}: {e}"));
    println!(
        "reco-models conv kernels vs PyTorch ({}), f32, {} threads, median of {runs}; \
         gemm per image: M x N x K of the forward (dX: K x N x M, dW: M x K x N)",
        file.meta,
        candle_core::utils::get_num_threads()
    );
    println!(
        "| input | kernel | s/p/d | layers | gemm M x N x K | fwd ms (torch) | dX ms (torch) | dW ms (torch) | fwd GFLOP/s (torch) | ours / torch, 3 kernels |"
    );
    println!("| --- | --- | --- | ---: | --- | ---: | ---: | ---: | ---: | ---: |");
    let dev = Device::Cpu;
    let (mut ours_total, mut torch_total) = ([0.0; 3], [0.0; 3]);
    for l in &file.layers {
        let p = ConvParams {
            stride: l.stride,
            padding: l.padding,
            dilation: l.dilation,
        };
        let x = Tensor::randn(0f32, 1.0, &l.input[..], &dev).expect("input");
        let w = Tensor::randn(0f32, 0.01, &l.weight[..], &dev).expect("weight");
        let y = conv2d(&x, &w, p).expect("conv2d");
        let g = Tensor::randn(0f32, 1.0, y.shape(), &dev).expect("gradient");
        let fwd = median_ms(runs, || {
            conv2d(&x, &w, p).expect("conv2d");
        });
        let input_hw = (l.input[2], l.input[3]);
        let dx = median_ms(runs, || {
            conv2d_input_grad(&g, &w, p, input_hw).expect("input gradient");
        });
        let dw = median_ms(runs, || {
            conv2d_weight_grad(&x, &g, p, l.weight[2]).expect("weight gradient");
        });
        let ours = [fwd, dx, dw];
        let torch = [
            l.torch_forward_ms,
            l.torch_input_grad_ms,
            l.torch_weight_grad_ms,
        ];
        let (_, _, ho, wo) = y.dims4().expect("4-D output");
        let (m, n, k) = (
            l.weight[0],
            ho * wo,
            l.weight[1] * l.weight[2] * l.weight[3],
        );
        let gflop = 2.0 * (l.input[0] * m * n * k) as f64 * 1e-9;
        for i in 0..3 {
            ours_total[i] += l.layers as f64 * ours[i];
            torch_total[i] += l.layers as f64 * torch[i];
        }
        println!(
            "| {:?} | {:?} | {}/{}/{} | {} | {m} x {n} x {k} | {:.2} ({:.2}) | {:.2} ({:.2}) | {:.2} ({:.2}) | {:.0} ({:.0}) | {:.2} |",
            l.input,
            l.weight,
            l.stride,
            l.padding,
            l.dilation,
            l.layers,
            fwd,
            torch[0],
            dx,
            torch[1],
            dw,
            torch[2],
            gflop / fwd * 1e3,
            gflop / torch[0] * 1e3,
            ours.iter().sum::<f64>() / torch.iter().sum::<f64>(),
        );
    }
    println!(
        "| all layers (x count) | | | | | {:.0} ({:.0}) | {:.0} ({:.0}) | {:.0} ({:.0}) | | {:.2} |",
        ours_total[0],
        torch_total[0],
        ours_total[1],
        torch_total[1],
        ours_total[2],
        torch_total[2],
        ours_total.iter().sum::<f64>() / torch_total.iter().sum::<f64>(),
    );
}
