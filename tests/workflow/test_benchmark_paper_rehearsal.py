"""benchmarks/paper_rehearsal.py on a run written by hand: two extraction jobs of one model (their
Snakemake benchmark files and their stores' ``timing`` attrs, ``startup`` included), summarised
and projected; the start-up table splits each job's time outside its loop by step."""

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _job(root: Path, key: str, wall_s: float, loop_s: float, startup: tuple[float, ...]) -> None:
    """One extraction job: its benchmark file (``wall_s``) and its store, whose loop took ``loop_s``
    at 1,000 tokens/s after ``startup`` seconds of (process, prompts, tokenizer, gpu_wait, model)."""
    timing = {"seconds": loop_s, "tokens_per_s": 1000.0, "tokens": 1000 * loop_s}
    timing["startup"] = dict(zip(("process", "prompts", "tokenizer", "gpu_wait", "model"), startup))
    bench = root / "logs" / "benchmarks" / "activations" / f"{key}.tsv"
    bench.parent.mkdir(parents=True, exist_ok=True)
    bench.write_text(f"s\th:m:s\tmax_rss\n{wall_s}\t0:00:{wall_s:02.0f}\t1000\n")
    store = root / "results" / "activations" / f"{key}.zarr"
    (store / "last").mkdir(parents=True)
    (store / "last" / "c0").write_bytes(b"x" * 1000)
    attrs = {"timing": timing, "n_samples": 10, "store_dtype": "float16"}
    (store / "zarr.json").write_text(json.dumps({"attributes": attrs}))


def _project(root: Path, *extra: str) -> list[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "paper_rehearsal.py"), "--root", str(root)]
        + ["--n-prompts", "10", "--n-token-prompts", "2", "--full-prompts", "100", "--full-token-prompts", "2"]
        + list(extra),
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stdout.splitlines()


def test_startup_splits_the_job_outside_its_loop(tmp_path):
    # 20 s, of which 5 s in the loop, 8 + 0.5 + 0.5 s before its claim, 0 s waiting, 3 s model, the
    # rest 3 s; then 30 s, 10 s in the loop, 10 + 1 + 1 s, 2 s waiting for the GPU, 5 s model, 1 s
    _job(tmp_path, "m/random/kvpr_n300", 20, 5.0, (8.0, 0.5, 0.5, 0.0, 3.0))
    _job(tmp_path, "m/random/kvpr_n600", 30, 10.0, (10.0, 1.0, 1.0, 2.0, 5.0))
    lines = _project(tmp_path)
    head = lines.index(
        "| model | jobs | process to stage | prompts | tokenizer | waiting for a GPU | model load | rest outside the loop |"
    )
    # the means of the two jobs, step by step
    assert lines[head + 2] == "| m | 2 | 9.0 | 0.8 | 0.8 | 1.0 | 4.0 | 2.0 |"
    # the overheads (wall - loop) in the per-cell table: 15 s and 20 s
    assert any(line.startswith("| m/random/kvpr_n300 | 20 s | 5 s | 1.0K | 15 s |") for line in lines), lines
    assert any(line.startswith("| m/random/kvpr_n600 | 30 s | 10 s | 1.0K | 20 s |") for line in lines), lines
    # projected GPU time (no --rates: the job's own rate, x10 prompts): overhead less the GPU wait
    # + 10 x the loop: (15 + 50) + (18 + 100) = 183 s
    assert "- extraction jobs: 2, 0.05 GPU-hours (longest job 118 s)" in lines
    # --start-ahead: the start-up before the claim (9 s and 12 s) overlaps the GPU's previous job
    lines = _project(tmp_path, "--start-ahead")
    assert "- extraction jobs: 2, 0.04 GPU-hours (longest job 106 s)" in lines


def test_fig3_cells_are_told_from_the_keys():
    """Summaries and console logs do not record an init's scope: a fig3 init is the one whose cells
    of a model sit at one length while the model has several (the rehearsal's `random` now)."""
    sys.path.insert(0, str(ROOT / "benchmarks"))
    from paper_rehearsal import fig3_cells

    keys = [f"m/pretrained-standin/{t}_n{n}" for t in ("kvpr", "mdqa") for n in (300, 2048)]
    keys += [f"m/{i}/{t}_n2048" for i in ("random", "he") for t in ("kvpr", "mdqa")]
    keys += ["one-length/random/kvpr_n2048"]  # a model run at one length only: nothing to tell apart
    assert fig3_cells(keys) == {f"m/{i}/{t}_n2048" for i in ("random", "he") for t in ("kvpr", "mdqa")}
