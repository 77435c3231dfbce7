source benchmarks/gpu_site.sh > $OUT/site.log 2>&1 || { cat $OUT/site.log; exit 1; }
nvidia-smi --query-gpu=name,clocks.max.sm,clocks.sm,power.limit --format=csv > $OUT/smi.txt
python3 exp/scan_variants.py 2>&1 | tee $OUT/variants.md
NCU=$(command -v ncu || ls /opt/nvidia/nsight-compute/*/ncu /usr/local/cuda/bin/ncu 2>/dev/null | tail -1)
echo "ncu: $NCU" | tee -a $OUT/variants.md
if [ -n "$NCU" ]; then
  R=/tmp/cnt; mkdir -p $R
  timeout 240 "$NCU" --profile-from-start off --clock-control none --set full --import-source no -f -o $R/c \
    python3 exp/counters_run.py "exp default,tanh" 2048x32 > $R/ncu.log 2>&1; tail -5 $R/ncu.log
  "$NCU" -i $R/c.ncu-rep --page raw --csv > $R/raw.csv
  "$NCU" -i $R/c.ncu-rep --page source --csv --print-source sass > $R/source.csv 2>&1
  python3 benchmarks/kernel_counters.py summarize $R/raw.csv > $OUT/counters.md
  python3 benchmarks/kernel_counters.py hotspots $R/source.csv >> $OUT/counters.md
  tail -c 2000000 $R/ncu.log > $OUT/ncu.log
  gzip -c $R/source.csv > $OUT/source.csv.gz
fi
