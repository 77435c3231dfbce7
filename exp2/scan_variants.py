"""Time variants of the Gluon scan side by side (interleaved rounds), with errors vs float64.

Default: the production split rows (VARIANTS); the first exploration (at 15f987f, where "prod default"
was the gl.exp2 scan): --match with the EXPLORATION names.
"""
import argparse, json, statistics, sys, time
from functools import partial
from pathlib import Path
import torch
ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "benchmarks"), str(ROOT / "exp2"), str(ROOT)]
from scan_sweep import scan_inputs, _call, _reference, CHANNELS, D_STATE  # noqa
from microbench import rel_err  # noqa
import scan_poly  # noqa
from reprflow.kernels.selective_scan_gluon import selective_scan_gluon  # noqa

P = scan_poly.selective_scan_gluon
VARIANTS = {
    "default (1 of 16 decays on the FMA pipe)": partial(selective_scan_gluon),
    "fma_exps=0 (all 16 by ex2 in the PTX block)": partial(selective_scan_gluon, fma_exps=0),
    "fma_exps=2": partial(selective_scan_gluon, fma_exps=2),
    "before (15f987f: gl.exp2)": partial(P),
}
#: the first exploration (scan_poly.py's POLY codes and lanes with 2 channels), run with --match NAME...
EXPLORATION = {
    "prod default": partial(P),
    "asm 16 MUFU": partial(P, poly=100),
    "poly1": partial(P, poly=10),
    "poly1 lowclamp": partial(P, poly=11),
    "poly2": partial(P, poly=20),
    "poly1 u16": partial(P, poly=10, config=(1, 1, 16, 1, 2)),
    "cpl2": partial(P, channels_per_lane=2),
    "cpl2 poly1": partial(P, poly=10, channels_per_lane=2),
    "cpl2 poly2": partial(P, poly=20, channels_per_lane=2),
    "cpl2 poly2 lowclamp": partial(P, poly=21, channels_per_lane=2),
    "cpl2 poly2 u16": partial(P, poly=20, channels_per_lane=2, config=(1, 1, 16, 1, 2)),
    "cpl2 poly1 u4": partial(P, poly=10, channels_per_lane=2, config=(1, 1, 4, 1, 2)),
}
VARIANTS.update(EXPLORATION)


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
    print(f"{torch.cuda.get_device_name()} {time.strftime('%Y-%m-%d %H:%M %Z')} ex2 rate {rate/1e12:.2f} T/s")
    print("| variant | " + " | ".join(f"ms {s} (x exp bound)" for s in a.shapes) + " | rel err bf16 | rel err fp32 |")
    print("|---|" + "---:|" * (len(a.shapes) + 2))
    res = {n: {} for n in names}
    for s in a.shapes:
        t, b = map(int, s.split("x"))
        x = scan_inputs(b, t, torch.bfloat16, "cuda", seed=1)
        ok = []
        for n in names:
            try:
                _call(VARIANTS[n], x); ok.append(n)
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
                e1.record(); e1.synchronize()
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
        cells = [f"{m:.3f} ({lo:.3f}-{hi:.3f}; {m/bd:.2f}x)" for m, lo, hi, bd in (res[n][s] for s in a.shapes)]
        e16 = rel_err(_call(VARIANTS[n], x), want)
        e32 = rel_err(_call(VARIANTS[n], x32), want32)
        summary[n] = {"ms": {s: res[n][s][0] for s in a.shapes}, "err16": e16, "err32": e32}
        print(f"| {n} | " + " | ".join(cells) + f" | {e16:.2e} | {e32:.2e} |", flush=True)
    if a.json:
        Path(a.json).write_text(json.dumps(summary, indent=1))


if __name__ == "__main__":
    main()
