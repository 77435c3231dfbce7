"""MDQA prompt sets: gold at label, answer-free distractors, calibrated length, Liu reader."""

import gzip
import json
import re
import tempfile
from pathlib import Path

import numpy as np
import pytest

from reprflow.errors import PromptError
from reprflow.prompts import build_prompt_set
from reprflow.prompts.distractors import contains_answer, read_liu_distractors, tfidf_distractor_pools
from reprflow.prompts.mdqa import Passage, load_oracle

DOC = re.compile(r"^Document \[(\d+)\](\(Title: .*)$", re.DOTALL)


def parse_mdqa(prompt: str) -> tuple[str, list[str]]:
    """Independent parse of an MDQA prompt: the question and each document as "(Title: t) text"."""
    head, rest = prompt.split("\n\n", 1)
    assert head == (
        "Write a high-quality answer for the given question using only the provided search results "
        "(some of which might be irrelevant)."
    )
    docs_text, q = rest.rsplit("\n\nQuestion: ", 1)
    assert q.endswith("\nAnswer:")
    docs = []
    # passage texts may hold newlines: split only before the next "Document [i](Title: "
    for i, chunk in enumerate(re.split(r"\n(?=Document \[\d+\]\(Title: )", docs_text)):
        m = DOC.match(chunk)
        assert m and int(m.group(1)) == i + 1, chunk
        docs.append(m.group(2))
    return q.removesuffix("\nAnswer:"), docs


def as_doc(p: Passage) -> str:
    return f"(Title: {p.title}) {p.text}"


def whole_word_in(answer: str, doc: str) -> bool:
    return re.search(r"(?<![0-9a-z_])" + re.escape(answer.lower()) + r"(?![0-9a-z_])", doc.lower()) is not None


def check_mdqa_records(records, examples):
    by_q = {e.question: e for e in examples}
    for r in records:
        q, docs = parse_mdqa(r["prompt"])
        e = by_q[q]
        assert len(docs) == r["n_items"]
        assert docs[r["label"]] == as_doc(e.gold)
        assert r["answer"] == list(e.answers)
        for j, d in enumerate(docs):
            if j != r["label"]:
                assert not d.endswith(") " + e.gold.text)
                assert not any(whole_word_in(a, d.removeprefix("(Title: ")) for a in e.answers), (r["id"], j)
        assert len(set(docs)) == len(docs)


def _small_mdqa(oracle, *, n_prompts=30, seed=3, pool_size=8):
    """An MDQA set of ~200 gpt2 tokens from a synthetic oracle (the small build several tests share)."""
    return build_prompt_set(
        "mdqa",
        target_tokens=200,
        tokenizer_name="gpt2",
        n_prompts=n_prompts,
        seed=seed,
        oracle_path=oracle,
        pool_size=pool_size,
        tolerance=0.2,
        calibration_size=16,
        progress=False,
    )


def test_mdqa_on_synthetic_oracle(synthetic_oracle):
    records, manifest = _small_mdqa(synthetic_oracle)
    check_mdqa_records(records, load_oracle(synthetic_oracle))
    counts = np.bincount([r["label"] for r in records], minlength=manifest["n_items"])
    assert counts.max() - counts.min() <= 1
    # 30 prompts over 24 questions: every question once, then 6 repeats; group = the question's line
    questions = [parse_mdqa(r["prompt"])[0] for r in records]
    assert len(set(questions[:24])) == 24 and len(set(questions)) == 24
    examples = load_oracle(synthetic_oracle)
    assert all(examples[r["group"]].question == q for r, q in zip(records, questions))
    assert len({r["prompt"] for r in records}) == 30
    assert manifest["sources"][0]["role"] == "oracle" and len(manifest["sources"][0]["sha256"]) == 64


def test_questions_sharing_a_gold_passage_share_a_group(tmp_path, make_synthetic_records):
    """Question 5 has question 0's gold passage: its prompts get group 0 (the probe split keeps
    both questions on one side); the manifest still counts questions, and the split groups."""
    recs = make_synthetic_records(24)
    recs[5]["ctxs"] = recs[0]["ctxs"]
    path = tmp_path / "oracle.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in recs))
    records, manifest = _small_mdqa(path)
    examples = load_oracle(path)
    check_mdqa_records(records, examples)
    line = {e.question: i for i, e in enumerate(examples)}
    used = [line[parse_mdqa(r["prompt"])[0]] for r in records]
    assert {0, 5} <= set(used)
    assert [r["group"] for r in records] == [0 if q == 5 else q for q in used]
    assert manifest["questions"]["n_distinct_used"] == 24 and manifest["questions"]["n_split_groups"] == 23
    assert manifest["questions"]["n_replaced"] == 0


