#!/usr/bin/env python3
"""The last step of scripts/compare-original.sh: one table of what both runs did.

Reads, for each seed, `seedS/eval_{orig,ours}.{whole,pad513}.json` (`trainer eval --json`
of both final teachers), `seedS/{orig,ours}.secs`, the original's per-step loss terms
`seedS/orig_losses.jsonl` (written by the patched copy) and ours `seedS/ours/metrics.jsonl`,
and our run's `seedS/ours/config.json`. Prints

1. mIoU per seed and mean ± std (sample standard deviation) for both evaluations;
2. the loss terms (supervised, unsupervised, ReCo) averaged over windows of --loss-every
   steps at the same steps on both sides, mean over seeds;
3. the settings: what the script asked for, what ours recorded in its config.json and
   what the patched original hard-codes (read from its source), and every setting that
   does not match;

and writes the same as `summary.md` and `summary.json` in --out. Standard library only:
it runs under the Python that runs the original.
"""

import argparse
import json
import math
import re
import statistics
import subprocess
import sys
from pathlib import Path


def fail(msg):
    print(f"summarise: {msg}", file=sys.stderr)
    sys.exit(1)


def read_json(path):
    try:
        return json.loads(Path(path).read_text())
    except (OSError, ValueError) as e:
        fail(f"cannot read {path}: {e}")


def read_jsonl(path):
    rows = []
    try:
        with open(path) as f:
            for n, line in enumerate(f, 1):
                line = line.strip()
                if line:
                    try:
                        rows.append(json.loads(line))
                    except ValueError as e:
                        fail(f"{path}:{n}: not JSON ({e})")
    except OSError as e:
        fail(f"cannot read {path}: {e}")
    return rows


def mean_std(xs):
    xs = [x for x in xs if x is not None and not math.isnan(x)]
    if not xs:
        return None, None
    return statistics.fmean(xs), (statistics.stdev(xs) if len(xs) > 1 else 0.0)


def fmt_ms(m, s, scale=1.0, digits=2):
    if m is None:
        return "-"
    return f"{m * scale:.{digits}f} ± {s * scale:.{digits}f}"


def fmt(x, scale=1.0, digits=2):
    return "-" if x is None else f"{x * scale:.{digits}f}"


def train_losses(rows):
    """{step: {sup, unsup, reco}} of the training rows (ours mixes in eval rows)."""
    out = {}
    for r in rows:
        if r.get("kind", "train") != "train" or "step" not in r:
            continue
        out[int(r["step"])] = {k: float(r[k]) for k in ("sup", "unsup", "reco") if k in r}
    return out


def window_means(losses, start, end):
    """Mean of each term over steps start..=end; None where a side has no step there."""
    steps = [s for s in range(start, end + 1) if s in losses]
    if not steps:
        return None
    return {
        k: statistics.fmean(losses[s][k] for s in steps if k in losses[s])
        for k in ("sup", "unsup", "reco")
    }


def source_settings(orig):
    """Values the patched original hard-codes, read from its source (None if not found)."""
    found = {}
    try:
        train = (orig / "train_semisup.py").read_text()
        data = (orig / "build_data.py").read_text()
    except OSError as e:
        print(f"summarise: cannot read the patched original ({e}); its hard-coded values are not checked",
              file=sys.stderr)
        return found
    m = re.search(r"optim\.SGD\(.*momentum=([0-9.eE-]+)", train)
    found["momentum"] = float(m.group(1)) if m else None
    found["nesterov"] = bool(re.search(r"optim\.SGD\(.*nesterov=True", train))
    m = re.search(r"EMA\(model,\s*([0-9.eE-]+)\)", train)
    found["ema_decay"] = float(m.group(1)) if m else None
    m = re.search(r"PolyLR\(.*power=([0-9.eE-]+)", train)
    found["poly_power"] = float(m.group(1)) if m else None
    m = re.search(r"--weight_decay',\s*default=([0-9.eE-]+)", train)
    found["weight_decay"] = float(m.group(1)) if m else None
    # the Pascal branch of BuildDataLoader: the first scale_size after `dataset == 'pascal'`
    pascal = data.find("dataset == 'pascal'")
    m = re.search(r"self\.scale_size\s*=\s*\(([0-9.]+),\s*([0-9.]+)\)", data[pascal:]) if pascal >= 0 else None
    found["scale_min"], found["scale_max"] = (float(m.group(1)), float(m.group(2))) if m else (None, None)
    # the colour jitter actually applied (an uncommented ColorJitter line)
    m = re.search(r"^\s*color_transform = transforms\.ColorJitter\(.*\(-?([0-9.]+),\s*([0-9.]+)\)\)", data, re.M)
    found["hue_jitter"] = float(m.group(2)) if m else None
    return found


