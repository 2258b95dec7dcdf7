r"""The stack of many problems and the steps that act on all of them at once.

Problems of one padded shape ``(N, K)`` and one loss are held as one :class:`Stack`:
matrices ``(B, N, N)``, ``(B, K, K)``, weights with zeros on the padded nodes, and plans
``(B, S, N, K)``, ``S`` per problem. For ``abs_loss`` the stack also holds each
problem's level sets (:mod:`gwlite.solvers._operators`): :math:`X(\pi) = \sum_t w_t
A_t \pi B_t^\top` with :math:`A_t = [C^1 > z_t]`, :math:`B_t = [C^2 > z_t]`, stacked
``(B, T, N, N)`` and ``(B, T, K, K)`` with :math:`w_t` folded into :math:`A_t`, ``T``
the most levels of a problem in the stack (the others padded with zero terms). The functions here are the *step*, *round* and
*price* of :mod:`gwlite.solvers.batched`, each a few batched array operations on the
array API (NumPy, torch, CuPy). Why padding changes nothing: the theory page,
*Padding with zero-weight nodes*.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from gwlite import _xp
from gwlite.solvers import _sinkhorn

__all__ = [
    "Best",
    "Stack",
    "as_index",
    "exact_cost",
    "inner",
    "make_stack",
    "mirror_step",
    "price",
    "round_plans",
]


# --------------------------------------------------------------------- the stack
@dataclass(frozen=True)
class Stack:
    """Problems of one padded shape ``(N, K)``, stacked along the first axis."""

    xp: object
    index: np.ndarray  # positions in the caller's list
    C1: object  # (B, N, N)
    C2: object  # (B, K, K)
    p: object  # (B, 1, N): zero on padded nodes
    q: object  # (B, 1, K)
    M: object  # (B, 1, N, K) or None
    kappa: object  # (B, 1): p' C1^2 p + q' C2^2 q
    scale: object  # (B, 1, 1, 1): the objective's scale (step and epsilon unit)
    alpha: float
    symmetric: bool
    permutations: np.ndarray  # (B,) uniform weights and n == m: vertices are permutations
    n: np.ndarray
    m: np.ndarray
    A: object = None  # abs_loss: (B, T, N, N) weighted level sets of C1, else None
    Bt: object = None  # abs_loss: (B, T, K, K) level sets of C2

    @property
    def square(self) -> bool:
        """Whether the stack's loss is ``square_loss`` (else ``abs_loss`` by levels)."""
        return self.A is None

    def take(self, keep: np.ndarray) -> Stack:
        xp = self.xp
        at = xp.asarray(keep, device=_xp.device(self.C1))

        def pick(a):
            return None if a is None else xp.take(a, at, axis=0)

        return Stack(
            xp,
            self.index[keep],
            *(pick(a) for a in (self.C1, self.C2, self.p, self.q, self.M, self.kappa, self.scale)),
            self.alpha,
            self.symmetric,
            self.permutations[keep],
            self.n[keep],
            self.m[keep],
            pick(self.A),
            pick(self.Bt),
        )

    def apply(self, P):
        """:math:`X(P)` for plans ``(B, S, N, K)``: two batched products per term (one
        term for the square loss, one per level for the absolute loss)."""
        if self.square:
            return self._term(self.C1, self.C2, P)
        out = None
        for t in range(self.A.shape[1]):  # a loop keeps memory at one plan stack per term
            term = self._term(self.A[:, t], self.Bt[:, t], P)
            out = term if out is None else out + term
        return out

    def _term(self, A, B, P):
        xp = self.xp
        A, B = A[:, None, ...], B[:, None, ...]
        out = A @ P @ xp.matrix_transpose(B)
        if not self.symmetric:
            out = (out + xp.matrix_transpose(A) @ P @ B) / 2
        return out

    def gradient(self, X):
        """:math:`\\nabla F` up to row/column terms, from :math:`X(P)`."""
        grad = -4.0 * self.alpha * X
        return grad if self.M is None else grad + (1.0 - self.alpha) * self.M

    def objective(self, P, X=None):
        """:math:`F(P)` of plans with the problems' marginals, ``(B, S)``."""
        xp = self.xp
        X = self.apply(P) if X is None else X
        value = self.alpha * (self.kappa - 2.0 * inner(xp, X, P))
        return value if self.M is None else value + (1.0 - self.alpha) * inner(xp, self.M, P)


