"""Sphinx configuration for gwlite + fusion.

Build with ``python -m sphinx -n -W --keep-going -b html docs docs/_build/html`` (what CI
runs): every cross-reference must resolve (``nitpicky``) and every warning fails the
build. The build needs no network: MathJax is bundled and the intersphinx inventories are
files in ``docs/_inventories`` (``make_inventories.py`` there rewrites them).
"""

from __future__ import annotations

import os
import sys
from datetime import date
from pathlib import Path

DOCS = Path(__file__).resolve().parent
sys.path.insert(0, str(DOCS.parent))
sys.path.insert(0, str(DOCS / "_ext"))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# executed pages and tutorials import the worktree's packages, also in the notebook kernel
os.environ["PYTHONPATH"] = os.pathsep.join(
    [str(DOCS.parent), *filter(None, [os.environ.get("PYTHONPATH")])]
)

import matplotlib  # noqa: E402

import gwlite  # noqa: E402

# figures of the plot directive and the tutorials are drawn off screen; the notebook
# kernel of executed pages keeps its inline backend, so their figures show on the page
matplotlib.use("Agg")

project = "gwlite + fusion"
author = "gwlite developers"
copyright = f"{date.today().year}, {author}"
release = version = gwlite.__version__

extensions = [
    "myst_nb",  # MyST markdown, and pages whose code cells run at build time
    "sphinx.ext.autodoc",
    "sphinx.ext.autosummary",
    "sphinx.ext.intersphinx",
    "sphinx.ext.mathjax",
    "sphinx-mathjax-offline",  # MathJax shipped with the docs: pages render offline
    "sphinx.ext.viewcode",
    "numpydoc",
    "sphinx_gallery.gen_gallery",
    "matplotlib.sphinxext.plot_directive",
    "sphinxcontrib.bibtex",
    "clihelp",  # docs/_ext: CLI reference from the argparse parsers, every subcommand
    "sphinxcontrib.programoutput",  # ... and from --help where there is no parser object
    "publicnames",  # docs/_ext: links to public names; every public object documented
]

myst_enable_extensions = ["dollarmath", "amsmath", "colon_fence", "deflist"]
myst_heading_anchors = 3
exclude_patterns = [
    "_build",
    "_inventories",
    "_ext",
    "_templates",
    "jupyter_execute",
    "**/GALLERY_HEADER.rst",
    "sg_execution_times.rst",
    "auto_examples/*.ipynb",  # sphinx-gallery's notebook downloads, not pages
]
suppress_warnings = ["myst.header"]
nitpicky = True

# --- pages that other parts of the project add ------------------------------------------
# Listed in a toctree before they exist; the entry is dropped (not warned about) while
# the file is missing, so the table of contents is ready for them.
OPTIONAL_DOCS = {
    "guide/solvers",
    "guide/pairwise",
    "guide/input_contract",
    "theory_sdp",
    "study",
}


def _drop_missing_optional_docs(app, docname, source):
    def keep(line: str) -> bool:
        entry = line.strip()
        if entry not in OPTIONAL_DOCS:
            return True
        return any((DOCS / f"{entry}{ext}").exists() for ext in (".md", ".rst", ".py"))

    source[0] = "\n".join(line for line in source[0].split("\n") if keep(line))


# --- API reference ------------------------------------------------------------------------
autosummary_generate = True  # docs/api/generated: one page per public function and class
templates_path = ["_templates"]
autodoc_default_options = {"member-order": "bysource"}  # no "members": keep explicit lists
autodoc_typehints = "none"  # numpydoc shows the types from the docstrings
autodoc_class_signature = "mixed"
numpydoc_show_class_members = False
numpydoc_validation_checks: set[str] = set()
numpydoc_xref_param_type = False


def _skip_noise(app, what, name, obj, skip, options):
    # NamedTuple fields carry the generated "Alias for field number N"; the class
    # docstring describes them in its Attributes section
    doc = getattr(obj, "__doc__", None)
    if isinstance(doc, str) and doc.startswith("Alias for field number"):
        return True
    return None


_BUILTIN_DOCS = {
    (t.__doc__ or "").strip().splitlines()[0]
    for t in (tuple, list, dict, set, frozenset, str, int, float, bool)
}


