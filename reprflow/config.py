"""Load and validate the experiment config (reprflow/data/schema.yaml) into typed settings.

The config is validated once, at the edge: the JSON schema rejects unknown keys, wrong types,
unknown init schemes and tasks, and lengths <= 0 (a family is checked against the checkpoint's
``model_type`` when the model loads); a few cross-field checks follow
(unique names, known tokenizers, tiny models saved to local paths). Every failure raises one
:class:`~reprflow.errors.ConfigError` whose message starts with the offending key, e.g.
``config.inits[1].scheme: 'orthogonal' is not one of ['pretrained', ...]``.

Library code never sees the raw dict: it receives the dataclasses below.
"""

from __future__ import annotations

import copy
import hashlib
import json
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import jsonschema
import yaml

from reprflow.errors import ConfigError
from reprflow.models.init_params import resolve_init_params
from reprflow.models.tiny_families import TINY_TOKENIZERS

PROJECT_ROOT = Path(__file__).resolve().parent.parent
SCHEMA_PATH = Path(__file__).resolve().parent / "data" / "schema.yaml"  # package data: found in an installed copy too
TOKENIZER_DIR = Path(__file__).resolve().parent / "data" / "tokenizers"  # package data
PAPER_TASKS = ("kvpr", "mdqa")
"""The paper's tasks (``config.tasks``); reprflow.prompts builds their prompt sets."""


@dataclass(frozen=True)
class ModelSpec:
    """One model of the study. ``name`` is the path slug; ``hf_id`` goes to ``from_pretrained``."""

    name: str
    family: str
    hf_id: str
    tokenizer: str
    revision: str | None = None
    max_context: int | None = None
    tiny: dict | None = None
    train: dict | None = None

    def fits(self, length: int) -> bool:
        """True if prompts of ``length`` tokens fit the model's context window."""
        return self.max_context is None or length <= self.max_context


@dataclass(frozen=True)
class InitConfig:
    """A named weight initialisation: ``scheme`` with its ``params`` (validated, defaults filled in
    by :func:`reprflow.models.init_params.resolve_init_params`). ``scope`` is ``"all"`` (every cell)
    or ``"fig3"`` (only what Fig. 3 needs: token-level metrics at ``figures.length``)."""

    name: str
    scheme: str
    params: dict = field(default_factory=dict)
    scope: str = "all"


