r"""The mirror-descent loop of ``method="proximal"``, in the named steps of the theory page.

One problem runs as a batch of one in the batched core (:mod:`gwlite.solvers._stack`):
its ``S`` starts are a stack ``(1, S, n, m)`` and every outer iteration is
:func:`gwlite.solvers._stack.mirror_step`, the same KL mirror-descent step as for many
problems at once. What is particular to one (possibly large) problem is which operator
gives the gradient and how plans are priced:

* **step**: the gradient comes from the *low-rank* operator first (when the matrices
  factor, :class:`gwlite.solvers._operators.Factored`), then from the *exact* one;
  each phase is a :class:`Phase`;
* **round**: every few steps each iterate is rounded onto the polytope
  (:func:`gwlite.solvers._stack.round_plans`) and sharpened to the vertex it approaches
  (:func:`round_all`);
* **price**: the rounded plans are priced exactly (sparse ones through their support,
  dense ones in one stacked product); in the low-rank phase only the vertices are
  priced exactly and the dense plans are *monitored* through the low-rank operator
  (:func:`price`); each start keeps its best plan (:class:`Loop`);
* **stop**: the best cost stalls (``tol``), it reaches zero, ``max_iter``, or the next
  step and the final pricing would not fit the deadline (:mod:`._prox_time`).
"""

from __future__ import annotations

import dataclasses
import math
import time
from dataclasses import dataclass, field

import numpy as np

from gwlite import _xp
from gwlite.coupling import SparseCoupling, gw_cost, round_to_polytope, to_dense
from gwlite.solvers import _sinkhorn
from gwlite.solvers._prox_time import StepClock, synchronise
from gwlite.solvers._stack import mirror_step, round_plans

__all__ = ["CHECK_EVERY", "PATIENCE", "Loop", "Phase", "costs", "iterate", "sparse"]

# price and keep the best plan every this many iterations; stop after this many
# checks without a relative gain of tol
CHECK_EVERY = 5
PATIENCE = 3
# share of the time left at the start of the loop that the low-rank phase may use
_FACTOR_SHARE = 0.6


@dataclass
class Loop:
    """State and outcome of the loop over a stack of starts."""

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
    # each start's best plan as a float64 coupling when its cost is already the exact
    # float64 one (a start that is a candidate, not improved by the loop), else None
    best64: list = field(default_factory=list)

    def keep_best(self, rounded: list, values: list, only_vertices: bool = False) -> None:
        """Update each start's best plan from the pairs produced by :func:`round_all`."""
        for k in range(len(self.best_cost)):
            for j in (2 * k + 1,) if only_vertices else (2 * k, 2 * k + 1):
                if values[j] < self.best_cost[k]:
                    self.best_cost[k], self.best_plan[k] = values[j], rounded[j]
                    self.best64[k] = None


@dataclass(frozen=True)
class Phase:
    """Which operator steers the steps, and whether its dense plans are priced exactly
    (``exact``) or only monitored through it."""

    name: str
    op: object
    exact: bool


@dataclass(frozen=True)
class _OneProblem:
    """One problem as a batch of one for :func:`gwlite.solvers._stack.mirror_step`: the
    marginals as ``(1, 1, n)`` rows, the gradient from any operator."""

    xp: object
    op: object
    p: object
    q: object
    scale: float

    def apply(self, P):
        return self.op.apply(self.xp, P)

    def gradient(self, X):
        return -4.0 * X


# --------------------------------------------------------------------- round
def round_all(xp, P, p, q, permutations: bool) -> list:
    """Two feasible plans per iterate ``(S, n, m)``: the iterate rounded onto the
    polytope, and its sharpened form, the vertex the iterate approaches once it has
    settled on one: with uniform weights and ``n == m`` the permutation that sends each
    row to its largest entry (collisions resolved by mass, leftovers matched by an
    assignment on their block), otherwise each row's mass on its largest entry, rounded."""
    m = P.shape[-1]
    columns = xp.arange(m, device=_xp.device(P))
    rounded = round_plans(xp, P, p, q)
    out = []
    for k in range(P.shape[0]):
        plan = P[k, ...]
        out.append(rounded[k, ...])
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


# --------------------------------------------------------------------- price
def costs(xp, sub, exact, plans, dense: bool = True) -> list:
    """GW costs of feasible plans: through their support when they are sparse (a
    sharpened plan is often a vertex: O(nnz^2) instead of O(nm(n + m))), else by the
    operator, all dense plans in one batched product."""
    out = [math.inf] * len(plans)
    todo = []
    for k, plan in enumerate(plans):
        support = sparse(xp, plan)
        if support is None:
            todo.append(k)
        else:
            out[k] = float(gw_cost(sub.C1, sub.C2, support, sub.loss_fun))
    if todo and dense:
        values = exact.cost(xp, xp.stack([plans[k] for k in todo]))
        for k, value in zip(todo, _xp.to_numpy(values)):
            out[k] = float(value)
    return out


