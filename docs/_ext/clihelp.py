"""``.. cli-help:: module:function``: a command's ``--help``, and every subcommand's.

The function returns an :class:`argparse.ArgumentParser`. The directive renders its help
exactly as ``--help`` prints it (a literal block, so raw formatting survives), then one
section per subcommand, recursively, so subcommands added to the parser appear on the
page without editing it. ``:prog:`` sets the program name shown.
"""

from __future__ import annotations

import argparse
import importlib
import os

from docutils import nodes
from docutils.parsers.rst import directives
from sphinx.util.docutils import SphinxDirective
from sphinx.util.nodes import make_id


def _subcommands(parser: argparse.ArgumentParser):
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            yield from action.choices.items()


class CliHelp(SphinxDirective):
    required_arguments = 1
    option_spec = {"prog": directives.unchanged}

    def run(self):
        modname, _, funcname = self.arguments[0].partition(":")
        parser = getattr(importlib.import_module(modname), funcname)()
        if "prog" in self.options:
            parser.prog = self.options["prog"]
        return self._render(parser, top=True)

    def _render(self, parser, top=False):
        os.environ.setdefault("COLUMNS", "88")  # argparse wraps help to this width
        help_text = parser.format_help().rstrip()
        block = nodes.literal_block(help_text, help_text)
        block["language"] = "none"
        out = [block]
        for _name, sub in _subcommands(parser):
            title = sub.prog
            section = nodes.section(ids=[make_id(self.env, self.state.document, "", title)])
            section += nodes.title(title, "", nodes.literal(title, title))
            section.extend(self._render(sub))
            out.append(section)
        return out


def setup(app):
    app.add_directive("cli-help", CliHelp)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
