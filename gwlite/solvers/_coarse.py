r"""A coarse start for large problems between distance matrices: sample, solve, lift.

``method="proximal"`` starts a problem of at least :data:`COARSE_FROM` nodes on both
sides whose matrices are distances (symmetric, non-negative, zero diagonal; square loss)
from a plan built at a coarse scale, then polishes it on the full problem:

1. **sample** :math:`s = \min(` :data:`COARSE_POINTS` :math:`, \lfloor \min(n, m)/4
   \rfloor)` points of each space (fewer under a tight time limit:
   :func:`sample_size`) by farthest-point sampling (Gonzalez 1985: each new
   point is the farthest from those already taken; a 2-approximation of the
   :math:`s`-centre problem), from the rows of the distance matrix; every point joins
   its nearest sample (its Voronoi cell), and the cell weighs its points' mass:
   :math:`P_a = \sum_{i \in a} p_i`, :math:`Q_b = \sum_{k \in b} q_k`;
2. **solve** the :math:`s \times s` problem between the samples with those weights
   (``method="proximal"``, several starts);
3. **lift** its plan :math:`\Gamma` by spreading each block over the cells' points in
   proportion to their weights, :math:`\pi_{ik} = \Gamma_{a(i) b(k)}\, p_i q_k / (P_a
   Q_b)`: a coupling of :math:`p` and :math:`q`, since :math:`\sum_k \pi_{ik} = (p_i /
   P_a) \sum_b \Gamma_{a(i) b} = p_i` (and likewise for the columns).

The lifted plan is a start like ``G0`` (priced exactly, never returned unless it is the
best plan found); the conditional-gradient polish takes it to a local optimum of the
full problem. This is quantized GW's idea (Chowdhury, Miller & Needham 2021), with the
block product and the full problem's conditional gradient in place of their per-block
transport. Measured on the bench instances (uniform points in the unit square, one
thread): at n = 1000 the polished lift costs 0.00118 after 2.7 s against POT's
conditional gradient 0.00136 after 5.9 s, at n = 3000 0.000405 after 25 s against
0.000440 after about 300 s (the batch benchmark page, *Time limits*).

References
----------
T. F. Gonzalez. Clustering to minimize the maximum intercluster distance. Theoretical
Computer Science 38, 1985.
S. Chowdhury, D. Miller, T. Needham. Quantized Gromov-Wasserstein. ECML PKDD 2021.
"""

from __future__ import annotations

import time

from gwlite import _xp
from gwlite.problem import GWProblem, make_problem

__all__ = [
    "COARSE_FROM",
    "COARSE_POINTS",
    "applies",
    "farthest_points",
    "lifted_start",
    "sample_size",
]

#: the coarse start is used by default from this many nodes on both sides
COARSE_FROM = 1000
#: samples per space at most
COARSE_POINTS = 600
# starts of the coarse solve, and its share of the time left under a time limit
_COARSE_STARTS = 8
_COARSE_SHARE = 0.25
# under a time limit the samples are as many as let this many exact steps of the coarse
# solve (every start: 4 s^3 flop each) fit in its share, at the measured speed; with
# fewer steps the coarse plan is worse than a smaller sample's (n = 1000, limit 0.8 s:
# 250 samples gave 0.0030 after the polish, 100 samples 0.0012)
_COARSE_STEPS = 100
# a coarse solve shorter than this is not started
_MIN_BUDGET_S = 0.01


def applies(problem: GWProblem, coarse: bool | None, symmetric: bool) -> str | None:
    """Why the coarse start is not used (``None`` when it is): ``coarse=False``, a
    small problem (``coarse=None`` below :data:`COARSE_FROM` nodes), another loss, or
    matrices that are not distances (the cells need a nearest sample)."""
    if coarse is False:
        return "off"
    if problem.loss_fun != "square_loss":
        return "not used: abs_loss"
    small = min(problem.n, problem.m)
    if small < (COARSE_FROM if coarse is None else 8):
        return "not used: small problem"
    if not symmetric or not all(_is_distance(C) for C in (problem.C1, problem.C2)):
        return "not used: the matrices are not distances"
    return None


