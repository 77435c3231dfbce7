#!/usr/bin/env bash
# README command 2: set up, then run the test suite (GPU tests skip cleanly without CUDA).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup_env.sh
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
# Two pytest-xdist workers (REPRFLOW_TEST_WORKERS; 0 runs in this process), a test module per worker
# at a time, in collected order: the demo (minutes of snakemake on 2 cores) first on one, the other
# ~1,300 tests, mostly one core each, beside it on the other (tests/conftest.py orders them). The
# workers run at niceness 5 and the demo's snakemake at the suite's own (tests/conftest.py,
# WORKER_NICE; root only): the demo is the critical path, the other tests fill the cores it leaves.
# Where a GPU is visible the default is 0: the GPU tests time kernels against each other
# (tests/kernels/test_select_gpu.py), which a second worker's kernels on the same GPU would disturb.
# So is it for --pdb, --trace and -s / --capture=no, which need the tests in this process.
workers=2
if command -v nvidia-smi >/dev/null && nvidia-smi -L >/dev/null 2>&1; then workers=0; fi
for arg in "$@"; do case $arg in --pdb | --trace | -s | --capture=no) workers=0 ;; esac; done
workers=${REPRFLOW_TEST_WORKERS:-$workers}
# Each worker's torch, OpenBLAS and MKL get the cores divided by the workers (unless already set),
# as Snakemake gives each job its booked threads. On 2 cores, two workers of two threads each
# (beside the demo's jobs) spin-wait for each other; one thread each cut the user CPU time of four
# torch-heavy test modules on a loaded 2-core box by a third (97.6 s to 65.1 s).
if [ "$workers" -gt 0 ]; then
  threads=$(($(nproc) / workers))
  [ "$threads" -ge 1 ] || threads=1
  export OMP_NUM_THREADS=${OMP_NUM_THREADS:-$threads} MKL_NUM_THREADS=${MKL_NUM_THREADS:-$threads}
  export OPENBLAS_NUM_THREADS=${OPENBLAS_NUM_THREADS:-$threads}
fi
exec .venv/bin/python -m pytest -n "$workers" --dist loadscope --no-loadscope-reorder "$@"
