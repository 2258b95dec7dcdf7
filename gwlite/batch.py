"""Many GW problems in one call: :func:`gromov_wasserstein_batch`.

``method="proximal"`` and ``method="auto"`` solve the whole batch as one stack
(:mod:`gwlite.solvers.batched`); every other method runs problem by problem, with its
options checked once. Every input is validated before any work, and an error names
the problem's index.
"""

from __future__ import annotations

import dataclasses
import inspect
import math
import time
from collections.abc import Sequence

import numpy as np

from gwlite import _xp
from gwlite.api import _preload, _solver, method_options
from gwlite.errors import GWInputError
from gwlite.problem import GWProblem, make_problem
from gwlite.result import GWResult
from gwlite.solvers import auto as _auto
from gwlite.solvers._common import (
    check_options,
    clamp_lower,
    is_certified,
    lower_check,
    lower_value,
    nonneg_int,
    nonneg_real,
    optional,
    positive_int,
    positive_real,
)
from gwlite.solvers._operators import MANY_LEVELS_NOTE, few_levels
from gwlite.solvers.batched import solve_batch

__all__ = ["AUTO_BATCH_OPTIONS", "gromov_wasserstein_batch"]

#: options of ``method="auto"`` in a batch, with their checks
AUTO_BATCH_OPTIONS = {
    "time_limit": optional(positive_real),
    "rtol": nonneg_real,
    "lower": optional(lower_check),
    "n_starts": optional(positive_int),
    "seed": nonneg_int,
    "threads": optional(positive_int),
}
# the TLB stage runs when a problem has at most this many plan entries (about a
# millisecond per problem of 50 points on two cores; it grows as n m (n + m))
_TLB_MAX_ENTRIES = 40_000
# starts of each problem's batched solve (conditional gradient on small problems)
_N_STARTS = 1


def _as_list(values, name: str, size: int | None):
    """A sequence of per-problem inputs (a list, or a stack sliced along its first axis)."""
    if values is None:
        return [None] * size if size is not None else None
    if hasattr(values, "shape") and hasattr(values, "ndim"):
        return [values[k] for k in range(values.shape[0])]
    if not isinstance(values, Sequence) or isinstance(values, str):
        raise GWInputError(f"{name} must be a sequence of arrays or a stacked array")
    out = list(values)
    if size is not None and len(out) != size:
        raise GWInputError(f"{name} has {len(out)} entries but C1s has {size}")
    return out


def _problems(C1s, C2s, ps, qs, loss_fun: str) -> list[GWProblem]:
    """Every problem validated (``GWInputError`` naming its index), one array library."""
    C1s = _as_list(C1s, "C1s", None)
    size = len(C1s)
    C2s, ps, qs = (_as_list(v, n, size) for v, n in ((C2s, "C2s"), (ps, "ps"), (qs, "qs")))
    problems, first = [], None
    for k in range(size):
        try:
            problem = make_problem(C1s[k], C2s[k], ps[k], qs[k], loss_fun)
        except GWInputError as err:
            raise GWInputError(f"problem {k}: {err}") from err
        if first is None:
            first = problem.backend
        elif problem.backend != first:
            raise GWInputError(
                f"problem {k}: its arrays are {problem.backend} but problem 0's are {first}; "
                "pass every problem in one array library"
            )
        problems.append(problem)
    return problems


