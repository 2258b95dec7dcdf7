r"""Definiteness certificates and the rank-one bounds for square-loss GW.

Two results about :math:`\mathrm{GW}_2(C, D) = \min_{\pi \in \Pi(p, q)} \sum_{ijkl}
(C_{ik} - D_{jl})^2 \pi_{ij} \pi_{kl}` (POT's convention: no 1/2, no root) live here;
proofs are in ``docs/theory_exact.md``.

**Permutation optimum.** With :math:`P = I - \mathbf 1 \mathbf 1^\top / n`, if
:math:`PCP` and :math:`PDP` are both positive semi-definite or both negative
semi-definite, the quadratic part of :math:`\pi \mapsto -\mathcal E(\pi)` is convex on
the transport polytope, so for uniform weights and :math:`n = m` the minimum of
:math:`\mathcal E` is attained at a permutation (a vertex of the Birkhoff polytope).
Otherwise, with :math:`\rho` the largest :math:`|\lambda \mu|` over pairs of centred
eigenvalues of opposite signs,

.. math::

    \mathrm{GW}_2 \ge \min_\sigma \mathcal E(P_\sigma / n) - 2 \rho \, \frac{n - 1}{n^2},

which :func:`permutation_certificate` reports as ``slack``.

**Rank one.** For :math:`C = s\, a a^\top`, :math:`D = t\, b b^\top` (:math:`s, t = \pm 1`),
:math:`\mathcal E(\pi) = (\sum_i p_i a_i^2)^2 + (\sum_j q_j b_j^2)^2 - 2 s t (a^\top \pi b)^2`
and :math:`a^\top \pi b` ranges over the interval between its anti-monotone and
monotone values (rearrangement inequality), which gives GW in closed form. For a
general symmetric input, the triangle inequality of :math:`\mathrm{GW}_2^{1/2}` turns the
closed form of the best rank-one approximations into the bound pair of
:func:`rank_one_bounds`.

References
----------
F. Memoli. Gromov-Wasserstein distances and the metric approach to object matching.
Found. Comput. Math. 11 (2011), 417-487 (triangle inequality, Thm 5.1).
S. Chowdhury, F. Memoli. The Gromov-Wasserstein distance between networks and stable
network invariants. Inf. Inference 8 (2019), 757-787 (the same for any symmetric kernel).
G. H. Hardy, J. E. Littlewood, G. Polya. *Inequalities*, 2nd ed., Cambridge 1952,
Thm 368 (rearrangement inequality).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from gwlite import _xp
from gwlite.coupling import gw_cost, to_dense
from gwlite.errors import GWInputError
from gwlite.problem import GWProblem, make_problem
from gwlite.univariate import monotone_coupling

__all__ = [
    "PermutationCertificate",
    "RankOneBounds",
    "centred_eigenvalues",
    "centred_definiteness",
    "permutation_certificate",
    "rank_one_bounds",
    "rank_one_lower",
]


def _host(C) -> np.ndarray:
    return np.asarray(_xp.to_numpy(C), dtype=np.float64)


def _complement_basis(n: int) -> np.ndarray:
    """Orthonormal basis ``(n, n - 1)`` of the vectors orthogonal to ``1``."""
    basis = np.linalg.qr(np.column_stack([np.ones(n), np.eye(n)[:, : n - 1]]))[0]
    return basis[:, 1:]


def centred_eigenvalues(C) -> np.ndarray:
    r"""Eigenvalues of the quadratic form :math:`x \mapsto x^\top C x` on :math:`\mathbf 1^\perp`.

    These are the eigenvalues of :math:`PCP` (:math:`P = I - \mathbf 1 \mathbf 1^\top / n`)
    without the one that belongs to :math:`\mathbf 1` itself, which is always 0.

    Parameters
    ----------
    C : array ``(n, n)``
        Symmetric matrix (any supported array type).

    Returns
    -------
    numpy.ndarray ``(n - 1,)``
        Ascending.
    """
    A = _host(C)
    Q = _complement_basis(A.shape[0])
    return np.linalg.eigvalsh(Q.T @ A @ Q)


def _tolerance(C: np.ndarray) -> float:
    # eigvalsh is backward stable: eigenvalue errors are O(n eps ||C||_2)
    return 16 * C.shape[0] * np.finfo(np.float64).eps * max(np.linalg.norm(C, 2), 1e-300)


def centred_definiteness(C, tol: float | None = None) -> str:
    """``"psd"``, ``"nsd"``, ``"zero"`` or ``"indefinite"``: the sign of ``C`` on ``1^perp``.

    ``"psd"`` means conditionally positive semi-definite (every PSD matrix is), ``"nsd"``
    conditionally negative definite (Euclidean, tree and L1 distance matrices are),
    ``"zero"`` both. Eigenvalues within ``tol`` of 0 (default: the round-off level
    ``16 n eps ||C||_2``) count as 0; asymmetric matrices are ``"indefinite"``.
    """
    A = _host(C)
    if A.shape[0] < 2:
        return "zero"
    if not np.allclose(A, A.T, rtol=0, atol=_tolerance(A)):
        return "indefinite"
    tol = _tolerance(A) if tol is None else tol
    lam = centred_eigenvalues(A)
    nonneg, nonpos = bool(lam[0] >= -tol), bool(lam[-1] <= tol)
    if nonneg and nonpos:
        return "zero"
    if nonneg:
        return "psd"
    return "nsd" if nonpos else "indefinite"


@dataclass(frozen=True)
class PermutationCertificate:
    """Whether the square-loss GW optimum (uniform weights, n = m) is a permutation.

    Attributes
    ----------
    holds : bool
        Both centred matrices are PSD, or both NSD (up to round-off): the permutation
        optimum is then the GW optimum over all couplings.
    definiteness : tuple of str
        :func:`centred_definiteness` of each matrix.
    rho : float
        Largest :math:`|\\lambda \\mu|` over centred eigenvalues of opposite signs (0 when
        ``holds`` up to round-off).
    slack : float
        :math:`2 \\rho (n - 1) / n^2`: for every pair, GW >= (permutation optimum) - slack.
    """

    holds: bool
    definiteness: tuple[str, str]
    rho: float
    slack: float


def _mismatch(lam: np.ndarray, mu: np.ndarray) -> float:
    """Largest ``|lam_a mu_b|`` over pairs with ``lam_a mu_b < 0``."""
    pos_l, neg_l = max(lam.max(), 0.0), max(-lam.min(), 0.0)
    pos_m, neg_m = max(mu.max(), 0.0), max(-mu.min(), 0.0)
    return float(max(pos_l * neg_m, neg_l * pos_m))


def permutation_certificate(C1, C2) -> PermutationCertificate:
    r"""Check the permutation-optimum condition for square-loss GW with uniform weights.

    .. math::

        PC_1P \succeq 0,\ PC_2P \succeq 0 \quad\text{or}\quad PC_1P \preceq 0,\
        PC_2P \preceq 0 \;\Longrightarrow\;
        \mathrm{GW}_2(C_1, C_2) = \min_\sigma \frac{1}{n^2}
        \sum_{ik} (C_{1,ik} - C_{2,\sigma(i)\sigma(k)})^2 .

    Parameters
    ----------
    C1, C2 : array ``(n, n)``
        Symmetric matrices of the same size.

    Returns
    -------
    PermutationCertificate
        ``holds`` and the ``slack`` of the general bound (see the module docstring).
    """
    A, B = _host(C1), _host(C2)
    if A.shape != B.shape:
        raise GWInputError(
            f"the permutation certificate needs n == m, got {A.shape[0]} and {B.shape[0]}"
        )
    n = A.shape[0]
    kinds = (centred_definiteness(A), centred_definiteness(B))
    holds = "indefinite" not in kinds and not {"psd", "nsd"} <= set(kinds)
    if n < 2:
        return PermutationCertificate(True, kinds, 0.0, 0.0)
    rho = _mismatch(centred_eigenvalues(A), centred_eigenvalues(B))
    return PermutationCertificate(holds, kinds, rho, 2.0 * rho * (n - 1) / n**2)


@dataclass(frozen=True)
class RankOneBounds:
    r"""Square-loss GW bounds from the best rank-one approximations.

    Attributes
    ----------
    lower : float
        :math:`\max(0, \sqrt{\mathrm{closed\_form}} - \text{residual})^2 \le \mathrm{GW}_2`.
    upper : float
        GW cost of ``coupling`` on the true inputs (:math:`\ge \mathrm{GW}_2`); never above
        ``residual_upper``.
    residual_upper : float
        :math:`(\sqrt{\mathrm{closed\_form}} + \text{residual})^2`.
    closed_form : float
        :math:`\mathrm{GW}_2(C_1, D_1)` of the rank-one approximations, exact.
    residual : float
        :math:`\|C - C_1\|_{p} + \|D - D_1\|_{q}` (weighted Frobenius norms,
        :math:`\|X\|_p^2 = \sum_{ik} p_i p_k X_{ik}^2`; :math:`\|X\|_F / n` for uniform weights).
    coupling : array ``(n, m)``
        An optimal coupling of the rank-one problem (monotone, anti-monotone, or a mix
        of both), in the input's array type.
    signs : tuple of int
        Signs of the rank-one approximations :math:`s a a^\top`, :math:`t b b^\top`.

    Notes
    -----
    The approximations are taken among label-free candidates (the top positive and the
    top negative eigenpairs, when simple; see ``_rank_one_candidates``) and the pair with
    the best ``lower`` is reported; ``upper`` is the cheapest of their couplings. With no
    candidate (repeated top eigenvalues of both signs) the bounds are the trivial
    ``lower = 0``, ``upper`` = cost of the independent coupling, ``signs = (0, 0)``.
    """

    lower: float
    upper: float
    residual_upper: float
    closed_form: float
    residual: float
    coupling: Any
    signs: tuple[int, int]


@dataclass(frozen=True)
class _RankOne:
    sign: int
    vector: np.ndarray  # a with C_1 = sign * a a^T
    mass: float  # sum_i p_i a_i^2
    residual: float  # ||C - C_1||_p


# eigenvalues closer than this (relative to the largest |eigenvalue|) count as repeated
_GAP_RTOL = 1e-4


def _rank_one_candidates(C: np.ndarray, p: np.ndarray) -> list[_RankOne]:
    """Symmetric rank-one approximations of ``C`` that do not depend on node labels.

    The best one in the p-weighted Frobenius norm is the top eigenpair by absolute value
    of :math:`W C W` (Eckart-Young, :math:`W = \\operatorname{diag}(\\sqrt p)`). Its choice
    is label-free only when that eigenvalue is simple, and the top positive and top
    negative eigenvalues tie for bipartite graphs: so the candidates are the top positive
    and the top negative eigenpairs, each kept only when simple. Every candidate gives a
    valid bound (its residual is computed exactly); callers take the best. For an
    asymmetric ``C`` the symmetric part is approximated and the residual is still
    measured against ``C`` itself, which is all the triangle inequality needs.
    """
    root = np.sqrt(p)
    scaled = root[:, None] * C * root[None, :]
    lam, vec = np.linalg.eigh((scaled + scaled.T) / 2)
    gap = _GAP_RTOL * max(np.abs(lam).max(), 1e-300)
    out = []
    for top in {int(np.argmax(lam)), int(np.argmin(lam))}:
        others = np.delete(lam, top)
        if others.size and np.abs(others - lam[top]).min() < gap:
            continue  # repeated: the eigenvector would depend on the labels
        sign = 1 if lam[top] >= 0 else -1
        scaled_a = np.sqrt(abs(lam[top])) * vec[:, top]
        # zero-weight nodes do not enter any cost: give them a = 0
        a = np.divide(scaled_a, root, out=np.zeros_like(scaled_a), where=root > 0)
        residual = float(np.linalg.norm(scaled - sign * np.outer(scaled_a, scaled_a)))
        out.append(_RankOne(sign, a, float(abs(lam[top])), residual))
    return out


def _monotone_dense(u, v, p, q) -> np.ndarray:
    return _xp.to_numpy(to_dense(monotone_coupling(u, v, p, q)))


def _rank_one_optimum(left: _RankOne, right: _RankOne, p, q) -> tuple[float, np.ndarray]:
    """Closed form and an optimal coupling of GW_2(s a a^T, t b b^T)."""
    a, b = left.vector, right.vector
    comonotone = _monotone_dense(a, b, p, q)
    antitone = _monotone_dense(a, -b, p, q)
    hi, lo = float(a @ comonotone @ b), float(a @ antitone @ b)
    if left.sign * right.sign > 0:
        # minimising the cost maximises (a^T pi b)^2: one end of [lo, hi]
        plan = comonotone if abs(hi) >= abs(lo) else antitone
    elif lo < 0 < hi:
        # opposite signs minimise (a^T pi b)^2, and 0 lies between the ends
        t = -lo / (hi - lo)
        plan = t * comonotone + (1 - t) * antitone
    else:
        plan = comonotone if abs(hi) <= abs(lo) else antitone
    inner = float(a @ plan @ b)
    value = left.mass**2 + right.mass**2 - 2 * left.sign * right.sign * inner**2
    return max(value, 0.0), plan


@dataclass(frozen=True)
class _PairBound:
    lower: float
    closed: float
    residual: float
    plan: np.ndarray
    signs: tuple[int, int]


def _pair_bound(left: _RankOne, right: _RankOne, p, q) -> _PairBound:
    closed, plan = _rank_one_optimum(left, right, p, q)
    residual = left.residual + right.residual
    # the closed form subtracts numbers of size mass^2: widen the lower end by that round-off
    eps = np.finfo(np.float64).eps
    slack = 16 * eps * (left.mass**2 + right.mass**2)
    low_root = np.sqrt(max(closed - slack, 0.0)) - residual * (1 + 16 * eps)
    return _PairBound(max(low_root, 0.0) ** 2, closed, residual, plan, (left.sign, right.sign))


def _rank_one_problem(problem: GWProblem) -> RankOneBounds:
    if problem.loss_fun != "square_loss":
        raise GWInputError("the rank-one bounds hold for loss_fun='square_loss' only")
    C, D = _host(problem.C1), _host(problem.C2)
    p, q = _host(problem.p), _host(problem.q)
    pairs = [
        _pair_bound(left, right, p, q)
        for left in _rank_one_candidates(C, p)
        for right in _rank_one_candidates(D, q)
    ]
    C1, C2 = _xp.detach(problem.C1), _xp.detach(problem.C2)
    if not pairs:
        # no label-free rank-one approximation: the trivial bounds, uniform coupling
        plan_xp = _xp.from_numpy(np.outer(p, q), problem.C1)
        upper = _xp.scalar(gw_cost(C1, C2, plan_xp))
        return RankOneBounds(0.0, upper, math.inf, math.nan, math.inf, plan_xp, (0, 0))
    costs = [_xp.scalar(gw_cost(C1, C2, _xp.from_numpy(b.plan, C1))) for b in pairs]
    best = max(pairs, key=lambda b: b.lower)
    cheapest = int(np.argmin(costs))
    return RankOneBounds(
        lower=best.lower,
        upper=costs[cheapest],
        residual_upper=(np.sqrt(best.closed) + best.residual) ** 2,
        closed_form=best.closed,
        residual=best.residual,
        coupling=_xp.from_numpy(pairs[cheapest].plan, problem.C1),
        signs=best.signs,
    )


def rank_one_bounds(C1, C2, p=None, q=None) -> RankOneBounds:
    r"""Square-loss GW bounds from the rank-one closed form and its residual.

    With :math:`C_1 = s\,a a^\top` the best rank-one approximation of :math:`C` in the
    :math:`p`-weighted Frobenius norm (top eigenpair by absolute value; :math:`s = 1` for
    PSD inputs) and likewise :math:`D_1 = t\, b b^\top`,

    .. math::

        \mathrm{GW}_2(C_1, D_1) = \Big(\sum_i p_i a_i^2\Big)^2 + \Big(\sum_j q_j b_j^2\Big)^2
        - 2 s t\, m^2,

    where :math:`m` is the value of :math:`a^\top \pi b` at the optimum: for
    :math:`st = 1` the larger in absolute value of its monotone value
    :math:`\int F_a^{-1} F_b^{-1}` and its anti-monotone value (with mixed-sign vectors the
    anti-monotone one can win; for uniform weights and :math:`n = m` these are
    :math:`a_\uparrow \cdot b_\uparrow / n` and :math:`a_\uparrow \cdot b_\downarrow / n`);
    for :math:`st = -1` the value of smallest absolute value in between. Then, by the
    triangle inequality of :math:`\mathrm{GW}_2^{1/2}`,

    .. math::

        \big|\mathrm{GW}_2(C, D)^{1/2} - \mathrm{GW}_2(C_1, D_1)^{1/2}\big|
        \le \|C - C_1\|_p + \|D - D_1\|_q ,

    with :math:`\|X\|_p = \|X\|_F / n` for uniform weights. The bounds hold for every
    pair of matrices; they are tight for near-rank-one PSD inputs.

    Parameters
    ----------
    C1, C2 : array ``(n, n)``, ``(m, m)``
        Structure matrices (NumPy, CuPy or torch; computed on the host). For an
        asymmetric matrix the approximation is that of its symmetric part and the
        residual is measured against the matrix itself.
    p, q : array, optional
        Node weights, uniform by default.

    Returns
    -------
    RankOneBounds
        ``lower <= GW_2 <= upper <= residual_upper`` (floats, no gradient).

    Examples
    --------
    >>> import numpy as np, gwlite
    >>> a, b = np.array([1., 2., 3.]), np.array([3., 1., 2.])
    >>> r = gwlite.rank_one_bounds(np.outer(a, a), np.outer(b, b))
    >>> bool(np.isclose(r.lower, 0.0) and np.isclose(r.upper, 0.0))
    True
    """
    return _rank_one_problem(make_problem(C1, C2, p, q, "square_loss"))


def _lower_for_loss(problem: GWProblem) -> float:
    r"""The square-loss rank-one lower bound, turned into one for ``problem.loss_fun``.

    For ``abs_loss``: every pair has :math:`|a - b|^2 \le M |a - b|` with
    :math:`M = \max_{ik,jl} |C_{ik} - D_{jl}|`, so :math:`\mathcal E_2(\pi) \le M
    \mathcal E_1(\pi)` for every coupling and :math:`\mathrm{GW}_1 \ge \mathrm{GW}_2 / M`.
    """
    if problem.loss_fun == "square_loss":
        return _rank_one_problem(problem).lower
    C, D = _host(problem.C1), _host(problem.C2)
    spread = max(C.max() - D.min(), D.max() - C.min())
    if spread <= 0:
        return 0.0  # both matrices are the same constant: GW = 0
    square = GWProblem(problem.C1, problem.C2, problem.p, problem.q, "square_loss", problem.uniform)
    return _rank_one_problem(square).lower / spread


def rank_one_lower(problem: GWProblem):
    """``rank_one_bounds(...).lower`` of a validated (possibly batched) problem.

    The value of ``lower_bound(lower="rank_one")``; an array in the problem's namespace
    (no gradient: the eigendecomposition runs on the host). For ``abs_loss`` it is the
    square-loss bound divided by the largest entry difference (see
    ``_lower_for_loss``).
    """
    xp = problem.xp
    if not problem.batch_shape:
        value = _lower_for_loss(problem)
        return xp.asarray(value, dtype=problem.C1.dtype, device=_xp.device(problem.C1))
    C1, C2 = _host(problem.C1), _host(problem.C2)
    p, q = _host(problem.p), _host(problem.q)
    shape = problem.batch_shape
    flat = [
        _lower_for_loss(make_problem(c1, c2, pp, qq, problem.loss_fun))
        for c1, c2, pp, qq in zip(
            C1.reshape((-1,) + C1.shape[-2:]),
            C2.reshape((-1,) + C2.shape[-2:]),
            p.reshape((-1, p.shape[-1])),
            q.reshape((-1, q.shape[-1])),
        )
    ]
    values = np.asarray(flat).reshape(shape)
    return xp.asarray(values, dtype=problem.C1.dtype, device=_xp.device(problem.C1))