def exact_cost(st: Stack, P) -> np.ndarray:
    r"""The objective of plans ``(B, S, N, K)`` as :func:`gwlite.coupling.gw_cost` prices
    one (float64 host array ``(B, S)``): the square loss expanded with each plan's own
    marginals :math:`a, b`, :math:`a^\top (C^1)^{\circ 2} a + b^\top (C^2)^{\circ 2} b - 2
    \langle C^1 \pi C^{2\top}, \pi\rangle` clamped at 0, plus the linear term. Every
    plan of the stack priced in a few batched products: the ``upper`` of the results.
    Square loss only (an ``abs_loss`` stack's plans are priced one by one by
    :func:`gwlite.coupling.gw_cost`)."""
    xp = st.xp
    a, b = xp.sum(P, axis=-1), xp.sum(P, axis=-2)  # (B, S, N), (B, S, K)
    C1sq, C2sq = (st.C1 * st.C1)[:, None], (st.C2 * st.C2)[:, None]
    const = xp.sum(a * xp.squeeze(C1sq @ a[..., None], axis=-1), axis=-1) + xp.sum(
        b * xp.squeeze(C2sq @ b[..., None], axis=-1), axis=-1
    )
    cross = inner(xp, st.C1[:, None] @ P @ xp.matrix_transpose(st.C2[:, None]), P)
    value = np.maximum(_xp.to_numpy(const - 2 * cross).astype(np.float64), 0.0)
    value = st.alpha * value if st.alpha != 1 else value
    if st.M is not None:
        linear = _xp.to_numpy(inner(xp, st.M, P)).astype(np.float64)
        value = value + (1.0 - st.alpha) * linear
    return value


def as_index(xp, rows: np.ndarray, like):
    return xp.asarray(rows, device=_xp.device(like))


def inner(xp, A, B):
    """:math:`\\langle A, B\\rangle` over the last two axes (leading axes broadcast)."""
    flat = (-1,)
    return xp.vecdot(
        xp.reshape(A, tuple(A.shape[:-2]) + flat), xp.reshape(B, tuple(B.shape[:-2]) + flat)
    )


def make_stack(problems, linear, index, N, K, alpha, dtype) -> Stack:
    """Zero-padded stacks of the problems ``index`` (all of padded shape ``(N, K)`` and
    one loss)."""
    first = problems[index[0]]
    xp, device = first.xp, _xp.device(first.C1)
    B = len(index)
    seen: dict = {}  # matrices shared by several problems (a dataset's pairs) checked once
    C1 = xp.zeros((B, N, N), dtype=dtype, device=device)
    C2 = xp.zeros((B, K, K), dtype=dtype, device=device)
    p = xp.zeros((B, 1, N), dtype=dtype, device=device)
    q = xp.zeros((B, 1, K), dtype=dtype, device=device)
    M = None if linear is None else xp.zeros((B, 1, N, K), dtype=dtype, device=device)
    n, m = np.zeros(B, dtype=np.int64), np.zeros(B, dtype=np.int64)
    for b, k in enumerate(index):
        pr = problems[k]
        n[b], m[b] = pr.n, pr.m
        C1[b, : pr.n, : pr.n] = xp.astype(_xp.detach(pr.C1), dtype)
        C2[b, : pr.m, : pr.m] = xp.astype(_xp.detach(pr.C2), dtype)
        p[b, 0, : pr.n] = xp.astype(_xp.detach(pr.p), dtype)
        q[b, 0, : pr.m] = xp.astype(_xp.detach(pr.q), dtype)
        if M is not None:
            M[b, 0, : pr.n, : pr.m] = xp.astype(linear[k], dtype)
    a, b = p[:, 0, :, None], q[:, 0, :, None]  # (B, N, 1), (B, K, 1)
    A = Bt = None
    if first.loss_fun == "square_loss":
        kappa = inner(xp, (C1 * C1) @ a, a) + inner(xp, (C2 * C2) @ b, b)  # (B,)
        top = xp.max(xp.abs(C1), axis=(1, 2)) * xp.max(xp.abs(C2), axis=(1, 2))
    else:
        A, Bt, lowest, top = _level_stacks(problems, index, N, K, dtype)
        kappa = inner(xp, C1 @ a, a) + inner(xp, C2 @ b, b) - 2 * lowest
    scale = alpha * top
    if M is not None:
        scale = scale + (1 - alpha) * xp.max(xp.abs(M), axis=(1, 2, 3))
    scale = xp.where(scale > 0, scale, xp.ones_like(scale))
    permutations = np.array(
        [problems[k].uniform and problems[k].n == problems[k].m for k in index], dtype=bool
    )
    symmetric = all(
        _symmetric(problems[k].C1, seen) and _symmetric(problems[k].C2, seen) for k in index
    )
    return Stack(
        xp,
        np.asarray(index),
        C1,
        C2,
        p,
        q,
        M,
        kappa[:, None],
        scale[:, None, None, None],
        alpha,
        symmetric,
        permutations,
        n,
        m,
        A,
        Bt,
    )


