"""Store resume and locking through the real extraction (tiny model, CPU): a partial store killed at one
batch size resumes at another; a second writer of a store being written is refused with one line.

Extractions run in forked child processes (as in tests/test_resume_kill.py: fork keeps the loaded
model, and SIGKILL is a real kill), each with one torch thread, so that every run computes with the
same kernels and the values of equal batches are bitwise equal.
"""

from __future__ import annotations

import json
import multiprocessing
import re
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import zarr

from reprflow.cli import main
from reprflow.extract import extract_activations
from reprflow.models.init_schemes import InitSpec
from reprflow.models.registry import load_model
from reprflow.models.tiny import build_tiny_model
from reprflow.prompts.tokenizers import load_tokenizer
from reprflow.store import lock_path, open_store, partial_path

N_PROMPTS, N_TOKEN_PROMPTS, WINDOW_BATCHES = 24, 4, 2
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
WORDS = "alpha beta gamma delta key value pair middle of a long context".split()


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """(model, tokenizer, prompts, model folder): 24 prompts of varied lengths."""
    model_dir = build_tiny_model(
        "gpt_neox", out_dir=tmp_path_factory.mktemp("tiny") / "model", seed=0, overrides={"num_hidden_layers": 2}
    )
    model = load_model(str(model_dir), init=InitSpec("pretrained"), seed=None)
    tok = load_tokenizer("gpt-neox-20b")
    rng = np.random.default_rng(11)
    prompts = []
    for i in range(N_PROMPTS):
        text = " ".join(rng.choice(WORDS, size=int(rng.integers(3, 30))))
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
    return model, tok, prompts, model_dir


def _extract(model, tokenizer, prompts, out: Path, batch_size: int, delay: float) -> None:
    """Child process body: one extraction at ``batch_size``, optionally slowed per forward pass."""
    torch.set_num_threads(1)
    if delay:
        model.base_model.register_forward_pre_hook(lambda *a: time.sleep(delay))
    extract_activations(
        model,
        tokenizer,
        prompts,
        out,
        batch_size=batch_size,
        window_batches=WINDOW_BATCHES,
        n_token_prompts=N_TOKEN_PROMPTS,
        attrs=ATTRS,
        store_dtype="float32",
        progress=False,
    )


def _start(setup, out: Path, batch_size: int, delay: float = 0.0):
    model, tok, prompts, _ = setup
    ctx = multiprocessing.get_context("fork")
    proc = ctx.Process(target=_extract, args=(model, tok, prompts, out, batch_size, delay))
    proc.start()
    return proc


def _run(setup, out: Path, batch_size: int) -> None:
    proc = _start(setup, out, batch_size)
    proc.join(120)
    assert proc.exitcode == 0


def _markers(out: Path) -> list[int]:
    found = partial_path(out) / "_done" / "c"
    return sorted(int(m.name) for m in found.iterdir() if m.name.isdigit()) if found.is_dir() else []


