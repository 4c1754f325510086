#!/usr/bin/env python3
"""CPU time of a training step by category, from a `perf record --call-graph dwarf`
profile of `benches/deeplab.rs --only train` (docs/benchmarks.md, "Issue 27").

    CARGO_PROFILE_BENCH_DEBUG=line-tables-only cargo bench -p reco-models --bench deeplab \\
        --no-run --target-dir target/prof
    perf record -F 250 --call-graph dwarf,32768 -o step.data \\
        target/prof/release/deps/deeplab-<hash> --only train --runs 3
    python3 scripts/profile-step.py step.data --steps 4 [--rate 250]

`--steps` counts every step the process ran (the warm-up too); building the network
(random initialisation) is left out. Each sample is put in the first category whose rule
matches, from its call stack (candle runs the ops and the backward pass on the calling
thread, so that thread's stacks name the op) or, on the thread pool's workers, whose
stacks end in a closure, from the source file of the sampled instruction; the bodies of
our kernels' parallel loops are one category, since the linker folds their identical
`call_mut` shims together. CPU seconds
per step are samples / rate / steps, summed over threads; the step's wall time is
shorter by what runs in parallel.
"""
import argparse
import collections
import subprocess
import sys

# (category, test on (stack symbols leaf first, leaf source file)); first match wins.
KERNEL_FAULT = ("asm_exc_page_fault", "exc_page_fault")
# Stands for the leaf symbol of a sample taken in the kernel (not a page fault).
KERNEL_LEAF = "[kernel]"
RULES = [
    ("(left out) building the network", lambda st, src: any("Network::new" in f for f in st)),
    ("page faults and the kernel's zeroing of fresh pages",
     lambda st, src: any(f in KERNEL_FAULT for f in st)),
    ("gemm: micro-kernel (the multiply-adds)", lambda st, src: "microkernel" in st[0]),
    ("gemm: packing and driver", lambda st, src: any(f.startswith("gemm") for f in st)),
    # The body of a `par_iter` closure, reached through one generic `call_mut` shim that
    # the linker folds across kernels, so that neither its name nor its line tells which.
    ("our kernels' parallel loops (im2col, col2im, batch norm, copies; not told apart)",
     lambda st, src: st[0].startswith("core::ops::function::impls::")),
    ("convolution data movement (im2col, col2im, layouts, taps)",
     lambda st, src: src in ("conv.rs", "taps.rs", "valid_taps.rs", "weight_grad.rs")),
    ("batch norm (+ ReLU), fused", lambda st, src: src == "batch_norm.rs"
     or any("batch_norm" in f for f in st)),
    ("residual add + ReLU, fused", lambda st, src: src == "add_relu.rs" or any("add_relu" in f for f in st)),
    ("max pool", lambda st, src: src == "pool.rs" or any("ops::pool" in f for f in st)),
    ("bilinear resize", lambda st, src: src == "resize.rs" or any("resize" in f for f in st)),
    ("convolution bias", lambda st, src: src == "bias.rs" or any("ChannelBias" in f for f in st)),
    ("backward: gradient sums (zeros_like + add)",
     lambda st, src: any("backprop" in f for f in st)
     and (any("zeros_like" in f or "GradStore" in f for f in st) or direct_add_in_backward(st))),
    ("backward: candle's other ops", lambda st, src: any("backprop" in f for f in st)
     and any(f.startswith("candle_core") for f in st)),
    ("forward: candle's element-wise ops, cat, copies", lambda st, src: any(f.startswith("candle_core") for f in st)),
    ("memset / memcpy", lambda st, src: st[0].startswith(("__memset", "__memmove", "__memcpy"))),
    ("kernel: scheduling, wake-ups, other system calls", lambda st, src: st[0] == KERNEL_LEAF),
    ("thread pool: spinning and dispatch (rayon, crossbeam)",
     lambda st, src: st[0].startswith(("rayon", "crossbeam", "<rayon", "<crossbeam", "std::sys::sync"))
     or src in ("sleep.rs", "registry.rs", "latch.rs", "job.rs", "deque.rs")),
]


def direct_add_in_backward(st):
    return any(f.endswith("candle_core::tensor::Tensor::add") and "backprop" in st[i + 1]
               for i, f in enumerate(st[:-1]))


def perf_script(data, fields, extra):
    cmd = ["perf", "script", "-i", data, "-F", fields, "--no-inline"] + extra
    return subprocess.run(cmd, capture_output=True, text=True, check=True).stdout


def samples(data):
    """Per sample: (stack symbols, leaf first; source file of the leaf)."""
    stacks = {}
    for block in perf_script(data, "tid,time,ip,sym", []).split("\n\n"):
        lines = [l.strip() for l in block.strip().splitlines()]
        if len(lines) < 2:
            continue
        key = tuple(lines[0].split()[:2])
        frames = [l.split(None, 1) for l in lines[1:]]
        stack = [f[1] if len(f) > 1 else "?" for f in frames]
        if frames[0][0].startswith("ffffffff") and not any(f in KERNEL_FAULT for f in stack):
            stack[0] = KERNEL_LEAF
        stacks[key] = stack
    # "tid time: ip sym" per sample, then its source line, indented.
    srcs, key = {}, None
    for line in perf_script(data, "tid,time,ip,sym,srcline", ["-G"]).splitlines():
        if line and not line[0].isspace():
            key = tuple(line.split()[:2])
            srcs.setdefault(key, "")
        elif key is not None and not srcs[key] and ":" in line:
            srcs[key] = line.strip().rsplit(":", 1)[0]
    return [(stack, srcs.get(key, "")) for key, stack in stacks.items()]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("data")
    ap.add_argument("--steps", type=int, required=True, help="steps the process ran, warm-up included")
    ap.add_argument("--rate", type=float, default=250.0, help="perf record -F")
    args = ap.parse_args()
    counts = collections.Counter()
    for stack, src in samples(args.data):
        name = next((n for n, rule in RULES if rule(stack, src)), "other")
        counts[name] += 1
    left_out = counts.pop("(left out) building the network", 0)
    total = sum(counts.values())
    print(f"| category | CPU s per step | share |")
    print("| --- | ---: | ---: |")
    for name, n in counts.most_common():
        print(f"| {name} | {n / args.rate / args.steps:.3f} | {100 * n / total:.1f} % |")
    print(f"| **all** | **{total / args.rate / args.steps:.3f}** | {total} samples; {left_out} left out |")


if __name__ == "__main__":
    main()
