r"""``method="cg"`` and ``method="entropic"``: POT's solvers, plus what POT lacks.

POT (Flamary et al. 2021) does the optimisation; gwlite adds, around it:

* the returned plan is rounded onto the transport polytope :math:`\Pi(p, q)`
  (Altschuler, Weed & Rigollet 2017) before its GW cost is reported, so ``upper`` is
  the exact cost of a feasible coupling. An unconverged Sinkhorn plan can otherwise
  report a value below the true GW (POT issue #406 shows negative values);
* a proven lower bound (the sorted closed form by default, TLB on request);
* truthful ``converged``, ``n_iter`` and ``marginal_error`` (measured on the plan POT
  returned, before rounding).

Gradients (torch): ``value``/``upper`` are the GW cost of the returned plan, evaluated
with the plan held fixed, so their gradient with respect to ``C1, C2`` is the
envelope-theorem gradient POT itself provides (exact at a stationary plan).

References
----------
R. Flamary et al. POT: Python Optimal Transport. JMLR 22(78), 2021.
J. Altschuler, J. Weed, P. Rigollet. Near-linear time approximation algorithms for
optimal transport via Sinkhorn iteration. NeurIPS 2017.
"""

from __future__ import annotations

import warnings

import numpy as np

from gwlite import _xp
from gwlite.coupling import SparseCoupling, gw_cost, marginal_error, round_to_polytope, to_dense
from gwlite.errors import GWInputError, GWSolverError
from gwlite.problem import GWProblem
from gwlite.result import GWResult
from gwlite.solvers._common import clamp_lower, is_certified, lower_value


def _require_square_loss(problem: GWProblem, method: str) -> None:
    if problem.loss_fun != "square_loss":
        raise GWInputError(
            f"method={method!r} supports loss_fun='square_loss' only (POT's solvers rely on "
            "the square-loss decomposition); for 'abs_loss' use method='sorted' or 'exact'"
        )


def _on_support(problem: GWProblem, G0=None):
    """POT's inputs restricted to the nodes with positive mass, and the way back.

    Sinkhorn divides by the marginals, so a zero weight gives NaN plans in POT; nodes
    without mass carry no part of any coupling, and the GW problem on the support is
    the same problem.
    """
    xp = problem.xp
    C1, C2, p, q = (_xp.detach(x) for x in (problem.C1, problem.C2, problem.p, problem.q))
    rows = np.nonzero(_xp.to_numpy(p) > 0)[0]
    cols = np.nonzero(_xp.to_numpy(q) > 0)[0]
    if len(rows) == problem.n and len(cols) == problem.m:
        return (C1, C2, p, q, G0), lambda plan: plan
    r, c = (xp.asarray(i, device=_xp.device(C1)) for i in (rows, cols))
    inputs = (
        xp.take(xp.take(C1, r, axis=0), r, axis=1),
        xp.take(xp.take(C2, c, axis=0), c, axis=1),
        xp.take(p, r, axis=0),
        xp.take(q, c, axis=0),
        None if G0 is None else xp.take(xp.take(G0, r, axis=0), c, axis=1),
    )

    def embed(plan):
        flat = xp.reshape(plan, (-1,))
        grid_r, grid_c = np.repeat(rows, len(cols)), np.tile(cols, len(rows))
        return to_dense(SparseCoupling(grid_r, grid_c, flat, (problem.n, problem.m)))

    return inputs, embed


def _finish(
    problem, method, plan, *, lower, converged, n_iter, return_coupling, extra, marginal_tol=None
):
    """Round, price and certify a plan returned by POT.

    ``converged`` is POT's own stopping rule; with ``marginal_tol`` it also requires the
    plan's marginal error to be within that tolerance.
    """
    xp = problem.xp
    mass = float(xp.sum(plan)) if bool(xp.all(xp.isfinite(plan))) else float("nan")
    if not abs(mass - 1) <= 0.5:
        # NaN, Inf or a plan that lost its mass: numerical failure, not an answer
        notes = "; ".join(extra.get("pot_warnings", [])[:3])
        raise GWSolverError(
            f"POT's {method} solver failed numerically (plan mass {mass:.3g}"
            + (f"; POT said: {notes}" if notes else "")
            + "); for 'entropic' increase epsilon (it is absolute: compare it with the "
            "scale of C1 and C2)"
        )
    plan = _xp.detach(plan)
    error = marginal_error(plan, problem.p, problem.q)
    converged = bool(converged) and (marginal_tol is None or error <= marginal_tol)
    feasible = round_to_polytope(plan, _xp.detach(problem.p), _xp.detach(problem.q))
    upper = _xp.scalar(gw_cost(problem.C1, problem.C2, feasible, problem.loss_fun), True)
    low = clamp_lower(lower_value(problem, lower), upper)
    extra = dict(extra, lower_kind=lower, rounding_l1=float(xp.sum(xp.abs(feasible - plan))))
    return GWResult(
        value=upper,
        lower=low,
        upper=upper,
        coupling=feasible if return_coupling else None,
        method=method,
        loss_fun=problem.loss_fun,
        converged=converged,
        n_iter=n_iter,
        marginal_error=error,
        certified=is_certified(problem, low, upper),
        time_s=0.0,
        diagnostics=extra,
    )


