"""Shared helpers: run the real Snakemake workflow in a scratch copy of the project.

Used by tests/workflow (CLI, dry runs) and tests/cluster (SLURM profile, DVC round trip).
"""

import contextlib
import importlib
import os
import shutil
import subprocess
import sys
import tempfile
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


WORKER_NICE = 5
"""Niceness every pytest-xdist worker gives itself (and so everything it starts), but the demo's
snakemake run (:func:`snakemake` with ``critical=True``): the demo is the suite's longest unit and
its critical path, so where both want a core the demo's jobs get ~3/4 of it (CFS weights of nice 0
against nice 5), and the other worker's tests fill what the demo leaves idle."""


def pytest_configure(config) -> None:
    if os.environ.get("PYTEST_XDIST_WORKER"):
        with contextlib.suppress(OSError):
            os.nice(WORKER_NICE)


def _undo_worker_nice() -> None:
    """``preexec_fn`` of a critical-path child: back to the suite's own niceness. Lowering it
    needs root (CI runs as root); elsewhere this does nothing and the child keeps the worker's."""
    if os.environ.get("PYTEST_XDIST_WORKER"):
        with contextlib.suppress(OSError):
            os.nice(-WORKER_NICE)


def snakemake(workdir: Path, *args: str, timeout: int = 1200, critical: bool = False) -> subprocess.CompletedProcess:
    """Run the snakemake CLI in ``workdir`` to completion and capture its output; ``critical``:
    at the niceness the suite started at, ahead of the workers' other processes (:data:`WORKER_NICE`)."""
    return subprocess.run(
        [SNAKEMAKE, *args],
        cwd=workdir,
        env=offline_env(),
        capture_output=True,
        text=True,
        timeout=timeout,
        preexec_fn=_undo_worker_nice if critical else None,
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
    """The demo (marker ``demo``) first, then the SLURM tests (marker ``slurm``), everything else
    in its collected order.

    The demo is the longest single unit (one module-scoped snakemake run, minutes on 2 cores):
    started first, the other tests fill the second worker beside it (``scripts/test.sh`` runs
    pytest-xdist with ``--dist loadscope --no-loadscope-reorder``: a module per worker at a time,
    in this order). Every start of the snakemake CLI imports snakemake-executor-plugin-slurm,
    which asks ``scontrol show config`` at import: where a SLURM config exists but no controller
    answers (a machine whose local cluster a previous session took down again), that waits ~9 s,
    per snakemake start. The local cluster, once up (tests/cluster/conftest.py), stays up until the
    run ends, so the dozens of snakemake runs after the SLURM tests start at once. A stable sort: a
    module's tests stay together, and in order."""
    items.sort(key=lambda item: (item.get_closest_marker("demo") is None, item.get_closest_marker("slurm") is None))


SLURM_UP_FLAG = "REPRFLOW_SLURM_UP_FLAG"
"""Under pytest-xdist: the path of a file the worker that brings the local SLURM cluster up writes
(tests/cluster/conftest.py), so that the controller takes the cluster down after the last worker
has finished, not when that one worker's session ends while another still starts snakemake."""


SESSION_CACHE = "REPRFLOW_TEST_SESSION_CACHE"
"""Set when this session made the code-facts cache folder (reprflow/workflow/code_facts.py) itself."""


@pytest.hookimpl(tryfirst=True)
def pytest_sessionstart(session) -> None:
    """On pytest-xdist's controller, before its workers start (or in a run without workers): name
    the SLURM flag file for them, and point the code-facts cache (``REPRFLOW_CACHE_DIR``, unless
    set) at a folder of this session, shared by the workers and every snakemake they start, so
    that the suite writes nothing under the user's ``~/.cache``."""
    if session.config.pluginmanager.has_plugin("dsession"):
        os.environ[SLURM_UP_FLAG] = str(Path(tempfile.mkdtemp(prefix="reprflow-slurm-")) / "up")
    if not os.environ.get("PYTEST_XDIST_WORKER") and not os.environ.get("REPRFLOW_CACHE_DIR"):
        os.environ["REPRFLOW_CACHE_DIR"] = os.environ[SESSION_CACHE] = tempfile.mkdtemp(prefix="reprflow-cache-")


def pytest_sessionfinish(session) -> None:
    """On pytest-xdist's controller (or in a run without workers), after every worker: remove the
    session's cache folder; take down the SLURM cluster a worker left up."""
    if not os.environ.get("PYTEST_XDIST_WORKER") and os.environ.get(SESSION_CACHE):
        shutil.rmtree(os.environ.pop(SESSION_CACHE), ignore_errors=True)
    flag = os.environ.get(SLURM_UP_FLAG)
    if not (session.config.pluginmanager.has_plugin("dsession") and flag):
        return
    if Path(flag).exists():
        _slurm_down(Path(Path(flag).read_text().strip()))
    shutil.rmtree(Path(flag).parent, ignore_errors=True)


def _slurm_down(log: Path) -> None:
    """``scripts/slurm-local.sh down``, its output appended to ``log``."""
    with open(log, "a") as fh:
        subprocess.run(
            ["bash", str(PROJECT_ROOT / "scripts" / "slurm-local.sh"), "down"],
            stdout=fh,
            stderr=subprocess.STDOUT,
            timeout=120,
        )


@pytest.fixture(scope="session")
def release_slurm():
    """``release_slurm(log)``: at the end of the session that brought the local SLURM cluster up,
    take it down; on a pytest-xdist worker leave it up and name ``log`` in the flag file, so that
    the controller takes it down after the last worker (:func:`pytest_sessionfinish`)."""

    def release(log: Path) -> None:
        flag = os.environ.get(SLURM_UP_FLAG) if os.environ.get("PYTEST_XDIST_WORKER") else None
        if flag:
            Path(flag).write_text(str(log))
        else:
            _slurm_down(log)

    return release


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


@pytest.fixture()
def benchmark_script(monkeypatch):
    """``benchmark_script(name)``: ``benchmarks/<name>.py`` imported in this process, as a script
    sees its folder (its sibling modules import as top-level names), with the hub offline and the
    checkout on ``PYTHONPATH`` for any worker process its ``main`` starts; undone after the test.
    Calling ``main(argv)`` in the test's process saves the interpreter and the torch and
    transformers imports (~9 s of CPU on 2 cores) that running the script would cost."""

    def load(name: str):
        monkeypatch.syspath_prepend(str(PROJECT_ROOT / "benchmarks"))
        for key, value in (("PYTHONPATH", str(PROJECT_ROOT)), ("HF_HUB_OFFLINE", "1"), ("TRANSFORMERS_OFFLINE", "1")):
            monkeypatch.setenv(key, value)
        return importlib.import_module(name)

    return load


@pytest.fixture(scope="session")
def workflow_env() -> dict[str, str]:
    """The environment of every workflow run (:func:`offline_env`), for other CLIs (git, dvc)."""
    return offline_env()
