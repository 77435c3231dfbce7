"""Shared helpers: run the real Snakemake workflow in a scratch copy of the project.

Used by tests/workflow (CLI, dry runs) and tests/cluster (SLURM profile, DVC round trip).
"""

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from reprflow.config import PROJECT_ROOT

LINKED = (
    "Snakefile",
    "rules",
    "workflow_scripts",
    "reprflow",
    "config",
    "envs",
    "profiles",
    "data/lost_in_the_middle",
    "data/custom",
)
"""Checkout paths a scratch project links to (code, configs, profiles, inputs); outputs stay local."""

SNAKEMAKE = str(Path(sys.executable).with_name("snakemake"))
"""The snakemake CLI of the running interpreter's environment (the project .venv)."""


def make_workdir(dest: Path) -> Path:
    """A scratch project: code and inputs linked from the checkout, outputs local."""
    for rel in LINKED:
        target = dest / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        target.symlink_to(PROJECT_ROOT / rel)
    return dest


def offline_env() -> dict[str, str]:
    """The environment every workflow run gets: offline hub, the checkout importable."""
    return dict(
        os.environ,
        HF_HUB_OFFLINE="1",
        TRANSFORMERS_OFFLINE="1",
        TOKENIZERS_PARALLELISM="false",
        PYTHONPATH=str(PROJECT_ROOT),
        PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
    )


def snakemake(workdir: Path, *args: str, timeout: int = 1200) -> subprocess.CompletedProcess:
    """Run the snakemake CLI in ``workdir`` to completion and capture its output."""
    return subprocess.run(
        [SNAKEMAKE, *args], cwd=workdir, env=offline_env(), capture_output=True, text=True, timeout=timeout
    )


def start_snakemake(workdir: Path, *args: str, log: Path) -> subprocess.Popen:
    """Start the snakemake CLI in ``workdir`` in the background; stdout and stderr go to ``log``."""
    with open(log, "w") as fh:
        return subprocess.Popen(
            [SNAKEMAKE, *args], cwd=workdir, env=offline_env(), stdout=fh, stderr=subprocess.STDOUT, text=True
        )


def terminate_snakemake(proc: subprocess.Popen, timeout: float = 120) -> None:
    """Stop a background snakemake that is still running: SIGTERM (it cancels its jobs), then
    SIGKILL if it has not exited within ``timeout`` seconds."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()


@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(items) -> None:
    """The SLURM tests (marker ``slurm``) first, everything else in its collected order.

    Every start of the snakemake CLI imports snakemake-executor-plugin-slurm, which asks
    ``scontrol show config`` at import: where a SLURM config exists but no controller answers
    (a machine whose local cluster a previous session took down again), that waits ~9 s, per
    snakemake start. The local cluster, once up (tests/cluster/conftest.py, session scope), stays
    up until the session ends, so the dozens of snakemake runs after the SLURM tests start at
    once. A stable sort: a module's tests stay together, and in order."""
    items.sort(key=lambda item: item.get_closest_marker("slurm") is None)


class BackgroundRun:
    """A snakemake run started when collection ends and awaited by the fixture that needs it.

    The offline demo (tests/workflow/test_demo_e2e.py) is the suite's longest fixture (~6 min on
    CI's 2 cores) and keeps about 1.6 of them busy: started in the background it runs while the
    rest of the suite takes the remaining core, instead of after it."""

    def __init__(self, workdir: Path, args: tuple[str, ...], timeout: float) -> None:
        self.workdir, self.args, self.timeout = workdir, args, timeout
        self.log = workdir.parent / "snakemake.log"
        self.proc = start_snakemake(workdir, *args, log=self.log)
        self.t0 = time.monotonic()

    def wait(self) -> subprocess.CompletedProcess:
        """Block until the run ends (killed past ``timeout`` s from its start); its combined output in stdout."""
        try:
            self.proc.wait(timeout=max(1.0, self.timeout - (time.monotonic() - self.t0)))
        except subprocess.TimeoutExpired:
            terminate_snakemake(self.proc, timeout=30)
            raise
        return subprocess.CompletedProcess(self.proc.args, self.proc.returncode, self.log.read_text(), "")


BACKGROUND: dict[str, BackgroundRun] = {}
"""Runs started by :func:`pytest_collection_finish`, by name (``"demo"``)."""

DEMO_ARGS = ("--cores", "3", "--configfile=config/demo.yaml", "--set-threads", "train_model=1")
"""The demo fixture's snakemake arguments. Training one thread per model, several models at once:
the micro models' training keeps one core busy however many threads it gets (~1.2 of 2), so
single-thread jobs side by side train the four in ~140 s instead of ~195 s on 2 cores.
train.threads is an execution key (TrainSpec): it reruns nothing and stores nothing but the
summary's thread count. Three job slots on CI's 2 cores: the ~100 cell jobs are mostly
interpreter start-up and file I/O (70-85 % of a core each), so a third job fills the gaps; every
job still gets one thread (Snakemake sets OMP_NUM_THREADS), so the products are the same."""


def pytest_collection_finish(session) -> None:
    """Start the demo run in the background when any of its tests is selected (not on --collect-only)."""
    if session.config.option.collectonly:
        return
    if any(item.nodeid.startswith("tests/workflow/test_demo_e2e.py::") for item in session.items):
        root = make_workdir(session.config._tmp_path_factory.mktemp("demo") / "project")
        BACKGROUND["demo"] = BackgroundRun(root, DEMO_ARGS, timeout=1500)


def pytest_sessionfinish(session) -> None:
    """A background run still going when the session ends (a failure with -x, an interrupt) is stopped."""
    for run in BACKGROUND.values():
        terminate_snakemake(run.proc, timeout=30)


@pytest.fixture(scope="session")
def background_runs() -> dict[str, BackgroundRun]:
    """The runs :func:`pytest_collection_finish` started, by name."""
    return BACKGROUND


@pytest.fixture()
def workdir(tmp_path) -> Path:
    return make_workdir(tmp_path / "project")


@pytest.fixture(scope="session")
def run_snakemake():
    """``run_snakemake(workdir, *args)``: the real snakemake CLI, offline."""
    return snakemake


@pytest.fixture(scope="session")
def scratch_project():
    """``scratch_project(dest)``: :func:`make_workdir`, for fixtures wider than one test."""
    return make_workdir


@pytest.fixture(scope="session")
def spawn_snakemake():
    """``spawn_snakemake(workdir, *args, log=path)``: snakemake in the background (a Popen)."""
    return start_snakemake


@pytest.fixture(scope="session")
def stop_snakemake():
    """``stop_snakemake(proc)``: :func:`terminate_snakemake`, for a run started by ``spawn_snakemake``."""
    return terminate_snakemake


@pytest.fixture(scope="session")
def workflow_env() -> dict[str, str]:
    """The environment of every workflow run (:func:`offline_env`), for other CLIs (git, dvc)."""
    return offline_env()
