r"""ADMM on the facially reduced doubly non-negative relaxation, for ``n * m`` in the thousands.

Host NumPy, float64; :mod:`gwlite.solvers.sdp` drives it (``solver="admm"``). The
relaxation is that of :mod:`gwlite.solvers._sdp_model` (Chen et al. 2024) written as in
Oliveira, Wolkowicz and Xu (2018) for the QAP: with :math:`Z = \begin{pmatrix}1 &
x^\top\\ x & P\end{pmatrix}`,

.. math::

    \min\ \langle \tilde L, Y\rangle \quad\text{s.t.}\quad Y = Z,\ Z \succeq 0,\
    \operatorname{range} Z \subseteq \ker K,\ Y \in \mathcal B,

where :math:`\mathcal B = \{Y : Y_{00} = 1,\ 0 \le Y_{ab} \le \bar u_{ab}\}` is a box
(:math:`\bar u_{0a} = u_a`, :math:`\bar u_{ab} = u_a u_b`, :math:`u_{(ij)} = \min(p_i,
q_j)`: bounds every feasible point of the relaxation satisfies,
``docs/theory_sdp.md`` section 5). The splitting :math:`Y = Z` separates the cheap
polyhedral part (a clip) from the semidefinite part (one eigendecomposition of the
projection of an :math:`(nm + 1)`-matrix onto :math:`\ker K`):

.. math::

    Z^+ = \Pi_{\succeq 0}\bigl(P_Q (Y + \Lambda/\beta) P_Q\bigr),\qquad
    Y^+ = \Pi_{\mathcal B}\bigl(Z^+ - (\tilde L + \Lambda)/\beta\bigr),\qquad
    \Lambda^+ = \Lambda + \gamma\beta(Y^+ - Z^+),

:math:`P_Q` the orthogonal projector onto :math:`\ker K` (a rank-:math:`(n + m - 1)`
correction of the identity). The iteration runs in the variables :math:`Y_{ab} / (d_a
d_b)`, :math:`d = (1, u)`, in which the box is :math:`[0, 1]` for every weight vector
(the scaling OWX's permutation matrices have by construction).

Every multiplier :math:`\Lambda` gives a lower bound, whatever the iteration did
(:func:`gwlite.solvers._sdp_model.certify_linear` with the linear part
:math:`\tilde L + \Lambda`): this is the Lagrangian dual bound of OWX made rigorous.

References
----------
D. E. Oliveira, H. Wolkowicz, Y. Xu. ADMM for the SDP relaxation of the QAP. Math.
Prog. Comp. 10 (2018) 631-658.
J. Chen, B. T. Nguyen, S. H. Koh, Y. S. Soh. Semidefinite relaxations of the
Gromov-Wasserstein distance. NeurIPS 2024.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np

from gwlite.solvers._sdp_model import certify_linear, marginal_operator

__all__ = [
    "ADMMModel",
    "ADMMRun",
    "ADMMState",
    "build",
    "estimate_seconds",
    "initial_state",
    "moment",
    "multiplier",
    "run",
    "step",
]

#: order (``n m + 1``) from which the iterations' eigendecompositions run in float32
SINGLE_PRECISION_ORDER = 400
#: over-relaxed dual step of OWX (``gamma`` in their paper)
DUAL_STEP = 1.618
# residual balancing (Boyd et al. 2011, 3.4.1): beta is doubled or halved when the
# primal and dual residuals differ by more than this factor, checked every _BALANCE_EVERY
_BALANCE_RATIO = 10.0
_BALANCE_EVERY = 10


@dataclass(frozen=True)
class ADMMModel:
    r"""The dense data of one relaxation (``N = n m``; the matrices have order ``N + 1``).

    Attributes
    ----------
    L : numpy.ndarray ``(N, N)``
        Symmetrised lifted cost (row-major pairs ``i * m + j``), as in ``SDPModel``.
    L_abs : numpy.ndarray ``(N, N)``
        Its entrywise round-off reference (see ``SDPModel``).
    p, q : numpy.ndarray
        The weights (positive).
    d : numpy.ndarray ``(N + 1,)``
        The scaling :math:`(1, u)`, :math:`u_{(ij)} = \min(p_i, q_j)`.
    cost : numpy.ndarray ``(N + 1, N + 1)``
        :math:`\tilde L` in the scaled variables, :math:`d_a d_b \tilde L_{ab}`.
    basis : numpy.ndarray ``(N + 1, n + m - 1)``
        Orthonormal basis of the range of :math:`(K D)^\top` (the complement of the
        scaled kernel).
    """

    L: np.ndarray
    L_abs: np.ndarray
    p: np.ndarray
    q: np.ndarray
    d: np.ndarray
    cost: np.ndarray
    basis: np.ndarray

    @property
    def order(self) -> int:
        return self.cost.shape[0]


@dataclass(frozen=True)
class ADMMState:
    """One iterate (scaled variables): ``Y`` in the box, ``Z`` PSD on the kernel,
    ``Lam`` the multiplier of ``Y = Z``, ``beta`` the penalty."""

    Y: np.ndarray
    Z: np.ndarray
    Lam: np.ndarray
    beta: float
    iteration: int
    primal_residual: float = np.inf
    dual_residual: float = np.inf
    rank: int = 0


def build(L: np.ndarray, L_abs: np.ndarray, p: np.ndarray, q: np.ndarray) -> ADMMModel:
    """The ADMM data of the relaxation with lifted cost ``L`` (``SDPModel.L``)."""
    u = np.minimum(p[:, None], q[None, :]).ravel()
    d = np.concatenate([[1.0], u])
    cost = np.zeros((len(d), len(d)))
    cost[1:, 1:] = L * u[:, None] * u[None, :]
    # K D has full row rank n + m - 1 (the last marginal row is implied and dropped)
    basis, _ = np.linalg.qr((marginal_operator(p, q) * d[None, :]).T)
    return ADMMModel(L, L_abs, p, q, d, cost, basis)


def initial_state(model: ADMMModel, plan: np.ndarray | None = None) -> ADMMState:
    """Start at the lift of a coupling (``plan``, else :math:`pq^\\top`), zero multiplier,
    and a penalty that balances the cost against the box's scale."""
    x = np.outer(model.p, model.q).ravel() if plan is None else np.asarray(plan).ravel()
    z = np.concatenate([[1.0], x]) / model.d
    Y = np.outer(z, z)
    beta = max(float(np.linalg.norm(model.cost)) / model.order, 1e-12)
    return ADMMState(Y=Y, Z=Y.copy(), Lam=np.zeros_like(Y), beta=beta, iteration=0)


