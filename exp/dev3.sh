source benchmarks/gpu_site.sh > $OUT/site.log 2>&1 || { cat $OUT/site.log; exit 1; }
timeout 120 python3 exp/scan_variants.py --match "prod default" "tanh u8" "diag" 2>&1 | tee $OUT/variants.md
mkdir -p $OUT/cnt /tmp/cnt3
OUT=$OUT/cnt REP=/tmp/cnt3/counters timeout 150 bash benchmarks/kernel_counters.sh scan-gluon-2048x32 scan-gluon-4096x16 --shapes 2048x32 4096x16 > /tmp/cnt3.log 2>&1
tail -3 /tmp/cnt3.log; rm -f $OUT/cnt/source.csv $OUT/cnt/details.txt $OUT/cnt/raw.csv
timeout 240 python3 benchmarks/cuda_graphs.py --families mamba mamba2 --shapes 2048x32 4096x16 --out $OUT 2>&1 | tee $OUT/graphs_ssm.log | tail -12
mv $OUT/cuda_graphs.md $OUT/cuda_graphs_ssm.md 2>/dev/null
timeout 150 python3 benchmarks/cuda_graphs.py --families gpt_neo gpt_neox --shapes 2048x16 --out $OUT 2>&1 | tee $OUT/graphs_tf.log | tail -8