def gromov_wasserstein_batch(
    C1s,
    C2s,
    ps=None,
    qs=None,
    *,
    method: str = "auto",
    loss_fun: str = "square_loss",
    **options,
) -> list[GWResult]:
    r"""Gromov-Wasserstein for many pairs of spaces; one :class:`GWResult` each.

    Parameters
    ----------
    C1s, C2s : sequence of arrays, or stacked arrays ``(B, n, n)`` and ``(B, m, m)``
        The problems' structure matrices (NumPy, CuPy or torch, one library); sizes may
        differ from one problem to the next.
    ps, qs : sequence of arrays (entries may be None), or stacks, optional
        Node weights; uniform when omitted.
    method : str
        ``"auto"`` (default): the best proven interval, from one batched solve: the
        mean-row closed form and Memoli's TLB (problems up to 40,000 plan entries) as
        lower bounds, and :func:`gwlite.solvers.batched.solve_batch` for the plan.
        ``"proximal"``: :func:`~gwlite.solvers.batched.solve_batch` itself (its options).
        Any other method of :func:`gwlite.gromov_wasserstein`: one call per problem.
    loss_fun : {"square_loss", "abs_loss"}
        ``abs_loss`` in the batched methods: by level sets when a problem's matrices
        together take at most 64 distinct values (graphs: shortest paths, adjacency);
        ``"proximal"`` refuses a problem with more (``GWInputError`` naming it),
        ``"auto"`` gives it the sorted coupling and its lower bounds (as the single
        call's ``auto``; ``diagnostics["proximal_skipped"]`` says so).
    **options
        The method's options, checked once before any work. ``"auto"``:
        ``time_limit`` (seconds for the whole batch; default 10 s per problem),
        ``rtol``, ``lower`` (an extra lower bound to compute), ``n_starts``,
        ``seed``, ``threads``. ``"proximal"``: the keyword arguments of
        :func:`~gwlite.solvers.batched.solve_batch` (``M``, ``alpha``, ``G0``...).

    Returns
    -------
    list of GWResult
        ``lower <= GW <= upper`` for each problem, as for
        :func:`gwlite.gromov_wasserstein`.

    Raises
    ------
    GWInputError
        A bad problem (``"problem k: ..."``), mixed array libraries, unknown options or
        bad option values; always before any work.

    Examples
    --------
    >>> import numpy as np, gwlite
    >>> C = np.abs(np.subtract.outer(np.arange(5.0), np.arange(5.0)))
    >>> res = gwlite.gromov_wasserstein_batch([C, C[:4, :4]], [C[::-1, ::-1], C])
    >>> res[0].upper, res[0].certified, res[1].lower <= res[1].upper
    (0.0, True, True)
    """
    options = _checked_options(method, options)
    problems = _problems(C1s, C2s, ps, qs, loss_fun)
    return solve_problems(problems, method, options)


def _checked_options(method: str, options: dict) -> dict:
    """``options`` checked for ``method`` in a batch (names and values), before any work."""
    if method not in ("auto", "proximal"):
        return check_options(method, _solver(method), options, method_options(method))
    accepted = (
        AUTO_BATCH_OPTIONS
        if method == "auto"
        else {k: None for k in inspect.signature(solve_batch).parameters if k != "problems"}
    )
    unknown = sorted(set(options) - set(accepted))
    if unknown:
        raise GWInputError(
            f"unknown option(s) {unknown} for method={method!r} in a batch; it accepts "
            f"{list(accepted)}"
        )
    if method == "auto":
        return {k: AUTO_BATCH_OPTIONS[k](k, v) for k, v in options.items()}
    return options


def solve_problems(problems: Sequence[GWProblem], method: str, options: dict) -> list[GWResult]:
    """:func:`gromov_wasserstein_batch` on validated problems with checked options (what
    :func:`gwlite.pairwise` calls for a tile: its spaces were validated once)."""
    if not problems:
        return []
    _preload("auto" if method == "proximal" else method, options, problems[0].C1)
    if method == "proximal":
        return solve_batch(problems, **options)
    if method == "auto":
        return solve_auto(problems, **options)
    solver = _solver(method)
    results = []
    for k, problem in enumerate(problems):
        tick = time.perf_counter()
        try:
            res = solver(problem, **options)
        except GWInputError as err:  # a problem-dependent option (G0, max_nodes...)
            raise GWInputError(f"problem {k}: {err}") from err
        results.append(dataclasses.replace(res, time_s=time.perf_counter() - tick))
    return results


