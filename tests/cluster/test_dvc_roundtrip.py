"""DVC versions the heavy data: push, then a fresh clone + pull gets the results without
recomputing them, and a config change reruns only the stages that read the changed keys.

One scenario for the module, in a scratch git repo made from the checkout's working tree
(tracked and untracked-but-not-ignored files, i.e. what the lead would commit), with
config/demo.yaml (the file dvc.yaml's CONFIG names) cut to one small cell. The default
remote ``storage`` (.dvc/config) is pointed at a temporary folder with
``dvc remote modify --local``, exactly as a user points it elsewhere.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from reprflow.config import PROJECT_ROOT, validate_config
from reprflow.workflow.lineage import render

from .conftest import OUT

pytestmark = pytest.mark.slow

DVC = str(Path(sys.executable).with_name("dvc"))
STAGES = ("models", "prompts", "activations", "metrics", "theory", "report")
RESULTS = tuple(
    f"{OUT}/results/{name}" for name in ("table1.csv", "table2.csv", "report.md", "metrics", "activations", "theory")
)
GIT_ID = ("-c", "user.name=reprflow-test", "-c", "user.email=reprflow-test@example.invalid")


def _run(argv, cwd: Path, env: dict, timeout: int = 900) -> subprocess.CompletedProcess:
    run = subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert run.returncode == 0, (
        f"{' '.join(map(str, argv))} failed in {cwd}:\n{run.stdout[-3000:]}\n{run.stderr[-3000:]}"
    )
    return run


def _files(root: Path) -> dict[str, bytes]:
    if root.is_file():
        return {"": root.read_bytes()}
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def _scratch_repo(dest: Path, cell: dict, env: dict) -> Path:
    """A git repo holding the checkout's working tree, with config/demo.yaml = ``cell``."""
    listed = (
        subprocess.run(
            ["git", "ls-files", "-co", "--exclude-standard", "-z"], cwd=PROJECT_ROOT, capture_output=True, check=True
        )
        .stdout.decode()
        .split("\0")
    )
    for rel in filter(None, listed):
        src = PROJECT_ROOT / rel
        if src.is_file():
            (dest / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / rel)
    (dest / "config" / "demo.yaml").write_text(yaml.safe_dump(cell, sort_keys=False))
    # dvc.yaml as `python -m reprflow.workflow.lineage --write` gives it for this config
    (dest / "dvc.yaml").write_text(render("config/demo.yaml", validate_config(cell), root=dest))
    _run(["git", "init", "-q"], dest, env)
    _run(["git", "add", "-A"], dest, env)
    _run(["git", *GIT_ID, "commit", "-q", "-m", "scratch copy of the working tree"], dest, env)
    return dest


@dataclass
class RoundTrip:
    repo: Path
    clone: Path
    pull_status: str
    repro_after_pull: str
    dry_run_after_touch: str
    status_after_change: str
    repro_after_change: str
    status_after_rerun: str
    before_change: dict[str, dict[str, bytes]]
    activations_mtimes: dict[str, int]


@pytest.fixture(scope="module")
def roundtrip(tmp_path_factory, cell_config, dvc_env):
    base = tmp_path_factory.mktemp("dvc")
    cell = yaml.safe_load(cell_config(base / "cell.yaml", n_prompts=32, length=320).read_text())
    env = dvc_env
    repo = _scratch_repo(base / "repo", cell, env)
    remote = base / "remote"
    _run([DVC, "remote", "modify", "--local", "storage", "url", str(remote)], repo, env)
    _run([DVC, "repro"], repo, env)
    _run(["git", "add", "dvc.lock"], repo, env)
    _run(["git", *GIT_ID, "commit", "-q", "-m", "dvc repro"], repo, env)
    _run([DVC, "push"], repo, env)

    clone = base / "clone"
    _run(["git", "clone", "-q", str(repo), str(clone)], base, env)
    _run([DVC, "remote", "modify", "--local", "storage", "url", str(remote)], clone, env)
    _run([DVC, "pull"], clone, env)
    pull_status = _run([DVC, "status"], clone, env).stdout
    repro_after_pull = _run([DVC, "repro"], clone, env).stdout
    assert not (clone / OUT / "logs").exists(), "dvc repro after a pull ran Snakemake"
    smk = str(Path(sys.executable).with_name("snakemake"))
    smk_args = ("--cores", "1", "--configfile", "config/demo.yaml")
    # record every pulled output in .snakemake/ (mtimes in DAG order, params, code), so that
    # Snakemake's own rerun triggers work in this clone as in the one that computed them
    _run([smk, "--touch", "--forceall", *smk_args], clone, env)
    dry_run = _run([smk, "-n", *smk_args], clone, env).stdout
    before = {rel: _files(clone / rel) for rel in RESULTS}
    mtimes = {
        str(p.relative_to(clone)): p.stat().st_mtime_ns
        for p in (clone / OUT / "results" / "activations").rglob("*")
        if p.is_file()
    }

    # a key only the metrics stage reads (dvc.yaml: metrics params = [metrics, probes])
    cell["probes"]["epochs"] = cell["probes"]["epochs"] // 2
    (clone / "config" / "demo.yaml").write_text(yaml.safe_dump(cell, sort_keys=False))
    status_after_change = _run([DVC, "status"], clone, env).stdout
    repro_after_change = _run([DVC, "repro"], clone, env).stdout
    status_after_rerun = _run([DVC, "status"], clone, env).stdout
    return RoundTrip(
        repo,
        clone,
        pull_status,
        repro_after_pull,
        dry_run,
        status_after_change,
        repro_after_change,
        status_after_rerun,
        before,
        mtimes,
    )


