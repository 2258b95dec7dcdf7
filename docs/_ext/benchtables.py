"""Helpers of the executed benchmark pages (docs/benchmarks/*.md): where the result files
are and how their numbers are printed. Imported by each page's first, hidden cell."""

from __future__ import annotations

from pathlib import Path

from IPython.display import Markdown

RESULTS = Path(__file__).resolve().parents[2] / "benchmarks" / "results"


def fmt(x, digits: int = 3) -> str:
    """A measured number with ``digits`` significant digits ("-" when missing)."""
    if isinstance(x, str):
        return x
    if x is None:
        return "-"
    if x == 0:
        return "0"
    return f"{x:.{digits}g}" if abs(x) >= 1e-3 else f"{x:.{digits - 1}e}"


def ratio(x: float) -> str:
    return f"{x:.3g}x" if x < 1000 else f"{x:,.0f}x"


def table(header, rows) -> Markdown:
    """A Markdown table that MyST-NB renders as a table."""
    lines = ["| " + " | ".join(header) + " |", "|" + " --- |" * len(header)]
    lines += ["| " + " | ".join(map(str, row)) + " |" for row in rows]
    return Markdown("\n".join(lines))
