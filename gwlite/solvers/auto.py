r"""``method="auto"`` (the default): the tightest proven interval within a time budget.

Every method of gwlite returns a proven interval :math:`[\ell, u] \ni \mathrm{GW}`; they
differ in cost and tightness. ``auto`` runs them from the cheapest up, keeps the
largest lower bound and the cheapest plan found so far, and stops as soon as the
interval is certified or the budget is spent:

1. ``sorted``: the mean-row closed form (a lower bound) and the sorted coupling (a
   plan), :math:`O(n^2)`; always;
2. ``tlb``: Memoli's third lower bound, the strongest sorting bound,
   :math:`O(nm(n + m))`, when its estimated time fits in a quarter of the budget;
3. ``proximal``: gwlite's mirror-descent solver from several starts at once (many
   for small graphs, one for large problems), with its conditional-gradient polish;
4. ``exact``: branch and bound over permutations when :math:`n = m \le 32` with
   uniform weights (certified when its theorem applies, else a permutation optimum
   and a spectral bound);
5. ``sdp``: the semidefinite relaxation (:mod:`gwlite.solvers.sdp`) when its conic
   solver is installed and :math:`nm \le 64`, or by ADMM when 300 of its
   iterations fit in the budget (:func:`gwlite.solvers.sdp.fits_budget`), from the
   best plan so far;
6. ``rlt``: otherwise, the RLT dual ascent (:mod:`gwlite.solvers.rlt`) from the best
   plan so far, when ten of its iterations fit in the time left
   (:func:`gwlite.solvers.rlt.fits_budget`).

``value`` is the GW cost of the best plan (what ``ot.gromov.gromov_wasserstein2``
reports), ``lower``/``upper`` the best proven bounds and ``coupling`` the best plan;
``diagnostics`` names the method behind each bound and the time of every stage.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

from gwlite import _xp
from gwlite.bounds import sorted_sparse_coupling
from gwlite.coupling import gw_cost, marginal_error, to_dense
from gwlite.errors import GWInputError
from gwlite.problem import GWProblem
from gwlite.result import GWResult
from gwlite.solvers import _operators, exact, proximal, rlt
from gwlite.solvers._common import (
    clamp_lower,
    flag,
    is_certified,
    lower_check,
    lower_value,
    nonneg_int,
    nonneg_real,
    optional,
    positive_int,
    result_scalars,
    with_option_checks,
)
from gwlite.solvers._prox_time import cpu_share

__all__ = ["DEFAULT_RTOL", "DEFAULT_TIME_LIMIT", "SDP_MAX_ENTRIES", "solve"]

#: seconds for the whole call when no ``time_limit`` is given
DEFAULT_TIME_LIMIT = 10.0
#: stop once ``(upper - lower) <= rtol * upper``
DEFAULT_RTOL = 1e-6
#: the SDP stage runs when ``n * m`` is at most this: the relaxation then takes about a
#: second (median; up to tens of seconds, always cut at the time limit) on two cores
SDP_MAX_ENTRIES = 64
# share of the remaining time each stage may use (the proximal stage leaves room for
# the exact and SDP stages only when they will run)
_TLB_SHARE = 0.25
_PROXIMAL_SHARE = 0.6
_EXACT_SHARE = 0.7
# the proximal stage repeats rounds of starts up to this size, with these weights
_ROUNDS_MAX_NODES = 300
_MAX_ROUNDS = 8
_EPSILONS = (5e-4, 2e-3, 5e-3, 1e-3)
# a stage is worth starting only with this much time left (seconds)
_MIN_STAGE_S = 0.05
# calibrated on 2 CPU cores: seconds per (n m (n + m)) of the TLB cost matrix, and per
# n m of its linear program; non-uniform weights cost one sort per row
_TLB_S_PER_ENTRY = 1.5e-9
_LP_S_PER_ENTRY = 1.0e-6
# seconds per pair of a sparse plan's support when pricing it (2 cores: 1e-7 to 3e-7)
_PAIR_S = 2.5e-7


@dataclass
class _Best:
    """The interval so far and where each end came from."""

    problem: GWProblem
    lower: object = -math.inf
    lower_by: str = ""
    upper: object = math.inf
    upper_by: str = ""
    coupling: object = None
    marginal_error: float = 0.0
    value_sorted: object = math.nan
    stages: list = field(default_factory=list)

    def offer_lower(self, value, by: str) -> None:
        if _xp.as_float(value) > _xp.as_float(self.lower):
            self.lower, self.lower_by = value, by

    def offer_plan(self, upper, coupling, by: str, error: float = 0.0) -> None:
        if _xp.as_float(upper) < _xp.as_float(self.upper):
            self.upper, self.upper_by = upper, by
            self.coupling, self.marginal_error = coupling, error

    def done(self, rtol: float) -> bool:
        low, up = _xp.as_float(self.lower), _xp.as_float(self.upper)
        if not (math.isfinite(low) and math.isfinite(up)):
            return False
        if is_certified(self.problem, min(low, up), up):
            return True
        return up - low <= rtol * abs(up)


def _tlb_estimate(problem: GWProblem) -> float:
    """Seconds of TLB now: the calibrated cost divided by the share of the cores this
    process gets on a busy machine (TLB cannot be cut once started)."""
    n, m = problem.n, problem.m
    rows = n * m * (n + m) * (1 if problem.uniform else 4)
    return (_TLB_S_PER_ENTRY * rows + _LP_S_PER_ENTRY * n * m) / cpu_share()


def _n_starts(problem: GWProblem) -> int:
    """Starts of the proximal stage: a batch costs about n_starts single runs."""
    size = max(problem.n, problem.m)
    if size <= 40:
        return 32
    if size <= 100:
        return 16
    if size <= 300:
        return 4
    return 1


def _import_pot() -> float:
    """Import POT if it is not yet imported; the seconds it took."""
    import sys

    if "ot" in sys.modules:
        return 0.0
    tick = time.perf_counter()
    import ot  # noqa: F401

    return time.perf_counter() - tick


def _sdp(backend: str = "scs"):
    """The SDP solver when it is registered and ``backend`` (``"scs"``; ``"admm"`` needs
    only NumPy) is installed, else None."""
    from gwlite.solvers import SOLVERS

    solver = SOLVERS.get("sdp")
    if solver is None:
        return None
    import importlib

    module = importlib.import_module(solver.__module__)
    available = getattr(module, "available", None)
    return solver if available is None or available(backend) else None


@with_option_checks(
    rtol=nonneg_real,
    lower=optional(lower_check),
    n_starts=optional(positive_int),
    seed=nonneg_int,
    progress=optional(flag),
)
def solve(
    problem: GWProblem,
    *,
    time_limit: float | None = None,
    rtol: float = DEFAULT_RTOL,
    lower: str | None = None,
    n_starts: int | None = None,
    seed: int = 0,
    progress: bool | None = None,
    return_coupling: bool = True,
) -> GWResult:
    r"""The tightest proven interval found within ``time_limit``, escalating methods.

    Parameters
    ----------
    problem : GWProblem
    time_limit : float, optional
        Seconds for the whole call (default ``DEFAULT_TIME_LIMIT`` = 10). Each stage
        gets a share of what is left; the call ends within about 10% of the limit.
    rtol : float
        Stop as soon as ``upper - lower <= rtol * upper`` (default 1e-6).
    lower : {"mean_row", "flb", "slb", "tlb", "rank_one"}, optional
        A lower bound to compute in any case (TLB is otherwise computed only when it
        fits the budget). ``lower`` reports the best of all bounds computed.
    n_starts : int, optional
        Starts of the proximal stage (default: 32 for ``n <= 40``, 16 up to 100, 4 up
        to 300, else 1).
    seed : int
        Seed of the random starts.
    progress : bool, optional
        Show a progress bar over the stages once the call has run for 2 s. Default: on
        a terminal when the budget is 5 s or more; ``True`` forces it, ``False`` hides it.
    return_coupling : bool

    Returns
    -------
    GWResult
        ``value = upper``: the GW cost of the best plan (``coupling``); ``lower``: the
        largest proven lower bound. ``certified`` when they meet up to round-off.
        ``converged``: every applicable stage ran to completion (none was cut by the
        time limit). ``n_iter``: stages run. ``diagnostics``: ``lower_by`` and
        ``upper_by`` (the method behind each bound), ``stages`` (name, seconds, lower,
        upper of each), ``value_sorted`` (the closed form), ``relative_gap``,
        ``stop_reason`` and ``time_limit``.
    """
    began = time.perf_counter()
    # every option was checked once, at the entry point (``solve.option_checks`` and
    # the shared ``time_limit`` check of :func:`gwlite.solvers.check_options`)
    limit = DEFAULT_TIME_LIMIT if time_limit is None else float(time_limit)
    deadline = began + limit
    best = _Best(problem)
    stages = _plan_stages(problem, lower, limit)
    bar = _progress_bar(progress, limit, len(stages))
    stop, cut = "all stages run", False
    for name in stages:
        left = deadline - time.perf_counter()
        if best.done(rtol):
            stop = "certified"
            break
        if left < _MIN_STAGE_S and name != "sorted":
            stop, cut = "time_limit", True
            break
        if name != "sorted":
            # POT's first import (about 1 s; it imports torch when installed) is a
            # one-off cost of the process, not of this problem: off the clock
            deadline += _import_pot()
        tick = time.perf_counter()
        note = _STAGES[name](_Context(problem, best, deadline, rtol, n_starts, seed, lower))
        best.stages.append(
            {
                "stage": name,
                "time_s": time.perf_counter() - tick,
                "lower": _xp.as_float(best.lower),
                "upper": _xp.as_float(best.upper),
                **note,
            }
        )
        cut = cut or bool(note.get("cut"))
        if bar is not None:
            bar.set_postfix_str(
                f"[{_xp.as_float(best.lower):.4g}, {_xp.as_float(best.upper):.4g}]", refresh=False
            )
            bar.update(1)
    else:
        if best.done(rtol):
            stop = "certified"
    if bar is not None:
        bar.close()
    _warn_if_cut(best, stages, stop, cut, limit)
    return _result(problem, best, stop, cut, limit, return_coupling)


def _warn_if_cut(best: _Best, stages: list, stop: str, cut: bool, limit: float) -> None:
    """Say so when the budget ended before a stage ran (the stages and their notes are in
    ``diagnostics["stages"]``). An anytime stage (proximal, rlt) that ran and was stopped
    by the limit is the normal end of a budgeted call: recorded there, not warned about."""
    if not cut or stop == "certified":
        return
    ran = {s["stage"]: s for s in best.stages}
    missed = [name for name in stages if name not in ran or "skipped" in ran[name]]
    if not missed:
        return
    import warnings

    warnings.warn(
        f"method='auto': the time limit ({limit:.3g} s) ended before stage(s) {missed} ran; "
        "the interval is looser than a larger time_limit would give "
        "(diagnostics['stages'] says what each stage did)",
        UserWarning,
        stacklevel=4,
    )


def _plan_stages(problem: GWProblem, lower, limit: float = DEFAULT_TIME_LIMIT) -> list[str]:
    stages = ["sorted", "tlb"]
    if lower not in (None, "mean_row", "tlb"):
        stages.append("lower")
    stages.append("proximal")
    if problem.n == problem.m and problem.uniform and problem.n <= exact.MAX_N:
        stages.append("exact")
    if problem.n * problem.m <= SDP_MAX_ENTRIES:
        stages.append("sdp")
    elif _sdp_fits(problem, limit):  # ADMM on the relaxation when its estimate fits
        stages.append("sdp")
    elif problem.n * problem.m <= rlt.DEFAULT_MAX_SIZE:
        stages.append("rlt")
    return stages


def _sdp_fits(problem: GWProblem, seconds: float) -> bool:
    from gwlite.solvers import sdp

    return _sdp("admm") is not None and sdp.fits_budget(problem.n, problem.m, seconds)


def _progress_bar(progress, limit: float, total: int):
    """A stage bar that appears only once the call has run 2 s (on a terminal unless
    ``progress=True``)."""
    if progress is False or (progress is None and limit < 5):
        return None
    from tqdm import tqdm

    return tqdm(
        total=total,
        desc="gwlite auto",
        unit="stage",
        delay=2.0,
        leave=False,
        disable=None if progress is None else False,
    )


# --------------------------------------------------------------------- stages
@dataclass(frozen=True)
class _Context:
    problem: GWProblem
    best: _Best
    deadline: float
    rtol: float
    n_starts: int | None
    seed: int
    lower: str | None

    @property
    def left(self) -> float:
        return self.deadline - time.perf_counter()

    @property
    def later_stages(self) -> bool:
        """Whether the exact or SDP stage will still want time after this one."""
        problem = self.problem
        exact_runs = problem.n == problem.m and problem.uniform and problem.n <= exact.MAX_N
        return exact_runs or problem.n * problem.m <= SDP_MAX_ENTRIES or self.rlt_fits

    @property
    def rlt_fits(self) -> bool:
        """Whether the RLT stage's estimate fits in the time left."""
        return rlt.fits_budget(self.problem.n, self.problem.m, self.left)


