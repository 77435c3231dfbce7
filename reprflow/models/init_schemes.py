"""Weight-initialisation schemes for pretrained and randomly initialised models.

An :class:`InitSpec` names a scheme and its parameters (validated by
:func:`reprflow.models.init_params.resolve_init_params`, the same check the config
loader runs); :func:`build_from_config` builds a model from a config with the
model's own init under a seed, and :func:`apply_init` then overwrites weights
according to the scheme.

Schemes
-------
``pretrained``
    Trained weights via ``from_pretrained`` (see :mod:`reprflow.models.registry`).
``default``
    The model's own ``_init_weights`` (what ``from_config`` does), seeded. This is
    the paper's "random" arm: each family's own initialisation.
``gaussian(std=0.02)``
    Every covered weight ~ N(0, std²).
``xavier(gain=1.0)``
    Glorot & Bengio (2010), normal form (``xavier_normal_``):
    std = gain · sqrt(2 / (fan_in + fan_out)).
``he(nonlinearity="relu")``
    He et al. (2015), normal form, fan-in mode (``kaiming_normal_``):
    std = gain / sqrt(fan_in) with gain = sqrt(2) for ``"relu"`` (the default:
    std = sqrt(2 / fan_in)). ``nonlinearity: linear`` gives gain 1, i.e. LeCun
    normal (std = 1 / sqrt(fan_in)), which is *not* He's scheme.

Fans are torch's: for a weight of shape ``[out, in, *kernel]``,
fan_in = in · prod(kernel) and fan_out = out · prod(kernel). For an
``nn.Embedding`` weight ``[vocab, d]`` this means fan_in = d and fan_out = vocab.

Notes
-----
What the random schemes ``gaussian``, ``xavier`` and ``he`` touch (decided here):

* **Weights** of ``nn.Linear``, ``nn.Embedding`` (token and position embeddings,
  the whole matrix including any padding row), ``nn.Conv1d`` (Mamba's depthwise
  conv ``[channels, 1, kernel]``, so fan_in = kernel width = 4) and the transposed
  HF ``Conv1D`` of GPT-2 (initialised through its ``[out, in]`` view, so fans are
  those of the equivalent Linear). Untied LM heads (Pythia's ``embed_out``) are
  Linear weights like any other; tied weights (LM head = token embedding) are
  initialised once.
* **Biases** of those modules are set to zero.
* **Left at the model's own init** (the ``default`` scheme, drawn first from the
  same seed): norm weights and biases (ones and zeros in every supported
  family, including Mamba2's gated RMSNorm), and SSM-specific parameters --
  ``A_log``, ``D``, ``dt_bias`` (plain parameters of the mixer, not weights in the
  usual sense) and the entries of the layout's ``keep_init`` (Mamba-1's
  ``dt_proj.bias``, which encodes the initial step size dt through an inverse
  softplus). Re-drawing those would change the SSM's dynamics (decay rates and
  step sizes), not its random weights. Buffers (attention masks, rotary
  frequencies) are never touched.

Seeding: the model's own init runs inside ``torch.random.fork_rng`` with the
seed, so the caller's global RNG is unchanged; the scheme then draws from a
local ``torch.Generator`` seeded from ``(seed, scheme stream)`` through
``numpy.random.SeedSequence``, so its draws are independent of the own-init
draws. Results are deterministic per seed and device type.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn
from transformers import AutoModelForCausalLM, PretrainedConfig, PreTrainedModel
from transformers.pytorch_utils import Conv1D

from reprflow.errors import ConfigError
from reprflow.models.init_params import SCHEMES, resolve_init_params

logger = logging.getLogger(__name__)

__all__ = ["InitSpec", "SCHEMES", "apply_init", "build_from_config"]

_SCHEME_STREAM = 0x5EED  # second SeedSequence word: separates scheme draws from own-init draws
_WEIGHT_MODULES = (nn.Linear, nn.Embedding, nn.Conv1d, Conv1D)


@dataclass(frozen=True)
class InitSpec:
    """An init scheme and its parameters (defaults filled in on construction).

    Parameters
    ----------
    scheme : {"pretrained", "default", "gaussian", "xavier", "he"}
    params : mapping, optional
        Scheme parameters: ``std`` (gaussian, finite > 0), ``gain`` (xavier,
        finite > 0), ``nonlinearity`` (he, "relu" or "linear"). Missing keys take
        the defaults in :data:`SCHEMES`; unknown keys raise.
    where : str, optional
        Prefix of error messages (e.g. ``"config.inits[2]"``); not part of the spec.

    Raises
    ------
    ConfigError
        Unknown scheme, unknown parameter, or a value out of range, naming
        ``<where>.params.<key>``.

    Examples
    --------
    >>> InitSpec("gaussian").params
    {'std': 0.02}
    >>> InitSpec("he").to_dict()
    {'scheme': 'he', 'params': {'nonlinearity': 'relu'}}
    """

    scheme: str
    params: Mapping[str, Any] = field(default_factory=dict)
    where: str = field(default="init", compare=False, repr=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "params", resolve_init_params(self.scheme, self.params, where=self.where))

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


def _fill_weight(weight: torch.Tensor, spec: InitSpec, gen: torch.Generator | None) -> None:
    if spec.scheme == "gaussian":
        nn.init.normal_(weight, mean=0.0, std=spec.params["std"], generator=gen)
    elif spec.scheme == "xavier":
        nn.init.xavier_normal_(weight, gain=spec.params["gain"], generator=gen)
    elif spec.scheme == "he":
        nn.init.kaiming_normal_(weight, mode="fan_in", nonlinearity=spec.params["nonlinearity"], generator=gen)
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
        Names of the parameters that were overwritten, in module order. On the
        meta device nothing is drawn, but the names still say what the scheme
        covers.
    """
    if spec.scheme == "pretrained":
        raise ConfigError("apply_init: scheme 'pretrained' has no random init; use load_model")
    if spec.scheme == "default":
        return []
    first = next(model.parameters())
    # a model built on the meta device has no values to draw (architecture checks only)
    gen = None if first.device.type == "meta" else _scheme_generator(seed, first.device)
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
