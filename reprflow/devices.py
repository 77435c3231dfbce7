"""Device selection: the config's ``device: auto`` means CUDA when present, else CPU."""

from __future__ import annotations

import torch

from reprflow.errors import ConfigError


def resolve_device(name: str | None) -> torch.device:
    """Turn ``auto`` / ``cpu`` / ``cuda`` / ``cuda:N`` into a :class:`torch.device`.

    Raises ConfigError when CUDA is asked for but not available.
    """
    if name in (None, "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ConfigError(f"device: {name!r} is not a device (use auto, cpu, cuda or cuda:N)") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device: {name!r} requested but CUDA is not available on this machine; use 'auto' or 'cpu'")
    return device
