r"""The bilinear map behind the GW gradient, exact and low-rank.

For couplings :math:`\pi` with fixed marginals :math:`p, q`, both losses have the form

.. math::

    \mathcal E(\pi) = \kappa - 2 \langle X(\pi), \pi \rangle, \qquad
    \nabla \mathcal E(\pi) = \text{row/column terms} - 4 X(\pi),
    \qquad X(\pi) = \sum_t w_t A_t \pi B_t^\top

(symmetrised with :math:`A_t^\top \pi B_t` when the matrices are not symmetric):

* square loss: one term, :math:`A = C^1, B = C^2`, and
  :math:`\kappa = p^\top (C^1)^{\circ 2} p + q^\top (C^2)^{\circ 2} q`
  (Peyre, Cuturi & Solomon 2016, Prop. 1);
* absolute loss, by level sets of the entries :math:`z_0 < z_1 < \dots`:
  :math:`A_t = [C^1 > z_t]`, :math:`B_t = [C^2 > z_t]`, :math:`w_t = z_{t+1} - z_t` and
  :math:`\kappa = p^\top C^1 p + q^\top C^2 q - 2 z_0` (see :mod:`gwlite.coupling`).

:class:`Factored` replaces the square-loss matrices by truncated randomized SVDs
(Halko, Martinsson & Tropp 2011): :math:`X(\pi) \approx U_1 S_1 (V_1^\top \pi V_2) S_2
U_2^\top` costs :math:`O(nmr)` instead of :math:`O(nm(n + m))`. It only steers the
first iterations of the solver; every plan is priced with the exact matrices.

References
----------
N. Halko, P. G. Martinsson, J. A. Tropp. Finding structure with randomness:
probabilistic algorithms for constructing approximate matrix decompositions. SIAM
Review 53(2), 2011.
G. Peyre, M. Cuturi, J. Solomon. Gromov-Wasserstein averaging of kernel and distance
matrices. ICML 2016.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from gwlite import _xp
from gwlite.errors import GWInputError
from gwlite.problem import GWProblem

__all__ = [
    "MANY_LEVELS_NOTE",
    "MAX_ABS_LEVELS",
    "Exact",
    "Factored",
    "check_loss_levels",
    "exact",
    "factored",
    "few_levels",
    "problem_levels",
]

#: ``abs_loss`` is accepted when both matrices together have at most this many values
MAX_ABS_LEVELS = 64
#: why a solver skipped its gradient stage for an ``abs_loss`` problem with more values
MANY_LEVELS_NOTE = "abs_loss with many distinct entries (no affordable gradient)"
# a factorisation is used when it captures the matrix to this relative Frobenius error
FACTOR_RTOL = 0.03
# oversampling and power iterations of the randomized range finder
OVERSAMPLE = 10
POWER_ITERS = 2


def _t(xp, A):
    return xp.matrix_transpose(A)


@dataclass(frozen=True)
class Exact:
    """:math:`X(\\pi)` from the matrices themselves (see the module docstring)."""

    A: tuple
    B: tuple
    w: tuple
    symmetric: bool
    scale: float
    kappa: float

    def apply(self, xp, P):
        """:math:`X(P)` for a plan or a stack of plans ``(..., n, m)``."""
        out = None
        for A, B, w in zip(self.A, self.B, self.w):
            term = A @ P @ _t(xp, B)
            if not self.symmetric:
                term = (term + _t(xp, A) @ P @ B) / 2
            term = term if w == 1 else w * term
            out = term if out is None else out + term
        return out

    def apply_sparse(self, xp, rows, cols, values):
        """:math:`X(V)` for a plan given by its non-zeros: one thin product per term."""
        out = None
        for A, B, w in zip(self.A, self.B, self.w):
            left = xp.take(A, rows, axis=1) * values[None, :]
            term = left @ _t(xp, xp.take(B, cols, axis=1))
            if not self.symmetric:
                left_t = xp.take(_t(xp, A), rows, axis=1) * values[None, :]
                term = (term + left_t @ _t(xp, xp.take(_t(xp, B), cols, axis=1))) / 2
            term = term if w == 1 else w * term
            out = term if out is None else out + term
        return out

    def cost(self, xp, P):
        """:math:`\\kappa - 2\\langle X(P), P\\rangle`: the GW cost of plans with the
        problem's marginals (shape ``(...)``)."""
        cross = xp.sum(xp.sum(self.apply(xp, P) * P, axis=-1), axis=-1)
        return self.kappa - 2 * cross

    def product_cost(self, xp, p, q) -> float:
        r"""The cost of the product coupling :math:`p q^\top` in :math:`O(n^2 + m^2)`:
        :math:`X(p q^\top) = \sum_t w_t (A_t p)(B_t q)^\top`."""
        cross = sum(
            w * float(p @ (A @ p)) * float(q @ (B @ q)) for A, B, w in zip(self.A, self.B, self.w)
        )
        return self.kappa - 2 * cross

    def astype(self, xp, dtype) -> Exact:
        return Exact(
            tuple(xp.astype(A, dtype, copy=False) for A in self.A),
            tuple(xp.astype(B, dtype, copy=False) for B in self.B),
            self.w,
            self.symmetric,
            self.scale,
            self.kappa,
        )


