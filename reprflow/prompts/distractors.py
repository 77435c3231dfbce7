"""Distractor pools for MDQA: one ranked list of candidate passages per oracle question.

Two sources:

- :func:`read_liu_distractors`: the retrieval distractors of Liu et al.'s
  ``nq-open-{N}_total_documents_gold_at_{K}.jsonl[.gz]`` files (Contriever top hits without
  the answer), in their retrieval order. Used when the config points at a folder of them.
- :func:`tfidf_distractor_pools` (offline default): the question's nearest neighbours by
  TF-IDF cosine among the *other* questions' gold passages.

Both filters drop any passage whose title or text contains one of the question's answer
strings, the question's own gold text, and repeated texts. An answer is "contained" when it
occurs case-insensitively as a whole word sequence: not preceded or followed by a letter, digit
or underscore. A plain substring test would be wrong for short answers: the answer "S" would
exclude every passage, "Ed" 94% of them, "201" every passage mentioning 2015. (Liu et al.'s
``hasanswer`` comes from DPR's token-level match, which also compares whole tokens.)
"""

from __future__ import annotations

import gzip
import json
import logging
import os
import re
from collections.abc import Sequence
from functools import lru_cache
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from dataclasses import dataclass

from reprflow.errors import PromptError
from reprflow.prompts.mdqa import OracleExample, Passage

__all__ = [
    "LIU_FILE_PATTERN",
    "DistractorPools",
    "contains_answer",
    "filter_pool",
    "tfidf_distractor_pools",
    "tie_break_ranks",
    "read_liu_distractors",
    "liu_distractor_file",
]

logger = logging.getLogger(__name__)

#: File names of Liu et al.'s multi-document QA data.
LIU_FILE_PATTERN = re.compile(r"^nq-open-(\d+)_total_documents_gold_at_(\d+)\.jsonl(\.gz)?$")


@dataclass(frozen=True)
class DistractorPools:
    """Candidate distractors per question, as indices into one passage table.

    Attributes
    ----------
    passages : list of Passage, length n_passages
    pools : list of ndarray of int64, length n_questions
        ``pools[q]`` lists passage indices for question ``q``, best first.
    source : str
        ``"tfidf"`` or ``"liu"``.
    """

    passages: list[Passage]
    pools: list[np.ndarray]
    source: str

    def smallest_pool(self) -> int:
        """Size of the smallest pool."""
        return min(len(p) for p in self.pools)


@lru_cache(maxsize=8192)
def _answer_matcher(answers: tuple[str, ...]) -> tuple[tuple[str, ...], re.Pattern]:
    lowered = tuple(sorted({a.lower() for a in answers}, key=lambda a: (-len(a), a)))
    alts = "|".join(re.escape(a) for a in lowered)
    return lowered, re.compile(rf"(?<!\w)(?:{alts})(?!\w)")


def _haystack(passage: Passage) -> str:
    return f"{passage.title}\n{passage.text}".lower()


def contains_answer(passage: Passage, answers: Sequence[str], *, haystack: str | None = None) -> bool:
    """True when ``passage``'s title or text contains an answer as a whole word sequence (any case).

    ``haystack`` may pass ``f"{title}\\n{text}".lower()`` precomputed.
    """
    hay = _haystack(passage) if haystack is None else haystack
    lowered, pattern = _answer_matcher(tuple(answers))
    return any(a in hay for a in lowered) and pattern.search(hay) is not None