def _project_kernel(model: ADMMModel, X: np.ndarray) -> np.ndarray:
    """:math:`P_Q X P_Q` with :math:`P_Q = I - BB^\\top` (``B = model.basis``), symmetric."""
    B = model.basis
    XB = X @ B
    out = X - B @ XB.T - XB @ B.T + B @ ((B.T @ XB) @ B.T)
    return (out + out.T) / 2


def _psd_part(X: np.ndarray) -> tuple[np.ndarray, int]:
    """The projection of a symmetric ``X`` onto the PSD cone, and its rank.

    From order :data:`SINGLE_PRECISION_ORDER` on, the eigendecomposition runs in float32:
    about twice as fast (the tridiagonal reduction is memory bound), and only the
    iteration's path changes, never a bound's validity: every bound is certified in
    float64 from the multiplier, whatever the iterate (module docstring). The part of
    the smaller rank is rebuilt (``Z = X_+`` or ``X - X_-``), which halves the product
    when most eigenvalues are negative.
    """
    import scipy.linalg  # imported on use: `import gwlite` stays light

    dtype = np.float32 if X.shape[0] >= SINGLE_PRECISION_ORDER else np.float64
    lam, V = scipy.linalg.eigh(X.astype(dtype), driver="evd", overwrite_a=True, check_finite=False)
    keep = lam > 0
    rank = int(keep.sum())
    if 2 * rank <= len(lam):
        W = V[:, keep] * np.sqrt(lam[keep])
        return (W @ W.T).astype(np.float64), rank
    W = V[:, ~keep] * np.sqrt(-lam[~keep])
    return X + (W @ W.T).astype(np.float64), rank


def step(model: ADMMModel, state: ADMMState) -> ADMMState:
    """One ADMM iteration (the three updates of the module docstring)."""
    beta = state.beta
    Z, rank = _psd_part(_project_kernel(model, state.Y + state.Lam / beta))
    Y = Z - (model.cost + state.Lam) / beta
    np.clip(Y, 0.0, 1.0, out=Y)
    Y[0, 0] = 1.0
    diff = Y - Z
    Lam = state.Lam + DUAL_STEP * beta * diff
    primal = float(np.linalg.norm(diff))
    dual = beta * float(np.linalg.norm(Y - state.Y))
    it = state.iteration + 1
    if it % _BALANCE_EVERY == 0:
        if primal > _BALANCE_RATIO * dual:
            beta *= 2.0
        elif dual > _BALANCE_RATIO * primal:
            beta /= 2.0
    return ADMMState(Y, Z, Lam, beta, it, primal, dual, rank)


def multiplier(model: ADMMModel, state: ADMMState) -> np.ndarray:
    """The multiplier in the unscaled variables, :math:`\\Lambda_{ab} / (d_a d_b)`: the
    linear part of the certificate is :math:`\\tilde L` plus it."""
    inv = 1.0 / model.d
    return state.Lam * inv[:, None] * inv[None, :]


def moment(model: ADMMModel, state: ADMMState) -> np.ndarray:
    """The first moment :math:`x = Z_{1:, 0}` of the iterate (flat, unscaled)."""
    return state.Y[1:, 0] * model.d[1:]


