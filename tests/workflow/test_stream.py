"""extraction.tokens: stream through Snakemake, and fig3 cells that forward only their token prompts.

The dry runs check the job graph of the paper config (no token_metrics job when streamed; the
extraction job, or shard 0's, writes the token metrics). The end-to-end test runs one tiny
cell and one fig3 cell streamed through Snakemake and compares their token-metric files with
the store-then-compute path run in this process on the same model and prompts.
"""

import copy
import json
import re
from dataclasses import asdict

import numpy as np
import pandas as pd
import pytest
import yaml

from reprflow.config import PROJECT_ROOT, load_config, validate_config
from reprflow.extract import token_prompt_ids
from reprflow.pipeline.extract_stage import run_extraction
from reprflow.pipeline.token_metrics import compute_token_metrics
from reprflow.prompts import read_prompt_set
from reprflow.store import open_store
from reprflow.workflow.targets import cells


def _jobs(dry_run_stdout: str) -> list[tuple[str, list[str]]]:
    """(rule, outputs) of each job a ``snakemake -n`` printed."""
    found = []
    for block in re.split(r"\n(?=rule |localrule )", dry_run_stdout):
        head = re.match(r"(?:local)?rule (\w+):", block)
        outs = re.search(r"^    output: (.*)$", block, re.M)
        if head and outs:
            found.append((head[1], outs[1].split(", ")))
    return found


@pytest.mark.parametrize("shards", [1, 3])
def test_paper_dry_run_streams_token_metrics_from_the_extraction_jobs(workdir, run_snakemake, shards):
    config = load_config(PROJECT_ROOT / "config" / "config.yaml")
    assert config.section("extraction")["tokens"] == "stream"
    (workdir / "shards.yaml").write_text(yaml.safe_dump({"execution": {"extraction": {"shards": shards}}}))
    run = run_snakemake(workdir, "all", "-n", "--configfile", "config/config.yaml", "shards.yaml")
    assert run.returncode == 0, (run.stdout + run.stderr)[-4000:]
    jobs = _jobs(run.stdout)
    rules = {rule for rule, _ in jobs}
    assert "token_metrics" not in rules, "a streamed config runs no token_metrics job"
    writers = {}  # token-metrics dir -> the job that writes it
    for rule, outs in jobs:
        for o in outs:
            if o.endswith("/token_metrics"):
                assert o not in writers, f"{o} written twice"
                writers[o] = (rule, outs)
    every = {c.fmt("results/metrics/{model}/{init}/{task}_n{length}/token_metrics") for c in cells(config)}
    assert set(writers) == every
    for o, (rule, outs) in writers.items():
        cell = o.removeprefix("results/metrics/").removesuffix("/token_metrics")
        store = f"results/activations/{cell}" + (".zarr" if shards == 1 else f"_shard0of{shards}.zarr")
        assert rule == ("extract_activations" if shards == 1 else "extract_activation_shard0"), rule
        assert outs == [store, o]
    if shards > 1:  # the other shards store last tokens only, without metrics
        others = [outs for rule, outs in jobs if rule == "extract_activation_shard"]
        assert others and all(len(outs) == 1 and "_shard0of" not in outs[0] for outs in others)


N_PROMPTS, N_TOKEN = 12, 4


def _cell_config(tokens: str) -> dict:
    """One tiny pythia, KVPR at 300 tokens: a pretrained cell and a fig3-scoped xavier cell."""
    raw = yaml.safe_load((PROJECT_ROOT / "config" / "demo.yaml").read_text())
    cfg = copy.deepcopy(raw)
    cfg["models"] = [m for m in raw["models"] if m["name"] == "tiny-pythia"]
    cfg["models"][0]["train"].update(tokens=2048)  # two steps: the streamed metrics, not the training, are tested
    cfg["inits"] = [raw["inits"][0], {"name": "xavier", "scheme": "xavier", "params": {"gain": 1.0}, "scope": "fig3"}]
    cfg["tasks"], cfg["lengths"] = ["kvpr"], [300]
    cfg.pop("custom_tasks")
    cfg["prompts"]["n_prompts"] = N_PROMPTS
    cfg["figures"]["length"] = 300
    # float32 stores: the store path then reads the very states the streamed path sees
    cfg["extraction"].update(n_token_prompts=N_TOKEN, store_dtype="float32", tokens=tokens)
    cfg["execution"]["extraction"].update(batch_size=4)
    return cfg


