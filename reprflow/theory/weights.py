"""Seeded weights for the one-layer theory blocks (paper Eq. 5 and Eq. 6).

The theory check needs only small dense matrices, so it does not build Hugging Face models.
Each matrix is drawn i.i.d. Gaussian with a standard deviation set by a *weight source*:

- ``gaussian``: ``std`` (default 0.02);
- ``xavier``: ``gain * sqrt(2 / (fan_in + fan_out))`` (parameter ``gain``, default 1);
- ``he``: ``gain(nonlinearity) / sqrt(fan_in)`` (parameter ``nonlinearity``, default
  ``"linear"``, gain 1; ``"relu"`` gives sqrt(2), via ``torch.nn.init.calculate_gain``);
- ``model``: a per-matrix std taken from a model (e.g. its config's ``initializer_range``),
  given as one float for every matrix or a mapping ``{matrix name: std}``.

Fans follow ``torch.nn.init._calculate_fan_in_and_fan_out`` (a linear weight of shape
(out, in) has fan_in = in, fan_out = out; the depthwise conv weight of shape (m, 1, K) has
fan_in = K, fan_out = m * K), so the scheme names, parameters and defaults mean what they mean in
``reprflow/models/init_schemes.py`` (not imported: it pulls in transformers) and in torch.

Parameters that Mamba does not draw from a scheme keep Mamba's own init: ``A_log = log(1..N)``
(S4D-real), ``D = 1``, and the Δ bias is the inverse softplus of ``dt ~ logU(1e-3, 1e-1)``.
All biases other than the Δ bias are zero.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

import torch

from reprflow.errors import ConfigError

#: scheme -> default parameters (the accepted keys), as in reprflow.models.init_schemes.SCHEMES
SCHEME_DEFAULTS: dict[str, dict] = {
    "gaussian": {"std": 0.02},
    "xavier": {"gain": 1.0},
    "he": {"nonlinearity": "linear"},
}
SCHEMES = (*SCHEME_DEFAULTS, "model")

TRANSFORMER_MATRICES = ("q_proj", "k_proj", "v_proj", "fc_in", "fc_out")
MAMBA_MATRICES = ("in_proj", "conv", "x_proj", "dt_proj", "out_proj")

DT_MIN, DT_MAX = 1e-3, 1e-1  # Mamba's dt_proj bias init range (Gu & Dao 2023, Sec. 3.6)
FFN_MULT = 4  # d_ff = 4 * d_model, as in GPT-Neo / GPT-NeoX


@dataclass(frozen=True)
class WeightSource:
    """Where the matrix scales come from.

    Attributes
    ----------
    scheme : {"gaussian", "xavier", "he", "model"}
    params : mapping
        ``{"std": float}`` for gaussian, ``{"gain": float}`` for xavier, ``{"nonlinearity": str}``
        for he (missing keys take the defaults in ``SCHEME_DEFAULTS``);
        for ``model``: ``{"std": float}`` for every matrix, or ``{matrix name: std}``
        covering every matrix of the block.
    label : str
        Written to the CSVs' ``weight_source`` column: ``"scheme"`` or ``"model:<name>"``.
    """

    scheme: str
    params: Mapping[str, float]
    label: str = "scheme"

    def __post_init__(self) -> None:
        if self.scheme not in SCHEMES:
            raise ConfigError(f"theory weight scheme {self.scheme!r}: unknown; expected one of {SCHEMES}")
        defaults = SCHEME_DEFAULTS.get(self.scheme)
        if defaults is not None:
            unknown = set(self.params) - set(defaults)
            if unknown:
                raise ConfigError(
                    f"theory weight_params {dict(self.params)!r} for scheme {self.scheme!r}: "
                    f"unexpected keys {sorted(unknown)}; allowed: {sorted(defaults)}"
                )
            object.__setattr__(self, "params", {**defaults, **self.params})
        if self.scheme == "he":
            try:
                torch.nn.init.calculate_gain(self.params["nonlinearity"])
            except ValueError as exc:
                raise ConfigError(f"theory weight_params.nonlinearity: {exc}") from None
        for key, value in self.params.items():
            if key == "nonlinearity":
                continue
            if not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
                raise ConfigError(
                    f"theory weight parameter {key!r} of {self.label!r}: got {value!r}; "
                    "expected a positive finite number"
                )

    def std(self, name: str, fan_in: int, fan_out: int) -> float:
        """Standard deviation of matrix ``name`` with the given fans."""
        if self.scheme == "gaussian":
            return float(self.params["std"])
        if self.scheme == "xavier":
            return float(self.params.get("gain", 1.0)) * math.sqrt(2.0 / (fan_in + fan_out))
        if self.scheme == "he":
            return torch.nn.init.calculate_gain(self.params["nonlinearity"]) / math.sqrt(fan_in)
        if "std" in self.params and len(self.params) == 1:
            return float(self.params["std"])
        if name not in self.params:
            raise ConfigError(
                f"theory weight source {self.label!r}: no std for matrix {name!r} "
                f"(got keys {sorted(self.params)}); give 'std' for all matrices or add {name!r}"
            )
        return float(self.params[name])


@dataclass(frozen=True)
class TransformerWeights:
    """One single-head Transformer block without LayerNorm (paper Eq. 5).

    Shapes: ``w_q, w_k, w_v`` (hidden, hidden); ``w_1`` (d_ff, hidden); ``w_2`` (hidden, d_ff).
    """

    w_q: torch.Tensor
    w_k: torch.Tensor
    w_v: torch.Tensor
    w_1: torch.Tensor
    w_2: torch.Tensor

    @property
    def hidden(self) -> int:
        return self.w_v.shape[0]

    def to(self, device: torch.device | str, dtype: torch.dtype) -> TransformerWeights:
        return TransformerWeights(*(t.to(device=device, dtype=dtype) for t in _fields(self)))


@dataclass(frozen=True)
class MambaWeights:
    """One Mamba (S6) block (paper Eq. 6); m = expand * hidden, N = d_state, K = d_conv, R = dt_rank.

    Shapes: ``w_x, w_z`` (m, hidden) (the two halves of in_proj); ``conv`` (m, K), tap k
    multiplies x_{t-k}; ``w_xdt`` (R, m); ``w_dt`` (m, R); ``b_dt`` (m,); ``w_b, w_c`` (N, m);
    ``a_log`` (m, N); ``d`` (m,); ``w_out`` (hidden, m).
    """

    w_x: torch.Tensor
    w_z: torch.Tensor
    conv: torch.Tensor
    w_xdt: torch.Tensor
    w_dt: torch.Tensor
    b_dt: torch.Tensor
    w_b: torch.Tensor
    w_c: torch.Tensor
    a_log: torch.Tensor
    d: torch.Tensor
    w_out: torch.Tensor

    @property
    def hidden(self) -> int:
        return self.w_out.shape[0]

    def to(self, device: torch.device | str, dtype: torch.dtype) -> MambaWeights:
        return MambaWeights(*(t.to(device=device, dtype=dtype) for t in _fields(self)))


def _fields(w: TransformerWeights | MambaWeights) -> list[torch.Tensor]:
    return [getattr(w, f) for f in w.__dataclass_fields__]


def _normal(shape: tuple[int, ...], std: float, generator: torch.Generator) -> torch.Tensor:
    return torch.randn(shape, generator=generator, dtype=torch.float64) * std


def sample_transformer_weights(hidden: int, *, source: WeightSource, seed: int) -> TransformerWeights:
    """Draw a Transformer block's matrices (float64, CPU) from ``source`` with ``seed``."""
    g = torch.Generator().manual_seed(seed)
    d, f = hidden, FFN_MULT * hidden
    return TransformerWeights(
        w_q=_normal((d, d), source.std("q_proj", d, d), g),
        w_k=_normal((d, d), source.std("k_proj", d, d), g),
        w_v=_normal((d, d), source.std("v_proj", d, d), g),
        w_1=_normal((f, d), source.std("fc_in", d, f), g),
        w_2=_normal((d, f), source.std("fc_out", f, d), g),
    )