def _level_stacks(problems, index, N, K, dtype) -> tuple:
    r"""The ``abs_loss`` terms of the problems ``index``: level sets ``(B, T, N, N)``
    weighted by :math:`z_{t+1} - z_t`, ``(B, T, K, K)``, and per problem the lowest level
    :math:`z_0` and the range :math:`z_{\max} - z_0` (the scale of
    :func:`gwlite.solvers._operators.exact`), as arrays ``(B,)``."""
    from gwlite.solvers._operators import problem_levels

    first = problems[index[0]]
    xp, device = first.xp, _xp.device(first.C1)
    mats = [(_xp.detach(problems[k].C1), _xp.detach(problems[k].C2)) for k in index]
    levels = [problem_levels(problems[k]) for k in index]
    T = max(1, max(len(z) - 1 for z in levels))
    A = xp.zeros((len(index), T, N, N), dtype=dtype, device=device)
    Bt = xp.zeros((len(index), T, K, K), dtype=dtype, device=device)
    for b, ((C1, C2), z) in enumerate(zip(mats, levels)):
        n, m = C1.shape[0], C2.shape[0]
        for t, (lo, hi) in enumerate(zip(z[:-1], z[1:])):
            A[b, t, :n, :n] = (hi - lo) * xp.astype(C1 > lo, dtype)
            Bt[b, t, :m, :m] = xp.astype(C2 > lo, dtype)
    lowest = xp.asarray([z[0] for z in levels], dtype=dtype, device=device)
    top = xp.asarray(
        [z[-1] - z[0] if len(z) > 1 else 1.0 for z in levels], dtype=dtype, device=device
    )
    return A, Bt, lowest, top


def _symmetric(C, seen: dict) -> bool:
    """:meth:`gwlite.problem.GWProblem.is_symmetric` of one matrix, once per array."""
    from gwlite.problem import _is_symmetric

    if id(C) not in seen:
        seen[id(C)] = (C, _is_symmetric(C))  # C kept: its id stays unique
    return seen[id(C)][1]


# --------------------------------------------------------------------- step
def mirror_step(st: Stack, P, g, tau: float, eps: float, inner_iter: int, floor: float):
    """One KL mirror-descent step of every plan: the Sinkhorn projection of
    :math:`P^{1 - \\tau\\varepsilon} \\exp(-\\tau \\nabla F(P))` (steps relative to the scale)."""
    xp = st.xp
    Z = -(tau / st.scale) * st.gradient(st.apply(P))
    beta = 1.0 - tau * eps
    if beta > 1e-9:
        Z = Z + beta * xp.log(xp.maximum(P, xp.asarray(math.exp(floor), dtype=P.dtype)))
    with np.errstate(divide="ignore"):  # log(0) = -inf: the padded columns' potential
        return _sinkhorn.project(
            xp, Z, _log(xp, st.p), _log(xp, st.q), st.p, st.q, g, inner_iter, floor
        )


