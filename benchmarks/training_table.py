"""The trained models of a run as Markdown: one row per model (size, tokens, time, tokens/s, %
of the bf16 roofline, validation loss start -> end and best, the unigram baseline, the kernels),
then the loss curves side by side (validation loss per model at every logged step).

Reads what ``train_model`` writes: ``<run>/results/training/<model>/summary.json`` and
``metrics.csv`` (columns step, tokens, train_loss, val_loss, lr, tokens_per_s, elapsed_s).

Usage (repository root)::

    python benchmarks/training_table.py runs/matched     # or a folder unpacked from a GPU run
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
from pathlib import Path


def read_model(folder: Path) -> tuple[dict, list[dict]]:
    """(summary, metric rows) of one trained model's results folder."""
    summary = json.loads((folder / "summary.json").read_text())
    with open(folder / "metrics.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    return summary, rows


def best_val(rows: list[dict]) -> tuple[float, float]:
    """(lowest validation loss, tokens at which it was reached)."""
    scored = [(float(r["val_loss"]), float(r["tokens"])) for r in rows if r["val_loss"]]
    return min(scored)


def _rate(summary: dict) -> tuple[str, str]:
    """(tokens/s, % of the bf16 roofline) as text; the roofline is only recorded for CUDA runs."""
    tps, mfu = summary.get("tokens_per_s"), summary.get("mfu_vs_h200_bf16")
    return (f"{tps / 1e3:.0f}K" if tps else "-"), (
        f"{100 * mfu:.1f}" if mfu is not None else f"- ({summary['device']})"
    )


def summary_table(models: dict[str, tuple[dict, list[dict]]]) -> list[str]:
    lines = [
        "| model | params | tokens | train s | tokens/s | % bf16 roofline | val loss start -> end (best) | unigram | kernels |",
        "|---|---:|---:|---:|---:|---:|---|---:|---|",
    ]
    for name, (s, rows) in models.items():
        best, at = best_val(rows)
        tps, mfu = _rate(s)
        lines.append(
            f"| {name} | {s['n_params'] / 1e6:.1f}M | {s['tokens'] / 1e6:.1f}M | {s['train_seconds']:.0f} | "
            f"{tps} | {mfu} | "
            f"{s['initial_val_loss']:.2f} -> {s['final_val_loss']:.2f} ({best:.2f} at {at / 1e6:.3g}M) | "
            f"{s['unigram_val_loss']:.2f} | {s['train_kernels']} |"
        )
    return lines


def curve_table(models: dict[str, tuple[dict, list[dict]]]) -> list[str]:
    """Validation loss per model by step; models logged at other steps leave their cells empty."""
    by_step: dict[int, dict[str, str]] = {}
    tokens: dict[int, float] = {}
    for name, (_, rows) in models.items():
        for r in rows:
            step = int(r["step"])
            tokens[step] = float(r["tokens"])
            by_step.setdefault(step, {})[name] = f"{float(r['val_loss']):.3f}" if r["val_loss"] else ""
    names = list(models)
    lines = ["| step | tokens | " + " | ".join(names) + " |", "|---:|---:|" + "---:|" * len(names)]
    for step in sorted(by_step):
        cells = " | ".join(by_step[step].get(n, "") for n in names)
        lines.append(f"| {step} | {tokens[step] / 1e6:.1f}M | {cells} |")
    return lines


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("run", type=Path, help="the run's root (the folder holding results/training)")
    args = p.parse_args(argv)
    root = args.run / "results" / "training"
    folders = sorted(f for f in root.glob("*") if (f / "summary.json").is_file())
    if not folders:
        print(f"no trained model under {root} (expected <model>/summary.json and metrics.csv)", file=sys.stderr)
        return 1
    models = {f.name: read_model(f) for f in folders}
    print("\n".join(summary_table(models)))
    print("\nValidation loss by step:\n")
    print("\n".join(curve_table(models)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
