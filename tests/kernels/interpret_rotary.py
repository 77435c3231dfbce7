"""Run the fused rotary kernel in Triton's CPU interpreter against transformers (a script).

Started by ``test_interpreted.py`` in a subprocess with ``TRITON_INTERPRET=1``. float32:
equal to transformers' ``apply_rotary_pos_emb``; bfloat16: within a few bf16 steps, because
the interpreter truncates float32 -> bfloat16 where the GPU rounds to nearest even (the GPU
test asserts equality). Exit status 0 and "ok" on success.
"""

import sys

import torch

from reprflow.kernels.rotary import _launch, rotary_qk_reference


def _case(batch, n_tokens, heads, head_dim, rot, dtype, cos_batch) -> None:
    g = torch.Generator().manual_seed(batch * 1000 + n_tokens)
    qkv = torch.randn(batch, n_tokens, heads * 3 * head_dim, generator=g).to(dtype)
    inv = 1.0 / (10000 ** (torch.arange(0, rot, 2).float() / rot))
    freqs = torch.arange(n_tokens).float()[None, :, None] * inv
    emb = torch.cat([freqs, freqs], -1).expand(cos_batch, -1, -1).contiguous()
    cos, sin = emb.cos().to(dtype), emb.sin().to(dtype)
    want_q, want_k = rotary_qk_reference(qkv, cos, sin, num_heads=heads, head_dim=head_dim)
    _launch(qkv, cos, sin, num_heads=heads, head_dim=head_dim, block_r=64)  # rotates q and k in place in qkv
    q, k = (
        qkv.view(batch, n_tokens, heads, 3 * head_dim)[..., i * head_dim : (i + 1) * head_dim].transpose(1, 2)
        for i in (0, 1)
    )
    for got, want, name in ((q, want_q, "q"), (k, want_k, "k")):
        if dtype == torch.float32:
            ok = torch.equal(got, want)
        else:  # three truncations instead of three roundings: a few bf16 steps of |x| <~ 4
            ok = bool(((got.float() - want.float()).abs() <= 2.0**-5).all())
        if not ok:
            print(f"rotary {name} differs: {batch}x{n_tokens} heads={heads} head_dim={head_dim} rot={rot} {dtype}")
            sys.exit(1)


def main() -> None:
    for case in (
        (2, 5, 3, 80, 20, torch.float32, 1),  # Pythia's 80-dim heads, a quarter rotated
        (2, 5, 3, 80, 20, torch.bfloat16, 1),
        (3, 4, 2, 64, 64, torch.float32, 3),  # fully rotated, per-row positions
        (1, 7, 5, 16, 8, torch.bfloat16, 1),
    ):
        _case(*case)
    print("ok")


if __name__ == "__main__":
    main()
