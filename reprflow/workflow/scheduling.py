"""How many GPU jobs run at once on one machine, decided before any job starts (no torch).

Every GPU rule (extraction, its shards, the theory check) requests the Snakemake resource
``gpu`` (``config.execution.<phase>.gpus``). Snakemake only limits a resource the user
provides, so a plain ``snakemake --cores 8`` would start eight extraction jobs on one GPU.
The Snakefile therefore provides ``gpu`` itself when the user did not
(:func:`default_gpu_resource`): the number of visible GPUs, at least 1, so GPU jobs never
outnumber GPUs (on a machine without a GPU they run one at a time on the CPU). Each job
then claims its own GPU (:func:`reprflow.devices.claim_gpu`). ``--resources gpu=N`` on
the command line (or in a profile) always wins; cluster executors (SLURM) are left alone,
as each submitted job gets its own GPU from the scheduler.

``execution.jobs_per_gpu`` (default 2) starts that many GPU jobs per visible GPU: while one
computes, the next does its start-up (imports, prompts, tokenizer, a checkpoint read into host
memory) and waits for the GPU, which it takes the moment it is released, longest job first
(:mod:`reprflow.devices`). On a local run the Snakefile sets :data:`SHARED_ENV`, so every job
claims its GPU even where only one is visible, and two jobs never compute on one GPU at once.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Mapping

__all__ = ["SHARED_ENV", "default_gpu_resource", "visible_gpu_count"]

SHARED_ENV = "REPRFLOW_SHARED_GPUS"
"""Set to ``1`` by the Snakefile on a local run: GPU jobs may outnumber the GPUs, so a job claims
its GPU (:func:`reprflow.devices.claim_gpu`) even when only one is visible. Equal to
:data:`reprflow.devices.SHARED_ENV`, which the jobs read (tested; not imported from there, which
would bring torch into the Snakefile)."""


def visible_gpu_count(env: Mapping[str, str] | None = None, *, nvidia_smi: str | None = "nvidia-smi") -> int:
    """GPUs this process may use: ``CUDA_VISIBLE_DEVICES`` when set (``""`` or ``-1``: none),
    else the ``GPU i:`` lines of ``nvidia-smi -L``, else 0. Never imports torch."""
    env = os.environ if env is None else env
    visible = env.get("CUDA_VISIBLE_DEVICES")
    if visible is not None:
        ids = [v.strip() for v in visible.split(",") if v.strip()]
        # CUDA stops at the first invalid id, e.g. "-1" hides every GPU
        count = 0
        for gpu in ids:
            if gpu.startswith("-"):
                break
            count += 1
        return count
    exe = shutil.which(nvidia_smi) if nvidia_smi else None
    if exe is None:
        return 0
    try:
        listed = subprocess.run([exe, "-L"], capture_output=True, text=True, timeout=30, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return 0
    return sum(1 for line in listed.stdout.splitlines() if line.startswith("GPU "))


def default_gpu_resource(
    provided: Mapping[str, object],
    *,
    local: bool,
    env: Mapping[str, str] | None = None,
    nvidia_smi: str | None = "nvidia-smi",
    jobs_per_gpu: int = 1,
) -> int | None:
    """The ``gpu`` resource to provide when the user provided none, or None to leave it be:
    ``jobs_per_gpu`` x the visible GPUs, or 1 where none is visible (GPU jobs then run one at a
    time on the CPU).

    Parameters
    ----------
    provided : mapping
        The resources given on the command line or in a profile (``--resources``).
    local : bool
        True when jobs run on this machine (not submitted to a cluster).
    jobs_per_gpu : int
        ``execution.jobs_per_gpu``.
    """
    if "gpu" in provided or not local:
        return None
    visible = visible_gpu_count(env, nvidia_smi=nvidia_smi)
    return visible * jobs_per_gpu if visible else 1
