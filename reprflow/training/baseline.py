"""The unigram baseline: the validation cross-entropy of a model that ignores context.

``H = -mean_t log p(x_t)`` over the validation tokens, with ``p`` the training-split token
frequencies, add-``alpha`` smoothed over the ``vocab_size`` ids (so unseen tokens get a finite
loss). Computed in float64. A trained model whose validation loss is not clearly below this
has learned only token frequencies.
"""

from __future__ import annotations

import numpy as np

__all__ = ["unigram_cross_entropy"]


def unigram_cross_entropy(train: np.ndarray, val: np.ndarray, vocab_size: int, *, alpha: float = 1.0) -> float:
    """Validation cross-entropy in nats per token of the smoothed training unigram.

    Parameters
    ----------
    train, val : 1-D integer arrays
        Token streams, ids in ``[0, vocab_size)``.
    vocab_size : int
        Number of ids the distribution spreads over (the model's output size).
    alpha : float
        Add-alpha smoothing count.
    """
    counts = np.bincount(np.asarray(train, dtype=np.int64), minlength=vocab_size).astype(np.float64)
    logp = np.log(counts + alpha) - np.log(counts.sum() + alpha * vocab_size)
    return float(-logp[np.asarray(val, dtype=np.int64)].mean())