def filter_pool(
    example: OracleExample,
    candidates,
    passages: Sequence[Passage],
    *,
    limit: int | None = None,
    haystacks: Sequence[str] | None = None,
) -> np.ndarray:
    """Keep the candidate indices that are usable distractors for ``example``, in the given order.

    Drops passages containing an answer string, passages with the gold's text, and
    repeated texts; stops after ``limit`` kept passages.

    Parameters
    ----------
    example : OracleExample
    candidates : iterable of int
        Indices into ``passages``, best first.
    passages : sequence of Passage
    limit : int, optional
    haystacks : sequence of str, optional
        Lower-cased ``title\\ntext`` of each passage, precomputed by the caller.

    Returns
    -------
    ndarray of int64
    """
    seen = {example.gold.text}
    lowered, pattern = _answer_matcher(tuple(example.answers))
    out = []
    for j in candidates:
        p = passages[j]
        if p.text in seen:
            continue
        hay = _haystack(p) if haystacks is None else haystacks[j]
        # plain substring test first: cheap, and the whole-word regex only runs on a hit
        if any(a in hay for a in lowered) and pattern.search(hay) is not None:
            continue
        seen.add(p.text)
        out.append(int(j))
        if limit is not None and len(out) == limit:
            break
    return np.asarray(out, dtype=np.int64)


def tie_break_ranks(question_index: int, n_passages: int) -> np.ndarray:
    """Fixed pseudo-random rank of every passage for one question, to order equal TF-IDF scores.

    Many questions share no word with most passages (288 of the 2655 oracle questions have
    fewer than 40 passages with a positive score): their remaining distractors tie at score 0.
    Ordering ties by passage index would hand the same first passages of the file to all of
    them; this rank spreads them, and does not depend on the build seed, so the pools do not.

    Returns
    -------
    ndarray of shape (n_passages,), int64, a permutation of range(n_passages)
    """
    return np.random.default_rng([0x7F1D, question_index]).permutation(n_passages)


def tfidf_distractor_pools(
    examples: Sequence[OracleExample], *, pool_size: int, progress: bool = False
) -> DistractorPools:
    """Per question, its ``pool_size`` nearest other gold passages by TF-IDF cosine.

    The vectorizer (sklearn ``TfidfVectorizer``, English stop words, sublinear tf) is fit on
    the passages (``title``, newline, ``text``); questions are transformed with it and scored
    against every passage by a sparse product (rows are L2-normalised, so the product is the
    cosine). Top candidates come from ``argpartition``; equal scores are ordered by
    :func:`tie_break_ranks`.

    Parameters
    ----------
    examples : sequence of OracleExample, length n_questions
    pool_size : int
        Passages kept per question after filtering.
    progress : bool
        Show a tqdm bar.

    Returns
    -------
    DistractorPools
        Passage table = the gold passages in oracle order; every pool has ``pool_size`` entries.

    Raises
    ------
    PromptError
        If some question has fewer than ``pool_size`` usable passages.
    """
    from sklearn.feature_extraction.text import TfidfVectorizer

    passages = [e.gold for e in examples]
    vec = TfidfVectorizer(stop_words="english", sublinear_tf=True, dtype=np.float32)
    p_mat = vec.fit_transform([f"{p.title}\n{p.text}" for p in passages])
    q_mat = vec.transform([e.question for e in examples])
    scores = (q_mat @ p_mat.T).toarray()  # (n_questions, n_passages), cosine
    np.fill_diagonal(scores, -np.inf)  # a question's own gold is never its distractor
    n = len(passages)
    haystacks = [_haystack(p) for p in passages]
    width = min(n, 2 * pool_size + 16)
    first_top = np.argpartition(-scores, width - 1, axis=1)[:, :width] if width < n else None
    pools: list[np.ndarray] = []
    for qi in tqdm(range(len(examples)), desc="tf-idf distractors", unit="question", leave=False, disable=not progress):
        row = scores[qi]
        if first_top is None:
            top = np.arange(n)
        else:
            top = first_top[qi]
            # argpartition picks an arbitrary subset of the passages tied at the boundary
            # score; take them all so the tie-break below decides
            top = np.flatnonzero(row >= row[top].min())
        top = top[np.isfinite(row[top])]
        top = top[np.lexsort((tie_break_ranks(qi, n)[top], -row[top]))]
        pool = filter_pool(examples[qi], top, passages, limit=pool_size, haystacks=haystacks)
        if len(pool) < pool_size and len(top) < n - 1:  # the answer filter ate too many: rank all passages
            top = np.flatnonzero(np.isfinite(row))
            top = top[np.lexsort((tie_break_ranks(qi, n)[top], -row[top]))]
            pool = filter_pool(examples[qi], top, passages, limit=pool_size, haystacks=haystacks)
        if len(pool) < pool_size:
            raise PromptError(
                f"TF-IDF distractors: question {qi} ({examples[qi].question!r}) has only {len(pool)} usable "
                f"passages, {pool_size} requested; lower pool_size"
            )
        pools.append(pool)
    return DistractorPools(passages, pools, "tfidf")


