#!/usr/bin/env bash
# Set up a bare GPU machine (no internet) from the wheels/sdists carried in .gpu/, then run
# the GPU tests, the kernel timings, a profile of the SSM forwards and benchmarks/extract.py. Usage (repo root, $OUT set):
#
#   bash benchmarks/extract_gpu.sh [compiled] [tests] [scan] [profile] [bench] [quick] [shards] [kernels] [batch] [cell] [ssd] [conv] [gated] [gemm] [-- extra args for extract.py / shards_gpu.py]
#
# `compiled` builds mamba-ssm's and causal-conv1d's CUDA extensions for sm_90 first (~6 min,
# benchmarks/build_compiled_kernels.sh; both sdists in .gpu/); `kernels` runs benchmarks/kernels.py
# (naive HF, HF best, reprflow with and without the compiled packages), `batch` the SSMs' forward at
# several tokens per pass (benchmarks/batch_tokens.py), `cell` benchmarks/cell.py,
# `ssd` Mamba-2's SSD output kernels side by side (benchmarks/ssd_chunks.py --output-kernel), `conv`
# the causal conv's program shapes against cuDNN (benchmarks/conv_sweep.py), `gated` Mamba-2's gated
# RMSNorm, whole row against blocks (benchmarks/gated_norm.py), `gemm` the paper models' projections
# against the roofline's matmul rate (benchmarks/gemm_shapes.py).
# Default: tests bench. TESTS_K="expr" limits the tests to pytest -k expr; TESTS_TIMEOUT (s, default
# 300) bounds them (cold Triton compiles of every kernel take most of it on a fresh machine). Writes logs and tables to $OUT. Needs .gpu/ (see requirements-gpu.txt):
#   transformers, zarr, numcodecs, donfig, google-crc32c, regex wheels (cp312) and the
#   mamba_ssm sdist, installed here without compiling anything.
set -uo pipefail
export PYTHONUNBUFFERED=1
OUT=${OUT:-benchmarks/out}
mkdir -p "$OUT"
steps=()
extra=()
while [ $# -gt 0 ]; do
  if [ "$1" = "--" ]; then shift; extra=("$@"); break; fi
  steps+=("$1"); shift
done
[ ${#steps[@]} -eq 0 ] && steps=(tests bench)

source benchmarks/gpu_site.sh
if [ "${steps[0]}" = "compiled" ]; then
  bash benchmarks/build_compiled_kernels.sh 90 2>&1 | tee "$OUT/build.log" || exit 1
  steps=("${steps[@]:1}")
fi
python3 - <<'EOF' 2>&1 | tee "$OUT/env.txt"
import torch, triton, transformers, zarr, numpy
from reprflow.kernels.optional import load_mamba_ssm_triton
k = load_mamba_ssm_triton()
print("gpu", torch.cuda.get_device_name(), "| torch", torch.__version__, "| triton", triton.__version__,
      "| transformers", transformers.__version__, "| zarr", zarr.__version__, "| numpy", numpy.__version__,
      "| mamba_ssm triton", None if k is None else (k.version, "bare" if k.bare_package else "full"))
EOF
nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.sm --format=csv | tee -a "$OUT/env.txt"

for s in "${steps[@]}"; do
  case "$s" in
    tests) timeout "${TESTS_TIMEOUT:-300}" python3 -m pytest -q -p no:cacheprovider --noconftest -m gpu --durations=20 ${TESTS_K:+-k "$TESTS_K"} \
             tests/kernels tests/test_transfer.py tests/test_extract.py tests/test_capture.py tests/test_probes.py \
             tests/metrics/test_mixed.py tests/test_stream_metrics.py \
             2>&1 | tee "$OUT/tests.log" ;;
    profile) timeout 240 python3 benchmarks/profile_forward.py 2>&1 | tee "$OUT/profile.md" ;;
    shards) timeout 500 python3 benchmarks/shards_gpu.py --out "$OUT" "${extra[@]}" 2>&1 | tee "$OUT/shards.log" ;;
    scan) timeout 120 python3 benchmarks/extract.py --scan-configs --out "$OUT" 2>&1 | tee "$OUT/scan.log" ;;
    bench) timeout 540 python3 benchmarks/extract.py --out "$OUT" "${extra[@]}" 2>&1 | tee "$OUT/bench.log" ;;
    quick) timeout 300 python3 benchmarks/extract.py --quick --out "$OUT" "${extra[@]}" 2>&1 | tee "$OUT/quick.log" ;;
    kernels) timeout 420 python3 benchmarks/kernels.py --out "$OUT" "${extra[@]}" 2>&1 | tee "$OUT/kernels.log" ;;
    batch) timeout 300 python3 benchmarks/batch_tokens.py --out "$OUT" "${extra[@]}" 2>&1 | tee "$OUT/batch.log" ;;
    cell) timeout 240 python3 benchmarks/cell.py --out "$OUT" "${extra[@]}" 2>&1 | tee "$OUT/cell.log" ;;
    ssd) timeout 240 python3 benchmarks/ssd_chunks.py --output-kernel --shapes ${SSD_SHAPES:-32x2048 16x4096} 2>&1 | tee "$OUT/ssd.md" ;;
    conv) timeout 180 python3 benchmarks/conv_sweep.py 2>&1 | tee "$OUT/conv.md" ;;
    gated) timeout 120 python3 benchmarks/gated_norm.py 2>&1 | tee "$OUT/gated.md" ;;
    gemm) timeout 120 python3 benchmarks/gemm_shapes.py 2>&1 | tee "$OUT/gemm_shapes.md" ;;
    *) echo "unknown step $s"; exit 2 ;;
  esac
done
