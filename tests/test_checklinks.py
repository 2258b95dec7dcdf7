"""docs/_ext/checklinks.py: every internal href's file and #anchor must exist in the built
HTML; external links are not followed. Built on small HTML trees whose broken links are
known by construction."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

_SPEC = importlib.util.spec_from_file_location(
    "checklinks", Path(__file__).resolve().parents[1] / "docs" / "_ext" / "checklinks.py"
)
checklinks = importlib.util.module_from_spec(_SPEC)
_SPEC.loader.exec_module(checklinks)


def _site(tmp_path: Path, pages: dict[str, str]) -> Path:
    for name, html in pages.items():
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(f"<html><body>{html}</body></html>")
    return tmp_path


def test_a_site_whose_links_all_resolve_passes(tmp_path):
    root = _site(
        tmp_path,
        {
            "index.html": '<a href="api/f.html#gwlite.f">f</a> <a href="#top">top</a>'
            '<span id="top"></span> <a href="https://example.org/#x">out</a>'
            '<img src="_images/a.png"> <a href="api/">api</a>',
            "api/f.html": '<dt id="gwlite.f"></dt><a href="../index.html">home</a>',
            "api/index.html": '<a name="legacy"></a>',
            "_images/a.png": "",
        },
    )
    assert checklinks.broken_links(root) == []
    assert checklinks.main([str(root)]) == 0


def test_missing_file_and_missing_anchor_are_reported(tmp_path):
    root = _site(
        tmp_path,
        {
            "index.html": '<a href="gone.html">x</a> <a href="api/f.html#gwlite.bounds.f">y</a>',
            "api/f.html": '<dt id="gwlite.f"></dt>',
        },
    )
    problems = checklinks.broken_links(root)
    assert len(problems) == 2
    assert any("no file gone.html" in p for p in problems)
    assert any("no anchor #gwlite.bounds.f" in p for p in problems)
    assert checklinks.main([str(root)]) == 1


NAMES = st.sampled_from(
    ["a", "gwlite.f", "gwlite.bounds.f", "gwlite.GWResult.gap", "fusion.eval.x_y", "sec-2", "top"]
)


@settings(deadline=None, suppress_health_check=[HealthCheck.too_slow], max_examples=50)
@given(ids=st.sets(NAMES, min_size=1), wanted=st.lists(NAMES, max_size=8))
def test_exactly_the_anchors_that_do_not_exist_are_reported(tmp_path_factory, ids, wanted):
    root = tmp_path_factory.mktemp("site")
    targets = "".join(f'<span id="{i}"></span>' for i in ids)
    links = "".join(f'<a href="t.html#{w}">w</a>' for w in wanted)
    _site(root, {"t.html": targets, "index.html": links})
    reported = checklinks.broken_links(root)
    assert len(reported) == sum(w not in ids for w in wanted)


def test_usage_error_without_a_folder(tmp_path, capsys):
    assert checklinks.main([str(tmp_path / "missing")]) == 2
    assert "usage" in capsys.readouterr().err


if __name__ == "__main__":  # pragma: no cover
    pytest.main([__file__])
