"""Config validation: every kind of bad input gets one message naming the key."""

import copy
from pathlib import Path

import pytest
import yaml

from reprflow.config import MOVED_TO_EXECUTION, PROJECT_ROOT, SCHEMA_PATH, load_config, validate_config
from reprflow.errors import ConfigError


@pytest.fixture(scope="module")
def demo() -> dict:
    with open(PROJECT_ROOT / "config" / "demo.yaml") as fh:
        return yaml.safe_load(fh)


@pytest.mark.parametrize("name", ["config.yaml", "demo.yaml"])
def test_shipped_configs_are_valid(name):
    cfg = load_config(PROJECT_ROOT / "config" / name)
    assert cfg.models and cfg.inits and cfg.paper_tasks == ["kvpr", "mdqa"]
    assert cfg.section("probes")["lr"] == 0.05 and cfg.section("probes")["epochs"] == 150


def test_the_schema_is_package_data():
    """load_config reads the schema shipped inside the package, so an installed copy validates too
    (tests/test_packaging.py checks the wheel)."""
    import reprflow

    assert SCHEMA_PATH.is_file() and SCHEMA_PATH.parent == Path(reprflow.__file__).resolve().parent / "data"
    assert not (PROJECT_ROOT / "config" / "schema.yaml").exists()


def test_paper_config_is_the_paper_matrix():
    cfg = load_config(PROJECT_ROOT / "config" / "config.yaml")
    assert [m.family for m in cfg.models] == ["gpt_neo", "gpt_neox", "mamba", "mamba2", "mamba2"]
    assert cfg.lengths == [300, 1024, 2048, 4096]
    # the paper's workload: pretrained everywhere; random init only where Fig. 3 needs it (sec. 3.2)
    assert [(i.name, i.scheme, i.params, i.scope) for i in cfg.inits] == [
        ("pretrained", "pretrained", {}, "all"),
        ("random", "default", {}, "fig3"),
        ("gaussian-0.02", "gaussian", {"std": 0.02}, "fig3"),
        ("gaussian-0.2", "gaussian", {"std": 0.2}, "fig3"),
        ("xavier", "xavier", {"gain": 1.0}, "fig3"),
        ("he", "he", {"nonlinearity": "relu"}, "fig3"),
    ]
    assert all(len(m.revision or "") == 40 for m in cfg.models), "every paper checkpoint is pinned to a commit"
    assert cfg.model("gpt-neo-2.7b").max_context == 2048 and not cfg.model("gpt-neo-2.7b").fits(4096)
    assert cfg.model("mamba-2.8b").fits(4096)


def _mutate(base, path, value):
    cfg = copy.deepcopy(base)
    node = cfg
    for key in path[:-1]:
        node = node[key]
    if value is KeyError:
        del node[path[-1]]
    else:
        node[path[-1]] = value
    return cfg


@pytest.mark.parametrize(
    "path, value, expected",
    [
        (("prompts", "n_prompt"), 5, "config.prompts: unknown key 'n_prompt'"),
        (("bogus",), 1, "config: unknown key 'bogus'"),
        (("lengths",), [300, "1k"], "config.lengths[1]: expected integer, got '1k'"),
        (("lengths",), [0], "config.lengths[0]: must be >= 1, got 0"),
        (("lengths",), [-5], "config.lengths[0]: must be >= 1, got -5"),
        (("models", 0, "family"), "Mamba 2", "config.models[0].family: 'Mamba 2' does not match"),
        (("tasks",), ["kvpr", "squad"], "config.tasks[1]: 'squad' is not one of"),
        (("inits", 1, "scheme"), "orthogonal", "config.inits[1].scheme: 'orthogonal' is not one of"),
        (("seed",), "zero", "config.seed: expected integer"),
        (("probes", "lr"), -0.05, "config.probes.lr: must be > 0"),
        (
            ("models", 0, "tokenizer"),
            "llama3",
            "config.models[0].tokenizer: 'llama3' is not in reprflow/data/tokenizers",
        ),
        (("models", 1, "name"), "tiny-gpt-neo", "config.models: duplicate name 'tiny-gpt-neo'"),
        (("models", 0, "hf_id"), "EleutherAI/gpt-neo-125m", "config.models[0].hf_id"),
        (("prompts",), KeyError, "config: 'prompts' is a required property"),
        (("figures", "length"), 777, "config.figures.length: 777 is not one of config.lengths"),
        (("execution", "extraction", "device"), "gpu", "config.execution.extraction.device: 'gpu' does not match"),
        (("execution", "theory", "device"), "cuda1", "config.execution.theory.device: 'cuda1' does not match"),
    ],
)
def test_invalid_config_names_the_key(demo, path, value, expected):
    with pytest.raises(ConfigError) as err:
        validate_config(_mutate(demo, path, value))
    assert str(err.value).startswith(expected), str(err.value)
    assert "\n" not in str(err.value)


