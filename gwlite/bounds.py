r"""Sorting-based bounds on the Gromov-Wasserstein value.

Notation: :math:`\mathrm{GW}_r = \min_{\pi \in \Pi(p, q)} \sum_{ijkl}
|C^1_{ik} - C^2_{jl}|^r \pi_{ij} \pi_{kl}` with :math:`r = 2` for ``square_loss`` and
:math:`r = 1` for ``abs_loss`` (POT's convention: no 1/2, no root).

Lower bounds (each is :math:`\le \mathrm{GW}_r`; proofs in ``docs/theory.md``):

``mean_row``
    :math:`W_r^r(s_1 \# p, s_2 \# q)` with :math:`s_1(i) = \sum_k C^1_{ik} p_k`: the
    closed form of InfiGFusion (Wang et al. 2025, arXiv 2505.13893). By Jensen,
    :math:`|s_1(i) - s_2(j)|^r = |\sum_{kl} (C^1_{ik} - C^2_{jl}) \pi_{kl}|^r \le
    \sum_{kl} |C^1_{ik} - C^2_{jl}|^r \pi_{kl}` for every coupling.
``flb``
    Memoli's first lower bound, :math:`W_r^r(e_1 \# p, e_2 \# q)` between the
    eccentricities :math:`e(i) = (\sum_k |C_{ik}|^r p_k)^{1/r}`.
``slb``
    Memoli's second lower bound, :math:`W_r^r(C^1 \# (p \otimes p), C^2 \# (q \otimes q))`
    between the distributions of all entries. :math:`O(n^2 \log n)`.
``tlb``
    Memoli's third lower bound, :math:`\min_\pi \sum_{ij} W_r^r(C^1_{i\cdot} \# p,
    C^2_{j\cdot} \# q) \pi_{ij}`, which dominates the three others. :math:`O(n^3)`. It is
    reported from a dual-feasible point of the final linear program, so it stays a
    bound even if the LP solver stops early.

Upper bound: the GW cost of the monotone coupling between :math:`s_1` and :math:`s_2`
(:func:`gwlite.univariate.monotone_coupling`), a feasible coupling.

References
----------
F. Memoli. Gromov-Wasserstein distances and the metric approach to object matching.
Found. Comput. Math. 11 (2011), 417-487, Section 6.
Y. Wang et al. InfiGFusion: Graph-on-Logits Distillation via Efficient
Gromov-Wasserstein for Model Fusion. arXiv 2505.13893 (2025).
"""

from __future__ import annotations

import math
import warnings

import numpy as np

from gwlite import _xp
from gwlite.coupling import SparseCoupling, coupling_inner, gw_cost, to_dense
from gwlite.errors import GWInputError
from gwlite.pointcloud import is_point_cloud
from gwlite.problem import GWProblem, checked_features, make_problem
from gwlite.psd import rank_one_lower
from gwlite.univariate import monotone_coupling, quantile_merge, wasserstein_1d

__all__ = [
    "LOWER_BOUNDS",
    "compute_lower",
    "gap_diagnostics",
    "lower_bound",
    "mean_row_features",
    "certified_lp_lower",
    "row_distribution_costs",
    "sorted_coupling",
    "sorted_sparse_coupling",
    "sorted_upper_bound",
]

LOWER_BOUNDS = ("mean_row", "flb", "slb", "tlb", "rank_one")

# entries of one block of the O(n m (n + m)) TLB cost computation
_CHUNK = 1 << 22


def mean_row_features(C, p):
    r"""Mean-row (weighted degree) features :math:`s(i) = \sum_k C_{ik} p_k`, batched."""
    xp = _xp.array_namespace(C, p)
    return xp.squeeze(C @ p[..., None], axis=-1)


def _eccentricities(xp, C, p, r: int):
    return xp.squeeze((xp.abs(C) ** r) @ p[..., None], axis=-1) ** (1.0 / r)


def _weights_or_none(problem: GWProblem):
    """``None`` lets 1-D OT take its equal-mass fast path when it applies."""
    if problem.uniform and problem.n == problem.m:
        return None, None
    return problem.p, problem.q


