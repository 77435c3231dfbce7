"""reprflow.devices: device names and GPU claims of concurrent jobs."""

import select
import subprocess
import sys
import textwrap
import time

import pytest
import torch

from reprflow.devices import claim_gpu, resolve_device
from reprflow.errors import ConfigError
from reprflow.workflow.scheduling import default_gpu_resource, visible_gpu_count

_HOLDER = textwrap.dedent(
    """
    import sys, time
    from reprflow.devices import claim_gpu, queue_for_gpu, release_gpu
    lock_dir, n, hold_s, priority, startup_s = sys.argv[1], int(sys.argv[2]), *map(float, sys.argv[3:6])
    def wait(seconds):  # < 0: until told (a line on stdin)
        sys.stdin.readline() if seconds < 0 else time.sleep(seconds)
    if startup_s:  # a job's start-up (prompts, tokenizer) with its place in the queue taken
        queue_for_gpu(priority, lock_dir=lock_dir)
        print("queued", flush=True)
        wait(startup_s)
    print(claim_gpu(n, lock_dir=lock_dir, poll_s=0.05, priority=priority), flush=True)
    wait(hold_s)
    if sys.argv[6:] == ["release"]:
        release_gpu(lock_dir=lock_dir)
        print("released", flush=True)
        time.sleep(30)  # still alive: its GPU is free all the same
    """
)


def _spawn(lock_dir, n, hold_s, priority=0.0, startup_s=0.0, *extra):
    """A job claiming one of ``n`` GPUs: it queues and starts up for ``startup_s`` (if nonzero),
    claims, holds for ``hold_s``; a negative duration lasts until a line arrives on its stdin
    (:func:`_tell`), so a test orders the steps of several jobs without racing their timers."""
    return subprocess.Popen(
        [sys.executable, "-c", _HOLDER, str(lock_dir), str(n), str(hold_s), str(priority), str(startup_s), *extra],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )


def _tell(proc) -> None:
    """End the job's current wait-until-told step (start-up or hold)."""
    proc.stdin.write("go\n")
    proc.stdin.flush()


def _silent_for(proc, seconds: float) -> bool:
    """Whether ``proc`` prints nothing for ``seconds``."""
    return not select.select([proc.stdout], [], [], seconds)[0]


def _waiting(lock_dir, count, timeout=60.0):
    """Wait until ``count`` processes hold tickets in ``lock_dir`` (they queued or began to wait)."""
    deadline = time.monotonic() + timeout
    while len(list(lock_dir.glob("wait-*"))) < count:
        assert time.monotonic() < deadline, list(lock_dir.iterdir())
        time.sleep(0.05)


def _stop(*procs):
    for p in procs:
        p.kill()
        p.wait()


def test_concurrent_jobs_claim_different_gpus_and_a_third_waits(tmp_path):
    first = _spawn(tmp_path, 2, 30)
    assert first.stdout.readline().strip() == "0"
    second = _spawn(tmp_path, 2, 30)
    assert second.stdout.readline().strip() == "1"
    third = _spawn(tmp_path, 2, 0)  # both claimed: waits until one is released
    try:
        with pytest.raises(subprocess.TimeoutExpired):
            third.wait(timeout=1.0)
        first.kill()  # SIGKILL: the OS drops the lock
        first.wait()
        assert third.stdout.readline().strip() == "0"
        assert third.wait(timeout=30) == 0
    finally:
        for p in (first, second, third):
            p.kill()
            p.wait()


