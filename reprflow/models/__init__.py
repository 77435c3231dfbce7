"""Model loading, init schemes, per-family layouts and tiny demo models."""

from reprflow.models.init_schemes import SCHEMES, InitSpec, apply_init, build_from_config
from reprflow.models.layouts import Layout, get_layout, supported_model_types, view_indices
from reprflow.models.registry import load_config, load_model, model_max_context
from reprflow.models.tiny import TINY_TOKENIZERS, build_tiny_model, tiny_config

__all__ = [
    "SCHEMES",
    "TINY_TOKENIZERS",
    "InitSpec",
    "Layout",
    "apply_init",
    "build_from_config",
    "build_tiny_model",
    "get_layout",
    "load_config",
    "load_model",
    "model_max_context",
    "supported_model_types",
    "tiny_config",
    "view_indices",
]
