"""The whole Mamba-2.8B forward with Gluon scan variants side by side (batch_tokens.py's timing)."""
import contextlib, sys
from pathlib import Path
ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "benchmarks"), str(ROOT / "exp"), str(ROOT)]
import batch_tokens  # noqa
import scan_exp  # noqa
from reprflow.kernels import selective_scan_gluon as module  # noqa


class Variant(tuple):
    def __repr__(self):
        return f"silu={self[0]} unroll={self[1]}"


def parse(text):
    if text == "default":
        return None
    silu, unroll = (int(v) for v in text.split(","))
    return Variant((silu, unroll))


class _Launch:
    def __init__(self, silu):
        self.silu = silu

    def __getitem__(self, grid):
        k = scan_exp._selective_scan_gluon_kernel[grid]
        return lambda *a, **kw: k(*a, SILU_TANH=self.silu, **kw)


@contextlib.contextmanager
def variant(cfg):
    kern, default = getattr(module, "_selective_scan_gluon_kernel", None), module.default_gluon_config
    if cfg is not None:
        module._selective_scan_gluon_kernel = _Launch(cfg[0])
        module.default_gluon_config = lambda channels, batch: module.GluonScanConfig(1, 1, cfg[1], True, 2)
    try:
        yield
    finally:
        module._selective_scan_gluon_kernel, module.default_gluon_config = kern, default


batch_tokens.parse_gluon_config = parse
batch_tokens.gluon_scan_config = variant
sys.exit(batch_tokens.main())
