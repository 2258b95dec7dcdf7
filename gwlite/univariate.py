r"""One-dimensional optimal transport by sorting.

In one dimension, for a convex cost :math:`|x - y|^r` (:math:`r \ge 1`), the
monotone (north-west corner) coupling of the sorted supports is optimal, so

.. math::

    W_r^r(\mu, \nu) = \int_0^1 |F_\mu^{-1}(t) - F_\nu^{-1}(t)|^r \, dt,

with :math:`F^{-1}` the quantile functions (Santambrogio 2015, Thm 2.9 and Prop. 2.17).
For equal sizes and uniform weights this is ``mean(|sort(u) - sort(v)|^r)``; otherwise
the quantile functions are piecewise constant between the merged cumulative weights
of both measures, which gives at most ``n + m - 1`` pieces.

This module is the single implementation of 1-D OT in the project: the sorted GW
bounds, the Memoli lower bounds and the fusion GLD loss all call it.

References
----------
F. Santambrogio. *Optimal Transport for Applied Mathematicians*. Birkhauser, 2015.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from gwlite import _xp
from gwlite.coupling import SparseCoupling
from gwlite.errors import GWInputError
from gwlite.problem import as_input_array, check_weights

__all__ = ["wasserstein_1d", "monotone_coupling", "quantile_merge"]

# weight sums are checked to float32 precision (sqrt of its machine epsilon)
_WEIGHT_TOL = float(np.sqrt(np.finfo(np.float32).eps))


def _power(xp, d, r: float):
    """``|d|^r`` with the cheap forms for r = 1, 2 (and a zero gradient at d = 0 for r = 1)."""
    if r == 1:
        return xp.abs(d)
    if r == 2:
        return d * d
    return xp.abs(d) ** r


def quantile_merge(xp, cu, cv):
    r"""Merge two cumulative-weight vectors into the pieces of the quantile coupling.

    Parameters
    ----------
    cu, cv : array, shapes ``(..., n)`` and ``(..., m)``
        Non-decreasing cumulative sums of the (sorted) weights of each measure.

    Returns
    -------
    levels : array ``(..., n + m)``
        Sorted union of the cumulative weights: the right ends :math:`t_k` of the pieces.
    idx_u, idx_v : integer arrays ``(..., n + m)``
        On the piece :math:`(t_{k-1}, t_k]` the quantile functions take the values
        ``u_sorted[idx_u[k]]`` and ``v_sorted[idx_v[k]]``.

    Notes
    -----
    ``idx_u[k] = #{i : cu_i < t_k}`` (the first index whose cumulative weight reaches
    :math:`t_k`). A stable sort that places ``cu`` before ``cv`` among ties makes the
    exclusive running count of ``cu`` entries equal to this number at the first
    position of every group of tied levels; the other tied positions have zero
    length and do not contribute.
    """
    n = cu.shape[-1]
    m = cv.shape[-1]
    merged = xp.concat([cu, cv], axis=-1)
    order = xp.argsort(merged, axis=-1, stable=True)
    levels = xp.take_along_axis(merged, order, axis=-1)
    from_u = xp.astype(order < n, xp.int64)
    idx_u = xp.cumulative_sum(from_u, axis=-1) - from_u
    idx_v = xp.cumulative_sum(1 - from_u, axis=-1) - (1 - from_u)
    # round-off can leave the last cumulative weight a hair below the other's
    idx_u = xp.clip(idx_u, 0, n - 1)
    idx_v = xp.clip(idx_v, 0, m - 1)
    return levels, idx_u, idx_v


def _lengths(xp, levels):
    zero = xp.zeros(levels.shape[:-1] + (1,), dtype=levels.dtype, device=_xp.device(levels))
    return xp.diff(levels, axis=-1, prepend=zero)


def wasserstein_1d(
    u_values, v_values, u_weights=None, v_weights=None, p: float = 1, *, check: bool = True
):
    r"""Power ``p`` of the ``p``-Wasserstein distance between 1-D weighted samples.

    .. math::

        W_p^p(\mu, \nu) = \min_{\pi \in \Pi(a, b)} \sum_{ij} |u_i - v_j|^p \pi_{ij},
        \qquad \mu = \sum_i a_i \delta_{u_i}, \ \nu = \sum_j b_j \delta_{v_j}.

    Computed along the last axis, so leading dimensions are batch dimensions. Cost
    ``O((n + m) log(n + m))``; differentiable in torch with respect to values and weights.

    Parameters
    ----------
    u_values, v_values : array, shapes ``(..., n)`` and ``(..., m)``
        Samples (any order), real and finite.
    u_weights, v_weights : array, optional
        Non-negative weights summing to 1 along the last axis (within ``3.5e-4``, the
        precision of float32 sums); uniform when omitted. A row of zero total mass is an
        empty measure: nothing to transport, the result there is 0.
    p : float
        Exponent, ``p >= 1``.
    check : bool
        Validate the inputs (default). The checks cost O(n) after the O(n log n) sort;
        callers that validated their inputs already may pass False.

    Returns
    -------
    array of shape ``(...)``
        :math:`W_p^p` (no root, as ``ot.wasserstein_1d``).

    Raises
    ------
    GWInputError
        With ``check``: empty or complex samples, NaN or Inf (also when the differences
        overflow), weights of the wrong length, negative, or summing neither to 1 nor to
        0; ``p < 1``.

    Examples
    --------
    >>> import numpy as np, gwlite
    >>> float(gwlite.wasserstein_1d(np.array([0., 1.]), np.array([1., 2.]), p=2))
    1.0
    """
    if isinstance(p, bool) or not isinstance(p, (int, float, np.integer, np.floating)):
        raise GWInputError(f"p must be a number >= 1, got {p!r}")
    if not p >= 1 or not np.isfinite(p):
        raise GWInputError(f"p must be a finite number >= 1 for a convex 1-D cost, got {p}")
    if check:
        u_values, v_values, u_weights, v_weights = _checked_1d(
            u_values, v_values, u_weights, v_weights
        )
    # overflow (huge samples) is detected on the result below, without NumPy's warning
    with np.errstate(over="ignore", invalid="ignore"):
        out = _w1d(u_values, v_values, u_weights, v_weights, p)
    xp = _xp.array_namespace(out)
    if check and not bool(xp.all(xp.isfinite(_xp.detach(out)))):
        # NaN and Inf in the samples always reach the result: one test covers both
        for values, name in ((u_values, "u_values"), (v_values, "v_values")):
            if not bool(xp.all(xp.isfinite(_xp.detach(values)))):
                raise GWInputError(f"{name} has non-finite entries (NaN or Inf)")
        raise GWInputError(
            f"the samples are too large: |u - v|^{p} overflows {u_values.dtype}; rescale "
            f"both (W_p^p(s u, s v) = s^p W_p^p(u, v))"
        )
    if check and (u_weights is not None or v_weights is not None):
        # after the check: NaN and Inf are refused even where they carry no mass.
        # An empty measure (zero mass) has nothing to transport: its distance is 0
        empty = None
        for w in (u_weights, v_weights):
            if w is not None:
                none = xp.sum(_xp.detach(w), axis=-1) == 0
                empty = none if empty is None else empty | none
        out = xp.where(empty, xp.zeros_like(out), out)
    return out


def _w1d(u_values, v_values, u_weights, v_weights, p):
    """W_p^p by sorting, without checks."""
    xp = _xp.array_namespace(u_values, v_values, u_weights, v_weights)
    n, m = u_values.shape[-1], v_values.shape[-1]
    if u_weights is None and v_weights is None and n == m:
        # equal masses: the i-th smallest goes to the i-th smallest
        d = xp.sort(u_values, axis=-1) - xp.sort(v_values, axis=-1)
        return xp.mean(_power(xp, d, p), axis=-1)
    u_weights = _uniform_like(xp, u_values) if u_weights is None else u_weights
    v_weights = _uniform_like(xp, v_values) if v_weights is None else v_weights
    us, uw = _sort_with_weights(xp, u_values, u_weights)
    vs, vw = _sort_with_weights(xp, v_values, v_weights)
    levels, iu, iv = quantile_merge(
        xp, xp.cumulative_sum(uw, axis=-1), xp.cumulative_sum(vw, axis=-1)
    )
    d = xp.take_along_axis(us, iu, axis=-1) - xp.take_along_axis(vs, iv, axis=-1)
    return xp.sum(_lengths(xp, levels) * _power(xp, d, p), axis=-1)


def _checked_1d(u_values, v_values, u_weights, v_weights):
    u_values = as_input_array(u_values, "u_values")
    v_values = as_input_array(v_values, "v_values")
    u_weights = as_input_array(u_weights, "u_weights", required=False)
    v_weights = as_input_array(v_weights, "v_weights", required=False)
    xp = _xp.array_namespace(u_values, v_values, u_weights, v_weights)
    out = []
    for values, name in ((u_values, "u_values"), (v_values, "v_values")):
        if values.ndim < 1 or values.shape[-1] == 0:
            raise GWInputError(f"{name} must have at least one sample, got shape {values.shape}")
        out.append(xp.astype(values, _xp.compute_dtype(xp, values.dtype), copy=False))
    u_values, v_values = out
    dtype = xp.result_type(u_values.dtype, v_values.dtype)
    u_values, v_values = (xp.astype(x, dtype, copy=False) for x in (u_values, v_values))
    weights = []
    for w, values, name in ((u_weights, u_values, "u_weights"), (v_weights, v_values, "v_weights")):
        if w is None:
            weights.append(None)
            continue
        batch = tuple(w.shape[:-1]) if w.ndim > 1 else ()
        if w.ndim > 1 and tuple(values.shape[:-1]) != batch:
            raise GWInputError(
                f"{name} has shape {tuple(w.shape)}, its samples {tuple(values.shape)}"
            )
        # rows of zero mass (an empty measure, W = 0) are accepted, and sums are judged to
        # float32 precision: callers build weights in low precision and mask empty rows
        weights.append(
            check_weights(
                xp, w, values.shape[-1], batch, name, dtype, tol=_WEIGHT_TOL, empty_ok=True
            )
        )
    return u_values, v_values, weights[0], weights[1]


def _uniform_like(xp, values):
    n = values.shape[-1]
    return xp.ones(values.shape, dtype=values.dtype, device=_xp.device(values)) / n


def _sort_with_weights(xp, values, weights):
    order = xp.argsort(values, axis=-1, stable=True)
    weights = xp.broadcast_to(weights, values.shape)
    return (
        xp.take_along_axis(values, order, axis=-1),
        xp.take_along_axis(weights, order, axis=-1),
    )


def _refined_groups(keys: list[np.ndarray], tols: list[float]) -> tuple[np.ndarray, np.ndarray]:
    """Lexicographic order of the nodes by ``keys`` and their tie groups.

    The first key orders the nodes; values within its tolerance of their neighbour
    form a group. Each further key re-orders the nodes inside every group and splits
    it where consecutive values differ by more than that key's tolerance.
    """
    n = len(keys[0])
    order = np.arange(n)
    group = np.zeros(n, dtype=np.int64)
    for key, tol in zip(keys, tols):
        idx = np.lexsort((key[order], group))  # last key is primary: stay inside groups
        order, group = order[idx], group[idx]
        vals = key[order]
        splits = (group[1:] != group[:-1]) | (np.diff(vals) > tol)
        group = np.concatenate([[0], np.cumsum(splits)])
    return order, group


def monotone_coupling(
    u_values,
    v_values,
    u_weights=None,
    v_weights=None,
    *,
    tie_tol: float = 0.0,
    tie_break: tuple = (),
) -> SparseCoupling:
    r"""The monotone (comonotone) coupling of two weighted 1-D samples, label-free.

    It is an optimal coupling for every convex cost :math:`|x - y|^r`. Samples whose
    values lie within ``tie_tol`` of each other form a tie group. Optional secondary
    keys order the nodes inside a tie group (lexicographically, each with its own
    tolerance); nodes still tied after the last key share their mass:

    .. math::

        \pi_{ij} = \gamma_{g(i) h(j)} \frac{a_i}{A_{g(i)}} \frac{b_j}{B_{h(j)}},

    where :math:`\gamma` is the north-west-corner coupling between the ordered group
    masses :math:`A_g, B_h`. Refining inside tie groups keeps the coupling monotone in
    the values, hence optimal for the 1-D problem; spreading over the remaining ties
    keeps it independent of how nodes are labelled (a permutation of the nodes
    permutes the coupling), as long as the keys themselves are label-free.

    Parameters
    ----------
    u_values, v_values : array, shapes ``(n,)`` and ``(m,)``
    u_weights, v_weights : array, optional
        Weights summing to 1; uniform when omitted.
    tie_tol : float
        Values closer than this count as equal.
    tie_break : sequence of (u_key, v_key, tol)
        Secondary keys (host or device arrays of shapes ``(n,)``, ``(m,)``) with their
        tolerance, applied in order inside tie groups.

    Returns
    -------
    SparseCoupling
        Entries in the original node order; the index bookkeeping is done on the host
        with NumPy, the entry values are computed in the input's namespace (so they
        carry gradients with respect to the weights in torch).
    """
    xp = _xp.array_namespace(u_values, v_values, u_weights, v_weights)
    u_weights = _uniform_like(xp, u_values) if u_weights is None else u_weights
    v_weights = _uniform_like(xp, v_values) if v_weights is None else v_weights
    tols = [tie_tol] + [float(t) for _, _, t in tie_break]
    u_keys = [u_values] + [k for k, _, _ in tie_break]
    v_keys = [v_values] + [k for _, k, _ in tie_break]
    left = _grouped_side(xp, u_keys, u_weights, tols)
    right = _grouped_side(xp, v_keys, v_weights, tols)
    # the monotone coupling between the two group measures (host: indices only)
    levels, gi, gj = quantile_merge(np, left.cum_host, right.cum_host)
    keep = np.nonzero(_lengths(np, levels) > 0)[0]
    gi, gj = gi[keep], gj[keep]
    # atom masses, recomputed in xp so that they depend differentiably on the weights
    levels_xp = quantile_merge(xp, left.cum, right.cum)[0]
    mass = xp.take(_lengths(xp, levels_xp), _index(xp, keep, u_values), axis=0)
    return _lift(xp, mass, gi, gj, left, right, u_values)


class _GroupedSide:
    """Sorted order, tie groups and group masses of one side of a 1-D coupling."""

    def __init__(self, order, group, cum, cum_host, share):
        self.order = order  # host: sorted position -> node id
        self.group = group  # host: sorted position -> group id
        self.cum = cum  # xp: cumulative group mass at each group's end
        self.cum_host = cum_host
        self.share = share  # xp: node weight / its group's mass, in sorted order


def _grouped_side(xp, keys, weights, tols) -> _GroupedSide:
    host = [_xp.to_numpy(k).astype(np.float64) for k in keys]
    order, group = _refined_groups(host, tols)
    ends = np.nonzero(np.r_[group[1:] != group[:-1], True])[0]
    like = keys[0]
    w_sorted = xp.take(weights, _index(xp, order, like), axis=0)
    cum_nodes = xp.cumulative_sum(w_sorted)
    cum = xp.take(cum_nodes, _index(xp, ends, like), axis=0)
    group_mass = xp.take(_lengths(xp, cum), _index(xp, group, like), axis=0)
    safe = xp.where(group_mass > 0, group_mass, xp.ones_like(group_mass))
    share = xp.where(group_mass > 0, w_sorted / safe, xp.zeros_like(w_sorted))
    return _GroupedSide(order, group, cum, _xp.to_numpy(cum).astype(np.float64), share)


def _index(xp, host_index: np.ndarray, like: Any):
    return xp.asarray(np.asarray(host_index, dtype=np.int64), device=_xp.device(like))


def _lift(xp, mass, gi, gj, left: _GroupedSide, right: _GroupedSide, like) -> SparseCoupling:
    """Spread each atom (group g, group h, mass) over the node pairs of g x h."""
    # node ranges of every group in sorted order
    lo_u, hi_u = _group_ranges(left.group)
    lo_v, hi_v = _group_ranges(right.group)
    size_u = hi_u[gi] - lo_u[gi]
    size_v = hi_v[gj] - lo_v[gj]
    per_atom = size_u * size_v
    atom = np.repeat(np.arange(len(gi)), per_atom)
    offset = np.arange(per_atom.sum()) - np.repeat(np.cumsum(per_atom) - per_atom, per_atom)
    pos_u = lo_u[gi][atom] + offset // size_v[atom]
    pos_v = lo_v[gj][atom] + offset % size_v[atom]
    values = (
        xp.take(mass, _index(xp, atom, like), axis=0)
        * xp.take(left.share, _index(xp, pos_u, like), axis=0)
        * xp.take(right.share, _index(xp, pos_v, like), axis=0)
    )
    rows = left.order[pos_u]
    cols = right.order[pos_v]
    return SparseCoupling(rows, cols, values, (len(left.order), len(right.order)))


def _group_ranges(group: np.ndarray):
    counts = np.bincount(group)
    hi = np.cumsum(counts)
    return hi - counts, hi
