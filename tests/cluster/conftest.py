"""A real single-node SLURM cluster for the tests, and the reduced configs they run.

The cluster comes from scripts/slurm-local.sh (Debian's slurm-wlm + munge + slurmdbd, as root,
no systemd). Where that is impossible (not root, no apt-get and no SLURM installed) the SLURM
tests skip with the reason, unless ``REPRFLOW_REQUIRE_SLURM=1`` (set by .ci/run), which turns
the skip into a failure so CI can never pass without running them.
"""

from __future__ import annotations

import copy
import os
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from reprflow.config import PROJECT_ROOT

SLURM_LOCAL = PROJECT_ROOT / "scripts" / "slurm-local.sh"
DEMO_CONFIG = PROJECT_ROOT / "config" / "demo.yaml"
OUT = yaml.safe_load(DEMO_CONFIG.read_text())["out_dir"]
"""Where the reduced configs write (the demo's ``out_dir``), relative to the scratch project."""


def slurm_unavailable() -> str | None:
    """Why a local SLURM cluster cannot be started here, or None if it can."""
    if os.geteuid() != 0:
        return "needs root: scripts/slurm-local.sh starts munged, slurmctld, slurmd and slurmdbd"
    if shutil.which("slurmctld") is None and shutil.which("apt-get") is None:
        return "needs apt-get to install Debian's slurm-wlm and munge (or SLURM already installed)"
    return None


def _skip_or_fail(reason: str) -> None:
    if os.environ.get("REPRFLOW_REQUIRE_SLURM") == "1":
        pytest.fail(f"REPRFLOW_REQUIRE_SLURM=1 but the SLURM tests cannot run: {reason}")
    pytest.skip(reason)


@pytest.fixture(scope="session")
def slurm_cluster(tmp_path_factory, release_slurm):
    """Bring a local SLURM cluster (with accounting) up for the session; down at the end (of the
    whole run under pytest-xdist)."""
    reason = slurm_unavailable()
    if reason:
        _skip_or_fail(reason)
    log = tmp_path_factory.mktemp("slurm-local") / "up.log"
    with open(log, "w") as fh:  # a file, not a pipe: the daemons it starts may inherit stdout
        up = subprocess.run(["bash", str(SLURM_LOCAL), "up"], stdout=fh, stderr=subprocess.STDOUT, timeout=900)
    if up.returncode != 0:
        tail = log.read_text()[-3000:]
        if "apt-get" in tail or "Could not resolve" in tail or "Unable to locate" in tail:
            _skip_or_fail(f"scripts/slurm-local.sh up could not install SLURM: {tail}")
        pytest.fail(f"scripts/slurm-local.sh up failed (exit {up.returncode}):\n{tail}")
    try:
        yield
    finally:
        if os.environ.get("REPRFLOW_KEEP_SLURM") != "1":
            release_slurm(log)  # down now, or (pytest-xdist) after the last worker


def reduced_config(
    *,
    n_prompts: int,
    slow_model: bool = False,
    gpus: int = 0,
    length: int | None = None,
    shards: int = 1,
    tokens: str = "store",
) -> dict:
    """The demo config cut to one cell: tiny-pythia, its first init, task and length.
    Outputs go to the demo's ``out_dir`` (``OUT``). The model is built (a tiny random model with
    its own GPT-NeoX-20B tokenizer), not trained as in the demo: these tests are about scheduling.

    Parameters
    ----------
    n_prompts : int
        Prompts per set.
    slow_model : bool
        Widen and deepen the tiny model (hidden 256, 6 blocks) and use batch size 2, so
        extraction takes several seconds over 4+ windows: long enough to kill it mid-way.
    gpus : int
        ``execution.extraction.gpus``: GPUs the extraction job requests from the scheduler
        (the computation stays on the CPU; the local cluster's GPU is a fake gres).
    shards : int
        ``execution.extraction.shards``: extraction jobs per store.
    length : int, optional
        The one prompt length; default the demo's first.
    tokens : {"store", "stream"}
        ``extraction.tokens``.
    """
    raw = yaml.safe_load(DEMO_CONFIG.read_text())
    cfg = copy.deepcopy(raw)
    cfg["models"] = [m for m in raw["models"] if m["family"] == "gpt_neox"][:1]
    model = cfg["models"][0]
    model.pop("train")
    model.update(tokenizer="gpt-neox-20b", tiny={"seed": 2})
    if slow_model:
        cfg["models"][0]["tiny"]["overrides"] = {"hidden_size": 256, "num_hidden_layers": 6, "intermediate_size": 1024}
        cfg["execution"]["extraction"]["batch_size"] = 2
    cfg["inits"] = raw["inits"][:1]
    cfg["tasks"] = raw["tasks"][:1]
    cfg.pop("custom_tasks", None)
    cfg["lengths"] = [length] if length is not None else raw["lengths"][:1]
    cfg["prompts"]["n_prompts"] = n_prompts
    cfg["execution"]["extraction"]["gpus"] = gpus
    cfg["execution"]["extraction"]["shards"] = shards
    cfg["extraction"]["tokens"] = tokens
    cfg["probes"]["seeds"] = raw["probes"]["seeds"][:1]
    cfg["figures"]["length"] = cfg["lengths"][0]
    cfg["theory"].update(n_grid=[16], sigma2_grid=[1.0], n_mc=16, depths=[1], depth_n_grid=[16])
    return cfg


def write_config(cfg: dict, path: Path) -> Path:
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return path


@pytest.fixture(scope="session")
def cell_config():
    """``cell_config(path, **reduced_config_options)``: write a one-cell config, return its path."""

    def make(path: Path, **options) -> Path:
        return write_config(reduced_config(**options), path)

    return make


@pytest.fixture(scope="session")
def dvc_env(workflow_env) -> dict[str, str]:
    """The workflow environment, without DVC analytics; git never opens an editor."""
    return dict(workflow_env, DVC_NO_ANALYTICS="1", GIT_EDITOR="true", GIT_TERMINAL_PROMPT="0")
