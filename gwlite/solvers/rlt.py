r"""``method="rlt"``: a proven lower bound above TLB for graphs of real size.

The first level of the reformulation-linearization technique (RLT, Adams and Johnson
1994) relaxes :math:`P = xx^\top` (:math:`x = \operatorname{vec}(\pi)`) to a symmetric
non-negative :math:`P` whose rows are couplings of :math:`x_a p` and :math:`x_a q`: the
linear part of the lifted relaxation of :mod:`gwlite.solvers.sdp`, without its
semidefinite block. Its Lagrangian dual is solved by the dual ascent of Hahn and Grant
(1998): each iteration solves the :math:`nm` inner transport problems (one per pair
:math:`(i, j)`, each :math:`n \times m`) and one outer problem, and moves reduced costs
between them. The first iteration is Memoli's TLB; each later one is at least as large
up to round-off, and **every** iteration's value is a proven lower bound (feasible
potentials, floating-point margins: ``docs/theory_rlt.md``), so stopping at any time,
including by ``time_limit``, leaves a valid bound.

Cost: :math:`O((nm)^2)` memory (a few dense :math:`nm \times nm` arrays, about 0.3 GB
at :math:`nm = 2{,}600`) and :math:`nm` network-simplex solves per iteration (about
4 s at :math:`nm = 2{,}600` on a busy 2-core machine); :func:`estimate_seconds` gives
the budget that ``auto`` compares with its time left.

The upper side is that of ``method="sdp"``: ``G0``, the permutation optimum of
``method="exact"`` (uniform weights, :math:`n = m`), conditional gradient, and the
outer problem's optimal plan (a vertex of the transport polytope) polished by
conditional gradient.

References
----------
W. P. Adams, T. A. Johnson. Improved linear programming-based lower bounds for the
quadratic assignment problem. DIMACS Series 16 (1994), 43-75.
P. M. Hahn, T. Grant. Lower bounds for the quadratic assignment problem based upon a
dual formulation. Operations Research 46 (1998), 912-922.
"""

from __future__ import annotations

import dataclasses
import math
import time

import numpy as np

from gwlite import _xp
from gwlite.coupling import gw_cost, marginal_error
from gwlite.errors import GWInputError
from gwlite.problem import GWProblem
from gwlite.result import GWResult
from gwlite.solvers import _rlt_bound
from gwlite.solvers._common import (
    clamp_lower,
    is_certified,
    lower_value,
    optional,
    positive_int,
    result_scalars,
    with_option_checks,
)
from gwlite.solvers._sdp_model import lifted_cost
from gwlite.solvers._upper import Incumbent, first_candidates, host, start_plan, support, support_of

__all__ = [
    "AUTO_MIN_ITERATIONS",
    "DEFAULT_MAX_ITER",
    "DEFAULT_MAX_SIZE",
    "DEFAULT_TOL",
    "estimate_seconds",
    "fits_budget",
    "solve",
]

#: largest ``n * m`` (nodes with positive weight) accepted without ``max_size=``: five
#: dense ``nm x nm`` float64 arrays, 0.7 GB at 4,096
DEFAULT_MAX_SIZE = 4096
#: ascent iterations at most (the bound's gains are then far below 1e-3 of the gap)
DEFAULT_MAX_ITER = 2000
#: certified when ``upper - lower <= tol * max|C|^r``
DEFAULT_TOL = 1e-6
# seconds per iteration per (nm)^2, measured on the project's busy 2-core machine
# (0.14 s at nm = 480, 4 s at nm = 2,618; docs/benchmarks/sdp_scale.md), rounded up
_S_PER_ENTRY2 = 1.0e-6
# stalled: the bound rose by less than this share of the gap over the last _WINDOW
# iterations
_STALL_RTOL = 1e-3
_WINDOW = 25
# share of the time left kept for polishing the ascent's plan
_POLISH_SHARE = 0.1


def estimate_seconds(n: int, m: int, iterations: int = 1) -> float:
    """Seconds for ``iterations`` ascent iterations on an ``n x m`` problem (measured
    on two busy cores; a fast idle machine takes about half)."""
    return _S_PER_ENTRY2 * float(n * m) ** 2 * iterations


#: ``method="auto"`` runs the ascent when this many iterations fit in its time left
AUTO_MIN_ITERATIONS = 10


def fits_budget(n: int, m: int, seconds: float) -> bool:
    """Whether ``auto`` should run the ascent on an ``n x m`` problem with ``seconds``
    left: within :data:`DEFAULT_MAX_SIZE` and :data:`AUTO_MIN_ITERATIONS` iterations
    estimated to fit (a longer ``time_limit`` admits larger problems)."""
    return n * m <= DEFAULT_MAX_SIZE and estimate_seconds(n, m, AUTO_MIN_ITERATIONS) <= seconds


