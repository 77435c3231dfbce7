"""reprflow.devices: device names and GPU claims of concurrent jobs."""

import subprocess
import sys
import textwrap

import pytest
import torch

from reprflow.devices import claim_gpu, resolve_device
from reprflow.errors import ConfigError
from reprflow.workflow.scheduling import default_gpu_resource, visible_gpu_count

_HOLDER = textwrap.dedent(
    """
    import sys, time
    from reprflow.devices import claim_gpu
    print(claim_gpu(int(sys.argv[2]), lock_dir=sys.argv[1], poll_s=0.05), flush=True)
    time.sleep(float(sys.argv[3]))
    """
)


def _spawn(lock_dir, n, hold_s):
    return subprocess.Popen(
        [sys.executable, "-c", _HOLDER, str(lock_dir), str(n), str(hold_s)], stdout=subprocess.PIPE, text=True
    )


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
