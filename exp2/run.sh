#!/bin/bash
# One device call: exp2/dtproj.py (dt_proj by Triton against F.linear, in_proj halves, the forward).
source benchmarks/gpu_site.sh > $OUT/site.log 2>&1
export PYTHONPATH=$PYTHONPATH:$PWD/benchmarks
nvidia-smi --query-gpu=name,power.limit,clocks.max.sm --format=csv > $OUT/card.txt
(while true; do nvidia-smi --query-gpu=timestamp,utilization.gpu,power.draw,clocks.sm --format=csv,noheader; sleep 0.5; done > $OUT/smi.csv 2>&1 &)
echo "== $(date -u +%H:%M:%S)"; timeout 200 python exp2/dtproj.py; echo "== $(date -u +%H:%M:%S) done"
