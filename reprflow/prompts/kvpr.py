"""KVPR: key-value pair retrieval prompts (Liu et al. 2024, "Lost in the Middle"; paper App. B).

A prompt is a JSON object of ``n_items`` random UUID4 key/value pairs followed by a query
key; the gold item is the pair at position ``label`` (0-based) and the answer is its value.

The template and the record formatting reproduce, byte for byte,
nelson-liu/lost-in-the-middle ``src/lost_in_the_middle/prompts/kv_retrieval.prompt`` as read by
``get_kv_retrieval_prompt`` in ``src/lost_in_the_middle/prompting.py`` (template file read with
``.rstrip("\\n")``; records joined as ``{`` / `` `` + ``"k": "v"`` + ``,\\n`` / ``}``), checked
against the literal expected string of their ``tests/test_prompting.py``.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from reprflow.errors import PromptError
from reprflow.prompts.sampling import Draft, prompt_rng

__all__ = ["KVPR_TEMPLATE", "uuid4_strings", "format_kvpr_prompt", "KVPRSampler", "KVPRPlan"]

#: Liu et al.'s kv_retrieval.prompt after ``.rstrip("\n")``.
KVPR_TEMPLATE = (
    "Extract the value corresponding to the specified key in the JSON object below.\n"
    "\n"
    "JSON data:\n"
    "{formatted_kv_records}\n"
    "\n"
    'Key: "{key}"\n'
    "Corresponding value:"
)


def uuid4_strings(rng: np.random.Generator, n: int) -> list[str]:
    """Draw ``n`` random UUID4 strings from ``rng`` (never from OS randomness).

    Each UUID is 16 random bytes with the RFC 4122 version (4) and variant (10xx) bits set,
    formatted ``8-4-4-4-12`` in lower-case hex, like ``str(uuid.uuid4())``.

    Parameters
    ----------
    rng : numpy.random.Generator
    n : int

    Returns
    -------
    list of str, length n
    """
    raw = rng.integers(0, 256, size=(n, 16), dtype=np.uint8)
    raw[:, 6] = (raw[:, 6] & 0x0F) | 0x40
    raw[:, 8] = (raw[:, 8] & 0x3F) | 0x80
    out = []
    for row in raw:
        h = row.tobytes().hex()
        out.append(f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}")
    return out


def format_kvpr_prompt(pairs: Sequence[tuple[str, str]], key: str) -> str:
    """Liu et al.'s KV-retrieval prompt for ``pairs`` (in the given order) and query ``key``.

    Raises
    ------
    PromptError
        If ``pairs`` has fewer than 2 items, duplicate keys, or lacks ``key`` (Liu's checks).
    """
    keys = [k for k, _ in pairs]
    if len(pairs) < 2:
        raise PromptError(f"KVPR prompt needs at least 2 key/value pairs, got {len(pairs)}")
    if len(set(keys)) != len(keys):
        raise PromptError("KVPR prompt: duplicate keys in the key/value pairs")
    if key not in keys:
        raise PromptError(f"KVPR prompt: query key {key!r} is not among the keys")
    last = len(pairs) - 1
    records = "".join(
        ("{" if i == 0 else " ") + f'"{k}": "{v}"' + (",\n" if i != last else "}") for i, (k, v) in enumerate(pairs)
    )
    return KVPR_TEMPLATE.format(formatted_kv_records=records, key=key)


class KVPRPlan:
    """KVPR prompts with a fixed item count; prompt ``index`` is drawn from its own seeded stream."""

    def __init__(self, *, n_items: int, seed_key: tuple[int, ...]):
        self.n_items = n_items
        self.seed_key = seed_key

    def draft(self, index: int, label: int, *, attempt: int, budget: int | None) -> Draft:
        """Draw prompt ``index`` with the gold pair at ``label``; ``attempt`` > 0 redraws all UUIDs.

        ``budget`` is ignored: KVPR items are fixed-format, so a prompt over the cap is redrawn.
        """
        rng = prompt_rng(self.seed_key, index, attempt)
        while True:  # a repeated key has probability ~n^2 / 2^123; redraw from the same stream
            uuids = uuid4_strings(rng, 2 * self.n_items)
            keys, values = uuids[0::2], uuids[1::2]
            if len(set(keys)) == len(keys):
                break
        pairs = list(zip(keys, values))
        return Draft(prompt=format_kvpr_prompt(pairs, keys[label]), answer=values[label], adjusted=False)


class KVPRSampler:
    """Factory of :class:`KVPRPlan` for one (seed, target) pair.

    Parameters
    ----------
    seed_key : tuple of int
        Entropy prefix shared by every random stream of this prompt set.
    """

    task = "kvpr"
    min_items = 2

    def __init__(self, *, seed_key: tuple[int, ...]):
        self.seed_key = seed_key

    def max_items(self) -> int | None:
        """No upper bound: UUIDs are unlimited."""
        return None

    def plan(self, n_items: int, n_prompts: int, *, stream: int, max_tokens: int | None) -> KVPRPlan:
        """Plan ``n_prompts`` prompts with ``n_items`` pairs on random stream ``stream``."""
        return KVPRPlan(n_items=n_items, seed_key=(*self.seed_key, stream, n_items))
