r"""The lifted semidefinite relaxation of GW, its conic form and its dual certificate.

Everything here is NumPy/SciPy on the host, in float64; :mod:`gwlite.solvers.sdp` calls
the conic solver and builds the result. The mathematics (the relaxation, the facial
reduction, the trace bound and why :func:`certify` returns a lower bound whatever the
solver did) is in ``docs/theory_sdp.md``; the short version:

With :math:`x = \operatorname{vec}(\pi) \in \mathbb R^{nm}` (row-major) and
:math:`K = [-b \mid A]` (:math:`A` the marginal operator, :math:`b = (p, q)`), the
relaxation is

.. math::

    \min \langle \tilde L, Z\rangle \quad\text{s.t.}\quad Z \succeq 0,\ Z_{00} = 1,\
    KZ = 0,\ Z_{ab} \ge 0\ (a, b \ge 1),

where :math:`Z = \begin{pmatrix}1 & x^\top\\ x & P\end{pmatrix}` and
:math:`\tilde L = 0 \oplus L`, :math:`L_{(ij),(kl)} = L(C^1_{ik}, C^2_{jl})`. ``KZ = 0`` is
the marginal constraint on :math:`x` (first column) and its lifted versions (the other
columns). Since ``KZ = 0`` forces the range of :math:`Z` into :math:`\ker K`, the solver
works with :math:`Z = U Y U^\top` for a sparse basis :math:`U` of :math:`\ker K`: a
PSD block of order :math:`(n-1)(m-1)+1` instead of :math:`nm+1`, and no equality
constraint besides :math:`Y_{00} = 1`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:  # imported on use: `import gwlite` does not load scipy.sparse
    import scipy.sparse as sp

__all__ = [
    "SDPModel",
    "DualCertificate",
    "box_upper",
    "build_model",
    "certify",
    "certify_linear",
    "conic_data",
    "moment",
    "projected_slack",
    "scaled_trace_bound",
    "trace_bound",
]

_U = np.finfo(np.float64).eps / 2  # unit round-off


def _gamma(k: int) -> float:
    """Higham's :math:`\\gamma_k = k u / (1 - k u)`: relative error of a k-term sum."""
    return k * _U / (1 - k * _U)


@dataclass(frozen=True)
class SDPModel:
    """One relaxation, built once, solved by any conic solver.

    Attributes
    ----------
    n, m : int
        Sizes (nodes with positive weight only).
    p, q : numpy.ndarray
        The weights.
    L : numpy.ndarray ``(nm, nm)``
        Symmetrised lifted cost :math:`(L + L^\\top)/2` (row-major pairs ``i * m + j``).
    L_abs : numpy.ndarray
        :math:`(|L| + |L^\\top|)/2` before symmetrisation, for the round-off bound.
    U : scipy.sparse.csc_matrix ``(nm + 1, r)``
        Basis of :math:`\\ker K` (first column :math:`(1, \\operatorname{vec}(pq^\\top))`).
    cost : numpy.ndarray ``(d,)``
        The objective on ``svec(Y)``.
    nonneg : scipy.sparse.csr_matrix ``(E, d)``
        Row ``e`` maps ``svec(Y)`` to :math:`Z_{a_e b_e}` (``1 <= a_e < b_e``).
    pairs : tuple of numpy.ndarray
        ``(a, b)`` of each row of ``nonneg``.
    trace_bound : float
        :math:`T \\ge \\operatorname{tr} Z` on the feasible set (rounded up).
    """

    n: int
    m: int
    p: np.ndarray
    q: np.ndarray
    L: np.ndarray
    L_abs: np.ndarray
    U: sp.csc_matrix
    cost: np.ndarray
    nonneg: sp.csr_matrix
    pairs: tuple[np.ndarray, np.ndarray]
    trace_bound: float

    @property
    def r(self) -> int:
        """Order of the reduced PSD block :math:`Y`."""
        return self.U.shape[1]

    @property
    def d(self) -> int:
        """Length of ``svec(Y)``."""
        return self.r * (self.r + 1) // 2


