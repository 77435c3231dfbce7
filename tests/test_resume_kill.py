"""CPU proof of resumability: SIGKILL an extraction at several points, rerun, compare bytes.

The extraction runs in a forked child process (fork keeps the already imported torch,
transformers and the loaded tiny model, so a run starts in milliseconds instead of the
seconds a fresh interpreter needs). Its progress is read from the partial store's window
markers (``_done/c/<w>`` files). After each kill no final-named store may exist; the
store completed by the reruns must be identical, file by file, to the store of an
uninterrupted run (group attrs equal except ``timing``).
"""

from __future__ import annotations

import multiprocessing
import re
import time
from pathlib import Path

import pytest
import torch
import zarr

from reprflow.extract import extract_activations
from reprflow.models.init_schemes import InitSpec
from reprflow.models.registry import load_model
from reprflow.models.tiny import build_tiny_model
from reprflow.prompts.tokenizers import load_tokenizer
from reprflow.store import open_store, partial_path

N_PROMPTS, N_WINDOWS = 16, 8  # batch_size=2, window_batches=1: one window per batch
ATTRS = {
    "model": "tiny",
    "model_id": "tiny/gpt_neox",
    "revision": None,
    "family": "gpt_neox",
    "init": {"scheme": "pretrained", "params": {}},
    "task": "kvpr",
    "length": 300,
    "tokenizer": "gpt-neox-20b",
    "prompt_file": "kvpr_n300.jsonl",
    "prompt_sha256": "0" * 64,
}


def _worker(model, tokenizer, prompts, out: Path, delay: float) -> None:
    """Child process body: one extraction, optionally slowed down per forward pass."""
    torch.set_num_threads(1)  # same kernels in every child, so outputs are bitwise equal
    if delay:
        model.base_model.register_forward_pre_hook(lambda *a: time.sleep(delay))
    extract_activations(
        model,
        tokenizer,
        prompts,
        out,
        batch_size=2,
        window_batches=1,
        n_token_prompts=3,
        attrs=ATTRS,
        store_dtype="auto",
        progress=False,
    )


def _start(setup, out: Path, delay: float):
    proc = multiprocessing.get_context("fork").Process(target=_worker, args=(*setup, out, delay))
    proc.start()
    return proc


def _windows_done(out: Path) -> int:
    markers = partial_path(out) / "_done" / "c"
    return len([m for m in markers.iterdir() if m.name.isdigit()]) if markers.is_dir() else 0


def _kill_after(proc, out: Path, n_done: int, *, timeout: float = 60.0) -> int:
    """SIGKILL ``proc`` once at least ``n_done`` windows are marked done; return the count seen."""
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            done = _windows_done(out)
            if done >= n_done:
                proc.kill()  # SIGKILL
                proc.join()
                return done
            if not proc.is_alive():
                pytest.fail(f"worker exited (code {proc.exitcode}) before {n_done} windows")
            time.sleep(0.02)
        pytest.fail(f"worker did not reach {n_done} windows in {timeout} s")
    finally:
        if proc.is_alive():
            proc.kill()
            proc.join()


def _files(store: Path) -> dict[str, bytes]:
    return {str(p.relative_to(store)): p.read_bytes() for p in sorted(store.rglob("*")) if p.is_file()}


def test_killed_extraction_resumes_to_an_identical_store(tmp_path, capfd):
    model_dir = build_tiny_model("gpt_neox", out_dir=tmp_path / "model", seed=0, overrides={"num_hidden_layers": 2})
    model = load_model(str(model_dir), init=InitSpec("pretrained"), seed=None)
    tok = load_tokenizer("gpt-neox-20b")
    words = "alpha beta gamma delta key value pair middle".split()
    prompts = []
    for i in range(N_PROMPTS):
        text = " ".join(words[(i + j) % len(words)] for j in range(3 + (7 * i) % 11))
        prompts.append(
            {
                "id": f"p{i}",
                "task": "kvpr",
                "prompt": text,
                "label": i % 4,
                "n_items": 4,
                "n_tokens": len(tok(text)["input_ids"]),
                "answer": "x",
            }
        )
    setup = (model, tok, prompts)

    ref, out = tmp_path / "ref.zarr", tmp_path / "killed.zarr"
    reference = _start(setup, ref, 0.0)  # uninterrupted run
    reference.join(timeout=60)
    assert reference.exitcode == 0
    seen = _kill_after(_start(setup, out, 0.1), out, 1)
    assert not out.exists() and partial_path(out).exists()
    assert 1 <= seen < N_WINDOWS
    seen = _kill_after(_start(setup, out, 0.1), out, seen + 3)
    assert not out.exists() and partial_path(out).exists()
    assert seen < N_WINDOWS, "the second kill came too late to be mid-way"
    capfd.readouterr()
    final = _start(setup, out, 0.0)
    final.join(timeout=60)
    assert final.exitcode == 0
    # the resumed run says so on the console (stderr of the job), with how far the store was
    err = capfd.readouterr().err
    said = re.search(
        rf"reprflow: resuming {re.escape(str(partial_path(out)))}: (\d+) of {N_PROMPTS} prompts "
        rf"already written \((\d+) of {N_WINDOWS} windows\)",
        err,
    )
    assert said, err
    assert int(said[1]) == 2 * int(said[2]) and seen <= int(said[2]) < N_WINDOWS  # 2 prompts per window

    assert out.exists() and not partial_path(out).exists()
    got, want = _files(out), _files(ref)
    assert sorted(got) == sorted(want)
    differing = [name for name in want if name != "zarr.json" and got[name] != want[name]]
    assert differing == []  # every chunk, marker and array header byte-identical
    a, b = dict(open_store(out).attrs), dict(open_store(ref).attrs)
    assert a.pop("timing")["tokens"] < b.pop("timing")["tokens"]  # the last rerun did only the rest
    assert a == b
    assert a["complete"] is True and a["store_dtype"] == "float16" and a["dtype"] == "float32"
    assert zarr.open_group(out, mode="r")["_done"][:].all()
