"""MDQA: multi-document question answering prompts (Liu et al. 2024; paper App. B).

A prompt lists ``n_items`` Wikipedia passages for one NQ-Open question: the gold passage
(from ``nq-open-oracle.jsonl.gz``) at position ``label`` and ``n_items - 1`` distractors.

The template reproduces, byte for byte, nelson-liu/lost-in-the-middle
``src/lost_in_the_middle/prompts/qa.prompt`` as read by ``get_qa_prompt`` in
``src/lost_in_the_middle/prompting.py`` (template read with ``.rstrip("\\n")``, documents
formatted ``Document [{i}](Title: {title}) {text}`` with 1-based ``i`` and joined by ``\\n``),
checked against the literal expected string of their ``tests/test_prompting.py``.

Distractor choice (paper App. B: "sample n - 1 distractors ... randomly shuffle the
distractors and then insert the gold document at ID k"; see :mod:`reprflow.prompts.distractors`
for the pools): each prompt draws its own ``n_items - 1`` distractors uniformly without
replacement from its question's pool, in random order, from its own seeded stream. When that
sample would break the length cap, the passages are taken in a fresh random order, skipping a
passage only when taking it would leave no way to stay under the cap, and the chosen ones are
shuffled again (so shorter passages are not biased towards any position); such a prompt is
marked ``adjusted``. Questions whose gold passage cannot fit the cap even with the shortest
distractors of their pool are left out of the question pool for that item count. If the cap is
still missed on a redraw (the length estimate is off by a token or two for a question at the
edge), the prompt switches to a question that fits the shrunken budget; so it does after
:data:`REPLACE_AFTER` redraws of any kind (at 300 tokens a question may admit only a few short
distractor pairs, and its repeats would be byte-identical).

Split groups (:func:`gold_passage_groups`): a record's ``group`` is the connected component of the
question it used in the question <-> gold-passage graph, so that the probe split keeps on one side
not only the ~9.5 prompts of a question but also every question with the same gold passage (Liu
et al.'s oracle file has 60 passages that are gold for 128 questions, up to whitespace and
punctuation). A question whose gold passage is its own keeps its oracle index as its group.
"""

from __future__ import annotations

import gzip
import json
import logging
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from reprflow.errors import PromptError
from reprflow.prompts.sampling import Draft, count_tokens, prompt_rng

__all__ = [
    "QA_TEMPLATE",
    "Passage",
    "OracleExample",
    "load_oracle",
    "passage_key",
    "gold_passage_groups",
    "format_document",
    "format_mdqa_prompt",
    "MDQASampler",
    "MDQAPlan",
]

logger = logging.getLogger(__name__)

#: Liu et al.'s qa.prompt after ``.rstrip("\n")``.
QA_TEMPLATE = (
    "Write a high-quality answer for the given question using only the provided search results "
    "(some of which might be irrelevant).\n"
    "\n"
    "{search_results}\n"
    "\n"
    "Question: {question}\n"
    "Answer:"
)


@dataclass(frozen=True)
class Passage:
    """A Wikipedia passage: ``title`` and ``text``."""

    title: str
    text: str


@dataclass(frozen=True)
class OracleExample:
    """One NQ-Open question with its answers and gold passage."""

    question: str
    answers: tuple[str, ...]
    gold: Passage


def _open_text(path: Path):
    return gzip.open(path, "rt", encoding="utf-8") if path.suffix == ".gz" else open(path, encoding="utf-8")


