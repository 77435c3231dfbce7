"""dvc.yaml, generated: each DVC stage's code deps are the files the stage's jobs import.

A DVC stage runs Snakemake on one phase's target, so its jobs run the phase's
``workflow_scripts/*.py``, which import parts of ``reprflow``. :func:`stage_code` follows
those imports statically (every ``import`` / ``from ... import`` of the package, at any
depth, package ``__init__`` files included) and adds the workflow wiring every stage
parses (Snakefile, rules/common.smk, the stage's own rule files, reprflow/data/schema.yaml), and
the data shipped inside the imported packages (e.g. ``reprflow/models/configs/``).
Modules that plan a run (in the Snakemake parent process; an extraction job reads its GPU
priority from them too) and cannot change an output (:data:`PLANNING_ONLY`: the disk preflight,
the context-window check and job priorities, the GPU-slot default) are left out, as
config.execution is left out of the params, so editing them reruns nothing; so are the modules
that only log (:data:`LOGGING_ONLY`: the SSM-kernel fallback notice).

dvc.yaml is written by this module, so its deps never drift from the imports; a test
fails when the file differs from what :func:`render` gives for the config it names::

    python -m reprflow.workflow.lineage --write                          # the demo (default)
    python -m reprflow.workflow.lineage --configfile config/config.yaml --write   # the paper

With ``extraction.tokens: stream`` the extraction jobs write the token-metric files too
(rules/activations.smk), so the activations stage also tracks ``metrics`` as a param; those
files stay declared by the metrics stage (``results/metrics``: DVC outputs may not overlap),
whose Snakemake run then finds them up to date.

The config fixes ``CONFIG`` and ``OUT`` (its ``out_dir``) and the per-cell metric files
DVC reports (``dvc metrics show``: probe accuracies, Sm and St); ``dvc plots show``
renders the figures.
"""

from __future__ import annotations

import argparse
import ast
import functools
import hashlib
import sys
from dataclasses import dataclass, replace
from pathlib import Path, PurePosixPath

import yaml

from reprflow.config import PROJECT_ROOT, TOKENIZER_DIR, Config, load_config
from reprflow.workflow import targets
from reprflow.workflow.code_facts import code_facts
from reprflow.workflow.targets import PROBES, TOKEN_METRICS, cells, table_cells

__all__ = [
    "LOGGING_ONLY",
    "PLANNING_ONLY",
    "STAGES",
    "Stage",
    "code_digest",
    "module_closure",
    "render",
    "script_code",
    "stage_code",
    "stages",
]

PACKAGE = "reprflow"
WIRING = ("Snakefile", "rules/common.smk", "reprflow/data/schema.yaml")
"""Parsed by every stage's Snakemake run."""
PLANNING_ONLY = (
    "reprflow/workflow/code_facts.py",
    "reprflow/workflow/disk.py",
    "reprflow/workflow/lineage.py",
    "reprflow/workflow/model_json.py",
    "reprflow/workflow/scheduling.py",
)
"""Plan a run (disk preflight, context-window check, code digests, priorities, GPU slots); no
stored value depends on them."""
LOGGING_ONLY = ("reprflow/kernels/fallback_notice.py",)
"""Only log (transformers' SSM-kernel fallback warnings become one line per process; its hook
reads which mixer runs and changes nothing); no stored value depends on them."""
TASK_CODE = {
    "kvpr": ("reprflow/prompts/kvpr.py",),
    "mdqa": ("reprflow/prompts/mdqa.py", "reprflow/prompts/distractors.py"),
}
"""The modules only one paper task's prompt builder runs. reprflow.prompts.build imports both
tasks' builders, so without this an edit of mdqa.py would rebuild every KVPR prompt set and rerun
its extractions: the prompts rule's code leaves out the other tasks' modules (:func:`other_tasks_code`)."""


def other_tasks_code(task: str) -> tuple[str, ...]:
    """:data:`TASK_CODE` of every paper task but ``task``: what a ``task`` prompt job imports, never runs."""
    return tuple(f for t, files in TASK_CODE.items() if t != task for f in files)


STREAMED_METRICS_CODE = ("reprflow/pipeline/token_stream.py", "reprflow/sinks/metrics.py")
"""The modules only a streamed extraction (``extraction.tokens: stream``) runs: the token metrics
computed during the forward passes. An extraction that stores its token states imports them but
never calls them, so with ``tokens: store`` they (and the metric code only they import) are left
out of its code: an edit of e.g. reprflow/metrics/cosine.py reruns the token-metric jobs, not
every GPU extraction."""
DECLARED_DATA = ("reprflow/data",)
"""Package data the import walk leaves out, as each stage declares it: the schema (:data:`WIRING`;
its defaults reach Snakemake in the validated params) and the tokenizers (an input of the rules
that read one, a dep of the DVC stages whose models use it: :func:`stages`)."""
DVC_YAML = "dvc.yaml"


