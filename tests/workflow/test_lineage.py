"""dvc.yaml is generated from the imports of each stage's jobs (reprflow/workflow/lineage.py)."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from reprflow.config import PROJECT_ROOT, load_config
from reprflow.workflow.lineage import STAGES, render, stage_code

DVC = yaml.safe_load((PROJECT_ROOT / "dvc.yaml").read_text())


def test_dvc_yaml_is_what_the_generator_writes_for_its_config():
    config = DVC["vars"][0]["CONFIG"]
    assert DVC["vars"][1]["OUT"] == load_config(PROJECT_ROOT / config).out_dir
    expected = render(config, load_config(PROJECT_ROOT / config))
    assert (PROJECT_ROOT / "dvc.yaml").read_text() == expected, (
        "dvc.yaml is stale: python -m reprflow.workflow.lineage --write"
    )


def test_no_stage_tracks_an_execution_key():
    for stage in DVC["stages"].values():
        (keys,) = [list(p.values())[0] for p in stage["params"]]
        assert "execution" not in keys and "out_dir" not in keys, keys


_IMPORTED = """
import ast, json, sys
for script in sys.argv[1:]:
    tree = ast.parse(open(script).read())
    exec(compile(ast.Module([n for n in tree.body if isinstance(n, (ast.Import, ast.ImportFrom))], []), script, "exec"))
print(json.dumps(sorted(m.__file__ for m in list(sys.modules.values())
                        if m.__name__.split(".")[0] == "reprflow" and getattr(m, "__file__", None))))
"""


@pytest.mark.parametrize("stage", [s for s in STAGES if s.name in ("activations", "metrics")], ids=lambda s: s.name)
def test_every_module_a_stage_imports_at_run_time_is_a_dep(stage):
    """Independent of the static walk: import what the stage's scripts import, in a fresh
    interpreter, and check every reprflow file that got loaded is among the stage's deps."""
    scripts = [str(PROJECT_ROOT / "workflow_scripts" / s) for s in stage.scripts]
    run = subprocess.run(
        [sys.executable, "-c", _IMPORTED, *scripts], capture_output=True, text=True, cwd=PROJECT_ROOT, timeout=300
    )
    assert run.returncode == 0, run.stderr[-3000:]
    loaded = {str(Path(f).resolve().relative_to(PROJECT_ROOT)) for f in json.loads(run.stdout)}
    deps = set(DVC["stages"][stage.name]["deps"])
    from reprflow.workflow.lineage import LOGGING_ONLY

    extra = loaded - deps - set(LOGGING_ONLY)  # loaded by `import reprflow`; they only log
    if stage.name == "activations" and "reprflow/sinks/metrics.py" not in deps:
        # the demo stores token states: the streamed metrics' code is imported, never run
        from reprflow.workflow.lineage import STREAMED_METRICS_CODE, module_closure

        streamed = module_closure([PROJECT_ROOT / f for f in STREAMED_METRICS_CODE], PROJECT_ROOT)
        extra -= {str(p.relative_to(PROJECT_ROOT)) for p in streamed}
    assert loaded and not extra, sorted(extra)


def test_the_static_walk_follows_relative_and_submodule_imports():
    code = stage_code(next(s for s in STAGES if s.name == "metrics"))
    assert {
        "reprflow/metrics/cka.py",
        "reprflow/metrics/__init__.py",
        "reprflow/store.py",
        "rules/metrics.smk",
        "rules/probes.smk",
        "workflow_scripts/probes.py",
        "reprflow/data/schema.yaml",
    } <= set(code)
    assert "reprflow/workflow/disk.py" not in code and "rules/activations.smk" not in code
    report = stage_code(next(s for s in STAGES if s.name == "report"))
    assert "reprflow/pipeline/tables.py" in report and "reprflow/metrics/cka.py" not in report


