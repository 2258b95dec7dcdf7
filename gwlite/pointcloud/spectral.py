r"""Spectral lower bound on GW between point clouds, valid over all couplings.

Proof on the point-cloud theory page (``docs/theory_pointcloud.md``, section "Spectral
bound"). With :math:`u = \sqrt{p}`, :math:`K = P^{1/2} C P^{1/2}`, the mean-row features
:math:`s = C p`, :math:`c = p^\top C p`, :math:`\tilde s = s - c` and the centred operator

.. math::

    A = -(I - u u^\top) K (I - u u^\top)
      = -P^{1/2} (C - s 1^\top - 1 s^\top + c 1 1^\top) P^{1/2},

which is positive semi-definite because Euclidean and squared Euclidean distances are
conditionally negative definite (Schoenberg 1938), every coupling :math:`\pi` satisfies

.. math::

    \mathcal{E}_2(\pi) \ge W_2^2(s_1 \# p, s_2 \# q) + W_2^2(\tilde s_1 \# p, \tilde s_2 \# q)
    + \sum_k (\lambda_k(A_1) - \lambda_k(A_2))^2

(eigenvalues in decreasing order, padded with zeros). The first term is the mean-row
bound: this bound is never below it. The last one is a Hoffman-Wielandt term
(Hoffman & Wielandt 1953), made valid for couplings rather than permutations because
:math:`T = P^{-1/2} \pi Q^{-1/2}` is a contraction that maps :math:`\sqrt q` to
:math:`\sqrt p`.

``sqeuclidean``: :math:`A = 2 P^{1/2} V V^\top P^{1/2}` (centred coordinates :math:`V`),
whose non-zero eigenvalues are twice those of the ``d x d`` covariance
:math:`V^\top P V`: exact, :math:`O(n d^2)`. ``euclidean``: a few top eigenpairs of
:math:`A` by LOBPCG (:func:`scipy.sparse.linalg.lobpcg`) on a
:class:`~scipy.sparse.linalg.LinearOperator` whose products stream distance blocks
(:math:`O(n^2 (d + k))` per product, no ``n x n`` matrix); the solver's answer is never
trusted: :func:`certified_spectrum` turns any orthonormal basis into proven eigenvalue
bounds through Ritz values, the residual norm and the trace.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass

import numpy as np
from scipy.sparse.linalg import LinearOperator, lobpcg

from gwlite import _xp
from gwlite.pointcloud import geometry
from gwlite.pointcloud._cloud import PointCloud, _entry_bound
from gwlite.univariate import wasserstein_1d

__all__ = [
    "EIGENPAIRS",
    "STREAMED_SPECTRAL_MAX",
    "SpectralBound",
    "Spectrum",
    "certified_spectrum",
    "centred_operator",
    "cloud_spectrum",
    "spectral_lower",
]

#: top eigenpairs computed per ``euclidean`` cloud (the bound's tail is certified, so more
#: pairs only tighten it)
EIGENPAIRS = 16
#: ``lower="best"`` of the multiscale solver includes the ``euclidean`` spectral bound (about
#: 40 streamed passes over the distances) only when ``n^2 + m^2`` is at most this
STREAMED_SPECTRAL_MAX = 2 * 10**7
# LOBPCG iterations: each is one streamed pass over the distances
_LOBPCG_ITER = 40
# below this many points the operator is materialised (n x n, tiny) and diagonalised
_DENSE_BELOW = 128


@dataclass(frozen=True)
class Spectrum:
    r"""Proven facts about the eigenvalues :math:`\lambda_1 \ge \lambda_2 \ge \dots \ge 0`
    of one cloud's centred operator :math:`A` (all floats, on the host).

    Attributes
    ----------
    upper : array ``(k,)``
        :math:`\hat\lambda_i \ge \lambda_i`, non-increasing.
    lower : array ``(k,)``
        :math:`\theta_i \le \lambda_i` (Ritz values), with :math:`\sum_{i \le k}
        \lambda_i \ge \sum \theta_i` and :math:`\sum_{i \le k} \lambda_i^2 \ge \sum
        \theta_i^2`.
    tail : float
        :math:`\ge \lambda_i` for every :math:`i > k` (0 when ``exact``).
    trace : float
        :math:`\operatorname{tr} A = p^\top C p`.
    frobenius2 : float
        :math:`\|A\|_F^2 = \sum_i \lambda_i^2`.
    exact : bool
        The whole spectrum is known (``sqeuclidean``): ``upper == lower``, ``tail == 0``.
    residual : float
        The bound on :math:`\|A Q - Q \Theta\|_2` used (0 when ``exact``).
    """

    upper: np.ndarray
    lower: np.ndarray
    tail: float
    trace: float
    frobenius2: float
    exact: bool
    residual: float = 0.0

    @property
    def k(self) -> int:
        return len(self.upper)


@dataclass(frozen=True)
class SpectralBound:
    r"""The spectral lower bound and its three terms (see the module docstring).

    Attributes
    ----------
    value : float
        The bound on :math:`\mathrm{GW}_r` (``r = 2``: the sum of the terms less the
        round-off ``margin``, at least 0; ``r = 1``: that divided by ``diameter``).
    mean_row, centred_row, hoffman_wielandt : float
        :math:`W_2^2(s_1, s_2)`, :math:`W_2^2(\tilde s_1, \tilde s_2)` and the certified
        lower bound on :math:`\sum_k (\lambda_k - \mu_k)^2`.
    margin : float
        Round-off allowance subtracted.
    spectra : tuple of Spectrum
    """

    value: float
    mean_row: float
    centred_row: float
    hoffman_wielandt: float
    margin: float
    spectra: tuple[Spectrum, Spectrum]


def _sqrt_weights(cloud: PointCloud):
    return cloud.xp.sqrt(cloud.p)


def centred_operator(cloud: PointCloud, s=None) -> LinearOperator:
    r"""The operator :math:`A = -P^{1/2}(C - s 1^\top - 1 s^\top + c 1 1^\top) P^{1/2}` as
    a SciPy :class:`~scipy.sparse.linalg.LinearOperator` on host vectors. Each product
    ``A @ Z`` (``Z`` of shape ``(n, k)``) streams the distance blocks on the cloud's device
    in ``chunk_entries`` pieces; only ``Z`` and the ``(n, k)`` result cross."""
    xp, n = cloud.xp, cloud.n
    s = geometry.mean_row_features(cloud) if s is None else s
    c = cloud.p @ s
    u = _sqrt_weights(cloud)

    def matmat(Z):
        Z = geometry._on(cloud, np.asarray(Z, dtype=np.float64).reshape(n, -1))
        W = u[:, None] * Z  # P^{1/2} Z
        CW = xp.concat(
            [
                geometry.distances(cloud.X[rows], cloud.X, cloud.metric) @ W
                for rows in geometry.row_blocks(n, n, cloud.chunk_entries)
            ]
        )
        ones_w = xp.sum(W, axis=0)[None, :]  # 1^T W
        inner = CW - s[:, None] * ones_w - (s @ W)[None, :] + c * ones_w
        return _xp.to_numpy(-(u[:, None] * inner))

    return LinearOperator((n, n), matvec=matmat, matmat=matmat, dtype=np.float64)


def _round_off(n: int) -> float:
    """Worst-case relative error of a recursive sum of ``n`` terms (Higham 2002, eq. 4.4),
    doubled for the products around it."""
    return 4 * (n + 1) * float(np.finfo(np.float64).eps)


def certified_spectrum(A: LinearOperator, V: np.ndarray, trace: float, frobenius2: float):
    r"""Proven eigenvalue bounds of a PSD operator ``A`` from any basis ``V`` (``n x k``).

    Rayleigh-Ritz on the orthonormalised ``Q``: :math:`\Theta = Q^\top A Q` with Ritz values
    :math:`\theta_i \le \lambda_i` (Cauchy interlacing) and :math:`R = AQ - Q\Theta`,
    :math:`Q^\top R = 0`. Then :math:`A = (Q\Theta Q^\top + P_\perp A P_\perp) + (RQ^\top +
    QR^\top)` with :math:`\|RQ^\top + QR^\top\|_2 = \|R\|_2 \le \|R\|_F`, and the PSD
    compression :math:`P_\perp A P_\perp` has trace :math:`\tau = \operatorname{tr} A -
    \sum\theta_i` and squared Frobenius norm :math:`\phi = \|A\|_F^2 - \sum\theta_i^2 -
    2\|R\|_F^2`, so its :math:`m`-th eigenvalue is at most
    :math:`\hat\nu_m = \min(\tau / m, (\phi / m)^{1/2})`. The :math:`i`-th largest of the
    union of both spectra is at most :math:`\max(\theta_{j+1}, \hat\nu_{i-j})` for every
    :math:`j < i` (at most :math:`j + i - j - 1` values exceed it), and Weyl's inequality
    adds :math:`\|R\|_F`. A round-off allowance of the products (``_round_off``
    times the trace and Frobenius norm, which bound :math:`\|A\|_2`) widens every bound.
    """
    n = V.shape[0]
    Q, _ = np.linalg.qr(V)
    AQ = np.asarray(A.matmat(Q))
    Theta = Q.T @ AQ
    theta, U = np.linalg.eigh((Theta + Theta.T) / 2)
    theta, U = theta[::-1], U[:, ::-1]
    R = AQ @ U - (Q @ U) * theta[None, :]
    residual = float(np.linalg.norm(R))
    k = len(theta)
    slack = _round_off(n) * (abs(trace) + math.sqrt(max(frobenius2, 0.0))) * math.sqrt(k)
    lower = np.maximum(theta - slack, 0.0)
    high = np.append(theta + slack, 0.0)  # theta_{k+1} := 0: no more Ritz values
    tau = max(trace - float(lower.sum()), 0.0) + k * slack
    phi = max(frobenius2 - float(lower @ lower) - 2 * residual**2, 0.0) + 2 * k * slack * (
        abs(trace) + math.sqrt(max(frobenius2, 0.0))
    )
    m = np.arange(1, k + 2)
    nu = np.minimum(tau / m, np.sqrt(phi / m))
    upper = np.array(
        [min(max(high[j], nu[i - j - 1]) for j in range(min(i, k + 1))) for i in range(1, k + 2)]
    )
    upper = np.maximum.accumulate((upper + residual + slack)[::-1])[::-1]  # non-increasing
    return Spectrum(upper[:k], lower, float(upper[k]), trace, frobenius2, False, residual)


def _frobenius2(E: float, c: float, s_tilde, p) -> float:
    r""":math:`\|A\|_F^2 = E - c^2 - 2 \sum_i p_i \tilde s_i^2` (the Frobenius-orthogonal
    split :math:`K = c\,uu^\top + u g^\top + g u^\top - A`, :math:`g = P^{1/2}\tilde s`)."""
    return max(E - c * c - 2 * float(p @ (s_tilde * s_tilde)), 0.0)


def cloud_spectrum(cloud: PointCloud, k: int = EIGENPAIRS, seed: int = 0, s=None) -> Spectrum:
    r"""The :class:`Spectrum` of ``cloud``'s centred operator: exact from the ``d x d``
    covariance for ``sqeuclidean``, certified top-``k`` bounds for ``euclidean``."""
    s = geometry.mean_row_features(cloud) if s is None else s
    c = float(cloud.p @ s)
    E = geometry._self_term(cloud.X, cloud.p, cloud.metric)
    if cloud.metric == "sqeuclidean":
        V = cloud.centered()
        S = _xp.to_numpy((V * cloud.p[:, None]).T @ V)  # d x d
        lam = np.clip(2 * np.linalg.eigvalsh((S + S.T) / 2)[::-1], 0.0, None)
        return Spectrum(lam, lam, 0.0, c, float(lam @ lam), True)
    A = centred_operator(cloud, s)
    frob = _frobenius2(E, c, s - c, cloud.p)
    k = max(1, min(k, cloud.n))
    if cloud.n < _DENSE_BELOW:
        dense = np.asarray(A.matmat(np.eye(cloud.n)))
        V = np.linalg.eigh((dense + dense.T) / 2)[1][:, ::-1][:, :k]
    else:
        V = _top_eigenvectors(A, k, seed)
    return certified_spectrum(A, V, c, frob)


def _top_eigenvectors(A: LinearOperator, k: int, seed: int) -> np.ndarray:
    """Approximate top-``k`` eigenvectors by LOBPCG (block products: one streamed pass per
    iteration for all ``k`` vectors). Its accuracy only tightens the bound."""
    X0 = np.random.default_rng(seed).normal(size=(A.shape[0], k))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # non-convergence is harmless: certified after
        try:
            _, V = lobpcg(A, X0, largest=True, maxiter=_LOBPCG_ITER, tol=1e-8)
        except (np.linalg.LinAlgError, ValueError):
            V = X0
    return V if np.all(np.isfinite(V)) else X0


def _hoffman_wielandt(S1: Spectrum, S2: Spectrum) -> float:
    r"""A lower bound on :math:`\sum_k (\lambda_k - \mu_k)^2 = \|A_1\|_F^2 + \|A_2\|_F^2 -
    2\sum_k \lambda_k \mu_k`, from an upper bound on :math:`\sum_k \lambda_k\mu_k`:
    :math:`\sum_{k \le K} \hat\lambda_k \hat\mu_k` plus the tail, at most
    :math:`\hat\lambda_{>K} \sum_{k>K}\mu_k`, :math:`\hat\mu_{>K}\sum_{k>K}\lambda_k` and
    (Cauchy-Schwarz) :math:`(\sum_{k>K}\lambda_k^2 \sum_{k>K}\mu_k^2)^{1/2}`."""
    if S1.exact and S2.exact:
        size = max(S1.k, S2.k)
        lam, mu = (np.pad(S.upper, (0, size - S.k)) for S in (S1, S2))
        return float(np.sum((lam - mu) ** 2))
    K = min(S1.k, S2.k)
    head = float(S1.upper[:K] @ S2.upper[:K])
    tails = []
    for S, other in ((S1, S2), (S2, S1)):
        # eigenvalue i > K of S is at most S's bound at K (or its tail), times other's tail trace
        bound_after = S.upper[K] if S.k > K else S.tail
        other_trace = max(other.trace - float(other.lower[:K].sum()), 0.0)
        tails.append(bound_after * other_trace)
    sq = [max(S.frobenius2 - float(S.lower[:K] @ S.lower[:K]), 0.0) for S in (S1, S2)]
    tails.append(math.sqrt(sq[0] * sq[1]))
    return max(0.0, S1.frobenius2 + S2.frobenius2 - 2 * (head + min(tails)))


def _w2(u, v, c1: PointCloud, c2: PointCloud) -> float:
    p, q = c1.p, c2.p
    if c1.backend != c2.backend:
        u, v, p, q = (_xp.to_numpy(x) for x in (u, v, p, q))
    return _xp.as_float(wasserstein_1d(u, v, p, q, p=2, check=False))


def spectral_lower(
    c1: PointCloud,
    c2: PointCloud,
    loss_fun: str = "square_loss",
    *,
    k: int = EIGENPAIRS,
    seed: int = 0,
) -> SpectralBound:
    r"""The spectral lower bound on :math:`\mathrm{GW}_r(c_1, c_2)`, with its terms.

    Parameters
    ----------
    c1, c2 : PointCloud
        Any metrics, libraries and dimensions.
    loss_fun : {"square_loss", "abs_loss"}
        For ``abs_loss``, :math:`|a - b| \ge (a - b)^2 / D` with :math:`D` at least
        every distance of both clouds (their bounding-box diameters), so the square-loss
        bound divided by :math:`D` bounds :math:`\mathrm{GW}_1`.
    k : int
        Eigenpairs per ``euclidean`` cloud (ignored for ``sqeuclidean``: exact).
    seed : int
        Start of the eigen-solver (changes only the tightness).

    Returns
    -------
    SpectralBound
        ``value`` is a proven lower bound whatever the eigen-solver returned.

    Examples
    --------
    >>> import gwlite
    >>> from gwlite.pointcloud.samples import torus, trefoil
    >>> from gwlite.pointcloud.spectral import spectral_lower
    >>> c1 = gwlite.PointCloud(torus(500, seed=1), "sqeuclidean")
    >>> c2 = gwlite.PointCloud(trefoil(500, seed=2), "sqeuclidean")
    >>> b = spectral_lower(c1, c2)
    >>> b.mean_row <= b.value <= gwlite.gromov_wasserstein(c1, c2).upper
    True
    """
    s1, s2 = geometry.mean_row_features(c1), geometry.mean_row_features(c2)
    S1 = cloud_spectrum(c1, k, seed, s1)
    S2 = cloud_spectrum(c2, k, seed, s2)
    mean_row = _w2(s1, s2, c1, c2)
    centred = _w2(s1 - S1.trace, s2 - S2.trace, c1, c2)
    hw = _hoffman_wielandt(S1, S2)
    own = geometry._self_term(c1.X, c1.p, c1.metric) + geometry._self_term(c2.X, c2.p, c2.metric)
    margin = _round_off(c1.n + c2.n) * own
    value = max(0.0, mean_row + centred + hw - margin)
    if loss_fun == "abs_loss":
        diameter = max(_entry_bound(c1.X, c1.metric), _entry_bound(c2.X, c2.metric))
        value = value / diameter if diameter > 0 else 0.0
    return SpectralBound(value, mean_row, centred, hw, margin, (S1, S2))
