"""Capture cost: reprflow's hooks vs the naive ``output_hidden_states`` call.

Methods, on the same randomly initialised model (full paper-size config by default,
built with :func:`reprflow.models.build_from_config`, no download) and the same batch:

* ``naive``: what a user writes by hand -- ``model(..., output_hidden_states=True)``
  on the full LM (LM head included), then gather the last real token of each
  hidden state (L + 1 states, family-dependent view);
* ``reprflow-last``: :func:`reprflow.capture.forward_states` (base model, hooks
  that gather the last real token at capture; L + 2 states);
* ``reprflow-last+1row``: the same, also keeping the full states of one row
  (what extraction does for the token-metric subset).

Reports the median time per batch and the peak device memory (CUDA only) as
ratios to ``naive``.

Run: ``PYTHONPATH=. python benchmarks/capture.py --family gpt_neox --device cuda --dtype bfloat16``
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from transformers import GPTNeoConfig, GPTNeoXConfig, Mamba2Config, MambaConfig

from reprflow.capture import forward_states
from reprflow.models import build_from_config

# paper-size configs (the public configs' shapes), random init
CONFIGS = {
    "gpt_neo": lambda: GPTNeoConfig(
        vocab_size=50257,
        hidden_size=2560,
        num_layers=32,
        num_heads=20,
        attention_types=[[["global", "local"], 16]],
        window_size=256,
        max_position_embeddings=2048,
    ),
    "gpt_neox": lambda: GPTNeoXConfig(
        vocab_size=50304,
        hidden_size=2560,
        num_hidden_layers=32,
        num_attention_heads=32,
        intermediate_size=10240,
        rotary_pct=0.25,
        max_position_embeddings=2048,
    ),
    "mamba": lambda: MambaConfig(vocab_size=50280, hidden_size=2560, num_hidden_layers=64),
    "mamba2": lambda: Mamba2Config(
        vocab_size=50288,
        hidden_size=2560,
        num_hidden_layers=64,
        num_heads=80,
        head_dim=64,
        n_groups=1,
        state_size=128,
    ),
}
TINY = {
    "hidden_size": 256,
    "num_layers": 4,
    "num_hidden_layers": 4,
    "num_heads": 4,
    "num_attention_heads": 4,
    "intermediate_size": 1024,
}


def _naive(model, input_ids, mask):
    with torch.inference_mode():
        hs = model(input_ids, attention_mask=mask, output_hidden_states=True, use_cache=False).hidden_states
        last = mask.sum(1) - 1
        rows = torch.arange(last.shape[0], device=last.device)
        return torch.stack([h[rows, last] for h in hs])  # [L + 1, batch, hidden]


def _time(fn, *, repeats: int, device: torch.device) -> tuple[float, float]:
    fn()  # warm-up
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
    peak = torch.cuda.max_memory_allocated() / 2**30 if device.type == "cuda" else float("nan")
    return statistics.median(times), peak


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--family", default="gpt_neox", choices=sorted(CONFIGS))
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="float32")
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--n-tokens", type=int, default=2048)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--tiny", action="store_true", help="shrink the config (CPU smoke run)")
    args = parser.parse_args()
    device, dtype = torch.device(args.device), getattr(torch, args.dtype)
    config = CONFIGS[args.family]()
    if args.tiny:
        for key, value in TINY.items():
            if hasattr(config, key) and not (key == "num_heads" and args.family.startswith("mamba")):
                setattr(config, key, value)
        if args.family == "gpt_neo":
            config.attention_types = [[["global", "local"], 2]]
            config.attention_layers = config.expand_attention_types_params(config.attention_types)
    model = build_from_config(config, seed=0, dtype=dtype, device=device)
    gen = torch.Generator().manual_seed(0)
    input_ids = torch.randint(10, 50000, (args.batch, args.n_tokens), generator=gen).to(device)
    lengths = torch.linspace(args.n_tokens // 2, args.n_tokens, args.batch).long()
    mask = (torch.arange(args.n_tokens)[None] < lengths[:, None]).long().to(device)  # right padding

    methods = {
        "naive (output_hidden_states)": lambda: _naive(model, input_ids, mask),
        "reprflow-last": lambda: forward_states(model, input_ids, mask),
        "reprflow-last+1row": lambda: forward_states(model, input_ids, mask, token_rows=[args.batch - 1]),
    }
    results = {name: _time(fn, repeats=args.repeats, device=device) for name, fn in methods.items()}
    base_t, base_m = results["naive (output_hidden_states)"]
    n_params = sum(p.numel() for p in model.parameters()) / 1e9
    print(
        f"{args.family} ({n_params:.2f}B params), {args.device} {args.dtype}, batch {args.batch} x "
        f"{args.n_tokens} tokens (right-padded), median of {args.repeats}"
    )
    print("| method | s/batch | time ratio | peak GiB | memory ratio |")
    print("|---|---|---|---|---|")
    for name, (t, m) in results.items():
        print(f"| {name} | {t:.4f} | {t / base_t:.2f} | {m:.2f} | {m / base_m:.2f} |")


if __name__ == "__main__":
    main()
