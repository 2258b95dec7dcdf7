r"""``method="proximal"``: gwlite's own GW solver, KL mirror descent on the array API.

With :math:`\mathcal E(\pi) = \sum_{ijkl} L(C^1_{ik}, C^2_{jl}) \pi_{ij} \pi_{kl}` and
the entropic objective :math:`F_\varepsilon = \mathcal E - \varepsilon H`, every outer
iteration is one KL-proximal (mirror-descent) step: the quadratic part is linearised
at the current plan, the entropy and the marginal constraints are kept exactly,

.. math::

    \pi_{t+1} = \operatorname*{argmin}_{\pi \in \Pi(p, q)}
    \langle \nabla \mathcal E(\pi_t), \pi \rangle - \varepsilon H(\pi)
    + \Big(\frac{1}{\tau} - \varepsilon\Big) \mathrm{KL}(\pi \,\|\, \pi_t),

whose solution is the Sinkhorn projection of
:math:`\pi_t^{\,1 - \tau\varepsilon} \odot \exp(-\tau \nabla \mathcal E(\pi_t))`.
With :math:`\tau \varepsilon = 1` (the default) this is the fixed-point iteration of
entropic GW (Peyre, Cuturi & Solomon 2016); with :math:`\varepsilon = 0` it is the
KL proximal point method of Xu et al. (2019). ``step`` (:math:`\tau`) and ``epsilon``
are relative to the scale of the loss (:math:`\max|C^1| \max|C^2|` for the square
loss), so the defaults do not depend on the units of the inputs.

What makes it fast:

* the gradient is :math:`-4 X(\pi)` plus row/column terms that the projection absorbs,
  with :math:`X(\pi) = C^1 \pi C^{2\top}` for the square loss: two matrix products,
  never the :math:`n^2 m^2` tensor (``gwlite.solvers._operators``);
* on large problems whose matrices are well captured by a low rank (distance
  matrices of point clouds are), the first phase uses a randomized truncated SVD of
  the matrices, :math:`O(nmr)` per step instead of :math:`O(nm(n+m))`; a second phase
  with the exact gradient follows, and every plan is priced with the exact matrices;
* the projection is warm-started and runs a few log-stabilised updates per outer
  iteration (``gwlite.solvers._sinkhorn``);
* ``n_starts`` starting plans (``G0``, the product coupling, the sorted coupling,
  random vertices of the polytope) run as one stack ``(S, n, m)``: one batched matrix
  product per step for all starts;
* the loop runs in float32 on a GPU and for large problems; every few iterations each
  plan is rounded onto the polytope (Altschuler et al. 2017) and priced, the best plan
  of each start is kept, and the loop stops when the best cost stalls. The returned
  plan is priced in float64 by :func:`gwlite.coupling.gw_cost`, so ``upper`` is the
  exact cost of a feasible coupling;
* an optional polish by exact conditional-gradient steps (POT's network simplex and
  the closed-form line search of the quadratic objective) from the best plan.

``abs_loss`` is supported when the entries take few distinct values (graphs), by level
sets (``gwlite.solvers._operators``).

References
----------
G. Peyre, M. Cuturi, J. Solomon. Gromov-Wasserstein averaging of kernel and distance
matrices. ICML 2016.
H. Xu, D. Luo, H. Zha, L. Carin. Gromov-Wasserstein learning for graph matching and
node embedding. ICML 2019.
J. Altschuler, J. Weed, P. Rigollet. Near-linear time approximation algorithms for
optimal transport via Sinkhorn iteration. NeurIPS 2017.
N. Halko, P. G. Martinsson, J. A. Tropp. Finding structure with randomness. SIAM
Review 53(2), 2011.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

import numpy as np

from gwlite import _xp
from gwlite.bounds import sorted_sparse_coupling
from gwlite.coupling import SparseCoupling, gw_cost, round_to_polytope, to_dense
from gwlite.errors import GWInputError
from gwlite.problem import GWProblem
from gwlite.result import GWResult
from gwlite.solvers import _operators, _sinkhorn
from gwlite.solvers._common import (
    check_G0,
    clamp_lower,
    flag,
    is_certified,
    lower_value,
    nonneg_int,
    nonneg_real,
    one_of,
    optional,
    positive_int,
    positive_real,
    result_scalars,
    with_option_checks,
)
from gwlite.univariate import monotone_coupling

__all__ = ["DEFAULT_EPSILON", "PolishReport", "polish", "solve"]

#: default entropic weight, relative to the loss scale
DEFAULT_EPSILON = 5e-4
# the float32 loop pays off above this many plan entries on the CPU
_FLOAT32_FROM = 40_000
# the low-rank first phase pays off above this many plan entries
_FACTOR_FROM = 250_000
# price and keep the best plan every this many iterations; stop after this many
# checks without a relative gain of tol
_CHECK_EVERY = 5
_PATIENCE = 3
# share of the remaining time the low-rank phase may use under a time limit
_FACTOR_SHARE = 0.6
# exact conditional-gradient polish by default up to this many plan entries (its exact
# OT runs on the host: from a GPU it only pays on smaller problems); under a time limit
# at most this share of the budget is kept for it
_POLISH_MAX_ENTRIES = {"numpy": 10_000_000, "device": 2_500_000}
_POLISH_SHARE = 0.25
_POLISH_STEPS = 20


# --------------------------------------------------------------------- options
@dataclass(frozen=True)
class _Settings:
    eps: float
    tau: float
    max_iter: int
    tol: float
    inner_iter: int
    rank: int | None
    dtype: object


def _settings(problem, *, n_starts, step, epsilon, max_iter, tol, inner_iter, rank, dtype):
    if isinstance(n_starts, bool) or int(n_starts) != n_starts or n_starts < 1:
        raise GWInputError(f"n_starts must be an integer >= 1, got {n_starts!r}")
    if not (epsilon is None or (math.isfinite(epsilon) and epsilon >= 0)):
        raise GWInputError(f"epsilon must be >= 0 (relative to the loss scale), got {epsilon}")
    if step is not None and not (math.isfinite(step) and step > 0):
        raise GWInputError(f"step must be > 0 (relative to the loss scale), got {step}")
    if epsilon == 0 and step is None:
        raise GWInputError(
            "epsilon=0 (the pure proximal point method) needs an explicit step, e.g. step=100"
        )
    eps = DEFAULT_EPSILON if epsilon is None else float(epsilon)
    tau = 1.0 / eps if step is None else float(step)
    if tau * eps > 1 + 1e-9:
        raise GWInputError(
            f"step * epsilon must be <= 1 (got {tau:g} * {eps:g} = {tau * eps:.3g}): a "
            "larger step overshoots the entropic fixed point; lower step or epsilon"
        )
    for name, value, least in (("max_iter", max_iter, 1), ("inner_iter", inner_iter, 0)):
        if isinstance(value, bool) or int(value) != value or value < least:
            raise GWInputError(f"{name} must be an integer >= {least}, got {value!r}")
    if not (isinstance(tol, (int, float)) and tol >= 0):
        raise GWInputError(f"tol must be a number >= 0, got {tol!r}")
    if rank is not None and (isinstance(rank, bool) or int(rank) != rank or rank < 0):
        raise GWInputError(f"rank must be None or an integer >= 0, got {rank!r}")
    return _Settings(
        eps, tau, int(max_iter), float(tol), int(inner_iter), rank, _compute_dtype(problem, dtype)
    )


def _compute_dtype(problem: GWProblem, dtype):
    xp = problem.xp
    if dtype is None:
        on_gpu = problem.backend == "cupy" or "cuda" in str(_xp.device(problem.C1))
        large = problem.n * problem.m >= _FLOAT32_FROM
        return xp.float32 if (on_gpu or large or problem.C1.dtype == xp.float32) else xp.float64
    names = {"float32": xp.float32, "float64": xp.float64}
    if dtype not in names:
        raise GWInputError(f"dtype must be 'float32', 'float64' or None, got {dtype!r}")
    return names[dtype]


def _polish_steps(polish, entries: int, backend: str) -> int:
    if polish is None:
        limit = _POLISH_MAX_ENTRIES["numpy" if backend == "numpy" else "device"]
        return _POLISH_STEPS if entries <= limit else 0
    if polish is True:
        return _POLISH_STEPS
    if polish is False:
        return 0
    if int(polish) != polish or polish < 0:
        raise GWInputError(f"polish must be a bool, None or a number of steps >= 0, got {polish!r}")
    return int(polish)


def _check_time_limit(time_limit) -> None:
    if time_limit is not None and not (isinstance(time_limit, (int, float)) and time_limit > 0):
        raise GWInputError(f"time_limit must be > 0 seconds, got {time_limit!r}")


# --------------------------------------------------------------------- support
@dataclass(frozen=True)
class _Support:
    """The nodes with positive mass. GW on them is the same problem (no mass, no cost),
    and the projection divides by the weights, so the solver runs there."""

    rows: np.ndarray
    cols: np.ndarray
    shape: tuple

    @property
    def whole(self) -> bool:
        return len(self.rows) == self.shape[0] and len(self.cols) == self.shape[1]

    def restrict(self, xp, plan):
        if self.whole:
            return plan
        device = _xp.device(plan)
        plan = xp.take(plan, xp.asarray(self.rows, device=device), axis=0)
        return xp.take(plan, xp.asarray(self.cols, device=device), axis=1)

    def embed(self, xp, plan):
        if self.whole:
            return plan
        grid_r = np.repeat(self.rows, len(self.cols))
        grid_c = np.tile(self.cols, len(self.rows))
        return to_dense(SparseCoupling(grid_r, grid_c, xp.reshape(plan, (-1,)), self.shape))


def _on_support(problem: GWProblem, dtype=None) -> tuple[GWProblem, _Support]:
    """The detached problem on the nodes with mass (cast to ``dtype``), and its support."""
    xp = problem.xp
    C1, C2, p, q = (_xp.detach(x) for x in (problem.C1, problem.C2, problem.p, problem.q))
    rows = np.nonzero(_xp.to_numpy(p) > 0)[0]
    cols = np.nonzero(_xp.to_numpy(q) > 0)[0]
    support = _Support(rows, cols, (problem.n, problem.m))
    if not support.whole:
        r, c = (xp.asarray(i, device=_xp.device(C1)) for i in (rows, cols))
        C1 = xp.take(xp.take(C1, r, axis=0), r, axis=1)
        C2 = xp.take(xp.take(C2, c, axis=0), c, axis=1)
        p, q = xp.take(p, r, axis=0), xp.take(q, c, axis=0)
    if dtype is not None:
        widened = xp.finfo(dtype).eps < xp.finfo(p.dtype).eps
        C1, C2, p, q = (xp.astype(x, dtype, copy=False) for x in (C1, C2, p, q))
        if widened:  # float32 weights: one mass to float64 round-off, as gw_cost requires
            p, q = p / xp.sum(p), q / xp.sum(q)
    return GWProblem(C1, C2, p, q, problem.loss_fun, problem.uniform), support


# --------------------------------------------------------------------- starts
def _starts(sub64: GWProblem, n_starts: int, G0, seed: int):
    """``n_starts`` float64 plans of the support problem and their names, in a fixed
    order: ``G0`` (when given), the product coupling, the sorted coupling, then random
    vertices of the polytope (monotone couplings of random scores)."""
    xp = sub64.xp
    p, q = sub64.p, sub64.q
    plans, names = [], []
    if G0 is not None:
        plans.append(G0)
        names.append("G0")
    plans.append(p[:, None] * q[None, :])
    names.append("product")
    if len(plans) < n_starts:
        plans.append(to_dense(sorted_sparse_coupling(sub64)))
        names.append("sorted")
    rng = np.random.default_rng(seed)
    device = _xp.device(p)
    while len(plans) < n_starts:
        u = xp.asarray(rng.random(sub64.n), dtype=xp.float64, device=device)
        v = xp.asarray(rng.random(sub64.m), dtype=xp.float64, device=device)
        plans.append(to_dense(monotone_coupling(u, v, p, q)))
        names.append(f"random{len(names)}")
    return plans[:n_starts], names[:n_starts]


# --------------------------------------------------------------------- time model
_RATES: dict = {}


def _gemm_rate(xp, dtype, device) -> float:
    """Measured matrix-product speed (flop/s) of this backend, device and dtype (cached)."""
    key = (xp.__name__, str(device), str(dtype))
    if key not in _RATES:
        k = 512 if "cuda" not in str(device) and xp.__name__.split(".")[-1] != "cupy" else 2048
        A = xp.ones((k, k), dtype=dtype, device=device)
        float((A @ A)[0, 0])  # warm-up (library initialisation on a GPU)
        tick = time.perf_counter()
        float((A @ A)[0, 0])
        # a small product runs from cache: large ones are slower, keep a margin
        _RATES[key] = 2.0 * k**3 / max(time.perf_counter() - tick, 1e-9) / 1.4
    return _RATES[key]


@dataclass(frozen=True)
class _TimeModel:
    """Predicted seconds of one exact gradient for the whole stack (compute dtype) and
    of pricing one dense plan in float64: what a time limit must leave room for."""

    apply_s: float
    price64_s: float

    def final_s(self, dense: bool = True) -> float:
        """Pricing the 2S rounded plans (one stacked product of twice the size), then the
        chosen one in float64, with a margin for the rounding passes; with ``dense=False``
        only the permutations are priced (through their support, negligible)."""
        return 1.25 * (2 * self.apply_s + self.price64_s) if dense else 0.0


def _time_model(sub: GWProblem, exact, n_starts: int, dtype) -> _TimeModel:
    xp = sub.xp
    device = _xp.device(sub.C1)
    flops = 2.0 * sub.n * sub.m * (sub.n + sub.m) * len(exact.A) * (1 if exact.symmetric else 2)
    return _TimeModel(
        flops * n_starts / _gemm_rate(xp, dtype, device),
        flops / _gemm_rate(xp, xp.float64, device),
    )


# --------------------------------------------------------------------- iterations
@dataclass
class _Loop:
    """State and outcome of the mirror-descent loop over a stack of starts."""

    best_cost: list
    best_plan: list
    n_iter: int = 0
    factored_iter: int = 0
    stop: str = "max_iter"
    history: list = field(default_factory=list)
    raw_error: list = field(default_factory=list)
    time_s: float = 0.0
    exact_step_s: float = 0.0
    # (approximate cost, start, plan): dense plans of the last iterate that there was no
    # time to price in the loop; the caller prices them in float64 if it can
    pending: list = field(default_factory=list)


def _round_all(xp, P, p, q, permutations: bool) -> list:
    """Two feasible plans per iterate: the iterate rounded onto the polytope, and its
    sharpened form, the vertex the iterate approaches once it has settled on one: with
    uniform weights and ``n == m`` the permutation that sends each row to its largest
    entry (collisions resolved by mass, leftovers matched by an assignment on their
    block), otherwise each row's mass on its largest entry, rounded."""
    m = P.shape[-1]
    columns = xp.arange(m, device=_xp.device(P))
    out = []
    for k in range(P.shape[0]):
        plan = P[k, ...]
        out.append(round_to_polytope(plan, p, q))
        best = xp.argmax(plan, axis=-1)
        if permutations:
            out.append(_permutation_plan(xp, plan, best, p))
            continue
        hard = xp.where(best[:, None] == columns[None, :], p[:, None], xp.zeros_like(plan))
        out.append(round_to_polytope(hard, p, q))
    return out


