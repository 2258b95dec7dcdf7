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

**Devices.** Every function takes the cloud's arrays in their own library (NumPy, torch,
CuPy: one code path through the array API, ``xp = cloud.xp``) and computes on their
device in float64; what comes back is a Python float or an array of length ``n`` on that
device. NumPy blocks use SciPy's ``cdist`` (a C loop over differences); the other
libraries take the same differences coordinate by coordinate
(:func:`distances`), never the cancelling :math:`|x|^2 + |y|^2 - 2x^\top y`.
Chunked array code rather than KeOps (``pykeops``): KeOps compiles its reductions
with a CUDA/C++ toolchain at first use, which is not available on every machine this
library runs on, while the blocks here are plain matrix products of bounded size that
every array library runs at full speed.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
from scipy.spatial.distance import cdist

from gwlite import _xp
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


def distances(A, B, metric: str):
    """The block ``d(A_i, B_k)``, computed from differences (no cancellation), in ``A``'s
    library and on its device: SciPy's ``cdist`` for NumPy, else a sum over coordinates
    of :math:`(A_{ij} - B_{kj})^2` (memory: the block, never ``block x d``)."""
    if isinstance(A, np.ndarray):
        return cdist(A, B, metric)
    xp = _xp.array_namespace(A, B)
    D = xp.zeros((A.shape[0], B.shape[0]), dtype=A.dtype, device=_xp.device(A))
    for j in range(A.shape[1]):
        diff = A[:, j : j + 1] - B[:, j][None, :]
        D += diff * diff
    return D if metric == "sqeuclidean" else xp.sqrt(D)