def _stage_sorted(ctx: _Context) -> dict:
    """The mean-row bound and the sorted coupling. Pricing the sorted coupling costs
    ``nnz^2`` pairs (``nnz <= n + m``): when that does not fit in a quarter of the time
    left (n in the thousands on a busy machine), the square loss's product coupling,
    priced in closed form in O(n^2), is the first plan instead."""
    problem, best = ctx.problem, ctx.best
    value = lower_value(problem, "mean_row")
    best.value_sorted = value
    best.offer_lower(value, "mean_row")
    coupling = sorted_sparse_coupling(problem)
    estimate = _PAIR_S * coupling.nnz**2 / cpu_share()
    if problem.loss_fun == "square_loss" and estimate > _TLB_SHARE * ctx.left:
        best.offer_plan(_product_cost(problem), _product_plan(problem), "product", 0.0)
        return {"sorted_coupling": f"not priced (estimated {estimate:.2g} s): product coupling"}
    upper = _xp.scalar(gw_cost(problem.C1, problem.C2, coupling, problem.loss_fun), True)
    error = marginal_error(coupling, problem.p, problem.q)
    best.offer_plan(upper, to_dense(coupling), "sorted", error)
    return {}


def _product_plan(problem: GWProblem):
    return problem.p[:, None] * problem.q[None, :]