def lifted_cost(C1: np.ndarray, C2: np.ndarray, r: int) -> np.ndarray:
    """``L[(i, j), (k, l)] = |C1[i, k] - C2[j, l]|^r`` as an ``(nm, nm)`` matrix."""
    n, m = len(C1), len(C2)
    diff = C1[:, None, :, None] - C2[None, :, None, :]
    return (diff * diff if r == 2 else np.abs(diff)).reshape(n * m, n * m)


def kernel_basis(p: np.ndarray, q: np.ndarray) -> sp.csc_matrix:
    r"""Sparse basis of :math:`\ker [-b \mid A]`.

    Column 0 is :math:`(1, \operatorname{vec}(pq^\top))`; the others are
    :math:`(0, \operatorname{vec}(E_{ij}))` with the local :math:`2 \times 2` patterns
    :math:`E_{ij} = e_ie_j^\top - e_ie_{j+1}^\top - e_{i+1}e_j^\top + e_{i+1}e_{j+1}^\top`
    (zero row and column sums), so that each coordinate lies in at most five columns.
    """
    import scipy.sparse as sp

    n, m = len(p), len(q)
    N = n * m
    i, j = np.meshgrid(np.arange(n - 1), np.arange(m - 1), indexing="ij")
    i, j = i.ravel(), j.ravel()
    col = 1 + np.arange(len(i))
    corners = [(i, j, 1.0), (i, j + 1, -1.0), (i + 1, j, -1.0), (i + 1, j + 1, 1.0)]
    rows = [np.arange(N + 1)] + [1 + a * m + b for a, b, _ in corners]
    cols = [np.zeros(N + 1, dtype=np.int64)] + [col] * 4
    vals = [np.concatenate([[1.0], np.outer(p, q).ravel()])]
    vals += [np.full(len(i), s) for _, _, s in corners]
    return sp.csc_matrix(
        (np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))),
        shape=(N + 1, 1 + len(i)),
    )


def svec_matrix(r: int) -> sp.csc_matrix:
    r"""``vec(Y) = S @ svec(Y)``: ``svec`` is the upper triangle by columns, off-diagonal
    entries scaled by :math:`\sqrt 2` (Clarabel's convention), ``vec`` row-major."""
    import scipy.sparse as sp

    rows_u, cols_u = _upper_by_columns(r)
    k = np.arange(len(rows_u))
    diag = rows_u == cols_u
    off = ~diag
    half = 1 / np.sqrt(2)
    return sp.csc_matrix(
        (
            np.concatenate(
                [np.ones(diag.sum()), np.full(off.sum(), half), np.full(off.sum(), half)]
            ),
            (
                np.concatenate(
                    [
                        rows_u[diag] * r + cols_u[diag],
                        rows_u[off] * r + cols_u[off],
                        cols_u[off] * r + rows_u[off],
                    ]
                ),
                np.concatenate([k[diag], k[off], k[off]]),
            ),
        ),
        shape=(r * r, len(k)),
    )


def _upper_by_columns(r: int) -> tuple[np.ndarray, np.ndarray]:
    """Row and column of each ``svec`` entry (upper triangle, column by column)."""
    cols = np.repeat(np.arange(r), np.arange(1, r + 1))
    rows = np.concatenate([np.arange(c + 1) for c in range(r)])
    return rows, cols


def scs_order(r: int) -> np.ndarray:
    """``svec_scs = svec_clarabel[perm]``: SCS stores the lower triangle by columns."""
    # lower (row >= col) by columns is the upper triangle by rows
    rows, cols = np.triu_indices(r)
    return cols * (cols + 1) // 2 + rows