# What the script asked for (its --setting names) -> our config.json key.
OURS_KEY = {
    "iterations": "iters",
    "epoch_iters": "epoch_iters",
    "batch_size": "batch_size",
    "crop_size": "crop_size",
    "backbone": "backbone",
    "lr": "lr",
    "num_queries": "num_queries",
    "num_negatives": "num_negatives",
    "output_dim": "output_dim",
    "temp": "temp",
    "weak_threshold": "weak_threshold",
    "strong_threshold": "strong_threshold",
}

# The original's hard-coded values -> our config.json key.
SOURCE_KEY = {
    "momentum": "momentum",
    "ema_decay": "ema_decay",
    "weight_decay": "weight_decay",
    "scale_min": "scale_min",
    "scale_max": "scale_max",
    "hue_jitter": "hue_jitter",
}

# Where the two sides differ by construction (no flag can align them).
BY_DESIGN = [
    "random streams: weight initialisation, augmentation, batch order, ClassMix masks and "
    "ReCo's query/key sampling come from torch/Python/NumPy generators on one side and ours "
    "on the other, so seed S of one side is not seed S of the other",
    "floating-point summation order: torch's and candle's kernels (and thread counts) add in "
    "different orders; the runs drift apart from step 1 and are compared as distributions",
]


def same(a, b):
    try:
        return math.isclose(float(a), float(b), rel_tol=1e-6, abs_tol=1e-12)
    except (TypeError, ValueError):
        return str(a) == str(b)


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", required=True, type=Path)
    p.add_argument("--seeds", required=True, nargs="+", type=int)
    p.add_argument("--iters", required=True, type=int)
    p.add_argument("--loss-every", required=True, type=int)
    p.add_argument("--orig-source", required=True, type=Path, help="the unpatched checkout (for its commit)")
    p.add_argument("--setting", action="append", default=[], help="k=v the script used for both sides")
    a = p.parse_args()
    if a.loss_every < 1:
        fail("--loss-every must be at least 1")

    asked = {}
    for kv in a.setting:
        if "=" not in kv:
            fail(f"--setting {kv!r}: expected key=value")
        k, v = kv.split("=", 1)
        asked[k] = v

    lines = []

    def out(s=""):
        print(s)
        lines.append(s)

    try:
        commit = subprocess.run(["git", "-C", str(a.orig_source), "rev-parse", "--short", "HEAD"],
                                capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        commit = "not a git checkout"
    out(f"# compare-original: {len(a.seeds)} seeds x {a.iters} steps (original at {commit})")
    out()

    # 1. mIoU
    per_seed, result = [], {"seeds": {}, "commit": commit}
    for seed in a.seeds:
        d = a.out / f"seed{seed}"
        row = {"seed": seed}
        for side in ("orig", "ours"):
            for ev in ("whole", "pad513"):
                row[f"{side}_{ev}"] = read_json(d / f"eval_{side}.{ev}.json").get("miou")
            try:
                row[f"{side}_secs"] = float((d / f"{side}.secs").read_text().strip())
            except (OSError, ValueError):
                row[f"{side}_secs"] = None
        per_seed.append(row)
        result["seeds"][seed] = row

    out("## mIoU of the final mean teachers (one evaluator: `trainer eval`)")
    out()
    out("| seed | original (whole) | ours (whole) | original (pad 513) | ours (pad 513) | original s | ours s |")
    out("| --- | ---: | ---: | ---: | ---: | ---: | ---: |")
    for r in per_seed:
        out(f"| {r['seed']} | {fmt(r['orig_whole'], 100)} | {fmt(r['ours_whole'], 100)} | "
            f"{fmt(r['orig_pad513'], 100)} | {fmt(r['ours_pad513'], 100)} | "
            f"{fmt(r['orig_secs'], digits=0)} | {fmt(r['ours_secs'], digits=0)} |")
    stats = {k: mean_std([r[k] for r in per_seed])
             for k in ("orig_whole", "ours_whole", "orig_pad513", "ours_pad513", "orig_secs", "ours_secs")}
    out(f"| mean ± std | {fmt_ms(*stats['orig_whole'], 100)} | {fmt_ms(*stats['ours_whole'], 100)} | "
        f"{fmt_ms(*stats['orig_pad513'], 100)} | {fmt_ms(*stats['ours_pad513'], 100)} | "
        f"{fmt_ms(*stats['orig_secs'], digits=0)} | {fmt_ms(*stats['ours_secs'], digits=0)} |")
    result["mean_std"] = stats
    out()
    for ev, name in (("whole", "whole images"), ("pad513", "padded to 513")):
        (mo, so), (mu, su) = stats[f"orig_{ev}"], stats[f"ours_{ev}"]
        if mo is None or mu is None:
            continue
        # the standard error of a difference of two means of n seeds each (Welch)
        n = len(a.seeds)
        diff, se = abs(mu - mo) * 100, math.sqrt((so * so + su * su) / n) * 100
        if se == 0:
            verdict = "one seed: no noise estimate"
        else:
            verdict = "within" if diff <= 2 * se else "beyond"
            verdict = f"{diff / se:.2f} standard errors: {verdict} seed noise (2 s.e.)"
        out(f"{name}: means differ by {diff:.2f} points, standard error of the difference "
            f"{se:.2f} points; {verdict}")
    out()

    # 2. loss terms at matching steps
    orig_l = {s: train_losses(read_jsonl(a.out / f"seed{s}" / "orig_losses.jsonl")) for s in a.seeds}
    ours_l = {s: train_losses(read_jsonl(a.out / f"seed{s}" / "ours" / "metrics.jsonl")) for s in a.seeds}
    for s in a.seeds:
        for side, l in (("original", orig_l[s]), ("ours", ours_l[s])):
            if len(l) < a.iters:
                print(f"summarise: seed {s}: {side} logged {len(l)} of {a.iters} steps", file=sys.stderr)
    out(f"## Loss terms, mean over steps of each window and over the {len(a.seeds)} seeds (original / ours)")
    out()
    out("| steps | supervised | unsupervised | ReCo |")
    out("| --- | ---: | ---: | ---: |")
    windows = []
    for start in range(1, a.iters + 1, a.loss_every):
        end = min(start + a.loss_every - 1, a.iters)
        cells, w = [], {"steps": [start, end]}
        for term in ("sup", "unsup", "reco"):
            pair = []
            for side, ls in (("orig", orig_l), ("ours", ours_l)):
                vals = [m[term] for m in (window_means(ls[s], start, end) for s in a.seeds) if m]
                pair.append(mean_std(vals))
                w[f"{side}_{term}"] = pair[-1]
            cells.append(f"{fmt_ms(*pair[0], digits=3)} / {fmt_ms(*pair[1], digits=3)}")
        windows.append(w)
        out(f"| {start}-{end} | " + " | ".join(cells) + " |")
    result["loss_windows"] = windows
    out()

    # 3. settings
    ours_cfg = {s: read_json(a.out / f"seed{s}" / "ours" / "config.json") for s in a.seeds}
    first = ours_cfg[a.seeds[0]]
    cfg = first.get("config", {})
    mismatches = []
    out("## Settings")
    out()
    out("| setting | asked | ours (config.json) | original |")
    out("| --- | --- | --- | --- |")
    for k, v in asked.items():
        if k == "num_labels":
            ours_v = len(first.get("split", {}).get("labelled", []))
            orig_v = f"{ours_v} (the same split.json)"
        elif k == "threads":
            ours_v, orig_v = f"{v} (RAYON_NUM_THREADS)", f"{v} (torch.set_num_threads)"
        elif k in OURS_KEY:
            ours_v, orig_v = cfg.get(OURS_KEY[k]), f"{v} (flag or patch)"
            if not same(ours_v, v):
                mismatches.append(f"{k}: asked {v}, ours ran {ours_v}")
        else:
            ours_v, orig_v = "-", f"{v}"
        out(f"| {k} | {v} | {ours_v} | {orig_v} |")
    src = source_settings(a.out / "original")
    for k, ours_key in SOURCE_KEY.items():
        ov, uv = src.get(k), cfg.get(ours_key)
        out(f"| {k} | - | {uv} | {ov if ov is not None else 'not found in its source'} (its source) |")
        if ov is None:
            mismatches.append(f"{k}: not found in the original's source, not checked")
        elif not same(ov, uv):
            mismatches.append(f"{k}: original {ov}, ours {uv}")
    if src.get("nesterov") is False:
        mismatches.append("nesterov: the original's SGD is not nesterov; ours is")
    for s in a.seeds[1:]:
        other = {k: v for k, v in ours_cfg[s].get("config", {}).items() if k not in ("seed", "out", "split")}
        base = {k: v for k, v in cfg.items() if k not in ("seed", "out", "split")}
        if other != base:
            diff = sorted(k for k in set(other) | set(base) if other.get(k) != base.get(k))
            mismatches.append(f"seed {s}: our config differs from seed {a.seeds[0]}'s in {', '.join(diff)}")
    out()
    if mismatches:
        out("Settings that do not match:")
        for m in mismatches:
            out(f"- {m}")
    else:
        out("Every setting above matches.")
    out()
    out("Differences by design:")
    for d in BY_DESIGN:
        out(f"- {d}")
    result["mismatches"] = mismatches
    result["asked"] = asked
    result["original_source"] = src

    for name, text in (("summary.md", "\n".join(lines) + "\n"),
                       ("summary.json", json.dumps(result, indent=2, default=str) + "\n")):
        path = a.out / name
        tmp = path.with_suffix(path.suffix + ".tmp")
        tmp.write_text(text)
        tmp.replace(path)
    print(f"\nwritten: {a.out / 'summary.md'}, {a.out / 'summary.json'}")


if __name__ == "__main__":
    main()