def load_oracle(path: str | os.PathLike) -> list[OracleExample]:
    """Read Liu et al.'s ``nq-open-oracle.jsonl[.gz]``.

    Each line has ``question`` (str), ``answers`` (list of str) and ``ctxs`` (list of
    {title, text, hasanswer, isgold}); the gold passage is the ctx with ``isgold`` true.

    Returns
    -------
    list of OracleExample, in file order

    Raises
    ------
    PromptError
        Missing file, bad JSON, or a record without exactly one gold ctx; names the line.
    """
    path = Path(path)
    if not path.is_file():
        raise PromptError(f"MDQA oracle file {path}: not found; expected Liu et al.'s nq-open-oracle.jsonl.gz")
    out = []
    with _open_text(path) as fh:
        for lineno, line in enumerate(fh, 1):
            try:
                rec = json.loads(line)
                golds = [c for c in rec["ctxs"] if c.get("isgold") is True]
                if len(golds) != 1:
                    raise ValueError(f"expected exactly one ctx with isgold true, got {len(golds)}")
                answers = tuple(rec["answers"])
                if not answers or not all(isinstance(a, str) and a for a in answers):
                    raise ValueError(f"answers must be a non-empty list of non-empty strings, got {answers!r}")
                q = rec["question"]
                if not isinstance(q, str) or not q:
                    raise ValueError(f"question must be a non-empty string, got {q!r}")
                out.append(OracleExample(q, answers, Passage(str(golds[0]["title"]), str(golds[0]["text"]))))
            except (ValueError, KeyError, TypeError) as exc:
                raise PromptError(f"MDQA oracle file {path}, line {lineno}: {type(exc).__name__}: {exc}") from exc
    if not out:
        raise PromptError(f"MDQA oracle file {path}: no records")
    return out


_NON_WORD = re.compile(r"\W+")


def passage_key(passage: Passage) -> str:
    """Identity of a passage for the split groups: its title and text, casefolded, as word sequences.

    Every run of non-word characters (spaces, newlines, no-break spaces, punctuation) becomes one
    space, so copies of a passage that differ only there, as some gold passages of the oracle
    file do (``"word ,"`` against ``"word,"``, ``\\xa0`` against a space), get the same key.
    """
    title, text = (_NON_WORD.sub(" ", s.casefold()).strip() for s in (passage.title, passage.text))
    return f"{title}\n{text}"


def gold_passage_groups(examples: Sequence[OracleExample]) -> np.ndarray:
    """Split group of each oracle question: its component of the question <-> gold-passage graph.

    Two questions are joined when they have the same gold passage (same :func:`passage_key`) or the
    same question text, transitively (union-find over the oracle indices). Prompts of one group
    must all sit on one side of a train/validation split; otherwise a validation prompt can share
    its gold passage, the document the probe has to locate, with training prompts.

    Parameters
    ----------
    examples : sequence of OracleExample, length n_questions
        In oracle-file order (index ``q`` = the question's 0-based line).

    Returns
    -------
    ndarray of shape (n_questions,), int64
        ``groups[q]`` is the smallest oracle index in ``q``'s component, so a question that shares
        nothing keeps ``groups[q] == q``, and ``groups[groups[q]] == groups[q]``.
    """
    parent = np.arange(len(examples), dtype=np.int64)

    def root(q: int) -> int:
        while parent[q] != q:
            parent[q] = parent[parent[q]]  # path halving
            q = int(parent[q])
        return q

    first: dict[tuple[str, str], int] = {}  # (kind, key) -> the first question holding it
    for q, e in enumerate(examples):
        for node in (("gold", passage_key(e.gold)), ("question", e.question)):
            other = first.setdefault(node, q)
            a, b = root(q), root(other)
            parent[max(a, b)] = min(a, b)
    return np.array([root(q) for q in range(len(examples))], dtype=np.int64)


def format_document(index: int, passage: Passage) -> str:
    """``Document [{index}](Title: {title}) {text}`` (``index`` is 1-based, as in Liu et al.)."""
    return f"Document [{index}](Title: {passage.title}) {passage.text}"


def format_mdqa_prompt(question: str, documents: Sequence[Passage]) -> str:
    """Liu et al.'s QA prompt for ``question`` over ``documents`` (in the given order)."""
    if not question:
        raise PromptError("MDQA prompt: the question is empty")
    if not documents:
        raise PromptError("MDQA prompt: no documents")
    search_results = "\n".join(format_document(i + 1, p) for i, p in enumerate(documents))
    return QA_TEMPLATE.format(question=question, search_results=search_results)