def _product_cost(problem: GWProblem):
    r"""The square-loss GW cost of :math:`p q^\top` in closed form, :math:`O(n^2 + m^2)`:
    :math:`p^\top (C^1)^{\circ 2} p + q^\top (C^2)^{\circ 2} q - 2 (p^\top C^1 p)
    (q^\top C^2 q)` (a 0-d tensor with its graph when the inputs need one)."""
    C1, C2, p, q = problem.C1, problem.C2, problem.p, problem.q
    kappa = p @ ((C1 * C1) @ p) + q @ ((C2 * C2) @ q)
    return _xp.scalar(kappa - 2 * (p @ (C1 @ p)) * (q @ (C2 @ q)), True)


def _stage_tlb(ctx: _Context) -> dict:
    estimate, left = _tlb_estimate(ctx.problem), ctx.left
    if ctx.lower != "tlb" and estimate > _TLB_SHARE * left:
        return {
            "skipped": f"estimated {estimate:.2g} s > {_TLB_SHARE:.0%} of the {left:.2g} s left"
        }
    ctx.best.offer_lower(lower_value(ctx.problem, "tlb"), "tlb")
    return {}


def _stage_lower(ctx: _Context) -> dict:
    try:
        ctx.best.offer_lower(lower_value(ctx.problem, ctx.lower), ctx.lower)
    except GWInputError as err:  # e.g. rank_one needs the square loss
        return {"skipped": str(err)}
    return {}


