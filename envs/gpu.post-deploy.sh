#!/usr/bin/env bash
# Snakemake runs this once after creating envs/gpu.yaml (post-deploy script), inside the env.
# Installs mamba-ssm (and optionally causal-conv1d) from sdist; see the comments in gpu.yaml.
set -euo pipefail
if [ "${REPRFLOW_BUILD_CUDA:-0}" = "1" ]; then
  # Their setup.py ignore TORCH_CUDA_ARCH_LIST and build ~8 architectures (CUDA 13: > 7 min);
  # benchmarks/build_compiled_kernels.sh builds one (docs/kernels.md). Only needed for training
  # Mamba-1/Mamba2 on a GPU (docs/training.md); extraction keeps the project's Triton kernels.
  export TORCH_CUDA_ARCH_LIST="${TORCH_CUDA_ARCH_LIST:-9.0}"
  CAUSAL_CONV1D_FORCE_BUILD=TRUE pip install --no-build-isolation --no-deps causal-conv1d==1.7.0
  MAMBA_FORCE_BUILD=TRUE pip install --no-build-isolation --no-deps mamba-ssm==2.3.2.post1
else
  MAMBA_SKIP_CUDA_BUILD=TRUE MAMBA_FORCE_BUILD=TRUE pip install --no-build-isolation --no-deps mamba-ssm==2.3.2.post1
fi
pip show mamba-ssm >/dev/null  # installed; reprflow.kernels.optional imports its Triton kernels at run time