def test_waiting_jobs_take_a_freed_gpu_highest_priority_first(tmp_path):
    """One GPU, held; three jobs wait with priorities 1, 3 and 2 (in that order): as the GPU is
    freed three times, they take it 3, 2, 1 (the workflow's longest jobs first)."""
    holder = _spawn(tmp_path, 1, 60)
    assert holder.stdout.readline().strip() == "0"
    waiters = {}
    for n, priority in enumerate((1, 3, 2), start=1):
        waiters[priority] = _spawn(tmp_path, 1, 0.5, priority)
        _waiting(tmp_path, n)
    try:
        holder.kill()
        holder.wait()
        order, deadline = [], time.monotonic() + 120
        while len(order) < 3:  # the GPU is exclusive: they exit in the order they claimed it
            assert time.monotonic() < deadline, order
            order += [p for p, proc in waiters.items() if p not in order and proc.poll() is not None]
            time.sleep(0.02)
        assert order == [3, 2, 1]
        assert all(proc.returncode == 0 for proc in waiters.values())
    finally:
        _stop(holder, *waiters.values())


def test_a_queued_job_keeps_its_place_during_its_start_up(tmp_path):
    """Two GPUs, one held. A long job queues (priority 5) and starts up; a short job (priority 1)
    asks meanwhile: it may not take the free GPU, which is left to the long job; it gets the
    other when the holder releases it (release_gpu, the holder still alive). Each step waits for
    the test's word, not for a timer, so a loaded machine cannot reorder them."""
    holder = _spawn(tmp_path, 2, -1, 0, 0, "release")
    assert holder.stdout.readline().strip() == "0"
    long_job = _spawn(tmp_path, 2, 60, 5, -1)
    assert long_job.stdout.readline().strip() == "queued"
    short_job = _spawn(tmp_path, 2, 0, 1)
    try:
        _waiting(tmp_path, 2)  # the long job's place, the short job's wait
        assert _silent_for(short_job, 2.0), "the short job took the GPU kept for the long job"
        _tell(long_job)  # its start-up ends
        assert long_job.stdout.readline().strip() == "1"  # the free GPU, kept for it
        assert _silent_for(short_job, 0.5), "the short job took a GPU while both were held"
        _tell(holder)  # release_gpu
        assert holder.stdout.readline().strip() == "released"
        assert short_job.stdout.readline().strip() == "0"  # the GPU the holder released
        assert holder.poll() is None
    finally:
        _stop(holder, long_job, short_job)


def test_a_dead_jobs_ticket_holds_nobody_back(tmp_path):
    """A job killed while queued (SIGKILL: no clean-up) leaves a ticket nobody holds a lock on:
    a lower-priority job takes the free GPU at once, and removes the stale ticket."""
    dead = _spawn(tmp_path, 1, 0, 9, 60)
    assert dead.stdout.readline().strip() == "queued"
    dead.kill()
    dead.wait()
    assert len(list(tmp_path.glob("wait-*"))) == 1
    assert claim_gpu(1, lock_dir=tmp_path, priority=0) == 0
    assert not list(tmp_path.glob("wait-*"))


def test_a_start_up_holds_its_place_until_it_claims_or_fails(tmp_path):
    """waiting_for_gpu: a ticket through the start-up; the claim inside gives it up, and so does a
    failure before the claim (a notebook lives on: its ticket must not hold other jobs back)."""
    from reprflow.devices import release_gpu, waiting_for_gpu

    tickets = lambda: list(tmp_path.glob("wait-*"))  # noqa: E731
    with pytest.raises(RuntimeError, match="no such prompt set"):
        with waiting_for_gpu(7, lock_dir=tmp_path):
            assert len(tickets()) == 1 and tickets()[0].read_text().split()[0] == "7.0"
            raise RuntimeError("no such prompt set")
    assert not tickets()
    with waiting_for_gpu(7, lock_dir=tmp_path):
        assert claim_gpu(2, lock_dir=tmp_path) == 0 and not tickets()
    with waiting_for_gpu(7, lock_dir=tmp_path, enabled=False):
        assert not tickets()
    release_gpu(lock_dir=tmp_path)
    assert claim_gpu(2, lock_dir=tmp_path) == 0  # given back: free again (to this process, too)
    release_gpu(lock_dir=tmp_path)


