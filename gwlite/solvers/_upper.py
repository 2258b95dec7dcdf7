"""The parts the certified solvers share (``method="sdp"`` and ``method="rlt"``).

The inputs restricted to the nodes of positive weight, and the upper side: an
:class:`Incumbent` collects candidate couplings (``G0``, the permutation optimum of
``method="exact"``, conditional gradient, and whatever plan a relaxation suggests) and
keeps the cheapest, priced exactly.
"""

from __future__ import annotations

import math

import numpy as np

from gwlite import _xp
from gwlite.coupling import SparseCoupling, gw_cost, round_to_polytope
from gwlite.problem import GWProblem
from gwlite.solvers._common import check_G0

__all__ = [
    "EXACT_BUDGET_S",
    "Incumbent",
    "first_candidates",
    "host",
    "start_plan",
    "support",
    "support_of",
]

#: seconds given to the permutation search of method="exact" on the upper side
EXACT_BUDGET_S = 5.0


def support(problem: GWProblem):
    """Host float64 inputs restricted to the nodes with positive weight."""
    host = [
        np.asarray(_xp.to_numpy(_xp.detach(a)), dtype=np.float64)
        for a in (problem.C1, problem.C2, problem.p, problem.q)
    ]
    C1, C2, p, q = host
    rows, cols = np.nonzero(p > 0)[0], np.nonzero(q > 0)[0]
    return C1[np.ix_(rows, rows)], C2[np.ix_(cols, cols)], p[rows], q[cols], rows, cols


class Incumbent:
    """The cheapest coupling offered so far, and the cost of every offer (host, full size)."""

    def __init__(self, problem: GWProblem):
        self.problem = problem
        self.p, self.q = (
            np.asarray(_xp.to_numpy(_xp.detach(w)), dtype=np.float64)
            for w in (problem.p, problem.q)
        )
        self.costs: dict[str, float] = {}
        self.plans: dict[str, np.ndarray] = {}
        self.name, self.cost, self.plan = None, math.inf, None

    def offer(self, name: str, plan: np.ndarray, round_first: bool = True) -> None:
        if round_first:
            plan = np.asarray(round_to_polytope(np.maximum(plan, 0.0), self.p, self.q))
        C1, C2 = _xp.detach(self.problem.C1), _xp.detach(self.problem.C2)
        cost = float(gw_cost(C1, C2, support_of(plan, C1), self.problem.loss_fun))
        # a name offered again (the moment, once per chunk) keeps its cheapest plan
        if cost < self.costs.get(name, math.inf):
            self.costs[name], self.plans[name] = cost, plan
        if cost < self.cost:
            self.name, self.cost, self.plan = name, cost, plan

    def offer_vertex(self, name: str, x: np.ndarray) -> None:
        """The vertex of the transport polytope most aligned with ``x`` (an exact LP):
        when the relaxation is tight at a vertex, this is the optimal coupling itself."""
        import ot

        self.offer(name, ot.emd(self.p, self.q, -np.maximum(x, 0.0)), round_first=False)

    def polish(self, names, remaining) -> None:
        """Conditional gradient (POT, square loss) from the named plans."""
        if self.problem.loss_fun != "square_loss":
            return
        from gwlite.solvers import pot

        for name in names:
            if name in self.plans and remaining() > 0:
                start = _xp.from_numpy(self.plans[name].copy(), self.problem.C1)
                res = pot.solve_cg(self.problem, G0=start, lower="mean_row")
                self.offer(f"cg({name})", np.asarray(_xp.to_numpy(res.coupling)), False)


def first_candidates(incumbent: Incumbent, G0, remaining) -> float:
    """Upper bounds available before the relaxation: G0, the permutation optimum, CG.

    Returns the lower bound ``method="exact"`` proved on the way (its certified optimum
    under the PSD/NSD theorem, else TLB or its spectral bound; -inf if it did not run).
    """
    problem = incumbent.problem
    exact_lower = -math.inf
    if G0 is not None:
        incumbent.offer("G0", G0)
    from gwlite.solvers import exact

    # (method="rlt" shares this upper side at sizes beyond the exact search's)
    if problem.uniform and problem.n == problem.m and 1 < problem.n <= exact.MAX_N:
        budget = min(EXACT_BUDGET_S, max(remaining(), 0.05))
        res = exact.solve(problem, time_limit=budget)
        incumbent.offer("exact_permutation", np.asarray(_xp.to_numpy(res.coupling)), False)
        exact_lower = _xp.as_float(res.lower)
    if problem.loss_fun == "square_loss":
        from gwlite.solvers import pot

        # from G0 as offered (rounded onto the polytope: CG insists on a coupling)
        start = None if G0 is None else _xp.from_numpy(incumbent.plans["G0"].copy(), problem.C1)
        plan = pot.solve_cg(problem, G0=start)
        incumbent.offer("cg", np.asarray(_xp.to_numpy(plan.coupling)), False)
    return exact_lower


def support_of(plan: np.ndarray, like) -> SparseCoupling:
    """``plan`` by its non-zeros: a permutation is then priced by differences of
    entries (no cancellation: isomorphic graphs cost exactly 0), a dense plan as usual."""
    rows, cols = np.nonzero(plan)
    return SparseCoupling(rows, cols, _xp.from_numpy(plan[rows, cols], like), plan.shape)


def host(a) -> np.ndarray:
    return np.asarray(_xp.to_numpy(_xp.detach(a)), dtype=np.float64)


def start_plan(problem: GWProblem, G0) -> np.ndarray | None:
    """A user's ``G0`` checked (:func:`gwlite.solvers._common.check_G0`), on the host: any
    non-negative plan (``auto`` passes its best plan, whose marginals may be off by the
    proximal solver's tolerance); :meth:`Incumbent.offer` rounds it onto the polytope."""
    return None if G0 is None else host(check_G0(problem, G0, coupling=False))
