"""Package attributes imported on first use (PEP 562).

A package whose ``__init__`` imports its submodules eagerly makes every importer load, and in
the workflow's code digests depend on, all of them (reprflow/workflow/lineage.py). The lazy
packages (``reprflow.metrics``, ``reprflow.models``, ``reprflow.prompts``) instead keep a literal
``_EXPORTS = {name: module}`` dict, which the lineage walk reads, and install the two functions
this module builds::

    __getattr__, __dir__ = lazy_exports(__name__, _EXPORTS, globals())
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from typing import Any

__all__ = ["lazy_exports"]


def lazy_exports(
    package: str, exports: Mapping[str, str], namespace: dict[str, Any]
) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """``(__getattr__, __dir__)`` for ``package``.

    ``exports`` maps each name to the module that defines it: a submodule's name (``"cka"`` is
    ``<package>.cka``) or a dotted path from the top package (``"reprflow.errors"``). A name is
    imported on first access and then kept in ``namespace`` (the package's ``globals()``).
    """

    def __getattr__(name: str) -> Any:
        if name not in exports:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        module = exports[name]
        value = getattr(
            importlib.import_module(module if module.startswith("reprflow.") else f"{package}.{module}"), name
        )
        namespace[name] = value
        return value

    def __dir__() -> list[str]:
        return sorted(set(namespace) | set(exports))

    return __getattr__, __dir__
