"""Every adapter of TRL's, transformers' or accelerate's internals lives in rlhf/trl/ and names
the versions it was written for (WRITTEN_FOR); this suite fails when what is installed leaves
one of those ranges, so an upgrade of the libraries is a decision, not a surprise."""

from __future__ import annotations

import importlib
import logging
import pkgutil

import pytest

import rlhf.trl
from rlhf.core.versions import installed_versions
from rlhf.trl import outside, written_for

ADAPTERS = sorted(m.name for m in pkgutil.iter_modules(rlhf.trl.__path__))


def test_every_adapter_names_the_versions_it_was_written_for():
    assert ADAPTERS == ["fsdp_on_cpu", "fused_logps", "padding_free", "pretokenized", "run_totals", "shared_reference",
                        "tokenize_row"]
    for name in ADAPTERS:
        ranges = importlib.import_module(f"rlhf.trl.{name}").WRITTEN_FOR
        assert ranges and all(package in ("trl", "transformers", "accelerate") for package in ranges), name


@pytest.mark.parametrize("name", ADAPTERS)
def test_the_installed_libraries_are_inside_each_adapters_range(name):
    ranges = importlib.import_module(f"rlhf.trl.{name}").WRITTEN_FOR
    assert outside(ranges, installed_versions(list(ranges))) == []


def test_a_version_outside_the_range_is_found_and_logged(caplog):
    assert outside({"trl": ">=1.16,<1.17"}, {"trl": "1.17.0"}) == ["trl 1.17.0 is outside >=1.16,<1.17"]
    assert outside({"trl": ">=1.16,<1.17"}, {"trl": "1.16.3"}) == []
    assert outside({"vllm": ">=0.22"}, {"vllm": None}) == ["vllm (not installed) is outside >=0.22"]
    with caplog.at_level(logging.WARNING, logger="rlhf"):
        assert written_for(trl="<1.0") == {"trl": "<1.0"}
    assert "was written for trl <1.0" in caplog.text and "is outside <1.0" in caplog.text
