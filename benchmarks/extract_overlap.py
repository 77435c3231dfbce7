"""Extraction throughput: reprflow's hooked, overlapped loop vs the naive loop.

Methods, all on the same random-init GPT-NeoX (Pythia-like shape) and prompts:

* ``naive``: what a user writes by hand -- ``model(..., output_hidden_states=True)``
  on the full LM, gather the last real token of every hidden state, copy to the host
  and write the batch to Zarr inline (no full token states, no resumption);
* ``reprflow-inline``: :func:`reprflow.extract.extract_activations` with
  ``overlap=False`` (hooks on the base model, float16 checks and Zarr writes inline);
* ``reprflow-overlap``: the default, ``overlap=True`` (writer thread, bounded queue).

Both reprflow rows also store the full token states of ``--token-prompts`` prompts.

Run: ``PYTHONPATH=. python benchmarks/extract_overlap.py --device cuda --dtype bfloat16``
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import zarr
from transformers import GPTNeoXConfig, GPTNeoXForCausalLM

from reprflow.extract import extract_activations
from reprflow.prompts.tokenizers import load_tokenizer


def make_prompts(tokenizer, n: int, length: int, seed: int) -> list[dict]:
    rng = np.random.default_rng(seed)
    prompts = []
    for i in range(n):
        text = tokenizer.decode(rng.integers(1000, 30000, size=length).tolist())
        prompts.append(
            {
                "id": f"p{i}",
                "prompt": text,
                "label": int(rng.integers(0, 10)),
                "n_tokens": len(tokenizer(text)["input_ids"]),
            }
        )
    return prompts


def naive(model, tokenizer, prompts, out: Path, *, batch_size: int, device) -> int:
    k = model.config.num_hidden_layers + 1
    arr = zarr.create_array(
        str(out),
        shape=(k, len(prompts), model.config.hidden_size),
        dtype="float16",
        chunks=(k, batch_size, model.config.hidden_size),
    )
    tokens = 0
    for s in range(0, len(prompts), batch_size):
        enc = tokenizer([p["prompt"] for p in prompts[s : s + batch_size]], padding=True, return_tensors="pt")
        enc = {k_: v.to(device) for k_, v in enc.items()}
        with torch.inference_mode():
            hs = model(**enc, output_hidden_states=True).hidden_states
        last = enc["attention_mask"].sum(1) - 1
        rows = torch.arange(last.shape[0], device=device)
        states = torch.stack([h[rows, last] for h in hs]).float().cpu().numpy()
        arr[:, s : s + len(last)] = states.astype(np.float16)
        tokens += int(enc["attention_mask"].sum())
    return tokens


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    ap.add_argument("--hidden", type=int, default=1024)
    ap.add_argument("--layers", type=int, default=24)
    ap.add_argument("--prompts", type=int, default=256)
    ap.add_argument("--length", type=int, default=1024)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--token-prompts", type=int, default=16)
    args = ap.parse_args()
    dtype = getattr(torch, args.dtype)
    tok = load_tokenizer("gpt-neox-20b")
    cfg = GPTNeoXConfig(
        vocab_size=50304,
        hidden_size=args.hidden,
        num_hidden_layers=args.layers,
        num_attention_heads=args.hidden // 64,
        intermediate_size=4 * args.hidden,
        rotary_pct=0.25,
        max_position_embeddings=4096,
    )
    torch.manual_seed(0)
    model = GPTNeoXForCausalLM(cfg).to(device=args.device, dtype=dtype).eval()
    prompts = make_prompts(tok, args.prompts, args.length, seed=0)
    attrs = {
        "model": "bench",
        "model_id": "bench",
        "revision": None,
        "family": "gpt_neox",
        "init": {"scheme": "default"},
        "task": "kvpr",
        "length": args.length,
        "tokenizer": "gpt-neox-20b",
        "prompt_file": "bench",
        "prompt_sha256": "0" * 64,
    }
    root = Path(tempfile.mkdtemp())
    rows = []
    try:
        # warm-up (kernels, allocator)
        naive(
            model, tok, prompts[: args.batch_size], root / "warm.zarr", batch_size=args.batch_size, device=args.device
        )
        for name in ("naive", "reprflow-inline", "reprflow-overlap"):
            if args.device.startswith("cuda"):
                torch.cuda.synchronize()
            t0 = time.perf_counter()
            if name == "naive":
                n_tok = naive(
                    model, tok, prompts, root / f"{name}.zarr", batch_size=args.batch_size, device=args.device
                )
            else:
                s = extract_activations(
                    model,
                    tok,
                    prompts,
                    root / f"{name}.zarr",
                    batch_size=args.batch_size,
                    n_token_prompts=args.token_prompts,
                    attrs=attrs,
                    store_dtype="auto",
                    device=args.device,
                    compute_dtype=dtype,
                    progress=False,
                    overlap=name.endswith("overlap"),
                )
                n_tok = s.tokens
            seconds = time.perf_counter() - t0
            rows.append((name, n_tok, seconds))
    finally:
        shutil.rmtree(root)
    base = rows[0][1] / rows[0][2]
    print(
        f"model: GPT-NeoX hidden {args.hidden} x {args.layers} layers, {args.dtype} on {args.device}; "
        f"{args.prompts} prompts x {args.length} tokens, batch {args.batch_size}, "
        f"{args.token_prompts} token prompts (reprflow rows only)"
    )
    print("| method | tokens | seconds | tok/s | vs naive |")
    print("|---|---|---|---|---|")
    for name, n_tok, seconds in rows:
        print(f"| {name} | {n_tok} | {seconds:.2f} | {n_tok / seconds:.0f} | {n_tok / seconds / base:.2f}x |")


if __name__ == "__main__":
    main()
