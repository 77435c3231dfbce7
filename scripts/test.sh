#!/usr/bin/env bash
# README command 2: set up, then run the test suite (GPU tests skip cleanly without CUDA).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup_env.sh
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
# Two pytest-xdist workers (REPRFLOW_TEST_WORKERS; 0 runs in this process), a test module per worker
# at a time, in collected order: the demo (minutes of snakemake on 2 cores) first on one, the other
# ~1,300 tests, mostly one core each, beside it on the other (tests/conftest.py orders them).
# Where a GPU is visible the default is 0: the GPU tests time kernels against each other
# (tests/kernels/test_select_gpu.py), which a second worker's kernels on the same GPU would disturb.
# So is it for --pdb, --trace and -s / --capture=no, which need the tests in this process.
workers=2
if command -v nvidia-smi >/dev/null && nvidia-smi -L >/dev/null 2>&1; then workers=0; fi
for arg in "$@"; do case $arg in --pdb | --trace | -s | --capture=no) workers=0 ;; esac; done
exec .venv/bin/python -m pytest -n "${REPRFLOW_TEST_WORKERS:-$workers}" --dist loadscope --no-loadscope-reorder "$@"
