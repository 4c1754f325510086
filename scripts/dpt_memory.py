"""Activation memory of DPT on DINOv2 in one ReCo train step, on paper (f32).

    python3 scripts/dpt_memory.py [--batch 10] [--crop 518] [--output-dim 256]

The step runs the student with a graph on the labelled and the mixed unlabelled batch
(2 x batch images whose activations stay alive until the backward pass; the teacher's
pass keeps none). Counted per image, in elements:

- ours (candle keeps every node of the graph until backward): the composed layer norm
  (5 N·D per norm: centred, square, normalised, scaled, shifted), the qkv product and
  bias (6 N·D), the q, k, v copies and the scaled q (4 N·D), the softmax (on the CPU the
  fused op of `reco_models::ops::softmax_last_dim`: 2 H·N², the logits and the output;
  on other devices the composition: 4 H·N², logits, shifted, exp, normalised),
  attention output, its transpose and the projection with bias (4 N·D), two layer scales
  and residuals (4 N·D), fc1 with bias (8 N·D), the exact GELU (on the CPU one op that
  keeps nothing new; on other devices composed: 20 N·D), fc2 with bias (2 N·D):
  42 N·D + 2 H·N² per block on the CPU, 58 N·D + 4 H·N² on other devices;
- PyTorch eager (UniMatch V2 without xFormers, math attention): the tensors autograd
  saves, about 20 N·D + H·N² per block (inputs of the norms and linears, q, k, v, the
  softmax output shared with attn @ v, the GELU input).

The decoder and heads are counted by their output maps (both sides alike); ReCo's loss
on the representation adds its [2B, D, 8h, 8w] map. No optimiser state, weights or the
CUDA context are included.
"""

import argparse

SIZES = {
    "dinov2-s": dict(D=384, depth=12, H=6, features=64, out=[48, 96, 192, 384]),
    "dinov2-b": dict(D=768, depth=12, H=12, features=128, out=[96, 192, 384, 768]),
    "dinov2-l": dict(D=1024, depth=24, H=16, features=256, out=[256, 512, 1024, 1024]),
}


def decoder_elements(s, g, classes, output_dim):
    f, oc = s["features"], s["out"]
    sizes = [4 * g, 2 * g, g, (g + 1) // 2]
    n = 0
    for c, side in zip(oc, sizes):
        n += 2 * c * side * side  # projection (at the grid) and resample, counted at side
        n += f * side * side  # layerN_rn
    for side in sizes:
        n += 10 * f * side * side  # fusion: two residual units (relu, conv, relu, conv, add)
    top = 8 * g
    n += 3 * f * top * top  # last resize, out_conv, relu
    n += (f + classes) * top * top  # classifier
    n += (f + output_dim) * top * top  # representation head
    return n


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--batch", type=int, default=10)
    ap.add_argument("--crop", type=int, default=518)
    ap.add_argument("--classes", type=int, default=21)
    ap.add_argument("--output-dim", type=int, default=256)
    a = ap.parse_args()
    g = a.crop // 14
    n_tok = g * g + 1
    images = 2 * a.batch
    print(f"{a.batch} + {a.batch} crops of {a.crop} ({g}x{g} patches, {n_tok} tokens), f32, GB = 1e9 bytes")
    print("| encoder | per block per image: ours GPU / CPU (MB) | PyTorch eager (MB) | encoder, whole step: ours GPU / CPU (GB) | PyTorch (GB) | decoder + heads, whole step (GB) |")
    print("| --- | ---: | ---: | ---: | ---: | ---: |")
    for name, s in SIZES.items():
        nd, hnn = n_tok * s["D"], s["H"] * n_tok * n_tok
        gpu, cpu = 58 * nd + 4 * hnn, 42 * nd + 2 * hnn
        torch = 20 * nd + hnn
        dec = decoder_elements(s, g, a.classes, a.output_dim)
        step = lambda e: 4 * e * s["depth"] * images / 1e9
        print(
            f"| {name} | {4 * gpu / 1e6:.0f} / {4 * cpu / 1e6:.0f} | {4 * torch / 1e6:.0f} | "
            f"{step(gpu):.1f} / {step(cpu):.1f} | {step(torch):.1f} | {4 * dec * images / 1e9:.1f} |"
        )


if __name__ == "__main__":
    main()
