"""Disk preflight: the worst-case size of every activation store a config asks for.

A store (reprflow/store.py) holds, per cell (model, init, task, length) with ``L`` blocks,
hidden size ``d``, ``n`` prompts and ``t`` token prompts, ``L + 2`` states (embedding,
every block, final norm):

* last-token states: ``n x (L+2) x d`` values;
* full token states: ``t x (L+2) x T x d`` values, ``T`` the longest token prompt, at worst
  ``length x (1 + tolerance)`` tokens (capped by the model's context; a custom task: ``length``,
  and ``n`` its number of records);
* labels, token counts and Zarr metadata: a few bytes per prompt (``OVERHEAD_BYTES``).

With ``extraction.tokens: stream`` a store holds no token states (``t = 0``; the streamed
metric files are a few kB). A cell of a ``scope: fig3`` init forwards only its token prompts,
so its ``n`` is ``n_token_prompts``.

Values are counted at 4 bytes (float32): ``store_dtype: auto`` falls back to float32
whenever float16 would overflow (a random Mamba reaches |x| ~ 6e5), and chunks are counted
uncompressed. Shards split a cell's samples, not its bytes, so the total does not depend on
``execution.extraction.shards``.

Model dims come from the model's ``config.json`` without touching the hub
(:func:`reprflow.workflow.model_json.read_model_json`): the shipped
``reprflow/models/configs/{hf_id with '/' -> '__'}.json``, else a local model folder's
``config.json``, else (a demo model not built or trained yet) the tiny defaults plus the
config's ``tiny.overrides``, or a ``train:`` block's width and (matched) block count.

Command line (prints the table, the total with ``tokens: store`` and ``tokens: stream``, and
the verdict for the config's own setting; exit 1 if the stores do not fit)::

    python -m reprflow.workflow.disk --configfile config/config.yaml [override.yaml ...]

Several files merge as Snakemake's ``--configfile a b`` does (later keys win, mappings merge
key by key, lists are replaced whole).
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import logging
import math
import os
import shutil
import sys
from collections.abc import Collection
from dataclasses import dataclass
from pathlib import Path

from reprflow.config import Config, ModelSpec, load_configs
from reprflow.errors import ConfigError, ReprflowError
from reprflow.training.block_counts import best_ssm_shape
from reprflow.workflow.model_json import read_model_json

logger = logging.getLogger(__name__)

__all__ = [
    "Dims",
    "DiskSpaceError",
    "StoreEstimate",
    "check_disk",
    "estimate_stores",
    "format_table",
    "model_dims",
    "pending_estimates",
    "summary",
]

BYTES_PER_VALUE = 4  # float32, the worst case of store_dtype auto / float16 / float32
OVERHEAD_BYTES = 64 * 1024  # Zarr metadata, attrs, labels, n_tokens, lengths of a small store
OVERHEAD_PER_PROMPT = 16  # labels + n_tokens (int64 each)
TINY_DIMS = {"hidden": 64, "n_layers": 4}  # reprflow/models/tiny.py: every family's default
_HIDDEN_KEYS = ("hidden_size", "d_model", "n_embd")
_LAYER_KEYS = ("num_hidden_layers", "num_layers", "n_layer")


class DiskSpaceError(ReprflowError):
    """The stores still to build do not fit the free space under ``out_dir``."""


@dataclass(frozen=True)
class Dims:
    """Hidden size and number of blocks of a model, and where they were read."""

    hidden: int
    n_layers: int
    source: str


@dataclass(frozen=True)
class StoreEstimate:
    """Worst-case bytes of one cell's store(s); ``dims`` None when they are unknown."""

    model: str
    init: str
    task: str
    length: int
    dims: Dims | None
    n_prompts: int
    n_token_prompts: int
    max_tokens: int
    bytes: int | None


def _pick(cfg: dict, keys: tuple[str, ...]) -> int | None:
    for key in keys:
        if isinstance(cfg.get(key), int):
            return cfg[key]
    return None


def _dims_from(cfg: dict, source: str) -> Dims | None:
    hidden, layers = _pick(cfg, _HIDDEN_KEYS), _pick(cfg, _LAYER_KEYS)
    if hidden is None or layers is None:
        return None
    return Dims(hidden, layers, source)


@functools.lru_cache(maxsize=None)
def _trained_dims(family: str, width: int, depth: int) -> Dims:
    """Dims of a model the workflow will train (``train:``), before it exists: the recipe's width;
    ``depth`` Transformer layers, or the SSM block count that matches them
    (:func:`reprflow.training.sizing.match_families`'s choice, counted by formula without torch:
    :func:`reprflow.training.block_counts.best_ssm_shape`)."""
    if family in ("mamba", "mamba2"):
        depth = best_ssm_shape(family, width=width, depth=depth)[0]
    return Dims(width, depth, "the train block (reprflow/training/sizing.py)")


