"""Benchmark: per-layer probes, reprflow.probes.fit_layer_probes vs the loops a user writes.

Paper size: 65 states x 5 seeds x 150 epochs x 20K training samples x 2560 features x
~40 classes (N = 25000 samples, so a 0.2 validation split leaves 20000 for training).

Compared on the same machine, same features, same stratified splits:

* **ours**: ``fit_layer_probes`` -- all states and seeds in one batched program, one row per
  ``matmul_precision``: on CUDA ``tf32`` (the default, TF32 tensor cores) and ``float32``
  (exact IEEE products), timed in the same run; on CPU the two are identical, so one row.
* **sklearn loop**: for every (state, seed): ``StandardScaler`` on the training split, then
  ``LogisticRegression()`` (defaults: lbfgs, C=1, max_iter 100, float64), score
  on validation. What one writes with scikit-learn. Runs on the host CPU with all usable
  cores as BLAS/OpenMP threads (or ``--threads``); the row states the count.
* **torch loop**: for every (state, seed): z-score, ``nn.Linear`` + Adam (lr 0.05) for the
  same number of full-batch epochs, float32, on the same device as ours. The paper's
  protocol written naively.

Timing every (state, seed) of a loop is slow, so ``--loop-problems`` of them are timed and the
total is scaled linearly to K x S (every problem costs the same); the table says so. Ours is
timed over all K x S problems, after a tiny warm-up fit per precision (CUDA/cuBLAS start-up
is not timed). The table gives, for every row, the speed-up of the fastest "ours" row over
it and its speed-up over the sklearn loop. On a small shared CPU use a reduced size
(``--preset cpu``) and read the ratios; ``--preset paper --device cuda`` is the full size on
a GPU.

Usage::

    python benchmarks/probes.py --preset cpu
    python benchmarks/probes.py --preset paper --device cuda --max-batch-bytes 34359738368 --loop-problems 1
    python benchmarks/probes.py --states 8 --samples 5000 --features 512 --markdown out.md
"""

from __future__ import annotations

import argparse
import math
import os
import platform
import subprocess
import sys
import time
import warnings

import numpy as np
import torch
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression
from sklearn.preprocessing import StandardScaler
from threadpoolctl import threadpool_info, threadpool_limits

from reprflow.probes import DEFAULT_MAX_BATCH_BYTES, fit_layer_probes, stratified_split

PRESETS = {
    # states, samples, features, classes, seeds, epochs
    "paper": dict(states=65, samples=25000, features=2560, classes=40, seeds=5, epochs=150),
    "cpu": dict(states=6, samples=2500, features=256, classes=40, seeds=5, epochs=150),
}


def make_features(k: int, n: int, d: int, c: int, device: torch.device, *, seed: int = 0):
    """Synthetic float16 last-token states with a class signal that rises then falls with depth."""
    gen = torch.Generator(device=device).manual_seed(seed)
    labels = torch.randint(0, c, (n,), generator=gen, device=device)
    centres = torch.randn(c, d, generator=gen, device=device)
    feats = torch.empty(k, n, d, dtype=torch.float16, device=device)
    for i in range(k):
        strength = 0.15 * np.sin(np.pi * (i + 1) / (k + 1))
        x = torch.randn(n, d, generator=gen, device=device) + strength * centres[labels]
        feats[i] = x.to(torch.float16)
    return feats, labels.cpu().numpy()


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def sklearn_problem(x: np.ndarray, y: np.ndarray, tr: np.ndarray, va: np.ndarray, max_iter: int) -> tuple[float, int]:
    """One (state, seed): StandardScaler + LogisticRegression; returns (val accuracy, lbfgs iterations)."""
    scaler = StandardScaler().fit(x[tr])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        clf = LogisticRegression(max_iter=max_iter).fit(scaler.transform(x[tr]), y[tr])
    return float(clf.score(scaler.transform(x[va]), y[va])), int(clf.n_iter_[0])


def torch_problem(x: torch.Tensor, y: torch.Tensor, tr, va, *, epochs: int, lr: float, seed: int) -> float:
    xt, xv = x[tr].float(), x[va].float()
    mu, sd = xt.mean(0), xt.std(0, correction=0).clamp_min(1e-12)
    xt, xv = (xt - mu) / sd, (xv - mu) / sd
    torch.manual_seed(seed)  # benchmark script only: the naive loop seeds the global RNG
    lin = torch.nn.Linear(x.shape[1], int(y.max()) + 1).to(x.device)
    opt = torch.optim.Adam(lin.parameters(), lr=lr)
    for _ in range(epochs):
        opt.zero_grad()
        torch.nn.functional.cross_entropy(lin(xt), y[tr]).backward()
        opt.step()
    with torch.no_grad():
        return float((lin(xv).argmax(1) == y[va]).float().mean())