@dataclass(frozen=True)
class Stage:
    """One DVC stage: the Snakemake target it runs, its rule files and job scripts, the
    config keys it tracks as params, its data deps and its outputs (relative to out_dir)."""

    name: str
    target: str
    rules: tuple[str, ...]
    scripts: tuple[str, ...]
    params: tuple[str, ...]
    data: tuple[str, ...]
    outs: tuple[str, ...]
    persist: bool = True
    skip: tuple[str, ...] = ()  # code files its jobs import but never run here (STREAMED_METRICS_CODE)


STAGES = (
    Stage(
        "models",
        "all_models all_trained",
        ("rules/models.smk", "rules/training.smk"),
        ("build_tiny_model.py", "train.py"),
        ("seed", "models"),
        ("@data/lost_in_the_middle",),
        ("data/models",),
    ),
    Stage(
        "prompts",
        "all_prompts",
        ("rules/prompts.smk",),
        ("prompts.py", "custom_prompts.py"),
        ("seed", "models", "tasks", "lengths", "prompts"),
        ("@data/lost_in_the_middle",),
        ("data/prompts",),
    ),
    Stage(
        "activations",
        "all_activations",
        ("rules/activations.smk",),
        ("extract_activations.py",),
        ("seed", "models", "inits", "extraction"),
        ("data/models", "data/prompts"),
        ("results/activations",),
    ),
    Stage(
        "metrics",
        "all_metrics",
        ("rules/metrics.smk", "rules/probes.smk"),
        ("token_metrics.py", "probes.py"),
        ("metrics", "probes"),
        ("results/activations",),
        ("results/metrics",),
    ),
    Stage("theory", "all_theory", ("rules/theory.smk",), ("theory.py",), ("theory",), (), ("results/theory",)),
    Stage(
        "report",
        "all",
        ("rules/report.smk",),
        ("tables.py", "figures.py", "findings.py", "paper_comparison.py", "report.py"),
        ("figures", "findings", "paper_comparison"),
        ("results/metrics", "results/theory"),
        (
            "results/table1.csv",
            "results/table2.csv",
            "results/figures",
            "results/findings.csv",
            "results/paper_comparison.csv",
            "results/provenance.csv",
            "results/html",
            "results/report.md",
        ),
        persist=False,
    ),
)
"""The pipeline's stages in order; ``@path`` marks a project input (not under out_dir)."""


def _module_file(name: str, root: Path) -> Path | None:
    base = root / Path(*name.split("."))
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def _lazy_exports(module: str, root: Path) -> dict[str, str]:
    """A package's lazily imported names: its ``__init__``'s ``_EXPORTS = {name: submodule}``
    literal (read by its PEP 562 ``__getattr__``), e.g. ``reprflow.prompts``."""
    init = root / Path(*module.split(".")) / "__init__.py"
    if not init.is_file():
        return {}
    for node in ast.parse(init.read_text()).body:
        if isinstance(node, ast.Assign) and any(getattr(t, "id", None) == "_EXPORTS" for t in node.targets):
            return {k: v for k, v in ast.literal_eval(node.value).items()}
    return {}


def _submodule(package: str, name: str) -> str:
    """The dotted name of ``name`` in ``package``: ``name`` itself when it is already dotted
    from the top package (``reprflow.models``' ``_EXPORTS`` values)."""
    return name if name.startswith(PACKAGE + ".") else f"{package}.{name}"


def _imports(path: Path, root: Path) -> set[str]:
    """Dotted names of the package modules ``path`` imports (relative imports resolved;
    ``from pkg import name`` of a lazily exported name counts as its submodule)."""
    stat = path.stat()
    imports, _ = _python_file(path, root, stat.st_mtime_ns, stat.st_size)
    if imports is None:
        ast.parse(path.read_text(), filename=str(path))  # raises the file's SyntaxError
    return imports


