"""Load causal LMs by hub id or local path, pretrained or randomly initialised.

Pretrained weights always go through ``from_pretrained(id_or_path, revision=...,
dtype=...)``, so tiny demo models saved with ``save_pretrained`` and hub models
share one path. A random init needs only the model's ``config.json``:

Where the config comes from (:func:`resolve_config`):

1. A local directory: its ``config.json`` (random or pretrained). A revision is
   refused unless the folder's ``hf download`` record holds exactly that commit.
2. Random init of a hub id with a shipped config
   (``reprflow/models/configs/``, :mod:`reprflow.models.shipped`): the shipped
   file. No cache, no hub: the random arm of the paper runs offline.
3. Otherwise a hub id: first tried with ``local_files_only=True`` (the HF cache;
   no network, so cached models never wait on the hub).
4. Not cached: if the hub is in offline mode (``HF_HUB_OFFLINE`` /
   ``TRANSFORMERS_OFFLINE``) or cannot be reached within a short probe
   (:data:`HUB_PROBE_TIMEOUT_S`), :class:`ModelNotFoundError` is raised at once
   (saying which ``hf download`` command fetches it) instead of waiting through
   transformers' retries (about 25 s).
5. Otherwise downloaded; unknown repos, revisions and gated repos get a clear
   :class:`ModelNotFoundError`.

Pretrained weights must match ``config.json``: missing weights (beyond tied ones)
or weights of another shape stop the load instead of being initialised at random,
and a damaged safetensors file is named (:func:`_load_weights`).

After loading, :func:`load_model` asserts the family invariants and, for a paper
model loaded from the hub or a cache, that its architecture equals the shipped
config (:mod:`reprflow.models.invariants`); :func:`model_provenance` tells where
the config and weights came from, including the resolved hub commit.
"""

from __future__ import annotations

import functools
import logging
import os
import re
from pathlib import Path

import torch
from transformers import AutoConfig, AutoModelForCausalLM, PretrainedConfig, PreTrainedModel
from transformers.utils import is_accelerate_available

from reprflow.errors import ConfigError, ModelNotFoundError, ReprflowError
from reprflow.models.init_schemes import InitSpec, apply_init, build_from_config
from reprflow.models.invariants import check_family_invariants, check_matches_shipped
from reprflow.models.layouts import context_attr, get_layout
from reprflow.models.shipped import shipped_config_path

logger = logging.getLogger(__name__)

__all__ = [
    "HUB_PROBE_TIMEOUT_S",
    "is_pinned",
    "load_config",
    "load_model",
    "model_max_context",
    "model_provenance",
    "resolve_config",
]

#: seconds the hub reachability probe waits before declaring the hub unreachable
HUB_PROBE_TIMEOUT_S = 3.0
_TRUE = {"1", "ON", "YES", "TRUE"}