#: Redraws after which a prompt switches to another question (see the module docstring).
REPLACE_AFTER = 10


class MDQAPlan:
    """MDQA prompts with a fixed item count over a fixed question order.

    ``draft(index, ...)`` uses question ``order[index]`` (or a replacement, see the module
    docstring). The gold passage goes at ``label``; the distractors are a random sample of the
    question's pool, in random order, kept within ``budget``. The draft is deterministic given
    its arguments: its random stream is ``seed_key + (stream, n_items, index, attempt)``.

    Attributes
    ----------
    order : ndarray of shape (n_prompts,), int64
        Planned question (oracle index) of each prompt.
    min_lengths : ndarray of shape (n_questions,), int64
        Estimated length of each question's shortest prompt (gold + its ``n_items - 1``
        shortest pool passages).
    n_excluded : int
        Questions left out because even their shortest prompt exceeds the cap.
    """

    def __init__(
        self,
        sampler: MDQASampler,
        *,
        n_items: int,
        order: np.ndarray,
        n_excluded: int,
        stream: int,
        min_lengths: np.ndarray,
    ):
        self.sampler = sampler
        self.n_items = n_items
        self.order = order
        self.n_excluded = n_excluded
        self.stream = stream
        self.min_lengths = min_lengths

    def draft(self, index: int, label: int, *, attempt: int, budget: int | None) -> Draft:
        """Prompt ``index``: gold at ``label``, ``n_items - 1`` sampled distractors within ``budget``.

        ``budget=None``: the natural prompt (a uniform sample of the pool, in random order).
        """
        s = self.sampler
        rng = prompt_rng(s.seed_key, self.stream, self.n_items, index, attempt)
        q = int(self.order[index])
        if attempt >= REPLACE_AFTER or (budget is not None and self.min_lengths[q] > budget):
            # this question cannot fit the (shrunken) budget, or keeps giving prompts already
            # drawn (a short cap leaves few distractor choices): take one that can fit, if any
            fits = np.flatnonzero(self.min_lengths <= (np.inf if budget is None else budget))
            if len(fits):
                q = int(fits[rng.integers(len(fits))])
        pool = s.pools.pools[q]
        lens = s.pool_lengths[q]
        k = self.n_items - 1
        perm = rng.permutation(len(pool))
        room = None if budget is None else budget - s.base_lengths[q] - s.gold_lengths[q]
        if room is None or lens[perm[:k]].sum() <= room:
            chosen, adjusted = perm[:k], False
        else:
            chosen, adjusted = rng.permutation(perm[_fit_in_order(lens[perm], k, room)]), True
        docs = [s.pools.passages[j] for j in pool[chosen]]
        docs.insert(label, s.examples[q].gold)
        prompt = format_mdqa_prompt(s.examples[q].question, docs)
        return Draft(prompt, s.examples[q].answers, adjusted, group=int(s.groups[q]), question=q)


def _fit_in_order(lengths: np.ndarray, k: int, room: int) -> np.ndarray:
    """First ``k`` indices of ``lengths`` in order, skipping any that would make the rest unfittable.

    Index ``j`` is taken when ``used + lengths[j] + (sum of the r smallest lengths after j)``
    stays within ``room``, with ``r`` the slots left after taking it. If even the ``k``
    smallest overflow, the ``k`` smallest are returned (the caller's token check then fails).

    Returns
    -------
    ndarray of int64, shape (k,), increasing
    """
    chosen: list[int] = []
    used = 0
    for j in range(len(lengths)):
        r = k - len(chosen) - 1
        rest = lengths[j + 1 :]
        if len(rest) < r:
            break
        tail = int(np.partition(rest, r - 1)[:r].sum()) if r > 0 else 0
        if used + int(lengths[j]) + tail <= room:
            chosen.append(j)
            used += int(lengths[j])
            if len(chosen) == k:
                return np.asarray(chosen, dtype=np.int64)
    return np.sort(np.argsort(lengths, kind="stable")[:k])


