"""``method="sorted"``: the InfiGFusion closed form with its certified interval."""

from __future__ import annotations

from gwlite import _xp
from gwlite.bounds import compute_lower, gap_diagnostics, sorted_sparse_coupling
from gwlite.coupling import gw_cost, marginal_error, to_dense
from gwlite.problem import GWProblem
from gwlite.result import GWResult
from gwlite.solvers._common import (
    clamp_lower,
    clamp_value,
    is_certified,
    lower_value,
    result_scalars,
)


def solve(
    problem: GWProblem,
    *,
    lower: str = "mean_row",
    return_coupling: bool = True,
    diagnostics: bool = True,
) -> GWResult:
    r"""Closed form, lower bound and sorted upper bound in one pass.

    Parameters
    ----------
    problem : GWProblem
    lower : {"mean_row", "flb", "slb", "tlb", "rank_one"}
        Which proven lower bound to report as ``lower``. ``value`` is the mean-row
        closed form moved into ``[lower, upper]``: with ``"mean_row"`` (default)
        ``lower == value``; a bound above the closed form (``"tlb"`` dominates every
        other bound) raises ``value`` to it. The closed form itself is always in
        ``diagnostics["closed_form"]``.
    return_coupling : bool
        Return the sorted coupling as a dense ``(n, m)`` array (else ``None``).
    diagnostics : bool
        Compute the gap-identity quantities (:func:`gwlite.bounds.gap_diagnostics`).
    """
    value = _xp.scalar(compute_lower(problem, "mean_row"), keep_graph=True)
    low = value if lower == "mean_row" else lower_value(problem, lower)
    coupling = sorted_sparse_coupling(problem)
    upper = gw_cost(problem.C1, problem.C2, coupling, problem.loss_fun, check=False)
    closed_form, low, upper = result_scalars(problem, value, clamp_lower(low, upper), upper)
    extra = {"lower_kind": lower, "closed_form": _xp.as_float(closed_form)}
    if diagnostics:
        extra.update(gap_diagnostics(problem, coupling, closed_form, upper))
    return GWResult(
        value=clamp_value(closed_form, low, upper),
        lower=low,
        upper=upper,
        coupling=to_dense(coupling) if return_coupling else None,
        method="sorted",
        loss_fun=problem.loss_fun,
        converged=True,
        n_iter=0,
        marginal_error=marginal_error(coupling, problem.p, problem.q),
        certified=is_certified(problem, low, upper),
        time_s=0.0,
        diagnostics=extra,
    )
