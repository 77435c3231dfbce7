"""Sharded extraction on several GPUs: one process per shard, as the workflow's shard jobs run.

For one full-size random-init model (configs of ``benchmarks/extract.py``, no hub):

* **one store**: all prompts, one process, one GPU;
* **k shards**: k processes started together, each resolving ``device: auto`` through
  :func:`reprflow.devices.resolve_device` (which claims a free GPU) and writing
  ``<store>_shard{i}of{k}.zarr`` with ``sample_range=shard_range(n, i, k)``, exactly what
  the ``extract_activation_shard`` rule does.

Reports each process's extraction throughput, the aggregate (all tokens over the span from
the first shard's start to the last one's end, model building excluded) and checks that
``reprflow.store.open_activations`` reads the shards as the one store: same labels, token
prompt ids and lengths, states equal up to bf16 batching noise.

Usage (a machine with k GPUs, repo root on PYTHONPATH)::

    python benchmarks/shards_gpu.py --model pythia-2.8b --prompts 512 --shards 2 --out $OUT
    python benchmarks/shards_gpu.py --quick --prompts 16 --tokens 256 --out /tmp/x   # CPU smoke run
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))


def worker(args) -> None:
    """One extraction job: build the model on the claimed GPU, extract one shard (or all)."""
    from extract import build_model, full_configs, make_prompts

    from reprflow.devices import resolve_device
    from reprflow.extract import extract_activations
    from reprflow.prompts.tokenizers import load_tokenizer
    from reprflow.store import shard_range

    device = resolve_device("auto")
    config, tok_name = full_configs(args.quick)[args.model]
    tokenizer = load_tokenizer(tok_name)
    prompts = make_prompts(tokenizer, n_prompts=args.prompts, n_tokens=args.tokens, seed=0)
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    model = build_model(config, dtype=dtype, seed=0, device=str(device))
    checksum = float(sum(p.float().sum() for p in model.parameters()))
    attrs = {
        "model": args.model,
        "model_id": args.model,
        "revision": "random-init",
        "family": config.model_type,
        "init": {"scheme": "default", "seed": 0},
        "task": "kvpr",
        "length": args.tokens,
        "tokenizer": tok_name,
        "prompt_file": "<benchmark>",
        "prompt_sha256": "0" * 64,
    }
    rng = None if args.shard < 0 else shard_range(len(prompts), args.shard, args.shards)
    start = time.time()
    s = extract_activations(
        model,
        tokenizer,
        prompts,
        args.store,
        batch_size=args.batch_size,
        n_token_prompts=args.token_prompts,
        attrs=attrs,
        device=device,
        compute_dtype=dtype,
        progress=False,
        sample_range=rng,
    )
    end = time.time()
    gpu = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    print(
        json.dumps(
            {
                "shard": args.shard,
                "device": str(device),
                "gpu": gpu,
                "tokens": s.tokens,
                "seconds": s.seconds,
                "tok_s": s.tokens_per_s,
                "start": end - s.seconds,
                "end": end,
                "started": start,
                "weights_checksum": checksum,
            }
        ),
        flush=True,
    )


def launch(args, store: Path, shard: int) -> subprocess.Popen:
    cmd = [
        sys.executable,
        __file__,
        "--worker",
        "--shard",
        str(shard),
        "--store",
        str(store),
        "--model",
        args.model,
        "--prompts",
        str(args.prompts),
        "--tokens",
        str(args.tokens),
        "--batch-size",
        str(args.batch_size),
        "--token-prompts",
        str(args.token_prompts),
        "--shards",
        str(args.shards),
    ] + (["--quick"] if args.quick else [])
    env = {**os.environ, "REPRFLOW_GPU_LOCK_DIR": str(args.lock_dir)}
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True, env=env)


def result(proc: subprocess.Popen) -> dict:
    out, _ = proc.communicate()
    if proc.returncode != 0:
        raise SystemExit(f"worker failed with exit {proc.returncode}")
    return json.loads(out.strip().splitlines()[-1])


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="pythia-2.8b")
    p.add_argument("--prompts", type=int, default=512)
    p.add_argument("--tokens", type=int, default=2048)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--token-prompts", type=int, default=4)
    p.add_argument("--shards", type=int, default=2)
    p.add_argument("--out", default=os.environ.get("OUT", "benchmarks/out"))
    p.add_argument("--quick", action="store_true", help="2-layer, 512-wide models: a smoke run (CPU is fine)")
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--shard", type=int, default=-1, help=argparse.SUPPRESS)
    p.add_argument("--store", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.worker:
        worker(args)
        return 0
    from reprflow.store import open_activations, open_store, shard_path

    work = Path(tempfile.mkdtemp(prefix="reprflow-shards-"))
    args.lock_dir = work / "gpu-locks"
    one_path = work / "kvpr_n2048.zarr"
    one = result(launch(args, one_path, -1))
    procs = [launch(args, shard_path(one_path, i, args.shards), i) for i in range(args.shards)]
    shards = [result(proc) for proc in procs]
    span = max(s["end"] for s in shards) - min(s["start"] for s in shards)
    total = sum(s["tokens"] for s in shards)

    ref = open_store(one_path)
    view = open_activations([shard_path(one_path, i, args.shards) for i in range(args.shards)])
    same_meta = all(np.array_equal(np.asarray(view[k][...]), ref[k][:]) for k in ("labels", "n_tokens", "lengths"))
    same_ids = view.attrs["token_prompt_ids"] == ref.attrs["token_prompt_ids"]
    a, b = ref["last"][:].astype(np.float32), np.asarray(view["last"][...]).astype(np.float32)
    rel = float(np.abs(a - b).max() / np.abs(a).max())
    checks = {s["weights_checksum"] for s in [one, *shards]}

    lines = [
        f"{shards[0]['gpu']} x {args.shards} | torch {torch.__version__} | {time.strftime('%Y-%m-%d %H:%M:%S %Z')}",
        f"{args.model}, random init, {args.prompts} prompts x {args.tokens} tokens, batch {args.batch_size}, "
        f"{args.token_prompts} token prompts",
        "",
        "| run | device | tokens | seconds | tok/s |",
        "|---|---|---|---|---|",
        f"| one store | {one['device']} | {one['tokens']} | {one['seconds']:.2f} | {one['tok_s'] / 1e3:.1f}K |",
    ]
    for s in shards:
        lines.append(
            f"| shard {s['shard']} of {args.shards} | {s['device']} | {s['tokens']} | {s['seconds']:.2f} | "
            f"{s['tok_s'] / 1e3:.1f}K |"
        )
    lines += [
        f"| all shards together (first start to last end) | {args.shards} GPUs | {total} | {span:.2f} | "
        f"**{total / span / 1e3:.1f}K** ({total / span / one['tok_s']:.2f}x one store) |",
        "",
        f"- shards read as one store: labels/n_tokens/lengths equal {same_meta}, token prompt ids equal {same_ids}, "
        f"max |last - one store| / max |last| = {rel:.2e}",
        f"- same random-init weights in every process: {len(checks) == 1}",
        f"- GPUs claimed: {sorted(s['device'] for s in shards)}",
    ]
    text = "\n".join(lines)
    print(text)
    Path(args.out).mkdir(parents=True, exist_ok=True)
    (Path(args.out) / "shards_gpu.md").write_text(text + "\n")
    distinct = len({s["device"] for s in shards}) == args.shards or shards[0]["device"] == "cpu"
    ok = same_meta and same_ids and rel < 2e-2 and len(checks) == 1 and distinct
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