def test_defaults_are_filled_and_input_untouched(demo):
    raw = _mutate(demo, ("extraction",), {})
    cfg = validate_config(raw)
    assert raw["extraction"] == {}
    assert cfg.section("extraction") == {
        "n_token_prompts": 16,
        "compute_dtype": "bfloat16",
        "store_dtype": "auto",
        "tokens": "store",
    }
    raw = _mutate(demo, ("execution",), KeyError)
    cfg = validate_config(raw)
    assert "execution" not in raw
    assert cfg.execution("extraction") == {
        "batch_size": 8,
        "batch_tokens": None,
        "device": "auto",
        "gpus": 1,
        "shards": 1,
    }
    assert cfg.execution("theory") == {"device": "auto", "threads": None, "gpus": 1}
    assert cfg.raw["execution"]["disk_check"] is True


@pytest.mark.parametrize("section, key", [(s, k) for s, keys in MOVED_TO_EXECUTION.items() for k in keys])
def test_an_execution_key_in_its_old_section_names_its_new_home(demo, section, key):
    raw = copy.deepcopy(demo)
    raw.setdefault(section, {})[key] = 1
    with pytest.raises(ConfigError) as err:
        validate_config(raw)
    assert str(err.value).startswith(f"config.{section}.{key}: moved to config.execution.{section}.{key}")


def test_out_dir_places_tiny_models_and_is_normalised(demo):
    cfg = validate_config(demo)
    assert cfg.out_dir == "runs/demo" and cfg.model("tiny-mamba").hf_id == "runs/demo/data/models/tiny-mamba"
    with pytest.raises(
        ConfigError, match=r"^config.models\[0\].hf_id: .*so hf_id must be 'elsewhere/data/models/tiny-gpt-neo'"
    ):
        validate_config(_mutate(demo, ("out_dir",), "elsewhere"))
    assert validate_config(_mutate(demo, ("out_dir",), "./runs/demo/")).out_dir == "runs/demo"
    assert load_config(PROJECT_ROOT / "config" / "config.yaml").out_dir == "."


def test_digest_changes_with_content(demo):
    a = validate_config(demo).digest()
    assert a == validate_config(copy.deepcopy(demo)).digest()
    assert a != validate_config(_mutate(demo, ("seed",), 1)).digest()


