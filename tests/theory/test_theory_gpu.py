"""float32 on CUDA (how the full grid runs) against float64 on CPU."""

import pytest
import torch

from reprflow.theory.closed_forms import closed_form_mamba_energy
from reprflow.theory.mamba import mamba_update
from reprflow.theory.montecarlo import monte_carlo_moments
from reprflow.theory.transformer import transformer_update
from reprflow.theory.weights import WeightSource, sample_mamba_weights, sample_transformer_weights

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU"),
]
XAVIER = WeightSource("xavier", {})


@pytest.mark.parametrize("n", [64, 2048])
def test_cuda_float32_blocks_match_cpu_float64(n):
    wt = sample_transformer_weights(32, source=XAVIER, seed=0)
    wm = sample_mamba_weights(32, d_state=16, d_conv=4, expand=2, source=XAVIER, seed=0)
    h = torch.randn(4, n, 32, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    for f, w in ((transformer_update, wt), (mamba_update, wm)):
        for linearized in (False, True):
            ref = f(h, w, linearized=linearized)
            got = f(h.cuda().float(), w.to("cuda", torch.float32), linearized=linearized).double().cpu()
            assert float((got - ref).norm() / ref.norm()) < 1e-4


def test_cuda_moments_and_closed_form_on_device():
    wm = sample_mamba_weights(32, d_state=16, d_conv=4, expand=2, source=XAVIER, seed=0)
    wd = wm.to("cuda", torch.float32)
    kw = dict(n_tokens=256, hidden=32, sigma2=1.0, n_mc=64, seed=1, chunk=64)
    cpu = monte_carlo_moments({"m": lambda h: mamba_update(h, wm, linearized=True)}, **kw)["m"]
    gpu = monte_carlo_moments(
        {"m": lambda h: mamba_update(h, wd, linearized=True)}, device="cuda", dtype=torch.float32, **kw
    )["m"]
    assert gpu.energy.value == pytest.approx(cpu.energy.value, rel=1e-4)
    cf_gpu = closed_form_mamba_energy(wm.to("cuda", torch.float64), n_tokens=4096, sigma2=1.0)
    assert cf_gpu == pytest.approx(closed_form_mamba_energy(wm, n_tokens=4096, sigma2=1.0), rel=1e-10)


@pytest.mark.parametrize("n", [64, 2048])
def test_cuda_float32_paper_blocks_match_cpu_float64(n):
    from reprflow.theory.paper_blocks import (
        paper_mamba_update,
        paper_transformer_update,
        sample_paper_mamba,
        sample_paper_transformer,
    )

    wt = sample_paper_transformer(32, source=XAVIER, bias_std=0.1, seed=0)
    wm = sample_paper_mamba(32, d_state=16, d_conv=4, expand=2, n_max=n, source=XAVIER, seed=0)
    h = torch.randn(4, n, 32, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    for f, w in ((paper_transformer_update, wt), (paper_mamba_update, wm)):
        for linearized in (False, True):
            ref = f(h, w, linearized=linearized)
            got = f(h.cuda().float(), w.to("cuda", torch.float32), linearized=linearized).double().cpu()
            assert float((got - ref).norm() / ref.norm()) < 1e-4
