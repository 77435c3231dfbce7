"""The per-file parse behind the code digests, cached on disk by content (reprflow/workflow/code_facts.py)."""

import json
from pathlib import PurePosixPath

import pytest

from reprflow.config import PROJECT_ROOT
from reprflow.workflow import code_facts as cf

SOURCE = b'''"""Docstring."""
import os
from . import sibling
from ..metrics import cka, scale  # a comment
from reprflow.store import open_store


def f():
    """Inner docstring."""
    from .deep import thing
    return 1
'''


@pytest.fixture()
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("REPRFLOW_CACHE_DIR", str(tmp_path / "cache"))
    return tmp_path / "cache" / "code-facts"


def test_facts_resolve_relative_imports_and_digest_the_code_without_docstrings(cache):
    facts = cf.code_facts(SOURCE, PurePosixPath("reprflow/pipeline/stage.py"))
    assert facts.imports == (
        ("os", None),
        ("reprflow.pipeline", ("sibling",)),
        ("reprflow.metrics", ("cka", "scale")),
        ("reprflow.store", ("open_store",)),
        ("reprflow.pipeline.deep", ("thing",)),
    )
    reformatted = SOURCE.replace(b"# a comment", b"").replace(b'"""Inner docstring."""', b'"""Other words."""')
    assert cf.code_facts(reformatted, PurePosixPath("reprflow/pipeline/stage.py")).code == facts.code
    changed = SOURCE.replace(b"return 1", b"return 2")
    assert cf.code_facts(changed, PurePosixPath("reprflow/pipeline/stage.py")).code != facts.code


def test_a_cached_entry_gives_what_a_fresh_parse_gives(cache):
    rel = PurePosixPath("reprflow/pipeline/stage.py")
    fresh = cf.code_facts(SOURCE, rel)
    (entry,) = cache.iterdir()  # one file per version, named by its content and path
    assert cf.code_facts(SOURCE, rel) == fresh
    # the entry is what is read: a tampered one is believed (so the test sees the cache used) ...
    data = json.loads(entry.read_text())
    entry.write_text(json.dumps({**data, "code": "00" * 32}))
    assert cf.code_facts(SOURCE, rel).code == bytes(32)
    # ... a corrupt one is parsed again and rewritten
    entry.write_text("{not json")
    assert cf.code_facts(SOURCE, rel) == fresh
    assert json.loads(entry.read_text()) == data


def test_the_same_bytes_elsewhere_in_the_package_are_another_entry(cache):
    a = cf.code_facts(SOURCE, PurePosixPath("reprflow/pipeline/stage.py"))
    b = cf.code_facts(SOURCE, PurePosixPath("reprflow/metrics/sub/stage.py"))
    assert len(list(cache.iterdir())) == 2
    assert a.code == b.code
    # `from . import` and `from ..metrics import` resolve against the file's own package
    assert ("reprflow.metrics.sub", ("sibling",)) in b.imports
    assert ("reprflow.metrics.metrics", ("cka", "scale")) in b.imports


def test_a_file_that_does_not_parse_counts_by_its_bytes(cache):
    facts = cf.code_facts(b"def broken(:\n", PurePosixPath("reprflow/broken.py"))
    assert facts.imports is None
    assert cf.code_facts(b"def broken(:\n", PurePosixPath("reprflow/broken.py")) == facts


def test_an_unusable_cache_path_only_means_parsing_again(tmp_path, monkeypatch):
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    monkeypatch.setenv("REPRFLOW_CACHE_DIR", str(blocker))  # code-facts/ cannot be made under a file
    facts = cf.code_facts(SOURCE, PurePosixPath("reprflow/pipeline/stage.py"))
    assert facts == cf._parse(SOURCE, PurePosixPath("reprflow/pipeline/stage.py"))


def test_every_package_file_cached_equals_its_fresh_parse(cache):
    """The whole package, parsed fresh and then read back from the cache: the same facts."""
    files = sorted(PROJECT_ROOT.glob("reprflow/**/*.py"))
    assert len(files) > 100
    for path in files:
        rel = PurePosixPath(path.relative_to(PROJECT_ROOT).as_posix())
        source = path.read_bytes()
        assert cf.code_facts(source, rel) == cf._parse(source, rel) == cf.code_facts(source, rel), rel
    assert len(list(cache.iterdir())) == len(files)
