#!/usr/bin/env bash
# Train the ORIGINAL PyTorch ReCo (lorenmt/reco) and ours side by side on the same
# synthetic Pascal-VOC-layout data, the same labelled split and the same settings, for
# several seeds; evaluate both final mean teachers with one evaluator (ours: the
# original's teacher goes through `xtask convert`); print per seed and mean ± std, the
# loss terms at matching steps, and the settings that cannot be matched.
#
# Usage:
#   RECO_ORIG=/path/to/reco-checkout PYTHON=/path/to/python-with-torch \
#       [OUT=/tmp/compare-original] [SEEDS="0 1 2"] [ITERS=300] ... scripts/compare-original.sh
#
# Not run by CI: it needs torch + torchvision (CPU is enough) and tens of minutes of CPU.
# docs/fidelity.md records a run and what it means.
#
# Environment (defaults = the run recorded in docs/fidelity.md):
#   RECO_ORIG      checkout of https://github.com/lorenmt/reco (required; never modified:
#                  it is copied to $OUT/original and the copy is patched)
#   PYTHON         python with torch, torchvision, numpy, PIL        [python3]
#   TRAINER, XTASK our release binaries; when unset, built with
#                  `cargo build --release -p trainer -p xtask` from the repository root
#   OUT            scratch and results folder                       [/tmp/compare-original]
#   SEEDS          seeds; each seed has its own split (`trainer split --seed S`),
#                  handed to both sides                              ["0 1 2"]
#   ITERS          training steps (a multiple of EPOCH_ITERS)        [300]
#   EPOCH_ITERS    steps per epoch of the poly LR schedule (original: 200) [20]
#   BATCH          labelled = unlabelled batch size (original VOC: 10) [4]
#   CROP           square training crop (original VOC: 321)          [96]
#   BACKBONE       resnet18|resnet34|resnet50|resnet101 (original: resnet101) [resnet18]
#   LR             initial SGD learning rate (original: 2.5e-3)      [0.01]
#   NUM_LABELS     labelled images of the split                      [20]
#   NUM_QUERIES, NUM_NEGATIVES, OUTPUT_DIM   ReCo sizes (original: 256, 512, 256) [64 128 256]
#   TEMP, WEAK, STRONG   ReCo temperature, weak / strong threshold   [0.5 0.7 0.97]
#   N_TRAIN, N_VAL, IMAGE_SIZE   synthetic data: images and their side [160 40 128]
#   LOSS_EVERY     window of the loss table, steps                   [50]
#   THREADS        CPU threads of each side                          [nproc]
#   FORCE=1        redo runs whose outputs exist (default: reuse them)
#
# Patches applied to the copy of the original (scripts/compare_original/patch_original.py;
# each is an exact-text replacement that must find its anchor, else the script stops):
#   build_data.py: pandas is imported but never used (and not installed here)
#   build_data.py: data root: read the synthetic VOC-layout folder instead of dataset/pascal
#   build_data.py: crop: the comparison's crop size instead of 321
#   build_data.py: batch: the comparison's batch size (labelled = unlabelled) instead of 10
#   build_data.py: labelled split: the ids of `trainer split` (the original's sampler
#                  loops forever when one of its 21 classes never occurs)
#   build_data.py: iterations: an epoch of EPOCH_ITERS steps instead of 200
#   build_data.py: torchvision >= 0.11: ColorJitter.get_params returns parameters, not a
#                  transform; use the transform the original's own comment gives
#   network/deeplabv3/deeplabv3.py: ASPP input channels from the ResNet (2048 hard-coded;
#                  512 for ResNet-18/34, as ours; unchanged for ResNet-50/101)
#   network/deeplabv3/deeplabv3.py: low-level (layer1) channels from the ResNet (256
#                  hard-coded; 64 for ResNet-18/34, as ours; unchanged for ResNet-50/101)
#   train_semisup.py: CPU: torch threads = THREADS; the device is forced to the CPU
#   train_semisup.py: no hub download: random initialisation (weights=None), BACKBONE
#   train_semisup.py: iterations: ITERS / EPOCH_ITERS epochs instead of 200
#   train_semisup.py: Python 3 / torch >= 1.13: DataLoader iterators have no .next() (x2)
#   train_semisup.py: log: the loss terms and learning rate of every step as JSON lines
#   train_semisup.py: no per-epoch evaluation (both teachers are evaluated afterwards)
#   train_semisup.py: save: the final EMA teacher's state_dict (torch.save, zip format)
#                  instead of the best-by-validation one; no model_weights/, logging/
set -euo pipefail

