"""How long the GPU waits for token ids: tokenising a prompt set up front vs ahead in a thread.

Builds a real prompt set (the paper config's prompt settings, ``--task``/``--length``,
``--n-prompts``) with the tokenizer of Mamba/Pythia, then measures (CPU only, no model):

* **up front**: one batched tokenizer call over every prompt (what extraction did before its
  first forward pass);
* **ahead** (:class:`reprflow.token_ids.TokenIds`, window of ``--window`` prompts): when the
  first window's ids are ready (the GPU's wait before its first batch) and when all are;
* **the launching thread's worst gap** while the tokenizer thread runs: the longest the
  main thread (here spinning, i.e. competing for a core) went without running Python (the
  fast tokenizer releases the GIL while it encodes; a long gap would starve a GPU whose
  queue of launched kernels is short).

Usage (repository root)::

    PYTHONPATH=$PWD python benchmarks/tokenize_ahead.py --n-prompts 800 --length 2048
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from reprflow.config import load_configs  # noqa: E402
from reprflow.pipeline.prompt_stage import build_prompt_file  # noqa: E402
from reprflow.prompts.dataset import read_prompt_set  # noqa: E402
from reprflow.prompts.tokenizers import load_tokenizer  # noqa: E402
from reprflow.token_ids import TokenIds, tokenize_prompts  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--task", default="mdqa", choices=["mdqa", "kvpr"])
    p.add_argument("--length", type=int, default=2048)
    p.add_argument("--n-prompts", type=int, default=800)
    p.add_argument("--tokenizer", default="gpt-neox-20b")
    p.add_argument("--window", type=int, default=64, help="batch_size x window_batches (paper config: 8 x 8)")
    args = p.parse_args(argv)

    config = load_configs([ROOT / "config" / "config.yaml"])
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / f"{args.task}_n{args.length}.jsonl"
        build_prompt_file(
            path,
            task=args.task,
            length=args.length,
            tokenizer=args.tokenizer,
            seed=config.seed,
            settings={**config.section("prompts"), "n_prompts": args.n_prompts},
        )
        prompts = read_prompt_set(path)
    tokenizer = load_tokenizer(args.tokenizer)
    n_tokens = sum(int(r["n_tokens"]) for r in prompts)

    t0 = time.perf_counter()
    tokenize_prompts(tokenizer, prompts, range(len(prompts)), prompt_file=str(path))
    up_front = time.perf_counter() - t0

    t0 = time.perf_counter()
    ids = TokenIds(tokenizer, prompts, range(len(prompts)), prompt_file=str(path), chunk=args.window)
    ids[0]
    first = time.perf_counter() - t0
    worst, last = 0.0, time.perf_counter()
    done = threading.Event()
    threading.Thread(target=lambda: (ids.wait_all(), done.set()), daemon=True).start()
    while not done.is_set():  # the launching thread: how long between two of its Python steps
        now = time.perf_counter()
        worst, last = max(worst, now - last), now
    every = time.perf_counter() - t0
    ids.close()

    print(f"{len(prompts)} {args.task} prompts, {n_tokens} tokens, tokenizer {args.tokenizer}, window {args.window}")
    print(f"up front (one batched call): {up_front:.2f} s")
    print(
        f"ahead: first window ready after {first:.2f} s ({first / up_front:.0%} of up front), "
        f"all after {every:.2f} s; launching thread's worst gap meanwhile {worst * 1e3:.0f} ms"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
