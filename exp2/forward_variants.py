"""The whole Mamba-2.8B forward with Gluon scan variants side by side (batch_tokens.py's timing).

--gluon-configs takes 'default' or names of scan_variants.VARIANTS (quoted).
"""

import contextlib
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "benchmarks"), str(ROOT / "exp2"), str(ROOT)]
import batch_tokens  # noqa
import scan_variants  # noqa
from reprflow.kernels import ops  # noqa

CURRENT = [ops.selective_scan_gluon]


def _dispatch(*a, **kw):
    return CURRENT[0](*a, **kw)


ops.selective_scan_gluon = _dispatch  # before any model runs: the chooser's Gluon candidate calls this


class Variant(str):
    pass


def parse(text):
    if text == "default":
        return None
    if text not in scan_variants.VARIANTS:
        raise SystemExit(f"unknown variant {text!r}")
    return Variant(text)


@contextlib.contextmanager
def variant(cfg):
    prev = CURRENT[0]
    if cfg is not None:
        CURRENT[0] = scan_variants.VARIANTS[cfg]
    try:
        yield
    finally:
        CURRENT[0] = prev


batch_tokens.parse_gluon_config = parse
batch_tokens.gluon_scan_config = variant
sys.exit(batch_tokens.main())
