#!/usr/bin/env bash
# The device check for a lent GPU, in one command, from the repository root:
#
#   bash scripts/gpu-check.sh                    # GPU machine, CUDA bundle in .gpu/
#   DEVICE=cpu QUICK=1 bash scripts/gpu-check.sh # its CPU-side parts here (RECO_OPS=generic)
#
# Parts in order of importance, each with its own time limit, 8 minutes in all (a part
# that finds too little time left is SKIPPED):
#   smoke    trainer check --smoke: device, copies, matmul, softmax, conv + gradients,
#            composed max-pool and batch norm, randn, each against the CPU kernels
#   check    trainer check: the reference fixtures (eval f32, train-mode f64, losses) and,
#            on a GPU, the same semi-supervised step on the CPU and the device; TF32 off
#   bench    trainer bench: VOC setting (10+10 crops of 321 on a GPU), train step, eval
#            forward at 513, ReCo loss fwd+bwd; with host copies per run; f32, TF32 off
#   bench-tf32, bench-LOW   the train step and eval forward with --tf32, and with
#            --precision LOW (bf16 on a GPU; f16 in a CPU dry run, where bf16 cannot run)
#   nccl     a 1-rank NCCL run (torchrun variables, --dist-backend nccl) against the same
#            run in one process: byte-identical last.safetensors (skipped off CUDA)
#   pytorch  crates/models/benches/pytorch_deeplab.py: the original's eager semi-supervised
#            step, network train step and eval forward on the same card (skipped without torch),
#            f32 with TF32 off; pytorch-LOW: the same under autocast LOW
#   run      200 steps of the default run (synthetic data, ResNet-18) on the device: images/s
#            of the last window and the final mIoU
#   bench-dpt  trainer bench --network dpt: DPT on DINOv2-S, UniMatch V2's Pascal recipe
#            (10+10 crops of 518, AdamW), train step and eval forward; f32
# Every bench/pytorch/run row also gives the card's peak memory in use while it ran
# (nvidia-smi, sampled every 100 ms; includes the CUDA context), to set against the
# original's 12-16 GB on VOC.
# and prints one summary table (the parts' own tables follow it); full logs in $LOG_DIR
# (default: $OUT when set, as on the lent machine, else gpu-check-logs/).
#
# The bundle: `bash scripts/build-cuda.sh` (CPU machine, ~12 min) leaves it in .gpu/
# (trainer.xz, run_gpu.sh, lib/); carry .gpu to the GPU machine. Settings (environment):
#   DEVICE (cuda), QUICK (0; 1 = tiny settings for a CPU dry run), TRAINER (command that runs
#   the trainer; default .gpu/run_gpu.sh .gpu/trainer, else target/release/trainer),
#   PYTHON (python3), CHECK_ARGS, BENCH_ARGS, PY_ARGS, DPT_ARGS (extra arguments of each part),
#   LOW (bf16 on a GPU, f16 on the CPU), RUN_ITERS (200; QUICK: 4), BUDGET_S (480).
set -uo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.." || exit 2

DEVICE=${DEVICE:-cuda}
QUICK=${QUICK:-0}
PYTHON=${PYTHON:-python3}
BUDGET_S=${BUDGET_S:-480}
LOG_DIR=${LOG_DIR:-${OUT:-gpu-check-logs}}
mkdir -p "$LOG_DIR" || { echo "cannot create $LOG_DIR" >&2; exit 2; }

if [ -n "${TRAINER:-}" ]; then
  read -r -a TR <<<"$TRAINER"
elif [ -x .gpu/run_gpu.sh ] && { [ -e .gpu/trainer ] || [ -e .gpu/trainer.xz ]; }; then
  TR=(.gpu/run_gpu.sh .gpu/trainer)
elif [ -x target/release/trainer ]; then
  TR=(target/release/trainer)
else
  echo "no trainer: build the CUDA bundle (bash scripts/build-cuda.sh -> .gpu/) or, for a CPU" \
       "dry run, cargo build --release -p trainer; or set TRAINER" >&2
  exit 2
fi

