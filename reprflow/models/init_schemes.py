"""Weight-initialisation schemes for pretrained and randomly initialised models.

An :class:`InitSpec` names a scheme and its parameters; :func:`build_from_config`
builds a model from a config with the model's own init under a seed, and
:func:`apply_init` then overwrites weights according to the scheme.

Schemes
-------
``pretrained``
    Trained weights via ``from_pretrained`` (see :mod:`reprflow.models.registry`).
``default``
    The model's own ``_init_weights`` (what ``from_config`` does), seeded.
``gaussian(std=0.02)``
    Every weight of an ``nn.Linear``, ``nn.Embedding``, ``nn.Conv1d`` or HF
    ``Conv1D`` module ~ N(0, std²).
``xavier(gain=1.0)``
    ``xavier_normal_``: std = gain * sqrt(2 / (fan_in + fan_out)) on the same weights.
``he(nonlinearity="linear")``
    ``kaiming_normal_`` with ``mode="fan_in"``: std = gain(nonlinearity) / sqrt(fan_in),
    gain 1 for ``"linear"``, sqrt(2) for ``"relu"``.

Notes
-----
What the random schemes ``gaussian``, ``xavier`` and ``he`` touch (decided here):

* **Weights** of ``nn.Linear``, ``nn.Embedding`` (token and position embeddings,
  the whole matrix including any padding row), ``nn.Conv1d`` (Mamba's depthwise
  conv, whose torch fans include the kernel width) and the transposed HF
  ``Conv1D`` of GPT-2 (initialised through its ``[out, in]`` view, so fans are
  those of the equivalent Linear). Tied weights (LM head = token embedding) are
  initialised once.
* **Biases** of those modules are set to zero.
* **Left at the model's own init** (the ``default`` scheme, drawn first from the
  same seed): norm weights and biases (ones and zeros in every supported
  family), and SSM-specific parameters -- ``A_log``, ``D``, ``dt_bias`` (plain
  parameters of the mixer, not weights in the usual sense) and the entries of
  the layout's ``keep_init`` (Mamba-1's ``dt_proj.bias``, which encodes the
  initial step size dt through an inverse softplus). Zeroing those would change
  the SSM's dynamics, not its random weights.

Seeding: the model's own init runs inside ``torch.random.fork_rng`` with the
seed, so the caller's global RNG is unchanged; the scheme then draws from a
local ``torch.Generator`` seeded from ``(seed, scheme stream)`` through
``numpy.random.SeedSequence``, so its draws are independent of the own-init
draws. Results are deterministic per seed and device type.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn
from transformers import AutoModelForCausalLM, PretrainedConfig, PreTrainedModel
from transformers.pytorch_utils import Conv1D

from reprflow.errors import ConfigError

logger = logging.getLogger(__name__)

__all__ = ["InitSpec", "SCHEMES", "apply_init", "build_from_config"]

#: scheme name -> default parameters (the accepted keys)
SCHEMES: dict[str, dict[str, Any]] = {
    "pretrained": {},
    "default": {},
    "gaussian": {"std": 0.02},
    "xavier": {"gain": 1.0},
    "he": {"nonlinearity": "linear"},
}
_HE_NONLINEARITIES = ("linear", "relu")
_SCHEME_STREAM = 0x5EED  # second SeedSequence word: separates scheme draws from own-init draws
_WEIGHT_MODULES = (nn.Linear, nn.Embedding, nn.Conv1d, Conv1D)


@dataclass(frozen=True)
class InitSpec:
    """An init scheme and its parameters (defaults filled in on construction).

    Parameters
    ----------
    scheme : {"pretrained", "default", "gaussian", "xavier", "he"}
    params : mapping, optional
        Scheme parameters: ``std`` (gaussian, > 0), ``gain`` (xavier, > 0),
        ``nonlinearity`` (he, "linear" or "relu"). Missing keys take the
        defaults in :data:`SCHEMES`; unknown keys raise.

    Raises
    ------
    ConfigError
        Unknown scheme, unknown parameter, or a value out of range.

    Examples
    --------
    >>> InitSpec("gaussian").params
    {'std': 0.02}
    >>> InitSpec("he", {"nonlinearity": "relu"}).to_dict()
    {'scheme': 'he', 'params': {'nonlinearity': 'relu'}}
    """

    scheme: str
    params: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.scheme not in SCHEMES:
            raise ConfigError(
                f"init scheme '{self.scheme}' is unknown; expected one of {', '.join(SCHEMES)}"
            )
        defaults = SCHEMES[self.scheme]
        unknown = sorted(set(self.params) - set(defaults))
        if unknown:
            allowed = ", ".join(defaults) or "none"
            raise ConfigError(
                f"init scheme '{self.scheme}': unknown parameter(s) {unknown}; allowed: {allowed}"
            )
        resolved = {**defaults, **dict(self.params)}
        for key in ("std", "gain"):
            if key in resolved:
                value = resolved[key]
                if isinstance(value, bool) or not isinstance(value, (int, float)):
                    raise ConfigError(
                        f"init scheme '{self.scheme}': parameter '{key}' must be a number > 0, "
                        f"got {value!r}"
                    )
                if not (math.isfinite(value) and value > 0):
                    raise ConfigError(
                        f"init scheme '{self.scheme}': parameter '{key}' must be a finite "
                        f"number > 0, got {value!r}"
                    )
                resolved[key] = float(value)
        if "nonlinearity" in resolved and resolved["nonlinearity"] not in _HE_NONLINEARITIES:
            raise ConfigError(
                f"init scheme 'he': parameter 'nonlinearity' must be one of "
                f"{list(_HE_NONLINEARITIES)}, got {resolved['nonlinearity']!r}"
            )
        object.__setattr__(self, "params", resolved)

    @property
    def is_random(self) -> bool:
        """True for every scheme except ``pretrained``."""
        return self.scheme != "pretrained"

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready ``{"scheme": ..., "params": {...}}`` with defaults filled in."""
        return {"scheme": self.scheme, "params": dict(self.params)}


