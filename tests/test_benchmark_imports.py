"""Every script in ``benchmarks/`` imports on a CPU machine: its imports of the project and of
its sibling scripts resolve (most run only on a GPU, so an import error would otherwise go
unseen until a lent machine runs it). One subprocess imports them all, as the scripts import
each other: ``benchmarks/`` and the repository root on ``sys.path``."""

import importlib.util
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

_IMPORT_ALL = """
import importlib, sys, json
from pathlib import Path
root = Path(sys.argv[1])
sys.path[:0] = [str(root / "benchmarks"), str(root)]
failed = {}
for path in sorted((root / "benchmarks").glob("*.py")):
    try:
        importlib.import_module(path.stem)
    except Exception as exc:  # reported below
        failed[path.name] = f"{type(exc).__name__}: {exc}"
print(json.dumps(failed))
"""


def test_every_benchmark_script_imports():
    import json

    scripts = sorted(p.name for p in (ROOT / "benchmarks").glob("*.py"))
    assert len(scripts) > 20
    proc = subprocess.run(
        [sys.executable, "-c", _IMPORT_ALL, str(ROOT)], capture_output=True, text=True, timeout=300, cwd=ROOT
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    failed = json.loads(proc.stdout.strip().splitlines()[-1])
    if importlib.util.find_spec("triton") is None:  # GPU-only scripts that need Triton itself
        failed = {k: v for k, v in failed.items() if v != "ModuleNotFoundError: No module named 'triton'"}
    assert failed == {}, failed
