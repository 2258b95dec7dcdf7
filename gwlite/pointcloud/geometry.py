r"""Distances, row statistics and exact GW costs of point clouds, never ``n x n``.

Notation: :math:`C^1_{ik} = d_1(x_i, x_k)`, :math:`C^2_{jl} = d_2(y_j, y_l)`, a coupling
:math:`\pi` with marginals :math:`a = \pi 1`, :math:`b = \pi^\top 1`. The square-loss
cost splits as

.. math::

    \mathcal{E}(\pi) = a^\top (C^1)^{\circ 2} a + b^\top (C^2)^{\circ 2} b
    - 2 \sum_{ijkl} C^1_{ik} C^2_{jl} \pi_{ij} \pi_{kl}

(Peyre, Cuturi & Solomon 2016, Prop. 1). The first two terms are closed forms in
:math:`O(n d^2)` for both metrics (moments of the coordinates, see
:func:`pair_moments`). The cross term is exact in :math:`O(s d^2)` for ``sqeuclidean``
on both sides, where :math:`C = A B^\top` with :math:`A = [|x|^2, 1, x]`,
:math:`B = [1, |x|^2, -2x]` (rank :math:`d + 2`):
:math:`\sum C^1_{ik} C^2_{jl} \pi_{ij}\pi_{kl} = \langle A_1^\top \pi A_2,
B_1^\top \pi B_2 \rangle_F`. Otherwise it is summed over the :math:`s^2` pairs of the
coupling's support, in blocks of at most ``chunk_entries`` distances.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
from scipy.spatial.distance import cdist

from gwlite.pointcloud._cloud import PointCloud

__all__ = [
    "distances",
    "factored_cross",
    "factors",
    "gw_cost_lowrank",
    "gw_cost_sparse",
    "mean_row_features",
    "pair_moments",
    "product_cost",
    "row_blocks",
    "squared_eccentricities",
]


def distances(A: np.ndarray, B: np.ndarray, metric: str) -> np.ndarray:
    """The block ``d(A_i, B_k)`` (SciPy's ``cdist``: by differences, no cancellation)."""
    return cdist(A, B, metric)


def row_blocks(n_rows: int, n_cols: int, chunk: int) -> Iterator[slice]:
    """Slices of rows such that a block ``rows x n_cols`` has at most ``chunk`` entries."""
    step = max(1, chunk // max(n_cols, 1))
    for start in range(0, n_rows, step):
        yield slice(start, min(start + step, n_rows))


def pair_moments(V: np.ndarray, a: np.ndarray, power: int) -> np.ndarray:
    r"""Rows :math:`\sum_k a_k |v_i - v_k|^{2t}` for ``power`` :math:`2t \in \{2, 4\}`, in
    :math:`O(n d^2)`.

    With :math:`v` centred so that :math:`\sum_k a_k v_k = 0`, :math:`\alpha = \sum a_k`,
    :math:`m_2 = \sum a_k |v_k|^2`, :math:`m_4 = \sum a_k |v_k|^4`,
    :math:`S = \sum a_k v_k v_k^\top`, :math:`t = \sum a_k |v_k|^2 v_k`, expanding
    :math:`|u - v|^2 = |u|^2 + |v|^2 - 2 u^\top v` gives

    .. math::

        \sum_k a_k |u - v_k|^2 = \alpha |u|^2 + m_2, \qquad
        \sum_k a_k |u - v_k|^4 = \alpha |u|^4 + m_4 + 4 u^\top S u + 2 |u|^2 m_2
        - 4 u^\top t.

    Parameters
    ----------
    V : array ``(n, d)``
        Points, centred by ``a``'s weighted mean.
    a : array ``(n,)``
        Non-negative masses.
    power : {2, 4}
    """
    sq = np.einsum("ij,ij->i", V, V)
    alpha, m2 = float(a.sum()), float(a @ sq)
    if power == 2:
        return alpha * sq + m2
    S = (V * a[:, None]).T @ V
    t = (a * sq) @ V
    quad = np.einsum("ij,jk,ik->i", V, S, V)
    return alpha * sq * sq + float(a @ (sq * sq)) + 4 * quad + 2 * sq * m2 - 4 * (V @ t)


def _centred(X: np.ndarray, a: np.ndarray) -> np.ndarray:
    total = a.sum()
    return X - (a @ X) / (total if total > 0 else 1.0)


def mean_row_features(cloud: PointCloud) -> np.ndarray:
    r""":math:`s(i) = \sum_k p_k d(x_i, x_k)`: closed form :math:`O(nd)` for ``sqeuclidean``,
    streamed :math:`O(n^2 d)` in blocks for ``euclidean``."""
    if cloud.metric == "sqeuclidean":
        return pair_moments(_centred(cloud.X, cloud.p), cloud.p, 2)
    out = np.empty(cloud.n)
    for rows in row_blocks(cloud.n, cloud.n, cloud.chunk_entries):
        out[rows] = distances(cloud.X[rows], cloud.X, "euclidean") @ cloud.p
    return out


def squared_eccentricities(cloud: PointCloud) -> np.ndarray:
    r""":math:`e(i)^2 = \sum_k p_k d(x_i, x_k)^2`, closed form :math:`O(n d^2)` for both
    metrics (:func:`pair_moments`)."""
    power = 2 if cloud.metric == "euclidean" else 4
    return pair_moments(_centred(cloud.X, cloud.p), cloud.p, power)


def _self_term(cloud: PointCloud, a: np.ndarray) -> float:
    r""":math:`a^\top C^{\circ 2} a = \sum_{ik} a_i a_k d(x_i, x_k)^2` in closed form."""
    power = 2 if cloud.metric == "euclidean" else 4
    return float(a @ pair_moments(_centred(cloud.X, a), a, power))


def product_cost(c1: PointCloud, c2: PointCloud) -> float:
    r"""Square-loss GW cost of the product coupling :math:`p q^\top` in closed form:
    :math:`p^\top (C^1)^{\circ 2} p + q^\top (C^2)^{\circ 2} q - 2 (p^\top C^1 p)(q^\top C^2 q)`,
    the scale a plan's cost is judged against (an upper bound on GW)."""
    first = [float(c.p @ mean_row_features(c)) for c in (c1, c2)]
    return max(0.0, _self_term(c1, c1.p) + _self_term(c2, c2.p) - 2 * first[0] * first[1])


def factors(cloud: PointCloud) -> tuple[np.ndarray, np.ndarray]:
    r"""``(A, B)`` with :math:`|x_i - x_k|^2 = (A B^\top)_{ik}` on centred coordinates:
    :math:`A = [|x|^2, 1, x]`, :math:`B = [1, |x|^2, -2x]`, each ``(n, d + 2)``."""
    V = cloud.centered()
    sq = np.einsum("ij,ij->i", V, V)[:, None]
    one = np.ones_like(sq)
    return np.hstack([sq, one, V]), np.hstack([one, sq, -2 * V])


def gw_cost_lowrank(c1: PointCloud, c2: PointCloud, L: np.ndarray, R: np.ndarray) -> float:
    r"""The exact square-loss GW cost of the low-rank plan :math:`\pi = L R^\top`, two
    ``sqeuclidean`` clouds, in :math:`O((n + m) r d^2)`: the formula of
    :func:`gw_cost_sparse` with :math:`A_1^\top \pi A_2 = (A_1^\top L)(R^\top A_2)`.
    Its marginals are those of the plan (``L R^T 1`` and ``R L^T 1``), not ``p, q``."""
    if not c1.metric == c2.metric == "sqeuclidean":
        raise ValueError("low-rank plans are priced for two sqeuclidean clouds")
    (A1, B1), (A2, B2) = factors(c1), factors(c2)
    a, b = L @ R.sum(axis=0), R @ L.sum(axis=0)
    left = (A1.T @ L) @ (R.T @ A2)
    right = (B1.T @ L) @ (R.T @ B2)
    return max(0.0, _self_term(c1, a) + _self_term(c2, b) - 2 * float(np.sum(left * right)))


def factored_cross(F1, F2, rows, cols, w) -> float:
    r""":math:`\sum C^1_{ik} C^2_{jl} \pi_{ij}\pi_{kl} = \langle A_1^\top \pi A_2,
    B_1^\top \pi B_2\rangle_F` for ``sqeuclidean`` clouds with factors ``F = (A, B)``."""
    (A1, B1), (A2, B2) = F1, F2
    left = (A1[rows] * w[:, None]).T @ A2[cols]
    right = (B1[rows] * w[:, None]).T @ B2[cols]
    return float(np.sum(left * right))


def _streamed_pairs(c1: PointCloud, c2: PointCloud, rows, cols, w, square: bool) -> float:
    r"""``sum_{e,f} w_e w_f g(C1[r_e, r_f], C2[c_e, c_f])`` over the support, in blocks;
    ``g = a * b`` (``square``, the cross term) or ``|a - b|``."""
    chunk = min(c1.chunk_entries, c2.chunk_entries)
    X1, X2 = c1.X[rows], c2.X[cols]
    total = 0.0
    for block in row_blocks(len(w), len(w), chunk):
        D1 = distances(X1[block], X1, c1.metric)
        D2 = distances(X2[block], X2, c2.metric)
        pair = D1 * D2 if square else np.abs(D1 - D2)
        total += float(w[block] @ (pair @ w))
    return total


def gw_cost_sparse(c1: PointCloud, c2: PointCloud, rows, cols, w, loss_fun: str) -> float:
    r"""The exact GW cost of the coupling with entries ``w`` at ``(rows, cols)``.

    Never sampled: closed forms and :func:`factored_cross` where they apply, else sums over
    all pairs of the support in blocks of ``chunk_entries`` distances. Clamped at 0 (the
    square-loss expansion can round a zero cost to ``-1e-17``).
    """
    rows, cols, w = np.asarray(rows), np.asarray(cols), np.asarray(w, dtype=np.float64)
    if loss_fun == "abs_loss":
        return max(0.0, _streamed_pairs(c1, c2, rows, cols, w, square=False))
    a = np.bincount(rows, w, minlength=c1.n)
    b = np.bincount(cols, w, minlength=c2.n)
    if c1.metric == c2.metric == "sqeuclidean":
        cross = factored_cross(factors(c1), factors(c2), rows, cols, w)
    else:
        cross = _streamed_pairs(c1, c2, rows, cols, w, square=True)
    return max(0.0, _self_term(c1, a) + _self_term(c2, b) - 2 * cross)