def _seed_generators(seed: int, device: torch.device) -> None:
    """Seed the default generator(s) that ``device``'s own init draws from."""
    torch.random.default_generator.manual_seed(seed)
    if device.type == "cuda":
        with torch.cuda.device(device):
            torch.cuda.manual_seed(seed)


def build_from_config(
    config: PretrainedConfig,
    *,
    seed: int,
    dtype: torch.dtype = torch.float32,
    device: str | torch.device = "cpu",
) -> PreTrainedModel:
    """Build a causal LM from ``config`` with the model's own init, seeded.

    Parameters
    ----------
    config : PretrainedConfig
    seed : int
        Seeds the model's own ``_init_weights`` inside ``torch.random.fork_rng``;
        the caller's global RNG state is restored on exit.
    dtype : torch.dtype
    device : str or torch.device
        Parameters are created directly on this device (a 2.7B model is never
        materialised on the CPU first).

    Returns
    -------
    PreTrainedModel
        In eval mode.
    """
    device = torch.device(device)
    if device.type == "cuda" and device.index is None:
        device = torch.device("cuda", torch.cuda.current_device())
    fork_devices = [device.index] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=fork_devices, device_type=device.type if fork_devices else "cuda"):
        _seed_generators(seed, device)
        with torch.device(device):
            model = AutoModelForCausalLM.from_config(config, dtype=dtype)
    return model.eval()


def _scheme_generator(seed: int, device: torch.device) -> torch.Generator:
    state = np.random.SeedSequence([seed, _SCHEME_STREAM]).generate_state(1, dtype=np.uint64)[0]
    return torch.Generator(device=device).manual_seed(int(state) & 0x7FFF_FFFF_FFFF_FFFF)


def _fill_weight(weight: torch.Tensor, spec: InitSpec, gen: torch.Generator) -> None:
    if spec.scheme == "gaussian":
        nn.init.normal_(weight, mean=0.0, std=spec.params["std"], generator=gen)
    elif spec.scheme == "xavier":
        nn.init.xavier_normal_(weight, gain=spec.params["gain"], generator=gen)
    elif spec.scheme == "he":
        nn.init.kaiming_normal_(
            weight, mode="fan_in", nonlinearity=spec.params["nonlinearity"], generator=gen
        )
    else:  # pragma: no cover - apply_init filters schemes first
        raise ConfigError(f"init scheme '{spec.scheme}' has no weight fill")


def apply_init(model: nn.Module, spec: InitSpec, *, seed: int, keep_init: tuple[str, ...] = ()) -> list[str]:
    """Overwrite weights in place according to ``spec`` (see the module Notes).

    Parameters
    ----------
    model : nn.Module
        Built with :func:`build_from_config`; its parameters are modified in place.
    spec : InitSpec
        ``default`` is a no-op (the own init is already there); ``pretrained``
        raises.
    seed : int
    keep_init : tuple of str
        Parameter-name suffixes left at the model's own init (the layout's
        ``keep_init``).

    Returns
    -------
    list of str
        Names of the parameters that were overwritten, in module order.
    """
    if spec.scheme == "pretrained":
        raise ConfigError("apply_init: scheme 'pretrained' has no random init; use load_model")
    if spec.scheme == "default":
        return []
    first = next(model.parameters())
    gen = _scheme_generator(seed, first.device)
    seen: set[int] = set()
    touched: list[str] = []
    with torch.no_grad():
        for mod_name, module in model.named_modules():
            if not isinstance(module, _WEIGHT_MODULES):
                continue
            for p_name, param in module.named_parameters(recurse=False):
                full = f"{mod_name}.{p_name}" if mod_name else p_name
                if id(param) in seen or any(full.endswith(s) for s in keep_init):
                    continue
                seen.add(id(param))
                if p_name == "weight":
                    # HF Conv1D stores [in, out]; init its [out, in] view so fans match nn.Linear
                    _fill_weight(param.t() if isinstance(module, Conv1D) else param, spec, gen)
                elif p_name == "bias":
                    param.zero_()
                else:  # pragma: no cover - these module types own only weight and bias
                    continue
                touched.append(full)
    logger.debug("init %s: overwrote %d parameter tensors", spec.scheme, len(touched))
    return touched
