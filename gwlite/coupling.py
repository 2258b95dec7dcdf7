r"""Couplings: their GW cost, their marginals, and rounding onto the transport polytope.

The GW cost of a coupling :math:`\pi` is

.. math::

    \mathcal{E}(\pi) = \sum_{ijkl} L(C^1_{ik}, C^2_{jl}) \, \pi_{ij} \pi_{kl},

computed without the :math:`n^2 m^2` tensor:

* square loss (Peyre, Cuturi & Solomon 2016, Prop. 1):
  :math:`\mathcal{E}(\pi) = a^\top (C^1)^{\circ 2} a + b^\top (C^2)^{\circ 2} b
  - 2 \langle C^1 \pi (C^2)^\top, \pi \rangle` with :math:`a = \pi 1, b = \pi^\top 1`:
  :math:`O(n^2 m + n m^2)`;
* absolute loss, by level sets: :math:`|x - y| = x + y - 2 \min(x, y)` and
  :math:`\min(x, y) = z_0 + \sum_t (z_{t+1} - z_t) 1[x > z_t] 1[y > z_t]` over the
  sorted distinct entries :math:`z_0 < z_1 < \dots` of both matrices, so each level
  costs one product of the square-loss kind: fast for graphs (adjacency: one level;
  shortest paths: diameter levels);
* a coupling with few non-zeros (a permutation, the sorted coupling) by gathering
  its support: :math:`O(s^2)` for :math:`s` non-zeros, :math:`O(n^2)` for a permutation.

References
----------
G. Peyre, M. Cuturi, J. Solomon. Gromov-Wasserstein averaging of kernel and distance
matrices. ICML 2016.
J. Altschuler, J. Weed, P. Rigollet. Near-linear time approximation algorithms for
optimal transport via Sinkhorn iteration. NeurIPS 2017.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from gwlite import _xp
from gwlite.errors import GWInputError
from gwlite.pointcloud import is_point_cloud
from gwlite.problem import (
    as_input_array,
    check_alpha,
    check_cost_matrix,
    check_loss,
    make_problem,
)

__all__ = [
    "SparseCoupling",
    "coupling_inner",
    "fgw_cost",
    "linear_cost",
    "gw_cost",
    "marginal_error",
    "round_to_polytope",
    "to_dense",
]

# entries of one gathered block; bounds the memory of the O(s^2) and O(n^2 m^2) paths
_CHUNK = 1 << 22
# beyond this many distinct entry values the level-set formula stops paying off
_MAX_LEVELS = 64


@dataclass(frozen=True)
class SparseCoupling:
    """A coupling stored by its non-zero entries.

    Attributes
    ----------
    rows, cols : numpy.ndarray of int64
        Host indices of the entries (no duplicates).
    values : array
        Entry masses in the problem's namespace (they may carry gradients).
    shape : tuple of int
        ``(n, m)``.
    """

    rows: np.ndarray
    cols: np.ndarray
    values: Any
    shape: tuple

    @property
    def nnz(self) -> int:
        return len(self.rows)

    def is_permutation(self) -> bool:
        n, m = self.shape
        return (
            n == m and self.nnz == n and len(np.unique(self.rows)) == n == len(np.unique(self.cols))
        )


def _index(xp, idx: np.ndarray, like):
    return xp.asarray(idx, device=_xp.device(like))


def to_dense(coupling, like=None):
    """Dense ``(n, m)`` array of a coupling, in the namespace of its values (or ``like``)."""
    if not isinstance(coupling, SparseCoupling):
        return coupling
    values = coupling.values
    name = _xp.backend_name(values)
    n, m = coupling.shape
    if name == "torch":
        import torch

        out = torch.zeros((n, m), dtype=values.dtype, device=values.device)
        rows = torch.as_tensor(coupling.rows, device=values.device)
        cols = torch.as_tensor(coupling.cols, device=values.device)
        return out.index_put((rows, cols), values, accumulate=True)
    if name == "cupy":
        import cupy
        import cupyx

        out = cupy.zeros((n, m), dtype=values.dtype)
        cupyx.scatter_add(out, (cupy.asarray(coupling.rows), cupy.asarray(coupling.cols)), values)
        return out
    out = np.zeros((n, m), dtype=values.dtype)
    np.add.at(out, (coupling.rows, coupling.cols), values)
    return out


def _marginals_host(coupling) -> tuple[np.ndarray, np.ndarray]:
    if isinstance(coupling, SparseCoupling):
        vals = _xp.to_numpy(coupling.values).astype(np.float64)
        n, m = coupling.shape
        return (
            np.bincount(coupling.rows, vals, minlength=n),
            np.bincount(coupling.cols, vals, minlength=m),
        )
    dense = _xp.to_numpy(coupling).astype(np.float64)
    return dense.sum(axis=1), dense.sum(axis=0)


def marginal_error(coupling, p, q) -> float:
    r"""``max(||pi 1 - p||_1, ||pi^T 1 - q||_1)`` (a Python float, computed on the host)."""
    a, b = _marginals_host(coupling)
    return float(
        max(
            np.abs(a - _xp.to_numpy(p).astype(np.float64)).sum(),
            np.abs(b - _xp.to_numpy(q).astype(np.float64)).sum(),
        )
    )


def round_to_polytope(F, p, q):
    r"""Round an approximate plan onto :math:`\Pi(p, q)` (Altschuler et al. 2017, Alg. 2).

    Scale rows down to at most ``p``, then columns down to at most ``q``, and add the
    rank-one correction :math:`e_r e_c^\top / \|e_r\|_1` built from the remaining
    deficits. The result is an exact coupling (up to round-off) within
    :math:`\ell_1` distance :math:`2(\|F1 - p\|_1 + \|F^\top 1 - q\|_1)` of ``F``.

    Parameters
    ----------
    F : array ``(n, m)``
        Non-negative approximate plan.
    p, q : array
        Target marginals.

    Returns
    -------
    array ``(n, m)``
    """
    xp = _xp.array_namespace(F, p, q)
    F = xp.where(F > 0, F, xp.zeros_like(F))
    row = xp.sum(F, axis=1)
    one = xp.ones_like(row)
    # only rows above their target are scaled, and those have row > p >= 0
    x = xp.where(row > p, p / xp.where(row > p, row, one), one)
    F = F * x[:, None]
    col = xp.sum(F, axis=0)
    one = xp.ones_like(col)
    y = xp.where(col > q, q / xp.where(col > q, col, one), one)
    F = F * y[None, :]
    # deficits are >= 0 in exact arithmetic; round-off (-1e-19) must not make the
    # rank-one correction, hence the plan, negative
    zero = xp.zeros_like(p)
    err_r = xp.maximum(p - xp.sum(F, axis=1), zero)
    err_c = xp.maximum(q - xp.sum(F, axis=0), xp.zeros_like(q))
    total = xp.sum(err_r)
    if _xp.as_float(total) <= 0:
        return F
    return F + err_r[:, None] * err_c[None, :] / total


def gw_cost(C1, C2, coupling, loss_fun: str = "square_loss", *, p=None, q=None, check=True):
    r"""The GW cost :math:`\sum_{ijkl} L(C^1_{ik}, C^2_{jl}) \pi_{ij}\pi_{kl}` of a coupling.

    Parameters
    ----------
    C1, C2 : array ``(n, n)``, ``(m, m)``, or :class:`gwlite.PointCloud`
        Point clouds are priced exactly without an ``n x n`` matrix (a float).
    coupling : array ``(n, m)``, SparseCoupling, or a SciPy sparse array (clouds)
        A coupling: non-negative, of total mass 1 (within round-off of its dtype).
    loss_fun : {"square_loss", "abs_loss"}
    p, q : array, optional
        When given, the coupling's marginals must also match them (within round-off).
    check : bool
        Validate the inputs (default). Solvers that price couplings they built
        themselves from validated inputs pass False: the checks read every entry.

    Returns
    -------
    0-d array
        In the namespace of the inputs (differentiable in torch).

    Raises
    ------
    GWInputError
        With ``check``: invalid matrices (as :func:`gwlite.gromov_wasserstein` refuses
        them), a coupling of the wrong shape, with negative or non-finite entries, or
        whose mass (or marginals) is off.

    Examples
    --------
    >>> import numpy as np, gwlite
    >>> C = np.array([[0., 1.], [1., 0.]])
    >>> float(gwlite.gw_cost(C, C, np.eye(2) / 2))  # the identity matching
    0.0
    >>> float(gwlite.gw_cost(C, C, np.full((2, 2), 0.25)))  # the product coupling
    0.5
    """
    if is_point_cloud(C1) or is_point_cloud(C2):
        from gwlite.pointcloud.dispatch import gw_cost_clouds

        return gw_cost_clouds(C1, C2, coupling, loss_fun, p, q, check)
    check_loss(loss_fun)
    if check:
        C1, C2, coupling = _checked_inputs(C1, C2, coupling, loss_fun, p, q)
    square = loss_fun == "square_loss"
    if _use_sparse(C1, C2, coupling):
        return _sparse_pair_sum(C1, C2, coupling, _square_diff if square else _abs_diff)
    coupling = to_dense(coupling)
    if square:
        return _dense_square_cost(C1, C2, coupling)
    return _dense_abs_cost(C1, C2, coupling)


def _checked_inputs(C1, C2, coupling, loss_fun, p, q):
    """Validated ``(C1, C2, coupling)`` of :func:`gw_cost`, cast to one dtype."""
    problem = make_problem(C1, C2, p, q, loss_fun)
    C1, C2, xp = problem.C1, problem.C2, problem.xp
    n, m = problem.n, problem.m
    if isinstance(coupling, SparseCoupling):
        values = xp.astype(_check_library(coupling.values, C1, "coupling values"), C1.dtype)
        rows, cols = np.asarray(coupling.rows), np.asarray(coupling.cols)
        if tuple(coupling.shape) != (n, m) or not (
            rows.ndim == 1 and rows.shape == cols.shape == tuple(values.shape)
        ):
            raise GWInputError(
                f"coupling has shape {tuple(coupling.shape)} with {rows.shape} rows, "
                f"{cols.shape} columns, {tuple(values.shape)} values; expected shape {(n, m)}"
            )
        if rows.size and (rows.min() < 0 or rows.max() >= n or cols.min() < 0 or cols.max() >= m):
            raise GWInputError(f"coupling has indices outside its shape {(n, m)}")
        coupling = SparseCoupling(rows, cols, values, (n, m))
        entries = values
    else:
        T = _check_library(as_input_array(coupling, "coupling"), C1, "coupling")
        if tuple(T.shape) != (n, m):
            raise GWInputError(
                f"coupling must have shape (n, m) = {(n, m)} for C1 {(n, n)} and C2 "
                f"{(m, m)}, got {tuple(T.shape)}"
            )
        coupling = entries = xp.astype(T, C1.dtype)
    plain = _xp.detach(entries)
    if not bool(xp.all(xp.isfinite(plain))):
        raise GWInputError("coupling has non-finite entries (NaN or Inf)")
    tol = max(1e-9, float(np.sqrt(_xp.eps(xp, C1.dtype))))
    # entries below -tol * (largest entry) are negative; above, they are round-off
    if float(xp.min(plain)) < -tol * max(float(xp.max(plain)), 0.0):
        raise GWInputError("coupling has negative entries; a coupling is non-negative")
    a, b = _marginals_host(coupling)
    mass = float(a.sum())
    if not abs(mass - 1) <= tol:
        raise GWInputError(
            f"coupling has total mass {mass:.6g}, not 1 (tolerance {tol:.1g}): it couples no "
            "pair of probability measures; normalise it or round it onto the polytope "
            "(round_to_polytope(coupling, p, q))"
        )
    if p is not None or q is not None:
        error = marginal_error(coupling, problem.p, problem.q)
        if not error <= tol:
            raise GWInputError(
                f"coupling's marginals are off p and q by {error:.3g} (l1, tolerance "
                f"{tol:.1g}); round it onto the polytope (round_to_polytope(coupling, p, q))"
            )
    return C1, C2, coupling


def _check_library(x, like, name: str):
    if _xp.backend_name(x) != _xp.backend_name(like):
        raise GWInputError(
            f"{name} is a {_xp.backend_name(x)} array but C1, C2 are "
            f"{_xp.backend_name(like)}; pass all of them in one array library"
        )
    return x


def coupling_inner(A, B, coupling):
    r""":math:`\sum_{ijkl} A_{ik} B_{jl} \pi_{ij} \pi_{kl}`, the bilinear form behind the costs."""
    if _use_sparse(A, B, coupling):
        return _sparse_pair_sum(A, B, coupling, _product)
    xp = _xp.array_namespace(A, B)
    T = to_dense(coupling)
    return xp.sum((A @ T @ xp.matrix_transpose(B)) * T)


def _square_diff(a, b):
    d = a - b
    return d * d


def _abs_diff(a, b):
    return abs(a - b)


def _product(a, b):
    return a * b


def _use_sparse(C1, C2, coupling) -> bool:
    """Gathering the support beats dense products when s^2 <= n m (n + m)."""
    if not isinstance(coupling, SparseCoupling):
        return False
    n, m = C1.shape[0], C2.shape[0]
    return coupling.nnz**2 <= n * m * (n + m)


def _sparse_pair_sum(C1, C2, coupling: SparseCoupling, pair):
    """``sum_{s, s'} w_s w_s' pair(C1[r_s, r_s'], C2[c_s, c_s'])``, in row blocks."""
    xp = _xp.array_namespace(C1, C2, coupling.values)
    w = coupling.values
    rows = _index(xp, coupling.rows, C1)
    cols = _index(xp, coupling.cols, C2)
    C1r = xp.take(C1, rows, axis=1)
    C2c = xp.take(C2, cols, axis=1)
    block = max(1, _CHUNK // max(1, coupling.nnz))
    total = xp.zeros((), dtype=C1.dtype, device=_xp.device(C1))
    for start in range(0, coupling.nnz, block):
        stop = min(start + block, coupling.nnz)
        a = xp.take(C1r, rows[start:stop], axis=0)
        b = xp.take(C2c, cols[start:stop], axis=0)
        total = total + xp.sum(w[start:stop] * (pair(a, b) @ w))
    return total


def _dense_square_cost(C1, C2, T):
    xp = _xp.array_namespace(C1, C2, T)
    a = xp.sum(T, axis=1)
    b = xp.sum(T, axis=0)
    const = a @ ((C1 * C1) @ a) + b @ ((C2 * C2) @ b)
    cross = xp.sum((C1 @ T @ xp.matrix_transpose(C2)) * T)
    return _nonnegative(xp, const - 2 * cross)


def _nonnegative(xp, total):
    """A sum of non-negative losses computed as a difference: round-off (-1e-16 on
    constant matrices) must not make it negative."""
    return xp.where(total < 0, xp.zeros_like(total), total)


def _dense_abs_cost(C1, C2, T):
    xp = _xp.array_namespace(C1, C2, T)
    if not any(_xp.requires_grad(x) for x in (C1, C2, T)):
        levels = xp.unique_values(xp.concat([xp.reshape(C1, (-1,)), xp.reshape(C2, (-1,))]))
        if levels.shape[0] <= _MAX_LEVELS:
            return _level_set_abs_cost(xp, C1, C2, T, levels)
    return _brute_abs_cost(xp, C1, C2, T)


def _level_set_abs_cost(xp, C1, C2, T, levels):
    a = xp.sum(T, axis=1)
    b = xp.sum(T, axis=0)
    mass = xp.sum(T)
    linear = a @ (C1 @ a) + b @ (C2 @ b)  # sum pi pi (C1_ik + C2_jl)
    levels = xp.sort(levels)
    min_part = levels[0] * mass * mass
    for t in range(levels.shape[0] - 1):
        A = xp.astype(C1 > levels[t], T.dtype)
        B = xp.astype(C2 > levels[t], T.dtype)
        min_part = min_part + (levels[t + 1] - levels[t]) * xp.sum(
            (A @ T @ xp.matrix_transpose(B)) * T
        )
    return _nonnegative(xp, linear - 2 * min_part)


def _brute_abs_cost(xp, C1, C2, T):
    """Direct O(n^2 m^2) sum in blocks of rows i (used with gradients or many levels)."""
    n, m = T.shape
    block = max(1, _CHUNK // (n * m * m))
    total = xp.zeros((), dtype=C1.dtype, device=_xp.device(C1))
    for start in range(0, n, block):
        stop = min(start + block, n)
        # d[i, j, k, l] = C1[i, k] - C2[j, l]
        d = C1[start:stop, None, :, None] - C2[None, :, None, :]
        inner = xp.sum(xp.sum(xp.abs(d) * T[None, None, :, :], axis=-1), axis=-1)
        total = total + xp.sum(inner * T[start:stop, :])
    return total


def linear_cost(M, coupling):
    r""":math:`\langle M, \pi \rangle = \sum_{ij} M_{ij} \pi_{ij}` (dense or sparse coupling)."""
    xp = _xp.array_namespace(M)
    if isinstance(coupling, SparseCoupling):
        rows, cols = _index(xp, coupling.rows, M), _index(xp, coupling.cols, M)
        return xp.sum(M[rows, cols] * coupling.values)
    return xp.sum(M * coupling)


def fgw_cost(
    M,
    C1,
    C2,
    coupling,
    alpha: float = 0.5,
    loss_fun: str = "square_loss",
    *,
    p=None,
    q=None,
    check=True,
):
    r"""The fused GW cost of a coupling, in POT's convention (``fused_gromov_wasserstein2``).

    .. math::

        \mathcal{F}_\alpha(\pi) = (1 - \alpha) \langle M, \pi \rangle
        + \alpha \sum_{ijkl} L(C^1_{ik}, C^2_{jl}) \, \pi_{ij} \pi_{kl}

    (Vayer et al. 2019); the structure term is :func:`gw_cost`.

    Parameters
    ----------
    M : array ``(n, m)``
        Feature cost, finite and non-negative (e.g. :func:`gwlite.feature_cost`).
    C1, C2, coupling, loss_fun, p, q, check
        As in :func:`gw_cost`.
    alpha : float in [0, 1]
        Weight of the structure term (0: linear OT on ``M``, 1: GW).

    Examples
    --------
    >>> import numpy as np, gwlite
    >>> C = np.array([[0., 1.], [1., 0.]])
    >>> M = np.array([[0., 4.], [4., 0.]])
    >>> float(gwlite.fgw_cost(M, C, C, np.full((2, 2), 0.25), alpha=0.5))  # 0.5 * 2 + 0.5 * 0.5
    1.25
    """
    alpha = check_alpha(alpha)
    check_loss(loss_fun)
    if check:
        C1, C2, coupling = _checked_inputs(C1, C2, coupling, loss_fun, p, q)
        M = check_cost_matrix(M, make_problem(C1, C2, None, None, loss_fun, check_entries=False))
    structure = gw_cost(C1, C2, coupling, loss_fun, check=False) if alpha > 0 else 0.0
    features = linear_cost(M, coupling) if alpha < 1 else 0.0
    return (1 - alpha) * features + alpha * structure
