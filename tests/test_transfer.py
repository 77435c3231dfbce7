"""reprflow.transfer: asynchronous device-to-host copies."""

import pytest
import torch

from reprflow.transfer import copy_to_host


def test_cpu_tensor_is_returned_landed():
    x = torch.arange(12.0).reshape(3, 4)
    pending = copy_to_host(x)
    assert pending.event is None
    out = pending.wait()
    assert out.data_ptr() == x.data_ptr() and torch.equal(out, x)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_cuda_copy_lands_exactly_even_if_the_source_memory_is_reused(dtype):
    gen = torch.Generator(device="cuda").manual_seed(0)
    src = torch.randn(64, 33, 257, device="cuda", generator=gen).to(dtype)[:, 1:]  # non-contiguous view
    want = src.cpu()
    pending = copy_to_host(src * 1)  # the temporary is freed at once
    for _ in range(4):  # reuse the freed block and overwrite it while the copy may be in flight
        torch.full((64, 32, 257), float("nan"), device="cuda", dtype=dtype)
    host = pending.wait()
    assert host.device.type == "cpu" and host.is_pinned() and host.dtype == dtype
    assert torch.equal(host, want)