def solve_cg(
    problem: GWProblem,
    *,
    G0=None,
    max_iter: int = 10_000,
    tol_rel: float = 1e-9,
    tol_abs: float = 1e-9,
    armijo: bool = False,
    symmetric: bool | None = None,
    lower: str = "mean_row",
    return_coupling: bool = True,
) -> GWResult:
    """Conditional gradient (Frank-Wolfe) through ``ot.gromov.gromov_wasserstein``.

    Parameters are POT's (``G0``, ``max_iter``, ``tol_rel``, ``tol_abs``, ``armijo``,
    ``symmetric``) plus ``lower`` (which lower bound to report) and ``return_coupling``.
    The result is a local optimum: ``value = upper`` is the GW cost of its plan.
    """
    import ot  # imported on use: POT imports torch when present, gwlite must not

    _require_square_loss(problem, "cg")
    (C1, C2, p, q, G0), embed = _on_support(problem, G0)
    plan, log = ot.gromov.gromov_wasserstein(
        C1,
        C2,
        p,
        q,
        loss_fun="square_loss",
        symmetric=symmetric,
        log=True,
        armijo=armijo,
        G0=G0,
        max_iter=max_iter,
        tol_rel=tol_rel,
        tol_abs=tol_abs,
    )
    losses = [float(v) for v in log["loss"]]
    n_iter = len(losses) - 1
    change = abs(losses[-1] - losses[-2]) if n_iter else 0.0
    converged = change < tol_abs or change < tol_rel * abs(losses[-1]) or n_iter < max_iter
    return _finish(
        problem,
        "cg",
        embed(plan),
        lower=lower,
        converged=converged,
        n_iter=n_iter,
        return_coupling=return_coupling,
        extra={"pot_value": float(log["gw_dist"])},
    )


def solve_entropic(
    problem: GWProblem,
    *,
    epsilon: float = 0.1,
    G0=None,
    max_iter: int = 1000,
    tol: float = 1e-9,
    solver: str = "PGD",
    symmetric: bool | None = None,
    marginal_tol: float = 1e-6,
    lower: str = "mean_row",
    return_coupling: bool = True,
) -> GWResult:
    """Entropic GW through ``ot.gromov.entropic_gromov_wasserstein``.

    ``epsilon``, ``G0``, ``max_iter``, ``tol``, ``solver`` and ``symmetric`` are POT's
    (``epsilon`` is absolute, default 0.1 as in POT). The plan is rounded onto the
    polytope before it is priced. ``converged`` is True only when POT's outer loop met
    ``tol`` before ``max_iter`` and the returned plan's marginals are within
    ``marginal_tol`` (l1) of ``p`` and ``q``.
    """
    import ot

    _require_square_loss(problem, "entropic")
    if not epsilon > 0:
        raise GWInputError(f"epsilon must be > 0, got {epsilon}")
    (C1, C2, p, q, G0), embed = _on_support(problem, G0)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        plan, log = ot.gromov.entropic_gromov_wasserstein(
            C1,
            C2,
            p,
            q,
            loss_fun="square_loss",
            epsilon=epsilon,
            symmetric=symmetric,
            G0=G0,
            max_iter=max_iter,
            tol=tol,
            solver=solver,
            log=True,
        )
    errors = [float(e) for e in log["err"]]
    # POT measures its change every 10th iteration and stops at the first one below tol
    outer_converged = bool(errors) and errors[-1] <= tol
    n_iter = 10 * (len(errors) - 1) + 1 if outer_converged else max_iter
    return _finish(
        problem,
        "entropic",
        embed(plan),
        lower=lower,
        converged=outer_converged,
        marginal_tol=marginal_tol,
        n_iter=n_iter,
        return_coupling=return_coupling,
        extra={
            "pot_value": float(log["gw_dist"]),
            "epsilon": epsilon,
            "pot_warnings": [str(w.message) for w in caught],
        },
    )