def build_model(
    C1: np.ndarray, C2: np.ndarray, p: np.ndarray, q: np.ndarray, r: int, linear=None
) -> SDPModel:
    r"""The reduced relaxation of ``GW_r(C1, C2, p, q)`` (positive weights, n, m >= 2).

    ``linear`` (``(n, m)``, fused GW) adds :math:`\langle \text{linear}, x\rangle`, folded
    into the lifted cost as :math:`(l_{ij} + l_{kl}) / 2`: equal on every lifted
    :math:`Z` with ``KZ = 0`` (rows of :math:`P` sum to :math:`x`), see ``docs/theory_fused.md``.
    """
    import scipy.sparse as sp

    n, m = len(p), len(q)
    N = n * m
    raw = lifted_cost(C1, C2, r)
    if linear is not None:
        flat = np.asarray(linear, dtype=np.float64).ravel()
        raw = raw + (flat[:, None] + flat[None, :]) / 2
    L = (raw + raw.T) / 2
    U = kernel_basis(p, q)
    S = svec_matrix(U.shape[1])
    # objective <U^T Ltilde U, Y>; Ltilde has a zero first row and column
    U1 = U[1:].tocsr()
    CY = np.asarray((U1.T @ (U1.T @ L).T).T)
    cost = S.T @ CY.ravel()
    # Z_ab >= 0 off the diagonal only: Z >= 0 (PSD) already makes the diagonal >= 0
    a, b = np.triu_indices(N + 1, 1)
    keep = a >= 1
    a, b = a[keep], b[keep]
    UU = sp.kron(U, U, format="csr")
    nonneg = (UU[a * (N + 1) + b] @ S).tocsr()
    nonneg.eliminate_zeros()
    # tr Z = 1 + tr P <= 1 + min(sum p^2, sum q^2); rounded up by the sums' error
    return SDPModel(
        n,
        m,
        p,
        q,
        L,
        (np.abs(raw) + np.abs(raw.T)) / 2,
        U,
        cost,
        nonneg,
        (a, b),
        trace_bound(p, q),
    )


def conic_data(model: SDPModel, solver: str):
    """``(A, b, c, cone sizes, perm)`` for ``min c^T v, A v + s = b, s in K``.

    Rows: the zero cone (:math:`Y_{00} = 1`), the non-negative cone (:math:`Z_{ab} \\ge 0`)
    and the PSD cone (:math:`Y \\succeq 0`). Clarabel and SCS share this form and their
    duals' sign convention (:math:`A^\\top z + c = 0`); only the order of ``svec``
    differs: ``v_solver = v[perm]``.
    """
    import scipy.sparse as sp

    d, r = model.d, model.r
    perm = np.arange(d) if solver == "clarabel" else scs_order(r)
    first = sp.csr_matrix(([1.0], ([0], [0])), shape=(1, d))
    # the PSD rows are the variable itself, in the solver's own svec order
    A = sp.vstack([first, -model.nonneg]).tocsc()[:, perm]
    A = sp.vstack([A, -sp.identity(d, format="csc")]).tocsc()
    b = np.zeros(A.shape[0])
    b[0] = 1.0
    return A, b, model.cost[perm], (1, model.nonneg.shape[0], r), perm


def moment(model: SDPModel, svec_y: np.ndarray) -> np.ndarray:
    """The first moment :math:`x = Z_{1:, 0}` as an ``(n, m)`` matrix (Clarabel order)."""
    rows, cols = _upper_by_columns(model.r)
    first = rows == 0  # entries Y[0, c]
    y0 = np.zeros(model.r)
    y0[cols[first]] = svec_y[first] / np.where(cols[first] == 0, 1.0, np.sqrt(2))
    return np.asarray(model.U[1:] @ y0).reshape(model.n, model.m)


# ---------------------------------------------------------------- the certificate
def marginal_operator(p: np.ndarray, q: np.ndarray) -> np.ndarray:
    """``K = [-b | A]`` without its last row (which the others imply), dense."""
    n, m = len(p), len(q)
    A = np.vstack([np.kron(np.eye(n), np.ones(m)), np.kron(np.ones(n), np.eye(m))])
    K = np.hstack([-np.concatenate([p, q])[:, None], A])
    return K[:-1]


@dataclass(frozen=True)
class DualCertificate:
    """A lower bound on GW from dual multipliers, and how it was obtained.

    ``bound = dual_value - trace_bound * max(0, -lambda_min)``: ``dual_value`` is the
    multiplier of :math:`Z_{00} = 1`, ``lambda_min`` a proven lower bound on the smallest
    eigenvalue of the dual slack :math:`S` (``eig_error`` and ``slack_error`` are the
    margins already subtracted for the eigen-solver and for forming :math:`S`).
    """

    bound: float
    dual_value: float
    lambda_min: float
    correction: float
    eig_error: float
    slack_error: float
    trace_bound: float
    clipped: float