def model_dims(model: ModelSpec, config: Config | None = None) -> Dims | None:
    """Hidden size and block count of ``model``, or None: a ``train:`` entry's from its recipe (the
    model the run will have: a model saved from another recipe is trained again), else from a
    config.json (never the hub), else a ``tiny:`` entry's from its spec."""
    if model.train is not None:
        from reprflow.training.recipe import TrainSpec

        spec = TrainSpec.from_dict(model.train)
        return _trained_dims(model.family, spec.width, spec.depth)
    found = read_model_json(model.hf_id)
    dims = None if found is None else _dims_from(*found)
    if dims is not None:
        return dims
    if model.tiny is not None:
        merged = {"hidden_size": TINY_DIMS["hidden"], "num_hidden_layers": TINY_DIMS["n_layers"]}
        overrides = dict(model.tiny.get("overrides") or {})
        for keys, name in ((_HIDDEN_KEYS, "hidden_size"), (_LAYER_KEYS, "num_hidden_layers")):
            value = _pick(overrides, keys)
            if value is not None:
                merged[name] = value
        return _dims_from(merged, "tiny defaults (reprflow/models/tiny.py) + tiny.overrides")
    return None


def _custom_records(config: Config, task: str) -> int:
    """A custom task's prompt count: the non-blank lines of its JSONL file (relative to the working
    directory, the project root), or ``prompts.n_prompts`` while the file is not there."""
    path = Path(config.custom_tasks[task]["jsonl"])
    if not path.is_file():
        return int(config.section("prompts")["n_prompts"])
    with open(path, encoding="utf-8") as fh:
        return sum(1 for line in fh if line.strip())


def cell_prompts(config: Config, task: str, init: str) -> tuple[int, int]:
    """``(prompts forwarded, token prompts)`` of one cell of ``task`` and ``init`` (an init name).

    A cell forwards every prompt of its set (``prompts.n_prompts``; a custom task's file), and
    its token prompts are the first ``extraction.n_token_prompts`` of them; a cell of an init
    with ``scope: fig3`` forwards its token prompts only."""
    from reprflow.workflow.targets import init_scope

    n_cell = (
        _custom_records(config, task) if task in config.custom_tasks else int(config.section("prompts")["n_prompts"])
    )
    n_token = min(int(config.section("extraction")["n_token_prompts"]), n_cell)
    return (n_token if init_scope(config.init(init)) == "fig3" else n_cell), n_token


def estimate_stores(config: Config, *, tokens: str | None = None) -> list[StoreEstimate]:
    """One worst-case estimate per cell of ``config`` (reprflow.workflow.targets.cells).

    ``tokens`` (``store`` or ``stream``) overrides ``extraction.tokens``, to compare the two."""
    from reprflow.workflow.targets import cells, prompt_max_tokens

    tokens = tokens or config.section("extraction").get("tokens", "store")
    if tokens not in ("store", "stream"):
        raise ConfigError(f"extraction.tokens is {tokens!r}; expected 'store' or 'stream'")
    dims_of = {m.name: model_dims(m, config) for m in config.models}
    found = []
    for cell in cells(config):
        n_prompts, n_token_cell = cell_prompts(config, cell.task, cell.init)
        n_token = n_token_cell if tokens == "store" else 0
        # the builder's own bound on the set's longest prompt (tolerance, capped by the windows
        # of the models sharing its tokenizer)
        max_tokens = prompt_max_tokens(config, config.model(cell.model).tokenizer, cell.task, cell.length)
        dims = dims_of[cell.model]
        size = None
        if dims is not None:
            states = dims.n_layers + 2
            values = n_prompts * states * dims.hidden + n_token * states * max_tokens * dims.hidden
            size = values * BYTES_PER_VALUE + n_prompts * OVERHEAD_PER_PROMPT + OVERHEAD_BYTES
        found.append(
            StoreEstimate(cell.model, cell.init, cell.task, cell.length, dims, n_prompts, n_token, max_tokens, size)
        )
    return found


def _gib(n: float) -> str:
    return f"{n / 2**30:,.2f} GiB" if n < 2**40 else f"{n / 2**40:,.2f} TiB"


