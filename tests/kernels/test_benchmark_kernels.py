"""benchmarks/kernels.py runs end to end at toy size on CPU and prints its table last."""

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_quick_cpu_run_prints_the_table(tmp_path, benchmark_script, capfd):
    """The driver in this process, its two workers (compiled kernels hidden, visible) as it starts them."""
    kernels = benchmark_script("kernels")
    argv = [
        "--quick",
        "--device",
        "cpu",
        "--families",
        "mamba",
        "--tokens",
        "16",
        "--batches",
        "1",
        "--out",
        str(tmp_path),
    ]
    code = kernels.main(argv)
    out, err = capfd.readouterr()
    assert code == 0, err[-3000:]
    table = (tmp_path / "kernels.md").read_text()
    assert out.rstrip().endswith(table.rstrip().splitlines()[-1])  # the table is printed last
    for family in ("mamba",):
        for path in ("hf naive", "hf best", "reprflow (no compiled)", "reprflow"):
            assert f"| {family} | {path} |" in table
    assert "| mamba_scan | torch |" in table and "| causal_conv | torch |" in table
    assert "132 SMs x 16 SFU/clk x 1.98 GHz" in table


def test_batch_tokens_quick_cpu_run_times_every_shape_in_one_table(tmp_path):
    """benchmarks/batch_tokens.py: one row per (model, shape), both passes, Mamba-1's scan per shape;
    a model named by --models (Mamba2-130M) timed beside the family's."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    cmd = [sys.executable, str(ROOT / "benchmarks" / "batch_tokens.py"), "--quick", "--device", "cpu"]
    cmd += ["--families", "mamba", "--models", "mamba2-130m", "--shapes", "16x2", "8x4", "--batches", "1"]
    cmd += ["--out", str(tmp_path)]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    table = (tmp_path / "batch_tokens.md").read_text()
    assert proc.stdout.rstrip().endswith(table.rstrip().splitlines()[-1])
    for tokens, batch in ((16, 2), (8, 4)):
        assert f"| mamba-2.8b | {tokens} | {batch} | 32 |" in table
        assert f"| mamba2-130m | {tokens} | {batch} | 32 |" in table
        assert f"| {tokens} x {batch} | mamba_scan | torch |" in table
    assert proc.stdout.count("  mamba-2.8b ") == proc.stdout.count("  mamba2-130m ") == 4  # two shapes, two passes


def _usage_error(module, argv: list[str], capsys) -> str:
    """A benchmark ``module``'s ``main(argv)`` in this process (a usage error needs no interpreter
    of its own): assert it exits with argparse's status 2 and return what it wrote to stderr."""
    import pytest

    with pytest.raises(SystemExit) as exit_:
        module.main(argv)
    assert exit_.value.code == 2
    return capsys.readouterr().err


def test_batch_tokens_refuses_a_malformed_shape(benchmark_script, capsys):
    err = _usage_error(benchmark_script("batch_tokens"), ["--shapes", "4096by8"], capsys)
    assert "shape '4096by8': write TOKENSxBATCH" in err


def test_batch_tokens_gluon_configs_parse_and_patch_the_scan_default_only_within_the_block(benchmark_script):
    """--gluon-configs: "default" or LANES,WARPS,UNROLL[,PREFETCH[,STAGES]]; the patch is undone after."""
    import argparse

    import pytest

    batch_tokens = benchmark_script("batch_tokens")
    gluon_scan_config, parse_gluon_config = batch_tokens.gluon_scan_config, batch_tokens.parse_gluon_config

    from reprflow.kernels import selective_scan_gluon as module

    assert parse_gluon_config("default") is None
    cfg = parse_gluon_config("1,4,4,1,3")
    assert tuple(cfg) == (1, 4, 4, True, 3) and repr(cfg) == "lanes/channel=1 warps=4 unroll=4 shared x3"
    with pytest.raises(argparse.ArgumentTypeError, match="write default or LANES,WARPS,UNROLL"):
        parse_gluon_config("1;4")
    before = module.default_gluon_config(5120, 32)
    with gluon_scan_config(cfg):
        assert module.default_gluon_config(5120, 32) == cfg
    assert module.default_gluon_config(5120, 32) == before
    with gluon_scan_config(None):
        assert module.default_gluon_config(5120, 32) == before