def sample_mamba_weights(
    hidden: int, *, d_state: int, d_conv: int, expand: int, source: WeightSource, seed: int
) -> MambaWeights:
    """Draw a Mamba block's parameters (float64, CPU) from ``source`` with ``seed``.

    ``in_proj`` is one (2m, hidden) matrix split into ``w_x`` and ``w_z``; ``x_proj`` is one
    (R + 2N, m) matrix split into ``w_xdt``, ``w_b`` and ``w_c``, with R = ceil(hidden / 16)
    as in Mamba. See the module docstring for the parameters that keep Mamba's own init.
    """
    for key, value in {"d_state": d_state, "d_conv": d_conv, "expand": expand}.items():
        if value < 1:
            raise ConfigError(f"theory {key}: got {value}; expected an integer >= 1")
    g = torch.Generator().manual_seed(seed)
    m, n_state, r = expand * hidden, d_state, math.ceil(hidden / 16)
    w_in = _normal((2 * m, hidden), source.std("in_proj", hidden, 2 * m), g)
    conv = _normal((m, d_conv), source.std("conv", d_conv, m * d_conv), g)
    x_proj = _normal((r + 2 * n_state, m), source.std("x_proj", m, r + 2 * n_state), g)
    w_dt = _normal((m, r), source.std("dt_proj", r, m), g)
    log_dt = math.log(DT_MIN) + torch.rand(m, generator=g, dtype=torch.float64) * (math.log(DT_MAX) - math.log(DT_MIN))
    dt = torch.exp(log_dt)
    b_dt = dt + torch.log(-torch.expm1(-dt))  # inverse softplus
    a_log = torch.log(torch.arange(1, n_state + 1, dtype=torch.float64)).repeat(m, 1)
    return MambaWeights(
        w_x=w_in[:m],
        w_z=w_in[m:],
        conv=conv,
        w_xdt=x_proj[:r],
        w_dt=w_dt,
        b_dt=b_dt,
        w_b=x_proj[r : r + n_state],
        w_c=x_proj[r + n_state :],
        a_log=a_log,
        d=torch.ones(m, dtype=torch.float64),
        w_out=_normal((hidden, m), source.std("out_proj", m, hidden), g),
    )
