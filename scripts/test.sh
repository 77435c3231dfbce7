#!/usr/bin/env bash
# README command 2: set up, then run the test suite (GPU tests skip cleanly without CUDA).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup_env.sh
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
# Two pytest-xdist workers (REPRFLOW_TEST_WORKERS; 0 runs in this process), a test module per worker
# at a time, in collected order: the demo (minutes of snakemake on 2 cores) first on one, the other
# ~1,300 tests, mostly one core each, beside it on the other (tests/conftest.py orders them).
exec .venv/bin/python -m pytest -n "${REPRFLOW_TEST_WORKERS:-2}" --dist loadscope --no-loadscope-reorder "$@"
