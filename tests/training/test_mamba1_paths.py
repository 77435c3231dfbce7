"""Every Mamba-1 training path of reprflow.training.kernels computes the model's loss and
gradients: each path available here against transformers' own forward (nothing installed: its
torch fallback where the compiled packages do not import, mamba_ssm's fused kernel where they
do), on the CPU (float32) and on CUDA (bf16 autocast, the training step's precision)."""

import copy

import pytest
import torch

from reprflow.models.init_schemes import build_from_config
from reprflow.training.kernels import MAMBA1_PATHS, mamba1_path_availability, mamba1_train_path, prepare_training
from reprflow.training.loop import _loss, build_config
from reprflow.training.recipe import TrainSpec

DEVICES = [
    pytest.param("cpu"),
    pytest.param(
        "cuda", marks=[pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")]
    ),
]


def _loss_and_grads(model, x, device):
    model.train()
    model.zero_grad(set_to_none=True)
    loss = _loss(model, x, device)
    loss.backward()
    grads = {n: p.grad.float().clone() for n, p in model.named_parameters() if p.grad is not None}
    return loss.item(), grads


@pytest.mark.parametrize("device_name", DEVICES)
def test_mamba1_training_paths_agree_with_transformers(device_name):
    device = torch.device(device_name)
    spec = TrainSpec(width=64, depth=2, context=48)
    base = build_from_config(build_config("mamba", spec, vocab_size=512), seed=0, dtype=torch.float32, device=device)
    x = torch.randint(0, 512, (2, 49), generator=torch.Generator().manual_seed(0)).to(device)
    ref_loss, ref_grads = _loss_and_grads(copy.deepcopy(base), x, device)
    available = mamba1_path_availability(device)
    assert mamba1_train_path(device) in MAMBA1_PATHS and not available[mamba1_train_path(device)]
    loss_tol, grad_tol = (1e-4, 1e-3) if device.type == "cpu" else (2e-2, 1e-1)
    checked = []
    for path in MAMBA1_PATHS[:3]:
        if available[path]:
            continue
        loss, grads = _loss_and_grads(_prepared(base, path, device), x, device)
        assert loss == pytest.approx(ref_loss, rel=loss_tol), path
        assert grads.keys() == ref_grads.keys(), path
        for name, g in grads.items():
            ref = ref_grads[name]
            rel = float((g - ref).norm() / ref.norm().clamp_min(1e-12))
            assert rel < grad_tol, (path, name, rel)
        checked.append(path)
    assert "reprflow-autograd" in checked


def _prepared(base, path, device):
    model = copy.deepcopy(base)
    assert prepare_training(model, "mamba", device, path=path) == path
    return model
