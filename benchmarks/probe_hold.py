"""How long a probe job holds its GPU at paper size: the store's reads against the training.

A probe job (``rules/probes.smk``) claims a GPU (``device: auto`` on a node with several) and
trains ``fit_layer_probes`` on the store's ``last`` array, group by group. This builds a
paper-size ``last`` (65 states x 25,000 samples x 2560, float16, chunked ``[1, window, hidden]``
with the store's codecs) in a zarr group on local disk, drops it from the page cache
(``posix_fadvise``), and times in one process, for each ``--max-batch-gib``:

* **read**: every group read from the store, nothing trained (what the reads cost alone);
* **fit from memory**: ``fit_layer_probes`` on the same values already decoded in host memory;
* **read, then fit**: the sum of the two, what a job held before the read-ahead (each group
  read, then trained; the GPU idle during the reads);
* **reprflow**: ``fit_layer_probes`` on the zarr array as the probe job runs it (the first group
  read before the claim, each next one read while the current one trains); the hold column
  excludes that first read.

The page cache is dropped before each timed read of the store, so every row reads from disk.

Usage (repository root)::

    PYTHONPATH=$PWD python benchmarks/probe_hold.py --device cuda [--max-batch-gib 2 16] [--work DIR]
    PYTHONPATH=$PWD python benchmarks/probe_hold.py --states 6 --samples 2000 --hidden 256 --device cpu
"""

from __future__ import annotations

import argparse
import math
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from reprflow.probes import _layers_per_group, fit_layer_probes  # noqa: E402
from reprflow.store import _compressors  # noqa: E402  (the store's own codecs)


def build_last(path: Path, *, states: int, samples: int, hidden: int, window: int, seed: int) -> object:
    """A zarr ``last`` array [states, samples, hidden] float16 of random states, chunked as the store's."""
    import zarr

    arr = zarr.create_array(
        path,
        shape=(states, samples, hidden),
        chunks=(1, window, hidden),
        dtype="float16",
        compressors=_compressors(False),
        overwrite=True,
    )
    gen = torch.Generator().manual_seed(seed)
    for k in range(states):
        arr[k] = torch.randn(samples, hidden, generator=gen).to(torch.float16).numpy()
    return arr


def drop_page_cache(path: Path) -> None:
    """Ask the kernel to forget the store's pages (no root needed), so the next read is from disk."""
    os.sync()
    for f in path.rglob("*"):
        if f.is_file():
            fd = os.open(f, os.O_RDONLY)
            try:
                os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
            finally:
                os.close(fd)


def group_size(args, max_batch_bytes: int) -> int:
    """States per group as ``fit_layer_probes`` sizes them at its defaults (5 seeds, val_fraction
    0.2, n_train 20000), so the timed reads use the fit's groups."""
    n_fit = min(20000, args.samples - math.ceil(0.2 * args.samples))
    return _layers_per_group(
        n_samples=args.samples,
        n_rows=args.samples,
        hidden=args.hidden,
        n_seeds=5,
        n_classes=args.classes,
        n_fit=n_fit,
        itemsize=2,
        max_batch_bytes=max_batch_bytes,
        n_layers=args.states,
    )


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--states", type=int, default=65)
    p.add_argument("--samples", type=int, default=25000)
    p.add_argument("--hidden", type=int, default=2560)
    p.add_argument("--classes", type=int, default=40)
    p.add_argument("--window", type=int, default=256, help="samples per chunk (the store's window)")
    p.add_argument("--epochs", type=int, default=150)
    p.add_argument("--max-batch-gib", type=float, nargs="+", default=[2.0, 16.0])
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--work", type=Path, default=None, help="where the store is written (default: a temp dir)")
    args = p.parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix="probe-hold-", dir=args.work))
    labels = np.random.default_rng(0).integers(0, args.classes, args.samples)
    fit = dict(epochs=args.epochs, device=args.device, progress=False)
    try:
        t0 = time.perf_counter()
        last = build_last(
            work / "last", states=args.states, samples=args.samples, hidden=args.hidden, window=args.window, seed=0
        )
        gib = args.states * args.samples * args.hidden * 2 / 2**30
        print(f"built {tuple(last.shape)} float16 ({gib:.2f} GiB) in {time.perf_counter() - t0:.1f} s", flush=True)
        fit_layer_probes(last[:1, :512], labels[:512], epochs=2, device=args.device, progress=False)  # warm-up
        device = torch.cuda.get_device_name() if args.device == "cuda" else "cpu"
        lines = [
            f"probe job at {args.states} states x {args.samples} samples x {args.hidden}, {args.classes} classes, "
            f"5 seeds, {args.epochs} epochs; {device}; store float16, chunks [1, {args.window}, {args.hidden}], "
            "read from disk (page cache dropped before each read)",
            "",
            "| max_batch_gib | states per group | read, s | fit from memory, s | read, then fit, s | "
            "reprflow, s | first group read, s | reprflow's GPU hold, s | hold saved |",
            "|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
        ]
        for max_gib in args.max_batch_gib:
            mbb = int(max_gib * 2**30)
            g = group_size(args, mbb)
            drop_page_cache(work)
            t0 = time.perf_counter()
            first = last[:g]
            t_first = time.perf_counter() - t0
            host = np.concatenate([first] + [last[k : k + g] for k in range(g, args.states, g)])
            t_read = time.perf_counter() - t0
            t0 = time.perf_counter()
            fit_layer_probes(host, labels, max_batch_bytes=mbb, **fit)
            t_mem = time.perf_counter() - t0
            del host
            drop_page_cache(work)
            t0 = time.perf_counter()
            fit_layer_probes(last, labels, max_batch_bytes=mbb, **fit)
            t_ours = time.perf_counter() - t0
            hold = t_ours - t_first
            lines.append(
                f"| {max_gib:g} | {g} | {t_read:.1f} | {t_mem:.1f} | {t_read + t_mem:.1f} | {t_ours:.1f} | "
                f"{t_first:.1f} | {hold:.1f} | {100 * (1 - hold / (t_read + t_mem)):.0f}% |"
            )
            print(lines[-1], flush=True)
        print("\n".join(lines))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
