#!/usr/bin/env bash
# Build mamba-ssm's and causal-conv1d's compiled CUDA extensions for ONE GPU architecture, on a
# bare offline GPU machine, and install them into $SITE (benchmarks/gpu_site.sh) over the
# Triton-only mamba_ssm there.
#
#   source benchmarks/gpu_site.sh && bash benchmarks/build_compiled_kernels.sh [ARCH]   (ARCH: 90 = H100/H200)
#
# Why a script: the setup.py of mamba-ssm 2.3.2.post1 and causal-conv1d 1.7.0 ignore
# TORCH_CUDA_ARCH_LIST and, with CUDA 13, compile every kernel for eight architectures
# (sm_75 ... sm_121); on a 16-core H200 machine the two builds did not finish in 430 s. Keeping
# only the -gencode pair of ARCH, both build in parallel (MAX_JOBS=8 each). causal-conv1d's
# forward and backward units are also split for a parallel build (below). Measured on an H200
# machine's 16 cores, 2026-12-03: unsplit, causal_conv1d 414 s (mamba_ssm 196 s; both at nice 19
# 373 s); split, both in 172 s alone (causal_conv1d 152 s, mamba_ssm 160 s) and 199 s niced
# beside a training job.
# Needs the two sdists in .gpu/ (carried) and nvcc, ninja and torch on the machine.
set -euo pipefail
ARCH=${1:-90}
SITE=${SITE:-/tmp/reprflow-site}
BUILD=/tmp/reprflow-build
rm -rf "$BUILD" && mkdir -p "$BUILD/wheels"
start=$(date +%s)
for sdist in .gpu/mamba_ssm-*.tar.gz .gpu/causal_conv1d-*.tar.gz; do
  tar xzf "$sdist" -C "$BUILD"
done
for setup in "$BUILD"/*/setup.py; do
  # each `cc_flag.append("-gencode")` + `cc_flag.append("arch=compute_N,code=sm_N")` pair with
  # N != ARCH becomes `pass` (an `if` block may then hold only passes, still valid Python)
  python3 - "$setup" "$ARCH" <<'EOF'
import re, sys
path, arch = sys.argv[1], sys.argv[2]
src = open(path).read()
pair = re.compile(r'^(\s*)cc_flag\.append\("-gencode"\)\n\s*cc_flag\.append\("arch=compute_(\d+a?),code=sm_\d+a?"\)\n', re.M)
kept = []
def keep_or_drop(m):
    if m.group(2) == arch:
        kept.append(m.group(2))
        return m.group(0)
    return f"{m.group(1)}pass\n"
out = pair.sub(keep_or_drop, src)
if not kept:
    sys.exit(f"{path}: no -gencode pair for sm_{arch}; setup.py changed, edit this script")
open(path, "w").write(out)
print(f"{path}: kept sm_{arch} only")
EOF
done
# causal-conv1d's build time is its two big translation units (forward, backward: 18 explicit
# template instantiations each, every one a family of kernels). Split each into parts of
# $SPLIT instantiations (the same template code, disjoint instantiations, so no symbol is defined
# twice) so that MAX_JOBS compiles them side by side; SPLIT=0 keeps the package's files. If the
# split build fails, the script builds the package's own files once more before giving up.
SPLIT=${SPLIT:-3}
split_units() {  # $1: the causal_conv1d source dir
  python3 - "$1" "$SPLIT" <<'SPLITEOF'
import sys
from pathlib import Path
root, per = Path(sys.argv[1]), int(sys.argv[2])
setup = (root / "setup.py").read_text()
for name in ("causal_conv1d_fwd", "causal_conv1d_bwd"):
    src = (root / "csrc" / f"{name}.cu").read_text().splitlines(keepends=True)
    inst = [i for i, line in enumerate(src) if line.startswith("template void ")]
    if not inst or any(line.strip() for line in src[inst[0]:] if not line.startswith("template void ")):
        sys.exit(f"{name}.cu: explicit instantiations are not the file's last lines; edit this script")
    body, lines = "".join(src[:inst[0]]), [src[i] for i in inst]
    parts = [lines[k:k + per] for k in range(0, len(lines), per)]
    names = []
    for k, part in enumerate(parts):
        (root / "csrc" / f"{name}_part{k}.cu").write_text(body + "".join(part))
        names.append(f'"csrc/{name}_part{k}.cu"')
    old = f'"csrc/{name}.cu"'
    if setup.count(old) != 1:
        sys.exit(f"setup.py: expected {old} once; edit this script")
    setup = setup.replace(old, ", ".join(names))
    print(f"{name}.cu: {len(lines)} instantiations in {len(parts)} units")
(root / "setup.py").write_text(setup)
SPLITEOF
}

build() {  # $1: source dir; output in $BUILD/<name>.log
  local name; name=$(basename "$1")
  ( cd "$1" && MAX_JOBS=8 MAMBA_FORCE_BUILD=TRUE CAUSAL_CONV1D_FORCE_BUILD=TRUE \
      python3 -m pip wheel -q --no-deps --no-build-isolation --no-index -w "$BUILD/wheels" . ) \
    > "$BUILD/$name.log" 2>&1 && echo "built $name in $(( $(date +%s) - start )) s" \
    || { echo "FAILED $name: tail of $BUILD/$name.log"; tail -30 "$BUILD/$name.log"; return 1; }
}
conv_dir=$(dirname "$(ls "$BUILD"/causal_conv1d-*/setup.py)")
if [ "$SPLIT" -gt 0 ]; then
  cp -r "$conv_dir" "$BUILD/causal_conv1d.orig"
  split_units "$conv_dir" || exit 1
fi
pids=()
for setup in "$BUILD"/*/setup.py; do
  case "$setup" in */causal_conv1d.orig/*) continue ;; esac
  build "$(dirname "$setup")" & pids+=($!)
done
rc=0; for p in "${pids[@]}"; do wait "$p" || rc=1; done
if [ $rc -ne 0 ] && [ "$SPLIT" -gt 0 ] && [ -z "$(ls "$BUILD"/wheels/causal_conv1d-*.whl 2>/dev/null)" ]; then
  echo "the split causal_conv1d build failed: building the package's own files"
  rm -rf "$conv_dir" && mv "$BUILD/causal_conv1d.orig" "$conv_dir"
  rc=0; build "$conv_dir" || rc=1
  [ -n "$(ls "$BUILD"/wheels/mamba_ssm-*.whl 2>/dev/null)" ] || rc=1
fi
[ $rc -eq 0 ] || exit 1
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$SITE" "$BUILD"/wheels/*.whl
ls -la "$BUILD/wheels"
PYTHONPATH="$SITE" python3 -c "import torch, selective_scan_cuda, causal_conv1d_cuda, mamba_ssm, causal_conv1d; print('compiled kernels import: mamba_ssm', mamba_ssm.__version__, 'causal_conv1d', causal_conv1d.__version__)"
echo "compiled kernels built and installed in $(( $(date +%s) - start )) s"
