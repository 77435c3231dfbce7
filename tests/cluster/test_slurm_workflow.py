"""The workflow on a real (local, single-node) SLURM cluster through profiles/slurm.

One scenario runs once for the module, on a one-cell config (a wider tiny Pythia, 64
prompts, extraction requesting one GPU from the scheduler):

1. ``snakemake --profile profiles/slurm`` starts; once the extraction job has finished
   some but not all of its windows, the test ``scancel``s it, and that run fails;
2. the same command again resumes the extraction and finishes the tables;
3. meanwhile a plain local run of the same config runs in another scratch project;
4. the same config with ``execution.extraction.shards: 2`` runs through the profile in a
   third scratch project, given the tiny model and prompt set of step 1 (started once step 1's
   extraction is killed, alongside step 2): its shard jobs must get the GPU and partition of an
   unsharded extraction.

The tests then check the SLURM accounting (sacct), the resume, the kept logs, and that
the SLURM outputs equal the local ones.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import yaml
import zarr

from reprflow.store import partial_path
from reprflow.workflow.targets import ACTIVATIONS, SHARD

from .conftest import OUT

pytestmark = [pytest.mark.slurm, pytest.mark.slow]

TABLES = (f"{OUT}/results/table1.csv", f"{OUT}/results/table2.csv")
RULES = ("build_tiny_model", "prompts", "extract_activations", "token_metrics", "probes", "tables")
GPU_RULES = ("extract_activations", "extract_activation_shard")
# CI-only overrides of the profile, each for a reason:
# * status checks every 2 s instead of 40 s: the tiny jobs take seconds, not hours;
# * rule memory requests cut to 1 GB: the rules ask up to 32 GB (extraction with a GPU),
#   more than a 2-core CI machine has, and SLURM refuses requests no node can hold;
#   this also drops the profile's set-resources (extraction cpus_per_task=4 > 2 cores).
CI_OVERRIDES = (
    "--slurm-init-seconds-before-status-checks",
    "2",
    "--set-resources",
    "extract_activations:mem_mb=1000",
    "extract_activation_shard:mem_mb=1000",
    "token_metrics:mem_mb=1000",
    "probes:mem_mb=1000",
)
SUBMITTED = re.compile(r"submitted with SLURM jobid (\d+) \(log: (\S+)\)")


@dataclass
class Scenario:
    local: Path
    slurm: Path
    store: str
    killed_output: str
    killed_returncode: int
    rerun: subprocess.CompletedProcess
    local_output: str
    local_returncode: int
    submissions: list[tuple[int, str, str]]  # (SLURM job id, rule, SLURM log path), in order
    sharded: subprocess.CompletedProcess  # step 4: the same cell in 2 shards, in base/slurm-sharded (output in stdout)
    shard_submissions: list[tuple[int, str, str]]
    cancelled_job: int
    windows_done_at_kill: int
    n_windows: int
    chunks_at_kill: dict[str, tuple[int, int]]  # chunk path in the store -> (inode, mtime_ns)


def _submissions(output: str) -> list[tuple[int, str, str]]:
    out = []
    for jobid, log in SUBMITTED.findall(output):
        rule = re.search(r"/rule_([A-Za-z0-9_]+)/", log).group(1)
        out.append((int(jobid), rule, log))
    return out


def _kill_extraction_mid_way(proc, output_log: Path, partial: Path, *, timeout: float = 600):
    """Wait until the extraction job has finished >= 1 but not all windows, then scancel it."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(
                f"snakemake exited ({proc.returncode}) before the extraction could be killed:\n"
                + output_log.read_text()[-3000:]
            )
        jobs = [j for j, rule, _ in _submissions(output_log.read_text()) if rule == "extract_activations"]
        done = sorted(int(p.name) for p in partial.glob("_done/c/*"))
        if jobs and done:
            n_windows = json.loads((partial / "_done" / "zarr.json").read_text())["shape"][0]
            if len(done) >= n_windows:
                pytest.fail(
                    f"extraction finished all {n_windows} windows before it could be killed; "
                    "make the test model slower (reduced_config(slow_model=True))"
                )
            chunks = {
                str(p.relative_to(partial)): (p.stat().st_ino, p.stat().st_mtime_ns)
                for w in done
                for p in partial.glob(f"last/c/*/{w}/*")
            }
            subprocess.run(["scancel", str(jobs[0])], check=True)
            return jobs[0], len(done), n_windows, chunks
        time.sleep(0.05)
    pytest.fail("timed out waiting for the extraction job to write its first window")


