"""One extraction job per shard: the shards read as one store and give the same metrics, with the
token metrics stored and computed after (tokens: store) or streamed in shard 0's job (stream)."""

import copy
import shutil

import numpy as np
import pandas as pd
import pytest
import yaml

from reprflow.config import PROJECT_ROOT
from reprflow.store import open_activations

pytestmark = pytest.mark.slow


def _one_cell(shards: int, tokens: str = "store") -> dict:
    raw = yaml.safe_load((PROJECT_ROOT / "config" / "demo.yaml").read_text())
    cfg = copy.deepcopy(raw)
    cfg["models"] = [m for m in raw["models"] if m["family"] == "gpt_neox"]
    cfg["models"][0]["train"].update(tokens=2048)  # two steps: the cell, not the training, is tested
    cfg["inits"], cfg["tasks"], cfg["lengths"] = raw["inits"][:1], ["kvpr"], [600]
    cfg.pop("custom_tasks")  # one cell
    cfg["prompts"]["n_prompts"] = 40
    cfg["probes"]["seeds"] = [0]
    cfg["figures"]["length"] = 600
    cfg["execution"]["extraction"].update(shards=shards, batch_size=4)
    cfg["extraction"]["tokens"] = tokens
    return cfg


def test_sharded_extraction_matches_one_store(
    tmp_path, scratch_project, run_snakemake, spawn_snakemake, stop_snakemake
):
    cfg_out = yaml.safe_load((PROJECT_ROOT / "config" / "demo.yaml").read_text())["out_dir"]
    runs, started = {}, {}
    # the unsharded run first; then the two sharded ones side by side (their jobs are mostly
    # interpreter start-up, so two runs at once fill the 2 cores of CI better than one)
    for shards, tokens in ((1, "store"), (3, "store"), ("3s", "stream")):  # 3s: shard 0 streams the metrics
        root = scratch_project(tmp_path / f"shards{shards}")
        if runs:  # the first run's model (and its training outputs) and prompt set, copied (mtimes kept):
            for products in ("data", "results/training"):  # trained once, the same inputs
                shutil.copytree(runs[1] / cfg_out / products, root / cfg_out / products, symlinks=True)
        (root / "cell.yaml").write_text(yaml.safe_dump(_one_cell(int(str(shards)[0]), tokens)))
        args = ("--cores", "2", "--configfile=cell.yaml", "all_metrics")
        if not runs:
            run = run_snakemake(root, *args)
            out = run.stdout + run.stderr
            assert run.returncode == 0, out[-4000:]
            assert "rule train_model:" in out and "rule extract_activation_shard0:" not in out, out[-4000:]
        else:
            started[shards] = spawn_snakemake(root, *args, log=tmp_path / f"shards{shards}.log")
        runs[shards] = root
    try:
        for proc in started.values():
            proc.wait(timeout=1200)
    finally:
        for proc in started.values():
            stop_snakemake(proc)
    for shards, proc in started.items():
        out = (tmp_path / f"shards{shards}.log").read_text()
        assert proc.returncode == 0, out[-4000:]
        assert ("rule extract_activation_shard0:" in out) == (shards == "3s")
        assert "rule train_model:" not in out, out[-4000:]
    base = f"{cfg_out}/results/activations/tiny-pythia/pretrained/kvpr_n600"
    shard_paths = [runs[3] / f"{base}_shard{i}of3.zarr" for i in range(3)]
    assert all(p.is_dir() for p in shard_paths) and not (runs[3] / f"{base}.zarr").exists()
    one, sharded = open_activations(runs[1] / f"{base}.zarr"), open_activations(shard_paths)
    np.testing.assert_array_equal(np.asarray(sharded["labels"]), np.asarray(one["labels"]))
    # stored as float16 (auto): batches differ between the runs, so allow one float16 ulp
    np.testing.assert_allclose(sharded["last"][...], one["last"][...], rtol=2e-3, atol=1e-5)
    metrics = f"{cfg_out}/results/metrics/tiny-pythia/pretrained/kvpr_n600"
    streamed = open_activations([runs["3s"] / f"{base}_shard{i}of3.zarr" for i in range(3)])
    assert streamed["tokens"].shape[1] == 0 and sharded["tokens"].shape[1] == one["tokens"].shape[1] > 0
    np.testing.assert_allclose(streamed["last"][...], one["last"][...], rtol=2e-3, atol=1e-5)
    for name in ("probes.csv", "token_metrics/inter_token_cosine.csv", "token_metrics/layerwise_cosine.csv"):
        a = pd.read_csv(runs[1] / metrics / name)
        cols = [c for c in a.columns if a[c].dtype.kind == "f"]
        for other in (3, "3s"):  # streamed: float32 states against the float16-stored ones
            b = pd.read_csv(runs[other] / metrics / name)
            np.testing.assert_allclose(
                b[cols].to_numpy(), a[cols].to_numpy(), rtol=2e-3, atol=1e-3, err_msg=f"{other}: {name}"
            )
