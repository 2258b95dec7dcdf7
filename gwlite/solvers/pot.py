r"""``method="cg"`` and ``method="entropic"``: POT's solvers, plus what POT lacks.

POT (Flamary et al. 2021) does the optimisation; gwlite adds, around it:

* the returned plan is rounded onto the transport polytope :math:`\Pi(p, q)`
  (Altschuler, Weed & Rigollet 2017) before its GW cost is reported, so ``upper`` is
  the exact cost of a feasible coupling. An unconverged Sinkhorn plan can otherwise
  report a value below the true GW (POT issue #406 shows negative values);
* a proven lower bound (the sorted closed form by default, TLB on request);
* truthful ``converged``, ``n_iter`` and ``marginal_error`` (measured on the plan POT
  returned, before rounding);
* scale: POT works on ``C1 / unit`` and ``C2 / unit`` with ``unit`` a power of two at
  the scale of the entries (:attr:`gwlite.problem.GWProblem.unit`), and the losses are
  mapped back by ``unit**2``. Dividing by a power of two is exact, so POT's absolute
  tolerances (``tol_abs``) act relative to the loss scale and the same input in other
  units gives the same plan; ``epsilon`` keeps POT's absolute meaning (it is divided by
  ``unit**2`` too) and defaults to ``0.1`` times the loss scale;
* every option is checked, ``G0`` against the problem, before POT is called; each
  distinct warning POT emits is kept once in ``diagnostics["pot_warnings"]``.

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
from gwlite.solvers._common import (
    check_G0,
    clamp_lower,
    is_certified,
    lower_value,
    one_of,
    result_scalars,
    with_option_checks,
)

#: the ``solver`` choices of POT's entropic GW
ENTROPIC_SOLVERS = ("PGD", "PPA")
#: default entropic regularisation, relative to the loss scale ``max(|C1|, |C2|)**2``
EPSILON_REL = 0.1


def _require_square_loss(problem: GWProblem, method: str) -> None:
    if problem.loss_fun != "square_loss":
        raise GWInputError(
            f"method={method!r} supports loss_fun='square_loss' only (POT's solvers rely on "
            "the square-loss decomposition); for 'abs_loss' use method='sorted' or 'exact'"
        )


def _check_G0(problem: GWProblem, G0):
    """``G0`` checked by the common rule (:func:`check_G0`) in the problem's dtype."""
    G0 = check_G0(problem, G0)
    return None if G0 is None else problem.xp.astype(G0, problem.C1.dtype)


def _on_support(problem: GWProblem, G0=None):
    """POT's inputs: normalised by ``problem.unit``, restricted to the nodes with mass.

    Sinkhorn divides by the marginals, so a zero weight gives NaN plans in POT; nodes
    without mass carry no part of any coupling, and the GW problem on the support is
    the same problem. Returns the inputs and the map from a plan back to ``(n, m)``.
    """
    xp = problem.xp
    C1, C2, p, q = (_xp.detach(x) for x in (problem.C1, problem.C2, problem.p, problem.q))
    unit = problem.unit
    C1, C2 = C1 / unit, C2 / unit
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


def _distinct(messages) -> list[str]:
    """Each distinct message once, in order of first appearance."""
    return list(dict.fromkeys(str(m) for m in messages))


