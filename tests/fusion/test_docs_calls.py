"""The guides' calls of fusion's API name every required argument (D7) and no old name."""

from __future__ import annotations

import ast
import inspect
import re
from pathlib import Path

import pytest

from fusion._deprecation import RENAMED
from fusion.cache import Encoder

ROOT = Path(__file__).resolve().parents[2]
PAGES = sorted((ROOT / "docs" / "guide").glob("*.md")) + [ROOT / "README.md"]


def _calls(text: str, name: str) -> list[ast.Call]:
    """Every parseable ``name(...)`` call in a page's inline code and code blocks."""
    found = []
    for match in re.finditer(rf"\b{name}\(", text):
        depth, end = 0, None
        for j in range(match.start() + len(name), len(text)):
            depth += {"(": 1, ")": -1}.get(text[j], 0)
            if depth == 0:
                end = j + 1
                break
        if end is None:
            continue
        try:
            tree = ast.parse(text[match.start() : end].replace("\n", " "), mode="eval")
        except SyntaxError:
            found.append(None)  # e.g. Encoder(tok, ...): not a call a reader can run
            continue
        found.append(tree.body)
    return found


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_encoder_calls_name_its_required_arguments(page):
    required = [
        p.name
        for p in inspect.signature(Encoder).parameters.values()
        if p.kind is inspect.Parameter.KEYWORD_ONLY and p.default is inspect.Parameter.empty
    ]
    assert required == ["max_length", "add_eos"]
    for call in _calls(page.read_text(encoding="utf-8"), "Encoder"):
        assert call is not None, f"{page.name}: an Encoder(...) call that does not parse"
        given = {k.arg for k in call.keywords}
        assert set(required) <= given, f"{page.name}: Encoder call misses {set(required) - given}"


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_guides_use_the_current_option_names(page):
    text = page.read_text(encoding="utf-8")
    for old, new in RENAMED.items():
        assert f"{old}=" not in text, f"{page.name}: {old}= is now {new}="
