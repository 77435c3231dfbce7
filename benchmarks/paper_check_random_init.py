"""Paper check (issue 3): the random-init arm of Fig. 3 at full size, on the GPU.

The only part of the paper that needs no downloaded weights: GPT-Neo-2.7B and Mamba2-2.7B
configs with the model's own (default) init, on KVPR and MDQA prompts of ~2048 tokens, through
the real pipeline code (reprflow.extract -> Zarr store -> reprflow.pipeline.token_metrics).
Prints the per-layer curves (inter-token cosine and mean layerwise cosine, hf and residual
views) and writes them to <out>/paper_check_curves.csv with a figure.

Claim under test (paper §5, Fig. 3): at random init the Transformer's token representations
are highly similar to each other (inter-token cosine high), the SSM's near zero.

    python benchmarks/paper_check_random_init.py --prompts data/prompts --n-prompts 256 --out OUT
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402
import torch  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from extract import full_configs  # noqa: E402  (the paper architectures' configs, one place)

from reprflow.extract import extract_activations  # noqa: E402
from reprflow.models.init_schemes import build_from_config  # noqa: E402
from reprflow.pipeline.token_metrics import compute_token_metrics  # noqa: E402
from reprflow.prompts import load_tokenizer, read_prompt_set  # noqa: E402

MODELS = ("gpt-neo-2.7b", "mamba2-2.7b")
TASKS = ("kvpr", "mdqa")


def run(args) -> pd.DataFrame:
    configs = full_configs(quick=args.quick)
    rows = []
    for name in MODELS:
        config, tok_name = configs[name]
        tokenizer = load_tokenizer(tok_name)
        model = build_from_config(config, seed=args.seed, dtype=torch.bfloat16, device="cuda")
        for task in TASKS:
            prompts = read_prompt_set(Path(args.prompts) / tok_name / f"{task}_n{args.length}.jsonl")[: args.n_prompts]
            store = Path(args.work) / name / "random" / f"{task}_n{args.length}.zarr"
            attrs = {
                "model": name,
                "model_id": f"config:{name}",
                "revision": None,
                "family": config.model_type,
                "init": {"name": "random", "scheme": "default", "params": {}, "seed": args.seed},
                "task": task,
                "length": args.length,
                "tokenizer": tok_name,
                "prompt_file": "carried",
                "prompt_sha256": "n/a",
            }
            t0 = time.perf_counter()
            summary = extract_activations(
                model,
                tokenizer,
                prompts,
                store,
                batch_size=args.batch_size,
                n_token_prompts=args.n_token_prompts,
                attrs=attrs,
                device="cuda",
                compute_dtype=torch.bfloat16,
                progress=False,
            )
            t1 = time.perf_counter()
            out = Path(args.work) / "metrics" / name / task
            compute_token_metrics(store, out, views=("hf", "residual"), device=torch.device("cuda"))
            t2 = time.perf_counter()
            print(
                f"{name} {task}: {len(prompts)} prompts, extract {t1 - t0:.1f}s "
                f"({summary.tokens_per_s / 1e3:.1f}K tok/s), metrics {t2 - t1:.1f}s",
                flush=True,
            )
            inter = pd.read_csv(out / "inter_token_cosine.csv")
            layer = pd.read_csv(out / "layerwise_cosine.csv")
            for view in ("hf", "residual"):
                iv = inter[inter.view == view].sort_values("state_index")
                for r in iv.itertuples():
                    rows.append(
                        {
                            "model": name,
                            "task": task,
                            "view": view,
                            "metric": "inter_token_cosine",
                            "index": r.state_index,
                            "state": r.state_name,
                            "value": r.mean,
                        }
                    )
                lv = layer[layer.view == view].sort_values("pair_index")
                for r in lv.itertuples():
                    rows.append(
                        {
                            "model": name,
                            "task": task,
                            "view": view,
                            "metric": "layerwise_cosine",
                            "index": r.pair_index,
                            "state": f"{r.from_state}->{r.to_state}",
                            "value": r.mean,
                        }
                    )
        del model
        torch.cuda.empty_cache()
    return pd.DataFrame(rows)


def figure(curves: pd.DataFrame, path: Path) -> None:
    fig, axes = plt.subplots(2, 2, figsize=(10, 6), squeeze=False)
    for c, metric in enumerate(("inter_token_cosine", "layerwise_cosine")):
        for r, view in enumerate(("hf", "residual")):
            ax = axes[r, c]
            for k, name in enumerate(MODELS):
                sel = curves[(curves.model == name) & (curves.metric == metric) & (curves.view == view)]
                mean = sel.groupby("index")["value"].mean()
                ax.plot(mean.index / max(mean.index.max(), 1), mean.values, color=f"C{k}", label=name)
            ax.set_title(f"{metric} ({view} view)", fontsize=9)
            ax.set_xlabel("relative depth")
            ax.set_ylim(-0.05, 1.05)
    axes[0, 0].legend()
    fig.suptitle("Fig. 3, random-init arm (default init, ~2048 tokens, mean over KVPR and MDQA)")
    fig.savefig(path, dpi=110, bbox_inches="tight")


def summary_table(curves: pd.DataFrame) -> str:
    """Mean over layers and tasks of each curve, plus first/last values."""
    lines = ["| model | view | metric | first | middle | last | mean over layers |", "|---|---|---|---|---|---|---|"]
    for (name, view, metric), sel in curves.groupby(["model", "view", "metric"]):
        mean = sel.groupby("index")["value"].mean()
        lines.append(
            f"| {name} | {view} | {metric} | {mean.iloc[0]:.3f} | {mean.iloc[len(mean) // 2]:.3f} "
            f"| {mean.iloc[-1]:.3f} | {mean.mean():.3f} |"
        )
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--prompts", default="data/prompts")
    p.add_argument("--length", type=int, default=2048)
    p.add_argument("--n-prompts", type=int, default=256)
    p.add_argument("--n-token-prompts", type=int, default=16)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--work", default="/tmp/reprflow-paper-check")
    p.add_argument("--out", default="benchmarks/out")
    p.add_argument("--quick", action="store_true", help="shrunken configs (smoke test)")
    args = p.parse_args(argv)
    if not torch.cuda.is_available():
        print("needs a CUDA GPU")
        return 2
    curves = run(args)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    curves.to_csv(out / "paper_check_curves.csv", index=False)
    figure(curves, out / "paper_check_fig3_random.png")
    print(summary_table(curves))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