@functools.lru_cache(maxsize=None)
def _python_file(path: Path, root: Path, mtime_ns: int, size: int) -> tuple[frozenset[str] | None, bytes]:
    """``(package imports, sha256 of its code)`` of one Python file version (every script rule's
    closure and digest walk the same modules): the imports as :func:`_imports` (None if the file
    does not parse), the digest of :func:`~reprflow.workflow.code_facts.python_code`. The parse
    comes from :func:`~reprflow.workflow.code_facts.code_facts` (cached on disk by content); the
    lazily exported names are resolved here, as they depend on other files."""
    facts = code_facts(path.read_bytes(), PurePosixPath(path.relative_to(root).as_posix()))
    if facts.imports is None:
        return None, facts.code
    found: set[str] = set()
    for module, names in facts.imports:
        found.add(module)
        if names is None:  # import module
            continue
        lazy = _lazy_exports(module, root) if module.startswith(PACKAGE) else {}
        # `from pkg import submodule`, or a name `pkg` imports lazily from one (its
        # _EXPORTS value: a submodule's name, or its dotted path as in reprflow.models)
        found.update(_submodule(module, lazy.get(name, name)) for name in names)
    return frozenset(n for n in found if n == PACKAGE or n.startswith(PACKAGE + ".")), facts.code


def _import_statements(text: str) -> str:
    """The top-level package imports of a Snakemake rule file, as Python source."""
    kept, open_paren = [], False
    for line in text.splitlines():
        if open_paren or line.startswith((f"from {PACKAGE}", f"import {PACKAGE}")):
            kept.append(line)
            open_paren = (open_paren or "(" in line) and ")" not in line
    return "\n".join(kept)


def module_closure(start: list[Path], root: Path = PROJECT_ROOT, *, skip: frozenset[Path] = frozenset()) -> set[Path]:
    """Every package file imported, directly or not, by the files in ``start`` (which are
    included), with the ``__init__.py`` of each package on the way; files in ``skip`` are
    neither included nor followed."""
    seen: set[Path] = set()
    todo = list(start)
    while todo:
        path = todo.pop()
        if path in seen or path in skip:
            continue
        seen.add(path)
        for name in _imports(path, root):
            parts = name.split(".")
            for i in range(1, len(parts) + 1):  # importing a.b.c runs a/__init__, a/b/__init__
                found = _module_file(".".join(parts[:i]), root)
                if found is not None and found not in seen:
                    todo.append(found)
    return seen


def stage_code(stage: Stage, root: Path = PROJECT_ROOT) -> list[str]:
    """The code files ``stage`` runs, relative to ``root``, sorted (see the module docstring)."""
    scripts = [root / "workflow_scripts" / s for s in stage.scripts]
    wiring = [root / "rules" / "common.smk", *(root / r for r in stage.rules)]
    smk_imports = []
    for rule_file in wiring:  # rule files import the package too (common.smk: config, targets)
        for node in ast.walk(ast.parse(_import_statements(rule_file.read_text()))):
            if isinstance(node, ast.ImportFrom):
                names = [node.module, *(f"{node.module}.{a.name}" for a in node.names)]
            elif isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            else:
                continue
            smk_imports += [f for f in (_module_file(n, root) for n in names if n.startswith(PACKAGE)) if f is not None]
    rel = _code_files([*scripts, *smk_imports], root, stage.skip)
    return sorted(rel | set(WIRING) | set(stage.rules))


def _code_files(start: list[Path], root: Path, skip: tuple[str, ...] = ()) -> set[str]:
    """``start``, the package modules they import at any depth and the data shipped in those
    packages (:func:`_package_data`), relative to ``root``; the :data:`PLANNING_ONLY` and
    :data:`LOGGING_ONLY` modules, the files in ``skip`` and what only they import are left out."""
    files = module_closure(start, root, skip=frozenset(root / p for p in (*PLANNING_ONLY, *LOGGING_ONLY, *skip)))
    rel = {str(p.relative_to(root)) for p in files}
    return rel | _package_data({p.parent for p in files if p.is_relative_to(root / PACKAGE)}, root)


def script_code(script: str, root: Path = PROJECT_ROOT, *, skip: tuple[str, ...] = ()) -> list[str]:
    """The code a job running ``workflow_scripts/<script>`` executes, relative to ``root``,
    sorted: the script, every package module it imports (at any depth) and their packages' data;
    ``skip``: files (relative to ``root``) it imports but does not run, e.g. :data:`STREAMED_METRICS_CODE`."""
    return sorted(_code_files([root / "workflow_scripts" / script], root, skip))