def rigorous_lambda_min(S: np.ndarray) -> tuple[float, float]:
    r"""A proven lower bound on :math:`\lambda_{\min}(S)` for a float64 symmetric ``S``.

    With ``eigh``'s output :math:`(\hat\Lambda, V)`, let :math:`R = SV - V\hat\Lambda`
    (exactly). Then :math:`V^{-1}SV = \hat\Lambda + V^{-1}R`, and by the Bauer-Fike
    theorem for the diagonal :math:`\hat\Lambda` every eigenvalue of :math:`S` lies within
    :math:`\|V^{-1}R\|_2 \le \|R\|_F / \sigma_{\min}(V)` of some :math:`\hat\lambda_i`, with
    :math:`\sigma_{\min}(V)^2 \ge 1 - \|V^\top V - I\|_F`. :math:`R` and :math:`V^\top V - I`
    are computed in floating point, so their norms are enlarged by the standard
    bound :math:`\gamma_{k+2}(|S||V| + |V||\hat\Lambda|)` of their rounding errors.
    Returns ``(bound, margin)`` with ``bound = min(lambda_hat) - margin``.
    """
    k = S.shape[0]
    if not np.all(np.isfinite(S)):
        return -np.inf, np.inf
    lam, V = np.linalg.eigh(S)
    absV = np.abs(V)
    g = _gamma(k + 2)
    R = S @ V - V * lam
    r_norm = np.linalg.norm(R) + g * np.linalg.norm(np.abs(S) @ absV + absV * np.abs(lam))
    defect = V.T @ V - np.eye(k)
    o_norm = np.linalg.norm(defect) + g * np.linalg.norm(absV.T @ absV)
    if not (o_norm < 0.5 and np.isfinite(r_norm)):
        return -np.inf, np.inf  # eigenvectors far from orthonormal (or NaN): no claim
    # 2x covers the round-off of the norms and of this expression themselves
    margin = 2.0 * r_norm / np.sqrt(1.0 - o_norm)
    return float(lam[0] - margin), float(margin)


def _pair_matrix(N: int, pairs, w: np.ndarray) -> np.ndarray:
    """:math:`\\tilde W` with :math:`\\langle \\tilde W, Z\\rangle = \\sum_e w_e Z_{a_e b_e}`."""
    a, b = pairs
    W = np.zeros((N + 1, N + 1))
    W[a, b] = w
    W[b, a] += w  # the diagonal (a == b) gets 2 w, the others w in each triangle
    return W / 2  # exact: division by 2


def certify(model: SDPModel, dual_value: float, w: np.ndarray, shift: float = 1.0):
    r"""A lower bound on GW valid for **any** multipliers ``(dual_value, w)``.

    ``w`` is clipped at 0 (the multipliers of :math:`Z_{ab} \ge 0` must be
    non-negative), the multiplier :math:`M` of :math:`KZ = 0` is chosen here (so that
    :math:`S` equals the projection of :math:`\tilde L - y_0 e_0e_0^\top - \tilde W` onto
    :math:`\ker K` plus ``shift`` times the projection onto its complement), and for
    every feasible :math:`Z`, in particular :math:`Z = (1, x)(1, x)^\top` for every
    coupling :math:`x`,

    .. math::

        \langle \tilde L, Z\rangle = y_0 + \langle \tilde W, Z\rangle + \langle M, KZ\rangle
        + \langle S, Z\rangle \ge y_0 - T\max(0, -\lambda_{\min}(S)).

    Parameters
    ----------
    model : SDPModel
    dual_value : float
        :math:`y_0`, the multiplier of :math:`Z_{00} = 1` (the dual objective).
    w : numpy.ndarray ``(E,)``
        Multipliers of the rows of ``model.nonneg``.
    shift : float
        Eigenvalue given to the complement of :math:`\ker K` (any positive number).

    Returns
    -------
    DualCertificate
    """
    N = model.n * model.m
    w = np.asarray(w, dtype=np.float64)
    # non-finite multipliers (a failed solve) are replaced by 0: any value gives a bound
    w_clip = np.maximum(np.where(np.isfinite(w), w, 0.0), 0.0)
    y0 = float(dual_value) if np.isfinite(dual_value) else 0.0
    linear = _pair_matrix(N, model.pairs, w_clip)
    linear[0, 0] += y0
    lam_min, eig_error, slack_error = projected_slack(
        model.L, model.L_abs, model.p, model.q, linear, shift
    )
    clipped = float(np.abs(w - w_clip).sum()) if np.all(np.isfinite(w)) else np.inf
    return _certificate(y0, model.trace_bound, lam_min, eig_error, slack_error, clipped)


