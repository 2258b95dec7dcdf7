r"""The sorted bounds for a whole batch of pairs in one vectorised call.

Every bound here is a function of a few sorted lists per space (see
:mod:`gwlite.pairs.prepare`); a batch of pairs is a stack of such lists padded to a
common width, merged along the last axis, gathered and summed, in the array namespace
of the inputs (NumPy, torch or CuPy).

**Why zero-weight padding changes no bound.** Each bound is built from the quantile
coupling of two discrete measures on the line (:func:`gwlite.univariate.quantile_merge`):
the merged cumulative weights :math:`0 < t_1 \le \dots` cut :math:`(0, 1]` into pieces
:math:`(t_{k-1}, t_k]`, and piece :math:`k` carries the atoms ``idx_u[k] = #{i : cu_i <
t_k}`` and ``idx_v[k]``. A padded atom has zero weight, so its cumulative weight repeats
the last real one, :math:`c_{\text{last}}`:

1. it only adds levels equal to :math:`c_{\text{last}}`, i.e. pieces of length zero,
   which contribute nothing to any sum below (their terms are :math:`0 \times` a finite
   number);
2. the count ``#{i : cu_i < t_k}`` of a piece of positive length is unchanged: padded
   levels are :math:`\ge` every real level and, for :math:`t_k \le c_{\text{last}}`, are
   not :math:`< t_k`; only the final piece of round-off length, past the last real level,
   can count them, and its index is clipped to the last real atom, exactly as the
   unpadded merge clips it.

So the pieces of positive length, their lengths and their atoms are the same with and
without padding, and so is every bound assembled from them: the closed form, FLB and
SLB (sums of ``length * |u - v|^r``), the TLB cost matrix (the same for every pair of
rows) and the cost of the sorted coupling, whose atoms are pieces of the merged *group*
weights. The padded entries of the aggregated matrices are never gathered. In floating
point the sums differ only by round-off (padding changes their length).
``tests/gwlite/test_pairwise_kernels.py`` checks this against unpadded computations and
against one :func:`gwlite.gromov_wasserstein` call per pair.

**The sorted coupling's cost.** The coupling is :math:`\pi = \sum_t m_t\, u_{g_t}
v_{h_t}^\top`: piece :math:`t` moves mass :math:`m_t` from tie group :math:`g_t` to tie
group :math:`h_t`, spread proportionally to the node weights (:math:`u_g` is the vector of
weight shares inside group :math:`g`). Hence, for the square loss,

.. math::

    \mathcal E(\pi) = \sum_{t, t'} m_t m_{t'} \Bigl[\bigl(A^1_{g_t g_{t'}} - A^2_{h_t h_{t'}}
    \bigr)^2 + V^1_{g_t g_{t'}} + V^2_{h_t h_{t'}}\Bigr], \qquad
    A_{gg'} = u_g^\top C u_{g'}, \quad V_{gg'} = \sum_{i \in g, k \in g'} u_i u_k
    (C_{ik} - A_{gg'})^2,

a sum of non-negative terms (no cancellation), and :math:`\sum m_t m_{t'} V^1_{g_t
g_{t'}} = M^\top V^1 M` with :math:`M` the group masses when every group has mass. For
the absolute loss, :math:`|x - y| = x + y - 2 \min(x, y)` and :math:`\min(x, y) = z_0 +
\sum_l (z_{l+1} - z_l) 1[x > z_l] 1[y > z_l]` over the sorted distinct entries
:math:`z_l` of the dataset, and each indicator aggregates over groups like :math:`C`.
"""

from __future__ import annotations

import numpy as np

from gwlite import _xp
from gwlite.univariate import quantile_merge

__all__ = ["ELEMENT_BUDGET", "sorted_pairs"]

#: largest number of elements of one temporary array of a batch (sets the batch size);
#: 2**18 float64 (2 MiB) keeps a batch in cache: 1.5x faster than 2**20 on the atlas
ELEMENT_BUDGET = 1 << 18


def _power(xp, d, r: int):
    return d * d if r == 2 else xp.abs(d)


def _lengths(xp, levels):
    zero = xp.zeros(levels.shape[:-1] + (1,), dtype=levels.dtype, device=_xp.device(levels))
    return xp.diff(levels, axis=-1, prepend=zero)


def _merge(xp, cu, cv, nu, nv):
    """Quantile pieces of two padded cumulative-weight stacks, indices clipped to the
    real atoms (``nu``, ``nv``: counts, broadcastable to the leading shape)."""
    shape = tuple(np.broadcast_shapes(tuple(cu.shape[:-1]), tuple(cv.shape[:-1])))
    cu = xp.broadcast_to(cu, shape + (cu.shape[-1],))
    cv = xp.broadcast_to(cv, shape + (cv.shape[-1],))
    levels, iu, iv = quantile_merge(xp, cu, cv)
    iu = xp.minimum(iu, nu[..., None] - 1)
    iv = xp.minimum(iv, nv[..., None] - 1)
    return _lengths(xp, levels), iu, iv


