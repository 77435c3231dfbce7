# Sourced by the GPU scripts (extract_gpu.sh, paper_rehearsal_gpu.sh): install the wheels and the
# mamba_ssm sdist carried in .gpu/ (benchmarks/gpu_wheels.sh fills it) into $SITE once per machine,
# then put $SITE first on the paths.
# mamba_ssm: Triton kernels only, nothing compiled (reprflow.kernels.optional imports them
# without the missing selective_scan_cuda extension; no stub module is installed).
SITE=/tmp/reprflow-site
if [ ! -f "$SITE/.done" ]; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$SITE" .gpu/*.whl || exit 1
  MAMBA_SKIP_CUDA_BUILD=TRUE MAMBA_FORCE_BUILD=TRUE python3 -m pip install -q --no-index --no-deps \
    --no-build-isolation --no-cache-dir --target "$SITE" .gpu/mamba_ssm-*.tar.gz || exit 1
  touch "$SITE/.done"
fi
export PYTHONPATH="$SITE:$PWD" PATH="$SITE/bin:$PATH"

# sample_gpu FILE: in the background, every 5 s, one line per GPU "epoch-seconds index, util%,
# MiB used disk-bytes-used" (each GPU's busy fraction and memory, the disk of the working tree)
# until killed; $! is its pid (benchmarks/paper_rehearsal.py read_samples reads it)
sample_gpu() {
  ( while true; do
      t=$(date +%s); d=$(df -B1 --output=used . | tail -1)
      nvidia-smi --query-gpu=index,utilization.gpu,memory.used --format=csv,noheader,nounits | sed "s/^/$t /; s/\$/ $d/"
      sleep 5
    done ) > "$1" &
}
