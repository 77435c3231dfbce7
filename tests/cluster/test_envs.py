"""The conda env files in envs/ work when Snakemake deploys them (--sdm conda)."""

import re

import pytest
import yaml

from reprflow.config import PROJECT_ROOT

ENVS = sorted((PROJECT_ROOT / "envs").glob("*.yaml"))


def _pins(lines) -> dict[str, str]:
    out = {}
    for line in lines:
        m = re.fullmatch(r"\s*([A-Za-z0-9_.-]+)\s*==\s*([^\s;#]+).*", line)
        if m:
            out[m.group(1).lower().replace("_", "-")] = m.group(2)
    return out


def _pip_section(path) -> list[str]:
    deps = yaml.safe_load(path.read_text())["dependencies"]
    return [line for dep in deps if isinstance(dep, dict) for line in dep.get("pip", [])]


@pytest.mark.parametrize("env", ENVS, ids=lambda p: p.name)
def test_env_file_has_no_paths_relative_to_itself(env):
    """Snakemake copies an env file into .snakemake/conda/<hash>.yaml and creates the env from
    the copy, so `-r ../requirements.txt` or `-e ..` would resolve under .snakemake/."""
    relative = [line for line in _pip_section(env) if re.match(r"^(-r|-c|-e|--requirement|--editable)\s|^\.", line)]
    assert not relative, f"{env.name}: pip entries relative to the env file: {relative}"


def test_cpu_env_pins_agree_with_requirements_txt():
    env = _pins(_pip_section(PROJECT_ROOT / "envs" / "cpu.yaml"))
    req = _pins((PROJECT_ROOT / "requirements.txt").read_text().splitlines())
    assert "torch" in env and "transformers" in env
    assert {name: req.get(name) for name in env} == env


def test_every_conda_directive_names_an_existing_env_file():
    named = set()
    for smk in (PROJECT_ROOT / "rules").glob("*.smk"):
        named |= set(re.findall(r"\"\.\./(envs/[\w.-]+\.yaml)\"", smk.read_text()))
    assert {"envs/cpu.yaml", "envs/gpu.yaml"} <= named
    for rel in named:
        assert (PROJECT_ROOT / rel).is_file(), rel
