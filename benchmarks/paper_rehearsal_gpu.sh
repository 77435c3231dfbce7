#!/usr/bin/env bash
# GPU dress rehearsal of the paper run: `snakemake results/table1.csv` on config/config.yaml with
# the reduced prompt count of config/rehearsal.yaml (a random-weight stand-in for the pretrained
# arm + the Fig. 3 init sweep, all five paper models, both tasks, all four lengths: the paper's
# jobs, compute-identical), on a bare offline GPU machine with one or
# more GPUs (execution.jobs_per_gpu: two GPU jobs per GPU, one computing while the next starts up,
# unless SMK_ARGS passes --resources gpu=N).
#
#   bash benchmarks/paper_rehearsal_gpu.sh [tests] [run] [summary] [alone]   (SMK_ARGS: extra snakemake args)        (repo root; $OUT receives logs)
#
# `alone` (issue 16's baseline of the sharing slowdown; with benchmarks/alone_sample.yaml as the last
# overlay): builds the SAMPLE cells' prompt sets, then extracts the cells one job at a time on one
# GPU, and saves their times ($OUT/alone.json, benchmarks/sharing_slowdown.py --save).
#
# Needs .gpu/ (carried): wheels of snakemake and its closure, zarr, numcodecs, transformers and
# the mamba_ssm sdist (see benchmarks/extract_gpu.sh for the Triton-only mamba_ssm install).
# `run` may be repeated after a kill or a time limit: Snakemake resumes (--rerun-incomplete) and
# extraction resumes from <store>.zarr.partial. `summary` prints benchmarks/paper_rehearsal.py.
set -uo pipefail
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
OUT=${OUT:-benchmarks/out}
RUN_LIMIT=${RUN_LIMIT:-540}
mkdir -p "$OUT"
source benchmarks/gpu_site.sh
steps=("$@"); [ ${#steps[@]} -eq 0 ] && steps=(run summary)
# OVERLAYS: the config files merged over the paper config, in order (config/node_rehearsal.yaml
# after config/rehearsal.yaml: the 8-GPU rehearsal of issue 16, a tenth of the paper's prompts)
read -r -a OVER <<< "${OVERLAYS:-config/rehearsal.yaml}"
CFG=(--configfile config/config.yaml "${OVER[@]}")
# a setting of the merged config (the last overlay that sets it wins, as in Snakemake)
setting() { python3 -c "import sys; from reprflow.config import load_configs; c = load_configs(sys.argv[2:]); s, k = sys.argv[1].split('.'); print(c.section(s)[k])" "$1" config/config.yaml "${OVER[@]}"; }
# the run's out_dir (an overlay may set its own, e.g. benchmarks/one_job_per_gpu.yaml)
ROOT=$(python3 -c "import sys; from reprflow.config import load_configs; print(load_configs(sys.argv[1:]).raw['out_dir'])" config/config.yaml "${OVER[@]}")
# before Snakemake builds TARGETS: one kernel-choice cache for every job (reprflow/kernels/select.py),
# and the lock a run killed at a device call's limit leaves behind removed (nothing else runs here)
ready_to_run() {
  export REPRFLOW_KERNEL_CACHE=${REPRFLOW_KERNEL_CACHE:-/tmp/reprflow-kernels.json}
  python3 -m snakemake "$@" --unlock "${CFG[@]}" > /dev/null 2>&1
}
for s in "${steps[@]}"; do
  case "$s" in
    tests)  # the GPU tests first; if the kernel chooser's fail, force the project's own kernels
      timeout 200 python3 -m pytest -q -p no:cacheprovider -m gpu tests/kernels tests/test_fastpath.py tests/test_extract.py \
        tests/test_collect.py tests/test_stream_metrics.py tests/test_capture.py 2>&1 | tee "$OUT/tests.log" | tail -15
      if grep -q "FAILED tests/kernels/test_select" "$OUT/tests.log"; then
        echo "kernel chooser test failed: forcing the project's kernels for this run" | tee -a "$OUT/env.txt"
        export REPRFLOW_KERNEL_MAMBA_SCAN=triton REPRFLOW_KERNEL_CAUSAL_CONV=triton REPRFLOW_KERNEL_MAMBA2_SSD=mamba_ssm
      fi
      ;;
    run)
      nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee -a "$OUT/env.txt"
      df -h . | tee -a "$OUT/env.txt"
      python3 -m snakemake results/table1.csv -n --quiet rules "${CFG[@]}" 2>&1 | tail -40 | tee "$OUT/dryrun.log"
      # sample the GPU's busy fraction and the disk every 5 s while Snakemake runs
      sample_gpu "$OUT/samples.txt"
      sampler=$!
      ready_to_run results/table1.csv
      start=$(date +%s)
      # SIGINT is Snakemake's clean stop (it kills its jobs, keeps .partial stores to resume, frees
      # the lock); -k: a hard kill 30 s later if it has not returned
      timeout -s INT -k 30 "$RUN_LIMIT" python3 -m snakemake results/table1.csv --cores "$(nproc)" --rerun-incomplete ${SMK_ARGS:-} "${CFG[@]}" \
        > "$OUT/snakemake.log" 2>&1
      rc=$?
      kill $sampler
      echo "snakemake rc=$rc wall=$(( $(date +%s) - start )) s" | tee -a "$OUT/env.txt"
      tail -25 "$OUT/snakemake.log"
      ;;
    summary)
      # the rehearsal's cells are the paper's (pretrained-standin for the pretrained arm), so the
      # paper's workload is these cells once (SUMMARY_ARGS=--pretrained-arm: a config that also runs
      # random at every length); --start-ahead when GPU jobs ran two per GPU (their start-up before
      # the claim then overlapped the GPU's previous job)
      ahead=$([ "$(setting execution.jobs_per_gpu)" -ge 2 ] && echo --start-ahead)
      python3 benchmarks/paper_rehearsal.py --root "$ROOT" \
        --n-prompts "$(setting prompts.n_prompts)" --n-token-prompts "$(setting extraction.n_token_prompts)" \
        $ahead ${SUMMARY_ARGS:-} 2>&1 | tee "$OUT/rehearsal.md"
      # the node's timeline: which GPU each job ran on, idle gaps, the node's busy fraction
      python3 benchmarks/node_summary.py --log "$OUT/snakemake.log" --gpus "$(nvidia-smi -L | wc -l)" \
        --samples "$OUT/samples.txt" 2>&1 | tee "$OUT/node.md"
      # issue 16: the same cells timed alone on one H200 (the `alone` step's saved times), against this run
      ALONE=${ALONE:-benchmarks/results/alone_h200_2026-12-05.json benchmarks/results/alone_64k_h200_2026-12-05.json}
      python3 benchmarks/sharing_slowdown.py --alone $ALONE --node "$ROOT" 2>&1 | tee "$OUT/sharing.md"
      du -sh "$ROOT"/results/activations/*/* 2>/dev/null | tee "$OUT/du.txt"
      tar czf "$OUT/logs.tgz" "$ROOT/logs" .snakemake/log 2>/dev/null
      ;;
    alone)
      SAMPLE=${SAMPLE:-"gpt-neo-2.7b/pretrained-standin/mdqa_n2048 pythia-2.8b/pretrained-standin/mdqa_n2048 mamba-2.8b/pretrained-standin/mdqa_n2048 mamba2-2.7b/pretrained-standin/mdqa_n2048 mamba2-130m/pretrained-standin/mdqa_n2048"}
      [ "$(setting execution.jobs_per_gpu)" = 1 ] || { echo "alone: put benchmarks/alone_sample.yaml last in OVERLAYS"; exit 2; }
      targets=(); for key in $SAMPLE; do targets+=("$ROOT/results/activations/$key.zarr"); done
      ready_to_run "${targets[@]}"
      # the prompt sets first (CPU jobs side by side), then the extractions one at a time: nothing else runs
      python3 -m snakemake "${targets[@]}" --until prompts --cores "$(nproc)" "${CFG[@]}" > "$OUT/alone_prompts.log" 2>&1 \
        || { tail -20 "$OUT/alone_prompts.log"; exit 1; }
      start=$(date +%s)
      timeout -s INT -k 30 "$RUN_LIMIT" python3 -m snakemake "${targets[@]}" --cores "$(nproc)" --resources gpu=1 --rerun-incomplete \
        "${CFG[@]}" > "$OUT/alone.log" 2>&1
      echo "alone: snakemake rc=$? wall=$(( $(date +%s) - start )) s" | tee -a "$OUT/env.txt"
      python3 benchmarks/sharing_slowdown.py --alone "$ROOT" --save "$OUT/alone.json" 2>&1 | tee -a "$OUT/env.txt"
      ;;
    *) echo "unknown step $s"; exit 2 ;;
  esac
done
