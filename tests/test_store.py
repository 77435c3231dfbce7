"""Tests for reprflow.store: contract shapes/attrs, completeness checks, float16 guard, shards."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest
import zarr

from reprflow.errors import StoreError
from reprflow.store import (
    DIMS,
    ConcatArray,
    StoreSpec,
    StoreWriter,
    open_sharded,
    open_store,
    partial_path,
    shard_path,
    shard_range,
)

K, HIDDEN, N = 4, 6, 11
TOKEN_IDS = (0, 2, 3)
LENGTHS = np.array([5, 3, 7])  # per token prompt
MAX_LEN = 7


def _attrs() -> dict:
    return {
        "model": "tiny",
        "model_id": "local/tiny",
        "revision": None,
        "family": "gpt_neox",
        "init": {"scheme": "pretrained"},
        "task": "kvpr",
        "length": 300,
        "tokenizer": "gpt-neox-20b",
        "prompt_file": "data/prompts/gpt-neox-20b/kvpr_n300.jsonl",
        "prompt_sha256": "0" * 64,
        "state_names": ["embed", "block_1", "block_2", "final_norm"],
        "views": {"hf": [0, 1, 3], "residual": [0, 1, 2]},
        "dtype": "float32",
    }


def _data(seed: int = 0, scale: float = 1.0):
    rng = np.random.default_rng(seed)
    last = (rng.standard_normal((K, N, HIDDEN)) * scale).astype(np.float32)
    tokens = {
        pid: (rng.standard_normal((K, int(n), HIDDEN)) * scale).astype(np.float32)
        for pid, n in zip(TOKEN_IDS, LENGTHS)
    }
    labels = rng.integers(0, 5, size=N)
    n_tokens = rng.integers(3, 9, size=N)
    return last, tokens, labels, n_tokens


def _write(path: Path, last, tokens, labels, n_tokens, *, start=0, stop=N, store_dtype="float32",
           batch_size=2, window_batches=2, stop_after=None, compress=False) -> StoreWriter:
    ids = tuple(i for i in TOKEN_IDS if start <= i < stop)
    spec = StoreSpec(
        n_states=K, hidden=HIDDEN, n_samples_total=N, sample_start=start, sample_stop=stop,
        batch_size=batch_size, window_batches=window_batches, token_prompt_ids=ids,
        max_len=MAX_LEN, store_dtype=store_dtype, compress=compress,
    )
    writer = StoreWriter(
        path, spec, attrs=_attrs(), labels=labels[start:stop], n_tokens=n_tokens[start:stop],
        lengths=np.array([LENGTHS[TOKEN_IDS.index(i)] for i in ids], dtype=np.int64),
        content_sha256=hashlib.sha256(b"x").hexdigest(),
    )
    if writer.open():
        return writer
    for count, w in enumerate(writer.pending_windows()):
        if stop_after is not None and count == stop_after:
            return writer
        a, b = spec.window_range(w)
        writer.write_window(w, last[:, a:b], {i: tokens[i] for i in spec.window_token_ids(w)})
    writer.finalize({"timing": {"seconds": 1.0}})
    return writer


def test_store_follows_the_contract(tmp_path):
    last, tokens, labels, n_tokens = _data()
    path = tmp_path / "kvpr_n300.zarr"
    _write(path, last, tokens, labels, n_tokens)
    assert not partial_path(path).exists()
    g = open_store(path)
    for name, dims in DIMS.items():
        assert tuple(g[name].metadata.dimension_names) == dims
    assert g["last"].shape == (K, N, HIDDEN)
    assert g["tokens"].shape == (K, len(TOKEN_IDS), MAX_LEN, HIDDEN)
    assert g["labels"].dtype == np.int64 and g["lengths"].dtype == np.int64
    np.testing.assert_array_equal(g["last"][:], last)
    np.testing.assert_array_equal(g["labels"][:], labels)
    np.testing.assert_array_equal(g["n_tokens"][:], n_tokens)
    np.testing.assert_array_equal(g["lengths"][:], LENGTHS)
    for j, pid in enumerate(TOKEN_IDS):
        np.testing.assert_array_equal(g["tokens"][:, j, : LENGTHS[j]], tokens[pid])
        assert not g["tokens"][:, j, LENGTHS[j]:].any()  # zero padded past lengths
    attrs = dict(g.attrs)
    assert attrs["complete"] is True
    assert attrs["token_prompt_ids"] == list(TOKEN_IDS)
    assert attrs["store_dtype"] == "float32" and attrs["model"] == "tiny"
    assert attrs["timing"] == {"seconds": 1.0}
    # chunks align with windows (batch_size * window_batches = 4 samples) and whole prompts
    assert g["last"].chunks == (1, 4, HIDDEN)
    assert g["tokens"].chunks == (1, 1, MAX_LEN, HIDDEN)
    # every chunk is written (no fill-value scan), so each window left K chunk files of `last`
    assert len([f for f in (path / "last" / "c").rglob("*") if f.is_file()]) == K * 3


def test_all_zero_window_is_written_not_skipped(tmp_path):
    last, tokens, labels, n_tokens = _data()
    last[:, 4:8] = 0.0  # window 1 all zeros: still written (write_empty_chunks), still readable
    path = tmp_path / "z.zarr"
    _write(path, last, tokens, labels, n_tokens)
    assert all((path / "last" / "c" / str(k) / "1" / "0").is_file() for k in range(K))
    np.testing.assert_array_equal(open_store(path)["last"][:], last)


def test_open_store_rejects_missing_partial_and_incomplete(tmp_path):
    last, tokens, labels, n_tokens = _data()
    path = tmp_path / "pythia" / "pretrained" / "kvpr_n2048.zarr"
    with pytest.raises(StoreError, match="store not found"):
        open_store(path)
    _write(path, last, tokens, labels, n_tokens, stop_after=1)  # killed after one window
    assert partial_path(path).exists() and not path.exists()
    with pytest.raises(StoreError, match=r"\.partial store; rerun to resume"):
        open_store(path)
    # a store whose attrs lack 'complete' (e.g. copied from a killed run)
    g = zarr.open_group(path, mode="w", attributes={"model": "x"})
    del g
    with pytest.raises(StoreError) as err:
        open_store(path)
    assert str(err.value) == f"{path}: attr 'complete' missing (killed run?); delete it or rerun"
    zarr.open_group(path, mode="w", attributes={"complete": False})
    with pytest.raises(StoreError, match="attr 'complete' is False"):
        open_store(path)


def test_resume_skips_written_windows_and_matches_one_shot(tmp_path):
    last, tokens, labels, n_tokens = _data()
    one = tmp_path / "one.zarr"
    _write(one, last, tokens, labels, n_tokens)
    two = tmp_path / "two.zarr"
    first = _write(two, last, tokens, labels, n_tokens, stop_after=2)
    assert first.pending_windows() == [2]
    # the rerun must not need the data of finished windows: poison them
    poisoned = last.copy()
    poisoned[:, :8] = np.nan
    _write(two, poisoned, tokens, labels, n_tokens)
    np.testing.assert_array_equal(open_store(two)["last"][:], last)
    # a rerun on the complete store is a no-op (poisoned data is never written), also with
    # other chunking; other content (labels) rewrites it
    assert _write(two, poisoned * 0 + np.nan, tokens, labels, n_tokens).group is None
    assert _write(two, poisoned * 0 + np.nan, tokens, labels, n_tokens, batch_size=3).group is None
    _write(two, last + 1, tokens, labels + 1, n_tokens)
    np.testing.assert_array_equal(open_store(two)["last"][:], last + 1)


def test_compressed_store_round_trips(tmp_path):
    last, tokens, labels, n_tokens = _data()
    path = tmp_path / "z.zarr"
    _write(path, last, tokens, labels, n_tokens, compress=True)
    g = open_store(path)
    assert "blosc" in str(g["last"].metadata.codecs).lower()
    np.testing.assert_array_equal(g["last"][:], last)
    np.testing.assert_array_equal(g["tokens"][:, 1, :3], tokens[2])


def test_mismatching_partial_is_restarted(tmp_path):
    last, tokens, labels, n_tokens = _data()
    path = tmp_path / "s.zarr"
    _write(path, last, tokens, labels, n_tokens, stop_after=1)
    other_labels = labels + 1  # different prompt content -> different fingerprint
    _write(path, last, tokens, other_labels, n_tokens)
    np.testing.assert_array_equal(open_store(path)["labels"][:], other_labels)
    np.testing.assert_array_equal(open_store(path)["last"][:], last)


def test_auto_dtype_picks_float16_for_small_and_float32_for_big_values(tmp_path):
    last, tokens, labels, n_tokens = _data(scale=1.0)
    small = tmp_path / "small.zarr"
    _write(small, last, tokens, labels, n_tokens, store_dtype="auto")
    g = open_store(small)
    assert g["last"].dtype == np.float16 and g.attrs["store_dtype"] == "float16"
    check = g.attrs["dtype_check"]
    assert check["observed_max_abs"] == pytest.approx(
        max(np.abs(last[:, :4]).max(), np.abs(tokens[0]).max(), np.abs(tokens[2]).max(), np.abs(tokens[3]).max())
    )
    np.testing.assert_allclose(g["last"][:].astype(np.float64), last, rtol=1e-3, atol=1e-3)

    big = tmp_path / "big.zarr"
    last_big = last.copy()
    last_big[0, 0, 0] = 20000.0  # 20000 * headroom 4 > 65504
    _write(big, last_big, tokens, labels, n_tokens, store_dtype="auto")
    g = open_store(big)
    assert g["last"].dtype == np.float32 and g.attrs["store_dtype"] == "float32"
    np.testing.assert_array_equal(g["last"][:], last_big)


def test_float16_overflow_raises_and_names_the_window(tmp_path):
    last, tokens, labels, n_tokens = _data()
    last[1, 9, 2] = 70000.0  # in window 2 (samples 8..11)
    path = tmp_path / "f16.zarr"
    with pytest.raises(StoreError, match=r"window 2 \(samples 8\.\.11\).*overflows float16.*store_dtype: float32"):
        _write(path, last, tokens, labels, n_tokens, store_dtype="float16")
    assert not path.exists()
    # auto mode decided float16 on window 0; a later overflowing window raises too
    with pytest.raises(StoreError, match="window 2.*store_dtype: float32"):
        _write(tmp_path / "auto.zarr", last, tokens, labels, n_tokens, store_dtype="auto")
    # the token states are checked as well
    last, tokens, labels, n_tokens = _data()
    tokens[3][0, 1, 1] = -65504.0
    with pytest.raises(StoreError, match=r"'tokens' \(prompt 3\).*overflows float16"):
        _write(tmp_path / "tok.zarr", last, tokens, labels, n_tokens, store_dtype="float16")


def test_non_finite_values_always_raise(tmp_path):
    last, tokens, labels, n_tokens = _data()
    last[2, 5, 0] = np.nan
    with pytest.raises(StoreError, match=r"window 1 .*non-finite"):
        _write(tmp_path / "nan.zarr", last, tokens, labels, n_tokens, store_dtype="float32")
    last, tokens, labels, n_tokens = _data()
    tokens[0][0, 0, 0] = np.inf
    with pytest.raises(StoreError, match="non-finite"):
        _write(tmp_path / "inf.zarr", last, tokens, labels, n_tokens, store_dtype="auto")


def test_shard_ranges_cover_and_paths():
    ranges = [shard_range(11, i, 3) for i in range(3)]
    assert ranges[0][0] == 0 and ranges[-1][1] == 11
    assert all(a[1] == b[0] for a, b in zip(ranges, ranges[1:]))
    assert shard_path(Path("r/kvpr_n300.zarr"), 1, 3) == Path("r/kvpr_n300_shard1of3.zarr")
    with pytest.raises(StoreError):
        shard_range(11, 3, 3)


def test_sharded_view_equals_one_shot_store(tmp_path):
    last, tokens, labels, n_tokens = _data()
    one = tmp_path / "kvpr_n300.zarr"
    _write(one, last, tokens, labels, n_tokens)
    paths = []
    for i in range(3):
        start, stop = shard_range(N, i, 3)
        paths.append(shard_path(one, i, 3))
        _write(paths[-1], last, tokens, labels, n_tokens, start=start, stop=stop)
    full = open_store(one)
    view = open_sharded(list(reversed(paths)))  # order of paths does not matter
    for name in ("last", "tokens", "labels", "n_tokens", "lengths"):
        assert view[name].shape == full[name].shape
        np.testing.assert_array_equal(np.asarray(view[name][...]), full[name][:])
    assert view.attrs["token_prompt_ids"] == list(TOKEN_IDS)
    # lazy indexing across shard boundaries, with ints, slices and index arrays
    np.testing.assert_array_equal(view["last"][2, 3:9], last[2, 3:9])
    np.testing.assert_array_equal(view["last"][:, np.array([10, 0, 5]), 1], last[:, [10, 0, 5], 1])
    np.testing.assert_array_equal(view["last"][1, 7], last[1, 7])
    np.testing.assert_array_equal(view["last"][..., ::2], last[..., ::2])
    np.testing.assert_array_equal(view["tokens"][:, 2, :7], full["tokens"][:, 2, :7])
    # a missing shard is refused
    with pytest.raises(StoreError, match="a shard is missing"):
        open_sharded(paths[:2])
    with pytest.raises(StoreError, match="missing or duplicated"):
        open_sharded([paths[0], paths[2]])


def test_concat_array_matches_numpy_concatenate():
    rng = np.random.default_rng(3)
    parts = [rng.standard_normal((2, n, 3)) for n in (3, 1, 4)]
    ref = np.concatenate(parts, axis=1)
    view = ConcatArray(parts, axis=1)
    assert view.shape == ref.shape
    for key in [(slice(None), slice(1, 7, 2)), (1, np.array([7, 0, 3])), (0, -1, 2), (Ellipsis, 0)]:
        np.testing.assert_array_equal(view[key], ref[key])


def test_resume_after_a_kill_between_array_creations(tmp_path):
    last, tokens, labels, n_tokens = _data()
    path = tmp_path / "s.zarr"
    _write(path, last, tokens, labels, n_tokens, stop_after=0)  # opened, nothing written
    # a kill after `tokens` was created but before `last`: a stray, half-made array
    zarr.open_group(partial_path(path), mode="r+").create_array("tokens", shape=(1,), dtype="float32")
    _write(path, last, tokens, labels, n_tokens)
    g = open_store(path)
    np.testing.assert_array_equal(g["last"][:], last)
    np.testing.assert_array_equal(g["tokens"][:, 0, :5], tokens[0])


def test_writer_refuses_attrs_it_owns(tmp_path):
    last, tokens, labels, n_tokens = _data()
    spec = StoreSpec(n_states=K, hidden=HIDDEN, n_samples_total=N, sample_start=0, sample_stop=N,
                     batch_size=2, window_batches=2, token_prompt_ids=TOKEN_IDS, max_len=MAX_LEN)
    with pytest.raises(StoreError, match=r"\['complete'\] are written by the store itself"):
        StoreWriter(tmp_path / "s.zarr", spec, attrs={**_attrs(), "complete": True}, labels=labels,
                    n_tokens=n_tokens, lengths=LENGTHS, content_sha256="x")
    with pytest.raises(StoreError, match=r"attrs missing \['dtype'\]"):
        StoreWriter(tmp_path / "s.zarr", spec, attrs={k: v for k, v in _attrs().items() if k != "dtype"},
                    labels=labels, n_tokens=n_tokens, lengths=LENGTHS, content_sha256="x")


def test_abs_peak_of_float16_matches_float32_and_flags_non_finite():
    from reprflow.store import abs_peak

    x = np.random.default_rng(0).normal(scale=300.0, size=(3, 50, 7)).astype(np.float16)
    assert abs_peak(x) == float(np.abs(x.astype(np.float32)).max())
    x[1, 2, 3] = -60000.0
    assert abs_peak(x) == 60000.0
    x[0, 0, 0] = np.inf
    assert abs_peak(x) == np.inf
    x[0, 0, 1] = np.nan
    assert np.isnan(abs_peak(x))