def solve_auto(
    problems: Sequence[GWProblem],
    *,
    time_limit: float | None = None,
    rtol: float = _auto.DEFAULT_RTOL,
    lower: str | None = None,
    n_starts: int | None = None,
    seed: int = 0,
    threads: int | None = None,
) -> list[GWResult]:
    """``method="auto"`` on a batch: proven lower bounds (TLB on problems up to 40,000
    plan entries, batched: :func:`tlb_lowers`; ``lower`` when asked), then one batched
    solve for the plans with what is left of ``time_limit`` (default 10 s per problem),
    starting from ``n_starts`` plans (default 1, the product coupling: POT's own start;
    the sorted coupling is a candidate in any case), whose own lower bound is the
    mean-row closed form. A stage the budget leaves out is named in
    ``diagnostics["skipped"]`` and warned about."""
    import warnings

    began = time.perf_counter()
    limit = _auto.DEFAULT_TIME_LIMIT * len(problems) if time_limit is None else time_limit
    deadline = began + limit
    # decided by each problem's own size: a pair's answer never depends on its batch
    wanted = [lower == "tlb" or pr.n * pr.m <= _TLB_MAX_ENTRIES for pr in problems]
    tlb = tlb_lowers(problems, wanted, deadline=began + 0.25 * limit)
    skipped = ["tlb"] if np.any(np.isnan(tlb[np.asarray(wanted, dtype=bool)])) else []
    extra = np.full(len(problems), -math.inf)
    if lower not in (None, "mean_row", "tlb"):
        for k, problem in enumerate(problems):
            if time.perf_counter() > began + 0.25 * limit:
                skipped.append(lower)
                break
            try:
                extra[k] = _xp.as_float(lower_value(problem, lower))
            except GWInputError:  # e.g. rank_one needs the square loss
                break
    starts = n_starts or _N_STARTS
    left = deadline - time.perf_counter()
    # abs_loss with many distinct entries has no affordable gradient (as in the single
    # call's auto): those problems keep the sorted coupling, said in their diagnostics
    solvable = [few_levels(pr) for pr in problems]
    plans = [None] * len(problems)
    if left <= 0.01 * limit:
        skipped.append("proximal")
    elif any(solvable):
        index = [k for k, ok in enumerate(solvable) if ok]
        solved = solve_batch(
            [problems[k] for k in index],
            n_starts=starts,
            time_limit=left,
            seed=seed,
            threads=threads,
            lower="mean_row",
        )
        for k, res in zip(index, solved):
            plans[k] = res
    skipped = sorted(set(skipped))
    if skipped:
        warnings.warn(
            f"gromov_wasserstein_batch(method='auto'): the time limit ({limit:.3g} s) ended "
            f"before stage(s) {skipped} ran on every problem; the intervals are looser",
            UserWarning,
            stacklevel=3,
        )
    share = (time.perf_counter() - began) / len(problems)
    results = []
    for k, problem in enumerate(problems):
        plan = plans[k]
        mean_row = _xp.as_float(lower_value(problem, "mean_row")) if plan is None else plan.lower
        candidates = [(mean_row, "mean_row"), (tlb[k], "tlb"), (extra[k], lower)]
        low = max((c for c in candidates if not math.isnan(c[0])), key=lambda c: c[0])
        note = None if solvable[k] else MANY_LEVELS_NOTE
        results.append(_auto_result(problem, low, plan, skipped, limit, share, rtol, note))
    return results