def liu_distractor_file(directory: str | os.PathLike) -> Path:
    """The Liu et al. file with the most documents under ``directory`` (searched recursively).

    All ``gold_at_K`` files of one ``N`` share their distractors; the smallest ``K`` is taken.

    Raises
    ------
    PromptError
        If the folder is missing or holds no file named like ``nq-open-N_total_documents_gold_at_K.jsonl.gz``.
    """
    root = Path(directory)
    if not root.is_dir():
        raise PromptError(f"MDQA distractor_dir {root}: not a folder")
    found = []
    for p in sorted(root.rglob("*")):
        m = LIU_FILE_PATTERN.match(p.name)
        if m and p.is_file():
            found.append((-int(m.group(1)), int(m.group(2)), str(p)))
    if not found:
        raise PromptError(
            f"MDQA distractor_dir {root}: no file named like nq-open-<N>_total_documents_gold_at_<K>.jsonl.gz "
            "(Liu et al.'s qa_data); remove distractor_dir to use TF-IDF distractors"
        )
    return Path(min(found)[2])


def read_liu_distractors(path: str | os.PathLike, examples: Sequence[OracleExample]) -> DistractorPools:
    """Distractor pools from one Liu et al. multi-document QA file, matched to ``examples`` by question.

    Each record's ``ctxs`` without ``isgold`` true and without ``hasanswer`` true are kept in
    file (retrieval) order, then filtered with :func:`filter_pool`.

    Parameters
    ----------
    path : path
        A ``nq-open-N_total_documents_gold_at_K.jsonl[.gz]`` file, or a folder of them
        (see :func:`liu_distractor_file`).
    examples : sequence of OracleExample, length n_questions

    Returns
    -------
    DistractorPools
        Passage table = the distinct distractor passages of the file, in first-seen order.

    Raises
    ------
    PromptError
        Bad record (names the line) or an oracle question missing from the file.
    """
    path = Path(path)
    if path.is_dir():
        path = liu_distractor_file(path)
    table: dict[Passage, int] = {}
    by_question: dict[str, list[int]] = {}
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt", encoding="utf-8") as fh:
        for lineno, line in enumerate(fh, 1):
            try:
                rec = json.loads(line)
                ctxs = [
                    table.setdefault(Passage(str(c["title"]), str(c["text"])), len(table))
                    for c in rec["ctxs"]
                    if c.get("isgold") is not True and c.get("hasanswer") is not True
                ]
                by_question.setdefault(str(rec["question"]), ctxs)
            except (ValueError, KeyError, TypeError) as exc:
                raise PromptError(f"Liu distractor file {path}, line {lineno}: {type(exc).__name__}: {exc}") from exc
    passages = list(table)
    haystacks = [_haystack(p) for p in passages]
    pools = []
    for i, e in enumerate(examples):
        if e.question not in by_question:
            raise PromptError(
                f"Liu distractor file {path}: oracle question {i} ({e.question!r}) is missing; "
                "use the file made from the same nq-open questions"
            )
        pools.append(filter_pool(e, by_question[e.question], passages, haystacks=haystacks))
    out = DistractorPools(passages, pools, "liu")
    logger.info("read Liu distractors from %s: %d questions, smallest pool %d", path, len(pools), out.smallest_pool())
    return out
