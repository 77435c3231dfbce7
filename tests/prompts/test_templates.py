"""Exact prompt text of Liu et al.'s templates, and the seeded UUID4 generator."""

import re
import uuid

import numpy as np
import pytest

from reprflow.errors import PromptError
from reprflow.prompts.kvpr import format_kvpr_prompt, uuid4_strings
from reprflow.prompts.mdqa import Passage, format_mdqa_prompt


def test_kvpr_template_is_liu_byte_for_byte():
    # Expected text written out literally, as in Liu et al.'s tests/test_prompting.py.
    pairs = [("test key1", "test value1"), ("test key2", "test value2"), ("test key3", "test value3")]
    expected = (
        "Extract the value corresponding to the specified key in the JSON object below.\n"
        "\n"
        "JSON data:\n"
        '{"test key1": "test value1",\n'
        ' "test key2": "test value2",\n'
        ' "test key3": "test value3"}\n'
        "\n"
        'Key: "test key2"\n'
        "Corresponding value:"
    )
    assert format_kvpr_prompt(pairs, "test key2") == expected


def test_mdqa_template_is_liu_byte_for_byte():
    docs = [Passage("first doc", "first doc text"), Passage("second doc", "second doc text")]
    expected = (
        "Write a high-quality answer for the given question using only the provided search results "
        "(some of which might be irrelevant).\n"
        "\n"
        "Document [1](Title: first doc) first doc text\n"
        "Document [2](Title: second doc) second doc text\n"
        "\n"
        "Question: test question\n"
        "Answer:"
    )
    assert format_mdqa_prompt("test question", docs) == expected


@pytest.mark.parametrize(
    ("pairs", "key", "match"),
    [
        ([("a", "1")], "a", "at least 2"),
        ([("a", "1"), ("a", "2")], "a", "duplicate"),
        ([("a", "1"), ("b", "2")], "c", "'c'"),
    ],
)
def test_kvpr_template_rejects_bad_pairs(pairs, key, match):
    with pytest.raises(PromptError, match=match):
        format_kvpr_prompt(pairs, key)


def test_uuid4_strings_are_valid_seeded_uuid4():
    got = uuid4_strings(np.random.default_rng(7), 200)
    assert got == uuid4_strings(np.random.default_rng(7), 200)
    assert got != uuid4_strings(np.random.default_rng(8), 200)
    for s in got:
        assert re.fullmatch(r"[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}", s)
        u = uuid.UUID(s)
        assert u.version == 4 and u.variant == uuid.RFC_4122 and str(u) == s
    # the 122 random bits are not degenerate: every hex digit shows up in the random positions
    assert set("".join(s[:8] for s in got)) == set("0123456789abcdef")