usage() {
    sed -n '2,/^set -euo/p' "$0" | sed '$d' | sed 's/^# \{0,1\}//'
    exit "${1:-0}"
}
case "${1:-}" in -h|--help) usage 0 ;; "") ;; *) echo "unexpected argument: $1" >&2; usage 2 >&2 ;; esac

die() { echo "compare-original: $*" >&2; exit 1; }

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/.." && pwd)"
helpers="$here/compare_original"

[ -n "${RECO_ORIG:-}" ] || { echo "RECO_ORIG is not set (a checkout of lorenmt/reco)" >&2; usage 2 >&2; }
[ -f "$RECO_ORIG/train_semisup.py" ] || die "RECO_ORIG=$RECO_ORIG has no train_semisup.py"
PYTHON="${PYTHON:-python3}"
OUT="${OUT:-/tmp/compare-original}"
SEEDS="${SEEDS:-0 1 2}"
ITERS="${ITERS:-300}"
EPOCH_ITERS="${EPOCH_ITERS:-20}"
BATCH="${BATCH:-4}"
CROP="${CROP:-96}"
BACKBONE="${BACKBONE:-resnet18}"
LR="${LR:-0.01}"
NUM_LABELS="${NUM_LABELS:-20}"
NUM_QUERIES="${NUM_QUERIES:-64}"
NUM_NEGATIVES="${NUM_NEGATIVES:-128}"
OUTPUT_DIM="${OUTPUT_DIM:-256}"
TEMP="${TEMP:-0.5}"
WEAK="${WEAK:-0.7}"
STRONG="${STRONG:-0.97}"
N_TRAIN="${N_TRAIN:-160}"
N_VAL="${N_VAL:-40}"
IMAGE_SIZE="${IMAGE_SIZE:-128}"
LOSS_EVERY="${LOSS_EVERY:-50}"
THREADS="${THREADS:-$(nproc)}"
FORCE="${FORCE:-0}"

[ $((ITERS % EPOCH_ITERS)) -eq 0 ] || die "ITERS=$ITERS must be a multiple of EPOCH_ITERS=$EPOCH_ITERS (the original counts whole epochs)"
case "$BACKBONE" in resnet18|resnet34|resnet50|resnet101|resnet152) ;; *) die "BACKBONE=$BACKBONE: resnet18|34|50|101|152" ;; esac

"$PYTHON" -c 'import torch, torchvision, numpy, PIL' 2>/dev/null \
    || die "PYTHON=$PYTHON cannot import torch, torchvision, numpy and PIL"

if [ -z "${TRAINER:-}" ] || [ -z "${XTASK:-}" ]; then
    echo "== building trainer and xtask (TRAINER / XTASK unset)"
    (cd "$repo" && cargo build --release -p trainer -p xtask)
    target="$(cd "$repo" && cargo metadata --format-version 1 --no-deps \
        | "$PYTHON" -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')"
    TRAINER="${TRAINER:-$target/release/trainer}"
    XTASK="${XTASK:-$target/release/xtask}"
fi
[ -x "$TRAINER" ] || die "TRAINER=$TRAINER is not an executable"
[ -x "$XTASK" ] || die "XTASK=$XTASK is not an executable"

mkdir -p "$OUT"
OUT="$(cd "$OUT" && pwd)"
echo "== compare-original: $(date -u '+%Y-%m-%d %H:%M UTC'), out $OUT"
echo "   original: $RECO_ORIG ($(git -C "$RECO_ORIG" rev-parse --short HEAD 2>/dev/null || echo 'not a git checkout'))"
echo "   ours: $TRAINER"

# 1. a patched copy of the original (RECO_ORIG itself is never touched)
orig="$OUT/original"
rm -rf "$orig"
mkdir -p "$orig"
(cd "$RECO_ORIG" && tar --exclude=.git -cf - .) | (cd "$orig" && tar -xf -)
"$PYTHON" "$helpers/patch_original.py" "$orig"

# 2. the data, read from disk by both sides
data="$OUT/data"
"$PYTHON" "$helpers/make_data.py" "$data" --train "$N_TRAIN" --val "$N_VAL" --size "$IMAGE_SIZE"

export CMP_DATA_ROOT="$data" CMP_CROP="$CROP" CMP_BATCH="$BATCH" CMP_ITERS="$ITERS" \
    CMP_EPOCH_ITERS="$EPOCH_ITERS" CMP_RESNET="$BACKBONE" CMP_THREADS="$THREADS"

