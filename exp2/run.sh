#!/bin/bash
# One device call: the Gluon scan's gate/unroll/split variants alone, the best two in the whole
# Mamba-2.8B forward beside the default, then one paper cell. Output under $OUT.
source benchmarks/gpu_site.sh > $OUT/site.log 2>&1
export PYTHONPATH=$PYTHONPATH:$PWD/benchmarks
nvidia-smi --query-gpu=name,power.limit,clocks.max.sm,memory.total --format=csv > $OUT/card.txt
(while true; do nvidia-smi --query-gpu=timestamp,utilization.gpu,power.draw,clocks.sm,clocks_event_reasons.sw_power_cap --format=csv,noheader; sleep 0.5; done > $OUT/smi.csv 2>&1 &)
echo "== $(date -u +%H:%M:%S) scan variants"
timeout 200 python exp2/scan_variants.py --json $OUT/scan.json 2>&1 | tee $OUT/scan.md
best=$(python - <<'P'
import json, os, statistics
d = json.load(open(os.environ["OUT"] + "/scan.json"))
base = [k for k in d if k != "default"]
rank = sorted(base, key=lambda k: statistics.mean(d[k]["ms"].values()))
print("\n".join(rank[:2]))
P
)
echo "== $(date -u +%H:%M:%S) forward: default and: $best"
mapfile -t BEST <<< "$best"
timeout 240 python exp2/forward_variants.py --families mamba --shapes 2048x32 4096x16 --batches 3 \
  --gluon-configs default "${BEST[@]}" --out $OUT/forward.md 2>&1 | tail -30
grep -q H200 $OUT/card.txt || { echo "== $(date -u +%H:%M:%S) done (no cell on an H100: measured there before)"; exit 0; }
echo "== $(date -u +%H:%M:%S) cell"
timeout 120 python benchmarks/cell.py --n-prompts 1600 --n-token-prompts 2 --out $OUT 2>&1 | tail -25
echo "== $(date -u +%H:%M:%S) done"