def code_digest(script: str, root: Path = PROJECT_ROOT, *, skip: tuple[str, ...] = ()) -> str:
    """sha256 over the names and code of :func:`script_code`: a param of every rule that runs
    ``script``. Snakemake itself sees only a script's own mtime, not the modules it imports, so
    without it an edit to e.g. reprflow/metrics/cka.py would rerun nothing (and ``dvc repro``
    would record the new code beside the old outputs). A Python file counts by its syntax tree
    without docstrings (:func:`~reprflow.workflow.code_facts.python_code`): comments, docstrings
    and formatting compute nothing, so editing them reruns no job; every other file counts by its
    bytes."""
    digest = hashlib.sha256()
    for rel in script_code(script, root, skip=skip):
        path = root / rel
        for file in sorted(path.rglob("*")) if path.is_dir() else [path]:
            if file.is_file() and "__pycache__" not in file.parts:
                digest.update(f"{file.relative_to(root).as_posix()}\0".encode())
                digest.update(_file_code_digest(file, root))
    return digest.hexdigest()


def _file_code_digest(file: Path, root: Path) -> bytes:
    """sha256 of one file's code: :func:`~reprflow.workflow.code_facts.python_code` for .py
    (:func:`_python_file`), else its bytes; both cached per version of the file, since the rules'
    scripts share most of their modules and package data."""
    stat = file.stat()
    if file.suffix == ".py":
        return _python_file(file, root, stat.st_mtime_ns, stat.st_size)[1]
    return _bytes_digest(file, stat.st_mtime_ns, stat.st_size)


@functools.lru_cache(maxsize=None)
def _bytes_digest(file: Path, mtime_ns: int, size: int) -> bytes:
    """sha256 of one file version's bytes (the packages' data: tokenizers, prompt templates)."""
    return hashlib.sha256(file.read_bytes()).digest()


def _package_data(packages: set[Path], root: Path) -> set[str]:
    """Data shipped inside the packages a stage imports (e.g. reprflow/models/configs/*.json,
    read by the model loader): every non-Python file of those package folders, and the
    folders inside them that are not packages themselves, as one dep each."""
    found = set()
    for package in packages:
        for entry in package.iterdir():
            if entry.name == "__pycache__" or entry.suffix in (".py", ".pyc"):
                continue
            if entry.is_file() or (entry.is_dir() and not (entry / "__init__.py").exists()):
                found.add(str(entry.relative_to(root)))
    return found - set(DECLARED_DATA)


def stages(config: Config) -> tuple[Stage, ...]:
    """:data:`STAGES` for ``config``: with ``extraction.tokens: stream`` the activations stage
    computes the token metrics, so ``metrics`` is one of its params; with ``custom_tasks`` the
    prompts stage tracks that key and reads each task's JSONL file (a project input); with models
    trained by the workflow (``train:``) the models stage also outputs ``results/training`` (the
    training curves and summaries; the weights are under ``data/models``) and reads their
    tokenizers; the prompts stage reads the tokenizer of every model. Without a model the workflow
    builds (``tiny:`` or ``train:``; the paper config) there is no models stage, and the
    activations stage reads no ``data/models`` (``dvc repro`` failed on that missing output).
    With ``tokens: store`` the activations stage's code leaves out :data:`STREAMED_METRICS_CODE`."""
    found = STAGES
    if not any(m.tiny is not None or m.train is not None for m in config.models):
        found = tuple(
            replace(s, data=tuple(d for d in s.data if d != "data/models")) for s in found if s.name != "models"
        )
    trained = [m for m in config.models if m.train is not None]
    if trained:
        found = _extend(found, "models", outs=("results/training",), data=_tokenizers(trained))
    found = _extend(found, "prompts", data=_tokenizers(config.models))
    if config.section("extraction").get("tokens", "store") == "stream":
        found = _extend(found, "activations", params=("metrics",))
    else:
        found = tuple(replace(s, skip=STREAMED_METRICS_CODE) if s.name == "activations" else s for s in found)
    if config.custom_tasks:
        files = tuple(f"@{t['jsonl']}" for t in config.custom_tasks.values())
        found = _extend(found, "prompts", params=("custom_tasks",), data=files)
    return found


def _tokenizers(models) -> tuple[str, ...]:
    """The tokenizer folders ``models`` read (package data, so ``@``: not under out_dir)."""
    return tuple(
        f"@{TOKENIZER_DIR.relative_to(PROJECT_ROOT).as_posix()}/{t}" for t in sorted({m.tokenizer for m in models})
    )


def _extend(found: tuple[Stage, ...], name: str, params=(), data=(), outs=()) -> tuple[Stage, ...]:
    """``found`` with stage ``name`` given more params, data deps and outputs."""
    return tuple(
        replace(s, params=(*s.params, *params), data=(*s.data, *data), outs=(*s.outs, *outs)) if s.name == name else s
        for s in found
    )


