#!/usr/bin/env bash
# Builds a binary of this project with candle's `cuda` feature on a CPU-only machine, for the
# lent H100/H200 (driver 580 = CUDA 13.0; its CUDA 13 libraries live in a PyTorch venv there).
# usage (from the repository root): bash scripts/build-cuda.sh
#        [BIN=trainer] [FEATURES=cuda,nccl|cuda|cudnn,nccl] [WORK=/tmp/cudabuild] [BUNDLE_DIR=.gpu]
#        Default cuda,nccl: the NCCL process group (multi-GPU) built in. cudnn for cuDNN
#        convolutions. The crate of BIN must forward the features to candle.
# NCCL is not bundled (libnccl.so.2 is ~300 MiB): the binary links it dynamically and
# run_gpu.sh finds it in the PyTorch cu13 venv of the GPU machine (nvidia/nccl/lib, the
# nvidia-nccl-cu13 wheel torch depends on); the build links against the same wheel.
# Output: $WORK/bundle/ (the binary xz-compressed, lib/libcurand.so.10 fallback, run_gpu.sh),
# copied to $BUNDLE_DIR (default .gpu/, git-ignored) for scripts/gpu-check.sh; carry that folder
# to the GPU machine. Needs network access to PyPI (the CUDA 13.0 toolchain) and crates.io;
# takes 10-13 minutes on two cores, most of it nvcc on candle's kernels.
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
APP_DIR=${APP_DIR:-$(cd "$HERE/.." && pwd)}
BUNDLE_DIR=$(realpath -m "${BUNDLE_DIR:-$APP_DIR/.gpu}")
BIN=${BIN:-trainer}
FEATURES=${FEATURES:-cuda,nccl}
WORK=${WORK:-/tmp/cudabuild}
mkdir -p "$WORK" && cd "$WORK"

# ---- 1. CUDA 13.0 toolchain + link-time libs from PyPI (nvcc 13.0 => PTX ISA 9.0, loadable by driver 580) ----
[ -x venv/bin/python ] || python3 -m venv venv
venv/bin/pip install -q --no-deps \
  nvidia-cuda-nvcc==13.0.88 nvidia-cuda-crt==13.0.88 nvidia-nvvm==13.0.88 \
  nvidia-cuda-runtime==13.0.96 nvidia-cuda-cccl==13.0.85 nvidia-cuda-nvrtc==13.0.88 \
  nvidia-curand==10.4.0.35 nvidia-cublas==13.0.2.14 nvidia-cudnn-cu13==9.21.1.3 \
  nvidia-nccl-cu13==2.30.7