def _permutation_plan(xp, plan, best, p):
    """The permutation nearest to a plan's row maxima, as a dense plan (values ``p``)."""
    from scipy.optimize import linear_sum_assignment

    n = plan.shape[0]
    j = _xp.to_numpy(best).astype(np.int64)
    mass = _xp.to_numpy(xp.take_along_axis(plan, best[:, None], axis=1))[:, 0]
    order = np.argsort(-mass, kind="stable")
    _, first = np.unique(j[order], return_index=True)
    winners = order[first]  # the heaviest row of each column keeps it
    perm = np.full(n, -1, dtype=np.int64)
    perm[winners] = j[winners]
    rows = np.nonzero(perm < 0)[0]
    if len(rows):
        cols = np.setdiff1d(np.arange(n), perm[winners])
        if len(rows) <= 300:  # an assignment on the leftover block while it is cheap
            index = (
                xp.asarray(rows, device=_xp.device(plan)),
                xp.asarray(cols, device=_xp.device(plan)),
            )
            block = _xp.to_numpy(xp.take(xp.take(plan, index[0], axis=0), index[1], axis=1))
            _, assigned = linear_sum_assignment(-block.astype(np.float64))
            cols = cols[assigned]
        perm[rows] = cols
    values = xp.take(p, xp.asarray(np.arange(n), device=_xp.device(plan)), axis=0)
    return to_dense(SparseCoupling(np.arange(n), perm, values, (n, n)))


