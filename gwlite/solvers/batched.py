r"""Many GW and fused GW problems at once: the batched core behind ``method="proximal"``
on datasets (:func:`gwlite.gromov_wasserstein_batch`, :func:`gwlite.pairwise`).

Problem :math:`b` of a batch minimises, over couplings :math:`\pi \in \Pi(p_b, q_b)`,

.. math::

    F_b(\pi) = (1 - \alpha) \langle M_b, \pi \rangle
    + \alpha \sum_{ijkl} L(C^1_{b,ik}, C^2_{b,jl}) \pi_{ij} \pi_{kl},

POT's ``fused_gromov_wasserstein2`` convention (``M=None, alpha=1``: plain GW). With
:math:`X(\pi) = C^1 \pi C^{2\top}` (square loss; symmetrised for asymmetric matrices),
:math:`F(\pi) = \alpha(\kappa - 2\langle X(\pi), \pi\rangle) + (1 - \alpha)\langle M,
\pi\rangle` on the polytope and :math:`\nabla F = (1 - \alpha) M - 4 \alpha X(\pi)` up
to row and column terms that no step sees (``gwlite.solvers._operators``).

Problems are grouped by a padded shape that depends on each problem alone
(:func:`padded_size`); inside a group they are stacked ``(B, S, N, K)`` with ``S``
starts each, the missing nodes carrying zero weight. Such nodes carry no mass in any
coupling, so padding changes no plan, cost or bound (proof in the theory page,
*Padding with zero-weight nodes*), and a problem's answer never depends on the others
in its batch. The steps, each a small function below:

* **start** (``_starts``): ``G0`` (when given), the product coupling, the sorted
  coupling, then random vertices; ``G0`` and the sorted coupling are always priced and
  kept as candidates, whatever ``n_starts``, so the answer is never worse than them;
* **step** (``_stack.mirror_step``): one KL mirror-descent step for the whole stack, as in
  :mod:`gwlite.solvers.proximal` (Peyre et al. 2016; Xu et al. 2019);
* **round** (``_stack.round_plans``): every iterate rounded onto its polytope (Altschuler
  et al. 2017), and its sharpened vertex;
* **price** (``_stack.price``): all rounded plans priced in one batched product; each
  problem keeps its best plan per start and stops on its own when its best cost
  stalls (finished problems leave the stack);
* **polish** (``gwlite.solvers._polish``): batched conditional gradient (Frank-Wolfe) with exact
  line search from the best plans; one exact OT per plan per step (an assignment for
  uniform weights and equal sizes, POT's network simplex otherwise).

``scheme="cg"`` skips the mirror-descent loop: conditional gradient from every start
(what wins on small problems, see the batch benchmark page); ``scheme="auto"`` picks it
for problems of up to ``CG_UP_TO`` nodes (padded), the mirror descent above.

References
----------
G. Peyre, M. Cuturi, J. Solomon. Gromov-Wasserstein averaging of kernel and distance
matrices. ICML 2016.
H. Xu, D. Luo, H. Zha, L. Carin. Gromov-Wasserstein learning for graph matching and
node embedding. ICML 2019.
T. Vayer, L. Chapel, R. Flamary, R. Tavenard, N. Courty. Optimal transport for
structured data with application on graphs. ICML 2019 (fused GW).
J. Altschuler, J. Weed, P. Rigollet. Near-linear time approximation algorithms for
optimal transport via Sinkhorn iteration. NeurIPS 2017.
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from gwlite import _xp
from gwlite.bounds import _key_tol, certified_lp_lower, mean_row_features, sorted_sparse_coupling
from gwlite.coupling import gw_cost, to_dense
from gwlite.errors import GWInputError
from gwlite.problem import GWProblem
from gwlite.result import GWResult
from gwlite.solvers import _sinkhorn
from gwlite.solvers._common import (
    blas_threads,
    check_G0,
    clamp_lower,
    is_certified,
    lower_check,
    lower_value,
    nonneg_int,
    nonneg_real,
    one_of,
    optional,
    positive_int,
    positive_real,
)
from gwlite.solvers._operators import check_loss_levels
from gwlite.solvers._polish import polish as _polish
from gwlite.solvers._stack import (
    Best,
    Stack,
    as_index,
    exact_cost,
    make_stack,
    mirror_step,
    price,
)
from gwlite.univariate import monotone_coupling

__all__ = ["BATCH_OPTION_CHECKS", "CG_UP_TO", "DEFAULT_EPSILON", "padded_size", "solve_batch"]

#: default entropic weight, relative to the objective's scale (as ``method="proximal"``)
DEFAULT_EPSILON = 5e-4
# price every this many iterations; a problem stops after this many checks without a
# relative gain of tol
_CHECK_EVERY = 5
_PATIENCE = 3
_POLISH_STEPS = 20
#: ``scheme="auto"`` runs the conditional gradient from every start (no mirror descent)
#: on problems whose padded size is at most this: there one exact OT per step is cheap
CG_UP_TO = 128
# thread count of the matrix products when none is given, up to this padded size: a
# stack of small products gains nothing from more threads, and one thread makes the
# answer independent of the machine (a larger problem keeps the process's setting)
_ONE_THREAD_UP_TO = 512


def padded_size(n: int) -> int:
    """The stacked size of a problem of ``n`` nodes: ``n`` rounded up to a multiple of
    ``2 ** max(2, bits(n) - 4)`` (at most about 6% more nodes). It depends on ``n``
    alone, so which problems share a batch never changes a problem's answer."""
    step = 2 ** max(2, int(n).bit_length() - 4)
    return -(-int(n) // step) * step


# --------------------------------------------------------------------- options
#: checks of the batch options (once, at the entry point)
BATCH_OPTION_CHECKS = {
    "alpha": lambda name, v: _unit_interval(name, v),
    "n_starts": positive_int,
    "epsilon": optional(nonneg_real),
    "step": optional(positive_real),
    "max_iter": nonneg_int,
    "tol": nonneg_real,
    "inner_iter": positive_int,
    "polish": optional(nonneg_int),
    "polish_top": positive_int,
    "scheme": one_of(["auto", "proximal", "cg"]),
    "dtype": optional(one_of(["float32", "float64"])),
    "time_limit": optional(positive_real),
    "seed": nonneg_int,
    "threads": optional(positive_int),
    "lower": lower_check,
}


def _unit_interval(name, value):
    value = nonneg_real(name, value)
    if value > 1:
        raise GWInputError(f"{name} must be in [0, 1], got {value!r}")
    return value


@dataclass(frozen=True)
class _Settings:
    alpha: float
    n_starts: int
    eps: float
    tau: float
    max_iter: int
    tol: float
    inner_iter: int
    polish: int
    polish_top: int
    scheme: str
    dtype: str | None
    seed: int


def _settings(options: dict) -> _Settings:
    eps = options["epsilon"]
    step = options["step"]
    if eps == 0 and step is None:
        raise GWInputError("epsilon=0 (the pure proximal point method) needs an explicit step")
    eps = DEFAULT_EPSILON if eps is None else eps
    tau = 1.0 / eps if step is None else step
    if tau * eps > 1 + 1e-9:
        raise GWInputError(f"step * epsilon must be <= 1, got {tau:g} * {eps:g}")
    polish = _POLISH_STEPS if options["polish"] is None else options["polish"]
    return _Settings(
        options["alpha"],
        options["n_starts"],
        eps,
        tau,
        options["max_iter"],
        options["tol"],
        options["inner_iter"],
        polish,
        options["polish_top"],
        options["scheme"],
        options["dtype"],
        options["seed"],
    )


# --------------------------------------------------------------------- start
def _starts(problem: GWProblem, G0, n_starts: int, seed: int, memo: dict | None = None):
    """The loop's ``n_starts`` starting plans and the candidates priced whatever
    ``n_starts`` is (``G0`` and the sorted coupling), float64, in the problem's array
    type. Random vertices depend on ``seed`` and the problem's size only. ``memo`` keeps
    per-matrix values across the problems of a call (a dataset's pairs share spaces)."""
    xp = problem.xp
    p, q = (xp.astype(_xp.detach(w), xp.float64) for w in (problem.p, problem.q))
    sorted_plan = _sorted_plan(problem, {} if memo is None else memo)
    plans, names = ([G0], ["G0"]) if G0 is not None else ([], [])
    plans += [p[:, None] * q[None, :], sorted_plan]
    names += ["product", "sorted"]
    if len(plans) < n_starts:  # a generator costs tens of microseconds: only when used
        rng = np.random.default_rng([seed, problem.n, problem.m])
        while len(plans) < n_starts:
            plans.append(_random_vertex(problem, p, q, rng))
            names.append(f"random{len(names)}")
    candidates = {"sorted": sorted_plan} | ({} if G0 is None else {"G0": G0})
    return plans[:n_starts], names[:n_starts], candidates


def _sorted_plan(problem: GWProblem, memo: dict):
    """The sorted coupling (:func:`gwlite.bounds.sorted_sparse_coupling`), float64 and
    dense. Fast path: with uniform weights, equal sizes and no two features within the
    tie tolerance on either side, it is the permutation that matches the sorted
    mean-row features (no tie group to refine)."""
    xp = problem.xp
    if problem.uniform and problem.n == problem.m:
        (s1, a, top1), (s2, b, top2) = (
            _row_order(C, w, memo) for C, w in ((problem.C1, problem.p), (problem.C2, problem.q))
        )
        tol = _key_tol(xp, problem.C1.dtype, max(top1, top2))  # = _tie_tol(problem)
        if np.all(np.diff(s1[a]) > tol) and np.all(np.diff(s2[b]) > tol):
            plan = np.zeros((problem.n, problem.n))
            plan[a, b] = 1.0 / problem.n
            return xp.asarray(plan, device=_xp.device(problem.C1))
    return xp.astype(to_dense(sorted_sparse_coupling(problem)), xp.float64)


def _row_order(C, w, memo: dict) -> tuple:
    """Mean-row features of ``(C, w)`` on the host, their stable order and ``max|C|``,
    computed once per pair of arrays in ``memo`` (the arrays are kept there, so their
    ids stay unique while it lives)."""
    key = (id(C), id(w))
    if key not in memo:
        xp = _xp.array_namespace(C)
        s = _xp.to_numpy(mean_row_features(C, w))
        top = float(xp.max(xp.abs(_xp.detach(C))))
        memo[key] = (C, w, (s, np.argsort(s, kind="stable"), top))
    return memo[key][2]


def _random_vertex(problem: GWProblem, p, q, rng):
    """A random vertex of the polytope: a random permutation (uniform weights, equal
    sizes), else the monotone coupling of random scores."""
    xp, device = problem.xp, _xp.device(p)
    if problem.uniform and problem.n == problem.m:
        plan = np.zeros((problem.n, problem.n))
        plan[np.arange(problem.n), rng.permutation(problem.n)] = 1.0 / problem.n
        return xp.asarray(plan, device=device)
    u = xp.asarray(rng.random(problem.n), dtype=xp.float64, device=device)
    v = xp.asarray(rng.random(problem.m), dtype=xp.float64, device=device)
    return xp.astype(to_dense(monotone_coupling(u, v, p, q)), xp.float64)


def _padded(xp, plans, N: int, K: int, dtype):
    """Plans ``(n, m)`` as one zero-padded stack ``(S, N, K)``."""
    out = xp.zeros((len(plans), N, K), dtype=dtype, device=_xp.device(plans[0]))
    for s, plan in enumerate(plans):
        out[s, : plan.shape[0], : plan.shape[1]] = xp.astype(plan, dtype)
    return out


# --------------------------------------------------------------------- loop
@dataclass
class _Outcome:
    """How each problem's loop ended (host arrays over the whole batch)."""

    n_iter: np.ndarray
    stop: list
    start_costs: list
    plans: list  # (name, plan, polish steps, float64 cost or NaN) of each problem's candidates
    marginal_error: np.ndarray
    names: list  # each problem's start names
    scheme: list  # each problem's scheme


def _iterate(st: Stack, P, cfg: _Settings, deadline, out: _Outcome) -> tuple:
    """Mirror descent on the stack until every problem stalls, ``max_iter`` or the
    deadline; returns the best plans ``(B, S, N, K)`` with their costs ``(B, S)``, and
    the seconds one pricing of the stack took (what the caller keeps in reserve)."""
    xp = st.xp
    tick = time.perf_counter()
    if not cfg.max_iter:  # "cg": the starts, couplings already, go to the polish as given
        cost = _xp.to_numpy(st.objective(P)).astype(np.float64)
        for k in st.index:
            out.stop[k] = "no iterations"
        return Best(cost, P), time.perf_counter() - tick
    best = Best(np.full(P.shape[:2], math.inf), P)
    price(st, P, best, sharpen=False)
    price_s = time.perf_counter() - tick
    final = Best(best.cost.copy(), xp.asarray(best.plan, copy=True))
    alive = np.arange(P.shape[0])  # positions in this stack of the problems still running
    g = xp.where(st.q > 0, xp.zeros_like(st.q), -math.inf) * xp.ones(
        (1, P.shape[1], 1), dtype=P.dtype, device=_xp.device(P)
    )
    floor = _sinkhorn.floor_for(xp, P.dtype)
    seen = np.full(len(alive), math.inf)
    stalled = np.zeros(len(alive), dtype=np.int64)
    sub, step_s = st, 0.0

    def late(steps: int) -> bool:
        """Whether ``steps`` more steps and what follows the loop would miss the deadline:
        a pricing, the polish's start and first step, the exact pricing of the plans and of
        the candidates (about five pricings), with one more as a margin, because a step
        next to busy processes can take twice its measured time."""
        return (
            deadline is not None and time.perf_counter() + steps * step_s + 6 * price_s > deadline
        )

    for it in range(1, cfg.max_iter + 1):
        if not len(alive) or late(1):
            break
        tick = time.perf_counter()
        P, g = mirror_step(sub, P, g, cfg.tau, cfg.eps, cfg.inner_iter, floor)
        step_s = max(step_s, time.perf_counter() - tick)
        out.n_iter[sub.index] = it
        cut = late(2)
        if it % _CHECK_EVERY and it != cfg.max_iter and not cut:
            continue
        tick = time.perf_counter()
        price(sub, P, best)
        price_s = max(price_s, time.perf_counter() - tick)
        current = best.cost.min(axis=1)
        gained = seen - current > cfg.tol * np.abs(current)
        seen = np.minimum(seen, current)
        stalled = np.where(gained, 0, stalled + 1)
        done = (stalled >= _PATIENCE) | (current <= 0) | cut | (it == cfg.max_iter)
        for k in np.nonzero(done)[0]:
            out.stop[sub.index[k]] = _stop_reason(cut, current[k], stalled[k])
        if done.any():
            error = _xp.to_numpy(xp.max(_sinkhorn.marginal_l1(xp, P, sub.p, sub.q), axis=1))
            out.marginal_error[sub.index[done]] = error[done]
            final.cost[alive[done]] = best.cost[done]
            final.plan[as_index(xp, alive[done], P)] = best.plan[
                as_index(xp, np.nonzero(done)[0], P)
            ]
            keep = np.nonzero(~done)[0]
            alive, seen, stalled = alive[keep], seen[keep], stalled[keep]
            sub, best = sub.take(keep), best.take(xp, keep)
            at = xp.asarray(keep, device=_xp.device(P))
            P, g = xp.take(P, at, axis=0), xp.take(g, at, axis=0)
    if len(alive):  # out of time before a step, or max_iter == 0 (scheme="cg")
        final.cost[alive] = best.cost
        final.plan[as_index(xp, alive, P)] = best.plan
        for k in sub.index:
            out.stop[k] = "time_limit" if cfg.max_iter else "no iterations"
    return final, price_s


def _stop_reason(cut: bool, current: float, stalled: int) -> str:
    if cut:
        return "time_limit"
    if current <= 0:
        return "zero cost"
    return "tol" if stalled >= _PATIENCE else "max_iter"


# --------------------------------------------------------------------- entry point
@dataclass(frozen=True)
class _Item:
    """One problem's inputs beyond its :class:`GWProblem`, checked."""

    M: object  # (n, m) or None
    G0: object  # (n, m) float64 or None


def _check_items(problems, M, G0, alpha: float) -> list:
    """Every problem's ``M`` and ``G0``, checked before any work; errors name the index."""
    B = len(problems)
    for name, value in (("M", M), ("G0", G0)):
        if value is not None and (not isinstance(value, Sequence) or len(value) != B):
            raise GWInputError(
                f"{name} must be None or a sequence of {B} arrays (one per problem), got {type(value).__name__}"
            )
    backends = {pr.backend for pr in problems}
    if len(backends) > 1:
        raise GWInputError(f"the problems mix array libraries {sorted(backends)}; use one")
    items = []
    for k, pr in enumerate(problems):
        try:
            check_loss_levels(pr)  # abs_loss: few distinct entries (level sets)
            linear = None if M is None or M[k] is None else _check_M(pr, M[k])
            start = None if G0 is None or G0[k] is None else check_G0(pr, G0[k])
        except GWInputError as err:
            raise GWInputError(f"problem {k}: {err}") from err
        items.append(_Item(linear, start))
    return items


def _check_M(problem: GWProblem, M):
    xp = problem.xp
    if _xp.backend_name(M) != problem.backend:
        raise GWInputError(f"M is a {_xp.backend_name(M)} array but C1 is {problem.backend}")
    M = xp.asarray(_xp.detach(M), device=_xp.device(problem.C1))
    if tuple(M.shape) != (problem.n, problem.m):
        raise GWInputError(f"M must have shape ({problem.n}, {problem.m}), got {tuple(M.shape)}")
    M = xp.astype(M, xp.float64)
    if not bool(xp.all(xp.isfinite(M))):
        raise GWInputError("M must be finite")
    return M


def _thread_limit(threads, largest: int):
    """BLAS threads for the call: ``threads``, or one for small problems (see
    ``_ONE_THREAD_UP_TO``), else the rule of :func:`~gwlite.solvers._common.blas_threads`."""
    if threads is None and largest <= _ONE_THREAD_UP_TO:
        threads = 1
    return blas_threads(threads)


def solve_batch(
    problems: Sequence[GWProblem],
    *,
    M: Sequence | None = None,
    alpha: float = 1.0,
    G0: Sequence | None = None,
    n_starts: int = 4,
    epsilon: float | None = None,
    step: float | None = None,
    max_iter: int = 300,
    tol: float = 1e-4,
    inner_iter: int = 20,
    polish: int | None = None,
    polish_top: int = 1,
    scheme: str = "auto",
    dtype: str | None = None,
    time_limit: float | None = None,
    seed: int = 0,
    threads: int | None = None,
    lower: str = "mean_row",
) -> list[GWResult]:
    r"""Solve many GW (or fused GW) problems as one stack; one :class:`GWResult` each.

    Parameters
    ----------
    problems : sequence of GWProblem
        Validated problems (:func:`gwlite.problem.make_problem`), one array library;
        sizes and losses may differ. ``abs_loss`` is taken when a problem's two matrices
        together have at most 64 distinct entries (graphs), by level sets as in
        :func:`gwlite.solvers.proximal.solve`.
    M : sequence of arrays ``(n_b, m_b)`` or None, optional
        Linear (feature) costs: the objective becomes POT's fused GW,
        :math:`(1 - \alpha)\langle M, \pi\rangle + \alpha\,\mathrm{GW}`. An entry may be
        None (no linear term for that problem).
    alpha : float
        Weight of the GW term in ``[0, 1]`` (``1``: plain GW, ``M`` ignored).
    G0 : sequence of arrays or None, optional
        Starting couplings (entries may be None): the first start of their problem,
        and a candidate the answer is never worse than.
    n_starts : int
        Starts per problem: ``G0``, the product coupling, the sorted coupling, then
        random vertices (seeded by ``seed`` and the problem's size). ``G0`` and the
        sorted coupling are candidates even when ``n_starts`` leaves them out.
    epsilon, step : float, optional
        Entropic weight and mirror step relative to the objective's scale
        (:math:`\alpha \max|C^1|\max|C^2| + (1 - \alpha)\max|M|`); as in
        :func:`gwlite.solvers.proximal.solve`.
    max_iter : int
        Mirror-descent iterations at most (``0``: none, the starts go to the polish).
    tol : float
        A problem stops when its best cost gains less than ``tol`` (relative) in 3
        consecutive checks (every 5 iterations).
    inner_iter : int
        Scaling iterations per projection.
    polish : int, optional
        Conditional-gradient steps from the best plans (default 20, ``0``: none).
    polish_top : int
        Polish the best plans of this many starts per problem.
    scheme : {"auto", "proximal", "cg"}
        ``"cg"``: no mirror descent; conditional gradient from every start.
        ``"proximal"``: mirror descent, then the polish from the best plans and from the
        first start. ``"auto"`` (default): ``"cg"`` up to ``CG_UP_TO`` = 128 nodes
        (padded), else ``"proximal"`` (decided for each problem by its own size).
    dtype : {None, "float32", "float64"}
        Precision of the loop (default float64, float32 on a GPU); the returned costs
        are always float64 prices of the returned plans.
    time_limit : float, optional
        Seconds for the whole call, set-up and bounds included; problems still running
        stop with ``stop_reason="time_limit"``.
    seed : int
        Seed of the random starts.
    threads : int, optional
        BLAS threads during the call (threadpoolctl); default one when every padded
        problem has at most 512 nodes (the answer then does not depend on the machine),
        else the process's setting.
    lower : {"mean_row", "flb", "slb", "tlb", "rank_one"}
        The proven GW lower bound of each problem; with a linear term the bound is
        :math:`(1 - \alpha)\,\mathrm{OT}_M + \alpha \cdot` it (a sum of minima is at
        most the minimum of the sum), with a certified OT bound.

    Returns
    -------
    list of GWResult
        ``value = upper``: the float64 objective of the returned coupling (fused when
        ``M`` is given); ``lower`` a proven bound; ``method="proximal"``;
        ``diagnostics``: ``starts``, ``start_costs``, ``best_start``, ``stop_reason``,
        ``polish_steps``, ``scheme``, ``alpha``, ``batch_size``, ``lower_kind``.
        ``time_s`` is the whole batch's time divided by its size.

    Examples
    --------
    >>> import numpy as np
    >>> from gwlite.problem import make_problem
    >>> from gwlite.solvers.batched import solve_batch
    >>> C = np.abs(np.subtract.outer(np.arange(5.0), np.arange(5.0)))
    >>> res = solve_batch([make_problem(C, C[::-1, ::-1]), make_problem(C[:3, :3], C)])
    >>> [round(r.upper, 6) for r in res][:1], res[0].certified
    ([0.0], True)
    """
    began = time.perf_counter()
    options = {k: v for k, v in locals().items() if k in BATCH_OPTION_CHECKS}
    options = {k: BATCH_OPTION_CHECKS[k](k, v) for k, v in options.items()}
    cfg = _settings(options)
    problems = list(problems)
    if not problems:
        return []
    items = _check_items(problems, M if cfg.alpha < 1 else None, G0, cfg.alpha)
    deadline = None if time_limit is None else began + time_limit
    largest = max(padded_size(max(pr.n, pr.m)) for pr in problems)
    with _thread_limit(threads, largest):
        lows = _lowers(problems, items, cfg.alpha, lower)
        outcome = _Outcome(
            np.zeros(len(problems), dtype=np.int64),
            ["max_iter"] * len(problems),
            [None] * len(problems),
            [None] * len(problems),
            np.zeros(len(problems)),
            [None] * len(problems),
            [None] * len(problems),
        )
        for index in _groups(problems, cfg.n_starts):
            _solve_group(problems, items, index, cfg, deadline, outcome)
        results = [
            _result(pr, items[k], outcome, k, lows[k], cfg, lower, 0.0, len(problems))
            for k, pr in enumerate(problems)
        ]
    share = (time.perf_counter() - began) / len(problems)
    return [dataclasses.replace(r, time_s=share) for r in results]


# plan entries of one stack at most (B * S * N * K): bounds the memory of a group
_STACK_ENTRIES = 8_000_000


def _groups(problems, n_starts: int) -> list:
    """Indices of the problems of each padded shape and loss, in chunks that fit the
    memory."""
    shapes: dict = {}
    for k, pr in enumerate(problems):
        shapes.setdefault((padded_size(pr.n), padded_size(pr.m), pr.loss_fun), []).append(k)
    out = []
    for (N, K, _), index in shapes.items():
        size = max(1, _STACK_ENTRIES // (n_starts * N * K))
        out += [index[i : i + size] for i in range(0, len(index), size)]
    return out


def _compute_dtype(problem: GWProblem, dtype: str | None):
    xp = problem.xp
    if dtype is None:
        on_gpu = problem.backend == "cupy" or "cuda" in str(_xp.device(problem.C1))
        return xp.float32 if on_gpu else xp.float64
    return {"float32": xp.float32, "float64": xp.float64}[dtype]


def _solve_group(problems, items, index, cfg: _Settings, deadline, out: _Outcome) -> None:
    """Start, iterate, polish one stack; fill ``out`` for its problems."""
    names = out.names
    first = problems[index[0]]
    xp = first.xp
    dtype = _compute_dtype(first, cfg.dtype)
    N, K = padded_size(first.n), padded_size(first.m)
    if cfg.scheme == "auto":
        cfg = dataclasses.replace(cfg, scheme="cg" if max(N, K) <= CG_UP_TO else "proximal")
    for k in index:
        out.scheme[k] = cfg.scheme
    linear = [it.M for it in items] if any(it.M is not None for it in items) else None
    if linear is not None:
        linear = [
            xp.zeros((pr.n, pr.m), dtype=xp.float64) if L is None else L
            for pr, L in zip(problems, linear)
        ]
    st = make_stack(problems, linear, index, N, K, cfg.alpha, dtype)
    starts, candidates, memo = [], [], {}
    for k in index:
        plans, names[k], extra = _starts(problems[k], items[k].G0, cfg.n_starts, cfg.seed, memo)
        starts.append(_padded(xp, plans, N, K, dtype))
        candidates.append(extra)
    P = xp.stack(starts)
    max_iter = 0 if cfg.scheme == "cg" else cfg.max_iter
    best, price_s = _iterate(st, P, dataclasses.replace(cfg, max_iter=max_iter), deadline, out)
    R, cost, labels = _polish_starts(st, P, best, cfg, [names[k] for k in index])
    steps = np.zeros(cost.shape, dtype=np.int64)
    if cfg.polish:
        # the exact pricing of the plans and of the candidates (about two pricings of the
        # stack) and a margin must fit after the polish
        polish_deadline = None if deadline is None else deadline - 3 * price_s
        R, cost, steps = _polish(st, R, cost, cfg.polish, polish_deadline, price_s)
    # float64 square-loss stacks are priced here in one batched product; other plans
    # one by one by gw_cost when the result is built (_objective64)
    exact = dtype == xp.float64 and st.square
    priced = exact_cost(st, R) if exact else np.full(cost.shape, math.nan)
    extra = _price_candidates(st, candidates, N, K) if exact else None
    for b, k in enumerate(index):
        n, m = problems[k].n, problems[k].m
        plans = [
            (labels[b][t], R[b, t, :n, :m], int(steps[b, t]), priced[b, t])
            for t in range(len(labels[b]))
        ]
        plans += [
            (name, plan, 0, math.nan if extra is None else extra[b, c])
            for c, (name, plan) in enumerate(candidates[b].items())
        ]
        out.start_costs[k] = [float(c) for c in best.cost[b]]
        out.plans[k] = plans


def _price_candidates(st: Stack, candidates: list, N: int, K: int) -> np.ndarray:
    """Exact float64 costs ``(B, C)`` of each problem's candidates (padded stack)."""
    xp = st.xp
    width = max(len(c) for c in candidates)
    like = next(iter(candidates[0].values()))
    stack = xp.zeros((len(candidates), width, N, K), dtype=xp.float64, device=_xp.device(like))
    for b, plans in enumerate(candidates):
        for c, plan in enumerate(plans.values()):
            stack[b, c, : plan.shape[0], : plan.shape[1]] = xp.astype(plan, xp.float64)
    return exact_cost(st, stack)


def _polish_starts(st: Stack, P, best: Best, cfg: _Settings, names: list) -> tuple:
    """The plans the polish starts from, ``(B, T, N, K)``, their costs and names: every
    start (``"cg"``), or the best plans of the ``polish_top`` best starts and the first
    start as given (``"proximal"``: the conditional gradient from the product coupling,
    or from ``G0``, is POT's own path, and a different local optimum)."""
    xp = st.xp
    rows = as_index(xp, np.arange(P.shape[0])[:, None], P)
    if cfg.scheme == "cg":
        order = np.argsort(best.cost, axis=1, kind="stable")
        R = best.plan[rows, as_index(xp, order, P)]
        cost = np.take_along_axis(best.cost, order, axis=1)
        return R, cost, [[f"{nm[t]}+cg" for t in o] for nm, o in zip(names, order)]
    top = min(cfg.polish_top, P.shape[1])
    order = np.argsort(best.cost, axis=1, kind="stable")[:, :top]
    R = xp.concat([best.plan[rows, as_index(xp, order, P)], P[:, :1]], axis=1)
    first = _xp.to_numpy(st.objective(P[:, :1])).astype(np.float64)
    cost = np.concatenate([np.take_along_axis(best.cost, order, axis=1), first], axis=1)
    labels = [[nm[t] for t in o] + [f"{nm[0]}+cg"] for nm, o in zip(names, order)]
    return R, cost, labels


def _objective64(problem: GWProblem, item: _Item, plan, alpha: float) -> float:
    """The exact float64 objective of a plan (``upper``)."""
    xp = problem.xp
    C1, C2 = (xp.astype(_xp.detach(C), xp.float64) for C in (problem.C1, problem.C2))
    plan = xp.astype(plan, xp.float64)
    value = float(gw_cost(C1, C2, plan, problem.loss_fun, check=False))
    if alpha == 1:
        return value
    linear = 0.0 if item.M is None else float(xp.sum(item.M * plan))
    return (1 - alpha) * linear + alpha * value


def _lowers(problems, items, alpha: float, lower: str) -> list:
    """Each problem's proven lower bound (:func:`_lower`); the mean-row closed form of
    plain GW problems with uniform weights and equal sizes in one vectorised pass."""
    lows = [None] * len(problems)
    if lower == "mean_row" and alpha == 1:
        fast: dict = {}
        for k, pr in enumerate(problems):
            square = pr.loss_fun == "square_loss"
            if (
                square
                and pr.uniform
                and pr.n == pr.m
                and pr.backend == "numpy"
                and not pr.requires_grad
            ):
                fast.setdefault(pr.n, []).append(k)
        for index in fast.values():
            for k, value in zip(index, _mean_row_uniform([problems[k] for k in index])):
                lows[k] = value
    return [
        _lower(pr, item, alpha, lower) if low is None else low
        for pr, item, low in zip(problems, items, lows)
    ]


def _mean_row_uniform(problems) -> np.ndarray:
    r"""The mean-row closed form of problems of one size with uniform weights:
    :math:`\frac1n \sum_i (s^1_{(i)} - s^2_{(i)})^2` between the sorted row means, as
    :func:`gwlite.bounds.lower_bound` (``lower="mean_row"``) computes it one by one."""
    s1 = np.sort(
        np.stack([np.asarray(pr.C1, dtype=np.float64).mean(axis=1) for pr in problems]), axis=1
    )
    s2 = np.sort(
        np.stack([np.asarray(pr.C2, dtype=np.float64).mean(axis=1) for pr in problems]), axis=1
    )
    return np.maximum(np.mean((s1 - s2) ** 2, axis=1), 0.0)


def _lower(problem: GWProblem, item: _Item, alpha: float, lower: str) -> float:
    """A proven lower bound on the objective: GW's, plus the OT bound of the linear term."""
    value = _xp.as_float(lower_value(problem, lower))
    if alpha == 1:
        return value
    linear = 0.0 if item.M is None else certified_lp_lower(item.M, problem.p, problem.q)[0]
    return (1 - alpha) * linear + alpha * max(value, 0.0)


def _result(problem, item, out: _Outcome, k: int, low: float, cfg, lower, share, size):
    """Problem ``k``'s result: the cheapest of its polished plans and candidates."""
    xp = problem.xp
    priced = [
        (
            _objective64(problem, item, plan, cfg.alpha) if math.isnan(cost) else cost,
            name,
            plan,
            steps,
        )
        for name, plan, steps, cost in out.plans[k]
    ]
    upper, name, plan, steps = min(priced, key=lambda c: c[0])
    upper = float(upper)
    low = _xp.as_float(clamp_lower(low, upper))
    diagnostics = {
        "lower_kind": lower,
        "scheme": out.scheme[k],
        "alpha": cfg.alpha,
        "starts": list(out.names[k]),
        "start_costs": out.start_costs[k],
        "best_start": name,
        "stop_reason": out.stop[k],
        "polish_steps": steps,
        "batch_size": size,
    }
    return GWResult(
        value=upper,
        lower=low,
        upper=upper,
        coupling=xp.astype(plan, problem.C1.dtype),
        method="proximal",
        loss_fun=problem.loss_fun,
        converged=out.stop[k] in ("tol", "zero cost"),
        n_iter=int(out.n_iter[k]),
        marginal_error=float(out.marginal_error[k]),
        certified=is_certified(problem, low, upper),
        time_s=share,
        diagnostics=diagnostics,
    )