def exact(problem: GWProblem, symmetric: bool | None = None) -> Exact:
    """The exact operator of a (detached) problem; refuses ``abs_loss`` on many values.
    ``symmetric`` saves the O(n^2) check when the caller knows it."""
    xp = problem.xp
    C1, C2, p, q = problem.C1, problem.C2, problem.p, problem.q
    symmetric = problem.is_symmetric() if symmetric is None else symmetric
    if problem.loss_fun == "square_loss":
        scale = float(xp.max(xp.abs(C1))) * float(xp.max(xp.abs(C2)))
        kappa = float(p @ ((C1 * C1) @ p) + q @ ((C2 * C2) @ q))
        return Exact((C1,), (C2,), (1.0,), symmetric, scale if scale > 0 else 1.0, kappa)
    levels = problem_levels(problem)
    A, B, w = [], [], []
    for lo, hi in zip(levels[:-1], levels[1:]):
        A.append(xp.astype(C1 > lo, C1.dtype))
        B.append(xp.astype(C2 > lo, C2.dtype))
        w.append(hi - lo)
    if not A:  # one value in both matrices: X is zero, every coupling costs kappa
        A, B, w = [xp.zeros_like(C1)], [xp.zeros_like(C2)], [1.0]
    scale = levels[-1] - levels[0] if len(levels) > 1 else 1.0
    kappa = float(p @ (C1 @ p) + q @ (C2 @ q)) - 2 * levels[0]
    return Exact(tuple(A), tuple(B), tuple(w), symmetric, scale, kappa)


def _levels(xp, C1, C2) -> list[float]:
    values = xp.unique_values(xp.concat([xp.reshape(C1, (-1,)), xp.reshape(C2, (-1,))]))
    if values.shape[0] > MAX_ABS_LEVELS:
        raise GWInputError(
            f"method='proximal' supports loss_fun='abs_loss' only when C1 and C2 together "
            f"take at most {MAX_ABS_LEVELS} distinct values (graphs: adjacency or shortest "
            f"paths); these take {values.shape[0]}. Use loss_fun='square_loss', or for "
            "'abs_loss' method='sorted' (a certified interval) or method='exact' (n = m "
            "small, uniform weights)"
        )
    return sorted(float(v) for v in _xp.to_numpy(values))


def problem_levels(problem: GWProblem) -> list[float]:
    """The sorted distinct entries of both matrices of an ``abs_loss`` problem (its
    level sets), computed once per problem; ``GWInputError`` when there are more than
    :data:`MAX_ABS_LEVELS`."""
    if problem.levels is None:
        levels = _levels(problem.xp, _xp.detach(problem.C1), _xp.detach(problem.C2))
        object.__setattr__(problem, "levels", levels)
    return problem.levels


def check_loss_levels(problem: GWProblem) -> None:
    """Raise the ``abs_loss`` error early (before any work) when it applies."""
    if problem.loss_fun == "abs_loss":
        problem_levels(problem)