def _certificate(
    value: float, trace: float, lam_min: float, eig_error, slack_error, clipped: float
) -> DualCertificate:
    """``value - trace * max(0, -lam_min)``, rounded down by its own floating-point error
    (two products and a difference: at most ``4u`` of the magnitudes)."""
    correction = trace * max(0.0, -lam_min)
    bound = value - correction
    bound -= 4 * _U * (abs(value) + correction)
    return DualCertificate(
        bound=float(bound),
        dual_value=value,
        lambda_min=float(lam_min),
        correction=float(correction),
        eig_error=eig_error,
        slack_error=slack_error,
        trace_bound=trace,
        clipped=clipped,
    )


def projected_slack(
    L: np.ndarray,
    L_abs: np.ndarray,
    p: np.ndarray,
    q: np.ndarray,
    linear: np.ndarray,
    shift: float = 1.0,
    scale: np.ndarray | None = None,
) -> tuple[float, float, float]:
    r"""A proven lower bound on :math:`\lambda_{\min}(S)` for the slack of a linear part.

    With :math:`S_0 = D(\tilde L - \text{linear})D`, :math:`D = \operatorname{diag}`
    (``scale``; the identity by default) and the multiplier :math:`M` of :math:`KDZ' = 0`
    chosen so that :math:`S = S_0 - \tfrac12((KD)^\top M + M^\top KD) = P_Q S_0 P_Q +
    \text{shift}\,P_R` (projectors for :math:`\ker KD`; ``docs/theory_sdp.md``, Lemma 4,
    Propositions 5 and 7). Returns ``(lambda_min, eig_error, slack_error)``: the bound,
    with both margins (eigen-solver, forming :math:`S`) already subtracted.
    """
    S0 = -linear
    S0[1:, 1:] += L
    K = marginal_operator(p, q)
    B0 = np.abs(linear)
    B0[1:, 1:] += L_abs
    extra = 0
    if scale is not None:  # two more factors in every product (Proposition 7)
        S0 *= scale[:, None] * scale[None, :]
        B0 *= np.abs(scale)[:, None] * np.abs(scale)[None, :]
        K = K * scale[None, :]
        extra = 3
    gram = K @ K.T
    KS = K @ S0
    # P_R = K^T (K K^T)^{-1} K; M = (K K^T)^{-1} K (2 S0 - S0 P_R - shift I)
    proj = np.linalg.solve(gram, K)
    M = np.linalg.solve(gram, 2 * KS - (KS @ K.T) @ proj - shift * K)
    KM = K.T @ M
    S = S0 - (KM + KM.T) / 2
    S = (S + S.T) / 2  # exactly symmetric (the two halves are equal up to round-off)
    absKM = np.abs(K).T @ np.abs(M)
    B = B0 + (absKM + absKM.T) / 2
    terms = 2 * int(np.count_nonzero(K, axis=0).max()) + 8 + extra
    slack_error = 2.0 * _gamma(terms) * float(np.linalg.norm(B))
    lam, eig_error = rigorous_lambda_min(S)
    return float(lam - slack_error), eig_error, slack_error


def box_upper(p: np.ndarray, q: np.ndarray) -> np.ndarray:
    r"""Entrywise upper bounds :math:`\bar u` on every feasible :math:`Z` (rounded up):
    :math:`\bar u_{00} = 1`, :math:`\bar u_{0a} = u_a`, :math:`\bar u_{ab} = u_a u_b`,
    :math:`u_{(ij)} = \min(p_i, q_j)` (``docs/theory_sdp.md``, Proposition 6)."""
    u = np.minimum(p[:, None], q[None, :]).ravel()
    d = np.concatenate([[1.0], u])
    return np.outer(d, d) * (1 + 4 * _U)  # one rounding in each product, rounded up