@pytest.fixture(scope="module")
def scenario(
    slurm_cluster, tmp_path_factory, scratch_project, spawn_snakemake, stop_snakemake, run_snakemake, cell_config
):
    base = tmp_path_factory.mktemp("slurm-run")
    # 320 tokens: a length the item-count calibration hits for the GPT-NeoX tokenizer
    config = cell_config(base / "cell.yaml", n_prompts=64, slow_model=True, gpus=1, length=320)
    cell = yaml.safe_load(config.read_text())
    keys = dict(
        model=cell["models"][0]["name"], init=cell["inits"][0]["name"], task=cell["tasks"][0], length=cell["lengths"][0]
    )
    store = f"{OUT}/{ACTIVATIONS.format(**keys)}"
    sharded_config = cell_config(base / "sharded.yaml", n_prompts=64, slow_model=True, gpus=1, length=320, shards=2)
    local, slurm = scratch_project(base / "local"), scratch_project(base / "slurm")
    cfg_arg = f"--configfile={config}"
    slurm_args = ("--profile", "profiles/slurm", *CI_OVERRIDES, cfg_arg, "--", *TABLES)

    local_proc = spawn_snakemake(local, "--cores", "1", cfg_arg, "--", *TABLES, log=base / "local.log")
    first = spawn_snakemake(slurm, *slurm_args, log=base / "slurm-killed.log")
    sharded_proc = None
    try:
        cancelled, n_done, n_windows, chunks = _kill_extraction_mid_way(
            first, base / "slurm-killed.log", partial_path(slurm / store)
        )
        # step 4 overlaps steps 1 and 2 (most of a tiny SLURM job's time is the wait for its next
        # status check): the extraction was running, so the tiny model and prompt set exist and
        # are final. They are copied (mtimes kept), so only the shards and what reads them are submitted
        sharded_root = scratch_project(base / "slurm-sharded")
        shutil.copytree(slurm / OUT / "data", sharded_root / OUT / "data", symlinks=True)
        sharded_args = ("--profile", "profiles/slurm", *CI_OVERRIDES, f"--configfile={sharded_config}", "--", *TABLES)
        sharded_proc = spawn_snakemake(sharded_root, *sharded_args, log=base / "slurm-sharded.log")
        first.wait(timeout=300)
        rerun = run_snakemake(slurm, *slurm_args, timeout=900)
        local_proc.wait(timeout=900)
        sharded_proc.wait(timeout=900)
    finally:
        stop_snakemake(first)
        stop_snakemake(local_proc)
        if sharded_proc is not None:
            stop_snakemake(sharded_proc)
    sharded = subprocess.CompletedProcess(
        sharded_proc.args, sharded_proc.returncode, (base / "slurm-sharded.log").read_text(), ""
    )
    killed_output = (base / "slurm-killed.log").read_text()
    return Scenario(
        local=local,
        slurm=slurm,
        store=store,
        killed_output=killed_output,
        killed_returncode=first.returncode,
        rerun=rerun,
        local_output=(base / "local.log").read_text(),
        local_returncode=local_proc.returncode,
        submissions=_submissions(killed_output) + _submissions(rerun.stdout + rerun.stderr),
        sharded=sharded,
        shard_submissions=_submissions(sharded.stdout + sharded.stderr),
        cancelled_job=cancelled,
        windows_done_at_kill=n_done,
        n_windows=n_windows,
        chunks_at_kill=chunks,
    )