if [ "$QUICK" = 1 ]; then
  CHECK_ARGS=${CHECK_ARGS:---skip-models --seeds 20}
  BENCH_ARGS=${BENCH_ARGS:---backbone resnet18 --batch 2 --crop 65 --runs 1}
  # The PyTorch script's DeepLabv3Plus is the original's, for bottleneck ResNets (50+).
  PY_ARGS=${PY_ARGS:---backbone resnet50 --batch 2 --size 65 --runs 1}
  RUN_ITERS=${RUN_ITERS:-4}
  DPT_ARGS=${DPT_ARGS:---batch 2 --crop 42 --runs 1}
else
  CHECK_ARGS=${CHECK_ARGS:-}
  BENCH_ARGS=${BENCH_ARGS:---runs 5}
  PY_ARGS=${PY_ARGS:---backbone resnet101 --batch 10 --size 321 --eval-size 513 --runs 5}
  RUN_ITERS=${RUN_ITERS:-200}
  DPT_ARGS=${DPT_ARGS:---runs 3}
fi
if [ "$DEVICE" = cpu ]; then LOW=${LOW:-f16}; else LOW=${LOW:-bf16}; fi
# On the CPU the check is only meaningful on the device path.
[ "$DEVICE" = cpu ] && export RECO_OPS=${RECO_OPS:-generic}

START=$(date +%s)
declare -a ROWS
FAILED=0

# run_part NAME CAP_S COMMAND...: runs with min(CAP_S, time left), logs, adds a summary row.
run_part() {
  local name=$1 cap=$2
  shift 2
  local left=$((BUDGET_S - ($(date +%s) - START) - 5))
  ((cap > left)) && cap=$left
  if ((cap < 10)); then
    ROWS+=("| $name | SKIPPED | 0 | no time left in the ${BUDGET_S} s budget |")
    FAILED=1
    return
  fi
  local log="$LOG_DIR/$name.log" t0=$(date +%s) mem="$LOG_DIR/$name.mem" sampler=
  echo ">>> $name (limit ${cap}s): $*" >&2
  if command -v nvidia-smi >/dev/null && [ "$DEVICE" != cpu ]; then
    nvidia-smi --query-gpu=memory.used --format=csv,noheader,nounits -lms 100 >"$mem" 2>/dev/null &
    sampler=$!
  fi
  timeout --kill-after=10 "$cap" "$@" >"$log" 2>&1
  local rc=$? secs=$(($(date +%s) - t0)) status=ok
  if [ -n "$sampler" ]; then
    kill "$sampler" 2>/dev/null
    wait "$sampler" 2>/dev/null
    echo "peak device memory in use (nvidia-smi): $(sort -n "$mem" | tail -1) MiB" >>"$log"
  fi
  if ((rc == 124 || rc == 137)); then
    status="TIMEOUT (${cap}s)"
    FAILED=1
  elif ((rc != 0)); then
    status="FAIL (exit $rc)"
    FAILED=1
  fi
  ROWS+=("| $name | $status | $secs | $(headline "$name" "$log") |")
}

# The key numbers of a part's log, on one line.
headline() {
  headline_lines "$@" | tr -s '\n' ' '
}

headline_lines() {
  local name=$1 log=$2
  case $name in
    smoke | check)
      local fails
      fails=$(grep -c '| FAIL' "$log")
      echo "$(grep -E '^(all [0-9]+|[0-9]+ of [0-9]+|Error)' "$log" | tail -1 | tr '|' '/')$( ((fails > 0)) && echo "; failed: $(grep '| FAIL' "$log" | cut -d'|' -f2 | tr '\n' ';')")"
      ;;
    nccl)
      tail -1 "$log" | tr '|' '/'
      ;;
    run)
      local m="$LOG_DIR/run/metrics.jsonl"
      [ -s "$m" ] && "$PYTHON" - "$m" <<'PY'