def _check(problem: GWProblem, time_limit, tol, max_size) -> int:
    if problem.batch_shape:
        raise GWInputError("method='rlt' takes one pair of matrices, not a batch")
    if time_limit is not None and not (_is_number(time_limit) and time_limit > 0):
        raise GWInputError(f"time_limit must be a number of seconds > 0, got {time_limit!r}")
    if not (_is_number(tol) and 0 < tol < 1):
        raise GWInputError(f"tol must be a number in (0, 1), got {tol!r}")
    return DEFAULT_MAX_SIZE if max_size is None else int(max_size)


def _is_number(x) -> bool:
    return isinstance(x, (int, float, np.integer, np.floating)) and not isinstance(x, bool)


def _check_size(size: int, limit: int) -> None:
    if size > limit:
        raise GWInputError(
            f"method='rlt' keeps dense n*m x n*m arrays: n * m = {size} is above "
            f"max_size={limit} (the default, {DEFAULT_MAX_SIZE}, needs about 0.7 GB). Pass "
            "max_size=N to run it anyway, or use method='sorted' with lower='tlb' (a proven "
            "interval in O(n m (n + m)))"
        )


def _progress(max_iter: int):
    """An iteration bar that appears once the ascent has run 2 s (terminals only)."""
    from tqdm import tqdm

    return tqdm(total=max_iter, desc="gwlite rlt", unit="it", delay=2.0, leave=False, disable=None)


def _scaled_cost(C1: np.ndarray, C2: np.ndarray, r: int) -> tuple[np.ndarray, float]:
    """The symmetrised lifted cost of ``C / s`` for a power of two ``s >= max|C|`` (exact
    scaling: the transport solver's absolute tolerances then act the same in every
    unit), and the factor ``s^r`` that brings its bounds back."""
    top = max(float(np.abs(C1).max()), float(np.abs(C2).max()))
    scale = 1.0 if top == 0 else math.ldexp(1.0, math.frexp(top)[1])
    raw = lifted_cost(C1 / scale, C2 / scale, r)
    return (raw + raw.T) / 2, scale**r


