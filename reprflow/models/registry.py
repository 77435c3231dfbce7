"""Load causal LMs by hub id or local path, pretrained or randomly initialised.

Every model goes through ``from_pretrained(id_or_path)`` (weights or config), so
tiny demo models saved with ``save_pretrained`` and hub models share one path.

Resolution order (fast and honest when offline):

1. A local directory: must hold ``config.json``.
2. A hub id: first tried with ``local_files_only=True`` (the HF cache; no
   network, so cached models never wait on the hub).
3. Not cached: if the hub is in offline mode (``HF_HUB_OFFLINE`` /
   ``TRANSFORMERS_OFFLINE``) or cannot be reached within a short probe
   (:data:`HUB_PROBE_TIMEOUT_S`), :class:`ModelNotFoundError` is raised at once
   instead of waiting through transformers' retries (about 25 s).
4. Otherwise downloaded; unknown repos, revisions and gated repos get a clear
   :class:`ModelNotFoundError`.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import torch
from transformers import AutoConfig, AutoModelForCausalLM, PretrainedConfig, PreTrainedModel
from transformers.utils import is_accelerate_available

from reprflow.errors import ConfigError, ModelNotFoundError
from reprflow.models.init_schemes import InitSpec, apply_init, build_from_config
from reprflow.models.layouts import get_layout

logger = logging.getLogger(__name__)

__all__ = ["HUB_PROBE_TIMEOUT_S", "load_config", "load_model", "model_max_context"]

#: seconds the hub reachability probe waits before declaring the hub unreachable
HUB_PROBE_TIMEOUT_S = 3.0
_TRUE = {"1", "ON", "YES", "TRUE"}


def _offline_mode() -> bool:
    """Offline flags, read at call time (huggingface_hub reads them only at import)."""
    import huggingface_hub

    if huggingface_hub.is_offline_mode():
        return True
    return any(
        os.environ.get(var, "").upper() in _TRUE for var in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")
    )


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


def _offline_message(model_id: str, origin: str) -> str:
    return (
        f"model '{model_id}' ({origin}): not found locally and the Hugging Face hub is "
        f"unreachable (offline). Download it on a machine with access (huggingface-cli download "
        f"{model_id}) and set hf_id to the local path, or set HF_HOME to a cache that holds it."
    )


def _from_hub(loader, model_id: str, *, revision: str | None, origin: str, **kwargs):
    """Call ``loader(model_id, ...)``: cache first, then the hub if reachable."""
    from huggingface_hub.errors import GatedRepoError, RepositoryNotFoundError, RevisionNotFoundError

    try:
        return loader(model_id, revision=revision, local_files_only=True, **kwargs)
    except OSError as exc:
        logger.debug("'%s' not (fully) in the local cache: %s", model_id, exc)
    if not _hub_reachable():
        raise ModelNotFoundError(_offline_message(model_id, origin))
    try:
        return loader(model_id, revision=revision, **kwargs)
    except OSError as exc:
        cause = exc.__cause__
        if isinstance(cause, GatedRepoError):
            raise ModelNotFoundError(
                f"model '{model_id}' ({origin}): gated on the hub; accept its licence and "
                f"log in (huggingface-cli login), or point hf_id at a local copy"
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
                f"point hf_id at the directory written by save_pretrained (or "
                f"huggingface-cli download --local-dir)"
            )
        return path
    if _looks_like_path(model_id_or_path):
        raise ModelNotFoundError(
            f"model '{model_id_or_path}' ({origin}): local path does not exist; fix the path "
            f"or use a hub id such as 'EleutherAI/pythia-2.8b'"
        )
    return None


def load_config(
    model_id_or_path: str, *, revision: str | None = None, origin: str = "model"
) -> PretrainedConfig:
    """Load a model's config (cheap: no weights), from a local dir, the cache or the hub.

    Parameters
    ----------
    model_id_or_path : str
    revision : str, optional
    origin : str
        Where the id came from, quoted in errors (e.g. ``"config.models[0].hf_id"``).

    Raises
    ------
    ModelNotFoundError
    """
    local = _local_dir(model_id_or_path, origin)
    if local is not None:
        return AutoConfig.from_pretrained(local)
    return _from_hub(AutoConfig.from_pretrained, model_id_or_path, revision=revision, origin=origin)


def load_model(
    model_id_or_path: str,
    *,
    init: InitSpec,
    seed: int | None,
    revision: str | None = None,
    dtype: torch.dtype = torch.float32,
    device: str | torch.device = "cpu",
    origin: str = "model",
) -> PreTrainedModel:
    """Load a causal LM, pretrained or randomly initialised, in eval mode.

    Parameters
    ----------
    model_id_or_path : str
        Hub id (``"EleutherAI/gpt-neo-2.7B"``) or a local ``save_pretrained`` directory.
    init : InitSpec
        ``pretrained`` loads trained weights with
        ``AutoModelForCausalLM.from_pretrained``; any other scheme loads only the
        config and builds the model with ``from_config`` directly on ``device``
        and in ``dtype`` (see :mod:`reprflow.models.init_schemes`).
    seed : int or None
        Required for random schemes; ignored (may be None) for ``pretrained``.
    revision : str, optional
        Hub branch, tag or commit; ignored for local directories.
    dtype : torch.dtype
    device : str or torch.device
    origin : str
        Where the id came from, quoted in errors (e.g. ``"config.models[0].hf_id"``).

    Returns
    -------
    PreTrainedModel
        ``*ForCausalLM`` in eval mode, on ``device``.

    Raises
    ------
    ModelNotFoundError
        Not found locally and the hub is unreachable; unknown repo or revision;
        local path without ``config.json``.
    ReprflowError
        The model family has no layout (checked from the config, before any
        weights are read).
    ConfigError
        A random scheme without a seed.
    """
    if init.is_random and seed is None:
        raise ConfigError(f"model '{model_id_or_path}' ({origin}): init '{init.scheme}' needs a seed")
    config = load_config(model_id_or_path, revision=revision, origin=origin)
    layout = get_layout(config)  # fail fast for unsupported families
    device = torch.device(device)
    if init.is_random:
        model = build_from_config(config, seed=seed, dtype=dtype, device=device)
        apply_init(model, init, seed=seed, keep_init=layout.keep_init)
    else:
        local = _local_dir(model_id_or_path, origin)
        kwargs: dict = {"dtype": dtype}
        if device.type != "cpu" and is_accelerate_available():
            kwargs["device_map"] = device  # load straight onto the device
        if local is not None:
            model = AutoModelForCausalLM.from_pretrained(local, **kwargs)
        else:
            model = _from_hub(
                AutoModelForCausalLM.from_pretrained,
                model_id_or_path,
                revision=revision,
                origin=origin,
                **kwargs,
            )
        model = model.to(device)  # no-op when device_map already placed it
    n_params = sum(p.numel() for p in model.parameters())
    logger.info(
        "loaded %s (%s, %d blocks, %.1fM params) init=%s seed=%s dtype=%s device=%s",
        model_id_or_path,
        layout.model_type,
        len(layout.block_list(model)),
        n_params / 1e6,
        init.scheme,
        seed,
        dtype,
        device,
    )
    return model.eval()


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
    layout = get_layout(config)
    if layout.context_attr is None:
        return None
    value = getattr(config, layout.context_attr, None)
    if value is None:
        raise ConfigError(
            f"model_type '{layout.model_type}': config has no '{layout.context_attr}' "
            f"(the layout's context_attr); fix the entry in reprflow/models/layouts.py"
        )
    return int(value)