def _mean_row_bound(problem: GWProblem, check: bool = False):
    # unchecked entries may be NaN/Inf: NumPy must not warn before check_features raises
    with np.errstate(invalid="ignore", over="ignore"):
        s1 = mean_row_features(problem.C1, problem.p)
        s2 = mean_row_features(problem.C2, problem.q)
    if check:
        s1, s2 = checked_features(problem, s1, s2)
    # validated inputs: the 1-D solver's own checks would only repeat them
    return wasserstein_1d(s1, s2, *_weights_or_none(problem), p=problem.exponent, check=False)


def _flb(problem: GWProblem):
    xp, r = problem.xp, problem.exponent
    e1 = _eccentricities(xp, problem.C1, problem.p, r)
    e2 = _eccentricities(xp, problem.C2, problem.q, r)
    return wasserstein_1d(e1, e2, *_weights_or_none(problem), p=r, check=False)


def _slb(problem: GWProblem):
    xp = problem.xp
    batch = problem.batch_shape
    u = xp.reshape(problem.C1, batch + (-1,))
    v = xp.reshape(problem.C2, batch + (-1,))
    if problem.uniform and problem.n == problem.m:
        return wasserstein_1d(u, v, p=problem.exponent, check=False)
    pp = xp.reshape(problem.p[..., :, None] * problem.p[..., None, :], batch + (-1,))
    qq = xp.reshape(problem.q[..., :, None] * problem.q[..., None, :], batch + (-1,))
    return wasserstein_1d(u, v, pp, qq, p=problem.exponent, check=False)


def row_distribution_costs(problem: GWProblem):
    r""":math:`M_{ij} = W_r^r(C^1_{i\cdot} \# p, C^2_{j\cdot} \# q)`, the TLB cost matrix."""
    xp, r = problem.xp, problem.exponent
    C1, C2, p, q = problem.C1, problem.C2, problem.p, problem.q
    if not problem.uniform:
        # each row has its own order, hence its own cumulative weights: one batch per row
        rows = [
            wasserstein_1d(
                xp.broadcast_to(C1[i, :], (problem.m, problem.n)), C2, p, q, p=r, check=False
            )
            for i in range(problem.n)
        ]
        return xp.stack(rows, axis=0)
    S1 = xp.sort(C1, axis=1)
    S2 = xp.sort(C2, axis=1)
    n, m = problem.n, problem.m
    cu = xp.cumulative_sum(xp.ones(n, dtype=C1.dtype) / n)
    cv = xp.cumulative_sum(xp.ones(m, dtype=C1.dtype) / m)
    levels, iu, iv = quantile_merge(np, _xp.to_numpy(cu), _xp.to_numpy(cv))
    lengths = np.diff(levels, prepend=0.0)
    keep = lengths > 0
    device = _xp.device(C1)
    Q1 = xp.take(S1, xp.asarray(iu[keep], device=device), axis=1)
    Q2 = xp.take(S2, xp.asarray(iv[keep], device=device), axis=1)
    w = xp.asarray(lengths[keep], dtype=C1.dtype, device=device)
    return _weighted_row_distances(xp, Q1, Q2, w, r)