def _kill_after(proc, out: Path, n_done: int, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    try:
        while len(_markers(out)) < n_done:
            if not proc.is_alive():
                pytest.fail(f"the extraction ended (code {proc.exitcode}) before {n_done} windows")
            if time.monotonic() > deadline:
                pytest.fail(f"no {n_done} windows in {timeout} s")
            time.sleep(0.01)
    finally:
        proc.kill()  # SIGKILL
        proc.join()


@pytest.mark.parametrize(("first", "then"), [(2, 4), (4, 2)], ids=["2-then-4", "4-then-2(after OOM)"])
def test_a_partial_store_killed_at_one_batch_size_resumes_at_another(setup, tmp_path, capfd, first, then):
    """Audit: `--batch-size 2` killed, rerun with `--batch-size 4`: the partial store was deleted
    ("a partial store from another run (spec.batch_size: 2 != 4)"). Now it is resumed with its own
    window layout. Every array is compared, bit for bit, with uninterrupted runs: each sample holds
    exactly what an uninterrupted run at the batch size that computed it stores (a window of the
    rerun that straddles a finished stored window recomputes it); labels, n_tokens and lengths are
    the fresh run's."""
    refs = {bs: tmp_path / f"fresh_bs{bs}.zarr" for bs in (first, then)}
    for bs, ref in refs.items():
        _run(setup, ref, bs)
    out = tmp_path / "killed.zarr"
    old_window, new_window = first * WINDOW_BATCHES, then * WINDOW_BATCHES
    n_old_windows = -(-N_PROMPTS // old_window)
    _kill_after(_start(setup, out, first, delay=0.05), out, 1)
    done = _markers(out)
    assert not out.exists() and 1 <= len(done) < n_old_windows, done
    assert done == list(range(len(done)))  # windows are written in order
    capfd.readouterr()
    _run(setup, out, then)
    err = capfd.readouterr().err
    assert "was deleted; starting over" not in err
    if len(done) * old_window >= new_window:  # at least one window of the rerun was already on disk
        assert re.search(rf"reprflow: resuming {re.escape(str(partial_path(out)))}: \d+ of {N_PROMPTS}", err), err

    # which samples the rerun computed: those of its windows not wholly inside finished stored windows
    on_disk = np.zeros(N_PROMPTS, dtype=bool)
    on_disk[: len(done) * old_window] = True
    rerun = np.zeros(N_PROMPTS, dtype=bool)
    for start in range(0, N_PROMPTS, new_window):
        if not on_disk[start : start + new_window].all():
            rerun[start : start + new_window] = True
    got, old, new = open_store(out), open_store(refs[first]), open_store(refs[then])
    for name in ("labels", "n_tokens", "lengths"):
        np.testing.assert_array_equal(got[name][:], new[name][:])
    want_last = np.where(rerun[None, :, None], new["last"][:], old["last"][:])
    assert np.array_equal(got["last"][:], want_last)  # bit for bit
    token_ids = got.attrs["token_prompt_ids"]
    assert token_ids == new.attrs["token_prompt_ids"] and len(token_ids) == N_TOKEN_PROMPTS
    for slot, pid in enumerate(token_ids):
        want = (new if rerun[pid] else old)["tokens"][:, slot]
        assert np.array_equal(got["tokens"][:, slot], want), pid
    # runs at other batch sizes agree to rounding (not bitwise: other batch shapes)
    np.testing.assert_allclose(got["last"][:], new["last"][:], rtol=1e-4, atol=1e-5)
    # the store keeps the layout it was created with
    assert got["last"].chunks[1] == old_window and got.attrs["writer"]["spec"]["batch_size"] == first
    assert got.attrs["timing"]["batch_size"] == then
    assert zarr.open_group(out, mode="r")["_done"][:].all()
    assert not partial_path(out).exists() and not lock_path(out).exists()


def _blocked_cli(args: list[str], after_forwards: int, go) -> None:
    """Child process body: `reprflow extract ARGS`, pausing before forward pass ``after_forwards`` until ``go``."""
    import reprflow.extract as extract_module

    torch.set_num_threads(1)
    forward, calls = extract_module.forward_states, [0]

    def gated(*a, **kw):
        calls[0] += 1
        if calls[0] > after_forwards:
            go.wait()
        return forward(*a, **kw)

    extract_module.forward_states = gated
    raise SystemExit(main(args))


def test_a_second_extraction_of_the_same_store_is_refused_in_one_line(setup, tmp_path, capfd):
    """Audit: the same `reprflow extract` twice at once; the second died with a 40-line KeyError
    traceback and left a stray .partial next to the complete store. Now it says, in one line,
    which process writes the store, and changes nothing; once that process is killed, a rerun
    resumes its partial store (the kernel dropped the lock)."""
    _, _, prompts, model_dir = setup
    prompt_file = tmp_path / "prompts.jsonl"
    prompt_file.write_text("".join(json.dumps({"prompt": p["prompt"], "label": p["label"]}) + "\n" for p in prompts))
    out = tmp_path / "cc.zarr"
    args = ["-q", "extract", str(prompt_file), str(model_dir), "-o", str(out), "--tokenizer", "gpt-neox-20b"]
    args += ["--device", "cpu", "--batch-size", "2"]  # windows of 16 prompts (window_batches 8)
    ctx = multiprocessing.get_context("fork")
    go = ctx.Event()
    first = ctx.Process(target=_blocked_cli, args=(args, 8, go))  # writes window 0, then waits
    first.start()
    try:
        deadline = time.monotonic() + 120
        while _markers(out) != [0]:
            assert first.is_alive() and time.monotonic() < deadline, "the first extraction did not write window 0"
            time.sleep(0.02)
        before = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*"))
        capfd.readouterr()
        assert main(args) == 1
        err = capfd.readouterr().err.strip()
        assert err == (
            f"reprflow extract: error: {out} is being written by another process (PID {first.pid}); "
            "wait for it or stop it"
        )
        assert sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*")) == before  # nothing touched
        assert first.is_alive()
    finally:
        first.kill()  # SIGKILL while it waits
        first.join()
    assert not out.exists() and partial_path(out).exists()
    assert main(args[1:]) == 0  # not -q: the resume is said on the console
    err = capfd.readouterr().err
    assert f"reprflow: resuming {partial_path(out)}: 16 of {N_PROMPTS} prompts already written" in err, err
    assert open_store(out)["last"].shape[1] == N_PROMPTS
    assert not partial_path(out).exists() and not lock_path(out).exists()
    assert main(["-q", *args[1:]]) == 0  # a rerun on the complete store: nothing to do, nothing left behind
    assert not lock_path(out).exists()


def test_probe_of_a_prompt_file_or_model_folder_is_no_store_and_not_to_be_deleted(setup, tmp_path, capsys):
    """Audit: `reprflow probe good.jsonl -o p.csv` told the user to `rm -r good.jsonl`."""
    _, _, _, model_dir = setup
    prompts = tmp_path / "good.jsonl"
    prompts.write_text('{"prompt": "a b c", "label": 0}\n')
    empty = tmp_path / "empty"
    empty.mkdir()
    for path in (prompts, model_dir, empty):
        assert main(["-q", "probe", str(path), "-o", str(tmp_path / "p.csv")]) == 1
        err = capsys.readouterr().err.strip()
        assert err == (
            f"reprflow probe: error: {path} is not a reprflow store (a directory written by "
            "`reprflow extract` or the workflow)"
        )
        assert "rm -r" not in err and path.exists()
    assert not (tmp_path / "p.csv").exists()