class MDQASampler:
    """MDQA prompt factory over an oracle file and per-question distractor pools.

    Parameters
    ----------
    examples : list of OracleExample, length n_questions
    pools : DistractorPools
        Distractor candidates per question, best first; none contains an answer string.
    tokenizer : transformers.PreTrainedTokenizerFast
        Used to estimate per-passage lengths for the length-aware distractor choice.
    seed_key : tuple of int

    Attributes
    ----------
    groups : ndarray of shape (n_questions,), int64
        Split group of each question (:func:`gold_passage_groups`), the drafts' ``group``.

    Notes
    -----
    Length estimate of a prompt: ``base[q] + sum over its documents of (len(document) + 1)``,
    the 1 being the joining newline, and ``base[q]`` the exact length of the question's
    one-document prompt minus its document's share. BPE is close to additive across the
    newline-separated documents (checked: exact for almost all prompts); the exact count is
    always taken from the tokenizer afterwards, and an overshoot shrinks the next budget.
    """

    task = "mdqa"
    min_items = 2

    def __init__(self, examples, pools, tokenizer, *, seed_key: tuple[int, ...]):
        if len(examples) != len(pools.pools):
            raise PromptError(f"MDQA: {len(examples)} questions but {len(pools.pools)} distractor pools")
        self.examples = examples
        self.pools = pools
        self.seed_key = seed_key
        self.groups = gold_passage_groups(examples)
        self.gold_lengths = count_tokens([format_document(1, e.gold) for e in examples], tokenizer) + 1
        one_doc = count_tokens([format_mdqa_prompt(e.question, [e.gold]) for e in examples], tokenizer)
        self.base_lengths = one_doc - self.gold_lengths
        passage_lengths = count_tokens([format_document(1, p) for p in pools.passages], tokenizer) + 1
        self.pool_lengths = [passage_lengths[pool] for pool in pools.pools]

    def max_items(self) -> int | None:
        """1 + the smallest pool size: every question must have ``n_items - 1`` distractors."""
        return 1 + self.pools.smallest_pool()

    def plan(self, n_items: int, n_prompts: int, *, stream: int, max_tokens: int | None) -> MDQAPlan:
        """Assign questions to ``n_prompts`` prompts with ``n_items`` documents each.

        Questions that can fit ``max_tokens`` (all, if None) are drawn without replacement in a
        seeded random order; past that many prompts a fresh permutation follows, so questions
        repeat evenly (each ``floor`` or ``ceil`` of ``n_prompts / n_usable`` times).
        """
        k = n_items - 1
        if n_items > self.max_items():
            raise PromptError(
                f"MDQA: n_items={n_items} needs {k} distractors per question but the smallest pool has "
                f"{self.max_items() - 1}"
            )
        shortest = np.array([np.partition(lens, k - 1)[:k].sum() for lens in self.pool_lengths], dtype=np.int64)
        min_lengths = self.base_lengths + self.gold_lengths + shortest
        fits = np.arange(len(self.examples)) if max_tokens is None else np.flatnonzero(min_lengths <= max_tokens)
        if not len(fits):
            raise PromptError(f"MDQA: no question fits max_tokens={max_tokens} with n_items={n_items}")
        rng = prompt_rng(self.seed_key, stream, n_items)
        reps = -(-n_prompts // len(fits))
        order = np.concatenate([rng.permutation(fits) for _ in range(reps)])[:n_prompts]
        return MDQAPlan(
            self,
            n_items=n_items,
            order=order,
            n_excluded=len(self.examples) - len(fits),
            stream=stream,
            min_lengths=min_lengths,
        )
