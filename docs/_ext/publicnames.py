"""Public names for the API reference: resolve references to them, and check coverage.

Objects are documented under the name users import them by (``gwlite.lower_bound``),
while their docstrings live in the defining module (``gwlite.bounds``) and refer to
their neighbours by short or defining-module names. This extension

* resolves a Python cross-reference that Sphinx could not resolve when its target,
  read in the context of the current module (or as written), is an object documented
  under another name: ``:func:`lower_bound``` inside ``gwlite.bounds``,
  ``gwlite.api.gromov_wasserstein``, ``fusion.eval.cleansing.cleanse_answer`` all link
  to the public entry;
* warns, after all pages are read, about every public module of the packages named in
  ``publicnames_packages`` (``docs/conf.py``) that has no ``automodule``, and every
  function and class such a module exports (its ``__all__``, or else the public names
  it defines) that is documented under no name at all. A ``-W`` build therefore fails
  until a new object is placed in ``docs/api/``. Modules and names starting with an
  underscore are private and skipped; so is data;
* points the "[docs]" links of viewcode's highlighted-source pages at the entry where each
  object is documented. viewcode builds them as ``<first name the module was documented
  under>.<object>``, which is wrong for every other object of a module whose first
  documented object is a public re-export (``gwlite.bounds``'s ``mean_row_features``
  would link to ``#gwlite.mean_row_features``).
"""

from __future__ import annotations

import importlib
import inspect
import pkgutil
import re

from sphinx.util import logging

logger = logging.getLogger(__name__)
_SCALARS = (int, float, complex, str, bytes, bool, type(None))


def _resolve(fullname: str, packages) -> object | None:
    if fullname.split(".")[0] not in packages:
        return None
    parts = fullname.split(".")
    for cut in range(len(parts), 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:cut]))
        except ImportError:
            continue
        try:
            for attr in parts[cut:]:
                obj = getattr(obj, attr)
        except AttributeError:
            return None
        return obj
    return None


def _documented(app, env) -> dict[int, str]:
    """id(object) -> the name it is documented under (the shortest one)."""
    cache = getattr(app, "_publicnames_table", None)
    if cache is not None:
        return cache
    packages = set(app.config.publicnames_packages)
    table: dict[int, str] = {}
    for fullname in sorted(env.get_domain("py").objects, key=len, reverse=True):
        obj = _resolve(fullname, packages)
        if obj is not None and not isinstance(obj, _SCALARS):
            table[id(obj)] = fullname
    app._publicnames_table = table
    return table


def resolve_alias(app, env, node, contnode):
    if node.get("refdomain") != "py":
        return None
    target = node["reftarget"].lstrip(".~")
    modname, clsname = node.get("py:module"), node.get("py:class")
    candidates = [target]
    if modname:
        candidates.insert(0, f"{modname}.{target}")
        if clsname:
            candidates.insert(0, f"{modname}.{clsname}.{target}")
    # a docstring documented under a public name still speaks its defining module's names
    where = re.search(r"docstring of ([\w.]+)", node.source or "")
    if where:
        parts = where.group(1).split(".")
        candidates[:0] = [".".join([*parts[:cut], target]) for cut in range(len(parts), 0, -1)]
    packages = set(app.config.publicnames_packages)
    table = _documented(app, env)
    for candidate in candidates:
        obj = _resolve(candidate, packages)
        if obj is None or isinstance(obj, _SCALARS) or id(obj) not in table:
            continue
        domain = env.get_domain("py")
        return domain.resolve_xref(
            env, node["refdoc"], app.builder, "obj", table[id(obj)], node, contnode
        )
    return None


def _public_modules(package: str):
    pkg = importlib.import_module(package)
    yield package
    for info in pkgutil.walk_packages(pkg.__path__, package + "."):
        if not any(part.startswith("_") for part in info.name.split(".")):
            yield info.name


def _exports(module):
    names = getattr(module, "__all__", None)
    if names is None:
        names = [
            n for n, o in vars(module).items() if getattr(o, "__module__", None) == module.__name__
        ]
    for name in names:
        obj = getattr(module, name, None)
        if not name.startswith("_") and (inspect.isclass(obj) or inspect.isfunction(obj)):
            yield name, obj


def check_coverage(app, env) -> None:
    app._publicnames_table = None
    domain = env.get_domain("py")
    packages = set(app.config.publicnames_packages)
    documented = {
        id(obj) for fullname in domain.objects if (obj := _resolve(fullname, packages)) is not None
    }
    for package in app.config.publicnames_packages:
        for modname in _public_modules(package):
            if modname not in domain.modules:
                logger.warning(
                    "publicnames: module %s has no automodule in docs/api/",
                    modname,
                    type="publicnames",
                )
            for name, obj in _exports(importlib.import_module(modname)):
                if id(obj) not in documented:
                    logger.warning(
                        "publicnames: %s.%s is public but not documented in docs/api/",
                        modname,
                        name,
                        type="publicnames",
                    )


_BACKLINK = re.compile(r'(<a class="viewcode-back" href=")([^"#]*)#([\w.]+)(")')


def fix_viewcode_backlinks(app, pagename, templatename, context, doctree) -> None:
    if not pagename.startswith("_modules/") or "body" not in context:
        return
    modname = pagename.removeprefix("_modules/").replace("/", ".")
    domain = app.env.get_domain("py")
    packages = set(app.config.publicnames_packages)
    table = _documented(app, app.env)

    def link(match: re.Match) -> str:
        anchor = match.group(3)
        # a canonical name (autodoc's alias of a re-exported class) has no anchor of its own
        entry = domain.objects.get(anchor)
        # else the object's own name: "name" or "Class.method" after viewcode's wrong prefix
        parts = anchor.split(".")
        for cut in (1, 2):
            if entry is not None:
                break
            obj = _resolve(".".join([modname, *parts[-cut:]]), packages)
            if obj is not None and not isinstance(obj, _SCALARS) and id(obj) in table:
                entry = domain.objects[table[id(obj)]]
        if entry is None:
            return match.group(0)
        uri = app.builder.get_relative_uri(pagename, entry.docname)
        return f"{match.group(1)}{uri}#{entry.node_id}{match.group(4)}"

    context["body"] = _BACKLINK.sub(link, context["body"])


def setup(app):
    app.add_config_value("publicnames_packages", [], "env")
    app.connect("env-check-consistency", check_coverage)
    app.connect("missing-reference", resolve_alias)
    app.connect("html-page-context", fix_viewcode_backlinks)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
