"""``pip install .`` outside the repository: a working ``import reprflow``, package data, the ``reprflow`` command.

The wheel is built from a copy of the files a source distribution holds (pyproject.toml,
README.md, reprflow/), without build isolation (the environment's setuptools; no network),
and installed with ``--no-deps --target`` into a scratch folder, whose Python path then puts
it ahead of the checkout. Everything runs from a folder outside the repository.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zipfile
from importlib.metadata import version
from pathlib import Path

import pytest
from packaging.version import Version

from reprflow.config import PROJECT_ROOT


def _setuptools_version() -> Version | None:
    try:
        return Version(version("setuptools"))
    except Exception:  # noqa: BLE001 - not installed
        return None


pytestmark = pytest.mark.skipif(
    (_setuptools_version() or Version("0")) < Version("77"),
    reason="building the wheel offline needs setuptools >= 77 in the environment (scripts/setup_env.sh installs it)",
)


def _run(*cmd: str, cwd: Path, env: dict | None = None) -> subprocess.CompletedProcess:
    done = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, f"{' '.join(cmd)} failed:\n{done.stdout}\n{done.stderr}"
    return done


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> Path:
    """The wheel, installed into a scratch ``site`` folder; returns that folder."""
    root = tmp_path_factory.mktemp("pkg")
    src = root / "src"
    src.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(PROJECT_ROOT / name, src / name)
    shutil.copytree(PROJECT_ROOT / "reprflow", src / "reprflow", ignore=shutil.ignore_patterns("__pycache__"))
    build = _run(
        sys.executable,
        "-m",
        "pip",
        "wheel",
        "-v",
        "--no-deps",
        "--no-build-isolation",
        "--no-index",
        "-w",
        str(root / "dist"),
        str(src),
        cwd=root,
    )
    log = build.stdout + build.stderr
    # no packaging deprecation (e.g. `license = {text = ...}` gives three `BuildBackendWarning: ... deprecated`)
    assert "deprecat" not in log.lower() and "BuildBackendWarning" not in log, log
    (wheel,) = (root / "dist").glob("reprflow-*.whl")
    with zipfile.ZipFile(wheel) as zf:
        names = set(zf.namelist())
    for shipped in (
        "reprflow/data/schema.yaml",
        "reprflow/data/tokenizers/gpt2/tokenizer.json",
        "reprflow/data/tokenizers/gpt2/SOURCE.md",
        "reprflow/data/tokenizers/gpt-neox-20b/tokenizer.json",
        "reprflow/models/configs/EleutherAI__pythia-2.8b.json",
        "reprflow/models/configs/SOURCE.md",
    ):
        assert shipped in names, f"{shipped} is not in the wheel"
    site = root / "site"
    _run(
        sys.executable,
        "-m",
        "pip",
        "install",
        "-q",
        "--no-deps",
        "--no-index",
        "--target",
        str(site),
        str(wheel),
        cwd=root,
    )
    return site


def _env(site: Path) -> dict[str, str]:
    """The installed copy first on the path; the environment's own packages (torch, ...) after it."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    return dict(env, PYTHONPATH=str(site), HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1")


def test_import_and_package_data_resolve_from_the_installed_copy(installed, tmp_path):
    code = (
        "import json, reprflow\n"
        "from reprflow.prompts import available_tokenizers, load_tokenizer\n"
        "from reprflow.prompts.tokenizers import TOKENIZER_DIR\n"
        "from reprflow.config import SCHEMA_PATH, TOKENIZER_DIR as CONFIG_TOKENIZER_DIR, load_config\n"
        "from reprflow.models.shipped import SHIPPED_DIR\n"
        "print(json.dumps({'module': reprflow.__file__, 'tokenizers': str(TOKENIZER_DIR),\n"
        "    'config_tokenizers': str(CONFIG_TOKENIZER_DIR), 'configs': str(SHIPPED_DIR), 'schema': str(SCHEMA_PATH),\n"
        f"    'demo_models': len(load_config({str(PROJECT_ROOT / 'config' / 'demo.yaml')!r}).models),\n"
        "    'names': available_tokenizers(), 'ids': load_tokenizer('gpt2')('The quick brown fox')['input_ids'],\n"
        "    'n_configs': len(list(SHIPPED_DIR.glob('*.json')))}))\n"
    )
    import json

    out = json.loads(_run(sys.executable, "-c", code, cwd=tmp_path, env=_env(installed)).stdout)
    for key in ("module", "tokenizers", "config_tokenizers", "configs", "schema"):
        assert Path(out[key]).is_relative_to(installed), (key, out[key])
    assert out["names"] == ["gpt-neox-20b", "gpt2", "nq-bpe-2048"]
    assert out["ids"] == [464, 2068, 7586, 21831]  # as in reprflow/data/tokenizers/gpt2/SOURCE.md
    assert out["n_configs"] >= 5
    assert out["demo_models"] == 4  # load_config validates against the installed schema


@pytest.mark.parametrize("command", ["extract", "metrics", "probe"])
def test_console_script_documents_each_command(installed, tmp_path, command):
    script = installed / "bin" / "reprflow"
    assert script.is_file()
    text = _run(str(script), command, "--help", cwd=tmp_path, env=_env(installed)).stdout
    assert text.startswith(f"usage: reprflow {command}") and "--out" in text


def test_declared_dependencies_admit_the_tested_pins():
    """Every runtime and workflow dependency of pyproject.toml is pinned in requirements.txt, within its range."""
    import tomllib

    from packaging.requirements import Requirement
    from packaging.utils import canonicalize_name

    project = tomllib.loads((PROJECT_ROOT / "pyproject.toml").read_text())["project"]
    pins = {}
    for line in (PROJECT_ROOT / "requirements.txt").read_text().splitlines():
        if line and not line.startswith("#"):
            name, _, pin = line.partition("==")
            pins[canonicalize_name(name)] = pin.strip()
    declared = project["dependencies"] + project["optional-dependencies"]["workflow"]
    assert len(declared) >= 15
    for spec in map(Requirement, declared):
        pin = pins.get(canonicalize_name(spec.name))
        assert pin is not None, f"{spec.name} is declared in pyproject.toml but not pinned in requirements.txt"
        assert spec.specifier.contains(pin), f"pyproject.toml {spec} excludes the pinned {spec.name}=={pin}"
