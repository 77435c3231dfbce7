"""Model loading, init schemes, layouts of any causal LM, invariants and tiny demo models.

Attributes are imported lazily (PEP 562), so torch-free submodules such as
:mod:`reprflow.models.init_params` and :mod:`reprflow.models.shipped` can be used
by the config loader and the workflow without importing torch or transformers.
"""

from __future__ import annotations

from reprflow.lazy import lazy_exports

_EXPORTS = {
    "SCHEMES": "reprflow.models.init_params",
    "resolve_init_params": "reprflow.models.init_params",
    "InitSpec": "reprflow.models.init_schemes",
    "apply_init": "reprflow.models.init_schemes",
    "build_from_config": "reprflow.models.init_schemes",
    "Layout": "reprflow.models.layouts",
    "get_layout": "reprflow.models.layouts",
    "OVERRIDES": "reprflow.models.layouts",
    "check_hf_view": "reprflow.models.hf_view",
    "hf_hidden_states": "reprflow.models.hf_view",
    "verify_hf_view": "reprflow.models.hf_view",
    "view_indices": "reprflow.models.layouts",
    "load_config": "reprflow.models.registry",
    "load_model": "reprflow.models.registry",
    "model_max_context": "reprflow.models.registry",
    "model_provenance": "reprflow.models.registry",
    "resolve_config": "reprflow.models.registry",
    "check_family_invariants": "reprflow.models.invariants",
    "check_matches_shipped": "reprflow.models.invariants",
    "shipped_config_path": "reprflow.models.shipped",
    "TINY_TOKENIZERS": "reprflow.models.tiny",
    "build_tiny_model": "reprflow.models.tiny",
    "tiny_config": "reprflow.models.tiny",
}

__all__ = sorted(_EXPORTS)


__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS, globals())