def _log(xp, w):
    """``log(w)``, ``-inf`` on zero-weight (padded) nodes, without a warning."""
    positive = w > 0
    return xp.where(positive, xp.log(xp.where(positive, w, xp.ones_like(w))), -math.inf)


# --------------------------------------------------------------------- round
def round_plans(xp, P, p, q):
    """Altschuler et al.'s rounding onto :math:`\\Pi(p, q)` of a stack ``(..., n, m)``
    (:func:`gwlite.coupling.round_to_polytope`, batched)."""
    P = xp.where(P > 0, P, xp.zeros_like(P))
    row = xp.sum(P, axis=-1)
    P = P * xp.where(row > p, p / xp.where(row > p, row, xp.ones_like(row)), 1.0)[..., None]
    col = xp.sum(P, axis=-2)
    P = P * xp.where(col > q, q / xp.where(col > q, col, xp.ones_like(col)), 1.0)[..., None, :]
    err_r = xp.maximum(p - xp.sum(P, axis=-1), 0.0)
    err_c = xp.maximum(q - xp.sum(P, axis=-2), 0.0)
    total = xp.sum(err_r, axis=-1)
    share = xp.where(total > 0, 1.0 / xp.where(total > 0, total, xp.ones_like(total)), 0.0)
    return P + err_r[..., :, None] * err_c[..., None, :] * share[..., None, None]


def sharpen_plans(st: Stack, P):
    """The vertex each iterate approaches: the nearest permutation (an assignment on
    the plan) when the vertices are permutations, else each row's mass on its largest
    entry, rounded."""
    from scipy.optimize import linear_sum_assignment

    xp = st.xp
    K = P.shape[-1]
    cols = xp.arange(K, device=_xp.device(P))
    valid = st.q[..., None, :] > 0  # (B, 1, 1, K)
    masked = xp.where(valid, P, -1.0)
    best = xp.argmax(masked, axis=-1)
    hard = xp.where(best[..., None] == cols, st.p[..., None], xp.zeros_like(P))
    hard = round_plans(xp, hard, st.p, st.q)
    if not st.permutations.any():
        return hard
    host = _xp.to_numpy(P)
    out = _xp.to_numpy(hard).copy()
    for b in np.nonzero(st.permutations)[0]:
        n = int(st.n[b])
        for s in range(host.shape[1]):
            rows, perm = linear_sum_assignment(host[b, s, :n, :n], maximize=True)
            out[b, s] = 0.0
            out[b, s, rows, perm] = 1.0 / n
    return _xp.from_numpy(out, P)


# --------------------------------------------------------------------- price
@dataclass
class Best:
    """Each problem's best plan per start (host costs, stacked plans)."""

    cost: np.ndarray  # (B, S)
    plan: object  # (B, S, N, K)

    def offer(self, xp, costs, plans) -> None:
        better = costs < self.cost
        if better.any():
            mask = xp.asarray(better, device=_xp.device(plans))[..., None, None]
            self.plan = xp.where(mask, plans, self.plan)
            self.cost = np.where(better, costs, self.cost)

    def take(self, xp, keep):
        at = xp.asarray(keep, device=_xp.device(self.plan))
        return Best(self.cost[keep], xp.take(self.plan, at, axis=0))


def price(st: Stack, P, best: Best, sharpen: bool = True) -> None:
    """Round every iterate (and its sharpened vertex), price them all, keep the best.
    The starts are priced as they are (``sharpen=False``): they are the polish's starts
    in the ``"cg"`` scheme, and a vertex near the product coupling is arbitrary."""
    xp = st.xp
    rounded = round_plans(xp, P, st.p, st.q)
    for plans in (rounded, sharpen_plans(st, P)) if sharpen else (rounded,):
        best.offer(xp, _xp.to_numpy(st.objective(plans)).astype(np.float64), plans)
