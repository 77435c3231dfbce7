#!/usr/bin/env bash
# The matched suite (config/matched.yaml) end to end on one bare offline GPU machine: train the
# four models, then the whole pipeline (both arms, KVPR and MDQA, 300 and 1024 tokens) to the
# report. Repository root, $OUT set:
#
#   bash benchmarks/matched_gpu.sh [build] start  # returns at once; the run goes on in its own session
#                                               # (`build` alone starts step 1 early, see below)
#   bash benchmarks/matched_gpu.sh wait [S]     # follow it for at most S seconds (default 540), then
#                                               # copy what exists to $OUT (repeat in chained calls)
#
# `start` launches, under setsid (so it outlives the device call while the machine stays warm):
#   1. the build of mamba-ssm's and causal-conv1d's compiled kernels for sm_90
#      (benchmarks/build_compiled_kernels.sh, ~3.5 min, niced): Mamba-1 and Mamba2 train through them;
#   2. meanwhile the two Transformers' training and the prompts (`--resources gpu=1`: one training at
#      a time, so each model's tokens/s in its summary is its own);
#   3. once the build is in, the two SSMs' training (gpu=1);
#   4. the rest of the pipeline to the report (gpu=4: the small extraction jobs share the GPU).
# Everything lives under /tmp/matched (logs, GPU samples) and runs/matched (the run): only
# chained calls see it. Needs .gpu/ (wheels, both sdists; pulp may be left out: `--scheduler
# greedy`) and data/corpus/tokens/gcide_gpt-neox-20b_val0.01.npz (the tokenized corpus; make it
# where dict-gcide is installed) carried.
set -uo pipefail
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
OUT=${OUT:-benchmarks/out}
RUN=/tmp/matched
mkdir -p "$OUT" "$RUN"
# `wait` on a fresh machine (the previous one went back between chained calls: it is released
# ~30 s after a call) has no run to follow: say so at once, before any install, instead of
# waiting out the limit on device time (this cost 580 s of a session once)
if [ "${1:-}" = wait ] && [ ! -f "$RUN/driver.out" ]; then
  echo "no suite run on this machine: it is a fresh one (the previous machine went back); start again" | tee "$OUT/log"
  exit 3
fi
source benchmarks/gpu_site.sh
export REPRFLOW_KERNEL_CACHE=/tmp/reprflow-kernels.json
# targets go before the options: --resources takes every word after it
OPTS=(--cores "$(nproc)" --rerun-incomplete --scheduler greedy --configfile config/matched.yaml)
MODELS=runs/matched/data/models

start_build() {  # niced: the training jobs' launch threads come first
  touch "$RUN/build.started"
  setsid bash -c "nice -n 10 bash benchmarks/build_compiled_kernels.sh 90 > $RUN/build.log 2>&1; echo \$? > $RUN/build.rc" \
    < /dev/null > /dev/null 2>&1 &
}

driver() {
  local t0; t0=$(date +%s)
  stamp() { echo "$(( $(date +%s) - t0 )) s: $*" >> "$RUN/driver.log"; }
  sample_gpu "$RUN/samples.txt"
  [ -f "$RUN/build.started" ] || start_build
  stamp "training the Transformers (the build goes on)"
  python3 -m snakemake "$MODELS/matched-gpt-neo" "$MODELS/matched-gpt-neox" all_prompts "${OPTS[@]}" --resources gpu=1 \
    > "$RUN/smk_transformers.log" 2>&1
  stamp "Transformers: snakemake rc=$?; waiting for the compiled kernels"
  while [ ! -f "$RUN/build.rc" ]; do sleep 2; done
  stamp "build rc=$(cat "$RUN/build.rc")"
  python3 -m snakemake all_trained "${OPTS[@]}" --resources gpu=1 > "$RUN/smk_ssm.log" 2>&1
  local rc=$?
  stamp "SSMs: snakemake rc=$rc"
  if [ $rc -ne 0 ]; then echo "$rc" > "$RUN/done"; return; fi  # no pipeline without all four models
  python3 -m snakemake all "${OPTS[@]}" --resources gpu=4 > "$RUN/smk_pipeline.log" 2>&1
  rc=$?
  stamp "pipeline: snakemake rc=$rc"
  echo "$rc" > "$RUN/done"
}

collect() {
  cp "$RUN/driver.log" "$OUT/driver.log" 2>/dev/null
  tail -c 2000000 "$RUN/samples.txt" > "$OUT/samples.txt" 2>/dev/null
  cp runs/matched/results/report.md "$OUT/report.md" 2>/dev/null
  # training summaries and loss curves, findings, tables, per-job benchmarks and logs, build log
  tar czf "$OUT/results.tgz" runs/matched/results/training runs/matched/results/findings* \
    runs/matched/results/tables runs/matched/results/*.csv runs/matched/benchmarks runs/matched/logs \
    "$RUN"/*.log 2>/dev/null
  ls -la "$OUT"
}

case "${1:-}" in
  build)  # start the build alone (e.g. before GPU benchmarks that must not share the GPU)
    rm -f "$RUN/build.rc"; start_build; echo "build started"
    ;;
  start)
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$OUT/env.txt"
    python3 -c "import torch, transformers; print('torch', torch.__version__, 'transformers', transformers.__version__)" | tee -a "$OUT/env.txt"
    rm -f "$RUN/done"
    setsid bash "$0" driver > "$RUN/driver.out" 2>&1 < /dev/null &
    echo "started (setsid pid $!)"
    ;;
  driver) driver ;;
  wait)
    limit=${2:-540}; t0=$(date +%s)
    while [ ! -f "$RUN/done" ] && [ $(( $(date +%s) - t0 )) -lt "$limit" ]; do sleep 10; done
    cat "$RUN/driver.log" 2>/dev/null
    for f in "$RUN"/smk_*.log; do echo "== $f"; grep -E "Finished job|Error|error|steps? \(|of [0-9]+ steps" "$f" | tail -5; done
    grep -h "tok_s" runs/matched/logs/training/*.log 2>/dev/null | tail -c 600
    # a failed job: its own log's tail now (the machine may be gone before another call can ask)
    for log in $(grep -ho "log: [^ ]*\.log" "$RUN"/smk_*.log 2>/dev/null | cut -d' ' -f2 | sort -u); do
      if grep -q "Error\|Traceback" "$log" 2>/dev/null; then echo "== failed: $log"; tail -25 "$log"; fi
    done
    collect
    ;;
  *) echo "usage: $0 start | wait [seconds]"; exit 2 ;;
esac