def test_missing_file_and_bad_yaml(tmp_path):
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("models: [\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(bad)


def test_extraction_digest_ignores_settings_extraction_does_not_read(demo):
    base = validate_config(demo).extraction_digest("tiny-mamba", "random", "kvpr", 300)
    assert base == validate_config(_mutate(demo, ("probes", "epochs"), 3)).extraction_digest(
        "tiny-mamba", "random", "kvpr", 300
    )
    for key, value in (("batch_size", 3), ("batch_tokens", 4096), ("device", "cuda:1"), ("gpus", 4), ("shards", 2)):
        changed = _mutate(demo, ("execution", "extraction", key), value)
        assert base == validate_config(changed).extraction_digest("tiny-mamba", "random", "kvpr", 300), key
    reordered = _mutate(demo, ("models",), demo["models"][::-1])
    assert base == validate_config(reordered).extraction_digest("tiny-mamba", "random", "kvpr", 300)
    assert validate_config(demo).science() == validate_config(reordered).science()
    scoped = copy.deepcopy(demo)
    scoped["inits"][1]["scope"] = "fig3"
    # a fig3 store holds only the token prompts: scope changes stored values, so the digest
    assert base != validate_config(scoped).extraction_digest("tiny-mamba", "random", "kvpr", 300)
    other = {"store": "stream", "stream": "store"}[demo["extraction"]["tokens"]]
    assert base != validate_config(_mutate(demo, ("extraction", "tokens"), other)).extraction_digest(
        "tiny-mamba", "random", "kvpr", 300
    )
    assert base != validate_config(_mutate(demo, ("extraction", "n_token_prompts"), 3)).extraction_digest(
        "tiny-mamba", "random", "kvpr", 300
    )
    assert base != validate_config(_mutate(demo, ("seed",), 7)).extraction_digest("tiny-mamba", "random", "kvpr", 300)
    assert base != validate_config(demo).extraction_digest("tiny-mamba", "pretrained", "kvpr", 300)


def test_prompt_settings_are_per_prompt_set(demo):
    """A setting that matters to one prompt set (its tolerance override, MDQA's oracle) changes that
    set's prompts-rule settings and its extractions' digests only: the other sets and their
    extractions are not rerun. n_prompts and the seed still reach every set."""
    from reprflow.config import prompt_set_settings

    cfg = validate_config(demo)
    sets = [(t, n) for t in ("kvpr", "mdqa") for n in (300, 600)]

    def state(raw):
        c = validate_config(raw)
        return {
            s: (prompt_set_settings(c.section("prompts"), *s), c.extraction_digest("tiny-mamba", "random", *s))
            for s in sets
        }

    base = state(demo)
    assert base[("kvpr", 300)][0] == {"n_prompts": cfg.section("prompts")["n_prompts"], "tolerance": 0.1}
    assert base[("kvpr", 600)][0]["tolerance"] == 0.05 and "mdqa_oracle" not in base[("kvpr", 600)][0]
    assert len({d for _, d in base.values()}) == len(sets)  # each cell its own digest
    for s in sets:  # the set's own settings, passed again, are themselves (the rule's param is rebuilt from them)
        assert prompt_set_settings(base[s][0], *s) == base[s][0]

    def changed_sets(path, value):
        after = state(_mutate(demo, path, value))
        return {s for s in sets if after[s][0] != base[s][0]}, {s for s in sets if after[s][1] != base[s][1]}

    override = [{"task": "kvpr", "length": 300, "tolerance": 0.2}]
    assert changed_sets(("prompts", "tolerance_overrides"), override) == ({("kvpr", 300)},) * 2
    mdqa = {("mdqa", 300), ("mdqa", 600)}
    assert changed_sets(("prompts", "mdqa_oracle"), "elsewhere.jsonl.gz") == (mdqa, mdqa)
    assert changed_sets(("prompts", "tolerance"), 0.07) == ({s for s in sets if s != ("kvpr", 300)},) * 2
    assert changed_sets(("prompts", "n_prompts"), 9) == (set(sets), set(sets))


@pytest.mark.parametrize(
    "init, expected",
    [
        (
            {"name": "g", "scheme": "gaussian", "params": {"std": -1}},
            "config.inits[1].params.std: must be a finite number > 0",
        ),
        (
            {"name": "g", "scheme": "gaussian", "params": {"std": ".inf"}},
            "config.inits[1].params.std: must be a finite number > 0",
        ),
        (
            {"name": "g", "scheme": "gaussian", "params": {"sigma": 0.1}},
            "config.inits[1].params.sigma: not a parameter of init scheme 'gaussian'; allowed: std",
        ),
        (
            {"name": "x", "scheme": "xavier", "params": {"gain": 0}},
            "config.inits[1].params.gain: must be a finite number > 0",
        ),
        (
            {"name": "h", "scheme": "he", "params": {"nonlinearity": "tanh"}},
            "config.inits[1].params.nonlinearity: must be one of ['relu', 'linear']",
        ),
        (
            {"name": "d", "scheme": "default", "params": {"std": 0.1}},
            "config.inits[1].params.std: not a parameter of init scheme 'default'",
        ),
        ({"name": "h", "scheme": "he", "scope": "fig4"}, "config.inits[1].scope: 'fig4' is not one of ['all', 'fig3']"),
    ],
)
def test_init_parameters_are_checked_at_validation(demo, init, expected):
    """Bad init parameters stop the config load (and so the dry run), naming config.inits[i]."""
    raw = copy.deepcopy(demo)
    if init.get("params", {}).get("std") == ".inf":
        init = {**init, "params": {"std": float("inf")}}
    raw["inits"][1] = init
    with pytest.raises(ConfigError) as err:
        validate_config(raw)
    assert str(err.value).startswith(expected), str(err.value)


def test_init_scope_and_params_defaults(demo):
    raw = copy.deepcopy(demo)
    raw["inits"].append({"name": "he", "scheme": "he", "scope": "fig3"})
    cfg = validate_config(raw)
    assert cfg.init("he").params == {"nonlinearity": "relu"} and cfg.init("he").scope == "fig3"
    assert cfg.init("pretrained").scope == "all"


def _tiny_entry(demo: dict, **changes) -> dict:
    """The demo with its first model replaced by a ``tiny:`` entry (``changes`` applied)."""
    raw = copy.deepcopy(demo)
    entry = {"name": "t", "family": "llama", "hf_id": "runs/demo/data/models/t", "tokenizer": "gpt-neox-20b"}
    raw["models"] = [{**entry, "tiny": {"seed": 0}, **changes}]
    raw.pop("custom_tasks")
    return raw


def test_a_tiny_entry_is_checked_before_any_job(demo):
    """A family tiny.py cannot build, or a tokenizer the tiny vocabulary does not fit, stops at
    config time. Before the fix both passed `snakemake -n`: the first failed in build_tiny_model,
    the second in extraction (vocab_size 50280 against the 2048 tokens of nq-bpe-2048)."""
    assert validate_config(_tiny_entry(demo)).models[0].tiny == {"seed": 0, "overrides": {}}
    with pytest.raises(ConfigError, match=r"^config.models\[0\].family: 'qwen2' has no tiny model .*save_pretrained"):
        validate_config(_tiny_entry(demo, family="qwen2"))
    with pytest.raises(ConfigError, match=r"^config.models\[0\].tokenizer: 'nq-bpe-2048', .*`tokenizer: gpt-neox-20b`"):
        validate_config(_tiny_entry(demo, tokenizer="nq-bpe-2048"))
    sized = _tiny_entry(demo, tokenizer="nq-bpe-2048", tiny={"overrides": {"vocab_size": 2048}})
    assert validate_config(sized).models[0].tokenizer == "nq-bpe-2048"


def test_tiny_families_match_the_tiny_configs():
    from reprflow.models import tiny

    assert set(tiny._TINY) == set(tiny.TINY_TOKENIZERS)
