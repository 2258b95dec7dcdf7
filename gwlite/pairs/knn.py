r"""``knn`` mode: the expensive method only where a neighbour list can still change.

With intervals :math:`[L_{ij}, U_{ij}]` and :math:`u_k(i)` the :math:`k`-th smallest
:math:`U_{il}` over :math:`l \ne i`, at least :math:`k` spaces are within :math:`u_k(i)`
of space :math:`i`; so a space with :math:`L_{ij} > u_k(i)` is *proven out* of the
:math:`k` nearest neighbours of :math:`i`, whatever the exact values. A pair is *needed*
unless it is proven out of both lists (``i``'s and ``j``'s) or its interval is already a
single value.

The rounds: compute the cheap sorted bounds for all pairs; then, while some needed pair
has not run, run the method on, for every space, its (at most) ``k * 2**(r - 1)``
needed pairs of smallest upper bound, and intersect their intervals with the cheap ones.
Intervals only shrink, so a pair proven out stays out, and the first rounds (the likely
neighbours) lower :math:`u_k` and prove most other pairs out before they run.

Each round's selection depends only on the cheap bounds and the results of the earlier
rounds, so a resumed run (store) replays the same rounds and ends with the same pairs.
"""

from __future__ import annotations

import numpy as np

__all__ = ["combine", "needed", "select_round"]


def combine(cheap: dict, main: dict, ran: np.ndarray, threshold: np.ndarray) -> dict:
    """Intersect the cheap intervals with the method's where it ran; a pair whose gap is
    at most its ``threshold`` (``certify_threshold`` of its loss scale) is certified."""
    lower = np.where(ran, np.maximum(cheap["lower"], main["lower"]), cheap["lower"])
    upper = np.where(ran, np.minimum(cheap["upper"], main["upper"]), cheap["upper"])
    lower = np.minimum(lower, upper)
    certified = cheap["certified"] | (ran & main["certified"]) | (upper - lower <= threshold)
    return {"lower": lower, "upper": upper, "certified": certified}


def needed(lower: np.ndarray, upper: np.ndarray, certified: np.ndarray, k: int) -> np.ndarray:
    """Pairs (upper triangle) that could belong to some ``k``-nearest-neighbour list."""
    n = lower.shape[0]
    U = np.array(upper, dtype=np.float64)
    np.fill_diagonal(U, np.inf)
    kth = np.partition(U, k - 1, axis=1)[:, k - 1]
    out = lower > kth[:, None]
    need = ~(out & out.T) & ~certified
    return np.triu(need, 1) if n > 1 else np.zeros_like(need)


def select_round(need: np.ndarray, upper: np.ndarray, quota: int) -> np.ndarray:
    """For every space, its ``quota`` needed pairs of smallest upper bound (upper triangle)."""
    n = need.shape[0]
    sym = need | need.T
    U = np.where(sym, upper, np.inf)
    quota = min(quota, n - 1)
    if quota < n - 1:
        part = np.argpartition(U, quota - 1, axis=1)[:, :quota]
    else:
        part = np.broadcast_to(np.arange(n), (n, n))
    pick = np.zeros_like(need)
    rows = np.broadcast_to(np.arange(n)[:, None], part.shape)
    pick[rows, part] = True
    pick &= sym
    pick = pick | pick.T
    return np.triu(pick, 1)
