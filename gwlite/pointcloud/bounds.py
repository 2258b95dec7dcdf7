r"""Proven lower bounds on GW between point clouds (proofs in ``docs/theory_pointcloud.md``).

``mean_row``
    :math:`W_r^r(s_1 \# p, s_2 \# q)` with :math:`s(i) = \sum_k p_k d(x_i, x_k)`: closed
    form in :math:`O(nd)` for ``sqeuclidean``, streamed :math:`O(n^2 d)` for ``euclidean``.
``flb``
    Memoli's first lower bound between eccentricities
    :math:`e(i) = (\sum_k p_k d(x_i, x_k)^r)^{1/r}`: closed form :math:`O(nd^2)` for the
    square loss and both metrics; for ``abs_loss`` it is the mean-row bound.
``quantized_slb``
    Memoli's second lower bound made affordable: with a partition into clusters of
    centres :math:`c_a` and radii :math:`r_a`, every distance of a pair in clusters
    :math:`(a, b)` lies in :math:`[\ell_{ab}, h_{ab}]` (triangle inequality), so the
    quantile function of the distance distribution lies between those of the two
    distributions :math:`\sum P_a P_b \delta_{\ell_{ab}}` and
    :math:`\sum P_a P_b \delta_{h_{ab}}`. The integral of the gap between the two
    bands is a lower bound on SLB: the quantisation error is subtracted, never
    estimated. :math:`O(k^2 \log k)`.
``quantized_tlb``
    Memoli's third lower bound the same way: all rows of one cluster share one band, the
    band-gap integral bounds the row-to-row cost :math:`W_r^r` from below, and the
    transport between clusters (a ``k x k`` LP, certified through its dual) bounds TLB.
``spectral``
    The mean-row bound plus the centred mean-row term plus a Hoffman-Wielandt term
    between the spectra of the centred distance operators, valid over couplings
    (:mod:`gwlite.pointcloud.spectral`): exact in :math:`O(n d^2)` for ``sqeuclidean``,
    certified top eigenvalues by streamed LOBPCG for ``euclidean``. Never below
    ``mean_row``.
"""

from __future__ import annotations

import numpy as np

from gwlite import _xp
from gwlite.bounds import certified_lp_lower
from gwlite.pointcloud import geometry
from gwlite.pointcloud._cloud import PointCloud
from gwlite.pointcloud._quantise import Quantisation, quantise
from gwlite.pointcloud.spectral import spectral_lower
from gwlite.problem import LOSS_EXPONENTS
from gwlite.univariate import wasserstein_1d

__all__ = [
    "CLOUD_LOWER_BOUNDS",
    "DEFAULT_BOUND_CLUSTERS",
    "band_costs",
    "band_gap_lower",
    "cloud_lower",
    "pair_intervals",
]

#: the bounds computed from coordinates without any ``n x n`` matrix
CLOUD_LOWER_BOUNDS = ("mean_row", "flb", "quantized_slb", "quantized_tlb", "spectral")
#: clusters per cloud of the quantised bounds (a ``k x k`` band and LP)
DEFAULT_BOUND_CLUSTERS = 500
# quantile levels of the TLB bands (cells of the common grid)
_TLB_LEVELS = 256
# relative slack on the pair intervals, which are computed in floating point
_INTERVAL_SLACK = 1e-9
# entries of one (rows, k, levels) block of the TLB band costs
_TLB_CHUNK = 1 << 22


def pair_intervals(Q: Quantisation, metric: str) -> tuple[np.ndarray, np.ndarray]:
    r"""``(lo, hi)``, each ``(k, k)``: :math:`d(x_i, x_k) \in [lo_{ab}, hi_{ab}]` for every
    point :math:`i` of cluster :math:`a` and :math:`k` of cluster :math:`b`.

    :math:`|c_a - c_b| - r_a - r_b \le |x_i - x_k| \le |c_a - c_b| + r_a + r_b` by the
    triangle inequality; squared for ``sqeuclidean`` (after clamping at 0).
    """
    delta = geometry.distances(Q.centers, Q.centers, "euclidean")
    reach = Q.radii[:, None] + Q.radii[None, :]
    lo = np.maximum(delta - reach, 0.0) * (1 - _INTERVAL_SLACK)
    hi = (delta + reach) * (1 + _INTERVAL_SLACK)
    if metric == "sqeuclidean":
        lo, hi = lo * lo * (1 - _INTERVAL_SLACK), hi * hi * (1 + _INTERVAL_SLACK)
    return lo, hi