import json, sys
lines = [json.loads(l) for l in open(sys.argv[1])]
train = [l for l in lines if l.get("kind") == "train"]
ev = [l for l in lines if l.get("kind") == "eval"]
print(f"{train[-1]['images_per_s']:.1f} images/s (last window), " if train else "", end="")
print(f"mIoU {100 * ev[-1]['miou']:.2f} at step {ev[-1]['step']}; " if ev else "no evaluation; ", end="")
PY
      grep -E '^Error' "$log" | tail -1 | tr '|' '/'
      ;;
    bench* | pytorch*)
      awk -F'|' '$3 ~ /^ *[0-9.]+ *$/ {
          gsub(/^ +| +$/, "", $2); gsub(/ /, "", $3); split($2, w, " ");
          printf "%s %s %s ms; ", w[1], w[2], $3 }
        $3 ~ /FAILED/ { gsub(/^ +| +$/, "", $2); printf "%s FAILED; ", $2 }' "$log"
      grep -E '^Error' "$log" | tail -1 | tr '|' '/'
      ;;
  esac
  grep -Eo 'peak device memory in use \(nvidia-smi\): [0-9]+ MiB' "$log" | tail -1 | sed 's/^/; /'
}

run_part smoke 40 "${TR[@]}" check --smoke --device "$DEVICE"
# shellcheck disable=SC2086 # the *_ARGS are word lists
run_part check 120 "${TR[@]}" check --device "$DEVICE" $CHECK_ARGS
# shellcheck disable=SC2086
run_part bench 110 "${TR[@]}" bench --device "$DEVICE" $BENCH_ARGS
# shellcheck disable=SC2086
run_part "bench-$LOW" 50 "${TR[@]}" bench --device "$DEVICE" $BENCH_ARGS --only train,eval --precision "$LOW"
if "$PYTHON" -c 'import torch, torchvision' >/dev/null 2>&1; then
  # shellcheck disable=SC2086
  run_part pytorch 70 "$PYTHON" crates/models/benches/pytorch_deeplab.py --device "$DEVICE" $PY_ARGS
  # shellcheck disable=SC2086
  run_part "pytorch-$LOW" 50 "$PYTHON" crates/models/benches/pytorch_deeplab.py --device "$DEVICE" $PY_ARGS \
    --only semi,eval --amp "$LOW"
else
  ROWS+=("| pytorch | SKIPPED | 0 | $PYTHON has no torch/torchvision here |")
fi
if [ "$DEVICE" = cpu ]; then
  ROWS+=("| nccl | SKIPPED | 0 | NCCL needs CUDA |")
else
  run_part nccl 30 bash scripts/nccl-equal.sh "$LOG_DIR/nccl-runs" "$DEVICE" "${TR[@]}"
fi
rm -rf "$LOG_DIR/run"
run_part run 60 "${TR[@]}" train --device "$DEVICE" --iters "$RUN_ITERS" --eval-every "$RUN_ITERS" \
  --log-every "$(( RUN_ITERS < 50 ? RUN_ITERS : 50 ))" --val-limit 50 --out "$LOG_DIR/run"
# shellcheck disable=SC2086
run_part bench-tf32 40 "${TR[@]}" bench --device "$DEVICE" $BENCH_ARGS --only train,eval --tf32
# shellcheck disable=SC2086
run_part bench-dpt 60 "${TR[@]}" bench --device "$DEVICE" --network dpt $DPT_ARGS --only train,eval

GPU=$(nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>/dev/null | head -1)
{
  echo
  echo "## gpu-check $(date -u +%Y-%m-%dT%H:%MZ), device $DEVICE${GPU:+ ($GPU)}, commit $(git rev-parse --short HEAD 2>/dev/null || echo unknown)${RECO_OPS:+, RECO_OPS=$RECO_OPS}"
  echo
  echo "| part | status | seconds | result |"
  echo "| --- | --- | --- | --- |"
  printf '%s\n' "${ROWS[@]}"
  for part in smoke check bench "bench-$LOW" bench-tf32 nccl pytorch "pytorch-$LOW" run bench-dpt; do
    [ -s "$LOG_DIR/$part.log" ] || continue
    echo
    echo "### $part"
    grep -E '^(\||[A-Za-z].*(on|threads|CUDA|kernels|memory).*)' "$LOG_DIR/$part.log" | grep -v '^>>>' | head -80
  done
} | tee "$LOG_DIR/summary.md"
exit $FAILED
