r"""The first-level RLT (Adams-Johnson) lower bound on GW, by Lagrangian dual ascent.

Host NumPy, float64; :mod:`gwlite.solvers.rlt` wraps it into a solver. With
:math:`x = \operatorname{vec}(\pi)` (row-major, pairs :math:`a = (i, j)`) and
:math:`P = x x^\top`, every coupling satisfies the *lifted* marginal constraints: row
:math:`a` of :math:`P` is a coupling of :math:`x_a p` and :math:`x_a q`, and
:math:`P = P^\top`. For **any** vector :math:`h` and **any** antisymmetric :math:`A`,

.. math::

    \mathrm{GW}(\pi) = \sum_{ab} L_{ab} P_{ab}
    = \sum_a h_a x_a + \sum_{ab} (L + A - h\mathbf 1^\top)_{ab} P_{ab}
    \ge \sum_a x_a \bigl(h_a + g_a\bigr)
    \ge \mathrm{OT}_{p,q}(h + g),

with :math:`g_a` the optimal transport cost between :math:`p` and :math:`q` of row
:math:`a` of :math:`Q = L + A - h\mathbf 1^\top` (reshaped to :math:`n \times m`). With
:math:`h = 0, A = 0` this is Memoli's TLB (the Gilmore-Lawler bound of GW); the dual
ascent of Hahn and Grant moves the outer problem's reduced costs into :math:`h` and
half of each inner reduced cost to its transposed entry (:math:`A`), which never
lowers the bound. Every transport value is taken from dual potentials made feasible
and every floating-point step is covered by a margin, so the bound of each iteration
is proven whatever the ascent did before (early stop, time limit). Proof:
``docs/theory_rlt.md``.

References
----------
W. P. Adams, T. A. Johnson. Improved linear programming-based lower bounds for the
quadratic assignment problem. DIMACS Series 16 (1994), 43-75.
P. M. Hahn, T. Grant. Lower bounds for the quadratic assignment problem based upon a
dual formulation. Operations Research 46 (1998), 912-922.
F. Memoli. Gromov-Wasserstein distances and the metric approach to object matching.
Found. Comput. Math. 11 (2011), Section 6 (TLB).
"""

from __future__ import annotations

import math
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

__all__ = ["AscentState", "RowBounds", "ascend", "initial_state", "outer_bound", "row_bounds"]

_U = np.finfo(np.float64).eps / 2  # unit round-off
# POT's network simplex: enough pivots for every n x m problem gwlite sends it
_EMD_MAX_ITER = 10_000_000


def _gamma(k: int) -> float:
    """Higham's :math:`\\gamma_k = k u / (1 - k u)`: relative error of a k-term sum."""
    return k * _U / (1 - k * _U)


@dataclass(frozen=True)
class AscentState:
    r"""The multipliers :math:`(h, A)` as the lifted cost :math:`Q = L + A - h\mathbf 1^\top`.

    Attributes
    ----------
    L : numpy.ndarray ``(nm, nm)``
        Symmetrised lifted cost (exactly symmetric).
    Q : numpy.ndarray ``(nm, nm)``
        The current cost; any ``Q`` is allowed: :func:`row_bounds` recovers an exactly
        antisymmetric :math:`A` from it before bounding.
    h : numpy.ndarray ``(nm,)``
        The linear multipliers.
    """

    L: np.ndarray
    Q: np.ndarray
    h: np.ndarray


@dataclass(frozen=True)
class RowBounds:
    """The inner problems of one iteration: proven row values and reduced costs."""

    g: np.ndarray  # proven lower bound on each row's transport value
    reduced: np.ndarray  # (nm, nm) inner reduced costs, shifted to be >= 0
    Q: np.ndarray  # the cost the rows were solved on (exactly L + A - h 1^T up to `err`)
    complete: bool  # False: stopped by the deadline before every row was solved


def initial_state(L: np.ndarray) -> AscentState:
    """:math:`h = 0, A = 0`: the first iteration's bound is TLB."""
    return AscentState(L=L, Q=L.copy(), h=np.zeros(L.shape[0]))


def _consistent_cost(state: AscentState) -> tuple[np.ndarray, np.ndarray]:
    r"""``Q`` rebuilt as :math:`L + A - h\mathbf 1^\top` with :math:`A` exactly
    antisymmetric, and a bound on each row's rounding error: that of forming ``Q`` and of
    ``L`` against the exact symmetrised loss (:math:`\gamma_4 |L|`), both below
    :math:`\gamma_6 (2|L| + |A| + |h|)`, doubled to cover this estimate's own rounding."""
    L, h = state.L, state.h
    A = state.Q - L
    A += h[:, None]
    A -= A.T.copy()
    A /= 2  # fl(a - b) = -fl(b - a) and /2 is exact: A = -A^T exactly
    row_A = np.abs(A).max(axis=1)
    A += L
    A -= h[:, None]  # now Q = fl(fl(L + A) - h)
    err = 2 * _gamma(6) * (2 * np.abs(L).max(axis=1) + row_A + np.abs(h))
    return A, err


def _emd_potentials(p, q, M) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """POT's network simplex on ``M``: its plan and dual potentials ``(u, v)``."""
    import ot

    with warnings.catch_warnings():
        # its status does not matter: any potentials give a bound (_proven_value)
        warnings.simplefilter("ignore")
        plan, log = ot.emd(
            p, q, M, numItermax=_EMD_MAX_ITER, log=True, check_marginals=False, center_dual=False
        )
    return plan, np.asarray(log["u"]), np.asarray(log["v"])