def _stage_proximal(ctx: _Context) -> dict:
    """Rounds of batched proximal starts (new seeds, a few entropic weights) until
    two rounds in a row find no better plan, the interval is certified or the stage's
    time is used; large problems get one round with the whole budget."""
    problem, best = ctx.problem, ctx.best
    if not _operators.few_levels(problem):
        return {"skipped": _operators.MANY_LEVELS_NOTE}
    share = _PROXIMAL_SHARE if ctx.later_stages else 1.0
    stage_deadline = time.perf_counter() + share * ctx.left
    starts = _n_starts(problem) if ctx.n_starts is None else int(ctx.n_starts)
    small = max(problem.n, problem.m) <= _ROUNDS_MAX_NODES
    rounds, stale, cut, iters = 0, 0, False, 0
    while rounds < (_MAX_ROUNDS if small else 1):
        budget = stage_deadline - time.perf_counter()
        if budget < _MIN_STAGE_S:
            cut = rounds == 0
            break
        res = proximal.solve(
            problem,
            n_starts=starts,
            epsilon=_EPSILONS[rounds % len(_EPSILONS)],
            time_limit=budget,
            seed=ctx.seed + rounds,
            polish_top=4 if small else 1,
            lower="mean_row",
        )
        rounds += 1
        iters += res.n_iter
        improved = _xp.as_float(res.upper) < _xp.as_float(best.upper) * (1 - 1e-9)
        best.offer_plan(res.upper, res.coupling, "proximal", res.marginal_error)
        cut = res.diagnostics["stop_reason"] == "time_limit"
        stale = 0 if improved else stale + 1
        if cut or stale >= 2 or best.done(ctx.rtol):
            break
    return {"rounds": rounds, "n_starts": starts, "n_iter": iters, "cut": cut}