def test_mdqa_1024_neox_median_within_5_percent(oracle_path):
    records, manifest = build_prompt_set(
        "mdqa",
        target_tokens=1024,
        tokenizer_name="gpt-neox-20b",
        n_prompts=48,
        seed=0,
        oracle_path=oracle_path,
        calibration_size=64,
        progress=False,
    )
    n_tokens = np.array([r["n_tokens"] for r in records])
    assert abs(np.median(n_tokens) - 1024) <= 0.05 * 1024
    assert n_tokens.max() <= 1075
    check_mdqa_records(records, load_oracle(oracle_path))


def test_contains_answer_is_whole_word_and_case_insensitive():
    p = Passage("Edward", "In 2015 the S-Bahn opened; it's red.")
    assert contains_answer(p, ["s-bahn"]) and contains_answer(p, ["2015"]) and contains_answer(p, ["edward"])
    assert not contains_answer(p, ["Ed"]) and not contains_answer(p, ["201"]) and not contains_answer(p, ["Bah"])


def test_tfidf_pools_rank_similar_passages_first(make_synthetic_records):
    examples = load_oracle_from_records(make_synthetic_records(24))
    pools = tfidf_distractor_pools(examples, pool_size=5)
    assert all(len(p) == 5 for p in pools.pools)
    for qi, pool in enumerate(pools.pools):
        assert qi not in pool
        assert not any(contains_answer(pools.passages[j], examples[qi].answers) for j in pool)
    # question 0 mentions "river mountain": the best distractor shares a topic word with it
    best = pools.passages[pools.pools[0][0]]
    assert {"river", "mountain"} & set(best.text.lower().split())


def load_oracle_from_records(recs):
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "o.jsonl"
        path.write_text("".join(json.dumps(r) + "\n" for r in recs))
        return load_oracle(path)


def write_liu_file(path, recs, n_docs):
    """Liu et al.'s multi-document format: gold at index 1, n_docs - 1 retrieval distractors."""
    with gzip.open(path, "wt", encoding="utf-8") as fh:
        for i, r in enumerate(recs):
            gold = dict(r["ctxs"][0], isgold=True, hasanswer=True)
            ctxs = [
                {
                    "title": f"Retrieved {i}-{j}",
                    "text": f"distractor {j} for question {i}",
                    "hasanswer": False,
                    "isgold": False,
                    "id": str(j),
                    "score": "0.5",
                    "original_retrieval_index": j,
                }
                for j in range(n_docs - 1)
            ]
            ctxs.insert(1, gold)
            fh.write(json.dumps({"question": r["question"], "answers": r["answers"], "ctxs": ctxs}) + "\n")


def test_liu_reader_keeps_retrieval_order_and_drops_gold(tmp_path, synthetic_oracle, make_synthetic_records):
    recs = make_synthetic_records()
    (tmp_path / "liu" / "10_total_documents").mkdir(parents=True)
    (tmp_path / "liu" / "20_total_documents").mkdir(parents=True)
    write_liu_file(tmp_path / "liu/10_total_documents/nq-open-10_total_documents_gold_at_0.jsonl.gz", recs, 10)
    write_liu_file(tmp_path / "liu/20_total_documents/nq-open-20_total_documents_gold_at_4.jsonl.gz", recs, 20)
    examples = load_oracle(synthetic_oracle)
    pools = read_liu_distractors(tmp_path / "liu", examples)  # picks the 20-document file
    assert pools.source == "liu" and pools.smallest_pool() == 19
    assert [pools.passages[j].text for j in pools.pools[3][:3]] == [f"distractor {j} for question 3" for j in range(3)]
    records, manifest = build_prompt_set(
        "mdqa",
        target_tokens=150,
        tokenizer_name="gpt2",
        n_prompts=10,
        seed=0,
        oracle_path=synthetic_oracle,
        distractor_dir=tmp_path / "liu",
        tolerance=0.2,
        calibration_size=8,
        progress=False,
    )
    assert manifest["distractors"] == {
        "source": "liu",
        "file": "nq-open-20_total_documents_gold_at_4.jsonl.gz",
        "choice": "uniform sample of the pool without replacement, shuffled, per prompt",
    }
    check_mdqa_records(records, examples)
    in_order = 0
    for r in records:  # a sample of the question's Liu distractors, shuffled around the gold (App. B)
        q, docs = parse_mdqa(r["prompt"])
        numbers = [int(d.split(") distractor ")[1].split()[0]) for j, d in enumerate(docs) if j != r["label"]]
        assert all(d.startswith(f"(Title: Retrieved {r['group']}-") for j, d in enumerate(docs) if j != r["label"])
        assert len(set(numbers)) == len(numbers) and set(numbers) <= set(range(19))
        in_order += numbers == sorted(numbers)
    assert in_order < len(records)