def _call_pot(method: str, fn, *args, **kwargs):
    """Run a POT solver, keeping its warnings and turning its exceptions into ours."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            with np.errstate(all="ignore"):
                out = fn(*args, **kwargs)
        except (GWInputError, GWSolverError):
            raise
        except Exception as err:  # POT raises many kinds on numerical trouble
            raise GWSolverError(
                f"POT's {method} solver raised {type(err).__name__}: {err}"
            ) from err
    return out, _distinct(w.message for w in caught)


def _finish(
    problem, method, plan, *, lower, converged, n_iter, return_coupling, extra, marginal_tol=None
):
    """Round, price and certify a plan returned by POT.

    ``converged`` is POT's own stopping rule; with ``marginal_tol`` it also requires the
    plan's marginal error to be within that tolerance.
    """
    xp = problem.xp
    plan = _xp.detach(plan)
    finite = bool(xp.all(xp.isfinite(plan)))
    mass = float(xp.sum(plan)) if finite else float("nan")
    if not abs(mass - 1) <= 0.5:
        # NaN, Inf or a plan that lost its mass: numerical failure, not an answer
        notes = "; ".join(extra.get("pot_warnings", [])[:3])
        raise GWSolverError(
            f"POT's {method} solver failed numerically (plan mass {mass:.3g}"
            + (f"; POT said: {notes}" if notes else "")
            + ")"
            + (
                f"; increase epsilon (it is absolute: the loss scale max(|C1|, |C2|)^2 is "
                f"{problem.scale():.3g})"
                if method == "entropic"
                else ""
            )
        )
    error = marginal_error(plan, problem.p, problem.q)
    converged = bool(converged) and (marginal_tol is None or error <= marginal_tol)
    # rounded with the weights as given: with torch weights that require grad, the
    # reported upper bound follows them (the plan POT returned is held fixed)
    feasible = round_to_polytope(plan, problem.p, problem.q)
    upper = gw_cost(problem.C1, problem.C2, feasible, problem.loss_fun, check=False)
    low = clamp_lower(lower_value(problem, lower), upper)
    value, low, upper = result_scalars(problem, upper, low, upper)
    extra = dict(
        extra,
        lower_kind=lower,
        rounding_l1=float(xp.sum(xp.abs(_xp.detach(feasible) - plan))),
    )
    return GWResult(
        value=value,
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
    ``G0`` must be a coupling of ``p`` and ``q`` (within round-off). ``tol_abs`` is
    measured in units of the loss scale ``max(|C1|, |C2|)^2`` (POT runs on the
    normalised matrices, see the module docstring), so the stopping rule does not
    depend on the unit of the inputs. The result is a local optimum: ``value = upper``
    is the GW cost of its plan.
    """
    import ot  # imported on use: POT imports torch when present, gwlite must not

    _require_square_loss(problem, "cg")
    G0 = _check_G0(problem, G0)
    (C1, C2, p, q, G0), embed = _on_support(problem, G0)
    given = C1.dtype
    if G0 is not None and given != problem.xp.float64:
        # POT asserts G0's marginals to 1e-8, below float32's round-off: the warm-started
        # solve runs in float64 and its plan is cast back
        xp = problem.xp
        C1, C2, p, q, G0 = (xp.astype(x, xp.float64) for x in (C1, C2, p, q, G0))
        # widened float32 weights: one mass to float64 round-off, or no plan has both
        p, q = p / xp.sum(p), q / xp.sum(q)
        G0 = round_to_polytope(G0, p, q)
    (plan, log), notes = _call_pot(
        "cg",
        ot.gromov.gromov_wasserstein,
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
    losses = [float(v) for v in log["loss"]]  # normalised units
    n_iter = len(losses) - 1
    change = abs(losses[-1] - losses[-2]) if n_iter else 0.0
    converged = change < tol_abs or change < tol_rel * abs(losses[-1]) or n_iter < max_iter
    return _finish(
        problem,
        "cg",
        embed(problem.xp.astype(plan, given)),
        lower=lower,
        converged=converged,
        n_iter=n_iter,
        return_coupling=return_coupling,
        extra={"pot_value": float(log["gw_dist"]) * problem.unit**2, "pot_warnings": notes},
    )


solve_cg.imports = ("ot",)


@with_option_checks(solver=one_of(ENTROPIC_SOLVERS))
def solve_entropic(
    problem: GWProblem,
    *,
    epsilon: float | None = None,
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

    ``epsilon``, ``G0``, ``max_iter``, ``tol``, ``solver`` and ``symmetric`` are POT's.
    ``epsilon`` is absolute, as in POT; its default (None) is ``0.1`` times the loss
    scale ``max(|C1|, |C2|)^2`` (POT's default 0.1 for entries of magnitude 1), so that
    the default regularises inputs in any unit alike. The plan is rounded onto the
    polytope before it is priced. ``converged`` is True only when POT's outer loop met
    ``tol`` before ``max_iter`` and the returned plan's marginals are within
    ``marginal_tol`` (l1) of ``p`` and ``q``.
    """
    import ot

    _require_square_loss(problem, "entropic")
    scale = problem.scale()
    if epsilon is None:
        epsilon = EPSILON_REL * scale if scale > 0 else EPSILON_REL
    unit2 = problem.unit**2
    pot_epsilon = epsilon / unit2
    if not (np.isfinite(pot_epsilon) and pot_epsilon > 0):
        raise GWInputError(
            f"epsilon={epsilon:.3g} is out of range for entries of scale {problem.unit:.3g}; "
            f"choose epsilon near the loss scale max(|C1|, |C2|)^2 = {scale:.3g}"
        )
    G0 = _check_G0(problem, G0)
    (C1, C2, p, q, G0), embed = _on_support(problem, G0)
    (plan, log), notes = _call_pot(
        "entropic",
        ot.gromov.entropic_gromov_wasserstein,
        C1,
        C2,
        p,
        q,
        loss_fun="square_loss",
        epsilon=pot_epsilon,
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
            "pot_value": float(log["gw_dist"]) * unit2,
            "epsilon": epsilon,
            "pot_warnings": notes,
        },
    )


solve_entropic.imports = ("ot",)