def test_data_shipped_in_an_imported_package_is_a_dep(tmp_path):
    """e.g. the model configs the loader reads (reprflow/models/configs/*.json)."""
    import shutil

    for folder in ("reprflow", "rules", "workflow_scripts"):
        shutil.copytree(PROJECT_ROOT / folder, tmp_path / folder, ignore=shutil.ignore_patterns("__pycache__"))
    (tmp_path / "reprflow/models/configs").mkdir(exist_ok=True)
    (tmp_path / "reprflow/models/configs/org__model.json").write_text("{}")
    by_stage = {s.name: "reprflow/models/configs" in stage_code(s, tmp_path) for s in STAGES}
    # every stage parses rules/common.smk, which imports reprflow.config, which validates init
    # params with reprflow.models.init_params: so the reprflow/models package (and its data) is
    # in every stage's closure
    assert by_stage == dict.fromkeys(("models", "prompts", "activations", "metrics", "theory", "report"), True)
    assert "reprflow/models/init_params.py" in stage_code(STAGES[1], tmp_path)
    (tmp_path / "reprflow/metrics/notes").mkdir()  # a data folder of a package only some stages import
    by_stage = {s.name: "reprflow/metrics/notes" in stage_code(s, tmp_path) for s in STAGES}
    assert by_stage["metrics"] and not by_stage["prompts"], by_stage


def test_trained_models_are_versioned_with_their_training_outputs():
    """The models stage outputs the trained weights (data/models) and, when the config trains
    models, their curves and summaries (results/training); summaries are DVC metrics, curves plots."""
    import copy

    from reprflow.config import validate_config

    config = load_config(PROJECT_ROOT / "config" / "demo.yaml")
    trained = [m.name for m in config.models if m.train is not None]
    assert len(trained) == 4
    outs = [next(iter(o)) if isinstance(o, dict) else o for o in DVC["stages"]["models"]["outs"]]
    assert outs == ["${OUT}/data/models", "${OUT}/results/training"]
    assert {f"runs/demo/results/training/{m}/summary.json" for m in trained} <= set(DVC["metrics"])
    curves = {next(iter(p)): p[next(iter(p))] for p in DVC["plots"] if isinstance(p, dict)}
    for m in trained:
        assert curves[f"runs/demo/results/training/{m}/metrics.csv"] == {"x": "tokens", "y": ["train_loss", "val_loss"]}
    raw = yaml.safe_load((PROJECT_ROOT / "config" / "demo.yaml").read_text())
    built = copy.deepcopy(raw)  # tiny models only: no training outputs to version
    for m in built["models"]:
        m.pop("train")
        m.update(tokenizer="gpt2" if m["family"] == "gpt_neo" else "gpt-neox-20b", tiny={"seed": 1})
    text = yaml.safe_load(render("config/demo.yaml", validate_config(built)))
    assert [next(iter(o)) for o in text["stages"]["models"]["outs"]] == ["${OUT}/data/models"]
    assert not any("results/training" in str(p) for p in [*text["metrics"], *text["plots"]])


def test_a_config_that_builds_no_model_has_no_models_stage():
    """The paper config loads every model (hub ids, shipped configs): `dvc repro` failed at a models
    stage whose output data/models nothing creates. No such stage, and no such dep of activations."""
    text = yaml.safe_load(render("config/config.yaml", load_config(PROJECT_ROOT / "config" / "config.yaml")))
    assert "models" not in text["stages"] and list(text["stages"])[0] == "prompts"
    assert not any(str(d).endswith("data/models") for d in text["stages"]["activations"]["deps"])


def _copy_code(dest):
    import shutil

    for folder in ("reprflow", "rules", "workflow_scripts"):
        shutil.copytree(PROJECT_ROOT / folder, dest / folder, ignore=shutil.ignore_patterns("__pycache__"))
    return dest


def test_a_rules_code_digest_changes_with_a_module_its_script_imports_and_nothing_else(tmp_path):
    """Snakemake sees a script's own mtime only: the `code` param (code_digest) is what reruns a
    job when a module it imports two levels down changes, and only the jobs that import it."""
    from reprflow.workflow.lineage import code_digest

    root = _copy_code(tmp_path)
    scripts = ("token_metrics.py", "theory.py", "prompts.py")
    before = {s: code_digest(s, root) for s in scripts}
    cka = root / "reprflow/metrics/cka.py"
    source = cka.read_text()
    # comments, docstrings and formatting compute nothing: no rerun
    cka.write_text('"""Reworded."""\n' + source.split('"""', 2)[2].replace("\n\n\n", "\n\n\n# a note\n", 1))
    assert {s: code_digest(s, root) for s in scripts} == before
    cka.write_text(source + "_EDIT = 1\n")
    after = {s: code_digest(s, root) for s in scripts}
    assert [s for s in scripts if before[s] != after[s]] == ["token_metrics.py"]
    # a tokenizer is an input of the rules that read it, not code of every job
    tokenizer = next((root / "reprflow/data/tokenizers").glob("*/tokenizer.json"))
    tokenizer.write_text(tokenizer.read_text() + " ")
    assert {s: code_digest(s, root) for s in scripts} == after