def usable_cores() -> int:
    """CPUs this process may run on (the affinity mask; os.cpu_count() where there is none)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def cpu_model() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as fh:
            cpu = next(line.split(":", 1)[1].strip() for line in fh if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return cpu


def native_threads() -> str:
    """Threads of the native pools numpy/scipy/sklearn use, e.g. 'openblas 16, openmp 16'."""
    pools = {}
    for info in threadpool_info():
        pools.setdefault(info["internal_api"], set()).add(info["num_threads"])
    return ", ".join(f"{api} {'/'.join(map(str, sorted(n)))}" for api, n in sorted(pools.items())) or "none found"


def machine(device: torch.device) -> str:
    out = (
        f"{cpu_model()}, {os.cpu_count()} CPUs ({usable_cores()} usable), "
        f"load average {os.getloadavg()[0]:.1f}, "
        f"torch {torch.__version__} ({torch.get_num_threads()} threads)"
    )
    if device.type == "cuda":
        out += f", GPU {torch.cuda.get_device_name(device)}"
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--preset", choices=sorted(PRESETS), default="cpu")
    for name in ("states", "samples", "features", "classes", "seeds", "epochs"):
        ap.add_argument(f"--{name}", type=int, help="override the preset")
    ap.add_argument("--device", default="cpu")
    ap.add_argument(
        "--source",
        choices=["host", "device"],
        default="host",
        help="features in host RAM (numpy, as read from a store) or already on the device",
    )
    ap.add_argument("--max-batch-bytes", type=int, default=DEFAULT_MAX_BATCH_BYTES)
    ap.add_argument("--loop-problems", type=int, default=2, help="(state, seed) problems timed per loop")
    ap.add_argument("--sk-max-iter", type=int, default=100, help="LogisticRegression max_iter (sklearn default 100)")
    ap.add_argument(
        "--threads",
        type=int,
        help="CPU threads for torch, BLAS and OpenMP (default: torch's default; the sklearn loop "
        "gets all usable cores)",
    )
    ap.add_argument(
        "--precision",
        choices=["tf32", "float32"],
        action="append",
        help="matmul_precision rows of ours (repeatable; default: tf32 and float32 on CUDA; "
        "on CPU both are float32, so one row)",
    )
    ap.add_argument("--skip", choices=["sklearn", "torch"], action="append", default=[])
    ap.add_argument("--repeats", type=int, default=1, help="best of this many runs of each method")
    ap.add_argument("--markdown", help="also write the table and context to this file")
    args = ap.parse_args()
    cfg = dict(PRESETS[args.preset])
    cfg.update({k: v for k in cfg if (v := getattr(args, k)) is not None})
    k, n, d, c, s, e = (cfg[x] for x in ("states", "samples", "features", "classes", "seeds", "epochs"))
    device = torch.device(args.device)
    seeds = tuple(range(s))
    if args.threads:
        torch.set_num_threads(args.threads)  # benchmark script: global settings are fine here
        threadpool_limits(args.threads)
    sk_threads = args.threads or usable_cores()
    precisions = list(dict.fromkeys(args.precision or ["tf32", "float32"]))
    if device.type != "cuda":  # no TF32 off CUDA: both would be the same float32 run
        if "tf32" in (args.precision or []):
            print(f"note: matmul_precision 'tf32' is IEEE float32 on {device.type}; timing one float32 row")
        precisions = ["float32"]
    print(f"machine: {machine(device)}")
    print(
        f"CPU: {cpu_model()}; {os.cpu_count()} CPUs, {usable_cores()} usable by this process; "
        f"native thread pools now: {native_threads()}"
    )

    t = time.perf_counter()
    feats, labels = make_features(
        k, n, d, c, device if args.source == "device" or device.type == "cuda" else torch.device("cpu")
    )
    if args.source == "host":
        feats = feats.cpu().numpy()
    _sync(device)
    print(f"features [{k}, {n}, {d}] float16 on {args.source}, {c} classes: made in {time.perf_counter() - t:.1f} s")

    rows = []  # (method, problems timed, iterations, time, est. all problems, how, is ours)
    results = {}
    for precision in precisions:
        # warm-up (CUDA context, cuBLAS handles and kernels for this precision): not timed
        n_warm = min(n, 2000)
        fit_layer_probes(
            feats[:1, :n_warm],
            labels[:n_warm],
            epochs=2,
            seeds=(0,),
            device=device,
            matmul_precision=precision,
            progress=False,
        )
        _sync(device)
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
            base_mem = torch.cuda.memory_allocated(device)
        best = math.inf
        for _ in range(args.repeats):
            _sync(device)
            t = time.perf_counter()
            res = fit_layer_probes(
                feats,
                labels,
                epochs=e,
                seeds=seeds,
                device=device,
                max_batch_bytes=args.max_batch_bytes,
                matmul_precision=precision,
                progress=False,
            )
            _sync(device)
            best = min(best, time.perf_counter() - t)
        results[precision] = res
        label = f"ours: fit_layer_probes (batched), {device.type} {res.matmul_precision}"
        rows.append((label, k * s, e, best, best, "measured", True))
        print(
            f"ours ({res.matmul_precision}): {best:.2f} s; mean val acc per state {np.round(res.mean, 3).tolist()}; "
            f"peak state {res.peak_layer}"
        )
        if device.type == "cuda":
            peak = (torch.cuda.max_memory_allocated(device) - base_mem) / 2**30
            print(
                f"ours ({res.matmul_precision}): peak GPU memory above the input {peak:.2f} GiB "
                f"(max_batch_bytes {args.max_batch_bytes / 2**30:.2f} GiB)"
            )
    if len(results) > 1:
        a, b = results["tf32"], results["float32"]
        print(
            f"tf32 vs float32: max |mean val acc difference| over states {np.max(np.abs(a.mean - b.mean)):.4f}, "
            f"max |val acc difference| over (seed, state) {np.max(np.abs(a.val_accuracy - b.val_accuracy)):.4f}, "
            f"peak state {a.peak_layer} vs {b.peak_layer}"
        )
    res = results.get("float32", next(iter(results.values())))

    problems = [(i % k, seeds[i % s]) for i in range(args.loop_problems)]
    splits = {sd: stratified_split(labels, val_fraction=0.2, n_train=20000, seed=sd) for sd in seeds}
    if "sklearn" not in args.skip:
        host = feats.cpu().numpy() if isinstance(feats, torch.Tensor) else feats
        dt = math.inf
        with threadpool_limits(sk_threads):  # all usable cores (or --threads) for BLAS and OpenMP
            used = native_threads()
            for _ in range(args.repeats):
                t = time.perf_counter()
                out = [
                    sklearn_problem(host[layer].astype(np.float64), labels, *splits[sd], args.sk_max_iter)
                    for layer, sd in problems
                ]
                dt = min(dt, time.perf_counter() - t)
        accs, iters = zip(*out)
        print(f"sklearn loop: native thread pools {used} ({usable_cores()} usable cores)")
        rows.append(
            (
                f"sklearn loop: StandardScaler + LogisticRegression(max_iter={args.sk_max_iter}), "
                f"CPU float64, {sk_threads} threads on {usable_cores()} cores",
                len(problems),
                f"{np.mean(iters):.0f} (lbfgs)",
                dt,
                dt / len(problems) * k * s,
                f"scaled x{k * s / len(problems):g}",
                False,
            )
        )
        ref = [res.val_accuracy[seeds.index(sd), layer] for layer, sd in problems]
        print(
            f"sklearn loop: {dt:.2f} s for {len(problems)}; val acc {np.round(accs, 3)} (ours {np.round(ref, 3)}); "
            f"iterations {iters}"
        )
    if "torch" not in args.skip:
        xt = torch.as_tensor(feats, device=device)
        yt = torch.as_tensor(labels, device=device)
        torch_problem(xt[0], yt, *(torch.as_tensor(i, device=device) for i in splits[0]), epochs=2, lr=0.05, seed=0)
        dt = math.inf
        for _ in range(args.repeats):
            _sync(device)
            t = time.perf_counter()
            accs = [
                torch_problem(
                    xt[layer],
                    yt,
                    torch.as_tensor(splits[sd][0], device=device),
                    torch.as_tensor(splits[sd][1], device=device),
                    epochs=e,
                    lr=0.05,
                    seed=sd,
                )
                for layer, sd in problems
            ]
            _sync(device)
            dt = min(dt, time.perf_counter() - t)
        switch = (
            f" (torch.backends.cuda.matmul.fp32_precision {torch.backends.cuda.matmul.fp32_precision!r})"
            if device.type == "cuda"
            else ""
        )  # the loop runs under the process's default switch
        rows.append(
            (
                f"torch loop: z-score + nn.Linear + Adam per problem, {device.type} float32{switch}",
                len(problems),
                e,
                dt,
                dt / len(problems) * k * s,
                f"scaled x{k * s / len(problems):g}",
                False,
            )
        )
        print(f"torch loop: {dt:.2f} s for {len(problems)}; val acc {np.round(accs, 3)}")

    best_ours = min(row[4] for row in rows if row[6])  # est. time of the fastest "ours" row
    sk_full = next((row[4] for row in rows if row[0].startswith("sklearn loop")), None)
    head = (
        f"| method | problems timed | iterations each | time (s) | est. all {k}x{s} problems (s) | how "
        "| fastest ours faster by | speed-up over sklearn loop |\n|---|---|---|---|---|---|---|---|"
    )
    lines = [head] + [
        f"| {m} | {p} | {it} | {tt:.2f} | {full:.2f} | {how} | {full / best_ours:.2f}x | "
        f"{'n/a' if sk_full is None else f'{sk_full / full:.1f}x'} |"
        for m, p, it, tt, full, how, _ in rows
    ]
    size = (
        f"K={k} states, N={n} samples (n_train={res.n_train}, n_val={res.n_val}), d={d} features, "
        f"C={c} classes, S={s} seeds, {e} epochs; features float16 on {args.source}; best of {args.repeats}"
    )
    table = "\n".join(lines)
    print()
    print(size)
    print(table)
    if args.markdown:
        date = subprocess.run(["date"], capture_output=True, text=True).stdout.strip()
        cmd = "python benchmarks/probes.py " + " ".join(sys.argv[1:])
        text = f"### {size}\n\n- machine: {machine(device)}\n- date: {date}\n- command: `{cmd}`\n\n{table}\n"
        with open(args.markdown, "w") as fh:
            fh.write(text)


if __name__ == "__main__":
    main()