def row_blocks(n_rows: int, n_cols: int, chunk: int) -> Iterator[slice]:
    """Slices of rows such that a block ``rows x n_cols`` has at most ``chunk`` entries."""
    step = max(1, chunk // max(n_cols, 1))
    for start in range(0, n_rows, step):
        yield slice(start, min(start + step, n_rows))


def _sqnorms(V):
    xp = _xp.array_namespace(V)
    return xp.sum(V * V, axis=1)


def pair_moments(V, a, power: int):
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
        Points, centred by ``a``'s weighted mean (any array library).
    a : array ``(n,)``
        Non-negative masses, same library and device.
    power : {2, 4}
    """
    xp = _xp.array_namespace(V, a)
    sq = _sqnorms(V)
    alpha, m2 = xp.sum(a), a @ sq
    if power == 2:
        return alpha * sq + m2
    S = (V * a[:, None]).T @ V
    t = (a * sq) @ V
    quad = xp.sum((V @ S) * V, axis=1)
    return alpha * sq * sq + a @ (sq * sq) + 4 * quad + 2 * sq * m2 - 4 * (V @ t)


def _centred(X, a):
    xp = _xp.array_namespace(X, a)
    total = float(xp.sum(a))
    return X - (a @ X) / (total if total > 0 else 1.0)


def mean_row_features(cloud: PointCloud):
    r""":math:`s(i) = \sum_k p_k d(x_i, x_k)`: closed form :math:`O(nd)` for ``sqeuclidean``,
    streamed :math:`O(n^2 d)` in blocks for ``euclidean``; on the cloud's device."""
    if cloud.metric == "sqeuclidean":
        return pair_moments(_centred(cloud.X, cloud.p), cloud.p, 2)
    parts = [
        distances(cloud.X[rows], cloud.X, "euclidean") @ cloud.p
        for rows in row_blocks(cloud.n, cloud.n, cloud.chunk_entries)
    ]
    return cloud.xp.concat(parts)


def squared_eccentricities(cloud: PointCloud):
    r""":math:`e(i)^2 = \sum_k p_k d(x_i, x_k)^2`, closed form :math:`O(n d^2)` for both
    metrics (:func:`pair_moments`)."""
    power = 2 if cloud.metric == "euclidean" else 4
    return pair_moments(_centred(cloud.X, cloud.p), cloud.p, power)


def _self_term(X, a, metric: str) -> float:
    r""":math:`\sum_{ik} a_i a_k d(x_i, x_k)^2` in closed form (repeated points allowed:
    the points of a coupling's support with its entries as masses give
    :math:`a^\top C^{\circ 2} a` for the coupling's marginal :math:`a`)."""
    power = 2 if metric == "euclidean" else 4
    return float(a @ pair_moments(_centred(X, a), a, power))


def product_cost(c1: PointCloud, c2: PointCloud) -> float:
    r"""Square-loss GW cost of the product coupling :math:`p q^\top` in closed form:
    :math:`p^\top (C^1)^{\circ 2} p + q^\top (C^2)^{\circ 2} q - 2 (p^\top C^1 p)(q^\top C^2 q)`,
    the scale a plan's cost is judged against (an upper bound on GW)."""
    first = [float(c.p @ mean_row_features(c)) for c in (c1, c2)]
    own = _self_term(c1.X, c1.p, c1.metric) + _self_term(c2.X, c2.p, c2.metric)
    return max(0.0, own - 2 * first[0] * first[1])


def factors(cloud: PointCloud):
    r"""``(A, B)`` with :math:`|x_i - x_k|^2 = (A B^\top)_{ik}` on centred coordinates:
    :math:`A = [|x|^2, 1, x]`, :math:`B = [1, |x|^2, -2x]`, each ``(n, d + 2)``, on the
    cloud's device."""
    xp = cloud.xp
    V = cloud.centered()
    sq = _sqnorms(V)[:, None]
    one = xp.ones_like(sq)
    return xp.concat([sq, one, V], axis=1), xp.concat([one, sq, -2 * V], axis=1)


def gw_cost_lowrank(c1: PointCloud, c2: PointCloud, L, R) -> float:
    r"""The exact square-loss GW cost of the low-rank plan :math:`\pi = L R^\top`, two
    ``sqeuclidean`` clouds, in :math:`O((n + m) r d^2)`: the formula of
    :func:`gw_cost_sparse` with :math:`A_1^\top \pi A_2 = (A_1^\top L)(R^\top A_2)`.
    Its marginals are those of the plan (``L R^T 1`` and ``R L^T 1``), not ``p, q``."""
    if not c1.metric == c2.metric == "sqeuclidean":
        raise ValueError("low-rank plans are priced for two sqeuclidean clouds")
    xp = c1.xp
    L, R = _on(c1, L), _on(c1, R)
    (A1, B1), (A2, B2) = factors(c1), factors(c2)
    a, b = L @ xp.sum(R, axis=0), R @ xp.sum(L, axis=0)
    left = (A1.T @ L) @ (R.T @ A2)
    right = (B1.T @ L) @ (R.T @ B2)
    own = _self_term(c1.X, a, c1.metric) + _self_term(c2.X, b, c2.metric)
    return max(0.0, own - 2 * float(xp.sum(left * right)))


def factored_cross(F1, F2, rows, cols, w) -> float:
    r""":math:`\sum C^1_{ik} C^2_{jl} \pi_{ij}\pi_{kl} = \langle A_1^\top \pi A_2,
    B_1^\top \pi B_2\rangle_F` for ``sqeuclidean`` clouds with factors ``F = (A, B)``
    (all arrays in one library, on one device)."""
    (A1, B1), (A2, B2) = F1, F2
    xp = _xp.array_namespace(A1, w)
    left = (xp.take(A1, rows, axis=0) * w[:, None]).T @ xp.take(A2, cols, axis=0)
    right = (xp.take(B1, rows, axis=0) * w[:, None]).T @ xp.take(B2, cols, axis=0)
    return float(xp.sum(left * right))


def _streamed_pairs(c1: PointCloud, c2: PointCloud, rows, cols, w, square: bool) -> float:
    r"""``sum_{e,f} w_e w_f g(C1[r_e, r_f], C2[c_e, c_f])`` over the support, in blocks;
    ``g = a * b`` (``square``, the cross term) or ``|a - b|``."""
    xp = c1.xp
    chunk = min(c1.chunk_entries, c2.chunk_entries)
    X1, X2 = xp.take(c1.X, rows, axis=0), xp.take(c2.X, cols, axis=0)
    total = 0.0
    for block in row_blocks(w.shape[0], w.shape[0], chunk):
        D1 = distances(X1[block], X1, c1.metric)
        D2 = distances(X2[block], X2, c2.metric)
        pair = D1 * D2 if square else xp.abs(D1 - D2)
        total += float(w[block] @ (pair @ w))
    return total


def _on(cloud: PointCloud, x, dtype=None):
    """``x`` (any library) as an array of ``cloud``'s library on its device: only vectors
    and thin matrices cross."""
    xp = cloud.xp
    if _xp.backend_name(x) != cloud.backend:
        x = _xp.to_numpy(x)
    return xp.asarray(x, dtype=dtype or xp.float64, device=_xp.device(cloud.X))


def gw_cost_sparse(c1: PointCloud, c2: PointCloud, rows, cols, w, loss_fun: str) -> float:
    r"""The exact GW cost of the coupling with entries ``w`` at ``(rows, cols)``.

    Never sampled: closed forms and :func:`factored_cross` where they apply, else sums over
    all pairs of the support in blocks of ``chunk_entries`` distances. Clamped at 0 (the
    square-loss expansion can round a zero cost to ``-1e-17``). ``rows, cols, w`` may
    live in any library: they are moved to the clouds' device (length ``s``).
    """
    xp = c1.xp
    rows, cols = _on(c1, rows, xp.int64), _on(c1, cols, xp.int64)
    w = _on(c1, w)
    if loss_fun == "abs_loss":
        return max(0.0, _streamed_pairs(c1, c2, rows, cols, w, square=False))
    # the marginals' self terms over the support points, weighted by the entries
    own = _self_term(xp.take(c1.X, rows, axis=0), w, c1.metric)
    own += _self_term(xp.take(c2.X, cols, axis=0), w, c2.metric)
    if c1.metric == c2.metric == "sqeuclidean":
        cross = factored_cross(factors(c1), factors(c2), rows, cols, w)
    else:
        cross = _streamed_pairs(c1, c2, rows, cols, w, square=True)
    return max(0.0, own - 2 * cross)
