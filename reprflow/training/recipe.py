"""The ``train:`` block of a model entry as a typed recipe (reprflow/data/schema.yaml documents each key;
the schema fills defaults before this sees the dict)."""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, fields

from reprflow.config import TRAIN_EXECUTION_KEYS

__all__ = ["TrainSpec"]


@dataclass(frozen=True)
class TrainSpec:
    """How to train one model. Token counts are the model's own tokens."""

    corpus: str = "nq_open"
    val_fraction: float = 0.1
    width: int = 64
    depth: int = 2  # Transformer layers; SSMs get the block count that matches the parameters
    context: int = 256  # trained sequence length
    tokens: int = 100_000  # token budget (steps = ceil(tokens / (batch_size * context)))
    batch_size: int = 4
    optimizer: str = "adamw"
    lr: float = 3e-3
    min_lr_ratio: float = 0.1  # cosine decay to lr * min_lr_ratio
    warmup_steps: int = 10
    weight_decay: float = 0.1
    betas: tuple[float, float] = (0.9, 0.95)
    grad_clip: float = 1.0
    gpt_neo_query_scale: bool = True  # train GPT-Neo in the parameterization of scaled attention (loop.py)
    seed: int = 0  # model init
    data_seed: int = 0  # batch order: same data_seed + corpus + tokenizer = same token stream
    eval_every: int = 20  # steps between validation-loss rows
    eval_tokens: int = 16384  # validation tokens per evaluation (a fixed prefix of the val stream)
    checkpoint_every: int = 20  # steps between atomic checkpoints
    device: str = "auto"  # auto | cpu | cuda (execution only: not part of the digest)
    threads: int | None = None  # CPU threads (execution only)

    EXECUTION_KEYS = TRAIN_EXECUTION_KEYS

    @classmethod
    def from_dict(cls, block: dict) -> "TrainSpec":
        known = {f.name for f in fields(cls)}
        values = {k: v for k, v in block.items() if k in known}
        if "betas" in values:
            values["betas"] = tuple(values["betas"])
        return cls(**values)

    def steps(self) -> int:
        per_step = self.batch_size * self.context
        return max(1, -(-self.tokens // per_step))

    def digest(self) -> str:
        """sha256 of the science keys (a checkpoint from another recipe is not resumed)."""
        science = {k: v for k, v in asdict(self).items() if k not in self.EXECUTION_KEYS}
        return hashlib.sha256(json.dumps(science, sort_keys=True).encode()).hexdigest()