def test_a_metric_edit_reruns_the_jobs_that_compute_metrics_only(tmp_path):
    """An edit of a metric (reprflow/metrics/cosine.py) reruns the token-metric jobs and, when they
    stream the metrics (tokens: stream), the extractions; not an extraction that stores token
    states, and not the probes (which need one array helper of reprflow.metrics, imported lazily)."""
    from reprflow.workflow.lineage import STREAMED_METRICS_CODE, code_digest, script_code

    root = _copy_code(tmp_path)
    assert not any(f.startswith("reprflow/metrics/c") for f in script_code("probes.py", root))

    def digests():
        return {
            "token_metrics": code_digest("token_metrics.py", root),
            "probes": code_digest("probes.py", root),
            "extract (stream)": code_digest("extract_activations.py", root),
            "extract (store)": code_digest("extract_activations.py", root, skip=STREAMED_METRICS_CODE),
        }

    before = digests()
    cosine = root / "reprflow/metrics/cosine.py"
    cosine.write_text(cosine.read_text() + "_EDIT = 1\n")
    after = digests()
    assert {k for k in before if before[k] != after[k]} == {"token_metrics", "extract (stream)"}
    # what a stored extraction does run still counts: the store writer
    store = root / "reprflow/store.py"
    store.write_text(store.read_text() + "_EDIT = 1\n")
    assert digests()["extract (store)"] != after["extract (store)"]


def test_a_task_builder_edit_rebuilds_that_tasks_prompt_sets_only(tmp_path):
    """reprflow.prompts.build imports both tasks' builders: an edit of the MDQA builder changes the
    MDQA prompt jobs' code (and so reruns their extractions), not KVPR's; a shared module both."""
    from reprflow.workflow.lineage import code_digest, other_tasks_code

    root = _copy_code(tmp_path)

    def digests():
        return {t: code_digest("prompts.py", root, skip=other_tasks_code(t)) for t in ("kvpr", "mdqa")}

    before = digests()
    assert before["kvpr"] != before["mdqa"]
    for module, changed in (("mdqa.py", {"mdqa"}), ("kvpr.py", {"kvpr"}), ("sampling.py", {"kvpr", "mdqa"})):
        path = root / "reprflow/prompts" / module
        path.write_text(path.read_text() + "_EDIT = 1\n")
        after = digests()
        assert {t for t in after if after[t] != before[t]} == changed, module
        before = after


def test_editing_a_planning_or_logging_module_reruns_no_job(tmp_path):
    """The disk preflight, the context-window check and the GPU-slot default plan a run and store
    nothing, and the SSM-kernel fallback notice only logs: an edit to them, or to what only they
    import (the training recipe, for the disk estimate of models still to train), changes no rule's
    `code` param and no DVC stage but the one that trains."""
    from reprflow.workflow.lineage import LOGGING_ONLY, PLANNING_ONLY, code_digest, script_code

    root = _copy_code(tmp_path)
    scripts = ("extract_activations.py", "tables.py", "figures.py", "prompts.py", "probes.py")
    for script in scripts:
        code = set(script_code(script, root))
        assert not code & {*PLANNING_ONLY, *LOGGING_ONLY}, script
        assert "reprflow/training/recipe.py" not in code, script
    before = {s: code_digest(s, root) for s in scripts}
    for rel in (*PLANNING_ONLY, *LOGGING_ONLY):
        path = root / rel
        path.write_text(path.read_text() + "_EDIT = 1\n")
    assert {s: code_digest(s, root) for s in scripts} == before
    assert "reprflow/training/recipe.py" in script_code("train.py", root)


def _rule_blocks():
    """(rule file, rule block text) of every rule and `use rule` in rules/."""
    import re

    for path in sorted((PROJECT_ROOT / "rules").glob("*.smk")):
        for block in re.split(r"(?m)^(?=\s*(?:rule|use rule) )", path.read_text())[1:]:
            yield path.name, block


