#!/bin/bash
# One device call, on an H200 only (exits at once elsewhere): the SSM forwards at the paper
# config's 64K tokens per pass, with the card's power and clock. Output under $OUT.
nvidia-smi --query-gpu=name,power.limit,clocks.max.sm,memory.total --format=csv | tee $OUT/card.txt
grep -q H200 $OUT/card.txt || { echo "not an H200: nothing run"; exit 0; }
source benchmarks/gpu_site.sh > $OUT/site.log 2>&1
export PYTHONPATH=$PYTHONPATH:$PWD/benchmarks
(while true; do nvidia-smi --query-gpu=timestamp,utilization.gpu,power.draw,clocks.sm,clocks_event_reasons.sw_power_cap --format=csv,noheader; sleep 0.5; done > $OUT/smi.csv 2>&1 &)
echo "== $(date -u +%H:%M:%S) forwards"
timeout 270 python benchmarks/batch_tokens.py --families mamba mamba2 --shapes 2048x32 4096x16 --batches 3 --out $OUT/forward.md 2>&1 | tail -32
echo "== $(date -u +%H:%M:%S) done"