def _offline_mode() -> bool:
    """Offline flags, read at call time (huggingface_hub reads them only at import)."""
    import huggingface_hub

    if huggingface_hub.is_offline_mode():
        return True
    return any(os.environ.get(var, "").upper() in _TRUE for var in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"))


def _hub_reachable(timeout: float = HUB_PROBE_TIMEOUT_S) -> bool:
    """One HEAD request to the hub endpoint through huggingface_hub's own client (proxies honoured)."""
    if _offline_mode():
        return False
    import huggingface_hub
    from huggingface_hub import constants

    try:
        huggingface_hub.get_session().head(constants.ENDPOINT, timeout=timeout)
    except Exception as exc:  # noqa: BLE001 - any transport failure means "unreachable"
        logger.debug("hub probe %s failed: %r", constants.ENDPOINT, exc)
        return False
    return True


def _looks_like_path(model_id_or_path: str) -> bool:
    """True for strings that cannot be a hub id (``name`` or ``org/name``)."""
    return model_id_or_path.startswith(("/", ".", "~")) or model_id_or_path.count("/") > 1


def is_pinned(revision: str | None) -> bool:
    """True for a full 40-hex commit hash (a branch or tag can move; a commit cannot)."""
    return revision is not None and re.fullmatch(r"[0-9a-f]{40}", revision) is not None


def _offline_message(model_id: str, origin: str, revision: str | None, *, config_only: bool) -> str:
    folder = f"./models/{model_id.split('/')[-1]}"  # ./ so hf_id reads as a path even before it exists
    command = " ".join(
        ["hf download", model_id]
        + (["config.json"] if config_only else [])
        + ([f"--revision {revision}"] if revision else [])
        + [f"--local-dir {folder}"]
    )
    need = "a random init needs only its config.json" if config_only else "its weights must be downloaded once"
    use = (  # a config entry (config.models[i].hf_id), or a caller's argument (the CLI's MODEL)
        "set hf_id to its path (keep `revision` only with the folder's .cache/huggingface record, which the "
        "loader checks it against)"
        if origin.startswith("config.")
        else f"pass its path as {origin} instead of the id"
    )
    return (
        f"model '{model_id}' ({origin}): not in the local Hugging Face cache and the hub is unreachable "
        f"(offline); {need}. On a machine with access run `{command}`, copy the folder here and {use}, "
        f"or set HF_HOME to a cache that holds it."
    )


def _from_hub(loader, model_id: str, *, revision: str | None, origin: str, config_only: bool = False, **kwargs):
    """Call ``loader(model_id, ...)``: cache first, then the hub if reachable."""
    from huggingface_hub.errors import GatedRepoError, RepositoryNotFoundError, RevisionNotFoundError

    try:
        return loader(model_id, revision=revision, local_files_only=True, **kwargs)
    except OSError as exc:
        logger.debug("'%s' not (fully) in the local cache: %s", model_id, exc)
    if not _hub_reachable():
        raise ModelNotFoundError(_offline_message(model_id, origin, revision, config_only=config_only))
    try:
        return loader(model_id, revision=revision, **kwargs)
    except OSError as exc:
        cause = exc.__cause__
        if isinstance(cause, GatedRepoError):
            raise ModelNotFoundError(
                f"model '{model_id}' ({origin}): gated on the hub; accept its licence and "
                f"log in (`hf auth login`), or point hf_id at a local copy"
            ) from exc
        if isinstance(cause, RepositoryNotFoundError):
            raise ModelNotFoundError(
                f"model '{model_id}' ({origin}): no such repository on the hub (or it is "
                f"private); check the id's spelling (org/name) or point hf_id at a local directory"
            ) from exc
        if isinstance(cause, RevisionNotFoundError):
            raise ModelNotFoundError(
                f"model '{model_id}' ({origin}): revision '{revision}' does not exist; use a "
                f"branch, tag or commit hash of that repository"
            ) from exc
        raise ModelNotFoundError(f"model '{model_id}' ({origin}): could not be loaded: {exc}") from exc


def _local_dir(model_id_or_path: str, origin: str) -> Path | None:
    """The local model directory, None for a hub id, or raise for a broken path."""
    path = Path(model_id_or_path).expanduser()
    if path.exists():
        if not path.is_dir():
            raise ModelNotFoundError(
                f"model '{model_id_or_path}' ({origin}): is a file, expected a directory written "
                f"by save_pretrained (config.json + *.safetensors)"
            )
        if not (path / "config.json").is_file():
            raise ModelNotFoundError(
                f"model '{model_id_or_path}' ({origin}): directory exists but has no config.json; "
                f"point hf_id at the directory written by save_pretrained or by "
                f"`hf download <id> --local-dir <dir>`"
            )
        return path
    if _looks_like_path(model_id_or_path):
        raise ModelNotFoundError(
            f"model '{model_id_or_path}' ({origin}): local path does not exist; fix the path "
            f"or use a hub id such as 'EleutherAI/pythia-2.8b'"
        )
    return None


def _download_record(local: Path) -> set[str]:
    """Commits that ``hf download --local-dir`` recorded for the files still in ``local``.

    huggingface_hub writes ``<local>/.cache/huggingface/download/<file>.metadata`` (first line:
    the commit hash) for every file it downloads into a folder; empty for a folder written by
    ``save_pretrained`` or copied without that hidden folder.
    """
    root = local / ".cache" / "huggingface" / "download"
    commits: set[str] = set()
    if not root.is_dir():
        return commits
    for meta in root.rglob("*.metadata"):
        if not (local / meta.relative_to(root).with_suffix("")).is_file():
            continue  # a record of a file no longer in the folder
        try:
            with meta.open() as f:
                commit = f.readline().strip()
        except OSError:
            continue
        if commit:
            commits.add(commit)
    return commits


def _check_local_revision(local: Path, revision: str | None, model_id: str, origin: str) -> None:
    """Refuse a revision for a local folder unless the folder's download record holds exactly that commit.

    A local folder is loaded as it is: a revision cannot select anything in it, and recording one
    that was never checked would make the store's provenance claim weights it may not hold.
    """
    if revision is None:
        return
    recorded = _download_record(local)
    if recorded == {revision}:
        logger.info(
            "model '%s' (%s): revision %s matches the folder's `hf download` record", model_id, origin, revision
        )
        return
    if len(recorded) == 1:
        why = (
            f"its `hf download` record (.cache/huggingface/download) says it holds commit {next(iter(recorded))}, "
            f"not '{revision}'; set revision to that full commit hash, or drop it"
        )
    elif recorded:
        why = f"its `hf download` record mixes commits {sorted(recorded)}; re-download it at one revision"
    else:
        why = (
            "it has no `hf download` record to check the revision against, so the revision would be ignored "
            "yet recorded in the store's provenance; drop it (`revision: null`, no --revision), or download "
            "the folder with `hf download <id> --revision <commit> --local-dir <folder>` and keep its .cache folder"
        )
    raise ConfigError(
        f"model '{model_id}' ({origin}): --revision/revision applies to hub ids; '{model_id}' is a local folder: {why}"
    )


def _damaged_file(folder: Path | None) -> Path | None:
    """The first ``*.safetensors`` file in ``folder`` whose header safetensors cannot read, if any."""
    if folder is None or not folder.is_dir():
        return None
    from safetensors import safe_open

    for path in sorted(folder.glob("*.safetensors")):
        try:
            with safe_open(path, framework="pt"):
                pass
        except Exception:  # noqa: BLE001 - any read failure marks the file
            return path
    return None


def _snapshot_dir(model_id: str, revision: str | None) -> Path | None:
    """The HF cache snapshot folder that holds ``model_id`` (at ``revision``), if cached."""
    from huggingface_hub import try_to_load_from_cache

    found = try_to_load_from_cache(model_id, "config.json", revision=revision)
    return Path(found).parent if isinstance(found, str) else None


class _DropLoadReport(logging.Filter):
    """Drop transformers' multi-line LOAD REPORT table; :func:`_load_weights` reports in one line."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "LOAD REPORT" not in str(record.msg)


def _first(keys, n: int = 5) -> str:
    keys = sorted(keys)
    return ", ".join(keys[:n]) + (", ..." if len(keys) > n else "")


def _load_weights(name, *, model_id: str, origin: str, folder: Path | None, revision: str | None, **kwargs):
    """``AutoModelForCausalLM.from_pretrained(name, ...)`` that refuses weights not matching ``config.json``.

    Missing weights (after transformers ties shared ones, e.g. an ``lm_head`` tied to the
    embeddings) and weights of another shape raise :class:`ModelNotFoundError`: transformers
    would silently initialise them at random, and the store would still say ``pretrained``.
    Checkpoint weights the model does not use (``unexpected``, e.g. the ``attn.bias`` buffers of
    old GPT-Neo checkpoints) only log a warning. A damaged or truncated safetensors file raises
    one :class:`ModelNotFoundError` naming it.
    """
    from safetensors import SafetensorError
    from transformers.modeling_utils import logger as hf_logger

    report_filter = _DropLoadReport()
    hf_logger.addFilter(report_filter)
    try:
        model, info = AutoModelForCausalLM.from_pretrained(
            name, revision=revision, output_loading_info=True, ignore_mismatched_sizes=True, **kwargs
        )
    except SafetensorError as exc:
        where = folder if folder is not None else _snapshot_dir(model_id, revision)
        damaged = _damaged_file(where)
        path = damaged if damaged is not None else (where / "model.safetensors" if where else "model.safetensors")
        raise ModelNotFoundError(
            f"model '{model_id}' ({origin}): {path} is damaged or truncated ({exc}); re-download or re-save it"
        ) from None
    finally:
        hf_logger.removeFilter(report_filter)
    where = str(folder) if folder is not None else model_id
    missing = set(info.get("missing_keys") or ())
    if missing:
        raise ModelNotFoundError(
            f"model '{model_id}' ({origin}): the weights in {where} do not match its config.json "
            f"(model_type '{model.config.model_type}'): {len(missing)} weight(s) of the model are missing from "
            f"the checkpoint ({_first(missing)}) and would be random; point hf_id at the folder the weights "
            f"were saved with, or fix config.json"
        )
    mismatched = list(info.get("mismatched_keys") or ())
    if mismatched:
        shown = "; ".join(f"{k}: checkpoint {tuple(a)} vs config {tuple(b)}" for k, a, b in sorted(mismatched)[:5])
        raise ModelNotFoundError(
            f"model '{model_id}' ({origin}): the weights in {where} do not match its config.json: "
            f"{len(mismatched)} weight(s) have another shape ({shown}{'; ...' if len(mismatched) > 5 else ''}); "
            f"fix config.json (e.g. vocab_size, hidden_size) or point hf_id at the matching folder"
        )
    unexpected = set(info.get("unexpected_keys") or ())
    if unexpected:
        logger.warning(
            "model '%s' (%s): %d checkpoint weight(s) are not used by %s and were skipped (%s)",
            model_id,
            origin,
            len(unexpected),
            type(model).__name__,
            _first(unexpected),
        )
    return model


def resolve_config(
    model_id_or_path: str,
    *,
    revision: str | None = None,
    origin: str = "model",
    prefer_shipped: bool = False,
    for_weights: bool = False,
) -> tuple[PretrainedConfig, dict]:
    """Load a model's config (no weights) and say where it came from.

    Parameters
    ----------
    model_id_or_path : str
    revision : str, optional
    origin : str
        Where the id came from, quoted in errors (e.g. ``"config.models[0].hf_id"``).
    prefer_shipped : bool
        Use the shipped config of a hub id if there is one (random init), before
        the cache or the hub.
    for_weights : bool
        The weights will be loaded next: an offline error then says to download
        the whole checkpoint, not only its config.json.

    Returns
    -------
    (PretrainedConfig, dict)
        The config and its provenance: ``{"config_source": "local" | "shipped" |
        "hub", "config_path": str | None, "commit": str | None}`` (``commit`` is
        the resolved hub commit, when loaded from the cache or the hub).

    Raises
    ------
    ModelNotFoundError
    ConfigError
        A revision for a local directory that its ``hf download`` record does not confirm.
    """
    local = _local_dir(model_id_or_path, origin)
    if local is not None:
        _check_local_revision(local, revision, model_id_or_path, origin)
        config = AutoConfig.from_pretrained(local)
        return config, {"config_source": "local", "config_path": str(local / "config.json"), "commit": None}
    shipped = shipped_config_path(model_id_or_path)
    if prefer_shipped and shipped is not None:
        config = AutoConfig.from_pretrained(shipped)
        return config, {"config_source": "shipped", "config_path": str(shipped), "commit": None}
    config = _from_hub(
        AutoConfig.from_pretrained, model_id_or_path, revision=revision, origin=origin, config_only=not for_weights
    )
    return config, {"config_source": "hub", "config_path": None, "commit": getattr(config, "_commit_hash", None)}


def load_config(
    model_id_or_path: str, *, revision: str | None = None, origin: str = "model", prefer_shipped: bool = False
) -> PretrainedConfig:
    """Load a model's config (cheap: no weights); see :func:`resolve_config`.

    Raises
    ------
    ModelNotFoundError
    """
    return resolve_config(model_id_or_path, revision=revision, origin=origin, prefer_shipped=prefer_shipped)[0]


def _check(
    config: PretrainedConfig, model_id: str, origin: str, tokenizer_size: int | None, *, compare_shipped: bool
) -> None:
    check_family_invariants(config, model=model_id, origin=origin, tokenizer_size=tokenizer_size)
    shipped = shipped_config_path(model_id)
    if compare_shipped and shipped is not None:
        check_matches_shipped(
            config,
            AutoConfig.from_pretrained(shipped),
            model=model_id,
            origin=origin,
            shipped_path=str(shipped.relative_to(shipped.parents[3])),
        )


def load_model(
    model_id_or_path: str,
    *,
    init: InitSpec,
    seed: int | None,
    revision: str | None = None,
    dtype: torch.dtype = torch.float32,
    device: str | torch.device = "cpu",
    origin: str = "model",
    tokenizer_size: int | None = None,
    family: str | None = None,
) -> PreTrainedModel:
    """Load a causal LM, pretrained or randomly initialised, in eval mode.

    Parameters
    ----------
    model_id_or_path : str
        Hub id (``"EleutherAI/gpt-neo-2.7B"``) or a local ``save_pretrained`` /
        ``hf download --local-dir`` directory.
    init : InitSpec
        ``pretrained`` loads trained weights with
        ``AutoModelForCausalLM.from_pretrained(id, revision=revision, dtype=dtype)``;
        any other scheme loads only the config (the shipped one for a paper
        model, so no hub is needed) and builds the model with ``from_config``
        directly on ``device`` and in ``dtype`` (see
        :mod:`reprflow.models.init_schemes`).
    seed : int or None
        Required for random schemes; ignored (may be None) for ``pretrained``.
    revision : str, optional
        Hub branch, tag or commit; ignored for shipped configs. A local
        directory refuses one unless it is the exact commit the folder's
        ``hf download --local-dir`` record (``.cache/huggingface/download``)
        holds. Pin a full commit hash: an unpinned hub load logs a warning
        with the commit it resolved to.
    dtype : torch.dtype
        Compute dtype of the parameters.
    device : str or torch.device
        ``"meta"`` builds the architecture without memory (random schemes only;
        used to check parameter counts).
    origin : str
        Where the id came from, quoted in errors (e.g. ``"config.models[0].hf_id"``).
    tokenizer_size : int, optional
        ``len(tokenizer)``; the vocabulary must cover it (see
        :func:`reprflow.models.invariants.check_family_invariants`).
    family : str, optional
        The family the config declares (``config.models[i].family``); the
        checkpoint's ``model_type`` must equal it.

    Returns
    -------
    PreTrainedModel
        ``*ForCausalLM`` in eval mode, on ``device``; :func:`model_provenance`
        reads where it came from.

    Raises
    ------
    ModelNotFoundError
        Not found locally and the hub is unreachable; unknown repo or revision;
        local path without ``config.json``; pretrained weights that do not
        match ``config.json`` (missing or of another shape; unused checkpoint
        weights only log a warning); a damaged or truncated safetensors file.
    ReprflowError
        The layout cannot be found (the discovery rules run on a meta-device
        skeleton built from the config, before any weight is read); the
        message names the override to add.
    ConfigError
        A random scheme without a seed; a revision for a local directory that its
        download record does not confirm; a ``model_type`` other than ``family``;
        a broken family invariant; a checkpoint whose architecture differs from
        the shipped config.
    """
    if init.is_random and seed is None:
        raise ConfigError(f"model '{model_id_or_path}' ({origin}): init '{init.scheme}' needs a seed")
    config, source = resolve_config(
        model_id_or_path,
        revision=revision,
        origin=origin,
        prefer_shipped=init.is_random,
        for_weights=not init.is_random,
    )
    try:
        layout = get_layout(config)  # fail fast (meta-device skeleton), before any weight is read
    except ReprflowError as exc:
        raise ReprflowError(f"model '{model_id_or_path}' ({origin}): {exc}") from None
    if family is not None and config.model_type != family:
        raise ConfigError(
            f"model '{model_id_or_path}' ({origin}): the checkpoint is model_type '{config.model_type}' but the "
            f"config's family is '{family}'; set family: {config.model_type} or fix hf_id"
        )
    _check(config, model_id_or_path, origin, tokenizer_size, compare_shipped=source["config_source"] != "shipped")
    device = torch.device(device)
    if init.is_random:
        model = build_from_config(config, seed=seed, dtype=dtype, device=device)
        apply_init(model, init, seed=seed, keep_init=layout.keep_init)
    else:
        local = _local_dir(model_id_or_path, origin)
        kwargs: dict = {"dtype": dtype}
        if device.type != "cpu" and is_accelerate_available():
            kwargs["device_map"] = device  # load straight onto the device
        checked = {"model_id": model_id_or_path, "origin": origin, "folder": local}
        if local is not None:
            model = _load_weights(local, revision=None, **checked, **kwargs)
        else:
            model = _from_hub(
                functools.partial(_load_weights, **checked),
                model_id_or_path,
                revision=revision,
                origin=origin,
                **kwargs,
            )
        model = model.to(device)  # no-op when device_map already placed it
        # the config the weights came with (same file, but assert on what was built)
        _check(model.config, model_id_or_path, origin, tokenizer_size, compare_shipped=local is None)
        source = {**source, "commit": getattr(model.config, "_commit_hash", None) or source["commit"]}
    provenance = {
        "model_id": model_id_or_path,
        "revision": revision,
        "init": init.scheme,
        "weights": "pretrained" if not init.is_random else "random",
        **source,
    }
    model.reprflow_provenance = provenance
    if not init.is_random and source["config_source"] == "hub" and not is_pinned(revision):
        logger.warning(
            "model '%s' (%s): loaded hub commit %s, but revision is %r; pin it with `revision: %s` "
            "in the config so reruns load the same weights",
            model_id_or_path,
            origin,
            source["commit"],
            revision,
            source["commit"],
        )
    n_params = sum(p.numel() for p in model.parameters())
    logger.info(
        "loaded %s (%s, %d blocks, %.1fM params) init=%s seed=%s dtype=%s device=%s config=%s commit=%s",
        model_id_or_path,
        layout.model_type,
        len(get_layout(model).block_list(model)),  # discovered on the loaded model (cached)
        n_params / 1e6,
        init.scheme,
        seed,
        dtype,
        device,
        source["config_source"],
        source["commit"],
    )
    return model.eval()


def model_provenance(model: PreTrainedModel) -> dict:
    """Where a model from :func:`load_model` came from (JSON-ready).

    Returns
    -------
    dict
        ``model_id``, ``revision`` (as requested), ``init``, ``weights``
        (``"pretrained"`` or ``"random"``), ``config_source`` (``"local"``,
        ``"shipped"`` or ``"hub"``), ``config_path`` and ``commit`` (the resolved
        hub commit, or None for local folders and shipped configs). Empty for a
        model not loaded through :func:`load_model`.
    """
    return dict(getattr(model, "reprflow_provenance", {}))


def model_max_context(model_or_config: PreTrainedModel | PretrainedConfig) -> int | None:
    """The trained context limit in tokens, or None for families without one (SSMs).

    Parameters
    ----------
    model_or_config : PreTrainedModel or PretrainedConfig

    Returns
    -------
    int or None
        ``config.<layout.context_attr>`` (e.g. 2048 for GPT-Neo and Pythia).
    """
    config = getattr(model_or_config, "config", model_or_config)
    attr = context_attr(config)
    if attr is None:
        return None
    value = getattr(config.get_text_config(), attr, None)
    if value is None:
        raise ConfigError(
            f"model_type '{config.model_type}': config has no '{attr}' "
            f"(the layout's context_attr); fix OVERRIDES['{config.model_type}'] in reprflow/models/layouts.py"
        )
    return int(value)
