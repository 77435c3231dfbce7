"""Random init of every paper model at full size, offline, on one GPU.

Builds each shipped paper config (reprflow/models/configs) with each random scheme, with the hub
disabled and an empty HF cache, checks the parameter count and the drawn weight scale, and runs
one forward pass. Prints one JSON line per (model, scheme): build seconds, parameters, the
empirical std of a q/in_proj weight against the scheme's formula, forward seconds, and the mean
inter-token cosine similarity of the first and last hidden state (a quick look at Fig. 3's
quantity).

    python benchmarks/random_init_offline.py --tokens 512 --out random_init.jsonl          # all models, CUDA
    python benchmarks/random_init_offline.py --device cpu --models AntonV/mamba2-130m-hf --tokens 64
"""

from __future__ import annotations

import argparse
import json
import math
import os
import tempfile
import time

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ.setdefault("HF_HOME", tempfile.mkdtemp(prefix="empty-hf-home-"))

import torch  # noqa: E402

from reprflow.models import InitSpec, load_model, model_provenance  # noqa: E402
from reprflow.models.shipped import shipped_ids  # noqa: E402

SCHEMES = {
    "random": InitSpec("default"),
    "gaussian-0.02": InitSpec("gaussian", {"std": 0.02}),
    "gaussian-0.2": InitSpec("gaussian", {"std": 0.2}),
    "xavier": InitSpec("xavier"),
    "he": InitSpec("he"),
}


def _probe_weight(model):
    """The first attention q / SSM in_proj weight: (name, tensor [out, in])."""
    for name, param in model.named_parameters():
        if name.endswith(("q_proj.weight", "query_key_value.weight", "in_proj.weight")):
            return name, param
    raise AssertionError("no probe weight")


def _expected_std(spec, weight):
    out, fan_in = weight.shape
    if spec.scheme == "gaussian":
        return spec.params["std"]
    if spec.scheme == "xavier":
        return spec.params["gain"] * math.sqrt(2.0 / (fan_in + out))
    if spec.scheme == "he":
        return math.sqrt(2.0 / fan_in)
    return None


def _mean_cosine(h):
    x = torch.nn.functional.normalize(h[0].double(), dim=-1)  # [T, d]
    sim = x @ x.T
    n = sim.shape[0]
    return float((sim.sum() - sim.diagonal().sum()) / (n * (n - 1)))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--tokens", type=int, default=512)
    parser.add_argument("--out", default="random_init.jsonl")
    parser.add_argument("--schemes", default=",".join(SCHEMES))
    parser.add_argument("--models", default=",".join(shipped_ids()), help="comma-separated hub ids")
    parser.add_argument("--device", default="cuda")
    args = parser.parse_args()
    device = torch.device(args.device)
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    ids = torch.randint(0, 50000, (1, args.tokens), generator=torch.Generator().manual_seed(0)).to(device)
    with open(args.out, "w") as fh:
        for hf_id in args.models.split(","):
            for name in args.schemes.split(","):
                spec = SCHEMES[name]
                sync()
                t0 = time.perf_counter()
                model = load_model(hf_id, init=spec, seed=0, dtype=dtype, device=device)
                sync()
                build_s = time.perf_counter() - t0
                wname, weight = _probe_weight(model)
                with torch.no_grad():
                    t0 = time.perf_counter()
                    out = model(ids, output_hidden_states=True)
                    sync()
                    fwd_s = time.perf_counter() - t0
                hs = out.hidden_states
                row = {
                    "model": hf_id,
                    "init": name,
                    "tokens": args.tokens,
                    "params": sum(p.numel() for p in model.parameters()),
                    "config_source": model_provenance(model)["config_source"],
                    "build_s": round(build_s, 2),
                    "forward_s": round(fwd_s, 2),
                    "probe_weight": wname,
                    "std": float(weight.float().std()),
                    "expected_std": _expected_std(spec, weight),
                    "cos_first": round(_mean_cosine(hs[0]), 4),
                    "cos_last": round(_mean_cosine(hs[-1]), 4),
                    "finite": bool(all(torch.isfinite(h).all() for h in hs)),
                }
                print(json.dumps(row), flush=True)
                fh.write(json.dumps(row) + "\n")
                del model, out, hs
                if device.type == "cuda":
                    torch.cuda.empty_cache()


if __name__ == "__main__":
    main()
