"""Codec/chunking choice for activation stores: write and read speed vs size.

Compares, on float16 activation-like data of one window of ``last`` and the full token
states of a few prompts:

* ``reprflow-default``: no compression, a crc32c checksum per chunk (zarr v3's ``crc32c``
  codec, verified on every read), chunks aligned with the writer (``tokens``
  [1, 1, min(T, 1024), hidden]) and ``write_empty_chunks=True`` -- what the store writes;
* ``no-checksum``: the same without the crc32c codec (what stores were before checksums);
* ``blosc-zstd1``: same as the default, with Blosc zstd level 1 + byte shuffle before the
  checksum (``compress=True``);
* ``blosc-zstd3``: same, with zstd level 3 + shuffle;
* ``no-codec-scan``: the default but with zarr's ``write_empty_chunks=False``, which
  scans every chunk for the fill value before writing it;
* ``zarr-default``: what a user gets from ``zarr.create_array(..., chunks="auto")``
  with zarr's default codec (zstd level 0, no shuffle);
* ``np.save``: one uncompressed .npy per array.

Data: ``synthetic`` is normal noise with log-normal per-channel scales and a 50x
first-token outlier (the "massive activations" of trained Transformers);
``tiny-neox`` is real captured states of the tiny random GPT-NeoX demo model.

Each repeat runs every method once, back to back; the table reports, per method, the median
over repeats of its time divided by ``no-checksum``'s time in the same repeat, with the range
(the machine is shared, so absolute speeds are noise), for CPU time (``process_time``, all
threads: the least disturbed by other jobs) and wall time, and the size ratio (raw / on disk).

Run: ``python benchmarks/store_codec.py [--hidden 1024] [--tokens 1024] [--states 10]``
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
import zarr
from zarr.codecs import BloscCodec, Crc32cCodec


def synthetic(k: int, t: int, h: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    scale = np.exp(rng.normal(0.0, 1.0, size=h)).astype(np.float32)
    x = rng.standard_normal((k, t, h)).astype(np.float32) * scale
    x[:, 0] *= 50.0
    return x.astype(np.float16)


def tiny_neox(t: int) -> np.ndarray:
    import torch

    from reprflow.capture import forward_states
    from reprflow.models.init_schemes import InitSpec
    from reprflow.models.registry import load_model
    from reprflow.models.tiny import build_tiny_model

    tmp = Path(tempfile.mkdtemp())
    try:
        model = load_model(
            str(build_tiny_model("gpt_neox", out_dir=tmp / "m", seed=0)), init=InitSpec("pretrained"), seed=None
        )
        ids = torch.randint(0, 50000, (1, t), generator=torch.Generator().manual_seed(0))
        cap = forward_states(model, ids, torch.ones_like(ids), token_rows=[0])
        return cap.tokens[:, 0].float().numpy().astype(np.float16)  # [K, t, hidden]
    finally:
        shutil.rmtree(tmp)


def write_read(x: np.ndarray, root: Path, how: str) -> tuple[float, float, int, float, float]:
    """Wall seconds to write, to read back, bytes on disk, CPU seconds (all threads) to write, to read."""
    path = root / f"{how}.zarr"
    k, t, h = x.shape
    codecs = {
        "reprflow-default": [Crc32cCodec()],
        "no-checksum": None,
        "blosc-zstd1": [BloscCodec(cname="zstd", clevel=1, shuffle="shuffle"), Crc32cCodec()],
        "blosc-zstd3": [BloscCodec(cname="zstd", clevel=3, shuffle="shuffle"), Crc32cCodec()],
        "no-codec-scan": [Crc32cCodec()],
    }
    c0, t0 = time.process_time(), time.perf_counter()
    if how == "np.save":
        path.mkdir()
        np.save(path / "x.npy", x)
        c1, t1 = time.process_time(), time.perf_counter()
        y = np.load(path / "x.npy")
    else:
        if how == "zarr-default":
            arr = zarr.create_array(str(path), shape=x.shape, dtype=x.dtype, chunks="auto")
        else:
            arr = zarr.create_array(
                str(path),
                shape=x.shape,
                dtype=x.dtype,
                chunks=(1, min(t, 1024), h),
                compressors=codecs[how],
                config={"write_empty_chunks": how != "no-codec-scan"},
            )
        arr[:] = x
        c1, t1 = time.process_time(), time.perf_counter()
        y = zarr.open_array(str(path), mode="r")[:]
    c2, t2 = time.process_time(), time.perf_counter()
    assert np.array_equal(x, y)
    size = sum(p.stat().st_size for p in path.rglob("*") if p.is_file())
    shutil.rmtree(path)
    return t1 - t0, t2 - t1, size, c1 - c0, c2 - c1


def _ratio(values: list[float]) -> str:
    """Median of per-repeat ratios, with their range (the CPU is shared: single runs are noise)."""
    return f"{np.median(values):.2f}x ({min(values):.2f}-{max(values):.2f})"


def crc32c_throughput(nbytes: int = 64 << 20, repeats: int = 5) -> float:
    """GB/s of google-crc32c (what zarr's crc32c codec computes per chunk, on write and on read)."""
    import google_crc32c

    data = np.random.default_rng(0).integers(0, 256, size=nbytes, dtype=np.uint8)
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        google_crc32c.value(data)
        best = min(best, time.perf_counter() - t0)
    return nbytes / best / 1e9


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--states", type=int, default=10)
    ap.add_argument("--tokens", type=int, default=1024)
    ap.add_argument("--hidden", type=int, default=1024)
    ap.add_argument("--repeats", type=int, default=9)
    args = ap.parse_args()
    datasets = {
        "synthetic": synthetic(args.states, args.tokens, args.hidden),
        "tiny-neox": tiny_neox(args.tokens),
    }
    hows = ["reprflow-default", "no-checksum", "blosc-zstd1", "blosc-zstd3", "no-codec-scan", "zarr-default", "np.save"]
    print("| data | shape | method | write CPU | read CPU | write wall | read wall | size ratio |")
    print("|---|---|---|---|---|---|---|---|")
    root = Path(tempfile.mkdtemp())
    try:
        for name, x in datasets.items():
            runs: dict[str, list] = {how: [] for how in hows}
            for _ in range(args.repeats):  # interleaved, so a burst of load hits every method alike
                for how in hows:
                    runs[how].append(write_read(x, root, how))
            base = runs["no-checksum"]
            for how, rs in runs.items():
                cells = [_ratio([a[i] / b[i] for a, b in zip(rs, base)]) for i in (3, 4, 0, 1)]
                print(f"| {name} | {list(x.shape)} | {how} | {' | '.join(cells)} | {x.nbytes / rs[0][2]:.3f} |")
    finally:
        shutil.rmtree(root)
    print(f"\ncrc32c alone: {crc32c_throughput():.1f} GB/s (google-crc32c, best of 5 over 64 MiB)")


if __name__ == "__main__":
    main()
