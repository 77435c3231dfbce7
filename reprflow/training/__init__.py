"""Training the matched model suite: corpus, architecture sizing, the seeded resumable loop.

Modules (one job each):

- :mod:`~reprflow.training.corpus`: documents of a named corpus, the held-out split, tokenization.
- :mod:`~reprflow.training.sizing`: one family's config at a width and depth, and the sizing of
  the four paper families to one parameter count.
- :mod:`~reprflow.training.block_counts`: the matched families' parameter counts by formula, and
  the SSM block count that matches GPT-NeoX's (no torch: the workflow's disk estimate uses it).
- :mod:`~reprflow.training.recipe`: the validated ``train:`` block of a model entry.
- :mod:`~reprflow.training.baseline`: the unigram cross-entropy baseline (float64).
- :mod:`~reprflow.training.head_loss`: the output projection + cross-entropy, chunked (no full logits).
- :mod:`~reprflow.training.kernels`: which kernels a training step runs (the Mamba-1 path per device).
- :mod:`~reprflow.training.loop`: the training step and loop with atomic checkpoints, metrics
  and ``save_pretrained``.

See docs/training.md.
"""
