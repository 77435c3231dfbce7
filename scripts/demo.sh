#!/usr/bin/env bash
# README command 1: set up, then run the offline CPU demo end to end
# (micro models trained on the CPU -> prompts -> activations -> metrics -> probes -> tables, figures, report),
# all written under runs/demo/ (config/demo.yaml: out_dir), e.g. runs/demo/results/table1.csv.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup_env.sh
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
exec .venv/bin/snakemake --cores all --configfile=config/demo.yaml "$@"
