"""One module per GW method; each exposes ``solve(problem, **options) -> GWResult``.

The registry maps the public ``method`` names to those functions. A solver's keyword
arguments are its options: :func:`gwlite.gromov_wasserstein` refuses any other name.
"""

from __future__ import annotations

from collections.abc import Callable

from gwlite.solvers import auto, exact, pot, proximal, rlt, sdp, sorting

# shared helpers, imported from here by gwlite.api and gwlite.pairs (not part of the API)
from gwlite.solvers._common import certify_threshold as certify_threshold
from gwlite.solvers._common import check_options as check_options

SOLVERS: dict[str, Callable] = {
    "auto": auto.solve,
    "sorted": sorting.solve,
    "cg": pot.solve_cg,
    "entropic": pot.solve_entropic,
    "exact": exact.solve,
    "proximal": proximal.solve,
    "sdp": sdp.solve,
    "rlt": rlt.solve,
}

__all__ = ["SOLVERS"]
