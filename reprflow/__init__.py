"""reprflow: contextual representation flow in Transformers and state-space models.

Reference implementation of Hoang et al. 2025 (arXiv 2510.06640). The library is
pure computation plus thin I/O; the Snakemake workflow (Snakefile, rules/) wires it.

From a notebook: ``from reprflow import collect_states`` (states of any loaded model, in
memory, as numpy arrays; see :mod:`reprflow.collect`).
"""

__version__ = "0.1.0"

from reprflow.kernels import fallback_notice as _fallback_notice  # noqa: E402 (logging only, no torch)

_fallback_notice.install()  # transformers' ~one SSM-kernel fallback warning per function -> one line per process

__all__ = ["CollectedStates", "__version__", "collect_states"]


def __getattr__(name: str):
    # Lazy: `import reprflow` (and `from reprflow import __version__`) stays light, without torch.
    # import_module, not an import statement: the static import walk of reprflow.workflow.lineage
    # (DVC deps) must not count the notebook API as a dependency of every module importing reprflow.
    if name in ("collect_states", "CollectedStates"):
        import importlib

        return getattr(importlib.import_module("reprflow.collect"), name)
    raise AttributeError(f"module 'reprflow' has no attribute {name!r}")