def format_table(estimates: list[StoreEstimate]) -> str:
    """A plain-text table: one row per (model, init), summed over tasks and lengths, and the total."""
    rows: dict[tuple[str, str], list[StoreEstimate]] = {}
    for e in estimates:
        rows.setdefault((e.model, e.init), []).append(e)
    lines = [f"{'model':<18} {'init':<16} {'d':>6} {'L':>4} {'cells':>5} {'worst case':>14}"]
    for (model, init), group in rows.items():
        dims = group[0].dims
        known = [e.bytes for e in group if e.bytes is not None]
        size = _gib(sum(known)) if dims is not None else "unknown"
        d, n_layers = (dims.hidden, dims.n_layers) if dims is not None else ("?", "?")
        lines.append(f"{model:<18} {init:<16} {d:>6} {n_layers:>4} {len(group):>5} {size:>14}")
    total = sum(e.bytes for e in estimates if e.bytes is not None)
    lines.append(f"{'total':<18} {'':<16} {'':>6} {'':>4} {len(estimates):>5} {_gib(total):>14}")
    return "\n".join(lines)


def _existing_dir(path: Path) -> Path:
    path = path.resolve()
    while not path.exists():
        path = path.parent
    return path


def pending_estimates(config: Config, stores: Collection[str] | None = None) -> list[StoreEstimate]:
    """Estimates of the stores still to build: a cell's share of shard stores that do not
    exist yet (a ``.partial`` store counts whole). ``stores``, if given, restricts them to
    those paths (e.g. the outputs of the extraction jobs Snakemake is about to run)."""
    from reprflow.workflow.targets import store_paths

    pending = []
    for estimate in estimate_stores(config):
        paths = store_paths(config, estimate.model, estimate.init, estimate.task, estimate.length)
        missing = [p for p in paths if not os.path.isdir(p) and (stores is None or p in stores)]
        if not missing:
            continue
        size = None if estimate.bytes is None else math.ceil(estimate.bytes * len(missing) / len(paths))
        pending.append(dataclasses.replace(estimate, bytes=size))
    return pending


def _free(config: Config, root: str | Path | None) -> tuple[Path, int]:
    where = _existing_dir(Path(root if root is not None else config.out_dir))
    return where, shutil.disk_usage(where).free


def summary(config: Config, pending: list[StoreEstimate], *, root: str | Path | None = None) -> str:
    """One line: how many stores are to build, their worst-case bytes, the free space."""
    where, free = _free(config, root)
    need = sum(e.bytes for e in pending if e.bytes is not None)
    unknown = sorted({e.model for e in pending if e.bytes is None})
    note = (
        f"; not counted (no config.json found, see reprflow/workflow/disk.py): {', '.join(unknown)}" if unknown else ""
    )
    return (
        f"disk: {len(pending)} activation store(s) to build need at most {_gib(need)} (float32, "
        f"uncompressed); {_gib(free)} free under {where}{note}"
    )


def check_disk(config: Config, pending: list[StoreEstimate] | None = None, *, root: str | Path | None = None) -> str:
    """Compare the worst-case bytes of ``pending`` stores (default: every cell's) with the
    free space of the filesystem holding ``out_dir`` (or ``root``).

    Returns the one-line :func:`summary`. Raises :class:`DiskSpaceError` naming the
    shortfall when they do not fit; models whose dims are unknown are named, not counted.
    """
    pending = estimate_stores(config) if pending is None else pending
    line = summary(config, pending, root=root)
    _, free = _free(config, root)
    need = sum(e.bytes for e in pending if e.bytes is not None)
    if need > free:
        streamed = config.section("extraction").get("tokens", "store") == "stream"
        hint = "" if streamed else "set extraction.tokens: stream (no token states on disk); "
        raise DiskSpaceError(
            f"{line}. Short by {_gib(need - free)}. Free space or point config.out_dir at a larger "
            f"filesystem; {hint}lower prompts.n_prompts or extraction.n_token_prompts; or, if the stores will "
            "compress well, skip this check with config.execution.disk_check: false (on the command "
            "line: --configfile <config> nocheck.yaml, where nocheck.yaml holds "
            "`execution: {disk_check: false}`). Per-model table: "
            "python -m reprflow.workflow.disk --configfile <config>"
        )
    return line


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--configfile",
        nargs="+",
        default=["config/config.yaml"],
        help="the experiment config (YAML); later files override earlier ones, as in Snakemake",
    )
    args = parser.parse_args(argv)
    try:
        config = load_configs(args.configfile)
    except ConfigError as exc:
        print(f"reprflow: invalid config: {exc}", file=sys.stderr)
        return 2
    estimates = estimate_stores(config)
    print(format_table(estimates))
    totals = {
        t: sum(e.bytes for e in estimate_stores(config, tokens=t) if e.bytes is not None) for t in ("store", "stream")
    }
    own = config.section("extraction").get("tokens", "store")
    print(
        "all stores, worst case: "
        + "; ".join(f"tokens: {t} {_gib(b)}{' (this config)' if t == own else ''}" for t, b in totals.items())
    )
    try:
        print(check_disk(config, estimates))
    except DiskSpaceError as exc:
        print(exc, file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