SP=$("$WORK/venv/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')/nvidia
CU13=$SP/cu13

: "${BIN:?set BIN to the binary name of APP_DIR}"
(cd "$APP_DIR" && cargo fetch -q)

# ---- 3. link dir: unversioned .so names for the linker + a stub libcuda (driver) ----
# candle-core 0.11.1 enables cudarc 0.19.x feature `dynamic-linking`, i.e. plain -lcuda -lcublas
# -lcublasLt -lcurand -lnvrtc (-lcudnn) at link time; candle-kernels adds -lcudart -lstdc++.
# cudarc is an optional dependency: metadata lists it only with the feature on
REG=$(dirname "$(cd "$APP_DIR" && cargo metadata --format-version 1 --features "$(echo "$FEATURES" | sed "s#\([^,]*\)#$BIN/\1#g")" 2>/dev/null | python3 -c '
import json,sys; m=json.load(sys.stdin); print([p["manifest_path"] for p in m["packages"] if p["name"]=="cudarc"][0])')")
L=$WORK/cudaroot/lib; mkdir -p "$L" "$WORK/stubsrc"
for p in cudart:cu13/lib/libcudart.so.13 cublas:cu13/lib/libcublas.so.13 cublasLt:cu13/lib/libcublasLt.so.13 \
         curand:cu13/lib/libcurand.so.10 nvrtc:cu13/lib/libnvrtc.so.13 cudnn:cudnn/lib/libcudnn.so.9 \
         nccl:nccl/lib/libnccl.so.2; do
  n=${p%%:*}; f=${p#*:}; ln -sf "$SP/$f" "$L/lib$n.so"; ln -sf "$SP/$f" "$L/$(basename "$f")"
done
# libcuda.so comes with the driver, which PyPI does not ship: build a link-only stub exporting every
# driver symbol cudarc can reference (NEVER copy it to the GPU box; the real libcuda.so.1 is used there).
grep -ohE '^\s+fn (cu[A-Za-z0-9_]+)\(' "$REG/src/driver/sys/mod.rs" | sed -E 's/^\s+fn (cu[A-Za-z0-9_]+)\(/\1/' \
  | sort -u | awk '{print "int "$1"(void){return 999;}"}' > "$WORK/stubsrc/libcuda_stub.c"
gcc -shared -fPIC -Wl,-soname,libcuda.so.1 -o "$L/libcuda.so" "$WORK/stubsrc/libcuda_stub.c"

# ---- 4. build ----
export CUDA_HOME=$WORK/cudaroot          # cudarc: link search $CUDA_HOME/lib
export NVCC=$CU13/bin/nvcc               # cudaforge (candle-kernels' build dep): nvcc to use
export PATH=$CU13/bin:$PATH              # cudarc `cuda-version-from-build-system` runs `nvcc --version`
export CUDARC_CUDA_VERSION=13000         # ...or pin it explicitly (bindings for CUDA 13.0 = driver 580)
export CUDA_COMPUTE_CAP=90               # no nvidia-smi here; cudaforge turns 90 into sm_90a (H100/H200)
export RUSTFLAGS="${RUSTFLAGS:-} -C link-arg=-Wl,-rpath-link,$L"
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$WORK/target13}
(cd "$APP_DIR" && time cargo build --release -p "$BIN" --features "$FEATURES")

# ---- 5. libcurand.so.10 shim (PyTorch >= 2.10-ish cu13 wheels no longer ship cuRAND; the real
#      libcurand.so.10 is 127 MiB, too big for the 64 MiB transfer) ----
mkdir -p "$WORK/minicurand"
cp "$HERE/minicurand.cu" "$WORK/minicurand/minicurand.cu"
printf 'libcurand.so.10 {\n  global: curand*;\n  local: *;\n};\n' > "$WORK/minicurand/curand.map"
"$NVCC" -O3 -shared -Xcompiler -fPIC -cudart shared -L"$L" -L"$CU13/lib" \
  -gencode arch=compute_80,code=sm_80 -gencode arch=compute_90,code=sm_90 -gencode arch=compute_90,code=compute_90 \
  -Xlinker -soname=libcurand.so.10 -Xlinker --version-script="$WORK/minicurand/curand.map" \
  -o "$WORK/minicurand/libcurand.so.10" "$WORK/minicurand/minicurand.cu"

# ---- 6. bundle ----
B=$WORK/bundle; rm -rf "$B"; mkdir -p "$B/lib"
cp "$CARGO_TARGET_DIR/release/$BIN" "$B/"; strip "$B/$BIN" || true
cp "$WORK/minicurand/libcurand.so.10" "$B/lib/"
cp "$HERE/run_gpu.sh" "$B/run_gpu.sh"
chmod +x "$B/run_gpu.sh"
readelf -d "$B/$BIN" | grep NEEDED
# the carry limit is 64 MiB in all: ship the binary xz-compressed (run_gpu.sh unpacks it)
xz -T0 -6 "$B/$BIN"
du -sh "$B"; ls -la "$B" "$B/lib"
# ---- 7. into the checkout's ignored bundle folder ----
rm -rf "$BUNDLE_DIR"; mkdir -p "$BUNDLE_DIR"; cp -r "$B/." "$BUNDLE_DIR/"
echo "bundle ready in $BUNDLE_DIR: run scripts/gpu-check.sh on the GPU machine (carry $BUNDLE_DIR)"
