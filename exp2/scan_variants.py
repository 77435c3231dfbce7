"""Time variants of the Gluon scan side by side (interleaved rounds), with errors vs float64: the gate's
division (div.full, div.approx, one reciprocal per two steps), unroll 8 / 16, 1 or 1.5 polynomial decays of 16."""

import argparse
import json
import statistics
import sys
import time
from functools import partial
from pathlib import Path
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "benchmarks"), str(ROOT / "exp2"), str(ROOT)]
from scan_sweep import scan_inputs, _call, _reference, CHANNELS, D_STATE  # noqa
from microbench import rel_err  # noqa
from reprflow.kernels.selective_scan_gluon import selective_scan_gluon  # noqa

S = selective_scan_gluon
U16 = (1, 1, 16, 1, 2)
VARIANTS = {
    "default": partial(S),
    "unroll 16": partial(S, config=U16),
    "gate div.approx": partial(S, gate_approx=1),
    "gate div.approx, unroll 16": partial(S, gate_approx=1, config=U16),
    "gate pair": partial(S, gate_approx=2),
    "gate pair, unroll 16": partial(S, gate_approx=2, config=U16),
    "gate div.approx, unroll 16, odd steps 2 poly": partial(S, gate_approx=1, fma_exps_odd=2, config=U16),
    "gate pair, unroll 16, odd steps 2 poly": partial(S, gate_approx=2, fma_exps_odd=2, config=U16),
    "gate pair, odd steps 2 poly": partial(S, gate_approx=2, fma_exps_odd=2),
}
EXPLORATION = {}


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--shapes", nargs="+", default=["2048x32", "4096x16"])
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--calls", type=int, default=5)
    p.add_argument("--match", nargs="*")
    p.add_argument("--json")
    a = p.parse_args()
    from sfu_rate import measure_exp_rate

    rate = measure_exp_rate()
    names = [n for n in VARIANTS if (n in a.match if a.match else n not in EXPLORATION)]
    print(f"{torch.cuda.get_device_name()} {time.strftime('%Y-%m-%d %H:%M %Z')} ex2 rate {rate / 1e12:.2f} T/s")
    print("| variant | " + " | ".join(f"ms {s} (x exp bound)" for s in a.shapes) + " | rel err bf16 | rel err fp32 |")
    print("|---|" + "---:|" * (len(a.shapes) + 2))
    res = {n: {} for n in names}
    for s in a.shapes:
        t, b = map(int, s.split("x"))
        x = scan_inputs(b, t, torch.bfloat16, "cuda", seed=1)
        ok = []
        for n in names:
            try:
                _call(VARIANTS[n], x)
                ok.append(n)
            except Exception as e:  # a variant that does not compile is reported, not fatal
                print(f"# {n}: {type(e).__name__}: {str(e)[:300]}", flush=True)
        torch.cuda.synchronize()
        times = {n: [] for n in ok}
        for r in range(a.rounds):
            order = ok if r % 2 == 0 else ok[::-1]
            for n in order:
                e0, e1 = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
                e0.record()
                for _ in range(a.calls):
                    _call(VARIANTS[n], x)
                e1.record()
                e1.synchronize()
                times[n].append(e0.elapsed_time(e1) / a.calls)
        bound = 1e3 * b * t * CHANNELS * D_STATE / rate
        for n in ok:
            res[n][s] = (statistics.median(times[n]), min(times[n]), max(times[n]), bound)
        del x
    x = scan_inputs(1, 2048, torch.bfloat16, "cuda", seed=3)
    want = _reference(x, slice(None))
    x32 = scan_inputs(1, 2048, torch.float32, "cuda", seed=7)
    want32 = _reference(x32, slice(None))
    summary = {}
    for n in names:
        if len(res[n]) < len(a.shapes):
            continue
        cells = [f"{m:.3f} ({lo:.3f}-{hi:.3f}; {m / bd:.2f}x)" for m, lo, hi, bd in (res[n][s] for s in a.shapes)]
        e16 = rel_err(_call(VARIANTS[n], x), want)
        e32 = rel_err(_call(VARIANTS[n], x32), want32)
        summary[n] = {"ms": {s: res[n][s][0] for s in a.shapes}, "err16": e16, "err32": e32}
        print(f"| {n} | " + " | ".join(cells) + f" | {e16:.2e} | {e32:.2e} |", flush=True)
    if a.json:
        Path(a.json).write_text(json.dumps(summary, indent=1))


if __name__ == "__main__":
    main()
