source benchmarks/gpu_site.sh > $OUT/site.log 2>&1 || { cat $OUT/site.log; exit 1; }
python3 exp/scan_variants.py 2>&1 | tee $OUT/variants.md
python3 exp/forward_variants.py --families mamba --shapes 2048x32 4096x16 --batches 3 \
  --gluon-configs default 3,16 3,8 1,16 --out $OUT 2>&1 | tee $OUT/forward.log | grep -v "^  " | tail -30
