"""Time the original ReCo loss (lorenmt/reco, module_list.compute_reco_loss) on the
inputs that `cargo bench -p reco-loss --bench reco_bench -- --dump SHAPE FILE` writes.

The original code is not copied here: pass the directory of a checkout of
https://github.com/lorenmt/reco (it needs torch and numpy; torchvision is stubbed if absent).

    python reco_original.py --reco /path/to/reco --inputs /tmp/voc.safetensors --runs 3

Each invocation is one process, so ru_maxrss is the peak of this shape alone.
"""
import argparse
import resource
import sys
import time
import types

import numpy as np
import torch
from safetensors.torch import load_file

parser = argparse.ArgumentParser()
parser.add_argument("--reco", required=True, help="directory containing module_list.py")
parser.add_argument("--inputs", required=True)
parser.add_argument("--runs", type=int, default=3)
args = parser.parse_args()

try:
    import torchvision  # noqa: F401
except ImportError:  # module_list imports torchvision.transforms.functional at top level only
    tv = types.ModuleType("torchvision")
    tv.transforms = types.ModuleType("torchvision.transforms")
    tv.transforms.functional = types.ModuleType("torchvision.transforms.functional")
    sys.modules.update({"torchvision": tv, "torchvision.transforms": tv.transforms,
                        "torchvision.transforms.functional": tv.transforms.functional})
sys.path.insert(0, args.reco)
from module_list import compute_reco_loss  # noqa: E402

t = load_file(args.inputs)
base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
times, fwd, losses = [], [], []
for run in range(args.runs + 1):
    torch.manual_seed(run)
    np.random.seed(run)
    rep = t["rep"].clone().requires_grad_(True)
    start = time.perf_counter()
    loss = compute_reco_loss(rep, t["label"], t["mask"], t["prob"], strong_threshold=0.97,
                             temp=0.5, num_queries=256, num_negatives=512)
    mid = time.perf_counter()
    loss.backward()
    end = time.perf_counter()
    if run > 0:  # run 0 warms up
        fwd.append(mid - start)
        times.append(end - start)
        losses.append(loss.item())
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
print(f"torch {torch.__version__}, threads {torch.get_num_threads()}, runs {args.runs}")
print(f"forward median {1e3 * float(np.median(fwd)):.0f} ms, forward+backward median "
      f"{1e3 * float(np.median(times)):.0f} ms, peak RSS {peak:.0f} MB (inputs only {base:.0f} MB), "
      f"mean loss {np.mean(losses):.4f}")