def _cum_error(size: int) -> float:
    """A bound on the round-off of ``size`` normalised cumulative sums (``size`` ulps)."""
    return 4 * size * float(np.finfo(np.float64).eps)


def _band(values: np.ndarray, weights: np.ndarray, levels: np.ndarray, low: bool) -> np.ndarray:
    r"""A step quantile function on the cells of ``levels``, conservatively.

    With :math:`\varepsilon` = :func:`_cum_error` bounding the round-off of the computed
    cumulative weights, ``low`` gives a value at most the quantile function on
    :math:`[u_t + 2\varepsilon, u_{t+1}]` (evaluated at :math:`u_t + \varepsilon`), else a
    value at least it on :math:`[u_t, u_{t+1} - 2\varepsilon]`: on the inner part of each
    cell (width less :math:`4\varepsilon`) the band holds whatever the round-off.
    """
    order = np.argsort(values, kind="stable")
    v = values[order]
    cum = np.cumsum(weights[order])
    cum /= cum[-1]
    eps = _cum_error(len(v))
    at = levels[:-1] + eps if low else levels[1:] - eps
    return v[np.minimum(np.searchsorted(cum, at, side="left"), len(v) - 1)]


def _inner_widths(levels: np.ndarray, size: int) -> np.ndarray:
    """Cell widths less the slivers where round-off leaves the band unknown (gap 0 there)."""
    return np.maximum(np.diff(levels) - 4 * _cum_error(size), 0.0)


def _gap_power(low1, high1, low2, high2, r: int):
    gap = np.maximum(np.maximum(low1 - high2, low2 - high1), 0.0)
    return gap * gap if r == 2 else gap


def band_gap_lower(lo1, hi1, w1, lo2, hi2, w2, r: int) -> float:
    r"""A lower bound on :math:`W_r^r(\mu, \nu)` from bands around both quantile functions.

    :math:`\mu` is any law whose quantile function lies between those of
    :math:`\sum_t w_{1t} \delta_{lo_{1t}}` and :math:`\sum_t w_{1t} \delta_{hi_{1t}}`
    (``lo1 <= hi1`` entrywise), likewise :math:`\nu`. On each cell of the merged
    cumulative weights, :math:`|F_\mu^{-1} - F_\nu^{-1}|` is at least the gap between
    the two bands, and :math:`W_r^r = \int_0^1 |F_\mu^{-1} - F_\nu^{-1}|^r`.
    """
    cums = [np.cumsum(w[np.argsort(v, kind="stable")]) for v, w in ((lo1, w1), (hi1, w1))]
    cums += [np.cumsum(w[np.argsort(v, kind="stable")]) for v, w in ((lo2, w2), (hi2, w2))]
    levels = np.unique(np.concatenate([[0.0, 1.0]] + [np.clip(c / c[-1], 0, 1) for c in cums]))
    widths = _inner_widths(levels, max(len(lo1), len(lo2)))
    gap = _gap_power(
        _band(lo1, w1, levels, True),
        _band(hi1, w1, levels, False),
        _band(lo2, w2, levels, True),
        _band(hi2, w2, levels, False),
        r,
    )
    return float(widths @ gap)


def _quantized_slb(Q1: Quantisation, Q2: Quantisation, metrics, r: int) -> float:
    lo1, hi1 = pair_intervals(Q1, metrics[0])
    lo2, hi2 = pair_intervals(Q2, metrics[1])
    w1 = np.outer(Q1.masses, Q1.masses).ravel()
    w2 = np.outer(Q2.masses, Q2.masses).ravel()
    return band_gap_lower(lo1.ravel(), hi1.ravel(), w1, lo2.ravel(), hi2.ravel(), w2, r)


