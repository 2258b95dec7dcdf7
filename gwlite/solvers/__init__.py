"""One module per GW method; each exposes ``solve(problem, **options) -> GWResult``.

The registry maps the public ``method`` names to those functions; ``"exact"`` is
registered by :mod:`gwlite.solvers.exact` when present.
"""

from __future__ import annotations

from collections.abc import Callable

from gwlite.solvers import pot, sorting

SOLVERS: dict[str, Callable] = {
    "sorted": sorting.solve,
    "cg": pot.solve_cg,
    "entropic": pot.solve_entropic,
}

try:  # the exact solver lives in its own module
    from gwlite.solvers import exact

    SOLVERS["exact"] = exact.solve
except ImportError:  # pragma: no cover - only while the module does not exist
    pass

__all__ = ["SOLVERS"]
