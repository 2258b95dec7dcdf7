"""Every docstring example in gwlite and fusion runs and prints what it says."""

from __future__ import annotations

import doctest
import importlib
import pkgutil

import pytest

import fusion
import gwlite

SKIP = ("__main__",)


def _modules():
    for package in (gwlite, fusion):
        yield package.__name__
        for info in pkgutil.walk_packages(package.__path__, package.__name__ + "."):
            if info.name.rsplit(".", 1)[-1] not in SKIP:
                yield info.name


MODULES = sorted(set(_modules()))


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name):
    module = importlib.import_module(name)
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    assert result.failed == 0


def test_examples_exist_for_the_public_entry_points():
    finder = doctest.DocTestFinder()
    with_examples = {
        t.name
        for name in ("gwlite.api", "gwlite.bounds", "gwlite.graphs")
        for t in finder.find(importlib.import_module(name))
        if t.examples
    }
    assert {
        "gwlite.api.gromov_wasserstein",
        "gwlite.bounds.lower_bound",
        "gwlite.graphs.from_networkx",
    } <= with_examples