def test_every_script_rule_tracks_the_code_its_script_imports():
    import re

    activations = (PROJECT_ROOT / "rules/activations.smk").read_text()
    assert 'code=code_digest("extract_activations.py", skip=' in activations.split("rule extract_activations")[0]
    for name, block in _rule_blocks():
        script = re.search(r'"\.\./workflow_scripts/(\w+\.py)"', block)
        if script is None or "**EXTRACTION_PARAMS" in block or block.lstrip().startswith("use rule"):
            continue
        assert f'code_digest("{script[1]}"' in block and "code=" in block, (name, block.splitlines()[0])


def test_training_reads_its_tokenizer_and_corpus_as_inputs():
    """A tokenizer or corpus edit retrains (Snakemake: inputs; DVC: deps of the models stage),
    and a tokenizer is a dep of the stages that read it only, not of e.g. theory."""
    block = next(b for _, b in _rule_blocks() if b.startswith("rule train_model:"))
    assert "tokenizer=" in block.split("output:")[0] and "corpus=_train_corpus" in block.split("output:")[0]
    deps = {name: stage["deps"] for name, stage in DVC["stages"].items()}
    tokenizers = {name for name, d in deps.items() if any(x.startswith("reprflow/data/tokenizers/") for x in d)}
    assert tokenizers == {"models", "prompts"} and not any("reprflow/data" in d for d in deps.values())


def test_a_lazily_exported_name_counts_as_its_dotted_submodule(tmp_path):
    """reprflow.models' _EXPORTS give dotted paths: `from reprflow.models import load_model` imports
    reprflow/models/registry.py."""
    from reprflow.workflow.lineage import module_closure

    root = _copy_code(tmp_path)
    (root / "workflow_scripts/uses_registry.py").write_text("from reprflow.models import load_model\n")
    files = module_closure([root / "workflow_scripts/uses_registry.py"], root)
    assert root / "reprflow/models/registry.py" in files


@pytest.mark.parametrize("key, value", [("threads", 1), ("device", "cpu"), ("checkpoint_every", 7)])
def test_a_train_execution_key_is_in_no_param(key, value):
    """models[].train.{device,threads,checkpoint_every} change how training runs, not the weights:
    they stay out of the extraction params, the extraction digest and the report rules' science."""
    import copy

    from reprflow.config import validate_config

    raw = yaml.safe_load((PROJECT_ROOT / "config" / "demo.yaml").read_text())
    changed = copy.deepcopy(raw)
    changed["models"][0]["train"][key] = value
    a, b = validate_config(raw), validate_config(changed)
    name = raw["models"][0]["name"]
    assert a.science_model(name) == b.science_model(name) and key not in a.science_model(name)["train"]
    assert a.extraction_digest(name, "pretrained", "kvpr", 300) == b.extraction_digest(name, "pretrained", "kvpr", 300)
    assert a.science() == b.science()
    changed["models"][0]["train"]["lr"] = 0.02  # a science key still reruns
    assert validate_config(changed).extraction_digest(name, "pretrained", "kvpr", 300) != a.extraction_digest(
        name, "pretrained", "kvpr", 300
    )


def test_probe_jobs_book_the_threads_torch_uses():
    """A CPU probe job books execution.probes.threads cores and runs torch on that many, so
    jobs side by side do not oversubscribe; the key is an execution key, never a param."""
    rule = (PROJECT_ROOT / "rules" / "probes.smk").read_text()
    assert 'threads: CFG.execution("probes")["threads"]' in rule
    script = (PROJECT_ROOT / "workflow_scripts" / "probes.py").read_text()
    assert 'torch_threads(snakemake.threads, key="execution.probes.threads")' in script
    params = rule.split("params:")[1].split("threads:")[0]
    assert "execution" not in params


def test_a_section_the_config_file_leaves_to_the_schema_is_no_dvc_param():
    """DVC reads params from the config file itself: a section the file does not write (its
    values the schema's defaults, tracked through the schema dep) must not be listed, or
    `dvc repro` stops with "Parameters ... are missing". config/matched.yaml writes no findings."""
    from reprflow.config import load_config
    from reprflow.workflow.lineage import render

    text = render("config/matched.yaml", load_config(PROJECT_ROOT / "config" / "matched.yaml"))
    report = text.split("\n  report:\n")[1].split("\nmetrics:\n")[0]  # the last stage
    assert "          - figures" in report and "          - findings" not in report
    assert "reprflow/data/schema.yaml" in report
