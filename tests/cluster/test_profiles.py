"""profiles/slurm and profiles/local: the settings the issue asks for, and Snakemake accepts them.

Fast checks without a cluster; tests/cluster/test_slurm_workflow.py runs the SLURM profile for real.
"""

import re

import pytest
import yaml

from reprflow.config import PROJECT_ROOT

SLURM = yaml.safe_load((PROJECT_ROOT / "profiles" / "slurm" / "config.yaml").read_text())
LOCAL = yaml.safe_load((PROJECT_ROOT / "profiles" / "local" / "config.yaml").read_text())
GPU_RULES = ("extract_activations", "extract_activation_shard", "extract_activation_shard0")


def test_slurm_profile_uses_the_plugin_with_user_editable_partition_and_account():
    assert SLURM["executor"] == "slurm"
    defaults = SLURM["default-resources"]
    assert {"slurm_partition", "slurm_account", "mem_mb", "runtime"} <= set(defaults)
    assert defaults["mem_mb"] > 0 and defaults["runtime"] > 0
    assert "gpu" not in defaults, "CPU rules must request no GPU"
    for rule, resources in SLURM.get("set-resources", {}).items():
        assert rule in GPU_RULES or "gpu" not in resources, rule
    # the shards of a cell land where an unsharded extraction does
    for shard_rule in ("extract_activation_shard", "extract_activation_shard0"):  # shard0: tokens: stream
        assert SLURM["set-resources"][shard_rule] == SLURM["set-resources"]["extract_activations"], shard_rule


def test_slurm_profile_never_waits_forever_and_keeps_logs():
    # squeue reports a scancel'ed job as CANCELLED; sacct says "CANCELLED by <uid>", which
    # snakemake-executor-plugin-slurm 2.8.0 does not count as failed (docs/cluster.md)
    assert SLURM["slurm-status-command"] == "squeue"
    assert SLURM["slurm-keep-successful-logs"] is True
    assert SLURM["slurm-delete-logfiles-older-than"] <= 0
    assert SLURM["slurm-logdir"] == "logs/slurm"
    assert SLURM["rerun-incomplete"] is True and SLURM["show-failed-logs"] is True


def test_local_profile_runs_on_all_cores_and_leaves_the_gpu_count_to_the_snakefile():
    assert LOCAL["cores"] == "all" and LOCAL["rerun-incomplete"] is True
    assert "gpu" not in LOCAL.get("resources", {})  # rules/common.smk provides it from the visible GPUs


@pytest.mark.parametrize(
    ("profile", "shards", "tokens"),
    [("slurm", 1, "store"), ("slurm", 2, "store"), ("slurm", 2, "stream"), ("local", 2, "store")],
)
def test_snakemake_accepts_the_profile_and_only_extraction_asks_for_a_gpu(
    profile, shards, tokens, workdir, run_snakemake, cell_config
):
    config = cell_config(workdir / "cell.yaml", n_prompts=8, gpus=1, shards=shards, tokens=tokens)
    run = run_snakemake(workdir, "-n", "--profile", f"profiles/{profile}", f"--configfile={config}")
    out = run.stdout + run.stderr
    assert run.returncode == 0, out[-3000:]
    jobs = re.findall(r"^(?:local)?rule (\w+):\n(?:    .*\n)*?    resources: (.*)$", out, flags=re.M)
    rules = {rule for rule, _ in jobs}
    extraction = {"extract_activations"} if shards == 1 else {"extract_activation_shard"}
    if shards > 1 and tokens == "stream":  # shard 0's job also writes the token metrics
        extraction.add("extract_activation_shard0")
    assert {"build_tiny_model", "prompts", *extraction, "probes", "tables"} <= rules
    assert ("token_metrics" in rules) == (tokens == "store"), rules
    assert sum(rule in extraction for rule, _ in jobs) == shards
    for rule, resources in jobs:
        gpu = re.search(r"\bgpu=(\d+)", resources)
        if rule in GPU_RULES:
            assert gpu and gpu.group(1) == "1", resources
            if profile == "slurm":  # the profile's set-resources reach shard jobs too
                assert re.search(r"\bcpus_per_task=4\b", resources), (rule, resources)
        else:
            assert gpu is None or gpu.group(1) == "0", (rule, resources)
        if profile == "slurm" and not rule.startswith("all"):
            assert re.search(r"\bmem_mb=\d+", resources) and re.search(r"\bruntime=\d+", resources), (rule, resources)
