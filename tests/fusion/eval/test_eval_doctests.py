"""The examples in the public docstrings run and give the documented output."""

from __future__ import annotations

import doctest

import pytest

from fusion.eval import cleansing, runner, tasks


@pytest.mark.parametrize("module", [cleansing, runner, tasks], ids=lambda m: m.__name__)
def test_docstring_examples(module):
    failures, attempted = doctest.testmod(module, verbose=False)
    assert attempted > 0
    assert failures == 0
