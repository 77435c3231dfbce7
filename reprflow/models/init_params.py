"""Init scheme names and their parameters: the one place that says what is valid.

Torch-free on purpose: :mod:`reprflow.config` validates every ``config.inits[i]``
entry with :func:`resolve_init_params` when the config is loaded (before any job is
queued), and :class:`reprflow.models.init_schemes.InitSpec` uses the same function
when a model is built, so the two can never disagree.

Schemes and parameters (formulas in :mod:`reprflow.models.init_schemes`):

============  =================================  ===================================
scheme        parameters (default)               weight distribution
============  =================================  ===================================
pretrained    none                               trained checkpoint
default       none                               the family's own ``_init_weights``
gaussian      ``std`` (0.02), finite, > 0        N(0, std²)
xavier        ``gain`` (1.0), finite, > 0        N(0, gain² · 2 / (fan_in + fan_out))
he            ``nonlinearity`` ("relu")          N(0, gain² / fan_in), gain √2 (relu)
                                                 or 1 (linear: LeCun normal)
============  =================================  ===================================
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from reprflow.errors import ConfigError

__all__ = ["HE_NONLINEARITIES", "SCHEMES", "resolve_init_params"]

#: scheme name -> default parameters (the accepted keys)
SCHEMES: dict[str, dict[str, Any]] = {
    "pretrained": {},
    "default": {},
    "gaussian": {"std": 0.02},
    "xavier": {"gain": 1.0},
    "he": {"nonlinearity": "relu"},
}
#: accepted ``he`` nonlinearities: "relu" is He et al. (2015), "linear" is LeCun normal
HE_NONLINEARITIES = ("relu", "linear")


def resolve_init_params(scheme: str, params: Mapping[str, Any] | None, *, where: str = "init") -> dict[str, Any]:
    """Validate ``params`` for ``scheme`` and return them with defaults filled in.

    Parameters
    ----------
    scheme : str
        One of :data:`SCHEMES`.
    params : mapping or None
        Scheme parameters; missing keys take the defaults in :data:`SCHEMES`.
    where : str
        Prefix of every error message, e.g. ``"config.inits[3]"``; errors then name
        ``config.inits[3].scheme`` or ``config.inits[3].params.std``.

    Returns
    -------
    dict
        The resolved parameters (``std`` and ``gain`` as float).

    Raises
    ------
    ConfigError
        Unknown scheme, unknown parameter, or a value out of range.

    Examples
    --------
    >>> resolve_init_params("gaussian", {"std": 1})
    {'std': 1.0}
    >>> resolve_init_params("gaussian", {"std": -1}, where="config.inits[2]")
    Traceback (most recent call last):
    ...
    reprflow.errors.ConfigError: config.inits[2].params.std: must be a finite number > 0 (the standard deviation of N(0, std²)), got -1
    """
    if scheme not in SCHEMES:
        raise ConfigError(f"{where}.scheme: {scheme!r} is unknown; expected one of {', '.join(SCHEMES)}")
    params = dict(params or {})
    defaults = SCHEMES[scheme]
    unknown = sorted(set(params) - set(defaults))
    if unknown:
        allowed = ", ".join(defaults) or "none (remove params)"
        raise ConfigError(f"{where}.params.{unknown[0]}: not a parameter of init scheme {scheme!r}; allowed: {allowed}")
    resolved = {**defaults, **params}
    meaning = {"std": "the standard deviation of N(0, std²)", "gain": "the Xavier gain"}
    for key in ("std", "gain"):
        if key not in resolved:
            continue
        value = resolved[key]
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not (math.isfinite(value) and value > 0):
            raise ConfigError(f"{where}.params.{key}: must be a finite number > 0 ({meaning[key]}), got {value!r}")
        resolved[key] = float(value)
    if "nonlinearity" in resolved and resolved["nonlinearity"] not in HE_NONLINEARITIES:
        raise ConfigError(
            f"{where}.params.nonlinearity: must be one of {list(HE_NONLINEARITIES)} "
            f"(relu: He et al. 2015, std sqrt(2/fan_in); linear: std 1/sqrt(fan_in)), "
            f"got {resolved['nonlinearity']!r}"
        )
    return resolved
