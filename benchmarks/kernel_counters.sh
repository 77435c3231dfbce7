#!/usr/bin/env bash
# Nsight Compute counters of the SSM kernels (benchmarks/kernel_counters.py says what and why).
# Needs a machine whose runtime lets ncu read the hardware counters (Firecracker here, not gVisor).
# Usage, repository root, on the GPU machine:  OUT=dir bash benchmarks/kernel_counters.sh [workload ...]
set -uo pipefail
OUT=${OUT:-benchmarks/results/counters}
REP=${REP:-$OUT/counters}  # the .ncu-rep report (tens of MB with source counters)
mkdir -p "$OUT"
source benchmarks/gpu_site.sh || exit 1
NCU=$(command -v ncu || ls /opt/nvidia/nsight-compute/*/ncu 2>/dev/null | tail -1)
[ -n "$NCU" ] || { echo "ncu not found"; exit 1; }
"$NCU" --version | tail -1
"$NCU" --profile-from-start off --clock-control none --set full --import-source no -f -o "$REP" \
  python3 benchmarks/kernel_counters.py run "$@" || exit 1
"$NCU" -i "$REP.ncu-rep" --page raw --csv > "$OUT/raw.csv"
"$NCU" -i "$REP.ncu-rep" --page details --print-details all > "$OUT/details.txt"
"$NCU" -i "$REP.ncu-rep" --page source --csv --print-source sass > "$OUT/source.csv" 2>&1 || true
python3 benchmarks/kernel_counters.py summarize "$OUT/raw.csv" > "$OUT/counters.md"
python3 benchmarks/kernel_counters.py hotspots "$OUT/source.csv" >> "$OUT/counters.md"
cat "$OUT/counters.md"
