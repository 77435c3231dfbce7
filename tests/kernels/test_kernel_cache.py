"""The on-disk cache of kernel decisions (reprflow/kernels/kernel_cache.py): what its keys depend
on, and that a file it cannot read or write never stops a computation."""

import json
import logging

import torch

from reprflow.kernels import kernel_cache


def test_identity_names_the_device_the_versions_and_the_kernel_sources():
    key = kernel_cache.identity(torch.device("cpu"))
    assert key.startswith("cpu | torch ") and "triton " in key and "mamba_ssm " in key and "causal_conv1d " in key
    digest = key.rsplit("reprflow kernels ", 1)[1]
    assert len(digest) == 12 and int(digest, 16) >= 0 and digest == kernel_cache.kernels_digest()


def test_unset_or_empty_variable_means_no_cache(monkeypatch, tmp_path):
    monkeypatch.delenv(kernel_cache.ENV, raising=False)
    assert kernel_cache.cache_path() is None
    monkeypatch.setenv(kernel_cache.ENV, "")
    assert kernel_cache.cache_path() is None
    monkeypatch.setenv(kernel_cache.ENV, str(tmp_path / "k.json"))
    assert kernel_cache.cache_path() == tmp_path / "k.json"


def test_entries_round_trip_and_bad_files_are_ignored_with_a_warning(tmp_path, caplog):
    path = tmp_path / "sub" / "k.json"
    assert kernel_cache.read_entries(path) == {}  # missing: empty, silently
    kernel_cache.write_entry(path, "a", "triton")
    kernel_cache.write_entry(path, "b", [[["(1,)", 0]]])
    assert kernel_cache.read_entries(path) == {"a": "triton", "b": [[["(1,)", 0]]]}
    path.write_text("[1, 2]")  # valid JSON, not an object
    assert kernel_cache.read_entries(path) == {}
    path.write_text("{broken")
    with caplog.at_level(logging.WARNING, logger="reprflow.kernels.kernel_cache"):
        assert kernel_cache.read_entries(path) == {}
        blocked = tmp_path / "a-file"
        blocked.write_text("")
        kernel_cache.write_entry(blocked / "k.json", "a", "triton")  # its folder is a file: not written
    assert "unreadable" in caplog.text and "not written" in caplog.text
    kernel_cache.write_entry(path, "c", "gluon")  # a damaged file is replaced by a valid one
    assert json.loads(path.read_text()) == {"c": "gluon"}