def test_fresh_clone_pull_has_the_pushed_results_bytewise(roundtrip):
    for rel in RESULTS:
        pushed = _files(roundtrip.repo / rel)
        assert pushed, rel
        assert roundtrip.before_change[rel] == pushed, rel


def test_nothing_is_recomputed_after_a_pull(roundtrip):
    assert "Data and pipelines are up to date" in roundtrip.pull_status, roundtrip.pull_status
    for stage in STAGES:
        assert f"Stage '{stage}' didn't change, skipping" in roundtrip.repro_after_pull, roundtrip.repro_after_pull
    assert "Running stage" not in roundtrip.repro_after_pull
    assert "Nothing to be done" in roundtrip.dry_run_after_touch, roundtrip.dry_run_after_touch[-2000:]


def test_config_change_reruns_only_the_stages_that_read_it(roundtrip):
    assert _changed_stages(roundtrip.status_after_change) == ["metrics"], roundtrip.status_after_change
    ran = re.findall(r"Running stage '(\w+)'", roundtrip.repro_after_change)
    skipped = re.findall(r"Stage '(\w+)' didn't change, skipping", roundtrip.repro_after_change)
    assert ran == ["metrics", "report"], roundtrip.repro_after_change
    assert sorted(skipped) == ["activations", "models", "prompts", "theory"], roundtrip.repro_after_change
    assert "Data and pipelines are up to date" in roundtrip.status_after_rerun, roundtrip.status_after_rerun


def test_config_change_leaves_upstream_data_untouched(roundtrip):
    clone = roundtrip.clone
    assert _files(clone / OUT / "results" / "activations") == roundtrip.before_change[f"{OUT}/results/activations"]
    for rel, mtime in roundtrip.activations_mtimes.items():
        assert (clone / rel).stat().st_mtime_ns == mtime, f"{rel} was rewritten"
    # the probes were redone with the new epochs; the token metrics were not touched
    metrics = _files(clone / OUT / "results" / "metrics")
    before = roundtrip.before_change[f"{OUT}/results/metrics"]
    probes = {k: v for k, v in metrics.items() if k.endswith("probes.csv")}
    assert probes and all(before[k] != v for k, v in probes.items())
    token = {k: v for k, v in metrics.items() if "/token_metrics/" in k}
    assert token and all(before[k] == v for k, v in token.items())


def _changed_stages(status: str) -> list[str]:
    return [line.strip().rstrip(":") for line in status.splitlines() if re.match(r"^\S+:$", line)]


@pytest.mark.parametrize(
    ("module", "expected"),
    [
        # this cell stores token states (reduced_config's tokens: store): its extraction imports the streamed
        # metrics' code but never runs it (lineage.STREAMED_METRICS_CODE), so a metric edit flags the
        # metrics stage only; with tokens: stream (the paper's setting) activations too
        ("reprflow/metrics/cka.py", ["metrics"]),
        # the Mamba-1 scan also has the training backward (reprflow/training runs in the models stage)
        ("reprflow/kernels/selective_scan.py", ["models", "activations"]),
        ("reprflow/pipeline/tables.py", ["report"]),
    ],
)
def test_a_code_change_flags_exactly_the_stages_that_run_it(roundtrip, dvc_env, module, expected):
    """In the scratch repo (never the checkout): edit one module, ask `dvc status`, restore."""
    path = roundtrip.repo / module
    original = path.read_bytes()
    try:
        path.write_bytes(original + b"\n# a change DVC must see\n")
        status = _run([DVC, "status"], roundtrip.repo, dvc_env).stdout
    finally:
        path.write_bytes(original)
    assert _changed_stages(status) == expected, status
    assert f"modified:           {module}" in status or module in status, status


def test_metrics_and_plots_are_declared(roundtrip, dvc_env):
    shown = _run([DVC, "metrics", "show", "--json"], roundtrip.repo, dvc_env).stdout
    assert "last_accuracy" in shown and '"Sm"' in shown, shown[:2000]
    plots = yaml.safe_load((roundtrip.repo / "dvc.yaml").read_text())["plots"]
    assert f"{OUT}/results/figures" in plots
