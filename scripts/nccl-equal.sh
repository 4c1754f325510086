#!/usr/bin/env bash
# The same tiny training run in one process and as rank 0 of a 1-rank NCCL group
# (torchrun variables, --dist-backend nccl): NCCL's all-reduce over one rank is the
# identity, so the two last.safetensors must be byte-identical. Part of gpu-check.sh.
# usage: bash scripts/nccl-equal.sh DIR DEVICE TRAINER_COMMAND...
set -euo pipefail
[ $# -ge 3 ] || { echo "usage: $0 DIR DEVICE TRAINER_COMMAND..." >&2; exit 2; }
dir=$1 device=$2
shift 2
rm -rf "$dir" && mkdir -p "$dir"
args=(train --iters 4 --eval-every 4 --log-every 1 --batch-size 2 --crop-size 65
      --val-limit 4 --backbone resnet18 --seed 5 --device "$device")
"$@" "${args[@]}" --out "$dir/single"
RANK=0 WORLD_SIZE=1 LOCAL_RANK=0 RECO_RENDEZVOUS_FILE="$dir/nccl-id" \
  "$@" "${args[@]}" --dist-backend nccl --out "$dir/nccl"
if cmp "$dir/single/last.safetensors" "$dir/nccl/last.safetensors"; then
  echo "1-rank NCCL run = single process: last.safetensors byte-identical"
else
  echo "1-rank NCCL run differs from the single process (last.safetensors)"
  exit 1
fi