@dataclass(frozen=True)
class Config:
    """The validated experiment config. ``raw`` keeps the dict with defaults filled in."""

    raw: dict
    models: tuple[ModelSpec, ...]
    inits: tuple[InitConfig, ...]

    @property
    def tasks(self) -> list[str]:
        """Every task: the paper's (``tasks``), then the custom ones (``custom_tasks``), in config order."""
        return list(self.raw["tasks"]) + list(self.custom_tasks)

    @property
    def paper_tasks(self) -> list[str]:
        """``config.tasks``: kvpr and/or mdqa (Table 1, the mean-over-tasks figures and the verdicts)."""
        return list(self.raw["tasks"])

    @property
    def custom_tasks(self) -> dict[str, dict]:
        """``config.custom_tasks``: name -> ``{"jsonl": path, "length": int[, "models": [name, ...]]}``
        (your own prompts; docs/custom_tasks.md)."""
        return dict(self.raw.get("custom_tasks") or {})

    @property
    def lengths(self) -> list[int]:
        """``config.lengths``: the lengths of the paper tasks."""
        return list(self.raw["lengths"])

    def task_lengths(self, task: str) -> list[int]:
        """The lengths ``task`` runs at: ``lengths`` for a paper task, ``[length]`` for a custom one."""
        if task in self.custom_tasks:
            return [int(self.custom_tasks[task]["length"])]
        if task in self.raw["tasks"]:
            return self.lengths
        raise ConfigError(f"config.tasks: no task named {task!r} (have {self.tasks})")

    def runs_task(self, model: str, task: str) -> bool:
        """Whether ``model`` runs ``task``: every model runs the paper tasks; a custom task runs on
        its ``models`` (all when null). Context windows are checked apart (:meth:`ModelSpec.fits`)."""
        names = self.custom_tasks[task].get("models") if task in self.custom_tasks else None
        return names is None or model in names

    def paper_only(self) -> Config:
        """This config without its custom tasks: what the paper's Table 1 and findings read."""
        return replace(self, raw={**self.raw, "custom_tasks": {}})

    @property
    def seed(self) -> int:
        return int(self.raw["seed"])

    @property
    def out_dir(self) -> str:
        """The output root (``config.out_dir``), normalised: ``.`` for the paper config."""
        return _norm(self.raw["out_dir"])

    def section(self, name: str) -> dict:
        """A top-level science section (prompts, extraction, metrics, probes, figures, theory):
        the keys that decide stored values, tracked as Snakemake/DVC params."""
        return dict(self.raw.get(name) or {})

    def prompt_settings(self, task: str, length: int) -> dict[str, Any]:
        """What one prompt set is built from: a custom task's ``jsonl`` and ``length`` (not its
        ``models``), else :func:`prompt_set_settings`. The prompts rules' param and part of
        :meth:`extraction_digest`."""
        if task in self.custom_tasks:
            return {k: self.custom_tasks[task][k] for k in ("jsonl", "length")}
        return prompt_set_settings(self.section("prompts"), task, length)

    def prompt_tolerance(self, task: str, length: int) -> float:
        """The length tolerance of the (task, length) prompt set (:func:`prompt_tolerance`)."""
        return prompt_tolerance(self.section("prompts"), task, length)

    def execution(self, name: str) -> dict:
        """``config.execution.<name>`` (extraction, metrics, probes, theory): how that phase
        runs (device, batch size, GPUs, ...). Never a rule param: changing it reruns nothing."""
        return dict(self.raw["execution"].get(name) or {})

    def model(self, name: str) -> ModelSpec:
        for spec in self.models:
            if spec.name == name:
                return spec
        raise ConfigError(f"config.models: no model named {name!r} (have {[m.name for m in self.models]})")

    def init(self, name: str) -> InitConfig:
        for spec in self.inits:
            if spec.name == name:
                return spec
        raise ConfigError(f"config.inits: no init named {name!r} (have {[i.name for i in self.inits]})")

    def science(self) -> dict:
        """The validated config without what cannot change a result: ``execution`` and
        ``out_dir`` left out, ``models`` and ``inits`` in name order. The report rules track
        it as their param, so a new batch size or a reordered ``models:`` redraws nothing."""
        kept = {k: v for k, v in self.raw.items() if k not in ("execution", "out_dir")}
        for key in ("models", "inits"):
            kept[key] = sorted(kept[key], key=lambda entry: entry["name"])
        kept["models"] = [_science_model(m) for m in kept["models"]]
        return kept

    def science_model(self, name: str) -> dict:
        """Model ``name``'s fields as a rule param: its train block without the execution keys
        (:data:`TRAIN_EXECUTION_KEYS`), so a new thread count retrains and re-extracts nothing."""
        return _science_model(asdict(self.model(name)))

    def digest(self) -> str:
        """sha256 of the canonical JSON of the validated config (provenance in outputs)."""
        return _sha256_json(self.raw)

    def extraction_digest(self, model: str, init: str, task: str, length: int) -> str:
        """sha256 of exactly what one cell's extraction reads: seed, its prompt set's settings
        (:func:`prompt_set_settings`; a custom task's spec), the extraction science settings
        (``config.extraction``; ``config.execution`` is left out), the model entry (less its
        train block's execution keys) and the init entry. Used as a rule param and stored in the
        store's attrs, so a change to e.g. the probe settings, the batch size, the order of
        ``models:`` or another prompt set's tolerance does not rerun this extraction."""
        prompts = self.prompt_settings(task, length)
        return _sha256_json(
            {
                "seed": self.raw["seed"],
                "prompts": {"task": task, "length": length, **prompts},
                "extraction": self.raw["extraction"],
                "model": _science_model(next(m for m in self.raw["models"] if m["name"] == model)),
                # `scope` is kept: a fig3 store holds only the n_token_prompts token prompts
                "init": next(i for i in self.raw["inits"] if i["name"] == init),
            }
        )