def sparse(xp, plan):
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


def price(xp, sub, exact, phase: Phase, loop: Loop, rounded: list) -> float:
    """Price the rounded plans of one check, keep each start's best; the best cost
    seen (monitored through the low-rank operator in that phase)."""
    if phase.exact:
        loop.keep_best(rounded, costs(xp, sub, exact, rounded))
        return min(loop.best_cost)
    # sparse (vertex) plans are priced exactly and kept; the dense ones are only
    # monitored through the low-rank operator, to detect the stall
    loop.keep_best(rounded, costs(xp, sub, exact, rounded, dense=False), only_vertices=True)
    current = float(xp.min(exact.kappa - 2 * _cross(xp, phase.op, rounded)))
    return min(current, min(loop.best_cost))


# --------------------------------------------------------------------- loop
class _Run:
    """The loop's moving parts: the stack, the phase, the stall counter and the clock."""

    def __init__(self, sub, exact, factored, starts, cfg, deadline, initial, model):
        xp = self.xp = sub.xp
        self.began = time.perf_counter()
        self.sub, self.exact, self.factored, self.cfg = sub, exact, factored, cfg
        self.deadline, self.model = deadline, model
        P = xp.stack([xp.astype(s, cfg.dtype, copy=False) for s in starts])
        if cfg.tau * cfg.eps < 1 - 1e-9:
            # the proximal term keeps the support of the previous plan: smooth vertex starts
            P = (P + sub.p[:, None] * sub.q[None, :]) / 2
        self.S = P.shape[0]
        self.P = P[None, ...]  # a batch of one problem
        self.g = xp.zeros((1, self.S, sub.m), dtype=cfg.dtype, device=_xp.device(P))
        self.one = _OneProblem(xp, exact, sub.p[None, None, :], sub.q[None, None, :], exact.scale)
        self.floor = _sinkhorn.floor_for(xp, cfg.dtype)
        self.loop = Loop([math.inf] * self.S, [None] * self.S, best64=[None] * self.S)
        for k, (value, plan) in enumerate(initial or []):
            if plan is not None:  # a start that is itself a feasible plan worth keeping
                self.loop.best_cost[k] = value
                self.loop.best_plan[k] = xp.astype(plan, cfg.dtype, copy=False)
                self.loop.best64[k] = plan
        self.permutations = sub.uniform and sub.n == sub.m
        self.phase = Phase("exact", exact, True)
        self.switch_at = None
        if factored is not None:
            self.phase = Phase("factored", factored, False)
            if deadline is not None:
                self.switch_at = self.began + _FACTOR_SHARE * (deadline - self.began)
        self.clock = StepClock()  # the steps
        self.check_clock = StepClock()  # the checks (round and price)
        self.stalled, self.best_seen, self.priced_at = 0, math.inf, 0
        # the last fifth of the iterations (at least one check's worth) is always exact
        self.exact_from = cfg.max_iter - max(CHECK_EVERY, cfg.max_iter // 5)

    # ---------------------------------------------------------------- time
    def exact_fits(self, now: float) -> bool:
        """Whether an exact step and the final pricing still fit before the deadline."""
        model = self.model
        if model is None or self.deadline is None:
            return True
        return now + 1.2 * model.step_s + model.final_s() <= self.deadline

    def first_step_fits(self, now: float) -> bool:
        """Whether the first step (priced by the model: a low-rank step costs about its
        projection) and what must follow it fit before the deadline."""
        if self.phase.exact:
            return self.exact_fits(now)
        if self.model is None or self.deadline is None:
            return True
        self.clock.guess = self.model.project_s
        return now + 1.2 * self.model.project_s + self.reserve() <= self.deadline

    def reserve(self) -> float:
        """What must be left after this step: the next step and check, and the final
        pricing."""
        model, step_s = self.model, self.clock.predict + self.check_clock.predict
        if self.phase.exact:
            # the final pricing (2S plans, then one in float64) costs about 3 + 2/S steps
            return max(step_s * (4 + 2 / self.S), 0.0 if model is None else model.final_s())
        if model is None:
            return step_s
        if self.permutations:
            # vertices are priced on the way (through their support), the best again in
            # float64 at the end (about one check); the last dense plans are priced only
            # if that still fits (``pending``), else left out
            return step_s + (self.check_clock.last or model.sparse_price_s(self.sub.n))
        return step_s + model.final_s()

    # ---------------------------------------------------------------- steps
    def step(self) -> float:
        """One mirror-descent step of every start; the time after it."""
        cfg, tick = self.cfg, time.perf_counter()
        one = dataclasses.replace(self.one, op=self.phase.op)
        self.P, self.g = mirror_step(
            one, self.P, self.g, cfg.tau, cfg.eps, cfg.inner_iter, self.floor
        )
        synchronise(self.g)
        now = time.perf_counter()
        self.clock.record(now - tick)
        if self.phase.exact:
            self.loop.exact_step_s = now - tick
        self.loop.n_iter += 1
        self.loop.factored_iter += not self.phase.exact
        return now

    def round_and_price(self) -> float:
        xp, sub, tick = self.xp, self.sub, time.perf_counter()
        rounded = round_all(xp, self.P[0], sub.p, sub.q, self.permutations)
        current = price(xp, sub, self.exact, self.phase, self.loop, rounded)
        self.check_clock.record(time.perf_counter() - tick)
        if self.phase.exact:
            self.priced_at = self.loop.n_iter
        self.loop.history.append(
            (self.loop.n_iter, self.phase.name, current, time.perf_counter() - self.began)
        )
        return current

    def to_exact(self) -> None:
        self.phase, self.stalled, self.best_seen = Phase("exact", self.exact, True), 0, math.inf

    def late(self, now: float) -> bool:
        """Whether the low-rank phase has had its share (of time or of iterations)."""
        return (self.switch_at is not None and now >= self.switch_at) or (
            self.loop.n_iter >= self.exact_from
        )

    def after_check(self, current: float, out_of_time: bool, late: bool) -> str | None:
        """The stop reason after a check, if any; switches phase when the low-rank one
        has stalled or had its share."""
        if self.phase.exact and current <= 0:
            return "zero cost"  # GW >= 0: nothing left to gain
        if out_of_time:
            return "time_limit"
        gained = self.best_seen - current > self.cfg.tol * abs(current)
        self.best_seen = min(self.best_seen, current)
        self.stalled = 0 if gained else self.stalled + 1
        if self.phase.exact:
            return "tol" if self.stalled >= PATIENCE else None
        if self.stalled >= PATIENCE or late or self.late(time.perf_counter()):
            if self.exact_fits(time.perf_counter()):
                self.to_exact()
            elif self.stalled >= PATIENCE:
                return "time_limit"  # the exact phase does not fit in the time left
        return None

    def price_last(self) -> None:
        """The last iterate may beat the best checked one (or be the only one priced);
        dense plans are priced here only when that still fits the time limit."""
        if self.priced_at == self.loop.n_iter:
            return
        xp, sub, model = self.xp, self.sub, self.model
        dense = model is None or self.deadline is None
        dense = dense or time.perf_counter() + model.final_s() <= self.deadline
        rounded = round_all(xp, self.P[0], sub.p, sub.q, self.permutations)
        self.loop.keep_best(rounded, costs(xp, sub, self.exact, rounded, dense=dense))
        if not dense:
            approx = self.exact if self.factored is None else self.factored
            monitored = self.exact.kappa - 2 * _cross(xp, approx, rounded[0::2])
            for k, value in enumerate(_xp.to_numpy(monitored)):
                self.loop.pending.append((float(value), k, rounded[2 * k]))

    def finish(self) -> Loop:
        xp, sub = self.xp, self.sub
        error = _sinkhorn.marginal_l1(xp, self.P[0], sub.p, sub.q)
        self.loop.raw_error = [float(x) for x in _xp.to_numpy(error)]
        self.loop.time_s = time.perf_counter() - self.began
        return self.loop


def iterate(sub, exact, factored, starts, cfg, deadline, initial=None, model=None) -> Loop:
    """Run the loop; return the best rounded plan of every start and how it ended.

    The low-rank phase (when ``factored`` is given) steers until the monitored cost
    stalls (or, under a time limit, its share of the time is used); the exact phase
    keeps the best rounded plan of each start and stops when the best cost gains less
    than ``tol`` (relative) over ``PATIENCE`` checks, or when one more iteration and the
    final pricing would miss ``deadline``.
    """
    run = _Run(sub, exact, factored, starts, cfg, deadline, initial, model)
    if not run.first_step_fits(time.perf_counter()):
        run.loop.stop = "time_limit"  # not even one step fits: the starts are the answer
        run.loop.time_s = time.perf_counter() - run.began
        run.loop.raw_error = [math.nan] * run.S
        return run.loop
    for it in range(1, cfg.max_iter + 1):
        now = run.step()
        out_of_time = deadline is not None and now + run.reserve() > deadline
        late = run.late(now)
        if it % CHECK_EVERY and it != cfg.max_iter and not out_of_time:
            if not run.phase.exact and late and run.exact_fits(now):
                run.to_exact()
            continue
        reason = run.after_check(run.round_and_price(), out_of_time, late)
        if reason is not None:
            run.loop.stop = reason
            break
    run.price_last()
    return run.finish()