def _is_distance(C) -> bool:
    xp = _xp.array_namespace(C)
    return bool(xp.all(C >= 0)) and bool(xp.all(xp.linalg.diagonal(C) == 0))


def farthest_points(C, s: int):
    """Indices of ``s`` points chosen by farthest-point sampling from point 0, and the
    index (into them) of each point's nearest chosen point (its cell)."""
    xp = _xp.array_namespace(C)
    chosen = [0]
    nearest = xp.asarray(C[0, :], copy=True)
    for _ in range(s - 1):
        k = int(xp.argmax(nearest))
        chosen.append(k)
        nearest = xp.minimum(nearest, C[k, :])
    index = xp.asarray(chosen, device=_xp.device(C))
    cells = xp.argmin(xp.take(C, index, axis=1), axis=1)
    return index, cells


def _cells(C, w, s: int):
    """Samples, cells and cell weights of one space."""
    xp = _xp.array_namespace(C)
    index, cells = farthest_points(C, s)
    # a sum per cell: one-hot product (the array API has no bincount)
    onehot = xp.astype(cells[:, None] == xp.arange(s, device=_xp.device(w))[None, :], w.dtype)
    return index, cells, w @ onehot


def sample_size(problem: GWProblem, budget_s: float | None, rate: float | None) -> int:
    """Samples per space: :data:`COARSE_POINTS`, at most a quarter of the smaller side,
    and under a time limit at most what lets :data:`_COARSE_STEPS` steps of the coarse
    solve fit in ``budget_s`` at ``rate`` flop/s (at least 8)."""
    s = min(COARSE_POINTS, min(problem.n, problem.m) // 4)
    if budget_s is not None and rate is not None:
        fits = (budget_s * rate / (4.0 * _COARSE_STEPS * _COARSE_STARTS)) ** (1 / 3)
        s = min(s, int(fits))
    return max(s, 8)


def lifted_start(
    problem: GWProblem,
    deadline,
    seed: int = 0,
    rate: float | None = None,
    reserve: float = 0.0,
):
    """The lifted coarse plan (float64, the problem's array type) and a note for the
    diagnostics: ``{"points", "coarse_cost", "time_s"}``; ``(None, why)`` when the time
    left is too short. ``deadline``: the coarse solve gets at most a quarter of the time
    left, and leaves ``reserve`` seconds after it (the caller's polish); ``rate``: the
    measured flop/s that sizes the sample under it (:func:`sample_size`)."""
    from gwlite.solvers import proximal

    began = time.perf_counter()
    xp = problem.xp
    budget = None
    if deadline is not None:
        left = deadline - began
        budget = min(_COARSE_SHARE * left, left - reserve)
        if budget <= _MIN_BUDGET_S:
            return None, f"skipped: the polish after it (about {reserve:.2g} s) needs the time"
    s = sample_size(problem, budget, rate)
    (i1, cells1, a), (i2, cells2, b) = (
        _cells(C, w, s) for C, w in ((problem.C1, problem.p), (problem.C2, problem.q))
    )
    c1 = xp.take(xp.take(problem.C1, i1, axis=0), i1, axis=1)
    c2 = xp.take(xp.take(problem.C2, i2, axis=0), i2, axis=1)
    limit = None if budget is None else max(budget - (time.perf_counter() - began), 1e-3)
    res = proximal.solve(
        make_problem(c1, c2, a, b), n_starts=_COARSE_STARTS, time_limit=limit, seed=seed
    )
    gamma = xp.astype(res.coupling, xp.float64)
    # pi_ik = Gamma[a(i), b(k)] p_i q_k / (P_a Q_b); every used cell has P_a > 0
    rows = xp.take(gamma, cells1, axis=0)
    block = xp.take(rows, cells2, axis=1)
    left = problem.p / xp.take(a, cells1, axis=0)
    right = problem.q / xp.take(b, cells2, axis=0)
    plan = block * left[:, None] * right[None, :]
    note = {
        "points": s,
        "coarse_cost": float(res.upper),
        "time_s": time.perf_counter() - began,
    }
    return plan, note
