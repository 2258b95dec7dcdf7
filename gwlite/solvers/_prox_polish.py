r"""The last steps of ``method="proximal"``: price the best plans in float64 and polish.

* **price** (:func:`price64`): a plan of the loop (any dtype) becomes an exact float64
  coupling with its exact cost; a permutation is rebuilt from its support, so that
  rounding float32 values cannot make it dense;
* **polish** (:func:`polish64`): conditional-gradient (Frank-Wolfe) steps with exact
  line search from a feasible plan: the direction is POT's network-simplex vertex
  :math:`V = \operatorname{argmin}_{\Pi} \langle \nabla \mathcal E(\pi), V\rangle`, and
  along :math:`D = V - \pi` the objective is the quadratic
  :math:`\mathcal E(\pi) + b t + a t^2`, :math:`b = -4\langle X(\pi), D\rangle`,
  :math:`a = -2\langle X(D), D\rangle`;
* **choose** (:func:`finish`): the best plan over the starts, the ``top`` best ones
  polished, under the deadline (no step starts that would not end before it).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

import numpy as np

from gwlite import _xp
from gwlite.coupling import SparseCoupling, gw_cost, round_to_polytope, to_dense
from gwlite.solvers._prox_loop import sparse
from gwlite.solvers._prox_time import StepClock

__all__ = ["PolishReport", "finish", "polish64", "price64"]


@dataclass
class PolishReport:
    """What :func:`gwlite.solvers.proximal.polish` did: steps taken, cost before and
    after, why it stopped."""

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


def price64(xp, sub64, plan):
    """A plan (any dtype) as an exact float64 coupling, with its exact cost."""
    support = sparse(xp, plan)
    if support is not None and sub64.uniform and support.is_permutation():
        order = xp.asarray(support.rows, device=_xp.device(plan))
        values = xp.take(sub64.p, order, axis=0)
        support = SparseCoupling(support.rows, support.cols, values, support.shape)
        plan = to_dense(support)
    else:
        plan = round_to_polytope(xp.astype(plan, xp.float64), sub64.p, sub64.q)
        support = sparse(xp, plan)
    target = plan if support is None else support
    return plan, float(gw_cost(sub64.C1, sub64.C2, target, sub64.loss_fun))


def polish64(sub64, op, plan, cost: float, max_steps: int, deadline, first_step_s=0.0):
    """Conditional-gradient steps from a feasible float64 plan (module docstring);
    ``first_step_s``: the predicted seconds of a step before one has been timed. No step
    starts that would not end, with the final float64 pricing, before ``deadline``."""
    import ot  # imported on use: POT imports torch when present, gwlite must not

    xp = sub64.xp
    began = time.perf_counter()
    report = PolishReport(cost_before=cost, cost_after=cost, stop="max_steps")
    p = _xp.to_numpy(sub64.p).astype(np.float64)
    q = _xp.to_numpy(sub64.q).astype(np.float64)
    q = q * (p.sum() / q.sum())
    X = op.apply(xp, plan)
    pricing_s = time.perf_counter() - began  # about what the final pricing costs
    # a step must gain more than round-off in the objective to count
    tiny = 1e-13 * max(op.scale, abs(cost))
    device = _xp.device(plan)
    clock = StepClock(first_step_s)
    for _ in range(max_steps):
        now = time.perf_counter()
        if deadline is not None and now + 1.2 * clock.predict + pricing_s > deadline:
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
        clock.record(time.perf_counter() - now)
    report.cost_after = float(gw_cost(sub64.C1, sub64.C2, plan, sub64.loss_fun))
    report.time_s = time.perf_counter() - began
    return plan, report


def finish(xp, sub64, exact64, loop, steps, top, deadline, polish_est, price64_s=0.0):
    """The best float64 plan over the starts, the ``top`` best ones polished; returns
    the start it came from, the plan, its exact cost and the polish report."""
    # (cost, start, plan, priced in float64 already)
    candidates = [
        (c, k, plan, False) if plan64 is None else (c, k, plan64, True)
        for k, (c, plan, plan64) in enumerate(zip(loop.best_cost, loop.best_plan, loop.best64))
    ]
    candidates = [c for c in candidates if c[2] is not None]
    for value, k, plan in sorted(loop.pending, key=lambda c: c[0]):
        # an unpriced dense plan that looks better: price it if that fits
        if value < min((c[0] for c in candidates), default=math.inf) and (
            deadline is None or time.perf_counter() + 1.1 * price64_s <= deadline
        ):
            candidate, exact_value = price64(xp, sub64, plan)
            candidates.append((exact_value, k, candidate, True))
    candidates.sort(key=lambda c: c[0])
    best, plan, cost = None, None, math.inf
    report = PolishReport(stop="not run" if steps else "disabled")
    first_cost = None
    for rank_k, (known, k, start_plan, priced) in enumerate(
        candidates[: max(1, top if steps else 1)]
    ):
        candidate, value = (start_plan, known) if priced else price64(xp, sub64, start_plan)
        first_cost = value if first_cost is None else first_cost
        if value < cost:
            best, plan, cost = k, candidate, value
        if not steps:
            continue
        # the first step, and the pricing of its plan, must fit
        if deadline is not None and time.perf_counter() + polish_est + price64_s >= deadline:
            report.stop = "time_limit"
            break
        polished, one = polish64(sub64, exact64, candidate, value, steps, deadline, polish_est)
        report.steps += one.steps
        report.time_s += one.time_s
        if one.cost_after < cost:
            best, plan, cost = k, polished, one.cost_after
            report.stop = one.stop
        elif rank_k == 0:
            report.stop = one.stop
    report.cost_before, report.cost_after = first_cost, cost
    return best, plan, cost, report