def _row_bands(Q: Quantisation, metric: str, levels: np.ndarray):
    lo, hi = pair_intervals(Q, metric)
    low = np.stack([_band(row, Q.masses, levels, True) for row in lo])
    high = np.stack([_band(row, Q.masses, levels, False) for row in hi])
    return low, high


def band_costs(Q1: Quantisation, Q2: Quantisation, metrics, r: int) -> np.ndarray:
    r""":math:`\tilde M_{ab} \le W_r^r(C^1_{i\cdot} \# p, C^2_{j\cdot} \# q)` for every
    :math:`i \in a`, :math:`j \in b`: the band gaps on a uniform grid of quantile levels."""
    levels = np.linspace(0.0, 1.0, _TLB_LEVELS + 1)
    widths = _inner_widths(levels, max(Q1.k, Q2.k))
    low1, high1 = _row_bands(Q1, metrics[0], levels)
    low2, high2 = _row_bands(Q2, metrics[1], levels)
    M = np.empty((Q1.k, Q2.k))
    for rows in geometry.row_blocks(Q1.k, Q2.k * _TLB_LEVELS, _TLB_CHUNK):
        gap = _gap_power(low1[rows, None, :], high1[rows, None, :], low2[None], high2[None], r)
        M[rows] = gap @ widths
    return M


def _quantized_tlb(Q1: Quantisation, Q2: Quantisation, metrics, r: int) -> float:
    M = band_costs(Q1, Q2, metrics, r)
    bound, _ = certified_lp_lower(M, Q1.masses, Q2.masses)
    return float(bound)


def _one_d(u, v, c1: PointCloud, c2: PointCloud, r: int) -> float:
    r""":math:`W_r^r(u \# p, v \# q)` on the clouds' device (on the host, ``n`` numbers
    each, when the two clouds live in different libraries)."""
    p, q = c1.p, c2.p
    if c1.backend != c2.backend:
        u, v, p, q = (_xp.to_numpy(x) for x in (u, v, p, q))
    if c1.uniform and c2.uniform and c1.n == c2.n:
        return _xp.as_float(wasserstein_1d(u, v, p=r, check=False))
    return _xp.as_float(wasserstein_1d(u, v, p, q, p=r, check=False))


def cloud_lower(
    c1: PointCloud,
    c2: PointCloud,
    lower: str,
    loss_fun: str,
    *,
    n_clusters: int = DEFAULT_BOUND_CLUSTERS,
    seed: int = 0,
    quantisations: tuple[Quantisation, Quantisation] | None = None,
) -> float:
    """The lower bound named ``lower`` (one of :data:`CLOUD_LOWER_BOUNDS`), a float >= 0.

    ``quantisations`` reuses partitions already computed (any partition gives a valid
    bound); otherwise both clouds are partitioned into ``n_clusters`` by k-means.
    """
    r = LOSS_EXPONENTS[loss_fun]
    if lower == "mean_row" or (lower == "flb" and r == 1):
        # for r = 1 the eccentricity sum_k p_k |d_ik| is the mean-row feature
        s1, s2 = geometry.mean_row_features(c1), geometry.mean_row_features(c2)
        return max(0.0, _one_d(s1, s2, c1, c2, r))
    if lower == "flb":
        e1, e2 = (
            c.xp.sqrt(c.xp.clip(geometry.squared_eccentricities(c), min=0.0)) for c in (c1, c2)
        )
        return max(0.0, _one_d(e1, e2, c1, c2, r))
    if lower == "spectral":
        return spectral_lower(c1, c2, loss_fun, seed=seed).value
    if quantisations is None:
        quantisations = (quantise(c1, n_clusters, seed), quantise(c2, n_clusters, seed))
    fn = _quantized_slb if lower == "quantized_slb" else _quantized_tlb
    return max(0.0, fn(*quantisations, (c1.metric, c2.metric), r))
