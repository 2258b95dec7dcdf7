#!/usr/bin/env bash
# ONE device call: the GPU test subset, then the GPU benchmarks, each with its own
# time limit so that a slow part cannot eat the others (whole script < 10 minutes).
#
# On the lent GPU machine (the device tool), from the repository root:
#   run(command="bash benchmarks/gpu_check.sh", carry=[".whl"], timeout_s=600)
# where .whl/ holds the POT and array-api-compat wheels for Python 3.12 (see
# docs/benchmarks.md for the pip download line); CuPy, torch and transformers are
# already installed there. Results land in $OUT (the device tool's folder) or
# ./out/gpu_check (gitignored).
# Dry run on a CPU machine (small sizes, GPU cases skipped with their reason):
#   GPU_CHECK_DRY_RUN=1 bash benchmarks/gpu_check.sh
# The time limits add up to more than one 600 s call when every part runs long; to split
# the work over two calls, name the parts: GPU_CHECK_SECTIONS="tests proximal" (parts:
# tests, backends, proximal, gld, pairwise, batch, pointcloud; all by default).
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-$PWD/out/gpu_check}  # out/ is gitignored; copy results to benchmarks/results/
mkdir -p "$OUT"
PY=${PYTHON:-python3}
export PYTHONUNBUFFERED=1
if [ -z "${GPU_CHECK_DRY_RUN:-}" ] && ls .whl/*.whl >/dev/null 2>&1; then
  $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target /tmp/site .whl/*.whl || exit 1
  export PYTHONPATH=/tmp/site:$PWD
else
  export PYTHONPATH=$PWD
fi

section() { echo; echo "=== $* ($(date +%T))"; }
want() { [ -z "${GPU_CHECK_SECTIONS:-}" ] || [[ " $GPU_CHECK_SECTIONS " == *" $1 "* ]]; }

section environment
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv 2>/dev/null || echo "no nvidia-smi"
$PY - <<'PY'
import importlib
for name in ("numpy", "scipy", "ot", "array_api_compat", "torch", "cupy", "transformers"):
    try:
        mod = importlib.import_module(name)
        print(f"{name:18s} {getattr(mod, '__version__', '?')}")
    except Exception as err:
        print(f"{name:18s} missing ({type(err).__name__})")
try:
    import torch
    print("cuda:", torch.cuda.is_available(), torch.cuda.get_device_name(0) if torch.cuda.is_available() else "")
except Exception:
    pass
PY

if [ -n "${GPU_CHECK_DRY_RUN:-}" ]; then GPUFLAG=""; GLDFLAGS="--device cpu"; else GPUFLAG="--gpu"; GLDFLAGS="--device cuda --full"; fi

if want tests; then
section "GPU tests (CUDA and CuPy cases; skips are listed with their reason)"
timeout 200 $PY -m pytest -q -rs -p no:cacheprovider -o addopts="--import-mode=importlib" \
  tests/gwlite/test_backends.py tests/gwlite/test_pairwise_kernels.py tests/gwlite/test_proximal.py \
  tests/gwlite/test_batched.py tests/gwlite/test_batched_abs.py tests/gwlite/test_coarse.py \
  tests/gwlite/test_pointcloud_device.py \
  tests/fusion -m "gpu" 2>&1 | tee "$OUT/gpu_tests.txt" | tail -40
fi

if want backends; then
section "benchmark: gwlite backends (dense sorted bounds, 1-D sorting, POT on GPU)"
timeout 240 $PY benchmarks/bench_backends.py $GPUFLAG --json "$OUT/bench_backends.json" 2>&1 \
  | tee "$OUT/bench_backends.md"
fi

if want proximal; then
if [ -n "${GPU_CHECK_DRY_RUN:-}" ]; then PROXFLAGS="--dry-run"; else PROXFLAGS=""; fi
section "benchmark: proximal GW on torch-CUDA and CuPy (n = 2000, 5000, 10000) vs POT CG"
timeout 180 $PY benchmarks/bench_proximal_gpu.py $PROXFLAGS --json "$OUT/bench_proximal_gpu.json" \
  2>&1 | tee "$OUT/bench_proximal_gpu.md"
fi

if want gld; then
section "benchmark: GLD loss forward+backward vs torch.topk and a naive GLD"
timeout 150 $PY benchmarks/bench_gld.py $GLDFLAGS --json "$OUT/bench_gld.json" 2>&1 \
  | tee "$OUT/bench_gld.md"
section "benchmark: the losses' non-finite check (one sync) next to GLD / ULD forward+backward"
if [ -n "${GPU_CHECK_DRY_RUN:-}" ]; then NFDEV="cpu"; else NFDEV="cuda"; fi
timeout 60 $PY benchmarks/bench_nonfinite_check.py --device $NFDEV --repeat 5 \
  --json "$OUT/bench_nonfinite_check.json" 2>&1 | tee "$OUT/bench_nonfinite_check.md"
fi

if want pairwise; then
section "benchmark: gwlite.pairwise on the whole atlas, torch-CUDA and CuPy next to NumPy"
timeout 60 $PY benchmarks/bench_pairwise.py --sections gpu --json "$OUT/bench_pairwise_gpu.json" \
  2>&1 | tee "$OUT/bench_pairwise_gpu.md"
fi

if want batch; then
if [ -n "${GPU_CHECK_DRY_RUN:-}" ]; then BATCHCASES="20x20 4x60"; else BATCHCASES="1000x50 100x500"; fi
section "benchmark: one batch of many GW problems (gwlite batch vs ot.solve_gromov_batch)"
timeout 240 $PY benchmarks/bench_batch.py --sections gpu --gpu-cases $BATCHCASES --spaces 4 \
  --json "$OUT/bench_batch_gpu.json" 2>&1 | tee "$OUT/bench_batch_gpu.md"
fi

if want pointcloud; then
if [ -n "${GPU_CHECK_DRY_RUN:-}" ]; then PCDEV="torch-cpu"; PCSIZES="2000"; PCEU="2000"; else PCDEV="torch-cuda cupy"; PCSIZES="100000 1000000"; PCEU="20000 100000"; fi
section "benchmark: point-cloud bounds and exact costs on the device (sqeuclidean 1e5, 1e6; euclidean mean-row 2e4, 1e5) next to NumPy"
for dev in $PCDEV; do
  timeout 150 $PY benchmarks/bench_pointcloud_bounds.py --device "$dev" --sizes $PCSIZES \
    --euclidean-sizes $PCEU --out "$OUT" 2>&1 | tail -20
done
fi

section done
ls -la "$OUT"