TRAIN_EXECUTION_KEYS = ("device", "threads", "checkpoint_every")
"""Keys of ``models[].train`` that change how training runs, never the weights it saves
(reprflow.training.recipe.TrainSpec.EXECUTION_KEYS): no rule's param."""


def prompt_set_settings(prompts: Mapping[str, Any], task: str, length: int) -> dict[str, Any]:
    """The ``config.prompts`` settings one paper prompt set (task, length) is built from.

    ``n_prompts``, its tolerance (:func:`prompt_tolerance`, an override resolved) and, for MDQA,
    the oracle file and the distractor folder. The prompts rule's param and part of each
    extraction's digest: a change that matters to one set (its tolerance override, MDQA's
    oracle) rebuilds that set and reruns its extractions only. Idempotent (the result, passed
    again, gives itself)."""
    settings: dict[str, Any] = {
        "n_prompts": prompts["n_prompts"],
        "tolerance": prompt_tolerance(prompts, task, length),
    }
    if task == "mdqa":
        settings["mdqa_oracle"] = prompts.get("mdqa_oracle")
        settings["mdqa_distractor_dir"] = prompts.get("mdqa_distractor_dir")
    return settings


def prompt_tolerance(prompts: Mapping[str, Any], task: str, length: int) -> float:
    """Allowed relative error of a prompt set's median length: the ``config.prompts`` section's
    ``tolerance_overrides`` entry for (task, length), else its ``tolerance`` (default 0.05)."""
    for entry in prompts.get("tolerance_overrides") or []:
        if entry["task"] == task and entry["length"] == length:
            return float(entry["tolerance"])
    return float(prompts.get("tolerance", 0.05))


def _science_model(entry: dict) -> dict:
    """A ``models[]`` entry as far as it decides stored values: without its train block's
    :data:`TRAIN_EXECUTION_KEYS`."""
    if not entry.get("train"):
        return entry
    return {**entry, "train": {k: v for k, v in entry["train"].items() if k not in TRAIN_EXECUTION_KEYS}}


MOVED_TO_EXECUTION = {
    "extraction": ("batch_size", "batch_tokens", "device", "gpus", "shards"),
    "metrics": ("device", "max_tokens_in_memory"),
    "probes": ("device", "max_batch_gib"),
    "theory": ("device", "threads", "gpus"),
}
"""Keys that moved from a science section to ``config.execution.<section>``."""


def _norm(path: str) -> str:
    return os.path.normpath(path)


def _check_moved_keys(cfg: dict) -> None:
    """Name the new home of an execution key still written in its old science section."""
    for section, keys in MOVED_TO_EXECUTION.items():
        node = cfg.get(section)
        if not isinstance(node, dict):
            continue
        for key in keys:
            if key in node:
                raise ConfigError(
                    f"config.{section}.{key}: moved to config.execution.{section}.{key} (execution keys "
                    "change how a run executes, not what it stores, and are not tracked as params); "
                    f"write it as `execution: {{{section}: {{{key}: {node[key]!r}}}}}`"
                )


