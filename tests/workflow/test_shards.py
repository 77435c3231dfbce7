"""One extraction job per shard: the shards read as one store and give the same metrics."""

import copy

import numpy as np
import pandas as pd
import pytest
import yaml

from reprflow.config import PROJECT_ROOT
from reprflow.store import open_activations

pytestmark = pytest.mark.slow


def _one_cell(shards: int) -> dict:
    raw = yaml.safe_load((PROJECT_ROOT / "config" / "demo.yaml").read_text())
    cfg = copy.deepcopy(raw)
    cfg["models"] = [m for m in raw["models"] if m["family"] == "gpt_neox"]
    cfg["inits"], cfg["tasks"], cfg["lengths"] = raw["inits"][:1], ["kvpr"], [600]
    cfg["prompts"]["n_prompts"] = 40
    cfg["probes"]["seeds"] = [0]
    cfg["figures"]["length"] = 600
    cfg["execution"]["extraction"].update(shards=shards, batch_size=4)
    return cfg


def test_sharded_extraction_matches_one_store(tmp_path, scratch_project, run_snakemake):
    runs = {}
    for shards in (1, 3):
        root = scratch_project(tmp_path / f"shards{shards}")
        (root / "cell.yaml").write_text(yaml.safe_dump(_one_cell(shards)))
        run = run_snakemake(root, "--cores", "2", "--configfile=cell.yaml", "all_metrics")
        assert run.returncode == 0, (run.stdout + run.stderr)[-4000:]
        runs[shards] = root
    cfg_out = yaml.safe_load((PROJECT_ROOT / "config" / "demo.yaml").read_text())["out_dir"]
    base = f"{cfg_out}/results/activations/tiny-pythia/pretrained/kvpr_n600"
    shard_paths = [runs[3] / f"{base}_shard{i}of3.zarr" for i in range(3)]
    assert all(p.is_dir() for p in shard_paths) and not (runs[3] / f"{base}.zarr").exists()
    one, sharded = open_activations(runs[1] / f"{base}.zarr"), open_activations(shard_paths)
    np.testing.assert_array_equal(np.asarray(sharded["labels"]), np.asarray(one["labels"]))
    # stored as float16 (auto): batches differ between the runs, so allow one float16 ulp
    np.testing.assert_allclose(sharded["last"][...], one["last"][...], rtol=2e-3, atol=1e-5)
    metrics = f"{cfg_out}/results/metrics/tiny-pythia/pretrained/kvpr_n600"
    for name in ("probes.csv", "token_metrics/inter_token_cosine.csv"):
        a, b = pd.read_csv(runs[1] / metrics / name), pd.read_csv(runs[3] / metrics / name)
        cols = [c for c in a.columns if a[c].dtype.kind == "f"]
        np.testing.assert_allclose(b[cols].to_numpy(), a[cols].to_numpy(), rtol=2e-3, atol=1e-3, err_msg=name)