def _weighted_row_distances(xp, Q1, Q2, w, r: int):
    """``M[i, j] = sum_t w_t |Q1[i, t] - Q2[j, t]|^r`` by differences (no cancellation)."""
    n, m, t = Q1.shape[0], Q2.shape[0], Q1.shape[1]
    block = max(1, _CHUNK // (m * t))
    blocks = []
    for start in range(0, n, block):
        d = Q1[start : start + block, None, :] - Q2[None, :, :]
        loss = d * d if r == 2 else xp.abs(d)
        blocks.append(xp.sum(loss * w, axis=-1))
    return xp.concat(blocks, axis=0)


def certified_lp_lower(M, p, q):
    r"""A certified lower bound on :math:`\min_{\pi \in \Pi(p,q)} \langle M, \pi \rangle`.

    POT's network simplex gives duals :math:`(u, v)`; shifting :math:`u` by the largest
    violation of :math:`u_i + v_j \le M_{ij}` makes them feasible, and weak duality
    turns :math:`p^\top u + q^\top v` into a bound whatever the solver's status. TLB is
    this bound on :func:`row_distribution_costs`.

    Parameters
    ----------
    M : array ``(n, m)``
        Cost matrix (any backend; computed in float64 on the host).
    p, q : array ``(n,)`` and ``(m,)``
        Marginals of equal mass.

    Returns
    -------
    bound : float
        A proven lower bound on the optimal transport cost, never above the plan's cost.
    plan : numpy.ndarray
        The network simplex's optimal plan.

    Examples
    --------
    >>> import numpy as np
    >>> from gwlite.bounds import certified_lp_lower
    >>> bound, plan = certified_lp_lower(np.array([[0., 1.], [1., 0.]]), np.full(2, .5), np.full(2, .5))
    >>> float(bound), plan.tolist()
    (0.0, [[0.5, 0.0], [0.0, 0.5]])
    """
    import ot

    M64 = _xp.to_numpy(M).astype(np.float64)
    p64 = _xp.to_numpy(p).astype(np.float64)
    q64 = _xp.to_numpy(q).astype(np.float64)
    # the network simplex compares reduced costs with absolute tolerances: solve it on
    # M divided by a power of two at its scale (exact), so the bound is the same in every
    # unit, and scale the duals back
    top = float(np.max(np.abs(M64))) if M64.size else 0.0
    unit = 1.0 if top == 0 else math.ldexp(1.0, math.frexp(top)[1])
    # (uncentred duals: centring moves mass between u and v, which changes nothing here)
    plan, log = ot.emd(
        p64,
        q64,
        M64 / unit,
        numItermax=10_000_000,
        log=True,
        check_marginals=False,
        center_dual=False,
    )
    u, v = log["u"] * unit, log["v"] * unit
    # only rows and columns with mass constrain the dual: a zero-mass row's potential
    # can always be lowered until it is feasible without changing the objective
    rows, cols = p64 > 0, q64 > 0
    violation = u[rows][:, None] + v[cols][None, :] - M64[np.ix_(rows, cols)]
    shift = max(0.0, float(np.max(violation)))
    u = np.where(rows, u, 0.0)
    v = np.where(cols, v, 0.0)
    dual = float(p64 @ u + q64 @ v) - shift
    return min(dual, float(np.sum(M64 * plan))), plan


def _tlb(problem: GWProblem):
    xp = problem.xp
    M = row_distribution_costs(problem)
    bound, plan = certified_lp_lower(M, problem.p, problem.q)
    if not problem.requires_grad:
        return xp.asarray(bound, dtype=M.dtype, device=_xp.device(M))
    # envelope theorem: the LP value moves with M along the optimal plan
    plan_xp = _xp.from_numpy(plan, M)
    primal = xp.sum(M * plan_xp)
    return primal + (bound - float(primal.detach()))


_LOWER = {
    "mean_row": _mean_row_bound,
    "flb": _flb,
    "slb": _slb,
    "tlb": _tlb,
    "rank_one": rank_one_lower,
}


def compute_lower(problem: GWProblem, lower: str, check: bool = False):
    """The lower bound named ``lower`` (one of :data:`LOWER_BOUNDS`) of a validated problem.

    Returns an array of shape ``problem.batch_shape`` in the problem's namespace (0-d for
    a single problem), differentiable where the bound is, never negative. ``check=True`` makes the
    mean-row bound refuse non-finite row sums (its cheap form of the entry check).
    """
    if lower not in _LOWER:
        raise GWInputError(f"unknown lower bound {lower!r}; choose one of {list(_LOWER)}")
    if lower == "mean_row":
        value = _mean_row_bound(problem, check)
    elif lower == "tlb" and problem.batch_shape:
        value = _batched(problem, _tlb)
    else:
        value = _LOWER[lower](problem)
    # GW >= 0: a bound that round-off (TLB's dual) puts below 0 is replaced by 0
    return _nonnegative(value)


def _nonnegative(value):
    xp = _xp.array_namespace(value)
    return xp.where(value < 0, xp.zeros_like(value), value)


def _batched(problem: GWProblem, fn):
    """Apply a 2-D-only bound to each element of a batch."""
    xp = problem.xp
    flat = int(np.prod(problem.batch_shape))
    shape = problem.batch_shape

    def item(A, k):
        return xp.reshape(A, (flat,) + tuple(A.shape[len(shape) :]))[k]

    values = []
    for k in range(flat):
        sub = make_problem(
            item(problem.C1, k),
            item(problem.C2, k),
            item(problem.p, k),
            item(problem.q, k),
            problem.loss_fun,
        )
        values.append(fn(sub))
    return xp.reshape(xp.stack(values), shape)


def lower_bound(
    C1,
    C2,
    p=None,
    q=None,
    *,
    loss_fun: str = "square_loss",
    lower: str = "mean_row",
    kind: str | None = None,
):
    r"""A proven lower bound on the Gromov-Wasserstein value.

    Parameters
    ----------
    C1, C2 : array ``(..., n, n)``, ``(..., m, m)``, or :class:`gwlite.PointCloud`
        Structure matrices (NumPy, CuPy or torch); leading dimensions are a batch. Point
        clouds also take ``lower="quantized_slb"``, ``"quantized_tlb"`` and
        ``"spectral"`` (:mod:`gwlite.pointcloud.bounds`), and need no matrix for those,
        ``mean_row`` and ``flb``.
    p, q : array, optional
        Node weights, uniform by default.
    loss_fun : {"square_loss", "abs_loss"}
    lower : {"mean_row", "flb", "slb", "tlb", "rank_one"}
        Which bound (see the module docstring): ``mean_row`` is InfiGFusion's closed
        form (the default, one read of each matrix), ``flb`` and ``slb`` Memoli's first
        and second bounds, ``tlb`` his third (the tightest of the four and the most
        expensive, at least each of the others), ``rank_one`` the square-loss bound of
        :func:`gwlite.rank_one_bounds`. The same name and choices as the ``lower=``
        option of :func:`gwlite.gromov_wasserstein`.
    kind : str, optional
        Deprecated name of ``lower`` (gwlite 0.1); passing it warns.

    Returns
    -------
    float, or an array of shape ``batch`` for batched input (a 0-d tensor when torch
    inputs require grad).

    Examples
    --------
    >>> import numpy as np, gwlite
    >>> C1 = np.array([[0., 1.], [1., 0.]]); C2 = np.eye(2)
    >>> gwlite.lower_bound(C1, C2, lower="tlb") <= 0.5  # GW here is 0.5
    True
    """
    if kind is not None:
        warnings.warn(
            "lower_bound(kind=...) is deprecated; use lower_bound(lower=...), the name the "
            "solvers use",
            FutureWarning,
            stacklevel=2,
        )
        lower = kind
    if is_point_cloud(C1) or is_point_cloud(C2):
        from gwlite.pointcloud.dispatch import lower_bound_clouds

        return lower_bound_clouds(C1, C2, p, q, loss_fun, lower)
    # the mean-row bound reads each matrix once: its entry check rides on the row sums
    cheap = lower == "mean_row"
    problem = make_problem(C1, C2, p, q, loss_fun, batch=True, check_entries=not cheap)
    value = compute_lower(problem, lower, check=cheap)
    if problem.batch_shape:
        return value
    return _xp.scalar(value, keep_graph=True)


def _tie_tol(problem: GWProblem) -> float:
    xp = problem.xp
    C1, C2 = _xp.detach(problem.C1), _xp.detach(problem.C2)
    scale = max(float(xp.max(xp.abs(C1))), float(xp.max(xp.abs(C2))))
    return _key_tol(xp, C1.dtype, scale)


def _key_tol(xp, dtype, scale: float) -> float:
    # features equal up to summation round-off (~1024 ulp of their scale) count as tied
    return 1024 * _xp.eps(xp, dtype) * max(scale, np.finfo(np.float64).tiny)


def _refinement_keys(problem: GWProblem, s1, s2) -> tuple:
    r"""Label-free secondary keys that order nodes with tied mean-row features.

    Two rounds of colour refinement in the spirit of Weisfeiler-Lehman,
    :math:`C (p \circ s)` and :math:`C (p \circ C (p \circ s))`, then the second
    moment :math:`(C \circ C) p`. Ordering inside tie groups keeps the coupling optimal
    for the 1-D feature problem and lets isomorphic graphs with repeated degrees be
    matched by a permutation; nodes tied on every key still share their mass.
    """
    xp = problem.xp
    C1, C2, p, q = (_xp.detach(x) for x in (problem.C1, problem.C2, problem.p, problem.q))
    # each product by C multiplies the scale by max|C|: dividing the O(n) vectors by the
    # power of two `unit` keeps every key at the entries' scale (no overflow at 1e100, no
    # underflow at 1e-100) and changes no order and no relative tolerance
    unit = problem.unit
    s1, s2 = _xp.detach(s1) / unit, _xp.detach(s2) / unit
    k1 = (C1 @ (p * s1), C2 @ (q * s2))
    k2 = (C1 @ (p * k1[0] / unit), C2 @ (q * k1[1] / unit))
    k3 = ((C1 * C1) @ p, (C2 * C2) @ q)
    keys = []
    for u, v in (k1, k2, k3):
        scale = max(float(xp.max(xp.abs(u))), float(xp.max(xp.abs(v))))
        keys.append((u, v, _key_tol(xp, C1.dtype, scale)))
    return tuple(keys)


def sorted_sparse_coupling(problem: GWProblem) -> SparseCoupling:
    """The sorted coupling of a validated problem, in sparse form (see :func:`gwlite.sorted_coupling`)."""
    s1 = mean_row_features(problem.C1, problem.p)
    s2 = mean_row_features(problem.C2, problem.q)
    return monotone_coupling(
        s1,
        s2,
        problem.p,
        problem.q,
        tie_tol=_tie_tol(problem),
        tie_break=_refinement_keys(problem, s1, s2),
    )


def sorted_coupling(C1, C2, p=None, q=None):
    r"""The coupling behind the sorted upper bound, as a dense ``(n, m)`` array.

    Nodes are matched monotonically by their mean-row features
    :math:`s(i) = \sum_k C_{ik} p_k`; nodes with tied features share their mass
    proportionally to their weights, so the coupling does not depend on node labels.
    With uniform weights, ``n == m`` and no ties it is a permutation matrix divided by n.

    Returns
    -------
    array ``(n, m)``
        In the input's array type and device.
    """
    problem = make_problem(C1, C2, p, q)
    return to_dense(sorted_sparse_coupling(problem))


def sorted_upper_bound(C1, C2, p=None, q=None, *, loss_fun: str = "square_loss"):
    r"""GW cost of :func:`sorted_coupling`: a proven upper bound on the GW value.

    Accepts batches ``(..., n, n)`` / ``(..., m, m)`` like :func:`lower_bound` (the tie
    structure differs per element, so the couplings are built one element at a time).
    """
    problem = make_problem(C1, C2, p, q, loss_fun, batch=True)
    if problem.batch_shape:
        return _batched(problem, _sorted_upper)
    return _xp.scalar(_sorted_upper(problem), keep_graph=True)


def _sorted_upper(problem: GWProblem):
    coupling = sorted_sparse_coupling(problem)
    return gw_cost(problem.C1, problem.C2, coupling, problem.loss_fun, check=False)


def gap_diagnostics(problem: GWProblem, coupling: SparseCoupling, value, upper) -> dict:
    r"""Quantities of the gap identities between the sorted value and upper bound.

    With :math:`s_1, s_2` the mean-row features, :math:`\hat C^1_{ik} = C^1_{ik} -
    s_1(i)` (and likewise :math:`\hat C^2`) and :math:`\pi` the sorted coupling:

    * square loss: ``upper = feature_cost + var_C1 + var_C2 - 2 cov``, with
      ``var_C1`` :math:`= \sum_{ik} p_i p_k (\hat C^1_{ik})^2`,
      ``cov`` :math:`= \sum_{ijkl} \hat C^1_{ik} \hat C^2_{jl} \pi_{ij}\pi_{kl}` and
      ``feature_cost`` :math:`= \sum_{ij} \pi_{ij} (s_1(i) - s_2(j))^2`, which is
      :math:`W_2^2` (= ``value``) up to the tie tolerance; hence
      ``upper - value <= (sqrt(var_C1) + sqrt(var_C2))^2``;
    * absolute loss: ``upper <= feature_cost + delta_C1 + delta_C2`` with
      ``delta_C1`` :math:`= \sum_{ik} p_i p_k |\hat C^1_{ik}|`, and
      ``upper - feature_cost = 2 sum_ij pi_ij min(P_ij, N_ij)`` (``pos_neg_gap``) where
      :math:`P_{ij}, N_{ij}` are the :math:`\pi`-weighted sums of the positive and
      negative parts of :math:`C^1_{ik} - C^2_{jl}` over :math:`(k, l)`; for a permutation
      with uniform weights this is :math:`(2/n^2) \sum_i \min(P_i, N_i)`.

    All values are Python floats. ``pos_neg_gap`` is only computed when the coupling
    has few enough non-zeros (``nnz <= 4096``); it is absent otherwise.
    """
    xp = problem.xp
    C1, C2, p, q = (_xp.detach(x) for x in (problem.C1, problem.C2, problem.p, problem.q))
    coupling = SparseCoupling(
        coupling.rows, coupling.cols, _xp.detach(coupling.values), coupling.shape
    )
    s1, s2 = mean_row_features(C1, p), mean_row_features(C2, q)
    hat1, hat2 = C1 - s1[:, None], C2 - s2[:, None]
    rows = xp.asarray(coupling.rows, device=_xp.device(C1))
    cols = xp.asarray(coupling.cols, device=_xp.device(C1))
    d = xp.take(s1, rows, axis=0) - xp.take(s2, cols, axis=0)
    out = {
        "value": _xp.as_float(value),
        "upper": _xp.as_float(upper),
        "tie_tol": _tie_tol(problem),
        "coupling_nnz": coupling.nnz,
        "coupling_is_permutation": coupling.is_permutation(),
    }
    if problem.exponent == 2:
        out["feature_cost"] = float(xp.sum(coupling.values * d * d))
        out["var_C1"] = float(p @ ((hat1 * hat1) @ p))
        out["var_C2"] = float(q @ ((hat2 * hat2) @ q))
        out["cov"] = float(coupling_inner(hat1, hat2, coupling))
        out["upper_by_identity"] = (
            out["feature_cost"] + out["var_C1"] + out["var_C2"] - 2 * out["cov"]
        )
        out["gap_bound"] = float((np.sqrt(out["var_C1"]) + np.sqrt(out["var_C2"])) ** 2)
    else:
        out["feature_cost"] = float(xp.sum(coupling.values * xp.abs(d)))
        out["delta_C1"] = float(p @ (xp.abs(hat1) @ p))
        out["delta_C2"] = float(q @ (xp.abs(hat2) @ q))
        out["gap_bound"] = out["delta_C1"] + out["delta_C2"]
        if coupling.nnz <= 4096:
            out["pos_neg_gap"] = _pos_neg_gap(xp, C1, C2, coupling)
    return out


def _pos_neg_gap(xp, C1, C2, coupling: SparseCoupling) -> float:
    w = coupling.values
    rows = xp.asarray(coupling.rows, device=_xp.device(C1))
    cols = xp.asarray(coupling.cols, device=_xp.device(C1))
    R = xp.take(xp.take(C1, rows, axis=0), rows, axis=1) - xp.take(
        xp.take(C2, cols, axis=0), cols, axis=1
    )
    pos = xp.where(R > 0, R, xp.zeros_like(R)) @ w
    neg = xp.where(R < 0, -R, xp.zeros_like(R)) @ w
    return float(2 * xp.sum(w * xp.minimum(pos, neg)))