def test_scan_sweep_quick_run_writes_one_record_per_row_for_the_shapes_given(tmp_path, benchmark_script, capsys):
    """benchmarks/scan_sweep.py --out: the table and scan_sweep.json (kernel, label, config, ms per shape)."""
    import importlib.util
    import json

    sweep = benchmark_script("scan_sweep")

    env = {**os.environ, "PYTHONPATH": str(ROOT), "TRITON_INTERPRET": "1"}
    cmd = [sys.executable, str(ROOT / "benchmarks" / "scan_sweep.py"), "--device", "cpu", "--quick"]
    cmd += ["--out", str(tmp_path)]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    table = (tmp_path / "scan_sweep.md").read_text()
    assert "| kernel | config | ms B=2 T=12 | x exp bound | ms B=1 T=24 |" in table
    records = json.loads((tmp_path / "scan_sweep.json").read_text())
    if importlib.util.find_spec("triton") is None:  # every row failed: none is recorded as a time
        assert records == [] and table.count("failed: RuntimeError") == len(sweep.TRITON_CONFIGS)
    else:  # the interpreter runs the Triton kernel
        assert [r["config"] for r in records if r["kernel"] == "triton"] == [list(c) for c in sweep.TRITON_CONFIGS]
    for r in records:
        assert set(r) == {"kernel", "label", "config", "ms", "shapes"} and len(r["ms"]) == 2 and min(r["ms"]) > 0
    err = _usage_error(sweep, ["--shapes", "2048x32", "4096by16"], capsys)
    assert "shape '4096by16': write TOKENSxBATCH" in err


def test_batch_tokens_refuses_an_unknown_model_naming_it(benchmark_script, capsys):
    err = _usage_error(benchmark_script("batch_tokens"), ["--quick", "--models", "mamba3-1b"], capsys)
    assert "--models: unknown ['mamba3-1b']" in err


def test_gemm_shapes_quick_run_times_every_projection_and_sums_them(benchmark_script):
    """benchmarks/gemm_shapes.py: a row per projection of each paper model at the paper config's
    tokens per pass, and per model the summed time and the rate it implies (flops / time); with
    --layouts, every projection with its weight row- and column-major, equal to rounding."""
    import yaml

    MODELS = benchmark_script("gemm_shapes").MODELS

    batch_tokens = yaml.safe_load((ROOT / "config" / "config.yaml").read_text())["execution"]["extraction"][
        "batch_tokens"
    ]
    family = {"mamba-2.8b": "mamba", "mamba2-2.7b": "mamba2", "pythia-2.8b": "gpt_neox", "gpt-neo-2.7b": "gpt_neo"}
    for model, (tokens, _) in MODELS.items():
        assert tokens == batch_tokens.get(family[model], batch_tokens["default"]), model
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    cmd = [sys.executable, str(ROOT / "benchmarks" / "gemm_shapes.py"), "--quick", "--repeats", "1", "--layouts"]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = [line.split("|")[1:-1] for line in proc.stdout.splitlines() if line.startswith("| ") and "---" not in line]
    # --layouts: on the CPU both weight storages of every projection, the same values
    layouts = [r for r in rows if len(r) == 8 and r[0].strip() != "model"]
    assert [(r[0].strip(), r[1].strip(), r[3].strip()) for r in layouts] == [
        (m, p, layout) for m, (_, ps) in MODELS.items() for p, _, _ in ps for layout in ("row", "column")
    ]
    assert all(r[2].strip() == "cublas" and float(r[7]) <= 1e-3 and float(r[4]) > 0 for r in layouts)
    per_proj = [r for r in rows if len(r) == 6 and r[0].strip() != "model"]
    totals = {r[0].strip(): r for r in rows if len(r) == 4 and r[0].strip() != "model"}
    assert [(r[0].strip(), r[2].strip()) for r in per_proj] == [
        (m, p) for m, (_, ps) in MODELS.items() for p, _, _ in ps
    ]
    for model, (tokens, projections) in MODELS.items():
        ms = sum(float(r[3]) for r in per_proj if r[0].strip() == model)
        assert abs(float(totals[model][1]) - ms) <= 1e-3 * len(projections)  # printed to 3 decimals
        flops = sum(2 * (tokens // 16) * (i // 16) * (o // 16) for _, i, o in projections)
        assert abs(float(totals[model][2]) - flops / (float(totals[model][1]) * 1e-3) / 1e12) <= 0.02 * float(
            totals[model][2]
        )