def _proven_value(p, q, u, v, M, M_err: float) -> tuple[float, np.ndarray]:
    r"""A proven lower bound on :math:`\min_{\pi \in \Pi(p,q)} \langle M^*, \pi\rangle`
    for any :math:`M^*` with :math:`|M^* - M| \le` ``M_err`` entrywise, from any potentials.

    :math:`\langle M^*, \pi\rangle = p^\top u + q^\top v + \langle M^* - u \oplus v, \pi
    \rangle \ge p^\top u + q^\top v + s\min(0, \min(M^* - u \oplus v))` (the plan has
    mass :math:`s = \sum p`, 1 up to the input check's tolerance: an upper bound on it
    is used); every rounding error is subtracted. Returns the bound and the reduced costs.
    """
    red = M - u[:, None] - v[None, :]
    slack = M_err + 2 * _gamma(2) * (np.abs(M).max() + np.abs(u).max() + np.abs(v).max())
    mu = min(0.0, float(red.min()) - slack) * _mass_up(p, q)
    value = float(p @ u + q @ v) + mu
    margin = 2 * _gamma(len(p) + len(q) + 2) * (float(p @ np.abs(u) + q @ np.abs(v)) + abs(mu))
    return value - margin, red


def _mass_up(p: np.ndarray, q: np.ndarray) -> float:
    """An upper bound on the total mass ``sum(p)`` (= ``sum(q)`` for any coupling)."""
    return max(float(p.sum()), float(q.sum())) * (1 + 2 * _gamma(len(p) + len(q)))


def row_bounds(
    state: AscentState, p: np.ndarray, q: np.ndarray, deadline: float = math.inf
) -> RowBounds:
    """Solve the ``nm`` inner transport problems of ``state`` (each ``n x m``).

    ``g[a]`` is a proven lower bound on row ``a``'s transport value under the exact
    multipliers; stops early (``complete=False``) once ``time.perf_counter()`` passes
    ``deadline``.
    """
    n, m = len(p), len(q)
    Q, err = _consistent_cost(state)
    N = n * m
    g = np.empty(N)
    reduced = np.empty_like(Q)
    for a in range(N):
        if a % 64 == 0 and time.perf_counter() > deadline:
            return RowBounds(g, reduced, Q, complete=False)
        M = Q[a].reshape(n, m)
        _, u, v = _emd_potentials(p, q, M)
        g[a], red = _proven_value(p, q, u, v, M, err[a])
        # the ascent needs reduced costs >= 0: shift by the row's most negative one
        reduced[a] = (red - min(0.0, float(red.min()))).ravel()
    return RowBounds(g, reduced, Q, complete=True)


def outer_bound(
    h: np.ndarray, g: np.ndarray, p: np.ndarray, q: np.ndarray
) -> tuple[float, np.ndarray, np.ndarray]:
    r"""The proven bound :math:`\mathrm{OT}_{p,q}(h + g)`, its plan and reduced costs.

    The plan is a vertex of the transport polytope (a coupling: an upper-bound
    candidate); the reduced costs (shifted to be :math:`\ge 0`) feed :func:`ascend`.
    """
    n, m = len(p), len(q)
    # sum_b h_a P_ab = h_a x_a sum(p): the outer cost is sum(p) h + g
    mass = float(p.sum())
    c = (mass * h + g).reshape(n, m)
    c_err = 2 * _gamma(len(p) + 3) * float(np.max(mass * np.abs(h) + np.abs(g)))
    plan, u, v = _emd_potentials(p, q, c)
    bound, red = _proven_value(p, q, u, v, c, c_err)
    return bound, plan, (red - min(0.0, float(red.min()))).ravel()


def ascend(
    state: AscentState, rows: RowBounds, outer_reduced: np.ndarray, theta: float = 1.0
) -> AscentState:
    r"""One Hahn-Grant step: the outer reduced costs :math:`\bar g` leave :math:`h` and
    are spread over the rows of :math:`Q` (:math:`\sum_b P_{ab} = x_a`), then each
    reduced cost is shared with its transposed entry (the symmetric part is kept, the
    antisymmetric difference goes into :math:`A`). Both keep every row's potentials
    feasible, so the next bound is at least this one up to the potentials' slack."""
    spread = rows.reduced + theta * outer_reduced[:, None]
    Q = (rows.Q - rows.reduced) + (spread + spread.T) / 2
    return AscentState(L=state.L, Q=Q, h=state.h - theta * outer_reduced)


def run_ascent(
    L: np.ndarray,
    p: np.ndarray,
    q: np.ndarray,
    *,
    max_iter: int,
    deadline: float,
    stop: Callable[[float], bool],
    on_iteration: Callable[[int, float], None] | None = None,
):
    """Iterate until ``max_iter``, ``deadline`` or ``stop(best_bound)``.

    Returns ``(best_bound, best_plan, iterations, reason, history)``; ``best_bound`` is
    ``-inf`` when not even the first iteration finished before the deadline.
    """
    state = initial_state(L)
    best, plan, history, reason = -math.inf, None, [], "max_iter"
    for it in range(max_iter):
        rows = row_bounds(state, p, q, deadline)
        if not rows.complete:
            reason = "time limit"
            break
        bound, vertex, outer_reduced = outer_bound(state.h, rows.g, p, q)
        history.append(bound)
        if bound > best:
            best, plan = bound, vertex
        if on_iteration is not None:
            on_iteration(it + 1, best)
        if stop(best):
            reason = "stopped"
            break
        state = ascend(state, rows, outer_reduced)
    return best, plan, len(history), reason, history