def _under(out_dir: str, path: str) -> str:
    if path.startswith("@"):
        return path[1:]
    return path if out_dir == "." else f"${{OUT}}/{path}"


def _written_keys(config_file: Path) -> set[str]:
    """Top-level keys the config file itself writes. DVC reads params from the file, so a
    section left to the schema's defaults (absent from the file) cannot be one; its values
    are then tracked through the schema, a dep of every stage (:data:`WIRING`)."""
    raw = yaml.safe_load(config_file.read_text()) if config_file.is_file() else None
    return set(raw) if isinstance(raw, dict) else set()


def render(config_path: str, config: Config, root: Path = PROJECT_ROOT) -> str:
    """The text of dvc.yaml for the config at ``config_path`` (relative to the project)."""
    out = config.out_dir
    lines = [
        "# GENERATED by `python -m reprflow.workflow.lineage --write` (reprflow/workflow/lineage.py):",
        "# do not edit by hand. Each stage runs Snakemake on one phase's target, so no rule logic is",
        "# written twice; its deps are the code files that phase's jobs import, its params the config",
        "# keys that change its outputs (config.execution is never one), and persist: true keeps the",
        "# outputs in place so Snakemake stays incremental. dvc.lock records the hashes.",
        "#",
        "# CONFIG names the one experiment config (the demo by default). For the paper run:",
        "#   python -m reprflow.workflow.lineage --configfile config/config.yaml --write",
        "vars:",
        f"  - CONFIG: {config_path}",
        f"  - OUT: {out}",
        "  - SMK: snakemake --cores all --configfile=",
        "",
        "stages:",
    ]
    written = _written_keys(root / config_path)
    for stage in stages(config):
        lines += [f"  {stage.name}:", f"    cmd: ${{SMK}}${{CONFIG}} {stage.target}", "    deps:"]
        lines += [f"      - {_under(out, d)}" for d in stage.data]
        lines += [f"      - {f}" for f in stage_code(stage, root)]
        params = [p for p in stage.params if p in written]
        if params:
            lines += ["    params:", "      - ${CONFIG}:", *(f"          - {p}" for p in params)]
        lines += ["    outs:"]
        for o in stage.outs:
            lines += [f"      - {_under(out, o)}" + (":" if stage.persist else "")]
            if stage.persist:
                lines += ["          persist: true"]
    # top-level sections: literal paths (DVC interpolates vars in stages only)
    lines += [
        "",
        "# dvc metrics show: per-cell probe summaries (last/peak accuracy), Sm/St and each trained",
        "# model's training summary (final validation loss, unigram baseline, tokens/s).",
        "metrics:",
    ]
    for cell in table_cells(config):
        lines.append(f"  - {targets.out(config, cell.fmt(PROBES).replace('.csv', '.json'))}")
    for cell in cells(config):
        lines.append(f"  - {targets.out(config, cell.fmt(TOKEN_METRICS) + '/smoothness_stability.json')}")
    trained = [m.name for m in config.models if m.train is not None]
    lines += [f"  - {targets.out(config, f'results/training/{m}/summary.json')}" for m in trained]
    lines += [
        "",
        "# dvc plots show: the paper's figures, the theory check and the training curves.",
        "plots:",
        f"  - {targets.out(config, 'results/figures')}",
        f"  - {targets.out(config, 'results/theory/theory.png')}",
    ]
    for m in trained:  # step, tokens, train_loss, val_loss, ... (docs/training.md)
        lines += [
            f"  - {targets.out(config, f'results/training/{m}/metrics.csv')}:",
            "      x: tokens",
            "      y: [train_loss, val_loss]",
        ]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Write or check dvc.yaml (see reprflow/workflow/lineage.py).")
    parser.add_argument("--configfile", default="config/demo.yaml", help="the config dvc.yaml runs (relative path)")
    parser.add_argument("--write", action="store_true", help="write dvc.yaml (default: check it)")
    args = parser.parse_args(argv)
    text = render(args.configfile, load_config(PROJECT_ROOT / args.configfile))
    target = PROJECT_ROOT / DVC_YAML
    if args.write:
        target.write_text(text)
        print(f"wrote {target}")
        return 0
    if target.read_text() != text:
        print(
            f"{target} is stale: run python -m reprflow.workflow.lineage --configfile {args.configfile} --write",
            file=sys.stderr,
        )
        return 1
    print(f"{target} is up to date")
    return 0


if __name__ == "__main__":
    sys.exit(main())
