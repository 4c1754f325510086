"""Per-layer convolution times of PyTorch (CPU, eager, f32) on the DeepLabV3+ of
`pytorch_deeplab.py`, for `benches/conv_layers.rs` to compare against.

Records every Conv2d the network runs in one train-mode forward of `--batch` crops of
`--size` (forward hooks), groups identical geometries, and times each geometry's forward,
input gradient and weight gradient (`aten.convolution_backward` with one output each),
median of `--runs` after a warm-up. Writes a JSON list (one entry per geometry: shapes,
stride, padding, dilation, how many layers have it, the three times in ms) to `--out`:

    python crates/models/benches/pytorch_conv_layers.py --out target/conv_layers.json
    cargo bench -p reco-models --bench conv_layers -- --layers target/conv_layers.json

Needs torch and torchvision (a scratch venv; never part of CI).
"""
import argparse
import json
import statistics
import time

import torch
import torchvision

from pytorch_deeplab import DeepLabv3Plus


def layer_geometries(backbone, batch, size):
    model = DeepLabv3Plus(getattr(torchvision.models, backbone)())
    seen = {}

    def hook(module, inputs, _output):
        x = inputs[0]
        key = (tuple(x.shape), tuple(module.weight.shape), module.stride[0], module.padding[0],
               module.dilation[0])
        seen.setdefault(key, []).append(module)

    for m in model.modules():
        if isinstance(m, torch.nn.Conv2d):
            m.register_forward_hook(hook)
    model.train()
    with torch.no_grad():
        model(torch.zeros(batch, 3, size, size))
    return [(key, len(mods)) for key, mods in seen.items()]


def median_ms(fn, runs):
    fn()
    times = []
    for _ in range(runs):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return 1e3 * statistics.median(times)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--backbone", default="resnet101")
    ap.add_argument("--batch", type=int, default=2)
    ap.add_argument("--size", type=int, default=321)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    torch.manual_seed(0)
    rows = []
    for (xs, ws, stride, padding, dilation), count in layer_geometries(args.backbone, args.batch, args.size):
        x = torch.randn(xs)
        w = torch.randn(ws) * 0.01
        y = torch.nn.functional.conv2d(x, w, None, stride, padding, dilation)
        g = torch.randn(y.shape)

        def backward(mask):
            return torch.ops.aten.convolution_backward(g, x, w, None, [stride] * 2, [padding] * 2,
                                                       [dilation] * 2, False, [0, 0], 1, mask)

        rows.append({
            "input": list(xs), "weight": list(ws), "stride": stride, "padding": padding, "dilation": dilation,
            "layers": count,
            "torch_forward_ms": median_ms(lambda: torch.nn.functional.conv2d(x, w, None, stride, padding, dilation),
                                          args.runs),
            "torch_input_grad_ms": median_ms(lambda: backward([True, False, False]), args.runs),
            "torch_weight_grad_ms": median_ms(lambda: backward([False, True, False]), args.runs),
        })
        r = rows[-1]
        print(f"{xs} {ws} s{stride} p{padding} d{dilation} x{count}: fwd {r['torch_forward_ms']:.2f} "
              f"dx {r['torch_input_grad_ms']:.2f} dw {r['torch_weight_grad_ms']:.2f} ms", flush=True)
    meta = {"torch": torch.__version__, "threads": torch.get_num_threads(), "backbone": args.backbone,
            "batch": args.batch, "size": args.size, "runs": args.runs}
    with open(args.out, "w") as f:
        json.dump({"meta": meta, "layers": rows}, f, indent=1)


if __name__ == "__main__":
    main()