# ---------------------------------------------------------------- the driver
#: seconds per iteration per ``(nm + 1)^3`` (one eigendecomposition and a few products of
#: order nm + 1, one BLAS thread), measured on the project's busy 2-core machine at load
#: 13-16 (2.3e-9 at nm = 480, 5.2e-9 at 2,500; an idle core takes about a tenth:
#: docs/benchmarks/sdp_scale.md)
S_PER_ORDER3 = 3.0e-9
#: a certificate (eigendecomposition with vectors, four products, residuals) costs
#: about this many iterations
CERTIFICATE_ITERATIONS = 3.0
# certificates take at most 1 / (1 + _CERT_SPACING) of the time
_CERT_SPACING = 3.0
# stalled: the best certified bound rose by less than _STALL_RTOL of the gap over the
# second half of the iterations (ADMM's progress slows down like 1 / k), after at least
# _STALL_MIN_ITER iterations
_STALL_RTOL = 1e-3
_STALL_MIN_ITER = 1000


def estimate_seconds(n: int, m: int, iterations: int = 1) -> float:
    """Seconds for ``iterations`` ADMM iterations plus one certificate (two busy cores)."""
    return S_PER_ORDER3 * float(n * m + 1) ** 3 * (iterations + CERTIFICATE_ITERATIONS)


@dataclass(frozen=True)
class ADMMRun:
    """The outcome of :func:`run`: the best certificate and how the run went."""

    bound: float  # the best certified bound (-inf: none finished)
    certificate: object  # its DualCertificate (None when none finished)
    x: np.ndarray  # the last iterate's first moment, (n, m)
    iterations: int
    stop: str
    history: tuple  # (iteration, certified bound) of each certificate
    beta: float
    primal_residual: float
    rank: int
    iterate_time_s: float
    certify_time_s: float


def run(
    model: ADMMModel, state: ADMMState, *, max_iter: int, deadline: float, target: float, on_bound
) -> ADMMRun:
    """Iterate and certify until certified, stalled, the deadline or ``max_iter``.

    A certificate is computed when the iterations since the last one took at least
    ``_CERT_SPACING`` times its (estimated) cost, and once more at the end if it fits
    before ``deadline``; iterations stop early enough for it. ``on_bound(iteration,
    bound, x)`` sees each certificate (the best bound so far, the iterate's first moment)
    and returns the remaining gap; ``gap <= target`` is "certified".
    """
    best, best_cert, history, gaps, reason = -np.inf, None, [], [], "max_iter"
    t_iter = t_cert = since_cert = 0.0
    cert_cost, certified_at = None, 0
    first = S_PER_ORDER3 * float(model.order) ** 3  # until an iteration is measured
    while True:
        per_iter = t_iter / state.iteration if state.iteration else first
        cert_guess = cert_cost if cert_cost is not None else CERTIFICATE_ITERATIONS * per_iter
        now = time.perf_counter()
        out_of_time = now + per_iter + cert_guess > deadline
        last = out_of_time or state.iteration >= max_iter
        fresh = state.iteration > certified_at
        if fresh and (last or since_cert >= _CERT_SPACING * cert_guess):
            if now + cert_guess <= deadline:
                t = time.perf_counter()
                linear = multiplier(model, state)
                linear[1:, 1:] += model.L
                cert = certify_linear(model.L, model.L_abs, model.p, model.q, linear)
                history.append((state.iteration, cert.bound))
                if cert.bound > best:
                    best, best_cert = cert.bound, cert
                gaps.append(on_bound(state.iteration, best, moment(model, state)))
                cert_cost = time.perf_counter() - t  # the caller's rounding included
                t_cert += cert_cost
                if gaps[-1] <= target:
                    reason = "certified"
                    break
                if _stalled(history, gaps[-1]):
                    reason = "stalled"
                    break
            since_cert, certified_at = 0.0, state.iteration
        if last:
            reason = "max_iter" if state.iteration >= max_iter else "time limit"
            break
        t = time.perf_counter()
        state = step(model, state)
        spent = time.perf_counter() - t
        t_iter += spent
        since_cert += spent
    return ADMMRun(
        bound=float(best),
        certificate=best_cert,
        x=moment(model, state).reshape(len(model.p), len(model.q)),
        iterations=state.iteration,
        stop=reason,
        history=tuple(history),
        beta=state.beta,
        primal_residual=state.primal_residual,
        rank=state.rank,
        iterate_time_s=t_iter,
        certify_time_s=t_cert,
    )


def _stalled(history, gap: float) -> bool:
    """The best bound rose by less than ``_STALL_RTOL`` of the gap over the second half
    of the iterations (``history``: (iteration, bound) of each certificate)."""
    last = history[-1][0]
    if last < _STALL_MIN_ITER:
        return False
    best = max(b for _, b in history)
    before = max((b for it, b in history if it <= last // 2), default=-np.inf)
    return best - before <= _STALL_RTOL * gap
