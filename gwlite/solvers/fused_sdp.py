r"""``method="sdp"`` for fused GW: the lifted relaxation with the linear term.

The relaxation of ``gwlite.solvers._sdp_model`` on :math:`\alpha^{1/r} C^1,
\alpha^{1/r} C^2` with the linear term :math:`(1 - \alpha) M` folded into the lifted
cost; every iterate's multipliers give a proven lower bound through
``gwlite.solvers._sdp_model.certify`` (whatever the conic solver did), and the
vertex of the transport polytope most aligned with the first moment is priced as a
plan. Proof in ``docs/theory_fused.md``.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

import numpy as np

from gwlite.errors import GWInputError
from gwlite.fused_bounds import FusedProblem, best_lower, unit_scale
from gwlite.result import GWResult
from gwlite.solvers import _sdp_conic
from gwlite.solvers import _sdp_model as model_lib
from gwlite.solvers.sdp import DEFAULT_MAX_SIZE, DEFAULT_TOL, available

__all__ = ["DEFAULT_TOL", "Relaxation", "available", "relax", "solve"]

# the conic solver is asked for this fraction of ``tol`` (its residuals enter the bound)
_SOLVER_TOL_FACTOR = 1e-3
# stop when the bound gained less than this share of the gap over the last chunk
_STALL_RTOL = 1e-2


@dataclass(frozen=True)
class Relaxation:
    """Outcome of the fused relaxation: a proven bound and the best vertex plan."""

    bound: float
    plan: np.ndarray | None
    iterations: int
    stop: str


def relax(fp: FusedProblem, budget: float, incumbent: np.ndarray | None, tol=DEFAULT_TOL):
    """Run the relaxation for at most ``budget`` seconds (nodes with mass only)."""
    import ot

    start = time.perf_counter()
    gw, a, r = fp.gw, fp.alpha, fp.exponent
    rows, cols = np.nonzero(gw.p > 0)[0], np.nonzero(gw.q > 0)[0]
    if len(rows) < 2 or len(cols) < 2:
        return Relaxation(-math.inf, None, 0, "trivial")
    c, k = unit_scale(fp)
    s = a ** (1.0 / r) / c
    model = model_lib.build_model(
        s * gw.C1[np.ix_(rows, rows)],
        s * gw.C2[np.ix_(cols, cols)],
        gw.p[rows],
        gw.q[cols],
        r,
        linear=(1 - a) * fp.M[np.ix_(rows, cols)] / k,
    )
    data = model_lib.conic_data(model, "scs")
    nonneg = data[3][1]
    target = tol * fp.scale()
    upper = math.inf if incumbent is None else fp.cost(incumbent)
    bound, best_plan, best_cost, stop, iterations = -math.inf, None, math.inf, "time_limit", 0
    remaining = None if budget == math.inf else max(budget - (time.perf_counter() - start), 1e-3)
    for iterate in _sdp_conic.ITERATES["scs"](data, tol * _SOLVER_TOL_FACTOR, remaining):
        iterations = iterate.iterations
        cert = model_lib.certify(model, -iterate.z[0], iterate.z[1 : 1 + nonneg])
        gained = cert.bound * k - bound
        bound = max(bound, cert.bound * k)
        x = np.zeros((fp.n, fp.m))
        x[np.ix_(rows, cols)] = model_lib.moment(model, iterate.x)
        plan = ot.emd(gw.p, gw.q, -np.maximum(x, 0.0))
        cost = fp.cost(plan)
        if cost < best_cost:
            best_plan, best_cost = plan, cost
        gap = min(upper, best_cost) - bound
        if gap <= target:
            stop = "certified"
            break
        if iterate.converged or gained < _STALL_RTOL * gap:
            stop = "solver converged" if iterate.converged else "stalled"
            break
        if time.perf_counter() - start >= budget:
            break
    return Relaxation(bound, best_plan, iterations, stop)


def solve(
    fp: FusedProblem,
    *,
    time_limit: float | None = None,
    max_size: int | None = None,
    tol: float = DEFAULT_TOL,
    lower: str = "tlb",
    return_coupling: bool = True,
) -> GWResult:
    """The fused relaxation (SCS), from the fused TLB's plan and a conditional-gradient
    plan; ``lower`` is the larger of the relaxation's certified bound and ``lower``."""
    from gwlite.solvers.fused import _cg_plan, _feasible, _result

    if not available("scs"):
        raise GWInputError(
            "method='sdp' needs the conic solver 'scs': pip install scs (gwlite's 'certify' "
            "extra); "
            "method='exact' or 'auto' give proven bounds without it"
        )
    limit = DEFAULT_MAX_SIZE if max_size is None else max_size
    if fp.n * fp.m > limit:
        raise GWInputError(
            f"method='sdp' with n * m = {fp.n * fp.m} > max_size={limit}; pass max_size=N "
            "(with time_limit=SECONDS), or use method='auto' or 'cg'"
        )
    named = best_lower(fp, (lower,))
    plans = {f"{lower}_plan": named.plan}
    if fp.loss_fun == "square_loss":
        plans["cg"] = _feasible(fp, _cg_plan(fp, None, 10_000, 1e-9, 1e-9, False, None)[0])[0]
    start_name = min(plans, key=lambda name: fp.cost(plans[name]))
    budget = math.inf if time_limit is None else time_limit
    run = relax(fp, budget, plans[start_name], tol)
    if run.plan is not None:
        plans["sdp_vertex"] = run.plan
    upper_kind = min(plans, key=lambda name: fp.cost(plans[name]))
    kind = "sdp" if run.bound > named.value else lower
    bound = max(run.bound, named.value)
    upper = fp.cost(plans[upper_kind])
    return _result(
        fp,
        "sdp",
        plans[upper_kind],
        bound,
        converged=run.stop in ("certified", "solver converged"),
        n_iter=run.iterations,
        marginal_error=0.0,
        return_coupling=return_coupling,
        certified=upper - bound <= tol * fp.scale(),
        diagnostics={"lower_kind": kind, "upper_kind": upper_kind, "stop_reason": run.stop},
    )


solve.imports = ("ot", "scs")
