"""Tests for reprflow.store: contract shapes/attrs, completeness checks, float16 guard, shards."""

from __future__ import annotations

import hashlib
import logging
import multiprocessing
import os
import re
import time
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
    lock_path,
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
        pid: (rng.standard_normal((K, int(n), HIDDEN)) * scale).astype(np.float32) for pid, n in zip(TOKEN_IDS, LENGTHS)
    }
    labels = rng.integers(0, 5, size=N)
    n_tokens = rng.integers(3, 9, size=N)
    return last, tokens, labels, n_tokens


def _write(
    path: Path,
    last,
    tokens,
    labels,
    n_tokens,
    *,
    start=0,
    stop=N,
    store_dtype="float32",
    batch_size=2,
    window_batches=2,
    stop_after=None,
    compress=False,
) -> StoreWriter:
    ids = tuple(i for i in TOKEN_IDS if start <= i < stop)
    spec = StoreSpec(
        n_states=K,
        hidden=HIDDEN,
        n_samples_total=N,
        sample_start=start,
        sample_stop=stop,
        batch_size=batch_size,
        window_batches=window_batches,
        token_prompt_ids=ids,
        max_len=MAX_LEN,
        store_dtype=store_dtype,
        compress=compress,
    )
    writer = StoreWriter(
        path,
        spec,
        attrs=_attrs(),
        labels=labels[start:stop],
        n_tokens=n_tokens[start:stop],
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
        assert not g["tokens"][:, j, LENGTHS[j] :].any()  # zero padded past lengths
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
    assert _write(two, poisoned, tokens, labels, n_tokens).resumed_windows == 2
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
    writer = _write(path, last, tokens, other_labels, n_tokens)
    assert writer.restart_reason == "labels, n_tokens or lengths differ" and writer.resumed_windows == 0
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


def test_concat_array_read_holds_one_copy_of_the_result():
    # A read concatenated the parts' pieces and then reordered them with np.take: three
    # copies of the result alive at once (a probe slab of 25,000 samples x 2560 x a group of
    # states, tripled). Each part's rows now go straight into the one output array, so the
    # peak is the result and one part's piece.
    import tracemalloc

    parts = [np.ones((4, n, 2560), np.float32) for n in (300, 400, 300)]
    view = ConcatArray(parts, axis=1)
    tracemalloc.start()
    try:
        out = view[0:4]
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert out.shape == (4, 1000, 2560)
    assert peak < 1.5 * out.nbytes, (peak, out.nbytes)
    shuffled = np.array([999, 0, 500, 300, 299])
    np.testing.assert_array_equal(view[1, shuffled], np.concatenate(parts, axis=1)[1, shuffled])


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
    spec = StoreSpec(
        n_states=K,
        hidden=HIDDEN,
        n_samples_total=N,
        sample_start=0,
        sample_stop=N,
        batch_size=2,
        window_batches=2,
        token_prompt_ids=TOKEN_IDS,
        max_len=MAX_LEN,
    )
    with pytest.raises(StoreError, match=r"\['complete'\] are written by the store itself"):
        StoreWriter(
            tmp_path / "s.zarr",
            spec,
            attrs={**_attrs(), "complete": True},
            labels=labels,
            n_tokens=n_tokens,
            lengths=LENGTHS,
            content_sha256="x",
        )
    with pytest.raises(StoreError, match=r"attrs missing \['dtype'\]"):
        StoreWriter(
            tmp_path / "s.zarr",
            spec,
            attrs={k: v for k, v in _attrs().items() if k != "dtype"},
            labels=labels,
            n_tokens=n_tokens,
            lengths=LENGTHS,
            content_sha256="x",
        )


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


# ---------------------------------------------------------------------- integrity
REBUILD = r"rm -r .*--forcerun"


def _float16_store(tmp_path: Path, *, compress: bool = False) -> tuple[Path, np.ndarray]:
    last, tokens, labels, n_tokens = _data()
    path = tmp_path / "kvpr_n300.zarr"
    _write(path, last, tokens, labels, n_tokens, store_dtype="float16", compress=compress)
    return path, last


@pytest.mark.parametrize("compress", [False, True])
def test_chunk_overwritten_with_plausible_float16_values_is_refused(tmp_path, compress):
    """Issue 10 item 13: same-size, plausible float16 bytes in a chunk used to read silently."""
    path, last = _float16_store(tmp_path, compress=compress)
    victim, donor = path / "last" / "c" / "1" / "0" / "0", path / "last" / "c" / "2" / "0" / "0"
    assert all(_has_crc32c_trailer(f) for f in (victim, donor))
    # the payload of another valid chunk (plausible float16 values), behind the victim's own checksum
    victim.write_bytes(donor.read_bytes()[:-4] + victim.read_bytes()[-4:])
    g = open_store(path)  # the damage is in the data: found when the chunk is read
    np.testing.assert_array_equal(g["last"][0], last[0].astype(np.float16))  # other chunks still read
    with pytest.raises(StoreError) as err:
        g["last"][1, :, :]
    msg = str(err.value)
    assert msg.startswith(f"{path}: array 'last', chunk (1, 0, 0) (file last/c/1/0/0) is damaged")
    assert "crc32c checksum does not match" in msg and re.search(REBUILD, msg)
    # through every read path the consumers use: oindex, np.asarray, the sharded view
    with pytest.raises(StoreError, match=r"array 'last', chunk \(1, 0, 0\)"):
        g["last"].oindex[[0, 1], :, 0]
    with pytest.raises(StoreError, match=r"array 'last', chunk \(1, 0, 0\)"):
        np.asarray(g["last"])
    with pytest.raises(StoreError, match=r"array 'last', chunk \(1, 0, 0\)"):
        open_sharded([path])["last"][1:3, 2]
    if not compress:  # the consumer of the issue (a probe accuracy moved 0.167 -> 0.292) now stops
        from reprflow.pipeline.probe_stage import run_probe_stage

        with pytest.raises(StoreError, match=rf"array 'last', chunk \(1, 0, 0\).*{REBUILD}"):
            run_probe_stage(path, tmp_path / "probes.csv", views=("hf",), epochs=2, seeds=(0,))
        assert not (tmp_path / "probes.csv").exists()


def test_chunk_rewritten_with_random_values_of_the_right_shape_is_refused(tmp_path):
    path, _ = _float16_store(tmp_path)
    victim = path / "tokens" / "c" / "2" / "1" / "0" / "0"  # state 2, token prompt 1
    size = victim.stat().st_size
    fake = np.random.default_rng(5).standard_normal((size - 4) // 2).astype(np.float16).tobytes()
    victim.write_bytes(fake + b"\0\0\0\0")  # right size, plausible values, no valid checksum
    g = open_store(path)
    with pytest.raises(StoreError, match=r"array 'tokens', chunk \(2, 1, 0, 0\) \(file tokens/c/2/1/0/0\)"):
        g["tokens"][:, 1, :3]
    np.testing.assert_array_equal(g["tokens"][:, 0, :5].shape, (K, 5, HIDDEN))  # prompt 0 unharmed
    # ... and the consumer (token metrics) stops with that one error
    from reprflow.pipeline.token_metrics import compute_token_metrics

    with pytest.raises(StoreError, match=rf"array 'tokens', chunk \(2, 1, 0, 0\).*{REBUILD}"):
        compute_token_metrics(path, tmp_path / "metrics", views=("hf",), debiased_cka=False)
    assert not (tmp_path / "metrics").exists() or not any((tmp_path / "metrics").rglob("*.csv"))


def test_truncated_chunk_names_store_array_and_chunk(tmp_path):
    path, _ = _float16_store(tmp_path)
    victim = path / "labels" / "c" / "0"
    victim.write_bytes(victim.read_bytes()[:-9])
    with pytest.raises(StoreError) as err:
        open_store(path)["labels"][:]
    assert str(err.value).startswith(
        f"{path}: array 'labels', chunk (0,) (file labels/c/0) is damaged: the file has {N * 8 + 4 - 9} bytes, "
        f"expected {N * 8 + 4} (truncated, or overwritten with other data)"
    )


def test_missing_chunk_file_is_refused_at_open(tmp_path):
    path, _ = _float16_store(tmp_path)
    (path / "last" / "c" / "3" / "2" / "0").unlink()  # would read as zeros
    with pytest.raises(StoreError, match=rf"array 'last' lacks 1 of its 12 chunk files \(last/c/3/2/0\).*{REBUILD}"):
        open_store(path)
    path, _ = _float16_store(tmp_path / "b")
    (path / "tokens" / "c" / "0" / "2" / "0" / "0").unlink()  # a real prompt's chunk, not padding
    with pytest.raises(StoreError, match=r"array 'tokens' lacks 1 of its 12 chunk files"):
        open_store(path)


def test_store_without_checksums_is_read_with_a_warning(tmp_path, monkeypatch):
    """Stores of older reprflow versions have no crc32c: readable, with a warning; a wrong-size
    chunk still names the store, array and chunk instead of numpy's `cannot reshape`."""
    import reprflow.store as store_module
    from reprflow.errors import StoreWarning

    monkeypatch.setattr(store_module, "_checksum_codecs", lambda: [])  # the writer before checksums
    monkeypatch.setattr(store_module, "CHUNK_CHECKSUM", None)
    path, last = _float16_store(tmp_path)
    monkeypatch.undo()
    assert not _has_crc32c_trailer(path / "last" / "c" / "0" / "0" / "0")
    with pytest.warns(StoreWarning, match=r"carry no chunk checksums.*rm -r"):
        g = open_store(path)
    np.testing.assert_array_equal(g["last"][:], last.astype(np.float16))
    victim = path / "last" / "c" / "0" / "1" / "0"
    victim.write_bytes(victim.read_bytes()[:10])
    with pytest.raises(
        StoreError,
        match=r"array 'last', chunk \(0, 1, 0\) \(file last/c/0/1/0\) is damaged: "
        r"the file has 10 bytes, expected 48",
    ):
        g["last"][:]
    # the writer does not reuse such a store: it rewrites it with checksums
    last2, tokens, labels, n_tokens = _data()
    _write(path, last2, tokens, labels, n_tokens, store_dtype="float16")
    assert _has_crc32c_trailer(path / "last" / "c" / "0" / "0" / "0")


def _has_crc32c_trailer(chunk: Path) -> bool:
    import google_crc32c

    data = chunk.read_bytes()
    return np.uint32(google_crc32c.value(data[:-4])).tobytes() == data[-4:]


def test_a_deferred_digest_creates_the_partial_store_at_the_first_write(tmp_path):
    """content_sha256 as a callable (the extraction's: it waits for the tokenizer thread): open()
    of a fresh store creates nothing and asks for no digest; the first write creates the partial
    store with the full fingerprint, which a writer given the digest itself resumes."""
    last, tokens, labels, n_tokens = _data()
    spec = StoreSpec(
        n_states=K,
        hidden=HIDDEN,
        n_samples_total=N,
        sample_start=0,
        sample_stop=N,
        batch_size=2,
        window_batches=2,
        token_prompt_ids=TOKEN_IDS,
        max_len=MAX_LEN,
        store_dtype="float32",
    )
    digest = hashlib.sha256(b"x").hexdigest()
    asked = []
    kwargs = dict(attrs=_attrs(), labels=labels, n_tokens=n_tokens, lengths=LENGTHS)
    path = tmp_path / "s.zarr"
    writer = StoreWriter(path, spec, content_sha256=lambda: asked.append(1) or digest, **kwargs)
    assert writer.open() is False
    assert not partial_path(path).exists() and asked == []  # a kill now leaves nothing
    assert writer.pending_windows() == [0, 1, 2] and writer.decided_dtype() is None
    writer.write_window(0, last[:, 0:4], {0: tokens[0], 2: tokens[2], 3: tokens[3]})
    assert partial_path(path).exists() and asked == [1]
    again = StoreWriter(path, spec, content_sha256=digest, **kwargs)  # the rerun after a kill
    assert again.open() is False and again.pending_windows() == [1, 2] and again.resumed_windows == 1
    other = StoreWriter(path, spec, content_sha256=lambda: "0" * 64, **kwargs)  # other token ids: restarted
    assert other.open() is False and "content_sha256" in other.restart_reason and other.pending_windows() == [0, 1, 2]


@pytest.mark.parametrize("kind", ["folder", "file"])
def test_output_path_holding_other_data_is_refused_and_kept(tmp_path, kind):
    path = tmp_path / "results"
    if kind == "folder":
        path.mkdir()
        (path / "thesis.tex").write_text("precious")
    else:
        path.write_text("precious")
    with pytest.raises(StoreError, match=r"results: exists and is a (folder|file).*would delete it"):
        _write(path, *_data())
    kept = path / "thesis.tex" if kind == "folder" else path
    assert kept.read_text() == "precious" and not partial_path(path).exists()
    path = tmp_path / "empty"
    path.mkdir()  # an empty folder (e.g. made by a scheduler) is no one's data
    _write(path, *_data())
    assert open_store(path).attrs["complete"]


# ---------------------------------------------------------------------- one writer at a time
def _hold_store(path: Path, ready, stop_after: int) -> None:
    """Child process body: open a writer on ``path``, write ``stop_after`` windows, then wait (to be killed)."""
    writer = _write(path, *_data(), stop_after=stop_after)  # holds the lock while it lives
    ready.set()
    time.sleep(600)
    writer.close()


def _start_holder(path: Path, stop_after: int = 1):
    ctx = multiprocessing.get_context("fork")
    ready = ctx.Event()
    proc = ctx.Process(target=_hold_store, args=(path, ready, stop_after), daemon=True)
    proc.start()
    assert ready.wait(60), "the child writer did not start"
    return proc


def _kill(proc) -> None:
    proc.kill()  # SIGKILL: no cleanup runs in the child
    proc.join(30)


def test_a_store_being_written_by_another_process_is_refused_until_it_dies(tmp_path):
    """Audit: two writers on one store; the second died in a KeyError traceback and left a stray
    .partial. Now it gets one StoreError naming the holder's PID, touches nothing, and the
    store resumes once the holder is killed (the kernel drops its flock)."""
    last, tokens, labels, n_tokens = _data()
    path = tmp_path / "cc.zarr"
    holder = _start_holder(path)
    try:
        lock = lock_path(path)
        assert lock == tmp_path / "cc.zarr.lock" and lock.read_text().strip() == str(holder.pid)
        before = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*"))
        with pytest.raises(StoreError) as err:
            _write(path, last, tokens, labels, n_tokens)
        assert str(err.value) == (
            f"{path} is being written by another process (PID {holder.pid}); wait for it or stop it"
        )
        assert sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*")) == before  # nothing touched
        # another shard of the same prompt set is another store: it is not blocked
        shard = shard_path(path, 1, 2)
        _write(shard, last, tokens, labels, n_tokens, start=6, stop=N)
        assert open_store(shard)["last"].shape == (K, N - 6, HIDDEN) and not lock_path(shard).exists()
    finally:
        _kill(holder)
    assert lock_path(path).exists() and partial_path(path).exists()  # a killed writer leaves both ...
    writer = _write(path, last, tokens, labels, n_tokens)  # ... and its rerun resumes at once
    assert writer.resumed_windows == 1 and writer.restart_reason is None
    np.testing.assert_array_equal(open_store(path)["last"][:], last)
    assert not lock_path(path).exists() and not partial_path(path).exists()


def test_the_lock_is_held_from_open_to_finalize_or_close(tmp_path):
    last, tokens, labels, n_tokens = _data()
    path = tmp_path / "s.zarr"
    writer = _write(path, last, tokens, labels, n_tokens, stop_after=1)
    assert lock_path(path).read_text().strip() == str(os.getpid())  # held while the writer lives
    writer.close()  # given up without finishing: unlocked, the file gone, the partial store kept
    assert not lock_path(path).exists() and partial_path(path).exists()
    writer.close()  # idempotent
    _write(path, last, tokens, labels, n_tokens)
    assert not lock_path(path).exists()
    done = _write(path, last, tokens, labels, n_tokens)  # complete store: open() is True, nothing held
    assert done.group is None and not lock_path(path).exists()


def test_a_second_writer_of_the_same_process_takes_the_store_over(tmp_path):
    """In one process a new writer (a rerun after an error) takes the lock over; the old one may no
    longer write."""
    last, tokens, labels, n_tokens = _data()
    path = tmp_path / "s.zarr"
    first = _write(path, last, tokens, labels, n_tokens, stop_after=1)
    second = _write(path, last, tokens, labels, n_tokens, stop_after=1)
    assert second.resumed_windows == 1 and lock_path(path).exists()
    with pytest.raises(StoreError, match=r"s\.zarr: another StoreWriter of this process has opened this store"):
        first.write_window(2, last[:, 8:11], {})
    first.close()  # the old writer no longer holds the lock: closing it releases nothing
    assert lock_path(path).exists()
    _write(path, last, tokens, labels, n_tokens)
    np.testing.assert_array_equal(open_store(path)["last"][:], last)
    assert not lock_path(path).exists()


# ---------------------------------------------------------------------- resume with other chunking
def test_a_partial_store_resumes_with_another_batch_size_and_keeps_its_layout(tmp_path, caplog):
    """Audit: changing the batch size discarded a killed partial store. Chunking is an execution
    setting: the partial store is resumed with its own windows (chunks of `last`, markers), the
    rerun's windows mapped onto them; a stored window is marked done only once all its samples
    are written, so a kill in between is safe."""
    last, tokens, labels, n_tokens = _data()
    path = tmp_path / "s.zarr"
    _write(path, last, tokens, labels, n_tokens, batch_size=2, window_batches=2, stop_after=1)  # windows of 4
    # rerun with windows of 6, killed after one: samples 0..6 written; stored window 1 (4..8) not whole
    caplog.set_level(logging.INFO, logger="reprflow.store")
    rerun = _write(path, last, tokens, labels, n_tokens, batch_size=3, window_batches=2, stop_after=1)
    assert rerun.restart_reason is None and rerun.resumed_windows == 1
    assert rerun.pending_windows() == [0, 1]  # by the markers on disk: samples 4, 5 are in an unfinished window
    assert zarr.open_group(partial_path(path))["_done"][:].tolist() == [True, False, False]
    assert "keeping the stored chunk layout" in caplog.text and "batch_size=2" in caplog.text
    assert "deleting it" not in caplog.text
    rerun.close()
    # a third run with windows of 1 sample must not need the samples of finished windows: poison them
    poisoned = last.copy()
    poisoned[:, :4] = np.nan
    final = _write(path, poisoned, tokens, labels, n_tokens, batch_size=1, window_batches=1)
    assert final.restart_reason is None and final.resumed_windows == 1
    g = open_store(path)
    np.testing.assert_array_equal(g["last"][:], last)
    for j, pid in enumerate(TOKEN_IDS):
        np.testing.assert_array_equal(g["tokens"][:, j, : LENGTHS[j]], tokens[pid])
    assert g["last"].chunks == (1, 4, HIDDEN)  # the layout of the run that created the store
    assert g.attrs["writer"]["spec"]["batch_size"] == 2 and zarr.open_group(path)["_done"][:].all()
    # the complete store is reused with any chunking, as before
    assert _write(path, poisoned * np.nan, tokens, labels, n_tokens, batch_size=5).group is None


# ---------------------------------------------------------------------- not a store
def test_a_path_that_is_no_store_is_not_advised_to_be_deleted(tmp_path):
    """Audit: `reprflow probe good.jsonl` was told to `rm -r good.jsonl`. Only a (damaged) store,
    a directory with zarr.json or a name ending in .zarr, gets the rebuild advice."""
    prompts = tmp_path / "good.jsonl"
    prompts.write_text('{"prompt": "a b c", "label": 0}\n')
    model = tmp_path / "model"
    model.mkdir()
    (model / "config.json").write_text("{}")
    empty = tmp_path / "empty"
    empty.mkdir()
    group = tmp_path / "other"
    zarr.open_group(group, mode="w", attributes={"made_by": "someone else"})
    for path in (prompts, model, empty, group):
        with pytest.raises(StoreError) as err:
            open_store(path)
        assert str(err.value) == (
            f"{path} is not a reprflow store (a directory written by `reprflow extract` or the workflow)"
        )
    damaged = tmp_path / "kvpr_n300.zarr"
    damaged.mkdir()
    (damaged / "zarr.json").write_text("{not json")
    with pytest.raises(StoreError, match=rf"kvpr_n300\.zarr: not a readable Zarr group .*{REBUILD}"):
        open_store(damaged)
    empty_store = tmp_path / "x.zarr"
    empty_store.mkdir()
    with pytest.raises(StoreError, match=rf"x\.zarr: not a readable Zarr group .*{REBUILD}"):
        open_store(empty_store)