def test_a_process_keeps_its_claim(tmp_path):
    first = claim_gpu(3, lock_dir=tmp_path / "locks")
    assert claim_gpu(3, lock_dir=tmp_path / "locks") == first
    assert (tmp_path / "locks" / f"gpu{first}.lock").read_text().strip().isdigit()


def test_device_names():
    assert resolve_device("cpu") == torch.device("cpu")
    if not torch.cuda.is_available():
        assert resolve_device("auto") == torch.device("cpu")
        with pytest.raises(ConfigError, match="CUDA is not available"):
            resolve_device("cuda:1")
    with pytest.raises(ConfigError, match="is not a device"):
        resolve_device("gpu0")


def test_one_resolver_accepts_auto_everywhere():
    """Metrics, probes and the workflow resolve devices alike: 'auto' works, a bad name is one clear error."""
    import numpy as np

    from reprflow.errors import InvalidParameterError
    from reprflow.metrics import inter_token_cosine
    from reprflow.probes import LinearProbe

    assert resolve_device(torch.device("cpu")) == torch.device("cpu")
    h = np.random.default_rng(0).normal(size=(3, 5, 4))
    np.testing.assert_allclose(inter_token_cosine(h, device="auto"), inter_token_cosine(h))
    x, y = np.random.default_rng(1).normal(size=(8, 4)), np.arange(8) % 2
    assert LinearProbe(seed=0, epochs=2, device="auto").fit(x, y).predict(x).shape == (8,)
    with pytest.raises(InvalidParameterError, match="metrics device: 'gpu0' is not a device"):
        inter_token_cosine(h, device="gpu0")
    with pytest.raises(InvalidParameterError, match=r"'device' parameter of LinearProbe.*'gpu0' is not a device"):
        LinearProbe(seed=0, device="gpu0").fit(x, y)


@pytest.mark.parametrize(
    ("visible", "count"), [("0", 1), ("0,1,2,3", 4), ("", 0), ("-1", 0), ("2,-1,3", 1), ("GPU-5a1b,GPU-77c2", 2)]
)
def test_visible_gpus_come_from_cuda_visible_devices(visible, count):
    assert visible_gpu_count({"CUDA_VISIBLE_DEVICES": visible}) == count


def test_the_snakefile_and_the_jobs_name_one_sharing_variable():
    from reprflow import devices
    from reprflow.workflow import scheduling

    assert devices.SHARED_ENV == scheduling.SHARED_ENV


def test_visible_gpus_from_nvidia_smi_listing(tmp_path, monkeypatch):
    fake = tmp_path / "nvidia-smi"  # prints what `nvidia-smi -L` prints on a 2-GPU node
    fake.write_text("#!/bin/sh\necho 'GPU 0: NVIDIA H200 (UUID: GPU-a)'\necho 'GPU 1: NVIDIA H200 (UUID: GPU-b)'\n")
    fake.chmod(0o755)
    assert visible_gpu_count({}, nvidia_smi=str(fake)) == 2
    assert visible_gpu_count({}, nvidia_smi=str(tmp_path / "absent")) == 0


def test_default_gpu_resource_only_when_the_user_gave_none_and_jobs_run_here():
    env = {"CUDA_VISIBLE_DEVICES": "0,1"}
    assert default_gpu_resource({"_cores": 8}, local=True, env=env) == 2
    assert default_gpu_resource({"_cores": 8, "gpu": 4}, local=True, env=env) is None  # --resources gpu=4 wins
    assert default_gpu_resource({"_cores": 8}, local=False, env=env) is None  # SLURM gives each job its GPU
    assert default_gpu_resource({}, local=True, env={"CUDA_VISIBLE_DEVICES": ""}) == 1  # no GPU: one at a time
    # execution.jobs_per_gpu: two per GPU (one starting up while one computes), still one without a GPU
    assert default_gpu_resource({"_cores": 8}, local=True, env=env, jobs_per_gpu=2) == 4
    assert default_gpu_resource({}, local=True, env={"CUDA_VISIBLE_DEVICES": ""}, jobs_per_gpu=2) == 1