def _store_then_compute(root, cfg: dict, init: str, dest):
    """The ``tokens: store`` files of one cell, computed in this process from the model and
    prompts the streamed run built: run_extraction into a store with token states, then
    compute_token_metrics (what the extract_activations and token_metrics rules run)."""
    config = validate_config({**cfg, "extraction": {**cfg["extraction"], "tokens": "store"}})
    model = {**asdict(config.model("tiny-pythia"))}
    model["hf_id"] = str(root / model["hf_id"])
    store = run_extraction(
        root / cfg["out_dir"] / "data/prompts/nq-bpe-2048/kvpr_n300.jsonl",
        dest / f"{init}.zarr",
        model=model,
        init=asdict(config.init(init)),
        task="kvpr",
        length=300,
        seed=config.seed,
        # 2 prompts per forward (600 // 300) where the streamed run forwarded 4: batch_tokens, an
        # execution key, leaves the stored values as they are
        settings={**config.section("extraction"), **config.execution("extraction"), "batch_tokens": 600},
        config_digest=config.extraction_digest("tiny-pythia", init, "kvpr", 300),
    )
    compute_token_metrics([store], dest / init, views=("hf", "residual"), debiased_cka=True, device="cpu")
    return open_store(store), dest / init


@pytest.mark.slow
def test_streamed_cell_equals_the_stored_one_and_fig3_forwards_only_token_prompts(
    tmp_path, scratch_project, run_snakemake
):
    root = scratch_project(tmp_path / "project")
    cfg = _cell_config("stream")
    (root / "cell.yaml").write_text(yaml.safe_dump(cfg))
    out = root / cfg["out_dir"]
    targets = [
        f"{cfg['out_dir']}/results/metrics/tiny-pythia/{i}/kvpr_n300/token_metrics" for i in ("pretrained", "xavier")
    ]
    run = run_snakemake(root, *targets, "--cores", "2", "--configfile=cell.yaml")
    assert run.returncode == 0, (run.stdout + run.stderr)[-4000:]
    ran = set(re.findall(r"rule (\w+):", run.stdout + run.stderr))
    assert "extract_activations" in ran and "token_metrics" not in ran, ran
    prompts = read_prompt_set(out / "data/prompts/nq-bpe-2048/kvpr_n300.jsonl")
    assert len(prompts) == N_PROMPTS
    for init in ("pretrained", "xavier"):
        streamed = open_store(out / f"results/activations/tiny-pythia/{init}/kvpr_n300.zarr")
        # the job's start-up before the extraction, by step (the rehearsal summaries split a job's
        # overhead with it): the process (interpreter, imports, Snakemake) took the longest here
        startup = streamed.attrs["timing"]["startup"]
        assert set(startup) == {"process", "prompts", "tokenizer", "gpu_wait", "model"}, startup
        assert all(v >= 0 for v in startup.values()) and startup["process"] > 0.5, startup
        # the job shares its kernel measurements with the run's other jobs (reprflow/kernels/kernel_cache.py)
        job_log = (out / f"logs/activations/tiny-pythia/{init}/kvpr_n300.log").read_text()
        assert f"cached in {(out / 'logs' / 'kernel_cache.json').resolve()}" in job_log, job_log[-2000:]
        stored, reference = _store_then_compute(root, cfg, init, tmp_path / "store")
        n = N_TOKEN if init == "xavier" else N_PROMPTS  # fig3: only the token prompts are forwarded
        for group, tokens in ((stored, "store"), (streamed, "stream")):
            assert group["last"].shape[1] == n, (init, tokens)
            assert group["tokens"].shape[1] == (N_TOKEN if tokens == "store" else 0), (init, tokens)
            assert group.attrs["tokens"] == tokens
        if init == "xavier":  # the fig3 cell's samples are the full cell's token prompts, in order
            ids = token_prompt_ids(N_PROMPTS, N_TOKEN)
            assert streamed.attrs["prompt_indices"] == ids
            assert list(streamed["labels"][:]) == [int(prompts[i]["label"]) for i in ids]
        np.testing.assert_allclose(streamed["last"][...], stored["last"][...], rtol=1e-5, atol=1e-6)
        written = out / f"results/metrics/tiny-pythia/{init}/kvpr_n300/token_metrics"
        names = sorted(p.name for p in reference.iterdir())
        assert names == sorted(p.name for p in written.iterdir() if not p.name.startswith(".")), names
        assert len(names) >= 8, names
        for name in names:
            a, b = reference / name, written / name
            if name.endswith(".npy"):
                np.testing.assert_allclose(np.load(b), np.load(a), rtol=1e-5, atol=1e-6, err_msg=f"{init}/{name}")
            elif name.endswith(".csv"):
                x, y = pd.read_csv(a), pd.read_csv(b)
                cols = [c for c in x.columns if x[c].dtype.kind == "f"]
                assert cols and list(x["n_prompts"]) == list(y["n_prompts"]) == [N_TOKEN] * len(x)
                np.testing.assert_allclose(
                    y[cols].to_numpy(), x[cols].to_numpy(), rtol=1e-5, atol=1e-6, err_msg=f"{init}/{name}"
                )
            else:
                x, y = json.loads(a.read_text()), json.loads(b.read_text())
                assert y["provenance"]["tokens"] == "stream"
                for view in ("hf", "residual"):
                    for key, value in x[view].items():
                        np.testing.assert_allclose(
                            y[view][key], value, rtol=1e-5, atol=1e-6, err_msg=f"{init}/{name}/{view}/{key}"
                        )