def few_levels(problem: GWProblem) -> bool:
    """Whether the level-set gradient is affordable: ``square_loss``, or ``abs_loss`` on
    at most :data:`MAX_ABS_LEVELS` distinct entries."""
    try:
        check_loss_levels(problem)
    except GWInputError:
        return False
    return True


@dataclass(frozen=True)
class Factored:
    """:math:`X(\\pi)` from truncated SVDs :math:`C^k \\approx U_k S_k V_k^\\top`."""

    U1: object  # U1 * S1, (n, r1)
    V1: object  # (n, r1)
    U2: object  # U2 * S2, (m, r2)
    V2: object  # (m, r2)
    symmetric: bool
    rank: tuple
    residual: tuple

    def apply(self, xp, P):
        core = _t(xp, self.V1) @ P @ self.V2
        out = self.U1 @ core @ _t(xp, self.U2)
        if not self.symmetric:
            core_t = _t(xp, self.U1) @ P @ self.U2
            out = (out + self.V1 @ core_t @ _t(xp, self.V2)) / 2
        return out


def _svd(xp, C, r_max: int, seed: int):
    """Randomized truncated SVD: ``(U * s, V, s, total)`` with ``r_max`` columns."""
    n = C.shape[0]
    k = min(n, r_max + OVERSAMPLE)
    rng = np.random.default_rng(seed)
    omega = xp.asarray(rng.standard_normal((n, k)), dtype=C.dtype, device=_xp.device(C))
    Y = C @ omega
    for _ in range(POWER_ITERS):
        Y, _ = xp.linalg.qr(Y)
        Y = C @ (_t(xp, C) @ Y)
    Q, _ = xp.linalg.qr(Y)
    Ub, s, Vt = xp.linalg.svd(_t(xp, Q) @ C, full_matrices=False)
    U = Q @ Ub[:, :r_max]
    return U * s[None, :r_max], _t(xp, Vt[:r_max, :]), _xp.to_numpy(s[:r_max])


def _rank_for(s: np.ndarray, total: float, rtol: float):
    """Smallest rank whose truncation error ``sqrt(total - sum s_k^2) / sqrt(total)``
    is at most ``rtol``, and that error; ``None`` if no rank up to ``len(s)`` does."""
    tail = total - np.cumsum(s.astype(np.float64) ** 2)
    errors = np.sqrt(np.maximum(tail, 0.0) / total) if total > 0 else np.zeros_like(tail)
    ok = np.nonzero(errors <= rtol)[0]
    if len(ok) == 0:
        return None, float(errors[-1]) if len(errors) else 1.0
    return int(ok[0]) + 1, float(errors[ok[0]])


def factored(
    problem: GWProblem,
    dtype,
    *,
    r_max: int,
    seed: int = 0,
    rtol: float = FACTOR_RTOL,
    symmetric: bool | None = None,
):
    """A :class:`Factored` operator when both square-loss matrices are captured to
    ``rtol`` by a rank at most ``r_max``; ``None`` otherwise (or for ``abs_loss``)."""
    if problem.loss_fun != "square_loss" or r_max < 1:
        return None
    xp = problem.xp
    parts = []
    for k, C in enumerate((problem.C1, problem.C2)):
        C = xp.astype(C, dtype, copy=False)
        total = float(xp.sum(C * C))
        # a small sketch first: most matrices that factor at all factor at a low rank
        for r in sorted({min(32, r_max), r_max}):
            US, V, s = _svd(xp, C, min(r, C.shape[0]), seed + k)
            rank, error = _rank_for(s, total, rtol)
            if rank is not None:
                break
        if rank is None or not math.isfinite(error):
            return None
        parts.append((US[:, :rank], V[:, :rank], rank, error))
    (U1, V1, r1, e1), (U2, V2, r2, e2) = parts
    symmetric = problem.is_symmetric() if symmetric is None else symmetric
    return Factored(U1, V1, U2, V2, symmetric, (r1, r2), (e1, e2))