def _stage_exact(ctx: _Context) -> dict:
    problem, best, left = ctx.problem, ctx.best, ctx.left
    if problem.n > exact.DEFAULT_MAX_N and left < 1.0:
        return {"skipped": "too little time for the search"}
    budget = _EXACT_SHARE * left if problem.n * problem.m <= SDP_MAX_ENTRIES else left
    res = exact.solve(problem, time_limit=max(budget, _MIN_STAGE_S), lower="tlb")
    best.offer_plan(res.upper, res.coupling, "exact", res.marginal_error)
    kind = res.diagnostics.get("lower_kind", "")
    proven = kind in ("certified", "permutation_bound")
    best.offer_lower(res.lower, "exact" if proven else f"exact ({kind})")
    return {"cut": not res.converged, "nodes": res.n_iter}


def _stage_sdp(ctx: _Context) -> dict:
    big = ctx.problem.n * ctx.problem.m > SDP_MAX_ENTRIES  # planned because ADMM fits
    solver = _sdp("admm" if big else "scs")
    if solver is None:
        return {"skipped": "no SDP solver installed"}
    best = ctx.best
    res = solver(
        ctx.problem,
        lower="tlb",
        G0=best.coupling,
        time_limit=ctx.left,
        return_coupling=True,
        **({"solver": "admm"} if big else {}),
    )
    best.offer_lower(res.lower, "sdp")
    if res.coupling is not None:
        best.offer_plan(res.upper, res.coupling, "sdp", res.marginal_error)
    return {"cut": not res.converged}


def _stage_rlt(ctx: _Context) -> dict:
    if not ctx.rlt_fits:
        n, m = ctx.problem.n, ctx.problem.m
        need = rlt.estimate_seconds(n, m, rlt.AUTO_MIN_ITERATIONS)
        return {"skipped": f"estimated {need:.2g} s > the {ctx.left:.2g} s left"}
    best = ctx.best
    res = rlt.solve(ctx.problem, lower="mean_row", G0=best.coupling, time_limit=ctx.left)
    best.offer_lower(res.lower, "rlt")
    best.offer_plan(res.upper, res.coupling, "rlt", res.marginal_error)
    return {"cut": res.diagnostics["stop_reason"] == "time limit", "n_iter": res.n_iter}


_STAGES = {
    "sorted": _stage_sorted,
    "tlb": _stage_tlb,
    "lower": _stage_lower,
    "proximal": _stage_proximal,
    "exact": _stage_exact,
    "sdp": _stage_sdp,
    "rlt": _stage_rlt,
}


def _result(problem: GWProblem, best: _Best, stop: str, cut: bool, limit: float, return_coupling):
    upper = best.upper
    low = clamp_lower(best.lower, upper)
    up, lo = _xp.as_float(upper), _xp.as_float(low)
    coupling = best.coupling
    diagnostics = {
        "lower_by": best.lower_by,
        "upper_by": best.upper_by,
        "stages": best.stages,
        "value_sorted": _xp.as_float(best.value_sorted),
        "relative_gap": 0.0 if up == 0 else (up - lo) / abs(up),
        "stop_reason": "time_limit" if cut and stop != "certified" else stop,
        "time_limit": limit,
    }
    certified = is_certified(problem, low, upper)
    upper, low = result_scalars(problem, upper, low)  # one kind (tensors under grad)
    return GWResult(
        value=upper,
        lower=low,
        upper=upper,
        coupling=coupling if return_coupling else None,
        method="auto",
        loss_fun=problem.loss_fun,
        converged=not cut or stop == "certified",
        n_iter=len(best.stages),
        marginal_error=best.marginal_error,
        certified=certified,
        time_s=0.0,
        diagnostics=diagnostics,
    )


solve.imports = ("ot", "scipy.optimize")  # TLB, proximal, exact: imported before the clock