evaluate() { # checkpoint out-prefix
    "$TRAINER" eval --checkpoint "$1" --dataset folder --data-root "$data/folder" --json \
        > "$2.whole.json" 2> "$2.whole.err" || { cat "$2.whole.err" >&2; die "eval of $1 failed"; }
    "$TRAINER" eval --checkpoint "$1" --dataset pascal --data-root "$data" --json \
        > "$2.pad513.json" 2> "$2.pad513.err" || { cat "$2.pad513.err" >&2; die "eval of $1 failed"; }
}

for seed in $SEEDS; do
    dir="$OUT/seed$seed"
    mkdir -p "$dir"
    echo "== seed $seed"
    "$TRAINER" split --dataset pascal --data-root "$data" --num-labels "$NUM_LABELS" \
        --seed "$seed" --out "$dir/split.json" > "$dir/split.log"

    # the original
    if [ "$FORCE" = 1 ] || [ ! -f "$dir/orig_teacher.pth" ]; then
        echo "   original: $ITERS steps"
        start=$(date +%s)
        (cd "$orig" && CMP_SPLIT="$dir/split.json" CMP_LOG="$dir/orig_losses.jsonl" \
            CMP_SAVE="$dir/orig_teacher.pth" "$PYTHON" train_semisup.py \
            --dataset pascal --backbone deeplabv3p --apply_aug classmix --apply_reco \
            --lr "$LR" --weight_decay 5e-4 --weak_threshold "$WEAK" --strong_threshold "$STRONG" \
            --temp "$TEMP" --num_queries "$NUM_QUERIES" --num_negatives "$NUM_NEGATIVES" \
            --output_dim "$OUTPUT_DIM" --num_labels "$NUM_LABELS" --seed "$seed") \
            > "$dir/orig.log" 2>&1 || { tail -20 "$dir/orig.log" >&2; die "the original failed (seed $seed), log: $dir/orig.log"; }
        echo $(( $(date +%s) - start )) > "$dir/orig.secs"
    fi
    "$XTASK" convert --input "$dir/orig_teacher.pth" --output "$dir/orig_teacher.safetensors" \
        --output-stride 16 --dataset pascal > "$dir/convert.log" 2>&1 \
        || { cat "$dir/convert.log" >&2; die "convert failed (seed $seed)"; }

    # ours
    if [ "$FORCE" = 1 ] || [ ! -f "$dir/ours/last.safetensors" ]; then
        echo "   ours: $ITERS steps"
        rm -rf "$dir/ours"
        start=$(date +%s)
        RAYON_NUM_THREADS="$THREADS" "$TRAINER" train --dataset pascal --data-root "$data" \
            --split "$dir/split.json" --mode semi --mix classmix --reco true \
            --network deeplabv3p --backbone "$BACKBONE" --output-stride 16 \
            --iters "$ITERS" --epoch-iters "$EPOCH_ITERS" --batch-size "$BATCH" --crop-size "$CROP" \
            --lr "$LR" --hue-jitter 0.25 --temp "$TEMP" --num-queries "$NUM_QUERIES" \
            --num-negatives "$NUM_NEGATIVES" --weak-threshold "$WEAK" --strong-threshold "$STRONG" \
            --output-dim "$OUTPUT_DIM" --seed "$seed" --log-every 1 --eval-every "$ITERS" \
            --save-every 1000000 --out "$dir/ours" > "$dir/ours.log" 2>&1 \
            || { tail -20 "$dir/ours.log" >&2; die "our trainer failed (seed $seed), log: $dir/ours.log"; }
        echo $(( $(date +%s) - start )) > "$dir/ours.secs"
    fi

    echo "   evaluating both teachers"
    evaluate "$dir/orig_teacher.safetensors" "$dir/eval_orig"
    evaluate "$dir/ours/last.safetensors" "$dir/eval_ours"
done

# 3. the comparison
"$PYTHON" "$helpers/summarise.py" --out "$OUT" --seeds $SEEDS --iters "$ITERS" \
    --loss-every "$LOSS_EVERY" --orig-source "$RECO_ORIG" \
    --setting "iterations=$ITERS" --setting "epoch_iters=$EPOCH_ITERS" \
    --setting "batch_size=$BATCH" --setting "crop_size=$CROP" --setting "backbone=$BACKBONE" \
    --setting "lr=$LR" --setting "num_queries=$NUM_QUERIES" --setting "num_negatives=$NUM_NEGATIVES" \
    --setting "output_dim=$OUTPUT_DIM" --setting "temp=$TEMP" --setting "weak_threshold=$WEAK" \
    --setting "strong_threshold=$STRONG" --setting "num_labels=$NUM_LABELS" \
    --setting "threads=$THREADS"