def tlb_lowers(problems: Sequence[GWProblem], wanted=None, deadline: float = math.inf):
    r"""Memoli's TLB of each problem (``NaN`` where not ``wanted`` or past ``deadline``).

    Problems with uniform weights and :math:`n = m` are done as stacks of one size: row
    sorting and the cost matrices :math:`M_{ij} = \frac1n\sum_t (S^1_{it} - S^2_{jt})^2`
    (:func:`gwlite.bounds.row_distribution_costs`: with equal uniform weights the
    quantile coupling of two rows pairs their sorted entries) by differences, in
    chunks; the linear program of each is :func:`gwlite.bounds.certified_lp_lower`. The
    others call :func:`gwlite.bounds.lower_bound` one by one. Values are those of
    ``lower_bound(..., lower="tlb")`` up to round-off, and as proven.
    """
    from gwlite.bounds import certified_lp_lower

    wanted = [True] * len(problems) if wanted is None else wanted
    out = np.full(len(problems), math.nan)
    groups: dict = {}
    for k, problem in enumerate(problems):
        if not wanted[k]:
            continue
        fast = problem.uniform and problem.n == problem.m and problem.loss_fun == "square_loss"
        key = (problem.n, problem.backend == "numpy" and not problem.requires_grad and fast)
        groups.setdefault(key, []).append(k)
    for (n, fast), index in groups.items():
        chunk = max(1, _TLB_CHUNK_ENTRIES // n**3) if fast else 1
        for start in range(0, len(index), chunk):
            if time.perf_counter() > deadline:
                return out
            part = index[start : start + chunk]
            if not fast:
                out[part] = [_xp.as_float(lower_value(problems[k], "tlb")) for k in part]
                continue
            w = np.full(n, 1.0 / n)
            for k, M in zip(part, _row_costs([problems[k] for k in part])):
                out[k] = max(0.0, certified_lp_lower(M, w, w)[0])
    return out


# elements of one temporary (B, n, n, n) array of the batched TLB costs (16 MiB)
_TLB_CHUNK_ENTRIES = 1 << 21


def _row_costs(problems) -> np.ndarray:
    r"""Lower estimates of the TLB cost matrices of problems of one size ``n`` with
    uniform weights, (B, n, n): every entry is at most the exact
    :math:`M_{ij} = \frac1n \sum_t (S^1_{it} - S^2_{jt})^2`, so the linear program's
    bound on them is a bound on TLB's.

    Non-negative matrices (distances): :math:`M = (a_i + b_j - 2 G_{ij}) / n` with
    :math:`a = \sum_t (S^1_{it})^2`, :math:`G = S^1 S^{2\top}` (one batched matrix
    product), less the rounding error bound :math:`\gamma_{n+3}(a_i + b_j + 2
    G_{ij})/n` (Higham, Thm 3.5 for sums of non-negative products, in any order; the
    computed terms, each within a factor :math:`1 + \gamma_n` of the exact ones, covered
    by doubling it). Otherwise by differences, which cancel nothing."""
    S1 = np.sort(np.stack([np.asarray(pr.C1, dtype=np.float64) for pr in problems]), axis=2)
    S2 = np.sort(np.stack([np.asarray(pr.C2, dtype=np.float64) for pr in problems]), axis=2)
    n = S1.shape[-1]
    if S1[:, :, 0].min() < 0 or S2[:, :, 0].min() < 0:
        d = S1[:, :, None, :] - S2[:, None, :, :]
        return np.einsum("bijt,bijt->bij", d, d) / n
    a = np.einsum("bit,bit->bi", S1, S1)[:, :, None]
    b = np.einsum("bjt,bjt->bj", S2, S2)[:, None, :]
    G = S1 @ np.swapaxes(S2, 1, 2)
    unit = np.finfo(np.float64).eps / 2
    gamma = 2 * (n + 3) * unit / (1 - (n + 3) * unit)
    return ((a + b - 2 * G) - gamma * (a + b + 2 * G)) / n


def _auto_result(problem, low, plan, skipped, limit, share, rtol, note=None) -> GWResult:
    from gwlite.bounds import sorted_sparse_coupling
    from gwlite.coupling import gw_cost, to_dense

    value, lower_by = low
    if plan is None:  # no time for the batched solve: the sorted coupling
        coupling = to_dense(sorted_sparse_coupling(problem))
        upper = _xp.as_float(gw_cost(problem.C1, problem.C2, coupling, problem.loss_fun))
        upper_by, n_iter, converged, error = "sorted", 0, False, 0.0
    else:
        coupling, upper, upper_by = plan.coupling, plan.upper, "proximal"
        n_iter, converged, error = plan.n_iter, plan.converged, plan.marginal_error
    lower = _xp.as_float(clamp_lower(value, upper))
    gap = 0.0 if upper == 0 else (upper - lower) / abs(upper)
    certified = is_certified(problem, lower, upper)
    diagnostics = {
        "lower_by": lower_by,
        "upper_by": upper_by,
        "relative_gap": gap,
        "skipped": skipped,
        "time_limit": limit,
        "stop_reason": "certified"
        if certified or gap <= rtol
        else ("time_limit" if skipped else "all stages run"),
    }
    if plan is not None:
        diagnostics["proximal"] = dict(plan.diagnostics)
    if note is not None:  # why this problem had no plan stage
        diagnostics["proximal_skipped"] = note
    return GWResult(
        value=upper,
        lower=lower,
        upper=upper,
        coupling=coupling,
        method="auto",
        loss_fun=problem.loss_fun,
        converged=converged and not skipped,
        n_iter=n_iter,
        marginal_error=error,
        certified=certified,
        time_s=share,
        diagnostics=diagnostics,
    )