def certify_linear(
    L: np.ndarray,
    L_abs: np.ndarray,
    p: np.ndarray,
    q: np.ndarray,
    linear: np.ndarray,
    scaled: bool = True,
) -> DualCertificate:
    r"""A lower bound on GW from **any** symmetric linear part ``linear`` (order ``nm+1``).

    Writing :math:`\tilde L = \text{linear} + S_0` and completing :math:`S_0` by the
    multiplier of the lifted marginal constraints (:func:`projected_slack`), every
    feasible :math:`Z` (in particular every coupling's lift) has

    .. math::

        \langle \tilde L, Z\rangle \ge \min_{Z \in \mathcal B}\langle
        \text{linear}, Z\rangle + T_D\min(0, \lambda_{\min}(S)),\qquad
        \min_{Z \in \mathcal B}\langle C, Z\rangle = C_{00} +
        \sum_{(a, b) \ne (0, 0)} \bar u_{ab}\min(0, C_{ab}),

    :math:`\mathcal B` the box of :func:`box_upper`, :math:`S` the slack seen in the
    variables :math:`D^{-1}ZD^{-1}`, :math:`D = \operatorname{diag}(1, u)` when ``scaled``
    (then :math:`T_D =` :func:`scaled_trace_bound`), else :math:`D = I`, :math:`T_D =`
    :func:`trace_bound` (``docs/theory_sdp.md``, section 5). ``dual_value`` of the result is
    the box minimum (rounded down); ``clipped`` is 0 (negative entries are paid for by
    the box).
    """
    linear = np.asarray(linear, dtype=np.float64)
    if not np.all(np.isfinite(linear)):
        linear = np.where(np.isfinite(linear), linear, 0.0)  # any linear part is valid
    scale = np.concatenate([[1.0], np.minimum(p[:, None], q[None, :]).ravel()])
    lam_min, eig_error, slack_error = projected_slack(
        L, L_abs, p, q, linear.copy(), scale=scale if scaled else None
    )
    terms = np.minimum(linear, 0.0) * box_upper(p, q)
    terms[0, 0] = linear[0, 0]
    # a sum of k products in any order: error <= gamma_{k+1} sum |terms| (Higham 3.1)
    value = float(terms.sum())
    value -= 2 * _gamma(terms.size + 1) * float(np.abs(terms).sum())
    bound_T = scaled_trace_bound(p, q) if scaled else trace_bound(p, q)
    return _certificate(value, bound_T, lam_min, eig_error, slack_error, 0.0)


def scaled_trace_bound(p: np.ndarray, q: np.ndarray) -> float:
    r""":math:`T_D = 1 + \min(n + m, 1/\min_{ij} u_{ij}, \max_{x \in \Pi(p, q)} \sum_{ij}
    x_{ij}/u_{ij}) \ge \operatorname{tr}(D^{-1}ZD^{-1})` on the feasible set, rounded up
    (``docs/theory_sdp.md``, Proposition 7). The last term is a transport problem
    (bounded above by feasible duals); with uniform weights it is :math:`\max(n, m)`."""
    top = min(
        float(len(p) + len(q)),
        (1.0 / min(float(p.min()), float(q.min()))) * (1 + 4 * _U),
        _inverse_box_max(p, q),
    )
    return (1.0 + top) * (1 + 4 * _U)


def _inverse_box_max(p: np.ndarray, q: np.ndarray) -> float:
    r"""An upper bound on :math:`\max_{x \in \Pi(p, q)} \sum_{ij} x_{ij} / \min(p_i, q_j)`:
    weak duality on the network simplex's duals made feasible
    (:func:`gwlite.bounds.certified_lp_lower` on :math:`\max c - c`), with a relative
    margin of :math:`10^{-9}` that covers the rounding of the costs, of the marginals'
    sums and of the dual's sum (each below :math:`10^{-12}` relative at these sizes)."""
    from gwlite.bounds import certified_lp_lower

    inverse = 1.0 / np.minimum(p[:, None], q[None, :])
    top = float(inverse.max())
    # max <c, x> = top - min <top - c, x>: non-negative costs for the network simplex
    lower, _ = certified_lp_lower(top - inverse, p, q)
    return (top - lower) * (1 + 1e-9) if np.isfinite(lower) else np.inf


def trace_bound(p: np.ndarray, q: np.ndarray) -> float:
    r""":math:`T = 1 + \min(\|p\|^2, \|q\|^2) \ge \operatorname{tr} Z`, rounded up."""
    return (1 + min(float(p @ p), float(q @ q))) * (1 + _gamma(len(p) + len(q) + 4))