def _sha256_json(obj) -> str:
    text = json.dumps(obj, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()


def _load_schema() -> dict:
    with open(SCHEMA_PATH) as fh:
        return yaml.safe_load(fh)


def _key_path(path) -> str:
    out = "config"
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else f".{part}"
    return out


def _describe(error: jsonschema.ValidationError) -> str:
    """One line naming the key, what was got and what was expected."""
    where = _key_path(error.absolute_path)
    if error.validator == "additionalProperties":
        allowed = sorted(error.schema.get("properties", {}))
        extra = sorted(set(error.instance) - set(allowed))
        return f"{where}: unknown key {extra[0]!r} (allowed keys: {', '.join(allowed)})"
    if error.validator == "required":
        return f"{where}: {error.message}"
    if error.validator == "type":
        return f"{where}: expected {error.validator_value}, got {error.instance!r}"
    if error.validator == "enum":
        return f"{where}: {error.instance!r} is not one of {error.validator_value}"
    if error.validator in ("minimum", "exclusiveMinimum", "maximum", "exclusiveMaximum"):
        op = {"minimum": ">=", "exclusiveMinimum": ">", "maximum": "<=", "exclusiveMaximum": "<"}
        return f"{where}: must be {op[error.validator]} {error.validator_value}, got {error.instance!r}"
    return f"{where}: {error.message}"


def _fill_defaults(schema: dict, instance: Any) -> None:
    """Fill schema defaults into ``instance`` in place (objects and arrays of objects)."""
    if isinstance(instance, dict):
        for key, sub in schema.get("properties", {}).items():
            if key not in instance and "default" in sub:
                instance[key] = copy.deepcopy(sub["default"])
            if key in instance:
                _fill_defaults(sub, instance[key])
    elif isinstance(instance, list) and isinstance(schema.get("items"), dict):
        for item in instance:
            _fill_defaults(schema["items"], item)


def _check_tiny(i: int, model: dict) -> None:
    """A ``tiny`` entry builds only the families of :data:`TINY_TOKENIZERS`, each sized for its own
    tokenizer: refuse anything else now, not in the build or extraction job."""
    family, tokenizer = model["family"], model["tokenizer"]
    if family not in TINY_TOKENIZERS:
        raise ConfigError(
            f"config.models[{i}].family: {family!r} has no tiny model (`tiny` builds "
            f"{', '.join(sorted(TINY_TOKENIZERS))}); for another family save a small model with "
            "save_pretrained, set hf_id to its folder and drop `tiny` (docs/models.md, 'Your own model')"
        )
    own = TINY_TOKENIZERS[family]
    if tokenizer != own and "vocab_size" not in ((model["tiny"] or {}).get("overrides") or {}):
        raise ConfigError(
            f"config.models[{i}].tokenizer: {tokenizer!r}, but a tiny {family} model has the vocabulary of "
            f"{own!r}; set `tokenizer: {own}`, or `tiny: {{overrides: {{vocab_size: N}}}}` with N the size "
            f"of {tokenizer!r}"
        )


def shipped_tokenizers(root: Path = TOKENIZER_DIR) -> list[str]:
    """Names of the tokenizers shipped under ``root`` (folders holding a tokenizer.json), sorted."""
    return sorted(p.name for p in root.iterdir() if (p / "tokenizer.json").is_file()) if root.is_dir() else []


def _check_cross_fields(cfg: dict) -> None:
    for key in ("models", "inits"):
        names = [entry["name"] for entry in cfg[key]]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ConfigError(f"config.{key}: duplicate name {dupes[0]!r}; names must be unique")
    available = shipped_tokenizers()
    for i, model in enumerate(cfg["models"]):
        if available and model["tokenizer"] not in available:
            raise ConfigError(
                f"config.models[{i}].tokenizer: {model['tokenizer']!r} is not in reprflow/data/tokenizers "
                f"(available: {', '.join(available)})"
            )
        expected = _norm(os.path.join(cfg["out_dir"], "data", "models", model["name"]))
        if model.get("tiny") is not None and _norm(model["hf_id"]) != expected:
            raise ConfigError(
                f"config.models[{i}].hf_id: {model['hf_id']!r}; a `tiny` model is built under "
                f"config.out_dir ({cfg['out_dir']!r}), so hf_id must be {expected!r}"
            )
        if model.get("tiny") is not None:
            _check_tiny(i, model)
    for i, model in enumerate(cfg["models"]):  # trained models (reprflow/training), like tiny ones
        if model.get("train") is None:
            continue
        if model.get("tiny") is not None:
            raise ConfigError(f"config.models[{i}]: has both `tiny` and `train`; keep one (train builds its own model)")
        expected = _norm(os.path.join(cfg["out_dir"], "data", "models", model["name"]))
        if _norm(model["hf_id"]) != expected:
            raise ConfigError(
                f"config.models[{i}].hf_id: {model['hf_id']!r}; a `train` model is saved under "
                f"config.out_dir ({cfg['out_dir']!r}), so hf_id must be {expected!r}"
            )
        if model["family"] not in ("gpt_neo", "gpt_neox", "mamba", "mamba2"):
            raise ConfigError(
                f"config.models[{i}].family: {model['family']!r} cannot be trained; use gpt_neo, "
                "gpt_neox, mamba or mamba2"
            )
        if model["family"] == "gpt_neo" and model["train"]["depth"] % 2:
            raise ConfigError(
                f"config.models[{i}].train.depth: {model['train']['depth']} must be even for gpt_neo "
                "(global and local attention alternate)"
            )
    for i, init in enumerate(cfg["inits"]):  # every init parameter, before any job is queued
        init["params"] = resolve_init_params(init["scheme"], init.get("params"), where=f"config.inits[{i}]")
    names = {m["name"] for m in cfg["models"]}
    for j, pair in enumerate(cfg.get("findings", {}).get("f3_4_3", {}).get("size_pairs", [])):
        for side in ("small", "large"):
            if pair[side] not in names:
                raise ConfigError(
                    f"config.findings.f3_4_3.size_pairs[{j}].{side}: {pair[side]!r} is not a model "
                    f"name; use one of {sorted(names)}"
                )
    for name, task in cfg.get("custom_tasks", {}).items():
        if name in PAPER_TASKS or not re.fullmatch(r"[a-z][a-z0-9_-]*", name):
            raise ConfigError(
                f"config.custom_tasks.{name}: a custom task needs a lowercase name (a-z, 0-9, _ or -, "
                f"starting with a letter) other than {' or '.join(PAPER_TASKS)}; rename it"
            )
        for j, model in enumerate(task.get("models") or []):
            if model not in names:
                raise ConfigError(
                    f"config.custom_tasks.{name}.models[{j}]: {model!r} is not a model name; use one of {sorted(names)}"
                )
    figures = cfg.get("figures", {})
    if "length" in figures and figures["length"] not in cfg["lengths"]:
        raise ConfigError(f"config.figures.length: {figures['length']} is not one of config.lengths {cfg['lengths']}")


def validate_config(raw: dict) -> Config:
    """Validate a config dict (a deep copy is taken) and return typed settings.

    Raises
    ------
    ConfigError
        On the first problem, with a message that starts with the offending key.
    """
    if not isinstance(raw, dict):
        raise ConfigError(f"config: expected a mapping at the top level, got {type(raw).__name__}")
    cfg = copy.deepcopy(raw)
    _check_moved_keys(cfg)
    schema = _load_schema()
    validator = jsonschema.Draft202012Validator(schema)
    errors = sorted(validator.iter_errors(cfg), key=lambda e: (len(e.absolute_path), list(map(str, e.absolute_path))))
    if errors:
        raise ConfigError(_describe(errors[0]))
    _fill_defaults(schema, cfg)
    cfg.setdefault("figures", {}).setdefault("length", cfg["lengths"][0])
    _check_cross_fields(cfg)
    models = tuple(ModelSpec(**m) for m in cfg["models"])
    inits = tuple(InitConfig(**i) for i in cfg["inits"])
    return Config(raw=cfg, models=models, inits=inits)


def _read_yaml(path: Path) -> Any:
    if not path.is_file():
        raise ConfigError(f"{path}: config file not found")
    try:
        with open(path) as fh:
            return yaml.safe_load(fh)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML ({exc})") from None


def load_config(path: str | Path) -> Config:
    """Read a YAML config file and validate it (see :func:`validate_config`)."""
    return validate_config(_read_yaml(Path(path)))


def merge_config(base: dict, override: Mapping) -> dict:
    """``override`` merged into a copy of ``base`` as Snakemake's ``--configfile a b`` does.

    Mappings merge key by key (recursively); any other value, lists included, is replaced whole.
    """
    out = dict(base)
    for key, value in override.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = merge_config(dict(out[key]), value)
        else:
            out[key] = value
    return out


def load_configs(paths: Sequence[str | Path]) -> Config:
    """Read several YAML config files, merge them in order (:func:`merge_config`) and validate."""
    raw: dict = {}
    for path in paths:
        part = _read_yaml(Path(path))
        if part is None:
            continue
        if not isinstance(part, Mapping):
            raise ConfigError(f"{path}: the top level must be a mapping of config keys")
        raw = merge_config(raw, part)
    return validate_config(raw)