@with_option_checks(max_size=optional(positive_int))
def solve(
    problem: GWProblem,
    *,
    lower: str = "tlb",
    G0=None,
    time_limit: float | None = None,
    max_iter: int = DEFAULT_MAX_ITER,
    max_size: int | None = None,
    tol: float = DEFAULT_TOL,
    return_coupling: bool = True,
) -> GWResult:
    r"""GW between graphs of tens of nodes with a proven interval, by the RLT dual ascent.

    Parameters
    ----------
    problem : GWProblem
        Any loss, weights and sizes (``n * m <= max_size``, nodes with positive weight).
    lower : {"tlb", "mean_row", "flb", "slb", "rank_one"}
        A sorting bound computed alongside; ``lower`` reports the largest of it, the
        ascent's bound and the bound ``method="exact"`` proves on the way.
    G0 : array ``(n, m)``, optional
        A coupling to try on the upper side (rounded onto the polytope first).
    time_limit : float, optional
        Seconds for the whole call; the ascent's best bound so far is a proven bound
        whenever it stops.
    max_iter : int
        Ascent iterations at most (each solves ``n * m`` transport problems).
    max_size : int, optional
        Largest ``n * m`` accepted; default :data:`DEFAULT_MAX_SIZE`.
    tol : float
        ``certified`` when ``upper - lower <= tol * max(max|C1|, max|C2|)^r``; the ascent
        stops then, or when it stalls (less than 0.1% of the gap gained in 25 iterations).
    return_coupling : bool
        Return the best coupling found (in the input's array type).

    Returns
    -------
    GWResult
        ``value = upper``: the cost of the best coupling found; ``lower``: the largest
        proven bound (``diagnostics["lower_kind"]``: ``"rlt"``, ``"exact"`` or the
        ``lower=`` name). ``diagnostics``: ``rlt_bound``, ``named_lower``,
        ``exact_lower``, ``iterations``, ``stop_reason``, ``history`` (the bound of
        each iteration, each proven), ``upper_kind``, ``candidates`` and the time of each stage
        (``upper_time_s``, ``ascent_time_s``, ``polish_time_s``).

    Raises
    ------
    GWInputError
        ``n * m > max_size``, a batch, or bad options.
    """
    start = time.perf_counter()
    deadline = math.inf if time_limit is None else start + time_limit

    def remaining() -> float:
        return deadline - time.perf_counter()

    limit = _check(problem, time_limit, tol, max_size)
    C1, C2, p, q, rows, cols = support(problem)
    _check_size(len(p) * len(q), limit)
    G0_host = start_plan(problem, G0)
    plain = dataclasses.replace(
        problem, **{k: _xp.detach(getattr(problem, k)) for k in ("C1", "C2", "p", "q")}
    )
    incumbent = Incumbent(plain)
    exact_lower = first_candidates(incumbent, G0_host, remaining)
    named = _xp.as_float(lower_value(plain, lower))
    t_upper = time.perf_counter()
    L, factor = _scaled_cost(C1, C2, problem.exponent)
    data_scale = max(float(np.abs(C1).max()), float(np.abs(C2).max())) ** problem.exponent
    target = tol * data_scale
    other = max(named, exact_lower)
    bar = _progress(max_iter)

    def on_iteration(it: int, best: float) -> None:
        bar.update(it - bar.n)
        bar.set_postfix(gap=f"{incumbent.cost - best * factor:.2e}", refresh=False)

    best_so_far: list[float] = []

    def stop(best: float) -> bool:
        best_so_far.append(best)
        gap = incumbent.cost - max(best * factor, other)
        stalled = len(best_so_far) > _WINDOW and (
            (best_so_far[-1] - best_so_far[-1 - _WINDOW]) * factor <= _STALL_RTOL * gap
        )
        return gap <= target or stalled

    bound, plan, iterations, reason, bounds = -math.inf, None, 0, "not run", []
    if len(p) > 1 and len(q) > 1:
        # the last tenth of the time is the polish's (a plan from the ascent's vertex)
        ascent_deadline = time.perf_counter() + (1 - _POLISH_SHARE) * remaining()
        bound, plan, iterations, reason, bounds = _rlt_bound.run_ascent(
            L,
            p,
            q,
            max_iter=max_iter,
            deadline=ascent_deadline,
            stop=stop,
            on_iteration=on_iteration,
        )
        bound *= factor
    else:  # one coupling, p q^T: its cost is GW
        incumbent.offer("only_coupling", np.outer(host(problem.p), host(problem.q)), False)
        bound, reason = incumbent.cost, "trivial (one coupling)"
    bar.close()
    if reason == "stopped":
        reason = "certified" if incumbent.cost - max(bound, other) <= target else "stalled"
    t_ascent = time.perf_counter()
    if plan is not None:
        full = np.zeros((problem.n, problem.m))
        full[np.ix_(rows, cols)] = plan
        incumbent.offer("rlt_vertex", full)  # rounded: the LP solver may stop early
        incumbent.polish(["rlt_vertex"], remaining)
    t_polish = time.perf_counter()
    return _result(
        problem,
        incumbent,
        {"rlt": bound, lower: named, "exact": exact_lower},
        target,
        return_coupling,
        dict(
            rlt_bound=float(bound),
            named_lower=named,
            exact_lower=exact_lower,
            iterations=iterations,
            stop_reason=reason,
            history=[b * factor for b in bounds],
            upper_time_s=t_upper - start,
            ascent_time_s=t_ascent - t_upper,
            polish_time_s=t_polish - t_ascent,
            tol=tol,
        ),
    )


def _result(problem, incumbent, bounds: dict, target: float, return_coupling, diagnostics):
    """The GWResult: the cheapest plan's cost above, the largest proven bound below."""
    plan = incumbent.plan
    priced = support_of(plan, problem.C1)
    upper = _xp.scalar(gw_cost(problem.C1, problem.C2, priced, problem.loss_fun), True)
    lower_kind = max(bounds, key=bounds.get)
    low = clamp_lower(bounds[lower_kind], upper)
    gap = _xp.as_float(upper) - _xp.as_float(low)
    certified = gap <= target or is_certified(problem, low, upper)
    diagnostics.update(
        lower_kind=lower_kind, upper_kind=incumbent.name, candidates=dict(incumbent.costs)
    )
    upper, low = result_scalars(problem, upper, low)
    return GWResult(
        value=upper,
        lower=low,
        upper=upper,
        coupling=_xp.from_numpy(plan, problem.C1) if return_coupling else None,
        method="rlt",
        loss_fun=problem.loss_fun,
        converged=bool(certified or diagnostics["stop_reason"] in ("stalled", "certified")),
        n_iter=int(diagnostics["iterations"]),
        marginal_error=marginal_error(plan, _xp.to_numpy(problem.p), _xp.to_numpy(problem.q)),
        certified=bool(certified),
        time_s=0.0,
        diagnostics=diagnostics,
    )


solve.imports = ("ot",)  # the transport solves: imported before the clock