def _drop_builtin_docstrings(app, what, name, obj, options, lines):
    # data without a docstring of its own would show its type's ("Built-in immutable
    # sequence..."); the directive's content describes it instead
    if what in ("data", "attribute") and lines and lines[0].strip() in _BUILTIN_DOCS:
        lines.clear()


# packages whose public names docs/_ext/publicnames.py resolves and checks
publicnames_packages = ["gwlite", "fusion"]

# --- cross-project links, from local inventories (docs/_inventories) ----------------------
_INV = DOCS / "_inventories"
intersphinx_mapping = {
    "python": ("https://docs.python.org/3/", str(_INV / "python.inv")),
    "numpy": ("https://numpy.org/doc/stable/", str(_INV / "numpy.inv")),
    "scipy": ("https://docs.scipy.org/doc/scipy/", str(_INV / "scipy.inv")),
    "torch": ("https://docs.pytorch.org/docs/stable/", str(_INV / "torch.inv")),
    "pot": ("https://pythonot.github.io/", str(_INV / "pot.inv")),
    "transformers": (
        "https://huggingface.co/docs/transformers/main/en/",
        str(_INV / "transformers.inv"),
    ),
    "peft": ("https://huggingface.co/docs/peft/main/en/", str(_INV / "peft.inv")),
    "trl": ("https://huggingface.co/docs/trl/main/en/", str(_INV / "trl.inv")),
    "networkx": ("https://networkx.org/documentation/stable/", str(_INV / "networkx.inv")),
    "matplotlib": ("https://matplotlib.org/stable/", str(_INV / "matplotlib.inv")),
    "dask": ("https://docs.dask.org/en/stable/", str(_INV / "dask.inv")),
    "distributed": ("https://distributed.dask.org/en/stable/", str(_INV / "distributed.inv")),
    "zarr": ("https://zarr.readthedocs.io/en/v3.1.2/", str(_INV / "zarr.inv")),
}

# --- bibliography (docs/references.bib, one page: bibliography.md) ------------------------
bibtex_bibfiles = ["references.bib"]
bibtex_default_style = "plain"
bibtex_reference_style = "author_year"

# --- executed pages (MyST-NB) ---------------------------------------------------------------
# GWLITE_DOCS_QUICK=1: a structure-only build (no cell or tutorial runs) for iterating on
# pages; CI and releases build with execution on
QUICK = os.environ.get("GWLITE_DOCS_QUICK") == "1"
nb_execution_mode = "off" if QUICK else "force"  # every build runs the cells
if QUICK:  # unexecuted notebooks have no kernel to name their cells' language
    suppress_warnings.append("myst-nb.lexer")
nb_execution_raise_on_error = True
nb_execution_timeout = 300
nb_merge_streams = True
nb_execution_show_tb = True
nb_render_markdown_format = "myst"  # tables printed by cells render as tables

# --- tutorials (sphinx-gallery) -------------------------------------------------------------
sphinx_gallery_conf = {
    "examples_dirs": "../examples",
    "gallery_dirs": "auto_examples",
    "filename_pattern": r"/plot_",
    "within_subsection_order": "FileNameSortKey",
    "download_all_examples": False,
    "remove_config_comments": True,
    "show_memory": False,
    "abort_on_example_error": True,
    "write_computation_times": False,  # that page pulls jQuery/DataTables from a CDN
    "reference_url": {"gwlite": None, "fusion": None},  # link names in the code to the API
    # "Tutorials using X" on each API page (docs/_templates/autosummary)
    "doc_module": ("gwlite", "fusion"),
    "backreferences_dir": "gen_modules/backreferences",
    "plot_gallery": not QUICK,
}

# ``plot`` directives (benchmarks page) run from the repository root
plot_working_directory = str(DOCS.parent)
plot_include_source = False
plot_html_show_source_link = False
plot_html_show_formats = False
plot_formats = [("png", 110)]

# ``program-output`` runs from the repository root too
programoutput_use_ansi = False

# --- HTML -----------------------------------------------------------------------------------
html_theme = "furo"
html_title = f"gwlite + fusion {release}"
html_static_path = ["_static"]
html_css_files = ["custom.css"]
html_theme_options = {"navigation_with_keys": True}


def setup(app):
    app.connect("source-read", _drop_missing_optional_docs)
    app.connect("autodoc-skip-member", _skip_noise)
    app.connect("autodoc-process-docstring", _drop_builtin_docstrings, priority=400)
    return {"parallel_read_safe": True}