def _keep_best(loop, rounded, costs, only_vertices: bool = False) -> None:
    """Update each start's best plan from the pairs produced by :func:`_round_all`."""
    for k in range(len(loop.best_cost)):
        for j in (2 * k + 1,) if only_vertices else (2 * k, 2 * k + 1):
            if costs[j] < loop.best_cost[k]:
                loop.best_cost[k], loop.best_plan[k] = costs[j], rounded[j]


def _iterate(sub, exact, factored, starts, cfg: _Settings, deadline, initial=None, model=None):
    """Run the loop; return the best rounded plan of every start and how it ended.

    Phase 1 (when ``factored`` is given) steers with the low-rank gradient until the
    monitored cost stalls (or, under a time limit, its share of the time is used);
    phase 2 uses the exact gradient, keeps the best rounded plan of each start and
    stops when the best cost gains less than ``tol`` (relative) over ``_PATIENCE``
    checks, or when one more iteration and the final pricing would miss ``deadline``.
    """
    xp = sub.xp
    began = time.perf_counter()
    dtype = cfg.dtype
    beta = 1.0 - cfg.tau * cfg.eps
    beta = 0.0 if beta < 1e-9 else beta
    P = xp.stack([xp.astype(s, dtype, copy=False) for s in starts])
    p, q = sub.p, sub.q
    if beta > 0:
        # the proximal term keeps the support of the previous plan: smooth vertex starts
        P = (P + p[:, None] * q[None, :]) / 2
    S = P.shape[0]
    log_p, log_q = xp.log(p), xp.log(q)
    g = xp.zeros((S, sub.m), dtype=dtype, device=_xp.device(P))
    c = 4.0 * cfg.tau / exact.scale
    floor = _sinkhorn.floor_for(xp, dtype)
    small = math.exp(floor)
    loop = _Loop([math.inf] * S, [None] * S)
    on_device = _xp.backend_name(P) != "numpy"
    permutations = sub.uniform and sub.n == sub.m
    for k, (cost, plan) in enumerate(initial or []):
        if plan is not None:  # a start that is itself a feasible plan worth keeping
            loop.best_cost[k], loop.best_plan[k] = cost, xp.astype(plan, dtype, copy=False)
    phase = "factored" if factored is not None else "exact"
    switch_at = None
    if deadline is not None and phase == "factored":
        switch_at = began + _FACTOR_SHARE * (deadline - began)
    stalled, best_seen, priced_at = 0, math.inf, 0
    # the last fifth of the iterations (at least one check's worth) is always exact
    exact_from = cfg.max_iter - max(_CHECK_EVERY, cfg.max_iter // 5)

    def exact_fits(now: float) -> bool:
        """Whether an exact step and the final pricing still fit before the deadline."""
        return (
            model is None
            or deadline is None
            or now + 1.2 * model.apply_s + model.final_s() <= deadline
        )

    if phase == "exact" and not exact_fits(time.perf_counter()):
        loop.stop = "time_limit"  # not even one exact step fits: the starts are the answer
        loop.time_s = time.perf_counter() - began
        loop.raw_error = [math.nan] * S
        return loop
    for it in range(1, cfg.max_iter + 1):
        tick = time.perf_counter()
        op = factored if phase == "factored" else exact
        Z = c * op.apply(xp, P)
        if beta > 0:
            Z = Z + beta * xp.log(xp.maximum(P, small))
        P, g = _sinkhorn.project(xp, Z, log_p, log_q, p, q, g, cfg.inner_iter, floor)
        if on_device:
            float(g[0, 0])  # wait for the device: the time limit needs real step times
        loop.n_iter = it
        loop.factored_iter += phase == "factored"
        now = time.perf_counter()
        if phase == "exact":
            loop.exact_step_s = now - tick
        step_s = now - tick
        if phase == "exact":
            # the final pricing (2S plans, then one in float64) costs about 3 + 2/S steps
            reserve = max(step_s * (4 + 2 / S), 0.0 if model is None else model.final_s())
        else:
            # permutations are priced on the way; a dense plan needs one float64 pricing
            reserve = step_s
            if model is not None:
                reserve += model.final_s() if not permutations else 1.1 * model.price64_s
        out_of_time = deadline is not None and now + reserve > deadline
        late = (switch_at is not None and now >= switch_at) or it >= exact_from
        if it % _CHECK_EVERY and it != cfg.max_iter and not out_of_time:
            if phase == "factored" and late and exact_fits(now):
                phase, stalled, best_seen = "exact", 0, math.inf
            continue
        rounded = _round_all(xp, P, p, q, permutations)
        if phase == "exact":
            _keep_best(loop, rounded, _costs(xp, sub, exact, rounded))
            priced_at = it
            current = min(loop.best_cost)
        else:
            # sparse (vertex) plans are priced exactly and kept; the dense ones are only
            # monitored through the low-rank operator, to detect the stall
            vertex = _costs(xp, sub, exact, rounded, dense=False)
            _keep_best(loop, rounded, vertex, only_vertices=True)
            current = float(xp.min(exact.kappa - 2 * _cross(xp, factored, rounded)))
            current = min(current, min(loop.best_cost))
        loop.history.append((it, phase, current, time.perf_counter() - began))
        if phase == "exact" and current <= 0:
            loop.stop = "zero cost"  # GW >= 0: nothing left to gain
            break
        if out_of_time:
            loop.stop = "time_limit"
            break
        gained = best_seen - current > cfg.tol * abs(current)
        best_seen = min(best_seen, current)
        stalled = 0 if gained else stalled + 1
        late = late or (switch_at is not None and time.perf_counter() >= switch_at)
        if phase == "factored" and (stalled >= _PATIENCE or late):
            if exact_fits(time.perf_counter()):
                phase, stalled, best_seen = "exact", 0, math.inf
            elif stalled >= _PATIENCE:
                loop.stop = "time_limit"  # the exact phase does not fit in the time left
                break
        elif phase == "exact" and stalled >= _PATIENCE:
            loop.stop = "tol"
            break
    if priced_at != loop.n_iter:
        # the last iterate may beat the best checked one (or be the only one priced);
        # dense plans are priced in the loop only when that still fits the time limit
        dense = model is None or deadline is None
        dense = dense or time.perf_counter() + model.final_s() <= deadline
        rounded = _round_all(xp, P, p, q, permutations)
        _keep_best(loop, rounded, _costs(xp, sub, exact, rounded, dense=dense))
        if not dense:
            approx = exact if factored is None else factored
            monitored = exact.kappa - 2 * _cross(xp, approx, rounded[0::2])
            for k, value in enumerate(_xp.to_numpy(monitored)):
                loop.pending.append((float(value), k, rounded[2 * k]))
    loop.raw_error = [float(x) for x in _xp.to_numpy(_sinkhorn.marginal_l1(xp, P, p, q))]
    loop.time_s = time.perf_counter() - began
    return loop


def _costs(xp, sub, exact, plans, dense: bool = True) -> list:
    """GW costs of feasible plans: through their support when they are sparse (a
    sharpened plan is often a vertex: O(nnz^2) instead of O(nm(n + m))), else by the
    operator, all dense plans in one batched product."""
    costs = [math.inf] * len(plans)
    todo = []
    for k, plan in enumerate(plans):
        sparse = _sparse(xp, plan)
        if sparse is None:
            todo.append(k)
        else:
            costs[k] = float(gw_cost(sub.C1, sub.C2, sparse, sub.loss_fun))
    if todo and dense:
        values = exact.cost(xp, xp.stack([plans[k] for k in todo]))
        for k, value in zip(todo, _xp.to_numpy(values)):
            costs[k] = float(value)
    return costs


def _sparse(xp, plan):
    """``plan`` as a :class:`SparseCoupling` when it has few non-zeros, else None."""
    n, m = plan.shape
    nnz = int(xp.sum(xp.astype(plan > 0, xp.int64)))
    if nnz > 2 * (n + m):
        return None
    rows, cols = (_xp.to_numpy(i) for i in xp.nonzero(plan > 0))
    index = (xp.asarray(rows, device=_xp.device(plan)), xp.asarray(cols, device=_xp.device(plan)))
    return SparseCoupling(rows, cols, plan[index], (n, m))


def _cross(xp, op, rounded):
    stack = xp.stack(rounded)
    return xp.sum(xp.sum(op.apply(xp, stack) * stack, axis=-1), axis=-1)


# --------------------------------------------------------------------- polish
@dataclass
class PolishReport:
    """What :func:`polish` did: steps taken, cost before and after, why it stopped."""

    steps: int = 0
    cost_before: float = float("nan")
    cost_after: float = float("nan")
    stop: str = "not run"
    time_s: float = 0.0

    def as_dict(self) -> dict:
        gain = self.cost_before - self.cost_after if self.steps else 0.0
        gain = gain if math.isfinite(gain) else 0.0
        return {
            "polish_steps": self.steps,
            "polish_gain": gain,
            "polish_stop": self.stop,
            "polish_time_s": self.time_s,
        }


def _polish64(sub64: GWProblem, op, plan, cost: float, max_steps: int, deadline):
    r"""Conditional-gradient steps with exact line search, from a feasible float64 plan.

    The direction is the network-simplex vertex :math:`V = \operatorname{argmin}_{\Pi}
    \langle \nabla \mathcal E(\pi), V \rangle`; along :math:`D = V - \pi` the
    objective is the quadratic :math:`\mathcal E(\pi) + b\alpha + a\alpha^2` with
    :math:`b = -4\langle X(\pi), D\rangle` and :math:`a = -2\langle X(D), D\rangle`.
    """
    import ot  # imported on use: POT imports torch when present, gwlite must not

    xp = sub64.xp
    began = time.perf_counter()
    report = PolishReport(cost_before=cost, cost_after=cost, stop="max_steps")
    p = _xp.to_numpy(sub64.p).astype(np.float64)
    q = _xp.to_numpy(sub64.q).astype(np.float64)
    q = q * (p.sum() / q.sum())
    X = op.apply(xp, plan)
    # a step must gain more than round-off in the objective to count
    tiny = 1e-13 * max(op.scale, abs(cost))
    device = _xp.device(plan)
    step_time = 0.0
    for _ in range(max_steps):
        now = time.perf_counter()
        if deadline is not None and now + 1.2 * step_time > deadline:
            report.stop = "time_limit"
            break
        M = -4.0 * _xp.to_numpy(X)
        # a non-negative cost: POT's network simplex can call negative ones infeasible
        V = ot.emd(p, q, M - M.min(), numItermax=10_000_000, check_marginals=False)
        if not abs(V.sum() - p.sum()) <= 1e-9:
            report.stop = "exact OT failed"
            break
        rows, cols = np.nonzero(V)
        values = xp.asarray(V[rows, cols], dtype=xp.float64, device=device)
        D = to_dense(SparseCoupling(rows, cols, values, tuple(plan.shape))) - plan
        b = -4.0 * float(xp.sum(X * D))
        if not b < -tiny:
            report.stop = "stationary"
            break
        rows_x, cols_x = (xp.asarray(i, device=device) for i in (rows, cols))
        XD = op.apply_sparse(xp, rows_x, cols_x, values) - X
        a = -2.0 * float(xp.sum(XD * D))
        alpha = min(1.0, -b / (2 * a)) if a > 0 else 1.0
        plan = plan + alpha * D
        X = X + alpha * XD
        report.steps += 1
        step_time = time.perf_counter() - now
    report.cost_after = float(gw_cost(sub64.C1, sub64.C2, plan, sub64.loss_fun))
    report.time_s = time.perf_counter() - began
    return plan, report


def polish(problem: GWProblem, plan, *, max_steps: int = _POLISH_STEPS, time_limit=None):
    """Improve a feasible plan by exact conditional-gradient steps (POT's ``emd``).

    For solvers that hold a plan (a rounded relaxation, another run): ``plan`` is
    rounded onto the polytope of ``problem.p, problem.q`` first; the result is a
    coupling of them, never costlier than the rounded ``plan``.

    Parameters
    ----------
    problem : GWProblem
    plan : array ``(n, m)``
    max_steps : int
    time_limit : float, optional
        Seconds; no step starts that would not finish in time.

    Returns
    -------
    (plan, cost, PolishReport)
        The float64 plan in the problem's array type, its exact GW cost (a float) and
        the report.
    """
    xp = problem.xp
    _check_time_limit(time_limit)
    _operators.check_loss_levels(problem)
    sub64, support = _on_support(problem, xp.float64)
    start = round_to_polytope(support.restrict(xp, xp.astype(plan, xp.float64)), sub64.p, sub64.q)
    cost = float(gw_cost(sub64.C1, sub64.C2, start, sub64.loss_fun))
    deadline = None if time_limit is None else time.perf_counter() + time_limit
    better, report = _polish64(sub64, _operators.exact(sub64), start, cost, max_steps, deadline)
    if not report.cost_after < cost:  # no gain beyond round-off: keep the plan as given
        better, report.cost_after = start, cost
    return support.embed(xp, better), report.cost_after, report


def _polish_check(name, value):
    if value is None or isinstance(value, bool):
        return value
    return nonneg_int(name, value)


# --------------------------------------------------------------------- solver
@with_option_checks(
    # epsilon = 0 is the pure proximal point method (with ``step``)
    epsilon=optional(nonneg_real),
    step=optional(positive_real),
    n_starts=positive_int,
    inner_iter=positive_int,
    rank=optional(nonneg_int),
    polish=_polish_check,
    polish_top=positive_int,
    dtype=optional(one_of(["float32", "float64"])),
    seed=nonneg_int,
    return_coupling=flag,
)
def solve(
    problem: GWProblem,
    *,
    G0=None,
    n_starts: int = 1,
    epsilon: float | None = None,
    step: float | None = None,
    max_iter: int = 1000,
    tol: float = 1e-4,
    inner_iter: int = 20,
    rank: int | None = None,
    polish: bool | int | None = None,
    polish_top: int = 1,
    dtype: str | None = None,
    time_limit: float | None = None,
    seed: int = 0,
    lower: str = "mean_row",
    return_coupling: bool = True,
) -> GWResult:
    r"""KL mirror descent from one or several starts; the best plan rounded, priced,
    polished.

    Parameters
    ----------
    problem : GWProblem
        ``square_loss`` (any matrices) or ``abs_loss`` when the matrices take at most
        64 distinct values; any weights, ``n != m`` allowed.
    G0 : array ``(n, m)``, optional
        A coupling of ``p`` and ``q`` to start from (the first start when given).
    n_starts : int
        Starts run together as one batch: ``G0``, the product coupling
        :math:`p q^\top`, the sorted coupling, then random vertices of the polytope
        (seeded by ``seed``). The best plan is kept.
    epsilon : float, optional
        Entropic weight :math:`\varepsilon` relative to the loss scale (default 5e-4).
        Smaller is sharper and slower to settle.
    step : float, optional
        Mirror step :math:`\tau`, relative to the loss scale; default ``1 / epsilon``
        (the entropic fixed point). Requires ``step * epsilon <= 1``; ``epsilon=0``
        (the pure proximal point method) requires ``step``.
    max_iter : int
        Largest number of outer iterations (one gradient and one projection each).
    tol : float
        Every 5 iterations the plans are rounded and priced; the loop stops when the
        best cost gained less than ``tol`` (relative) in 3 consecutive checks.
    inner_iter : int
        Scaling iterations per projection (after its two log-domain updates).
    rank : int, optional
        Largest rank of the low-rank first phase; ``None`` (default): up to 128 on
        problems with 250,000 plan entries or more, used only when it captures both
        matrices to 3% (Frobenius); ``0``: exact gradients throughout.
    polish : bool, int or None
        Conditional-gradient steps (POT's exact OT and a closed-form line search) from
        the best plan: ``None`` (default) for up to 20 when the plan has at most
        1e7 entries (NumPy) or 2.5e6 (GPU and torch), ``True`` for 20, ``False`` for
        none, or a number of steps. Under a time limit it gets at most a quarter of it.
    polish_top : int
        Polish the best plans of this many starts (the best polished plan is kept).
    dtype : {None, "float32", "float64"}
        Precision of the loop; ``None``: float32 on a GPU, for float32 inputs and for
        plans of 40,000 entries or more, else float64. The returned plan is always
        priced in float64.
    time_limit : float, optional
        Seconds for the whole call; the loop stops early (``converged=False``) so that
        pricing and polishing fit.
    seed : int
        Seed of the random starts and of the randomized SVD.
    lower : {"mean_row", "flb", "slb", "tlb", "rank_one"}
        The proven lower bound reported as ``lower``.
    return_coupling : bool

    Returns
    -------
    GWResult
        ``value = upper``: the exact float64 GW cost of the returned feasible plan.
        ``converged``: the loop met its ``tol`` rule (not ``max_iter`` nor the time
        limit); ``n_iter``: outer iterations run. ``diagnostics``: ``starts``,
        ``start_costs`` (best cost reached from each), ``best_start``, ``epsilon``,
        ``step``, ``dtype``, ``rank`` and ``rank_error`` of the low-rank phase and its
        ``factored_iter``, ``stop_reason``, ``history`` (iteration, phase, best cost,
        seconds), ``iterate_time_s`` and the ``polish_*`` entries.

    Examples
    --------
    >>> import numpy as np, gwlite
    >>> C = np.abs(np.subtract.outer(np.arange(6.0), np.arange(6.0)))  # a path graph
    >>> res = gwlite.gromov_wasserstein(C, C[::-1, ::-1], method="proximal")
    >>> res.upper, res.certified  # it finds the reflection
    (0.0, True)
    """
    began = time.perf_counter()
    cfg = _settings(
        problem,
        n_starts=n_starts,
        step=step,
        epsilon=epsilon,
        max_iter=max_iter,
        tol=tol,
        inner_iter=inner_iter,
        rank=rank,
        dtype=dtype,
    )
    _check_time_limit(time_limit)
    steps = _polish_steps(polish, problem.n * problem.m, problem.backend)
    if isinstance(polish_top, bool) or int(polish_top) != polish_top or polish_top < 1:
        raise GWInputError(f"polish_top must be an integer >= 1, got {polish_top!r}")
    _operators.check_loss_levels(problem)
    xp = problem.xp
    deadline = None if time_limit is None else began + time_limit
    sub64, support = _on_support(problem, xp.float64)
    G0 = None if G0 is None else support.restrict(xp, check_G0(problem, G0))
    starts, names = _starts(sub64, int(n_starts), G0, seed)
    sub = _on_support(problem, cfg.dtype)[0]
    symmetric = sub64.is_symmetric()
    exact = _operators.exact(sub, symmetric)
    factored = _low_rank(sub, cfg, seed, symmetric)
    # the user's plan and the sorted coupling compete too: never return worse
    exact64 = _operators.exact(sub64, symmetric)
    initial = []
    for plan, name in zip(starts, names):
        if name == "product":  # priced in closed form, O(n^2): always a candidate
            initial.append((exact64.product_cost(xp, sub64.p, sub64.q), plan))
        elif name in ("G0", "sorted"):
            feasible, cost = _price64(xp, sub64, plan)
            initial.append((cost, feasible))
        else:
            initial.append((math.inf, None))
    model = None if deadline is None else _time_model(sub, exact, len(starts), cfg.dtype)
    # one exact OT solve costs about 5 exact steps on the CPU (more next to a GPU)
    slow = 1 if problem.backend == "numpy" else 10
    loop_deadline = deadline
    if deadline is not None and steps:
        estimate = 6 * slow * model.apply_s / len(starts)
        loop_deadline = deadline - min(_POLISH_SHARE * (deadline - time.perf_counter()), estimate)
    loop = _iterate(sub, exact, factored, starts, cfg, loop_deadline, initial, model)
    step_s = loop.exact_step_s or (0.0 if model is None else model.apply_s / len(starts))
    polish_est = 6 * slow * step_s
    best, plan, cost, report = _finish(
        xp,
        sub64,
        exact64,
        loop,
        steps,
        int(polish_top),
        deadline,
        polish_est,
        0.0 if model is None else model.price64_s,
    )
    if not steps and polish is None:
        report.stop = "skipped (large problem; polish=True forces it)"
    coupling = support.embed(xp, plan)
    upper = _final_cost(problem, coupling, cost)
    low = clamp_lower(lower_value(problem, lower), upper)
    diagnostics = {
        "lower_kind": lower,
        "starts": names,
        "start_costs": loop.best_cost,
        "best_start": names[best],
        "epsilon": cfg.eps,
        "step": cfg.tau,
        "dtype": "float32" if cfg.dtype == xp.float32 else "float64",
        "rank": None if factored is None else factored.rank,
        "rank_error": None if factored is None else factored.residual,
        "factored_iter": loop.factored_iter,
        "stop_reason": loop.stop,
        "history": loop.history,
        "iterate_time_s": loop.time_s,
        **report.as_dict(),
    }
    certified = is_certified(problem, low, upper)
    upper, low = result_scalars(problem, upper, low)  # one kind (tensors under grad)
    return GWResult(
        value=upper,
        lower=low,
        upper=upper,
        coupling=xp.astype(coupling, problem.C1.dtype, copy=False) if return_coupling else None,
        method="proximal",
        loss_fun=problem.loss_fun,
        converged=loop.stop in ("tol", "zero cost"),
        n_iter=loop.n_iter,
        marginal_error=loop.raw_error[best],
        certified=certified,
        time_s=0.0,
        diagnostics=diagnostics,
    )


def _price64(xp, sub64, plan):
    """A plan (any dtype) as an exact float64 coupling, with its exact cost. A
    permutation (uniform weights) is rebuilt from its support with the exact weights,
    so that rounding the float32 values cannot make it dense."""
    sparse = _sparse(xp, plan)
    if sparse is not None and sub64.uniform and sparse.is_permutation():
        order = xp.asarray(sparse.rows, device=_xp.device(plan))
        values = xp.take(sub64.p, order, axis=0)
        sparse = SparseCoupling(sparse.rows, sparse.cols, values, sparse.shape)
        plan = to_dense(sparse)
    else:
        plan = round_to_polytope(xp.astype(plan, xp.float64), sub64.p, sub64.q)
        sparse = _sparse(xp, plan)
    target = plan if sparse is None else sparse
    return plan, float(gw_cost(sub64.C1, sub64.C2, target, sub64.loss_fun))


def _finish(xp, sub64, exact64, loop, steps, top, deadline, polish_est, price64_s=0.0):
    """The best float64 plan over the starts, the ``top`` best ones polished."""
    # (cost, start, plan, priced in float64 already)
    candidates = [
        (c, k, plan, False) for k, (c, plan) in enumerate(zip(loop.best_cost, loop.best_plan))
    ]
    candidates = [c for c in candidates if c[2] is not None]
    for value, k, plan in sorted(loop.pending, key=lambda c: c[0]):
        # an unpriced dense plan that looks better: price it if that fits
        if value < min((c[0] for c in candidates), default=math.inf) and (
            deadline is None or time.perf_counter() + 1.1 * price64_s <= deadline
        ):
            candidate, exact_value = _price64(xp, sub64, plan)
            candidates.append((exact_value, k, candidate, True))
    candidates.sort(key=lambda c: c[0])
    best, plan, cost = None, None, math.inf
    report = PolishReport(stop="not run" if steps else "disabled")
    first_cost = None
    for rank_k, (known, k, start_plan, priced) in enumerate(
        candidates[: max(1, top if steps else 1)]
    ):
        candidate, value = (start_plan, known) if priced else _price64(xp, sub64, start_plan)
        first_cost = value if first_cost is None else first_cost
        if value < cost:
            best, plan, cost = k, candidate, value
        if not steps:
            continue
        if deadline is not None and time.perf_counter() + 0.5 * polish_est >= deadline:
            report.stop = "time_limit"
            break
        polished, one = _polish64(sub64, exact64, candidate, value, steps, deadline)
        report.steps += one.steps
        report.time_s += one.time_s
        if one.cost_after < cost:
            best, plan, cost = k, polished, one.cost_after
            report.stop = one.stop
        elif rank_k == 0:
            report.stop = one.stop
    report.cost_before, report.cost_after = first_cost, cost
    return best, plan, cost, report


def _low_rank(sub: GWProblem, cfg: _Settings, seed: int, symmetric: bool):
    if cfg.rank == 0 or sub.loss_fun != "square_loss":
        return None
    if cfg.rank is None and sub.n * sub.m < _FACTOR_FROM:
        return None
    r_max = 128 if cfg.rank is None else cfg.rank
    # a rank near n saves nothing over the exact products
    r_max = min(r_max, max(sub.n, sub.m) // 4)
    return _operators.factored(sub, cfg.dtype, r_max=r_max, seed=seed, symmetric=symmetric)


def _final_cost(problem: GWProblem, coupling, cost: float):
    """``upper``: the plan's exact cost (a 0-d tensor with its graph when inputs need one)."""
    if not problem.requires_grad:
        return cost
    xp = problem.xp
    C1 = xp.astype(problem.C1, xp.float64)
    C2 = xp.astype(problem.C2, xp.float64)
    # the plan is held fixed: the envelope-theorem gradient, as for method="cg"
    return _xp.scalar(gw_cost(C1, C2, coupling, problem.loss_fun), keep_graph=True)


solve.imports = ("ot",)  # polish uses POT's exact OT: imported before the clock