def _sacct(job_ids) -> dict[int, tuple[str, str]]:
    """SLURM accounting of the given jobs: id -> (State, AllocTRES)."""
    out = subprocess.run(
        ["sacct", "-X", "-P", "-n", "-o", "JobID,State,AllocTRES", "-j", ",".join(map(str, job_ids))],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    rows = [line.split("|") for line in out.splitlines() if line.strip()]
    return {int(r[0]): (r[1].split()[0], r[2]) for r in rows}


def _sacct_partitions(job_ids) -> dict[int, str]:
    out = subprocess.run(
        ["sacct", "-X", "-P", "-n", "-o", "JobID,Partition", "-j", ",".join(map(str, job_ids))],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return {int(r.split("|")[0]): r.split("|")[1] for r in out.splitlines() if r.strip()}


def _cell_keys(scenario) -> dict:
    model, init, cell = Path(scenario.store).parts[-3:]
    task, length = cell.removesuffix(".zarr").split("_n")
    return dict(model=model, init=init, task=task, length=length)


def test_both_runs_finish(scenario):
    assert scenario.local_returncode == 0, scenario.local_output[-3000:]
    out = scenario.rerun.stdout + scenario.rerun.stderr
    assert scenario.rerun.returncode == 0, out[-3000:]
    for table in TABLES:
        assert (scenario.slurm / table).stat().st_size > 0


def test_every_rule_ran_as_a_slurm_job_that_sacct_reports_completed(scenario):
    jobs = scenario.submissions
    accounting = _sacct([j for j, _, _ in jobs])
    assert sorted(accounting) == sorted(j for j, _, _ in jobs), "sacct lacks jobs Snakemake submitted"
    by_rule: dict[str, list[str]] = {}
    for job, rule, _ in jobs:
        by_rule.setdefault(rule, []).append(accounting[job][0])
    # the killed extraction is the only job that did not complete; nothing upstream reran
    expected = {rule: ["COMPLETED"] for rule in RULES}
    expected["extract_activations"] = ["CANCELLED", "COMPLETED"]
    assert by_rule == expected
    assert accounting[scenario.cancelled_job][0] == "CANCELLED"


def test_only_the_extraction_and_its_shards_request_a_gpu(scenario):
    out = scenario.sharded.stdout + scenario.sharded.stderr
    assert scenario.sharded.returncode == 0, out[-3000:]
    jobs = scenario.submissions + scenario.shard_submissions
    accounting = _sacct([j for j, _, _ in jobs])
    partitions = _sacct_partitions([j for j, _, _ in jobs])
    shards = [job for job, rule, _ in scenario.shard_submissions if rule == "extract_activation_shard"]
    assert len(shards) == 2, scenario.shard_submissions
    assert not {"build_tiny_model", "prompts"} & {rule for _, rule, _ in scenario.shard_submissions}  # copied
    unsharded = {partitions[job] for job, rule, _ in scenario.submissions if rule == "extract_activations"}
    for job, rule, _ in jobs:
        tres = accounting[job][1]
        if rule in GPU_RULES:
            assert "gres/gpu=1" in tres, (rule, tres)  # gpu=1 resource -> sbatch --gpus=1
            assert {partitions[job]} == unsharded, (rule, partitions[job], unsharded)
        else:
            assert "gpu" not in tres, (rule, tres)
    for i in range(2):
        assert (
            scenario.slurm.parent / "slurm-sharded" / OUT / SHARD.format(**_cell_keys(scenario), shard=i, nshards=2)
        ).is_dir()


def test_killed_extraction_resumes_without_recomputing_finished_windows(scenario):
    assert 1 <= scenario.windows_done_at_kill < scenario.n_windows
    store = scenario.slurm / scenario.store
    assert not partial_path(store).exists()
    # the chunks of the windows finished before the kill are the very same files, untouched
    for rel, (inode, mtime_ns) in scenario.chunks_at_kill.items():
        st = (store / rel).stat()
        assert (st.st_ino, st.st_mtime_ns) == (inode, mtime_ns), rel
    log = (scenario.slurm / OUT / "logs" / "activations").rglob("*.log")
    text = "\n".join(p.read_text() for p in log)
    resumed = [int(n) for n, total in re.findall(r"(\d+) of (\d+) windows resumed", text)]
    assert resumed and scenario.windows_done_at_kill <= resumed[-1] < scenario.n_windows, text[-2000:]


def test_failed_job_log_is_kept_and_the_error_names_it(scenario):
    assert scenario.killed_returncode != 0
    out = scenario.killed_output
    assert "CANCELLED" in out
    (log,) = [log for job, _, log in scenario.submissions if job == scenario.cancelled_job]
    assert Path(log).is_file() and Path(log).stat().st_size > 0
    assert log in out.split("CANCELLED", 1)[1], "the error report does not point to the SLURM log"
    assert "logs/activations/" in out.split("CANCELLED", 1)[1], "the error report does not name the rule log"
    # logs of successful jobs are kept too (profile: slurm-keep-successful-logs)
    for job, rule, log in scenario.submissions:
        assert Path(log).is_file(), (rule, log)


def _files(root: Path) -> dict[str, Path]:
    return {
        str(p.relative_to(root)): p for p in sorted(root.rglob("*")) if p.is_file() and p.name != ".snakemake_timestamp"
    }


def test_slurm_outputs_equal_the_local_run_bytewise(scenario):
    """Same code, same seeds, same CPU float32 kernels: every table and metric file is
    byte-identical, and so are the (killed and resumed) activations."""
    for rel in (*TABLES, f"{OUT}/results/metrics"):
        local, slurm = scenario.local / rel, scenario.slurm / rel
        if local.is_file():
            assert slurm.read_bytes() == local.read_bytes(), rel
            continue
        lf, sf = _files(local), _files(slurm)
        assert sorted(lf) == sorted(sf) and lf
        different = [name for name in lf if lf[name].read_bytes() != sf[name].read_bytes()]
        assert not different, different
    local_store = zarr.open_group(scenario.local / scenario.store, mode="r")
    slurm_store = zarr.open_group(scenario.slurm / scenario.store, mode="r")
    for name in ("last", "tokens", "labels", "n_tokens", "lengths"):
        np.testing.assert_array_equal(slurm_store[name][:], local_store[name][:], err_msg=name)
