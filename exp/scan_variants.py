"""Time variants of the Gluon scan side by side (interleaved rounds), with errors vs float64."""
import argparse, statistics, sys, time
from functools import partial
from pathlib import Path
import torch
ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "benchmarks"), str(ROOT / "exp"), str(ROOT)]
from scan_sweep import scan_inputs, _call, _reference, CHANNELS, D_STATE  # noqa
from microbench import rel_err  # noqa
import scan_exp  # noqa
from reprflow.kernels.selective_scan_gluon import selective_scan_gluon  # noqa

VARIANTS = {
    "prod default": partial(selective_scan_gluon),
    "default u16": partial(scan_exp.selective_scan_gluon, config=(1, 1, 16, 1, 2)),
    "tanh u8": partial(scan_exp.selective_scan_gluon, config=(1, 1, 8, 1, 2), silu_tanh=1),
    "tanh u16": partial(scan_exp.selective_scan_gluon, config=(1, 1, 16, 1, 2), silu_tanh=1),
    "newton2 u8": partial(scan_exp.selective_scan_gluon, config=(1, 1, 8, 1, 2), silu_tanh=2),
    "newton3 u8": partial(scan_exp.selective_scan_gluon, config=(1, 1, 8, 1, 2), silu_tanh=3),
    "diag: B/C read once per 8 steps (wrong results)": partial(scan_exp.selective_scan_gluon, config=(1, 1, 8, 1, 2), bc_once=True),
    "diag: tanh + B/C once per 8 steps": partial(scan_exp.selective_scan_gluon, config=(1, 1, 8, 1, 2), silu_tanh=1, bc_once=True),
    "newton2 u16": partial(scan_exp.selective_scan_gluon, config=(1, 1, 16, 1, 2), silu_tanh=2),
    "newton3 u16": partial(scan_exp.selective_scan_gluon, config=(1, 1, 16, 1, 2), silu_tanh=3),
}


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--shapes", nargs="+", default=["2048x32", "4096x16"])
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--calls", type=int, default=5)
    p.add_argument("--match", nargs="*")
    a = p.parse_args()
    from sfu_rate import measure_exp_rate
    rate = measure_exp_rate()
    names = [n for n in VARIANTS if not a.match or any(m in n for m in a.match)]
    print(f"{torch.cuda.get_device_name()} {time.strftime('%Y-%m-%d %H:%M %Z')} ex2 rate {rate/1e12:.2f} T/s")
    print("| variant | " + " | ".join(f"ms {s} (x exp bound)" for s in a.shapes) + " | rel err bf16 | rel err fp32 |")
    print("|---|" + "---:|" * (len(a.shapes) + 2))
    res = {n: {} for n in names}
    for s in a.shapes:
        t, b = map(int, s.split("x"))
        x = scan_inputs(b, t, torch.bfloat16, "cuda", seed=1)
        for n in names:
            _call(VARIANTS[n], x)
        torch.cuda.synchronize()
        times = {n: [] for n in names}
        for r in range(a.rounds):
            order = names if r % 2 == 0 else names[::-1]
            for n in order:
                e0, e1 = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
                e0.record()
                for _ in range(a.calls):
                    _call(VARIANTS[n], x)
                e1.record(); e1.synchronize()
                times[n].append(e0.elapsed_time(e1) / a.calls)
        bound = 1e3 * b * t * CHANNELS * D_STATE / rate
        for n in names:
            res[n][s] = (statistics.median(times[n]), min(times[n]), max(times[n]), bound)
        del x
    x = scan_inputs(1, 2048, torch.bfloat16, "cuda", seed=3)
    want = _reference(x, slice(None))
    x32 = scan_inputs(1, 2048, torch.float32, "cuda", seed=7)
    want32 = _reference(x32, slice(None))
    for n in names:
        cells = [f"{m:.3f} ({lo:.3f}-{hi:.3f}; {m/bd:.2f}x)" for m, lo, hi, bd in (res[n][s] for s in a.shapes)]
        e16 = rel_err(_call(VARIANTS[n], x), want)
        e32 = rel_err(_call(VARIANTS[n], x32), want32)
        print(f"| {n} | " + " | ".join(cells) + f" | {e16:.2e} | {e32:.2e} |", flush=True)


if __name__ == "__main__":
    main()