def test_too_few_liu_distractors_for_the_target(tmp_path, synthetic_oracle, make_synthetic_records):
    write_liu_file(tmp_path / "nq-open-10_total_documents_gold_at_0.jsonl.gz", make_synthetic_records(), 10)
    with pytest.raises(PromptError, match=r"mdqa n2000 gpt2: .*at most 10 items"):
        build_prompt_set(
            "mdqa",
            target_tokens=2000,
            tokenizer_name="gpt2",
            n_prompts=4,
            seed=0,
            oracle_path=synthetic_oracle,
            distractor_dir=tmp_path,
            calibration_size=4,
            progress=False,
        )


def test_liu_reader_errors(tmp_path, synthetic_oracle, make_synthetic_records):
    examples = load_oracle(synthetic_oracle)
    with pytest.raises(PromptError, match="no file named like nq-open"):
        read_liu_distractors(tmp_path, examples)
    write_liu_file(tmp_path / "nq-open-10_total_documents_gold_at_0.jsonl.gz", make_synthetic_records()[:5], 10)
    with pytest.raises(PromptError, match="oracle question 5 .* is missing"):
        read_liu_distractors(tmp_path, examples)


def test_bad_oracle_line_is_named(tmp_path, make_synthetic_records):
    path = tmp_path / "bad.jsonl"
    good = make_synthetic_records(2)
    bad = dict(good[1], ctxs=[dict(good[1]["ctxs"][0], isgold=False)])
    path.write_text(json.dumps(good[0]) + "\n" + json.dumps(bad) + "\n")
    with pytest.raises(PromptError, match=r"bad.jsonl, line 2: .*isgold"):
        load_oracle(path)


def test_repeated_questions_give_distinct_shuffled_prompts(synthetic_oracle):
    """Each question serves ~8 prompts here; every prompt is new, with its own distractors and order."""
    records, manifest = _small_mdqa(synthetic_oracle, n_prompts=192, seed=1, pool_size=12)
    examples = load_oracle(synthetic_oracle)
    check_mdqa_records(records, examples)
    assert len({r["prompt"] for r in records}) == len(records) == 192
    by_group: dict[int, list[tuple[str, ...]]] = {}
    for r in records:
        _, docs = parse_mdqa(r["prompt"])
        by_group.setdefault(r["group"], []).append(tuple(d for j, d in enumerate(docs) if j != r["label"]))
    assert len(by_group) == 24 and manifest["questions"]["max_uses"] == max(len(v) for v in by_group.values())
    # the same question's prompts draw different distractor sets and orders (not a fixed ranking)
    assert all(len(set(v)) > 1 for v in by_group.values())
    assert all(len({frozenset(x) for x in v}) > 1 for v in by_group.values())
    again, _ = _small_mdqa(synthetic_oracle, n_prompts=192, seed=1, pool_size=12)  # deterministic for a seed
    assert again == records


def test_tight_cap_replaces_questions_instead_of_failing(synthetic_oracle):
    """A cap that leaves a few questions only one or two short distractor pairs: repeats would be
    byte-identical, so those prompts switch question (recorded as their group) rather than fail."""
    records, manifest = build_prompt_set(
        "mdqa",
        target_tokens=150,
        tokenizer_name="gpt2",
        n_prompts=240,
        seed=0,
        oracle_path=synthetic_oracle,
        pool_size=6,
        tolerance=0.3,
        calibration_size=16,
        max_tokens=150,
        progress=False,
    )
    assert max(r["n_tokens"] for r in records) <= 150
    assert len({r["prompt"] for r in records}) == 240
    check_mdqa_records(records, load_oracle(synthetic_oracle))
    assert manifest["achieved"]["duplicate_redraws"] > 0 and manifest["questions"]["n_replaced"] > 0
