"""Check every internal link of the built HTML: its file and its ``#anchor`` must exist.

Usage: ``python docs/_ext/checklinks.py docs/_build/html`` (what ``.ci/run`` runs after the
Sphinx build). Sphinx's ``-n`` checks cross-references while it writes, but not the links
that extensions, themes or raw HTML produce (viewcode's "[docs]" links, sphinx-gallery's
back-references, links written by hand in Markdown); this reads the pages as a browser
would. External links (with a scheme or ``//``) are not followed: the build needs no
network. Exits with status 1 and lists each broken link when there is one.
"""

from __future__ import annotations

import sys
from collections import defaultdict
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote, urlsplit

# theme and MathJax assets: third-party files, not pages of this site
SKIP_DIRS = {"_static", "_sources"}


class _Page(HTMLParser):
    """The ids a page defines and the hrefs/srcs it links to."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.ids: set[str] = set()
        self.links: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        found = dict(attrs)
        for key in ("id", "name") if tag == "a" else ("id",):
            if found.get(key):
                self.ids.add(found[key])
        target = found.get("href") if tag in ("a", "link") else found.get("src")
        if target and tag in ("a", "link", "img", "script", "iframe"):
            self.links.append(target)


def _parse(path: Path) -> _Page:
    page = _Page()
    page.feed(path.read_text(encoding="utf-8", errors="replace"))
    return page


def _internal(href: str) -> bool:
    parts = urlsplit(href)
    return not (parts.scheme or parts.netloc or href.startswith("//"))


def broken_links(root: Path) -> list[str]:
    """Every internal link under ``root`` whose file or anchor is missing, as text."""
    root = root.resolve()
    pages = {
        path: _parse(path)
        for path in sorted(root.rglob("*.html"))
        if not SKIP_DIRS.intersection(path.relative_to(root).parts)
    }
    ids = {path: page.ids for path, page in pages.items()}
    problems: dict[str, list[str]] = defaultdict(list)
    for path, page in pages.items():
        for href in page.links:
            if not _internal(href):
                continue
            parts = urlsplit(href)
            target = (path.parent / unquote(parts.path)).resolve() if parts.path else path
            if target.is_dir():
                target = target / "index.html"
            where = str(path.relative_to(root))
            if not target.exists():
                problems[where].append(f"{href}: no file {target.relative_to(root)}")
                continue
            anchor = unquote(parts.fragment)
            if not anchor or target.suffix != ".html":
                continue
            if target not in ids:  # a page under a skipped folder
                ids[target] = _parse(target).ids
            if anchor not in ids[target]:
                problems[where].append(f"{href}: no anchor #{anchor}")
    return [f"{page}: {msg}" for page, msgs in sorted(problems.items()) for msg in msgs]


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1 or not Path(args[0]).is_dir():
        print("usage: python docs/_ext/checklinks.py BUILT_HTML_DIR", file=sys.stderr)
        return 2
    problems = broken_links(Path(args[0]))
    for line in problems:
        print(line)
    n_pages = sum(1 for _ in Path(args[0]).rglob("*.html"))
    print(f"checklinks: {len(problems)} broken internal link(s) in {n_pages} HTML files")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
