"""Codec/chunking choice for activation stores: write and read speed vs size.

Compares, on float16 activation-like data of one window of ``last`` and the full token
states of a few prompts:

* ``reprflow-default``: no codec, chunks aligned with the writer (``tokens``
  [1, 1, min(T, 1024), hidden]) and ``write_empty_chunks=True`` -- what the store writes;
* ``blosc-zstd1``: same, with Blosc zstd level 1 + byte shuffle (``compress=True``);
* ``blosc-zstd3``: same, with zstd level 3 + shuffle;
* ``no-codec-scan``: no codec but zarr's default ``write_empty_chunks=False``, which
  scans every chunk for the fill value before writing it;
* ``zarr-default``: what a user gets from ``zarr.create_array(..., chunks="auto")``
  with zarr's default codec (zstd level 0, no shuffle);
* ``np.save``: one uncompressed .npy per array.

Data: ``synthetic`` is normal noise with log-normal per-channel scales and a 50x
first-token outlier (the "massive activations" of trained Transformers);
``tiny-neox`` is real captured states of the tiny random GPT-NeoX demo model.

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
from zarr.codecs import BloscCodec


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
        model = load_model(str(build_tiny_model("gpt_neox", out_dir=tmp / "m", seed=0)),
                           init=InitSpec("pretrained"), seed=None)
        ids = torch.randint(0, 50000, (1, t), generator=torch.Generator().manual_seed(0))
        cap = forward_states(model, ids, torch.ones_like(ids), token_rows=[0])
        return cap.tokens[:, 0].float().numpy().astype(np.float16)  # [K, t, hidden]
    finally:
        shutil.rmtree(tmp)


def write_read(x: np.ndarray, root: Path, how: str) -> tuple[float, float, int]:
    """Seconds to write, seconds to read back, bytes on disk."""
    path = root / f"{how}.zarr"
    k, t, h = x.shape
    codecs = {
        "reprflow-default": None,
        "blosc-zstd1": [BloscCodec(cname="zstd", clevel=1, shuffle="shuffle")],
        "blosc-zstd3": [BloscCodec(cname="zstd", clevel=3, shuffle="shuffle")],
        "no-codec-scan": None,
    }
    t0 = time.perf_counter()
    if how == "np.save":
        path.mkdir()
        np.save(path / "x.npy", x)
        t1 = time.perf_counter()
        y = np.load(path / "x.npy")
    else:
        if how == "zarr-default":
            arr = zarr.create_array(str(path), shape=x.shape, dtype=x.dtype, chunks="auto")
        else:
            arr = zarr.create_array(str(path), shape=x.shape, dtype=x.dtype,
                                    chunks=(1, min(t, 1024), h), compressors=codecs[how],
                                    config={"write_empty_chunks": how != "no-codec-scan"})
        arr[:] = x
        t1 = time.perf_counter()
        y = zarr.open_array(str(path), mode="r")[:]
    t2 = time.perf_counter()
    assert np.array_equal(x, y)
    size = sum(p.stat().st_size for p in path.rglob("*") if p.is_file())
    shutil.rmtree(path)
    return t1 - t0, t2 - t1, size


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--states", type=int, default=10)
    ap.add_argument("--tokens", type=int, default=1024)
    ap.add_argument("--hidden", type=int, default=1024)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    datasets = {
        "synthetic": synthetic(args.states, args.tokens, args.hidden),
        "tiny-neox": tiny_neox(args.tokens),
    }
    hows = ["reprflow-default", "blosc-zstd1", "blosc-zstd3", "no-codec-scan", "zarr-default", "np.save"]
    print("| data | shape | method | write MB/s | read MB/s | ratio | write time vs reprflow-default |")
    print("|---|---|---|---|---|---|---|")
    root = Path(tempfile.mkdtemp())
    try:
        for name, x in datasets.items():
            rows = {}
            for how in hows:
                runs = [write_read(x, root, how) for _ in range(args.repeats)]
                w = min(r[0] for r in runs)
                r = min(r[1] for r in runs)
                rows[how] = (w, r, runs[0][2])
            for how, (w, r, size) in rows.items():
                mb = x.nbytes / 1e6
                print(f"| {name} | {list(x.shape)} | {how} | {mb / w:.0f} | {mb / r:.0f} | "
                      f"{x.nbytes / size:.3f} | {w / rows['reprflow-default'][0]:.2f}x |")
    finally:
        shutil.rmtree(root)


if __name__ == "__main__":
    main()