def _gather(xp, x, idx):
    """``x[..., idx]`` along the last axis, broadcasting the leading axes."""
    shape = tuple(np.broadcast_shapes(tuple(x.shape[:-1]), tuple(idx.shape[:-1])))
    x = xp.broadcast_to(x, shape + (x.shape[-1],))
    idx = xp.broadcast_to(idx, shape + (idx.shape[-1],))
    return xp.take_along_axis(x, idx, axis=-1)


def w1d_batch(xp, u, cu, nu, v, cv, nv, r: int):
    r""":math:`W_r^r` between padded sorted samples ``u`` (cumulative weights ``cu``, ``nu``
    real atoms) and ``v``, along the last axis."""
    lengths, iu, iv = _merge(xp, cu, cv, nu, nv)
    d = _gather(xp, u, iu) - _gather(xp, v, iv)
    return xp.sum(lengths * _power(xp, d, r), axis=-1)


def _gather2(xp, M, idx):
    """``M[b, idx[b, t], idx[b, t']]`` for a stack ``M`` (B, w, w) and ``idx`` (B, T).

    One flat ``take`` (a fast path in every library) instead of two broadcast gathers.
    """
    B, w = M.shape[0], M.shape[-1]
    T = idx.shape[-1]
    base = xp.reshape(xp.arange(B, dtype=idx.dtype, device=_xp.device(idx)) * (w * w), (B, 1, 1))
    flat = base + idx[:, :, None] * w + idx[:, None, :]
    out = xp.take(xp.reshape(M, (-1,)), xp.reshape(flat, (-1,)), axis=0)
    return xp.reshape(out, (B, T, T))


def coupling_cost(xp, U, V, r: int, levels=None):
    """GW cost of the sorted coupling for stacks of group data ``U`` and ``V``
    (dicts of ``gcum, G, A, live`` and ``Vm, v`` or ``B``; see the module docstring)."""
    m, gi, gj = _merge(xp, U["gcum"], V["gcum"], U["G"], V["G"])
    dead = not (bool(xp.all(U["all_live"])) and bool(xp.all(V["all_live"])))
    if dead:
        # a group without mass receives none: its atoms vanish, as in the lifted coupling
        lu = xp.astype(xp.take_along_axis(U["live"], gi, axis=1), m.dtype)
        lv = xp.astype(xp.take_along_axis(V["live"], gj, axis=1), m.dtype)
        m = m * lu * lv
    mm = m[:, :, None] * m[:, None, :]
    A1 = _gather2(xp, U["A"], gi)
    A2 = _gather2(xp, V["A"], gj)
    if r == 2:
        D = (A1 - A2) * (A1 - A2)
        if not dead:
            return xp.sum(xp.sum(D * mm, axis=-1), axis=-1) + U["v"] + V["v"]
        if bool(xp.any(U["any_V"])):
            D = D + _gather2(xp, U["V"], gi)
        if bool(xp.any(V["any_V"])):
            D = D + _gather2(xp, V["V"], gj)
        return xp.sum(xp.sum(D * mm, axis=-1), axis=-1)
    if levels is None:  # absolute loss, singleton groups only
        return xp.sum(xp.sum(xp.abs(A1 - A2) * mm, axis=-1), axis=-1)
    low = A1 + A2 - 2 * float(levels[0])
    for ell in range(len(levels) - 1):
        step = float(levels[ell + 1] - levels[ell])
        low = low - 2 * step * _gather2(xp, U["B"][:, ell], gi) * _gather2(xp, V["B"][:, ell], gj)
    return xp.sum(xp.sum(low * mm, axis=-1), axis=-1)


def tlb_costs(xp, Su, Ru, nu, Sv, Rv, nv, uniform: bool, r: int):
    r"""The TLB cost matrices :math:`M_{b,ij} = W_r^r(C^1_{i\cdot} \# p, C^2_{j\cdot} \# q)`
    of a batch, ``(B, wu, wv)`` (rows past the real sizes are padding)."""
    if uniform:
        # every row of a space has the same cumulative weights: one merge per pair
        lengths, iu, iv = _merge(xp, Ru[:, 0, :], Rv[:, 0, :], nu, nv)
        Q1 = _gather(xp, Su, iu[:, None, :])
        Q2 = _gather(xp, Sv, iv[:, None, :])
        d = Q1[:, :, None, :] - Q2[:, None, :, :]
        return xp.sum(_power(xp, d, r) * lengths[:, None, None, :], axis=-1)
    b = (slice(None), slice(None), None, slice(None))
    c = (slice(None), None, slice(None), slice(None))
    return w1d_batch(xp, Su[b], Ru[b], nu[:, None, None], Sv[c], Rv[c], nv[:, None, None], r)


