"""Shared fixtures for the kernel tests."""

import numpy as np
import pytest
import torch

requires_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(20261122)


@pytest.fixture
def torch_gen() -> torch.Generator:
    return torch.Generator().manual_seed(20261122)