def _select(tree, idx, xp):
    if isinstance(tree, dict):
        return {k: _select(v, idx, xp) for k, v in tree.items()}
    if isinstance(tree, tuple):
        return tuple(_select(v, idx, xp) for v in tree)
    return xp.take(tree, idx, axis=0)


def _per_pair_elements(wu: int, wv: int, parts) -> int:
    T = 2 * max(wu, wv)
    size = T * T
    if "slb" in parts:
        size = max(size, 2 * (wu * wu + wv * wv))
    if "tlb" in parts:
        size = max(size, wu * wv * (wu + wv))
    return size


def sorted_pairs(buckets, ii: np.ndarray, jj: np.ndarray, parts, lp_lower=None) -> dict:
    """The sorted bounds of the pairs ``(ii[k], jj[k])`` (stable spaces only).

    Parameters
    ----------
    buckets : gwlite.pairs.prepare.Buckets
    ii, jj : int arrays
        Global space indices.
    parts : set of str
        Among ``"value"`` (the closed form), ``"upper"``, ``"flb"``, ``"slb"``, ``"tlb"``.
    lp_lower : callable, optional
        ``(M, p, q) -> float``, the certified TLB linear program (host NumPy).

    Returns
    -------
    dict of host float64 arrays, one per part, in the order of the pairs.
    """
    r = 2 if buckets.loss_fun == "square_loss" else 1
    out = {name: np.empty(len(ii)) for name in parts}
    bi, bj = buckets.bucket[ii], buckets.bucket[jj]
    for a, b in sorted(set(zip(bi.tolist(), bj.tolist()))):
        sel = np.nonzero((bi == a) & (bj == b))[0]
        su, sv = buckets.stacks[a], buckets.stacks[b]
        wu, wv = buckets.widths[a], buckets.widths[b]
        size = max(1, ELEMENT_BUDGET // _per_pair_elements(wu, wv, parts))
        for start in range(0, len(sel), size):
            chunk = sel[start : start + size]
            values = _batch(
                buckets,
                su,
                sv,
                buckets.slot[ii[chunk]],
                buckets.slot[jj[chunk]],
                parts,
                r,
                lp_lower,
            )
            for name, vals in values.items():
                out[name][chunk] = vals
    return out


def _batch(buckets, su, sv, slot_u, slot_v, parts, r, lp_lower) -> dict:
    xu, xv = su["xp"], sv["xp"]
    xp = _xp.array_namespace(xu["value"][0])
    iu = xp.asarray(slot_u, device=_xp.device(xu["value"][0]))
    iv = xp.asarray(slot_v, device=_xp.device(xu["value"][0]))
    nu, nv = xp.take(xu["n"], iu, axis=0), xp.take(xv["n"], iv, axis=0)
    res = {}
    for name in ("value", "flb", "slb"):
        if name in parts:
            u, cu = _select(xu[name], iu, xp)
            v, cv = _select(xv[name], iv, xp)
            count_u, count_v = (nu * nu, nv * nv) if name == "slb" else (nu, nv)
            res[name] = w1d_batch(xp, u, cu, count_u, v, cv, count_v, r)
    if "upper" in parts:
        U = _select(xu["upper"], iu, xp)
        V = _select(xv["upper"], iv, xp)
        res["upper"] = coupling_cost(xp, U, V, r, buckets.levels)
    if "tlb" in parts:
        res["tlb"] = _tlb(xp, su, sv, slot_u, slot_v, iu, iv, nu, nv, r, lp_lower)
    return {k: _xp.to_numpy(v).astype(np.float64) for k, v in res.items()}


def _tlb(xp, su, sv, slot_u, slot_v, iu, iv, nu, nv, r, lp_lower):
    out = np.empty(len(slot_u))
    uniform = su["host"]["uniform"][slot_u] & sv["host"]["uniform"][slot_v]
    for flag in (True, False):
        sel = np.nonzero(uniform == flag)[0]
        if not len(sel):
            continue
        k = xp.asarray(sel, device=_xp.device(iu))
        a, b = xp.take(iu, k, axis=0), xp.take(iv, k, axis=0)
        Su, Ru = _select(su["xp"]["tlb"], a, xp)
        Sv, Rv = _select(sv["xp"]["tlb"], b, xp)
        M = _xp.to_numpy(
            tlb_costs(xp, Su, Ru, xp.take(nu, k, axis=0), Sv, Rv, xp.take(nv, k, axis=0), flag, r)
        ).astype(np.float64)
        for row, pair in enumerate(sel):
            n, m = int(su["host"]["n"][slot_u[pair]]), int(sv["host"]["n"][slot_v[pair]])
            p = su["host"]["p"][slot_u[pair], :n]
            q = sv["host"]["p"][slot_v[pair], :m]
            out[pair] = lp_lower(M[row, :n, :m], p, q)
    return out
